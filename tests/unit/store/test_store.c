/*
 * test_store.c - the store front (runtime/store/store.c), run once: every
 * check it makes fails before the backend is called, with one answer for
 * both backends. The backend here is a recorder, so these run without SQLite
 * or MongoDB; the cases marked "changed" are where one backend answered
 * differently before issue 19 (the stricter documented rule won).
 */
#include <string.h>

#include "common/buf.h"
#include "common/internal.h"
#include "store/store.h"
#include "unit.h"

static int calls;

/* The backend gets each input with the tree the front parsed: a call
 * without one counts 1000. */
static int got(const dl_store_json_t *in)
{
    return in != NULL && in->doc != NULL;
}

static int r_find(dl_store_t *s, const char *c, const dl_store_json_t *q,
                  const dl_store_json_t *o, dl_store_res_t *r)
{
    (void)s, (void)c, (void)r;
    return calls += got(q) && got(o) ? 1 : 1000, 0;
}
static int r_count(dl_store_t *s, const char *c, const dl_store_json_t *q, dl_store_res_t *r)
{
    (void)s, (void)c, (void)r;
    return calls += got(q) ? 1 : 1000, 0;
}
static int r_insert(dl_store_t *s, const char *c, const dl_store_json_t *d, dl_store_res_t *r)
{
    (void)s, (void)c, (void)r;
    return calls += got(d) ? 1 : 1000, 0;
}
static int r_update(dl_store_t *s, const char *c, const dl_store_json_t *q,
                    const dl_store_json_t *u, int m, dl_store_res_t *r)
{
    (void)s, (void)c, (void)m, (void)r;
    return calls += got(q) && got(u) ? 1 : 1000, 0;
}
static int r_foau(dl_store_t *s, const char *c, const dl_store_json_t *q,
                  const dl_store_json_t *u, const dl_store_json_t *o, dl_store_res_t *r)
{
    (void)s, (void)c, (void)r;
    return calls += got(q) && got(u) && got(o) ? 1 : 1000, 0;
}
static int r_remove(dl_store_t *s, const char *c, const dl_store_json_t *q, int m,
                    dl_store_res_t *r)
{
    (void)s, (void)c, (void)m, (void)r;
    return calls += got(q) ? 1 : 1000, 0;
}
static int r_index(dl_store_t *s, const char *c, const dl_store_json_t *k, int u,
                   dl_store_res_t *r)
{
    (void)s, (void)c, (void)u, (void)r;
    return calls += got(k) ? 1 : 1000, 0;
}
static int r_ping(dl_store_t *s, dl_store_res_t *r)
{
    (void)s, (void)r;
    return ++calls, 0;
}
static void r_close(dl_store_t *s)
{
    (void)s;
}

static const dl_store_ops_t recorder_ops = {
    .type = "recorder",
    .find = r_find,
    .count = r_count,
    .insert = r_insert,
    .update = r_update,
    .find_one_and_update = r_foau,
    .remove = r_remove,
    .create_index = r_index,
    .explain = r_find,
    .ping = r_ping,
    .close = r_close,
};

enum { FIND, COUNT, INSERT, UPDATE, FOAU, REMOVE, INDEX };

typedef struct {
    int op;
    const char *coll, *a, *b; /* a: query, docs or keys; b: opts or update */
    int want;                 /* 0: the backend runs; else the front's error */
    const char *msg;          /* NULL, or the whole message */
} case_t;

static int run(dl_store_t *s, const case_t *c, dl_store_res_t *r)
{
    const char *coll = c->coll ? c->coll : "items";
    switch (c->op) {
    case FIND: return dl_store_find(s, coll, c->a, c->b, r);
    case COUNT: return dl_store_count(s, coll, c->a, r);
    case INSERT: return dl_store_insert(s, coll, c->a, r);
    case UPDATE: return dl_store_update(s, coll, c->a, c->b, 1, r);
    case FOAU: return dl_store_find_one_and_update(s, coll, c->a, c->b, NULL, r);
    case REMOVE: return dl_store_remove(s, coll, c->a, 0, r);
    default: return dl_store_create_index(s, coll, c->a, 0, r);
    }
}

static void run_cases(const case_t *cases, size_t n)
{
    dl_store_t s = {&recorder_ops};
    dl_store_res_t r;
    dl_store_res_init(&r);
    for (size_t k = 0; k < n; k++) {
        const case_t *c = &cases[k];
        calls = 0;
        int rc = run(&s, c, &r);
        if (rc != c->want || r.status != c->want)
            DL_FAIL_AT("case %zu (%s / %s / %s): rc %d status %d, want %d (%s)", k,
                       c->coll ? c->coll : "items", c->a ? c->a : "NULL", c->b ? c->b : "NULL",
                       rc, r.status, c->want, r.err);
        if (calls != (c->want == 0))
            DL_FAIL_AT("case %zu: backend called %d times", k, calls);
        if (c->msg != NULL && strcmp(r.err, c->msg) != 0)
            DL_FAIL_AT("case %zu: message \"%s\", want \"%s\"", k, r.err, c->msg);
    }
    dl_store_res_free(&r);
}

DL_TEST(store_front_passes_the_subset)
{
    static const case_t cases[] = {
        {FIND, NULL, NULL, NULL, 0, NULL},
        {FIND, NULL, "", "", 0, NULL},
        {FIND, NULL, "{\"a\":1,\"b.c\":\"x\",\"d\":{\"e\":1},\"n\":null}", NULL, 0, NULL},
        {FIND, NULL, "{\"a\":{\"$eq\":1},\"b\":{\"$ne\":null},\"c\":{\"$gt\":1,\"$lt\":9}}", NULL,
         0, NULL},
        {FIND, NULL, "{\"t\":{\"$in\":[1,\"x\",null,{\"k\":1}]},\"u\":{\"$nin\":[]}}", NULL, 0,
         NULL},
        {FIND, NULL, "{\"$and\":[{\"a\":1},{\"$or\":[{\"b\":{\"$gte\":\"x\"}},{\"c-d\":"
                     "{\"$exists\":false}}]}]}",
         NULL, 0, NULL},
        {FIND, NULL, NULL,
         "{\"sort\":[[\"a\",1],[\"b.c\",-1]],\"skip\":0,\"limit\":5,\"projection\":{\"a\":1,"
         "\"_id\":0},\"upsert\":true,\"new\":1}",
         0, NULL},
        {FIND, NULL, NULL, "{\"sort\":{\"a\":-1},\"projection\":{\"a\":true,\"_id\":false}}", 0,
         NULL},
        {FIND, NULL, NULL, "{\"sort\":null,\"projection\":null}", 0, NULL},
        {COUNT, NULL, "{\"a\":[1,2]}", NULL, 0, NULL},
        {INSERT, NULL, "[]", NULL, 0, NULL},
        {INSERT, NULL, "[{\"_id\":\"x\",\"a\":{\"b\":[1]}},{}]", NULL, 0, NULL},
        {UPDATE, NULL, "{}", "{\"$set\":{\"a\":1,\"b.c\":{\"d\":[2]}},\"$inc\":{\"n\":1.5},"
                             "\"$unset\":{\"x\":\"\"},\"$push\":{\"tags\":\"t\"}}",
         0, NULL},
        {FOAU, NULL, "{\"a\":1}", "{\"$inc\":{\"n\":1}}", 0, NULL},
        {REMOVE, NULL, "{\"a\":{\"$exists\":1}}", NULL, 0, NULL},
        {INDEX, NULL, "[[\"a\",1],[\"b\",-1]]", NULL, 0, NULL},
        {INDEX, NULL, "{\"a\":1}", NULL, 0, NULL},
        {FIND, "A_z09", NULL, NULL, 0, NULL},
        {FIND, "x123456789x123456789x123456789x123456789x123456789x123456789x123", NULL, NULL, 0,
         NULL},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
}

/* Refused by both backends before issue 19, and still. */
DL_TEST(store_front_refuses)
{
    static const case_t cases[] = {
        {FIND, NULL, "{\"name\":{\"$regex\":\"^a\"}}", NULL, DL_EQUERY,
         "unsupported query operator $regex"},
        {FIND, NULL, "{\"$where\":\"1\"}", NULL, DL_EQUERY, "unsupported query operator $where"},
        {FIND, NULL, "{\"$nor\":[{\"a\":1}]}", NULL, DL_EQUERY, "unsupported query operator $nor"},
        {FIND, NULL, "{\"a\":{\"$not\":{\"$gt\":1}}}", NULL, DL_EQUERY,
         "unsupported query operator $not"},
        {FIND, NULL, "{\"a\":{\"$gt\":1,\"$type\":2}}", NULL, DL_EQUERY,
         "unsupported query operator $type"},
        {FIND, NULL, "{\"$or\":[{\"$where\":\"1\"}]}", NULL, DL_EQUERY,
         "unsupported query operator $where"},
        {FIND, NULL, "{\"a\":{\"$gt\":1,\"b\":2}}", NULL, DL_EQUERY, NULL},
        {FIND, NULL, "{\"a\":{\"$in\":5}}", NULL, DL_EINVAL,
         "query operator $in needs an array (on a)"},
        {FIND, NULL, "{\"$or\":{\"a\":1}}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"$or\":[]}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"$and\":[1]}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "[1]", NULL, DL_EINVAL, "query must be a JSON object"},
        {FIND, NULL, "{\"a\":", NULL, DL_EINVAL, NULL},
        {FIND, NULL, NULL, "{\"sort\":{\"a\":2}}", DL_EINVAL,
         "sort direction for a must be 1 or -1"},
        {FIND, NULL, NULL, "{\"limit\":-1}", DL_EINVAL, "limit must be a non-negative integer"},
        {FIND, NULL, NULL, "{\"projection\":{\"a\":{\"$slice\":1}}}", DL_EQUERY, NULL},
        {FIND, NULL, NULL, "5", DL_EINVAL, "opts must be a JSON object"},
        {FIND, "", NULL, NULL, DL_EINVAL, "invalid collection name (1-64 of [A-Za-z0-9_])"},
        {REMOVE, "a$b", "{}", NULL, DL_EINVAL, NULL},
        {INSERT, NULL, "{\"a\":1}", NULL, DL_EINVAL, "insert expects a JSON array of documents"},
        {INSERT, NULL, "[1]", NULL, DL_EINVAL, "insert: document 0 is not an object"},
        {INSERT, NULL, NULL, NULL, DL_EINVAL, "insert: missing JSON"},
        {UPDATE, NULL, "{}", "{\"$rename\":{\"a\":\"b\"}}", DL_EQUERY,
         "unsupported update operator $rename"},
        {UPDATE, NULL, "{}", "{}", DL_EINVAL, NULL},
        {UPDATE, NULL, "{}", "{\"$set\":5}", DL_EINVAL, NULL},
        {FOAU, NULL, "{\"$where\":\"1\"}", "{\"$set\":{\"a\":1}}", DL_EQUERY, NULL},
        {INDEX, NULL, "[[\"a\",2]]", NULL, DL_EINVAL, "index direction for a must be 1 or -1"},
        {INDEX, NULL, "[\"a\"]", NULL, DL_EINVAL, "index: expected [[field, 1|-1], ...]"},
        {INDEX, NULL, "[]", NULL, DL_EINVAL, "index: no fields"},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
}

/* MongoDB let these through (to the driver or the server) before issue 19;
 * SQLite refused them, as both do now. */
DL_TEST(store_front_changed_for_mongo)
{
    static const case_t cases[] = {
        /* collection names: 1-64 of [A-Za-z0-9_], not only "non-empty, no $" */
        {FIND, "a-b", NULL, NULL, DL_EINVAL, NULL},
        {FIND, "a.b", NULL, NULL, DL_EINVAL, NULL},
        {FIND, "a b", NULL, NULL, DL_EINVAL, NULL},
        {FIND, "x123456789x123456789x123456789x123456789x123456789x123456789x1234", NULL, NULL,
         DL_EINVAL, NULL},
        /* field paths: dotted segments of [A-Za-z0-9_-] */
        {FIND, NULL, "{\"a b\":1}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"a..b\":1}", NULL, DL_EINVAL, NULL},
        {UPDATE, NULL, "{}", "{\"$set\":{\"a'b\":1}}", DL_EINVAL, NULL},
        {FIND, NULL, NULL, "{\"sort\":{\"a b\":1}}", DL_EINVAL, NULL},
        {FIND, NULL, NULL, "{\"projection\":{\"a b\":1}}", DL_EINVAL, NULL},
        {INDEX, NULL, "[[\"a b\",1]]", NULL, DL_EINVAL, NULL},
        /* extended JSON in a value was read as a typed value (an ObjectId, a date) */
        {FIND, NULL, "{\"_id\":{\"$oid\":\"0123456789abcdef01234567\"}}", NULL, DL_EQUERY,
         "unsupported query operator $oid"},
        {FIND, NULL, "{\"d\":{\"$gt\":{\"$date\":\"2020-01-01T00:00:00Z\"}}}", NULL, DL_EQUERY,
         "unsupported query operator $date"},
        /* range operators compare numbers, strings and booleans only */
        {FIND, NULL, "{\"a\":{\"$gt\":null}}", NULL, DL_EQUERY, "unsupported value null for $gt"},
        {FIND, NULL, "{\"a\":{\"$lt\":[1]}}", NULL, DL_EQUERY, NULL},
        {FIND, NULL, "{\"a\":{\"$gte\":{\"k\":1}}}", NULL, DL_EQUERY, NULL},
        /* updates: _id stays, $inc takes numbers (the server refused these later, in
         * other words); a replacement is an unsupported operator, not a bad argument */
        {UPDATE, NULL, "{}", "{\"$set\":{\"_id\":\"b\"}}", DL_EINVAL,
         "$set: _id cannot be changed"},
        {UPDATE, NULL, "{}", "{\"$inc\":{\"n\":\"1\"}}", DL_EINVAL, "$inc on n needs a number"},
        {UPDATE, NULL, "{}", "{\"a\":1}", DL_EQUERY,
         "unsupported update: replacement documents (field a); update needs operators ($set, "
         "$inc, $unset, $push)"},
        /* options: whole numbers, at most 16 sort keys, inclusion projections */
        {FIND, NULL, NULL, "{\"limit\":1.5}", DL_EINVAL, NULL},
        {FIND, NULL, NULL, "{\"skip\":2.5}", DL_EINVAL, NULL},
        {FIND, NULL, NULL, "{\"sort\":{\"a\":1.0}}", DL_EINVAL, NULL},
        {FIND, NULL, NULL,
         "{\"sort\":{\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"h\":1,\"i\":1,"
         "\"j\":1,\"k\":1,\"l\":1,\"m\":1,\"n\":1,\"o\":1,\"p\":1,\"q\":1}}",
         DL_EINVAL, "sort: at most 16 keys"},
        {FIND, NULL, NULL, "{\"projection\":{\"a\":0}}", DL_EQUERY,
         "unsupported projection: exclusion of a (inclusion only)"},
        {FIND, NULL, NULL, "{\"fields\":{\"a\":0}}", DL_EQUERY, NULL},
        /* documents: _id is a string */
        {INSERT, NULL, "[{\"_id\":5}]", NULL, DL_EINVAL,
         "insert: document 0: _id must be a string"},
        /* malformed JSON says so in the front's words */
        {COUNT, NULL, "{not json", NULL, DL_EINVAL,
         "query: malformed JSON (expected a key at offset 1)"},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
}

/* SQLite applied or matched these before issue 19; MongoDB refused them, as
 * both do now. */
DL_TEST(store_front_changed_for_sqlite)
{
    static const case_t cases[] = {
        /* $each is outside the documented update subset (SQLite pushed each element) */
        {UPDATE, NULL, "{}", "{\"$push\":{\"tags\":{\"$each\":[1,2]}}}", DL_EQUERY,
         "unsupported update operator $each"},
        /* an operator as a field name is an operator, not a bad name */
        {UPDATE, NULL, "{}", "{\"$set\":{\"$where\":1}}", DL_EQUERY,
         "unsupported update operator $where"},
        /* a value carrying an operator is never stored */
        {UPDATE, NULL, "{}", "{\"$set\":{\"a\":{\"b\":{\"$x\":1}}}}", DL_EQUERY,
         "unsupported update operator $x"},
        /* an object with an operator anywhere among its keys is an operator object (SQLite
         * looked at the first key only and compared the rest as a plain object) */
        {FIND, NULL, "{\"a\":{\"b\":1,\"$gt\":2}}", NULL, DL_EQUERY,
         "cannot mix operators and fields in a"},
        /* no value smuggles an operator into a comparison, at any depth */
        {FIND, NULL, "{\"a\":{\"$in\":[{\"$regex\":\"x\"}]}}", NULL, DL_EQUERY,
         "unsupported query operator $regex"},
        {FIND, NULL, "{\"a\":{\"b\":{\"$gt\":1}}}", NULL, DL_EQUERY,
         "unsupported query operator $gt"},
        /* projections are 0/1 or booleans (SQLite read "yes" as 0) */
        {FIND, NULL, NULL, "{\"projection\":{\"a\":\"yes\"}}", DL_EQUERY,
         "projection of a must be 0 or 1"},
        {FIND, NULL, NULL, "{\"projection\":{\"_id\":\"x\"}}", DL_EQUERY, NULL},
        /* $exists reads no operator out of its operand either */
        {FIND, NULL, "{\"a\":{\"$exists\":{\"$x\":1}}}", NULL, DL_EQUERY,
         "unsupported query operator $x"},
        /* "fields" is a projection for both (SQLite ignored the key) */
        {FIND, NULL, NULL, "{\"fields\":{\"a\":{\"$slice\":1}}}", DL_EQUERY, NULL},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
}

/* SQLite stored and matched these after issue 19; MongoDB refused them, as
 * both do now: a key no document may hold (empty, or with a NUL byte), at any
 * depth of a document, an update value or a query value. */
DL_TEST(store_front_refuses_unstorable_keys)
{
    static const case_t cases[] = {
        {INSERT, NULL, "[{\"\":1}]", NULL, DL_EINVAL,
         "insert: document 0 holds an empty field name"},
        {INSERT, NULL, "[{\"a\":1},{\"x\":{\"\":1}}]", NULL, DL_EINVAL,
         "insert: document 1: x holds an empty field name"},
        {INSERT, NULL, "[{\"x\":[{\"\":1}]}]", NULL, DL_EINVAL,
         "insert: document 0: x holds an empty field name"},
        {INSERT, NULL, "[{\"x\":{\"k\\u0000\":1}}]", NULL, DL_EINVAL,
         "insert: document 0: x holds a field name with a NUL byte"},
        {INSERT, NULL, "[{\"k\\u0000\":1}]", NULL, DL_EINVAL,
         "insert: document 0 holds a field name with a NUL byte"},
        {UPDATE, NULL, "{}", "{\"$set\":{\"x\":{\"\":1}}}", DL_EINVAL,
         "$set on x: the value holds an empty field name"},
        {UPDATE, NULL, "{}", "{\"$push\":{\"tags\":{\"\":1}}}", DL_EINVAL,
         "$push on tags: the value holds an empty field name"},
        {FOAU, NULL, "{}", "{\"$set\":{\"x\":[{\"a\\u0000b\":1}]}}", DL_EINVAL,
         "$set on x: the value holds a field name with a NUL byte"},
        {FIND, NULL, "{\"x\":{\"\":1}}", NULL, DL_EINVAL,
         "$eq on x: the value holds an empty field name"},
        {FIND, NULL, "{\"x\":{\"$in\":[{\"\":1}]}}", NULL, DL_EINVAL,
         "$in on x: the value holds an empty field name"},
        {COUNT, NULL, "{\"x\":{\"$ne\":{\"k\":{\"\\u0000\":1}}}}", NULL, DL_EINVAL,
         "$ne on x: the value holds a field name with a NUL byte"},
        {REMOVE, NULL, "{\"$or\":[{\"x\":[{\"\":1}]}]}", NULL, DL_EINVAL, NULL},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
}

/* SQLite applied these one operator after the other (the $inc after a $set
 * of the same field was lost); MongoDB refused them ("would create a
 * conflict", "path collision"), as both do now. */
DL_TEST(store_front_refuses_path_conflicts)
{
    static const case_t cases[] = {
        {UPDATE, NULL, "{}", "{\"$set\":{\"n\":1},\"$inc\":{\"n\":10}}", DL_EINVAL,
         "update: $set on n conflicts with $inc on n"},
        {UPDATE, NULL, "{}", "{\"$set\":{\"x\":1},\"$unset\":{\"x\":\"\"}}", DL_EINVAL,
         "update: $set on x conflicts with $unset on x"},
        {UPDATE, NULL, "{}", "{\"$set\":{\"m\":{\"k\":1},\"m.k\":2}}", DL_EINVAL,
         "update: $set on m conflicts with $set on m.k"},
        {FOAU, NULL, "{}", "{\"$push\":{\"a.b.c\":1},\"$set\":{\"a-b\":1,\"a.b\":2}}",
         DL_EINVAL, "update: $push on a.b.c conflicts with $set on a.b"},
        {UPDATE, NULL, "{}", "{\"$set\":{\"n\":1,\"n\":2}}", DL_EINVAL,
         "update: $set on n conflicts with $set on n"},
        {FIND, NULL, NULL, "{\"projection\":{\"m\":1,\"m.k\":1}}", DL_EINVAL,
         "projection: m.k collides with m"},
        {FIND, NULL, NULL, "{\"fields\":{\"a.b\":1,\"x\":1,\"a\":true}}", DL_EINVAL,
         "projection: a.b collides with a"},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
    /* neighbours that only share a prefix of their names are no conflict */
    static const case_t fine[] = {
        {UPDATE, NULL, "{}",
         "{\"$set\":{\"m\":1,\"m-k\":2,\"mk\":3,\"a.b\":1},\"$inc\":{\"a.c\":1,"
         "\"a.bb\":2},\"$unset\":{\"a.b-\":\"\"},\"$push\":{\"m_\":1}}",
         0, NULL},
        {FIND, NULL, NULL, "{\"projection\":{\"m\":1,\"m-k\":1,\"mk.k\":1,\"_id\":0}}",
         0, NULL},
    };
    run_cases(fine, DL_ARRAY_SIZE(fine));
}

/* $exists takes true or false (1 or 0 too, as before): SQLite read strings,
 * arrays and objects as false, MongoDB as true. */
DL_TEST(store_front_exists_operand)
{
    static const case_t cases[] = {
        {FIND, NULL, "{\"a\":{\"$exists\":\"yes\"}}", NULL, DL_EINVAL,
         "query operator $exists needs true or false (on a)"},
        {FIND, NULL, "{\"a.b\":{\"$exists\":\"\"}}", NULL, DL_EINVAL,
         "query operator $exists needs true or false (on a.b)"},
        {COUNT, NULL, "{\"a\":{\"$exists\":{}}}", NULL, DL_EINVAL, NULL},
        {COUNT, NULL, "{\"a\":{\"$exists\":[]}}", NULL, DL_EINVAL, NULL},
        {REMOVE, NULL, "{\"a\":{\"$exists\":null}}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"$or\":[{\"a\":{\"$exists\":2}}]}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"a\":{\"$exists\":-1}}", NULL, DL_EINVAL, NULL},
        {FIND, NULL, "{\"a\":{\"$exists\":0.5}}", NULL, DL_EINVAL, NULL},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
    static const case_t fine[] = {
        {FIND, NULL, "{\"a\":{\"$exists\":true},\"b\":{\"$exists\":false}}", NULL, 0, NULL},
        {FIND, NULL, "{\"a\":{\"$exists\":1},\"b\":{\"$exists\":0},\"c\":{\"$exists\":1.0}}",
         NULL, 0, NULL},
    };
    run_cases(fine, DL_ARRAY_SIZE(fine));
}

/* A query of n conditions: fmt "{\"$or\":[%s]}" of "{\"v\":k}" branches, or
 * "{%s}" of "\"fk\":1" fields. */
static void big_query(dl_buf_t *b, const char *fmt, const char *item, int n)
{
    dl_buf_t items = DL_BUF_INIT;
    for (int k = 0; k < n; k++) {
        dl_buf_append_str(&items, k ? "," : "");
        dl_buf_appendf(&items, item, k);
    }
    dl_buf_append_char(&items, '\0');
    dl_buf_reset(b);
    dl_buf_appendf(b, fmt, items.data);
    dl_buf_append_char(b, '\0');
    dl_buf_free(&items);
}

/* SQLite failed an $or of about 1000 branches (expression depth) with EIO and
 * plans one of n branches in n^2 time; MongoDB took any: a query holds at
 * most 1000 conditions for both. An $in list is one, however long. */
DL_TEST(store_front_bounds_query_conditions)
{
    dl_buf_t b = DL_BUF_INIT, ok = DL_BUF_INIT, in = DL_BUF_INIT;
    const char *msg = "query: at most 1000 conditions ($and/$or branches included)";
    big_query(&b, "{\"$or\":[%s]}", "{\"v\":%d}", 1001);
    big_query(&ok, "{\"$or\":[%s]}", "{\"v\":%d}", 1000);
    big_query(&in, "{\"v\":{\"$in\":[%s]}}", "%d", 100000);
    const case_t cases[] = {
        {FIND, NULL, b.data, NULL, DL_EINVAL, msg},
        {COUNT, NULL, ok.data, NULL, 0, NULL},
        {REMOVE, NULL, in.data, NULL, 0, NULL},
    };
    run_cases(cases, DL_ARRAY_SIZE(cases));
    big_query(&b, "{%s}", "\"f%d\":{\"$exists\":true}", 1001);
    big_query(&ok, "{\"a\":{\"$gt\":1,\"$lt\":5},\"$and\":[{},%s]}", "{\"f%d\":1}", 997);
    const case_t more[] = {
        {UPDATE, NULL, b.data, "{\"$set\":{\"a\":1}}", DL_EINVAL, msg},
        {FOAU, NULL, ok.data, "{\"$set\":{\"a\":1}}", 0, NULL},
    };
    run_cases(more, DL_ARRAY_SIZE(more));
    big_query(&b, "{\"a\":{\"$gt\":1,\"$lt\":5},\"$and\":[{},%s]}", "{\"f%d\":1}", 998);
    const case_t over[] = {{COUNT, NULL, b.data, NULL, DL_EINVAL, msg}};
    run_cases(over, DL_ARRAY_SIZE(over));
    dl_buf_free(&b);
    dl_buf_free(&ok);
    dl_buf_free(&in);
}

DL_TEST(store_front_files_and_ping)
{
    dl_store_t s = {&recorder_ops};
    dl_store_res_t r;
    dl_store_res_init(&r);
    calls = 0;
    EXPECT_EQ(dl_store_ping(&s, &r), 0);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(dl_store_has_files(&s), 0);
    EXPECT_EQ(dl_store_file_put(&s, "/nonexistent", "f", NULL, NULL, &r), DL_EINVAL);
    EXPECT_EQ(dl_store_file_get(&s, "0123456789abcdef01234567", "/tmp/x", &r), DL_EINVAL);
    EXPECT_EQ(dl_store_file_remove(&s, "0123456789abcdef01234567", &r), DL_EINVAL);
    EXPECT_STR(dl_store_type(&s), "recorder");
    dl_store_close(NULL);
    dl_store_res_free(&r);
}
