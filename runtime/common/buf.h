/*
 * buf.h - a growable byte buffer. Allocation failure is sticky: once an append
 * fails, `oom` is set and later appends are no-ops, so a caller checks once.
 */
#ifndef DL_BUF_H
#define DL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} dl_buf_t;

#define DL_BUF_INIT {NULL, 0, 0, 0}

void dl_buf_init(dl_buf_t *b);
/** Frees the storage; the buffer is empty and reusable afterwards. */
void dl_buf_free(dl_buf_t *b);
/** Empties the buffer but keeps its storage. */
static inline void dl_buf_reset(dl_buf_t *b)
{
    b->len = 0;
    b->oom = 0;
}
/** Makes room for n more bytes; returns 0 or DL_ENOMEM. */
int dl_buf_reserve(dl_buf_t *b, size_t n);
/* What the appends below do when the bytes do not fit (or after a failure). */
int dl_buf_append_slow(dl_buf_t *b, const void *p, size_t n);
int dl_buf_append_char_slow(dl_buf_t *b, char c);

/* The appends are inline: a response is dozens of small ones, and the
 * common case (room left) is a compare and a copy. */
static inline int dl_buf_append(dl_buf_t *b, const void *p, size_t n)
{
    if (__builtin_expect(n != 0 && b->cap - b->len >= n && !b->oom, 1)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
    }
    return dl_buf_append_slow(b, p, n);
}
static inline int dl_buf_append_str(dl_buf_t *b, const char *s)
{
    return dl_buf_append(b, s, strlen(s));
}
static inline int dl_buf_append_char(dl_buf_t *b, char c)
{
    if (__builtin_expect(b->cap > b->len && !b->oom, 1)) {
        b->data[b->len++] = c;
        return 0;
    }
    return dl_buf_append_char_slow(b, c);
}
int dl_buf_appendf(dl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dl_buf_vappendf(dl_buf_t *b, const char *fmt, va_list ap);
/** Appends the decimal form of v. */
int dl_buf_append_u64(dl_buf_t *b, unsigned long long v);
/** Drops the first n bytes, moving the rest to the front. */
void dl_buf_consume(dl_buf_t *b, size_t n);

#endif
