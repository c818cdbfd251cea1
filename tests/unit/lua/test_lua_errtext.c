/*
 * test_lua_errtext.c - a raised value as text (lua_errtext.c): strings are
 * themselves, tables show their first fields, a failing __tostring gives a
 * fixed text; and which values are errors that answer on purpose.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "lua/lua_vm_internal.h"
#include "unit.h"

/* the text of the value chunk returns */
static const char *text_of(lua_State *L, const char *chunk)
{
    lua_settop(L, 0);
    EXPECT_EQ(luaL_dostring(L, chunk), 0);
    return dl_lua_errtext(L);
}

DL_TEST(lua_errtext_shows_any_value)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    EXPECT_STR(text_of(L, "return 'boom'"), "boom");
    EXPECT_STR(text_of(L, "return 42"), "42");
    EXPECT_STR(text_of(L, "return nil"), "error object is nil");
    EXPECT_STR(text_of(L, "return true"), "error object is a boolean: true");
    EXPECT_STR(text_of(L, "return {status = 418}"), "error object is a table: {status = 418}");
    EXPECT_STR(text_of(L, "return {[1.5] = 'x'}"), "error object is a table: {[1.5] = \"x\"}");
    EXPECT_STR(text_of(L, "return setmetatable({}, {__tostring = function() return 'mine' end})"),
               "mine");
    EXPECT_STR(text_of(L, "return setmetatable({}, {__tostring = function() error('no') end})"),
               "error object is not a string (and its __tostring failed)");

    /* from another coroutine, which is left as it was */
    lua_settop(L, 0);
    lua_State *co = lua_newthread(L);
    lua_pushliteral(co, "from the task");
    char out[64];
    dl_lua_errtext_of(L, co, out, sizeof(out));
    EXPECT_STR(out, "from the task");
    EXPECT_EQ(lua_gettop(co), 1);
    EXPECT_EQ(lua_gettop(L), 1);
    lua_close(L);
}

DL_TEST(lua_errtext_status_errors)
{
    lua_State *L = luaL_newstate();
    EXPECT_EQ(luaL_dostring(L, "return {status = 404}, {status = '404'}, 'x', {}"), 0);
    EXPECT_EQ(dl_lua_is_status_error(L, 1), 1);
    EXPECT_EQ(dl_lua_is_status_error(L, -4), 1);
    EXPECT_EQ(dl_lua_is_status_error(L, 2), 0);
    EXPECT_EQ(dl_lua_is_status_error(L, 3), 0);
    EXPECT_EQ(dl_lua_is_status_error(L, 4), 0);
    EXPECT_EQ(lua_gettop(L), 4);
    lua_close(L);
}
