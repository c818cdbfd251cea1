/*
 * upload.c - multipart/form-data bodies streamed into temporary files.
 *
 * The connection hands every body chunk to dl_upload_feed(), which runs the
 * streaming multipart parser; a file part opens a temporary file (O_EXCL,
 * 0600) and its bytes go through one 64 KB buffer into it, hashed on the way
 * (SHA-256, the download's ETag). Writes are plain write(2) on the loop
 * thread, as nginx writes client_body_temp files: page-cache writes of this
 * size take microseconds, and there is then no write queue to bound. Fields
 * without a filename are kept in memory up to DL_UPLOAD_MAX_FIELDS_BYTES.
 * dl_upload_free() deletes every file the handler did not move, so a body cut
 * off by the client or by a limit leaves nothing behind.
 */
#include "core/upload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/internal.h"
#include "core/multipart.h"

#define WBUF_SIZE (64 * 1024)

struct dl_upload_s {
    dl_multipart_t mp;
    char dir[1024];
    char prefix[80];
    dl_upload_file_t files[DL_UPLOAD_MAX_FILES];
    int n_files;
    uint64_t max_file;
    int fd;               /* the current file part's, or -1 */
    EVP_MD_CTX *sha;
    char *wbuf;
    size_t wlen;
    int in_field;         /* the current part is a non-file field */
    dl_buf_t fields;      /* (u32 length, bytes) of name then value, per field */
    size_t vlen_off;      /* where the current field's value length goes */
    int n_fields;
    char error[160];
};

static int fail(dl_upload_t *u, int rc, const char *fmt, const char *arg)
{
    snprintf(u->error, sizeof(u->error), fmt, arg);
    return rc;
}

static int write_all(dl_upload_t *u)
{
    int e = dl_write_all(u->fd, u->wbuf, u->wlen);
    u->wlen = 0;
    return e ? fail(u, DL_EIO, "cannot write the uploaded file: %s", strerror(e)) : 0;
}

static int on_part_begin(void *arg, const dl_multipart_part_t *part)
{
    dl_upload_t *u = arg;
    if (!part->has_filename) {
        u->in_field = 1;
        uint32_t nl = (uint32_t)strlen(part->name), zero = 0;
        if (dl_buf_append(&u->fields, &nl, 4) != 0 ||
            dl_buf_append(&u->fields, part->name, nl) != 0 ||
            dl_buf_append(&u->fields, &zero, 4) != 0)
            return fail(u, DL_ENOMEM, "%s", "out of memory");
        u->vlen_off = u->fields.len - 4;
        if (u->fields.len > DL_UPLOAD_MAX_FIELDS_BYTES)
            return fail(u, DL_ETOOBIG, "%s", "form fields too large");
        return 0;
    }
    if (u->n_files == DL_UPLOAD_MAX_FILES)
        return fail(u, DL_ETOOBIG, "%s", "too many files in one request");
    dl_upload_file_t *f = &u->files[u->n_files];
    memset(f, 0, sizeof(*f));
    snprintf(f->field, sizeof(f->field), "%s", part->name);
    snprintf(f->filename, sizeof(f->filename), "%s", part->filename);
    snprintf(f->content_type, sizeof(f->content_type), "%s",
             part->content_type[0] ? part->content_type : "application/octet-stream");
    snprintf(f->path, sizeof(f->path), "%s/%s-%d.part", u->dir, u->prefix, u->n_files);
    u->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (u->fd < 0 && errno == ENOENT) {
        /* the folder (made at start) was removed: make it and its parent again */
        char parent[sizeof(u->dir)];
        snprintf(parent, sizeof(parent), "%s", u->dir);
        char *slash = strrchr(parent, '/');
        if (slash)
            *slash = '\0';
        (void)mkdir(parent, 0755);
        (void)mkdir(u->dir, 0700);
        u->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (u->fd < 0)
        return fail(u, DL_EIO, "cannot create the upload file: %s", strerror(errno));
    u->n_files++;
    u->in_field = 0;
    EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL);
    return 0;
}

static int on_part_data(void *arg, const char *data, size_t len)
{
    dl_upload_t *u = arg;
    if (u->in_field) {
        if (u->fields.len + len > DL_UPLOAD_MAX_FIELDS_BYTES)
            return fail(u, DL_ETOOBIG, "%s", "form fields too large");
        return dl_buf_append(&u->fields, data, len) == 0 ? 0 : DL_ENOMEM;
    }
    dl_upload_file_t *f = &u->files[u->n_files - 1];
    f->size += len;
    if (f->size > u->max_file) {
        snprintf(u->error, sizeof(u->error), "file larger than %llu bytes",
                 (unsigned long long)u->max_file);
        return DL_ETOOBIG;
    }
    EVP_DigestUpdate(u->sha, data, len);
    while (len > 0) {
        size_t n = DL_MIN(len, WBUF_SIZE - u->wlen);
        memcpy(u->wbuf + u->wlen, data, n);
        u->wlen += n;
        data += n;
        len -= n;
        if (u->wlen == WBUF_SIZE) {
            int rc = write_all(u);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int on_part_end(void *arg)
{
    dl_upload_t *u = arg;
    if (u->in_field) {
        u->in_field = 0;
        u->n_fields++;
        uint32_t vl = (uint32_t)(u->fields.len - u->vlen_off - 4);
        memcpy(u->fields.data + u->vlen_off, &vl, 4);
        return 0;
    }
    int rc = write_all(u);
    if (close(u->fd) != 0 && rc == 0)
        rc = fail(u, DL_EIO, "cannot write the uploaded file: %s", strerror(errno));
    u->fd = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(u->sha, md, &mdlen);
    dl_upload_file_t *f = &u->files[u->n_files - 1];
    dl_hex(md, DL_MIN(mdlen, 32u), f->sha256);
    f->sha256[2 * DL_MIN(mdlen, 32u)] = '\0';
    return rc;
}

int dl_upload_new(const char *dir, const char *prefix, const char *boundary, size_t blen,
                  uint64_t max_file, dl_upload_t **out)
{
    static const dl_multipart_cbs_t cbs = {on_part_begin, on_part_data, on_part_end};
    *out = NULL;
    dl_upload_t *u = dl_calloc(1, sizeof(*u));
    if (u == NULL)
        return DL_ENOMEM;
    u->wbuf = dl_malloc(WBUF_SIZE);
    u->sha = EVP_MD_CTX_new();
    if (u->wbuf == NULL || u->sha == NULL) {
        dl_free(u->wbuf);
        EVP_MD_CTX_free(u->sha);
        dl_free(u);
        return DL_ENOMEM;
    }
    snprintf(u->dir, sizeof(u->dir), "%s", dir);
    snprintf(u->prefix, sizeof(u->prefix), "%s", prefix);
    u->fd = -1;
    u->max_file = max_file;
    dl_multipart_init(&u->mp, boundary, blen, &cbs, u);
    *out = u;
    return 0;
}

/* The parser's reason for a failure the sink did not explain itself. */
static int keep_parser_error(dl_upload_t *u, int rc)
{
    if (rc < 0 && u->error[0] == '\0' && u->mp.error[0] != '\0')
        snprintf(u->error, sizeof(u->error), "%s%s",
                 rc == DL_EINVAL ? "malformed multipart body: " : "", u->mp.error);
    return rc;
}

int dl_upload_feed(dl_upload_t *u, const char *data, size_t len)
{
    return keep_parser_error(u, dl_multipart_feed(&u->mp, data, len));
}

int dl_upload_finish(dl_upload_t *u)
{
    return keep_parser_error(u, dl_multipart_finish(&u->mp));
}

const char *dl_upload_error(const dl_upload_t *u)
{
    return u->error[0] ? u->error : "upload failed";
}

int dl_upload_files(dl_upload_t *u, dl_upload_file_t **files)
{
    *files = u->files;
    return u->n_files;
}

const dl_buf_t *dl_upload_fields(const dl_upload_t *u, int *n)
{
    *n = u->n_fields;
    return &u->fields;
}

void dl_upload_free(dl_upload_t *u)
{
    if (u == NULL)
        return;
    if (u->fd >= 0)
        close(u->fd);
    for (int i = 0; i < u->n_files; i++)
        unlink(u->files[i].path); /* ENOENT when the handler moved it away */
    dl_buf_free(&u->fields);
    EVP_MD_CTX_free(u->sha);
    dl_free(u->wbuf);
    dl_free(u);
}

int dl_upload_sweep(const char *dir, int max_age_s)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    time_t now = time(NULL);
    struct dirent *e;
    char path[1400];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".part") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && now - st.st_mtime > max_age_s && unlink(path) == 0)
            n++;
    }
    closedir(d);
    return n;
}

int dl_upload_status(int rc)
{
    return rc == DL_EINVAL ? 400 : rc == DL_ETOOBIG ? 413 : rc == DL_ENOMEM ? 503 : 500;
}
