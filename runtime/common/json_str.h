/*
 * json_str.h - the one writer of JSON strings: every JSON text the runtime
 * produces (responses, error bodies, log lines, stored documents) quotes its
 * strings here, so escaping and UTF-8 repair happen in one place. Also the
 * byte-class scans the JSON decoder shares with it.
 */
#ifndef DL_JSON_STR_H
#define DL_JSON_STR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "common/buf.h"

/** Room dl_json_escape() needs for n input bytes: 6 per byte (\u00XX) and a
 * chunk of slack, since it stores 16 bytes at a time. */
#define DL_JSON_ESCAPE_ROOM(n) (6 * (size_t)(n) + 16)

/**
 * Writes the inside of a JSON string for s (n bytes) at d, which has
 * DL_JSON_ESCAPE_ROOM(n) bytes of room, and returns the end of what it wrote.
 * '"', '\\' and control characters are escaped (\n, \t, ... or \u00XX);
 * well-formed UTF-8 is copied as is; each ill-formed sequence (a stray
 * continuation byte, a lead byte C0, C1 or F5..FF, an overlong form, a
 * surrogate ED A0..BF, a code point past U+10FFFF, a truncated sequence)
 * becomes one U+FFFD per maximal subpart, as Unicode 3.9 recommends. So the
 * output is always valid UTF-8. Async-signal-safe (log.c writes from a crash
 * handler).
 */
char *dl_json_escape(char *d, const char *s, size_t n);

/**
 * Appends s (len bytes) as a quoted JSON string, escaped as dl_json_escape()
 * does. Returns 0 or DL_ENOMEM (b->oom is then set).
 */
int dl_json_put_string(dl_buf_t *b, const char *s, size_t len);

/**
 * Copies s (n bytes) to d with each ill-formed UTF-8 sequence replaced by
 * U+FFFD, as above, and nothing escaped: for JSON text that is already
 * well-formed JSON but may carry raw bytes inside its strings. d has 3 * n
 * bytes of room. Returns the end of what it wrote.
 */
char *dl_utf8_repair(char *d, const char *s, size_t n);

/**
 * Writes code point cp (at most U+10FFFF; the caller has turned surrogates
 * into what it wants) as UTF-8 at o, which has 4 bytes of room, and returns
 * how many bytes it wrote (1..4). The JSON decoders' \\u escapes come here.
 */
size_t dl_utf8_put(char *o, unsigned cp);

/**
 * Reads the escape "\\uXXXX" at s (s[0] is the backslash; nothing is read
 * at or past end) and, when it is a high surrogate followed by a "\\uXXXX"
 * low one, the pair. Sets *cp to the code point, a lone surrogate as itself
 * (each decoder has its own policy for those: an error, or U+FFFD), and
 * returns the bytes read (6 or 12), or -1 when 4 hex digits do not follow.
 */
int dl_json_read_u(const char *s, const char *end, unsigned *cp);

/**
 * The well-formed UTF-8 sequence at s (s[0] >= 0x80, end > s): returns its
 * length (2..4), or minus the length (1..3) of the maximal ill-formed subpart
 * that one U+FFFD replaces.
 */
static inline int dl_utf8_check(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    int need;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return -1; /* continuation byte, C0, C1, F5..FF */
    }
    size_t avail = (size_t)(end - s);
    if (avail < 2 || s[1] < lo || s[1] > hi)
        return -1;
    for (int i = 2; i <= need; i++) {
        if (avail <= (size_t)i || (s[i] & 0xC0) != 0x80)
            return -i;
    }
    return need + 1;
}

#ifdef __SSE2__
/* Bit i set when byte i of v is a control character, '"' or '\\': where a
 * JSON string's plain run ends for the decoder. */
static inline int dl_json_stop_mask(__m128i v)
{
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i c1f = _mm_set1_epi8(0x1f);
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v); /* unsigned v <= 0x1f */
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                             ctl);
    return _mm_movemask_epi8(m);
}

/* The n < 16 bytes at s in the low lanes, zeros above, without reading past
 * s + n: overlapping 8-, 4- or 1-byte loads (x86 is little-endian). */
static inline __m128i dl_load_partial16(const unsigned char *s, size_t n)
{
    uint64_t lo = 0, hi = 0;
    if (n >= 8) {
        memcpy(&lo, s, 8);
        if (n > 8) {
            memcpy(&hi, s + n - 8, 8);
            hi >>= 8 * (16 - n);
        }
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        lo = a | (uint64_t)b << (8 * (n - 4));
    } else if (n > 0) {
        lo = (uint64_t)s[0] | (uint64_t)s[n / 2] << (8 * (n / 2)) |
             (uint64_t)s[n - 1] << (8 * (n - 1));
    }
    return _mm_unpacklo_epi64(_mm_cvtsi64_si128((long long)lo), _mm_cvtsi64_si128((long long)hi));
}
#else
/* Nonzero when one of the 8 bytes is a control character, '"' or '\\'. The
 * has-less-than and has-zero-byte tricks are exact for "is there any". */
static inline int dl_json_word_has_stop(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t high = 0x8080808080808080ULL;
    uint64_t q = x ^ (ones * '"');
    uint64_t b = x ^ (ones * '\\');
    uint64_t lt = (x - ones * 0x20) & ~x;
    uint64_t zq = (q - ones) & ~q;
    uint64_t zb = (b - ones) & ~b;
    return ((lt | zq | zb) & high) != 0;
}
#endif

#endif /* DL_JSON_STR_H */
