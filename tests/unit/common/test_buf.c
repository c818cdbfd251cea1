/*
 * test_buf.c - runtime/common/buf.c through buf.h: growth keeps the bytes,
 * appendf below and above its stack buffer, u64 at the edges, consume of
 * part, all and more than all, reset keeping the storage, and the sticky
 * out-of-memory flag (a failing allocator, a size that wraps).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/internal.h"
#include "unit.h"

DL_TEST(buf_append_grows_and_keeps_bytes)
{
    dl_buf_t b = DL_BUF_INIT;
    EXPECT(b.data == NULL && b.len == 0 && b.cap == 0 && !b.oom);
    /* an empty append allocates nothing */
    EXPECT_EQ(dl_buf_append(&b, "", 0), 0);
    EXPECT(b.data == NULL);
    for (int i = 0; i < 10000; i++)
        EXPECT_EQ(dl_buf_append_char(&b, (char)('a' + i % 26)), 0);
    EXPECT_EQ(b.len, 10000);
    EXPECT_INT(b.cap, >=, b.len);
    int same = 1;
    for (int i = 0; i < 10000; i++)
        same &= b.data[i] == (char)('a' + i % 26);
    EXPECT(same);
    /* binary bytes, NUL included */
    EXPECT_EQ(dl_buf_append(&b, "x\0y", 3), 0);
    EXPECT_MEM(b.data + 10000, 3, "x\0y", 3);
    EXPECT_EQ(dl_buf_append_str(&b, "end"), 0);
    EXPECT_MEM(b.data + b.len - 3, 3, "end", 3);
    dl_buf_free(&b);
    EXPECT(b.data == NULL && b.len == 0 && b.cap == 0);
    /* reusable after free */
    EXPECT_EQ(dl_buf_append_str(&b, "again"), 0);
    EXPECT_MEM(b.data, b.len, "again", 5);
    dl_buf_free(&b);
    dl_buf_free(&b); /* twice is harmless */
}

DL_TEST(buf_reserve_makes_room)
{
    dl_buf_t b;
    dl_buf_init(&b);
    EXPECT_EQ(dl_buf_reserve(&b, 0), 0);
    EXPECT_EQ(dl_buf_reserve(&b, 1000), 0);
    EXPECT_INT(b.cap, >=, 1000);
    EXPECT_EQ(b.len, 0);
    size_t cap = b.cap;
    char *data = b.data;
    /* what fits moves nothing */
    EXPECT_EQ(dl_buf_append(&b, data, 0), 0);
    for (size_t i = 0; i < cap; i++)
        dl_buf_append_char(&b, 'z');
    EXPECT(b.data == data);
    EXPECT_EQ(b.cap, cap);
    /* one more grows it */
    EXPECT_EQ(dl_buf_append_char(&b, 'z'), 0);
    EXPECT_INT(b.cap, >, cap);
    EXPECT_EQ(b.len, cap + 1);
    /* a big jump at once, well past doubling */
    EXPECT_EQ(dl_buf_reserve(&b, 1u << 20), 0);
    EXPECT_INT(b.cap - b.len, >=, 1u << 20);
    dl_buf_free(&b);
}

DL_TEST(buf_appendf_short_and_long)
{
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_buf_appendf(&b, "%d-%s-%c", 42, "abc", 'z'), 0);
    EXPECT_MEM(b.data, b.len, "42-abc-z", 8);
    /* an empty result */
    EXPECT_EQ(dl_buf_appendf(&b, "%s", ""), 0);
    EXPECT_EQ(b.len, 8);
    /* longer than the 255 bytes formatted on the stack: formatted in place */
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    EXPECT_EQ(dl_buf_appendf(&b, "<%s|%d>", big, 7), 0);
    EXPECT_EQ(b.len, 8 + 1 + 4999 + 3);
    EXPECT_MEM(b.data, 9, "42-abc-z<", 9);
    EXPECT_MEM(b.data + b.len - 3, 3, "|7>", 3);
    /* exactly at the stack buffer's edge: 255 and 256 bytes */
    for (int n = 254; n <= 257; n++) {
        dl_buf_t e = DL_BUF_INIT;
        EXPECT_EQ(dl_buf_appendf(&e, "%.*s", n, big), 0);
        EXPECT_EQ(e.len, n);
        EXPECT_MEM(e.data, e.len, big, (size_t)n);
        dl_buf_free(&e);
    }
    dl_buf_free(&b);
}

DL_TEST(buf_append_u64)
{
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_buf_append_u64(&b, 0), 0);
    EXPECT_EQ(dl_buf_append_char(&b, ' '), 0);
    EXPECT_EQ(dl_buf_append_u64(&b, 10), 0);
    EXPECT_EQ(dl_buf_append_char(&b, ' '), 0);
    EXPECT_EQ(dl_buf_append_u64(&b, UINT64_MAX), 0);
    EXPECT_EQ(dl_buf_append_char(&b, '\0'), 0);
    EXPECT_STR(b.data, "0 10 18446744073709551615");
    dl_buf_free(&b);
}

DL_TEST(buf_consume_and_reset)
{
    dl_buf_t b = DL_BUF_INIT;
    dl_buf_append_str(&b, "hello world");
    dl_buf_consume(&b, 0);
    EXPECT_MEM(b.data, b.len, "hello world", 11);
    dl_buf_consume(&b, 6);
    EXPECT_MEM(b.data, b.len, "world", 5);
    dl_buf_consume(&b, 5); /* all of it */
    EXPECT_EQ(b.len, 0);
    dl_buf_append_str(&b, "abc");
    dl_buf_consume(&b, 1000); /* more than there is */
    EXPECT_EQ(b.len, 0);
    /* reset keeps the storage */
    dl_buf_append_str(&b, "abc");
    char *data = b.data;
    size_t cap = b.cap;
    dl_buf_reset(&b);
    EXPECT_EQ(b.len, 0);
    EXPECT(b.data == data && b.cap == cap);
    dl_buf_consume(&b, 1); /* on an empty buffer */
    EXPECT_EQ(b.len, 0);
    dl_buf_free(&b);
    /* consume on a never-used buffer */
    dl_buf_consume(&b, 3);
    EXPECT_EQ(b.len, 0);
}

/* ---- allocation failure ---------------------------------------------------------------- */

static int fail_reallocs; /* reallocs fail while > 0 */

static void *t_malloc(size_t n)
{
    return malloc(n);
}

static void *t_realloc(void *p, size_t n)
{
    if (fail_reallocs > 0)
        return NULL;
    return realloc(p, n);
}

static void t_free(void *p)
{
    free(p);
}

DL_TEST(buf_oom_is_sticky)
{
    dl_set_allocator(t_malloc, t_realloc, t_free);
    dl_buf_t b = DL_BUF_INIT;
    EXPECT_EQ(dl_buf_append_str(&b, "kept"), 0);
    fail_reallocs = 1;
    char big[200];
    memset(big, 'x', sizeof(big));
    EXPECT_EQ(dl_buf_append(&b, big, sizeof(big)), DL_ENOMEM);
    EXPECT(b.oom);
    /* what was there stays */
    EXPECT_MEM(b.data, b.len, "kept", 4);
    fail_reallocs = 0;
    /* sticky: later appends fail too, even ones that would fit */
    EXPECT_EQ(dl_buf_append_char(&b, 'y'), DL_ENOMEM);
    EXPECT_EQ(dl_buf_append(&b, "y", 1), DL_ENOMEM);
    EXPECT_EQ(dl_buf_append(&b, "", 0), DL_ENOMEM);
    EXPECT_EQ(dl_buf_appendf(&b, "%d", 1), DL_ENOMEM);
    EXPECT_EQ(dl_buf_append_u64(&b, 1), DL_ENOMEM);
    EXPECT_EQ(dl_buf_reserve(&b, 0), DL_ENOMEM);
    EXPECT_EQ(b.len, 4);
    /* reset clears the flag */
    dl_buf_reset(&b);
    EXPECT(!b.oom);
    EXPECT_EQ(dl_buf_append_str(&b, "new"), 0);
    EXPECT_MEM(b.data, b.len, "new", 3);
    dl_buf_free(&b);
    EXPECT(!b.oom);

    /* the long appendf path fails the same way */
    fail_reallocs = 1;
    char fmt_big[1000];
    memset(fmt_big, 'f', sizeof(fmt_big) - 1);
    fmt_big[sizeof(fmt_big) - 1] = '\0';
    EXPECT_EQ(dl_buf_appendf(&b, "%s", fmt_big), DL_ENOMEM);
    EXPECT(b.oom);
    EXPECT_EQ(b.len, 0);
    fail_reallocs = 0;
    dl_buf_free(&b);
}

DL_TEST(buf_reserve_refuses_a_wrapping_size)
{
    dl_buf_t b = DL_BUF_INIT;
    dl_buf_append_str(&b, "abc");
    /* len + n wraps around SIZE_MAX */
    EXPECT_EQ(dl_buf_reserve(&b, SIZE_MAX - 1), DL_ENOMEM);
    EXPECT(b.oom);
    EXPECT_MEM(b.data, b.len, "abc", 3);
    dl_buf_free(&b);
    /* an append whose length wraps it the same way (a length known only at
     * run time, as a caller's would be: the compiler rejects the constant) */
    volatile size_t huge = SIZE_MAX;
    dl_buf_append_str(&b, "abc");
    EXPECT_EQ(dl_buf_append(&b, "abc", huge), DL_ENOMEM);
    EXPECT(b.oom);
    EXPECT_EQ(b.len, 3);
    dl_buf_free(&b);
}
