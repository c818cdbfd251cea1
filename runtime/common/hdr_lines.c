/*
 * hdr_lines.c - the reader of "Name: value\r\n" lines (hdr_lines.h).
 */
#include "common/hdr_lines.h"

#include <string.h>

int dl_hdr_lines_next(dl_hdr_lines_t *it, const char **name, size_t *nlen, const char **value,
                      size_t *vlen)
{
    while (it->p && it->p < it->end) {
        const char *p = it->p;
        const char *eol = memchr(p, '\n', (size_t)(it->end - p));
        const char *line_end = eol ? eol : it->end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        it->p = line_end + 1;
        if (colon == NULL || colon == p)
            continue;
        const char *v = colon + 1, *ve = line_end;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *name = p;
        *nlen = (size_t)(colon - p);
        *value = v;
        *vlen = (size_t)(ve - v);
        return 1;
    }
    return 0;
}
