/*
 * sqlite/index.c - create_index: expression indexes over the json_extract() text the query
 * compiler emits, plus the partial index of documents holding arrays.
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

int dl_sqlite_create_index(dl_store_t *st_, const char *coll, const dl_store_json_t *keys,
                           int unique, dl_store_res_t *res)
{
    sqlite_store_t *s = dl_sqlite_write_open(st_, coll, res);
    if (s == NULL)
        return res->status;
    dl_buf_t name = DL_BUF_INIT, cols = DL_BUF_INIT, sql = DL_BUF_INIT;
    qopts_t o; /* the keys parse as a sort */
    memset(&o, 0, sizeof(o));
    dl_sqlite_add_sorts(&o, keys->doc); /* a sort the front checked, with at least one key */
    dl_buf_appendf(&name, "ix_%s", coll);
    for (int k = 0; k < o.nsort; k++) {
        dl_buf_appendf(&name, "_%.*s_%d", (int)o.sl[k], o.sp[k], o.sdir[k]);
        if (k > 0)
            dl_buf_append_str(&cols, ", ");
        if (dl_sqlite_is_id_path(o.sp[k], o.sl[k]))
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
        if (dl_sqlite_is_id_path(o.sp[k], o.sl[k]))
            continue;
        dl_buf_appendf(&sql, " CREATE INDEX IF NOT EXISTS \"ixa_%s_%.*s\" ON \"c_%s\" (id) "
                       "WHERE json_type(doc, '$.%.*s') = 'array';", coll, (int)o.sl[k],
                       o.sp[k], coll, (int)o.sl[k], o.sp[k]);
    }
    dl_buf_append_char(&sql, '\0');
    if (dl_sqlite_fail_oom_or(res, &sql) != 0 || dl_sqlite_fail_oom_or(res, &name) != 0 ||
        dl_sqlite_fail_oom_or(res, &cols) != 0)
        goto out;
    if (dl_sqlite_write_begin(s, res) != 0)
        goto out;
    int rc = sqlite3_exec(s->writer.db, sql.data, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        dl_sqlite_sql_fail(res, &s->writer, rc);
    dl_sqlite_write_end(s, res);
    if (res->status == 0) {
        dl_buf_append_char(&res->json, '"');
        dl_buf_append(&res->json, name.data, name.len);
        dl_buf_append_char(&res->json, '"');
    }
out:
    dl_buf_free(&name);
    dl_buf_free(&cols);
    dl_buf_free(&sql);
    return res->status;
}
