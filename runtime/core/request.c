/*
 * request.c - a request's way through the core, whatever its protocol: begin
 * once its head is in (request id, target and Host checks, routing, the
 * route's early check, upload sink), then dispatch once it is complete (404,
 * 405, OPTIONS *, HTTPS redirects, or the handler). Answers go through
 * response.c. HTTP/1 (http1/conn.c), HTTP/2 (http2/h2.c) and in-process
 * requests all meet here.
 */
#include "core/request.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/multipart.h"
#include "core/upload.h"

/*
 * A route with the upload option takes multipart/form-data only; its body is
 * parsed as it arrives and its files written to APP_DIR/data/.uploads (see
 * upload.c), never held in memory.
 */
static int start_upload(dl_core_conn_t *c, dl_req_t *r, const char **msg)
{
    dl_core_ctx_t *x = c->ctx;
    /* the limit is per file; the body may add fields and multipart framing */
    r->body_limit = r->upload_limit + DL_UPLOAD_MAX_FIELDS_BYTES + 64 * 1024;
    size_t ctlen = 0;
    const char *ct = dl_req_header(r, "content-type", &ctlen);
    char boundary[DL_MULTIPART_MAX_BOUNDARY + 1];
    int blen = ct ? dl_multipart_boundary(ct, ctlen, boundary, sizeof(boundary)) : DL_EINVAL;
    if (blen <= 0) {
        *msg = "expected a multipart/form-data body with a boundary";
        return 400;
    }
    char prefix[80];
    snprintf(prefix, sizeof(prefix), "w%d-%016llx", x->worker_id,
             (unsigned long long)dl_prng_next(x->prng));
    int rc = dl_upload_new(x->upload_dir, prefix, boundary, (size_t)blen, r->upload_limit,
                           &r->upload);
    if (rc != 0) {
        *msg = "cannot store uploads";
        return rc == DL_ENOMEM ? 503 : 500;
    }
    return 0;
}

/* unreserved / pct-encoded / sub-delims (RFC 3986 3.2.2) */
static int reg_name_char(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("-._~%!$&'()*+,;=", ch) != NULL);
}

/* IP-literal without its brackets (RFC 3986 3.2.2): an IPv6 address or
 * IPvFuture ("v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )) */
static int ip_literal_valid(const char *s, size_t n)
{
    if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
        size_t i = 1;
        while (i < n && isxdigit((unsigned char)s[i]))
            i++;
        if (i == 1 || i >= n - 1 || s[i] != '.')
            return 0;
        for (i++; i < n; i++)
            if (!(reg_name_char((unsigned char)s[i]) || s[i] == ':') || s[i] == '%')
                return 0;
        return 1;
    }
    char tmp[64];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof(tmp))
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
}

/* uri-host [ ":" port ] (RFC 9110 4.2.3, 7.2): reg-name or IP-literal, digits for the port */
int dl_http_host_valid(const char *h, size_t n)
{
    size_t i = 0;
    if (n > 0 && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        if (e == NULL || !ip_literal_valid(h + 1, (size_t)(e - h - 1)))
            return 0;
        i = (size_t)(e - h) + 1;
    } else {
        if (n > 0 && h[0] == ':')
            return 0; /* a port without a host (RFC 9110 4.2.1: an empty host is invalid) */
        for (; i < n && h[i] != ':'; i++) {
            if (!reg_name_char((unsigned char)h[i]))
                return 0;
            if (h[i] == '%' && (i + 2 >= n || !isxdigit((unsigned char)h[i + 1]) ||
                                !isxdigit((unsigned char)h[i + 2])))
                return 0;
        }
    }
    if (i == n)
        return 1;
    if (h[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (h[i] < '0' || h[i] > '9')
            return 0;
    return 1;
}

dl_header_t *dl_req_header_new(dl_req_t *r)
{
    if (r->n_headers == r->cap_headers) {
        int cap = r->cap_headers ? r->cap_headers * 2 : 16;
        dl_header_t *hs = dl_realloc(r->headers, sizeof(*hs) * (size_t)cap);
        if (hs == NULL)
            return NULL;
        r->headers = hs;
        r->cap_headers = cap;
    }
    return &r->headers[r->n_headers++];
}

int dl_req_header_add(dl_req_t *r, const char *n, size_t nlen, const char *v, size_t vlen)
{
    dl_header_t *h = dl_req_header_new(r);
    if (h == NULL)
        return DL_ENOMEM;
    h->name_off = (uint32_t)r->head.len;
    h->name_len = (uint32_t)nlen;
    dl_buf_append(&r->head, n, nlen);
    h->value_off = (uint32_t)r->head.len;
    h->value_len = (uint32_t)vlen;
    dl_buf_append(&r->head, v, vlen);
    return r->head.oom ? DL_ENOMEM : 0;
}

static int find_header(const dl_req_t *r, const char *name, size_t nlen, int *count)
{
    int first = -1;
    *count = 0;
    for (int i = 0; i < r->n_headers; i++)
        if (dl_strncasecmp_eq(r->head.data + r->headers[i].name_off, r->headers[i].name_len,
                              name, nlen)) {
            if (first < 0)
                first = i;
            ++*count;
        }
    return first;
}

/*
 * absolute-form (RFC 9112 3.2.2): "GET http://host:port/path?q HTTP/1.1". The
 * target's authority replaces any Host field and the request is routed by its
 * path, so the target is rewritten in place to origin-form (it only shrinks)
 * and Host points at a copy of the authority. Returns 0, or the status to
 * answer with (400; 421 for https on a plain connection; 503).
 */
static int absolute_form(dl_core_conn_t *c, dl_req_t *r, const char **msg)
{
    const char *u = r->head.data;
    size_t n = r->url_len, skip;
    if (n > 7 && dl_strncasecmp_eq(u, 7, "http://", 7)) {
        skip = 7;
    } else if (n > 8 && dl_strncasecmp_eq(u, 8, "https://", 8)) {
        skip = 8;
    } else {
        *msg = "request target must be origin-form (/path) or absolute-form (http://host/path)";
        return 400;
    }
    size_t a = skip;
    while (a < n && u[a] != '/' && u[a] != '?')
        a++;
    size_t alen = a - skip;
    if (alen == 0 || memchr(u + skip, '@', alen) || !dl_http_host_valid(u + skip, alen)) {
        *msg = "invalid authority in an absolute-form request target";
        return 400;
    }
    if (skip == 8 && !c->tls) { /* RFC 9110 4.2.2, 7.4 */
        *msg = "an https target must come over TLS";
        return 421;
    }
    /* "host" and the authority go after the head; Host is (re)pointed there */
    uint32_t name_off = (uint32_t)r->head.len;
    if (dl_buf_reserve(&r->head, 4 + alen) != 0) { /* the copy's source is head itself */
        *msg = "out of memory";
        return 503;
    }
    dl_buf_append(&r->head, "host", 4);
    dl_buf_append(&r->head, r->head.data + skip, alen);
    int count;
    int h = find_header(r, "host", 4, &count);
    if (h < 0) {
        dl_header_t *slot = dl_req_header_new(r);
        if (slot == NULL) {
            *msg = "out of memory";
            return 503;
        }
        h = (int)(slot - r->headers);
        r->n_head_headers = r->n_headers;
    }
    r->headers[h].name_off = name_off;
    r->headers[h].name_len = 4;
    r->headers[h].value_off = name_off + 4;
    r->headers[h].value_len = (uint32_t)alen;
    char *t = r->head.data;
    size_t rest = n - a;
    if (rest == 0 || t[a] == '?') {
        memmove(t + 1, t + a, rest);
        t[0] = '/';
        r->url_len = (uint32_t)rest + 1;
    } else {
        memmove(t, t + a, rest);
        r->url_len = (uint32_t)rest;
    }
    return 0;
}

int dl_req_begin(dl_core_conn_t *c, dl_req_t *r, int has_body, const char **msg)
{
    dl_core_ctx_t *x = c->ctx;
    int h1 = r->http_major == 1;

    /* which Host a proxy in front used, when there are two, is anyone's
     * guess; HTTP/1.1 requires one (RFC 9112 3.2): every other case is a 400 */
    int hosts;
    int hi = find_header(r, "host", 4, &hosts);

    /* the request id first, so every answer below carries it */
    size_t idlen;
    const char *id = dl_req_header(r, "x-request-id", &idlen);
    if (id && dl_request_id_valid(id, idlen)) {
        memcpy(r->id, id, idlen);
        r->id[idlen] = '\0';
    } else {
        dl_request_id_new(x->prng, r->id);
    }

    if (r->method_name && strcmp(r->method_name, "CONNECT") == 0) {
        *msg = "CONNECT is not supported";
        return 501;
    }
    if (hosts > 1) {
        *msg = "more than one Host header";
        return 400;
    }
    if (h1 && r->http_minor == 1 && hosts == 0) {
        *msg = "an HTTP/1.1 request needs a Host header";
        return 400;
    }
    if (hi >= 0 && !dl_http_host_valid(r->head.data + r->headers[hi].value_off, r->headers[hi].value_len)) {
        *msg = "invalid Host header";
        return 400;
    }

    /* the path is the target up to '?': origin-form, absolute-form rewritten
     * to it, and '*' for OPTIONS only (RFC 9112 3.2) */
    if (r->url_len == 0) {
        *msg = "empty request target";
        return 400;
    }
    if (r->head.data[0] == '*') {
        if (r->url_len != 1 || r->method != DL_M_OPTIONS) {
            *msg = "asterisk-form (*) is only for OPTIONS";
            return 400;
        }
    } else if (r->head.data[0] != '/') {
        int rc = absolute_form(c, r, msg);
        if (rc)
            return rc;
    }
    const char *url = r->head.data;
    if (memchr(url, '#', r->url_len)) { /* RFC 9112 3.2: no fragment in a target */
        *msg = "a request target has no fragment (#)";
        return 400;
    }
    const char *q = memchr(url, '?', r->url_len);
    r->path_len = q ? (uint32_t)(q - url) : r->url_len;

    x->handler.route(x->handler.arg, r);
    /* A body the route's check refuses (auth) is never read: the answer is
     * decided on the head alone, before 100 Continue and before an upload
     * file opens. An in-process request (api.client) is parsed inside a
     * running handler, where the VM's main state must not run Lua; its body
     * is here anyway. The https redirect answers every request alike. */
    if (has_body && r->route_status == DL_ROUTE_FOUND && !c->inproc && !c->https_redirect &&
        x->handler.precheck) {
        r->early_status = x->handler.precheck(x->handler.arg, r, c->err_buf, sizeof(c->err_buf));
        if (r->early_status)
            return 0;
    }
    if (r->route_status == DL_ROUTE_FOUND && r->upload_limit)
        return start_upload(c, r, msg);
    return 0;
}

/* Expect is a list (RFC 9110 10.1.1): 1 when it holds 100-continue and no
 * other expectation, 0 when it is empty, -1 for anything else (417). */
int dl_req_expect_check(const char *v, size_t n)
{
    int cont = 0;
    const char *end = v + n, *a, *b;
    while (dl_http_list_next(&v, end, &a, &b)) {
        if (!dl_strncasecmp_eq(a, (size_t)(b - a), "100-continue", 12))
            return -1;
        cont = 1;
    }
    return cont;
}

/* A request whose final status is known from its head: refused by the
 * route's check (any request), or, for a client waiting for 100 Continue,
 * without a route or on the https redirect. It goes out at once, without
 * the body (see conn_dispatch). */
int dl_req_early_answer(const dl_core_conn_t *c, const dl_req_t *r)
{
    if (r->early_status)
        return 1;
    return r->expect_continue && (r->route_status != DL_ROUTE_FOUND || c->https_redirect);
}

/* ================================================================ dispatch */

/* ------------------------------------------------------- HTTPS redirects */

int dl_redirect_host_valid(const char *s, size_t n, size_t *host_len, int *port)
{
    size_t i = 0;
    if (n > 0 && s[0] == '[') {
        const char *e = memchr(s, ']', n);
        /* an IPv6 address only: IPvFuture names nothing a browser reaches */
        if (e == NULL || e - s < 3 || s[1] == 'v' || s[1] == 'V' ||
            !ip_literal_valid(s + 1, (size_t)(e - s - 1)))
            return 0;
        i = (size_t)(e - s) + 1;
    } else {
        while (i < n && s[i] != ':') {
            int ch = (unsigned char)s[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~'))
                return 0;
            i++;
        }
        if (i == 0 || i > 253)
            return 0;
    }
    if (host_len)
        *host_len = i;
    if (port)
        *port = -1;
    if (i == n)
        return 1;
    if (s[i] != ':' || n - i - 1 == 0 || n - i - 1 > 5)
        return 0;
    int p = 0;
    for (i++; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        p = p * 10 + (s[i] - '0');
    }
    if (p < 1 || p > 65535)
        return 0;
    if (port)
        *port = p;
    return 1;
}

/* A plain listener that only points to HTTPS: 308 to the configured canonical
 * host (--canonical-host), else to the host the client named, on the first
 * TLS listener's port, with the same target. A Host that is not host[:port]
 * is a 400: copied into Location it would make an open or broken redirect. */
static void redirect_https(dl_core_conn_t *c, dl_req_t *r)
{
    const dl_core_ctx_t *rt = c->ctx;
    size_t hlen = 0, name_len = 0;
    const char *host = dl_req_header(r, "host", &hlen);
    if (host != NULL && hlen > 0 && !dl_redirect_host_valid(host, hlen, &name_len, NULL)) {
        dl_req_respond_error_hdrs(r, 400, "invalid Host header: an HTTPS redirect needs host[:port] "
                              "(a DNS name or a bracketed IPv6 address, port 1-65535)", NULL, NULL);
        return;
    }
    /* only an origin-form target ("/...") can follow the authority: "*"
     * (OPTIONS) or an absolute-form target would make a broken Location */
    if (r->url_len == 0 || r->head.data[0] != '/') {
        dl_req_respond_error(r, 400, "an HTTPS redirect needs a target that starts with \"/\"");
        return;
    }
    dl_buf_t loc = DL_BUF_INIT;
    dl_buf_append_str(&loc, "Location: https://");
    if (rt->canonical_host) {
        dl_buf_append_str(&loc, rt->canonical_host);
        if (rt->canonical_port < 0 && rt->https_port != 443)
            dl_buf_appendf(&loc, ":%d", rt->https_port);
    } else if (host != NULL && hlen > 0) {
        dl_buf_append(&loc, host, name_len); /* the client's port is dropped */
        if (rt->https_port != 443)
            dl_buf_appendf(&loc, ":%d", rt->https_port);
    } else {
        dl_buf_free(&loc);
        dl_req_respond_error_hdrs(r, 400, "an HTTPS redirect needs a Host header (or a canonical host "
                              "configured: --canonical-host)", NULL, NULL);
        return;
    }
    dl_buf_appendf(&loc, "%.*s\r\n", (int)r->url_len, r->head.data);
    dl_buf_t body = DL_BUF_INIT;
    dl_error_body(&body, 308, "this server answers over HTTPS", r->id);
    dl_resp_t resp = {.status = 308,
                      .content_type = "application/json",
                      .content_type_len = 16,
                      .body = body.data,
                      .body_len = body.len,
                      .headers = loc.data,
                      .headers_len = loc.oom ? 0 : loc.len};
    dl_req_respond(r, &resp);
    dl_buf_free(&loc);
    dl_buf_free(&body);
}

void dl_req_respond_unrouted(dl_req_t *r)
{
    if (r->route_status != DL_ROUTE_METHOD_NOT_ALLOWED) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no route for %s %.*s", r->method_name,
                 (int)DL_MIN(r->path_len, 100), r->head.data);
        dl_req_respond_error(r, 404, msg);
        return;
    }
    {
        dl_buf_t allow = DL_BUF_INIT;
        dl_router_allow(r->match.allowed, &allow);
        dl_buf_append_char(&allow, '\0');
        char msg[160];
        snprintf(msg, sizeof(msg), "%s is not allowed on %.*s", r->method_name,
                 (int)DL_MIN(r->path_len, 100), r->head.data);
        dl_req_respond_error_hdrs(r, 405, msg, allow.oom ? NULL : allow.data, NULL);
        dl_buf_free(&allow);
    }
}

void dl_req_dispatch(dl_core_conn_t *c, dl_req_t *r)
{
    dl_core_ctx_t *x = c->ctx;
    ++*x->n_requests;
    if (c->https_redirect && !c->inproc) {
        redirect_https(c, r);
        return;
    }
    if (r->early_status) { /* refused before its body was read */
        const char *hdr = r->early_status == 401 ? "WWW-Authenticate: Bearer realm=\"devloop\"\r\n"
                                                 : NULL;
        dl_req_respond_error_hdrs(r, r->early_status, c->err_buf, NULL, hdr);
        return;
    }
    if (r->url_len == 1 && r->head.data[0] == '*') { /* OPTIONS * : the server's methods */
        dl_resp_t resp = {.status = 204, .allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"};
        dl_req_respond(r, &resp);
        return;
    }
    r->app = 1;
    if (r->route_status == DL_ROUTE_NOT_FOUND || r->route_status == DL_ROUTE_METHOD_NOT_ALLOWED) {
        /* the app's hooks may answer it first (a CORS preflight) */
        if (!(x->handler.unrouted && x->handler.unrouted(x->handler.arg, r)))
            dl_req_respond_unrouted(r);
        return;
    }
    x->handler.dispatch(x->handler.arg, r);
}

/* Whether the bytes fed so far end with LF and only whitespace after it
 * (what a folded value starting in the next read would follow). */
