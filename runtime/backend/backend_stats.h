/*
 * backend_stats.h - what the operator sees of each backend (Redis, MongoDB,
 * SQLite) in /metrics: operations by outcome, whether each is up, and its
 * circuit breaker's state and transitions. Workers report here; the state
 * gauges are merged over the workers (up only when every worker's connection
 * is up, the breaker state the worst one), so an operator reads one value.
 */
#ifndef DL_BACKEND_STATS_H
#define DL_BACKEND_STATS_H

#include <pthread.h>

#include "common/metrics.h"

enum { DL_BACKEND_REDIS, DL_BACKEND_MONGO, DL_BACKEND_SQLITE, DL_BACKEND_COUNT };
enum {
    DL_OUTCOME_OK,        /* answered */
    DL_OUTCOME_ERROR,     /* an error answer, a lost connection, an unknown outcome */
    DL_OUTCOME_TIMEOUT,   /* no answer in time */
    DL_OUTCOME_FAST_FAIL, /* refused at once: backend down or breaker open */
    DL_OUTCOME_COUNT
};

typedef struct {
    dl_metrics_t *m;
    int n_workers;
    int ops, up, breaker, transitions; /* metric ids */
    pthread_mutex_t lock;               /* the per-worker states below */
    signed char *state;                 /* [backend][worker]: -1 unused, else up (0/1) */
    signed char *breaker_state;         /* [backend][worker]: DL_BREAKER_* */
} dl_backend_stats_t;

/** Defines the metrics in m. Returns 0, DL_EINVAL or DL_ENOMEM. */
int dl_backend_stats_init(dl_backend_stats_t *bs, dl_metrics_t *m, int n_workers);
void dl_backend_stats_free(dl_backend_stats_t *bs);

/** Worker w (or any thread with w out of range) counts one operation. */
void dl_backend_outcome(dl_backend_stats_t *bs, int w, int backend, int outcome);

/** Worker w's connection to backend is up (1) or down (0); any thread. */
void dl_backend_set_up(dl_backend_stats_t *bs, int w, int backend, int up);

/** Worker w's breaker for backend is in state (DL_BREAKER_*): updates the
 * merged gauge and, when it differs from what w reported before, counts the
 * transition (the first report of "closed" is not one). Any thread. */
void dl_backend_set_breaker(dl_backend_stats_t *bs, int w, int backend, int state);

const char *dl_backend_name(int backend);

#endif /* DL_BACKEND_STATS_H */
