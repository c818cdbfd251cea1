/*
 * sqlite_store.c - the SQLite backend of the document store (store.h). Each
 * collection is a table "c_<name>" (id TEXT PRIMARY KEY, doc TEXT) WITHOUT
 * ROWID holding the document as JSON text, _id first. JSON inputs are parsed
 * here into a small DOM (an arena per operation), so malformed input is
 * DL_EINVAL before SQLite sees it; updates are applied to that DOM and the
 * document written back. Queries compile to SQL over json_extract(doc,
 * '$.path'), with every value bound as a parameter and field names checked
 * against [A-Za-z0-9_-] so the path literal cannot escape; type guards on
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
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/env_value.h"
#include "common/internal.h"
#include "common/json_str.h"

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

#include "store/doc_json.h"


/* ------------------------------------------------------------------------ */
/* Results and errors                                                       */
/* ------------------------------------------------------------------------ */

static int set_err(dl_store_res_t *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(dl_store_res_t *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->err, sizeof(res->err), fmt, ap);
    va_end(ap);
    res->status = code;
    return code;
}

/* dl_doc_parse() with its failure as DL_EINVAL in res. */
static dl_doc_t *doc_parse(dl_doc_arena_t *a, const char *text, const char *dflt,
                           const char *what, dl_store_res_t *res)
{
    dl_doc_t *v = dl_doc_parse(a, text, dflt, what, res->err, sizeof(res->err));
    if (v == NULL)
        res->status = DL_EINVAL;
    return v;
}

static void res_begin(dl_store_res_t *res)
{
    res->status = 0;
    res->err[0] = '\0';
    dl_buf_reset(&res->json);
    res->count = 0;
    res->matched = 0;
}

/* ------------------------------------------------------------------------ */
/* JSON output                                                              */
/* ------------------------------------------------------------------------ */


/* ------------------------------------------------------------------------ */
/* Ids: 4-byte seconds, 5 random bytes per process, 3-byte counter         */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t id_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t id_pid;
static unsigned char id_rand[5];
static uint32_t id_counter;

DL_STATIC void dl_store_gen_id(char out[25])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[12];
    pthread_mutex_lock(&id_mu);
    if (id_pid != getpid()) {
        unsigned char r[8];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            uint64_t x = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)getpid();
            memcpy(r, &x, sizeof(r));
        }
        memcpy(id_rand, r, 5);
        /* start in the lower half so 8M ids per second still increase */
        id_counter = ((uint32_t)r[5] << 16 | (uint32_t)r[6] << 8 | r[7]) & 0x7FFFFF;
        id_pid = getpid();
    }
    uint32_t cnt = id_counter++ & 0xFFFFFF;
    uint32_t t = (uint32_t)time(NULL);
    pthread_mutex_unlock(&id_mu);
    b[0] = (unsigned char)(t >> 24);
    b[1] = (unsigned char)(t >> 16);
    b[2] = (unsigned char)(t >> 8);
    b[3] = (unsigned char)t;
    memcpy(b + 4, id_rand, 5);
    b[9] = (unsigned char)(cnt >> 16);
    b[10] = (unsigned char)(cnt >> 8);
    b[11] = (unsigned char)cnt;
    for (int k = 0; k < 12; k++) {
        out[2 * k] = hex[b[k] >> 4];
        out[2 * k + 1] = hex[b[k] & 15];
    }
    out[24] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Connections and the statement cache                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *sql;
    uint32_t hash;
    int busy;
    uint64_t tick;
    sqlite3_stmt *st;
} stmt_ent_t;

typedef struct {
    sqlite3 *db;          /* NULL after conn_settle() gave up on it: conn_ready() reopens */
    const char *path;     /* the store's */
    int writer;
    int busy_ms;          /* the busy timeout in force */
    int fault;            /* the DL_E* of the last database fault sql_fail() saw, or 0 */
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

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s != '\0') {
        h ^= (unsigned char)*s++;
        h *= 16777619u;
    }
    return h;
}

/* An errno as words, for messages (strerror() is not thread-safe). */
static const char *errno_text(int e, char *buf, size_t n)
{
    switch (e) {
    case EROFS: return "read-only file system";
    case ENOSPC: return "no space left on device";
    case EDQUOT: return "disk quota exceeded";
    case EACCES: return "permission denied";
    case EPERM: return "operation not permitted";
    case EIO: return "input/output error";
    case ENOENT: return "no such file or directory";
    case EMFILE: return "too many open files";
    case ENFILE: return "too many open files in system";
    default: snprintf(buf, n, "errno %d", e); return buf;
    }
}

/* The errno behind an i/o or open error. sqlite3_system_errno() is set on some
 * paths only (not for a failed COMMIT), so for an i/o error the files' own
 * last errno comes first: the WAL's (most writes), then the database file's
 * (checkpoints). Each is that file's latest failure, never reset. */
static int last_errno(sqlite3 *db, int rc)
{
    int e = 0;
    if (db == NULL)
        return 0;
    if ((rc & 0xff) == SQLITE_IOERR) {
        sqlite3_file *jf = NULL;
        if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &jf) == SQLITE_OK &&
            jf != NULL && jf->pMethods != NULL)
            jf->pMethods->xFileControl(jf, SQLITE_FCNTL_LAST_ERRNO, &e);
        if (e == 0)
            sqlite3_file_control(db, "main", SQLITE_FCNTL_LAST_ERRNO, &e);
    }
    return e != 0 ? e : sqlite3_system_errno(db);
}

/* The one translation of SQLite errors into DL_E* codes, with the message of
 * c's database (NULL: SQLite's text for rc). A fault of the database itself
 * (read-only, locked, full, i/o, cannot open) is also kept in c->fault. */
static int sql_fail(dl_store_res_t *res, conn_t *c, int rc)
{
    sqlite3 *db = c != NULL ? c->db : NULL;
    int eno = last_errno(db, rc); /* meaningful for i/o and open errors only */
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    char eb[32];
    const char *etxt = errno_text(eno, eb, sizeof(eb));
    int code;
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: {
        const char *ix = strstr(msg, "index '");
        if (ix != NULL)
            return set_err(res, DL_EDUPKEY, "duplicate key: unique index %s (sqlite: %s)",
                           ix + 6, msg);
        return set_err(res, DL_EDUPKEY, "duplicate key: _id (sqlite: %s)", msg);
    }
    case SQLITE_NOMEM:
        return set_err(res, DL_ENOMEM, "sqlite: %s", msg);
    case SQLITE_BUSY:
        if (c != NULL && c->busy_ms > 0)
            code = set_err(res, DL_EBUSY,
                           "database locked by another process for more than %d ms (sqlite: %s)",
                           c->busy_ms, msg);
        else
            code = set_err(res, DL_EBUSY, "database locked by another process (sqlite: %s)", msg);
        break;
    case SQLITE_LOCKED:
        code = set_err(res, DL_EBUSY, "database table locked (sqlite: %s)", msg);
        break;
    case SQLITE_READONLY:
        code = set_err(res, DL_EROFS, "database is read-only (sqlite: %s)", msg);
        break;
    case SQLITE_FULL:
        /* SQLite's message is the same words */
        if (strcmp(msg, "database or disk is full") == 0)
            code = set_err(res, DL_ENOSPC, "database or disk is full");
        else
            code = set_err(res, DL_ENOSPC, "database or disk is full (sqlite: %s)", msg);
        break;
    case SQLITE_CANTOPEN:
        code = set_err(res, DL_ECANTOPEN, "cannot open the database file (sqlite: %s: %s)", msg,
                       etxt);
        break;
    case SQLITE_IOERR:
        /* SQLite reports every failed write(2) but ENOSPC as an i/o error */
        if (eno == EROFS || eno == EACCES || eno == EPERM)
            code = set_err(res, DL_EROFS, "database is read-only (sqlite: %s: %s)", msg, etxt);
        else if (eno == ENOSPC || eno == EDQUOT)
            code = set_err(res, DL_ENOSPC, "database or disk is full (sqlite: %s: %s)", msg,
                           etxt);
        else if (eno != 0)
            code = set_err(res, DL_EIO, "database i/o error (sqlite: %s: %s)", msg, etxt);
        else
            code = set_err(res, DL_EIO, "database i/o error (sqlite: %s)", msg);
        break;
    default:
        return set_err(res, DL_EIO, "sqlite: %s", msg);
    }
    if (c != NULL)
        c->fault = code;
    return code;
}

/* A prepared statement for sql, from the cache; hand it back with stmt_put(). */
static sqlite3_stmt *stmt_get(conn_t *c, const char *sql, dl_store_res_t *res)
{
    uint32_t h = fnv1a(sql);
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
        sql_fail(res, c, rc);
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
        return st; /* uncached: stmt_put() finalizes it */
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

static void stmt_put(conn_t *c, sqlite3_stmt *st)
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
static int run_simple(conn_t *c, const char *sql, dl_store_res_t *res)
{
    sqlite3_stmt *st = stmt_get(c, sql, res);
    if (st == NULL)
        return res->status;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        sql_fail(res, c, rc);
    stmt_put(c, st);
    return res->status;
}

/* Opens c on path; err gets the message, and the DL_E* is returned. */
static int conn_open(conn_t *c, const char *path, int writer, int busy_ms, char *err,
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
        sql_fail(&r, c, rc);
        snprintf(err, errlen, "sqlite open %s: %s", path, r.err);
        sqlite3_close_v2(c->db);
        c->db = NULL;
        return r.status;
    }
    return 0;
}

static void conn_close(conn_t *c)
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
 * then never be reset). Should ROLLBACK fail too, c is closed; conn_ready()
 * reopens it before its next use. */
static void conn_settle(conn_t *c)
{
    if (c->db == NULL || sqlite3_get_autocommit(c->db))
        return;
    dl_store_res_t tmp;
    dl_store_res_init(&tmp);
    run_simple(c, "ROLLBACK", &tmp);
    if (sqlite3_get_autocommit(c->db))
        return;
    dl_log(DL_LOG_WARN, "sqlite %s: cannot leave a transaction (%s); reopening the connection",
           c->path, tmp.err);
    conn_close(c); /* keeps path, role and busy timeout for conn_ready() */
}

/* Reopens c when conn_settle() closed it (or an earlier reopen failed). */
static int conn_ready(conn_t *c, dl_store_res_t *res)
{
    if (c->db != NULL)
        return 0;
    char err[sizeof(res->err)];
    int rc = conn_open(c, c->path, c->writer, c->busy_ms, err, sizeof(err));
    if (rc == 0)
        return 0;
    c->fault = rc;
    return set_err(res, rc, "%s", err);
}

static conn_t *reader_acquire(sqlite_store_t *s)
{
    pthread_mutex_lock(&s->pmu);
    while (s->nfree == 0)
        pthread_cond_wait(&s->pcv, &s->pmu);
    conn_t *c = &s->readers[s->free_idx[--s->nfree]];
    pthread_mutex_unlock(&s->pmu);
    return c;
}

static void reader_release(sqlite_store_t *s, conn_t *c)
{
    pthread_mutex_lock(&s->pmu);
    s->free_idx[s->nfree++] = (int)(c - s->readers);
    pthread_cond_signal(&s->pcv);
    pthread_mutex_unlock(&s->pmu);
}

/* ------------------------------------------------------------------------ */
/* Write health                                                             */
/* ------------------------------------------------------------------------ */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Records the outcome of a write on the writer (wmu held): a commit that
 * changed rows clears the fault, a fault of the database sets it (keeping the
 * time of the first one in a row). A failure of the operation itself (bad
 * input, duplicate key) and a commit with nothing to write (it succeeds on a
 * full disk) say nothing about the database and change nothing. */
static void health_note(sqlite_store_t *s, const dl_store_res_t *res)
{
    health_t *h = &s->health;
    if (res->status != 0 && s->writer.fault == 0)
        return;
    if (res->status == 0 &&
        (s->writer.db == NULL || sqlite3_total_changes64(s->writer.db) == s->wtx_changes))
        return;
    pthread_mutex_lock(&h->mu);
    if (res->status == 0) {
        h->code = 0;
        h->busy_seen_ms = 0;
    } else {
        if (h->code == 0)
            h->since_ms = wall_ms();
        h->code = res->status;
        snprintf(h->err, sizeof(h->err), "%s", res->err);
    }
    pthread_mutex_unlock(&h->mu);
}

/* The probe found the write lock held: a fault once it has been seen held for
 * the whole busy timeout, as a write would have waited that long in vain. */
static void health_busy(sqlite_store_t *s, int waited_ms)
{
    health_t *h = &s->health;
    int64_t now = wall_ms();
    pthread_mutex_lock(&h->mu);
    if (h->busy_seen_ms == 0)
        h->busy_seen_ms = now - waited_ms;
    if (h->code == 0 && now - h->busy_seen_ms >= s->busy_ms) {
        h->code = DL_EBUSY;
        h->since_ms = h->busy_seen_ms;
        snprintf(h->err, sizeof(h->err), "database locked by another process for more than %d ms",
                 s->busy_ms);
    }
    pthread_mutex_unlock(&h->mu);
}

/* ------------------------------------------------------------------------ */
/* Collections and write transactions                                       */
/* ------------------------------------------------------------------------ */

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
static int ensure_coll(sqlite_store_t *s, const char *coll, dl_store_res_t *res)
{
    if (coll_known(s, coll))
        return 0;
    char sql[160];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS \"c_%s\" (id TEXT PRIMARY KEY, doc TEXT NOT NULL) "
             "WITHOUT ROWID", coll);
    pthread_mutex_lock(&s->wmu);
    s->writer.fault = 0;
    if (conn_ready(&s->writer, res) == 0) {
        int rc = sqlite3_exec(s->writer.db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            sql_fail(res, &s->writer, rc);
        conn_settle(&s->writer);
    }
    if (res->status != 0)
        health_note(s, res); /* an existing table may need no write: only a fault counts */
    pthread_mutex_unlock(&s->wmu);
    if (res->status != 0)
        return res->status;
    coll_remember(s, coll);
    return 0;
}

/* ensure_coll() for a read on reader c: a table that exists is only
 * remembered, so reading needs no write and never waits for the writer. */
static int ensure_coll_read(sqlite_store_t *s, conn_t *c, const char *coll, dl_store_res_t *res)
{
    if (coll_known(s, coll))
        return 0;
    char name[MAX_COLL_LEN + 8];
    snprintf(name, sizeof(name), "c_%s", coll);
    sqlite3_stmt *st =
        stmt_get(c, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", res);
    if (st == NULL)
        return res->status;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        sql_fail(res, c, rc);
    stmt_put(c, st);
    if (res->status != 0)
        return res->status;
    if (rc == SQLITE_DONE)
        return ensure_coll(s, coll, res);
    coll_remember(s, coll);
    return 0;
}

static int write_begin(sqlite_store_t *s, dl_store_res_t *res)
{
    pthread_mutex_lock(&s->wmu);
    s->writer.fault = 0;
    if (conn_ready(&s->writer, res) == 0)
        s->wtx_changes = sqlite3_total_changes64(s->writer.db);
    if (res->status != 0 || run_simple(&s->writer, "BEGIN IMMEDIATE", res) != 0) {
        conn_settle(&s->writer);
        health_note(s, res);
        pthread_mutex_unlock(&s->wmu);
        return res->status;
    }
    return 0;
}

/* Commits when res is ok, else rolls back; records the outcome; releases the
 * writer. */
static int write_end(sqlite_store_t *s, dl_store_res_t *res)
{
    if (res->status == 0)
        run_simple(&s->writer, "COMMIT", res);
    conn_settle(&s->writer);
    health_note(s, res);
    pthread_mutex_unlock(&s->wmu);
    return res->status;
}

/* ------------------------------------------------------------------------ */
/* Query compilation                                                        */
/* ------------------------------------------------------------------------ */

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

static void qc_init(qc_t *q, dl_doc_arena_t *ar, conn_t *c, const char *coll, dl_store_res_t *res)
{
    memset(q, 0, sizeof(*q));
    dl_buf_init(&q->w);
    q->ar = ar;
    q->c = c;
    q->coll = coll;
    q->res = res;
}

static void qc_free(qc_t *q)
{
    dl_buf_free(&q->w);
    dl_free(q->p);
}

static int is_id_path(const char *p, size_t n)
{
    return dl_doc_keq(p, n, "_id");
}

static int add_param(qc_t *q, const dl_doc_t *v)
{
    if (q->np == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        param_t *p = dl_realloc(q->p, (size_t)cap * sizeof(*p));
        if (p == NULL)
            return set_err(q->res, DL_ENOMEM, "out of memory");
        q->p = p;
        q->cap = cap;
    }
    param_t *p = &q->p[q->np];
    memset(p, 0, sizeof(*p));
    switch (v->type) {
    case DL_DOC_NUM:
        p->kind = v->isint ? PK_INT : PK_REAL;
        p->i = v->i;
        p->d = v->d;
        break;
    case DL_DOC_TRUE:
    case DL_DOC_FALSE:
        p->kind = PK_INT;
        p->i = v->type == DL_DOC_TRUE;
        break;
    case DL_DOC_STR:
        p->kind = PK_TEXT;
        p->s = v->s;
        p->len = v->len;
        break;
    default: {
        dl_buf_t b = DL_BUF_INIT;
        dl_doc_write(&b, v);
        char *s = b.oom ? NULL : dl_doc_strndup(q->ar, b.data ? b.data : "", b.len);
        p->kind = PK_TEXT;
        p->s = s;
        p->len = b.len;
        dl_buf_free(&b);
        if (s == NULL)
            return set_err(q->res, DL_ENOMEM, "out of memory");
    }
    }
    return ++q->np;
}

static int add_param_int(qc_t *q, int64_t i)
{
    dl_doc_t v;
    memset(&v, 0, sizeof(v));
    v.type = DL_DOC_NUM;
    v.isint = 1;
    v.i = i;
    return add_param(q, &v);
}

static int bind_params(sqlite3_stmt *st, const qc_t *q)
{
    for (int k = 0; k < q->np; k++) {
        const param_t *p = &q->p[k];
        int rc;
        if (p->kind == PK_INT)
            rc = sqlite3_bind_int64(st, k + 1, p->i);
        else if (p->kind == PK_REAL)
            rc = sqlite3_bind_double(st, k + 1, p->d);
        else
            rc = sqlite3_bind_text(st, k + 1, p->s, (int)p->len, SQLITE_STATIC);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* 1 when documents may hold an array at path, so equality must search
 * elements too; 0 when the field's array index says none does. */
static int may_have_arrays(qc_t *q, const char *path, size_t plen)
{
    for (int k = 0; k < q->nprobes; k++)
        if (q->probes[k].len == plen && memcmp(q->probes[k].path, path, plen) == 0)
            return q->probes[k].arr;
    int arr = 1;
    char name[MAX_COLL_LEN + MAX_PATH_LEN + 16];
    snprintf(name, sizeof(name), "ixa_%s_%.*s", q->coll, (int)plen, path);
    sqlite3_stmt *st =
        stmt_get(q->c, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1", q->res);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    stmt_put(q->c, st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(q->res, q->c, rc), -1;
    if (rc == SQLITE_ROW) {
        char sql[2 * MAX_PATH_LEN + 2 * MAX_COLL_LEN + 128];
        snprintf(sql, sizeof(sql),
                 "SELECT 1 FROM \"c_%s\" INDEXED BY \"%s\" WHERE json_type(doc, '$.%.*s') = "
                 "'array' LIMIT 1", q->coll, name, (int)plen, path);
        st = stmt_get(q->c, sql, q->res);
        if (st == NULL)
            return -1;
        rc = sqlite3_step(st);
        stmt_put(q->c, st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return sql_fail(q->res, q->c, rc), -1;
        arr = rc == SQLITE_ROW;
    }
    if (q->nprobes < (int)DL_ARRAY_SIZE(q->probes)) {
        q->probes[q->nprobes].path = path;
        q->probes[q->nprobes].len = plen;
        q->probes[q->nprobes].arr = arr;
        q->nprobes++;
    }
    return arr;
}

/* Appends "path op value" with MongoDB's typing; op is =, >, >=, <, <=. */
static int emit_cmp(qc_t *q, const char *path, size_t plen, const char *op, const dl_doc_t *v)
{
    dl_buf_t *w = &q->w;
    int pl = (int)plen;
    if (is_id_path(path, plen)) {
        if (v->type != DL_DOC_STR) {
            dl_buf_append_str(w, "0");
            return 0;
        }
        int n = add_param(q, v);
        if (n < 0)
            return n;
        dl_buf_appendf(w, "id %s ?%d", op, n);
        return 0;
    }
    int arr = may_have_arrays(q, path, plen);
    if (arr < 0)
        return q->res->status;
    if (v->type == DL_DOC_NULL) { /* equality only (the front) */
        dl_buf_appendf(w, "(json_extract(doc, '$.%.*s') IS NULL", pl, path);
        if (arr)
            dl_buf_appendf(w, " OR (json_type(doc, '$.%.*s') = 'array' AND EXISTS (SELECT 1 "
                           "FROM json_each(doc, '$.%.*s') WHERE type = 'null'))",
                           pl, path, pl, path);
        dl_buf_append_char(w, ')');
        return 0;
    }
    const char *guard;
    int js = 0;
    switch (v->type) {
    case DL_DOC_NUM: guard = "IN ('integer', 'real')"; break;
    case DL_DOC_STR: guard = "= 'text'"; break;
    case DL_DOC_TRUE:
    case DL_DOC_FALSE: guard = "IN ('true', 'false')"; break;
    case DL_DOC_OBJ: guard = "= 'object'"; js = 1; break;
    default: guard = "= 'array'"; js = 1; break;
    }
    int n = add_param(q, v);
    if (n < 0)
        return n;
    char val[32];
    snprintf(val, sizeof(val), js ? "json(?%d)" : "?%d", n);
    dl_buf_appendf(w, "((json_extract(doc, '$.%.*s') %s %s AND json_type(doc, '$.%.*s') %s)",
                   pl, path, op, val, pl, path, guard);
    if (arr)
        dl_buf_appendf(w, " OR (json_type(doc, '$.%.*s') = 'array' AND EXISTS (SELECT 1 FROM "
                       "json_each(doc, '$.%.*s') WHERE value %s %s AND type %s))",
                       pl, path, pl, path, op, val, guard);
    dl_buf_append_char(w, ')');
    return 0;
}

static int emit_in(qc_t *q, const char *path, size_t plen, const dl_doc_t *v)
{
    if (v->n == 0) {
        dl_buf_append_str(&q->w, "0");
        return 0;
    }
    dl_buf_append_char(&q->w, '(');
    for (size_t k = 0; k < v->n; k++) {
        if (k > 0)
            dl_buf_append_str(&q->w, " OR ");
        if (emit_cmp(q, path, plen, "=", v->items[k]) != 0)
            return q->res->status;
    }
    dl_buf_append_char(&q->w, ')');
    return 0;
}

static int truthy(const dl_doc_t *v)
{
    return v->type == DL_DOC_TRUE || (v->type == DL_DOC_NUM && v->d != 0);
}

static int compile_ops(qc_t *q, const char *path, size_t plen, const dl_doc_t *ops)
{
    static const struct {
        const char *name, *op;
    } cmps[] = {{"$eq", "="}, {"$gt", ">"}, {"$gte", ">="}, {"$lt", "<"}, {"$lte", "<="}};
    dl_buf_t *w = &q->w;
    dl_buf_append_char(w, '(');
    for (size_t k = 0; k < ops->n; k++) {
        const char *name = ops->keys[k];
        size_t nl = ops->klens[k];
        const dl_doc_t *v = ops->items[k];
        if (k > 0)
            dl_buf_append_str(w, " AND ");
        int done = 0;
        for (size_t c = 0; c < DL_ARRAY_SIZE(cmps) && !done; c++) {
            if (dl_doc_keq(name, nl, cmps[c].name)) {
                if (emit_cmp(q, path, plen, cmps[c].op, v) != 0)
                    return q->res->status;
                done = 1;
            }
        }
        if (done)
            continue;
        if (dl_doc_keq(name, nl, "$ne")) {
            dl_buf_append_str(w, "NOT coalesce(");
            if (emit_cmp(q, path, plen, "=", v) != 0)
                return q->res->status;
            dl_buf_append_str(w, ", 0)");
        } else if (dl_doc_keq(name, nl, "$in")) {
            if (emit_in(q, path, plen, v) != 0)
                return q->res->status;
        } else if (dl_doc_keq(name, nl, "$nin")) {
            dl_buf_append_str(w, "NOT coalesce(");
            if (emit_in(q, path, plen, v) != 0)
                return q->res->status;
            dl_buf_append_str(w, ", 0)");
        } else { /* $exists: the last the front lets through */
            if (is_id_path(path, plen))
                dl_buf_append_str(w, truthy(v) ? "1" : "0");
            else
                dl_buf_appendf(w, "json_type(doc, '$.%.*s') %s", (int)plen, path,
                               truthy(v) ? "IS NOT NULL" : "IS NULL");
        }
    }
    dl_buf_append_char(w, ')');
    return 0;
}

static int compile_query(qc_t *q, const dl_doc_t *v)
{
    dl_buf_t *w = &q->w;
    if (v->n == 0) {
        dl_buf_append_str(w, "1");
        return 0;
    }
    dl_buf_append_char(w, '(');
    for (size_t k = 0; k < v->n; k++) {
        const char *key = v->keys[k];
        size_t kl = v->klens[k];
        const dl_doc_t *val = v->items[k];
        if (k > 0)
            dl_buf_append_str(w, " AND ");
        if (kl > 0 && key[0] == '$') {
            const char *join = dl_doc_keq(key, kl, "$and") ? " AND " : " OR "; /* or $or */
            dl_buf_append_char(w, '(');
            for (size_t j = 0; j < val->n; j++) {
                if (j > 0)
                    dl_buf_append_str(w, join);
                if (compile_query(q, val->items[j]) != 0)
                    return q->res->status;
            }
            dl_buf_append_char(w, ')');
            continue;
        }
        int rc;
        if (val->type == DL_DOC_OBJ && val->n > 0 && val->klens[0] > 0 && val->keys[0][0] == '$')
            rc = compile_ops(q, key, kl, val);
        else
            rc = emit_cmp(q, key, kl, "=", val);
        if (rc != 0)
            return q->res->status;
    }
    dl_buf_append_char(w, ')');
    if (w->oom)
        return set_err(q->res, DL_ENOMEM, "out of memory");
    return 0;
}

/* The front checked every key (a path, 1 or -1, at most MAX_SORT_KEYS). */
static void add_sort(qopts_t *o, const char *f, size_t fl, const dl_doc_t *dir)
{
    o->sp[o->nsort] = f;
    o->sl[o->nsort] = fl;
    o->sdir[o->nsort] = (int)dir->i;
    o->nsort++;
}

/* [[field, 1|-1], ...] or {field: 1|-1}, as the front let it through. */
static void add_sorts(qopts_t *o, const dl_doc_t *v)
{
    for (size_t j = 0; j < v->n; j++) {
        if (v->type == DL_DOC_ARR)
            add_sort(o, v->items[j]->items[0]->s, v->items[j]->items[0]->len,
                     v->items[j]->items[1]);
        else
            add_sort(o, v->keys[j], v->klens[j], v->items[j]);
    }
}

static int parse_opts(dl_doc_arena_t *ar, const char *text, qopts_t *o, dl_store_res_t *res)
{
    memset(o, 0, sizeof(*o));
    o->proj_id = 1;
    dl_doc_t *v = doc_parse(ar, text, "{}", "opts", res);
    if (v == NULL)
        return res->status;
    for (size_t k = 0; k < v->n; k++) {
        const char *key = v->keys[k];
        size_t kl = v->klens[k];
        const dl_doc_t *val = v->items[k];
        if (dl_doc_keq(key, kl, "sort")) {
            if (val->type != DL_DOC_NULL)
                add_sorts(o, val);
        } else if (dl_doc_keq(key, kl, "skip")) {
            o->skip = val->i;
        } else if (dl_doc_keq(key, kl, "limit")) {
            o->limit = val->i;
        } else if (dl_doc_keq(key, kl, "projection") && val->type == DL_DOC_OBJ) {
            /* inclusion only, but for _id (the front) */
            for (size_t j = 0; j < val->n; j++) {
                const char *f = val->keys[j];
                size_t fl = val->klens[j];
                if (is_id_path(f, fl)) {
                    o->proj_id = truthy(val->items[j]);
                } else {
                    o->pp[o->nproj] = f;
                    o->pl[o->nproj] = fl;
                    o->nproj++;
                }
            }
            o->has_proj = o->nproj > 0 || !o->proj_id;
        }
    }
    return 0;
}

static void append_order(dl_buf_t *b, const qopts_t *o)
{
    int has_id = 0;
    dl_buf_append_str(b, " ORDER BY ");
    for (int k = 0; k < o->nsort; k++) {
        if (k > 0)
            dl_buf_append_str(b, ", ");
        if (is_id_path(o->sp[k], o->sl[k])) {
            dl_buf_append_str(b, "id");
            has_id = 1;
        } else {
            dl_buf_appendf(b, "json_extract(doc, '$.%.*s')", (int)o->sl[k], o->sp[k]);
        }
        if (o->sdir[k] < 0)
            dl_buf_append_str(b, " DESC");
    }
    if (!has_id)
        dl_buf_append_str(b, ", id");
}

/* Builds "<head> FROM c_<coll> WHERE <query> [ORDER BY] [LIMIT]" into sql. */
static int build_sql(qc_t *q, dl_buf_t *sql, const char *head, const dl_doc_t *query,
                     const qopts_t *o, int64_t limit)
{
    if (compile_query(q, query) != 0)
        return q->res->status;
    dl_buf_appendf(sql, "%s FROM \"c_%s\" WHERE ", head, q->coll);
    dl_buf_append(sql, q->w.data, q->w.len);
    if (o != NULL && o->nsort > 0)
        append_order(sql, o); /* unsorted: the planner picks the cheapest order */
    if (limit != 0 || (o != NULL && o->skip > 0)) {
        int n = add_param_int(q, limit > 0 ? limit : -1);
        int m = add_param_int(q, o != NULL ? o->skip : 0);
        if (n < 0 || m < 0)
            return q->res->status;
        dl_buf_appendf(sql, " LIMIT ?%d OFFSET ?%d", n, m);
    }
    dl_buf_append_char(sql, '\0');
    if (sql->oom)
        return set_err(q->res, DL_ENOMEM, "out of memory");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Projection                                                               */
/* ------------------------------------------------------------------------ */

static void proj_obj(dl_buf_t *b, const dl_doc_t *o, const char *const *ps, const size_t *pl, int np,
                     int top, int keep_id)
{
    int first = 1;
    dl_buf_append_char(b, '{');
    for (size_t k = 0; k < o->n; k++) {
        const char *key = o->keys[k];
        size_t kl = o->klens[k];
        const char *sub[MAX_PROJ_FIELDS];
        size_t subl[MAX_PROJ_FIELDS];
        int whole = 0, nsub = 0;
        if (top && is_id_path(key, kl)) {
            whole = keep_id;
        } else if (top && np == 0) {
            whole = 1; /* {"_id": 0} alone: everything else */
        } else {
            for (int j = 0; j < np; j++) {
                if (pl[j] == kl && memcmp(ps[j], key, kl) == 0) {
                    whole = 1;
                } else if (pl[j] > kl && ps[j][kl] == '.' && memcmp(ps[j], key, kl) == 0) {
                    sub[nsub] = ps[j] + kl + 1;
                    subl[nsub] = pl[j] - kl - 1;
                    nsub++;
                }
            }
        }
        if (!whole && (nsub == 0 || o->items[k]->type != DL_DOC_OBJ))
            continue;
        if (!first)
            dl_buf_append_char(b, ',');
        first = 0;
        dl_json_put_string(b, key, kl);
        dl_buf_append_char(b, ':');
        if (whole)
            dl_doc_write(b, o->items[k]);
        else
            proj_obj(b, o->items[k], sub, subl, nsub, 0, 0);
    }
    dl_buf_append_char(b, '}');
}

static int append_doc(dl_buf_t *out, const char *doc, size_t len, const qopts_t *o,
                      dl_store_res_t *res)
{
    if (o == NULL || !o->has_proj) {
        dl_buf_append(out, doc, len);
        return 0;
    }
    dl_doc_arena_t ar = {NULL};
    dl_doc_t *v = dl_doc_parse_stored(&ar, doc, len);
    if (v == NULL || v->type != DL_DOC_OBJ) {
        dl_doc_arena_free(&ar);
        return set_err(res, DL_EIO, "stored document is not a JSON object");
    }
    proj_obj(out, v, o->pp, o->pl, o->nproj, 1, o->proj_id);
    dl_doc_arena_free(&ar);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Updates                                                                  */
/* ------------------------------------------------------------------------ */

static dl_doc_t *jv_copy(dl_doc_arena_t *a, const dl_doc_t *v)
{
    dl_doc_t *c = dl_doc_new(a, v->type);
    if (c == NULL)
        return NULL;
    c->isint = v->isint;
    c->s = v->s;
    c->len = v->len;
    c->i = v->i;
    c->d = v->d;
    for (size_t k = 0; k < v->n; k++) {
        dl_doc_t *item = jv_copy(a, v->items[k]);
        if (item == NULL ||
            dl_doc_push(a, c, v->keys ? v->keys[k] : NULL, v->klens ? v->klens[k] : 0, item) != 0)
            return NULL;
    }
    return c;
}

static int obj_set(dl_doc_arena_t *a, dl_doc_t *o, const char *k, size_t kl, dl_doc_t *val)
{
    size_t idx;
    if (dl_doc_get(o, k, kl, &idx) != NULL) {
        o->items[idx] = val;
        return 0;
    }
    return dl_doc_push(a, o, k, kl, val);
}

/* The object holding the last segment of path (created when create is set),
 * or NULL when an intermediate is missing and create is not. */
static int resolve(dl_doc_arena_t *a, dl_doc_t *doc, const char *path, size_t plen, int create,
                   dl_doc_t **parent, const char **key, size_t *klen, dl_store_res_t *res)
{
    dl_doc_t *cur = doc;
    const char *p = path, *end = path + plen;
    *parent = NULL;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (dot == NULL) {
            *parent = cur;
            *key = p;
            *klen = (size_t)(end - p);
            return 0;
        }
        dl_doc_t *child = dl_doc_get(cur, p, (size_t)(dot - p), NULL);
        if (child == NULL) {
            if (!create)
                return 0;
            child = dl_doc_new(a, DL_DOC_OBJ);
            if (child == NULL || dl_doc_push(a, cur, p, (size_t)(dot - p), child) != 0)
                return set_err(res, DL_ENOMEM, "out of memory");
        } else if (child->type != DL_DOC_OBJ) {
            if (!create)
                return 0;
            return set_err(res, DL_EINVAL, "cannot create field %.*s: %.*s is not an object",
                           (int)plen, path, (int)(dot - path), path);
        }
        cur = child;
        p = dot + 1;
    }
}

static dl_doc_t *num_add(dl_doc_arena_t *a, const dl_doc_t *x, const dl_doc_t *y)
{
    dl_doc_t *r = dl_doc_new(a, DL_DOC_NUM);
    char txt[40];
    int64_t sum;
    if (r == NULL)
        return NULL;
    if (x->isint && y->isint && !__builtin_add_overflow(x->i, y->i, &sum)) {
        r->isint = 1;
        r->i = sum;
        r->d = (double)sum;
        snprintf(txt, sizeof(txt), "%lld", (long long)sum);
    } else {
        double d = x->d + y->d;
        r->d = d;
        if (d != d || d - d != 0)
            return NULL;
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(txt, sizeof(txt), "%.*g", prec, d);
            if (strtod(txt, NULL) == d)
                break;
        }
        if (strpbrk(txt, ".eE") == NULL)
            strcat(txt, ".0");
    }
    r->s = dl_doc_strndup(a, txt, strlen(txt));
    r->len = strlen(txt);
    return r->s ? r : NULL;
}

static int upd_apply(dl_doc_arena_t *a, dl_doc_t *doc, const dl_doc_t *u, dl_store_res_t *res)
{
    for (size_t k = 0; k < u->n; k++) {
        const char *op = u->keys[k];
        size_t ol = u->klens[k];
        const dl_doc_t *fields = u->items[k];
        int unset = dl_doc_keq(op, ol, "$unset");
        for (size_t j = 0; j < fields->n; j++) {
            const char *f = fields->keys[j];
            size_t fl = fields->klens[j];
            const dl_doc_t *val = fields->items[j];
            dl_doc_t *parent;
            const char *key;
            size_t kl, idx;
            if (resolve(a, doc, f, fl, !unset, &parent, &key, &kl, res) != 0)
                return res->status;
            if (parent == NULL)
                continue;
            dl_doc_t *cur = dl_doc_get(parent, key, kl, &idx);
            dl_doc_t *nv = NULL;
            if (unset) {
                if (cur != NULL) {
                    memmove(parent->items + idx, parent->items + idx + 1,
                            (parent->n - idx - 1) * sizeof(*parent->items));
                    memmove(parent->keys + idx, parent->keys + idx + 1,
                            (parent->n - idx - 1) * sizeof(*parent->keys));
                    memmove(parent->klens + idx, parent->klens + idx + 1,
                            (parent->n - idx - 1) * sizeof(*parent->klens));
                    parent->n--;
                }
                continue;
            }
            if (dl_doc_keq(op, ol, "$set")) {
                nv = jv_copy(a, val);
            } else if (dl_doc_keq(op, ol, "$inc")) {
                if (cur != NULL && cur->type != DL_DOC_NUM)
                    return set_err(res, DL_EINVAL, "$inc on %.*s: the field is not a number",
                                   (int)fl, f);
                nv = cur != NULL ? num_add(a, cur, val) : jv_copy(a, val);
                if (nv == NULL && cur != NULL)
                    return set_err(res, DL_EINVAL, "$inc on %.*s: result out of range",
                                   (int)fl, f);
            } else {
                if (cur != NULL && cur->type != DL_DOC_ARR)
                    return set_err(res, DL_EINVAL, "$push on %.*s: the field is not an array",
                                   (int)fl, f);
                nv = cur != NULL ? cur : dl_doc_new(a, DL_DOC_ARR);
                dl_doc_t *item = nv != NULL ? jv_copy(a, val) : NULL;
                if (item == NULL || dl_doc_push(a, nv, NULL, 0, item) != 0)
                    nv = NULL;
            }
            if (nv == NULL || obj_set(a, parent, key, kl, nv) != 0)
                return set_err(res, DL_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

static int fail_oom_or(dl_store_res_t *res, const dl_buf_t *b)
{
    if (b->oom && res->status == 0)
        set_err(res, DL_ENOMEM, "out of memory");
    return res->status;
}

/* Runs a SELECT or EXPLAIN on a reader inside one read transaction. mode 0:
 * find (doc rows), 1: count, 2: explain. */
static int read_op(dl_store_t *st_, const char *coll, const char *query, const char *opts,
                   int mode, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    dl_doc_arena_t ar = {NULL};
    qopts_t o;
    dl_doc_t *qv = doc_parse(&ar, query, "{}", "query", res);
    if (qv == NULL || (mode != 1 && parse_opts(&ar, opts, &o, res) != 0)) {
        dl_doc_arena_free(&ar);
        return res->status;
    }
    conn_t *c = reader_acquire(s);
    qc_t q;
    dl_buf_t sql = DL_BUF_INIT;
    qc_init(&q, &ar, c, coll, res);
    if (conn_ready(c, res) != 0 || ensure_coll_read(s, c, coll, res) != 0 ||
        run_simple(c, "BEGIN", res) != 0)
        goto out;
    const char *head = mode == 0 ? "SELECT doc" : mode == 1 ? "SELECT count(*)"
                                                            : "EXPLAIN QUERY PLAN SELECT doc";
    if (build_sql(&q, &sql, head, qv, mode == 1 ? NULL : &o, mode == 1 ? 0 : o.limit) != 0)
        goto rollback;
    sqlite3_stmt *st = stmt_get(c, sql.data, res);
    if (st == NULL)
        goto rollback;
    int rc = bind_params(st, &q);
    int n = 0;
    if (mode != 1)
        dl_buf_append_char(&res->json, '[');
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        if (mode == 1) {
            res->count = sqlite3_column_int64(st, 0);
            continue;
        }
        if (n++ > 0)
            dl_buf_append_char(&res->json, ',');
        int col = mode == 0 ? 0 : 3;
        const char *txt = (const char *)sqlite3_column_text(st, col);
        size_t len = (size_t)sqlite3_column_bytes(st, col);
        if (mode == 2)
            dl_json_put_string(&res->json, txt ? txt : "", txt ? len : 0);
        else if (append_doc(&res->json, txt ? txt : "null", txt ? len : 4, &o, res) != 0)
            break;
    }
    if (res->status == 0 && rc != SQLITE_DONE)
        sql_fail(res, c, rc);
    stmt_put(c, st);
    if (mode != 1)
        dl_buf_append_char(&res->json, ']');
    res->count = mode == 1 ? res->count : n;
    fail_oom_or(res, &res->json);
rollback:
    if (res->status == 0)
        run_simple(c, "COMMIT", res);
out:
    conn_settle(c);
    reader_release(s, c);
    qc_free(&q);
    dl_buf_free(&sql);
    dl_doc_arena_free(&ar);
    if (res->status != 0)
        dl_buf_reset(&res->json);
    return res->status;
}

static int s_find(dl_store_t *s, const char *coll, const char *query, const char *opts,
                  dl_store_res_t *res)
{
    return read_op(s, coll, query, opts, 0, res);
}

static int s_count(dl_store_t *s, const char *coll, const char *query, dl_store_res_t *res)
{
    return read_op(s, coll, query, NULL, 1, res);
}

static int s_explain(dl_store_t *s, const char *coll, const char *query, const char *opts,
                     dl_store_res_t *res)
{
    return read_op(s, coll, query, opts, 2, res);
}

static int s_insert(dl_store_t *st_, const char *coll, const char *docs, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    if (ensure_coll(s, coll, res) != 0)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    dl_buf_t all = DL_BUF_INIT;
    size_t *offs = NULL;
    dl_doc_t *arr = doc_parse(&ar, docs, NULL, "insert", res);
    if (arr == NULL)
        goto out;
    /* per document: id offset, id length, doc offset, doc length */
    offs = dl_malloc((arr->n + 1) * 4 * sizeof(*offs));
    if (offs == NULL) {
        set_err(res, DL_ENOMEM, "out of memory");
        goto out;
    }
    dl_buf_append_char(&res->json, '[');
    for (size_t k = 0; k < arr->n; k++) {
        const dl_doc_t *d = arr->items[k];
        char idbuf[25];
        const char *id;
        size_t idlen;
        const dl_doc_t *idv = dl_doc_get(d, "_id", 3, NULL); /* a string (the front) */
        if (idv != NULL) {
            id = idv->s;
            idlen = idv->len;
        } else {
            dl_store_gen_id(idbuf);
            id = idbuf;
            idlen = 24;
        }
        offs[4 * k] = all.len;
        offs[4 * k + 1] = idlen;
        dl_buf_append(&all, id, idlen);
        offs[4 * k + 2] = all.len;
        dl_buf_append_str(&all, "{\"_id\":");
        dl_json_put_string(&all, id, idlen);
        for (size_t j = 0; j < d->n; j++) {
            if (is_id_path(d->keys[j], d->klens[j]))
                continue;
            dl_buf_append_char(&all, ',');
            dl_json_put_string(&all, d->keys[j], d->klens[j]);
            dl_buf_append_char(&all, ':');
            dl_doc_write(&all, d->items[j]);
        }
        dl_buf_append_char(&all, '}');
        offs[4 * k + 3] = all.len - offs[4 * k + 2];
        if (k > 0)
            dl_buf_append_char(&res->json, ',');
        dl_json_put_string(&res->json, id, idlen);
    }
    dl_buf_append_char(&res->json, ']');
    if (fail_oom_or(res, &all) != 0 || fail_oom_or(res, &res->json) != 0)
        goto out;
    if (write_begin(s, res) != 0)
        goto out;
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO \"c_%s\" (id, doc) VALUES (?1, ?2)", coll);
    sqlite3_stmt *st = stmt_get(&s->writer, sql, res);
    for (size_t k = 0; st != NULL && k < arr->n; k++) {
        sqlite3_bind_text(st, 1, all.data + offs[4 * k], (int)offs[4 * k + 1], SQLITE_STATIC);
        sqlite3_bind_text(st, 2, all.data + offs[4 * k + 2], (int)offs[4 * k + 3],
                          SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            sql_fail(res, &s->writer, rc);
            if (res->status == DL_EDUPKEY && strstr(res->err, "_id") != NULL)
                set_err(res, DL_EDUPKEY, "duplicate key: _id \"%.*s\"",
                        (int)DL_MIN(offs[4 * k + 1], 64), all.data + offs[4 * k]);
            break;
        }
    }
    stmt_put(&s->writer, st);
    write_end(s, res);
    if (res->status == 0)
        res->count = (int64_t)arr->n;
out:
    dl_free(offs);
    dl_buf_free(&all);
    dl_doc_arena_free(&ar);
    if (res->status != 0)
        dl_buf_reset(&res->json);
    return res->status;
}

/* update, update many and find_one_and_update: selects on the writer in the
 * write transaction, applies the update in C and writes changed documents. */
static int write_update(dl_store_t *st_, const char *coll, const char *query,
                        const char *update, const char *opts, int multi, int fau,
                        dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    if (ensure_coll(s, coll, res) != 0)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    qopts_t o;
    dl_buf_t sql = DL_BUF_INIT, out = DL_BUF_INIT;
    size_t *offs = NULL, noffs = 0, capoffs = 0;
    qc_t q;
    qc_init(&q, &ar, &s->writer, coll, res);
    dl_doc_t *qv = doc_parse(&ar, query, "{}", "query", res);
    dl_doc_t *uv = qv ? doc_parse(&ar, update, NULL, "update", res) : NULL;
    if (uv == NULL || parse_opts(&ar, fau ? opts : NULL, &o, res))
        goto out;
    if (write_begin(s, res) != 0)
        goto out;
    if (build_sql(&q, &sql, "SELECT id, doc", qv, fau ? &o : NULL, multi ? 0 : 1) != 0)
        goto end;
    sqlite3_stmt *st = stmt_get(&s->writer, sql.data, res);
    if (st == NULL)
        goto end;
    int rc = bind_params(st, &q);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        size_t idlen = (size_t)sqlite3_column_bytes(st, 0);
        const char *doc = (const char *)sqlite3_column_text(st, 1);
        size_t dlen = (size_t)sqlite3_column_bytes(st, 1);
        dl_doc_arena_t da = {NULL};
        dl_doc_t *dv = dl_doc_parse_stored(&da, doc ? doc : "", doc ? dlen : 0);
        res->matched++;
        if (dv == NULL || dv->type != DL_DOC_OBJ) {
            dl_doc_arena_free(&da);
            set_err(res, DL_EIO, "stored document %.*s is not a JSON object",
                    (int)DL_MIN(idlen, 64), id ? id : "");
            break;
        }
        if (upd_apply(&da, dv, uv, res) != 0) {
            dl_doc_arena_free(&da);
            break;
        }
        if (noffs + 4 > capoffs) {
            size_t cap = capoffs ? capoffs * 2 : 64;
            size_t *n = dl_realloc(offs, cap * sizeof(*offs));
            if (n == NULL) {
                dl_doc_arena_free(&da);
                set_err(res, DL_ENOMEM, "out of memory");
                break;
            }
            offs = n;
            capoffs = cap;
        }
        offs[noffs++] = out.len;
        offs[noffs++] = idlen;
        dl_buf_append(&out, id, idlen);
        offs[noffs++] = out.len;
        dl_doc_write(&out, dv);
        offs[noffs] = out.len - offs[noffs - 1];
        noffs++;
        dl_doc_arena_free(&da);
        if (out.oom)
            break;
        /* unchanged documents are not written */
        if (offs[noffs - 1] == dlen && memcmp(out.data + offs[noffs - 2], doc, dlen) == 0)
            offs[noffs - 4] = (size_t)-1;
    }
    if (res->status == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
        sql_fail(res, &s->writer, rc);
    stmt_put(&s->writer, st);
    if (fail_oom_or(res, &out) != 0)
        goto end;
    char usql[128];
    snprintf(usql, sizeof(usql), "UPDATE \"c_%s\" SET doc = ?2 WHERE id = ?1", coll);
    st = stmt_get(&s->writer, usql, res);
    for (size_t k = 0; st != NULL && k < noffs; k += 4) {
        if (offs[k] == (size_t)-1)
            continue;
        size_t idoff = offs[k + 2] - offs[k + 1];
        sqlite3_bind_text(st, 1, out.data + idoff, (int)offs[k + 1], SQLITE_STATIC);
        sqlite3_bind_text(st, 2, out.data + offs[k + 2], (int)offs[k + 3], SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            sql_fail(res, &s->writer, rc);
            break;
        }
        res->count++;
    }
    stmt_put(&s->writer, st);
    if (res->status == 0 && fau) {
        if (noffs == 0)
            dl_buf_append_str(&res->json, "null");
        else
            append_doc(&res->json, out.data + offs[2], offs[3], &o, res);
        fail_oom_or(res, &res->json);
    }
end:
    write_end(s, res);
out:
    qc_free(&q);
    dl_buf_free(&sql);
    dl_buf_free(&out);
    dl_free(offs);
    dl_doc_arena_free(&ar);
    if (res->status != 0) {
        dl_buf_reset(&res->json);
        res->count = 0;
        res->matched = 0;
    }
    return res->status;
}

static int s_update(dl_store_t *s, const char *coll, const char *query, const char *update,
                    int multi, dl_store_res_t *res)
{
    return write_update(s, coll, query, update, NULL, multi, 0, res);
}

static int s_find_one_and_update(dl_store_t *s, const char *coll, const char *query,
                                 const char *update, const char *opts, dl_store_res_t *res)
{
    return write_update(s, coll, query, update, opts, 0, 1, res);
}

static int s_remove(dl_store_t *st_, const char *coll, const char *query, int multi,
                    dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    if (ensure_coll(s, coll, res) != 0)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    dl_buf_t sql = DL_BUF_INIT;
    qc_t q;
    qc_init(&q, &ar, &s->writer, coll, res);
    dl_doc_t *qv = doc_parse(&ar, query, "{}", "query", res);
    if (qv == NULL || write_begin(s, res) != 0)
        goto out;
    if (compile_query(&q, qv) != 0)
        goto end;
    if (multi)
        dl_buf_appendf(&sql, "DELETE FROM \"c_%s\" WHERE ", coll);
    else
        dl_buf_appendf(&sql, "DELETE FROM \"c_%s\" WHERE id = (SELECT id FROM \"c_%s\" WHERE ",
                       coll, coll);
    dl_buf_append(&sql, q.w.data, q.w.len);
    dl_buf_append_str(&sql, multi ? "" : " LIMIT 1)");
    dl_buf_append_char(&sql, '\0');
    if (fail_oom_or(res, &sql) != 0)
        goto end;
    sqlite3_stmt *st = stmt_get(&s->writer, sql.data, res);
    if (st == NULL)
        goto end;
    int rc = bind_params(st, &q);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        sql_fail(res, &s->writer, rc);
    else
        res->count = sqlite3_changes64(s->writer.db);
    stmt_put(&s->writer, st);
end:
    write_end(s, res);
out:
    qc_free(&q);
    dl_buf_free(&sql);
    dl_doc_arena_free(&ar);
    if (res->status != 0)
        res->count = 0;
    return res->status;
}

static int s_create_index(dl_store_t *st_, const char *coll, const char *keys, int unique,
                          dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    if (ensure_coll(s, coll, res) != 0)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    dl_buf_t name = DL_BUF_INIT, cols = DL_BUF_INIT, sql = DL_BUF_INIT;
    qopts_t o; /* the keys parse as a sort */
    memset(&o, 0, sizeof(o));
    dl_doc_t *kv = doc_parse(&ar, keys, NULL, "index keys", res);
    if (kv == NULL)
        goto out;
    add_sorts(&o, kv); /* a sort the front checked, with at least one key */
    dl_buf_appendf(&name, "ix_%s", coll);
    for (int k = 0; k < o.nsort; k++) {
        dl_buf_appendf(&name, "_%.*s_%d", (int)o.sl[k], o.sp[k], o.sdir[k]);
        if (k > 0)
            dl_buf_append_str(&cols, ", ");
        if (is_id_path(o.sp[k], o.sl[k]))
            dl_buf_append_str(&cols, "id");
        else
            dl_buf_appendf(&cols, "json_extract(doc, '$.%.*s')", (int)o.sl[k], o.sp[k]);
        if (o.sdir[k] < 0)
            dl_buf_append_str(&cols, " DESC");
    }
    dl_buf_appendf(&sql, "CREATE %sINDEX IF NOT EXISTS \"%.*s\" ON \"c_%s\" (%.*s);",
                   unique ? "UNIQUE " : "", (int)name.len, name.data, coll, (int)cols.len,
                   cols.data);
    for (int k = 0; k < o.nsort; k++) {
        if (is_id_path(o.sp[k], o.sl[k]))
            continue;
        dl_buf_appendf(&sql, " CREATE INDEX IF NOT EXISTS \"ixa_%s_%.*s\" ON \"c_%s\" (id) "
                       "WHERE json_type(doc, '$.%.*s') = 'array';", coll, (int)o.sl[k],
                       o.sp[k], coll, (int)o.sl[k], o.sp[k]);
    }
    dl_buf_append_char(&sql, '\0');
    if (fail_oom_or(res, &sql) != 0 || fail_oom_or(res, &name) != 0 ||
        fail_oom_or(res, &cols) != 0)
        goto out;
    if (write_begin(s, res) != 0)
        goto out;
    int rc = sqlite3_exec(s->writer.db, sql.data, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        sql_fail(res, &s->writer, rc);
    write_end(s, res);
    if (res->status == 0) {
        dl_buf_append_char(&res->json, '"');
        dl_buf_append(&res->json, name.data, name.len);
        dl_buf_append_char(&res->json, '"');
    }
out:
    dl_buf_free(&name);
    dl_buf_free(&cols);
    dl_buf_free(&sql);
    dl_doc_arena_free(&ar);
    return res->status;
}

/* The health probe: a one-row write committed on the writer, waiting at most
 * PROBE_BUSY_MS for the lock, so a read-only, locked or full database shows
 * (and its recovery too) without traffic. Skipped while a write runs (its own
 * outcome will tell) and when the last probe is less than PROBE_INTERVAL_MS old. */
static void write_probe(sqlite_store_t *s)
{
    uint64_t now = mono_ns();
    pthread_mutex_lock(&s->health.mu);
    int due = s->health.probe_ns == 0 ||
              now - s->health.probe_ns >= (uint64_t)PROBE_INTERVAL_MS * 1000000u;
    if (due)
        s->health.probe_ns = now;
    pthread_mutex_unlock(&s->health.mu);
    if (!due || pthread_mutex_trylock(&s->wmu) != 0)
        return;
    conn_t *w = &s->writer;
    dl_store_res_t r;
    dl_store_res_init(&r);
    int wait_ms = DL_MIN(PROBE_BUSY_MS, s->busy_ms);
    w->fault = 0;
    if (conn_ready(w, &r) == 0) {
        s->wtx_changes = sqlite3_total_changes64(w->db);
        sqlite3_busy_timeout(w->db, wait_ms);
        w->busy_ms = wait_ms;
        if (run_simple(w, "BEGIN IMMEDIATE", &r) == 0 &&
            run_simple(w, "CREATE TABLE IF NOT EXISTS _devloop_health (id INTEGER PRIMARY KEY, "
                          "at INTEGER NOT NULL)", &r) == 0) {
            sqlite3_stmt *st =
                stmt_get(w, "INSERT OR REPLACE INTO _devloop_health (id, at) VALUES (1, ?1)", &r);
            if (st != NULL) {
                sqlite3_bind_int64(st, 1, wall_ms());
                int rc = sqlite3_step(st);
                if (rc != SQLITE_DONE)
                    sql_fail(&r, w, rc);
                stmt_put(w, st);
            }
            if (r.status == 0)
                run_simple(w, "COMMIT", &r);
        }
        conn_settle(w);
        if (w->db != NULL)
            sqlite3_busy_timeout(w->db, s->busy_ms);
        w->busy_ms = s->busy_ms;
    }
    if (r.status == DL_EBUSY && w->fault == DL_EBUSY)
        health_busy(s, wait_ms);
    else
        health_note(s, &r);
    pthread_mutex_unlock(&s->wmu);
    dl_store_res_free(&r);
}

static void append_iso(dl_buf_t *b, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char out[40];
    gmtime_r(&t, &tm);
    size_t n = strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, sizeof(out) - n, ".%03dZ", (int)(ms % 1000));
    dl_buf_append_char(b, '"');
    dl_buf_append_str(b, out);
    dl_buf_append_char(b, '"');
}

static int s_ping(dl_store_t *st_, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    res_begin(res);
    conn_t *c = reader_acquire(s);
    /* reads the schema page: the file itself, not only the connection, answers */
    if (conn_ready(c, res) == 0)
        run_simple(c, "SELECT count(*) FROM sqlite_master", res);
    conn_settle(c);
    reader_release(s, c);
    if (res->status != 0)
        return res->status;
    write_probe(s);
    health_t *h = &s->health;
    dl_buf_append_str(&res->json, "{\"ok\":1");
    pthread_mutex_lock(&h->mu);
    if (h->code != 0) {
        dl_buf_appendf(&res->json, ",\"write\":{\"ok\":false,\"code\":\"%s\",\"error\":",
                       dl_err_name(h->code));
        dl_json_put_string(&res->json, h->err, strlen(h->err));
        dl_buf_append_str(&res->json, ",\"since\":");
        append_iso(&res->json, h->since_ms);
        dl_buf_append_char(&res->json, '}');
    }
    pthread_mutex_unlock(&h->mu);
    dl_buf_append_char(&res->json, '}');
    return fail_oom_or(res, &res->json);
}

static void s_close(dl_store_t *st_)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    if (s == NULL)
        return;
    for (int k = 0; k < s->nreaders; k++)
        conn_close(&s->readers[k]);
    conn_close(&s->writer);
    for (int k = 0; k < s->ncolls; k++)
        dl_free(s->colls[k]);
    dl_free(s->colls);
    dl_free(s->readers);
    dl_free(s->free_idx);
    dl_free(s->path);
    pthread_mutex_destroy(&s->health.mu);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->pmu);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->pcv);
    dl_free(s);
}

static const dl_store_ops_t sqlite_ops = {
    "sqlite",
    s_find,
    s_count,
    s_insert,
    s_update,
    s_find_one_and_update,
    s_remove,
    s_create_index,
    s_explain,
    s_ping,
    NULL, /* file_put: no file storage */
    NULL, /* file_get */
    NULL, /* file_remove */
    s_close,
};

#ifdef DL_UNIT_TEST
/* The writer's connection, for tests that put it in a fault (PRAGMA query_only,
 * max_page_count) the way a read-only or full database would. */
sqlite3 *dl_sqlite_store_writer(dl_store_t *st_)
{
    return ((sqlite_store_t *)st_)->writer.db;
}
#endif

int dl_sqlite_busy_timeout_env(int *out, char *err, size_t errlen)
{
    uint64_t ms;
    int rc = dl_env_value("DEVLOOP_DB_BUSY_TIMEOUT_MS", DL_ENV_MS, BUSY_MS_DEFAULT, 0, BUSY_MS_MAX,
                          &ms, err, errlen);
    *out = (int)ms;
    return rc;
}

/* mkdir -p of the folder holding path. */
static int make_parent_dirs(const char *path, char *err, size_t errlen)
{
    char *p = dl_strdup(path);
    if (p == NULL)
        return DL_ENOMEM;
    for (char *q = p + 1; *q != '\0'; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "sqlite open %s: mkdir %s: %s", path, p, strerror(errno));
            dl_free(p);
            return -errno;
        }
        *q = '/';
    }
    dl_free(p);
    return 0;
}

dl_store_t *dl_store_open_sqlite(const char *path, int readers, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "sqlite open: empty path");
        return NULL;
    }
    if (readers <= 0)
        readers = 4;
    if (readers > MAX_READERS)
        readers = MAX_READERS;
    int busy_ms;
    if (dl_sqlite_busy_timeout_env(&busy_ms, err, errlen) != 0)
        return NULL;
    if (make_parent_dirs(path, err, errlen) != 0)
        return NULL;
    sqlite_store_t *s = dl_calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "sqlite open: out of memory");
        return NULL;
    }
    s->base.ops = &sqlite_ops;
    s->busy_ms = busy_ms;
    pthread_mutex_init(&s->health.mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->pmu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->pcv, NULL);
    s->path = dl_strdup(path);
    s->readers = dl_calloc((size_t)readers, sizeof(*s->readers));
    s->free_idx = dl_calloc((size_t)readers, sizeof(*s->free_idx));
    if (s->path == NULL || s->readers == NULL || s->free_idx == NULL) {
        snprintf(err, errlen, "sqlite open: out of memory");
        s_close(&s->base);
        return NULL;
    }
    if (conn_open(&s->writer, s->path, 1, busy_ms, err, errlen) != 0) {
        s_close(&s->base);
        return NULL;
    }
    for (int k = 0; k < readers; k++) {
        if (conn_open(&s->readers[k], s->path, 0, busy_ms, err, errlen) != 0) {
            s_close(&s->base);
            return NULL;
        }
        s->nreaders++;
        s->free_idx[s->nfree++] = k;
    }
    return &s->base;
}
