/*
 * json_str.c - JSON string writing. One loop serves the Lua encoder (where
 * it is the hot path of every JSON response), error bodies, log lines and the
 * stores: it copies while it scans, 16 bytes at a time with SSE2 (8 without),
 * and leaves the loop only for a byte that needs work: an escape, or a byte
 * >= 0x80, whose sequence it checks so that no ill-formed UTF-8 from a path,
 * a header, a stored document or a handler's string ever reaches a client as
 * is (RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8).
 * ASCII costs one more OR per chunk than escaping alone; non-ASCII text takes
 * the slower checked path, a sequence at a time.
 */
#include "common/json_str.h"

#include "common/internal.h"

/* 0: copy as is; otherwise the letter after the backslash ('u' for \u00XX).
 * Bytes >= 0x80 are 0 here: they are checked, not escaped. */
static const char escape_tab[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    0,   0,   '"', 0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   '\\',
};

static const char hex_digits[] = "0123456789abcdef";

/* U+FFFD REPLACEMENT CHARACTER */
static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Slack reserved past the end of a string so whole chunks can be stored. */
#define CHUNK_SLACK 16

/* Makes room for a byte that grows (at most 6 out for 1 in) with left bytes
 * after it; returns the new d, or NULL when out of memory. */
static __attribute__((noinline)) char *grow(dl_buf_t *b, char *d, size_t left)
{
    size_t used = (size_t)(d - b->data);
    size_t need = 6 + left + CHUNK_SLACK;
    if (b->cap - used >= need)
        return d;
    b->len = used;
    if (dl_buf_reserve(b, need) != 0)
        return NULL;
    return b->data + used;
}

/* The one loop, copying while it scans, a chunk at a time. With b it writes
 * into b and keeps this invariant: the room left after d is at least the
 * bytes left in the string plus the closing quote plus CHUNK_SLACK, so a whole
 * chunk can be stored even past an escape (the bytes after it are
 * overwritten later); each byte that grows (an escape, a U+FFFD for a lone
 * byte) reserves its extra bytes first. Without b, d has
 * DL_JSON_ESCAPE_ROOM(end - s) bytes and nothing is checked. Returns the end
 * of the output, or NULL when out of memory. Inlined into both callers, so
 * the checks vanish where b is NULL. */
static inline __attribute__((always_inline)) char *escape(dl_buf_t *b, char *d,
                                                          const unsigned char *s,
                                                          const unsigned char *end)
{
    for (;;) {
#ifdef __SSE2__
        int mask, k;
        __m128i v;
        while (end - s >= 16) {
            v = _mm_loadu_si128((const __m128i *)s);
            _mm_storeu_si128((__m128i *)d, v);
            mask = dl_json_stop_mask(v) | _mm_movemask_epi8(v);
            if (mask != 0)
                goto found;
            s += 16;
            d += 16;
        }
        /* the tail as one padded chunk; the padding lanes are masked off */
        size_t rem = (size_t)(end - s);
        if (rem == 0)
            break;
        v = dl_load_partial16(s, rem);
        _mm_storeu_si128((__m128i *)d, v);
        mask = (dl_json_stop_mask(v) | _mm_movemask_epi8(v)) & ((1 << rem) - 1);
        if (mask == 0) {
            d += rem;
            break;
        }
    found:
        k = __builtin_ctz((unsigned)mask);
        s += k;
        d += k;
#else
        while (end - s >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if (dl_json_word_has_stop(w) || (w & 0x8080808080808080ULL) != 0)
                break;
            memcpy(d, &w, 8);
            s += 8;
            d += 8;
        }
        while (s < end && *s < 0x80 && !escape_tab[*s])
            *d++ = (char)*s++;
        if (s == end)
            break;
#endif
        if (*s < 0x80) {
            if (b != NULL && (d = grow(b, d, (size_t)(end - s))) == NULL)
                return NULL;
            char e = escape_tab[*s];
            d[0] = '\\';
            if (e != 'u') {
                d[1] = e;
                d += 2;
            } else {
                d[1] = 'u';
                d[2] = '0';
                d[3] = '0';
                d[4] = hex_digits[*s >> 4];
                d[5] = hex_digits[*s & 15];
                d += 6;
            }
            s++;
            continue;
        }
        /* A run of non-ASCII, a sequence at a time: well-formed ones are
         * copied (as many bytes out as in), ill-formed ones grow. */
        do {
            int n = dl_utf8_check(s, end);
            if (DL_LIKELY(n > 0)) {
                /* a fixed-size copy where the input allows (the output
                 * always does): a variable one is a call */
                if (DL_LIKELY(end - s >= 4))
                    memcpy(d, s, 4);
                else
                    memcpy(d, s, (size_t)n);
                d += n;
                s += n;
            } else {
                if (b != NULL && (d = grow(b, d, (size_t)(end - s))) == NULL)
                    return NULL;
                memcpy(d, replacement, 3);
                d += 3;
                s += -n;
            }
        } while (s < end && *s >= 0x80);
    }
    return d;
}

char *dl_json_escape(char *d, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    return escape(NULL, d, p, p + n);
}

int dl_json_put_string(dl_buf_t *b, const char *str, size_t len)
{
    if (DL_UNLIKELY(b->cap - b->len < len + 2 + CHUNK_SLACK || b->oom) &&
        dl_buf_reserve(b, len + 2 + CHUNK_SLACK) != 0)
        return DL_ENOMEM;
    const unsigned char *s = (const unsigned char *)str;
    char *d = b->data + b->len;
    *d++ = '"';
    d = escape(b, d, s, s + len);
    if (DL_UNLIKELY(d == NULL))
        return DL_ENOMEM;
    *d++ = '"';
    b->len = (size_t)(d - b->data);
    return 0;
}

char *dl_utf8_repair(char *d, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    while (s < end) {
        const unsigned char *run = s;
        while (s < end && *s < 0x80)
            s++;
        memcpy(d, run, (size_t)(s - run));
        d += s - run;
        while (s < end && *s >= 0x80) {
            int k = dl_utf8_check(s, end);
            if (k > 0) {
                memcpy(d, s, (size_t)k);
                d += k;
                s += k;
            } else {
                memcpy(d, replacement, 3);
                d += 3;
                s += -k;
            }
        }
    }
    return d;
}

size_t dl_utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int dl_json_read_u(const char *s, const char *end, unsigned *cp)
{
    unsigned hi, lo;
    if (end - s < 6 || dl_unhex4(s + 2, &hi) != 0)
        return -1;
    *cp = hi;
    if (hi < 0xD800 || hi > 0xDBFF || end - s < 12 || s[6] != '\\' || s[7] != 'u' ||
        dl_unhex4(s + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
        return 6;
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return 12;
}
