/*
 * multipart.h - a streaming multipart/form-data parser (RFC 7578 over RFC
 * 2046) for request bodies read from the socket in chunks of any size. Part
 * data goes to a callback as soon as it is known not to be a delimiter; the
 * parser never buffers it and never allocates. All state is one fixed-size
 * struct the caller owns.
 */
#ifndef DL_MULTIPART_H
#define DL_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define DL_MULTIPART_MAX_BOUNDARY 70   /* RFC 2046 */
#define DL_MULTIPART_MAX_HEADERS 8192  /* bytes of one part's header block */

/* The headers of one part, NUL-terminated. Names, filenames and content types
 * that do not fit are a malformed body (DL_EINVAL), never truncated. */
typedef struct {
    char name[256];          /* form field name from Content-Disposition (name="..."), never "" */
    char filename[256];      /* filename="..." as sent (not sanitised), "" if none */
    int has_filename;        /* 1 when the part had a filename parameter (even empty) */
    char content_type[128];  /* the part's Content-Type, "" if none */
} dl_multipart_part_t;

/* Callbacks; any may be NULL. A negative return stops the parser: the feed
 * call returns that code, and so does every later call. Callbacks must not
 * call dl_multipart_feed() or dl_multipart_finish() on the same parser. */
typedef struct {
    /* a part's headers were read; return 0 to go on, or a negative DL_E* to stop.
     * part is borrowed: valid until the next part's headers are read. */
    int (*on_part_begin)(void *arg, const dl_multipart_part_t *part);
    /* some of the current part's bytes, in order; may be called many times.
     * data is borrowed for the duration of the call. */
    int (*on_part_data)(void *arg, const char *data, size_t len);
    /* the current part ended (its delimiter was seen) */
    int (*on_part_end)(void *arg);
} dl_multipart_cbs_t;

#define DL_MULTIPART_DELIM_MAX (4 + DL_MULTIPART_MAX_BOUNDARY) /* "\r\n--" boundary */

typedef struct dl_multipart_s {
    /* read-only for the caller */
    uint64_t parts;          /* parts whose headers were read (on_part_begin calls) */
    uint64_t data_bytes;     /* part data bytes delivered to on_part_data */
    const char *error;       /* short reason once an error is set, else NULL; static storage */

    /* private */
    dl_multipart_cbs_t _cbs;
    void *_arg;
    int _state;
    int _rc;                 /* sticky error code, 0 while healthy */
    size_t _dlen;            /* length of _delim */
    size_t _matched;         /* bytes of _delim matched (held back, not yet delivered) */
    size_t _virtual;         /* leading held bytes that are an assumed CRLF, not data */
    size_t _hlen;            /* bytes in _hdr */
    char _delim[DL_MULTIPART_DELIM_MAX];
    uint8_t _fail[DL_MULTIPART_DELIM_MAX + 1]; /* KMP failure function of _delim */
    dl_multipart_part_t _part;
    char _hdr[DL_MULTIPART_MAX_HEADERS];
} dl_multipart_t;

/*
 * Copies the boundary parameter of a multipart/form-data Content-Type value
 * (quoted or not, case-insensitive media type and parameter name) into out,
 * NUL-terminated; out needs DL_MULTIPART_MAX_BOUNDARY + 1 bytes at most.
 * Returns its length, or DL_EINVAL when the type is not multipart/form-data,
 * the boundary is missing, given twice, empty, longer than 70, has characters
 * outside RFC 2046's bchars or ends in a space, or does not fit in outlen.
 */
int dl_multipart_boundary(const char *content_type, size_t len, char *out, size_t outlen);

/*
 * Prepares m to parse a body delimited by boundary (blen bytes, without the
 * leading "--"); boundary is copied, cbs is copied, arg is passed to every
 * callback. A boundary that is empty or longer than DL_MULTIPART_MAX_BOUNDARY
 * makes every later call fail with DL_EINVAL. There is nothing to close.
 */
void dl_multipart_init(dl_multipart_t *m, const char *boundary, size_t blen,
                       const dl_multipart_cbs_t *cbs, void *arg);

/*
 * Parses len more bytes of the body; chunks may split anything anywhere.
 * A delimiter is "--" boundary at the start of a line: at the start of the
 * body, after a CRLF in the preamble or the data, or straight after a part's
 * empty header line (then the part has no data). After it come "--" (the
 * end) or optional spaces and tabs and CRLF; anything else is malformed.
 * Returns 0; DL_EINVAL for a malformed body; DL_ETOOBIG when a part's header
 * block (up to and including its empty line) exceeds DL_MULTIPART_MAX_HEADERS;
 * or the negative code a callback returned. Errors set a short reason in
 * m->error, and after an error every later call returns the same code. Bytes
 * after the closing delimiter (the epilogue) are ignored.
 */
int dl_multipart_feed(dl_multipart_t *m, const char *data, size_t len);

/*
 * At the end of the body: 0 if the closing delimiter "--boundary--" was seen,
 * else DL_EINVAL ("body ended inside a part"), or the earlier error if any.
 */
int dl_multipart_finish(dl_multipart_t *m);

#endif
