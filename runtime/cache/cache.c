/*
 * cache.c - the cache interface (dl_cache_ops_t) and its two backends.
 *
 * memory: the in-process store shared by every worker (mem_cache.c); its
 * operations finish at once, so a hit costs no yield at all.
 * redis: GET / SET PX / UNLINK through the worker's pool; invalidation walks
 * the keyspace with SCAN MATCH COUNT 1000 and UNLINKs each batch (never KEYS,
 * which blocks Redis). Operations finish from the pool's callbacks.
 */
#include "cache/cache.h"

#include <string.h>

#include "common/internal.h"

/* =============================================================== format */

int dl_cache_pack(int type, const char *meta, size_t mlen, const char *payload, size_t plen,
                  dl_compressor_t *z, size_t min_compress, dl_buf_t *out)
{
    size_t start = out->len;
    int gz = z && plen > min_compress;
    char hdr[DL_CV_HEADER] = {'d', 'l', (char)type, gz ? 'z' : 'i'};
    dl_buf_append(out, hdr, sizeof(hdr));
    dl_buf_append(out, meta, mlen);
    if (gz) {
        int rc = dl_compressor_run(z, DL_ENC_GZIP, payload, plen, out);
        if (rc != 0) {
            /* store it plain rather than not at all */
            out->len = start;
            hdr[3] = 'i';
            dl_buf_append(out, hdr, sizeof(hdr));
            dl_buf_append(out, meta, mlen);
            dl_buf_append(out, payload, plen);
        }
    } else {
        dl_buf_append(out, payload, plen);
    }
    return out->oom ? DL_ENOMEM : 0;
}

int dl_cache_unpack(const char *v, size_t len, int *type, int *gz, const char **payload,
                    size_t *plen)
{
    if (len < DL_CV_HEADER || v[0] != 'd' || v[1] != 'l')
        return DL_ECODEC;
    if (v[2] != DL_CV_STRING && v[2] != DL_CV_MSGPACK && v[2] != DL_CV_HTTP &&
        v[2] != DL_CV_HTTP_V1)
        return DL_ECODEC;
    if (v[3] != 'i' && v[3] != 'z')
        return DL_ECODEC;
    *type = v[2];
    *gz = v[3] == 'z';
    *payload = v + DL_CV_HEADER;
    *plen = len - DL_CV_HEADER;
    return 0;
}

/* ======================================================= memory backend */

/* Every memory operation has finished when it returns: no op to cancel, no
 * callback to call. */
static int mem_finished(void **op, dl_cache_cb cb, void *arg)
{
    DL_UNUSED(cb);
    DL_UNUSED(arg);
    if (op)
        *op = NULL;
    return 1;
}

static int mem_get(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                   dl_cache_cb cb, void *arg, void **op)
{
    uint32_t flags;
    res->status = dl_memcache_get(c->mem, key, klen, dl_clock_ms(), &res->val, &flags);
    if (res->status == 0)
        c->hits++;
    else
        c->misses++;
    return mem_finished(op, cb, arg);
}

static int mem_set(dl_cache_t *c, const char *key, size_t klen, const char *val, size_t vlen,
                   uint64_t ttl_ms, dl_cache_res_t *res, dl_cache_cb cb, void *arg, void **op)
{
    res->status = dl_memcache_set(c->mem, key, klen, val, vlen, 0, ttl_ms, dl_clock_ms());
    if (res->status == DL_ETOOBIG)
        snprintf(res->err, sizeof(res->err), "value of %zu bytes exceeds the cache's shard size",
                 vlen);
    else if (res->status < 0)
        snprintf(res->err, sizeof(res->err), "%s", dl_strerror(res->status));
    return mem_finished(op, cb, arg);
}

static int mem_del(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                   dl_cache_cb cb, void *arg, void **op)
{
    res->count = dl_memcache_del(c->mem, key, klen) == 0 ? 1 : 0;
    res->status = 0;
    return mem_finished(op, cb, arg);
}

static int mem_invalidate(dl_cache_t *c, const char *pattern, size_t plen, dl_cache_res_t *res,
                          dl_cache_cb cb, void *arg, void **op)
{
    res->count = (int64_t)dl_memcache_invalidate(c->mem, pattern, plen);
    res->status = 0;
    return mem_finished(op, cb, arg);
}

static void mem_cancel(dl_cache_t *c, void *op)
{
    DL_UNUSED(c);
    DL_UNUSED(op);
}

/* Both backends borrow their store (shared cache, worker pool): freeing the
 * facade frees the facade only. */
static void cache_free(dl_cache_t *c)
{
    dl_free(c);
}

static dl_cache_t *cache_new(const dl_cache_ops_t *ops, dl_memcache_t *mem,
                             dl_redis_pool_t *redis, uv_loop_t *loop)
{
    dl_cache_t *c = dl_calloc(1, sizeof(*c));
    if (c) {
        c->ops = ops;
        c->mem = mem;
        c->redis = redis;
        c->loop = loop;
    }
    return c;
}

static int mem_available(dl_cache_t *c)
{
    DL_UNUSED(c);
    return 1;
}

static const dl_cache_ops_t mem_ops = {
    "memory", mem_get, mem_set, mem_del, mem_invalidate, mem_cancel, cache_free, mem_available,
};

dl_cache_t *dl_cache_new_memory(dl_memcache_t *shared, uv_loop_t *loop)
{
    return cache_new(&mem_ops, shared, NULL, loop);
}

/* ======================================================== redis backend */

enum { OP_GET, OP_SET, OP_DEL, OP_SCAN, OP_UNLINK_BATCH };

typedef struct {
    dl_cache_t *c;
    int kind;
    dl_cache_cb cb;
    void *arg;
    dl_redis_cmd_t *cmd;
    dl_cache_res_t res;
    /* invalidate: the walk's state */
    char *pattern;
    size_t plen;
    char cursor[32];
    int64_t count;
} redis_op_t;

static void op_free(redis_op_t *o)
{
    dl_buf_free(&o->res.val);
    dl_free(o->pattern);
    dl_free(o);
}

static void op_finish(redis_op_t *o)
{
    /* a miss (DL_ENOENT) is counted in misses, not as an error */
    if (o->res.status < 0 && o->res.status != DL_ENOENT)
        o->c->errors++;
    if (o->cb)
        o->cb(&o->res, o->arg);
    op_free(o);
}

static void fail(dl_cache_res_t *res, int status, const char *what)
{
    res->status = status;
    snprintf(res->err, sizeof(res->err), "redis %s: %s", what, dl_strerror(status));
}

/* Translates a transport failure or an error reply; returns 1 if it was one. */
static int reply_failed(redis_op_t *o, int status, redisReply *r, const char *what)
{
    if (status != 0) {
        fail(&o->res, status, what);
        return 1;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        o->res.status = DL_EIO;
        snprintf(o->res.err, sizeof(o->res.err), "redis %s: %s", what,
                 r && r->str ? r->str : "no reply");
        return 1;
    }
    return 0;
}

static int scan_step(redis_op_t *o);
static int send1(redis_op_t *o, int argc, const char **argv, const size_t *lens);

/* After a batch: the walk is over at cursor "0" (res holds the count), else
 * the next SCAN goes out. Returns 1 while a command is pending. */
static int scan_next(redis_op_t *o)
{
    if (strcmp(o->cursor, "0") == 0) {
        o->res.status = 0;
        o->res.count = o->count;
        return 0;
    }
    return scan_step(o) == 0;
}

static void on_reply(int status, redisReply **replies, int n, void *arg)
{
    redis_op_t *o = arg;
    redisReply *r = n > 0 ? replies[0] : NULL;
    o->cmd = NULL;
    switch (o->kind) {
    case OP_GET:
        if (reply_failed(o, status, r, "GET"))
            break;
        if (r->type == REDIS_REPLY_NIL) {
            o->res.status = DL_ENOENT;
            o->c->misses++;
        } else if (r->type == REDIS_REPLY_STRING) {
            o->res.status = 0;
            o->c->hits++;
            dl_buf_append(&o->res.val, r->str, r->len);
        } else {
            o->res.status = DL_EIO;
            snprintf(o->res.err, sizeof(o->res.err), "redis GET: unexpected reply type %d",
                     r->type);
        }
        break;
    case OP_SET:
        if (reply_failed(o, status, r, "SET"))
            break;
        o->res.status = 0;
        break;
    case OP_DEL:
        if (reply_failed(o, status, r, "UNLINK"))
            break;
        o->res.status = 0;
        o->res.count = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        break;
    case OP_SCAN: {
        if (reply_failed(o, status, r, "SCAN"))
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            fail(&o->res, DL_EIO, "SCAN reply");
            break;
        }
        snprintf(o->cursor, sizeof(o->cursor), "%.*s", (int)r->element[0]->len,
                 r->element[0]->str);
        redisReply *keys = r->element[1];
        if (keys->elements > 0) {
            /* UNLINK this batch: frees memory off Redis's main thread */
            int argc = (int)keys->elements + 1;
            const char **argv = dl_malloc(sizeof(char *) * (size_t)argc);
            size_t *lens = dl_malloc(sizeof(size_t) * (size_t)argc);
            if (argv == NULL || lens == NULL) {
                dl_free(argv);
                dl_free(lens);
                fail(&o->res, DL_ENOMEM, "UNLINK");
                break;
            }
            argv[0] = "UNLINK";
            lens[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                lens[i + 1] = keys->element[i]->len;
            }
            o->kind = OP_UNLINK_BATCH;
            int rc = send1(o, argc, argv, lens);
            dl_free(argv);
            dl_free(lens);
            if (rc != 0) {
                fail(&o->res, rc, "UNLINK");
                break;
            }
            return;
        }
        if (scan_next(o))
            return;
        break;
    }
    case OP_UNLINK_BATCH:
        if (reply_failed(o, status, r, "UNLINK"))
            break;
        o->count += r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        if (scan_next(o))
            return;
        break;
    }
    op_finish(o);
}

static int send1(redis_op_t *o, int argc, const char **argv, const size_t *lens)
{
    const char *const *argvs[1] = {argv};
    const size_t *const lensv[1] = {lens};
    return dl_redis_pool_send(o->c->redis, 1, &argc, argvs, lensv, on_reply, o, &o->cmd);
}

/* Sends the next SCAN; 0 when sent, else res holds the failure. */
static int scan_step(redis_op_t *o)
{
    o->kind = OP_SCAN;
    const char *argv[6] = {"SCAN", o->cursor, "MATCH", o->pattern, "COUNT", "1000"};
    size_t lens[6] = {4, strlen(o->cursor), 5, o->plen, 5, 4};
    int rc = send1(o, 6, argv, lens);
    if (rc != 0)
        fail(&o->res, rc, "SCAN");
    return rc;
}

/* A new op, or NULL with the failure in res. */
static redis_op_t *op_new(dl_cache_t *c, int kind, dl_cache_cb cb, void *arg,
                          dl_cache_res_t *res, const char *what)
{
    redis_op_t *o = dl_calloc(1, sizeof(*o));
    if (o == NULL) {
        fail(res, DL_ENOMEM, what);
        return NULL;
    }
    o->c = c;
    o->kind = kind;
    o->cb = cb;
    o->arg = arg;
    dl_buf_init(&o->res.val);
    return o;
}

/* A started op is pending (0); a refused one copies its error to res (< 0). */
static int started(redis_op_t *o, int rc, dl_cache_res_t *res, void **op, const char *what)
{
    if (rc != 0) {
        fail(res, rc, what);
        o->c->errors++;
        op_free(o);
        if (op)
            *op = NULL;
        return rc;
    }
    if (op)
        *op = o;
    return 0;
}

/* GET or UNLINK of one key. */
static int redis_key_cmd(dl_cache_t *c, int kind, const char *cmd, const char *key, size_t klen,
                         dl_cache_res_t *res, dl_cache_cb cb, void *arg, void **op)
{
    redis_op_t *o = op_new(c, kind, cb, arg, res, cmd);
    if (o == NULL)
        return DL_ENOMEM;
    const char *argv[2] = {cmd, key};
    size_t lens[2] = {strlen(cmd), klen};
    return started(o, send1(o, 2, argv, lens), res, op, cmd);
}

static int redis_get(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                     dl_cache_cb cb, void *arg, void **op)
{
    return redis_key_cmd(c, OP_GET, "GET", key, klen, res, cb, arg, op);
}

static int redis_set(dl_cache_t *c, const char *key, size_t klen, const char *val, size_t vlen,
                     uint64_t ttl_ms, dl_cache_res_t *res, dl_cache_cb cb, void *arg, void **op)
{
    redis_op_t *o = op_new(c, OP_SET, cb, arg, res, "SET");
    if (o == NULL)
        return DL_ENOMEM;
    char ttl[24];
    int tl = snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
    const char *argv[5] = {"SET", key, val, "PX", ttl};
    size_t lens[5] = {3, klen, vlen, 2, (size_t)tl};
    return started(o, send1(o, ttl_ms ? 5 : 3, argv, lens), res, op, "SET");
}

static int redis_del(dl_cache_t *c, const char *key, size_t klen, dl_cache_res_t *res,
                     dl_cache_cb cb, void *arg, void **op)
{
    return redis_key_cmd(c, OP_DEL, "UNLINK", key, klen, res, cb, arg, op);
}

static int redis_invalidate(dl_cache_t *c, const char *pattern, size_t plen, dl_cache_res_t *res,
                            dl_cache_cb cb, void *arg, void **op)
{
    redis_op_t *o = op_new(c, OP_SCAN, cb, arg, res, "SCAN");
    if (o == NULL)
        return DL_ENOMEM;
    if ((o->pattern = dl_strndup(pattern, plen)) == NULL) {
        dl_free(o);
        fail(res, DL_ENOMEM, "SCAN");
        return DL_ENOMEM;
    }
    o->plen = plen;
    strcpy(o->cursor, "0");
    const char *argv[6] = {"SCAN", "0", "MATCH", o->pattern, "COUNT", "1000"};
    size_t lens[6] = {4, 1, 5, plen, 5, 4};
    return started(o, send1(o, 6, argv, lens), res, op, "SCAN");
}

static void redis_cancel(dl_cache_t *c, void *op)
{
    DL_UNUSED(c);
    redis_op_t *o = op;
    if (o == NULL)
        return;
    if (o->cmd)
        dl_redis_cmd_cancel(o->cmd);
    op_free(o);
}

static int redis_available(dl_cache_t *c)
{
    return dl_redis_pool_available(c->redis);
}

static const dl_cache_ops_t redis_ops = {
    "redis", redis_get, redis_set, redis_del, redis_invalidate, redis_cancel, cache_free,
    redis_available,
};

dl_cache_t *dl_cache_new_redis(dl_redis_pool_t *pool, uv_loop_t *loop)
{
    return cache_new(&redis_ops, NULL, pool, loop);
}

void dl_cache_free(dl_cache_t *c)
{
    if (c)
        c->ops->free(c);
}
