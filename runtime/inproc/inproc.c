/*
 * inproc.c - in-process requests as a protocol of the request core. A
 * request's parts become a dl_req_t the way the HTTP/1 reader
 * (http1/conn.c) would have left it: the same field order (a default Host
 * first, Content-Length last), limits and refusals (414, 431, 413, 417),
 * keep-alive from Connection. The answer is written by the core's decision
 * (core/response.c) into status, header lines and body, and handed to the
 * caller from a zero timer, never inside the caller's own call.
 */
#include "inproc/inproc.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/upload.h"

typedef struct item_s {
    dl_core_conn_t base; /* first: the request's connection */
    uv_timer_t timer;
    dl_inproc_t *ip;
    struct item_s *prev, *next; /* requests not answered yet */
    dl_req_t *active;           /* the request, until it is answered */
    int answered, status;
    dl_buf_t headers, body;
    dl_inproc_cb cb;
    void *arg;
} item_t;

struct dl_inproc_s {
    dl_core_ctx_t *ctx;
    uv_loop_t *loop;
    item_t *items;
};

static const dl_proto_t inproc_proto;

/* ----------------------------------------------------------------- items */

static void unlink_item(item_t *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else if (it->ip->items == it)
        it->ip->items = it->next;
    if (it->next)
        it->next->prev = it->prev;
    it->prev = it->next = NULL;
}

static void on_item_closed(uv_handle_t *h)
{
    item_t *it = h->data;
    dl_buf_free(&it->headers);
    dl_buf_free(&it->body);
    dl_free(it);
}

/* the end, from a zero timer: never inside the core's own calls */
static void item_end(uv_timer_t *h)
{
    item_t *it = h->data;
    unlink_item(it);
    dl_inproc_answer_t a = {.status = it->status,
                            .headers = it->headers.data ? it->headers.data : "",
                            .headers_len = it->headers.len,
                            .body = it->body.data ? it->body.data : "",
                            .body_len = it->body.len};
    it->cb(it->answered ? &a : NULL, it->arg);
    uv_close((uv_handle_t *)h, on_item_closed);
}

/* ------------------------------------------------------------- the protocol */

/* A file body is read whole: the caller wants the bytes, not a stream. */
static int read_file(dl_buf_t *b, int fd, uint64_t off, uint64_t len)
{
    if (dl_buf_reserve(b, (size_t)len) != 0)
        return DL_ENOMEM;
    while (len > 0) {
        ssize_t n = pread(fd, b->data + b->len, (size_t)len, (off_t)off);
        if (n <= 0)
            return DL_EIO;
        b->len += (size_t)n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

static void inproc_write(dl_core_conn_t *base, dl_req_t *r, const dl_resp_wire_t *w)
{
    item_t *it = (item_t *)base;
    const dl_resp_t *resp = w->resp;
    dl_buf_t *o = &it->headers;
    (void)r;
    it->active = NULL;
    dl_resp_wire_put_lines(w, o);
    if (!w->keep)
        dl_buf_append_str(o, "Connection: close\r\n");
    if (resp->headers_len)
        dl_buf_append(o, resp->headers, resp->headers_len);
    int rc = 0;
    if (resp->has_file) {
        if (!w->no_body && w->body_len > 0)
            rc = read_file(&it->body, resp->file_fd, resp->file_off, w->body_len);
        close(resp->file_fd);
    } else if (!w->no_body) {
        dl_buf_append(&it->body, w->body, w->body_len);
    }
    /* an answer cut short is no answer (a socket client would see the close) */
    it->answered = rc == 0 && !o->oom && !it->body.oom && w->status >= 200;
    it->status = w->status;
}

static void inproc_finish(dl_core_conn_t *base, const dl_resp_wire_t *w)
{
    item_t *it = (item_t *)base;
    (void)w;
    it->base.closed = 1; /* one request per connection */
    uv_timer_start(&it->timer, item_end, 0, 0);
}

static const dl_proto_t inproc_proto = {
    .name = "in-process",
    .write_response = inproc_write,
    .finish = inproc_finish,
};

/* ------------------------------------------------------------- the request */

/* llhttp's name for the method (a static string), or NULL for one it refuses
 * with *msg the HTTP/1 reader's words for it (http1/conn.c): PRI and the
 * RTSP methods have their own (llhttp knows them, only not in HTTP/1.x). */
static const char *method_static(const char *m, size_t len, const char **msg)
{
#define DL_METHOD_NAME(num, name, string)                                                      \
    if (len == sizeof(#string) - 1 && memcmp(m, #string, len) == 0)                           \
        return #string;
    HTTP_METHOD_MAP(DL_METHOD_NAME)
#undef DL_METHOD_NAME
    *msg = "malformed request: Invalid method encountered";
    if (len == 3 && memcmp(m, "PRI", 3) == 0)
        *msg = "malformed request: Expected HTTP/2 Connection Preface";
#define DL_METHOD_RTSP(num, name, string)                                                      \
    if (len == sizeof(#string) - 1 && memcmp(m, #string, len) == 0)                           \
        *msg = "malformed request: Invalid method for HTTP/x.x request";
    RTSP_METHOD_MAP(DL_METHOD_RTSP)
#undef DL_METHOD_RTSP
    return NULL;
}

static int add_field(dl_req_t *r, const char *n, size_t nlen, const char *v, size_t vlen)
{
    r->header_bytes += nlen + vlen;
    return dl_req_header_add(r, n, nlen, v, vlen);
}

/* Whether the comma list in field name holds token (RFC 9110 7.6.1). */
/* Whether the request keeps its connection, as llhttp decides for HTTP/1.1:
 * not with `Connection: close`, nor with an Upgrade it names (an upgrade
 * the runtime does not take ends the connection). */
static int keeps_alive(const dl_req_t *r)
{
    size_t len, ulen;
    const char *v = dl_req_header(r, "connection", &len);
    if (v == NULL)
        return 1;
    int upgrade = dl_req_header(r, "upgrade", &ulen) != NULL;
    const char *end = v + len, *a, *b;
    while (dl_http_list_next(&v, end, &a, &b)) {
        size_t n = (size_t)(b - a);
        if (dl_strncasecmp_eq(a, n, "close", 5) ||
            (upgrade && dl_strncasecmp_eq(a, n, "upgrade", 7)))
            return 0;
    }
    return 1;
}

/* The head as the HTTP/1 reader would have it; 0 or a status (*msg why). */
static int build(dl_inproc_t *ip, dl_req_t *r, const dl_inproc_req_t *in, int host,
                 const char **msg)
{
    const dl_config_t *cfg = ip->ctx->cfg;
    if (in->path_len > cfg->max_uri) {
        *msg = "request target too long";
        return 414;
    }
    dl_buf_append(&r->head, in->path, in->path_len);
    r->url_len = (uint32_t)in->path_len;
    int rc = 0;
    if (host < 0)
        rc = add_field(r, "Host", 4, "localhost", 9);
    for (int i = 0; i < in->n_fields && rc == 0; i++) {
        const dl_http_field_t *f = &in->fields[i];
        if (dl_strncasecmp_eq(f->name, f->name_len, "content-length", 14))
            continue; /* the body's own length is written */
        const char *v = f->value ? f->value : "", *e = v + f->value_len;
        dl_http_trim(&v, &e);
        rc = add_field(r, f->name, f->name_len, v, (size_t)(e - v));
    }
    if (rc == 0 && dl_http_request_framed(in->method, in->method_len, in->body_len)) {
        char len[24];
        int l = snprintf(len, sizeof(len), "%zu", in->body_len);
        rc = add_field(r, "Content-Length", 14, len, (size_t)l);
    }
    if (rc != 0) {
        *msg = "out of memory";
        return 503;
    }
    if (r->header_bytes > cfg->max_header_bytes) {
        *msg = "request headers too large";
        return 431;
    }
    if (r->n_headers > cfg->max_headers) {
        *msg = "too many request headers";
        return 431;
    }
    r->n_head_headers = r->n_headers;
    return 0;
}

/* Everything between the head and dispatch; 0 or a status (*msg why). */
static int run(item_t *it, dl_req_t *r, const dl_inproc_req_t *in, int host, const char **msg)
{
    int status = build(it->ip, r, in, host, msg);
    if (status)
        return status;
    int has_body = in->body_len > 0;
    status = dl_req_begin(&it->base, r, has_body, msg);
    if (status)
        return status;
    size_t elen;
    const char *e = dl_req_header(r, "expect", &elen);
    if (e) {
        int rc = dl_req_expect_check(e, elen);
        if (rc < 0) {
            *msg = "only Expect: 100-continue is supported";
            return 417;
        }
        r->expect_continue = rc == 1;
    }
    r->keep_alive = keeps_alive(r);
    if (has_body) {
        if (in->body_len > r->body_limit && !r->early_status) {
            *msg = "request body too large";
            return 413;
        }
        if (dl_req_early_answer(&it->base, r)) { /* answered without its body */
            r->keep_alive = 0;
            return 0;
        }
        r->body_seen = in->body_len;
        if (r->upload) {
            int rc = dl_upload_feed(r->upload, in->body, in->body_len);
            if (rc != 0) {
                snprintf(it->base.err_buf, sizeof(it->base.err_buf), "%s",
                         dl_upload_error(r->upload));
                *msg = it->base.err_buf;
                return dl_upload_status(rc);
            }
        } else if (dl_buf_append(&r->body, in->body, in->body_len) != 0) {
            *msg = "out of memory";
            return 503;
        }
    }
    if (r->upload && !r->early_status) {
        int rc = dl_upload_finish(r->upload);
        if (rc != 0) {
            snprintf(it->base.err_buf, sizeof(it->base.err_buf), "%s", dl_upload_error(r->upload));
            *msg = it->base.err_buf;
            return dl_upload_status(rc);
        }
    }
    return 0;
}

int dl_inproc_request(dl_inproc_t *ip, const dl_inproc_req_t *in, dl_inproc_cb cb, void *arg,
                      const char **err, int *bad_field)
{
    int host = -1;
    int rc = dl_http_request_check(in->method, in->method_len, in->path, in->path_len, in->fields,
                                   in->n_fields, in->body, in->body_len, err, bad_field, &host);
    if (rc != 0)
        return rc;
    dl_core_ctx_t *x = ip->ctx;
    item_t *it = dl_calloc(1, sizeof(*it));
    dl_req_t *r = it ? x->acquire(x) : NULL;
    if (r == NULL) {
        dl_free(it);
        return DL_ENOMEM;
    }
    it->base.proto = &inproc_proto;
    it->base.ctx = x;
    it->base.inproc = 1;
    it->ip = ip;
    it->cb = cb;
    it->arg = arg;
    uv_timer_init(ip->loop, &it->timer);
    it->timer.data = it;
    it->next = ip->items;
    if (it->next)
        it->next->prev = it;
    ip->items = it;

    r->conn = &it->base;
    r->start_ns = uv_hrtime();
    r->http_major = 1;
    r->http_minor = 1;
    it->active = r;
    const char *msg = NULL;
    int status = 0;
    r->method_name = method_static(in->method, in->method_len, &msg);
    if (r->method_name == NULL) {
        status = 400;
    } else {
        r->method = dl_method_from_name(in->method, in->method_len);
        status = run(it, r, in, host, &msg);
    }
    if (status) {
        /* refused as the HTTP/1 reader refuses: JSON, then the connection closes */
        if (r->id[0] == '\0')
            dl_request_id_new(x->prng, r->id);
        r->keep_alive = 0;
        dl_req_respond_error(r, status, msg);
        return 0;
    }
    dl_req_dispatch(&it->base, r);
    return 0;
}

/* ------------------------------------------------------------ the worker */

dl_inproc_t *dl_inproc_new(dl_core_ctx_t *x, uv_loop_t *loop)
{
    dl_inproc_t *ip = dl_calloc(1, sizeof(*ip));
    if (ip) {
        ip->ctx = x;
        ip->loop = loop;
    }
    return ip;
}

void dl_inproc_abort_all(dl_inproc_t *ip)
{
    while (ip && ip->items) {
        item_t *it = ip->items;
        unlink_item(it);
        if (it->active) { /* its handler runs on detached */
            it->active->conn = NULL;
            it->active = NULL;
        }
        it->base.closed = 1;
        it->cb(NULL, it->arg);
        uv_timer_stop(&it->timer);
        uv_close((uv_handle_t *)&it->timer, on_item_closed);
    }
}

void dl_inproc_free(dl_inproc_t *ip)
{
    dl_free(ip);
}
