/*
 * test_lua_host.c - a VM given a host filled here (lua_host.h): no worker, no
 * runtime, no server. The bindings reach the loop, the cache and the metrics
 * through it alone, which is what keeps the Lua layer below the server.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <uv.h>

#include "bindings/dl_modules.h"
#include "cache/cache.h"
#include "cache/mem_cache.h"
#include "common/compress.h"
#include "common/metrics.h"
#include "lua/lua_host.h"
#include "lua/lua_vm.h"
#include "unit.h"

static int stops;

static void host_stop(void *data)
{
    EXPECT(data == &stops);
    stops++;
}

static void host_worker_stats(void *data, int i, dl_lua_worker_stats_t *out)
{
    (void)data;
    out->connections = 3;
    out->lua_memory_bytes = -1; /* replaced: the asking worker counts its own */
    out->requests = 40 + i;
}

/* the two settings jobs.lua reads as it loads */
static int host_env(const char *name, uint64_t *out)
{
    if (strcmp(name, "DEVLOOP_JOB_LEASE_MS") == 0)
        *out = 1234;
    else if (strcmp(name, "DEVLOOP_JOBS_PAUSED") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* Runs chunk as a task of vm and the loop until nothing is left; returns the
 * global `result` as a string (or "(none)"), copied into buf. */
static const char *run_chunk(dl_vm_t *vm, uv_loop_t *loop, const char *chunk, char *buf,
                             size_t len)
{
    lua_State *L = vm->L;
    if (luaL_loadstring(L, chunk) != 0) {
        snprintf(buf, len, "load: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return buf;
    }
    EXPECT_EQ(dl_vm_spawn(vm, 0), 0);
    if (loop)
        uv_run(loop, UV_RUN_DEFAULT);
    lua_getglobal(L, "result");
    const char *s = lua_tostring(L, -1);
    snprintf(buf, len, "%s", s ? s : "(none)");
    lua_pop(L, 1);
    return buf;
}

DL_TEST(lua_host_serves_bindings_without_a_server)
{
    uv_loop_t loop;
    EXPECT_EQ(uv_loop_init(&loop), 0);
    dl_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.compress_min = 1024;
    cfg.gzip_level = 1;
    dl_memcache_t *mc = dl_memcache_new(1 << 20, 1);
    dl_cache_t *cache = dl_cache_new_memory(mc, &loop);
    dl_metrics_t *m = dl_metrics_new(1);
    dl_compressor_t *z = dl_compressor_new(1);
    EXPECT(mc && cache && m && z);

    dl_lua_host_t h;
    memset(&h, 0, sizeof(h));
    h.modules = dl_modules_builtin;
    h.loop = &loop;
    h.worker_id = 0;
    int n_workers = 1;
    h.n_workers = &n_workers;
    h.cfg = &cfg;
    h.compressor = z;
    h.cache = cache;
    h.memcache = mc;
    h.metrics = m;
    h.metrics_shared = 1;
    const char *status[1] = {"status"};
    h.m.cache_lookup = dl_metric_define(m, DL_METRIC_COUNTER, "t_cache_lookup_total", NULL,
                                        status, 1, NULL, 0);
    h.m.log_dropped = dl_metric_define(m, DL_METRIC_GAUGE, "t_log_dropped", NULL, NULL, 0,
                                       NULL, 0);
    h.m.metrics_overflow = dl_metric_define(m, DL_METRIC_GAUGE, "t_overflow", NULL, NULL, 0,
                                            NULL, 0);
    h.data = &stops;
    h.stop = host_stop;
    h.env_u64 = host_env;
    h.worker_stats = host_worker_stats;

    dl_vm_t *vm = dl_vm_new(&h);
    EXPECT(vm != NULL);
    char buf[4096];
    stops = 0;
    const char *r = run_chunk(vm, &loop,
        "local core = require 'devloop.core'\n"
        "local cache = require 'devloop.cache_core'\n"
        "local metrics = require 'devloop.metrics_core'\n"
        "local ok = cache.set('k', 'v', 60)\n"
        "local v = cache.get('k')\n"
        "local id = metrics.define(metrics.COUNTER, 't_app_total', 'help', {'a'})\n"
        "metrics.update(1, id, {'x'}, 2)\n"
        "local text = metrics.render()\n"
        "local w = metrics.workers()[1]\n"
        "local figures = ('%d/%d/%d/%s'):format(#metrics.workers(), w.connections, w.requests,\n"
        "  tostring(w.lua_memory_bytes > 0))\n"
        "core.sleep(1)\n"
        "core._stop()\n"
        "result = table.concat({tostring(ok), tostring(v), cache.type(),\n"
        "  tostring(core.worker_id()), tostring(core._env('DEVLOOP_JOB_LEASE_MS')), figures,\n"
        "  text:find('t_app_total{a=\"x\"} 2', 1, true) and 'counted' or text,\n"
        "  text:find('t_cache_lookup_total{status=\"hit\"} 1', 1, true) and 'hit' or text}, ' ')\n",
        buf, sizeof(buf));
    EXPECT_STR(r, "true v memory 0 1234 1/3/40/true counted hit");
    EXPECT_EQ(stops, 1);

    dl_vm_free(vm);
    dl_cache_free(cache);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    dl_memcache_free(mc);
    dl_metrics_free(m);
    dl_compressor_free(z);
}

/* A host without a loop is a check-only VM: modules load, nothing is served. */
DL_TEST(lua_host_without_a_loop_only_checks)
{
    dl_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    dl_lua_host_t h;
    memset(&h, 0, sizeof(h));
    h.modules = dl_modules_builtin;
    h.worker_id = -1;
    h.env_u64 = host_env;
    h.cfg = &cfg;
    dl_vm_t *vm = dl_vm_new(&h);
    EXPECT(vm != NULL);
    lua_State *L = vm->L;
    EXPECT_EQ(luaL_dostring(L,
        "local core = require 'devloop.core'\n"
        "local cache = require 'devloop.cache_core'\n"
        "local metrics = require 'devloop.metrics_core'\n"
        "local ok, err = pcall(cache.get, 'k')\n"
        "return table.concat({tostring(ok), err:match('only available while serving') or err,\n"
        "  tostring(metrics.define(metrics.COUNTER, 'x_total', 'h')), cache.type(),\n"
        "  tostring(core.worker_id()), tostring(core._env('DEVLOOP_JOB_LEASE_MS'))}, ' ')"), 0);
    EXPECT_STR(lua_tostring(L, -1), "false only available while serving -1 none -1 1234");
    lua_pop(L, 1);
    dl_vm_free(vm);
}

static int open_test_module(lua_State *L)
{
    lua_pushliteral(L, "from the host");
    return 1;
}

/* The VM preloads the C modules its host lists and names none itself: with a
 * table of the host's own, devloop.core is not there. */
DL_TEST(lua_host_lists_the_modules_to_preload)
{
    dl_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    static const dl_lua_module_t mods[] = {{"test.mod", open_test_module}, {NULL, NULL}};
    dl_lua_host_t h;
    memset(&h, 0, sizeof(h));
    h.modules = mods;
    h.worker_id = -1;
    h.cfg = &cfg;
    dl_vm_t *vm = dl_vm_new(&h);
    EXPECT(vm != NULL);
    lua_State *L = vm->L;
    EXPECT_EQ(luaL_dostring(L,
        "local ok = pcall(require, 'devloop.core')\n"
        "return require('test.mod') .. ' ' .. tostring(ok)"), 0);
    EXPECT_STR(lua_tostring(L, -1), "from the host false");
    lua_pop(L, 1);
    dl_vm_free(vm);
}
