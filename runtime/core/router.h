/*
 * router.h - the HTTP router: maps (method, path) to the data registered for
 * a route pattern, with ":name" params and a trailing "*" wildcard.
 */
#ifndef DL_ROUTER_H
#define DL_ROUTER_H

#include <stddef.h>

#include "common/buf.h"

/* Methods as bits, so one route can take several and a 405 can list them. */
enum {
    DL_M_GET = 1 << 0,
    DL_M_HEAD = 1 << 1,
    DL_M_POST = 1 << 2,
    DL_M_PUT = 1 << 3,
    DL_M_PATCH = 1 << 4,
    DL_M_DELETE = 1 << 5,
    DL_M_OPTIONS = 1 << 6,
    DL_M_ALL = 0x7f
};

/** "GET" -> DL_M_GET; case-sensitive, as HTTP methods are. Returns 0 when unknown. */
int dl_method_from_name(const char *s, size_t len);

/** DL_M_GET -> "GET". Returns NULL unless m is exactly one DL_M_* bit. */
const char *dl_method_name(int m);

#define DL_ROUTER_MAX_PARAMS 16
/* Longest pattern dl_router_add accepts, in bytes; it bounds the trie's depth. */
#define DL_ROUTER_MAX_PATTERN 4096

typedef struct dl_router_s dl_router_t;

typedef struct {
    const char *name; /* owned by the router; "splat" for an unnamed wildcard */
    size_t name_len;
    const char *value; /* points into the matched path, not decoded */
    size_t value_len;
} dl_route_param_t;

typedef struct {
    void *data;          /* what dl_router_add stored for the matched method */
    const char *pattern; /* the route's pattern as registered (owned by the router) */
    int n_params;
    dl_route_param_t params[DL_ROUTER_MAX_PARAMS]; /* in pattern order */
    unsigned allowed; /* with DL_ROUTE_METHOD_NOT_ALLOWED: the methods the path has
                       * (HEAD included whenever GET is); 0 otherwise */
} dl_route_match_t;

enum { DL_ROUTE_FOUND = 0, DL_ROUTE_NOT_FOUND = 1, DL_ROUTE_METHOD_NOT_ALLOWED = 2 };

/** Creates an empty router. Returns NULL when out of memory. */
dl_router_t *dl_router_new(void);

/**
 * Frees the router and its patterns. NULL is a no-op. The data pointers are
 * not freed: release them first with dl_router_foreach().
 */
void dl_router_free(dl_router_t *r);

/**
 * Registers data for the methods in `methods` (a non-empty mask of DL_M_*) on
 * `pattern`, which is copied.
 *
 * Pattern syntax: starts with '/'; '/'-separated segments are literals,
 * ":name" params (name is [A-Za-z0-9_]+) that match one non-empty segment, or,
 * as the last segment only, "*" or "*name", which matches the rest of the
 * path including slashes, possibly empty (an unnamed wildcard is named
 * "splat"). "/" is the root; "/a/" and "/a" are distinct; "//" is an empty
 * literal segment. Literals may not contain spaces, control bytes, '?' or '#'.
 * At most DL_ROUTER_MAX_PARAMS params (the wildcard counts), no name twice,
 * at most DL_ROUTER_MAX_PATTERN bytes.
 *
 * Returns 0; DL_EINVAL for a bad pattern or mask; DL_EROUTE when one of the
 * methods is already registered on an equivalent pattern ("/a/:x" and "/a/:y"
 * are equivalent); DL_ENOMEM. On error nothing is registered and, when err is
 * not NULL, a message naming the pattern(s) is written to err (errlen bytes,
 * NUL-terminated). Not thread-safe: build the router, then share it read-only.
 */
int dl_router_add(dl_router_t *r, unsigned methods, const char *pattern, void *data, char *err,
                  size_t errlen);

/**
 * Matches `path` (len bytes, no query string, not decoded) for `method` (one
 * DL_M_* bit). At each segment the literal child is tried first, then the
 * param, then the wildcard; a branch that fails (no route, or no route taking
 * the method) backtracks to the next alternative, so the first route in that
 * order that takes the method wins. HEAD is served by a GET route where the
 * same pattern has no HEAD route.
 *
 * Returns DL_ROUTE_FOUND and fills m; DL_ROUTE_METHOD_NOT_ALLOWED when routes
 * match the path but none takes the method, with m->allowed the union of
 * their methods; DL_ROUTE_NOT_FOUND otherwise. Never allocates; safe to call
 * from several threads on a router no longer being modified.
 */
int dl_router_match(const dl_router_t *r, int method, const char *path, size_t len,
                    dl_route_match_t *m);

/**
 * Appends the Allow header value for a mask ("GET, HEAD, POST", in DL_M_*
 * order; nothing for 0). Returns 0 or DL_ENOMEM.
 */
int dl_router_allow(unsigned allowed, dl_buf_t *out);

/**
 * Calls fn once per dl_router_add that succeeded, in registration order, with
 * its methods mask, pattern and data. fn must not add routes; it may free data.
 */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
void dl_router_foreach(const dl_router_t *r,
                       void (*fn)(unsigned methods, const char *pattern, void *data, void *arg),
                       void *arg);
#endif

#endif /* DL_ROUTER_H */
