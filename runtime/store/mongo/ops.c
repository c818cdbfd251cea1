/*
 * mongo/ops.c - the operations: find, count, insert, update, find_one_and_update,
 * remove, create_index, explain and ping, with transactions for writes to
 * several documents where the deployment has them.
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

static int txn_begin(mongo_store_t *ms, mongoc_client_t *client, int wanted, const char *op,
                     txn_t *t, dl_store_res_t *res)
{
    mongoc_server_description_t *sd;
    const char *type;
    bson_error_t e;
    int supported;

    t->cs = NULL;
    bson_init(&t->opts);
    if (!wanted)
        return 0;
    sd = mongoc_client_select_server(client, true, NULL, &e);
    if (sd == NULL)
        return dl_mongo_map_error(ms, op, &e, NULL, res);
    type = mongoc_server_description_type(sd);
    supported = strcmp(type, "RSPrimary") == 0 || strcmp(type, "Mongos") == 0
                || strcmp(type, "LoadBalancer") == 0;
    mongoc_server_description_destroy(sd);
    if (!supported)
        return 0;
    t->cs = mongoc_client_start_session(client, NULL, &e);
    if (t->cs == NULL)
        return dl_mongo_map_error(ms, op, &e, NULL, res);
    if (!mongoc_client_session_start_transaction(t->cs, NULL, &e))
        return dl_mongo_map_error(ms, op, &e, NULL, res);
    if (!mongoc_client_session_append(t->cs, &t->opts, &e))
        return dl_mongo_map_error(ms, op, &e, NULL, res);
    return 0;
}

/* Commits when rc is 0, else aborts; returns rc or the commit's error. Always call. */
static int txn_end(mongo_store_t *ms, const char *op, txn_t *t, int rc, dl_store_res_t *res)
{
    bson_error_t e;
    bson_t reply;

    if (t->cs != NULL && mongoc_client_session_in_transaction(t->cs)) {
        if (rc == 0) {
            if (!mongoc_client_session_commit_transaction(t->cs, &reply, &e))
                rc = dl_mongo_map_error(ms, op, &e, &reply, res);
            bson_destroy(&reply);
        } else {
            mongoc_client_session_abort_transaction(t->cs, NULL);
        }
        if (rc != 0) {
            /* rolled back: nothing was written */
            res->count = 0;
            res->matched = 0;
        }
    }
    if (t->cs != NULL)
        mongoc_client_session_destroy(t->cs);
    t->cs = NULL;
    bson_destroy(&t->opts);
    return rc;
}

typedef enum {
    OP_FIND,
    OP_COUNT,
    OP_INSERT,
    OP_UPDATE,
    OP_FIND_ONE_AND_UPDATE,
    OP_REMOVE,
    OP_CREATE_INDEX,
    OP_EXPLAIN,
    OP_PING
} op_kind_t;

/* The name of each operation in messages: "mongodb <name>: ...". */
static const char *const op_names[] = {
    [OP_FIND] = "find",
    [OP_COUNT] = "count",
    [OP_INSERT] = "insert",
    [OP_UPDATE] = "update",
    [OP_FIND_ONE_AND_UPDATE] = "find_one_and_update",
    [OP_REMOVE] = "remove",
    [OP_CREATE_INDEX] = "create_index",
    [OP_EXPLAIN] = "explain",
    [OP_PING] = "ping",
};

/* An operation: what each public function builds, and what its driver call
 * leaves for the reading of its reply. */
typedef struct {
    op_kind_t kind;
    const bson_t *filter;
    const bson_t *upd;    /* update */
    const bson_t *opts;   /* find: its options; a command: the command */
    const bson_t **docs;  /* insert */
    size_t n_docs;
    int multi;            /* update, remove: every document, not the first */
    mongoc_find_and_modify_opts_t *fam;
    int64_t n;            /* count: the count */
    int rc;               /* find: the conversion's error */
} op_t;

/* The cursor's documents as a JSON array in res->json; false, with the
 * cursor's error in e and a copy of its reply (it belongs to the cursor) in
 * reply and nothing in res, when it failed. */
static bool find_documents(op_t *op, mongoc_collection_t *c, bson_t *reply, bson_error_t *e,
                           dl_store_res_t *res)
{
    mongoc_cursor_t *cur;
    const bson_t *doc, *err_reply = NULL;
    bool ok = true;

    cur = mongoc_collection_find_with_opts(c, op->filter, op->opts, NULL);
    dl_buf_append_char(&res->json, '[');
    while (op->rc == 0 && mongoc_cursor_next(cur, &doc)) {
        if (res->count > 0)
            dl_buf_append_char(&res->json, ',');
        op->rc = dl_mongo_bson_to_json(doc, 0, &res->json);
        res->count++;
    }
    dl_buf_append_char(&res->json, ']');
    if (op->rc == 0 && mongoc_cursor_error_document(cur, e, &err_reply)) {
        ok = false;
        dl_buf_reset(&res->json);
        res->count = 0;
    }
    if (!ok && err_reply != NULL)
        bson_copy_to(err_reply, reply);
    else
        bson_init(reply);
    mongoc_cursor_destroy(cur);
    return ok;
}

/* The operation's driver call, with wopts (the transaction's session, if any)
 * for a write; false, with e and reply set, when it failed. reply is always
 * initialised. */
static bool call_driver(op_t *op, const char *db, mongoc_client_t *client, mongoc_collection_t *c,
                        const bson_t *wopts, bson_t *reply, bson_error_t *e, dl_store_res_t *res)
{
    bool ok;

    switch (op->kind) {
    case OP_FIND:
        return find_documents(op, c, reply, e, res);
    case OP_COUNT:
        op->n = mongoc_collection_count_documents(c, op->filter, NULL, NULL, reply, e);
        return op->n >= 0;
    case OP_INSERT:
        ok = mongoc_collection_insert_many(c, op->docs, op->n_docs, wopts, reply, e);
        /* counted even when the write failed part-way */
        res->count = dl_mongo_reply_int(reply, "insertedCount");
        return ok;
    case OP_UPDATE:
        if (op->multi)
            return mongoc_collection_update_many(c, op->filter, op->upd, wopts, reply, e);
        return mongoc_collection_update_one(c, op->filter, op->upd, wopts, reply, e);
    case OP_FIND_ONE_AND_UPDATE:
        return mongoc_collection_find_and_modify_with_opts(c, op->filter, op->fam, reply, e);
    case OP_REMOVE:
        if (op->multi)
            return mongoc_collection_delete_many(c, op->filter, wopts, reply, e);
        return mongoc_collection_delete_one(c, op->filter, wopts, reply, e);
    case OP_CREATE_INDEX:
        return mongoc_client_write_command_with_opts(client, db, op->opts, NULL, reply, e);
    case OP_EXPLAIN:
        return mongoc_client_read_command_with_opts(client, db, op->opts, NULL, NULL, reply, e);
    case OP_PING:
        return mongoc_client_command_simple(client, "admin", op->opts, NULL, reply, e);
    }
    return true;
}

/* The reply of a driver call that succeeded, read into res. */
static int read_reply(const op_t *op, const bson_t *reply, dl_store_res_t *res)
{
    bson_iter_t it;

    switch (op->kind) {
    case OP_FIND:
        return op->rc;
    case OP_COUNT:
        res->count = op->n;
        break;
    case OP_UPDATE:
        res->matched = dl_mongo_reply_int(reply, "matchedCount");
        res->count = dl_mongo_reply_int(reply, "modifiedCount");
        break;
    case OP_FIND_ONE_AND_UPDATE:
        if (bson_iter_init_find(&it, reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            res->count = 1;
            res->matched = dl_mongo_reply_updated_existing(reply);
            return dl_mongo_put_value(&res->json, &it, 0);
        }
        dl_buf_append_str(&res->json, "null");
        break;
    case OP_REMOVE:
        res->count = dl_mongo_reply_int(reply, "deletedCount");
        res->matched = res->count;
        break;
    case OP_EXPLAIN:
        return dl_mongo_plan_lines(reply, &res->json);
    case OP_PING:
        dl_buf_append_str(&res->json, "{\"ok\":1}");
        break;
    case OP_INSERT:
    case OP_CREATE_INDEX:
        break;
    }
    return 0;
}

/*
 * What every operation shares: pops a client, starts a transaction when
 * txn_wanted (and the deployment has them), opens collection coll (NULL: a
 * command, none), makes the driver call, maps its error or reads its reply,
 * and cleans up.
 */
static int run_op(mongo_store_t *ms, const char *coll, op_t *op, int txn_wanted,
                  dl_store_res_t *res)
{
    const char *name = op_names[op->kind];
    mongoc_client_t *client;
    mongoc_collection_t *c = NULL;
    bson_t reply;
    bson_error_t e;
    txn_t txn;
    int rc;

    client = dl_mongo_acquire(ms, res);
    if (client == NULL)
        return res->status;
    rc = txn_begin(ms, client, txn_wanted, name, &txn, res);
    if (rc == 0) {
        if (coll != NULL)
            c = mongoc_client_get_collection(client, ms->db, coll);
        if (!call_driver(op, ms->db, client, c, &txn.opts, &reply, &e, res))
            rc = dl_mongo_map_error(ms, name, &e, &reply, res);
        else
            rc = read_reply(op, &reply, res);
        bson_destroy(&reply);
        if (c != NULL)
            mongoc_collection_destroy(c);
    }
    rc = txn_end(ms, name, &txn, rc, res);
    mongoc_client_pool_push(ms->pool, client);
    return rc;
}

/* An operation on the documents query selects starts: its filter in
 * *filter, or its error in res (and nothing to free). */
static int begin_query(const dl_store_json_t *query, bson_t *filter, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    int rc = dl_mongo_prep_query(query->text, filter, res->err, sizeof(res->err));
    return rc != 0 ? dl_mongo_res_fail(res, rc) : 0;
}

/* As begin_query() with find options too (read first, so their error wins). */
static int begin_find(const dl_store_json_t *query, const dl_store_json_t *opts,
                      find_opts_t *fo, bson_t *filter, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    int rc = dl_mongo_parse_find_opts(opts->text, fo, res->err, sizeof(res->err));
    if (rc == 0)
        rc = dl_mongo_prep_query(query->text, filter, res->err, sizeof(res->err));
    if (rc != 0) {
        dl_mongo_find_opts_free(fo);
        return dl_mongo_res_fail(res, rc);
    }
    return 0;
}

int dl_mongo_find(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                  const dl_store_json_t *opts, dl_store_res_t *res)
{
    op_t op = {.kind = OP_FIND};
    bson_t filter, fopts;
    find_opts_t fo;
    int rc;

    rc = begin_find(query, opts, &fo, &filter, res);
    if (rc != 0)
        return rc;
    dl_mongo_find_opts_to_bson(&fo, &fopts);
    dl_mongo_find_opts_free(&fo);
    op.filter = &filter;
    op.opts = &fopts;
    rc = run_op((mongo_store_t *)s, coll, &op, 0, res);
    bson_destroy(&filter);
    bson_destroy(&fopts);
    return dl_mongo_finish(res, rc);
}

/* count and remove: an operation on a filter alone (remove: in a transaction when multi). */
static int filter_op(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                     op_kind_t kind, int multi, dl_store_res_t *res)
{
    op_t op = {.kind = kind, .multi = multi};
    bson_t filter;
    int rc;

    rc = begin_query(query, &filter, res);
    if (rc != 0)
        return rc;
    op.filter = &filter;
    rc = run_op((mongo_store_t *)s, coll, &op, multi, res);
    bson_destroy(&filter);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_count(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                   dl_store_res_t *res)
{
    return filter_op(s, coll, query, OP_COUNT, 0, res);
}

/* The documents of an insert, _id first, and their ids as a JSON array in res->json. */
static int insert_docs(const bson_t *raw, bson_t **docs_out, size_t *n_out, dl_store_res_t *res)
{
    bson_iter_t it, id;
    bson_t *docs;
    size_t n = 0, cap = 0;
    int rc = 0;

    bson_iter_init(&it, raw);
    while (bson_iter_next(&it))
        cap++;
    docs = dl_calloc(cap ? cap : 1, sizeof(*docs));
    if (docs == NULL)
        return dl_err_format(res->err, sizeof(res->err), DL_ENOMEM,
                             "mongodb insert: out of memory");
    bson_iter_init(&it, raw);
    dl_buf_append_char(&res->json, '[');
    while (rc == 0 && bson_iter_next(&it)) {
        rc = dl_mongo_doc_from_bson(&it, &docs[n], res->err, sizeof(res->err));
        if (rc != 0)
            break;
        bson_iter_init_find(&id, &docs[n], "_id");
        if (n > 0)
            dl_buf_append_char(&res->json, ',');
        dl_mongo_put_value(&res->json, &id, 0);
        n++;
    }
    dl_buf_append_char(&res->json, ']');
    *docs_out = docs;
    *n_out = n;
    return rc;
}

int dl_mongo_insert(dl_store_t *s, const char *coll, const dl_store_json_t *docs_json,
                    dl_store_res_t *res)
{
    op_t op = {.kind = OP_INSERT};
    const bson_t **ptrs = NULL;
    bson_t raw, *docs = NULL;
    size_t n = 0, i;
    int rc;

    dl_store_res_reset(res);
    rc = dl_mongo_parse_json(docs_json->text, 1, "documents", &raw, res->err, sizeof(res->err));
    if (rc != 0)
        return dl_mongo_res_fail(res, rc);
    rc = insert_docs(&raw, &docs, &n, res);
    bson_destroy(&raw);
    if (rc == 0 && n > 0) {
        ptrs = dl_calloc(n, sizeof(*ptrs));
        if (ptrs == NULL)
            rc = dl_err_format(res->err, sizeof(res->err), DL_ENOMEM,
                               "mongodb insert: out of memory");
        for (i = 0; rc == 0 && i < n; i++)
            ptrs[i] = &docs[i];
    }
    if (rc == 0 && n > 0) {
        op.docs = ptrs;
        op.n_docs = n;
        rc = run_op((mongo_store_t *)s, coll, &op, n > 1, res);
    }
    for (i = 0; docs != NULL && i < n; i++)
        bson_destroy(&docs[i]);
    dl_free(docs);
    dl_free(ptrs);
    if (rc != 0)
        dl_buf_reset(&res->json);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_update(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                    const dl_store_json_t *update, int multi, dl_store_res_t *res)
{
    op_t op = {.kind = OP_UPDATE, .multi = multi};
    bson_t filter, upd;
    int rc;

    rc = begin_query(query, &filter, res);
    if (rc != 0)
        return rc;
    rc = dl_mongo_prep_update(update->text, &upd, res->err, sizeof(res->err));
    if (rc != 0) {
        bson_destroy(&filter);
        return dl_mongo_res_fail(res, rc);
    }
    op.filter = &filter;
    op.upd = &upd;
    rc = run_op((mongo_store_t *)s, coll, &op, multi, res);
    bson_destroy(&filter);
    bson_destroy(&upd);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_find_one_and_update(dl_store_t *s, const char *coll,
                                 const dl_store_json_t *query, const dl_store_json_t *update,
                                 const dl_store_json_t *opts, dl_store_res_t *res)
{
    op_t op = {.kind = OP_FIND_ONE_AND_UPDATE};
    bson_t filter, upd;
    find_opts_t fo;
    int flags, rc;

    rc = begin_find(query, opts, &fo, &filter, res);
    if (rc != 0)
        return rc;
    rc = dl_mongo_prep_update(update->text, &upd, res->err, sizeof(res->err));
    if (rc != 0) {
        bson_destroy(&filter);
        dl_mongo_find_opts_free(&fo);
        return dl_mongo_res_fail(res, rc);
    }
    op.fam = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(op.fam, &upd);
    if (!bson_empty(&fo.sort))
        mongoc_find_and_modify_opts_set_sort(op.fam, &fo.sort);
    if (!bson_empty(&fo.projection))
        mongoc_find_and_modify_opts_set_fields(op.fam, &fo.projection);
    flags = MONGOC_FIND_AND_MODIFY_RETURN_NEW;
    if (fo.upsert)
        flags |= MONGOC_FIND_AND_MODIFY_UPSERT;
    mongoc_find_and_modify_opts_set_flags(op.fam, (mongoc_find_and_modify_flags_t)flags);
    op.filter = &filter;
    rc = run_op((mongo_store_t *)s, coll, &op, 0, res);
    mongoc_find_and_modify_opts_destroy(op.fam);
    dl_mongo_find_opts_free(&fo);
    bson_destroy(&filter);
    bson_destroy(&upd);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_remove(dl_store_t *s, const char *coll, const dl_store_json_t *query, int multi,
                    dl_store_res_t *res)
{
    return filter_op(s, coll, query, OP_REMOVE, multi, res);
}

/* keys: [[field, 1|-1], ...] (or {field: 1|-1}) -> key document and "a_1_b_-1" name. */
static int index_keys(const char *json, bson_t *keys, dl_buf_t *name, char *err, size_t errlen)
{
    const char *p = dl_mongo_skip_space(json);
    bson_t raw, wrap;
    bson_iter_t it;
    int rc;

    rc = dl_mongo_parse_json(p, p == NULL || *p != '{', "index keys", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(keys);
    bson_init(&wrap);
    if (*p == '{')
        bson_append_document(&wrap, "k", 1, &raw);
    else
        bson_append_array(&wrap, "k", 1, &raw);
    bson_iter_init_find(&it, &wrap, "k");
    rc = dl_mongo_parse_sort(&it, keys, name, err, errlen);
    if (rc == 0 && name->oom)
        rc = dl_err_format(err, errlen, DL_ENOMEM, "mongodb: out of memory");
    bson_destroy(&wrap);
    bson_destroy(&raw);
    if (rc != 0)
        bson_destroy(keys);
    return rc;
}

int dl_mongo_create_index(dl_store_t *s, const char *coll, const dl_store_json_t *keys_json,
                          int unique, dl_store_res_t *res)
{
    op_t op = {.kind = OP_CREATE_INDEX};
    bson_t keys, cmd, arr, idx;
    dl_buf_t name = DL_BUF_INIT;
    int rc;

    dl_store_res_reset(res);
    rc = index_keys(keys_json->text, &keys, &name, res->err, sizeof(res->err));
    if (rc != 0) {
        dl_buf_free(&name);
        return dl_mongo_res_fail(res, rc);
    }
    bson_init(&cmd);
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    bson_append_array_begin(&cmd, "indexes", 7, &arr);
    bson_append_document_begin(&arr, "0", 1, &idx);
    BSON_APPEND_DOCUMENT(&idx, "key", &keys);
    bson_append_utf8(&idx, "name", 4, name.data, (int)name.len);
    if (unique)
        BSON_APPEND_BOOL(&idx, "unique", true);
    bson_append_document_end(&arr, &idx);
    bson_append_array_end(&cmd, &arr);
    op.opts = &cmd;
    rc = run_op((mongo_store_t *)s, NULL, &op, 0, res);
    bson_destroy(&cmd);
    bson_destroy(&keys);
    dl_buf_free(&name);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_explain(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                     const dl_store_json_t *opts, dl_store_res_t *res)
{
    op_t op = {.kind = OP_EXPLAIN};
    bson_t filter, cmd, find;
    find_opts_t fo;
    int rc;

    rc = begin_find(query, opts, &fo, &filter, res);
    if (rc != 0)
        return rc;
    bson_init(&cmd);
    bson_append_document_begin(&cmd, "explain", 7, &find);
    BSON_APPEND_UTF8(&find, "find", coll);
    BSON_APPEND_DOCUMENT(&find, "filter", &filter);
    if (!bson_empty(&fo.sort))
        BSON_APPEND_DOCUMENT(&find, "sort", &fo.sort);
    if (!bson_empty(&fo.projection))
        BSON_APPEND_DOCUMENT(&find, "projection", &fo.projection);
    if (fo.skip > 0)
        BSON_APPEND_INT64(&find, "skip", fo.skip);
    if (fo.limit > 0)
        BSON_APPEND_INT64(&find, "limit", fo.limit);
    bson_append_document_end(&cmd, &find);
    BSON_APPEND_UTF8(&cmd, "verbosity", "queryPlanner");
    dl_mongo_find_opts_free(&fo);
    op.opts = &cmd;
    rc = run_op((mongo_store_t *)s, NULL, &op, 0, res);
    bson_destroy(&cmd);
    bson_destroy(&filter);
    return dl_mongo_finish(res, rc);
}

int dl_mongo_ping(dl_store_t *s, dl_store_res_t *res)
{
    op_t op = {.kind = OP_PING};
    bson_t cmd;
    int rc;

    dl_store_res_reset(res);
    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "ping", 1);
    op.opts = &cmd;
    rc = run_op((mongo_store_t *)s, NULL, &op, 0, res);
    bson_destroy(&cmd);
    return dl_mongo_finish(res, rc);
}
