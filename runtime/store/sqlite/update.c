/*
 * sqlite/update.c - updates: $set, $inc, $unset and $push applied to a document tree.
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
                return dl_store_res_fail(res, DL_ENOMEM, "out of memory");
        } else if (child->type != DL_DOC_OBJ) {
            if (!create)
                return 0;
            return dl_store_res_fail(res, DL_EINVAL,
                                     "cannot create field %.*s: %.*s is not an object", (int)plen,
                                     path, (int)(dot - path), path);
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

int dl_sqlite_upd_apply(dl_doc_arena_t *a, dl_doc_t *doc, const dl_doc_t *u, dl_store_res_t *res)
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
                    return dl_store_res_fail(res, DL_EINVAL,
                                             "$inc on %.*s: the field is not a number", (int)fl, f);
                nv = cur != NULL ? num_add(a, cur, val) : jv_copy(a, val);
                if (nv == NULL && cur != NULL)
                    return dl_store_res_fail(res, DL_EINVAL, "$inc on %.*s: result out of range",
                                             (int)fl, f);
            } else {
                if (cur != NULL && cur->type != DL_DOC_ARR)
                    return dl_store_res_fail(
                        res, DL_EINVAL, "$push on %.*s: the field is not an array", (int)fl, f);
                nv = cur != NULL ? cur : dl_doc_new(a, DL_DOC_ARR);
                dl_doc_t *item = nv != NULL ? jv_copy(a, val) : NULL;
                if (item == NULL || dl_doc_push(a, nv, NULL, 0, item) != 0)
                    nv = NULL;
            }
            if (nv == NULL || obj_set(a, parent, key, kl, nv) != 0)
                return dl_store_res_fail(res, DL_ENOMEM, "out of memory");
        }
    }
    return 0;
}
