/*
 * fuzz_lua.h - Lua helpers for the codec harnesses: one state kept for the
 * whole run, and a deep comparison of decoded values by what the encoders see
 * (the classification of codec_json.h, not the metatables themselves, so a
 * MessagePack map {1: x} and the array [x] it encodes to compare equal).
 */
#ifndef DL_FUZZ_LUA_H
#define DL_FUZZ_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>

#include "common/codec_json.h"
#include "fuzz.h"

/* The kind the encoders give the table at idx (DL_CODEC_ARRAY or
 * DL_CODEC_OBJECT) and its element or pair count; the stack is unchanged. */
static inline int dl_fuzz_table_kind(lua_State *L, int idx, size_t *n)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = lua_gettop(L) + idx + 1;
    int top = lua_gettop(L);
    dl_codec_push_markers(L);
    int kind = dl_codec_classify_stream(L, idx, top + 1, top + 2, n);
    lua_settop(L, top);
    if (kind == DL_CODEC_ARRAY)
        return kind;
    *n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        (*n)++;
    }
    return DL_CODEC_OBJECT;
}

/* The state every input of this process uses; the stack is empty between inputs. */
static inline lua_State *dl_fuzz_lua_state(void)
{
    static lua_State *L;
    if (L == NULL) {
        L = luaL_newstate();
        if (L == NULL)
            abort();
        luaL_openlibs(L);
        dl_json_init_markers(L);
    }
    lua_settop(L, 0);
    return L;
}

/*
 * 1 when the values at a and b (absolute indexes) are equal for the codecs:
 * same type; numbers equal (or both NaN); strings byte for byte; the null
 * sentinel on both sides; tables of the same kind (array or object) with
 * equal elements or equal pairs. On a difference, why says where.
 */
static inline int dl_fuzz_lua_equal(lua_State *L, int a, int b, char *why, size_t whylen, int depth)
{
    if (depth > 600) {
        snprintf(why, whylen, "deeper than 600");
        return 0;
    }
    int ta = lua_type(L, a), tb = lua_type(L, b);
    if (ta != tb) {
        snprintf(why, whylen, "type %s vs %s", lua_typename(L, ta), lua_typename(L, tb));
        return 0;
    }
    switch (ta) {
    case LUA_TNIL:
        return 1;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, a) != lua_toboolean(L, b)) {
            snprintf(why, whylen, "boolean differs");
            return 0;
        }
        return 1;
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        if (x == y || (isnan(x) && isnan(y)))
            return 1;
        snprintf(why, whylen, "number %.17g vs %.17g", x, y);
        return 0;
    }
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
        if (la == lb && memcmp(sa, sb, la) == 0)
            return 1;
        snprintf(why, whylen, "string of %zu bytes vs %zu bytes", la, lb);
        return 0;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, a) == lua_touserdata(L, b))
            return 1;
        snprintf(why, whylen, "light userdata differs");
        return 0;
    case LUA_TTABLE:
        break;
    default:
        snprintf(why, whylen, "unexpected type %s", lua_typename(L, ta));
        return 0;
    }
    if (!lua_checkstack(L, 8))
        abort();
    size_t na, nb;
    int ka = dl_fuzz_table_kind(L, a, &na), kb = dl_fuzz_table_kind(L, b, &nb);
    if (ka != kb || na != nb) {
        snprintf(why, whylen, "table kind %d/%zu vs %d/%zu", ka, na, kb, nb);
        return 0;
    }
    if (ka == DL_CODEC_ARRAY) {
        for (size_t i = 1; i <= na; i++) {
            lua_rawgeti(L, a, (int)i);
            lua_rawgeti(L, b, (int)i);
            int top = lua_gettop(L);
            int eq = dl_fuzz_lua_equal(L, top - 1, top, why, whylen, depth + 1);
            lua_pop(L, 2);
            if (!eq)
                return 0;
        }
        return 1;
    }
    /* objects: every pair of a is in b, and both have as many pairs */
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        int top = lua_gettop(L); /* key at top - 1, value at top */
        lua_pushvalue(L, top - 1);
        lua_rawget(L, b);
        if (lua_isnil(L, -1)) {
            if (lua_type(L, top - 1) == LUA_TNUMBER)
                snprintf(why, whylen, "key %.17g missing", lua_tonumber(L, top - 1));
            else
                snprintf(why, whylen, "key \"%.100s\" missing", lua_tostring(L, top - 1));
            lua_settop(L, top - 2);
            return 0;
        }
        int eq = dl_fuzz_lua_equal(L, top, top + 1, why, whylen, depth + 1);
        lua_settop(L, top - 1);
        if (!eq) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return 1;
}

/* After a decode that returned rc: a refusal must leave the stack as it was
 * and say why (returns 0: nothing to check further); a success pushed one
 * value (returns 1). */
static inline int dl_fuzz_decoded(lua_State *L, int rc, const char *err)
{
    if (rc != 0) {
        DL_FUZZ_CHECK(lua_gettop(L) == 0, "a failed decode left %d values", lua_gettop(L));
        DL_FUZZ_CHECK(rc == DL_ECODEC || rc == DL_ENOMEM, "decode returned %d", rc);
        DL_FUZZ_CHECK(err[0] != '\0', "a failed decode gave no message");
        return 0;
    }
    DL_FUZZ_CHECK(lua_gettop(L) == 1, "decode pushed %d values", lua_gettop(L));
    return 1;
}

#endif
