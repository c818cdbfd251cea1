/*
 * test_sqlite_store.c - runtime/store/sqlite/ through the store front (store.c):
 * CRUD; every query operator with dotted paths, array elements,
 * null/missing and type separation; $and/$or nesting; unsupported operators,
 * bad names and malformed JSON; sort/skip/limit/projection with the _id
 * tie-break; each update operator; find_one_and_update by sort; unique
 * indexes; EXPLAIN QUERY PLAN showing index use against a scan; generated ids
 * over 10,000 inserts; a 10,000-document insert; four threads at once; two
 * stores on one file; a writer killed by SIGKILL; and a speed figure for an
 * indexed find. Each test works in its own mkdtemp() folder. The tests that
 * hold for both backends also run on MongoDB (store_X_mongo, tdb_open_on()).
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/buf.h"
#include "common/internal.h"
#include "store/mongo_store.h"
#include "store/store.h"
#include "unit.h"

/* From runtime/store/sqlite/ids.c (declared in sqlite/sqlite_int.h). */
void dl_store_gen_id(char out[25]);

/* ---- helpers -------------------------------------------------------------------------------- */

typedef struct {
    char dir[64];
    char path[128];
    dl_store_t *s;
} tdb_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Opens a store at <mkdtemp>/sub/db.sqlite (the folder "sub" is created by the store). */
static void tdb_open(tdb_t *t)
{
    char err[256] = "";
    snprintf(t->dir, sizeof(t->dir), "/tmp/dl_store_XXXXXX");
    DL_ASSERT(mkdtemp(t->dir) != NULL);
    snprintf(t->path, sizeof(t->path), "%s/sub/db.sqlite", t->dir);
    t->s = dl_store_open_sqlite(t->path, 4, err, sizeof(err));
    if (t->s == NULL)
        DL_FAIL_AT("open %s: %s", t->path, err);
    DL_ASSERT(t->s != NULL);
}

/*
 * The behaviour tests that hold for both backends run on each: SQLite always
 * (store_X), MongoDB (store_X_mongo) when DEVLOOP_TEST_MONGO_URI names a
 * server, in a database of its own per test ("dl_unit_<pid>_<n>", left behind:
 * the store has no drop); without it they print a skip line and pass. Returns
 * 0 when the backend is not there.
 */
static int tdb_open_on(tdb_t *t, int mongo)
{
    static int seq;
    char uri[512], err[256] = "";
    if (!mongo) {
        tdb_open(t);
        return 1;
    }
    const char *base = getenv("DEVLOOP_TEST_MONGO_URI");
    if (base == NULL || *base == '\0') {
        printf("# skipped: DEVLOOP_TEST_MONGO_URI not set\n");
        fflush(stdout);
        return 0;
    }
    /* the URI with its database replaced: scheme://hosts/<db>?options */
    const char *hosts = strstr(base, "://");
    hosts = hosts != NULL ? hosts + 3 : base;
    size_t hl = strcspn(hosts, "/?");
    const char *opts = strchr(hosts + hl, '?');
    snprintf(uri, sizeof(uri), "%.*s/dl_unit_%d_%d%s", (int)(hosts + hl - base), base,
             (int)getpid(), ++seq, opts != NULL ? opts : "");
    t->dir[0] = '\0';
    t->path[0] = '\0';
    t->s = dl_store_open_mongo(uri, 2, err, sizeof(err));
    if (t->s == NULL)
        DL_FAIL_AT("open %s: %s", base, err);
    DL_ASSERT(t->s != NULL);
    return 1;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[512];
    for (e = readdir(d); e != NULL; e = readdir(d)) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            rm_rf(p);
    }
    closedir(d);
    rmdir(dir);
}

static void tdb_close(tdb_t *t)
{
    dl_store_close(t->s);
    t->s = NULL;
    if (t->dir[0] != '\0')
        rm_rf(t->dir);
}

/* The result's JSON as a NUL-terminated string (valid until the next call on r). */
static const char *jtext(dl_store_res_t *r)
{
    dl_buf_append_char(&r->json, '\0');
    r->json.len--;
    return r->json.data;
}

static void must(dl_store_res_t *r, int rc, int line)
{
    if (rc != 0)
        DL_FAIL_AT("line %d: rc %d (%s): %s", line, rc, dl_err_name(rc), r->err);
}

#define MUST(r, call) must((r), (call), __LINE__)

static void insert_ok(dl_store_t *s, const char *coll, const char *docs, int line)
{
    dl_store_res_t r;
    dl_store_res_init(&r);
    must(&r, dl_store_insert(s, coll, docs, &r), line);
    dl_store_res_free(&r);
}

#define INSERT(s, coll, docs) insert_ok((s), (coll), (docs), __LINE__)

/* The _ids that query matches, in _id order, joined by commas ("!rc" on error). */
static void ids_of(dl_store_t *s, const char *coll, const char *query, const char *opts,
                   char *out, size_t outlen)
{
    dl_store_res_t r;
    dl_store_res_init(&r);
    int rc = dl_store_find(s, coll, query, opts ? opts : "{\"sort\": [[\"_id\", 1]]}", &r);
    size_t n = 0;
    out[0] = '\0';
    if (rc != 0) {
        snprintf(out, outlen, "!%s", dl_err_name(rc));
    } else {
        const char *p = jtext(&r);
        const char *q;
        for (q = strstr(p, "\"_id\":\""); q != NULL; q = strstr(q, "\"_id\":\"")) {
            q += 7;
            const char *e = strchr(q, '"');
            n += (size_t)snprintf(out + n, outlen - n, "%s%.*s", n ? "," : "", (int)(e - q), q);
            if (n >= outlen)
                break;
        }
    }
    dl_store_res_free(&r);
}

static void expect_ids(dl_store_t *s, const char *coll, const char *query, const char *opts,
                       const char *want, int line)
{
    char got[4096];
    ids_of(s, coll, query, opts, got, sizeof(got));
    if (strcmp(got, want) != 0)
        DL_FAIL_AT("line %d: %s %s: expected [%s], got [%s]", line, query, opts ? opts : "",
                   want, got);
}

#define EXPECT_IDS(s, coll, query, want) expect_ids((s), (coll), (query), NULL, (want), __LINE__)
#define EXPECT_IDS_O(s, coll, query, opts, want)                                                   \
    expect_ids((s), (coll), (query), (opts), (want), __LINE__)

static int64_t count_of(dl_store_t *s, const char *coll, const char *query)
{
    dl_store_res_t r;
    dl_store_res_init(&r);
    int rc = dl_store_count(s, coll, query, &r);
    int64_t n = rc == 0 ? r.count : rc;
    dl_store_res_free(&r);
    return n;
}

static const char *find_one(dl_store_t *s, const char *coll, const char *query, char *out,
                            size_t outlen)
{
    dl_store_res_t r;
    dl_store_res_init(&r);
    int rc = dl_store_find(s, coll, query, NULL, &r);
    snprintf(out, outlen, "%s", rc == 0 ? jtext(&r) : r.err);
    dl_store_res_free(&r);
    return out;
}

/* ---- CRUD ----------------------------------------------------------------------------------- */

DL_TEST(store_crud)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    char buf[1024];

    MUST(&r, dl_store_ping(s, &r));
    EXPECT_STR(jtext(&r), "{\"ok\":1}");
    EXPECT_STR(s->ops->type, "sqlite");

    /* a missing collection is empty */
    MUST(&r, dl_store_find(s, "users", NULL, NULL, &r));
    EXPECT_STR(jtext(&r), "[]");
    EXPECT_EQ(count_of(s, "users", ""), 0);

    MUST(&r, dl_store_insert(s, "users", "[{\"_id\": \"u1\", \"name\": \"ann\", \"age\": 31},"
                             " {\"name\": \"bob\", \"age\": 25}]", &r));
    EXPECT_EQ(r.count, 2);
    const char *ids = jtext(&r);
    EXPECT(strncmp(ids, "[\"u1\",\"", 7) == 0 && strlen(ids) == 7 + 24 + 2);
    char bob[25];
    memcpy(bob, ids + 7, 24);
    bob[24] = '\0';

    /* documents come back as stored: _id first, no spaces */
    EXPECT_STR(find_one(s, "users", "{\"_id\": \"u1\"}", buf, sizeof(buf)),
               "[{\"_id\":\"u1\",\"name\":\"ann\",\"age\":31}]");
    snprintf(buf, sizeof(buf), "[{\"_id\":\"%s\",\"name\":\"bob\",\"age\":25}]", bob);
    char got[1024];
    EXPECT_STR(find_one(s, "users", "{\"name\": \"bob\"}", got, sizeof(got)), buf);
    EXPECT_EQ(count_of(s, "users", NULL), 2);
    EXPECT_EQ(count_of(s, "users", "{\"age\": {\"$gt\": 30}}"), 1);

    /* _id moves to the front; escapes and unicode survive */
    MUST(&r, dl_store_insert(s, "users", "[{\"name\": \"c\\\"q\\\\\\n\\u00e9\\ud83d\\ude00\", "
                             "\"_id\": \"u3\", \"tags\": [], \"o\": {}}]", &r));
    EXPECT_STR(find_one(s, "users", "{\"_id\": \"u3\"}", buf, sizeof(buf)),
               "[{\"_id\":\"u3\",\"name\":\"c\\\"q\\\\\\n\xc3\xa9\xf0\x9f\x98\x80\","
               "\"tags\":[],\"o\":{}}]");

    /* duplicate _id */
    int rc = dl_store_insert(s, "users", "[{\"_id\": \"u1\"}]", &r);
    EXPECT_EQ(rc, DL_EDUPKEY);
    EXPECT_EQ(r.status, DL_EDUPKEY);
    EXPECT(strstr(r.err, "_id") != NULL && strstr(r.err, "u1") != NULL);
    /* the failed batch left nothing behind (one transaction) */
    rc = dl_store_insert(s, "users", "[{\"_id\": \"u9\"}, {\"_id\": \"u9\"}]", &r);
    EXPECT_EQ(rc, DL_EDUPKEY);
    EXPECT_EQ(count_of(s, "users", "{\"_id\": \"u9\"}"), 0);

    /* update one / many */
    MUST(&r, dl_store_update(s, "users", "{\"_id\": \"u1\"}", "{\"$set\": {\"age\": 32}}", 0, &r));
    EXPECT_EQ(r.matched, 1);
    EXPECT_EQ(r.count, 1);
    MUST(&r, dl_store_update(s, "users", "{\"_id\": \"u1\"}", "{\"$set\": {\"age\": 32}}", 0, &r));
    EXPECT_EQ(r.matched, 1);
    EXPECT_EQ(r.count, 0); /* unchanged */
    MUST(&r, dl_store_update(s, "users", "{}", "{\"$set\": {\"seen\": true}}", 1, &r));
    EXPECT_EQ(r.matched, 3);
    EXPECT_EQ(r.count, 3);
    MUST(&r, dl_store_update(s, "users", "{}", "{\"$set\": {\"x\": 1}}", 0, &r));
    EXPECT_EQ(r.matched, 1);
    EXPECT_EQ(count_of(s, "users", "{\"x\": 1}"), 1);
    MUST(&r, dl_store_update(s, "users", "{\"nobody\": 1}", "{\"$set\": {\"x\": 1}}", 1, &r));
    EXPECT_EQ(r.matched, 0);
    EXPECT_EQ(r.count, 0);

    /* remove one / many */
    MUST(&r, dl_store_remove(s, "users", "{\"seen\": true}", 0, &r));
    EXPECT_EQ(r.count, 1);
    EXPECT_EQ(count_of(s, "users", NULL), 2);
    MUST(&r, dl_store_remove(s, "users", "{\"seen\": true}", 1, &r));
    EXPECT_EQ(r.count, 2);
    EXPECT_EQ(count_of(s, "users", NULL), 0);
    MUST(&r, dl_store_remove(s, "users", "{}", 1, &r));
    EXPECT_EQ(r.count, 0);

    dl_store_res_free(&r);
    tdb_close(&t);
}

/* ---- queries -------------------------------------------------------------------------------- */

static const char *QDOCS =
    "[{\"_id\": \"d1\", \"n\": 1, \"s\": \"abc\", \"a\": {\"b\": {\"c\": 5}},"
    "  \"tags\": [\"x\", \"y\"]},"
    " {\"_id\": \"d2\", \"n\": 2.5, \"s\": \"b\", \"a\": {\"b\": {\"c\": 7}}, \"tags\": [\"y\"]},"
    " {\"_id\": \"d3\", \"n\": \"5\", \"s\": null, \"tags\": [1, 2, 3]},"
    " {\"_id\": \"d4\", \"n\": true, \"a\": {\"b\": 1}, \"tags\": \"x\"},"
    " {\"_id\": \"d5\", \"n\": 10, \"s\": \"abd\", \"a\": {\"b\": {\"c\": [5, 9]}},"
    "  \"o\": {\"k\": 1, \"j\": [1]}}]";

static void query_operators_on(int mongo)
{
    tdb_t t;
    if (!tdb_open_on(&t, mongo))
        return;
    dl_store_t *s = t.s;
    INSERT(s, "q", QDOCS);

    /* equality, type separation: 5 != "5", 1 != true */
    EXPECT_IDS(s, "q", "{\"n\": 1}", "d1");
    EXPECT_IDS(s, "q", "{\"n\": 1.0}", "d1");
    EXPECT_IDS(s, "q", "{\"n\": \"5\"}", "d3");
    EXPECT_IDS(s, "q", "{\"n\": 5}", "");
    EXPECT_IDS(s, "q", "{\"n\": true}", "d4");
    EXPECT_IDS(s, "q", "{\"n\": {\"$eq\": 2.5}}", "d2");
    EXPECT_IDS(s, "q", "{\"s\": \"abc\", \"n\": 1}", "d1");
    EXPECT_IDS(s, "q", "{\"s\": \"abc\", \"n\": 2}", "");
    EXPECT_IDS(s, "q", "{\"_id\": \"d2\"}", "d2");
    EXPECT_IDS(s, "q", "{\"_id\": {\"$in\": [\"d2\", \"d4\", \"zz\"]}}", "d2,d4");
    EXPECT_IDS(s, "q", "{\"_id\": {\"$gt\": \"d3\"}}", "d4,d5");

    /* dotted paths */
    EXPECT_IDS(s, "q", "{\"a.b.c\": 7}", "d2");
    EXPECT_IDS(s, "q", "{\"a.b\": 1}", "d4");
    EXPECT_IDS(s, "q", "{\"a.b.c\": {\"$gte\": 5}}", "d1,d2,d5");
    EXPECT_IDS(s, "q", "{\"o\": {\"k\": 1, \"j\": [1]}}", "d5");
    EXPECT_IDS(s, "q", "{\"o\": {\"j\": [1], \"k\": 1}}", "");
    EXPECT_IDS(s, "q", "{\"o.j\": [1]}", "d5");

    /* arrays contain */
    EXPECT_IDS(s, "q", "{\"tags\": \"x\"}", "d1,d4");
    EXPECT_IDS(s, "q", "{\"tags\": 2}", "d3");
    EXPECT_IDS(s, "q", "{\"tags\": [\"y\"]}", "d2");
    EXPECT_IDS(s, "q", "{\"a.b.c\": 9}", "d5");
    EXPECT_IDS(s, "q", "{\"tags\": {\"$gt\": 2}}", "d3");
    EXPECT_IDS(s, "q", "{\"tags\": {\"$in\": [\"y\", 3]}}", "d1,d2,d3");

    /* null and missing */
    EXPECT_IDS(s, "q", "{\"s\": null}", "d3,d4");
    EXPECT_IDS(s, "q", "{\"s\": {\"$ne\": null}}", "d1,d2,d5");
    EXPECT_IDS(s, "q", "{\"s\": {\"$exists\": true}}", "d1,d2,d3,d5");
    EXPECT_IDS(s, "q", "{\"s\": {\"$exists\": false}}", "d4");
    EXPECT_IDS(s, "q", "{\"a.b.c\": {\"$exists\": true}}", "d1,d2,d5");
    EXPECT_IDS(s, "q", "{\"nothing\": null}", "d1,d2,d3,d4,d5");

    /* comparisons never cross types */
    EXPECT_IDS(s, "q", "{\"n\": {\"$gt\": 1}}", "d2,d5");
    EXPECT_IDS(s, "q", "{\"n\": {\"$gte\": 1}}", "d1,d2,d5");
    EXPECT_IDS(s, "q", "{\"n\": {\"$lt\": 10}}", "d1,d2");
    EXPECT_IDS(s, "q", "{\"n\": {\"$lte\": 10, \"$gt\": 1}}", "d2,d5");
    EXPECT_IDS(s, "q", "{\"n\": {\"$gt\": \"\"}}", "d3");
    EXPECT_IDS(s, "q", "{\"s\": {\"$gt\": \"abc\"}}", "d2,d5");
    EXPECT_IDS(s, "q", "{\"s\": {\"$lt\": \"b\"}}", "d1,d5");
    EXPECT_IDS(s, "q", "{\"s\": {\"$gt\": 5}}", "");

    /* $ne / $in / $nin */
    EXPECT_IDS(s, "q", "{\"n\": {\"$ne\": 1}}", "d2,d3,d4,d5");
    EXPECT_IDS(s, "q", "{\"tags\": {\"$ne\": \"x\"}}", "d2,d3,d5");
    EXPECT_IDS(s, "q", "{\"n\": {\"$in\": [1, \"5\", 99]}}", "d1,d3");
    EXPECT_IDS(s, "q", "{\"n\": {\"$in\": []}}", "");
    EXPECT_IDS(s, "q", "{\"s\": {\"$in\": [null, \"b\"]}}", "d2,d3,d4");
    EXPECT_IDS(s, "q", "{\"n\": {\"$nin\": [1, 10, true]}}", "d2,d3");
    EXPECT_IDS(s, "q", "{\"tags\": {\"$nin\": [\"x\"]}}", "d2,d3,d5");

    tdb_close(&t);
}

DL_TEST(store_query_operators)
{
    query_operators_on(0);
}

DL_TEST(store_query_operators_mongo)
{
    query_operators_on(1);
}

static void query_and_or_on(int mongo)
{
    tdb_t t;
    if (!tdb_open_on(&t, mongo))
        return;
    dl_store_t *s = t.s;
    INSERT(s, "q", QDOCS);
    EXPECT_IDS(s, "q", "{\"$or\": [{\"n\": 1}, {\"n\": 10}]}", "d1,d5");
    EXPECT_IDS(s, "q", "{\"$and\": [{\"n\": {\"$gt\": 0}}, {\"n\": {\"$lt\": 5}}]}", "d1,d2");
    EXPECT_IDS(s, "q", "{\"s\": {\"$exists\": true}, \"$or\": [{\"n\": 1}, {\"tags\": 3}]}",
               "d1,d3");
    EXPECT_IDS(s, "q",
               "{\"$or\": [{\"$and\": [{\"n\": {\"$gte\": 1}}, {\"s\": {\"$gte\": \"abd\"}}]},"
               " {\"$or\": [{\"a.b\": 1}, {\"_id\": \"d3\"}]}]}",
               "d2,d3,d4,d5");
    EXPECT_IDS(s, "q", "{\"$and\": [{\"$or\": [{\"n\": 1}, {\"n\": 2.5}]}, {\"tags\": \"y\"}]}",
               "d1,d2");
    tdb_close(&t);
}

DL_TEST(store_query_and_or)
{
    query_and_or_on(0);
}

DL_TEST(store_query_and_or_mongo)
{
    query_and_or_on(1);
}

DL_TEST(store_bad_input)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "q", QDOCS);

    static const char *const unsupported[] = {"$regex", "$where", "$elemMatch", "$size", "$not"};
    for (size_t k = 0; k < DL_ARRAY_SIZE(unsupported); k++) {
        char q[128], want[128];
        snprintf(q, sizeof(q), "{\"s\": {\"%s\": \"a\"}}", unsupported[k]);
        snprintf(want, sizeof(want), "unsupported query operator %s", unsupported[k]);
        EXPECT_EQ(dl_store_find(s, "q", q, NULL, &r), DL_EQUERY);
        EXPECT_STR(r.err, want);
    }
    EXPECT_EQ(dl_store_find(s, "q", "{\"$where\": \"1\"}", NULL, &r), DL_EQUERY);
    EXPECT_STR(r.err, "unsupported query operator $where");
    EXPECT_EQ(dl_store_count(s, "q", "{\"$nor\": []}", &r), DL_EQUERY);
    EXPECT_EQ(dl_store_find(s, "q", "{\"s\": {\"$gt\": 1, \"x\": 2}}", NULL, &r), DL_EQUERY);

    /* field names that could escape the JSON path or the SQL */
    static const char *const bad[] = {
        "{\"a'b\": 1}", "{\"a\\\"b\": 1}", "{\"a[0]\": 1}", "{\"a..b\": 1}", "{\".a\": 1}",
        "{\"\": 1}", "{\"a b\": 1}", "{\"a')--\": 1}", "{\"a\\u0000\": 1}", "{\"a*\": 1}",
    };
    for (size_t k = 0; k < DL_ARRAY_SIZE(bad); k++) {
        int rc = dl_store_find(s, "q", bad[k], NULL, &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("%s: rc %d", bad[k], rc);
        EXPECT(strstr(r.err, "invalid field name") != NULL);
    }
    EXPECT_EQ(dl_store_find(s, "q", NULL, "{\"sort\": {\"a'\": 1}}", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", NULL, "{\"sort\": {\"a\": 2}}", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", NULL, "{\"limit\": -1}", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", NULL, "{\"projection\": {\"a\": 0}}", &r), DL_EQUERY);

    /* collection names */
    EXPECT_EQ(dl_store_find(s, "a\"b", NULL, NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "", NULL, NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_insert(s, "a-b", "[{}]", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_count(s, "x123456789x123456789x123456789x123456789x123456789x123456789"
                             "x12345", NULL, &r), DL_EINVAL);

    /* malformed JSON everywhere: an error, never a crash */
    static const char *const junk[] = {
        "{", "}", "[", "{\"a\":}", "{\"a\" 1}", "{a: 1}", "{\"a\": 1,}", "{\"a\": 01}",
        "{\"a\": 1.}", "{\"a\": -}", "{\"a\": tru}", "{\"a\": \"\\x\"}", "{\"a\": \"\\ud800\"}",
        "{\"a\": \"\x01\"}", "{\"a\": 1} x", "nul", "\"unterminated", "{\"a\": [1, 2}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    };
    for (size_t k = 0; k < DL_ARRAY_SIZE(junk); k++) {
        int rc;
        rc = dl_store_find(s, "q", junk[k], NULL, &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("find %s: rc %d", junk[k], rc);
        rc = dl_store_find(s, "q", NULL, junk[k], &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("find opts %s: rc %d", junk[k], rc);
        rc = dl_store_insert(s, "q", junk[k], &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("insert %s: rc %d", junk[k], rc);
        rc = dl_store_update(s, "q", "{}", junk[k], 1, &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("update %s: rc %d", junk[k], rc);
        rc = dl_store_remove(s, "q", junk[k], 1, &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("remove %s: rc %d", junk[k], rc);
        rc = dl_store_create_index(s, "q", junk[k], 0, &r);
        if (rc != DL_EINVAL)
            DL_FAIL_AT("create_index %s: rc %d", junk[k], rc);
    }
    EXPECT(strstr(r.err, "malformed JSON") != NULL);
    /* wrong shapes */
    EXPECT_EQ(dl_store_insert(s, "q", "{\"a\": 1}", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_insert(s, "q", "[1]", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_insert(s, "q", "[{}, \"x\"]", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_insert(s, "q", "[{\"_id\": 5}]", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_insert(s, "q", NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", "[1]", NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", "{\"$or\": {}}", NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", "{\"$or\": [1]}", NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_find(s, "q", "{\"n\": {\"$in\": 1}}", NULL, &r), DL_EINVAL);
    EXPECT_EQ(count_of(s, "q", NULL), 5);

    dl_store_res_free(&r);
    tdb_close(&t);
}

/* ---- sort, skip, limit, projection ---------------------------------------------------------- */

DL_TEST(store_sort_skip_limit_projection)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "p", "[{\"_id\": \"e\", \"k\": 2, \"name\": \"E\", \"st\": \"a\","
                   "  \"x\": {\"y\": 1, \"z\": 2}},"
                   " {\"_id\": \"b\", \"k\": 1, \"name\": \"B\", \"st\": \"b\"},"
                   " {\"_id\": \"d\", \"k\": 2, \"name\": \"D\"},"
                   " {\"_id\": \"a\", \"k\": null, \"name\": \"A\"},"
                   " {\"_id\": \"c\", \"name\": \"C\", \"k\": \"s\"},"
                   " {\"_id\": \"f\", \"name\": \"F\"}]");

    /* nulls and missing first ascending, then numbers, then strings; ties by _id */
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": [[\"k\", 1]]}", "a,f,b,d,e,c");
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": {\"k\": -1}}", "c,d,e,b,a,f");
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": [[\"k\", -1], [\"_id\", -1]]}", "c,e,d,b,f,a");
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": {\"k\": 1, \"_id\": -1}}", "f,a,b,e,d,c");
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": [[\"name\", -1]]}", "f,e,d,c,b,a");
    EXPECT_IDS_O(s, "p", "{}", NULL, "a,b,c,d,e,f");
    EXPECT_IDS_O(s, "p", "{}", "{}", "a,b,c,d,e,f");
    EXPECT_IDS_O(s, "p", "{}", "{\"sort\": [[\"k\", 1]], \"skip\": 2, \"limit\": 3}", "b,d,e");
    EXPECT_IDS_O(s, "p", "{}", "{\"skip\": 5}", "f");
    EXPECT_IDS_O(s, "p", "{}", "{\"limit\": 2}", "a,b");
    EXPECT_IDS_O(s, "p", "{}", "{\"limit\": 0}", "a,b,c,d,e,f");
    EXPECT_IDS_O(s, "p", "{\"k\": 2}", "{\"sort\": [[\"name\", 1]], \"limit\": 1}", "d");

    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"e\"}", "{\"projection\": {\"name\": 1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"e\",\"name\":\"E\"}]");
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"e\"}",
                           "{\"projection\": {\"st\": 1, \"name\": true, \"_id\": 0}}", &r));
    EXPECT_STR(jtext(&r), "[{\"name\":\"E\",\"st\":\"a\"}]");
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"e\"}",
                           "{\"projection\": {\"x.z\": 1, \"nope\": 1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"e\",\"x\":{\"z\":2}}]");
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"b\"}", "{\"projection\": {\"_id\": 0}}", &r));
    EXPECT_STR(jtext(&r), "[{\"k\":1,\"name\":\"B\",\"st\":\"b\"}]");
    MUST(&r, dl_store_find(s, "p", "{\"k\": 2}", "{\"projection\": {\"name\": 1}, \"sort\": "
                           "{\"name\": -1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"e\",\"name\":\"E\"},{\"_id\":\"d\",\"name\":\"D\"}]");
    EXPECT_EQ(r.count, 2);
    /* "fields" is a projection too, as MongoDB reads it (SQLite ignored it before issue 19) */
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"e\"}", "{\"fields\": {\"name\": 1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"e\",\"name\":\"E\"}]");
    /* {"_id": 1} alone includes _id alone, as on MongoDB (SQLite returned whole documents);
     * an empty projection is none */
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"e\"}", "{\"projection\": {\"_id\": 1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"e\"}]");
    MUST(&r, dl_store_find(s, "p", "{\"k\": 2}", "{\"fields\": {\"_id\": true}, \"sort\": "
                           "{\"_id\": 1}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"d\"},{\"_id\":\"e\"}]");
    MUST(&r, dl_store_find_one_and_update(s, "p", "{\"_id\": \"b\"}", "{\"$set\": {\"k\": 1}}",
                                          "{\"projection\": {\"_id\": 1}}", &r));
    EXPECT_STR(jtext(&r), "{\"_id\":\"b\"}");
    MUST(&r, dl_store_find(s, "p", "{\"_id\": \"b\"}", "{\"projection\": {}}", &r));
    EXPECT_STR(jtext(&r), "[{\"_id\":\"b\",\"k\":1,\"name\":\"B\",\"st\":\"b\"}]");
    /* a path and its prefix collide (MongoDB: path collision) */
    EXPECT_EQ(dl_store_find(s, "p", NULL, "{\"projection\": {\"x\": 1, \"x.z\": 1}}", &r),
              DL_EINVAL);
    EXPECT_STR(r.err, "projection: x.z collides with x");

    dl_store_res_free(&r);
    tdb_close(&t);
}

/* ---- updates -------------------------------------------------------------------------------- */

static void expect_doc(dl_store_t *s, const char *coll, const char *id, const char *want, int line)
{
    char q[128], got[2048], w[2048];
    snprintf(q, sizeof(q), "{\"_id\": \"%s\"}", id);
    find_one(s, coll, q, got, sizeof(got));
    snprintf(w, sizeof(w), "[%s]", want);
    if (strcmp(got, w) != 0)
        DL_FAIL_AT("line %d: expected %s, got %s", line, w, got);
}

#define EXPECT_DOC(s, coll, id, want) expect_doc((s), (coll), (id), (want), __LINE__)

DL_TEST(store_update_operators)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "u", "[{\"_id\": \"a\", \"n\": 1, \"f\": 1.5, \"s\": \"x\", \"arr\": [1],"
                   " \"o\": {\"p\": 1}}]");
#define UPD(u) MUST(&r, dl_store_update(s, "u", "{\"_id\": \"a\"}", (u), 0, &r))

    UPD("{\"$set\": {\"s\": \"y\", \"o.q\": {\"r\": [true, null]}, \"new.deep.er\": 1}}");
    EXPECT_DOC(s, "u", "a", "{\"_id\":\"a\",\"n\":1,\"f\":1.5,\"s\":\"y\",\"arr\":[1],"
                            "\"o\":{\"p\":1,\"q\":{\"r\":[true,null]}},"
                            "\"new\":{\"deep\":{\"er\":1}}}");
    UPD("{\"$inc\": {\"n\": 41, \"f\": 1, \"o.p\": -3, \"miss\": 2, \"o.m\": 0.5}}");
    EXPECT_DOC(s, "u", "a", "{\"_id\":\"a\",\"n\":42,\"f\":2.5,\"s\":\"y\",\"arr\":[1],"
                            "\"o\":{\"p\":-2,\"q\":{\"r\":[true,null]},\"m\":0.5},"
                            "\"new\":{\"deep\":{\"er\":1}},\"miss\":2}");
    UPD("{\"$unset\": {\"o.q\": \"\", \"new\": 1, \"nothing\": 1, \"none.x\": 1}}");
    EXPECT_DOC(s, "u", "a", "{\"_id\":\"a\",\"n\":42,\"f\":2.5,\"s\":\"y\",\"arr\":[1],"
                            "\"o\":{\"p\":-2,\"m\":0.5},\"miss\":2}");
    UPD("{\"$push\": {\"arr\": {\"k\": 2}, \"fresh\": \"v\", \"o.l\": 1}}");
    /* $each is outside the documented subset: refused by the front for both backends
     * (SQLite applied it before issue 19, MongoDB refused it) */
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$push\": {\"arr\": {\"$each\": [3, 4]}}}", 1,
                              &r),
              DL_EQUERY);
    EXPECT_STR(r.err, "unsupported update operator $each");
    UPD("{\"$push\": {\"arr\": 3}}");
    UPD("{\"$push\": {\"arr\": 4}}");
    EXPECT_DOC(s, "u", "a", "{\"_id\":\"a\",\"n\":42,\"f\":2.5,\"s\":\"y\",\"arr\":[1,{\"k\":2},"
                            "3,4],\"o\":{\"p\":-2,\"m\":0.5,\"l\":[1]},\"miss\":2,"
                            "\"fresh\":[\"v\"]}");
    EXPECT_EQ(count_of(s, "u", "{\"arr\": 3}"), 1);
    EXPECT_EQ(count_of(s, "u", "{\"arr\": {\"k\": 2}}"), 1);
    /* two operators on one field conflict: refused by the front for both backends (SQLite
     * applied them in turn before, MongoDB refused them); one after the other they apply */
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$set\": {\"n\": 1}, \"$inc\": {\"n\": 1}}", 1,
                              &r),
              DL_EINVAL);
    EXPECT_STR(r.err, "update: $set on n conflicts with $inc on n");
    UPD("{\"$set\": {\"n\": 1}}");
    UPD("{\"$inc\": {\"n\": 1}}");
    EXPECT_EQ(count_of(s, "u", "{\"n\": 2}"), 1);
    UPD("{\"$inc\": {\"n\": 9223372036854775807}}");
    EXPECT_EQ(count_of(s, "u", "{\"n\": {\"$gt\": 9.2e18}}"), 1);

    /* errors: nothing changes */
    char before[2048];
    find_one(s, "u", "{}", before, sizeof(before));
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$inc\": {\"s\": 1}}", 1, &r), DL_EINVAL);
    EXPECT(strstr(r.err, "$inc") != NULL && strstr(r.err, "s") != NULL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$inc\": {\"n\": \"1\"}}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$push\": {\"s\": 1}}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$set\": {\"s.x\": 1}}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$set\": {\"_id\": \"b\"}}", 1, &r), DL_EINVAL);
    EXPECT(strstr(r.err, "_id") != NULL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$unset\": {\"_id\": 1}}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$rename\": {\"a\": \"b\"}}", 1, &r), DL_EQUERY);
    EXPECT_STR(r.err, "unsupported update operator $rename");
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"name\": \"replacement\"}", 1, &r), DL_EQUERY);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$set\": {\"a'b\": 1}}", 1, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_update(s, "u", "{}", "{\"$set\": 1}", 1, &r), DL_EINVAL);
    char after[2048];
    EXPECT_STR(find_one(s, "u", "{}", after, sizeof(after)), before);

    /* update many reports matched and modified */
    INSERT(s, "m", "[{\"_id\": \"1\", \"v\": 1}, {\"_id\": \"2\", \"v\": 2},"
                   " {\"_id\": \"3\", \"v\": 1}]");
    MUST(&r, dl_store_update(s, "m", "{}", "{\"$set\": {\"v\": 1}}", 1, &r));
    EXPECT_EQ(r.matched, 3);
    EXPECT_EQ(r.count, 1);
    MUST(&r, dl_store_update(s, "m", "{\"v\": 1}", "{\"$inc\": {\"v\": 1}}", 1, &r));
    EXPECT_EQ(r.matched, 3);
    EXPECT_EQ(r.count, 3);
    EXPECT_EQ(count_of(s, "m", "{\"v\": 2}"), 3);
#undef UPD
    dl_store_res_free(&r);
    tdb_close(&t);
}

static void find_one_and_update_on(int mongo)
{
    tdb_t t;
    if (!tdb_open_on(&t, mongo))
        return;
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "jobs", "[{\"_id\": \"j1\", \"st\": \"new\", \"pri\": 1},"
                      " {\"_id\": \"j2\", \"st\": \"new\", \"pri\": 5},"
                      " {\"_id\": \"j3\", \"st\": \"new\", \"pri\": 3},"
                      " {\"_id\": \"j4\", \"st\": \"done\", \"pri\": 9}]");
    const char *claim = "{\"$set\": {\"st\": \"run\"}, \"$inc\": {\"tries\": 1}}";
    MUST(&r, dl_store_find_one_and_update(s, "jobs", "{\"st\": \"new\"}", claim,
                                          "{\"sort\": [[\"pri\", -1]]}", &r));
    EXPECT_STR(jtext(&r), "{\"_id\":\"j2\",\"st\":\"run\",\"pri\":5,\"tries\":1}");
    EXPECT_EQ(r.matched, 1);
    EXPECT_EQ(r.count, 1);
    MUST(&r, dl_store_find_one_and_update(s, "jobs", "{\"st\": \"new\"}", claim,
                                          "{\"sort\": {\"pri\": 1}, \"projection\": {\"pri\": 1}}",
                                          &r));
    EXPECT_STR(jtext(&r), "{\"_id\":\"j1\",\"pri\":1}");
    MUST(&r, dl_store_find_one_and_update(s, "jobs", "{\"st\": \"new\"}", claim, NULL, &r));
    EXPECT_STR(jtext(&r), "{\"_id\":\"j3\",\"st\":\"run\",\"pri\":3,\"tries\":1}");
    MUST(&r, dl_store_find_one_and_update(s, "jobs", "{\"st\": \"new\"}", claim, NULL, &r));
    EXPECT_STR(jtext(&r), "null");
    EXPECT_EQ(r.matched, 0);
    EXPECT_EQ(count_of(s, "jobs", "{\"st\": \"run\", \"tries\": 1}"), 3);
    EXPECT_EQ(dl_store_find_one_and_update(s, "jobs", "{}", "{\"x\": 1}", NULL, &r), DL_EQUERY);
    dl_store_res_free(&r);
    tdb_close(&t);
}

DL_TEST(store_find_one_and_update)
{
    find_one_and_update_on(0);
}

DL_TEST(store_find_one_and_update_mongo)
{
    find_one_and_update_on(1);
}

/* ---- indexes -------------------------------------------------------------------------------- */

DL_TEST(store_unique_index)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "users", "[{\"_id\": \"1\", \"email\": \"a@x\"},"
                       " {\"_id\": \"2\", \"email\": \"b@x\"}]");
    MUST(&r, dl_store_create_index(s, "users", "[[\"email\", 1]]", 1, &r));
    EXPECT_STR(jtext(&r), "\"ix_users_email_1\"");
    MUST(&r, dl_store_create_index(s, "users", "[[\"email\", 1]]", 1, &r)); /* idempotent */

    EXPECT_EQ(dl_store_insert(s, "users", "[{\"email\": \"c@x\"}, {\"email\": \"a@x\"}]", &r),
              DL_EDUPKEY);
    EXPECT(strstr(r.err, "ix_users_email_1") != NULL);
    EXPECT_EQ(count_of(s, "users", NULL), 2);
    EXPECT_EQ(dl_store_update(s, "users", "{\"_id\": \"2\"}",
                              "{\"$set\": {\"email\": \"a@x\"}}", 0, &r), DL_EDUPKEY);
    EXPECT(strstr(r.err, "email") != NULL);
    EXPECT_EQ(count_of(s, "users", "{\"email\": \"b@x\"}"), 1);
    INSERT(s, "users", "[{\"email\": \"c@x\"}]");

    /* a unique index over existing duplicates fails */
    INSERT(s, "t", "[{\"k\": 1}, {\"k\": 1}]");
    EXPECT_EQ(dl_store_create_index(s, "t", "[[\"k\", 1]]", 1, &r), DL_EDUPKEY);
    MUST(&r, dl_store_create_index(s, "t", "{\"k\": -1}", 0, &r));
    EXPECT_EQ(dl_store_create_index(s, "t", "[]", 0, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_create_index(s, "t", "[[\"k\", 0]]", 0, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_create_index(s, "t", "[[\"k'\", 1]]", 0, &r), DL_EINVAL);
    dl_store_res_free(&r);
    tdb_close(&t);
}

static int plan_has(dl_store_t *s, const char *coll, const char *query, const char *opts,
                    const char *needle, char *plan, size_t planlen)
{
    dl_store_res_t r;
    dl_store_res_init(&r);
    int rc = dl_store_explain(s, coll, query, opts, &r);
    snprintf(plan, planlen, "%s", rc == 0 ? jtext(&r) : r.err);
    dl_store_res_free(&r);
    return rc == 0 && strstr(plan, needle) != NULL;
}

DL_TEST(store_explain_index_use)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    char plan[2048];
    INSERT(s, "ev", "[{\"st\": \"a\", \"at\": 3, \"tags\": [1]}, {\"st\": \"b\", \"at\": 1},"
                    " {\"st\": \"a\", \"at\": 2}]");
    MUST(&r, dl_store_create_index(s, "ev", "[[\"st\", 1], [\"at\", -1]]", 0, &r));
    const char *q = "{\"st\": \"a\"}";
    const char *o = "{\"sort\": [[\"at\", -1]], \"limit\": 50}";

    /* equality + sort: a search on the index, the order from the index too */
    if (!plan_has(s, "ev", q, o, "SEARCH c_ev USING INDEX ix_ev_st_1_at_-1 (<expr>=?)", plan,
                  sizeof(plan)))
        DL_FAIL_AT("indexed query: %s", plan);
    if (plan_has(s, "ev", q, o, "TEMP B-TREE", plan, sizeof(plan)))
        DL_FAIL_AT("indexed sort still sorts: %s", plan);
    fprintf(stderr, "# indexed:   %s\n", plan);
    /* range on the indexed field, and $in */
    if (!plan_has(s, "ev", "{\"st\": {\"$gt\": \"a\"}}", NULL, "USING INDEX ix_ev_st", plan,
                  sizeof(plan)))
        DL_FAIL_AT("indexed range: %s", plan);
    if (!plan_has(s, "ev", "{\"st\": {\"$in\": [\"a\", \"b\"]}}", NULL, "USING INDEX ix_ev_st",
                  plan, sizeof(plan)))
        DL_FAIL_AT("indexed $in: %s", plan);
    /* an unindexed field scans */
    if (!plan_has(s, "ev", "{\"other\": \"a\"}", o, "SCAN c_ev", plan, sizeof(plan)))
        DL_FAIL_AT("unindexed query: %s", plan);
    fprintf(stderr, "# unindexed: %s\n", plan);
    /* _id uses the primary key */
    if (!plan_has(s, "ev", "{\"_id\": \"x\"}", NULL, "USING PRIMARY KEY", plan, sizeof(plan)))
        DL_FAIL_AT("_id query: %s", plan);

    /* once a document holds an array at st, equality also searches elements (a scan) and
     * is still right */
    INSERT(s, "ev", "[{\"_id\": \"arr\", \"st\": [\"z\", \"a\"], \"at\": 0}]");
    EXPECT_IDS_O(s, "ev", "{\"st\": \"z\"}", NULL, "arr");
    EXPECT_EQ(count_of(s, "ev", q), 3);
    MUST(&r, dl_store_remove(s, "ev", "{\"_id\": \"arr\"}", 0, &r));
    if (!plan_has(s, "ev", q, o, "USING INDEX ix_ev_st_1_at_-1", plan, sizeof(plan)))
        DL_FAIL_AT("indexed query after the array left: %s", plan);
    dl_store_res_free(&r);
    tdb_close(&t);
}

/* ---- ids and bulk --------------------------------------------------------------------------- */

DL_TEST(store_generated_ids)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    char prev[25] = "", id[25];
    for (int k = 0; k < 10000; k++) {
        dl_store_gen_id(id);
        if (strcmp(id, prev) <= 0) {
            DL_FAIL_AT("id %d: %s after %s", k, id, prev);
            break;
        }
        memcpy(prev, id, 25);
    }
    /* through insert, one at a time: unique and increasing in _id order */
    char ids[10000][25];
    for (int k = 0; k < 10000; k++) {
        char doc[64];
        snprintf(doc, sizeof(doc), "[{\"k\": %d}]", k);
        MUST(&r, dl_store_insert(s, "g", doc, &r));
        const char *j = jtext(&r);
        EXPECT(strlen(j) == 28);
        memcpy(ids[k], j + 2, 24);
        ids[k][24] = '\0';
        if (k > 0 && strcmp(ids[k], ids[k - 1]) <= 0) {
            DL_FAIL_AT("insert %d: %s after %s", k, ids[k], ids[k - 1]);
            break;
        }
    }
    EXPECT_EQ(count_of(s, "g", NULL), 10000);
    MUST(&r, dl_store_find(s, "g", NULL, "{\"sort\": {\"_id\": -1}, \"limit\": 1}", &r));
    char want[128];
    snprintf(want, sizeof(want), "[{\"_id\":\"%s\",\"k\":9999}]", ids[9999]);
    EXPECT_STR(jtext(&r), want);
    dl_store_res_free(&r);
    tdb_close(&t);
}

DL_TEST(store_insert_many_fast)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    dl_buf_t b = DL_BUF_INIT;
    dl_buf_append_char(&b, '[');
    for (int k = 0; k < 10000; k++)
        dl_buf_appendf(&b, "%s{\"k\": %d, \"name\": \"user %d\", \"tags\": [\"a\", \"b\"], "
                           "\"at\": %d.5}", k ? "," : "", k, k, k);
    dl_buf_append(&b, "]", 2);
    uint64_t t0 = now_ns();
    MUST(&r, dl_store_insert(s, "bulk", b.data, &r));
    uint64_t us = (now_ns() - t0) / 1000;
    fprintf(stderr, "# insert of 10,000 documents in one call: %llu ms\n",
            (unsigned long long)us / 1000);
    EXPECT_EQ(r.count, 10000);
    EXPECT(us < 1000000);
    EXPECT_EQ(count_of(s, "bulk", NULL), 10000);
    EXPECT_EQ(count_of(s, "bulk", "{\"k\": {\"$gte\": 9990}}"), 10);
    dl_buf_free(&b);
    dl_store_res_free(&r);
    tdb_close(&t);
}

/* $in compiles to one bound JSON list, not an OR per entry: 100,000 entries
 * ran into SQLite's expression depth (1000) before, as EIO, and so did an $or
 * of about 1000 branches. */
static void in_list(dl_buf_t *b, const char *field, const char *op, int n, const char *fmt,
                    const char *extra)
{
    dl_buf_reset(b);
    dl_buf_appendf(b, "{\"%s\": {\"%s\": [%s", field, op, extra);
    for (int k = 0; k < n; k++) {
        dl_buf_append_str(b, k || *extra ? ", " : "");
        dl_buf_appendf(b, fmt, k);
    }
    dl_buf_append(b, "]}}", 4);
}

static void in_large_on(int mongo)
{
    tdb_t t;
    if (!tdb_open_on(&t, mongo))
        return;
    dl_store_t *s = t.s;
    dl_buf_t b = DL_BUF_INIT;
    INSERT(s, "big", "[{\"_id\": \"a\", \"v\": 7}, {\"_id\": \"b\", \"v\": \"s99999\"},"
                     " {\"_id\": \"c\", \"v\": [\"q\", 123456]}, {\"_id\": \"d\", \"v\": true},"
                     " {\"_id\": \"e\", \"v\": {\"k\": 1}}, {\"_id\": \"f\", \"v\": [1, 2]},"
                     " {\"_id\": \"g\", \"v\": null}, {\"_id\": \"h\"},"
                     " {\"_id\": \"i\", \"v\": [[1, 2], {\"k\": 1}]},"
                     " {\"_id\": \"j\", \"v\": \"7\"}]");
    in_list(&b, "v", "$in", 100000, "%d", "");
    EXPECT_IDS(s, "big", b.data, "a,f");
    in_list(&b, "v", "$in", 100000, "\"s%d\"", "");
    EXPECT_IDS(s, "big", b.data, "b");
    in_list(&b, "v", "$nin", 100000, "%d", "");
    EXPECT_IDS(s, "big", b.data, "b,c,d,e,g,h,i,j");
    in_list(&b, "_id", "$in", 100000, "\"%d\"", "\"c\", 3, \"j\"");
    EXPECT_IDS(s, "big", b.data, "c,j");
    in_list(&b, "v", "$in", 100000, "%d.5", "123456, \"q\"");
    EXPECT_IDS(s, "big", b.data, "c");
    /* every type class, array elements and whole arrays, null as missing */
    EXPECT_IDS(s, "big", "{\"v\": {\"$in\": [{\"k\": 1}]}}", "e,i");
    EXPECT_IDS(s, "big", "{\"v\": {\"$in\": [[1, 2]]}}", "f,i");
    EXPECT_IDS(s, "big", "{\"v\": {\"$in\": [2, true]}}", "d,f");
    EXPECT_IDS(s, "big", "{\"v\": {\"$in\": [null, \"7\"]}}", "g,h,j");
    EXPECT_IDS(s, "big", "{\"v\": {\"$nin\": [null, 7, {\"k\": 1}, [1, 2]]}}", "b,c,d,j");
    EXPECT_EQ(count_of(s, "big", "{\"v\": {\"$in\": [1, 1.0, \"1\"]}}"), 1);
    /* an $or of 1000 branches (the front's bound: EIO at about 991 before) */
    dl_buf_reset(&b);
    dl_buf_append_str(&b, "{\"$or\": [");
    for (int k = 0; k < 1000; k++)
        dl_buf_appendf(&b, "%s{\"v\": %d}", k ? ", " : "", 999 - k);
    dl_buf_append(&b, "]}", 3);
    EXPECT_IDS(s, "big", b.data, "a,f");
    dl_buf_free(&b);
    tdb_close(&t);
}

DL_TEST(store_in_large_lists)
{
    in_large_on(0);
}

DL_TEST(store_in_large_lists_mongo)
{
    in_large_on(1);
}

/* ---- concurrency ---------------------------------------------------------------------------- */

typedef struct {
    dl_store_t *s;
    int idx;
    int inserted, removed, failures;
} worker_t;

static void *mixed_worker(void *arg)
{
    worker_t *w = arg;
    dl_store_res_t r;
    dl_store_res_init(&r);
    uint64_t end = now_ns() + 2500000000ull;
    char doc[128], q[128];
    for (int k = 0; now_ns() < end; k++) {
        snprintf(doc, sizeof(doc), "[{\"w\": %d, \"k\": %d, \"n\": 0}]", w->idx, k);
        if (dl_store_insert(w->s, "mix", doc, &r) == 0)
            w->inserted++;
        else
            w->failures++;
        snprintf(q, sizeof(q), "{\"w\": %d}", w->idx);
        if (dl_store_count(w->s, "mix", q, &r) != 0 ||
            r.count != w->inserted - w->removed)
            w->failures++;
        if (dl_store_update(w->s, "ctr", "{\"_id\": \"c\"}", "{\"$inc\": {\"n\": 1}}", 0,
                            &r) != 0 || r.count != 1)
            w->failures++;
        snprintf(q, sizeof(q), "{\"w\": %d, \"k\": {\"$lt\": %d}}", w->idx, k - 5);
        if (k % 3 == 0) {
            if (dl_store_remove(w->s, "mix", q, 0, &r) != 0)
                w->failures++;
            else
                w->removed += (int)r.count;
        }
        if (dl_store_find(w->s, "mix", q, "{\"limit\": 5, \"sort\": {\"k\": -1}}", &r) != 0)
            w->failures++;
    }
    dl_store_res_free(&r);
    return NULL;
}

DL_TEST(store_concurrent_threads)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(s, "ctr", "[{\"_id\": \"c\", \"n\": 0}]");
    MUST(&r, dl_store_create_index(s, "mix", "[[\"w\", 1], [\"k\", 1]]", 0, &r));
    pthread_t th[4];
    worker_t w[4];
    for (int k = 0; k < 4; k++) {
        memset(&w[k], 0, sizeof(w[k]));
        w[k].s = s;
        w[k].idx = k;
        pthread_create(&th[k], NULL, mixed_worker, &w[k]);
    }
    int total = 0, ops = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        EXPECT_EQ(w[k].failures, 0);
        total += w[k].inserted - w[k].removed;
        ops += w[k].inserted;
        char q[64];
        snprintf(q, sizeof(q), "{\"w\": %d}", k);
        EXPECT_EQ(count_of(s, "mix", q), w[k].inserted - w[k].removed);
    }
    EXPECT_EQ(count_of(s, "mix", NULL), total);
    MUST(&r, dl_store_find(s, "ctr", NULL, NULL, &r));
    char want[64];
    snprintf(want, sizeof(want), "[{\"_id\":\"c\",\"n\":%d}]", ops);
    EXPECT_STR(jtext(&r), want);
    fprintf(stderr, "# 4 threads: %d rounds of insert/count/update/find/remove\n", ops);
    dl_store_res_free(&r);
    tdb_close(&t);
}

DL_TEST(store_two_stores_one_file)
{
    tdb_t t;
    tdb_open(&t);
    char err[256];
    dl_store_t *a = t.s;
    dl_store_t *b = dl_store_open_sqlite(t.path, 2, err, sizeof(err));
    EXPECT(b != NULL);
    if (b == NULL) {
        tdb_close(&t);
        return;
    }
    dl_store_res_t r;
    dl_store_res_init(&r);
    INSERT(a, "shared", "[{\"_id\": \"1\", \"v\": 1}]");
    EXPECT_EQ(count_of(b, "shared", NULL), 1);
    INSERT(b, "shared", "[{\"_id\": \"2\", \"v\": 2}]");
    EXPECT_EQ(count_of(a, "shared", NULL), 2);
    MUST(&r, dl_store_create_index(b, "shared", "[[\"v\", 1]]", 1, &r));
    EXPECT_EQ(dl_store_insert(a, "shared", "[{\"v\": 2}]", &r), DL_EDUPKEY);
    MUST(&r, dl_store_update(a, "shared", "{\"v\": 1}", "{\"$set\": {\"w\": true}}", 0, &r));
    EXPECT_EQ(count_of(b, "shared", "{\"w\": true}"), 1);
    MUST(&r, dl_store_remove(b, "shared", "{}", 1, &r));
    EXPECT_EQ(r.count, 2);
    EXPECT_EQ(count_of(a, "shared", NULL), 0);
    /* a child process, like another worker process, writes too */
    pid_t pid = fork();
    if (pid == 0) {
        dl_store_t *c = dl_store_open_sqlite(t.path, 1, err, sizeof(err));
        dl_store_res_t cr;
        dl_store_res_init(&cr);
        int rc = c ? dl_store_insert(c, "shared", "[{\"from\": \"child\"}]", &cr) : -1;
        dl_store_res_free(&cr);
        if (c != NULL)
            c->ops->close(c);
        _exit(rc == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(count_of(a, "shared", "{\"from\": \"child\"}"), 1);
    EXPECT_EQ(count_of(b, "shared", "{\"from\": \"child\"}"), 1);
    b->ops->close(b);
    dl_store_res_free(&r);
    tdb_close(&t);
}

DL_TEST(store_crash_safety)
{
    tdb_t t;
    tdb_open(&t);
    t.s->ops->close(t.s);
    t.s = NULL;
    int fds[2];
    DL_ASSERT(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char err[256];
        dl_store_t *s = dl_store_open_sqlite(t.path, 1, err, sizeof(err));
        dl_store_res_t r;
        dl_store_res_init(&r);
        for (int k = 0;; k++) {
            char doc[256];
            snprintf(doc, sizeof(doc), "[{\"_id\": \"k%07d\", \"k\": %d, \"pad\": \"%0100d\"},"
                                       " {\"_id\": \"j%07d\"}]", k, k, k, k);
            if (s == NULL || dl_store_insert(s, "crash", doc, &r) != 0)
                _exit(1);
            int32_t done = k;
            if (write(fds[1], &done, sizeof(done)) != (ssize_t)sizeof(done))
                _exit(1);
        }
    }
    close(fds[1]);
    int32_t last = -1, v;
    uint64_t end = now_ns() + 700000000ull;
    while (now_ns() < end && read(fds[0], &v, sizeof(v)) == (ssize_t)sizeof(v))
        last = v;
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof(v)) == (ssize_t)sizeof(v))
        last = v; /* committed before the kill */
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    EXPECT(last > 10);

    sqlite3 *db = NULL;
    EXPECT_EQ(sqlite3_open(t.path, &db), SQLITE_OK);
    sqlite3_stmt *ps = NULL;
    EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &ps, NULL), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(ps), SQLITE_ROW);
    EXPECT_STR((const char *)sqlite3_column_text(ps, 0), "ok");
    sqlite3_finalize(ps);
    sqlite3_close(db);

    char err[256];
    t.s = dl_store_open_sqlite(t.path, 2, err, sizeof(err));
    DL_ASSERT(t.s != NULL);
    char q[128];
    snprintf(q, sizeof(q), "{\"k\": {\"$lte\": %d}}", last);
    EXPECT_EQ(count_of(t.s, "crash", q), (int64_t)last + 1);
    int64_t all = count_of(t.s, "crash", NULL);
    EXPECT(all == 2 * ((int64_t)last + 1) || all == 2 * ((int64_t)last + 2));
    EXPECT_EQ(all % 2, 0); /* both documents of a batch or neither */
    fprintf(stderr, "# child committed %d batches before SIGKILL; %lld documents after reopen\n",
           last + 1, (long long)all);
    tdb_close(&t);
}

/* ---- speed ---------------------------------------------------------------------------------- */

DL_TEST(store_speed_indexed_find)
{
    tdb_t t;
    tdb_open(&t);
    dl_store_t *s = t.s;
    dl_store_res_t r;
    dl_store_res_init(&r);
    dl_buf_t b = DL_BUF_INIT;
    for (int chunk = 0; chunk < 10; chunk++) {
        dl_buf_reset(&b);
        dl_buf_append_char(&b, '[');
        for (int k = 0; k < 10000; k++) {
            int n = chunk * 10000 + k;
            dl_buf_appendf(&b, "%s{\"user\": \"u%d\", \"status\": \"%s\", \"created_at\": %d, "
                               "\"title\": \"post number %d\"}", k ? "," : "", n % 1000,
                           n % 3 ? "open" : "closed", n, n);
        }
        dl_buf_append(&b, "]", 2);
        MUST(&r, dl_store_insert(s, "posts", b.data, &r));
    }
    MUST(&r, dl_store_create_index(s, "posts", "[[\"user\", 1], [\"created_at\", -1]]", 0, &r));
    const char *o = "{\"sort\": [[\"created_at\", -1]], \"limit\": 50}";
    int iters = 2000;
    uint64_t t0 = now_ns();
    for (int k = 0; k < iters; k++) {
        char q[64];
        snprintf(q, sizeof(q), "{\"user\": \"u%d\"}", k % 1000);
        MUST(&r, dl_store_find(s, "posts", q, o, &r));
        if (r.count != 50) {
            DL_FAIL_AT("count %lld", (long long)r.count);
            break;
        }
    }
    uint64_t dt = now_ns() - t0;
    fprintf(stderr, "# find by indexed field, sort, limit 50 (100 matches) on 100,000 docs: "
                    "%.1f us/call\n",
           (double)dt / 1000.0 / iters);
    t0 = now_ns();
    for (int k = 0; k < iters; k++) {
        char q[64];
        snprintf(q, sizeof(q), "{\"_id\": \"nope%d\"}", k);
        MUST(&r, dl_store_find(s, "posts", q, NULL, &r));
    }
    dt = now_ns() - t0;
    fprintf(stderr, "# find by _id (miss): %.1f us/call\n", (double)dt / 1000.0 / iters);
    dl_buf_free(&b);
    dl_store_res_free(&r);
    tdb_close(&t);
}
