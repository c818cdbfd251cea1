/*
 * mongo/files.c - files in the GridFS bucket "uploads", streamed between a local path and
 * the bucket through one fixed buffer.
 */
#include "store/mongo/mongo_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/codec_json.h"
#include "common/internal.h"

#define FILE_BUCKET "uploads"
#define FILE_BUF_SIZE (256 * 1024) /* bytes moved per read/write, both ways */

/* A file id of 24 hex digits -> its ObjectId value; 0 for anything else. */
static int file_id_value(const char *id, bson_value_t *out)
{
    if (id == NULL || strlen(id) != 24 || !bson_oid_is_valid(id, 24))
        return 0;
    memset(out, 0, sizeof(*out));
    out->value_type = BSON_TYPE_OID;
    bson_oid_init_from_string(&out->value.v_oid, id);
    return 1;
}

/* A failure on our side of a file transfer (errno err on path). */
static int local_fail(dl_store_res_t *res, const char *op, const char *what, const char *path,
                      int err)
{
    dl_err_format(res->err, sizeof(res->err), 0, "mongodb %s: cannot %s %s: %s", op, what, path,
                  strerror(err));
    return dl_mongo_res_fail(res, err == ENOENT ? DL_ENOENT : err == ENOMEM ? DL_ENOMEM : DL_EIO);
}

/* A GridFS stream that failed: its error, or a generic one if it kept none. */
static int stream_fail(mongo_store_t *ms, const char *op, mongoc_stream_t *st,
                       dl_store_res_t *res)
{
    bson_error_t e;

    memset(&e, 0, sizeof(e));
    if (!mongoc_gridfs_bucket_stream_error(st, &e))
        bson_set_error(&e, MONGOC_ERROR_GRIDFS, MONGOC_ERROR_GRIDFS_BUCKET_STREAM,
                       "GridFS stream failed");
    return dl_mongo_map_error(ms, op, &e, NULL, res);
}

static mongoc_gridfs_bucket_t *open_bucket(mongo_store_t *ms, mongoc_client_t *client,
                                           const char *op, dl_store_res_t *res)
{
    mongoc_database_t *db = mongoc_client_get_database(client, ms->db);
    mongoc_gridfs_bucket_t *bucket;
    bson_error_t e;
    bson_t opts;

    bson_init(&opts);
    BSON_APPEND_UTF8(&opts, "bucketName", FILE_BUCKET);
    memset(&e, 0, sizeof(e));
    bucket = mongoc_gridfs_bucket_new(db, &opts, NULL, &e);
    if (bucket == NULL)
        dl_mongo_map_error(ms, op, &e, NULL, res);
    bson_destroy(&opts);
    /* the bucket keeps its own collection handles */
    mongoc_database_destroy(db);
    return bucket;
}

static void put_utf8_or_null(dl_buf_t *b, const bson_iter_t *it)
{
    uint32_t len = 0;
    const char *s;

    if (it != NULL && BSON_ITER_HOLDS_UTF8(it)) {
        s = bson_iter_utf8(it, &len);
        dl_json_put_string(b, s, len);
    } else {
        dl_buf_append_str(b, "null");
    }
}

/*
 * A document of uploads.files -> {"id","filename","content_type","size",
 * "sha256","created_at"} appended to out (null for what the file lacks).
 * *length and *chunk_size (may be NULL) get its length and chunkSize (0 when
 * absent, or for chunkSize not an int32: the driver reads it as one).
 */
DL_STATIC int dl_mongo_file_json(const bson_t *doc, dl_buf_t *out, int64_t *length,
                                 int64_t *chunk_size)
{
    bson_iter_t it, meta, ct, sha;
    int has_ct = 0, has_sha = 0;
    int64_t len = 0, chunk = 0;

    dl_buf_append_str(out, "{\"id\":");
    if (bson_iter_init_find(&it, doc, "_id"))
        dl_mongo_put_value(out, &it, 0);
    else
        dl_buf_append_str(out, "null");
    dl_buf_append_str(out, ",\"filename\":");
    put_utf8_or_null(out, bson_iter_init_find(&it, doc, "filename") ? &it : NULL);
    if (bson_iter_init_find(&meta, doc, "metadata") && BSON_ITER_HOLDS_DOCUMENT(&meta)) {
        bson_iter_recurse(&meta, &ct);
        has_ct = bson_iter_find(&ct, "contentType");
        bson_iter_recurse(&meta, &sha);
        has_sha = bson_iter_find(&sha, "sha256");
    }
    dl_buf_append_str(out, ",\"content_type\":");
    put_utf8_or_null(out, has_ct ? &ct : NULL);
    if (bson_iter_init_find(&it, doc, "length") && BSON_ITER_HOLDS_NUMBER(&it))
        len = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, doc, "chunkSize") && BSON_ITER_HOLDS_INT32(&it))
        chunk = bson_iter_int32(&it);
    dl_buf_append_str(out, ",\"size\":");
    dl_mongo_put_int64(out, len);
    dl_buf_append_str(out, ",\"sha256\":");
    put_utf8_or_null(out, has_sha ? &sha : NULL);
    dl_buf_append_str(out, ",\"created_at\":");
    if (bson_iter_init_find(&it, doc, "uploadDate") && BSON_ITER_HOLDS_DATE_TIME(&it))
        dl_mongo_put_int64(out, bson_iter_date_time(&it));
    else
        dl_buf_append_str(out, "null");
    dl_buf_append_char(out, '}');
    if (length != NULL)
        *length = len;
    if (chunk_size != NULL)
        *chunk_size = chunk;
    return out->oom ? DL_ENOMEM : 0;
}

/*
 * Undoes a failed upload: drops its chunks, which also keeps the stream from
 * saving the file when destroyed, and, if it failed while saving, the file
 * document that may have been written anyway. Best effort.
 */
static void discard_upload(mongoc_gridfs_bucket_t *bucket, mongoc_stream_t *up,
                           const bson_value_t *id, int saving)
{
    bson_error_t e;

    (void)mongoc_gridfs_bucket_abort_upload(up);
    if (saving)
        (void)mongoc_gridfs_bucket_delete_by_id(bucket, id, &e);
}

/* Streams fd into a new GridFS file with id; 0 or an error in res. */
static int upload_fd(mongo_store_t *ms, mongoc_gridfs_bucket_t *bucket, int fd,
                     const char *path, const bson_value_t *id, const char *filename,
                     const bson_t *opts, char *buf, dl_store_res_t *res)
{
    mongoc_stream_t *up;
    bson_error_t e;
    int64_t sent = 0;
    ssize_t n;
    int rc = 0, local = 0, saving = 0;

    memset(&e, 0, sizeof(e));
    up = mongoc_gridfs_bucket_open_upload_stream_with_id(bucket, id, filename, opts, &e);
    if (up == NULL)
        return dl_mongo_map_error(ms, "file_put", &e, NULL, res);
    for (;;) {
        n = read(fd, buf, FILE_BUF_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = local_fail(res, "file_put", "read", path, errno);
            local = 1;
            break;
        }
        if (n == 0)
            break;
        if (mongoc_stream_write(up, buf, (size_t)n, 0) < 0) {
            rc = stream_fail(ms, "file_put", up, res);
            break;
        }
        sent += n;
    }
    if (rc == 0) {
        saving = 1;
        if (mongoc_stream_close(up) != 0)
            rc = stream_fail(ms, "file_put", up, res);
    }
    /*
     * A local failure must always abort, or destroying the stream saves what
     * was sent as the whole file. After a driver failure, chunks exist only
     * if something was sent or saved; after a timeout (no server to select),
     * cleaning up would most likely wait out another one and fail too.
     */
    if (rc != 0 && (local || ((sent > 0 || saving) && rc != DL_ETIMEDOUT)))
        discard_upload(bucket, up, id, saving);
    mongoc_stream_destroy(up);
    return rc;
}

int dl_mongo_file_put(dl_store_t *s, const char *path, const char *filename,
                      const char *content_type, const char *sha256, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_gridfs_bucket_t *bucket;
    mongoc_client_t *client;
    bson_value_t id;
    bson_t opts, meta;
    struct stat st;
    char *buf, hex[25];
    int fd, rc;

    dl_store_res_reset(res);
    if (path == NULL || *path == '\0' || filename == NULL) {
        dl_err_format(res->err, sizeof(res->err), 0,
                      "mongodb file_put: needs a path and a filename");
        return dl_mongo_res_fail(res, DL_EINVAL);
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return local_fail(res, "file_put", "open", path, errno);
    if (fstat(fd, &st) != 0) {
        rc = local_fail(res, "file_put", "stat", path, errno);
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_put: %s is not a regular file",
                      path);
        return dl_mongo_res_fail(res, DL_EINVAL);
    }
    buf = dl_malloc(FILE_BUF_SIZE);
    if (buf == NULL) {
        close(fd);
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_put: out of memory");
        return dl_mongo_res_fail(res, DL_ENOMEM);
    }
    memset(&id, 0, sizeof(id));
    id.value_type = BSON_TYPE_OID;
    bson_oid_init(&id.value.v_oid, NULL);
    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "metadata", &meta);
    if (content_type != NULL)
        BSON_APPEND_UTF8(&meta, "contentType", content_type);
    else
        BSON_APPEND_NULL(&meta, "contentType");
    if (sha256 != NULL)
        BSON_APPEND_UTF8(&meta, "sha256", sha256);
    else
        BSON_APPEND_NULL(&meta, "sha256");
    bson_append_document_end(&opts, &meta);
    rc = 0;
    client = dl_mongo_acquire(ms, res);
    if (client != NULL) {
        bucket = open_bucket(ms, client, "file_put", res);
        if (bucket != NULL) {
            rc = upload_fd(ms, bucket, fd, path, &id, filename, &opts, buf, res);
            mongoc_gridfs_bucket_destroy(bucket);
        } else {
            rc = res->status;
        }
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    if (rc == 0) {
        bson_oid_to_string(&id.value.v_oid, hex);
        dl_json_put_string(&res->json, hex, 24);
    }
    bson_destroy(&opts);
    dl_free(buf);
    close(fd);
    return dl_mongo_finish(res, rc);
}


/* Streams GridFS file id to dest_path, which it creates and removes again on failure. */
static int download_to(mongo_store_t *ms, mongoc_gridfs_bucket_t *bucket, const char *hex,
                       const bson_value_t *id, int64_t length, const char *dest_path,
                       dl_store_res_t *res)
{
    mongoc_stream_t *down;
    bson_error_t e;
    int64_t got = 0;
    ssize_t n;
    char *buf;
    int fd, rc = 0, werr;

    buf = dl_malloc(FILE_BUF_SIZE);
    if (buf == NULL) {
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_get: out of memory");
        return dl_mongo_res_fail(res, DL_ENOMEM);
    }
    memset(&e, 0, sizeof(e));
    down = mongoc_gridfs_bucket_open_download_stream(bucket, id, &e);
    if (down == NULL) {
        dl_free(buf);
        return dl_mongo_map_error(ms, "file_get", &e, NULL, res);
    }
    fd = open(dest_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = local_fail(res, "file_get", "create", dest_path, errno);
    } else if (fchmod(fd, 0600) != 0) {
        rc = local_fail(res, "file_get", "chmod", dest_path, errno);
    }
    while (rc == 0) {
        n = mongoc_stream_read(down, buf, FILE_BUF_SIZE, 1, 0);
        if (n < 0) {
            rc = stream_fail(ms, "file_get", down, res);
        } else if (n == 0) {
            break;
        } else {
            werr = dl_write_all(fd, buf, (size_t)n);
            if (werr != 0)
                rc = local_fail(res, "file_get", "write", dest_path, werr);
            got += n;
        }
    }
    if (rc == 0 && got != length) {
        dl_err_format(res->err, sizeof(res->err), 0,
                      "mongodb file_get: file %s has %" PRId64 " bytes, %" PRId64 " expected", hex,
                      got, length);
        rc = dl_mongo_res_fail(res, DL_EIO);
    }
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = local_fail(res, "file_get", "write", dest_path, errno);
    if (rc != 0 && fd >= 0)
        unlink(dest_path);
    mongoc_stream_destroy(down);
    dl_free(buf);
    return rc;
}

int dl_mongo_file_get(dl_store_t *s, const char *id, const char *dest_path,
                      dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_gridfs_bucket_t *bucket;
    mongoc_client_t *client;
    mongoc_cursor_t *cur;
    const bson_t *doc, *reply = NULL;
    bson_value_t idv;
    bson_error_t e;
    bson_t filter;
    int64_t length = 0, chunk = 0;
    int rc = 0;

    dl_store_res_reset(res);
    if (dest_path == NULL || *dest_path == '\0') {
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_get: needs a destination path");
        return dl_mongo_res_fail(res, DL_EINVAL);
    }
    if (!file_id_value(id, &idv)) {
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_get: no file with id \"%.40s\"",
                      id != NULL ? id : "");
        return dl_mongo_res_fail(res, DL_ENOENT);
    }
    client = dl_mongo_acquire(ms, res);
    if (client == NULL)
        return res->status;
    bucket = open_bucket(ms, client, "file_get", res);
    if (bucket == NULL) {
        mongoc_client_pool_push(ms->pool, client);
        return res->status;
    }
    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", &idv.value.v_oid);
    cur = mongoc_gridfs_bucket_find(bucket, &filter, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        rc = dl_mongo_file_json(doc, &res->json, &length, &chunk);
        if (rc == 0 && (length < 0 || (length > 0 && chunk <= 0))) {
            /* the driver would divide by this chunk size */
            dl_err_format(res->err, sizeof(res->err), 0,
                          "mongodb file_get: file %s is corrupt (length %" PRId64
                          ", chunkSize %" PRId64 ")",
                          id, length, chunk);
            rc = dl_mongo_res_fail(res, DL_EIO);
        }
    } else if (mongoc_cursor_error_document(cur, &e, &reply)) {
        rc = dl_mongo_map_error(ms, "file_get", &e, reply, res);
    } else {
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb file_get: no file with id \"%s\"",
                      id);
        rc = dl_mongo_res_fail(res, DL_ENOENT);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(&filter);
    if (rc == 0)
        rc = download_to(ms, bucket, id, &idv, length, dest_path, res);
    mongoc_gridfs_bucket_destroy(bucket);
    mongoc_client_pool_push(ms->pool, client);
    if (rc != 0)
        dl_buf_reset(&res->json);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_file_remove(dl_store_t *s, const char *id, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_gridfs_bucket_t *bucket;
    mongoc_client_t *client;
    bson_value_t idv;
    bson_error_t e;
    int rc = 0;

    dl_store_res_reset(res);
    if (!file_id_value(id, &idv))
        return 0; /* no such file: nothing deleted */
    client = dl_mongo_acquire(ms, res);
    if (client == NULL)
        return res->status;
    bucket = open_bucket(ms, client, "file_remove", res);
    if (bucket != NULL) {
        memset(&e, 0, sizeof(e));
        if (mongoc_gridfs_bucket_delete_by_id(bucket, &idv, &e))
            res->count = 1;
        else if (!(e.domain == MONGOC_ERROR_GRIDFS
                   && e.code == MONGOC_ERROR_GRIDFS_BUCKET_FILE_NOT_FOUND))
            rc = dl_mongo_map_error(ms, "file_remove", &e, NULL, res);
        mongoc_gridfs_bucket_destroy(bucket);
    } else {
        rc = res->status;
    }
    mongoc_client_pool_push(ms->pool, client);
    return dl_mongo_finish(res, rc);
}
