/*
 * redis_pool.h - a pool of asynchronous Redis connections (hiredis 0.14 over
 * libuv) owned by one worker thread's loop (configured by redis_config.h):
 * pipelined binary-safe commands with a deadline, a bounded
 * offline queue while connections come up, fail-fast while Redis is down or
 * the circuit breaker is open, background reconnection with capped
 * exponential backoff and jitter, and re-sends only where they cannot apply
 * a write twice. Everything here runs on the loop's thread; nothing is locked.
 */
#ifndef DL_REDIS_POOL_H
#define DL_REDIS_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "backend/redis_config.h"

typedef struct dl_redis_pool_s dl_redis_pool_t;
typedef struct dl_redis_cmd_s dl_redis_cmd_t;

/**
 * Completion of dl_redis_pool_send(). status is 0 with n replies (a reply may
 * be REDIS_REPLY_ERROR: that is a Redis-level error, still status 0), or,
 * with replies NULL and n 0: DL_ETIMEDOUT (no reply within cmd_timeout_ms,
 * queueing included; a written command may have run), DL_EUNKNOWN (the
 * connection dropped after the pipeline was written and it may not be
 * re-sent, or a write re-sent after such an attempt failed in the end: it
 * may or may not have run), DL_EIO (the connection dropped and
 * re-sends ran out), DL_EUNAVAIL (Redis went down or the breaker opened while
 * it waited for a connection), DL_EREDIS (a connection could not log in or
 * select the db: see dl_redis_pool_last_error()), DL_ECANCELED (the pool was
 * freed) or DL_ENOMEM. The replies are borrowed: valid only during the
 * callback. Runs on the loop's thread; it may send, cancel other commands or
 * free the pool.
 */
typedef void (*dl_redis_reply_cb)(int status, redisReply **replies, int n, void *arg);

/**
 * Creates a pool on `loop` (copies cfg) and starts connecting its
 * cfg->pool_size connections. Each connection sends AUTH, SELECT, CLIENT
 * SETNAME and PING first and takes commands only once all have answered.
 * Host names are resolved with uv_getaddrinfo (IPv4 preferred). Returns NULL
 * when out of memory. Loop thread only.
 */
dl_redis_pool_t *dl_redis_pool_new(uv_loop_t *loop, const dl_redis_config_t *cfg);

/* dl_redis_pool_sendf() flags */
#define DL_REDIS_IDEMPOTENT 1 /* the caller says the pipeline may run twice: re-send it freely */

/**
 * Sends a pipeline of ncmds commands, command i being argcs[i] arguments
 * argvs[i][j] of argvlens[i][j] bytes (binary safe), on one connection in one
 * round trip; cb gets all ncmds replies in order. The bytes are copied. While
 * connections come up (none ready, none failed yet) the pipeline waits in the
 * offline queue; the deadline (cmd_timeout_ms) counts from this call.
 *
 * Re-sends never apply a write twice: when its connection drops, a pipeline
 * is sent again (up to max_retries times) only if none of its commands was
 * written to the socket, or every command is on the read-only list
 * (dl_redis_is_read_only()), or flags has DL_REDIS_IDEMPOTENT. Otherwise it
 * fails with DL_EUNKNOWN.
 *
 * Returns 0 and cb will be called exactly once, never from inside this call;
 * or a negative code and cb is never called: DL_EUNAVAIL (at once, no
 * queueing: no live connection and the last attempt failed, or the circuit
 * breaker is open or half-open; dl_redis_pool_last_error() says why),
 * DL_EOFFLINE (offline queue full), DL_EREDIS (connections fail to log in),
 * DL_ECANCELED (pool being freed),
 * DL_ENOMEM, DL_EINVAL (no command, an empty one, or one that would break a
 * shared connection: (P|S)(UN)SUBSCRIBE, MONITOR, SELECT, AUTH, HELLO, QUIT,
 * RESET, SYNC, PSYNC, CLIENT REPLY, a MULTI or WATCH not closed by EXEC or
 * DISCARD (or UNWATCH) within the same pipeline). *out (when out is not NULL)
 * is the command's handle for dl_redis_cmd_cancel(), valid until cb runs.
 */
int dl_redis_pool_sendf(dl_redis_pool_t *p, int ncmds, const int *argcs,
                        const char *const *const *argvs, const size_t *const *argvlens,
                        int flags, dl_redis_reply_cb cb, void *arg, dl_redis_cmd_t **out);

/** dl_redis_pool_sendf() with no flags. */
int dl_redis_pool_send(dl_redis_pool_t *p, int ncmds, const int *argcs,
                       const char *const *const *argvs, const size_t *const *argvlens,
                       dl_redis_reply_cb cb, void *arg, dl_redis_cmd_t **out);

/** 1 when the command (name of len bytes, any case) only reads, so a re-send
 * cannot change anything: GET, MGET, EXISTS, TTL, HGETALL, SCAN, PING... */
int dl_redis_is_read_only(const char *name, size_t len);

/* What dl_redis_event_cb reports. */
enum {
    DL_REDIS_EV_OUTCOME, /* value: DL_OUTCOME_* of a finished or refused send (backend_stats.h) */
    DL_REDIS_EV_UP,      /* value: 1 a connection is ready again, 0 Redis is down */
    DL_REDIS_EV_BREAKER, /* value: the breaker's new DL_BREAKER_* state */
};
typedef void (*dl_redis_event_cb)(int event, int value, void *arg);

/** Reports outcomes and state changes to cb (NULL: none). Loop thread; cb
 * runs on it and must not call back into the pool. */
void dl_redis_pool_observe(dl_redis_pool_t *p, dl_redis_event_cb cb, void *arg);

/** 1 when a send may go out now: the pool is not down and its breaker is
 * closed (a send would not fail at once with DL_EUNAVAIL). */
int dl_redis_pool_available(const dl_redis_pool_t *p);

/** Names the pool in its log lines: "redis HOST:PORT (label)". */
void dl_redis_pool_set_label(dl_redis_pool_t *p, const char *label);

/** Why the pool is unavailable or the last failure (""), valid until the next
 * loop turn. */
const char *dl_redis_pool_last_error(const dl_redis_pool_t *p);

/**
 * Detaches a pending command: its callback will never be called. Safe at any
 * time before the callback ran (or from inside it, where it does nothing).
 * A command already written still occupies its connection until its replies
 * arrive; they are dropped then. NULL is a no-op.
 */
void dl_redis_cmd_cancel(dl_redis_cmd_t *cmd);

/**
 * Closes every connection; pending commands get DL_ECANCELED (most from
 * inside this call; those on a connection whose callback is running when it
 * returns). Memory is released from close callbacks, so the caller must run
 * the loop afterwards until the handles close (uv_run). Later sends return
 * DL_ECANCELED. Callable from a reply callback. NULL is a no-op.
 */
void dl_redis_pool_free(dl_redis_pool_t *p);

typedef struct {
    int connections;     /* connections connecting or ready */
    int ready;           /* connections taking commands */
    size_t queued;       /* pipelines waiting for a ready connection */
    size_t inflight;     /* pipelines written and waiting for replies */
    uint64_t reconnects; /* connection attempts after a failure or a drop */
    uint64_t timeouts;   /* pipelines that got DL_ETIMEDOUT */
    uint64_t errors;     /* failed connects, drops, failed setup commands */
    uint64_t fast_fails; /* sends refused at once (down, breaker open) */
    uint64_t unknown;    /* pipelines that got DL_EUNKNOWN */
    uint64_t resent;     /* re-sends after a dropped connection */
    int down;            /* no live connection and the last attempt failed */
    int breaker;         /* DL_BREAKER_* */
    uint64_t breaker_transitions;
    uint64_t down_ms;    /* how long it has been down (0 when up) */
    char last_error[128];
} dl_redis_stats_t;

/** Copies the pool's counters. */
void dl_redis_pool_stats(const dl_redis_pool_t *p, dl_redis_stats_t *out);

#endif /* DL_REDIS_POOL_H */
