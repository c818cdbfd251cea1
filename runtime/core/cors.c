/*
 * cors.c - CORS in the core: a policy's origins matched against a request's
 * Origin, a preflight answered with the methods, headers and Max-Age it
 * allows, and the Access-Control-* fields response.c adds to every other
 * answer (errors, 404s and early refusals included). The rules are the
 * Fetch standard's, as scripts/devloop/cors.lua documents them for users.
 */
#include "core/cors.h"

#include <stdio.h>
#include <string.h>

#include "common/internal.h"
#include "core/router.h"

struct dl_cors_s {
    unsigned any : 1, by_fn : 1, credentials : 1;
    int n_origins;
    char **origins;       /* lower-case */
    size_t *origin_lens;
    char *methods, *headers, *expose;
    char max_age[24];
    struct dl_cors_s *next;
};

/* ================================================================ policy */

static char *dup_or_null(const char *s)
{
    return s ? dl_strdup(s) : NULL;
}

dl_cors_t *dl_cors_new(const dl_cors_spec_t *s)
{
    dl_cors_t *p = dl_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->any = s->any != 0;
    p->by_fn = s->by_fn != 0;
    p->credentials = s->credentials != 0;
    snprintf(p->max_age, sizeof(p->max_age), "%u", s->max_age);
    p->methods = dup_or_null(s->methods ? s->methods : "GET, HEAD, POST, PUT, PATCH, DELETE");
    p->headers = dup_or_null(s->headers);
    p->expose = dup_or_null(s->expose);
    if (p->methods == NULL || (s->headers && p->headers == NULL) ||
        (s->expose && p->expose == NULL))
        goto oom;
    if (s->n_origins > 0) {
        p->origins = dl_calloc((size_t)s->n_origins, sizeof(*p->origins));
        p->origin_lens = dl_calloc((size_t)s->n_origins, sizeof(*p->origin_lens));
        if (p->origins == NULL || p->origin_lens == NULL)
            goto oom;
        for (int i = 0; i < s->n_origins; i++) {
            size_t n = s->origin_lens[i];
            char *o = dl_malloc(n + 1);
            if (o == NULL)
                goto oom;
            for (size_t k = 0; k < n; k++)
                o[k] = (char)dl_tolower((unsigned char)s->origins[i][k]);
            o[n] = '\0';
            p->origins[i] = o;
            p->origin_lens[i] = n;
            p->n_origins = i + 1;
        }
    }
    return p;
oom:
    dl_cors_free(p);
    return NULL;
}

void dl_cors_free(dl_cors_t *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n_origins; i++)
        dl_free(p->origins[i]);
    dl_free(p->origins);
    dl_free(p->origin_lens);
    dl_free(p->methods);
    dl_free(p->headers);
    dl_free(p->expose);
    dl_free(p);
}

dl_cors_t *dl_cors_next(const dl_cors_t *p)
{
    return p->next;
}

void dl_cors_set_next(dl_cors_t *p, dl_cors_t *next)
{
    p->next = next;
}

int dl_cors_by_fn(const dl_cors_t *p)
{
    return p->by_fn;
}

/* ================================================================ origins */

int dl_cors_verdict(dl_req_t *r, const char **origin, size_t *origin_len)
{
    const dl_cors_t *p = r->cors;
    size_t olen = 0;
    const char *o = p ? dl_req_header(r, "origin", &olen) : NULL;
    if (r->cors_verdict == DL_CORS_UNDECIDED) {
        if (p != NULL && p->by_fn)
            return DL_CORS_REFUSED; /* not judged yet (and not recorded: its hook may judge) */
        int ok = 0;
        if (o != NULL && p != NULL && !p->by_fn) {
            ok = p->any;
            for (int i = 0; !ok && i < p->n_origins; i++)
                ok = dl_strncasecmp_eq(o, olen, p->origins[i], p->origin_lens[i]);
        }
        r->cors_verdict = ok ? DL_CORS_ALLOWED : DL_CORS_REFUSED;
    }
    if (r->cors_verdict != DL_CORS_ALLOWED)
        return DL_CORS_REFUSED;
    if (origin) {
        /* "*" only without credentials (dl_cors_new's caller refuses both) */
        *origin = p->any ? "*" : o;
        *origin_len = p->any ? 1 : olen;
    }
    return DL_CORS_ALLOWED;
}

void dl_cors_set_verdict(dl_req_t *r, int allowed)
{
    size_t olen;
    int has_origin = dl_req_header(r, "origin", &olen) != NULL;
    r->cors_verdict = allowed && has_origin ? DL_CORS_ALLOWED : DL_CORS_REFUSED;
}

/* ============================================================= preflights */

int dl_cors_is_preflight(const dl_req_t *r)
{
    if (r->method != DL_M_OPTIONS)
        return 0;
    size_t n;
    const char *m = dl_req_header(r, "access-control-request-method", &n);
    return m != NULL && dl_http_token_ok(m, n) && dl_req_header(r, "origin", &n) != NULL;
}

/* The header names of Access-Control-Request-Headers that are tokens,
 * joined with ", " (at most DL_CORS_ECHO_MAX): any header asked for is
 * allowed, and only header names are named back. */
static void echo_asked(const dl_req_t *r, dl_buf_t *out, size_t *added)
{
    size_t n;
    const char *v = dl_req_header(r, "access-control-request-headers", &n);
    *added = 0;
    if (v == NULL)
        return;
    const char *end = v + n, *a, *b;
    int count = 0;
    size_t start = out->len;
    while (count < DL_CORS_ECHO_MAX && dl_http_list_next(&v, end, &a, &b)) {
        if (!dl_http_token_ok(a, (size_t)(b - a)))
            continue;
        if (count++ > 0)
            dl_buf_append(out, ", ", 2);
        dl_buf_append(out, a, (size_t)(b - a));
    }
    *added = out->len - start;
}

static void line(dl_buf_t *out, const char *name, const char *v, size_t vlen)
{
    dl_buf_append_str(out, name);
    dl_buf_append(out, ": ", 2);
    dl_buf_append(out, v, vlen);
    dl_buf_append(out, "\r\n", 2);
}

int dl_cors_preflight_lines(dl_req_t *r, dl_buf_t *out)
{
    const dl_cors_t *p = r->cors;
    const char *ao;
    size_t aol;
    if (p == NULL || !dl_cors_is_preflight(r) || dl_cors_verdict(r, &ao, &aol) != DL_CORS_ALLOWED)
        return 0;
    line(out, "Access-Control-Allow-Origin", ao, aol);
    line(out, "Access-Control-Allow-Methods", p->methods, strlen(p->methods));
    line(out, "Access-Control-Max-Age", p->max_age, strlen(p->max_age));
    if (p->headers) {
        line(out, "Access-Control-Allow-Headers", p->headers, strlen(p->headers));
    } else {
        size_t mark = out->len, added;
        dl_buf_append_str(out, "Access-Control-Allow-Headers: ");
        echo_asked(r, out, &added);
        if (added == 0)
            out->len = mark; /* nothing asked: no field */
        else
            dl_buf_append(out, "\r\n", 2);
    }
    if (p->credentials)
        line(out, "Access-Control-Allow-Credentials", "true", 4);
    /* the answer differs by origin (a list or a function) and by the
     * headers asked for (when they are named back) */
    if (!p->any && !p->headers)
        line(out, "Vary", "Origin, Access-Control-Request-Headers", 38);
    else if (!p->any)
        line(out, "Vary", "Origin", 6);
    else if (!p->headers)
        line(out, "Vary", "Access-Control-Request-Headers", 30);
    r->cors_verdict = DL_CORS_PREFLIGHT;
    return 1;
}

/* ================================================================ answers */

void dl_cors_fields(dl_req_t *r, dl_cors_fields_t *out)
{
    const dl_cors_t *p = r->cors;
    memset(out, 0, sizeof(*out));
    if (p == NULL || r->cors_verdict == DL_CORS_PREFLIGHT)
        return;
    /* the answer depends on the origin unless every origin gets "*" */
    out->vary_origin = !p->any;
    if (dl_cors_verdict(r, &out->acao, &out->acao_len) != DL_CORS_ALLOWED) {
        out->acao_len = 0;
        return;
    }
    out->credentials = p->credentials;
    out->expose = p->expose;
}

void dl_cors_put_lines(dl_req_t *r, dl_buf_t *out)
{
    dl_cors_fields_t f;
    if (r->cors == NULL)
        return;
    dl_cors_fields(r, &f);
    if (f.vary_origin)
        line(out, "Vary", "Origin", 6);
    if (f.acao_len == 0)
        return;
    line(out, "Access-Control-Allow-Origin", f.acao, f.acao_len);
    if (f.credentials)
        line(out, "Access-Control-Allow-Credentials", "true", 4);
    if (f.expose)
        line(out, "Access-Control-Expose-Headers", f.expose, strlen(f.expose));
}
