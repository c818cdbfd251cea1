/*
 * inproc.h - in-process requests (api.client, dl_runtime_request): a request
 * given as its parts goes into the request core (core/request.h) as one
 * connection of its own, with no text written or parsed, under the limits a
 * socket request meets; the answer comes back as status, header lines and
 * body. One dl_inproc_t per worker holds the requests still waiting.
 */
#ifndef DL_INPROC_H
#define DL_INPROC_H

#include <uv.h>

#include "core/request.h"

typedef struct dl_inproc_s dl_inproc_t;

/** In-process requests into the core context x, answered on loop. NULL: no memory. */
dl_inproc_t *dl_inproc_new(dl_core_ctx_t *x, uv_loop_t *loop);
/** Frees what dl_inproc_abort_all() left (call it first); NULL is a no-op. */
void dl_inproc_free(dl_inproc_t *ip);

/**
 * Runs one request: cb(answer, arg) later on the loop's thread, never from
 * inside this call. The parts are checked as dl_http_request_check() does
 * (method a token, path visible ASCII, names tokens, values without CR, LF or
 * NUL, no Transfer-Encoding, one Host at most): a part outside its grammar
 * returns DL_EINVAL with *err and *bad_field filled (either may be NULL) and
 * cb is never called. Host defaults to "localhost"; Content-Length is the
 * body's. Returns 0, DL_EINVAL or DL_ENOMEM.
 */
int dl_inproc_request(dl_inproc_t *ip, const dl_inproc_req_t *in, dl_inproc_cb cb, void *arg,
                      const char **err, int *bad_field);

/** The worker stops: requests still waiting end now, cb told there is no
 * answer; handlers still running finish detached. */
void dl_inproc_abort_all(dl_inproc_t *ip);

#endif
