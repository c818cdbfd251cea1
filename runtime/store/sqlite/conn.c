/*
 * sqlite/conn.c - connections: opening, settling and reopening them, the per-connection
 * cache of prepared statements (LRU by SQL text) and the pool of readers.
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


/* A prepared statement for sql, from the cache; hand it back with dl_sqlite_stmt_put(). */
sqlite3_stmt *dl_sqlite_stmt_get(conn_t *c, const char *sql, dl_store_res_t *res)
{
    uint32_t h = dl_fnv1a(sql, strlen(sql));
    for (int k = 0; k < c->n; k++) {
        stmt_ent_t *e = &c->cache[k];
        if (e->hash == h && !e->busy && strcmp(e->sql, sql) == 0) {
            e->busy = 1;
            e->tick = ++c->tick;
            return e->st;
        }
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        dl_sqlite_sql_fail(res, c, rc);
        sqlite3_finalize(st);
        return NULL;
    }
    int slot = -1;
    if (c->n < STMT_CACHE_SIZE) {
        slot = c->n;
    } else {
        for (int k = 0; k < c->n; k++)
            if (!c->cache[k].busy && (slot < 0 || c->cache[k].tick < c->cache[slot].tick))
                slot = k;
    }
    char *copy = dl_strdup(sql);
    if (slot < 0 || copy == NULL) {
        dl_free(copy);
        return st; /* uncached: dl_sqlite_stmt_put() finalizes it */
    }
    stmt_ent_t *e = &c->cache[slot];
    if (slot == c->n) {
        c->n++;
    } else {
        sqlite3_finalize(e->st);
        dl_free(e->sql);
    }
    e->sql = copy;
    e->hash = h;
    e->busy = 1;
    e->tick = ++c->tick;
    e->st = st;
    return st;
}

void dl_sqlite_stmt_put(conn_t *c, sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (int k = 0; k < c->n; k++) {
        if (c->cache[k].st == st) {
            c->cache[k].busy = 0;
            return;
        }
    }
    sqlite3_finalize(st);
}

/* Runs a statement without parameters or rows. */
int dl_sqlite_run_simple(conn_t *c, const char *sql, dl_store_res_t *res)
{
    sqlite3_stmt *st = dl_sqlite_stmt_get(c, sql, res);
    if (st == NULL)
        return res->status;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        dl_sqlite_sql_fail(res, c, rc);
    dl_sqlite_stmt_put(c, st);
    return res->status;
}

/* Opens c on path; err gets the message, and the DL_E* is returned. */
int dl_sqlite_conn_open(conn_t *c, const char *path, int writer, int busy_ms, char *err,
                        size_t errlen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    memset(c, 0, sizeof(*c));
    c->path = path;
    c->writer = writer;
    c->busy_ms = busy_ms;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(c->db, busy_ms);
        const char *pragmas = writer ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                                       "PRAGMA foreign_keys=OFF;"
                                     : "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; "
                                       "PRAGMA query_only=1;";
        rc = sqlite3_exec(c->db, pragmas, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        dl_store_res_t r;
        dl_store_res_init(&r);
        dl_sqlite_sql_fail(&r, c, rc);
        snprintf(err, errlen, "sqlite open %s: %s", path, r.err);
        sqlite3_close_v2(c->db);
        c->db = NULL;
        return r.status;
    }
    return 0;
}

void dl_sqlite_conn_close(conn_t *c)
{
    for (int k = 0; k < c->n; k++) {
        sqlite3_finalize(c->cache[k].st);
        dl_free(c->cache[k].sql);
    }
    c->n = 0;
    if (c->db != NULL)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

/* Leaves c out of any transaction: a failed statement may leave one open (SQLite
 * rolls back by itself after some errors and not after others), and a writer
 * kept in it would hold the write lock, a reader its snapshot (the WAL could
 * then never be reset). Should ROLLBACK fail too, c is closed; dl_sqlite_conn_ready()
 * reopens it before its next use. */
void dl_sqlite_conn_settle(conn_t *c)
{
    if (c->db == NULL || sqlite3_get_autocommit(c->db))
        return;
    dl_store_res_t tmp;
    dl_store_res_init(&tmp);
    dl_sqlite_run_simple(c, "ROLLBACK", &tmp);
    if (sqlite3_get_autocommit(c->db))
        return;
    dl_log(DL_LOG_WARN, "sqlite %s: cannot leave a transaction (%s); reopening the connection",
           c->path, tmp.err);
    dl_sqlite_conn_close(c); /* keeps path, role and busy timeout for dl_sqlite_conn_ready() */
}

/* Reopens c when dl_sqlite_conn_settle() closed it (or an earlier reopen failed). */
int dl_sqlite_conn_ready(conn_t *c, dl_store_res_t *res)
{
    if (c->db != NULL)
        return 0;
    char err[sizeof(res->err)];
    int rc = dl_sqlite_conn_open(c, c->path, c->writer, c->busy_ms, err, sizeof(err));
    if (rc == 0)
        return 0;
    c->fault = rc;
    return dl_store_res_fail(res, rc, "%s", err);
}

conn_t *dl_sqlite_reader_acquire(sqlite_store_t *s)
{
    pthread_mutex_lock(&s->pmu);
    while (s->nfree == 0)
        pthread_cond_wait(&s->pcv, &s->pmu);
    conn_t *c = &s->readers[s->free_idx[--s->nfree]];
    pthread_mutex_unlock(&s->pmu);
    return c;
}

void dl_sqlite_reader_release(sqlite_store_t *s, conn_t *c)
{
    pthread_mutex_lock(&s->pmu);
    s->free_idx[s->nfree++] = (int)(c - s->readers);
    pthread_cond_signal(&s->pcv);
    pthread_mutex_unlock(&s->pmu);
}
