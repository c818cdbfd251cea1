/*
 * dl_crypto.c - the Lua module devloop.crypto over OpenSSL's libcrypto:
 * sha256(s) digests a string, hex(s)/unhex(s) convert to and from hex,
 * equal(a, b) compares two strings in time that depends only on their lengths (bearer tokens: compare
 * digests, which have one length), random(n) returns n bytes from the
 * kernel-seeded generator. Misuse (a non-string) raises.
 */
#include <lauxlib.h>
#include <lua.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define SHA256_LEN 32

static void sha256(const char *s, size_t len, unsigned char *md)
{
    unsigned int n = 0;
    EVP_Digest(s, len, md, &n, EVP_sha256(), NULL);
}

#include "bindings/dl_bindings.h"
#include "common/internal.h"

static int l_crypto_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    sha256(s, len, md);
    lua_pushlstring(L, (const char *)md, SHA256_LEN);
    return 1;
}

static int l_crypto_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i += LUAL_BUFFERSIZE / 2) {
        size_t n = DL_MIN(len - i, (size_t)LUAL_BUFFERSIZE / 2);
        dl_hex((const unsigned char *)s + i, n, luaL_prepbuffer(&b));
        luaL_addsize(&b, 2 * n);
    }
    luaL_pushresult(&b);
    return 1;
}

/* unhex(s): the bytes, or nil for an odd length or a non-hex digit */
static int l_crypto_unhex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (len % 2 != 0) {
        lua_pushnil(L);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len / 2; i += LUAL_BUFFERSIZE) {
        size_t n = DL_MIN(len / 2 - i, (size_t)LUAL_BUFFERSIZE);
        if (dl_unhex(s + 2 * i, n, (unsigned char *)luaL_prepbuffer(&b)) != 0) {
            lua_pushnil(L);
            return 1;
        }
        luaL_addsize(&b, n);
    }
    luaL_pushresult(&b);
    return 1;
}

static int l_crypto_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

static int l_crypto_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 4096, 1, "0 to 4096 bytes");
    unsigned char buf[4096];
    if (RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "crypto.random: the generator failed");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

static const luaL_Reg crypto_funcs[] = {
    {"sha256", l_crypto_sha256},
    {"hex", l_crypto_hex},
    {"unhex", l_crypto_unhex},
    {"equal", l_crypto_equal},
    {"random", l_crypto_random},
    {NULL, NULL},
};

int luaopen_devloop_crypto(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(crypto_funcs));
    luaL_register(L, NULL, crypto_funcs);
    return 1;
}
