/*
 * test_inproc.c - in-process requests (runtime/inproc/inproc.c) into the
 * request core with a C handler (tests/unit/core/req_fixture.h): parts in,
 * status, header lines and body out, no request text in between.
 */
#include <string.h>

#include "core/req_fixture.h"
#include "inproc/inproc.h"
#include "unit.h"

typedef struct {
    int calls, got, status, n_fields, set_cookies;
    dl_buf_t headers, body; /* headers: the fields as "Name: value\r\n" lines */
} answer_t;

static void on_answer(const dl_inproc_answer_t *a, void *arg)
{
    answer_t *an = arg;
    an->calls++;
    if (a == NULL)
        return;
    an->got = 1;
    an->status = a->status;
    an->n_fields = a->n_fields;
    for (int i = 0; i < a->n_fields; i++) {
        const dl_http_field_t *f = &a->fields[i];
        dl_buf_append(&an->headers, f->name, f->name_len);
        dl_buf_append_str(&an->headers, ": ");
        dl_buf_append(&an->headers, f->value, f->value_len);
        dl_buf_append_str(&an->headers, "\r\n");
        an->set_cookies += dl_strncasecmp_eq(f->name, f->name_len, "set-cookie", 10);
    }
    dl_buf_append_char(&an->headers, '\0');
    dl_buf_append(&an->body, a->body, a->body_len);
}

typedef struct {
    fake_core_t f;
    fake_conn_t c;
    uv_loop_t loop;
    dl_inproc_t *ip;
} rig_t;

static void rig_init(rig_t *g)
{
    fixture_init(&g->f, &g->c);
    g->f.cfg.max_uri = 64;
    g->f.cfg.max_headers = 8;
    g->f.cfg.max_header_bytes = 256;
    uv_loop_init(&g->loop);
    g->ip = dl_inproc_new(&g->f.ctx, &g->loop);
}

static void rig_close(rig_t *g)
{
    dl_inproc_abort_all(g->ip);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    dl_inproc_free(g->ip);
    uv_loop_close(&g->loop);
    EXPECT_EQ(g->f.released, g->f.acquired);
}

static int ask(rig_t *g, answer_t *an, const char *method, const char *path,
               const dl_http_field_t *fields, int n, const char *body)
{
    memset(an, 0, sizeof(*an));
    dl_inproc_req_t in = {.method = method, .method_len = strlen(method), .path = path,
                          .path_len = strlen(path), .fields = fields, .n_fields = n,
                          .body = body, .body_len = body ? strlen(body) : 0};
    int rc = dl_inproc_request(g->ip, &in, on_answer, an, NULL, NULL);
    EXPECT_EQ(an->calls, 0); /* never from inside the call */
    uv_run(&g->loop, UV_RUN_DEFAULT);
    return rc;
}

DL_TEST(inproc_request_answers)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    dl_http_field_t f[] = {{"X-Request-Id", 12, " id-7 ", 6}};
    EXPECT_EQ(ask(&g, &an, "GET", "/hello", f, 1, NULL), 0);
    EXPECT_EQ(an.calls, 1);
    EXPECT_EQ(an.status, 200);
    EXPECT_MEM(an.body.data, an.body.len, "hi", 2);
    EXPECT(strstr(an.headers.data, "Content-Length: 2\r\n") != NULL);
    EXPECT(strstr(an.headers.data, "X-Request-Id: id-7\r\n") != NULL);
    EXPECT(strstr(an.headers.data, "X-App: 1\r\n") != NULL);
    EXPECT(strstr(an.headers.data, "Connection:") == NULL);
    EXPECT_EQ(g.f.dispatched, 1);
    /* the fields come apart, in the order HTTP/1 sends them: no text */
    EXPECT(memcmp(an.headers.data, "Date: ", 6) == 0);
    EXPECT_EQ(an.n_fields, 7);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);
    rig_close(&g);
}

DL_TEST(inproc_request_head_and_close)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    dl_http_field_t f[] = {{"Connection", 10, "close", 5}};
    ask(&g, &an, "HEAD", "/hello", f, 1, NULL);
    EXPECT_EQ(an.status, 200);
    EXPECT_EQ(an.body.len, 0);
    EXPECT(strstr(an.headers.data, "Content-Length: 2\r\n") != NULL);
    EXPECT(strstr(an.headers.data, "Connection: close\r\n") != NULL);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);
    rig_close(&g);
}

DL_TEST(inproc_request_refusals)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    const char *err = NULL;
    int bad = 0;
    dl_http_field_t crlf[] = {{"X-A", 3, "a\r\nb", 4}};
    dl_inproc_req_t in = {.method = "GET", .method_len = 3, .path = "/hello", .path_len = 6,
                          .fields = crlf, .n_fields = 1};
    EXPECT_EQ(dl_inproc_request(g.ip, &in, on_answer, &an, &err, &bad), DL_EINVAL);
    EXPECT_EQ(bad, 0);
    EXPECT(err != NULL);

    ask(&g, &an, "FOO", "/hello", NULL, 0, NULL);
    EXPECT_EQ(an.status, 400);
    EXPECT(strstr(an.headers.data, "Connection: close\r\n") != NULL);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);

    ask(&g, &an, "GET", "/hello/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        NULL, 0, NULL);
    EXPECT_EQ(an.status, 414);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);

    dl_http_field_t many[9];
    for (int i = 0; i < 9; i++)
        many[i] = (dl_http_field_t){"X-N", 3, "1", 1};
    ask(&g, &an, "GET", "/hello", many, 9, NULL);
    EXPECT_EQ(an.status, 431);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);

    dl_http_field_t expect[] = {{"Expect", 6, "something", 9}};
    ask(&g, &an, "POST", "/hello", expect, 1, "x");
    EXPECT_EQ(an.status, 417);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);

    ask(&g, &an, "GET", "/nope", NULL, 0, NULL);
    EXPECT_EQ(an.status, 404);
    EXPECT(an.body.len > 0 && strstr(an.body.data, "no route for GET /nope") != NULL);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);
    EXPECT_EQ(g.f.dispatched, 0);
    rig_close(&g);
}

static dl_req_t *parked;

static void park_dispatch(void *arg, dl_req_t *r)
{
    (void)arg;
    parked = r;
}

DL_TEST(inproc_request_body_and_abort)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    g.f.ctx.handler.dispatch = park_dispatch;
    parked = NULL;
    EXPECT_EQ(ask(&g, &an, "POST", "/hello", NULL, 0, "abc"), 0);
    EXPECT(parked != NULL);
    EXPECT_EQ(an.calls, 0); /* the handler has not answered */
    EXPECT_MEM(parked->body.data, parked->body.len, "abc", 3);
    size_t len;
    const char *cl = dl_req_header(parked, "content-length", &len);
    EXPECT(cl != NULL);
    EXPECT_MEM(cl, len, "3", 1);
    const char *host = dl_req_header(parked, "host", &len);
    EXPECT(host != NULL);
    EXPECT_MEM(host, len, "localhost", 9);
    EXPECT_EQ(parked->headers[0].name_len, 4); /* the default Host comes first */

    dl_inproc_abort_all(g.ip); /* the worker stops */
    EXPECT_EQ(an.calls, 1);
    EXPECT_EQ(an.got, 0);
    EXPECT(parked->conn == NULL);
    dl_resp_t resp = {.status = 200, .body = "late", .body_len = 4};
    dl_req_respond(parked, &resp); /* detached: dropped, released */
    EXPECT_EQ(g.f.recorded, 0);
    rig_close(&g);
}

/* what dl_http_request_write's test checked of the text, now of the request
 * the core gets: a given Host replaces the default, blanks around a value
 * go, the body's length replaces a given Content-Length */
DL_TEST(inproc_request_from_parts)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    g.f.ctx.handler.dispatch = park_dispatch;
    parked = NULL;
    dl_http_field_t f[] = {{"Host", 4, " api.example:8443\t", 18}, {"content-length", 14, "99", 2}};
    EXPECT_EQ(ask(&g, &an, "POST", "/hello", f, 2, "abc"), 0);
    REQUIRE(parked != NULL);
    size_t len;
    const char *v = dl_req_header(parked, "host", &len);
    EXPECT(v != NULL);
    EXPECT_MEM(v, len, "api.example:8443", 16);
    v = dl_req_header(parked, "content-length", &len);
    EXPECT(v != NULL);
    EXPECT_MEM(v, len, "3", 1);
    EXPECT_EQ(parked->n_headers, 2);
    dl_resp_t resp = {.status = 204};
    dl_req_respond(parked, &resp);
    uv_run(&g.loop, UV_RUN_DEFAULT);
    EXPECT_EQ(an.status, 204);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);
    rig_close(&g);
}

/* two Set-Cookie fields stay two, a comma inside one kept (a text answer
 * parsed again joined them into one) */
DL_TEST(inproc_answer_keeps_fields_apart)
{
    rig_t g;
    rig_init(&g);
    answer_t an;
    ask(&g, &an, "GET", "/cookies", NULL, 0, NULL);
    EXPECT_EQ(an.status, 200);
    EXPECT_EQ(an.set_cookies, 2);
    EXPECT(strstr(an.headers.data, "Set-Cookie: a=1\r\nSet-Cookie: b=2, c=3\r\n") != NULL);
    dl_buf_free(&an.headers);
    dl_buf_free(&an.body);
    rig_close(&g);
}
