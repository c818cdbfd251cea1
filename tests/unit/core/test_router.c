/*
 * test_router.c - unit tests for runtime/core/router.c: pattern syntax, params,
 * wildcards, literal/param/wildcard priority with backtracking, 405 masks,
 * HEAD fallback, conflicts, limits, a 500-route table, allocation failure and
 * a speed report (printed, not asserted).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/internal.h"
#include "core/router.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int tag[64]; /* distinct addresses to register as route data */

static void add_ok(dl_router_t *r, unsigned methods, const char *pattern, void *data)
{
    char err[256];
    int rc = dl_router_add(r, methods, pattern, data, err, sizeof(err));
    if (rc != 0)
        DL_FAIL_AT("dl_router_add(\"%s\") = %d: %s", pattern, rc, err);
}

static int match(const dl_router_t *r, int method, const char *path, dl_route_match_t *m)
{
    return dl_router_match(r, method, path, strlen(path), m);
}

/* The value of param `name`, or NULL; its length goes to *len. */
static const char *param(const dl_route_match_t *m, const char *name, size_t *len)
{
    for (int i = 0; i < m->n_params; i++) {
        if (m->params[i].name_len == strlen(name) &&
            memcmp(m->params[i].name, name, m->params[i].name_len) == 0) {
            *len = m->params[i].value_len;
            return m->params[i].value;
        }
    }
    return NULL;
}

#define EXPECT_PARAM(m, name, want)                                                       \
    do {                                                                                  \
        size_t vl_ = 0;                                                                   \
        const char *v_ = param((m), (name), &vl_);                                        \
        if (v_ == NULL)                                                                   \
            DL_FAIL_AT("param %s missing", (name));                                       \
        else                                                                              \
            EXPECT_MEM(v_, vl_, (want), strlen(want));                                    \
    } while (0)

/* ---- tests -------------------------------------------------------------------------------- */

DL_TEST(router_methods)
{
    EXPECT_EQ(dl_method_from_name("GET", 3), DL_M_GET);
    EXPECT_EQ(dl_method_from_name("HEAD", 4), DL_M_HEAD);
    EXPECT_EQ(dl_method_from_name("POST", 4), DL_M_POST);
    EXPECT_EQ(dl_method_from_name("PUT", 3), DL_M_PUT);
    EXPECT_EQ(dl_method_from_name("PATCH", 5), DL_M_PATCH);
    EXPECT_EQ(dl_method_from_name("DELETE", 6), DL_M_DELETE);
    EXPECT_EQ(dl_method_from_name("OPTIONS", 7), DL_M_OPTIONS);
    EXPECT_EQ(dl_method_from_name("get", 3), 0);
    EXPECT_EQ(dl_method_from_name("GETX", 3), DL_M_GET); /* length-delimited */
    EXPECT_EQ(dl_method_from_name("GE", 2), 0);
    EXPECT_EQ(dl_method_from_name("TRACE", 5), 0);
    EXPECT_EQ(dl_method_from_name("", 0), 0);
    EXPECT_STR(dl_method_name(DL_M_GET), "GET");
    EXPECT_STR(dl_method_name(DL_M_OPTIONS), "OPTIONS");
    EXPECT_STR(dl_method_name(DL_M_DELETE), "DELETE");
    EXPECT(dl_method_name(0) == NULL);
    EXPECT(dl_method_name(DL_M_GET | DL_M_POST) == NULL);
    EXPECT(dl_method_name(1 << 7) == NULL);
}

DL_TEST(router_static)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/health", &tag[0]);
    add_ok(r, DL_M_GET, "/api/features", &tag[1]);
    add_ok(r, DL_M_POST, "/api/features", &tag[2]);
    add_ok(r, DL_M_GET, "/api/features/stats", &tag[3]);

    EXPECT_EQ(match(r, DL_M_GET, "/health", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_STR(m.pattern, "/health");
    EXPECT_EQ(m.n_params, 0);
    EXPECT_EQ(match(r, DL_M_GET, "/api/features", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(match(r, DL_M_POST, "/api/features", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(match(r, DL_M_GET, "/api/features/stats", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);

    EXPECT_EQ(match(r, DL_M_GET, "/api", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/healt", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/healthz", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/HEALTH", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/features/stats/x", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "health", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "", &m), DL_ROUTE_NOT_FOUND);
    EXPECT(m.data == NULL && m.pattern == NULL && m.allowed == 0);
    /* Not decoded: %2F is three literal bytes. */
    EXPECT_EQ(match(r, DL_M_GET, "/api%2Ffeatures", &m), DL_ROUTE_NOT_FOUND);
    /* The length bounds the path, not a NUL. */
    EXPECT_EQ(dl_router_match(r, DL_M_GET, "/healthXYZ", 7, &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    dl_router_free(r);
    dl_router_free(NULL);
}

DL_TEST(router_root)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    EXPECT_EQ(match(r, DL_M_GET, "/", &m), DL_ROUTE_NOT_FOUND);
    add_ok(r, DL_M_GET, "/", &tag[0]);
    add_ok(r, DL_M_GET, "/a", &tag[1]);
    EXPECT_EQ(match(r, DL_M_GET, "/", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_STR(m.pattern, "/");
    EXPECT_EQ(match(r, DL_M_GET, "/a", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(match(r, DL_M_GET, "//", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_POST, "/", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_GET | DL_M_HEAD);
    dl_router_free(r);
}

DL_TEST(router_trailing_slash)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/a", &tag[0]);
    add_ok(r, DL_M_GET, "/a/", &tag[1]);
    add_ok(r, DL_M_GET, "/b/", &tag[2]);
    add_ok(r, DL_M_GET, "/u/:id", &tag[3]);
    EXPECT_EQ(match(r, DL_M_GET, "/a", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_EQ(match(r, DL_M_GET, "/a/", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_STR(m.pattern, "/a/");
    EXPECT_EQ(match(r, DL_M_GET, "/b/", &m), DL_ROUTE_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/b", &m), DL_ROUTE_NOT_FOUND); /* no redirect */
    EXPECT_EQ(match(r, DL_M_GET, "/a//", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/u/7", &m), DL_ROUTE_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/u/7/", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/u/", &m), DL_ROUTE_NOT_FOUND); /* params are non-empty */
    dl_router_free(r);
}

DL_TEST(router_params)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/api/features/:id", &tag[0]);
    add_ok(r, DL_M_GET, "/users/:user_id/posts/:Post2", &tag[1]);
    add_ok(r, DL_M_PUT, "/api/features/:fid", &tag[2]); /* other name, same shape */

    EXPECT_EQ(match(r, DL_M_GET, "/api/features/42", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_STR(m.pattern, "/api/features/:id");
    EXPECT_EQ(m.n_params, 1);
    EXPECT_MEM(m.params[0].name, m.params[0].name_len, "id", 2);
    EXPECT_PARAM(&m, "id", "42");

    EXPECT_EQ(match(r, DL_M_PUT, "/api/features/42", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_STR(m.pattern, "/api/features/:fid");
    EXPECT_PARAM(&m, "fid", "42");

    const char *path = "/users/alice%20b/posts/p-9.json";
    EXPECT_EQ(match(r, DL_M_GET, path, &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(m.n_params, 2);
    EXPECT_MEM(m.params[0].name, m.params[0].name_len, "user_id", 7);
    EXPECT_MEM(m.params[1].name, m.params[1].name_len, "Post2", 5);
    EXPECT_PARAM(&m, "user_id", "alice%20b"); /* not decoded */
    EXPECT_PARAM(&m, "Post2", "p-9.json");
    EXPECT(m.params[0].value == path + 7); /* points into the path */

    EXPECT_EQ(match(r, DL_M_GET, "/api/features/", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/features/1/2", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/users/a/posts", &m), DL_ROUTE_NOT_FOUND);
    dl_router_free(r);
}

DL_TEST(router_wildcard)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/static/*", &tag[0]);
    add_ok(r, DL_M_GET, "/files/:bucket/*path", &tag[1]);
    add_ok(r, DL_M_GET, "/files/:bucket", &tag[2]);

    EXPECT_EQ(match(r, DL_M_GET, "/static/css/site.css", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_EQ(m.n_params, 1);
    EXPECT_PARAM(&m, "splat", "css/site.css");
    EXPECT_EQ(match(r, DL_M_GET, "/static/", &m), DL_ROUTE_FOUND);
    EXPECT_PARAM(&m, "splat", "");
    EXPECT_EQ(match(r, DL_M_GET, "/static//x/", &m), DL_ROUTE_FOUND);
    EXPECT_PARAM(&m, "splat", "/x/");
    /* The wildcard starts after the slash that precedes it. */
    EXPECT_EQ(match(r, DL_M_GET, "/static", &m), DL_ROUTE_NOT_FOUND);

    EXPECT_EQ(match(r, DL_M_GET, "/files/b1/a/b/c.txt", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(m.n_params, 2);
    EXPECT_PARAM(&m, "bucket", "b1");
    EXPECT_PARAM(&m, "path", "a/b/c.txt");
    EXPECT_EQ(match(r, DL_M_GET, "/files/b1", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(match(r, DL_M_GET, "/files/b1/", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_PARAM(&m, "path", "");
    dl_router_free(r);

    /* A root wildcard catches everything, "/" included. */
    r = dl_router_new();
    add_ok(r, DL_M_GET, "/*all", &tag[3]);
    add_ok(r, DL_M_GET, "/x", &tag[4]);
    EXPECT_EQ(match(r, DL_M_GET, "/", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);
    EXPECT_PARAM(&m, "all", "");
    EXPECT_EQ(match(r, DL_M_GET, "/x", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[4]);
    EXPECT_EQ(match(r, DL_M_GET, "/x/y", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);
    EXPECT_PARAM(&m, "all", "x/y");
    dl_router_free(r);
}

DL_TEST(router_priority)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    /* Registered in reverse priority order on purpose. */
    add_ok(r, DL_M_GET, "/u/*rest", &tag[0]);
    add_ok(r, DL_M_GET, "/u/:id", &tag[1]);
    add_ok(r, DL_M_GET, "/u/me", &tag[2]);
    EXPECT_EQ(match(r, DL_M_GET, "/u/me", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(m.n_params, 0);
    EXPECT_EQ(match(r, DL_M_GET, "/u/you", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_PARAM(&m, "id", "you");
    EXPECT_EQ(match(r, DL_M_GET, "/u/me/x", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_PARAM(&m, "rest", "me/x");
    EXPECT_EQ(match(r, DL_M_GET, "/u/", &m), DL_ROUTE_FOUND); /* param can't be empty */
    EXPECT(m.data == &tag[0]);
    dl_router_free(r);
}

DL_TEST(router_backtracking)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/a/b/c", &tag[0]);
    add_ok(r, DL_M_GET, "/a/:x/d", &tag[1]);
    add_ok(r, DL_M_GET, "/a/*tail", &tag[2]);
    EXPECT_EQ(match(r, DL_M_GET, "/a/b/c", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_EQ(m.n_params, 0);
    EXPECT_EQ(match(r, DL_M_GET, "/a/b/d", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(m.n_params, 1);
    EXPECT_PARAM(&m, "x", "b");
    EXPECT_EQ(match(r, DL_M_GET, "/a/b/e", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(m.n_params, 1); /* the failed :x capture was undone */
    EXPECT_PARAM(&m, "tail", "b/e");

    /* Deeper: literal, param and param-of-param branches all fail but one. */
    add_ok(r, DL_M_GET, "/k/:p/:q/z", &tag[3]);
    add_ok(r, DL_M_GET, "/k/l/m/n", &tag[4]);
    add_ok(r, DL_M_GET, "/k/l/:r/y", &tag[5]);
    EXPECT_EQ(match(r, DL_M_GET, "/k/l/m/z", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);
    EXPECT_EQ(m.n_params, 2);
    EXPECT_PARAM(&m, "p", "l");
    EXPECT_PARAM(&m, "q", "m");
    EXPECT_EQ(match(r, DL_M_GET, "/k/l/m/y", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[5]);
    EXPECT_EQ(m.n_params, 1);
    EXPECT_PARAM(&m, "r", "m");

    /* A branch whose routes lack the method is a dead end too. */
    add_ok(r, DL_M_GET, "/users/me", &tag[6]);
    add_ok(r, DL_M_DELETE, "/users/:id", &tag[7]);
    EXPECT_EQ(match(r, DL_M_DELETE, "/users/me", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[7]);
    EXPECT_PARAM(&m, "id", "me");
    EXPECT_EQ(match(r, DL_M_GET, "/users/me", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[6]);
    dl_router_free(r);
}

DL_TEST(router_method_not_allowed)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/items/new", &tag[0]);
    add_ok(r, DL_M_PUT | DL_M_DELETE, "/items/:id", &tag[1]);
    add_ok(r, DL_M_OPTIONS, "/items/*", &tag[2]);
    add_ok(r, DL_M_POST, "/only-post", &tag[3]);

    /* All three alternatives match "/items/new": the mask is their union. */
    EXPECT_EQ(match(r, DL_M_POST, "/items/new", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_GET | DL_M_HEAD | DL_M_PUT | DL_M_DELETE | DL_M_OPTIONS);
    EXPECT(m.data == NULL);
    /* "/items/7" skips the literal. */
    EXPECT_EQ(match(r, DL_M_GET, "/items/7", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_PUT | DL_M_DELETE | DL_M_OPTIONS);
    EXPECT_EQ(match(r, DL_M_HEAD, "/items/7", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(match(r, DL_M_PATCH, "/items/a/b", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_OPTIONS);
    EXPECT_EQ(match(r, DL_M_GET, "/only-post", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_POST); /* no HEAD without GET */
    /* An unknown method (0) is a 405 on a known path. */
    EXPECT_EQ(match(r, 0, "/only-post", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(match(r, DL_M_GET, "/nothing", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(m.allowed, 0);
    EXPECT_EQ(match(r, DL_M_OPTIONS, "/items/new", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(m.allowed, 0);

    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(match(r, DL_M_POST, "/items/new", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(dl_router_allow(m.allowed, &b), 0);
    EXPECT_MEM(b.data, b.len, "GET, HEAD, PUT, DELETE, OPTIONS", 31);
    dl_buf_free(&b);
    dl_router_free(r);
}

DL_TEST(router_head_fallback)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/page", &tag[0]);
    add_ok(r, DL_M_GET, "/doc/:id", &tag[1]);
    add_ok(r, DL_M_HEAD, "/doc/:name", &tag[2]); /* explicit HEAD wins over GET */
    add_ok(r, DL_M_GET | DL_M_HEAD | DL_M_POST, "/multi", &tag[3]);

    EXPECT_EQ(match(r, DL_M_HEAD, "/page", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_EQ(match(r, DL_M_HEAD, "/doc/x", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_STR(m.pattern, "/doc/:name");
    EXPECT_PARAM(&m, "name", "x");
    EXPECT_EQ(match(r, DL_M_GET, "/doc/x", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(match(r, DL_M_HEAD, "/multi", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);
    /* GET does not fall back to HEAD. */
    dl_router_t *h = dl_router_new();
    add_ok(h, DL_M_HEAD, "/h", &tag[4]);
    EXPECT_EQ(match(h, DL_M_GET, "/h", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_HEAD);
    dl_router_free(h);
    dl_router_free(r);
}

DL_TEST(router_duplicate)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    char err[256];
    add_ok(r, DL_M_GET | DL_M_POST, "/a/:x", &tag[0]);
    add_ok(r, DL_M_GET, "/w/*", &tag[1]);

    EXPECT_EQ(dl_router_add(r, DL_M_POST, "/a/:y", &tag[2], err, sizeof(err)), DL_EROUTE);
    EXPECT(strstr(err, "/a/:x") != NULL);
    EXPECT(strstr(err, "/a/:y") != NULL);
    EXPECT(strstr(err, "POST") != NULL);
    fprintf(stderr, "# conflict message: %s\n", err);
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/a/:x", &tag[2], err, sizeof(err)), DL_EROUTE);
    EXPECT_EQ(dl_router_add(r, DL_M_DELETE | DL_M_GET, "/a/:z", &tag[2], err, sizeof(err)),
              DL_EROUTE);
    EXPECT(strstr(err, "GET") != NULL);
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/w/*rest", &tag[2], err, sizeof(err)), DL_EROUTE);
    EXPECT(strstr(err, "/w/*rest") != NULL && strstr(err, "\"/w/*\"") != NULL);
    /* A NULL or tiny err buffer is fine. */
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/a/:x", &tag[2], NULL, 0), DL_EROUTE);
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/a/:x", &tag[2], err, 4), DL_EROUTE);
    EXPECT_EQ(strlen(err), 3);

    /* Failed adds left the table as it was. */
    EXPECT_EQ(match(r, DL_M_DELETE, "/a/1", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_GET | DL_M_HEAD | DL_M_POST);
    EXPECT_EQ(match(r, DL_M_POST, "/a/1", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);

    /* Not conflicts: other methods, explicit HEAD next to GET, other shapes. */
    add_ok(r, DL_M_DELETE, "/a/:y", &tag[3]);
    add_ok(r, DL_M_HEAD, "/a/:x", &tag[4]);
    add_ok(r, DL_M_GET, "/a/:x/", &tag[5]);
    add_ok(r, DL_M_GET, "/a/x", &tag[6]);
    add_ok(r, DL_M_GET, "/a/*", &tag[7]);
    EXPECT_EQ(match(r, DL_M_DELETE, "/a/1", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[3]);
    EXPECT_STR(m.pattern, "/a/:y");
    EXPECT_PARAM(&m, "y", "1");
    dl_router_free(r);
}

DL_TEST(router_bad_patterns)
{
    static const char *const bad[] = {
        "",          "a",         "a/b",      "/:",        "/a/:",        "/:a-b",
        "/:a.json",  "/*/x",      "/a/*b/",   "/*x/y",     "/a/*b-c",     "/:id/:id",
        "/:a/*a",    "/:splat/*", "/a b",     "/a?b",      "/a#frag",     "/a\tb",
        "/a/\x7f",   "/:x:y",     "/*:x",     ":a",
    };
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    char err[256];
    for (size_t i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        int rc = dl_router_add(r, DL_M_GET, bad[i], &tag[0], err, sizeof(err));
        if (rc != DL_EINVAL)
            DL_FAIL_AT("pattern \"%s\": rc %d, want DL_EINVAL", bad[i], rc);
        if (err[0] == '\0')
            DL_FAIL_AT("pattern \"%s\": no message", bad[i]);
    }
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/:a-b", NULL, err, sizeof(err)), DL_EINVAL);
    fprintf(stderr, "# bad pattern message: %s\n", err);
    EXPECT_EQ(dl_router_add(r, DL_M_GET, NULL, NULL, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(dl_router_add(r, 0, "/ok", NULL, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(dl_router_add(r, 1u << 7, "/ok", NULL, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(dl_router_add(r, DL_M_GET, "/x", NULL, NULL, 0), 0);

    char *huge = malloc(DL_ROUTER_MAX_PATTERN + 2);
    huge[0] = '/';
    memset(huge + 1, 'a', DL_ROUTER_MAX_PATTERN);
    huge[DL_ROUTER_MAX_PATTERN + 1] = '\0';
    EXPECT_EQ(dl_router_add(r, DL_M_GET, huge, NULL, err, sizeof(err)), DL_EINVAL);
    huge[DL_ROUTER_MAX_PATTERN] = '\0';
    EXPECT_EQ(dl_router_add(r, DL_M_GET, huge, NULL, err, sizeof(err)), 0);
    free(huge);

    /* Unusual but valid literals. */
    add_ok(r, DL_M_GET, "/a:b/c*d/%7E/\xc3\xa9", &tag[1]);
    EXPECT_EQ(match(r, DL_M_GET, "/a:b/c*d/%7E/\xc3\xa9", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(m.n_params, 0);
    /* Nothing from the failures was registered. */
    EXPECT_EQ(match(r, DL_M_GET, "/a", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/1/2", &m), DL_ROUTE_NOT_FOUND);
    dl_router_free(r);
}

DL_TEST(router_max_params)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    char err[256], pat[512], path[512];
    size_t pl = 0, ql = 0;
    for (int i = 0; i < DL_ROUTER_MAX_PARAMS; i++) {
        pl += (size_t)snprintf(pat + pl, sizeof(pat) - pl, "/:p%d", i);
        ql += (size_t)snprintf(path + ql, sizeof(path) - ql, "/v%d", i);
    }
    add_ok(r, DL_M_GET, pat, &tag[0]);
    EXPECT_EQ(match(r, DL_M_GET, path, &m), DL_ROUTE_FOUND);
    EXPECT_EQ(m.n_params, DL_ROUTER_MAX_PARAMS);
    EXPECT_PARAM(&m, "p0", "v0");
    EXPECT_PARAM(&m, "p15", "v15");

    /* A 17th param, or a wildcard after 16 params, is too many. */
    snprintf(pat + pl, sizeof(pat) - pl, "/:p16");
    EXPECT_EQ(dl_router_add(r, DL_M_GET, pat, &tag[1], err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "16") != NULL);
    snprintf(pat + pl, sizeof(pat) - pl, "/*");
    EXPECT_EQ(dl_router_add(r, DL_M_GET, pat, &tag[1], err, sizeof(err)), DL_EINVAL);
    /* Literals don't count: 15 params + literals + a wildcard is fine. */
    pl = 0;
    for (int i = 0; i < DL_ROUTER_MAX_PARAMS - 1; i++)
        pl += (size_t)snprintf(pat + pl, sizeof(pat) - pl, "/lit/:p%d", i);
    snprintf(pat + pl, sizeof(pat) - pl, "/*rest");
    add_ok(r, DL_M_GET, pat, &tag[2]);
    ql = 0;
    for (int i = 0; i < DL_ROUTER_MAX_PARAMS - 1; i++)
        ql += (size_t)snprintf(path + ql, sizeof(path) - ql, "/lit/v%d", i);
    snprintf(path + ql, sizeof(path) - ql, "/x/y");
    EXPECT_EQ(match(r, DL_M_GET, path, &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[2]);
    EXPECT_EQ(m.n_params, DL_ROUTER_MAX_PARAMS);
    EXPECT_PARAM(&m, "rest", "x/y");
    dl_router_free(r);
}

DL_TEST(router_many_routes)
{
    enum { N = 500 };
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    char pat[64], path[96], want[32];
    static int data[N];
    for (int i = 0; i < N; i++) {
        snprintf(pat, sizeof(pat), "/api/v1/res%d/:id/sub", i);
        add_ok(r, DL_M_GET, pat, &data[i]);
    }
    add_ok(r, DL_M_POST, "/api/v1/res250/:key/sub", &tag[0]);
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/api/v1/res%d/item-%d/sub", i, i * 7);
        snprintf(pat, sizeof(pat), "/api/v1/res%d/:id/sub", i);
        snprintf(want, sizeof(want), "item-%d", i * 7);
        if (match(r, DL_M_GET, path, &m) != DL_ROUTE_FOUND || m.data != &data[i]) {
            DL_FAIL_AT("route %d: %s did not match", i, path);
            continue;
        }
        EXPECT_STR(m.pattern, pat);
        EXPECT_PARAM(&m, "id", want);
        EXPECT_EQ(match(r, DL_M_HEAD, path, &m), DL_ROUTE_FOUND);
    }
    EXPECT_EQ(match(r, DL_M_POST, "/api/v1/res250/k/sub", &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_PARAM(&m, "key", "k");
    EXPECT_EQ(match(r, DL_M_POST, "/api/v1/res251/k/sub", &m), DL_ROUTE_METHOD_NOT_ALLOWED);
    EXPECT_EQ(m.allowed, DL_M_GET | DL_M_HEAD);
    EXPECT_EQ(match(r, DL_M_GET, "/api/v1/res500/1/sub", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/v1/res/1/sub", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/v1/res1/1", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/v1/res1/1/sub/", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/api/v1/res01/1/sub", &m), DL_ROUTE_NOT_FOUND);

    dl_router_free(r);
}

DL_TEST(router_long_path)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/f/:name", &tag[0]);
    add_ok(r, DL_M_GET, "/s/*rest", &tag[1]);
    add_ok(r, DL_M_GET, "/a/b", &tag[2]);

    size_t n = 1 << 20;
    char *path = malloc(n + 1);
    /* One 1 MiB segment. */
    memcpy(path, "/f/", 3);
    memset(path + 3, 'x', n - 3);
    path[n] = '\0';
    EXPECT_EQ(dl_router_match(r, DL_M_GET, path, n, &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[0]);
    EXPECT_EQ(m.params[0].value_len, n - 3);
    /* Half a million segments under a wildcard, and where nothing matches. */
    for (size_t i = 3; i < n; i += 2)
        path[i] = '/';
    path[1] = 's';
    EXPECT_EQ(dl_router_match(r, DL_M_GET, path, n, &m), DL_ROUTE_FOUND);
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(m.params[0].value_len, n - 3);
    path[1] = 'f';
    EXPECT_EQ(dl_router_match(r, DL_M_GET, path, n, &m), DL_ROUTE_NOT_FOUND);
    memcpy(path, "/a/b/", 5);
    EXPECT_EQ(dl_router_match(r, DL_M_GET, path, n, &m), DL_ROUTE_NOT_FOUND);
    /* A literal segment longer than any pattern is simply no match. */
    memset(path, 'a', n);
    path[0] = '/';
    EXPECT_EQ(dl_router_match(r, DL_M_GET, path, n, &m), DL_ROUTE_NOT_FOUND);
    free(path);
    dl_router_free(r);
}

DL_TEST(router_double_slash)
{
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    add_ok(r, DL_M_GET, "/a/:x/b", &tag[0]);
    add_ok(r, DL_M_GET, "/c//d", &tag[1]);
    add_ok(r, DL_M_GET, "/e/*", &tag[2]);
    EXPECT_EQ(match(r, DL_M_GET, "/a//b", &m), DL_ROUTE_NOT_FOUND); /* param not empty */
    EXPECT_EQ(match(r, DL_M_GET, "//a/x/b", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/a/x//b", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/a/x/b", &m), DL_ROUTE_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/c//d", &m), DL_ROUTE_FOUND); /* empty literal segment */
    EXPECT(m.data == &tag[1]);
    EXPECT_EQ(match(r, DL_M_GET, "/c/d", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/c///d", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "/e//", &m), DL_ROUTE_FOUND);
    EXPECT_PARAM(&m, "splat", "/");
    EXPECT_EQ(match(r, DL_M_GET, "//", &m), DL_ROUTE_NOT_FOUND);
    EXPECT_EQ(match(r, DL_M_GET, "///", &m), DL_ROUTE_NOT_FOUND);
    dl_router_free(r);
}

DL_TEST(router_allow)
{
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_router_allow(0, &b), 0);
    EXPECT_EQ(b.len, 0);
    EXPECT_EQ(dl_router_allow(DL_M_GET | DL_M_HEAD | DL_M_POST, &b), 0);
    EXPECT_MEM(b.data, b.len, "GET, HEAD, POST", 15);
    dl_buf_reset(&b);
    EXPECT_EQ(dl_router_allow(DL_M_ALL, &b), 0);
    EXPECT_MEM(b.data, b.len, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", 44);
    dl_buf_reset(&b);
    dl_buf_append_str(&b, "Allow: ");
    EXPECT_EQ(dl_router_allow(DL_M_DELETE, &b), 0);
    EXPECT_MEM(b.data, b.len, "Allow: DELETE", 13);
    dl_buf_free(&b);
}

typedef struct {
    int n;
    unsigned methods[8];
    const char *patterns[8];
    void *data[8];
} seen_t;

static void collect(unsigned methods, const char *pattern, void *data, void *arg)
{
    seen_t *s = arg;
    if (s->n < 8) {
        s->methods[s->n] = methods;
        s->patterns[s->n] = pattern;
        s->data[s->n] = data;
    }
    s->n++;
}

static void release(unsigned methods, const char *pattern, void *data, void *arg)
{
    (void)methods;
    (void)pattern;
    (void)arg;
    free(data);
}

DL_TEST(router_foreach)
{
    dl_router_t *r = dl_router_new();
    seen_t s = {0};
    dl_router_foreach(r, collect, &s);
    EXPECT_EQ(s.n, 0);
    add_ok(r, DL_M_GET | DL_M_HEAD, "/b", &tag[0]);
    add_ok(r, DL_M_POST, "/a/:x", &tag[1]);
    EXPECT(dl_router_add(r, DL_M_POST, "/a/:y", &tag[2], NULL, 0) == DL_EROUTE);
    add_ok(r, DL_M_PUT, "/a/:y", &tag[3]);
    dl_router_foreach(r, collect, &s);
    EXPECT_EQ(s.n, 3);
    EXPECT_EQ(s.methods[0], DL_M_GET | DL_M_HEAD);
    EXPECT_STR(s.patterns[0], "/b");
    EXPECT(s.data[0] == &tag[0]);
    EXPECT_STR(s.patterns[1], "/a/:x");
    EXPECT_STR(s.patterns[2], "/a/:y");
    EXPECT_EQ(s.methods[2], DL_M_PUT);
    EXPECT(s.data[2] == &tag[3]);
    dl_router_free(r);

    /* The intended use: release owned data before freeing the router. */
    r = dl_router_new();
    add_ok(r, DL_M_GET, "/x", malloc(16));
    add_ok(r, DL_M_GET, "/y/*", malloc(16));
    dl_router_foreach(r, release, NULL);
    dl_router_free(r);
}

/* ---- allocation failure: fail the Nth allocation, expect DL_ENOMEM and no leak */

static long fail_at = -1, n_allocs, live;

static void *counting_malloc(size_t n)
{
    if (n_allocs++ == fail_at)
        return NULL;
    void *p = malloc(n);
    if (p != NULL)
        live++;
    return p;
}

static void *counting_realloc(void *p, size_t n)
{
    if (n_allocs++ == fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q != NULL && p == NULL)
        live++;
    return q;
}

static void counting_free(void *p)
{
    if (p != NULL)
        live--;
    free(p);
}

DL_TEST(router_oom)
{
    static const char *const pats[] = {"/", "/a", "/a/:x", "/a/:x/b", "/a/b", "/a/c", "/a/d",
                                       "/a/e", "/s/*", "/p/:q/*r"};
    dl_set_allocator(counting_malloc, counting_realloc, counting_free);
    int done = 0, saw_oom = 0;
    for (fail_at = 0; !done && fail_at < 10000; fail_at++) {
        n_allocs = 0;
        live = 0;
        dl_route_match_t m;
        dl_router_t *r = dl_router_new();
        if (r == NULL) {
            saw_oom = 1;
            EXPECT_EQ(live, 0);
            continue;
        }
        int ok = 1;
        for (size_t i = 0; i < DL_ARRAY_SIZE(pats); i++) {
            int rc = dl_router_add(r, DL_M_GET, pats[i], &tag[i], NULL, 0);
            if (rc == DL_ENOMEM) {
                ok = 0;
                saw_oom = 1;
                /* What was added before still matches; the failed one doesn't. */
                EXPECT_EQ(match(r, DL_M_GET, "/a/zz/b", &m),
                          i > 3 ? DL_ROUTE_FOUND : DL_ROUTE_NOT_FOUND);
                break;
            }
            EXPECT_EQ(rc, 0);
        }
        if (ok) {
            EXPECT_EQ(match(r, DL_M_GET, "/p/1/2/3", &m), DL_ROUTE_FOUND);
            EXPECT(m.data == &tag[9]);
            done = 1;
        }
        dl_router_free(r);
        EXPECT_EQ(live, 0);
    }
    EXPECT(done);
    EXPECT(saw_oom);
    dl_set_allocator(malloc, realloc, free);
}

/* ---- speed report: printed for the reader, not asserted (machines vary) */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

DL_TEST(router_speed)
{
    enum { N = 500, ITERS = 2000000 };
    dl_router_t *r = dl_router_new();
    dl_route_match_t m;
    char pat[64];
    static int data[N];
    static char paths[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(pat, sizeof(pat), "/api/v1/res%d/:id/sub", i);
        add_ok(r, DL_M_GET, pat, &data[i]);
        snprintf(paths[i], sizeof(paths[i]), "/api/v1/res%d/%d/sub", i, 1000 + i);
    }
    size_t lens[N];
    for (int i = 0; i < N; i++)
        lens[i] = strlen(paths[i]);

    int found = 0;
    double t0 = now_ns();
    for (int k = 0; k < ITERS; k++) {
        int i = (int)(((unsigned)k * 2654435761u) % N); /* spread over the table */
        found += dl_router_match(r, DL_M_GET, paths[i], lens[i], &m) == DL_ROUTE_FOUND;
    }
    double t1 = now_ns();
    EXPECT_EQ(found, ITERS);

    const char *one = "/api/v1/res250/12345/sub";
    size_t one_len = strlen(one);
    found = 0;
    double t2 = now_ns();
    for (int k = 0; k < ITERS; k++)
        found += dl_router_match(r, DL_M_GET, one, one_len, &m) == DL_ROUTE_FOUND;
    double t3 = now_ns();
    EXPECT_EQ(found, ITERS);

    fprintf(stderr, "# router_speed: %d routes, %.1f ns/match (mixed paths), "
            "%.1f ns/match (one path)\n", N, (t1 - t0) / ITERS, (t3 - t2) / ITERS);
    dl_router_free(r);
}
