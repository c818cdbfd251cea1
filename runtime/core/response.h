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

/** Appends "HTTP/1.1 <status> <reason>\r\n<headers>\r\n<body>": an in-process
 * answer for callers whose promise is the raw response. */
void dl_resp_answer_text(const dl_inproc_answer_t *a, dl_buf_t *out);

#endif
