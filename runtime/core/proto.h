/*
 * proto.h - the request core's interfaces: what a handler answers
 * (dl_resp_t), an answer as the core decided it (dl_resp_wire_t), the
 * protocol table every protocol fills (dl_proto_t), the
 * part of a connection the core sees (dl_core_conn_t), the application as the
 * core reaches it (dl_handler_t) and what a worker lends its requests
 * (dl_core_ctx_t). See request.h and response.h for the calls.
 */
#ifndef DL_PROTO_H
#define DL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/compress.h"
#include "common/internal.h"
#include "core/http.h"

typedef struct dl_core_conn_s dl_core_conn_t;
typedef struct dl_core_ctx_s dl_core_ctx_t;

/** What a handler answers; see dl_req_respond(). */
typedef struct {
    int status;
    const char *content_type; /* NULL: none */
    size_t content_type_len;
    const char *body;
    size_t body_len;
    const char *headers;      /* extra "Name: value\r\n" lines, already validated */
    size_t headers_len;
    unsigned has_cache_control : 1;
    unsigned body_gzip : 1;   /* body is already gzip (a cached entry): sent as-is
                                 to clients that accept gzip, inflated for others */
    unsigned close : 1;       /* close the connection after this response */
    unsigned has_file : 1;    /* the body is file_len bytes of file_fd from file_off, read
                                 and sent a chunk at a time, never compressed; the
                                 protocol takes (closes) file_fd */
    int file_fd;
    uint64_t file_off, file_len;
    const char *allow;        /* Allow header value (405) */
} dl_resp_t;

/** The standard response fields, in the order they are sent. */
enum {
    DL_HF_DATE,
    DL_HF_CONTENT_TYPE,
    DL_HF_CONTENT_LENGTH,
    DL_HF_CONTENT_ENCODING,
    DL_HF_VARY,
    DL_HF_REQUEST_ID,
    DL_HF_NOSNIFF,
    DL_HF_CACHE_CONTROL,
    DL_HF_ALLOW,
    DL_HF_HSTS,
    DL_HF_ACAO,          /* Access-Control-Allow-Origin (cors.h) */
    DL_HF_ACAC,          /* Access-Control-Allow-Credentials */
    DL_HF_ACEH,          /* Access-Control-Expose-Headers */
    DL_HF_RL_LIMIT,      /* RateLimit-Limit (dl_req_t.rate) */
    DL_HF_RL_REMAINING,
    DL_HF_RL_RESET,
    DL_HF_RETRY_AFTER,
    DL_HF_COUNT
};

typedef struct {
    int id; /* DL_HF_* */
    const char *value;
    size_t value_len;
} dl_resp_field_t;

/**
 * A response as the core decided it: the protocol writes status, fields (in
 * order), then the handler's own header lines, then the body. Valid during
 * dl_proto_t.write_response only.
 */
typedef struct {
    const dl_resp_t *resp;
    int status;
    const char *body;  /* after compression */
    size_t body_len;   /* the file's length for a file body */
    int enc;           /* DL_ENC_* */
    int vary;
    int no_body;       /* HEAD, 204, 205, 304, 1xx */
    int keep;          /* the connection may take another request after this one */
    dl_resp_field_t fields[DL_HF_COUNT];
    int n_fields;
    char clen[24];     /* Content-Length's digits */
    char rate[4][24];  /* RateLimit-* and Retry-After digits */
    int chunked;       /* a streamed body in HTTP/1.1 chunks (core/stream.h) */
} dl_resp_wire_t;

/**
 * A protocol: what the core calls on a request's connection. HTTP/1 (http1/), HTTP/2 (http2/) and in-process
 * requests fill one each.
 */
typedef struct {
    const char *name;
    /** Serialises w for r (head and body, or the first piece of a file body);
     * takes resp->file_fd. r is still the caller's. */
    void (*write_response)(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w);
    /** After the answer is written and r released: close, go on with the next
     * request, or keep sending a file body. */
    void (*finish)(dl_core_conn_t *c, const dl_resp_wire_t *w);
    /* A streamed answer (core/stream.h); NULL: the protocol has none yet and
     * the core collects the body and answers at the stream's end. */
    /** Writes w's head (no body; w->chunked: HTTP/1.1 chunks follow). */
    void (*stream_head)(dl_core_conn_t *c, dl_req_t *r, const dl_resp_wire_t *w);
    /** Queues n bytes of body; returns the bytes the connection holds unsent
     * (0 once it is closed). It calls dl_req_stream_drained(r) when they
     * fall under half the high-water mark, and when the connection ends. */
    size_t (*stream_data)(dl_core_conn_t *c, dl_req_t *r, const char *p, size_t n);
    /** The stream is over (r is released already): ok, its end (the last
     * chunk) and then as finish with keep; !ok, abort (close, or reset the
     * stream): the body is incomplete. */
    void (*stream_close)(dl_core_conn_t *c, int ok, int keep);
} dl_proto_t;

/** The part of every connection the core sees; a protocol embeds it. */
struct dl_core_conn_s {
    const dl_proto_t *proto;
    dl_core_ctx_t *ctx;
    unsigned tls : 1;            /* HSTS; an https absolute-form target */
    unsigned https_redirect : 1; /* a listener that only redirects to HTTPS */
    unsigned inproc : 1;         /* no socket (api.client, dl_runtime_request) */
    unsigned closed : 1;         /* answers are dropped */
    unsigned stopping : 1;       /* graceful stop: no keep-alive after this answer */
    dl_peer_t peer;              /* the socket peer, read once (client_addr.h); unknown in-process */
    char err_buf[200];           /* the early check's message */
};

/**
 * The application, as the core reaches it (lua_dispatch.c fills one; a C handler
 * can too). route sets r->route_status (DL_ROUTE_*), r->route and r->match;
 * precheck decides on the head alone (0: read the body; else a status with
 * msg filled); dispatch runs the handler, which answers through
 * dl_req_respond() now or later; unpin lets go of what route held.
 * Optional hooks around the app's answers (NULL: none): unrouted takes a
 * request no route matched (1: it answers later, through
 * dl_req_respond_unrouted() or its own answer); filter takes an answer the
 * app made before it is sent (1: it sends its own version later, resp is
 * only borrowed for the call).
 */
typedef struct {
    void *arg;
    void (*route)(void *arg, dl_req_t *r);
    int (*precheck)(void *arg, dl_req_t *r, char *msg, size_t msglen);
    void (*dispatch)(void *arg, dl_req_t *r);
    void (*unpin)(void *arg, dl_req_t *r);
    int (*unrouted)(void *arg, dl_req_t *r);
    int (*filter)(void *arg, dl_req_t *r, const dl_resp_t *resp);
    /** A streamed answer's connection took its bytes (or ended): a writer
     * waiting for room goes on (core/stream.h). */
    void (*drained)(void *arg, dl_req_t *r);
} dl_handler_t;

/* ---------------------------------------------------- sessions on a stream */

/** The byte stream a session protocol runs on (an HTTP/1 connection that
 * chose HTTP/2 by ALPN or its preface). */
typedef struct {
    void *conn;
    dl_buf_t *out;                /* what the session sends goes here */
    struct uv_loop_s *loop;
    void (*flush)(void *conn);    /* writes out */
    int (*in_feed)(void *conn);   /* 1 while the reader runs (it flushes afterwards) */
} dl_stream_io_t;

/** A protocol that takes a connection over (HTTP/2); the server hands it to
 * HTTP/1 connections, which never call it by name. */
typedef struct {
    /** arg: the protocol's own, as the server lent it to the host (HTTP/2's
     * counters, http2/h2.h dl_h2_metrics_t) */
    void *(*start)(const dl_stream_io_t *io, const dl_core_conn_t *from, void *arg);
    void (*end)(void *s);                                 /* handlers finish detached */
    int (*feed)(void *s, const char *data, size_t len);  /* -1: close once sent */
    int (*send)(void *s);                                 /* -1: over, close */
    int (*sweep)(void *s, uint64_t now);                  /* -1: close */
    void (*shutdown)(void *s);                            /* graceful stop */
    int (*run_queued)(void *s);
} dl_session_ops_t;

/* ------------------------------------------------------ in-process requests */

/** A request from its parts; every pointer is borrowed for the call only. */
typedef struct {
    const char *method;
    size_t method_len;
    const char *path;  /* origin-form: '/' then visible ASCII */
    size_t path_len;
    const dl_http_field_t *fields;
    int n_fields;
    const char *body;
    size_t body_len;
} dl_inproc_req_t;

/** An answer; valid during the callback only. */
typedef struct {
    int status;
    const dl_http_field_t *fields; /* in the order HTTP/1.1 would send them, names as it
                                      spells them; a repeated field (Set-Cookie) stays apart */
    int n_fields;
    const char *body;    /* as sent (compressed if Accept-Encoding asked for it) */
    size_t body_len;
} dl_inproc_answer_t;

/** a: the answer, or NULL when there is none (the worker stopped first). */
typedef void (*dl_inproc_cb)(const dl_inproc_answer_t *a, void *arg);

/** What a worker lends its requests; filled by the worker (server/worker.c). */
struct dl_core_ctx_s {
    void *arg; /* the worker */
    dl_req_t *(*acquire)(dl_core_ctx_t *x);
    void (*release)(dl_core_ctx_t *x, dl_req_t *r);
    /** counts an answered request (metrics, access log) */
    void (*record)(dl_core_ctx_t *x, dl_req_t *r, int status, size_t bytes);
    /** the plain form of a stored gzip body; valid until the next call */
    int (*inflate)(dl_core_ctx_t *x, const char *gz, size_t len, const char **plain,
                   size_t *plain_len);
    const char *(*date)(dl_core_ctx_t *x);
    /** an in-process request (inproc/inproc.h's dl_inproc_request) */
    int (*inproc)(dl_core_ctx_t *x, const dl_inproc_req_t *in, dl_inproc_cb cb, void *arg,
                  const char **err, int *bad_field);
    dl_handler_t handler;
    const dl_config_t *cfg;
    uint64_t *prng;          /* [4] */
    uint64_t *n_requests;
    dl_compressor_t *compressor;
    int worker_id;
    int stopping;
    const char *hsts;        /* Strict-Transport-Security value, or NULL */
    const char *upload_dir;
    const char *canonical_host; /* HTTPS redirects, or NULL */
    int canonical_port;
    int https_port;
    dl_proxy_list_t trusted; /* DEVLOOP_TRUSTED_PROXIES (client_addr.h); n 0: none */
};

#endif
