/*
 * sqlite/txn.c - collections (a table per collection, created on first use) and the
 * writer's transactions.
 */
#include "store/sqlite/sqlite_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/env_value.h"
#include "common/internal.h"
#include "common/json_str.h"

static int coll_known(sqlite_store_t *s, const char *coll)
{
    int known = 0;
    pthread_mutex_lock(&s->cmu);
    for (int k = 0; k < s->ncolls && !known; k++)
        known = strcmp(s->colls[k], coll) == 0;
    pthread_mutex_unlock(&s->cmu);
    return known;
}

static void coll_remember(sqlite_store_t *s, const char *coll)
{
    pthread_mutex_lock(&s->cmu);
    if (s->ncolls == s->capcolls) {
        int cap = s->capcolls ? s->capcolls * 2 : 8;
        char **colls = dl_realloc(s->colls, (size_t)cap * sizeof(*colls));
        if (colls != NULL) {
            s->colls = colls;
            s->capcolls = cap;
        }
    }
    if (s->ncolls < s->capcolls) {
        s->colls[s->ncolls] = dl_strdup(coll);
        if (s->colls[s->ncolls] != NULL)
            s->ncolls++;
    }
    pthread_mutex_unlock(&s->cmu);
}

/* Creates coll's table on first use by this store (the front checked the name). */
int dl_sqlite_ensure_coll(sqlite_store_t *s, const char *coll, dl_store_res_t *res)
{
    if (coll_known(s, coll))
        return 0;
    char sql[160];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS \"c_%s\" (id TEXT PRIMARY KEY, doc TEXT NOT NULL) "
             "WITHOUT ROWID", coll);
    pthread_mutex_lock(&s->wmu);
    s->writer.fault = 0;
    if (dl_sqlite_conn_ready(&s->writer, res) == 0) {
        int rc = sqlite3_exec(s->writer.db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            dl_sqlite_sql_fail(res, &s->writer, rc);
        dl_sqlite_conn_settle(&s->writer);
    }
    if (res->status != 0)
        /* an existing table may need no write: only a fault counts */
        dl_sqlite_health_note(s, res);
    pthread_mutex_unlock(&s->wmu);
    if (res->status != 0)
        return res->status;
    coll_remember(s, coll);
    return 0;
}

/* dl_sqlite_ensure_coll() for a read on reader c: a table that exists is only
 * remembered, so reading needs no write and never waits for the writer. */
int dl_sqlite_ensure_coll_read(sqlite_store_t *s, conn_t *c, const char *coll, dl_store_res_t *res)
{
    if (coll_known(s, coll))
        return 0;
    char name[MAX_COLL_LEN + 8];
    snprintf(name, sizeof(name), "c_%s", coll);
    sqlite3_stmt *st =
        dl_sqlite_stmt_get(c, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                           res);
    if (st == NULL)
        return res->status;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        dl_sqlite_sql_fail(res, c, rc);
    dl_sqlite_stmt_put(c, st);
    if (res->status != 0)
        return res->status;
    if (rc == SQLITE_DONE)
        return dl_sqlite_ensure_coll(s, coll, res);
    coll_remember(s, coll);
    return 0;
}

int dl_sqlite_write_begin(sqlite_store_t *s, dl_store_res_t *res)
{
    pthread_mutex_lock(&s->wmu);
    s->writer.fault = 0;
    if (dl_sqlite_conn_ready(&s->writer, res) == 0)
        s->wtx_changes = sqlite3_total_changes64(s->writer.db);
    if (res->status != 0 || dl_sqlite_run_simple(&s->writer, "BEGIN IMMEDIATE", res) != 0) {
        dl_sqlite_conn_settle(&s->writer);
        dl_sqlite_health_note(s, res);
        pthread_mutex_unlock(&s->wmu);
        return res->status;
    }
    return 0;
}

/* Commits when res is ok, else rolls back; records the outcome; releases the
 * writer. */
int dl_sqlite_write_end(sqlite_store_t *s, dl_store_res_t *res)
{
    if (res->status == 0)
        dl_sqlite_run_simple(&s->writer, "COMMIT", res);
    dl_sqlite_conn_settle(&s->writer);
    dl_sqlite_health_note(s, res);
    pthread_mutex_unlock(&s->wmu);
    return res->status;
}
