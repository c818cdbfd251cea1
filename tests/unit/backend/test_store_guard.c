/*
 * test_store_guard.c - runtime/backend/store_guard.c through store_guard.h:
 * which statuses count as what (only a timeout says the server does not
 * answer; a bad query is an answer), a local store (SQLite) that never
 * refuses, and MongoDB's breaker: open after the threshold of consecutive
 * timeouts, fast failures with the last error for the cool-down, one probe,
 * its answer closing it; each move seen in the metrics (common/metrics.h)
 * and in dl_store_guard_state(). A guard without stats works the same.
 */
#include <string.h>

#include "backend/backend_stats.h"
#include "backend/breaker.h"
#include "backend/store_guard.h"
#include "common/internal.h"
#include "common/log.h"
#include "common/metrics.h"
#include "unit.h"

static double ops(dl_metrics_t *m, const dl_backend_stats_t *bs, const char *backend,
                  const char *outcome)
{
    const char *labels[2] = {backend, outcome};
    return dl_metric_value(m, bs->ops, labels);
}

static double gauge(dl_metrics_t *m, int id, const char *backend)
{
    const char *labels[1] = {backend};
    return dl_metric_value(m, id, labels);
}

static double moves(dl_metrics_t *m, const dl_backend_stats_t *bs, const char *state)
{
    const char *labels[2] = {"mongodb", state};
    return dl_metric_value(m, bs->transitions, labels);
}

DL_TEST(store_guard_local_store_counts_only)
{
    dl_metrics_t *m = dl_metrics_new(2);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 2), 0);
    dl_store_guard_t g;
    dl_store_guard_init(&g, DL_BACKEND_SQLITE, 1, 1000, &bs);
    char err[256] = "";
    /* timeouts never open anything for a local file */
    for (int i = 0; i < 10; i++) {
        EXPECT_EQ(dl_store_guard_allow(&g, 0, (uint64_t)i, err, sizeof(err)), 1);
        dl_store_guard_done(&g, 0, (uint64_t)i, DL_ETIMEDOUT, "database is locked");
    }
    EXPECT_STR(err, "");
    static const struct {
        int status;
        const char *outcome;
    } cases[] = {
        {0, "ok"},           {DL_ENOENT, "ok"},    {DL_EINVAL, "ok"},   {DL_ECODEC, "ok"},
        {DL_EIO, "error"},   {DL_ENOMEM, "error"}, {DL_EROFS, "error"}, {DL_EBUSY, "error"},
        {DL_ENOSPC, "error"}, {DL_ECANTOPEN, "error"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases); i++)
        dl_store_guard_done(&g, 1, 100, cases[i].status, "x");
    /* a cancelled operation is not counted at all */
    dl_store_guard_done(&g, 1, 100, DL_ECANCELED, NULL);
    EXPECT(ops(m, &bs, "sqlite", "timeout") == 10);
    EXPECT(ops(m, &bs, "sqlite", "ok") == 4);
    EXPECT(ops(m, &bs, "sqlite", "error") == 6);
    EXPECT(ops(m, &bs, "sqlite", "fast_fail") == -1);
    /* no breaker, no up gauge for it */
    EXPECT(gauge(m, bs.breaker, "sqlite") == -1);
    EXPECT(gauge(m, bs.up, "sqlite") == -1);
    int state = -1;
    char last[64] = "?";
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_CLOSED);
    EXPECT_STR(last, "");
    dl_store_guard_destroy(&g);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}

DL_TEST(store_guard_mongo_breaker)
{
    dl_log_min_level = DL_LOG_ERROR; /* the moves are logged as warnings */
    dl_metrics_t *m = dl_metrics_new(2);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 2), 0);
    dl_store_guard_t g;
    dl_store_guard_init(&g, DL_BACKEND_MONGO, 3, 1000, &bs);
    char err[256] = "";
    int state;
    char last[256];

    /* answers: up, closed */
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 0, err, sizeof(err)), 1);
    dl_store_guard_done(&g, 0, 1, 0, NULL);
    EXPECT(gauge(m, bs.up, "mongodb") == 1);
    /* two timeouts, then an application error (an answer): the count resets */
    dl_store_guard_done(&g, 0, 10, DL_ETIMEDOUT, "no suitable servers");
    EXPECT(gauge(m, bs.up, "mongodb") == 0);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_CLOSED);
    EXPECT_STR(last, "no suitable servers");
    dl_store_guard_done(&g, 1, 20, DL_ETIMEDOUT, "no suitable servers");
    dl_store_guard_done(&g, 1, 30, DL_EINVAL, "bad query");
    EXPECT(gauge(m, bs.up, "mongodb") == 1);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_STR(last, ""); /* up again: no error to show */
    dl_store_guard_done(&g, 0, 40, DL_ETIMEDOUT, "t1");
    dl_store_guard_done(&g, 0, 50, DL_ETIMEDOUT, "t2");
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 55, err, sizeof(err)), 1);
    /* the guard reports its breaker when it moves: no series before */
    EXPECT(gauge(m, bs.breaker, "mongodb") == -1);
    /* the third in a row opens it */
    dl_store_guard_done(&g, 1, 60, DL_ETIMEDOUT, "socket timeout");
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_OPEN);
    EXPECT_STR(last, "socket timeout");
    EXPECT(gauge(m, bs.breaker, "mongodb") == 2);
    EXPECT(moves(m, &bs, "open") == 1);
    EXPECT(moves(m, &bs, "closed") == 0);

    /* the cool-down: refused at once, with the last error */
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 100, err, sizeof(err)), 0);
    EXPECT_STR(err, "mongodb: unavailable (circuit breaker open: socket timeout)");
    EXPECT_EQ(dl_store_guard_allow(&g, 1, 1059, err, sizeof(err)), 0);
    EXPECT(ops(m, &bs, "mongodb", "fast_fail") == 2);
    /* then one probe */
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 1060, err, sizeof(err)), 1);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_HALF_OPEN);
    EXPECT(gauge(m, bs.breaker, "mongodb") == 1);
    EXPECT(moves(m, &bs, "half_open") == 1);
    EXPECT_EQ(dl_store_guard_allow(&g, 1, 1061, err, sizeof(err)), 0);
    EXPECT(ops(m, &bs, "mongodb", "fast_fail") == 3);
    /* its timeout opens it again, with the new error */
    dl_store_guard_done(&g, 0, 1100, DL_ETIMEDOUT, NULL);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_OPEN);
    EXPECT_STR(last, "timed out");
    EXPECT(moves(m, &bs, "open") == 2);
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 2099, err, sizeof(err)), 0);
    EXPECT_STR(err, "mongodb: unavailable (circuit breaker open: timed out)");
    /* the next probe's answer closes it */
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 2100, err, sizeof(err)), 1);
    dl_store_guard_done(&g, 0, 2110, DL_ENOENT, "no such document");
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_CLOSED);
    EXPECT_STR(last, "");
    EXPECT(gauge(m, bs.breaker, "mongodb") == 0);
    EXPECT(gauge(m, bs.up, "mongodb") == 1);
    EXPECT(moves(m, &bs, "closed") == 1);
    EXPECT(moves(m, &bs, "half_open") == 2);
    EXPECT_EQ(dl_store_guard_allow(&g, 1, 2120, err, sizeof(err)), 1);
    EXPECT(ops(m, &bs, "mongodb", "timeout") == 6);
    EXPECT(ops(m, &bs, "mongodb", "ok") == 3);
    EXPECT(ops(m, &bs, "mongodb", "fast_fail") == 4);

    /* a cancelled operation is neither an answer nor a timeout: the count
     * of timeouts in a row goes on past it */
    dl_store_guard_done(&g, 0, 3000, DL_ETIMEDOUT, "a");
    dl_store_guard_done(&g, 0, 3001, DL_ETIMEDOUT, "b");
    dl_store_guard_done(&g, 0, 3002, DL_ECANCELED, NULL);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_CLOSED);
    EXPECT_STR(last, "b");
    dl_store_guard_done(&g, 0, 3003, DL_ETIMEDOUT, "c");
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_OPEN);
    EXPECT_STR(last, "c");
    EXPECT(ops(m, &bs, "mongodb", "timeout") == 9);

    /* a short buffer for the state's error is cut, not overrun */
    char small[4] = "###";
    dl_store_guard_state(&g, &state, small, 2);
    EXPECT_STR(small, "c");
    EXPECT_EQ(small[2], '#');
    dl_store_guard_destroy(&g);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}

/* No metrics: the breaker still guards. A very long error is cut. */
DL_TEST(store_guard_without_stats)
{
    dl_log_min_level = DL_LOG_ERROR;
    dl_store_guard_t g;
    dl_store_guard_init(&g, DL_BACKEND_MONGO, 1, 50, NULL);
    char err[1024];
    char huge[2000];
    memset(huge, 'e', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 0, err, sizeof(err)), 1);
    dl_store_guard_done(&g, 0, 1, DL_ETIMEDOUT, huge);
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 2, err, sizeof(err)), 0);
    EXPECT(strncmp(err, "mongodb: unavailable (circuit breaker open: eee", 47) == 0);
    EXPECT_EQ(strlen(err), strlen("mongodb: unavailable (circuit breaker open: ") + 255 + 1);
    int state;
    char last[512];
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_OPEN);
    EXPECT_EQ(strlen(last), 255);
    /* a refusal into a tiny err buffer */
    char tiny[8];
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 3, tiny, sizeof(tiny)), 0);
    EXPECT_STR(tiny, "mongodb");
    EXPECT_EQ(dl_store_guard_allow(&g, 0, 51, err, sizeof(err)), 1);
    dl_store_guard_done(&g, 0, 52, 0, NULL);
    dl_store_guard_state(&g, &state, last, sizeof(last));
    EXPECT_EQ(state, DL_BREAKER_CLOSED);
    dl_store_guard_destroy(&g);
}
