/*
 * test_env_value.c - runtime/common/env_value.c through env_value.h: every
 * kind (count, size, ms, s, bool) with good values, units in any case, the
 * range edges, and the values it must refuse (sign, spaces, hex, exponent,
 * fractions, a unit of another kind, overflow), each refusal naming the
 * variable and its value as tests/e2e/test_config_errors.py expects at
 * start-up, and leaving the default in *out.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_value.h"
#include "common/internal.h"
#include "unit.h"

#define VAR "DL_UNIT_ENV_VALUE"
#define DEF 777

/* VAR=value (NULL: unset) read as kind in min..max: the status, *out and err. */
static int read_as(const char *value, dl_env_kind_t kind, uint64_t min, uint64_t max,
                   uint64_t *out, char *err, size_t errlen)
{
    if (value != NULL)
        setenv(VAR, value, 1);
    else
        unsetenv(VAR);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return dl_env_value(VAR, kind, DEF, min, max, out, err, errlen);
}

static void expect_ok(const char *value, dl_env_kind_t kind, uint64_t want, int line)
{
    uint64_t out = 12345;
    char err[256];
    int rc = read_as(value, kind, 0, UINT64_MAX, &out, err, sizeof(err));
    if (rc != 0 || out != want)
        DL_FAIL_AT("line %d: %s=%s (kind %d): rc %d, %llu, want %llu (%s)", line, VAR,
                   value ? value : "(unset)", (int)kind, rc, (unsigned long long)out,
                   (unsigned long long)want, err);
}

/* A refusal: DL_EINVAL, the default kept, and a message that starts with
 * "NAME=value: expected " and holds `what`. */
static void expect_bad(const char *value, dl_env_kind_t kind, uint64_t min, uint64_t max,
                       const char *what, int line)
{
    uint64_t out = 12345;
    char err[256], head[128];
    int rc = read_as(value, kind, min, max, &out, err, sizeof(err));
    snprintf(head, sizeof(head), "%s=%s: expected ", VAR, value);
    if (rc != DL_EINVAL || out != DEF)
        DL_FAIL_AT("line %d: %s=%s (kind %d): rc %d, out %llu; want a refusal", line, VAR, value,
                   (int)kind, rc, (unsigned long long)out);
    else if (strncmp(err, head, strlen(head)) != 0 || strstr(err, what) == NULL)
        DL_FAIL_AT("line %d: %s=%s: message \"%s\" lacks \"%s...%s\"", line, VAR, value, err,
                   head, what);
}

#define OK(v, kind, want) expect_ok((v), (kind), (want), __LINE__)
#define BAD(v, kind, what) expect_bad((v), (kind), 0, UINT64_MAX, (what), __LINE__)
#define BAD_IN(v, kind, min, max, what) expect_bad((v), (kind), (min), (max), (what), __LINE__)

DL_TEST(env_value_unset_or_empty_is_the_default)
{
    for (int kind = DL_ENV_COUNT; kind <= DL_ENV_BOOL; kind++) {
        OK(NULL, (dl_env_kind_t)kind, DEF);
        OK("", (dl_env_kind_t)kind, DEF);
    }
    /* the default is not range-checked: it is the caller's */
    uint64_t out;
    EXPECT_EQ(read_as(NULL, DL_ENV_COUNT, 1000, 2000, &out, NULL, 0), 0);
    EXPECT_EQ(out, DEF);
    unsetenv(VAR);
}

DL_TEST(env_value_count)
{
    OK("0", DL_ENV_COUNT, 0);
    OK("42", DL_ENV_COUNT, 42);
    OK("007", DL_ENV_COUNT, 7);
    OK("1000000000000", DL_ENV_COUNT, 1000000000000ULL);
    const char *what = "a whole number";
    BAD("-1", DL_ENV_COUNT, what);
    BAD("+1", DL_ENV_COUNT, what);
    BAD(" 1", DL_ENV_COUNT, what);
    BAD("1 ", DL_ENV_COUNT, what);
    BAD("0x10", DL_ENV_COUNT, what);
    BAD("1e3", DL_ENV_COUNT, what);
    BAD("1.0", DL_ENV_COUNT, what);
    BAD("1k", DL_ENV_COUNT, what); /* no units on a count */
    BAD("10s", DL_ENV_COUNT, what);
    BAD("abc", DL_ENV_COUNT, what);
    BAD("x", DL_ENV_COUNT, what);
    /* past 2^64: refused, never wrapped */
    BAD("18446744073709551616", DL_ENV_COUNT, what);
    BAD("99999999999999999999999999999", DL_ENV_COUNT, what);
    unsetenv(VAR);
}

DL_TEST(env_value_range_edges)
{
    uint64_t out;
    char err[256];
    /* GZIP_LEVEL's range: both ends in, one past either out */
    EXPECT_EQ(read_as("1", DL_ENV_COUNT, 1, 9, &out, err, sizeof(err)), 0);
    EXPECT_EQ(out, 1);
    EXPECT_EQ(read_as("9", DL_ENV_COUNT, 1, 9, &out, err, sizeof(err)), 0);
    EXPECT_EQ(out, 9);
    BAD_IN("0", DL_ENV_COUNT, 1, 9, "a whole number from 1 to 9");
    BAD_IN("42", DL_ENV_COUNT, 1, 9, "a whole number from 1 to 9");
    /* PORT's */
    BAD_IN("99999", DL_ENV_COUNT, 0, 65535, "from 0 to 65535");
    /* the range applies after the unit */
    EXPECT_EQ(read_as("1k", DL_ENV_SIZE, 0, 1024, &out, err, sizeof(err)), 0);
    EXPECT_EQ(out, 1024);
    BAD_IN("2k", DL_ENV_SIZE, 0, 1024, "a size (bytes, or 512k, 2MB, 1GiB) from 0 to 1024");
    BAD_IN("2m", DL_ENV_MS, 1, 60000, "a duration (ms, or 500ms, 10s, 2m) from 1 to 60000");
    BAD_IN("0ms", DL_ENV_MS, 1, 60000, "from 1 to 60000");
    BAD_IN("2h", DL_ENV_S, 1, 3600, "a duration (seconds, or 10s, 2m, 1h) from 1 to 3600");
    unsetenv(VAR);
}

DL_TEST(env_value_size)
{
    OK("0", DL_ENV_SIZE, 0);
    OK("100", DL_ENV_SIZE, 100);
    OK("100b", DL_ENV_SIZE, 100);
    OK("512k", DL_ENV_SIZE, 512 * 1024);
    OK("512K", DL_ENV_SIZE, 512 * 1024);
    OK("1kb", DL_ENV_SIZE, 1024);
    OK("1KiB", DL_ENV_SIZE, 1024);
    OK("2MB", DL_ENV_SIZE, 2 * 1024 * 1024);
    OK("2m", DL_ENV_SIZE, 2 * 1024 * 1024);
    OK("3mib", DL_ENV_SIZE, 3 * 1024 * 1024);
    OK("1GiB", DL_ENV_SIZE, 1024ULL * 1024 * 1024);
    OK("4g", DL_ENV_SIZE, 4ULL << 30);
    OK("5GB", DL_ENV_SIZE, 5ULL << 30);
    const char *what = "a size (bytes, or 512k, 2MB, 1GiB)";
    BAD("2XB", DL_ENV_SIZE, what);
    BAD("-1", DL_ENV_SIZE, what);
    BAD("1.5M", DL_ENV_SIZE, what);
    BAD("2 MB", DL_ENV_SIZE, what);
    BAD("1T", DL_ENV_SIZE, what);
    BAD("1kk", DL_ENV_SIZE, what);
    BAD("k", DL_ENV_SIZE, what);
    BAD("10s", DL_ENV_SIZE, what);
    /* the unit's product overflows: refused, not wrapped to a small size */
    BAD("17179869184g", DL_ENV_SIZE, what);
    BAD("18014398509481984k", DL_ENV_SIZE, what);
    unsetenv(VAR);
}

DL_TEST(env_value_ms)
{
    OK("0", DL_ENV_MS, 0);
    OK("250", DL_ENV_MS, 250); /* bare: ms */
    OK("500ms", DL_ENV_MS, 500);
    OK("500MS", DL_ENV_MS, 500);
    OK("10s", DL_ENV_MS, 10000);
    OK("2m", DL_ENV_MS, 120000);
    OK("1h", DL_ENV_MS, 3600000);
    OK("1H", DL_ENV_MS, 3600000);
    const char *what = "a duration (ms, or 500ms, 10s, 2m)";
    BAD("soon", DL_ENV_MS, what);
    BAD("1d", DL_ENV_MS, what);
    BAD("1.5s", DL_ENV_MS, what);
    BAD("10 s", DL_ENV_MS, what);
    BAD("10sec", DL_ENV_MS, what);
    BAD("1k", DL_ENV_MS, what); /* a size unit */
    BAD("-5", DL_ENV_MS, what);
    BAD("s", DL_ENV_MS, what);
    BAD("5124095576030432h", DL_ENV_MS, what); /* 2^64 ms and more */
    unsetenv(VAR);
}

DL_TEST(env_value_s)
{
    OK("0", DL_ENV_S, 0);
    OK("5", DL_ENV_S, 5); /* bare: seconds */
    OK("10s", DL_ENV_S, 10);
    OK("2m", DL_ENV_S, 120);
    OK("1h", DL_ENV_S, 3600);
    const char *what = "a duration (seconds, or 10s, 2m, 1h)";
    /* no milliseconds on a seconds variable, not even whole ones */
    BAD("500ms", DL_ENV_S, what);
    BAD("1000ms", DL_ENV_S, what);
    BAD("1d", DL_ENV_S, what);
    BAD("x", DL_ENV_S, what);
    BAD("1 h", DL_ENV_S, what);
    unsetenv(VAR);
}

DL_TEST(env_value_bool)
{
    static const char *const yes[] = {"1", "true", "TRUE", "True", "on", "ON", "yes", "Yes"};
    static const char *const no[] = {"0", "false", "FALSE", "off", "Off", "no", "NO"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(yes); i++)
        OK(yes[i], DL_ENV_BOOL, 1);
    for (size_t i = 0; i < DL_ARRAY_SIZE(no); i++)
        OK(no[i], DL_ENV_BOOL, 0);
    const char *what = "1/0, true/false, on/off or yes/no";
    BAD("maybe", DL_ENV_BOOL, what);
    BAD("2", DL_ENV_BOOL, what);
    BAD("01", DL_ENV_BOOL, what);
    BAD(" on", DL_ENV_BOOL, what);
    BAD("on ", DL_ENV_BOOL, what);
    BAD("tru", DL_ENV_BOOL, what);
    BAD("yess", DL_ENV_BOOL, what);
    BAD("enabled", DL_ENV_BOOL, what);
    unsetenv(VAR);
}

/* The message: the whole of it, no err at all, and an err too small for it. */
DL_TEST(env_value_message)
{
    uint64_t out;
    char err[256];
    EXPECT_EQ(read_as("2XB", DL_ENV_SIZE, 0, 1099511627776ULL, &out, err, sizeof(err)),
              DL_EINVAL);
    EXPECT_STR(err, VAR "=2XB: expected a size (bytes, or 512k, 2MB, 1GiB) from 0 to "
                        "1099511627776");
    EXPECT_EQ(read_as("maybe", DL_ENV_BOOL, 0, 1, &out, err, sizeof(err)), DL_EINVAL);
    EXPECT_STR(err, VAR "=maybe: expected 1/0, true/false, on/off or yes/no");
    /* err NULL: still refused, default kept */
    out = 0;
    EXPECT_EQ(read_as("x", DL_ENV_COUNT, 0, 10, &out, NULL, 0), DL_EINVAL);
    EXPECT_EQ(out, DEF);
    out = 0;
    EXPECT_EQ(read_as("x", DL_ENV_BOOL, 0, 1, &out, NULL, 0), DL_EINVAL);
    EXPECT_EQ(out, DEF);
    /* a short err is cut, NUL-terminated, never overrun */
    char small[12];
    memset(small, '#', sizeof(small));
    EXPECT_EQ(read_as("x", DL_ENV_COUNT, 0, 10, &out, small, 8), DL_EINVAL);
    EXPECT_STR(small, "DL_UNIT");
    EXPECT_EQ(small[8], '#');
    /* a long value is cut, not overrun */
    char big[1000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    EXPECT_EQ(read_as(big, DL_ENV_SIZE, 0, 10, &out, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(strlen(err), sizeof(err) - 1);
    EXPECT(strncmp(err, VAR "=vvv", strlen(VAR) + 4) == 0);
    unsetenv(VAR);
}
