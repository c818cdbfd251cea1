/*
 * mongo_int.h - what the files of the MongoDB backend share. The backend of
 * the document store: the ops table of
 * store.h on mongo-c-driver 1.23. One mongoc_client_pool_t per store; each
 * operation pops a client, runs its driver calls and pushes the client back,
 * so operations block (run them in uv_queue_work) and may run on any number
 * of threads at once. Timeouts come from the URI, with defaults of 5 s to
 * connect, 45 s per socket read and 5 s to select a server, so an
 * unreachable deployment fails an operation instead of hanging it.
 *
 * Text in, text out: queries, updates, documents and options arrive as
 * relaxed JSON and become BSON through bson_init_from_json, after the front
 * (store.c) has checked them against the subset both backends accept, so
 * nothing outside it is ever sent. A 24-hex string compared with or stored as "_id" becomes an
 * ObjectId. On the way out, BSON becomes JSON by our own walk (put_value) so
 * that Lua sees the same shapes as with SQLite: ObjectIds as hex strings,
 * dates as ISO-8601 UTC strings, binary as base64, integers as numbers
 * (strings past 2^53). Writes to several documents run in a transaction where
 * the deployment has them (replica set, sharded); a standalone server has
 * none. Driver errors (bson_error_t, error API 2) become a DL_E* code and a
 * message in res->err in one place, map_error().
 *
 * Files live in the GridFS bucket "uploads" (uploads.files, uploads.chunks)
 * with metadata {contentType, sha256}; they stream between a local path and
 * the bucket through one fixed buffer, so no file is ever whole in memory.
 */
#include "store/mongo_store.h"
#ifndef DL_STORE_MONGO_INT_H
#define DL_STORE_MONGO_INT_H

#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include "common/buf.h"
#include "store/mongo_store.h"
#include "store/store.h"

#define MAX_DEPTH 100
#define JSON_SAFE_INT 9007199254740992LL /* 2^53: larger integers leave as strings */

typedef struct {
    dl_store_t base; /* first: a dl_store_t * is a mongo_store_t * */
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char db[128];
    char hosts[200]; /* "host:port,..." for messages */
    int select_timeout_ms;
    int pool_size;
} mongo_store_t;

typedef struct {
    bson_t sort;       /* always initialized; empty: none */
    bson_t projection; /* always initialized; empty: none */
    int64_t skip;
    int64_t limit;     /* 0: none */
    int upsert;
} find_opts_t;

/*
 * A write to several documents runs in a transaction where the deployment
 * has them (replica set primary, mongos, load balancer); on a standalone
 * server a write that fails part-way keeps what it did.
 */
typedef struct {
    mongoc_client_session_t *cs; /* NULL: no transaction */
    bson_t opts;                 /* the write's options: the session, if any */
} txn_t;

/* bson_json.c */
void dl_mongo_put_int64(dl_buf_t *b, int64_t v);
int dl_mongo_put_value(dl_buf_t *b, const bson_iter_t *it, int depth);
/* files.c */
int dl_mongo_file_put(dl_store_t *s, const char *path, const char *filename,
                      const char *content_type, const char *sha256, dl_store_res_t *res);
int dl_mongo_file_get(dl_store_t *s, const char *id, const char *dest_path,
                      dl_store_res_t *res);
int dl_mongo_file_remove(dl_store_t *s, const char *id, dl_store_res_t *res);
/* ops.c: the inputs' text goes to libbson's JSON reader (bson_init_from_json),
 * which makes the BSON the driver sends; the front's trees are not read. */
int dl_mongo_find(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                  const dl_store_json_t *opts, dl_store_res_t *res);
int dl_mongo_count(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                   dl_store_res_t *res);
int dl_mongo_insert(dl_store_t *s, const char *coll, const dl_store_json_t *docs,
                    dl_store_res_t *res);
int dl_mongo_update(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                    const dl_store_json_t *update, int multi, dl_store_res_t *res);
int dl_mongo_find_one_and_update(dl_store_t *s, const char *coll,
                                 const dl_store_json_t *query, const dl_store_json_t *update,
                                 const dl_store_json_t *opts, dl_store_res_t *res);
int dl_mongo_remove(dl_store_t *s, const char *coll, const dl_store_json_t *query, int multi,
                    dl_store_res_t *res);
int dl_mongo_create_index(dl_store_t *s, const char *coll, const dl_store_json_t *keys_json,
                          int unique, dl_store_res_t *res);
int dl_mongo_explain(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                     const dl_store_json_t *opts, dl_store_res_t *res);
int dl_mongo_ping(dl_store_t *s, dl_store_res_t *res);
/* pool.c */
void dl_mongo_describe_hosts(mongo_store_t *ms);
mongoc_client_t *dl_mongo_acquire(mongo_store_t *ms, dl_store_res_t *res);
/* prep.c */
const char *dl_mongo_skip_space(const char *p);
int dl_mongo_parse_json(const char *json, int want_array, const char *what, bson_t *out, char *err,
                        size_t errlen);
int dl_mongo_doc_from_bson(const bson_iter_t *doc_it, bson_t *out, char *err, size_t errlen);
int dl_mongo_parse_sort(const bson_iter_t *it, bson_t *sort, dl_buf_t *name, char *err,
                        size_t errlen);
void dl_mongo_find_opts_free(find_opts_t *fo);
int dl_mongo_parse_find_opts(const char *json, find_opts_t *fo, char *err, size_t errlen);
void dl_mongo_find_opts_to_bson(const find_opts_t *fo, bson_t *out);
/* result.c */
int dl_mongo_res_fail(dl_store_res_t *res, int code);
int dl_mongo_map_error(mongo_store_t *ms, const char *op, const bson_error_t *e,
                       const bson_t *reply, dl_store_res_t *res);
int dl_mongo_finish(dl_store_res_t *res, int rc);
int64_t dl_mongo_reply_int(const bson_t *reply, const char *key);
int64_t dl_mongo_reply_updated_existing(const bson_t *reply);

/* The conversions the operations are built from (test_mongo_store.c tests
 * them through this header). */
int dl_mongo_bson_to_json(const bson_t *doc, int as_array, dl_buf_t *out);
int dl_mongo_plan_lines(const bson_t *explain_reply, dl_buf_t *out);
int dl_mongo_prep_query(const char *json, bson_t *out, char *err, size_t errlen);
int dl_mongo_prep_update(const char *json, bson_t *out, char *err, size_t errlen);
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_mongo_prep_doc(const char *json, bson_t *out, char *err, size_t errlen);
#endif
int dl_mongo_uri_prepare(const char *uri, int pool_size, mongoc_uri_t **out, int *pool_out,
                         char *err, size_t errlen);

#endif
