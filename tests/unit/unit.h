/*
 * unit.h - the dl_unit test harness: DL_TEST(name) registers a test, the
 * EXPECT_* macros print both sides on failure. `dl_unit NAME` runs one test in
 * a child process with a timeout and prints TAP; `dl_unit` runs them all.
 */
#ifndef DL_UNIT_H
#define DL_UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef void (*dl_unit_fn)(void);
void dl_unit_register(const char *name, dl_unit_fn fn);
extern int dl_unit_failures;

#define DL_TEST(name)                                                      \
    static void test_##name(void);                                         \
    __attribute__((constructor)) static void register_##name(void)         \
    {                                                                      \
        dl_unit_register(#name, test_##name);                              \
    }                                                                      \
    static void test_##name(void)

#define DL_FAIL_AT(...)                                                    \
    do {                                                                   \
        fprintf(stderr, "# %s:%d: ", __FILE__, __LINE__);                  \
        fprintf(stderr, __VA_ARGS__);                                      \
        fprintf(stderr, "\n");                                             \
        dl_unit_failures++;                                                \
    } while (0)

#define EXPECT(c)                                                          \
    do {                                                                   \
        if (!(c))                                                          \
            DL_FAIL_AT("expected %s", #c);                                 \
    } while (0)

/* Like EXPECT, but the test stops here (what follows needs c). */
#define REQUIRE(c)                                                         \
    do {                                                                   \
        if (!(c)) {                                                        \
            DL_FAIL_AT("expected %s", #c);                                 \
            return;                                                        \
        }                                                                  \
    } while (0)

#define EXPECT_INT(a, op, b)                                               \
    do {                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                \
        if (!(a_ op b_))                                                   \
            DL_FAIL_AT("%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);     \
    } while (0)

#define EXPECT_EQ(a, b) EXPECT_INT(a, ==, b)

#define EXPECT_STR(a, b)                                                   \
    do {                                                                   \
        const char *a_ = (a), *b_ = (b);                                   \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)               \
            DL_FAIL_AT("%s == %s: \"%s\" vs \"%s\"", #a, #b,               \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");            \
    } while (0)

#define EXPECT_MEM(a, alen, b, blen)                                       \
    do {                                                                   \
        size_t al_ = (alen), bl_ = (blen);                                 \
        if (al_ != bl_ || memcmp((a), (b), al_) != 0)                      \
            DL_FAIL_AT("%s == %s: \"%.*s\" (%zu) vs \"%.*s\" (%zu)", #a,   \
                       #b, (int)al_, (const char *)(a), al_, (int)bl_,     \
                       (const char *)(b), bl_);                            \
    } while (0)

#endif
