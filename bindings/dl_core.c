/*
 * dl_core.c - the devloop.core Lua module: the primitives scripts/devloop/
 * builds the public API on. Route declaration, sleeping, parallel joins and
 * the logger. No policy lives here: that is the Lua library's.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <string.h>
#include <uv.h>

#include "bindings/dl_bindings.h"
#include "common/buf.h"
#include "common/codec_json.h"
#include "common/internal.h"
#include "common/log.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "core/request.h"

/* ================================================================== sleep */

typedef struct {
    uv_timer_t timer;
    dl_task_t *task; /* NULL once detached */
} sleep_t;

static void on_sleep_closed(uv_handle_t *h)
{
    dl_free(h->data);
}

static __thread sleep_t *tl_napper; /* core._nap's timer in this worker, if napping */

static void on_sleep(uv_timer_t *h)
{
    sleep_t *s = h->data;
    dl_task_t *t = s->task;
    if (tl_napper == s)
        tl_napper = NULL;
    uv_close((uv_handle_t *)h, on_sleep_closed);
    if (t)
        dl_task_resume(t, 0);
}

static void cancel_sleep(void *data)
{
    sleep_t *s = data;
    if (tl_napper == s)
        tl_napper = NULL;
    s->task = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_sleep_closed);
}

/* The longest core.sleep (a day): core.MAX_SLEEP_MS, api.sleep's bound. */
#define MAX_SLEEP_MS 86400000

/* core.sleep(ms): parks the calling handler, never the loop. */
static int l_core_sleep(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    if (!(ms >= 0) || ms > MAX_SLEEP_MS)
        return luaL_argerror(L, 1, "milliseconds between 0 and 86400000 expected");
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "sleep can only be called inside a handler");
    sleep_t *s = dl_malloc(sizeof(*s));
    if (s == NULL)
        return luaL_error(L, "out of memory");
    uv_timer_init(t->vm->host->loop, &s->timer);
    s->timer.data = s;
    s->task = t;
    uv_timer_start(&s->timer, on_sleep, (uint64_t)ceil(ms), 0);
    dl_task_park(t, cancel_sleep, s);
    return lua_yield(L, 0);
}

/* ================================================================ napping */

/* One napper per VM (the job scheduler): core._nap(ms) sleeps like sleep()
 * but core._wake() ends the nap at once, so a job added in this worker starts
 * without waiting for the next poll. */
static int l_core_nap(lua_State *L)
{
    int n = l_core_sleep(L); /* parks the task with a timer */
    dl_task_t *t = dl_task_current(L);
    if (t && t->cancel_data)
        tl_napper = t->cancel_data;
    return n;
}

static int l_core_wake(lua_State *L)
{
    DL_UNUSED(L);
    sleep_t *s = tl_napper;
    if (s && s->task) /* fire on the next loop turn, never inside this call */
        uv_timer_start(&s->timer, on_sleep, 0, 0);
    return 0;
}

/* ============================================================ wait queues */

/*
 * A wait queue parks tasks until another task wakes them with values (request
 * coalescing: concurrent misses on one key wait for the first one's answer).
 * Waking never resumes from inside the waking task's own call: the waiters
 * are handed to a zero timer and resumed from the loop.
 */
#define WQ_MT "devloop.WaitQueue"

typedef struct wake_s {
    uv_timer_t timer;
    lua_State *L;
    int values_ref;
    int n;
    dl_task_t **tasks; /* a slot is NULL once its task was cancelled */
} wake_t;

typedef struct {
    dl_task_t **tasks;
    int n, cap;
} wq_t;

/* A parked waiter's cancel: its slot (in a queue or a wake) forgets it. */
static void clear_slot(void *data)
{
    dl_task_t **slot = data;
    *slot = NULL;
}

static int l_wq_new(lua_State *L)
{
    wq_t *q = lua_newuserdata(L, sizeof(*q));
    memset(q, 0, sizeof(*q));
    luaL_getmetatable(L, WQ_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_wq_gc(lua_State *L)
{
    wq_t *q = luaL_checkudata(L, 1, WQ_MT);
    for (int i = 0; i < q->n; i++)
        if (q->tasks[i])
            dl_task_park(q->tasks[i], NULL, NULL);
    dl_free(q->tasks);
    q->tasks = NULL;
    q->n = q->cap = 0;
    return 0;
}

/* core._wq_wait(q): parks the calling task; returns what _wq_wake passed. */
static int l_wq_wait(lua_State *L)
{
    wq_t *q = luaL_checkudata(L, 1, WQ_MT);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL)
        return luaL_error(L, "wait can only be called inside a handler");
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        dl_task_t **nt = dl_realloc(q->tasks, sizeof(*nt) * (size_t)cap);
        if (nt == NULL)
            return luaL_error(L, "out of memory");
        /* slots moved: re-point every parked task's cancel data */
        for (int i = 0; i < q->n; i++)
            if (nt[i])
                dl_task_park(nt[i], clear_slot, &nt[i]);
        q->tasks = nt;
        q->cap = cap;
    }
    q->tasks[q->n] = t;
    dl_task_park(t, clear_slot, &q->tasks[q->n]);
    q->n++;
    return lua_yield(L, 0);
}

static void on_wake_closed(uv_handle_t *h)
{
    wake_t *wk = h->data;
    dl_free(wk->tasks);
    dl_free(wk);
}

static void on_wake(uv_timer_t *h)
{
    wake_t *wk = h->data;
    lua_State *L = wk->L;
    for (int i = 0; i < wk->n; i++) {
        dl_task_t *t = wk->tasks[i];
        if (t == NULL)
            continue;
        wk->tasks[i] = NULL;
        lua_State *co = t->co;
        lua_rawgeti(co, LUA_REGISTRYINDEX, wk->values_ref);
        int n = (int)lua_objlen(co, -1);
        lua_checkstack(co, n + 2);
        for (int k = 1; k <= n; k++)
            lua_rawgeti(co, -k, k);
        lua_remove(co, -(n + 1));
        dl_task_resume(t, n);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, wk->values_ref);
    uv_close((uv_handle_t *)h, on_wake_closed);
}

/* core._wq_wake(q, ...): resumes every waiter with the values, from the loop. */
static int l_wq_wake(lua_State *L)
{
    wq_t *q = luaL_checkudata(L, 1, WQ_MT);
    dl_vm_t *vm = dl_vm_of(L);
    int nvals = lua_gettop(L) - 1;
    if (q->n == 0 || dl_lua_host(L) == NULL) {
        q->n = 0;
        return 0;
    }
    wake_t *wk = dl_calloc(1, sizeof(*wk));
    if (wk == NULL)
        return luaL_error(L, "out of memory");
    /* the queue's array moves to the wake; the queue starts empty again */
    wk->tasks = q->tasks;
    wk->n = q->n;
    q->tasks = NULL;
    q->n = q->cap = 0;
    for (int i = 0; i < wk->n; i++)
        if (wk->tasks[i])
            dl_task_park(wk->tasks[i], clear_slot, &wk->tasks[i]);
    lua_createtable(L, nvals, 0);
    for (int i = 1; i <= nvals; i++) {
        lua_pushvalue(L, i + 1);
        lua_rawseti(L, -2, i);
    }
    wk->L = vm->L;
    wk->values_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_init(vm->host->loop, &wk->timer);
    wk->timer.data = wk;
    uv_timer_start(&wk->timer, on_wake, 0, 0);
    return 0;
}

/* ================================================================ logging */

/* core.log(level, msg, fields): one line, fields as JSON, tagged with the request id. */
static int l_core_log(lua_State *L)
{
    int level = (int)luaL_checkinteger(L, 1);
    size_t mlen;
    const char *msg = luaL_checklstring(L, 2, &mlen);
    if (level < dl_log_min_level)
        return 0;
    dl_task_t *t = dl_task_current(L);
    const char *id = (t && t->req) ? t->req->id : NULL;
    if (lua_isnoneornil(L, 3)) {
        dl_log_emit(level, id, msg, mlen, NULL, 0);
        return 0;
    }
    dl_buf_t b = DL_BUF_INIT;
    char err[128];
    if (dl_json_encode(L, 3, &b, err, sizeof(err)) != 0) {
        dl_buf_free(&b);
        dl_log_write(level, id, "%s (fields not encodable: %s)", msg, err);
        return 0;
    }
    /* fields stay structured: merged into the JSON line, appended on the console */
    dl_log_emit(level, id, msg, mlen, b.data, b.len);
    dl_buf_free(&b);
    return 0;
}

static int l_core_log_level(lua_State *L)
{
    lua_pushinteger(L, dl_log_min_level);
    return 1;
}

/* core.now(): wall-clock seconds with microsecond precision. */
static int l_core_now(lua_State *L)
{
    lua_pushnumber(L, dl_clock_unix());
    return 1;
}

/* core._env(name): a numeric setting of config.c's table, parsed and range
 * checked there (start-up refused a bad value), so Lua never re-parses one;
 * the host reads it (lua_host.h env_u64). */
static int l_core_env(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    dl_vm_t *vm = dl_vm_of(L);
    uint64_t n;
    if (vm == NULL || vm->host == NULL || vm->host->env_u64 == NULL ||
        vm->host->env_u64(name, &n) != 0)
        return luaL_argerror(L, 1, "not a setting of the runtime's table (config.c)");
    lua_pushnumber(L, (lua_Number)n);
    return 1;
}

/* core.worker_id(): 0-based worker index (-1 outside a worker). */
static int l_core_worker_id(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    lua_pushinteger(L, h ? h->worker_id : -1);
    return 1;
}


/* ============================================================ in-process */

/* core._request(method, path, headers, body): a request from its parts,
 * into the request core of this worker as an in-process request
 * (inproc/inproc.h, which refuses a part outside its grammar); returns the
 * answer's status, headers (a table: lower-case names, set-cookie a list)
 * and body, parking the caller meanwhile. headers maps names to a string value or a
 * list of them (repeated fields, as a socket request may send; a second Host
 * is refused like any part outside the grammar). A refused part returns
 * nil, message, "EINVAL", name of the field at fault (nil for the method or
 * path) at once, before anything is sent. */
typedef struct {
    dl_task_t *task; /* NULL once the task is gone */
} inproc_t;

static void inproc_done(const dl_inproc_answer_t *a, void *arg)
{
    inproc_t *ip = arg;
    dl_task_t *t = ip->task;
    dl_free(ip);
    if (t == NULL)
        return;
    if (a == NULL) {
        dl_task_resume_string(t, NULL, 0, "connection closed without a complete response");
        return;
    }
    /* status, headers, body: the answer's parts as the core decided them
     * (no text to parse again); names lower case, a repeated field joined
     * with ", " as RFC 9110 5.3 allows, but Set-Cookie a list (RFC 9110
     * 5.3: it cannot be joined), as api.http gives it */
    lua_State *co = t->co;
    lua_checkstack(co, 8);
    lua_pushinteger(co, a->status);
    lua_createtable(co, 0, a->n_fields);
    char low[256];
    for (int i = 0; i < a->n_fields; i++) {
        const dl_http_field_t *f = &a->fields[i];
        size_t nl = DL_MIN(f->name_len, sizeof(low));
        for (size_t j = 0; j < nl; j++)
            low[j] = (char)dl_tolower((unsigned char)f->name[j]);
        int cookie = nl == 10 && memcmp(low, "set-cookie", 10) == 0;
        lua_pushlstring(co, low, nl);
        lua_pushvalue(co, -1);
        lua_rawget(co, -3);
        if (cookie) {
            if (lua_isnil(co, -1)) {
                lua_pop(co, 1);
                lua_createtable(co, 1, 0);
            }
            lua_pushlstring(co, f->value, f->value_len);
            lua_rawseti(co, -2, (int)lua_objlen(co, -2) + 1);
        } else if (lua_isnil(co, -1)) {
            lua_pop(co, 1);
            lua_pushlstring(co, f->value, f->value_len);
        } else {
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, f->value, f->value_len);
            lua_concat(co, 3);
        }
        lua_rawset(co, -3);
    }
    lua_pushlstring(co, a->body, a->body_len);
    dl_task_resume(t, 3);
}

static void cancel_inproc(void *data)
{
    ((inproc_t *)data)->task = NULL; /* the exchange ends on its own */
}

static int l_core_request(lua_State *L)
{
    size_t mlen, plen, blen = 0;
    const char *method = luaL_checklstring(L, 1, &mlen);
    const char *path = luaL_checklstring(L, 2, &plen);
    const char *body = luaL_optlstring(L, 4, "", &blen);
    dl_task_t *t = dl_task_current(L);
    if (t == NULL || dl_lua_host(L) == NULL)
        return luaL_error(L, "in-process requests can only be made inside a task");
    int n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1))
            n += lua_type(L, -1) == LUA_TTABLE ? (int)lua_objlen(L, -1) : 1;
    }
    /* the strings stay in the table (on the stack) while the request is written */
    dl_http_field_t *fields = n ? lua_newuserdata(L, sizeof(*fields) * (size_t)n) : NULL;
    int i = 0;
    for (lua_pushnil(L); n && lua_next(L, 3); lua_pop(L, 1)) {
        int list = lua_type(L, -1) == LUA_TTABLE;
        int m = list ? (int)lua_objlen(L, -1) : 1;
        for (int j = 1; j <= m; j++) {
            if (list)
                lua_rawgeti(L, -1, j); /* kept alive by the list in the table */
            if (lua_type(L, -2 - list) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
                i >= n)
                return luaL_argerror(L, 3, "header names and values must be strings");
            fields[i].name = lua_tolstring(L, -2 - list, &fields[i].name_len);
            fields[i].value = lua_tolstring(L, -1, &fields[i].value_len);
            i++;
            if (list)
                lua_pop(L, 1);
        }
    }
    const char *err = NULL;
    int bad = -1;
    inproc_t *ip = dl_calloc(1, sizeof(*ip));
    if (ip == NULL)
        return luaL_error(L, "out of memory");
    ip->task = t;
    dl_inproc_req_t in = {.method = method,
                          .method_len = mlen,
                          .path = path,
                          .path_len = plen,
                          .fields = fields,
                          .n_fields = n,
                          .body = body,
                          .body_len = blen};
    dl_core_ctx_t *x = dl_lua_host(L)->core;
    dl_task_park(t, cancel_inproc, ip);
    int rc = x->inproc(x, &in, inproc_done, ip, &err, &bad);
    if (rc != 0)
        t->cancel = NULL; /* nothing was sent: no answer comes */
    if (rc == DL_EINVAL) {
        dl_free(ip);
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, "EINVAL");
        if (bad >= 0)
            lua_pushlstring(L, fields[bad].name, fields[bad].name_len);
        else
            lua_pushnil(L);
        return 4;
    }
    if (rc == DL_ELOOP) {
        dl_free(ip);
        return dl_lua_fail(L, err, dl_err_name(rc));
    }
    if (rc != 0) {
        dl_free(ip);
        return luaL_error(L, "out of memory");
    }
    return lua_yield(L, 0); /* the answer comes from a timer, later */
}

/* core._advance(ms): moves the clock api.now() and the in-process cache see
 * forward (devloop test's fake clock). */
static int l_core_advance(lua_State *L)
{
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0, 1, "milliseconds >= 0 expected");
    __atomic_add_fetch(&dl_clock_skew_ms, (int64_t)ms, __ATOMIC_RELAXED);
    return 0;
}

/* core._stop(): asks the runtime to stop (devloop test, when its tests ran). */
static int l_core_stop(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h && h->stop)
        h->stop(h->data);
    return 0;
}

/* core.mkdir(path): creates a folder (0755); true if it exists afterwards. */
static int l_core_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        return dl_lua_failf(L, NULL, "mkdir %s: %s", path, strerror(errno));
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.app_dir(): the folder of the app being served or checked. */
static int l_core_app_dir(lua_State *L)
{
    dl_vm_t *vm = dl_vm_of(L);
    lua_pushstring(L, vm ? vm->app_dir : "");
    return 1;
}

static const luaL_Reg core_funcs[] = {
    {"app_dir", l_core_app_dir},
    {"mkdir", l_core_mkdir},
    {"_request", l_core_request},
    {"_advance", l_core_advance},
    {"_stop", l_core_stop},
    {"_route", dl__route},
    {"_hooks", dl__hooks},
    {"_header", dl__req_header},
    {"_cors", dl__cors},
    {"_cors_pending", dl__cors_pending},
    {"_cors_verdict", dl__cors_verdict},
    {"_cors_preflight", dl__cors_preflight},
    {"_rate_limit", dl__rate_limit},
    {"_rate_note", dl__rate_note},
    {"_rate_undo", dl__rate_undo},
    {"_client_key", dl__client_key},
    {"_stream_write", dl__stream_write},
    {"_parallel", dl__parallel},
    {"_race", dl__race},
    {"_spawn", dl__spawn},
    {"_guard", dl__guard},
    {"_error_text", dl__error_text},
    {"_nap", l_core_nap},
    {"_wake", l_core_wake},
    {"sleep", l_core_sleep},
    {"log", l_core_log},
    {"log_level", l_core_log_level},
    {"now", l_core_now},
    {"_env", l_core_env},
    {"worker_id", l_core_worker_id},
    {"_wq_new", l_wq_new},
    {"_wq_wait", l_wq_wait},
    {"_wq_wake", l_wq_wake},
    {NULL, NULL},
};

int luaopen_devloop_core(lua_State *L)
{
    if (luaL_newmetatable(L, WQ_MT)) {
        lua_pushcfunction(L, l_wq_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, DL_ARRAY_SIZE(core_funcs));
    luaL_register(L, NULL, core_funcs);
    lua_pushlightuserdata(L, &dl__gzip_body_marker);
    lua_setfield(L, -2, "GZIP_BODY");
    lua_pushlightuserdata(L, &dl__file_body_marker);
    lua_setfield(L, -2, "FILE_BODY");
    lua_pushlightuserdata(L, &dl__stream_marker);
    lua_setfield(L, -2, "_stream");
    lua_pushlightuserdata(L, &dl__not_routed_marker);
    lua_setfield(L, -2, "_not_routed");
    lua_pushlightuserdata(L, &dl__after_done_marker);
    lua_setfield(L, -2, "_after_done");
    /* the numbers Lua passes to C, named once (scripts/devloop/ reads these) */
    static const struct {
        const char *name;
        int value;
    } consts[] = {{"LOG_DEBUG", DL_LOG_DEBUG}, {"LOG_INFO", DL_LOG_INFO},
                  {"LOG_WARN", DL_LOG_WARN},   {"LOG_ERROR", DL_LOG_ERROR},
                  {"MAX_SLEEP_MS", MAX_SLEEP_MS}};
    for (size_t i = 0; i < DL_ARRAY_SIZE(consts); i++) {
        lua_pushinteger(L, consts[i].value);
        lua_setfield(L, -2, consts[i].name);
    }
    static const struct {
        const char *name;
        int mask;
    } methods[] = {{"GET", DL_M_GET},   {"HEAD", DL_M_HEAD},     {"POST", DL_M_POST},
                   {"PUT", DL_M_PUT},   {"PATCH", DL_M_PATCH},   {"DELETE", DL_M_DELETE},
                   {"OPTIONS", DL_M_OPTIONS}, {"ALL", DL_M_ALL}};
    lua_createtable(L, 0, DL_ARRAY_SIZE(methods));
    for (size_t i = 0; i < DL_ARRAY_SIZE(methods); i++) {
        lua_pushinteger(L, methods[i].mask);
        lua_setfield(L, -2, methods[i].name);
    }
    lua_setfield(L, -2, "methods");
    return 1;
}
