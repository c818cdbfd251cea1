/*
 * lua_host.h - what a VM is given by whoever runs it: the loop, the backends,
 * the metrics, and a few functions only the runtime can carry out (stop it,
 * report reloads, count another worker). runtime/server/worker.c fills one
 * per worker and server.c one for a check-only load; a unit test can fill
 * its own, so the Lua layer runs without the server layer (the loop
 * and the callbacks a binding needs, nothing more).
 */
#ifndef DL_LUA_HOST_H
#define DL_LUA_HOST_H

#include <lua.h>
#include <uv.h>

#include "backend/store_guard.h"
#include "common/compress.h"
#include "common/internal.h"

struct dl_cache_s;
struct dl_redis_pool_s;
struct dl_store_s;
struct dl_metrics_s;
struct dl_memcache_s;
struct dl_core_ctx_s;
struct dl_http_client_s;
struct dl_shdict_s;
struct dl_pubsub_s;
struct dl_pubsub_inbox_s;

/** One worker's figures for metrics_core.workers(). */
typedef struct {
    double connections;
    double lua_memory_bytes; /* ignored for the asking worker: its own VM counts */
    double requests;
} dl_lua_worker_stats_t;

/** A C module for package.preload: require(name) calls open. */
typedef struct {
    const char *name;
    lua_CFunction open;
} dl_lua_module_t;

/** The ids of the runtime's own metrics the bindings update. */
typedef struct {
    int cache_lookup, db_duration, log_dropped, metrics_overflow, connections, lua_memory;
    int http_client_requests, http_client_duration, http_client_pool;
} dl_lua_metric_ids_t;

typedef struct dl_lua_host_s {
    /* while serving; a check-only VM has loop NULL and the rest 0 */
    uv_loop_t *loop;
    int worker_id;                 /* -1 outside a worker */
    const int *n_workers;          /* workers started so far (the runtime's count) */
    const dl_config_t *cfg;        /* the runtime's settings */
    dl_compressor_t *compressor;
    struct dl_cache_s *cache;      /* api.cache and cached routes */
    struct dl_redis_pool_s *redis; /* NULL without REDIS_URL */
    struct dl_http_client_s *http; /* api.http and api.socket's connections, or NULL */
    struct dl_store_s *store;      /* documents, shared by workers, or NULL */
    dl_store_guard_t *store_guard; /* its outcomes and breaker, or NULL */
    struct dl_memcache_s *memcache; /* the embedded cache, or NULL (Redis) */
    struct dl_shdict_s *shared_dict; /* api.shared, the runtime's (outlives reloads), or NULL */
    struct dl_pubsub_s *pubsub;      /* api.pubsub's hub, the runtime's, or NULL */
    struct dl_pubsub_inbox_s *pubsub_inbox; /* this worker's inbox in it, or NULL */
    const char *db_path;           /* the SQLite file, or NULL */
    double start_time;             /* Unix time the runtime started */
    struct dl_core_ctx_s *core;    /* the worker's request core (in-process requests) */
    struct dl_metrics_s *metrics;  /* NULL: nothing is counted */
    int metrics_shared;            /* the slot every worker may set (app gauges) */
    dl_lua_metric_ids_t m;

    /* the runtime's side; each gets data. NULL where not offered. */
    void *data;
    /** Asks the runtime to stop (core._stop). */
    void (*stop)(void *data);
    /** The outcome of the reloads so far. */
    void (*reload_status)(void *data, dl_reload_status_t *out);
    /** Worker i's figures (0 <= i < n_workers). */
    void (*worker_stats)(void *data, int i, dl_lua_worker_stats_t *out);

    /* every VM's, served or checked */
    /** The C modules to preload, ended by {NULL, NULL}: the devloop.* ones
     * (bindings/dl_modules.h's dl_modules_builtin) where scripts need them;
     * NULL: none. The VM knows no binding by name. */
    const dl_lua_module_t *modules;
    /** Adds the embedder's modules (dl_add_lua_module) to package.preload. */
    void (*preload)(lua_State *L);
    /** A numeric setting of the runtime's table (core._env): 0 and *out, or
     * -1 when name is not one of them. */
    int (*env_u64)(const char *name, uint64_t *out);
} dl_lua_host_t;

/** The host of L's VM while it serves (its loop set), else NULL. */
const dl_lua_host_t *dl_lua_host(lua_State *L);

#endif /* DL_LUA_HOST_H */
