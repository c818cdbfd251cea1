/*
 * test_log.c - the asynchronous logger: JSON lines with merged fields in
 * combined.log and only errors in error.log, per-thread order under a burst,
 * counted drops with a tiny ring, size rotation, flush/stop, the fatal-signal
 * flush in a crashing child, the synchronous stderr path, control
 * characters escaped on the console and no duplicate keys in JSON lines
 * (issue 17), and a throughput figure printed as a TAP comment.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/log.h"
#include "unit.h"

extern _Atomic int dl_log_test_pause_writer;

/* ---- helpers ----------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_dir(char *dir)
{
    strcpy(dir, "/tmp/dl_log_XXXXXX");
    if (mkdtemp(dir) == NULL)
        DL_FAIL_AT("mkdtemp failed");
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[512];
    for (e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Whole file, NUL-terminated, malloc'd (NULL when missing). */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
        ssize_t r = read(fd, b + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

static char *slurp_in(const char *dir, const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return slurp(path, len);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        if (*s == '\n')
            n++;
    return n;
}

/* A small JSON validator: returns the end of the value at p, or NULL. */
static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static const char *json_value(const char *p);

static const char *json_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p != '"'; p++) {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0')
                        return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
    }
    return p + 1;
}

static const char *json_value(const char *p)
{
    p = skip_ws(p);
    if (*p == '"')
        return json_string(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        int obj = *p == '{';
        p = skip_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                p = json_string(skip_ws(p));
                if (p == NULL)
                    return NULL;
                p = skip_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            p = json_value(p);
            if (p == NULL)
                return NULL;
            p = skip_ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (strncmp(p, "true", 4) == 0)
        return p + 4;
    if (strncmp(p, "false", 5) == 0)
        return p + 5;
    if (strncmp(p, "null", 4) == 0)
        return p + 4;
    const char *s = p;
    if (*p == '-')
        p++;
    while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
           *p == '-')
        p++;
    return p > s ? p : NULL;
}

/* 1 when the line (without its '\n') is one JSON object. */
static int json_line_ok(const char *line, size_t n)
{
    char *c = strndup(line, n);
    const char *e = c[0] == '{' ? json_value(c) : NULL;
    int ok = e != NULL && *skip_ws(e) == '\0';
    free(c);
    return ok;
}

/* Integer value of "key": in a line, or -1. */
static long field_int(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static void start_files(const char *dir, size_t ring, size_t max_bytes, int max_files)
{
    dl_log_config_t cfg;
    dl_log_config_init(&cfg);
    cfg.dir = dir;
    cfg.console = 0;
    cfg.level = DL_LOG_DEBUG;
    cfg.ring_bytes = ring;
    if (max_bytes)
        cfg.max_file_bytes = max_bytes;
    if (max_files >= 0)
        cfg.max_files = max_files;
    EXPECT_EQ(dl_logger_start(&cfg), 0);
}

/* ---- burst threads ------------------------------------------------------ */

typedef struct {
    int id, count, registered;
    double secs;
} burst_t;

static void *burst_main(void *arg)
{
    burst_t *b = arg;
    if (b->registered)
        dl_log_thread_init();
    char f[64];
    double t0 = now_s();
    for (int i = 0; i < b->count; i++) {
        int fl = snprintf(f, sizeof(f), "{\"t\":%d,\"seq\":%d}", b->id, i);
        dl_log_emit(DL_LOG_INFO, NULL, "burst record", 12, f, (size_t)fl);
    }
    b->secs = now_s() - t0;
    if (b->registered)
        dl_log_thread_exit();
    return NULL;
}

static double run_burst(int nthreads, int per_thread, int registered, burst_t *bs)
{
    pthread_t th[8];
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) {
        bs[i].id = i;
        bs[i].count = per_thread;
        bs[i].registered = registered;
        bs[i].secs = 0;
        pthread_create(&th[i], NULL, burst_main, &bs[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    return now_s() - t0;
}

/* Checks per-thread sequence order in text; returns the number of lines. */
static size_t check_order(const char *text, int nthreads, int expect_all)
{
    long last[8];
    for (int i = 0; i < 8; i++)
        last[i] = -1;
    size_t lines = 0, bad = 0;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        char *line = strndup(p, (size_t)(nl - p));
        long t = field_int(line, "t"), s = field_int(line, "seq");
        if (t < 0 || t >= nthreads || s <= last[t] || (expect_all && s != last[t] + 1)) {
            if (bad++ < 3)
                DL_FAIL_AT("out of order: %s (last %ld)", line, t >= 0 && t < 8 ? last[t] : -2);
        } else {
            last[t] = s;
        }
        free(line);
        lines++;
        p = nl + 1;
    }
    EXPECT_EQ(bad, 0);
    return lines;
}

/* ---- tests -------------------------------------------------------------- */

DL_TEST(log_json_lines)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 0, 0, -1);
    const char *f = "{\"a\":1,\"b\":\"x\",\"nested\":{\"k\":[1,2]}}";
    dl_log_emit(DL_LOG_INFO, "r-1", "hello", 5, f, strlen(f));
    const char *m = "he said \"hi\"\nbye\\ \x01 tab\t";
    dl_log_emit(DL_LOG_WARN, NULL, m, strlen(m), " { } ", 5);
    dl_log_req(DL_LOG_ERROR, "r-2", "failed: %d", 42);
    dl_log(DL_LOG_DEBUG, "debug %s", "line");
    dl_log_emit(DL_LOG_ERROR, NULL, "oops", 4, "{\"code\":\"E1\"}", 13);
    dl_log_emit(DL_LOG_INFO, NULL, "not an object", 13, "[1,2]", 5);
    dl_logger_stop();

    char *comb = slurp_in(dir, "combined.log", NULL);
    char *err = slurp_in(dir, "error.log", NULL);
    EXPECT(comb != NULL);
    EXPECT(err != NULL);
    if (comb == NULL || err == NULL)
        goto out;
    EXPECT_EQ(count_lines(comb), 6);
    EXPECT_EQ(count_lines(err), 2);
    for (const char *p = comb; *p;) {
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        if (!json_line_ok(p, (size_t)(nl - p)))
            DL_FAIL_AT("not JSON: %.*s", (int)(nl - p), p);
        EXPECT(strncmp(p, "{\"timestamp\":\"20", 16) == 0);
        EXPECT(p[14 + 23] == 'Z' && p[14 + 19] == '.');
        p = nl + 1;
    }
    EXPECT(strstr(comb, "\"level\":\"info\",\"message\":\"hello\",\"service\":\"devloop\","
                        "\"requestId\":\"r-1\",\"a\":1,\"b\":\"x\",\"nested\":{\"k\":[1,2]}}\n") !=
           NULL);
    EXPECT(strstr(comb, "\"level\":\"warn\",\"message\":\"he said \\\"hi\\\"\\nbye\\\\ \\u0001 "
                        "tab\\t\",\"service\":\"devloop\"}\n") != NULL);
    EXPECT(strstr(comb, "\"message\":\"failed: 42\",\"service\":\"devloop\",\"requestId\":\"r-2\"}")
           != NULL);
    EXPECT(strstr(comb, "\"fields\":\"[1,2]\"") != NULL);
    EXPECT(strstr(comb, "debug line") != NULL);
    EXPECT(strstr(err, "\"level\":\"info\"") == NULL);
    EXPECT(strstr(err, "\"level\":\"warn\"") == NULL);
    EXPECT(strstr(err, "failed: 42") != NULL);
    EXPECT(strstr(err, "\"code\":\"E1\"}") != NULL);
    EXPECT_EQ(dl_log_written(), 6);
    EXPECT_EQ(dl_log_dropped(), 0);
out:
    free(comb);
    free(err);
    remove_dir(dir);
}

/* JSON lines are UTF-8 whatever a record holds: a raw path in the message, a
 * route pattern in an access record's fields, fields that are not an object. */
DL_TEST(log_json_lines_utf8)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 0, 0, -1);
    const char *m = "no route for GET /\xff\xc3 caf\xc3\xa9";
    const char *f = "{\"route\":\"/r\xe9sum\xe9\"}";
    dl_log_emit(DL_LOG_INFO, "r-\xff", m, strlen(m), f, strlen(f));
    dl_log_emit(DL_LOG_INFO, NULL, "x", 1, "\xed\xa0\x80", 3);
    dl_logger_stop();
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT(comb != NULL);
    if (comb == NULL)
        goto out;
    EXPECT(strstr(comb, "\"message\":\"no route for GET /\xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9\","
                        "\"service\":\"devloop\",\"requestId\":\"r-\xef\xbf\xbd\","
                        "\"route\":\"/r\xef\xbf\xbdsum\xef\xbf\xbd\"}\n") != NULL);
    EXPECT(strstr(comb, "\"fields\":\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}\n") != NULL);
    EXPECT(strchr(comb, '\xff') == NULL);
out:
    free(comb);
    remove_dir(dir);
}

/* A field named like one of the record's own keys, or twice, is renamed with
 * "_" in front until unique, whatever its spelling (escapes decoded); fields
 * that cannot be split into members, or that would need too many
 * underscores, are kept as the string form. No line repeats a key. */
DL_TEST(log_json_no_duplicate_keys)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 0, 0, -1);
    const char *f = "{\"level\":\"x\", \"lev\\u0065l\" : \"y\",\"_level\":1,"
                    "\"message\":{\"a\":[1,\"}\"]},\"timestamp\":2,\"a\":1,\"a\":2,"
                    "\"requestId\":\"r\",\"service\":\"s\",\"msg\":3}";
    dl_log_emit(DL_LOG_INFO, "r-1", "dups", 4, f, strlen(f));
    dl_log_emit(DL_LOG_INFO, NULL, "bad", 3, "{\"a\":1,}", 8);
    dl_log_emit(DL_LOG_INFO, NULL, "bad2", 4, "{\"a\" 1}", 7);
    char many[512];
    char *p = many;
    *p++ = '{';
    for (int i = 0; i < 18; i++)
        p += sprintf(p, "%s\"level\":%d", i ? "," : "", i);
    *p++ = '}';
    *p = '\0';
    dl_log_emit(DL_LOG_INFO, NULL, "many", 4, many, strlen(many));
    const char *esc =
        "{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2,\"\\ud800\":3,\"\xef\xbf\xbd\":4}";
    dl_log_emit(DL_LOG_INFO, NULL, "spellings", 9, esc, strlen(esc));
    dl_logger_stop();

    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT(comb != NULL);
    if (comb == NULL)
        goto out;
    EXPECT_EQ(count_lines(comb), 5);
    for (const char *q = comb; *q;) {
        const char *nl = strchr(q, '\n');
        if (nl == NULL)
            break;
        if (!json_line_ok(q, (size_t)(nl - q)))
            DL_FAIL_AT("not JSON: %.*s", (int)(nl - q), q);
        q = nl + 1;
    }
    EXPECT(strstr(comb, "\"message\":\"dups\",\"service\":\"devloop\",\"requestId\":\"r-1\","
                        "\"__level\":\"x\",\"___level\":\"y\",\"_level\":1,"
                        "\"_message\":{\"a\":[1,\"}\"]},\"_timestamp\":2,\"a\":1,\"_a\":2,"
                        "\"_requestId\":\"r\",\"_service\":\"s\",\"msg\":3}\n") != NULL);
    EXPECT(strstr(comb, "\"message\":\"bad\",\"service\":\"devloop\","
                        "\"fields\":\"{\\\"a\\\":1,}\"}\n") != NULL);
    EXPECT(strstr(comb, "\"message\":\"bad2\",\"service\":\"devloop\","
                        "\"fields\":\"{\\\"a\\\" 1}\"}\n") != NULL);
    EXPECT(strstr(comb, "\"message\":\"many\",\"service\":\"devloop\",\"fields\":\"{") != NULL);
    /* one spelling per string: a surrogate pair is the character, a lone
     * surrogate is U+FFFD, as the line writes them */
    EXPECT(strstr(comb, "\"message\":\"spellings\",\"service\":\"devloop\","
                        "\"\xf0\x9f\x98\x80\":1,\"_\xf0\x9f\x98\x80\":2,"
                        "\"\xef\xbf\xbd\":3,\"_\xef\xbf\xbd\":4}\n") != NULL);
out:
    free(comb);
    remove_dir(dir);
}

DL_TEST(log_level_disabled)
{
    EXPECT_EQ(dl_log_level_parse("debug"), DL_LOG_DEBUG);
    EXPECT_EQ(dl_log_level_parse("INFO"), DL_LOG_INFO);
    EXPECT_EQ(dl_log_level_parse("warning"), DL_LOG_WARN);
    EXPECT_EQ(dl_log_level_parse("error"), DL_LOG_ERROR);
    EXPECT_EQ(dl_log_level_parse("loud"), -1);
    EXPECT_EQ(dl_log_level_parse(NULL), -1);
    char dir[64];
    make_dir(dir);
    dl_log_config_t cfg;
    dl_log_config_init(&cfg);
    cfg.dir = dir;
    cfg.console = 0;
    cfg.level = DL_LOG_WARN;
    EXPECT_EQ(dl_logger_start(&cfg), 0);
    EXPECT_EQ(dl_log_min_level, DL_LOG_WARN);
    EXPECT_EQ(dl_logger_start(&cfg), DL_EINVAL);
    int evaluated = 0;
    dl_log(DL_LOG_INFO, "%d", ++evaluated);
    dl_log_emit(DL_LOG_DEBUG, NULL, "x", 1, NULL, 0);
    dl_log(DL_LOG_WARN, "kept %d", 1);
    EXPECT_EQ(evaluated, 0);
    dl_logger_stop();
    EXPECT_EQ(dl_log_written(), 1);
    remove_dir(dir);
}

DL_TEST(log_ring_order)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 8u << 20, 1u << 30, -1);
    burst_t bs[4];
    run_burst(4, 25000, 1, bs);
    dl_logger_stop();
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT(comb != NULL);
    EXPECT_EQ(dl_log_dropped(), 0);
    EXPECT_EQ(dl_log_written(), 100000);
    EXPECT_EQ(check_order(comb, 4, 1), 100000);
    free(comb);
    remove_dir(dir);
}

DL_TEST(log_fallback_order)
{
    /* Unregistered threads share the mutex-protected ring; order per thread holds. */
    char dir[64];
    make_dir(dir);
    start_files(dir, 8u << 20, 1u << 30, -1);
    burst_t bs[4];
    run_burst(4, 10000, 0, bs);
    dl_logger_stop();
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(dl_log_dropped() + check_order(comb, 4, dl_log_dropped() == 0), 40000);
    EXPECT_EQ(dl_log_written() + dl_log_dropped(), 40000);
    free(comb);
    remove_dir(dir);
}

DL_TEST(log_ring_drop)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 4096, 1u << 30, -1);
    burst_t bs[4];
    double wall = run_burst(4, 50000, 1, bs);
    dl_logger_stop();
    uint64_t dropped = dl_log_dropped(), wr = dl_log_written();
    printf("# tiny ring: 200000 emitted in %.3f s, %llu written, %llu dropped\n", wall,
           (unsigned long long)wr, (unsigned long long)dropped);
    fflush(stdout);
    EXPECT_INT(dropped, >, 0);
    EXPECT_EQ(wr + dropped, 200000);
    for (int i = 0; i < 4; i++)
        EXPECT_INT(bs[i].secs, <, 5.0); /* never waits for the writer */
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(check_order(comb, 4, 0), wr);
    free(comb);
    remove_dir(dir);
}

DL_TEST(log_rotation)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 0, 4096, 3);
    char f[64];
    for (int i = 0; i < 2000; i++) {
        int fl = snprintf(f, sizeof(f), "{\"t\":0,\"seq\":%d}", i);
        dl_log_emit(i % 10 == 0 ? DL_LOG_ERROR : DL_LOG_INFO, NULL, "rotating", 8, f,
                    (size_t)fl);
    }
    dl_logger_stop();
    const char *names[] = {"combined.log.3", "combined.log.2", "combined.log.1", "combined.log"};
    long prev_last = -1;
    for (int i = 0; i < 4; i++) {
        size_t len = 0;
        char *s = slurp_in(dir, names[i], &len);
        if (s == NULL) {
            DL_FAIL_AT("%s missing", names[i]);
            continue;
        }
        EXPECT_INT(len, <=, 4096);
        EXPECT_INT(len, >, 0);
        long first = field_int(s, "seq");
        if (prev_last >= 0)
            EXPECT_EQ(first, prev_last + 1); /* continuous across files */
        const char *last = s;
        for (const char *p = strchr(s, '\n'); p && p[1]; p = strchr(p + 1, '\n'))
            last = p + 1;
        prev_last = field_int(last, "seq");
        free(s);
    }
    EXPECT_EQ(prev_last, 1999);
    char *extra = slurp_in(dir, "combined.log.4", NULL);
    EXPECT(extra == NULL);
    free(extra);
    char *e1 = slurp_in(dir, "error.log.1", NULL);
    EXPECT(e1 != NULL); /* 200 error lines also rotated */
    free(e1);
    extra = slurp_in(dir, "error.log.4", NULL);
    EXPECT(extra == NULL);
    free(extra);
    remove_dir(dir);
}

DL_TEST(log_flush_stop)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 1u << 20, 0, -1);
    dl_log_thread_init();
    for (int i = 0; i < 5000; i++)
        dl_log_emit(DL_LOG_INFO, "f", "one", 3, NULL, 0);
    dl_logger_flush();
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(count_lines(comb), 5000);
    free(comb);
    dl_log_thread_exit(); /* on the main thread too: now the fallback ring */
    for (int i = 0; i < 3000; i++)
        dl_log_emit(DL_LOG_INFO, NULL, "two", 3, NULL, 0);
    dl_logger_flush();
    comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(count_lines(comb), 8000);
    free(comb);
    for (int i = 0; i < 2000; i++)
        dl_log_emit(DL_LOG_INFO, NULL, "three", 5, NULL, 0);
    dl_logger_stop();
    dl_logger_stop(); /* twice is harmless */
    dl_logger_flush(); /* and flush after stop returns at once */
    comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(count_lines(comb), 10000);
    free(comb);
    EXPECT_EQ(dl_log_written(), 10000);
    /* a second life: start again on the same files, appending */
    start_files(dir, 1u << 20, 0, -1);
    dl_log_emit(DL_LOG_INFO, NULL, "four", 4, NULL, 0);
    dl_logger_stop();
    comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(count_lines(comb), 10001);
    free(comb);
    remove_dir(dir);
}

static void *exit_thread_main(void *arg)
{
    DL_UNUSED(arg);
    dl_log_thread_init();
    for (int i = 0; i < 1000; i++)
        dl_log_emit(DL_LOG_INFO, NULL, "leaving", 7, NULL, 0);
    dl_log_thread_exit();
    return NULL;
}

DL_TEST(log_thread_exit)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 1u << 20, 0, -1);
    dl_log_test_pause_writer = 1; /* the records are still in the ring at exit */
    pthread_t t;
    pthread_create(&t, NULL, exit_thread_main, NULL);
    pthread_join(t, NULL);
    dl_log_test_pause_writer = 0;
    dl_logger_stop();
    char *comb = slurp_in(dir, "combined.log", NULL);
    EXPECT_EQ(count_lines(comb), 1000);
    free(comb);
    /* a thread leaving while the logger is stopped writes to stderr itself */
    remove_dir(dir);
}

static void crash_child(const char *dir, int sig)
{
    start_files(dir, 1u << 20, 0, -1);
    dl_log_test_pause_writer = 1; /* nothing reaches the file but through the handler */
    for (int i = 0; i < 1000; i++)
        dl_log_emit(i % 2 ? DL_LOG_ERROR : DL_LOG_INFO, "crash", "before the crash", 16, NULL,
                    0);
    pthread_t t;
    pthread_create(&t, NULL, exit_thread_main, NULL); /* a registered ring too */
    pthread_join(t, NULL);
    if (sig == SIGABRT)
        abort();
    raise(sig);
    _exit(0);
}

static void check_crash(int sig)
{
    char dir[64];
    make_dir(dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        crash_child(dir, sig);
    int st = 0;
    waitpid(pid, &st, 0);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* The handler chains to the sanitizer's own, which reports and exits. */
    EXPECT(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
#else
    EXPECT(WIFSIGNALED(st));
    EXPECT_EQ(WIFSIGNALED(st) ? WTERMSIG(st) : 0, sig);
#endif
    char *comb = slurp_in(dir, "combined.log", NULL);
    char *err = slurp_in(dir, "error.log", NULL);
    EXPECT_EQ(count_lines(comb), 2000);
    EXPECT_EQ(count_lines(err), 500);
    free(comb);
    free(err);
    remove_dir(dir);
}

DL_TEST(log_crash_abort)
{
    check_crash(SIGABRT);
}

DL_TEST(log_crash_segv)
{
    check_crash(SIGSEGV);
}

/* Runs fn with fd 2 sent to a file; returns what was written there. */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/dl_log_err_XXXXXX";
    int fd = mkstemp(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *s = slurp(path, NULL);
    unlink(path);
    return s;
}

static void sync_body(void)
{
    dl_log(DL_LOG_INFO, "hello %d", 42);
    dl_log_req(DL_LOG_ERROR, "req-9", "bad %s", "thing");
    dl_log_emit(DL_LOG_WARN, NULL, "with fields", 11, "{\"k\":1}", 7);
}

DL_TEST(log_sync_stderr)
{
    char *s = capture_stderr(sync_body);
    EXPECT(s != NULL);
    EXPECT_EQ(count_lines(s), 3);
    EXPECT(strstr(s, "Z info  hello 42\n") != NULL);
    EXPECT(strstr(s, "Z error [req-9] bad thing\n") != NULL);
    EXPECT(strstr(s, "Z warn  with fields {\"k\":1}\n") != NULL);
    EXPECT(s && strncmp(s, "20", 2) == 0 && s[23] == 'Z');
    EXPECT_EQ(dl_log_written(), 3);
    free(s);
}

static void console_body(void)
{
    dl_log_config_t cfg;
    dl_log_config_init(&cfg);
    cfg.color = 1;
    EXPECT_EQ(dl_logger_start(&cfg), 0);
    dl_log_emit(DL_LOG_ERROR, "r1", "boom", 4, "{\"k\":1}", 7);
    dl_log_emit(DL_LOG_INFO, NULL, "fine", 4, NULL, 0);
    dl_logger_stop();
    dl_log(DL_LOG_INFO, "after %s", "stop"); /* synchronous again */
}

DL_TEST(log_console_color)
{
    char *s = capture_stderr(console_body);
    EXPECT(s != NULL);
    EXPECT(strstr(s, "Z \x1b[31merror\x1b[0m [r1] boom {\"k\":1}\n") != NULL);
    EXPECT(strstr(s, "Z \x1b[32minfo\x1b[0m  fine\n") != NULL);
    EXPECT(strstr(s, "Z info  after stop\n") != NULL);
    free(s);
}

/* Record data from requests, with a newline (a forged line), ESC, C1 (raw
 * and UTF-8), DEL, a bidi override and bytes that are not UTF-8. */
#define HOSTILE_MSG                                                                       \
    "user\n2026-01-01T00:00:00.000Z error forged\r\x1b[31m\x7f\x9b\xc2\x9b\xe2\x80\xae\t\x01 " \
    "ok \xc3\xa9"
#define HOSTILE_SHOWN                                                                     \
    "user\\n2026-01-01T00:00:00.000Z error forged\\r\\x1b[31m\\x7f\\x9b\\u009b\\u202e\\t"   \
    "\\x01 ok \xc3\xa9"
#define HOSTILE_FIELDS "{\"k\\n\x1b\":\"v\x7f\xc2\x85\"}"
#define HOSTILE_FIELDS_SHOWN "{\"k\\n\\x1b\":\"v\\x7f\\u0085\"}"

static void hostile_body(void)
{
    dl_log_emit(DL_LOG_WARN, NULL, HOSTILE_MSG, strlen(HOSTILE_MSG), HOSTILE_FIELDS,
                strlen(HOSTILE_FIELDS)); /* synchronous */
    dl_log_config_t cfg;
    dl_log_config_init(&cfg);
    cfg.color = 0;
    EXPECT_EQ(dl_logger_start(&cfg), 0);
    dl_log_emit(DL_LOG_WARN, "r\x1b", HOSTILE_MSG, strlen(HOSTILE_MSG), HOSTILE_FIELDS,
                strlen(HOSTILE_FIELDS));
    dl_logger_stop();
    char big[20000];
    memset(big, '\n', sizeof(big));
    dl_log_emit(DL_LOG_INFO, NULL, big, sizeof(big), NULL, 0); /* synchronous, cut at 16 KB */
}

/* The console escapes what it prints from data, before start (synchronous)
 * and with the writer running: one record, one line; no control character
 * but the line ends. */
DL_TEST(log_console_escapes)
{
    char *s = capture_stderr(hostile_body);
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    EXPECT_EQ(count_lines(s), 3);
    EXPECT(strstr(s, "Z warn  " HOSTILE_SHOWN " " HOSTILE_FIELDS_SHOWN "\n") != NULL);
    EXPECT(strstr(s, "Z warn  [r\\x1b] " HOSTILE_SHOWN " " HOSTILE_FIELDS_SHOWN "\n") != NULL);
    EXPECT(strstr(s, "Z info  \\n\\n\\n") != NULL);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p < 0x20 && *p != '\n') || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] < 0xa0))
            DL_FAIL_AT("raw control byte 0x%02x at %zu", *p, (size_t)(p - (unsigned char *)s));
    }
    free(s);
}

static void throughput(int nthreads, int total)
{
    char dir[64];
    make_dir(dir);
    start_files(dir, 16u << 20, 1u << 30, -1);
    burst_t bs[4];
    double t0 = now_s();
    double emit = run_burst(nthreads, total / nthreads, 1, bs);
    dl_logger_flush();
    double all = now_s() - t0;
    dl_logger_stop();
    printf("# log throughput, %d thread%s: %.2f M records/s emitted, %.2f M records/s "
           "written to combined.log (%llu dropped)\n",
           nthreads, nthreads > 1 ? "s" : "", total / emit / 1e6, total / all / 1e6,
           (unsigned long long)dl_log_dropped());
    fflush(stdout);
    EXPECT_EQ(dl_log_written() + dl_log_dropped(), total);
    remove_dir(dir);
}

DL_TEST(log_throughput_1)
{
    throughput(1, 400000);
}

DL_TEST(log_throughput_4)
{
    throughput(4, 400000);
}
