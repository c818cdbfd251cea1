/*
 * sb.h - a growable, always NUL-terminated byte string for unit tests that
 * record traces and compare them as C strings (dl_buf_t is not terminated).
 */
#ifndef DL_TEST_SB_H
#define DL_TEST_SB_H

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t len, cap;
} sb_t;

static inline void sb_add(sb_t *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL)
            abort();
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void sb_str(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static inline void sb_free(sb_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

#endif
