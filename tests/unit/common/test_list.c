/*
 * test_list.c - unit tests of runtime/common/list.h, the one intrusive
 * doubly-linked list: order of insert at head and tail, removal at either
 * end and in the middle, double removal, removal while iterating.
 */
#include <stddef.h>

#include "common/list.h"
#include "unit.h"

typedef struct {
    int v;
    dl_list_t node;
} item_t;

/* The values of h in order, as digits, into s. */
static const char *values(const dl_list_t *h, char *s)
{
    char *p = s;
    const dl_list_t *it;
    dl_list_foreach(it, h)
        *p++ = (char)('0' + dl_list_entry(it, const item_t, node)->v);
    *p = '\0';
    return s;
}

DL_TEST(list_insert_remove_foreach)
{
    dl_list_t h;
    item_t it[5];
    char s[8];
    dl_list_init(&h);
    EXPECT(dl_list_empty(&h));
    EXPECT_STR(values(&h, s), "");
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        dl_list_init(&it[i].node);
        EXPECT(!dl_list_linked(&it[i].node));
    }
    dl_list_insert_tail(&h, &it[1].node);
    dl_list_insert_tail(&h, &it[2].node);
    dl_list_insert_head(&h, &it[0].node);
    dl_list_insert_tail(&h, &it[3].node);
    dl_list_insert_after(&it[3].node, &it[4].node);
    EXPECT(!dl_list_empty(&h));
    EXPECT(dl_list_linked(&it[2].node));
    EXPECT_STR(values(&h, s), "01234");
    EXPECT(dl_list_entry(h.next, item_t, node) == &it[0]);
    EXPECT(dl_list_entry(h.prev, item_t, node) == &it[4]);

    dl_list_remove(&it[2].node); /* middle */
    EXPECT_STR(values(&h, s), "0134");
    EXPECT(!dl_list_linked(&it[2].node));
    dl_list_remove(&it[2].node); /* twice: harmless */
    EXPECT_STR(values(&h, s), "0134");
    dl_list_remove(&it[0].node); /* first */
    dl_list_remove(&it[4].node); /* last */
    EXPECT_STR(values(&h, s), "13");
    dl_list_remove(&it[1].node);
    dl_list_remove(&it[3].node);
    EXPECT(dl_list_empty(&h));
    EXPECT(h.next == &h && h.prev == &h);
}

DL_TEST(list_remove_while_iterating)
{
    dl_list_t h, *n, *tmp;
    item_t it[6];
    char s[8];
    dl_list_init(&h);
    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        dl_list_insert_tail(&h, &it[i].node);
    }
    dl_list_foreach_safe(n, tmp, &h) {
        if (dl_list_entry(n, item_t, node)->v % 2 == 0)
            dl_list_remove(n);
    }
    EXPECT_STR(values(&h, s), "135");
    dl_list_foreach_safe(n, tmp, &h)
        dl_list_remove(n);
    EXPECT(dl_list_empty(&h));
}
