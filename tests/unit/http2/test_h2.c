/*
 * test_h2.c - the HTTP/2 adapter (runtime/http2/h2.c): the HEADERS of an
 * answer the core decided, reached through the protocol table with a fake
 * connection and a C handler (tests/unit/core/req_fixture.h).
 */
#include <string.h>

#include "core/req_fixture.h"
#include "http2/h2.h"
#include "unit.h"

static nghttp2_nv nva[64];
static size_t n_nv;
static char status_buf[12], lower_buf[256];

static void h2_test_write(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w)
{
    (void)c, (void)r;
    n_nv = dl_h2_response_nv(w, nva, 64, status_buf, lower_buf, sizeof(lower_buf));
    /* the values point into the answer: check them before it goes */
    static char seen[1024];
    size_t off = 0;
    for (size_t i = 0; i < n_nv && off < sizeof(seen) - 2; i++)
        off += (size_t)snprintf(seen + off, sizeof(seen) - off, "%.*s=%.*s\n",
                                (int)nva[i].namelen, nva[i].name, (int)nva[i].valuelen,
                                nva[i].value);
    dl_buf_append(&((fake_conn_t *)c)->out, seen, off);
}

static const dl_proto_t h2_test_proto = {.name = "HTTP/2 test", .write_response = h2_test_write,
                                         .finish = fake_finish};

DL_TEST(h2_response_headers)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    c.base.proto = &h2_test_proto;
    const char *fields[] = {"host", "a", "x-request-id", "abc", NULL};
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", fields);
    r->http_major = 2;
    r->http_minor = 0;
    fixture_run(&c, r, 0);
    dl_buf_append_char(&c.out, '\0');
    EXPECT_STR(c.out.data, ":status=200\n"
                           "date=Mon, 07 Dec 2026 16:00:00 GMT\n"
                           "content-type=text/plain\n"
                           "content-length=2\n"
                           "x-request-id=abc\n"
                           "x-content-type-options=nosniff\n"
                           "cache-control=no-cache, no-store, must-revalidate\n"
                           "x-app=1\n");
    dl_buf_free(&c.out);
}

DL_TEST(h2_response_drops_hop_by_hop)
{
    const char *lines = "Connection: close\r\nKeep-Alive: 5\r\nX-Y:  z \r\n";
    dl_resp_t resp = {.status = 204, .headers = lines, .headers_len = strlen(lines)};
    dl_resp_wire_t w = {.resp = &resp, .status = 204};
    nghttp2_nv out[8];
    char st[12], low[64];
    size_t n = dl_h2_response_nv(&w, out, 8, st, low, sizeof(low));
    EXPECT_EQ(n, 2);
    EXPECT_MEM(out[0].value, out[0].valuelen, "204", 3);
    EXPECT_MEM(out[1].name, out[1].namelen, "x-y", 3);
    EXPECT_MEM(out[1].value, out[1].valuelen, "z", 1);
}
