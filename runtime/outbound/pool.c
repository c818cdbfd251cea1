/*
 * pool.c - keep-alive connections by origin. An origin counts its busy
 * connections (in use, or being made in a slot) and keeps its idle ones in a
 * list, newest first, so the warmest is reused and the coldest times out
 * (one let go while the list is full joins at the end and leaves after a
 * second unless it is needed by then). An
 * idle connection's read callback and timer belong to the pool: a byte or an
 * EOF from the peer, or the idle time running out, closes it. Taking one
 * checks it again (dl_out_alive: the peer may have closed it in this very
 * loop turn). An origin with nothing busy, idle or waiting is freed.
 */
#include "outbound/pool.h"

#include <string.h>

#include "common/internal.h"
#include "common/list.h"

#define BUCKETS 64
#define PEEK_AFTER_IDLE_MS 1000
/* how long a connection let go while max_idle others wait stays idle */
#define SURPLUS_IDLE_MS 1000

typedef struct origin_s origin_t;

struct dl_out_waiter_s {
    dl_list_t link;
    origin_t *o;
    dl_out_pool_cb cb;
    void *arg;
};

struct origin_s {
    origin_t *next; /* in its bucket */
    dl_out_pool_t *pool;
    dl_list_t idle; /* dl_out_conn_t.link, newest first */
    dl_list_t waiters;
    int n_idle, n_busy, n_waiting;
    int n_surplus; /* of n_idle: let go while max_idle others waited */
    char key[];
};

struct dl_out_pool_s {
    uv_loop_t *loop;
    origin_t *buckets[BUCKETS];
    int n_origins, n_idle, n_busy, n_waiting;
};

static unsigned hash(const char *s)
{
    return dl_fnv1a(s, strlen(s)) % BUCKETS;
}

dl_out_pool_t *dl_out_pool_new(uv_loop_t *loop)
{
    dl_out_pool_t *p = dl_calloc(1, sizeof(*p));
    if (p)
        p->loop = loop;
    return p;
}

static origin_t *find(dl_out_pool_t *p, const char *key)
{
    for (origin_t *o = p->buckets[hash(key)]; o; o = o->next)
        if (strcmp(o->key, key) == 0)
            return o;
    return NULL;
}

static origin_t *find_or_add(dl_out_pool_t *p, const char *key)
{
    origin_t *o = find(p, key);
    if (o)
        return o;
    size_t n = strlen(key);
    o = dl_calloc(1, sizeof(*o) + n + 1);
    if (o == NULL)
        return NULL;
    memcpy(o->key, key, n + 1);
    o->pool = p;
    dl_list_init(&o->idle);
    dl_list_init(&o->waiters);
    unsigned b = hash(key);
    o->next = p->buckets[b];
    p->buckets[b] = o;
    p->n_origins++;
    return o;
}

/* Frees an origin nobody uses any more. */
static void maybe_free(origin_t *o)
{
    if (o->n_idle || o->n_busy || o->n_waiting)
        return;
    dl_out_pool_t *p = o->pool;
    origin_t **pp = &p->buckets[hash(o->key)];
    while (*pp && *pp != o)
        pp = &(*pp)->next;
    if (*pp)
        *pp = o->next;
    p->n_origins--;
    dl_free(o);
}

static void busy_add(origin_t *o, int d)
{
    o->n_busy += d;
    o->pool->n_busy += d;
}

/* An idle connection leaves the idle list (to be used or closed). */
static void unidle(dl_out_conn_t *c)
{
    origin_t *o = c->origin;
    dl_list_remove(&c->link);
    o->n_idle--;
    o->n_surplus -= c->surplus;
    c->surplus = 0;
    o->pool->n_idle--;
    dl_out_on_read(c, NULL, NULL);
    dl_out_timer(c, 0, NULL, NULL);
}

/* The peer spoke or closed, or the idle time ran out: the connection goes. */
static void on_idle_event(dl_out_conn_t *c, int status, void *arg)
{
    (void)status;
    (void)arg;
    origin_t *o = c->origin;
    unidle(c);
    c->origin = NULL;
    dl_out_close(c);
    maybe_free(o);
}

/* A slot of o came free: the first waiter takes it. */
static void pass_slot(origin_t *o)
{
    if (dl_list_empty(&o->waiters))
        return;
    dl_out_waiter_t *w = dl_list_entry(o->waiters.next, dl_out_waiter_t, link);
    dl_list_remove(&w->link);
    o->n_waiting--;
    o->pool->n_waiting--;
    busy_add(o, 1);
    dl_out_pool_cb cb = w->cb;
    void *arg = w->arg;
    dl_free(w);
    cb(NULL, arg);
}

int dl_out_pool_acquire(dl_out_pool_t *p, const char *key, const dl_out_limits_t *lim,
                        dl_out_pool_cb cb, void *arg, dl_out_conn_t **c, dl_out_waiter_t **w)
{
    *c = NULL;
    *w = NULL;
    if (strlen(key) > DL_OUT_MAX_KEY)
        return DL_EINVAL;
    origin_t *o = find_or_add(p, key);
    if (o == NULL)
        return DL_ENOMEM;
    while (!dl_list_empty(&o->idle)) {
        dl_out_conn_t *ic = dl_list_entry(o->idle.next, dl_out_conn_t, link);
        unidle(ic);
        /* The loop watches idle connections; what it has not seen yet is
         * asked of the socket once one has been idle long enough for a
         * server to end it (a close in the last second is a race a retry
         * covers: http_client.c sends an idempotent request again). */
        int peek = uv_now(p->loop) - ic->idle_since_ms >= PEEK_AFTER_IDLE_MS;
        if (dl_out_alive(ic, peek)) {
            busy_add(o, 1);
            ic->reused++;
            *c = ic;
            return 0;
        }
        ic->origin = NULL;
        dl_out_close(ic);
    }
    if (lim->max_conns <= 0 || o->n_busy + o->n_idle < lim->max_conns) {
        busy_add(o, 1);
        return 1;
    }
    if (o->n_waiting >= lim->max_waiting) {
        maybe_free(o);
        return DL_ECONNECT;
    }
    dl_out_waiter_t *wt = dl_calloc(1, sizeof(*wt));
    if (wt == NULL) {
        maybe_free(o);
        return DL_ENOMEM;
    }
    wt->o = o;
    wt->cb = cb;
    wt->arg = arg;
    dl_list_insert_tail(&o->waiters, &wt->link);
    o->n_waiting++;
    p->n_waiting++;
    *w = wt;
    return 2;
}

void dl_out_pool_cancel(dl_out_waiter_t *w)
{
    if (w == NULL)
        return;
    origin_t *o = w->o;
    dl_list_remove(&w->link);
    o->n_waiting--;
    o->pool->n_waiting--;
    dl_free(w);
    maybe_free(o);
}

void dl_out_pool_attach(dl_out_pool_t *p, const char *key, dl_out_conn_t *c)
{
    c->origin = find(p, key); /* the slot keeps the origin alive */
}

void dl_out_pool_unslot(dl_out_pool_t *p, const char *key)
{
    origin_t *o = find(p, key);
    if (o == NULL)
        return;
    busy_add(o, -1);
    pass_slot(o);
    maybe_free(o);
}

void dl_out_pool_release(dl_out_conn_t *c, int reusable, const dl_out_limits_t *lim)
{
    origin_t *o = c->origin;
    if (o == NULL) {
        dl_out_close(c);
        return;
    }
    busy_add(o, -1);
    dl_out_on_read(c, NULL, NULL);
    dl_out_timer(c, 0, NULL, NULL);
    if (reusable && dl_out_alive(c, 0)) {
        if (!dl_list_empty(&o->waiters)) {
            /* the first waiter takes it as it is */
            dl_out_waiter_t *w = dl_list_entry(o->waiters.next, dl_out_waiter_t, link);
            dl_list_remove(&w->link);
            o->n_waiting--;
            o->pool->n_waiting--;
            busy_add(o, 1);
            c->reused++;
            dl_out_pool_cb cb = w->cb;
            void *arg = w->arg;
            dl_free(w);
            cb(c, arg);
            return;
        }
        if (lim->max_idle > 0) {
            uint64_t ms = lim->idle_ms;
            if (o->n_idle - o->n_surplus < lim->max_idle) {
                dl_list_insert_head(&o->idle, &c->link);
            } else {
                c->surplus = 1;
                o->n_surplus++;
                /* over the bound: a surplus, taken last and kept briefly, so
                 * that a load steadily above the bound reuses connections
                 * instead of closing and opening one per call */
                dl_list_insert_tail(&o->idle, &c->link);
                if (ms == 0 || ms > SURPLUS_IDLE_MS)
                    ms = SURPLUS_IDLE_MS;
            }
            o->n_idle++;
            o->pool->n_idle++;
            c->idle_since_ms = uv_now(o->pool->loop);
            dl_out_on_read(c, on_idle_event, NULL);
            if (ms > 0)
                dl_out_timer(c, ms, on_idle_event, NULL);
            return;
        }
    }
    c->origin = NULL;
    dl_out_close(c);
    pass_slot(o);
    maybe_free(o);
}

void dl_out_pool_stats(const dl_out_pool_t *p, dl_out_pool_stats_t *out)
{
    out->idle = p->n_idle;
    out->busy = p->n_busy;
    out->waiting = p->n_waiting;
    out->origins = p->n_origins;
}

void dl_out_pool_free(dl_out_pool_t *p)
{
    if (p == NULL)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        origin_t *o = p->buckets[b];
        while (o) {
            origin_t *next = o->next;
            while (!dl_list_empty(&o->idle)) {
                dl_out_conn_t *c = dl_list_entry(o->idle.next, dl_out_conn_t, link);
                unidle(c);
                c->origin = NULL;
                dl_out_close(c);
            }
            dl_free(o);
            o = next;
        }
    }
    dl_free(p);
}
