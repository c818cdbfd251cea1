/*
 * mem_cache.h - the embedded in-process cache used when no Redis is configured,
 * shared by all worker threads, and the Redis-compatible glob matcher that
 * pattern invalidation uses on both cache backends.
 */
#ifndef DL_MEM_CACHE_H
#define DL_MEM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Shard counts outside 1..DL_MEMCACHE_MAX_SHARDS are clamped by dl_memcache_new(). */
#define DL_MEMCACHE_DEFAULT_SHARDS 16
#define DL_MEMCACHE_MAX_SHARDS 1024

/**
 * Glob matching with the semantics of Redis's stringmatchlen() (KEYS, SCAN
 * MATCH, PSUBSCRIBE): `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`,
 * `[a-z]` (reversed ranges such as `[z-a]` work too) and `\x` for a literal x,
 * inside and outside classes. Redis's corner cases are kept on purpose so both
 * backends invalidate the same keys:
 *   - an empty string matches only the empty pattern ("*" does not match "");
 *   - an unclosed class runs to the end of the pattern ("[ab" is "[ab]"), a
 *     class that opens with ']' is empty ("[]" matches nothing, "[^]" any byte),
 *     and a trailing lone backslash is a literal backslash;
 *   - a pattern needing more than 1000 '*' groups before its last never matches;
 *   - range bounds compare as signed chars, as Redis built for x86-64 does;
 *   - `nocase` folds ASCII only, and never applies to an escaped byte in a class.
 * Both sides are byte strings of the given lengths (NUL is an ordinary byte).
 * Runs in O(plen * slen) time and constant space: iterative, backtracking only
 * to the last '*', so patterns like "a*a*a*a*a*b" cannot blow up.
 * Returns 1 on a match, 0 otherwise. Never allocates; any thread.
 */
int dl_glob_match(const char *pat, size_t plen, const char *s, size_t slen, int nocase);

/**
 * The cache: `shards` independent parts, each with its own mutex, hash table,
 * LRU list and a byte budget of about max_bytes / shards. A key lives in the
 * shard picked by the high bits of its hash, so threads working on different
 * keys rarely wait for each other. Every function below is thread-safe except
 * dl_memcache_free(), which must not race with other calls.
 *
 * Keys and values are byte strings (NUL is an ordinary byte). Times are the
 * caller's monotonic clock in milliseconds (`now_ms`); the cache never reads a
 * clock itself. An entry whose expiry time has been reached is dropped when a
 * get, ttl or eviction meets it.
 */
typedef struct dl_memcache_s dl_memcache_t;

typedef struct {
    uint64_t hits;      /* gets that found a live entry */
    uint64_t misses;    /* gets that found nothing or an expired entry */
    uint64_t sets;      /* successful sets (inserts and replacements) */
    uint64_t evictions; /* live entries dropped to make room */
    uint64_t expired;   /* expired entries dropped (by get, ttl or eviction) */
    size_t items;       /* entries held now, expired ones not yet dropped included */
    size_t bytes;       /* bytes charged now (see dl_memcache_entry_size()) */
    size_t max_bytes;   /* the budget given to dl_memcache_new() */
} dl_memcache_stats_t;

/**
 * Creates a cache that charges at most `max_bytes` over all shards. `shards`
 * is rounded up to a power of two and clamped to 1..DL_MEMCACHE_MAX_SHARDS
 * (<= 0 means DL_MEMCACHE_DEFAULT_SHARDS); max_bytes is split evenly between
 * them, so one entry can use at most max_bytes / shards. Returns NULL when out
 * of memory.
 */
dl_memcache_t *dl_memcache_new(size_t max_bytes, int shards);

/** Frees the cache and every entry. NULL is a no-op. No other call may run concurrently. */
void dl_memcache_free(dl_memcache_t *c);

/**
 * Bytes charged for one entry: the key, the value and a fixed per-entry
 * overhead (the entry header with its hash and list links). The bucket arrays
 * are not charged.
 */
size_t dl_memcache_entry_size(size_t klen, size_t vlen);

/**
 * Looks a key up. On a hit, appends the value to `out` (when not NULL), stores
 * the entry's flags in `*flags` (when not NULL; a caller-defined marker such as
 * 1 = gzip), makes the entry the most recently used of its shard and returns 0.
 * Returns DL_ENOENT when the key is absent or expired (an expired entry is
 * removed), or DL_ENOMEM when `out` could not grow (the entry stays cached).
 * Borrows `key` and `out` for the call; the copy is made under the shard lock.
 */
int dl_memcache_get(dl_memcache_t *c, const char *key, size_t klen, uint64_t now_ms,
                    dl_buf_t *out, uint32_t *flags);

/**
 * Stores a copy of key and value with `flags`, replacing any entry for the key,
 * as the most recently used of its shard. `ttl_ms` 0 means no expiry, otherwise
 * the entry expires at now_ms + ttl_ms. Least recently used entries of the
 * shard are then dropped until the shard fits its budget, so the total charge
 * never exceeds max_bytes. Returns 0; DL_ETOOBIG when the entry alone exceeds a
 * shard's budget (nothing is stored, and an older value for the key stays);
 * DL_ENOMEM when the copy cannot be allocated. The copy is made before taking
 * the lock and dropped entries are freed after releasing it.
 */
int dl_memcache_set(dl_memcache_t *c, const char *key, size_t klen, const void *val, size_t vlen,
                    uint32_t flags, uint64_t ttl_ms, uint64_t now_ms);

/**
 * Removes a key. Returns 0 when an entry was removed (an expired one not yet
 * dropped counts, as no clock is given), DL_ENOENT when there was none.
 */
int dl_memcache_del(dl_memcache_t *c, const char *key, size_t klen);

/**
 * Returns the remaining time to live of a key in ms (at least 1), -1 when it
 * never expires, or DL_ENOENT when it is absent or expired (an expired entry
 * is removed). Does not change recency or the hit counters.
 */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int64_t dl_memcache_ttl(dl_memcache_t *c, const char *key, size_t klen, uint64_t now_ms);
#endif

/**
 * Removes every key matching the glob `pattern` (dl_glob_match(), case
 * sensitive) and returns how many were removed. As with Redis's SCAN MATCH,
 * the pattern "*" alone matches every key, the empty one included. Shards are
 * walked one at a time, each under its own lock only, so other threads keep
 * working meanwhile: a key set concurrently in a shard already walked survives.
 */
size_t dl_memcache_invalidate(dl_memcache_t *c, const char *pattern, size_t plen);

/** Removes every entry, one shard at a time; returns how many were removed. */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
size_t dl_memcache_flush(dl_memcache_t *c);
#endif

/**
 * Fills `out` with the counters summed over the shards. Each shard is read
 * under its lock, so the sums are exact when no other thread is writing and
 * close otherwise.
 */
void dl_memcache_stats(dl_memcache_t *c, dl_memcache_stats_t *out);

#endif /* DL_MEM_CACHE_H */
