/*
 * client_addr.h - what a request's client is made of: IP addresses, the
 * trusted-proxy ranges (DEVLOOP_TRUSTED_PROXIES, parsed once into a
 * dl_proxy_list_t), a connection's peer and the client a request works out
 * (req.ip, req.scheme, req.host; forwarded.h does the working out). Only
 * common/ below it: the request (core/http.h) and the protocol table
 * (core/proto.h) hold these types. The rules and why: docs/client_addr.md.
 */
#ifndef DL_CLIENT_ADDR_H
#define DL_CLIENT_ADDR_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

#define DL_PROXY_MAX 64    /* entries of DEVLOOP_TRUSTED_PROXIES */
#define DL_CLIENT_HOPS 32  /* forwarded addresses examined, from the right */
#define DL_IP_STRLEN 46    /* INET6_ADDRSTRLEN */

/** An IP address: IPv4 in a[0..4), IPv6 in a[0..16). An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is always held as its IPv4 address. */
typedef struct {
    uint8_t v6;
    uint8_t a[16];
} dl_ip_t;

/** One trusted range: addresses whose first bits bits equal ip's. */
typedef struct {
    dl_ip_t ip;
    uint8_t bits;
} dl_cidr_t;

/** The trusted proxies; n == 0 trusts nobody. */
typedef struct {
    int n;
    dl_cidr_t e[DL_PROXY_MAX];
} dl_proxy_list_t;

/** Where a connection comes from, as its protocol fills it once. */
typedef struct {
    dl_ip_t ip;
    uint8_t known; /* 0: no socket (an in-process request) */
    uint8_t tls;
} dl_peer_t;

/** A request's client, as dl_client_get() works it out. */
typedef struct {
    dl_peer_t peer;     /* copied from the connection when the request is acquired */
    uint8_t done;       /* the fields below are computed */
    uint8_t https;      /* req.scheme */
    char ip[DL_IP_STRLEN];       /* req.ip, canonical text (inet_ntop) */
    uint32_t host_off, host_len; /* req.host in the request's head; host_len 0: none */
} dl_client_t;

/**
 * Parses s[0..n) as an IPv4 or IPv6 address (no brackets, port or zone);
 * an IPv4-mapped IPv6 address becomes its IPv4 address. Returns 0 or DL_EINVAL.
 */
int dl_ip_parse(const char *s, size_t n, dl_ip_t *out);
/** Writes ip's canonical text (NUL-terminated, at most DL_IP_STRLEN bytes); returns its length. */
size_t dl_ip_format(const dl_ip_t *ip, char *out);
/** A socket address's IP (AF_INET or AF_INET6); DL_EINVAL for another family. */
int dl_ip_from_sockaddr(const struct sockaddr *sa, dl_ip_t *out);

/**
 * Parses a comma-separated list of CIDRs ("10.0.0.0/8", "fd00::/8") or single
 * addresses ("127.0.0.1", "::1"), blanks around entries ignored; NULL or
 * blank is an empty list. An entry that is not one, a prefix past the
 * address's length, bits set past the prefix, or more than DL_PROXY_MAX
 * entries: DL_EINVAL with a sentence naming the entry in err (err may be
 * NULL). An IPv6 range inside ::ffff:0:0/96 is taken as the IPv4 range.
 */
int dl_proxy_list_parse(const char *s, dl_proxy_list_t *out, char *err, size_t errlen);
/** 1 when ip is inside one of l's ranges (an IPv4 range never holds an IPv6 address). */
int dl_proxy_list_has(const dl_proxy_list_t *l, const dl_ip_t *ip);

#endif
