/*
 * worker.h - one event-loop thread: its uv loop, its SO_REUSEPORT listeners,
 * its connections, its Lua VM and its pooled request objects. Nothing in a
 * worker is touched by another thread except the wakeup async handle.
 */
#ifndef DL_WORKER_H
#define DL_WORKER_H

#include <uv.h>

#include "backend/backend_stats.h"
#include "backend/redis_pool.h"
#include "backend/store_guard.h"
#include "cache/mem_cache.h"
#include "cache/pubsub.h"
#include "cache/shared_dict.h"
#include "common/compress.h"
#include "core/http.h"
#include "core/request.h"
#include "http1/conn.h"
#include "http2/h2.h"
#include "common/internal.h"
#include "lua/lua_host.h"
#include "outbound/http_client.h"

struct dl_vm_s;
struct dl_tls_ctx_s;
struct dl_store_s;
struct dl_metrics_s;
struct dl_worker_s;
typedef struct dl_conn_s dl_conn_t;

#define DL_READ_BUF_SIZE 65536
#define DL_CONN_POOL_MAX 256
#define DL_INFLATE_MEMO 8
#define DL_INPROC_MAX_DEPTH 64 /* in-process requests nested on one stack */

/** The ids of the runtime's own metrics (server.c defines them). */
typedef struct {
    int requests, duration, db_duration, cache_lookup, connections, lua_memory, generation,
        reload_failures, log_dropped, metrics_overflow, tls_failures,
        conns_refused, http_client_requests, http_client_duration, http_client_pool,
        shared_bytes, shared_entries, shared_evictions, pubsub_published, pubsub_delivered,
        pubsub_dropped, pubsub_subscriptions;
} dl_worker_metric_ids_t;

/*
 * What the workers share with the runtime that runs them: its settings,
 * backends, metrics and TLS contexts, the worker list, and the two things
 * only the runtime can do (stop, report its reloads). server.c fills one in
 * its dl_runtime_t before the first worker starts; a worker knows the
 * runtime only through it, so the worker depends on nothing above it.
 */
typedef struct dl_worker_shared_s {
    const dl_config_t *cfg;      /* the runtime's settings */
    struct dl_worker_s *workers; /* every worker (each reads the others' figures) */
    int n_workers;               /* workers started so far */
    struct dl_tls_ctx_s *tls[DL_MAX_LISTEN]; /* TLS listeners' contexts, else NULL */
    int https_port;       /* the first TLS listener's port (HTTPS redirects) */
    char *hsts;
    char *canonical_host; /* DEVLOOP_CANONICAL_HOST (--canonical-host), or NULL */
    int canonical_port;   /* its port, -1 when it has none (the TLS listener's is used) */
    dl_proxy_list_t trusted; /* DEVLOOP_TRUSTED_PROXIES, parsed once at start */
    char *upload_dir;     /* APP_DIR/data/.uploads, made at start */
    int has_redis;               /* REDIS_URL (or REDIS_HOST...) given */
    dl_redis_config_t redis_cfg;
    dl_http_client_cfg_t http_client; /* outbound HTTP and cosockets, per worker */
    dl_h2_metrics_t h2_metrics;  /* HTTP/2's own counters (http2/h2.h), lent to sessions */
    dl_memcache_t *memcache;     /* the embedded cache, shared by workers */
    dl_shdict_t *shared_dict;    /* api.shared (DEVLOOP_SHARED_MAX), outlives reloads */
    dl_pubsub_t *pubsub;         /* api.pubsub's hub, outlives reloads */
    struct dl_store_s *store;    /* documents: SQLite file or MongoDB, shared by workers */
    dl_store_guard_t store_guard; /* its outcomes and (MongoDB) circuit breaker */
    int has_store_guard;
    char *db_path;               /* the SQLite file (NULL with MongoDB) */
    struct dl_metrics_s *metrics;
    dl_worker_metric_ids_t m;    /* ids of the runtime's own metrics */
    dl_backend_stats_t backends; /* per-backend outcomes, up and breaker gauges */
    double start_time;           /* Unix time at start */
    int access_log;              /* DEVLOOP_ACCESS_LOG */
    int http_metrics;            /* DEVLOOP_METRICS: per-request metrics (default on) */

    /* the runtime's side, each given arg */
    void *arg;
    /** Asks the runtime to stop (any thread). */
    void (*stop)(void *arg);
    /** The outcome of the reloads so far. */
    void (*reload_status)(void *arg, dl_reload_status_t *out);
} dl_worker_shared_t;

typedef struct dl_worker_s {
    dl_worker_shared_t *shared; /* the runtime's, read by every worker */
    const dl_config_t *cfg;
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    int thread_started;
    int thread_done; /* set (atomically) as worker_main returns */
    int listen_fds[DL_MAX_LISTEN];
    uv_tcp_t listeners[DL_MAX_LISTEN];
    int n_listeners;
    uv_async_t wakeup;   /* another thread asked for ops (DL_WORKER_OP_*) */
    int ops;
    uv_mutex_t jobs_lock;     /* in-process requests from other threads */
    struct dl_worker_job_s *jobs;
    int jobs_closed;          /* the worker stopped: no more jobs */
    struct dl_inproc_s *inproc; /* in-process requests (inproc/inproc.h) */
    uv_timer_t sweep;    /* timeouts of every connection, checked together */
    uv_timer_t grace;    /* bounds the graceful stop */
    int stopping;

    struct dl_vm_s *vm;
    dl_lua_host_t host;  /* what the VM is given (worker.c fill_host) */
    dl_core_ctx_t core;  /* what the request core borrows (request.h) */
    dl_http1_host_t http1; /* what its HTTP/1 connections borrow (conn.h) */
    dl_list_t conns;     /* open connections (dl_conn_t.link), newest first */
    int n_conns;
    dl_list_t free_conns; /* pooled connection objects (DL_CONN_POOL_MAX) */
    int n_free_conns;
    dl_req_t *free_reqs; /* pooled request objects, buffers kept */
    int n_free_reqs;
    dl_compressor_t *compressor;
    /* the last few stored-gzip bodies inflated for clients without gzip,
     * remembered by their compressed bytes (content-addressed: never stale) */
    struct {
        uint64_t hash;
        dl_buf_t gz, plain;
    } inflated[DL_INFLATE_MEMO];
    int inflated_next;
    struct dl_cache_s *cache;       /* api.cache and cached routes */
    struct dl_redis_pool_s *redis;  /* NULL without REDIS_URL */
    struct dl_http_client_s *http;  /* outbound connections of handlers */
    uint64_t prng[4];
    long date_sec;
    char date[32];
    uint64_t n_requests;
    uint64_t shared_evictions; /* worker 0: api.shared evictions already counted */
    dl_pubsub_stats_t pubsub_seen; /* worker 0: api.pubsub's counters already counted */
    dl_pubsub_inbox_t *pubsub_inbox; /* this worker's, in shared->pubsub (owned by the hub) */
    int inproc_depth;               /* in-process requests running on the stack now */
    char read_buf[DL_READ_BUF_SIZE];
} dl_worker_t;

/** Prepares a worker (loop, VM with the app loaded); run it with dl_worker_start(). */
int dl_worker_init(dl_worker_t *w, dl_worker_shared_t *shared, int id, char *err, size_t errlen);
/** Starts the worker's thread. */
int dl_worker_start(dl_worker_t *w);
enum {
    DL_WORKER_OP_STOP = 1,
    DL_WORKER_OP_RELOAD = 2,
    DL_WORKER_OP_JOBS = 4,
    DL_WORKER_OP_PUBSUB = 8 /* an api.pubsub subscription has messages */
};

/** Work another thread hands to a worker: run(w, job) on the worker's thread,
 * or run(NULL, job) when the worker stopped before it could run it. */
typedef struct dl_worker_job_s {
    void (*run)(dl_worker_t *w, struct dl_worker_job_s *job);
    struct dl_worker_job_s *next;
} dl_worker_job_t;
/** Queues job for w's thread (any thread; the job's memory is the caller's).
 * Returns 0, or DL_ECANCELED once the worker has stopped (job not queued). */
int dl_worker_post(dl_worker_t *w, dl_worker_job_t *job);

/** Asks the worker to stop gracefully (any thread). */
void dl_worker_stop(dl_worker_t *w);
/** Starts a worker without a thread: the caller runs w->loop (host-loop mode). */
int dl_worker_start_on_caller(dl_worker_t *w);
/** Asks the worker to load the app again as a new generation (any thread). */
void dl_worker_reload(dl_worker_t *w);
/** Joins the thread and frees what the worker owns. */
void dl_worker_join(dl_worker_t *w);

/** What every VM is given, served or only checked: the devloop.* modules,
 * the embedder's and the settings table (host's modules, preload and
 * env_u64); the rest is zeroed. */
void dl_worker_host_base(dl_lua_host_t *host);

/** The cached Date header value, refreshed once a second. */
const char *dl_worker_date(dl_worker_t *w);
/** Takes a request object from the pool (zeroed state, buffers kept). */
dl_req_t *dl_worker_req_acquire(dl_worker_t *w);
/** Returns a request object to the pool. */
void dl_worker_req_release(dl_worker_t *w, dl_req_t *req);
/**
 * The inflated form of a stored gzip body (cache hits for clients without
 * gzip). Valid until the next call. Returns 0 or an error from gunzip.
 */
int dl_worker_inflate(dl_worker_t *w, const char *gz, size_t len, const char **plain,
                      size_t *plain_len);

/** Counts an answered request in the metrics (and the access log when on). */
void dl_worker_record(dl_worker_t *w, dl_req_t *r, int status, size_t bytes);

/** Called by conn.c when a connection closes, to end a graceful stop. */
void dl_worker_conn_closed(dl_worker_t *w);

#endif
