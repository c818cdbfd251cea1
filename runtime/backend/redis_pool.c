/*
 * redis_pool.c - a worker's pool of asynchronous Redis connections. Each
 * connection is a hiredis 0.14 async context on the worker's libuv loop; it
 * logs in (AUTH, SELECT, CLIENT SETNAME, PING) before it takes commands. A
 * pipeline sent to the pool joins the connection already written to in this
 * loop turn, else goes to the ready one with the fewest pipelines in flight,
 * or waits in a bounded offline queue while connections come up. hiredis
 * 0.14 has no timeouts, so the pool keeps every pipeline in one list in
 * deadline order (all share cmd_timeout_ms) under one timer: a pipeline past
 * its deadline fails with DL_ETIMEDOUT and its connection, now suspect, is
 * freed and reconnected, so a late reply can never be taken for another
 * command's.
 *
 * Faults cost a caller microseconds, not the timeout. The pool is "down" when
 * no connection is ready and a connection attempt failed since one last was
 * (refused, reset, login refused, connect timeout): sends fail at once with
 * DL_EUNAVAIL and what waited is failed on the next loop turn, while each
 * connection retries in the background (at once after a drop, then 50 ms
 * doubling to reconnect_max_ms, each wait drawn from its upper half). A server
 * that accepts but does not answer trips the circuit breaker (breaker.h)
 * after breaker_threshold consecutive timeouts: sends fail fast for the
 * cool-down, then one PING probes, and its answer closes the breaker.
 *
 * When a connection drops, hiredis calls each pending reply callback with
 * NULL. A pipeline is sent again (up to max_retries times) only when that
 * cannot apply a write twice: none of its bytes left hiredis's output buffer
 * (each context counts the bytes it was given; what is still in obuf was not
 * written), or it only reads, or its sender said it is idempotent. Any other
 * written pipeline fails with DL_EUNKNOWN: it may or may not have run; so
 * does a write re-sent after a written attempt that fails in the end (down,
 * re-sends used up): an earlier attempt may have run it.
 *
 * Lifetimes: a pipeline's memory lives until the user callback has run (or it
 * was canceled) and hiredis holds no callback for it any more; a detached one
 * still waiting for hiredis is a "zombie". A context is freed by hiredis
 * itself on errors, or by us with redisAsyncFree() (deferred by hiredis when
 * called from inside one of its callbacks). The pool's memory goes in the
 * close callbacks of its timers, after every context is gone. Everything runs
 * on the loop's thread. Foreign errors (hiredis errstr, uv codes, Redis error
 * replies during login) become DL_E* codes and last_error here. The libuv glue
 * is ours, not hiredis 0.14's adapter, which hangs on a socket error.
 */
#include "backend/redis_pool.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/sds.h>

#include "backend/backend_stats.h"
#include "backend/breaker.h"
#include "common/internal.h"
#include "common/list.h"
#include "common/num.h"

#define BACKOFF_STEP_MS 50
#define STICKY_INFLIGHT 64

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

enum { CONN_IDLE, CONN_RESOLVING, CONN_CONNECTING, CONN_READY, CONN_CLOSED };

/* The setup commands a connection sends before it is ready, in order. */
enum { STEP_AUTH, STEP_SELECT, STEP_SETNAME, STEP_PING, STEP_COUNT };
static const char *const step_names[STEP_COUNT] = {"AUTH", "SELECT", "CLIENT SETNAME", "PING"};

typedef struct conn_s {
    dl_redis_pool_t *pool;
    redisAsyncContext *ac;  /* NULL unless CONNECTING or READY */
    uv_timer_t timer;       /* the reconnect delay while IDLE, else the connect deadline */
    uv_getaddrinfo_t gai;
    int state;
    int gai_busy;           /* a lookup runs; its answer is used if still RESOLVING */
    int attempt;            /* failures since the connection was last ready */
    int steps[STEP_COUNT];  /* setup commands sent */
    int nsteps;
    int step;               /* setup replies received */
    uint64_t opened_at;     /* loop time the current attempt's connect began */
    int inflight;           /* pipelines with replies outstanding here */
} conn_t;

struct dl_redis_cmd_s {
    dl_list_t node;                /* in pool->live (deadline order), or pool->zombies */
    dl_list_t qnode;               /* in pool->queue while waiting for a connection */
    dl_redis_pool_t *pool;
    conn_t *conn;                  /* connection of the current attempt, or NULL */
    redisAsyncContext *ac;         /* its context, which holds `outstanding` callbacks */
    dl_redis_reply_cb cb;
    void *arg;
    uint64_t deadline;             /* loop time in ms */
    int ncmds;
    int outstanding;               /* reply callbacks hiredis still holds */
    int nreplies;                  /* copies of replies 0..n-2 of this attempt */
    int retries;
    int hold;                      /* > 0 while our code still uses it after a callback */
    size_t wire_end0;              /* the context's byte count after its first command */
    unsigned queued : 1;
    unsigned detached : 1;         /* the user callback ran or the command was canceled */
    unsigned zombie : 1;
    unsigned failed : 1;           /* this attempt lost its connection */
    unsigned oom : 1;
    unsigned reached : 1;          /* this failed attempt had written a whole command */
    unsigned ran : 1;              /* some attempt had: a write may have run */
    unsigned reads_only : 1;       /* every command only reads: nothing can have run */
    unsigned idempotent : 1;       /* read-only, or the sender allows re-sends */
    unsigned internal : 1;         /* the breaker's probe: not a caller's command */
    redisReply **replies;          /* ncmds slots, in the same allocation */
    size_t *offs;                  /* ncmds + 1 offsets of each command in buf */
    char *buf;                     /* the pipeline in RESP, NUL-terminated */
};

struct dl_redis_pool_s {
    uv_loop_t *loop;
    dl_redis_config_t cfg;
    int host_is_ip;
    conn_t *conns;
    int nconns;
    int nready;
    int rr;                        /* where the next pick starts */
    dl_list_t live;                /* commands whose callback is due, deadline order */
    dl_list_t zombies;
    dl_list_t queue;               /* linked through qnode */
    size_t nqueued;
    size_t ninflight;
    uv_timer_t sweep;              /* fires at the first deadline in `live` */
    uv_prepare_t flush;            /* writes the turn's commands before the loop polls */
    dl_list_t flushes;             /* uvev_t to write at the end of this loop turn */
    int closing;
    int refs;                      /* open handles and running lookups */
    int dispatching;
    int login_failed;              /* the last setup failed on AUTH/SELECT; none ready since */
    int down;                      /* none ready and an attempt failed since one was */
    int fail_due;                  /* the sweep fails what waits on its next run */
    int reported_up;               /* -1 nothing reported yet, else the last EV_UP value */
    int setname_warned;
    uint64_t down_since;
    dl_breaker_t breaker;
    uv_timer_t breaker_timer;      /* the cool-down of an open breaker */
    dl_redis_cmd_t *probe;         /* the half-open PING */
    int probe_failed;              /* how the last probe failed (for the log line), or 0 */
    uint64_t rng;                  /* xorshift state for the backoff jitter */
    dl_redis_event_cb observe;
    void *observe_arg;
    uint64_t reconnects;
    uint64_t timeouts;
    uint64_t errors;
    uint64_t fast_fails;
    uint64_t unknown;
    uint64_t resent;
    char last_error[128];
    char who[320];                 /* "redis HOST:PORT (worker N)", for the log */
};

/* ------------------------------------------------------------------------ */
/* Lists                                                                    */
/* ------------------------------------------------------------------------ */

/* The first command of a deadline list (live, zombies) or NULL. */
static dl_redis_cmd_t *list_first(const dl_list_t *l)
{
    return dl_list_empty(l) ? NULL : dl_list_entry(l->next, dl_redis_cmd_t, node);
}

/* The first command waiting for a connection, or NULL. */
static dl_redis_cmd_t *queue_first(const dl_redis_pool_t *p)
{
    return dl_list_empty(&p->queue) ? NULL : dl_list_entry(p->queue.next, dl_redis_cmd_t, qnode);
}

static void queue_push(dl_redis_pool_t *p, dl_redis_cmd_t *cmd, int front)
{
    DL_ASSERT(!cmd->queued);
    if (front)
        dl_list_insert_head(&p->queue, &cmd->qnode);
    else
        dl_list_insert_tail(&p->queue, &cmd->qnode);
    cmd->queued = 1;
    p->nqueued++;
}

static void queue_remove(dl_redis_pool_t *p, dl_redis_cmd_t *cmd)
{
    DL_ASSERT(cmd->queued);
    dl_list_remove(&cmd->qnode);
    cmd->queued = 0;
    p->nqueued--;
}

/* ------------------------------------------------------------------------ */
/* Commands: checks, encoding, reply copies, lifetime                      */
/* ------------------------------------------------------------------------ */

static int name_is(const char *s, size_t n, const char *name)
{
    return s != NULL && dl_strncasecmp_eq(s, n, name, strlen(name));
}

/* Commands that only read: sending one twice cannot change anything. */
int dl_redis_is_read_only(const char *name, size_t len)
{
    static const char *const reads[] = {
        "get",       "mget",      "exists",   "ttl",      "pttl",        "expiretime",
        "type",      "strlen",    "getrange", "getbit",   "bitcount",    "bitpos",
        "scan",      "sscan",     "hscan",    "zscan",    "keys",        "dbsize",
        "info",      "ping",      "echo",     "time",     "hget",        "hmget",
        "hgetall",   "hexists",   "hlen",     "hkeys",    "hvals",       "hstrlen",
        "smembers",  "sismember", "smismember", "scard",  "srandmember", "sinter",
        "sunion",    "sdiff",     "lrange",   "llen",     "lindex",      "lpos",
        "zrange",    "zrangebyscore", "zrevrange", "zrevrangebyscore", "zrangebylex",
        "zscore",    "zmscore",   "zcard",    "zcount",   "zrank",       "zrevrank",
        "zlexcount", "xrange",    "xrevrange", "xlen",    "pfcount",     "geopos",
        "geodist",   "georadius_ro", "georadiusbymember_ro", "geosearch", "object",
        "memory",    "lastsave",  "role",     "substr",
    };
    if (name == NULL)
        return 0;
    for (size_t k = 0; k < DL_ARRAY_SIZE(reads); k++)
        if (name_is(name, len, reads[k]))
            return 1;
    return 0;
}

/* Whether a re-send of the pipeline is harmless: every command reads only
 * (SCRIPT LOAD and SCRIPT EXISTS too: loading a script twice changes
 * nothing). */
static int pipeline_reads_only(int ncmds, const int *argcs, const char *const *const *argvs,
                               const size_t *const *argvlens)
{
    for (int i = 0; i < ncmds; i++) {
        const char *name = argvs[i][0];
        size_t len = argvlens[i][0];
        if (dl_redis_is_read_only(name, len))
            continue;
        if (name_is(name, len, "script") && argcs[i] >= 2 &&
            (name_is(argvs[i][1], argvlens[i][1], "load") ||
             name_is(argvs[i][1], argvlens[i][1], "exists")))
            continue;
        return 0;
    }
    return 1;
}

/*
 * Refuses what would break a connection shared by every request: pub/sub and
 * MONITOR change what hiredis expects to read (hiredis even takes any command
 * starting with 'p' followed by "subscribe"/"monitor" for one), SELECT, AUTH,
 * HELLO and RESET change the connection's state, CLIENT REPLY desynchronizes
 * replies, and a MULTI or WATCH left open would capture other requests'
 * commands.
 */
static int check_pipeline(int ncmds, const int *argcs, const char *const *const *argvs,
                          const size_t *const *argvlens)
{
    static const char *const refused[] = {
        "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
        "monitor",   "pmonitor",   "select",     "auth",        "hello",        "quit",
        "reset",     "sync",       "psync",
    };
    int multi = 0, watch = 0;

    for (int i = 0; i < ncmds; i++) {
        if (argcs[i] < 1 || argvs[i] == NULL || argvlens[i] == NULL)
            return DL_EINVAL;
        for (int j = 0; j < argcs[i]; j++)
            if (argvs[i][j] == NULL && argvlens[i][j] > 0)
                return DL_EINVAL;
        const char *name = argvs[i][0];
        size_t len = argvlens[i][0];
        for (size_t k = 0; k < DL_ARRAY_SIZE(refused); k++)
            if (name_is(name, len, refused[k]))
                return DL_EINVAL;
        if (name_is(name, len, "client") && argcs[i] >= 2 &&
            name_is(argvs[i][1], argvlens[i][1], "reply"))
            return DL_EINVAL;
        if (name_is(name, len, "multi")) {
            multi = 1;
        } else if (name_is(name, len, "watch")) {
            watch = 1;
        } else if (name_is(name, len, "unwatch")) {
            watch = 0;
        } else if (name_is(name, len, "exec") || name_is(name, len, "discard")) {
            multi = 0;
            watch = 0;
        }
    }
    return multi || watch ? DL_EINVAL : 0;
}

static size_t ndigits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Writes "*<v>\r\n" or "$<v>\r\n". */
static char *put_header(char *w, char kind, size_t v)
{
    *w++ = kind;
    w += dl_num_format_i64((int64_t)v, w); /* a length: far below 2^63 */
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

static int add_size(size_t *total, size_t n)
{
    if (*total > SIZE_MAX - n)
        return -1;
    *total += n;
    return 0;
}

/* One allocation: the struct, the reply slots, the offsets and the RESP bytes. */
static dl_redis_cmd_t *cmd_new(dl_redis_pool_t *p, int ncmds, const int *argcs,
                               const char *const *const *argvs,
                               const size_t *const *argvlens)
{
    size_t total = 0;
    for (int i = 0; i < ncmds; i++) {
        if (add_size(&total, 3 + ndigits((size_t)argcs[i])) < 0)
            return NULL;
        for (int j = 0; j < argcs[i]; j++) {
            size_t len = argvlens[i][j];
            if (add_size(&total, 3 + ndigits(len)) < 0 || add_size(&total, len) < 0 ||
                add_size(&total, 2) < 0)
                return NULL;
        }
    }
    size_t head = sizeof(dl_redis_cmd_t) + (size_t)ncmds * sizeof(redisReply *) +
                  ((size_t)ncmds + 1) * sizeof(size_t);
    if (total > SIZE_MAX - head - 1)
        return NULL;
    dl_redis_cmd_t *cmd = dl_malloc(head + total + 1);
    if (cmd == NULL)
        return NULL;
    memset(cmd, 0, sizeof(*cmd));
    dl_list_init(&cmd->node);
    dl_list_init(&cmd->qnode);
    cmd->pool = p;
    cmd->ncmds = ncmds;
    cmd->replies = (redisReply **)(cmd + 1);
    cmd->offs = (size_t *)(cmd->replies + ncmds);
    cmd->buf = (char *)(cmd->offs + ncmds + 1);
    memset(cmd->replies, 0, (size_t)ncmds * sizeof(redisReply *));

    char *w = cmd->buf;
    for (int i = 0; i < ncmds; i++) {
        cmd->offs[i] = (size_t)(w - cmd->buf);
        w = put_header(w, '*', (size_t)argcs[i]);
        for (int j = 0; j < argcs[i]; j++) {
            size_t len = argvlens[i][j];
            w = put_header(w, '$', len);
            if (len > 0)
                memcpy(w, argvs[i][j], len);
            w += len;
            *w++ = '\r';
            *w++ = '\n';
        }
    }
    cmd->offs[ncmds] = (size_t)(w - cmd->buf);
    DL_ASSERT(cmd->offs[ncmds] == total);
    /* hiredis peeks one byte past the last command when it looks for pub/sub. */
    *w = '\0';
    return cmd;
}

static void reply_free(redisReply *r)
{
    if (r == NULL)
        return;
    if (r->element != NULL) {
        for (size_t i = 0; i < r->elements; i++)
            reply_free(r->element[i]);
        dl_free(r->element);
    }
    dl_free(r->str);
    dl_free(r);
}

/* Keeps a pipeline's earlier replies, which hiredis frees after each callback. */
static redisReply *reply_copy(const redisReply *r)
{
    redisReply *c = dl_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->type = r->type;
    c->integer = r->integer;
    c->len = r->len;
    if (r->str != NULL) {
        c->str = dl_malloc(r->len + 1);
        if (c->str == NULL) {
            dl_free(c);
            return NULL;
        }
        memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
    }
    if (r->element != NULL && r->elements > 0) {
        c->element = dl_calloc(r->elements, sizeof(redisReply *));
        if (c->element == NULL) {
            reply_free(c);
            return NULL;
        }
        c->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i] == NULL)
                continue;
            c->element[i] = reply_copy(r->element[i]);
            if (c->element[i] == NULL) {
                reply_free(c);
                return NULL;
            }
        }
    }
    return c;
}

static void drop_replies(dl_redis_cmd_t *cmd)
{
    for (int i = 0; i < cmd->nreplies; i++) {
        reply_free(cmd->replies[i]);
        cmd->replies[i] = NULL;
    }
    cmd->nreplies = 0;
}

/* Takes a command off the deadline list and the queue; its callback is due no more. */
static void detach(dl_redis_cmd_t *cmd)
{
    dl_redis_pool_t *p = cmd->pool;
    if (cmd->detached)
        return;
    cmd->detached = 1;
    dl_list_remove(&cmd->node);
    if (cmd->queued)
        queue_remove(p, cmd);
}

/* Frees a detached command once nothing refers to it, or parks it as a zombie. */
static void release(dl_redis_cmd_t *cmd)
{
    dl_redis_pool_t *p = cmd->pool;
    if (cmd->hold > 0 || !cmd->detached)
        return;
    if (cmd->outstanding > 0) {
        if (!cmd->zombie) {
            cmd->zombie = 1;
            dl_list_insert_tail(&p->zombies, &cmd->node);
        }
        return;
    }
    if (cmd->zombie)
        dl_list_remove(&cmd->node);
    drop_replies(cmd);
    dl_free(cmd);
}

static void report(dl_redis_pool_t *p, int event, int value)
{
    if (p->observe != NULL)
        p->observe(event, value, p->observe_arg);
}

/* The outcome a finished or refused send counts as (backend_stats.h); -1 for
 * none (canceled). An error reply is an answer: Redis itself is fine. */
static int outcome_of(int status)
{
    switch (status) {
    case 0:
        return DL_OUTCOME_OK;
    case DL_ETIMEDOUT:
        return DL_OUTCOME_TIMEOUT;
    case DL_EUNAVAIL:
    case DL_EOFFLINE:
        return DL_OUTCOME_FAST_FAIL;
    case DL_ECANCELED:
        return -1;
    default:
        return DL_OUTCOME_ERROR;
    }
}

/* Runs the user callback once. The command stays valid during it, so a
 * dl_redis_cmd_cancel() of itself from there is a no-op. */
static void complete(dl_redis_cmd_t *cmd, int status, redisReply **replies, int n)
{
    dl_redis_pool_t *p = cmd->pool;
    detach(cmd);
    if (!cmd->internal) {
        int o = outcome_of(status);
        if (status == DL_EUNAVAIL)
            p->fast_fails++;
        else if (status == DL_EUNKNOWN)
            p->unknown++;
        if (o >= 0)
            report(p, DL_REDIS_EV_OUTCOME, o);
    }
    cmd->hold++;
    cmd->cb(status, replies, n, cmd->arg);
    cmd->hold--;
    release(cmd);
}

static void fail_queue(dl_redis_pool_t *p, int status)
{
    for (;;) {
        dl_redis_cmd_t *cmd = queue_first(p);
        if (cmd == NULL)
            break;
        complete(cmd, status, NULL, 0);
    }
}

/* What waits for a connection while the pool is down or the breaker is not
 * closed fails now (the probe keeps waiting unless the pool is down). Runs
 * from the sweep timer, never inside a hiredis callback. */
static void fail_waiting(dl_redis_pool_t *p)
{
    int status = p->login_failed ? DL_EREDIS : DL_EUNAVAIL;
    while (!p->closing) {
        dl_redis_cmd_t *cmd = NULL;
        dl_list_t *it;
        dl_list_foreach(it, &p->queue) {
            dl_redis_cmd_t *q = dl_list_entry(it, dl_redis_cmd_t, qnode);
            if (!q->internal || p->down) {
                cmd = q;
                break;
            }
        }
        if (cmd == NULL)
            break;
        /* a re-sent write that an earlier attempt may have run stays unknown */
        complete(cmd, cmd->ran && !cmd->reads_only ? DL_EUNKNOWN : status, NULL, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* hiredis on libuv                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Our own glue instead of hiredis 0.14's adapters/libuv.h, which drops a
 * uv_poll error status: libuv reports POLLERR (a refused connect, a reset
 * connection) as UV_EBADF and stops the handle, so the context would wait
 * forever. Here an error runs the I/O hiredis asked for, which then meets the
 * socket error itself (the fix hiredis 1.0 made to its adapter). The struct
 * lives until its poll handle's close callback, after the context is gone.
 */
typedef struct uvev_s uvev_t;
struct uvev_s {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    dl_redis_pool_t *pool;
    uv_poll_t poll;
    int events;            /* what poll watches */
    int in_flush;
    size_t wire_total;     /* bytes given to the context's output buffer */
    dl_list_t fnode;       /* in the pool's flush list */
    int queued;
};

static void ev_poll_cb(uv_poll_t *h, int status, int events)
{
    uvev_t *e = h->data;
    int ev = events;
    if (status < 0)
        ev = e->events != 0 ? e->events : UV_READABLE;
    if (e->ac != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac != NULL && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_update(uvev_t *e)
{
    if (e->events != 0)
        uv_poll_start(&e->poll, e->events, ev_poll_cb);
    else
        uv_poll_stop(&e->poll);
}

static void ev_unqueue(uvev_t *e)
{
    if (!e->queued)
        return;
    dl_list_remove(&e->fnode);
    e->queued = 0;
}

/* The pool's prepare callback: the connections written to in this loop turn,
 * in the order they were first written to. */
static void on_flush(uv_prepare_t *h)
{
    dl_redis_pool_t *p = h->data;
    uv_prepare_stop(h);
    while (!dl_list_empty(&p->flushes)) {
        uvev_t *e = dl_list_entry(p->flushes.next, uvev_t, fnode);
        ev_unqueue(e);
        e->in_flush = 1;
        redisAsyncHandleWrite(e->ac); /* e outlives a disconnect: freed on close */
        e->in_flush = 0;
    }
}

static void ev_add_read(void *d)
{
    uvev_t *e = d;
    e->events |= UV_READABLE;
    ev_update(e);
}

static void ev_del_read(void *d)
{
    uvev_t *e = d;
    e->events &= ~UV_READABLE;
    ev_update(e);
}

/*
 * hiredis asks for a write after every command. Watching the socket for
 * writability costs two epoll_ctl calls per batch and a loop turn; instead the
 * commands of this turn are written once at its end, before the loop polls,
 * as Redis writes its clients' replies in beforeSleep. Only what the kernel
 * did not take (or a connect in progress, which writability reports) is left
 * to the poll.
 */
static void ev_add_write(void *d)
{
    uvev_t *e = d;
    dl_redis_pool_t *p = e->pool;
    if (e->in_flush || e->ac == NULL || !(e->ac->c.flags & REDIS_CONNECTED)) {
        e->events |= UV_WRITABLE;
        ev_update(e);
        return;
    }
    if (e->queued)
        return;
    e->queued = 1;
    dl_list_insert_tail(&p->flushes, &e->fnode);
    uv_prepare_start(&p->flush, on_flush);
}

static void ev_del_write(void *d)
{
    uvev_t *e = d;
    ev_unqueue(e);
    if (e->events & UV_WRITABLE) {
        e->events &= ~UV_WRITABLE;
        ev_update(e);
    }
}

static void ev_closed(uv_handle_t *h)
{
    dl_free(h->data);
}

static void ev_cleanup(void *d)
{
    uvev_t *e = d;
    ev_unqueue(e);
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, dl_redis_pool_t *p)
{
    if (ac->ev.data != NULL)
        return -1;
    uvev_t *e = dl_calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    dl_list_init(&e->fnode);
    if (uv_poll_init(p->loop, &e->poll, ac->c.fd) != 0) {
        dl_free(e);
        return -1;
    }
    e->poll.data = e;
    e->ac = ac;
    e->pool = p;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void conn_start(conn_t *c);
static void on_conn_timer(uv_timer_t *t);
static void dispatch(dl_redis_pool_t *p);
static void pool_release(dl_redis_pool_t *p);
static void breaker_moved(dl_redis_pool_t *p);

static const char *ac_error(const redisAsyncContext *ac, const char *dflt)
{
    return ac->c.err != 0 && ac->c.errstr[0] != '\0' ? ac->c.errstr : dflt;
}

static void log_failure(dl_redis_pool_t *p, const char *why)
{
    p->errors++;
    snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    if (!p->closing)
        dl_log(DL_LOG_DEBUG, "%s: %s", p->who, why);
}

static void on_sweep(uv_timer_t *t);

/* What waits is failed on the next loop turn, from the sweep timer. */
static void schedule_fail(dl_redis_pool_t *p)
{
    if (p->closing)
        return;
    p->fail_due = 1;
    uv_timer_start(&p->sweep, on_sweep, 0, 0);
}

static void set_up(dl_redis_pool_t *p, int up)
{
    if (p->reported_up != up) {
        p->reported_up = up;
        report(p, DL_REDIS_EV_UP, up);
    }
}

/* No connection is ready and an attempt just failed: fail fast from now on.
 * Logged once per outage; the other connections and later attempts stay quiet. */
static void pool_down(dl_redis_pool_t *p, const char *why)
{
    if (p->down || p->closing)
        return;
    p->down = 1;
    p->down_since = uv_now(p->loop);
    dl_log(DL_LOG_WARN, "%s: down (%s); commands fail fast while reconnecting",
           p->who, why);
    set_up(p, 0);
    schedule_fail(p);
}

/* The wait before a connection's next attempt: at once after a drop of a
 * ready connection, else 50 ms doubling up to reconnect_max_ms, drawn from
 * the upper half so the connections of every worker do not move in step. */
static uint64_t backoff_ms(dl_redis_pool_t *p, int attempt)
{
    if (attempt <= 0)
        return 0;
    uint64_t base = p->cfg.reconnect_max_ms;
    if (attempt - 1 < 16)
        base = DL_MIN(base, (uint64_t)BACKOFF_STEP_MS << (attempt - 1));
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return base - base / 2 + p->rng % (base / 2 + 1);
}

/*
 * Gives up on a connection's current attempt and schedules the next one. With
 * free_ctx the context is freed here (hiredis calls its pending callbacks with
 * NULL, now or, from inside one of its callbacks, when that returns); without,
 * hiredis is freeing it already. The context is let go first (data NULL), so
 * its late callbacks are recognized as stale. Idempotent.
 */
static void conn_fail(conn_t *c, const char *why, int free_ctx)
{
    dl_redis_pool_t *p = c->pool;
    redisAsyncContext *ac = c->ac;

    if (c->state == CONN_IDLE || c->state == CONN_CLOSED)
        return;
    int was_ready = c->state == CONN_READY;
    c->ac = NULL;
    if (ac != NULL)
        ac->data = NULL;
    if (was_ready)
        p->nready--;
    c->state = CONN_IDLE;
    c->nsteps = c->step = 0;
    log_failure(p, why);
    /* a drop is retried at once; a failed attempt makes the pool down when
     * no other connection is ready */
    c->attempt = was_ready ? 0 : c->attempt + 1;
    if (!was_ready && p->nready == 0)
        pool_down(p, why);
    uv_timer_start(&c->timer, on_conn_timer, backoff_ms(p, c->attempt), 0);
    p->reconnects++;
    if (ac != NULL && free_ctx)
        redisAsyncFree(ac);
}

static void conn_ready(conn_t *c)
{
    dl_redis_pool_t *p = c->pool;

    uv_timer_stop(&c->timer);
    c->state = CONN_READY;
    c->attempt = 0;
    p->nready++;
    p->login_failed = 0;
    if (p->down) {
        p->down = 0;
        dl_log(DL_LOG_INFO, "%s: connected again after %llu ms", p->who,
               (unsigned long long)(uv_now(p->loop) - p->down_since));
    }
    set_up(p, 1);
    /* Connected and logged in (one round trip) within the command timeout:
     * Redis answers in time again, so an open breaker need not wait for its
     * cool-down and probe (a server that was slow, not gone, recovers at
     * once). A server still too slow logs in too slowly to count. */
    if (p->breaker.state != DL_BREAKER_CLOSED &&
        uv_now(p->loop) - c->opened_at < p->cfg.cmd_timeout_ms && dl_breaker_reset(&p->breaker))
        breaker_moved(p);
    dispatch(p);
}

/* AUTH or SELECT refused: a configuration error, so waiting commands fail now. */
static int is_login_error(int step, const redisReply *r)
{
    if (step == STEP_AUTH || step == STEP_SELECT)
        return 1;
    return r->str != NULL && (strncmp(r->str, "NOAUTH", 6) == 0 ||
                              strncmp(r->str, "WRONGPASS", 9) == 0);
}

static void on_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    conn_t *c = priv;
    dl_redis_pool_t *p = c->pool;
    redisReply *reply = r;
    char why[128];

    if (c->ac != ac)
        return; /* a context we let go already */
    if (reply == NULL) {
        snprintf(why, sizeof(why), "login: %.100s", ac_error(ac, "connection closed"));
        conn_fail(c, why, 0);
        return;
    }
    DL_ASSERT(c->step < c->nsteps);
    int step = c->steps[c->step++];
    if (reply->type == REDIS_REPLY_ERROR) {
        if (step == STEP_SETNAME && !is_login_error(step, reply)) {
            if (!p->setname_warned)
                dl_log(DL_LOG_WARN, "%s: CLIENT SETNAME %s: %s", p->who, p->cfg.client_name,
                       reply->str ? reply->str : "error");
            p->setname_warned = 1;
        } else {
            /* a login error makes what waits fail with DL_EREDIS (pool_down) */
            if (is_login_error(step, reply))
                p->login_failed = 1;
            snprintf(why, sizeof(why), "%s: %.*s", step_names[step], (int)reply->len,
                     reply->str ? reply->str : "");
            conn_fail(c, why, 1);
            return;
        }
    }
    if (c->step == c->nsteps)
        conn_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    char why[128];

    if (c == NULL || status == REDIS_OK)
        return;
    /* hiredis frees the context when this returns. */
    snprintf(why, sizeof(why), "connect: %.100s", ac_error(ac, "failed"));
    conn_fail(c, why, 0);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    DL_UNUSED(status);
    if (c != NULL)
        conn_fail(c, ac_error(ac, "connection closed"), 0);
}

static int setup_send(conn_t *c, int step, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    size_t before = sdslen(c->ac->c.obuf);
    if (redisAsyncCommandArgv(c->ac, on_setup_reply, c, argc, argv, lens) != REDIS_OK)
        return -1;
    ((uvev_t *)c->ac->ev.data)->wire_total += sdslen(c->ac->c.obuf) - before;
    c->steps[c->nsteps++] = step;
    return 0;
}

static void conn_open(conn_t *c, const char *ip)
{
    dl_redis_pool_t *p = c->pool;
    const dl_redis_config_t *cfg = &p->cfg;
    char why[160];

    c->state = CONN_CONNECTING;
    c->opened_at = uv_now(p->loop);
    redisAsyncContext *ac = redisAsyncConnect(ip, cfg->port);
    if (ac == NULL) {
        conn_fail(c, "connect: out of memory", 0);
        return;
    }
    if (ac->err != 0) {
        snprintf(why, sizeof(why), "connect: %.100s", ac_error(ac, "failed"));
        redisAsyncFree(ac);
        conn_fail(c, why, 0);
        return;
    }
    if (ev_attach(ac, p) < 0) {
        redisAsyncFree(ac);
        conn_fail(c, "connect: cannot attach to the loop", 0);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    (void)redisEnableKeepAlive(&ac->c);
    c->ac = ac;
    c->nsteps = c->step = 0;

    /* hiredis buffers these until the socket is connected; they go in one write. */
    char db[16];
    int rc = 0;
    if (cfg->password[0] != '\0') {
        const char *auth_user[] = {"AUTH", cfg->username, cfg->password};
        const char *auth[] = {"AUTH", cfg->password};
        if (cfg->username[0] != '\0')
            rc |= setup_send(c, STEP_AUTH, 3, auth_user);
        else
            rc |= setup_send(c, STEP_AUTH, 2, auth);
    }
    if (cfg->db != 0) {
        snprintf(db, sizeof(db), "%d", cfg->db);
        const char *sel[] = {"SELECT", db};
        rc |= setup_send(c, STEP_SELECT, 2, sel);
    }
    if (cfg->client_name[0] != '\0') {
        const char *name[] = {"CLIENT", "SETNAME", cfg->client_name};
        rc |= setup_send(c, STEP_SETNAME, 3, name);
    }
    const char *ping[] = {"PING"};
    rc |= setup_send(c, STEP_PING, 1, ping);
    if (rc != 0)
        conn_fail(c, "login: cannot queue the setup commands", 1);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn_t *c = (conn_t *)((char *)req - offsetof(conn_t, gai));
    dl_redis_pool_t *p = c->pool;
    char ip[INET6_ADDRSTRLEN] = "";
    char why[160];

    c->gai_busy = 0;
    p->refs--;
    if (p->closing || c->state != CONN_RESOLVING) {
        uv_freeaddrinfo(res);
        if (p->closing && p->refs == 0)
            pool_release(p); /* the close callbacks ran first and left the pool to us */
        return;
    }
    if (status < 0) {
        snprintf(why, sizeof(why), "resolve %.64s: %.64s", p->cfg.host, uv_strerror(status));
        conn_fail(c, why, 0);
        return;
    }
    /* IPv4 first: "localhost" often lists ::1 first while Redis binds 127.0.0.1. */
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET && pick == NULL)
            pick = a;
    for (const struct addrinfo *a = res; a != NULL && pick == NULL; a = a->ai_next)
        if (a->ai_family == AF_INET6)
            pick = a;
    if (pick != NULL && pick->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, ip, sizeof(ip));
    else if (pick != NULL)
        uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        snprintf(why, sizeof(why), "resolve %.64s: no address", p->cfg.host);
        conn_fail(c, why, 0);
        return;
    }
    conn_open(c, ip);
}

static void conn_start(conn_t *c)
{
    dl_redis_pool_t *p = c->pool;
    char why[160];

    if (p->closing)
        return;
    uv_timer_start(&c->timer, on_conn_timer, p->cfg.connect_timeout_ms, 0);
    if (p->host_is_ip) {
        conn_open(c, p->cfg.host);
        return;
    }
    c->state = CONN_RESOLVING;
    if (c->gai_busy)
        return; /* an earlier lookup still runs; its answer serves this attempt */
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(p->loop, &c->gai, on_resolved, p->cfg.host, NULL, &hints);
    if (rc < 0) {
        snprintf(why, sizeof(why), "resolve %.64s: %.64s", p->cfg.host, uv_strerror(rc));
        conn_fail(c, why, 0);
        return;
    }
    c->gai_busy = 1;
    p->refs++;
}

static void on_conn_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    char why[64];

    if (c->state == CONN_IDLE) {
        conn_start(c);
    } else if (c->state == CONN_RESOLVING || c->state == CONN_CONNECTING) {
        snprintf(why, sizeof(why), "connect timed out after %llu ms",
                 (unsigned long long)c->pool->cfg.connect_timeout_ms);
        conn_fail(c, why, 1);
    }
}

/* ------------------------------------------------------------------------ */
/* Dispatch and replies                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The pipelines of one loop turn share a connection (the one written to last
 * in this turn, until STICKY_INFLIGHT pipelines wait there): they leave in one
 * write and come back in one read, and the server reads, runs and answers
 * them in one go instead of one event per connection (a third less Redis CPU
 * per job in tests/bench/bench-jobs.sh's GET case). A new turn starts on the ready
 * connection with the fewest pipelines in flight, so work sent in different
 * turns can overlap and one slow reply does not hold up everything.
 */
static conn_t *pick_conn(dl_redis_pool_t *p)
{
    const uvev_t *last =
        dl_list_empty(&p->flushes) ? NULL : dl_list_entry(p->flushes.prev, uvev_t, fnode);
    if (last != NULL && last->ac != NULL) {
        conn_t *c = last->ac->data;
        if (c != NULL && c->state == CONN_READY && c->inflight < STICKY_INFLIGHT)
            return c;
    }
    conn_t *best = NULL;
    for (int k = 0; k < p->nconns; k++) {
        conn_t *c = &p->conns[(p->rr + k) % p->nconns];
        if (c->state == CONN_READY && (best == NULL || c->inflight < best->inflight))
            best = c;
    }
    if (best != NULL)
        p->rr = (int)(best - p->conns + 1) % p->nconns;
    return best;
}

static void attempt_end(dl_redis_cmd_t *cmd)
{
    cmd->conn->inflight--;
    cmd->pool->ninflight--;
    cmd->conn = NULL;
    cmd->ac = NULL;
}

/* Whether the context wrote the pipeline's first command out whole: the
 * bytes it was given minus what its output buffer still holds. */
static int wire_reached(const redisAsyncContext *ac, const dl_redis_cmd_t *cmd)
{
    const uvev_t *e = ac->ev.data;
    if (e == NULL || ac->c.obuf == NULL)
        return 1; /* cannot tell: assume it was */
    size_t pending = sdslen(ac->c.obuf);
    size_t written = e->wire_total >= pending ? e->wire_total - pending : 0;
    return cmd->wire_end0 <= written;
}

static void on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
    dl_redis_cmd_t *cmd = priv;
    dl_redis_pool_t *p = cmd->pool;
    conn_t *c = cmd->conn;
    redisReply *reply = r;

    DL_ASSERT(cmd->ac == ac && cmd->outstanding > 0);
    cmd->outstanding--;
    if (reply == NULL) {
        /* The context is being freed: every callback it holds comes now, with NULL. */
        if (!cmd->failed && wire_reached(ac, cmd))
            cmd->reached = cmd->ran = 1;
        cmd->failed = 1;
        if (c->ac == ac)
            conn_fail(c, ac_error(ac, "connection lost"), 0);
    } else if (!cmd->detached && !cmd->failed && cmd->outstanding > 0) {
        redisReply *copy = reply_copy(reply);
        if (copy == NULL)
            cmd->oom = 1;
        cmd->replies[cmd->nreplies++] = copy;
    }
    if (cmd->outstanding > 0)
        return;

    attempt_end(cmd);
    if (cmd->detached) {
        release(cmd);
        return;
    }
    if (!cmd->failed) {
        /* an answer: the server is alive (the probe alone closes an open breaker) */
        if (p->breaker.state == DL_BREAKER_CLOSED)
            dl_breaker_success(&p->breaker);
        /* The last reply is lent as is; it is not counted in nreplies. */
        cmd->replies[cmd->nreplies] = reply;
        if (cmd->oom)
            complete(cmd, DL_ENOMEM, NULL, 0);
        else
            complete(cmd, 0, cmd->replies, cmd->ncmds);
        return;
    }
    drop_replies(cmd);
    if (p->closing) {
        complete(cmd, DL_ECANCELED, NULL, 0);
    } else if ((!cmd->reached || cmd->idempotent) && cmd->retries < p->cfg.max_retries) {
        /* never written, or harmless twice: send it again */
        cmd->retries++;
        p->resent++;
        cmd->failed = 0;
        cmd->reached = 0;
        queue_push(p, cmd, 1);
        if (p->down)
            schedule_fail(p);
        else
            dispatch(p);
    } else {
        /* a read lost is only lost; a write may have run */
        complete(cmd, cmd->ran && !cmd->reads_only ? DL_EUNKNOWN : DL_EIO, NULL, 0);
    }
}

/* Writes a pipeline to a connection: one hiredis callback per command, one write. */
static void send_on(conn_t *c, dl_redis_cmd_t *cmd)
{
    dl_redis_pool_t *p = c->pool;
    redisAsyncContext *ac = c->ac;
    int i;

    cmd->conn = c;
    cmd->ac = ac;
    cmd->nreplies = 0;
    cmd->failed = 0;
    cmd->oom = 0;
    c->inflight++;
    p->ninflight++;
    uvev_t *e = ac->ev.data;
    for (i = 0; i < cmd->ncmds; i++) {
        const char *s = cmd->buf + cmd->offs[i];
        size_t len = cmd->offs[i + 1] - cmd->offs[i];
        if (redisAsyncFormattedCommand(ac, on_cmd_reply, cmd, s, len) != REDIS_OK)
            break;
        cmd->outstanding++;
        e->wire_total += len; /* hiredis appends the bytes as given */
        if (i == 0)
            cmd->wire_end0 = e->wire_total;
    }
    if (i == cmd->ncmds)
        return;
    /* Only a context on its way out refuses a command, and hiredis frees it
     * itself: what it took is answered with NULL then, and retried. */
    if (cmd->outstanding == 0) {
        attempt_end(cmd);
        queue_push(p, cmd, 1);
    } else {
        cmd->failed = 1;
    }
    conn_fail(c, "connection closing", 0);
}

/* Hands queued pipelines to ready connections. Never runs a user callback. */
static void dispatch(dl_redis_pool_t *p)
{
    if (p->dispatching)
        return;
    p->dispatching = 1;
    while (!p->closing && !dl_list_empty(&p->queue)) {
        conn_t *c = pick_conn(p);
        if (c == NULL)
            break;
        dl_redis_cmd_t *cmd = queue_first(p);
        queue_remove(p, cmd);
        send_on(c, cmd);
    }
    p->dispatching = 0;
}

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                */
/* ------------------------------------------------------------------------ */

static void arm_sweep(dl_redis_pool_t *p)
{
    if (p->closing)
        return;
    if (p->fail_due) {
        uv_timer_start(&p->sweep, on_sweep, 0, 0);
        return;
    }
    dl_redis_cmd_t *head = list_first(&p->live);
    if (head == NULL) {
        uv_timer_stop(&p->sweep);
        return;
    }
    uint64_t now = uv_now(p->loop);
    uv_timer_start(&p->sweep, on_sweep, head->deadline > now ? head->deadline - now : 0, 0);
}

static void on_sweep(uv_timer_t *t)
{
    dl_redis_pool_t *p = t->data;
    uint64_t now = uv_now(p->loop);
    char why[64];

    p->fail_due = 0;
    if (p->down || p->breaker.state != DL_BREAKER_CLOSED)
        fail_waiting(p);
    for (;;) {
        dl_redis_cmd_t *cmd = list_first(&p->live);
        if (p->closing || cmd == NULL || cmd->deadline > now)
            break;
        conn_t *c = cmd->conn;
        redisAsyncContext *ac = cmd->ac;
        p->timeouts++;
        /* a caller's timeout counts toward the breaker while it is closed;
         * once open, only the probe decides */
        if (!cmd->internal && p->breaker.state == DL_BREAKER_CLOSED &&
            dl_breaker_timeout(&p->breaker, now))
            breaker_moved(p);
        /* Detach first, so freeing its connection does not retry it. The
         * connection may hold the reply yet to come: drop it and reconnect. */
        detach(cmd);
        cmd->hold++;
        if (c != NULL && c->ac == ac && ac != NULL) {
            snprintf(why, sizeof(why), "command timed out after %llu ms",
                     (unsigned long long)p->cfg.cmd_timeout_ms);
            conn_fail(c, why, 1);
        }
        complete(cmd, DL_ETIMEDOUT, NULL, 0);
        cmd->hold--;
        release(cmd);
    }
    arm_sweep(p);
}

/* ------------------------------------------------------------------------ */
/* Circuit breaker                                                          */
/* ------------------------------------------------------------------------ */

static void on_probe(int status, redisReply **replies, int n, void *arg)
{
    dl_redis_pool_t *p = arg;
    DL_UNUSED(replies);
    DL_UNUSED(n);
    p->probe = NULL;
    if (p->closing)
        return;
    uint64_t now = uv_now(p->loop);
    int moved;
    p->probe_failed = status == 0 ? 0 : status == DL_ETIMEDOUT ? DL_ETIMEDOUT : DL_EIO;
    if (status == 0)
        moved = dl_breaker_success(&p->breaker);
    else if (status == DL_ETIMEDOUT)
        moved = dl_breaker_timeout(&p->breaker, now);
    else
        moved = dl_breaker_probe_failed(&p->breaker, now);
    if (moved)
        breaker_moved(p);
}

/* The half-open probe: one PING through the queue, with the command timeout. */
static void send_probe(dl_redis_pool_t *p)
{
    static const char *const ping[] = {"PING"};
    static const size_t ping_len[] = {4};
    static const int argc = 1;
    const char *const *argvs[1] = {ping};
    const size_t *const lens[1] = {ping_len};

    dl_redis_cmd_t *cmd = cmd_new(p, 1, &argc, argvs, lens);
    if (cmd == NULL) {
        if (dl_breaker_probe_failed(&p->breaker, uv_now(p->loop)))
            breaker_moved(p);
        return;
    }
    cmd->internal = 1;
    cmd->reads_only = cmd->idempotent = 1;
    cmd->cb = on_probe;
    cmd->arg = p;
    cmd->deadline = uv_now(p->loop) + p->cfg.cmd_timeout_ms;
    p->probe = cmd;
    dl_list_insert_tail(&p->live, &cmd->node);
    arm_sweep(p);
    queue_push(p, cmd, 1);
    dispatch(p);
}

static void on_breaker_timer(uv_timer_t *t)
{
    dl_redis_pool_t *p = t->data;
    int moved;
    if (dl_breaker_allow(&p->breaker, uv_now(p->loop), &moved) == 2 && moved)
        breaker_moved(p);
}

/* Once per transition: log it, report it, and act on the new state. */
static void breaker_moved(dl_redis_pool_t *p)
{
    int st = p->breaker.state;
    if (p->closing)
        return;
    report(p, DL_REDIS_EV_BREAKER, st);
    if (st == DL_BREAKER_OPEN && p->probe_failed) {
        dl_log(DL_LOG_WARN, "%s: circuit breaker open again: the probe PING %s; next probe in "
               "%llu ms", p->who, p->probe_failed == DL_ETIMEDOUT ? "timed out" : "failed",
               (unsigned long long)p->cfg.breaker_cooldown_ms);
        snprintf(p->last_error, sizeof(p->last_error),
                 "circuit breaker open: the probe PING %s",
                 p->probe_failed == DL_ETIMEDOUT ? "timed out" : "failed");
    } else if (st == DL_BREAKER_OPEN) {
        dl_log(DL_LOG_WARN,
               "%s: circuit breaker open after %d consecutive timeouts; commands fail "
               "fast for %llu ms, then a PING probes",
               p->who, p->breaker.consecutive,
               (unsigned long long)p->cfg.breaker_cooldown_ms);
        snprintf(p->last_error, sizeof(p->last_error),
                 "circuit breaker open after %d consecutive timeouts", p->breaker.consecutive);
    }
    p->probe_failed = 0;
    if (st == DL_BREAKER_OPEN) {
        uv_timer_start(&p->breaker_timer, on_breaker_timer, p->cfg.breaker_cooldown_ms, 0);
        schedule_fail(p);
    } else if (st == DL_BREAKER_HALF_OPEN) {
        dl_log(DL_LOG_INFO, "%s: circuit breaker half-open: probing with PING",
               p->who);
        send_probe(p);
    } else {
        uv_timer_stop(&p->breaker_timer);
        dl_log(DL_LOG_INFO, "%s: circuit breaker closed: Redis answers again",
               p->who);
    }
}

/* ------------------------------------------------------------------------ */
/* Pool                                                                     */
/* ------------------------------------------------------------------------ */

static void free_list(dl_list_t *l)
{
    for (;;) {
        dl_redis_cmd_t *cmd = list_first(l);
        if (cmd == NULL)
            break;
        dl_list_remove(&cmd->node);
        drop_replies(cmd);
        dl_free(cmd);
    }
}

/* The last close callback (or lookup) of a closing pool frees it. */
static void pool_release(dl_redis_pool_t *p)
{
    DL_ASSERT(p->closing && p->refs == 0);
    /* Every context is gone, so no command is referenced by hiredis any more. */
    free_list(&p->live);
    free_list(&p->zombies);
    dl_free(p->conns);
    dl_free(p);
}

static void unref(dl_redis_pool_t *p)
{
    p->refs--;
    if (p->refs == 0)
        pool_release(p);
}

static void on_pool_handle_close(uv_handle_t *h)
{
    unref(h->data);
}

static void on_conn_timer_close(uv_handle_t *h)
{
    unref(((conn_t *)h->data)->pool);
}

dl_redis_pool_t *dl_redis_pool_new(uv_loop_t *loop, const dl_redis_config_t *cfg)
{
    struct in6_addr a6;
    dl_redis_pool_t *p = dl_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    dl_list_init(&p->live);
    dl_list_init(&p->zombies);
    dl_list_init(&p->queue);
    dl_list_init(&p->flushes);
    p->cfg = *cfg;
    p->cfg.host[sizeof(p->cfg.host) - 1] = '\0';
    p->cfg.password[sizeof(p->cfg.password) - 1] = '\0';
    p->cfg.username[sizeof(p->cfg.username) - 1] = '\0';
    p->cfg.client_name[sizeof(p->cfg.client_name) - 1] = '\0';
    if (p->cfg.pool_size <= 0)
        p->cfg.pool_size = DL_REDIS_DEFAULT_POOL_SIZE;
    if (p->cfg.pool_size > DL_REDIS_MAX_POOL_SIZE)
        p->cfg.pool_size = DL_REDIS_MAX_POOL_SIZE;
    if (p->cfg.cmd_timeout_ms == 0)
        p->cfg.cmd_timeout_ms = DL_REDIS_DEFAULT_CMD_TIMEOUT_MS;
    if (p->cfg.connect_timeout_ms == 0)
        p->cfg.connect_timeout_ms = DL_REDIS_DEFAULT_CONNECT_TIMEOUT_MS;
    if (p->cfg.max_retries < 0)
        p->cfg.max_retries = 0;
    if (p->cfg.breaker_threshold < 0)
        p->cfg.breaker_threshold = DL_BREAKER_DEFAULT_THRESHOLD;
    if (p->cfg.breaker_cooldown_ms == 0)
        p->cfg.breaker_cooldown_ms = DL_BREAKER_DEFAULT_COOLDOWN_MS;
    if (p->cfg.reconnect_max_ms == 0)
        p->cfg.reconnect_max_ms = DL_REDIS_DEFAULT_RECONNECT_MAX_MS;
    if (p->cfg.reconnect_max_ms < DL_REDIS_MIN_RECONNECT_MS)
        p->cfg.reconnect_max_ms = DL_REDIS_MIN_RECONNECT_MS;
    dl_breaker_init(&p->breaker, p->cfg.breaker_threshold, p->cfg.breaker_cooldown_ms);
    p->reported_up = -1;
    snprintf(p->who, sizeof(p->who), "redis %s:%d", p->cfg.host, p->cfg.port);
    p->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)p) | 1;
    if (p->cfg.port <= 0 || p->cfg.port > 65535)
        p->cfg.port = DL_REDIS_DEFAULT_PORT;
    if (p->cfg.host[0] == '\0')
        snprintf(p->cfg.host, sizeof(p->cfg.host), "127.0.0.1");
    p->host_is_ip = inet_pton(AF_INET, p->cfg.host, &a6) == 1 ||
                    inet_pton(AF_INET6, p->cfg.host, &a6) == 1;
    p->nconns = p->cfg.pool_size;
    p->conns = dl_calloc((size_t)p->nconns, sizeof(conn_t));
    if (p->conns == NULL) {
        dl_free(p);
        return NULL;
    }
    p->loop = loop;
    uv_timer_init(loop, &p->sweep);
    p->sweep.data = p;
    p->refs++;
    uv_prepare_init(loop, &p->flush);
    p->flush.data = p;
    p->refs++;
    uv_timer_init(loop, &p->breaker_timer);
    p->breaker_timer.data = p;
    p->refs++;
    for (int i = 0; i < p->nconns; i++) {
        conn_t *c = &p->conns[i];
        c->pool = p;
        c->state = CONN_IDLE;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        p->refs++;
    }
    uv_update_time(loop);
    for (int i = 0; i < p->nconns; i++)
        conn_start(&p->conns[i]);
    return p;
}

/* A send refused at once: counted, never queued. */
static int refuse(dl_redis_pool_t *p, int rc)
{
    p->fast_fails++;
    report(p, DL_REDIS_EV_OUTCOME, DL_OUTCOME_FAST_FAIL);
    return rc;
}

int dl_redis_pool_sendf(dl_redis_pool_t *p, int ncmds, const int *argcs,
                        const char *const *const *argvs, const size_t *const *argvlens,
                        int flags, dl_redis_reply_cb cb, void *arg, dl_redis_cmd_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (p == NULL || cb == NULL || ncmds < 1 || argcs == NULL || argvs == NULL ||
        argvlens == NULL)
        return DL_EINVAL;
    if (p->closing)
        return DL_ECANCELED;
    int rc = check_pipeline(ncmds, argcs, argvs, argvlens);
    if (rc < 0)
        return rc;
    if (p->down)
        return refuse(p, p->login_failed ? DL_EREDIS : DL_EUNAVAIL);
    if (p->breaker.state != DL_BREAKER_CLOSED)
        return refuse(p, DL_EUNAVAIL);
    if (p->nready == 0 && p->nqueued >= p->cfg.max_offline)
        return refuse(p, DL_EOFFLINE);
    dl_redis_cmd_t *cmd = cmd_new(p, ncmds, argcs, argvs, argvlens);
    if (cmd == NULL)
        return DL_ENOMEM;
    cmd->cb = cb;
    cmd->arg = arg;
    cmd->reads_only = pipeline_reads_only(ncmds, argcs, argvs, argvlens);
    cmd->idempotent = (flags & DL_REDIS_IDEMPOTENT) != 0 || cmd->reads_only;
    /* The loop's clock may be a handler's run time behind. */
    uv_update_time(p->loop);
    cmd->deadline = uv_now(p->loop) + p->cfg.cmd_timeout_ms;
    dl_list_insert_tail(&p->live, &cmd->node);
    if (!uv_is_active((uv_handle_t *)&p->sweep))
        arm_sweep(p);
    queue_push(p, cmd, 0);
    if (out != NULL)
        *out = cmd;
    dispatch(p);
    return 0;
}

int dl_redis_pool_send(dl_redis_pool_t *p, int ncmds, const int *argcs,
                       const char *const *const *argvs, const size_t *const *argvlens,
                       dl_redis_reply_cb cb, void *arg, dl_redis_cmd_t **out)
{
    return dl_redis_pool_sendf(p, ncmds, argcs, argvs, argvlens, 0, cb, arg, out);
}

void dl_redis_pool_observe(dl_redis_pool_t *p, dl_redis_event_cb cb, void *arg)
{
    if (p == NULL)
        return;
    p->observe = cb;
    p->observe_arg = arg;
    /* what happened before the observer came (a failed first attempt) */
    if (cb != NULL && p->reported_up >= 0)
        cb(DL_REDIS_EV_UP, p->reported_up, arg);
    if (cb != NULL)
        cb(DL_REDIS_EV_BREAKER, p->breaker.state, arg);
}

int dl_redis_pool_available(const dl_redis_pool_t *p)
{
    return p != NULL && !p->closing && !p->down && p->breaker.state == DL_BREAKER_CLOSED;
}

void dl_redis_pool_set_label(dl_redis_pool_t *p, const char *label)
{
    if (p != NULL && label != NULL)
        snprintf(p->who, sizeof(p->who), "redis %.256s:%d (%.40s)", p->cfg.host, p->cfg.port,
                 label);
}

const char *dl_redis_pool_last_error(const dl_redis_pool_t *p)
{
    return p != NULL ? p->last_error : "";
}

void dl_redis_cmd_cancel(dl_redis_cmd_t *cmd)
{
    if (cmd == NULL || cmd->detached)
        return;
    detach(cmd);
    release(cmd);
}

void dl_redis_pool_free(dl_redis_pool_t *p)
{
    if (p == NULL || p->closing)
        return;
    p->closing = 1;
    uv_close((uv_handle_t *)&p->sweep, on_pool_handle_close);
    uv_close((uv_handle_t *)&p->flush, on_pool_handle_close);
    uv_close((uv_handle_t *)&p->breaker_timer, on_pool_handle_close);
    for (int i = 0; i < p->nconns; i++) {
        conn_t *c = &p->conns[i];
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        if (c->state == CONN_READY)
            p->nready--;
        c->state = CONN_CLOSED;
        uv_close((uv_handle_t *)&c->timer, on_conn_timer_close);
        if (c->gai_busy)
            uv_cancel((uv_req_t *)&c->gai);
        if (ac != NULL) {
            /* Its pipelines come back through on_cmd_reply with NULL: DL_ECANCELED. */
            ac->data = NULL;
            redisAsyncFree(ac);
        }
    }
    fail_queue(p, DL_ECANCELED);
}

void dl_redis_pool_stats(const dl_redis_pool_t *p, dl_redis_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (p == NULL)
        return;
    for (int i = 0; i < p->nconns; i++)
        if (p->conns[i].state == CONN_CONNECTING || p->conns[i].state == CONN_READY)
            out->connections++;
    out->ready = p->nready;
    out->queued = p->nqueued;
    out->inflight = p->ninflight;
    out->reconnects = p->reconnects;
    out->timeouts = p->timeouts;
    out->errors = p->errors;
    out->fast_fails = p->fast_fails;
    out->unknown = p->unknown;
    out->resent = p->resent;
    out->down = p->down;
    out->breaker = p->breaker.state;
    out->breaker_transitions = p->breaker.transitions;
    out->down_ms = p->down ? uv_now(p->loop) - p->down_since : 0;
    snprintf(out->last_error, sizeof(out->last_error), "%s", p->last_error);
}
