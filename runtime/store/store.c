/*
 * store.c - the store front (store.h): every operation of api.db passes here,
 * where collection names, queries, updates, options, index keys and documents
 * are checked once, by one set of rules, before the backend (sqlite/ or
 * mongo/) runs anything. So the two backends answer bad input identically,
 * and a backend only translates what the front let through.
 *
 * The rules are the stricter of what the two backends each checked before:
 * collection names are 1-64 of [A-Za-z0-9_]; field paths dotted segments of
 * [A-Za-z0-9_-]; query operators $eq $ne $gt $gte $lt $lte $in $nin $exists
 * $and $or, anything else (extended JSON such as {"$regex": ...} or
 * {"$oid": ...} in a value included) DL_EQUERY naming it; updates $set $inc
 * $unset $push with plain values, no field twice or within another; skip
 * and limit whole numbers >= 0; sorts and index keys [field, 1|-1];
 * projections inclusion only (and _id: 0), no field within another; no key
 * MongoDB cannot store (empty, or with a NUL byte) in a document or value.
 */
#include "store/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "store/doc_json.h"

#define MAX_COLL_LEN 64
#define MAX_PATH_LEN 200
#define MAX_SORT_KEYS 16
#define MAX_PROJ_FIELDS 64
/* SQLite plans an $or of n branches in about n^2 time (20,000: 8 s) and binds
 * at most 32766 values in a statement: a query holds at most this many
 * conditions (check_query_obj() counts them). */
#define MAX_QUERY_CONDS 1000

int dl_store_res_fail(dl_store_res_t *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    res->status = dl_err_vformat(res->err, sizeof(res->err), code, fmt, ap);
    va_end(ap);
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

/* n bytes of p for a message: at most 64, unprintable ones as '?'. */
static const char *show(char out[72], const char *p, size_t n)
{
    size_t m = 0;
    for (size_t k = 0; k < n && m < 64; k++)
        out[m++] = (p[k] >= 0x20 && p[k] < 0x7f) ? p[k] : '?';
    out[m] = '\0';
    return out;
}

static int is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

static int check_coll(const char *coll, dl_store_res_t *res)
{
    size_t n = coll != NULL ? strlen(coll) : 0;
    int ok = n > 0 && n <= MAX_COLL_LEN;
    for (size_t k = 0; ok && k < n; k++)
        ok = is_word(coll[k]);
    if (!ok)
        return dl_store_res_fail(res, DL_EINVAL, "invalid collection name (1-64 of [A-Za-z0-9_])");
    return 0;
}

/* Field paths: dot-separated segments of [A-Za-z0-9_-], so a backend may put
 * one in a JSON path or SQL literal as is. */
static int check_path(dl_store_res_t *res, const char *p, size_t n)
{
    int ok = n > 0 && n <= MAX_PATH_LEN && p[0] != '.' && p[n - 1] != '.';
    for (size_t k = 0; ok && k < n; k++) {
        if (p[k] == '.')
            ok = p[k + 1] != '.';
        else
            ok = is_word(p[k]) || p[k] == '-';
    }
    if (!ok) {
        char shown[72];
        return dl_store_res_fail(res, DL_EINVAL,
                       "invalid field name \"%s\" (dotted segments of [A-Za-z0-9_-])",
                       show(shown, p, n));
    }
    return 0;
}

/* What makes k a key MongoDB cannot store (empty, or with a NUL byte), or NULL. */
static const char *key_fault(const char *k, size_t kl)
{
    if (kl == 0)
        return "an empty field name";
    if (memchr(k, '\0', kl) != NULL)
        return "a field name with a NUL byte";
    return NULL;
}

/* key_fault() of the first such key at any depth of a stored or compared
 * value v; NULL when none is. */
static const char *bad_key(const dl_doc_t *v)
{
    if (v->type != DL_DOC_OBJ && v->type != DL_DOC_ARR)
        return NULL;
    for (size_t k = 0; k < v->n; k++) {
        const char *bad = v->type == DL_DOC_OBJ ? key_fault(v->keys[k], v->klens[k]) : NULL;
        if (bad == NULL)
            bad = bad_key(v->items[k]);
        if (bad != NULL)
            return bad;
    }
    return NULL;
}

static int is_op(const char *k, size_t kl)
{
    return kl > 0 && k[0] == '$';
}

/* The first key of object v that starts with '$', or -1. */
static long first_op(const dl_doc_t *v)
{
    if (v->type != DL_DOC_OBJ)
        return -1;
    for (size_t k = 0; k < v->n; k++) {
        if (is_op(v->keys[k], v->klens[k]))
            return (long)k;
    }
    return -1;
}

/* A value compared by a query or written by an update: an object carrying an
 * operator ({"$regex": ...}, {"$oid": ...}, {"$each": ...}) is refused, at
 * any depth, so no backend reads an operator out of a value. */
static int check_value(const dl_doc_t *v, const char *kind, dl_store_res_t *res)
{
    long op = first_op(v);
    if (op >= 0)
        return dl_store_res_fail(res, DL_EQUERY, "unsupported %s operator %.*s", kind,
                                 (int)DL_MIN(v->klens[op], 32), v->keys[op]);
    if (v->type == DL_DOC_OBJ || v->type == DL_DOC_ARR) {
        for (size_t k = 0; k < v->n; k++) {
            if (check_value(v->items[k], kind, res) != 0)
                return res->status;
        }
    }
    return 0;
}

/* The operand of a comparison: range operators take numbers, strings and
 * booleans; null and objects and arrays compare by equality only. */
static int check_operand(const dl_doc_t *v, const char *path, size_t plen, const char *op,
                         int range, dl_store_res_t *res)
{
    if (check_value(v, "query", res) != 0)
        return res->status;
    const char *bad = bad_key(v);
    if (bad != NULL)
        return dl_store_res_fail(res, DL_EINVAL, "%s on %.*s: the value holds %s", op, (int)plen, path,
                       bad);
    if (!range)
        return 0;
    if (v->type == DL_DOC_NULL)
        return dl_store_res_fail(res, DL_EQUERY, "unsupported value null for %s", op);
    if (v->type == DL_DOC_OBJ || v->type == DL_DOC_ARR)
        return dl_store_res_fail(res, DL_EQUERY,
                                 "unsupported value for %s on %.*s (objects and arrays compare by "
                                 "equality only)",
                                 op, (int)plen, path);
    return 0;
}

static int check_ops(const char *path, size_t plen, const dl_doc_t *ops, dl_store_res_t *res)
{
    static const char *const range[] = {"$gt", "$gte", "$lt", "$lte"};
    for (size_t k = 0; k < ops->n; k++) {
        const char *name = ops->keys[k];
        size_t nl = ops->klens[k];
        const dl_doc_t *v = ops->items[k];
        char op[24];
        snprintf(op, sizeof(op), "%.*s", (int)DL_MIN(nl, 20), name);
        if (!is_op(name, nl))
            return dl_store_res_fail(res, DL_EQUERY, "cannot mix operators and fields in %.*s",
                                     (int)plen, path);
        int is_range = 0;
        for (size_t r = 0; r < DL_ARRAY_SIZE(range); r++)
            is_range |= dl_doc_keq(name, nl, range[r]);
        if (is_range || dl_doc_keq(name, nl, "$eq") || dl_doc_keq(name, nl, "$ne")) {
            if (check_operand(v, path, plen, op, is_range, res) != 0)
                return res->status;
        } else if (dl_doc_keq(name, nl, "$in") || dl_doc_keq(name, nl, "$nin")) {
            if (v->type != DL_DOC_ARR)
                return dl_store_res_fail(res, DL_EINVAL,
                                         "query operator %s needs an array (on %.*s)", op,
                                         (int)plen, path);
            for (size_t j = 0; j < v->n; j++) {
                if (check_operand(v->items[j], path, plen, op, 0, res) != 0)
                    return res->status;
            }
        } else if (dl_doc_keq(name, nl, "$exists")) {
            if (check_value(v, "query", res) != 0)
                return res->status;
            /* the backends read other operands differently ("yes": SQLite false,
             * MongoDB true); 1 and 0 were always taken */
            if (v->type != DL_DOC_TRUE && v->type != DL_DOC_FALSE &&
                (v->type != DL_DOC_NUM || (v->d != 0 && v->d != 1)))
                return dl_store_res_fail(res, DL_EINVAL,
                               "query operator $exists needs true or false (on %.*s)",
                               (int)plen, path);
        } else {
            return dl_store_res_fail(res, DL_EQUERY, "unsupported query operator %s", op);
        }
    }
    return 0;
}

/* One query object (the query or a branch of $and/$or); *conds counts the
 * conditions of all of them: one per operator of a field (a plain value is
 * $eq; an $in list is one), and one per empty object ({} is "true"). */
static int check_query_obj(const dl_doc_t *v, size_t *conds, dl_store_res_t *res)
{
    if (v->type != DL_DOC_OBJ)
        return dl_store_res_fail(res, DL_EINVAL, "query must be a JSON object");
    size_t own = 0;
    for (size_t k = 0; k < v->n; k++) {
        if (!is_op(v->keys[k], v->klens[k]))
            own += first_op(v->items[k]) >= 0 ? v->items[k]->n : 1;
    }
    *conds += v->n > 0 ? own : 1;
    if (*conds > MAX_QUERY_CONDS)
        return dl_store_res_fail(res, DL_EINVAL,
                       "query: at most %d conditions ($and/$or branches included)",
                       MAX_QUERY_CONDS);
    for (size_t k = 0; k < v->n; k++) {
        const char *key = v->keys[k];
        size_t kl = v->klens[k];
        const dl_doc_t *val = v->items[k];
        if (is_op(key, kl)) {
            if (!dl_doc_keq(key, kl, "$and") && !dl_doc_keq(key, kl, "$or"))
                return dl_store_res_fail(res, DL_EQUERY, "unsupported query operator %.*s",
                                         (int)DL_MIN(kl, 32), key);
            if (val->type != DL_DOC_ARR || val->n == 0)
                return dl_store_res_fail(res, DL_EINVAL, "%.*s needs a non-empty array of queries",
                                         (int)kl, key);
            for (size_t j = 0; j < val->n; j++) {
                if (check_query_obj(val->items[j], conds, res) != 0)
                    return res->status;
            }
            continue;
        }
        if (check_path(res, key, kl) != 0)
            return res->status;
        int rc = first_op(val) >= 0 ? check_ops(key, kl, val, res)
                                    : check_operand(val, key, kl, "$eq", 0, res);
        if (rc != 0)
            return res->status;
    }
    return 0;
}

static int check_query_doc(const dl_doc_t *v, dl_store_res_t *res)
{
    size_t conds = 0;
    return check_query_obj(v, &conds, res);
}

/* A field path and what names it in a message (an update operator). */
typedef struct {
    const char *p;
    size_t n;
    const char *op;
    size_t opl;
    size_t at; /* the order given, to sort equal paths stably */
} named_path_t;

/* Orders paths with '.' before every other byte, so the paths under m.
 * follow m at once and a path and its prefix end up next to each other. */
static int path_cmp(const void *x, const void *y)
{
    const named_path_t *a = x, *b = y;
    for (size_t k = 0; k < a->n && k < b->n; k++) {
        int ca = a->p[k] == '.' ? 0 : (unsigned char)a->p[k];
        int cb = b->p[k] == '.' ? 0 : (unsigned char)b->p[k];
        if (ca != cb)
            return ca - cb;
    }
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return a->at < b->at ? -1 : a->at > b->at;
}

/* The first two of n paths that are equal or one a prefix of the other (m
 * and m.k): MongoDB refuses both in one update ("would create a conflict")
 * or projection ("path collision"). 1 with *a and *b set, 0 when none are,
 * DL_ENOMEM. Sorts ps. */
static int find_collision(named_path_t *ps, size_t n, const named_path_t **a,
                          const named_path_t **b)
{
    qsort(ps, n, sizeof(*ps), path_cmp);
    for (size_t k = 0; k + 1 < n; k++) {
        const named_path_t *x = &ps[k], *y = &ps[k + 1];
        if (memcmp(x->p, y->p, x->n) == 0 && (y->n == x->n || y->p[x->n] == '.')) {
            *a = x;
            *b = y;
            return 1;
        }
    }
    return 0;
}

/* The fields of every operator of a checked update: no two the same or one
 * within the other. */
static int check_update_paths(const dl_doc_t *u, dl_store_res_t *res)
{
    size_t n = 0, m = 0;
    for (size_t k = 0; k < u->n; k++)
        n += u->items[k]->n;
    if (n < 2)
        return 0;
    named_path_t *ps = dl_malloc(n * sizeof(*ps));
    if (ps == NULL)
        return dl_store_res_fail(res, DL_ENOMEM, "out of memory");
    for (size_t k = 0; k < u->n; k++) {
        for (size_t j = 0; j < u->items[k]->n; j++, m++)
            ps[m] = (named_path_t){u->items[k]->keys[j], u->items[k]->klens[j], u->keys[k],
                                   u->klens[k], m};
    }
    const named_path_t *a, *b;
    if (find_collision(ps, n, &a, &b)) {
        if (a->at > b->at) { /* name them in the order given */
            const named_path_t *t = a;
            a = b;
            b = t;
        }
        dl_store_res_fail(res, DL_EINVAL, "update: %.*s on %.*s conflicts with %.*s on %.*s",
                (int)a->opl, a->op, (int)a->n, a->p, (int)b->opl, b->op, (int)b->n, b->p);
    }
    dl_free(ps);
    return res->status;
}

static int check_update_doc(const dl_doc_t *u, dl_store_res_t *res)
{
    if (u->type != DL_DOC_OBJ || u->n == 0)
        return dl_store_res_fail(res, DL_EINVAL, "update must be a non-empty JSON object");
    for (size_t k = 0; k < u->n; k++) {
        const char *op = u->keys[k];
        size_t ol = u->klens[k];
        const dl_doc_t *fields = u->items[k];
        if (!is_op(op, ol))
            return dl_store_res_fail(
                res, DL_EQUERY,
                "unsupported update: replacement documents (field %.*s); update "
                "needs operators ($set, $inc, $unset, $push)",
                (int)DL_MIN(ol, 64), op);
        if (!dl_doc_keq(op, ol, "$set") && !dl_doc_keq(op, ol, "$inc") &&
            !dl_doc_keq(op, ol, "$unset") && !dl_doc_keq(op, ol, "$push"))
            return dl_store_res_fail(res, DL_EQUERY, "unsupported update operator %.*s",
                                     (int)DL_MIN(ol, 32), op);
        if (fields->type != DL_DOC_OBJ)
            return dl_store_res_fail(res, DL_EINVAL, "%.*s needs an object of fields", (int)ol, op);
        for (size_t j = 0; j < fields->n; j++) {
            const char *f = fields->keys[j];
            size_t fl = fields->klens[j];
            if (is_op(f, fl))
                return dl_store_res_fail(res, DL_EQUERY, "unsupported update operator %.*s",
                                         (int)DL_MIN(fl, 32), f);
            if (check_path(res, f, fl) != 0)
                return res->status;
            if (dl_doc_keq(f, fl, "_id") || (fl > 3 && memcmp(f, "_id.", 4) == 0))
                return dl_store_res_fail(res, DL_EINVAL, "%.*s: _id cannot be changed", (int)ol,
                                         op);
            if (dl_doc_keq(op, ol, "$inc") && fields->items[j]->type != DL_DOC_NUM)
                return dl_store_res_fail(res, DL_EINVAL, "$inc on %.*s needs a number", (int)fl, f);
            if (check_value(fields->items[j], "update", res) != 0)
                return res->status;
            const char *bad = bad_key(fields->items[j]);
            if (bad != NULL)
                return dl_store_res_fail(res, DL_EINVAL, "%.*s on %.*s: the value holds %s", (int)ol, op,
                               (int)fl, f, bad);
        }
    }
    return check_update_paths(u, res);
}

/* One [field, 1|-1] of a sort or an index (what names it in messages). */
static int check_key(const char *what, const char *f, size_t fl, const dl_doc_t *dir, int *n,
                     dl_store_res_t *res)
{
    if (check_path(res, f, fl) != 0)
        return res->status;
    if (dir->type != DL_DOC_NUM || !dir->isint || (dir->i != 1 && dir->i != -1))
        return dl_store_res_fail(res, DL_EINVAL, "%s direction for %.*s must be 1 or -1", what,
                                 (int)fl, f);
    if (++*n > MAX_SORT_KEYS)
        return dl_store_res_fail(res, DL_EINVAL, "%s: at most %d keys", what, MAX_SORT_KEYS);
    return 0;
}

/* [[field, 1|-1], ...] or {field: 1|-1}. */
static int check_keys(const char *what, const dl_doc_t *v, dl_store_res_t *res)
{
    int n = 0;
    if (v->type == DL_DOC_OBJ) {
        for (size_t j = 0; j < v->n; j++) {
            if (check_key(what, v->keys[j], v->klens[j], v->items[j], &n, res) != 0)
                return res->status;
        }
        return 0;
    }
    if (v->type != DL_DOC_ARR)
        return dl_store_res_fail(res, DL_EINVAL, "%s: expected [[field, 1|-1], ...]", what);
    for (size_t j = 0; j < v->n; j++) {
        const dl_doc_t *pair = v->items[j];
        if (pair->type != DL_DOC_ARR || pair->n != 2 || pair->items[0]->type != DL_DOC_STR)
            return dl_store_res_fail(res, DL_EINVAL, "%s: expected [[field, 1|-1], ...]", what);
        if (check_key(what, pair->items[0]->s, pair->items[0]->len, pair->items[1], &n, res) != 0)
            return res->status;
    }
    return 0;
}

static int check_projection(const dl_doc_t *v, dl_store_res_t *res)
{
    if (v->type == DL_DOC_NULL)
        return 0;
    if (v->type != DL_DOC_OBJ)
        return dl_store_res_fail(res, DL_EINVAL, "projection must be an object");
    int n = 0;
    for (size_t j = 0; j < v->n; j++) {
        const char *f = v->keys[j];
        size_t fl = v->klens[j];
        const dl_doc_t *on = v->items[j];
        if (is_op(f, fl))
            return dl_store_res_fail(res, DL_EQUERY, "unsupported projection operator %.*s",
                                     (int)DL_MIN(fl, 32), f);
        if (check_path(res, f, fl) != 0)
            return res->status;
        if (on->type != DL_DOC_NUM && on->type != DL_DOC_TRUE && on->type != DL_DOC_FALSE)
            return dl_store_res_fail(res, DL_EQUERY, "projection of %.*s must be 0 or 1", (int)fl,
                                     f);
        int incl = on->type == DL_DOC_TRUE || (on->type == DL_DOC_NUM && on->d != 0);
        if (dl_doc_keq(f, fl, "_id"))
            continue;
        if (!incl)
            return dl_store_res_fail(res, DL_EQUERY,
                                     "unsupported projection: exclusion of %.*s (inclusion only)",
                                     (int)fl, f);
        if (++n > MAX_PROJ_FIELDS)
            return dl_store_res_fail(res, DL_EINVAL, "projection: at most %d fields",
                                     MAX_PROJ_FIELDS);
    }
    named_path_t ps[MAX_PROJ_FIELDS + 1];
    const named_path_t *a, *b;
    size_t np = 0;
    for (size_t j = 0; j < v->n && np < DL_ARRAY_SIZE(ps); j++)
        ps[np++] = (named_path_t){v->keys[j], v->klens[j], NULL, 0, j};
    if (find_collision(ps, np, &a, &b))
        return dl_store_res_fail(res, DL_EINVAL, "projection: %.*s collides with %.*s", (int)b->n, b->p,
                       (int)a->n, a->p);
    return 0;
}

static int check_opts_doc(const dl_doc_t *v, dl_store_res_t *res)
{
    if (v->type != DL_DOC_OBJ)
        return dl_store_res_fail(res, DL_EINVAL, "opts must be a JSON object");
    for (size_t k = 0; k < v->n; k++) {
        const char *key = v->keys[k];
        size_t kl = v->klens[k];
        const dl_doc_t *val = v->items[k];
        if (dl_doc_keq(key, kl, "sort")) {
            if (val->type != DL_DOC_NULL && val->type != DL_DOC_OBJ && val->type != DL_DOC_ARR)
                return dl_store_res_fail(res, DL_EINVAL,
                                         "sort must be an array of pairs or an object");
            if (val->type != DL_DOC_NULL && check_keys("sort", val, res) != 0)
                return res->status;
        } else if (dl_doc_keq(key, kl, "skip") || dl_doc_keq(key, kl, "limit")) {
            if (val->type != DL_DOC_NUM || !val->isint || val->i < 0)
                return dl_store_res_fail(res, DL_EINVAL, "%.*s must be a non-negative integer",
                                         (int)kl, key);
        } else if (dl_doc_keq(key, kl, "projection") || dl_doc_keq(key, kl, "fields")) {
            if (check_projection(val, res) != 0)
                return res->status;
        }
        /* other keys ("upsert", "new") are the backend's to read or ignore */
    }
    return 0;
}

static int check_docs_doc(const dl_doc_t *v, dl_store_res_t *res)
{
    if (v->type != DL_DOC_ARR)
        return dl_store_res_fail(res, DL_EINVAL, "insert expects a JSON array of documents");
    for (size_t k = 0; k < v->n; k++) {
        const dl_doc_t *d = v->items[k];
        if (d->type != DL_DOC_OBJ)
            return dl_store_res_fail(res, DL_EINVAL, "insert: document %zu is not an object", k);
        for (size_t j = 0; j < d->n; j++) {
            const char *bad = key_fault(d->keys[j], d->klens[j]);
            if (bad != NULL)
                return dl_store_res_fail(res, DL_EINVAL, "insert: document %zu holds %s", k, bad);
            if (d->klens[j] == 3 && memcmp(d->keys[j], "_id", 3) == 0 &&
                d->items[j]->type != DL_DOC_STR)
                return dl_store_res_fail(res, DL_EINVAL, "insert: document %zu: _id must be a "
                                         "string", k);
            char shown[72];
            bad = bad_key(d->items[j]);
            if (bad != NULL)
                return dl_store_res_fail(res, DL_EINVAL, "insert: document %zu: %s holds %s", k,
                               show(shown, d->keys[j], d->klens[j]), bad);
        }
    }
    return 0;
}

static int check_index_doc(const dl_doc_t *v, dl_store_res_t *res)
{
    if (check_keys("index", v, res) != 0)
        return res->status;
    if (v->n == 0)
        return dl_store_res_fail(res, DL_EINVAL, "index: no fields");
    return 0;
}

/* Each input an operation may take: its name in errors, what NULL or ""
 * stands for (NULL: it is required) and its check. Indexed by DL_STORE_IN_*,
 * in the order run_op checks them. */
static const struct {
    const char *what, *dflt;
    int (*check)(const dl_doc_t *v, dl_store_res_t *res);
} inputs[DL_STORE_IN_COUNT] = {
    [DL_STORE_IN_QUERY] = {"query", "{}", check_query_doc},
    [DL_STORE_IN_UPDATE] = {"update", NULL, check_update_doc},
    [DL_STORE_IN_DOCS] = {"insert", NULL, check_docs_doc},
    [DL_STORE_IN_KEYS] = {"index keys", NULL, check_index_doc},
    [DL_STORE_IN_OPTS] = {"opts", "{}", check_opts_doc},
};

/* Parses text (NULL or "": the input's default) into ar and checks it; out
 * gets the text and the tree the backend reads, so nothing is parsed twice. */
static int take(dl_doc_arena_t *ar, int in, const char *text, dl_store_json_t *out,
                dl_store_res_t *res)
{
    const dl_doc_t *v = doc_parse(ar, text, inputs[in].dflt, inputs[in].what, res);
    out->text = text;
    out->doc = v;
    return v != NULL ? inputs[in].check(v, res) : res->status;
}

DL_TEST_HOOK int dl_store_check(int in, const char *text, dl_store_res_t *res)
{
    if (in < 0 || in >= DL_STORE_IN_COUNT)
        return dl_store_res_fail(res, DL_EINVAL, "unknown store input %d", in);
    dl_doc_arena_t ar = {NULL};
    dl_store_json_t out;
    int rc = take(&ar, in, text, &out, res);
    dl_doc_arena_free(&ar);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The operations                                                           */
/* ------------------------------------------------------------------------ */

enum { OP_FIND, OP_EXPLAIN, OP_COUNT, OP_INSERT, OP_UPDATE, OP_FIND_ONE_AND_UPDATE, OP_REMOVE,
       OP_CREATE_INDEX, OP_COUNT_ };

#define IN(x) (1u << DL_STORE_IN_##x)

/* The inputs each operation takes. */
static const unsigned op_inputs[OP_COUNT_] = {
    [OP_FIND] = IN(QUERY) | IN(OPTS),
    [OP_EXPLAIN] = IN(QUERY) | IN(OPTS),
    [OP_COUNT] = IN(QUERY),
    [OP_INSERT] = IN(DOCS),
    [OP_UPDATE] = IN(QUERY) | IN(UPDATE),
    [OP_FIND_ONE_AND_UPDATE] = IN(QUERY) | IN(UPDATE) | IN(OPTS),
    [OP_REMOVE] = IN(QUERY),
    [OP_CREATE_INDEX] = IN(KEYS),
};

/* What one operation is given, as text, by DL_STORE_IN_* (NULL: not given). */
typedef struct {
    const char *text[DL_STORE_IN_COUNT];
    int flag; /* update and remove: multi; create_index: unique */
} op_in_t;

static int call_backend(dl_store_t *s, int op, const char *coll, dl_store_json_t *in, int flag,
                        dl_store_res_t *res)
{
    const dl_store_ops_t *ops = s->ops;
    dl_store_json_t *q = &in[DL_STORE_IN_QUERY], *u = &in[DL_STORE_IN_UPDATE],
                    *o = &in[DL_STORE_IN_OPTS];
    switch (op) {
    case OP_FIND: return ops->find(s, coll, q, o, res);
    case OP_EXPLAIN: return ops->explain(s, coll, q, o, res);
    case OP_COUNT: return ops->count(s, coll, q, res);
    case OP_INSERT: return ops->insert(s, coll, &in[DL_STORE_IN_DOCS], res);
    case OP_UPDATE: return ops->update(s, coll, q, u, flag, res);
    case OP_FIND_ONE_AND_UPDATE: return ops->find_one_and_update(s, coll, q, u, o, res);
    case OP_REMOVE: return ops->remove(s, coll, q, flag, res);
    case OP_CREATE_INDEX: return ops->create_index(s, coll, &in[DL_STORE_IN_KEYS], flag, res);
    }
    return dl_store_res_fail(res, DL_EINVAL, "unknown store operation %d", op);
}

/* Every operation on a collection: the collection name, then its inputs
 * checked in DL_STORE_IN_* order, the first refusal answered; then the
 * backend, given the parsed trees. */
static int run_op(dl_store_t *s, int op, const char *coll, const op_in_t *given,
                  dl_store_res_t *res)
{
    dl_doc_arena_t ar = {NULL};
    dl_store_json_t in[DL_STORE_IN_COUNT] = {{0}};
    int rc = 0;
    dl_store_res_reset(res);
    if (check_coll(coll, res) != 0)
        return res->status;
    for (int k = 0; k < DL_STORE_IN_COUNT && rc == 0; k++)
        if (op_inputs[op] & (1u << k))
            rc = take(&ar, k, given->text[k], &in[k], res);
    if (rc == 0)
        rc = call_backend(s, op, coll, in, given->flag, res);
    dl_doc_arena_free(&ar);
    return rc;
}

#define Q DL_STORE_IN_QUERY
#define U DL_STORE_IN_UPDATE
#define O DL_STORE_IN_OPTS

int dl_store_find(dl_store_t *s, const char *coll, const char *query, const char *opts,
                  dl_store_res_t *res)
{
    return run_op(s, OP_FIND, coll, &(op_in_t){.text = {[Q] = query, [O] = opts}}, res);
}

int dl_store_explain(dl_store_t *s, const char *coll, const char *query, const char *opts,
                     dl_store_res_t *res)
{
    return run_op(s, OP_EXPLAIN, coll, &(op_in_t){.text = {[Q] = query, [O] = opts}}, res);
}

int dl_store_count(dl_store_t *s, const char *coll, const char *query, dl_store_res_t *res)
{
    return run_op(s, OP_COUNT, coll, &(op_in_t){.text = {[Q] = query}}, res);
}

int dl_store_insert(dl_store_t *s, const char *coll, const char *docs, dl_store_res_t *res)
{
    return run_op(s, OP_INSERT, coll, &(op_in_t){.text = {[DL_STORE_IN_DOCS] = docs}}, res);
}

int dl_store_update(dl_store_t *s, const char *coll, const char *query, const char *update,
                    int multi, dl_store_res_t *res)
{
    return run_op(s, OP_UPDATE, coll,
                  &(op_in_t){.text = {[Q] = query, [U] = update}, .flag = multi}, res);
}

int dl_store_find_one_and_update(dl_store_t *s, const char *coll, const char *query,
                                 const char *update, const char *opts, dl_store_res_t *res)
{
    return run_op(s, OP_FIND_ONE_AND_UPDATE, coll,
                  &(op_in_t){.text = {[Q] = query, [U] = update, [O] = opts}}, res);
}

int dl_store_remove(dl_store_t *s, const char *coll, const char *query, int multi,
                    dl_store_res_t *res)
{
    return run_op(s, OP_REMOVE, coll, &(op_in_t){.text = {[Q] = query}, .flag = multi}, res);
}

int dl_store_create_index(dl_store_t *s, const char *coll, const char *keys, int unique,
                          dl_store_res_t *res)
{
    return run_op(s, OP_CREATE_INDEX, coll,
                  &(op_in_t){.text = {[DL_STORE_IN_KEYS] = keys}, .flag = unique}, res);
}

#undef Q
#undef U
#undef O

int dl_store_ping(dl_store_t *s, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    return s->ops->ping(s, res);
}

int dl_store_has_files(const dl_store_t *s)
{
    return s != NULL && s->ops->file_put != NULL;
}

int dl_store_file_put(dl_store_t *s, const char *path, const char *filename,
                      const char *content_type, const char *sha256, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    if (s->ops->file_put == NULL)
        return dl_store_res_fail(res, DL_EINVAL, "the %s store keeps no files", s->ops->type);
    return s->ops->file_put(s, path, filename, content_type, sha256, res);
}

int dl_store_file_get(dl_store_t *s, const char *id, const char *dest_path, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    if (s->ops->file_get == NULL)
        return dl_store_res_fail(res, DL_EINVAL, "the %s store keeps no files", s->ops->type);
    return s->ops->file_get(s, id, dest_path, res);
}

int dl_store_file_remove(dl_store_t *s, const char *id, dl_store_res_t *res)
{
    dl_store_res_reset(res);
    if (s->ops->file_remove == NULL)
        return dl_store_res_fail(res, DL_EINVAL, "the %s store keeps no files", s->ops->type);
    return s->ops->file_remove(s, id, res);
}

const char *dl_store_type(const dl_store_t *s)
{
    return s->ops->type;
}

void dl_store_close(dl_store_t *s)
{
    if (s != NULL)
        s->ops->close(s);
}
