/*
 * hdr_lines.h - walks "Name: value\r\n" lines: a handler's own header lines
 * (dl_resp_t.headers), an outbound request's extra lines. One reader for
 * every layer that holds such text.
 */
#ifndef DL_HDR_LINES_H
#define DL_HDR_LINES_H

#include <stddef.h>

typedef struct {
    const char *p, *end;
} dl_hdr_lines_t;

static inline void dl_hdr_lines_init(dl_hdr_lines_t *it, const char *lines, size_t len)
{
    it->p = lines;
    it->end = lines ? lines + len : lines;
}

/**
 * The next line with a name: the name, and the value without the spaces and
 * tabs around it. Returns 0 when none is left. Borrows from the lines.
 */
int dl_hdr_lines_next(dl_hdr_lines_t *it, const char **name, size_t *nlen, const char **value,
                      size_t *vlen);

#endif
