/*
 * mongo/bson_json.c - BSON to JSON by our own walk, so Lua sees the shapes SQLite gives:
 * ObjectIds as hex, dates as ISO-8601 UTC, binary as base64, integers past
 * 2^53 as strings; and explain replies to plan lines.
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
#include "common/num.h"

/* A double as the runtime spells numbers (common/num.h). Documents have no
 * spelling for NaN or an infinity: null. -0 stays "-0", which the JSON decoder
 * reads back as -0 (num.h writes "0"). */
static void put_double(dl_buf_t *b, double d)
{
    char tmp[DL_NUM_ROOM];
    size_t n = dl_num_format_double(d, tmp);

    if (n == 0)
        dl_buf_append_str(b, "null");
    else if (d == 0 && signbit(d))
        dl_buf_append_str(b, "-0");
    else
        dl_buf_append(b, tmp, n);
}

void dl_mongo_put_int64(dl_buf_t *b, int64_t v)
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
        dl_mongo_put_int64(b, ms);
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

int dl_mongo_put_value(dl_buf_t *b, const bson_iter_t *it, int depth)
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
        dl_mongo_put_int64(b, bson_iter_int64(it));
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
        rc = dl_mongo_put_value(b, it, depth);
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
