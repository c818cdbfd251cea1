/*
 * fuzz_runtime.c - the in-process runtime behind the http1 and h2 harnesses:
 * created once per process on a host loop of our own (dl_runtime_attach),
 * whose worker loop we run ourselves between inputs, and torn down at exit
 * so LeakSanitizer sees a clean process.
 */
#include "fuzz_runtime.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devloop.h"
#include "server/server.h"

static uv_loop_t host;
static dl_runtime_t *rt;
static char work_dir[256];

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[8192];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

/* app.lua and routes/ of src into dst */
static void copy_app(const char *src, const char *dst)
{
    static const char *files[] = {"app.lua", "routes/fuzz.lua"};
    char from[1024], to[1024];
    snprintf(to, sizeof(to), "%s/routes", dst);
    if (mkdir(to, 0755) != 0) {
        perror(to);
        abort();
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(from, sizeof(from), "%s/%s", src, files[i]);
        snprintf(to, sizeof(to), "%s/%s", dst, files[i]);
        if (copy_file(from, to) != 0) {
            fprintf(stderr, "fuzz: cannot copy %s to %s\n", from, to);
            abort();
        }
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void stop_runtime(void)
{
    if (rt == NULL)
        return;
    dl_runtime_detach(rt);
    uv_run(&host, UV_RUN_DEFAULT);
    dl_runtime_free(rt);
    rt = NULL;
    uv_loop_close(&host);
    nftw(work_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

dl_worker_t *dl_fuzz_worker(void)
{
    if (rt != NULL)
        return &rt->shared.workers[0];
    const char *app = getenv("DL_FUZZ_APP");
    if (app == NULL)
        app = DL_FUZZ_APP_DIR; /* tests/fuzz/app, from CMake */
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof(work_dir), "%s/devloop-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(work_dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    copy_app(app, work_dir);
    setenv("DEVLOOP_LOG_DIR", "-", 1);
    setenv("DEVLOOP_SECRET", "fuzz-secret", 1);

    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = work_dir;
    cfg.no_listen = 1;
    cfg.workers = 1;
    cfg.watch = 0;
    cfg.pid_file = "";
    cfg.log_level = DL_LOG_ERROR + 1; /* quiet: rejected input is the normal case here */
    /* limits small enough for inputs of a few KB to cross them */
    cfg.max_uri = 512;
    cfg.max_header_bytes = 2048;
    cfg.max_headers = 24;
    cfg.max_body = 2048;
    cfg.h2_max_streams = 8;
    cfg.compress_min = 64;
    char err[4096] = "";
    if (uv_loop_init(&host) != 0 || dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0 ||
        dl_runtime_attach(rt, &host) != 0) {
        fprintf(stderr, "fuzz: cannot start the runtime: %s\n", err);
        abort();
    }
    atexit(stop_runtime);
    return &rt->shared.workers[0];
}

void dl_fuzz_pump(void)
{
    dl_worker_t *w = dl_fuzz_worker();
    for (int i = 0; i < 4; i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
}

static void on_output(dl_conn_t *c, const char *data, size_t len, void *arg)
{
    (void)c;
    dl_fuzz_sink_t *s = arg;
    DL_FUZZ_CHECK(!s->closed, "%s after the connection closed",
                  len ? "bytes written" : "a second close");
    if (len == 0)
        s->closed = 1;
    else
        dl_fuzz_put(&s->out, data, len);
}

void dl_fuzz_conn_run(const uint8_t *payload, size_t len, const dl_fuzz_split_t *split,
                      int bytewise, int h2, dl_fuzz_sink_t *sink)
{
    dl_worker_t *w = dl_fuzz_worker();
    static const uint64_t seed[4] = {0x9e3779b97f4a7c15u, 0xbf58476d1ce4e5b9u, 0x94d049bb133111ebu,
                                     0x2545f4914f6cdd1du};
    memcpy(w->prng, seed, sizeof(seed));
    memset(sink, 0, sizeof(*sink));
    dl_conn_t *c = dl_conn_virtual_new(&w->http1, on_output, sink);
    DL_FUZZ_CHECK(c != NULL, "no connection");
    /* What conn.c does for a plain listener's new connection: the first bytes
     * decide between HTTP/1.1 and the h2c preface. Virtual connections skip
     * that, so the harness sets it (the narrowest way in to h2.c). */
    c->fresh = h2 ? 1 : 0;
    size_t npieces = bytewise ? len : split ? (size_t)split->n_cuts + 1 : 1;
    for (size_t i = 0; i < npieces && !sink->closed; i++) {
        size_t off = 0, n = len;
        if (bytewise) {
            off = i;
            n = 1;
        } else if (split) {
            dl_fuzz_piece(split, (int)i, &off, &n);
        }
        if (n)
            dl_conn_virtual_feed(c, (const char *)payload + off, n);
    }
    dl_fuzz_pump();
    dl_conn_virtual_free(c);
    dl_fuzz_pump();
}
