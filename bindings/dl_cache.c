/*
 * dl_cache.c - the devloop.cache_core Lua module: get/set/del/invalidate on
 * the worker's cache (runtime/cache/cache.c) and the two primitives cached routes
 * are built on (_http_get, _http_store). Values are packed with an explicit
 * format header; a Lua string is stored as is, any other value as
 * MessagePack; payloads over the threshold are gzip-compressed. A call
 * against Redis parks the calling task; the memory backend answers at once.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "cache/cache.h"
#include "common/codec_msgpack.h"
#include "core/http.h"
#include "common/internal.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "common/metrics.h"
#include "bindings/dl_bindings.h"

enum { K_GET, K_SET, K_DEL, K_INVALIDATE, K_HTTP_GET };

typedef struct {
    dl_task_t *task;
    dl_cache_t *cache;
    dl_compressor_t *z;
    void *op;
    int kind;
} pending_t;

/* nil, message, code of a failed operation: EUNAVAIL when the backend is
 * down or its breaker open (the pool logged that once), else its error. */
static int fail_res(lua_State *L, const dl_cache_res_t *res)
{
    return dl_lua_fail_status(L, res->status, res->err);
}

/* A backend that is away (down, breaker open, offline queue full): the
 * operation was not tried, so it is neither a cache error nor worth a log
 * line per request. */
static int backend_away(int status)
{
    return status == DL_EUNAVAIL || status == DL_EOFFLINE || status == DL_EREDIS;
}

/* An 'H' entry's parts (cache.h), pointing into the stored bytes. */
typedef struct {
    int status;
    const char *ct, *hdrs, *body;
    size_t ctlen, hlen, blen;
} http_entry_t;

static unsigned be16(const char *p)
{
    return (unsigned)(unsigned char)p[0] << 8 | (unsigned char)p[1];
}

static int parse_http_entry(const char *p, size_t plen, http_entry_t *e)
{
    if (plen < 4)
        return -1;
    for (int i = 0; i < 3; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    e->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    e->ctlen = (unsigned char)p[3];
    e->ct = p + 4;
    size_t off = 4 + e->ctlen;
    if (plen < off + 2)
        return -1;
    e->hlen = be16(p + off);
    e->hdrs = p + off + 2;
    off += 2 + e->hlen;
    if (plen < off)
        return -1;
    e->body = p + off;
    e->blen = plen - off;
    /* every header inside the block, every name non-empty */
    for (size_t i = 0; i < e->hlen;) {
        if (e->hlen - i < 3)
            return -1;
        size_t nl = (unsigned char)e->hdrs[i], vl = be16(e->hdrs + i + 1);
        if (nl == 0 || e->hlen - i - 3 < nl + vl)
            return -1;
        i += 3 + nl + vl;
    }
    return 0;
}

/* Pushes a header block parse_http_entry() checked as a table (name ->
 * value, or a list of values when a name is there more than once), or nil
 * when it is empty. */
static void push_headers(lua_State *L, const char *b, size_t n)
{
    if (n == 0) {
        lua_pushnil(L);
        return;
    }
    lua_createtable(L, 0, 4);
    size_t i = 0;
    while (i < n) {
        size_t nl = (unsigned char)b[i], vl = be16(b + i + 1);
        const char *name = b + i + 3, *val = name + nl;
        lua_pushlstring(L, name, nl);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, val, vl);
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            lua_createtable(L, 2, 0);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 1);
            lua_pushlstring(L, val, vl);
            lua_rawseti(L, -2, 2);
        } else {
            lua_pushlstring(L, val, vl);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        }
        lua_rawset(L, -3);
        i += 3 + nl + vl;
    }
}

/* Pushes a GET's value: the Lua string or the MessagePack-decoded value. */
static int push_value(lua_State *L, dl_compressor_t *z, dl_cache_res_t *res, int http)
{
    if (res->status == DL_ENOENT) {
        lua_pushnil(L);
        return 1;
    }
    if (res->status < 0)
        return fail_res(L, res);
    int type, gz;
    const char *p;
    size_t plen;
    if (dl_cache_unpack(res->val.data, res->val.len, &type, &gz, &p, &plen) != 0)
        return dl_lua_fail(L, "cache value is not in devloop's format", NULL);
    if (http) {
        /* status, body (gzip when gz), content type, the other headers */
        http_entry_t e;
        if (type != DL_CV_HTTP || parse_http_entry(p, plen, &e) != 0)
            return dl_lua_fail(L, "cache value is not an HTTP entry", NULL);
        lua_pushinteger(L, e.status);
        lua_pushlstring(L, e.body, e.blen);
        lua_pushlstring(L, e.ct, e.ctlen);
        lua_pushboolean(L, gz);
        push_headers(L, e.hdrs, e.hlen);
        return 5;
    }
    if (type == DL_CV_HTTP || type == DL_CV_HTTP_V1) {
        /* api.cache.get() of a cached route's key: its body (only the body
         * is compressed) */
        http_entry_t e;
        if (type == DL_CV_HTTP ? parse_http_entry(p, plen, &e) != 0
                               : plen < 4 || plen < 4u + (unsigned char)p[3])
            return dl_lua_fail(L, "cache value is not an HTTP entry", NULL);
        size_t skip = type == DL_CV_HTTP ? (size_t)(e.body - p) : 4u + (unsigned char)p[3];
        p += skip;
        plen -= skip;
        type = DL_CV_STRING;
    }
    dl_buf_t plain = DL_BUF_INIT;
    if (gz) {
        if (dl_compressor_gunzip(z, p, plen, &plain, (size_t)1 << 30) != 0) {
            dl_buf_free(&plain);
            return dl_lua_fail(L, "cache value: damaged gzip payload", NULL);
        }
        p = plain.data ? plain.data : "";
        plen = plain.len;
    }
    int n = 1;
    if (type == DL_CV_MSGPACK) {
        char err[160];
        if (dl_msgpack_decode(L, p, plen, err, sizeof(err)) != 0)
            n = dl_lua_fail(L, err, NULL);
    } else {
        lua_pushlstring(L, p, plen);
    }
    dl_buf_free(&plain);
    return n;
}

/* cache_lookup_total{status}: hit, miss, error, or bypass (the backend is
 * away, so the lookup was not tried). */
static void count_lookup(lua_State *L, dl_cache_res_t *res)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->metrics == NULL)
        return;
    const char *st[1] = {res->status == 0                ? "hit"
                         : res->status == DL_ENOENT      ? "miss"
                         : backend_away(res->status)     ? "bypass"
                                                         : "error"};
    dl_metric_add(h->metrics, h->worker_id, h->m.cache_lookup, st, 1);
}

static int push_result(lua_State *L, int kind, dl_compressor_t *z, dl_cache_res_t *res)
{
    /* an HTTP entry of earlier versions lost its answer's headers: a miss,
     * and the handler's answer replaces it */
    if (kind == K_HTTP_GET && res->status == 0 && res->val.len > 2 &&
        res->val.data[2] == DL_CV_HTTP_V1)
        res->status = DL_ENOENT;
    if (kind == K_GET || kind == K_HTTP_GET)
        count_lookup(L, res);
    switch (kind) {
    case K_GET:
        return push_value(L, z, res, 0);
    case K_HTTP_GET:
        return push_value(L, z, res, 1);
    case K_SET:
        if (res->status < 0)
            return fail_res(L, res);
        lua_pushboolean(L, 1);
        return 1;
    default:
        if (res->status < 0)
            return fail_res(L, res);
        lua_pushnumber(L, (lua_Number)res->count);
        return 1;
    }
}

static void on_done(dl_cache_res_t *res, void *arg)
{
    pending_t *p = arg;
    dl_task_t *t = p->task;
    int n = push_result(t->co, p->kind, p->z, res);
    dl_free(p);
    dl_task_resume(t, n);
}

static void cancel_pending(void *data)
{
    pending_t *p = data;
    dl_cache_cancel(p->cache, p->op);
    dl_free(p);
}

/* The pending state of an operation for the task running L (none outside a
 * handler), with res ready for the call; NULL when out of memory. */
static pending_t *pending_new(lua_State *L, const dl_lua_host_t *h, int kind,
                              dl_cache_res_t *res)
{
    pending_t *p = dl_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->task = dl_task_current(L);
    p->cache = h->cache;
    p->z = h->compressor;
    p->kind = kind;
    memset(res, 0, sizeof(*res));
    dl_buf_init(&res->val);
    return p;
}

/* After the cache call: answers at once when the backend did (rc != 0),
 * else parks the task until on_done. */
static int finish_op(lua_State *L, pending_t *p, int rc, dl_cache_res_t *res)
{
    if (rc != 0) {
        int kind = p->kind;
        dl_compressor_t *z = p->z;
        dl_free(p);
        int n = push_result(L, kind, z, res);
        dl_buf_free(&res->val);
        return n;
    }
    dl_task_park(p->task, cancel_pending, p);
    return lua_yield(L, 0);
}

static const dl_lua_host_t *check_host(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->cache == NULL)
        luaL_error(L, "the cache is only available while serving");
    return h;
}

/* The longest TTL in seconds (ten years): cache_core.MAX_TTL, which api.cache
 * and route options check against. */
#define MAX_TTL_S (10 * 365 * 86400)

static uint64_t check_ttl_ms(lua_State *L, int idx)
{
    lua_Number s = luaL_optnumber(L, idx, 0);
    if (!(s >= 0) || s > MAX_TTL_S)
        luaL_argerror(L, idx, "ttl in seconds (>= 0) expected");
    return (uint64_t)(s * 1000.0);
}

/* get, del, invalidate and _http_get: a key (or a pattern), one cache call,
 * an answer that only a task can wait for. */
static int key_op(lua_State *L, int kind)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const dl_lua_host_t *h = check_host(L);
    dl_cache_res_t res;
    pending_t *p = pending_new(L, h, kind, &res);
    if (p == NULL)
        return luaL_error(L, "out of memory");
    int rc;
    if (kind == K_DEL)
        rc = dl_cache_del(h->cache, s, len, &res, on_done, p, &p->op);
    else if (kind == K_INVALIDATE)
        rc = dl_cache_invalidate(h->cache, s, len, &res, on_done, p, &p->op);
    else
        rc = dl_cache_get(h->cache, s, len, &res, on_done, p, &p->op);
    if (rc == 0 && p->task == NULL) {
        dl_cache_cancel(h->cache, p->op);
        dl_free(p);
        return dl_lua_fail(L, "cache calls on Redis must run inside a handler", NULL);
    }
    return finish_op(L, p, rc, &res);
}

/* cache_core.get(key) -> value | nil | nil, err */
static int l_cache_get(lua_State *L)
{
    return key_op(L, K_GET);
}

/* cache_core.set(key, value, ttl_seconds) -> true | nil, err */
static int l_cache_set(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    luaL_checkany(L, 2);
    uint64_t ttl = check_ttl_ms(L, 3);
    const dl_lua_host_t *h = check_host(L);
    dl_buf_t packed = DL_BUF_INIT;
    int rc;
    if (lua_type(L, 2) == LUA_TSTRING) {
        size_t vlen;
        const char *v = lua_tolstring(L, 2, &vlen);
        rc = dl_cache_pack(DL_CV_STRING, NULL, 0, v, vlen, h->compressor, h->cfg->compress_min,
                           &packed);
    } else {
        dl_buf_t mp = DL_BUF_INIT;
        char err[160];
        if (dl_msgpack_encode(L, 2, &mp, err, sizeof(err)) != 0) {
            dl_buf_free(&mp);
            return dl_lua_fail(L, err, NULL);
        }
        rc = dl_cache_pack(DL_CV_MSGPACK, NULL, 0, mp.data ? mp.data : "", mp.len, h->compressor,
                           h->cfg->compress_min, &packed);
        dl_buf_free(&mp);
    }
    if (rc != 0) {
        dl_buf_free(&packed);
        return dl_lua_fail(L, "out of memory", NULL);
    }
    /* the backend copies the bytes; free ours before parking */
    dl_cache_res_t res;
    pending_t *p = pending_new(L, h, K_SET, &res);
    if (p == NULL) {
        dl_buf_free(&packed);
        return luaL_error(L, "out of memory");
    }
    rc = dl_cache_set(h->cache, key, klen, packed.data, packed.len, ttl, &res,
                      p->task ? on_done : NULL, p, &p->op);
    dl_buf_free(&packed);
    if (rc == 0 && p->task == NULL) {
        /* fire-and-forget outside a handler */
        dl_free(p);
        lua_pushboolean(L, 1);
        return 1;
    }
    return finish_op(L, p, rc, &res);
}

/* cache_core.del(key) -> count | nil, err */
static int l_cache_del(lua_State *L)
{
    return key_op(L, K_DEL);
}

/* cache_core.invalidate(pattern) -> count | nil, err */
static int l_cache_invalidate(lua_State *L)
{
    return key_op(L, K_INVALIDATE);
}

/* cache_core._http_get(key) -> status, body, content_type, gzipped | nil [, err] */
static int l_cache_http_get(lua_State *L)
{
    return key_op(L, K_HTTP_GET);
}

static void on_store_done(dl_cache_res_t *res, void *arg)
{
    DL_UNUSED(arg);
    if (res->status < 0)
        dl_log(backend_away(res->status) ? DL_LOG_DEBUG : DL_LOG_WARN, "cache store failed: %s",
               res->err);
}

/* Headers no stored answer carries: the runtime's own (a handler may not
 * set them: lua_dispatch.c refuses them), and Set-Cookie, one caller's session. */
static int unstorable_header(const char *s, size_t n)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "connection",
                                        "date", "x-request-id", "set-cookie"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(names); i++)
        if (dl_strncasecmp_eq(s, n, names[i], strlen(names[i])))
            return 1;
    return 0;
}

/* Appends one header to an 'H' header block. */
static const char *add_header(dl_buf_t *b, const char *name, size_t nl, lua_State *L, int vidx,
                              int *count)
{
    int t = lua_type(L, vidx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        return "a header value that is not a string or a number";
    lua_pushvalue(L, vidx); /* tolstring converts numbers in place: a copy */
    size_t vl;
    const char *v = lua_tolstring(L, -1, &vl);
    const char *why = NULL;
    if (!dl_http_value_ok(v, vl))
        why = "a header value with a control character";
    else if (++*count > DL_CV_MAX_HEADERS || b->len + 3 + nl + vl > DL_CV_MAX_HEADER_BYTES)
        why = "more headers than an entry holds (64, 16 KiB)";
    if (why == NULL) {
        char len[3] = {(char)nl, (char)(vl >> 8), (char)(vl & 0xff)};
        dl_buf_append(b, len, 3);
        dl_buf_append(b, name, nl);
        dl_buf_append(b, v, vl);
    }
    lua_pop(L, 1);
    return why;
}

/* The handler's headers table at idx (name -> value or list of values) as
 * an 'H' header block, Content-Type left out (the entry has it); NULL, or
 * why they cannot be stored. *encoded: the handler set its own
 * Content-Encoding (its body is already encoded). */
static const char *header_block(lua_State *L, int idx, dl_buf_t *b, int *encoded)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    if (!lua_istable(L, idx))
        return "headers that are not a table";
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t nl;
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
        const char *why = NULL;
        if (name != NULL && dl_strncasecmp_eq(name, nl, "content-encoding", 16))
            *encoded = 1;
        if (name == NULL || nl > 255 || !dl_http_token_ok(name, nl))
            why = "a header name that is not a token";
        else if (unstorable_header(name, nl))
            why = "a header the cache does not keep";
        else if (dl_strncasecmp_eq(name, nl, "content-type", 12))
            ;
        else if (lua_istable(L, -1)) {
            int n = (int)lua_objlen(L, -1);
            for (int i = 1; i <= n && why == NULL; i++) {
                lua_rawgeti(L, -1, i);
                why = add_header(b, name, nl, L, lua_gettop(L), &count);
                lua_pop(L, 1);
            }
        } else {
            why = add_header(b, name, nl, L, lua_gettop(L), &count);
        }
        if (why) {
            lua_pop(L, 2);
            return why;
        }
        lua_pop(L, 1);
    }
    return b->oom ? "out of memory" : NULL;
}

/*
 * cache_core._http_store(key, ttl_seconds, status, body, content_type, headers)
 *   -> stored_body, gzipped | nil, why
 * Packs the response (body compressed once when over the threshold; headers
 * as the 'H' header block), stores it without waiting, and returns the body
 * as stored so that this response is sent exactly like later hits. Headers
 * the entry cannot hold (Set-Cookie, too many, invalid) store nothing.
 */
static int l_cache_http_store(lua_State *L)
{
    size_t klen, blen, ctlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    uint64_t ttl = check_ttl_ms(L, 2);
    int status = (int)luaL_checkinteger(L, 3);
    const char *body = luaL_checklstring(L, 4, &blen);
    const char *ct = luaL_optlstring(L, 5, "application/json", &ctlen);
    const dl_lua_host_t *h = check_host(L);
    if (status < 100 || status > 599)
        return luaL_argerror(L, 3, "out of range");
    if (ctlen > 255) /* the entry's length byte: the answer goes out unstored */
        return dl_lua_fail(L, "a Content-Type over 255 bytes", NULL);
    dl_buf_t meta = DL_BUF_INIT;
    char head[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), (char)ctlen};
    dl_buf_append(&meta, head, 4);
    dl_buf_append(&meta, ct, ctlen);
    dl_buf_append(&meta, "\0\0", 2); /* the block's length, set below */
    size_t at = meta.len;
    int encoded = 0;
    const char *why = header_block(L, 6, &meta, &encoded);
    if (why) {
        dl_buf_free(&meta);
        return dl_lua_fail(L, why, NULL);
    }
    if (meta.oom) {
        dl_buf_free(&meta);
        return luaL_error(L, "out of memory");
    }
    meta.data[at - 2] = (char)((meta.len - at) >> 8);
    meta.data[at - 1] = (char)((meta.len - at) & 0xff);
    if (!dl_cache_available(h->cache)) {
        /* the store would fail at once: no packing, no compression */
        dl_buf_free(&meta);
        lua_pushvalue(L, 4);
        lua_pushboolean(L, 0);
        return 2;
    }
    dl_buf_t packed = DL_BUF_INIT;
    /* a body with its own Content-Encoding is sent as it is: gzipping it
     * would only be undone on every hit (core/response.c) */
    int compressible = !encoded && dl_compress_type_ok(ct, ctlen);
    size_t mlen = meta.len;
    int rc = dl_cache_pack(DL_CV_HTTP, meta.data, mlen, body, blen,
                           compressible ? h->compressor : NULL, h->cfg->compress_min, &packed);
    dl_buf_free(&meta);
    if (rc != 0) {
        dl_buf_free(&packed);
        return luaL_error(L, "out of memory");
    }
    dl_cache_res_t res;
    memset(&res, 0, sizeof(res));
    dl_buf_init(&res.val);
    rc = dl_cache_set(h->cache, key, klen, packed.data, packed.len, ttl, &res, on_store_done, NULL,
                      NULL);
    if (rc < 0 || (rc == 1 && res.status < 0))
        dl_log(backend_away(res.status) ? DL_LOG_DEBUG : DL_LOG_WARN,
               "cache store of %.*s failed: %s", (int)DL_MIN(klen, 200), key, res.err);
    dl_buf_free(&res.val);
    size_t off = DL_CV_HEADER + mlen;
    lua_pushlstring(L, packed.data + off, packed.len - off);
    lua_pushboolean(L, packed.data[3] == 'z');
    dl_buf_free(&packed);
    return 2;
}

/* cache_core.type() -> "memory" | "redis" */
static int l_cache_type(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    lua_pushstring(L, h && h->cache ? h->cache->ops->type : "none");
    return 1;
}

/* cache_core.wants_msgpack(accept) -> boolean */
static int l_cache_wants_msgpack(lua_State *L)
{
    size_t n;
    const char *a = luaL_optlstring(L, 1, "", &n);
    lua_pushboolean(L, dl_accept_msgpack(a, n));
    return 1;
}

static const luaL_Reg cache_funcs[] = {
    {"get", l_cache_get},
    {"set", l_cache_set},
    {"del", l_cache_del},
    {"invalidate", l_cache_invalidate},
    {"_http_get", l_cache_http_get},
    {"_http_store", l_cache_http_store},
    {"type", l_cache_type},
    {"wants_msgpack", l_cache_wants_msgpack},
    {NULL, NULL},
};

int luaopen_devloop_cache_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(cache_funcs));
    luaL_register(L, NULL, cache_funcs);
    lua_pushinteger(L, MAX_TTL_S);
    lua_setfield(L, -2, "MAX_TTL");
    return 1;
}
