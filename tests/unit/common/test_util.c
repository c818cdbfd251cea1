/*
 * test_util.c - runtime/common/util.c: dl_strncasecmp_eq against a byte by
 * byte reference, for every length up to 40 and a difference (of case or
 * of letter, in ASCII and beyond) at every position, across the eight-byte
 * blocks it compares whole.
 */
#include <string.h>

#include "common/internal.h"
#include "unit.h"

static int reference(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (dl_tolower((unsigned char)a[i]) != dl_tolower((unsigned char)b[i]))
            return 0;
    return 1;
}

DL_TEST(util_strncasecmp_eq)
{
    char a[41] = {0}, b[41] = {0};
    const char flips[][2] = {{'a', 'A'}, {'z', 'Z'}, {'a', 'b'}, {'@', '`'}, {'[', '{'},
                             {'\xc3', '\xe3'}, {'0', 'p'}, {'-', '-'}};
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            a[i] = (char)('a' + i % 26);
        memcpy(b, a, n);
        EXPECT_EQ(dl_strncasecmp_eq(a, n, b, n), 1);
        if (n > 0)
            EXPECT_EQ(dl_strncasecmp_eq(a, n, b, n - 1), 0);
        for (size_t pos = 0; pos < n; pos++) {
            for (size_t f = 0; f < sizeof(flips) / sizeof(flips[0]); f++) {
                memcpy(b, a, n);
                a[pos] = flips[f][0];
                b[pos] = flips[f][1];
                EXPECT_EQ(dl_strncasecmp_eq(a, n, b, n), reference(a, b, n));
                a[pos] = (char)('a' + pos % 26);
            }
        }
    }
    EXPECT_EQ(dl_strncasecmp_eq("Access-Control-Request-Method", 29,
                                "access-control-request-method", 29), 1);
    EXPECT_EQ(dl_strncasecmp_eq("Access-Control-Request-Method", 29,
                                "access-control-request-metho_", 29), 0);
}
