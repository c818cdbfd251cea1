/*
 * test_sign.c - SipHash-2-4 against the reference vectors and the cursor
 * signature's properties.
 */
#include <stdlib.h>
#include <string.h>

#include "common/sign.h"
#include "unit.h"

DL_TEST(siphash_reference_vectors)
{
    /* from the SipHash paper: key 00..0f, messages 00..(n-1) */
    static const uint64_t expect[] = {0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL,
                                      0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL};
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (int n = 0; n < 4; n++) {
        uint64_t h = dl_siphash(key, msg, (size_t)n);
        if (h != expect[n])
            DL_FAIL_AT("siphash of %d bytes: %016llx want %016llx", n, (unsigned long long)h,
                       (unsigned long long)expect[n]);
    }
    EXPECT(dl_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL);
}

DL_TEST(sign_is_stable_and_sensitive)
{
    setenv("DEVLOOP_SECRET", "unit-test-secret", 1);
    char a[33], b[33], c[33];
    dl_runtime_sign("cursor body", 11, a);
    dl_runtime_sign("cursor body", 11, b);
    dl_runtime_sign("cursor bodz", 11, c);
    EXPECT_STR(a, b);
    EXPECT(strcmp(a, c) != 0);
    EXPECT_EQ(strlen(a), 32);
}
