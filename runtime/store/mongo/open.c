/*
 * mongo/open.c - opening and closing a MongoDB store, and its function table.
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

static void op_close(dl_store_t *s)
{
    mongo_store_t *ms = (mongo_store_t *)s;

    if (ms == NULL)
        return;
    mongoc_client_pool_destroy(ms->pool);
    mongoc_uri_destroy(ms->uri);
    dl_free(ms);
}

static const dl_store_ops_t mongo_ops = {
    .type = "mongodb",
    .find = dl_mongo_find,
    .count = dl_mongo_count,
    .insert = dl_mongo_insert,
    .update = dl_mongo_update,
    .find_one_and_update = dl_mongo_find_one_and_update,
    .remove = dl_mongo_remove,
    .create_index = dl_mongo_create_index,
    .explain = dl_mongo_explain,
    .ping = dl_mongo_ping,
    .file_put = dl_mongo_file_put,
    .file_get = dl_mongo_file_get,
    .file_remove = dl_mongo_file_remove,
    .close = op_close,
};

int dl_mongo_uri_check(const char *uri, char *err, size_t errlen)
{
    mongoc_uri_t *u;
    int pool;
    int rc = dl_mongo_uri_prepare(uri, 1, &u, &pool, err, errlen);
    if (rc == 0)
        mongoc_uri_destroy(u);
    return rc;
}

dl_store_t *dl_store_open_mongo(const char *uri_str, int pool_size, char *err, size_t errlen)
{
    mongo_store_t *ms;
    mongoc_uri_t *uri;
    bson_error_t e;
    const char *db;
    int n;

    if (dl_mongo_uri_prepare(uri_str, pool_size, &uri, &n, err, errlen) != 0)
        return NULL;
    ms = dl_calloc(1, sizeof(*ms));
    if (ms == NULL) {
        mongoc_uri_destroy(uri);
        dl_err_format(err, errlen, DL_ENOMEM, "mongodb: out of memory");
        return NULL;
    }
    ms->base.ops = &mongo_ops;
    ms->uri = uri;
    ms->pool_size = n;
    ms->select_timeout_ms = mongoc_uri_get_option_as_int32(
        uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, DL_MONGO_DEFAULT_SELECT_TIMEOUT_MS);
    db = mongoc_uri_get_database(uri);
    snprintf(ms->db, sizeof(ms->db), "%s", db != NULL && *db ? db : DL_MONGO_DEFAULT_DB);
    dl_mongo_describe_hosts(ms);
    memset(&e, 0, sizeof(e));
    ms->pool = mongoc_client_pool_new_with_error(uri, &e);
    if (ms->pool == NULL) {
        dl_err_format(err, errlen, DL_EINVAL, "mongodb: cannot create a client pool: %s",
                      e.message[0] ? e.message : "invalid options");
        mongoc_uri_destroy(uri);
        dl_free(ms);
        return NULL;
    }
    mongoc_client_pool_set_error_api(ms->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(ms->pool, (uint32_t)n);
    if (mongoc_uri_get_appname(uri) == NULL)
        mongoc_client_pool_set_appname(ms->pool, "devloop");
    return &ms->base;
}
