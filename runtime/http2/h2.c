/*
 * h2.c - HTTP/2 connections, over libnghttp2.
 *
 * nghttp2 owns the framing, HPACK, stream states and flow control; this file
 * maps streams onto the request model of conn.c. A stream's HEADERS build a
 * dl_req_t the way llhttp's callbacks do (target first in `head`, then the
 * header spans), its DATA go to the body or the upload sink, and END_STREAM
 * dispatches it. Answers are submitted with a data source that hands nghttp2
 * the body without copying (NO_COPY: frame header and payload are appended to
 * the connection's output buffer in one go) or reads the file a frame at a time.
 *
 * Output is pulled, never pushed: dl_h2_send() runs nghttp2_session_send()
 * only while the output buffer is below OUT_HIGH, so a client that does not
 * read keeps at most that much queued; the connection calls it again each
 * time a write completes. Answers copied for streams count too: while they
 * are over OUT_HIGH a complete stream's handler waits (dl_h2_run_queued), and
 * request bodies held in memory are capped per connection (shed_body).
 *
 * Defences, beyond nghttp2's own (HPACK limits, frame sizes, outbound-ACK cap,
 * the CVE-2023-44487 reset rate limit, the CONTINUATION cap):
 * - a stream is refused (REFUSED_STREAM) while max_streams handlers are still
 *   running on this connection, counting those whose streams the client reset,
 *   so opening and cancelling streams cannot pile up work;
 * - control frames that cost us work and give the client nothing (PING,
 *   SETTINGS, PRIORITY, empty DATA, refused or rejected streams) draw from a
 *   token bucket; an empty bucket ends the connection with ENHANCE_YOUR_CALM;
 * - header lists are capped at max_header_bytes/max_headers as they decode
 *   (431), so an HPACK bomb costs one table lookup per field;
 * - the sweep closes connections whose peer keeps a window at zero
 *   (send_timeout_ms), stalls a header block or trickles a body.
 */
#include "http2/h2.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "common/compress.h"
#include "common/internal.h"
#include "common/list.h"
#include "common/metrics.h"
#include "core/router.h"
#include "core/upload.h"

#define OUT_HIGH(h) ((h)->cfg->output_high_water) /* no more frames above this output */
#define STREAM_WINDOW (1024 * 1024)    /* what a client may send per stream unread */
#define CONN_WINDOW (16 * 1024 * 1024) /* and on the whole connection */
#define BODIES_MAX (16 * 1024 * 1024)  /* request bodies held in memory per connection */
#define FLOOD_BURST 1000.0             /* control frames allowed at once */
#define FLOOD_RATE 100.0               /* and per second after that */
#define MAX_CONTINUATIONS 8
#define BOMB_COST 100.0                /* tokens a header list 4x over the limit costs */
#define DISCARD_MAX (16 * 1024 * 1024) /* body read and dropped after an early answer */

typedef struct h2_stream_s {
    int32_t id;
    dl_h2_t *h;
    dl_list_t link;        /* in h->streams, newest first */
    dl_req_t *req;         /* until answered (or freed with the stream) */
    uint64_t start, window_start;
    size_t window_bytes;
    int err_status;        /* rejected while arriving: answered once the headers are in */
    const char *err_msg;
    char err_buf[200];
    char authority[300];   /* a DNS name (253), ':' and a port fit */
    size_t authority_len;
    size_t decoded;        /* HPACK-decoded bytes of its header block, 32 a field more */
    unsigned has_authority : 1;
    unsigned headers_done : 1;
    unsigned ended : 1;      /* END_STREAM received */
    unsigned dispatched : 1; /* its handler runs */
    unsigned closed : 1;     /* nghttp2 closed the stream */
    unsigned sending : 1;    /* a response body is being sent */
    unsigned refused : 1;
    unsigned early : 1;      /* answered before the body ended: the rest is dropped */
    unsigned queued : 1;     /* complete, its handler waits for the output to drain */
    size_t held;             /* body bytes kept in memory (counted in body_held) */
    size_t discarded;
    /* the response body: a copy, or a file read a frame at a time */
    dl_buf_t body;
    size_t body_off;
    int file_fd;
    uint64_t file_off, file_left;
} h2_stream_t;

struct dl_h2_s {
    dl_core_conn_t base; /* first: the core's view of every stream's connection */
    dl_h2_io_t io;       /* the byte stream under the session */
    const dl_config_t *cfg;
    nghttp2_session *s;
    dl_list_t streams; /* h2_stream_t.link, newest first */
    int n_open;      /* streams nghttp2 has open */
    int running;     /* dispatched handlers not answered yet, reset streams included */
    int n_sending;
    int n_queued;        /* complete streams waiting for the output to drain */
    size_t resp_held;    /* answer bytes copied for streams and not yet framed */
    size_t body_held;    /* request body bytes kept in memory, at most BODIES_MAX */
    double tokens;
    uint64_t tokens_at;
    uint64_t idle_since, stall_since;
    int continuations;
    unsigned progress : 1, blocked : 1, goaway : 1, ever_stream : 1, in_send : 1;
    unsigned ending : 1; /* terminated: the GOAWAY goes out even past OUT_HIGH */
    dl_buf_t nv_mem;     /* an answer's HEADERS as nghttp2_nv (dl_h2_response_nv) */
    const dl_h2_metrics_t *m; /* the server's, or NULL */
};

static const dl_proto_t h2_proto;
static void not_sent(dl_h2_t *h, struct h2_stream_s *st);
static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
static uv_once_t init_once = UV_ONCE_INIT;

static uint64_t now_ms(dl_h2_t *h)
{
    return uv_now(h->io.loop);
}

/* ================================================================= streams */

/*
 * Request bodies kept in memory (not uploads, which go to disk) are counted
 * per connection until their request is answered or dropped: past BODIES_MAX
 * the newest body still arriving is answered 503 (shed_body), so a connection
 * holds at most that much however many streams it opens (100 streams of 1 MB
 * would otherwise sit in memory at once). Flow control stays nghttp2's: a
 * window held back until requests end would starve every stream of a client
 * that spreads its uploads, since a WINDOW_UPDATE only goes out once half the
 * window is consumed.
 */
static void release_body(dl_h2_t *h, h2_stream_t *st)
{
    h->body_held -= st->held;
    st->held = 0;
}

static void stream_free(dl_h2_t *h, h2_stream_t *st)
{
    dl_list_remove(&st->link);
    if (st->req) {
        st->req->stream = NULL;
        if (st->dispatched) {
            st->req->conn = NULL; /* its handler runs on detached */
        } else {
            h->base.ctx->release(h->base.ctx, st->req);
        }
        st->req = NULL;
    }
    if (st->sending)
        h->n_sending--;
    if (st->queued)
        h->n_queued--;
    release_body(h, st);
    h->resp_held -= st->body.len - st->body_off;
    if (st->file_fd >= 0)
        close(st->file_fd);
    dl_buf_free(&st->body);
    dl_free(st);
}

int dl_h2_metrics_define(struct dl_metrics_s *m, dl_h2_metrics_t *out)
{
    static const char *const defence_label[] = {"defence"};
    out->metrics = m;
    out->defences = dl_metric_define(m, DL_METRIC_COUNTER, "devloop_http2_defences_total",
                                     "HTTP/2 streams refused and connections ended by a "
                                     "defence (flood, rapid_reset, hpack_bomb, "
                                     "continuation, stall, protocol)",
                                     defence_label, 1, NULL, 0);
    return out->defences < 0 ? -1 : 0;
}

/* Counts a defence that fired, for devloop_http2_defences_total. */
static void defence(dl_h2_t *h, const char *kind)
{
    const char *labels[1] = {kind};
    if (h->m && h->m->metrics && h->m->defences >= 0)
        dl_metric_add(h->m->metrics, h->base.ctx->worker_id, h->m->defences, labels, 1);
}

/* A control frame, or a stream that cost work for nothing: one token. */
static int flooded(dl_h2_t *h)
{
    uint64_t now = now_ms(h);
    h->tokens += (double)(now - h->tokens_at) * FLOOD_RATE / 1000.0;
    if (h->tokens > FLOOD_BURST)
        h->tokens = FLOOD_BURST;
    h->tokens_at = now;
    if (h->tokens < 1.0) {
        dl_log(DL_LOG_WARN, "HTTP/2 client floods control frames; closing its connection");
        defence(h, "flood");
        h->ending = 1;
        nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
        return 1;
    }
    h->tokens -= 1.0;
    return 0;
}

static void stream_reject(h2_stream_t *st, int status, const char *msg)
{
    if (st->err_status)
        return;
    st->err_status = status;
    snprintf(st->err_buf, sizeof(st->err_buf), "%s", msg);
    st->err_msg = st->err_buf;
}

/* Answers a stream that was rejected while it arrived (413, 431, 400...). */
static void answer_rejected(h2_stream_t *st)
{
    dl_req_t *r = st->req;
    if (r == NULL || st->dispatched)
        return;
    if (flooded(st->h)) /* a stream that is refused costs a token */
        return;
    if (r->id[0] == '\0')
        dl_request_id_new(st->h->base.ctx->prng, r->id);
    if (!st->ended)
        st->early = 1;
    st->dispatched = 1;
    st->h->running++;
    ++*st->h->base.ctx->n_requests;
    dl_req_respond_error(r, st->err_status, st->err_msg);
}

/* ========================================================= nghttp2 callbacks */

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    DL_UNUSED(s);
    dl_h2_t *h = ud;
    switch (hd->type) {
    case NGHTTP2_CONTINUATION:
        if (++h->continuations > MAX_CONTINUATIONS) {
            dl_log(DL_LOG_WARN, "HTTP/2 client sent a header block in over %d CONTINUATION "
                                "frames; closing its connection",
                   MAX_CONTINUATIONS);
            defence(h, "continuation");
            h->ending = 1;
            nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_HEADERS:
        h->continuations = 0;
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK) && flooded(h))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        break;
    case NGHTTP2_PRIORITY:
        if (flooded(h))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        break;
    case NGHTTP2_DATA:
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM) && flooded(h))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        break;
    default:
        break;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    dl_h2_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: ignored */
    h2_stream_t *st = dl_calloc(1, sizeof(*st));
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    st->id = f->hd.stream_id;
    st->h = h;
    st->file_fd = -1;
    st->start = st->window_start = now_ms(h);
    dl_list_insert_head(&h->streams, &st->link);
    h->n_open++;
    h->ever_stream = 1;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    /* handlers of reset streams still count: opening and cancelling in a loop
     * (rapid reset) cannot start more work than max_streams at a time */
    if (h->running >= h->cfg->h2_max_streams) {
        st->refused = 1;
        defence(h, "rapid_reset");
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return flooded(h) ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    st->req = h->base.ctx->acquire(h->base.ctx);
    if (st->req == NULL) {
        st->refused = 1;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    dl_req_t *r = st->req;
    r->conn = &h->base;
    r->client.peer = h->base.peer;
    r->stream = st;
    r->start_ns = uv_hrtime();
    r->http_major = 2;
    r->http_minor = 0;
    r->keep_alive = 1;
    return 0;
}

static int add_header(h2_stream_t *st, const char *n, size_t nlen, const char *v, size_t vlen)
{
    dl_req_t *r = st->req;
    const dl_config_t *cfg = st->h->cfg;
    if (r->n_headers >= cfg->max_headers)
        return 431;
    return dl_req_header_add(r, n, nlen, v, vlen) != 0 ? 503 : 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    DL_UNUSED(flags);
    DL_UNUSED(ud);
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are ignored */
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL || st->req == NULL)
        return 0;
    dl_req_t *r = st->req;
    const dl_config_t *cfg = st->h->cfg;
    /* The decoded size (RFC 9113's 32 bytes of overhead a field) is what an
     * HPACK bomb inflates, so it is checked before anything is copied. Far
     * over the limit: nghttp2 validates every decoded byte, so the stream is
     * reset now, which makes it skip the rest of the block, and the client
     * pays. */
    st->decoded += nlen + vlen + 32;
    if (st->decoded > 4 * (cfg->max_header_bytes + 32 * (size_t)cfg->max_headers)) {
        defence(st->h, "hpack_bomb");
        st->h->tokens -= BOMB_COST;
        if (flooded(st->h))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    const char *n = (const char *)name, *v = (const char *)value;
    /* the fields count as on HTTP/1 (http1/conn.c): name and value bytes
     * against max_header_bytes, the target (here pseudo-headers) apart; over
     * it, answered 431 once the block ends */
    if (nlen == 0 || n[0] != ':') {
        r->header_bytes += nlen + vlen;
        if (r->header_bytes > cfg->max_header_bytes) {
            stream_reject(st, 431, "request headers too large");
            return 0;
        }
    }
    if (st->err_status)
        return 0;
    if (nlen > 0 && n[0] == ':') {
        if (nlen == 7 && memcmp(n, ":method", 7) == 0) {
            const char *msg = NULL;
            r->method_name = dl_http_method_static(v, vlen, &msg);
            if (r->method_name == NULL)
                stream_reject(st, 400, msg); /* as HTTP/1 and in-process requests */
            else
                r->method = dl_method_from_name(v, vlen);
        } else if (nlen == 5 && memcmp(n, ":path", 5) == 0) {
            /* pseudo-headers come first: the target opens `head` as in HTTP/1 */
            if (vlen > cfg->max_uri) {
                stream_reject(st, 414, "request target too long");
                return 0;
            }
            dl_buf_reset(&r->head);
            dl_buf_append(&r->head, v, vlen);
            r->url_len = (uint32_t)vlen;
        } else if (nlen == 10 && memcmp(n, ":authority", 10) == 0) {
            /* kept whole or refused: a cut one could equal a Host naming
             * another server */
            if (vlen > sizeof(st->authority)) {
                stream_reject(st, 400, ":authority too long");
                return 0;
            }
            st->has_authority = 1;
            st->authority_len = vlen;
            memcpy(st->authority, v, vlen);
        }
        return 0;
    }
    int rc = add_header(st, n, nlen, v, vlen);
    if (rc == 431)
        stream_reject(st, 431, "too many request headers");
    else if (rc)
        stream_reject(st, 503, "out of memory");
    return 0;
}

static void dispatch(h2_stream_t *st)
{
    dl_h2_t *h = st->h;
    dl_req_t *r = st->req;
    /* answers waiting for the client are over the mark: this handler runs
     * once they drain (dl_h2_run_queued), as HTTP/1.1 stops parsing */
    if (h->resp_held >= OUT_HIGH(h)) {
        if (!st->queued) {
            st->queued = 1;
            h->n_queued++;
        }
        return;
    }
    if (st->queued) {
        st->queued = 0;
        h->n_queued--;
    }
    if (r->upload) {
        int rc = dl_upload_finish(r->upload);
        if (rc != 0) {
            stream_reject(st, dl_upload_status(rc), dl_upload_error(r->upload));
            answer_rejected(st);
            return;
        }
    }
    st->dispatched = 1;
    h->running++;
    dl_req_dispatch(&h->base, r);
}

static int shed_body(dl_h2_t *h)
{
    h2_stream_t *newest = NULL; /* older bodies, further along, can still end */
    dl_list_t *it;
    dl_list_foreach(it, &h->streams) {
        h2_stream_t *st = dl_list_entry(it, h2_stream_t, link);
        if (st->held && !st->dispatched && !st->ended && (newest == NULL || st->id > newest->id))
            newest = st;
    }
    if (newest == NULL)
        return 0;
    defence(h, "bodies");
    stream_reject(newest, 503, "too many request bodies arriving at once on this connection; "
                               "send fewer in parallel");
    answer_rejected(newest);
    release_body(h, newest);
    return 1;
}

/* END_HEADERS of a request: the request is complete but for its body. */
static void headers_done(h2_stream_t *st, int end_stream)
{
    dl_h2_t *h = st->h;
    dl_req_t *r = st->req;
    st->headers_done = 1;
    if (r == NULL)
        return;
    size_t hlen;
    const char *host = dl_req_header(r, "host", &hlen);
    if (!st->err_status && st->authority_len && host == NULL &&
        add_header(st, "host", 4, st->authority, st->authority_len) != 0)
        stream_reject(st, 431, "too many request headers");
    /* RFC 9113 8.3.1: a Host that names another server than :authority (an
     * empty one included) makes the request malformed; which of the two a
     * proxy in front used is anyone's guess */
    if (!st->err_status && st->has_authority && host &&
        !dl_strncasecmp_eq(host, hlen, st->authority, st->authority_len))
        stream_reject(st, 400, "Host differs from :authority");
    if (!st->err_status) {
        const char *msg = NULL;
        int status = dl_req_begin(&h->base, r, !end_stream, &msg);
        if (status)
            stream_reject(st, status, msg);
    }
    /* refused on its head (auth): answered now, its DATA dropped as they
     * come (then RST_STREAM past DISCARD_MAX), no 100, no upload file */
    if (!st->err_status && r->early_status) {
        if (!end_stream)
            st->early = 1;
        dispatch(st);
        return;
    }
    if (!st->err_status) {
        size_t cl_len;
        const char *cl = dl_req_header(r, "content-length", &cl_len);
        if (cl && strtoull(cl, NULL, 10) > r->body_limit)
            stream_reject(st, 413, "request body too large");
    }
    /* Expect judged by the core's rule, as on HTTP/1 and in process */
    size_t elen = 0;
    const char *expect = st->err_status ? NULL : dl_req_header(r, "expect", &elen);
    int cont = expect ? dl_req_expect_check(expect, elen) : 0;
    if (cont < 0)
        stream_reject(st, 417, "only Expect: 100-continue is supported");
    if (st->err_status) {
        answer_rejected(st);
        return;
    }
    if (end_stream) {
        dispatch(st);
    } else if (cont == 1 && r->route_status == DL_ROUTE_FOUND) {
        /* an interim 100 HEADERS, only when the body will be read (RFC 9110 10.1.1) */
        nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
        nghttp2_submit_headers(h->s, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    }
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    dl_h2_t *h = ud;
    h2_stream_t *st = f->hd.stream_id ? nghttp2_session_get_stream_user_data(s, f->hd.stream_id)
                                      : NULL;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        h->continuations = 0;
        if (st == NULL)
            break;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (end)
                st->ended = 1;
            if (st->refused) {
                break;
            }
            headers_done(st, end);
        } else if (end && !st->ended) { /* trailers end the body */
            st->ended = 1;
            if (st->req && !st->dispatched && !st->err_status)
                dispatch(st);
        }
        break;
    case NGHTTP2_DATA:
        if (st && end && !st->ended) {
            st->ended = 1;
            if (st->req && !st->dispatched && !st->err_status && st->headers_done)
                dispatch(st);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    DL_UNUSED(flags);
    DL_UNUSED(ud);
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    st->window_bytes += len;
    /* After an early answer (413...) the rest of the body is read and dropped, so
     * the client sees the answer once its upload ends: curl reports a stream
     * error, not the answer, when a RST_STREAM(NO_ERROR) (RFC 9113 8.1) cuts
     * its upload. Past DISCARD_MAX the stream is reset all the same. */
    if (st->early && (st->discarded += len) > DISCARD_MAX) {
        st->early = 0;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
    }
    dl_req_t *r = st->req;
    if (r == NULL || st->dispatched || st->err_status || !st->headers_done || r->early_status)
        return 0; /* answered already (or about to be): the rest is dropped */
    if (r->body_seen + len > r->body_limit) {
        stream_reject(st, 413, "request body too large");
        answer_rejected(st);
        return 0;
    }
    r->body_seen += len;
    if (r->upload) {
        int rc = dl_upload_feed(r->upload, (const char *)data, len);
        if (rc != 0) {
            stream_reject(st, dl_upload_status(rc), dl_upload_error(r->upload));
            answer_rejected(st);
        }
        return 0;
    }
    if (dl_buf_append(&r->body, data, len) != 0) {
        stream_reject(st, 503, "out of memory");
        answer_rejected(st);
        return 0;
    }
    st->held += len;
    st->h->body_held += len;
    /* over BODIES_MAX: the newest bodies still arriving are answered 503 and
     * dropped, so the older ones, further along, can end */
    while (st->h->body_held > BODIES_MAX && shed_body(st->h))
        ;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    DL_UNUSED(code);
    dl_h2_t *h = ud;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    st->closed = 1;
    h->n_open--;
    if (h->n_open == 0)
        h->idle_since = now_ms(h);
    if (st->sending) {
        st->sending = 0;
        h->n_sending--;
    }
    /* a handler still running keeps the stream (and its place in `running`)
     * until it answers; the answer is then dropped */
    if (!(st->dispatched && st->req))
        stream_free(h, st);
    return 0;
}

/* A GOAWAY for a protocol error (a bad preface, an oversized frame, HPACK or
 * flow-control errors...), whoever found it, is a defence that ended a connection. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    DL_UNUSED(s);
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR &&
        f->goaway.error_code != NGHTTP2_ENHANCE_YOUR_CALM) /* counted where it was found */
        defence(ud, "protocol");
    return 0;
}

/* A response's HEADERS nghttp2 could not frame: the stream is reset now
 * (not_sent), so its data source never holds the connection's sweep. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud)
{
    dl_h2_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_RESPONSE)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    dl_log(DL_LOG_ERROR, "HTTP/2 could not send an answer's HEADERS on stream %d (%s); "
                         "stream reset", (int)f->hd.stream_id, nghttp2_strerror(err));
    if (st)
        not_sent(h, st);
    return 0;
}

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    DL_UNUSED(s);
    DL_UNUSED(flags);
    dl_h2_t *h = ud;
    dl_buf_t *out = h->io.out;
    if (out->len >= OUT_HIGH(h) && !h->ending) {
        h->blocked = 1;
        return NGHTTP2_ERR_WOULDBLOCK;
    }
    if (dl_buf_append(out, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

/* The body's next piece: counted here, copied in on_send_data (NO_COPY). */
static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    DL_UNUSED(s);
    DL_UNUSED(id);
    DL_UNUSED(buf);
    h2_stream_t *st = src->ptr;
    dl_h2_t *h = ud;
    size_t left = st->file_fd >= 0 ? (size_t)DL_MIN(st->file_left, (uint64_t)SIZE_MAX)
                                   : st->body.len - st->body_off;
    size_t n = DL_MIN(len, left);
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == left) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->sending) {
            st->sending = 0;
            h->n_sending--;
        }
    }
    h->progress = 1;
    return (ssize_t)n;
}

static int on_send_data(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd, size_t len,
                        nghttp2_data_source *src, void *ud)
{
    DL_UNUSED(s);
    dl_h2_t *h = ud;
    dl_buf_t *out = h->io.out;
    h2_stream_t *st = src->ptr;
    if (out->len >= OUT_HIGH(h)) {
        h->blocked = 1;
        return NGHTTP2_ERR_WOULDBLOCK;
    }
    DL_ASSERT(f->data.padlen == 0);
    if (dl_buf_reserve(out, 9 + len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    dl_buf_append(out, framehd, 9);
    if (st->file_fd >= 0) {
        size_t got = 0;
        while (got < len) {
            ssize_t n = pread(st->file_fd, out->data + out->len + got, len - got,
                              (off_t)(st->file_off + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) { /* the file shrank or failed: the promised length cannot be kept */
                out->len -= 9;
                dl_log(DL_LOG_ERROR, "cannot read a file body; resetting HTTP/2 stream %d",
                       (int)st->id);
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
            got += (size_t)n;
        }
        out->len += len;
        st->file_off += len;
        st->file_left -= len;
    } else {
        dl_buf_append(out, st->body.data + st->body_off, len);
        st->body_off += len;
        h->resp_held -= len;
    }
    return 0;
}

static void init_once_cb(void)
{
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_send_callback(callbacks, on_send);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, on_send_data);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send);
    nghttp2_option_new(&options);
    /* nghttp2 1.57's defaults, explicit because the library may predate them */
    nghttp2_option_set_stream_reset_rate_limit(options, 1000, 33);
    /* ours (on_begin_frame) is the limit: Debian's 1.52 counts a CONTINUATION
     * twice when its frame header arrives in two reads (fixed upstream in 1.70) */
    nghttp2_option_set_max_continuations(options, 8 * MAX_CONTINUATIONS);
    nghttp2_option_set_max_outbound_ack(options, 1000);
    nghttp2_option_set_max_settings(options, 32);
}

/* ================================================================= session */

dl_h2_t *dl_h2_new(const dl_h2_io_t *io, const dl_core_conn_t *from, const dl_h2_metrics_t *m)
{
    uv_once(&init_once, init_once_cb);
    dl_h2_t *h = dl_calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    dl_list_init(&h->streams);
    h->io = *io;
    h->base = *from;
    h->base.proto = &h2_proto;
    h->cfg = from->ctx->cfg;
    h->m = m;
    h->tokens = FLOOD_BURST;
    h->tokens_at = h->idle_since = uv_now(io->loop);
    if (nghttp2_session_server_new2(&h->s, callbacks, h, options) != 0) {
        dl_free(h);
        return NULL;
    }
    const dl_config_t *cfg = h->cfg;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)(cfg->max_header_bytes + 32 * (size_t)cfg->max_headers)},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
        nghttp2_session_del(h->s);
        dl_free(h);
        return NULL;
    }
    return h;
}

void dl_h2_free(dl_h2_t *h)
{
    if (h == NULL)
        return;
    while (!dl_list_empty(&h->streams))
        stream_free(h, dl_list_entry(h->streams.next, h2_stream_t, link));
    nghttp2_session_del(h->s);
    dl_buf_free(&h->nv_mem);
    dl_free(h);
}

int dl_h2_feed(dl_h2_t *h, const char *data, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(h->s, (const uint8_t *)data, len);
    if (n < 0) {
        /* Our callbacks terminated the session already. nghttp2 queues a GOAWAY
         * for protocol errors but not for the floods it detects itself; a
         * second terminate is a no-op, so it is always asked for. */
        if (n == NGHTTP2_ERR_FLOODED || n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
            dl_log(DL_LOG_WARN, "HTTP/2 client floods (%s); closing its connection",
                   nghttp2_strerror((int)n));
            defence(h, n == NGHTTP2_ERR_FLOODED ? "flood" : "continuation");
            h->ending = 1;
            nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
        } else if (n != NGHTTP2_ERR_CALLBACK_FAILURE) {
            dl_log(DL_LOG_DEBUG, "HTTP/2 connection ends: %s", nghttp2_strerror((int)n));
            h->ending = 1;
            nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
        }
        return -1;
    }
    return 0;
}

int dl_h2_send(dl_h2_t *h)
{
    if (h->in_send)
        return 0;
    h->in_send = 1;
    h->blocked = 0;
    h->progress = 0;
    int rv = nghttp2_session_send(h->s);
    h->in_send = 0;
    if (rv != 0)
        return -1;
    if (h->progress || h->n_sending == 0)
        h->stall_since = 0; /* moving, or nothing left to send (a stalled stream was reset) */
    /* everything sendable went out, yet bodies wait: the peer's window is shut */
    if (!h->blocked && h->n_sending > 0 && h->stall_since == 0)
        h->stall_since = now_ms(h);
    if (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s))
        return -1;
    return 0;
}

int dl_h2_run_queued(dl_h2_t *h)
{
    int n = 0;
    while (h->n_queued > 0 && h->resp_held < OUT_HIGH(h)) {
        h2_stream_t *first = NULL; /* the oldest: streams are kept newest first */
        dl_list_t *it;
        dl_list_foreach(it, &h->streams) {
            h2_stream_t *st = dl_list_entry(it, h2_stream_t, link);
            if (st->queued)
                first = st;
        }
        if (first == NULL)
            break;
        dispatch(first);
        n++;
    }
    return n;
}

static void put_nv(nghttp2_nv *nv, const char *name, size_t nlen, const char *v, size_t vlen)
{
    nv->name = (uint8_t *)name;
    nv->namelen = nlen;
    nv->value = (uint8_t *)v;
    nv->valuelen = vlen;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

ssize_t dl_h2_response_nv(const dl_resp_wire_t *w, dl_buf_t *mem, nghttp2_nv **out)
{
    const dl_resp_t *resp = w->resp;
    /* sized from the answer: every field is sent, none cut (the core bounds
     * the handler's bytes, core/response.h DL_RESP_HEADERS_MAX) */
    size_t count = 1 + (size_t)w->n_fields, names = 0, nl, vl;
    const char *name, *v;
    dl_hdr_lines_t it;
    dl_hdr_lines_init(&it, resp->headers, resp->headers_len);
    while (dl_hdr_lines_next(&it, &name, &nl, &v, &vl)) {
        count++;
        names += nl;
    }
    size_t need = count * sizeof(nghttp2_nv) + 12 + names;
    dl_buf_reset(mem);
    if (dl_buf_reserve(mem, need) != 0)
        return -1;
    /* laid out once, never grown: nva, then the status digits, then the names */
    nghttp2_nv *nva = (nghttp2_nv *)(void *)mem->data;
    char *status = mem->data + count * sizeof(nghttp2_nv);
    char *lower = status + 12;
    mem->len = need;
    size_t n = 0;
    snprintf(status, 12, "%d", w->status);
    put_nv(&nva[n++], ":status", 7, status, strlen(status));
    for (int i = 0; i < w->n_fields; i++) {
        size_t len;
        const char *fname = dl_resp_field_name(w->fields[i].id, 1, &len);
        put_nv(&nva[n++], fname, len, w->fields[i].value, w->fields[i].value_len);
    }
    /* the handler's own headers, "Name: value\r\n" lines, names lowercased;
     * connection-specific ones never get here (dl_resp_header_reserved) */
    dl_hdr_lines_init(&it, resp->headers, resp->headers_len);
    while (dl_hdr_lines_next(&it, &name, &nl, &v, &vl)) {
        for (size_t i = 0; i < nl; i++)
            lower[i] = (char)dl_tolower((unsigned char)name[i]);
        put_nv(&nva[n++], lower, nl, v, vl);
        lower += nl;
    }
    *out = nva;
    return (ssize_t)n;
}

/* An answer that cannot go out (nghttp2 refused its HEADERS, at submit or
 * when framing them): the stream is reset, never left waiting for a body
 * that will not come (the sweep would take that for a shut window). */
static void not_sent(dl_h2_t *h, h2_stream_t *st)
{
    if (st->sending) {
        st->sending = 0;
        h->n_sending--;
    }
    h->resp_held -= st->body.len - st->body_off;
    st->body_off = st->body.len;
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* The core decided the answer (core/response.c); HTTP/2 submits it as frames. */
static void h2_write_response(dl_core_conn_t *base, dl_req_t *r, const dl_resp_wire_t *w)
{
    dl_h2_t *h = (dl_h2_t *)base;
    const dl_resp_t *resp = w->resp;
    h2_stream_t *st = r->stream;
    if (st)
        release_body(h, st); /* the request's body is done with */
    if (st == NULL || st->closed) {
        /* the client reset the stream while its handler ran */
        if (resp->has_file)
            close(resp->file_fd);
        if (st) {
            st->req = NULL;
            h->running -= st->dispatched;
            stream_free(h, st);
        }
        r->stream = NULL;
        return;
    }
    r->stream = NULL;
    st->req = NULL;
    if (st->dispatched)
        h->running--;
    if (w->status < 200) { /* an interim status cannot end an HTTP/2 stream */
        dl_log_req(DL_LOG_ERROR, r->id, "handler status %d cannot answer over HTTP/2; stream reset",
                   w->status);
        if (resp->has_file)
            close(resp->file_fd);
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    nghttp2_nv *nva;
    ssize_t n = dl_h2_response_nv(w, &h->nv_mem, &nva);
    if (n < 0) {
        dl_log_req(DL_LOG_ERROR, r->id, "out of memory for an answer's HEADERS; stream reset");
        if (resp->has_file)
            close(resp->file_fd);
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }

    nghttp2_data_provider prov = {.source.ptr = st, .read_callback = read_body};
    int with_body = !w->no_body && w->body_len > 0;
    if (resp->has_file) {
        if (with_body) {
            st->file_fd = resp->file_fd;
            st->file_off = resp->file_off;
            st->file_left = w->body_len;
        } else {
            close(resp->file_fd);
        }
    } else if (with_body && dl_buf_append(&st->body, w->body, w->body_len) != 0) {
        dl_buf_free(&st->body);
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (with_body) {
        if (!resp->has_file)
            h->resp_held += w->body_len; /* the copy, until it is framed */
        st->sending = 1;
        h->n_sending++;
    }
    int rv = nghttp2_submit_response(h->s, st->id, nva, (size_t)n, with_body ? &prov : NULL);
    if (h->nv_mem.cap > (64u << 10))
        dl_buf_free(&h->nv_mem); /* nghttp2 copied the fields; keep no huge buffer */
    if (rv != 0) {
        dl_log_req(DL_LOG_ERROR, r->id, "HTTP/2 refused the answer (%s); stream reset",
                   nghttp2_strerror(rv));
        not_sent(h, st);
    }
}

static void h2_finish(dl_core_conn_t *base, const dl_resp_wire_t *w)
{
    dl_h2_t *h = (dl_h2_t *)base;
    (void)w;
    if (!h->io.in_feed(h->io.conn))
        h->io.flush(h->io.conn);
}

static const dl_proto_t h2_proto = {
    .name = "HTTP/2",
    .write_response = h2_write_response,
    .finish = h2_finish,
};

int dl_h2_sweep(dl_h2_t *h, uint64_t now)
{
    const dl_config_t *cfg = h->cfg;
    if (h->stall_since && now - h->stall_since >= cfg->send_timeout_ms) {
        dl_log(DL_LOG_INFO, "HTTP/2 client kept its flow-control window shut for %llu ms; "
                            "closing its connection",
               (unsigned long long)(now - h->stall_since));
        defence(h, "stall");
        return -1;
    }
    dl_list_t *it, *next;
    dl_list_foreach_safe(it, next, &h->streams) {
        h2_stream_t *st = dl_list_entry(it, h2_stream_t, link);
        if (st->closed || st->refused)
            continue;
        if (!st->headers_done) { /* nothing else may be sent meanwhile: whole connection */
            if (now - st->start >= cfg->header_timeout_ms) {
                h->ending = 1;
                nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
                return 0; /* the GOAWAY goes out, then the session is over */
            }
            continue;
        }
        if (st->ended || (st->dispatched && st->req))
            continue; /* nothing more to receive, or a complete request in its handler */
        /* a body still arriving, or the rest of one answered early: at least
         * body_min_bytes per body_timeout_ms, or the stream ends */
        if (now - st->window_start < cfg->body_timeout_ms)
            continue;
        if (st->window_bytes >= cfg->body_min_bytes) {
            st->window_start = now;
            st->window_bytes = 0;
        } else if (st->req && !st->dispatched) {
            stream_reject(st, 408, "request body arrived too slowly");
            answer_rejected(st); /* flushed by the caller, after the sweep */
            st->window_start = now;
            st->window_bytes = 0;
        } else {
            /* answered, and the rest of the body stopped coming: stop waiting */
            st->early = 0;
            nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
            st->window_start = now;
        }
    }
    if (h->n_open == 0 && !h->goaway) {
        uint64_t limit = h->ever_stream ? cfg->keepalive_timeout_ms : cfg->header_timeout_ms;
        if (now - h->idle_since >= limit)
            dl_h2_shutdown(h);
    }
    return 0;
}

void dl_h2_shutdown(dl_h2_t *h)
{
    if (h->goaway)
        return;
    h->goaway = 1;
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

/* ------------------------------------------------------- the session table */

static void *session_start(const dl_stream_io_t *io, const dl_core_conn_t *from, void *arg)
{
    return dl_h2_new(io, from, arg);
}

static void session_end(void *s)
{
    dl_h2_free(s);
}

static int session_feed(void *s, const char *data, size_t len)
{
    return dl_h2_feed(s, data, len);
}

static int session_send(void *s)
{
    return dl_h2_send(s);
}

static int session_sweep(void *s, uint64_t now)
{
    return dl_h2_sweep(s, now);
}

static void session_shutdown(void *s)
{
    dl_h2_shutdown(s);
}

static int session_run_queued(void *s)
{
    return dl_h2_run_queued(s);
}

const dl_session_ops_t dl_h2_session = {
    .start = session_start,
    .end = session_end,
    .feed = session_feed,
    .send = session_send,
    .sweep = session_sweep,
    .shutdown = session_shutdown,
    .run_queued = session_run_queued,
};
