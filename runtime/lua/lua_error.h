/*
 * lua_error.h - the one way a binding reports a failed operation to Lua:
 * it returns nil, a message and the error's name ("ETIMEDOUT", dl_err_name),
 * nil where the failure has none: always three values. Misuse raises
 * instead (luaL_argerror).
 */
#ifndef DL_LUA_ERROR_H
#define DL_LUA_ERROR_H

#include <lua.h>
#include <stddef.h>

/**
 * Pushes nil, msg and name (nil when NULL). Returns 3, for
 * `return dl_lua_fail(...)`.
 */
int dl_lua_fail(lua_State *L, const char *msg, const char *name);
/** dl_lua_fail with a message of len bytes (a Redis error reply). */
int dl_lua_fail_len(lua_State *L, const char *msg, size_t len, const char *name);
/** dl_lua_fail with the message formatted by lua_pushfstring's rules. */
int dl_lua_failf(lua_State *L, const char *name, const char *fmt, ...);
/**
 * nil, msg (dl_strerror(status) when msg is NULL or empty), dl_err_name(status):
 * the failure of a DL_E* status. Returns 3.
 */
int dl_lua_fail_status(lua_State *L, int status, const char *msg);

#endif /* DL_LUA_ERROR_H */
