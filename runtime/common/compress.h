/*
 * compress.h - response compression: Accept-Encoding negotiation, the
 * content types worth compressing, a per-thread one-shot compressor (gzip and
 * HTTP "deflate", i.e. the zlib format) over zlib or libdeflate, and gunzip.
 */
#ifndef DL_COMPRESS_H
#define DL_COMPRESS_H

#include <stddef.h>

#include "common/buf.h"

/* Content codings, as chosen by dl_compress_negotiate(). */
enum { DL_ENC_IDENTITY = 0, DL_ENC_GZIP = 1, DL_ENC_DEFLATE = 2, DL_ENC_NONE = -1 };

/* Libraries behind a compressor. AUTO picks by level (see dl_compressor_set_impl()). */
enum { DL_COMPRESS_AUTO = 0, DL_COMPRESS_ZLIB = 1, DL_COMPRESS_LIBDEFLATE = 2 };

#define DL_COMPRESS_LEVEL_MIN 1
#define DL_COMPRESS_LEVEL_MAX 9

/**
 * Picks a response coding from an Accept-Encoding field value (RFC 9110
 * 12.5.3). Borrows `accept_encoding` for the call; it need not be
 * NUL-terminated and only `len` bytes are read.
 *
 * Codings are matched case-insensitively; "x-gzip" counts as gzip. A q-value
 * follows the RFC grammar ("0", "0.5", "1", "1.000"; at most three decimals,
 * never above 1); an entry whose q is malformed ("q=abc", "q=1.5", "q=.5",
 * "q=0.1234", a quoted q) counts as q=0, so a broken header never turns
 * compression on. Entries that are not a token followed by parameters are
 * ignored, as are unknown codings and parameters. When a coding is listed
 * twice the higher q counts. "*" gives its q to every coding not listed.
 *
 * Returns DL_ENC_GZIP or DL_ENC_DEFLATE for the acceptable one with the higher
 * q (gzip on a tie), unless identity is given a strictly higher q explicitly
 * ("identity;q=1, gzip;q=0.5" or through "*"); DL_ENC_IDENTITY when neither is
 * acceptable and identity is, which it is unless refused by "identity;q=0", or
 * by "*;q=0" with no identity entry; DL_ENC_NONE when nothing is acceptable
 * (the caller decides, usually identity anyway or 406). A NULL, empty or
 * unparseable value gives DL_ENC_IDENTITY. Never allocates; any thread.
 */
int dl_compress_negotiate(const char *accept_encoding, size_t len);

/**
 * Returns 0 when a Content-Type is not worth compressing because the format
 * is compressed already: image/ (except image/svg+xml), video/, audio/,
 * font/woff, font/woff2, application/zip, gzip, x-gzip, zstd,
 * x-7z-compressed, x-rar-compressed, octet-stream, pdf and x-bzip2. Returns 1
 * otherwise, including for NULL or empty. Case-insensitive; parameters after
 * ';' and surrounding whitespace are ignored. Borrows the value for the call.
 */
int dl_compress_type_ok(const char *content_type, size_t len);

/* A one-shot compressor holding reusable library state. One per thread. */
typedef struct dl_compressor_s dl_compressor_t;

/**
 * Allocates a compressor for `level`; levels outside 1..9 are clamped into it.
 * Library state is allocated on first use of each format. Returns NULL when
 * out of memory. Not thread-safe: give each worker thread its own.
 */
dl_compressor_t *dl_compressor_new(int level);

/** Frees the compressor and its library state. NULL is a no-op. */
void dl_compressor_free(dl_compressor_t *c);

/**
 * Chooses the library: DL_COMPRESS_ZLIB, DL_COMPRESS_LIBDEFLATE or
 * DL_COMPRESS_AUTO (the default), which uses the one measured faster at the
 * compressor's level by tests/bench/bench_compress.c on a 27 kB JSON body:
 * zlib for levels 1..3, libdeflate for 4..9. Output bytes differ between the
 * two; both decode with any inflater. Returns 0 or DL_EINVAL.
 */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_compressor_set_impl(dl_compressor_t *c, int impl);
#endif

/** The library the next dl_compressor_run() will use: ZLIB or LIBDEFLATE. */
int dl_compressor_impl(const dl_compressor_t *c);

/** The level, after clamping. */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_compressor_level(const dl_compressor_t *c);
#endif

/**
 * Appends to `out` the whole of `in` encoded as gzip (RFC 1952, enc
 * DL_ENC_GZIP) or as the zlib format (RFC 1950, DL_ENC_DEFLATE, which is what
 * HTTP calls "deflate"). Borrows `in` for the call. Returns 0; DL_EINVAL for
 * another `enc`; DL_ENOMEM; or DL_EIO if the library fails. On error `out`
 * keeps its previous length (its `oom` flag may be set).
 */
int dl_compressor_run(dl_compressor_t *c, int enc, const void *in, size_t inlen, dl_buf_t *out);

/**
 * Appends to `out` the decoding of a gzip or zlib stream (detected from the
 * header); concatenated gzip members are decoded one after another, as gunzip
 * does. Returns 0; DL_ETOOBIG once the output would pass `max_out` bytes;
 * DL_ECODEC for a corrupt, truncated or empty stream or trailing garbage;
 * DL_ENOMEM. On error `out` keeps its previous length. Any thread.
 */
int dl_gunzip(const void *in, size_t inlen, dl_buf_t *out, size_t max_out);

/**
 * Appends the decompression of a whole gzip body to out with libdeflate (about
 * 3x zlib's inflate), falling back to dl_gunzip() for what it cannot do in one
 * shot (several members, a damaged trailer). Same returns as dl_gunzip().
 */
int dl_compressor_gunzip(dl_compressor_t *c, const void *in, size_t inlen, dl_buf_t *out,
                         size_t max_out);

#endif /* DL_COMPRESS_H */
