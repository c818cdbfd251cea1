/*
 * test_mongo_store.c - the MongoDB store without a server: BSON -> JSON
 * presentation, JSON -> BSON with "_id" strings made ObjectIds, the query and
 * update subset check, URI defaults, and every operation against a port where
 * nothing listens (each must fail with a clear message well inside 3 s), the
 * GridFS file operations included. With DEVLOOP_TEST_MONGO_URI set,
 * mongo_crud_live and mongo_files_live run round trips against that
 * deployment; without it, they print a skip line and pass.
 */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <mongoc/mongoc.h>

#include "common/buf.h"
#include "common/internal.h"
#include "store/mongo/mongo_int.h" /* the conversions under test */
#include "store/mongo_store.h"
#include "store/store.h"
#include "unit.h"

#define DEAD_URI "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"
#define HEX_ID "65a1b2c3d4e5f6a7b8c9d0e1"

/* File-local in runtime/store/mongo/files.c, opened to unit builds by DL_STATIC. */
int dl_mongo_file_json(const bson_t *doc, dl_buf_t *out, int64_t *length, int64_t *chunk_size);

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The JSON text of doc, in a static buffer. */
static const char *to_json(const bson_t *doc)
{
    static char text[4096];
    dl_buf_t b = DL_BUF_INIT;
    int rc = dl_mongo_bson_to_json(doc, 0, &b);

    snprintf(text, sizeof(text), "%s%.*s", rc == 0 ? "" : "ERR:", (int)b.len,
             b.data ? b.data : "");
    dl_buf_free(&b);
    return text;
}

/* A new folder /tmp/dl_mongo_XXXXXX in dir. */
static void make_tmpdir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/dl_mongo_XXXXXX");
    DL_ASSERT(mkdtemp(dir) != NULL);
}

/* Removes the files of a folder made by make_tmpdir, then the folder. */
static void remove_tmpdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];

    if (d == NULL)
        return;
    for (e = readdir(d); e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Writes n bytes of a repeating pattern to path. */
static void write_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    size_t i;

    DL_ASSERT(f != NULL);
    for (i = 0; i < n; i++)
        fputc((int)((i * 31 + i / 7) & 0xff), f);
    DL_ASSERT(fclose(f) == 0);
}

static int exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* The front's check (store.c), then the conversion, as a query takes them. */
static int prep_query_rc(const char *json, char *err, size_t errlen)
{
    bson_t out;
    dl_store_res_t res;
    dl_store_res_init(&res);
    int rc = dl_store_check(DL_STORE_IN_QUERY, json, &res);
    snprintf(err, errlen, "%s", res.err);
    dl_store_res_free(&res);
    if (rc != 0)
        return rc;
    rc = dl_mongo_prep_query(json, &out, err, errlen);

    if (rc == 0)
        bson_destroy(&out);
    return rc;
}

static int prep_update_rc(const char *json, char *err, size_t errlen)
{
    bson_t out;
    dl_store_res_t res;
    dl_store_res_init(&res);
    int rc = dl_store_check(DL_STORE_IN_UPDATE, json, &res);
    snprintf(err, errlen, "%s", res.err);
    dl_store_res_free(&res);
    if (rc != 0)
        return rc;
    rc = dl_mongo_prep_update(json, &out, err, errlen);

    if (rc == 0)
        bson_destroy(&out);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* BSON -> JSON                                                             */
/* ------------------------------------------------------------------------ */

/* Doubles leave as num.h spells them; NaN and infinities as null, -0 as -0. */
DL_TEST(mongo_bson_to_json_doubles)
{
    static const struct {
        double d;
        const char *json;
    } cases[] = {
        {0.1, "0.1"}, {-2.5, "-2.5"}, {3.0, "3"}, {-0.0, "-0"}, {1e21, "1e+21"},
        {1e15, "1000000000000000"}, {4.9406564584124654e-324, "4.9406564584125e-324"},
    };
    char want[64];
    bson_t doc;
    for (size_t k = 0; k < DL_ARRAY_SIZE(cases); k++) {
        bson_init(&doc);
        bson_append_double(&doc, "d", -1, cases[k].d);
        snprintf(want, sizeof(want), "{\"d\":%s}", cases[k].json);
        EXPECT_STR(to_json(&doc), want);
        /* the text reads back as the very double (codec_json.c decodes with strtod) */
        EXPECT(strtod(cases[k].json, NULL) == cases[k].d);
        bson_destroy(&doc);
    }
    bson_init(&doc);
    bson_append_double(&doc, "nan", -1, NAN);
    bson_append_double(&doc, "inf", -1, INFINITY);
    bson_append_double(&doc, "ninf", -1, -INFINITY);
    EXPECT_STR(to_json(&doc), "{\"nan\":null,\"inf\":null,\"ninf\":null}");
    bson_destroy(&doc);
}

DL_TEST(mongo_bson_to_json)
{
    bson_t doc, sub, arr, inner;
    bson_oid_t oid;
    const uint8_t bin[] = {'h', 'e', 'l', 'l', 'o'};
    const uint8_t bin2[] = {0xff, 0xfe};

    bson_init(&doc);
    bson_oid_init_from_string(&oid, HEX_ID);
    bson_append_oid(&doc, "_id", -1, &oid);
    bson_append_date_time(&doc, "created_at", -1, 1704067200123LL);
    bson_append_date_time(&doc, "before", -1, -1);
    bson_append_int32(&doc, "i32", -1, -42);
    bson_append_int64(&doc, "i64", -1, 9007199254740992LL);
    bson_append_int64(&doc, "big", -1, 9007199254740993LL);
    bson_append_int64(&doc, "neg_big", -1, -9007199254740993LL);
    bson_append_double(&doc, "d", -1, 1.5);
    bson_append_double(&doc, "tenth", -1, 0.1);
    bson_append_double(&doc, "whole", -1, 3.0);
    bson_append_binary(&doc, "bin", -1, BSON_SUBTYPE_BINARY, bin, sizeof(bin));
    bson_append_binary(&doc, "bin2", -1, BSON_SUBTYPE_BINARY, bin2, sizeof(bin2));
    bson_append_bool(&doc, "yes", -1, true);
    bson_append_null(&doc, "nothing", -1);
    bson_append_utf8(&doc, "s", -1, "a\"b\\c\n\x01\xc3\xa9", -1);
    bson_append_document_begin(&doc, "nested", -1, &sub);
    bson_append_utf8(&sub, "name", -1, "x", -1);
    bson_append_array_begin(&sub, "tags", -1, &arr);
    bson_append_utf8(&arr, "0", -1, "a", -1);
    bson_append_int32(&arr, "1", -1, 2);
    bson_append_document_begin(&arr, "2", -1, &inner);
    bson_append_oid(&inner, "ref", -1, &oid);
    bson_append_document_end(&arr, &inner);
    bson_append_array_end(&sub, &arr);
    bson_append_document_end(&doc, &sub);
    bson_append_array_begin(&doc, "empty", -1, &arr);
    bson_append_array_end(&doc, &arr);

    EXPECT_STR(to_json(&doc),
               "{\"_id\":\"" HEX_ID "\","
               "\"created_at\":\"2024-01-01T00:00:00.123Z\","
               "\"before\":\"1969-12-31T23:59:59.999Z\","
               "\"i32\":-42,\"i64\":9007199254740992,"
               "\"big\":\"9007199254740993\",\"neg_big\":\"-9007199254740993\","
               "\"d\":1.5,\"tenth\":0.1,\"whole\":3,"
               "\"bin\":\"aGVsbG8=\",\"bin2\":\"//4=\","
               "\"yes\":true,\"nothing\":null,"
               "\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\","
               "\"nested\":{\"name\":\"x\",\"tags\":[\"a\",2,{\"ref\":\"" HEX_ID "\"}]},"
               "\"empty\":[]}");
    bson_destroy(&doc);

    /* as an array: the values in order, keys dropped */
    bson_init(&doc);
    bson_append_int32(&doc, "0", -1, 1);
    bson_append_utf8(&doc, "1", -1, "two", -1);
    {
        dl_buf_t b = DL_BUF_INIT;
        EXPECT_EQ(dl_mongo_bson_to_json(&doc, 1, &b), 0);
        EXPECT_MEM(b.data, b.len, "[1,\"two\"]", 9);
        dl_buf_free(&b);
    }
    bson_destroy(&doc);
}

DL_TEST(mongo_explain_lines)
{
    const char *json = "{\"queryPlanner\":{\"winningPlan\":{\"stage\":\"FETCH\","
                       "\"inputStage\":{\"stage\":\"OR\",\"inputStages\":["
                       "{\"stage\":\"IXSCAN\",\"indexName\":\"a_1\"},"
                       "{\"stage\":\"IXSCAN\",\"indexName\":\"b_-1\"}]}}},\"ok\":1}";
    const char *sbe = "{\"queryPlanner\":{\"winningPlan\":{\"queryPlan\":"
                      "{\"stage\":\"COLLSCAN\"},\"slotBasedPlan\":{}}}}";
    bson_error_t e;
    dl_buf_t b = DL_BUF_INIT;
    bson_t doc;

    EXPECT(bson_init_from_json(&doc, json, -1, &e));
    EXPECT_EQ(dl_mongo_plan_lines(&doc, &b), 0);
    EXPECT_MEM(b.data, b.len, "[\"FETCH\",\"OR\",\"IXSCAN a_1\",\"IXSCAN b_-1\"]", 41);
    bson_destroy(&doc);
    dl_buf_reset(&b);
    EXPECT(bson_init_from_json(&doc, sbe, -1, &e));
    EXPECT_EQ(dl_mongo_plan_lines(&doc, &b), 0);
    EXPECT_MEM(b.data, b.len, "[\"COLLSCAN\"]", 12);
    bson_destroy(&doc);
    dl_buf_reset(&b);
    EXPECT(bson_init_from_json(&doc, "{\"ok\":1}", -1, &e));
    EXPECT_EQ(dl_mongo_plan_lines(&doc, &b), 0);
    EXPECT_MEM(b.data, b.len, "[{\"ok\":1}]", 10);
    bson_destroy(&doc);
    dl_buf_free(&b);
}

DL_TEST(mongo_json_to_bson_ids)
{
    char err[256] = "";
    bson_t out;
    bson_iter_t it;
    char hex[25];

    /* a 24-hex _id becomes an ObjectId; other fields stay strings */
    EXPECT_EQ(dl_mongo_prep_query("{\"_id\":\"" HEX_ID "\",\"ref\":\"" HEX_ID "\"}", &out, err,
                                  sizeof(err)),
              0);
    EXPECT(bson_iter_init_find(&it, &out, "_id") && BSON_ITER_HOLDS_OID(&it));
    bson_oid_to_string(bson_iter_oid(&it), hex);
    EXPECT_STR(hex, HEX_ID);
    EXPECT(bson_iter_init_find(&it, &out, "ref") && BSON_ITER_HOLDS_UTF8(&it));
    EXPECT_STR(to_json(&out), "{\"_id\":\"" HEX_ID "\",\"ref\":\"" HEX_ID "\"}");
    bson_destroy(&out);

    /* not 24 hex: left a string */
    EXPECT_EQ(dl_mongo_prep_query("{\"_id\":\"abc\"}", &out, err, sizeof(err)), 0);
    EXPECT(bson_iter_init_find(&it, &out, "_id") && BSON_ITER_HOLDS_UTF8(&it));
    bson_destroy(&out);

    /* inside operators and $or */
    EXPECT_EQ(dl_mongo_prep_query("{\"$or\":[{\"_id\":{\"$in\":[\"" HEX_ID "\",\"x\"]}},"
                                  "{\"_id\":{\"$ne\":\"" HEX_ID "\"}}]}",
                                  &out, err, sizeof(err)),
              0);
    EXPECT(bson_iter_init(&it, &out)
           && bson_iter_find_descendant(&it, "$or.0._id.$in.0", &it) && BSON_ITER_HOLDS_OID(&it));
    EXPECT(bson_iter_init(&it, &out)
           && bson_iter_find_descendant(&it, "$or.0._id.$in.1", &it)
           && BSON_ITER_HOLDS_UTF8(&it));
    EXPECT(bson_iter_init(&it, &out)
           && bson_iter_find_descendant(&it, "$or.1._id.$ne", &it) && BSON_ITER_HOLDS_OID(&it));
    bson_destroy(&out);

    /* extended JSON dates and numbers */
    EXPECT_EQ(dl_mongo_prep_query("{\"at\":{\"$gte\":{\"$date\":\"2024-01-01T00:00:00Z\"}},"
                                  "\"n\":5,\"x\":2.5}",
                                  &out, err, sizeof(err)),
              0);
    EXPECT(bson_iter_init(&it, &out) && bson_iter_find_descendant(&it, "at.$gte", &it)
           && BSON_ITER_HOLDS_DATE_TIME(&it));
    EXPECT_STR(to_json(&out), "{\"at\":{\"$gte\":\"2024-01-01T00:00:00.000Z\"},\"n\":5,\"x\":2.5}");
    bson_destroy(&out);

    /* documents to insert: _id first, string -> ObjectId, generated when absent */
    EXPECT_EQ(dl_mongo_prep_doc("{\"name\":\"a\",\"_id\":\"" HEX_ID "\"}", &out, err,
                                sizeof(err)),
              0);
    EXPECT(bson_iter_init(&it, &out) && bson_iter_next(&it) && BSON_ITER_HOLDS_OID(&it));
    EXPECT_STR(to_json(&out), "{\"_id\":\"" HEX_ID "\",\"name\":\"a\"}");
    bson_destroy(&out);
    EXPECT_EQ(dl_mongo_prep_doc("{\"name\":\"b\"}", &out, err, sizeof(err)), 0);
    EXPECT(bson_iter_init(&it, &out) && bson_iter_next(&it) && BSON_ITER_HOLDS_OID(&it));
    EXPECT_STR(bson_iter_key(&it), "_id");
    EXPECT_EQ(bson_count_keys(&out), 2);
    bson_destroy(&out);
    EXPECT_EQ(dl_mongo_prep_doc("{\"_id\":7}", &out, err, sizeof(err)), 0);
    EXPECT_STR(to_json(&out), "{\"_id\":7}");
    bson_destroy(&out);

    /* bad JSON and wrong shapes */
    EXPECT_EQ(dl_mongo_prep_query("{\"a\":", &out, err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "invalid JSON") != NULL);
    EXPECT_EQ(dl_mongo_prep_query("[1]", &out, err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(dl_mongo_prep_doc("5", &out, err, sizeof(err)), DL_EINVAL);
    /* empty query: match all */
    EXPECT_EQ(dl_mongo_prep_query("", &out, err, sizeof(err)), 0);
    EXPECT(bson_empty(&out));
    bson_destroy(&out);
    EXPECT_EQ(dl_mongo_prep_query(NULL, &out, err, sizeof(err)), 0);
    bson_destroy(&out);
}

/* ------------------------------------------------------------------------ */
/* The subset check                                                         */
/* ------------------------------------------------------------------------ */

DL_TEST(mongo_validator)
{
    static const char *const good[] = {
        "{}",
        "{\"a\":1,\"b.c\":\"x\",\"d\":{\"e\":1}}",
        "{\"a\":{\"$eq\":1},\"b\":{\"$ne\":2},\"c\":{\"$gt\":1,\"$lt\":9}}",
        "{\"a\":{\"$gte\":1,\"$lte\":2},\"t\":{\"$in\":[1,2]},\"u\":{\"$nin\":[\"x\"]}}",
        "{\"a\":{\"$exists\":true},\"n\":null}",
        "{\"$and\":[{\"a\":1},{\"$or\":[{\"b\":{\"$gt\":1}},{\"c.d\":{\"$exists\":false}}]}]}",
    };
    static const struct {
        const char *query;
        const char *msg;
    } bad[] = {
        {"{\"name\":{\"$regex\":\"^a\"}}", "unsupported query operator $regex"},
        {"{\"name\":{\"$regex\":\"^a\",\"$options\":\"i\"}}", "unsupported query operator $regex"},
        {"{\"$where\":\"this.a > 1\"}", "unsupported query operator $where"},
        {"{\"tags\":{\"$elemMatch\":{\"a\":1}}}", "unsupported query operator $elemMatch"},
        {"{\"$and\":[{\"a\":1},{\"b\":{\"$regex\":\"x\"}}]}", "unsupported query operator $regex"},
        {"{\"$or\":[{\"$where\":\"1\"}]}", "unsupported query operator $where"},
        {"{\"$and\":[{\"$or\":[{\"t\":{\"$elemMatch\":{}}}]}]}",
         "unsupported query operator $elemMatch"},
        {"{\"a\":{\"$gt\":1,\"$type\":2}}", "unsupported query operator $type"},
        {"{\"$nor\":[{\"a\":1}]}", "unsupported query operator $nor"},
        {"{\"a\":{\"$in\":[{\"$regex\":\"x\"}]}}", "unsupported query operator $regex"},
        {"{\"a\":{\"$not\":{\"$gt\":1}}}", "unsupported query operator $not"},
        {"{\"$expr\":{\"$eq\":[\"$a\",1]}}", "unsupported query operator $expr"},
    };
    char err[256];
    size_t i;

    for (i = 0; i < DL_ARRAY_SIZE(good); i++) {
        err[0] = '\0';
        if (prep_query_rc(good[i], err, sizeof(err)) != 0)
            DL_FAIL_AT("rejected %s: %s", good[i], err);
    }
    for (i = 0; i < DL_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        EXPECT_EQ(prep_query_rc(bad[i].query, err, sizeof(err)), DL_EQUERY);
        EXPECT_STR(err, bad[i].msg);
    }
    err[0] = '\0';
    EXPECT_EQ(prep_query_rc("{\"a\":{\"$in\":5}}", err, sizeof(err)), DL_EINVAL);
    EXPECT(strstr(err, "$in needs an array") != NULL);
    EXPECT_EQ(prep_query_rc("{\"$or\":{\"a\":1}}", err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(prep_query_rc("{\"a\":{\"$gt\":1,\"b\":2}}", err, sizeof(err)), DL_EQUERY);

    /* updates */
    EXPECT_EQ(prep_update_rc("{\"$set\":{\"a\":1,\"b.c\":{\"d\":2}},\"$inc\":{\"n\":1},"
                             "\"$unset\":{\"x\":\"\"},\"$push\":{\"tags\":\"t\"}}",
                             err, sizeof(err)),
              0);
    EXPECT_EQ(prep_update_rc("{\"$rename\":{\"a\":\"b\"}}", err, sizeof(err)), DL_EQUERY);
    EXPECT_STR(err, "unsupported update operator $rename");
    EXPECT_EQ(prep_update_rc("{\"$push\":{\"tags\":{\"$each\":[1,2]}}}", err, sizeof(err)),
              DL_EQUERY);
    EXPECT_STR(err, "unsupported update operator $each");
    EXPECT_EQ(prep_update_rc("{\"$set\":{\"$where\":1}}", err, sizeof(err)), DL_EQUERY);
    /* a replacement: DL_EINVAL from MongoDB before issue 19, DL_EQUERY as SQLite answered */
    EXPECT_EQ(prep_update_rc("{\"a\":1}", err, sizeof(err)), DL_EQUERY);
    EXPECT(strstr(err, "update needs operators") != NULL);
    EXPECT_EQ(prep_update_rc("{}", err, sizeof(err)), DL_EINVAL);
    EXPECT_EQ(prep_update_rc("{\"$set\":5}", err, sizeof(err)), DL_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* URI and options                                                          */
/* ------------------------------------------------------------------------ */

DL_TEST(mongo_uri_options)
{
    mongoc_uri_t *uri = NULL;
    char err[256] = "";
    int n = 0;

    unsetenv("MONGO_POOL_SIZE");
    unsetenv("MONGO_URI");

    /* defaults applied */
    EXPECT_EQ(dl_mongo_uri_prepare("mongodb://db.example:27017/app", 0, &uri, &n, err,
                                   sizeof(err)),
              0);
    EXPECT_EQ(n, 10);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 0), 5000);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 0), 45000);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0), 5000);
    EXPECT_STR(mongoc_uri_get_database(uri), "app");
    mongoc_uri_destroy(uri);

    /* the URI's own values win; pool size argument wins */
    EXPECT_EQ(dl_mongo_uri_prepare("mongodb://h/?connectTimeoutMS=100&socketTimeoutMS=200"
                                   "&serverSelectionTimeoutMS=300&maxPoolSize=3",
                                   7, &uri, &n, err, sizeof(err)),
              0);
    EXPECT_EQ(n, 7);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 0), 100);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 0), 200);
    EXPECT_EQ(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0), 300);
    mongoc_uri_destroy(uri);

    /* no argument: the URI's maxPoolSize, then MONGO_POOL_SIZE over it */
    EXPECT_EQ(dl_mongo_uri_prepare("mongodb://h/?maxPoolSize=3", 0, &uri, &n, err, sizeof(err)),
              0);
    EXPECT_EQ(n, 3);
    mongoc_uri_destroy(uri);
    setenv("MONGO_POOL_SIZE", "25", 1);
    EXPECT_EQ(dl_mongo_uri_prepare("mongodb://h/?maxPoolSize=3", 0, &uri, &n, err, sizeof(err)),
              0);
    EXPECT_EQ(n, 25);
    mongoc_uri_destroy(uri);
    setenv("MONGO_POOL_SIZE", "junk", 1);
    EXPECT_EQ(dl_mongo_uri_prepare("mongodb://h/", 0, &uri, &n, err, sizeof(err)), 0);
    EXPECT_EQ(n, 10);
    mongoc_uri_destroy(uri);
    unsetenv("MONGO_POOL_SIZE");

    /* MONGO_URI when none is given, else the default */
    setenv("MONGO_URI", "mongodb://envhost:27018/envdb", 1);
    EXPECT_EQ(dl_mongo_uri_prepare(NULL, 0, &uri, &n, err, sizeof(err)), 0);
    EXPECT_STR(mongoc_uri_get_database(uri), "envdb");
    EXPECT_STR(mongoc_uri_get_hosts(uri)->host, "envhost");
    mongoc_uri_destroy(uri);
    unsetenv("MONGO_URI");
    EXPECT_EQ(dl_mongo_uri_prepare("", 0, &uri, &n, err, sizeof(err)), 0);
    EXPECT_EQ(mongoc_uri_get_hosts(uri)->port, 27017);
    mongoc_uri_destroy(uri);

    /* invalid */
    err[0] = '\0';
    EXPECT_EQ(dl_mongo_uri_prepare("http://nope", 0, &uri, &n, err, sizeof(err)), DL_EINVAL);
    EXPECT(uri == NULL);
    EXPECT(strstr(err, "mongodb: invalid URI") != NULL);
}

DL_TEST(mongo_invalid_uri)
{
    static const char *const uris[] = {"not a uri", "mongodb://", "mongodb://h:99999/",
                                       "postgres://x/y"};
    char err[256];
    size_t i;

    for (i = 0; i < DL_ARRAY_SIZE(uris); i++) {
        err[0] = '\0';
        dl_store_t *s = dl_store_open_mongo(uris[i], 0, err, sizeof(err));
        EXPECT(s == NULL);
        if (s != NULL)
            s->ops->close(s);
        EXPECT(strstr(err, "mongodb: invalid URI") != NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* An unreachable server                                                    */
/* ------------------------------------------------------------------------ */

#define DEAD_MSG "mongodb: no server reachable at 127.0.0.1:1 within 500 ms"

#define EXPECT_UNREACHABLE(call, res)                                      \
    do {                                                                   \
        double t0_ = now_s();                                              \
        int rc_ = (call);                                                  \
        double dt_ = now_s() - t0_;                                        \
        EXPECT(rc_ == DL_ETIMEDOUT || rc_ == DL_EIO);                      \
        EXPECT_EQ((res).status, rc_);                                      \
        if (strncmp((res).err, DEAD_MSG, strlen(DEAD_MSG)) != 0)           \
            DL_FAIL_AT("%s: message \"%s\"", #call, (res).err);            \
        if (dt_ >= 3.0)                                                    \
            DL_FAIL_AT("%s took %.2f s", #call, dt_);                      \
    } while (0)

DL_TEST(mongo_unreachable)
{
    char err[256] = "";
    dl_store_res_t res;
    dl_store_t *s;
    double t0;
    int rc;

    dl_store_res_init(&res);
    s = dl_store_open_mongo(DEAD_URI, 2, err, sizeof(err));
    if (s == NULL) {
        /* failing cleanly is allowed too */
        EXPECT(err[0] != '\0');
        return;
    }
    EXPECT_STR(s->ops->type, "mongodb");
    EXPECT_UNREACHABLE(dl_store_ping(s, &res), res);
    printf("# e.g. %s\n", res.err);
    fflush(stdout);
    EXPECT_UNREACHABLE(dl_store_find(s, "items", "{\"a\":1}", "{\"sort\":[[\"a\",-1]],\"limit\":2}",
                                     &res),
                        res);
    EXPECT_UNREACHABLE(dl_store_count(s, "items", "{}", &res), res);
    EXPECT_UNREACHABLE(dl_store_insert(s, "items", "[{\"a\":1},{\"_id\":\"" HEX_ID "\"}]", &res),
                       res);
    EXPECT_EQ(res.json.len, 0);
    EXPECT_UNREACHABLE(dl_store_update(s, "items", "{\"a\":1}", "{\"$set\":{\"b\":2}}", 1, &res),
                       res);
    EXPECT_UNREACHABLE(dl_store_find_one_and_update(s, "items", "{\"a\":1}",
                                                    "{\"$inc\":{\"n\":1}}",
                                                    "{\"sort\":{\"a\":1}}", &res),
                        res);
    EXPECT_UNREACHABLE(dl_store_remove(s, "items", "{\"a\":1}", 0, &res), res);
    EXPECT_UNREACHABLE(dl_store_create_index(s, "items", "[[\"a\",1],[\"b\",-1]]", 1, &res), res);
    EXPECT_UNREACHABLE(dl_store_explain(s, "items", "{\"a\":1}", NULL, &res), res);

    /* bad input fails before anything is sent: no server wait */
    t0 = now_s();
    rc = dl_store_find(s, "items", "{\"a\":{\"$regex\":\"x\"}}", NULL, &res);
    EXPECT_EQ(rc, DL_EQUERY);
    EXPECT_EQ(res.status, DL_EQUERY);
    EXPECT_STR(res.err, "unsupported query operator $regex");
    rc = dl_store_update(s, "items", "{}", "{\"$rename\":{\"a\":\"b\"}}", 0, &res);
    EXPECT_EQ(rc, DL_EQUERY);
    EXPECT_STR(res.err, "unsupported update operator $rename");
    rc = dl_store_find_one_and_update(s, "items", "{\"$where\":\"1\"}", "{\"$set\":{\"a\":1}}",
                                      NULL, &res);
    EXPECT_EQ(rc, DL_EQUERY);
    rc = dl_store_count(s, "items", "{not json", &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT(strstr(res.err, "malformed JSON") != NULL); /* the front's words since issue 19 */
    rc = dl_store_insert(s, "items", "{\"a\":1}", &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_insert(s, "items", "[1]", &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_find(s, "items", "{}", "{\"sort\":{\"a\":2}}", &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(res.err, "sort direction for a must be 1 or -1");
    rc = dl_store_find(s, "items", "{}", "{\"limit\":-1}", &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_find(s, "items", "{}", "{\"projection\":{\"a\":{\"$slice\":1}}}", &res);
    EXPECT_EQ(rc, DL_EQUERY);
    rc = dl_store_create_index(s, "items", "[[\"a\",2]]", 0, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(res.err, "index direction for a must be 1 or -1");
    rc = dl_store_create_index(s, "items", "[\"a\"]", 0, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_STR(res.err, "index: expected [[field, 1|-1], ...]");
    rc = dl_store_create_index(s, "items", "[]", 0, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_remove(s, "", "{}", 1, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_remove(s, "a$b", "{}", 1, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    /* an empty insert needs no server */
    rc = dl_store_insert(s, "items", "[]", &res);
    EXPECT_EQ(rc, 0);
    EXPECT_MEM(res.json.data, res.json.len, "[]", 2);
    EXPECT(now_s() - t0 < 0.5);

    s->ops->close(s);
    dl_store_res_free(&res);
}

typedef struct {
    dl_store_t *s;
    int failures;
} thread_arg_t;

static void *ping_thread(void *p)
{
    thread_arg_t *a = p;
    dl_store_res_t res;
    int i;

    dl_store_res_init(&res);
    for (i = 0; i < 2; i++) {
        if (dl_store_count(a->s, "items", "{}", &res) != DL_ETIMEDOUT)
            a->failures++;
    }
    dl_store_res_free(&res);
    return NULL;
}

/* Many threads on a pool smaller than their number: each waits its turn, none crashes. */
DL_TEST(mongo_unreachable_threads)
{
    char err[256] = "";
    thread_arg_t args[6];
    pthread_t th[6];
    dl_store_t *s;
    double t0;
    int i;

    s = dl_store_open_mongo("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", 3, err,
                            sizeof(err));
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    t0 = now_s();
    for (i = 0; i < 6; i++) {
        args[i].s = s;
        args[i].failures = 0;
        pthread_create(&th[i], NULL, ping_thread, &args[i]);
    }
    for (i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        EXPECT_EQ(args[i].failures, 0);
    }
    EXPECT(now_s() - t0 < 10.0);
    s->ops->close(s);
}

/* ------------------------------------------------------------------------ */
/* Files (GridFS bucket "uploads")                                          */
/* ------------------------------------------------------------------------ */

DL_TEST(mongo_file_json)
{
    bson_t doc, meta;
    bson_oid_t oid;
    dl_buf_t b = DL_BUF_INIT;
    int64_t length = -1, chunk = -1;
    const char *want;

    bson_init(&doc);
    bson_oid_init_from_string(&oid, HEX_ID);
    bson_append_oid(&doc, "_id", -1, &oid);
    bson_append_int64(&doc, "length", -1, 600000);
    bson_append_int32(&doc, "chunkSize", -1, 261120);
    bson_append_date_time(&doc, "uploadDate", -1, 1704067200123LL);
    bson_append_utf8(&doc, "filename", -1, "a \"b\".png", -1);
    bson_append_document_begin(&doc, "metadata", -1, &meta);
    bson_append_utf8(&meta, "contentType", -1, "image/png", -1);
    bson_append_utf8(&meta, "sha256", -1, "ab01", -1);
    bson_append_document_end(&doc, &meta);
    EXPECT_EQ(dl_mongo_file_json(&doc, &b, &length, &chunk), 0);
    want = "{\"id\":\"" HEX_ID "\",\"filename\":\"a \\\"b\\\".png\","
           "\"content_type\":\"image/png\",\"size\":600000,\"sha256\":\"ab01\","
           "\"created_at\":1704067200123}";
    EXPECT_MEM(b.data, b.len, want, strlen(want));
    EXPECT_EQ(length, 600000);
    EXPECT_EQ(chunk, 261120);
    bson_destroy(&doc);

    /* written by another tool: no metadata, length an int32, chunkSize a double */
    dl_buf_reset(&b);
    bson_init(&doc);
    bson_append_oid(&doc, "_id", -1, &oid);
    bson_append_int32(&doc, "length", -1, 5);
    bson_append_double(&doc, "chunkSize", -1, 1024.0);
    EXPECT_EQ(dl_mongo_file_json(&doc, &b, &length, &chunk), 0);
    want = "{\"id\":\"" HEX_ID "\",\"filename\":null,\"content_type\":null,\"size\":5,"
           "\"sha256\":null,\"created_at\":null}";
    EXPECT_MEM(b.data, b.len, want, strlen(want));
    EXPECT_EQ(length, 5);
    EXPECT_EQ(chunk, 0); /* not an int32: the driver would read 0, so file_get refuses it */
    bson_destroy(&doc);
    dl_buf_free(&b);
}

/* Ids that are not 24 hex digits, and local paths that cannot be read, need no server. */
DL_TEST(mongo_file_bad_input)
{
    static const char *const bad_ids[] = {"", "abc", "65a1b2c3d4e5f6a7b8c9d0e",
                                          "65a1b2c3d4e5f6a7b8c9d0e1f", "65a1b2c3d4e5f6a7b8c9d0eg",
                                          "../../etc/passwd"};
    char err[256] = "", dir[64], dest[128], sub[128];
    dl_store_res_t res;
    dl_store_t *s;
    double t0;
    size_t i;
    int rc;

    s = dl_store_open_mongo(DEAD_URI, 2, err, sizeof(err));
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    EXPECT(s->ops->file_put != NULL && s->ops->file_get != NULL && s->ops->file_remove != NULL);
    dl_store_res_init(&res);
    make_tmpdir(dir, sizeof(dir));
    snprintf(dest, sizeof(dest), "%s/dest", dir);
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    DL_ASSERT(mkdir(sub, 0700) == 0);

    t0 = now_s();
    for (i = 0; i < DL_ARRAY_SIZE(bad_ids); i++) {
        res.err[0] = '\0';
        rc = dl_store_file_get(s, bad_ids[i], dest, &res);
        EXPECT_EQ(rc, DL_ENOENT);
        EXPECT_EQ(res.status, DL_ENOENT);
        if (strstr(res.err, "mongodb file_get: no file with id") == NULL)
            DL_FAIL_AT("file_get(\"%s\"): message \"%s\"", bad_ids[i], res.err);
        EXPECT_EQ(res.json.len, 0);
        EXPECT(!exists(dest));
        res.count = 7;
        rc = dl_store_file_remove(s, bad_ids[i], &res);
        EXPECT_EQ(rc, 0);
        EXPECT_EQ(res.status, 0);
        EXPECT_EQ(res.count, 0);
    }
    rc = dl_store_file_get(s, NULL, dest, &res);
    EXPECT_EQ(rc, DL_ENOENT);
    rc = dl_store_file_get(s, HEX_ID, "", &res);
    EXPECT_EQ(rc, DL_EINVAL);

    /* file_put: the local file is checked before the server is asked */
    snprintf(dest, sizeof(dest), "%s/missing", dir);
    rc = dl_store_file_put(s, dest, "x.bin", "application/octet-stream", "00", &res);
    EXPECT_EQ(rc, DL_ENOENT);
    EXPECT_EQ(res.status, DL_ENOENT);
    if (strstr(res.err, "mongodb file_put: cannot open") == NULL || strstr(res.err, dest) == NULL)
        DL_FAIL_AT("file_put of a missing path: message \"%s\"", res.err);
    rc = dl_store_file_put(s, sub, "x.bin", NULL, NULL, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT(strstr(res.err, "is not a regular file") != NULL);
    rc = dl_store_file_put(s, NULL, "x.bin", NULL, NULL, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    rc = dl_store_file_put(s, sub, NULL, NULL, NULL, &res);
    EXPECT_EQ(rc, DL_EINVAL);
    EXPECT_EQ(res.json.len, 0);
    if (now_s() - t0 >= 0.25)
        DL_FAIL_AT("bad input took %.2f s: a server was waited for", now_s() - t0);

    s->ops->close(s);
    dl_store_res_free(&res);
    remove_tmpdir(sub);
    remove_tmpdir(dir);
}

DL_TEST(mongo_file_unreachable)
{
    char err[256] = "", dir[64], src[128], empty[128], dest[128];
    dl_store_res_t res;
    dl_store_t *s;

    s = dl_store_open_mongo(DEAD_URI, 2, err, sizeof(err));
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    dl_store_res_init(&res);
    make_tmpdir(dir, sizeof(dir));
    snprintf(src, sizeof(src), "%s/src.bin", dir);
    snprintf(empty, sizeof(empty), "%s/empty.bin", dir);
    snprintf(dest, sizeof(dest), "%s/dest.bin", dir);
    write_file(src, 600 * 1024); /* more than two chunks and buffers */
    write_file(empty, 0);

    EXPECT_UNREACHABLE(dl_store_file_put(s, src, "src.bin", "application/octet-stream",
                                         "e3b0c44298fc1c149afbf4c8996fb924"
                                         "27ae41e4649b934ca495991b7852b855",
                                         &res),
                        res);
    EXPECT_EQ(res.json.len, 0);
    printf("# e.g. %s\n", res.err);
    fflush(stdout);
    EXPECT_UNREACHABLE(dl_store_file_put(s, empty, "empty.bin", NULL, NULL, &res), res);
    EXPECT_EQ(res.json.len, 0);
    EXPECT_UNREACHABLE(dl_store_file_get(s, HEX_ID, dest, &res), res);
    EXPECT_EQ(res.json.len, 0);
    EXPECT(!exists(dest));
    EXPECT_UNREACHABLE(dl_store_file_remove(s, HEX_ID, &res), res);
    EXPECT_EQ(res.count, 0);
    /* the source files are left as they were */
    EXPECT(exists(src) && exists(empty));

    s->ops->close(s);
    dl_store_res_free(&res);
    remove_tmpdir(dir);
}

/* SQLite keeps no files: its table leaves the file operations out. */
DL_TEST(mongo_file_ops_sqlite_null)
{
    char err[256] = "", dir[64], path[128];
    dl_store_t *s;

    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/db.sqlite", dir);
    s = dl_store_open_sqlite(path, 1, err, sizeof(err));
    if (s == NULL)
        DL_FAIL_AT("open %s: %s", path, err);
    if (s != NULL) {
        EXPECT_STR(s->ops->type, "sqlite");
        EXPECT(s->ops->file_put == NULL);
        EXPECT(s->ops->file_get == NULL);
        EXPECT(s->ops->file_remove == NULL);
        EXPECT(s->ops->close != NULL);
        s->ops->close(s);
    }
    remove_tmpdir(dir);
}

/* ------------------------------------------------------------------------ */
/* A live server, when one is given                                         */
/* ------------------------------------------------------------------------ */

DL_TEST(mongo_crud_live)
{
    const char *uri = getenv("DEVLOOP_TEST_MONGO_URI");
    char err[256] = "", coll[64], q[128];
    dl_store_res_t res;
    dl_store_t *s;
    int rc;

    if (uri == NULL || *uri == '\0') {
        printf("# skipped: DEVLOOP_TEST_MONGO_URI not set\n");
        fflush(stdout);
        return;
    }
    s = dl_store_open_mongo(uri, 2, err, sizeof(err));
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    dl_store_res_init(&res);
    snprintf(coll, sizeof(coll), "dl_unit_%ld_%d", (long)time(NULL), (int)getpid());

    EXPECT_EQ(dl_store_ping(s, &res), 0);
    EXPECT_MEM(res.json.data, res.json.len, "{\"ok\":1}", 8);
    rc = dl_store_insert(s, coll,
                         "[{\"_id\":\"" HEX_ID "\",\"name\":\"a\",\"n\":1,"
                         "\"at\":{\"$date\":\"2024-01-01T00:00:00.5Z\"}},"
                         "{\"name\":\"b\",\"n\":2},{\"name\":\"c\",\"n\":3}]",
                         &res);
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(res.count, 3);
    EXPECT(res.json.len > 2 && memcmp(res.json.data, "[\"" HEX_ID "\",\"", 29) == 0);

    rc = dl_store_insert(s, coll, "[{\"_id\":\"" HEX_ID "\"}]", &res);
    EXPECT_EQ(rc, DL_EDUPKEY);
    EXPECT(strstr(res.err, "E11000") != NULL);

    rc = dl_store_find(s, coll, "{\"_id\":\"" HEX_ID "\"}",
                       "{\"projection\":{\"name\":1,\"at\":1}}", &res);
    EXPECT_EQ(rc, 0);
    {
        const char *want =
            "[{\"_id\":\"" HEX_ID "\",\"name\":\"a\",\"at\":\"2024-01-01T00:00:00.500Z\"}]";
        EXPECT_MEM(res.json.data, res.json.len, want, strlen(want));
    }

    rc = dl_store_find(s, coll, "{\"n\":{\"$gte\":2}}",
                       "{\"sort\":[[\"n\",-1]],\"projection\":{\"_id\":0,\"n\":1},\"limit\":5}",
                       &res);
    EXPECT_EQ(rc, 0);
    EXPECT_MEM(res.json.data, res.json.len, "[{\"n\":3},{\"n\":2}]", 17);

    EXPECT_EQ(dl_store_count(s, coll, "{\"$or\":[{\"n\":1},{\"name\":\"c\"}]}", &res), 0);
    EXPECT_EQ(res.count, 2);

    EXPECT_EQ(dl_store_update(s, coll, "{}", "{\"$inc\":{\"n\":10}}", 1, &res), 0);
    EXPECT_EQ(res.matched, 3);
    EXPECT_EQ(res.count, 3);

    snprintf(q, sizeof(q), "{\"name\":\"b\"}");
    rc = dl_store_find_one_and_update(s, coll, q, "{\"$set\":{\"tag\":\"x\"},\"$push\":{\"l\":1}}",
                                      "{\"projection\":{\"_id\":0}}", &res);
    EXPECT_EQ(rc, 0);
    EXPECT_MEM(res.json.data, res.json.len, "{\"name\":\"b\",\"n\":12,\"tag\":\"x\",\"l\":[1]}",
               strlen("{\"name\":\"b\",\"n\":12,\"tag\":\"x\",\"l\":[1]}"));
    rc = dl_store_find_one_and_update(s, coll, "{\"name\":\"zz\"}", "{\"$set\":{\"a\":1}}", NULL,
                                      &res);
    EXPECT_EQ(rc, 0);
    EXPECT_MEM(res.json.data, res.json.len, "null", 4);

    EXPECT_EQ(dl_store_create_index(s, coll, "[[\"name\",1],[\"n\",-1]]", 1, &res), 0);
    EXPECT_EQ(dl_store_explain(s, coll, "{\"name\":\"a\"}", NULL, &res), 0);
    dl_buf_append_char(&res.json, '\0');
    if (strstr(res.json.data, "IXSCAN name_1_n_-1") == NULL)
        DL_FAIL_AT("explain: %s", res.json.data);
    /* a unique index: a second "a"... is fine, a second "c" with n 13 is not */
    rc = dl_store_insert(s, coll, "[{\"name\":\"c\",\"n\":13}]", &res);
    EXPECT_EQ(rc, DL_EDUPKEY);

    EXPECT_EQ(dl_store_remove(s, coll, "{\"name\":\"a\"}", 0, &res), 0);
    EXPECT_EQ(res.count, 1);
    EXPECT_EQ(dl_store_remove(s, coll, "{}", 1, &res), 0);
    EXPECT_EQ(res.count, 2);

    {
        /* drop the scratch collection */
        mongoc_client_t *c = mongoc_client_new(uri);
        if (c != NULL) {
            const char *db = mongoc_uri_get_database(mongoc_client_get_uri(c));
            mongoc_collection_t *col = mongoc_client_get_collection(c, db ? db : "devloop", coll);
            mongoc_collection_drop(col, NULL);
            mongoc_collection_destroy(col);
            mongoc_client_destroy(c);
        }
    }
    s->ops->close(s);
    dl_store_res_free(&res);
}

/* Whether files a and b hold the same bytes. */
static int same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int ca, cb, same = fa != NULL && fb != NULL;

    while (same) {
        ca = fgetc(fa);
        cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    return same;
}

/* Expects json (len bytes, not NUL-terminated) to contain part. */
static void expect_json_has(const dl_buf_t *json, const char *part)
{
    char text[1024];

    snprintf(text, sizeof(text), "%.*s", (int)json->len, json->data ? json->data : "");
    if (strstr(text, part) == NULL)
        DL_FAIL_AT("%s not in %s", part, text);
}

DL_TEST(mongo_files_live)
{
    const char *uri = getenv("DEVLOOP_TEST_MONGO_URI");
    char err[256] = "", dir[64], src[128], empty[128], dest[128], id[25], id0[25];
    dl_store_res_t res;
    struct stat st;
    dl_store_t *s;
    int rc;

    if (uri == NULL || *uri == '\0') {
        printf("# skipped: DEVLOOP_TEST_MONGO_URI not set\n");
        fflush(stdout);
        return;
    }
    s = dl_store_open_mongo(uri, 2, err, sizeof(err));
    EXPECT(s != NULL);
    if (s == NULL)
        return;
    dl_store_res_init(&res);
    make_tmpdir(dir, sizeof(dir));
    snprintf(src, sizeof(src), "%s/src.bin", dir);
    snprintf(empty, sizeof(empty), "%s/empty.bin", dir);
    snprintf(dest, sizeof(dest), "%s/dest.bin", dir);
    write_file(src, 600 * 1024 + 3); /* three chunks, the last one short */
    write_file(empty, 0);

    rc = dl_store_file_put(s, src, "big.bin", "application/x-test", "abcd", &res);
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(res.json.len, 26);
    snprintf(id, sizeof(id), "%.*s", 24, res.json.len == 26 ? res.json.data + 1 : "");
    EXPECT(bson_oid_is_valid(id, strlen(id)));

    rc = dl_store_file_get(s, id, dest, &res);
    EXPECT_EQ(rc, 0);
    expect_json_has(&res.json, "\"filename\":\"big.bin\"");
    expect_json_has(&res.json, "\"content_type\":\"application/x-test\"");
    expect_json_has(&res.json, "\"size\":614403");
    expect_json_has(&res.json, "\"sha256\":\"abcd\"");
    expect_json_has(&res.json, "\"created_at\":1");
    EXPECT(same_bytes(src, dest));
    EXPECT(stat(dest, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* an empty file, with no metadata values */
    rc = dl_store_file_put(s, empty, "empty.bin", NULL, NULL, &res);
    EXPECT_EQ(rc, 0);
    snprintf(id0, sizeof(id0), "%.*s", 24, res.json.len == 26 ? res.json.data + 1 : "");
    rc = dl_store_file_get(s, id0, dest, &res);
    EXPECT_EQ(rc, 0);
    expect_json_has(&res.json, "\"size\":0,\"sha256\":null");
    expect_json_has(&res.json, "\"content_type\":null");
    EXPECT(stat(dest, &st) == 0 && st.st_size == 0);

    EXPECT_EQ(dl_store_file_remove(s, id, &res), 0);
    EXPECT_EQ(res.count, 1);
    EXPECT_EQ(dl_store_file_remove(s, id, &res), 0);
    EXPECT_EQ(res.count, 0);
    EXPECT_EQ(dl_store_file_remove(s, id0, &res), 0);
    EXPECT_EQ(res.count, 1);
    unlink(dest);
    rc = dl_store_file_get(s, id, dest, &res);
    EXPECT_EQ(rc, DL_ENOENT);
    EXPECT(strstr(res.err, "no file with id") != NULL);
    EXPECT(!exists(dest));

    s->ops->close(s);
    dl_store_res_free(&res);
    remove_tmpdir(dir);
}
