/*
 * test_redis_pool.c - the Redis pool against real redis-server processes
 * (tests/unit/redis_server.c starts one per test on a free port): URL and
 * environment configuration, commands and pipelines, binary and large values,
 * login (AUTH, SELECT, CLIENT SETNAME), a server that is late, never there,
 * killed, stopped or asleep, the offline queue, timeouts, cancellation and
 * freeing the pool with commands pending. Each test drives its own uv loop
 * and closes it, so a leaked handle fails; under ASan each test ends with a
 * leak check, since the runner's test processes leave through _exit().
 */
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "backend/breaker.h"
#include "common/buf.h"
#include "common/internal.h"
#include "backend/redis_pool.h"
#include "redis_server.h"
#include "unit.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0)
#else
#define LEAK_CHECK() ((void)0)
#endif

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct result_s {
    int called;                 /* must end at 1 */
    int status;
    int n;
    char **text;                /* each reply serialized, see ser() */
    char *raw;                  /* replies[0]->str, binary */
    size_t rawlen;
    uint64_t at;                /* loop time of the callback */
    dl_redis_pool_t *free_pool; /* freed from inside the callback */
    dl_redis_pool_t *chain;     /* sends chain_words on it from inside the callback */
    const char *chain_words;
    struct result_s *chain_res;
} result_t;

static uv_loop_t *g_loop;
static int g_done;

static void ser(dl_buf_t *b, const redisReply *r)
{
    if (r == NULL) {
        dl_buf_append_str(b, "NULL");
        return;
    }
    switch (r->type) {
    case REDIS_REPLY_STRING:
        dl_buf_append_char(b, '$');
        dl_buf_append(b, r->str, r->len);
        break;
    case REDIS_REPLY_STATUS:
        dl_buf_append_char(b, '+');
        dl_buf_append(b, r->str, r->len);
        break;
    case REDIS_REPLY_ERROR:
        dl_buf_append_char(b, '-');
        dl_buf_append(b, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        dl_buf_appendf(b, ":%lld", r->integer);
        break;
    case REDIS_REPLY_NIL:
        dl_buf_append_str(b, "nil");
        break;
    case REDIS_REPLY_ARRAY:
        dl_buf_append_char(b, '[');
        for (size_t i = 0; i < r->elements; i++) {
            if (i > 0)
                dl_buf_append_char(b, ',');
            ser(b, r->element[i]);
        }
        dl_buf_append_char(b, ']');
        break;
    default:
        dl_buf_appendf(b, "?%d", r->type);
    }
}

static int send_words(dl_redis_pool_t *p, const char *words, result_t *r, dl_redis_cmd_t **out);

static void on_result(int status, redisReply **replies, int n, void *arg)
{
    result_t *r = arg;
    r->called++;
    g_done++;
    r->status = status;
    r->n = n;
    r->at = uv_now(g_loop);
    if (status == 0 && r->called == 1) {
        r->text = calloc((size_t)n, sizeof(char *));
        for (int i = 0; i < n; i++) {
            dl_buf_t b = DL_BUF_INIT;
            ser(&b, replies[i]);
            r->text[i] = strndup(b.data ? b.data : "", b.len);
            dl_buf_free(&b);
        }
        if (n > 0 && replies[0]->str != NULL) {
            r->raw = malloc(replies[0]->len + 1);
            memcpy(r->raw, replies[0]->str, replies[0]->len);
            r->rawlen = replies[0]->len;
        }
    }
    if (r->chain != NULL)
        EXPECT_EQ(send_words(r->chain, r->chain_words, r->chain_res, NULL), 0);
    if (r->free_pool != NULL)
        dl_redis_pool_free(r->free_pool);
}

static void result_clear(result_t *r)
{
    for (int i = 0; r->text != NULL && i < r->n; i++)
        free(r->text[i]);
    free(r->text);
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static const char *text0(const result_t *r)
{
    return r->text != NULL && r->n > 0 ? r->text[0] : "(none)";
}

/* Sends one command given as words separated by single spaces (not binary). */
static int send_words(dl_redis_pool_t *p, const char *words, result_t *r, dl_redis_cmd_t **out)
{
    char *copy = strdup(words);
    const char *argv[32];
    size_t lens[32];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok != NULL && argc < 32;
         tok = strtok_r(NULL, " ", &save)) {
        argv[argc] = tok;
        lens[argc] = strlen(tok);
        argc++;
    }
    const char *const *argvs[1] = {argv};
    const size_t *lensv[1] = {lens};
    int argcs[1] = {argc};
    int rc = dl_redis_pool_send(p, 1, argcs, argvs, lensv, on_result, r, out);
    free(copy); /* the pool copied the bytes */
    return rc;
}

static void on_tick(uv_timer_t *t)
{
    DL_UNUSED(t);
}

typedef int (*cond_fn)(void *arg);

/* Runs the loop until cond(arg) holds or timeout_ms passes; returns cond(arg). */
static int run_while_not(uv_loop_t *loop, cond_fn cond, void *arg, uint64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + timeout_ms;
    while ((cond == NULL || !cond(arg)) && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond != NULL && cond(arg);
}

static int done_reached(void *arg)
{
    return g_done >= *(int *)arg;
}

static int run_until_done(uv_loop_t *loop, int target, uint64_t timeout_ms)
{
    return run_while_not(loop, done_reached, &target, timeout_ms);
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
    run_while_not(loop, NULL, NULL, ms);
}

typedef struct {
    dl_redis_pool_t *p;
    int ready;
} ready_arg_t;

static int ready_reached(void *arg)
{
    ready_arg_t *a = arg;
    dl_redis_stats_t st;
    dl_redis_pool_stats(a->p, &st);
    return st.ready >= a->ready;
}

static int wait_ready(uv_loop_t *loop, dl_redis_pool_t *p, int n, uint64_t timeout_ms)
{
    ready_arg_t a = {p, n};
    return run_while_not(loop, ready_reached, &a, timeout_ms);
}

static void test_config(dl_redis_config_t *cfg, int port)
{
    dl_redis_config_init(cfg);
    cfg->port = port;
    cfg->pool_size = 2;
}

/* Sends one command, runs until it answers; returns its status. */
static int call(uv_loop_t *loop, dl_redis_pool_t *p, const char *words, result_t *r)
{
    int target = g_done + 1;
    int rc = send_words(p, words, r, NULL);
    if (rc < 0)
        return rc;
    run_until_done(loop, target, 5000);
    EXPECT_EQ(r->called, 1);
    return r->status;
}

/* Frees the pool, drains the loop (which must close cleanly), stops the server. */
static void teardown(uv_loop_t *loop, dl_redis_pool_t *p, pid_t pid)
{
    dl_redis_pool_free(p);
    uv_run(loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(loop), 0);
    dl_test_redis_stop(pid);
}

static int contains(const char *hay, const char *needle)
{
    return hay != NULL && strstr(hay, needle) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_config_url)
{
    dl_redis_config_t c;
    char err[256];

    dl_redis_config_init(&c);
    EXPECT_EQ(dl_redis_config_parse_url(&c, "redis://localhost", err, sizeof(err)), 0);
    EXPECT_STR(c.host, "localhost");
    EXPECT_EQ(c.port, 6379);
    EXPECT_EQ(c.db, 0);
    EXPECT_STR(c.password, "");
    EXPECT_STR(c.username, "");

    EXPECT_EQ(dl_redis_config_parse_url(&c, "redis://:secret@10.0.0.1:6380/2", err, sizeof(err)),
              0);
    EXPECT_STR(c.host, "10.0.0.1");
    EXPECT_EQ(c.port, 6380);
    EXPECT_EQ(c.db, 2);
    EXPECT_STR(c.password, "secret");
    EXPECT_STR(c.username, "");

    EXPECT_EQ(dl_redis_config_parse_url(&c, "redis://alice:p%40ss%2Fw@h:1/15", err, sizeof(err)),
              0);
    EXPECT_STR(c.username, "alice");
    EXPECT_STR(c.password, "p@ss/w");
    EXPECT_STR(c.host, "h");
    EXPECT_EQ(c.port, 1);
    EXPECT_EQ(c.db, 15);

    /* Fields absent from the URL go back to their defaults. */
    EXPECT_EQ(dl_redis_config_parse_url(&c, "REDIS://pw@host/", err, sizeof(err)), 0);
    EXPECT_STR(c.password, "pw");
    EXPECT_STR(c.username, "");
    EXPECT_STR(c.host, "host");
    EXPECT_EQ(c.port, 6379);
    EXPECT_EQ(c.db, 0);

    EXPECT_EQ(dl_redis_config_parse_url(&c, "redis://[::1]:6390/0", err, sizeof(err)), 0);
    EXPECT_STR(c.host, "::1");
    EXPECT_EQ(c.port, 6390);

    EXPECT_EQ(dl_redis_config_parse_url(&c, "redis://u:a@b@host:7/3", err, sizeof(err)), 0);
    EXPECT_STR(c.username, "u");
    EXPECT_STR(c.password, "a@b");
    EXPECT_STR(c.host, "host");
    EXPECT_EQ(c.db, 3);

    err[0] = '\0';
    EXPECT_EQ(dl_redis_config_parse_url(&c, "rediss://host:6380", err, sizeof(err)), DL_EINVAL);
    EXPECT(contains(err, "TLS not supported"));
    EXPECT_STR(c.host, "host"); /* untouched by a failed parse */

    static const char *const bad[] = {
        "http://host",       "redis://",           "redis://:pw@",     "redis://host:0",
        "redis://host:65536", "redis://host:12ab", "redis://host:",    "redis://host/x",
        "redis://host/-1",   "redis://host?db=1",  "redis://[::1",     "redis://u:%zz@host",
        "redis://u:%0@host", "redis://u:a%00@host", "redis://[::1]x:1", "redis://host/99999999999",
        "",                  "unix:///tmp/redis.sock",
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        int rc = dl_redis_config_parse_url(&c, bad[i], err, sizeof(err));
        if (rc != DL_EINVAL || err[0] == '\0')
            DL_FAIL_AT("\"%s\" gave %d \"%s\"", bad[i], rc, err);
    }
    EXPECT_EQ(dl_redis_config_parse_url(&c, NULL, NULL, 0), DL_EINVAL);

    char longurl[400];
    memset(longurl, 'a', sizeof(longurl));
    memcpy(longurl, "redis://", 8);
    longurl[sizeof(longurl) - 1] = '\0';
    EXPECT_EQ(dl_redis_config_parse_url(&c, longurl, err, sizeof(err)), DL_EINVAL);
    EXPECT(contains(err, "too long"));
    LEAK_CHECK();
}

static void clear_env(void)
{
    static const char *const vars[] = {"REDIS_URL",      "REDIS_HOST",      "REDIS_PORT",
                                       "REDIS_PASSWORD", "REDIS_USERNAME",  "REDIS_DB",
                                       "REDIS_POOL_SIZE", "REDIS_COMMAND_TIMEOUT_MS",
                                       "REDIS_CONNECT_TIMEOUT_MS"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(vars); i++)
        unsetenv(vars[i]);
}

DL_TEST(redis_config_env)
{
    dl_redis_config_t c;
    char err[256];

    clear_env();
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), 0);
    EXPECT_STR(c.host, "127.0.0.1");
    EXPECT_EQ(c.port, 6379);
    EXPECT_EQ(c.pool_size, 4);
    EXPECT_EQ(c.cmd_timeout_ms, 5000);
    EXPECT_EQ(c.connect_timeout_ms, 2000);
    EXPECT_EQ(c.max_offline, 1000);
    EXPECT_EQ(c.max_retries, 3);
    EXPECT_STR(c.client_name, "devloop-api");

    /* Tuning alone does not configure Redis; empty counts as unset. */
    setenv("REDIS_POOL_SIZE", "8", 1);
    setenv("REDIS_PORT", "", 1);
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), 0);
    EXPECT_EQ(c.pool_size, 8);

    setenv("REDIS_HOST", "redis.local", 1);
    setenv("REDIS_PORT", "6381", 1);
    setenv("REDIS_PASSWORD", "pw", 1);
    setenv("REDIS_DB", "4", 1);
    setenv("REDIS_COMMAND_TIMEOUT_MS", "250", 1);
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), 1);
    EXPECT_STR(c.host, "redis.local");
    EXPECT_EQ(c.port, 6381);
    EXPECT_STR(c.password, "pw");
    EXPECT_EQ(c.db, 4);
    EXPECT_EQ(c.pool_size, 8);
    EXPECT_EQ(c.cmd_timeout_ms, 250);

    /* REDIS_URL wins over the separate variables. */
    setenv("REDIS_URL", "redis://u:p@h2:7000/1", 1);
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), 1);
    EXPECT_STR(c.host, "h2");
    EXPECT_EQ(c.port, 7000);
    EXPECT_STR(c.username, "u");
    EXPECT_STR(c.password, "p");
    EXPECT_EQ(c.db, 1);

    setenv("REDIS_URL", "rediss://h2", 1);
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), DL_EINVAL);
    EXPECT(contains(err, "TLS not supported"));

    clear_env();
    setenv("REDIS_PASSWORD", "only", 1);
    EXPECT_EQ(dl_redis_config_from_env(&c, err, sizeof(err)), 1);
    EXPECT_STR(c.host, "127.0.0.1");
    EXPECT_STR(c.password, "only");

    static const char *const bad[][2] = {
        {"REDIS_PORT", "abc"},       {"REDIS_PORT", "70000"},  {"REDIS_PORT", "-1"},
        {"REDIS_DB", "x"},           {"REDIS_DB", "1.5"},      {"REDIS_POOL_SIZE", "0"},
        {"REDIS_COMMAND_TIMEOUT_MS", "soon"}, {"REDIS_URL", "redis://"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        clear_env();
        setenv(bad[i][0], bad[i][1], 1);
        err[0] = '\0';
        int rc = dl_redis_config_from_env(&c, err, sizeof(err));
        if (rc != DL_EINVAL || !contains(err, bad[i][0][6] == 'U' ? "URL" : bad[i][0]))
            DL_FAIL_AT("%s=%s gave %d \"%s\"", bad[i][0], bad[i][1], rc, err);
    }
    clear_env();
    LEAK_CHECK();
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_pool_basic)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[12];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(p != NULL);

    /* Sent before any connection is ready: queued, then sent. */
    EXPECT_EQ(call(&loop, p, "SET k v", &r[0]), 0);
    EXPECT_STR(text0(&r[0]), "+OK");
    EXPECT_EQ(call(&loop, p, "GET k", &r[1]), 0);
    EXPECT_STR(text0(&r[1]), "$v");
    EXPECT_EQ(r[1].n, 1);
    EXPECT_EQ(call(&loop, p, "DEL k", &r[2]), 0);
    EXPECT_STR(text0(&r[2]), ":1");
    EXPECT_EQ(call(&loop, p, "GET k", &r[3]), 0);
    EXPECT_STR(text0(&r[3]), "nil");

    /* A Redis error is a reply, status 0. */
    EXPECT_EQ(call(&loop, p, "SET s abc", &r[4]), 0);
    EXPECT_EQ(call(&loop, p, "INCR s", &r[5]), 0);
    EXPECT(contains(text0(&r[5]), "-ERR"));
    EXPECT_EQ(call(&loop, p, "NOSUCHCOMMAND x", &r[6]), 0);
    EXPECT(contains(text0(&r[6]), "-ERR unknown command"));

    /* A callback may send: the chained GET runs after the SET. */
    r[7].chain = p;
    r[7].chain_words = "GET chained";
    r[7].chain_res = &r[8];
    int target = g_done + 2;
    EXPECT_EQ(send_words(p, "SET chained yes", &r[7], NULL), 0);
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_STR(text0(&r[8]), "$yes");

    dl_redis_stats_t st;
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.connections, 2);
    EXPECT_EQ(st.ready, 2);
    EXPECT_EQ(st.queued, 0);
    EXPECT_EQ(st.inflight, 0);
    EXPECT_EQ(st.errors, 0);
    EXPECT_EQ(st.timeouts, 0);
    EXPECT_EQ(st.reconnects, 0);

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++) {
        EXPECT(r[i].called <= 1);
        result_clear(&r[i]);
    }
    LEAK_CHECK();
}

DL_TEST(redis_pool_refused_commands)
{
    uv_loop_t loop;
    dl_redis_config_t cfg;
    result_t r;

    memset(&r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    /* No server needed: refusals happen before anything is queued. */
    test_config(&cfg, dl_test_free_port());
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    static const char *const refused[] = {
        "SUBSCRIBE ch", "psubscribe ch", "UNSUBSCRIBE", "MONITOR", "pmonitor", "SELECT 1",
        "AUTH pw",      "HELLO 3",       "QUIT",        "RESET",   "CLIENT REPLY OFF",
        "MULTI",        "WATCH k",       "SSUBSCRIBE ch",
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(refused); i++) {
        int rc = send_words(p, refused[i], &r, NULL);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("\"%s\" gave %d", refused[i], rc);
    }
    EXPECT_EQ(dl_redis_pool_send(p, 0, NULL, NULL, NULL, on_result, &r, NULL), DL_EINVAL);
    const char *argv[1] = {"GET"};
    size_t lens[1] = {3};
    const char *const *argvs[1] = {argv};
    const size_t *lensv[1] = {lens};
    int zero[1] = {0};
    EXPECT_EQ(dl_redis_pool_send(p, 1, zero, argvs, lensv, on_result, &r, NULL), DL_EINVAL);
    int one[1] = {1};
    EXPECT_EQ(dl_redis_pool_send(p, 1, one, argvs, lensv, NULL, &r, NULL), DL_EINVAL);
    EXPECT_EQ(dl_redis_pool_send(NULL, 1, one, argvs, lensv, on_result, &r, NULL), DL_EINVAL);

    dl_redis_stats_t st;
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.queued, 0);
    teardown(&loop, p, 0);
    EXPECT_EQ(r.called, 0);
    LEAK_CHECK();
}

DL_TEST(redis_pool_binary)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[4];
    char key[] = {'b', 'i', 'n', '\0', 'k', '\r', '\n'};
    char val[256];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 256; i++)
        val[i] = (char)i;
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);

    const char *set[3] = {"SET", key, val};
    size_t setl[3] = {3, sizeof(key), sizeof(val)};
    const char *get[2] = {"GET", key};
    size_t getl[2] = {3, sizeof(key)};
    const char *empty_set[3] = {"SET", "empty", NULL};
    size_t empty_setl[3] = {3, 5, 0};
    const char *empty_get[2] = {"GET", "empty"};
    size_t empty_getl[2] = {3, 5};
    const char *const *argvs[4] = {set, get, empty_set, empty_get};
    const size_t *lensv[4] = {setl, getl, empty_setl, empty_getl};
    int argcs[4] = {3, 2, 3, 2};

    int target = g_done + 2;
    EXPECT_EQ(dl_redis_pool_send(p, 1, &argcs[0], &argvs[0], &lensv[0], on_result, &r[0], NULL),
              0);
    EXPECT_EQ(dl_redis_pool_send(p, 1, &argcs[1], &argvs[1], &lensv[1], on_result, &r[1], NULL),
              0);
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_STR(text0(&r[0]), "+OK");
    EXPECT_EQ(r[1].status, 0);
    EXPECT_MEM(r[1].raw, r[1].rawlen, val, sizeof(val));

    target = g_done + 1;
    EXPECT_EQ(dl_redis_pool_send(p, 2, &argcs[2], &argvs[2], &lensv[2], on_result, &r[2], NULL),
              0);
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_EQ(r[2].n, 2);
    if (r[2].n == 2) {
        EXPECT_STR(r[2].text[0], "+OK");
        EXPECT_STR(r[2].text[1], "$");
    }

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_big_value)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[3];
    size_t big = 1024 * 1024;
    char *val = malloc(big);

    memset(r, 0, sizeof(r));
    for (size_t i = 0; i < big; i++)
        val[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        free(val);
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);

    const char *set[3] = {"SET", "big", val};
    size_t setl[3] = {3, 3, big};
    const char *const *argvs[1] = {set};
    const size_t *lensv[1] = {setl};
    int argcs[1] = {3};
    int target = g_done + 1;
    EXPECT_EQ(dl_redis_pool_send(p, 1, argcs, argvs, lensv, on_result, &r[0], NULL), 0);
    EXPECT(run_until_done(&loop, target, 10000));
    EXPECT_STR(text0(&r[0]), "+OK");

    EXPECT_EQ(call(&loop, p, "GET big", &r[1]), 0);
    EXPECT_EQ(r[1].rawlen, big);
    EXPECT(r[1].raw != NULL && memcmp(r[1].raw, val, big) == 0);
    EXPECT_EQ(call(&loop, p, "STRLEN big", &r[2]), 0);
    EXPECT_STR(text0(&r[2]), ":1048576");

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    free(val);
    LEAK_CHECK();
}

DL_TEST(redis_pool_pipeline)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[3];
    enum { N = 100 };
    char keys[N][16], vals[N][16];
    const char *argv[N][3];
    size_t lens[N][3];
    const char *const *argvs[N];
    const size_t *lensv[N];
    int argcs[N];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);

    /* 50 SETs, then 50 GETs of the same keys, in one send. */
    for (int i = 0; i < N; i++) {
        int k = i % (N / 2);
        snprintf(keys[i], sizeof(keys[i]), "key:%d", k);
        snprintf(vals[i], sizeof(vals[i]), "val:%d", k);
        argv[i][0] = i < N / 2 ? "SET" : "GET";
        argv[i][1] = keys[i];
        argv[i][2] = vals[i];
        lens[i][0] = 3;
        lens[i][1] = strlen(keys[i]);
        lens[i][2] = strlen(vals[i]);
        argcs[i] = i < N / 2 ? 3 : 2;
        argvs[i] = argv[i];
        lensv[i] = lens[i];
    }
    int target = g_done + 1;
    EXPECT_EQ(dl_redis_pool_send(p, N, argcs, argvs, lensv, on_result, &r[0], NULL), 0);
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_EQ(r[0].status, 0);
    EXPECT_EQ(r[0].n, N);
    for (int i = 0; i < r[0].n; i++) {
        char want[32];
        snprintf(want, sizeof(want), i < N / 2 ? "+OK" : "$%s", vals[i]);
        EXPECT_STR(r[0].text[i], want);
    }

    /* Every reply type, nested, with an error in the middle: the early
     * replies are the pool's copies, the last one hiredis' own. */
    const char *c0[] = {"EVAL", "return {1, {2, 'x', {}}, redis.status_reply('FINE'), false}",
                        "0"};
    const char *c1[] = {"LPUSH", "key:0", "x"};
    const char *c2[] = {"MGET", "key:1", "nokey"};
    const char *c3[] = {"MULTI"};
    const char *c4[] = {"INCR", "ctr"};
    const char *c5[] = {"EXEC"};
    const char *c6[] = {"GET", "key:2"};
    const char *const *av[] = {c0, c1, c2, c3, c4, c5, c6};
    size_t l0[] = {4, strlen(c0[1]), 1}, l1[] = {5, 5, 1}, l2[] = {4, 5, 5}, l3[] = {5},
           l4[] = {4, 3}, l5[] = {4}, l6[] = {3, 5};
    const size_t *lv[] = {l0, l1, l2, l3, l4, l5, l6};
    int ac[] = {3, 3, 3, 1, 2, 1, 2};
    target = g_done + 1;
    EXPECT_EQ(dl_redis_pool_send(p, 7, ac, av, lv, on_result, &r[1], NULL), 0);
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_EQ(r[1].n, 7);
    if (r[1].n == 7) {
        EXPECT_STR(r[1].text[0], "[:1,[:2,$x,[]],+FINE,nil]");
        EXPECT(contains(r[1].text[1], "-WRONGTYPE"));
        EXPECT_STR(r[1].text[2], "[$val:1,nil]");
        EXPECT_STR(r[1].text[3], "+OK");
        EXPECT_STR(r[1].text[4], "+QUEUED");
        EXPECT_STR(r[1].text[5], "[:1]");
        EXPECT_STR(r[1].text[6], "$val:2");
    }

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* ------------------------------------------------------------------------ */
/* Login                                                                    */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_pool_auth)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[8];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--requirepass secret", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }

    test_config(&cfg, port);
    snprintf(cfg.password, sizeof(cfg.password), "secret");
    dl_redis_pool_t *good = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, good, "SET a 1", &r[0]), 0);
    EXPECT_STR(text0(&r[0]), "+OK");

    /* AUTH user password (Redis 6 ACL form) with the default user. */
    snprintf(cfg.username, sizeof(cfg.username), "default");
    dl_redis_pool_t *acl = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, acl, "GET a", &r[1]), 0);
    EXPECT_STR(text0(&r[1]), "$1");

    /* A wrong password fails what waits with DL_EREDIS, then sends fail fast. */
    cfg.username[0] = '\0';
    snprintf(cfg.password, sizeof(cfg.password), "wrong");
    dl_redis_pool_t *bad = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, bad, "GET a", &r[2]), DL_EREDIS);
    dl_redis_pool_stats(bad, &st);
    EXPECT(contains(st.last_error, "AUTH"));
    EXPECT_EQ(st.ready, 0);
    EXPECT(st.errors >= 1);
    EXPECT_EQ(send_words(bad, "GET a", &r[3], NULL), DL_EREDIS);

    /* No password at all: NOAUTH on the first setup command is a login error too. */
    cfg.password[0] = '\0';
    dl_redis_pool_t *none = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, none, "GET a", &r[4]), DL_EREDIS);
    dl_redis_pool_stats(none, &st);
    EXPECT(contains(st.last_error, "NOAUTH"));

    dl_redis_pool_free(acl);
    dl_redis_pool_free(bad);
    dl_redis_pool_free(none);
    teardown(&loop, good, pid);
    EXPECT_EQ(r[3].called, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_select_db)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[6];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.db = 3;
    dl_redis_pool_t *p3 = dl_redis_pool_new(&loop, &cfg);
    cfg.db = 0;
    dl_redis_pool_t *p0 = dl_redis_pool_new(&loop, &cfg);

    EXPECT_EQ(call(&loop, p3, "SET dbkey v", &r[0]), 0);
    EXPECT_EQ(call(&loop, p3, "CLIENT INFO", &r[1]), 0);
    EXPECT(contains(text0(&r[1]), " db=3 "));
    EXPECT_EQ(call(&loop, p3, "EXISTS dbkey", &r[2]), 0);
    EXPECT_STR(text0(&r[2]), ":1");
    EXPECT_EQ(call(&loop, p0, "EXISTS dbkey", &r[3]), 0);
    EXPECT_STR(text0(&r[3]), ":0");

    /* A db the server does not have is a login error. */
    cfg.db = 99;
    dl_redis_pool_t *bad = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, bad, "GET x", &r[4]), DL_EREDIS);
    dl_redis_stats_t st;
    dl_redis_pool_stats(bad, &st);
    EXPECT(contains(st.last_error, "SELECT"));

    dl_redis_pool_free(p0);
    dl_redis_pool_free(bad);
    teardown(&loop, p3, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_client_name)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[2];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 3;
    snprintf(cfg.client_name, sizeof(cfg.client_name), "devloop-test");
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 3, 5000));
    EXPECT_EQ(call(&loop, p, "CLIENT LIST", &r[0]), 0);
    int count = 0;
    for (const char *s = strstr(text0(&r[0]), "name=devloop-test "); s != NULL;
         s = strstr(s + 1, "name=devloop-test "))
        count++;
    EXPECT_EQ(count, 3);

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_hostname)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[2];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    snprintf(cfg.host, sizeof(cfg.host), "localhost");
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT_EQ(call(&loop, p, "PING", &r[0]), 0);
    EXPECT_STR(text0(&r[0]), "+PONG");

    /* A name that does not resolve: the pool is down and commands fail
     * (at once, or at the command timeout where DNS is slow to say no). */
    snprintf(cfg.host, sizeof(cfg.host), "no-such-host.invalid");
    cfg.cmd_timeout_ms = 300;
    dl_redis_pool_t *bad = dl_redis_pool_new(&loop, &cfg);
    int rc = call(&loop, bad, "PING", &r[1]);
    EXPECT(rc == DL_EUNAVAIL || rc == DL_ETIMEDOUT);
    dl_redis_stats_t st;
    dl_redis_pool_stats(bad, &st);
    /* Where DNS is slow to say no, the connect deadline fires first. */
    EXPECT(contains(st.last_error, "resolve") || contains(st.last_error, "timed out"));

    dl_redis_pool_free(bad);
    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* ------------------------------------------------------------------------ */
/* Outages                                                                  */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_pool_server_late)
{
    uv_loop_t loop;
    int port = dl_test_free_port();
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[3];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    /* Sent before the first attempt ended, they wait; the refused connect
     * makes the pool down and they fail on the next loop turn. */
    int target = g_done + 2;
    EXPECT_EQ(send_words(p, "SET late yes", &r[0], NULL), 0);
    EXPECT_EQ(send_words(p, "GET late", &r[1], NULL), 0);
    EXPECT(run_until_done(&loop, target, 200));
    EXPECT_EQ(r[0].status, DL_EUNAVAIL);
    EXPECT_EQ(r[1].status, DL_EUNAVAIL);
    run_for(&loop, 300);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.queued, 0);
    EXPECT_EQ(st.ready, 0);
    EXPECT_EQ(st.down, 1);
    EXPECT(st.errors >= 2);
    EXPECT(st.reconnects >= 2);
    EXPECT(contains(st.last_error, "refused"));
    /* while down, a send fails at once: no callback, no queue */
    EXPECT_EQ(send_words(p, "GET late", &r[2], NULL), DL_EUNAVAIL);
    EXPECT_EQ(r[2].called, 0);

    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
    } else {
        /* Redis answers: ready within a second (the backoff is capped at 500 ms) */
        uv_update_time(&loop);
        uint64_t t0 = uv_now(&loop);
        EXPECT(wait_ready(&loop, p, 1, 1000));
        EXPECT_INT(uv_now(&loop) - t0, <=, 1000);
        result_clear(&r[0]);
        result_clear(&r[1]);
        EXPECT_EQ(call(&loop, p, "SET late yes", &r[0]), 0);
        EXPECT_EQ(call(&loop, p, "GET late", &r[1]), 0);
        EXPECT_STR(text0(&r[1]), "$yes");
        EXPECT(wait_ready(&loop, p, 2, 5000));
    }
    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_server_never)
{
    uv_loop_t loop;
    dl_redis_config_t cfg;
    result_t r[2];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    test_config(&cfg, dl_test_free_port());
    cfg.cmd_timeout_ms = 300;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    /* refused: the command fails in milliseconds, not at the timeout */
    EXPECT_EQ(call(&loop, p, "GET x", &r[0]), DL_EUNAVAIL);
    EXPECT_INT(r[0].at - t0, <, 100);
    dl_redis_stats_t st;
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.timeouts, 0);
    EXPECT_EQ(st.queued, 0);
    EXPECT_EQ(st.fast_fails, 1);
    EXPECT(contains(st.last_error, "connect"));
    teardown(&loop, p, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_server_restart)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    enum { N = 10 };
    result_t r[N + 3];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));

    /* The server sleeps, so these are all written and unanswered when it dies. */
    int target = g_done + N + 1;
    EXPECT_EQ(send_words(p, "DEBUG SLEEP 0.5", &r[N], NULL), 0);
    run_for(&loop, 30);
    for (int i = 0; i < N; i++) {
        char words[64];
        snprintf(words, sizeof(words), "SET k%d v%d", i, i);
        EXPECT_EQ(send_words(p, words, &r[i], NULL), 0);
    }
    run_for(&loop, 50);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.inflight, N + 1);
    dl_test_redis_stop(pid);
    /* Written writes are never sent twice: their outcome is unknown. */
    EXPECT(run_until_done(&loop, target, 1000));
    for (int i = 0; i <= N; i++) {
        EXPECT_EQ(r[i].called, 1);
        EXPECT_EQ(r[i].status, DL_EUNKNOWN);
    }
    run_for(&loop, 100);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.ready, 0);
    EXPECT_EQ(st.queued, 0);
    EXPECT_EQ(st.down, 1);
    EXPECT_EQ(st.unknown, (uint64_t)N + 1);

    pid = 0;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0)
        DL_FAIL_AT("no redis-server on restart");
    EXPECT(wait_ready(&loop, p, 1, 1000));
    EXPECT_EQ(call(&loop, p, "SET k7 v7", &r[N + 1]), 0);
    EXPECT_EQ(call(&loop, p, "GET k7", &r[N + 2]), 0);
    EXPECT_STR(text0(&r[N + 2]), "$v7");
    EXPECT(wait_ready(&loop, p, 2, 5000));
    dl_redis_pool_stats(p, &st);
    EXPECT(st.reconnects >= 2);
    EXPECT(st.errors >= 2);

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_retries_exhausted)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[3];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.max_retries = 0;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));
    int target = g_done + 2;
    EXPECT_EQ(send_words(p, "DEBUG SLEEP 1", &r[0], NULL), 0);
    EXPECT_EQ(send_words(p, "GET x", &r[1], NULL), 0);
    run_for(&loop, 50);
    dl_test_redis_stop(pid);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    EXPECT(run_until_done(&loop, target, 2000));
    /* DEBUG SLEEP may have done something; a GET lost is only lost */
    EXPECT_EQ(r[0].status, DL_EUNKNOWN);
    EXPECT_EQ(r[1].status, DL_EIO);
    EXPECT_INT(r[1].at - t0, <, 300);
    teardown(&loop, p, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* A socket that listens and never accepts: TCP connects, login never answers. */
static int silent_listener(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    EXPECT_EQ(listen(fd, 64), 0);
    EXPECT_EQ(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

DL_TEST(redis_pool_offline_overflow)
{
    uv_loop_t loop;
    dl_redis_config_t cfg;
    result_t r[7];
    int port;

    /* connections that come up slowly: commands wait in the offline queue */
    int fd = silent_listener(&port);
    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    test_config(&cfg, port);
    cfg.max_offline = 5;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(send_words(p, "GET x", &r[i], NULL), 0);
    EXPECT_EQ(send_words(p, "GET x", &r[5], NULL), DL_EOFFLINE);
    run_for(&loop, 100);
    EXPECT_EQ(send_words(p, "GET x", &r[6], NULL), DL_EOFFLINE);
    dl_redis_stats_t st;
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.queued, 5);

    /* Freeing the pool cancels what waits, from inside the call. */
    dl_redis_pool_free(p);
    for (int i = 0; i < 5; i++) {
        EXPECT_EQ(r[i].called, 1);
        EXPECT_EQ(r[i].status, DL_ECANCELED);
    }
    EXPECT_EQ(r[5].called + r[6].called, 0);
    teardown(&loop, NULL, 0);
    close(fd);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                 */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_pool_timeout_stopped)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[4];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.cmd_timeout_ms = 300;
    cfg.connect_timeout_ms = 400;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));

    kill(pid, SIGSTOP);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    EXPECT_EQ(call(&loop, p, "SET t 1", &r[0]), DL_ETIMEDOUT);
    EXPECT_INT(r[0].at - t0, >=, 290);
    EXPECT_INT(r[0].at - t0, <=, 500);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.timeouts, 1);
    EXPECT_EQ(st.ready, 1); /* the stuck connection was dropped */
    EXPECT(contains(st.last_error, "timed out"));

    /* Stopped a while longer: reconnects hang in login and time out too. */
    run_for(&loop, 600);
    kill(pid, SIGCONT);
    EXPECT_EQ(call(&loop, p, "GET t", &r[1]), 0);
    EXPECT(wait_ready(&loop, p, 2, 5000));
    EXPECT_EQ(call(&loop, p, "PING", &r[2]), 0);
    EXPECT_STR(text0(&r[2]), "+PONG");
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.ready, 2);

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_timeout_debug_sleep)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[4];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 1;
    cfg.cmd_timeout_ms = 300;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 1, 5000));

    /* A pipeline behind the sleeping one times out with it; neither reply
     * may be taken for a later command's once the server wakes up. */
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    int target = g_done + 2;
    EXPECT_EQ(send_words(p, "DEBUG SLEEP 1", &r[0], NULL), 0);
    EXPECT_EQ(send_words(p, "GET late", &r[1], NULL), 0);
    EXPECT(run_until_done(&loop, target, 2000));
    EXPECT_EQ(r[0].status, DL_ETIMEDOUT);
    EXPECT_EQ(r[1].status, DL_ETIMEDOUT);
    EXPECT_INT(r[0].at - t0, <=, 500);

    run_for(&loop, 900);
    EXPECT_EQ(call(&loop, p, "SET late 1", &r[2]), 0);
    EXPECT_EQ(call(&loop, p, "GET late", &r[3]), 0);
    EXPECT_STR(text0(&r[3]), "$1");

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* A server that accepts and does not answer (SIGSTOP): after the threshold
 * of consecutive timeouts the breaker opens and sends fail at once; after
 * the cool-down one PING probes; once Redis answers, it closes. */
DL_TEST(redis_pool_breaker)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[8];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 2;
    cfg.cmd_timeout_ms = 100;
    cfg.connect_timeout_ms = 5000; /* reconnects to the stopped server hang, not fail */
    cfg.breaker_threshold = 3;
    cfg.breaker_cooldown_ms = 300;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));

    kill(pid, SIGSTOP);
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(call(&loop, p, "GET x", &r[i]), DL_ETIMEDOUT);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.breaker, DL_BREAKER_OPEN);
    EXPECT_EQ(st.breaker_transitions, 1);
    EXPECT(contains(st.last_error, "circuit breaker open"));
    /* open: refused at once, never queued */
    EXPECT_EQ(send_words(p, "GET x", &r[3], NULL), DL_EUNAVAIL);
    EXPECT_EQ(r[3].called, 0);

    /* the probe goes out after the cool-down and times out: open again */
    run_for(&loop, 450);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.breaker, DL_BREAKER_OPEN);
    EXPECT_EQ(st.breaker_transitions, 3);
    EXPECT_EQ(send_words(p, "GET x", &r[4], NULL), DL_EUNAVAIL);

    /* Redis answers again: the next probe closes the breaker */
    kill(pid, SIGCONT);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    int ok = 0;
    while (!ok && uv_now(&loop) - t0 < 2000) {
        run_for(&loop, 20);
        result_clear(&r[5]);
        int rc = send_words(p, "PING", &r[5], NULL);
        if (rc == 0) {
            EXPECT(run_until_done(&loop, g_done + 1, 1000));
            ok = r[5].status == 0;
        }
    }
    EXPECT(ok);
    EXPECT_INT(uv_now(&loop) - t0, <, 1000);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.breaker, DL_BREAKER_CLOSED);
    EXPECT(st.breaker_transitions >= 5);
    EXPECT_EQ(call(&loop, p, "GET x", &r[6]), 0);

    teardown(&loop, p, pid);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

/* A write whose reply is lost is never sent again; a read is, and so is a
 * write its sender marked idempotent. */
DL_TEST(redis_pool_resend_policy)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[6];
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 2;
    cfg.cmd_timeout_ms = 2000;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));
    EXPECT_EQ(call(&loop, p, "SET n 0", &r[0]), 0);

    /* Written while the server is stopped, then the server dies: the
     * connections drop with the three commands written and unanswered. */
    kill(pid, SIGSTOP);
    int target = g_done + 3;
    EXPECT_EQ(send_words(p, "INCR n", &r[1], NULL), 0);
    EXPECT_EQ(send_words(p, "GET n", &r[2], NULL), 0);
    const char *argv[] = {"INCR", "m"};
    const size_t lens[] = {4, 1};
    const char *const *argvs[1] = {argv};
    const size_t *const lensv[1] = {lens};
    int argc = 2;
    EXPECT_EQ(dl_redis_pool_sendf(p, 1, &argc, argvs, lensv, DL_REDIS_IDEMPOTENT, on_result,
                                  &r[3], NULL),
              0);
    run_for(&loop, 50);
    dl_test_redis_stop(pid); /* SIGKILL works on a stopped process */
    pid = 0;
    EXPECT(run_until_done(&loop, target, 1000));
    EXPECT_EQ(r[1].status, DL_EUNKNOWN); /* written: never re-sent */
    /* the read and the idempotent write were re-sent and found the pool
     * down: the read failed fast; the write, written once, may have run */
    EXPECT_EQ(r[2].status, DL_EUNAVAIL);
    EXPECT_EQ(r[3].status, DL_EUNKNOWN);
    dl_redis_pool_stats(p, &st);
    EXPECT(st.resent >= 2);
    EXPECT_EQ(st.unknown, 2);
    EXPECT_EQ(dl_redis_is_read_only("hgetall", 7), 1);
    EXPECT_EQ(dl_redis_is_read_only("INCR", 4), 0);
    EXPECT_EQ(dl_redis_is_read_only("EVALSHA", 7), 0);
    teardown(&loop, p, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_connect_timeout)
{
    uv_loop_t loop;
    dl_redis_config_t cfg;
    result_t r[2];
    int port;

    int fd = silent_listener(&port);
    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    test_config(&cfg, port);
    cfg.pool_size = 1;
    cfg.connect_timeout_ms = 200;
    cfg.cmd_timeout_ms = 700;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    /* it waits for the connection, which times out: down, and it fails then */
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    EXPECT_EQ(call(&loop, p, "GET x", &r[0]), DL_EUNAVAIL);
    EXPECT_INT(r[0].at - t0, >=, 190);
    EXPECT_INT(r[0].at - t0, <, 600);
    EXPECT_EQ(send_words(p, "GET x", &r[1], NULL), DL_EUNAVAIL);
    run_for(&loop, 300);
    dl_redis_stats_t st;
    dl_redis_pool_stats(p, &st);
    EXPECT(st.errors >= 2);
    EXPECT_EQ(st.ready, 0);
    EXPECT(contains(st.last_error, "connect timed out"));
    teardown(&loop, p, 0);
    close(fd);
    result_clear(&r[0]);
    result_clear(&r[1]);
    LEAK_CHECK();
}

/* ------------------------------------------------------------------------ */
/* Cancel and free                                                          */
/* ------------------------------------------------------------------------ */

DL_TEST(redis_pool_cancel)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[6];
    dl_redis_cmd_t *cmd = NULL;
    dl_redis_stats_t st;

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 1;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);

    /* Canceled while queued. */
    EXPECT_EQ(send_words(p, "SET c queued", &r[0], &cmd), 0);
    EXPECT(cmd != NULL);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.queued, 1);
    dl_redis_cmd_cancel(cmd);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.queued, 0);
    EXPECT(wait_ready(&loop, p, 1, 5000));

    /* Canceled while written: the connection still reads its replies. */
    const char *c0[] = {"DEBUG", "SLEEP", "0.1"};
    const char *c1[] = {"SET", "c", "inflight"};
    const char *const *av[] = {c0, c1};
    size_t l0[] = {5, 5, 3}, l1[] = {3, 1, 8};
    const size_t *lv[] = {l0, l1};
    int ac[] = {3, 3};
    EXPECT_EQ(dl_redis_pool_send(p, 2, ac, av, lv, on_result, &r[1], &cmd), 0);
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.inflight, 1);
    dl_redis_cmd_cancel(cmd);
    dl_redis_cmd_cancel(NULL);
    EXPECT_EQ(call(&loop, p, "GET c", &r[2]), 0);
    EXPECT_STR(text0(&r[2]), "$inflight");
    dl_redis_pool_stats(p, &st);
    EXPECT_EQ(st.inflight, 0);
    EXPECT_EQ(r[0].called + r[1].called, 0);

    /* Canceled while written, then the pool is freed with it still there. */
    EXPECT_EQ(send_words(p, "DEBUG SLEEP 0.1", &r[3], &cmd), 0);
    dl_redis_cmd_cancel(cmd);
    teardown(&loop, p, pid);
    EXPECT_EQ(r[3].called, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_free_pending)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[5];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start("--enable-debug-command yes", &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 2, 5000));
    EXPECT_EQ(send_words(p, "DEBUG SLEEP 0.3", &r[0], NULL), 0);
    for (int i = 1; i < 4; i++)
        EXPECT_EQ(send_words(p, "GET x", &r[i], NULL), 0);
    run_for(&loop, 20);
    dl_redis_pool_free(p);
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(r[i].called, 1);
        EXPECT_EQ(r[i].status, DL_ECANCELED);
    }
    EXPECT_EQ(send_words(p, "GET x", &r[4], NULL), DL_ECANCELED);
    dl_redis_pool_free(p); /* a second free before the loop ran is a no-op */
    teardown(&loop, NULL, pid);
    EXPECT_EQ(r[4].called, 0);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}

DL_TEST(redis_pool_free_in_callback)
{
    uv_loop_t loop;
    int port = 0;
    pid_t pid = 0;
    dl_redis_config_t cfg;
    result_t r[4];

    memset(r, 0, sizeof(r));
    uv_loop_init(&loop);
    g_loop = &loop;
    if (dl_test_redis_start(NULL, &port, &pid) < 0) {
        DL_FAIL_AT("no redis-server");
        return;
    }
    test_config(&cfg, port);
    cfg.pool_size = 1;
    dl_redis_pool_t *p = dl_redis_pool_new(&loop, &cfg);
    EXPECT(wait_ready(&loop, p, 1, 5000));

    /* All three ride one connection; the first reply's callback frees the
     * pool while hiredis is inside its read loop. */
    r[0].free_pool = p;
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(send_words(p, "PING", &r[i], NULL), 0);
    int target = g_done + 3;
    EXPECT(run_until_done(&loop, target, 5000));
    EXPECT_EQ(r[0].status, 0);
    EXPECT_EQ(r[1].status, DL_ECANCELED);
    EXPECT_EQ(r[2].status, DL_ECANCELED);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
    dl_test_redis_stop(pid);
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(r[i].called, 1);
    for (size_t i = 0; i < DL_ARRAY_SIZE(r); i++)
        result_clear(&r[i]);
    LEAK_CHECK();
}
