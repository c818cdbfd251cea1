/*
 * tls_client.c - the client side of TLS, for outbound connections, over the
 * same in-memory I/O as the server side (tls.c: our BIO reads the bytes the
 * connection just received and appends ciphertext to its output buffer).
 *
 * A context holds the trusted CAs (the system's or one PEM file) and the
 * policy: TLS 1.2 minimum, no renegotiation, no compression, OpenSSL's default
 * cipher list (servers in the wild need more than the server side offers). A
 * connection sends the server name as SNI and, when the context verifies,
 * checks the chain and the name during the handshake (OpenSSL's X509_check_host
 * without partial wildcards, or the IP address SAN for an IP literal); a
 * failure is put in words by the verify callback. Sessions resume: the context
 * keeps the newest resumable session per server name (a bounded table, the
 * least recently used goes). A TLS 1.3 ticket is offered again until the
 * server sends a new one, which RFC 8446 C.4 discourages for privacy (the
 * server can link the connections): a server-side client has no such privacy,
 * and servers that renew no ticket on resumption (tls.c, while its key is
 * current) would otherwise resume every other connection only.
 */
#include "transport/tls_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/internal.h"
#include "transport/tls_internal.h"

#define MAX_NAME 253 /* a DNS name's longest text form (RFC 1035 3.1) */

/* ================================================================ sessions */

/* The slot of name, or NULL. Under x->lock. */
static dl_tls_session_slot_t *slot_find(dl_tls_ctx_t *x, const char *name)
{
    for (int i = 0; i < DL_TLS_CLIENT_SESSIONS; i++)
        if (x->sessions[i].name && strcmp(x->sessions[i].name, name) == 0)
            return &x->sessions[i];
    return NULL;
}

static void slot_clear(dl_tls_session_slot_t *s)
{
    SSL_SESSION_free(s->sess);
    dl_free(s->name);
    memset(s, 0, sizeof(*s));
}

/* OpenSSL hands over each new session (after the handshake on TLS 1.2, with
 * each NewSessionTicket on TLS 1.3). A copy is kept: SSL_free() marks the
 * connection's own session not resumable when no close_notify was sent, and
 * most connections end without one. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    dl_tls_t *t = SSL_get_app_data(ssl);
    dl_tls_ctx_t *x = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (t == NULL || x == NULL || t->host == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    sess = SSL_SESSION_dup(sess);
    if (sess == NULL)
        return 0;
    int kept = 0;
    uv_mutex_lock(&x->lock);
    dl_tls_session_slot_t *s = slot_find(x, t->host);
    if (s == NULL) { /* an empty slot, else the least recently used */
        s = &x->sessions[0];
        for (int i = 0; i < DL_TLS_CLIENT_SESSIONS && s->name; i++)
            if (x->sessions[i].name == NULL || x->sessions[i].used < s->used)
                s = &x->sessions[i];
        slot_clear(s);
        s->name = dl_strdup(t->host);
    }
    if (s->name) {
        SSL_SESSION_free(s->sess);
        s->sess = sess;
        s->used = ++x->clock;
        kept = 1;
    }
    uv_mutex_unlock(&x->lock);
    if (!kept)
        SSL_SESSION_free(sess);
    return 0; /* OpenSSL keeps its reference to the original */
}

/* Offers the session kept for t->host, if any: a copy, which SSL_free() may
 * mark not resumable (see new_session_cb) without touching the table's. */
static void session_offer(dl_tls_ctx_t *x, dl_tls_t *t)
{
    SSL_SESSION *sess = NULL;
    uv_mutex_lock(&x->lock);
    dl_tls_session_slot_t *s = slot_find(x, t->host);
    if (s && s->sess) {
        sess = SSL_SESSION_dup(s->sess);
        s->used = ++x->clock;
    }
    uv_mutex_unlock(&x->lock);
    if (sess) {
        SSL_set_session(t->ssl, sess); /* takes its own reference */
        SSL_SESSION_free(sess);
    }
}

/* ================================================================ contexts */

/* A failed check of the peer's certificate, in words: the callback runs at the
 * first error and the handshake stops there (SSL_VERIFY_PEER). */
static int verify_cb(int ok, X509_STORE_CTX *sc)
{
    if (ok)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx());
    dl_tls_t *t = ssl ? SSL_get_app_data(ssl) : NULL;
    if (t && !t->err_kept) {
        int e = X509_STORE_CTX_get_error(sc);
        const char *what = X509_verify_cert_error_string(e);
        if (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(t->err, sizeof(t->err), "certificate verify failed: %s (expected %s)", what,
                     t->host ? t->host : "");
        else
            snprintf(t->err, sizeof(t->err), "certificate verify failed: %s", what);
        t->err_kept = 1;
    }
    return 0;
}

/* Adds every certificate of the PEM file path to the context's trust store. */
static int load_ca_file(SSL_CTX *s, const char *path, char *err, size_t errlen)
{
    char why[160];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read TLS CA file %s: %s", path, strerror(errno));
        return 0;
    }
    fclose(f);
    ERR_clear_error();
    BIO *in = BIO_new_file(path, "r");
    STACK_OF(X509_INFO) *info = in ? PEM_X509_INFO_read_bio(in, NULL, NULL, NULL) : NULL;
    BIO_free(in);
    if (info == NULL) {
        snprintf(err, errlen, "cannot load TLS CA file %s: %s", path,
                 dl_tls_ssl_reason(why, sizeof(why), NULL));
        return 0;
    }
    X509_STORE *store = SSL_CTX_get_cert_store(s);
    int n = 0, ok = 1;
    for (int i = 0; i < sk_X509_INFO_num(info); i++) {
        X509_INFO *xi = sk_X509_INFO_value(info, i);
        if (xi->x509 == NULL)
            continue;
        if (X509_STORE_add_cert(store, xi->x509) != 1) {
            unsigned long code = ERR_peek_last_error();
            if (ERR_GET_REASON(code) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                snprintf(err, errlen, "cannot load TLS CA file %s: %s", path,
                         dl_tls_ssl_reason(why, sizeof(why), NULL));
                ok = 0;
                break;
            }
            ERR_clear_error(); /* the same CA twice is harmless */
        }
        n++;
    }
    sk_X509_INFO_pop_free(info, X509_INFO_free);
    if (ok && n == 0) {
        snprintf(err, errlen, "TLS CA file %s holds no certificate", path);
        ok = 0;
    }
    ERR_clear_error();
    return ok;
}

int dl_tls_client_ctx_new(const dl_tls_client_opts_t *o, dl_tls_ctx_t **out, char *err,
                          size_t errlen)
{
    static const dl_tls_client_opts_t defaults = {.verify = 1, .ca_file = NULL};
    char why[160];
    if (o == NULL)
        o = &defaults;
    if (dl_tls_bio_method() == NULL) {
        snprintf(err, errlen, "out of memory");
        return DL_ENOMEM;
    }
    dl_tls_ctx_t *x = dl_calloc(1, sizeof(*x));
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return DL_ENOMEM;
    }
    uv_mutex_init(&x->lock);
    x->verify = o->verify ? 1 : 0;
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    if (s == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: %s",
                 dl_tls_ssl_reason(why, sizeof(why), NULL));
        dl_tls_ctx_free(x);
        return DL_ENOMEM;
    }
    x->client = s; /* freed with x from here on */
    SSL_CTX_set_app_data(s, x);
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(s, new_session_cb);
    if (o->ca_file) {
        if (!load_ca_file(s, o->ca_file, err, errlen)) {
            dl_tls_ctx_free(x);
            return DL_EINVAL;
        }
    } else if (SSL_CTX_set_default_verify_paths(s) != 1) {
        snprintf(err, errlen, "cannot load the system's trusted TLS certificates: %s",
                 dl_tls_ssl_reason(why, sizeof(why), NULL));
        dl_tls_ctx_free(x);
        return DL_EINVAL;
    }
    SSL_CTX_set_verify(s, x->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       x->verify ? verify_cb : NULL);
    ERR_clear_error();
    *out = x;
    return 0;
}

/* ============================================================= connections */

static int is_ip(const char *name)
{
    unsigned char a[16];
    return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

/* Letters, digits, '-', '_' and '.' between non-empty labels: what SNI and the
 * name check take; anything else (a '*', a space, a '/') is refused here. */
static int is_dns_name(const char *name)
{
    size_t label = 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0;
}

static void refuse(dl_tls_t *t, const char *why, const char *what)
{
    snprintf(t->err, sizeof(t->err), "%s%s", why, what ? what : "");
    t->broken = 1;
}

/* Sets the name (SNI, what to verify, the session's key) and ALPN; refuses the
 * connection (t->broken) on unusable ones. 0 or DL_ENOMEM. */
static int setup(dl_tls_ctx_t *x, dl_tls_t *t, const char *server_name, const char *alpn)
{
    if (alpn) {
        size_t n = strlen(alpn);
        if (n == 0 || n > 255) {
            refuse(t, "invalid ALPN protocol: its length must be 1 to 255 bytes", NULL);
            return 0;
        }
        unsigned char wire[256];
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, alpn, n);
        t->alpn = dl_strdup(alpn);
        if (t->alpn == NULL || SSL_set_alpn_protos(t->ssl, wire, (unsigned int)n + 1) != 0)
            return DL_ENOMEM; /* 0 is success for SSL_set_alpn_protos */
    }
    if (server_name == NULL || server_name[0] == '\0') {
        if (x->verify)
            refuse(t, "no server name to verify the certificate against", NULL);
        return 0; /* verify off: no SNI, no session to resume */
    }
    size_t n = strlen(server_name);
    if (n > MAX_NAME + 2) {
        refuse(t, "invalid server name: longer than 253 characters", NULL);
        return 0;
    }
    char name[MAX_NAME + 3];
    memcpy(name, server_name, n + 1);
    int bracketed = n > 2 && name[0] == '[' && name[n - 1] == ']';
    if (bracketed) { /* an IPv6 literal as URLs write it */
        memmove(name, name + 1, n - 2);
        name[n - 2] = '\0';
    } else if (n > 1 && name[n - 1] == '.') {
        name[n - 1] = '\0'; /* the root's dot is not part of SNI nor of a certificate name */
    }
    int ip = is_ip(name);
    if ((bracketed && !ip) || (!ip && !is_dns_name(name)) || strlen(name) > MAX_NAME) {
        refuse(t, "invalid server name: ", server_name);
        return 0;
    }
    t->host = dl_strdup(name);
    if (t->host == NULL)
        return DL_ENOMEM;
    if (ip) {
        /* RFC 6066 3: no IP literal in SNI */
        if (x->verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) != 1)
            return DL_ENOMEM; /* the address parsed above */
    } else {
        if (SSL_set_tlsext_host_name(t->ssl, name) != 1)
            return DL_ENOMEM;
        if (x->verify) {
            SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(t->ssl, name) != 1)
                return DL_ENOMEM;
        }
    }
    session_offer(x, t);
    return 0;
}

dl_tls_t *dl_tls_client_new(dl_tls_ctx_t *x, dl_buf_t *out, const char *server_name,
                            const char *alpn)
{
    if (x->client == NULL)
        return NULL; /* a server context */
    dl_tls_t *t = dl_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->out = out;
    ERR_clear_error();
    t->ssl = SSL_new(x->client);
    if (t->ssl == NULL || dl_tls_bio_attach(t) != 0)
        goto fail;
    SSL_set_app_data(t->ssl, t);
    SSL_set_connect_state(t->ssl);
    if (setup(x, t, server_name, alpn) != 0)
        goto fail;
    if (t->broken)
        return t;
    int r = SSL_do_handshake(t->ssl); /* writes the ClientHello, then wants the answer */
    if (out->oom)
        goto fail;
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
        char why[sizeof(t->err)];
        refuse(t, "cannot start the TLS handshake: ", dl_tls_ssl_reason(why, sizeof(why), NULL));
    }
    ERR_clear_error();
    return t;
fail:
    ERR_clear_error();
    dl_tls_free(t);
    return NULL;
}
