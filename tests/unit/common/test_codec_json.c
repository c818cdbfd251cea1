/*
 * test_codec_json.c - unit tests of runtime/common/codec_json.c and the JSON half of
 * bindings/dl_codec.c: encoding rules, round trips, RFC 8259 strictness, the
 * error messages, nesting limits, and a mutation loop over malformed input.
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
#include "common/internal.h"
#include "unit.h"

/* A fresh state with the standard libraries and devloop.codec as global
 * `codec`. */
static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaopen_devloop_codec(L);
    lua_setglobal(L, "codec");
    return L;
}

/* Evaluates expr and JSON-encodes it into b (NUL-terminated); returns the
 * encoder's code, or -9999 when the Lua snippet fails. */
static int encode_expr(lua_State *L, const char *expr, dl_buf_t *b, char *err, size_t errlen)
{
    char code[8192];
    snprintf(code, sizeof(code), "return %s", expr);
    if (luaL_dostring(L, code) != 0) {
        fprintf(stderr, "# lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -9999;
    }
    dl_buf_reset(b);
    err[0] = '\0';
    int top = lua_gettop(L);
    int rc = dl_json_encode(L, -1, b, err, errlen);
    if (lua_gettop(L) != top) {
        fprintf(stderr, "# stack changed by dl_json_encode\n");
        rc = -9998;
    }
    lua_pop(L, 1);
    dl_buf_append_char(b, '\0');
    b->len--;
    return rc;
}

/* Decodes text then encodes the result again into b. */
static int reencode(lua_State *L, const char *text, size_t len, dl_buf_t *b, char *err,
                    size_t errlen)
{
    int top = lua_gettop(L);
    err[0] = '\0';
    int rc = dl_json_decode(L, text, len, err, errlen);
    if (rc != 0) {
        if (lua_gettop(L) != top)
            return -9998;
        return rc;
    }
    if (lua_gettop(L) != top + 1)
        return -9998;
    dl_buf_reset(b);
    rc = dl_json_encode(L, -1, b, err, errlen);
    lua_pop(L, 1);
    dl_buf_append_char(b, '\0');
    b->len--;
    return rc;
}

#define EXPECT_ENCODES(L, expr, want)                                                          \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = encode_expr((L), (expr), &b_, err_, sizeof(err_));                           \
        if (rc_ != 0)                                                                          \
            DL_FAIL_AT("encode %s: rc %d (%s)", (expr), rc_, err_);                            \
        else                                                                                   \
            EXPECT_STR(b_.data, (want));                                                       \
        dl_buf_free(&b_);                                                                      \
    } while (0)

#define EXPECT_ENCODE_ERROR(L, expr, msg)                                                      \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = encode_expr((L), (expr), &b_, err_, sizeof(err_));                           \
        EXPECT_EQ(rc_, DL_ECODEC);                                                             \
        if (strstr(err_, (msg)) == NULL)                                                       \
            DL_FAIL_AT("encode %s: error \"%s\" lacks \"%s\"", (expr), err_, (msg));           \
        dl_buf_free(&b_);                                                                      \
    } while (0)

/* Decoding text and encoding it again gives want. */
#define EXPECT_ROUNDTRIP(L, text, want)                                                        \
    do {                                                                                       \
        char err_[256];                                                                        \
        dl_buf_t b_ = DL_BUF_INIT;                                                             \
        int rc_ = reencode((L), (text), strlen(text), &b_, err_, sizeof(err_));                \
        if (rc_ != 0)                                                                          \
            DL_FAIL_AT("round trip %s: rc %d (%s)", (text), rc_, err_);                        \
        else                                                                                   \
            EXPECT_STR(b_.data, (want));                                                       \
        dl_buf_free(&b_);                                                                      \
    } while (0)

#define EXPECT_DECODE_ERROR_N(L, text, len, msg)                                               \
    do {                                                                                       \
        char err_[256] = "";                                                                   \
        int top_ = lua_gettop(L);                                                              \
        int rc_ = dl_json_decode((L), (text), (len), err_, sizeof(err_));                      \
        EXPECT_EQ(rc_, DL_ECODEC);                                                             \
        EXPECT_EQ(lua_gettop(L), top_);                                                        \
        if (strstr(err_, (msg)) == NULL)                                                       \
            DL_FAIL_AT("decode %s: error \"%s\" lacks \"%s\"", #text, err_, (msg));           \
    } while (0)

#define EXPECT_DECODE_ERROR(L, text, msg) EXPECT_DECODE_ERROR_N(L, text, strlen(text), msg)

/* Runs a Lua chunk that must return true. */
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

/* ---- encoding */

DL_TEST(json_encode_scalars)
{
    lua_State *L = new_state();
    EXPECT_ENCODES(L, "nil", "null");
    EXPECT_ENCODES(L, "codec.null", "null");
    EXPECT_ENCODES(L, "true", "true");
    EXPECT_ENCODES(L, "false", "false");
    EXPECT_ENCODES(L, "0", "0");
    EXPECT_ENCODES(L, "-0.0", "0");
    EXPECT_ENCODES(L, "-1", "-1");
    EXPECT_ENCODES(L, "42", "42");
    EXPECT_ENCODES(L, "2^31", "2147483648");
    EXPECT_ENCODES(L, "2^32 + 1", "4294967297");
    EXPECT_ENCODES(L, "2^53 - 1", "9007199254740991");
    EXPECT_ENCODES(L, "-(2^53 - 1)", "-9007199254740991");
    EXPECT_ENCODES(L, "2^53", "9007199254740992");
    EXPECT_ENCODES(L, "-2^53", "-9007199254740992");
    EXPECT_ENCODES(L, "0.1", "0.1");
    EXPECT_ENCODES(L, "-0.5", "-0.5");
    EXPECT_ENCODES(L, "1e300", "1e+300");
    EXPECT_ENCODES(L, "1e-300", "1e-300");
    EXPECT_ENCODES(L, "0.1 + 0.2", "0.30000000000000004");
    EXPECT_ENCODES(L, "1/3", "0.3333333333333333");
    EXPECT_ENCODES(L, "2^64", "1.8446744073709552e+19");
    EXPECT_ENCODES(L, "'hi'", "\"hi\"");
    EXPECT_ENCODES(L, "''", "\"\"");
    lua_close(L);
}

DL_TEST(json_encode_string_escapes)
{
    lua_State *L = new_state();
    EXPECT_ENCODES(L, "'a\"b\\\\c/d'", "\"a\\\"b\\\\c/d\"");
    EXPECT_ENCODES(L, "'\\n\\r\\t\\b\\f'", "\"\\n\\r\\t\\b\\f\"");
    EXPECT_ENCODES(L, "'\\0\\1\\31\\127'", "\"\\u0000\\u0001\\u001f\x7f\"");
    EXPECT_ENCODES(L, "'\\9'", "\"\\t\"");
    EXPECT_ENCODES(L, "'\\9\\11\\9'", "\"\\t\\u000b\\t\"");
    EXPECT_ENCODES(L, "'caf\\195\\169 \\226\\130\\172'", "\"caf\xc3\xa9 \xe2\x82\xac\"");
    /* escapes at every offset of the 8-byte scan */
    EXPECT_ENCODES(L, "'0123456789abcdef\"'", "\"0123456789abcdef\\\"\"");
    EXPECT_ENCODES(L, "'0123456\\n89abcdef0123'", "\"0123456\\n89abcdef0123\"");
    EXPECT_ENCODES(L, "'01234567\\\\9abcdef\\n'", "\"01234567\\\\9abcdef\\n\"");
    EXPECT_ENCODES(L, "string.rep('x', 40) .. '\\31' .. string.rep('y', 5)",
                   "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\u001fyyyyy\"");
    EXPECT_ENCODES(L, "string.rep('\"', 10)", "\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\"");
    lua_close(L);
}

DL_TEST(json_encode_all_bytes_roundtrip)
{
    lua_State *L = new_state();
    /* Every ASCII byte and a character of each UTF-8 length at every
     * alignment, and a long string of escapes that forces the buffer to grow
     * in the middle of a string. Bytes that are not UTF-8 do not round-trip:
     * json_encode_invalid_utf8 checks what they become. */
    EXPECT_LUA(L, "local t = {} for i = 0, 127 do t[#t + 1] = string.char(i) end "
                  "local s = table.concat(t) .. '\\194\\128\\223\\191\\224\\160\\128' "
                  "  .. '\\239\\191\\191\\240\\144\\128\\128\\244\\143\\191\\191' "
                  "for k = 0, 17 do local v = string.rep('a', k) .. s .. string.rep('z', k) "
                  "  local j = assert(codec.json_encode(v)) "
                  "  if codec.json_decode(j) ~= v then return false end end "
                  "local big = string.rep('\\1', 100000) "
                  "local j = assert(codec.json_encode(big)) "
                  "return #j == 600002 and codec.json_decode(j) == big");
    lua_close(L);
}

/* U+FFFD as the writer puts it: raw UTF-8. */
#define FFFD "\xef\xbf\xbd"

/* An independent validity check (code points, then their ranges), for the
 * random inputs below. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n)
            return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/* in (n bytes) written as a JSON string must be "want" (quoted), through
 * dl_json_put_string() behind every prefix of 0..40 plain bytes (every
 * position in a 16-byte chunk, and the tail) and of about 4 KiB, through
 * dl_json_escape() and through the Lua encoder. */
static void check_escaped(lua_State *L, const char *in, size_t n, const char *want, int line)
{
    size_t wn = strlen(want);
    size_t cap = 4200 + n;
    char *src = malloc(cap), *exp = malloc(cap + wn + 3);
    int fails = dl_unit_failures;
    for (size_t pre = 0; pre <= 4100; pre = pre == 40 ? 4080 : pre + 1) {
        memset(src, 'a', pre);
        memcpy(src + pre, in, n);
        exp[0] = '"';
        memset(exp + 1, 'a', pre);
        memcpy(exp + 1 + pre, want, wn);
        exp[1 + pre + wn] = '"';
        dl_buf_t b = DL_BUF_INIT;
        EXPECT_EQ(dl_json_put_string(&b, src, pre + n), 0);
        EXPECT_MEM(b.data, b.len, exp, pre + wn + 2);
        dl_buf_free(&b);
        if (dl_unit_failures != fails) {
            fprintf(stderr, "# line %d, after %zu plain bytes\n", line, pre);
            break;
        }
    }
    char *d = malloc(DL_JSON_ESCAPE_ROOM(n));
    size_t dn = (size_t)(dl_json_escape(d, in, n) - d);
    EXPECT_MEM(d, dn, want, wn);
    free(d);
    dl_buf_t b = DL_BUF_INIT;
    lua_pushlstring(L, in, n);
    EXPECT_EQ(dl_json_encode(L, -1, &b, NULL, 0), 0);
    lua_pop(L, 1);
    EXPECT_MEM(b.data + 1, b.len - 2, want, wn);
    dl_buf_free(&b);
    if (dl_unit_failures != fails)
        fprintf(stderr, "# (line %d)\n", line);
    free(src);
    free(exp);
}

#define CHECK_ESCAPED(L, in, want) check_escaped((L), (in), sizeof(in) - 1, (want), __LINE__)

DL_TEST(json_encode_invalid_utf8)
{
    lua_State *L = new_state();
    /* well-formed, at each length's bounds: copied as is */
    CHECK_ESCAPED(L, "\xc2\x80 \xdf\xbf", "\xc2\x80 \xdf\xbf");
    CHECK_ESCAPED(L, "\xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf",
                  "\xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf");
    CHECK_ESCAPED(L, "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf");
    CHECK_ESCAPED(L, "caf\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
                  "caf\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\\"");
    /* a request path's raw bytes */
    CHECK_ESCAPED(L, "/\xff\xc3", "/" FFFD FFFD);
    /* stray continuation bytes, one U+FFFD each */
    CHECK_ESCAPED(L, "\x80", FFFD);
    CHECK_ESCAPED(L, "a\x80\xbf" "b", "a" FFFD FFFD "b");
    /* lead bytes that never start a sequence: C0, C1, F5..FF */
    CHECK_ESCAPED(L, "\xc0\xaf", FFFD FFFD);
    CHECK_ESCAPED(L, "\xc1\xbf", FFFD FFFD);
    CHECK_ESCAPED(L, "\xf5\x80\x80\x80", FFFD FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xf8\x88\x80\x80\x80", FFFD FFFD FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xfe\xff", FFFD FFFD);
    /* overlong forms */
    CHECK_ESCAPED(L, "\xe0\x80\xaf", FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xe0\x9f\xbf", FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xf0\x80\x80\xaf", FFFD FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xf0\x8f\xbf\xbf", FFFD FFFD FFFD FFFD);
    /* surrogates, alone and as a CESU-8 pair */
    CHECK_ESCAPED(L, "\xed\xa0\x80", FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xed\xbf\xbf", FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xed\xa0\xbd\xed\xb8\x80", FFFD FFFD FFFD FFFD FFFD FFFD);
    /* past U+10FFFF */
    CHECK_ESCAPED(L, "\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD);
    CHECK_ESCAPED(L, "\xf7\xbf\xbf\xbf", FFFD FFFD FFFD FFFD);
    /* truncated: the maximal subpart is one U+FFFD, at the end or not */
    CHECK_ESCAPED(L, "\xc3", FFFD);
    CHECK_ESCAPED(L, "\xe2\x82", FFFD);
    CHECK_ESCAPED(L, "\xf0\x9f\x98", FFFD);
    CHECK_ESCAPED(L, "\xe2\x82x", FFFD "x");
    CHECK_ESCAPED(L, "\xf0\x9f\x98\"", FFFD "\\\"");
    CHECK_ESCAPED(L, "\xc3\n", FFFD "\\n");
    CHECK_ESCAPED(L, "\xc3\xc3\xa9", FFFD "\xc3\xa9");
    /* Unicode 15 table 3-8, the example of maximal subparts */
    CHECK_ESCAPED(L, "a\xf1\x80\x80\xe1\x80\xc2" "b\x80" "c\x80\xbf" "d",
                  "a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d");
    /* a long string with a sequence, then a truncated one, near its end */
    {
        char s[4100];
        memset(s, 'a', sizeof(s));
        memcpy(s + 4094, "\xf0\x9f\x98\x80", 4);
        dl_buf_t b = DL_BUF_INIT;
        EXPECT_EQ(dl_json_put_string(&b, s, sizeof(s)), 0);
        EXPECT_EQ(b.len, sizeof(s) + 2);
        EXPECT_MEM(b.data + 4095, 4, "\xf0\x9f\x98\x80", 4);
        dl_buf_reset(&b);
        memcpy(s + 4094, "\xf0\x9f\x98" "a", 4); /* truncated before an 'a' */
        EXPECT_EQ(dl_json_put_string(&b, s, sizeof(s)), 0);
        EXPECT_EQ(b.len, sizeof(s) + 2);
        EXPECT_MEM(b.data + 4095, 4, FFFD "a", 4);
        dl_buf_free(&b);
    }
    /* dl_utf8_repair: the same replacements, nothing escaped */
    {
        static const char in[] = "{\"r\":\"/a\xff\xe2\x82\xac\xed\xa0\x80\"}";
        static const char want[] = "{\"r\":\"/a" FFFD "\xe2\x82\xac" FFFD FFFD FFFD "\"}";
        char out[3 * sizeof(in)];
        size_t n = (size_t)(dl_utf8_repair(out, in, sizeof(in) - 1) - out);
        EXPECT_MEM(out, n, want, sizeof(want) - 1);
    }
    lua_close(L);
}

/* Random strings over bytes that stress the writer: whatever goes in, the
 * JSON that comes out is valid UTF-8 and decodes to the input with each
 * ill-formed subpart replaced, and well-formed input comes back unchanged. */
DL_TEST(json_encode_utf8_random)
{
    /* the first 11 are well-formed */
    static const char *pieces[] = {"a", "Z", "\"", "\\", "\n", "\x01", "\x7f", "\xc3\xa9",
                                   "\xe2\x82\xac", "\xf0\x9f\x98\x80", "0123456789abcdef",
                                   "\x80", "\xbf", "\xc0", "\xc3", "\xe2\x82", "\xed\xa0",
                                   "\xf0\x9f\x98", "\xf4\x90", "\xf5", "\xff"};
    lua_State *L = new_state();
    uint64_t rng = 0x2545F4914F6CDD1DULL;
    char in[1024], repaired[3 * sizeof(in)], err[256];
    int valid_seen = 0, invalid_seen = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 0;
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int count = (int)(rng >> 58);
        for (int k = 0; k < count; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t np = (iter & 1) ? 11 : DL_ARRAY_SIZE(pieces);
            const char *p = pieces[(rng >> 33) % np];
            size_t pl = strlen(p);
            memcpy(in + n, p, pl);
            n += pl;
        }
        dl_buf_t b = DL_BUF_INIT;
        EXPECT_EQ(dl_json_put_string(&b, in, n), 0);
        if (!valid_utf8((const unsigned char *)b.data, b.len)) {
            DL_FAIL_AT("invalid UTF-8 out for input %d", iter);
            dl_buf_free(&b);
            break;
        }
        size_t rn = (size_t)(dl_utf8_repair(repaired, in, n) - repaired);
        EXPECT(valid_utf8((const unsigned char *)repaired, rn));
        EXPECT_EQ(dl_json_decode(L, b.data, b.len, err, sizeof(err)), 0);
        size_t got_n = 0;
        const char *got = lua_tolstring(L, -1, &got_n);
        EXPECT_MEM(got, got_n, repaired, rn);
        if (valid_utf8((const unsigned char *)in, n)) {
            EXPECT_MEM(got, got_n, in, n);
            valid_seen++;
        } else {
            invalid_seen++;
        }
        lua_settop(L, 0);
        dl_buf_free(&b);
    }
    EXPECT(valid_seen > 1000);
    EXPECT(invalid_seen > 1000);
    lua_close(L);
}

DL_TEST(json_encode_tables)
{
    lua_State *L = new_state();
    EXPECT_ENCODES(L, "{}", "{}");
    EXPECT_ENCODES(L, "{1, 2, 3}", "[1,2,3]");
    EXPECT_ENCODES(L, "{'a', {true, false}, {}}", "[\"a\",[true,false],{}]");
    EXPECT_ENCODES(L, "{a = 1}", "{\"a\":1}");
    EXPECT_ENCODES(L, "{a = {b = {c = 'd'}}}", "{\"a\":{\"b\":{\"c\":\"d\"}}}");
    EXPECT_ENCODES(L, "{[1.5] = 1}", "{\"1.5\":1}");
    EXPECT_ENCODES(L, "{[2] = 'x'}", "{\"2\":\"x\"}");
    EXPECT_ENCODES(L, "{[0] = 'x'}", "{\"0\":\"x\"}");
    EXPECT_ENCODES(L, "{[-1] = 'x'}", "{\"-1\":\"x\"}");
    EXPECT_ENCODES(L, "{[2^53] = 1}", "{\"9007199254740992\":1}");
    EXPECT_ENCODES(L, "codec.array()", "[]");
    EXPECT_ENCODES(L, "codec.object()", "{}");
    EXPECT_ENCODES(L, "codec.array({1, 2})", "[1,2]");
    EXPECT_ENCODES(L, "codec.array({a = 1})", "[]");
    EXPECT_ENCODES(L, "codec.object({7})", "{\"1\":7}");
    EXPECT_ENCODES(L, "{codec.null, 2}", "[null,2]");
    EXPECT_ENCODES(L, "codec.array({n = 3})", "[]");
    /* the array marker takes t[1..#t]; nil within that range becomes null */
    EXPECT_ENCODES(L, "codec.array({1, codec.null, 3})", "[1,null,3]");
    /* mixed and sparse tables are objects: check through a decode */
    EXPECT_LUA(L, "local t = codec.json_decode(codec.json_encode({1, 2, x = 'y'})) "
                  "return t['1'] == 1 and t['2'] == 2 and t.x == 'y'");
    EXPECT_LUA(L, "local t = codec.json_decode(codec.json_encode({[1] = 'a', [3] = 'c'})) "
                  "return t['1'] == 'a' and t['3'] == 'c' and t[1] == nil");
    lua_close(L);
}

DL_TEST(json_encode_errors)
{
    lua_State *L = new_state();
    EXPECT_ENCODE_ERROR(L, "function() end", "cannot encode function");
    EXPECT_ENCODE_ERROR(L, "{1, print}", "cannot encode function");
    EXPECT_ENCODE_ERROR(L, "coroutine.create(print)", "cannot encode thread");
    EXPECT_ENCODE_ERROR(L, "io.stdout", "cannot encode userdata");
    EXPECT_ENCODE_ERROR(L, "0/0", "NaN or Inf");
    EXPECT_ENCODE_ERROR(L, "math.huge", "NaN or Inf");
    EXPECT_ENCODE_ERROR(L, "{a = {-math.huge}}", "NaN or Inf");
    EXPECT_ENCODE_ERROR(L, "{[math.huge] = 1}", "NaN or Inf");
    EXPECT_ENCODE_ERROR(L, "{[true] = 1}", "table key of type boolean");
    EXPECT_ENCODE_ERROR(L, "{[{}] = 1}", "table key of type table");
    EXPECT_ENCODE_ERROR(L, "(function() local t = {} t.t = t return t end)()",
                        "nesting deeper than 128");
    EXPECT_ENCODE_ERROR(L, "(function() local t = {} t[1] = t return t end)()",
                        "nesting deeper than 128");
    /* exactly 128 levels pass, 129 fail */
    EXPECT_LUA(L, "local function nest(n) local t = {} for i = 2, n do t = {t} end return t end "
                  "local s = codec.json_encode(nest(128)) "
                  "local ok, err = codec.json_encode(nest(129)) "
                  "return s == string.rep('[', 127) .. '{}' .. string.rep(']', 127) "
                  "  and ok == nil and err == 'nesting deeper than 128'");
    /* the binding's failure triple */
    EXPECT_LUA(L, "local v, err, code = codec.json_encode(print) "
                  "return v == nil and err == 'cannot encode function' and code == 'ECODEC'");
    lua_close(L);
}

/* ---- decoding */

DL_TEST(json_roundtrip_nested)
{
    lua_State *L = new_state();
    EXPECT_ROUNDTRIP(L, "[1,\"two\",[3,[4,[5]]],true,false,null]",
                     "[1,\"two\",[3,[4,[5]]],true,false,null]");
    EXPECT_ROUNDTRIP(L, "{\"a\":[{\"b\":{\"c\":[null]}}]}", "{\"a\":[{\"b\":{\"c\":[null]}}]}");
    EXPECT_ROUNDTRIP(L, "[{\"tags\":[]},{\"meta\":{}},{\"n\":-1.25e-7}]",
                     "[{\"tags\":[]},{\"meta\":{}},{\"n\":-1.25e-07}]");
    EXPECT_ROUNDTRIP(L, "\"a\\/b\"", "\"a/b\"");
    EXPECT_ROUNDTRIP(L, "\"\\\"\\\\\\b\\f\\n\\r\\t\"", "\"\\\"\\\\\\b\\f\\n\\r\\t\"");
    EXPECT_LUA(L, "local t = codec.json_decode('{\"a\":[1,2,{\"b\":null}],\"c\":\"x\"}') "
                  "return t.c == 'x' and #t.a == 3 and t.a[3].b == codec.null "
                  "  and getmetatable(t) == nil");
    lua_close(L);
}

DL_TEST(json_empty_array_vs_object)
{
    lua_State *L = new_state();
    EXPECT_ROUNDTRIP(L, "[]", "[]");
    EXPECT_ROUNDTRIP(L, "{}", "{}");
    EXPECT_ROUNDTRIP(L, "[[],{},[{}],{\"a\":[]}]", "[[],{},[{}],{\"a\":[]}]");
    EXPECT_ROUNDTRIP(L, " [ ] ", "[]");
    EXPECT_ROUNDTRIP(L, " { } ", "{}");
    EXPECT_LUA(L, "local a, o = codec.json_decode('[]'), codec.json_decode('{}') "
                  "local ma, mo = getmetatable(a), getmetatable(o) "
                  "return ma ~= nil and mo ~= nil and ma ~= mo "
                  "  and ma.__jsontype == 'array' and mo.__jsontype == 'object' "
                  "  and getmetatable(codec.array()) == ma and getmetatable(codec.object()) == mo");
    /* a decoded array stays an array after it is emptied */
    EXPECT_LUA(L, "local a = codec.json_decode('[1]') a[1] = nil "
                  "return codec.json_encode(a) == '[]'");
    lua_close(L);
}

DL_TEST(json_null)
{
    lua_State *L = new_state();
    char err[256];
    EXPECT_EQ(dl_json_decode(L, "null", 4, err, sizeof(err)), 0);
    EXPECT_EQ(lua_type(L, -1), LUA_TLIGHTUSERDATA);
    EXPECT(lua_touserdata(L, -1) == NULL);
    lua_pop(L, 1);
    EXPECT_ROUNDTRIP(L, "[null,1,null]", "[null,1,null]");
    EXPECT_ROUNDTRIP(L, "{\"a\":null}", "{\"a\":null}");
    EXPECT_LUA(L, "local t = codec.json_decode('[null,1,null]') "
                  "return #t == 3 and t[1] == codec.null and t[3] == codec.null");
    lua_close(L);
}

DL_TEST(json_unicode_escapes)
{
    lua_State *L = new_state();
    EXPECT_ROUNDTRIP(L, "\"\\u0041\\u00e9\\u20AC\"", "\"A\xc3\xa9\xe2\x82\xac\"");
    EXPECT_ROUNDTRIP(L, "\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");
    EXPECT_ROUNDTRIP(L, "\"\\uD834\\uDD1E!\"", "\"\xf0\x9d\x84\x9e!\"");
    EXPECT_ROUNDTRIP(L, "\"\\udbff\\udfff\"", "\"\xf4\x8f\xbf\xbf\"");
    EXPECT_ROUNDTRIP(L, "\"\\u0000\"", "\"\\u0000\"");
    EXPECT_ROUNDTRIP(L, "\"\\u001f\\u007f\"", "\"\\u001f\x7f\"");
    EXPECT_ROUNDTRIP(L, "\"x\\u0800y\\uffffz\"", "\"x\xe0\xa0\x80y\xef\xbf\xbfz\"");
    EXPECT_ROUNDTRIP(L, "\"raw \xc3\xa9 bytes\"", "\"raw \xc3\xa9 bytes\"");
    EXPECT_LUA(L, "return #codec.json_decode('\"\\\\u0000\"') == 1");
    EXPECT_DECODE_ERROR(L, "\"\\ud83d\"", "lone surrogate at byte 1");
    EXPECT_DECODE_ERROR(L, "\"\\ude00\"", "lone surrogate at byte 1");
    EXPECT_DECODE_ERROR(L, "\"ab\\ud83d\\u0041\"", "lone surrogate at byte 3");
    EXPECT_DECODE_ERROR(L, "\"\\ud83d\\ud83d\"", "lone surrogate");
    EXPECT_DECODE_ERROR(L, "\"\\ud83dxxxxxx\"", "lone surrogate");
    EXPECT_DECODE_ERROR(L, "\"\\u12G4\"", "invalid \\u escape at byte 1");
    EXPECT_DECODE_ERROR(L, "\"\\u12", "unexpected end of input");
    lua_close(L);
}

DL_TEST(json_decode_numbers)
{
    lua_State *L = new_state();
    EXPECT_ROUNDTRIP(L, "0", "0");
    EXPECT_ROUNDTRIP(L, "-0", "0");
    EXPECT_ROUNDTRIP(L, "123", "123");
    EXPECT_ROUNDTRIP(L, "-123", "-123");
    EXPECT_ROUNDTRIP(L, "1.5", "1.5");
    EXPECT_ROUNDTRIP(L, "1e3", "1000");
    EXPECT_ROUNDTRIP(L, "1E-2", "0.01");
    EXPECT_ROUNDTRIP(L, "2.5e+2", "250");
    EXPECT_ROUNDTRIP(L, "0.1", "0.1");
    EXPECT_ROUNDTRIP(L, "1e300", "1e+300");
    EXPECT_ROUNDTRIP(L, "999999999999999", "999999999999999");
    EXPECT_ROUNDTRIP(L, "9007199254740993", "9007199254740992");
    EXPECT_ROUNDTRIP(L, "-9007199254740992", "-9007199254740992");
    EXPECT_ROUNDTRIP(L, "4294967297", "4294967297");
    EXPECT_ROUNDTRIP(L, "[1,-1,2147483648]", "[1,-1,2147483648]");
    EXPECT_ROUNDTRIP(L,
                     "1.000000000000000000000000000000000000000000000000000000000000000000000001",
                     "1");
    EXPECT_LUA(L, "return codec.json_decode('-0') == 0 and 1 / codec.json_decode('-0') < 0");
    /* out of a double's range: refused, never inf (no encoder writes it back) */
    EXPECT_DECODE_ERROR(L, "1e400", "number out of range at byte 0");
    EXPECT_DECODE_ERROR(L, "[1, -1e999]", "number out of range at byte 4");
    EXPECT_DECODE_ERROR(L, "01", "leading zero in number at byte 0");
    EXPECT_DECODE_ERROR(L, "[-012]", "leading zero in number at byte 1");
    EXPECT_DECODE_ERROR(L, "+1", "unexpected character '+' at byte 0");
    EXPECT_DECODE_ERROR(L, ".5", "unexpected character '.' at byte 0");
    EXPECT_DECODE_ERROR(L, "1.", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "1.e5", "unexpected character 'e' at byte 2");
    EXPECT_DECODE_ERROR(L, "-", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "-a", "unexpected character 'a' at byte 1");
    EXPECT_DECODE_ERROR(L, "1e", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "1e+", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "[1ex]", "unexpected character 'x' at byte 3");
    EXPECT_DECODE_ERROR(L, "NaN", "unexpected character 'N' at byte 0");
    EXPECT_DECODE_ERROR(L, "-Infinity", "unexpected character 'I' at byte 1");
    EXPECT_DECODE_ERROR(L, "0x10", "trailing characters at byte 1");
    EXPECT_DECODE_ERROR(L, "1 2", "trailing characters at byte 2");
    lua_close(L);
}

DL_TEST(json_decode_errors)
{
    lua_State *L = new_state();
    EXPECT_DECODE_ERROR(L, "", "unexpected end of input");
    EXPECT_DECODE_ERROR_N(L, NULL, 0, "unexpected end of input");
    EXPECT_DECODE_ERROR(L, " \t\r\n", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "x", "unexpected character 'x' at byte 0");
    EXPECT_DECODE_ERROR(L, "[1,]", "unexpected character ']' at byte 3");
    EXPECT_DECODE_ERROR(L, "[1 2]", "unexpected character '2' at byte 3");
    EXPECT_DECODE_ERROR(L, "[1,2", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "[", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "]", "unexpected character ']' at byte 0");
    EXPECT_DECODE_ERROR(L, "{\"a\" 1}", "unexpected character '1' at byte 5");
    EXPECT_DECODE_ERROR(L, "{a:1}", "unexpected character 'a' at byte 1");
    EXPECT_DECODE_ERROR(L, "{\"a\":1,}", "unexpected character '}' at byte 7");
    EXPECT_DECODE_ERROR(L, "{\"a\":1", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "{\"a\":}", "unexpected character '}' at byte 5");
    EXPECT_DECODE_ERROR(L, "{\"a\"", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "{1:2}", "unexpected character '1' at byte 1");
    EXPECT_DECODE_ERROR(L, "\"abc", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "\"ab\\", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "\"a\\nb", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "\"a\x01" "b\"", "control character in string at byte 2");
    EXPECT_DECODE_ERROR(L, "\"a\\n\nb\"", "control character in string at byte 4");
    EXPECT_DECODE_ERROR(L, "\"\\q\"", "invalid escape at byte 1");
    EXPECT_DECODE_ERROR(L, "\"\\x41\"", "invalid escape at byte 1");
    EXPECT_DECODE_ERROR(L, "tru", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "trux", "unexpected character 'x' at byte 3");
    EXPECT_DECODE_ERROR(L, "nul", "unexpected end of input");
    EXPECT_DECODE_ERROR(L, "False", "unexpected character 'F' at byte 0");
    EXPECT_DECODE_ERROR(L, "[true false]", "unexpected character 'f' at byte 6");
    EXPECT_DECODE_ERROR(L, "{} {}", "trailing characters at byte 3");
    EXPECT_DECODE_ERROR(L, "nullx", "trailing characters at byte 4");
    EXPECT_DECODE_ERROR_N(L, "[1]\0", 4, "trailing characters at byte 3");
    EXPECT_DECODE_ERROR_N(L, "\"a\0b\"", 5, "control character in string at byte 2");
    EXPECT_DECODE_ERROR(L, "\xef\xbb\xbf[]", "unexpected byte 0xef at byte 0");
    EXPECT_DECODE_ERROR(L, "[\x7f]", "unexpected byte 0x7f at byte 1");
    /* the binding: nil, err, code; misuse raises */
    EXPECT_LUA(L, "local v, err, code = codec.json_decode('[') "
                  "return v == nil and err == 'unexpected end of input' and code == 'ECODEC'");
    EXPECT_LUA(L, "return not pcall(codec.json_decode, {}) and not pcall(codec.json_decode)");
    EXPECT_LUA(L, "return not pcall(codec.json_encode)");
    /* length-delimited: bytes after len are not read */
    char err[256];
    EXPECT_EQ(dl_json_decode(L, "[1]garbage", 3, err, sizeof(err)), 0);
    lua_settop(L, 0);
    lua_close(L);
}

static char *nested(const char *open, const char *close, int depth, const char *mid)
{
    size_t lo = strlen(open), lc = strlen(close), lm = strlen(mid);
    char *s = malloc((lo + lc) * (size_t)depth + lm + 1);
    char *p = s;
    for (int i = 0; i < depth; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, mid, lm);
    p += lm;
    for (int i = 0; i < depth; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

DL_TEST(json_decode_deep_nesting)
{
    lua_State *L = new_state();
    char err[256];
    /* the decoders stop where the encoders do: what decodes can be written back */
    char *s = nested("[", "]", 128, "1");
    EXPECT_EQ(dl_json_decode(L, s, strlen(s), err, sizeof(err)), 0);
    EXPECT_EQ(lua_gettop(L), 1);
    dl_buf_t back = DL_BUF_INIT;
    EXPECT_EQ(dl_json_encode(L, 1, &back, err, sizeof(err)), 0);
    dl_buf_free(&back);
    lua_settop(L, 0);
    free(s);
    s = nested("[", "]", 129, "1");
    EXPECT_DECODE_ERROR(L, s, "nesting deeper than 128");
    free(s);
    s = nested("{\"k\":", "}", 128, "[]");
    EXPECT_DECODE_ERROR(L, s, "nesting deeper than 128");
    free(s);
    s = nested("{\"k\":", "}", 127, "[]");
    EXPECT_EQ(dl_json_decode(L, s, strlen(s), err, sizeof(err)), 0);
    lua_settop(L, 0);
    free(s);
    /* far too deep, unterminated: an error, not a crash */
    s = nested("[", "", 1000000, "");
    EXPECT_DECODE_ERROR(L, s, "nesting deeper than 128");
    free(s);
    lua_close(L);
}

/* Decodes text (len bytes) within lim; returns the code, with the stack
 * checked: one value on success, unchanged on failure. */
static int decode_limited(lua_State *L, const char *text, size_t len, size_t max_elements,
                          int max_depth, char *err, size_t errlen)
{
    dl_codec_limits_t lim = {max_elements, max_depth};
    int top = lua_gettop(L);
    err[0] = '\0';
    int rc = dl_json_decode_limited(L, text, len, &lim, err, errlen);
    if (lua_gettop(L) != top + (rc == 0))
        DL_FAIL_AT("stack %d after rc %d, was %d", lua_gettop(L), rc, top);
    lua_settop(L, top);
    return rc;
}

#define EXPECT_WITHIN(L, text, n) \
    EXPECT_EQ(decode_limited((L), (text), strlen(text), (n), 0, err, sizeof(err)), 0)

#define EXPECT_TOO_MANY(L, text, n)                                                            \
    do {                                                                                       \
        EXPECT_EQ(decode_limited((L), (text), strlen(text), (n), 0, err, sizeof(err)),         \
                  DL_ETOOBIG);                                                                 \
        char want_[64];                                                                        \
        snprintf(want_, sizeof(want_), "more than %d elements", (int)(n));                     \
        EXPECT_STR(err, want_);                                                                \
    } while (0)

/* Every value counts (the top one, array items, object values), keys do not;
 * N pass and N + 1 fail, whatever the values are. */
DL_TEST(json_decode_element_cap)
{
    lua_State *L = new_state();
    char err[256];
    EXPECT_WITHIN(L, "[1,2,3,4]", 5);
    EXPECT_TOO_MANY(L, "[1,2,3,4,5]", 5);
    EXPECT_WITHIN(L, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", 5);
    EXPECT_TOO_MANY(L, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}", 5);
    EXPECT_WITHIN(L, "[[[[[]]]]]", 5);
    EXPECT_TOO_MANY(L, "[[[[[[]]]]]]", 5);
    EXPECT_WITHIN(L, "[{},[],\"s\",null]", 5);
    EXPECT_TOO_MANY(L, "[{},[],\"s\",null,true]", 5);
    EXPECT_WITHIN(L, "\"only\"", 1);
    EXPECT_WITHIN(L, "[]", 1);
    EXPECT_TOO_MANY(L, "[0]", 1);
    /* 0: no limit */
    EXPECT_WITHIN(L, "[1,2,3,4,5,6,7,8,9]", 0);
    /* a malformed document over the cap: whichever comes first */
    EXPECT_TOO_MANY(L, "[1,2,3,4,5,6,x", 5);
    EXPECT_EQ(decode_limited(L, "[1,x,3,4,5,6]", 13, 5, 0, err, sizeof(err)), DL_ECODEC);

    /* the default cap at N and N + 1 */
    const size_t N = 100000;
    char *s = malloc(2 * N + 8);
    size_t n = 0;
    s[n++] = '[';
    for (size_t i = 0; i + 1 < N; i++) {
        s[n++] = '0';
        s[n++] = ',';
    }
    s[n - 1] = ']'; /* the top array and N - 1 zeros */
    EXPECT_EQ(decode_limited(L, s, n, N, 0, err, sizeof(err)), 0);
    memcpy(s + n - 1, ",0]", 3);
    EXPECT_EQ(decode_limited(L, s, n + 2, N, 0, err, sizeof(err)), DL_ETOOBIG);
    EXPECT_STR(err, "more than 100000 elements");
    free(s);
    lua_close(L);
}

/* 1 MB of the smallest values a JSON body can repeat: the cap stops each one
 * with the Lua heap grown by at most 10 MiB (about 72 bytes per table). */
DL_TEST(json_decode_element_cap_memory)
{
    static const char *items[] = {"[],", "{},", "0,", "\"\",", "[[]],"};
    const size_t body = 1 << 20;
    char *s = malloc(body + 8);
    char err[256];
    for (size_t k = 0; k < DL_ARRAY_SIZE(items); k++) {
        lua_State *L = new_state();
        size_t il = strlen(items[k]), n = 0;
        s[n++] = '[';
        while (n + il < body)
            for (size_t i = 0; i < il; i++)
                s[n++] = items[k][i];
        s[n - 1] = ']';
        lua_gc(L, LUA_GCCOLLECT, 0);
        size_t before = (size_t)lua_gc(L, LUA_GCCOUNT, 0);
        EXPECT_EQ(decode_limited(L, s, n, 100000, 0, err, sizeof(err)), DL_ETOOBIG);
        size_t grown_kb = (size_t)lua_gc(L, LUA_GCCOUNT, 0) - before;
        if (grown_kb > 10 * 1024)
            DL_FAIL_AT("%s x %zu: the Lua heap grew by %zu KiB", items[k], body / il, grown_kb);
        lua_close(L);
    }
    free(s);
}

/* Request bodies nest at most DL_CODEC_BODY_DEPTH deep, below the encoder's
 * limit: a body that decodes can be sent back inside a handler's tables. */
DL_TEST(json_decode_body_depth)
{
    lua_State *L = new_state();
    char err[256];
    EXPECT(DL_CODEC_BODY_DEPTH + 8 <= DL_CODEC_ENCODE_DEPTH);
    char *s = nested("[", "]", DL_CODEC_BODY_DEPTH, "1");
    dl_codec_limits_t lim = {0, DL_CODEC_BODY_DEPTH};
    EXPECT_EQ(dl_json_decode_limited(L, s, strlen(s), &lim, err, sizeof(err)), 0);
    lua_setglobal(L, "body");
    /* wrapped in 8 more tables, it still encodes */
    EXPECT_LUA(L, "local v = body for i = 1, 8 do v = {v} end "
                  "return codec.json_encode(v) ~= nil");
    free(s);
    s = nested("[", "]", DL_CODEC_BODY_DEPTH + 1, "1");
    EXPECT_EQ(decode_limited(L, s, strlen(s), 0, DL_CODEC_BODY_DEPTH, err, sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 100");
    free(s);
    s = nested("{\"k\":", "}", DL_CODEC_BODY_DEPTH + 1, "1");
    EXPECT_EQ(decode_limited(L, s, strlen(s), 0, DL_CODEC_BODY_DEPTH, err, sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 100");
    free(s);
    /* a megabyte of '[': an error, not a C stack overflow */
    s = nested("[", "", 1 << 20, "");
    EXPECT_EQ(decode_limited(L, s, strlen(s), 100000, DL_CODEC_BODY_DEPTH, err, sizeof(err)),
              DL_ECODEC);
    EXPECT_STR(err, "nesting deeper than 100");
    free(s);
    lua_close(L);
}

DL_TEST(json_duplicate_keys_and_whitespace)
{
    lua_State *L = new_state();
    EXPECT_LUA(L, "local t = codec.json_decode('{\"a\":1,\"a\":2}') return t.a == 2");
    EXPECT_ROUNDTRIP(L, " \t\n\r[ 1 ,\n{ \"a\" :\t2 } , \"x\" ] \r\n", "[1,{\"a\":2},\"x\"]");
    EXPECT_ROUNDTRIP(L, "{\"\":\"\"}", "{\"\":\"\"}");
    lua_close(L);
}

/* The kind the encoders give the table at idx (a pair already read counts
 * as an object); the stack is left as it was. */
static int kind_of(lua_State *L, int idx, size_t *n)
{
    int top = lua_gettop(L);
    dl_codec_push_markers(L);
    int kind = dl_codec_classify_stream(L, idx, top + 1, top + 2, n);
    lua_settop(L, top);
    return kind == DL_CODEC_OBJECT_PAIR ? DL_CODEC_OBJECT : kind;
}

DL_TEST(json_table_kind)
{
    lua_State *L = new_state();
    size_t n = 99;
    EXPECT_EQ(luaL_dostring(L, "return {}, {1, 2, 3}, {a = 1, b = 2}, {[1] = 1, [3] = 3}, "
                     "codec.array({1, 2}), codec.object({1, 2}), {[1.5] = 1}, {[2] = 1}"),
              0);
    EXPECT_EQ(lua_gettop(L), 8);
    EXPECT_EQ(kind_of(L, 1, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(kind_of(L, 2, &n), DL_CODEC_ARRAY);
    EXPECT_EQ(n, 3);
    EXPECT_EQ(kind_of(L, 3, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(kind_of(L, 4, &n), DL_CODEC_OBJECT); /* a hole: not 1..n */
    EXPECT_EQ(kind_of(L, 5, &n), DL_CODEC_ARRAY);
    EXPECT_EQ(n, 2);
    EXPECT_EQ(kind_of(L, 6, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(kind_of(L, 7, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(kind_of(L, 8, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(lua_gettop(L), 8);
    lua_close(L);
}

DL_TEST(json_classify_stream)
{
    lua_State *L = new_state();
    size_t n = 99;
    EXPECT_EQ(luaL_dostring(L, "return {}, {a = 1}, {1, 2}, {[1] = 1, x = 2}, codec.object({1})"),
              0);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_ARRAY_MT);
    lua_getfield(L, LUA_REGISTRYINDEX, DL_CODEC_OBJECT_MT);
    EXPECT_EQ(dl_codec_classify_stream(L, 1, 6, 7, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(lua_gettop(L), 7);
    EXPECT_EQ(dl_codec_classify_stream(L, 2, 6, 7, &n), DL_CODEC_OBJECT_PAIR);
    EXPECT_EQ(lua_gettop(L), 9);
    EXPECT_STR(lua_tostring(L, 8), "a");
    EXPECT_EQ(lua_tonumber(L, 9), 1);
    lua_settop(L, 7);
    EXPECT_EQ(dl_codec_classify_stream(L, 3, 6, 7, &n), DL_CODEC_ARRAY);
    EXPECT_EQ(n, 2);
    EXPECT_EQ(lua_gettop(L), 7);
    int kind = dl_codec_classify_stream(L, 4, 6, 7, &n);
    EXPECT(kind == DL_CODEC_OBJECT || kind == DL_CODEC_OBJECT_PAIR);
    lua_settop(L, 7);
    EXPECT_EQ(dl_codec_classify_stream(L, 5, 6, 7, &n), DL_CODEC_OBJECT);
    EXPECT_EQ(lua_gettop(L), 7);
    lua_close(L);
}

DL_TEST(json_binding_markers)
{
    lua_State *L = new_state();
    EXPECT_LUA(L, "local t = {1} return codec.array(t) == t and codec.object(t) == t");
    EXPECT_LUA(L, "return not pcall(codec.array, 5) and not pcall(codec.object, 'x')");
    EXPECT_LUA(L, "return type(codec.null) == 'userdata' "
                  "and codec.null == codec.json_decode('null')");
    lua_close(L);
}

/* Deterministic mutations of valid documents: every result must be either a
 * value or an error, with the stack intact. Sanitizer builds check memory. */
DL_TEST(json_decode_mutations)
{
    static const char *seeds[] = {
        "{\"a\":[1,2.5e-3,-0,{\"b\":null}],\"c\":\"x\\u00e9\\ud83d\\ude00\\n\",\"d\":true}",
        "[[],{},[{}],\"\\\"\\\\\\/\",false,12345678901234567890,1E+2]",
    };
    lua_State *L = new_state();
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    char buf[256], err[256];
    int ok = 0, bad = 0;
    for (size_t k = 0; k < DL_ARRAY_SIZE(seeds); k++) {
        size_t n0 = strlen(seeds[k]);
        for (int iter = 0; iter < 20000; iter++) {
            size_t n = n0;
            memcpy(buf, seeds[k], n);
            int muts = 1 + (int)(rng % 4);
            for (int m = 0; m < muts; m++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t pos = (size_t)(rng >> 33) % n;
                switch ((rng >> 20) % 4) {
                case 0:
                    buf[pos] = (char)(rng >> 40);
                    break;
                case 1:
                    n = pos + 1; /* truncate */
                    break;
                case 2:
                    buf[pos] = "[]{}\",:\\u0e-+."[(rng >> 44) % 15];
                    break;
                default:
                    buf[pos] ^= (char)(1 << ((rng >> 50) % 8));
                    break;
                }
            }
            int rc = dl_json_decode(L, buf, n, err, sizeof(err));
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
    }
    EXPECT(ok > 0);
    EXPECT(bad > 0);
    lua_close(L);
}
