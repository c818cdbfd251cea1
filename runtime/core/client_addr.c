/*
 * client_addr.c - IP addresses and the trusted-proxy ranges: text to
 * address and back (an IPv4-mapped IPv6 address is its IPv4 address), a
 * socket address's IP, and DEVLOOP_TRUSTED_PROXIES parsed strictly into a
 * fixed list of CIDRs, matched without allocating. The walk through a
 * request's forwarding fields is forwarded.c's. The rules and why:
 * docs/client_addr.md.
 */
#include "core/client_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/internal.h"

/* ============================================================ addresses */

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ::ffff:a.b.c.d is a.b.c.d: a dual-stack socket sees IPv4 clients so */
static void unmap(dl_ip_t *ip)
{
    if (ip->v6 && memcmp(ip->a, mapped_prefix, 12) == 0) {
        memmove(ip->a, ip->a + 12, 4);
        memset(ip->a + 4, 0, 12);
        ip->v6 = 0;
    }
}

int dl_ip_parse(const char *s, size_t n, dl_ip_t *out)
{
    char tmp[DL_IP_STRLEN];
    memset(out, 0, sizeof(*out));
    if (n == 0 || n >= sizeof(tmp) || memchr(s, '\0', n) != NULL)
        return DL_EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    /* inet_pton takes dotted quads only (no "1.2.3", no octal "01.2.3.4") */
    if (memchr(s, ':', n) == NULL)
        return inet_pton(AF_INET, tmp, out->a) == 1 ? 0 : DL_EINVAL;
    if (inet_pton(AF_INET6, tmp, out->a) != 1)
        return DL_EINVAL;
    out->v6 = 1;
    unmap(out);
    return 0;
}

size_t dl_ip_format(const dl_ip_t *ip, char *out)
{
    if (!ip->v6) {
        /* dotted decimal by hand: inet_ntop costs more than the rest of a
         * rate-limit check, and this runs on every request that reads req.ip */
        size_t n = 0;
        for (int i = 0; i < 4; i++) {
            unsigned b = ip->a[i];
            if (b >= 100)
                out[n++] = (char)('0' + b / 100);
            if (b >= 10)
                out[n++] = (char)('0' + b / 10 % 10);
            out[n++] = (char)('0' + b % 10);
            out[n++] = i < 3 ? '.' : '\0';
        }
        return n - 1;
    }
    if (inet_ntop(AF_INET6, ip->a, out, DL_IP_STRLEN) == NULL)
        out[0] = '\0';
    return strlen(out);
}

int dl_ip_from_sockaddr(const struct sockaddr *sa, dl_ip_t *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        memcpy(out->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        out->v6 = 1;
        unmap(out);
        return 0;
    }
    return DL_EINVAL;
}

/* ================================================================ ranges */

static int in_range(const dl_cidr_t *c, const dl_ip_t *ip)
{
    if (c->ip.v6 != ip->v6)
        return 0;
    int full = c->bits / 8, rem = c->bits % 8;
    if (memcmp(c->ip.a, ip->a, (size_t)full) != 0)
        return 0;
    if (rem == 0)
        return 1;
    uint8_t m = (uint8_t)(0xff << (8 - rem));
    return (c->ip.a[full] & m) == (ip->a[full] & m);
}

int dl_proxy_list_has(const dl_proxy_list_t *l, const dl_ip_t *ip)
{
    for (int i = 0; i < l->n; i++)
        if (in_range(&l->e[i], ip))
            return 1;
    return 0;
}

/* One entry: an address, or an address, '/' and a prefix length. *why is
 * what is wrong (a static sentence, or the suggestion in sugg). */
static int cidr_parse(const char *s, size_t n, dl_cidr_t *c, const char **why, char *sugg,
                      size_t sugglen)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    int text_v6 = memchr(s, ':', alen) != NULL;
    if (dl_ip_parse(s, alen, &c->ip) != 0) {
        *why = "not an IPv4 or IPv6 address (write an address, or an address, '/' and a "
               "prefix length)";
        return DL_EINVAL;
    }
    int max = text_v6 ? 128 : 32, bits = max;
    if (slash != NULL) {
        const char *d = slash + 1;
        size_t dn = n - alen - 1;
        bits = 0;
        for (size_t i = 0; i < dn; i++)
            bits = d[i] >= '0' && d[i] <= '9' && i < 3 ? bits * 10 + (d[i] - '0') : 999;
        if (dn == 0 || bits > max) {
            *why = text_v6 ? "the prefix length must be 0 to 128 for an IPv6 address"
                           : "the prefix length must be 0 to 32 for an IPv4 address";
            return DL_EINVAL;
        }
    }
    if (text_v6 && !c->ip.v6) { /* an IPv4-mapped range: the IPv4 range it holds */
        if (bits < 96) {
            *why = "the range holds IPv4-mapped and other IPv6 addresses; list the IPv4 "
                   "range and the IPv6 one apart";
            return DL_EINVAL;
        }
        bits -= 96;
        max = 32;
    }
    c->bits = (uint8_t)bits;
    dl_cidr_t masked = *c;
    for (int i = bits; i < max; i++)
        masked.ip.a[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
    if (memcmp(masked.ip.a, c->ip.a, sizeof(c->ip.a)) != 0) {
        char a[DL_IP_STRLEN];
        dl_ip_format(&masked.ip, a);
        snprintf(sugg, sugglen, "bits are set past the prefix length /%d (the range is %s/%d)",
                 bits, a, bits);
        *why = sugg;
        return DL_EINVAL;
    }
    return 0;
}

static int blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* s[0..n) with controls and bytes over 0x7e shown as '?', at most 80 bytes */
static void shown(const char *s, size_t n, char *out, size_t outlen)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w + 4 < outlen && i < 80; i++)
        out[w++] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e ? '?' : s[i];
    if (n > 80 && w + 4 < outlen)
        w += (size_t)snprintf(out + w, outlen - w, "...");
    out[w] = '\0';
}

int dl_proxy_list_parse(const char *s, dl_proxy_list_t *out, char *err, size_t errlen)
{
    out->n = 0;
    if (s == NULL)
        return 0;
    const char *p = s, *end = s + strlen(s);
    while (p < end && (blank(*p) || *p == '\n'))
        p++;
    if (p == end)
        return 0; /* blank: nobody trusted */
    p = s;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *a = p, *b = comma ? comma : end;
        while (a < b && blank(*a))
            a++;
        while (b > a && blank(b[-1]))
            b--;
        const char *why = NULL;
        char sugg[128], ent[96];
        if (a == b)
            why = "an empty entry (two commas together, or one at an end)";
        else if (out->n == DL_PROXY_MAX)
            why = "more than " DL_STR(DL_PROXY_MAX) " entries (use wider ranges)";
        else if (cidr_parse(a, (size_t)(b - a), &out->e[out->n], &why, sugg, sizeof(sugg)) == 0)
            out->n++;
        if (why != NULL) {
            shown(a, (size_t)(b - a), ent, sizeof(ent));
            if (err != NULL)
                snprintf(err, errlen, "entry \"%s\": %s", ent, why);
            out->n = 0;
            return DL_EINVAL;
        }
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}
