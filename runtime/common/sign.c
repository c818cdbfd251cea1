/*
 * sign.c - SipHash-2-4 (Aumasson and Bernstein's reference algorithm) and
 * the process signing key used for opaque, tamper-checked cursors.
 */
#include "common/sign.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/internal.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                           \
    do {                                                                   \
        v0 += v1;                                                          \
        v1 = ROTL(v1, 13);                                                 \
        v1 ^= v0;                                                          \
        v0 = ROTL(v0, 32);                                                 \
        v2 += v3;                                                          \
        v3 = ROTL(v3, 16);                                                 \
        v3 ^= v2;                                                          \
        v0 += v3;                                                          \
        v3 = ROTL(v3, 21);                                                 \
        v3 ^= v0;                                                          \
        v2 += v1;                                                          \
        v1 = ROTL(v1, 17);                                                 \
        v1 ^= v2;                                                          \
        v2 = ROTL(v2, 32);                                                 \
    } while (0)

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only (x86-64, arm64) */
    return v;
}

uint64_t dl_siphash(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = load64(key), k1 = load64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t end = len - (len % 8);
    for (size_t i = 0; i < end; i += 8) {
        uint64_t m = load64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)in[end + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint8_t sign_key[32];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void key_init(void)
{
    const char *secret = getenv("DEVLOOP_SECRET");
    if (secret && *secret) {
        /* stretch the secret into two independent 16-byte keys */
        static const uint8_t zero[16] = {0};
        for (int i = 0; i < 4; i++) {
            uint8_t k[16];
            memcpy(k, zero, 16);
            k[0] = (uint8_t)i;
            uint64_t h = dl_siphash(k, secret, strlen(secret));
            memcpy(sign_key + 8 * i, &h, 8);
        }
        return;
    }
    if (getrandom(sign_key, sizeof(sign_key), 0) != (ssize_t)sizeof(sign_key)) {
        for (size_t i = 0; i < sizeof(sign_key); i++)
            sign_key[i] = (uint8_t)(rand() ^ (int)i);
    }
}

void dl_runtime_sign(const char *s, size_t n, char out[33])
{
    pthread_once(&key_once, key_init);
    uint64_t a = dl_siphash(sign_key, s, n), b = dl_siphash(sign_key + 16, s, n);
    unsigned char be[16]; /* a then b, most significant byte first */
    for (int i = 0; i < 8; i++) {
        be[i] = (unsigned char)(a >> (56 - 8 * i));
        be[8 + i] = (unsigned char)(b >> (56 - 8 * i));
    }
    dl_hex(be, sizeof be, out);
    out[32] = '\0';
}
