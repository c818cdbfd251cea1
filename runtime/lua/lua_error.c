/*
 * lua_error.c - nil, message, name: a failed operation's results in Lua
 * (lua_error.h).
 */
#include "lua/lua_error.h"

#include <stdarg.h>
#include <string.h>

#include "common/internal.h"

/* the message is on top of the stack: nil under it, the name above */
static int finish(lua_State *L, const char *name)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    /* always three values, the name nil when there is none (luv's fail):
     * callers can forward them without counting */
    if (name == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, name);
    return 3;
}

int dl_lua_fail_len(lua_State *L, const char *msg, size_t len, const char *name)
{
    lua_pushlstring(L, msg, len);
    return finish(L, name);
}

int dl_lua_fail(lua_State *L, const char *msg, const char *name)
{
    return dl_lua_fail_len(L, msg, strlen(msg), name);
}

int dl_lua_failf(lua_State *L, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return finish(L, name);
}

int dl_lua_fail_status(lua_State *L, int status, const char *msg)
{
    return dl_lua_fail(L, msg && msg[0] ? msg : dl_strerror(status), dl_err_name(status));
}
