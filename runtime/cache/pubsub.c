/*
 * pubsub.c - api.pubsub's in-process hub (pubsub.h): a table of channels,
 * each with the subscriptions of every worker's inbox; a subscription's
 * bounded queue of references to reference-counted messages; each inbox's
 * list of subscriptions that have something to read, and its wake callback.
 * One mutex guards it all: every operation under it is a few pointer moves
 * (a queue grows by doubling up to the limit, so an idle subscription costs
 * no queue at all), and the one copy of a message is made before taking it.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cache/pubsub.h"
#include "common/internal.h"
#include "common/list.h"

typedef struct chan_s {
    struct chan_s *next; /* in its bucket */
    uint64_t hash;
    dl_list_t subs;      /* dl_pubsub_sub_t.ch_link */
    size_t len;
    char name[];
} chan_t;

struct dl_pubsub_sub_s {
    dl_list_t ch_link;    /* in its channel, while it receives */
    dl_list_t in_link;    /* in its inbox's subs, until cancelled */
    dl_list_t ready_link; /* in its inbox's ready list, while linked */
    dl_pubsub_inbox_t *in;
    chan_t *chan;         /* NULL once closed */
    void *user;
    int flags;
    dl_pubsub_msg_t **q;  /* ring: n messages from head */
    size_t cap, head, n;
    size_t chlen;
    char channel[DL_PUBSUB_MAX_CHANNEL + 1];
};

struct dl_pubsub_inbox_s {
    dl_list_t link;  /* in the hub's inboxes */
    dl_list_t subs;  /* every subscription not yet cancelled */
    dl_list_t ready; /* subscriptions with something to read */
    size_t n_subs;
    void (*wake)(void *);
    void *data;
    void (*read)(void *); /* the inbox's thread only */
    void *read_data;
    int closed;
    dl_pubsub_t *ps;
};

struct dl_pubsub_s {
    const dl_pubsub_ops_t *ops;
    dl_pubsub_limits_t lim;
    uv_mutex_t lock;
    chan_t **buckets;
    size_t n_buckets; /* a power of two */
    uint64_t seed;
    dl_list_t inboxes;
    dl_pubsub_stats_t st;
};

static int memory_publish(dl_pubsub_t *ps, const char *ch, size_t chlen, const char *msg,
                          size_t len, size_t *queued);

static const dl_pubsub_ops_t memory_ops = {"memory", memory_publish};

/* FNV-1a over a per-hub seed: channel names may come from clients, and a
 * fixed hash would let them pick names that share a bucket */
static uint64_t hash_of(const dl_pubsub_t *ps, const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ ps->seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

dl_pubsub_t *dl_pubsub_new(const dl_pubsub_limits_t *lim)
{
    if (lim == NULL || lim->max_message == 0 || lim->queue == 0 || lim->max_subs == 0)
        return NULL;
    dl_pubsub_t *ps = dl_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return NULL;
    ps->n_buckets = 64;
    ps->buckets = dl_calloc(ps->n_buckets, sizeof(*ps->buckets));
    if (ps->buckets == NULL) {
        dl_free(ps);
        return NULL;
    }
    ps->ops = &memory_ops;
    ps->lim = *lim;
    ps->seed = uv_hrtime() ^ ((uint64_t)(uintptr_t)ps << 16);
    dl_list_init(&ps->inboxes);
    uv_mutex_init(&ps->lock);
    return ps;
}

static void drop_queue(dl_pubsub_sub_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        dl_pubsub_msg_unref(s->q[(s->head + i) % s->cap]);
    dl_free(s->q);
    s->q = NULL;
    s->cap = s->head = s->n = 0;
}

void dl_pubsub_free(dl_pubsub_t *ps)
{
    if (ps == NULL)
        return;
    while (!dl_list_empty(&ps->inboxes)) {
        dl_pubsub_inbox_t *in = dl_list_entry(ps->inboxes.next, dl_pubsub_inbox_t, link);
        dl_list_remove(&in->link);
        while (!dl_list_empty(&in->subs)) {
            dl_pubsub_sub_t *s = dl_list_entry(in->subs.next, dl_pubsub_sub_t, in_link);
            dl_list_remove(&s->in_link);
            drop_queue(s);
            dl_free(s);
        }
        dl_free(in);
    }
    for (size_t i = 0; i < ps->n_buckets; i++) {
        chan_t *c = ps->buckets[i];
        while (c) {
            chan_t *n = c->next;
            dl_free(c);
            c = n;
        }
    }
    dl_free(ps->buckets);
    uv_mutex_destroy(&ps->lock);
    dl_free(ps);
}

const dl_pubsub_ops_t *dl_pubsub_ops(const dl_pubsub_t *ps)
{
    return ps->ops;
}

const dl_pubsub_limits_t *dl_pubsub_limits(const dl_pubsub_t *ps)
{
    return &ps->lim;
}

dl_pubsub_inbox_t *dl_pubsub_inbox_new(dl_pubsub_t *ps, void (*wake)(void *), void *data)
{
    dl_pubsub_inbox_t *in = dl_calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    dl_list_init(&in->subs);
    dl_list_init(&in->ready);
    in->wake = wake;
    in->data = data;
    in->ps = ps;
    uv_mutex_lock(&ps->lock);
    dl_list_insert_tail(&ps->inboxes, &in->link);
    uv_mutex_unlock(&ps->lock);
    return in;
}

void dl_pubsub_inbox_set_reader(dl_pubsub_inbox_t *in, void (*read)(void *), void *data)
{
    if (read == NULL && in->read_data != data)
        return; /* another reader has taken over since */
    in->read = read;
    in->read_data = data;
}

void dl_pubsub_inbox_run(dl_pubsub_inbox_t *in)
{
    if (in && in->read)
        in->read(in->read_data);
}

void dl_pubsub_inbox_kick(dl_pubsub_inbox_t *in)
{
    uv_mutex_lock(&in->ps->lock);
    if (in->wake)
        in->wake(in->data);
    uv_mutex_unlock(&in->ps->lock);
}

/* ---- under the lock */

static chan_t *chan_find(dl_pubsub_t *ps, const char *ch, size_t chlen, uint64_t h)
{
    for (chan_t *c = ps->buckets[h & (ps->n_buckets - 1)]; c; c = c->next)
        if (c->hash == h && c->len == chlen && memcmp(c->name, ch, chlen) == 0)
            return c;
    return NULL;
}

/* Doubles the table when channels outnumber buckets twice (a failed
 * allocation keeps the old one: longer chains, still correct). */
static void maybe_grow(dl_pubsub_t *ps)
{
    if (ps->st.channels <= 2 * ps->n_buckets || ps->n_buckets >= (1u << 24))
        return;
    size_t nb = ps->n_buckets * 2;
    chan_t **b = dl_calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < ps->n_buckets; i++) {
        chan_t *c = ps->buckets[i];
        while (c) {
            chan_t *n = c->next;
            c->next = b[c->hash & (nb - 1)];
            b[c->hash & (nb - 1)] = c;
            c = n;
        }
    }
    dl_free(ps->buckets);
    ps->buckets = b;
    ps->n_buckets = nb;
}

static void chan_unlink_sub(dl_pubsub_t *ps, dl_pubsub_sub_t *s)
{
    chan_t *c = s->chan;
    if (c == NULL)
        return;
    dl_list_remove(&s->ch_link);
    s->chan = NULL;
    ps->st.subscriptions--;
    if (!dl_list_empty(&c->subs))
        return;
    chan_t **pp = &ps->buckets[c->hash & (ps->n_buckets - 1)];
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    ps->st.channels--;
    dl_free(c);
}

static void mark_ready(dl_pubsub_sub_t *s)
{
    dl_pubsub_inbox_t *in = s->in;
    if (dl_list_linked(&s->ready_link))
        return;
    int was_empty = dl_list_empty(&in->ready);
    dl_list_insert_tail(&in->ready, &s->ready_link);
    /* one wake per empty-to-not transition: the reader drains the whole list */
    if (was_empty && in->wake)
        in->wake(in->data);
}

/* Closes s for good (overflow, or its inbox going): it leaves its channel
 * and its queue goes; its owner learns it from dl_pubsub_next. */
static void close_sub(dl_pubsub_t *ps, dl_pubsub_sub_t *s)
{
    chan_unlink_sub(ps, s);
    drop_queue(s);
}

/* 1: queued; 0: dropped (full queue, or no memory to grow it). */
static int push(dl_pubsub_t *ps, dl_pubsub_sub_t *s, dl_pubsub_msg_t *m)
{
    if (s->n == ps->lim.queue) {
        ps->st.dropped += 1 + ((s->flags & DL_PUBSUB_CLOSE_ON_OVERFLOW) ? s->n : 0);
        if (s->flags & DL_PUBSUB_CLOSE_ON_OVERFLOW) {
            ps->st.closed++;
            close_sub(ps, s);
            mark_ready(s);
        }
        return 0;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        if (nc > ps->lim.queue)
            nc = ps->lim.queue;
        dl_pubsub_msg_t **q = dl_malloc(nc * sizeof(*q));
        if (q == NULL) {
            ps->st.dropped++;
            return 0;
        }
        for (size_t i = 0; i < s->n; i++)
            q[i] = s->q[(s->head + i) % s->cap];
        dl_free(s->q);
        s->q = q;
        s->cap = nc;
        s->head = 0;
    }
    s->q[(s->head + s->n) % s->cap] = m;
    s->n++;
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    mark_ready(s);
    return 1;
}

/* ---- messages */

static int check_channel(size_t chlen)
{
    return chlen >= 1 && chlen <= DL_PUBSUB_MAX_CHANNEL ? 0 : DL_EINVAL;
}

static dl_pubsub_msg_t *msg_new(const char *msg, size_t len)
{
    dl_pubsub_msg_t *m = dl_malloc(sizeof(*m) + len + 1);
    if (m == NULL)
        return NULL;
    m->refs = 1;
    m->len = len;
    if (len)
        memcpy(m->data, msg, len);
    m->data[len] = '\0';
    return m;
}

void dl_pubsub_msg_unref(dl_pubsub_msg_t *m)
{
    if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
        dl_free(m);
}

/* in: only that inbox's subscriptions (dl_pubsub_deliver); NULL: all */
static int queue_on(dl_pubsub_t *ps, dl_pubsub_inbox_t *in, const char *ch, size_t chlen,
                    const char *msg, size_t len, size_t *queued)
{
    *queued = 0;
    if (check_channel(chlen) != 0)
        return DL_EINVAL;
    if (len > ps->lim.max_message)
        return DL_ETOOBIG;
    dl_pubsub_msg_t *m = msg_new(msg, len);
    if (m == NULL)
        return DL_ENOMEM;
    uint64_t h = hash_of(ps, ch, chlen);
    size_t n = 0;
    uv_mutex_lock(&ps->lock);
    if (in == NULL)
        ps->st.published++;
    chan_t *c = chan_find(ps, ch, chlen, h);
    if (c) {
        dl_list_t *it, *tmp; /* an overflow may close (unlink) a subscription */
        dl_list_foreach_safe(it, tmp, &c->subs)
        {
            dl_pubsub_sub_t *s = dl_list_entry(it, dl_pubsub_sub_t, ch_link);
            if (in == NULL || s->in == in)
                n += (size_t)push(ps, s, m);
            /* the last subscription closed by overflow freed the channel */
            if (tmp == &c->subs)
                break;
        }
    }
    uv_mutex_unlock(&ps->lock);
    dl_pubsub_msg_unref(m);
    *queued = n;
    return 0;
}

static int memory_publish(dl_pubsub_t *ps, const char *ch, size_t chlen, const char *msg,
                          size_t len, size_t *queued)
{
    return queue_on(ps, NULL, ch, chlen, msg, len, queued);
}

int dl_pubsub_publish(dl_pubsub_t *ps, const char *ch, size_t chlen, const char *msg, size_t len,
                      size_t *queued)
{
    return ps->ops->publish(ps, ch, chlen, msg, len, queued);
}

int dl_pubsub_deliver(dl_pubsub_inbox_t *in, const char *ch, size_t chlen, const char *msg,
                      size_t len, size_t *queued)
{
    return queue_on(in->ps, in, ch, chlen, msg, len, queued);
}

/* ---- subscriptions */

int dl_pubsub_subscribe(dl_pubsub_inbox_t *in, const char *ch, size_t chlen, int flags,
                        void *user, dl_pubsub_sub_t **out)
{
    *out = NULL;
    if (check_channel(chlen) != 0)
        return DL_EINVAL;
    dl_pubsub_t *ps = in->ps;
    dl_pubsub_sub_t *s = dl_calloc(1, sizeof(*s));
    chan_t *fresh = dl_malloc(sizeof(*fresh) + chlen + 1);
    if (s == NULL || fresh == NULL) {
        dl_free(s);
        dl_free(fresh);
        return DL_ENOMEM;
    }
    s->in = in;
    s->user = user;
    s->flags = flags;
    s->chlen = chlen;
    memcpy(s->channel, ch, chlen);
    dl_list_init(&s->ready_link);
    uint64_t h = hash_of(ps, ch, chlen);
    uv_mutex_lock(&ps->lock);
    int rc = in->closed ? DL_ECANCELED : in->n_subs >= ps->lim.max_subs ? DL_ETOOBIG : 0;
    if (rc == 0) {
        chan_t *c = chan_find(ps, ch, chlen, h);
        if (c == NULL) {
            c = fresh;
            fresh = NULL;
            c->hash = h;
            c->len = chlen;
            memcpy(c->name, ch, chlen);
            c->name[chlen] = '\0';
            dl_list_init(&c->subs);
            c->next = ps->buckets[h & (ps->n_buckets - 1)];
            ps->buckets[h & (ps->n_buckets - 1)] = c;
            ps->st.channels++;
            maybe_grow(ps);
        }
        s->chan = c;
        dl_list_insert_tail(&c->subs, &s->ch_link);
        dl_list_insert_tail(&in->subs, &s->in_link);
        in->n_subs++;
        ps->st.subscriptions++;
    }
    uv_mutex_unlock(&ps->lock);
    dl_free(fresh);
    if (rc != 0) {
        dl_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void dl_pubsub_cancel(dl_pubsub_sub_t *s)
{
    if (s == NULL)
        return;
    dl_pubsub_inbox_t *in = s->in;
    dl_pubsub_t *ps = in->ps;
    uv_mutex_lock(&ps->lock);
    chan_unlink_sub(ps, s);
    if (dl_list_linked(&s->ready_link))
        dl_list_remove(&s->ready_link);
    dl_list_remove(&s->in_link);
    in->n_subs--;
    uv_mutex_unlock(&ps->lock);
    drop_queue(s); /* no other thread can reach it now */
    dl_free(s);
}

int dl_pubsub_next(dl_pubsub_sub_t *s, dl_pubsub_msg_t **out)
{
    dl_pubsub_t *ps = s->in->ps;
    int rc;
    *out = NULL;
    uv_mutex_lock(&ps->lock);
    if (s->n) {
        *out = s->q[s->head];
        s->head = (s->head + 1) % s->cap;
        s->n--;
        ps->st.delivered++;
        rc = 0;
    } else {
        rc = s->chan ? DL_ENOENT : DL_ECANCELED;
    }
    uv_mutex_unlock(&ps->lock);
    return rc;
}

const char *dl_pubsub_channel(const dl_pubsub_sub_t *s, size_t *len)
{
    if (len)
        *len = s->chlen;
    return s->channel;
}

size_t dl_pubsub_queued(dl_pubsub_sub_t *s)
{
    dl_pubsub_t *ps = s->in->ps;
    uv_mutex_lock(&ps->lock);
    size_t n = s->n;
    uv_mutex_unlock(&ps->lock);
    return n;
}

size_t dl_pubsub_ready(dl_pubsub_inbox_t *in, void **users, size_t max)
{
    dl_pubsub_t *ps = in->ps;
    size_t n = 0;
    uv_mutex_lock(&ps->lock);
    while (n < max && !dl_list_empty(&in->ready)) {
        dl_pubsub_sub_t *s = dl_list_entry(in->ready.next, dl_pubsub_sub_t, ready_link);
        dl_list_remove(&s->ready_link);
        users[n++] = s->user;
    }
    uv_mutex_unlock(&ps->lock);
    return n;
}

void dl_pubsub_inbox_close(dl_pubsub_inbox_t *in)
{
    if (in == NULL)
        return;
    dl_pubsub_t *ps = in->ps;
    uv_mutex_lock(&ps->lock);
    in->closed = 1;
    in->wake = NULL;
    dl_list_t *it;
    dl_list_foreach(it, &in->subs)
    {
        dl_pubsub_sub_t *s = dl_list_entry(it, dl_pubsub_sub_t, in_link);
        close_sub(ps, s);
    }
    uv_mutex_unlock(&ps->lock);
}

void dl_pubsub_stats(dl_pubsub_t *ps, dl_pubsub_stats_t *out)
{
    uv_mutex_lock(&ps->lock);
    *out = ps->st;
    uv_mutex_unlock(&ps->lock);
}
