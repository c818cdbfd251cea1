/*
 * dl_db.c - the devloop.db_core Lua module: document-store operations
 * (runtime/store/store.h) run on the libuv thread pool while the calling task is
 * parked. Arguments are encoded to JSON on the worker thread, the blocking
 * call runs on a pool thread, and the JSON result is decoded back on the
 * worker thread when the task resumes. The file_* operations (stores that keep
 * files, i.e. MongoDB GridFS) take plain strings instead of JSON and move the
 * bytes between local paths on the pool thread. Policy (schemas, pagination,
 * cursors) lives in scripts/devloop/db.lua.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <uv.h>

#include "common/codec_json.h"
#include "common/internal.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "common/metrics.h"
#include "common/sign.h"
#include "store/store.h"
#include "bindings/dl_bindings.h"

enum {
    OP_FIND,
    OP_COUNT,
    OP_INSERT,
    OP_UPDATE,
    OP_FOAU,
    OP_REMOVE,
    OP_INDEX,
    OP_EXPLAIN,
    OP_PING,
    OP_FILE_PUT, /* the file operations last: is_file_op() */
    OP_FILE_GET,
    OP_FILE_REMOVE,
};

static const char *op_names[] = {"find", "count", "insert", "update", "find_one_and_update",
                                 "remove", "create_index", "explain", "ping", "file_put",
                                 "file_get", "file_remove"};

/* String arguments of the file operations, in call order (position 2 on). */
static const int file_nargs[] = {4, 2, 1}; /* put, get, remove */

typedef struct {
    uv_work_t work;
    dl_store_t *store;
    dl_task_t *task; /* NULL once detached (the task was cancelled) */
    int op;
    int flag;        /* multi / unique */
    char coll[80];
    dl_buf_t a, b, c; /* JSON arguments; file ops: NUL-terminated strings */
    dl_buf_t d;       /* file_put: sha256 */
    uint64_t start_ns;
    const dl_lua_host_t *host; /* the worker's */
    dl_store_res_t res;
} db_call_t;

static dl_store_t *store_of(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    return h ? h->store : NULL;
}

static const char *arg(dl_buf_t *b)
{
    return b->len ? b->data : NULL;
}

/* A string argument of a file op: NULL when it was nil, else NUL-terminated ("" included). */
static const char *sarg(dl_buf_t *b)
{
    return b->data;
}

static int is_file_op(int op)
{
    return op >= OP_FILE_PUT;
}

/* Whether store s implements file op op. */
static int has_file_op(const dl_store_t *s, int op)
{
    switch (op) {
    case OP_FILE_PUT:
        return s->ops->file_put != NULL;
    case OP_FILE_GET:
        return s->ops->file_get != NULL;
    default:
        return s->ops->file_remove != NULL;
    }
}

static void work_cb(uv_work_t *w)
{
    db_call_t *c = w->data;
    dl_store_t *s = c->store;
    dl_store_res_t *r = &c->res;
    switch (c->op) {
    case OP_FIND:
        dl_store_find(s, c->coll, arg(&c->a), arg(&c->b), r);
        break;
    case OP_COUNT:
        dl_store_count(s, c->coll, arg(&c->a), r);
        break;
    case OP_INSERT:
        dl_store_insert(s, c->coll, arg(&c->a), r);
        break;
    case OP_UPDATE:
        dl_store_update(s, c->coll, arg(&c->a), arg(&c->b), c->flag, r);
        break;
    case OP_FOAU:
        dl_store_find_one_and_update(s, c->coll, arg(&c->a), arg(&c->b), arg(&c->c), r);
        break;
    case OP_REMOVE:
        dl_store_remove(s, c->coll, arg(&c->a), c->flag, r);
        break;
    case OP_INDEX:
        dl_store_create_index(s, c->coll, arg(&c->a), c->flag, r);
        break;
    case OP_EXPLAIN:
        dl_store_explain(s, c->coll, arg(&c->a), arg(&c->b), r);
        break;
    case OP_FILE_PUT:
        dl_store_file_put(s, sarg(&c->a), sarg(&c->b), sarg(&c->c), sarg(&c->d), r);
        break;
    case OP_FILE_GET:
        dl_store_file_get(s, sarg(&c->a), sarg(&c->b), r);
        break;
    case OP_FILE_REMOVE:
        dl_store_file_remove(s, sarg(&c->a), r);
        break;
    default:
        dl_store_ping(s, r);
    }
}

static void call_free(db_call_t *c)
{
    dl_buf_free(&c->a);
    dl_buf_free(&c->b);
    dl_buf_free(&c->c);
    dl_buf_free(&c->d);
    dl_buf_free(&c->res.json);
    dl_free(c);
}

static int push_result(lua_State *L, db_call_t *c)
{
    dl_store_res_t *r = &c->res;
    if (r->status < 0)
        return dl_lua_fail_status(L, r->status, r->err);
    switch (c->op) {
    case OP_COUNT:
    case OP_FILE_REMOVE:
        lua_pushnumber(L, (lua_Number)r->count);
        return 1;
    case OP_UPDATE:
    case OP_REMOVE:
        lua_pushnumber(L, (lua_Number)r->count);
        lua_pushnumber(L, (lua_Number)r->matched);
        return 2;
    case OP_INDEX:
        lua_pushboolean(L, 1);
        return 1;
    default: {
        char err[160];
        if (r->json.len == 0) {
            if (c->op == OP_PING)
                lua_pushboolean(L, 1);
            else
                lua_pushnil(L);
            return 1;
        }
        if (dl_json_decode(L, r->json.data, r->json.len, err, sizeof(err)) != 0)
            return dl_lua_failf(L, NULL, "db: unreadable result: %s", err);
        if (c->op == OP_FOAU && lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
            lua_pop(L, 1); /* null: no document matched */
            lua_pushnil(L);
        }
        return 1;
    }
    }
}

static void after_cb(uv_work_t *w, int status)
{
    db_call_t *c = w->data;
    dl_task_t *t = c->task;
    const dl_lua_host_t *h = c->host;
    if (h) {
        const char *labels[2] = {op_names[c->op], c->coll[0] ? c->coll : "-"};
        if (h->metrics)
            dl_metric_observe(h->metrics, h->worker_id, h->m.db_duration, labels,
                              (double)(uv_hrtime() - c->start_ns) / 1e9);
        if (h->store_guard)
            dl_store_guard_done(h->store_guard, h->worker_id, uv_now(h->loop),
                                status == UV_ECANCELED ? DL_ECANCELED : c->res.status,
                                c->res.err);
    }
    if (t == NULL) {
        call_free(c);
        return;
    }
    if (status == UV_ECANCELED) {
        c->res.status = DL_ECANCELED;
        snprintf(c->res.err, sizeof(c->res.err), "db: operation cancelled");
    }
    int n = push_result(t->co, c);
    call_free(c);
    dl_task_resume(t, n);
}

static void cancel_call(void *data)
{
    db_call_t *c = data;
    c->task = NULL; /* the pool thread finishes; after_cb frees */
}

/* Runs call c on the thread pool and parks task t until after_cb resumes it. */
static int queue_call(lua_State *L, db_call_t *c, dl_task_t *t)
{
    c->task = t;
    c->work.data = c;
    const dl_lua_host_t *h = c->host = t->vm->host;
    c->start_ns = uv_hrtime();
    /* a store that does not answer (its breaker is open): fail now, no thread */
    char why[sizeof(c->res.err)];
    if (h->store_guard &&
        !dl_store_guard_allow(h->store_guard, h->worker_id, uv_now(h->loop), why, sizeof(why))) {
        call_free(c);
        return dl_lua_fail(L, why, dl_err_name(DL_EUNAVAIL));
    }
    int rc = uv_queue_work(h->loop, &c->work, work_cb, after_cb);
    if (rc != 0) {
        call_free(c);
        return dl_lua_failf(L, NULL, "db: %s", uv_strerror(rc));
    }
    dl_task_park(t, cancel_call, c);
    return lua_yield(L, 0);
}

/* Copies the file op's string arguments into c (nil stays NULL); 0 or DL_ENOMEM. */
static int copy_file_args(db_call_t *c, const char *const *v, const size_t *len, int n)
{
    dl_buf_t *dst[4] = {&c->a, &c->b, &c->c, &c->d};
    int oom = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] == NULL)
            continue;
        dl_buf_append(dst[i], v[i], len[i]);
        dl_buf_append_char(dst[i], '\0');
        oom |= dst[i]->oom;
    }
    return oom ? DL_ENOMEM : 0;
}

/*
 * db_core.call(op, collection, a, b, c, flag) -> results | nil, err, code
 *   call("ping") -> the store's answer as a table: {ok = 1}, plus write = {ok = false, code =
 *   "ENOSPC", error = message, since = ISO time} while writes fail (store.h)
 * File operations take strings instead (stores without files: nil, msg, "ENOTSUP"):
 *   call("file_put", path, filename, content_type|nil, sha256|nil) -> id
 *   call("file_get", id, dest_path) -> {id, filename, content_type, size, sha256, created_at}
 *   call("file_remove", id) -> count (1 or 0)
 */
static int l_db_call(lua_State *L)
{
    const char *opname = luaL_checkstring(L, 1);
    int op = -1;
    for (int i = 0; i < (int)DL_ARRAY_SIZE(op_names); i++)
        if (strcmp(opname, op_names[i]) == 0)
            op = i;
    if (op < 0)
        return luaL_argerror(L, 1, "unknown db operation");
    size_t clen = 0;
    const char *coll = op == OP_PING || is_file_op(op) ? "" : luaL_checklstring(L, 2, &clen);
    /* a NUL would cut the name short (another collection), a long one is
     * not a name: refused as the store front refuses a bad name */
    if (clen >= 80 || strlen(coll) != clen)
        return dl_lua_fail(L, "invalid collection name (1-64 of [A-Za-z0-9_])", "EINVAL");
    const char *fv[4] = {NULL, NULL, NULL, NULL};
    size_t fl[4] = {0, 0, 0, 0};
    int fn = is_file_op(op) ? file_nargs[op - OP_FILE_PUT] : 0;
    for (int i = 0; i < fn; i++) {
        /* file_put's content_type and sha256 may be nil */
        if (op == OP_FILE_PUT && i >= 2)
            fv[i] = luaL_optlstring(L, 2 + i, NULL, &fl[i]);
        else
            fv[i] = luaL_checklstring(L, 2 + i, &fl[i]);
        if (fv[i] != NULL && strlen(fv[i]) != fl[i])
            return luaL_argerror(L, 2 + i, "string contains a NUL byte");
    }
    dl_store_t *s = store_of(L);
    dl_task_t *t = dl_task_current(L);
    if (s != NULL && is_file_op(op) && !has_file_op(s, op))
        return dl_lua_fail(L, "the document store keeps no files", "ENOTSUP");
    if (s == NULL || t == NULL)
        return dl_lua_fail(L,
                           s ? "db calls can only run inside a handler or a start hook"
                             : "no document store is open",
                           NULL);
    db_call_t *c = dl_calloc(1, sizeof(*c));
    if (c == NULL)
        return luaL_error(L, "out of memory");
    c->op = op;
    c->store = s;
    c->flag = lua_toboolean(L, 6);
    memcpy(c->coll, coll, clen);
    if (is_file_op(op)) {
        if (copy_file_args(c, fv, fl, fn) != 0) {
            call_free(c);
            return luaL_error(L, "out of memory");
        }
        return queue_call(L, c, t);
    }
    /* an encoding error raises: free c first by encoding into locals */
    dl_buf_t a = DL_BUF_INIT, b = DL_BUF_INIT, cc = DL_BUF_INIT;
    char err[160];
    int bad = 0;
    for (int i = 0; i < 3 && !bad; i++) {
        dl_buf_t *dst = i == 0 ? &a : i == 1 ? &b : &cc;
        if (!lua_isnoneornil(L, 3 + i)) {
            if (dl_json_encode(L, 3 + i, dst, err, sizeof(err)) != 0)
                bad = 3 + i;
            else {
                dl_buf_append_char(dst, '\0');
                dst->len--;
            }
        }
    }
    if (bad) {
        dl_buf_free(&a);
        dl_buf_free(&b);
        dl_buf_free(&cc);
        dl_free(c);
        return dl_lua_failf(L, "EINVAL", "db: cannot encode argument: %s", err);
    }
    c->a = a;
    c->b = b;
    c->c = cc;
    return queue_call(L, c, t);
}

/* db_core.state() -> {breaker = "closed" | "half_open" | "open", last_error = s | nil} | nil */
static int l_db_state(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->store_guard == NULL) {
        lua_pushnil(L);
        return 1;
    }
    int breaker;
    char err[256];
    dl_store_guard_state(h->store_guard, &breaker, err, sizeof(err));
    lua_createtable(L, 0, 2);
    lua_pushstring(L, dl_breaker_state_name(breaker));
    lua_setfield(L, -2, "breaker");
    if (err[0] != '\0') {
        lua_pushstring(L, err);
        lua_setfield(L, -2, "last_error");
    }
    return 1;
}

/* db_core.type() -> "sqlite" | "mongodb" | nil */
static int l_db_type(lua_State *L)
{
    dl_store_t *s = store_of(L);
    if (s == NULL)
        return 0;
    lua_pushstring(L, dl_store_type(s));
    return 1;
}

/* db_core.has_files() -> true when the open store keeps files (file_put and the rest) */
static int l_db_has_files(lua_State *L)
{
    dl_store_t *s = store_of(L);
    lua_pushboolean(L, dl_store_has_files(s));
    return 1;
}

/* db_core.sign(s) -> 32 hex chars: a keyed hash that tamper-checks cursors */
static int l_db_sign(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char out[33];
    dl_runtime_sign(s, n, out);
    lua_pushlstring(L, out, 32);
    return 1;
}

static const luaL_Reg db_funcs[] = {
    {"call", l_db_call},
    {"type", l_db_type},
    {"has_files", l_db_has_files},
    {"sign", l_db_sign},
    {"state", l_db_state},
    {NULL, NULL},
};

int luaopen_devloop_db_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(db_funcs));
    luaL_register(L, NULL, db_funcs);
    return 1;
}
