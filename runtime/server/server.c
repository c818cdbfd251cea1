/*
 * server.c - the runtime object behind devloop.h (its settings are config.c's):
 * binding the listening sockets (one per worker and address, SO_REUSEPORT),
 * starting and joining the workers, and the main thread's loop that turns
 * SIGTERM/SIGINT into a graceful stop.
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/config.h"
#include "http1/conn.h"
#include "common/log.h"
#include "lua/lua_vm.h"
#include "common/metrics.h"
#include "store/mongo_store.h"
#include "store/store.h"
#include "transport/tls.h"
#include "core/upload.h"
#include "server/watch.h"

/* ------------------------------------------------------------------------ */
/* Listening addresses. Inside one process every worker binds its own socket
 * with SO_REUSEPORT (the kernel spreads connections over them). Between
 * processes an address is exclusive: SO_REUSEPORT would let a second process
 * of the same user join the group and silently take part of the traffic, so
 * each address is guarded by a lock taken before binding, held for the
 * runtime's life, and released by the kernel even on kill -9: an abstract
 * Unix socket named after the address (no file to go stale). */
/* ------------------------------------------------------------------------ */

#define LOCK_PREFIX "devloop/listen/"

/* spec's socket address, and its canonical text ("127.0.0.1:8080",
 * "[::1]:8080") naming the lock */
static int listen_sockaddr(const char *spec, struct sockaddr_storage *ss, socklen_t *slen,
                           char *canon, size_t canonlen, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (dl_parse_listen(spec, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "invalid listen address '%s' (want HOST:PORT)\n", spec);
        return DL_EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *slen = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *slen = sizeof(*in6);
    } else {
        snprintf(err, errlen, "invalid listen host '%s' (want an IP address)\n", host);
        return DL_EINVAL;
    }
    char a[INET6_ADDRSTRLEN];
    inet_ntop(ss->ss_family, ss->ss_family == AF_INET ? (void *)&in4->sin_addr
                                                      : (void *)&in6->sin6_addr, a, sizeof(a));
    snprintf(canon, canonlen, ss->ss_family == AF_INET ? "%s:%d" : "[%s]:%d", a, port);
    return 0;
}

static int sockaddr_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A socket bound to ss; with reuseport, one of this process's group. */
static int bind_socket(const struct sockaddr_storage *ss, socklen_t slen, int reuseport,
                       int *fd_out)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, slen) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *fd_out = fd;
    return 0;
}

static socklen_t lock_name(struct sockaddr_un *un, const char *canon)
{
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    /* sun_path[0] == '\0': the abstract namespace */
    int n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, LOCK_PREFIX "%s", canon);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* The pid of the process holding canon's lock, 0 when none (or unknown). */
static int lock_holder(const char *canon)
{
    struct sockaddr_un un;
    socklen_t len = lock_name(&un, canon);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int pid = 0;
    if (fd < 0)
        return 0;
    if (connect(fd, (struct sockaddr *)&un, len) == 0) {
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0)
            pid = (int)cr.pid;
    }
    close(fd);
    return pid;
}

/* Takes canon's lock: 0 and *fd_out, or DL_EADDRINUSE with the holder's pid
 * (0 if unknown). The lock listens so that a process refused can learn the
 * holder's pid (SO_PEERCRED); the main loop accepts and closes those. */
static int lock_take(const char *canon, int *fd_out, int *holder)
{
    struct sockaddr_un un;
    socklen_t len = lock_name(&un, canon);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    *holder = 0;
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&un, len) != 0) {
        int e = errno;
        close(fd);
        if (e != EADDRINUSE)
            return -e;
        *holder = lock_holder(canon);
        return DL_EADDRINUSE;
    }
    listen(fd, 64);
    *fd_out = fd;
    return 0;
}

/* Another devloop on port at an address that overlaps ours (the wildcard
 * covers every address; the loopback is the usual specific one): its pid,
 * and that address in who. Locks are found by name, so only these two. */
static int overlapping_holder(const struct sockaddr_storage *ss, const char *canon, char *who,
                              size_t wholen)
{
    int v4 = ss->ss_family == AF_INET;
    const char *cand[] = {v4 ? "0.0.0.0" : "[::]", v4 ? "127.0.0.1" : "[::1]"};
    for (int i = 0; i < 2; i++) {
        snprintf(who, wholen, "%s:%d", cand[i], sockaddr_port(ss));
        int pid = strcmp(who, canon) == 0 ? 0 : lock_holder(who);
        if (pid > 0 && pid != (int)getpid())
            return pid;
    }
    return 0;
}

static void addr_in_use(const char *spec, const struct sockaddr_storage *ss, const char *canon,
                        int holder, char *err, size_t errlen)
{
    char who[64];
    if (holder == 0 && (holder = overlapping_holder(ss, canon, who, sizeof(who))) > 0)
        snprintf(err, errlen, "cannot listen on %s: address in use by another devloop "
                              "(pid %d, listening on %s); stop it or choose another --listen\n",
                 spec, holder, who);
    else if (holder > 0)
        snprintf(err, errlen, "cannot listen on %s: address in use by another devloop "
                              "(pid %d); stop it or choose another --listen\n", spec, holder);
    else
        snprintf(err, errlen, "cannot listen on %s: address in use by another process\n", spec);
}

/*
 * For each listening address: its lock, a check that no other socket holds
 * it (a bind without SO_REUSEPORT fails even against another process's
 * SO_REUSEPORT group or a wildcard covering it), then worker 0's socket.
 * Port 0 gets its port from the kernel here and every worker binds that one.
 */
static int claim_listeners(dl_runtime_t *rt, char *err, size_t errlen)
{
    for (int l = 0; l < rt->cfg.n_listen; l++) {
        const char *spec = rt->listen[l];
        struct sockaddr_storage *ss = &rt->laddr[l];
        char canon[80];
        int rc = listen_sockaddr(spec, ss, &rt->laddr_len[l], canon, sizeof(canon), err,
                                 errlen);
        if (rc != 0)
            return rc;
        for (int k = 0; k < l; k++)
            if (rt->laddr_len[k] == rt->laddr_len[l] &&
                memcmp(&rt->laddr[k], ss, rt->laddr_len[l]) == 0 && sockaddr_port(ss) != 0) {
                snprintf(err, errlen, "--listen %s is given twice (as %s)\n", spec,
                         rt->listen[k]);
                return DL_EINVAL;
            }
        int holder = 0, probe;
        if (sockaddr_port(ss) != 0) {
            rc = lock_take(canon, &rt->lock_fd[l], &holder);
            if (rc == 0) {
                rc = bind_socket(ss, rt->laddr_len[l], 0, &probe);
                if (rc == 0)
                    close(probe);
            }
            if (rc == 0)
                rc = bind_socket(ss, rt->laddr_len[l], 1, &rt->first_fd[l]);
        } else {
            rc = bind_socket(ss, rt->laddr_len[l], 1, &rt->first_fd[l]);
            if (rc == 0) {
                /* the kernel's port, for the other workers, the log and the lock */
                socklen_t len = rt->laddr_len[l];
                getsockname(rt->first_fd[l], (struct sockaddr *)ss, &len);
                char host[256], shown[300];
                int port;
                dl_parse_listen(spec, host, sizeof(host), &port);
                snprintf(shown, sizeof(shown), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                         sockaddr_port(ss));
                listen_sockaddr(shown, ss, &len, canon, sizeof(canon), err, errlen);
                dl_free(rt->listen[l]);
                rt->listen[l] = dl_strdup(shown);
                rt->cfg.listen[l] = spec = rt->listen[l];
                rc = lock_take(canon, &rt->lock_fd[l], &holder);
            }
        }
        if (rc == DL_EADDRINUSE) {
            addr_in_use(spec, ss, canon, holder, err, errlen);
            return rc;
        }
        if (rc != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s\n", spec, strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* Worker w's socket for listener l: worker 0 takes the one claimed. */
static int worker_socket(dl_runtime_t *rt, int l, int *fd_out, char *err, size_t errlen)
{
    if (rt->first_fd[l] >= 0) {
        *fd_out = rt->first_fd[l];
        rt->first_fd[l] = -1;
        return 0;
    }
    int rc = bind_socket(&rt->laddr[l], rt->laddr_len[l], 1, fd_out);
    if (rc != 0)
        snprintf(err, errlen, "cannot listen on %s: %s", rt->listen[l], strerror(-rc));
    return rc;
}

/* The runtime's own metrics (issue: observability). */
static int define_metrics(dl_runtime_t *rt)
{
    static const double http_buckets[] = {0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10};
    static const double db_buckets[] = {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
    static const char *const http_labels[] = {"method", "route", "status_code", "protocol"};
    static const char *const db_labels[] = {"operation", "collection"};
    static const char *const status_label[] = {"status"};
    static const char *const worker_label[] = {"worker"};
    static const char *const reason_label[] = {"reason"};
    dl_worker_metric_ids_t *id = &rt->shared.m;
    dl_metrics_t *m = rt->shared.metrics = dl_metrics_new(rt->cfg.workers);
    if (m == NULL)
        return DL_ENOMEM;
    id->requests = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total",
                                    "HTTP requests answered", http_labels, 4, NULL, 0);
    id->duration = dl_metric_define(m, DL_METRIC_HISTOGRAM, "http_request_duration_seconds",
                                    "Time from the first byte of a request to its answer",
                                    http_labels, 3, http_buckets, 8);
    id->db_duration = dl_metric_define(m, DL_METRIC_HISTOGRAM,
                                       "database_operation_duration_seconds",
                                       "Document store operations, queueing included",
                                       db_labels, 2, db_buckets, 9);
    id->cache_lookup = dl_metric_define(m, DL_METRIC_COUNTER, "cache_lookup_total",
                                        "Cache lookups by outcome", status_label, 1, NULL, 0);
    id->connections = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_open_connections",
                                       "Open client connections", worker_label, 1, NULL, 0);
    id->lua_memory = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_lua_memory_bytes",
                                      "Memory of each worker's Lua state", worker_label, 1,
                                      NULL, 0);
    id->generation = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_generation",
                                      "Current app generation (1 + successful reloads)", NULL,
                                      0, NULL, 0);
    id->reload_failures = dl_metric_define(m, DL_METRIC_COUNTER,
                                           "devloop_reload_failures_total",
                                           "Reloads refused because a script failed", NULL, 0,
                                           NULL, 0);
    id->log_dropped = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_log_dropped_records",
                                       "Log records dropped because a ring was full", NULL, 0,
                                       NULL, 0);
    id->metrics_overflow = dl_metric_define(m, DL_METRIC_GAUGE,
                                            "devloop_metrics_series_overflow",
                                            "Updates dropped by the per-metric series cap",
                                            NULL, 0, NULL, 0);
    dl_h2_metrics_define(m, &rt->shared.h2_metrics);
    id->tls_failures = dl_metric_define(m, DL_METRIC_COUNTER,
                                        "devloop_tls_failed_handshakes_total",
                                        "TLS connections that ended before or in the handshake "
                                        "(plain_http, protocol, timeout)",
                                        reason_label, 1, NULL, 0);
    id->conns_refused = dl_metric_define(m, DL_METRIC_COUNTER,
                                         "devloop_connections_refused_total",
                                         "Connections closed at accept because the worker "
                                         "had DEVLOOP_MAX_CONNECTIONS open",
                                         NULL, 0, NULL, 0);
    static const char *const client_labels[] = {"host", "status_code"};
    static const char *const state_label[] = {"state"};
    id->http_client_requests = dl_metric_define(m, DL_METRIC_COUNTER, "http_client_requests_total",
                                                "Outbound HTTP requests by origin and status "
                                                "(or error kind)", client_labels, 2, NULL, 0);
    id->http_client_duration = dl_metric_define(m, DL_METRIC_HISTOGRAM,
                                                "http_client_request_duration_seconds",
                                                "Outbound HTTP requests, from the call to the "
                                                "response (headers when streamed)",
                                                client_labels, 1, http_buckets, 8);
    id->http_client_pool = dl_metric_define(m, DL_METRIC_GAUGE, "http_client_pool_connections",
                                            "Outbound keep-alive connections (idle, busy) and "
                                            "requests waiting for one", state_label, 1, NULL, 0);
    id->shared_bytes = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_shared_dict_bytes",
                                        "Bytes api.shared holds (keys, values, entry headers)",
                                        NULL, 0, NULL, 0);
    id->shared_entries = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_shared_dict_entries",
                                          "Entries api.shared holds (expired ones not yet "
                                          "dropped included)", NULL, 0, NULL, 0);
    id->shared_evictions = dl_metric_define(m, DL_METRIC_COUNTER,
                                            "devloop_shared_dict_evictions_total",
                                            "Live api.shared entries dropped to make room "
                                            "under DEVLOOP_SHARED_MAX", NULL, 0, NULL, 0);
    if (id->shared_bytes < 0 || id->shared_entries < 0 || id->shared_evictions < 0)
        return DL_EINVAL;
    id->pubsub_published = dl_metric_define(m, DL_METRIC_COUNTER, "pubsub_published_total",
                                            "Messages published with api.pubsub.publish",
                                            NULL, 0, NULL, 0);
    id->pubsub_delivered = dl_metric_define(m, DL_METRIC_COUNTER, "pubsub_delivered_total",
                                            "Messages handed to api.pubsub subscribers",
                                            NULL, 0, NULL, 0);
    id->pubsub_dropped = dl_metric_define(m, DL_METRIC_COUNTER, "pubsub_dropped_total",
                                          "Messages dropped for a subscriber whose queue "
                                          "(DEVLOOP_PUBSUB_QUEUE) was full",
                                          NULL, 0, NULL, 0);
    id->pubsub_subscriptions = dl_metric_define(m, DL_METRIC_GAUGE, "pubsub_subscriptions",
                                                "api.pubsub subscriptions, every worker's",
                                                NULL, 0, NULL, 0);
    if (id->pubsub_published < 0 || id->pubsub_delivered < 0 || id->pubsub_dropped < 0 ||
        id->pubsub_subscriptions < 0)
        return DL_EINVAL;
    if (rt->shared.h2_metrics.defences < 0 || id->tls_failures < 0 || id->conns_refused < 0 ||
        id->http_client_requests < 0 || id->http_client_duration < 0 || id->http_client_pool < 0)
        return DL_EINVAL;
    int rc = dl_backend_stats_init(&rt->shared.backends, m, rt->cfg.workers);
    if (rc < 0)
        return rc;
    if (id->requests < 0 || id->duration < 0 || id->db_duration < 0 || id->cache_lookup < 0 ||
        id->connections < 0 || id->lua_memory < 0 || id->generation < 0 ||
        id->reload_failures < 0 || id->log_dropped < 0 || id->metrics_overflow < 0)
        return DL_EINVAL;
    dl_metric_set(m, rt->cfg.workers, id->generation, NULL, 1);
    return 0;
}

/* TLS listeners get their contexts now, so a bad certificate stops start-up
 * with the file's name; the paths are copied by the context, not kept here. */
static int load_tls(dl_runtime_t *rt, char *errbuf, size_t errlen)
{
    int rc = dl_config_load_tls(&rt->cfg, rt->shared.tls, &rt->shared.https_port, errbuf, errlen);
    for (int i = 0; i < rt->cfg.n_listen; i++) {
        memset(rt->cfg.listen_opts[i].tls_cert, 0, sizeof(rt->cfg.listen_opts[i].tls_cert));
        memset(rt->cfg.listen_opts[i].tls_key, 0, sizeof(rt->cfg.listen_opts[i].tls_key));
    }
    return rc == 0 ? 0 : -1;
}

/* The host HTTPS redirects name instead of the client's Host
 * (DEVLOOP_CANONICAL_HOST, which --canonical-host sets): host[:port] as
 * conn.c's redirect takes it, checked now so a typo stops start-up; and the
 * trusted proxies, which decide the client's address. */
static int load_canonical_host(dl_runtime_t *rt, char *errbuf, size_t errlen)
{
    const char *v;
    if (dl_config_canonical_host(&v, &rt->shared.canonical_port, errbuf, errlen) != 0)
        return -1;
    /* the proxies whose forwarding headers are believed: read once, for
     * every worker (dl_config_check has said why a bad list is refused) */
    if (dl_config_trusted_proxies(&rt->shared.trusted, errbuf, errlen) != 0)
        return -1;
    if (v == NULL)
        return 0;
    rt->shared.canonical_host = dl_strdup(v);
    if (rt->shared.canonical_host == NULL) {
        snprintf(errbuf, errlen, "out of memory\n");
        return -1;
    }
    return 0;
}

/* SIGHUP: certificates are read again; a failure keeps the loaded ones. */
static void reload_tls(dl_runtime_t *rt)
{
    for (int i = 0; i < rt->cfg.n_listen; i++) {
        char err[1400];
        if (rt->shared.tls[i] && dl_tls_ctx_reload(rt->shared.tls[i], err, sizeof(err)) != 0)
            dl_log(DL_LOG_ERROR, "%s: certificates not reloaded, the loaded ones stay: %s",
                   rt->listen[i], err);
        else if (rt->shared.tls[i])
            dl_log(DL_LOG_INFO, "%s: certificates reloaded", rt->listen[i]);
    }
}

/* Connections past the open-file limit are reset by the kernel's EMFILE
 * path, before the connection cap could answer them 503: raise the soft limit
 * to what the cap needs (up to the hard limit), and say so when it cannot. */
static void check_fd_limit(const dl_config_t *cfg)
{
    struct rlimit rl;
    if (cfg->max_connections <= 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->workers * (rlim_t)cfg->max_connections + 256;
    if (rl.rlim_cur >= want)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = was;
    if (rl.rlim_cur < want)
        dl_log(DL_LOG_WARN, "open-file limit %llu is below what %d workers x "
                            "DEVLOOP_MAX_CONNECTIONS %d need (%llu): connections past it are "
                            "reset, not answered 503; raise the limit (ulimit -n) or lower "
                            "DEVLOOP_MAX_CONNECTIONS",
               (unsigned long long)rl.rlim_cur, cfg->workers, cfg->max_connections,
               (unsigned long long)want);
}

/* The runtime's side of what the workers share (worker.h): a Lua host's
 * core._stop and reload status reach the runtime through these. */
static void shared_stop(void *arg)
{
    dl_runtime_stop(arg);
}

static void shared_reload_status(void *arg, dl_reload_status_t *out)
{
    dl_runtime_reload_status(arg, out);
}

int dl_runtime_new(const dl_config_t *cfg, dl_runtime_t **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (cfg == NULL || cfg->app_dir == NULL) {
        snprintf(errbuf, errlen, "no app folder given");
        return DL_EINVAL;
    }
    /* every setting parses, or start-up stops naming it, before anything opens */
    if (dl_config_check(cfg, errbuf, errlen) != 0)
        return DL_EINVAL;
    dl_set_allocator(cfg->malloc_fn, cfg->realloc_fn, cfg->free_fn);
    /* a test's fake clock (t.advance) starts at zero in each runtime */
    __atomic_store_n(&dl_clock_skew_ms, 0, __ATOMIC_RELAXED);
    dl_runtime_t *rt = dl_calloc(1, sizeof(*rt));
    if (rt == NULL)
        return DL_ENOMEM;
    rt->cfg = *cfg;
    rt->shared.cfg = &rt->cfg;
    rt->shared.arg = rt;
    rt->shared.stop = shared_stop;
    rt->shared.reload_status = shared_reload_status;
    rt->pid_fd = -1;
    for (int i = 0; i < DL_MAX_LISTEN; i++)
        rt->first_fd[i] = rt->lock_fd[i] = -1;
    rt->app_dir = dl_strdup(cfg->app_dir);
    rt->cfg.app_dir = rt->app_dir;
    if (rt->cfg.no_listen) {
        rt->cfg.n_listen = 0;
    } else if (rt->cfg.n_listen == 0) {
        char def[32];
        snprintf(def, sizeof(def), "127.0.0.1:%d", (int)dl_env_u64("PORT"));
        rt->listen[0] = dl_strdup(def);
        rt->cfg.n_listen = 1;
    } else {
        for (int i = 0; i < rt->cfg.n_listen && i < DL_MAX_LISTEN; i++)
            rt->listen[i] = dl_strdup(cfg->listen[i]);
    }
    for (int i = 0; i < rt->cfg.n_listen; i++)
        rt->cfg.listen[i] = rt->listen[i];
    /* an address another process holds stops start-up before anything is
     * opened (store, cache, logs, pid file) */
    int lrc = claim_listeners(rt, errbuf, errlen);
    if (lrc != 0) {
        dl_runtime_free(rt);
        return lrc;
    }
    rt->shared.hsts = dl_strdup(cfg->hsts ? cfg->hsts : "");
    char updir[1200];
    snprintf(updir, sizeof(updir), "%s/data/.uploads", rt->app_dir);
    rt->shared.upload_dir = dl_strdup(updir);
    rt->cfg.hsts = rt->shared.hsts;
    /* read when the runtime runs, long after the caller's string may be gone */
    rt->pid_file_opt = cfg->pid_file ? dl_strdup(cfg->pid_file) : NULL;
    rt->cfg.pid_file = rt->pid_file_opt;
    if (load_tls(rt, errbuf, errlen) != 0 || load_canonical_host(rt, errbuf, errlen) != 0) {
        dl_runtime_free(rt);
        return DL_EINVAL;
    }
    if (rt->cfg.workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        rt->cfg.workers = n > 0 ? (int)n : 1;
    }
    if (rt->cfg.workers > 256)
        rt->cfg.workers = 256;
    dl_log_min_level = rt->cfg.log_level;
    check_fd_limit(&rt->cfg);
    uv_mutex_init(&rt->status_lock);
    rt->status.generation = 1;
    rt->status.last_ok = 1;

    char rerr[256];
    int rc = dl_redis_config_from_env(&rt->shared.redis_cfg, rerr, sizeof(rerr));
    if (rc < 0) {
        snprintf(errbuf, errlen, "%s\n", rerr); /* the message names the variable */
        dl_runtime_free(rt);
        return DL_EINVAL;
    }
    rt->shared.has_redis = rc == 1;
    dl_http_client_cfg_t *hcfg = &rt->shared.http_client;
    hcfg->pool.max_idle = (int)dl_env_u64("DEVLOOP_HTTP_POOL_SIZE");
    hcfg->pool.max_conns = (int)dl_env_u64("DEVLOOP_HTTP_MAX_CONNS");
    hcfg->pool.max_waiting = (int)dl_env_u64("DEVLOOP_HTTP_BACKLOG");
    hcfg->pool.idle_ms = dl_env_u64("DEVLOOP_HTTP_IDLE_MS");
    hcfg->dns_ttl_ms = dl_env_u64("DEVLOOP_DNS_TTL_MS");
    hcfg->dns_max_names = 256;
    rt->shared.shared_dict = dl_shdict_new(dl_env_u64("DEVLOOP_SHARED_MAX"));
    dl_pubsub_limits_t plim = {dl_env_u64("DEVLOOP_PUBSUB_MAX_MESSAGE"),
                               dl_env_u64("DEVLOOP_PUBSUB_QUEUE"),
                               dl_env_u64("DEVLOOP_PUBSUB_MAX_SUBS")};
    rt->shared.pubsub = dl_pubsub_new(&plim);
    if (rt->shared.shared_dict == NULL || rt->shared.pubsub == NULL) {
        dl_runtime_free(rt);
        return DL_ENOMEM;
    }
    if (!rt->shared.has_redis) {
        size_t cap = dl_env_u64("DEVLOOP_CACHE_MAX_BYTES");
        rt->shared.memcache = dl_memcache_new(cap, 16);
        if (rt->shared.memcache == NULL) {
            dl_runtime_free(rt);
            return DL_ENOMEM;
        }
    }

    /* documents: MongoDB with MONGO_URI, else the embedded SQLite file */
    const char *mongo = getenv("MONGO_URI");
    char dberr[512];
    if (mongo && *mongo) {
        int pool = (int)dl_env_u64("MONGO_POOL_SIZE");
        rt->shared.store = dl_store_open_mongo(mongo, pool, dberr, sizeof(dberr));
    } else {
        char path[1200];
        const char *db = getenv("DEVLOOP_DB");
        if (db == NULL || *db == '\0') {
            snprintf(path, sizeof(path), "%s/data/devloop.db", rt->app_dir);
            db = path;
        }
        rt->shared.store = dl_store_open_sqlite(db, 4, dberr, sizeof(dberr));
        rt->shared.db_path = dl_strdup(db);
    }
    if (rt->shared.store == NULL) {
        snprintf(errbuf, errlen, "document store: %s\n", dberr);
        dl_runtime_free(rt);
        return DL_EIO;
    }
    {
        /* (both checked with the other variables at the top) */
        uint64_t th = dl_env_u64("MONGO_BREAKER_THRESHOLD");
        uint64_t cd = dl_env_u64("MONGO_BREAKER_COOLDOWN_MS");
        int backend = strcmp(rt->shared.store->ops->type, "mongodb") == 0 ? DL_BACKEND_MONGO
                                                                   : DL_BACKEND_SQLITE;
        dl_store_guard_init(&rt->shared.store_guard, backend, (int)th, (uint64_t)cd,
                            &rt->shared.backends);
        rt->shared.has_store_guard = 1;
    }
    /* blocking store calls share libuv's thread pool: give it room (an
     * empty value is unset for config.c, but one thread for libuv) */
    const char *tp = getenv("UV_THREADPOOL_SIZE");
    if (tp == NULL || *tp == '\0')
        setenv("UV_THREADPOOL_SIZE", "8", 1);

    if (define_metrics(rt) != 0) {
        snprintf(errbuf, errlen, "cannot create the metrics registry\n");
        dl_runtime_free(rt);
        return DL_ENOMEM;
    }
    rt->shared.access_log = (int)dl_env_u64("DEVLOOP_ACCESS_LOG");
    rt->shared.http_metrics = (int)dl_env_u64("DEVLOOP_METRICS");
    uv_timeval64_t tv0;
    uv_gettimeofday(&tv0);
    rt->shared.start_time = (double)tv0.tv_sec + tv0.tv_usec / 1e6;

    /* load the app once up front, so a broken app fails before binding */
    int nerr = dl_app_check(rt->app_dir, errbuf, errlen);
    if (nerr) {
        dl_runtime_free(rt);
        return DL_ESCRIPT;
    }
    *out = rt;
    return 0;
}

int dl_app_check(const char *app_dir, char *errbuf, size_t errlen)
{
    dl_config_t cfg;
    dl_config_init(&cfg);
    dl_lua_host_t host; /* a check only: no loop, no backends */
    dl_worker_host_base(&host);
    host.cfg = &cfg;
    dl_vm_t *vm = dl_vm_new(&host);
    if (vm == NULL) {
        snprintf(errbuf, errlen, "cannot create a Lua state\n");
        return 1;
    }
    dl_buf_t errors = DL_BUF_INIT;
    int n = dl_vm_load_app(vm, app_dir, &errors);
    if (errlen)
        snprintf(errbuf, errlen, "%.*s", (int)errors.len, errors.data ? errors.data : "");
    dl_buf_free(&errors);
    dl_vm_free(vm);
    return n;
}

/* ================================================================ reload */

static void reload_now(dl_runtime_t *rt, const char *why)
{
    char err[sizeof(rt->status.last_error)];
    uint64_t t0 = uv_hrtime();
    /* every script loads in a scratch state before any worker changes */
    int n = dl_app_check(rt->app_dir, err, sizeof(err));
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    uv_mutex_lock(&rt->status_lock);
    rt->status.last_reload_time = (double)tv.tv_sec + tv.tv_usec / 1e6;
    rt->status.last_ok = n == 0;
    if (n)
        dl_metric_add(rt->shared.metrics, rt->cfg.workers, rt->shared.m.reload_failures, NULL, 1);
    else
        dl_metric_add(rt->shared.metrics, rt->cfg.workers, rt->shared.m.generation, NULL, 1);
    if (n) {
        rt->status.failed++;
        snprintf(rt->status.last_error, sizeof(rt->status.last_error), "%s", err);
    } else {
        rt->status.reloads++;
        rt->status.generation++;
        rt->status.last_error[0] = '\0';
    }
    int gen = rt->status.generation;
    uv_mutex_unlock(&rt->status_lock);
    if (n) {
        dl_log(DL_LOG_ERROR, "reload (%s) failed; still serving generation %d:\n%s", why, gen,
               err);
        return;
    }
    for (int i = 0; i < rt->shared.n_workers; i++)
        dl_worker_reload(&rt->shared.workers[i]);
    dl_log(DL_LOG_INFO, "reload (%s): generation %d (checked in %.1f ms)", why, gen,
           (double)(uv_hrtime() - t0) / 1e6);
}

/* The tokens file is read by every load (auth.lua: DEVLOOP_TOKENS_FILE, else
 * APP_DIR/tokens.json) but is no Lua file: it is watched by name. */
static void watch_tokens_file(dl_runtime_t *rt)
{
    const char *env = getenv("DEVLOOP_TOKENS_FILE");
    char path[1200];
    if (env && *env)
        snprintf(path, sizeof(path), "%s", env);
    else
        snprintf(path, sizeof(path), "%s/tokens.json", rt->app_dir);
    int rc = dl_watch_add_file(rt->watch, path);
    if (rc != 0)
        dl_log(DL_LOG_WARN, "%s: changes will not reload the app (cannot watch it: %s)", path,
               dl_strerror(rc));
}

static void on_watch(void *arg)
{
    reload_now(arg, "files changed");
}

static void on_reload_async(uv_async_t *a)
{
    reload_tls(a->data); /* dl_runtime_reload() is SIGHUP for embedders */
    reload_now(a->data, "requested");
}

void dl_runtime_reload(dl_runtime_t *rt)
{
    if (__atomic_load_n(&rt->loop_ready, __ATOMIC_ACQUIRE))
        uv_async_send(&rt->reload_async);
}

void dl_runtime_reload_status(dl_runtime_t *rt, dl_reload_status_t *out)
{
    uv_mutex_lock(&rt->status_lock);
    *out = rt->status;
    uv_mutex_unlock(&rt->status_lock);
}

/* ================================================================ running */

/* Temporary upload files a killed process left behind (upload.c). */
/* Files a killed process left in the upload folder go; the folder is made
 * here, once, so requests need no mkdir (upload.c remakes it if removed). */
static void sweep_uploads(dl_runtime_t *rt)
{
    char data[1200];
    snprintf(data, sizeof(data), "%s/data", rt->app_dir);
    (void)mkdir(data, 0755);
    (void)mkdir(rt->shared.upload_dir, 0700);
    int n = dl_upload_sweep(rt->shared.upload_dir, 600);
    if (n > 0)
        dl_log(DL_LOG_INFO, "deleted %d stale upload file%s in %s", n, n == 1 ? "" : "s",
               rt->shared.upload_dir);
}

/* ================================================================ pid file */

/*
 * The pid file belongs to the runtime holding an OFD write lock on it (the
 * kernel drops the lock when the process ends, however it ends): a second
 * instance of the app is refused while the first runs, a file nobody holds
 * is stale and replaced, and only the holder removes it at exit.
 */

static int pid_in(int fd)
{
    char b[32];
    ssize_t n = pread(fd, b, sizeof(b) - 1, 0);
    if (n <= 0)
        return 0;
    b[n] = '\0';
    int pid = atoi(b);
    return pid > 1 ? pid : 0;
}

/* lstat: a symbolic link put in the file's place is not the file */
static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && lstat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* A pid file that cannot be used stops start-up: without it a second
 * instance is not refused and `devloop reload` cannot find this one. */
static int pid_file_error(const char *pf, const char *why)
{
    dl_log(DL_LOG_ERROR, "pid file %s: %s (give --pid-file a writable FILE)", pf, why);
    return DL_EIO;
}

static int claim_pid_file(dl_runtime_t *rt)
{
    const char *pf = rt->cfg.pid_file;
    char path[1200];
    if (pf && *pf == '\0')
        return 0;
    if (pf == NULL) {
        snprintf(path, sizeof(path), "%s/data", rt->app_dir);
        mkdir(path, 0755);
        snprintf(path, sizeof(path), "%s/data/devloop.pid", rt->app_dir);
        pf = path;
    }
    for (int tries = 0; tries < 5; tries++) {
        /* O_NOFOLLOW: a link in its place would have us overwrite (and at
         * exit unlink) whatever it names; O_NONBLOCK: a FIFO must not hang */
        int fd = open(pf, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
        if (fd < 0)
            return pid_file_error(pf, errno == ELOOP ? "it is a symbolic link (refused: the "
                                                       "file it names would be overwritten)"
                                                     : strerror(errno));
        struct stat st;
        const char *bad = fstat(fd, &st) != 0     ? strerror(errno)
                          : !S_ISREG(st.st_mode) ? "it is not a regular file"
                                                 : NULL;
        if (bad != NULL) {
            close(fd);
            return pid_file_error(pf, bad);
        }
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
            int e = errno, pid = pid_in(fd);
            close(fd);
            if (e != EAGAIN && e != EACCES) {
                char why[160];
                snprintf(why, sizeof(why), "cannot lock it: %s", strerror(e));
                return pid_file_error(pf, why);
            }
            if (pid)
                dl_log(DL_LOG_ERROR, "pid file %s is held by another devloop (pid %d): stop "
                                     "it, or give this one its own --pid-file FILE", pf, pid);
            else
                dl_log(DL_LOG_ERROR, "pid file %s is held by another devloop that is starting: "
                                     "stop it, or give this one its own --pid-file FILE", pf);
            return DL_EBUSY;
        }
        if (!same_file(fd, pf)) {
            close(fd); /* removed or replaced while we locked it: open it again */
            continue;
        }
        int old = pid_in(fd);
        if (old)
            snprintf(rt->pid_note, sizeof(rt->pid_note),
                     "replaced the stale pid file %s (pid %d no longer holds it)", pf, old);
        /* empty until the signal handlers are in place (write_pid) */
        if (ftruncate(fd, 0) != 0) {
            int e = errno;
            close(fd);
            return pid_file_error(pf, strerror(e));
        }
        if ((rt->pid_file = dl_strdup(pf)) == NULL) {
            close(fd);
            return DL_ENOMEM;
        }
        rt->pid_fd = fd;
        return 0;
    }
    return pid_file_error(pf, "it keeps being replaced");
}

static void write_pid(dl_runtime_t *rt)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%d\n", (int)getpid());
    if (rt->pid_fd >= 0 && pwrite(rt->pid_fd, b, (size_t)n, 0) != n)
        dl_log(DL_LOG_WARN, "cannot write pid file %s: %s", rt->pid_file, strerror(errno));
}

static void release_pid_file(dl_runtime_t *rt)
{
    if (rt->pid_fd < 0)
        return;
    if (same_file(rt->pid_fd, rt->pid_file))
        unlink(rt->pid_file);
    close(rt->pid_fd);
    rt->pid_fd = -1;
    dl_free(rt->pid_file);
    rt->pid_file = NULL;
}

/* Processes refused an address connect to its lock to learn our pid. */
static void on_lock_probe(uv_poll_t *h, int status, int events)
{
    DL_UNUSED(events);
    uv_os_fd_t fd;
    if (status < 0 || uv_fileno((uv_handle_t *)h, &fd) != 0)
        return;
    int c;
    while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        close(c);
}

static void on_stop_async(uv_async_t *a)
{
    dl_runtime_t *rt = a->data;
    rt->stop_started = uv_hrtime();
    for (int i = 0; i < rt->shared.n_workers; i++)
        dl_worker_stop(&rt->shared.workers[i]);
    uv_close((uv_handle_t *)&rt->stop_async, NULL);
    uv_close((uv_handle_t *)&rt->reload_async, NULL);
    for (int i = 0; i < rt->n_lock_polls; i++)
        uv_close((uv_handle_t *)&rt->lock_poll[i], NULL);
    dl_watch_stop(rt->watch);
    rt->watch = NULL;
    if (rt->handle_signals) {
        uv_close((uv_handle_t *)&rt->sig_term, NULL);
        uv_close((uv_handle_t *)&rt->sig_int, NULL);
        uv_close((uv_handle_t *)&rt->sig_hup, NULL);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    dl_runtime_t *rt = s->data;
    if (signum == SIGHUP) {
        reload_tls(rt);
        reload_now(rt, "SIGHUP");
        return;
    }
    dl_log(DL_LOG_INFO, "%s: stopping (grace %llu ms)", signum == SIGTERM ? "SIGTERM" : "SIGINT",
           (unsigned long long)rt->cfg.shutdown_grace_ms);
    dl_runtime_stop(rt);
}

/* the asynchronous logger: console and APP_DIR/logs (DEVLOOP_LOG_DIR; "-" for none) */
static void start_logger(dl_runtime_t *rt)
{
    dl_log_config_t lc;
    dl_log_config_init(&lc);
    lc.level = rt->cfg.log_level;
    char logdir[1200];
    const char *ld = getenv("DEVLOOP_LOG_DIR");
    if (ld == NULL || *ld == '\0') {
        snprintf(logdir, sizeof(logdir), "%s/logs", rt->app_dir);
        ld = logdir;
    }
    lc.dir = strcmp(ld, "-") == 0 ? NULL : ld;
    lc.max_file_bytes = dl_env_u64("DEVLOOP_LOG_MAX_BYTES");
    lc.max_files = (int)dl_env_u64("DEVLOOP_LOG_MAX_FILES");
    lc.ring_bytes = dl_env_u64("DEVLOOP_LOG_RING_BYTES");
    if (dl_logger_start(&lc) != 0)
        fprintf(stderr, "devloop: cannot start the logger; logging synchronously\n");
}

/*
 * The devloop program's stop is bounded: a worker still running Lua that
 * never yields (a handler or hook in a loop) never sees its grace timer, so
 * the process would wait for it forever after SIGTERM. Past the grace period
 * and two seconds more, such a worker is named and the process exits 1 with
 * its logs flushed. (Embedders keep the plain join: their threads and memory
 * are theirs to decide about.)
 */
static void wait_for_workers(dl_runtime_t *rt)
{
    uint64_t limit = (rt->cfg.shutdown_grace_ms + 2000) * 1000000ULL;
    for (;;) {
        int busy = -1;
        for (int i = 0; i < rt->shared.n_workers && busy < 0; i++)
            if (rt->shared.workers[i].thread_started &&
                !__atomic_load_n(&rt->shared.workers[i].thread_done, __ATOMIC_ACQUIRE))
                busy = i;
        if (busy < 0)
            return;
        if (rt->stop_started != 0 && uv_hrtime() - rt->stop_started > limit) {
            dl_log(DL_LOG_ERROR, "worker %d did not stop within the grace period (%llu ms): it "
                                 "is running Lua that never yields (a handler, job or hook in "
                                 "a loop?); exiting without it",
                   busy, (unsigned long long)rt->cfg.shutdown_grace_ms);
            release_pid_file(rt);
            dl_logger_stop();
            _exit(1);
        }
        uv_sleep(10);
    }
}

int dl_runtime_run(dl_runtime_t *rt, int handle_signals)
{
    char err[4096];
    /* before the logger: a refused instance writes nothing into the app */
    int rc = claim_pid_file(rt);
    if (rc != 0)
        return rc;
    rc = uv_loop_init(&rt->loop);
    if (rc != 0) {
        release_pid_file(rt);
        return rc;
    }
    rt->handle_signals = handle_signals;
    start_logger(rt);
    if (rt->pid_note[0] != '\0')
        dl_log(DL_LOG_WARN, "%s", rt->pid_note);
    for (int l = 0; l < rt->cfg.n_listen; l++)
        if (rt->lock_fd[l] >= 0) {
            uv_poll_t *p = &rt->lock_poll[rt->n_lock_polls++];
            uv_poll_init(&rt->loop, p, rt->lock_fd[l]);
            uv_poll_start(p, UV_READABLE, on_lock_probe);
        }
    uv_async_init(&rt->loop, &rt->stop_async, on_stop_async);
    rt->stop_async.data = rt;
    uv_async_init(&rt->loop, &rt->reload_async, on_reload_async);
    rt->reload_async.data = rt;
    if (handle_signals) {
        signal(SIGPIPE, SIG_IGN);
        uv_signal_init(&rt->loop, &rt->sig_term);
        uv_signal_init(&rt->loop, &rt->sig_int);
        uv_signal_init(&rt->loop, &rt->sig_hup);
        rt->sig_term.data = rt->sig_int.data = rt->sig_hup.data = rt;
        uv_signal_start(&rt->sig_term, on_signal, SIGTERM);
        uv_signal_start(&rt->sig_int, on_signal, SIGINT);
        uv_signal_start(&rt->sig_hup, on_signal, SIGHUP);
    }
    __atomic_store_n(&rt->loop_ready, 1, __ATOMIC_RELEASE);

    rt->shared.workers = dl_calloc((size_t)rt->cfg.workers, sizeof(dl_worker_t));
    if (rt->shared.workers == NULL)
        return DL_ENOMEM;
    int result = 0;
    for (int i = 0; i < rt->cfg.workers && result == 0; i++) {
        dl_worker_t *w = &rt->shared.workers[i];
        rc = dl_worker_init(w, &rt->shared, i, err, sizeof(err));
        rt->shared.n_workers = i + 1;
        if (rc != 0) {
            dl_log(DL_LOG_ERROR, "worker %d: %s", i, err);
            result = rc;
            break;
        }
        for (int l = 0; l < rt->cfg.n_listen; l++) {
            rc = worker_socket(rt, l, &w->listen_fds[l], err, sizeof(err));
            if (rc != 0) {
                dl_log(DL_LOG_ERROR, "%s", err);
                result = rc;
                break;
            }
            w->n_listeners = l + 1;
        }
    }
    for (int i = 0; i < rt->shared.n_workers && result == 0; i++) {
        rc = dl_worker_start(&rt->shared.workers[i]);
        if (rc != 0)
            result = rc;
    }
    if (result == 0) {
        if (rt->cfg.watch) {
            rc = dl_watch_start(&rt->loop, rt->app_dir, rt->cfg.watch_debounce_ms, on_watch, rt,
                                &rt->watch);
            if (rc != 0)
                dl_log(DL_LOG_WARN, "hot reload off: cannot watch %s: %s", rt->app_dir,
                       dl_strerror(rc));
            else
                watch_tokens_file(rt);
        }
        write_pid(rt);
        sweep_uploads(rt);
        char addrs[DL_MAX_LISTEN * 300] = "no socket";
        for (int l = 0, n = 0; l < rt->cfg.n_listen; l++)
            n += snprintf(addrs + n, sizeof(addrs) - (size_t)n, "%s%s", l ? ", " : "",
                          rt->cfg.listen[l]);
        dl_log(DL_LOG_INFO, "devloop %s serving %s on %s (%d worker%s%s)", DL_VERSION_STRING,
               rt->app_dir, addrs, rt->shared.n_workers, rt->shared.n_workers == 1 ? "" : "s",
               rt->watch ? ", watching for changes" : "");
        __atomic_store_n(&rt->serving, 1, __ATOMIC_RELEASE);
        if (__atomic_load_n(&rt->stop_requested, __ATOMIC_ACQUIRE))
            uv_async_send(&rt->stop_async);
    } else {
        dl_runtime_stop(rt);
    }
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    __atomic_store_n(&rt->serving, 0, __ATOMIC_RELEASE);
    if (handle_signals)
        wait_for_workers(rt);
    for (int i = 0; i < rt->shared.n_workers; i++)
        dl_worker_join(&rt->shared.workers[i]);
    uv_loop_close(&rt->loop);
    release_pid_file(rt);
    if (result == 0)
        dl_log(DL_LOG_INFO, "stopped");
    /* everything buffered reaches the console and the files before exit */
    dl_logger_stop();
    return result;
}

/* ========================================================= host-loop mode */

/*
 * The worker keeps its own loop, embedded in the host's: the host polls the
 * worker loop's backend fd (epoll) and runs it without blocking when it is
 * ready or its next timer is due, as libuv documents for embedding a loop.
 * The worker's handles never touch the host loop, so closing them cannot
 * close the host's, and the host's timers keep their period.
 */
typedef struct {
    uv_poll_t poll;
    uv_timer_t timer;
    dl_worker_t *w;
    int open;
} host_embed_t;

static void embed_drive(host_embed_t *e);

static void on_embed_poll(uv_poll_t *h, int status, int events)
{
    DL_UNUSED(status);
    DL_UNUSED(events);
    embed_drive(h->data);
}

static void on_embed_timer(uv_timer_t *h)
{
    embed_drive(h->data);
}

static void embed_drive(host_embed_t *e)
{
    uv_run(&e->w->loop, UV_RUN_NOWAIT);
    int t = uv_backend_timeout(&e->w->loop);
    if (t >= 0)
        uv_timer_start(&e->timer, on_embed_timer, (uint64_t)t, 0);
    else
        uv_timer_stop(&e->timer);
}

static void on_embed_closed(uv_handle_t *h)
{
    host_embed_t *e = h->data;
    if (--e->open == 0)
        dl_free(e);
}

int dl_runtime_attach(dl_runtime_t *rt, uv_loop_t *host)
{
    char err[4096];
    if (rt == NULL || host == NULL || rt->shared.workers != NULL)
        return DL_EINVAL;
    start_logger(rt);
    rt->shared.workers = dl_calloc(1, sizeof(dl_worker_t));
    host_embed_t *e = dl_calloc(1, sizeof(*e));
    if (rt->shared.workers == NULL || e == NULL) {
        dl_free(e);
        return DL_ENOMEM;
    }
    rt->cfg.workers = 1;
    dl_worker_t *w = &rt->shared.workers[0];
    int rc = dl_worker_init(w, &rt->shared, 0, err, sizeof(err));
    rt->shared.n_workers = 1;
    for (int l = 0; rc == 0 && l < rt->cfg.n_listen; l++) {
        rc = worker_socket(rt, l, &w->listen_fds[l], err, sizeof(err));
        if (rc == 0)
            w->n_listeners = l + 1;
    }
    if (rc == 0)
        rc = dl_worker_start_on_caller(w);
    if (rc != 0) {
        dl_log(DL_LOG_ERROR, "%s", err);
        dl_free(e);
        dl_worker_join(w);
        dl_free(rt->shared.workers);
        rt->shared.workers = NULL;
        rt->shared.n_workers = 0;
        dl_logger_stop();
        return rc;
    }
    e->w = w;
    uv_poll_init(host, &e->poll, uv_backend_fd(&w->loop));
    uv_timer_init(host, &e->timer);
    e->poll.data = e->timer.data = e;
    e->open = 2;
    uv_poll_start(&e->poll, UV_READABLE, on_embed_poll);
    rt->host_embed = e;
    __atomic_store_n(&rt->serving, 1, __ATOMIC_RELEASE);
    dl_log(DL_LOG_INFO, "devloop %s serving %s on %s (on the host's loop)", DL_VERSION_STRING,
           rt->app_dir, rt->cfg.n_listen ? rt->cfg.listen[0] : "no socket");
    embed_drive(e);
    return 0;
}

void dl_runtime_detach(dl_runtime_t *rt)
{
    host_embed_t *e = rt ? rt->host_embed : NULL;
    if (e == NULL)
        return;
    rt->host_embed = NULL;
    __atomic_store_n(&rt->serving, 0, __ATOMIC_RELEASE);
    dl_worker_t *w = &rt->shared.workers[0];
    uv_close((uv_handle_t *)&e->poll, on_embed_closed);
    uv_close((uv_handle_t *)&e->timer, on_embed_closed);
    /* graceful: in-flight requests finish (bounded by the grace period) */
    dl_worker_stop(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    dl_worker_join(w); /* frees the VM and closes what is left */
    dl_log(DL_LOG_INFO, "stopped");
    dl_logger_stop();
}

void dl_runtime_stop(dl_runtime_t *rt)
{
    __atomic_store_n(&rt->stop_requested, 1, __ATOMIC_RELEASE);
    if (__atomic_load_n(&rt->loop_ready, __ATOMIC_ACQUIRE))
        uv_async_send(&rt->stop_async);
}

void dl_runtime_free(dl_runtime_t *rt)
{
    if (rt == NULL)
        return;
    dl_free(rt->shared.workers);
    for (int i = 0; i < DL_MAX_LISTEN; i++) {
        if (rt->first_fd[i] >= 0)
            close(rt->first_fd[i]);
        if (rt->lock_fd[i] >= 0)
            close(rt->lock_fd[i]);
    }
    release_pid_file(rt);
    for (int i = 0; i < DL_MAX_LISTEN; i++) {
        dl_free(rt->listen[i]);
        dl_tls_ctx_free(rt->shared.tls[i]);
    }
    dl_free(rt->shared.hsts);
    dl_free(rt->pid_file_opt);
    dl_free(rt->shared.canonical_host);
    dl_free(rt->shared.upload_dir);
    dl_free(rt->app_dir);
    dl_memcache_free(rt->shared.memcache);
    dl_shdict_free(rt->shared.shared_dict);
    dl_pubsub_free(rt->shared.pubsub); /* after the workers: they have joined */
    dl_backend_stats_free(&rt->shared.backends);
    dl_metrics_free(rt->shared.metrics);
    dl_free(rt->shared.db_path);
    if (rt->shared.store)
        rt->shared.store->ops->close(rt->shared.store);
    if (rt->shared.has_store_guard)
        dl_store_guard_destroy(&rt->shared.store_guard);
    uv_mutex_destroy(&rt->status_lock);
    dl_free(rt);
}
