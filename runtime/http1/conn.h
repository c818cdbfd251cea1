/*
 * conn.h - one client connection: reading, TLS (tls.h), llhttp parsing with
 * limits and timeouts, one request in flight at a time (pipelined requests
 * wait parsed in order), response serialisation, compression and writing.
 * A connection that speaks HTTP/2 hands its plaintext to h2.h instead.
 */
#ifndef DL_CONN_H
#define DL_CONN_H

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "core/http.h"
#include "server/worker.h"

enum {
    DL_CS_HEAD = 0, /* waiting for or reading a request head */
    DL_CS_BODY,     /* reading a request body */
    DL_CS_BUSY,     /* the handler runs */
    DL_CS_IDLE,     /* keep-alive, between requests */
    DL_CS_LINGER,   /* error sent, draining input before close */
};

struct dl_conn_s {
    uv_tcp_t tcp;
    dl_worker_t *worker;
    dl_conn_t *prev, *next;
    llhttp_t parser;
    dl_req_t *req;        /* the request being parsed */
    dl_req_t *active;     /* the request whose handler runs */
    dl_buf_t pending;     /* read but not yet parsed */
    dl_buf_t out;         /* serialised responses not yet written */
    size_t writing;       /* bytes handed to uv_write and not completed */
    int state;
    uint64_t deadline;    /* uv_now() ms, 0: none */
    uint64_t send_deadline; /* a write in flight must progress by then (uv_now() ms) */
    size_t send_queued;     /* bytes the client had not taken when the deadline was set */
    uint64_t window_start;
    size_t window_bytes;
    const char *exec_start, *exec_end; /* the bytes llhttp_execute is parsing */
    const char *value_end;             /* end of the last header value span */
    const char *feed_start;            /* the buffer conn_feed was given */
    unsigned tail_lf : 1;              /* the bytes fed before it end LF [SP/HTAB]* */
    int prev_ended_value;              /* the previous read ended inside a value */
    int err_status;       /* set by a parser callback that rejects the request */
    const char *err_msg;
    char err_buf[200];    /* err_msg's storage when the message outlives its source */
    unsigned in_feed : 1; /* the parser runs: responses are flushed by the reader */
    unsigned closing : 1; /* close once out is written */
    unsigned closed : 1;  /* uv_close called */
    unsigned read_stopped : 1;
    unsigned lingering : 1;
    unsigned stopping : 1; /* graceful stop: no keep-alive after this response */
    unsigned file_keep : 1; /* keep-alive after the file being sent */
    int file_fd;          /* a file body being sent (one chunk at a time), or -1 */
    /* an in-process connection (no socket): output goes to sink; len 0 = closed */
    unsigned virt : 1;
    void (*sink)(dl_conn_t *c, const char *data, size_t len, void *arg);
    void *sink_arg;
    uint64_t file_off, file_left;
    struct dl_tls_s *tls; /* a TLS listener's connection */
    dl_buf_t cout;        /* TLS: ciphertext not yet written (out holds plaintext) */
    struct dl_h2_s *h2;   /* HTTP/2 (ALPN h2 or the h2c preface) */
    int listener;         /* index of the listener it came from */
    unsigned fresh : 1;   /* nothing parsed yet: may still turn out to be h2c */
    unsigned shutting : 1; /* uv_shutdown issued (lingering close) */
    unsigned notified : 1; /* TLS close_notify queued */
    unsigned head_method : 1; /* the request being parsed is a HEAD */
    unsigned field_started : 1; /* parser: a header name span arrived since the last field */
};

/**
 * An in-process connection on worker w: bytes given to dl_conn_virtual_feed()
 * are parsed and served exactly as if read from a socket (same limits,
 * routing, codecs, compression); the response bytes go to sink, on the
 * worker's thread, possibly later (a parked handler); a sink call with len 0
 * means the connection closed (after an error answer or Connection: close).
 * Free with dl_conn_virtual_free(), never from inside sink.
 */
dl_conn_t *dl_conn_virtual_new(dl_worker_t *w,
                               void (*sink)(dl_conn_t *c, const char *data, size_t len,
                                            void *arg),
                               void *arg);
void dl_conn_virtual_feed(dl_conn_t *c, const char *data, size_t len);
/** Ends an in-process connection; a handler still running finishes detached. */
void dl_conn_virtual_free(dl_conn_t *c);

/**
 * One in-process request on worker w (its thread): raw request bytes in, and
 * cb(resp, len, arg) later on that thread with the raw response (interim 1xx
 * answers skipped), or resp NULL when the connection closed first. head: the
 * request is a HEAD. cb is never called from inside this call. Returns 0 or
 * DL_ENOMEM (then cb is never called).
 */
typedef void (*dl_exchange_cb)(const char *resp, size_t len, void *arg);
int dl_conn_exchange(dl_worker_t *w, const char *raw, size_t len, int head, dl_exchange_cb cb,
                     void *arg);
/** The worker stops: exchanges still waiting end now, their callbacks told
 * there is no answer (resp NULL). On w's thread, before its handles close. */
void dl_conn_exchange_abort_all(dl_worker_t *w);
/** The length of the first complete final response in b (1xx dropped), or 0. */
size_t dl_http_response_end(dl_buf_t *b, int head);

/** Accepts a pending connection on server; the connection owns itself. */
void dl_conn_accept(dl_worker_t *w, uv_stream_t *server);
/** Checks a connection's deadline; closes it when passed. */
void dl_conn_sweep(dl_conn_t *c, uint64_t now);
/** Graceful stop: closes an idle connection now, a busy one after its response. */
void dl_conn_stop(dl_conn_t *c);
/** Closes a connection at once; a running handler finishes detached. */
void dl_conn_close(dl_conn_t *c);

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
                                 connection takes (closes) file_fd */
    int file_fd;
    uint64_t file_off, file_len;
    const char *allow;        /* Allow header value (405) */
} dl_resp_t;

/**
 * Sends resp for req (compressing when accepted and worth it), then lets the
 * connection go on with the next pipelined request. Takes ownership of req:
 * it returns to the pool. If the connection is gone the response is dropped.
 */
void dl_req_respond(dl_req_t *req, const dl_resp_t *resp);

/** Sends a JSON error {"error","message","requestId"} for req; takes req. */
void dl_req_respond_error(dl_req_t *req, int status, const char *msg);

/** A response as dl_req_respond() prepared it for the wire (h2.c writes it as frames). */
typedef struct {
    const dl_resp_t *resp;
    int status;
    const char *body;  /* after compression; valid during the call */
    size_t body_len;   /* the file's length for a file body */
    int enc;           /* DL_ENC_* */
    int vary;
    int no_body;       /* HEAD, 204, 304 */
    const char *hsts;  /* Strict-Transport-Security value, or NULL */
} dl_resp_wire_t;

/**
 * Once a request's head is in (from llhttp or HTTP/2 HEADERS): checks the
 * target, sets the request id, routes it and opens an upload sink. A request
 * with a body (has_body) that the route's check refuses gets
 * r->early_status (401, 403...) and no sink: it is answered without reading
 * its body. Returns 0, or the HTTP status to answer with *msg saying why.
 */
int dl_conn_req_begin(dl_conn_t *c, dl_req_t *r, int has_body, const char **msg);
/**
 * 1 when s[0..n) is a host an HTTPS redirect may name, RFC 3986 host[:port]
 * narrowed to what a browser reaches: a name of letters, digits, '-', '.',
 * '_' and '~' (1 to 253 bytes) or an IPv6 address in brackets, then
 * optionally ':' and a port 1-65535. Sets *host_len to the length without the
 * port and *port to the port or -1 (either may be NULL); 0 otherwise.
 */
int dl_redirect_host_valid(const char *s, size_t n, size_t *host_len, int *port);

/** Runs a complete request: 404/405 answers, HTTPS redirects, or its handler. */
void dl_conn_req_dispatch(dl_conn_t *c, dl_req_t *r);

#endif
