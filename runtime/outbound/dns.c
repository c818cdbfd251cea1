/*
 * dns.c - names to addresses for outbound connections. A lookup of a name
 * not in the cache starts one uv_getaddrinfo (run on libuv's thread pool);
 * every lookup of the same name meanwhile waits on it, and its answer is
 * cached for the TTL. getaddrinfo gives no record TTL, so the TTL is the
 * runtime's setting. Failures are not cached: a name that fails is asked
 * again, one query at a time. The cache is a small hash table with a bound
 * on its names; when full, the entry that expires first goes.
 */
#include "outbound/dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "common/internal.h"
#include "common/list.h"

#define BUCKETS 256

typedef struct entry_s entry_t;

struct dl_dns_wait_s {
    dl_list_t link; /* in its entry's waiters */
    dl_dns_cb cb;
    void *arg;
};

struct entry_s {
    entry_t *next;       /* in its bucket */
    dl_dns_t *dns;       /* NULL once the resolver is gone (a query still runs) */
    uint64_t expires_ms; /* 0: no answer yet */
    dl_dns_addrs_t addrs;
    int querying;
    uv_getaddrinfo_t gai;
    dl_list_t waiters;
    char name[DL_DNS_MAX_NAME + 1];
};

struct dl_dns_s {
    uv_loop_t *loop;
    uint64_t ttl_ms;
    int max_names, n_names;
    entry_t *buckets[BUCKETS];
};

static unsigned hash(const char *s)
{
    return dl_fnv1a(s, strlen(s)) % BUCKETS;
}

int dl_dns_literal(const char *host, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        return 0;
    }
    return -1;
}

dl_dns_t *dl_dns_new(uv_loop_t *loop, uint64_t ttl_ms, int max_names)
{
    dl_dns_t *d = dl_calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->ttl_ms = ttl_ms;
    d->max_names = max_names > 0 ? max_names : 1;
    return d;
}

static void unlink_entry(dl_dns_t *d, entry_t *e)
{
    entry_t **pp = &d->buckets[hash(e->name)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = e->next;
        d->n_names--;
    }
}

/* An entry leaves the table; one whose query still runs is freed when it ends. */
static void drop_entry(dl_dns_t *d, entry_t *e)
{
    unlink_entry(d, e);
    if (e->querying) {
        e->dns = NULL;
        uv_cancel((uv_req_t *)&e->gai); /* when it has not started: no wait at exit */
    } else
        dl_free(e);
}

void dl_dns_free(dl_dns_t *d)
{
    if (d == NULL)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        while (d->buckets[b])
            drop_entry(d, d->buckets[b]);
    }
    dl_free(d);
}

static entry_t *find(dl_dns_t *d, const char *name)
{
    for (entry_t *e = d->buckets[hash(name)]; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* Room for one more name: drops the idle entry that expires first. */
static void make_room(dl_dns_t *d)
{
    if (d->n_names < d->max_names)
        return;
    entry_t *victim = NULL;
    for (int b = 0; b < BUCKETS; b++)
        for (entry_t *e = d->buckets[b]; e; e = e->next)
            if (!e->querying && (victim == NULL || e->expires_ms < victim->expires_ms))
                victim = e;
    if (victim)
        drop_entry(d, victim);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    entry_t *e = req->data;
    dl_dns_t *d = e->dns;
    e->querying = 0;
    char why[320] = "";
    e->addrs.n = 0;
    if (status == 0) {
        for (struct addrinfo *ai = res; ai && e->addrs.n < DL_DNS_MAX_ADDRS; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof(struct sockaddr_storage))
                continue;
            memset(&e->addrs.a[e->addrs.n], 0, sizeof(e->addrs.a[0]));
            memcpy(&e->addrs.a[e->addrs.n], ai->ai_addr, ai->ai_addrlen);
            e->addrs.n++;
        }
        if (e->addrs.n == 0)
            snprintf(why, sizeof(why), "%s has no IPv4 or IPv6 address", e->name);
    } else {
        snprintf(why, sizeof(why), "%s: %s", e->name,
                 status == UV_ECANCELED ? "lookup canceled" : uv_strerror(status));
    }
    if (res)
        uv_freeaddrinfo(res);
    int ok = e->addrs.n > 0;
    if (d == NULL) { /* the resolver went away meanwhile */
        dl_free(e);
        return;
    }
    if (ok && d->ttl_ms > 0)
        e->expires_ms = uv_now(d->loop) + d->ttl_ms;
    /* the waiters are taken off first: a callback may look the name up again */
    dl_list_t waiters = e->waiters;
    if (dl_list_empty(&e->waiters)) {
        dl_list_init(&waiters);
    } else {
        waiters.next->prev = &waiters;
        waiters.prev->next = &waiters;
    }
    dl_list_init(&e->waiters);
    dl_dns_addrs_t addrs = e->addrs;
    if (!ok || d->ttl_ms == 0)
        drop_entry(d, e);
    while (!dl_list_empty(&waiters)) {
        dl_dns_wait_t *w = dl_list_entry(waiters.next, dl_dns_wait_t, link);
        dl_list_remove(&w->link);
        dl_dns_cb cb = w->cb;
        void *arg = w->arg;
        dl_free(w);
        cb(ok ? 0 : DL_EDNS, ok ? &addrs : NULL, ok ? NULL : why, arg);
    }
}

int dl_dns_lookup(dl_dns_t *d, const char *host, dl_dns_addrs_t *out, dl_dns_cb cb, void *arg,
                  dl_dns_wait_t **w, char *why, size_t whylen)
{
    *w = NULL;
    if (dl_dns_literal(host, &out->a[0]) == 0) {
        out->n = 1;
        return 0;
    }
    size_t n = strlen(host);
    if (n == 0 || n > DL_DNS_MAX_NAME) {
        snprintf(why, whylen, "host name of %zu bytes (1 to %d)", n, DL_DNS_MAX_NAME);
        return DL_EDNS;
    }
    entry_t *e = find(d, host);
    if (e && !e->querying && e->expires_ms > uv_now(d->loop)) {
        *out = e->addrs;
        return 0;
    }
    if (e == NULL) {
        make_room(d);
        e = dl_calloc(1, sizeof(*e));
        if (e == NULL) {
            snprintf(why, whylen, "out of memory");
            return DL_ENOMEM;
        }
        memcpy(e->name, host, n + 1);
        e->dns = d;
        dl_list_init(&e->waiters);
        unsigned b = hash(host);
        e->next = d->buckets[b];
        d->buckets[b] = e;
        d->n_names++;
    }
    dl_dns_wait_t *wt = dl_malloc(sizeof(*wt));
    if (wt == NULL) {
        snprintf(why, whylen, "out of memory");
        return DL_ENOMEM;
    }
    if (!e->querying) {
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        e->gai.data = e;
        int rc = uv_getaddrinfo(d->loop, &e->gai, on_resolved, e->name, NULL, &hints);
        if (rc != 0) {
            dl_free(wt);
            snprintf(why, whylen, "%s: %s", host, uv_strerror(rc));
            drop_entry(d, e);
            return DL_EDNS;
        }
        e->querying = 1;
    }
    wt->cb = cb;
    wt->arg = arg;
    dl_list_insert_tail(&e->waiters, &wt->link);
    *w = wt;
    return 1;
}

void dl_dns_cancel(dl_dns_wait_t *w)
{
    if (w == NULL)
        return;
    dl_list_remove(&w->link);
    dl_free(w);
}
