/*
 * dl_metrics.c - the devloop.metrics_core Lua module: the Prometheus
 * registry for Lua (render, app-defined metrics) and the runtime's figures
 * that /health and /stats are built from (reload status, process, workers,
 * in-process cache, database file). routes/observability.lua and api.metrics
 * in scripts/devloop/health.lua and metrics.lua sit on top.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/log.h"
#include "lua/lua_error.h"
#include "lua/lua_vm.h"
#include "cache/mem_cache.h"
#include "common/metrics.h"
#include "bindings/dl_bindings.h"

#define MAX_LABELS 16

static const dl_lua_host_t *host_of(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->metrics == NULL)
        luaL_error(L, "metrics are only available while serving");
    return h;
}

/* metrics_core.render() -> Prometheus text */
static int l_metrics_render(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    dl_metric_set(h->metrics, h->metrics_shared, h->m.log_dropped, NULL, (double)dl_log_dropped());
    dl_metric_set(h->metrics, h->metrics_shared, h->m.metrics_overflow, NULL,
                  (double)dl_metrics_overflow(h->metrics));
    dl_buf_t b = DL_BUF_INIT;
    dl_metrics_render(h->metrics, &b);
    dl_metrics_render_process(&b);
    if (b.oom) {
        dl_buf_free(&b);
        return luaL_error(L, "out of memory");
    }
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    dl_buf_free(&b);
    return 1;
}

/* metrics_core.define(type, name, help, {labels}, {buckets}) -> id | nil, err */
static int l_metrics_define(lua_State *L)
{
    const dl_lua_host_t *h = dl_lua_host(L);
    if (h == NULL || h->metrics == NULL) {
        /* a check-only load (devloop check, reload's scratch state): nothing to count */
        lua_pushinteger(L, -1);
        return 1;
    }
    int type = (int)luaL_checkinteger(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *help = luaL_optstring(L, 3, "");
    const char *labels[MAX_LABELS];
    double buckets[64];
    int nl = 0, nb = 0;
    if (lua_istable(L, 4)) {
        nl = (int)lua_objlen(L, 4);
        if (nl > MAX_LABELS)
            return luaL_argerror(L, 4, "at most 16 labels");
        for (int i = 0; i < nl; i++) {
            lua_rawgeti(L, 4, i + 1);
            labels[i] = lua_tostring(L, -1); /* kept alive by the table */
            lua_pop(L, 1);
            if (labels[i] == NULL)
                return luaL_argerror(L, 4, "label names must be strings");
        }
    }
    if (lua_istable(L, 5)) {
        nb = (int)lua_objlen(L, 5);
        if (nb > 64)
            return luaL_argerror(L, 5, "at most 64 buckets");
        for (int i = 0; i < nb; i++) {
            lua_rawgeti(L, 5, i + 1);
            buckets[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    }
    int id = dl_metric_define(h->metrics, type, name, help, nl ? labels : NULL, nl,
                              nb ? buckets : NULL, nb);
    if (id < 0) {
        return dl_lua_failf(L, NULL, "metric %s: invalid or conflicting definition", name);
    }
    lua_pushinteger(L, id);
    return 1;
}

/* What metrics_core.update does: metrics_core.ADD, SET, OBSERVE. */
enum { UPDATE_ADD = 1, UPDATE_SET, UPDATE_OBSERVE };

/* metrics_core.update(kind, id, {label values} | nil, value): kind ADD, SET or OBSERVE */
static int l_metrics_update(lua_State *L)
{
    int kind = (int)luaL_checkinteger(L, 1);
    int id = (int)luaL_checkinteger(L, 2);
    const dl_lua_host_t *h = dl_lua_host(L);
    if (id < 0 || h == NULL || h->metrics == NULL)
        return 0;
    double v = luaL_optnumber(L, 4, 1);
    const char *vals[MAX_LABELS];
    const char *const *lv = NULL;
    if (lua_istable(L, 3)) {
        int n = (int)lua_objlen(L, 3);
        if (n > MAX_LABELS)
            return luaL_argerror(L, 3, "at most 16 label values");
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, 3, i + 1);
            if (lua_type(L, -1) == LUA_TNUMBER)
                lua_tostring(L, -1);
            vals[i] = lua_tostring(L, -1);
            lua_pop(L, 1);
            if (vals[i] == NULL)
                return luaL_argerror(L, 3, "label values must be strings");
        }
        lv = vals;
    }
    dl_metrics_t *m = h->metrics;
    if (kind == UPDATE_ADD)
        dl_metric_add(m, h->worker_id, id, lv, v);
    else if (kind == UPDATE_SET)
        /* an app gauge holds one value, the last set from any worker: the
         * shared slot (a mutex) rather than per-worker slots that would sum */
        dl_metric_set(m, h->metrics_shared, id, lv, v);
    else
        dl_metric_observe(m, h->worker_id, id, lv, v);
    return 0;
}

/* metrics_core.reload_status() -> {generation, reloads, failed, last_ok, last_error, last_reload_time} */
static int l_metrics_reload_status(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    dl_reload_status_t st;
    memset(&st, 0, sizeof(st));
    st.last_ok = 1;
    if (h->reload_status)
        h->reload_status(h->data, &st);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, st.generation);
    lua_setfield(L, -2, "generation");
    lua_pushinteger(L, st.reloads);
    lua_setfield(L, -2, "reloads");
    lua_pushinteger(L, st.failed);
    lua_setfield(L, -2, "failed");
    lua_pushboolean(L, st.last_ok);
    lua_setfield(L, -2, "last_ok");
    lua_pushstring(L, st.last_error);
    lua_setfield(L, -2, "last_error");
    lua_pushnumber(L, st.last_reload_time);
    lua_setfield(L, -2, "last_reload_time");
    return 1;
}

static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0) {
            v = strtol(line + kl, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* metrics_core.process() -> {uptime, rss_bytes, peak_rss_bytes, cpu_user, cpu_system, pid, workers} */
static int l_metrics_process(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    lua_createtable(L, 0, 8);
    lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec / 1e6 - h->start_time);
    lua_setfield(L, -2, "uptime");
    lua_pushnumber(L, (double)proc_status_kb("VmRSS:") * 1024);
    lua_setfield(L, -2, "rss_bytes");
    lua_pushnumber(L, (double)proc_status_kb("VmHWM:") * 1024);
    lua_setfield(L, -2, "peak_rss_bytes");
    lua_pushnumber(L, (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
    lua_setfield(L, -2, "cpu_user");
    lua_pushnumber(L, (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    lua_setfield(L, -2, "cpu_system");
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, h->n_workers ? *h->n_workers : 0);
    lua_setfield(L, -2, "workers");
    return 1;
}

/* metrics_core.workers() -> {{id, connections, lua_memory_bytes, requests}, ...} */
static int l_metrics_workers(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    int n = h->n_workers ? *h->n_workers : 0;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        dl_lua_worker_stats_t st = {0, 0, 0};
        if (h->worker_stats)
            h->worker_stats(h->data, i, &st);
        if (i == h->worker_id) /* this VM's own figure, not the one last published */
            st.lua_memory_bytes = (double)lua_gc(L, LUA_GCCOUNT, 0) * 1024;
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "id");
        lua_pushnumber(L, st.connections < 0 ? 0 : st.connections);
        lua_setfield(L, -2, "connections");
        lua_pushnumber(L, st.lua_memory_bytes < 0 ? 0 : st.lua_memory_bytes);
        lua_setfield(L, -2, "lua_memory_bytes");
        lua_pushnumber(L, st.requests);
        lua_setfield(L, -2, "requests");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* metrics_core.memory_cache() -> {items, bytes, max_bytes, hits, misses, evictions} | nil */
static int l_metrics_memory_cache(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    if (h->memcache == NULL)
        return 0;
    dl_memcache_stats_t st;
    dl_memcache_stats(h->memcache, &st);
    lua_createtable(L, 0, 7);
    lua_pushnumber(L, (double)st.items);
    lua_setfield(L, -2, "items");
    lua_pushnumber(L, (double)st.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushnumber(L, (double)st.max_bytes);
    lua_setfield(L, -2, "max_bytes");
    lua_pushnumber(L, (double)st.hits);
    lua_setfield(L, -2, "hits");
    lua_pushnumber(L, (double)st.misses);
    lua_setfield(L, -2, "misses");
    lua_pushnumber(L, (double)st.evictions);
    lua_setfield(L, -2, "evictions");
    lua_pushnumber(L, (double)st.expired);
    lua_setfield(L, -2, "expired");
    return 1;
}

/* metrics_core.database_file() -> {path, size_bytes, wal_bytes} | nil */
static int l_metrics_database_file(lua_State *L)
{
    const dl_lua_host_t *h = host_of(L);
    const char *p = h->db_path;
    if (p == NULL)
        return 0;
    struct stat st;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, p);
    lua_setfield(L, -2, "path");
    lua_pushnumber(L, stat(p, &st) == 0 ? (double)st.st_size : 0);
    lua_setfield(L, -2, "size_bytes");
    char wal[1300];
    snprintf(wal, sizeof(wal), "%s-wal", p);
    lua_pushnumber(L, stat(wal, &st) == 0 ? (double)st.st_size : 0);
    lua_setfield(L, -2, "wal_bytes");
    return 1;
}

static const luaL_Reg metrics_funcs[] = {
    {"render", l_metrics_render},
    {"define", l_metrics_define},
    {"update", l_metrics_update},
    {"reload_status", l_metrics_reload_status},
    {"process", l_metrics_process},
    {"workers", l_metrics_workers},
    {"memory_cache", l_metrics_memory_cache},
    {"database_file", l_metrics_database_file},
    {NULL, NULL},
};

int luaopen_devloop_metrics_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(metrics_funcs));
    luaL_register(L, NULL, metrics_funcs);
    lua_pushinteger(L, DL_METRIC_COUNTER);
    lua_setfield(L, -2, "COUNTER");
    lua_pushinteger(L, DL_METRIC_GAUGE);
    lua_setfield(L, -2, "GAUGE");
    lua_pushinteger(L, DL_METRIC_HISTOGRAM);
    lua_setfield(L, -2, "HISTOGRAM");
    lua_pushinteger(L, UPDATE_ADD);
    lua_setfield(L, -2, "ADD");
    lua_pushinteger(L, UPDATE_SET);
    lua_setfield(L, -2, "SET");
    lua_pushinteger(L, UPDATE_OBSERVE);
    lua_setfield(L, -2, "OBSERVE");
    return 1;
}
