/*
 * fuzz_runtime.c - the in-process runtime behind the http1 and h2 harnesses:
 * created once per process on a host loop of our own (dl_runtime_attach),
 * whose worker loop we run ourselves between inputs, and torn down at exit
 * so LeakSanitizer sees a clean process. Each input goes through a real
 * loopback TCP connection the worker adopts as its accept callback would
 * (conn.c reads it as any socket).
 */
#include "fuzz_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

/* A loopback TCP pair: the harness holds *client, the worker gets *server. */
static void tcp_pair(int *client, int *server)
{
    static int lfd = -1;
    static struct sockaddr_in addr;
    if (lfd < 0) {
        socklen_t alen = sizeof(addr);
        memset(&addr, 0, sizeof(addr));
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        DL_FUZZ_CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
                          listen(lfd, 16) == 0 &&
                          getsockname(lfd, (struct sockaddr *)&addr, &alen) == 0,
                      "no loopback listener");
    }
    /* closed with a reset, so no input leaves a TIME-WAIT behind: thousands
     * of inputs a second would use up the ephemeral ports within a minute.
     * A machine busy with other tests may still refuse a connect for a
     * moment (a full accept queue, ports in use): tried again, then the
     * reason is named. */
    struct linger lg = {1, 0};
    int err = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        DL_FUZZ_CHECK(*client >= 0, "cannot make a socket");
        setsockopt(*client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        if (connect(*client, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
            err = 0;
            break;
        }
        err = errno;
        close(*client);
        usleep(10000);
    }
    if (err != 0)
        fprintf(stderr, "connect to the loopback listener: %s\n", strerror(err));
    DL_FUZZ_CHECK(err == 0, "cannot connect to the loopback listener");
    *server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    DL_FUZZ_CHECK(*server >= 0, "cannot accept");
    int one = 1;
    setsockopt(*client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(*client, F_SETFL, fcntl(*client, F_GETFL) | O_NONBLOCK);
}

/* What the connection wrote so far; closed once it ended its side. */
static void take_output(int fd, dl_fuzz_sink_t *s)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            DL_FUZZ_CHECK(!s->closed, "bytes written after the connection closed");
            dl_fuzz_put(&s->out, buf, (size_t)n);
        } else if (n == 0) {
            s->closed = 1;
            return;
        } else if (errno == EINTR) {
            continue;
        } else {
            return; /* EAGAIN: nothing more now; ECONNRESET: closed with a reset */
        }
    }
}

/* The worker takes a connection as its accept callback does (server/worker.c). */
static dl_conn_t *adopt(dl_worker_t *w, int fd)
{
    dl_conn_t *c = dl_calloc(1, sizeof(*c));
    DL_FUZZ_CHECK(c != NULL && uv_tcp_init(&w->loop, &c->tcp) == 0, "no connection");
    c->host = &w->http1;
    c->file_fd = -1;
    c->tcp.data = c;
    dl_list_insert_head(&w->conns, &c->link);
    w->n_conns++;
    DL_FUZZ_CHECK(uv_tcp_open(&c->tcp, fd) == 0, "uv_tcp_open failed");
    dl_conn_start(&w->http1, c, 0, NULL);
    return c;
}

void dl_fuzz_conn_run(const uint8_t *payload, size_t len, const dl_fuzz_split_t *split,
                      int bytewise, int h2, dl_fuzz_sink_t *sink)
{
    dl_worker_t *w = dl_fuzz_worker();
    static const uint64_t seed[4] = {0x9e3779b97f4a7c15u, 0xbf58476d1ce4e5b9u, 0x94d049bb133111ebu,
                                     0x2545f4914f6cdd1du};
    memcpy(w->prng, seed, sizeof(seed));
    memset(sink, 0, sizeof(*sink));
    int cfd, sfd;
    tcp_pair(&cfd, &sfd);
    dl_conn_t *c = adopt(w, sfd);
    /* a plain listener's connection turns to HTTP/2 on the h2c preface; the
     * http1 harness checks HTTP/1 answers only, so its connection does not */
    c->fresh = h2 ? 1 : 0;
    /* each piece is read by the worker before the next is sent, so the cuts
     * are the reads conn.c sees, as from a socket */
    size_t npieces = bytewise ? len : split ? (size_t)split->n_cuts + 1 : 1;
    for (size_t i = 0; i < npieces && !sink->closed; i++) {
        size_t off = 0, n = len;
        if (bytewise) {
            off = i;
            n = 1;
        } else if (split) {
            dl_fuzz_piece(split, (int)i, &off, &n);
        }
        while (n > 0 && !sink->closed) {
            ssize_t k = send(cfd, payload + off, n, MSG_NOSIGNAL);
            if (k > 0) {
                off += (size_t)k;
                n -= (size_t)k;
            } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
                sink->closed = 1; /* the worker closed with a reset */
            }
            dl_fuzz_pump();
            take_output(cfd, sink);
        }
    }
    dl_fuzz_pump();
    take_output(cfd, sink);
    close(cfd); /* the worker sees the end and closes its side */
    dl_fuzz_pump();
}
