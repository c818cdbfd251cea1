/*
 * test_write.c - HTTP/1.x serialisation (runtime/http1/write.c) of answers
 * the core decided, reached through the protocol table with a fake
 * connection and a C handler (tests/unit/core/req_fixture.h).
 */
#include <string.h>

#include "core/req_fixture.h"
#include "http1/write.h"
#include "unit.h"

static void h1_write(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w)
{
    dl_http1_write_response(&((fake_conn_t *)c)->out, r, w);
}

static const dl_proto_t h1_test_proto = {.name = "HTTP/1 test", .write_response = h1_write,
                                         .finish = fake_finish};

DL_TEST(http1_write_response)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    c.base.proto = &h1_test_proto;
    const char *fields[] = {"host", "a", "x-request-id", "abc", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", fields);
    fixture_run(&c, r, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT_STR(c.out.data, "HTTP/1.1 200 OK\r\n"
                           "Date: Mon, 07 Dec 2026 16:00:00 GMT\r\n"
                           "Content-Type: text/plain\r\n"
                           "Content-Length: 2\r\n"
                           "X-Request-Id: abc\r\n"
                           "X-Content-Type-Options: nosniff\r\n"
                           "Cache-Control: no-cache, no-store, must-revalidate\r\n"
                           "X-App: 1\r\n"
                           "\r\n"
                           "hi");
    dl_buf_free(&c.out);
}

DL_TEST(http1_write_close_and_http10)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    c.base.proto = &h1_test_proto;
    const char *fields[] = {"x-request-id", "abc", NULL};
    dl_req_t *r = fixture_req(&f, &c, "HEAD", "/nope", fields);
    r->http_minor = 0; /* HTTP/1.0: no Host needed, keep-alive said out loud */
    fixture_run(&c, r, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(strncmp(c.out.data, "HTTP/1.0 404 Not Found\r\n", 24) == 0);
    EXPECT(strstr(c.out.data, "Connection: keep-alive\r\n") != NULL);
    EXPECT(strstr(c.out.data, "\r\n\r\n") + 4 == c.out.data + c.out.len - 1); /* HEAD: no body */
    dl_buf_reset(&c.out);

    r = fixture_req(&f, &c, "GET", "/hello", fields);
    r->keep_alive = 0;
    fixture_run(&c, r, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT(strstr(c.out.data, "Connection: close\r\n") != NULL);
    EXPECT_EQ(c.keep, 0);
    dl_buf_free(&c.out);
}
