/*
 * sqlite/result.c - results and errors: the one translation of SQLite errors into DL_E* codes
 * (sql_fail), with the message of what happened, and the helpers that fill dl_store_res_t.
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
int dl_sqlite_sql_fail(dl_store_res_t *res, conn_t *c, int rc)
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
            return dl_store_res_fail(res, DL_EDUPKEY, "duplicate key: unique index %s (sqlite: %s)",
                                     ix + 6, msg);
        return dl_store_res_fail(res, DL_EDUPKEY, "duplicate key: _id (sqlite: %s)", msg);
    }
    case SQLITE_NOMEM:
        return dl_store_res_fail(res, DL_ENOMEM, "sqlite: %s", msg);
    case SQLITE_BUSY:
        if (c != NULL && c->busy_ms > 0)
            code = dl_store_res_fail(res, DL_EBUSY,
                                     "database locked by another process for more than %d ms "
                                     "(sqlite: %s)",
                                     c->busy_ms, msg);
        else
            code = dl_store_res_fail(res, DL_EBUSY,
                                     "database locked by another process (sqlite: %s)", msg);
        break;
    case SQLITE_LOCKED:
        code = dl_store_res_fail(res, DL_EBUSY, "database table locked (sqlite: %s)", msg);
        break;
    case SQLITE_READONLY:
        code = dl_store_res_fail(res, DL_EROFS, "database is read-only (sqlite: %s)", msg);
        break;
    case SQLITE_FULL:
        /* SQLite's message is the same words */
        if (strcmp(msg, "database or disk is full") == 0)
            code = dl_store_res_fail(res, DL_ENOSPC, "database or disk is full");
        else
            code = dl_store_res_fail(res, DL_ENOSPC, "database or disk is full (sqlite: %s)", msg);
        break;
    case SQLITE_CANTOPEN:
        code = dl_store_res_fail(res, DL_ECANTOPEN,
                                 "cannot open the database file (sqlite: %s: %s)", msg, etxt);
        break;
    case SQLITE_IOERR:
        /* SQLite reports every failed write(2) but ENOSPC as an i/o error */
        if (eno == EROFS || eno == EACCES || eno == EPERM)
            code = dl_store_res_fail(res, DL_EROFS, "database is read-only (sqlite: %s: %s)", msg,
                                     etxt);
        else if (eno == ENOSPC || eno == EDQUOT)
            code = dl_store_res_fail(res, DL_ENOSPC, "database or disk is full (sqlite: %s: %s)",
                                     msg, etxt);
        else if (eno != 0)
            code = dl_store_res_fail(res, DL_EIO, "database i/o error (sqlite: %s: %s)", msg, etxt);
        else
            code = dl_store_res_fail(res, DL_EIO, "database i/o error (sqlite: %s)", msg);
        break;
    default:
        return dl_store_res_fail(res, DL_EIO, "sqlite: %s", msg);
    }
    if (c != NULL)
        c->fault = code;
    return code;
}


int dl_sqlite_fail_oom_or(dl_store_res_t *res, const dl_buf_t *b)
{
    if (b->oom && res->status == 0)
        dl_store_res_fail(res, DL_ENOMEM, "out of memory");
    return res->status;
}
