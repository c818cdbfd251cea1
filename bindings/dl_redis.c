/*
 * dl_redis.c - the devloop.redis_core Lua module: Redis commands through the
 * worker's pool (runtime/backend/redis_pool.c). call(...) sends one command,
 * pipeline({...}) several in one round trip; both park the calling task
 * until the replies arrive; call_idempotent(...) and pipeline({...}, true)
 * let the pool send again what may run twice. A failure is `nil, message,
 * code`, the message saying whether a write may have run. Replies become
 * Lua values: strings, integers, arrays (tables), status strings; a nil
 * reply is nil at the top level and api.null inside arrays; an error reply
 * is `nil, "ERR ..."` (in a pipeline, a table {err = "..."}). Command policy
 * (names, options) lives in scripts/devloop/redis.lua.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "backend/breaker.h"
#include "common/internal.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "backend/redis_pool.h"
#include "bindings/dl_bindings.h"

#define MAX_ARGS (1024 * 1024)

typedef struct {
    dl_task_t *task;
    dl_redis_cmd_t *cmd;
    dl_redis_pool_t *pool;
    int pipeline;
} call_t;

/* nil, message, code for a failed send or call. */
static int push_failure(lua_State *L, dl_redis_pool_t *pool, int status)
{
    const char *why = pool != NULL ? dl_redis_pool_last_error(pool) : "";
    const char *name = dl_err_name(status);
    switch (status) {
    case DL_EUNAVAIL:
        return dl_lua_failf(L, name, "redis: unavailable (%s)", why[0] ? why : "no connection");
    case DL_EREDIS:
        return dl_lua_failf(L, name, "redis: cannot log in (%s)", why[0] ? why : "refused");
    case DL_EUNKNOWN:
        return dl_lua_fail(L, "redis: connection lost after the command was sent: its outcome "
                              "is unknown (it may have run)", name);
    case DL_ETIMEDOUT:
        return dl_lua_fail(L, "redis: timed out (a write may have run)", name);
    case DL_EIO:
        return dl_lua_fail(L, "redis: connection lost", name);
    default:
        return dl_lua_failf(L, name, "redis: %s", dl_strerror(status));
    }
}

static void push_reply(lua_State *L, redisReply *r, int depth)
{
    lua_checkstack(L, 4);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case REDIS_REPLY_NIL:
        if (depth == 0)
            lua_pushnil(L);
        else
            lua_pushlightuserdata(L, NULL); /* api.null */
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        /* inside arrays (EXEC, pipelines) an error is a value: {err = msg} */
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default:
        lua_pushnil(L);
    }
}

/* Pushes the call's results on L; returns how many. */
static int push_results(lua_State *L, dl_redis_pool_t *pool, int status, redisReply **replies,
                        int n, int pipeline)
{
    if (status != 0)
        return push_failure(L, pool, status);
    if (!pipeline) {
        redisReply *r = n > 0 ? replies[0] : NULL;
        if (r == NULL)
            return dl_lua_fail(L, "redis: no reply", NULL);
        if (r->type == REDIS_REPLY_ERROR)
            return dl_lua_fail_len(L, r->str, r->len, NULL);
        push_reply(L, r, 0);
        return 1;
    }
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        if (replies[i]->type == REDIS_REPLY_NIL)
            lua_pushlightuserdata(L, NULL);
        else
            push_reply(L, replies[i], 1);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static void on_reply(int status, redisReply **replies, int n, void *arg)
{
    call_t *c = arg;
    dl_task_t *t = c->task;
    int pipeline = c->pipeline;
    dl_redis_pool_t *pool = c->pool;
    dl_free(c);
    int nres = push_results(t->co, pool, status, replies, n, pipeline);
    dl_task_resume(t, nres);
}

static void cancel_call(void *data)
{
    call_t *c = data;
    dl_redis_cmd_cancel(c->cmd);
    dl_free(c);
}

static dl_redis_pool_t *pool_of(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    return h ? h->redis : NULL;
}

/* The first command's name, upper-cased into name (for messages). */
static const char *upper_name(char *name, size_t cap, const char *const **argvs,
                              const size_t *const *lens, int ncmds)
{
    size_t n = ncmds > 0 && argvs[0] != NULL ? DL_MIN(lens[0][0], cap - 1) : 0;
    for (size_t i = 0; i < n; i++) {
        char ch = argvs[0][0][i];
        name[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
    }
    name[n] = '\0';
    return n ? name : "the command";
}

/* The index of the first (P|S)SUBSCRIBE or *UNSUBSCRIBE command, or -1. */
static int subscribe_at(const char *const **argvs, const size_t *const *lens, int ncmds)
{
    for (int i = 0; i < ncmds; i++) {
        if (argvs[i] == NULL || argvs[i][0] == NULL)
            continue;
        size_t n = lens[i][0];
        if (n >= 9 && n <= 12 && dl_strncasecmp_eq(argvs[i][0] + n - 9, 9, "subscribe", 9))
            return i;
    }
    return -1;
}

/*
 * Sends ncmds commands and parks the task. The argument pointers only need
 * to live through the call: the pool copies the bytes.
 */
static int send_and_park(lua_State *L, int ncmds, const int *argcs, const char *const **argvs,
                         const size_t *const *lens, int pipeline, int flags)
{
    dl_redis_pool_t *pool = pool_of(L);
    if (pool == NULL)
        return dl_lua_fail(L, "redis is not configured (set REDIS_URL)", NULL);
    dl_task_t *t = dl_task_current(L);
    call_t *c = t ? dl_calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        /* no longjmp here: the caller still has to free its arrays */
        return dl_lua_fail(L, t ? "out of memory" : "redis calls can only run inside a handler",
                           NULL);
    }
    c->task = t;
    c->pool = pool;
    c->pipeline = pipeline;
    int rc = dl_redis_pool_sendf(pool, ncmds, argcs, (const char *const *const *)argvs, lens,
                                 flags, on_reply, c, &c->cmd);
    if (rc == DL_EINVAL) {
        /* the pool refuses what would break a connection every request shares */
        char name[32];
        int sub = subscribe_at(argvs, lens, ncmds);
        if (sub >= 0)
            upper_name(name, sizeof(name), argvs + sub, lens + sub, 1);
        else
            upper_name(name, sizeof(name), argvs, lens, ncmds);
        dl_free(c);
        if (sub >= 0)
            return dl_lua_failf(L, dl_err_name(rc),
                                "redis: %s is not available through api.redis: a subscribed "
                                "connection cannot serve other commands, and the pool's "
                                "connections serve every request", name);
        return dl_lua_failf(L, dl_err_name(rc),
                            "redis: %s cannot run on the shared connection pool (it would "
                            "change the connection for every request: SELECT, AUTH, HELLO, "
                            "QUIT, RESET, MONITOR, SYNC and CLIENT REPLY are refused; a MULTI "
                            "or WATCH must end in the same pipeline)",
                            name[0] ? name : "the command");
    }
    if (rc != 0) {
        dl_free(c);
        return push_failure(L, pool, rc);
    }
    dl_task_park(t, cancel_call, c);
    return lua_yield(L, 0);
}

/* The strings of table t[1..n] (numbers are converted in the table, so the
 * strings stay referenced); arrays come from dl_malloc. Returns an error
 * message or NULL. */
static const char *table_argv(lua_State *L, int t, int n, const char **argv, size_t *lens)
{
    for (int j = 1; j <= n; j++) {
        lua_rawgeti(L, t, j);
        int ty = lua_type(L, -1);
        if (ty == LUA_TNUMBER) {
            lua_tolstring(L, -1, NULL);
            lua_pushvalue(L, -1);
            lua_rawseti(L, t, j);
        } else if (ty != LUA_TSTRING) {
            lua_pop(L, 1);
            return "redis: arguments must be strings or numbers";
        }
        argv[j - 1] = lua_tolstring(L, -1, &lens[j - 1]);
        lua_pop(L, 1);
    }
    return NULL;
}

/* redis_core.call(cmd, arg...) -> reply | nil, err, code */
static int call_with(lua_State *L, int flags)
{
    int n = lua_gettop(L);
    if (n < 1 || n > MAX_ARGS)
        return luaL_error(L, "redis: a command needs 1 to %d arguments", MAX_ARGS);
    const char **argv = dl_malloc(sizeof(char *) * (size_t)n);
    size_t *lens = dl_malloc(sizeof(size_t) * (size_t)n);
    if (argv == NULL || lens == NULL) {
        dl_free(argv);
        dl_free(lens);
        return luaL_error(L, "out of memory");
    }
    for (int i = 1; i <= n; i++) {
        int ty = lua_type(L, i);
        if (ty != LUA_TSTRING && ty != LUA_TNUMBER) {
            dl_free(argv);
            dl_free(lens);
            return luaL_argerror(L, i, "string or number expected");
        }
        argv[i - 1] = lua_tolstring(L, i, &lens[i - 1]); /* converts in place: stays on the stack */
    }
    const char *const *argvs[1] = {argv};
    const size_t *lensv[1] = {lens};
    int r = send_and_park(L, 1, &n, argvs, lensv, 0, flags);
    dl_free(argv);
    dl_free(lens);
    return r;
}

static int l_redis_call(lua_State *L)
{
    return call_with(L, 0);
}

/* redis_core.call_idempotent(cmd, arg...): the caller says it may run twice */
static int l_redis_call_idempotent(lua_State *L)
{
    return call_with(L, DL_REDIS_IDEMPOTENT);
}

/* redis_core.pipeline({{cmd, ...}, ...}, [idempotent]) -> {reply, ...} | nil, err, code */
static int l_redis_pipeline(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int flags = lua_toboolean(L, 2) ? DL_REDIS_IDEMPOTENT : 0;
    lua_settop(L, 1);
    int n = (int)lua_objlen(L, 1);
    if (n < 1 || n > 100000)
        return luaL_argerror(L, 1, "a list of 1 to 100000 commands expected");
    int *argcs = dl_calloc((size_t)n, sizeof(int));
    const char ***argvs = dl_calloc((size_t)n, sizeof(char **));
    size_t **lens = dl_calloc((size_t)n, sizeof(size_t *));
    const char *err = (argcs && argvs && lens) ? NULL : "out of memory";
    for (int i = 0; i < n && err == NULL; i++) {
        lua_rawgeti(L, 1, i + 1);
        int k = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
        if (k < 1 || k > MAX_ARGS) {
            err = "redis: each command must be a non-empty list of arguments";
        } else {
            argcs[i] = k;
            argvs[i] = dl_malloc(sizeof(char *) * (size_t)k);
            lens[i] = dl_malloc(sizeof(size_t) * (size_t)k);
            if (argvs[i] == NULL || lens[i] == NULL)
                err = "out of memory";
            else
                err = table_argv(L, lua_gettop(L), k, argvs[i], lens[i]);
        }
        lua_pop(L, 1);
    }
    int r = 0;
    if (err == NULL) {
        r = send_and_park(L, n, argcs, (const char *const **)argvs, (const size_t *const *)lens,
                          1, flags);
    }
    for (int i = 0; i < n && argvs && lens; i++) {
        dl_free((void *)argvs[i]);
        dl_free(lens[i]);
    }
    dl_free(argcs);
    dl_free(argvs);
    dl_free(lens);
    if (err)
        return luaL_error(L, "%s", err);
    return r;
}

/* redis_core.state() -> {up, breaker, down_ms, last_error, ready, connections, queued,
 * inflight, timeouts, fast_fails, unknown, resent, reconnects} | nil */
static int l_redis_state(lua_State *L)
{
    dl_redis_pool_t *pool = pool_of(L);
    dl_redis_stats_t st;
    if (pool == NULL) {
        lua_pushnil(L);
        return 1;
    }
    dl_redis_pool_stats(pool, &st);
    lua_createtable(L, 0, 13);
    lua_pushboolean(L, !st.down && st.ready > 0);
    lua_setfield(L, -2, "up");
    lua_pushstring(L, dl_breaker_state_name(st.breaker));
    lua_setfield(L, -2, "breaker");
    lua_pushnumber(L, (lua_Number)st.down_ms);
    lua_setfield(L, -2, "down_ms");
    lua_pushstring(L, st.last_error);
    lua_setfield(L, -2, "last_error");
#define NUM(field)                                   \
    lua_pushnumber(L, (lua_Number)st.field);         \
    lua_setfield(L, -2, #field)
    NUM(ready);
    NUM(connections);
    NUM(queued);
    NUM(inflight);
    NUM(timeouts);
    NUM(fast_fails);
    NUM(unknown);
    NUM(resent);
    NUM(reconnects);
#undef NUM
    return 1;
}

/* redis_core.configured() -> boolean */
static int l_redis_configured(lua_State *L)
{
    lua_pushboolean(L, pool_of(L) != NULL);
    return 1;
}

static const luaL_Reg redis_funcs[] = {
    {"call", l_redis_call},
    {"call_idempotent", l_redis_call_idempotent},
    {"pipeline", l_redis_pipeline},
    {"configured", l_redis_configured},
    {"state", l_redis_state},
    {NULL, NULL},
};

int luaopen_devloop_redis_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(redis_funcs));
    luaL_register(L, NULL, redis_funcs);
    return 1;
}
