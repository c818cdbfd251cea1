/*
 * test_embed_api.c - runtime/server/embed_api.c's in-process requests from a host
 * thread (dl_runtime_request): a request is written from its parts, and one
 * whose method, path or header lines could end a line early (CR, LF, a space
 * in the path, a name that is not a token) or reframe the body
 * (Transfer-Encoding) is refused with DL_EINVAL before anything is sent. An
 * app of two routes counts what reaches /mark: nothing smuggled may.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "devloop.h"
#include "unit.h"

static const char *routes =
    "local api = require \"devloop\"\n"
    "local marks = 0\n"
    "api.route(\"*\", \"/mark\", function() marks = marks + 1 return { marks = marks } end)\n"
    "api.get(\"/marks\", function() return { marks = marks } end)\n"
    "api.get(\"/cookies\", function() return 200, \"x\", { [\"Set-Cookie\"] = { \"a=1\", \"b=2, c=3\" } } end)\n"
    "api.route(\"*\", \"/p/:id\", function(req)\n"
    "  return { host = req.headers.host, x = req.headers[\"x-t\"], body = req.raw_body or \"\" }\n"
    "end)\n";

static void *run_thread(void *rt)
{
    dl_runtime_run(rt, 0);
    return NULL;
}

static dl_runtime_t *start(char *dir, size_t dlen, pthread_t *th)
{
    snprintf(dir, dlen, "/tmp/dl_embed_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return NULL;
    char path[256];
    snprintf(path, sizeof(path), "%s/routes", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/routes/r.lua", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fputs(routes, f);
    fclose(f);
    setenv("DEVLOOP_LOG_DIR", "-", 1);
    dl_config_t cfg;
    dl_config_init(&cfg);
    cfg.app_dir = dir;
    cfg.workers = 1;
    cfg.no_listen = 1;
    cfg.watch = 0;
    cfg.pid_file = "";
    cfg.log_level = DL_LOG_ERROR;
    char err[2048];
    dl_runtime_t *rt;
    if (dl_runtime_new(&cfg, &rt, err, sizeof(err)) != 0) {
        DL_FAIL_AT("dl_runtime_new: %s", err);
        return NULL;
    }
    pthread_create(th, NULL, run_thread, rt);
    return rt;
}

/* status of the answer, or the (negative) error */
static int req(dl_runtime_t *rt, const char *method, const char *path, const char *const *headers,
               const char *body, char *out, size_t outlen)
{
    dl_response_t res;
    int rc = dl_runtime_request(rt, method, path, headers, body, body ? strlen(body) : 0, 3000,
                                &res);
    if (rc != 0)
        return rc;
    if (out)
        snprintf(out, outlen, "%.*s", (int)res.body_len, res.body);
    int status = res.status;
    dl_response_free(&res);
    return status;
}

DL_TEST(runtime_request_refuses_smuggling)
{
    char dir[64];
    pthread_t th;
    dl_runtime_t *rt = start(dir, sizeof(dir), &th);
    if (rt == NULL)
        return;
    char body[512];
    EXPECT_EQ(req(rt, "GET", "/p/ok", NULL, NULL, body, sizeof(body)), 200);

    const char *smuggle = "GET /mark HTTP/1.1\r\nHost: x\r\n\r\n";
    char path[256], hdr[256];
    snprintf(path, sizeof(path), "/p/x HTTP/1.1\r\nHost: x\r\n\r\n%s", smuggle);
    EXPECT_EQ(req(rt, "GET", path, NULL, NULL, NULL, 0), DL_EINVAL);
    EXPECT_EQ(req(rt, "GET", "/p/x\nGET", NULL, NULL, NULL, 0), DL_EINVAL);
    EXPECT_EQ(req(rt, "GET", "/p/a b", NULL, NULL, NULL, 0), DL_EINVAL);
    EXPECT_EQ(req(rt, "GET /mark HTTP/1.1\r\n\r\nGET", "/p/x", NULL, NULL, NULL, 0), DL_EINVAL);
    EXPECT_EQ(req(rt, "G T", "/p/x", NULL, NULL, NULL, 0), DL_EINVAL);
    snprintf(hdr, sizeof(hdr), "X-T: a\r\n\r\n%s", smuggle);
    const char *h1[] = {hdr, NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h1, NULL, NULL, 0), DL_EINVAL);
    snprintf(hdr, sizeof(hdr), "X-A\r\n\r\n%s: v", smuggle);
    EXPECT_EQ(req(rt, "GET", "/p/x", h1, NULL, NULL, 0), DL_EINVAL);
    const char *h2[] = {"X-T: a\nb", NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h2, NULL, NULL, 0), DL_EINVAL);
    const char *h3[] = {"X A: v", NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h3, NULL, NULL, 0), DL_EINVAL);
    const char *h4[] = {"no colon", NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h4, NULL, NULL, 0), DL_EINVAL);
    /* framing is the runtime's: chunked with no body left the request
     * waiting for chunks until the timeout; with one it could smuggle */
    const char *h5[] = {"Transfer-Encoding: chunked", NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h5, NULL, NULL, 0), DL_EINVAL);
    char chunked[256];
    snprintf(chunked, sizeof(chunked), "0\r\n\r\n%s", smuggle);
    EXPECT_EQ(req(rt, "POST", "/p/x", h5, chunked, NULL, 0), DL_EINVAL);

    EXPECT_EQ(req(rt, "GET", "/marks", NULL, NULL, body, sizeof(body)), 200);
    EXPECT_STR(body, "{\"marks\":0}");

    /* sound parts: one Host (the given one), Content-Length from the body */
    const char *h6[] = {"Host: api.example", "X-T:  tab\there  ", NULL};
    EXPECT_EQ(req(rt, "GET", "/p/x", h6, NULL, body, sizeof(body)), 200);
    EXPECT(strstr(body, "\"host\":\"api.example\"") != NULL);
    EXPECT(strstr(body, "\"x\":\"tab\\there\"") != NULL);
    const char *h7[] = {"Content-Length: 1", NULL};
    EXPECT_EQ(req(rt, "POST", "/p/x", h7, "abc", body, sizeof(body)), 200);
    EXPECT(strstr(body, "\"body\":\"abc\"") != NULL);

    /* the answer's fields come apart as well as in lines: two Set-Cookie stay two */
    dl_response_t res;
    REQUIRE(dl_runtime_request(rt, "GET", "/cookies", NULL, NULL, 0, 3000, &res) == 0);
    EXPECT_EQ(res.status, 200);
    int cookies = 0;
    for (size_t i = 0; i < res.n_fields; i++) {
        const dl_response_field_t *f = &res.fields[i];
        if (f->name_len == 10 && memcmp(f->name, "Set-Cookie", 10) == 0) {
            EXPECT_MEM(f->value, f->value_len, cookies ? "b=2, c=3" : "a=1", cookies ? 8 : 3);
            cookies++;
        }
    }
    EXPECT_EQ(cookies, 2);
    EXPECT(res.n_fields >= 6 && memcmp(res.fields[0].name, "Date", 4) == 0);
    EXPECT(strstr(res.headers, "Set-Cookie: a=1\r\nSet-Cookie: b=2, c=3\r\n") != NULL);
    EXPECT_MEM(res.body, res.body_len, "x", 1);
    dl_response_free(&res);

    dl_runtime_stop(rt);
    pthread_join(th, NULL);
    dl_runtime_free(rt);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        DL_FAIL_AT("cannot remove %s", dir);
}
