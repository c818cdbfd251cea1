/*
 * test_h2.c - the HTTP/2 adapter (runtime/http2/h2.c): the HEADERS of an
 * answer the core decided, reached through the protocol table with a fake
 * connection and a C handler (tests/unit/core/req_fixture.h).
 */
#include <string.h>

#include "core/req_fixture.h"
#include "http2/h2.h"
#include "unit.h"

static nghttp2_nv *nva;
static size_t n_nv;
static dl_buf_t nv_mem;

static void h2_test_write(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w)
{
    (void)c, (void)r;
    n_nv = (size_t)dl_h2_response_nv(w, &nv_mem, &nva);
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

/* sized from the answer: 100 fields and 6000 bytes of names all go out
 * (a fixed 64-entry array and 4 KiB of names cut them once) */
DL_TEST(h2_response_keeps_every_field)
{
    dl_buf_t lines = DL_BUF_INIT;
    for (int i = 0; i < 100; i++)
    {
        char l[32];
        dl_buf_append(&lines, l, (size_t)snprintf(l, sizeof(l), "X-H%d: %d\r\n", i, i));
    }
    for (int i = 0; i < 6; i++) {
        dl_buf_append_char(&lines, (char)('A' + i));
        for (int j = 0; j < 999; j++)
            dl_buf_append_char(&lines, 'N');
        dl_buf_append_str(&lines, ":  v \r\n");
    }
    dl_resp_t resp = {.status = 204, .headers = lines.data, .headers_len = lines.len};
    dl_resp_wire_t w = {.resp = &resp, .status = 204};
    dl_buf_t mem = DL_BUF_INIT;
    nghttp2_nv *out;
    ssize_t n = dl_h2_response_nv(&w, &mem, &out);
    EXPECT_EQ(n, 107);
    EXPECT_MEM(out[0].value, out[0].valuelen, "204", 3);
    EXPECT_MEM(out[1].name, out[1].namelen, "x-h0", 4);
    EXPECT_MEM(out[100].name, out[100].namelen, "x-h99", 5);
    EXPECT_EQ(out[106].namelen, 1000);
    EXPECT_EQ(out[106].name[0], 'f');
    EXPECT_EQ(out[106].name[999], 'n');
    EXPECT_MEM(out[106].value, out[106].valuelen, "v", 1);
    dl_buf_free(&mem);
    dl_buf_free(&lines);
}
