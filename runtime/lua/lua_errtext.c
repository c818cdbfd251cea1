/*
 * lua_errtext.c - a raised value as one readable line: for the log, a job's
 * error and core._error_text. Lua's own handlers only say "(error object is
 * not a string)" for a table; here a table shows its first fields.
 */
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lua/lua_state.h"
#include "lua/lua_vm_internal.h"

/* A line being written: appends stop quietly at the end of the array. */
typedef struct {
    char s[400];
    size_t len;
} line_t;

static void put(line_t *o, const char *fmt, ...)
{
    if (o->len >= sizeof(o->s) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->s + o->len, sizeof(o->s) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = DL_MIN(sizeof(o->s) - 1, o->len + (size_t)n);
}

/* Appends the value at idx, short: strings quoted and cut, tables "{...}". */
static void put_short(lua_State *L, int idx, line_t *o)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t sl;
        const char *s = lua_tolstring(L, idx, &sl);
        put(o, "\"%.*s%s", (int)DL_MIN(sl, 60), s, sl > 60 ? "...\"" : "\"");
        break;
    }
    case LUA_TNUMBER:
        put(o, "%.14g", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        put(o, "%s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TTABLE:
        put(o, "{...}");
        break;
    default:
        put(o, "(a %s)", luaL_typename(L, idx));
    }
}

/*
 * core._error_text(v): a raised value as one readable line for a log or a
 * job's error. A string is itself; a value with __tostring says what that
 * gives; a table shows its first fields: error object is a table: {status =
 * 418, message = "x"}. (Lua's own handlers only say "(error object is not a
 * string)".) Raises only if a __tostring does.
 */
int dl__error_text(lua_State *L)
{
    lua_settop(L, 1);
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        lua_tostring(L, 1);
        return 1;
    }
    if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
        return 1;
    lua_settop(L, 1);
    line_t o = {.len = 0};
    if (t == LUA_TNIL) {
        put(&o, "error object is nil");
    } else if (t != LUA_TTABLE) {
        put(&o, "error object is a %s", luaL_typename(L, 1));
        if (t == LUA_TBOOLEAN) {
            put(&o, ": ");
            put_short(L, 1, &o);
        }
    } else {
        put(&o, "error object is a table: {");
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            if (n == 8) {
                lua_pop(L, 2);
                put(&o, ", ...");
                break;
            }
            if (n++ > 0)
                put(&o, ", ");
            if (lua_type(L, -2) == LUA_TSTRING) {
                put(&o, "%s", lua_tostring(L, -2));
            } else {
                put(&o, "[");
                put_short(L, -2, &o);
                put(&o, "]");
            }
            put(&o, " = ");
            put_short(L, -1, &o);
            lua_pop(L, 1);
        }
        put(&o, "}");
    }
    lua_pushlstring(L, o.s, o.len);
    return 1;
}

const char *dl_lua_errtext(lua_State *L)
{
    if (lua_type(L, -1) == LUA_TSTRING)
        return lua_tostring(L, -1);
    lua_pushcfunction(L, dl__error_text);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "error object is not a string (and its __tostring failed)");
    }
    return lua_tostring(L, -1);
}

void dl_lua_errtext_of(lua_State *L, lua_State *co, char *out, size_t len)
{
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
    snprintf(out, len, "%s", dl_lua_errtext(L));
    lua_pop(L, 1);
}

/* Such an error goes to the request's answer (lua_dispatch.c), or to
 * api.parallel's caller, as it is, with no traceback. */
int dl_lua_is_status_error(lua_State *L, int idx)
{
    if (!lua_istable(L, idx))
        return 0;
    lua_pushliteral(L, "status");
    lua_rawget(L, idx < 0 ? idx - 1 : idx);
    int yes = lua_type(L, -1) == LUA_TNUMBER;
    lua_pop(L, 1);
    return yes;
}
