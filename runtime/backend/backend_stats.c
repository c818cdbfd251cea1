/*
 * backend_stats.c - backend outcomes, up gauges and breaker states in the
 * runtime's metrics registry (see backend_stats.h). Outcomes are counted in
 * the reporting worker's slot, without a lock; state changes are rare, so
 * they take a mutex, merge every worker's state and set the gauge in the
 * registry's shared slot in the same critical section (two workers moving at
 * once can never leave a stale merged value behind).
 */
#include "backend/backend_stats.h"

#include "backend/breaker.h"
#include "common/internal.h"

static const char *const backend_names[DL_BACKEND_COUNT] = {"redis", "mongodb", "sqlite"};
static const char *const outcome_names[DL_OUTCOME_COUNT] = {"ok", "error", "timeout",
                                                            "fast_fail"};

const char *dl_backend_name(int backend)
{
    return backend >= 0 && backend < DL_BACKEND_COUNT ? backend_names[backend] : "unknown";
}

int dl_backend_stats_init(dl_backend_stats_t *bs, dl_metrics_t *m, int n_workers)
{
    static const char *const ops_labels[] = {"backend", "outcome"};
    static const char *const backend_label[] = {"backend"};
    static const char *const transition_labels[] = {"backend", "state"};

    memset(bs, 0, sizeof(*bs));
    bs->m = m;
    bs->n_workers = n_workers > 0 ? n_workers : 1;
    bs->ops = dl_metric_define(m, DL_METRIC_COUNTER, "backend_operations_total",
                               "Backend operations by outcome (ok, error, timeout, fast_fail)",
                               ops_labels, 2, NULL, 0);
    bs->up = dl_metric_define(m, DL_METRIC_GAUGE, "backend_up",
                              "1 while every worker has a live connection to the backend",
                              backend_label, 1, NULL, 0);
    bs->breaker = dl_metric_define(m, DL_METRIC_GAUGE, "backend_breaker_state",
                                   "Circuit breaker: 0 closed, 1 half-open, 2 open (the worst "
                                   "worker's)",
                                   backend_label, 1, NULL, 0);
    bs->transitions = dl_metric_define(m, DL_METRIC_COUNTER, "backend_breaker_transitions_total",
                                       "Circuit breaker moves, by the state moved to",
                                       transition_labels, 2, NULL, 0);
    if (bs->ops < 0 || bs->up < 0 || bs->breaker < 0 || bs->transitions < 0)
        return DL_EINVAL;
    size_t n = (size_t)DL_BACKEND_COUNT * (size_t)bs->n_workers;
    bs->state = dl_malloc(n);
    bs->breaker_state = dl_calloc(n, 1);
    if (bs->state == NULL || bs->breaker_state == NULL) {
        dl_backend_stats_free(bs);
        return DL_ENOMEM;
    }
    memset(bs->state, -1, n);
    pthread_mutex_init(&bs->lock, NULL);
    return 0;
}

void dl_backend_stats_free(dl_backend_stats_t *bs)
{
    if (bs->state != NULL && bs->breaker_state != NULL)
        pthread_mutex_destroy(&bs->lock);
    dl_free(bs->state);
    dl_free(bs->breaker_state);
    bs->state = NULL;
    bs->breaker_state = NULL;
}

void dl_backend_outcome(dl_backend_stats_t *bs, int w, int backend, int outcome)
{
    if (bs == NULL || bs->m == NULL || outcome < 0 || outcome >= DL_OUTCOME_COUNT)
        return;
    const char *labels[2] = {dl_backend_name(backend), outcome_names[outcome]};
    dl_metric_add(bs->m, w, bs->ops, labels, 1);
}

/* Slot of worker w for backend, or -1 (also without stats). */
static int slot(const dl_backend_stats_t *bs, int w, int backend)
{
    if (bs == NULL || bs->state == NULL || backend < 0 || backend >= DL_BACKEND_COUNT)
        return -1;
    if (w < 0 || w >= bs->n_workers)
        w = 0; /* a store shared by the workers reports as one */
    return backend * bs->n_workers + w;
}

/* slot(), with the lock taken when there is one. */
static int lock_slot(dl_backend_stats_t *bs, int w, int backend)
{
    int s = slot(bs, w, backend);
    if (s >= 0)
        pthread_mutex_lock(&bs->lock);
    return s;
}

void dl_backend_set_up(dl_backend_stats_t *bs, int w, int backend, int up)
{
    int s = lock_slot(bs, w, backend);
    if (s < 0)
        return;
    const char *label[1] = {dl_backend_name(backend)};
    bs->state[s] = (signed char)(up ? 1 : 0);
    int all = 1;
    for (int i = 0; i < bs->n_workers; i++)
        if (bs->state[backend * bs->n_workers + i] == 0)
            all = 0;
    dl_metric_set(bs->m, bs->n_workers, bs->up, label, all);
    pthread_mutex_unlock(&bs->lock);
}

void dl_backend_set_breaker(dl_backend_stats_t *bs, int w, int backend, int state)
{
    int s = lock_slot(bs, w, backend);
    if (s < 0)
        return;
    const char *label[1] = {dl_backend_name(backend)};
    int moved = bs->breaker_state[s] != (signed char)state;
    bs->breaker_state[s] = (signed char)state;
    int worst = 0;
    for (int i = 0; i < bs->n_workers; i++)
        worst = DL_MAX(worst, (int)bs->breaker_state[backend * bs->n_workers + i]);
    dl_metric_set(bs->m, bs->n_workers, bs->breaker, label, worst);
    pthread_mutex_unlock(&bs->lock);
    /* every state's series exists from the first report on, at 0 until a move */
    for (int st = DL_BREAKER_CLOSED; st <= DL_BREAKER_OPEN; st++) {
        const char *tlabels[2] = {label[0], dl_breaker_state_name(st)};
        dl_metric_add(bs->m, w, bs->transitions, tlabels, moved && st == state ? 1 : 0);
    }
}
