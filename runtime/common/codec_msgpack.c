/*
 * codec_msgpack.c - MessagePack encoding and decoding between Lua values and
 * bytes. Encoding uses msgpack-c's packer (which picks the smallest int form)
 * writing straight into a dl_buf_t, with the table classification and the
 * encoder frame shared with codec_json.c (codec.c); strings, the bulk of
 * most documents, bypass its callbacks, and maps get their header patched
 * once their pairs are counted, so each table is walked once. Decoding is a small parser of our own that builds Lua values
 * directly: msgpack-c's unpacker caps nesting at 32 levels (its compiled-in
 * MSGPACK_EMBED_STACK_SIZE, reported as an out-of-memory error) where we
 * accept 256, and it allocates count-sized arrays from untrusted headers
 * before checking that the bytes exist, where we reject any count larger
 * than the bytes left, then charge the count to the element budget of a
 * request body before building anything. The parser holds no C-allocated
 * memory, so a Lua error (OOM) raised inside it leaks nothing.
 */
#include "common/codec_msgpack.h"

#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack.h>

#include "common/codec.h"
#include "common/internal.h"
#include "common/num.h"

/* ------------------------------------------------------------------------ */
/* Encoder                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    dl_codec_enc_t c; /* the state both encoders share */
    msgpack_packer pk;
} mp_encoder_t;

static int buf_write(void *data, const char *p, size_t len)
{
    dl_buf_t *b = (dl_buf_t *)data;
    if (len == 0)
        return 0;
    if (DL_LIKELY(b->cap - b->len >= len && !b->oom)) {
        memcpy(b->data + b->len, p, len);
        b->len += len;
        return 0;
    }
    return dl_buf_append(b, p, len) == 0 ? 0 : -1;
}

#define enc_fail(e, ...) dl_codec_enc_fail(&(e)->c, __VA_ARGS__)

/* Packer failures can only come from buf_write, i.e. out of memory. */
#define PACK(call) ((call) == 0 ? 0 : DL_ENOMEM)

static int pack_number(mp_encoder_t *e, double d)
{
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        int64_t i = (int64_t)d;
        if ((double)i == d)
            return PACK(msgpack_pack_int64(&e->pk, i));
    }
    return PACK(msgpack_pack_double(&e->pk, d));
}

/* Strings are the bulk of most documents, so they skip the packer's two
 * callback writes: one reserve, then the header (the same smallest str form
 * msgpack_pack_str picks) and the body. */
static int pack_string(mp_encoder_t *e, const char *s, size_t len)
{
    dl_buf_t *b = e->c.out;
    if (len > 0xffffffffu)
        return enc_fail(e, DL_ECODEC, "string longer than 4 GB");
    if (DL_UNLIKELY(b->cap - b->len < len + 5 || b->oom) && dl_buf_reserve(b, len + 5) != 0)
        return DL_ENOMEM;
    unsigned char *h = (unsigned char *)b->data + b->len;
    if (len < 32) {
        *h++ = (unsigned char)(0xa0 | len);
    } else if (len < 0x100) {
        *h++ = 0xd9;
        *h++ = (unsigned char)len;
    } else if (len < 0x10000) {
        *h++ = 0xda;
        *h++ = (unsigned char)(len >> 8);
        *h++ = (unsigned char)len;
    } else {
        *h++ = 0xdb;
        *h++ = (unsigned char)(len >> 24);
        *h++ = (unsigned char)(len >> 16);
        *h++ = (unsigned char)(len >> 8);
        *h++ = (unsigned char)len;
    }
    memcpy(h, s, len);
    b->len = (size_t)((char *)h - b->data) + len;
    return 0;
}

/* Integral keys stay ints; other numeric keys become str in the JSON number
 * form, since our decoder (like most peers) accepts only str and int keys. */
static int pack_key_number(mp_encoder_t *e, double d)
{
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d)
        return PACK(msgpack_pack_int64(&e->pk, (int64_t)d));
    /* [2^63, 2^64]: a uint64 key, as the decoder read it (UINT64_MAX reads
     * back as the double 2^64) */
    if (d >= 9223372036854775808.0 && d <= 18446744073709551616.0 && d == floor(d))
        return PACK(msgpack_pack_uint64(&e->pk, d < 18446744073709551616.0 ? (uint64_t)d
                                                                           : UINT64_MAX));
    char tmp[DL_NUM_ROOM];
    size_t n = dl_num_format_double(d, tmp);
    if (n == 0)
        return enc_fail(e, DL_ECODEC, "cannot encode NaN or Inf as a key");
    return pack_string(e, tmp, n);
}

static int pack_value(mp_encoder_t *e, int idx, int depth);

/* A map's pair count is known only at its end (counting first would walk
 * every table twice), so a one-byte fixmap header is written first and
 * widened in place, moving the pairs, when the map has more than 15. */
static int patch_map_header(dl_buf_t *b, size_t pos, size_t count)
{
    if (count <= 15) {
        b->data[pos] = (char)(0x80 | count);
        return 0;
    }
    if (count > 0xffffffffu)
        return DL_ECODEC;
    size_t extra = count <= 0xffff ? 2 : 4;
    if (dl_buf_reserve(b, extra) != 0)
        return DL_ENOMEM;
    memmove(b->data + pos + 1 + extra, b->data + pos + 1, b->len - pos - 1);
    b->len += extra;
    unsigned char *h = (unsigned char *)b->data + pos;
    if (extra == 2) {
        h[0] = 0xde;
        h[1] = (unsigned char)(count >> 8);
        h[2] = (unsigned char)count;
    } else {
        h[0] = 0xdf;
        h[1] = (unsigned char)(count >> 24);
        h[2] = (unsigned char)(count >> 16);
        h[3] = (unsigned char)(count >> 8);
        h[4] = (unsigned char)count;
    }
    return 0;
}

/* The stack while a table is packed: the table at idx, then from top + 1 the
 * key and value of lua_next, or the element of lua_rawgeti. */
static int pack_table(mp_encoder_t *e, int idx, int depth)
{
    lua_State *L = e->c.L;
    int rc;
    int top = lua_gettop(L);
    size_t n = 0;
    int kind = dl_codec_enc_open_table(&e->c, idx, ++depth, &n);
    if (kind < 0)
        return kind;
    if (kind == DL_CODEC_ARRAY) {
        if (PACK(msgpack_pack_array(&e->pk, n)) != 0)
            return DL_ENOMEM;
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            rc = pack_value(e, top + 1, depth);
            if (rc != 0)
                return rc; /* the caller resets the stack */
            lua_pop(L, 1);
        }
        return 0;
    }

    size_t pos = e->c.out->len;
    if (buf_write(e->c.out, "\x80", 1) != 0)
        return DL_ENOMEM;
    if (kind != DL_CODEC_OBJECT_PAIR) {
        lua_pushnil(L);
        if (!lua_next(L, idx))
            return 0;
    }
    size_t count = 0;
    do {
        int kt = lua_type(L, top + 1);
        if (DL_LIKELY(kt == LUA_TSTRING)) {
            size_t klen;
            const char *ks = lua_tolstring(L, top + 1, &klen);
            rc = pack_string(e, ks, klen);
        } else if (kt == LUA_TNUMBER) {
            rc = pack_key_number(e, lua_tonumber(L, top + 1));
        } else {
            return dl_codec_enc_bad_key(&e->c, kt);
        }
        if (rc != 0)
            return rc;
        rc = pack_value(e, top + 2, depth);
        if (rc != 0)
            return rc;
        lua_pop(L, 1);
        count++;
    } while (lua_next(L, idx));
    if (e->c.out->oom)
        return DL_ENOMEM;
    rc = patch_map_header(e->c.out, pos, count);
    if (rc == DL_ECODEC)
        return enc_fail(e, rc, "map of more than 2^32 pairs");
    return rc;
}

static int pack_value(mp_encoder_t *e, int idx, int depth)
{
    lua_State *L = e->c.L;
    int t = lua_type(L, idx);
    switch (t) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return pack_string(e, s, len);
    }
    case LUA_TNUMBER:
        return pack_number(e, lua_tonumber(L, idx));
    case LUA_TTABLE:
        return pack_table(e, idx, depth);
    case LUA_TBOOLEAN:
        return PACK(lua_toboolean(L, idx) ? msgpack_pack_true(&e->pk)
                                          : msgpack_pack_false(&e->pk));
    case LUA_TNIL:
        return PACK(msgpack_pack_nil(&e->pk));
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return PACK(msgpack_pack_nil(&e->pk));
        break;
    default:
        break;
    }
    return enc_fail(e, DL_ECODEC, "cannot encode %s", lua_typename(L, t));
}

int dl_msgpack_encode(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen)
{
    mp_encoder_t e;
    msgpack_packer_init(&e.pk, out, buf_write);
    int base = dl_codec_enc_begin(&e.c, L, &idx, out, err, errlen);
    if (base < 0)
        return base;
    return dl_codec_enc_end(&e.c, base, pack_value(&e, idx, 0));
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    dl_codec_dec_t c; /* the state both decoders share */
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
} mp_decoder_t;

#define dec_fail(d, ...) dl_codec_dec_fail(&(d)->c, __VA_ARGS__)

/* Takes n values from the element budget, or fails with DL_ETOOBIG (413 for
 * a request body). Containers take their count from their header, before a
 * single element is built. */
static inline int take_elements(mp_decoder_t *d, size_t n)
{
    if (DL_LIKELY(n <= d->c.elements_left)) {
        d->c.elements_left -= n;
        return 0;
    }
    return dl_codec_dec_too_many(&d->c);
}

static inline size_t left(const mp_decoder_t *d)
{
    return (size_t)(d->end - d->p);
}

static inline uint32_t rd16(const unsigned char *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Reads a big-endian length of w bytes (1, 2 or 4) after the type byte. */
static int read_len(mp_decoder_t *d, int w, size_t *n)
{
    if (left(d) < (size_t)w)
        return dec_fail(d, "truncated input");
    *n = w == 1 ? d->p[0] : w == 2 ? rd16(d->p) : rd32(d->p);
    d->p += w;
    return 0;
}

static int dec_bytes(mp_decoder_t *d, size_t n)
{
    if (left(d) < n)
        return dec_fail(d, "truncated input");
    lua_pushlstring(d->c.L, (const char *)d->p, n);
    d->p += n;
    return 0;
}

static int dec_value(mp_decoder_t *d, int depth);

static int dec_array(mp_decoder_t *d, size_t n, int depth)
{
    lua_State *L = d->c.L;
    if (++depth > d->c.max_depth)
        return dec_fail(d, "nesting deeper than %d", d->c.max_depth);
    /* Every element takes at least one byte. */
    if (n > left(d))
        return dec_fail(d, "truncated input");
    int rc = take_elements(d, n);
    if (rc != 0)
        return rc;
    if (!lua_checkstack(L, 4))
        return dec_fail(d, "out of Lua stack");
    lua_createtable(L, (int)DL_MIN(n, (size_t)1 << 20), 0);
    lua_pushvalue(L, d->c.mt_array);
    lua_setmetatable(L, -2);
    for (size_t i = 1; i <= n; i++) {
        rc = dec_value(d, depth);
        if (rc != 0)
            return rc;
        lua_rawseti(L, -2, (int)i);
    }
    return 0;
}

static const char *key_type_name(unsigned char c)
{
    if (c == 0xc0)
        return "nil";
    if (c == 0xc2 || c == 0xc3)
        return "boolean";
    if (c >= 0xc4 && c <= 0xc6)
        return "bin";
    if ((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8))
        return "ext";
    if (c == 0xca || c == 0xcb)
        return "float";
    if ((c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd)
        return "array";
    if ((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)
        return "map";
    return NULL; /* str, int, or the invalid 0xc1 */
}

static int dec_map(mp_decoder_t *d, size_t n, int depth)
{
    lua_State *L = d->c.L;
    if (++depth > d->c.max_depth)
        return dec_fail(d, "nesting deeper than %d", d->c.max_depth);
    if (n > left(d) / 2)
        return dec_fail(d, "truncated input");
    int rc = take_elements(d, n); /* one per pair: the keys are not counted */
    if (rc != 0)
        return rc;
    if (!lua_checkstack(L, 4))
        return dec_fail(d, "out of Lua stack");
    lua_createtable(L, 0, (int)DL_MIN(n, (size_t)1 << 16));
    if (n == 0) {
        lua_pushvalue(L, d->c.mt_object);
        lua_setmetatable(L, -2);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (d->p >= d->end)
            return dec_fail(d, "truncated input");
        const char *bad = key_type_name(*d->p);
        if (bad != NULL)
            return dec_fail(d, "map key of type %s at byte %zu", bad,
                            (size_t)(d->p - d->start));
        rc = dec_value(d, depth);
        if (rc != 0)
            return rc;
        rc = dec_value(d, depth);
        if (rc != 0)
            return rc;
        lua_rawset(L, -3);
    }
    return 0;
}

static int dec_value(mp_decoder_t *d, int depth)
{
    lua_State *L = d->c.L;
    if (d->p >= d->end)
        return dec_fail(d, "truncated input");
    size_t off = (size_t)(d->p - d->start);
    unsigned char c = *d->p++;
    size_t n = 0;
    int rc;

    if (c <= 0x7f) {
        lua_pushnumber(L, c);
        return 0;
    }
    if (c >= 0xe0) {
        lua_pushnumber(L, (int8_t)c);
        return 0;
    }
    if (c <= 0x8f)
        return dec_map(d, c & 0x0f, depth);
    if (c <= 0x9f)
        return dec_array(d, c & 0x0f, depth);
    if (c <= 0xbf)
        return dec_bytes(d, c & 0x1f);

    switch (c) {
    case 0xc0:
        lua_pushlightuserdata(L, NULL);
        return 0;
    case 0xc2:
    case 0xc3:
        lua_pushboolean(L, c == 0xc3);
        return 0;
    case 0xc4: /* bin 8/16/32: a length of 1 << (c - 0xc4) bytes */
    case 0xc5:
    case 0xc6:
    case 0xd9: /* str 8/16/32: 1 << (c - 0xd9) */
    case 0xda:
    case 0xdb:
        rc = read_len(d, 1 << (c - (c >= 0xd9 ? 0xd9 : 0xc4)), &n);
        return rc ? rc : dec_bytes(d, n);
    case 0xdc: /* array 16/32, map 16/32: the low bit picks 2 or 4 bytes */
    case 0xdd:
    case 0xde:
    case 0xdf:
        rc = read_len(d, 2 << (c & 1), &n);
        if (rc != 0)
            return rc;
        return c <= 0xdd ? dec_array(d, n, depth) : dec_map(d, n, depth);
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return dec_fail(d, "unsupported ext type at byte %zu", off);
    case 0xc1:
        return dec_fail(d, "invalid byte 0xc1 at byte %zu", off);
    default:
        break;
    }

    /* Fixed-width numbers: 0xca..0xd3. The width is 1 << (c & 3) for the
     * ints, 4 or 8 for the floats. */
    size_t w = (c == 0xca) ? 4 : (c == 0xcb) ? 8 : (size_t)1 << (c & 3);
    if (left(d) < w)
        return dec_fail(d, "truncated input");
    const unsigned char *p = d->p;
    d->p += w;
    double x;
    switch (c) {
    case 0xca: {
        uint32_t u = rd32(p);
        float f;
        memcpy(&f, &u, 4);
        x = f;
        break;
    }
    case 0xcb: {
        uint64_t u = rd64(p);
        memcpy(&x, &u, 8);
        break;
    }
    case 0xcc:
        x = p[0];
        break;
    case 0xcd:
        x = rd16(p);
        break;
    case 0xce:
        x = rd32(p);
        break;
    case 0xcf:
        x = (double)rd64(p);
        break;
    case 0xd0:
        x = (int8_t)p[0];
        break;
    case 0xd1:
        x = (int16_t)rd16(p);
        break;
    case 0xd2:
        x = (int32_t)rd32(p);
        break;
    default: /* 0xd3 */
        x = (double)(int64_t)rd64(p);
        break;
    }
    lua_pushnumber(L, x);
    return 0;
}

int dl_msgpack_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen)
{
    return dl_msgpack_decode_limited(L, s, len, NULL, err, errlen);
}

int dl_msgpack_decode_limited(lua_State *L, const char *s, size_t len,
                              const dl_codec_limits_t *lim, char *err, size_t errlen)
{
    if (s == NULL)
        s = "";
    mp_decoder_t d;
    d.start = d.p = (const unsigned char *)s;
    d.end = d.start + len;
    int base = dl_codec_dec_begin(&d.c, L, lim, err, errlen);
    if (base < 0)
        return base;
    /* the top value */
    int rc = take_elements(&d, 1);
    if (rc == 0)
        rc = dec_value(&d, 0);
    if (rc == 0 && d.p != d.end)
        rc = dec_fail(&d, "trailing bytes at byte %zu", (size_t)(d.p - d.start));
    return dl_codec_dec_end(L, base, rc);
}
