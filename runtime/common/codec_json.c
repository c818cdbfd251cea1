/*
 * codec_json.c - JSON encoding and decoding between Lua values and text. The
 * encoder sits on the hot path of every JSON response, so it writes straight
 * into the output buffer after reserving, leaves strings to json_str.c's
 * writer (which escapes and repairs UTF-8 16 bytes at a time), prints
 * integers without printf and walks each table once where it can: its cost is
 * then mostly the Lua C API calls (lua_next, lua_type, lua_tolstring). The
 * decoder is a recursive descent parser over a length-delimited input that
 * follows RFC 8259 strictly and builds Lua values as it goes, counting them
 * against an optional element budget (request bodies) so that what a body
 * costs is bounded by more than its byte size; it holds no C-allocated
 * memory, so a Lua error (OOM) raised from inside it leaks nothing. Arrays
 * and empty objects carry marker metatables from the registry so that [] and
 * {} survive a round trip. The table classification and the frame of the
 * encoder and decoder are codec.c's, shared with codec_msgpack.c.
 */
#include "common/codec_json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "common/internal.h"
#include "common/num.h"

/* ------------------------------------------------------------------------ */
/* Encoder                                                                   */
/* ------------------------------------------------------------------------ */

typedef dl_codec_enc_t encoder_t;

#define enc_fail dl_codec_enc_fail

static inline int put_char(dl_buf_t *b, char c)
{
    if (DL_LIKELY(b->len < b->cap)) {
        b->data[b->len++] = c;
        return 0;
    }
    return dl_buf_append_char(b, c);
}

static inline int reserve(dl_buf_t *b, size_t n)
{
    if (DL_LIKELY(b->cap - b->len >= n && !b->oom))
        return 0;
    return dl_buf_reserve(b, n);
}

static int put_number(encoder_t *e, double d, int quoted)
{
    dl_buf_t *b = e->out;
    if (reserve(b, 34) != 0)
        return DL_ENOMEM;
    char *p = b->data + b->len;
    if (quoted)
        *p++ = '"';
    size_t n = dl_num_format_double(d, p);
    if (n == 0)
        return enc_fail(e, DL_ECODEC, "cannot encode NaN or Inf");
    p += n;
    if (quoted)
        *p++ = '"';
    b->len = (size_t)(p - b->data);
    return 0;
}

static int enc_value(encoder_t *e, int idx, int depth);

/* The stack while a table is encoded: the table at idx, then from top + 1 the
 * key and value of lua_next, or the element of lua_rawgeti. Indexes are
 * computed from top rather than asked for with lua_gettop per value: on this
 * path every C API call counts. */
static int enc_table(encoder_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    dl_buf_t *b = e->out;
    int rc;
    int top = lua_gettop(L);
    size_t n = 0;
    int kind = dl_codec_enc_open_table(e, idx, ++depth, &n);
    if (kind < 0)
        return kind;
    if (kind == DL_CODEC_ARRAY) {
        if (put_char(b, '[') != 0)
            return DL_ENOMEM;
        for (size_t i = 1; i <= n; i++) {
            if (i > 1 && put_char(b, ',') != 0)
                return DL_ENOMEM;
            lua_rawgeti(L, idx, (int)i);
            rc = enc_value(e, top + 1, depth);
            if (rc != 0)
                return rc; /* the caller resets the stack */
            lua_pop(L, 1);
        }
        return put_char(b, ']');
    }

    if (put_char(b, '{') != 0)
        return DL_ENOMEM;
    if (kind != DL_CODEC_OBJECT_PAIR) {
        lua_pushnil(L);
        if (!lua_next(L, idx))
            return put_char(b, '}');
    }
    for (;;) {
        int kt = lua_type(L, top + 1);
        if (DL_LIKELY(kt == LUA_TSTRING)) {
            size_t klen;
            const char *ks = lua_tolstring(L, top + 1, &klen);
            rc = dl_json_put_string(b, ks, klen);
        } else if (kt == LUA_TNUMBER) {
            rc = put_number(e, lua_tonumber(L, top + 1), 1); /* quoted: JSON keys are strings */
        } else {
            return dl_codec_enc_bad_key(e, kt);
        }
        if (rc != 0)
            return rc;
        if (put_char(b, ':') != 0)
            return DL_ENOMEM;
        rc = enc_value(e, top + 2, depth);
        if (rc != 0)
            return rc;
        lua_pop(L, 1);
        if (!lua_next(L, idx))
            break;
        if (put_char(b, ',') != 0)
            return DL_ENOMEM;
    }
    return put_char(b, '}');
}

static int put_literal(dl_buf_t *b, const char *s, size_t n)
{
    return dl_buf_append(b, s, n);
}

/* Tests in order of frequency rather than a switch: the jump table's
 * indirect branch mispredicts on documents mixing strings and tables. */
static int enc_value(encoder_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    int t = lua_type(L, idx);
    if (DL_LIKELY(t == LUA_TSTRING)) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return dl_json_put_string(e->out, s, len);
    }
    if (t == LUA_TNUMBER)
        return put_number(e, lua_tonumber(L, idx), 0);
    if (t == LUA_TTABLE)
        return enc_table(e, idx, depth);
    if (t == LUA_TBOOLEAN)
        return lua_toboolean(L, idx) ? put_literal(e->out, "true", 4)
                                     : put_literal(e->out, "false", 5);
    if (t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL))
        return put_literal(e->out, "null", 4);
    return enc_fail(e, DL_ECODEC, "cannot encode %s", lua_typename(L, t));
}

int dl_json_encode(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen)
{
    encoder_t e;
    int base = dl_codec_enc_begin(&e, L, &idx, out, err, errlen);
    if (base < 0)
        return base;
    return dl_codec_enc_end(&e, base, enc_value(&e, idx, 0));
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    dl_codec_dec_t c; /* the state both decoders share */
    const char *start;
    const char *p;
    const char *end;
} decoder_t;

/* Bytes that end the plain part of a string: '"', '\\' and controls. */
#define IS_STRING_STOP(c) ((unsigned char)(c) < 0x20 || (c) == '"' || (c) == '\\')

#define dec_fail(d, ...) dl_codec_dec_fail(&(d)->c, __VA_ARGS__)

/* The error for whatever sits at s: end of input or a wrong byte. */
static int dec_unexpected(decoder_t *d, const char *s)
{
    if (s >= d->end)
        return dec_fail(d, "unexpected end of input");
    unsigned char c = (unsigned char)*s;
    size_t off = (size_t)(s - d->start);
    if (c > 0x20 && c < 0x7f)
        return dec_fail(d, "unexpected character '%c' at byte %zu", c, off);
    return dec_fail(d, "unexpected byte 0x%02x at byte %zu", c, off);
}

static inline void skip_ws(decoder_t *d)
{
    const char *p = d->p, *end = d->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

static const char *scan_plain(const char *s, const char *end)
{
#ifdef __SSE2__
    while (end - s >= 16) {
        int mask = dl_json_stop_mask(_mm_loadu_si128((const __m128i *)s));
        if (mask != 0)
            return s + __builtin_ctz((unsigned)mask);
        s += 16;
    }
    size_t rem = (size_t)(end - s);
    if (rem == 0)
        return s;
    int mask =
        dl_json_stop_mask(dl_load_partial16((const unsigned char *)s, rem)) & ((1 << rem) - 1);
    return mask ? s + __builtin_ctz((unsigned)mask) : end;
#else
    while (end - s >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        if (dl_json_word_has_stop(w))
            break;
        s += 8;
    }
    while (s < end && !IS_STRING_STOP(*s))
        s++;
    return s;
#endif
}

/* A string with escapes, from the first backslash at s; run is the start of
 * the plain bytes before it. Kept out of line: luaL_Buffer is BUFSIZ bytes and
 * must not sit in every frame of the container recursion. */
static __attribute__((noinline)) int dec_string_escaped(decoder_t *d, const char *run,
                                                         const char *s)
{
    lua_State *L = d->c.L;
    const char *end = d->end;
    luaL_Buffer b;
    if (!lua_checkstack(L, LUA_MINSTACK))
        return dec_fail(d, "out of Lua stack");
    luaL_buffinit(L, &b);
    for (;;) {
        /* s is at a stop byte or at the end */
        luaL_addlstring(&b, run, (size_t)(s - run));
        if (s >= end)
            return dec_fail(d, "unexpected end of input");
        if (*s == '"')
            break;
        if (*s != '\\')
            return dec_fail(d, "control character in string at byte %zu",
                            (size_t)(s - d->start));
        if (end - s < 2)
            return dec_fail(d, "unexpected end of input");
        char c;
        switch (s[1]) {
        case '"':
            c = '"';
            break;
        case '\\':
            c = '\\';
            break;
        case '/':
            c = '/';
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            if (end - s < 6)
                return dec_fail(d, "unexpected end of input");
            unsigned cp;
            int used = dl_json_read_u(s, end, &cp);
            if (used < 0)
                return dec_fail(d, "invalid \\u escape at byte %zu", (size_t)(s - d->start));
            if (cp >= 0xD800 && cp <= 0xDFFF)
                return dec_fail(d, "lone surrogate at byte %zu", (size_t)(s - d->start));
            char u[4];
            luaL_addlstring(&b, u, dl_utf8_put(u, cp));
            s += used;
            goto next;
        }
        default:
            return dec_fail(d, "invalid escape at byte %zu", (size_t)(s - d->start));
        }
        luaL_addchar(&b, c);
        s += 2;
    next:
        run = s;
        s = scan_plain(s, end);
    }
    luaL_pushresult(&b);
    d->p = s + 1;
    return 0;
}

static int dec_string(decoder_t *d)
{
    const char *run = d->p + 1;
    const char *s = scan_plain(run, d->end);
    if (DL_LIKELY(s < d->end && *s == '"')) {
        lua_pushlstring(d->c.L, run, (size_t)(s - run));
        d->p = s + 1;
        return 0;
    }
    return dec_string_escaped(d, run, s);
}

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

static int dec_number(decoder_t *d)
{
    const char *p = d->p, *end = d->end, *s = p;
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    const char *digits = s;
    if (s >= end)
        return dec_unexpected(d, s);
    if (*s == '0') {
        s++;
        if (s < end && IS_DIGIT(*s))
            return dec_fail(d, "leading zero in number at byte %zu", (size_t)(p - d->start));
    } else if (IS_DIGIT(*s)) {
        while (s < end && IS_DIGIT(*s))
            s++;
    } else {
        return dec_unexpected(d, s);
    }
    size_t ndigits = (size_t)(s - digits);
    int integral = 1;
    if (s < end && *s == '.') {
        integral = 0;
        s++;
        if (s >= end || !IS_DIGIT(*s))
            return dec_unexpected(d, s);
        while (s < end && IS_DIGIT(*s))
            s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        integral = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            s++;
        if (s >= end || !IS_DIGIT(*s))
            return dec_unexpected(d, s);
        while (s < end && IS_DIGIT(*s))
            s++;
    }
    d->p = s;

    if (integral && ndigits <= 15) {
        /* Exact in a double: no strtod needed. */
        int64_t v = 0;
        for (const char *q = digits; q < s; q++)
            v = v * 10 + (*q - '0');
        double x = (double)v;
        lua_pushnumber(d->c.L, neg ? -x : x);
        return 0;
    }
    size_t n = (size_t)(s - p);
    char tmp[64];
    double x;
    if (n < sizeof(tmp)) {
        memcpy(tmp, p, n);
        tmp[n] = '\0';
        x = strtod(tmp, NULL);
    } else {
        /* Rare: a long number goes through a Lua string for its NUL. */
        lua_pushlstring(d->c.L, p, n);
        x = strtod(lua_tostring(d->c.L, -1), NULL);
        lua_pop(d->c.L, 1);
    }
    /* 1e400 is JSON but no double: as inf it could never be written back */
    if (!isfinite(x))
        return dec_fail(d, "number out of range at byte %zu", (size_t)(p - d->start));
    lua_pushnumber(d->c.L, x);
    return 0;
}

static int dec_literal(decoder_t *d, const char *lit, size_t n)
{
    const char *p = d->p;
    for (size_t i = 0; i < n; i++) {
        if (p + i >= d->end || p[i] != lit[i])
            return dec_unexpected(d, p + i);
    }
    d->p = p + n;
    return 0;
}

static int dec_value(decoder_t *d, int depth);

/* Enters the array or object whose opening byte is at d->p: one level
 * deeper, room on the stack, past the byte. Returns 1 when the closing byte
 * follows (an empty one, consumed), 0 when elements do, or an error. */
static inline int dec_enter(decoder_t *d, int depth, char close)
{
    if (depth > d->c.max_depth)
        return dec_fail(d, "nesting deeper than %d", d->c.max_depth);
    if (!lua_checkstack(d->c.L, 6))
        return dec_fail(d, "out of Lua stack");
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == close) {
        d->p++;
        return 1;
    }
    return 0;
}

/* After an element: 1 past a ',' (another follows), 0 past the closing
 * byte, or the error for anything else. */
static inline int dec_after(decoder_t *d, char close)
{
    skip_ws(d);
    if (d->p < d->end && *d->p == ',') {
        d->p++;
        return 1;
    }
    if (d->p < d->end && *d->p == close) {
        d->p++;
        return 0;
    }
    return dec_unexpected(d, d->p);
}

static int dec_array(decoder_t *d, int depth)
{
    lua_State *L = d->c.L;
    int rc = dec_enter(d, ++depth, ']');
    if (rc < 0)
        return rc;
    lua_newtable(L);
    lua_pushvalue(L, d->c.mt_array);
    lua_setmetatable(L, -2);
    if (rc == 1)
        return 0;
    for (int i = 1;; i++) {
        rc = dec_value(d, depth);
        if (rc != 0)
            return rc;
        lua_rawseti(L, -2, i);
        rc = dec_after(d, ']');
        if (rc <= 0)
            return rc;
    }
}

static int dec_object(decoder_t *d, int depth)
{
    lua_State *L = d->c.L;
    int rc = dec_enter(d, ++depth, '}');
    if (rc < 0)
        return rc;
    if (rc == 1) {
        /* no hash part: {} is the cheapest value a body can repeat */
        lua_createtable(L, 0, 0);
        lua_pushvalue(L, d->c.mt_object);
        lua_setmetatable(L, -2);
        return 0;
    }
    lua_createtable(L, 0, 4);
    for (;;) {
        skip_ws(d);
        if (d->p >= d->end || *d->p != '"')
            return dec_unexpected(d, d->p);
        rc = dec_string(d);
        if (rc != 0)
            return rc;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':')
            return dec_unexpected(d, d->p);
        d->p++;
        rc = dec_value(d, depth);
        if (rc != 0)
            return rc;
        lua_rawset(L, -3);
        rc = dec_after(d, '}');
        if (rc <= 0)
            return rc;
    }
}

static int dec_value(decoder_t *d, int depth)
{
    if (DL_UNLIKELY(d->c.elements_left == 0))
        return dl_codec_dec_too_many(&d->c);
    d->c.elements_left--;
    skip_ws(d);
    if (d->p >= d->end)
        return dec_fail(d, "unexpected end of input");
    int rc;
    switch (*d->p) {
    case '"':
        return dec_string(d);
    case '{':
        return dec_object(d, depth);
    case '[':
        return dec_array(d, depth);
    case 't':
        rc = dec_literal(d, "true", 4);
        if (rc == 0)
            lua_pushboolean(d->c.L, 1);
        return rc;
    case 'f':
        rc = dec_literal(d, "false", 5);
        if (rc == 0)
            lua_pushboolean(d->c.L, 0);
        return rc;
    case 'n':
        rc = dec_literal(d, "null", 4);
        if (rc == 0)
            lua_pushlightuserdata(d->c.L, NULL);
        return rc;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return dec_number(d);
    default:
        return dec_unexpected(d, d->p);
    }
}

int dl_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen)
{
    return dl_json_decode_limited(L, s, len, NULL, err, errlen);
}

int dl_json_decode_limited(lua_State *L, const char *s, size_t len, const dl_codec_limits_t *lim,
                           char *err, size_t errlen)
{
    if (s == NULL)
        s = "";
    decoder_t d;
    d.start = d.p = s;
    d.end = s + len;
    int base = dl_codec_dec_begin(&d.c, L, lim, err, errlen);
    if (base < 0)
        return base;
    int rc = dec_value(&d, 0);
    if (rc == 0) {
        skip_ws(&d);
        if (d.p != d.end)
            rc = dec_fail(&d, "trailing characters at byte %zu", (size_t)(d.p - s));
    }
    return dl_codec_dec_end(L, base, rc);
}
