/*
 * mongo/result.c - errors and results: driver errors (bson_error_t, write errors in a
 * reply) to DL_E* codes and messages, in one place (map_error), and the
 * helpers that start and finish a dl_store_res_t.
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

int dl_mongo_res_fail(dl_store_res_t *res, int code)
{
    res->status = code;
    return code;
}

static int is_dup_key(int64_t code)
{
    return code == 11000 || code == 11001 || code == 12582;
}

/* The first write error's code in an insert/update/delete reply, or 0. */
static int64_t reply_write_code(const bson_t *reply)
{
    bson_iter_t it;

    if (reply == NULL)
        return 0;
    if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "writeErrors.0.code", &it)
        && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

/*
 * Turns a driver error into a DL_E* code and "mongodb OP: message" in
 * res->err. reply (may be NULL) is the server reply that came with it.
 */
int dl_mongo_map_error(mongo_store_t *ms, const char *op, const bson_error_t *e,
                       const bson_t *reply, dl_store_res_t *res)
{
    int64_t wcode = reply_write_code(reply);
    int code;

    if (e->domain == MONGOC_ERROR_SERVER_SELECTION) {
        dl_err_format(res->err, sizeof(res->err), 0,
                      "mongodb: no server reachable at %s within %d ms (%s)", ms->hosts,
                      ms->select_timeout_ms, e->message);
        return dl_mongo_res_fail(res, DL_ETIMEDOUT);
    }
    if (is_dup_key(e->code) || is_dup_key(wcode)) {
        code = DL_EDUPKEY;
    } else if (e->domain == MONGOC_ERROR_STREAM) {
        code = strstr(e->message, "timed out") || strstr(e->message, "timeout") ? DL_ETIMEDOUT
                                                                                : DL_EIO;
    } else if (e->domain == MONGOC_ERROR_SERVER || e->domain == MONGOC_ERROR_WRITE_CONCERN) {
        switch (e->code) {
        case 50: /* MaxTimeMSExpired */
            code = DL_ETIMEDOUT;
            break;
        case 2:  /* BadValue */
        case 9:  /* FailedToParse */
        case 14: /* TypeMismatch */
        case 73: /* InvalidNamespace */
            code = DL_EINVAL;
            break;
        default:
            code = DL_EIO;
        }
    } else if (e->domain == MONGOC_ERROR_GRIDFS) {
        code = e->code == MONGOC_ERROR_GRIDFS_BUCKET_FILE_NOT_FOUND ? DL_ENOENT : DL_EIO;
    } else if (e->domain == MONGOC_ERROR_BSON || e->domain == MONGOC_ERROR_COMMAND
               || e->domain == MONGOC_ERROR_COLLECTION || e->domain == MONGOC_ERROR_CURSOR) {
        code = DL_EINVAL;
    } else {
        code = DL_EIO;
    }
    dl_err_format(res->err, sizeof(res->err), 0, "mongodb %s: %s", op,
                  e->message[0] ? e->message : "unknown error");
    return dl_mongo_res_fail(res, code);
}

/* Resets res (the front checked the collection name); 0. */
int dl_mongo_finish(dl_store_res_t *res, int rc)
{
    if (rc == 0 && res->json.oom)
        rc = DL_ENOMEM;
    if (rc != 0 && res->err[0] == '\0')
        dl_err_format(res->err, sizeof(res->err), 0, "mongodb: %s", dl_strerror(rc));
    res->status = rc;
    return rc;
}

int64_t dl_mongo_reply_int(const bson_t *reply, const char *key)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

/* find_one_and_update: 1 when an existing document was updated, 0 when upserted. */
int64_t dl_mongo_reply_updated_existing(const bson_t *reply)
{
    bson_iter_t it;

    if (bson_iter_init(&it, reply)
        && bson_iter_find_descendant(&it, "lastErrorObject.updatedExisting", &it))
        return bson_iter_as_bool(&it) ? 1 : 0;
    return 1;
}
