/*
 * stream.h - a streamed answer: its head is sent before its body is known,
 * then the body goes out a piece at a time with back-pressure, and the
 * answer ends well (the last chunk) or badly (the connection closed or the
 * HTTP/2 stream reset: never a second status line). The head is decided by
 * response.c like every answer's; the protocol (dl_proto_t's stream_*
 * entries) frames the body: HTTP/1.1 chunks, HTTP/1.0 a body that ends with
 * the connection. A protocol without them gets the body collected and sent
 * whole at the end. The plan: docs/streaming.md.
 */
#ifndef DL_STREAM_H
#define DL_STREAM_H

#include <stddef.h>

#include "core/http.h"
#include "core/proto.h"

enum {
    DL_STREAM_NONE = 0,
    DL_STREAM_OPEN,     /* the head is sent; body pieces go to the protocol */
    DL_STREAM_NOBODY,   /* the head is sent; the answer has no body (HEAD, 204, 304) */
    DL_STREAM_BUFFERED, /* the protocol has no streams: the body is collected */
};

#define DL_STREAM_BUFFER_MAX (64u << 20) /* what a buffered stream may collect */

/**
 * Sends resp's head (its body fields are ignored) and opens r's stream.
 * Returns 0; DL_ECONNRESET when the connection is gone (nothing sent, r is
 * still the caller's: answer it with dl_req_respond, which lets it go);
 * DL_EINVAL when resp cannot head a stream (a file or gzip body, a header
 * the runtime owns: logged), then the caller answers 500.
 */
int dl_req_stream_begin(dl_req_t *r, const dl_resp_t *resp);

/**
 * Queues n bytes of r's body. Returns 0, or 1 when the connection now holds
 * more than its high-water mark unsent (the bytes are queued: wait for the
 * handler's drained call before the next write); DL_ECONNRESET once the
 * client is gone, DL_ETOOBIG or DL_ENOMEM for a buffered stream over
 * DL_STREAM_BUFFER_MAX or out of memory.
 */
int dl_req_stream_write(dl_req_t *r, const char *p, size_t n);

/** Ends r's stream, well (ok) or not, records it and lets r go. A buffered
 * stream is answered now: whole when ok and no piece was refused, else
 * with a 500. */
void dl_req_stream_end(dl_req_t *r, int ok);

/** For protocols: r's connection took its bytes, or ended. */
void dl_req_stream_drained(dl_req_t *r);

#endif /* DL_STREAM_H */
