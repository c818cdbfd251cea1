/*
 * test_backend_stats.c - runtime/backend/backend_stats.c through
 * backend_stats.h, read back through common/metrics.h: the names, outcomes
 * summed over the workers' slots, the up gauge (a worker that never reported
 * does not hold it down), breaker moves counted once per change and never
 * for a repeat, the reports it ignores (NULL, unknown backend or outcome, a
 * failed init), and four threads moving their breakers at once. The merge of
 * two workers is in test_breaker.c (backend_stats_merge).
 */
#include <pthread.h>
#include <string.h>

#include "backend/backend_stats.h"
#include "backend/breaker.h"
#include "common/internal.h"
#include "common/metrics.h"
#include "unit.h"

static double value2(dl_metrics_t *m, int id, const char *a, const char *b)
{
    const char *labels[2] = {a, b};
    return dl_metric_value(m, id, labels);
}

static double value1(dl_metrics_t *m, int id, const char *a)
{
    const char *labels[1] = {a};
    return dl_metric_value(m, id, labels);
}

DL_TEST(backend_stats_names)
{
    EXPECT_STR(dl_backend_name(DL_BACKEND_REDIS), "redis");
    EXPECT_STR(dl_backend_name(DL_BACKEND_MONGO), "mongodb");
    EXPECT_STR(dl_backend_name(DL_BACKEND_SQLITE), "sqlite");
    EXPECT_STR(dl_backend_name(-1), "unknown");
    EXPECT_STR(dl_backend_name(DL_BACKEND_COUNT), "unknown");
}

DL_TEST(backend_stats_outcomes)
{
    dl_metrics_t *m = dl_metrics_new(3);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 3), 0);
    /* no series before the first report */
    EXPECT(value2(m, bs.ops, "sqlite", "ok") == -1);
    dl_backend_outcome(&bs, 0, DL_BACKEND_SQLITE, DL_OUTCOME_OK);
    dl_backend_outcome(&bs, 1, DL_BACKEND_SQLITE, DL_OUTCOME_OK);
    dl_backend_outcome(&bs, 2, DL_BACKEND_SQLITE, DL_OUTCOME_OK);
    dl_backend_outcome(&bs, -1, DL_BACKEND_SQLITE, DL_OUTCOME_OK); /* another thread */
    dl_backend_outcome(&bs, 99, DL_BACKEND_SQLITE, DL_OUTCOME_OK); /* out of range: shared */
    dl_backend_outcome(&bs, 0, DL_BACKEND_SQLITE, DL_OUTCOME_ERROR);
    dl_backend_outcome(&bs, 1, DL_BACKEND_MONGO, DL_OUTCOME_TIMEOUT);
    dl_backend_outcome(&bs, 2, DL_BACKEND_REDIS, DL_OUTCOME_FAST_FAIL);
    EXPECT(value2(m, bs.ops, "sqlite", "ok") == 5);
    EXPECT(value2(m, bs.ops, "sqlite", "error") == 1);
    EXPECT(value2(m, bs.ops, "mongodb", "timeout") == 1);
    EXPECT(value2(m, bs.ops, "redis", "fast_fail") == 1);
    EXPECT(value2(m, bs.ops, "redis", "ok") == -1);
    /* ignored: an outcome out of range, no stats */
    dl_backend_outcome(&bs, 0, DL_BACKEND_SQLITE, -1);
    dl_backend_outcome(&bs, 0, DL_BACKEND_SQLITE, DL_OUTCOME_COUNT);
    dl_backend_outcome(NULL, 0, DL_BACKEND_SQLITE, DL_OUTCOME_OK);
    /* an unknown backend is counted under its name, not dropped or crashed */
    dl_backend_outcome(&bs, 0, 42, DL_OUTCOME_OK);
    EXPECT(value2(m, bs.ops, "unknown", "ok") == 1);
    EXPECT(value2(m, bs.ops, "sqlite", "ok") == 5);

    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_metrics_render(m, &out), 0);
    EXPECT(strstr(out.data, "# TYPE backend_operations_total counter") != NULL);
    EXPECT(strstr(out.data, "backend_operations_total{backend=\"sqlite\",outcome=\"ok\"} 5") !=
           NULL);
    dl_buf_free(&out);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}

DL_TEST(backend_stats_up)
{
    dl_metrics_t *m = dl_metrics_new(3);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 3), 0);
    EXPECT(value1(m, bs.up, "redis") == -1);
    /* one worker up, the others not reporting yet: up */
    dl_backend_set_up(&bs, 2, DL_BACKEND_REDIS, 1);
    EXPECT(value1(m, bs.up, "redis") == 1);
    /* any worker down: down */
    dl_backend_set_up(&bs, 0, DL_BACKEND_REDIS, 0);
    EXPECT(value1(m, bs.up, "redis") == 0);
    dl_backend_set_up(&bs, 1, DL_BACKEND_REDIS, 1);
    EXPECT(value1(m, bs.up, "redis") == 0);
    /* any value but 0 is up */
    dl_backend_set_up(&bs, 0, DL_BACKEND_REDIS, 7);
    EXPECT(value1(m, bs.up, "redis") == 1);
    /* repeats change nothing */
    dl_backend_set_up(&bs, 0, DL_BACKEND_REDIS, 1);
    EXPECT(value1(m, bs.up, "redis") == 1);
    /* backends are apart */
    dl_backend_set_up(&bs, 0, DL_BACKEND_MONGO, 0);
    EXPECT(value1(m, bs.up, "mongodb") == 0);
    EXPECT(value1(m, bs.up, "redis") == 1);
    /* a shared store (w out of range) reports as worker 0 */
    dl_backend_set_up(&bs, -1, DL_BACKEND_MONGO, 1);
    EXPECT(value1(m, bs.up, "mongodb") == 1);
    dl_backend_set_up(&bs, 1000, DL_BACKEND_MONGO, 0);
    EXPECT(value1(m, bs.up, "mongodb") == 0);
    dl_backend_set_up(&bs, 0, DL_BACKEND_MONGO, 1);
    EXPECT(value1(m, bs.up, "mongodb") == 1);
    /* ignored: no stats, an unknown backend */
    dl_backend_set_up(NULL, 0, DL_BACKEND_REDIS, 0);
    dl_backend_set_up(&bs, 0, -1, 0);
    dl_backend_set_up(&bs, 0, DL_BACKEND_COUNT, 0);
    EXPECT(value1(m, bs.up, "unknown") == -1);
    EXPECT(value1(m, bs.up, "redis") == 1);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}

DL_TEST(backend_stats_breaker_moves)
{
    dl_metrics_t *m = dl_metrics_new(1);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 1), 0);
    /* the first report of closed: every state's series at 0 */
    dl_backend_set_breaker(&bs, 0, DL_BACKEND_REDIS, DL_BREAKER_CLOSED);
    EXPECT(value1(m, bs.breaker, "redis") == 0);
    EXPECT(value2(m, bs.transitions, "redis", "closed") == 0);
    EXPECT(value2(m, bs.transitions, "redis", "half_open") == 0);
    EXPECT(value2(m, bs.transitions, "redis", "open") == 0);
    /* closed -> open -> open (a repeat) -> half_open -> open -> half_open -> closed */
    static const int moves[] = {DL_BREAKER_OPEN, DL_BREAKER_OPEN, DL_BREAKER_HALF_OPEN,
                                DL_BREAKER_OPEN, DL_BREAKER_HALF_OPEN, DL_BREAKER_CLOSED,
                                DL_BREAKER_CLOSED};
    static const int gauge[] = {2, 2, 1, 2, 1, 0, 0};
    for (size_t i = 0; i < DL_ARRAY_SIZE(moves); i++) {
        dl_backend_set_breaker(&bs, 0, DL_BACKEND_REDIS, moves[i]);
        EXPECT(value1(m, bs.breaker, "redis") == gauge[i]);
    }
    EXPECT(value2(m, bs.transitions, "redis", "open") == 2);
    EXPECT(value2(m, bs.transitions, "redis", "half_open") == 2);
    EXPECT(value2(m, bs.transitions, "redis", "closed") == 1);
    /* the other backends saw nothing */
    EXPECT(value1(m, bs.breaker, "mongodb") == -1);
    EXPECT(value2(m, bs.transitions, "mongodb", "open") == -1);
    /* ignored */
    dl_backend_set_breaker(NULL, 0, DL_BACKEND_REDIS, DL_BREAKER_OPEN);
    dl_backend_set_breaker(&bs, 0, 9, DL_BREAKER_OPEN);
    EXPECT(value1(m, bs.breaker, "redis") == 0);
    EXPECT(value2(m, bs.transitions, "redis", "open") == 2);

    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_metrics_render(m, &out), 0);
    EXPECT(strstr(out.data, "# TYPE backend_breaker_state gauge") != NULL);
    EXPECT(strstr(out.data, "backend_breaker_transitions_total{backend=\"redis\","
                            "state=\"half_open\"} 2") != NULL);
    dl_buf_free(&out);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}

/* A registry that already holds one of its names with another type: init
 * fails, and the stats stay inert (every report is ignored, free is safe). */
DL_TEST(backend_stats_init_conflict)
{
    dl_metrics_t *m = dl_metrics_new(1);
    EXPECT_INT(dl_metric_define(m, DL_METRIC_COUNTER, "backend_up", NULL, NULL, 0, NULL, 0), >=,
               0);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, 1), DL_EINVAL);
    dl_backend_set_up(&bs, 0, DL_BACKEND_REDIS, 1);
    dl_backend_set_breaker(&bs, 0, DL_BACKEND_REDIS, DL_BREAKER_OPEN);
    dl_backend_stats_free(&bs);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);

    /* a second set of stats on one registry shares its metrics */
    m = dl_metrics_new(2);
    dl_backend_stats_t a, b;
    EXPECT_EQ(dl_backend_stats_init(&a, m, 2), 0);
    EXPECT_EQ(dl_backend_stats_init(&b, m, 0), 0); /* 0 workers: one slot */
    EXPECT_EQ(a.ops, b.ops);
    EXPECT_EQ(a.up, b.up);
    EXPECT_EQ(b.n_workers, 1);
    dl_backend_outcome(&a, 0, DL_BACKEND_REDIS, DL_OUTCOME_OK);
    dl_backend_outcome(&b, 1, DL_BACKEND_REDIS, DL_OUTCOME_OK);
    EXPECT(value2(m, a.ops, "redis", "ok") == 2);
    dl_backend_stats_free(&a);
    dl_backend_stats_free(&b);
    dl_metrics_free(m);
}

typedef struct {
    dl_backend_stats_t *bs;
    int w;
} flapper_t;

#define FLAPS 2000

static void *flap(void *arg)
{
    flapper_t *f = arg;
    for (int i = 0; i < FLAPS; i++) {
        dl_backend_set_breaker(f->bs, f->w, DL_BACKEND_MONGO, DL_BREAKER_OPEN);
        dl_backend_set_up(f->bs, f->w, DL_BACKEND_MONGO, 0);
        dl_backend_outcome(f->bs, f->w, DL_BACKEND_MONGO, DL_OUTCOME_TIMEOUT);
        dl_backend_set_breaker(f->bs, f->w, DL_BACKEND_MONGO, DL_BREAKER_CLOSED);
        dl_backend_set_up(f->bs, f->w, DL_BACKEND_MONGO, 1);
    }
    return NULL;
}

/* Four workers moving at once: the counts add up, and the merged gauges end
 * at the state every worker ended in (no stale merged value). */
DL_TEST(backend_stats_threads)
{
    enum { N = 4 };
    dl_metrics_t *m = dl_metrics_new(N);
    dl_backend_stats_t bs;
    EXPECT_EQ(dl_backend_stats_init(&bs, m, N), 0);
    pthread_t t[N];
    flapper_t f[N];
    for (int i = 0; i < N; i++) {
        f[i].bs = &bs;
        f[i].w = i;
        pthread_create(&t[i], NULL, flap, &f[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    EXPECT(value1(m, bs.breaker, "mongodb") == 0);
    EXPECT(value1(m, bs.up, "mongodb") == 1);
    EXPECT(value2(m, bs.transitions, "mongodb", "open") == N * FLAPS);
    EXPECT(value2(m, bs.transitions, "mongodb", "closed") == N * FLAPS);
    EXPECT(value2(m, bs.transitions, "mongodb", "half_open") == 0);
    EXPECT(value2(m, bs.ops, "mongodb", "timeout") == N * FLAPS);
    dl_backend_stats_free(&bs);
    dl_metrics_free(m);
}
