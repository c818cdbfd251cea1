/*
 * test_http.c - request helpers of runtime/core/http.c and the configuration
 * defaults of runtime/server/server.c: request ids, URL decoding, query parsing,
 * Accept negotiation, dates, error bodies and limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http.h"
#include "common/internal.h"
#include "unit.h"

DL_TEST(request_id_format)
{
    uint64_t st[4];
    dl_prng_seed(st);
    char a[65], b[65];
    dl_request_id_new(st, a);
    dl_request_id_new(st, b);
    EXPECT_EQ(strlen(a), 32);
    for (int i = 0; i < 32; i++)
        EXPECT(strchr("0123456789abcdef", a[i]) != NULL);
    EXPECT(strcmp(a, b) != 0);
    EXPECT(dl_request_id_valid(a, 32));
}

/* The id is the next two PRNG words as 16 hex digits each, high digit first. */
DL_TEST(request_id_is_prng_words_in_hex)
{
    uint64_t st[4], copy[4];
    dl_prng_seed(st);
    memcpy(copy, st, sizeof(st));
    char id[33], want[33];
    dl_request_id_new(st, id);
    uint64_t a = dl_prng_next(copy), b = dl_prng_next(copy);
    snprintf(want, sizeof(want), "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
    EXPECT_STR(id, want);
}

DL_TEST(request_id_unique_many)
{
    uint64_t st[4];
    dl_prng_seed(st);
    enum { N = 20000 };
    char (*ids)[33] = malloc(sizeof(*ids) * N);
    for (int i = 0; i < N; i++)
        dl_request_id_new(st, ids[i]);
    int dup = 0;
    /* sort-free check: compare each against a hash table of first 8 bytes */
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i], ids[i - 1]) == 0)
            dup++;
    EXPECT_EQ(dup, 0);
    free(ids);
}

DL_TEST(request_id_validation)
{
    EXPECT(dl_request_id_valid("abc-123_X.y:z", 13));
    EXPECT(!dl_request_id_valid("", 0));
    EXPECT(!dl_request_id_valid("has space", 9));
    EXPECT(!dl_request_id_valid("new\nline", 8));
    char long_id[80];
    memset(long_id, 'a', sizeof(long_id));
    EXPECT(dl_request_id_valid(long_id, 64));
    EXPECT(!dl_request_id_valid(long_id, 65));
}

DL_TEST(url_decode)
{
    char s1[] = "a%20b%2Fc+d%zz%4";
    size_t n = dl_url_decode(s1, strlen(s1), 0);
    EXPECT_MEM(s1, n, "a b/c+d%zz%4", 12);
    char s2[] = "x+y%2B";
    n = dl_url_decode(s2, strlen(s2), 1);
    EXPECT_MEM(s2, n, "x y+", 4);
    char s3[] = "%";
    EXPECT_EQ(dl_url_decode(s3, 1, 0), 1);
}

typedef struct {
    char out[512];
} kv_acc_t;

static int acc_kv(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    kv_acc_t *a = arg;
    size_t n = strlen(a->out);
    snprintf(a->out + n, sizeof(a->out) - n, "[%.*s=%.*s]", (int)kl, k, (int)vl, v);
    return 0;
}

DL_TEST(query_parse)
{
    kv_acc_t a = {{0}};
    const char *q = "a=1&b=x+y&&c=%2F&flag&=novalue&d=";
    dl_parse_query(q, strlen(q), 0, acc_kv, &a);
    EXPECT_STR(a.out, "[a=1][b=x y][c=/][flag=][d=]");
}

DL_TEST(accept_msgpack)
{
    struct {
        const char *accept;
        int want;
    } cases[] = {
        {"application/msgpack", 1},
        {"application/json", 0},
        {"*/*", 0},
        {"application/msgpack;q=0", 0},
        {"application/json;q=0.9, application/msgpack", 1},
        {"application/msgpack;q=0.5, application/json", 0},
        {"application/x-msgpack", 1},
        {"APPLICATION/MSGPACK", 1},
        {"text/html, application/msgpack ; q=0.8", 1},
        {"", 0},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases); i++) {
        int got = dl_accept_msgpack(cases[i].accept, strlen(cases[i].accept));
        if (got != cases[i].want)
            DL_FAIL_AT("Accept \"%s\": got %d want %d", cases[i].accept, got, cases[i].want);
    }
}

DL_TEST(http_date_format)
{
    char d[32];
    dl_http_date(1767225600L + 60, d);
    EXPECT_STR(d, "Thu, 01 Jan 2026 00:01:00 GMT");
    dl_http_date(0, d);
    EXPECT_STR(d, "Thu, 01 Jan 1970 00:00:00 GMT");
}

DL_TEST(status_text)
{
    EXPECT_STR(dl_status_text(404), "Not Found");
    EXPECT_STR(dl_status_text(431), "Request Header Fields Too Large");
    EXPECT_STR(dl_status_text(599), "Unknown");
}

DL_TEST(error_body_escapes)
{
    dl_buf_t b = DL_BUF_INIT;
    dl_error_body(&b, 400, "bad \"x\"\n\\\x01", "rid");
    dl_buf_append_char(&b, '\0');
    EXPECT_STR(b.data, "{\"error\":\"Bad Request\",\"message\":\"bad \\\"x\\\"\\n\\\\\\u0001\","
                       "\"requestId\":\"rid\"}");
    /* a path quoted in a 404 with bytes that are not UTF-8: U+FFFD each */
    dl_buf_reset(&b);
    dl_error_body(&b, 404, "no route for GET /\xff\xc3 caf\xc3\xa9", NULL);
    dl_buf_append_char(&b, '\0');
    EXPECT_STR(b.data, "{\"error\":\"Not Found\",\"message\":\"no route for GET "
                       "/\xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9\"}");
    dl_buf_free(&b);
}

DL_TEST(limits_defaults_match_contract)
{
    unsetenv("DEVLOOP_MAX_BODY");
    unsetenv("DEVLOOP_MAX_BODY_ELEMENTS");
    unsetenv("DEVLOOP_HEADER_TIMEOUT_MS");
    unsetenv("DEVLOOP_KEEPALIVE_TIMEOUT_MS");
    unsetenv("DEVLOOP_BODY_TIMEOUT_MS");
    unsetenv("DEVLOOP_BODY_MIN_BYTES");
    dl_config_t cfg;
    dl_config_init(&cfg);
    EXPECT_EQ(cfg.max_body, 1024 * 1024);
    EXPECT_EQ(cfg.max_body_elements, 100000);
    EXPECT_EQ(cfg.header_timeout_ms, 10000);
    EXPECT_EQ(cfg.keepalive_timeout_ms, 15000);
    EXPECT_EQ(cfg.body_timeout_ms, 10000);
    EXPECT_EQ(cfg.body_min_bytes, 1024);
    EXPECT_EQ(cfg.compress_min, 1024);
    EXPECT(cfg.max_uri >= 2048);
    EXPECT(cfg.max_headers >= 50);
}

DL_TEST(limits_from_environment)
{
    setenv("DEVLOOP_MAX_BODY", "12345", 1);
    setenv("DEVLOOP_MAX_BODY_ELEMENTS", "77", 1);
    setenv("DEVLOOP_HEADER_TIMEOUT_MS", "250", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    EXPECT_EQ(cfg.max_body, 12345);
    EXPECT_EQ(cfg.max_body_elements, 77);
    EXPECT_EQ(cfg.header_timeout_ms, 250);
    EXPECT_STR(cfg.env_error, "");
    /* units: sizes and durations as the README writes them */
    setenv("DEVLOOP_MAX_BODY", "2MB", 1);
    setenv("DEVLOOP_HEADER_TIMEOUT_MS", "10s", 1);
    setenv("DEVLOOP_BODY_MIN_BYTES", "512k", 1);
    dl_config_init(&cfg);
    EXPECT_EQ(cfg.max_body, 2 * 1024 * 1024);
    EXPECT_EQ(cfg.header_timeout_ms, 10000);
    EXPECT_EQ(cfg.body_min_bytes, 512 * 1024);
    EXPECT_STR(cfg.env_error, "");
    unsetenv("DEVLOOP_BODY_MIN_BYTES");
    /* garbage and out-of-range values are named, never silently defaulted */
    static const struct { const char *name, *value, *says; } bad[] = {
        {"DEVLOOP_MAX_HEADERS", "not-a-number", "DEVLOOP_MAX_HEADERS=not-a-number"},
        {"GZIP_LEVEL", "42", "GZIP_LEVEL=42: expected a whole number from 1 to 9"},
        {"LOG_LEVEL", "verbose", "LOG_LEVEL=verbose"},
        {"DEVLOOP_MAX_BODY", "2XB", "DEVLOOP_MAX_BODY=2XB: expected a size"},
        {"DEVLOOP_MAX_BODY", "-1", "DEVLOOP_MAX_BODY=-1"},
        {"DEVLOOP_WATCH", "maybe", "DEVLOOP_WATCH=maybe"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        setenv(bad[i].name, bad[i].value, 1);
        dl_config_init(&cfg);
        EXPECT(strstr(cfg.env_error, bad[i].says) != NULL);
        unsetenv(bad[i].name);
    }
}

DL_TEST(error_names)
{
    EXPECT_STR(dl_err_name(DL_ENOMEM), "ENOMEM");
    EXPECT_STR(dl_strerror(DL_ETIMEDOUT), "timed out");
    EXPECT_STR(dl_err_name(12345), "EOTHER");
    EXPECT_STR(dl_err_name(DL_EUNKNOWN), "EUNKNOWN");
    EXPECT_STR(dl_strerror(0), "success");
}

/* ------------------------------------------------- requests from parts */

static int check_req(const char *method, const char *path, const char *name, const char *value,
                     const char **err, int *bad)
{
    dl_http_field_t f[2] = {{.name = "Accept", .name_len = 6, .value = "*/*", .value_len = 3}};
    int n = 1;
    if (name) {
        f[1] = (dl_http_field_t){.name = name, .name_len = strlen(name), .value = value,
                                 .value_len = value ? strlen(value) : 0};
        n = 2;
    }
    return dl_http_request_check(method, strlen(method), path, strlen(path), f, n, NULL, 0, err,
                                 bad, NULL);
}

DL_TEST(request_check_takes_parts)
{
    EXPECT_EQ(check_req("GET", "/a?b=%0d%0a", NULL, NULL, NULL, NULL), 0);
    EXPECT_EQ(check_req("POST", "/x", "Host", " api.example:8443\t", NULL, NULL), 0);
    EXPECT_EQ(check_req("GET", "/", "X-T", "a\tcaf\xc3\xa9", NULL, NULL), 0); /* HTAB, obs-text */
    dl_http_field_t f[2] = {{"X", 1, "1", 1}, {"Host", 4, "a", 1}};
    int host = -2;
    EXPECT_EQ(dl_http_request_check("GET", 3, "/", 1, f, 2, NULL, 0, NULL, NULL, &host), 0);
    EXPECT_EQ(host, 1);
}

DL_TEST(request_check_refuses_smuggling)
{
    static const struct {
        const char *method, *path, *name, *value;
        int bad; /* field at fault, -1 method or path */
    } cases[] = {
        {"GET", "/p/x\r\nGET /mark HTTP/1.1", NULL, NULL, -1},
        {"GET", "/p/x\nGET /mark", NULL, NULL, -1},
        {"GET", "/p/x GET /mark", NULL, NULL, -1},
        {"GET", "/p/\x1b[2J", NULL, NULL, -1},
        {"GET", "/p/caf\xc3\xa9", NULL, NULL, -1},
        {"GET", "p/x", NULL, NULL, -1},
        {"GET", "", NULL, NULL, -1},
        {"GET /mark HTTP/1.1\r\n\r\nGET", "/", NULL, NULL, -1},
        {"GE T", "/", NULL, NULL, -1},
        {"", "/", NULL, NULL, -1},
        {"GET", "/", "X-A\r\nGET /mark", "v", 1},
        {"GET", "/", "X A", "v", 1},
        {"GET", "/", "X:A", "v", 1},
        {"GET", "/", "", "v", 1},
        {"GET", "/", "X-T", "a\r\n\r\nGET /mark HTTP/1.1", 1},
        {"GET", "/", "X-T", "a\nb", 1},
        {"GET", "/", "X-T", "a\rb", 1},
        {"GET", "/", "X-T", "a\x7f", 1},
        {"GET", "/", "Transfer-Encoding", "chunked", 1},
        {"GET", "/", "transfer-encoding", "identity", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = NULL;
        int bad = 7;
        int rc = check_req(cases[i].method, cases[i].path, cases[i].name, cases[i].value, &err,
                           &bad);
        if (rc != DL_EINVAL || err == NULL || bad != cases[i].bad)
            DL_FAIL_AT("case %zu: rc %d, bad %d", i, rc, bad);
    }
    /* NUL inside a part (Lua strings carry their length) */
    dl_http_field_t f = {.name = "X-T", .name_len = 3, .value = "a\0b", .value_len = 3};
    EXPECT_EQ(dl_http_request_check("GET", 3, "/", 1, &f, 1, NULL, 0, NULL, NULL, NULL),
              DL_EINVAL);
    EXPECT_EQ(dl_http_request_check("GET", 3, "/a\0b", 4, NULL, 0, NULL, 0, NULL, NULL, NULL),
              DL_EINVAL);
    EXPECT_EQ(dl_http_request_check("G\0T", 3, "/", 1, NULL, 0, NULL, 0, NULL, NULL, NULL),
              DL_EINVAL);
    /* two Hosts */
    dl_http_field_t two[2] = {{"Host", 4, "a", 1}, {"host", 4, "b", 1}};
    EXPECT_EQ(dl_http_request_check("GET", 3, "/", 1, two, 2, NULL, 0, NULL, NULL, NULL),
              DL_EINVAL);
}
