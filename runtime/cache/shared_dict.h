/*
 * shared_dict.h - api.shared's store: one dictionary of typed values
 * (string, number, boolean) shared by every worker thread of the process,
 * the role of OpenResty's lua_shared_dict. The runtime creates it once at
 * start and frees it at exit, so it outlives every VM generation (reloads).
 *
 * It is split into shards picked by a seeded hash of the key; each shard has
 * its own mutex, chained hash table, LRU list and an equal part of the byte
 * cap. An entry is charged its header, key and value bytes
 * (dl_shdict_entry_size()); a write that would pass its shard's part first
 * drops expired entries, then the least recently used ones. Expired entries
 * are also dropped when a call meets them. Times are the caller's monotonic
 * clock in milliseconds (now_ms): the dictionary never reads a clock.
 *
 * Every function is thread-safe except dl_shdict_free(). None blocks longer
 * than one shard's mutex is held (no I/O, no allocation of the value's copy
 * under it except for a number created by incr).
 */
#ifndef DL_SHARED_DICT_H
#define DL_SHARED_DICT_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define DL_SHDICT_MAX_KEY 65535  /* keys are 1..65535 bytes */
#define DL_SHDICT_MAX_SHARDS 16  /* fewer for a small cap: each keeps 256 KiB or more */

typedef struct dl_shdict_s dl_shdict_t;

enum { DL_SHV_STRING = 1, DL_SHV_NUMBER, DL_SHV_BOOLEAN };

/** A value: type, then num (number), b (boolean) or str/len (string). */
typedef struct {
    int type;
    double num;
    int b;
    const char *str; /* set: the bytes to copy; get: NULL (the bytes went to out) */
    size_t len;
} dl_shdict_value_t;

enum { DL_SHDICT_ADD = 1 }; /* set: only when the key is absent (or expired) */

typedef struct {
    size_t bytes;       /* charged now */
    size_t entries;     /* held now, expired ones not yet dropped included */
    size_t max_bytes;   /* the cap given to dl_shdict_new() */
    uint64_t evictions; /* live entries dropped to make room, ever */
    unsigned shards;
} dl_shdict_stats_t;

/** A dictionary capped at max_bytes; NULL when out of memory. */
dl_shdict_t *dl_shdict_new(size_t max_bytes);
/** Frees it and every entry; no other call may run. NULL is a no-op. */
void dl_shdict_free(dl_shdict_t *d);

/** What one entry is charged: header + key + value bytes (SIZE_MAX on overflow). */
size_t dl_shdict_entry_size(size_t klen, size_t vlen);

/**
 * The live value of key in *v; a string's bytes are appended to out (which
 * the caller resets and frees). Refreshes its LRU position.
 * Returns 0, DL_ENOENT (absent or expired) or DL_ENOMEM (out could not grow).
 */
int dl_shdict_get(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms,
                  dl_shdict_value_t *v, dl_buf_t *out);

/**
 * Stores v under key, expiring ttl_ms from now (0: never). With
 * DL_SHDICT_ADD only when no live value is there.
 * Returns 0, DL_EDUPKEY (add: a live value is there), DL_ETOOBIG (the entry
 * is larger than a shard's part of the cap: it could never fit), DL_EINVAL
 * (a key outside 1..DL_SHDICT_MAX_KEY bytes, an unknown type) or DL_ENOMEM.
 */
int dl_shdict_set(dl_shdict_t *d, const char *key, size_t klen, const dl_shdict_value_t *v,
                  uint64_t ttl_ms, int flags, uint64_t now_ms);

/**
 * Adds delta to the number under key, atomically, and puts the sum in *out.
 * The entry keeps its expiry. When there is no live value: with init
 * (non-NULL) stores *init + delta expiring init_ttl_ms from now (0: never),
 * without it DL_ENOENT. Returns 0, DL_ENOENT, DL_EINVAL (the value is not a
 * number, or a bad key), DL_ETOOBIG or DL_ENOMEM.
 */
int dl_shdict_incr(dl_shdict_t *d, const char *key, size_t klen, double delta,
                   const double *init, uint64_t init_ttl_ms, uint64_t now_ms, double *out);

/** Removes key. Returns 0, or DL_ENOENT when no live value was there. */
int dl_shdict_delete(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms);

/**
 * The milliseconds key has left in *left_ms (0: it never expires).
 * Returns 0 or DL_ENOENT (absent or expired).
 */
int dl_shdict_ttl(dl_shdict_t *d, const char *key, size_t klen, uint64_t now_ms,
                  uint64_t *left_ms);

/** The figures of every shard, summed (each shard read under its lock). */
void dl_shdict_stats(dl_shdict_t *d, dl_shdict_stats_t *out);

#endif /* DL_SHARED_DICT_H */
