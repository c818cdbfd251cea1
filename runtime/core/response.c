/*
 * response.c - the one place an answer is decided: which standard fields it
 * carries (Date, Content-Length, X-Request-Id, nosniff, Cache-Control, HSTS,
 * Vary...), whether and how its body is compressed or a stored gzip body
 * inflated, whether it has content, whether the connection stays open, and
 * the JSON of an error. The request's protocol (its dl_proto_t) only writes
 * what is decided here, as HTTP/1 text or HTTP/2 frames.
 */
#include "core/response.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "core/cors.h"

static const struct {
    const char *line, *lower; /* line: "Name: ", what HTTP/1 writes before the value */
    size_t len;               /* the name's */
} field_names[DL_HF_COUNT] = {
    [DL_HF_DATE] = {"Date: ", "date", 4},
    [DL_HF_CONTENT_TYPE] = {"Content-Type: ", "content-type", 12},
    [DL_HF_CONTENT_LENGTH] = {"Content-Length: ", "content-length", 14},
    [DL_HF_CONTENT_ENCODING] = {"Content-Encoding: ", "content-encoding", 16},
    [DL_HF_VARY] = {"Vary: ", "vary", 4},
    [DL_HF_REQUEST_ID] = {"X-Request-Id: ", "x-request-id", 12},
    [DL_HF_NOSNIFF] = {"X-Content-Type-Options: ", "x-content-type-options", 22},
    [DL_HF_CACHE_CONTROL] = {"Cache-Control: ", "cache-control", 13},
    [DL_HF_ALLOW] = {"Allow: ", "allow", 5},
    [DL_HF_HSTS] = {"Strict-Transport-Security: ", "strict-transport-security", 25},
    [DL_HF_ACAO] = {"Access-Control-Allow-Origin: ", "access-control-allow-origin", 27},
    [DL_HF_ACAC] = {"Access-Control-Allow-Credentials: ", "access-control-allow-credentials", 32},
    [DL_HF_ACEH] = {"Access-Control-Expose-Headers: ", "access-control-expose-headers", 29},
    [DL_HF_RL_LIMIT] = {"RateLimit-Limit: ", "ratelimit-limit", 15},
    [DL_HF_RL_REMAINING] = {"RateLimit-Remaining: ", "ratelimit-remaining", 19},
    [DL_HF_RL_RESET] = {"RateLimit-Reset: ", "ratelimit-reset", 15},
    [DL_HF_RETRY_AFTER] = {"Retry-After: ", "retry-after", 11},
};

const char *dl_resp_field_name(int id, int lower, size_t *len)
{
    *len = field_names[id].len;
    return lower ? field_names[id].lower : field_names[id].line;
}

void dl_resp_wire_put_lines(const dl_resp_wire_t *w, dl_buf_t *o)
{
    for (int i = 0; i < w->n_fields; i++) {
        int id = w->fields[i].id;
        dl_buf_append(o, field_names[id].line, field_names[id].len + 2); /* "Name: " */
        dl_buf_append(o, w->fields[i].value, w->fields[i].value_len);
        dl_buf_append(o, "\r\n", 2);
    }
}

static void field(dl_resp_wire_t *w, int id, const char *v, size_t vlen)
{
    w->fields[w->n_fields].id = id;
    w->fields[w->n_fields].value = v;
    w->fields[w->n_fields].value_len = vlen;
    w->n_fields++;
}
#define FIELD(w, id, lit) field((w), (id), lit, sizeof(lit) - 1)

static size_t put_u64(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

int dl_resp_header_reserved(const char *s, size_t n)
{
    static const struct {
        const char *name;
        size_t len;
    } reserved[] = {
        {"content-length", 14}, {"date", 4},    {"x-request-id", 12},   {"connection", 10},
        {"keep-alive", 10},     {"proxy-connection", 16}, {"transfer-encoding", 17},
        {"upgrade", 7},         {"te", 2},
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (dl_strncasecmp_eq(s, n, reserved[i].name, reserved[i].len))
            return 1;
    return 0;
}

/*
 * The handler's own header lines, judged once for every protocol: 0 when
 * they can be sent (*own_enc: they carry Content-Encoding), else -1 with
 * the reason logged. A field no protocol may carry, or more bytes than
 * HTTP/2 can send, is refused here, so HTTP/1, HTTP/2 and in-process
 * requests give the same answer.
 */
/* Fields the runtime adds that an answer may carry already (a hook's own
 * value wins: the runtime's is then left out) */
enum { OWN_ACAO = 1, OWN_RETRY = 2, OWN_RL_LIMIT = 4, OWN_RL_REMAINING = 8, OWN_RL_RESET = 16 };

static int handler_fields_ok(const dl_req_t *r, const dl_resp_t *resp, int *own_enc, int *own)
{
    size_t bytes = resp->headers_len + resp->content_type_len;
    if (bytes > DL_RESP_HEADERS_MAX) {
        dl_log_req(DL_LOG_ERROR, r->id, "the handler's header fields take %zu bytes, over the "
                   "%u an answer can carry on every protocol; answering 500",
                   bytes, DL_RESP_HEADERS_MAX);
        return -1;
    }
    dl_hdr_lines_t it;
    const char *n, *v;
    size_t nl, vl;
    *own_enc = 0;
    *own = 0;
    dl_hdr_lines_init(&it, resp->headers, resp->headers_len);
    while (dl_hdr_lines_next(&it, &n, &nl, &v, &vl)) {
        if (dl_resp_header_reserved(n, nl)) {
            dl_log_req(DL_LOG_ERROR, r->id, "the handler set header %.*s, which the runtime "
                       "owns; answering 500", (int)DL_MIN(nl, 40), n);
            return -1;
        }
        if (dl_strncasecmp_eq(n, nl, "content-encoding", 16))
            *own_enc = 1;
        else if (dl_strncasecmp_eq(n, nl, "access-control-allow-origin", 27))
            *own |= OWN_ACAO; /* a hook's own CORS answer: the policy's fields stay out */
        else if (dl_strncasecmp_eq(n, nl, "retry-after", 11))
            *own |= OWN_RETRY;
        else if (nl > 10 && dl_strncasecmp_eq(n, 10, "ratelimit-", 10))
            *own |= dl_strncasecmp_eq(n, nl, "ratelimit-limit", 15)       ? OWN_RL_LIMIT
                    : dl_strncasecmp_eq(n, nl, "ratelimit-remaining", 19) ? OWN_RL_REMAINING
                    : dl_strncasecmp_eq(n, nl, "ratelimit-reset", 15)     ? OWN_RL_RESET
                                                                          : 0;
    }
    return 0;
}

/* The standard fields of w, in the order they are sent; streamed: no
 * Content-Length (the body's length is not known yet). */
static void put_fields(dl_req_t *r, dl_resp_wire_t *w, int own, int streamed)
{
    const dl_resp_t *resp = w->resp;
    dl_core_conn_t *c = r->conn;
    dl_core_ctx_t *x = r->ctx;
    int status = w->status;
    w->n_fields = 0;
    const char *date = x->date(x);
    field(w, DL_HF_DATE, date, strlen(date));
    if (resp->content_type)
        field(w, DL_HF_CONTENT_TYPE, resp->content_type, resp->content_type_len);
    /* 304: the length a 200 would have had is unknown here (RFC 9110 8.6) */
    if (!streamed && status != 204 && status != 304 && !(status >= 100 && status < 200))
        field(w, DL_HF_CONTENT_LENGTH, w->clen, put_u64(w->clen, w->body_len));
    if (w->enc == DL_ENC_GZIP)
        FIELD(w, DL_HF_CONTENT_ENCODING, "gzip");
    else if (w->enc == DL_ENC_DEFLATE)
        FIELD(w, DL_HF_CONTENT_ENCODING, "deflate");
    dl_cors_fields_t cf = {0};
    if (r->cors && !(own & OWN_ACAO))
        dl_cors_fields(r, &cf);
    if (w->vary && cf.vary_origin)
        FIELD(w, DL_HF_VARY, "Accept-Encoding, Origin");
    else if (w->vary)
        FIELD(w, DL_HF_VARY, "Accept-Encoding");
    else if (cf.vary_origin)
        FIELD(w, DL_HF_VARY, "Origin");
    field(w, DL_HF_REQUEST_ID, r->id, strlen(r->id));
    FIELD(w, DL_HF_NOSNIFF, "nosniff");
    if (!resp->has_cache_control)
        FIELD(w, DL_HF_CACHE_CONTROL, "no-cache, no-store, must-revalidate");
    if (resp->allow)
        field(w, DL_HF_ALLOW, resp->allow, strlen(resp->allow));
    if (c->tls && x->hsts)
        field(w, DL_HF_HSTS, x->hsts, strlen(x->hsts));
    if (cf.acao_len) {
        field(w, DL_HF_ACAO, cf.acao, cf.acao_len);
        if (cf.credentials)
            FIELD(w, DL_HF_ACAC, "true");
        if (cf.expose)
            field(w, DL_HF_ACEH, cf.expose, strlen(cf.expose));
    }
    if (r->rate.set) {
        const dl_rate_note_t *rn = &r->rate;
        if (!(own & OWN_RL_LIMIT))
            field(w, DL_HF_RL_LIMIT, w->rate[0], put_u64(w->rate[0], (uint64_t)rn->limit));
        if (!(own & OWN_RL_REMAINING))
            field(w, DL_HF_RL_REMAINING, w->rate[1],
                  put_u64(w->rate[1], (uint64_t)rn->remaining));
        if (!(own & OWN_RL_RESET))
            field(w, DL_HF_RL_RESET, w->rate[2], put_u64(w->rate[2], rn->reset));
        if (rn->over && !(own & OWN_RETRY))
            field(w, DL_HF_RETRY_AFTER, w->rate[3], put_u64(w->rate[3], rn->retry));
    }

}

void dl_req_respond(dl_req_t *r, const dl_resp_t *resp)
{
    dl_core_conn_t *c = r->conn;
    dl_core_ctx_t *x = r->ctx;
    if (c == NULL || c->closed) {
        if (resp->has_file)
            close(resp->file_fd); /* the connection would have taken it */
        x->release(x, r);
        return;
    }
    if (r->app && !r->filtered) {
        /* the app's after hooks see every answer it makes, once */
        r->filtered = 1;
        if (x->handler.filter && x->handler.filter(x->handler.arg, r, resp))
            return;
    }
    int own_enc, own;
    if (handler_fields_ok(r, resp, &own_enc, &own) != 0) {
        if (resp->has_file)
            close(resp->file_fd);
        dl_req_respond_error(r, 500, NULL);
        return;
    }
    const dl_config_t *cfg = x->cfg;
    int status = resp->status;
    dl_resp_wire_t w;
    w.resp = resp;
    w.status = status;
    w.chunked = 0;
    w.keep = r->keep_alive && !resp->close && !c->stopping && !x->stopping;
    /* 205 has no content (RFC 9110 15.3.6): its length is 0, and it is sent */
    w.no_body = r->method == DL_M_HEAD || status == 204 || status == 304 || status == 205 ||
                (status >= 100 && status < 200);

    const char *body = resp->body;
    size_t body_len = resp->has_file ? (size_t)resp->file_len : resp->body_len;
    if (status == 205)
        body_len = 0;
    int enc = DL_ENC_IDENTITY, vary = 0;
    dl_buf_t zbuf = DL_BUF_INIT;
    int pre_gzip = 0;
    /* a body the handler encoded itself (its own Content-Encoding) is sent as
     * it is: never compressed again, a stored gzip copy of it inflated */
    if (resp->body_gzip) {
        /* a stored gzip body: no compression work for clients that take gzip */
        size_t aelen;
        const char *ae = dl_req_header(r, "accept-encoding", &aelen);
        vary = !own_enc;
        if (!own_enc && ae && dl_compress_negotiate(ae, aelen) == DL_ENC_GZIP) {
            pre_gzip = 1;
            enc = DL_ENC_GZIP;
        } else if (x->inflate(x, body, body_len, &body, &body_len) == 0) {
            /* body now points at the worker's inflated copy */
        } else {
            dl_log_req(DL_LOG_ERROR, r->id, "stored gzip body is damaged; answering 500");
            dl_req_respond_error(r, 500, NULL);
            return;
        }
    }
    if (!pre_gzip && !resp->has_file && body_len >= cfg->compress_min && status >= 200 &&
        status != 204 && status != 304 &&
        dl_compress_type_ok(resp->content_type, resp->content_type_len) &&
        !own_enc) {
        vary = 1;
        size_t aelen;
        const char *ae = dl_req_header(r, "accept-encoding", &aelen);
        enc = ae ? dl_compress_negotiate(ae, aelen) : DL_ENC_IDENTITY;
        if (enc == DL_ENC_GZIP || enc == DL_ENC_DEFLATE) {
            if (x->compressor &&
                dl_compressor_run(x->compressor, enc, body, body_len, &zbuf) == 0) {
                body = zbuf.data;
                body_len = zbuf.len;
            } else {
                enc = DL_ENC_IDENTITY;
            }
        } else {
            enc = DL_ENC_IDENTITY;
        }
    }
    w.body = body;
    w.body_len = body_len;
    w.enc = enc;
    w.vary = vary;

    put_fields(r, &w, own, 0);

    c->proto->write_response(c, r, &w);
    dl_buf_free(&zbuf);
    w.body = NULL; /* freed: finish sees only the lengths */
    x->record(x, r, status, body_len);
    x->release(x, r);
    c->proto->finish(c, &w);
}

int dl_resp_stream_head(dl_req_t *r, const dl_resp_t *resp, dl_resp_wire_t *w)
{
    dl_core_conn_t *c = r->conn;
    dl_core_ctx_t *x = r->ctx;
    int own_enc, own;
    if (resp->has_file || resp->body_gzip || handler_fields_ok(r, resp, &own_enc, &own) != 0)
        return DL_EINVAL;
    int status = resp->status;
    memset(w, 0, sizeof(*w));
    w->resp = resp;
    w->status = status;
    /* HTTP/1.0 has no chunks: the body ends when the connection closes */
    w->keep = r->keep_alive && !resp->close && !c->stopping && !x->stopping &&
              !(r->http_major == 1 && r->http_minor == 0);
    w->no_body = r->method == DL_M_HEAD || status == 204 || status == 304 || status == 205 ||
                 (status >= 100 && status < 200);
    w->chunked = !w->no_body && r->http_major == 1 && r->http_minor >= 1;
    w->enc = DL_ENC_IDENTITY;
    put_fields(r, w, own, 1);
    return 0;
}

void dl_req_rate_note(dl_req_t *r, double limit, double remaining, uint32_t reset, int over,
                      uint32_t retry)
{
    dl_rate_note_t *n = &r->rate;
    if (remaining < 0)
        remaining = 0;
    /* the refusing limit tells; else the one with the least left */
    if (n->set && !over && (n->over || remaining >= n->remaining))
        return;
    n->set = 1;
    n->limit = limit;
    n->remaining = remaining;
    n->reset = reset;
    n->over = over != 0;
    n->retry = retry;
}

int dl_resp_codec(const dl_req_t *r, const char **content_type, size_t *content_type_len)
{
    size_t alen = 0;
    const char *accept = dl_req_header(r, "accept", &alen);
    if (accept && dl_accept_msgpack(accept, alen)) {
        *content_type = "application/msgpack";
        *content_type_len = 19;
        return DL_CODEC_MSGPACK;
    }
    *content_type = "application/json";
    *content_type_len = 16;
    return DL_CODEC_JSON;
}

void dl_resp_error_body(dl_buf_t *body, int status, const char *msg, size_t msg_len,
                        const char *reqid, const char *details, size_t details_len)
{
    size_t start = body->len;
    dl_error_body_len(body, status, msg, msg_len, reqid);
    if (details && body->len > start) {
        /* {"error":...,"requestId":"..."} -> {...,"details":<json>} */
        body->len--;
        dl_buf_append_str(body, ",\"details\":");
        dl_buf_append(body, details, details_len);
        dl_buf_append_char(body, '}');
    }
}

void dl_req_respond_error_hdrs(dl_req_t *r, int status, const char *msg, const char *allow,
                               const char *headers)
{
    dl_buf_t body = DL_BUF_INIT;
    dl_error_body(&body, status, msg, r->id);
    dl_resp_t resp = {.status = status,
                      .content_type = "application/json",
                      .content_type_len = 16,
                      .body = body.data,
                      .body_len = body.len,
                      .headers = headers,
                      .headers_len = headers ? strlen(headers) : 0,
                      .allow = allow};
    dl_req_respond(r, &resp);
    dl_buf_free(&body);
}

void dl_req_respond_error(dl_req_t *r, int status, const char *msg)
{
    dl_req_respond_error_hdrs(r, status, msg, NULL, NULL);
}
