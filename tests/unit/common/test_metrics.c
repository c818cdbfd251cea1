/*
 * test_metrics.c - the metrics registry: definitions and their validation,
 * exact merging of the worker slots, histogram buckets, escaping, rendering
 * while workers update, the series cap, process metrics, output order, the
 * exposition format as promtool sees it, and the hot path's speed.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "devloop.h"
#include "common/metrics.h"
#include "unit.h"

static const char *const http_labels[] = {"method", "path", "status"};

/* The value on the line that starts with `prefix ` in text, or NAN. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return NAN;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Renders into a NUL-terminated string the caller frees with dl_buf_free(). */
static void render(dl_metrics_t *m, dl_buf_t *b)
{
    dl_buf_init(b);
    EXPECT_EQ(dl_metrics_render(m, b), 0);
    dl_buf_append_char(b, '\0');
}

DL_TEST(metrics_define_redefine_conflict)
{
    dl_metrics_t *m = dl_metrics_new(2);
    const double b1[] = {0.1, 1}, b2[] = {0.1, 2};
    const char *const other[] = {"method", "route", "status"};
    int c = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", "Requests.",
                             http_labels, 3, NULL, 0);
    int g = dl_metric_define(m, DL_METRIC_GAUGE, "up", NULL, NULL, 0, NULL, 0);
    int h = dl_metric_define(m, DL_METRIC_HISTOGRAM, "lat_seconds", "Latency.", NULL, 0, b1, 2);
    EXPECT_EQ(c, 0);
    EXPECT_EQ(g, 1);
    EXPECT_EQ(h, 2);
    /* same definition: same id, whatever the help text */
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", "Other help.",
                               http_labels, 3, NULL, 0),
              c);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "lat_seconds", NULL, NULL, 0, b1, 2), h);
    /* an explicit trailing +Inf is the implicit one */
    const double b1inf[] = {0.1, 1, INFINITY};
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "lat_seconds", NULL, NULL, 0, b1inf, 3),
              h);
    /* conflicts: type, labels, label count, buckets */
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_GAUGE, "http_requests_total", NULL, http_labels, 3,
                               NULL, 0),
              DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", NULL, other, 3, NULL,
                               0),
              DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", NULL, http_labels, 2,
                               NULL, 0),
              DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "lat_seconds", NULL, NULL, 0, b2, 2),
              DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "lat_seconds", NULL, NULL, 0, NULL, 0),
              DL_EINVAL);
    /* a histogram's sample names are taken */
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, "lat_seconds_count", NULL, NULL, 0, NULL, 0),
              DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "up_sum_x", NULL, NULL, 0, NULL, 0), 3);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "up", NULL, NULL, 0, NULL, 0), DL_EINVAL);
    /* values: unknown ids and unknown series */
    EXPECT(dl_metric_value(m, 99, NULL) == -1);
    EXPECT(dl_metric_value(m, -1, NULL) == -1);
    const char *const v[] = {"GET", "/", "200"};
    EXPECT(dl_metric_value(m, c, v) == -1);
    EXPECT(dl_metric_value(m, g, NULL) == 0);
    dl_metric_add(m, 0, c, v, 1);
    dl_metric_add(m, 0, c, v, -1); /* counters never go down */
    dl_metric_add(m, 0, c, v, NAN);
    dl_metric_set(m, 0, c, v, 100); /* not a gauge */
    dl_metric_observe(m, 0, c, v, 1); /* not a histogram */
    dl_metric_add(m, 0, 1000, v, 1);  /* unknown id */
    EXPECT(dl_metric_value(m, c, v) == 1);
    dl_metrics_free(m);
    dl_metrics_free(NULL);
}

DL_TEST(metrics_invalid_names)
{
    dl_metrics_t *m = dl_metrics_new(1);
    static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é", "a.b", "a{b"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        int rc = dl_metric_define(m, DL_METRIC_COUNTER, bad_names[i], NULL, NULL, 0, NULL, 0);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("name \"%s\" accepted: %d", bad_names[i], rc);
    }
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, NULL, NULL, NULL, 0, NULL, 0), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, 0, "x", NULL, NULL, 0, NULL, 0), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, 4, "x", NULL, NULL, 0, NULL, 0), DL_EINVAL);
    EXPECT(dl_metric_define(m, DL_METRIC_COUNTER, "ns:sub_total", NULL, NULL, 0, NULL, 0) >= 0);
    EXPECT(dl_metric_define(m, DL_METRIC_COUNTER, "_x", NULL, NULL, 0, NULL, 0) >= 0);

    static const char *const bad_labels[] = {"__name", "a:b", "1a", "", "a-b"};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        const char *const l[] = {bad_labels[i]};
        int rc = dl_metric_define(m, DL_METRIC_GAUGE, "g", NULL, l, 1, NULL, 0);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("label \"%s\" accepted: %d", bad_labels[i], rc);
    }
    const char *const dup[] = {"a", "a"};
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_GAUGE, "g", NULL, dup, 2, NULL, 0), DL_EINVAL);
    const char *const le[] = {"le"};
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, le, 1, NULL, 0), DL_EINVAL);
    EXPECT(dl_metric_define(m, DL_METRIC_GAUGE, "g", NULL, le, 1, NULL, 0) >= 0);
    const char *const one_underscore[] = {"_a"};
    EXPECT(dl_metric_define(m, DL_METRIC_GAUGE, "g2", NULL, one_underscore, 1, NULL, 0) >= 0);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_GAUGE, "g3", NULL, NULL, 1, NULL, 0), DL_EINVAL);

    /* buckets: ascending, finite, histograms only */
    const double desc[] = {1, 0.5}, eq[] = {1, 1}, nan_b[] = {NAN}, ninf[] = {-INFINITY, 1};
    const double ok[] = {1, 2};
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, NULL, 0, desc, 2), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, NULL, 0, eq, 2), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, NULL, 0, nan_b, 1), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, NULL, 0, ninf, 2), DL_EINVAL);
    EXPECT_EQ(dl_metric_define(m, DL_METRIC_COUNTER, "c", NULL, NULL, 0, ok, 2), DL_EINVAL);
    EXPECT(dl_metric_define(m, DL_METRIC_HISTOGRAM, "h", NULL, NULL, 0, ok, 2) >= 0);
    dl_metrics_free(m);
}

typedef struct {
    dl_metrics_t *m;
    int w, id, n;
} add_arg_t;

static void *add_thread(void *p)
{
    add_arg_t *a = p;
    const char *const ok[] = {"GET", "/api/users", "200"};
    const char *const err[] = {"POST", "/api/users", "500"};
    for (int i = 0; i < a->n; i++) {
        dl_metric_add(a->m, a->w, a->id, ok, 1);
        if (i % 10 == 0)
            dl_metric_add(a->m, a->w, a->id, err, 0.5);
    }
    return NULL;
}

DL_TEST(metrics_counters_four_threads_exact)
{
    enum { N = 200000 };
    dl_metrics_t *m = dl_metrics_new(4);
    int id = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", "Requests served.",
                              http_labels, 3, NULL, 0);
    pthread_t t[4];
    add_arg_t a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (add_arg_t){m, i, id, N};
        pthread_create(&t[i], NULL, add_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    dl_metric_add(m, 4, id, (const char *const[]){"GET", "/api/users", "200"}, 7); /* shared */
    dl_buf_t b;
    render(m, &b);
    EXPECT_STR(b.data, "# HELP http_requests_total Requests served.\n"
                       "# TYPE http_requests_total counter\n"
                       "http_requests_total{method=\"GET\",path=\"/api/users\",status=\"200\"} "
                       "800007\n"
                       "http_requests_total{method=\"POST\",path=\"/api/users\",status=\"500\"} "
                       "40000\n");
    EXPECT(dl_metric_value(m, id, (const char *const[]){"GET", "/api/users", "200"}) == 800007);
    EXPECT(dl_metric_value(m, id, (const char *const[]){"POST", "/api/users", "500"}) == 40000);
    EXPECT_EQ(dl_metrics_overflow(m), 0);
    dl_buf_free(&b);
    dl_metrics_free(m);
}

DL_TEST(metrics_gauges)
{
    dl_metrics_t *m = dl_metrics_new(3);
    const char *const wl[] = {"worker"};
    int g = dl_metric_define(m, DL_METRIC_GAUGE, "connections", "Open connections.", NULL, 0,
                             NULL, 0);
    int pw = dl_metric_define(m, DL_METRIC_GAUGE, "worker_queue", "Queued.", wl, 1, NULL, 0);
    dl_buf_t b;
    render(m, &b);
    EXPECT_STR(b.data, "# HELP connections Open connections.\n"
                       "# TYPE connections gauge\n"
                       "connections 0\n"
                       "# HELP worker_queue Queued.\n"
                       "# TYPE worker_queue gauge\n");
    dl_buf_free(&b);
    dl_metric_set(m, 0, g, NULL, 10);
    dl_metric_set(m, 1, g, NULL, 5);
    dl_metric_add(m, 1, g, NULL, -2);
    dl_metric_add(m, 2, g, NULL, -1.5);
    dl_metric_set(m, 3, g, NULL, 0.25); /* the shared slot */
    dl_metric_set(m, 99, g, NULL, 1);   /* out of range: the shared slot too */
    EXPECT(dl_metric_value(m, g, NULL) == 10 + 3 - 1.5 + 1);
    dl_metric_set(m, 0, pw, (const char *const[]){"0"}, 3);
    dl_metric_set(m, 1, pw, (const char *const[]){"1"}, 4);
    dl_metric_set(m, 1, pw, (const char *const[]){"1"}, 2);
    render(m, &b);
    EXPECT_STR(b.data, "# HELP connections Open connections.\n"
                       "# TYPE connections gauge\n"
                       "connections 12.5\n"
                       "# HELP worker_queue Queued.\n"
                       "# TYPE worker_queue gauge\n"
                       "worker_queue{worker=\"0\"} 3\n"
                       "worker_queue{worker=\"1\"} 2\n");
    dl_buf_free(&b);
    dl_metrics_free(m);
}

DL_TEST(metrics_histogram_exact)
{
    dl_metrics_t *m = dl_metrics_new(2);
    const double bounds[] = {0.125, 0.5, 1};
    const char *const rl[] = {"route"};
    int h = dl_metric_define(m, DL_METRIC_HISTOGRAM, "req_seconds", "Latency.", rl, 1, bounds, 3);
    int d = dl_metric_define(m, DL_METRIC_HISTOGRAM, "d_seconds", "Defaults.", NULL, 0, NULL, 0);
    const char *const a[] = {"/a"};
    /* split over two workers and the shared slot */
    dl_metric_observe(m, 0, h, a, 0.0625);
    dl_metric_observe(m, 1, h, a, 0.125); /* le is inclusive */
    dl_metric_observe(m, 0, h, a, 0.25);
    dl_metric_observe(m, 2, h, a, 0.75);
    dl_metric_observe(m, 1, h, a, 2);
    dl_metric_observe(m, 0, h, a, 5);
    dl_metric_observe(m, 0, h, a, NAN); /* ignored */
    dl_metric_observe(m, 0, d, NULL, 0.3);
    EXPECT(dl_metric_value(m, h, a) == 6);
    dl_buf_t b;
    render(m, &b);
    EXPECT_STR(b.data, "# HELP d_seconds Defaults.\n"
                       "# TYPE d_seconds histogram\n"
                       "d_seconds_bucket{le=\"0.005\"} 0\n"
                       "d_seconds_bucket{le=\"0.01\"} 0\n"
                       "d_seconds_bucket{le=\"0.025\"} 0\n"
                       "d_seconds_bucket{le=\"0.05\"} 0\n"
                       "d_seconds_bucket{le=\"0.1\"} 0\n"
                       "d_seconds_bucket{le=\"0.25\"} 0\n"
                       "d_seconds_bucket{le=\"0.5\"} 1\n"
                       "d_seconds_bucket{le=\"1\"} 1\n"
                       "d_seconds_bucket{le=\"2.5\"} 1\n"
                       "d_seconds_bucket{le=\"5\"} 1\n"
                       "d_seconds_bucket{le=\"10\"} 1\n"
                       "d_seconds_bucket{le=\"+Inf\"} 1\n"
                       "d_seconds_sum 0.3\n"
                       "d_seconds_count 1\n"
                       "# HELP req_seconds Latency.\n"
                       "# TYPE req_seconds histogram\n"
                       "req_seconds_bucket{route=\"/a\",le=\"0.125\"} 2\n"
                       "req_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n"
                       "req_seconds_bucket{route=\"/a\",le=\"1\"} 4\n"
                       "req_seconds_bucket{route=\"/a\",le=\"+Inf\"} 6\n"
                       "req_seconds_sum{route=\"/a\"} 8.1875\n"
                       "req_seconds_count{route=\"/a\"} 6\n");
    dl_buf_free(&b);
    dl_metrics_free(m);
}

DL_TEST(metrics_label_escaping)
{
    dl_metrics_t *m = dl_metrics_new(1);
    const char *const l[] = {"path", "q"};
    int id = dl_metric_define(m, DL_METRIC_COUNTER, "hits_total", "Back\\slash and\nnewline \"q\".",
                              l, 2, NULL, 0);
    dl_metric_add(m, 0, id, (const char *const[]){"a\\b\"c\nd", ""}, 1);
    dl_metric_add(m, 0, id, (const char *const[]){"x", NULL}, 2); /* NULL reads as "" */
    dl_metric_add(m, 0, id, (const char *const[]){"", "x"}, 3);   /* not the same series */
    dl_buf_t b;
    render(m, &b);
    EXPECT_STR(b.data, "# HELP hits_total Back\\\\slash and\\nnewline \"q\".\n"
                       "# TYPE hits_total counter\n"
                       "hits_total{path=\"\",q=\"x\"} 3\n"
                       "hits_total{path=\"a\\\\b\\\"c\\nd\",q=\"\"} 1\n"
                       "hits_total{path=\"x\",q=\"\"} 2\n");
    dl_buf_free(&b);
    dl_metrics_free(m);
}

/* ---- rendering while workers update */

typedef struct {
    dl_metrics_t *m;
    int w, c, g, h;
    atomic_int *stop;
    long done;
} upd_arg_t;

static void *update_thread(void *p)
{
    upd_arg_t *a = p;
    char path[32];
    long i = 0;
    while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
        snprintf(path, sizeof path, "/p/%ld", i % 37);
        const char *const v[] = {"GET", path, "200"};
        dl_metric_add(a->m, a->w, a->c, v, 1);
        dl_metric_observe(a->m, a->w, a->h, v + 1, (double)(i % 100) / 50.0);
        dl_metric_set(a->m, a->w, a->g, NULL, (double)i);
        i++;
    }
    a->done = i;
    return NULL;
}

DL_TEST(metrics_render_while_updating)
{
    dl_metrics_t *m = dl_metrics_new(4);
    const char *const pl[] = {"path"};
    int c = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", "Requests.",
                             http_labels, 3, NULL, 0);
    int g = dl_metric_define(m, DL_METRIC_GAUGE, "iterations", "Loop turns.", NULL, 0, NULL, 0);
    int h = dl_metric_define(m, DL_METRIC_HISTOGRAM, "req_seconds", "Latency.", pl, 1, NULL, 0);
    atomic_int stop;
    atomic_init(&stop, 0);
    pthread_t t[4];
    upd_arg_t a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (upd_arg_t){m, i, c, g, h, &stop, 0};
        pthread_create(&t[i], NULL, update_thread, &a[i]);
    }
    double t0 = now_s();
    int renders = 0, late = -1;
    dl_buf_t b = DL_BUF_INIT;
    while (now_s() - t0 < 1.0) {
        dl_buf_reset(&b);
        EXPECT_EQ(dl_metrics_render(m, &b), 0);
        dl_buf_append_char(&b, '\0');
        /* a histogram is always consistent: _count equals the +Inf bucket */
        double inf = sample(b.data, "req_seconds_bucket{path=\"/p/0\",le=\"+Inf\"}");
        double cnt = sample(b.data, "req_seconds_count{path=\"/p/0\"}");
        if (!isnan(inf) && inf != cnt)
            DL_FAIL_AT("+Inf bucket %g, count %g", inf, cnt);
        /* a definition and shared-slot updates while serving */
        if (renders == 5)
            late = dl_metric_define(m, DL_METRIC_COUNTER, "late_total", "Late.", NULL, 0, NULL, 0);
        if (late >= 0)
            dl_metric_add(m, 4, late, NULL, 1);
        renders++;
    }
    atomic_store(&stop, 1);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += a[i].done;
    }
    double sum = 0;
    for (int i = 0; i < 37; i++) {
        char path[32];
        snprintf(path, sizeof path, "/p/%d", i);
        double v = dl_metric_value(m, c, (const char *const[]){"GET", path, "200"});
        if (v > 0)
            sum += v;
    }
    if (sum != (double)total)
        DL_FAIL_AT("counter sum %.0f, updates %ld", sum, total);
    EXPECT(dl_metric_value(m, late, NULL) == renders - 5);
    EXPECT_EQ(dl_metrics_overflow(m), 0);
    printf("# %d renders, %ld updates in 1 s\n", renders, total);
    fflush(stdout); /* the runner's child leaves with _exit() */
    dl_buf_free(&b);
    dl_metrics_free(m);
}

DL_TEST(metrics_series_cap_overflow)
{
    dl_metrics_t *m = dl_metrics_new(2);
    dl_metrics_set_series_cap(m, 10);
    const char *const ul[] = {"user"};
    int id = dl_metric_define(m, DL_METRIC_COUNTER, "user_hits_total", "Hits.", ul, 1, NULL, 0);
    char v[32];
    for (int i = 0; i < 25; i++) {
        snprintf(v, sizeof v, "u%02d", i);
        dl_metric_add(m, 0, id, (const char *const[]){v}, 1);
        dl_metric_add(m, 0, id, (const char *const[]){v}, 1);
    }
    /* 10 series created; 15 combinations dropped twice each */
    EXPECT_EQ(dl_metrics_overflow(m), 30);
    EXPECT(dl_metric_value(m, id, (const char *const[]){"u09"}) == 2);
    EXPECT(dl_metric_value(m, id, (const char *const[]){"u10"}) == -1);
    /* existing series keep counting; the cap is per slot */
    dl_metric_add(m, 0, id, (const char *const[]){"u00"}, 1);
    dl_metric_add(m, 1, id, (const char *const[]){"u20"}, 1);
    EXPECT(dl_metric_value(m, id, (const char *const[]){"u00"}) == 3);
    EXPECT(dl_metric_value(m, id, (const char *const[]){"u20"}) == 1);
    EXPECT_EQ(dl_metrics_overflow(m), 30);
    dl_buf_t b;
    render(m, &b);
    int lines = 0;
    for (const char *p = b.data; *p != '\0'; p++)
        lines += *p == '\n';
    EXPECT_EQ(lines, 2 + 11);
    dl_buf_free(&b);

    /* the default cap holds against a flood of distinct values */
    dl_metrics_set_series_cap(m, 0);
    int id2 = dl_metric_define(m, DL_METRIC_COUNTER, "flood_total", "Flood.", ul, 1, NULL, 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(v, sizeof v, "%d", i);
        dl_metric_add(m, 1, id2, (const char *const[]){v}, 1);
    }
    EXPECT_EQ(dl_metrics_overflow(m), 30 + 5000 - DL_METRICS_DEFAULT_SERIES_CAP);
    dl_metrics_free(m);
}

DL_TEST(metrics_process)
{
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_metrics_render_process(&b), 0);
    dl_buf_append_char(&b, '\0');
    double cpu = sample(b.data, "process_cpu_seconds_total");
    double rss = sample(b.data, "process_resident_memory_bytes");
    double vsz = sample(b.data, "process_virtual_memory_bytes");
    double fds = sample(b.data, "process_open_fds");
    double max = sample(b.data, "process_max_fds");
    double start = sample(b.data, "process_start_time_seconds");
    EXPECT(cpu >= 0);
    EXPECT(rss > 0);
    EXPECT(vsz >= rss);
    EXPECT(fds >= 3);
    EXPECT(max >= fds);
    double now = (double)time(NULL);
    if (!(start > now - 3600 && start <= now + 2))
        DL_FAIL_AT("start time %.2f, now %.0f", start, now);
    EXPECT(strstr(b.data, "# TYPE process_cpu_seconds_total counter\n") != NULL);
    EXPECT(strstr(b.data, "# TYPE process_open_fds gauge\n") != NULL);
    dl_buf_free(&b);
}

/* Builds the same state in a different order each time. */
static void fill(dl_metrics_t *m, int reverse)
{
    static const char *const names[] = {"zeta_total", "alpha_total", "mid_total"};
    static const char *const vals[] = {"b", "a", "c", "ab", ""};
    const char *const l[] = {"k"};
    for (int i = 0; i < 3; i++) {
        int n = reverse ? 2 - i : i;
        dl_metric_define(m, DL_METRIC_COUNTER, names[n], "Order.", l, 1, NULL, 0);
    }
    for (int i = 0; i < 5; i++) {
        int n = reverse ? 4 - i : i;
        for (int id = 0; id < 3; id++)
            dl_metric_add(m, (n + id + reverse) % 3, id, (const char *const[]){vals[n]}, 1 + n);
    }
}

DL_TEST(metrics_deterministic_order)
{
    dl_metrics_t *m1 = dl_metrics_new(3), *m2 = dl_metrics_new(3);
    fill(m1, 0);
    fill(m2, 1);
    dl_buf_t b1, b2;
    render(m1, &b1);
    render(m2, &b2);
    EXPECT_STR(b1.data, b2.data);
    const char *a = strstr(b1.data, "alpha_total{k=\"\"}");
    const char *mid = strstr(b1.data, "# HELP mid_total");
    const char *z = strstr(b1.data, "# HELP zeta_total");
    EXPECT(a != NULL && mid != NULL && z != NULL && a < mid && mid < z);
    EXPECT(strstr(b1.data, "alpha_total{k=\"\"} 5\n"
                           "alpha_total{k=\"a\"} 2\n"
                           "alpha_total{k=\"ab\"} 4\n"
                           "alpha_total{k=\"b\"} 1\n"
                           "alpha_total{k=\"c\"} 3\n") != NULL);
    /* the same bytes on a second render */
    dl_buf_t b3;
    render(m1, &b3);
    EXPECT_STR(b1.data, b3.data);
    dl_buf_free(&b1);
    dl_buf_free(&b2);
    dl_buf_free(&b3);
    dl_metrics_free(m1);
    dl_metrics_free(m2);
}

DL_TEST(metrics_promtool)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("# skipped: promtool not installed\n");
        fflush(stdout);
        return;
    }
    dl_metrics_t *m = dl_metrics_new(2);
    const char *const rl[] = {"route"};
    int c = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total",
                             "HTTP requests by method, path and status.", http_labels, 3, NULL, 0);
    int g = dl_metric_define(m, DL_METRIC_GAUGE, "devloop_connections", "Open connections.",
                             NULL, 0, NULL, 0);
    int h = dl_metric_define(m, DL_METRIC_HISTOGRAM, "http_request_duration_seconds",
                             "Request latency.", rl, 1, NULL, 0);
    dl_metric_define(m, DL_METRIC_COUNTER, "devloop_idle_total", "Never updated.", NULL, 0, NULL,
                     0);
    dl_metric_add(m, 0, c, (const char *const[]){"GET", "/a\\b\"c\nd", "200"}, 3);
    dl_metric_add(m, 1, c, (const char *const[]){"GET", "/x", "404"}, 1);
    dl_metric_set(m, 0, g, NULL, 4);
    dl_metric_observe(m, 0, h, (const char *const[]){"/users/:id"}, 0.042);
    dl_metric_observe(m, 1, h, (const char *const[]){"/users/:id"}, 12);
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_metrics_render(m, &b), 0);
    EXPECT_EQ(dl_metrics_render_process(&b), 0);
    char path[] = "/tmp/dl_metrics_XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0);
    EXPECT_EQ(write(fd, b.data, b.len), (long long)b.len);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 1>&2", path);
    int st = system(cmd);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        DL_FAIL_AT("promtool check metrics failed (%d) on:\n%.*s", st, (int)b.len, b.data);
    unlink(path);
    dl_buf_free(&b);
    dl_metrics_free(m);
}

DL_TEST(metrics_speed)
{
    enum { N = 5000000 };
    dl_metrics_t *m = dl_metrics_new(1);
    int id = dl_metric_define(m, DL_METRIC_COUNTER, "http_requests_total", "Requests.",
                              http_labels, 3, NULL, 0);
    /* a few neighbours in the table, as on a real server */
    char path[32];
    for (int i = 0; i < 50; i++) {
        snprintf(path, sizeof path, "/api/v1/item/%d", i);
        dl_metric_add(m, 0, id, (const char *const[]){"GET", path, "200"}, 1);
    }
    const char *const v[] = {"GET", "/api/v1/users", "200"};
    dl_metric_add(m, 0, id, v, 1);
    double t0 = now_s();
    for (int i = 0; i < N; i++)
        dl_metric_add(m, 0, id, v, 1);
    double dt = now_s() - t0;
    EXPECT(dl_metric_value(m, id, v) == N + 1);
    printf("# dl_metric_add, 3 labels, existing series: %.1f ns/op\n", dt * 1e9 / N);
    fflush(stdout);
    dl_metrics_free(m);
}

/* Values are spelled as the codecs spell them (common/num.c): integers up to
 * 2^53 in digits, the first of %.14g..%.17g that reads back, and the
 * exposition format's +Inf and -Inf. Before issue 19 /metrics had its own
 * copy (%.0f below 1e15, else %.15g or %.17g): it wrote 1e15 as "1e+15",
 * 0.7999999999999999 with 17 digits and 5e-324 with 15. */
DL_TEST(metrics_number_spelling)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.0, "0"},
        {-0.0, "0"},
        {12.5, "12.5"},
        {1e15, "1000000000000000"},
        {1e21, "1e+21"},
        {0.1 + 0.2, "0.30000000000000004"},
        {0.7999999999999999, "0.7999999999999999"},
        {5e-324, "4.9406564584125e-324"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dl_metrics_t *m = dl_metrics_new(1);
        int g = dl_metric_define(m, DL_METRIC_GAUGE, "g", "G.", NULL, 0, NULL, 0);
        dl_metric_set(m, 0, g, NULL, cases[i].v);
        dl_buf_t b;
        render(m, &b);
        char want[128];
        snprintf(want, sizeof want, "# HELP g G.\n# TYPE g gauge\ng %s\n", cases[i].text);
        EXPECT_STR(b.data, want);
        dl_buf_free(&b);
        dl_metrics_free(m);
    }
}

DL_TEST(metrics_gauge_series_handle)
{
    dl_metrics_t *m = dl_metrics_new(2);
    const char *const sl[] = {"state"};
    int g = dl_metric_define(m, DL_METRIC_GAUGE, "pool_conns", "Conns.", sl, 1, NULL, 0);
    int c = dl_metric_define(m, DL_METRIC_COUNTER, "hits_total", "Hits.", sl, 1, NULL, 0);
    const char *const idle[] = {"idle"};
    /* only a known gauge of a worker's own slot gives a handle */
    EXPECT(dl_metric_gauge_series(m, 0, c, idle) == NULL);
    EXPECT(dl_metric_gauge_series(m, 2, g, idle) == NULL);
    EXPECT(dl_metric_gauge_series(m, -1, g, idle) == NULL);
    EXPECT(dl_metric_gauge_series(m, 0, 99, idle) == NULL);
    EXPECT(dl_metric_gauge_series(NULL, 0, g, idle) == NULL);
    dl_metric_series_t *s0 = dl_metric_gauge_series(m, 0, g, idle);
    dl_metric_series_t *s1 = dl_metric_gauge_series(m, 1, g, idle);
    EXPECT(s0 != NULL && s1 != NULL && s0 != s1);
    /* the handle is the series dl_metric_set() finds: one series, not two */
    EXPECT(dl_metric_gauge_series(m, 0, g, idle) == s0);
    dl_metric_series_set(s0, 3);
    dl_metric_series_set(s1, 4);
    EXPECT(dl_metric_value(m, g, idle) == 7);
    dl_metric_set(m, 0, g, idle, 1);
    EXPECT(dl_metric_value(m, g, idle) == 5);
    dl_metric_series_set(s0, NAN); /* ignored, as dl_metric_set() ignores it */
    dl_metric_series_set(NULL, 1);
    EXPECT(dl_metric_value(m, g, idle) == 5);
    dl_buf_t b;
    render(m, &b);
    EXPECT(sample(b.data, "pool_conns{state=\"idle\"}") == 5);
    dl_buf_free(&b);
    /* past the series cap there is no handle */
    dl_metrics_set_series_cap(m, 1);
    EXPECT(dl_metric_gauge_series(m, 0, g, (const char *const[]){"busy"}) == NULL);
    dl_metrics_free(m);
}
