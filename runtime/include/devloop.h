/*
 * devloop.h - the public embedding API of the devloop runtime.
 *
 * A runtime is created from a dl_config_t, loads an app folder (app.lua,
 * routes/, jobs/), and serves it on N worker threads, each with its own libuv
 * loop and LuaJIT state. This is the only header embedders include; every
 * other declaration is internal and hidden from the shared library.
 *
 * Ownership: a pointer given to a call is read during the call only, unless
 * its comment says it is kept; what a call hands back is the caller's to free
 * with the matching _free(), or static (never freed) where it says so.
 * Threads: each call names the threads it may run on. A runtime's workers run
 * on threads of their own (or on a host loop, see dl_runtime_attach()).
 *
 * What is process-wide, not per runtime (one process may hold several
 * runtimes, one after another or at once):
 *   - the allocator: dl_runtime_new() installs cfg's malloc_fn/realloc_fn/
 *     free_fn (or the C library's) for the whole library, so every runtime of
 *     a process must use the same three;
 *   - the log level: dl_runtime_new() sets it from cfg->log_level for every
 *     runtime's messages;
 *   - the logger: dl_runtime_run() and dl_runtime_attach() start one
 *     asynchronous logger (console and APP_DIR/logs, DEVLOOP_LOG_DIR) and
 *     install handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT that
 *     write a last record and then run the handler that was there before;
 *     the runtime's end stops it and puts those handlers back;
 *   - the test clock (`devloop test`'s t.advance): reset to zero by each
 *     dl_runtime_new();
 *   - Lua modules written in C (dl_add_lua_module());
 *   - the environment: dl_config_init() reads it, and dl_runtime_new() sets
 *     UV_THREADPOOL_SIZE to 8 when it is unset (libuv reads it once, at the
 *     first use of its thread pool); with handle_signals, dl_runtime_run()
 *     ignores SIGPIPE and handles SIGTERM, SIGINT and SIGHUP.
 */
#ifndef DEVLOOP_H
#define DEVLOOP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DL_BUILDING_LIB) && defined(__GNUC__)
#define DL_API __attribute__((visibility("default")))
#else
#define DL_API
#endif

#define DL_VERSION_MAJOR 0
#define DL_VERSION_MINOR 1
#define DL_VERSION_PATCH 0
#define DL_VERSION_STRING "0.1.0"
#define DEVLOOP_VERSION DL_VERSION_STRING

/** The version of the library linked at run time ("0.1.0"); compare with
 * DEVLOOP_VERSION, the header's. Any thread. */
DL_API const char *dl_version(void);

/* Error codes: 0 or a negative DL_E*. Where an errno fits, the value is the
 * negated errno, so uv and system errors translate without a table. */
#define DL_ERRNO_MAP(XX)                                                   \
    XX(ENOMEM, -12, "out of memory")                                       \
    XX(EINVAL, -22, "invalid argument")                                    \
    XX(ENOENT, -2, "no such file or directory")                            \
    XX(EIO, -5, "i/o error")                                               \
    XX(EADDRINUSE, -98, "address already in use")                          \
    XX(ETIMEDOUT, -110, "timed out")                                       \
    XX(ECANCELED, -125, "operation canceled")                              \
    XX(ELUA, -4001, "lua error")                                           \
    XX(ESCRIPT, -4002, "script failed to load")                            \
    XX(EROUTE, -4003, "route conflict")                                    \
    XX(ECODEC, -4004, "malformed payload")                                 \
    XX(ETOOBIG, -4005, "payload too large")                                \
    XX(EREDIS, -4006, "redis error")                                       \
    XX(EOFFLINE, -4007, "redis offline queue full")                        \
    XX(EDUPKEY, -4008, "duplicate key")                                    \
    XX(EQUERY, -4009, "unsupported query")                                 \
    XX(EPROTO, -71, "protocol error")                                      \
    XX(EOF, -4010, "end of stream")                                        \
    XX(EPLAIN, -4011, "plain HTTP sent to a TLS port")                     \
    XX(EUNAVAIL, -4012, "backend unavailable")                             \
    XX(EUNKNOWN, -4013, "connection lost after sending; outcome unknown")  \
    XX(EDNS, -4014, "name resolution failed")                              \
    XX(ECONNECT, -4015, "connection failed")                               \
    XX(ETLS, -4016, "TLS failed")                                          \
    XX(ECONNRESET, -104, "the client is gone")                             \
    XX(ELOOP, -40, "in-process requests nested too deep")                  \
    XX(EROFS, -30, "database is read-only")                                \
    XX(EBUSY, -16, "database is locked")                                   \
    XX(ENOSPC, -28, "database or disk is full")                            \
    XX(ECANTOPEN, -4101, "cannot open the database file")

enum {
#define XX(name, val, msg) DL_##name = (val),
    DL_ERRNO_MAP(XX)
#undef XX
};

/** Message for a DL_E* code (or a negated errno); never NULL, static. Any thread. */
DL_API const char *dl_strerror(int err);
/** Symbolic name ("ENOMEM") for a DL_E* code; never NULL, static. Any thread. */
DL_API const char *dl_err_name(int err);

/** Log levels, lowest first. */
typedef enum {
    DL_LOG_DEBUG = 0,
    DL_LOG_INFO,
    DL_LOG_WARN,
    DL_LOG_ERROR,
} dl_log_level_t;

/** Parses "debug", "info", "warn", "error"; returns -1 when unknown. Any thread. */
DL_API int dl_log_level_parse(const char *s);

#define DL_MAX_LISTEN 8
#define DL_MAX_TLS_CERTS 8

/** What one listener serves besides plain HTTP/1.x and h2c. */
typedef struct dl_listen_opts_s {
    const char *tls_cert[DL_MAX_TLS_CERTS]; /* PEM files, a chain each (leaf first) */
    const char *tls_key[DL_MAX_TLS_CERTS];  /* PEM key files, one per certificate; both
                                               paths are copied by dl_runtime_new() (the
                                               TLS context keeps them for reloads) */
    int n_certs;        /* 0: plain. 1: TLS. More: SNI picks by the certificates' DNS names,
                           the first is the default */
    int https_redirect; /* a plain listener that answers 308 to the first TLS listener */
} dl_listen_opts_t;

/** Runtime configuration. Fill with dl_config_init(), then override.
 * dl_runtime_new() copies it whole, strings included: the caller's struct and
 * strings may go as soon as it returns. */
typedef struct dl_config_s {
    const char *app_dir;              /* copied by dl_runtime_new() */
    const char *listen[DL_MAX_LISTEN]; /* "HOST:PORT"; copied by dl_runtime_new() */
    int n_listen;
    dl_listen_opts_t listen_opts[DL_MAX_LISTEN]; /* per listen[i] */
    int no_listen;                    /* serve no socket (in-process requests only) */
    int workers;                      /* 0: number of cores */
    int log_level;                    /* dl_log_level_t */

    /* HTTP limits; defaults in the README, HTTP behaviour */
    size_t max_uri;                   /* request line target, bytes (414) */
    size_t max_header_bytes;          /* all header lines, bytes (431) */
    int max_headers;                  /* header count (431) */
    size_t max_body;                  /* default body limit, bytes (413) */
    size_t max_body_elements;         /* values in a decoded JSON/MessagePack/form body (413) */
    uint64_t header_timeout_ms;       /* whole request head */
    uint64_t body_timeout_ms;         /* window in which body_min_bytes must arrive */
    size_t body_min_bytes;
    uint64_t keepalive_timeout_ms;    /* idle keep-alive connection */
    uint64_t shutdown_grace_ms;       /* in-flight requests at SIGTERM */
    uint64_t start_timeout_ms;        /* an on_start hook's time limit (0: none) */
    int watch;                        /* hot reload on file changes (default 1) */
    uint64_t watch_debounce_ms;       /* quiet period before a reload */
    const char *pid_file;             /* NULL: APP_DIR/data/devloop.pid; "": none; copied by
                                         dl_runtime_new() */
    uint64_t send_timeout_ms;         /* a client that takes none of a response (socket full or
                                         an HTTP/2 flow-control window kept at 0) for this long
                                         is closed */
    size_t output_high_water;         /* response bytes buffered on a connection above which
                                         it reads and parses nothing more (default 256 KiB) */
    int max_connections;              /* open connections per worker; more are refused */
    int http2;                        /* h2 by ALPN and h2c prior knowledge (default 1) */
    int h2_max_streams;               /* concurrent streams per HTTP/2 connection */
    const char *hsts;                 /* Strict-Transport-Security on TLS answers; "" none;
                                         copied by dl_runtime_new() */
    uint64_t tls_ticket_rotate_s;     /* session-ticket keys rotate this often */
    int gzip_level;                   /* 1..9 */
    size_t compress_min;              /* smallest body worth compressing */

    /* Replaceable allocator (all three or none). */
    void *(*malloc_fn)(size_t);
    void *(*realloc_fn)(void *, size_t);
    void (*free_fn)(void *);

    /* Set by dl_config_init() when an environment variable's value does not
     * parse (naming it, its value and what is accepted); dl_runtime_new()
     * then refuses to start with this message. "" when all is well. */
    char env_error[320];
} dl_config_t;

/** Fills *cfg with defaults and the environment (DEVLOOP_*, GZIP_LEVEL,
 * LOG_LEVEL). A value that does not parse is named in cfg->env_error. Any
 * thread (the environment must not change meanwhile). */
DL_API void dl_config_init(dl_config_t *cfg);

/**
 * Writes the settings a runtime made from cfg would use (`devloop config`),
 * one a line: its name, its value with its unit, where the value came from
 * ("default", "env NAME", "flag --x" for a flag listed in flags, "program"
 * for a field the caller changed after dl_config_init(), "argument") and
 * what sets it; with json, a JSON array of objects {name, value (a number
 * where it is one), unit, text, source, set_with} instead. Passwords in
 * REDIS_URL, REDIS_PASSWORD and MONGO_URI and DEVLOOP_SECRET are masked.
 * Starts, binds, opens and creates nothing. flags: NULL or a NULL-terminated
 * list of the command-line flags given ("--workers", ...). Returns 0, or
 * DL_EINVAL with the message dl_runtime_new() would give in errbuf (and
 * nothing written). Any thread.
 */
DL_API int dl_config_print(const dl_config_t *cfg, const char *const *flags, int json,
                           FILE *out, char *errbuf, size_t errlen);

typedef struct dl_runtime_s dl_runtime_t;

/**
 * Creates a runtime for cfg->app_dir: loads every script once to check it,
 * reserves each listening address for this runtime (an address another
 * process holds is DL_EADDRINUSE, the message naming it and, when it is a
 * devloop, its pid; port 0 is given its kernel port here), then opens the
 * embedded store (or connects the configured backends). cfg is
 * copied (its strings too). Any thread; the runtime is then used from that
 * thread (dl_runtime_stop/reload/request excepted). Returns 0 and *out (free
 * it with dl_runtime_free()), or a DL_E* (DL_ESCRIPT for script errors,
 * DL_EINVAL for a bad configuration) with a message written to errbuf.
 */
DL_API int dl_runtime_new(const dl_config_t *cfg, dl_runtime_t **out, char *errbuf,
                          size_t errlen);

/**
 * Takes the pid file (DL_EBUSY, logged, when another live instance holds
 * it; a stale one is replaced), binds the listeners (none with
 * cfg.no_listen), starts cfg.workers threads
 * and blocks the calling thread until dl_runtime_stop() or, when
 * handle_signals is set, SIGTERM/SIGINT (SIGHUP reloads). Call once per
 * runtime. Returns 0 after a clean stop, or a DL_E* (a listener could not be
 * bound, a worker could not start).
 */
DL_API int dl_runtime_run(dl_runtime_t *rt, int handle_signals);

/** Asks a running runtime to stop gracefully; returns at once. Any thread. */
DL_API void dl_runtime_stop(dl_runtime_t *rt);

/** Frees a runtime whose dl_runtime_run() returned (or never ran), with
 * everything it owns. Never while it runs. NULL is a no-op. */
DL_API void dl_runtime_free(dl_runtime_t *rt);

/**
 * Reloads the app: every script is loaded in a scratch state first; only when
 * all load does each worker switch new requests to the new generation
 * (requests in flight finish on the old one). TLS listeners read their
 * certificates again (a failure keeps the loaded ones, and is logged).
 * Asynchronous; any thread.
 */
DL_API void dl_runtime_reload(dl_runtime_t *rt);

/** The outcome of the reloads so far. */
typedef struct {
    int generation;          /* 1 at start, +1 per successful reload */
    int reloads;             /* successful reloads */
    int failed;              /* reloads refused because a script failed */
    double last_reload_time; /* Unix time of the last attempt, 0 if none */
    int last_ok;             /* 1 if the last attempt succeeded (or none yet) */
    char last_error[2048];   /* "file:line: message" lines of the last failure */
} dl_reload_status_t;

/** Copies the reload status into *out (the caller's). Any thread. */
DL_API void dl_runtime_reload_status(dl_runtime_t *rt, dl_reload_status_t *out);

/**
 * Loads every script of app_dir into a scratch Lua state and reports each
 * error as "file:line: message" lines into errbuf (truncated to errlen).
 * Any thread; nothing is kept. Returns the error count (0: the app loads).
 */
DL_API int dl_app_check(const char *app_dir, char *errbuf, size_t errlen);


/* ========================================================= host-loop mode */

typedef struct uv_loop_s uv_loop_t;

/**
 * Serves on the caller's libuv loop instead of threads of its own: one
 * worker, whose own loop is driven from host (through its backend fd and a
 * timer on host), so the host's handles and timers keep running on host and
 * the worker's never mix with them. Call instead of dl_runtime_run(), on the
 * thread that runs host; then run host as usual. dl_runtime_stop() and
 * dl_runtime_reload() do not apply; stop with dl_runtime_detach().
 * Returns 0, DL_EINVAL (already running) or the error of a listener or the
 * app's load.
 */
DL_API int dl_runtime_attach(dl_runtime_t *rt, uv_loop_t *host);

/**
 * Stops a runtime attached to a host loop, gracefully (in-flight requests
 * finish, bounded by cfg.shutdown_grace_ms; this call blocks until then).
 * The two handles it kept on host close with host's next turn; the runtime
 * may be freed at once. On host's thread.
 */
DL_API void dl_runtime_detach(dl_runtime_t *rt);

/* ==================================================== in-process requests */

/** One field of a response: the name as HTTP/1.1 spells it and the value,
 * neither NUL-terminated; they point into dl_response_t.headers. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} dl_response_field_t;

/** A response to dl_runtime_request(); free with dl_response_free(). */
typedef struct {
    int status;
    const char *headers;   /* the header lines, "Name: value\r\n" each */
    size_t headers_len;
    const char *body;      /* as sent (compressed if Accept-Encoding asked for it) */
    size_t body_len;
    const dl_response_field_t *fields; /* the same fields apart, in the order sent;
                                          a repeated one (Set-Cookie) once each */
    size_t n_fields;
    char *_raw;            /* owns the memory above */
} dl_response_t;

/**
 * Sends a request to the running runtime without a socket: its parts go
 * into the same request core as a socket request's (the same checks, limits,
 * router, handlers, codecs and compression), on worker 0. headers: NULL or a NULL-terminated list of
 * "Name: value" lines (split at the first colon; blanks around the value
 * dropped). The runtime writes the request from these parts: Host is the one
 * given, else "localhost"; Content-Length is body_len's (a given one is
 * dropped). Blocks the calling thread (never a worker's) until the answer, at
 * most timeout_ms (0: 30 s); while dl_runtime_run() starts up it waits for
 * it. Returns 0 and fills *out, DL_ETIMEDOUT, DL_ECANCELED (the runtime is not
 * running), DL_EINVAL at once, before anything is sent (bad arguments: a
 * method that is not a token, a path that does not start with '/' or holds a
 * space, a control (CR, LF...) or a byte over 0x7e, a header that is not
 * "token: value", has a control other than HTAB in its value, is a second
 * Host or is Transfer-Encoding; any of these could smuggle a second request)
 * or DL_ENOMEM.
 */
DL_API int dl_runtime_request(dl_runtime_t *rt, const char *method, const char *path,
                              const char *const *headers, const char *body, size_t body_len,
                              uint64_t timeout_ms, dl_response_t *out);

/** Frees a response's memory (the struct itself is the caller's); NULL or a
 * zeroed response is a no-op. Any thread. */
DL_API void dl_response_free(dl_response_t *res);

/* ===================================================== C modules for Lua */

typedef struct lua_State lua_State;

/**
 * Registers a Lua module written in C: `require(name)` in any app, worker
 * and generation returns what open (a luaopen_* function) returns. Call from
 * the main thread before the first dl_runtime_new(); process-wide; at most
 * 32 modules. Returns 0, DL_EINVAL (bad name) or DL_ENOMEM (too many).
 */
DL_API int dl_add_lua_module(const char *name, int (*open)(lua_State *L));

/** A suspended Lua call (see dl_pending_new()). */
typedef struct dl_pending_s dl_pending_t;

/**
 * From a C function called by a handler or job (on its worker's thread):
 * suspends the calling coroutine, which the C function must then leave with
 * `return lua_yield(L, 0);`. The worker goes on serving. Returns NULL (and
 * nothing is suspended) outside a coroutine of a serving worker.
 */
DL_API dl_pending_t *dl_pending_new(lua_State *L);

/**
 * Completes a suspended call from any thread, exactly once: the coroutine
 * resumes on its worker with the string data (copied here), or with nil and
 * data as the error message when ok is 0. If the request went away meanwhile
 * (client gone, shutdown) the result is dropped safely. Must be called before
 * the runtime is freed. Returns 0 or DL_ENOMEM (then nothing happens).
 */
DL_API int dl_pending_complete(dl_pending_t *p, int ok, const char *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* DEVLOOP_H */
