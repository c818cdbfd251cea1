/*
 * buf.c - growable byte buffers used for request heads, bodies and responses.
 */
#include "buf.h"

#include <stdio.h>
#include <string.h>

#include "internal.h"

void dl_buf_init(dl_buf_t *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void dl_buf_free(dl_buf_t *b)
{
    dl_free(b->data);
    dl_buf_init(b);
}

int dl_buf_reserve(dl_buf_t *b, size_t n)
{
    if (b->oom)
        return DL_ENOMEM;
    if (b->cap - b->len >= n)
        return 0;
    size_t need = b->len + n;
    if (need < b->len) {
        b->oom = 1;
        return DL_ENOMEM;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap * 2 > cap ? cap * 2 : need;
    char *p = dl_realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return DL_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int dl_buf_append_slow(dl_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return b->oom ? DL_ENOMEM : 0;
    if (dl_buf_reserve(b, n) != 0)
        return DL_ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int dl_buf_append_char_slow(dl_buf_t *b, char c)
{
    if (dl_buf_reserve(b, 1) != 0)
        return DL_ENOMEM;
    b->data[b->len++] = c;
    return 0;
}

int dl_buf_vappendf(dl_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return DL_EINVAL;
    if ((size_t)n < sizeof(tmp))
        return dl_buf_append(b, tmp, (size_t)n);
    if (dl_buf_reserve(b, (size_t)n + 1) != 0)
        return DL_ENOMEM;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int dl_buf_appendf(dl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dl_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int dl_buf_append_u64(dl_buf_t *b, unsigned long long v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return dl_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void dl_buf_consume(dl_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
