/*
 * pubsub.h - api.pubsub's in-process message hub: channels that every
 * worker thread of the process may publish to and subscribe on. The runtime
 * creates one hub at start (dl_pubsub_new) and one inbox per worker
 * (dl_pubsub_inbox_new); a subscription belongs to an inbox, and only that
 * inbox's thread subscribes, reads and cancels it.
 *
 * A publish copies the message once into a reference-counted block and
 * queues a reference on every subscription of the channel, in every inbox,
 * then wakes each inbox that got something (its wake callback, called under
 * the hub's mutex: it must not block or call back into the hub; a worker's
 * is a uv_async_send). A subscription's queue holds at most the hub's queue
 * limit; a message that finds it full is dropped for that subscription and
 * counted, or, for a subscription made with DL_PUBSUB_CLOSE_ON_OVERFLOW,
 * closes it (its queued messages are dropped too; its owner sees
 * DL_ECANCELED from dl_pubsub_next and then cancels it).
 *
 * The hub is a backend behind dl_pubsub_ops_t, as the response cache is
 * behind dl_cache_ops_t (cache.h): the memory backend here delivers to the
 * process's inboxes; a Redis backend would PUBLISH instead and feed what its
 * per-worker subscriber connection receives into that worker's inbox with
 * dl_pubsub_deliver(). Everything is thread-safe except dl_pubsub_free().
 * One mutex guards the channel table, the queues and the ready lists: a
 * publish holds it for one pointer push per subscriber (the copy is made
 * before), a read for one pop.
 */
#ifndef DL_PUBSUB_H
#define DL_PUBSUB_H

#include <stddef.h>
#include <stdint.h>

#define DL_PUBSUB_MAX_CHANNEL 256 /* channels are 1..256 bytes */

typedef struct dl_pubsub_s dl_pubsub_t;
typedef struct dl_pubsub_inbox_s dl_pubsub_inbox_t;
typedef struct dl_pubsub_sub_s dl_pubsub_sub_t;

/** One published message, shared by the queues it sits in. */
typedef struct {
    int refs; /* atomic */
    size_t len;
    char data[]; /* len bytes and a NUL */
} dl_pubsub_msg_t;

typedef struct {
    size_t max_message;  /* bytes (DEVLOOP_PUBSUB_MAX_MESSAGE) */
    size_t queue;        /* messages queued per subscription (DEVLOOP_PUBSUB_QUEUE) */
    size_t max_subs;     /* subscriptions per inbox (DEVLOOP_PUBSUB_MAX_SUBS) */
} dl_pubsub_limits_t;

typedef struct {
    uint64_t published;  /* publish calls that were accepted */
    uint64_t delivered;  /* messages handed to subscribers (dl_pubsub_next) */
    uint64_t dropped;    /* queued nowhere for a full queue, or dropped with a closed one */
    uint64_t closed;     /* subscriptions closed by an overflow */
    size_t subscriptions; /* live now, in every inbox */
    size_t channels;     /* with a subscriber now */
} dl_pubsub_stats_t;

/** The backend's table (the memory one: dl_pubsub_new's). */
typedef struct {
    const char *type; /* "memory" */
    /** Queues msg for the channel's subscribers; *queued: how many. */
    int (*publish)(dl_pubsub_t *ps, const char *ch, size_t chlen, const char *msg, size_t len,
                   size_t *queued);
} dl_pubsub_ops_t;

enum { DL_PUBSUB_CLOSE_ON_OVERFLOW = 1 };

/** A hub with these limits (each at least 1); NULL when out of memory. */
dl_pubsub_t *dl_pubsub_new(const dl_pubsub_limits_t *lim);
/** Frees the hub, its inboxes, every subscription and queued message. No
 * other call may run, and no wake may be in flight. NULL is a no-op. */
void dl_pubsub_free(dl_pubsub_t *ps);
const dl_pubsub_ops_t *dl_pubsub_ops(const dl_pubsub_t *ps);
const dl_pubsub_limits_t *dl_pubsub_limits(const dl_pubsub_t *ps);

/**
 * An inbox: wake(data) is called (any thread, under the hub's mutex) when one
 * of its subscriptions gets a message after dl_pubsub_ready() last returned
 * it. NULL when out of memory. The hub owns it (freed with the hub).
 */
dl_pubsub_inbox_t *dl_pubsub_inbox_new(dl_pubsub_t *ps, void (*wake)(void *), void *data);
/**
 * The inbox's thread is going: its subscriptions stop receiving (their
 * queues are dropped) and wake is never called again. Its subscriptions
 * must still be cancelled by their owner (or go with the hub). Harmless twice.
 */
void dl_pubsub_inbox_close(dl_pubsub_inbox_t *in);

/**
 * The reader: read(data) is what dl_pubsub_inbox_run() calls, on the inbox's
 * thread (the binding that resumes the subscribers' tasks sets it). read NULL
 * clears it, only when data is still the reader's.
 */
void dl_pubsub_inbox_set_reader(dl_pubsub_inbox_t *in, void (*read)(void *), void *data);
/** Calls the reader (the inbox's thread, after a wake). */
void dl_pubsub_inbox_run(dl_pubsub_inbox_t *in);
/** Calls wake as a message would (the reader has work of its own to do). */
void dl_pubsub_inbox_kick(dl_pubsub_inbox_t *in);

/**
 * Publishes msg on ch: through the backend (dl_pubsub_ops(ps)->publish).
 * *queued: the subscriptions it was queued for. Returns 0, DL_EINVAL (a
 * channel outside 1..DL_PUBSUB_MAX_CHANNEL bytes), DL_ETOOBIG (longer than
 * max_message) or DL_ENOMEM.
 */
int dl_pubsub_publish(dl_pubsub_t *ps, const char *ch, size_t chlen, const char *msg, size_t len,
                      size_t *queued);
/** Queues msg for in's subscribers of ch only (what a backend receives for
 * this worker); same returns as dl_pubsub_publish, nothing counted as published. */
int dl_pubsub_deliver(dl_pubsub_inbox_t *in, const char *ch, size_t chlen, const char *msg,
                      size_t len, size_t *queued);

/**
 * Subscribes in to ch; user is what dl_pubsub_ready() returns for it.
 * Returns 0 and *out, DL_EINVAL (a bad channel), DL_ETOOBIG (the inbox has
 * max_subs), DL_ECANCELED (the inbox is closed) or DL_ENOMEM.
 */
int dl_pubsub_subscribe(dl_pubsub_inbox_t *in, const char *ch, size_t chlen, int flags,
                        void *user, dl_pubsub_sub_t **out);
/** Ends s and frees it with its queued messages (the inbox's thread). NULL is a no-op. */
void dl_pubsub_cancel(dl_pubsub_sub_t *s);
/**
 * The next message of s, which the caller owns (dl_pubsub_msg_unref).
 * Returns 0, DL_ENOENT (none queued) or DL_ECANCELED (closed by an overflow
 * or by dl_pubsub_inbox_close: nothing more will come).
 */
int dl_pubsub_next(dl_pubsub_sub_t *s, dl_pubsub_msg_t **out);
/** The channel s was made for (NUL-terminated) and its length. */
const char *dl_pubsub_channel(const dl_pubsub_sub_t *s, size_t *len);
/** Messages queued on s now. */
size_t dl_pubsub_queued(dl_pubsub_sub_t *s);

/**
 * Up to max users of in's subscriptions that got a message (or were closed)
 * since they were last returned, oldest first; returns how many. A later
 * message wakes the inbox again.
 */
size_t dl_pubsub_ready(dl_pubsub_inbox_t *in, void **users, size_t max);

void dl_pubsub_msg_unref(dl_pubsub_msg_t *m);

/** The hub's figures (under its lock). */
void dl_pubsub_stats(dl_pubsub_t *ps, dl_pubsub_stats_t *out);

#endif /* DL_PUBSUB_H */
