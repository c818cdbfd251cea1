/*
 * test_tls_client.c - the client side of TLS (runtime/transport/tls_client.c)
 * against the server side (runtime/transport/tls.c), both real OpenSSL, in
 * memory: each side's ciphertext buffer is fed to the other's dl_tls_read.
 * A CA, certificates it signs (localhost + 127.0.0.1, a wrong name, a
 * wildcard) and a self-signed one are made here with the OpenSSL API and
 * written as PEM into a temporary directory that each test removes.
 * Covered: the handshake and data both ways with a CA file, an unknown CA (the
 * system store), wrong names, wildcards (RFC 6125), IP literals by IP SAN and
 * without SNI, the SNI the server sees, verify off, ALPN, TLS 1.2, session
 * resumption (TLS 1.3 and 1.2) and its bounded table, close_notify, garbage
 * and plain HTTP from the "server", unusable names and ALPN, and the errors
 * of dl_tls_client_ctx_new.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/internal.h"
#include "transport/tls_client.h"
#include "transport/tls_internal.h" /* the server's SSL, to ask it for the SNI it got */
#include "sb.h"
#include "unit.h"

/* ---- certificates in a temporary directory */

enum { LEAF, WRONG, WILD, SELF, N_PAIRS };

typedef struct {
    char dir[64];
    char ca[256];                          /* the CA's certificate */
    char crt[N_PAIRS][256], key[N_PAIRS][256];
} fx_t;

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

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
        DL_FAIL_AT("cannot add extension %s", value);
    X509_EXTENSION_free(ext);
}

/* A certificate for key, CN=cn, SAN san when given; signed by ca_key as
 * ca (NULL: self-signed). ca_flag: a CA's basic constraints and key usage. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *ca, EVP_PKEY *ca_key,
                       int ca_flag)
{
    static long serial = 100;
    X509 *x = X509_new();
    X509_set_version(x, 2); /* v3 */
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
    if (ca_flag) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    if (san)
        add_ext(x, ca ? ca : x, NID_subject_alt_name, san);
    if (X509_sign(x, ca_key ? ca_key : key, EVP_sha256()) <= 0)
        DL_FAIL_AT("cannot sign the certificate for %s", cn);
    return x;
}

static void fx_path(fx_t *f, char *out, size_t len, const char *name)
{
    char p[sizeof(f->crt[0])]; /* out may be a member of f */
    snprintf(p, sizeof(p), "%s/%s", f->dir, name);
    snprintf(out, len, "%s", p);
}

static void fx_pair(fx_t *f, int i, const char *cn, const char *san, X509 *ca, EVP_PKEY *ca_key)
{
    char name[32];
    snprintf(name, sizeof(name), "%d.crt", i);
    fx_path(f, f->crt[i], sizeof(f->crt[i]), name);
    snprintf(name, sizeof(name), "%d.key", i);
    fx_path(f, f->key[i], sizeof(f->key[i]), name);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = k ? make_cert(k, cn, san, ca, ca_key, 0) : NULL;
    if (x == NULL || !write_pem(f->crt[i], x, NULL) || !write_pem(f->key[i], NULL, k))
        DL_FAIL_AT("cannot make pair %d in %s", i, f->dir);
    X509_free(x);
    EVP_PKEY_free(k);
}

static int fx_init(fx_t *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/dl_tlsc_XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        DL_FAIL_AT("mkdtemp: %s", strerror(errno));
        return 0;
    }
    EVP_PKEY *ca_key = EVP_EC_gen("P-256");
    X509 *ca = ca_key ? make_cert(ca_key, "devloop test CA", NULL, NULL, NULL, 1) : NULL;
    fx_path(f, f->ca, sizeof(f->ca), "ca.crt");
    if (ca == NULL || !write_pem(f->ca, ca, NULL)) {
        DL_FAIL_AT("cannot make the CA");
        return 0;
    }
    fx_pair(f, LEAF, "localhost", "DNS:localhost,IP:127.0.0.1", ca, ca_key);
    fx_pair(f, WRONG, "other.test", "DNS:other.test", ca, ca_key);
    fx_pair(f, WILD, "wild", "DNS:*.wild.test", ca, ca_key);
    fx_pair(f, SELF, "localhost", "DNS:localhost,IP:127.0.0.1", NULL, NULL);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
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
            if (rmdir(p) != 0)
                unlink(p);
        }
        closedir(d);
    }
    if (rmdir(f->dir) != 0)
        DL_FAIL_AT("rmdir %s: %s", f->dir, strerror(errno));
}

/* a server context serving pair i (h2: offer h2 too) */
static dl_tls_ctx_t *server_ctx(fx_t *f, int i, int h2)
{
    const char *c[1] = {f->crt[i]}, *k[1] = {f->key[i]};
    dl_tls_opts_t o = {.cert = c, .key = k, .n_certs = 1, .alpn_h2 = h2};
    dl_tls_ctx_t *x = NULL;
    char err[512] = "";
    int rc = dl_tls_ctx_new(&o, &x, err, sizeof(err));
    if (rc != 0 || x == NULL)
        DL_FAIL_AT("dl_tls_ctx_new: %d: %s", rc, err);
    return x;
}

static dl_tls_ctx_t *client_ctx(int verify, const char *ca_file)
{
    dl_tls_client_opts_t o = {.verify = verify, .ca_file = ca_file};
    dl_tls_ctx_t *x = NULL;
    char err[512] = "";
    int rc = dl_tls_client_ctx_new(&o, &x, err, sizeof(err));
    if (rc != 0 || x == NULL)
        DL_FAIL_AT("dl_tls_client_ctx_new: %d: %s", rc, err);
    return x;
}

/* ---- one connection: our client and our server, pumped into each other */

typedef struct {
    dl_tls_t *c, *s;
    dl_buf_t cout, sout; /* each side's ciphertext */
    sb_t cplain, splain; /* the plaintext each side received */
    int crc, src;        /* the first nonzero dl_tls_read result of each side */
} pair_t;

static void on_plain(void *arg, const char *data, size_t len)
{
    sb_add(arg, data, len);
}

static int pair_open(pair_t *p, dl_tls_ctx_t *cx, dl_tls_ctx_t *sx, const char *name,
                     const char *alpn)
{
    memset(p, 0, sizeof(*p));
    dl_buf_init(&p->cout);
    dl_buf_init(&p->sout);
    p->c = dl_tls_client_new(cx, &p->cout, name, alpn);
    p->s = sx ? dl_tls_new(sx, &p->sout) : NULL;
    if (p->c == NULL || (sx && p->s == NULL)) {
        DL_FAIL_AT("dl_tls_client_new or dl_tls_new returned NULL");
        return 0;
    }
    return 1;
}

static void pair_close(pair_t *p)
{
    dl_tls_free(p->c);
    dl_tls_free(p->s);
    dl_buf_free(&p->cout);
    dl_buf_free(&p->sout);
    sb_free(&p->cplain);
    sb_free(&p->splain);
    ERR_clear_error();
}

/* Feeds the whole of from to t in pieces of piece bytes (0: at once), each in a
 * buffer of its own exact size so that ASan sees a read past it. */
static int feed(dl_tls_t *t, dl_buf_t *from, size_t piece, sb_t *plain)
{
    size_t len = from->len;
    char *all = malloc(len ? len : 1);
    memcpy(all, from->data, len);
    dl_buf_reset(from); /* t's answer goes to the other buffer */
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t m = piece && piece < len - off ? piece : len - off;
        char *one = malloc(m);
        memcpy(one, all + off, m);
        rc = dl_tls_read(t, one, m, on_plain, plain);
        free(one);
        off += m;
    }
    free(all);
    return rc;
}

/* Moves ciphertext both ways until neither side has anything to send or one
 * fails. */
static void pump_pieces(pair_t *p, size_t piece)
{
    for (int i = 0; i < 50; i++) {
        if (p->cout.len == 0 && p->sout.len == 0)
            return;
        if (p->cout.len > 0 && p->src == 0 && p->s)
            p->src = feed(p->s, &p->cout, piece, &p->splain);
        if (p->sout.len > 0 && p->crc == 0)
            p->crc = feed(p->c, &p->sout, piece, &p->cplain);
        if (p->crc != 0 || p->src != 0) {
            /* one alert more may go over: the other side's rc says it came */
            if (p->cout.len > 0 && p->src == 0 && p->s)
                p->src = feed(p->s, &p->cout, piece, &p->splain);
            if (p->sout.len > 0 && p->crc == 0)
                p->crc = feed(p->c, &p->sout, piece, &p->cplain);
            return;
        }
    }
    DL_FAIL_AT("the two sides do not stop talking");
}

static void pump(pair_t *p)
{
    pump_pieces(p, 0);
}

static int handshake_ok(pair_t *p)
{
    pump(p);
    if (p->crc == 0 && p->src == 0 && dl_tls_ready(p->c) && dl_tls_ready(p->s))
        return 1;
    DL_FAIL_AT("handshake failed: client rc %d (%s), server rc %d (%s)", p->crc,
               dl_tls_error(p->c), p->src, p->s ? dl_tls_error(p->s) : "-");
    return 0;
}

/* The handshake fails on the client with an error that starts with want. */
static void handshake_fails(pair_t *p, const char *want)
{
    pump(p);
    EXPECT_EQ(p->crc, DL_EPROTO);
    EXPECT_EQ(dl_tls_ready(p->c), 0);
    const char *e = dl_tls_error(p->c);
    if (strncmp(e, want, strlen(want)) != 0)
        DL_FAIL_AT("client error \"%s\", want \"%s...\"", e, want);
    EXPECT_EQ(p->cplain.len, 0);
    EXPECT_EQ(p->splain.len, 0);
}

static void exchange(pair_t *p, const char *to_server, const char *to_client)
{
    size_t sb = p->splain.len, cb = p->cplain.len;
    EXPECT_EQ(dl_tls_write(p->c, to_server, strlen(to_server)), 0);
    pump(p);
    EXPECT_EQ(dl_tls_write(p->s, to_client, strlen(to_client)), 0);
    pump(p);
    EXPECT_EQ(p->crc, 0);
    EXPECT_EQ(p->src, 0);
    EXPECT_MEM(p->splain.p + sb, p->splain.len - sb, to_server, strlen(to_server));
    EXPECT_MEM(p->cplain.p + cb, p->cplain.len - cb, to_client, strlen(to_client));
}

static const char *server_sni(pair_t *p)
{
    return SSL_get_servername(p->s->ssl, TLSEXT_NAMETYPE_host_name);
}

/* ---- tests */

DL_TEST(tls_client_ca_file)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        EXPECT(p.cout.len > 0); /* the ClientHello, at once */
        EXPECT_EQ(dl_tls_ready(p.c), 0);
        if (handshake_ok(&p)) {
            EXPECT_STR(server_sni(&p), "localhost");
            EXPECT(dl_tls_alpn(p.c) == NULL);
            EXPECT_EQ(dl_tls_resumed(p.c), 0);
            exchange(&p, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n");
            exchange(&p, "second", "answer");
        }
        pair_close(&p);
    }
    /* the name is case-insensitive and may end with the root's dot */
    const char *names[] = {"LocalHost", "localhost."};
    for (int i = 0; i < 2 && sx && cx; i++) {
        if (!pair_open(&p, cx, sx, names[i], NULL))
            break;
        if (handshake_ok(&p))
            exchange(&p, "a", "b");
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_large_data_odd_pieces)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        pump_pieces(&p, 7); /* the handshake 7 bytes at a time */
        EXPECT(dl_tls_ready(p.c) && dl_tls_ready(p.s));
        size_t n = 300 * 1000;
        char *big = malloc(n);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)(i * 131 + (i >> 9));
        EXPECT_EQ(dl_tls_write(p.c, big, n), 0);
        EXPECT_EQ(dl_tls_write(p.s, big, n), 0);
        pump_pieces(&p, 1000 + 3);
        EXPECT_EQ(p.crc, 0);
        EXPECT_EQ(p.src, 0);
        EXPECT(p.cplain.len == n && memcmp(p.cplain.p, big, n) == 0);
        EXPECT(p.splain.len == n && memcmp(p.splain.p, big, n) == 0);
        free(big);
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_unknown_ca)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    /* the system store does not know our CA */
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, NULL);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        handshake_fails(&p, "certificate verify failed: unable to get local issuer certificate");
        EXPECT_EQ(p.src, DL_EPROTO); /* the client's alert reached the server */
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    /* a CA file that is not the issuer: the self-signed certificate as the only CA */
    cx = client_ctx(1, f.crt[SELF]);
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        handshake_fails(&p, "certificate verify failed: unable to get local issuer certificate");
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_self_signed)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, SELF, 0);
    dl_tls_ctx_t *cx = client_ctx(1, f.ca), *off = client_ctx(0, NULL);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        handshake_fails(&p, "certificate verify failed: self-signed certificate");
        pair_close(&p);
    }
    /* verify off: anything goes, names too */
    const char *names[] = {"localhost", "not-the-name.test", "10.9.8.7", NULL};
    for (int i = 0; i < 4 && sx && off; i++) {
        if (!pair_open(&p, off, sx, names[i], NULL))
            break;
        if (handshake_ok(&p))
            exchange(&p, "ping", "pong");
        pair_close(&p);
    }
    dl_tls_ctx_free(off);
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_wrong_name)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *wrong = server_ctx(&f, WRONG, 0), *leaf = server_ctx(&f, LEAF, 0);
    dl_tls_ctx_t *cx = client_ctx(1, f.ca);
    pair_t p;
    if (wrong && cx && pair_open(&p, cx, wrong, "localhost", NULL)) {
        handshake_fails(&p, "certificate verify failed: hostname mismatch (expected localhost)");
        pair_close(&p);
    }
    if (leaf && cx && pair_open(&p, cx, leaf, "example.com", NULL)) {
        handshake_fails(&p, "certificate verify failed: hostname mismatch (expected example.com)");
        EXPECT_STR(server_sni(&p), "example.com");
        pair_close(&p);
    }
    /* a name that ends like the certificate's is not it */
    if (leaf && cx && pair_open(&p, cx, leaf, "evil-localhost", NULL)) {
        handshake_fails(&p, "certificate verify failed: hostname mismatch");
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(leaf);
    dl_tls_ctx_free(wrong);
    fx_done(&f);
}

DL_TEST(tls_client_wildcard)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, WILD, 0), *cx = client_ctx(1, f.ca);
    struct {
        const char *name;
        int ok;
    } cases[] = {
        {"a.wild.test", 1},   {"A-b.WILD.test", 1}, /* one whole label, any case */
        {"wild.test", 0},                             /* the wildcard is not empty */
        {"b.a.wild.test", 0},                         /* nor two labels */
        {"a.wild.test.evil", 0},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases) && sx && cx; i++) {
        pair_t p;
        if (!pair_open(&p, cx, sx, cases[i].name, NULL))
            break;
        if (cases[i].ok) {
            if (handshake_ok(&p))
                exchange(&p, "x", "y");
        } else {
            handshake_fails(&p, "certificate verify failed: hostname mismatch");
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_ip_literal)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "127.0.0.1", NULL)) {
        if (handshake_ok(&p)) {
            EXPECT(server_sni(&p) == NULL); /* RFC 6066 3: no IP literal as SNI */
            exchange(&p, "by IP", "fine");
        }
        pair_close(&p);
    }
    if (sx && cx && pair_open(&p, cx, sx, "127.0.0.2", NULL)) {
        handshake_fails(&p, "certificate verify failed: IP address mismatch (expected 127.0.0.2)");
        EXPECT(server_sni(&p) == NULL);
        pair_close(&p);
    }
    /* IPv6, bare and as URLs write it; the certificate has no such address */
    const char *v6[] = {"::1", "[::1]"};
    for (int i = 0; i < 2 && sx && cx; i++) {
        if (!pair_open(&p, cx, sx, v6[i], NULL))
            break;
        handshake_fails(&p, "certificate verify failed: IP address mismatch (expected ::1)");
        EXPECT(server_sni(&p) == NULL);
        pair_close(&p);
    }
    /* the DNS SAN "localhost" does not cover an address, nor the IP SAN a name */
    dl_tls_ctx_t *wrong = server_ctx(&f, WRONG, 0);
    if (wrong && cx && pair_open(&p, cx, wrong, "127.0.0.1", NULL)) {
        handshake_fails(&p, "certificate verify failed: IP address mismatch");
        pair_close(&p);
    }
    dl_tls_ctx_free(wrong);
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_alpn)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *h2 = server_ctx(&f, LEAF, 1), *h1 = server_ctx(&f, LEAF, 0);
    dl_tls_ctx_t *cx = client_ctx(1, f.ca);
    struct {
        dl_tls_ctx_t *server;
        const char *offer, *want;
    } cases[] = {
        {h2, "http/1.1", "http/1.1"}, /* the server offers h2 and http/1.1 */
        {h1, "http/1.1", "http/1.1"},
        {h2, "h2", "h2"},
        {h1, "h2", NULL},       /* h2 off: no ALPN, the handshake goes on */
        {h2, "spdy/3.1", NULL}, /* unknown to the server */
        {h2, NULL, NULL},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases) && h1 && h2 && cx; i++) {
        pair_t p;
        if (!pair_open(&p, cx, cases[i].server, "localhost", cases[i].offer))
            break;
        if (handshake_ok(&p)) {
            const char *got = dl_tls_alpn(p.c);
            if (cases[i].want == NULL ? got != NULL : (got == NULL || strcmp(got, cases[i].want)))
                DL_FAIL_AT("case %zu: ALPN %s, want %s", i, got ? got : "NULL",
                           cases[i].want ? cases[i].want : "NULL");
            const char *s = dl_tls_alpn(p.s);
            EXPECT((s == NULL) == (got == NULL));
            EXPECT_EQ(dl_tls_is_h2(p.s), cases[i].want && strcmp(cases[i].want, "h2") == 0);
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(h1);
    dl_tls_ctx_free(h2);
    fx_done(&f);
}

DL_TEST(tls_client_resume)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    dl_tls_ctx_t *other = client_ctx(1, f.ca);
    /* the first is full; the ticket it got resumes the next, which gets a fresh one */
    for (int i = 0; i < 4 && sx && cx; i++) {
        pair_t p;
        if (!pair_open(&p, cx, sx, "localhost", NULL))
            break;
        if (handshake_ok(&p)) {
            exchange(&p, "hello", "world"); /* the ticket comes after the handshake */
            if (dl_tls_resumed(p.c) != (i > 0))
                DL_FAIL_AT("connection %d: resumed %d", i, dl_tls_resumed(p.c));
            EXPECT_EQ(dl_tls_resumed(p.s), i > 0);
        }
        pair_close(&p);
    }
    /* another name, or another context, has no session to offer */
    const struct {
        dl_tls_ctx_t *cx;
        const char *name;
    } fresh[] = {{cx, "127.0.0.1"}, {other, "localhost"}};
    for (int i = 0; i < 2 && sx && cx && other; i++) {
        pair_t p;
        if (!pair_open(&p, fresh[i].cx, sx, fresh[i].name, NULL))
            break;
        if (handshake_ok(&p))
            EXPECT_EQ(dl_tls_resumed(p.c), 0);
        pair_close(&p);
    }
    /* another server (other ticket keys) refuses the ticket: a full handshake, verified */
    dl_tls_ctx_t *sy = server_ctx(&f, LEAF, 0);
    for (int i = 0; i < 2 && sy && cx; i++) {
        pair_t p;
        if (!pair_open(&p, cx, sy, "localhost", NULL))
            break;
        if (handshake_ok(&p)) {
            exchange(&p, "again", "fine");
            EXPECT_EQ(dl_tls_resumed(p.c), i == 1); /* its own ticket replaced the old one */
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(sy);
    dl_tls_ctx_free(other);
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

/* A client context freed while a connection made from it is still open (the
 * HTTP client drops its oldest context when it holds too many): a session
 * ticket the server sends afterwards must not reach the freed context. */
DL_TEST(tls_client_ctx_freed_before_connection)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        if (handshake_ok(&p)) {
            exchange(&p, "hello", "world");
            dl_tls_ctx_free(cx);
            cx = NULL;
            EXPECT_EQ(SSL_new_session_ticket(p.s->ssl), 1); /* sent with the next write */
            exchange(&p, "after", "the context went");
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

/* TLS 1.2 (the client held to it through its SSL_CTX): verification, data and
 * resumption by the server's stateless ticket */
DL_TEST(tls_client_tls12)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    if (cx)
        SSL_CTX_set_max_proto_version(cx->client, TLS1_2_VERSION);
    for (int i = 0; i < 3 && sx && cx; i++) {
        pair_t p;
        if (!pair_open(&p, cx, sx, "localhost", "http/1.1"))
            break;
        if (handshake_ok(&p)) {
            EXPECT_EQ(SSL_version(p.c->ssl), TLS1_2_VERSION);
            EXPECT_STR(dl_tls_alpn(p.c), "http/1.1");
            exchange(&p, "one-two", "buckle my shoe");
            if (dl_tls_resumed(p.c) != (i > 0))
                DL_FAIL_AT("connection %d: resumed %d", i, dl_tls_resumed(p.c));
        }
        pair_close(&p);
    }
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "example.com", NULL)) {
        handshake_fails(&p, "certificate verify failed: hostname mismatch (expected example.com)");
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_session_table_bounded)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, SELF, 0), *cx = client_ctx(0, NULL);
    /* more names than the table holds: the 10 oldest go; back in the other
     * order, the newest resume and the 10 oldest do not */
    int n = DL_TLS_CLIENT_SESSIONS + 10;
    for (int round = 0; round < 2 && sx && cx; round++)
        for (int j = 0; j < n; j++) {
            int i = round == 0 ? j : n - 1 - j;
            char name[32];
            snprintf(name, sizeof(name), "h%d.test", i);
            pair_t p;
            if (!pair_open(&p, cx, sx, name, NULL))
                return;
            if (handshake_ok(&p)) {
                exchange(&p, "q", "a");
                if (dl_tls_resumed(p.c) != (round == 1 && i >= 10))
                    DL_FAIL_AT("round %d, name %d: resumed %d", round, i, dl_tls_resumed(p.c));
            }
            pair_close(&p);
        }
    int used = 0;
    for (int i = 0; cx && i < DL_TLS_CLIENT_SESSIONS; i++)
        used += cx->sessions[i].sess != NULL;
    EXPECT_EQ(used, DL_TLS_CLIENT_SESSIONS);
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_close_notify)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        if (handshake_ok(&p)) {
            exchange(&p, "request", "response");
            EXPECT_EQ(dl_tls_write(p.s, "last words", 10), 0);
            dl_tls_close_notify(p.s);
            dl_tls_close_notify(p.s); /* once */
            pump(&p);
            EXPECT_EQ(p.crc, DL_EOF);
            EXPECT_STR(p.cplain.p + p.cplain.len - 10, "last words");
        }
        pair_close(&p);
    }
    /* the other way: the client closes */
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        if (handshake_ok(&p)) {
            dl_tls_close_notify(p.c);
            pump(&p);
            EXPECT_EQ(p.src, DL_EOF);
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

/* deterministic pseudo-random bytes (xorshift64) */
static void fill_random(unsigned char *b, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        b[i] = (unsigned char)(s >> 24);
    }
}

/* Feeds junk to a client, at once or byte by byte; DL_EPROTO must come. */
static void junk_fails(dl_tls_ctx_t *cx, const char *junk, size_t len, int bytewise, const char *what)
{
    pair_t p;
    if (!pair_open(&p, cx, NULL, "localhost", NULL))
        return;
    dl_buf_append(&p.sout, junk, len);
    int rc = feed(p.c, &p.sout, bytewise ? 1 : 0, &p.cplain);
    if (rc != DL_EPROTO)
        DL_FAIL_AT("%s%s: %d, want DL_EPROTO", what, bytewise ? " byte by byte" : "", rc);
    EXPECT(dl_tls_error(p.c)[0] != '\0');
    EXPECT_EQ(p.cplain.len, 0);
    EXPECT_EQ(dl_tls_ready(p.c), 0);
    /* after the error, more input and writes keep failing, without a crash */
    EXPECT(dl_tls_read(p.c, junk, len, on_plain, &p.cplain) != 0);
    EXPECT(dl_tls_write(p.c, "x", 1) != 0);
    dl_tls_close_notify(p.c);
    pair_close(&p);
}

DL_TEST(tls_client_garbage)
{
    dl_tls_ctx_t *cx = client_ctx(1, NULL);
    if (cx == NULL)
        return;
    for (uint64_t seed = 1; seed <= 30; seed++) {
        unsigned char junk[40000];
        fill_random(junk, sizeof(junk), seed);
        junk_fails(cx, (const char *)junk, sizeof(junk), 0, "random bytes");
    }
    static const char http[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    junk_fails(cx, http, sizeof(http) - 1, 0, "a plain HTTP answer");  /* not DL_EPLAIN */
    junk_fails(cx, http, sizeof(http) - 1, 1, "a plain HTTP answer");
    static const char get[] = "GET / HTTP/1.1\r\n\r\n";
    junk_fails(cx, get, sizeof(get) - 1, 0, "a plain HTTP request");
    char zeros[64] = {0};
    junk_fails(cx, zeros, sizeof(zeros), 0, "zeros");
    /* a handshake record header claiming 64 KiB, then junk to fill it */
    char big[5 + 70000];
    memset(big, 'A', sizeof(big));
    memcpy(big, "\x16\x03\x03\xff\xff", 5);
    junk_fails(cx, big, sizeof(big), 0, "an oversized record");
    /* a ServerHello header with a body of junk */
    char hello[5 + 4 + 80];
    memset(hello, 0x5a, sizeof(hello));
    memcpy(hello, "\x16\x03\x03\x00\x54\x02\x00\x00\x50", 9);
    junk_fails(cx, hello, sizeof(hello), 0, "a ServerHello of junk");
    junk_fails(cx, hello, sizeof(hello), 1, "a ServerHello of junk");
    /* an alert as the answer */
    junk_fails(cx, "\x15\x03\x03\x00\x02\x02\x28", 7, 0, "a handshake_failure alert");
    dl_tls_ctx_free(cx);
}

DL_TEST(tls_client_garbage_after_handshake)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    dl_tls_ctx_t *sx = server_ctx(&f, LEAF, 0), *cx = client_ctx(1, f.ca);
    pair_t p;
    if (sx && cx && pair_open(&p, cx, sx, "localhost", NULL)) {
        if (handshake_ok(&p)) {
            exchange(&p, "a", "b");
            static const char junk[] = "\x17\x03\x03\x00\x20 0123456789abcdef0123456789abcdef";
            EXPECT_EQ(dl_tls_read(p.c, junk, sizeof(junk) - 1, on_plain, &p.cplain), DL_EPROTO);
            EXPECT(dl_tls_error(p.c)[0] != '\0');
        }
        pair_close(&p);
    }
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(sx);
    fx_done(&f);
}

DL_TEST(tls_client_bad_names)
{
    dl_tls_ctx_t *cx = client_ctx(1, NULL), *off = client_ctx(0, NULL);
    if (cx == NULL || off == NULL)
        return;
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    for (int i = 63; i < 290; i += 64)
        longname[i] = '.';
    char longlabel[80];
    memset(longlabel, 'b', sizeof(longlabel) - 1);
    longlabel[sizeof(longlabel) - 1] = '\0';
    struct {
        dl_tls_ctx_t *cx;
        const char *name, *alpn, *want;
    } cases[] = {
        {cx, NULL, NULL, "no server name to verify the certificate against"},
        {cx, "", NULL, "no server name"},
        {cx, "*.example.com", NULL, "invalid server name: *.example.com"},
        {cx, "exa mple.com", NULL, "invalid server name"},
        {cx, "a..b", NULL, "invalid server name"},
        {cx, ".", NULL, "invalid server name"},
        {cx, "host/path", NULL, "invalid server name"},
        {cx, "[example.com]", NULL, "invalid server name"},
        {cx, "[]", NULL, "invalid server name"},
        {cx, longname, NULL, "invalid server name: longer than 253"},
        {cx, longlabel, NULL, "invalid server name"},
        {cx, "localhost", "", "invalid ALPN protocol"},
        {off, "bad name!", NULL, "invalid server name"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases); i++) {
        dl_buf_t out;
        dl_buf_init(&out);
        dl_tls_t *t = dl_tls_client_new(cases[i].cx, &out, cases[i].name, cases[i].alpn);
        if (t == NULL) {
            DL_FAIL_AT("case %zu: NULL", i);
            continue;
        }
        EXPECT_EQ(out.len, 0);
        const char *e = dl_tls_error(t);
        if (strncmp(e, cases[i].want, strlen(cases[i].want)) != 0)
            DL_FAIL_AT("case %zu: \"%s\", want \"%s...\"", i, e, cases[i].want);
        sb_t plain = {0};
        EXPECT_EQ(dl_tls_read(t, "\x16\x03\x03\x00\x00", 5, on_plain, &plain), DL_EPROTO);
        EXPECT_EQ(dl_tls_write(t, "x", 1), DL_EPROTO);
        EXPECT_EQ(dl_tls_ready(t), 0);
        EXPECT(dl_tls_alpn(t) == NULL);
        dl_tls_close_notify(t);
        EXPECT_EQ(out.len, 0);
        dl_tls_free(t);
        dl_buf_free(&out);
    }
    /* a write before the handshake is refused, in words */
    dl_buf_t early;
    dl_buf_init(&early);
    dl_tls_t *w = dl_tls_client_new(cx, &early, "localhost", NULL);
    EXPECT(w != NULL && early.len > 0);
    EXPECT(w == NULL || dl_tls_write(w, "x", 1) == DL_EPROTO);
    EXPECT(w == NULL || strstr(dl_tls_error(w), "before the handshake") != NULL);
    dl_tls_free(w);
    dl_buf_free(&early);
    /* NULL options: verify with the system store */
    dl_tls_ctx_t *def = NULL;
    char err[128] = "";
    EXPECT_EQ(dl_tls_client_ctx_new(NULL, &def, err, sizeof(err)), 0);
    EXPECT(def != NULL && def->verify == 1);
    dl_tls_ctx_free(def);
    /* verify off: no name is fine (no SNI) */
    dl_buf_t out;
    dl_buf_init(&out);
    dl_tls_t *t = dl_tls_client_new(off, &out, NULL, "http/1.1");
    EXPECT(t != NULL && out.len > 0);
    dl_tls_free(t);
    dl_buf_free(&out);
    dl_tls_ctx_free(off);
    dl_tls_ctx_free(cx);
}

DL_TEST(tls_client_ctx_errors)
{
    fx_t f;
    if (!fx_init(&f))
        return;
    char missing[300], text[300], bad_pem[300], dir[300];
    fx_path(&f, missing, sizeof(missing), "missing.pem");
    fx_path(&f, text, sizeof(text), "text.pem");
    write_text(text, "not a certificate\n");
    fx_path(&f, bad_pem, sizeof(bad_pem), "bad.pem");
    write_text(bad_pem, "-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n");
    fx_path(&f, dir, sizeof(dir), "sub");
    mkdir(dir, 0700);
    struct {
        const char *file, *want;
    } cases[] = {
        {missing, "cannot read TLS CA file "},
        {text, "TLS CA file "},
        {f.key[LEAF], "TLS CA file "}, /* a key, no certificate */
        {bad_pem, "cannot load TLS CA file "},
        {dir, "TLS CA file"},
    };
    for (size_t i = 0; i < DL_ARRAY_SIZE(cases); i++) {
        dl_tls_client_opts_t o = {.verify = 1, .ca_file = cases[i].file};
        dl_tls_ctx_t *x = (dl_tls_ctx_t *)&o; /* must stay untouched */
        char err[512] = "";
        EXPECT_EQ(dl_tls_client_ctx_new(&o, &x, err, sizeof(err)), DL_EINVAL);
        EXPECT(x == (dl_tls_ctx_t *)&o);
        if (strstr(err, cases[i].want) == NULL || strstr(err, cases[i].file) == NULL)
            DL_FAIL_AT("case %zu: \"%s\", want \"%s\" and the file", i, err, cases[i].want);
    }
    /* the CA file may hold other things beside certificates, and a certificate twice */
    char mixed[300];
    fx_path(&f, mixed, sizeof(mixed), "mixed.pem");
    FILE *out = fopen(mixed, "w"), *in;
    const char *parts[] = {f.key[LEAF], f.ca, f.ca};
    for (int i = 0; out && i < 3; i++)
        if ((in = fopen(parts[i], "r")) != NULL) {
            int c;
            while ((c = fgetc(in)) != EOF)
                fputc(c, out);
            fclose(in);
        }
    if (out)
        fclose(out);
    dl_tls_ctx_t *cx = client_ctx(1, mixed), *sx = server_ctx(&f, LEAF, 0);
    pair_t p;
    if (cx && sx && pair_open(&p, cx, sx, "localhost", NULL)) {
        handshake_ok(&p);
        pair_close(&p);
    }
    /* a client context serves nobody, a server context connects nowhere */
    dl_buf_t b;
    dl_buf_init(&b);
    EXPECT(cx == NULL || dl_tls_new(cx, &b) == NULL);
    EXPECT(sx == NULL || dl_tls_client_new(sx, &b, "localhost", NULL) == NULL);
    char err[128];
    EXPECT(cx == NULL || dl_tls_ctx_reload(cx, err, sizeof(err)) == DL_EINVAL);
    dl_buf_free(&b);
    dl_tls_ctx_free(sx);
    dl_tls_ctx_free(cx);
    dl_tls_ctx_free(NULL);
    fx_done(&f);
}
