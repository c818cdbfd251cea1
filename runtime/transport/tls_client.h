/*
 * tls_client.h - the client side of TLS, for outbound connections (the HTTP
 * client and TCP cosockets). A client context and connection are a
 * dl_tls_ctx_t and a dl_tls_t like the server's (transport/tls.h): the same
 * dl_tls_read (which drives the handshake), dl_tls_write, dl_tls_ready,
 * dl_tls_alpn, dl_tls_resumed, dl_tls_close_notify, dl_tls_error, dl_tls_free
 * and dl_tls_ctx_free apply.
 */
#ifndef DL_TLS_CLIENT_H
#define DL_TLS_CLIENT_H

#include <stddef.h>

#include "common/buf.h"
#include "transport/tls.h"

typedef struct {
    int verify;          /* 1: verify the chain and the name (the default callers use); 0: do not */
    const char *ca_file; /* PEM file of trusted CAs instead of the system store; NULL: system store */
} dl_tls_client_opts_t;

/**
 * A client context (one per distinct opts; shared by many connections of one
 * worker thread). Loads the system default verify paths or ca_file; TLS 1.2
 * minimum. Keeps the last resumable session of up to 64 server names.
 * o NULL: verify with the system store.
 * Returns 0 and *out, or DL_EINVAL with a message naming the file in err
 * (unreadable, not PEM, no certificate in it), or DL_ENOMEM. Free with
 * dl_tls_ctx_free(); connections made from it may outlive it (they keep
 * verifying, and no longer keep sessions).
 */
int dl_tls_client_ctx_new(const dl_tls_client_opts_t *o, dl_tls_ctx_t **out, char *err,
                          size_t errlen);

/**
 * A client connection: ciphertext to send goes to out (borrowed). server_name:
 * sent as SNI unless it is an IP literal ("[::1]" is taken as ::1), and
 * verified against the certificate (DNS name with wildcards per RFC 6125, or
 * IP address SAN when it is an IP literal) when the context verifies; it also
 * names the session to resume. alpn: a protocol to offer (e.g. "http/1.1"),
 * or NULL. The ClientHello is written to out at once. NULL on OOM.
 * A name that cannot be used (missing while the context verifies, too long,
 * characters a host name cannot hold) or a bad alpn gives a connection that
 * writes nothing and whose dl_tls_read and dl_tls_write return DL_EPROTO, with
 * dl_tls_error() saying why.
 */
dl_tls_t *dl_tls_client_new(dl_tls_ctx_t *ctx, dl_buf_t *out, const char *server_name,
                            const char *alpn);

#endif
