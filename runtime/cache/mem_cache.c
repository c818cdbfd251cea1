/*
 * mem_cache.c - the in-process cache that stands in for Redis when none is
 * configured, shared by every worker thread, and the glob matcher that both
 * cache backends use for pattern invalidation. The cache is split into shards
 * picked by the high bits of a seeded wyhash-style hash; each shard has its
 * own mutex, a chained hash table indexed by the low bits (doubled when it
 * holds more entries than buckets), an intrusive LRU list, a byte budget and
 * its counters. An entry is one allocation (header, key, value) and is charged
 * at exactly its allocation size, so a shard never holds more than its budget.
 * Copies into a new entry are made before taking the lock and dropped entries
 * are freed after releasing it, to keep lock hold times short. Expiry is lazy:
 * gets, TTL queries and eviction drop the expired entries they meet. The glob
 * matcher reproduces Redis's stringmatchlen() without its recursion.
 */
#include "cache/mem_cache.h"

#include <pthread.h>
#include <time.h>

#include "common/internal.h"
#include "common/list.h"

/* Redis stops matching once a pattern has recursed through this many '*' groups. */
#define GLOB_MAX_STARS 1000

/* Buckets per shard at creation and after a flush. */
#define MIN_BUCKETS 64

/* Shards sit on their own cache lines so that their locks do not share one. */
#define CACHE_LINE 64

/* ---- glob matching ------------------------------------------------------------------------ */

/*
 * Case folding of a range bound or a byte tested against one, as Redis gets it
 * from glibc's tolower() on a plain char: ASCII letters fold, and the negative
 * values of bytes 0x80..0xfe come back as 128..254 while 0xff stays -1 (EOF).
 */
static int fold_range(int x)
{
    if (x < -1)
        return x + 256;
    return dl_tolower(x);
}

static int same_byte(char a, char b, int nocase)
{
    if (nocase)
        return dl_tolower(a) == dl_tolower(b);
    return a == b;
}

/*
 * Matches the class that opens at pat[*pi] ('[') against byte c and moves *pi
 * past it. The parse follows Redis: an escape is tested before ']', "x-y" is a
 * range only when two more bytes follow the x, and an unclosed class ends with
 * the pattern.
 */
static int match_class(const char *pat, size_t plen, size_t *pi, char c, int nocase)
{
    size_t i = *pi + 1;
    int negate = 0;
    int match = 0;

    if (i < plen && pat[i] == '^') {
        negate = 1;
        i++;
    }
    while (i < plen) {
        if (pat[i] == '\\' && plen - i >= 2) {
            /* Redis compares an escaped byte exactly, even when folding case. */
            i++;
            if (pat[i] == c)
                match = 1;
        } else if (pat[i] == ']') {
            break;
        } else if (plen - i >= 3 && pat[i + 1] == '-') {
            int lo = (signed char)pat[i];
            int hi = (signed char)pat[i + 2];
            int x = (signed char)c;
            if (lo > hi) {
                int t = lo;
                lo = hi;
                hi = t;
            }
            if (nocase) {
                lo = fold_range(lo);
                hi = fold_range(hi);
                x = fold_range(x);
            }
            if (x >= lo && x <= hi)
                match = 1;
            i += 2;
        } else if (same_byte(pat[i], c, nocase)) {
            match = 1;
        }
        i++;
    }
    *pi = i < plen ? i + 1 : plen;
    return negate ? !match : match;
}

/* Matches the single-byte token at pat[*pi] (not '*') against c and moves *pi past it. */
static int match_token(const char *pat, size_t plen, size_t *pi, char c, int nocase)
{
    size_t i = *pi;

    if (pat[i] == '?') {
        *pi = i + 1;
        return 1;
    }
    if (pat[i] == '[')
        return match_class(pat, plen, pi, c, nocase);
    if (pat[i] == '\\' && plen - i >= 2)
        i++;
    *pi = i + 1;
    return same_byte(pat[i], c, nocase);
}

int dl_glob_match(const char *pat, size_t plen, const char *s, size_t slen, int nocase)
{
    size_t p = 0;
    size_t i = 0;
    size_t star_p = SIZE_MAX; /* pattern index just after the last '*' group seen */
    size_t star_i = 0;        /* string index that group's match currently ends at */
    unsigned stars = 0;

    /* Redis never enters its loop for an empty string: only "" matches "". */
    if (slen == 0)
        return plen == 0;
    /*
     * Every token but '*' consumes exactly one byte, so when a token fails it
     * is enough to let the last '*' absorb one more byte and retry from just
     * after it: earlier stars absorbing more could only shift the rest right,
     * which the last star's retries already cover. Hence O(plen * slen).
     */
    while (i < slen) {
        if (p < plen && pat[p] == '*') {
            while (p + 1 < plen && pat[p + 1] == '*')
                p++;
            if (p + 1 == plen)
                return 1;
            stars++;
            if (stars > GLOB_MAX_STARS)
                return 0;
            p++;
            star_p = p;
            star_i = i;
            continue;
        }
        if (p < plen && match_token(pat, plen, &p, s[i], nocase)) {
            i++;
            continue;
        }
        if (star_p == SIZE_MAX)
            return 0;
        star_i++;
        i = star_i;
        p = star_p;
    }
    while (p < plen && pat[p] == '*')
        p++;
    return p == plen;
}

/* ---- hashing ------------------------------------------------------------------------------ */

static const uint64_t WY0 = 0xa0761d6478bd642full;
static const uint64_t WY1 = 0xe7037ed1a0b428dbull;
static const uint64_t WY2 = 0x8ebc6af09c88c6e3ull;
static const uint64_t WY3 = 0x589965cc75374cc3ull;

/* 64x64 -> 128-bit multiply: *a gets the low half, *b the high half. */
static inline void wy_mum(uint64_t *a, uint64_t *b)
{
#ifdef __SIZEOF_INT128__
    __uint128_t r = (__uint128_t)*a * *b;
    *a = (uint64_t)r;
    *b = (uint64_t)(r >> 64);
#else
    uint64_t ha = *a >> 32, hb = *b >> 32, la = (uint32_t)*a, lb = (uint32_t)*b;
    uint64_t rh = ha * hb, rm0 = ha * lb, rm1 = hb * la, rl = la * lb;
    uint64_t t = rl + (rm0 << 32);
    uint64_t carry = t < rl;
    uint64_t lo = t + (rm1 << 32);
    carry += lo < t;
    *a = lo;
    *b = rh + (rm0 >> 32) + (rm1 >> 32) + carry;
#endif
}

static inline uint64_t wy_mix(uint64_t a, uint64_t b)
{
    wy_mum(&a, &b);
    return a ^ b;
}

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/*
 * wyhash (final version 4, by Wang Yi, public domain), without the
 * platform-specific byte order handling: the hash only has to be consistent
 * within one process.
 */
static uint64_t hash_bytes(const void *key, size_t len, uint64_t seed)
{
    const uint8_t *p = key;
    uint64_t a;
    uint64_t b;

    seed ^= wy_mix(seed ^ WY0, WY1);
    if (len <= 16) {
        if (len >= 4) {
            size_t off = (len >> 3) << 2;
            a = (rd32(p) << 32) | rd32(p + off);
            b = (rd32(p + len - 4) << 32) | rd32(p + len - 4 - off);
        } else if (len > 0) {
            a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
            b = 0;
        } else {
            a = 0;
            b = 0;
        }
    } else {
        size_t i = len;
        if (i > 48) {
            uint64_t see1 = seed;
            uint64_t see2 = seed;
            do {
                seed = wy_mix(rd64(p) ^ WY1, rd64(p + 8) ^ seed);
                see1 = wy_mix(rd64(p + 16) ^ WY2, rd64(p + 24) ^ see1);
                see2 = wy_mix(rd64(p + 32) ^ WY3, rd64(p + 40) ^ see2);
                p += 48;
                i -= 48;
            } while (i > 48);
            seed ^= see1 ^ see2;
        }
        while (i > 16) {
            seed = wy_mix(rd64(p) ^ WY1, rd64(p + 8) ^ seed);
            i -= 16;
            p += 16;
        }
        a = rd64(p + i - 16);
        b = rd64(p + i - 8);
    }
    a ^= WY1;
    b ^= seed;
    wy_mum(&a, &b);
    return wy_mix(a ^ WY0 ^ len, b ^ WY1);
}

/* ---- entries and shards ------------------------------------------------------------------- */

typedef struct entry_s {
    dl_list_t lru;         /* in its shard's LRU list */
    struct entry_s *hnext; /* bucket chain; also chains entries waiting to be freed */
    uint64_t hash;
    uint64_t expire_ms; /* 0: never */
    size_t vlen;
    uint32_t klen;
    uint32_t flags;
    char data[]; /* the key, then the value */
} entry_t;

typedef struct {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t mask; /* bucket count - 1; the count is a power of two */
    size_t items;
    size_t bytes;
    dl_list_t lru; /* head: next is the most recently used, prev the least */
    uint64_t hits;
    uint64_t misses;
    uint64_t sets;
    uint64_t evictions;
    uint64_t expired;
} shard_t;

/* A shard padded to whole cache lines. */
typedef union {
    shard_t s;
    char pad[(sizeof(shard_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE];
} shard_slot_t;

struct dl_memcache_s {
    shard_slot_t *slots; /* CACHE_LINE-aligned inside slots_mem */
    void *slots_mem;
    uint64_t seed;
    size_t max_bytes;
    size_t shard_budget;
    unsigned nshards;
    unsigned shard_bits; /* log2(nshards) */
};

size_t dl_memcache_entry_size(size_t klen, size_t vlen)
{
    size_t n = sizeof(entry_t) + klen;

    if (n < klen || n + vlen < n)
        return SIZE_MAX;
    return n + vlen;
}

static inline size_t entry_charge(const entry_t *e)
{
    return sizeof(entry_t) + e->klen + e->vlen;
}

static inline int entry_expired(const entry_t *e, uint64_t now_ms)
{
    return e->expire_ms != 0 && now_ms >= e->expire_ms;
}

static inline uint64_t key_hash(const dl_memcache_t *c, const char *key, size_t klen)
{
    return hash_bytes(key, klen, c->seed);
}

/* The high bits pick the shard, leaving the low bits to the buckets. */
static inline shard_t *shard_for(dl_memcache_t *c, uint64_t h)
{
    /* Two shifts, so that one shard (shard_bits 0) gives index 0 without a shift by 64. */
    size_t idx = (size_t)((h >> (63 - c->shard_bits)) >> 1);
    return &c->slots[idx].s;
}

/* The slot holding the entry for key, or the empty slot ending its bucket's chain. */
static entry_t **find_slot(shard_t *sh, uint64_t h, const char *key, size_t klen)
{
    entry_t **pp = &sh->buckets[h & sh->mask];

    while (*pp != NULL) {
        entry_t *e = *pp;
        if (e->hash == h && e->klen == klen && (klen == 0 || memcmp(e->data, key, klen) == 0))
            return pp;
        pp = &e->hnext;
    }
    return pp;
}

/* Unhooks the entry in slot *pp from the shard and pushes it on the to-free chain. */
static void remove_at(shard_t *sh, entry_t **pp, entry_t **dead)
{
    entry_t *e = *pp;

    *pp = e->hnext;
    dl_list_remove(&e->lru);
    sh->items--;
    sh->bytes -= entry_charge(e);
    e->hnext = *dead;
    *dead = e;
}

/* Same as remove_at() for an entry known only by address: walks its chain to find the slot. */
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

/* Doubles the bucket array; keeps the old one if memory is short, as longer chains still work. */
static void grow_table(shard_t *sh)
{
    size_t n = (sh->mask + 1) * 2;
    entry_t **nb;

    if (n > SIZE_MAX / sizeof(entry_t *))
        return;
    nb = dl_calloc(n, sizeof(entry_t *));
    if (nb == NULL)
        return;
    for (size_t b = 0; b <= sh->mask; b++) {
        entry_t *e = sh->buckets[b];
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

/* ---- the cache ---------------------------------------------------------------------------- */

static uint64_t make_seed(const void *addr)
{
    static uint64_t counter;
    struct timespec ts;
    uint64_t n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);

    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Unpredictable enough that clients cannot aim their keys at one bucket. */
    return wy_mix((uint64_t)(uintptr_t)addr ^ WY2 ^ n,
                  ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ WY3);
}

dl_memcache_t *dl_memcache_new(size_t max_bytes, int shards)
{
    unsigned n = 1;
    unsigned bits = 0;
    dl_memcache_t *c;

    if (shards <= 0)
        shards = DL_MEMCACHE_DEFAULT_SHARDS;
    if (shards > DL_MEMCACHE_MAX_SHARDS)
        shards = DL_MEMCACHE_MAX_SHARDS;
    while (n < (unsigned)shards) {
        n <<= 1;
        bits++;
    }
    c = dl_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->slots_mem = dl_calloc(1, n * sizeof(shard_slot_t) + CACHE_LINE - 1);
    if (c->slots_mem == NULL) {
        dl_free(c);
        return NULL;
    }
    c->slots = (shard_slot_t *)(((uintptr_t)c->slots_mem + CACHE_LINE - 1) &
                                ~(uintptr_t)(CACHE_LINE - 1));
    c->nshards = n;
    c->shard_bits = bits;
    c->max_bytes = max_bytes;
    c->shard_budget = max_bytes / n;
    c->seed = make_seed(c);
    for (unsigned i = 0; i < n; i++) {
        shard_t *sh = &c->slots[i].s;
        sh->buckets = dl_calloc(MIN_BUCKETS, sizeof(entry_t *));
        if (sh->buckets == NULL || pthread_mutex_init(&sh->lock, NULL) != 0) {
            dl_free(sh->buckets);
            sh->buckets = NULL;
            c->nshards = i;
            dl_memcache_free(c);
            return NULL;
        }
        sh->mask = MIN_BUCKETS - 1;
        dl_list_init(&sh->lru);
    }
    return c;
}

void dl_memcache_free(dl_memcache_t *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *sh = &c->slots[i].s;
        dl_list_t *l, *next;
        dl_list_foreach_safe(l, next, &sh->lru)
            dl_free(dl_list_entry(l, entry_t, lru));
        dl_free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    dl_free(c->slots_mem);
    dl_free(c);
}

int dl_memcache_get(dl_memcache_t *c, const char *key, size_t klen, uint64_t now_ms,
                    dl_buf_t *out, uint32_t *flags)
{
    uint64_t h = key_hash(c, key, klen);
    shard_t *sh = shard_for(c, h);
    entry_t *dead = NULL;
    entry_t **pp;
    entry_t *e;
    int rc = 0;

    pthread_mutex_lock(&sh->lock);
    pp = find_slot(sh, h, key, klen);
    e = *pp;
    if (e == NULL) {
        sh->misses++;
        rc = DL_ENOENT;
    } else if (entry_expired(e, now_ms)) {
        remove_at(sh, pp, &dead);
        sh->expired++;
        sh->misses++;
        rc = DL_ENOENT;
    } else {
        if (out != NULL)
            rc = dl_buf_append(out, e->data + e->klen, e->vlen);
        if (rc == 0) {
            if (flags != NULL)
                *flags = e->flags;
            dl_list_remove(&e->lru);
            dl_list_insert_head(&sh->lru, &e->lru);
            sh->hits++;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

int dl_memcache_set(dl_memcache_t *c, const char *key, size_t klen, const void *val, size_t vlen,
                    uint32_t flags, uint64_t ttl_ms, uint64_t now_ms)
{
    size_t size = dl_memcache_entry_size(klen, vlen);
    entry_t *dead = NULL;
    entry_t **pp;
    entry_t *e;

    if (klen > UINT32_MAX || size > c->shard_budget)
        return DL_ETOOBIG;
    e = dl_malloc(size);
    if (e == NULL)
        return DL_ENOMEM;
    e->hash = key_hash(c, key, klen);
    e->klen = (uint32_t)klen;
    e->vlen = vlen;
    e->flags = flags;
    e->expire_ms = 0;
    if (ttl_ms != 0)
        e->expire_ms = now_ms + ttl_ms < now_ms ? UINT64_MAX : now_ms + ttl_ms;
    if (klen > 0)
        memcpy(e->data, key, klen);
    if (vlen > 0)
        memcpy(e->data + klen, val, vlen);

    shard_t *sh = shard_for(c, e->hash);
    pthread_mutex_lock(&sh->lock);
    pp = find_slot(sh, e->hash, key, klen);
    if (*pp != NULL)
        remove_at(sh, pp, &dead);
    /* remove_at() left pp on whatever followed the old entry, a fine place to link in. */
    e->hnext = *pp;
    *pp = e;
    dl_list_insert_head(&sh->lru, &e->lru);
    sh->items++;
    sh->bytes += size;
    sh->sets++;
    while (sh->bytes > c->shard_budget) {
        entry_t *victim = dl_list_entry(sh->lru.prev, entry_t, lru);
        /* The new entry fits the budget alone, so eviction stops before reaching it. */
        DL_ASSERT(victim != e);
        if (entry_expired(victim, now_ms))
            sh->expired++;
        else
            sh->evictions++;
        remove_entry(sh, victim, &dead);
    }
    if (sh->items > sh->mask + 1)
        grow_table(sh);
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return 0;
}

int dl_memcache_del(dl_memcache_t *c, const char *key, size_t klen)
{
    uint64_t h = key_hash(c, key, klen);
    shard_t *sh = shard_for(c, h);
    entry_t *dead = NULL;
    entry_t **pp;

    pthread_mutex_lock(&sh->lock);
    pp = find_slot(sh, h, key, klen);
    if (*pp != NULL)
        remove_at(sh, pp, &dead);
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return dead != NULL ? 0 : DL_ENOENT;
}

DL_TEST_HOOK int64_t dl_memcache_ttl(dl_memcache_t *c, const char *key, size_t klen, uint64_t now_ms)
{
    uint64_t h = key_hash(c, key, klen);
    shard_t *sh = shard_for(c, h);
    entry_t *dead = NULL;
    entry_t **pp;
    int64_t rc;

    pthread_mutex_lock(&sh->lock);
    pp = find_slot(sh, h, key, klen);
    if (*pp == NULL) {
        rc = DL_ENOENT;
    } else if (entry_expired(*pp, now_ms)) {
        remove_at(sh, pp, &dead);
        sh->expired++;
        rc = DL_ENOENT;
    } else if ((*pp)->expire_ms == 0) {
        rc = -1;
    } else {
        uint64_t left = (*pp)->expire_ms - now_ms;
        rc = left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
    }
    pthread_mutex_unlock(&sh->lock);
    free_chain(dead);
    return rc;
}

size_t dl_memcache_invalidate(dl_memcache_t *c, const char *pattern, size_t plen)
{
    /* SCAN MATCH * skips matching altogether, so "*" covers the empty key there too. */
    int all = plen == 1 && pattern[0] == '*';
    size_t total = 0;

    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *sh = &c->slots[i].s;
        entry_t *dead = NULL;
        pthread_mutex_lock(&sh->lock);
        for (size_t b = 0; b <= sh->mask && sh->items > 0; b++) {
            entry_t **pp = &sh->buckets[b];
            while (*pp != NULL) {
                entry_t *e = *pp;
                if (all || dl_glob_match(pattern, plen, e->data, e->klen, 0)) {
                    remove_at(sh, pp, &dead);
                    total++;
                } else {
                    pp = &e->hnext;
                }
            }
        }
        pthread_mutex_unlock(&sh->lock);
        free_chain(dead);
    }
    return total;
}

DL_TEST_HOOK size_t dl_memcache_flush(dl_memcache_t *c)
{
    size_t total = 0;

    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *sh = &c->slots[i].s;
        /* A fresh small table, allocated outside the lock, gives back a grown one's memory. */
        entry_t **fresh = dl_calloc(MIN_BUCKETS, sizeof(entry_t *));
        entry_t **old = NULL;
        dl_list_t *first;
        dl_list_t *last;

        pthread_mutex_lock(&sh->lock);
        total += sh->items;
        first = sh->lru.next;
        last = sh->lru.prev;
        if (fresh != NULL) {
            old = sh->buckets;
            sh->buckets = fresh;
            sh->mask = MIN_BUCKETS - 1;
        } else {
            memset(sh->buckets, 0, (sh->mask + 1) * sizeof(entry_t *));
        }
        dl_list_init(&sh->lru);
        sh->items = 0;
        sh->bytes = 0;
        pthread_mutex_unlock(&sh->lock);

        /* The detached entries run from first to last; none when first is the head. */
        if (first != &sh->lru) {
            last->next = NULL;
            while (first != NULL) {
                dl_list_t *next = first->next;
                dl_free(dl_list_entry(first, entry_t, lru));
                first = next;
            }
        }
        dl_free(old);
    }
    return total;
}

void dl_memcache_stats(dl_memcache_t *c, dl_memcache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->max_bytes = c->max_bytes;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *sh = &c->slots[i].s;
        pthread_mutex_lock(&sh->lock);
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->sets += sh->sets;
        out->evictions += sh->evictions;
        out->expired += sh->expired;
        out->items += sh->items;
        out->bytes += sh->bytes;
        pthread_mutex_unlock(&sh->lock);
    }
}

/* ---- self-check for the unit tests -------------------------------------------------------- */

#ifdef DL_UNIT_TEST

/*
 * Walks every shard under its lock and checks the invariants: each listed
 * entry is in the bucket its hash names, list and table hold the same entries,
 * items and bytes agree with them and bytes fits the budget. Returns the
 * number of violations (0 when sound). Compiled into unit builds only.
 */
int memcache_check(dl_memcache_t *c)
{
    int bad = 0;

    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *sh = &c->slots[i].s;
        size_t listed = 0;
        size_t hashed = 0;
        size_t bytes = 0;
        pthread_mutex_lock(&sh->lock);
        dl_list_t *l;
        dl_list_foreach(l, &sh->lru) {
            entry_t *e = dl_list_entry(l, entry_t, lru);
            entry_t *x = sh->buckets[e->hash & sh->mask];
            while (x != NULL && x != e)
                x = x->hnext;
            bad += x == NULL;
            bad += l->next->prev != l;
            bad += shard_for(c, e->hash) != sh;
            bad += e->hash != key_hash(c, e->data, e->klen);
            listed++;
            bytes += entry_charge(e);
        }
        for (size_t b = 0; b <= sh->mask; b++) {
            for (entry_t *e = sh->buckets[b]; e != NULL; e = e->hnext)
                hashed++;
        }
        bad += listed != sh->items;
        bad += hashed != sh->items;
        bad += bytes != sh->bytes;
        bad += sh->bytes > c->shard_budget;
        pthread_mutex_unlock(&sh->lock);
    }
    return bad;
}
#endif /* DL_UNIT_TEST */
