/*
 * forwarded.c - a request's client address, scheme and host. The socket
 * peer decides them, unless it is inside DEVLOOP_TRUSTED_PROXIES: then the
 * forwarding fields a trusted proxy added are walked from the right (the
 * right-most address is the one that proxy saw) while the address reached
 * is trusted too; the first untrusted one is the client. Forwarded (RFC
 * 7239) is read when the request has one, else X-Forwarded-For with
 * X-Forwarded-Proto and X-Forwarded-Host. A field a client forged sits left
 * of what the proxies added, so it is reached only through addresses the
 * operator trusts. Nothing here is done until a request asks (req.ip, the
 * access log): most never do. The rules and why: docs/client_addr.md.
 */
#include "core/forwarded.h"

#include <string.h>

#include "common/internal.h"
#include "core/proto.h"
#include "core/request.h"

static int blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* ================================================== forwarding fields */

/* Spans of a field's elements; only the last DL_CLIENT_HOPS are kept, so a
 * field of 10000 addresses costs one pass over its bytes. */
typedef struct {
    const char *a[DL_CLIENT_HOPS], *b[DL_CLIENT_HOPS];
    size_t n; /* elements seen, kept or not */
} ring_t;

static void ring_push(ring_t *g, const char *a, const char *b)
{
    g->a[g->n % DL_CLIENT_HOPS] = a;
    g->b[g->n % DL_CLIENT_HOPS] = b;
    g->n++;
}

/* The k-th element from the right (0: the right-most); 0 when there is none
 * or it was not kept. */
static int ring_at(const ring_t *g, size_t k, const char **a, const char **b)
{
    if (k >= g->n || k >= DL_CLIENT_HOPS)
        return 0;
    size_t i = (g->n - 1 - k) % DL_CLIENT_HOPS;
    *a = g->a[i];
    *b = g->b[i];
    return 1;
}

/* The next element of a Forwarded value: up to a comma outside a
 * quoted-string, trimmed; empty ones skipped. 0 at the end. */
static int fwd_next(const char **p, const char *end, const char **a, const char **b)
{
    const char *s = *p;
    while (s < end && (blank(*s) || *s == ','))
        s++;
    if (s == end) {
        *p = s;
        return 0;
    }
    const char *q = s;
    int quoted = 0;
    for (; q < end; q++) {
        if (quoted && *q == '\\' && q + 1 < end)
            q++;
        else if (*q == '"')
            quoted = !quoted;
        else if (*q == ',' && !quoted)
            break;
    }
    const char *e = q;
    while (e > s && blank(e[-1]))
        e--;
    *a = s;
    *b = e;
    *p = q;
    return 1;
}

static int tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The parameters of one Forwarded element that matter here. */
typedef struct {
    const char *for_v, *proto_v, *host_v;
    size_t for_n, proto_n, host_n;
} fwd_t;

/*
 * forwarded-element = [ pair ] *( ";" [ pair ] ), pair = token "=" ( token /
 * quoted-string ) (RFC 7239 4). 0, or -1 when it is malformed: a pair without
 * '=' or value, an unterminated quoted-string, for/proto/host twice (RFC
 * 7239 4 forbids it) or with a quoted-pair (no valid node, proto or host
 * needs one). Other parameters are skipped. An unquoted value runs to ';'
 * or a blank: the node's own check (node_parse) is strict.
 */
static int fwd_parse(const char *s, const char *end, fwd_t *f)
{
    memset(f, 0, sizeof(*f));
    while (s < end) {
        while (s < end && blank(*s))
            s++;
        if (s == end)
            break;
        if (*s == ';') {
            s++;
            continue;
        }
        const char *name = s;
        while (s < end && tchar((unsigned char)*s))
            s++;
        size_t nlen = (size_t)(s - name);
        if (nlen == 0 || s == end || *s != '=')
            return -1;
        s++;
        const char *v = s;
        size_t vn;
        int esc = 0;
        if (s < end && *s == '"') {
            v = ++s;
            while (s < end && *s != '"') {
                if (*s == '\\') {
                    esc = 1;
                    if (++s == end)
                        return -1;
                }
                s++;
            }
            if (s == end)
                return -1;
            vn = (size_t)(s - v);
            s++;
        } else {
            while (s < end && *s != ';' && !blank(*s) && *s != '"')
                s++;
            vn = (size_t)(s - v);
            if (vn == 0)
                return -1;
        }
        while (s < end && blank(*s))
            s++;
        if (s < end && *s != ';')
            return -1;
        const char **slot = NULL;
        size_t *slot_n = NULL;
        if (dl_strncasecmp_eq(name, nlen, "for", 3)) {
            slot = &f->for_v;
            slot_n = &f->for_n;
        } else if (dl_strncasecmp_eq(name, nlen, "proto", 5)) {
            slot = &f->proto_v;
            slot_n = &f->proto_n;
        } else if (dl_strncasecmp_eq(name, nlen, "host", 4)) {
            slot = &f->host_v;
            slot_n = &f->host_n;
        }
        if (slot == NULL)
            continue;
        if (*slot != NULL || esc)
            return -1;
        *slot = v;
        *slot_n = vn;
    }
    return 0;
}

enum { NODE_ADDR, NODE_HIDDEN, NODE_BAD };

static int obf_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return n > 0;
}

/* port = 1*5DIGIT; obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-") */
static int port_ok(const char *s, size_t n)
{
    if (n > 0 && s[0] == '_')
        return obf_ok(s + 1, n - 1);
    if (n == 0 || n > 5)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/*
 * A Forwarded node (RFC 7239 6: IPv4, "[" IPv6 "]", "unknown" or an
 * obfuscated "_name", each with an optional ":port") or an element of
 * X-Forwarded-For (the same, and a bare IPv6 address without a port, which
 * is what most proxies send). The port is dropped.
 */
static int node_parse(const char *s, size_t n, int bare_v6, dl_ip_t *ip)
{
    if (dl_strncasecmp_eq(s, n, "unknown", 7))
        return NODE_HIDDEN;
    if (n > 0 && s[0] == '_')
        return obf_ok(s + 1, n - 1) ? NODE_HIDDEN : NODE_BAD;
    const char *name = s, *port = NULL;
    size_t nn = n, pn = 0;
    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (rb == NULL)
            return NODE_BAD;
        name = s + 1;
        nn = (size_t)(rb - name);
        size_t rest = n - (size_t)(rb - s) - 1;
        if (rest > 0) {
            if (rb[1] != ':')
                return NODE_BAD;
            port = rb + 2;
            pn = rest - 1;
        }
        if (memchr(name, ':', nn) == NULL)
            return NODE_BAD; /* brackets hold IPv6 only */
    } else {
        const char *c = memchr(s, ':', n);
        if (c != NULL && memchr(c + 1, ':', n - (size_t)(c - s) - 1) == NULL) {
            nn = (size_t)(c - s);
            port = c + 1;
            pn = n - nn - 1;
        } else if (c != NULL && !bare_v6) {
            return NODE_BAD;
        }
    }
    if (port != NULL && !port_ok(port, pn))
        return NODE_BAD;
    return dl_ip_parse(name, nn, ip) == 0 ? NODE_ADDR : NODE_BAD;
}

/* 1 https, 0 http, -1 anything else */
static int proto_of(const char *s, size_t n)
{
    if (dl_strncasecmp_eq(s, n, "https", 5))
        return 1;
    if (dl_strncasecmp_eq(s, n, "http", 4))
        return 0;
    return -1;
}

static int name_is(const dl_req_t *r, const dl_header_t *h, const char *name, size_t n)
{
    return dl_strncasecmp_eq(r->head.data + h->name_off, h->name_len, name, n);
}

typedef struct {
    ring_t fwd, xff, xfp, xfh;
} fields_t;

/* One pass over the header fields; lines of one name join in order. */
static void collect(const dl_req_t *r, fields_t *f)
{
    for (int i = 0; i < r->n_headers; i++) {
        const dl_header_t *h = &r->headers[i];
        if (h->name_len < 9 || (h->name_len > 9 && h->name_len < 15) || h->name_len > 17)
            continue;
        const char *v = r->head.data + h->value_off, *end = v + h->value_len, *a, *b;
        ring_t *g = name_is(r, h, "forwarded", 9)           ? &f->fwd
                    : name_is(r, h, "x-forwarded-for", 15)   ? &f->xff
                    : name_is(r, h, "x-forwarded-proto", 17) ? &f->xfp
                    : name_is(r, h, "x-forwarded-host", 16)  ? &f->xfh
                                                             : NULL;
        if (g == &f->fwd)
            while (fwd_next(&v, end, &a, &b))
                ring_push(g, a, b);
        else if (g != NULL)
            while (dl_http_list_next(&v, end, &a, &b))
                ring_push(g, a, b);
    }
}

/* The X-Forwarded-Proto/-Host element for the hop-th address from the
 * right: the one beside it when the field has as many elements as
 * X-Forwarded-For (each proxy appended to both), else the right-most (what
 * the nearest proxy set). */
static int xf_side(const ring_t *g, const ring_t *xff, size_t hop, const char **a, const char **b)
{
    return ring_at(g, g->n == xff->n ? hop : 0, a, b);
}

static void set_host(dl_req_t *r, dl_client_t *cl, const char *v, size_t n)
{
    cl->host_off = (uint32_t)(v - r->head.data);
    cl->host_len = (uint32_t)n;
}

static int host_ok(const char *v, size_t n)
{
    return n > 0 && dl_http_host_valid(v, n);
}

static void resolve(dl_req_t *r, dl_client_t *cl)
{
    size_t hlen = 0;
    const char *host = dl_req_header(r, "host", &hlen);
    if (host != NULL)
        set_host(r, cl, host, hlen); /* dl_req_begin checked it */
    cl->https = cl->peer.tls;
    dl_ip_t ip = cl->peer.ip;
    if (!cl->peer.known) {
        /* in-process: no socket, and its fields are the caller's, never a proxy's */
        dl_ip_parse("127.0.0.1", 9, &ip);
        dl_ip_format(&ip, cl->ip);
        return;
    }
    const dl_proxy_list_t *tl = r->ctx != NULL ? &r->ctx->trusted : NULL;
    if (tl == NULL || tl->n == 0 || !dl_proxy_list_has(tl, &ip)) {
        dl_ip_format(&ip, cl->ip);
        return;
    }
    fields_t f;
    f.fwd.n = f.xff.n = f.xfp.n = f.xfh.n = 0;
    collect(r, &f);
    int use_fwd = f.fwd.n > 0;
    const ring_t *chain = use_fwd ? &f.fwd : &f.xff;
    fwd_t chosen;
    memset(&chosen, 0, sizeof(chosen));
    size_t hop = 0;
    int moved = 0;
    /* while the address reached is trusted, the one it forwarded for is
     * believed; a hidden, malformed or missing one ends the walk where it is */
    for (size_t k = 0;; k++) {
        const char *a, *b;
        if (!ring_at(chain, k, &a, &b))
            break; /* every address trusted, or DL_CLIENT_HOPS examined */
        const char *nv = a;
        size_t nn = (size_t)(b - a);
        fwd_t el;
        if (use_fwd) {
            if (fwd_parse(a, b, &el) != 0 || el.for_v == NULL)
                break;
            nv = el.for_v;
            nn = el.for_n;
        }
        dl_ip_t next;
        if (node_parse(nv, nn, !use_fwd, &next) != NODE_ADDR)
            break;
        ip = next;
        hop = k;
        moved = 1;
        if (use_fwd)
            chosen = el;
        if (!dl_proxy_list_has(tl, &ip))
            break;
    }
    dl_ip_format(&ip, cl->ip);
    if (!moved)
        return;
    /* scheme and host: what the proxy that named the client claims */
    const char *pv = NULL, *pe = NULL, *hv = NULL, *he = NULL;
    if (use_fwd) {
        if (chosen.proto_v != NULL) {
            pv = chosen.proto_v;
            pe = pv + chosen.proto_n;
        }
        if (chosen.host_v != NULL) {
            hv = chosen.host_v;
            he = hv + chosen.host_n;
        }
    } else {
        xf_side(&f.xfp, &f.xff, hop, &pv, &pe);
        xf_side(&f.xfh, &f.xff, hop, &hv, &he);
    }
    int https = pv != NULL ? proto_of(pv, (size_t)(pe - pv)) : -1;
    if (https >= 0)
        cl->https = (uint8_t)https;
    if (hv != NULL && host_ok(hv, (size_t)(he - hv)))
        set_host(r, cl, hv, (size_t)(he - hv));
}

const dl_client_t *dl_client_get(dl_req_t *r)
{
    if (!r->client.done) {
        resolve(r, &r->client);
        r->client.done = 1;
    }
    return &r->client;
}
