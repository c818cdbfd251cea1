/*
 * test_sqlite_faults.c - runtime/store/sqlite/ when the database cannot be
 * written: locked by another connection past the busy timeout
 * (DEVLOOP_DB_BUSY_TIMEOUT_MS, and its validation), read-only (the writer in
 * PRAGMA query_only, SQLite's own SQLITE_READONLY) and full (max_page_count,
 * SQLite's own SQLITE_FULL). Each write fails with its own DL_E* code and a
 * message saying what happened, reads keep working, the writer is left out of
 * any transaction, ping() reports the fault and since when (its probe sees a
 * held lock without traffic), and the store recovers by itself once the cause
 * is gone. tests/e2e/test_db_faults.py does the same with a real full disk,
 * EROFS and another process on a running server.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/buf.h"
#include "common/internal.h"
#include "store/store.h"
#include "unit.h"

/* In runtime/store/sqlite/open.c, for tests. */
sqlite3 *dl_sqlite_store_writer(dl_store_t *s);

/* ---- helpers -------------------------------------------------------------------------------- */

typedef struct {
    char dir[64];
    char path[128];
    dl_store_t *s;
    dl_store_res_t r;
} fdb_t;

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Opens a store at <mkdtemp>/db.sqlite with busy_env as DEVLOOP_DB_BUSY_TIMEOUT_MS (NULL:
 * unset), holding two documents. */
static void fdb_open(fdb_t *t, const char *busy_env)
{
    char err[256] = "";
    snprintf(t->dir, sizeof(t->dir), "/tmp/dl_faults_XXXXXX");
    DL_ASSERT(mkdtemp(t->dir) != NULL);
    snprintf(t->path, sizeof(t->path), "%s/db.sqlite", t->dir);
    if (busy_env != NULL)
        setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", busy_env, 1);
    else
        unsetenv("DEVLOOP_DB_BUSY_TIMEOUT_MS");
    t->s = dl_store_open_sqlite(t->path, 2, err, sizeof(err));
    if (t->s == NULL)
        DL_FAIL_AT("open %s: %s", t->path, err);
    DL_ASSERT(t->s != NULL);
    dl_store_res_init(&t->r);
    int rc = dl_store_insert(t->s, "notes", "[{\"_id\": \"a\", \"n\": 1}, {\"_id\": \"b\"}]",
                             &t->r);
    EXPECT_EQ(rc, 0);
}

static void fdb_close(fdb_t *t)
{
    if (t->s != NULL)
        t->s->ops->close(t->s);
    t->s = NULL;
    dl_store_res_free(&t->r);
    DIR *d = opendir(t->dir);
    struct dirent *e;
    char p[sizeof(t->dir) + sizeof(e->d_name) + 1];
    for (e = d ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        snprintf(p, sizeof(p), "%s/%s", t->dir, e->d_name);
        unlink(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(t->dir);
    unsetenv("DEVLOOP_DB_BUSY_TIMEOUT_MS");
}

/* The result's JSON as a NUL-terminated string (valid until the next call on r). */
static const char *jtext(dl_store_res_t *r)
{
    dl_buf_append_char(&r->json, '\0');
    r->json.len--;
    return r->json.data;
}

static int insert_one(fdb_t *t, const char *doc)
{
    return dl_store_insert(t->s, "notes", doc, &t->r);
}

static int64_t count_notes(fdb_t *t)
{
    int rc = dl_store_count(t->s, "notes", NULL, &t->r);
    if (rc != 0) {
        DL_FAIL_AT("count: %d %s", rc, t->r.err);
        return -1;
    }
    return t->r.count;
}

/* ping(), which must succeed: its JSON. */
static const char *ping(fdb_t *t)
{
    int rc = dl_store_ping(t->s, &t->r);
    if (rc != 0)
        DL_FAIL_AT("ping: %d %s", rc, t->r.err);
    return jtext(&t->r);
}

#define EXPECT_HAS(hay, needle)                                                                   \
    do {                                                                                          \
        const char *h_ = (hay), *n_ = (needle);                                                   \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                 \
            DL_FAIL_AT("%s has \"%s\": \"%s\"", #hay, n_, h_ ? h_ : "(null)");                    \
    } while (0)

/* A second connection (another process would do the same) holding the write lock. */
static sqlite3 *lock_db(const char *path)
{
    sqlite3 *db = NULL;
    DL_ASSERT(sqlite3_open(path, &db) == SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    return db;
}

static void unlock_db(sqlite3 *db)
{
    EXPECT_EQ(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- tests ---------------------------------------------------------------------------------- */

DL_TEST(sqlite_fault_locked)
{
    fdb_t t;
    fdb_open(&t, "150");
    EXPECT_STR(ping(&t), "{\"ok\":1}");
    sqlite3 *other = lock_db(t.path);

    uint64_t t0 = ms_now();
    EXPECT_EQ(insert_one(&t, "[{\"_id\": \"c\"}]"), DL_EBUSY);
    uint64_t waited = ms_now() - t0;
    EXPECT_HAS(t.r.err, "database locked by another process for more than 150 ms");
    EXPECT_STR(dl_err_name(DL_EBUSY), "EBUSY");
    EXPECT_INT(waited, >=, 140);
    EXPECT_INT(waited, <, 2000);
    EXPECT_EQ(dl_store_update(t.s, "notes", "{\"_id\": \"a\"}", "{\"$set\": {\"n\": 2}}", 0,
                              &t.r), DL_EBUSY);
    EXPECT_EQ(dl_store_remove(t.s, "notes", "{}", 1, &t.r), DL_EBUSY);

    /* WAL: reads do not wait for the lock */
    t0 = ms_now();
    EXPECT_EQ(count_notes(&t), 2);
    EXPECT_INT(ms_now() - t0, <, 100);

    const char *j = ping(&t);
    EXPECT_HAS(j, "\"write\":{\"ok\":false,\"code\":\"EBUSY\"");
    EXPECT_HAS(j, "locked by another process for more than 150 ms");
    EXPECT_HAS(j, "\"since\":\"20");

    unlock_db(other);
    EXPECT_EQ(insert_one(&t, "[{\"_id\": \"c\"}]"), 0);
    EXPECT_STR(ping(&t), "{\"ok\":1}"); /* the write that committed cleared it */
    EXPECT_EQ(count_notes(&t), 3);
    fdb_close(&t);
}

/* Without a write, ping()'s probe finds the lock held; a lock held no longer than
 * the busy timeout is no fault, one held for all of it is. */
DL_TEST(sqlite_fault_locked_probe)
{
    fdb_t t;
    fdb_open(&t, "300");
    sqlite3 *other = lock_db(t.path);
    uint64_t t0 = ms_now();
    EXPECT_STR(ping(&t), "{\"ok\":1}"); /* seen held, not yet for 300 ms */
    EXPECT_INT(ms_now() - t0, <, 1000);  /* the probe waits 100 ms, not 300 */
    usleep(1100 * 1000);                 /* one probe a second */
    t0 = ms_now();
    const char *j = ping(&t);
    EXPECT_INT(ms_now() - t0, <, 1000);
    EXPECT_HAS(j, "\"code\":\"EBUSY\",\"error\":\"database locked by another process for "
                  "more than 300 ms\"");
    unlock_db(other);
    usleep(1100 * 1000);
    EXPECT_STR(ping(&t), "{\"ok\":1}"); /* the probe wrote: recovered without traffic */
    fdb_close(&t);
}

DL_TEST(sqlite_fault_busy_timeout_env)
{
    static const char *const bad[] = {"abc", "-1",  "600001", "11m",
                                      "12xs", " 5", "1e3",    "99999999999"};
    char dir[64] = "/tmp/dl_faults_XXXXXX", path[128], err[256];
    DL_ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/db.sqlite", dir);
    for (size_t k = 0; k < DL_ARRAY_SIZE(bad); k++) {
        setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", bad[k], 1);
        err[0] = '\0';
        dl_store_t *s = dl_store_open_sqlite(path, 1, err, sizeof(err));
        EXPECT(s == NULL);
        if (s != NULL)
            s->ops->close(s);
        EXPECT_HAS(err, "DEVLOOP_DB_BUSY_TIMEOUT_MS=");
        EXPECT_HAS(err, bad[k]);
    }
    EXPECT(access(path, F_OK) != 0); /* refused before anything was created */
    /* durations take units, as every *_MS variable does (env_value.c) */
    int ms = 0;
    setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", "2s", 1);
    EXPECT(dl_sqlite_busy_timeout_env(&ms, err, sizeof(err)) == 0 && ms == 2000);
    setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", "250ms", 1);
    EXPECT(dl_sqlite_busy_timeout_env(&ms, err, sizeof(err)) == 0 && ms == 250);
    setenv("DEVLOOP_DB_BUSY_TIMEOUT_MS", "0", 1);
    dl_store_t *s = dl_store_open_sqlite(path, 1, err, sizeof(err));
    EXPECT(s != NULL);
    if (s != NULL)
        s->ops->close(s);
    unsetenv("DEVLOOP_DB_BUSY_TIMEOUT_MS");
    char p[192];
    static const char *const files[] = {"db.sqlite", "db.sqlite-wal", "db.sqlite-shm"};
    for (size_t k = 0; k < DL_ARRAY_SIZE(files); k++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[k]);
        unlink(p);
    }
    rmdir(dir);
}

DL_TEST(sqlite_fault_read_only)
{
    fdb_t t;
    fdb_open(&t, NULL);
    sqlite3 *w = dl_sqlite_store_writer(t.s);
    EXPECT_EQ(sqlite3_exec(w, "PRAGMA query_only=1", NULL, NULL, NULL), SQLITE_OK);

    EXPECT_EQ(insert_one(&t, "[{\"_id\": \"c\"}]"), DL_EROFS);
    EXPECT_HAS(t.r.err, "database is read-only");
    EXPECT_STR(dl_err_name(DL_EROFS), "EROFS");
    EXPECT_EQ(dl_store_update(t.s, "notes", "{}", "{\"$set\": {\"n\": 5}}", 1, &t.r), DL_EROFS);
    EXPECT_EQ(dl_store_remove(t.s, "notes", "{\"_id\": \"a\"}", 0, &t.r), DL_EROFS);
    EXPECT_EQ(dl_store_create_index(t.s, "notes", "[[\"n\", 1]]", 0, &t.r), DL_EROFS);
    EXPECT_EQ(sqlite3_get_autocommit(w), 1);
    EXPECT_EQ(count_notes(&t), 2);
    EXPECT_EQ(dl_store_find(t.s, "notes", "{\"_id\": \"a\"}", NULL, &t.r), 0);
    EXPECT_STR(jtext(&t.r), "[{\"_id\":\"a\",\"n\":1}]");
    const char *j = ping(&t);
    EXPECT_HAS(j, "\"write\":{\"ok\":false,\"code\":\"EROFS\",\"error\":\"database is read-only");

    EXPECT_EQ(sqlite3_exec(w, "PRAGMA query_only=0", NULL, NULL, NULL), SQLITE_OK);
    EXPECT_EQ(insert_one(&t, "[{\"_id\": \"c\"}]"), 0);
    EXPECT_STR(ping(&t), "{\"ok\":1}");
    EXPECT_EQ(count_notes(&t), 3);
    fdb_close(&t);
}

DL_TEST(sqlite_fault_full)
{
    fdb_t t;
    fdb_open(&t, NULL);
    sqlite3 *w = dl_sqlite_store_writer(t.s);
    /* no page beyond the ones in use: the database is full */
    EXPECT_EQ(sqlite3_exec(w, "PRAGMA max_page_count = 1", NULL, NULL, NULL), SQLITE_OK);
    char doc[6000];
    snprintf(doc, sizeof(doc), "[{\"_id\": \"big\", \"pad\": \"%05000d\"}]", 7);

    EXPECT_EQ(insert_one(&t, doc), DL_ENOSPC);
    EXPECT_STR(t.r.err, "database or disk is full");
    EXPECT_STR(dl_err_name(DL_ENOSPC), "ENOSPC");
    EXPECT_EQ(sqlite3_get_autocommit(w), 1); /* rolled back: no transaction left open */
    EXPECT_EQ(count_notes(&t), 2);
    const char *j = ping(&t);
    EXPECT_HAS(j, "\"write\":{\"ok\":false,\"code\":\"ENOSPC\"");
    char since[64];
    const char *sp = strstr(j, "\"since\":\"");
    EXPECT(sp != NULL);
    snprintf(since, sizeof(since), "%.33s", sp ? sp : "");

    /* a write that changes nothing commits even on a full disk: it tells nothing */
    EXPECT_EQ(dl_store_update(t.s, "notes", "{\"_id\": \"none\"}", "{\"$set\": {\"n\": 1}}",
                              0, &t.r), 0);
    EXPECT_EQ(t.r.matched, 0);
    usleep(20 * 1000);
    EXPECT_EQ(insert_one(&t, doc), DL_ENOSPC);
    j = ping(&t);
    EXPECT_HAS(j, "\"code\":\"ENOSPC\"");
    EXPECT_HAS(j, since); /* still the first failure's time */

    EXPECT_EQ(sqlite3_exec(w, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL),
              SQLITE_OK);
    /* the same cached statement, reset after its failure, works again */
    EXPECT_EQ(insert_one(&t, doc), 0);
    EXPECT_STR(ping(&t), "{\"ok\":1}");
    EXPECT_EQ(count_notes(&t), 3);
    fdb_close(&t);
}
