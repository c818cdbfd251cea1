/*
 * pool.h - a worker's keep-alive pool of outbound connections, by origin (a
 * key its users make: scheme, host, port and TLS settings for the HTTP
 * client, a name for cosockets). Idle connections wait in a list, newest
 * first, each for at most its idle time; beyond max_idle of them, one more
 * waits at the end for a second at most (a burst's surplus, kept for a load
 * that stays above the bound), and all are watched while idle:
 * anything the peer sends or a close makes them leave. An origin may cap its
 * connections; who asks beyond the cap waits in a bounded queue (OpenResty's
 * pool_size and backlog) and is handed the next connection let go or the
 * next free slot. Everything runs on the loop's thread.
 */
#ifndef DL_OUT_POOL_H
#define DL_OUT_POOL_H

#include "outbound/conn.h"

typedef struct dl_out_pool_s dl_out_pool_t;
typedef struct dl_out_waiter_s dl_out_waiter_t;

#define DL_OUT_MAX_KEY 1024

typedef struct {
    int max_idle;      /* idle connections kept per origin (0: none); more
                          stay a second at most */
    int max_conns;     /* connections per origin, busy or idle (0: no cap) */
    int max_waiting;   /* callers queued at the cap (0: none wait) */
    uint64_t idle_ms;  /* an idle connection is closed after this (0: no limit) */
} dl_out_limits_t;

/**
 * A queued caller's turn: c is a connection to reuse, or NULL when the caller
 * now holds a slot and connects itself (then dl_out_pool_attach() or
 * dl_out_pool_unslot()).
 */
typedef void (*dl_out_pool_cb)(dl_out_conn_t *c, void *arg);

dl_out_pool_t *dl_out_pool_new(uv_loop_t *loop);
/** Closes the idle connections and frees the pool. Busy connections and
 * waiters must be gone (their users close or cancel them first). */
void dl_out_pool_free(dl_out_pool_t *p);

/**
 * Asks for a connection to key under lim. Returns
 *   0: *c is an idle connection, checked alive, now busy (c->reused counts);
 *   1: a slot is held: the caller connects, then dl_out_pool_attach(), or
 *      dl_out_pool_unslot() if it could not;
 *   2: queued at the cap: cb comes later (*w cancels it);
 *   DL_EBUSY: the queue is full; DL_ENOMEM; DL_EINVAL (key too long).
 */
int dl_out_pool_acquire(dl_out_pool_t *p, const char *key, const dl_out_limits_t *lim,
                        dl_out_pool_cb cb, void *arg, dl_out_conn_t **c, dl_out_waiter_t **w);
/** Leaves the queue; the callback is never called. */
void dl_out_pool_cancel(dl_out_waiter_t *w);
/** A connection made in a slot of key becomes the origin's (busy). */
void dl_out_pool_attach(dl_out_pool_t *p, const char *key, dl_out_conn_t *c);
/** The slot of key whose connect failed goes back (the next waiter gets it). */
void dl_out_pool_unslot(dl_out_pool_t *p, const char *key);

/**
 * Done with c. reusable (the exchange ended cleanly and nothing is unread)
 * keeps it idle under lim when it is alive and there is room, or hands it
 * to the first waiter; otherwise c is closed. A connection outside any pool
 * is closed.
 */
void dl_out_pool_release(dl_out_conn_t *c, int reusable, const dl_out_limits_t *lim);

typedef struct {
    int idle, busy, waiting, origins;
} dl_out_pool_stats_t;
void dl_out_pool_stats(const dl_out_pool_t *p, dl_out_pool_stats_t *out);

#endif
