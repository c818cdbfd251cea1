/*
 * h2.h - HTTP/2 on a connection, over libnghttp2.
 *
 * A connection that negotiated h2 by ALPN, or sent the h2c preface on a plain
 * listener, hands its plaintext to an h2 session instead of llhttp. Each
 * stream becomes a dl_req_t exactly like an HTTP/1.1 request (same routing,
 * limits, uploads, handler), answered through dl_req_respond() (core/request.h);
 * the session fills the core's protocol table and turns answers into frames in the connection's output buffer, with
 * flow control in both directions. Flood defences live here too.
 */
#ifndef DL_H2_H
#define DL_H2_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include <uv.h>

#include "common/buf.h"
#include "core/request.h"

typedef struct dl_h2_s dl_h2_t;

/** The byte stream a session runs on (core/proto.h). */
typedef dl_stream_io_t dl_h2_io_t;

struct dl_metrics_s;

/** HTTP/2's own counters: the server defines them once (dl_h2_metrics_define)
 * and lends them to every session (dl_session_ops_t.start's arg). */
typedef struct {
    struct dl_metrics_s *metrics;
    int defences; /* devloop_http2_defences_total's id, -1 if undefined */
} dl_h2_metrics_t;

/** Defines devloop_http2_defences_total in m into *out: 0, or -1 (no memory). */
int dl_h2_metrics_define(struct dl_metrics_s *m, dl_h2_metrics_t *out);

/** dl_h2_* as a session table, for the server to hand to HTTP/1 connections. */
extern const dl_session_ops_t dl_h2_session;

/** Starts a server session on io and queues our SETTINGS; its streams are
 * requests on a core connection like from (context, TLS, listener). NULL: out
 * of memory. m: the counters it adds to (borrowed for the session's life), or NULL. */
dl_h2_t *dl_h2_new(const dl_h2_io_t *io, const dl_core_conn_t *from, const dl_h2_metrics_t *m);
/** Ends the session: handlers still running finish detached, their answers dropped. */
void dl_h2_free(dl_h2_t *h);
/** Feeds plaintext. Returns 0, or -1 when the connection must close once what
 * is queued (a GOAWAY) is written. */
int dl_h2_feed(dl_h2_t *h, const char *data, size_t len);
/** Moves queued frames into c->out (bounded, so a slow reader holds little).
 * Returns 0, or -1 when the session is over and the connection should close. */
int dl_h2_send(dl_h2_t *h);
/**
 * The HEADERS of an answer: :status, the core's fields, then every one of
 * the handler's own lines, names lowercased. The nghttp2_nv array, the
 * status digits and the lowercased names are laid out in mem (reset, grown
 * to fit; the values point into w); *nva points into mem. Returns how many
 * fields, or -1 when there is no memory.
 */
ssize_t dl_h2_response_nv(const dl_resp_wire_t *w, dl_buf_t *mem, nghttp2_nv **nva);
/** Timeouts: slow request bodies, stalled header blocks, a peer that keeps its
 * flow-control window shut, idleness. Returns -1 when the connection should close. */
int dl_h2_sweep(dl_h2_t *h, uint64_t now);
/** Graceful stop: GOAWAY now; streams in flight finish, then the connection closes. */
void dl_h2_shutdown(dl_h2_t *h);

/**
 * Runs the handlers of complete streams that waited while the connection's
 * unsent answers were over the output mark, as long as they stay under it.
 * Returns how many ran. The caller flushes afterwards (handlers may answer at
 * once); never from inside nghttp2's callbacks.
 */
int dl_h2_run_queued(dl_h2_t *h);

#endif
