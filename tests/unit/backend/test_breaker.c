/*
 * test_breaker.c - runtime/backend/breaker.c: closed to open at the threshold and
 * not before, an answer resetting the count, fail-fast for the cool-down,
 * one probe in half-open, the probe's answer closing it and its timeout or
 * loss opening it again, a disabled breaker, the transition count; and
 * runtime/backend/backend_stats.c merging the workers' states into one gauge.
 */
#include <string.h>

#include "backend/backend_stats.h"
#include "backend/breaker.h"
#include "common/internal.h"
#include "common/metrics.h"
#include "unit.h"

DL_TEST(breaker_opens_at_threshold)
{
    dl_breaker_t b;
    int moved;
    dl_breaker_init(&b, 3, 1000);
    EXPECT_EQ(dl_breaker_allow(&b, 0, &moved), 1);
    EXPECT_EQ(dl_breaker_timeout(&b, 10), 0);
    EXPECT_EQ(dl_breaker_timeout(&b, 20), 0);
    /* an answer in between resets the count */
    EXPECT_EQ(dl_breaker_success(&b), 0);
    EXPECT_EQ(dl_breaker_timeout(&b, 30), 0);
    EXPECT_EQ(dl_breaker_timeout(&b, 40), 0);
    EXPECT_EQ(b.state, DL_BREAKER_CLOSED);
    EXPECT_EQ(dl_breaker_timeout(&b, 50), 1);
    EXPECT_EQ(b.state, DL_BREAKER_OPEN);
    EXPECT_EQ(b.transitions, 1);
    EXPECT_STR(dl_breaker_state_name(b.state), "open");
}

DL_TEST(breaker_cooldown_and_probe)
{
    dl_breaker_t b;
    int moved;
    dl_breaker_init(&b, 1, 1000);
    EXPECT_EQ(dl_breaker_timeout(&b, 100), 1);
    /* open: nothing goes out during the cool-down */
    EXPECT_EQ(dl_breaker_allow(&b, 100, &moved), 0);
    EXPECT_EQ(dl_breaker_allow(&b, 1099, &moved), 0);
    EXPECT_EQ(moved, 0);
    EXPECT_EQ(dl_breaker_remaining(&b, 600), 500);
    /* then exactly one probe */
    EXPECT_EQ(dl_breaker_allow(&b, 1100, &moved), 2);
    EXPECT_EQ(moved, 1);
    EXPECT_EQ(b.state, DL_BREAKER_HALF_OPEN);
    EXPECT_EQ(dl_breaker_allow(&b, 1101, &moved), 0);
    /* its timeout opens it again for a whole cool-down */
    EXPECT_EQ(dl_breaker_timeout(&b, 1300), 1);
    EXPECT_EQ(b.state, DL_BREAKER_OPEN);
    EXPECT_EQ(dl_breaker_allow(&b, 2299, &moved), 0);
    EXPECT_EQ(dl_breaker_allow(&b, 2300, &moved), 2);
    /* a lost probe too */
    EXPECT_EQ(dl_breaker_probe_failed(&b, 2400), 1);
    EXPECT_EQ(b.state, DL_BREAKER_OPEN);
    EXPECT_EQ(dl_breaker_allow(&b, 3400, &moved), 2);
    /* its answer closes it */
    EXPECT_EQ(dl_breaker_success(&b), 1);
    EXPECT_EQ(b.state, DL_BREAKER_CLOSED);
    EXPECT_EQ(b.consecutive, 0);
    EXPECT_EQ(dl_breaker_allow(&b, 3401, &moved), 1);
    EXPECT_EQ(b.transitions, 7);
    /* nothing to do for a closed breaker */
    EXPECT_EQ(dl_breaker_probe_failed(&b, 3500), 0);
    EXPECT_EQ(dl_breaker_remaining(&b, 3500), 0);
}

/* Other evidence of a server that answers in time closes it at once. */
DL_TEST(breaker_reset)
{
    dl_breaker_t b;
    int moved;
    dl_breaker_init(&b, 1, 1000);
    EXPECT_EQ(dl_breaker_reset(&b), 0);
    EXPECT_EQ(dl_breaker_timeout(&b, 10), 1);
    EXPECT_EQ(dl_breaker_reset(&b), 1);
    EXPECT_EQ(b.state, DL_BREAKER_CLOSED);
    EXPECT_EQ(dl_breaker_allow(&b, 11, &moved), 1);
    EXPECT_EQ(dl_breaker_timeout(&b, 20), 1);
    EXPECT_EQ(dl_breaker_allow(&b, 1020, &moved), 2);
    EXPECT_EQ(dl_breaker_reset(&b), 1);
    EXPECT_EQ(b.state, DL_BREAKER_CLOSED);
    EXPECT_EQ(b.probing, 0);
}

DL_TEST(breaker_disabled)
{
    dl_breaker_t b;
    dl_breaker_init(&b, 0, 1000);
    for (int i = 0; i < 1000; i++)
        EXPECT_EQ(dl_breaker_timeout(&b, (uint64_t)i), 0);
    EXPECT_EQ(b.state, DL_BREAKER_CLOSED);
    dl_breaker_init(&b, -1, 1000);
    EXPECT_EQ(b.threshold, DL_BREAKER_DEFAULT_THRESHOLD);
}

/* The merged gauges: up only when every worker is up, the worst breaker. */
DL_TEST(backend_stats_merge)
{
    dl_metrics_t *m = dl_metrics_new(2);
    dl_backend_stats_t bs;
    const char *redis[1] = {"redis"};
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 2), 0);
    dl_backend_set_up(&bs, 0, DL_BACKEND_REDIS, 1);
    EXPECT(dl_metric_value(m, bs.up, redis) == 1);
    dl_backend_set_up(&bs, 1, DL_BACKEND_REDIS, 0);
    EXPECT(dl_metric_value(m, bs.up, redis) == 0);
    dl_backend_set_up(&bs, 1, DL_BACKEND_REDIS, 1);
    EXPECT(dl_metric_value(m, bs.up, redis) == 1);

    dl_backend_set_breaker(&bs, 0, DL_BACKEND_REDIS, DL_BREAKER_CLOSED); /* not a move */
    dl_backend_set_breaker(&bs, 1, DL_BACKEND_REDIS, DL_BREAKER_OPEN);
    EXPECT(dl_metric_value(m, bs.breaker, redis) == 2);
    dl_backend_set_breaker(&bs, 0, DL_BACKEND_REDIS, DL_BREAKER_HALF_OPEN);
    EXPECT(dl_metric_value(m, bs.breaker, redis) == 2);
    dl_backend_set_breaker(&bs, 1, DL_BACKEND_REDIS, DL_BREAKER_CLOSED);
    EXPECT(dl_metric_value(m, bs.breaker, redis) == 1);
    const char *to_open[2] = {"redis", "open"};
    const char *to_closed[2] = {"redis", "closed"};
    EXPECT(dl_metric_value(m, bs.transitions, to_open) == 1);
    EXPECT(dl_metric_value(m, bs.transitions, to_closed) == 1);

    dl_backend_outcome(&bs, 0, DL_BACKEND_REDIS, DL_OUTCOME_FAST_FAIL);
    dl_backend_outcome(&bs, 1, DL_BACKEND_REDIS, DL_OUTCOME_FAST_FAIL);
    const char *ff[2] = {"redis", "fast_fail"};
    EXPECT(dl_metric_value(m, bs.ops, ff) == 2);

    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_metrics_render(m, &out), 0);
    EXPECT(strstr(out.data, "backend_up{backend=\"redis\"} 1") != NULL);
    dl_buf_free(&out);
    /* the first report (closed) is no move, yet every state's series is
     * there, at 0 */
    dl_backend_set_breaker(&bs, -1, DL_BACKEND_MONGO, DL_BREAKER_CLOSED);
    EXPECT_EQ(dl_metrics_render(m, &out), 0);
    EXPECT(strstr(out.data, "backend_breaker_transitions_total{backend=\"mongodb\","
                            "state=\"open\"} 0") != NULL);
    EXPECT(strstr(out.data, "backend_breaker_state{backend=\"mongodb\"} 0") != NULL);
    dl_buf_free(&out);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}
