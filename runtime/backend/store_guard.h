/*
 * store_guard.h - what stands between the Lua db calls and the document
 * store (store.h): every operation's outcome goes to /metrics, and for a
 * store across the network (MongoDB) a circuit breaker (breaker.h) shared by
 * all workers: after `threshold` consecutive timeouts (no server reachable
 * within serverSelectionTimeoutMS, a socket timeout) calls fail at once with
 * DL_EUNAVAIL for the cool-down, then one call goes through as the probe and
 * its answer closes the breaker. Thread-safe: workers call it from their
 * loops.
 */
#ifndef DL_STORE_GUARD_H
#define DL_STORE_GUARD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend_stats.h"
#include "backend/breaker.h"

typedef struct {
    pthread_mutex_t lock;
    dl_breaker_t breaker;
    int use_breaker;         /* 0: outcomes only (SQLite, a local file) */
    int backend;             /* DL_BACKEND_* */
    int up;                  /* -1 not known yet */
    char last_error[256];
    dl_backend_stats_t *stats; /* not owned; NULL: no metrics */
} dl_store_guard_t;

/** A guard for backend (DL_BACKEND_MONGO uses the breaker, others do not);
 * threshold and cooldown_ms as in dl_breaker_init(). */
void dl_store_guard_init(dl_store_guard_t *g, int backend, int threshold, uint64_t cooldown_ms,
                         dl_backend_stats_t *stats);
void dl_store_guard_destroy(dl_store_guard_t *g);

/**
 * May an operation start at now_ms? 1: yes. 0: no, fail it with
 * DL_EUNAVAIL and the message written to err (the breaker is open, or its
 * probe is out); the refusal is counted as a fast_fail of worker w.
 */
int dl_store_guard_allow(dl_store_guard_t *g, int w, uint64_t now_ms, char *err, size_t errlen);

/** An allowed operation ended with status (0 or DL_E*) and err; counts it
 * and moves the breaker. */
void dl_store_guard_done(dl_store_guard_t *g, int w, uint64_t now_ms, int status,
                         const char *err);

/** Copies the breaker's state and the last connectivity error (may be ""). */
void dl_store_guard_state(dl_store_guard_t *g, int *breaker, char *last_error, size_t len);

#endif /* DL_STORE_GUARD_H */
