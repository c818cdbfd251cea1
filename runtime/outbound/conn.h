/*
 * conn.h - one outbound TCP connection, plain or TLS, on a worker's loop: the
 * byte stream under the HTTP client and the cosockets. It connects to a list
 * of addresses in turn, does the TLS handshake, and then gives its user a
 * buffer of received plaintext to consume at its own pace (reading pauses
 * while the buffer is over its high-water mark), writes one piece at a time,
 * and has one timer its user arms for its own deadlines. Everything runs on
 * the loop's thread. A connection's memory goes in its handles' close
 * callbacks, after dl_out_close(); no callback of its user runs after that.
 */
#ifndef DL_OUT_CONN_H
#define DL_OUT_CONN_H

#include <uv.h>

#include "common/buf.h"
#include "common/list.h"
#include "outbound/dns.h"
#include "transport/tls.h"
#include "transport/tls_client.h"

typedef struct dl_out_conn_s dl_out_conn_t;

/** status 0 or a negative DL_E*; the connection's err says why. */
typedef void (*dl_out_cb)(dl_out_conn_t *c, int status, void *arg);

/** How to reach a peer once its addresses are known. */
typedef struct {
    const dl_dns_addrs_t *addrs; /* tried in turn (copied) */
    int port;
    uint64_t timeout_ms;         /* for the TCP connect and the TLS handshake together */
    dl_tls_ctx_t *tls;           /* a client context, or NULL for plain TCP (borrowed) */
    const char *server_name;     /* SNI and the name checked (copied); NULL: none */
    const char *alpn;            /* offered by ALPN, or NULL */
} dl_out_target_t;

struct dl_out_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_idle_t idle;         /* tells the writer of a write the kernel took at once */
    uv_loop_t *loop;
    dl_buf_t in;            /* received plaintext not consumed yet: in.data[0..in.len) */
    int eof;                /* the peer ended its side (or TLS close_notify) */
    int status;             /* sticky: the first error, 0 while none */
    char err[200];          /* why status (names the peer) */
    /* for the pool (pool.c) and its users */
    dl_list_t link;         /* in an origin's idle list */
    void *origin;           /* the pool's origin, NULL outside a pool */
    uint64_t idle_since_ms;
    int surplus;            /* idle past the pool's bound (pool.c) */
    int reused;             /* times taken from the pool */
    void *owner;            /* its user's tag (cosockets: the owning task) */
    /* internal */
    int state;
    int reading, closing, open_handles;
    dl_tls_t *tls;
    dl_buf_t tls_out;       /* ciphertext queued, written by the next flush */
    dl_buf_t tls_writing;   /* ciphertext being written */
    uv_write_t wreq;
    int writing;
    dl_out_cb on_connect, on_read, on_write, on_timer;
    void *connect_arg, *read_arg, *write_arg, *timer_arg;
    dl_dns_addrs_t addrs;
    int next_addr, port;
    uint64_t connect_deadline;
    uv_connect_t creq;
    char peer[80];          /* "host:port" for messages */
    char *server_name;
    dl_tls_ctx_t *tls_ctx;
    const char *alpn;
    int tried_one;          /* the handle has been given to a connect */
    int tcp_closing;        /* closed between attempts, to be made again */
    int handles_closing;
};

/**
 * Starts connecting to t on loop; cb(c, 0) once it is open (TLS: after the
 * handshake), or cb(c, DL_ECONNECT / DL_ETIMEDOUT / DL_ETLS) with c->err
 * saying why, after which the user closes c. peer_label names the peer in
 * messages ("api.example.com:443"). Returns 0 and *out, or DL_ENOMEM (no
 * callback).
 */
int dl_out_connect(uv_loop_t *loop, const dl_out_target_t *t, const char *peer_label,
                   dl_out_cb cb, void *arg, dl_out_conn_t **out);

/**
 * Calls cb whenever plaintext arrives (c->in grew), the peer ends (c->eof)
 * or the connection fails (status < 0). The user consumes with
 * dl_out_consume(); reading pauses while c->in holds over 256 KiB. cb NULL
 * stops the notices (reading goes on for pool liveness checks).
 */
void dl_out_on_read(dl_out_conn_t *c, dl_out_cb cb, void *arg);
/** Drops the first n bytes of c->in (and resumes reading if it paused). */
void dl_out_consume(dl_out_conn_t *c, size_t n);

/**
 * Writes len bytes (copied); cb(c, 0) once the kernel has them, or an error.
 * One write at a time: DL_EINVAL while one is pending, or the connection's
 * sticky error.
 */
int dl_out_write(dl_out_conn_t *c, const char *data, size_t len, dl_out_cb cb, void *arg);

/** Arms the connection's one timer: cb(c, DL_ETIMEDOUT) after ms. 0 ms or cb NULL disarms. */
void dl_out_timer(dl_out_conn_t *c, uint64_t ms, dl_out_cb cb, void *arg);

/** 1 when the connection can still carry a request: open, no error, no EOF,
 * nothing unread, nothing being written; with peek, also the socket has
 * neither data nor an EOF the loop has not seen yet (one recv syscall). */
int dl_out_alive(dl_out_conn_t *c, int peek);

/** Closes and frees c (in its close callbacks); no callback runs after. NULL is a no-op. */
void dl_out_close(dl_out_conn_t *c);

#endif
