/*
 * fuzz.h - what the libFuzzer harnesses share: failing loudly on a broken
 * invariant, the tolerance for divergences already reported
 * (dl_fuzz_known), and the input framing that lets the fuzzer choose where a
 * byte stream is cut into pieces.
 */
#ifndef DL_FUZZ_H
#define DL_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant broke: say which, then abort so libFuzzer saves the input. */
#define DL_FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "\nfuzz invariant failed at %s:%d: %s\n  ", __FILE__, __LINE__,        \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * A divergence that is reported (tests/fuzz/known-findings.md) but not
 * fixed yet, in a file another change owns. By default the
 * input is skipped, so the suite stays green and the fuzzer keeps looking for
 * new problems; with DL_FUZZ_STRICT=1 it fails like any other invariant, for
 * whoever fixes it. Each use names the finding:
 *     if (is_that_case && dl_fuzz_known("json-inf", "1e400 decodes to inf"))
 *         return 0;
 */
static inline int dl_fuzz_strict(void)
{
    static int strict = -1;
    if (strict < 0) {
        const char *s = getenv("DL_FUZZ_STRICT");
        strict = s != NULL && strcmp(s, "1") == 0;
    }
    return strict;
}

static struct {
    char name[48];
    unsigned long hits;
} dl_fuzz_known_hits[8];

/* At exit: how often each known finding was skipped (scripts/fuzz.sh shows it). */
static inline void dl_fuzz_known_report(void)
{
    for (int i = 0; i < 8 && dl_fuzz_known_hits[i].name[0]; i++)
        fprintf(stderr, "known finding %s: %lu inputs skipped\n", dl_fuzz_known_hits[i].name,
                dl_fuzz_known_hits[i].hits);
}

static inline int dl_fuzz_known(const char *name, const char *detail)
{
    if (dl_fuzz_strict()) {
        fprintf(stderr, "\nknown finding %s (DL_FUZZ_STRICT=1): %s\n", name, detail);
        abort();
    }
    for (int i = 0; i < 8; i++) {
        if (dl_fuzz_known_hits[i].name[0] == '\0') {
            if (i == 0)
                atexit(dl_fuzz_known_report);
            snprintf(dl_fuzz_known_hits[i].name, sizeof(dl_fuzz_known_hits[i].name), "%s", name);
        }
        if (strcmp(dl_fuzz_known_hits[i].name, name) == 0) {
            dl_fuzz_known_hits[i].hits++;
            break;
        }
    }
    return 1;
}

/*
 * Split inputs: the first byte says how to cut the rest. Its low 4 bits are
 * the number of cut points n; the next n bytes each give the length (1..256)
 * of the next piece; what is left is the payload, and the last piece runs to
 * its end. So seed files are one control byte (0x00: no cut) plus the bytes.
 * The upper 4 bits of the control byte are flags for the harness.
 */
typedef struct {
    const uint8_t *payload;
    size_t len;
    unsigned flags; /* control byte >> 4 */
    int n_cuts;
    size_t cuts[16]; /* offsets into payload, increasing, 0 < cut < len */
} dl_fuzz_split_t;

static inline int dl_fuzz_split(const uint8_t *data, size_t size, dl_fuzz_split_t *s)
{
    if (size == 0)
        return -1;
    int n = data[0] & 15;
    if (size < 1 + (size_t)n)
        return -1;
    s->flags = data[0] >> 4;
    s->payload = data + 1 + n;
    s->len = size - 1 - (size_t)n;
    s->n_cuts = 0;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        off += (size_t)data[1 + i] + 1;
        if (off >= s->len)
            break;
        s->cuts[s->n_cuts++] = off;
    }
    return 0;
}

/* Piece i of a split (0..n_cuts): start offset and length. */
static inline void dl_fuzz_piece(const dl_fuzz_split_t *s, int i, size_t *off, size_t *len)
{
    size_t a = i == 0 ? 0 : s->cuts[i - 1];
    size_t b = i == s->n_cuts ? s->len : s->cuts[i];
    *off = a;
    *len = b - a;
}

/* A growable byte string for transcripts (plain malloc: harness memory). */
typedef struct {
    char *data;
    size_t len, cap;
} dl_fuzz_str_t;

static inline void dl_fuzz_put(dl_fuzz_str_t *s, const void *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *d = realloc(s->data, cap);
        if (d == NULL)
            abort();
        s->data = d;
        s->cap = cap;
    }
    if (n)
        memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = '\0';
}

static inline void dl_fuzz_putf(dl_fuzz_str_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void dl_fuzz_putf(dl_fuzz_str_t *s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        dl_fuzz_put(s, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static inline void dl_fuzz_str_free(dl_fuzz_str_t *s)
{
    free(s->data);
    s->data = NULL;
    s->len = s->cap = 0;
}

static inline int dl_fuzz_str_eq(const dl_fuzz_str_t *a, const dl_fuzz_str_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Prints where two transcripts first differ, for the report. */
static inline void dl_fuzz_diff(const char *what, const dl_fuzz_str_t *a, const dl_fuzz_str_t *b)
{
    size_t i = 0;
    while (i < a->len && i < b->len && a->data[i] == b->data[i])
        i++;
    size_t from = i > 120 ? i - 120 : 0;
    size_t fa = from < a->len ? from : a->len, fb = from < b->len ? from : b->len;
    size_t na = a->len - fa < 400 ? a->len - fa : 400, nb = b->len - fb < 400 ? b->len - fb : 400;
    fprintf(stderr,
            "\n%s differ at byte %zu (lengths %zu and %zu)\n--- first:\n%.*s\n"
            "--- second:\n%.*s\n---\n",
            what, i, a->len, b->len, (int)na, a->data ? a->data + fa : "", (int)nb,
            b->data ? b->data + fb : "");
}

#endif
