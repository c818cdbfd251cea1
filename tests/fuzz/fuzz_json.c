/*
 * fuzz_json.c - libFuzzer harness for runtime/codec_json.c. Any input is
 * decoded; a rejected input must leave the stack as it was and say why. An
 * accepted one is encoded, and the text decoded again must give the same
 * value; the value must also survive MessagePack (encode, decode) unchanged,
 * since a handler may answer a JSON request in either format.
 */
#include "buf.h"
#include "codec_json.h"
#include "codec_msgpack.h"
#include "devloop.h"
#include "fuzz.h"
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = dl_fuzz_lua_state();
    char err[256] = "";
    int rc = dl_json_decode(L, (const char *)data, size, err, sizeof(err));
    if (rc != 0) {
        DL_FUZZ_CHECK(lua_gettop(L) == 0, "a failed decode left %d values", lua_gettop(L));
        DL_FUZZ_CHECK(rc == DL_ECODEC || rc == DL_ENOMEM, "decode returned %d", rc);
        DL_FUZZ_CHECK(err[0] != '\0', "a failed decode gave no message");
        return 0;
    }
    DL_FUZZ_CHECK(lua_gettop(L) == 1, "decode pushed %d values", lua_gettop(L));

    dl_buf_t t1 = DL_BUF_INIT, m1 = DL_BUF_INIT;
    char why[256] = "";
    rc = dl_json_encode(L, 1, &t1, err, sizeof(err));
    if (rc != 0) {
        /* reported, not ours to fix: see tests/fuzz/known-findings.md */
        int skip =
            (dl_fuzz_lua_depth(L, 1, 0) > DL_CODEC_ENCODE_DEPTH &&
             dl_fuzz_known("codec-depth", "decoded nesting deeper than the encoder takes")) ||
            (dl_fuzz_lua_nonfinite(L, 1, 0) &&
             dl_fuzz_known("json-nonfinite", "a number like 1e400 decodes to inf"));
        DL_FUZZ_CHECK(skip, "a decoded value does not encode: %s", err);
        goto out;
    }
    DL_FUZZ_CHECK(lua_gettop(L) == 1, "encode changed the stack");
    rc = dl_json_decode(L, t1.data, t1.len, err, sizeof(err));
    DL_FUZZ_CHECK(rc == 0, "the encoder's output does not decode: %s\n  text: %.*s", err,
                  (int)(t1.len < 300 ? t1.len : 300), t1.data);
    DL_FUZZ_CHECK(dl_fuzz_lua_equal(L, 1, 2, why, sizeof(why), 0),
                  "decode(encode(v)) differs from v: %s\n  text: %.*s", why,
                  (int)(t1.len < 300 ? t1.len : 300), t1.data);
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
