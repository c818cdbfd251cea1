/*
 * shared_dict.c - api.shared's store (shared_dict.h): typed values shared by
 * every worker thread. Up to 16 shards, picked by the high bits of a seeded
 * hash of the key, each on its own cache line with a mutex, a chained hash
 * table indexed by the low bits (doubled when it holds more entries than
 * buckets), an LRU list and an equal part of the byte cap. An entry is one
 * allocation (header, key, string bytes) charged at exactly that size, so a
 * shard never holds more than its part. A set copies the value into its new
 * entry before taking the lock and frees what it replaced or evicted after
 * releasing it; an incr changes a number in place, so the common case holds
 * the lock for a lookup and an add. Expiry is lazy: a call that meets an
 * expired entry drops it, and eviction takes the least recently used entry
 * whether or not it has expired (only live ones count as evictions).
 */
#include "cache/shared_dict.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/list.h"

#define MIN_BUCKETS 64
#define CACHE_LINE 64
/* a small cap takes fewer shards, not tiny ones: each holds a longest key
 * (65535 bytes) with room to spare */
#define MIN_SHARD_BYTES (256u * 1024u)

typedef struct entry_s {
    dl_list_t lru;         /* in its shard's LRU list */
    struct entry_s *hnext; /* bucket chain; also chains entries waiting to be freed */
    uint64_t hash;
    uint64_t expire_ms; /* 0: never */
    double num;         /* a number's value; a boolean's is b */
    uint32_t slen;      /* a string's length (its bytes follow the key) */
    uint16_t klen;
    uint8_t type;
    uint8_t b;
    char data[]; /* the key, then a string's bytes */
} entry_t;

typedef struct {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t mask; /* bucket count - 1; the count is a power of two */
    size_t items;
    size_t bytes;
    uint64_t evictions;
    dl_list_t lru; /* next: the most recently used; prev: the least */
} shard_t;

typedef union {
    shard_t s;
    char pad[(sizeof(shard_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE];
} shard_slot_t;

struct dl_shdict_s {
    shard_slot_t *slots; /* CACHE_LINE-aligned inside slots_mem */
    void *slots_mem;
    uint64_t seed;
    size_t max_bytes;
    size_t budget; /* per shard */
    unsigned nshards;
    unsigned bits; /* log2(nshards) */
};

/* ---- hashing ------------------------------------------------------------------------------ */

static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* FNV-1a over 8-byte words from a per-dictionary random start, then a full
 * avalanche: keys chosen by clients (an address, a header) cannot be aimed at
 * one bucket without knowing the seed. */
static uint64_t hash_key(uint64_t seed, const char *key, size_t len)
{
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ULL;
    return fmix64(h ^ seed);
}

static uint64_t make_seed(const void *addr)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return fmix64(s ^ fmix64((uint64_t)(uintptr_t)addr ^ (uint64_t)getpid()));
}

/* ---- entries ------------------------------------------------------------------------------ */

size_t dl_shdict_entry_size(size_t klen, size_t vlen)
{
    if (klen > DL_SHDICT_MAX_KEY || vlen > UINT32_MAX)
        return SIZE_MAX;
    return sizeof(entry_t) + klen + vlen;
}

static size_t charge(const entry_t *e)
{
    return sizeof(entry_t) + e->klen + e->slen;
}

static int expired(const entry_t *e, uint64_t now_ms)
{
    return e->expire_ms != 0 && now_ms >= e->expire_ms;
}

static uint64_t expiry(uint64_t ttl_ms, uint64_t now_ms)
{
    if (ttl_ms == 0)
        return 0;
    return now_ms > UINT64_MAX - ttl_ms ? UINT64_MAX : now_ms + ttl_ms;
}

static shard_t *shard_for(dl_shdict_t *d, uint64_t h)
{
    return &d->slots[(h >> (63 - d->bits)) >> 1].s; /* two shifts: bits 0 gives 0 */
}

static entry_t **find_slot(shard_t *sh, uint64_t h, const char *key, size_t klen)
{
    entry_t **pp = &sh->buckets[h & sh->mask];
    while (*pp != NULL) {
        entry_t *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return pp;
        pp = &e->hnext;
    }
    return pp;
}

static void remove_at(shard_t *sh, entry_t **pp, entry_t **dead)
{
    entry_t *e = *pp;
    *pp = e->hnext;
    dl_list_remove(&e->lru);
    sh->items--;
    sh->bytes -= charge(e);
    e->hnext = *dead;
    *dead = e;
}

static void remove_entry(shard_t *sh, entry_t *e, entry_t **dead)
{
    entry_t **pp = &sh->buckets[e->hash & sh->mask];
    while (*pp != e) {
        DL_ASSERT(*pp != NULL);
        pp = &(*pp)->hnext;
    }
    remove_at(sh, pp, dead);
}

static void free_chain(entry_t *e)
{
    while (e != NULL) {
        entry_t *next = e->hnext;
        dl_free(e);
        e = next;
    }
}

/* Doubles the buckets; keeps the old ones when memory is short (longer chains still work). */
static void grow_table(shard_t *sh)
{
    size_t n = (sh->mask + 1) * 2;
    entry_t **nb = dl_calloc(n, sizeof(entry_t *));
    if (nb == NULL)
        return;
    for (size_t i = 0; i <= sh->mask; i++) {
        entry_t *e = sh->buckets[i];
        while (e != NULL) {
            entry_t *next = e->hnext;
            entry_t **slot = &nb[e->hash & (n - 1)];
            e->hnext = *slot;
            *slot = e;
            e = next;
        }
    }
    dl_free(sh->buckets);
    sh->buckets = nb;
    sh->mask = n - 1;
}

/* Drops least recently used entries until need more bytes fit in the shard's
 * part (the caller checked need <= budget). */
static void make_room(dl_shdict_t *d, shard_t *sh, size_t need, uint64_t now_ms, entry_t **dead)
{
    while (sh->bytes + need > d->budget && !dl_list_empty(&sh->lru)) {
        entry_t *e = dl_list_entry(sh->lru.prev, entry_t, lru);
        if (!expired(e, now_ms))
            sh->evictions++;
        remove_entry(sh, e, dead);
    }
}

static void link_new(shard_t *sh, entry_t **slot, entry_t *e)
{
    e->hnext = NULL;
    *slot = e;
    dl_list_insert_head(&sh->lru, &e->lru);
    sh->items++;
    sh->bytes += charge(e);
    if (sh->items > sh->mask + 1)
        grow_table(sh);
}

static void touch(shard_t *sh, entry_t *e)
{
    if (sh->lru.next != &e->lru) {
        dl_list_remove(&e->lru);
        dl_list_insert_head(&sh->lru, &e->lru);
    }
}

/* ---- the dictionary ----------------------------------------------------------------------- */

dl_shdict_t *dl_shdict_new(size_t max_bytes)
{
    unsigned n = DL_SHDICT_MAX_SHARDS, bits = 4;
    while (n > 1 && max_bytes / n < MIN_SHARD_BYTES) {
        n >>= 1;
        bits--;
    }
    dl_shdict_t *d = dl_calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->slots_mem = dl_calloc(1, n * sizeof(shard_slot_t) + CACHE_LINE - 1);
    if (d->slots_mem == NULL) {
        dl_free(d);
        return NULL;
    }
    d->slots = (shard_slot_t *)(((uintptr_t)d->slots_mem + CACHE_LINE - 1) &
                                ~(uintptr_t)(CACHE_LINE - 1));
    d->bits = bits;
    d->max_bytes = max_bytes;
    d->budget = max_bytes / n;
    d->seed = make_seed(d);
    for (unsigned i = 0; i < n; i++) {
        shard_t *sh = &d->slots[i].s;
        sh->buckets = dl_calloc(MIN_BUCKETS, sizeof(entry_t *));
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            dl_free(sh->buckets);
            sh->buckets = NULL;
            dl_shdict_free(d); /* frees the i shards made so far */
            return NULL;
        }
        sh->mask = MIN_BUCKETS - 1;
        dl_list_init(&sh->lru);
        d->nshards = i + 1;
    }
    return d;
}

void dl_shdict_free(dl_shdict_t *d)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->nshards; i++) {
        shard_t *sh = &d->slots[i].s;
        dl_list_t *l, *next;
        dl_list_foreach_safe(l, next, &sh->lru)
            dl_free(dl_list_entry(l, entry_t, lru));
        dl_free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    dl_free(d->slots_mem);
    dl_free(d);
}

static int key_ok(const char *key, size_t klen)
{
    return key != NULL && klen >= 1 && klen <= DL_SHDICT_MAX_KEY;
}

int dl_shdict_get(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms,
                  dl_shdict_value_t *v, dl_buf_t *out)
{
    if (!key_ok(key, klen))
        return DL_ENOENT;
    uint64_t h = hash_key(d->seed, key, klen);
    shard_t *sh = shard_for(d, h);
    entry_t *dead = NULL;
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    entry_t **pp = find_slot(sh, h, key, klen);
    entry_t *e = *pp;
    if (e == NULL) {
        rc = DL_ENOENT;
    } else if (expired(e, now_ms)) {
        remove_at(sh, pp, &dead);
        rc = DL_ENOENT;
    } else {
        v->type = e->type;
        v->num = e->num;
        v->b = e->b;
        v->str = NULL;
        v->len = e->slen;
        if (e->type == DL_SHV_STRING && dl_buf_append(out, e->data + e->klen, e->slen) != 0)
            rc = DL_ENOMEM;
        touch(sh, e);
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

int dl_shdict_set(dl_shdict_t *d, const char *key, size_t klen, const dl_shdict_value_t *v,
                  uint64_t ttl_ms, int flags, uint64_t now_ms)
{
    if (!key_ok(key, klen) || v->type < DL_SHV_STRING || v->type > DL_SHV_BOOLEAN)
        return DL_EINVAL;
    size_t vlen = v->type == DL_SHV_STRING ? v->len : 0;
    size_t size = dl_shdict_entry_size(klen, vlen);
    if (size > d->budget)
        return DL_ETOOBIG;
    entry_t *n = dl_malloc(size);
    if (n == NULL)
        return DL_ENOMEM;
    uint64_t h = hash_key(d->seed, key, klen);
    n->hash = h;
    n->expire_ms = expiry(ttl_ms, now_ms);
    n->num = v->type == DL_SHV_NUMBER ? v->num : 0;
    n->b = v->type == DL_SHV_BOOLEAN && v->b;
    n->type = (uint8_t)v->type;
    n->klen = (uint16_t)klen;
    n->slen = (uint32_t)vlen;
    memcpy(n->data, key, klen);
    if (vlen)
        memcpy(n->data + klen, v->str, vlen);

    shard_t *sh = shard_for(d, h);
    entry_t *dead = NULL;
    pthread_mutex_lock(&sh->lock);
    entry_t **pp = find_slot(sh, h, key, klen);
    if (*pp != NULL) {
        if ((flags & DL_SHDICT_ADD) && !expired(*pp, now_ms)) {
            touch(sh, *pp);
            pthread_mutex_unlock(&sh->lock);
            dl_free(n);
            return DL_EDUPKEY;
        }
        remove_at(sh, pp, &dead);
    }
    make_room(d, sh, size, now_ms, &dead);
    /* eviction may have unlinked entries of this chain: look again */
    link_new(sh, find_slot(sh, h, key, klen), n);
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return 0;
}

int dl_shdict_incr(dl_shdict_t *d, const char *key, size_t klen, double delta,
                   const double *init, uint64_t init_ttl_ms, uint64_t now_ms, double *out)
{
    if (!key_ok(key, klen))
        return DL_EINVAL;
    uint64_t h = hash_key(d->seed, key, klen);
    shard_t *sh = shard_for(d, h);
    entry_t *dead = NULL;
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    entry_t **pp = find_slot(sh, h, key, klen);
    if (*pp != NULL && expired(*pp, now_ms))
        remove_at(sh, pp, &dead); /* *pp is now the rest of the chain */
    pp = find_slot(sh, h, key, klen);
    entry_t *e = *pp;
    if (e != NULL) {
        if (e->type != DL_SHV_NUMBER) {
            rc = DL_EINVAL;
        } else {
            e->num += delta;
            *out = e->num;
            touch(sh, e);
        }
    } else if (init == NULL) {
        rc = DL_ENOENT;
    } else {
        /* a new counter: small, so made under the lock (rate limits create
         * one per client and window, and a second lookup would cost more) */
        size_t size = dl_shdict_entry_size(klen, 0);
        e = size > d->budget ? NULL : dl_malloc(size);
        if (e == NULL) {
            rc = size > d->budget ? DL_ETOOBIG : DL_ENOMEM;
        } else {
            e->hash = h;
            e->expire_ms = expiry(init_ttl_ms, now_ms);
            e->num = *init + delta;
            e->b = 0;
            e->type = DL_SHV_NUMBER;
            e->klen = (uint16_t)klen;
            e->slen = 0;
            memcpy(e->data, key, klen);
            make_room(d, sh, size, now_ms, &dead);
            link_new(sh, find_slot(sh, h, key, klen), e);
            *out = e->num;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

int dl_shdict_delete(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms)
{
    if (!key_ok(key, klen))
        return DL_ENOENT;
    uint64_t h = hash_key(d->seed, key, klen);
    shard_t *sh = shard_for(d, h);
    entry_t *dead = NULL;
    int rc = DL_ENOENT;
    pthread_mutex_lock(&sh->lock);
    entry_t **pp = find_slot(sh, h, key, klen);
    if (*pp != NULL) {
        rc = expired(*pp, now_ms) ? DL_ENOENT : 0;
        remove_at(sh, pp, &dead);
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

int dl_shdict_ttl(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms,
                  uint64_t *left_ms)
{
    if (!key_ok(key, klen))
        return DL_ENOENT;
    uint64_t h = hash_key(d->seed, key, klen);
    shard_t *sh = shard_for(d, h);
    entry_t *dead = NULL;
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    entry_t **pp = find_slot(sh, h, key, klen);
    if (*pp == NULL) {
        rc = DL_ENOENT;
    } else if (expired(*pp, now_ms)) {
        remove_at(sh, pp, &dead);
        rc = DL_ENOENT;
    } else {
        *left_ms = (*pp)->expire_ms == 0 ? 0 : (*pp)->expire_ms - now_ms;
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

void dl_shdict_stats(dl_shdict_t *d, dl_shdict_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->max_bytes = d->max_bytes;
    out->shards = d->nshards;
    for (unsigned i = 0; i < d->nshards; i++) {
        shard_t *sh = &d->slots[i].s;
        pthread_mutex_lock(&sh->lock);
        out->bytes += sh->bytes;
        out->entries += sh->items;
        out->evictions += sh->evictions;
        pthread_mutex_unlock(&sh->lock);
    }
}
