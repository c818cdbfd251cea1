/*
 * cors.h - a CORS policy (api.cors{...} or a route's cors option) applied by
 * the core: the preflight answer and the Access-Control-* fields of every
 * other answer, decided in C (the Fetch standard's CORS protocol). The Lua
 * layer compiles the options (scripts/devloop/cors.lua) into a dl_cors_t
 * once per load; a request points at the policy of its route, or of its app
 * (dl_req_t.cors). Why native: docs/middleware.md.
 */
#ifndef DL_CORS_H
#define DL_CORS_H

#include <stddef.h>

#include "common/buf.h"
#include "core/http.h"

#define DL_CORS_ECHO_MAX 64 /* header names a preflight's answer names back */

/** What a request's origin is to its policy (dl_req_t.cors_verdict). */
enum {
    DL_CORS_UNDECIDED = 0, /* not looked at yet (or, for a function, not asked yet) */
    DL_CORS_ALLOWED,
    DL_CORS_REFUSED,       /* no Origin, or one the policy does not allow */
    DL_CORS_PREFLIGHT,     /* answered as a preflight: its fields are in the answer */
};

/** The options, as cors.lua checked them. Strings are copied. */
typedef struct {
    int any;          /* origins "*" */
    int by_fn;        /* origins decided by a function (the Lua layer asks it per request) */
    int credentials;  /* Access-Control-Allow-Credentials: true (never with any) */
    const char *const *origins; /* the allowed origins, when neither any nor by_fn */
    const size_t *origin_lens;
    int n_origins;
    const char *methods;  /* "GET, HEAD, POST": Access-Control-Allow-Methods */
    const char *headers;  /* Access-Control-Allow-Headers, or NULL: the ones asked for */
    const char *expose;   /* Access-Control-Expose-Headers, or NULL */
    unsigned max_age;     /* seconds */
} dl_cors_spec_t;

typedef struct dl_cors_s dl_cors_t;

/** A policy from spec; NULL when out of memory. */
dl_cors_t *dl_cors_new(const dl_cors_spec_t *spec);
/** NULL is a no-op. */
void dl_cors_free(dl_cors_t *p);
/** The next policy of a list its owner keeps (a generation's), and setting it. */
dl_cors_t *dl_cors_next(const dl_cors_t *p);
void dl_cors_set_next(dl_cors_t *p, dl_cors_t *next);
/** Whether the policy's origins are a function's to decide. */
int dl_cors_by_fn(const dl_cors_t *p);

/** 1 when r is a preflight: OPTIONS with Origin and a method (a token) in
 * Access-Control-Request-Method. */
int dl_cors_is_preflight(const dl_req_t *r);

/**
 * r->cors's verdict on r's origin (DL_CORS_ALLOWED or DL_CORS_REFUSED),
 * worked out on first use and kept in r->cors_verdict; *origin (may be NULL)
 * is the value Access-Control-Allow-Origin takes ("*" or the Origin sent).
 * A function's policy not yet asked (dl_cors_set_verdict) is refused.
 */
int dl_cors_verdict(dl_req_t *r, const char **origin, size_t *origin_len);
/** Records a function's answer on r's origin. */
void dl_cors_set_verdict(dl_req_t *r, int allowed);

/**
 * The fields of a preflight's answer as "Name: value\r\n" lines appended to
 * out, when r is a preflight from an origin r->cors allows (r->cors_verdict
 * becomes DL_CORS_PREFLIGHT); returns 1 then, else 0 with nothing appended.
 */
int dl_cors_preflight_lines(dl_req_t *r, dl_buf_t *out);

/** The fields an answer to r carries, after the answer's own: which of
 * Access-Control-Allow-Origin (*acao), -Allow-Credentials and
 * -Expose-Headers, and whether Vary names Origin. */
typedef struct {
    const char *acao;
    size_t acao_len;      /* 0: none */
    int credentials;
    const char *expose;   /* NULL: none */
    int vary_origin;
} dl_cors_fields_t;
void dl_cors_fields(dl_req_t *r, dl_cors_fields_t *out);

/** dl_cors_fields() as "Name: value\r\n" lines appended to out (Vary
 * included): for an answer a protocol writes itself (HTTP/1's refusal of a
 * malformed or oversized request). Nothing when r has no policy. */
void dl_cors_put_lines(dl_req_t *r, dl_buf_t *out);

#endif /* DL_CORS_H */
