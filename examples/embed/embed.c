/*
 * embed.c - a small tool that embeds devloop: it serves an app folder from
 * its own main(), stopping on SIGTERM/SIGINT like `devloop serve`, and gives
 * the app's Lua a C module of its own ("embedtool") with one asynchronous
 * function completed from a thread of the tool.
 *
 *   devloop_embed APP_DIR [HOST:PORT]     (examples/embed/app uses embedtool)
 *   devloop_embed APP_DIR --get PATH...   answers in process, no socket, and exits
 *   devloop_embed APP_DIR --cycles N PATH create, answer PATH, destroy, N times
 *   devloop_embed APP_DIR --host-loop SECONDS [HOST:PORT]
 *                                         serves on the tool's own libuv loop, beside a
 *                                         10 ms timer of the tool, under in-process load
 *   devloop_embed --version
 *
 * Built against an installed libdevloop: cc embed.c $(pkg-config --cflags --libs devloop)
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>

#include <devloop.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* ------------------------------------------------ the tool's Lua module */

typedef struct {
    dl_pending_t *pending;
    char *text;
    long ms;
} job_t;

/* another thread: waits, upper-cases, completes the suspended Lua call */
static void *upper_thread(void *arg)
{
    job_t *j = arg;
    struct timespec ts = {j->ms / 1000, (j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    for (char *p = j->text; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    dl_pending_complete(j->pending, 1, j->text, strlen(j->text));
    free(j->text);
    free(j);
    return NULL;
}

/* embedtool.upper_later(s, ms) -> S, after ms milliseconds, without blocking the worker */
static int l_upper_later(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    long ms = (long)luaL_optinteger(L, 2, 10);
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->text = malloc(len + 1)) == NULL) {
        free(j);
        return luaL_error(L, "out of memory");
    }
    memcpy(j->text, s, len + 1);
    j->ms = ms < 0 ? 0 : ms;
    j->pending = dl_pending_new(L);
    if (j->pending == NULL) {
        free(j->text);
        free(j);
        return luaL_error(L, "upper_later must be called from a handler");
    }
    pthread_t th;
    if (pthread_create(&th, NULL, upper_thread, j) != 0) {
        dl_pending_complete(j->pending, 0, "cannot start a thread", 21);
        free(j->text);
        free(j);
    } else {
        pthread_detach(th);
    }
    return lua_yield(L, 0);
}

static int l_version(lua_State *L)
{
    lua_pushstring(L, dl_version());
    return 1;
}

static int luaopen_embedtool(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"upper_later", l_upper_later}, {"version", l_version},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}

/* ------------------------------------------- the runtime on its own thread */

static void *run_thread(void *arg)
{
    dl_runtime_run(arg, 0);
    return NULL;
}

static dl_runtime_t *start_runtime(const char *app, pthread_t *th)
{
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = app;
    cfg.workers = 1;
    cfg.no_listen = 1; /* in-process requests only */
    cfg.log_level = dl_log_level_parse("warn");
    cfg.watch = 0;
    cfg.pid_file = "";
    char err[4096];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s", err);
        return NULL;
    }
    pthread_create(th, NULL, run_thread, rt);
    return rt;
}

static void stop_runtime(dl_runtime_t *rt, pthread_t *th)
{
    dl_runtime_stop(rt);
    pthread_join(*th, NULL);
    dl_runtime_free(rt);
}

static int get(dl_runtime_t *rt, const char *path, int print)
{
    dl_response_t res;
    int rc = dl_runtime_request(rt, "GET", path, NULL, NULL, 0, 10000, &res);
    if (rc != 0) {
        fprintf(stderr, "GET %s: %s\n", path, dl_strerror(rc));
        return -1;
    }
    if (print)
        printf("%d %.*s\n", res.status, (int)res.body_len, res.body);
    int status = res.status;
    dl_response_free(&res);
    return status;
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* create, answer one request, destroy: n times; fds must stay flat */
static int cycles(const char *app, int n, const char *path)
{
    double *ms = calloc((size_t)n, sizeof(double));
    int fds0 = -1;
    for (int i = 0; i < n; i++) {
        if (i == 1)
            fds0 = count_fds(); /* after the first: lazily opened libraries settle */
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pthread_t th;
        dl_runtime_t *rt = start_runtime(app, &th);
        if (rt == NULL || get(rt, path, 0) != 200) {
            fprintf(stderr, "cycle %d failed\n", i);
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms[i] = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        stop_runtime(rt, &th);
    }
    int fds1 = count_fds();
    qsort(ms, (size_t)n, sizeof(double), cmp_double);
    printf("cycles %d fds %d %d create-to-first-response median %.2f ms p99 %.2f ms\n", n, fds0,
           fds1, ms[n / 2], ms[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1]);
    free(ms);
    return fds1 == fds0 || n < 2 ? 0 : 1;
}

/* ------------------------------------------------------- host-loop mode */

typedef struct {
    dl_runtime_t *rt;
    volatile int stop;
    long served;
} load_t;

static void *load_thread(void *arg)
{
    load_t *l = arg;
    while (!l->stop) {
        dl_response_t res;
        if (dl_runtime_request(l->rt, "GET", "/tool/upper/load?ms=0", NULL, NULL, 0, 5000,
                               &res) == 0 && res.status == 200)
            l->served++;
        dl_response_free(&res);
    }
    return NULL;
}

static long ticks;
static uint64_t deadline;

static void on_tick(uv_timer_t *t)
{
    ticks++;
    if (uv_now(t->loop) >= deadline)
        uv_stop(t->loop);
}

static int host_loop(const char *app, double secs, const char *listen)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = app;
    cfg.watch = 0;
    cfg.pid_file = "";
    cfg.log_level = dl_log_level_parse("warn");
    if (listen)
        cfg.listen[cfg.n_listen++] = listen;
    else
        cfg.no_listen = 1;
    char err[4096];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0 || dl_runtime_attach(rt, &loop) != 0) {
        fprintf(stderr, "cannot attach: %s\n", err);
        return 1;
    }
    uv_timer_t tick; /* the host's own timer, on the same loop as the worker */
    uv_timer_init(&loop, &tick);
    uv_update_time(&loop);
    deadline = uv_now(&loop) + (uint64_t)(secs * 1000);
    uv_timer_start(&tick, on_tick, 10, 10);
    load_t l = {rt, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, load_thread, &l);
    uv_run(&loop, UV_RUN_DEFAULT);
    l.stop = 1;
    /* the load thread's last request needs the loop: detach answers it */
    dl_runtime_detach(rt);
    pthread_join(th, NULL);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    dl_runtime_free(rt);
    int rc = uv_loop_close(&loop);
    printf("host-loop %.1f s: %ld ticks of 10 ms (%ld expected), %ld in-process requests, "
           "loop close %d\n", secs, ticks, (long)(secs * 100), l.served, rc);
    return rc == 0 && ticks >= (long)(secs * 100 * 0.8) && l.served > 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        /* the header's version and the linked library's */
        printf("devloop_embed: header %s, library %s\n", DEVLOOP_VERSION, dl_version());
        return strcmp(DEVLOOP_VERSION, dl_version()) == 0 ? 0 : 1;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s APP_DIR [HOST:PORT]\n", argv[0]);
        return 2;
    }
    if (dl_add_lua_module("embedtool", luaopen_embedtool) != 0) {
        fprintf(stderr, "cannot register embedtool\n");
        return 1;
    }
    if (argc > 3 && (strcmp(argv[2], "--cycles") == 0 || strcmp(argv[2], "--get") == 0 ||
                     strcmp(argv[2], "--host-loop") == 0))
        setenv("DEVLOOP_LOG_DIR", "-", 0); /* no log files for one-shot runs */
    if (argc > 3 && strcmp(argv[2], "--host-loop") == 0) {
        double secs = atof(argv[3]);
        if (!(secs > 0)) {
            fprintf(stderr, "--host-loop needs a number of seconds above 0\n");
            return 2;
        }
        return host_loop(argv[1], secs, argc > 4 ? argv[4] : NULL);
    }
    if (argc > 3 && strcmp(argv[2], "--cycles") == 0) {
        int n = atoi(argv[3]);
        if (n < 1) {
            fprintf(stderr, "--cycles needs a count of 1 or more\n");
            return 2;
        }
        return cycles(argv[1], n, argc > 4 ? argv[4] : "/tool/upper/x?ms=0");
    }
    if (argc > 3 && strcmp(argv[2], "--get") == 0) {
        pthread_t th;
        dl_runtime_t *rt = start_runtime(argv[1], &th);
        if (rt == NULL)
            return 1;
        int bad = 0;
        for (int i = 3; i < argc; i++)
            bad |= get(rt, argv[i], 1) < 0;
        stop_runtime(rt, &th);
        return bad;
    }
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = argv[1];
    cfg.workers = 1;
    if (argc > 2)
        cfg.listen[cfg.n_listen++] = argv[2];
    char err[4096];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s", err);
        return 1;
    }
    int rc = dl_runtime_run(rt, 1);
    dl_runtime_free(rt);
    return rc == 0 ? 0 : 1;
}
