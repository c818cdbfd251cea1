/*
 * list.h - the one intrusive doubly-linked list: a circular list through a
 * head node, so insert and remove never test for an end (the manner of
 * libuv's queue). Embed a dl_list_t in each item, get the item back with
 * dl_list_entry(), which refuses a pointer that is not a dl_list_t *.
 */
#ifndef DL_LIST_H
#define DL_LIST_H

#include <stddef.h>

typedef struct dl_list_s {
    struct dl_list_s *next, *prev;
} dl_list_t;

/** An empty list, or a node that is in none (dl_list_linked() then says 0). */
static inline void dl_list_init(dl_list_t *h)
{
    h->next = h;
    h->prev = h;
}

static inline int dl_list_empty(const dl_list_t *h)
{
    return h->next == h;
}

/** 1 when node n is in a list (initialized nodes only). */
static inline int dl_list_linked(const dl_list_t *n)
{
    return n->next != n;
}

/** Inserts n after at: at the front when at is the head. */
static inline void dl_list_insert_after(dl_list_t *at, dl_list_t *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
}

static inline void dl_list_insert_head(dl_list_t *h, dl_list_t *n)
{
    dl_list_insert_after(h, n);
}

static inline void dl_list_insert_tail(dl_list_t *h, dl_list_t *n)
{
    dl_list_insert_after(h->prev, n);
}

/** Unlinks n and leaves it self-linked, so removing it twice is harmless. */
static inline void dl_list_remove(dl_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n;
    n->prev = n;
}

/** The item of type whose member field is the node ptr. */
#define dl_list_entry(ptr, type, field)                                       \
    ((type *)(void *)((char *)(1 ? (ptr) : &((type *)0)->field) -             \
                      offsetof(type, field)))

/** Visits each node it of list h, first to last; it must stay linked. */
#define dl_list_foreach(it, h) for ((it) = (h)->next; (it) != (h); (it) = (it)->next)

/** As dl_list_foreach, where the body may remove it (tmp holds the next). */
#define dl_list_foreach_safe(it, tmp, h)                                      \
    for ((it) = (h)->next, (tmp) = (it)->next; (it) != (h); (it) = (tmp), (tmp) = (it)->next)

#endif /* DL_LIST_H */
