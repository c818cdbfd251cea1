/*
 * test_lua_error.c - dl_lua_fail and its variants: nil, message, name, and
 * the count returned is the count pushed.
 */
#include <lauxlib.h>
#include <lua.h>

#include "common/internal.h"
#include "lua/lua_error.h"
#include "unit.h"

DL_TEST(lua_fail_pushes_nil_message_and_name)
{
    lua_State *L = luaL_newstate();
    /* three values even without a name: callers forward them as they are */
    EXPECT_EQ(dl_lua_fail(L, "no such thing", NULL), 3);
    EXPECT_EQ(lua_gettop(L), 3);
    EXPECT(lua_isnil(L, 1));
    EXPECT_STR(lua_tostring(L, 2), "no such thing");
    EXPECT(lua_isnil(L, 3));
    lua_settop(L, 0);

    EXPECT_EQ(dl_lua_fail_len(L, "ERR wrong\0type", 14, "EREDIS"), 3);
    EXPECT(lua_isnil(L, 1));
    size_t n;
    const char *m = lua_tolstring(L, 2, &n);
    EXPECT_MEM(m, n, "ERR wrong\0type", 14);
    EXPECT_STR(lua_tostring(L, 3), "EREDIS");
    lua_settop(L, 0);

    EXPECT_EQ(dl_lua_failf(L, "EINVAL", "metric %s: %d", "x", 7), 3);
    EXPECT_STR(lua_tostring(L, 2), "metric x: 7");
    EXPECT_STR(lua_tostring(L, 3), "EINVAL");
    lua_settop(L, 0);

    /* an empty message falls back to the status's text */
    EXPECT_EQ(dl_lua_fail_status(L, DL_ETIMEDOUT, ""), 3);
    EXPECT(lua_isnil(L, 1));
    EXPECT_STR(lua_tostring(L, 2), dl_strerror(DL_ETIMEDOUT));
    EXPECT_STR(lua_tostring(L, 3), dl_err_name(DL_ETIMEDOUT));
    lua_settop(L, 0);
    EXPECT_EQ(dl_lua_fail_status(L, DL_ENOMEM, "cache: full"), 3);
    EXPECT_STR(lua_tostring(L, 2), "cache: full");
    EXPECT_STR(lua_tostring(L, 3), "ENOMEM");
    lua_close(L);
}
