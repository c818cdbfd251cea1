/*
 * mongo_store.c - the MongoDB backend of the document store: the ops table of
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

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include "common/buf.h"
#include "common/codec_json.h"
#include "common/internal.h"
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

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int res_fail(dl_store_res_t *res, int code)
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
static int map_error(mongo_store_t *ms, const char *op, const bson_error_t *e,
                     const bson_t *reply, dl_store_res_t *res)
{
    int64_t wcode = reply_write_code(reply);
    int code;

    if (e->domain == MONGOC_ERROR_SERVER_SELECTION) {
        set_err(res->err, sizeof(res->err), 0,
                "mongodb: no server reachable at %s within %d ms (%s)", ms->hosts,
                ms->select_timeout_ms, e->message);
        return res_fail(res, DL_ETIMEDOUT);
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
    set_err(res->err, sizeof(res->err), 0, "mongodb %s: %s", op,
            e->message[0] ? e->message : "unknown error");
    return res_fail(res, code);
}

/* ------------------------------------------------------------------------ */
/* BSON -> JSON                                                             */
/* ------------------------------------------------------------------------ */

static void put_double(dl_buf_t *b, double d)
{
    char tmp[40];
    int prec;

    if (!isfinite(d)) {
        dl_buf_append_str(b, "null");
        return;
    }
    /* the shortest of %.15g..%.17g that reads back as the same double */
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    dl_buf_append_str(b, tmp);
}

static void put_int64(dl_buf_t *b, int64_t v)
{
    if (v > JSON_SAFE_INT || v < -JSON_SAFE_INT)
        dl_buf_appendf(b, "\"%" PRId64 "\"", v);
    else
        dl_buf_appendf(b, "%" PRId64, v);
}

/* "2024-01-02T03:04:05.678Z"; ms since the epoch, negative allowed. */
static void put_date(dl_buf_t *b, int64_t ms)
{
    int64_t secs = ms / 1000;
    int64_t rem = ms % 1000;
    struct tm tm;
    time_t t;

    if (rem < 0) {
        rem += 1000;
        secs--;
    }
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL) {
        put_int64(b, ms);
        return;
    }
    dl_buf_appendf(b, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

static void put_base64(dl_buf_t *b, const uint8_t *p, uint32_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t i;
    char q[4];

    dl_buf_append_char(b, '"');
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        q[0] = tab[v >> 18];
        q[1] = tab[(v >> 12) & 63];
        q[2] = tab[(v >> 6) & 63];
        q[3] = tab[v & 63];
        dl_buf_append(b, q, 4);
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        q[0] = tab[v >> 18];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = '=';
        dl_buf_append(b, q, 4);
    }
    dl_buf_append_char(b, '"');
}

static void put_oid(dl_buf_t *b, const bson_oid_t *oid)
{
    char hex[25];

    bson_oid_to_string(oid, hex);
    dl_json_put_string(b, hex, 24);
}

static int put_container(dl_buf_t *b, bson_iter_t *it, int as_array, int depth);

static int put_value(dl_buf_t *b, const bson_iter_t *it, int depth)
{
    uint32_t len = 0;
    const char *s;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOUBLE:
        put_double(b, bson_iter_double(it));
        break;
    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        dl_json_put_string(b, s, len);
        break;
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        bson_iter_t child;
        if (!bson_iter_recurse(it, &child))
            return DL_ECODEC;
        return put_container(b, &child, BSON_ITER_HOLDS_ARRAY(it), depth + 1);
    }
    case BSON_TYPE_BINARY: {
        bson_subtype_t sub;
        const uint8_t *bin = NULL;
        bson_iter_binary(it, &sub, &len, &bin);
        put_base64(b, bin, len);
        break;
    }
    case BSON_TYPE_OID:
        put_oid(b, bson_iter_oid(it));
        break;
    case BSON_TYPE_BOOL:
        dl_buf_append_str(b, bson_iter_bool(it) ? "true" : "false");
        break;
    case BSON_TYPE_DATE_TIME:
        put_date(b, bson_iter_date_time(it));
        break;
    case BSON_TYPE_REGEX: {
        const char *opts = NULL;
        dl_buf_t tmp = DL_BUF_INIT;
        s = bson_iter_regex(it, &opts);
        dl_buf_appendf(&tmp, "/%s/%s", s ? s : "", opts ? opts : "");
        dl_json_put_string(b, tmp.data ? tmp.data : "", tmp.len);
        dl_buf_free(&tmp);
        break;
    }
    case BSON_TYPE_DBPOINTER: {
        const bson_oid_t *oid = NULL;
        bson_iter_dbpointer(it, &len, &s, &oid);
        put_oid(b, oid);
        break;
    }
    case BSON_TYPE_CODE:
        s = bson_iter_code(it, &len);
        dl_json_put_string(b, s, len);
        break;
    case BSON_TYPE_SYMBOL:
        s = bson_iter_symbol(it, &len);
        dl_json_put_string(b, s, len);
        break;
    case BSON_TYPE_CODEWSCOPE: {
        uint32_t scope_len;
        const uint8_t *scope;
        s = bson_iter_codewscope(it, &len, &scope_len, &scope);
        dl_json_put_string(b, s, len);
        break;
    }
    case BSON_TYPE_INT32:
        dl_buf_appendf(b, "%" PRId32, bson_iter_int32(it));
        break;
    case BSON_TYPE_INT64:
        put_int64(b, bson_iter_int64(it));
        break;
    case BSON_TYPE_TIMESTAMP: {
        uint32_t ts, inc;
        bson_iter_timestamp(it, &ts, &inc);
        dl_buf_appendf(b, "{\"t\":%" PRIu32 ",\"i\":%" PRIu32 "}", ts, inc);
        break;
    }
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t dec;
        char str[BSON_DECIMAL128_STRING];
        bson_iter_decimal128(it, &dec);
        bson_decimal128_to_string(&dec, str);
        dl_json_put_string(b, str, strlen(str));
        break;
    }
    case BSON_TYPE_EOD:
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_NULL:
    case BSON_TYPE_MAXKEY:
    case BSON_TYPE_MINKEY:
    default:
        dl_buf_append_str(b, "null");
        break;
    }
    return 0;
}

static int put_container(dl_buf_t *b, bson_iter_t *it, int as_array, int depth)
{
    int first = 1;
    int rc;

    if (depth > MAX_DEPTH)
        return DL_ECODEC;
    dl_buf_append_char(b, as_array ? '[' : '{');
    while (bson_iter_next(it)) {
        if (!first)
            dl_buf_append_char(b, ',');
        first = 0;
        if (!as_array) {
            dl_json_put_string(b, bson_iter_key(it), bson_iter_key_len(it));
            dl_buf_append_char(b, ':');
        }
        rc = put_value(b, it, depth);
        if (rc != 0)
            return rc;
    }
    dl_buf_append_char(b, as_array ? ']' : '}');
    return 0;
}

/* Appends doc as a JSON object (or array: its values in order) to out. */
int dl_mongo_bson_to_json(const bson_t *doc, int as_array, dl_buf_t *out)
{
    bson_iter_t it;
    int rc;

    if (!bson_iter_init(&it, doc))
        return DL_ECODEC;
    rc = put_container(out, &it, as_array, 0);
    if (rc == 0 && out->oom)
        rc = DL_ENOMEM;
    return rc;
}

/* One plan stage and its inputs, depth first: "FETCH", "IXSCAN name_1", ... */
static void plan_stage(const bson_iter_t *stage, dl_buf_t *out, int *n, int depth)
{
    bson_iter_t it, sub;
    dl_buf_t line = DL_BUF_INIT;

    if (depth > MAX_DEPTH || !BSON_ITER_HOLDS_DOCUMENT(stage))
        return;
    bson_iter_recurse(stage, &it);
    if (bson_iter_find(&it, "queryPlan")) {
        /* slot-based engine (5.1+): the classic plan is one level down */
        plan_stage(&it, out, n, depth + 1);
        return;
    }
    bson_iter_recurse(stage, &it);
    if (bson_iter_find(&it, "stage") && BSON_ITER_HOLDS_UTF8(&it))
        dl_buf_append_str(&line, bson_iter_utf8(&it, NULL));
    bson_iter_recurse(stage, &it);
    if (bson_iter_find(&it, "indexName") && BSON_ITER_HOLDS_UTF8(&it))
        dl_buf_appendf(&line, " %s", bson_iter_utf8(&it, NULL));
    if (line.len > 0) {
        if (*n > 0)
            dl_buf_append_char(out, ',');
        dl_json_put_string(out, line.data, line.len);
        (*n)++;
    }
    dl_buf_free(&line);
    bson_iter_recurse(stage, &it);
    if (bson_iter_find(&it, "inputStage"))
        plan_stage(&it, out, n, depth + 1);
    bson_iter_recurse(stage, &it);
    if (bson_iter_find(&it, "inputStages") && BSON_ITER_HOLDS_ARRAY(&it)) {
        bson_iter_recurse(&it, &sub);
        while (bson_iter_next(&sub))
            plan_stage(&sub, out, n, depth + 1);
    }
}

/* An explain reply -> a JSON array of plan lines (the whole reply if it has no plan). */
int dl_mongo_plan_lines(const bson_t *reply, dl_buf_t *out)
{
    bson_iter_t it;
    int n = 0;

    dl_buf_append_char(out, '[');
    if (bson_iter_init(&it, reply)
        && bson_iter_find_descendant(&it, "queryPlanner.winningPlan", &it))
        plan_stage(&it, out, &n, 0);
    if (n == 0 && dl_mongo_bson_to_json(reply, 0, out) != 0)
        return DL_ECODEC;
    dl_buf_append_char(out, ']');
    return out->oom ? DL_ENOMEM : 0;
}

/* ------------------------------------------------------------------------ */
/* JSON -> BSON, and the subset check                                       */
/* ------------------------------------------------------------------------ */



static const char *skip_space(const char *p)
{
    while (p != NULL && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Parses JSON text that must be an object (or an array when want_array). */
static int parse_json(const char *json, int want_array, const char *what, bson_t *out, char *err,
                      size_t errlen)
{
    bson_error_t e;
    const char *p = skip_space(json);

    if (p == NULL || *p == '\0') {
        if (want_array)
            return set_err(err, errlen, DL_EINVAL, "mongodb: %s: expected a JSON array", what);
        bson_init(out);
        return 0;
    }
    if (*p != (want_array ? '[' : '{'))
        return set_err(err, errlen, DL_EINVAL, "mongodb: %s: expected a JSON %s", what,
                       want_array ? "array" : "object");
    if (!bson_init_from_json(out, p, -1, &e))
        return set_err(err, errlen, DL_EINVAL, "mongodb: %s: invalid JSON: %s", what, e.message);
    return 0;
}



static int too_big(char *err, size_t errlen)
{
    return set_err(err, errlen, DL_ETOOBIG, "mongodb: document too large");
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

/* $in / $nin: an array whose elements are compared like $eq operands. */
static int copy_in_list(bson_t *doc, const char *op, const bson_iter_t *it, int as_id, char *err,
                        size_t errlen)
{
    bson_iter_t elems;
    bson_t arr;
    char idx[16];
    const char *ikey;
    uint32_t i;
    int rc = 0;

    bson_iter_recurse(it, &elems);
    if (!bson_append_array_begin(doc, op, -1, &arr))
        return too_big(err, errlen);
    for (i = 0; rc == 0 && bson_iter_next(&elems); i++) {
        bson_uint32_to_string(i, &ikey, idx, sizeof(idx));
        rc = append_value(&arr, ikey, &elems, as_id, err, errlen);
    }
    bson_append_array_end(doc, &arr);
    return rc;
}

/* {field: {"$op": operand, ...}}: copies the operator document. */
static int copy_operators(bson_t *out, const char *field, const bson_iter_t *it, char *err,
                          size_t errlen)
{
    int as_id = strcmp(field, "_id") == 0;
    bson_iter_t ops;
    bson_t doc;
    int rc = 0;

    bson_iter_recurse(it, &ops);
    if (!bson_append_document_begin(out, field, -1, &doc))
        return too_big(err, errlen);
    while (rc == 0 && bson_iter_next(&ops)) {
        const char *op = bson_iter_key(&ops);
        if (strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0)
            rc = copy_in_list(&doc, op, &ops, as_id, err, errlen);
        else
            rc = append_value(&doc, op, &ops, as_id && strcmp(op, "$exists") != 0, err, errlen);
    }
    bson_append_document_end(out, &doc);
    return rc;
}

static int copy_query(bson_iter_t *it, bson_t *out, int depth, char *err, size_t errlen);

/* {"$and"|"$or": [query, ...]} */
static int copy_logical(bson_t *out, const char *op, const bson_iter_t *it, int depth, char *err,
                        size_t errlen)
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
        if (!bson_append_document_begin(&arr, ikey, -1, &child)) {
            rc = too_big(err, errlen);
            break;
        }
        bson_iter_recurse(&elems, &sub);
        rc = copy_query(&sub, &child, depth + 1, err, errlen);
        bson_append_document_end(&arr, &child);
    }
    bson_append_array_end(out, &arr);
    return rc;
}

/* Copies a query the front checked, converting "_id" strings to ObjectIds. */
static int copy_query(bson_iter_t *it, bson_t *out, int depth, char *err, size_t errlen)
{
    int rc = 0;

    while (rc == 0 && bson_iter_next(it)) {
        const char *key = bson_iter_key(it);
        if (key[0] == '$')
            rc = copy_logical(out, key, it, depth, err, errlen); /* $and, $or */
        else if (BSON_ITER_HOLDS_DOCUMENT(it) && has_dollar_key(it))
            rc = copy_operators(out, key, it, err, errlen);
        else
            rc = append_value(out, key, it, strcmp(key, "_id") == 0, err, errlen);
    }
    return rc;
}

/* Query JSON -> checked BSON in *out (initialized only on success). */
int dl_mongo_prep_query(const char *json, bson_t *out, char *err, size_t errlen)
{
    bson_iter_t it;
    bson_t raw;
    int rc;

    rc = parse_json(json, 0, "query", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(out);
    if (!bson_iter_init(&it, &raw))
        rc = set_err(err, errlen, DL_EINVAL, "mongodb: malformed query");
    else
        rc = copy_query(&it, out, 0, err, errlen);
    if (rc != 0)
        bson_destroy(out);
    bson_destroy(&raw);
    return rc;
}

/* The fields of one update operator (plain paths and values: the front). */
static int copy_update_fields(bson_t *out, const char *op, const bson_iter_t *it, char *err,
                              size_t errlen)
{
    bson_iter_t fields;
    bson_t doc;
    int rc = 0;

    bson_iter_recurse(it, &fields);
    if (!bson_append_document_begin(out, op, -1, &doc))
        return too_big(err, errlen);
    while (rc == 0 && bson_iter_next(&fields)) {
        const char *f = bson_iter_key(&fields);
        rc = append_value(&doc, f, &fields, strcmp(f, "_id") == 0, err, errlen);
    }
    bson_append_document_end(out, &doc);
    return rc;
}

/* Update JSON (checked by the front) -> BSON in *out (initialized only on success). */
int dl_mongo_prep_update(const char *json, bson_t *out, char *err, size_t errlen)
{
    bson_iter_t it;
    bson_t raw;
    int rc;

    rc = parse_json(json, 0, "update", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(out);
    if (!bson_iter_init(&it, &raw))
        rc = set_err(err, errlen, DL_EINVAL, "mongodb: malformed update");
    while (rc == 0 && bson_iter_next(&it))
        rc = copy_update_fields(out, bson_iter_key(&it), &it, err, errlen);
    if (rc != 0)
        bson_destroy(out);
    bson_destroy(&raw);
    return rc;
}

/* A document to insert: "_id" first, a hex string made an ObjectId, a new ObjectId if absent. */
static int doc_from_bson(const bson_iter_t *doc_it, bson_t *out, char *err, size_t errlen)
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
int dl_mongo_prep_doc(const char *json, bson_t *out, char *err, size_t errlen)
{
    bson_t raw, wrap;
    bson_iter_t it;
    int rc;

    rc = parse_json(json, 0, "document", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(&wrap);
    bson_append_document(&wrap, "d", 1, &raw);
    bson_iter_init_find(&it, &wrap, "d");
    rc = doc_from_bson(&it, out, err, errlen);
    bson_destroy(&wrap);
    bson_destroy(&raw);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Options: sort, skip, limit, projection (and upsert for find_one_and_update) */
/* ------------------------------------------------------------------------ */

typedef struct {
    bson_t sort;       /* always initialized; empty: none */
    bson_t projection; /* always initialized; empty: none */
    int64_t skip;
    int64_t limit;     /* 0: none */
    int upsert;
} find_opts_t;



/*
 * [[field, 1|-1], ...] or {field: 1|-1} (checked by the front) -> {field:
 * 1|-1, ...}; name (may be NULL) gets "a_1_b_-1".
 */
static int parse_sort(const bson_iter_t *it, bson_t *sort, dl_buf_t *name, char *err,
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

static void find_opts_free(find_opts_t *fo)
{
    bson_destroy(&fo->sort);
    bson_destroy(&fo->projection);
}

/* Parses opts JSON; fo is initialized (free with find_opts_free) even on failure. */
static int parse_find_opts(const char *json, find_opts_t *fo, char *err, size_t errlen)
{
    bson_t raw;
    bson_iter_t it;
    int rc;

    memset(fo, 0, sizeof(*fo));
    bson_init(&fo->sort);
    bson_init(&fo->projection);
    rc = parse_json(json, 0, "options", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_iter_init(&it, &raw);
    while (rc == 0 && bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (strcmp(key, "sort") == 0 && !BSON_ITER_HOLDS_NULL(&it))
            rc = parse_sort(&it, &fo->sort, NULL, err, errlen);
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
static void find_opts_to_bson(const find_opts_t *fo, bson_t *out)
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

/* ------------------------------------------------------------------------ */
/* URI and pool                                                             */
/* ------------------------------------------------------------------------ */

static void log_handler(mongoc_log_level_t level, const char *domain, const char *message,
                        void *arg)
{
    int lvl = DL_LOG_DEBUG;

    DL_UNUSED(arg);
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        lvl = DL_LOG_ERROR;
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        lvl = DL_LOG_WARN;
    else if (level == MONGOC_LOG_LEVEL_TRACE)
        return;
    dl_log(lvl, "mongoc %s: %s", domain, message);
}

static void global_init(void)
{
    /* the handler first: mongoc_init() itself may warn (no shared memory for
     * its counters), and a line straight to stderr is not a log record */
    mongoc_log_set_handler(log_handler, NULL);
    mongoc_init();
}

static void default_timeout(mongoc_uri_t *uri, const char *key, int32_t ms)
{
    if (!mongoc_uri_has_option(uri, key))
        mongoc_uri_set_option_as_int32(uri, key, ms);
}

static int parse_pool_size(const char *s)
{
    char *end = NULL;
    long v;

    if (s == NULL || *s == '\0')
        return 0;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v <= 0 || v > 100000)
        return 0;
    return (int)v;
}

/*
 * Parses the URI (NULL or "": MONGO_URI, else the default) and applies the
 * default timeouts. *pool_out: pool_size, else MONGO_POOL_SIZE, else the
 * URI's maxPoolSize, else 10.
 */
/* mongoc's URI error quotes the text it refused, which may be the password
 * ('Password "SECRET:x" must not have unescaped chars') or an option's
 * value. When the URI holds a userinfo or any query option, every quoted
 * text in the message (from its first to its last quote of that kind)
 * becomes "***"; a message about the password says what
 * to do instead of showing it. */
static void redact_uri_error(const char *uri, const char *msg, char *out, size_t len)
{
    const char *rest = strstr(uri, "://");
    rest = rest ? rest + 3 : uri;
    if (strchr(rest, '@') == NULL && strchr(rest, '?') == NULL) {
        snprintf(out, len, "%s", msg);
        return;
    }
    if (strncmp(msg, "Password ", 9) == 0) {
        snprintf(out, len, "the password must be percent-encoded (RFC 3986); it is not shown");
        return;
    }
    size_t o = 0;
    for (const char *p = msg; *p != '\0' && o + 6 < len; p++) {
        /* to the last such quote: the refused text may hold the quote too */
        const char *close = (*p == '"' || *p == '\'') ? strrchr(p + 1, *p) : NULL;
        if (close == NULL && (*p == '"' || *p == '\'')) {
            memcpy(out + o, "***", 4); /* an unpaired quote: what follows may be secret */
            return;
        }
        if (close == NULL) {
            out[o++] = *p;
            continue;
        }
        out[o++] = *p;
        memcpy(out + o, "***", 3);
        o += 3;
        out[o++] = *p;
        p = close;
    }
    out[o] = '\0';
}

int dl_mongo_uri_prepare(const char *uri_str, int pool_size, mongoc_uri_t **out, int *pool_out,
                         char *err, size_t errlen)
{
    bson_error_t e;
    mongoc_uri_t *uri;
    int n;

    pthread_once(&init_once, global_init);
    *out = NULL;
    if (uri_str == NULL || *uri_str == '\0')
        uri_str = getenv("MONGO_URI");
    if (uri_str == NULL || *uri_str == '\0')
        uri_str = DL_MONGO_DEFAULT_URI;
    memset(&e, 0, sizeof(e));
    uri = mongoc_uri_new_with_error(uri_str, &e);
    if (uri == NULL) {
        char shown[sizeof(e.message)];
        redact_uri_error(uri_str, e.message[0] ? e.message : "cannot parse", shown,
                         sizeof(shown));
        return set_err(err, errlen, DL_EINVAL, "mongodb: invalid URI: %s", shown);
    }
    default_timeout(uri, MONGOC_URI_CONNECTTIMEOUTMS, DL_MONGO_DEFAULT_CONNECT_TIMEOUT_MS);
    default_timeout(uri, MONGOC_URI_SOCKETTIMEOUTMS, DL_MONGO_DEFAULT_SOCKET_TIMEOUT_MS);
    default_timeout(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, DL_MONGO_DEFAULT_SELECT_TIMEOUT_MS);
    n = pool_size > 0 ? pool_size : parse_pool_size(getenv("MONGO_POOL_SIZE"));
    if (n <= 0 && mongoc_uri_has_option(uri, MONGOC_URI_MAXPOOLSIZE))
        n = mongoc_uri_get_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, 0);
    if (n <= 0)
        n = DL_MONGO_DEFAULT_POOL_SIZE;
    *pool_out = n;
    *out = uri;
    return 0;
}

static void describe_hosts(mongo_store_t *ms)
{
    const mongoc_host_list_t *h = mongoc_uri_get_hosts(ms->uri);
    dl_buf_t b = DL_BUF_INIT;

    for (; h != NULL; h = h->next)
        dl_buf_appendf(&b, "%s%s", b.len ? "," : "", h->host_and_port);
    if (b.len == 0 && mongoc_uri_get_srv_hostname(ms->uri) != NULL)
        dl_buf_appendf(&b, "%s (SRV)", mongoc_uri_get_srv_hostname(ms->uri));
    snprintf(ms->hosts, sizeof(ms->hosts), "%.*s", (int)b.len, b.len && b.data ? b.data : "?");
    dl_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* Resets res (the front checked the collection name); 0. */
static int begin(dl_store_res_t *res)
{
    res->status = 0;
    res->err[0] = '\0';
    res->count = 0;
    res->matched = 0;
    dl_buf_reset(&res->json);
    return 0;
}

static mongoc_client_t *acquire(mongo_store_t *ms, dl_store_res_t *res)
{
    mongoc_client_t *c = mongoc_client_pool_pop(ms->pool);

    if (c == NULL) {
        set_err(res->err, sizeof(res->err), 0, "mongodb: no free connection in the pool of %d",
                ms->pool_size);
        res_fail(res, DL_ETIMEDOUT);
    }
    return c;
}

static int finish(dl_store_res_t *res, int rc)
{
    if (rc == 0 && res->json.oom)
        rc = DL_ENOMEM;
    if (rc != 0 && res->err[0] == '\0')
        set_err(res->err, sizeof(res->err), 0, "mongodb: %s", dl_strerror(rc));
    res->status = rc;
    return rc;
}

static int64_t reply_int(const bson_t *reply, const char *key)
{
    bson_iter_t it;

    if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

/* find_one_and_update: 1 when an existing document was updated, 0 when upserted. */
static int64_t reply_updated_existing(const bson_t *reply)
{
    bson_iter_t it;

    if (bson_iter_init(&it, reply)
        && bson_iter_find_descendant(&it, "lastErrorObject.updatedExisting", &it))
        return bson_iter_as_bool(&it) ? 1 : 0;
    return 1;
}

/*
 * A write to several documents runs in a transaction where the deployment
 * has them (replica set primary, mongos, load balancer); on a standalone
 * server a write that fails part-way keeps what it did.
 */
typedef struct {
    mongoc_client_session_t *cs; /* NULL: no transaction */
    bson_t opts;                 /* the write's options: the session, if any */
} txn_t;

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
        return map_error(ms, op, &e, NULL, res);
    type = mongoc_server_description_type(sd);
    supported = strcmp(type, "RSPrimary") == 0 || strcmp(type, "Mongos") == 0
                || strcmp(type, "LoadBalancer") == 0;
    mongoc_server_description_destroy(sd);
    if (!supported)
        return 0;
    t->cs = mongoc_client_start_session(client, NULL, &e);
    if (t->cs == NULL)
        return map_error(ms, op, &e, NULL, res);
    if (!mongoc_client_session_start_transaction(t->cs, NULL, &e))
        return map_error(ms, op, &e, NULL, res);
    if (!mongoc_client_session_append(t->cs, &t->opts, &e))
        return map_error(ms, op, &e, NULL, res);
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
                rc = map_error(ms, op, &e, &reply, res);
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

static int op_find(dl_store_t *s, const char *coll, const char *query, const char *opts,
                   dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    bson_t filter, fopts;
    find_opts_t fo;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    mongoc_cursor_t *cur;
    const bson_t *doc, *reply = NULL;
    bson_error_t e;
    int rc;

    rc = begin(res);
    if (rc != 0)
        return rc;
    rc = parse_find_opts(opts, &fo, res->err, sizeof(res->err));
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0) {
        find_opts_free(&fo);
        return res_fail(res, rc);
    }
    find_opts_to_bson(&fo, &fopts);
    find_opts_free(&fo);
    client = acquire(ms, res);
    if (client != NULL) {
        c = mongoc_client_get_collection(client, ms->db, coll);
        cur = mongoc_collection_find_with_opts(c, &filter, &fopts, NULL);
        dl_buf_append_char(&res->json, '[');
        while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
            if (res->count > 0)
                dl_buf_append_char(&res->json, ',');
            rc = dl_mongo_bson_to_json(doc, 0, &res->json);
            res->count++;
        }
        dl_buf_append_char(&res->json, ']');
        if (rc == 0 && mongoc_cursor_error_document(cur, &e, &reply)) {
            rc = map_error(ms, "find", &e, reply, res);
            dl_buf_reset(&res->json);
            res->count = 0;
        }
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(c);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&filter);
    bson_destroy(&fopts);
    return finish(res, rc);
}

static int op_count(dl_store_t *s, const char *coll, const char *query, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t filter, reply;
    bson_error_t e;
    int64_t n;
    int rc;

    rc = begin(res);
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0)
        return res_fail(res, rc);
    client = acquire(ms, res);
    if (client != NULL) {
        c = mongoc_client_get_collection(client, ms->db, coll);
        n = mongoc_collection_count_documents(c, &filter, NULL, NULL, &reply, &e);
        if (n < 0)
            rc = map_error(ms, "count", &e, &reply, res);
        else
            res->count = n;
        bson_destroy(&reply);
        mongoc_collection_destroy(c);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&filter);
    return finish(res, rc);
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
        return set_err(res->err, sizeof(res->err), DL_ENOMEM, "mongodb insert: out of memory");
    bson_iter_init(&it, raw);
    dl_buf_append_char(&res->json, '[');
    while (rc == 0 && bson_iter_next(&it)) {
        rc = doc_from_bson(&it, &docs[n], res->err, sizeof(res->err));
        if (rc != 0)
            break;
        bson_iter_init_find(&id, &docs[n], "_id");
        if (n > 0)
            dl_buf_append_char(&res->json, ',');
        put_value(&res->json, &id, 0);
        n++;
    }
    dl_buf_append_char(&res->json, ']');
    *docs_out = docs;
    *n_out = n;
    return rc;
}

static int op_insert(dl_store_t *s, const char *coll, const char *docs_json, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    const bson_t **ptrs = NULL;
    bson_t raw, reply, *docs = NULL;
    bson_error_t e;
    size_t n = 0, i;
    txn_t txn;
    int rc;

    rc = begin(res);
    if (rc == 0)
        rc = parse_json(docs_json, 1, "documents", &raw, res->err, sizeof(res->err));
    if (rc != 0)
        return res_fail(res, rc);
    rc = insert_docs(&raw, &docs, &n, res);
    bson_destroy(&raw);
    if (rc == 0 && n > 0) {
        ptrs = dl_calloc(n, sizeof(*ptrs));
        if (ptrs == NULL)
            rc = set_err(res->err, sizeof(res->err), DL_ENOMEM, "mongodb insert: out of memory");
        for (i = 0; rc == 0 && i < n; i++)
            ptrs[i] = &docs[i];
    }
    if (rc == 0 && n > 0) {
        client = acquire(ms, res);
        if (client != NULL) {
            rc = txn_begin(ms, client, n > 1, "insert", &txn, res);
            if (rc == 0) {
                c = mongoc_client_get_collection(client, ms->db, coll);
                if (!mongoc_collection_insert_many(c, ptrs, n, &txn.opts, &reply, &e))
                    rc = map_error(ms, "insert", &e, &reply, res);
                res->count = reply_int(&reply, "insertedCount");
                bson_destroy(&reply);
                mongoc_collection_destroy(c);
            }
            rc = txn_end(ms, "insert", &txn, rc, res);
            mongoc_client_pool_push(ms->pool, client);
        } else {
            rc = res->status;
        }
    }
    for (i = 0; docs != NULL && i < n; i++)
        bson_destroy(&docs[i]);
    dl_free(docs);
    dl_free(ptrs);
    if (rc != 0)
        dl_buf_reset(&res->json);
    return finish(res, rc);
}

static int op_update(dl_store_t *s, const char *coll, const char *query, const char *update,
                     int multi, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t filter, upd, reply;
    bson_error_t e;
    txn_t txn;
    bool ok;
    int rc;

    rc = begin(res);
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0)
        return res_fail(res, rc);
    rc = dl_mongo_prep_update(update, &upd, res->err, sizeof(res->err));
    if (rc != 0) {
        bson_destroy(&filter);
        return res_fail(res, rc);
    }
    client = acquire(ms, res);
    if (client != NULL) {
        rc = txn_begin(ms, client, multi, "update", &txn, res);
        if (rc == 0) {
            c = mongoc_client_get_collection(client, ms->db, coll);
            if (multi)
                ok = mongoc_collection_update_many(c, &filter, &upd, &txn.opts, &reply, &e);
            else
                ok = mongoc_collection_update_one(c, &filter, &upd, &txn.opts, &reply, &e);
            if (!ok) {
                rc = map_error(ms, "update", &e, &reply, res);
            } else {
                res->matched = reply_int(&reply, "matchedCount");
                res->count = reply_int(&reply, "modifiedCount");
            }
            bson_destroy(&reply);
            mongoc_collection_destroy(c);
        }
        rc = txn_end(ms, "update", &txn, rc, res);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&filter);
    bson_destroy(&upd);
    return finish(res, rc);
}

static int op_find_one_and_update(dl_store_t *s, const char *coll, const char *query,
                                  const char *update, const char *opts, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_find_and_modify_opts_t *fam;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t filter, upd, reply;
    bson_iter_t it;
    bson_error_t e;
    find_opts_t fo;
    int flags, rc;

    rc = begin(res);
    if (rc != 0)
        return rc;
    rc = parse_find_opts(opts, &fo, res->err, sizeof(res->err));
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0) {
        find_opts_free(&fo);
        return res_fail(res, rc);
    }
    rc = dl_mongo_prep_update(update, &upd, res->err, sizeof(res->err));
    if (rc != 0) {
        bson_destroy(&filter);
        find_opts_free(&fo);
        return res_fail(res, rc);
    }
    fam = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(fam, &upd);
    if (!bson_empty(&fo.sort))
        mongoc_find_and_modify_opts_set_sort(fam, &fo.sort);
    if (!bson_empty(&fo.projection))
        mongoc_find_and_modify_opts_set_fields(fam, &fo.projection);
    flags = MONGOC_FIND_AND_MODIFY_RETURN_NEW;
    if (fo.upsert)
        flags |= MONGOC_FIND_AND_MODIFY_UPSERT;
    mongoc_find_and_modify_opts_set_flags(fam, (mongoc_find_and_modify_flags_t)flags);
    client = acquire(ms, res);
    if (client != NULL) {
        c = mongoc_client_get_collection(client, ms->db, coll);
        if (!mongoc_collection_find_and_modify_with_opts(c, &filter, fam, &reply, &e)) {
            rc = map_error(ms, "find_one_and_update", &e, &reply, res);
        } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            res->count = 1;
            res->matched = reply_updated_existing(&reply);
            rc = put_value(&res->json, &it, 0);
        } else {
            dl_buf_append_str(&res->json, "null");
        }
        bson_destroy(&reply);
        mongoc_collection_destroy(c);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    mongoc_find_and_modify_opts_destroy(fam);
    find_opts_free(&fo);
    bson_destroy(&filter);
    bson_destroy(&upd);
    return finish(res, rc);
}

static int op_remove(dl_store_t *s, const char *coll, const char *query, int multi,
                     dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t filter, reply;
    bson_error_t e;
    txn_t txn;
    bool ok;
    int rc;

    rc = begin(res);
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0)
        return res_fail(res, rc);
    client = acquire(ms, res);
    if (client != NULL) {
        rc = txn_begin(ms, client, multi, "remove", &txn, res);
        if (rc == 0) {
            c = mongoc_client_get_collection(client, ms->db, coll);
            if (multi)
                ok = mongoc_collection_delete_many(c, &filter, &txn.opts, &reply, &e);
            else
                ok = mongoc_collection_delete_one(c, &filter, &txn.opts, &reply, &e);
            if (!ok) {
                rc = map_error(ms, "remove", &e, &reply, res);
            } else {
                res->count = reply_int(&reply, "deletedCount");
                res->matched = res->count;
            }
            bson_destroy(&reply);
            mongoc_collection_destroy(c);
        }
        rc = txn_end(ms, "remove", &txn, rc, res);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&filter);
    return finish(res, rc);
}

/* keys: [[field, 1|-1], ...] (or {field: 1|-1}) -> key document and "a_1_b_-1" name. */
static int index_keys(const char *json, bson_t *keys, dl_buf_t *name, char *err, size_t errlen)
{
    const char *p = skip_space(json);
    bson_t raw, wrap;
    bson_iter_t it;
    int rc;

    rc = parse_json(p, p == NULL || *p != '{', "index keys", &raw, err, errlen);
    if (rc != 0)
        return rc;
    bson_init(keys);
    bson_init(&wrap);
    if (*p == '{')
        bson_append_document(&wrap, "k", 1, &raw);
    else
        bson_append_array(&wrap, "k", 1, &raw);
    bson_iter_init_find(&it, &wrap, "k");
    rc = parse_sort(&it, keys, name, err, errlen);
    if (rc == 0 && name->oom)
        rc = set_err(err, errlen, DL_ENOMEM, "mongodb: out of memory");
    bson_destroy(&wrap);
    bson_destroy(&raw);
    if (rc != 0)
        bson_destroy(keys);
    return rc;
}

static int op_create_index(dl_store_t *s, const char *coll, const char *keys_json, int unique,
                           dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    bson_t keys, cmd, arr, idx, reply;
    dl_buf_t name = DL_BUF_INIT;
    bson_error_t e;
    int rc;

    rc = begin(res);
    if (rc != 0)
        return rc;
    rc = index_keys(keys_json, &keys, &name, res->err, sizeof(res->err));
    if (rc != 0) {
        dl_buf_free(&name);
        return res_fail(res, rc);
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
    client = acquire(ms, res);
    if (client != NULL) {
        if (!mongoc_client_write_command_with_opts(client, ms->db, &cmd, NULL, &reply, &e))
            rc = map_error(ms, "create_index", &e, &reply, res);
        bson_destroy(&reply);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&cmd);
    bson_destroy(&keys);
    dl_buf_free(&name);
    return finish(res, rc);
}

static int op_explain(dl_store_t *s, const char *coll, const char *query, const char *opts,
                      dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    bson_t filter, cmd, find, reply;
    bson_error_t e;
    find_opts_t fo;
    int rc;

    rc = begin(res);
    if (rc != 0)
        return rc;
    rc = parse_find_opts(opts, &fo, res->err, sizeof(res->err));
    if (rc == 0)
        rc = dl_mongo_prep_query(query, &filter, res->err, sizeof(res->err));
    if (rc != 0) {
        find_opts_free(&fo);
        return res_fail(res, rc);
    }
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
    find_opts_free(&fo);
    client = acquire(ms, res);
    if (client != NULL) {
        if (!mongoc_client_read_command_with_opts(client, ms->db, &cmd, NULL, NULL, &reply, &e))
            rc = map_error(ms, "explain", &e, &reply, res);
        else
            rc = dl_mongo_plan_lines(&reply, &res->json);
        bson_destroy(&reply);
        mongoc_client_pool_push(ms->pool, client);
    } else {
        rc = res->status;
    }
    bson_destroy(&cmd);
    bson_destroy(&filter);
    return finish(res, rc);
}

static int op_ping(dl_store_t *s, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_client_t *client;
    bson_t cmd, reply;
    bson_error_t e;
    int rc = 0;

    begin(res);
    client = acquire(ms, res);
    if (client == NULL)
        return res->status;
    bson_init(&cmd);
    BSON_APPEND_INT32(&cmd, "ping", 1);
    if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &e))
        rc = map_error(ms, "ping", &e, &reply, res);
    else
        dl_buf_append_str(&res->json, "{\"ok\":1}");
    bson_destroy(&reply);
    bson_destroy(&cmd);
    mongoc_client_pool_push(ms->pool, client);
    return finish(res, rc);
}

/* ------------------------------------------------------------------------ */
/* Files: the GridFS bucket "uploads"                                       */
/* ------------------------------------------------------------------------ */

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
    set_err(res->err, sizeof(res->err), 0, "mongodb %s: cannot %s %s: %s", op, what, path,
            strerror(err));
    return res_fail(res, err == ENOENT ? DL_ENOENT : err == ENOMEM ? DL_ENOMEM : DL_EIO);
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
    return map_error(ms, op, &e, NULL, res);
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
        map_error(ms, op, &e, NULL, res);
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
        put_value(out, &it, 0);
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
    put_int64(out, len);
    dl_buf_append_str(out, ",\"sha256\":");
    put_utf8_or_null(out, has_sha ? &sha : NULL);
    dl_buf_append_str(out, ",\"created_at\":");
    if (bson_iter_init_find(&it, doc, "uploadDate") && BSON_ITER_HOLDS_DATE_TIME(&it))
        put_int64(out, bson_iter_date_time(&it));
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
        return map_error(ms, "file_put", &e, NULL, res);
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

static int op_file_put(dl_store_t *s, const char *path, const char *filename,
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

    begin(res);
    if (path == NULL || *path == '\0' || filename == NULL) {
        set_err(res->err, sizeof(res->err), 0, "mongodb file_put: needs a path and a filename");
        return res_fail(res, DL_EINVAL);
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
        set_err(res->err, sizeof(res->err), 0, "mongodb file_put: %s is not a regular file",
                path);
        return res_fail(res, DL_EINVAL);
    }
    buf = dl_malloc(FILE_BUF_SIZE);
    if (buf == NULL) {
        close(fd);
        set_err(res->err, sizeof(res->err), 0, "mongodb file_put: out of memory");
        return res_fail(res, DL_ENOMEM);
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
    client = acquire(ms, res);
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
    return finish(res, rc);
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
        set_err(res->err, sizeof(res->err), 0, "mongodb file_get: out of memory");
        return res_fail(res, DL_ENOMEM);
    }
    memset(&e, 0, sizeof(e));
    down = mongoc_gridfs_bucket_open_download_stream(bucket, id, &e);
    if (down == NULL) {
        dl_free(buf);
        return map_error(ms, "file_get", &e, NULL, res);
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
        set_err(res->err, sizeof(res->err), 0,
                "mongodb file_get: file %s has %" PRId64 " bytes, %" PRId64 " expected", hex, got,
                length);
        rc = res_fail(res, DL_EIO);
    }
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = local_fail(res, "file_get", "write", dest_path, errno);
    if (rc != 0 && fd >= 0)
        unlink(dest_path);
    mongoc_stream_destroy(down);
    dl_free(buf);
    return rc;
}

static int op_file_get(dl_store_t *s, const char *id, const char *dest_path,
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

    begin(res);
    if (dest_path == NULL || *dest_path == '\0') {
        set_err(res->err, sizeof(res->err), 0, "mongodb file_get: needs a destination path");
        return res_fail(res, DL_EINVAL);
    }
    if (!file_id_value(id, &idv)) {
        set_err(res->err, sizeof(res->err), 0, "mongodb file_get: no file with id \"%.40s\"",
                id != NULL ? id : "");
        return res_fail(res, DL_ENOENT);
    }
    client = acquire(ms, res);
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
            set_err(res->err, sizeof(res->err), 0,
                    "mongodb file_get: file %s is corrupt (length %" PRId64
                    ", chunkSize %" PRId64 ")",
                    id, length, chunk);
            rc = res_fail(res, DL_EIO);
        }
    } else if (mongoc_cursor_error_document(cur, &e, &reply)) {
        rc = map_error(ms, "file_get", &e, reply, res);
    } else {
        set_err(res->err, sizeof(res->err), 0, "mongodb file_get: no file with id \"%s\"", id);
        rc = res_fail(res, DL_ENOENT);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(&filter);
    if (rc == 0)
        rc = download_to(ms, bucket, id, &idv, length, dest_path, res);
    mongoc_gridfs_bucket_destroy(bucket);
    mongoc_client_pool_push(ms->pool, client);
    if (rc != 0)
        dl_buf_reset(&res->json);
    return finish(res, rc);
}

static int op_file_remove(dl_store_t *s, const char *id, dl_store_res_t *res)
{
    mongo_store_t *ms = (mongo_store_t *)s;
    mongoc_gridfs_bucket_t *bucket;
    mongoc_client_t *client;
    bson_value_t idv;
    bson_error_t e;
    int rc = 0;

    begin(res);
    if (!file_id_value(id, &idv))
        return 0; /* no such file: nothing deleted */
    client = acquire(ms, res);
    if (client == NULL)
        return res->status;
    bucket = open_bucket(ms, client, "file_remove", res);
    if (bucket != NULL) {
        memset(&e, 0, sizeof(e));
        if (mongoc_gridfs_bucket_delete_by_id(bucket, &idv, &e))
            res->count = 1;
        else if (!(e.domain == MONGOC_ERROR_GRIDFS
                   && e.code == MONGOC_ERROR_GRIDFS_BUCKET_FILE_NOT_FOUND))
            rc = map_error(ms, "file_remove", &e, NULL, res);
        mongoc_gridfs_bucket_destroy(bucket);
    } else {
        rc = res->status;
    }
    mongoc_client_pool_push(ms->pool, client);
    return finish(res, rc);
}

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
    .find = op_find,
    .count = op_count,
    .insert = op_insert,
    .update = op_update,
    .find_one_and_update = op_find_one_and_update,
    .remove = op_remove,
    .create_index = op_create_index,
    .explain = op_explain,
    .ping = op_ping,
    .file_put = op_file_put,
    .file_get = op_file_get,
    .file_remove = op_file_remove,
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
        set_err(err, errlen, DL_ENOMEM, "mongodb: out of memory");
        return NULL;
    }
    ms->base.ops = &mongo_ops;
    ms->uri = uri;
    ms->pool_size = n;
    ms->select_timeout_ms = mongoc_uri_get_option_as_int32(
        uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, DL_MONGO_DEFAULT_SELECT_TIMEOUT_MS);
    db = mongoc_uri_get_database(uri);
    snprintf(ms->db, sizeof(ms->db), "%s", db != NULL && *db ? db : DL_MONGO_DEFAULT_DB);
    describe_hosts(ms);
    memset(&e, 0, sizeof(e));
    ms->pool = mongoc_client_pool_new_with_error(uri, &e);
    if (ms->pool == NULL) {
        set_err(err, errlen, DL_EINVAL, "mongodb: cannot create a client pool: %s",
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
