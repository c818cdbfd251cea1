/*
 * cache.h - the cache behind api.cache and cached routes: one interface over
 * two backends (dl_cache_ops_t): the in-process cache shared by all workers
 * (mem_cache.c) when no Redis is configured, and Redis through the worker's
 * connection pool (redis_pool.c). Callers never ask which is live.
 *
 * Values carry an explicit format header, so a reader never guesses by trying
 * to decompress: "dl" + type + encoding, then the payload.
 *   type: 's' Lua string, 'm' MessagePack of a Lua value, 'H' HTTP response
 *         ('h': the HTTP response of earlier versions, without headers)
 *   encoding: 'i' identity, 'z' gzip (payloads over the threshold)
 * An 'H' payload is "SSS" (status) + 1 byte content-type length + content
 * type + 2 bytes (big-endian) header-block length + header block + body. The
 * block is the handler's other headers, one after the other: 1 byte name
 * length, 2 bytes (big-endian) value length, name, value (a header with two
 * values is there twice). Only the body is compressed, so a hit is sent as
 * stored. An 'h' entry is still readable, but cached routes take it for a
 * miss: it lost the headers its answer had.
 */
#ifndef DL_CACHE_H
#define DL_CACHE_H

#include <stdint.h>

#include "common/buf.h"
#include "common/compress.h"
#include "cache/mem_cache.h"
#include "backend/redis_pool.h"

enum { DL_CV_STRING = 's', DL_CV_MSGPACK = 'm', DL_CV_HTTP_V1 = 'h', DL_CV_HTTP = 'H' };
#define DL_CV_HEADER 4
/* what an 'H' entry's header block may hold: more, and the answer is not stored */
#define DL_CV_MAX_HEADERS 64
#define DL_CV_MAX_HEADER_BYTES 16384

typedef struct dl_cache_s dl_cache_t;

/** The outcome of one operation. */
typedef struct {
    int status;     /* 0 ok (get: a hit), DL_ENOENT (get: a miss), < 0 an error */
    dl_buf_t val;   /* get: the stored bytes */
    int64_t count;  /* del, invalidate: keys removed */
    char err[160];  /* with an error: what happened */
} dl_cache_res_t;

/** Completion of a pending operation; res is valid during the call only. */
typedef void (*dl_cache_cb)(dl_cache_res_t *res, void *arg);

/** Backends implement this table. See dl_cache_get() for the return rule. */
typedef struct {
    const char *type; /* "memory", "redis" */
    int (*get)(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res, dl_cache_cb cb,
               void *arg, void **op);
    int (*set)(dl_cache_t *c, const char *key, size_t klen, const char *val, size_t vlen,
               uint64_t ttl_ms, dl_cache_res_t *res, dl_cache_cb cb, void *arg, void **op);
    int (*del)(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res, dl_cache_cb cb,
               void *arg, void **op);
    int (*invalidate)(dl_cache_t *c, const char *pattern, size_t plen, dl_cache_res_t *res,
                      dl_cache_cb cb, void *arg, void **op);
    void (*cancel)(dl_cache_t *c, void *op);
    void (*free)(dl_cache_t *c);
    /* 1 when an operation may start now (Redis: not down, breaker closed) */
    int (*available)(dl_cache_t *c);
} dl_cache_ops_t;

struct dl_cache_s {
    const dl_cache_ops_t *ops;
    dl_memcache_t *mem;       /* memory backend: shared, not owned */
    dl_redis_pool_t *redis;   /* redis backend: the worker's pool, not owned */
    uv_loop_t *loop;
    uint64_t hits, misses, errors;
};

/** A worker's cache over the shared in-process store. */
dl_cache_t *dl_cache_new_memory(dl_memcache_t *shared, uv_loop_t *loop);
/** A worker's cache over its Redis pool. */
dl_cache_t *dl_cache_new_redis(dl_redis_pool_t *pool, uv_loop_t *loop);
void dl_cache_free(dl_cache_t *c);

/**
 * The operations return 1 when done at once (res filled; cb not called),
 * 0 when pending (cb called once later, never from inside this call; *op
 * can cancel it), or < 0 when they could not start (res->err says why; cb
 * not called). res->val must be initialised (DL_BUF_INIT) by the caller.
 * set with cb NULL is fire-and-forget. ttl_ms 0: no expiry.
 */
static inline int dl_cache_get(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                               dl_cache_cb cb, void *arg, void **op)
{
    return c->ops->get(c, key, klen, res, cb, arg, op);
}
static inline int dl_cache_set(dl_cache_t *c, const char *key, size_t klen, const char *val,
                               size_t vlen, uint64_t ttl_ms, dl_cache_res_t *res,
                               dl_cache_cb cb, void *arg, void **op)
{
    return c->ops->set(c, key, klen, val, vlen, ttl_ms, res, cb, arg, op);
}
static inline int dl_cache_del(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                               dl_cache_cb cb, void *arg, void **op)
{
    return c->ops->del(c, key, klen, res, cb, arg, op);
}
/** Deletes every key matching a Redis glob (SCAN MATCH COUNT 1000 + UNLINK on Redis). */
static inline int dl_cache_invalidate(dl_cache_t *c, const char *pattern, size_t plen,
                                      dl_cache_res_t *res, dl_cache_cb cb, void *arg, void **op)
{
    return c->ops->invalidate(c, pattern, plen, res, cb, arg, op);
}
/** 1 when an operation may start now; 0 when it would fail at once (Redis
 * down or its breaker open), so work done only for it can be skipped. */
static inline int dl_cache_available(dl_cache_t *c)
{
    return c->ops->available(c);
}
/** Detaches a pending operation: its callback will not run. */
static inline void dl_cache_cancel(dl_cache_t *c, void *op)
{
    c->ops->cancel(c, op);
}

/**
 * Appends a stored value: the header, meta (the 'h' prefix, never
 * compressed), then payload, gzip-compressed by z when plen > min_compress.
 */
int dl_cache_pack(int type, const char *meta, size_t mlen, const char *payload, size_t plen,
                  dl_compressor_t *z, size_t min_compress, dl_buf_t *out);
/**
 * Parses a stored value's header: *type, *gz and the payload after the header.
 * Returns 0 or DL_ECODEC for bytes that are not a devloop value.
 */
int dl_cache_unpack(const char *v, size_t len, int *type, int *gz, const char **payload,
                    size_t *plen);

#endif
