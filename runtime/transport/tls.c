/*
 * tls.c - TLS over OpenSSL 3 with in-memory I/O.
 *
 * Each connection's SSL object reads from and writes to a small BIO of our own:
 * reads come straight from the bytes the connection just read (no copy into a
 * memory BIO), writes append to the connection's ciphertext buffer. The event
 * loop stays in charge of the socket, the way nginx drives OpenSSL, and the
 * connection code sees only plaintext in and ciphertext out.
 *
 * Policy: TLS 1.2 and 1.3 only, Mozilla's "intermediate" cipher list for 1.2
 * (ECDHE + AEAD), no renegotiation, no compression. Sessions resume with
 * stateless tickets whose keys are ours (not OpenSSL's per-context ones), so
 * they survive a certificate reload, are shared by every worker and rotate:
 * a ticket is accepted for two rotation periods and renewed in the second.
 *
 * The client side's contexts and connections are made by tls_client.c and are
 * the same structs (tls_internal.h); reading, writing, closing and freeing
 * here serve both, and tls_client.c is never called from here.
 */
#include "transport/tls.h"
#include "transport/tls_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "common/internal.h"

#define MAX_CERTS DL_TLS_MAX_CERTS

static const char CIPHERS_TLS12[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* the structs are in tls_internal.h, shared with the client side */
typedef dl_tls_ticket_key_t ticket_key_t;
typedef dl_tls_cert_set_t cert_set_t;

static int ex_index = -1; /* SSL_CTX ex data: the dl_tls_ctx_t */
static BIO_METHOD *bio_method;
static uv_once_t init_once = UV_ONCE_INIT;

/* ===================================================================== BIO */

static int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    dl_tls_t *t = BIO_get_data(b);
    if (dl_buf_append(t->out, data, len) != 0)
        return 0;
    *written = len;
    return 1;
}

static int bio_read(BIO *b, char *data, size_t len, size_t *got)
{
    dl_tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->in_len == 0) {
        BIO_set_retry_read(b);
        return 0;
    }
    size_t n = DL_MIN(len, t->in_len);
    memcpy(data, t->in, n);
    t->in += n;
    t->in_len -= n;
    *got = n;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    DL_UNUSED(b);
    DL_UNUSED(num);
    DL_UNUSED(ptr);
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* tls_client.c has no once of its own: everything shared is made here */
static void init_once_cb(void)
{
    ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "devloop");
    BIO_meth_set_write_ex(bio_method, bio_write);
    BIO_meth_set_read_ex(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

BIO_METHOD *dl_tls_bio_method(void)
{
    uv_once(&init_once, init_once_cb);
    return bio_method;
}

int dl_tls_bio_attach(dl_tls_t *t)
{
    BIO *b = BIO_new(dl_tls_bio_method());
    if (b == NULL)
        return DL_ENOMEM;
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b); /* one BIO both ways: SSL frees it once */
    return 0;
}

/* ========================================================== error messages */

const char *dl_tls_ssl_reason(char *buf, size_t len, unsigned long *code)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (code)
        *code = last;
    buf[0] = '\0';
    if (last) {
        const char *r = ERR_reason_error_string(last);
        snprintf(buf, len, "%s", r ? r : "unknown TLS error");
    }
    return buf;
}

static const char *ssl_reason(char *buf, size_t len)
{
    return dl_tls_ssl_reason(buf, len, NULL);
}

/* ============================================================= ticket keys */

static void keys_rotate(dl_tls_ctx_t *x, time_t now)
{
    x->keys[1] = x->keys[0];
    RAND_bytes((unsigned char *)&x->keys[0], sizeof(x->keys[0]));
    x->n_keys = x->n_keys ? 2 : 1;
    x->keys_born = now;
}

static int set_hmac(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"sha256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket callback: enc 1 seals a new ticket with the current key;
 * enc 0 finds the key a ticket names (0: unknown, full handshake; 2: an old
 * key, accept and issue a fresh ticket). */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    dl_tls_ctx_t *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_index);
    if (x == NULL)
        return 0;
    ticket_key_t k;
    int found = -1;
    uv_mutex_lock(&x->lock);
    time_t now = time(NULL);
    time_t age = now - x->keys_born;
    if (age >= 2 * (time_t)x->rotate_s)
        keys_rotate(x, now); /* idle for two periods: the previous key is too old too */
    if (age >= (time_t)x->rotate_s)
        keys_rotate(x, now);
    if (enc) {
        k = x->keys[0];
        found = 0;
    } else {
        for (int i = 0; i < x->n_keys; i++)
            if (memcmp(name, x->keys[i].name, 16) == 0) {
                k = x->keys[i];
                found = i;
                break;
            }
    }
    uv_mutex_unlock(&x->lock);
    if (found < 0)
        return 0;
    if (enc) {
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(name, k.name, 16);
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
            set_hmac(hctx, k.hmac) != 1)
            return -1;
        return 1;
    }
    if (set_hmac(hctx, k.hmac) != 1 || EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
        return -1;
    return found == 0 ? 1 : 2;
}

/* ================================================================ contexts */

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    DL_UNUSED(arg);
    dl_tls_ctx_t *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_index);
    int h1 = -1;
    /* the client's list is length-prefixed names; h2 wins when both are there */
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0 && x && x->alpn_h2) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0)
            h1 = (int)i;
        i += 1 + n;
    }
    if (h1 >= 0) {
        *out = in + h1 + 1;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no protocol we know: go on without ALPN (HTTP/1.1) */
}

/* SNI: switch to the certificate whose names cover the requested host. */
static int servername_cb(SSL *s, int *alert, void *arg)
{
    DL_UNUSED(alert);
    dl_tls_ctx_t *x = arg;
    const char *host = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (host == NULL)
        return SSL_TLSEXT_ERR_OK;
    uv_mutex_lock(&x->lock);
    cert_set_t *set = x->set;
    /* OpenSSL's own matching: every DNS name of the certificate (its CN when
     * it has none), case-insensitive, "*.example.com" covering one label */
    for (int i = 1; i < set->n; i++)
        if (X509_check_host(SSL_CTX_get0_certificate(set->certs[i]), host, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(s, set->certs[i]);
            uv_mutex_unlock(&x->lock);
            return SSL_TLSEXT_ERR_OK;
        }
    uv_mutex_unlock(&x->lock);
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

static void set_free(cert_set_t *set)
{
    if (set == NULL)
        return;
    for (int i = 0; i < set->n; i++)
        SSL_CTX_free(set->certs[i]); /* connections still using it hold references */
    dl_free(set);
}

/* Can the file be opened? Gives OpenSSL's errors a cause a user can act on. */
static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read TLS %s %s: %s", what, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static SSL_CTX *load_one(dl_tls_ctx_t *x, const char *cert, const char *key, char *err,
                         size_t errlen)
{
    char why[160];
    if (!readable("certificate", cert, err, errlen) || !readable("key", key, err, errlen))
        return NULL;
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    if (s == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason(why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_cipher_list(s, CIPHERS_TLS12);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF); /* tickets only: stateless */
    SSL_CTX_set_session_id_context(s, (const unsigned char *)"devloop", 7);
    SSL_CTX_set_num_tickets(s, 1);
    SSL_CTX_set_timeout(s, (long)(2 * x->rotate_s));
    SSL_CTX_set_ex_data(s, ex_index, x);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(s, ticket_cb);
    SSL_CTX_set_alpn_select_cb(s, alpn_cb, x);
    SSL_CTX_set_tlsext_servername_callback(s, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(s, x);
    if (SSL_CTX_use_certificate_chain_file(s, cert) != 1) {
        snprintf(err, errlen, "cannot load TLS certificate %s: %s", cert,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM) != 1) {
        const char *r = ssl_reason(why, sizeof(why));
        if (strstr(r, "values mismatch") || strstr(r, "key mismatch"))
            snprintf(err, errlen, "TLS key %s does not match certificate %s", key, cert);
        else
            snprintf(err, errlen, "cannot load TLS key %s: %s", key, r);
        goto fail;
    }
    if (SSL_CTX_check_private_key(s) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "TLS key %s does not match certificate %s", key, cert);
        goto fail;
    }
    return s;
fail:
    SSL_CTX_free(s);
    return NULL;
}

static cert_set_t *load_set(dl_tls_ctx_t *x, char *err, size_t errlen)
{
    cert_set_t *set = dl_calloc(1, sizeof(*set));
    if (set == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < x->n_files; i++) {
        SSL_CTX *s = load_one(x, x->cert_files[i], x->key_files[i], err, errlen);
        if (s == NULL) {
            set_free(set);
            return NULL;
        }
        set->certs[set->n++] = s;
    }
    return set;
}

int dl_tls_ctx_new(const dl_tls_opts_t *o, dl_tls_ctx_t **out, char *err, size_t errlen)
{
    uv_once(&init_once, init_once_cb);
    if (o->n_certs < 1 || o->n_certs > MAX_CERTS) {
        snprintf(err, errlen, "a TLS listener needs 1 to %d certificate/key pairs", MAX_CERTS);
        return DL_EINVAL;
    }
    dl_tls_ctx_t *x = dl_calloc(1, sizeof(*x));
    if (x == NULL)
        return DL_ENOMEM;
    uv_mutex_init(&x->lock);
    x->alpn_h2 = o->alpn_h2;
    x->rotate_s = o->ticket_rotate_s ? o->ticket_rotate_s : 3600;
    for (int i = 0; i < o->n_certs; i++) {
        x->cert_files[i] = dl_strdup(o->cert[i]);
        x->key_files[i] = dl_strdup(o->key[i]);
        x->n_files++;
    }
    keys_rotate(x, time(NULL));
    x->set = load_set(x, err, errlen);
    if (x->set == NULL) {
        dl_tls_ctx_free(x);
        return DL_EINVAL;
    }
    *out = x;
    return 0;
}

int dl_tls_ctx_reload(dl_tls_ctx_t *x, char *err, size_t errlen)
{
    if (x->client) {
        snprintf(err, errlen, "a TLS client context has no certificates to reload");
        return DL_EINVAL;
    }
    cert_set_t *set = load_set(x, err, errlen);
    if (set == NULL)
        return DL_EINVAL;
    uv_mutex_lock(&x->lock);
    cert_set_t *old = x->set;
    x->set = set;
    uv_mutex_unlock(&x->lock);
    set_free(old);
    return 0;
}

void dl_tls_ctx_free(dl_tls_ctx_t *x)
{
    if (x == NULL)
        return;
    /* a client context's parts (tls_client.c), freed here so that no call goes back to it.
     * Its connections may outlive it (http_client.c drops the oldest of its contexts):
     * the SSL_CTX lives on in them, so it must stop pointing here, where a ticket
     * arriving later would be kept (new_session_cb) */
    if (x->client)
        SSL_CTX_set_app_data(x->client, NULL);
    SSL_CTX_free(x->client);
    for (int i = 0; i < DL_TLS_CLIENT_SESSIONS; i++) {
        SSL_SESSION_free(x->sessions[i].sess);
        dl_free(x->sessions[i].name);
    }
    set_free(x->set);
    for (int i = 0; i < x->n_files; i++) {
        dl_free(x->cert_files[i]);
        dl_free(x->key_files[i]);
    }
    OPENSSL_cleanse(x->keys, sizeof(x->keys));
    uv_mutex_destroy(&x->lock);
    dl_free(x);
}

/* ============================================================= connections */

dl_tls_t *dl_tls_new(dl_tls_ctx_t *x, dl_buf_t *out)
{
    if (x->client)
        return NULL; /* a client context has no certificate to serve */
    dl_tls_t *t = dl_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->out = out;
    uv_mutex_lock(&x->lock);
    t->ssl = SSL_new(x->set->certs[0]);
    uv_mutex_unlock(&x->lock);
    if (t->ssl == NULL || dl_tls_bio_attach(t) != 0) {
        SSL_free(t->ssl);
        dl_free(t);
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    return t;
}

void dl_tls_free(dl_tls_t *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    dl_free(t->host);
    dl_free(t->alpn);
    dl_free(t);
}

/* A TLS record starts with a content type of 20..23 and version major 3: a
 * client talking plain HTTP starts with a method's letters instead. */
static int looks_like_http(const char *p, size_t n)
{
    static const char *methods[] = {"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "PATCH ",
                                    "OPTIONS ", "CONNECT ", "PRI "};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t m = strlen(methods[i]);
        if (n >= m && memcmp(p, methods[i], m) == 0)
            return 1;
    }
    return 0;
}

int dl_tls_read(dl_tls_t *t, const char *in, size_t len, dl_tls_plain_cb plain, void *arg)
{
    char buf[16 * 1024 + 256]; /* one record's plaintext */
    if (t->broken)
        return DL_EPROTO;
    int server = SSL_is_server(t->ssl);
    if (server && !SSL_is_init_finished(t->ssl) && SSL_in_before(t->ssl) && looks_like_http(in, len))
        return DL_EPLAIN;
    t->in = in;
    t->in_len = len;
    size_t left = len + 1; /* input not taken yet, to see that each retry makes progress */
    ERR_clear_error();
    for (;;) {
        size_t got = 0;
        int ok = SSL_read_ex(t->ssl, buf, sizeof(buf), &got);
        if (ok == 1) {
            plain(arg, buf, got);
            continue;
        }
        int e = SSL_get_error(t->ssl, ok);
        if (e == SSL_ERROR_WANT_READ && t->in_len == 0)
            return 0;
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && t->in_len < left) {
            left = t->in_len;
            continue; /* it took input and wants more of what is waiting */
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return DL_EOF;
        unsigned long code;
        char why[sizeof(t->err)];
        dl_tls_ssl_reason(why, sizeof(why), &code);
        if (!t->err_kept) /* a client's verify callback said it better */
            snprintf(t->err, sizeof(t->err), "%s", why[0] ? why : "TLS error");
        if (t->err_kept || !server)
            return DL_EPROTO;
        /* a request line split over reads gets past looks_like_http */
        if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
            (ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST ||
             ERR_GET_REASON(code) == SSL_R_HTTPS_PROXY_REQUEST))
            return DL_EPLAIN;
        return DL_EPROTO;
    }
}

int dl_tls_write(dl_tls_t *t, const char *data, size_t len)
{
    if (t->broken)
        return DL_EPROTO;
    if (!SSL_is_server(t->ssl) && !SSL_is_init_finished(t->ssl)) {
        /* SSL_write would drive the handshake and fail with no reason */
        if (!t->err_kept)
            snprintf(t->err, sizeof(t->err), "TLS write before the handshake finished");
        return DL_EPROTO;
    }
    ERR_clear_error();
    while (len > 0) {
        size_t n = 0;
        if (SSL_write_ex(t->ssl, data, len, &n) != 1) {
            if (!t->err_kept)
                ssl_reason(t->err, sizeof(t->err));
            ERR_clear_error(); /* when err was kept */
            return DL_EPROTO;
        }
        data += n;
        len -= n;
    }
    return t->out->oom ? DL_ENOMEM : 0;
}

void dl_tls_close_notify(dl_tls_t *t)
{
    ERR_clear_error();
    if (SSL_is_init_finished(t->ssl) && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(t->ssl); /* queues the alert; the peer's answer is not awaited */
    ERR_clear_error();
}

int dl_tls_ready(const dl_tls_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

int dl_tls_is_h2(const dl_tls_t *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

const char *dl_tls_alpn(const dl_tls_t *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n == 0)
        return NULL;
    if (n == 2 && memcmp(p, "h2", 2) == 0)
        return "h2";
    if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
        return "http/1.1";
    /* a client offers one protocol and OpenSSL refuses a server's choice it did not offer */
    if (t->alpn && strlen(t->alpn) == n && memcmp(p, t->alpn, n) == 0)
        return t->alpn;
    return NULL;
}

DL_TEST_HOOK int dl_tls_resumed(const dl_tls_t *t)
{
    return SSL_session_reused(t->ssl);
}

const char *dl_tls_error(const dl_tls_t *t)
{
    return t->err[0] ? t->err : "TLS error";
}
