/*
 * req_fixture.h - a request core without a worker or a socket, for unit
 * tests: a context whose pool is calloc, a C handler (GET /hello answers
 * "hi", /cookies the same with two Set-Cookie fields, /secret refuses bodies on its head, /big answers 2000 bytes of JSON)
 * and a fake protocol that records what the core decided.
 */
#ifndef DL_REQ_FIXTURE_H
#define DL_REQ_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "core/request.h"

typedef struct {
    dl_core_conn_t base;
    int writes, finishes, keep, no_body, status;
    dl_buf_t out; /* "name: value\n" per field, then "\n" and the body */
} fake_conn_t;

typedef struct {
    dl_core_ctx_t ctx;
    dl_config_t cfg;
    uint64_t prng[4];
    uint64_t n_requests;
    int acquired, released, recorded, dispatched, last_status;
    size_t last_bytes;
} fake_core_t;

static dl_req_t *fx_acquire(dl_core_ctx_t *x)
{
    fake_core_t *f = (fake_core_t *)x;
    dl_req_t *r = calloc(1, sizeof(*r));
    r->ctx = x;
    r->keep_alive = 1;
    f->acquired++;
    return r;
}

static void fx_release(dl_core_ctx_t *x, dl_req_t *r)
{
    ((fake_core_t *)x)->released++;
    dl_buf_free(&r->head);
    dl_buf_free(&r->body);
    free(r->headers);
    free(r);
}

static void fx_record(dl_core_ctx_t *x, dl_req_t *r, int status, size_t bytes)
{
    fake_core_t *f = (fake_core_t *)x;
    (void)r;
    f->recorded++;
    f->last_status = status;
    f->last_bytes = bytes;
}

static int fx_inflate(dl_core_ctx_t *x, const char *gz, size_t len, const char **plain,
                      size_t *plain_len)
{
    (void)x, (void)gz, (void)len, (void)plain, (void)plain_len;
    return DL_EINVAL;
}

static const char *fx_date(dl_core_ctx_t *x)
{
    (void)x;
    return "Mon, 07 Dec 2026 16:00:00 GMT";
}

static inline int path_is(const dl_req_t *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->head.data, p, r->path_len) == 0;
}

static void fx_route(void *arg, dl_req_t *r)
{
    (void)arg;
    r->body_limit = 1 << 20;
    if (path_is(r, "/hello") || path_is(r, "/secret") || path_is(r, "/big") ||
        path_is(r, "/cookies"))
        r->route_status = (r->method & (DL_M_GET | DL_M_HEAD | DL_M_POST)) ? DL_ROUTE_FOUND
                                                                            : DL_ROUTE_METHOD_NOT_ALLOWED;
    else
        r->route_status = DL_ROUTE_NOT_FOUND;
    if (r->route_status == DL_ROUTE_METHOD_NOT_ALLOWED)
        r->match.allowed = DL_M_GET | DL_M_HEAD | DL_M_POST;
}

static int fx_precheck(void *arg, dl_req_t *r, char *msg, size_t msglen)
{
    (void)arg;
    if (!path_is(r, "/secret"))
        return 0;
    snprintf(msg, msglen, "a token is needed");
    return 401;
}

static void fx_dispatch(void *arg, dl_req_t *r)
{
    fake_core_t *f = arg;
    f->dispatched++;
    if (path_is(r, "/big")) {
        char body[2000];
        memset(body, 'a', sizeof(body));
        body[0] = '"';
        body[sizeof(body) - 1] = '"';
        dl_resp_t resp = {.status = 200, .content_type = "application/json",
                          .content_type_len = 16, .body = body, .body_len = sizeof(body)};
        dl_req_respond(r, &resp);
        return;
    }
    const char *lines = "X-App: 1\r\n";
    if (path_is(r, "/cookies"))
        lines = "Set-Cookie: a=1\r\nSet-Cookie: b=2, c=3\r\n";
    dl_resp_t resp = {.status = 200, .content_type = "text/plain", .content_type_len = 10,
                      .body = "hi", .body_len = 2, .headers = lines,
                      .headers_len = strlen(lines)};
    dl_req_respond(r, &resp);
}

static void fake_write(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w)
{
    fake_conn_t *fc = (fake_conn_t *)c;
    (void)r;
    fc->writes++;
    fc->status = w->status;
    fc->no_body = w->no_body;
    for (int i = 0; i < w->n_fields; i++) {
        size_t n;
        const char *name = dl_resp_field_name(w->fields[i].id, 1, &n);
        dl_buf_append(&fc->out, name, n);
        dl_buf_append_str(&fc->out, ": ");
        dl_buf_append(&fc->out, w->fields[i].value, w->fields[i].value_len);
        dl_buf_append_char(&fc->out, '\n');
    }
    dl_buf_append(&fc->out, w->resp->headers, w->resp->headers_len);
    dl_buf_append_char(&fc->out, '\n');
    if (!w->no_body)
        dl_buf_append(&fc->out, w->body, w->body_len);
}

static void fake_finish(dl_core_conn_t *c, const dl_resp_wire_t *w)
{
    fake_conn_t *fc = (fake_conn_t *)c;
    fc->finishes++;
    fc->keep = w->keep;
}

static const dl_proto_t fake_proto = {.name = "fake", .write_response = fake_write,
                                      .finish = fake_finish};

static inline void fixture_init(fake_core_t *f, fake_conn_t *c)
{
    memset(f, 0, sizeof(*f));
    memset(c, 0, sizeof(*c));
    f->cfg.compress_min = 256;
    dl_prng_seed(f->prng);
    f->ctx.acquire = fx_acquire;
    f->ctx.release = fx_release;
    f->ctx.record = fx_record;
    f->ctx.inflate = fx_inflate;
    f->ctx.date = fx_date;
    f->ctx.cfg = &f->cfg;
    f->ctx.prng = f->prng;
    f->ctx.n_requests = &f->n_requests;
    f->ctx.handler = (dl_handler_t){.arg = f, .route = fx_route, .precheck = fx_precheck,
                                    .dispatch = fx_dispatch};
    c->base.proto = &fake_proto;
    c->base.ctx = &f->ctx;
}

/* A request as a protocol's reader would leave it: target, then fields. */
static inline dl_req_t *fixture_req(fake_core_t *f, fake_conn_t *c, const char *method,
                             const char *target, const char *const *fields)
{
    dl_req_t *r = f->ctx.acquire(&f->ctx);
    r->conn = &c->base;
    r->method_name = method;
    r->method = dl_method_from_name(method, strlen(method));
    r->http_major = 1;
    r->http_minor = 1;
    dl_buf_append_str(&r->head, target);
    r->url_len = (uint32_t)strlen(target);
    int n = 0;
    while (fields && fields[2 * n])
        n++;
    r->headers = calloc((size_t)n + 1, sizeof(dl_header_t));
    r->cap_headers = n + 1;
    for (int i = 0; i < n; i++) {
        dl_header_t *h = &r->headers[i];
        h->name_off = (uint32_t)r->head.len;
        h->name_len = (uint32_t)strlen(fields[2 * i]);
        dl_buf_append_str(&r->head, fields[2 * i]);
        h->value_off = (uint32_t)r->head.len;
        h->value_len = (uint32_t)strlen(fields[2 * i + 1]);
        dl_buf_append_str(&r->head, fields[2 * i + 1]);
    }
    r->n_headers = r->n_head_headers = n;
    return r;
}

/* begin then dispatch, as a protocol does for a complete request */
static inline int fixture_run(fake_conn_t *c, dl_req_t *r, int has_body)
{
    const char *msg = NULL;
    int st = dl_req_begin(&c->base, r, has_body, &msg);
    if (st) {
        dl_req_respond_error(r, st, msg);
        return st;
    }
    dl_req_dispatch(&c->base, r);
    return 0;
}

static inline int has_line(const dl_buf_t *b, const char *line)
{
    size_t n = strlen(line);
    for (size_t i = 0; i + n <= b->len; i++)
        if ((i == 0 || b->data[i - 1] == '\n') && memcmp(b->data + i, line, n) == 0 &&
            (i + n == b->len || b->data[i + n] == '\n' || b->data[i + n] == '\r'))
            return 1;
    return 0;
}

#endif
