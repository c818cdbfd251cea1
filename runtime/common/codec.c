/*
 * codec.c - what the JSON and MessagePack codecs share: the marker
 * metatables, the classification of a Lua table as an array or an object,
 * and the frame around an encode or a decode (state, markers on the stack,
 * errors, the stack left behind). See codec.h.
 */
#include "common/codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>

#include <lauxlib.h>

#include "common/internal.h"

/* ------------------------------------------------------------------------ */
/* Markers and table classification                                          */
/* ------------------------------------------------------------------------ */

static void init_marker(lua_State *L, const char *key, const char *type)
{
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    if (lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "__jsontype");
    lua_setfield(L, LUA_REGISTRYINDEX, key);
}

void dl_json_init_markers(lua_State *L)
{
    luaL_checkstack(L, 3, "json markers");
    init_marker(L, DL_CODEC_ARRAY_MT, "array");
    init_marker(L, DL_CODEC_OBJECT_MT, "object");
}

void dl_codec_push_markers(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_ARRAY_MT);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_OBJECT_MT);
    if (DL_LIKELY(lua_istable(L, -1) && lua_istable(L, -2)))
        return;
    lua_pop(L, 2);
    dl_json_init_markers(L);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_ARRAY_MT);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_OBJECT_MT);
}

/* A key that could belong to an array: an integer in [1, 2^53]. */
static inline int index_key(lua_State *L, int idx, double *k)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    *k = lua_tonumber(L, idx);
    return *k >= 1.0 && *k <= 9007199254740992.0 && *k == floor(*k);
}

/* The key scan of an unmarked table: an array iff the keys are exactly
 * 1..count. Keys are distinct, so "all index keys and the largest equals the
 * count" suffices; the first other key makes it an object. */
static int scan_keys(lua_State *L, int idx, size_t *n)
{
    size_t count = 0;
    double max = 0, k;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (!index_key(L, -1, &k)) {
            lua_pop(L, 1);
            return DL_CODEC_OBJECT;
        }
        if (k > max)
            max = k;
    }
    *n = count;
    return count > 0 && max == (double)count ? DL_CODEC_ARRAY : DL_CODEC_OBJECT;
}

/* The marker check: DL_CODEC_ARRAY / DL_CODEC_OBJECT, or -1 when unmarked. */
static inline int marked_kind(lua_State *L, int idx, int mt_array, int mt_object)
{
    if (!lua_getmetatable(L, idx))
        return -1;
    int kind = -1;
    if (mt_array && lua_rawequal(L, -1, mt_array))
        kind = DL_CODEC_ARRAY;
    else if (mt_object && lua_rawequal(L, -1, mt_object))
        kind = DL_CODEC_OBJECT;
    lua_pop(L, 1);
    return kind;
}

int dl_codec_classify_stream(lua_State *L, int idx, int mt_array, int mt_object, size_t *n)
{
    int kind = marked_kind(L, idx, mt_array, mt_object);
    if (kind == DL_CODEC_ARRAY) {
        *n = lua_objlen(L, idx);
        return kind;
    }
    if (kind == DL_CODEC_OBJECT)
        return kind;
    /* Unmarked. Peek at the first key: anything but an index key means an
     * object, to be encoded from this very pair, which spares string-keyed
     * tables a second walk. Index keys need the full scan. */
    double k;
    lua_pushnil(L);
    if (!lua_next(L, idx))
        return DL_CODEC_OBJECT; /* empty; lua_next popped the nil */
    if (!index_key(L, -2, &k))
        return DL_CODEC_OBJECT_PAIR;
    lua_pop(L, 2);
    return scan_keys(L, idx, n);
}

/* ------------------------------------------------------------------------ */
/* The frame both codecs share (codec.h)                                     */
/* ------------------------------------------------------------------------ */

int dl_codec_enc_fail(dl_codec_enc_t *e, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dl_err_vformat(e->err, e->errlen, rc, fmt, ap);
    va_end(ap);
    return rc;
}

int dl_codec_enc_bad_key(dl_codec_enc_t *e, int kt)
{
    return dl_codec_enc_fail(e, DL_ECODEC, "table key of type %s", lua_typename(e->L, kt));
}

int dl_codec_enc_begin(dl_codec_enc_t *e, lua_State *L, int *idx, dl_buf_t *out, char *err,
                       size_t errlen)
{
    if (*idx < 0 && *idx > LUA_REGISTRYINDEX)
        *idx = lua_gettop(L) + *idx + 1;
    *e = (dl_codec_enc_t){L, out, 0, 0, err, errlen};
    if (!lua_checkstack(L, 4))
        return dl_codec_enc_fail(e, DL_ENOMEM, "out of Lua stack");
    int base = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_ARRAY_MT);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_OBJECT_MT);
    e->mt_array = lua_istable(L, base + 1) ? base + 1 : 0;
    e->mt_object = lua_istable(L, base + 2) ? base + 2 : 0;
    return base;
}

int dl_codec_enc_end(dl_codec_enc_t *e, int base, int rc)
{
    lua_settop(e->L, base);
    if (rc == 0 && e->out->oom)
        rc = DL_ENOMEM;
    if (rc == DL_ENOMEM)
        dl_codec_enc_fail(e, rc, "out of memory");
    return rc;
}

int dl_codec_dec_fail(dl_codec_dec_t *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dl_err_vformat(d->err, d->errlen, DL_ECODEC, fmt, ap);
    va_end(ap);
    return DL_ECODEC;
}

__attribute__((noinline)) int dl_codec_dec_too_many(dl_codec_dec_t *d)
{
    dl_codec_dec_fail(d, "more than %zu elements", d->max_elements);
    return DL_ETOOBIG;
}

int dl_codec_dec_begin(dl_codec_dec_t *d, lua_State *L, const dl_codec_limits_t *lim, char *err,
                       size_t errlen)
{
    *d = (dl_codec_dec_t){L, 0, 0, DL_CODEC_DECODE_DEPTH, SIZE_MAX, 0, err, errlen};
    if (lim != NULL && lim->max_depth > 0)
        d->max_depth = lim->max_depth;
    if (lim != NULL && lim->max_elements > 0)
        d->elements_left = d->max_elements = lim->max_elements;
    if (!lua_checkstack(L, 8))
        return dl_codec_dec_fail(d, "out of Lua stack");
    int base = lua_gettop(L);
    dl_codec_push_markers(L);
    d->mt_array = base + 1;
    d->mt_object = base + 2;
    return base;
}

int dl_codec_dec_end(lua_State *L, int base, int rc)
{
    if (rc != 0) {
        lua_settop(L, base);
        return rc;
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 0;
}

