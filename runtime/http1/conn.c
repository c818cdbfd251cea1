/*
 * conn.c - client connections: HTTP/1.x, TLS underneath, HTTP/2 handed off.
 *
 * Bytes are read into the worker's shared read buffer and fed straight to
 * llhttp; the callbacks copy the target, headers and body into the request,
 * so nothing of the read buffer outlives a read callback. A complete request
 * pauses the parser and is dispatched. When its handler finishes at once (the
 * common case) parsing goes on in the same buffer, so pipelined requests are
 * answered in order and their responses leave in one write. When the handler
 * parks, unparsed bytes wait in `pending` until the response is out.
 *
 * Limits (URI, header bytes and count, body) are checked as bytes arrive.
 * Timeouts are deadlines checked by the worker's sweep timer, not a timer per
 * connection, so keep-alive requests start no timers at all.
 *
 * TLS sits below all of this (tls.c): what is read is decrypted before the
 * parser sees it, and `out` (plaintext) is encrypted into `cout` just before
 * a write. A connection that chose h2 by ALPN, or whose first bytes are the
 * HTTP/2 preface on a plain listener (h2c with prior knowledge), gives its
 * plaintext to the session table its host hands it (server/worker.c wires
 * http2/h2.c there); requests from every protocol meet again in
 * the request core (core/request.h) through its protocol table. `Upgrade: h2c` is not
 * honoured (RFC 9113 deprecates it): such a request is answered over HTTP/1.1.
 */
#include "http1/conn.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "http1/write.h"
#include "common/internal.h"
#include "common/metrics.h"
#include "transport/tls.h"
#include "core/cors.h"
#include "core/stream.h"
#include "core/upload.h"

#define MAX_PENDING (256 * 1024) /* read-ahead while a handler runs */
#define LINGER_MS 2000
#define H2_PREFACE_LEN 24
#define FILE_CHUNK (256 * 1024) /* a file body is read and sent this much at a time */
#define KEEP_BUF_MAX (256 * 1024) /* largest output buffer a connection keeps between answers */
#define FLUSH_ROUNDS 16          /* synchronous writes in one flush before yielding */
#define MAX_WRITE (1u << 30)     /* one uv_buf_t's share of a write (its length is unsigned) */

static const char h2_preface[H2_PREFACE_LEN + 1] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

typedef struct {
    uv_write_t req;
    dl_conn_t *conn;
    dl_buf_t buf;
} write_req_t;

static llhttp_settings_t parser_settings;
static uv_once_t settings_once = UV_ONCE_INIT;

static void conn_flush(dl_conn_t *c);
static void stream_room(dl_conn_t *c);
static void conn_drain(dl_conn_t *c);
void dl__conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void after_response(dl_conn_t *c, int keep);
static void file_done(dl_conn_t *c);
static void send_error(dl_conn_t *c, int status, const char *msg);
static void conn_input(dl_conn_t *c, const char *data, size_t n);

/* ================================================================ requests */

static dl_req_t *conn_req(dl_conn_t *c)
{
    if (c->req == NULL) {
        c->req = c->host->core->acquire(c->host->core);
        if (c->req) {
            c->req->conn = &c->base;
            c->req->client.peer = c->base.peer;
        }
    }
    return c->req;
}

/* Response bytes the connection holds: queued, in a write, or encrypted. */
static size_t out_bytes(const dl_conn_t *c)
{
    return c->out.len + c->writing + c->cout.len;
}

/* Past the high-water mark a connection takes no new request until the
 * client has read enough of its answers (h2.c has its own mark). */
static int out_full(const dl_conn_t *c)
{
    return out_bytes(c) >= c->host->cfg->output_high_water;
}

static int reject(dl_conn_t *c, int status, const char *msg)
{
    c->err_status = status;
    c->err_msg = msg;
    return HPE_USER;
}

/* reject() with a message that dies with the request (an upload's); kept in
 * the core's buffer, free by then: a request the early check refused opened
 * no upload, and its answer was written at once */
static int reject_copy(dl_conn_t *c, int status, const char *msg)
{
    snprintf(c->base.err_buf, sizeof(c->base.err_buf), "%s", msg);
    return reject(c, status, c->base.err_buf);
}

/* ========================================================= parser callbacks */

static int on_message_begin(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    if (conn_req(c) == NULL)
        return reject(c, 503, "out of memory");
    if (c->req->start_ns == 0)
        c->req->start_ns = uv_hrtime();
    c->head_method = 0;
    if (c->state == DL_CS_IDLE || c->state == DL_CS_HEAD) {
        c->state = DL_CS_HEAD;
        c->deadline = uv_now(c->host->loop) + c->host->cfg->header_timeout_ms;
    }
    return 0;
}

/* an error answer to HEAD has no body: known once the method is read, however
 * the bytes were split */
static int on_method_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    c->head_method = llhttp_get_method(p) == HTTP_HEAD;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    if (r->head.len + len > c->host->cfg->max_uri)
        return reject(c, 414, "request target too long");
    if (dl_buf_append(&r->head, at, len) != 0)
        return reject(c, 503, "out of memory");
    r->url_len = (uint32_t)r->head.len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    const dl_config_t *cfg = c->host->cfg;
    if (len > 0)
        c->field_started = 1;
    r->header_bytes += len;
    if (r->header_bytes > cfg->max_header_bytes)
        return reject(c, 431, "request headers too large");
    if (r->n_headers == 0 || r->in_value) {
        if (r->n_headers >= cfg->max_headers)
            return reject(c, 431, "too many request headers");
        dl_header_t *h = dl_req_header_new(r);
        if (h == NULL)
            return reject(c, 503, "out of memory");
        h->name_off = (uint32_t)r->head.len;
        h->name_len = 0;
        h->value_off = (uint32_t)r->head.len;
        h->value_len = 0;
        r->in_value = 0;
    }
    if (dl_buf_append(&r->head, at, len) != 0)
        return reject(c, 503, "out of memory");
    r->headers[r->n_headers - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    r->header_bytes += len;
    if (r->header_bytes > c->host->cfg->max_header_bytes)
        return reject(c, 431, "request headers too large");
    dl_header_t *h = &r->headers[r->n_headers - 1];
    if (!r->in_value) {
        /* a value that starts on a line of its own ("Name:" CRLF SP "value")
         * is obs-fold too: whitespace back to a LF, in this read or the last */
        const char *q = at;
        while (len > 0 && q > c->feed_start && (q[-1] == ' ' || q[-1] == '\t'))
            q--;
        if (len > 0 && (q > c->feed_start ? q[-1] == '\n' : c->tail_lf))
            return reject(c, 400, "line folding (obs-fold) in a header value");
        h->value_off = (uint32_t)r->head.len;
        h->value_len = 0;
        r->in_value = 1;
    } else {
        /* llhttp joins an obs-fold continuation into the value as a second
         * span; a span that neither follows the last one nor starts a new
         * read after one that ended a read is such a fold (smuggling risk) */
        int contiguous = at == c->value_end ||
                         (c->value_end == NULL && at == c->exec_start && c->prev_ended_value);
        if (!contiguous)
            return reject(c, 400, "line folding (obs-fold) in a header value");
    }
    if (dl_buf_append(&r->head, at, len) != 0)
        return reject(c, 503, "out of memory");
    h->value_len += (uint32_t)len;
    c->value_end = at + len;
    return 0;
}

/* llhttp reports no field span for ": value"; a name must be a token */
static int on_header_field_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    if (!c->field_started)
        return reject(c, 400, "empty header field name");
    c->field_started = 0;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    if (r->n_headers == 0)
        return 0;
    dl_header_t *h = &r->headers[r->n_headers - 1];
    if (!r->in_value) { /* empty value: no on_header_value call */
        h->value_off = (uint32_t)r->head.len;
        h->value_len = 0;
        r->in_value = 1;
    }
    const char *v = r->head.data + h->value_off;
    /* obs-fold, bare CR/LF and NUL are how smuggling starts: refuse them */
    for (uint32_t i = 0; i < h->value_len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '\r' || ch == '\n')
            return reject(c, 400, "line folding or bare CR/LF in a header value");
        if (ch == 0 || (ch < 0x20 && ch != '\t') || ch == 0x7f)
            return reject(c, 400, "control character in a header value");
    }
    while (h->value_len && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
        h->value_len--;
    return 0;
}

/*
 * Transfer-Encoding (RFC 9112 6.1, 7): an HTTP/1.0 request with it has faulty
 * framing; in HTTP/1.1 chunked must be the final coding and appear once, and
 * a coding we do not implement is a 501. Every case but plain "chunked" ends
 * the connection, since the body's end cannot be found. Returns 0 or a status.
 */
static int transfer_coding_check(dl_req_t *r, const char **msg)
{
    int codings = 0, chunked_at = -1, other = 0, seen = 0;
    for (int i = 0; i < r->n_headers; i++) {
        const dl_header_t *h = &r->headers[i];
        if (!dl_strncasecmp_eq(r->head.data + h->name_off, h->name_len, "transfer-encoding", 17))
            continue;
        seen = 1;
        const char *v = r->head.data + h->value_off, *end = v + h->value_len, *a, *b;
        while (dl_http_list_next(&v, end, &a, &b)) {
            /* transfer-coding = token *( OWS ";" OWS transfer-parameter ) */
            const char *t = a, *u;
            while (t < b && dl_is_tchar((unsigned char)*t))
                t++;
            for (u = t; u < b && (*u == ' ' || *u == '\t'); u++)
                ;
            if (t == a || (u < b && *u != ';')) {
                *msg = "malformed Transfer-Encoding";
                return 400;
            }
            if (chunked_at >= 0) {
                *msg = "chunked must be the final transfer coding";
                return 400;
            }
            if (t == b && dl_strncasecmp_eq(a, (size_t)(b - a), "chunked", 7))
                chunked_at = codings;
            else
                other = 1;
            codings++;
        }
    }
    if (!seen)
        return 0;
    if (r->http_minor == 0) {
        *msg = "Transfer-Encoding in an HTTP/1.0 request";
        return 400;
    }
    if (codings == 0) {
        *msg = "empty Transfer-Encoding";
        return 400;
    }
    if (chunked_at < 0) {
        *msg = "chunked must be the final transfer coding";
        return 400;
    }
    if (other) {
        *msg = "transfer codings other than chunked are not implemented";
        return 501;
    }
    return 0;
}
static int on_headers_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    r->http_major = llhttp_get_http_major(p);
    r->http_minor = llhttp_get_http_minor(p);
    r->method_name = llhttp_method_name(llhttp_get_method(p));
    r->method = dl_method_from_name(r->method_name, strlen(r->method_name));
    r->n_head_headers = r->n_headers;
    if (r->http_major != 1)
        return reject(c, 505, "only HTTP/1.0 and HTTP/1.1 are served here");
    const char *msg = NULL;
    int chunked = (p->flags & F_CHUNKED) != 0;
    int has_body = chunked || p->content_length > 0;
    int status = transfer_coding_check(r, &msg);
    if (status == 0)
        status = dl_req_begin(&c->base, r, has_body, &msg);
    if (status)
        return reject(c, status, msg);

    if (r->method_name && r->http_minor == 1) {
        size_t elen;
        const char *e = dl_req_header(r, "expect", &elen);
        if (e) {
            int rc = dl_req_expect_check(e, elen);
            if (rc < 0)
                return reject(c, 417, "only Expect: 100-continue is supported");
            r->expect_continue = rc == 1;
        }
    }
    if (!chunked && (p->flags & F_TRANSFER_ENCODING))
        return reject(c, 400, "chunked must be the final transfer coding"); /* never framed twice */
    if (has_body) {
        if (!chunked && p->content_length > r->body_limit && !r->early_status)
            return reject(c, 413, "request body too large");
        /* a final answer at once when the body would be refused anyway
         * (RFC 9110 10.1.1 for a client waiting for 100 Continue); the body
         * is never read, so the connection closes after it (lingering, so
         * that the client reads the answer before the close) */
        if (dl_req_early_answer(&c->base, r)) {
            r->keep_alive = 0;
            c->lingering = 1;
            c->state = DL_CS_BUSY;
            c->deadline = 0;
            return HPE_PAUSED;
        }
        c->state = DL_CS_BODY;
        c->window_start = uv_now(c->host->loop);
        c->window_bytes = 0;
        c->deadline = 0;
        /* 100 Continue only when the body will be read (RFC 9110 10.1.1) */
        if (r->expect_continue && r->route_status == DL_ROUTE_FOUND) {
            dl_buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            conn_flush(c);
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    if (r->body_seen + len > r->body_limit)
        return reject(c, 413, "request body too large");
    r->body_seen += len;
    c->window_bytes += len;
    if (r->upload) {
        int rc = dl_upload_feed(r->upload, at, len);
        return rc == 0 ? 0 : reject_copy(c, dl_upload_status(rc), dl_upload_error(r->upload));
    }
    if (dl_buf_append(&r->body, at, len) != 0)
        return reject(c, 503, "out of memory");
    return 0;
}

/* Chunk extensions mean nothing to us, but a peer could send a megabyte of
 * them: each chunk's count against the header limits, bytes and number alike
 * (per chunk: a signed upload carries one extension on every chunk). */
static int on_chunk_ext(llhttp_t *p, const char *at, size_t len)
{
    dl_conn_t *c = p->data;
    DL_UNUSED(at);
    c->req->chunk_ext_bytes += len;
    if (c->req->chunk_ext_bytes > c->host->cfg->max_header_bytes)
        return reject(c, 400, "chunk extensions too long");
    return 0;
}

static int on_chunk_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    c->req->chunk_ext_bytes = 0;
    c->req->n_chunk_ext = 0;
    return 0;
}

static int on_chunk_ext_name_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    if (++c->req->n_chunk_ext > c->host->cfg->max_headers)
        return reject(c, 400, "too many chunk extensions");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    dl_conn_t *c = p->data;
    dl_req_t *r = c->req;
    if (r->upload) {
        int rc = dl_upload_finish(r->upload);
        if (rc != 0)
            return reject_copy(c, dl_upload_status(rc), dl_upload_error(r->upload));
    }
    /* trailer fields were parsed and checked like header fields; drop them */
    r->n_headers = r->n_head_headers;
    r->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade && !c->stopping &&
                    !c->host->core->stopping;
    c->state = DL_CS_BUSY;
    c->deadline = 0;
    return HPE_PAUSED;
}

static void init_settings(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_method_complete = on_method_complete;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_field_complete = on_header_field_complete;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_chunk_extension_name = on_chunk_ext;
    parser_settings.on_chunk_extension_value = on_chunk_ext;
    parser_settings.on_chunk_extension_name_complete = on_chunk_ext_name_complete;
    parser_settings.on_chunk_complete = on_chunk_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
}

static void conn_dispatch(dl_conn_t *c)
{
    dl_req_t *r = c->req;
    c->req = NULL; /* the request now belongs to its response */
    c->active = r;
    dl_req_dispatch(&c->base, r);
}

/* Whether the bytes fed so far end with LF and only whitespace after it
 * (what a folded value starting in the next read would follow). */
static void note_tail(dl_conn_t *c, const char *data, size_t used)
{
    const char *q = data + used;
    while (q > data && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
    if (q > data)
        c->tail_lf = q[-1] == '\n';
}

/* Feeds bytes to the parser, dispatching complete requests; returns how many
 * were consumed (fewer than len when a handler parked, the output is full or
 * the connection ends). */
static size_t conn_feed(dl_conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    c->in_feed = 1;
    c->feed_start = data;
    while (off < len && c->state != DL_CS_BUSY && !c->closing && !c->closed) {
        if (c->state != DL_CS_BODY && c->req == NULL && out_full(c))
            break; /* between requests: wait for the client to read (conn_drain) */
        c->prev_ended_value = c->value_end != NULL && c->value_end == c->exec_end;
        c->exec_start = data + off;
        c->exec_end = data + len;
        c->value_end = NULL;
        llhttp_errno_t e = llhttp_execute(&c->parser, data + off, len - off);
        if (e == HPE_OK) {
            off = len;
            break;
        }
        if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            off = pos ? (size_t)(pos - data) : len;
            if (e == HPE_PAUSED_UPGRADE)
                llhttp_resume_after_upgrade(&c->parser);
            else
                llhttp_resume(&c->parser);
            conn_dispatch(c);
            continue;
        }
        int status = c->err_status ? c->err_status : 400;
        const char *msg = c->err_msg;
        char buf[128];
        if (msg == NULL) {
            snprintf(buf, sizeof(buf), "malformed request: %s", llhttp_get_error_reason(&c->parser));
            msg = buf;
        }
        c->in_feed = 0;
        send_error(c, status, msg);
        return len;
    }
    note_tail(c, data, off);
    c->in_feed = 0;
    return off;
}

/*
 * Reading stops while too much waits unparsed or too many answers wait for
 * the client (output back-pressure), and starts again once both are below
 * their marks, so one connection holds at most about MAX_PENDING of input
 * and output_high_water (plus the answer being made) of output.
 */
static void conn_pace(dl_conn_t *c)
{
    if (c->closed || c->closing)
        return;
    int full = c->pending.len > MAX_PENDING || (out_full(c) && !c->h2);
    if (full && !c->read_stopped) {
        c->read_stopped = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    } else if (!full && c->read_stopped && c->pending.len < MAX_PENDING / 2) {
        c->read_stopped = 0;
        uv_read_start((uv_stream_t *)&c->tcp, dl__conn_alloc, on_read);
    }
}

/* Parses what waited in `pending` while the connection was busy or its
 * output full, and writes what that answered; a write that completes at
 * once makes room for more. */
static void conn_drain(dl_conn_t *c)
{
    if (c->h2) { /* conn_flush runs the streams that waited for the output */
        conn_flush(c);
        if (!c->closed)
            conn_pace(c);
        return;
    }
    for (;;) {
        size_t before = c->pending.len, out_before = out_bytes(c);
        /* (a fresh connection's pending is a partial HTTP/2 preface) */
        if (c->pending.len && c->state != DL_CS_BUSY && !c->closing && !c->closed && !c->fresh &&
            !c->h2) {
            size_t used = conn_feed(c, c->pending.data, c->pending.len);
            dl_buf_consume(&c->pending, used);
        }
        conn_flush(c);
        if (c->closed)
            return;
        if (c->pending.len == 0 || c->state == DL_CS_BUSY || c->closing || c->writing ||
            out_full(c))
            break;
        if (c->pending.len == before && out_bytes(c) >= out_before)
            break; /* a partial request: wait for more bytes */
    }
    conn_pace(c);
}

/* ================================================================ responses */

/* The core decided the answer (core/response.c); HTTP/1 writes it as text. */
static void h1_write_response(dl_core_conn_t *base, dl_req_t *r, const dl_resp_wire_t *w)
{
    dl_conn_t *c = (dl_conn_t *)base;
    c->active = NULL;
    dl_http1_write_response(&c->out, r, w);
}

static void h1_finish(dl_core_conn_t *base, const dl_resp_wire_t *w)
{
    dl_conn_t *c = (dl_conn_t *)base;
    const dl_resp_t *resp = w->resp;
    if (c->out.oom) {
        if (resp->has_file)
            close(resp->file_fd);
        dl_conn_close(c);
        return;
    }
    if (resp->has_file) {
        if (w->no_body || w->body_len == 0) {
            close(resp->file_fd);
        } else {
            /* sent a chunk at a time from conn_flush; the connection stays
             * busy (no pipelined request is parsed) until the last one */
            c->file_fd = resp->file_fd;
            c->file_off = resp->file_off;
            c->file_left = w->body_len;
            c->file_keep = w->keep;
            c->state = DL_CS_BUSY;
            c->deadline = 0;
            if (!c->in_feed)
                conn_flush(c);
            return;
        }
    }
    after_response(c, w->keep);
}

/* A streamed answer (core/stream.h): the head now; the connection stays
 * busy (no pipelined request is parsed) until the stream ends, and has no
 * deadline but the send timeout of each write. c->active stays the request:
 * a connection that ends wakes its writer. */
static void h1_stream_head(dl_core_conn_t *base, dl_req_t *r, const dl_resp_wire_t *w)
{
    dl_conn_t *c = (dl_conn_t *)base;
    dl_http1_write_response(&c->out, r, w);
    c->stream_chunked = w->chunked;
    c->state = DL_CS_BUSY;
    c->deadline = 0;
    if (!c->in_feed)
        conn_flush(c);
}

static size_t h1_stream_data(dl_core_conn_t *base, dl_req_t *r, const char *p, size_t n)
{
    dl_conn_t *c = (dl_conn_t *)base;
    DL_UNUSED(r);
    if (c->closed)
        return 0;
    if (c->stream_chunked) {
        char size[24];
        int k = snprintf(size, sizeof(size), "%zx\r\n", n);
        dl_buf_append(&c->out, size, (size_t)k);
        dl_buf_append(&c->out, p, n);
        dl_buf_append(&c->out, "\r\n", 2);
    } else {
        dl_buf_append(&c->out, p, n); /* HTTP/1.0: the body ends with the connection */
    }
    if (c->out.oom) {
        dl_conn_close(c);
        return 0;
    }
    if (!c->in_feed)
        conn_flush(c);
    if (c->closed)
        return 0;
    size_t held = out_bytes(c);
    if (held >= c->host->cfg->output_high_water)
        c->stream_wait = 1;
    return held;
}

static void h1_stream_close(dl_core_conn_t *base, int ok, int keep)
{
    dl_conn_t *c = (dl_conn_t *)base;
    c->active = NULL;
    int chunked = c->stream_chunked;
    c->stream_chunked = 0;
    c->stream_wait = 0;
    if (!ok) {
        /* the body is incomplete: what was queued goes, then the connection
         * closes without the last chunk, so no client takes it for whole
         * (RFC 9112 7.1) */
        after_response(c, 0);
        return;
    }
    if (chunked)
        dl_buf_append(&c->out, "0\r\n\r\n", 5);
    if (c->out.oom) {
        dl_conn_close(c);
        return;
    }
    after_response(c, keep && !c->stopping); /* a stop may have begun during the stream */
}

static const dl_proto_t http1_proto = {
    .name = "HTTP/1",
    .write_response = h1_write_response,
    .finish = h1_finish,
    .stream_head = h1_stream_head,
    .stream_data = h1_stream_data,
    .stream_close = h1_stream_close,
};

/* What follows a response once it is queued: close, or go on with the next
 * request (parsing what was read meanwhile when the handler had parked). */
static void after_response(dl_conn_t *c, int keep)
{
    const dl_config_t *cfg = c->host->cfg;
    if (!keep) {
        c->closing = 1;
        c->state = DL_CS_IDLE;
        if (!c->in_feed)
            conn_flush(c);
        return;
    }
    c->state = c->pending.len ? DL_CS_HEAD : DL_CS_IDLE;
    c->deadline = uv_now(c->host->loop) + (c->state == DL_CS_IDLE ? cfg->keepalive_timeout_ms
                                                               : cfg->header_timeout_ms);
    /* answered after the handler parked: go on with what was read meanwhile */
    if (!c->in_feed)
        conn_drain(c);
}

/* A parse error: answer once, stop parsing, drain a little, close. */
static void send_error(dl_conn_t *c, int status, const char *msg)
{
    dl_core_ctx_t *x = c->host->core;
    char id[65];
    if (c->req && c->req->id[0])
        memcpy(id, c->req->id, sizeof(id));
    else
        dl_request_id_new(x->prng, id);
    dl_buf_t cors = DL_BUF_INIT; /* a browser reads the refusal only with its CORS fields */
    if (c->req) {
        dl_cors_put_lines(c->req, &cors);
        x->record(x, c->req, status, 0);
        x->release(x, c->req);
        c->req = NULL;
    }
    dl_log(DL_LOG_DEBUG, "rejecting request: %d %s", status, msg);
    dl_buf_t body = DL_BUF_INIT;
    dl_error_body(&body, status, msg, id);
    dl_buf_t *o = &c->out;
    dl_buf_appendf(o, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nX-Request-Id: %s\r\n"
                      "X-Content-Type-Options: nosniff\r\n"
                      "Cache-Control: no-cache, no-store, must-revalidate\r\n"
                      "Connection: close\r\n",
                   status, dl_status_text(status), x->date(x), body.len, id);
    if (!cors.oom)
        dl_buf_append(o, cors.data, cors.len);
    dl_buf_free(&cors);
    dl_buf_append(o, "\r\n", 2);
    if (!c->head_method) /* a HEAD answer has no content (RFC 9110 9.3.2) */
        dl_buf_append(o, body.data, body.len);
    dl_buf_free(&body);
    c->closing = 1;
    c->lingering = 1;
    c->pending.len = 0;
    conn_flush(c);
}

/* ================================================================== writing */

static void on_close(uv_handle_t *h)
{
    dl_conn_t *c = h->data;
    dl_buf_free(&c->pending);
    dl_tls_free(c->tls);
    c->tls = NULL;
    dl_buf_free(&c->cout);
    /* keep a modest output buffer with the pooled connection */
    if (c->out.cap > 16 * 1024)
        dl_buf_free(&c->out);
    c->host->closed(c->host, c); /* unlinks it, pools or frees it */
}

/* Marks c closed and lets go of what hangs off it: parked handlers run on
 * detached (their answers are dropped), a request being parsed is freed. */
static void conn_detach(dl_conn_t *c)
{
    c->closed = 1;
    c->base.closed = 1;
    if (c->h2) { /* handlers of its streams run on detached */
        c->host->h2->end(c->h2);
        c->h2 = NULL;
    }
    if (c->file_fd >= 0)
        file_done(c);
    if (c->active) {
        dl_req_t *a = c->active;
        a->conn = NULL;
        c->active = NULL;
        dl_req_stream_drained(a); /* a writer waiting for room learns it is gone */
    }
    if (c->req) { /* still being parsed: nothing else holds it */
        c->host->core->release(c->host->core, c->req);
        c->req = NULL;
    }
}

/* Bytes of the answer the client has not taken yet: libuv's queue and what
 * the kernel holds unacknowledged, so a reader is seen byte by byte, not only
 * when the socket buffer has room for another write. */
static size_t unsent_bytes(dl_conn_t *c)
{
    size_t n = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    uv_os_fd_t fd;
    int outq = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
        n += (size_t)outq;
    return n;
}

/* Closes with a reset: the kernel drops what the client never took, rather
 * than holding megabytes in FIN-WAIT-1 for a reader that is gone. */
static void conn_abort(dl_conn_t *c)
{
    if (c->closed) {
        dl_conn_close(c);
        return;
    }
    conn_detach(c);
    if (uv_tcp_close_reset(&c->tcp, on_close) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

void dl_conn_close(dl_conn_t *c)
{
    if (c->closed)
        return;
    conn_detach(c);
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    DL_UNUSED(buf);
    if (nread < 0)
        dl_conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    dl_conn_t *c = req->data;
    dl_free(req);
    if (status < 0 || c->closed) {
        dl_conn_close(c);
        return;
    }
    /* Read and discard what the client still sends, so that closing does not
     * reset the connection before it has read our error (lingering close). */
    c->deadline = uv_now(c->host->loop) + LINGER_MS;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, dl__conn_alloc, on_linger_read);
}

static void conn_finish_close(dl_conn_t *c)
{
    if (c->closed || c->state == DL_CS_LINGER)
        return; /* a second uv_shutdown would fail and close before the linger */
    if (c->tls && !c->notified) {
        c->notified = 1;
        dl_tls_close_notify(c->tls);
        if (c->cout.len) {
            conn_flush(c); /* comes back here once the alert is written */
            return;
        }
    }
    if (c->lingering) {
        uv_shutdown_t *sr = dl_malloc(sizeof(*sr));
        if (sr) {
            sr->data = c;
            if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown) == 0) {
                /* the output is done (closing): from here on, only the linger */
                c->state = DL_CS_LINGER;
                return;
            }
            dl_free(sr);
        }
    }
    dl_conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req_t *wr = (write_req_t *)req;
    dl_conn_t *c = wr->conn;
    c->writing = 0;
    c->send_deadline = 0;
    /* keep the larger buffer for the next response, unless it is big: an
     * idle keep-alive connection must not hold a 20 MB answer's memory */
    dl_buf_t *wb = c->tls ? &c->cout : &c->out;
    if (wb->len == 0 && wr->buf.cap > wb->cap && wr->buf.cap <= KEEP_BUF_MAX) {
        dl_buf_t t = *wb;
        *wb = wr->buf;
        dl_buf_reset(wb);
        wr->buf = t;
    }
    dl_buf_free(&wr->buf);
    dl_free(wr);
    if (c->closed)
        return;
    if (status < 0) {
        dl_conn_close(c);
        return;
    }
    conn_drain(c);
    stream_room(c);
}

/* A streamed answer's writer that waits for room goes on once the unsent
 * bytes are under half the mark (called where writes complete). */
static void stream_room(dl_conn_t *c)
{
    if (!c->stream_wait || c->closed || c->active == NULL ||
        out_bytes(c) >= c->host->cfg->output_high_water / 2)
        return;
    c->stream_wait = 0;
    dl_req_stream_drained(c->active);
}

/* Reads the next chunk of the file body into out (out is empty). */
static int file_chunk(dl_conn_t *c)
{
    size_t n = (size_t)DL_MIN(c->file_left, (uint64_t)FILE_CHUNK);
    if (dl_buf_reserve(&c->out, n) != 0)
        return -1;
    ssize_t got;
    do {
        got = pread(c->file_fd, c->out.data, n, (off_t)c->file_off);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) /* the file shrank or failed: the length promised cannot be kept */
        return -1;
    c->out.len = (size_t)got;
    c->file_off += (uint64_t)got;
    c->file_left -= (uint64_t)got;
    return 0;
}

static void file_done(dl_conn_t *c)
{
    close(c->file_fd);
    c->file_fd = -1;
}

static void conn_flush(dl_conn_t *c)
{
    /* a client that reads as fast as we write would keep a big body's loop
     * going here while the worker's other connections wait: after this many
     * pieces the next one waits for the write callback, a turn of the loop */
    int rounds = 0;
again:
    if (c->closed)
        return;
    if (c->h2 && !c->in_feed && !c->closing) {
        /* streams that waited while the unsent answers were over the mark run
         * first; in_feed keeps an answer made at once from flushing in here */
        c->in_feed = 1;
        c->host->h2->run_queued(c->h2);
        c->in_feed = 0;
        if (c->closed)
            return;
        if (c->host->h2->send(c->h2) != 0)
            c->closing = 1; /* the session is over once what it queued is written */
    }
    if (c->writing)
        return;
    if (c->out.len == 0 && c->file_fd >= 0) {
        if (c->file_left == 0) {
            file_done(c);
            after_response(c, c->file_keep);
            return;
        }
        if (file_chunk(c) != 0) {
            dl_log(DL_LOG_ERROR, "cannot read a file body; closing the connection");
            dl_conn_close(c);
            return;
        }
    }
    dl_buf_t *wb = &c->out;
    if (c->tls) {
        /* out is plaintext: it leaves as TLS records, appended to cout */
        if (c->out.len && dl_tls_write(c->tls, c->out.data, c->out.len) != 0) {
            dl_conn_close(c);
            return;
        }
        dl_buf_reset(&c->out);
        wb = &c->cout;
    }
    if (wb->len == 0) {
        if (c->closing)
            conn_finish_close(c);
        else
            stream_room(c);
        return;
    }
    /* uv_buf_t lengths are unsigned int: a body over 4 GiB goes in pieces */
    uv_buf_t b = uv_buf_init(wb->data, (unsigned)DL_MIN(wb->len, (size_t)MAX_WRITE));
    int n = ++rounds > FLUSH_ROUNDS ? UV_EAGAIN : uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0 && (size_t)n < wb->len && n == (int)b.len) {
        dl_buf_consume(wb, (size_t)n); /* one piece of a huge buffer went */
        goto again;
    }
    if (n > 0 && (size_t)n == wb->len) {
        if (wb->cap > KEEP_BUF_MAX)
            dl_buf_free(wb); /* a big answer's buffer is not kept while idle */
        else
            dl_buf_reset(wb);
        if (c->file_fd >= 0 || (c->h2 && !c->in_feed && !c->closing))
            goto again; /* the next chunk of a file body, more HTTP/2 frames */
        if (c->closing)
            conn_finish_close(c);
        else
            stream_room(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        dl_conn_close(c);
        return;
    }
    if (n > 0)
        dl_buf_consume(wb, (size_t)n);
    write_req_t *wr = dl_malloc(sizeof(*wr));
    if (wr == NULL) {
        dl_conn_close(c);
        return;
    }
    wr->conn = c;
    wr->buf = *wb;
    dl_buf_init(wb);
    uv_buf_t bufs[8];
    unsigned nbufs = 0;
    for (size_t off = 0; off < wr->buf.len && nbufs < 8; nbufs++) {
        size_t piece = DL_MIN(wr->buf.len - off, (size_t)MAX_WRITE);
        bufs[nbufs] = uv_buf_init(wr->buf.data + off, (unsigned)piece);
        off += piece;
    }
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write) != 0) {
        dl_buf_free(&wr->buf);
        dl_free(wr);
        dl_conn_close(c);
        return;
    }
    c->writing = wr->buf.len;
    /* the client must take this write in time, however many requests it
     * sends meanwhile: the deadline moves only when a write completes (the
     * loop's clock is refreshed: this turn may have written for a while) */
    uv_update_time(c->host->loop);
    c->send_deadline = uv_now(c->host->loop) + c->host->cfg->send_timeout_ms;
    c->send_queued = unsent_bytes(c);
}

/* ================================================================== reading */

void dl__conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    dl_conn_t *c = h->data;
    DL_UNUSED(suggested);
    buf->base = c->host->read_buf;
    buf->len = c->host->read_buf_len;
}

static void h2_flush(void *conn)
{
    conn_flush(conn);
}

static int h2_in_feed(void *conn)
{
    return ((dl_conn_t *)conn)->in_feed;
}

static void h2_start(dl_conn_t *c)
{
    dl_stream_io_t io = {.conn = c,
                         .out = &c->out,
                         .loop = c->host->loop,
                         .flush = h2_flush,
                         .in_feed = h2_in_feed};
    c->h2 = c->host->h2->start(&io, &c->base, c->host->h2_arg);
    if (c->h2 == NULL) {
        dl_conn_close(c);
        return;
    }
    c->state = DL_CS_IDLE;
    c->deadline = 0; /* h2.c keeps the session's timeouts */
}

static void h2_input(dl_conn_t *c, const char *data, size_t n)
{
    c->in_feed = 1;
    int rc = c->host->h2->feed(c->h2, data, n);
    c->in_feed = 0;
    if (rc != 0 && c->h2) {
        c->host->h2->send(c->h2); /* the GOAWAY nghttp2 queued, then close */
        c->closing = 1;
    }
}

/* Plaintext from the socket or from TLS: to HTTP/2, or to llhttp. */
static void conn_input(dl_conn_t *c, const char *data, size_t n)
{
    if (c->closed || c->closing)
        return;
    if (c->fresh && c->tls) {
        c->fresh = 0; /* ALPN decided, before any application data */
        if (dl_tls_is_h2(c->tls))
            h2_start(c);
        if (c->closed)
            return;
    }
    if (c->h2) {
        h2_input(c, data, n);
        return;
    }
    if (c->fresh) {
        /* a plain connection whose first bytes are the HTTP/2 preface is h2c
         * (prior knowledge); a partial match waits for more bytes */
        size_t have = c->pending.len;
        size_t m = DL_MIN(have + n, (size_t)H2_PREFACE_LEN);
        int match = memcmp(c->pending.data ? c->pending.data : "", h2_preface,
                           DL_MIN(have, m)) == 0 &&
                    (m <= have || memcmp(data, h2_preface + have, m - have) == 0);
        if (match && have + n < H2_PREFACE_LEN) {
            dl_buf_append(&c->pending, data, n);
            return;
        }
        c->fresh = 0;
        if (match) {
            h2_start(c);
            if (c->closed)
                return;
            if (have) {
                dl_buf_append(&c->pending, data, n);
                dl_buf_t all = c->pending;
                dl_buf_init(&c->pending);
                h2_input(c, all.data, all.len);
                dl_buf_free(&all);
            } else {
                h2_input(c, data, n);
            }
            return;
        }
    }
    if (c->pending.len == 0 && c->state != DL_CS_BUSY) {
        size_t used = conn_feed(c, data, n);
        if (used < n && !c->closed && !c->closing)
            dl_buf_append(&c->pending, data + used, n - used);
    } else {
        dl_buf_append(&c->pending, data, n);
        if (c->state != DL_CS_BUSY) {
            size_t used = conn_feed(c, c->pending.data, c->pending.len);
            dl_buf_consume(&c->pending, used);
        }
    }
}

/* Counts a TLS connection that ended before or in its handshake. */
static void tls_failed(dl_conn_t *c, const char *reason)
{
    dl_http1_host_t *h = c->host;
    const char *labels[1] = {reason};
    if (h->metrics)
        dl_metric_add(h->metrics, h->core->worker_id, h->metric_tls_failures, labels, 1);
}

static void on_tls_plain(void *arg, const char *data, size_t n)
{
    conn_input(arg, data, n);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    dl_conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF: a request cut short needs no answer; a parked one runs detached */
        dl_conn_close(c);
        return;
    }
    size_t n = (size_t)nread;
    if (c->tls) {
        int rc = dl_tls_read(c->tls, buf->base, n, on_tls_plain, c);
        if (rc == DL_EPLAIN) {
            /* answered in plain HTTP, as nginx does, so the mistake is visible */
            tls_failed(c, "plain_http");
            dl_tls_free(c->tls);
            c->tls = NULL;
            c->fresh = 0;
            send_error(c, 400, "plain HTTP request sent to a TLS port; use https://");
            return;
        }
        if (rc != 0 && !c->closed) {
            if (rc == DL_EPROTO)
                dl_log(DL_LOG_DEBUG, "TLS connection closed: %s", dl_tls_error(c->tls));
            if (rc == DL_EPROTO && c->fresh)
                tls_failed(c, "protocol");
            if (c->h2 && rc == DL_EOF)
                c->host->h2->send(c->h2); /* answers already submitted still go out */
            else
                dl_buf_reset(&c->out); /* TLS is broken: only its alert (in cout) goes */
            c->closing = 1;
            c->pending.len = 0;
        } else if (!c->closed && c->fresh && dl_tls_ready(c->tls)) {
            conn_input(c, "", 0); /* handshake done: h2 sends its SETTINGS now */
        }
    } else {
        conn_input(c, buf->base, n);
    }
    if (c->closed)
        return;
    if (c->pending.oom) {
        dl_conn_close(c);
        return;
    }
    conn_drain(c);
}

/* ================================================================ lifecycle */

void dl_conn_start(dl_http1_host_t *h, dl_conn_t *c, int listener, struct dl_tls_ctx_s *tls_ctx)
{
    uv_once(&settings_once, init_settings);
    c->host = h;
    c->base.proto = &http1_proto;
    c->base.ctx = h->core;
    c->file_fd = -1;
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    c->listener = listener;
    if (tls_ctx) {
        c->tls = dl_tls_new(tls_ctx, &c->cout);
        if (c->tls == NULL) {
            dl_conn_close(c);
            return;
        }
    }
    /* the peer once per connection: req.ip reads it without a syscall */
    struct sockaddr_storage ss;
    int sslen = (int)sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) != 0 ||
        dl_ip_from_sockaddr((const struct sockaddr *)&ss, &c->base.peer.ip) != 0) {
        dl_conn_close(c); /* gone already (ENOTCONN) */
        return;
    }
    c->base.peer.known = 1;
    c->base.peer.tls = c->tls != NULL;
    const dl_config_t *cfg = h->cfg;
    c->base.tls = c->tls != NULL;
    c->base.https_redirect = cfg->listen_opts[listener].https_redirect != 0;
    /* TLS: ALPN still to decide; plain: may be h2c */
    c->fresh = c->tls != NULL || (cfg->http2 && !c->base.https_redirect);
    c->state = DL_CS_HEAD;
    c->deadline = uv_now(h->loop) + cfg->header_timeout_ms;
    if (uv_read_start((uv_stream_t *)&c->tcp, dl__conn_alloc, on_read) != 0)
        dl_conn_close(c);
}

/* Ends a connection with nothing in flight: a TLS one sends close_notify
 * first (RFC 9112 9.8) and closes once it is written; a second call, or a
 * connection with a write stuck, closes at once. */
static void conn_end(dl_conn_t *c)
{
    if (c->tls && dl_tls_ready(c->tls) && !c->writing && !c->closing) {
        c->closing = 1;
        conn_flush(c);
        return;
    }
    dl_conn_close(c);
}

void dl_conn_sweep(dl_conn_t *c, uint64_t now)
{
    if (c->closed)
        return;
    const dl_config_t *cfg = c->host->cfg;
    if (c->writing && c->send_deadline && now >= c->send_deadline) {
        /* a big write the client takes slowly but steadily is not stuck: any
         * progress since the last look moves the deadline */
        size_t queued = unsent_bytes(c);
        if (queued + cfg->body_min_bytes <= c->send_queued) {
            c->send_queued = queued;
            c->send_deadline = now + cfg->send_timeout_ms;
        } else {
            conn_abort(c); /* the client takes (next to) nothing of what we send */
            return;
        }
    }
    if (c->h2) {
        /* answers the sweep gives (408) are flushed after it, never inside it:
         * a failed write would close the connection under the sweep's feet */
        c->in_feed = 1;
        int rc = c->host->h2->sweep(c->h2, now);
        c->in_feed = 0;
        if (rc != 0) {
            c->host->h2->send(c->h2); /* its GOAWAY, then close_notify */
            conn_end(c);
            return;
        }
        conn_flush(c); /* answers (408) and GOAWAYs the sweep queued */
        return;
    }
    if (c->state == DL_CS_BODY && !c->closing) {
        if (now - c->window_start >= cfg->body_timeout_ms) {
            if (c->window_bytes < cfg->body_min_bytes) {
                send_error(c, 408, "request body arrived too slowly");
                return;
            }
            c->window_start = now;
            c->window_bytes = 0;
        }
        return;
    }
    if (c->deadline == 0 || now < c->deadline)
        return;
    if (c->writing && !(c->tls && c->fresh))
        return; /* a write in flight has the send deadline (a handshake keeps both) */
    if (c->state == DL_CS_HEAD && !c->closing && !c->writing &&
        (c->req != NULL || c->pending.len > 0)) {
        send_error(c, 408, "request head not received in time");
        return;
    }
    if (c->state == DL_CS_BUSY && !c->writing)
        return;
    if (c->tls && c->fresh) {
        tls_failed(c, "timeout"); /* the handshake did not finish in time */
        dl_conn_close(c);
        return;
    }
    conn_end(c); /* keep-alive or lingering time is up */
}

void dl_conn_stop(dl_conn_t *c)
{
    c->stopping = 1;
    c->base.stopping = 1;
    if (c->closed)
        return;
    if (c->h2) {
        c->host->h2->shutdown(c->h2); /* GOAWAY; streams in flight finish first */
        conn_flush(c);
        return;
    }
    if ((c->state == DL_CS_IDLE || (c->state == DL_CS_HEAD && c->req == NULL &&
                                    c->pending.len == 0)) &&
        !c->writing && c->out.len == 0)
        conn_end(c);
}
