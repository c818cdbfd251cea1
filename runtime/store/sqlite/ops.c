/*
 * sqlite/ops.c - the operations: find, count, explain, insert, update,
 * find_one_and_update and remove.
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

/* A write's opening: res reset and the table of coll made if missing. The
 * store, or NULL with the error in res. */
sqlite_store_t *dl_sqlite_write_open(dl_store_t *st_, const char *coll, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    dl_store_res_reset(res);
    return dl_sqlite_ensure_coll(s, coll, res) != 0 ? NULL : s;
}

/* Runs a SELECT or EXPLAIN on a reader inside one read transaction. mode 0:
 * find (doc rows), 1: count, 2: explain. */
static int read_op(dl_store_t *st_, const char *coll, const dl_store_json_t *query,
                   const dl_store_json_t *opts, int mode, dl_store_res_t *res)
{
    sqlite_store_t *s = (sqlite_store_t *)st_;
    dl_store_res_reset(res);
    dl_doc_arena_t ar = {NULL};
    qopts_t o;
    const dl_doc_t *qv = query->doc;
    dl_sqlite_read_opts(opts != NULL ? opts->doc : NULL, &o);
    conn_t *c = dl_sqlite_reader_acquire(s);
    qc_t q;
    dl_buf_t sql = DL_BUF_INIT;
    dl_sqlite_qc_init(&q, &ar, c, coll, res);
    if (dl_sqlite_conn_ready(c, res) != 0 || dl_sqlite_ensure_coll_read(s, c, coll, res) != 0 ||
        dl_sqlite_run_simple(c, "BEGIN", res) != 0)
        goto out;
    const char *head = mode == 0 ? "SELECT doc" : mode == 1 ? "SELECT count(*)"
                                                            : "EXPLAIN QUERY PLAN SELECT doc";
    if (dl_sqlite_build_sql(&q, &sql, head, qv, mode == 1 ? NULL : &o,
                            mode == 1 ? 0 : o.limit) != 0)
        goto rollback;
    sqlite3_stmt *st = dl_sqlite_stmt_get(c, sql.data, res);
    if (st == NULL)
        goto rollback;
    int rc = dl_sqlite_bind_params(st, &q);
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
        else if (dl_sqlite_append_doc(&res->json, txt ? txt : "null", txt ? len : 4, &o, res) != 0)
            break;
    }
    if (res->status == 0 && rc != SQLITE_DONE)
        dl_sqlite_sql_fail(res, c, rc);
    dl_sqlite_stmt_put(c, st);
    if (mode != 1)
        dl_buf_append_char(&res->json, ']');
    res->count = mode == 1 ? res->count : n;
    dl_sqlite_fail_oom_or(res, &res->json);
rollback:
    if (res->status == 0)
        dl_sqlite_run_simple(c, "COMMIT", res);
out:
    dl_sqlite_conn_settle(c);
    dl_sqlite_reader_release(s, c);
    dl_sqlite_qc_free(&q);
    dl_buf_free(&sql);
    dl_doc_arena_free(&ar);
    if (res->status != 0)
        dl_buf_reset(&res->json);
    return res->status;
}

int dl_sqlite_find(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                   const dl_store_json_t *opts, dl_store_res_t *res)
{
    return read_op(s, coll, query, opts, 0, res);
}

int dl_sqlite_count(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                    dl_store_res_t *res)
{
    return read_op(s, coll, query, NULL, 1, res);
}

int dl_sqlite_explain(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                      const dl_store_json_t *opts, dl_store_res_t *res)
{
    return read_op(s, coll, query, opts, 2, res);
}

int dl_sqlite_insert(dl_store_t *st_, const char *coll, const dl_store_json_t *docs,
                     dl_store_res_t *res)
{
    sqlite_store_t *s = dl_sqlite_write_open(st_, coll, res);
    if (s == NULL)
        return res->status;
    dl_buf_t all = DL_BUF_INIT;
    size_t *offs = NULL;
    const dl_doc_t *arr = docs->doc; /* an array of objects (the front) */
    /* per document: id offset, id length, doc offset, doc length */
    offs = dl_malloc((arr->n + 1) * 4 * sizeof(*offs));
    if (offs == NULL) {
        dl_store_res_fail(res, DL_ENOMEM, "out of memory");
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
            if (dl_sqlite_is_id_path(d->keys[j], d->klens[j]))
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
    if (dl_sqlite_fail_oom_or(res, &all) != 0 || dl_sqlite_fail_oom_or(res, &res->json) != 0)
        goto out;
    if (dl_sqlite_write_begin(s, res) != 0)
        goto out;
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO \"c_%s\" (id, doc) VALUES (?1, ?2)", coll);
    sqlite3_stmt *st = dl_sqlite_stmt_get(&s->writer, sql, res);
    for (size_t k = 0; st != NULL && k < arr->n; k++) {
        sqlite3_bind_text(st, 1, all.data + offs[4 * k], (int)offs[4 * k + 1], SQLITE_STATIC);
        sqlite3_bind_text(st, 2, all.data + offs[4 * k + 2], (int)offs[4 * k + 3],
                          SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            dl_sqlite_sql_fail(res, &s->writer, rc);
            if (res->status == DL_EDUPKEY && strstr(res->err, "_id") != NULL)
                dl_store_res_fail(res, DL_EDUPKEY, "duplicate key: _id \"%.*s\"",
                                  (int)DL_MIN(offs[4 * k + 1], 64), all.data + offs[4 * k]);
            break;
        }
    }
    dl_sqlite_stmt_put(&s->writer, st);
    dl_sqlite_write_end(s, res);
    if (res->status == 0)
        res->count = (int64_t)arr->n;
out:
    dl_free(offs);
    dl_buf_free(&all);
    if (res->status != 0)
        dl_buf_reset(&res->json);
    return res->status;
}

/* The writer's statement for sql with q's parameters bound, stepped once
 * (*rc: the step's or the binding's result); NULL with the error in res. */
static sqlite3_stmt *writer_step(sqlite_store_t *s, const char *sql, const qc_t *q, int *rc,
                                 dl_store_res_t *res)
{
    sqlite3_stmt *st = dl_sqlite_stmt_get(&s->writer, sql, res);
    if (st == NULL)
        return NULL;
    *rc = dl_sqlite_bind_params(st, q);
    if (*rc == SQLITE_OK)
        *rc = sqlite3_step(st);
    return st;
}

/* update, update many and find_one_and_update: selects on the writer in the
 * write transaction, applies the update in C and writes changed documents. */
static int write_update(dl_store_t *st_, const char *coll, const dl_store_json_t *query,
                        const dl_store_json_t *update, const dl_store_json_t *opts, int multi,
                        int fau, dl_store_res_t *res)
{
    sqlite_store_t *s = dl_sqlite_write_open(st_, coll, res);
    if (s == NULL)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    qopts_t o;
    dl_buf_t sql = DL_BUF_INIT, out = DL_BUF_INIT;
    size_t *offs = NULL, noffs = 0, capoffs = 0;
    qc_t q;
    dl_sqlite_qc_init(&q, &ar, &s->writer, coll, res);
    const dl_doc_t *qv = query->doc, *uv = update->doc;
    dl_sqlite_read_opts(fau ? opts->doc : NULL, &o);
    if (dl_sqlite_write_begin(s, res) != 0)
        goto out;
    if (dl_sqlite_build_sql(&q, &sql, "SELECT id, doc", qv, fau ? &o : NULL, multi ? 0 : 1) != 0)
        goto end;
    int rc;
    sqlite3_stmt *st = writer_step(s, sql.data, &q, &rc, res);
    if (st == NULL)
        goto end;
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
            dl_store_res_fail(res, DL_EIO, "stored document %.*s is not a JSON object",
                              (int)DL_MIN(idlen, 64), id ? id : "");
            break;
        }
        if (dl_sqlite_upd_apply(&da, dv, uv, res) != 0) {
            dl_doc_arena_free(&da);
            break;
        }
        if (noffs + 4 > capoffs) {
            size_t cap = capoffs ? capoffs * 2 : 64;
            size_t *n = dl_realloc(offs, cap * sizeof(*offs));
            if (n == NULL) {
                dl_doc_arena_free(&da);
                dl_store_res_fail(res, DL_ENOMEM, "out of memory");
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
        dl_sqlite_sql_fail(res, &s->writer, rc);
    dl_sqlite_stmt_put(&s->writer, st);
    if (dl_sqlite_fail_oom_or(res, &out) != 0)
        goto end;
    char usql[128];
    snprintf(usql, sizeof(usql), "UPDATE \"c_%s\" SET doc = ?2 WHERE id = ?1", coll);
    st = dl_sqlite_stmt_get(&s->writer, usql, res);
    for (size_t k = 0; st != NULL && k < noffs; k += 4) {
        if (offs[k] == (size_t)-1)
            continue;
        size_t idoff = offs[k + 2] - offs[k + 1];
        sqlite3_bind_text(st, 1, out.data + idoff, (int)offs[k + 1], SQLITE_STATIC);
        sqlite3_bind_text(st, 2, out.data + offs[k + 2], (int)offs[k + 3], SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            dl_sqlite_sql_fail(res, &s->writer, rc);
            break;
        }
        res->count++;
    }
    dl_sqlite_stmt_put(&s->writer, st);
    if (res->status == 0 && fau) {
        if (noffs == 0)
            dl_buf_append_str(&res->json, "null");
        else
            dl_sqlite_append_doc(&res->json, out.data + offs[2], offs[3], &o, res);
        dl_sqlite_fail_oom_or(res, &res->json);
    }
end:
    dl_sqlite_write_end(s, res);
out:
    dl_sqlite_qc_free(&q);
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

int dl_sqlite_update(dl_store_t *s, const char *coll, const dl_store_json_t *query,
                     const dl_store_json_t *update, int multi, dl_store_res_t *res)
{
    return write_update(s, coll, query, update, NULL, multi, 0, res);
}

int dl_sqlite_find_one_and_update(dl_store_t *s, const char *coll,
                                  const dl_store_json_t *query, const dl_store_json_t *update,
                                  const dl_store_json_t *opts, dl_store_res_t *res)
{
    return write_update(s, coll, query, update, opts, 0, 1, res);
}

int dl_sqlite_remove(dl_store_t *st_, const char *coll, const dl_store_json_t *query,
                     int multi, dl_store_res_t *res)
{
    sqlite_store_t *s = dl_sqlite_write_open(st_, coll, res);
    if (s == NULL)
        return res->status;
    dl_doc_arena_t ar = {NULL};
    dl_buf_t sql = DL_BUF_INIT;
    qc_t q;
    dl_sqlite_qc_init(&q, &ar, &s->writer, coll, res);
    if (dl_sqlite_write_begin(s, res) != 0)
        goto out;
    if (dl_sqlite_compile_query(&q, query->doc) != 0)
        goto end;
    if (multi)
        dl_buf_appendf(&sql, "DELETE FROM \"c_%s\" WHERE ", coll);
    else
        dl_buf_appendf(&sql, "DELETE FROM \"c_%s\" WHERE id = (SELECT id FROM \"c_%s\" WHERE ",
                       coll, coll);
    dl_buf_append(&sql, q.w.data, q.w.len);
    dl_buf_append_str(&sql, multi ? "" : " LIMIT 1)");
    dl_buf_append_char(&sql, '\0');
    if (dl_sqlite_fail_oom_or(res, &sql) != 0)
        goto end;
    int rc;
    sqlite3_stmt *st = writer_step(s, sql.data, &q, &rc, res);
    if (st == NULL)
        goto end;
    if (rc != SQLITE_DONE)
        dl_sqlite_sql_fail(res, &s->writer, rc);
    else
        res->count = sqlite3_changes64(s->writer.db);
    dl_sqlite_stmt_put(&s->writer, st);
end:
    dl_sqlite_write_end(s, res);
out:
    dl_sqlite_qc_free(&q);
    dl_buf_free(&sql);
    dl_doc_arena_free(&ar);
    if (res->status != 0)
        res->count = 0;
    return res->status;
}
