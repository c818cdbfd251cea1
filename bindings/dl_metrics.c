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

/* t[name] = v for the table on top: every field of the records below. */
static void set_number(lua_State *L, const char *name, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, name);
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
    set_number(L, "generation", st.generation);
    set_number(L, "reloads", st.reloads);
    set_number(L, "failed", st.failed);
    lua_pushboolean(L, st.last_ok);
    lua_setfield(L, -2, "last_ok");
    lua_pushstring(L, st.last_error);
    lua_setfield(L, -2, "last_error");
    set_number(L, "last_reload_time", st.last_reload_time);
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
    set_number(L, "uptime", (double)tv.tv_sec + tv.tv_usec / 1e6 - h->start_time);
    set_number(L, "rss_bytes", (double)proc_status_kb("VmRSS:") * 1024);
    set_number(L, "peak_rss_bytes", (double)proc_status_kb("VmHWM:") * 1024);
    set_number(L, "cpu_user", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
    set_number(L, "cpu_system", (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    set_number(L, "pid", getpid());
    set_number(L, "workers", h->n_workers ? *h->n_workers : 0);
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
        set_number(L, "id", i);
        set_number(L, "connections", st.connections < 0 ? 0 : st.connections);
        set_number(L, "lua_memory_bytes", st.lua_memory_bytes < 0 ? 0 : st.lua_memory_bytes);
        set_number(L, "requests", st.requests);
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
    set_number(L, "items", (double)st.items);
    set_number(L, "bytes", (double)st.bytes);
    set_number(L, "max_bytes", (double)st.max_bytes);
    set_number(L, "hits", (double)st.hits);
    set_number(L, "misses", (double)st.misses);
    set_number(L, "evictions", (double)st.evictions);
    set_number(L, "expired", (double)st.expired);
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
    set_number(L, "size_bytes", stat(p, &st) == 0 ? (double)st.st_size : 0);
    char wal[1300];
    snprintf(wal, sizeof(wal), "%s-wal", p);
    set_number(L, "wal_bytes", stat(wal, &st) == 0 ? (double)st.st_size : 0);
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

/* The metric types of define() and the update kinds of update(). */
static const struct {
    const char *name;
    int value;
} metrics_constants[] = {
    {"COUNTER", DL_METRIC_COUNTER}, {"GAUGE", DL_METRIC_GAUGE}, {"HISTOGRAM", DL_METRIC_HISTOGRAM},
    {"ADD", UPDATE_ADD},           {"SET", UPDATE_SET},         {"OBSERVE", UPDATE_OBSERVE},
};

int luaopen_devloop_metrics_core(lua_State *L)
{
    lua_createtable(L, 0, DL_ARRAY_SIZE(metrics_funcs));
    luaL_register(L, NULL, metrics_funcs);
    for (size_t i = 0; i < DL_ARRAY_SIZE(metrics_constants); i++)
        set_number(L, metrics_constants[i].name, metrics_constants[i].value);
    return 1;
}
