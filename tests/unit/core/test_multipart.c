/*
 * test_multipart.c - the streaming multipart/form-data parser of
 * runtime/core/multipart.c: boundary extraction, parts and their headers, data
 * that looks like a delimiter, chunking at every split point (the callbacks
 * must see the same thing however the body is cut), a large body checked by
 * checksum, preamble, epilogue, padding, malformed bodies and callback errors.
 * Every parse is recorded as a text trace so chunkings can be compared.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "core/multipart.h"
#include "sb.h"
#include "unit.h"

/* ---- a recorder: callbacks write a readable trace, one event a line */

typedef struct {
    sb_t trace;
    int in_data;          /* the last line is a data line still open */
    int fail_begin;       /* nonzero: on_part_begin returns this */
    int fail_data;        /* nonzero: on_part_data returns this */
    int fail_end;         /* nonzero: on_part_end returns this */
    int begins, datas, ends;
    uint64_t fnv;         /* FNV-1a of all delivered data */
    uint64_t nbytes;
    int no_trace;         /* large bodies: checksum only */
} rec_t;

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof(*r));
    r->fnv = 0xcbf29ce484222325ULL;
    sb_str(&r->trace, "");
}

static void rec_close_data(rec_t *r)
{
    if (r->in_data) {
        sb_str(&r->trace, "\n");
        r->in_data = 0;
    }
}

static int on_begin(void *arg, const dl_multipart_part_t *part)
{
    rec_t *r = arg;
    char line[1024];
    r->begins++;
    if (!r->no_trace) {
        rec_close_data(r);
        snprintf(line, sizeof(line), "begin name=%s filename=%s%s ct=%s\n", part->name,
                 part->filename, part->has_filename ? "" : "(none)", part->content_type);
        sb_str(&r->trace, line);
    }
    return r->fail_begin;
}

static int on_data(void *arg, const char *data, size_t len)
{
    rec_t *r = arg;
    r->datas++;
    r->nbytes += len;
    for (size_t i = 0; i < len; i++) {
        r->fnv ^= (unsigned char)data[i];
        r->fnv *= 0x100000001b3ULL;
    }
    if (r->no_trace)
        return r->fail_data;
    if (len == 0)
        sb_str(&r->trace, "EMPTY DATA CALL\n"); /* never expected */
    if (!r->in_data) {
        sb_str(&r->trace, "data ");
        r->in_data = 1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        char esc[8];
        if (c == '\r')
            sb_str(&r->trace, "\\r");
        else if (c == '\n')
            sb_str(&r->trace, "\\n");
        else if (c == '\\')
            sb_str(&r->trace, "\\\\");
        else if (c >= 0x20 && c < 0x7f)
            sb_add(&r->trace, &c, 1);
        else {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            sb_str(&r->trace, esc);
        }
    }
    return r->fail_data;
}

static int on_end(void *arg)
{
    rec_t *r = arg;
    r->ends++;
    if (!r->no_trace) {
        rec_close_data(r);
        sb_str(&r->trace, "end\n");
    }
    return r->fail_end;
}

static const dl_multipart_cbs_t cbs = {on_begin, on_data, on_end};

/* Ends the trace with the outcome ("ok" or the error); returns rc. */
static int rec_outcome(rec_t *r, const dl_multipart_t *m, int rc)
{
    char line[160];
    if (r->no_trace)
        return rc;
    rec_close_data(r);
    if (rc == 0)
        snprintf(line, sizeof(line), "ok\n");
    else
        snprintf(line, sizeof(line), "error %s: %s\n", dl_err_name(rc),
                 m->error ? m->error : "(no reason)");
    sb_str(&r->trace, line);
    return rc;
}

/* Feeds body cut at cuts[0..ncuts) (ascending offsets), then finishes. */
static int parse_cuts(rec_t *r, dl_multipart_t *m, const char *bnd, const char *body,
                      size_t len, const size_t *cuts, int ncuts)
{
    size_t at = 0;
    int rc = 0;

    dl_multipart_init(m, bnd, strlen(bnd), &cbs, r);
    for (int k = 0; k <= ncuts && rc == 0; k++) {
        size_t to = k < ncuts ? cuts[k] : len;
        rc = dl_multipart_feed(m, body + at, to - at);
        at = to;
    }
    if (rc == 0)
        rc = dl_multipart_finish(m);
    return rec_outcome(r, m, rc);
}

/* Parses body in one piece into a fresh recorder (free its trace). */
static int parse_whole(rec_t *r, const char *bnd, const char *body, size_t len)
{
    dl_multipart_t m;
    rec_init(r);
    return parse_cuts(r, &m, bnd, body, len, NULL, 0);
}

static int parse_str(rec_t *r, const char *bnd, const char *body)
{
    return parse_whole(r, bnd, body, strlen(body));
}

/* Parses body fed in chunks of step bytes. */
static int parse_step(rec_t *r, dl_multipart_t *m, const char *bnd, const char *body, size_t len,
                      size_t step)
{
    size_t at = 0;
    int rc = 0;
    dl_multipart_init(m, bnd, strlen(bnd), &cbs, r);
    while (at < len && rc == 0) {
        size_t n = DL_MIN(step, len - at);
        rc = dl_multipart_feed(m, body + at, n);
        at += n;
    }
    if (rc == 0)
        rc = dl_multipart_finish(m);
    return rec_outcome(r, m, rc);
}

#define EXPECT_TRACE(r, want)                                              \
    do {                                                                   \
        EXPECT_STR((r)->trace.p, (want));                                  \
        sb_free(&(r)->trace);                                              \
    } while (0)

/* ---- boundary extraction */

DL_TEST(multipart_boundary_extract)
{
    char out[DL_MULTIPART_MAX_BOUNDARY + 1];
#define B(s) dl_multipart_boundary((s), strlen(s), out, sizeof(out))

    EXPECT_EQ(B("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"), 37);
    EXPECT_STR(out, "----WebKitFormBoundary7MA4YWxkTrZu0gW");
    EXPECT_EQ(B("multipart/form-data; boundary=\"a b:c=(d)?\""), 10);
    EXPECT_STR(out, "a b:c=(d)?");
    EXPECT_EQ(B("Multipart/Form-Data; BOUNDARY=XyZ"), 3);
    EXPECT_STR(out, "XyZ");
    EXPECT_EQ(B("  multipart/form-data ;charset=utf-8 ;  Boundary = abc ; x=\"y\" "), 3);
    EXPECT_STR(out, "abc");
    /* a quoted parameter value may hold ';' and "boundary=" */
    EXPECT_EQ(B("multipart/form-data; foo=\"a;boundary=bad\"; boundary=good"), 4);
    EXPECT_STR(out, "good");
    EXPECT_EQ(B("multipart/form-data; boundary=x;"), 1);
    EXPECT_STR(out, "x");

    char b70[128], b71[128];
    snprintf(b70, sizeof(b70), "multipart/form-data; boundary=%070d", 7);
    snprintf(b71, sizeof(b71), "multipart/form-data; boundary=%071d", 7);
    EXPECT_EQ(B(b70), 70);
    EXPECT_EQ(strlen(out), 70);
    EXPECT_EQ(B(b71), DL_EINVAL);

    /* missing or empty */
    EXPECT_EQ(B("multipart/form-data"), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; charset=utf-8"), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary="), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=\"\""), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=\"abc"), DL_EINVAL);
    EXPECT_EQ(B(""), DL_EINVAL);
    /* not multipart/form-data */
    EXPECT_EQ(B("application/x-www-form-urlencoded"), DL_EINVAL);
    EXPECT_EQ(B("multipart/mixed; boundary=abc"), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-dataX; boundary=abc"), DL_EINVAL);
    EXPECT_EQ(B("multipart; boundary=abc"), DL_EINVAL);
    EXPECT_EQ(B("text/plain; boundary=abc"), DL_EINVAL);
    /* bad characters, trailing space, two boundaries, junk */
    EXPECT_EQ(B("multipart/form-data; boundary=\"a@b\""), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=\"abc \""), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=\"a\\\"b\""), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=a; boundary=b"), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data; boundary=abc def"), DL_EINVAL);
    EXPECT_EQ(B("multipart/form-data boundary=abc"), DL_EINVAL);
#undef B

    /* the length argument is honoured, and out must have room for the NUL */
    const char *ct = "multipart/form-data; boundary=abcdef";
    EXPECT_EQ(dl_multipart_boundary(ct, strlen(ct) - 3, out, sizeof(out)), 3);
    EXPECT_STR(out, "abc");
    char small[7];
    EXPECT_EQ(dl_multipart_boundary(ct, strlen(ct), small, 6), DL_EINVAL);
    EXPECT_EQ(dl_multipart_boundary(ct, strlen(ct), small, sizeof(small)), 6);
    EXPECT_STR(small, "abcdef");
}

/* ---- well-formed bodies */

#define TEXT_AND_FILE                                                      \
    "--XyZ\r\n"                                                            \
    "Content-Disposition: form-data; name=\"title\"\r\n"                   \
    "\r\n"                                                                 \
    "Hello, world\r\n"                                                     \
    "--XyZ\r\n"                                                            \
    "Content-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\n" \
    "Content-Type: text/plain\r\n"                                         \
    "\r\n"                                                                 \
    "line 1\nline 2\r\n"                                                   \
    "--XyZ--\r\n"

DL_TEST(multipart_field_and_file)
{
    rec_t r;
    dl_multipart_t m;
    rec_init(&r);
    EXPECT_EQ(parse_cuts(&r, &m, "XyZ", TEXT_AND_FILE, strlen(TEXT_AND_FILE), NULL, 0), 0);
    EXPECT_EQ(m.parts, 2);
    EXPECT_EQ(m.data_bytes, 12 + 13);
    EXPECT(m.error == NULL);
    EXPECT_EQ(r.begins, 2);
    EXPECT_EQ(r.ends, 2);
    EXPECT_TRACE(&r, "begin name=title filename=(none) ct=\n"
                     "data Hello, world\n"
                     "end\n"
                     "begin name=upload filename=a.txt ct=text/plain\n"
                     "data line 1\\nline 2\n"
                     "end\n"
                     "ok\n");
}

DL_TEST(multipart_empty_and_one_byte_files)
{
    rec_t r;
    sb_t body = {0};
    sb_str(&body, "--b\r\n"
                  "Content-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n"
                  "Content-Type: application/octet-stream\r\n"
                  "\r\n"
                  "\r\n"
                  "--b\r\n"
                  "Content-Disposition: form-data; name=\"one\"; filename=\"1.bin\"\r\n"
                  "\r\n");
    sb_add(&body, "", 1); /* a NUL byte */
    sb_str(&body, "\r\n"
                  "--b\r\n"
                  "Content-Disposition: form-data; name=\"cr\"; filename=\"cr.bin\"\r\n"
                  "\r\n"
                  "\r\r\n"
                  "--b\r\n"
                  "Content-Disposition: form-data; name=\"dash\"\r\n"
                  "\r\n"
                  "-\r\n"
                  "--b--");
    EXPECT_EQ(parse_whole(&r, "b", body.p, body.len), 0);
    EXPECT_EQ(r.datas, 3); /* the empty part gets no data call */
    EXPECT_TRACE(&r, "begin name=empty filename= ct=application/octet-stream\n"
                     "end\n"
                     "begin name=one filename=1.bin ct=\n"
                     "data \\x00\n"
                     "end\n"
                     "begin name=cr filename=cr.bin ct=\n"
                     "data \\r\n"
                     "end\n"
                     "begin name=dash filename=(none) ct=\n"
                     "data -\n"
                     "end\n"
                     "ok\n");
    sb_free(&body);
}

DL_TEST(multipart_delimiter_right_after_headers)
{
    /* "--b" straight after the empty header line is a delimiter: the empty
     * line's CRLF starts it (RFC 2046 grammar; Go and busboy agree), and
     * that CRLF is never data */
    rec_t r;
    EXPECT_EQ(parse_str(&r, "b",
                        "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n"
                        "--b\r\nContent-Disposition: form-data; name=c\r\n\r\n"
                        "--c\r\n--b--"),
              0);
    EXPECT_TRACE(&r, "begin name=a filename=(none) ct=\n"
                     "end\n"
                     "begin name=c filename=(none) ct=\n"
                     "data --c\n"
                     "end\n"
                     "ok\n");
    EXPECT_EQ(parse_str(&r, "b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n--b--"),
              0);
    EXPECT_TRACE(&r, "begin name=a filename=(none) ct=\nend\nok\n");
    EXPECT_EQ(parse_str(&r, "b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n--bX"),
              DL_EINVAL);
    EXPECT_TRACE(&r, "begin name=a filename=(none) ct=\nend\n"
                     "error EINVAL: no CRLF after the delimiter\n");
}

/* Part data full of near-delimiters, all of which must come through intact. */
static const char lookalike_data[] = "a\rb\nc\r\nd--e\r\n-f\r\n--g\r\n--bo"
                                     "h\r\n--boundarX\r\n--boundar\r\r\n--bou\n"
                                     "--boundary\r\n"    /* no CRLF before it */
                                     "x--boundary--\r\n" /* nor here */
                                     "\r\n\r\n--\r\n--b\r\n--boundar";

static void build_lookalike(sb_t *b)
{
    sb_str(b, "--boundary\r\n"
              "Content-Disposition: form-data; name=\"bin\"; filename=\"x.bin\"\r\n"
              "\r\n");
    sb_add(b, lookalike_data, sizeof(lookalike_data) - 1);
    sb_str(b, "\r\n--boundary\r\n"
              "Content-Disposition: form-data; name=\"tail\"\r\n"
              "\r\n"
              "\r\n--boundary--\r\n");
}

DL_TEST(multipart_binary_lookalikes)
{
    sb_t body = {0};
    rec_t r;
    dl_multipart_t m;

    build_lookalike(&body);
    rec_init(&r);
    r.no_trace = 1;
    EXPECT_EQ(parse_cuts(&r, &m, "boundary", body.p, body.len, NULL, 0), 0);
    EXPECT_EQ(m.parts, 2);
    EXPECT_EQ(r.ends, 2);

    /* the bytes delivered are exactly the first part's data (the second
     * part is empty) */
    rec_t w;
    rec_init(&w);
    w.no_trace = 1;
    on_data(&w, lookalike_data, sizeof(lookalike_data) - 1);
    EXPECT(r.fnv == w.fnv);
    EXPECT_EQ(r.nbytes, sizeof(lookalike_data) - 1);
    EXPECT_EQ(m.data_bytes, sizeof(lookalike_data) - 1);
    sb_free(&r.trace);
    sb_free(&w.trace);
    sb_free(&body);
}

DL_TEST(multipart_binary_every_byte)
{
    /* all 256 byte values, twice, with CRLF-- runs between them */
    sb_t body = {0}, data = {0};
    rec_t r, w;
    dl_multipart_t m;

    for (int round = 0; round < 2; round++) {
        for (int c = 0; c < 256; c++) {
            unsigned char ch = (unsigned char)c;
            sb_add(&data, &ch, 1);
            if (c % 37 == 0)
                sb_str(&data, "\r\n--q");
        }
    }
    sb_str(&body, "--qq\r\nContent-Disposition: form-data; name=f; filename=all.bin\r\n\r\n");
    sb_add(&body, data.p, data.len);
    sb_str(&body, "\r\n--qq--");

    for (size_t step = 1; step <= 7; step++) {
        rec_init(&r);
        r.no_trace = 1;
        EXPECT_EQ(parse_step(&r, &m, "qq", body.p, body.len, step), 0);
        rec_init(&w);
        w.no_trace = 1;
        on_data(&w, data.p, data.len);
        EXPECT(r.fnv == w.fnv);
        EXPECT_EQ(r.nbytes, data.len);
        sb_free(&r.trace);
        sb_free(&w.trace);
    }
    sb_free(&body);
    sb_free(&data);
}

DL_TEST(multipart_header_parsing)
{
    rec_t r;
    EXPECT_EQ(parse_str(&r, "b",
                        "--b\r\n"
                        "content-disposition:form-data;name=plain;filename=f.txt\r\n"
                        "CONTENT-TYPE:   image/png ; q=1  \r\n"
                        "X-Other: ignored\r\n"
                        "\r\n"
                        "1\r\n"
                        "--b\r\n"
                        "Content-Disposition: Form-Data ; NAME = \"a \\\"q\\\" b\" ;"
                        " FileName=\"C:\\\\dir\\\\\xc3\xa9.txt\"; size=3\r\n"
                        "\r\n"
                        "2\r\n"
                        "--b--\r\n"),
              0);
    EXPECT_TRACE(&r, "begin name=plain filename=f.txt ct=image/png ; q=1\n"
                     "data 1\n"
                     "end\n"
                     "begin name=a \"q\" b filename=C:\\dir\\\xc3\xa9.txt ct=\n"
                     "data 2\n"
                     "end\n"
                     "ok\n");
}

DL_TEST(multipart_preamble_epilogue)
{
    rec_t r;
    EXPECT_EQ(parse_str(&r, "sep",
                        "This is the preamble. --sep is not a delimiter here,\r\n"
                        "--se neither, nor\r\n--sepa... wait, that one is one: no.\r\n"
                        "\r\n"
                        "--sep\r\n"
                        "Content-Disposition: form-data; name=\"a\"\r\n"
                        "\r\n"
                        "A\r\n"
                        "--sep--\r\n"
                        "epilogue\r\n--sep\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nB"),
              DL_EINVAL);
    /* "\r\n--sepa" in the preamble is a complete delimiter followed by 'a' */
    EXPECT_TRACE(&r, "error EINVAL: no CRLF after the delimiter\n");

    EXPECT_EQ(parse_str(&r, "sep",
                        "This is the preamble. --sep is not a delimiter here,\r\n"
                        "--se neither, nor \r\n-sep, nor \n--sep\r\n"
                        "\r\n"
                        "--sep\r\n"
                        "Content-Disposition: form-data; name=\"a\"\r\n"
                        "\r\n"
                        "A\r\n"
                        "--sep--\r\n"
                        "epilogue\r\n--sep\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nB"),
              0);
    EXPECT_TRACE(&r, "begin name=a filename=(none) ct=\n"
                     "data A\n"
                     "end\n"
                     "ok\n");

    /* no parts at all, and a closing delimiter straight after a preamble */
    EXPECT_EQ(parse_str(&r, "sep", "--sep--"), 0);
    EXPECT_TRACE(&r, "ok\n");
    EXPECT_EQ(parse_str(&r, "sep", "junk\r\n--sep--junk"), 0);
    EXPECT_TRACE(&r, "ok\n");
}

DL_TEST(multipart_transport_padding)
{
    rec_t r;
    EXPECT_EQ(parse_str(&r, "b",
                        "--b \t \r\n"
                        "Content-Disposition: form-data; name=\"p\"\r\n"
                        "\r\n"
                        "x\r\n"
                        "--b\t\r\n"
                        "Content-Disposition: form-data; name=\"q\"\r\n"
                        "\r\n"
                        "y\r\n"
                        "--b--  \r\n"),
              0);
    EXPECT_TRACE(&r, "begin name=p filename=(none) ct=\n"
                     "data x\n"
                     "end\n"
                     "begin name=q filename=(none) ct=\n"
                     "data y\n"
                     "end\n"
                     "ok\n");
}

/* ---- chunking: same trace whatever the cuts */

static const char *split_bodies[] = {
    TEXT_AND_FILE,
    "pre\r\n--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--X\r\n--XyZ \r\n"
    "Content-Disposition: form-data; name=\"b\"; filename=\"\"\r\n\r\n\r\r\r\n\r\n"
    "--XyZ--\r\n--XyZ\r\n",
    "--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n--Xy-Z\r\r\n--Xy\r\n--XyZ\r\n"
    "Content-Disposition: form-data; name=\"e\"\r\n\r\n--XyZ\r\n"
    "Content-Disposition: form-data; name=\"f\"\r\n\r\n-x\r\n--XyZ--\t",
    "--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n\r\n--Xy\r\n--XyZ--",
    /* malformed ones fail the same way wherever they are cut */
    "--XyZ\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\ndata\r\n--XyZ--",
    "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ndata\r\n--XyZ?\r\n",
    "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ndata\r\n--Xy",
    "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n",
};

DL_TEST(multipart_split_anywhere)
{
    dl_multipart_t m;
    rec_t ref, r;

    for (size_t b = 0; b < DL_ARRAY_SIZE(split_bodies); b++) {
        const char *body = split_bodies[b];
        size_t len = strlen(body);
        rec_init(&ref);
        parse_cuts(&ref, &m, "XyZ", body, len, NULL, 0);

        /* one, two and three bytes at a time */
        for (size_t step = 1; step <= 3; step++) {
            rec_init(&r);
            parse_step(&r, &m, "XyZ", body, len, step);
            EXPECT_STR(r.trace.p, ref.trace.p);
            sb_free(&r.trace);
        }

        /* two chunks, cut at every point (empty chunks included) */
        for (size_t cut = 0; cut <= len; cut++) {
            rec_init(&r);
            parse_cuts(&r, &m, "XyZ", body, len, &cut, 1);
            if (strcmp(r.trace.p, ref.trace.p) != 0)
                DL_FAIL_AT("body %zu cut at %zu:\n%s\nvs\n%s", b, cut, r.trace.p, ref.trace.p);
            sb_free(&r.trace);
        }
        sb_free(&ref.trace);
    }
}

DL_TEST(multipart_split_three_chunks)
{
    /* every pair of cut points over the near-delimiter body */
    sb_t body = {0};
    dl_multipart_t m;
    rec_t ref, r;
    int bad = 0;

    build_lookalike(&body);
    rec_init(&ref);
    parse_cuts(&ref, &m, "boundary", body.p, body.len, NULL, 0);
    for (size_t i = 0; i <= body.len && bad < 5; i++) {
        for (size_t j = i; j <= body.len && bad < 5; j++) {
            size_t cuts[2] = {i, j};
            rec_init(&r);
            parse_cuts(&r, &m, "boundary", body.p, body.len, cuts, 2);
            if (strcmp(r.trace.p, ref.trace.p) != 0) {
                DL_FAIL_AT("cuts %zu,%zu:\n%s\nvs\n%s", i, j, r.trace.p, ref.trace.p);
                bad++;
            }
            sb_free(&r.trace);
        }
    }
    sb_free(&ref.trace);
    sb_free(&body);
}

/* ---- differential: random data against a plain search */

static uint64_t rng(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static int has_delim_before(const char *p, size_t n, const char *d, size_t dlen, size_t limit)
{
    /* is there an occurrence of d in p[0..n) starting before limit? */
    for (size_t i = 0; i + dlen <= n && i < limit; i++)
        if (memcmp(p + i, d, dlen) == 0)
            return 1;
    return 0;
}

static void random_differential(const char *bnd, uint64_t seed)
{
    static const char alphabet[] = "\r\n-\r\n-xab";
    char delim[80];
    size_t dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", bnd);
    uint64_t st = seed;
    int tried = 0;

    for (int round = 0; round < 3000; round++) {
        /* data made of delimiter-ish bytes, rejected if it holds a delimiter */
        sb_t data = {0}, body = {0};
        size_t n = (size_t)(rng(&st) % 60);
        for (size_t i = 0; i < n; i++) {
            char c = alphabet[rng(&st) % (sizeof(alphabet) - 1)];
            if (rng(&st) % 5 == 0)
                c = bnd[rng(&st) % strlen(bnd)];
            sb_add(&data, &c, 1);
        }
        /* the CRLF ending the headers starts a line too, so look from there */
        sb_t probe = {0};
        sb_add(&probe, "\r\n", 2);
        sb_add(&probe, data.p ? data.p : "", n);
        sb_add(&probe, delim, dlen);
        int clash = has_delim_before(probe.p, probe.len, delim, dlen, n + 2);
        sb_free(&probe);
        if (clash) {
            sb_free(&data);
            continue;
        }
        tried++;
        sb_str(&body, "--");
        sb_str(&body, bnd);
        sb_str(&body, "\r\nContent-Disposition: form-data; name=r\r\n\r\n");
        sb_add(&body, data.p, n);
        sb_add(&body, delim, dlen);
        sb_str(&body, "--");

        /* random chunking */
        size_t cuts[8];
        int ncuts = (int)(rng(&st) % 8);
        for (int k = 0; k < ncuts; k++)
            cuts[k] = (size_t)(rng(&st) % (body.len + 1));
        for (int a = 1; a < ncuts; a++) /* insertion sort */
            for (int k = a; k > 0 && cuts[k - 1] > cuts[k]; k--) {
                size_t t = cuts[k];
                cuts[k] = cuts[k - 1];
                cuts[k - 1] = t;
            }
        rec_t r, w;
        dl_multipart_t m;
        rec_init(&r);
        r.no_trace = 1;
        int rc = parse_cuts(&r, &m, bnd, body.p, body.len, cuts, ncuts);
        rec_init(&w);
        w.no_trace = 1;
        on_data(&w, data.p, n);
        if (rc != 0 || r.fnv != w.fnv || r.nbytes != n || r.ends != 1)
            DL_FAIL_AT("boundary %s round %d: rc %d, %llu of %zu bytes, error %s", bnd, round, rc,
                       (unsigned long long)r.nbytes, n, m.error ? m.error : "-");
        sb_free(&r.trace);
        sb_free(&w.trace);
        sb_free(&data);
        sb_free(&body);
    }
    EXPECT_INT(tried, >, 100);
}

DL_TEST(multipart_random_differential)
{
    random_differential("ab", 0x9e3779b97f4a7c15ULL);
    random_differential("-", 12345);
    random_differential("a-b-a", 777);
    /* not an RFC 2046 boundary, but init takes any bytes: the delimiter
     * "\r\n--\r\n-" has a border, which exercises the KMP fallback */
    random_differential("\r\n-", 4242);
    random_differential("-\r\n--", 99);
    random_differential("\r\n--a", 31337);
    random_differential("\r\n--\r\n-", 2718);
}

DL_TEST(multipart_kmp_fallback_across_chunks)
{
    /* delimiter "\r\n--\r\n--a" has the border "\r\n--": eight held bytes
     * that meet '\r' fall back to five, and the three given up came from
     * the previous chunk. Every pair of cut points must give the same data. */
    static const char data[] = "\r\n--\r\n--\r\nZ\r\n--\r\n-\r\n--\r\n--\r\n--\r\n--x";
    sb_t body = {0};
    rec_t r, w;
    dl_multipart_t m;
    int bad = 0;

    sb_str(&body, "--\r\n--a\r\nContent-Disposition: form-data; name=k\r\n\r\n");
    sb_add(&body, data, sizeof(data) - 1);
    sb_str(&body, "\r\n--\r\n--a--");
    rec_init(&w);
    w.no_trace = 1;
    on_data(&w, data, sizeof(data) - 1);
    for (size_t i = 0; i <= body.len && bad < 5; i++) {
        for (size_t j = i; j <= body.len && bad < 5; j++) {
            size_t cuts[2] = {i, j};
            rec_init(&r);
            r.no_trace = 1;
            int rc = parse_cuts(&r, &m, "\r\n--a", body.p, body.len, cuts, 2);
            if (rc != 0 || r.fnv != w.fnv || r.nbytes != sizeof(data) - 1) {
                DL_FAIL_AT("cuts %zu,%zu: rc %d, %llu bytes", i, j, rc,
                           (unsigned long long)r.nbytes);
                bad++;
            }
            sb_free(&r.trace);
        }
    }
    sb_free(&w.trace);
    sb_free(&body);
}

/* ---- a large body */

DL_TEST(multipart_large_body)
{
    const char *bnd = "----devloopBoundary8zQk3T";
    const size_t size = 10u * 1024 * 1024;
    const char *head = "------devloopBoundary8zQk3T\r\n"
                       "Content-Disposition: form-data; name=\"big\"; filename=\"big.bin\"\r\n"
                       "Content-Type: application/octet-stream\r\n"
                       "\r\n";
    const char *tail = "\r\n------devloopBoundary8zQk3T--\r\n";
    size_t hlen = strlen(head), tlen = strlen(tail), blen = strlen(bnd);
    size_t total = hlen + size + tlen;
    char *body = malloc(total);
    uint64_t st = 0x243f6a8885a308d3ULL;

    EXPECT(body != NULL);
    if (body == NULL)
        return;
    memcpy(body, head, hlen);
    char *data = body + hlen;
    for (size_t i = 0; i < size; i += 8) {
        uint64_t x = rng(&st);
        memcpy(data + i, &x, DL_MIN(8, size - i));
    }
    /* sprinkle delimiter prefixes (never the whole thing) through the data */
    for (size_t at = 100; at + 4 + blen < size; at += 997 + rng(&st) % 4000) {
        size_t k = 1 + (size_t)(rng(&st) % (3 + blen)); /* 1 .. 3 + blen bytes */
        memcpy(data + at, "\r\n--", DL_MIN(k, 4));
        if (k > 4)
            memcpy(data + at + 4, bnd, k - 4);
        data[at + k] = '\0'; /* so random bytes never complete it */
    }
    memcpy(body + hlen + size, tail, tlen);

    rec_t r, w;
    dl_multipart_t m;
    rec_init(&w);
    w.no_trace = 1;
    on_data(&w, data, size);

    size_t steps[] = {65536, 4093};
    for (size_t s = 0; s < DL_ARRAY_SIZE(steps); s++) {
        rec_init(&r);
        r.no_trace = 1;
        EXPECT_EQ(parse_step(&r, &m, bnd, body, total, steps[s]), 0);
        EXPECT_EQ(r.nbytes, size);
        EXPECT_EQ(m.data_bytes, size);
        EXPECT(r.fnv == w.fnv);
        EXPECT_EQ(m.parts, 1);
        EXPECT_EQ(r.begins, 1);
        EXPECT_EQ(r.ends, 1);
        sb_free(&r.trace);
    }
    sb_free(&w.trace);
    free(body);
}

/* ---- malformed bodies */

DL_TEST(multipart_malformed)
{
    rec_t r;
    static const struct {
        const char *body, *trace;
    } cases[] = {
        {"--b\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--b--",
         "error EINVAL: part has no name\n"},
        {"--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--b--",
         "error EINVAL: part has no name\n"},
        {"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "error EINVAL: part has no name\n"},
        {"--b\r\n\r\nx\r\n--b--", "error EINVAL: part has no name\n"},
        {"--bX\r\n", "error EINVAL: no CRLF after the delimiter\n"},
        {"--b \tX\r\n", "error EINVAL: no CRLF after the delimiter\n"},
        {"--b\rX", "error EINVAL: no CRLF after the delimiter\n"},
        {"--b\nContent-Disposition: form-data; name=a\r\n\r\n",
         "error EINVAL: no CRLF after the delimiter\n"},
        {"--b-x", "error EINVAL: malformed closing delimiter\n"},
        {"--b\r\nContent-Disposition: attachment; name=a\r\n\r\n",
         "error EINVAL: Content-Disposition is not form-data\n"},
        {"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n",
         "error EINVAL: malformed Content-Disposition\n"},
        {"--b\r\nContent-Disposition: form-data; name\r\n\r\n",
         "error EINVAL: malformed Content-Disposition\n"},
        {"--b\r\nContent-Disposition: form-data name=a\r\n\r\n",
         "error EINVAL: malformed Content-Disposition\n"},
        {"--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\n",
         "error EINVAL: duplicate name parameter\n"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; "
         "name=b\r\n\r\n",
         "error EINVAL: duplicate Content-Disposition\n"},
        {"--b\r\nContent-Disposition : form-data; name=a\r\n\r\n",
         "error EINVAL: malformed part header\n"},
        {"--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\n",
         "error EINVAL: malformed part header\n"},
        {"--b\r\nContent-Disposition: form-data; name=a\nX: y\r\n\r\n",
         "error EINVAL: control character in part header\n"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nbody",
         "begin name=a filename=(none) ct=\ndata body\nerror EINVAL: body ended inside a part\n"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n", "error EINVAL: body ended "
                                                              "inside a part\n"},
        {"--b", "error EINVAL: body ended inside a part\n"},
        {"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b\r\n",
         "begin name=a filename=(none) ct=\ndata x\nend\nerror EINVAL: body ended inside a part\n"},
        {"", "error EINVAL: body ended before the first delimiter\n"},
        {"no delimiter at all\r\n--", "error EINVAL: body ended before the first delimiter\n"},
    };

    for (size_t i = 0; i < DL_ARRAY_SIZE(cases); i++) {
        int rc = parse_str(&r, "b", cases[i].body);
        EXPECT_EQ(rc, DL_EINVAL);
        if (strcmp(r.trace.p, cases[i].trace) != 0)
            DL_FAIL_AT("case %zu: \"%s\" vs \"%s\"", i, r.trace.p, cases[i].trace);
        sb_free(&r.trace);
    }

    /* long values are refused, not truncated */
    char big[600];
    sb_t body = {0};
    memset(big, 'n', 300);
    big[300] = '\0';
    sb_str(&body, "--b\r\nContent-Disposition: form-data; name=\"");
    sb_str(&body, big);
    sb_str(&body, "\"\r\n\r\n");
    EXPECT_EQ(parse_whole(&r, "b", body.p, body.len), DL_EINVAL);
    EXPECT_TRACE(&r, "error EINVAL: field name too long\n");
    body.len = 0;
    sb_str(&body, "--b\r\nContent-Disposition: form-data; name=a; filename=");
    sb_str(&body, big);
    sb_str(&body, "\r\n\r\n");
    EXPECT_EQ(parse_whole(&r, "b", body.p, body.len), DL_EINVAL);
    EXPECT_TRACE(&r, "error EINVAL: filename too long\n");
    body.len = 0;
    sb_str(&body, "--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type: ");
    sb_add(&body, big, 128);
    sb_str(&body, "\r\n\r\n");
    EXPECT_EQ(parse_whole(&r, "b", body.p, body.len), DL_EINVAL);
    EXPECT_TRACE(&r, "error EINVAL: part Content-Type too long\n");
    /* 255 bytes fit */
    body.len = 0;
    sb_str(&body, "--b\r\nContent-Disposition: form-data; name=a; filename=");
    sb_add(&body, big, 255);
    sb_str(&body, "\r\n\r\n\r\n--b--");
    EXPECT_EQ(parse_whole(&r, "b", body.p, body.len), 0);
    sb_free(&r.trace);
    sb_free(&body);
}

DL_TEST(multipart_header_block_limit)
{
    /* a header block of exactly DL_MULTIPART_MAX_HEADERS bytes (empty line
     * included) is accepted; one byte more is DL_ETOOBIG */
    const char *pre = "--b\r\n";
    const char *cd = "Content-Disposition: form-data; name=a\r\nX-Pad: ";
    for (int extra = 0; extra <= 1; extra++) {
        sb_t body = {0};
        rec_t r;
        sb_str(&body, pre);
        sb_str(&body, cd);
        size_t pad = DL_MULTIPART_MAX_HEADERS - strlen(cd) - 4 + (size_t)extra;
        for (size_t i = 0; i < pad; i++)
            sb_str(&body, "p");
        sb_str(&body, "\r\n\r\nv\r\n--b--");
        int rc = parse_whole(&r, "b", body.p, body.len);
        if (extra == 0) {
            EXPECT_EQ(rc, 0);
            EXPECT(strstr(r.trace.p, "data v\n") != NULL);
        } else {
            EXPECT_EQ(rc, DL_ETOOBIG);
            EXPECT_STR(r.trace.p, "error ETOOBIG: part headers too long\n");
        }
        sb_free(&r.trace);
        /* the same, a byte at a time */
        dl_multipart_t m;
        rec_init(&r);
        EXPECT_EQ(parse_step(&r, &m, "b", body.p, body.len, 1), extra ? DL_ETOOBIG : 0);
        sb_free(&r.trace);
        sb_free(&body);
    }

    /* a header block that never ends */
    dl_multipart_t m;
    rec_t r;
    char chunk[1000];
    int rc = 0;
    memset(chunk, 'h', sizeof(chunk));
    rec_init(&r);
    dl_multipart_init(&m, "b", 1, &cbs, &r);
    EXPECT_EQ(dl_multipart_feed(&m, "--b\r\nX: ", 8), 0);
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = dl_multipart_feed(&m, chunk, sizeof(chunk));
    EXPECT_EQ(rc, DL_ETOOBIG);
    EXPECT_EQ(r.begins, 0);
    sb_free(&r.trace);
}

DL_TEST(multipart_errors_are_sticky)
{
    dl_multipart_t m;
    rec_t r;
    rec_init(&r);
    dl_multipart_init(&m, "b", 1, &cbs, &r);
    EXPECT_EQ(dl_multipart_feed(&m, "--bX", 4), DL_EINVAL);
    EXPECT_STR(m.error, "no CRLF after the delimiter");
    EXPECT_EQ(dl_multipart_feed(&m, "\r\n", 2), DL_EINVAL);
    EXPECT_EQ(dl_multipart_feed(&m, "", 0), DL_EINVAL);
    EXPECT_EQ(dl_multipart_finish(&m), DL_EINVAL);
    EXPECT_STR(m.error, "no CRLF after the delimiter");

    /* finish's own error sticks too */
    dl_multipart_init(&m, "b", 1, &cbs, &r);
    EXPECT_EQ(dl_multipart_feed(&m, "--b\r\n", 5), 0);
    EXPECT_EQ(dl_multipart_finish(&m), DL_EINVAL);
    EXPECT_STR(m.error, "body ended inside a part");
    EXPECT_EQ(dl_multipart_feed(&m, "x", 1), DL_EINVAL);

    /* a bad boundary fails the first call */
    dl_multipart_init(&m, "", 0, &cbs, &r);
    EXPECT_EQ(dl_multipart_feed(&m, "--\r\n", 4), DL_EINVAL);
    EXPECT_STR(m.error, "bad boundary");
    char longb[DL_MULTIPART_MAX_BOUNDARY + 1];
    memset(longb, 'x', sizeof(longb));
    dl_multipart_init(&m, longb, sizeof(longb), &cbs, &r);
    EXPECT_EQ(dl_multipart_finish(&m), DL_EINVAL);
    dl_multipart_init(&m, longb, DL_MULTIPART_MAX_BOUNDARY, &cbs, &r);
    EXPECT_EQ(dl_multipart_feed(&m, "--", 2), 0);
    EXPECT_EQ(dl_multipart_feed(&m, longb, DL_MULTIPART_MAX_BOUNDARY), 0);
    EXPECT_EQ(dl_multipart_feed(&m, "--", 2), 0);
    EXPECT_EQ(dl_multipart_finish(&m), 0);

    /* NULL callbacks are allowed */
    dl_multipart_init(&m, "b", 1, NULL, NULL);
    const char *body = "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nxyz\r\n--b--";
    EXPECT_EQ(dl_multipart_feed(&m, body, strlen(body)), 0);
    EXPECT_EQ(dl_multipart_finish(&m), 0);
    EXPECT_EQ(m.parts, 1);
    EXPECT_EQ(m.data_bytes, 3);
    sb_free(&r.trace);
}

/* ---- callbacks that stop the parser */

DL_TEST(multipart_callback_error)
{
    const char *body = TEXT_AND_FILE;
    size_t len = strlen(body);
    dl_multipart_t m;
    rec_t r;

    rec_init(&r);
    r.fail_begin = DL_ECANCELED;
    EXPECT_EQ(parse_cuts(&r, &m, "XyZ", body, len, NULL, 0), DL_ECANCELED);
    EXPECT_EQ(r.begins, 1);
    EXPECT_EQ(r.datas, 0);
    EXPECT_EQ(r.ends, 0);
    EXPECT_STR(m.error, "stopped by a callback");
    EXPECT_EQ(dl_multipart_feed(&m, "x", 1), DL_ECANCELED);
    EXPECT_EQ(dl_multipart_finish(&m), DL_ECANCELED);
    sb_free(&r.trace);

    rec_init(&r);
    r.fail_data = DL_EIO;
    EXPECT_EQ(parse_cuts(&r, &m, "XyZ", body, len, NULL, 0), DL_EIO);
    EXPECT_EQ(r.begins, 1);
    EXPECT_EQ(r.datas, 1);
    EXPECT_EQ(r.ends, 0);
    sb_free(&r.trace);

    /* fed a byte at a time the data callback still stops it at once */
    rec_init(&r);
    r.fail_data = DL_ETOOBIG;
    EXPECT_EQ(parse_step(&r, &m, "XyZ", body, len, 1), DL_ETOOBIG);
    EXPECT_EQ(r.datas, 1);
    EXPECT_EQ(r.begins, 1);
    sb_free(&r.trace);

    rec_init(&r);
    r.fail_end = DL_ENOMEM;
    EXPECT_EQ(parse_cuts(&r, &m, "XyZ", body, len, NULL, 0), DL_ENOMEM);
    EXPECT_EQ(r.begins, 1);
    EXPECT_EQ(r.ends, 1);
    EXPECT_EQ(m.parts, 1);
    sb_free(&r.trace);

    /* a positive return is not an error */
    rec_init(&r);
    r.fail_data = 1;
    EXPECT_EQ(parse_cuts(&r, &m, "XyZ", body, len, NULL, 0), 0);
    EXPECT_EQ(r.ends, 2);
    sb_free(&r.trace);
}
