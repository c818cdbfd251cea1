/*
 * test_codec.c - unit tests of runtime/common/codec.c, the frame both codecs
 * share: the stack an encode or a decode leaves behind, the limits a decode
 * starts with, the per-table and per-key steps of the encoders, and the
 * messages of its failures.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "common/codec.h"
#include "common/internal.h"
#include "unit.h"

DL_TEST(codec_enc_begin_end)
{
    lua_State *L = luaL_newstate();
    dl_json_init_markers(L);
    lua_pushstring(L, "value");
    int top = lua_gettop(L);
    dl_buf_t b = DL_BUF_INIT;
    char err[64] = "";
    dl_codec_enc_t e;
    int idx = -1;
    int base = dl_codec_enc_begin(&e, L, &idx, &b, err, sizeof(err));
    EXPECT_EQ(base, top);
    EXPECT_EQ(idx, top); /* made absolute */
    EXPECT_EQ(e.mt_array, top + 1);
    EXPECT_EQ(e.mt_object, top + 2);
    EXPECT(lua_istable(L, e.mt_array));
    EXPECT_EQ(dl_codec_enc_end(&e, base, 0), 0);
    EXPECT_EQ(lua_gettop(L), top);
    /* an error passes through, the stack is still restored */
    base = dl_codec_enc_begin(&e, L, &idx, &b, err, sizeof(err));
    EXPECT_EQ(dl_codec_enc_end(&e, base, DL_ECODEC), DL_ECODEC);
    EXPECT_EQ(lua_gettop(L), top);
    /* a buffer out of memory turns success into DL_ENOMEM with a message */
    base = dl_codec_enc_begin(&e, L, &idx, &b, err, sizeof(err));
    b.oom = 1;
    EXPECT_EQ(dl_codec_enc_end(&e, base, 0), DL_ENOMEM);
    EXPECT_STR(err, "out of memory");
    EXPECT_EQ(lua_gettop(L), top);
    b.oom = 0;
    dl_buf_free(&b);
    lua_close(L);
}

DL_TEST(codec_enc_markers_absent)
{
    lua_State *L = luaL_newstate();
    lua_newtable(L);
    dl_buf_t b = DL_BUF_INIT;
    dl_codec_enc_t e;
    int idx = 1;
    int base = dl_codec_enc_begin(&e, L, &idx, &b, NULL, 0);
    EXPECT_EQ(e.mt_array, 0);
    EXPECT_EQ(e.mt_object, 0);
    EXPECT_EQ(dl_codec_enc_end(&e, base, 0), 0);
    EXPECT_EQ(lua_gettop(L), 1);
    dl_buf_free(&b);
    lua_close(L);
}

DL_TEST(codec_enc_open_table_and_key)
{
    lua_State *L = luaL_newstate();
    dl_json_init_markers(L);
    dl_buf_t b = DL_BUF_INIT;
    char err[64] = "";
    luaL_dostring(L, "return {10, 20, 30}");
    dl_codec_enc_t e;
    int idx = 1;
    int base = dl_codec_enc_begin(&e, L, &idx, &b, err, sizeof(err));
    size_t n = 0;
    EXPECT_EQ(dl_codec_enc_open_table(&e, idx, 1, &n), DL_CODEC_ARRAY);
    EXPECT_EQ(n, 3);
    EXPECT_EQ(dl_codec_enc_open_table(&e, idx, DL_CODEC_ENCODE_DEPTH + 1, &n), DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 128");

    const char *s = NULL;
    size_t len = 0;
    double d = 0;
    lua_pushstring(L, "key");
    EXPECT_EQ(dl_codec_enc_key(&e, lua_gettop(L), &s, &len, &d), LUA_TSTRING);
    EXPECT_MEM(s, len, "key", 3);
    lua_pushnumber(L, 2.5);
    EXPECT_EQ(dl_codec_enc_key(&e, lua_gettop(L), &s, &len, &d), LUA_TNUMBER);
    EXPECT(d == 2.5);
    EXPECT_EQ(lua_type(L, -1), LUA_TNUMBER); /* not converted in place */
    lua_pushboolean(L, 1);
    EXPECT_EQ(dl_codec_enc_key(&e, lua_gettop(L), &s, &len, &d), DL_ECODEC);
    EXPECT_STR(err, "table key of type boolean");
    EXPECT_EQ(dl_codec_enc_end(&e, base, 0), 0);
    EXPECT_EQ(lua_gettop(L), 1);
    dl_buf_free(&b);
    lua_close(L);
}

DL_TEST(codec_dec_begin_limits)
{
    lua_State *L = luaL_newstate();
    char err[64] = "";
    dl_codec_dec_t d;
    int base = dl_codec_dec_begin(&d, L, NULL, err, sizeof(err));
    EXPECT_EQ(base, 0);
    EXPECT_EQ(d.max_depth, DL_CODEC_DECODE_DEPTH);
    EXPECT(d.elements_left == SIZE_MAX);
    EXPECT(lua_istable(L, d.mt_array) && lua_istable(L, d.mt_object));
    EXPECT_EQ(dl_codec_dec_end(L, base, DL_ECODEC), DL_ECODEC);
    EXPECT_EQ(lua_gettop(L), 0);

    dl_codec_limits_t lim = {5, 7};
    base = dl_codec_dec_begin(&d, L, &lim, err, sizeof(err));
    EXPECT_EQ(d.max_depth, 7);
    EXPECT_EQ(d.elements_left, 5);
    EXPECT_EQ(dl_codec_dec_too_many(&d), DL_ETOOBIG);
    EXPECT_STR(err, "more than 5 elements");
    /* success leaves the decoded value alone above base */
    lua_pushstring(L, "decoded");
    EXPECT_EQ(dl_codec_dec_end(L, base, 0), 0);
    EXPECT_EQ(lua_gettop(L), 1);
    EXPECT_STR(lua_tostring(L, 1), "decoded");
    lua_close(L);
}
