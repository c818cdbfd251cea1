/*
 * test_response.c - pieces of runtime/core/response.c that protocols share:
 * walking a handler's own header lines; what a handler may not send, judged
 * once for every protocol (a C handler through the fake protocol of
 * tests/unit/core/req_fixture.h).
 */
#include <string.h>

#include "core/req_fixture.h"
#include "core/response.h"
#include "unit.h"

DL_TEST(core_response_header_lines)
{
    /* trimmed values, a line without a colon or a name skipped, a last line
     * without CRLF, an empty value */
    const char lines[] = "X-A:  one \r\nno colon here\r\n: nameless\r\nX-B:\ttwo\t\r\nX-C:\r\nX-D: last";
    dl_hdr_lines_t it;
    const char *n, *v;
    size_t nl, vl;
    const char *want[][2] = {{"X-A", "one"}, {"X-B", "two"}, {"X-C", ""}, {"X-D", "last"}};
    dl_hdr_lines_init(&it, lines, sizeof(lines) - 1);
    for (size_t i = 0; i < 4; i++) {
        EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 1);
        EXPECT_EQ(nl, strlen(want[i][0]));
        EXPECT(memcmp(n, want[i][0], nl) == 0);
        EXPECT_EQ(vl, strlen(want[i][1]));
        EXPECT(memcmp(v, want[i][1], vl) == 0);
    }
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
    /* no lines at all */
    dl_hdr_lines_init(&it, NULL, 0);
    EXPECT_EQ(dl_hdr_lines_next(&it, &n, &nl, &v, &vl), 0);
}

static const char *handler_lines;

static void lines_dispatch(void *arg, dl_req_t *r)
{
    (void)arg;
    dl_resp_t resp = {.status = 200, .content_type = "text/plain", .content_type_len = 10,
                      .body = "hi", .body_len = 2, .headers = handler_lines,
                      .headers_len = strlen(handler_lines)};
    dl_req_respond(r, &resp);
}

static int answer_with(const char *lines)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    f.ctx.handler.dispatch = lines_dispatch;
    handler_lines = lines;
    const char *fields[] = {"host", "a", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", fields);
    fixture_run(&c, r, 0);
    EXPECT_EQ(c.writes, 1);
    EXPECT_EQ(f.released, f.acquired);
    dl_buf_free(&c.out);
    return c.status;
}

/* connection-specific fields and the runtime's own: 500 on every protocol
 * (HTTP/2 sent TE and its client refused the stream) */
DL_TEST(core_response_refuses_reserved_fields)
{
    EXPECT_EQ(answer_with("X-Ok: 1\r\n"), 200);
    static const char *const bad[] = {"TE: gzip\r\n", "Upgrade: h2c\r\n",
                                      "keep-alive: 5\r\n", "Proxy-Connection: x\r\n",
                                      "X-A: 1\r\nConnection: close\r\n",
                                      "Transfer-Encoding: chunked\r\n", "Content-Length: 9\r\n",
                                      "Date: x\r\n", "X-Request-Id: y\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (answer_with(bad[i]) != 500)
            DL_FAIL_AT("%s was sent", bad[i]);
    EXPECT_EQ(dl_resp_header_reserved("te", 2), 1);
    EXPECT_EQ(dl_resp_header_reserved("tex", 3), 0);
}

/* a header block every protocol can send goes out; one over DL_RESP_HEADERS_MAX is 500 */
DL_TEST(core_response_bounds_handler_header_bytes)
{
    dl_buf_t b = DL_BUF_INIT;
    dl_buf_append_str(&b, "X-Big: ");
    while (b.len < DL_RESP_HEADERS_MAX - 20)
        dl_buf_append_char(&b, 'v');
    dl_buf_append_str(&b, "\r\n");
    dl_buf_append_char(&b, '\0');
    EXPECT_EQ(answer_with(b.data), 200);
    b.len--;
    for (int i = 0; i < 40; i++)
        dl_buf_append_char(&b, 'w');
    dl_buf_append_str(&b, ": v\r\n");
    dl_buf_append_char(&b, '\0');
    EXPECT_EQ(answer_with(b.data), 500);
    dl_buf_free(&b);
}
