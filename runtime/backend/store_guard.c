/*
 * store_guard.c - outcomes and the circuit breaker of the document store
 * (see store_guard.h). Only a timeout says that the server does not answer:
 * application errors (a bad query, a duplicate key, a missing document) are
 * answers and count as ok for the breaker. Each transition is logged once.
 */
#include "backend/store_guard.h"

#include <stdio.h>
#include <string.h>

#include "common/internal.h"

void dl_store_guard_init(dl_store_guard_t *g, int backend, int threshold, uint64_t cooldown_ms,
                         dl_backend_stats_t *stats)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    dl_breaker_init(&g->breaker, threshold, cooldown_ms);
    g->use_breaker = backend == DL_BACKEND_MONGO;
    g->backend = backend;
    g->up = -1;
    g->stats = stats;
}

void dl_store_guard_destroy(dl_store_guard_t *g)
{
    pthread_mutex_destroy(&g->lock);
}

/* Reports what changed; under g->lock (the stats take their own lock after it). */
static void report(dl_store_guard_t *g, int moved, int state, int up_changed, int up)
{
    const char *name = dl_backend_name(g->backend);
    if (moved) {
        if (state == DL_BREAKER_OPEN)
            dl_log(DL_LOG_WARN,
                   "%s: circuit breaker open after %d consecutive timeouts (%s); calls fail "
                   "fast for %llu ms, then one probes",
                   name, g->breaker.consecutive, g->last_error,
                   (unsigned long long)g->breaker.cooldown_ms);
        else if (state == DL_BREAKER_HALF_OPEN)
            dl_log(DL_LOG_INFO, "%s: circuit breaker half-open: one call probes", name);
        else
            dl_log(DL_LOG_INFO, "%s: circuit breaker closed: the server answers again", name);
        dl_backend_set_breaker(g->stats, -1, g->backend, state);
    }
    if (up_changed)
        dl_backend_set_up(g->stats, -1, g->backend, up);
}

int dl_store_guard_allow(dl_store_guard_t *g, int w, uint64_t now_ms, char *err, size_t errlen)
{
    if (!g->use_breaker)
        return 1;
    int moved = 0;
    pthread_mutex_lock(&g->lock);
    int ok = dl_breaker_allow(&g->breaker, now_ms, &moved);
    int state = g->breaker.state;
    if (!ok)
        snprintf(err, errlen, "%s: unavailable (circuit breaker open: %s)",
                 dl_backend_name(g->backend), g->last_error);
    report(g, moved, state, 0, 0);
    pthread_mutex_unlock(&g->lock);
    if (!ok)
        dl_backend_outcome(g->stats, w, g->backend, DL_OUTCOME_FAST_FAIL);
    return ok != 0;
}

void dl_store_guard_done(dl_store_guard_t *g, int w, uint64_t now_ms, int status,
                         const char *err)
{
    int outcome = status == 0 ? DL_OUTCOME_OK
                  : status == DL_ETIMEDOUT ? DL_OUTCOME_TIMEOUT
                  : status == DL_EIO || status == DL_ENOMEM || status == DL_EROFS ||
                          status == DL_EBUSY || status == DL_ENOSPC || status == DL_ECANTOPEN
                      ? DL_OUTCOME_ERROR
                  : DL_OUTCOME_OK; /* an answer: the query, the key, the document */
    if (status == DL_ECANCELED)
        return;
    dl_backend_outcome(g->stats, w, g->backend, outcome);
    if (!g->use_breaker)
        return;
    int moved, up;
    pthread_mutex_lock(&g->lock);
    if (outcome == DL_OUTCOME_TIMEOUT) {
        snprintf(g->last_error, sizeof(g->last_error), "%s", err != NULL ? err : "timed out");
        moved = dl_breaker_timeout(&g->breaker, now_ms);
        up = 0;
    } else {
        moved = dl_breaker_success(&g->breaker);
        up = 1;
    }
    int up_changed = g->up != up;
    g->up = up;
    report(g, moved, g->breaker.state, up_changed, up);
    pthread_mutex_unlock(&g->lock);
}

void dl_store_guard_state(dl_store_guard_t *g, int *breaker, char *last_error, size_t len)
{
    pthread_mutex_lock(&g->lock);
    *breaker = g->breaker.state;
    snprintf(last_error, len, "%s", g->up == 0 ? g->last_error : "");
    pthread_mutex_unlock(&g->lock);
}
