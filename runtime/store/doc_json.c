/*
 * doc_json.c - the store's JSON document tree (doc_json.h): an arena, a
 * strict RFC 8259 parser and a writer. Strings leave through
 * dl_json_put_string(), the runtime's one string writer.
 */
#include "store/doc_json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/internal.h"
#include "common/json_str.h"

#define ARENA_CHUNK 8192
#define MAX_JSON_DEPTH DL_DOC_MAX_DEPTH

void *dl_doc_alloc(dl_doc_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    chunk_t *c = a->head;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = dl_malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void dl_doc_arena_free(dl_doc_arena_t *a)
{
    chunk_t *c = a->head;
    while (c != NULL) {
        chunk_t *next = c->next;
        dl_free(c);
        c = next;
    }
    a->head = NULL;
}

char *dl_doc_strndup(dl_doc_arena_t *a, const char *s, size_t n)
{
    char *p = dl_doc_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}


dl_doc_t *dl_doc_new(dl_doc_arena_t *a, int type)
{
    dl_doc_t *v = dl_doc_alloc(a, sizeof(*v));
    if (v != NULL) {
        memset(v, 0, sizeof(*v));
        v->type = type;
    }
    return v;
}

/* Appends a member (key ignored for arrays); 0 or DL_ENOMEM. */
int dl_doc_push(dl_doc_arena_t *a, dl_doc_t *c, const char *key, size_t klen, dl_doc_t *val)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        dl_doc_t **items = dl_doc_alloc(a, cap * sizeof(*items));
        if (items == NULL)
            return DL_ENOMEM;
        if (c->n > 0)
            memcpy(items, c->items, c->n * sizeof(*items));
        c->items = items;
        if (c->type == DL_DOC_OBJ) {
            const char **keys = dl_doc_alloc(a, cap * sizeof(*keys));
            size_t *klens = dl_doc_alloc(a, cap * sizeof(*klens));
            if (keys == NULL || klens == NULL)
                return DL_ENOMEM;
            if (c->n > 0) {
                memcpy(keys, c->keys, c->n * sizeof(*keys));
                memcpy(klens, c->klens, c->n * sizeof(*klens));
            }
            c->keys = keys;
            c->klens = klens;
        }
        c->cap = cap;
    }
    c->items[c->n] = val;
    if (c->type == DL_DOC_OBJ) {
        c->keys[c->n] = key;
        c->klens[c->n] = klen;
    }
    c->n++;
    return 0;
}

int dl_doc_keq(const char *k, size_t kl, const char *lit)
{
    size_t n = strlen(lit);
    return kl == n && memcmp(k, lit, n) == 0;
}

/* The member named k of object o, or NULL; its index in *idx. */
dl_doc_t *dl_doc_get(const dl_doc_t *o, const char *k, size_t kl, size_t *idx)
{
    if (o == NULL || o->type != DL_DOC_OBJ)
        return NULL;
    for (size_t j = 0; j < o->n; j++) {
        if (o->klens[j] == kl && memcmp(o->keys[j], k, kl) == 0) {
            if (idx != NULL)
                *idx = j;
            return o->items[j];
        }
    }
    return NULL;
}

typedef struct {
    const char *p, *end;
    dl_doc_arena_t *a;
    const char *err;
} jparse_t;

static void skip_ws(jparse_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Parses a string at j->p (a quote); the decoded bytes go to *out, *outlen. */
static int parse_string(jparse_t *j, const char **out, size_t *outlen)
{
    const char *q = j->p + 1;
    while (q < j->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= j->end) {
        j->err = "unterminated string";
        return -1;
    }
    char *o = dl_doc_alloc(j->a, (size_t)(q - j->p) + 1);
    if (o == NULL) {
        j->err = "out of memory";
        return DL_ENOMEM;
    }
    size_t n = 0;
    const char *p = j->p + 1;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) {
            j->err = "control character in string";
            return -1;
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"': o[n++] = '"'; p++; break;
        case '\\': o[n++] = '\\'; p++; break;
        case '/': o[n++] = '/'; p++; break;
        case 'b': o[n++] = '\b'; p++; break;
        case 'f': o[n++] = '\f'; p++; break;
        case 'n': o[n++] = '\n'; p++; break;
        case 'r': o[n++] = '\r'; p++; break;
        case 't': o[n++] = '\t'; p++; break;
        case 'u': {
            /* the store keeps no lone surrogate: it could not be written back as UTF-8 */
            unsigned cp;
            int used = dl_json_read_u(p - 1, q, &cp);
            if (used < 0) {
                j->err = "bad \\u escape";
                return -1;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                j->err = "lone surrogate";
                return -1;
            }
            p += used - 1;
            n += dl_utf8_put(o + n, cp);
            break;
        }
        default:
            j->err = "bad escape";
            return -1;
        }
    }
    o[n] = '\0';
    *out = o;
    *outlen = n;
    j->p = q + 1;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* One or more digits from p: the end of them, or NULL when there is none. */
static const char *digits(const char *p, const char *end)
{
    if (p >= end || !is_digit(*p))
        return NULL;
    while (p < end && is_digit(*p))
        p++;
    return p;
}

static dl_doc_t *parse_number(jparse_t *j)
{
    const char *s = j->p, *p = j->p;
    int frac = 0;
    if (p < j->end && *p == '-')
        p++;
    if (p < j->end && *p == '0')
        p++;
    else
        p = digits(p, j->end);
    if (p != NULL && p < j->end && *p == '.') {
        frac = 1;
        p = digits(p + 1, j->end);
    }
    if (p != NULL && p < j->end && (*p == 'e' || *p == 'E')) {
        frac = 1;
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        p = digits(p, j->end);
    }
    if (p == NULL) {
        j->err = "bad number";
        return NULL;
    }
    dl_doc_t *v = dl_doc_new(j->a, DL_DOC_NUM);
    char *txt = dl_doc_strndup(j->a, s, (size_t)(p - s));
    if (v == NULL || txt == NULL) {
        j->err = "out of memory";
        return NULL;
    }
    v->s = txt;
    v->len = (size_t)(p - s);
    v->d = strtod(txt, NULL);
    if (!frac) {
        errno = 0;
        long long ll = strtoll(txt, NULL, 10);
        if (errno == 0) {
            v->isint = 1;
            v->i = ll;
        }
    }
    j->p = p;
    return v;
}

static dl_doc_t *parse_value(jparse_t *j, int depth)
{
    skip_ws(j);
    if (j->p >= j->end) {
        j->err = "unexpected end of input";
        return NULL;
    }
    if (depth > MAX_JSON_DEPTH) {
        j->err = "nested too deeply";
        return NULL;
    }
    char c = *j->p;
    if (c == '{' || c == '[') {
        dl_doc_t *v = dl_doc_new(j->a, c == '{' ? DL_DOC_OBJ : DL_DOC_ARR);
        char close = c == '{' ? '}' : ']';
        if (v == NULL) {
            j->err = "out of memory";
            return NULL;
        }
        j->p++;
        skip_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return v;
        }
        for (;;) {
            const char *key = NULL;
            size_t klen = 0;
            if (v->type == DL_DOC_OBJ) {
                skip_ws(j);
                if (j->p >= j->end || *j->p != '"') {
                    j->err = "expected a key";
                    return NULL;
                }
                if (parse_string(j, &key, &klen) != 0)
                    return NULL;
                skip_ws(j);
                if (j->p >= j->end || *j->p != ':') {
                    j->err = "expected ':'";
                    return NULL;
                }
                j->p++;
            }
            dl_doc_t *item = parse_value(j, depth + 1);
            if (item == NULL)
                return NULL;
            if (dl_doc_push(j->a, v, key, klen, item) != 0) {
                j->err = "out of memory";
                return NULL;
            }
            skip_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                return v;
            }
            j->err = "expected ',' or a closing bracket";
            return NULL;
        }
    }
    if (c == '"') {
        dl_doc_t *v = dl_doc_new(j->a, DL_DOC_STR);
        if (v == NULL) {
            j->err = "out of memory";
            return NULL;
        }
        if (parse_string(j, &v->s, &v->len) != 0)
            return NULL;
        return v;
    }
    if (c == '-' || is_digit(c))
        return parse_number(j);
    static const struct {
        const char *lit;
        int type;
    } lits[] = {{"true", DL_DOC_TRUE}, {"false", DL_DOC_FALSE}, {"null", DL_DOC_NULL}};
    for (size_t k = 0; k < DL_ARRAY_SIZE(lits); k++) {
        size_t n = strlen(lits[k].lit);
        if ((size_t)(j->end - j->p) >= n && memcmp(j->p, lits[k].lit, n) == 0) {
            j->p += n;
            dl_doc_t *v = dl_doc_new(j->a, lits[k].type);
            if (v == NULL)
                j->err = "out of memory";
            return v;
        }
    }
    j->err = "unexpected character";
    return NULL;
}

dl_doc_t *dl_doc_parse(dl_doc_arena_t *a, const char *text, const char *dflt, const char *what,
                       char *err, size_t errlen)
{
    if (text == NULL || text[0] == '\0')
        text = dflt;
    if (text == NULL) {
        dl_err_format(err, errlen, 0, "%s: missing JSON", what);
        return NULL;
    }
    jparse_t j = {text, text + strlen(text), a, NULL};
    dl_doc_t *v = parse_value(&j, 0);
    if (v != NULL) {
        skip_ws(&j);
        if (j.p != j.end) {
            v = NULL;
            j.err = "trailing characters";
        }
    }
    if (v == NULL)
        dl_err_format(err, errlen, 0, "%s: malformed JSON (%s at offset %zu)", what,
                      j.err ? j.err : "error", (size_t)(j.p - text));
    return v;
}

/* The shared writer: documents stored before it (or written by another
 * program) may hold bytes that are not UTF-8, and they leave as U+FFFD. */
static void ser_str(dl_buf_t *b, const char *s, size_t n)
{
    dl_json_put_string(b, s, n);
}

void dl_doc_write(dl_buf_t *b, const dl_doc_t *v)
{
    switch (v->type) {
    case DL_DOC_NULL: dl_buf_append(b, "null", 4); break;
    case DL_DOC_FALSE: dl_buf_append(b, "false", 5); break;
    case DL_DOC_TRUE: dl_buf_append(b, "true", 4); break;
    case DL_DOC_NUM: dl_buf_append(b, v->s, v->len); break;
    case DL_DOC_STR: ser_str(b, v->s, v->len); break;
    case DL_DOC_ARR:
        dl_buf_append_char(b, '[');
        for (size_t k = 0; k < v->n; k++) {
            if (k > 0)
                dl_buf_append_char(b, ',');
            dl_doc_write(b, v->items[k]);
        }
        dl_buf_append_char(b, ']');
        break;
    default:
        dl_buf_append_char(b, '{');
        for (size_t k = 0; k < v->n; k++) {
            if (k > 0)
                dl_buf_append_char(b, ',');
            ser_str(b, v->keys[k], v->klens[k]);
            dl_buf_append_char(b, ':');
            dl_doc_write(b, v->items[k]);
        }
        dl_buf_append_char(b, '}');
    }
}
dl_doc_t *dl_doc_parse_stored(dl_doc_arena_t *a, const char *s, size_t len)
{
    jparse_t j = {s, s + len, a, NULL};
    return parse_value(&j, 0);
}
