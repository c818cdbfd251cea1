/*
 * fuzz_http1.c - libFuzzer harness for HTTP/1.x connections (runtime/http1/conn.c
 * over llhttp, down to the router, the Lua handlers of tests/fuzz/app, the
 * codecs and compression), through an in-process runtime's virtual
 * connection. Input: fuzz.h's split framing around raw request bytes.
 *
 * Each input is served three times on fresh connections: whole, cut where
 * the fuzzer chose, and a byte at a time. What the server wrote must be the
 * same each time (Date values masked): how bytes arrive may not change what
 * they mean. Then the answers are checked against llhttp run over the same
 * bytes as a reference (same library, default settings, as conn.c uses it):
 *   - the output is a sequence of complete responses, nothing else;
 *   - answers come one per complete request and in order: a 2xx answer's
 *     X-Echo (method, raw path, body length) names request i exactly;
 *   - a "Connection: close" answer and a 400 are the last thing written and
 *     the connection then closes; an answer past the last complete request
 *     is the error answer to the one that did not parse;
 *   - a connection left open has answered every complete request, and the
 *     reference found no error.
 * The one 400 allowed to keep the connection is a body the codecs refused
 * ("malformed request body"): the request itself was well framed.
 */
#include <llhttp.h>
#include <zlib.h>

#include "fuzz.h"
#include "fuzz_runtime.h"

/* ----------------------------------------------------------- the reference */

#define MAX_REQS 256
#define MAX_URL 1024

typedef struct {
    char method[24];
    char url[MAX_URL];
    size_t url_len; /* may exceed MAX_URL: then the url is not compared */
    size_t body;
    int keep;
} ref_req_t;

static struct {
    ref_req_t r[MAX_REQS];
    int n;        /* complete requests */
    int err;      /* llhttp refused the bytes after them */
    int stopped;  /* the last one ends the connection (close, HTTP/1.0, upgrade) */
    int overflow; /* more than MAX_REQS */
} ref;

static ref_req_t *cur(void)
{
    return ref.n < MAX_REQS ? &ref.r[ref.n] : NULL;
}

static int ref_begin(llhttp_t *p)
{
    (void)p;
    ref_req_t *r = cur();
    if (r)
        memset(r, 0, sizeof(*r));
    return 0;
}

/* the method of a request cut short by an error is known too (HEAD answers
 * have no body, error answers included) */
static int ref_method(llhttp_t *p)
{
    ref_req_t *r = cur();
    if (r)
        snprintf(r->method, sizeof(r->method), "%s", llhttp_method_name(llhttp_get_method(p)));
    return 0;
}

static int ref_url(llhttp_t *p, const char *at, size_t len)
{
    (void)p;
    ref_req_t *r = cur();
    if (r) {
        if (r->url_len + len <= MAX_URL)
            memcpy(r->url + r->url_len, at, len);
        r->url_len += len;
    }
    return 0;
}

static int ref_body(llhttp_t *p, const char *at, size_t len)
{
    (void)p;
    (void)at;
    ref_req_t *r = cur();
    if (r)
        r->body += len;
    return 0;
}

static int ref_complete(llhttp_t *p)
{
    ref_req_t *r = cur();
    if (r) {
        snprintf(r->method, sizeof(r->method), "%s", llhttp_method_name(llhttp_get_method(p)));
        r->keep = llhttp_should_keep_alive(p) && !p->upgrade;
        ref.n++;
    } else {
        ref.overflow = 1;
    }
    return HPE_PAUSED; /* as conn.c does: one request at a time */
}

static void ref_parse(const uint8_t *data, size_t len)
{
    static llhttp_settings_t s;
    static llhttp_t p;
    llhttp_settings_init(&s);
    s.on_message_begin = ref_begin;
    s.on_method_complete = ref_method;
    s.on_url = ref_url;
    s.on_body = ref_body;
    s.on_message_complete = ref_complete;
    llhttp_init(&p, HTTP_REQUEST, &s);
    memset(&ref, 0, sizeof(ref));
    size_t off = 0;
    while (off < len) {
        llhttp_errno_t e = llhttp_execute(&p, (const char *)data + off, len - off);
        if (e == HPE_OK)
            break;
        if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            const char *pos = llhttp_get_error_pos(&p);
            off = pos ? (size_t)(pos - (const char *)data) : len;
            if (e == HPE_PAUSED_UPGRADE)
                llhttp_resume_after_upgrade(&p);
            else
                llhttp_resume(&p);
            if (ref.n > 0 && !ref.r[ref.n - 1].keep) {
                ref.stopped = 1;
                break;
            }
            continue;
        }
        ref.err = 1;
        break;
    }
}

/* ------------------------------------------------------------ the answers */

typedef struct {
    int status;
    int close;        /* Connection: close */
    const char *echo; /* X-Echo value, or NULL */
    size_t echo_len;
    const char *body;
    size_t body_len;
    int coded; /* Content-Encoding gzip or deflate */
} resp_t;

/* A header's value in head[0..hlen) (a line "Name: value"), or NULL. */
static const char *header(const char *head, size_t hlen, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *p = head; p && p < head + hlen;) {
        const char *eol = memmem(p, (size_t)(head + hlen - p), "\r\n", 2);
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            *vlen = (size_t)(eol - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Splits out into responses (interim 1xx skipped); fails on anything else. */
static int parse_responses(const dl_fuzz_str_t *out, resp_t *rs, int max)
{
    size_t pos = 0;
    int k = 0;
    while (pos < out->len) {
        const char *p = out->data + pos;
        size_t left = out->len - pos;
        const char *end = memmem(p, left, "\r\n\r\n", 4);
        DL_FUZZ_CHECK(end != NULL, "output ends inside a response head: %.*s",
                      (int)(left < 200 ? left : 200), p);
        DL_FUZZ_CHECK(left > 12 &&
                          (memcmp(p, "HTTP/1.1 ", 9) == 0 || memcmp(p, "HTTP/1.0 ", 9) == 0),
                      "output is not a response: %.*s", (int)(left < 200 ? left : 200), p);
        size_t hlen = (size_t)(end - p) + 4;
        int status = atoi(p + 9);
        DL_FUZZ_CHECK(status >= 100 && status <= 599, "status %d", status);
        if (status < 200) {
            DL_FUZZ_CHECK(status == 100, "interim status %d", status);
            pos += hlen;
            continue;
        }
        DL_FUZZ_CHECK(k < max, "more than %d responses", max);
        resp_t *r = &rs[k];
        memset(r, 0, sizeof(*r));
        r->status = status;
        size_t vl;
        const char *v = header(p, hlen, "Connection", &vl);
        r->close = v && vl == 5 && strncasecmp(v, "close", 5) == 0;
        r->echo = header(p, hlen, "X-Echo", &r->echo_len);
        r->coded = header(p, hlen, "Content-Encoding", &vl) != NULL;
        size_t clen = 0;
        v = header(p, hlen, "Content-Length", &vl);
        DL_FUZZ_CHECK(v != NULL || status == 204, "a %d response without Content-Length", status);
        if (v)
            clen = strtoull(v, NULL, 10);
        int head = k < MAX_REQS && k <= ref.n && strcmp(ref.r[k].method, "HEAD") == 0;
        if (head || status == 204 || status == 304)
            clen = 0;
        DL_FUZZ_CHECK(hlen + clen <= left, "response %d is cut short (%zu of %zu body bytes)", k,
                      left - hlen, clen);
        r->body = p + hlen;
        r->body_len = clen;
        pos += hlen + clen;
        k++;
    }
    return k;
}

/* The body as the handler wrote it: compressed ones inflated (they must inflate). */
static void plain_body(const resp_t *r, dl_fuzz_str_t *out)
{
    out->len = 0;
    if (!r->coded || r->body_len == 0) { /* HEAD: the encoding without the body */
        dl_fuzz_put(out, r->body, r->body_len);
        return;
    }
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 32) != Z_OK) /* gzip or zlib, by the header */
        abort();
    z.next_in = (Bytef *)r->body;
    z.avail_in = (uInt)r->body_len;
    int rc;
    do {
        char buf[4096];
        z.next_out = (Bytef *)buf;
        z.avail_out = sizeof(buf);
        rc = inflate(&z, Z_NO_FLUSH);
        dl_fuzz_put(out, buf, sizeof(buf) - z.avail_out);
    } while (rc == Z_OK);
    DL_FUZZ_CHECK(rc == Z_STREAM_END && z.avail_in == 0,
                  "a compressed body does not inflate (zlib %d, %u bytes left)", rc, z.avail_in);
    inflateEnd(&z);
}

static void hex(const char *s, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[(unsigned char)s[i] >> 4];
        out[2 * i + 1] = digits[(unsigned char)s[i] & 15];
    }
    out[2 * n] = '\0';
}

static void check_answers(const dl_fuzz_sink_t *s)
{
    static resp_t rs[MAX_REQS + 2];
    int k = parse_responses(&s->out, rs, MAX_REQS + 2);
    dl_fuzz_str_t body = {0};
    for (int i = 0; i < k; i++) {
        resp_t *r = &rs[i];
        plain_body(r, &body);
        int body_400 = r->status == 400 && i < ref.n && body.len > 0 &&
                       memmem(body.data, body.len, "malformed request body", 22) != NULL;
        if (r->close || (r->status == 400 && !body_400))
            DL_FUZZ_CHECK(i == k - 1 && s->closed,
                          "answer %d (status %d%s) is followed by %d more, connection %s", i,
                          r->status, r->close ? ", Connection: close" : "", k - 1 - i,
                          s->closed ? "closed" : "open");
        if (i >= ref.n) {
            DL_FUZZ_CHECK(i == ref.n && r->status >= 400 && r->close,
                          "answer %d (status %d) but only %d complete requests", i, r->status,
                          ref.n);
            continue;
        }
        if (r->status >= 200 && r->status < 300) {
            const ref_req_t *q = &ref.r[i];
            if (q->url_len == 1 && q->url[0] == '*') { /* OPTIONS *: the runtime's 204 */
                DL_FUZZ_CHECK(r->status == 204 && strcmp(q->method, "OPTIONS") == 0,
                              "a %d answer to %s *", r->status, q->method);
                continue;
            }
            DL_FUZZ_CHECK(r->echo != NULL, "a %d answer without X-Echo", r->status);
            if (q->url_len > MAX_URL)
                continue;
            /* absolute-form (http://host/path) is routed by its path */
            const char *u = q->url;
            size_t ulen = q->url_len;
            size_t skip = ulen > 7 && strncasecmp(u, "http://", 7) == 0    ? 7
                          : ulen > 8 && strncasecmp(u, "https://", 8) == 0 ? 8
                                                                         : 0;
            if (skip) {
                const char *a = u + skip;
                while (a < u + ulen && *a != '/' && *a != '?')
                    a++;
                ulen -= (size_t)(a - u);
                u = a;
            }
            const char *qm = memchr(u, '?', ulen);
            size_t plen = qm ? (size_t)(qm - u) : ulen;
            static char want[24 + 2 * MAX_URL + 32], path[2 * MAX_URL + 1];
            if (plen == 0)
                hex("/", 1, path);
            else
                hex(u, plen, path);
            int n = snprintf(want, sizeof(want), "%s %s %zu", q->method, path, q->body);
            int same = (size_t)n == r->echo_len && memcmp(want, r->echo, r->echo_len) == 0;
            if (!same && r->echo_len > 2 && memcmp(r->echo + r->echo_len - 2, " -", 2) == 0) {
                /* an upload: the body went to files, its length is not known */
                n = snprintf(want, sizeof(want), "%s %s -", q->method, path);
                same = (size_t)n == r->echo_len && memcmp(want, r->echo, r->echo_len) == 0;
            }
            DL_FUZZ_CHECK(same, "answer %d is not for request %d: X-Echo %.*s, request %s", i, i,
                          (int)r->echo_len, r->echo, want);
        }
    }
    dl_fuzz_str_free(&body);
    if (s->closed) {
        DL_FUZZ_CHECK(k > 0 && rs[k - 1].close, "the connection closed %s",
                      k ? "after an answer without Connection: close" : "without an answer");
    } else {
        DL_FUZZ_CHECK(!ref.err, "the connection stays open after bytes llhttp refuses");
        DL_FUZZ_CHECK(!ref.stopped, "the connection stays open after a request that ends it");
        DL_FUZZ_CHECK(ref.overflow || k == ref.n, "%d answers to %d complete requests", k, ref.n);
    }
}

/* ------------------------------------------------------------------ runs */

/* 1 when s holds exactly one response from off on (its head and Content-Length body). */
static int last_response_at(const dl_fuzz_str_t *s, size_t off)
{
    const char *p = s->data + off;
    size_t left = s->len - off, vl;
    const char *e = memmem(p, left, "\r\n\r\n", 4);
    if (left < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0 || e == NULL)
        return 0;
    size_t hlen = (size_t)(e - p) + 4;
    const char *v = header(p, hlen, "Content-Length", &vl);
    return v != NULL && hlen + strtoull(v, NULL, 10) == left;
}

/*
 * Accepted difference limit-or-parse-error (tests/fuzz/known-findings.md):
 * conn.c checks the URI, header and body limits in llhttp's span callbacks,
 * whose spans end where reads end, so a request that is both over a limit and
 * malformed past it gets 414/431/413 in one run and 400 in another: which
 * fault is seen first depends on the reads. Both runs must agree up to that
 * last answer, both close, and one of the two answers is a limit.
 */
static int limit_or_parse_error(const dl_fuzz_sink_t *a, const dl_fuzz_sink_t *b)
{
    if (!a->closed || !b->closed || a->out.len < 12 || b->out.len < 12)
        return 0;
    size_t same = 0;
    while (same < a->out.len && same < b->out.len && a->out.data[same] == b->out.data[same])
        same++;
    /* the answer where they part: the last "HTTP/1.1 " at or before that byte */
    size_t off = same < a->out.len - 9 ? same : a->out.len - 9;
    while (off > 0 && memcmp(a->out.data + off, "HTTP/1.1 ", 9) != 0)
        off--;
    if (!last_response_at(&a->out, off) || !last_response_at(&b->out, off))
        return 0;
    int sa = atoi(a->out.data + off + 9), sb = atoi(b->out.data + off + 9);
    int la = sa == 413 || sa == 414 || sa == 431, lb = sb == 413 || sb == 414 || sb == 431;
    if (!(la || lb) || (!la && sa != 400) || (!lb && sb != 400))
        return 0;
    char why[64];
    snprintf(why, sizeof(why), "%d in one run, %d in the other", sa, sb);
    return dl_fuzz_known("limit-or-parse-error", why);
}

/* Date values change with the clock: the same bytes in every run. */
static void mask_dates(dl_fuzz_str_t *s)
{
    for (char *p = s->data;
         p && (p = memmem(p, (size_t)(s->data + s->len - p), "\r\nDate: ", 8));) {
        p += 8;
        while (p < s->data + s->len && *p != '\r')
            *p++ = 'D';
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dl_fuzz_split_t split;
    if (dl_fuzz_split(data, size, &split) != 0)
        return 0;
    dl_fuzz_sink_t whole, cut, bytes;
    dl_fuzz_conn_run(split.payload, split.len, NULL, 0, 0, &whole);
    dl_fuzz_conn_run(split.payload, split.len, &split, 0, 0, &cut);
    dl_fuzz_conn_run(split.payload, split.len, NULL, 1, 0, &bytes);
    mask_dates(&whole.out);
    mask_dates(&cut.out);
    mask_dates(&bytes.out);
    const char *dump = getenv("DL_FUZZ_DUMP_DIR"); /* the three outputs, to compare by hand */
    if (dump) {
        const dl_fuzz_sink_t *runs[3] = {&whole, &cut, &bytes};
        static const char *names[3] = {"whole", "cut", "bytes"};
        for (int i = 0; i < 3; i++) {
            char path[1024];
            snprintf(path, sizeof(path), "%s/%s.out", dump, names[i]);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(runs[i]->out.data ? runs[i]->out.data : "", 1, runs[i]->out.len, f);
                fclose(f);
            }
        }
    }

    int same = whole.closed == cut.closed && dl_fuzz_str_eq(&whole.out, &cut.out);
    if (!same && limit_or_parse_error(&whole, &cut))
        goto out;
    if (!same)
        dl_fuzz_diff("answers to the whole input and to its pieces", &whole.out, &cut.out);
    DL_FUZZ_CHECK(same, "cutting the input changed the answers (closed %d vs %d)", whole.closed,
                  cut.closed);
    same = whole.closed == bytes.closed && dl_fuzz_str_eq(&whole.out, &bytes.out);
    if (!same && limit_or_parse_error(&whole, &bytes))
        goto out;
    if (!same)
        dl_fuzz_diff("answers to the whole input and to it byte by byte", &whole.out, &bytes.out);
    DL_FUZZ_CHECK(same, "feeding a byte at a time changed the answers (closed %d vs %d)",
                  whole.closed, bytes.closed);

    if (getenv("DL_FUZZ_DUMP")) /* to see what a seed reaches */
        fprintf(stderr, "--- %zu bytes in, %zu out%s:\n%.*s\n", split.len, whole.out.len,
                whole.closed ? ", closed" : "", (int)whole.out.len,
                whole.out.data ? whole.out.data : "");
    ref_parse(split.payload, split.len);
    check_answers(&whole);
out:
    dl_fuzz_str_free(&whole.out);
    dl_fuzz_str_free(&cut.out);
    dl_fuzz_str_free(&bytes.out);
    return 0;
}
