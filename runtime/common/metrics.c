/*
 * metrics.c - the Prometheus metrics registry behind /metrics and /stats.
 * Every metric keeps one slot per worker plus a shared slot for other threads.
 * A slot owns its series: a worker finds a series through a small
 * open-addressing hash table that only it touches, and updates the values
 * with relaxed 64-bit atomic stores (one writer per slot, so no read-modify-
 * write is needed). Each new series is also pushed onto the slot's append-only
 * list with a release store; the scraper walks those lists with acquire loads
 * and never looks at the hash tables, so rendering takes no lock that a worker
 * could wait on. Definitions are published the same way, in a fixed array.
 */
#include "common/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/num.h"

/* ------------------------------------------------------------------------ */
/* Data                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct series_s series_t;
struct series_s {
    series_t *next;            /* older series of the slot; immutable once published */
    uint64_t hash;             /* of the label values, see hash_values() */
    char *key;                 /* the label values, each NUL-terminated, back to back */
    size_t key_len;            /* bytes in key, terminators included */
    _Atomic uint64_t value;    /* bits of a double: counter/gauge value or histogram sum */
    _Atomic uint64_t counts[]; /* histograms: n_buckets + 1 non-cumulative counts */
};

typedef struct {
    _Atomic(series_t *) head; /* the scraper's view: newest first */
    series_t **tab;           /* open addressing; touched by the slot's writer only */
    uint32_t cap;             /* 0 or a power of two */
    uint32_t count;
} slot_t;

typedef struct {
    int type;
    int n_labels;
    int n_buckets;
    char *name;
    char *help;
    char **labels;
    double *buckets;
    slot_t slots[]; /* n_workers + 1 */
} metric_t;

struct dl_metrics_s {
    int n_workers;
    uint32_t series_cap;
    pthread_mutex_t define_lock;
    pthread_mutex_t shared_lock; /* writers of the shared slot */
    _Atomic int n_defs;
    _Atomic uint64_t overflow;
    _Atomic(metric_t *) defs[DL_METRICS_MAX_DEFS];
};

static const double default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

/* Doubles live in 64-bit atomics so a reader never sees half a store. */
static inline double load_d(_Atomic uint64_t *p)
{
    uint64_t u = atomic_load_explicit(p, memory_order_relaxed);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline void store_d(_Atomic uint64_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    atomic_store_explicit(p, u, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Registry and definitions                                                 */
/* ------------------------------------------------------------------------ */

dl_metrics_t *dl_metrics_new(int n_workers)
{
    if (n_workers < 0)
        return NULL;
    dl_metrics_t *m = dl_calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->n_workers = n_workers;
    m->series_cap = DL_METRICS_DEFAULT_SERIES_CAP;
    pthread_mutex_init(&m->define_lock, NULL);
    pthread_mutex_init(&m->shared_lock, NULL);
    atomic_init(&m->n_defs, 0);
    atomic_init(&m->overflow, 0);
    for (int i = 0; i < DL_METRICS_MAX_DEFS; i++)
        atomic_init(&m->defs[i], NULL);
    return m;
}

static void metric_free(metric_t *mt, int n_slots)
{
    if (mt == NULL)
        return;
    for (int i = 0; i < n_slots; i++) {
        series_t *s = atomic_load_explicit(&mt->slots[i].head, memory_order_relaxed);
        while (s != NULL) {
            series_t *next = s->next;
            dl_free(s);
            s = next;
        }
        dl_free(mt->slots[i].tab);
    }
    if (mt->labels != NULL) {
        for (int i = 0; i < mt->n_labels; i++)
            dl_free(mt->labels[i]);
        dl_free(mt->labels);
    }
    dl_free(mt->buckets);
    dl_free(mt->help);
    dl_free(mt->name);
    dl_free(mt);
}

void dl_metrics_free(dl_metrics_t *m)
{
    if (m == NULL)
        return;
    int n = atomic_load_explicit(&m->n_defs, memory_order_acquire);
    for (int i = 0; i < n; i++)
        metric_free(atomic_load_explicit(&m->defs[i], memory_order_acquire), m->n_workers + 1);
    pthread_mutex_destroy(&m->define_lock);
    pthread_mutex_destroy(&m->shared_lock);
    dl_free(m);
}

DL_TEST_HOOK void dl_metrics_set_series_cap(dl_metrics_t *m, int cap)
{
    m->series_cap = cap < 1 ? DL_METRICS_DEFAULT_SERIES_CAP : (uint32_t)cap;
}

uint64_t dl_metrics_overflow(const dl_metrics_t *m)
{
    return atomic_load_explicit(&((dl_metrics_t *)m)->overflow, memory_order_relaxed);
}

/* Metric names allow ':', label names do not (Prometheus data model). */
static int valid_name(const char *s, int colon)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* True when name a is histogram b's name plus one of its sample suffixes. */
static int is_hist_sample(const char *a, const char *b)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t bl = strlen(b);
    if (strncmp(a, b, bl) != 0)
        return 0;
    for (size_t i = 0; i < DL_ARRAY_SIZE(suffixes); i++) {
        if (strcmp(a + bl, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

static int same_definition(const metric_t *mt, int type, const char *const *labels, int n_labels,
                           const double *buckets, int n_buckets)
{
    if (mt->type != type || mt->n_labels != n_labels || mt->n_buckets != n_buckets)
        return 0;
    for (int i = 0; i < n_labels; i++) {
        if (strcmp(mt->labels[i], labels[i]) != 0)
            return 0;
    }
    for (int i = 0; i < n_buckets; i++) {
        if (mt->buckets[i] != buckets[i])
            return 0;
    }
    return 1;
}

static metric_t *metric_alloc(int n_slots, int type, const char *name, const char *help,
                              const char *const *labels, int n_labels, const double *buckets,
                              int n_buckets)
{
    metric_t *mt = dl_calloc(1, sizeof *mt + (size_t)n_slots * sizeof(slot_t));
    if (mt == NULL)
        return NULL;
    for (int i = 0; i < n_slots; i++)
        atomic_init(&mt->slots[i].head, NULL);
    mt->type = type;
    mt->name = dl_strdup(name);
    mt->help = dl_strdup(help != NULL ? help : "");
    if (mt->name == NULL || mt->help == NULL)
        goto fail;
    if (n_labels > 0) {
        mt->labels = dl_calloc((size_t)n_labels, sizeof(char *));
        if (mt->labels == NULL)
            goto fail;
        mt->n_labels = n_labels;
        for (int i = 0; i < n_labels; i++) {
            mt->labels[i] = dl_strdup(labels[i]);
            if (mt->labels[i] == NULL)
                goto fail;
        }
    }
    if (n_buckets > 0) {
        mt->buckets = dl_malloc((size_t)n_buckets * sizeof(double));
        if (mt->buckets == NULL)
            goto fail;
        memcpy(mt->buckets, buckets, (size_t)n_buckets * sizeof(double));
    }
    mt->n_buckets = n_buckets;
    return mt;
fail:
    metric_free(mt, n_slots);
    return NULL;
}

int dl_metric_define(dl_metrics_t *m, int type, const char *name, const char *help,
                     const char *const *labels, int n_labels, const double *buckets,
                     int n_buckets)
{
    if (m == NULL || !valid_name(name, 1))
        return DL_EINVAL;
    if (type != DL_METRIC_COUNTER && type != DL_METRIC_GAUGE && type != DL_METRIC_HISTOGRAM)
        return DL_EINVAL;
    if (n_labels < 0 || n_labels > DL_METRICS_MAX_LABELS || (n_labels > 0 && labels == NULL))
        return DL_EINVAL;
    for (int i = 0; i < n_labels; i++) {
        if (!valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0)
            return DL_EINVAL;
        if (type == DL_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return DL_EINVAL;
        for (int j = 0; j < i; j++) {
            if (strcmp(labels[i], labels[j]) == 0)
                return DL_EINVAL;
        }
    }
    if (n_buckets < 0 || (n_buckets > 0 && buckets == NULL))
        return DL_EINVAL;
    if (type != DL_METRIC_HISTOGRAM) {
        if (n_buckets > 0)
            return DL_EINVAL;
    } else if (n_buckets == 0) {
        buckets = default_buckets;
        n_buckets = (int)DL_ARRAY_SIZE(default_buckets);
    } else {
        if (isinf(buckets[n_buckets - 1]) && buckets[n_buckets - 1] > 0)
            n_buckets--; /* the implicit +Inf, spelled out */
        if (n_buckets > DL_METRICS_MAX_BUCKETS)
            return DL_EINVAL;
        for (int i = 0; i < n_buckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return DL_EINVAL;
        }
    }

    int rc;
    pthread_mutex_lock(&m->define_lock);
    int n = atomic_load_explicit(&m->n_defs, memory_order_relaxed);
    for (int i = 0; i < n; i++) {
        metric_t *mt = atomic_load_explicit(&m->defs[i], memory_order_relaxed);
        if (strcmp(mt->name, name) == 0) {
            int same = same_definition(mt, type, labels, n_labels, buckets, n_buckets);
            rc = same ? i : DL_EINVAL;
            goto out;
        }
        /* A histogram's samples must not clash with another metric's name. */
        if ((mt->type == DL_METRIC_HISTOGRAM && is_hist_sample(name, mt->name)) ||
            (type == DL_METRIC_HISTOGRAM && is_hist_sample(mt->name, name))) {
            rc = DL_EINVAL;
            goto out;
        }
    }
    if (n >= DL_METRICS_MAX_DEFS) {
        rc = DL_ENOMEM;
        goto out;
    }
    metric_t *mt = metric_alloc(m->n_workers + 1, type, name, help, labels, n_labels, buckets,
                                n_buckets);
    if (mt == NULL) {
        rc = DL_ENOMEM;
        goto out;
    }
    atomic_store_explicit(&m->defs[n], mt, memory_order_release);
    atomic_store_explicit(&m->n_defs, n + 1, memory_order_release);
    rc = n;
out:
    pthread_mutex_unlock(&m->define_lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Hot path: series lookup and updates                                      */
/* ------------------------------------------------------------------------ */

static inline const char *label_value(const char *const *vals, int i)
{
    return (vals != NULL && vals[i] != NULL) ? vals[i] : "";
}

/* Hashes the values eight bytes at a time (a multiply-xorshift mix per word)
 * and notes their lengths for key_eq(); the length goes into the hash so
 * ("ab","") and ("a","b") differ. Collisions are resolved by key_eq(). */
static inline uint64_t hash_values(const char *const *vals, int n, size_t *lens, size_t *klen)
{
    size_t total = 0;
    const uint64_t k = 0x9e3779b97f4a7c15ULL;
    uint64_t h = 0x243f6a8885a308d3ULL;
    for (int i = 0; i < n; i++) {
        const char *p = label_value(vals, i);
        size_t len = strlen(p);
        lens[i] = len;
        total += len + 1;
        h = (h ^ len) * k;
        for (; len >= 8; len -= 8, p += 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            h = (h ^ w) * k;
            h ^= h >> 32;
        }
        if (len > 0) {
            /* built in a register: a memcpy() of the tail through memory
             * would stall the load on the byte stores */
            uint64_t w = 0;
            for (size_t j = 0; j < len; j++)
                w |= (uint64_t)(unsigned char)p[j] << (8 * j);
            h = (h ^ w) * k;
            h ^= h >> 32;
        }
    }
    *klen = total;
    return h ^ (h >> 29);
}

/* The stored key holds each value with its terminator: compare those too.
 * Equal total lengths keep every memcmp() inside the key. */
static inline int key_eq(const series_t *s, const char *const *vals, int n, const size_t *lens,
                         size_t klen)
{
    const char *key = s->key;
    if (s->key_len != klen)
        return 0;
    for (int i = 0; i < n; i++) {
        if (memcmp(key, label_value(vals, i), lens[i] + 1) != 0)
            return 0;
        key += lens[i] + 1;
    }
    return 1;
}

static void tab_insert(series_t **tab, uint32_t cap, series_t *s)
{
    uint32_t i = (uint32_t)s->hash & (cap - 1);
    while (tab[i] != NULL)
        i = (i + 1) & (cap - 1);
    tab[i] = s;
}

/* Slow path of series_get(): the first update of a label combination. */
static series_t *series_create(dl_metrics_t *m, metric_t *mt, slot_t *sl,
                               const char *const *vals, uint64_t h, const size_t *lens,
                               size_t klen)
{
    if (sl->count >= m->series_cap)
        goto overflow;
    if ((sl->count + 1) * 2 > sl->cap) {
        uint32_t cap = sl->cap != 0 ? sl->cap * 2 : 8;
        series_t **tab = dl_calloc(cap, sizeof *tab);
        if (tab == NULL)
            goto overflow;
        for (uint32_t i = 0; i < sl->cap; i++) {
            if (sl->tab[i] != NULL)
                tab_insert(tab, cap, sl->tab[i]);
        }
        dl_free(sl->tab);
        sl->tab = tab;
        sl->cap = cap;
    }
    size_t nc = mt->type == DL_METRIC_HISTOGRAM ? (size_t)mt->n_buckets + 1 : 0;
    series_t *s = dl_malloc(sizeof *s + nc * sizeof(s->counts[0]) + klen);
    if (s == NULL)
        goto overflow;
    s->hash = h;
    s->key = (char *)&s->counts[nc];
    s->key_len = klen;
    char *k = s->key;
    for (int i = 0; i < mt->n_labels; i++) {
        memcpy(k, label_value(vals, i), lens[i] + 1);
        k += lens[i] + 1;
    }
    atomic_init(&s->value, 0); /* the bits of 0.0 */
    for (size_t i = 0; i < nc; i++)
        atomic_init(&s->counts[i], 0);
    tab_insert(sl->tab, sl->cap, s);
    sl->count++;
    /* Publish: everything above is visible to a reader that acquires head. */
    s->next = atomic_load_explicit(&sl->head, memory_order_relaxed);
    atomic_store_explicit(&sl->head, s, memory_order_release);
    return s;
overflow:
    atomic_fetch_add_explicit(&m->overflow, 1, memory_order_relaxed);
    return NULL;
}

static inline series_t *series_get(dl_metrics_t *m, metric_t *mt, slot_t *sl,
                                   const char *const *vals)
{
    size_t lens[DL_METRICS_MAX_LABELS], klen;
    uint64_t h = hash_values(vals, mt->n_labels, lens, &klen);
    if (DL_LIKELY(sl->cap != 0)) {
        uint32_t mask = sl->cap - 1;
        for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
            series_t *s = sl->tab[i];
            if (s == NULL)
                break;
            if (s->hash == h && key_eq(s, vals, mt->n_labels, lens, klen))
                return s;
        }
    }
    return series_create(m, mt, sl, vals, h, lens, klen);
}

/* Index of the first bucket whose upper bound is >= v (le is inclusive);
 * n_buckets means +Inf. */
static inline int bucket_index(const metric_t *mt, double v)
{
    int lo = 0, hi = mt->n_buckets;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v <= mt->buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

enum { OP_ADD, OP_SET, OP_OBSERVE };

static inline void apply(dl_metrics_t *m, metric_t *mt, slot_t *sl, const char *const *vals,
                         double v, int op)
{
    series_t *s = series_get(m, mt, sl, vals);
    if (s == NULL)
        return;
    /* One writer per slot: plain load + store, no atomic read-modify-write. */
    if (op == OP_SET) {
        store_d(&s->value, v);
    } else if (op == OP_ADD) {
        store_d(&s->value, load_d(&s->value) + v);
    } else {
        _Atomic uint64_t *c = &s->counts[bucket_index(mt, v)];
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        store_d(&s->value, load_d(&s->value) + v);
    }
}

static inline void update(dl_metrics_t *m, int w, int id, const char *const *vals, double v,
                          int op, int type)
{
    if (DL_UNLIKELY(m == NULL || id < 0 || id >= DL_METRICS_MAX_DEFS || isnan(v)))
        return;
    metric_t *mt = atomic_load_explicit(&m->defs[id], memory_order_acquire);
    if (DL_UNLIKELY(mt == NULL))
        return;
    if (mt->type != type) {
        /* add() serves counters and gauges alike */
        if (!(op == OP_ADD && mt->type == DL_METRIC_GAUGE))
            return;
    } else if (type == DL_METRIC_COUNTER && !(v >= 0)) {
        return;
    }
    if (DL_LIKELY(w >= 0 && w < m->n_workers)) {
        apply(m, mt, &mt->slots[w], vals, v, op);
        return;
    }
    pthread_mutex_lock(&m->shared_lock);
    apply(m, mt, &mt->slots[m->n_workers], vals, v, op);
    pthread_mutex_unlock(&m->shared_lock);
}

void dl_metric_add(dl_metrics_t *m, int w, int id, const char *const *label_values, double v)
{
    update(m, w, id, label_values, v, OP_ADD, DL_METRIC_COUNTER);
}

void dl_metric_set(dl_metrics_t *m, int w, int id, const char *const *label_values, double v)
{
    update(m, w, id, label_values, v, OP_SET, DL_METRIC_GAUGE);
}

void dl_metric_observe(dl_metrics_t *m, int w, int id, const char *const *label_values,
                       double v)
{
    update(m, w, id, label_values, v, OP_OBSERVE, DL_METRIC_HISTOGRAM);
}

dl_metric_series_t *dl_metric_gauge_series(dl_metrics_t *m, int w, int id,
                                           const char *const *label_values)
{
    if (m == NULL || id < 0 || id >= DL_METRICS_MAX_DEFS || w < 0 || w >= m->n_workers)
        return NULL;
    metric_t *mt = atomic_load_explicit(&m->defs[id], memory_order_acquire);
    if (mt == NULL || mt->type != DL_METRIC_GAUGE)
        return NULL;
    return (dl_metric_series_t *)series_get(m, mt, &mt->slots[w], label_values);
}

void dl_metric_series_set(dl_metric_series_t *s, double v)
{
    if (s != NULL && !isnan(v))
        store_d(&((series_t *)s)->value, v);
}

double dl_metric_value(dl_metrics_t *m, int id, const char *const *label_values)
{
    if (m == NULL || id < 0 || id >= DL_METRICS_MAX_DEFS)
        return -1;
    metric_t *mt = atomic_load_explicit(&m->defs[id], memory_order_acquire);
    if (mt == NULL)
        return -1;
    size_t lens[DL_METRICS_MAX_LABELS], klen;
    hash_values(label_values, mt->n_labels, lens, &klen);
    int found = 0;
    double sum = 0;
    for (int i = 0; i <= m->n_workers; i++) {
        series_t *s = atomic_load_explicit(&mt->slots[i].head, memory_order_acquire);
        for (; s != NULL; s = s->next) {
            if (!key_eq(s, label_values, mt->n_labels, lens, klen))
                continue;
            found = 1;
            if (mt->type != DL_METRIC_HISTOGRAM) {
                sum += load_d(&s->value);
            } else {
                for (int b = 0; b <= mt->n_buckets; b++)
                    sum += (double)atomic_load_explicit(&s->counts[b], memory_order_relaxed);
            }
            break;
        }
    }
    if (!found)
        return mt->n_labels == 0 ? 0 : -1;
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Rendering                                                                */
/* ------------------------------------------------------------------------ */

/* Numbers as the codecs spell them (dl_num_format_double), with the
 * exposition format's spellings of the special values. b has DL_NUM_ROOM
 * bytes. */
static const char *format_double(char *b, size_t n, double v)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    DL_ASSERT(n >= DL_NUM_ROOM);
    b[dl_num_format_double(v, b)] = '\0';
    return b;
}

static void put_double(dl_buf_t *out, double v)
{
    char b[40];
    dl_buf_append_str(out, format_double(b, sizeof b, v));
}

/* Label values escape \ " and newline; HELP text escapes \ and newline. */
static void put_escaped(dl_buf_t *out, const char *s, int quote)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quote)
            esc = "\\\"";
        if (esc == NULL)
            continue;
        dl_buf_append(out, run, (size_t)(s - run));
        dl_buf_append_str(out, esc);
        run = s + 1;
    }
    dl_buf_append(out, run, (size_t)(s - run));
}

/* name{l1="v1",...[,le="x"]} followed by a space; le may be NULL. */
static void put_sample_name(dl_buf_t *out, const metric_t *mt, const char *suffix,
                            const char *key, const char *le)
{
    dl_buf_append_str(out, mt->name);
    dl_buf_append_str(out, suffix);
    if (mt->n_labels > 0 || le != NULL) {
        dl_buf_append_char(out, '{');
        for (int i = 0; i < mt->n_labels; i++) {
            if (i > 0)
                dl_buf_append_char(out, ',');
            dl_buf_append_str(out, mt->labels[i]);
            dl_buf_append_str(out, "=\"");
            put_escaped(out, key, 1);
            dl_buf_append_char(out, '"');
            key += strlen(key) + 1;
        }
        if (le != NULL) {
            dl_buf_append_str(out, mt->n_labels > 0 ? ",le=\"" : "le=\"");
            dl_buf_append_str(out, le);
            dl_buf_append_char(out, '"');
        }
        dl_buf_append_char(out, '}');
    }
    dl_buf_append_char(out, ' ');
}

static int cmp_series(const void *a, const void *b)
{
    const series_t *x = *(series_t *const *)a, *y = *(series_t *const *)b;
    size_t n = DL_MIN(x->key_len, y->key_len);
    int c = memcmp(x->key, y->key, n);
    if (c != 0)
        return c;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int cmp_metric(const void *a, const void *b)
{
    const metric_t *x = *(metric_t *const *)a, *y = *(metric_t *const *)b;
    return strcmp(x->name, y->name);
}

typedef struct {
    series_t **v;
    size_t n, cap;
    uint64_t *counts; /* merged histogram counts, DL_METRICS_MAX_BUCKETS + 1 */
} scratch_t;

static int collect(dl_metrics_t *m, const metric_t *mt, scratch_t *sc)
{
    sc->n = 0;
    for (int i = 0; i <= m->n_workers; i++) {
        series_t *s = atomic_load_explicit(&mt->slots[i].head, memory_order_acquire);
        for (; s != NULL; s = s->next) {
            if (sc->n == sc->cap) {
                size_t cap = sc->cap != 0 ? sc->cap * 2 : 64;
                series_t **v = dl_realloc(sc->v, cap * sizeof *v);
                if (v == NULL)
                    return DL_ENOMEM;
                sc->v = v;
                sc->cap = cap;
            }
            sc->v[sc->n++] = s;
        }
    }
    if (sc->n > 1)
        qsort(sc->v, sc->n, sizeof *sc->v, cmp_series);
    return 0;
}

static void render_histogram(dl_buf_t *out, const metric_t *mt, const char *key,
                             const uint64_t *counts, double sum)
{
    char buf[40];
    uint64_t cum = 0;
    for (int b = 0; b <= mt->n_buckets; b++) {
        cum += counts[b];
        const char *le = b < mt->n_buckets ? format_double(buf, sizeof buf, mt->buckets[b])
                                           : "+Inf";
        put_sample_name(out, mt, "_bucket", key, le);
        dl_buf_append_u64(out, cum);
        dl_buf_append_char(out, '\n');
    }
    put_sample_name(out, mt, "_sum", key, NULL);
    put_double(out, sum);
    dl_buf_append_char(out, '\n');
    put_sample_name(out, mt, "_count", key, NULL);
    dl_buf_append_u64(out, cum);
    dl_buf_append_char(out, '\n');
}

static int render_metric(dl_metrics_t *m, const metric_t *mt, dl_buf_t *out, scratch_t *sc)
{
    static const char *const type_names[] = {"", "counter", "gauge", "histogram"};
    int rc = collect(m, mt, sc);
    if (rc < 0)
        return rc;
    if (mt->help[0] != '\0') {
        dl_buf_appendf(out, "# HELP %s ", mt->name);
        put_escaped(out, mt->help, 0);
        dl_buf_append_char(out, '\n');
    }
    dl_buf_appendf(out, "# TYPE %s %s\n", mt->name, type_names[mt->type]);
    int hist = mt->type == DL_METRIC_HISTOGRAM;
    if (sc->n == 0 && mt->n_labels == 0) {
        /* an unlabelled metric exists from its definition on */
        if (hist) {
            memset(sc->counts, 0, (size_t)(mt->n_buckets + 1) * sizeof(uint64_t));
            render_histogram(out, mt, "", sc->counts, 0);
        } else {
            put_sample_name(out, mt, "", "", NULL);
            dl_buf_append_str(out, "0\n");
        }
        return 0;
    }
    /* Equal keys from different slots sort next to each other: merge them. */
    for (size_t i = 0; i < sc->n;) {
        size_t j = i;
        double sum = 0;
        if (hist)
            memset(sc->counts, 0, (size_t)(mt->n_buckets + 1) * sizeof(uint64_t));
        for (; j < sc->n && cmp_series(&sc->v[i], &sc->v[j]) == 0; j++) {
            series_t *s = sc->v[j];
            sum += load_d(&s->value);
            for (int b = 0; hist && b <= mt->n_buckets; b++)
                sc->counts[b] += atomic_load_explicit(&s->counts[b], memory_order_relaxed);
        }
        if (hist) {
            render_histogram(out, mt, sc->v[i]->key, sc->counts, sum);
        } else {
            put_sample_name(out, mt, "", sc->v[i]->key, NULL);
            put_double(out, sum);
            dl_buf_append_char(out, '\n');
        }
        i = j;
    }
    return 0;
}

int dl_metrics_render(dl_metrics_t *m, dl_buf_t *out)
{
    int n = atomic_load_explicit(&m->n_defs, memory_order_acquire);
    if (n == 0)
        return out->oom ? DL_ENOMEM : 0;
    int rc = 0;
    uint64_t counts[DL_METRICS_MAX_BUCKETS + 1];
    scratch_t sc = {NULL, 0, 0, counts};
    metric_t **order = dl_malloc((size_t)n * sizeof *order);
    if (order == NULL)
        return DL_ENOMEM;
    for (int i = 0; i < n; i++)
        order[i] = atomic_load_explicit(&m->defs[i], memory_order_acquire);
    qsort(order, (size_t)n, sizeof *order, cmp_metric);
    for (int i = 0; i < n && rc == 0; i++)
        rc = render_metric(m, order[i], out, &sc);
    dl_free(sc.v);
    dl_free(order);
    if (rc == 0 && out->oom)
        rc = DL_ENOMEM;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Process metrics                                                          */
/* ------------------------------------------------------------------------ */

static void put_process(dl_buf_t *out, const char *name, const char *type, const char *help,
                        double v)
{
    dl_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n%s ", name, help, name, type, name);
    put_double(out, v);
    dl_buf_append_char(out, '\n');
}

static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    char line[256];
    double btime = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "btime ", 6) == 0) {
            btime = strtod(line + 6, NULL);
            break;
        }
    }
    fclose(f);
    return btime;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n > 0 ? n - 1 : 0; /* not counting the directory's own descriptor */
}

int dl_metrics_render_process(dl_buf_t *out)
{
    char stat[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return DL_EIO;
    size_t len = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[len] = '\0';
    /* The command name may hold spaces and parentheses: fields follow the last ')'. */
    const char *p = strrchr(stat, ')');
    unsigned long utime, stime, vsize;
    unsigned long long starttime;
    long rss;
    if (p == NULL || sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d"
                            " %*d %*d %*d %llu %lu %ld",
                            &utime, &stime, &starttime, &vsize, &rss) != 5)
        return DL_EIO;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double page = (double)sysconf(_SC_PAGESIZE);
    double btime = boot_time();
    int fds = count_fds();
    struct rlimit rl;
    if (ticks <= 0 || btime < 0 || fds < 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return DL_EIO;

    put_process(out, "process_cpu_seconds_total", "counter",
                "Total user and system CPU time spent in seconds.",
                (double)(utime + stime) / ticks);
    put_process(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                (double)rl.rlim_cur);
    put_process(out, "process_open_fds", "gauge", "Number of open file descriptors.",
                (double)fds);
    put_process(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                (double)rss * page);
    put_process(out, "process_start_time_seconds", "gauge",
                "Start time of the process since unix epoch in seconds.",
                btime + (double)starttime / ticks);
    put_process(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                (double)vsize);
    return out->oom ? DL_ENOMEM : 0;
}
