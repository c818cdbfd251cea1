/*
 * inproc.c - in-process requests as a protocol of the request core. A
 * request's parts become a dl_req_t the way the HTTP/1 reader
 * (http1/conn.c) would have left it: the same field order (a default Host
 * first, Content-Length last), limits and refusals (414, 431, 413, 417),
 * keep-alive from Connection. The answer the core decided (core/response.c)
 * is kept as status, fields and body, never as text, and handed to the
 * caller from a zero timer, never inside the caller's own call.
 */
#include "inproc/inproc.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/list.h"
#include "core/upload.h"

typedef struct {
    size_t name_off, name_len, value_off, value_len; /* in item_t.strs */
} field_at_t;

typedef struct item_s {
    dl_core_conn_t base; /* first: the request's connection */
    uv_timer_t timer;
    dl_inproc_t *ip;
    dl_list_t link;             /* in ip->items: requests not answered yet */
    dl_req_t *active;           /* the request, until it is answered */
    int answered, status;
    dl_buf_t strs;              /* the answer's field names and values */
    dl_buf_t fields;            /* field_at_t each, in the order HTTP/1 sends them */
    dl_buf_t body;
    dl_inproc_cb cb;
    void *arg;
} item_t;

struct dl_inproc_s {
    dl_core_ctx_t *ctx;
    uv_loop_t *loop;
    dl_list_t items; /* item_t.link */
};

static const dl_proto_t inproc_proto;

/* ----------------------------------------------------------------- items */

static void on_item_closed(uv_handle_t *h)
{
    item_t *it = h->data;
    dl_buf_free(&it->strs);
    dl_buf_free(&it->fields);
    dl_buf_free(&it->body);
    dl_free(it);
}

/* the end, from a zero timer: never inside the core's own calls */
static void item_end(uv_timer_t *h)
{
    item_t *it = h->data;
    dl_list_remove(&it->link);
    size_t n = it->fields.len / sizeof(field_at_t);
    dl_http_field_t *f = n ? dl_malloc(n * sizeof(*f)) : NULL;
    if (n && f == NULL)
        it->answered = 0; /* no memory to hand it over: no answer */
    const field_at_t *at = (const field_at_t *)(void *)it->fields.data;
    for (size_t i = 0; f && i < n; i++)
        f[i] = (dl_http_field_t){.name = it->strs.data + at[i].name_off,
                                 .name_len = at[i].name_len,
                                 .value = it->strs.data + at[i].value_off,
                                 .value_len = at[i].value_len};
    dl_inproc_answer_t a = {.status = it->status,
                            .fields = f,
                            .n_fields = (int)n,
                            .body = it->body.data ? it->body.data : "",
                            .body_len = it->body.len};
    it->cb(it->answered ? &a : NULL, it->arg);
    dl_free(f);
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

static void put_field(item_t *it, const char *n, size_t nl, const char *v, size_t vl)
{
    field_at_t at = {it->strs.len, nl, it->strs.len + nl, vl};
    dl_buf_append(&it->strs, n, nl);
    dl_buf_append(&it->strs, v, vl);
    dl_buf_append(&it->fields, &at, sizeof(at));
}

/* The answer as the core decided it, kept as fields (never as text to parse
 * again): the standard ones, Connection: close as HTTP/1 would say it, then
 * the handler's own, each apart (two Set-Cookie stay two). */
static void inproc_write(dl_core_conn_t *base, dl_req_t *r, const dl_resp_wire_t *w)
{
    item_t *it = (item_t *)base;
    const dl_resp_t *resp = w->resp;
    (void)r;
    it->active = NULL;
    for (int i = 0; i < w->n_fields; i++) {
        size_t nl;
        const char *n = dl_resp_field_name(w->fields[i].id, 0, &nl);
        put_field(it, n, nl, w->fields[i].value, w->fields[i].value_len);
    }
    if (!w->keep)
        put_field(it, "Connection", 10, "close", 5);
    dl_hdr_lines_t hl;
    const char *n, *v;
    size_t nl, vl;
    dl_hdr_lines_init(&hl, resp->headers, resp->headers_len);
    while (dl_hdr_lines_next(&hl, &n, &nl, &v, &vl))
        put_field(it, n, nl, v, vl);
    int rc = 0;
    if (resp->has_file) {
        if (!w->no_body && w->body_len > 0)
            rc = read_file(&it->body, resp->file_fd, resp->file_off, w->body_len);
        close(resp->file_fd);
    } else if (!w->no_body) {
        dl_buf_append(&it->body, w->body, w->body_len);
    }
    /* an answer cut short is no answer (a socket client would see the close) */
    it->answered = rc == 0 && !it->strs.oom && !it->fields.oom && !it->body.oom &&
                   w->status >= 200;
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
    dl_list_insert_head(&ip->items, &it->link);

    r->conn = &it->base;
    r->start_ns = uv_hrtime();
    r->http_major = 1;
    r->http_minor = 1;
    it->active = r;
    const char *msg = NULL;
    int status = 0;
    r->method_name = dl_http_method_static(in->method, in->method_len, &msg);
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
        dl_list_init(&ip->items);
    }
    return ip;
}

void dl_inproc_abort_all(dl_inproc_t *ip)
{
    while (ip && !dl_list_empty(&ip->items)) {
        item_t *it = dl_list_entry(ip->items.next, item_t, link);
        dl_list_remove(&it->link);
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
