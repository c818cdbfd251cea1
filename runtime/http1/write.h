/*
 * write.h - an HTTP/1.x response as text: the status line, the fields the
 * core decided (core/request.h), Connection, the handler's own lines and the
 * body. Nothing here decides what an answer carries.
 */
#ifndef DL_HTTP1_WRITE_H
#define DL_HTTP1_WRITE_H

#include "common/buf.h"
#include "core/request.h"

/** Appends w, an answer to r, to o (o->oom set when memory ran out). A file
 * body is not written (the connection sends it a chunk at a time). */
void dl_http1_write_response(dl_buf_t *o, const dl_req_t *r, const dl_resp_wire_t *w);

#endif
