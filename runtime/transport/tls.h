/*
 * tls.h - TLS for connections, over OpenSSL 3 with in-memory I/O.
 *
 * A dl_tls_ctx_t belongs to one TLS listener: its certificates (the first is
 * the default, the others are chosen by SNI from their DNS names), the ALPN
 * choice (h2, then http/1.1) and the session-ticket keys, which rotate and are
 * shared by every worker. A dl_tls_t is one connection's TLS state: the
 * connection feeds it ciphertext and gets plaintext back through a callback,
 * and hands it plaintext to encrypt; ciphertext to send is appended to a
 * buffer the connection writes, so no socket call happens in here.
 *
 * The client side (outbound connections) is in transport/tls_client.h: its
 * contexts and connections are the same types and use the calls below too.
 */
#ifndef DL_TLS_H
#define DL_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef struct dl_tls_ctx_s dl_tls_ctx_t;
typedef struct dl_tls_s dl_tls_t;

typedef struct {
    const char *const *cert; /* PEM files, a chain each (leaf first) */
    const char *const *key;  /* PEM private keys, one per cert */
    int n_certs;
    int alpn_h2;              /* offer h2 by ALPN */
    uint64_t ticket_rotate_s; /* session-ticket keys rotate this often (0: 3600) */
} dl_tls_opts_t;

/**
 * Loads the certificates and keys of o (copied). Returns 0 and *out, or
 * DL_EINVAL with a message naming the file (unreadable, not PEM, key and
 * certificate that do not match) in err. Any thread.
 */
int dl_tls_ctx_new(const dl_tls_opts_t *o, dl_tls_ctx_t **out, char *err, size_t errlen);
/**
 * Loads the same files again; on success new handshakes use them (connections
 * already open keep theirs), on failure nothing changes and err says why.
 * Any thread, concurrently with handshakes on workers.
 */
int dl_tls_ctx_reload(dl_tls_ctx_t *ctx, char *err, size_t errlen);
/** Frees a server or client context, after the connections made with it. NULL is a no-op. */
void dl_tls_ctx_free(dl_tls_ctx_t *ctx);

/** A server connection's TLS state; ciphertext to send goes to out (borrowed). */
dl_tls_t *dl_tls_new(dl_tls_ctx_t *ctx, dl_buf_t *out);
void dl_tls_free(dl_tls_t *t);

typedef void (*dl_tls_plain_cb)(void *arg, const char *data, size_t len);
/**
 * Decrypts ciphertext: handshake records are answered (into out) and each
 * piece of application data is passed to plain. Every byte of in is consumed.
 * Returns 0, DL_EOF when the peer sent close_notify, DL_EPROTO on a TLS error
 * (an alert may be in out; on a client, a certificate that failed verification
 * too), or DL_EPLAIN when the client spoke plain HTTP (servers only).
 * On a client this drives the handshake; dl_tls_ready() says when it is done.
 */
int dl_tls_read(dl_tls_t *t, const char *in, size_t len, dl_tls_plain_cb plain, void *arg);
/** Encrypts data into out, once dl_tls_ready(). Returns 0, DL_EPROTO or DL_ENOMEM. */
int dl_tls_write(dl_tls_t *t, const char *data, size_t len);

/** Queues a close_notify alert into the output (RFC 9112 9.8: a TLS
 * connection is closed with one), once, after a completed handshake. */
void dl_tls_close_notify(dl_tls_t *t);
/** 1 once the handshake is done. */
int dl_tls_ready(const dl_tls_t *t);
/** 1 when ALPN chose h2. */
int dl_tls_is_h2(const dl_tls_t *t);
/** The protocol ALPN chose ("h2", "http/1.1", or the one a client offered),
 * or NULL when none was; valid as long as t. */
const char *dl_tls_alpn(const dl_tls_t *t);
/** 1 when the handshake resumed a session (a ticket). */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_tls_resumed(const dl_tls_t *t);
#endif
/** The last TLS error, for logs (valid until the next call on t). */
const char *dl_tls_error(const dl_tls_t *t);

#endif
