/*
 * router.c - maps a method and a request path to the route registered for it.
 *
 * Patterns are split on '/' and stored in a trie with one node per segment.
 * A node has literal children (an edge array sorted by length and hash, and
 * searched by binary search, so hundreds of siblings cost a handful of integer
 * compares), at most one ":param" child and one list of routes ending in a
 * wildcard after it. Routes that end at the same node have the same shape,
 * perhaps with other param names, and are kept in a short list: one entry per
 * dl_router_add, holding its methods, data, pattern and param names in a
 * single allocation. Matching walks the path a segment at a time, trying
 * literal, then param, then wildcard, and backtracks when a branch dead-ends.
 * A node is only reached through its parent and always at the same depth, so
 * a match visits each node at most once: the worst case is linear in the
 * trie, never exponential, and the walk allocates nothing.
 */
#include "core/router.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/internal.h"

typedef struct node_s node_t;
typedef struct entry_s entry_t;

typedef struct {
    const char *name;
    size_t len;
} pname_t;

/* One dl_router_add: the pattern text follows names[] in the same block. */
struct entry_s {
    entry_t *next;     /* next route ending at the same place */
    entry_t *next_all; /* registration order, for foreach and free */
    void *data;
    const char *pattern;
    unsigned methods;
    int n_params;
    pname_t names[];
};

/* A literal child. Lookups only need equality, so edges are sorted by (len,
 * hash, bytes): a binary search compares within the edge array and reads the
 * child's text only to confirm the hit. */
typedef struct {
    uint32_t len;
    uint32_t hash;
    node_t *node;
} edge_t;

struct node_s {
    edge_t *lits; /* sorted by (len, bytes) */
    node_t *param;
    entry_t *entries; /* routes ending at this node */
    entry_t *wild;    /* routes ending in a wildcard right after this node */
    uint32_t n_lits;
    uint32_t cap_lits;
    char seg[]; /* the literal segment leading here; empty for the root and params */
};

struct dl_router_s {
    node_t *root;
    entry_t *first;
    entry_t *last;
};

static const char splat_name[] = "splat";

/* ---- methods ------------------------------------------------------------------------------ */

static const char *const method_names[] = {"GET",   "HEAD",   "POST",   "PUT",
                                           "PATCH", "DELETE", "OPTIONS"};

int dl_method_from_name(const char *s, size_t len)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(method_names); i++) {
        if (strlen(method_names[i]) == len && memcmp(method_names[i], s, len) == 0)
            return 1 << i;
    }
    return 0;
}

const char *dl_method_name(int m)
{
    for (size_t i = 0; i < DL_ARRAY_SIZE(method_names); i++) {
        if (m == 1 << i)
            return method_names[i];
    }
    return NULL;
}

/* Writes "GET, HEAD" for a mask into out (size >= 48 holds every method). */
static void mask_text(unsigned mask, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < DL_ARRAY_SIZE(method_names); i++) {
        if ((mask & (1u << i)) == 0)
            continue;
        int w = snprintf(out + n, size - n, "%s%s", n ? ", " : "", method_names[i]);
        if (w < 0 || (size_t)w >= size - n)
            return;
        n += (size_t)w;
    }
}

int dl_router_allow(unsigned allowed, dl_buf_t *out)
{
    char text[64];
    mask_text(allowed, text, sizeof(text));
    return dl_buf_append(out, text, strlen(text));
}

/* ---- trie nodes --------------------------------------------------------------------------- */

/* Segments are short: FNV-1a (inline) costs a few cycles per byte. */
static inline uint32_t seg_hash(const char *s, size_t len)
{
    return dl_fnv1a(s, len);
}

static int edge_cmp(const edge_t *e, const char *s, size_t len, uint32_t hash)
{
    if (e->len != len)
        return e->len < len ? -1 : 1;
    if (e->hash != hash)
        return e->hash < hash ? -1 : 1;
    return memcmp(e->node->seg, s, len);
}

/* Binary search: returns the index of the segment, or where it would go. */
static size_t lit_search(const node_t *n, const char *s, size_t len, uint32_t hash, int *found)
{
    size_t lo = 0, hi = n->n_lits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = edge_cmp(&n->lits[mid], s, len, hash);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static node_t *node_new(const char *seg, size_t len)
{
    node_t *n = dl_calloc(1, sizeof(*n) + len + 1);
    if (n != NULL && len > 0)
        memcpy(n->seg, seg, len);
    return n;
}

static void node_free(node_t *n)
{
    if (n == NULL)
        return;
    for (uint32_t i = 0; i < n->n_lits; i++)
        node_free(n->lits[i].node);
    node_free(n->param);
    dl_free(n->lits);
    dl_free(n);
}

/* Finds or creates the literal child for a segment; NULL when out of memory. */
static node_t *lit_child(node_t *n, const char *s, size_t len)
{
    uint32_t hash = seg_hash(s, len);
    int found;
    size_t i = lit_search(n, s, len, hash, &found);
    if (found)
        return n->lits[i].node;
    if (n->n_lits == n->cap_lits) {
        /* Grow by half rather than doubling: many nodes have a few children and
         * memory matters more than the rare insert. */
        uint32_t cap = n->cap_lits < 2 ? n->cap_lits + 1 : n->cap_lits + n->cap_lits / 2;
        edge_t *lits = dl_realloc(n->lits, cap * sizeof(*lits));
        if (lits == NULL)
            return NULL;
        n->lits = lits;
        n->cap_lits = cap;
    }
    node_t *c = node_new(s, len);
    if (c == NULL)
        return NULL;
    memmove(&n->lits[i + 1], &n->lits[i], (n->n_lits - i) * sizeof(*n->lits));
    n->lits[i].len = (uint32_t)len;
    n->lits[i].hash = hash;
    n->lits[i].node = c;
    n->n_lits++;
    return c;
}

static node_t *param_child(node_t *n)
{
    if (n->param == NULL)
        n->param = node_new(NULL, 0);
    return n->param;
}

/* ---- router ------------------------------------------------------------------------------- */

dl_router_t *dl_router_new(void)
{
    dl_router_t *r = dl_calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->root = node_new(NULL, 0);
    if (r->root == NULL) {
        dl_free(r);
        return NULL;
    }
    return r;
}

void dl_router_free(dl_router_t *r)
{
    if (r == NULL)
        return;
    entry_t *e = r->first;
    while (e != NULL) {
        entry_t *next = e->next_all;
        dl_free(e);
        e = next;
    }
    node_free(r->root);
    dl_free(r);
}

DL_TEST_HOOK void dl_router_foreach(const dl_router_t *r,
                       void (*fn)(unsigned methods, const char *pattern, void *data, void *arg),
                       void *arg)
{
    for (const entry_t *e = r->first; e != NULL; e = e->next_all)
        fn(e->methods, e->pattern, e->data, arg);
}

static int is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

static int is_literal_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != '?' && c != '#';
}

/* Checks a pattern and collects its param names (pointing into pattern). */
static int parse_pattern(const char *pattern, size_t len, pname_t *names, int *n_names,
                         char *err, size_t errlen)
{
    const char *end = pattern + len;
    int n = 0;

    if (len == 0 || pattern[0] != '/')
        return dl_err_format(err, errlen, DL_EINVAL, "route pattern must start with '/': \"%s\"",
                             pattern);
    if (len > DL_ROUTER_MAX_PATTERN)
        return dl_err_format(err, errlen, DL_EINVAL,
                             "route pattern longer than %d bytes: \"%.40s...\"",
                             DL_ROUTER_MAX_PATTERN, pattern);
    for (const char *p = pattern + 1;;) {
        const char *se = memchr(p, '/', (size_t)(end - p));
        if (se == NULL)
            se = end;
        if (p < se && (*p == ':' || *p == '*')) {
            const char *name = p + 1;
            size_t nl = (size_t)(se - name);
            if (*p == '*' && se != end)
                return dl_err_format(err, errlen, DL_EINVAL,
                                     "route pattern \"%s\": wildcard must be the last segment",
                                     pattern);
            if (*p == '*' && nl == 0) {
                name = splat_name;
                nl = sizeof(splat_name) - 1;
            } else if (nl == 0) {
                return dl_err_format(err, errlen, DL_EINVAL,
                                     "route pattern \"%s\": empty param name", pattern);
            }
            for (size_t i = 0; name != splat_name && i < nl; i++) {
                if (!is_name_char((unsigned char)name[i]))
                    return dl_err_format(err, errlen, DL_EINVAL,
                                         "route pattern \"%s\": bad character '%c' in param name",
                                         pattern, name[i]);
            }
            if (n == DL_ROUTER_MAX_PARAMS)
                return dl_err_format(err, errlen, DL_EINVAL,
                                     "route pattern \"%s\": more than %d params", pattern,
                                     DL_ROUTER_MAX_PARAMS);
            for (int i = 0; i < n; i++) {
                if (names[i].len == nl && memcmp(names[i].name, name, nl) == 0)
                    return dl_err_format(err, errlen, DL_EINVAL,
                                         "route pattern \"%s\": param \"%.*s\" appears twice",
                                         pattern, (int)nl, name);
            }
            names[n].name = name;
            names[n].len = nl;
            n++;
        } else {
            for (const char *c = p; c < se; c++) {
                if (!is_literal_char((unsigned char)*c))
                    return dl_err_format(err, errlen, DL_EINVAL,
                                         "route pattern \"%s\": bad byte 0x%02x", pattern,
                                         (unsigned char)*c);
            }
        }
        if (se == end)
            break;
        p = se + 1;
    }
    *n_names = n;
    return 0;
}

int dl_router_add(dl_router_t *r, unsigned methods, const char *pattern, void *data, char *err,
                  size_t errlen)
{
    pname_t names[DL_ROUTER_MAX_PARAMS];
    int n_names = 0;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (pattern == NULL)
        return dl_err_format(err, errlen, DL_EINVAL, "route pattern is NULL");
    if (methods == 0 || (methods & ~(unsigned)DL_M_ALL) != 0)
        return dl_err_format(err, errlen, DL_EINVAL, "route \"%s\": bad method mask 0x%x", pattern,
                             methods);
    size_t len = strlen(pattern);
    int rc = parse_pattern(pattern, len, names, &n_names, err, errlen);
    if (rc != 0)
        return rc;

    /* The entry is built before the trie is touched; the nodes copy their own
     * segments, so a failure below can free it without leaving dangling text. */
    size_t head = sizeof(entry_t) + (size_t)n_names * sizeof(pname_t);
    entry_t *e = dl_malloc(head + len + 1);
    if (e == NULL)
        return dl_err_format(err, errlen, DL_ENOMEM, "route \"%s\": out of memory", pattern);
    char *copy = (char *)e + head;
    memcpy(copy, pattern, len + 1);
    e->next = e->next_all = NULL;
    e->data = data;
    e->pattern = copy;
    e->methods = methods;
    e->n_params = n_names;
    for (int i = 0; i < n_names; i++) {
        e->names[i].len = names[i].len;
        e->names[i].name =
            names[i].name == splat_name ? splat_name : copy + (names[i].name - pattern);
    }

    /* Walk or grow the trie; parse_pattern has vetted every segment. An OOM
     * here may leave empty nodes behind, which match nothing. */
    node_t *n = r->root;
    entry_t **list = NULL;
    const char *end = copy + len;
    for (const char *p = copy + 1;;) {
        const char *se = memchr(p, '/', (size_t)(end - p));
        if (se == NULL)
            se = end;
        if (p < se && *p == '*') {
            list = &n->wild;
            break;
        }
        n = (p < se && *p == ':') ? param_child(n) : lit_child(n, p, (size_t)(se - p));
        if (n == NULL) {
            dl_free(e);
            return dl_err_format(err, errlen, DL_ENOMEM, "route \"%s\": out of memory", pattern);
        }
        if (se == end) {
            list = &n->entries;
            break;
        }
        p = se + 1;
    }

    entry_t **tail = list;
    for (entry_t *o = *list; o != NULL; o = o->next) {
        if ((o->methods & methods) != 0) {
            char text[64];
            mask_text(o->methods & methods, text, sizeof(text));
            rc = dl_err_format(err, errlen, DL_EROUTE,
                               "route conflict: %s \"%s\" is already registered as \"%s\"", text,
                               pattern, o->pattern);
            dl_free(e);
            return rc;
        }
        tail = &o->next;
    }
    *tail = e;
    if (r->last != NULL)
        r->last->next_all = e;
    else
        r->first = e;
    r->last = e;
    return 0;
}

/* ---- matching ----------------------------------------------------------------------------- */

typedef struct {
    dl_route_match_t *m;
    unsigned method;
    unsigned allowed; /* methods of the routes that matched the path but not the method */
    int n;            /* params captured so far */
} walk_t;

/* The path ends here: picks the route taking the method from a list. */
static int terminal(const entry_t *list, walk_t *w)
{
    const entry_t *hit = NULL, *get = NULL;
    unsigned all = 0;
    for (const entry_t *e = list; e != NULL; e = e->next) {
        if ((e->methods & w->method) != 0) {
            hit = e;
            break;
        }
        if ((e->methods & DL_M_GET) != 0)
            get = e;
        all |= e->methods;
    }
    if (hit == NULL && w->method == DL_M_HEAD)
        hit = get;
    if (hit == NULL) {
        if ((all & DL_M_GET) != 0)
            all |= DL_M_HEAD;
        w->allowed |= all;
        return 0;
    }
    DL_ASSERT(hit->n_params == w->n);
    dl_route_match_t *m = w->m;
    m->data = hit->data;
    m->pattern = hit->pattern;
    m->n_params = hit->n_params;
    for (int i = 0; i < hit->n_params; i++) {
        m->params[i].name = hit->names[i].name;
        m->params[i].name_len = hit->names[i].len;
    }
    return 1;
}

/* p starts the segment to match at node n (just after a '/'). */
static int walk(const node_t *n, const char *p, const char *end, walk_t *w)
{
    /* Find the segment's end and hash it (dl_fnv1a's steps) in one pass. */
    uint32_t hash = DL_FNV_BASIS;
    const char *se = p;
    while (se < end && *se != '/') {
        hash = (hash ^ (unsigned char)*se) * DL_FNV_PRIME;
        se++;
    }
    size_t sl = (size_t)(se - p);

    if (n->n_lits > 0 && sl <= DL_ROUTER_MAX_PATTERN) {
        int found;
        size_t i = lit_search(n, p, sl, hash, &found);
        if (found) {
            const node_t *c = n->lits[i].node;
            if (se == end ? terminal(c->entries, w) : walk(c, se + 1, end, w))
                return 1;
        }
    }
    if (n->param != NULL && sl > 0) {
        /* A trie path is a prefix of a valid pattern, so it holds few enough params. */
        DL_ASSERT(w->n < DL_ROUTER_MAX_PARAMS);
        w->m->params[w->n].value = p;
        w->m->params[w->n].value_len = sl;
        w->n++;
        if (se == end ? terminal(n->param->entries, w) : walk(n->param, se + 1, end, w))
            return 1;
        w->n--;
    }
    if (n->wild != NULL) {
        DL_ASSERT(w->n < DL_ROUTER_MAX_PARAMS);
        w->m->params[w->n].value = p;
        w->m->params[w->n].value_len = (size_t)(end - p);
        w->n++;
        if (terminal(n->wild, w))
            return 1;
        w->n--;
    }
    return 0;
}

int dl_router_match(const dl_router_t *r, int method, const char *path, size_t len,
                    dl_route_match_t *m)
{
    walk_t w;
    m->data = NULL;
    m->pattern = NULL;
    m->n_params = 0;
    m->allowed = 0;
    if (path == NULL || len == 0 || path[0] != '/')
        return DL_ROUTE_NOT_FOUND;
    w.m = m;
    w.method = (unsigned)method;
    w.allowed = 0;
    w.n = 0;
    if (walk(r->root, path + 1, path + len, &w))
        return DL_ROUTE_FOUND;
    if (w.allowed != 0) {
        m->allowed = w.allowed;
        return DL_ROUTE_METHOD_NOT_ALLOWED;
    }
    return DL_ROUTE_NOT_FOUND;
}
