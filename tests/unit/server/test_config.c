/*
 * test_config.c - runtime/server/config.c through devloop.h and config.h:
 * dl_config_init() from a clean environment and from set variables (units,
 * on/off words, LOG_LEVEL), the first bad value named in env_error as
 * tests/e2e/test_config_errors.py sees it at start-up; dl_config_check()'s
 * refusals (a changed environment, output_high_water, listen addresses,
 * HSTS, the tokens file, the canonical host, Redis and MongoDB values) and
 * dl_config_print() in text and --json for a few settings: value, unit,
 * source, masked secrets, and the same settings in both shapes; listen
 * addresses split by dl_parse_listen().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devloop.h"
#include "server/config.h"
#include "unit.h"

extern char **environ;

/* Every variable the runtime reads, unset: the test's own environment. */
static void clean_env(void)
{
    static const char *const prefixes[] = {"DEVLOOP_", "REDIS_", "MONGO_"};
    static const char *const names[] = {"PORT", "GZIP_LEVEL", "LOG_LEVEL", "UV_THREADPOOL_SIZE"};
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e != NULL; e++) {
            int hit = 0;
            for (size_t i = 0; i < DL_ARRAY_SIZE(prefixes); i++)
                hit |= strncmp(*e, prefixes[i], strlen(prefixes[i])) == 0;
            for (size_t i = 0; i < DL_ARRAY_SIZE(names); i++)
                hit |= strncmp(*e, names[i], strlen(names[i])) == 0 &&
                       (*e)[strlen(names[i])] == '=';
            if (hit) {
                char name[256];
                snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
                unsetenv(name);
                again = 1; /* environ changed under us: start over */
                break;
            }
        }
    }
}

/* cfg's dl_config_print() output (json or text) in a malloc'd string; *rc its status. */
static char *print_of(const dl_config_t *cfg, const char *const *flags, int json, int *rc,
                      char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    err[0] = '\0';
    *rc = dl_config_print(cfg, flags, json, f, err, errlen);
    fclose(f);
    return text;
}

/* The line of the text output that starts with name and a space. */
static const char *line_of(const char *text, const char *name, char *buf, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            snprintf(buf, len, "%.*s", (int)strcspn(p, "\n"), p);
            return buf;
        }
    snprintf(buf, len, "(no line %s)", name);
    return buf;
}

/* The text form of one setting, as dl_config_print() lays it out. */
static const char *row(char *buf, size_t len, const char *name, const char *text,
                       const char *source, const char *set_with)
{
    snprintf(buf, len, "%-26s %-32s %-28s %s", name, text, source, set_with);
    return buf;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

DL_TEST(config_init_defaults)
{
    clean_env();
    dl_config_t cfg;
    dl_config_init(&cfg);
    EXPECT_STR(cfg.env_error, "");
    EXPECT(cfg.app_dir == NULL);
    EXPECT_EQ(cfg.n_listen, 0);
    EXPECT_EQ(cfg.workers, 0);
    EXPECT_EQ(cfg.log_level, DL_LOG_INFO);
    EXPECT_EQ(cfg.watch, 1);
    EXPECT_EQ(cfg.watch_debounce_ms, 100);
    EXPECT_EQ(cfg.http2, 1);
    EXPECT_EQ(cfg.h2_max_streams, 100);
    EXPECT_EQ(cfg.tls_ticket_rotate_s, 3600);
    EXPECT_EQ(cfg.max_uri, 8192);
    EXPECT_EQ(cfg.max_header_bytes, 32 * 1024);
    EXPECT_EQ(cfg.max_headers, 100);
    EXPECT_EQ(cfg.max_body, 1024 * 1024);
    EXPECT_EQ(cfg.max_body_elements, 100000);
    EXPECT_EQ(cfg.header_timeout_ms, 10000);
    EXPECT_EQ(cfg.body_timeout_ms, 10000);
    EXPECT_EQ(cfg.body_min_bytes, 1024);
    EXPECT_EQ(cfg.keepalive_timeout_ms, 15000);
    EXPECT_EQ(cfg.send_timeout_ms, 60000);
    EXPECT_EQ(cfg.shutdown_grace_ms, 10000);
    EXPECT_EQ(cfg.start_timeout_ms, 10000);
    EXPECT_EQ(cfg.output_high_water, 256 * 1024);
    EXPECT_EQ(cfg.max_connections, 10000);
    EXPECT_EQ(cfg.gzip_level, 1);
    EXPECT_EQ(cfg.compress_min, 1024);
    EXPECT_STR(cfg.hsts, "max-age=31536000");
    EXPECT(cfg.pid_file == NULL);
    char err[512];
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    /* the variables no field holds */
    EXPECT_EQ(dl_env_u64("PORT"), 8080);
    EXPECT_EQ(dl_env_u64("DEVLOOP_CACHE_MAX_BYTES"), 64u << 20);
    EXPECT_EQ(dl_env_u64("DEVLOOP_JOBS_PAUSED"), 0);
    EXPECT_EQ(dl_env_known("PORT"), 1);
    EXPECT_EQ(dl_env_known("UV_THREADPOOL_SIZE"), 1);
    EXPECT_EQ(dl_env_known("DEVLOOP_NO_SUCH_THING"), 0);
    EXPECT_EQ(dl_env_known(""), 0);
}

DL_TEST(config_init_from_env)
{
    clean_env();
    setenv("DEVLOOP_MAX_BODY", "2MB", 1);
    setenv("DEVLOOP_HEADER_TIMEOUT_MS", "10s", 1);
    setenv("DEVLOOP_BODY_MIN_BYTES", "512k", 1);
    setenv("DEVLOOP_KEEPALIVE_TIMEOUT_MS", "2m", 1);
    setenv("DEVLOOP_TLS_TICKET_ROTATE_S", "2h", 1);
    setenv("DEVLOOP_WATCH", "off", 1);
    setenv("DEVLOOP_HTTP2", "No", 1);
    setenv("DEVLOOP_MAX_CONNECTIONS", "0", 1);
    setenv("GZIP_LEVEL", "9", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("DEVLOOP_HSTS", "max-age=60", 1);
    setenv("DEVLOOP_SHUTDOWN_GRACE_MS", "", 1); /* empty: the default */
    setenv("PORT", "9090", 1);
    setenv("DEVLOOP_JOBS_PAUSED", "yes", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    EXPECT_STR(cfg.env_error, "");
    EXPECT_EQ(cfg.max_body, 2 * 1024 * 1024);
    EXPECT_EQ(cfg.header_timeout_ms, 10000);
    EXPECT_EQ(cfg.body_min_bytes, 512 * 1024);
    EXPECT_EQ(cfg.keepalive_timeout_ms, 120000);
    EXPECT_EQ(cfg.tls_ticket_rotate_s, 7200);
    EXPECT_EQ(cfg.watch, 0);
    EXPECT_EQ(cfg.http2, 0);
    EXPECT_EQ(cfg.max_connections, 0);
    EXPECT_EQ(cfg.gzip_level, 9);
    EXPECT_EQ(cfg.log_level, DL_LOG_DEBUG);
    EXPECT_STR(cfg.hsts, "max-age=60");
    EXPECT_EQ(cfg.shutdown_grace_ms, 10000);
    EXPECT_EQ(dl_env_u64("PORT"), 9090);
    EXPECT_EQ(dl_env_u64("DEVLOOP_JOBS_PAUSED"), 1);
    char err[512];
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    /* DEVLOOP_HSTS="" turns it off */
    setenv("DEVLOOP_HSTS", "", 1);
    dl_config_init(&cfg);
    EXPECT_STR(cfg.hsts, "");
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
}

/* The values test_config_errors.py gives `devloop serve`, one at a time. */
DL_TEST(config_init_names_the_bad_value)
{
    static const struct {
        const char *name, *value, *accepted;
    } bad[] = {
        {"DEVLOOP_MAX_BODY", "2XB", "a size"},
        {"DEVLOOP_MAX_BODY", "-1", "a size"},
        {"LOG_LEVEL", "verbose", "debug, info, warn or error"},
        {"DEVLOOP_HEADER_TIMEOUT_MS", "soon", "a duration"},
        {"GZIP_LEVEL", "42", "from 1 to 9"},
        {"PORT", "99999", "from 0 to 65535"},
        {"DEVLOOP_WATCH", "maybe", "on/off"},
        {"DEVLOOP_LOG_MAX_FILES", "0", "from 1 to 1000"},
        {"DEVLOOP_JOBS_PAUSED", "2", "on/off"},
        {"UV_THREADPOOL_SIZE", "x", "from 1 to 1024"},
        {"UV_THREADPOOL_SIZE", "1025", "from 1 to 1024"},
        {"DEVLOOP_TLS_TICKET_ROTATE_S", "500ms", "a duration (seconds"},
        {"DEVLOOP_MAX_URI", "8", "from 16 to"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        clean_env();
        setenv(bad[i].name, bad[i].value, 1);
        dl_config_t cfg;
        dl_config_init(&cfg);
        char head[128];
        snprintf(head, sizeof(head), "%s=%s: expected ", bad[i].name, bad[i].value);
        if (strncmp(cfg.env_error, head, strlen(head)) != 0 ||
            strstr(cfg.env_error, bad[i].accepted) == NULL)
            DL_FAIL_AT("%s=%s: env_error \"%s\"", bad[i].name, bad[i].value, cfg.env_error);
        /* start-up stops with the same line */
        char err[512], want[400];
        EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
        snprintf(want, sizeof(want), "%s\n", cfg.env_error);
        EXPECT_STR(err, want);
    }
    /* the field keeps its default */
    clean_env();
    setenv("DEVLOOP_MAX_BODY", "2XB", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    EXPECT_EQ(cfg.max_body, 1024 * 1024);
    /* two mistakes: LOG_LEVEL is read first, then the table in order */
    setenv("LOG_LEVEL", "loud", 1);
    setenv("GZIP_LEVEL", "0", 1);
    dl_config_init(&cfg);
    EXPECT_STR(cfg.env_error, "LOG_LEVEL=loud: expected debug, info, warn or error");
    unsetenv("LOG_LEVEL");
    dl_config_init(&cfg);
    EXPECT(strncmp(cfg.env_error, "DEVLOOP_MAX_BODY=2XB: ", 22) == 0);
    /* a hostile value: long, with control bytes; the message is cut, not overrun */
    clean_env();
    char huge[4000];
    memset(huge, 'z', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    huge[10] = '\n';
    setenv("DEVLOOP_MAX_HEADERS", huge, 1);
    dl_config_init(&cfg);
    EXPECT_EQ(strlen(cfg.env_error), sizeof(cfg.env_error) - 1);
    EXPECT(strncmp(cfg.env_error, "DEVLOOP_MAX_HEADERS=zzzzzzzzzz\n", 31) == 0);
}

DL_TEST(config_check_refusals)
{
    clean_env();
    dl_config_t cfg;
    dl_config_init(&cfg);
    char err[1024];
    /* the environment changed after dl_config_init() */
    setenv("DEVLOOP_MAX_HEADERS", "lots", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT_STR(err, "DEVLOOP_MAX_HEADERS=lots: expected a whole number from 1 to 100000\n");
    unsetenv("DEVLOOP_MAX_HEADERS");
    /* output_high_water set by a program, out of its range */
    cfg.output_high_water = 100;
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT_STR(err, "DEVLOOP_OUTPUT_HIGH_WATER (output_high_water) must be 1024 to 4194304 "
                    "bytes, not 100\n");
    cfg.output_high_water = 4194304;
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    /* listen addresses serve refuses */
    static const struct {
        const char *addr, *want;
    } listens[] = {
        {"127.0.0.1:99999", "invalid listen address '127.0.0.1:99999' (want HOST:PORT)\n"},
        {"[::1]", "invalid listen address '[::1]' (want HOST:PORT)\n"},
        {"db.example:80", "invalid listen host 'db.example' (want an IP address)\n"},
        {"", "invalid listen address '' (want HOST:PORT)\n"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(listens); i++) {
        cfg.listen[0] = "127.0.0.1:0";
        cfg.listen[1] = listens[i].addr;
        cfg.n_listen = 2; /* the second of two is checked too */
        EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
        EXPECT_STR(err, listens[i].want);
    }
    cfg.listen[0] = "[::1]:0";
    cfg.listen[1] = "localhost:0";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    /* no_listen: the addresses are not used, so not checked */
    cfg.listen[1] = "nonsense";
    cfg.no_listen = 1;
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    cfg.no_listen = 0;
    cfg.n_listen = 0;

    /* HSTS: a control byte, a space at an end, too long; named by where it came from */
    cfg.hsts = "max-age=5\r\nX-Evil: 1";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strncmp(err, "--hsts \"max-age=5\\r\\nX-Evil: 1\": expected a header value of "
                        "printable ASCII", 75) == 0);
    EXPECT_EQ(count_of(err, "\n"), 1);
    EXPECT(strchr(err, '\r') == NULL);
    cfg.hsts = " max-age=5";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    cfg.hsts = "max-age=5\x80";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "\"max-age=5\\x80\"") != NULL);
    setenv("DEVLOOP_HSTS", "max-age=1\t", 1);
    dl_config_init(&cfg);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strncmp(err, "DEVLOOP_HSTS=\"max-age=1\\t\": expected", 36) == 0);
    char *long_hsts = malloc(70001);
    memset(long_hsts, 'a', 70000);
    long_hsts[70000] = '\0';
    setenv("DEVLOOP_HSTS", long_hsts, 1);
    dl_config_init(&cfg);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT_STR(err, "DEVLOOP_HSTS: the value is 70000 bytes; at most 1024 are accepted\n");
    unsetenv("DEVLOOP_HSTS");
    dl_config_init(&cfg);
    cfg.hsts = long_hsts;
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT_STR(err, "--hsts: the value is 70000 bytes; at most 1024 are accepted\n");
    free(long_hsts);
    cfg.hsts = "max-age=60; preload";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    cfg.hsts = "";
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);

    /* the tokens file: missing, a folder, fine */
    char dir[64] = "/tmp/dl-unit-config-XXXXXX", path[128], want[256];
    if (mkdtemp(dir) == NULL) {
        DL_FAIL_AT("mkdtemp");
        return;
    }
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    setenv("DEVLOOP_TOKENS_FILE", path, 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    snprintf(want, sizeof(want), "DEVLOOP_TOKENS_FILE %s: cannot be read: No such file or "
                                 "directory\n", path);
    EXPECT_STR(err, want);
    setenv("DEVLOOP_TOKENS_FILE", dir, 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    snprintf(want, sizeof(want), "DEVLOOP_TOKENS_FILE %s: cannot be read: it is a directory\n",
             dir);
    EXPECT_STR(err, want);
    snprintf(path, sizeof(path), "%s/tokens.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{}", f);
    fclose(f);
    setenv("DEVLOOP_TOKENS_FILE", path, 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
    unlink(path);
    rmdir(dir);
    unsetenv("DEVLOOP_TOKENS_FILE");

    /* Redis and the SQLite busy timeout name their variable */
    setenv("REDIS_PORT", "abc", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "REDIS_PORT") != NULL);
    EXPECT_EQ(count_of(err, "\n"), 1);
    unsetenv("REDIS_PORT");
    setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", "later", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "DEVLOOP_DB_BUSY_TIMEOUT_MS") != NULL);
    /* with MONGO_URI set, SQLite's variable is not read; the URI is */
    setenv("MONGO_URI", "notmongo://x", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strncmp(err, "document store: MONGO_URI: ", 27) == 0);
    setenv("MONGO_URI", "mongodb://127.0.0.1:1/db", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), 0);
}

DL_TEST(config_canonical_host)
{
    clean_env();
    const char *host = "?";
    int port = 0;
    char err[1024];
    EXPECT_EQ(dl_config_canonical_host(&host, &port, err, sizeof(err)), 0);
    EXPECT(host == NULL);
    EXPECT_EQ(port, -1);
    setenv("DEVLOOP_CANONICAL_HOST", "api.example.com:8443", 1);
    EXPECT_EQ(dl_config_canonical_host(&host, &port, err, sizeof(err)), 0);
    EXPECT_STR(host, "api.example.com:8443");
    EXPECT_EQ(port, 8443);
    setenv("DEVLOOP_CANONICAL_HOST", "example.com", 1);
    EXPECT_EQ(dl_config_canonical_host(&host, &port, err, sizeof(err)), 0);
    EXPECT_EQ(port, -1);
    static const char *const bad[] = {"https://example.com", "user@example.com", "example.com/x",
                                      "example.com:0", "example.com:65536", "[::1",
                                      "exa mple.com"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        setenv("DEVLOOP_CANONICAL_HOST", bad[i], 1);
        char head[128];
        snprintf(head, sizeof(head), "DEVLOOP_CANONICAL_HOST (--canonical-host) \"%s\": expected "
                                     "host[:port]", bad[i]);
        EXPECT_EQ(dl_config_canonical_host(&host, &port, err, sizeof(err)), DL_EINVAL);
        if (strncmp(err, head, strlen(head)) != 0)
            DL_FAIL_AT("%s: \"%s\"", bad[i], err);
    }
    /* control bytes are shown as '?' */
    setenv("DEVLOOP_CANONICAL_HOST", "a\x1b[31mb", 1);
    EXPECT_EQ(dl_config_canonical_host(&host, &port, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "\"a?[31mb\"") != NULL);
    EXPECT(strchr(err, '\x1b') == NULL);
    /* and dl_config_check() refuses it too */
    dl_config_t cfg;
    unsetenv("DEVLOOP_CANONICAL_HOST");
    dl_config_init(&cfg);
    setenv("DEVLOOP_CANONICAL_HOST", "http://x", 1);
    EXPECT_EQ(dl_config_check(&cfg, err, sizeof(err)), DL_EINVAL);
    EXPECT(strncmp(err, "DEVLOOP_CANONICAL_HOST", 22) == 0);
}

DL_TEST(config_print_text)
{
    clean_env();
    setenv("DEVLOOP_MAX_BODY", "2MB", 1);
    setenv("DEVLOOP_HEADER_TIMEOUT_MS", "90s", 1);
    setenv("DEVLOOP_SECRET", "hunter2-very-secret", 1);
    setenv("REDIS_URL", "redis://app:pw-secret@127.0.0.1:6390/2", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = "/srv/app";
    cfg.workers = 3;
    cfg.watch = 0;
    static const char *const flags[] = {"--workers", NULL};
    int rc;
    char err[512], buf[512], want[512];
    char *out = print_of(&cfg, flags, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, 0);
    EXPECT_STR(err, "");
    EXPECT_STR(line_of(out, "app_dir", buf, sizeof(buf)),
               row(want, sizeof(want), "app_dir", "/srv/app", "argument", "APP_DIR"));
    EXPECT_STR(line_of(out, "listen", buf, sizeof(buf)),
               row(want, sizeof(want), "listen", "127.0.0.1:8080", "default", "--listen, PORT"));
    EXPECT_STR(line_of(out, "workers", buf, sizeof(buf)),
               row(want, sizeof(want), "workers", "3", "flag --workers", "--workers"));
    EXPECT_STR(line_of(out, "watch", buf, sizeof(buf)),
               row(want, sizeof(want), "watch", "off", "program", "--no-watch, DEVLOOP_WATCH"));
    EXPECT_STR(line_of(out, "max_body", buf, sizeof(buf)),
               row(want, sizeof(want), "max_body", "2097152 bytes (2 MiB)",
                   "env DEVLOOP_MAX_BODY", "DEVLOOP_MAX_BODY"));
    EXPECT_STR(line_of(out, "header_timeout_ms", buf, sizeof(buf)),
               row(want, sizeof(want), "header_timeout_ms", "90000 ms (1.5 min)",
                   "env DEVLOOP_HEADER_TIMEOUT_MS", "DEVLOOP_HEADER_TIMEOUT_MS"));
    EXPECT_STR(line_of(out, "gzip_level", buf, sizeof(buf)),
               row(want, sizeof(want), "gzip_level", "1", "default", "GZIP_LEVEL"));
    EXPECT_STR(line_of(out, "max_connections", buf, sizeof(buf)),
               row(want, sizeof(want), "max_connections", "10000", "default",
                   "DEVLOOP_MAX_CONNECTIONS"));
    EXPECT_STR(line_of(out, "tls_ticket_rotate_s", buf, sizeof(buf)),
               row(want, sizeof(want), "tls_ticket_rotate_s", "3600 s (1 h)", "default",
                   "DEVLOOP_TLS_TICKET_ROTATE_S"));
    /* Redis is configured: the in-process cache's size is unused */
    EXPECT(strstr(line_of(out, "cache_max_bytes", buf, sizeof(buf)), "(unused: Redis cache)") !=
           NULL);
    EXPECT(strstr(line_of(out, "redis", buf, sizeof(buf)),
                  "redis://app:***@127.0.0.1:6390/2") != NULL);
    EXPECT_STR(line_of(out, "secret", buf, sizeof(buf)),
               row(want, sizeof(want), "secret", "*** (set)", "env DEVLOOP_SECRET",
                   "DEVLOOP_SECRET"));
    EXPECT(strstr(out, "hunter2") == NULL);
    EXPECT(strstr(out, "pw-secret") == NULL);
    /* PORT is shown in listen only */
    EXPECT(strstr(out, "\nport ") == NULL);
    EXPECT(strstr(line_of(out, "store", buf, sizeof(buf)), "sqlite") != NULL);
    EXPECT(strstr(line_of(out, "db", buf, sizeof(buf)), "/srv/app/data/devloop.db") != NULL);
    free(out);
}

DL_TEST(config_print_json)
{
    clean_env();
    setenv("DEVLOOP_MAX_BODY", "2MB", 1);
    setenv("MONGO_URI", "mongodb://u:top-secret@127.0.0.1:1/db?authMechanismProperties="
                        "AWS_SESSION_TOKEN:tok-secret&appname=x", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = "/srv/app";
    int rc;
    char err[512];
    char *json = print_of(&cfg, NULL, 1, &rc, err, sizeof(err));
    EXPECT_EQ(rc, 0);
    EXPECT(strncmp(json, "[\n  {\"name\": \"app_dir\", \"value\": \"/srv/app\", \"unit\": null, "
                         "\"text\": \"/srv/app\", \"source\": \"argument\", \"set_with\": "
                         "\"APP_DIR\"},\n",
                   120) == 0);
    size_t n = strlen(json);
    EXPECT(n > 4 && strcmp(json + n - 4, "}\n]\n") == 0);
    EXPECT(strstr(json, "{\"name\": \"max_body\", \"value\": 2097152, \"unit\": \"bytes\", "
                        "\"text\": \"2097152 bytes (2 MiB)\", \"source\": \"env "
                        "DEVLOOP_MAX_BODY\", \"set_with\": \"DEVLOOP_MAX_BODY\"}") != NULL);
    EXPECT(strstr(json, "{\"name\": \"watch\", \"value\": \"on\", \"unit\": null, \"text\": "
                        "\"on\", \"source\": \"default\", \"set_with\": \"--no-watch, "
                        "DEVLOOP_WATCH\"}") != NULL);
    EXPECT(strstr(json, "{\"name\": \"keepalive_timeout_ms\", \"value\": 15000, \"unit\": "
                        "\"ms\", \"text\": \"15000 ms (15 s)\"") != NULL);
    EXPECT(strstr(json, "{\"name\": \"uv_threadpool_size\", \"value\": 8, \"unit\": "
                        "\"threads\"") != NULL);
    EXPECT(strstr(json, "{\"name\": \"store\", \"value\": \"mongodb\"") != NULL);
    /* MongoDB: the password and the credential option masked, the rest kept */
    EXPECT(strstr(json, "top-secret") == NULL);
    EXPECT(strstr(json, "tok-secret") == NULL);
    EXPECT(strstr(json, "mongodb://u:***@127.0.0.1:1/db?authMechanismProperties=***&appname=x") !=
           NULL);
    /* no Redis: its settings are marked unused */
    EXPECT(strstr(json, "\"text\": \"none (in-process cache and jobs)\"") != NULL);
    EXPECT(strstr(json, "(unused: no Redis)") != NULL);

    /* the same settings as the text, one object per line */
    char *text = print_of(&cfg, NULL, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(count_of(json, "{\"name\": "), count_of(text, "\n"));
    EXPECT_EQ(count_of(json, "{\"name\": "), count_of(json, "}"));
    free(text);
    free(json);
}

/* Refused before a byte is written, with the message serve would give. */
DL_TEST(config_print_refusals)
{
    clean_env();
    dl_config_t cfg;
    dl_config_init(&cfg);
    int rc;
    char err[1600];
    char *out = print_of(&cfg, NULL, 0, &rc, err, sizeof(err)); /* no app_dir */
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(err, "no app folder given\n");
    EXPECT_STR(out, "");
    free(out);
    EXPECT_EQ(dl_config_print(NULL, NULL, 0, stdout, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(dl_config_print(&cfg, NULL, 0, NULL, err, sizeof(err)), DL_EINVAL);

    cfg.app_dir = "/srv/app";
    setenv("GZIP_LEVEL", "42", 1);
    dl_config_init(&cfg);
    cfg.app_dir = "/srv/app";
    out = print_of(&cfg, NULL, 1, &rc, err, sizeof(err));
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(err, "GZIP_LEVEL=42: expected a whole number from 1 to 9\n");
    EXPECT_STR(out, "");
    free(out);
    unsetenv("GZIP_LEVEL");

    /* TLS listeners: a missing certificate, a redirect with nowhere to go */
    dl_config_init(&cfg);
    cfg.app_dir = "/srv/app";
    cfg.listen[0] = "127.0.0.1:8443";
    cfg.n_listen = 1;
    cfg.listen_opts[0].tls_cert[0] = "/nonexistent/dl-unit-cert.pem";
    cfg.listen_opts[0].tls_key[0] = "/nonexistent/dl-unit-key.pem";
    cfg.listen_opts[0].n_certs = 1;
    out = print_of(&cfg, NULL, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT(strncmp(err, "127.0.0.1:8443: ", 16) == 0);
    EXPECT(strstr(err, "/nonexistent/dl-unit-cert.pem") != NULL);
    EXPECT_STR(out, "");
    free(out);
    cfg.listen_opts[0].https_redirect = 1;
    out = print_of(&cfg, NULL, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(err, "127.0.0.1:8443: a TLS listener cannot also redirect to HTTPS\n");
    free(out);
    cfg.listen_opts[0].n_certs = 0;
    out = print_of(&cfg, NULL, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(err, "127.0.0.1:8443: an HTTPS redirect needs a TLS listener to point to\n");
    free(out);
    /* the same listener, plain: fine, and shown */
    cfg.listen_opts[0].https_redirect = 0;
    static const char *const flags[] = {"--listen", NULL};
    out = print_of(&cfg, flags, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, 0);
    char buf[512], want[512];
    EXPECT_STR(line_of(out, "listen", buf, sizeof(buf)),
               row(want, sizeof(want), "listen", "127.0.0.1:8443", "flag --listen", "--listen"));
    free(out);
    /* no_listen: none, and the TLS files are not read */
    cfg.no_listen = 1;
    cfg.listen_opts[0].n_certs = 1;
    out = print_of(&cfg, NULL, 0, &rc, err, sizeof(err));
    EXPECT_EQ(rc, 0);
    EXPECT_STR(line_of(out, "listen", buf, sizeof(buf)),
               row(want, sizeof(want), "listen", "none", "program", "--listen"));
    free(out);
}

DL_TEST(listen_address_parse)
{
    char host[64];
    int port;
    EXPECT_EQ(dl_parse_listen("0.0.0.0:80", host, sizeof(host), &port), 0);
    EXPECT_STR(host, "0.0.0.0");
    EXPECT_EQ(port, 80);
    EXPECT_EQ(dl_parse_listen("[::1]:8080", host, sizeof(host), &port), 0);
    EXPECT_STR(host, "::1");
    EXPECT_EQ(port, 8080);
    EXPECT_EQ(dl_parse_listen(":9000", host, sizeof(host), &port), 0);
    EXPECT_STR(host, "127.0.0.1");
    EXPECT_EQ(dl_parse_listen("9001", host, sizeof(host), &port), 0);
    EXPECT_EQ(port, 9001);
    EXPECT_EQ(dl_parse_listen("host:99999", host, sizeof(host), &port), DL_EINVAL);
    EXPECT_EQ(dl_parse_listen("host:", host, sizeof(host), &port), DL_EINVAL);
    EXPECT_EQ(dl_parse_listen("[::1]8080", host, sizeof(host), &port), DL_EINVAL);
}
