/*
 * test_tls.c - the server side of runtime/transport/tls.c driven by a real OpenSSL
 * client in the same process: the client's records go through memory BIOs to
 * dl_tls_read, the server's ciphertext buffer goes back into the client.
 * Keys and self-signed certificates are made here (P-256, SAN extensions) and
 * written as PEM into a temporary directory that each test removes.
 * Covered: the handshake and ALPN (h2, http/1.1, none, unknown), application
 * data both ways (1 MB fed in odd-sized pieces, 1 byte at a time too), TLS 1.2
 * and 1.3 only clients and a refused TLS 1.1 one, ticket resumption (1.2, 1.3,
 * across a reload, not across contexts), SNI by SAN, wildcard and CN, the
 * errors of dl_tls_ctx_new, plain HTTP, garbage, close_notify, reloads (new
 * certificate for new connections, old connections keep working, a broken
 * reload changes nothing), TLS 1.3 KeyUpdate and refused TLS 1.2
 * renegotiation.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/internal.h"
#include "transport/tls.h"
#include "sb.h"
#include "unit.h"

/* Compares a large buffer without printing it: the first differing offset. */
#define EXPECT_BYTES(got, glen, want, wlen)                                       \
    do {                                                                          \
        size_t gl_ = (glen), wl_ = (wlen), i_ = 0;                                \
        const unsigned char *g_ = (const unsigned char *)(got);                   \
        const unsigned char *w_ = (const unsigned char *)(want);                  \
        while (i_ < gl_ && i_ < wl_ && g_[i_] == w_[i_])                          \
            i_++;                                                                 \
        if (gl_ != wl_ || i_ != gl_)                                              \
            DL_FAIL_AT("%s (%zu bytes) differs from %s (%zu bytes) at offset %zu", \
                       #got, gl_, #want, wl_, i_);                                \
    } while (0)

/* deterministic pseudo-random bytes (xorshift64) */
static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (unsigned char)(s >> 24);
    }
}

/* ---- certificates in a temporary directory */

#define FX_PAIRS 4

typedef struct {
    char dir[64];
    char crt[FX_PAIRS][256], key[FX_PAIRS][256];
} fx_t;

static void fx_path(fx_t *f, char *out, size_t len, const char *name)
{
    char p[sizeof(f->crt[0])]; /* out may be a member of f */
    snprintf(p, sizeof(p), "%s/%s", f->dir, name);
    snprintf(out, len, "%s", p);
}

static int write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return 0;
    int ok = x ? PEM_write_X509(fp, x) : PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL);
    return fclose(fp) == 0 && ok == 1;
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fputs(text, fp) < 0)
        DL_FAIL_AT("cannot write %s", path);
    if (fp)
        fclose(fp);
}

/* A self-signed certificate for key: subject CN=cn, SAN san ("DNS:a,DNS:b") when given. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2); /* v3 */
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    if (san) {
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
            DL_FAIL_AT("cannot add SAN %s", san);
        X509_EXTENSION_free(ext);
    }
    if (X509_sign(x, key, EVP_sha256()) <= 0)
        DL_FAIL_AT("cannot sign the certificate for %s", cn);
    return x;
}

/* Makes pair i (a new P-256 key and its certificate) as <dir>/<i>.crt and .key. */
static void fx_pair(fx_t *f, int i, const char *cn, const char *san)
{
    char name[32];
    snprintf(name, sizeof(name), "%d.crt", i);
    fx_path(f, f->crt[i], sizeof(f->crt[i]), name);
    snprintf(name, sizeof(name), "%d.key", i);
    fx_path(f, f->key[i], sizeof(f->key[i]), name);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL) {
        DL_FAIL_AT("EVP_EC_gen failed");
        return;
    }
    X509 *x = make_cert(k, cn, san);
    if (!write_pem(f->crt[i], x, NULL) || !write_pem(f->key[i], NULL, k))
        DL_FAIL_AT("cannot write pair %d in %s", i, f->dir);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* The usual pairs: [0] CN=localhost (the default), [1] CN=second with SAN
 * other.test and *.wild.test, [2] CN=cn-only.test without SAN. */
static int fx_init(fx_t *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/dl_tls_XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        DL_FAIL_AT("mkdtemp: %s", strerror(errno));
        return 0;
    }
    fx_pair(f, 0, "localhost", NULL);
    fx_pair(f, 1, "second", "DNS:other.test,DNS:*.wild.test");
    fx_pair(f, 2, "cn-only.test", NULL);
    return 1;
}

static void fx_done(fx_t *f)
{
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    if (rmdir(f->dir) != 0)
        DL_FAIL_AT("rmdir %s: %s", f->dir, strerror(errno));
}

static dl_tls_ctx_t *fx_ctx(fx_t *f, int n, int h2)
{
    const char *c[FX_PAIRS], *k[FX_PAIRS];
    for (int i = 0; i < n; i++) {
        c[i] = f->crt[i];
        k[i] = f->key[i];
    }
    dl_tls_opts_t o = {.cert = c, .key = k, .n_certs = n, .alpn_h2 = h2};
    dl_tls_ctx_t *x = NULL;
    char err[512] = "";
    int rc = dl_tls_ctx_new(&o, &x, err, sizeof(err));
    if (rc != 0 || x == NULL)
        DL_FAIL_AT("dl_tls_ctx_new: %d: %s", rc, err);
    return x;
}

/* ---- one connection: an OpenSSL client and a dl_tls_t server */

typedef struct {
    int min, max;            /* TLS1_x_VERSION; 0: the library's default */
    const char *const *alpn; /* NULL-terminated protocol names; NULL: no ALPN */
    const char *sni;
    SSL_SESSION *session; /* to resume */
    int seclevel0;        /* let the client offer old protocols */
} copts_t;

typedef struct {
    SSL_CTX *cctx;
    SSL *c;
    BIO *crd, *cwr; /* the client reads crd (server output), writes cwr */
    dl_tls_t *t;
    dl_buf_t out; /* the server's ciphertext */
    sb_t plain;   /* what the server's plaintext callback saw, in order */
    int calls;    /* plaintext callback calls */
    int rc;       /* the first nonzero dl_tls_read result */
    int cerr;     /* the client's SSL_get_error when its handshake failed */
} conn_t;

static void on_plain(void *arg, const char *data, size_t len)
{
    conn_t *k = arg;
    k->calls++;
    sb_add(&k->plain, data, len);
}

static int conn_open(conn_t *k, dl_tls_ctx_t *x, const copts_t *o)
{
    static const copts_t none;
    if (o == NULL)
        o = &none;
    memset(k, 0, sizeof(*k));
    dl_buf_init(&k->out);
    k->cctx = SSL_CTX_new(TLS_client_method());
    if (k->cctx == NULL)
        return 0;
    if (o->seclevel0) {
        SSL_CTX_set_security_level(k->cctx, 0);
        SSL_CTX_set_cipher_list(k->cctx, "DEFAULT:@SECLEVEL=0");
    }
    if (o->min)
        SSL_CTX_set_min_proto_version(k->cctx, o->min);
    if (o->max)
        SSL_CTX_set_max_proto_version(k->cctx, o->max);
    k->c = SSL_new(k->cctx);
    k->crd = BIO_new(BIO_s_mem());
    k->cwr = BIO_new(BIO_s_mem());
    SSL_set_bio(k->c, k->crd, k->cwr); /* the SSL owns both now */
    SSL_set_connect_state(k->c);
    if (o->alpn) {
        unsigned char wire[256];
        unsigned int n = 0;
        for (int i = 0; o->alpn[i]; i++) {
            size_t l = strlen(o->alpn[i]);
            wire[n++] = (unsigned char)l;
            memcpy(wire + n, o->alpn[i], l);
            n += (unsigned int)l;
        }
        if (SSL_set_alpn_protos(k->c, wire, n) != 0) /* 0 is success here */
            DL_FAIL_AT("SSL_set_alpn_protos failed");
    }
    if (o->sni)
        SSL_set_tlsext_host_name(k->c, o->sni);
    if (o->session && SSL_set_session(k->c, o->session) != 1)
        DL_FAIL_AT("SSL_set_session failed");
    k->t = dl_tls_new(x, &k->out);
    if (k->t == NULL)
        DL_FAIL_AT("dl_tls_new returned NULL");
    return k->t != NULL;
}

static void conn_close(conn_t *k)
{
    SSL_free(k->c); /* and its BIOs */
    SSL_CTX_free(k->cctx);
    dl_tls_free(k->t);
    dl_buf_free(&k->out);
    sb_free(&k->plain);
    ERR_clear_error();
}

/* Feeds data to dl_tls_read, each piece in a buffer of its own exact size (so
 * ASan sees any read past it); piece sizes cycle through sizes[] (NULL: all at
 * once). Stops at the first nonzero result, kept in k->rc. */
static void feed(conn_t *k, const char *data, size_t len, const size_t *sizes, int n_sizes)
{
    size_t off = 0;
    for (int i = 0; off < len && k->rc == 0; i++) {
        size_t m = sizes ? sizes[i % n_sizes] : len;
        if (m > len - off)
            m = len - off;
        char *piece = malloc(m);
        memcpy(piece, data + off, m);
        k->rc = dl_tls_read(k->t, piece, m, on_plain, k);
        free(piece);
        off += m;
    }
}

/* client → server: everything the client wrote so far */
static void c2s_sizes(conn_t *k, const size_t *sizes, int n_sizes)
{
    size_t n = BIO_ctrl_pending(k->cwr);
    if (n == 0 || k->rc != 0)
        return;
    char *all = malloc(n);
    if (BIO_read(k->cwr, all, (int)n) != (int)n)
        DL_FAIL_AT("BIO_read of %zu pending bytes failed", n);
    feed(k, all, n, sizes, n_sizes);
    free(all);
}

static void c2s(conn_t *k)
{
    c2s_sizes(k, NULL, 0);
}

/* server → client: the server's output buffer */
static void s2c(conn_t *k)
{
    if (k->out.len > 0) {
        if (BIO_write(k->crd, k->out.data, (int)k->out.len) != (int)k->out.len)
            DL_FAIL_AT("BIO_write of %zu bytes failed", k->out.len);
        dl_buf_reset(&k->out);
    }
}

/* Runs the handshake (client records in pieces of sizes[]); 1 when both
 * sides finished, 0 with k->rc or k->cerr set otherwise. */
static int handshake_sizes(conn_t *k, const size_t *sizes, int n_sizes)
{
    for (int i = 0; i < 20; i++) {
        int r = SSL_do_handshake(k->c);
        if (r != 1) {
            int e = SSL_get_error(k->c, r);
            if (e != SSL_ERROR_WANT_READ) {
                k->cerr = e;
                c2s_sizes(k, sizes, n_sizes); /* an alert, if any */
                return 0;
            }
        }
        c2s_sizes(k, sizes, n_sizes);
        s2c(k);
        if (k->rc != 0)
            return 0;
        if (r == 1 && dl_tls_ready(k->t))
            return 1;
    }
    DL_FAIL_AT("handshake does not finish");
    return 0;
}

static int handshake(conn_t *k)
{
    return handshake_sizes(k, NULL, 0);
}

/* handshake() where a failure is the test's failure, never a skipped check */
static int handshake_ok(conn_t *k)
{
    if (handshake(k))
        return 1;
    DL_FAIL_AT("handshake failed: server rc %d, client error %d", k->rc, k->cerr);
    return 0;
}

/* The client reads what the server sent so far (and processes tickets). */
static void client_read(conn_t *k, sb_t *into)
{
    char buf[16384];
    size_t got = 0;
    s2c(k);
    while (SSL_read_ex(k->c, buf, sizeof(buf), &got) == 1)
        sb_add(into, buf, got);
    int e = SSL_get_error(k->c, 0);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN)
        DL_FAIL_AT("client SSL_read: error %d", e);
}

static void client_write(conn_t *k, const void *data, size_t len)
{
    size_t w = 0;
    if (SSL_write_ex(k->c, data, len, &w) != 1 || w != len)
        DL_FAIL_AT("client SSL_write_ex of %zu bytes: wrote %zu", len, w);
}

/* The subject CN of the certificate the client got. */
static void peer_cn(conn_t *k, char *cn, size_t len)
{
    cn[0] = '\0';
    X509 *x = SSL_get1_peer_certificate(k->c);
    if (x) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)len);
        X509_free(x);
    }
}

/* A full round trip on an established connection: both ways, checked. */
static void exchange(conn_t *k, const char *c2s_msg, const char *s2c_msg)
{
    size_t before = k->plain.len;
    client_write(k, c2s_msg, strlen(c2s_msg));
    c2s(k);
    EXPECT_EQ(k->rc, 0);
    EXPECT_MEM(k->plain.p + before, k->plain.len - before, c2s_msg, strlen(c2s_msg));
    EXPECT_EQ(dl_tls_write(k->t, s2c_msg, strlen(s2c_msg)), 0);
    sb_t got = {0};
    client_read(k, &got);
    EXPECT_MEM(got.p ? got.p : "", got.len, s2c_msg, strlen(s2c_msg));
    sb_free(&got);
}

/* ================================================================ handshake */

/* One handshake offering alpn; returns what dl_tls_is_h2 said (-1: failed). */
static int alpn_case(const char *const *alpn, int h2_enabled, const char *want_selected)
{
    fx_t f;
    if (!fx_init(&f))
        return -1;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, h2_enabled);
    conn_t k;
    int h2 = -1;
    copts_t o = {.alpn = alpn};
    if (x && conn_open(&k, x, &o)) {
        EXPECT_EQ(dl_tls_ready(k.t), 0);
        if (handshake_ok(&k)) {
            EXPECT_EQ(dl_tls_ready(k.t), 1);
            EXPECT_EQ(dl_tls_resumed(k.t), 0);
            h2 = dl_tls_is_h2(k.t);
            const unsigned char *p = NULL;
            unsigned int n = 0;
            SSL_get0_alpn_selected(k.c, &p, &n);
            EXPECT_MEM(n ? (const char *)p : "", n, want_selected, strlen(want_selected));
            exchange(&k, "ping", "pong");
        } else {
            DL_FAIL_AT("handshake failed: rc %d (%s), client error %d", k.rc,
                       dl_tls_error(k.t), k.cerr);
        }
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
    return h2;
}

DL_TEST(tls_alpn_h2)
{
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    EXPECT_EQ(alpn_case(alpn, 1, "h2"), 1);
    /* h2 wins wherever it is in the client's list */
    static const char *const rev[] = {"http/1.1", "h2", NULL};
    EXPECT_EQ(alpn_case(rev, 1, "h2"), 1);
}

DL_TEST(tls_alpn_h2_disabled)
{
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    EXPECT_EQ(alpn_case(alpn, 0, "http/1.1"), 0);
}

DL_TEST(tls_alpn_http11)
{
    static const char *const alpn[] = {"http/1.1", NULL};
    EXPECT_EQ(alpn_case(alpn, 1, "http/1.1"), 0);
}

DL_TEST(tls_alpn_none)
{
    EXPECT_EQ(alpn_case(NULL, 1, ""), 0);
}

DL_TEST(tls_alpn_unknown)
{
    static const char *const alpn[] = {"foo", NULL};
    EXPECT_EQ(alpn_case(alpn, 1, ""), 0);
    static const char *const two[] = {"foo", "spdy/3", NULL};
    EXPECT_EQ(alpn_case(two, 1, ""), 0);
}

/* The client's records reach the server one byte at a time. */
DL_TEST(tls_handshake_bytewise)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    static const size_t one[] = {1};
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (int v = 0; v < 2 && x; v++) {
        conn_t k;
        copts_t o = {.min = versions[v], .max = versions[v]};
        if (!conn_open(&k, x, &o))
            break;
        EXPECT_EQ(handshake_sizes(&k, one, 1), 1);
        EXPECT_EQ(SSL_version(k.c), versions[v]);
        client_write(&k, "hello, bytewise", 15);
        c2s_sizes(&k, one, 1);
        EXPECT_EQ(k.rc, 0);
        EXPECT_MEM(k.plain.p, k.plain.len, "hello, bytewise", 15);
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ========================================================== application data */

DL_TEST(tls_data_both_ways)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    if (x && conn_open(&k, x, NULL)) {
        /* TLS 1.3: the client's first data leaves with its Finished, in one read */
        for (int i = 0; i < 20; i++) {
            int r = SSL_do_handshake(k.c);
            if (r == 1)
                break;
            c2s(&k);
            s2c(&k);
        }
        client_write(&k, "first", 5);
        client_write(&k, "second", 6);
        c2s(&k);
        EXPECT_EQ(k.rc, 0);
        EXPECT_EQ(dl_tls_ready(k.t), 1);
        EXPECT_MEM(k.plain.p, k.plain.len, "firstsecond", 11);
        EXPECT_EQ(k.calls, 2); /* one callback per record */
        for (int i = 0; i < 5; i++) {
            char a[32], b[32];
            snprintf(a, sizeof(a), "request %d", i);
            snprintf(b, sizeof(b), "response %d", i);
            exchange(&k, a, b);
        }
        /* several server writes before the client reads */
        EXPECT_EQ(dl_tls_write(k.t, "one ", 4), 0);
        EXPECT_EQ(dl_tls_write(k.t, "two ", 4), 0);
        EXPECT_EQ(dl_tls_write(k.t, "", 0), 0);
        EXPECT_EQ(dl_tls_write(k.t, "three", 5), 0);
        sb_t got = {0};
        client_read(&k, &got);
        EXPECT_MEM(got.p, got.len, "one two three", 13);
        sb_free(&got);
        /* empty input changes nothing */
        size_t before = k.plain.len;
        EXPECT_EQ(dl_tls_read(k.t, "", 0, on_plain, &k), 0);
        EXPECT_EQ(k.plain.len, before);
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

#define MB (1024 * 1024)

/* 1 MB from the client, its ciphertext fed in odd pieces. */
static void big_read(int version)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    copts_t o = {.min = version, .max = version};
    if (x && conn_open(&k, x, &o) && handshake_ok(&k)) {
        unsigned char *payload = malloc(MB);
        fill_random(payload, MB, (uint64_t)version);
        /* in several writes so records end at odd places too */
        static const size_t wsizes[] = {1, 100000, 16384, 16385, 3, 500000};
        size_t off = 0;
        for (int i = 0; off < MB; i++) {
            size_t m = DL_MIN(wsizes[i % 6], (size_t)MB - off);
            client_write(&k, payload + off, m);
            off += m;
        }
        size_t n = BIO_ctrl_pending(k.cwr);
        char *ct = malloc(n);
        EXPECT_EQ(BIO_read(k.cwr, ct, (int)n), (long long)n);
        EXPECT(n > MB);
        /* the first 20000 bytes one at a time (several records' headers
         * and bodies split everywhere), then odd sizes */
        static const size_t one[] = {1};
        size_t head = 20000;
        feed(&k, ct, head, one, 1);
        static const size_t sizes[] = {7, 16385, 1, 2, 3, 4, 5, 1000, 16384 + 22,
                                       4095, 65537, 13, 33333};
        feed(&k, ct + head, n - head, sizes, (int)DL_ARRAY_SIZE(sizes));
        EXPECT_EQ(k.rc, 0);
        EXPECT_BYTES(k.plain.p, k.plain.len, payload, (size_t)MB);
        free(ct);
        free(payload);
        exchange(&k, "after", "still fine");
    } else {
        DL_FAIL_AT("no connection");
    }
    if (x)
        conn_close(&k);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_read_1mb_odd_pieces)
{
    big_read(TLS1_3_VERSION);
}

DL_TEST(tls_read_1mb_odd_pieces_tls12)
{
    big_read(TLS1_2_VERSION);
}

DL_TEST(tls_write_1mb)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    if (x && conn_open(&k, x, NULL) && handshake_ok(&k)) {
        unsigned char *payload = malloc(MB);
        fill_random(payload, MB, 99);
        EXPECT_EQ(dl_tls_write(k.t, (const char *)payload, MB), 0);
        EXPECT(k.out.len > MB);
        sb_t got = {0};
        client_read(&k, &got);
        EXPECT_BYTES(got.p, got.len, payload, (size_t)MB);
        sb_free(&got);
        /* and in odd pieces, read by the client as they come */
        static const size_t sizes[] = {1, 7, 16385, 16384, 16383, 100003};
        size_t off = 0;
        for (int i = 0; off < MB; i++) {
            size_t m = DL_MIN(sizes[i % 6], (size_t)MB - off);
            EXPECT_EQ(dl_tls_write(k.t, (const char *)payload + off, m), 0);
            off += m;
            if (i % 3 == 0)
                client_read(&k, &got);
        }
        client_read(&k, &got);
        EXPECT_BYTES(got.p, got.len, payload, (size_t)MB);
        sb_free(&got);
        free(payload);
    } else {
        DL_FAIL_AT("no connection");
    }
    if (x)
        conn_close(&k);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ================================================================== versions */

static void version_case(int version)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    copts_t o = {.min = version, .max = version};
    if (x && conn_open(&k, x, &o)) {
        EXPECT_EQ(handshake(&k), 1);
        EXPECT_EQ(SSL_version(k.c), version);
        exchange(&k, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n");
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_version_12_only)
{
    version_case(TLS1_2_VERSION);
}

DL_TEST(tls_version_13_only)
{
    version_case(TLS1_3_VERSION);
}

DL_TEST(tls_version_11_refused)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    copts_t o = {.min = TLS1_VERSION, .max = TLS1_1_VERSION, .seclevel0 = 1};
    if (x && conn_open(&k, x, &o)) {
        EXPECT_EQ(handshake(&k), 0);
        EXPECT_EQ(k.rc, DL_EPROTO);
        const char *e = dl_tls_error(k.t);
        EXPECT(e != NULL && e[0] != '\0');
        EXPECT_EQ(dl_tls_ready(k.t), 0);
        /* the server's alert makes the client fail too */
        int r = SSL_do_handshake(k.c);
        EXPECT(r != 1);
        EXPECT_EQ(SSL_get_error(k.c, r), SSL_ERROR_SSL);
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ============================================================== resumption */

/* The client closes cleanly (OpenSSL marks the session of a client freed
 * without close_notify not resumable); the server sees DL_EOF. */
static void client_close(conn_t *k)
{
    EXPECT_EQ(SSL_shutdown(k->c), 0);
    c2s(k);
    EXPECT_EQ(k->rc, DL_EOF);
}

/* A first connection; returns its session, saved after reading data (TLS
 * 1.3 tickets arrive after the handshake). */
static SSL_SESSION *first_session(dl_tls_ctx_t *x, const copts_t *o)
{
    conn_t k;
    SSL_SESSION *s = NULL;
    if (!conn_open(&k, x, o))
        return NULL;
    if (handshake_ok(&k)) {
        EXPECT_EQ(dl_tls_resumed(k.t), 0);
        exchange(&k, "hello", "welcome");
        s = SSL_get1_session(k.c);
        client_close(&k);
    } else {
        DL_FAIL_AT("first handshake failed: %d %s", k.rc, dl_tls_error(k.t));
    }
    conn_close(&k);
    EXPECT(s == NULL || (SSL_SESSION_is_resumable(s) && SSL_SESSION_has_ticket(s)));
    return s;
}

/* A connection offering o->session; returns dl_tls_resumed (-1: failed). */
static int resume(dl_tls_ctx_t *x, const copts_t *o, char *cn, size_t cnlen)
{
    conn_t k;
    int r = -1;
    if (!conn_open(&k, x, o))
        return -1;
    if (handshake_ok(&k)) {
        r = dl_tls_resumed(k.t);
        EXPECT_EQ(SSL_session_reused(k.c), r);
        exchange(&k, "again", "welcome back");
        if (cn)
            peer_cn(&k, cn, cnlen);
        client_close(&k);
    } else {
        DL_FAIL_AT("handshake failed: %d %s", k.rc, dl_tls_error(k.t));
    }
    conn_close(&k);
    return r;
}

static void resume_case(int version)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    copts_t o = {.min = version, .max = version};
    SSL_SESSION *s = x ? first_session(x, &o) : NULL;
    if (s) {
        o.session = s;
        EXPECT_EQ(resume(x, &o, NULL, 0), 1);
        EXPECT_EQ(resume(x, &o, NULL, 0), 1); /* a ticket serves more than once here */
        SSL_SESSION_free(s);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_resume_tls13)
{
    resume_case(TLS1_3_VERSION);
}

DL_TEST(tls_resume_tls12)
{
    resume_case(TLS1_2_VERSION);
}

/* Ticket keys belong to a context: another one (another listener, another
 * process) does a full handshake; a reload keeps them. */
DL_TEST(tls_resume_keys_per_ctx_and_across_reload)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1), *y = fx_ctx(&f, 1, 1);
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (int v = 0; v < 2 && x && y; v++) {
        copts_t o = {.min = versions[v], .max = versions[v]};
        SSL_SESSION *s = first_session(x, &o);
        if (s == NULL)
            break;
        o.session = s;
        EXPECT_EQ(resume(y, &o, NULL, 0), 0);
        char err[256] = "";
        EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), 0);
        EXPECT_EQ(resume(x, &o, NULL, 0), 1);
        SSL_SESSION_free(s);
    }
    dl_tls_ctx_free(x);
    dl_tls_ctx_free(y);
    fx_done(&f);
}

/* ===================================================================== SNI */

/* A certificate with many DNS names: every one of them selects it. */
DL_TEST(tls_sni_many_names)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    char san[2048] = "";
    for (int i = 1; i <= 40; i++) {
        char one[40];
        snprintf(one, sizeof(one), "%sDNS:name%d.test", i > 1 ? "," : "", i);
        strcat(san, one);
    }
    fx_pair(&f, 1, "many", san);
    dl_tls_ctx_t *x = fx_ctx(&f, 2, 1);
    for (int i = 1; i <= 40 && x; i += 13) {
        char sni[32], cn[128];
        snprintf(sni, sizeof(sni), "name%d.test", i);
        conn_t k;
        copts_t o = {.sni = sni};
        if (!conn_open(&k, x, &o))
            break;
        if (handshake_ok(&k)) {
            peer_cn(&k, cn, sizeof(cn));
            if (strcmp(cn, "many") != 0)
                DL_FAIL_AT("SNI %s: certificate CN=%s, want CN=many", sni, cn);
        } else {
            DL_FAIL_AT("SNI %s: handshake failed", sni);
        }
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_sni)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 3, 1);
    static const struct {
        const char *sni, *cn;
    } cases[] = {
        {NULL, "localhost"},
        {"localhost", "localhost"},
        {"other.test", "second"},
        {"OTHER.Test", "second"},
        {"a.wild.test", "second"},
        {"xyz-1.wild.test", "second"},
        {"b.a.wild.test", "localhost"},
        {"wild.test", "localhost"},
        {"unknown.test", "localhost"},
        {"other.test.evil", "localhost"},
        {"cn-only.test", "cn-only.test"}, /* no SAN: its CN */
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases) && x; i++) {
        conn_t k;
        static const char *const alpn[] = {"h2", "http/1.1", NULL};
        copts_t o = {.sni = cases[i].sni, .alpn = alpn};
        if (!conn_open(&k, x, &o))
            break;
        if (handshake_ok(&k)) {
            char cn[128];
            peer_cn(&k, cn, sizeof(cn));
            if (strcmp(cn, cases[i].cn) != 0)
                DL_FAIL_AT("SNI %s: certificate CN=%s, want CN=%s",
                           cases[i].sni ? cases[i].sni : "(none)", cn, cases[i].cn);
            EXPECT_EQ(dl_tls_is_h2(k.t), 1); /* ALPN still works after the switch */
            exchange(&k, "q", "a");
        } else {
            DL_FAIL_AT("SNI %s: handshake failed: %d %s", cases[i].sni ? cases[i].sni : "(none)",
                       k.rc, dl_tls_error(k.t));
        }
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_sni_resume)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 2, 1);
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (int v = 0; v < 2 && x; v++) {
        copts_t o = {.min = versions[v], .max = versions[v], .sni = "other.test"};
        SSL_SESSION *s = first_session(x, &o);
        if (s == NULL)
            break;
        o.session = s;
        char cn[128] = "";
        EXPECT_EQ(resume(x, &o, cn, sizeof(cn)), 1);
        EXPECT_STR(cn, "second");
        SSL_SESSION_free(s);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ================================================================= errors */

/* dl_tls_ctx_new with one pair; returns its result, err filled. */
static int ctx_err(const char *crt, const char *key, char *err, size_t errlen)
{
    const char *c[1] = {crt}, *k[1] = {key};
    dl_tls_opts_t o = {.cert = c, .key = k, .n_certs = 1};
    dl_tls_ctx_t *x = NULL;
    err[0] = '\0';
    int rc = dl_tls_ctx_new(&o, &x, err, errlen);
    EXPECT(x == NULL);
    dl_tls_ctx_free(x);
    return rc;
}

#define EXPECT_HAS(hay, needle)                                            \
    do {                                                                   \
        if (strstr((hay), (needle)) == NULL)                               \
            DL_FAIL_AT("\"%s\" does not contain \"%s\"", (hay), (needle)); \
    } while (0)

DL_TEST(tls_ctx_errors)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    char err[1024], missing[256], junk[256], empty[256];
    fx_path(&f, missing, sizeof(missing), "missing.pem");
    fx_path(&f, junk, sizeof(junk), "junk.pem");
    fx_path(&f, empty, sizeof(empty), "empty.pem");
    write_text(junk, "this is not a PEM file\n");
    write_text(empty, "");

    /* missing files: the path and strerror's text */
    EXPECT_EQ(ctx_err(missing, f.key[0], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, missing);
    EXPECT_HAS(err, strerror(ENOENT));
    EXPECT_EQ(ctx_err(f.crt[0], missing, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, missing);
    EXPECT_HAS(err, strerror(ENOENT));

    /* not PEM */
    EXPECT_EQ(ctx_err(junk, f.key[0], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, junk);
    EXPECT_EQ(ctx_err(empty, f.key[0], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, empty);
    EXPECT_EQ(ctx_err(f.crt[0], junk, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, junk);
    /* a certificate where the key should be, a key where the certificate should be */
    EXPECT_EQ(ctx_err(f.crt[0], f.crt[0], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, f.crt[0]);
    EXPECT_EQ(ctx_err(f.key[0], f.key[0], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, f.key[0]);

    /* a key of the same type that is not the certificate's */
    EXPECT_EQ(ctx_err(f.crt[0], f.key[1], err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, "does not match");
    EXPECT_HAS(err, f.crt[0]);
    EXPECT_HAS(err, f.key[1]);
    /* a key of another type (Ed25519 for a P-256 certificate) */
    char ed[256];
    fx_path(&f, ed, sizeof(ed), "ed25519.key");
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EXPECT(k != NULL && write_pem(ed, NULL, k));
    EVP_PKEY_free(k);
    EXPECT_EQ(ctx_err(f.crt[0], ed, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, "does not match");
    EXPECT_HAS(err, f.crt[0]);
    EXPECT_HAS(err, ed);

    /* the second pair is the bad one */
    {
        const char *c[2] = {f.crt[0], f.crt[1]}, *kk[2] = {f.key[0], f.key[2]};
        dl_tls_opts_t o = {.cert = c, .key = kk, .n_certs = 2};
        dl_tls_ctx_t *x = NULL;
        EXPECT_EQ(dl_tls_ctx_new(&o, &x, err, sizeof(err)), DL_EINVAL);
        EXPECT(x == NULL);
        EXPECT_HAS(err, "does not match");
        EXPECT_HAS(err, f.crt[1]);
        EXPECT_HAS(err, f.key[2]);
    }
    /* no pairs, too many pairs */
    {
        dl_tls_opts_t o = {.n_certs = 0};
        dl_tls_ctx_t *x = NULL;
        err[0] = '\0';
        EXPECT_EQ(dl_tls_ctx_new(&o, &x, err, sizeof(err)), DL_EINVAL);
        EXPECT(x == NULL && err[0] != '\0');
        o.n_certs = 1000;
        err[0] = '\0';
        EXPECT_EQ(dl_tls_ctx_new(&o, &x, err, sizeof(err)), DL_EINVAL);
        EXPECT(x == NULL && err[0] != '\0');
    }
    /* a short error buffer is cut, not overrun */
    char small[12];
    EXPECT_EQ(ctx_err(missing, f.key[0], small, sizeof(small)), DL_EINVAL);
    EXPECT_EQ(strlen(small), sizeof(small) - 1);
    fx_done(&f);
}

/* ======================================== plain HTTP, garbage, close_notify */

DL_TEST(tls_plain_http)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    static const char *const reqs[] = {
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /items HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "HEAD / HTTP/1.0\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET ",
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(reqs) && x; i++) {
        conn_t k;
        if (!conn_open(&k, x, NULL))
            break;
        int rc = dl_tls_read(k.t, reqs[i], strlen(reqs[i]), on_plain, &k);
        if (rc != DL_EPLAIN)
            DL_FAIL_AT("\"%s\": %d, want DL_EPLAIN", reqs[i], rc);
        EXPECT_EQ(k.calls, 0);
        EXPECT_EQ(k.out.len, 0);
        conn_close(&k);
    }
    /* a request line split over reads: OpenSSL's verdict is mapped too */
    static const char *const firsts[] = {"G", "GE", "GET", "POST"};
    for (size_t i = 0; i < DL_ARRAY_SIZE(firsts) && x; i++) {
        conn_t k;
        if (!conn_open(&k, x, NULL))
            break;
        int rc = dl_tls_read(k.t, firsts[i], strlen(firsts[i]), on_plain, &k);
        const char *full = firsts[i][0] == 'P' ? "POST / HTTP/1.1\r\n\r\n"
                                               : "GET / HTTP/1.1\r\n\r\n";
        const char *rest = full + strlen(firsts[i]);
        if (rc == 0)
            rc = dl_tls_read(k.t, rest, strlen(rest), on_plain, &k);
        if (rc != DL_EPLAIN)
            DL_FAIL_AT("\"%s\" then the rest: %d (%s), want DL_EPLAIN", firsts[i], rc,
                       dl_tls_error(k.t));
        conn_close(&k);
    }
    /* after the handshake, bytes are records whatever they look like */
    conn_t k;
    if (x && conn_open(&k, x, NULL) && handshake_ok(&k)) {
        exchange(&k, "GET / HTTP/1.1\r\n\r\n", "ok");
        EXPECT_EQ(dl_tls_read(k.t, "GET / HTTP/1.1\r\n\r\n", 18, on_plain, &k), DL_EPROTO);
    }
    if (x)
        conn_close(&k);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_garbage)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    /* random bytes, some seeds look like an SSLv2 or TLS header with a long
     * length: the error may need more input, but it must come */
    for (uint64_t seed = 1; seed <= 40 && x; seed++) {
        conn_t k;
        if (!conn_open(&k, x, NULL))
            break;
        unsigned char junk[70000];
        fill_random(junk, sizeof(junk), seed);
        static const size_t sizes[] = {1024};
        feed(&k, (const char *)junk, sizeof(junk), sizes, 1);
        if (k.rc != DL_EPROTO)
            DL_FAIL_AT("garbage seed %d: %d, want DL_EPROTO", (int)seed, k.rc);
        const char *e = dl_tls_error(k.t);
        EXPECT(e != NULL && e[0] != '\0');
        EXPECT_EQ(k.calls, 0);
        EXPECT_EQ(dl_tls_ready(k.t), 0);
        conn_close(&k);
    }
    /* zeros: no TLS record type */
    conn_t k;
    if (x && conn_open(&k, x, NULL)) {
        char zeros[64] = {0};
        EXPECT_EQ(dl_tls_read(k.t, zeros, sizeof(zeros), on_plain, &k), DL_EPROTO);
        EXPECT(dl_tls_error(k.t)[0] != '\0');
        conn_close(&k);
    }
    /* garbage after a good handshake: a bad record MAC */
    if (x && conn_open(&k, x, NULL) && handshake_ok(&k)) {
        client_write(&k, "data", 4);
        size_t n = BIO_ctrl_pending(k.cwr);
        char rec[64];
        EXPECT(n <= sizeof(rec));
        EXPECT_EQ(BIO_read(k.cwr, rec, (int)n), (long long)n);
        rec[n - 1] ^= 0x55; /* the tag */
        feed(&k, rec, n, NULL, 0);
        EXPECT_EQ(k.rc, DL_EPROTO);
        EXPECT(dl_tls_error(k.t)[0] != '\0');
        EXPECT_EQ(k.plain.len, 0);
        EXPECT(k.out.len > 0); /* an alert */
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_close_notify)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (int v = 0; v < 2 && x; v++) {
        conn_t k;
        copts_t o = {.min = versions[v], .max = versions[v]};
        if (!conn_open(&k, x, &o))
            break;
        if (handshake_ok(&k)) {
            exchange(&k, "hi", "hi");
            /* the last data and close_notify in one read: data first, then EOF */
            client_write(&k, "bye", 3);
            EXPECT_EQ(SSL_shutdown(k.c), 0); /* sent, the peer's not received yet */
            c2s(&k);
            EXPECT_EQ(k.rc, DL_EOF);
            EXPECT_MEM(k.plain.p, k.plain.len, "hibye", 5);
        }
        conn_close(&k);
        /* close_notify alone */
        if (!conn_open(&k, x, &o))
            break;
        if (handshake_ok(&k)) {
            EXPECT_EQ(SSL_shutdown(k.c), 0);
            c2s(&k);
            EXPECT_EQ(k.rc, DL_EOF);
            EXPECT_EQ(k.calls, 0);
        }
        conn_close(&k);
    }
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ================================================================= reload */

static int connect_cn(dl_tls_ctx_t *x, const char *sni, char *cn, size_t len)
{
    conn_t k;
    int ok = 0;
    cn[0] = '\0';
    copts_t o = {.sni = sni};
    if (conn_open(&k, x, &o) && handshake_ok(&k)) {
        peer_cn(&k, cn, len);
        exchange(&k, "x", "y");
        ok = 1;
    }
    conn_close(&k);
    return ok;
}

DL_TEST(tls_reload)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 2, 1);
    char cn[128];
    conn_t old12, old13;
    copts_t o12 = {.min = TLS1_2_VERSION, .max = TLS1_2_VERSION};
    copts_t o13 = {.min = TLS1_3_VERSION, .max = TLS1_3_VERSION, .sni = "other.test"};
    if (x == NULL || !conn_open(&old12, x, &o12) || !conn_open(&old13, x, &o13)) {
        DL_FAIL_AT("no connection");
        dl_tls_ctx_free(x);
        fx_done(&f);
        return;
    }
    EXPECT_EQ(handshake(&old12), 1);
    EXPECT_EQ(handshake(&old13), 1);
    exchange(&old12, "before", "reload");
    /* a connection whose handshake is half done at the reload */
    conn_t mid;
    EXPECT_EQ(conn_open(&mid, x, NULL), 1);
    EXPECT_EQ(SSL_do_handshake(mid.c), -1);
    c2s(&mid);

    /* new files for both pairs */
    fx_pair(&f, 0, "localhost-v2", NULL);
    fx_pair(&f, 1, "second-v2", "DNS:other.test");
    char err[512] = "";
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), 0);
    EXPECT_EQ(connect_cn(x, NULL, cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "localhost-v2");
    EXPECT_EQ(connect_cn(x, "other.test", cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "second-v2");
    EXPECT_EQ(connect_cn(x, "a.wild.test", cn, sizeof(cn)), 1); /* no longer a name */
    EXPECT_STR(cn, "localhost-v2");

    /* connections from before keep their certificate and work */
    peer_cn(&old12, cn, sizeof(cn));
    EXPECT_STR(cn, "localhost");
    peer_cn(&old13, cn, sizeof(cn));
    EXPECT_STR(cn, "second");
    exchange(&old12, "after", "reload 1.2");
    exchange(&old13, "after", "reload 1.3");
    s2c(&mid);
    EXPECT_EQ(handshake(&mid), 1);
    peer_cn(&mid, cn, sizeof(cn));
    EXPECT_STR(cn, "localhost");
    exchange(&mid, "mid", "handshake");

    /* a second reload frees the first one's contexts: old connections still hold theirs */
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), 0);
    exchange(&old12, "after", "two reloads");
    exchange(&old13, "after", "two reloads");
    conn_close(&old12);
    conn_close(&old13);
    conn_close(&mid);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

DL_TEST(tls_reload_broken)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 2, 1);
    char cn[128], err[512];
    if (x == NULL) {
        fx_done(&f);
        return;
    }
    conn_t old;
    if (!conn_open(&old, x, NULL) || !handshake(&old))
        DL_FAIL_AT("no connection");

    /* the default certificate file is broken */
    char saved[256];
    fx_path(&f, saved, sizeof(saved), "saved.crt");
    EXPECT_EQ(rename(f.crt[0], saved), 0);
    write_text(f.crt[0],
               "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    err[0] = '\0';
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, f.crt[0]);
    EXPECT_EQ(connect_cn(x, NULL, cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "localhost");
    EXPECT_EQ(connect_cn(x, "other.test", cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "second");

    /* missing */
    EXPECT_EQ(unlink(f.crt[0]), 0);
    err[0] = '\0';
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, f.crt[0]);
    EXPECT_HAS(err, strerror(ENOENT));
    EXPECT_EQ(rename(saved, f.crt[0]), 0);

    /* the second pair's certificate was replaced, its key not yet */
    fx_pair(&f, 3, "third", "DNS:other.test");
    EXPECT_EQ(rename(f.crt[3], f.crt[1]), 0);
    err[0] = '\0';
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), DL_EINVAL);
    EXPECT_HAS(err, "does not match");
    EXPECT_HAS(err, f.crt[1]);
    EXPECT_HAS(err, f.key[1]);
    EXPECT_EQ(connect_cn(x, NULL, cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "localhost");
    EXPECT_EQ(connect_cn(x, "other.test", cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "second");
    exchange(&old, "still", "here");

    /* fixed: the reload goes through */
    EXPECT_EQ(rename(f.key[3], f.key[1]), 0);
    EXPECT_EQ(dl_tls_ctx_reload(x, err, sizeof(err)), 0);
    EXPECT_EQ(connect_cn(x, "other.test", cn, sizeof(cn)), 1);
    EXPECT_STR(cn, "third");
    exchange(&old, "still", "here");
    conn_close(&old);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* ============================================== post-handshake messages */

/* TLS 1.3 KeyUpdate from the client, asking for the server's: both
 * directions keep working with the new keys. */
DL_TEST(tls_key_update)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    copts_t o = {.min = TLS1_3_VERSION, .max = TLS1_3_VERSION};
    if (x && conn_open(&k, x, &o) && handshake_ok(&k)) {
        exchange(&k, "before", "update");
        for (int i = 0; i < 3; i++) {
            EXPECT_EQ(SSL_key_update(k.c, SSL_KEY_UPDATE_REQUESTED), 1);
            size_t before = k.plain.len;
            client_write(&k, "new keys", 8);
            c2s(&k);
            EXPECT_EQ(k.rc, 0);
            EXPECT_MEM(k.plain.p + before, k.plain.len - before, "new keys", 8);
            exchange(&k, "and", "back"); /* the server's KeyUpdate goes first */
        }
    } else {
        DL_FAIL_AT("no connection");
    }
    if (x)
        conn_close(&k);
    dl_tls_ctx_free(x);
    fx_done(&f);
}

/* TLS 1.2 renegotiation is refused: the client's new ClientHello gets an
 * alert, no plaintext comes out of it, and the connection ends. */
DL_TEST(tls_renegotiation_refused)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *x = fx_ctx(&f, 1, 1);
    conn_t k;
    copts_t o = {.min = TLS1_2_VERSION, .max = TLS1_2_VERSION};
    if (x && conn_open(&k, x, &o) && handshake_ok(&k)) {
        exchange(&k, "a", "b");
        EXPECT_EQ(SSL_renegotiate(k.c), 1);
        int r = SSL_do_handshake(k.c);
        EXPECT_EQ(SSL_get_error(k.c, r), SSL_ERROR_WANT_READ);
        c2s(&k);
        EXPECT(k.rc == 0 || k.rc == DL_EPROTO);
        EXPECT(k.out.len > 0); /* the refusal */
        EXPECT_MEM(k.plain.p, k.plain.len, "a", 1);
        s2c(&k);
        r = SSL_do_handshake(k.c);
        EXPECT_EQ(SSL_get_error(k.c, r), SSL_ERROR_SSL);
        c2s(&k); /* the client's fatal alert */
        EXPECT_EQ(k.rc, DL_EPROTO);
        EXPECT_MEM(k.plain.p, k.plain.len, "a", 1);
    } else {
        DL_FAIL_AT("no connection");
    }
    if (x)
        conn_close(&k);
    dl_tls_ctx_free(x);
    fx_done(&f);
}
