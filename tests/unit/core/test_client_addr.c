/*
 * test_client_addr.c - the client address (runtime/core/client_addr.c,
 * forwarded.c):
 * DEVLOOP_TRUSTED_PROXIES lists, address matching (IPv4, IPv6, IPv4-mapped),
 * the walk from the right through Forwarded and X-Forwarded-*, and its
 * bounds, on requests as a protocol leaves them (req_fixture.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "core/client_addr.h"
#include "core/forwarded.h"
#include "core/request.h"
#include "req_fixture.h"
#include "unit.h"

/* What a request from peer (with trusted as DEVLOOP_TRUSTED_PROXIES) works
 * out: "ip scheme host" in out ("-" for no host). */
static void client_of(const char *peer, int tls, const char *trusted, const char *const *fields,
                      char *out, size_t outlen)
{
    fake_core_t f;
    fake_conn_t c;
    fixture_init(&f, &c);
    if (dl_proxy_list_parse(trusted, &f.ctx.trusted, NULL, 0) != 0) {
        snprintf(out, outlen, "bad list");
        return;
    }
    dl_req_t *r = fixture_req(&f, &c, "GET", "/hello", fields);
    if (peer != NULL) {
        r->client.peer.known = 1;
        r->client.peer.tls = (uint8_t)tls;
        if (dl_ip_parse(peer, strlen(peer), &r->client.peer.ip) != 0)
            snprintf(out, outlen, "bad peer");
    }
    const dl_client_t *cl = dl_client_get(r);
    EXPECT(dl_client_get(r) == cl); /* kept */
    snprintf(out, outlen, "%s %s %.*s", cl->ip, cl->https ? "https" : "http",
             cl->host_len ? (int)cl->host_len : 1,
             cl->host_len ? r->head.data + cl->host_off : "-");
    f.ctx.release(&f.ctx, r);
}

#define EXPECT_CLIENT(want, peer, tls, trusted, ...)                                  \
    do {                                                                                \
        const char *fl_[] = {__VA_ARGS__, NULL};                                        \
        char got_[200];                                                                 \
        client_of(peer, tls, trusted, fl_, got_, sizeof(got_));                         \
        EXPECT_STR(got_, want);                                                         \
    } while (0)

static int list_err(const char *s, char *err, size_t errlen)
{
    dl_proxy_list_t l;
    err[0] = '\0';
    return dl_proxy_list_parse(s, &l, err, errlen);
}

static int trusts(const char *list, const char *addr)
{
    dl_proxy_list_t l;
    dl_ip_t ip;
    if (dl_proxy_list_parse(list, &l, NULL, 0) != 0 || dl_ip_parse(addr, strlen(addr), &ip) != 0)
        return -1;
    return dl_proxy_list_has(&l, &ip);
}

DL_TEST(client_addr_ip_parse_and_format)
{
    dl_ip_t ip;
    char s[DL_IP_STRLEN];
    EXPECT_EQ(dl_ip_parse("10.1.2.3", 8, &ip), 0);
    EXPECT_EQ(ip.v6, 0);
    dl_ip_format(&ip, s);
    EXPECT_STR(s, "10.1.2.3");
    EXPECT_EQ(dl_ip_parse("2001:DB8:0:0::1", 15, &ip), 0);
    EXPECT_EQ(ip.v6, 1);
    dl_ip_format(&ip, s);
    EXPECT_STR(s, "2001:db8::1");
    EXPECT_EQ(dl_ip_parse("::ffff:192.0.2.7", 16, &ip), 0); /* mapped: its IPv4 address */
    EXPECT_EQ(ip.v6, 0);
    dl_ip_format(&ip, s);
    EXPECT_STR(s, "192.0.2.7");
    const char *bad[] = {"", "1.2.3", "01.2.3.4", "1.2.3.4 ", "256.1.1.1", "1.2.3.4.5",
                         "fe80::1%eth0", "[::1]", "::g", "localhost", "1.2.3.4/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_EQ(dl_ip_parse(bad[i], strlen(bad[i]), &ip), DL_EINVAL);
    EXPECT_EQ(dl_ip_parse("1.2.3.4\0", 8, &ip), DL_EINVAL); /* a NUL inside */
    char big[100];
    memset(big, '1', sizeof(big));
    EXPECT_EQ(dl_ip_parse(big, sizeof(big), &ip), DL_EINVAL);
}

DL_TEST(client_addr_list_parse)
{
    dl_proxy_list_t l;
    EXPECT_EQ(dl_proxy_list_parse(NULL, &l, NULL, 0), 0);
    EXPECT_EQ(l.n, 0);
    EXPECT_EQ(dl_proxy_list_parse("  ", &l, NULL, 0), 0);
    EXPECT_EQ(l.n, 0);
    EXPECT_EQ(dl_proxy_list_parse("127.0.0.1/32, 10.0.0.0/8,::1 ,\tfd00::/8", &l, NULL, 0), 0);
    EXPECT_EQ(l.n, 4);
    EXPECT_EQ(l.e[0].bits, 32);
    EXPECT_EQ(l.e[1].bits, 8);
    EXPECT_EQ(l.e[2].bits, 128);
    EXPECT_EQ(l.e[3].bits, 8);
    EXPECT_EQ(dl_proxy_list_parse("0.0.0.0/0, ::/0", &l, NULL, 0), 0);
    /* an IPv4-mapped range is the IPv4 range */
    EXPECT_EQ(dl_proxy_list_parse("::ffff:10.0.0.0/104", &l, NULL, 0), 0);
    EXPECT_EQ(l.e[0].ip.v6, 0);
    EXPECT_EQ(l.e[0].bits, 8);

    char err[256];
    EXPECT_EQ(list_err("10.0.0.300/8", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "entry \"10.0.0.300/8\": not an IPv4 or IPv6 address") != NULL);
    EXPECT_EQ(list_err("127.0.0.1, 10.0.0.0/33", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "\"10.0.0.0/33\"") && strstr(err, "0 to 32"));
    EXPECT_EQ(list_err("::1/129", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "0 to 128") != NULL);
    EXPECT_EQ(list_err("10.0.0.1/8", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "the range is 10.0.0.0/8") != NULL);
    EXPECT_EQ(list_err("fd00::1/8", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "the range is fd00::/8") != NULL);
    EXPECT_EQ(list_err("127.0.0.1,", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "empty entry") != NULL);
    EXPECT_EQ(list_err("127.0.0.1,,::1", err, sizeof(err)), DL_EINVAL);
    const char *bad[] = {"10.0.0.0/", "10.0.0.0/8x", "10.0.0.0/+8", "10.0.0.0/0008",
                         "10.0.0.0/8/8", "[::1]", "::1/64 junk", "localhost", "10.0.0.0 /8",
                         "*", "::ffff:0:0/95"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        EXPECT_EQ(list_err(bad[i], err, sizeof(err)), DL_EINVAL);
        EXPECT(strstr(err, "entry \"") != NULL);
        EXPECT_EQ(dl_proxy_list_parse(bad[i], &l, NULL, 0), DL_EINVAL); /* err may be NULL */
        EXPECT_EQ(l.n, 0);
    }
    EXPECT_EQ(list_err("10.0.0.0/8\r\n", err, sizeof(err)), DL_EINVAL); /* controls shown as ? */
    EXPECT(strchr(err, '\r') == NULL && strstr(err, "10.0.0.0/8??") != NULL);

    /* at most DL_PROXY_MAX entries */
    char many[DL_PROXY_MAX * 16 + 32];
    size_t w = 0;
    for (int i = 0; i < DL_PROXY_MAX; i++)
        w += (size_t)snprintf(many + w, sizeof(many) - w, "%s10.0.%d.0/24", i ? "," : "", i);
    EXPECT_EQ(dl_proxy_list_parse(many, &l, NULL, 0), 0);
    EXPECT_EQ(l.n, DL_PROXY_MAX);
    snprintf(many + w, sizeof(many) - w, ",10.1.0.0/24");
    EXPECT_EQ(list_err(many, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "more than 64 entries") != NULL);
}

DL_TEST(client_addr_matching)
{
    EXPECT_EQ(trusts("10.0.0.0/8", "10.255.1.2"), 1);
    EXPECT_EQ(trusts("10.0.0.0/8", "11.0.0.1"), 0);
    EXPECT_EQ(trusts("192.168.1.128/25", "192.168.1.200"), 1);
    EXPECT_EQ(trusts("192.168.1.128/25", "192.168.1.127"), 0);
    EXPECT_EQ(trusts("127.0.0.1", "127.0.0.1"), 1);
    EXPECT_EQ(trusts("127.0.0.1", "127.0.0.2"), 0);
    EXPECT_EQ(trusts("0.0.0.0/0", "8.8.8.8"), 1);
    EXPECT_EQ(trusts("0.0.0.0/0", "::1"), 0);      /* an IPv4 range holds no IPv6 address */
    EXPECT_EQ(trusts("::/0", "8.8.8.8"), 0);       /* nor an IPv6 range an IPv4 one */
    EXPECT_EQ(trusts("::/0", "2001:db8::5"), 1);
    EXPECT_EQ(trusts("fd00::/8", "fd12:3456::1"), 1);
    EXPECT_EQ(trusts("fd00::/8", "fe80::1"), 0);
    EXPECT_EQ(trusts("2001:db8::/33", "2001:db8:7fff::1"), 1);
    EXPECT_EQ(trusts("2001:db8::/33", "2001:db8:8000::1"), 0);
    EXPECT_EQ(trusts("::1", "::1"), 1);
    /* an IPv4-mapped peer is its IPv4 address, either way round */
    EXPECT_EQ(trusts("10.0.0.0/8", "::ffff:10.1.1.1"), 1);
    EXPECT_EQ(trusts("::ffff:10.0.0.0/104", "10.1.1.1"), 1);
    EXPECT_EQ(trusts("", "127.0.0.1"), 0);

    /* from a socket address */
    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &s6.sin6_addr);
    dl_ip_t ip;
    char s[DL_IP_STRLEN];
    EXPECT_EQ(dl_ip_from_sockaddr((struct sockaddr *)&s6, &ip), 0);
    dl_ip_format(&ip, s);
    EXPECT_STR(s, "127.0.0.1");
    struct sockaddr_in s4;
    memset(&s4, 0, sizeof(s4));
    s4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
    EXPECT_EQ(dl_ip_from_sockaddr((struct sockaddr *)&s4, &ip), 0);
    dl_ip_format(&ip, s);
    EXPECT_STR(s, "192.0.2.1");
    struct sockaddr un = {.sa_family = AF_UNIX};
    EXPECT_EQ(dl_ip_from_sockaddr(&un, &ip), DL_EINVAL);
}

DL_TEST(client_addr_untrusted_peer_ignores_fields)
{
    /* nobody trusted: the peer, whatever the client claims */
    EXPECT_CLIENT("203.0.113.9 http a.example", "203.0.113.9", 0, "", "host", "a.example",
                  "x-forwarded-for", "1.2.3.4", "x-forwarded-proto", "https",
                  "x-forwarded-host", "evil.example", "forwarded", "for=1.2.3.4;proto=https");
    /* a list that does not hold the peer */
    EXPECT_CLIENT("203.0.113.9 https a.example", "203.0.113.9", 1, "10.0.0.0/8", "host",
                  "a.example", "x-forwarded-for", "1.2.3.4", "x-forwarded-proto", "http");
    /* an IPv6 peer, the canonical text */
    EXPECT_CLIENT("2001:db8::1 http a", "2001:DB8:0::1", 0, "", "host", "a");
    /* in-process: loopback, and the caller's fields are never a proxy's */
    EXPECT_CLIENT("127.0.0.1 http localhost", NULL, 0, "127.0.0.1", "host", "localhost",
                  "x-forwarded-for", "1.2.3.4");
    /* no Host (HTTP/1.0) */
    EXPECT_CLIENT("203.0.113.9 http -", "203.0.113.9", 0, "", "x-custom", "1");
}

DL_TEST(client_addr_x_forwarded_for_walk)
{
    const char *T = "127.0.0.1, 10.0.0.0/8";
    EXPECT_CLIENT("1.2.3.4 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for", "1.2.3.4");
    /* the client forges entries on the left: the right-most untrusted wins */
    EXPECT_CLIENT("1.2.3.4 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "6.6.6.6, 7.7.7.7,1.2.3.4");
    /* through trusted hops */
    EXPECT_CLIENT("1.2.3.4 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "6.6.6.6, 1.2.3.4, 10.0.0.7, 10.9.9.9");
    /* every hop trusted: the left-most */
    EXPECT_CLIENT("10.0.0.1 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "10.0.0.1, 10.0.0.2");
    /* several lines join in order (the second line's last is right-most) */
    EXPECT_CLIENT("5.5.5.5 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "1.1.1.1, 10.0.0.1", "x-forwarded-for", "5.5.5.5, 10.0.0.2");
    /* ports stripped; brackets; bare IPv6; mapped; empty elements skipped */
    EXPECT_CLIENT("1.2.3.4 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "1.2.3.4:5678");
    EXPECT_CLIENT("2001:db8::7 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "[2001:db8::7]:443");
    EXPECT_CLIENT("2001:db8::7 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "2001:db8::7");
    EXPECT_CLIENT("10.0.0.5 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "::ffff:10.0.0.5");
    EXPECT_CLIENT("1.2.3.4 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  ", 1.2.3.4 , ,");
    /* malformed or unknown: the walk stops at the last good hop */
    EXPECT_CLIENT("10.0.0.3 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "1.2.3.4, garbage, 10.0.0.3");
    EXPECT_CLIENT("127.0.0.1 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                  "unknown");
    const char *bad[] = {"1.2.3.4:", "1.2.3.4:123456", "1.2.3.4:80x", "[1.2.3.4]", "[::1",
                         "[::1]x", "\"1.2.3.4\"", "1.2.3.4 5.6.7.8", "_hidden", "01.2.3.4",
                         "::1]:80", "[::1]:"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_CLIENT("127.0.0.1 http h", "127.0.0.1", 0, T, "host", "h", "x-forwarded-for",
                      bad[i]);
    /* an IPv6 proxy */
    EXPECT_CLIENT("198.51.100.1 http h", "::1", 0, "::1", "host", "h", "x-forwarded-for",
                  "198.51.100.1");
    /* an IPv4-mapped peer matches the IPv4 list */
    EXPECT_CLIENT("198.51.100.1 http h", "::ffff:127.0.0.1", 0, "127.0.0.1", "host", "h",
                  "x-forwarded-for", "198.51.100.1");
}

DL_TEST(client_addr_x_forwarded_proto_and_host)
{
    const char *T = "127.0.0.1, 10.0.0.0/8";
    EXPECT_CLIENT("1.2.3.4 https api.example:8443", "127.0.0.1", 0, T, "host", "inner:8080",
                  "x-forwarded-for", "1.2.3.4", "x-forwarded-proto", "HTTPS",
                  "x-forwarded-host", "api.example:8443");
    /* one per hop: the element beside the client's */
    EXPECT_CLIENT("1.2.3.4 https a.example", "127.0.0.1", 0, T, "host", "inner",
                  "x-forwarded-for", "1.2.3.4, 10.0.0.1", "x-forwarded-proto", "https, http",
                  "x-forwarded-host", "a.example, b.example");
    /* a count that does not match: the right-most (the nearest proxy's) */
    EXPECT_CLIENT("1.2.3.4 http b.example", "127.0.0.1", 1, T, "host", "inner",
                  "x-forwarded-for", "9.9.9.9, 1.2.3.4, 10.0.0.1", "x-forwarded-proto",
                  "https, http", "x-forwarded-host", "a.example, b.example");
    /* invalid proto or host: the connection's */
    EXPECT_CLIENT("1.2.3.4 https inner", "127.0.0.1", 1, T, "host", "inner", "x-forwarded-for",
                  "1.2.3.4", "x-forwarded-proto", "gopher", "x-forwarded-host", "a b");
    EXPECT_CLIENT("1.2.3.4 http inner", "127.0.0.1", 0, T, "host", "inner", "x-forwarded-for",
                  "1.2.3.4", "x-forwarded-host", "evil.example/path");
    /* no forwarded address read: proto and host are the connection's too */
    EXPECT_CLIENT("127.0.0.1 http inner", "127.0.0.1", 0, T, "host", "inner",
                  "x-forwarded-proto", "https", "x-forwarded-host", "a.example");
}

DL_TEST(client_addr_forwarded)
{
    const char *T = "127.0.0.1, 10.0.0.0/8";
    EXPECT_CLIENT("192.0.2.60 https example.com", "127.0.0.1", 0, T, "host", "inner",
                  "forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43;host=example.com");
    /* quoted, bracketed, with ports; names any case; blanks around ';' */
    EXPECT_CLIENT("2001:db8:cafe::17 https example.com:8443", "127.0.0.1", 0, T, "host",
                  "inner", "forwarded",
                  "For=\"[2001:db8:cafe::17]:4711\" ; Proto=HTTPS ; HOST=\"example.com:8443\"");
    EXPECT_CLIENT("192.0.2.43 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=\"192.0.2.43:47011\"");
    /* preferred over X-Forwarded-For */
    EXPECT_CLIENT("192.0.2.43 http inner", "127.0.0.1", 0, T, "host", "inner",
                  "x-forwarded-for", "6.6.6.6", "forwarded", "for=192.0.2.43");
    /* right-most untrusted; the chosen element's proto; lines join */
    EXPECT_CLIENT("192.0.2.1 https inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=6.6.6.6;proto=http, for=192.0.2.1;proto=https",
                  "forwarded", "for=10.0.0.9;proto=http");
    /* a comma inside a quoted string is not a separator */
    EXPECT_CLIENT("192.0.2.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=192.0.2.1;ext=\"a,b\"");
    /* obfuscated or unknown: the walk stops at the hop it is at */
    EXPECT_CLIENT("10.0.0.9 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=1.2.3.4, for=_hidden, for=10.0.0.9");
    EXPECT_CLIENT("127.0.0.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=unknown");
    EXPECT_CLIENT("127.0.0.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=\"_gazonk\"");
    /* obfuscated port is fine */
    EXPECT_CLIENT("192.0.2.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=\"192.0.2.1:_port9\"");
    /* malformed elements stop the walk */
    const char *bad[] = {"for=\"192.0.2.1",            /* unterminated quote */
                         "for=1.2.3.4;for=5.6.7.8",    /* for twice */
                         "proto=https",                /* no for */
                         "for",                        /* no '=' */
                         "for=",                       /* no value */
                         "for=2001:db8::1",            /* IPv6 must be bracketed */
                         "for=\"[2001:db8::1\"",       /* no ']' */
                         "for=\"1.2.3\\.4\"",          /* quoted-pair */
                         "for=1.2.3.4 x",              /* junk after a value */
                         "for=\"_bad/obf\"",           /* obfuscated with a bad char */
                         "=1.2.3.4",                   /* no name */
                         "for=1.2.3.4:99999x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_CLIENT("127.0.0.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                      bad[i]);
    /* a Forwarded line, even a bad one, means X-Forwarded-For is not read */
    EXPECT_CLIENT("127.0.0.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "nonsense", "x-forwarded-for", "1.2.3.4");
    /* invalid host= is ignored */
    EXPECT_CLIENT("192.0.2.1 http inner", "127.0.0.1", 0, T, "host", "inner", "forwarded",
                  "for=192.0.2.1;host=\"a b\"");
}

DL_TEST(client_addr_bounds)
{
    /* 10000 addresses: one pass, and at most DL_CLIENT_HOPS examined */
    dl_buf_t b = DL_BUF_INIT;
    for (int i = 0; i < 10000; i++)
        dl_buf_appendf(&b, "%s10.%d.%d.%d", i ? ", " : "", i / 65536, i / 256 % 256, i % 256);
    dl_buf_append_char(&b, '\0');
    char want[64];
    /* every one trusted: the DL_CLIENT_HOPS-th from the right */
    int k = 10000 - DL_CLIENT_HOPS;
    snprintf(want, sizeof(want), "10.%d.%d.%d http h", k / 65536, k / 256 % 256, k % 256);
    EXPECT_CLIENT(want, "127.0.0.1", 0, "127.0.0.1, 10.0.0.0/8", "host", "h", "x-forwarded-for",
                  b.data);
    /* the first untrusted from the right wins long before the cap */
    EXPECT_CLIENT("10.0.38.255 http h", "127.0.0.1", 0, "127.0.0.1, 10.0.39.0/28", "host", "h",
                  "x-forwarded-for", b.data);
    dl_buf_reset(&b);
    for (int i = 0; i < 10000; i++)
        dl_buf_appendf(&b, "%sfor=\"[2001:db8::%x]:1\";proto=https", i ? "," : "", i);
    dl_buf_append_char(&b, '\0');
    EXPECT_CLIENT("2001:db8::270f https h", "127.0.0.1", 0, "127.0.0.1", "host", "h",
                  "forwarded", b.data);
    dl_buf_free(&b);
}

/* IPv4 text is written by hand (not inet_ntop): every byte value in every
 * position, and its length, as inet_ntop has them */
DL_TEST(client_addr_ipv4_format_matches_inet_ntop)
{
    dl_ip_t ip;
    char s[DL_IP_STRLEN], want[DL_IP_STRLEN];
    memset(&ip, 0, sizeof(ip));
    for (unsigned v = 0; v < 256; v++) {
        for (int pos = 0; pos < 4; pos++) {
            memset(ip.a, pos == 0 ? 255 : 0, 4);
            ip.a[pos] = (uint8_t)v;
            inet_ntop(AF_INET, ip.a, want, sizeof(want));
            size_t n = dl_ip_format(&ip, s);
            EXPECT_STR(s, want);
            EXPECT_EQ(n, strlen(want));
        }
    }
    memset(ip.a, 255, 4);
    EXPECT_EQ(dl_ip_format(&ip, s), 15);
    EXPECT_STR(s, "255.255.255.255");
}
