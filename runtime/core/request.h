/*
 * request.h - the request core, the same for every protocol: begin (request
 * id, target, Host, routing, the route's early check, uploads), dispatch
 * (404, 405, OPTIONS *, HTTPS redirects, the handler) and respond (standard
 * headers, compression, error JSON, metrics). Protocols fill a dl_proto_t and
 * only serialise what the core decided; the application is reached through a
 * dl_handler_t; what a worker lends a request (pool, Date, metrics, PRNG,
 * compressor) comes in a dl_core_ctx_t. Nothing here knows Lua, sockets,
 * HTTP versions or the server.
 */
#ifndef DL_REQUEST_H
#define DL_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "core/proto.h"
#include "core/response.h"

/**
 * Once a request's head is in (from llhttp or HTTP/2 HEADERS): checks the
 * target, sets the request id, routes it and opens an upload sink. A request
 * with a body (has_body) that the route's check refuses gets
 * r->early_status (401, 403...) and no sink: it is answered without reading
 * its body. Returns 0, or the HTTP status to answer with *msg saying why.
 */
int dl_req_begin(dl_core_conn_t *c, dl_req_t *r, int has_body, const char **msg);

/** A new header entry at the end of r->headers (grown as needed); NULL when out of memory. */
dl_header_t *dl_req_header_new(dl_req_t *r);
/** Appends header n: v (copied into r->head); 0 or DL_ENOMEM. */
int dl_req_header_add(dl_req_t *r, const char *n, size_t nlen, const char *v, size_t vlen);

/** Runs a complete request: 404/405 answers, HTTPS redirects, or its handler. */
void dl_req_dispatch(dl_core_conn_t *c, dl_req_t *r);
/** The 404 or 405 of a request no route took (r->route_status). */
void dl_req_respond_unrouted(dl_req_t *r);

/**
 * A request whose final status is known from its head: refused by the
 * route's check, or, for a client waiting for 100 Continue, without a route
 * or on the HTTPS redirect. It is answered without its body.
 */
int dl_req_early_answer(const dl_core_conn_t *c, const dl_req_t *r);

/**
 * Expect is a list (RFC 9110 10.1.1): 1 when v holds 100-continue and no
 * other expectation, 0 when it is empty, -1 for anything else (417).
 */
int dl_req_expect_check(const char *v, size_t n);

/**
 * 1 when s[0..n) is a host an HTTPS redirect may name, RFC 3986 host[:port]
 * narrowed to what a browser reaches: a name of letters, digits, '-', '.',
 * '_' and '~' (1 to 253 bytes) or an IPv6 address in brackets, then
 * optionally ':' and a port 1-65535. Sets *host_len to the length without the
 * port and *port to the port or -1 (either may be NULL); 0 otherwise.
 */
int dl_redirect_host_valid(const char *s, size_t n, size_t *host_len, int *port);

/** uri-host [ ":" port ] (RFC 9110 4.2.3, 7.2): reg-name or IP-literal. */
int dl_http_host_valid(const char *h, size_t n);

#endif
