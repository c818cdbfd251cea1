/*
 * fuzz_h2.c - libFuzzer harness for HTTP/2 connections (runtime/http2/h2.c over
 * nghttp2, then the same routing, handlers and codecs as HTTP/1). Virtual
 * connections never look for the h2c preface, so the harness marks its
 * connection fresh, as conn.c marks a plain listener's new connection: the
 * preface then hands it to h2.c exactly as on a socket. The input is
 * fuzz.h's split framing around client frames; the preface is put in front
 * unless flag bit 0 is set (then the bytes are sent as they are, to fuzz the
 * preface detection too).
 *
 * Each input is served whole and cut where the fuzzer chose. HTTP/2 output
 * may legitimately interleave differently when input arrives in pieces (a
 * reset can land before or after an answer was sent), so the two runs are
 * not compared byte for byte. Instead each run's output must be a valid
 * server frame sequence: SETTINGS first, whole frames, HPACK blocks that
 * decode, a :status first in every answer, no HEADERS or DATA on a stream
 * after its END_STREAM or RST_STREAM, no new stream above a GOAWAY's last
 * stream, no push, DATA adding up to Content-Length. And a stream answered
 * in both runs must get the same answer (status, headers but Date and
 * X-Request-Id, body).
 */
#include <nghttp2/nghttp2.h>

#include "fuzz.h"
#include "fuzz_runtime.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN 24
#define MAX_STREAMS 128

typedef struct {
    int32_t id;
    int status;            /* final status, 0 until its HEADERS */
    dl_fuzz_str_t headers; /* name: value lines, Date and X-Request-Id masked */
    dl_fuzz_str_t body;
    long content_length; /* -1: none */
    unsigned ended : 1;  /* END_STREAM sent */
    unsigned reset : 1;  /* RST_STREAM sent */
} stream_t;

typedef struct {
    stream_t s[MAX_STREAMS];
    int n;
    int goaway;
    int32_t goaway_last;
} h2_out_t;

static stream_t *stream_of(h2_out_t *o, int32_t id)
{
    for (int i = 0; i < o->n; i++)
        if (o->s[i].id == id)
            return &o->s[i];
    DL_FUZZ_CHECK(o->n < MAX_STREAMS, "more than %d streams answered", MAX_STREAMS);
    stream_t *s = &o->s[o->n++];
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->content_length = -1;
    return s;
}

static void out_free(h2_out_t *o)
{
    for (int i = 0; i < o->n; i++) {
        dl_fuzz_str_free(&o->s[i].headers);
        dl_fuzz_str_free(&o->s[i].body);
    }
    o->n = 0;
}

/* Decodes one complete header block of stream s. */
static void decode_block(nghttp2_hd_inflater *inf, stream_t *s, const uint8_t *in, size_t len,
                         int end_stream)
{
    int first = 1, status = 0;
    dl_fuzz_str_t lines = {0};
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t n = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, len, 1);
        DL_FUZZ_CHECK(n >= 0, "stream %d: the server's header block does not decode: %s",
                      (int)s->id, nghttp2_strerror((int)n));
        in += n;
        len -= (size_t)n;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            if (first) {
                DL_FUZZ_CHECK(
                    nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0 && nv.valuelen == 3,
                    "stream %d: the first header is %.*s", (int)s->id, (int)nv.namelen, nv.name);
                status = atoi((const char *)nv.value);
                first = 0;
            }
            int mask = (nv.namelen == 4 && memcmp(nv.name, "date", 4) == 0) ||
                       (nv.namelen == 12 && memcmp(nv.name, "x-request-id", 12) == 0);
            dl_fuzz_put(&lines, nv.name, nv.namelen);
            dl_fuzz_put(&lines, ": ", 2);
            if (mask)
                dl_fuzz_put(&lines, "*", 1);
            else
                dl_fuzz_put(&lines, nv.value, nv.valuelen);
            dl_fuzz_put(&lines, "\n", 1);
            if (nv.namelen == 14 && memcmp(nv.name, "content-length", 14) == 0)
                s->content_length = strtol((const char *)nv.value, NULL, 10);
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            break;
        }
        if (n == 0 && len == 0)
            break;
    }
    DL_FUZZ_CHECK(status >= 100 && status <= 599, "stream %d: status %d", (int)s->id, status);
    if (status >= 200) {
        DL_FUZZ_CHECK(s->status == 0, "stream %d: a second answer (%d after %d)", (int)s->id,
                      status, s->status);
        s->status = status;
        s->headers = lines;
    } else {
        DL_FUZZ_CHECK(!end_stream, "stream %d: an interim answer ends the stream", (int)s->id);
        dl_fuzz_str_free(&lines);
    }
}

/* Checks the server's frames in out and collects each stream's answer. */
static void read_frames(const dl_fuzz_str_t *out, h2_out_t *o)
{
    nghttp2_hd_inflater *inf;
    if (nghttp2_hd_inflate_new(&inf) != 0)
        abort();
    const uint8_t *p = (const uint8_t *)out->data;
    size_t left = out->len, nframes = 0;
    dl_fuzz_str_t block = {0};
    stream_t *block_of = NULL;
    int block_end_stream = 0;
    memset(o, 0, sizeof(*o));
    while (left > 0) {
        DL_FUZZ_CHECK(left >= 9, "output ends inside a frame header (%zu bytes)", left);
        size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        int type = p[3], flags = p[4];
        int32_t id =
            (int32_t)(((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8]) &
                      0x7fffffffu);
        DL_FUZZ_CHECK(left >= 9 + len, "output ends inside a frame (type %d, %zu of %zu bytes)",
                      type, left - 9, len);
        const uint8_t *pl = p + 9;
        if (nframes++ == 0)
            DL_FUZZ_CHECK(type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK),
                          "the server's first frame is type %d, not SETTINGS", type);
        DL_FUZZ_CHECK(block_of == NULL || type == NGHTTP2_CONTINUATION,
                      "a header block is interrupted by a frame of type %d", type);
        DL_FUZZ_CHECK(type != NGHTTP2_PUSH_PROMISE, "the server pushed");
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_DATA || type == NGHTTP2_CONTINUATION ||
            type == NGHTTP2_RST_STREAM)
            DL_FUZZ_CHECK(id != 0 && (id & 1) == 1, "frame type %d on stream %d", type, (int)id);
        stream_t *s = NULL;
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_DATA || type == NGHTTP2_RST_STREAM) {
            s = stream_of(o, id);
            if (type != NGHTTP2_RST_STREAM)
                DL_FUZZ_CHECK(!s->ended && !s->reset, "stream %d: frame type %d after %s", (int)id,
                              type, s->ended ? "END_STREAM" : "RST_STREAM");
        }
        size_t pad = 0, skip = 0;
        if ((type == NGHTTP2_HEADERS || type == NGHTTP2_DATA) && (flags & NGHTTP2_FLAG_PADDED)) {
            DL_FUZZ_CHECK(len >= 1 && pl[0] < len, "bad padding");
            pad = pl[0];
            skip = 1;
        }
        switch (type) {
        case NGHTTP2_HEADERS:
            if (o->goaway)
                DL_FUZZ_CHECK(id <= o->goaway_last || s->status != 0,
                              "stream %d answered after GOAWAY (last stream %d)", (int)id,
                              (int)o->goaway_last);
            if (flags & NGHTTP2_FLAG_PRIORITY)
                skip += 5;
            DL_FUZZ_CHECK(skip + pad <= len, "HEADERS shorter than its fields");
            block.len = 0;
            dl_fuzz_put(&block, pl + skip, len - skip - pad);
            block_end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
            block_of = s;
            if (flags & NGHTTP2_FLAG_END_STREAM)
                s->ended = 1;
            break;
        case NGHTTP2_CONTINUATION:
            DL_FUZZ_CHECK(block_of != NULL && block_of->id == id, "a stray CONTINUATION");
            dl_fuzz_put(&block, pl, len);
            break;
        case NGHTTP2_DATA:
            DL_FUZZ_CHECK(s->status != 0, "stream %d: DATA before the answer's HEADERS", (int)id);
            DL_FUZZ_CHECK(skip + pad <= len, "DATA shorter than its padding");
            dl_fuzz_put(&s->body, pl + skip, len - skip - pad);
            if (flags & NGHTTP2_FLAG_END_STREAM)
                s->ended = 1;
            break;
        case NGHTTP2_RST_STREAM:
            DL_FUZZ_CHECK(len == 4, "RST_STREAM of %zu bytes", len);
            s->reset = 1;
            break;
        case NGHTTP2_GOAWAY:
            DL_FUZZ_CHECK(len >= 8 && id == 0, "malformed GOAWAY");
            if (o->goaway)
                DL_FUZZ_CHECK(((int32_t)((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
                                         (uint32_t)pl[2] << 8 | pl[3]) &
                               0x7fffffff) <= o->goaway_last,
                              "a second GOAWAY raises the last stream");
            o->goaway = 1;
            o->goaway_last = (int32_t)(((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
                                        (uint32_t)pl[2] << 8 | pl[3]) &
                                       0x7fffffffu);
            break;
        default:
            break;
        }
        if ((type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) &&
            (flags & NGHTTP2_FLAG_END_HEADERS)) {
            decode_block(inf, block_of, (const uint8_t *)block.data, block.len, block_end_stream);
            block_of = NULL;
        }
        p += 9 + len;
        left -= 9 + len;
    }
    DL_FUZZ_CHECK(block_of == NULL, "output ends inside a header block");
    for (int i = 0; i < o->n; i++) {
        stream_t *s = &o->s[i];
        if (s->ended && s->content_length >= 0 && s->body.len > 0)
            DL_FUZZ_CHECK((size_t)s->content_length == s->body.len,
                          "stream %d: content-length %ld, %zu bytes of DATA", (int)s->id,
                          s->content_length, s->body.len);
    }
    dl_fuzz_str_free(&block);
    nghttp2_hd_inflate_del(inf);
}

static void compare(const h2_out_t *a, const h2_out_t *b)
{
    for (int i = 0; i < a->n; i++) {
        const stream_t *x = &a->s[i];
        for (int j = 0; j < b->n; j++) {
            const stream_t *y = &b->s[j];
            if (y->id != x->id || !x->status || !y->status)
                continue;
            int same = x->status == y->status && dl_fuzz_str_eq(&x->headers, &y->headers);
            if (!same)
                dl_fuzz_diff("answer headers", &x->headers, &y->headers);
            DL_FUZZ_CHECK(same, "stream %d answered %d whole and %d in pieces, or other headers",
                          (int)x->id, x->status, y->status);
            if (x->ended && y->ended && !x->reset && !y->reset) {
                same = dl_fuzz_str_eq(&x->body, &y->body);
                if (!same)
                    dl_fuzz_diff("answer bodies", &x->body, &y->body);
                DL_FUZZ_CHECK(same, "stream %d: another body when the input came in pieces",
                              (int)x->id);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dl_fuzz_split_t split;
    if (dl_fuzz_split(data, size, &split) != 0)
        return 0;
    /* the preface in front, the cuts moved along with the bytes */
    static uint8_t buf[PREFACE_LEN + (1 << 20)];
    size_t add = (split.flags & 1) ? 0 : PREFACE_LEN;
    if (split.len > sizeof(buf) - add)
        return 0;
    memcpy(buf, PREFACE, add);
    memcpy(buf + add, split.payload, split.len);
    split.payload = buf;
    split.len += add;
    for (int i = 0; i < split.n_cuts; i++)
        split.cuts[i] += add;

    dl_fuzz_sink_t whole, cut;
    dl_fuzz_conn_run(split.payload, split.len, NULL, 0, 1, &whole);
    dl_fuzz_conn_run(split.payload, split.len, &split, 0, 1, &cut);
    int is_h2 = split.len >= PREFACE_LEN && memcmp(split.payload, PREFACE, PREFACE_LEN) == 0;
    if (is_h2) {
        static h2_out_t a, b;
        read_frames(&whole.out, &a);
        read_frames(&cut.out, &b);
        if (getenv("DL_FUZZ_DUMP")) /* to see what a seed reaches */
            for (int i = 0; i < a.n; i++)
                fprintf(stderr, "stream %d: status %d, %zu body bytes%s%s%s\n", (int)a.s[i].id,
                        a.s[i].status, a.s[i].body.len, a.s[i].ended ? ", ended" : "",
                        a.s[i].reset ? ", reset" : "", a.goaway ? " (GOAWAY sent)" : "");
        compare(&a, &b);
        compare(&b, &a);
        out_free(&a);
        out_free(&b);
    }
    dl_fuzz_str_free(&whole.out);
    dl_fuzz_str_free(&cut.out);
    return 0;
}
