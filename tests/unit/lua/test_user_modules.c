/*
 * test_user_modules.c - runtime/lua/user_modules.c: what dl_add_lua_module()
 * takes and refuses, and that dl_user_modules_preload() makes each module
 * require-able in a state (the last registration of a name wins). Each test
 * runs in a process of its own, so the process-wide list starts empty.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "common/internal.h"
#include "lua/user_modules.h"
#include "unit.h"

static int open_one(lua_State *L)
{
    lua_pushliteral(L, "one");
    return 1;
}

static int open_two(lua_State *L)
{
    lua_pushliteral(L, "two");
    return 1;
}

DL_TEST(user_modules_preload_what_was_added)
{
    EXPECT_EQ(dl_add_lua_module("t.a", open_one), 0);
    EXPECT_EQ(dl_add_lua_module("t.b", open_one), 0);
    EXPECT_EQ(dl_add_lua_module("t.b", open_two), 0); /* replaces */
    lua_State *L = luaL_newstate();
    EXPECT(L != NULL);
    luaL_openlibs(L);
    dl_user_modules_preload(L);
    EXPECT_EQ(lua_gettop(L), 0);
    EXPECT_EQ(luaL_dostring(L, "return require('t.a') .. ' ' .. require('t.b')"), 0);
    EXPECT_STR(lua_tostring(L, -1), "one two");
    lua_close(L);
}

DL_TEST(user_modules_refuse_bad_names_and_too_many)
{
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    EXPECT_EQ(dl_add_lua_module(NULL, open_one), DL_EINVAL);
    EXPECT_EQ(dl_add_lua_module("", open_one), DL_EINVAL);
    EXPECT_EQ(dl_add_lua_module("t.x", NULL), DL_EINVAL);
    EXPECT_EQ(dl_add_lua_module(longname, open_one), DL_EINVAL);
    char name[16];
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof(name), "t.m%d", i);
        EXPECT_EQ(dl_add_lua_module(name, open_one), 0);
    }
    EXPECT_EQ(dl_add_lua_module("t.one_too_many", open_one), DL_ENOMEM);
    EXPECT_EQ(dl_add_lua_module("t.m0", open_two), 0); /* a known name still replaces */
}
