/*
 * forwarded.h - a request's client (req.ip, req.scheme, req.host): the
 * socket peer, or, when it is a trusted proxy, what the forwarding fields
 * say (Forwarded, X-Forwarded-For/-Proto/-Host) walked from the right to
 * the first untrusted address. Worked out on first use and kept on the
 * request. The rules and why: docs/client_addr.md.
 */
#ifndef DL_FORWARDED_H
#define DL_FORWARDED_H

#include "core/client_addr.h"
#include "core/http.h"

/**
 * r's client (req.ip, req.scheme, req.host), worked out on first call from
 * r->client.peer, the trusted proxies of r->ctx and r's header fields, then
 * kept: valid while r is. Never fails: a malformed forwarding field stops
 * the walk at the last good hop.
 */
const dl_client_t *dl_client_get(dl_req_t *r);

#endif
