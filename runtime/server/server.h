/*
 * server.h - the runtime: configuration, listening sockets, the workers and
 * the main thread's signal handling.
 */
#ifndef DL_SERVER_H
#define DL_SERVER_H

#include <sys/socket.h>
#include <lua.h>
#include <uv.h>

#include "backend/backend_stats.h"
#include "common/internal.h"
#include "cache/mem_cache.h"
#include "backend/redis_pool.h"
#include "backend/store_guard.h"
#include "server/worker.h"

struct dl_runtime_s {
    dl_config_t cfg;
    char *app_dir;
    char *listen[DL_MAX_LISTEN];
    struct dl_tls_ctx_s *tls[DL_MAX_LISTEN]; /* TLS listeners' contexts, else NULL */
    int https_port;       /* the first TLS listener's port (HTTPS redirects) */
    char *hsts;
    char *pid_file_opt;   /* cfg.pid_file's copy (NULL: the default) */
    char *canonical_host; /* DEVLOOP_CANONICAL_HOST (--canonical-host) for HTTPS redirects, or NULL */
    int canonical_port;   /* its port, -1 when it has none (the TLS listener's is used) */
    char *upload_dir;     /* APP_DIR/data/.uploads, made at start */
    dl_worker_t *workers;
    int n_workers;
    uv_loop_t loop;       /* main thread: signals and stop requests */
    uv_async_t stop_async;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_async_t reload_async;
    struct dl_watch_s *watch;
    uv_mutex_t status_lock;
    dl_reload_status_t status;
    char *pid_file;              /* the pid file we hold (pid_fd's lock), else NULL */
    int pid_fd;
    char pid_note[1400];         /* a stale pid file replaced, logged once the logger runs */
    struct sockaddr_storage laddr[DL_MAX_LISTEN]; /* each listener's address */
    socklen_t laddr_len[DL_MAX_LISTEN];
    int first_fd[DL_MAX_LISTEN]; /* worker 0's socket, bound by dl_runtime_new(); -1 after */
    int lock_fd[DL_MAX_LISTEN];  /* the address's lock for the runtime's life; -1 none */
    uv_poll_t lock_poll[DL_MAX_LISTEN];
    int n_lock_polls;
    int has_redis;               /* REDIS_URL (or REDIS_HOST...) given */
    dl_redis_config_t redis_cfg;
    dl_memcache_t *memcache;     /* the embedded cache, shared by workers */
    struct dl_store_s *store;    /* documents: SQLite file or MongoDB, shared by workers */
    dl_store_guard_t store_guard; /* its outcomes and (MongoDB) circuit breaker */
    int has_store_guard;
    char *db_path;               /* the SQLite file (NULL with MongoDB) */
    struct dl_metrics_s *metrics;
    struct {
        int requests, duration, db_duration, cache_lookup, connections, lua_memory, generation,
            reload_failures, log_dropped, metrics_overflow, h2_defences, tls_failures,
            conns_refused;
    } m;                         /* ids of the runtime's own metrics */
    dl_backend_stats_t backends; /* per-backend outcomes, up and breaker gauges */
    double start_time;           /* Unix time at start */
    int access_log;              /* DEVLOOP_ACCESS_LOG */
    int http_metrics;            /* DEVLOOP_METRICS: per-request metrics (default on) */
    int loop_ready;
    int serving;                 /* workers run: in-process requests are taken */
    void *host_embed;            /* host-loop mode (dl_runtime_attach) */
    int stop_requested;
    uint64_t stop_started; /* uv_hrtime() when the workers were told to stop */
    int handle_signals;
};

#endif
