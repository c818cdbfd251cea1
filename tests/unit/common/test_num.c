/*
 * test_num.c - unit tests of runtime/common/num.c, the one number
 * formatter: integers, -0, the 2^53 boundary, 1e21, 5e-324, shortest
 * round trip, NaN and infinities refused.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/num.h"
#include "unit.h"

static const char *fmt_d(char *p, double d)
{
    size_t n = dl_num_format_double(d, p);
    p[n] = '\0';
    return p;
}

static const char *fmt_i(char *p, int64_t v)
{
    size_t n = dl_num_format_i64(v, p);
    p[n] = '\0';
    return p;
}

DL_TEST(num_format_i64)
{
    char p[DL_NUM_ROOM];
    EXPECT_STR(fmt_i(p, 0), "0");
    EXPECT_STR(fmt_i(p, 7), "7");
    EXPECT_STR(fmt_i(p, 10), "10");
    EXPECT_STR(fmt_i(p, -99), "-99");
    EXPECT_STR(fmt_i(p, 1234567), "1234567");
    EXPECT_STR(fmt_i(p, INT64_MAX), "9223372036854775807");
    EXPECT_STR(fmt_i(p, INT64_MIN), "-9223372036854775808");
}

DL_TEST(num_format_double_integers)
{
    char p[DL_NUM_ROOM];
    EXPECT_STR(fmt_d(p, 0.0), "0");
    EXPECT_STR(fmt_d(p, -0.0), "0");
    EXPECT_STR(fmt_d(p, 42.0), "42");
    EXPECT_STR(fmt_d(p, -3.0), "-3");
    EXPECT_STR(fmt_d(p, 1e15), "1000000000000000");
    EXPECT_STR(fmt_d(p, 9007199254740991.0), "9007199254740991");
    /* 2^53 and beyond: the %g path, still digits while 16 of them read back */
    EXPECT_STR(fmt_d(p, 9007199254740992.0), "9007199254740992");
    EXPECT_STR(fmt_d(p, 1e21), "1e+21");
    EXPECT_STR(fmt_d(p, -1e21), "-1e+21");
}

DL_TEST(num_format_double_fractions)
{
    char p[DL_NUM_ROOM];
    EXPECT_STR(fmt_d(p, 0.1), "0.1");
    EXPECT_STR(fmt_d(p, 0.5), "0.5");
    EXPECT_STR(fmt_d(p, -2.25), "-2.25");
    EXPECT_STR(fmt_d(p, 0.1 + 0.2), "0.30000000000000004");
    EXPECT_STR(fmt_d(p, 1.0 / 3.0), "0.3333333333333333");
    EXPECT_STR(fmt_d(p, 0.7999999999999999), "0.7999999999999999");
    EXPECT_STR(fmt_d(p, 1e-7), "1e-07");
    EXPECT_STR(fmt_d(p, 1.7976931348623157e308), "1.7976931348623157e+308");
    /* the smallest subnormal: the first precision from 14 that reads back */
    EXPECT_STR(fmt_d(p, 5e-324), "4.9406564584125e-324");
    /* every output reads back as the same double */
    double samples[] = {0.1, 1.0 / 3.0, 5e-324, 2.2250738585072014e-308, 123456.789, -1e-300};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        EXPECT(strtod(fmt_d(p, samples[i]), NULL) == samples[i]);
}

DL_TEST(num_format_double_refuses_nan_and_inf)
{
    char p[DL_NUM_ROOM] = "untouched";
    EXPECT_EQ(dl_num_format_double(NAN, p), 0);
    EXPECT_EQ(dl_num_format_double(INFINITY, p), 0);
    EXPECT_EQ(dl_num_format_double(-INFINITY, p), 0);
    EXPECT_STR(p, "untouched");
}
