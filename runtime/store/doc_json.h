/*
 * doc_json.h - the store's JSON document tree: an arena per operation and a
 * parsed value (dl_doc_t) the front validates and the SQLite backend compiles
 * and updates. Strings are written by common/json_str.c.
 */
#ifndef DL_STORE_DOC_JSON_H
#define DL_STORE_DOC_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define DL_DOC_MAX_DEPTH 100 /* = DL_CODEC_BODY_DEPTH: what a request body may nest */

typedef struct chunk_s {
    struct chunk_s *next;
    size_t used;
    size_t cap;
    size_t pad;
    char data[];
} chunk_t;

typedef struct {
    chunk_t *head;
} dl_doc_arena_t;

enum { DL_DOC_NULL, DL_DOC_FALSE, DL_DOC_TRUE, DL_DOC_NUM, DL_DOC_STR, DL_DOC_ARR, DL_DOC_OBJ };

typedef struct dl_doc_s {
    int type;
    int isint;           /* DL_DOC_NUM: i holds the exact value */
    const char *s;       /* DL_DOC_STR: decoded bytes; DL_DOC_NUM: the number's JSON text */
    size_t len;
    int64_t i;
    double d;
    size_t n, cap;       /* DL_DOC_ARR, DL_DOC_OBJ: members */
    struct dl_doc_s **items;
    const char **keys;   /* DL_DOC_OBJ: decoded keys */
    size_t *klens;
} dl_doc_t;

/* Arena memory (never NULL-terminated, never freed alone); NULL on OOM. */
void *dl_doc_alloc(dl_doc_arena_t *a, size_t n);
void dl_doc_arena_free(dl_doc_arena_t *a);
char *dl_doc_strndup(dl_doc_arena_t *a, const char *s, size_t n);
dl_doc_t *dl_doc_new(dl_doc_arena_t *a, int type);
/* Appends a member (key ignored for arrays); 0 or DL_ENOMEM. */
int dl_doc_push(dl_doc_arena_t *a, dl_doc_t *c, const char *key, size_t klen, dl_doc_t *val);
/* k (kl bytes) equals the NUL-terminated lit. */
int dl_doc_keq(const char *k, size_t kl, const char *lit);
/* The member named k of object o, or NULL; its index in *idx. */
dl_doc_t *dl_doc_get(const dl_doc_t *o, const char *k, size_t kl, size_t *idx);
/* Parses NUL-terminated text; NULL or "" parse as dflt (NULL: an error).
 * Missing or malformed text (or no memory) is NULL with a message naming what
 * in err (the callers' DL_EINVAL). */
dl_doc_t *dl_doc_parse(dl_doc_arena_t *a, const char *text, const char *dflt, const char *what,
                       char *err, size_t errlen);
/* One value from a stored document (len bytes, no NUL needed, what follows it
 * ignored): NULL when it does not parse. */
dl_doc_t *dl_doc_parse_stored(dl_doc_arena_t *a, const char *s, size_t len);
/* Appends v as compact JSON. */
void dl_doc_write(dl_buf_t *b, const dl_doc_t *v);

#endif
