/*
 * fuzz_multipart.c - libFuzzer harness for runtime/core/multipart.c. The body is
 * parsed three times: whole, cut where the fuzzer says (fuzz.h's split
 * framing) and one byte at a time. The three transcripts (each part's headers,
 * its data joined, its end, the error code and reason, the counters) must be
 * identical: chunking may never change what a body means. The control byte's
 * flags pick the boundary: 0-8 fixed ones (short, long, self-overlapping,
 * made of dashes), 9-15 the payload's first line (so bad boundaries are tried
 * too). The payload is also given to dl_multipart_boundary() as a
 * Content-Type, whose answer must be a valid boundary or DL_EINVAL.
 */
#include "devloop.h"
#include "fuzz.h"
#include "core/multipart.h"

static const char *const boundaries[] = {
    "b",    "boundary", "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "aaaa", "--",       "ab-ab",
    "-",    "a b",      "1234567890123456789012345678901234567890123456789012345678901234567890",
};

typedef struct {
    dl_fuzz_str_t t; /* the transcript */
    int in_data;     /* the last event was data: join the next data to it */
    size_t data_len; /* of the current part */
    uint64_t delivered;
} run_t;

static int on_begin(void *arg, const dl_multipart_part_t *p)
{
    run_t *r = arg;
    r->in_data = 0;
    DL_FUZZ_CHECK(memchr(p->name, 0, sizeof(p->name)) &&
                      memchr(p->filename, 0, sizeof(p->filename)) &&
                      memchr(p->content_type, 0, sizeof(p->content_type)),
                  "part strings not NUL-terminated");
    DL_FUZZ_CHECK(p->name[0] != '\0', "a part without a name was accepted");
    DL_FUZZ_CHECK(p->has_filename || p->filename[0] == '\0', "filename without has_filename");
    dl_fuzz_putf(&r->t, "\n<part name=[%s] file=%d[%s] type=[%s]>", p->name, p->has_filename,
                 p->filename, p->content_type);
    /* a callback that refuses stops the parser: its code must stick */
    if (strcmp(p->name, "stop") == 0)
        return DL_ECANCELED;
    return 0;
}

static int on_data(void *arg, const char *data, size_t len)
{
    run_t *r = arg;
    DL_FUZZ_CHECK(len > 0, "an empty data callback");
    if (!r->in_data)
        dl_fuzz_put(&r->t, "\n<data>", 7);
    r->in_data = 1;
    dl_fuzz_put(&r->t, data, len);
    r->delivered += len;
    return 0;
}

static int on_end(void *arg)
{
    run_t *r = arg;
    r->in_data = 0;
    dl_fuzz_put(&r->t, "\n<end>", 6);
    return 0;
}

static const dl_multipart_cbs_t cbs = {on_begin, on_data, on_end};

/* One parse of body, cut into pieces by split (NULL: whole; step 1: a byte at a time). */
static void parse(const char *bnd, size_t blen, const uint8_t *body, size_t len,
                  const dl_fuzz_split_t *split, int bytewise, run_t *r)
{
    static dl_multipart_t m; /* 8 KB: not on the stack */
    memset(r, 0, sizeof(*r));
    dl_multipart_init(&m, bnd, blen, &cbs, r);
    int first_err = 0;
    size_t npieces = bytewise ? len : split ? (size_t)split->n_cuts + 1 : 1;
    for (size_t i = 0; i < npieces; i++) {
        size_t off = 0, n = len;
        if (bytewise) {
            off = i;
            n = 1;
        } else if (split) {
            dl_fuzz_piece(split, (int)i, &off, &n);
        }
        if (n == 0)
            continue; /* an empty body: no feed at all, as byte by byte */
        int rc = dl_multipart_feed(&m, (const char *)body + off, n);
        if (first_err)
            DL_FUZZ_CHECK(rc == first_err, "error %d not sticky: then %d", first_err, rc);
        else
            first_err = rc;
    }
    int fin = dl_multipart_finish(&m);
    if (first_err)
        DL_FUZZ_CHECK(fin == first_err, "finish %d after error %d", fin, first_err);
    DL_FUZZ_CHECK(m.data_bytes == r->delivered, "data_bytes %llu, delivered %llu",
                  (unsigned long long)m.data_bytes, (unsigned long long)r->delivered);
    DL_FUZZ_CHECK((fin == 0) == (m.error == NULL), "finish %d with error [%s]", fin,
                  m.error ? m.error : "");
    dl_fuzz_putf(&r->t, "\n<result feed=%d finish=%d error=[%s] parts=%llu bytes=%llu>", first_err,
                 fin, m.error ? m.error : "", (unsigned long long)m.parts,
                 (unsigned long long)m.data_bytes);
}

static void check_boundary_param(const uint8_t *s, size_t len)
{
    char out[DL_MULTIPART_MAX_BOUNDARY + 1];
    int n = dl_multipart_boundary((const char *)s, len, out, sizeof(out));
    if (n == DL_EINVAL)
        return;
    DL_FUZZ_CHECK(n > 0 && n <= DL_MULTIPART_MAX_BOUNDARY, "boundary length %d", n);
    DL_FUZZ_CHECK(strlen(out) == (size_t)n, "boundary has a NUL or no terminator");
    DL_FUZZ_CHECK(out[n - 1] != ' ', "boundary ends in a space");
    for (int i = 0; i < n; i++)
        DL_FUZZ_CHECK(strchr("'()+_,-./:=? ", out[i]) || (out[i] >= '0' && out[i] <= '9') ||
                          (out[i] >= 'a' && out[i] <= 'z') || (out[i] >= 'A' && out[i] <= 'Z'),
                      "boundary byte 0x%02x is not a bchar", (unsigned char)out[i]);
    /* a buffer one byte short must be refused, never overrun */
    char small[DL_MULTIPART_MAX_BOUNDARY + 1];
    DL_FUZZ_CHECK(dl_multipart_boundary((const char *)s, len, small, (size_t)n) == DL_EINVAL,
                  "a %d-byte boundary fit in %d bytes", n, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dl_fuzz_split_t split;
    if (dl_fuzz_split(data, size, &split) != 0)
        return 0;
    check_boundary_param(split.payload, split.len);

    const char *bnd;
    size_t blen;
    const uint8_t *body = split.payload;
    size_t len = split.len;
    if (split.flags < sizeof(boundaries) / sizeof(boundaries[0])) {
        bnd = boundaries[split.flags];
        blen = strlen(bnd);
    } else {
        /* the first line is the boundary; the cuts apply to the whole payload,
         * so the pieces stay as chosen: keep the line in the body too */
        const uint8_t *nl = memchr(body, '\n', len < 80 ? len : 80);
        bnd = (const char *)body;
        blen = nl ? (size_t)(nl - body) : 0;
    }

    run_t whole, cut, bytes;
    parse(bnd, blen, body, len, NULL, 0, &whole);
    parse(bnd, blen, body, len, &split, 0, &cut);
    parse(bnd, blen, body, len, NULL, 1, &bytes);
    int same = dl_fuzz_str_eq(&whole.t, &cut.t);
    if (!same)
        dl_fuzz_diff("whole and cut transcripts", &whole.t, &cut.t);
    DL_FUZZ_CHECK(same, "cutting the body changed its meaning");
    same = dl_fuzz_str_eq(&whole.t, &bytes.t);
    if (!same)
        dl_fuzz_diff("whole and byte-at-a-time transcripts", &whole.t, &bytes.t);
    DL_FUZZ_CHECK(same, "feeding the body a byte at a time changed its meaning");
    dl_fuzz_str_free(&whole.t);
    dl_fuzz_str_free(&cut.t);
    dl_fuzz_str_free(&bytes.t);
    return 0;
}
