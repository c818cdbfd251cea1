/*
 * bench_json_string.c - measures the JSON string writer (dl_json_put_string,
 * runtime/common/json_str.c) on the strings responses are made of: short and long
 * ASCII, text with some non-ASCII, and bytes that are not UTF-8; and the
 * whole encoder (dl_json_encode) on a page of records like the shared
 * benchmark's /features. Each case runs RUNS batches of ITERS calls and
 * reports the median batch as nanoseconds per call and per input byte. Built
 * against the library of two commits, it shows what a change to the writer
 * costs.
 *
 *   bench_json_string [ITERS [RUNS]]
 *
 * Defaults: 200000 iterations, 9 runs.
 *
 * Build (from a configured build directory's library):
 *   gcc -O2 -Iruntime -Iruntime/include tests/bench/bench_json_string.c build/libdevloop.a \
 *       $(pkg-config --cflags --libs luajit msgpack) -lm -o bench_json_string
 */
#define _POSIX_C_SOURCE 200809L

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"

/* Declared here rather than from a header so the file builds against older
 * libraries too, whose headers put them elsewhere. */
int dl_json_put_string(dl_buf_t *b, const char *s, size_t len);
int dl_json_encode(lua_State *L, int idx, dl_buf_t *out, char *err, size_t errlen);

#define MAX_RUNS 64

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile size_t sink;

static double median_ns_string(const char *s, size_t n, long iters, int runs)
{
    double t[MAX_RUNS];
    dl_buf_t b = DL_BUF_INIT;
    for (int r = 0; r < runs; r++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            dl_buf_reset(&b);
            dl_json_put_string(&b, s, n);
            sink += b.len;
        }
        t[r] = (now_ns() - t0) / (double)iters;
    }
    dl_buf_free(&b);
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    return t[runs / 2];
}

static void string_case(const char *name, const char *s, size_t n, long iters, int runs)
{
    double ns = median_ns_string(s, n, iters, runs);
    printf("%-28s %7zu B %10.1f ns/call %7.3f ns/B\n", name, n, ns, ns / (double)n);
}

/* A page of 100 records of the shape /features returns, encoded whole. */
static void encode_case(long iters, int runs)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, "local t = {} for i = 1, 100 do t[i] = { id = i, "
                         "name = 'Feature number ' .. i, status = 'in-progress', "
                         "description = 'A feature that the benchmark encodes again and again', "
                         "tags = { 'api', 'bench' }, priority = i % 5, done = i % 2 == 0 } end "
                         "return t") != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    dl_buf_t b = DL_BUF_INIT;
    char err[128];
    double t[MAX_RUNS];
    long n = iters / 100 > 0 ? iters / 100 : 1;
    for (int r = 0; r < runs; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            dl_buf_reset(&b);
            dl_json_encode(L, 1, &b, err, sizeof(err));
            sink += b.len;
        }
        t[r] = (now_ns() - t0) / (double)n;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    printf("%-28s %7zu B %10.1f ns/call %7.3f ns/B\n", "encode 100 records", b.len,
           t[runs / 2], t[runs / 2] / (double)b.len);
    dl_buf_free(&b);
    lua_close(L);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    int runs = argc > 2 ? atoi(argv[2]) : 9;
    if (iters < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_json_string [ITERS [RUNS <= %d]]\n", MAX_RUNS);
        return 2;
    }
    static char big[65536];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    static const char utf8[] = "Caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e, 10 \xe2\x82\xac, "
                               "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 and some ASCII after it";
    static const char invalid[] = "/files/\xff\xfe\xc3(\xed\xa0\x80)\xf4\x90\x80\x80 raw bytes "
                                  "from a path";
    string_case("ascii 8", "hello wo", 8, iters, runs);
    string_case("ascii 24", "Feature number 12345678", 23, iters, runs);
    string_case("ascii 100", big, 100, iters, runs);
    string_case("ascii 1000", big, 1000, iters / 4, runs);
    string_case("ascii 65536", big, sizeof(big), iters / 200 + 1, runs);
    string_case("ascii with escapes 64",
                "line one\nline \"two\"\tand a \\ backslash, then more text ok", 62, iters,
                runs);
    string_case("utf-8 mixed", utf8, sizeof(utf8) - 1, iters, runs);
    string_case("not utf-8", invalid, sizeof(invalid) - 1, iters, runs);
    encode_case(iters, runs);
    return 0;
}
