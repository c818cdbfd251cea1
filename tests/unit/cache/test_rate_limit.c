/*
 * test_rate_limit.c - runtime/cache/rate_limit.c on a real shared
 * dictionary, with the clocks given (no sleeping): the sliding window's
 * estimate across a window's edge, refused requests not counted, a count
 * taken back, a previous counter that is not a number ignored, a base too
 * long refused, and Retry-After from a refusal's counts.
 */
#include <string.h>

#include "cache/rate_limit.h"
#include "cache/shared_dict.h"
#include "common/internal.h"
#include "unit.h"

#define B "rl:t:10.0.0.1:"

static int count(dl_shdict_t *d, double limit, double now, dl_rate_result_t *r)
{
    return dl_rate_count(d, B, strlen(B), limit, 60, now, (uint64_t)(now * 1000), r);
}

DL_TEST(rate_limit_sliding_window)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    dl_rate_result_t r;
    double t0 = 600000.0; /* a window's start: 10000 * 60 */
    for (int i = 1; i <= 10; i++) {
        EXPECT_EQ(count(d, 10, t0 + 1, &r), 0);
        EXPECT_EQ(r.allowed, 1);
        EXPECT(r.est == i);
        EXPECT(r.to_end == 59);
        EXPECT_EQ(r.slot, 10000);
    }
    for (int i = 0; i < 5; i++) { /* refused, and never counted */
        EXPECT_EQ(count(d, 10, t0 + 2, &r), 0);
        EXPECT_EQ(r.allowed, 0);
        EXPECT(r.cur == 10);
        EXPECT(r.est == 10);
    }
    /* a quarter into the next window: 10 * 0.75 + 1 = 8.5, then up to 10 */
    EXPECT_EQ(count(d, 10, t0 + 75, &r), 0);
    EXPECT_EQ(r.allowed, 1);
    EXPECT(r.prev == 10 && r.cur == 1 && r.covered == 0.75);
    EXPECT(r.est == 8.5);
    EXPECT_EQ(count(d, 10, t0 + 75, &r), 0);
    EXPECT_EQ(r.allowed, 1);
    EXPECT_EQ(count(d, 10, t0 + 75, &r), 0);
    EXPECT_EQ(r.allowed, 0); /* 7.5 + 3 > 10 */
    /* taken back: one more fits */
    dl_rate_uncount(d, B, strlen(B), 10001, (uint64_t)((t0 + 75) * 1000));
    EXPECT_EQ(count(d, 10, t0 + 75, &r), 0);
    EXPECT_EQ(r.allowed, 1);
    /* two windows later nothing is left */
    EXPECT_EQ(count(d, 10, t0 + 185, &r), 0);
    EXPECT(r.prev == 0 && r.cur == 1);
    dl_shdict_free(d);
}

DL_TEST(rate_limit_bad_counters_and_bases)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    dl_rate_result_t r;
    /* someone stored a string where the previous window's count goes */
    dl_shdict_value_t s = {DL_SHV_STRING, 0, 0, "many", 4};
    EXPECT_EQ(dl_shdict_set(d, B "9999", strlen(B "9999"), &s, 0, 0, 600000000), 0);
    EXPECT_EQ(count(d, 5, 600000.0, &r), 0);
    EXPECT(r.prev == 0 && r.cur == 1);
    /* and a string in the current one: an error, not a count */
    EXPECT_EQ(dl_shdict_set(d, B "10000", strlen(B "10000"), &s, 0, 0, 600000000), 0);
    EXPECT_EQ(count(d, 5, 600001.0, &r), DL_EINVAL);
    char big[DL_RATE_KEY_MAX];
    memset(big, 'k', sizeof(big));
    EXPECT_EQ(dl_rate_count(d, big, sizeof(big), 5, 60, 600000.0, 0, &r), DL_EINVAL);
    EXPECT_EQ(dl_rate_count(d, big, 0, 5, 60, 600000.0, 0, &r), DL_EINVAL);
    dl_rate_uncount(d, big, sizeof(big), 1, 0); /* ignored */
    dl_shdict_free(d);
}

DL_TEST(rate_limit_retry_after)
{
    /* 10 in this window, none before: wait for the window's end plus the
     * time for 10 * (1 - y / 60) <= 9: y = 6 */
    EXPECT_EQ(dl_rate_retry_after(10, 60, 10, 0, 1, 30), 36);
    /* within this window, as the previous window's weight falls:
     * 8 * (0.75 - x / 60) + 4 <= 9 from x = 7.5 */
    EXPECT_EQ(dl_rate_retry_after(10, 60, 4, 8, 0.75, 45), 8);
    /* never less than a second */
    EXPECT_EQ(dl_rate_retry_after(10, 60, 0, 0, 1, 0.2), 1);
    EXPECT_EQ(dl_rate_retry_after(1, 60, 1, 0, 1, 0.4), 61);
}
