/*
 * test_request.c - the request core (runtime/core/request.c, response.c)
 * with a C handler and a fake protocol: no worker, no socket, no Lua.
 */
#include <string.h>

#include "core/request.h"
#include "req_fixture.h"
#include "unit.h"

DL_TEST(core_request_c_handler_answers)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *fields[] = {"host", "example.com", "x-request-id", "req-1", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello?x=1", fields);
    EXPECT_EQ(fixture_run(&c, r, 0), 0);
    EXPECT_EQ(f.dispatched, 1);
    EXPECT_EQ(c.writes, 1);
    EXPECT_EQ(c.finishes, 1);
    EXPECT_EQ(c.status, 200);
    EXPECT_EQ(c.keep, 1);
    EXPECT_EQ(f.n_requests, 1);
    EXPECT_EQ(f.recorded, 1);
    EXPECT_EQ(f.last_status, 200);
    EXPECT_EQ(f.released, f.acquired);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(has_line(&c.out, "date: Mon, 07 Dec 2026 16:00:00 GMT"));
    EXPECT(has_line(&c.out, "content-type: text/plain"));
    EXPECT(has_line(&c.out, "content-length: 2"));
    EXPECT(has_line(&c.out, "x-request-id: req-1"));
    EXPECT(has_line(&c.out, "x-content-type-options: nosniff"));
    EXPECT(has_line(&c.out, "cache-control: no-cache, no-store, must-revalidate"));
    EXPECT(has_line(&c.out, "X-App: 1"));
    EXPECT(!has_line(&c.out, "strict-transport-security: max-age=1"));
    EXPECT(c.out.len >= 3 && memcmp(c.out.data + c.out.len - 3, "hi", 2) == 0);
    dl_buf_free(&c.out);
}

DL_TEST(core_request_not_found_and_method)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *fields[] = {"host", "a", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/nope", fields);
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.status, 404);
    EXPECT_EQ(f.dispatched, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(strstr(c.out.data, "\"requestId\":\"") != NULL);
    EXPECT(strstr(c.out.data, "no route for GET /nope") != NULL);
    EXPECT(has_line(&c.out, "content-type: application/json"));
    dl_buf_reset(&c.out);

    r = fixture_req(&f, &c, "DELETE", "/hello", fields);
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.status, 405);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(has_line(&c.out, "allow: GET, HEAD, POST"));
    EXPECT_EQ(f.released, f.acquired);
    dl_buf_free(&c.out);
}

DL_TEST(core_request_refused_on_its_head)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *fields[] = {"host", "a", NULL};
    dl_req_t *r = fixture_req(&f, &c, "POST", "/secret", fields);
    const char *msg = NULL;
    EXPECT_EQ(dl_req_begin(&c.base, r, 1, &msg), 0);
    EXPECT_EQ(r->early_status, 401);
    EXPECT(dl_req_early_answer(&c.base, r));
    dl_req_dispatch(&c.base, r);
    EXPECT_EQ(c.status, 401);
    EXPECT_EQ(f.dispatched, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(has_line(&c.out, "WWW-Authenticate: Bearer realm=\"devloop\""));
    EXPECT(strstr(c.out.data, "a token is needed") != NULL);
    dl_buf_free(&c.out);
}

DL_TEST(core_request_target_checks)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *none[] = {NULL};
    const char *two[] = {"host", "a", "host", "b", NULL};
    const char *msg = NULL;
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", none);
    EXPECT_EQ(dl_req_begin(&c.base, r, 0, &msg), 400); /* HTTP/1.1 without Host */
    f.ctx.release(&f.ctx, r);
    r = fixture_req(&f, &c, "GET", "/hello", two);
    EXPECT_EQ(dl_req_begin(&c.base, r, 0, &msg), 400);
    f.ctx.release(&f.ctx, r);
    const char *other[] = {"host", "other", NULL};
    r = fixture_req(&f, &c, "GET", "https://example.com/hello", other);
    EXPECT_EQ(dl_req_begin(&c.base, r, 0, &msg), 421); /* https target without TLS */
    f.ctx.release(&f.ctx, r);
    r = fixture_req(&f, &c, "GET", "http://example.com/hello?a", other);
    EXPECT_EQ(dl_req_begin(&c.base, r, 0, &msg), 0); /* rewritten to origin-form */
    EXPECT_MEM(r->head.data, r->url_len, "/hello?a", 8);
    size_t hl;
    const char *host = dl_req_header(r, "host", &hl);
    EXPECT(host != NULL);
    EXPECT_MEM(host, hl, "example.com", 11);
    f.ctx.release(&f.ctx, r);
    EXPECT_EQ(dl_req_expect_check("100-continue", 12), 1);
    EXPECT_EQ(dl_req_expect_check(" , ", 3), 0);
    EXPECT_EQ(dl_req_expect_check("100-continue, x", 15), -1);
    EXPECT_EQ(f.released, f.acquired);
}

DL_TEST(core_response_compression_and_tls)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    f.ctx.compressor = dl_compressor_new(6);
    f.ctx.hsts = "max-age=1";
    c.base.tls = 1;
    const char *fields[] = {"host", "a", "accept-encoding", "gzip", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/big", fields);
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.status, 200);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(has_line(&c.out, "content-encoding: gzip"));
    EXPECT(has_line(&c.out, "vary: Accept-Encoding"));
    EXPECT(has_line(&c.out, "strict-transport-security: max-age=1"));
    EXPECT(f.last_bytes < 2000); /* what was sent: the compressed length */
    dl_compressor_free(f.ctx.compressor);
    dl_buf_free(&c.out);
}

DL_TEST(core_response_head_closed_and_stopping)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *fields[] = {"host", "a", NULL};
    dl_req_t *r = fixture_req(&f, &c, "HEAD", "/hello", fields);
    c.base.stopping = 1;
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.no_body, 1);
    EXPECT_EQ(c.keep, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(has_line(&c.out, "content-length: 2")); /* what GET would have sent */
    EXPECT(strstr(c.out.data, "\nhi") == NULL);
    /* a connection gone: the answer is dropped, the request still released */
    r = fixture_req(&f, &c, "GET", "/hello", fields);
    c.base.closed = 1;
    int writes = c.writes;
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.writes, writes);
    EXPECT_EQ(f.released, f.acquired);
    dl_buf_free(&c.out);
}

DL_TEST(core_response_codec_and_error_details)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    const char *mp[] = {"accept", "application/msgpack, application/json;q=0.5", NULL};
    const char *js[] = {"accept", "*/*", NULL};
    const char *ct;
    size_t ctlen;
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", mp);
    EXPECT_EQ(dl_resp_codec(r, &ct, &ctlen), DL_CODEC_MSGPACK);
    EXPECT_MEM(ct, ctlen, "application/msgpack", 19);
    f.ctx.release(&f.ctx, r);
    r = fixture_req(&f, &c, "GET", "/hello", js);
    EXPECT_EQ(dl_resp_codec(r, &ct, &ctlen), DL_CODEC_JSON);
    EXPECT_MEM(ct, ctlen, "application/json", 16);
    f.ctx.release(&f.ctx, r);

    dl_buf_t b = DL_BUF_INIT;
    dl_resp_error_body(&b, 422, "bad", 3, "id1", "[1,2]", 5);
    dl_buf_append_char(&b, '\0');
    EXPECT_STR(b.data, "{\"error\":\"Unprocessable Entity\",\"message\":\"bad\",\"requestId\":\"id1\","
                       "\"details\":[1,2]}");
    b.len = 0; /* a message's NUL bytes are kept (api.fail(400, "a\0b")) */
    dl_resp_error_body(&b, 400, "a\0b", 3, "id1", NULL, 0);
    EXPECT_MEM(b.data, b.len, "{\"error\":\"Bad Request\",\"message\":\"a\\u0000b\",\"requestId\":\"id1\"}",
               62);
    dl_buf_free(&b);
}
