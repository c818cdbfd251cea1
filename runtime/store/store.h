/*
 * store.h - the document store behind api.db: MongoDB-like collections of
 * JSON documents behind one front (dl_store_find() and the rest, store.c),
 * which checks every input by one set of rules and then calls the backend's
 * function table (dl_store_ops_t): SQLite (store/sqlite/) or MongoDB
 * (store/mongo/). Callers use the front, never the table. Queries, options, updates and
 * documents cross the interface as NUL-terminated JSON text, so the store
 * never touches Lua; the front parses each once and hands the backend the
 * text with its tree (dl_store_json_t). Every operation blocks (run it in uv_queue_work) and is
 * thread-safe: several threads may call one store at once.
 */
#ifndef DL_STORE_H
#define DL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "devloop.h" /* the DL_E* codes, DL_EROFS to DL_ECANTOPEN included */

typedef struct dl_store_s dl_store_t;

/** The outcome of one operation. Fill with dl_store_res_init(), free with
 * dl_store_res_free(); one result may be reused for several operations. */
typedef struct {
    int status;     /* 0 or a negative DL_E* */
    char err[256];  /* with an error: the message, naming the field/operator where it applies */
    dl_buf_t json;  /* find: a JSON array of documents; find_one_and_update: a document or
                     * null; insert: a JSON array of the inserted ids; explain: a JSON array
                     * of plan lines; ping: {"ok":1}; file_put: the id as a JSON string;
                     * file_get: the file's metadata. Not NUL-terminated: use json.len. */
    int64_t count;  /* count; insert: inserted; update: modified; delete, file_remove: deleted */
    int64_t matched; /* update, find_one_and_update: documents matched */
} dl_store_res_t;

/** Clears r for the next operation; its buffer is kept for reuse. */
static inline void dl_store_res_reset(dl_store_res_t *r)
{
    r->status = 0;
    r->err[0] = '\0';
    dl_buf_reset(&r->json);
    r->count = 0;
    r->matched = 0;
}

static inline void dl_store_res_init(dl_store_res_t *r)
{
    dl_buf_init(&r->json);
    dl_store_res_reset(r);
}

/** Fails r: status code and the formatted message (front and backends alike). Returns code. */
int dl_store_res_fail(dl_store_res_t *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void dl_store_res_free(dl_store_res_t *r)
{
    dl_buf_free(&r->json);
}

struct dl_doc_s; /* store/doc_json.h */

/**
 * A JSON input as the front hands it to a backend: the caller's text (NULL or
 * "" when it gave none) and the tree the front parsed from it (from the
 * default, {} or the like, when there was no text) and checked. Parsed once:
 * a backend that works on trees reads doc and parses nothing again. Both are
 * borrowed for the call.
 */
typedef struct {
    const char *text;
    const struct dl_doc_s *doc;
} dl_store_json_t;

/**
 * Backends implement this table, called only through the front, with inputs
 * the front has checked (a backend checks nothing of its own). Every
 * operation returns res->status (0 or a negative DL_E*: from the front
 * DL_EINVAL for malformed JSON or bad names, DL_EQUERY for an unsupported
 * operator; from the backend DL_EDUPKEY for a duplicate _id or a unique-index
 * violation; for backend failures DL_EROFS (read-only), DL_EBUSY (locked
 * past the busy timeout), DL_ENOSPC (database or disk full), DL_ECANTOPEN,
 * DL_EIO and others, with res->err saying what happened). A query "" or NULL
 * means {}. opts: {"sort": [[field, 1|-1], ...] or {field: 1|-1}, "skip": n,
 * "limit": n, "projection": {field: 1, "_id": 0}}. A write touching several
 * documents is one transaction: it applies entirely or not at all. The file_*
 * entries are optional: NULL when the backend keeps no files.
 * count and remove take no opts.
 */
typedef struct dl_store_ops_s {
    const char *type; /* "sqlite", "mongodb" */
    int (*find)(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                const dl_store_json_t *opts, dl_store_res_t *res);
    int (*count)(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                 dl_store_res_t *res);
    /* docs: a JSON array of objects; a missing _id is generated (24 hex digits,
     * increasing with creation time) */
    int (*insert)(dl_store_t *s, const char *coll, const dl_store_json_t *docs,
                  dl_store_res_t *res);
    /* update: {"$set"|"$inc"|"$unset"|"$push": {path: value}}; res->matched and
     * res->count (modified) */
    int (*update)(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                  const dl_store_json_t *update, int multi, dl_store_res_t *res);
    /* res->json: the first match (by opts.sort) after the update, or null */
    int (*find_one_and_update)(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                               const dl_store_json_t *update, const dl_store_json_t *opts,
                               dl_store_res_t *res);
    int (*remove)(dl_store_t *s, const char *coll, const dl_store_json_t *query, int multi,
                  dl_store_res_t *res);
    /* keys: a JSON array of [field, 1|-1] pairs, ordered */
    int (*create_index)(dl_store_t *s, const char *coll, const dl_store_json_t *keys,
                        int unique, dl_store_res_t *res);
    /* res->json: a JSON array of plan lines (SQLite: EXPLAIN QUERY PLAN details) */
    int (*explain)(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                   const dl_store_json_t *opts, dl_store_res_t *res);
    /* Checks that the store answers reads; fails only when it does not. res->json:
     * {"ok":1}; from SQLite, when the latest write (a small probe write included,
     * see dl_store_open_sqlite) failed for a reason of the database, also "write":
     * {"ok":false, "code":"ENOSPC", "error": message, "since": ISO-8601 UTC time
     * of the first failure in a row}. */
    int (*ping)(dl_store_t *s, dl_store_res_t *res);
    /* Stores the file at path (read in chunks, never whole in memory) as a new file named
     * filename with content_type and sha256 (hex) kept in its metadata (NULL: null); res->json:
     * the new id as a JSON string ("24 hex digits"). A path that cannot be read is DL_ENOENT
     * (missing), DL_EINVAL (not a regular file) or DL_EIO. Optional (NULL: the backend keeps
     * no files, as SQLite). */
    int (*file_put)(dl_store_t *s, const char *path, const char *filename,
                    const char *content_type, const char *sha256, dl_store_res_t *res);
    /* Writes file id's bytes to dest_path (created or truncated, 0600; removed again on
     * failure) and sets res->json to {"id","filename","content_type","size","sha256",
     * "created_at" (ms since the epoch)}, null where the file has no such value; DL_ENOENT
     * (no such file, or an id that is not 24 hex digits) with res->err set. Optional. */
    int (*file_get)(dl_store_t *s, const char *id, const char *dest_path, dl_store_res_t *res);
    /* Deletes file id; res->count 1 or 0 (no such file, or an id that is not 24 hex digits).
     * Optional. */
    int (*file_remove)(dl_store_t *s, const char *id, dl_store_res_t *res);
    /* no operation may be in flight; NULL is a no-op */
    void (*close)(dl_store_t *s);
} dl_store_ops_t;

struct dl_store_s {
    const dl_store_ops_t *ops; /* backend data follows in the backend's own struct */
};

/*
 * The front. Each checks its inputs (below), fails with res set when they are
 * bad, else runs the backend's operation of the same name (dl_store_ops_t says
 * what each does and answers). The file operations fail with DL_EINVAL on a
 * store that keeps no files (dl_store_has_files()).
 */
int dl_store_find(dl_store_t *s, const char *coll, const char *query, const char *opts,
                  dl_store_res_t *res);
int dl_store_count(dl_store_t *s, const char *coll, const char *query, dl_store_res_t *res);
int dl_store_insert(dl_store_t *s, const char *coll, const char *docs, dl_store_res_t *res);
int dl_store_update(dl_store_t *s, const char *coll, const char *query, const char *update,
                    int multi, dl_store_res_t *res);
int dl_store_find_one_and_update(dl_store_t *s, const char *coll, const char *query,
                                 const char *update, const char *opts, dl_store_res_t *res);
int dl_store_remove(dl_store_t *s, const char *coll, const char *query, int multi,
                    dl_store_res_t *res);
int dl_store_create_index(dl_store_t *s, const char *coll, const char *keys, int unique,
                          dl_store_res_t *res);
int dl_store_explain(dl_store_t *s, const char *coll, const char *query, const char *opts,
                     dl_store_res_t *res);
int dl_store_ping(dl_store_t *s, dl_store_res_t *res);
int dl_store_has_files(const dl_store_t *s);
int dl_store_file_put(dl_store_t *s, const char *path, const char *filename,
                      const char *content_type, const char *sha256, dl_store_res_t *res);
int dl_store_file_get(dl_store_t *s, const char *id, const char *dest_path, dl_store_res_t *res);
int dl_store_file_remove(dl_store_t *s, const char *id, dl_store_res_t *res);
const char *dl_store_type(const dl_store_t *s); /* "sqlite", "mongodb" */
void dl_store_close(dl_store_t *s);             /* NULL is a no-op */

/*
 * The checks the front runs, each 0 or an error in res (DL_EINVAL for
 * malformed JSON, a wrong shape or a bad name; DL_EQUERY for an operator
 * outside the subset, named in res->err):
 *   - coll: 1 to 64 of [A-Za-z0-9_];
 *   - field paths (query keys, update fields, sort, projection and index
 *     keys): dotted segments of [A-Za-z0-9_-], at most 200 bytes;
 *   - query: an object; $and/$or with a non-empty array of queries; per field
 *     a value or {$eq|$ne|$gt|$gte|$lt|$lte|$in|$nin|$exists: ...} (no field
 *     mixed in); $in/$nin take an array; $exists true, false, 1 or 0; range
 *     operators take no null, object or array; no value carries an object
 *     with a "$" key, at any depth; at most 1000 conditions in all;
 *   - update: a non-empty object of $set/$inc/$unset/$push, each an object of
 *     fields; not _id; no field twice or within another; $inc takes numbers;
 *     values carry no "$" key;
 *   - opts: an object; sort [[field, 1|-1], ...] or {field: 1|-1} (at most
 *     16); skip and limit whole numbers >= 0; projection (or fields) an
 *     object of 0/1 or booleans, inclusion only but for _id (at most 64), no
 *     field within another;
 *   - index keys: as a sort, at least one;
 *   - docs: an array of objects whose _id, where present, is a string;
 *   - no document, update value or query value holds an empty key or one
 *     with a NUL byte, at any depth.
 * NULL or "" query and opts mean {}.
 */
enum { DL_STORE_IN_QUERY, DL_STORE_IN_UPDATE, DL_STORE_IN_DOCS, DL_STORE_IN_KEYS, DL_STORE_IN_OPTS,
       DL_STORE_IN_COUNT };
/** Runs the check of one input (DL_STORE_IN_*) on text, as every operation
 * taking it does; for a backend's tests, which convert what the front let by. */
#ifdef DL_UNIT_TEST /* a test hook: not in the program */
int dl_store_check(int in, const char *text, dl_store_res_t *res);
#endif

/**
 * Opens (creating the file and its folder if missing) a SQLite store with one
 * writer connection and `readers` reader connections (<= 0: 4). Returns NULL
 * with a message in err on failure. Several stores, in one process or several,
 * may open the same file.
 *
 * A write waits for another process's write lock for DEVLOOP_DB_BUSY_TIMEOUT_MS
 * (read from the environment here; default 5000, 0 to 600000; anything else
 * fails the open with a message naming the variable), then fails with DL_EBUSY.
 * The store remembers the outcome of its latest write: a failure for a reason of
 * the database (read-only, locked, full, i/o, cannot open) and the time of the
 * first failure in a row, cleared by the next write that commits. ping() reports
 * it, after a probe of its own at most once a second when no write is running:
 * BEGIN IMMEDIATE, a one-row write to the table _devloop_health, COMMIT, waiting
 * at most 100 ms for the lock (a lock seen held for the whole busy timeout counts
 * as a failure), so a fault is noticed, and its end too, without traffic.
 */
dl_store_t *dl_store_open_sqlite(const char *path, int readers, char *err, size_t errlen);

/** DEVLOOP_DB_BUSY_TIMEOUT_MS (milliseconds, 0 to 600000; 5000 when unset) in
 * *out: 0, or DL_EINVAL with err naming it (config.c checks it at start). */
int dl_sqlite_busy_timeout_env(int *out, char *err, size_t errlen);

#endif
