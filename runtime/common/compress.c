/*
 * compress.c - response compression. It reads Accept-Encoding to pick gzip,
 * deflate or identity, tells which content types are worth compressing, and
 * compresses a whole response body in one call with reusable per-thread
 * state, through zlib or libdeflate. Neither library wins everywhere: on the
 * bench body (27 kB of JSON, tests/bench/bench_compress.c) zlib's fast path is
 * quicker at levels 1..3 (and smaller at 1), libdeflate quicker and smaller at
 * 4..6, 8 and 9; at 7 zlib is a little quicker and libdeflate smaller. So the
 * default uses zlib up to level 3 and libdeflate above, and
 * dl_compressor_set_impl() can force either one, which keeps both paths
 * tested. dl_gunzip() decodes with zlib for tests and the cache. Library
 * errors become DL_E* codes here and nowhere else.
 */
#include "common/compress.h"

#include <libdeflate.h>
#include <limits.h>
#include <pthread.h>
#include <zlib.h>

#include "common/internal.h"

/* zlib's windowBits: 15 is the zlib format, +16 gzip, +32 detect either on inflate. */
#define ZLIB_WBITS 15
#define GZIP_WBITS (15 + 16)
#define AUTO_WBITS (15 + 32)
#define MEM_LEVEL 8

/* Highest level at which zlib measured faster than libdeflate (see the top). */
#define AUTO_ZLIB_MAX_LEVEL 3

/* Output grows by at least this much when a stream outruns its estimate. */
#define GROW_MIN 16384

enum { FMT_GZIP = 0, FMT_ZLIB = 1, FMT_COUNT = 2 };

struct dl_compressor_s {
    int level;
    int impl; /* DL_COMPRESS_AUTO, _ZLIB or _LIBDEFLATE */
    int zs_ready[FMT_COUNT];
    z_stream zs[FMT_COUNT];
    struct libdeflate_compressor *ld;
    struct libdeflate_decompressor *ldd; /* cached-body hits, made on first use */
};

/* ---- negotiation ---------------------------------------------------------------------------- */

/* q-values are kept in thousandths; NOT_LISTED marks a coding absent from the header. */
#define Q_MAX 1000
#define NOT_LISTED (-1)

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* RFC 9110 tchar. */
static int is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static size_t skip_ows(const char *s, size_t i, size_t len)
{
    while (i < len && is_ows(s[i]))
        i++;
    return i;
}

static size_t skip_token(const char *s, size_t i, size_t len)
{
    while (i < len && is_tchar((unsigned char)s[i]))
        i++;
    return i;
}

/* Skips a quoted-string starting at s[i] == '"'; an unterminated one runs to the end. */
static size_t skip_quoted(const char *s, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return len;
}

/* Skips the rest of a malformed list element, up to its comma (quotes respected). */
static size_t skip_element(const char *s, size_t i, size_t len)
{
    while (i < len && s[i] != ',')
        i = s[i] == '"' ? skip_quoted(s, i, len) : i + 1;
    return i;
}

/*
 * Parses a qvalue: ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
 * Returns thousandths, or -1 when it does not match.
 */
DL_STATIC int parse_coding_qvalue(const char *v, size_t n)
{
    if (n == 0 || (v[0] != '0' && v[0] != '1'))
        return -1;
    if (n == 1)
        return v[0] == '1' ? Q_MAX : 0;
    if (v[1] != '.' || n > 5)
        return -1;
    int q = 0, scale = 100;
    for (size_t i = 2; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        q += (v[i] - '0') * scale;
        scale /= 10;
    }
    if (v[0] == '1')
        return q == 0 ? Q_MAX : -1;
    return q;
}

static void note_q(int *slot, int q)
{
    if (q > *slot)
        *slot = q;
}

int dl_compress_negotiate(const char *s, size_t len)
{
    int q_gzip = NOT_LISTED, q_deflate = NOT_LISTED, q_identity = NOT_LISTED;
    int q_star = NOT_LISTED;

    if (s == NULL)
        len = 0;
    size_t i = 0;
    while (i < len) {
        /* Empty list elements and OWS are allowed: "gzip, , deflate". */
        if (s[i] == ',' || is_ows(s[i])) {
            i++;
            continue;
        }
        size_t tok = i;
        i = skip_token(s, i, len);
        size_t tok_len = i - tok;
        int q = Q_MAX, bad = tok_len == 0;
        i = skip_ows(s, i, len);
        while (!bad && i < len && s[i] == ';') {
            i = skip_ows(s, i + 1, len);
            size_t name = i;
            i = skip_token(s, i, len);
            size_t name_len = i - name;
            i = skip_ows(s, i, len);
            size_t val = i, val_len = 0;
            int has_val = 0, quoted = 0;
            if (i < len && s[i] == '=') {
                has_val = 1;
                i = skip_ows(s, i + 1, len);
                val = i;
                if (i < len && s[i] == '"') {
                    quoted = 1;
                    i = skip_quoted(s, i, len);
                } else {
                    i = skip_token(s, i, len);
                }
                val_len = i - val;
                i = skip_ows(s, i, len);
            }
            if (dl_strncasecmp_eq(s + name, name_len, "q", 1)) {
                int v = has_val && !quoted ? parse_coding_qvalue(s + val, val_len) : -1;
                q = v < 0 ? 0 : v;
            }
        }
        if (bad || (i < len && s[i] != ',')) {
            i = skip_element(s, i, len);
            continue;
        }
        const char *t = s + tok;
        if (dl_strncasecmp_eq(t, tok_len, "gzip", 4) || dl_strncasecmp_eq(t, tok_len, "x-gzip", 6))
            note_q(&q_gzip, q);
        else if (dl_strncasecmp_eq(t, tok_len, "deflate", 7))
            note_q(&q_deflate, q);
        else if (dl_strncasecmp_eq(t, tok_len, "identity", 8))
            note_q(&q_identity, q);
        else if (tok_len == 1 && t[0] == '*')
            note_q(&q_star, q);
    }

    /* A coding not listed takes the wildcard's q, or is not acceptable. */
    if (q_gzip == NOT_LISTED)
        q_gzip = q_star == NOT_LISTED ? 0 : q_star;
    if (q_deflate == NOT_LISTED)
        q_deflate = q_star == NOT_LISTED ? 0 : q_star;
    /* Identity is acceptable unless refused; unlisted, it is also the least preferred. */
    if (q_identity == NOT_LISTED)
        q_identity = q_star;

    int best = DL_MAX(q_gzip, q_deflate);
    if (best > 0) {
        if (q_identity > best)
            return DL_ENC_IDENTITY;
        return q_gzip >= q_deflate ? DL_ENC_GZIP : DL_ENC_DEFLATE;
    }
    return q_identity == 0 ? DL_ENC_NONE : DL_ENC_IDENTITY;
}

/* ---- content types -------------------------------------------------------------------------- */

static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && dl_strncasecmp_eq(s, n, prefix, n);
}

int dl_compress_type_ok(const char *s, size_t len)
{
    static const char *const precompressed[] = {
        "font/woff",
        "font/woff2",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/zstd",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/octet-stream",
        "application/pdf",
        "application/x-bzip2",
    };

    if (s == NULL)
        return 1;
    size_t i = skip_ows(s, 0, len);
    size_t end = i;
    while (end < len && s[end] != ';')
        end++;
    while (end > i && is_ows(s[end - 1]))
        end--;
    const char *t = s + i;
    size_t n = end - i;

    /* Vector images are text; every other image format carries its own compression. */
    if (has_prefix(t, n, "image/"))
        return dl_strncasecmp_eq(t, n, "image/svg+xml", 13);
    if (has_prefix(t, n, "video/") || has_prefix(t, n, "audio/"))
        return 0;
    for (size_t k = 0; k < DL_ARRAY_SIZE(precompressed); k++)
        if (dl_strncasecmp_eq(t, n, precompressed[k], strlen(precompressed[k])))
            return 0;
    return 1;
}

/* ---- allocation hooks ----------------------------------------------------------------------- */

static voidpf zalloc_cb(voidpf opaque, uInt items, uInt size)
{
    DL_UNUSED(opaque);
    if (size != 0 && items > SIZE_MAX / size)
        return Z_NULL;
    return dl_malloc((size_t)items * size);
}

static void zfree_cb(voidpf opaque, voidpf p)
{
    DL_UNUSED(opaque);
    dl_free(p);
}

static pthread_once_t ld_alloc_once = PTHREAD_ONCE_INIT;

/*
 * libdeflate's allocator is process-wide and may only change while no
 * libdeflate object exists, so it is set once, before our first compressor.
 * It goes through dl_malloc, which is plain malloc unless an embedder replaced it.
 */
static void ld_alloc_setup(void)
{
    libdeflate_set_memory_allocator(dl_malloc, dl_free);
}

/* ---- compressor ----------------------------------------------------------------------------- */

dl_compressor_t *dl_compressor_new(int level)
{
    pthread_once(&ld_alloc_once, ld_alloc_setup);
    dl_compressor_t *c = dl_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->level = DL_MIN(DL_MAX(level, DL_COMPRESS_LEVEL_MIN), DL_COMPRESS_LEVEL_MAX);
    c->impl = DL_COMPRESS_AUTO;
    return c;
}

void dl_compressor_free(dl_compressor_t *c)
{
    if (c == NULL)
        return;
    for (int f = 0; f < FMT_COUNT; f++)
        if (c->zs_ready[f])
            deflateEnd(&c->zs[f]);
    libdeflate_free_compressor(c->ld);
    if (c->ldd)
        libdeflate_free_decompressor(c->ldd);
    dl_free(c);
}

DL_TEST_HOOK int dl_compressor_set_impl(dl_compressor_t *c, int impl)
{
    if (impl != DL_COMPRESS_AUTO && impl != DL_COMPRESS_ZLIB && impl != DL_COMPRESS_LIBDEFLATE)
        return DL_EINVAL;
    c->impl = impl;
    return 0;
}

int dl_compressor_impl(const dl_compressor_t *c)
{
    if (c->impl != DL_COMPRESS_AUTO)
        return c->impl;
    return c->level <= AUTO_ZLIB_MAX_LEVEL ? DL_COMPRESS_ZLIB : DL_COMPRESS_LIBDEFLATE;
}

DL_TEST_HOOK int dl_compressor_level(const dl_compressor_t *c)
{
    return c->level;
}

/* Readies the z_stream for one format: created on first use, reset afterwards. */
static int zlib_stream(dl_compressor_t *c, int fmt, z_stream **out)
{
    z_stream *zs = &c->zs[fmt];
    if (c->zs_ready[fmt]) {
        if (deflateReset(zs) != Z_OK)
            return DL_EIO;
    } else {
        memset(zs, 0, sizeof(*zs));
        zs->zalloc = zalloc_cb;
        zs->zfree = zfree_cb;
        int wbits = fmt == FMT_GZIP ? GZIP_WBITS : ZLIB_WBITS;
        int rc = deflateInit2(zs, c->level, Z_DEFLATED, wbits, MEM_LEVEL, Z_DEFAULT_STRATEGY);
        if (rc != Z_OK)
            return rc == Z_MEM_ERROR ? DL_ENOMEM : DL_EIO;
        c->zs_ready[fmt] = 1;
    }
    *out = zs;
    return 0;
}

/* Hands zlib the next piece of the input (zlib counts in uInt) once it has
 * taken the last one; returns how much is left after that piece. */
static size_t feed_input(z_stream *zs, const unsigned char *in, size_t inlen, size_t left)
{
    if (zs->avail_in == 0 && left > 0) {
        uInt chunk = (uInt)DL_MIN(left, (size_t)UINT_MAX);
        zs->next_in = (Bytef *)(in + (inlen - left));
        zs->avail_in = chunk;
        left -= chunk;
    }
    return left;
}

static int run_zlib(dl_compressor_t *c, int fmt, const unsigned char *in, size_t inlen,
                    dl_buf_t *out)
{
    z_stream *zs;
    int rc = zlib_stream(c, fmt, &zs);
    if (rc != 0)
        return rc;
    /* With the bound reserved, zlib finishes in one deflate() call for any body under 4 GB. */
    if (dl_buf_reserve(out, deflateBound(zs, (uLong)inlen)) != 0)
        return DL_ENOMEM;

    size_t left = inlen;
    for (;;) {
        left = feed_input(zs, in, inlen, left);
        if (out->cap == out->len && dl_buf_reserve(out, DL_MAX(out->len / 2, GROW_MIN)) != 0)
            return DL_ENOMEM;
        uInt room = (uInt)DL_MIN(out->cap - out->len, (size_t)UINT_MAX);
        zs->next_out = (Bytef *)out->data + out->len;
        zs->avail_out = room;
        rc = deflate(zs, left == 0 ? Z_FINISH : Z_NO_FLUSH);
        out->len += room - zs->avail_out;
        if (rc == Z_STREAM_END)
            return 0;
        /* Z_BUF_ERROR only means no progress was possible; more room is made above. */
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return DL_EIO;
    }
}

static int run_libdeflate(dl_compressor_t *c, int fmt, const void *in, size_t inlen,
                          dl_buf_t *out)
{
    if (c->ld == NULL) {
        c->ld = libdeflate_alloc_compressor(c->level);
        if (c->ld == NULL)
            return DL_ENOMEM;
    }
    size_t bound = fmt == FMT_GZIP ? libdeflate_gzip_compress_bound(c->ld, inlen)
                                   : libdeflate_zlib_compress_bound(c->ld, inlen);
    if (dl_buf_reserve(out, bound) != 0)
        return DL_ENOMEM;
    void *dst = out->data + out->len;
    size_t n = fmt == FMT_GZIP ? libdeflate_gzip_compress(c->ld, in, inlen, dst, bound)
                               : libdeflate_zlib_compress(c->ld, in, inlen, dst, bound);
    /* 0 means the output did not fit, which the bound rules out. */
    if (n == 0)
        return DL_EIO;
    out->len += n;
    return 0;
}

int dl_compressor_run(dl_compressor_t *c, int enc, const void *in, size_t inlen, dl_buf_t *out)
{
    int fmt;
    if (enc == DL_ENC_GZIP)
        fmt = FMT_GZIP;
    else if (enc == DL_ENC_DEFLATE)
        fmt = FMT_ZLIB;
    else
        return DL_EINVAL;
    if (out->oom)
        return DL_ENOMEM;
    if (in == NULL)
        in = "";

    size_t start = out->len;
    int rc = dl_compressor_impl(c) == DL_COMPRESS_ZLIB ? run_zlib(c, fmt, in, inlen, out)
                                                       : run_libdeflate(c, fmt, in, inlen, out);
    if (rc != 0)
        out->len = start;
    return rc;
}

/* ---- gunzip --------------------------------------------------------------------------------- */

static int gunzip_stream(z_stream *zs, const unsigned char *in, size_t inlen, dl_buf_t *out,
                         size_t start, size_t max_out)
{
    size_t left = inlen;
    for (;;) {
        left = feed_input(zs, in, inlen, left);
        /* Room for one byte past max_out is enough to notice the overflow. */
        size_t produced = out->len - start;
        size_t allowed = max_out - produced + 1;
        if (out->cap == out->len) {
            size_t want = DL_MAX(DL_MAX(produced, inlen * 2), (size_t)GROW_MIN);
            if (dl_buf_reserve(out, DL_MIN(want, allowed)) != 0)
                return DL_ENOMEM;
        }
        uInt room = (uInt)DL_MIN(DL_MIN(out->cap - out->len, allowed), (size_t)UINT_MAX);
        zs->next_out = (Bytef *)out->data + out->len;
        zs->avail_out = room;
        int rc = inflate(zs, Z_NO_FLUSH);
        out->len += room - zs->avail_out;
        if (out->len - start > max_out)
            return DL_ETOOBIG;
        switch (rc) {
        case Z_OK:
            break;
        case Z_STREAM_END:
            if (zs->avail_in == 0 && left == 0)
                return 0;
            /* Another gzip member follows; garbage will fail its header check. */
            if (inflateReset(zs) != Z_OK)
                return DL_ECODEC;
            break;
        case Z_BUF_ERROR:
            /* No progress: out of input means the stream was cut short. */
            if (zs->avail_in == 0 && left == 0)
                return DL_ECODEC;
            break;
        case Z_MEM_ERROR:
            return DL_ENOMEM;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            return DL_ECODEC;
        }
    }
}

int dl_gunzip(const void *in, size_t inlen, dl_buf_t *out, size_t max_out)
{
    if (out->oom)
        return DL_ENOMEM;
    if (inlen == 0)
        return DL_ECODEC;
    if (max_out == SIZE_MAX)
        max_out--;

    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = zalloc_cb;
    zs.zfree = zfree_cb;
    int rc = inflateInit2(&zs, AUTO_WBITS);
    if (rc != Z_OK)
        return rc == Z_MEM_ERROR ? DL_ENOMEM : DL_EIO;
    size_t start = out->len;
    rc = gunzip_stream(&zs, in, inlen, out, start, max_out);
    inflateEnd(&zs);
    if (rc != 0)
        out->len = start;
    return rc;
}

/* ---- fast one-shot gunzip (cache hits for clients without gzip) -------------------------- */

int dl_compressor_gunzip(dl_compressor_t *c, const void *in, size_t inlen, dl_buf_t *out,
                         size_t max_out)
{
    const unsigned char *p = in;
    /* a single gzip member states its size (mod 2^32) in its last four bytes */
    if (c == NULL || inlen < 18 || p[0] != 0x1f || p[1] != 0x8b)
        return dl_gunzip(in, inlen, out, max_out);
    size_t isize = (size_t)p[inlen - 4] | (size_t)p[inlen - 3] << 8 |
                   (size_t)p[inlen - 2] << 16 | (size_t)p[inlen - 1] << 24;
    if (isize > max_out)
        return DL_ETOOBIG;
    if (c->ldd == NULL) {
        pthread_once(&ld_alloc_once, ld_alloc_setup);
        c->ldd = libdeflate_alloc_decompressor();
        if (c->ldd == NULL)
            return dl_gunzip(in, inlen, out, max_out);
    }
    if (dl_buf_reserve(out, isize + 1) != 0)
        return DL_ENOMEM;
    size_t got = 0;
    enum libdeflate_result r = libdeflate_gzip_decompress(c->ldd, in, inlen, out->data + out->len,
                                                          isize, &got);
    if (r != LIBDEFLATE_SUCCESS || got != isize)
        return dl_gunzip(in, inlen, out, max_out); /* multi-member or damaged: the slow path decides */
    out->len += got;
    return 0;
}
