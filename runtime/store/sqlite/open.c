/*
 * sqlite/open.c - opening and closing a SQLite store, and its function table.
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

static void s_close(dl_store_t *st_)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    if (s == NULL)
        return;
    for (int k = 0; k < s->nreaders; k++)
        dl_sqlite_conn_close(&s->readers[k]);
    dl_sqlite_conn_close(&s->writer);
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
    dl_sqlite_find,
    dl_sqlite_count,
    dl_sqlite_insert,
    dl_sqlite_update,
    dl_sqlite_find_one_and_update,
    dl_sqlite_remove,
    dl_sqlite_create_index,
    dl_sqlite_explain,
    dl_sqlite_ping,
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
    if (dl_sqlite_conn_open(&s->writer, s->path, 1, busy_ms, err, errlen) != 0) {
        s_close(&s->base);
        return NULL;
    }
    for (int k = 0; k < readers; k++) {
        if (dl_sqlite_conn_open(&s->readers[k], s->path, 0, busy_ms, err, errlen) != 0) {
            s_close(&s->base);
            return NULL;
        }
        s->nreaders++;
        s->free_idx[s->nfree++] = k;
    }
    return &s->base;
}
