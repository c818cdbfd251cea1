/*
 * http_client.c - one outbound HTTP/1.1 exchange at a time per connection.
 * An exchange walks: name lookup, a connection from the pool (reused, made
 * in a free slot, or waited for at the origin's cap), the request written in
 * one piece, the response parsed by llhttp. One timer holds the deadline of
 * the whole exchange. User callbacks never run inside llhttp's: the parser
 * callbacks only record, and the code around llhttp_execute() acts on what
 * they recorded, so a callback may free the exchange.
 *
 * A connection goes back to the pool only when the response ended cleanly
 * with keep-alive, the request was written whole, and no byte followed the
 * response (a second response behind the first is a smuggling attempt or a
 * broken peer). A reused connection that dies before the first response
 * byte is replaced, once per attempt and at most twice, when the request may
 * be sent again (its method is idempotent): the peer closed it while idle.
 */
#include "outbound/http_client.h"

#include <llhttp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/compress.h"
#include "common/hdr_lines.h"
#include "common/internal.h"
#include "common/metrics.h"
#include "common/num.h"
#include "outbound/dns.h"

#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_HEADERS 256
#define STREAM_HIGH_WATER (1024 * 1024)
#define MAX_RETRIES 2
#define MAX_TLS_CTX 8
#define MAX_INTERIMS 16

enum { PH_DNS, PH_POOL, PH_CONNECT, PH_EXCHANGE, PH_DONE };
enum { ENC_IDENTITY, ENC_GZIP, ENC_DEFLATE };

typedef struct {
    int verify;
    char *ca;
    dl_tls_ctx_t *ctx;
} tls_slot_t;

struct dl_http_client_s {
    uv_loop_t *loop;
    dl_http_client_cfg_t cfg;
    dl_dns_t *dns;
    dl_out_pool_t *pool;
    tls_slot_t tls[MAX_TLS_CTX];
    int n_tls;
    /* the pool gauges' series, found once (dl_http_client_publish) */
    dl_metrics_t *gauge_m;
    int gauge_id;
    dl_metric_series_t *gauge[3];
};

typedef struct {
    dl_http_x_t pub; /* first: the user's view */
    dl_http_client_t *hc;
    uv_timer_t timer;
    int freed;       /* dl_http_x_free() came: the memory goes with the timer */
    dl_http_cb cb, read_cb;
    void *arg, *read_arg;
    int phase;
    int failed;      /* status of a failure, reported (or to report) once */
    int reported;    /* the first callback came */
    /* the request */
    dl_buf_t req;
    dl_http_url_t url;
    int tls_verify;
    char *tls_ca;
    uint64_t timeout_ms, connect_timeout_ms;
    size_t max_body;
    int decode, stream, head_only, idempotent, retries;
    /* a body sent from a file, a chunk at a time after the head */
    int body_fd;           /* -1: none */
    uint64_t body_size, body_sent;
    int fs_busy;           /* a read runs on the thread pool */
    char *chunk;
    /* the way there */
    dl_dns_wait_t *dns_w;
    dl_out_waiter_t *pool_w;
    dl_out_conn_t *conn;
    int slot;        /* holds a pool slot of key, connecting */
    /* the answer */
    int sent, got_bytes, headers_done, complete, paused, in_name;
    int encoding;
    size_t hdr_bytes, body_total;
    dl_buf_t raw;    /* the encoded body, decoded once complete */
    int ev_headers;  /* recorded by the parser callbacks */
    int interims;    /* 1xx answers skipped */
    int perr_status;
    /* From here on nothing is zeroed at the start (each part is written
     * before it is read): an exchange is several KiB, most of it text. */
    llhttp_t parser;
    uv_fs_t fs;
    dl_dns_addrs_t addrs;
    char perr[512];  /* a parser callback's refusal */
    char abort_why[120];
    char server_name[256];
    char key[DL_OUT_MAX_KEY + 1];
} x_t;

#define X_ZEROED offsetof(x_t, parser)

static void step(x_t *x);

/* ================================================================ URLs */

static int hex_ok(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int dl_http_url_parse(const char *url, size_t len, dl_http_url_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    const char *p = url, *end = url + len;
    if (len >= 7 && dl_strncasecmp_eq(p, 7, "http://", 7)) {
        p += 7;
    } else if (len >= 8 && dl_strncasecmp_eq(p, 8, "https://", 8)) {
        out->tls = 1;
        p += 8;
    } else {
        snprintf(why, whylen, "invalid: URL must start with http:// or https:// (got \"%.40s\")",
                 url);
        return -1;
    }
    for (const char *q = url; q < end; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch == 0x7f) {
            snprintf(why, whylen, "invalid: URL holds a space or control character at byte %d",
                     (int)(q - url));
            return -1;
        }
    }
    const char *auth_end = p;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@') {
            snprintf(why, whylen, "invalid: credentials in the URL are not supported (send an "
                     "Authorization header)");
            return -1;
        }
    const char *host = p, *host_end, *port_at = NULL;
    if (p < auth_end && *p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL) {
            snprintf(why, whylen, "invalid: unclosed [ in the URL's host");
            return -1;
        }
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':') {
                snprintf(why, whylen, "invalid: junk after the URL's [host]");
                return -1;
            }
            port_at = host_end + 2;
        }
    } else {
        host_end = auth_end;
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (colon) {
            host_end = colon;
            port_at = colon + 1;
        }
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof(out->host)) {
        snprintf(why, whylen, "invalid: the URL's host is %s", hl ? "too long" : "empty");
        return -1;
    }
    for (size_t i = 0; i < hl; i++) {
        char ch = host[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '.' || ch == '_' || (ch == ':' && host != p) ||
                 (ch == '%' && host != p);
        if (!ok) {
            snprintf(why, whylen, "invalid: the URL's host holds '%c'", ch);
            return -1;
        }
        out->host[i] = (char)dl_tolower((unsigned char)ch);
    }
    out->host[hl] = '\0';
    out->port = out->tls ? 443 : 80;
    if (port_at) {
        long port = 0;
        const char *q = port_at;
        if (q == auth_end) {
            snprintf(why, whylen, "invalid: empty port in the URL");
            return -1;
        }
        for (; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || port > 65535) {
                snprintf(why, whylen, "invalid: the URL's port is not a number from 1 to 65535");
                return -1;
            }
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535) {
            snprintf(why, whylen, "invalid: the URL's port is not a number from 1 to 65535");
            return -1;
        }
        out->port = (int)port;
    }
    char *l = out->label;
    int v6 = memchr(out->host, ':', hl) != NULL;
    if (v6)
        *l++ = '[';
    l = (char *)memcpy(l, out->host, hl) + hl;
    if (v6)
        *l++ = ']';
    *l++ = ':';
    l += dl_num_format_i64(out->port, l);
    *l = '\0';
    out->label_len = (size_t)(l - out->label);
    /* the target: path and query; a fragment is the client's own */
    const char *t = auth_end, *frag = memchr(t, '#', (size_t)(end - t));
    const char *tend = frag ? frag : end;
    for (const char *q = t; q < tend; q++)
        if (*q == '%' && (q + 2 >= tend || !hex_ok(q[1]) || !hex_ok(q[2]))) {
            snprintf(why, whylen, "invalid: a %% in the URL not followed by two hex digits");
            return -1;
        }
    if (t == tend) {
        out->target = "/";
        out->target_len = 1;
    } else if (*t == '?') {
        out->target = t; /* "/?" is made by the caller from the empty path */
        out->target_len = (size_t)(tend - t);
    } else {
        out->target = t;
        out->target_len = (size_t)(tend - t);
    }
    return 0;
}

/* ============================================================ the client */

dl_http_client_t *dl_http_client_new(uv_loop_t *loop, const dl_http_client_cfg_t *cfg)
{
    dl_http_client_t *hc = dl_calloc(1, sizeof(*hc));
    if (hc == NULL)
        return NULL;
    hc->loop = loop;
    hc->cfg = *cfg;
    hc->dns = dl_dns_new(loop, cfg->dns_ttl_ms, cfg->dns_max_names);
    hc->pool = dl_out_pool_new(loop);
    if (hc->dns == NULL || hc->pool == NULL) {
        dl_http_client_free(hc);
        return NULL;
    }
    return hc;
}

void dl_http_client_free(dl_http_client_t *hc)
{
    if (hc == NULL)
        return;
    dl_out_pool_free(hc->pool);
    dl_dns_free(hc->dns);
    for (int i = 0; i < hc->n_tls; i++) {
        dl_tls_ctx_free(hc->tls[i].ctx);
        dl_free(hc->tls[i].ca);
    }
    dl_free(hc);
}

void dl_http_client_publish(dl_http_client_t *hc, dl_metrics_t *m, int w, int id)
{
    if (m == NULL)
        return;
    if (hc->gauge_m != m || hc->gauge_id != id) {
        static const char *const states[3][1] = {{"idle"}, {"busy"}, {"waiting"}};
        for (int i = 0; i < 3; i++)
            hc->gauge[i] = dl_metric_gauge_series(m, w, id, states[i]);
        hc->gauge_m = m;
        hc->gauge_id = id;
    }
    dl_out_pool_stats_t st;
    dl_out_pool_stats(hc->pool, &st);
    dl_metric_series_set(hc->gauge[0], st.idle);
    dl_metric_series_set(hc->gauge[1], st.busy);
    dl_metric_series_set(hc->gauge[2], st.waiting);
}

void dl_http_client_outbound(dl_http_client_t *hc, dl_outbound_t *out)
{
    out->loop = hc->loop;
    out->dns = hc->dns;
    out->pool = hc->pool;
    out->limits = hc->cfg.pool;
}

/* The client TLS context for (verify, ca), made once per worker. */
dl_tls_ctx_t *dl_http_client_tls(dl_http_client_t *hc, int verify, const char *ca, char *err,
                                 size_t errlen)
{
    for (int i = 0; i < hc->n_tls; i++)
        if (hc->tls[i].verify == verify &&
            ((ca == NULL && hc->tls[i].ca == NULL) ||
             (ca && hc->tls[i].ca && strcmp(ca, hc->tls[i].ca) == 0)))
            return hc->tls[i].ctx;
    dl_tls_client_opts_t o = {.verify = verify, .ca_file = ca};
    dl_tls_ctx_t *ctx;
    if (dl_tls_client_ctx_new(&o, &ctx, err, errlen) != 0)
        return NULL;
    if (hc->n_tls == MAX_TLS_CTX) {
        /* a bounded cache: the oldest context goes (connections keep theirs) */
        dl_tls_ctx_free(hc->tls[0].ctx);
        dl_free(hc->tls[0].ca);
        memmove(&hc->tls[0], &hc->tls[1], sizeof(hc->tls[0]) * (MAX_TLS_CTX - 1));
        hc->n_tls--;
    }
    tls_slot_t *s = &hc->tls[hc->n_tls];
    s->verify = verify;
    s->ca = ca ? dl_strdup(ca) : NULL;
    s->ctx = ctx;
    hc->n_tls++;
    return ctx;
}

/* ========================================================== the exchange */

/* The exchange's way out: the connection closed, not pooled, and nothing
 * pending; the failure recorded for the callback. */
static void detach(x_t *x)
{
    if (x->dns_w) {
        dl_dns_cancel(x->dns_w);
        x->dns_w = NULL;
    }
    if (x->pool_w) {
        dl_out_pool_cancel(x->pool_w);
        x->pool_w = NULL;
    }
    if (x->conn) {
        /* still connecting: the connection knows no origin yet (it closes
         * alone), and the slot it was made in is given back below */
        dl_out_pool_release(x->conn, 0, &x->hc->cfg.pool);
        x->conn = NULL;
    }
    if (x->slot)
        dl_out_pool_unslot(x->hc->pool, x->key);
    x->slot = 0;
}

static void report(x_t *x, int status)
{
    dl_http_cb cb;
    void *arg;
    if (!x->reported) {
        x->reported = 1;
        cb = x->cb;
        arg = x->arg;
    } else {
        cb = x->read_cb;
        arg = x->read_arg;
        x->read_cb = NULL;
    }
    if (cb)
        cb(&x->pub, status, arg);
}

static void fail(x_t *x, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(x_t *x, int status, const char *fmt, ...)
{
    if (x->failed || x->phase == PH_DONE)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->pub.err, sizeof(x->pub.err), fmt, ap);
    va_end(ap);
    x->failed = status;
    x->phase = PH_DONE;
    uv_timer_stop(&x->timer);
    detach(x);
    report(x, status);
}

static void on_deadline(uv_timer_t *t)
{
    x_t *x = t->data;
    static const char *const where[] = {"resolving", "waiting for a connection to",
                                        "connecting to", "waiting for the response of"};
    fail(x, DL_ETIMEDOUT, "timeout: %s %s after %llu ms", where[x->phase], x->url.label,
         (unsigned long long)x->timeout_ms);
}

/* dl_http_x_abort()'s failure, from a loop callback of its own */
static void on_abort(uv_timer_t *t)
{
    x_t *x = t->data;
    fail(x, DL_EINVAL, "invalid: %s", x->abort_why);
}

void dl_http_x_abort(dl_http_x_t *pub, const char *why)
{
    x_t *x = (x_t *)pub;
    if (x->failed || x->phase == PH_DONE)
        return;
    snprintf(x->abort_why, sizeof(x->abort_why), "%s", why);
    uv_timer_stop(&x->timer);
    uv_timer_start(&x->timer, on_abort, 0, 0);
}

/* ---------------------------------------------------------- the parser */

static int on_message_begin(llhttp_t *p)
{
    x_t *x = p->data;
    x->pub.n_hdrs = 0;
    dl_buf_reset(&x->pub.hdrs);
    x->hdr_bytes = 0;
    x->in_name = 0;
    return 0;
}

/* The headers are kept as "name\0value\0" pairs. A name or a value may come
 * in several pieces; each ends with its _complete callback, which comes for
 * an empty value too, so every pair is whole. Trailers (fields after a
 * chunked body) are not headers: they are left out. */
static int header_bytes(x_t *x, size_t len)
{
    x->hdr_bytes += len;
    if (x->hdr_bytes > MAX_HEADER_BYTES) {
        x->perr_status = DL_ETOOBIG;
        snprintf(x->perr, sizeof(x->perr), "too large: response headers (trailers included) "
                 "over %d bytes", MAX_HEADER_BYTES);
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    x_t *x = p->data;
    if (header_bytes(x, len) != 0) /* trailers count with the headers */
        return -1;
    if (x->headers_done)
        return 0; /* a trailer: not kept */
    if (!x->in_name) {
        x->in_name = 1;
        if (++x->pub.n_hdrs > MAX_HEADERS) {
            x->perr_status = DL_ETOOBIG;
            snprintf(x->perr, sizeof(x->perr), "too large: more than %d response headers",
                     MAX_HEADERS);
            return -1;
        }
    }
    /* most answers' headers fit in 512 bytes: one allocation, not a few */
    if (dl_buf_reserve(&x->pub.hdrs, x->pub.hdrs.cap ? len : DL_MAX(len, 512)) != 0)
        return 0; /* oom is sticky: on_headers_complete refuses the answer */
    char *o = x->pub.hdrs.data + x->pub.hdrs.len;
    for (size_t i = 0; i < len; i++)
        o[i] = (char)dl_tolower((unsigned char)at[i]);
    x->pub.hdrs.len += len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    x_t *x = p->data;
    if (x->headers_done)
        return 0;
    x->in_name = 0;
    dl_buf_append_char(&x->pub.hdrs, '\0');
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    x_t *x = p->data;
    if (header_bytes(x, len) != 0)
        return -1;
    if (x->headers_done)
        return 0;
    dl_buf_append(&x->pub.hdrs, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    x_t *x = p->data;
    if (x->headers_done)
        return 0;
    dl_buf_append_char(&x->pub.hdrs, '\0');
    return 0;
}

/* The value of header name (lower-case) in the pairs, or NULL. */
static const char *find_header(const dl_http_x_t *r, const char *name, size_t *vlen)
{
    const char *q = r->hdrs.data, *end = q + r->hdrs.len;
    for (int i = 0; i < r->n_hdrs && q < end; i++) {
        size_t nl = strlen(q);
        const char *v = q + nl + 1;
        size_t vl = strlen(v);
        if (strcmp(q, name) == 0) {
            *vlen = vl;
            return v;
        }
        q = v + vl + 1;
    }
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    x_t *x = p->data;
    if (x->pub.hdrs.oom) {
        x->perr_status = DL_ENOMEM;
        snprintf(x->perr, sizeof(x->perr), "protocol: out of memory for the response headers");
        return -1;
    }
    int code = p->status_code;
    if (code < 100 || code > 599) {
        x->perr_status = DL_EPROTO;
        snprintf(x->perr, sizeof(x->perr), "protocol: status %d from %s", code, x->url.label);
        return -1;
    }
    if (code == 101) {
        x->perr_status = DL_EPROTO;
        snprintf(x->perr, sizeof(x->perr), "protocol: %s switched protocols unasked (101)",
                 x->url.label);
        return -1;
    }
    if (code < 200) {
        /* an interim answer, skipped whole; an endless run of them is not
         * waited out to the deadline */
        if (++x->interims > MAX_INTERIMS) {
            x->perr_status = DL_EPROTO;
            snprintf(x->perr, sizeof(x->perr), "protocol: more than %d interim (1xx) answers "
                     "from %s", MAX_INTERIMS, x->url.label);
            return -1;
        }
        return 0;
    }
    x->pub.code = code;
    x->encoding = ENC_IDENTITY;
    size_t vl;
    const char *ce = find_header(&x->pub, "content-encoding", &vl);
    if (ce && x->decode) {
        if (dl_strncasecmp_eq(ce, vl, "gzip", 4) || dl_strncasecmp_eq(ce, vl, "x-gzip", 6))
            x->encoding = ENC_GZIP;
        else if (dl_strncasecmp_eq(ce, vl, "deflate", 7))
            x->encoding = ENC_DEFLATE;
    }
    /* a length past max_body is refused now, not when the bytes are in */
    if (x->encoding == ENC_IDENTITY && (p->flags & F_CONTENT_LENGTH) &&
        p->content_length > x->max_body && !x->head_only && code != 204 && code != 304) {
        x->perr_status = DL_ETOOBIG;
        snprintf(x->perr, sizeof(x->perr), "too large: response body of %llu bytes over %zu "
                 "from %s", (unsigned long long)p->content_length, x->max_body, x->url.label);
        return -1;
    }
    x->headers_done = 1;
    x->ev_headers = 1;
    /* no body, whatever the headers say: HEAD, and 204 and 304 (RFC 9112
     * 6.3); bytes after them are not an answer, so the connection goes */
    if (x->head_only || code == 204 || code == 304)
        return 1;
    /* a stream's user hears of the headers before any body byte. A callback
     * pauses by its return value: llhttp_pause() inside one is not seen
     * until the next llhttp_execute(), which would parse on meanwhile */
    return x->stream ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    x_t *x = p->data;
    if (x->pub.code < 200)
        return 0;
    x->body_total += len;
    if (x->body_total > x->max_body) {
        x->perr_status = DL_ETOOBIG;
        snprintf(x->perr, sizeof(x->perr), "too large: response body over %zu bytes from %s",
                 x->max_body, x->url.label);
        return -1;
    }
    dl_buf_t *b = x->encoding != ENC_IDENTITY ? &x->raw : &x->pub.body;
    if (dl_buf_append(b, at, len) != 0) {
        x->perr_status = DL_ENOMEM;
        snprintf(x->perr, sizeof(x->perr), "too large: out of memory for the response body");
        return -1;
    }
    if (x->stream && x->pub.body.len >= STREAM_HIGH_WATER)
        return HPE_PAUSED;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    x_t *x = p->data;
    if (p->status_code < 200) {
        x->headers_done = 0;
        return 0; /* go on with the final answer */
    }
    x->complete = 1;
    return HPE_PAUSED; /* whatever follows is not ours: it stays unparsed in c->in */
}

/* every exchange parses with these */
static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------ the connection */

/* The response is whole: the connection back to the pool if clean, the body decoded. */
static void finish(x_t *x)
{
    dl_out_conn_t *c = x->conn;
    x->conn = NULL;
    int reusable = x->sent && llhttp_should_keep_alive(&x->parser) && c->in.len == 0 &&
                   !c->eof && c->status == 0;
    dl_out_pool_release(c, reusable, &x->hc->cfg.pool);
    x->phase = PH_DONE;
    uv_timer_stop(&x->timer);
    /* nothing to decode: HEAD, 204, 304, or an empty body marked encoded */
    if (x->encoding != ENC_IDENTITY && x->raw.len > 0) {
        int rc = dl_gunzip(x->raw.data, x->raw.len, &x->pub.body, x->max_body);
        dl_buf_free(&x->raw);
        if (rc == DL_ETOOBIG) {
            x->phase = PH_EXCHANGE;
            fail(x, DL_ETOOBIG, "too large: decoded response body over %zu bytes from %s",
                 x->max_body, x->url.label);
            return;
        }
        if (rc != 0) {
            x->phase = PH_EXCHANGE;
            fail(x, DL_EPROTO, "protocol: the %s body from %s cannot be decoded",
                 x->encoding == ENC_GZIP ? "gzip" : "deflate", x->url.label);
            return;
        }
    }
    x->pub.done = 1;
    report(x, 0);
}

static int retry(x_t *x)
{
    dl_out_conn_t *c = x->conn;
    if (c == NULL || c->reused == 0 || x->got_bytes || !x->idempotent || x->retries >= MAX_RETRIES)
        return 0;
    /* the peer closed a kept connection as we used it: once more on another */
    x->retries++;
    x->conn = NULL;
    dl_out_pool_release(c, 0, &x->hc->cfg.pool);
    x->sent = 0;
    x->phase = PH_POOL;
    step(x);
    return 1;
}

/* Feeds what the connection holds to the parser and acts on what it found. */
static void pump(x_t *x)
{
    dl_out_conn_t *c = x->conn;
    while (c && c->in.len && !x->complete && !x->paused &&
           !(x->stream && x->pub.body.len >= STREAM_HIGH_WATER)) {
        x->got_bytes = 1;
        size_t n = c->in.len;
        llhttp_errno_t e = llhttp_execute(&x->parser, c->in.data, n);
        size_t used = n;
        if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&x->parser) - c->in.data);
            llhttp_resume(&x->parser);
        } else if (e != HPE_OK) {
            if (x->perr_status)
                fail(x, x->perr_status, "%s", x->perr);
            else
                fail(x, DL_EPROTO, "protocol: malformed response from %s (%s)", x->url.label,
                     llhttp_get_error_reason(&x->parser));
            return;
        }
        dl_out_consume(c, used);
        if (x->ev_headers) {
            x->ev_headers = 0;
            if (x->stream && !x->complete) {
                x->paused = 1; /* until the user asks for the body */
                report(x, 0);
                return; /* the callback may have freed x */
            }
        }
        if (x->complete) {
            finish(x);
            return;
        }
        if (x->stream && x->pub.body.len >= STREAM_HIGH_WATER) {
            x->paused = 1;
            if (x->read_cb)
                report(x, 0);
            return;
        }
        if (x->stream && x->pub.body.len && x->read_cb) {
            report(x, 0);
            return;
        }
    }
    if (c && c->eof && !x->complete && !x->paused && c->in.len == 0) {
        if (!x->got_bytes && retry(x))
            return;
        llhttp_errno_t e = llhttp_finish(&x->parser);
        if ((e == HPE_OK || e == HPE_PAUSED) && x->complete) {
            finish(x);
            return;
        }
        fail(x, DL_EPROTO, "protocol: %s closed the connection before the response ended",
             x->url.label);
    }
}

static void on_conn_read(dl_out_conn_t *c, int status, void *arg)
{
    x_t *x = arg;
    (void)c;
    if (status < 0) {
        if (retry(x))
            return;
        fail(x, status == DL_ETLS ? DL_ETLS : DL_EPROTO, "%s: %s",
             status == DL_ETLS ? "tls" : "protocol", x->conn->err);
        return;
    }
    pump(x);
}

static void send_file_chunk(x_t *x);

static void on_sent(dl_out_conn_t *c, int status, void *arg)
{
    x_t *x = arg;
    if (status < 0) {
        if (retry(x))
            return;
        fail(x, DL_EPROTO, "protocol: %s", c->err);
        return;
    }
    if (x->body_fd >= 0 && x->body_sent < x->body_size) {
        send_file_chunk(x);
        return;
    }
    x->sent = 1;
    if (x->complete) /* answered before the request was written whole */
        finish(x);
}

#define FILE_CHUNK (64 * 1024)

static void on_timer_closed(uv_handle_t *h);

static void on_file_read(uv_fs_t *req)
{
    x_t *x = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    x->fs_busy = 0;
    if (x->freed) {
        dl_free(x->chunk); /* the exchange went while the read ran: its last piece */
        x->chunk = NULL;
        uv_close((uv_handle_t *)&x->timer, on_timer_closed);
        return;
    }
    if (x->phase != PH_EXCHANGE || x->conn == NULL)
        return;
    if (n <= 0) {
        fail(x, DL_EINVAL, "invalid: the body file %s while it was sent",
             n < 0 ? "could not be read" : "got shorter");
        return;
    }
    size_t len = (size_t)DL_MIN((uint64_t)n, x->body_size - x->body_sent);
    x->body_sent += len;
    int rc = dl_out_write(x->conn, x->chunk, len, on_sent, x);
    if (rc != 0)
        fail(x, DL_EPROTO, "protocol: cannot write to %s: %s", x->url.label, x->conn->err);
}

/* The next piece of a file body, read on the thread pool (disk reads never
 * run on the loop). */
static void send_file_chunk(x_t *x)
{
    if (x->chunk == NULL && (x->chunk = dl_malloc(FILE_CHUNK)) == NULL) {
        fail(x, DL_ENOMEM, "invalid: out of memory for the body file");
        return;
    }
    size_t want = (size_t)DL_MIN((uint64_t)FILE_CHUNK, x->body_size - x->body_sent);
    uv_buf_t b = uv_buf_init(x->chunk, (unsigned)want);
    x->fs.data = x;
    int rc = uv_fs_read(x->hc->loop, &x->fs, x->body_fd, &b, 1, (int64_t)x->body_sent,
                        on_file_read);
    if (rc < 0) {
        fail(x, DL_EINVAL, "invalid: the body file cannot be read: %s", uv_strerror(rc));
        return;
    }
    x->fs_busy = 1;
}

static void send_request(x_t *x)
{
    x->body_sent = 0;
    x->phase = PH_EXCHANGE;
    llhttp_init(&x->parser, HTTP_RESPONSE, &parser_settings);
    x->parser.data = x;
    x->got_bytes = x->complete = x->headers_done = x->ev_headers = 0;
    dl_out_on_read(x->conn, on_conn_read, x);
    int rc = dl_out_write(x->conn, x->req.data, x->req.len, on_sent, x);
    if (rc != 0) {
        if (retry(x))
            return;
        fail(x, DL_EPROTO, "protocol: cannot write to %s: %s", x->url.label, x->conn->err);
        return;
    }
    pump(x); /* a reused connection may hold nothing; a new one neither */
}

static void on_connected(dl_out_conn_t *c, int status, void *arg)
{
    x_t *x = arg;
    if (status < 0) {
        x->conn = NULL;
        char err[sizeof(c->err)];
        snprintf(err, sizeof(err), "%s", c->err);
        dl_out_close(c);
        fail(x, status == DL_ETIMEDOUT ? DL_ETIMEDOUT : status == DL_ETLS ? DL_ETLS : DL_ECONNECT,
             "%s: %s",
             status == DL_ETIMEDOUT ? "timeout" : status == DL_ETLS ? "tls" : "connect", err);
        return;
    }
    x->slot = 0;
    dl_out_pool_attach(x->hc->pool, x->key, c);
    send_request(x);
}

static void connect_new(x_t *x)
{
    x->phase = PH_CONNECT;
    dl_tls_ctx_t *ctx = NULL;
    if (x->url.tls) {
        char err[200];
        ctx = dl_http_client_tls(x->hc, x->tls_verify, x->tls_ca, err, sizeof(err));
        if (ctx == NULL) {
            fail(x, DL_ETLS, "tls: %s", err);
            return;
        }
    }
    dl_out_target_t t = {.addrs = &x->addrs,
                         .port = x->url.port,
                         .timeout_ms = x->connect_timeout_ms,
                         .tls = ctx,
                         .server_name = x->url.tls ? x->server_name : NULL,
                         .alpn = x->url.tls ? "http/1.1" : NULL};
    dl_out_conn_t *c;
    if (dl_out_connect(x->hc->loop, &t, x->url.label, on_connected, x, &c) != 0) {
        fail(x, DL_ENOMEM, "connect: out of memory");
        return;
    }
    if (x->phase == PH_CONNECT && !x->failed)
        x->conn = c;
}

static void on_pool_turn(dl_out_conn_t *c, void *arg)
{
    x_t *x = arg;
    x->pool_w = NULL;
    if (c) {
        x->conn = c;
        send_request(x);
        return;
    }
    x->slot = 1;
    connect_new(x);
}

static void on_dns(int status, const dl_dns_addrs_t *addrs, const char *why, void *arg)
{
    x_t *x = arg;
    x->dns_w = NULL;
    if (status != 0) {
        fail(x, DL_EDNS, "dns: %s", why);
        return;
    }
    x->addrs = *addrs;
    x->phase = PH_POOL;
    step(x);
}

/* The next thing the exchange waits for: an address, then a connection. */
static void step(x_t *x)
{
    if (x->phase == PH_DNS) {
        char why[200];
        int rc = dl_dns_lookup(x->hc->dns, x->url.host, &x->addrs, on_dns, x, &x->dns_w, why,
                               sizeof(why));
        if (rc == 1)
            return;
        if (rc < 0) {
            fail(x, DL_EDNS, "dns: %s", why);
            return;
        }
        x->phase = PH_POOL;
    }
    dl_out_conn_t *c;
    int rc = dl_out_pool_acquire(x->hc->pool, x->key, &x->hc->cfg.pool, on_pool_turn, x, &c,
                                 &x->pool_w);
    if (rc == 0) {
        x->conn = c;
        send_request(x);
    } else if (rc == 1) {
        x->slot = 1;
        connect_new(x);
    } else if (rc == 2) {
        /* waits for on_pool_turn */
    } else if (rc == DL_ECONNECT) {
        fail(x, DL_ECONNECT, "connect: %d requests already wait for a connection to %s (the "
             "origin's %d connections are busy)", x->hc->cfg.pool.max_waiting, x->url.label,
             x->hc->cfg.pool.max_conns);
    } else {
        fail(x, rc, "connect: %s", dl_strerror(rc));
    }
}

/* ------------------------------------------------------------- start */

/* Whether the "Name: value\r\n" lines hold a field name (lower-case). */
static int has_field(const char *lines, size_t len, const char *name)
{
    size_t nl = strlen(name), fl, vl;
    const char *f, *v;
    dl_hdr_lines_t it;
    dl_hdr_lines_init(&it, lines, len);
    while (dl_hdr_lines_next(&it, &f, &fl, &v, &vl))
        if (dl_strncasecmp_eq(f, fl, name, nl))
            return 1;
    return 0;
}

static int build_request(x_t *x, const dl_http_req_t *r)
{
    dl_buf_t *b = &x->req;
    const dl_http_url_t *u = r->url;
    /* one allocation: the lines this adds are under 160 bytes */
    dl_buf_reserve(b, strlen(r->method) + u->target_len + strlen(u->host) + r->headers_len +
                          (r->body ? r->body_len : 0) + 160);
    dl_buf_append_str(b, r->method);
    dl_buf_append_char(b, ' ');
    if (u->target[0] == '?')
        dl_buf_append_char(b, '/');
    dl_buf_append(b, u->target, u->target_len);
    dl_buf_append_str(b, " HTTP/1.1\r\n");
    if (!has_field(r->headers, r->headers_len, "host")) {
        dl_buf_append_str(b, "Host: ");
        int v6 = strchr(u->host, ':') != NULL;
        if (v6)
            dl_buf_append_char(b, '[');
        dl_buf_append_str(b, u->host);
        if (v6)
            dl_buf_append_char(b, ']');
        if (u->port != (u->tls ? 443 : 80)) {
            char port[8];
            port[0] = ':';
            dl_buf_append(b, port, 1 + dl_num_format_i64(u->port, port + 1));
        }
        dl_buf_append_str(b, "\r\n");
    }
    if (r->headers_len)
        dl_buf_append(b, r->headers, r->headers_len);
    if (!has_field(r->headers, r->headers_len, "user-agent"))
        dl_buf_append_str(b, "User-Agent: devloop\r\n");
    /* a streamed body is handed on as it comes, undecoded: compression is
     * not asked for then (a caller who asks gets the encoded bytes) */
    if (r->decode && !r->stream && !has_field(r->headers, r->headers_len, "accept-encoding"))
        dl_buf_append_str(b, "Accept-Encoding: gzip, deflate\r\n");
    if (r->body || r->body_fd >= 0 || strcmp(r->method, "POST") == 0 ||
        strcmp(r->method, "PUT") == 0 || strcmp(r->method, "PATCH") == 0) {
        dl_buf_append_str(b, "Content-Length: ");
        dl_buf_append_u64(b, r->body_fd >= 0 ? r->body_file_size : r->body ? r->body_len : 0);
        dl_buf_append_str(b, "\r\n");
    }
    dl_buf_append_str(b, "\r\n");
    if (r->body)
        dl_buf_append(b, r->body, r->body_len);
    return b->oom ? DL_ENOMEM : 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    x_t *x = h->data;
    if (x->body_fd >= 0)
        close(x->body_fd);
    dl_free(x->chunk);
    dl_buf_free(&x->req);
    dl_buf_free(&x->raw);
    dl_buf_free(&x->pub.hdrs);
    dl_buf_free(&x->pub.body);
    dl_free(x->tls_ca);
    dl_free(x);
}

int dl_http_start(dl_http_client_t *hc, const dl_http_req_t *r, dl_http_cb cb, void *arg,
                  dl_http_x_t **out)
{
    x_t *x = dl_malloc(sizeof(*x));
    if (x == NULL)
        return DL_ENOMEM;
    memset(x, 0, X_ZEROED);
    x->hc = hc;
    x->cb = cb;
    x->arg = arg;
    x->url = *r->url;
    x->url.target = NULL; /* borrowed: only the request bytes keep it */
    x->timeout_ms = r->timeout_ms;
    x->connect_timeout_ms = r->connect_timeout_ms ? DL_MIN(r->connect_timeout_ms, r->timeout_ms)
                                                  : r->timeout_ms;
    x->max_body = r->max_body;
    x->decode = r->decode && !r->stream;
    x->stream = r->stream;
    x->head_only = r->head_only;
    x->idempotent = r->idempotent;
    x->tls_verify = r->tls_verify;
    x->body_fd = -1;
    if (r->tls_ca && (x->tls_ca = dl_strdup(r->tls_ca)) == NULL) {
        dl_free(x);
        return DL_ENOMEM;
    }
    const char *sn = r->tls_server_name ? r->tls_server_name : r->url->host;
    size_t snl = DL_MIN(strlen(sn), sizeof(x->server_name) - 1);
    memcpy(x->server_name, sn, snl);
    x->server_name[snl] = '\0';
    /* the pool's origin: everything that makes two connections differ (the
     * caller keeps a CA path within 255 bytes, so nothing is cut) */
    char *k = x->key;
    const char *scheme = r->url->tls ? "https://" : "http://";
    size_t cal = x->tls_ca ? DL_MIN(strlen(x->tls_ca), 255) : 0;
    k = (char *)memcpy(k, scheme, strlen(scheme)) + strlen(scheme);
    k = (char *)memcpy(k, r->url->label, r->url->label_len) + r->url->label_len;
    *k++ = '|';
    *k++ = x->tls_verify ? '1' : '0';
    *k++ = '|';
    if (cal)
        k = (char *)memcpy(k, x->tls_ca, cal) + cal;
    *k++ = '|';
    k = (char *)memcpy(k, x->server_name, snl) + snl;
    *k = '\0';
    dl_buf_init(&x->req);
    dl_buf_init(&x->raw);
    dl_buf_init(&x->pub.hdrs);
    dl_buf_init(&x->pub.body);
    if (build_request(x, r) != 0) {
        dl_buf_free(&x->req);
        dl_free(x->tls_ca);
        dl_free(x);
        return DL_ENOMEM;
    }
    x->body_fd = r->body_fd; /* ours from here on */
    x->body_size = r->body_file_size;
    uv_timer_init(hc->loop, &x->timer);
    x->timer.data = x;
    if (x->timeout_ms > 0)
        uv_timer_start(&x->timer, on_deadline, x->timeout_ms, 0);
    x->phase = PH_DNS;
    *out = &x->pub;
    step(x);
    return 0;
}

int dl_http_x_read(dl_http_x_t *pub, dl_http_cb cb, void *arg)
{
    x_t *x = (x_t *)pub;
    if (x->failed)
        return x->failed;
    if (pub->body.len || pub->done)
        return 1;
    if (x->paused) {
        /* parse what is already here without a callback: the caller is not
         * yet parked, so it is told by the return value */
        x->paused = 0;
        pump(x);
        if (x->failed)
            return x->failed;
        if (pub->body.len || pub->done)
            return 1;
    }
    x->read_cb = cb;
    x->read_arg = arg;
    return 0;
}

void dl_http_x_free(dl_http_x_t *pub)
{
    if (pub == NULL)
        return;
    x_t *x = (x_t *)pub;
    x->cb = NULL;
    x->read_cb = NULL;
    x->reported = 1;
    if (x->phase != PH_DONE) {
        x->phase = PH_DONE;
        detach(x);
    }
    x->freed = 1;
    if (x->fs_busy)
        return; /* on_file_read finishes it: the read holds x->fs */
    uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}
