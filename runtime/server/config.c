/*
 * config.c - the runtime's settings. Every numeric or on/off environment
 * variable is a row of one table (default, range, the dl_config_t field it
 * fills), parsed strictly by one parser: the first value that does not parse
 * stops start-up naming the variable, the value and what is accepted. Sizes
 * take a unit (512k, 2MB, 1GiB, bytes when bare), durations too (500ms, 10s,
 * 2m; the variable's own unit when bare: milliseconds for *_MS, seconds for
 * *_S). dl_config_print() (`devloop config`) shows every setting with where
 * it came from, without starting, binding, opening or creating anything.
 */
#include "server/config.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/breaker.h"
#include "common/buf.h"
#include "common/env_value.h"
#include "http1/conn.h"
#include "common/json_str.h"
#include "common/log.h"
#include "store/mongo_store.h"
#include "backend/redis_pool.h"
#include "store/store.h"
#include "transport/tls.h"

typedef enum { F_NONE, F_SIZE, F_U64, F_INT } field_t;
typedef enum { ALWAYS, NO_REDIS, MONGO, HIDDEN } need_t;

typedef struct {
    const char *name;
    dl_env_kind_t kind;
    uint64_t def, min, max;
    size_t off; /* its dl_config_t field (when ft is not F_NONE) */
    field_t ft;
    const char *flag; /* the serve flag that also sets it */
    const char *zero; /* what 0 means, when it means something */
    const char *unit; /* shown for a bare count, when it has one */
    need_t need;      /* when the runtime uses it */
} env_var_t;

#define DAY_MS 86400000ULL
#define TIB (1ULL << 40)
#define CF(f, t) offsetof(dl_config_t, f), t
#define NOF 0, F_NONE

/* In the order `devloop config` shows them. */
static const env_var_t vars[] = {
    {"PORT", DL_ENV_COUNT, 8080, 0, 65535, NOF, NULL, NULL, NULL, HIDDEN}, /* in "listen" */
    {"DEVLOOP_WATCH", DL_ENV_BOOL, 1, 0, 1, CF(watch, F_INT), "--no-watch", NULL, NULL, ALWAYS},
    {"DEVLOOP_WATCH_DEBOUNCE_MS", DL_ENV_MS, 100, 0, 60000, CF(watch_debounce_ms, F_U64), NULL,
     NULL, NULL, ALWAYS},
    {"DEVLOOP_HTTP2", DL_ENV_BOOL, 1, 0, 1, CF(http2, F_INT), "--no-http2", NULL, NULL, ALWAYS},
    {"DEVLOOP_H2_MAX_STREAMS", DL_ENV_COUNT, 100, 1, 100000, CF(h2_max_streams, F_INT), NULL, NULL,
     NULL, ALWAYS},
    {"DEVLOOP_TLS_TICKET_ROTATE_S", DL_ENV_S, 3600, 1, 31536000, CF(tls_ticket_rotate_s, F_U64),
     NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_MAX_URI", DL_ENV_SIZE, 8192, 16, 16 << 20, CF(max_uri, F_SIZE), NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_MAX_HEADER_BYTES", DL_ENV_SIZE, 32 * 1024, 256, 64 << 20, CF(max_header_bytes, F_SIZE),
     NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_MAX_HEADERS", DL_ENV_COUNT, 100, 1, 100000, CF(max_headers, F_INT), NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_MAX_BODY", DL_ENV_SIZE, 1024 * 1024, 0, TIB, CF(max_body, F_SIZE), NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_MAX_BODY_ELEMENTS", DL_ENV_COUNT, 100000, 0, 1ULL << 31,
     CF(max_body_elements, F_SIZE), NULL, "no limit", NULL, ALWAYS},
    {"DEVLOOP_HEADER_TIMEOUT_MS", DL_ENV_MS, 10000, 1, DAY_MS, CF(header_timeout_ms, F_U64), NULL,
     NULL, NULL, ALWAYS},
    {"DEVLOOP_BODY_TIMEOUT_MS", DL_ENV_MS, 10000, 1, DAY_MS, CF(body_timeout_ms, F_U64), NULL, NULL,
     NULL, ALWAYS},
    {"DEVLOOP_BODY_MIN_BYTES", DL_ENV_SIZE, 1024, 0, 1ULL << 30, CF(body_min_bytes, F_SIZE), NULL,
     NULL, NULL, ALWAYS},
    {"DEVLOOP_KEEPALIVE_TIMEOUT_MS", DL_ENV_MS, 15000, 1, DAY_MS, CF(keepalive_timeout_ms, F_U64),
     NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_SEND_TIMEOUT_MS", DL_ENV_MS, 60000, 1, DAY_MS, CF(send_timeout_ms, F_U64), NULL, NULL,
     NULL, ALWAYS},
    {"DEVLOOP_SHUTDOWN_GRACE_MS", DL_ENV_MS, 10000, 0, DAY_MS, CF(shutdown_grace_ms, F_U64), NULL,
     NULL, NULL, ALWAYS},
    {"DEVLOOP_START_TIMEOUT_MS", DL_ENV_MS, 10000, 0, DAY_MS, CF(start_timeout_ms, F_U64), NULL,
     "no limit", NULL, ALWAYS},
    {"DEVLOOP_OUTPUT_HIGH_WATER", DL_ENV_SIZE, 256 * 1024, 0, TIB, CF(output_high_water, F_SIZE),
     NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_MAX_CONNECTIONS", DL_ENV_COUNT, 10000, 0, 1000000, CF(max_connections, F_INT), NULL,
     "no cap", NULL, ALWAYS},
    {"GZIP_LEVEL", DL_ENV_COUNT, 1, 1, 9, CF(gzip_level, F_INT), NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_COMPRESS_MIN", DL_ENV_SIZE, 1024, 0, TIB, CF(compress_min, F_SIZE), NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_LOG_MAX_BYTES", DL_ENV_SIZE, 10u << 20, 0, TIB, NOF, NULL, "never rotate", NULL,
     ALWAYS},
    {"DEVLOOP_LOG_MAX_FILES", DL_ENV_COUNT, 10, 1, 1000, NOF, NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_LOG_RING_BYTES", DL_ENV_SIZE, 1u << 20, 1024, 1ULL << 30, NOF, NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_ACCESS_LOG", DL_ENV_BOOL, 0, 0, 1, NOF, NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_METRICS", DL_ENV_BOOL, 1, 0, 1, NOF, NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_CACHE_MAX_BYTES", DL_ENV_SIZE, 64u << 20, 0, TIB, NOF, NULL, NULL, NULL, NO_REDIS},
    /* api.shared, the dictionary every worker shares (runtime/cache/shared_dict.h) */
    {"DEVLOOP_SHARED_MAX", DL_ENV_SIZE, 16u << 20, 4096, TIB, NOF, NULL, NULL, NULL, ALWAYS},
    /* api.pubsub's in-process hub (runtime/cache/pubsub.h) */
    {"DEVLOOP_PUBSUB_MAX_MESSAGE", DL_ENV_SIZE, 1u << 20, 1, 1u << 30, NOF, NULL, NULL, NULL,
     ALWAYS},
    {"DEVLOOP_PUBSUB_QUEUE", DL_ENV_COUNT, 1000, 1, 1000000, NOF, NULL, NULL,
     "messages per subscription", ALWAYS},
    {"DEVLOOP_PUBSUB_MAX_SUBS", DL_ENV_COUNT, 10000, 1, 1000000, NOF, NULL, NULL,
     "subscriptions per worker", ALWAYS},
    {"MONGO_POOL_SIZE", DL_ENV_COUNT, DL_MONGO_DEFAULT_POOL_SIZE, 1, 100000, NOF, NULL, NULL, NULL,
     MONGO},
    /* the breaker guards MongoDB only: SQLite, a local file, gets outcomes
     * only (store_guard.h, use_breaker) */
    {"MONGO_BREAKER_THRESHOLD", DL_ENV_COUNT, DL_BREAKER_DEFAULT_THRESHOLD, 0, 1000000, NOF, NULL,
     "off", NULL, MONGO},
    {"MONGO_BREAKER_COOLDOWN_MS", DL_ENV_MS, DL_BREAKER_DEFAULT_COOLDOWN_MS, 1, DAY_MS, NOF, NULL,
     NULL, NULL, MONGO},
    /* the outbound HTTP client and cosockets, per worker and per origin */
    {"DEVLOOP_HTTP_POOL_SIZE", DL_ENV_COUNT, 32, 0, 100000, NOF, NULL, "none kept",
     "idle connections", ALWAYS},
    {"DEVLOOP_HTTP_MAX_CONNS", DL_ENV_COUNT, 256, 0, 1000000, NOF, NULL, "no cap", "connections",
     ALWAYS},
    {"DEVLOOP_HTTP_BACKLOG", DL_ENV_COUNT, 1024, 0, 1000000, NOF, NULL, "none wait", "requests",
     ALWAYS},
    {"DEVLOOP_HTTP_IDLE_MS", DL_ENV_MS, 60000, 1, DAY_MS, NOF, NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_DNS_TTL_MS", DL_ENV_MS, 30000, 0, DAY_MS, NOF, NULL, "no caching", NULL, ALWAYS},
    /* read by jobs.lua through core._env() */
    {"DEVLOOP_JOB_LEASE_MS", DL_ENV_MS, 30000, 1, DAY_MS, NOF, NULL, NULL, NULL, ALWAYS},
    {"DEVLOOP_JOBS_PAUSED", DL_ENV_BOOL, 0, 0, 1, NOF, NULL, NULL, NULL, ALWAYS},
    /* read by libuv (its limit is 1024); server.c sets 8 when it is unset */
    {"UV_THREADPOOL_SIZE", DL_ENV_COUNT, 8, 1, 1024, NOF, NULL, NULL, "threads", ALWAYS},
};

static const env_var_t *var_of(const char *name)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(vars); i++)
        if (strcmp(vars[i].name, name) == 0)
            return &vars[i];
    return NULL;
}

/* v's value in *out (its default when unset or empty). DL_EINVAL with the
 * message in err (when err is not NULL) for one that does not parse. */
static int env_parse(const env_var_t *v, uint64_t *out, char *err, size_t errlen)
{
    return dl_env_value(v->name, v->kind, v->def, v->min, v->max, out, err, errlen);
}

int dl_env_known(const char *name)
{
    return var_of(name) != NULL;
}

uint64_t dl_env_u64(const char *name)
{
    const env_var_t *v = var_of(name);
    DL_ASSERT(v != NULL);
    uint64_t n;
    (void)env_parse(v, &n, NULL, 0);
    return n;
}

static void field_set(dl_config_t *cfg, const env_var_t *v, uint64_t n)
{
    char *f = (char *)cfg + v->off;
    if (v->ft == F_SIZE)
        *(size_t *)f = (size_t)n;
    else if (v->ft == F_U64)
        *(uint64_t *)f = n;
    else if (v->ft == F_INT)
        *(int *)f = (int)n;
}

static uint64_t field_get(const dl_config_t *cfg, const env_var_t *v)
{
    const char *f = (const char *)cfg + v->off;
    return v->ft == F_SIZE  ? (uint64_t) * (const size_t *)f
           : v->ft == F_U64 ? *(const uint64_t *)f
                            : (uint64_t)(int64_t) * (const int *)f;
}

void dl_config_init(dl_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 0;
    cfg->log_level = DL_LOG_INFO;
    const char *ll = getenv("LOG_LEVEL");
    if (ll && *ll && dl_log_level_parse(ll) < 0)
        snprintf(cfg->env_error, sizeof(cfg->env_error),
                 "LOG_LEVEL=%s: expected debug, info, warn or error", ll);
    else if (ll && *ll)
        cfg->log_level = dl_log_level_parse(ll);
    /* every row, those only the runtime reads too: the first mistake is the
     * one reported */
    for (size_t i = 0; i < DL_ARRAY_SIZE(vars); i++) {
        uint64_t n;
        char msg[sizeof(cfg->env_error)];
        if (env_parse(&vars[i], &n, msg, sizeof(msg)) != 0 && cfg->env_error[0] == '\0')
            snprintf(cfg->env_error, sizeof(cfg->env_error), "%s", msg);
        if (vars[i].ft != F_NONE)
            field_set(cfg, &vars[i], n);
    }
    const char *hsts = getenv("DEVLOOP_HSTS");
    cfg->hsts = hsts ? hsts : "max-age=31536000";
}

/* ================================================================ checks */

int dl_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return DL_EINVAL;
        size_t n = (size_t)(rb - s - 1);
        if (n >= hostlen)
            return DL_EINVAL;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        size_t n = colon ? (size_t)(colon - s) : 0;
        if (n >= hostlen)
            return DL_EINVAL;
        if (n == 0)
            snprintf(host, hostlen, "127.0.0.1");
        else {
            memcpy(host, s, n);
            host[n] = '\0';
        }
    }
    const char *ps = colon ? colon + 1 : s;
    char *end;
    long p = strtol(ps, &end, 10);
    if (*ps == '\0' || *end != '\0' || p < 0 || p > 65535)
        return DL_EINVAL;
    *port = (int)p;
    return 0;
}

int dl_config_canonical_host(const char **host, int *port, char *err, size_t errlen)
{
    const char *v = getenv("DEVLOOP_CANONICAL_HOST");
    *host = NULL;
    *port = -1;
    if (v == NULL || v[0] == '\0')
        return 0;
    if (!dl_redirect_host_valid(v, strlen(v), NULL, port)) {
        char shown[301]; /* the value as given, controls shown as '?' */
        size_t n = 0;
        for (; v[n] && n < sizeof(shown) - 1; n++)
            shown[n] = (unsigned char)v[n] < 0x20 || v[n] == 0x7f ? '?' : v[n];
        shown[n] = '\0';
        snprintf(err, errlen,
                 "DEVLOOP_CANONICAL_HOST (--canonical-host) \"%s\": expected host[:port], "
                 "a DNS name (letters, digits, '-', '.', '_', '~'; at most 253 bytes) or a "
                 "bracketed IPv6 address, then optionally a port 1-65535; no scheme, user or "
                 "path\n", shown);
        return DL_EINVAL;
    }
    *host = v;
    return 0;
}

int dl_config_trusted_proxies(dl_proxy_list_t *out, char *err, size_t errlen)
{
    char msg[256];
    if (dl_proxy_list_parse(getenv("DEVLOOP_TRUSTED_PROXIES"), out, msg, sizeof(msg)) == 0)
        return 0;
    snprintf(err, errlen, "DEVLOOP_TRUSTED_PROXIES: %s; expected a comma-separated list of "
                          "addresses or CIDRs, e.g. \"127.0.0.1, 10.0.0.0/8, ::1, fd00::/8\"\n",
             msg);
    return DL_EINVAL;
}

/* v in buf with its control and non-ASCII bytes written \r, \n, \t, \xHH:
 * a message never carries them raw. */
static void show_escaped(const char *v, char *buf, size_t len)
{
    size_t w = 0;
    for (; *v && w + 5 < len; v++) {
        unsigned char c = (unsigned char)*v;
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[w++] = (char)c;
        else if (c == '\r' || c == '\n' || c == '\t' || c == '\\')
            w += (size_t)snprintf(buf + w, len - w, "\\%c",
                                  c == '\r' ? 'r' : c == '\n' ? 'n' : c == '\t' ? 't' : '\\');
        else {
            buf[w++] = '\\';
            buf[w++] = 'x';
            dl_hex(&c, 1, buf + w);
            w += 2;
        }
    }
    buf[w] = '\0';
}

/* The Strict-Transport-Security value is sent as given: printable ASCII,
 * spaces inside only. A CR or LF would start a header of its own over
 * HTTP/1.1 and make every HTTP/2 answer a protocol error. */
#define DL_HSTS_MAX 1024

static int hsts_check(const dl_config_t *cfg, char *err, size_t errlen)
{
    const char *v = cfg->hsts;
    if (v == NULL || *v == '\0')
        return 0;
    size_t n = strlen(v);
    const char *env = getenv("DEVLOOP_HSTS");
    const char *name = env != NULL && v == env ? "DEVLOOP_HSTS" : "--hsts";
    if (n > DL_HSTS_MAX) {
        /* one header this long overflows HTTP/2's header list limits */
        snprintf(err, errlen, "%s: the value is %zu bytes; at most %d are accepted\n", name, n,
                 DL_HSTS_MAX);
        return DL_EINVAL;
    }
    int ok = v[0] != ' ' && v[n - 1] != ' ';
    for (size_t i = 0; i < n && ok; i++)
        ok = (unsigned char)v[i] >= 0x20 && (unsigned char)v[i] < 0x7f;
    if (ok)
        return 0;
    char shown[400];
    show_escaped(v, shown, sizeof(shown));
    snprintf(err, errlen, "%s%s\"%s\": expected a header value of printable ASCII with spaces "
                          "inside only (e.g. \"max-age=31536000; includeSubDomains\"), or off\n",
             name, strcmp(name, "--hsts") ? "=" : " ", shown);
    return DL_EINVAL;
}

/* DEVLOOP_TOKENS_FILE, when set, must be a file serve can read (auth.lua
 * reads it as the app loads; a missing default APP_DIR/tokens.json is no
 * tokens). Its JSON is checked as the app loads. */
static int tokens_file_check(char *err, size_t errlen)
{
    const char *tf = getenv("DEVLOOP_TOKENS_FILE");
    if (tf == NULL || *tf == '\0')
        return 0;
    /* O_NONBLOCK: a FIFO must not hang start-up */
    int fd = open(tf, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    const char *why = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (S_ISDIR(st.st_mode))
        why = "it is a directory";
    else if (!S_ISREG(st.st_mode))
        why = "it is not a regular file";
    if (fd >= 0)
        close(fd);
    if (why == NULL)
        return 0;
    snprintf(err, errlen, "DEVLOOP_TOKENS_FILE %s: cannot be read: %s\n", tf, why);
    return DL_EINVAL;
}

/* above a few MiB of answers held per connection, a client that resets the
 * streams it stopped reading trips nghttp2's reset-rate limit (a GOAWAY that
 * loses the streams it still wanted; measured at 16 MiB) */
#define DL_OUTPUT_HIGH_WATER_MAX (4 * 1024 * 1024)

/* Every --listen as serve's listen_sockaddr (server.c) reads it, with its
 * messages, so config refuses what serve would refuse. */
static int listen_check(const dl_config_t *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->n_listen && !cfg->no_listen; i++) {
        char host[256];
        unsigned char addr[sizeof(struct in6_addr)];
        int port;
        if (dl_parse_listen(cfg->listen[i], host, sizeof(host), &port) != 0) {
            snprintf(err, errlen, "invalid listen address '%s' (want HOST:PORT)\n",
                     cfg->listen[i]);
            return DL_EINVAL;
        }
        if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, addr) != 1 &&
            inet_pton(AF_INET6, host, addr) != 1) {
            snprintf(err, errlen, "invalid listen host '%s' (want an IP address)\n", host);
            return DL_EINVAL;
        }
    }
    return 0;
}

int dl_config_check(const dl_config_t *cfg, char *err, size_t errlen)
{
    char msg[512];
    if (cfg->env_error[0] != '\0') {
        snprintf(err, errlen, "%s\n", cfg->env_error);
        return DL_EINVAL;
    }
    /* a cfg made before the environment changed (or by hand) */
    for (size_t i = 0; i < DL_ARRAY_SIZE(vars); i++) {
        uint64_t n;
        if (env_parse(&vars[i], &n, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "%s\n", msg);
            return DL_EINVAL;
        }
    }
    if (cfg->output_high_water < 1024 || cfg->output_high_water > DL_OUTPUT_HIGH_WATER_MAX) {
        snprintf(err, errlen, "DEVLOOP_OUTPUT_HIGH_WATER (output_high_water) must be "
                              "1024 to %d bytes, not %zu\n", DL_OUTPUT_HIGH_WATER_MAX,
                 cfg->output_high_water);
        return DL_EINVAL;
    }
    if (listen_check(cfg, err, errlen) != 0)
        return DL_EINVAL;
    const char *host;
    int port;
    if (dl_config_canonical_host(&host, &port, err, errlen) != 0 ||
        hsts_check(cfg, err, errlen) != 0 || tokens_file_check(err, errlen) != 0)
        return DL_EINVAL;
    dl_proxy_list_t proxies;
    if (dl_config_trusted_proxies(&proxies, err, errlen) != 0)
        return DL_EINVAL;
    dl_redis_config_t rc;
    if (dl_redis_config_from_env(&rc, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s\n", msg); /* the message names the variable */
        return DL_EINVAL;
    }
    const char *mongo = getenv("MONGO_URI");
    if (mongo && *mongo) {
        if (dl_mongo_uri_check(mongo, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "document store: MONGO_URI: %s\n", msg);
            return DL_EINVAL;
        }
    } else {
        int ms;
        if (dl_sqlite_busy_timeout_env(&ms, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "%s\n", msg);
            return DL_EINVAL;
        }
    }
    return 0;
}

int dl_config_load_tls(const dl_config_t *cfg, struct dl_tls_ctx_s **tls, int *https_port,
                       char *err, size_t errlen)
{
    *https_port = 0;
    for (int i = 0; i < cfg->n_listen; i++) {
        const dl_listen_opts_t *lo = &cfg->listen_opts[i];
        if (lo->n_certs == 0)
            continue;
        if (lo->https_redirect) {
            snprintf(err, errlen, "%s: a TLS listener cannot also redirect to HTTPS\n",
                     cfg->listen[i]);
            return DL_EINVAL;
        }
        dl_tls_opts_t o = {.cert = lo->tls_cert,
                           .key = lo->tls_key,
                           .n_certs = lo->n_certs,
                           .alpn_h2 = cfg->http2,
                           .ticket_rotate_s = cfg->tls_ticket_rotate_s};
        char msg[1400];
        dl_tls_ctx_t *ctx;
        if (dl_tls_ctx_new(&o, &ctx, msg, sizeof(msg)) != 0) {
            snprintf(err, errlen, "%s: %s\n", cfg->listen[i], msg);
            return DL_EINVAL;
        }
        if (tls != NULL)
            tls[i] = ctx;
        else
            dl_tls_ctx_free(ctx);
        if (*https_port == 0) {
            char host[256];
            dl_parse_listen(cfg->listen[i], host, sizeof(host), https_port);
        }
    }
    for (int i = 0; i < cfg->n_listen; i++)
        if (cfg->listen_opts[i].https_redirect && *https_port == 0) {
            snprintf(err, errlen, "%s: an HTTPS redirect needs a TLS listener to point to\n",
                     cfg->listen[i]);
            return DL_EINVAL;
        }
    return 0;
}

/* ================================================================ print */

typedef struct {
    dl_buf_t b;
    int json, n;
    const char *const *flags;
    dl_config_t fresh; /* dl_config_init()'s, to tell what the caller changed */
} out_t;

static int flag_given(const out_t *o, const char *flag)
{
    for (int i = 0; flag != NULL && o->flags != NULL && o->flags[i] != NULL; i++)
        if (strcmp(o->flags[i], flag) == 0)
            return 1;
    return 0;
}

static int env_set(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0';
}

/* "default", "env NAME", "flag --x" or "program" (a field the caller set). */
static const char *source_of(const out_t *o, const char *flag, int changed, const char *env,
                             char *buf, size_t len)
{
    if (flag_given(o, flag))
        snprintf(buf, len, "flag %s", flag);
    else if (changed)
        snprintf(buf, len, "program");
    else if (env != NULL && env_set(env))
        snprintf(buf, len, "env %s", env);
    else
        snprintf(buf, len, "default");
    return buf;
}

/* " (2 MiB)", " (1.5 s)": n in a larger unit, whole when it divides. */
static void put_scaled(char *buf, size_t len, uint64_t n, uint64_t mult, const char *name)
{
    if (n % mult == 0)
        snprintf(buf, len, " (%llu %s)", (unsigned long long)(n / mult), name);
    else
        snprintf(buf, len, " (%.1f %s)", (double)n / (double)mult, name);
}

/* "1048576 bytes (1 MiB)", "10000 ms (10 s)": the exact number and, past the
 * unit, a rounder one. */
static void human(char *buf, size_t len, dl_env_kind_t kind, uint64_t n, const char *unit)
{
    static const struct { uint64_t mult; const char *name; } sizes[] = {
        {1ULL << 40, "TiB"}, {1ULL << 30, "GiB"}, {1ULL << 20, "MiB"}, {1ULL << 10, "KiB"}};
    static const struct { uint64_t mult; const char *name; } times[] = {
        {3600000, "h"}, {60000, "min"}, {1000, "s"}};
    if (kind == DL_ENV_SIZE) {
        int w = snprintf(buf, len, "%llu bytes", (unsigned long long)n);
        for (size_t i = 0; i < DL_ARRAY_SIZE(sizes); i++)
            if (n >= sizes[i].mult) {
                put_scaled(buf + w, len - (size_t)w, n, sizes[i].mult, sizes[i].name);
                break;
            }
        return;
    }
    if (kind == DL_ENV_MS || kind == DL_ENV_S) {
        uint64_t ms = kind == DL_ENV_S ? n * 1000 : n;
        int w = snprintf(buf, len, "%llu %s", (unsigned long long)n, kind == DL_ENV_S ? "s" : "ms");
        for (size_t i = 0; i < DL_ARRAY_SIZE(times); i++)
            if (ms >= times[i].mult && !(kind == DL_ENV_S && times[i].mult == 1000)) {
                put_scaled(buf + w, len - (size_t)w, ms, times[i].mult, times[i].name);
                break;
            }
        return;
    }
    if (kind == DL_ENV_BOOL)
        snprintf(buf, len, "%s", n ? "on" : "off");
    else
        snprintf(buf, len, "%llu%s%s", (unsigned long long)n, unit ? " " : "", unit ? unit : "");
}

/* One setting. num: its number (NULL when it has none); unit: of num. */
static void emit(out_t *o, const char *name, const char *text, const uint64_t *num,
                 const char *unit, const char *source, const char *set_with)
{
    if (!o->json) {
        dl_buf_appendf(&o->b, "%-26s %-32s %-28s %s\n", name, text, source,
                       set_with ? set_with : "");
        return;
    }
    dl_buf_append_str(&o->b, o->n ? ",\n  {\"name\": " : "[\n  {\"name\": ");
    dl_json_put_string(&o->b, name, strlen(name));
    dl_buf_append_str(&o->b, ", \"value\": ");
    if (num != NULL)
        dl_buf_append_u64(&o->b, *num);
    else
        dl_json_put_string(&o->b, text, strlen(text));
    dl_buf_append_str(&o->b, ", \"unit\": ");
    if (unit != NULL)
        dl_json_put_string(&o->b, unit, strlen(unit));
    else
        dl_buf_append_str(&o->b, "null");
    dl_buf_append_str(&o->b, ", \"text\": ");
    dl_json_put_string(&o->b, text, strlen(text));
    dl_buf_append_str(&o->b, ", \"source\": ");
    dl_json_put_string(&o->b, source, strlen(source));
    dl_buf_append_str(&o->b, ", \"set_with\": ");
    dl_json_put_string(&o->b, set_with ? set_with : "", set_with ? strlen(set_with) : 0);
    dl_buf_append_char(&o->b, '}');
    o->n++;
}

/* "DEVLOOP_MAX_BODY" -> "max_body" */
static void key_of(const char *env, char *buf, size_t len)
{
    if (strncmp(env, "DEVLOOP_", 8) == 0)
        env += 8;
    size_t i = 0;
    for (; env[i] && i < len - 1; i++)
        buf[i] = (char)dl_tolower((unsigned char)env[i]);
    buf[i] = '\0';
}

/* Whether the option name (not NUL-terminated) holds word, any case. */
static int name_has(const char *name, size_t len, const char *word)
{
    size_t wl = strlen(word);
    for (size_t i = 0; i + wl <= len; i++)
        if (strncasecmp(name + i, word, wl) == 0)
            return 1;
    return 0;
}

/* A query option whose value may carry a credential: a password, secret,
 * token or key by name, or authMechanismProperties (AWS_SESSION_TOKEN:...
 * and the like hide inside its value). */
static int secret_option(const char *name, size_t len)
{
    static const char *const words[] = {"pass", "pwd", "secret", "token", "credential",
                                        "authmechanismproperties", "apikey", "api_key"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(words); i++)
        if (name_has(name, len, words[i]))
            return 1;
    return 0;
}

/* A URI with the password of its userinfo, and the whole value of any query
 * option that may carry a credential (secret_option), replaced by "***". */
static void mask_uri(const char *uri, char *buf, size_t len)
{
    dl_buf_t b = DL_BUF_INIT;
    const char *p = uri, *scheme = strstr(uri, "://");
    if (scheme != NULL) {
        const char *auth = scheme + 3;
        /* mongoc takes the userinfo from the text before the first '/',
         * '?' and '#' included (mongodb://u:PA?SS@h/db has the password
         * "PA?SS"); the last '@' there masks at least all of it */
        size_t alen = strcspn(auth, "/");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        dl_buf_append(&b, uri, (size_t)(auth - uri));
        p = auth;
        if (at != NULL) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            /* redis://secret@host: a lone userinfo is the password there */
            int lone_is_pw = strncmp(uri, "redis", 5) == 0;
            if (colon != NULL)
                dl_buf_append(&b, auth, (size_t)(colon - auth + 1));
            if (colon != NULL || lone_is_pw)
                dl_buf_append_str(&b, "***");
            else
                dl_buf_append(&b, auth, (size_t)(at - auth));
            p = at;
        }
    }
    const char *q = strchr(p, '?');
    dl_buf_append(&b, p, q ? (size_t)(q - p) : strlen(p));
    while (q != NULL) {
        const char *opt = q + 1, *end = strpbrk(opt, "&;#");
        size_t olen = end ? (size_t)(end - opt) : strlen(opt);
        const char *eq = memchr(opt, '=', olen);
        size_t nlen = eq ? (size_t)(eq - opt) : 0;
        dl_buf_append_char(&b, *q);
        if (eq != NULL && secret_option(opt, nlen)) {
            dl_buf_append(&b, opt, nlen + 1);
            dl_buf_append_str(&b, "***");
        } else {
            dl_buf_append(&b, opt, olen);
        }
        q = end;
    }
    snprintf(buf, len, "%.*s", (int)b.len, b.data ? b.data : "");
    dl_buf_free(&b);
}

static void print_server(out_t *o, const dl_config_t *cfg)
{
    char text[1400], src[64];
    emit(o, "app_dir", cfg->app_dir, NULL, NULL, "argument", "APP_DIR");
    if (cfg->no_listen) {
        emit(o, "listen", "none", NULL, NULL, "program", "--listen");
    } else if (cfg->n_listen == 0) {
        snprintf(text, sizeof(text), "127.0.0.1:%llu",
                 (unsigned long long)dl_env_u64("PORT"));
        emit(o, "listen", text, NULL, NULL, source_of(o, NULL, 0, "PORT", src, sizeof(src)),
             "--listen, PORT");
    }
    for (int i = 0; i < cfg->n_listen && !cfg->no_listen; i++) {
        const dl_listen_opts_t *lo = &cfg->listen_opts[i];
        int w = snprintf(text, sizeof(text), "%s", cfg->listen[i]);
        if (lo->n_certs > 0)
            snprintf(text + w, sizeof(text) - (size_t)w, " (TLS: %s%s)", lo->tls_cert[0],
                     lo->n_certs > 1 ? ", ..." : "");
        else if (lo->https_redirect)
            snprintf(text + w, sizeof(text) - (size_t)w, " (redirects to HTTPS)");
        emit(o, "listen", text, NULL, NULL, flag_given(o, "--listen") ? "flag --listen" : "program",
             "--listen");
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = cfg->workers > 0 ? cfg->workers : cores > 0 ? (int)cores : 1;
    uint64_t nw = (uint64_t)(workers > 256 ? 256 : workers);
    snprintf(text, sizeof(text), "%llu%s", (unsigned long long)nw,
             cfg->workers > 0 ? "" : " (one per core)");
    emit(o, "workers", text, &nw, NULL,
         source_of(o, "--workers", cfg->workers != 0, NULL, src, sizeof(src)), "--workers");
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    emit(o, "log_level", cfg->log_level >= 0 && cfg->log_level < 4 ? levels[cfg->log_level] : "?",
         NULL, NULL,
         source_of(o, "--log-level", cfg->log_level != o->fresh.log_level, "LOG_LEVEL", src,
                   sizeof(src)),
         "--log-level, LOG_LEVEL");
    const char *ld = getenv("DEVLOOP_LOG_DIR");
    if (ld == NULL || *ld == '\0')
        snprintf(text, sizeof(text), "%s/logs", cfg->app_dir);
    else
        snprintf(text, sizeof(text), "%s", strcmp(ld, "-") == 0 ? "none (console only)" : ld);
    emit(o, "log_dir", text, NULL, NULL, source_of(o, NULL, 0, "DEVLOOP_LOG_DIR", src, sizeof(src)),
         "DEVLOOP_LOG_DIR (- for none)");
    if (cfg->pid_file == NULL)
        snprintf(text, sizeof(text), "%s/data/devloop.pid", cfg->app_dir);
    else
        snprintf(text, sizeof(text), "%s", cfg->pid_file[0] ? cfg->pid_file : "none");
    emit(o, "pid_file", text, NULL, NULL,
         source_of(o, "--pid-file", cfg->pid_file != NULL, NULL, src, sizeof(src)),
         "--pid-file");
    snprintf(text, sizeof(text), "%s", cfg->hsts && cfg->hsts[0] ? cfg->hsts : "off");
    source_of(o, "--hsts", cfg->hsts != o->fresh.hsts, "DEVLOOP_HSTS", src, sizeof(src));
    /* DEVLOOP_HSTS="" is set (it turns HSTS off), though env_set says not */
    if (strcmp(src, "default") == 0 && getenv("DEVLOOP_HSTS") != NULL)
        snprintf(src, sizeof(src), "env DEVLOOP_HSTS");
    emit(o, "hsts", text, NULL, NULL, src, "--hsts, DEVLOOP_HSTS");
    const char *ch = getenv("DEVLOOP_CANONICAL_HOST");
    emit(o, "canonical_host", ch && *ch ? ch : "none (the request's Host)", NULL, NULL,
         source_of(o, "--canonical-host", 0, "DEVLOOP_CANONICAL_HOST", src, sizeof(src)),
         "--canonical-host, DEVLOOP_CANONICAL_HOST");
    const char *tp = getenv("DEVLOOP_TRUSTED_PROXIES");
    emit(o, "trusted_proxies", tp && *tp ? tp : "none (req.ip is the socket peer)", NULL, NULL,
         source_of(o, NULL, 0, "DEVLOOP_TRUSTED_PROXIES", src, sizeof(src)),
         "DEVLOOP_TRUSTED_PROXIES");
}

static void print_vars(out_t *o, const dl_config_t *cfg, int has_redis, int has_mongo)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(vars); i++) {
        const env_var_t *v = &vars[i];
        if (v->need == HIDDEN)
            continue;
        uint64_t n;
        (void)env_parse(v, &n, NULL, 0);
        int changed = 0;
        if (v->ft != F_NONE) {
            n = field_get(cfg, v);
            changed = n != field_get(&o->fresh, v);
        }
        char key[64], text[160], src[64], with[96];
        key_of(v->name, key, sizeof(key));
        human(text, sizeof(text), v->kind, n, v->unit);
        size_t w = strlen(text);
        if (n == 0 && v->zero != NULL && v->kind != DL_ENV_BOOL)
            w += (size_t)snprintf(text + w, sizeof(text) - w, " (%s)", v->zero);
        if ((v->need == NO_REDIS && has_redis) || (v->need == MONGO && !has_mongo))
            snprintf(text + w, sizeof(text) - w, " (unused: %s)",
                     v->need == MONGO ? "no MONGO_URI" : "Redis cache");
        snprintf(with, sizeof(with), "%s%s%s", v->flag ? v->flag : "", v->flag ? ", " : "",
                 v->name);
        const char *unit = v->kind == DL_ENV_SIZE ? "bytes"
                           : v->kind == DL_ENV_MS ? "ms"
                           : v->kind == DL_ENV_S  ? "s"
                                               : v->unit;
        emit(o, key, text, v->kind == DL_ENV_BOOL ? NULL : &n, unit,
             source_of(o, v->flag, changed, v->name, src, sizeof(src)), with);
    }
}

static void print_backends(out_t *o, const dl_config_t *cfg)
{
    char text[1400], src[64];
    const char *mongo = getenv("MONGO_URI");
    if (mongo && *mongo) {
        mask_uri(mongo, text, sizeof(text));
        emit(o, "store", "mongodb", NULL, NULL, "env MONGO_URI", "MONGO_URI, DEVLOOP_DB");
        emit(o, "mongo_uri", text, NULL, NULL, "env MONGO_URI", "MONGO_URI");
    } else {
        const char *db = getenv("DEVLOOP_DB");
        emit(o, "store", "sqlite", NULL, NULL, "default", "MONGO_URI, DEVLOOP_DB");
        if (db && *db)
            snprintf(text, sizeof(text), "%s", db);
        else
            snprintf(text, sizeof(text), "%s/data/devloop.db", cfg->app_dir);
        emit(o, "db", text, NULL, NULL, source_of(o, NULL, 0, "DEVLOOP_DB", src, sizeof(src)),
             "DEVLOOP_DB");
        int ms = 0;
        char err[256];
        (void)dl_sqlite_busy_timeout_env(&ms, err, sizeof(err));
        uint64_t n = (uint64_t)ms;
        human(text, sizeof(text), DL_ENV_MS, n, NULL);
        emit(o, "db_busy_timeout_ms", text, &n, "ms",
             source_of(o, NULL, 0, "DEVLOOP_DB_BUSY_TIMEOUT_MS", src, sizeof(src)),
             "DEVLOOP_DB_BUSY_TIMEOUT_MS");
    }

    dl_redis_config_t rc;
    char err[256];
    int has_redis = dl_redis_config_from_env(&rc, err, sizeof(err)) == 1;
    if (has_redis) {
        int w = snprintf(text, sizeof(text), "redis://");
        if (rc.username[0] || rc.password[0])
            w += snprintf(text + w, sizeof(text) - (size_t)w, "%s%s@", rc.username,
                          rc.password[0] ? ":***" : "");
        snprintf(text + w, sizeof(text) - (size_t)w, strchr(rc.host, ':') ? "[%s]:%d/%d"
                                                                         : "%s:%d/%d",
                 rc.host, rc.port, rc.db);
        static const char *const names[] = {"REDIS_URL", "REDIS_HOST", "REDIS_PORT",
                                            "REDIS_PASSWORD", "REDIS_DB"};
        for (size_t i = 0; i < DL_ARRAY_SIZE(names); i++)
            if (env_set(names[i])) {
                snprintf(src, sizeof(src), "env %s", names[i]);
                break;
            }
    } else {
        snprintf(text, sizeof(text), "none (in-process cache and jobs)");
        snprintf(src, sizeof(src), "default");
    }
    emit(o, "redis", text, NULL, NULL, src,
         "REDIS_URL, or REDIS_HOST/PORT/USERNAME/PASSWORD/DB");
    const struct { const char *env; dl_env_kind_t kind; uint64_t n; } rv[] = {
        {"REDIS_POOL_SIZE", DL_ENV_COUNT, (uint64_t)rc.pool_size},
        {"REDIS_COMMAND_TIMEOUT_MS", DL_ENV_MS, rc.cmd_timeout_ms},
        {"REDIS_CONNECT_TIMEOUT_MS", DL_ENV_MS, rc.connect_timeout_ms},
        {"REDIS_BREAKER_THRESHOLD", DL_ENV_COUNT, (uint64_t)rc.breaker_threshold},
        {"REDIS_BREAKER_COOLDOWN_MS", DL_ENV_MS, rc.breaker_cooldown_ms},
        {"REDIS_RECONNECT_MAX_MS", DL_ENV_MS, rc.reconnect_max_ms},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(rv); i++) {
        char key[64];
        key_of(rv[i].env, key, sizeof(key));
        human(text, sizeof(text), rv[i].kind, rv[i].n, NULL);
        size_t w = strlen(text);
        if (rv[i].n == 0 && rv[i].kind == DL_ENV_COUNT)
            w += (size_t)snprintf(text + w, sizeof(text) - w, " (off)");
        if (!has_redis)
            snprintf(text + w, sizeof(text) - w, " (unused: no Redis)");
        emit(o, key, text, &rv[i].n, rv[i].kind == DL_ENV_MS ? "ms" : NULL,
             source_of(o, NULL, 0, rv[i].env, src, sizeof(src)), rv[i].env);
    }

    const char *tf = getenv("DEVLOOP_TOKENS_FILE");
    if (tf && *tf)
        snprintf(text, sizeof(text), "%s", tf);
    else
        snprintf(text, sizeof(text), "%s/tokens.json", cfg->app_dir);
    emit(o, "tokens_file", text, NULL, NULL,
         source_of(o, NULL, 0, "DEVLOOP_TOKENS_FILE", src, sizeof(src)), "DEVLOOP_TOKENS_FILE");
    emit(o, "secret", env_set("DEVLOOP_SECRET") ? "*** (set)" : "random per process", NULL, NULL,
         source_of(o, NULL, 0, "DEVLOOP_SECRET", src, sizeof(src)), "DEVLOOP_SECRET");
    const char *sd = getenv("DEVLOOP_SCRIPTS_DIR");
    emit(o, "scripts_dir", sd && *sd ? sd : "embedded in the binary", NULL, NULL,
         source_of(o, NULL, 0, "DEVLOOP_SCRIPTS_DIR", src, sizeof(src)), "DEVLOOP_SCRIPTS_DIR");
}

int dl_config_print(const dl_config_t *cfg, const char *const *flags, int json, FILE *f,
                    char *errbuf, size_t errlen)
{
    if (cfg == NULL || cfg->app_dir == NULL || f == NULL) {
        snprintf(errbuf, errlen, "no app folder given\n");
        return DL_EINVAL;
    }
    int rc = dl_config_check(cfg, errbuf, errlen);
    int https_port;
    if (rc == 0 && !cfg->no_listen)
        rc = dl_config_load_tls(cfg, NULL, &https_port, errbuf, errlen);
    if (rc != 0)
        return rc;
    out_t o = {.b = DL_BUF_INIT, .json = json, .flags = flags};
    dl_config_init(&o.fresh);
    const char *mongo = getenv("MONGO_URI");
    dl_redis_config_t redis;
    int has_redis = dl_redis_config_from_env(&redis, NULL, 0) == 1;
    print_server(&o, cfg);
    print_vars(&o, cfg, has_redis, mongo && *mongo);
    print_backends(&o, cfg);
    if (json)
        dl_buf_append_str(&o.b, o.n ? "\n]\n" : "[]\n");
    if (o.b.oom) {
        dl_buf_free(&o.b);
        snprintf(errbuf, errlen, "out of memory\n");
        return DL_ENOMEM;
    }
    fwrite(o.b.data, 1, o.b.len, f);
    dl_buf_free(&o.b);
    return fflush(f) == 0 ? 0 : DL_EIO;
}
