/*
 * test_json_str.c - unit tests of runtime/common/json_str.c, the one JSON
 * string writer: the escape of every control character, what stays as is
 * ('/', DEL, well-formed UTF-8), U+FFFD for ill-formed UTF-8, and
 * dl_utf8_put() at each length boundary.
 */
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/internal.h"
#include "common/json_str.h"
#include "unit.h"

/* s (n bytes) through dl_json_escape() into out, terminated. */
static const char *esc(char *out, const char *s, size_t n)
{
    char *e = dl_json_escape(out, s, n);
    *e = '\0';
    return out;
}

DL_TEST(json_str_every_control_char)
{
    char out[64], want[16];
    for (int c = 0; c < 0x20; c++) {
        char in[1] = {(char)c};
        switch (c) {
        case '\b': strcpy(want, "\\b"); break;
        case '\t': strcpy(want, "\\t"); break;
        case '\n': strcpy(want, "\\n"); break;
        case '\f': strcpy(want, "\\f"); break;
        case '\r': strcpy(want, "\\r"); break;
        default: snprintf(want, sizeof want, "\\u%04x", c); break;
        }
        EXPECT_STR(esc(out, in, 1), want);
    }
}

DL_TEST(json_str_plain_and_quoted)
{
    char out[256];
    EXPECT_STR(esc(out, "\"", 1), "\\\"");
    EXPECT_STR(esc(out, "\\", 1), "\\\\");
    /* '/' and DEL are not escaped */
    EXPECT_STR(esc(out, "a/b\x7f", 4), "a/b\x7f");
    EXPECT_STR(esc(out, "", 0), "");
    /* well-formed UTF-8 as is: 2, 3 and 4 bytes, U+2028 too */
    const char *u = "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8";
    EXPECT_STR(esc(out, u, strlen(u)), u);
    /* a long run crossing chunk boundaries, with an escape in the middle */
    EXPECT_STR(esc(out, "0123456789abcdef0123\n456789abcdef", 33),
               "0123456789abcdef0123\\n456789abcdef");
}

DL_TEST(json_str_invalid_utf8)
{
    char out[256];
#define FFFD "\xef\xbf\xbd"
    EXPECT_STR(esc(out, "\x80", 1), FFFD);                       /* stray continuation */
    EXPECT_STR(esc(out, "\xc0\xaf", 2), FFFD FFFD);              /* C0: lead never valid */
    EXPECT_STR(esc(out, "\xe0\x80\xaf", 3), FFFD FFFD FFFD);     /* overlong 3-byte */
    EXPECT_STR(esc(out, "\xed\xa0\x80", 3), FFFD FFFD FFFD);     /* surrogate */
    EXPECT_STR(esc(out, "\xf4\x90\x80\x80", 4), FFFD FFFD FFFD FFFD); /* past U+10FFFF */
    EXPECT_STR(esc(out, "\xe2\x82", 2), FFFD);                   /* truncated: one per subpart */
    EXPECT_STR(esc(out, "a\xf0\x9f\x98", 4), "a" FFFD);
    EXPECT_STR(esc(out, "\xff" "x", 2), FFFD "x");
#undef FFFD
}

DL_TEST(json_str_put_string_quotes)
{
    dl_buf_t b;
    dl_buf_init(&b);
    EXPECT_EQ(dl_json_put_string(&b, "a\"b\x01", 4), 0);
    EXPECT_MEM(b.data, b.len, "\"a\\\"b\\u0001\"", 12);
    dl_buf_free(&b);
}

DL_TEST(json_str_utf8_put)
{
    char o[4];
    EXPECT_EQ(dl_utf8_put(o, 0x41), 1);
    EXPECT_EQ((unsigned char)o[0], 0x41);
    EXPECT_EQ(dl_utf8_put(o, 0x7f), 1);
    EXPECT_EQ(dl_utf8_put(o, 0x80), 2);
    EXPECT_MEM(o, 2, "\xc2\x80", 2);
    EXPECT_EQ(dl_utf8_put(o, 0x7ff), 2);
    EXPECT_MEM(o, 2, "\xdf\xbf", 2);
    EXPECT_EQ(dl_utf8_put(o, 0x800), 3);
    EXPECT_MEM(o, 3, "\xe0\xa0\x80", 3);
    EXPECT_EQ(dl_utf8_put(o, 0xfffd), 3);
    EXPECT_MEM(o, 3, "\xef\xbf\xbd", 3);
    EXPECT_EQ(dl_utf8_put(o, 0x10000), 4);
    EXPECT_MEM(o, 4, "\xf0\x90\x80\x80", 4);
    EXPECT_EQ(dl_utf8_put(o, 0x10ffff), 4);
    EXPECT_MEM(o, 4, "\xf4\x8f\xbf\xbf", 4);
}

DL_TEST(common_hex_and_err_format)
{
    char h[8];
    unsigned char raw[3] = {0x00, 0xab, 0xff}, back[3];
    dl_hex(raw, 3, h);
    EXPECT_MEM(h, 6, "00abff", 6);
    EXPECT_EQ(dl_unhex("00ABff", 3, back), 0);
    EXPECT_MEM(back, 3, raw, 3);
    EXPECT_EQ(dl_unhex("0g", 1, back), -1);
    unsigned cp = 0;
    EXPECT_EQ(dl_unhex4("20aC", &cp), 0);
    EXPECT_EQ(cp, 0x20ac);
    EXPECT_EQ(dl_unhex4("20a-", &cp), -1);
    EXPECT_EQ(dl_hex_digit('F'), 15);
    EXPECT_EQ(dl_hex_digit('g'), -1);

    char err[8];
    EXPECT_EQ(dl_err_format(err, sizeof err, DL_EINVAL, "%s: %s", "what", "why"), DL_EINVAL);
    EXPECT_STR(err, "what: w"); /* truncated, terminated */
    EXPECT_EQ(dl_err_format(NULL, 0, -5, "x"), -5);
}

DL_TEST(json_str_read_u)
{
    unsigned cp = 0;
    const char *s = "\\u00e9";
    EXPECT_EQ(dl_json_read_u(s, s + 6, &cp), 6);
    EXPECT_EQ(cp, 0xe9);
    s = "\\uD83D\\uDE00!"; /* a pair: U+1F600 */
    EXPECT_EQ(dl_json_read_u(s, s + 13, &cp), 12);
    EXPECT_EQ(cp, 0x1f600);
    EXPECT_EQ(dl_json_read_u(s, s + 11, &cp), 6); /* the low half cut off */
    EXPECT_EQ(cp, 0xd83d);
    s = "\\ud83d\\u0041"; /* a high surrogate, then no low one */
    EXPECT_EQ(dl_json_read_u(s, s + 12, &cp), 6);
    EXPECT_EQ(cp, 0xd83d);
    s = "\\ude00"; /* a lone low surrogate, as itself */
    EXPECT_EQ(dl_json_read_u(s, s + 6, &cp), 6);
    EXPECT_EQ(cp, 0xde00);
    s = "\\u12g4";
    EXPECT_EQ(dl_json_read_u(s, s + 6, &cp), -1);
    s = "\\u123";
    EXPECT_EQ(dl_json_read_u(s, s + 5, &cp), -1);
}
