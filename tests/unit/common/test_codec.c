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

/* An encoder begun on the value `code` returns (made slot 1), with or
 * without the marker metatables in the registry. */
typedef struct {
    lua_State *L;
    dl_buf_t b;
    char err[64];
    dl_codec_enc_t e;
    int idx;
    int base;
} enc_fixture_t;

static void enc_fixture_begin(enc_fixture_t *f, int markers, const char *code)
{
    memset(f, 0, sizeof(*f));
    f->L = luaL_newstate();
    if (markers)
        dl_json_init_markers(f->L);
    luaL_dostring(f->L, code);
    f->idx = -1;
    f->base = dl_codec_enc_begin(&f->e, f->L, &f->idx, &f->b, f->err, sizeof(f->err));
}

static void enc_fixture_free(enc_fixture_t *f)
{
    EXPECT_EQ(lua_gettop(f->L), 1);
    f->b.oom = 0;
    dl_buf_free(&f->b);
    lua_close(f->L);
}

DL_TEST(codec_enc_begin_end)
{
    enc_fixture_t f;
    enc_fixture_begin(&f, 1, "return 'value'");
    EXPECT_EQ(f.base, 1);
    EXPECT_EQ(f.idx, 1); /* made absolute */
    EXPECT_EQ(f.e.mt_array, 2);
    EXPECT_EQ(f.e.mt_object, 3);
    EXPECT(lua_istable(f.L, f.e.mt_array));
    EXPECT_EQ(dl_codec_enc_end(&f.e, f.base, 0), 0);
    EXPECT_EQ(lua_gettop(f.L), 1);
    /* an error passes through, the stack is still restored */
    f.base = dl_codec_enc_begin(&f.e, f.L, &f.idx, &f.b, f.err, sizeof(f.err));
    EXPECT_EQ(dl_codec_enc_end(&f.e, f.base, DL_ECODEC), DL_ECODEC);
    EXPECT_EQ(lua_gettop(f.L), 1);
    /* a buffer out of memory turns success into DL_ENOMEM with a message */
    f.base = dl_codec_enc_begin(&f.e, f.L, &f.idx, &f.b, f.err, sizeof(f.err));
    f.b.oom = 1;
    EXPECT_EQ(dl_codec_enc_end(&f.e, f.base, 0), DL_ENOMEM);
    EXPECT_STR(f.err, "out of memory");
    enc_fixture_free(&f);
}

DL_TEST(codec_enc_markers_absent)
{
    enc_fixture_t f;
    enc_fixture_begin(&f, 0, "return {}");
    EXPECT_EQ(f.e.mt_array, 0);
    EXPECT_EQ(f.e.mt_object, 0);
    EXPECT_EQ(dl_codec_enc_end(&f.e, f.base, 0), 0);
    enc_fixture_free(&f);
}

DL_TEST(codec_enc_open_table_and_key)
{
    enc_fixture_t f;
    enc_fixture_begin(&f, 1, "return {10, 20, 30}");
    size_t n = 0;
    EXPECT_EQ(dl_codec_enc_open_table(&f.e, f.idx, 1, &n), DL_CODEC_ARRAY);
    EXPECT_EQ(n, 3);
    EXPECT_EQ(dl_codec_enc_open_table(&f.e, f.idx, DL_CODEC_ENCODE_DEPTH + 1, &n), DL_ECODEC);
    EXPECT_STR(f.err, "nesting deeper than 128");

    EXPECT_EQ(dl_codec_enc_bad_key(&f.e, LUA_TBOOLEAN), DL_ECODEC);
    EXPECT_STR(f.err, "table key of type boolean");
    EXPECT_EQ(dl_codec_enc_end(&f.e, f.base, 0), 0);
    enc_fixture_free(&f);
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
