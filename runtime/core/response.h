/*
 * response.h - answering a request (response.c): the one place that decides
 * an answer's standard fields, compression and error JSON; the request's
 * protocol (proto.h) only writes it.
 */
#ifndef DL_RESPONSE_H
#define DL_RESPONSE_H

#include "common/hdr_lines.h"
#include "core/proto.h"

/** A field's name as HTTP/1 writes it ("Content-Type") or, lower, as HTTP/2 does. */
const char *dl_resp_field_name(int id, int lower, size_t *len);
/** Appends w's standard fields to o as HTTP/1 lines ("Content-Type: text/plain\r\n"). */
void dl_resp_wire_put_lines(const dl_resp_wire_t *w, dl_buf_t *o);


/**
 * The most bytes a handler's own header lines and Content-Type may take in
 * one answer: what every protocol can send (nghttp2 refuses a header block
 * over 64 KiB, see http2/h2.c), with room left for the standard fields. Over
 * it, dl_req_respond() answers 500 on every protocol and logs the size.
 */
#define DL_RESP_HEADERS_MAX (60u * 1024)

/**
 * 1 when a handler may not set the field: those the runtime writes itself
 * (Content-Length, Date, X-Request-Id) and the connection-specific ones
 * (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade,
 * TE), which HTTP/2 forbids (RFC 9113 8.2.2) and which would misframe an
 * HTTP/1 connection. The one list: the Lua side (lua/lua_dispatch.c) names
 * the field to the app, dl_req_respond() refuses one a C handler set.
 */
int dl_resp_header_reserved(const char *name, size_t len);

/**
 * Sends resp for req (compressing when accepted and worth it), then lets the
 * connection go on with the next request. Takes ownership of req: it returns
 * to the pool. If the connection is gone the response is dropped.
 */
void dl_req_respond(dl_req_t *req, const dl_resp_t *resp);

/** Sends a JSON error {"error","message","requestId"} for req; takes req. */
void dl_req_respond_error(dl_req_t *req, int status, const char *msg);
/** The same with an Allow value and extra header lines (either may be NULL). */
void dl_req_respond_error_hdrs(dl_req_t *req, int status, const char *msg, const char *allow,
                               const char *headers);

enum { DL_CODEC_JSON = 0, DL_CODEC_MSGPACK = 1 };
/**
 * The codec a structured answer (a table) is encoded with, from the
 * request's Accept (MessagePack when it is preferred, else JSON), and its
 * Content-Type.
 */
/**
 * The head of a streamed answer (core/stream.c) into w: resp's status and
 * fields with the standard ones, no Content-Length, no compression, and
 * w->chunked for HTTP/1.1. Returns 0, or DL_EINVAL (logged) when resp
 * cannot head a stream: a file or stored gzip body, a field the runtime owns.
 */
int dl_resp_stream_head(dl_req_t *r, const dl_resp_t *resp, dl_resp_wire_t *w);

/**
 * Notes what one rate limit found for r, for the RateLimit-Limit,
 * -Remaining and -Reset fields (and Retry-After when over) of its answer.
 * Of several limits the refusing one is kept, else the one with the least
 * left. remaining below 0 counts as 0.
 */
void dl_req_rate_note(dl_req_t *r, double limit, double remaining, uint32_t reset, int over,
                      uint32_t retry);

int dl_resp_codec(const dl_req_t *r, const char **content_type, size_t *content_type_len);

/**
 * Appends the JSON error body {"error","message","requestId"} to body (msg
 * msg_len bytes, NUL bytes kept), with
 * "details": details (already JSON, details_len bytes) when details is not
 * NULL.
 */
void dl_resp_error_body(dl_buf_t *body, int status, const char *msg, size_t msg_len,
                        const char *reqid, const char *details, size_t details_len);


#endif
