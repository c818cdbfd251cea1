/*
 * test_cors.c - runtime/core/cors.c: origins matched without regard to case
 * (and never by prefix or suffix), "*" without credentials, a function's
 * policy refusing until it has judged, preflight fields (methods, Max-Age,
 * the asked headers named back only when they are names, at most 64, Vary
 * by what the answer depends on), and the fields of an ordinary answer.
 */
#include <stdlib.h>
#include <string.h>

#include "core/cors.h"
#include "core/request.h"
#include "core/router.h"
#include "unit.h"

static dl_req_t *req_new(int method, const char *const *fields)
{
    dl_req_t *r = calloc(1, sizeof(*r));
    r->method = method;
    for (int i = 0; fields && fields[i]; i += 2)
        dl_req_header_add(r, fields[i], strlen(fields[i]), fields[i + 1], strlen(fields[i + 1]));
    r->n_head_headers = r->n_headers;
    return r;
}

static void req_free(dl_req_t *r)
{
    dl_buf_free(&r->head);
    free(r->headers);
    free(r);
}

static dl_cors_t *list_policy(int credentials, const char *headers)
{
    const char *origins[] = {"https://App.example", "http://localhost:3000"};
    size_t lens[] = {19, 21};
    dl_cors_spec_t s = {.credentials = credentials, .origins = origins, .origin_lens = lens,
                        .n_origins = 2, .methods = "GET, PUT", .headers = headers,
                        .expose = "X-Total", .max_age = 120};
    return dl_cors_new(&s);
}

DL_TEST(cors_origin_list_matches_whole_origins_only)
{
    dl_cors_t *p = list_policy(1, NULL);
    const char *ok[] = {"https://app.example", "HTTPS://APP.EXAMPLE", "http://localhost:3000"};
    const char *no[] = {"https://app.example.evil", "https://evil.app.example",
                        "https://app.exampl", "http://app.example", "null", ""};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const char *f[] = {"Origin", ok[i], NULL};
        dl_req_t *r = req_new(DL_M_GET, f);
        r->cors = p;
        const char *ao;
        size_t aol;
        EXPECT_EQ(dl_cors_verdict(r, &ao, &aol), DL_CORS_ALLOWED);
        EXPECT_EQ(aol, strlen(ok[i])); /* the origin as sent */
        EXPECT_EQ(memcmp(ao, ok[i], aol), 0);
        dl_cors_fields_t cf;
        dl_cors_fields(r, &cf);
        EXPECT_EQ(cf.credentials, 1);
        EXPECT_EQ(cf.vary_origin, 1);
        EXPECT_STR(cf.expose, "X-Total");
        req_free(r);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        const char *f[] = {"Origin", no[i], NULL};
        dl_req_t *r = req_new(DL_M_GET, f);
        r->cors = p;
        EXPECT_EQ(dl_cors_verdict(r, NULL, NULL), DL_CORS_REFUSED);
        dl_cors_fields_t cf;
        dl_cors_fields(r, &cf);
        EXPECT_EQ(cf.acao_len, 0);
        EXPECT_EQ(cf.vary_origin, 1); /* the answer still depends on the origin */
        req_free(r);
    }
    dl_req_t *r = req_new(DL_M_GET, NULL); /* no Origin */
    r->cors = p;
    EXPECT_EQ(dl_cors_verdict(r, NULL, NULL), DL_CORS_REFUSED);
    req_free(r);
    dl_cors_free(p);
}

DL_TEST(cors_any_and_function_policies)
{
    dl_cors_spec_t any = {.any = 1, .max_age = 5};
    dl_cors_t *p = dl_cors_new(&any);
    const char *f[] = {"Origin", "https://x.example", NULL};
    dl_req_t *r = req_new(DL_M_GET, f);
    r->cors = p;
    dl_cors_fields_t cf;
    dl_cors_fields(r, &cf);
    EXPECT_EQ(cf.acao_len, 1);
    EXPECT_EQ(cf.acao[0], '*');
    EXPECT_EQ(cf.vary_origin, 0);
    EXPECT_EQ(cf.credentials, 0);
    req_free(r);
    dl_cors_free(p);

    dl_cors_spec_t fn = {.by_fn = 1, .credentials = 1};
    p = dl_cors_new(&fn);
    EXPECT_EQ(dl_cors_by_fn(p), 1);
    r = req_new(DL_M_GET, f);
    r->cors = p;
    EXPECT_EQ(dl_cors_verdict(r, NULL, NULL), DL_CORS_REFUSED); /* not judged: refused */
    req_free(r);
    r = req_new(DL_M_GET, f);
    r->cors = p;
    dl_cors_set_verdict(r, 1);
    const char *ao;
    size_t aol;
    EXPECT_EQ(dl_cors_verdict(r, &ao, &aol), DL_CORS_ALLOWED);
    EXPECT_EQ(aol, 17);
    req_free(r);
    r = req_new(DL_M_GET, NULL);
    r->cors = p;
    dl_cors_set_verdict(r, 1); /* allowed, but there is no Origin to allow */
    EXPECT_EQ(dl_cors_verdict(r, NULL, NULL), DL_CORS_REFUSED);
    req_free(r);
    dl_cors_free(p);
}

DL_TEST(cors_preflight_lines)
{
    dl_cors_t *p = list_policy(1, NULL);
    /* 70 names asked, some not names: tokens only, at most 64 */
    dl_buf_t asked = DL_BUF_INIT;
    dl_buf_append_str(&asked, "x-a, bad name, , x-b;evil, X-C");
    for (int i = 0; i < 70; i++)
        dl_buf_appendf(&asked, ", h%d", i);
    dl_buf_append_char(&asked, '\0');
    const char *f[] = {"Origin", "https://app.example", "Access-Control-Request-Method", "PUT",
                       "Access-Control-Request-Headers", asked.data, NULL};
    dl_req_t *r = req_new(DL_M_OPTIONS, f);
    r->cors = p;
    EXPECT_EQ(dl_cors_is_preflight(r), 1);
    dl_buf_t out = DL_BUF_INIT;
    EXPECT_EQ(dl_cors_preflight_lines(r, &out), 1);
    dl_buf_append_char(&out, '\0');
    EXPECT(strstr(out.data, "Access-Control-Allow-Origin: https://app.example\r\n") != NULL);
    EXPECT(strstr(out.data, "Access-Control-Allow-Methods: GET, PUT\r\n") != NULL);
    EXPECT(strstr(out.data, "Access-Control-Max-Age: 120\r\n") != NULL);
    EXPECT(strstr(out.data, "Access-Control-Allow-Headers: x-a, X-C, h0, h1,") != NULL);
    EXPECT(strstr(out.data, ", h60, h61\r\n") != NULL); /* 3 + 61 = 64 names */
    EXPECT(strstr(out.data, "h62") == NULL);
    EXPECT(strstr(out.data, "Access-Control-Allow-Credentials: true\r\n") != NULL);
    EXPECT(strstr(out.data, "Vary: Origin, Access-Control-Request-Headers\r\n") != NULL);
    /* answered as a preflight: an ordinary answer's fields stay out */
    dl_cors_fields_t cf;
    dl_cors_fields(r, &cf);
    EXPECT_EQ(cf.acao_len, 0);
    EXPECT_EQ(cf.vary_origin, 0);
    req_free(r);
    dl_buf_free(&out);
    dl_buf_free(&asked);

    /* not preflights: no method asked, a method that is not a token, GET */
    const char *g1[] = {"Origin", "https://app.example", NULL};
    const char *g2[] = {"Origin", "https://app.example", "Access-Control-Request-Method", "P T",
                        NULL};
    const char *g3[] = {"Access-Control-Request-Method", "PUT", NULL};
    const char *const *gs[] = {g1, g2, g3};
    for (int i = 0; i < 3; i++) {
        r = req_new(DL_M_OPTIONS, gs[i]);
        r->cors = p;
        EXPECT_EQ(dl_cors_is_preflight(r), 0);
        EXPECT_EQ(dl_cors_preflight_lines(r, &out), 0);
        EXPECT_EQ(out.len, 0);
        req_free(r);
    }
    const char *pf[] = {"Origin", "https://evil.example", "Access-Control-Request-Method", "PUT",
                        NULL};
    r = req_new(DL_M_OPTIONS, pf); /* another origin: the app's, without fields */
    r->cors = p;
    EXPECT_EQ(dl_cors_preflight_lines(r, &out), 0);
    req_free(r);
    dl_cors_free(p);

    /* fixed headers: named as configured, Vary by origin only */
    p = list_policy(0, "Content-Type");
    const char *f2[] = {"Origin", "https://app.example", "Access-Control-Request-Method", "GET",
                        "Access-Control-Request-Headers", "x-anything", NULL};
    r = req_new(DL_M_OPTIONS, f2);
    r->cors = p;
    EXPECT_EQ(dl_cors_preflight_lines(r, &out), 1);
    dl_buf_append_char(&out, '\0');
    EXPECT(strstr(out.data, "Access-Control-Allow-Headers: Content-Type\r\n") != NULL);
    EXPECT(strstr(out.data, "Vary: Origin\r\n") != NULL);
    EXPECT(strstr(out.data, "Credentials") == NULL);
    req_free(r);
    dl_buf_free(&out);
    dl_cors_free(p);
}

DL_TEST(cors_put_lines_for_protocol_answers)
{
    dl_cors_t *p = list_policy(1, NULL);
    const char *f[] = {"Origin", "https://app.example", NULL};
    dl_req_t *r = req_new(DL_M_POST, f);
    dl_buf_t out = DL_BUF_INIT;
    dl_cors_put_lines(r, &out); /* no policy: nothing */
    EXPECT_EQ(out.len, 0);
    r->cors = p;
    dl_cors_put_lines(r, &out);
    dl_buf_append_char(&out, '\0');
    EXPECT_STR(out.data, "Vary: Origin\r\nAccess-Control-Allow-Origin: https://app.example\r\n"
                         "Access-Control-Allow-Credentials: true\r\n"
                         "Access-Control-Expose-Headers: X-Total\r\n");
    req_free(r);
    dl_buf_free(&out);
    dl_cors_free(p);
}
