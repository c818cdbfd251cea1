/*
 * dns.h - a worker's name resolver for outbound connections: libuv's
 * getaddrinfo (on the thread pool, never blocking the loop) behind a small
 * cache with a time to live, with concurrent lookups of one name sharing one
 * query. IP literals are answered without a lookup. Everything runs on the
 * loop's thread.
 */
#ifndef DL_DNS_H
#define DL_DNS_H

#include <netinet/in.h>
#include <uv.h>

#define DL_DNS_MAX_ADDRS 8
#define DL_DNS_MAX_NAME 253 /* RFC 1035's limit on a name's text form */

/** The addresses of a name, in getaddrinfo's order (IPv4 and IPv6), port 0. */
typedef struct {
    int n;
    struct sockaddr_storage a[DL_DNS_MAX_ADDRS];
} dl_dns_addrs_t;

typedef struct dl_dns_s dl_dns_t;
typedef struct dl_dns_wait_s dl_dns_wait_t;

/** status 0 with the addresses (borrowed for the call), or DL_EDNS with why. */
typedef void (*dl_dns_cb)(int status, const dl_dns_addrs_t *addrs, const char *why, void *arg);

/** A resolver on loop: answers are kept ttl_ms (0: not cached), at most
 * max_names names (the oldest goes first). NULL on OOM. */
dl_dns_t *dl_dns_new(uv_loop_t *loop, uint64_t ttl_ms, int max_names);
/** Frees the cache; lookups still running finish on the thread pool and are
 * dropped. Every waiter must have been canceled. */
void dl_dns_free(dl_dns_t *d);

/**
 * Resolves host (a name or an IP literal, IPv6 without brackets). Returns 0
 * with *out filled at once (a literal, or a cached answer), 1 when cb will be
 * called later (*w lets the caller cancel; the callback is then never
 * called), or DL_EDNS / DL_ENOMEM at once, why in why[whylen] (the callback is
 * not called).
 */
int dl_dns_lookup(dl_dns_t *d, const char *host, dl_dns_addrs_t *out, dl_dns_cb cb, void *arg,
                  dl_dns_wait_t **w, char *why, size_t whylen);
/** Detaches a waiter: its callback is never called. */
void dl_dns_cancel(dl_dns_wait_t *w);

/** Fills an address from an IP literal; 0 or -1 when host is not one. */
int dl_dns_literal(const char *host, struct sockaddr_storage *out);

#endif
