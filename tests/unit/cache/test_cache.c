/*
 * test_cache.c - runtime/cache/cache.c through cache.h: the stored-value
 * format (dl_cache_pack/unpack: the header, gzip above the threshold and
 * back, the bytes it refuses), then the same operations on both backends:
 * the in-process store (mem_cache.h), where everything finishes at once and
 * time-to-live runs on the runtime's clock (moved with dl_clock_skew_ms, no
 * sleeping), and a real redis-server (tests/unit/redis_server.c), where the
 * operations finish from the loop: get/set/del, PX expiry, binary keys, a
 * wrong-type reply, pattern invalidation over several SCAN batches, cancel,
 * and a server that is gone.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "backend/redis_pool.h"
#include "cache/cache.h"
#include "cache/mem_cache.h"
#include "common/buf.h"
#include "common/compress.h"
#include "common/internal.h"
#include "redis_server.h"
#include "unit.h"

/* ---- the stored-value format ---------------------------------------------------------------- */

DL_TEST(cache_pack_small_is_plain)
{
    dl_compressor_t *z = dl_compressor_new(1);
    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_cache_pack(DL_CV_STRING, NULL, 0, "hello", 5, z, 1024, &out), 0);
    EXPECT_MEM(out.data, out.len, "dlsihello", 9);
    int type, gz;
    const char *p;
    size_t n;
    EXPECT_EQ(dl_cache_unpack(out.data, out.len, &type, &gz, &p, &n), 0);
    EXPECT_EQ(type, DL_CV_STRING);
    EXPECT_EQ(gz, 0);
    EXPECT_MEM(p, n, "hello", 5);
    /* at the threshold exactly: still plain (over it compresses) */
    dl_buf_reset(&out);
    char at[64];
    memset(at, 'a', sizeof(at));
    EXPECT_EQ(dl_cache_pack(DL_CV_MSGPACK, NULL, 0, at, sizeof(at), z, sizeof(at), &out), 0);
    EXPECT_EQ(out.len, DL_CV_HEADER + sizeof(at));
    EXPECT_MEM(out.data, 4, "dlmi", 4);
    /* no compressor: never compressed */
    dl_buf_reset(&out);
    char big[5000];
    memset(big, 'b', sizeof(big));
    EXPECT_EQ(dl_cache_pack(DL_CV_STRING, NULL, 0, big, sizeof(big), NULL, 0, &out), 0);
    EXPECT_EQ(out.len, DL_CV_HEADER + sizeof(big));
    EXPECT_MEM(out.data, 4, "dlsi", 4);
    /* an empty payload */
    dl_buf_reset(&out);
    EXPECT_EQ(dl_cache_pack(DL_CV_STRING, NULL, 0, "", 0, z, 0, &out), 0);
    EXPECT_MEM(out.data, out.len, "dlsi", 4);
    EXPECT_EQ(dl_cache_unpack(out.data, out.len, &type, &gz, &p, &n), 0);
    EXPECT_EQ(n, 0);
    /* appended after what the buffer holds */
    dl_buf_reset(&out);
    dl_buf_append_str(&out, "prefix");
    EXPECT_EQ(dl_cache_pack(DL_CV_STRING, NULL, 0, "x", 1, z, 1024, &out), 0);
    EXPECT_MEM(out.data, out.len, "prefixdlsix", 11);
    dl_buf_free(&out);
    dl_compressor_free(z);
}

DL_TEST(cache_pack_large_is_gzip)
{
    dl_compressor_t *z = dl_compressor_new(6);
    size_t plen = 200000;
    char *payload = malloc(plen);
    REQUIRE(payload != NULL);
    for (size_t i = 0; i < plen; i++)
        payload[i] = "{\"id\":1,\"name\":\"devloop\"},"[i % 26];
    /* an 'H' entry: the meta (status, type, headers) stays plain, the body is gzip */
    const char meta[] = "200\x10" "application/json\x00\x00";
    size_t mlen = sizeof(meta) - 1;
    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_cache_pack(DL_CV_HTTP, meta, mlen, payload, plen, z, 1024, &out), 0);
    EXPECT_MEM(out.data, 4, "dlHz", 4);
    EXPECT_INT(out.len, <, plen / 10);
    int type, gz;
    const char *p;
    size_t n;
    EXPECT_EQ(dl_cache_unpack(out.data, out.len, &type, &gz, &p, &n), 0);
    EXPECT_EQ(type, DL_CV_HTTP);
    EXPECT_EQ(gz, 1);
    EXPECT_MEM(p, mlen, meta, mlen);
    dl_buf_t body = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(p + mlen, n - mlen, &body, plen), 0);
    EXPECT_EQ(body.len, plen);
    EXPECT(body.len == plen && memcmp(body.data, payload, plen) == 0);
    dl_buf_free(&body);
    dl_buf_free(&out);
    free(payload);
    dl_compressor_free(z);
}

DL_TEST(cache_unpack_refuses_foreign_bytes)
{
    int type = -1, gz = -1;
    const char *p = NULL;
    size_t n = 0;
    static const struct {
        const char *v;
        size_t len;
    } bad[] = {
        {"", 0},        {"d", 1},           {"dls", 3},       {"xlsi", 4},     {"dxsi", 4},
        {"dlxi", 4},    {"dlsx", 4},        {"dlsI", 4},      {"DLsi", 4},     {"dl\0i", 4},
        {"hello", 5},   {"\x1f\x8b\x08", 3}, /* bare gzip: never guessed */
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++)
        if (dl_cache_unpack(bad[i].v, bad[i].len, &type, &gz, &p, &n) != DL_ECODEC)
            DL_FAIL_AT("case %zu (\"%.*s\") was accepted", i, (int)bad[i].len, bad[i].v);
    EXPECT_EQ(type, -1);
    /* every known type; 'h' (the old HTTP entry) still reads */
    const char types[] = {DL_CV_STRING, DL_CV_MSGPACK, DL_CV_HTTP, DL_CV_HTTP_V1};
    for (size_t i = 0; i < sizeof(types); i++) {
        char v[5] = {'d', 'l', types[i], 'i', '!'};
        EXPECT_EQ(dl_cache_unpack(v, sizeof(v), &type, &gz, &p, &n), 0);
        EXPECT_EQ(type, types[i]);
        EXPECT_EQ(n, 1);
        EXPECT(p == v + 4);
    }
}

/* ---- both backends ---------------------------------------------------------------------------- */

typedef struct {
    int called;
    int status;
    int64_t count;
    dl_buf_t val;
    char err[160];
} result_t;

static void on_done(dl_cache_res_t *res, void *arg)
{
    result_t *r = arg;
    r->called++;
    r->status = res->status;
    r->count = res->count;
    dl_buf_append(&r->val, res->val.data, res->val.len);
    snprintf(r->err, sizeof(r->err), "%s", res->err);
}

static void on_tick(uv_timer_t *t)
{
    DL_UNUSED(t);
}

/* Runs the loop until r has its answer (at most 10 s). */
static void wait_for(uv_loop_t *loop, result_t *r)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + 10000;
    while (r->called == 0 && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

enum { GET, SET, DEL, INVALIDATE };

/* One operation, finished: at once (memory) or from the loop (Redis). The
 * outcome is in *r either way; returns what the operation returned. */
static int run(dl_cache_t *c, int what, const char *key, size_t klen, const char *val,
               size_t vlen, uint64_t ttl_ms, result_t *r)
{
    dl_cache_res_t res;
    memset(&res, 0, sizeof(res));
    dl_buf_init(&res.val);
    dl_buf_free(&r->val);
    memset(r, 0, sizeof(*r));
    void *op = (void *)1;
    int rc = what == GET   ? dl_cache_get(c, key, klen, &res, on_done, r, &op)
             : what == SET ? dl_cache_set(c, key, klen, val, vlen, ttl_ms, &res, on_done, r, &op)
             : what == DEL ? dl_cache_del(c, key, klen, &res, on_done, r, &op)
                           : dl_cache_invalidate(c, key, klen, &res, on_done, r, &op);
    if (rc == 1) {
        EXPECT(op == NULL);
        EXPECT_EQ(r->called, 0); /* never the callback when done at once */
        on_done(&res, r);
    } else if (rc == 0) {
        EXPECT(op != NULL);
        EXPECT_EQ(r->called, 0); /* never from inside the call */
        wait_for(c->loop, r);
        EXPECT_EQ(r->called, 1);
    } else {
        EXPECT(op == NULL);
        r->status = res.status;
        snprintf(r->err, sizeof(r->err), "%s", res.err);
    }
    dl_buf_free(&res.val);
    return rc;
}

static int get_s(dl_cache_t *c, const char *k, result_t *r)
{
    return run(c, GET, k, strlen(k), NULL, 0, 0, r);
}

static int set_s(dl_cache_t *c, const char *k, const char *v, uint64_t ttl, result_t *r)
{
    return run(c, SET, k, strlen(k), v, strlen(v), ttl, r);
}

/* What both backends must do alike. */
static void common_ops(dl_cache_t *c)
{
    result_t r = {0};
    EXPECT_INT(get_s(c, "k", &r), >=, 0);
    EXPECT_EQ(r.status, DL_ENOENT);
    EXPECT_INT(set_s(c, "k", "v1", 0, &r), >=, 0);
    EXPECT_EQ(r.status, 0);
    EXPECT_INT(get_s(c, "k", &r), >=, 0);
    EXPECT_EQ(r.status, 0);
    EXPECT_MEM(r.val.data, r.val.len, "v1", 2);
    /* replaced */
    set_s(c, "k", "second", 0, &r);
    get_s(c, "k", &r);
    EXPECT_MEM(r.val.data, r.val.len, "second", 6);
    /* binary key and value, an empty value */
    EXPECT_INT(run(c, SET, "b\0k", 3, "x\0y\xff", 4, 0, &r), >=, 0);
    EXPECT_EQ(r.status, 0);
    run(c, GET, "b\0k", 3, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_MEM(r.val.data, r.val.len, "x\0y\xff", 4);
    run(c, GET, "b", 1, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, DL_ENOENT);
    set_s(c, "empty", "", 0, &r);
    EXPECT_EQ(r.status, 0);
    get_s(c, "empty", &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.val.len, 0);
    /* del: one, then none */
    run(c, DEL, "k", 1, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 1);
    run(c, DEL, "k", 1, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 0);
    get_s(c, "k", &r);
    EXPECT_EQ(r.status, DL_ENOENT);

    /* pattern invalidation: 2500 keys, past one SCAN batch of 1000 */
    char key[64];
    for (int i = 0; i < 2500; i++) {
        snprintf(key, sizeof(key), "user:%d:profile", i);
        set_s(c, key, "p", 0, &r);
    }
    set_s(c, "users", "x", 0, &r);
    set_s(c, "order:1", "x", 0, &r);
    set_s(c, "user:[1]", "x", 0, &r);
    run(c, INVALIDATE, "user:1?:profile", 15, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 10);
    get_s(c, "user:12:profile", &r);
    EXPECT_EQ(r.status, DL_ENOENT);
    get_s(c, "user:1:profile", &r);
    EXPECT_EQ(r.status, 0);
    /* an escaped '[' matches the literal key only */
    run(c, INVALIDATE, "user:\\[1]", 9, NULL, 0, 0, &r);
    EXPECT_EQ(r.count, 1);
    run(c, INVALIDATE, "user:*", 6, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 2490);
    get_s(c, "users", &r);
    EXPECT_EQ(r.status, 0);
    get_s(c, "order:1", &r);
    EXPECT_EQ(r.status, 0);
    /* a pattern matching nothing, an empty one */
    run(c, INVALIDATE, "nothing:*", 9, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 0);
    run(c, INVALIDATE, "", 0, NULL, 0, 0, &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.count, 0);

    /* a large value, packed and compressed as the runtime stores it */
    dl_compressor_t *z = dl_compressor_new(1);
    size_t plen = 300000;
    char *payload = malloc(plen);
    for (size_t i = 0; i < plen; i++)
        payload[i] = (char)('a' + (i / 7) % 26);
    dl_buf_t packed = DL_BUF_INIT;
    EXPECT_EQ(dl_cache_pack(DL_CV_STRING, NULL, 0, payload, plen, z, 1024, &packed), 0);
    run(c, SET, "big", 3, packed.data, packed.len, 0, &r);
    EXPECT_EQ(r.status, 0);
    get_s(c, "big", &r);
    EXPECT_EQ(r.status, 0);
    int type, gz;
    const char *p;
    size_t n;
    EXPECT_EQ(dl_cache_unpack(r.val.data, r.val.len, &type, &gz, &p, &n), 0);
    EXPECT_EQ(gz, 1);
    dl_buf_t back = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(p, n, &back, plen), 0);
    EXPECT(back.len == plen && memcmp(back.data, payload, plen) == 0);
    dl_buf_free(&back);
    dl_buf_free(&packed);
    free(payload);
    dl_compressor_free(z);
    dl_buf_free(&r.val);
}

DL_TEST(cache_memory_backend)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_memcache_t *mem = dl_memcache_new(64u << 20, 4);
    dl_cache_t *c = dl_cache_new_memory(mem, &loop);
    REQUIRE(c != NULL);
    EXPECT_STR(c->ops->type, "memory");
    EXPECT_EQ(dl_cache_available(c), 1);
    common_ops(c);
    /* hits and misses are counted on the facade */
    EXPECT_INT(c->hits, >, 0);
    EXPECT_INT(c->misses, >, 0);
    uint64_t hits = c->hits, misses = c->misses;
    result_t r = {0};
    get_s(c, "users", &r);
    get_s(c, "absent", &r);
    EXPECT_EQ(c->hits, hits + 1);
    EXPECT_EQ(c->misses, misses + 1);
    /* a second worker's facade over the same store sees the same keys */
    dl_cache_t *c2 = dl_cache_new_memory(mem, &loop);
    get_s(c2, "users", &r);
    EXPECT_EQ(r.status, 0);
    dl_cache_free(c2);
    /* cancel has nothing to cancel; NULL is harmless */
    dl_cache_cancel(c, NULL);
    dl_buf_free(&r.val);
    dl_cache_free(c);
    dl_cache_free(NULL);
    dl_memcache_free(mem);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

/* Expiry on the runtime's clock: moved forward, no sleeping. */
DL_TEST(cache_memory_ttl)
{
    dl_memcache_t *mem = dl_memcache_new(1u << 20, 1);
    dl_cache_t *c = dl_cache_new_memory(mem, NULL);
    result_t r = {0};
    set_s(c, "short", "s", 1000, &r);
    EXPECT_EQ(r.status, 0);
    set_s(c, "long", "l", 3600000, &r);
    set_s(c, "forever", "f", 0, &r);
    get_s(c, "short", &r);
    EXPECT_EQ(r.status, 0);
    __atomic_store_n(&dl_clock_skew_ms, 5000, __ATOMIC_RELAXED);
    get_s(c, "short", &r);
    EXPECT_EQ(r.status, DL_ENOENT);
    get_s(c, "long", &r);
    EXPECT_EQ(r.status, 0);
    __atomic_store_n(&dl_clock_skew_ms, 3600000 + 5000, __ATOMIC_RELAXED);
    get_s(c, "long", &r);
    EXPECT_EQ(r.status, DL_ENOENT);
    get_s(c, "forever", &r);
    EXPECT_EQ(r.status, 0);
    __atomic_store_n(&dl_clock_skew_ms, 0, __ATOMIC_RELAXED);
    dl_buf_free(&r.val);
    dl_cache_free(c);
    dl_memcache_free(mem);
}

/* A value larger than a shard: refused with a message, the old value kept. */
DL_TEST(cache_memory_oversize)
{
    dl_memcache_t *mem = dl_memcache_new(64 * 1024, 4); /* 16 KiB a shard */
    dl_cache_t *c = dl_cache_new_memory(mem, NULL);
    result_t r = {0};
    set_s(c, "k", "old", 0, &r);
    size_t big = 100000;
    char *v = malloc(big);
    memset(v, 'v', big);
    EXPECT_EQ(run(c, SET, "k", 1, v, big, 0, &r), 1);
    EXPECT_EQ(r.status, DL_ETOOBIG);
    EXPECT_STR(r.err, "value of 100000 bytes exceeds the cache's shard size");
    get_s(c, "k", &r);
    EXPECT_MEM(r.val.data, r.val.len, "old", 3);
    free(v);
    dl_buf_free(&r.val);
    dl_cache_free(c);
    dl_memcache_free(mem);
}

/* ---- Redis ------------------------------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    dl_redis_pool_t *pool;
    dl_cache_t *c;
    pid_t pid;
} redis_env_t;

static int redis_up(redis_env_t *e)
{
    int port = 0;
    memset(e, 0, sizeof(*e));
    uv_loop_init(&e->loop);
    if (dl_test_redis_start(NULL, &port, &e->pid) < 0)
        return -1;
    dl_redis_config_t cfg;
    dl_redis_config_init(&cfg);
    cfg.port = port;
    cfg.pool_size = 2;
    e->pool = dl_redis_pool_new(&e->loop, &cfg);
    e->c = e->pool ? dl_cache_new_redis(e->pool, &e->loop) : NULL;
    return e->c ? 0 : -1;
}

static void redis_down(redis_env_t *e)
{
    dl_cache_free(e->c);
    dl_redis_pool_free(e->pool);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&e->loop), 0);
    dl_test_redis_stop(e->pid);
}

typedef struct {
    int called, status;
    long long integer;
} raw_t;

static void on_raw(int status, redisReply **replies, int n, void *arg)
{
    raw_t *r = arg;
    r->called++;
    r->status = status;
    if (status == 0 && n > 0 && replies[0]->type == REDIS_REPLY_INTEGER)
        r->integer = replies[0]->integer;
}

/* PTTL of key, straight through the pool. */
static long long pttl(redis_env_t *e, const char *key)
{
    raw_t r = {0};
    const char *argv[2] = {"PTTL", key};
    size_t lens[2] = {4, strlen(key)};
    int argc = 2;
    const char *const *argvs[1] = {argv};
    const size_t *const lensv[1] = {lens};
    if (dl_redis_pool_send(e->pool, 1, &argc, argvs, lensv, on_raw, &r, NULL) != 0)
        return -100;
    uv_update_time(&e->loop);
    uint64_t end = uv_now(&e->loop) + 10000;
    while (r.called == 0 && uv_now(&e->loop) < end)
        uv_run(&e->loop, UV_RUN_ONCE);
    return r.status == 0 ? r.integer : -100;
}

DL_TEST(cache_redis_backend)
{
    redis_env_t e;
    if (redis_up(&e) != 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    EXPECT_STR(e.c->ops->type, "redis");
    common_ops(e.c);
    EXPECT_INT(e.c->hits, >, 0);
    EXPECT_INT(e.c->misses, >, 0);
    EXPECT_EQ(e.c->errors, 0);
    EXPECT_EQ(dl_cache_available(e.c), 1);

    /* ttl: SET PX, seen by PTTL; 0 is no expiry */
    result_t r = {0};
    set_s(e.c, "t", "v", 60000, &r);
    EXPECT_EQ(r.status, 0);
    long long left = pttl(&e, "t");
    EXPECT_INT(left, >, 0);
    EXPECT_INT(left, <=, 60000);
    set_s(e.c, "t", "v", 0, &r);
    EXPECT_EQ(pttl(&e, "t"), -1);

    /* a key of another type: an error answer, counted */
    raw_t raw = {0};
    const char *argv[3] = {"LPUSH", "list", "x"};
    size_t lens[3] = {5, 4, 1};
    int argc = 3;
    const char *const *argvs[1] = {argv};
    const size_t *const lensv[1] = {lens};
    EXPECT_EQ(dl_redis_pool_send(e.pool, 1, &argc, argvs, lensv, on_raw, &raw, NULL), 0);
    while (raw.called == 0)
        uv_run(&e.loop, UV_RUN_ONCE);
    EXPECT_EQ(raw.status, 0);
    get_s(e.c, "list", &r);
    EXPECT_EQ(r.status, DL_EIO);
    EXPECT(strncmp(r.err, "redis GET: WRONGTYPE", 20) == 0);
    EXPECT_EQ(e.c->errors, 1);

    /* a cancelled get: its callback never runs, and the pool still works */
    dl_cache_res_t res;
    memset(&res, 0, sizeof(res));
    dl_buf_init(&res.val);
    result_t cancelled = {0};
    void *op = NULL;
    EXPECT_EQ(dl_cache_get(e.c, "t", 1, &res, on_done, &cancelled, &op), 0);
    EXPECT(op != NULL);
    dl_cache_cancel(e.c, op);
    get_s(e.c, "t", &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(cancelled.called, 0);
    /* so is an invalidation in the middle of its walk */
    op = NULL;
    EXPECT_EQ(dl_cache_invalidate(e.c, "*", 1, &res, on_done, &cancelled, &op), 0);
    dl_cache_cancel(e.c, op);
    get_s(e.c, "t", &r);
    EXPECT_EQ(cancelled.called, 0);
    /* fire-and-forget set */
    EXPECT_EQ(dl_cache_set(e.c, "ff", 2, "1", 1, 0, &res, NULL, NULL, NULL), 0);
    get_s(e.c, "ff", &r);
    EXPECT_EQ(r.status, 0);
    EXPECT_MEM(r.val.data, r.val.len, "1", 1);
    dl_buf_free(&res.val);
    dl_buf_free(&r.val);
    redis_down(&e);
}

/* Redis gone: operations fail (at once or from the loop) with a message,
 * and the facade reports it. */
DL_TEST(cache_redis_down)
{
    redis_env_t e;
    if (redis_up(&e) != 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    result_t r = {0};
    set_s(e.c, "k", "v", 0, &r);
    EXPECT_EQ(r.status, 0);
    dl_test_redis_stop(e.pid);
    e.pid = 0;
    int failures = 0;
    /* the pool notices the loss on the next command, then refuses at once */
    for (int i = 0; i < 5; i++) {
        get_s(e.c, "k", &r);
        if (r.status < 0 && r.status != DL_ENOENT) {
            failures++;
            EXPECT(strncmp(r.err, "redis GET", 9) == 0);
        }
    }
    EXPECT_EQ(failures, 5);
    run(e.c, INVALIDATE, "*", 1, NULL, 0, 0, &r);
    EXPECT_INT(r.status, <, 0);
    EXPECT(strncmp(r.err, "redis ", 6) == 0);
    EXPECT_INT(e.c->errors, >=, 6);
    dl_buf_free(&r.val);
    redis_down(&e);
}
