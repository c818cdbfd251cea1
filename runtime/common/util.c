/*
 * util.c - allocator indirection, assertion failure, the error table and
 * ASCII helpers: the small things every module needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/internal.h"

static void *(*malloc_fn)(size_t) = malloc;
static void *(*realloc_fn)(void *, size_t) = realloc;
static void (*free_fn)(void *) = free;

void dl_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t), void (*f)(void *))
{
    if (m && r && f) {
        malloc_fn = m;
        realloc_fn = r;
        free_fn = f;
    }
}

void *dl_malloc(size_t n)
{
    return malloc_fn(n ? n : 1);
}

void *dl_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    void *p = malloc_fn(total > 0 ? total : 1);
    if (p)
        memset(p, 0, total);
    return p;
}

void *dl_realloc(void *p, size_t n)
{
    return realloc_fn(p, n ? n : 1);
}

void dl_free(void *p)
{
    if (p)
        free_fn(p);
}

char *dl_strndup(const char *s, size_t n)
{
    char *p = dl_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *dl_strdup(const char *s)
{
    return dl_strndup(s, strlen(s));
}

void dl__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "devloop: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

const char *dl_strerror(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                 \
    case DL_##name:                                                        \
        return msg;
        DL_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "success";
    }
    if (err < 0 && err > -4000)
        return strerror(-err);
    return "unknown error";
}

const char *dl_err_name(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                 \
    case DL_##name:                                                        \
        return #name;
        DL_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "OK";
    }
    return "EOTHER"; /* not in the table (EUNKNOWN means an unknown outcome) */
}

int dl_strncasecmp_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return 0;
    size_t i = 0;
    /* eight bytes at a time while they are equal as they are (the common
     * case: names and origins mostly come in one spelling); a block that
     * differs is compared byte by byte */
    for (; i + 8 <= alen; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x == y)
            continue;
        for (size_t k = i; k < i + 8; k++)
            if (dl_tolower((unsigned char)a[k]) != dl_tolower((unsigned char)b[k]))
                return 0;
    }
    for (; i < alen; i++)
        if (dl_tolower((unsigned char)a[i]) != dl_tolower((unsigned char)b[i]))
            return 0;
    return 1;
}

const char *dl_version(void)
{
    return DL_VERSION_STRING;
}

int64_t dl_clock_skew_ms;

uint64_t dl_clock_ms(void)
{
    return uv_hrtime() / 1000000u + (uint64_t)__atomic_load_n(&dl_clock_skew_ms, __ATOMIC_RELAXED);
}

double dl_clock_unix(void)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6 +
           (double)__atomic_load_n(&dl_clock_skew_ms, __ATOMIC_RELAXED) / 1e3;
}

void dl_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

int dl_hex_digit(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10
                                                : -1;
}

int dl_unhex(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = dl_hex_digit((unsigned char)in[2 * i]);
        int lo = dl_hex_digit((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int dl_unhex4(const char *s, unsigned *cp)
{
    unsigned char b[2];
    if (dl_unhex(s, 2, b) != 0)
        return -1;
    *cp = (unsigned)b[0] << 8 | b[1];
    return 0;
}

int dl_err_vformat(char *err, size_t errlen, int rc, const char *fmt, va_list ap)
{
    if (err != NULL && errlen > 0)
        vsnprintf(err, errlen, fmt, ap);
    return rc;
}

int dl_err_format(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dl_err_vformat(err, errlen, rc, fmt, ap);
    va_end(ap);
    return rc;
}

int dl_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}
