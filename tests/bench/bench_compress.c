/*
 * bench_compress.c - measures one-shot whole-body compression with zlib and
 * with libdeflate, the two libraries runtime/common/compress.c can use, so the choice
 * of default rests on numbers. Each case compresses FILE the way the module
 * does: zlib reuses one z_stream per format through deflateReset() and sizes
 * the output with deflateBound(); libdeflate keeps one compressor per level
 * and sizes the output with its *_compress_bound(). Every case runs RUNS
 * batches of ITERS calls and reports the median batch as microseconds per
 * call, with the output size and a check that zlib inflates it back.
 *
 *   bench_compress FILE [ITERS [RUNS [LEVELS]]]
 *
 * Defaults: 5000 iterations, 7 runs, levels "1,6" (LEVELS is a comma list of 1..9).
 *
 * Build: gcc -O2 tests/bench/bench_compress.c -lz -ldeflate -o bench_compress
 */
#define _POSIX_C_SOURCE 200809L

#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define MAX_RUNS 64
#define MAX_LEVELS 9

enum { FMT_GZIP, FMT_ZLIB };
enum { LIB_ZLIB, LIB_LIBDEFLATE };

typedef struct {
    int lib;
    int fmt;
    int level;
    z_stream zs;
    struct libdeflate_compressor *ld;
    unsigned char *out;
    size_t outcap;
    size_t outlen;
} bench_case_t;

/* ---- helpers ------------------------------------------------------------------------------- */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char *data = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            unsigned char *p = realloc(data, cap);
            if (p == NULL) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = p;
        }
        size_t got = fread(data + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    *len = n;
    return data;
}

/* Inflates with windowBits 47 (gzip or zlib) and compares with the original. */
static int verify(const unsigned char *z, size_t zlen, const unsigned char *orig, size_t len)
{
    unsigned char *back = malloc(len + 1);
    if (back == NULL)
        return 0;
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 47) != Z_OK) {
        free(back);
        return 0;
    }
    zs.next_in = (unsigned char *)z;
    zs.avail_in = (uInt)zlen;
    zs.next_out = back;
    zs.avail_out = (uInt)(len + 1);
    int rc = inflate(&zs, Z_FINISH);
    int ok = rc == Z_STREAM_END && zs.total_out == len && memcmp(back, orig, len) == 0;
    inflateEnd(&zs);
    free(back);
    return ok;
}

/* ---- the two implementations ---------------------------------------------------------------- */

static int case_setup(bench_case_t *bc, size_t inlen)
{
    if (bc->lib == LIB_ZLIB) {
        memset(&bc->zs, 0, sizeof(bc->zs));
        int wbits = bc->fmt == FMT_GZIP ? 31 : 15;
        if (deflateInit2(&bc->zs, bc->level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        bc->outcap = deflateBound(&bc->zs, (uLong)inlen);
    } else {
        bc->ld = libdeflate_alloc_compressor(bc->level);
        if (bc->ld == NULL)
            return -1;
        bc->outcap = bc->fmt == FMT_GZIP ? libdeflate_gzip_compress_bound(bc->ld, inlen)
                                         : libdeflate_zlib_compress_bound(bc->ld, inlen);
    }
    bc->out = malloc(bc->outcap);
    return bc->out ? 0 : -1;
}

static void case_teardown(bench_case_t *bc)
{
    if (bc->lib == LIB_ZLIB)
        deflateEnd(&bc->zs);
    else
        libdeflate_free_compressor(bc->ld);
    free(bc->out);
}

/* One call, as the module makes it: the bound is recomputed each time. */
static int case_run(bench_case_t *bc, const unsigned char *in, size_t inlen)
{
    if (bc->lib == LIB_ZLIB) {
        if (deflateReset(&bc->zs) != Z_OK)
            return -1;
        uLong bound = deflateBound(&bc->zs, (uLong)inlen);
        if (bound > bc->outcap)
            return -1;
        bc->zs.next_in = (unsigned char *)in;
        bc->zs.avail_in = (uInt)inlen;
        bc->zs.next_out = bc->out;
        bc->zs.avail_out = (uInt)bound;
        if (deflate(&bc->zs, Z_FINISH) != Z_STREAM_END)
            return -1;
        bc->outlen = bound - bc->zs.avail_out;
    } else {
        size_t bound, n;
        if (bc->fmt == FMT_GZIP) {
            bound = libdeflate_gzip_compress_bound(bc->ld, inlen);
            n = libdeflate_gzip_compress(bc->ld, in, inlen, bc->out, bound);
        } else {
            bound = libdeflate_zlib_compress_bound(bc->ld, inlen);
            n = libdeflate_zlib_compress(bc->ld, in, inlen, bc->out, bound);
        }
        if (n == 0)
            return -1;
        bc->outlen = n;
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [ITERS [RUNS [LEVELS]]]\n", argv[0]);
        return 2;
    }
    long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 5000;
    long runs = argc > 3 ? strtol(argv[3], NULL, 10) : 7;
    if (iters < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "bad ITERS or RUNS (1..%d)\n", MAX_RUNS);
        return 2;
    }
    int levels[MAX_LEVELS], n_levels = 0;
    const char *spec = argc > 4 ? argv[4] : "1,6";
    while (*spec != '\0') {
        char *end;
        long v = strtol(spec, &end, 10);
        if (end == spec || v < 1 || v > 9 || n_levels == MAX_LEVELS) {
            fprintf(stderr, "bad LEVELS: want a comma list of 1..9\n");
            return 2;
        }
        levels[n_levels++] = (int)v;
        spec = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') {
            fprintf(stderr, "bad LEVELS: want a comma list of 1..9\n");
            return 2;
        }
    }
    size_t inlen = 0;
    unsigned char *in = read_file(argv[1], &inlen);
    if (in == NULL) {
        perror(argv[1]);
        return 1;
    }

    static const char *lib_names[] = {"zlib", "libdeflate"};
    static const char *fmt_names[] = {"gzip", "zlib"};

    printf("# %s: %zu bytes, %ld iterations x %ld runs (median), zlib %s, libdeflate %s\n",
           argv[1], inlen, iters, runs, zlibVersion(), LIBDEFLATE_VERSION_STRING);
    printf("%-11s %-5s %5s %10s %10s %8s %9s %s\n", "library", "fmt", "level", "us/call",
           "min us", "bytes", "ratio", "ok");
    int failed = 0;
    for (int f = 0; f < 2; f++) {
        for (int l = 0; l < n_levels; l++) {
            for (int lib = 0; lib < 2; lib++) {
                bench_case_t bc;
                memset(&bc, 0, sizeof(bc));
                bc.lib = lib;
                bc.fmt = f;
                bc.level = levels[l];
                if (case_setup(&bc, inlen) != 0) {
                    fprintf(stderr, "setup failed: %s level %d\n", lib_names[lib], bc.level);
                    return 1;
                }
                double per_call[MAX_RUNS];
                int err = 0;
                /* One untimed warm-up batch faults in the buffers and the tables. */
                for (long i = 0; i < iters / 10 + 1; i++)
                    err |= case_run(&bc, in, inlen);
                for (long r = 0; r < runs; r++) {
                    double t0 = now_us();
                    for (long i = 0; i < iters; i++)
                        err |= case_run(&bc, in, inlen);
                    per_call[r] = (now_us() - t0) / (double)iters;
                }
                qsort(per_call, (size_t)runs, sizeof(double), cmp_double);
                int ok = !err && verify(bc.out, bc.outlen, in, inlen);
                failed |= !ok;
                printf("%-11s %-5s %5d %10.2f %10.2f %8zu %8.2f%% %s\n", lib_names[lib],
                       fmt_names[f], bc.level, per_call[runs / 2], per_call[0], bc.outlen,
                       inlen ? 100.0 * (double)bc.outlen / (double)inlen : 0.0,
                       ok ? "yes" : "NO");
                case_teardown(&bc);
            }
        }
    }
    free(in);
    return failed ? 1 : 0;
}
