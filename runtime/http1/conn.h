/*
 * conn.h - one client connection: reading, TLS (tls.h), llhttp parsing with
 * limits and timeouts, one request in flight at a time (pipelined requests
 * wait parsed in order), response serialisation, compression and writing.
 * A connection that speaks HTTP/2 hands its plaintext to the session its
 * host gives it (dl_session_ops_t) instead. Answers are decided by the
 * request core (core/request.h) and written by http1/write.c.
 */
#ifndef DL_CONN_H
#define DL_CONN_H

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "common/list.h"
#include "core/http.h"
#include "core/request.h"

typedef struct dl_conn_s dl_conn_t;
struct dl_tls_ctx_s;
struct dl_metrics_s;

/**
 * What a worker gives its HTTP/1 connections (server/worker.c fills it): the
 * request core's context, the loop, the shared read buffer, the session
 * protocol a connection may switch to (HTTP/2) and what to do with a closed
 * connection.
 */
typedef struct dl_http1_host_s {
    dl_core_ctx_t *core;
    uv_loop_t *loop;
    const dl_config_t *cfg;
    char *read_buf;
    size_t read_buf_len;
    const dl_session_ops_t *h2;  /* HTTP/2 by ALPN or the h2c preface */
    void *h2_arg;                /* what h2->start takes (the server's, for HTTP/2) */
    struct dl_metrics_s *metrics;
    int metric_tls_failures;
    void *arg;                   /* the worker */
    /** after uv_close: the connection is the host's again (unlink, pool or free) */
    void (*closed)(struct dl_http1_host_s *h, dl_conn_t *c);
} dl_http1_host_t;

enum {
    DL_CS_HEAD = 0, /* waiting for or reading a request head */
    DL_CS_BODY,     /* reading a request body */
    DL_CS_BUSY,     /* the handler runs */
    DL_CS_IDLE,     /* keep-alive, between requests */
    DL_CS_LINGER,   /* error sent, uv_shutdown issued: draining input before close */
};

struct dl_conn_s {
    dl_core_conn_t base;  /* first: the core's view (request.h) */
    uv_tcp_t tcp;
    dl_http1_host_t *host;
    dl_list_t link;       /* in its worker's open connections or its free pool */
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
    unsigned in_feed : 1; /* the parser runs: responses are flushed by the reader */
    unsigned closing : 1; /* close once out is written */
    unsigned closed : 1;  /* uv_close called */
    unsigned read_stopped : 1;
    unsigned lingering : 1; /* when it closes, close lingering (state DL_CS_LINGER then) */
    unsigned stopping : 1; /* graceful stop: no keep-alive after this response */
    unsigned file_keep : 1; /* keep-alive after the file being sent */
    unsigned stream_chunked : 1; /* a streamed answer in chunks is open (core/stream.h) */
    unsigned stream_wait : 1;    /* its writer waits for room (over the high-water mark) */
    int file_fd;          /* a file body being sent (one chunk at a time), or -1 */
    uint64_t file_off, file_left;
    struct dl_tls_s *tls; /* a TLS listener's connection */
    dl_buf_t cout;        /* TLS: ciphertext not yet written (out holds plaintext) */
    void *h2;             /* an HTTP/2 session (host->h2) once chosen by ALPN or preface */
    int listener;         /* index of the listener it came from */
    unsigned fresh : 1;   /* nothing parsed yet: may still turn out to be h2c */
    unsigned notified : 1; /* TLS close_notify queued */
    unsigned head_method : 1; /* the request being parsed is a HEAD */
    unsigned field_started : 1; /* parser: a header name span arrived since the last field */
};

/**
 * Starts serving c, a connection the host accepted into c->tcp (from
 * listener, TLS with tls_ctx when not NULL): parser, TLS, deadlines, reading.
 * The connection owns itself until host->closed.
 */
void dl_conn_start(dl_http1_host_t *h, dl_conn_t *c, int listener, struct dl_tls_ctx_s *tls_ctx);
/** Checks a connection's deadline; closes it when passed. */
void dl_conn_sweep(dl_conn_t *c, uint64_t now);
/** Graceful stop: closes an idle connection now, a busy one after its response. */
void dl_conn_stop(dl_conn_t *c);
/** Closes a connection at once; a running handler finishes detached. */
void dl_conn_close(dl_conn_t *c);

#endif
