/*
 * sqlite/health.c - write health: the latest write's fault and since when, the probe write
 * that notices a fault (and its end) without traffic, and ping().
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
void dl_sqlite_health_note(sqlite_store_t *s, const dl_store_res_t *res)
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
    if (dl_sqlite_conn_ready(w, &r) == 0) {
        s->wtx_changes = sqlite3_total_changes64(w->db);
        sqlite3_busy_timeout(w->db, wait_ms);
        w->busy_ms = wait_ms;
        if (dl_sqlite_run_simple(w, "BEGIN IMMEDIATE", &r) == 0 &&
            dl_sqlite_run_simple(w, "CREATE TABLE IF NOT EXISTS _devloop_health (id INTEGER "
                                    "PRIMARY KEY, at INTEGER NOT NULL)", &r) == 0) {
            sqlite3_stmt *st =
                dl_sqlite_stmt_get(w, "INSERT OR REPLACE INTO _devloop_health (id, at) "
                                      "VALUES (1, ?1)", &r);
            if (st != NULL) {
                sqlite3_bind_int64(st, 1, wall_ms());
                int rc = sqlite3_step(st);
                if (rc != SQLITE_DONE)
                    dl_sqlite_sql_fail(&r, w, rc);
                dl_sqlite_stmt_put(w, st);
            }
            if (r.status == 0)
                dl_sqlite_run_simple(w, "COMMIT", &r);
        }
        dl_sqlite_conn_settle(w);
        if (w->db != NULL)
            sqlite3_busy_timeout(w->db, s->busy_ms);
        w->busy_ms = s->busy_ms;
    }
    if (r.status == DL_EBUSY && w->fault == DL_EBUSY)
        health_busy(s, wait_ms);
    else
        dl_sqlite_health_note(s, &r);
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

int dl_sqlite_ping(dl_store_t *st_, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    dl_store_res_reset(res);
    conn_t *c = dl_sqlite_reader_acquire(s);
    /* reads the schema page: the file itself, not only the connection, answers */
    if (dl_sqlite_conn_ready(c, res) == 0)
        dl_sqlite_run_simple(c, "SELECT count(*) FROM sqlite_master", res);
    dl_sqlite_conn_settle(c);
    dl_sqlite_reader_release(s, c);
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
    return dl_sqlite_fail_oom_or(res, &res->json);
}
