/*
 * mongo/prep.c - JSON to BSON for the driver: queries, updates and documents (a 24-hex
 * "_id" string as an ObjectId) and find options, all checked by the front.
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

const char *dl_mongo_skip_space(const char *p)
{
    while (p != NULL && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Parses JSON text that must be an object (or an array when want_array). */
int dl_mongo_parse_json(const char *json, int want_array, const char *what, bson_t *out, char *err,
                        size_t errlen)
{
    bson_error_t e;
    const char *p = dl_mongo_skip_space(json);

    if (p == NULL || *p == '\0') {
        if (want_array)
            return dl_err_format(err, errlen, DL_EINVAL, "mongodb: %s: expected a JSON array",
                                 what);
        bson_init(out);
        return 0;
    }
    if (*p != (want_array ? '[' : '{'))
        return dl_err_format(err, errlen, DL_EINVAL, "mongodb: %s: expected a JSON %s", what,
                             want_array ? "array" : "object");
    if (!bson_init_from_json(out, p, -1, &e))
        return dl_err_format(err, errlen, DL_EINVAL, "mongodb: %s: invalid JSON: %s", what,
                             e.message);
    return 0;
}



static int too_big(char *err, size_t errlen)
{
    return dl_err_format(err, errlen, DL_ETOOBIG, "mongodb: document too large");
}



/* Appends it's value under key; a 24-hex string as an ObjectId when as_id. */
static int append_value(bson_t *out, const char *key, const bson_iter_t *it, int as_id,
                        char *err, size_t errlen)
{
    bson_oid_t oid;
    uint32_t len = 0;
    const char *s;

    if (as_id && BSON_ITER_HOLDS_UTF8(it)) {
        s = bson_iter_utf8(it, &len);
        if (len == 24 && bson_oid_is_valid(s, len)) {
            bson_oid_init_from_string(&oid, s);
            return bson_append_oid(out, key, -1, &oid) ? 0 : too_big(err, errlen);
        }
    }
    return bson_append_iter(out, key, -1, it) ? 0 : too_big(err, errlen);
}

static int has_dollar_key(const bson_iter_t *it)
{
    bson_iter_t child;

    if (!bson_iter_recurse(it, &child))
        return 0;
    while (bson_iter_next(&child)) {
        if (bson_iter_key(&child)[0] == '$')
            return 1;
    }
    return 0;
}

static int copy_query(bson_iter_t *it, bson_t *out, int depth, char *err, size_t errlen);

/* {op: [...]}: $in / $nin (depth < 0), an array whose elements are compared
 * like $eq operands, or $and / $or, an array of queries at depth + 1. */
static int copy_array(bson_t *out, const char *op, const bson_iter_t *it, int as_id, int depth,
                      char *err, size_t errlen)
{
    bson_iter_t elems, sub;
    bson_t arr, child;
    char idx[16];
    const char *ikey;
    uint32_t i;
    int rc = 0;

    bson_iter_recurse(it, &elems);
    if (!bson_append_array_begin(out, op, -1, &arr))
        return too_big(err, errlen);
    for (i = 0; rc == 0 && bson_iter_next(&elems); i++) {
        bson_uint32_to_string(i, &ikey, idx, sizeof(idx));
        if (depth < 0) {
            rc = append_value(&arr, ikey, &elems, as_id, err, errlen);
        } else if (!bson_append_document_begin(&arr, ikey, -1, &child)) {
            rc = too_big(err, errlen);
        } else {
            bson_iter_recurse(&elems, &sub);
            rc = copy_query(&sub, &child, depth + 1, err, errlen);
            bson_append_document_end(&arr, &child);
        }
    }
    bson_append_array_end(out, &arr);
    return rc;
}

/*
 * {key: {...}} copied field by field: a query's operator document
 * {field: {"$op": operand, ...}} (update 0), or the fields of one update
 * operator (update 1; plain paths and values: the front).
 */
static int copy_fields(bson_t *out, const char *key, const bson_iter_t *it, int update, char *err,
                       size_t errlen)
{
    int as_id = strcmp(key, "_id") == 0;
    bson_iter_t fields;
    bson_t doc;
    int rc = 0;

    bson_iter_recurse(it, &fields);
    if (!bson_append_document_begin(out, key, -1, &doc))
        return too_big(err, errlen);
    while (rc == 0 && bson_iter_next(&fields)) {
        const char *f = bson_iter_key(&fields);
        if (update)
            rc = append_value(&doc, f, &fields, strcmp(f, "_id") == 0, err, errlen);
        else if (strcmp(f, "$in") == 0 || strcmp(f, "$nin") == 0)
            rc = copy_array(&doc, f, &fields, as_id, -1, err, errlen);
        else
            rc = append_value(&doc, f, &fields, as_id && strcmp(f, "$exists") != 0, err, errlen);
    }
    bson_append_document_end(out, &doc);
    return rc;
}

/* Copies a query the front checked, converting "_id" strings to ObjectIds. */
static int copy_query(bson_iter_t *it, bson_t *out, int depth, char *err, size_t errlen)
{
    int rc = 0;

    while (rc == 0 && bson_iter_next(it)) {
        const char *key = bson_iter_key(it);
        if (key[0] == '$')
            rc = copy_array(out, key, it, 0, depth, err, errlen); /* $and, $or */
        else if (BSON_ITER_HOLDS_DOCUMENT(it) && has_dollar_key(it))
            rc = copy_fields(out, key, it, 0, err, errlen);
        else
            rc = append_value(out, key, it, strcmp(key, "_id") == 0, err, errlen);
    }
    return rc;
}

/* Query or update JSON -> BSON in *out (initialized only on success); what
 * names it in messages. */
static int prep(const char *json, const char *what, int is_query, bson_t *out, char *err,
                size_t errlen)
{
    bson_iter_t it;
    bson_t raw;
    int rc;

    rc = dl_mongo_parse_json(json, 0, what, &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(out);
    if (!bson_iter_init(&it, &raw))
        rc = dl_err_format(err, errlen, DL_EINVAL, "mongodb: malformed %s", what);
    else if (is_query)
        rc = copy_query(&it, out, 0, err, errlen);
    else
        while (rc == 0 && bson_iter_next(&it))
            rc = copy_fields(out, bson_iter_key(&it), &it, 1, err, errlen);
    if (rc != 0)
        bson_destroy(out);
    bson_destroy(&raw);
    return rc;
}

/* Query JSON -> checked BSON in *out (initialized only on success). */
int dl_mongo_prep_query(const char *json, bson_t *out, char *err, size_t errlen)
{
    return prep(json, "query", 1, out, err, errlen);
}

/* Update JSON (checked by the front) -> BSON in *out (initialized only on success). */
int dl_mongo_prep_update(const char *json, bson_t *out, char *err, size_t errlen)
{
    return prep(json, "update", 0, out, err, errlen);
}

/* A document to insert: "_id" first, a hex string made an ObjectId, a new ObjectId if absent. */
int dl_mongo_doc_from_bson(const bson_iter_t *doc_it, bson_t *out, char *err, size_t errlen)
{
    bson_iter_t it;
    bson_oid_t oid;
    int rc = 0;

    bson_init(out);
    bson_iter_recurse(doc_it, &it);
    if (bson_iter_find(&it, "_id")) {
        rc = append_value(out, "_id", &it, 1, err, errlen);
    } else {
        bson_oid_init(&oid, NULL);
        if (!bson_append_oid(out, "_id", 3, &oid))
            rc = too_big(err, errlen);
    }
    bson_iter_recurse(doc_it, &it);
    while (rc == 0 && bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") != 0 && !bson_append_iter(out, NULL, 0, &it))
            rc = too_big(err, errlen);
    }
    if (rc != 0)
        bson_destroy(out);
    return rc;
}

/* One document's JSON -> BSON ready to insert (initialized only on success). */
DL_TEST_HOOK int dl_mongo_prep_doc(const char *json, bson_t *out, char *err, size_t errlen)
{
    bson_t raw, wrap;
    bson_iter_t it;
    int rc;

    rc = dl_mongo_parse_json(json, 0, "document", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(&wrap);
    bson_append_document(&wrap, "d", 1, &raw);
    bson_iter_init_find(&it, &wrap, "d");
    rc = dl_mongo_doc_from_bson(&it, out, err, errlen);
    bson_destroy(&wrap);
    bson_destroy(&raw);
    return rc;
}


/*
 * [[field, 1|-1], ...] or {field: 1|-1} (checked by the front) -> {field:
 * 1|-1, ...}; name (may be NULL) gets "a_1_b_-1".
 */
int dl_mongo_parse_sort(const bson_iter_t *it, bson_t *sort, dl_buf_t *name, char *err,
                        size_t errlen)
{
    bson_iter_t elems, pair;
    const char *field;

    bson_iter_recurse(it, &elems);
    while (bson_iter_next(&elems)) {
        if (BSON_ITER_HOLDS_DOCUMENT(it)) {
            field = bson_iter_key(&elems);
            pair = elems;
        } else {
            bson_iter_recurse(&elems, &pair);
            bson_iter_next(&pair);
            field = bson_iter_utf8(&pair, NULL);
            bson_iter_next(&pair);
        }
        int32_t d = (int32_t)bson_iter_as_int64(&pair);
        if (!bson_append_int32(sort, field, -1, d))
            return too_big(err, errlen);
        if (name != NULL)
            dl_buf_appendf(name, "%s%s_%d", name->len ? "_" : "", field, (int)d);
    }
    return 0;
}



static int parse_projection(const bson_iter_t *it, bson_t *proj, char *err, size_t errlen)
{
    bson_iter_t f;

    if (!BSON_ITER_HOLDS_DOCUMENT(it))
        return 0; /* null: none */
    bson_iter_recurse(it, &f);
    while (bson_iter_next(&f)) {
        if (!bson_append_bool(proj, bson_iter_key(&f), -1, bson_iter_as_bool(&f)))
            return too_big(err, errlen);
    }
    return 0;
}

void dl_mongo_find_opts_free(find_opts_t *fo)
{
    bson_destroy(&fo->sort);
    bson_destroy(&fo->projection);
}

/* Parses opts JSON; fo is initialized (free with dl_mongo_find_opts_free) even on failure. */
int dl_mongo_parse_find_opts(const char *json, find_opts_t *fo, char *err, size_t errlen)
{
    bson_t raw;
    bson_iter_t it;
    int rc;

    memset(fo, 0, sizeof(*fo));
    bson_init(&fo->sort);
    bson_init(&fo->projection);
    rc = dl_mongo_parse_json(json, 0, "options", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_iter_init(&it, &raw);
    while (rc == 0 && bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (strcmp(key, "sort") == 0 && !BSON_ITER_HOLDS_NULL(&it))
            rc = dl_mongo_parse_sort(&it, &fo->sort, NULL, err, errlen);
        else if (strcmp(key, "skip") == 0)
            fo->skip = bson_iter_as_int64(&it);
        else if (strcmp(key, "limit") == 0)
            fo->limit = bson_iter_as_int64(&it);
        else if (strcmp(key, "projection") == 0 || strcmp(key, "fields") == 0)
            rc = parse_projection(&it, &fo->projection, err, errlen);
        else if (strcmp(key, "upsert") == 0)
            fo->upsert = bson_iter_as_bool(&it);
        /* other keys (e.g. "new") are accepted and ignored */
    }
    bson_destroy(&raw);
    return rc;
}

/* The driver's find options from fo. */
void dl_mongo_find_opts_to_bson(const find_opts_t *fo, bson_t *out)
{
    bson_init(out);
    if (!bson_empty(&fo->sort))
        bson_append_document(out, "sort", 4, &fo->sort);
    if (!bson_empty(&fo->projection))
        bson_append_document(out, "projection", 10, &fo->projection);
    if (fo->skip > 0)
        bson_append_int64(out, "skip", 4, fo->skip);
    if (fo->limit > 0)
        bson_append_int64(out, "limit", 5, fo->limit);
}
