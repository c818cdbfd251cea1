/*
 * tls_internal.h - what the server side (tls.c) shares with the client side
 * (tls_client.c): the two structs, the BIO that connects an SSL object to a
 * connection's buffers, and OpenSSL's error queue as words. tls_client.c calls
 * into tls.c and never the other way, so freeing a client context and reading
 * a client connection are done by tls.c from the fields below alone.
 */
#ifndef DL_TLS_INTERNAL_H
#define DL_TLS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <uv.h>

/* not transport/tls.h: tls.c includes this file, and an include back would be
 * a cycle for tests/layers/check_layers.py */
#include "common/buf.h"

#define DL_TLS_MAX_CERTS 8
/* resumable sessions a client context keeps, one per server name */
#define DL_TLS_CLIENT_SESSIONS 64

typedef struct {
    unsigned char name[16], aes[32], hmac[32];
} dl_tls_ticket_key_t;

/* a server's certificates of one load (a context each); replaced whole by a reload */
typedef struct {
    SSL_CTX *certs[DL_TLS_MAX_CERTS];
    int n;
} dl_tls_cert_set_t;

typedef struct {
    char *name; /* the server name the session was made with (dl_strdup) */
    SSL_SESSION *sess;
    uint64_t used; /* the context's clock when last stored or taken: the oldest goes first */
} dl_tls_session_slot_t;

struct dl_tls_ctx_s {
    uv_mutex_t lock; /* server: set and keys; client: sessions */
    /* server */
    char *cert_files[DL_TLS_MAX_CERTS], *key_files[DL_TLS_MAX_CERTS];
    int n_files;
    int alpn_h2;
    uint64_t rotate_s;
    dl_tls_cert_set_t *set;
    dl_tls_ticket_key_t keys[2]; /* [0] current, [1] previous */
    int n_keys;
    time_t keys_born;
    /* client: client != NULL */
    SSL_CTX *client;
    int verify;
    dl_tls_session_slot_t sessions[DL_TLS_CLIENT_SESSIONS];
    uint64_t clock;
};

struct dl_tls_s {
    SSL *ssl;
    dl_buf_t *out;
    const char *in;
    size_t in_len;
    char *host;      /* client: the server name, as given (dl_strdup); NULL on servers */
    char *alpn;      /* client: the protocol offered (dl_strdup) or NULL */
    int err_kept;    /* err already says why (a failed verification): keep it */
    int broken;      /* refused before the handshake (err says why): every call fails */
    char err[200];
};

/** Our BIO type (created once, any thread). */
BIO_METHOD *dl_tls_bio_method(void);
/** Connects t->ssl to t->out and t->in with a BIO of ours; 0 or DL_ENOMEM. */
int dl_tls_bio_attach(struct dl_tls_s *t);
/**
 * The reason of OpenSSL's most recent error ("" when none) written into buf;
 * clears the queue and keeps the error's code in *code when code is not NULL.
 */
const char *dl_tls_ssl_reason(char *buf, size_t len, unsigned long *code);

#endif
