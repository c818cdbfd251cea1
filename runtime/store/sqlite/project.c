/*
 * sqlite/project.c - projections: a stored document cut down to the included fields.
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

static void proj_obj(dl_buf_t *b, const dl_doc_t *o, const char *const *ps, const size_t *pl,
                     int np, int top, int keep_id)
{
    int first = 1;
    dl_buf_append_char(b, '{');
    for (size_t k = 0; k < o->n; k++) {
        const char *key = o->keys[k];
        size_t kl = o->klens[k];
        const char *sub[MAX_PROJ_FIELDS];
        size_t subl[MAX_PROJ_FIELDS];
        int whole = 0, nsub = 0;
        if (top && dl_sqlite_is_id_path(key, kl)) {
            whole = keep_id;
        } else if (top && np == 0) {
            whole = !keep_id; /* {"_id": 0} alone: everything else; {"_id": 1}: nothing */
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

int dl_sqlite_append_doc(dl_buf_t *out, const char *doc, size_t len, const qopts_t *o,
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
        return dl_store_res_fail(res, DL_EIO, "stored document is not a JSON object");
    }
    proj_obj(out, v, o->pp, o->pl, o->nproj, 1, o->proj_id);
    dl_doc_arena_free(&ar);
    return 0;
}
