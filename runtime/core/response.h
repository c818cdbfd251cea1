/*
 * response.h - answering a request (response.c): the one place that decides
 * an answer's standard fields, compression and error JSON; the request's
 * protocol (proto.h) only writes it.
 */
#ifndef DL_RESPONSE_H
#define DL_RESPONSE_H

#include "core/proto.h"

/** A field's name as HTTP/1 writes it ("Content-Type") or, lower, as HTTP/2 does. */
const char *dl_resp_field_name(int id, int lower, size_t *len);
/** Appends w's standard fields to o as HTTP/1 lines ("Content-Type: text/plain\r\n"). */
void dl_resp_wire_put_lines(const dl_resp_wire_t *w, dl_buf_t *o);

/** Walks a handler's own "Name: value\r\n" lines (dl_resp_t.headers). */
typedef struct {
    const char *p, *end;
} dl_hdr_lines_t;

static inline void dl_hdr_lines_init(dl_hdr_lines_t *it, const char *lines, size_t len)
{
    it->p = lines;
    it->end = lines ? lines + len : lines;
}
/**
 * The next line with a name: the name, and the value without the spaces and
 * tabs around it. Returns 0 when none is left. Borrows from the lines.
 */
int dl_hdr_lines_next(dl_hdr_lines_t *it, const char **name, size_t *nlen, const char **value,
                      size_t *vlen);

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
int dl_resp_codec(const dl_req_t *r, const char **content_type, size_t *content_type_len);

/**
 * Appends the JSON error body {"error","message","requestId"} to body (msg
 * msg_len bytes, NUL bytes kept), with
 * "details": details (already JSON, details_len bytes) when details is not
 * NULL.
 */
void dl_resp_error_body(dl_buf_t *body, int status, const char *msg, size_t msg_len,
                        const char *reqid, const char *details, size_t details_len);

/** Appends "HTTP/1.1 <status> <reason>\r\n<headers>\r\n<body>": an in-process
 * answer for callers whose promise is the raw response. */
void dl_resp_answer_text(const dl_inproc_answer_t *a, dl_buf_t *out);

#endif
