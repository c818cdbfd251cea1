/*
 * test_codec_msgpack.c - unit tests of runtime/common/codec_msgpack.c and the
 * MessagePack half of bindings/dl_codec.c: exact encodings of ints, floats,
 * strings and containers, every decodable type, binary strings, the error
 * messages, nesting limits, and a mutation loop over malformed input.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/dl_bindings.h"
#include "common/buf.h"
#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "common/internal.h"
#include "unit.h"

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaopen_devloop_codec(L);
    lua_setglobal(L, "codec");
    return L;
}

/* Evaluates expr and packs it into b; returns the encoder's code, or -9999
 * when the Lua snippet fails. */
static int pack_expr(lua_State *L, const char *expr, dl_buf_t *b, char *err, size_t errlen)
{
    char code[4096];
    snprintf(code, sizeof(code), "return %s", expr);
    if (luaL_dostring(L, code) != 0) {
        fprintf(stderr, "# lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -9999;
    }
    dl_buf_reset(b);
    err[0] = '\0';
    int top = lua_gettop(L);
    int rc = dl_msgpack_encode(L, -1, b, err, errlen);
    if (lua_gettop(L) != top)
        rc = -9998;
    lua_pop(L, 1);
    return rc;
}

/* Unpacks the bytes and renders the value as JSON into b (NUL-terminated). */
static int unpack_to_json(lua_State *L, const char *p, size_t n, dl_buf_t *b, char *err,
                          size_t errlen)
{
    int top = lua_gettop(L);
    err[0] = '\0';
    int rc = dl_msgpack_decode(L, p, n, err, errlen);
    if (rc != 0)
        return lua_gettop(L) == top ? rc : -9998;
    if (lua_gettop(L) != top + 1)
        return -9998;
    dl_buf_reset(b);
    rc = dl_json_encode(L, -1, b, err, errlen);
    lua_pop(L, 1);
    dl_buf_append_char(b, '\0');
    b->len--;
    return rc;
}

#define EXPECT_PACKS(L, expr, bytes)                                                           \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = pack_expr((L), (expr), &b_, err_, sizeof(err_));                             \
        if (rc_ != 0)                                                                          \
            DL_FAIL_AT("pack %s: rc %d (%s)", (expr), rc_, err_);                              \
        else                                                                                   \
            EXPECT_HEX(b_.data, b_.len, (bytes), sizeof(bytes) - 1);                           \
        dl_buf_free(&b_);                                                                      \
    } while (0)

#define EXPECT_PACK_ERROR(L, expr, msg)                                                        \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = pack_expr((L), (expr), &b_, err_, sizeof(err_));                             \
        EXPECT_EQ(rc_, DL_ECODEC);                                                             \
        if (strstr(err_, (msg)) == NULL)                                                       \
            DL_FAIL_AT("pack %s: error \"%s\" lacks \"%s\"", (expr), err_, (msg));             \
        dl_buf_free(&b_);                                                                      \
    } while (0)

/* bytes is a string literal; its JSON rendering must be want. */
#define EXPECT_UNPACKS(L, bytes, want)                                                         \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = unpack_to_json((L), (bytes), sizeof(bytes) - 1, &b_, err_, sizeof(err_));    \
        if (rc_ != 0)                                                                          \
            DL_FAIL_AT("unpack %s: rc %d (%s)", #bytes, rc_, err_);                            \
        else                                                                                   \
            EXPECT_STR(b_.data, (want));                                                       \
        dl_buf_free(&b_);                                                                      \
    } while (0)

#define EXPECT_UNPACK_ERROR_N(L, p, n, msg)                                                    \
    do {                                                                                       \
        char err_[256] = "";                                                                   \
        int top_ = lua_gettop(L);                                                              \
        int rc_ = dl_msgpack_decode((L), (p), (n), err_, sizeof(err_));                        \
        EXPECT_EQ(rc_, DL_ECODEC);                                                             \
        EXPECT_EQ(lua_gettop(L), top_);                                                        \
        if (strstr(err_, (msg)) == NULL)                                                       \
            DL_FAIL_AT("unpack %s: error \"%s\" lacks \"%s\"", #p, err_, (msg));               \
    } while (0)

#define EXPECT_UNPACK_ERROR(L, bytes, msg) EXPECT_UNPACK_ERROR_N(L, bytes, sizeof(bytes) - 1, msg)

#define EXPECT_LUA(L, chunk)                                                                   \
    do {                                                                                       \
        if (luaL_dostring((L), (chunk)) != 0) {                                                \
            DL_FAIL_AT("lua error: %s in: %s", lua_tostring((L), -1), (chunk));                \
            lua_pop((L), 1);                                                                   \
        } else {                                                                               \
            if (!lua_toboolean((L), -1))                                                       \
                DL_FAIL_AT("lua chunk returned false: %s", (chunk));                           \
            lua_settop((L), 0);                                                                \
        }                                                                                      \
    } while (0)

static void hex(const unsigned char *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%02x ", p[i]);
    out[o] = '\0';
}

#define EXPECT_HEX(a, alen, b, blen)                                                           \
    do {                                                                                       \
        size_t al_ = (alen), bl_ = (blen);                                                     \
        if (al_ != bl_ || memcmp((a), (b), al_) != 0) {                                        \
            char ha_[512], hb_[512];                                                           \
            hex((const unsigned char *)(a), al_, ha_, sizeof(ha_));                            \
            hex((const unsigned char *)(b), bl_, hb_, sizeof(hb_));                            \
            DL_FAIL_AT("bytes differ: %s(%zu) vs %s(%zu)", ha_, al_, hb_, bl_);                \
        }                                                                                      \
    } while (0)

/* ---- encoding */

DL_TEST(msgpack_encode_ints)
{
    lua_State *L = new_state();
    EXPECT_PACKS(L, "0", "\x00");
    EXPECT_PACKS(L, "127", "\x7f");
    EXPECT_PACKS(L, "128", "\xcc\x80");
    EXPECT_PACKS(L, "255", "\xcc\xff");
    EXPECT_PACKS(L, "256", "\xcd\x01\x00");
    EXPECT_PACKS(L, "65535", "\xcd\xff\xff");
    EXPECT_PACKS(L, "65536", "\xce\x00\x01\x00\x00");
    EXPECT_PACKS(L, "2^31", "\xce\x80\x00\x00\x00");
    EXPECT_PACKS(L, "2^32 - 1", "\xce\xff\xff\xff\xff");
    EXPECT_PACKS(L, "2^32 + 1", "\xcf\x00\x00\x00\x01\x00\x00\x00\x01");
    EXPECT_PACKS(L, "2^53", "\xcf\x00\x20\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "2^62", "\xcf\x40\x00\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "-1", "\xff");
    EXPECT_PACKS(L, "-32", "\xe0");
    EXPECT_PACKS(L, "-33", "\xd0\xdf");
    EXPECT_PACKS(L, "-128", "\xd0\x80");
    EXPECT_PACKS(L, "-129", "\xd1\xff\x7f");
    EXPECT_PACKS(L, "-2^31", "\xd2\x80\x00\x00\x00");
    EXPECT_PACKS(L, "-2^31 - 1", "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff");
    EXPECT_PACKS(L, "-2^53", "\xd3\xff\xe0\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "-2^63", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "-0.0", "\x00");
    /* out of int64 range: float64 */
    EXPECT_PACKS(L, "2^63", "\xcb\x43\xe0\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "-2^64", "\xcb\xc3\xf0\x00\x00\x00\x00\x00\x00");
    lua_close(L);
}

DL_TEST(msgpack_encode_floats)
{
    lua_State *L = new_state();
    EXPECT_PACKS(L, "0.1", "\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a");
    EXPECT_PACKS(L, "1e300", "\xcb\x7e\x37\xe4\x3c\x88\x00\x75\x9c");
    EXPECT_PACKS(L, "-1.5", "\xcb\xbf\xf8\x00\x00\x00\x00\x00\x00");
    EXPECT_PACKS(L, "math.huge", "\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00");
    EXPECT_LUA(L, "local x = codec.msgpack_decode(codec.msgpack_encode(0/0)) return x ~= x");
    EXPECT_LUA(L, "return codec.msgpack_decode(codec.msgpack_encode(0.1)) == 0.1 "
                  "and codec.msgpack_decode(codec.msgpack_encode(1e300)) == 1e300 "
                  "and codec.msgpack_decode(codec.msgpack_encode(-math.huge)) == -math.huge");
    lua_close(L);
}

DL_TEST(msgpack_encode_basic)
{
    lua_State *L = new_state();
    EXPECT_PACKS(L, "nil", "\xc0");
    EXPECT_PACKS(L, "codec.null", "\xc0");
    EXPECT_PACKS(L, "true", "\xc3");
    EXPECT_PACKS(L, "false", "\xc2");
    EXPECT_PACKS(L, "''", "\xa0");
    EXPECT_PACKS(L, "'abc'", "\xa3" "abc");
    EXPECT_PACKS(L, "string.rep('x', 31)", "\xbf" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    EXPECT_PACKS(L, "string.rep('x', 32)", "\xd9\x20" "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    EXPECT_PACKS(L, "{}", "\x80");
    EXPECT_PACKS(L, "codec.array()", "\x90");
    EXPECT_PACKS(L, "codec.object()", "\x80");
    EXPECT_PACKS(L, "{1, 2}", "\x92\x01\x02");
    EXPECT_PACKS(L, "{a = 1}", "\x81\xa1" "a" "\x01");
    EXPECT_PACKS(L, "{[2] = true}", "\x81\x02\xc3");
    EXPECT_PACKS(L, "{[1.5] = true}", "\x81\xa3" "1.5" "\xc3");
    /* 2^64 is what UINT64_MAX reads back as: it packs as that uint64 */
    EXPECT_PACKS(L, "{[2^64] = true}", "\x81\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xc3");
    EXPECT_PACKS(L, "{[2^65] = true}", "\x81\xb6" "3.6893488147419103e+19" "\xc3");
    EXPECT_PACKS(L, "{[-2^63] = true}", "\x81\xd3\x80\x00\x00\x00\x00\x00\x00\x00\xc3");
    EXPECT_PACKS(L, "{{}, codec.array(), {codec.null}}", "\x93\x80\x90\x91\xc0");
    EXPECT_PACKS(L, "codec.object({'v'})", "\x81\x01\xa1v");
    EXPECT_LUA(L, "local s = codec.msgpack_encode(string.rep('y', 300)) "
                  "return s:sub(1, 3) == '\\218\\1\\44' and #s == 303");
    EXPECT_LUA(L, "local s = codec.msgpack_encode(string.rep('y', 70000)) "
                  "return s:sub(1, 5) == '\\219\\0\\1\\17\\112' and #s == 70005");
    lua_close(L);
}

/* Map headers are written as fixmap and widened once the pair count is
 * known: check the widths and that the pairs moved intact. */
DL_TEST(msgpack_encode_map_headers)
{
    lua_State *L = new_state();
    EXPECT_LUA(L, "local t = {} for i = 1, 15 do t['k' .. i] = i end "
                  "local p = codec.msgpack_encode(t) "
                  "local back = codec.msgpack_decode(p) "
                  "for i = 1, 15 do if back['k' .. i] ~= i then return false end end "
                  "return p:byte(1) == 0x8f");
    EXPECT_LUA(L, "local t = {} for i = 1, 16 do t['k' .. i] = {i, {x = i}} end "
                  "local p = codec.msgpack_encode({outer = t, after = 'z'}) "
                  "local back = codec.msgpack_decode(p) "
                  "for i = 1, 16 do local v = back.outer['k' .. i] "
                  "  if v[1] ~= i or v[2].x ~= i then return false end end "
                  "local s = p:find('\\222\\0\\16', 1, true) "
                  "return back.after == 'z' and s ~= nil");
    EXPECT_LUA(L, "local t = {} for i = 1, 70000 do t['k' .. i] = i end "
                  "local p = codec.msgpack_encode(t) "
                  "local back = codec.msgpack_decode(p) "
                  "for i = 1, 70000 do if back['k' .. i] ~= i then return false end end "
                  "return p:sub(1, 5) == '\\223\\0\\1\\17\\112'");
    /* nested wide maps: each level widens after its children did */
    EXPECT_LUA(L, "local function wide(d) local t = {} "
                  "  for i = 1, 20 do t['f' .. i] = (d > 0 and i == 7) and wide(d - 1) or i end "
                  "  return t end "
                  "local doc = wide(5) "
                  "local back = codec.msgpack_decode(codec.msgpack_encode(doc)) "
                  "local a, b = doc, back "
                  "for d = 5, 0, -1 do for i = 1, 20 do if i ~= 7 or d == 0 then "
                  "  if a['f' .. i] ~= b['f' .. i] then return false end end end "
                  "  if d > 0 then a, b = a.f7, b.f7 end end "
                  "return true");
    /* sparse integer keys: a map with int keys */
    EXPECT_LUA(L, "local p = codec.msgpack_encode({[1] = 'a', [3] = 'c', [5] = 'e', [7] = 'g'}) "
                  "local t = codec.msgpack_decode(p) "
                  "return p:byte(1) == 0x84 and #p == 13 and t[1] == 'a' and t[7] == 'g'");
    lua_close(L);
}

DL_TEST(msgpack_encode_errors)
{
    lua_State *L = new_state();
    EXPECT_PACK_ERROR(L, "function() end", "cannot encode function");
    EXPECT_PACK_ERROR(L, "{a = {print}}", "cannot encode function");
    EXPECT_PACK_ERROR(L, "io.stdout", "cannot encode userdata");
    EXPECT_PACK_ERROR(L, "{[true] = 1}", "table key of type boolean");
    EXPECT_PACK_ERROR(L, "{[math.huge] = 1}", "NaN or Inf");
    EXPECT_PACK_ERROR(L, "(function() local t = {} t.t = t return t end)()",
                      "nesting deeper than 128");
    EXPECT_LUA(L, "local v, err, code = codec.msgpack_encode({print}) "
                  "return v == nil and err == 'cannot encode function' and code == 'ECODEC'");
    lua_close(L);
}

/* ---- decoding */

DL_TEST(msgpack_roundtrip_nested)
{
    lua_State *L = new_state();
    EXPECT_LUA(L, "local doc = {id = 'feat-1', n = 1.25, tags = codec.array(), meta = {}, "
                  "  list = {1, {2, {3, {x = codec.null}}}}, ok = true, no = false} "
                  "local back = codec.msgpack_decode(codec.msgpack_encode(doc)) "
                  "return back.id == 'feat-1' and back.n == 1.25 and back.ok == true "
                  "  and back.no == false and back.list[2][2][2].x == codec.null "
                  "  and codec.json_encode(back.tags) == '[]' "
                  "  and codec.json_encode(back.meta) == '{}' "
                  "  and codec.json_encode(back.list) == '[1,[2,[3,{\"x\":null}]]]'");
    EXPECT_LUA(L, "for _, x in ipairs({2^53, -2^53, 2^31, 2^32 + 1, -1, 0, 2^63 - 2^10, -2^63, "
                  "  2^64, 0.1, 1e300, -1e-300, 255, -129}) do "
                  "  if codec.msgpack_decode(codec.msgpack_encode(x)) ~= x then return false end "
                  "end return true");
    /* JSON and msgpack agree on a whole document */
    EXPECT_LUA(L, "local j = '[{\"id\":\"a\",\"v\":[1,2.5,null,{}],\"e\":[]},{\"k\":{\"z\":-7}}]' "
                  "local function eq(a, b) "
                  "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end "
                  "  if getmetatable(a) ~= getmetatable(b) then return false end "
                  "  for k, v in pairs(a) do if not eq(v, b[k]) then return false end end "
                  "  for k in pairs(b) do if a[k] == nil then return false end end "
                  "  return true end "
                  "local t = codec.json_decode(j) "
                  "return eq(codec.msgpack_decode(codec.msgpack_encode(t)), t)");
    lua_close(L);
}

DL_TEST(msgpack_binary_strings)
{
    lua_State *L = new_state();
    EXPECT_LUA(L, "local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end "
                  "local s = table.concat(t) "
                  "local p = codec.msgpack_encode(s) "
                  "return p:sub(1, 3) == '\\218\\1\\0' and codec.msgpack_decode(p) == s");
    /* bin8, bin16, bin32, str32, str16 */
    EXPECT_LUA(L, "return codec.msgpack_decode('\\196\\3a\\0b') == 'a\\0b'");
    EXPECT_LUA(L, "return codec.msgpack_decode('\\197\\0\\2\\255\\254') == '\\255\\254'");
    EXPECT_LUA(L, "return codec.msgpack_decode('\\198\\0\\0\\0\\1\\128') == '\\128'");
    EXPECT_LUA(L, "return codec.msgpack_decode('\\219\\0\\0\\0\\2hi') == 'hi'");
    EXPECT_LUA(L, "return codec.msgpack_decode('\\218\\0\\0') == ''");
    EXPECT_LUA(L, "local k = codec.msgpack_decode('\\129\\163k\\0\\1\\1') "
                  "return k['k\\0\\1'] == 1");
    /* MessagePack strings are bytes and stay so on the way out; the same
     * bytes in JSON come out as U+FFFD, one per ill-formed subpart */
    EXPECT_PACKS(L, "'/\\255\\195'", "\xa3/\xff\xc3");
    EXPECT_UNPACKS(L, "\x92\xa3/\xff\xc3\xc4\x02\xed\xa0",
                   "[\"/\xef\xbf\xbd\xef\xbf\xbd\",\"\xef\xbf\xbd\xef\xbf\xbd\"]");
    lua_close(L);
}

DL_TEST(msgpack_decode_all_types)
{
    lua_State *L = new_state();
    EXPECT_UNPACKS(L, "\x00", "0");
    EXPECT_UNPACKS(L, "\x7f", "127");
    EXPECT_UNPACKS(L, "\xff", "-1");
    EXPECT_UNPACKS(L, "\xe0", "-32");
    EXPECT_UNPACKS(L, "\xc0", "null");
    EXPECT_UNPACKS(L, "\xc2", "false");
    EXPECT_UNPACKS(L, "\xc3", "true");
    EXPECT_UNPACKS(L, "\xcc\xff", "255");
    EXPECT_UNPACKS(L, "\xcd\xff\xff", "65535");
    EXPECT_UNPACKS(L, "\xce\xff\xff\xff\xff", "4294967295");
    EXPECT_UNPACKS(L, "\xcf\x00\x1f\xff\xff\xff\xff\xff\xff", "9007199254740991");
    EXPECT_UNPACKS(L, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", "1.8446744073709552e+19");
    EXPECT_UNPACKS(L, "\xd0\x80", "-128");
    EXPECT_UNPACKS(L, "\xd1\x80\x00", "-32768");
    EXPECT_UNPACKS(L, "\xd2\x80\x00\x00\x00", "-2147483648");
    EXPECT_UNPACKS(L, "\xd3\xff\xff\xff\xff\xff\xff\xff\xff", "-1");
    EXPECT_UNPACKS(L, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", "-9.223372036854776e+18");
    EXPECT_UNPACKS(L, "\xca\x3f\xc0\x00\x00", "1.5");
    EXPECT_UNPACKS(L, "\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a", "0.1");
    EXPECT_UNPACKS(L, "\xa2hi", "\"hi\"");
    EXPECT_UNPACKS(L, "\xd9\x02hi", "\"hi\"");
    EXPECT_UNPACKS(L, "\xda\x00\x02hi", "\"hi\"");
    EXPECT_UNPACKS(L, "\x93\x01\xa1x\xc0", "[1,\"x\",null]");
    EXPECT_UNPACKS(L, "\xdc\x00\x02\x01\x02", "[1,2]");
    EXPECT_UNPACKS(L, "\xdd\x00\x00\x00\x01\x90", "[[]]");
    EXPECT_UNPACKS(L, "\x81\xa1k\x80", "{\"k\":{}}");
    EXPECT_UNPACKS(L, "\xde\x00\x01\xa1k\x90", "{\"k\":[]}");
    EXPECT_UNPACKS(L, "\xdf\x00\x00\x00\x00", "{}");
    EXPECT_UNPACKS(L, "\x90", "[]");
    EXPECT_UNPACKS(L, "\x80", "{}");
    EXPECT_UNPACKS(L, "\x92\x90\x80", "[[],{}]");
    /* int keys stay numbers; duplicate keys: the last wins */
    EXPECT_LUA(L, "local t = codec.msgpack_decode('\\130\\1\\161a\\255\\161b') "
                  "return t[1] == 'a' and t[-1] == 'b'");
    EXPECT_LUA(L, "local t = codec.msgpack_decode('\\130\\161a\\1\\161a\\2') return t.a == 2");
    EXPECT_LUA(L, "local t = codec.msgpack_decode('\\129\\208\\128\\1') return t[-128] == 1");
    /* a uint64 key past 2^63 is written back as uint64, not as a str key */
    EXPECT_LUA(L, "local b = '\\129\\207\\128\\0\\0\\0\\0\\0\\0\\0\\1' "
                  "return codec.msgpack_encode(codec.msgpack_decode(b)) == b");
    EXPECT_LUA(L, "local b = '\\129\\207\\255\\255\\255\\255\\255\\255\\255\\255\\1' "
                  "return codec.msgpack_encode(codec.msgpack_decode(b)) == b");
    /* sparse numeric keys survive a msgpack round trip */
    EXPECT_LUA(L, "local t = codec.msgpack_decode(codec.msgpack_encode({[1] = 'a', [3] = 'c'})) "
                  "return t[1] == 'a' and t[3] == 'c' and t['1'] == nil");
    lua_close(L);
}

DL_TEST(msgpack_null)
{
    lua_State *L = new_state();
    char err[256];
    EXPECT_EQ(dl_msgpack_decode(L, "\xc0", 1, err, sizeof(err)), 0);
    EXPECT_EQ(lua_type(L, -1), LUA_TLIGHTUSERDATA);
    EXPECT(lua_touserdata(L, -1) == NULL);
    lua_settop(L, 0);
    EXPECT_LUA(L, "local t = codec.msgpack_decode('\\146\\192\\1') "
                  "return #t == 2 and t[1] == codec.null and t[2] == 1");
    lua_close(L);
}

DL_TEST(msgpack_decode_errors)
{
    lua_State *L = new_state();
    EXPECT_UNPACK_ERROR(L, "", "truncated input");
    EXPECT_UNPACK_ERROR_N(L, NULL, 0, "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xcc", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xcf\x00\x00", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xcb\x00", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xa3" "ab", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xd9", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xda\x00", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xc6\x00\x00\x00\x05" "abc", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\x92\x01", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\x81\xa1k", "truncated input");
    /* huge counts are rejected before anything is allocated */
    EXPECT_UNPACK_ERROR(L, "\xdd\xff\xff\xff\xff", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xdf\xff\xff\xff\xff\x01\x02", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\xdb\xff\xff\xff\xff", "truncated input");
    EXPECT_UNPACK_ERROR(L, "\x01\x02", "trailing bytes at byte 1");
    EXPECT_UNPACK_ERROR(L, "\x91\x01\xc0", "trailing bytes at byte 2");
    EXPECT_UNPACK_ERROR(L, "\xc1", "invalid byte 0xc1 at byte 0");
    EXPECT_UNPACK_ERROR(L, "\x91\xc1", "invalid byte 0xc1 at byte 1");
    EXPECT_UNPACK_ERROR(L, "\xc7\x01\x05\x00", "unsupported ext type at byte 0");
    EXPECT_UNPACK_ERROR(L, "\x91\xd4\x01\x00", "unsupported ext type at byte 1");
    EXPECT_UNPACK_ERROR(L, "\xd8\x01" "0123456789abcdef", "unsupported ext type");
    EXPECT_UNPACK_ERROR(L, "\x81\xc0\x01", "map key of type nil at byte 1");
    EXPECT_UNPACK_ERROR(L, "\x81\xc3\x01", "map key of type boolean");
    EXPECT_UNPACK_ERROR(L, "\x81\x90\x01", "map key of type array");
    EXPECT_UNPACK_ERROR(L, "\x81\x80\x01", "map key of type map");
    EXPECT_UNPACK_ERROR(L, "\x81\xcb\x00\x00\x00\x00\x00\x00\x00\x00\x01", "map key of type float");
    EXPECT_UNPACK_ERROR(L, "\x81\xc4\x01k\x01", "map key of type bin");
    EXPECT_UNPACK_ERROR(L, "\x81\xd4\x01\x00\x01", "map key of type ext");
    EXPECT_UNPACK_ERROR(L, "\x81\xc1\x01", "invalid byte 0xc1 at byte 1");
    /* the binding: nil, err, code; misuse raises */
    EXPECT_LUA(L, "local v, err, code = codec.msgpack_decode('\\1\\2') "
                  "return v == nil and err == 'trailing bytes at byte 1' and code == 'ECODEC'");
    EXPECT_LUA(L, "return not pcall(codec.msgpack_decode, {}) and not pcall(codec.msgpack_encode)");
    lua_close(L);
}

DL_TEST(msgpack_decode_deep_nesting)
{
    lua_State *L = new_state();
    char err[256];
    size_t big = 1000000;
    char *s = malloc(big + 1);
    memset(s, 0x91, big);
    s[128] = 0x01;
    EXPECT_EQ(dl_msgpack_decode(L, s, 129, err, sizeof(err)), 0);
    EXPECT_EQ(lua_gettop(L), 1);
    lua_settop(L, 0);
    s[128] = (char)0x91;
    s[129] = 0x01;
    EXPECT_UNPACK_ERROR_N(L, s, 130, "nesting deeper than 128");
    s[129] = (char)0x91;
    /* maps, and a far too deep input */
    memset(s, 0x81, 600);
    for (int i = 0; i < 600; i += 2)
        s[i + 1] = 0x01; /* key 1, value: the next map */
    EXPECT_UNPACK_ERROR_N(L, s, 600, "nesting deeper than 128");
    memset(s, 0x91, big);
    EXPECT_UNPACK_ERROR_N(L, s, big, "nesting deeper than 128");
    free(s);
    lua_close(L);
}

/* Decodes p (n bytes) within the limits; returns the code, with the stack
 * checked: one value on success, unchanged on failure. */
static int decode_limited(lua_State *L, const char *p, size_t n, size_t max_elements,
                          int max_depth, char *err, size_t errlen)
{
    dl_codec_limits_t lim = {max_elements, max_depth};
    int top = lua_gettop(L);
    err[0] = '\0';
    int rc = dl_msgpack_decode_limited(L, p, n, &lim, err, errlen);
    if (lua_gettop(L) != top + (rc == 0))
        DL_FAIL_AT("stack %d after rc %d, was %d", lua_gettop(L), rc, top);
    lua_settop(L, top);
    return rc;
}

#define EXPECT_WITHIN(L, bytes, n)                                                             \
    EXPECT_EQ(decode_limited((L), (bytes), sizeof(bytes) - 1, (n), 0, err, sizeof(err)), 0)

#define EXPECT_TOO_MANY(L, bytes, n)                                                           \
    do {                                                                                       \
        EXPECT_EQ(decode_limited((L), (bytes), sizeof(bytes) - 1, (n), 0, err, sizeof(err)),   \
                  DL_ETOOBIG);                                                                 \
        char want_[64];                                                                        \
        snprintf(want_, sizeof(want_), "more than %d elements", (int)(n));                     \
        EXPECT_STR(err, want_);                                                                \
    } while (0)

/* As for JSON: the top value, array items and map values count, keys do not;
 * N pass and N + 1 fail. */
DL_TEST(msgpack_decode_element_cap)
{
    lua_State *L = new_state();
    char err[256];
    EXPECT_WITHIN(L, "\x94\x01\x02\x03\x04", 5);
    EXPECT_TOO_MANY(L, "\x95\x01\x02\x03\x04\x05", 5);
    EXPECT_WITHIN(L, "\x84\x01\xc0\x02\xc0\x03\xc0\x04\xc0", 5);
    EXPECT_TOO_MANY(L, "\x85\x01\xc0\x02\xc0\x03\xc0\x04\xc0\x05\xc0", 5);
    EXPECT_WITHIN(L, "\x91\x91\x91\x91\x90", 5);
    EXPECT_TOO_MANY(L, "\x91\x91\x91\x91\x91\x90", 5);
    EXPECT_WITHIN(L, "\x92\x80\x91\x80", 5);
    EXPECT_TOO_MANY(L, "\x93\x80\x92\x80\x80", 5);
    EXPECT_WITHIN(L, "\xa4only", 1);
    EXPECT_WITHIN(L, "\x80", 1);
    EXPECT_TOO_MANY(L, "\x91\xc0", 1);
    /* 0: no limit */
    EXPECT_WITHIN(L, "\x99\x01\x02\x03\x04\x05\x06\x07\x08\x09", 0);
    /* a header is charged before its elements are read (these are invalid) */
    EXPECT_TOO_MANY(L, "\x96\xc1\xc1\xc1\xc1\xc1\xc1", 5);
    EXPECT_TOO_MANY(L, "\xdc\x00\x06\x01\x02\x03\x04\x05\x06", 5);
    /* a header claiming more elements than bytes left is malformed first */
    EXPECT_EQ(decode_limited(L, "\xdd\x00\x10\x00\x00\x01", 6, 5, 0, err, sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "truncated input");

    /* the default cap at N and N + 1: arrays of nil after the top array */
    const size_t N = 100000;
    char *s = malloc(N + 8);
    s[0] = (char)0xdd;
    s[1] = 0;
    s[2] = (char)((N - 1) >> 16);
    s[3] = (char)((N - 1) >> 8);
    s[4] = (char)(N - 1);
    memset(s + 5, 0xc0, N);
    EXPECT_EQ(decode_limited(L, s, 5 + N - 1, N, 0, err, sizeof(err)), 0);
    s[4] = (char)N;
    s[3] = (char)(N >> 8);
    s[2] = (char)(N >> 16);
    EXPECT_EQ(decode_limited(L, s, 5 + N, N, 0, err, sizeof(err)), DL_ETOOBIG);
    EXPECT_STR(err, "more than 100000 elements");
    free(s);
    lua_close(L);
}

/* 1 MB of empty maps, the body that took 77 MiB: its array header alone now
 * answers it; split into arrays of 15 maps, it stops at the cap with the Lua
 * heap grown by at most 10 MiB. */
DL_TEST(msgpack_decode_element_cap_memory)
{
    const size_t body = 1 << 20;
    char *s = malloc(body + 8);
    char err[256];
    for (int split = 0; split < 2; split++) {
        lua_State *L = new_state();
        size_t count = split ? body / 16 : body;
        s[0] = (char)0xdd;
        s[1] = (char)(count >> 24);
        s[2] = (char)(count >> 16);
        s[3] = (char)(count >> 8);
        s[4] = (char)count;
        memset(s + 5, 0x80, body);
        for (size_t i = 0; split && i < count; i++)
            s[5 + 16 * i] = (char)0x9f;
        lua_gc(L, LUA_GCCOLLECT, 0);
        size_t before = (size_t)lua_gc(L, LUA_GCCOUNT, 0);
        EXPECT_EQ(decode_limited(L, s, body + 5, 100000, 0, err, sizeof(err)), DL_ETOOBIG);
        size_t grown_kb = (size_t)lua_gc(L, LUA_GCCOUNT, 0) - before;
        if (grown_kb > (split ? 10 * 1024 : 64))
            DL_FAIL_AT("split %d: the Lua heap grew by %zu KiB", split, grown_kb);
        lua_close(L);
    }
    free(s);
}

/* Request bodies nest at most DL_CODEC_BODY_DEPTH deep, arrays and maps. */
DL_TEST(msgpack_decode_body_depth)
{
    lua_State *L = new_state();
    char err[256];
    char s[2 * DL_CODEC_BODY_DEPTH + 8];
    memset(s, 0x91, sizeof(s));
    s[DL_CODEC_BODY_DEPTH] = 0x01;
    EXPECT_EQ(decode_limited(L, s, DL_CODEC_BODY_DEPTH + 1, 0, DL_CODEC_BODY_DEPTH, err,
                             sizeof(err)),
              0);
    s[DL_CODEC_BODY_DEPTH] = (char)0x91;
    s[DL_CODEC_BODY_DEPTH + 1] = 0x01;
    EXPECT_EQ(decode_limited(L, s, DL_CODEC_BODY_DEPTH + 2, 0, DL_CODEC_BODY_DEPTH, err,
                             sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 100");
    for (int i = 0; i < DL_CODEC_BODY_DEPTH + 1; i++) {
        s[2 * i] = (char)0x81; /* {1: {1: ...}} */
        s[2 * i + 1] = 0x01;
    }
    s[2 * DL_CODEC_BODY_DEPTH + 2] = (char)0xc0;
    EXPECT_EQ(decode_limited(L, s, 2 * DL_CODEC_BODY_DEPTH + 3, 0, DL_CODEC_BODY_DEPTH, err,
                             sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 100");
    lua_close(L);
}

/* Deterministic mutations of a valid document: every result must be either a
 * value or an error, with the stack intact. */
DL_TEST(msgpack_decode_mutations)
{
    lua_State *L = new_state();
    int lrc = luaL_dostring(L, "return codec.msgpack_encode({id = 'feat-1', n = 1.25, "
                               "i = -70000, u = 2^40, tags = codec.array(), meta = {}, "
                               "list = {1, {2, {3, {x = codec.null}}}}, ok = true, "
                               "s = string.rep('z', 40), [7] = false})");
    EXPECT_EQ(lrc, 0);
    size_t n0;
    const char *seed = lua_tolstring(L, -1, &n0);
    char buf[512], err[256];
    EXPECT(n0 < sizeof(buf));
    memcpy(buf, seed, n0);
    char orig[512];
    memcpy(orig, seed, n0);
    lua_settop(L, 0);
    uint64_t rng = 0x2545F4914F6CDD1DULL;
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 40000; iter++) {
        size_t n = n0;
        memcpy(buf, orig, n);
        int muts = 1 + (int)(rng % 3);
        for (int m = 0; m < muts; m++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(rng >> 33) % n;
            switch ((rng >> 20) % 3) {
            case 0:
                buf[pos] = (char)(rng >> 40);
                break;
            case 1:
                n = pos + 1;
                break;
            default:
                buf[pos] ^= (char)(1 << ((rng >> 50) % 8));
                break;
            }
        }
        int rc = dl_msgpack_decode(L, buf, n, err, sizeof(err));
        if (rc == 0) {
            EXPECT_EQ(lua_gettop(L), 1);
            ok++;
        } else {
            EXPECT_EQ(rc, DL_ECODEC);
            EXPECT_EQ(lua_gettop(L), 0);
            bad++;
        }
        lua_settop(L, 0);
    }
    EXPECT(ok > 0);
    EXPECT(bad > 0);
    lua_close(L);
}
