/*
 * sqlite/query.c - the query compiler: a checked query (store.c) to a WHERE expression over
 * json_extract() with bound parameters, options to ORDER BY / LIMIT / OFFSET.
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

void dl_sqlite_qc_init(qc_t *q, dl_doc_arena_t *ar, conn_t *c, const char *coll,
                       dl_store_res_t *res)
{
    memset(q, 0, sizeof(*q));
    dl_buf_init(&q->w);
    q->ar = ar;
    q->c = c;
    q->coll = coll;
    q->res = res;
}

void dl_sqlite_qc_free(qc_t *q)
{
    dl_buf_free(&q->w);
    dl_free(q->p);
}

int dl_sqlite_is_id_path(const char *p, size_t n)
{
    return dl_doc_keq(p, n, "_id");
}

static int add_param(qc_t *q, const dl_doc_t *v)
{
    if (q->np == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        param_t *p = dl_realloc(q->p, (size_t)cap * sizeof(*p));
        if (p == NULL)
            return dl_store_res_fail(q->res, DL_ENOMEM, "out of memory");
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
            return dl_store_res_fail(q->res, DL_ENOMEM, "out of memory");
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

int dl_sqlite_bind_params(sqlite3_stmt *st, const qc_t *q)
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
        dl_sqlite_stmt_get(q->c, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
                           q->res);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    dl_sqlite_stmt_put(q->c, st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return dl_sqlite_sql_fail(q->res, q->c, rc), -1;
    if (rc == SQLITE_ROW) {
        char sql[2 * MAX_PATH_LEN + 2 * MAX_COLL_LEN + 128];
        snprintf(sql, sizeof(sql),
                 "SELECT 1 FROM \"c_%s\" INDEXED BY \"%s\" WHERE json_type(doc, '$.%.*s') = "
                 "'array' LIMIT 1", q->coll, name, (int)plen, path);
        st = dl_sqlite_stmt_get(q->c, sql, q->res);
        if (st == NULL)
            return -1;
        rc = sqlite3_step(st);
        dl_sqlite_stmt_put(q->c, st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return dl_sqlite_sql_fail(q->res, q->c, rc), -1;
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
    if (dl_sqlite_is_id_path(path, plen)) {
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

/* The type classes of MongoDB's comparisons, as json_type() names them; null
 * is matched apart (a missing field equals it too). */
static const struct {
    int t1, t2;
    const char *guard;
} in_classes[] = {
    {DL_DOC_NUM, DL_DOC_NUM, "IN ('integer', 'real')"},
    {DL_DOC_STR, DL_DOC_STR, "= 'text'"},
    {DL_DOC_TRUE, DL_DOC_FALSE, "IN ('true', 'false')"},
    {DL_DOC_OBJ, DL_DOC_OBJ, "= 'object'"},
    {DL_DOC_ARR, DL_DOC_ARR, "= 'array'"},
};

/* $in: the list is one bound JSON array read by json_each(), so any length
 * compiles to the same few terms (an OR of one comparison per entry nested
 * past SQLite's expression depth of 1000, and a parameter per entry past its
 * variable limit). Per type class present, "field IN (entries of that class)"
 * with the class's guard, which the expression index still serves; null
 * entries match null or missing; and, where documents may hold arrays, an
 * element matching an entry, as emit_cmp() does for one value. */
static int emit_in(qc_t *q, const char *path, size_t plen, const dl_doc_t *v)
{
    dl_buf_t *w = &q->w;
    int pl = (int)plen;
    if (v->n == 0) {
        dl_buf_append_str(w, "0");
        return 0;
    }
    int n = add_param(q, v);
    if (n < 0)
        return n;
    if (dl_sqlite_is_id_path(path, plen)) {
        dl_buf_appendf(w, "id IN (SELECT value FROM json_each(?%d) WHERE type = 'text')", n);
        return 0;
    }
    int arr = may_have_arrays(q, path, plen);
    if (arr < 0)
        return q->res->status;
    int has[DL_ARRAY_SIZE(in_classes)] = {0}, has_null = 0;
    for (size_t k = 0; k < v->n; k++) {
        int t = v->items[k]->type;
        has_null |= t == DL_DOC_NULL;
        for (size_t c = 0; c < DL_ARRAY_SIZE(in_classes); c++)
            has[c] |= t == in_classes[c].t1 || t == in_classes[c].t2;
    }
    const char *sep = "";
    dl_buf_append_char(w, '(');
    for (size_t c = 0; c < DL_ARRAY_SIZE(in_classes); c++) {
        if (!has[c])
            continue;
        const char *g = in_classes[c].guard;
        dl_buf_appendf(w, "%s(json_extract(doc, '$.%.*s') IN (SELECT value FROM json_each(?%d) "
                       "WHERE type %s) AND json_type(doc, '$.%.*s') %s)",
                       sep, pl, path, n, g, pl, path, g);
        sep = " OR ";
    }
    if (has_null) {
        dl_buf_appendf(w, "%sjson_extract(doc, '$.%.*s') IS NULL", sep, pl, path);
        sep = " OR ";
    }
    if (arr) {
        dl_buf_appendf(w, "%s(json_type(doc, '$.%.*s') = 'array' AND EXISTS (SELECT 1 FROM "
                       "json_each(doc, '$.%.*s') AS e WHERE ", sep, pl, path, pl, path);
        sep = "";
        for (size_t c = 0; c < DL_ARRAY_SIZE(in_classes); c++) {
            if (!has[c])
                continue;
            const char *g = in_classes[c].guard;
            dl_buf_appendf(w, "%s(e.type %s AND e.value IN (SELECT value FROM json_each(?%d) "
                           "WHERE type %s))", sep, g, n, g);
            sep = " OR ";
        }
        if (has_null)
            dl_buf_appendf(w, "%se.type = 'null'", sep);
        dl_buf_append_str(w, "))");
    }
    dl_buf_append_char(w, ')');
    return 0;
}

static int truthy(const dl_doc_t *v)
{
    return v->type == DL_DOC_TRUE || (v->type == DL_DOC_NUM && v->d != 0);
}

/* Term k of v (an operator of a field, a member of a query, a branch of
 * $and/$or) into q->w: 0 or the failure. */
typedef int (*term_fn)(qc_t *q, const char *path, size_t plen, const dl_doc_t *v, size_t k);

/* Terms lo to hi - 1 joined by join, grouped by halves: SQLite nests a chain
 * of n terms n deep and refuses more than 1000, halves only log2(n) deep. */
static int emit_joined(qc_t *q, const char *path, size_t plen, const dl_doc_t *v, size_t lo,
                       size_t hi, const char *join, term_fn term)
{
    if (hi - lo == 1)
        return term(q, path, plen, v, lo);
    size_t mid = lo + (hi - lo) / 2;
    dl_buf_append_char(&q->w, '(');
    if (emit_joined(q, path, plen, v, lo, mid, join, term) != 0)
        return q->res->status;
    dl_buf_append_str(&q->w, join);
    if (emit_joined(q, path, plen, v, mid, hi, join, term) != 0)
        return q->res->status;
    dl_buf_append_char(&q->w, ')');
    return 0;
}

/* Operator k of the field path's operator object ops. */
static int op_term(qc_t *q, const char *path, size_t plen, const dl_doc_t *ops, size_t k)
{
    static const struct {
        const char *name, *op;
    } cmps[] = {{"$eq", "="}, {"$gt", ">"}, {"$gte", ">="}, {"$lt", "<"}, {"$lte", "<="}};
    dl_buf_t *w = &q->w;
    const char *name = ops->keys[k];
    size_t nl = ops->klens[k];
    const dl_doc_t *v = ops->items[k];
    for (size_t c = 0; c < DL_ARRAY_SIZE(cmps); c++) {
        if (dl_doc_keq(name, nl, cmps[c].name))
            return emit_cmp(q, path, plen, cmps[c].op, v) != 0 ? q->res->status : 0;
    }
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
        if (dl_sqlite_is_id_path(path, plen))
            dl_buf_append_str(w, truthy(v) ? "1" : "0");
        else
            dl_buf_appendf(w, "json_type(doc, '$.%.*s') %s", (int)plen, path,
                           truthy(v) ? "IS NOT NULL" : "IS NULL");
    }
    return 0;
}

/* Branch k of an $and or $or. */
static int branch_term(qc_t *q, const char *path, size_t plen, const dl_doc_t *v, size_t k)
{
    (void)path, (void)plen;
    return dl_sqlite_compile_query(q, v->items[k]);
}

/* Member k of a query object: $and/$or, or a field's condition. */
static int member_term(qc_t *q, const char *path, size_t plen, const dl_doc_t *v, size_t k)
{
    (void)path, (void)plen;
    const char *key = v->keys[k];
    size_t kl = v->klens[k];
    const dl_doc_t *val = v->items[k];
    if (kl > 0 && key[0] == '$') {
        const char *join = dl_doc_keq(key, kl, "$and") ? " AND " : " OR "; /* or $or */
        return emit_joined(q, NULL, 0, val, 0, val->n, join, branch_term);
    }
    if (val->type == DL_DOC_OBJ && val->n > 0 && val->klens[0] > 0 && val->keys[0][0] == '$')
        return emit_joined(q, key, kl, val, 0, val->n, " AND ", op_term);
    return emit_cmp(q, key, kl, "=", val) != 0 ? q->res->status : 0;
}

int dl_sqlite_compile_query(qc_t *q, const dl_doc_t *v)
{
    dl_buf_t *w = &q->w;
    if (v->n == 0) {
        dl_buf_append_str(w, "1");
        return 0;
    }
    dl_buf_append_char(w, '(');
    if (emit_joined(q, NULL, 0, v, 0, v->n, " AND ", member_term) != 0)
        return q->res->status;
    dl_buf_append_char(w, ')');
    if (w->oom)
        return dl_store_res_fail(q->res, DL_ENOMEM, "out of memory");
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
void dl_sqlite_add_sorts(qopts_t *o, const dl_doc_t *v)
{
    for (size_t j = 0; j < v->n; j++) {
        if (v->type == DL_DOC_ARR)
            add_sort(o, v->items[j]->items[0]->s, v->items[j]->items[0]->len,
                     v->items[j]->items[1]);
        else
            add_sort(o, v->keys[j], v->klens[j], v->items[j]);
    }
}

void dl_sqlite_read_opts(const dl_doc_t *v, qopts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->proj_id = 1;
    for (size_t k = 0; v != NULL && k < v->n; k++) {
        const char *key = v->keys[k];
        size_t kl = v->klens[k];
        const dl_doc_t *val = v->items[k];
        if (dl_doc_keq(key, kl, "sort")) {
            if (val->type != DL_DOC_NULL)
                dl_sqlite_add_sorts(o, val);
        } else if (dl_doc_keq(key, kl, "skip")) {
            o->skip = val->i;
        } else if (dl_doc_keq(key, kl, "limit")) {
            o->limit = val->i;
        } else if ((dl_doc_keq(key, kl, "projection") || dl_doc_keq(key, kl, "fields")) &&
                   val->type == DL_DOC_OBJ) {
            /* inclusion only, but for _id (the front) */
            for (size_t j = 0; j < val->n; j++) {
                const char *f = val->keys[j];
                size_t fl = val->klens[j];
                if (dl_sqlite_is_id_path(f, fl)) {
                    o->proj_id = truthy(val->items[j]);
                } else {
                    o->pp[o->nproj] = f;
                    o->pl[o->nproj] = fl;
                    o->nproj++;
                }
            }
            o->has_proj = val->n > 0; /* {"_id": 1} alone: _id alone */
        }
    }
}

static void append_order(dl_buf_t *b, const qopts_t *o)
{
    int has_id = 0;
    dl_buf_append_str(b, " ORDER BY ");
    for (int k = 0; k < o->nsort; k++) {
        if (k > 0)
            dl_buf_append_str(b, ", ");
        if (dl_sqlite_is_id_path(o->sp[k], o->sl[k])) {
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
int dl_sqlite_build_sql(qc_t *q, dl_buf_t *sql, const char *head, const dl_doc_t *query,
                        const qopts_t *o, int64_t limit)
{
    if (dl_sqlite_compile_query(q, query) != 0)
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
        return dl_store_res_fail(q->res, DL_ENOMEM, "out of memory");
    return 0;
}
