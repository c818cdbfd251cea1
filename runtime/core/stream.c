/*
 * stream.c - a streamed answer's body and end, on whatever protocol the
 * request came: pieces handed to the protocol with its back-pressure
 * answer, or collected when the protocol has no streams; the end recorded
 * once (metrics and access log see the whole stream) and the request let go.
 */
#include "core/stream.h"

#include <string.h>

#include "common/log.h"
#include "core/request.h"
#include "core/response.h"

/* A buffered stream's head, copied: the handler's buffers are reused. */
typedef struct {
    dl_resp_t resp;
    char data[]; /* content type, then header lines */
} saved_head_t;

static int stream_buffer(dl_req_t *r, const dl_resp_t *resp)
{
    saved_head_t *s = dl_malloc(sizeof(*s) + resp->content_type_len + resp->headers_len + 1);
    if (s == NULL)
        return DL_ENOMEM;
    s->resp = *resp;
    char *p = s->data;
    if (resp->content_type) {
        memcpy(p, resp->content_type, resp->content_type_len);
        s->resp.content_type = p;
        p += resp->content_type_len;
    }
    if (resp->headers_len)
        memcpy(p, resp->headers, resp->headers_len);
    s->resp.headers = resp->headers_len ? p : NULL;
    s->resp.body = NULL;
    s->resp.body_len = 0;
    r->stream_saved = s;
    r->streaming = DL_STREAM_BUFFERED;
    dl_buf_reset(&r->stream_buf);
    return 0;
}

int dl_req_stream_begin(dl_req_t *r, const dl_resp_t *resp)
{
    dl_core_conn_t *c = r->conn;
    if (c == NULL || c->closed)
        return DL_ECONNRESET;
    dl_resp_wire_t w;
    if (dl_resp_stream_head(r, resp, &w) != 0)
        return DL_EINVAL;
    r->filtered = 1; /* the after hooks saw it in the handler's pipeline */
    r->stream_status = resp->status;
    r->stream_bytes = 0;
    if (c->proto->stream_head == NULL)
        return stream_buffer(r, resp);
    r->streaming = w.no_body ? DL_STREAM_NOBODY : DL_STREAM_OPEN;
    r->stream_keep = (uint8_t)w.keep;
    c->proto->stream_head(c, r, &w);
    return 0;
}

int dl_req_stream_write(dl_req_t *r, const char *p, size_t n)
{
    dl_core_conn_t *c = r->conn;
    if (c == NULL || c->closed)
        return DL_ECONNRESET;
    if (n == 0)
        return 0;
    switch (r->streaming) {
    case DL_STREAM_NOBODY:
        r->stream_bytes += n;
        return 0;
    case DL_STREAM_BUFFERED:
        /* a piece lost: the collected body is no longer the answer, and a
         * 200 with part of it would pass for whole */
        if (r->stream_buf.len + n > DL_STREAM_BUFFER_MAX) {
            r->stream_broken = 1;
            return DL_ETOOBIG;
        }
        if (dl_buf_append(&r->stream_buf, p, n) != 0) {
            r->stream_broken = 1;
            return DL_ENOMEM;
        }
        r->stream_bytes += n;
        return 0;
    case DL_STREAM_OPEN: {
        size_t held = c->proto->stream_data(c, r, p, n);
        r->stream_bytes += n;
        if (r->conn == NULL || c->closed)
            return DL_ECONNRESET;
        return held >= r->ctx->cfg->output_high_water ? 1 : 0;
    }
    default:
        return DL_EINVAL;
    }
}

void dl_req_stream_end(dl_req_t *r, int ok)
{
    dl_core_conn_t *c = r->conn;
    dl_core_ctx_t *x = r->ctx;
    int mode = r->streaming;
    r->streaming = DL_STREAM_NONE;
    if (r->stream_broken)
        ok = 0;
    if (mode == DL_STREAM_BUFFERED) {
        saved_head_t *s = r->stream_saved;
        r->stream_saved = NULL;
        if (ok) {
            s->resp.body = r->stream_buf.data;
            s->resp.body_len = r->stream_buf.len;
            dl_req_respond(r, &s->resp); /* lets r go */
        } else {
            /* no head was sent: a real 500 */
            dl_req_respond_error(r, 500, r->stream_broken ? "the streamed body could not be "
                                 "collected (over 64 MiB, or out of memory)" : NULL);
        }
        dl_free(s);
        return;
    }
    int keep = r->stream_keep;
    x->record(x, r, r->stream_status, (size_t)r->stream_bytes);
    x->release(x, r);
    if (c != NULL && !c->closed)
        c->proto->stream_close(c, ok, keep);
}

void dl_req_stream_drained(dl_req_t *r)
{
    dl_core_ctx_t *x = r->ctx;
    if (r->streaming == DL_STREAM_OPEN && x->handler.drained)
        x->handler.drained(x->handler.arg, r);
}
