/*
 * fuzz_json.c - libFuzzer harness for runtime/common/codec_json.c. Any input is
 * decoded; a rejected input must leave the stack as it was and say why. An
 * accepted one is encoded, and the text decoded again must give the same
 * value; the value must also survive MessagePack (encode, decode) unchanged,
 * since a handler may answer a JSON request in either format.
 */
#include "common/buf.h"
#include "common/codec_json.h"
#include "common/json_str.h"
#include "common/codec_msgpack.h"
#include "devloop.h"
#include "fuzz.h"
#include "fuzz_lua.h"

/* 1 when p[0..n) is well-formed UTF-8 */
static int utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p, *end = s + n;
    while (s < end) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        int k = dl_utf8_check(s, end);
        if (k < 0)
            return 0;
        s += k;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = dl_fuzz_lua_state();
    char err[256] = "";
    int rc = dl_json_decode(L, (const char *)data, size, err, sizeof(err));
    if (!dl_fuzz_decoded(L, rc, err))
        return 0;

    dl_buf_t t1 = DL_BUF_INIT, m1 = DL_BUF_INIT;
    char why[256] = "";
    rc = dl_json_encode(L, 1, &t1, err, sizeof(err));
    if (rc != 0) {
        DL_FUZZ_CHECK(0, "a decoded value does not encode: %s", err);
        goto out;
    }
    DL_FUZZ_CHECK(lua_gettop(L) == 1, "encode changed the stack");
    rc = dl_json_decode(L, t1.data, t1.len, err, sizeof(err));
    DL_FUZZ_CHECK(rc == 0, "the encoder's output does not decode: %s\n  text: %.*s", err,
                  (int)(t1.len < 300 ? t1.len : 300), t1.data);
    /* JSON output is always UTF-8: strings that were not come back with
     * U+FFFD, so the round trip is exact only from the first output on */
    DL_FUZZ_CHECK(utf8_valid(t1.data, t1.len), "the encoder wrote invalid UTF-8: %.*s",
                  (int)(t1.len < 300 ? t1.len : 300), t1.data);
    if (!dl_fuzz_lua_equal(L, 1, 2, why, sizeof(why), 0)) {
        dl_buf_t t2 = DL_BUF_INIT;
        rc = dl_json_encode(L, 2, &t2, err, sizeof(err));
        DL_FUZZ_CHECK(rc == 0, "a decoded output does not encode: %s", err);
        rc = dl_json_decode(L, t2.data, t2.len, err, sizeof(err));
        dl_buf_free(&t2);
        DL_FUZZ_CHECK(rc == 0 && dl_fuzz_lua_equal(L, 2, 3, why, sizeof(why), 0),
                      "decode(encode(v)) is not stable after the first output: %s\n  text: %.*s",
                      why, (int)(t1.len < 300 ? t1.len : 300), t1.data);
    }
    lua_settop(L, 1);

    /* the same value through MessagePack */
    rc = dl_msgpack_encode(L, 1, &m1, err, sizeof(err));
    DL_FUZZ_CHECK(rc == 0, "a JSON value does not encode as MessagePack: %s", err);
    rc = dl_msgpack_decode(L, m1.data, m1.len, err, sizeof(err));
    DL_FUZZ_CHECK(rc == 0, "MessagePack of a JSON value does not decode: %s", err);
    DL_FUZZ_CHECK(dl_fuzz_lua_equal(L, 1, 2, why, sizeof(why), 0),
                  "a JSON value differs after MessagePack: %s", why);
out:
    dl_buf_free(&t1);
    dl_buf_free(&m1);
    lua_settop(L, 0);
    return 0;
}
