/*
 * fuzz_msgpack.c - libFuzzer harness for runtime/common/codec_msgpack.c: any input
 * is decoded; a rejected one must leave the stack as it was and say why; an
 * accepted one is encoded, and the bytes decoded again must give the same
 * value (compared as the encoders see values, so the map {1: x} and the
 * array [x] it becomes are equal).
 */
#include "common/buf.h"
#include "common/codec_json.h"
#include "common/codec_msgpack.h"
#include "devloop.h"
#include "fuzz.h"
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = dl_fuzz_lua_state();
    char err[256] = "";
    int rc = dl_msgpack_decode(L, (const char *)data, size, err, sizeof(err));
    if (!dl_fuzz_decoded(L, rc, err))
        return 0;

    dl_buf_t m1 = DL_BUF_INIT;
    char why[256] = "";
    rc = dl_msgpack_encode(L, 1, &m1, err, sizeof(err));
    if (rc != 0) {
        DL_FUZZ_CHECK(0, "a decoded value does not encode: %s", err);
        goto out;
    }
    DL_FUZZ_CHECK(lua_gettop(L) == 1, "encode changed the stack");
    rc = dl_msgpack_decode(L, m1.data, m1.len, err, sizeof(err));
    DL_FUZZ_CHECK(rc == 0, "the encoder's output does not decode: %s", err);
    DL_FUZZ_CHECK(dl_fuzz_lua_equal(L, 1, 2, why, sizeof(why), 0),
                  "decode(encode(v)) differs from v: %s", why);
out:
    dl_buf_free(&m1);
    lua_settop(L, 0);
    return 0;
}
