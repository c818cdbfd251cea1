/*
 * test_shared_dict.c - runtime/cache/shared_dict.c through shared_dict.h:
 * the three value types (a string with NUL bytes too), key bounds, expiry on
 * the caller's clock (no sleeping), add only over an absent or expired key,
 * incr with and without an initial value (the entry keeps its expiry), exact
 * byte accounting, LRU eviction order under the cap, a value too large for a
 * shard refused without evicting anything, then threads: 4 x 100000
 * increments of one key give exactly 400000, and mixed set/get/incr/delete on
 * shared keys under a small cap stay consistent (run it under SANITIZE=1).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "cache/shared_dict.h"
#include "common/buf.h"
#include "common/internal.h"
#include "unit.h"

static dl_shdict_value_t str_v(const char *s, size_t n)
{
    dl_shdict_value_t v = {DL_SHV_STRING, 0, 0, s, n};
    return v;
}

static dl_shdict_value_t num_v(double x)
{
    dl_shdict_value_t v = {DL_SHV_NUMBER, x, 0, NULL, 0};
    return v;
}

static int set_s(dl_shdict_t *d, const char *k, const char *val, uint64_t ttl, int flags,
                 uint64_t now)
{
    dl_shdict_value_t v = str_v(val, strlen(val));
    return dl_shdict_set(d, k, strlen(k), &v, ttl, flags, now);
}

static int live(dl_shdict_t *d, const char *k, uint64_t now)
{
    dl_shdict_value_t v;
    dl_buf_t b = DL_BUF_INIT;
    int rc = dl_shdict_get(d, k, strlen(k), now, &v, &b);
    dl_buf_free(&b);
    return rc == 0;
}

DL_TEST(shdict_types_round_trip)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    REQUIRE(d != NULL);
    dl_shdict_value_t v = str_v("a\0b", 3), n = num_v(-2.5), t = {DL_SHV_BOOLEAN, 0, 1, NULL, 0};
    dl_shdict_value_t f = {DL_SHV_BOOLEAN, 0, 0, NULL, 0};
    EXPECT_EQ(dl_shdict_set(d, "s", 1, &v, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_set(d, "n", 1, &n, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_set(d, "t", 1, &t, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_set(d, "f", 1, &f, 0, 0, 1), 0);
    dl_shdict_value_t out;
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_shdict_get(d, "s", 1, 1, &out, &b), 0);
    EXPECT_EQ(out.type, DL_SHV_STRING);
    EXPECT_MEM(b.data, b.len, "a\0b", 3);
    EXPECT_EQ(dl_shdict_get(d, "n", 1, 1, &out, &b), 0);
    EXPECT(out.type == DL_SHV_NUMBER && out.num == -2.5);
    EXPECT_EQ(dl_shdict_get(d, "t", 1, 1, &out, &b), 0);
    EXPECT(out.type == DL_SHV_BOOLEAN && out.b == 1);
    EXPECT_EQ(dl_shdict_get(d, "f", 1, 1, &out, &b), 0);
    EXPECT(out.type == DL_SHV_BOOLEAN && out.b == 0);
    EXPECT_EQ(dl_shdict_get(d, "x", 1, 1, &out, &b), DL_ENOENT);
    /* an empty string value is a value */
    dl_buf_reset(&b);
    dl_shdict_value_t e = str_v("", 0);
    EXPECT_EQ(dl_shdict_set(d, "e", 1, &e, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_get(d, "e", 1, 1, &out, &b), 0);
    EXPECT(out.type == DL_SHV_STRING && b.len == 0);
    /* keys: 1..65535 bytes, binary allowed */
    EXPECT_EQ(dl_shdict_set(d, "", 0, &v, 0, 0, 1), DL_EINVAL);
    static char big[DL_SHDICT_MAX_KEY + 1];
    memset(big, 'k', sizeof(big));
    EXPECT_EQ(dl_shdict_set(d, big, sizeof(big), &v, 0, 0, 1), DL_EINVAL);
    EXPECT_EQ(dl_shdict_set(d, big, DL_SHDICT_MAX_KEY, &v, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_set(d, "k\0x", 3, &n, 0, 0, 1), 0);
    EXPECT_EQ(dl_shdict_get(d, "k\0y", 3, 1, &out, &b), DL_ENOENT);
    dl_shdict_value_t bad = {9, 0, 0, NULL, 0};
    EXPECT_EQ(dl_shdict_set(d, "b", 1, &bad, 0, 0, 1), DL_EINVAL);
    dl_buf_free(&b);
    dl_shdict_free(d);
}

DL_TEST(shdict_ttl_expiry)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    REQUIRE(d != NULL);
    EXPECT_EQ(set_s(d, "a", "x", 100, 0, 1000), 0);
    EXPECT_EQ(set_s(d, "b", "x", 0, 0, 1000), 0);
    uint64_t left = 99;
    EXPECT_EQ(dl_shdict_ttl(d, "a", 1, 1040, &left), 0);
    EXPECT_EQ(left, 60);
    EXPECT_EQ(dl_shdict_ttl(d, "b", 1, 1040, &left), 0);
    EXPECT_EQ(left, 0); /* never expires */
    EXPECT(live(d, "a", 1099));
    EXPECT(!live(d, "a", 1100)); /* dropped when met */
    EXPECT_EQ(dl_shdict_ttl(d, "a", 1, 1100, &left), DL_ENOENT);
    EXPECT_EQ(dl_shdict_ttl(d, "zz", 2, 1100, &left), DL_ENOENT);
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.entries, 1);
    /* a delete of an expired key finds nothing, and frees it */
    EXPECT_EQ(set_s(d, "c", "x", 10, 0, 1000), 0);
    EXPECT_EQ(dl_shdict_delete(d, "c", 1, 2000), DL_ENOENT);
    EXPECT_EQ(dl_shdict_delete(d, "b", 1, 2000), 0);
    EXPECT_EQ(dl_shdict_delete(d, "b", 1, 2000), DL_ENOENT);
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.entries, 0);
    EXPECT_EQ(st.bytes, 0);
    /* a huge ttl saturates instead of wrapping into the past */
    EXPECT_EQ(set_s(d, "h", "x", UINT64_MAX - 5, 0, 1000), 0);
    EXPECT(live(d, "h", 1u << 30));
    dl_shdict_free(d);
}

DL_TEST(shdict_add_only_when_absent)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    REQUIRE(d != NULL);
    EXPECT_EQ(set_s(d, "k", "one", 50, DL_SHDICT_ADD, 0), 0);
    EXPECT_EQ(set_s(d, "k", "two", 0, DL_SHDICT_ADD, 10), DL_EDUPKEY);
    dl_shdict_value_t out;
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_shdict_get(d, "k", 1, 10, &out, &b), 0);
    EXPECT_MEM(b.data, b.len, "one", 3);
    /* over an expired value it succeeds */
    EXPECT_EQ(set_s(d, "k", "three", 0, DL_SHDICT_ADD, 50), 0);
    dl_buf_reset(&b);
    EXPECT_EQ(dl_shdict_get(d, "k", 1, 60, &out, &b), 0);
    EXPECT_MEM(b.data, b.len, "three", 5);
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.entries, 1);
    EXPECT_EQ(st.bytes, dl_shdict_entry_size(1, 5));
    dl_buf_free(&b);
    dl_shdict_free(d);
}

DL_TEST(shdict_incr_semantics)
{
    dl_shdict_t *d = dl_shdict_new(1 << 20);
    REQUIRE(d != NULL);
    double out = -1, init = 10;
    EXPECT_EQ(dl_shdict_incr(d, "c", 1, 1, NULL, 0, 0, &out), DL_ENOENT);
    EXPECT_EQ(dl_shdict_incr(d, "c", 1, 5, &init, 100, 0, &out), 0);
    EXPECT(out == 15);
    /* an existing counter ignores init and keeps its expiry */
    init = 1000;
    EXPECT_EQ(dl_shdict_incr(d, "c", 1, -0.5, &init, 5000, 50, &out), 0);
    EXPECT(out == 14.5);
    uint64_t left;
    EXPECT_EQ(dl_shdict_ttl(d, "c", 1, 50, &left), 0);
    EXPECT_EQ(left, 50);
    /* once expired, init starts it again */
    init = 0;
    EXPECT_EQ(dl_shdict_incr(d, "c", 1, 1, NULL, 0, 100, &out), DL_ENOENT);
    EXPECT_EQ(dl_shdict_incr(d, "c", 1, 1, &init, 0, 100, &out), 0);
    EXPECT(out == 1);
    EXPECT_EQ(dl_shdict_ttl(d, "c", 1, 100, &left), 0);
    EXPECT_EQ(left, 0);
    /* a number set by set() counts too; a string does not */
    dl_shdict_value_t n = num_v(41);
    EXPECT_EQ(dl_shdict_set(d, "n", 1, &n, 0, 0, 0), 0);
    EXPECT_EQ(dl_shdict_incr(d, "n", 1, 1, NULL, 0, 0, &out), 0);
    EXPECT(out == 42);
    EXPECT_EQ(set_s(d, "s", "7", 0, 0, 0), 0);
    EXPECT_EQ(dl_shdict_incr(d, "s", 1, 1, &init, 0, 0, &out), DL_EINVAL);
    EXPECT_EQ(dl_shdict_incr(d, "", 0, 1, &init, 0, 0, &out), DL_EINVAL);
    dl_shdict_free(d);
}

DL_TEST(shdict_bytes_and_lru_eviction)
{
    /* 64 KiB: one shard, so the order below is the whole dictionary's */
    dl_shdict_t *d = dl_shdict_new(64 * 1024);
    REQUIRE(d != NULL);
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.shards, 1);
    static char val[1000];
    memset(val, 'v', sizeof(val));
    dl_shdict_value_t v = str_v(val, sizeof(val));
    size_t each = dl_shdict_entry_size(4, sizeof(val));
    size_t fit = 64 * 1024 / each;
    char k[8];
    for (size_t i = 0; i < fit; i++) {
        snprintf(k, sizeof(k), "k%03zu", i);
        EXPECT_EQ(dl_shdict_set(d, k, 4, &v, 0, 0, 0), 0);
    }
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.entries, fit);
    EXPECT_EQ(st.bytes, fit * each);
    EXPECT_EQ(st.evictions, 0);
    /* k000 used again: k001 is now the least recently used */
    EXPECT(live(d, "k000", 0));
    EXPECT_EQ(dl_shdict_set(d, "new1", 4, &v, 0, 0, 0), 0);
    EXPECT(live(d, "k000", 0));
    EXPECT(!live(d, "k001", 0));
    EXPECT(live(d, "k002", 0));
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.evictions, 1);
    EXPECT(st.bytes <= st.max_bytes);
    /* an incr counts as a use too; counters made by incr are charged and evicted alike */
    dl_shdict_t *c = dl_shdict_new(64 * 1024);
    REQUIRE(c != NULL);
    double out, zero = 0;
    size_t cfit = 64 * 1024 / dl_shdict_entry_size(5, 0);
    REQUIRE(cfit < 10000);
    for (size_t i = 0; i < cfit; i++) {
        snprintf(k, sizeof(k), "c%04zu", i);
        EXPECT_EQ(dl_shdict_incr(c, k, 5, 1, &zero, 0, 0, &out), 0);
    }
    EXPECT_EQ(dl_shdict_incr(c, "c0000", 5, 1, NULL, 0, 0, &out), 0);
    EXPECT(out == 2);
    EXPECT_EQ(dl_shdict_incr(c, "cnew!", 5, 1, &zero, 0, 0, &out), 0);
    EXPECT(live(c, "c0000", 0));
    EXPECT(!live(c, "c0001", 0));
    dl_shdict_stats(c, &st);
    EXPECT_EQ(st.evictions, 1);
    EXPECT(st.bytes <= 64 * 1024);
    dl_shdict_free(c);
    /* an expired entry at the tail makes room without counting as an eviction */
    dl_shdict_t *e = dl_shdict_new(64 * 1024);
    REQUIRE(e != NULL);
    for (size_t i = 0; i < fit; i++) {
        snprintf(k, sizeof(k), "k%03zu", i);
        EXPECT_EQ(dl_shdict_set(e, k, 4, &v, i == 0 ? 10 : 0, 0, 0), 0);
    }
    EXPECT_EQ(dl_shdict_set(e, "new1", 4, &v, 0, 0, 100), 0);
    dl_shdict_stats(e, &st);
    EXPECT_EQ(st.evictions, 0);
    EXPECT_EQ(st.entries, fit);
    /* replacing a value recharges its size */
    dl_shdict_value_t small = str_v("x", 1);
    EXPECT_EQ(dl_shdict_set(e, "new1", 4, &small, 0, 0, 100), 0);
    dl_shdict_stats(e, &st);
    EXPECT_EQ(st.bytes, (fit - 1) * each + dl_shdict_entry_size(4, 1));
    dl_shdict_free(e);
    dl_shdict_free(d);
}

DL_TEST(shdict_too_large_is_refused)
{
    dl_shdict_t *d = dl_shdict_new(64 * 1024);
    REQUIRE(d != NULL);
    EXPECT_EQ(set_s(d, "keep", "me", 0, 0, 0), 0);
    static char val[64 * 1024];
    memset(val, 'v', sizeof(val));
    dl_shdict_value_t v = str_v(val, sizeof(val));
    EXPECT_EQ(dl_shdict_set(d, "big", 3, &v, 0, 0, 0), DL_ETOOBIG);
    /* nothing was evicted for it */
    EXPECT(live(d, "keep", 0));
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.evictions, 0);
    /* the largest that fits: the whole shard, which evicts the rest */
    v.len = 64 * 1024 - dl_shdict_entry_size(3, 0);
    EXPECT_EQ(dl_shdict_set(d, "big", 3, &v, 0, 0, 0), 0);
    EXPECT(!live(d, "keep", 0));
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.bytes, 64 * 1024);
    /* 16 MiB: 16 shards of 1 MiB, a value must fit in one */
    dl_shdict_t *m = dl_shdict_new(16u << 20);
    REQUIRE(m != NULL);
    dl_shdict_stats(m, &st);
    EXPECT_EQ(st.shards, 16);
    dl_shdict_value_t huge = str_v(NULL, 1u << 20);
    EXPECT_EQ(dl_shdict_set(m, "h", 1, &huge, 0, 0, 0), DL_ETOOBIG);
    dl_shdict_free(m);
    dl_shdict_free(d);
}

typedef struct {
    dl_shdict_t *d;
    int id;
    int n;
} worker_arg_t;

static void *incr_thread(void *p)
{
    worker_arg_t *a = p;
    double out, zero = 0;
    for (int i = 0; i < a->n; i++)
        if (dl_shdict_incr(a->d, "hits", 4, 1, &zero, 0, 0, &out) != 0)
            return (void *)1;
    return NULL;
}

DL_TEST(shdict_incr_threads_exact)
{
    dl_shdict_t *d = dl_shdict_new(16u << 20);
    REQUIRE(d != NULL);
    pthread_t th[4];
    worker_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg_t){d, i, 100000};
        EXPECT_EQ(pthread_create(&th[i], NULL, incr_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        EXPECT(r == NULL);
    }
    dl_shdict_value_t out;
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_shdict_get(d, "hits", 4, 0, &out, &b), 0);
    EXPECT(out.type == DL_SHV_NUMBER);
    EXPECT_EQ((long long)out.num, 400000);
    dl_shdict_free(d);
}

static void *mixed_thread(void *p)
{
    worker_arg_t *a = p;
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(a->id + 1);
    static char val[3000];
    dl_buf_t b = DL_BUF_INIT;
    for (int i = 0; i < a->n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char k[16];
        int klen = snprintf(k, sizeof(k), "key%u", (unsigned)(x % 64));
        uint64_t now = (uint64_t)i / 16;
        dl_shdict_value_t v;
        double out, zero = 0;
        switch ((x >> 20) % 6) {
        case 0:
            v = str_v(val, (size_t)(x >> 32) % sizeof(val));
            dl_shdict_set(a->d, k, (size_t)klen, &v, (x >> 40) % 50, 0, now);
            break;
        case 1:
            v = num_v(1);
            dl_shdict_set(a->d, k, (size_t)klen, &v, 0, DL_SHDICT_ADD, now);
            break;
        case 2:
            dl_shdict_incr(a->d, k, (size_t)klen, 1, &zero, (x >> 40) % 50, now, &out);
            break;
        case 3:
            dl_shdict_delete(a->d, k, (size_t)klen, now);
            break;
        case 4: {
            uint64_t left;
            dl_shdict_ttl(a->d, k, (size_t)klen, now, &left);
            break;
        }
        default:
            dl_buf_reset(&b);
            if (dl_shdict_get(a->d, k, (size_t)klen, now, &v, &b) == 0 &&
                v.type == DL_SHV_STRING && b.len != v.len)
                return (void *)1;
        }
    }
    dl_buf_free(&b);
    return NULL;
}

DL_TEST(shdict_threads_mixed_ops)
{
    /* small: 32 KiB holds a handful of these values, so evictions run too */
    dl_shdict_t *d = dl_shdict_new(32 * 1024);
    REQUIRE(d != NULL);
    pthread_t th[4];
    worker_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg_t){d, i, 200000};
        EXPECT_EQ(pthread_create(&th[i], NULL, mixed_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        EXPECT(r == NULL);
    }
    dl_shdict_stats_t st;
    dl_shdict_stats(d, &st);
    EXPECT(st.bytes <= st.max_bytes);
    EXPECT(st.entries <= 64);
    EXPECT(st.evictions > 0);
    /* deleting every key leaves nothing charged */
    for (int i = 0; i < 64; i++) {
        char k[16];
        int klen = snprintf(k, sizeof(k), "key%d", i);
        dl_shdict_delete(d, k, (size_t)klen, 0);
    }
    dl_shdict_stats(d, &st);
    EXPECT_EQ(st.entries, 0);
    EXPECT_EQ(st.bytes, 0);
    dl_shdict_free(d);
}
