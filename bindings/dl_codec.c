/*
 * dl_codec.c - the Lua module devloop.codec over runtime/common/codec_json.c and
 * runtime/common/codec_msgpack.c: json_encode(v), json_decode(s), msgpack_encode(v)
 * and msgpack_decode(s) return a value or nil, err, code; null is the null
 * sentinel (lightuserdata NULL, like cjson.null); array(t) and object(t) mark
 * a table (a new one when t is absent) so it encodes as an array or object
 * whatever its contents. Misuse, such as decoding a non-string, raises.
 */
#include <lauxlib.h>
#include <lua.h>

#include "common/buf.h"
#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "bindings/dl_bindings.h"
#include "common/internal.h"
#include "lua/lua_error.h"

typedef int (*encode_fn)(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen);
typedef int (*decode_fn)(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

static int encode_with(lua_State *L, encode_fn fn)
{
    luaL_checkany(L, 1);
    dl_buf_t b = DL_BUF_INIT;
    char err[160] = "";
    int rc = fn(L, 1, &b, err, sizeof(err));
    if (rc != 0) {
        dl_buf_free(&b);
        return dl_lua_fail_status(L, rc, err);
    }
    lua_pushlstring(L, b.data, b.len);
    dl_buf_free(&b);
    return 1;
}

static int decode_with(lua_State *L, decode_fn fn)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[160] = "";
    int rc = fn(L, s, len, err, sizeof(err));
    if (rc != 0)
        return dl_lua_fail_status(L, rc, err);
    return 1;
}

static int l_codec_json_encode(lua_State *L)
{
    return encode_with(L, dl_json_encode);
}

static int l_codec_json_decode(lua_State *L)
{
    return decode_with(L, dl_json_decode);
}

static int l_codec_msgpack_encode(lua_State *L)
{
    return encode_with(L, dl_msgpack_encode);
}

static int l_codec_msgpack_decode(lua_State *L)
{
    return decode_with(L, dl_msgpack_decode);
}

static int mark(lua_State *L, const char *key)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        dl_json_init_markers(L);
        lua_getfield(L, LUA_REGISTRYINDEX, key);
    }
    lua_setmetatable(L, 1);
    return 1;
}

static int l_codec_array(lua_State *L)
{
    return mark(L, DL_CODEC_ARRAY_MT);
}

static int l_codec_object(lua_State *L)
{
    return mark(L, DL_CODEC_OBJECT_MT);
}

static const luaL_Reg codec_funcs[] = {
    {"json_encode", l_codec_json_encode},
    {"json_decode", l_codec_json_decode},
    {"msgpack_encode", l_codec_msgpack_encode},
    {"msgpack_decode", l_codec_msgpack_decode},
    {"array", l_codec_array},
    {"object", l_codec_object},
    {NULL, NULL},
};

int luaopen_devloop_codec(lua_State *L)
{
    dl_json_init_markers(L);
    lua_createtable(L, 0, (int)DL_ARRAY_SIZE(codec_funcs));
    for (const luaL_Reg *r = codec_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
