/*
 * test_compress.c - runtime/common/compress.c: Accept-Encoding negotiation, the
 * content-type filter, gzip and zlib-format output from both libraries (checked
 * by zlib's own strict inflate), failure of each allocation in turn, and
 * dl_gunzip's limits and error cases.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/buf.h"
#include "common/compress.h"
#include "common/internal.h"
#include "unit.h"

/* File-local in compress.c, opened to unit builds by DL_STATIC. */
int parse_coding_qvalue(const char *v, size_t n);

static const int impls[] = {DL_COMPRESS_ZLIB, DL_COMPRESS_LIBDEFLATE};
static const int encs[] = {DL_ENC_GZIP, DL_ENC_DEFLATE};

static const char text[] =
    "{\"type\":\"FeatureCollection\",\"features\":[{\"type\":\"Feature\",\"id\":1,"
    "\"properties\":{\"name\":\"alpha\",\"score\":0.5},\"geometry\":{\"type\":\"Point\","
    "\"coordinates\":[13.4,52.5]}},{\"type\":\"Feature\",\"id\":2,\"properties\":"
    "{\"name\":\"beta\",\"score\":0.25},\"geometry\":{\"type\":\"Point\","
    "\"coordinates\":[2.35,48.85]}}]}";

/* ---- helpers -------------------------------------------------------------------------------- */

/* Inflates strictly as one format: windowBits 31 accepts only gzip, 15 only zlib. */
static int inflate_strict(const void *in, size_t inlen, int enc, unsigned char **out,
                          size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, enc == DL_ENC_GZIP ? 31 : 15) != Z_OK)
        return -1;
    size_t cap = 4096, len = 0;
    unsigned char *buf = malloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)inlen;
    int rc;
    do {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        zs.next_out = buf + len;
        zs.avail_out = (uInt)(cap - len);
        rc = inflate(&zs, Z_NO_FLUSH);
        len = cap - zs.avail_out;
    } while (rc == Z_OK || (rc == Z_BUF_ERROR && zs.avail_out == 0));
    /* The stream must end exactly at the end of the input. */
    int ok = rc == Z_STREAM_END && zs.avail_in == 0;
    inflateEnd(&zs);
    *out = buf;
    *outlen = len;
    return ok ? 0 : -1;
}

/* Compresses with one library, encoding and level, and checks the round trip. */
static void roundtrip(int impl, int enc, int level, const void *in, size_t inlen,
                      size_t *zlen_out)
{
    dl_compressor_t *c = dl_compressor_new(level);
    EXPECT(c != NULL);
    if (c == NULL)
        return;
    EXPECT_EQ(dl_compressor_set_impl(c, impl), 0);
    dl_buf_t z = DL_BUF_INIT;
    int rc = dl_compressor_run(c, enc, in, inlen, &z);
    if (rc != 0)
        DL_FAIL_AT("run impl %d enc %d level %d len %zu: %d", impl, enc, level, inlen, rc);
    unsigned char *back = NULL;
    size_t backlen = 0;
    if (inflate_strict(z.data, z.len, enc, &back, &backlen) != 0)
        DL_FAIL_AT("inflate impl %d enc %d level %d len %zu", impl, enc, level, inlen);
    else if (backlen != inlen || (inlen > 0 && memcmp(back, in, inlen) != 0))
        DL_FAIL_AT("mismatch impl %d enc %d level %d: %zu vs %zu", impl, enc, level, backlen,
                   inlen);
    /* dl_gunzip detects either format. */
    dl_buf_t g = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, inlen), 0);
    EXPECT_EQ(g.len, inlen);
    if (g.len == inlen && inlen > 0)
        EXPECT(memcmp(g.data, in, inlen) == 0);
    if (zlen_out != NULL)
        *zlen_out = z.len;
    free(back);
    dl_buf_free(&g);
    dl_buf_free(&z);
    dl_compressor_free(c);
}

static void roundtrip_all(const void *in, size_t inlen, const int *levels, size_t n_levels)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++)
        for (size_t e = 0; e < DL_ARRAY_SIZE(encs); e++)
            for (size_t l = 0; l < n_levels; l++)
                roundtrip(impls[i], encs[e], levels[l], in, inlen, NULL);
}

static unsigned char *random_bytes(size_t n, uint64_t seed)
{
    unsigned char *p = malloc(n);
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

/* Compresses `in` with the given settings into a fresh buffer the caller frees. */
static dl_buf_t compress_with(int impl, int enc, int level, const void *in, size_t inlen)
{
    dl_buf_t z = DL_BUF_INIT;
    dl_compressor_t *c = dl_compressor_new(level);
    dl_compressor_set_impl(c, impl);
    EXPECT_EQ(dl_compressor_run(c, enc, in, inlen, &z), 0);
    dl_compressor_free(c);
    return z;
}

/* ---- compressor ----------------------------------------------------------------------------- */

DL_TEST(compress_gzip_roundtrip)
{
    static const int levels[] = {1, 6, 9};
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++)
        for (size_t l = 0; l < DL_ARRAY_SIZE(levels); l++)
            roundtrip(impls[i], DL_ENC_GZIP, levels[l], text, sizeof(text) - 1, NULL);
}

DL_TEST(compress_deflate_roundtrip)
{
    static const int levels[] = {1, 6, 9};
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++)
        for (size_t l = 0; l < DL_ARRAY_SIZE(levels); l++)
            roundtrip(impls[i], DL_ENC_DEFLATE, levels[l], text, sizeof(text) - 1, NULL);
}

DL_TEST(compress_every_level)
{
    static const int levels[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    roundtrip_all(text, sizeof(text) - 1, levels, DL_ARRAY_SIZE(levels));
}

DL_TEST(compress_empty_input)
{
    static const int levels[] = {1, 6, 9};
    roundtrip_all("", 0, levels, DL_ARRAY_SIZE(levels));
    /* NULL with length 0 is an empty body too. */
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        dl_buf_t z = compress_with(impls[i], DL_ENC_GZIP, 6, NULL, 0);
        EXPECT(z.len >= 20);
        dl_buf_t g = DL_BUF_INIT;
        EXPECT_EQ(dl_gunzip(z.data, z.len, &g, 0), 0);
        EXPECT_EQ(g.len, 0);
        dl_buf_free(&g);
        dl_buf_free(&z);
    }
}

DL_TEST(compress_one_byte)
{
    static const int levels[] = {1, 6, 9};
    roundtrip_all("x", 1, levels, DL_ARRAY_SIZE(levels));
    roundtrip_all("\0", 1, levels, DL_ARRAY_SIZE(levels));
}

DL_TEST(compress_large_random)
{
    static const int levels[] = {1, 9};
    size_t n = 1 << 20;
    unsigned char *in = random_bytes(n, 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        for (size_t e = 0; e < DL_ARRAY_SIZE(encs); e++) {
            for (size_t l = 0; l < DL_ARRAY_SIZE(levels); l++) {
                size_t zlen = 0;
                roundtrip(impls[i], encs[e], levels[l], in, n, &zlen);
                /* Incompressible data costs stored-block overhead, not much more. */
                EXPECT_INT(zlen, <=, n + n / 100 + 64);
            }
        }
    }
    free(in);
}

DL_TEST(compress_large_repetitive)
{
    static const int levels[] = {1, 6, 9};
    size_t n = 1 << 20;
    unsigned char *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (unsigned char)text[i % (sizeof(text) - 1)];
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        for (size_t e = 0; e < DL_ARRAY_SIZE(encs); e++) {
            for (size_t l = 0; l < DL_ARRAY_SIZE(levels); l++) {
                size_t zlen = 0;
                roundtrip(impls[i], encs[e], levels[l], in, n, &zlen);
                /* Deflate's 258-byte matches cap the ratio near 1000:1; level 1 gets ~100:1. */
                EXPECT_INT(zlen, <, n / 50);
            }
        }
    }
    free(in);
}

DL_TEST(compress_gzip_magic)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        dl_buf_t z = compress_with(impls[i], DL_ENC_GZIP, 6, text, sizeof(text) - 1);
        EXPECT(z.len > 18);
        EXPECT_EQ((unsigned char)z.data[0], 0x1f);
        EXPECT_EQ((unsigned char)z.data[1], 0x8b);
        EXPECT_EQ((unsigned char)z.data[2], 8); /* CM = deflate */
        /* The trailer ends with ISIZE, the input length mod 2^32, little-endian. */
        const unsigned char *t = (const unsigned char *)z.data + z.len - 4;
        EXPECT_EQ(t[0] | t[1] << 8 | t[2] << 16 | (uint32_t)t[3] << 24, sizeof(text) - 1);
        dl_buf_free(&z);
    }
}

DL_TEST(compress_zlib_header)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        dl_buf_t z = compress_with(impls[i], DL_ENC_DEFLATE, 6, text, sizeof(text) - 1);
        EXPECT(z.len > 6);
        unsigned char cmf = (unsigned char)z.data[0], flg = (unsigned char)z.data[1];
        EXPECT_EQ(cmf & 0x0f, 8);             /* CM = deflate */
        EXPECT_EQ((cmf * 256 + flg) % 31, 0); /* FCHECK */
        EXPECT_EQ(flg & 0x20, 0);             /* no preset dictionary */
        dl_buf_free(&z);
    }
}

/* One compressor serves many bodies, alternating formats, and appends after what is there. */
DL_TEST(compress_appends_and_reuses)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        dl_compressor_t *c = dl_compressor_new(5);
        EXPECT_EQ(dl_compressor_set_impl(c, impls[i]), 0);
        dl_buf_t z = DL_BUF_INIT;
        for (int round = 0; round < 6; round++) {
            int enc = round % 2 ? DL_ENC_DEFLATE : DL_ENC_GZIP;
            size_t inlen = (sizeof(text) - 1) / (size_t)(round + 1);
            dl_buf_reset(&z);
            EXPECT_EQ(dl_buf_append_str(&z, "HEAD"), 0);
            EXPECT_EQ(dl_compressor_run(c, enc, text, inlen, &z), 0);
            EXPECT_MEM(z.data, 4, "HEAD", 4);
            unsigned char *back = NULL;
            size_t backlen = 0;
            EXPECT_EQ(inflate_strict(z.data + 4, z.len - 4, enc, &back, &backlen), 0);
            EXPECT_MEM(back, backlen, text, inlen);
            free(back);
        }
        dl_buf_free(&z);
        dl_compressor_free(c);
    }
}

DL_TEST(compress_default_impl)
{
    for (int level = 1; level <= 9; level++) {
        dl_compressor_t *c = dl_compressor_new(level);
        EXPECT_EQ(dl_compressor_level(c), level);
        EXPECT_EQ(dl_compressor_impl(c), level <= 3 ? DL_COMPRESS_ZLIB : DL_COMPRESS_LIBDEFLATE);
        EXPECT_EQ(dl_compressor_set_impl(c, DL_COMPRESS_ZLIB), 0);
        EXPECT_EQ(dl_compressor_impl(c), DL_COMPRESS_ZLIB);
        EXPECT_EQ(dl_compressor_set_impl(c, DL_COMPRESS_LIBDEFLATE), 0);
        EXPECT_EQ(dl_compressor_impl(c), DL_COMPRESS_LIBDEFLATE);
        EXPECT_EQ(dl_compressor_set_impl(c, DL_COMPRESS_AUTO), 0);
        EXPECT_EQ(dl_compressor_impl(c), level <= 3 ? DL_COMPRESS_ZLIB : DL_COMPRESS_LIBDEFLATE);
        dl_compressor_free(c);
    }
}

DL_TEST(compress_set_impl_invalid)
{
    dl_compressor_t *c = dl_compressor_new(6);
    EXPECT_EQ(dl_compressor_set_impl(c, 3), DL_EINVAL);
    EXPECT_EQ(dl_compressor_set_impl(c, -1), DL_EINVAL);
    EXPECT_EQ(dl_compressor_impl(c), DL_COMPRESS_LIBDEFLATE);
    dl_compressor_free(c);
}

DL_TEST(compress_bad_enc)
{
    dl_compressor_t *c = dl_compressor_new(6);
    dl_buf_t z = DL_BUF_INIT;
    dl_buf_append_str(&z, "keep");
    EXPECT_EQ(dl_compressor_run(c, DL_ENC_IDENTITY, text, 10, &z), DL_EINVAL);
    EXPECT_EQ(dl_compressor_run(c, DL_ENC_NONE, text, 10, &z), DL_EINVAL);
    EXPECT_EQ(dl_compressor_run(c, 7, text, 10, &z), DL_EINVAL);
    EXPECT_MEM(z.data, z.len, "keep", 4);
    dl_buf_free(&z);
    dl_compressor_free(c);
}

DL_TEST(compress_level_clamp)
{
    static const struct {
        int in, want;
    } cases[] = {{0, 1}, {-1, 1}, {-100, 1}, {1, 1}, {9, 9}, {10, 9}, {42, 9}};
    for (size_t k = 0; k < DL_ARRAY_SIZE(cases); k++) {
        dl_compressor_t *c = dl_compressor_new(cases[k].in);
        EXPECT_EQ(dl_compressor_level(c), cases[k].want);
        dl_compressor_free(c);
        for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++)
            for (size_t e = 0; e < DL_ARRAY_SIZE(encs); e++)
                roundtrip(impls[i], encs[e], cases[k].in, text, sizeof(text) - 1, NULL);
    }
}

DL_TEST(compress_free_null)
{
    dl_compressor_free(NULL);
}

/* A buffer that has already failed stays failed and is not written to. */
DL_TEST(compress_sticky_oom_buf)
{
    dl_compressor_t *c = dl_compressor_new(6);
    dl_buf_t z = DL_BUF_INIT;
    dl_buf_append_str(&z, "ab");
    z.oom = 1;
    EXPECT_EQ(dl_compressor_run(c, DL_ENC_GZIP, text, 10, &z), DL_ENOMEM);
    EXPECT_EQ(dl_gunzip("x", 1, &z, 100), DL_ENOMEM);
    EXPECT_EQ(z.len, 2);
    dl_buf_free(&z);
    dl_compressor_free(c);
}

/* ---- allocation failure --------------------------------------------------------------------- */

static long alloc_fail_at; /* 1-based allocation that fails; 0 never */
static long alloc_count;
static long alloc_live;

static void *oom_malloc(size_t n)
{
    if (++alloc_count == alloc_fail_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        alloc_live++;
    return p;
}

static void *oom_realloc(void *p, size_t n)
{
    if (++alloc_count == alloc_fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q && p == NULL)
        alloc_live++;
    return q;
}

static void oom_free(void *p)
{
    alloc_live--;
    free(p);
}

/* One full use of the module: compress both formats, then gunzip. Returns 0 or an error. */
static int oom_scenario(int impl)
{
    dl_compressor_t *c = dl_compressor_new(6);
    if (c == NULL)
        return DL_ENOMEM;
    int rc = dl_compressor_set_impl(c, impl);
    dl_buf_t z = DL_BUF_INIT, g = DL_BUF_INIT;
    for (size_t e = 0; e < DL_ARRAY_SIZE(encs) && rc == 0; e++) {
        dl_buf_reset(&z);
        rc = dl_compressor_run(c, encs[e], text, sizeof(text) - 1, &z);
        if (rc != 0)
            EXPECT_EQ(z.len, 0);
    }
    if (rc == 0) {
        rc = dl_gunzip(z.data, z.len, &g, 1 << 20);
        if (rc == 0)
            EXPECT_MEM(g.data, g.len, text, sizeof(text) - 1);
        else
            EXPECT_EQ(g.len, 0);
    }
    dl_buf_free(&g);
    dl_buf_free(&z);
    dl_compressor_free(c);
    return rc;
}

DL_TEST(compress_oom)
{
    dl_set_allocator(oom_malloc, oom_realloc, oom_free);
    for (size_t i = 0; i < DL_ARRAY_SIZE(impls); i++) {
        int done = 0;
        for (long n = 1; n < 200 && !done; n++) {
            alloc_fail_at = n;
            alloc_count = 0;
            alloc_live = 0;
            int rc = oom_scenario(impls[i]);
            if (alloc_live != 0)
                DL_FAIL_AT("impl %d, allocation %ld failed: %ld blocks leaked", impls[i], n,
                           alloc_live);
            if (alloc_count < n) {
                EXPECT_EQ(rc, 0); /* no failure was injected */
                done = 1;
            } else if (rc != DL_ENOMEM) {
                DL_FAIL_AT("impl %d, allocation %ld failed: rc %d", impls[i], n, rc);
            }
        }
        EXPECT(done);
    }
    alloc_fail_at = 0;
}

/* ---- gunzip --------------------------------------------------------------------------------- */

DL_TEST(gunzip_roundtrip)
{
    dl_buf_t z = compress_with(DL_COMPRESS_ZLIB, DL_ENC_GZIP, 6, text, sizeof(text) - 1);
    dl_buf_t g = DL_BUF_INIT;
    dl_buf_append_str(&g, "pre:");
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, sizeof(text) - 1), 0);
    EXPECT_EQ(g.len, 4 + sizeof(text) - 1);
    EXPECT_MEM(g.data + 4, g.len - 4, text, sizeof(text) - 1);
    EXPECT_MEM(g.data, 4, "pre:", 4);
    dl_buf_free(&g);
    dl_buf_free(&z);
}

DL_TEST(gunzip_zlib_format)
{
    dl_buf_t z = compress_with(DL_COMPRESS_LIBDEFLATE, DL_ENC_DEFLATE, 6, text, sizeof(text) - 1);
    dl_buf_t g = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, SIZE_MAX), 0);
    EXPECT_MEM(g.data, g.len, text, sizeof(text) - 1);
    dl_buf_free(&g);
    dl_buf_free(&z);
}

DL_TEST(gunzip_max_out)
{
    size_t n = 1 << 20;
    unsigned char *in = malloc(n);
    memset(in, 'a', n);
    dl_buf_t z = compress_with(DL_COMPRESS_ZLIB, DL_ENC_GZIP, 9, in, n);
    EXPECT_INT(z.len, <, 4096); /* a small body that expands a lot */
    dl_buf_t g = DL_BUF_INIT;
    dl_buf_append_str(&g, "x");
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, 100), DL_ETOOBIG);
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, 0), DL_ETOOBIG);
    EXPECT_EQ(g.len, 1);
    /* The limit is checked as the output grows, not after inflating everything. */
    EXPECT_INT(g.cap, <=, 256);
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, n - 1), DL_ETOOBIG);
    EXPECT_EQ(g.len, 1);
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, n), 0);
    EXPECT_EQ(g.len, n + 1);
    EXPECT(memcmp(g.data + 1, in, n) == 0);
    dl_buf_free(&g);
    dl_buf_free(&z);
    free(in);
}

DL_TEST(gunzip_corrupt)
{
    dl_buf_t z = compress_with(DL_COMPRESS_ZLIB, DL_ENC_GZIP, 6, text, sizeof(text) - 1);
    dl_buf_t g = DL_BUF_INIT;
    /* A flipped byte in the body or the CRC must be caught. */
    z.data[z.len / 2] ^= 0x55;
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, SIZE_MAX), DL_ECODEC);
    z.data[z.len / 2] ^= 0x55;
    z.data[z.len - 6] ^= 0x01;
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, SIZE_MAX), DL_ECODEC);
    EXPECT_EQ(dl_gunzip("not compressed at all", 21, &g, SIZE_MAX), DL_ECODEC);
    EXPECT_EQ(g.len, 0);
    dl_buf_free(&g);
    dl_buf_free(&z);
}

DL_TEST(gunzip_truncated)
{
    dl_buf_t z = compress_with(DL_COMPRESS_LIBDEFLATE, DL_ENC_GZIP, 6, text, sizeof(text) - 1);
    dl_buf_t g = DL_BUF_INIT;
    for (size_t cut = 1; cut < z.len; cut++) {
        int rc = dl_gunzip(z.data, cut, &g, SIZE_MAX);
        if (rc != DL_ECODEC)
            DL_FAIL_AT("cut at %zu of %zu: rc %d", cut, z.len, rc);
        EXPECT_EQ(g.len, 0);
    }
    dl_buf_free(&g);
    dl_buf_free(&z);
}

DL_TEST(gunzip_empty_input)
{
    dl_buf_t g = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip("", 0, &g, SIZE_MAX), DL_ECODEC);
    EXPECT_EQ(dl_gunzip(NULL, 0, &g, SIZE_MAX), DL_ECODEC);
    EXPECT_EQ(g.len, 0);
    dl_buf_free(&g);
}

/* Concatenated gzip members decode as one body, as gunzip(1) does. */
DL_TEST(gunzip_multi_member)
{
    dl_buf_t a = compress_with(DL_COMPRESS_ZLIB, DL_ENC_GZIP, 6, "hello, ", 7);
    dl_buf_t b = compress_with(DL_COMPRESS_LIBDEFLATE, DL_ENC_GZIP, 6, "world", 5);
    dl_buf_append(&a, b.data, b.len);
    dl_buf_t g = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(a.data, a.len, &g, 100), 0);
    EXPECT_MEM(g.data, g.len, "hello, world", 12);
    dl_buf_reset(&g);
    EXPECT_EQ(dl_gunzip(a.data, a.len, &g, 11), DL_ETOOBIG);
    dl_buf_free(&g);
    dl_buf_free(&a);
    dl_buf_free(&b);
}

DL_TEST(gunzip_trailing_garbage)
{
    dl_buf_t z = compress_with(DL_COMPRESS_ZLIB, DL_ENC_GZIP, 6, text, sizeof(text) - 1);
    dl_buf_append_str(&z, "garbage!");
    dl_buf_t g = DL_BUF_INIT;
    EXPECT_EQ(dl_gunzip(z.data, z.len, &g, SIZE_MAX), DL_ECODEC);
    EXPECT_EQ(g.len, 0);
    dl_buf_free(&g);
    dl_buf_free(&z);
}

/* ---- negotiation ---------------------------------------------------------------------------- */

static void check_neg(const char *header, int want)
{
    int got = dl_compress_negotiate(header, header ? strlen(header) : 0);
    if (got != want)
        DL_FAIL_AT("negotiate(\"%s\"): %d, want %d", header ? header : "(null)", got, want);
}

DL_TEST(negotiate_basic)
{
    check_neg("gzip", DL_ENC_GZIP);
    check_neg("deflate", DL_ENC_DEFLATE);
    check_neg("x-gzip", DL_ENC_GZIP);
    check_neg("br", DL_ENC_IDENTITY);
    check_neg("br, zstd", DL_ENC_IDENTITY);
    check_neg("gzip, deflate, br, zstd", DL_ENC_GZIP);
    check_neg("deflate, gzip", DL_ENC_GZIP);
    check_neg("compress, deflate", DL_ENC_DEFLATE);
    check_neg("identity", DL_ENC_IDENTITY);
}

DL_TEST(negotiate_empty)
{
    check_neg(NULL, DL_ENC_IDENTITY);
    check_neg("", DL_ENC_IDENTITY);
    check_neg("   ", DL_ENC_IDENTITY);
    check_neg(" , ,, ", DL_ENC_IDENTITY);
    EXPECT_EQ(dl_compress_negotiate(NULL, 10), DL_ENC_IDENTITY);
}

DL_TEST(negotiate_qvalues)
{
    check_neg("gzip;q=0, deflate", DL_ENC_DEFLATE);
    check_neg("deflate;q=0.5, gzip;q=0.4", DL_ENC_DEFLATE);
    check_neg("deflate;q=0.4, gzip;q=0.5", DL_ENC_GZIP);
    check_neg("deflate;q=0.5, gzip;q=0.5", DL_ENC_GZIP); /* tie: gzip */
    check_neg("deflate, gzip;q=1.000", DL_ENC_GZIP);
    check_neg("gzip;q=0.001", DL_ENC_GZIP);
    check_neg("gzip;q=0.000", DL_ENC_IDENTITY);
    check_neg("gzip;q=0.", DL_ENC_IDENTITY);
    check_neg("gzip;q=1.", DL_ENC_GZIP);
    check_neg("gzip;q=0, deflate;q=0", DL_ENC_IDENTITY);
    check_neg("gzip;q=0, deflate;q=0, identity;q=0", DL_ENC_NONE);
    check_neg("deflate;q=0.9, gzip;q=0.95, br", DL_ENC_GZIP);
    /* Listed twice: the higher q counts. */
    check_neg("gzip;q=0, gzip;q=0.5, deflate;q=0.4", DL_ENC_GZIP);
    check_neg("gzip;Q=0, deflate", DL_ENC_DEFLATE);
}

DL_TEST(negotiate_bad_qvalues)
{
    /* A malformed q counts as q=0. */
    check_neg("gzip;q=abc", DL_ENC_IDENTITY);
    check_neg("gzip;q=1.5", DL_ENC_IDENTITY);
    check_neg("gzip;q=1.001", DL_ENC_IDENTITY);
    check_neg("gzip;q=2", DL_ENC_IDENTITY);
    check_neg("gzip;q=.5", DL_ENC_IDENTITY);
    check_neg("gzip;q=0.1234", DL_ENC_IDENTITY);
    check_neg("gzip;q=-1", DL_ENC_IDENTITY);
    check_neg("gzip;q=", DL_ENC_IDENTITY);
    check_neg("gzip;q", DL_ENC_IDENTITY);
    check_neg("gzip;q=\"0.5\"", DL_ENC_IDENTITY);
    check_neg("gzip;q=0.5x", DL_ENC_IDENTITY);
    check_neg("gzip;q=abc, deflate;q=0.1", DL_ENC_DEFLATE);
    check_neg("*;q=bad, identity", DL_ENC_IDENTITY);
    check_neg("*;q=bad", DL_ENC_NONE);
}

DL_TEST(negotiate_wildcard)
{
    check_neg("*", DL_ENC_GZIP);
    check_neg("*;q=0", DL_ENC_NONE);
    check_neg("*;q=0, identity", DL_ENC_IDENTITY);
    check_neg("*;q=0, identity;q=0.5", DL_ENC_IDENTITY);
    check_neg("*;q=0, deflate", DL_ENC_DEFLATE);
    check_neg("gzip;q=0, *", DL_ENC_DEFLATE);
    check_neg("*, gzip;q=0.5", DL_ENC_DEFLATE);
    check_neg("*;q=0.5, gzip", DL_ENC_GZIP);
    check_neg("br;q=1, *;q=0.1", DL_ENC_GZIP);
}

DL_TEST(negotiate_identity)
{
    check_neg("identity;q=0", DL_ENC_NONE);
    check_neg("identity;q=0, gzip", DL_ENC_GZIP);
    check_neg("identity;q=0, br", DL_ENC_NONE);
    /* An explicit, strictly higher preference for identity is honoured. */
    check_neg("identity;q=1, gzip;q=0.5", DL_ENC_IDENTITY);
    check_neg("identity, gzip", DL_ENC_GZIP);
    check_neg("identity;q=0.5, gzip;q=0.5", DL_ENC_GZIP);
}

DL_TEST(negotiate_case_and_space)
{
    check_neg("GZip", DL_ENC_GZIP);
    check_neg("DEFLATE", DL_ENC_DEFLATE);
    check_neg("X-GZIP", DL_ENC_GZIP);
    check_neg(" gzip ; q=1.0 ", DL_ENC_GZIP);
    check_neg("\tgzip\t;\tq=0.5\t,\tdeflate;q=0.6", DL_ENC_DEFLATE);
    check_neg("gzip ;q = 0 , deflate", DL_ENC_DEFLATE);
    check_neg("gzip,deflate", DL_ENC_GZIP);
}

DL_TEST(negotiate_garbage)
{
    check_neg("garbage", DL_ENC_IDENTITY);
    check_neg(";;;,,,===", DL_ENC_IDENTITY);
    check_neg("\"gzip\"", DL_ENC_IDENTITY);
    check_neg("gzip/1.1", DL_ENC_IDENTITY);
    check_neg("gzip deflate", DL_ENC_IDENTITY);
    check_neg("gzip;q=0.5 junk, deflate;q=0.1", DL_ENC_DEFLATE);
    check_neg("\x01\x02\xff, gzip", DL_ENC_GZIP);
    check_neg("gzipx, xgzip, gzi, deflat, x-deflate", DL_ENC_IDENTITY);
    /* Quoted parameter values may hold commas and semicolons. */
    check_neg("gzip;foo=\"a,b;q=0\";q=0.3, deflate;q=0.2", DL_ENC_GZIP);
    check_neg("gzip;foo=\"unterminated, deflate", DL_ENC_GZIP);
    check_neg("gzip;level=9", DL_ENC_GZIP);
    check_neg("gzip;", DL_ENC_GZIP);
}

/* Only len bytes are read; the value need not be NUL-terminated. */
DL_TEST(negotiate_length_bound)
{
    EXPECT_EQ(dl_compress_negotiate("gzipXXXX", 4), DL_ENC_GZIP);
    EXPECT_EQ(dl_compress_negotiate("gzip;q=0, deflate", 8), DL_ENC_IDENTITY);
    EXPECT_EQ(dl_compress_negotiate("deflate, gzip", 7), DL_ENC_DEFLATE);
    char *h = malloc(7); /* heap, so the sanitizer sees any overread */
    memcpy(h, "deflate", 7);
    EXPECT_EQ(dl_compress_negotiate(h, 7), DL_ENC_DEFLATE);
    memcpy(h, "gzip;q=", 7);
    EXPECT_EQ(dl_compress_negotiate(h, 7), DL_ENC_IDENTITY);
    memcpy(h, "gzip;q\"", 7);
    EXPECT_EQ(dl_compress_negotiate(h, 7), DL_ENC_IDENTITY);
    memcpy(h, "*;a=\"\\\"", 7);
    EXPECT_EQ(dl_compress_negotiate(h, 7), DL_ENC_GZIP);
    free(h);
}

DL_TEST(negotiate_parse_qvalue)
{
    EXPECT_EQ(parse_coding_qvalue("0", 1), 0);
    EXPECT_EQ(parse_coding_qvalue("1", 1), 1000);
    EXPECT_EQ(parse_coding_qvalue("0.5", 3), 500);
    EXPECT_EQ(parse_coding_qvalue("0.05", 4), 50);
    EXPECT_EQ(parse_coding_qvalue("0.123", 5), 123);
    EXPECT_EQ(parse_coding_qvalue("1.000", 5), 1000);
    EXPECT_EQ(parse_coding_qvalue("1.0", 3), 1000);
    EXPECT_EQ(parse_coding_qvalue("1.01", 4), -1);
    EXPECT_EQ(parse_coding_qvalue("0.1234", 6), -1);
    EXPECT_EQ(parse_coding_qvalue("", 0), -1);
    EXPECT_EQ(parse_coding_qvalue("01", 2), -1);
}

/* ---- content types -------------------------------------------------------------------------- */

static void check_type(const char *type, int want)
{
    int got = dl_compress_type_ok(type, type ? strlen(type) : 0);
    if (got != want)
        DL_FAIL_AT("type_ok(\"%s\"): %d, want %d", type ? type : "(null)", got, want);
}

DL_TEST(type_ok_compressible)
{
    check_type(NULL, 1);
    check_type("", 1);
    check_type("application/json", 1);
    check_type("application/json; charset=utf-8", 1);
    check_type("text/html", 1);
    check_type("text/plain;charset=us-ascii", 1);
    check_type("application/javascript", 1);
    check_type("application/wasm", 1);
    check_type("image/svg+xml", 1);
    check_type("IMAGE/SVG+XML; charset=utf-8", 1);
    check_type("application/x-msgpack", 1);
    check_type("font/ttf", 1);
    check_type("application/zipper", 1);
    check_type("application/pdfx", 1);
    check_type("imagex/png", 1);
}

DL_TEST(type_ok_precompressed)
{
    static const char *const no[] = {
        "image/png", "image/jpeg", "image/webp", "image/avif", "image/gif", "image/svg",
        "video/mp4", "audio/mpeg", "font/woff", "font/woff2", "application/zip",
        "application/gzip", "application/x-gzip", "application/zstd",
        "application/x-7z-compressed", "application/x-rar-compressed",
        "application/octet-stream", "application/pdf", "application/x-bzip2",
    };
    for (size_t k = 0; k < DL_ARRAY_SIZE(no); k++)
        check_type(no[k], 0);
    check_type("IMAGE/PNG", 0);
    check_type("Application/Octet-Stream; foo=bar", 0);
    check_type("  application/pdf  ;x=1", 0);
    check_type("video/webm;codecs=vp9", 0);
    check_type("image/", 0);
}

/* Only len bytes are read. */
DL_TEST(type_ok_length_bound)
{
    EXPECT_EQ(dl_compress_type_ok("image/pngXXX", 9), 0);
    EXPECT_EQ(dl_compress_type_ok("font/woff2", 9), 0);
    EXPECT_EQ(dl_compress_type_ok("image/svg+xml", 9), 0);
    EXPECT_EQ(dl_compress_type_ok("application/pdf", 0), 1);
}
