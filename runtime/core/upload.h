/*
 * upload.h - a request body streamed into files as it arrives: the
 * multipart/form-data parser (multipart.h) feeds each file part into its own
 * temporary file, chunk by chunk, with its size and SHA-256; small non-file
 * fields are kept in memory. Memory per upload is a fixed write buffer
 * whatever the file size. What the handler does not keep is deleted when the
 * upload is freed (request done, client gone, limit crossed).
 */
#ifndef DL_UPLOAD_H
#define DL_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define DL_UPLOAD_DEFAULT_MAX (50 * 1024 * 1024) /* per file, with upload = true */
#define DL_UPLOAD_MAX_FILES 16
#define DL_UPLOAD_MAX_FIELDS_BYTES (256 * 1024) /* all non-file fields together */

typedef struct {
    char field[256];
    char filename[256];     /* as sent; sanitise before use */
    char content_type[128]; /* as sent: the uploader's claim, never served as is
                             * (scripts/devloop/files.lua decides what goes out) */
    char path[1200];        /* the temporary file */
    uint64_t size;
    char sha256[65];        /* hex */
} dl_upload_file_t;

typedef struct dl_upload_s dl_upload_t;

/**
 * Starts an upload whose temporary files go to dir (created if missing) with
 * names starting with prefix (the request id). boundary comes from
 * dl_multipart_boundary(); a file over max_file bytes stops the upload with
 * DL_ETOOBIG. Returns 0 and *out, or DL_ENOMEM / DL_EIO.
 */
int dl_upload_new(const char *dir, const char *prefix, const char *boundary, size_t blen,
                  uint64_t max_file, dl_upload_t **out);

/**
 * Parses and writes len more body bytes. Returns 0, DL_EINVAL for a malformed
 * body, DL_ETOOBIG when the non-file fields or the number of files are over
 * their limits, DL_EIO when a file cannot be written. The message is in
 * dl_upload_error(). Writes are synchronous, as nginx writes client body
 * temporary files: a page-cache write of 64 KB costs microseconds.
 */
int dl_upload_feed(dl_upload_t *u, const char *data, size_t len);

/** At the end of the body: 0, or DL_EINVAL when it ended inside a part. */
int dl_upload_finish(dl_upload_t *u);

const char *dl_upload_error(const dl_upload_t *u);
/** The HTTP status for a failed feed or finish: 400 malformed, 413 too big, 503, 500. */
int dl_upload_status(int rc);

/** The files received, in order; valid until dl_upload_free(). */
int dl_upload_files(dl_upload_t *u, dl_upload_file_t **files);

/**
 * The non-file fields in one buffer, n of them, each as a name then a value,
 * each a native-endian uint32 length followed by that many bytes.
 */
const dl_buf_t *dl_upload_fields(const dl_upload_t *u, int *n);

/**
 * Closes and deletes the temporary files and frees u; NULL is a no-op. A
 * handler keeps a file by renaming it away first (names are unique per
 * upload, so nothing else is ever at that path).
 */
void dl_upload_free(dl_upload_t *u);

/**
 * Deletes the temporary files in dir older than max_age_s seconds: what a
 * process killed mid-upload left (live uploads write all the time, so their
 * files are never that old). Returns how many went.
 */
int dl_upload_sweep(const char *dir, int max_age_s);

#endif
