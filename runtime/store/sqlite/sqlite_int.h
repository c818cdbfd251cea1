/*
 * sqlite_int.h - what the files of the SQLite backend of the document store
 * (store.h; the front, store.c, has checked every input) share. Each
 * collection is a table "c_<name>" (id TEXT PRIMARY KEY, doc TEXT) WITHOUT
 * ROWID holding the document as JSON text, _id first. JSON inputs arrive as
 * the trees the front parsed (dl_store_json_t, store/doc_json.h); stored
 * documents are parsed into an arena per operation where needed; updates
 * are applied to a stored document's tree and the document written back.
 * Queries compile to SQL over json_extract(doc, '$.path'), with every value bound as
 * a parameter; the front allows field names of [A-Za-z0-9_-] and dots only,
 * so the path literal cannot escape; type guards on
 * json_type() keep numbers, strings and booleans apart. create_index makes
 * expression indexes over the very same json_extract() text, so the planner
 * uses them, plus a partial index of the documents holding an array at each
 * indexed field: when it is empty (checked in the same transaction), an
 * equality compiles to the plain indexable form, otherwise (and for fields
 * without an index) it also searches array elements with json_each(), as
 * MongoDB matches arrays. Sorts end with id, which every index carries.
 *
 * Connections: one writer behind a mutex (writes run in BEGIN IMMEDIATE) and
 * a pool of readers (mutex + condvar), in WAL mode, so readers never wait for
 * the writer and other processes can share the file (busy timeout
 * DEVLOOP_DB_BUSY_TIMEOUT_MS, default 5000). Each connection keeps up to 64
 * prepared statements keyed by SQL text (LRU). SQLite errors become DL_E*
 * codes once, in sql_fail(), with a message saying what happened (read-only,
 * locked, full, i/o, cannot open) and SQLite's own.
 *
 * Faults: a failed statement leaves its connection out of any transaction
 * (conn_settle() rolls back what SQLite did not), so the next operation starts
 * clean and succeeds as soon as the cause is gone, with no restart (a
 * connection is reopened only if SQLite cannot leave a transaction, which
 * should not happen). The store remembers the latest write's fault and since when
 * (health_t); ping() reports it and probes the writer itself, so /health shows
 * a read-only, locked or full database, and its recovery, without traffic.
 */
#ifndef DL_STORE_SQLITE_INT_H
#define DL_STORE_SQLITE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "common/buf.h"
#include "store/doc_json.h"
#include "store/store.h"

#define STMT_CACHE_SIZE 64
#define MAX_READERS 64
#define MAX_PATH_LEN 200
#define MAX_SORT_KEYS 16
#define MAX_PROJ_FIELDS 64
#define MAX_COLL_LEN 64
#define BUSY_MS_DEFAULT 5000
#define BUSY_MS_MAX 600000
#define PROBE_BUSY_MS 100       /* the health probe's wait for the write lock */
#define PROBE_INTERVAL_MS 1000  /* at most one probe write per interval */

typedef struct {
    char *sql;
    uint32_t hash;
    int busy;
    uint64_t tick;
    sqlite3_stmt *st;
} stmt_ent_t;

typedef struct {
    sqlite3 *db;          /* NULL after dl_sqlite_conn_settle() gave up on it:
                           * dl_sqlite_conn_ready() reopens */
    const char *path;     /* the store's */
    int writer;
    int busy_ms;          /* the busy timeout in force */
    int fault;            /* the DL_E* of the last database fault dl_sqlite_sql_fail() saw, or 0 */
    int n;
    uint64_t tick;
    stmt_ent_t cache[STMT_CACHE_SIZE];
} conn_t;

/* The latest write's outcome, for ping(). Lock order: wmu, then mu. */
typedef struct {
    pthread_mutex_t mu;
    int code;             /* 0, or the DL_E* of the failure */
    char err[256];
    int64_t since_ms;     /* wall clock of the first failure in a row */
    int64_t busy_seen_ms; /* the probe found the write lock held since then (0: free) */
    uint64_t probe_ns;    /* monotonic time of the last probe */
} health_t;

typedef struct {
    dl_store_t base;
    char *path;
    int busy_ms;
    health_t health;
    conn_t writer;
    int64_t wtx_changes;  /* the writer's total_changes when its transaction began */
    pthread_mutex_t wmu;
    conn_t *readers;
    int nreaders;
    int *free_idx;
    int nfree;
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    pthread_mutex_t cmu; /* guards colls */
    char **colls;        /* collections known to exist */
    int ncolls, capcolls;
} sqlite_store_t;

enum { PK_INT, PK_REAL, PK_TEXT };

typedef struct {
    int kind;
    int64_t i;
    double d;
    const char *s;
    size_t len;
} param_t;

typedef struct {
    dl_buf_t w;           /* the WHERE expression */
    param_t *p;
    int np, cap;
    dl_doc_arena_t *ar;
    conn_t *c;            /* for the array probes */
    const char *coll;
    dl_store_res_t *res;
    struct {
        const char *path;
        size_t len;
        int arr;
    } probes[16];
    int nprobes;
} qc_t;

typedef struct {
    int nsort;
    const char *sp[MAX_SORT_KEYS];
    size_t sl[MAX_SORT_KEYS];
    int sdir[MAX_SORT_KEYS];
    int64_t skip, limit;
    int has_proj, proj_id, nproj;
    const char *pp[MAX_PROJ_FIELDS];
    size_t pl[MAX_PROJ_FIELDS];
} qopts_t;

/* conn.c */
sqlite3_stmt *dl_sqlite_stmt_get(conn_t *c, const char *sql, dl_store_res_t *res);
void dl_sqlite_stmt_put(conn_t *c, sqlite3_stmt *st);
int dl_sqlite_run_simple(conn_t *c, const char *sql, dl_store_res_t *res);
int dl_sqlite_conn_open(conn_t *c, const char *path, int writer, int busy_ms, char *err,
                        size_t errlen);
void dl_sqlite_conn_close(conn_t *c);
void dl_sqlite_conn_settle(conn_t *c);
int dl_sqlite_conn_ready(conn_t *c, dl_store_res_t *res);
conn_t *dl_sqlite_reader_acquire(sqlite_store_t *s);
void dl_sqlite_reader_release(sqlite_store_t *s, conn_t *c);
/* health.c */
void dl_sqlite_health_note(sqlite_store_t *s, const dl_store_res_t *res);
int dl_sqlite_ping(dl_store_t *st_, dl_store_res_t *res);
/* ids.c */
void dl_store_gen_id(char out[25]);
/* index.c */
int dl_sqlite_create_index(dl_store_t *st_, const char *coll, const dl_store_json_t *keys,
                           int unique, dl_store_res_t *res);
/* ops.c */
sqlite_store_t *dl_sqlite_write_open(dl_store_t *st_, const char *coll, dl_store_res_t *res);
/* Inputs come parsed and checked by the front (dl_store_json_t): these read
 * the trees and parse nothing. */
int dl_sqlite_find(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                   const dl_store_json_t *opts, dl_store_res_t *res);
int dl_sqlite_count(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                    dl_store_res_t *res);
int dl_sqlite_explain(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                      const dl_store_json_t *opts, dl_store_res_t *res);
int dl_sqlite_insert(dl_store_t *st_, const char *coll, const dl_store_json_t *docs,
                     dl_store_res_t *res);
int dl_sqlite_update(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                     const dl_store_json_t *update, int multi, dl_store_res_t *res);
int dl_sqlite_find_one_and_update(dl_store_t *s, const char *coll,
                                  const dl_store_json_t *query, const dl_store_json_t *update,
                                  const dl_store_json_t *opts, dl_store_res_t *res);
int dl_sqlite_remove(dl_store_t *st_, const char *coll, const dl_store_json_t *query,
                     int multi, dl_store_res_t *res);
/* project.c */
int dl_sqlite_append_doc(dl_buf_t *out, const char *doc, size_t len, const qopts_t *o,
                         dl_store_res_t *res);
/* query.c */
void dl_sqlite_qc_init(qc_t *q, dl_doc_arena_t *ar, conn_t *c, const char *coll,
                       dl_store_res_t *res);
void dl_sqlite_qc_free(qc_t *q);
int dl_sqlite_is_id_path(const char *p, size_t n);
int dl_sqlite_bind_params(sqlite3_stmt *st, const qc_t *q);
int dl_sqlite_compile_query(qc_t *q, const dl_doc_t *v);
void dl_sqlite_add_sorts(qopts_t *o, const dl_doc_t *v);
/* The find options of opts (the front's tree; NULL: none) into o. */
void dl_sqlite_read_opts(const dl_doc_t *v, qopts_t *o);
int dl_sqlite_build_sql(qc_t *q, dl_buf_t *sql, const char *head, const dl_doc_t *query,
                        const qopts_t *o, int64_t limit);
/* result.c */
int dl_sqlite_sql_fail(dl_store_res_t *res, conn_t *c, int rc);
int dl_sqlite_fail_oom_or(dl_store_res_t *res, const dl_buf_t *b);
/* txn.c */
int dl_sqlite_ensure_coll(sqlite_store_t *s, const char *coll, dl_store_res_t *res);
int dl_sqlite_ensure_coll_read(sqlite_store_t *s, conn_t *c, const char *coll, dl_store_res_t *res);
int dl_sqlite_write_begin(sqlite_store_t *s, dl_store_res_t *res);
int dl_sqlite_write_end(sqlite_store_t *s, dl_store_res_t *res);
/* update.c */
int dl_sqlite_upd_apply(dl_doc_arena_t *a, dl_doc_t *doc, const dl_doc_t *u, dl_store_res_t *res);

#endif
