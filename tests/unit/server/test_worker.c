/*
 * test_worker.c - runtime/server/worker.c given a dl_worker_shared_t filled
 * here (worker.h), with no runtime: the worker serves in-process requests on
 * the caller's loop, counts them in the shared metrics, and its app reaches
 * what only the runtime can do (stop, the reload status) through the shared
 * struct's callbacks alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/mem_cache.h"
#include "common/buf.h"
#include "common/metrics.h"
#include "inproc/inproc.h"
#include "server/worker.h"
#include "unit.h"

static int stops;

static void shared_stop(void *arg)
{
    EXPECT(arg == &stops);
    stops++;
}

static void shared_reload_status(void *arg, dl_reload_status_t *out)
{
    EXPECT(arg == &stops);
    out->generation = 7;
    out->reloads = 6;
}

typedef struct {
    int done, status;
    dl_buf_t body;
} answer_t;

static void on_answer(const dl_inproc_answer_t *a, void *arg)
{
    answer_t *an = arg;
    an->done = 1;
    if (a == NULL)
        return;
    an->status = a->status;
    dl_buf_append(&an->body, a->body, a->body_len);
    dl_buf_append_char(&an->body, '\0');
}

/* GET path into w; the loop runs until the answer comes. */
static void ask(dl_worker_t *w, const char *path, answer_t *an)
{
    memset(an, 0, sizeof(*an));
    dl_inproc_req_t in = {.method = "GET", .method_len = 3, .path = path,
                          .path_len = strlen(path)};
    EXPECT_EQ(dl_inproc_request(w->inproc, &in, on_answer, an, NULL, NULL), 0);
    while (!an->done)
        uv_run(&w->loop, UV_RUN_ONCE);
}

DL_TEST(worker_reaches_the_runtime_through_shared)
{
    char dir[64], path[256];
    snprintf(dir, sizeof(dir), "/tmp/dl_worker_XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/routes", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/routes/r.lua", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("local api = require 'devloop'\n"
          "local core = require 'devloop.core'\n"
          "local metrics = require 'devloop.metrics_core'\n"
          "api.get('/status', function()\n"
          "  local s = metrics.reload_status()\n"
          "  return s.generation .. '/' .. s.reloads .. '/' .. core.worker_id()\n"
          "end)\n"
          "api.get('/stop', function() core._stop() return 'stopping' end)\n",
          f);
    fclose(f);

    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = dir;
    cfg.workers = 1;
    cfg.no_listen = 1;
    dl_worker_t w;
    dl_worker_shared_t sh;
    memset(&sh, 0, sizeof(sh));
    sh.cfg = &cfg;
    sh.workers = &w;
    sh.n_workers = 1;
    sh.memcache = dl_memcache_new(1 << 20, 1);
    REQUIRE(sh.memcache != NULL);
    sh.metrics = dl_metrics_new(1);
    REQUIRE(sh.metrics != NULL);
    static const char *const http_labels[] = {"method", "route", "status_code", "protocol"};
    sh.m.requests = dl_metric_define(sh.metrics, DL_METRIC_COUNTER, "t_requests_total", NULL,
                                     http_labels, 4, NULL, 0);
    sh.m.duration = -1;
    sh.http_metrics = 1;
    sh.arg = &stops;
    sh.stop = shared_stop;
    sh.reload_status = shared_reload_status;

    char err[1024];
    int rc = dl_worker_init(&w, &sh, 0, err, sizeof(err));
    if (rc != 0)
        DL_FAIL_AT("dl_worker_init: %s", err);
    REQUIRE(rc == 0);
    REQUIRE(dl_worker_start_on_caller(&w) == 0);
    answer_t an;
    ask(&w, "/status", &an);
    EXPECT_EQ(an.status, 200);
    EXPECT_STR(an.body.data, "7/6/0");
    dl_buf_free(&an.body);
    const char *counted[4] = {"GET", "/status", "200", "HTTP/1.1"};
    EXPECT(dl_metric_value(sh.metrics, sh.m.requests, counted) == 1);
    stops = 0;
    ask(&w, "/stop", &an);
    EXPECT_EQ(an.status, 200);
    EXPECT_EQ(stops, 1);
    dl_buf_free(&an.body);

    dl_worker_stop(&w);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    dl_worker_join(&w);
    dl_memcache_free(sh.memcache);
    dl_metrics_free(sh.metrics);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    EXPECT_EQ(system(cmd), 0);
}
