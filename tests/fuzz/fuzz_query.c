/*
 * fuzz_query.c - libFuzzer harness for the query-string and form parser of
 * runtime/core/http.c (dl_parse_query, dl_url_decode), checked against a plain
 * reference written from the WHATWG urlencoded rules the parser follows:
 * pairs split on '&', empty pairs skipped, the first '=' splits name from
 * value, '+' is a space and %XX a byte in both, an invalid or cut escape is
 * kept as written, and a pair whose decoded name is empty is dropped.
 * The first input byte picks the callback that stops the walk (after pair
 * n, 0: never) and dl_url_decode's form flag; the rest is the query.
 */
#include "devloop.h"
#include "fuzz.h"
#include "core/http.h"

static int hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* the reference decoder: into out (len bytes at most), returns the length */
static size_t ref_decode(const char *s, size_t len, int form, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hex((unsigned char)s[i + 1]) >= 0 &&
            hex((unsigned char)s[i + 2]) >= 0) {
            out[o++] = (char)(hex((unsigned char)s[i + 1]) * 16 + hex((unsigned char)s[i + 2]));
            i += 2;
        } else if (s[i] == '+' && form) {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

typedef struct {
    dl_fuzz_str_t t;
    int n, stop_after;
} walk_t;

static void put_pair(dl_fuzz_str_t *t, const char *k, size_t kl, const char *v, size_t vl)
{
    dl_fuzz_putf(t, "[%zu:", kl);
    dl_fuzz_put(t, k, kl);
    dl_fuzz_putf(t, "=%zu:", vl);
    dl_fuzz_put(t, v, vl);
    dl_fuzz_put(t, "]", 1);
}

static int on_pair(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    walk_t *w = arg;
    DL_FUZZ_CHECK(kl > 0, "a pair with an empty name");
    put_pair(&w->t, k, kl, v, vl);
    if (++w->n == w->stop_after)
        return -7;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int stop_after = data[0] & 7, form = (data[0] >> 3) & 1;
    const char *q = (const char *)data + 1;
    size_t len = size - 1;

    /* dl_url_decode in place, against the reference */
    char *a = malloc(len + 1), *b = malloc(len + 1);
    memcpy(a, q, len);
    size_t na = dl_url_decode(a, len, form);
    size_t nb = ref_decode(q, len, form, b);
    DL_FUZZ_CHECK(na == nb && memcmp(a, b, na) == 0,
                  "dl_url_decode(form=%d) gave %zu bytes, "
                  "the reference %zu",
                  form, na, nb);

    /* dl_parse_query against the reference walk */
    walk_t got = {{0}, 0, stop_after}, want = {{0}, 0, stop_after};
    int rc = dl_parse_query(q, len, form, on_pair, &got);
    int want_rc = 0;
    size_t i = 0;
    while (i < len && want_rc == 0) {
        size_t start = i;
        while (i < len && q[i] != '&')
            i++;
        size_t plen = i - start;
        i++;
        if (plen == 0)
            continue;
        const char *p = q + start;
        const char *eq = memchr(p, '=', plen);
        size_t kraw = eq ? (size_t)(eq - p) : plen;
        size_t kl = ref_decode(p, kraw, 1, a);
        size_t vl = eq ? ref_decode(eq + 1, plen - kraw - 1, 1, b) : 0;
        if (kl == 0)
            continue;
        put_pair(&want.t, a, kl, b, vl);
        if (++want.n == stop_after)
            want_rc = -7;
    }
    DL_FUZZ_CHECK(rc == want_rc, "dl_parse_query returned %d, the reference %d", rc, want_rc);
    int same = dl_fuzz_str_eq(&got.t, &want.t);
    if (!same)
        dl_fuzz_diff("parsed pairs (parser, reference)", &got.t, &want.t);
    DL_FUZZ_CHECK(same, "dl_parse_query and the reference disagree");
    dl_fuzz_str_free(&got.t);
    dl_fuzz_str_free(&want.t);
    free(a);
    free(b);
    return 0;
}
