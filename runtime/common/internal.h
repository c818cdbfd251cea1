/*
 * internal.h - allocation wrappers, assertions and small helpers shared by
 * every runtime module. Not part of the public API.
 */
#ifndef DL_INTERNAL_H
#define DL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devloop.h"

/* Unit builds open file-local functions to the tests (DL_STATIC), and
 * have the test hooks: accessors into state the program never reads back,
 * compiled out of it (DL_TEST_HOOK, declared under #ifdef DL_UNIT_TEST). */
#ifdef DL_UNIT_TEST
#define DL_STATIC
#define DL_TEST_HOOK
#else
#define DL_STATIC static
#define DL_TEST_HOOK static __attribute__((unused))
#endif

#define DL_UNUSED(x) ((void)(x))
#define DL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DL_LIKELY(x) __builtin_expect(!!(x), 1)
#define DL_STR_(x) #x
#define DL_STR(x) DL_STR_(x) /* a macro's value as a string literal */
#define DL_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- allocation: replaceable through dl_config_t */
void dl_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t), void (*f)(void *));
void *dl_malloc(size_t n);
void *dl_calloc(size_t n, size_t size);
void *dl_realloc(void *p, size_t n);
void dl_free(void *p); /* NULL is a no-op */
char *dl_strndup(const char *s, size_t n);
char *dl_strdup(const char *s);

/* ---- invariants: on in release builds too (Redis serverAssert) */
void dl__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define DL_ASSERT(e) (DL_LIKELY(e) ? (void)0 : dl__assert_fail(#e, __FILE__, __LINE__))

/* ---- logging: level checked before arguments are evaluated (Redis serverLog) */
extern int dl_log_min_level;
/* Milliseconds added to the wall clock that Lua and the in-process cache see
 * (devloop test's fake clock: t.advance(ms)); 0 otherwise. */
extern int64_t dl_clock_skew_ms;
/* The monotonic clock in ms, and the wall clock in Unix seconds, both with
 * the skew: what the caches, api.shared, api.now and rate limits read. */
uint64_t dl_clock_ms(void);
double dl_clock_unix(void);
void dl_log_write(int level, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define dl_log(level, ...)                                                 \
    do {                                                                   \
        if ((level) >= dl_log_min_level)                                   \
            dl_log_write((level), NULL, __VA_ARGS__);                      \
    } while (0)
#define dl_log_req(level, reqid, ...)                                      \
    do {                                                                   \
        if ((level) >= dl_log_min_level)                                   \
            dl_log_write((level), (reqid), __VA_ARGS__);                   \
    } while (0)

/* ---- ASCII helpers (locale-free) */
static inline int dl_tolower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}
int dl_strncasecmp_eq(const char *a, size_t alen, const char *b, size_t blen);
/** 1 for a token character of RFC 9110 5.6.2 (tchar). */
static inline int dl_is_tchar(int c)
{
    /* a bit per byte value: letters, digits and !#$%&'*+-.^_`|~ (every
     * header name of every answer goes through this) */
    static const uint64_t bits[4] = {0x03ff6cfa00000000ULL, 0x57ffffffc7fffffeULL, 0, 0};
    return c >= 0 && c < 256 && (bits[c >> 6] >> (c & 63)) & 1;
}
/** FNV-1a over n bytes: a few cycles per byte, for the small hash tables
 * (router segments, log field names, caches of names and statements). */
#define DL_FNV_BASIS 2166136261u
#define DL_FNV_PRIME 16777619u /* h = (h ^ byte) * DL_FNV_PRIME, from DL_FNV_BASIS */
static inline uint32_t dl_fnv1a(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t h = DL_FNV_BASIS;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * DL_FNV_PRIME;
    return h;
}
/** Writes all n bytes of p to fd (EINTR and short writes retried); 0 or an errno. */
int dl_write_all(int fd, const void *p, size_t n);
/** Writes n bytes as 2n lowercase hex digits to out (not terminated). */
void dl_hex(const unsigned char *in, size_t n, char *out);
/** Reads 2n hex digits (either case) into n bytes; returns 0, or -1 on a bad digit. */
int dl_unhex(const char *in, size_t n, unsigned char *out);

/** The value of hex digit c (either case), or -1. */
int dl_hex_digit(int c);
/** Reads the 4 hex digits at s (a JSON \\u escape's) into *cp; 0, or -1 on a bad digit. */
int dl_unhex4(const char *s, unsigned *cp);

/* ---- error messages: one helper for every "what: why" into a caller's buffer */
#include <stdarg.h>
/**
 * Formats fmt into err (errlen bytes, truncated, always terminated) when err
 * is not NULL and errlen > 0, and returns rc: `return dl_err_format(err,
 * errlen, DL_EINVAL, "%s: %s", what, why);`.
 */
int dl_err_format(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** dl_err_format() with a va_list, for a module's own variadic wrapper. */
int dl_err_vformat(char *err, size_t errlen, int rc, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#endif /* DL_INTERNAL_H */
