/*
 * test_pubsub.c - runtime/cache/pubsub.c through pubsub.h: channel and
 * message bounds, delivery to every subscription of a channel and to no
 * other, order, the ready list and its wakes, overflow dropping and closing,
 * cancel with messages queued, an inbox closed, the subscription cap, then 4
 * threads publishing at once to 2 inboxes with exact counts; the hub freed
 * with messages still queued (run it under DL_SANITIZE=ON: no leak).
 */
#include <pthread.h>
#include <string.h>

#include "cache/pubsub.h"
#include "common/internal.h"
#include "unit.h"

static dl_pubsub_t *hub(size_t queue, size_t max_subs)
{
    dl_pubsub_limits_t lim = {1024, queue, max_subs};
    return dl_pubsub_new(&lim);
}

static void count_wake(void *data)
{
    __atomic_add_fetch((int *)data, 1, __ATOMIC_RELAXED);
}

static int pub(dl_pubsub_t *ps, const char *ch, const char *msg)
{
    size_t n = 0;
    int rc = dl_pubsub_publish(ps, ch, strlen(ch), msg, strlen(msg), &n);
    return rc == 0 ? (int)n : rc;
}

/* the next message of s as text in buf ("" and the code when none) */
static int next_str(dl_pubsub_sub_t *s, char *buf, size_t cap)
{
    dl_pubsub_msg_t *m;
    buf[0] = '\0';
    int rc = dl_pubsub_next(s, &m);
    if (rc == 0) {
        snprintf(buf, cap, "%s", m->data);
        dl_pubsub_msg_unref(m);
    }
    return rc;
}

DL_TEST(pubsub_bounds)
{
    dl_pubsub_t *ps = hub(4, 4);
    REQUIRE(ps != NULL);
    dl_pubsub_inbox_t *in = dl_pubsub_inbox_new(ps, NULL, NULL);
    dl_pubsub_sub_t *s;
    char big[2000];
    memset(big, 'x', sizeof(big));
    size_t n;
    EXPECT_EQ(dl_pubsub_subscribe(in, "", 0, 0, NULL, &s), DL_EINVAL);
    EXPECT_EQ(dl_pubsub_subscribe(in, big, 257, 0, NULL, &s), DL_EINVAL);
    EXPECT_EQ(dl_pubsub_subscribe(in, big, 256, 0, NULL, &s), 0);
    EXPECT_EQ(dl_pubsub_publish(ps, big, 257, "m", 1, &n), DL_EINVAL);
    EXPECT_EQ(dl_pubsub_publish(ps, big, 256, big, 1025, &n), DL_ETOOBIG);
    EXPECT_EQ(dl_pubsub_publish(ps, big, 256, big, 1024, &n), 0);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(dl_pubsub_publish(ps, big, 256, "", 0, &n), 0); /* empty messages are messages */
    EXPECT_EQ(n, 1);
    dl_pubsub_msg_t *m;
    EXPECT_EQ(dl_pubsub_next(s, &m), 0);
    EXPECT_EQ(m->len, 1024);
    dl_pubsub_msg_unref(m);
    EXPECT_EQ(dl_pubsub_next(s, &m), 0);
    EXPECT_EQ(m->len, 0);
    dl_pubsub_msg_unref(m);
    EXPECT_EQ(dl_pubsub_next(s, &m), DL_ENOENT);
    /* the cap counts per inbox */
    dl_pubsub_sub_t *more[3];
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &more[i]), 0);
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &s), DL_ETOOBIG);
    dl_pubsub_inbox_t *other = dl_pubsub_inbox_new(ps, NULL, NULL);
    dl_pubsub_sub_t *o;
    EXPECT_EQ(dl_pubsub_subscribe(other, "c", 1, 0, NULL, &o), 0);
    dl_pubsub_cancel(more[0]);
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &more[0]), 0);
    dl_pubsub_free(ps); /* everything not cancelled goes with it */
}

DL_TEST(pubsub_delivery_order_and_wakes)
{
    dl_pubsub_t *ps = hub(100, 100);
    int wakes_a = 0, wakes_b = 0;
    dl_pubsub_inbox_t *a = dl_pubsub_inbox_new(ps, count_wake, &wakes_a);
    dl_pubsub_inbox_t *b = dl_pubsub_inbox_new(ps, count_wake, &wakes_b);
    dl_pubsub_sub_t *a1, *a2, *b1, *bx;
    int u_a1 = 1, u_a2 = 2, u_b1 = 3;
    EXPECT_EQ(dl_pubsub_subscribe(a, "news", 4, 0, &u_a1, &a1), 0);
    EXPECT_EQ(dl_pubsub_subscribe(a, "news", 4, 0, &u_a2, &a2), 0);
    EXPECT_EQ(dl_pubsub_subscribe(b, "news", 4, 0, &u_b1, &b1), 0);
    EXPECT_EQ(dl_pubsub_subscribe(b, "other", 5, 0, NULL, &bx), 0);
    EXPECT_EQ(pub(ps, "news", "one"), 3);
    EXPECT_EQ(pub(ps, "news", "two"), 3);
    EXPECT_EQ(pub(ps, "nobody", "x"), 0);
    EXPECT_EQ(wakes_a, 1); /* one wake until the ready list is read */
    EXPECT_EQ(wakes_b, 1);
    void *users[8];
    EXPECT_EQ(dl_pubsub_ready(a, users, 8), 2);
    EXPECT(users[0] == &u_a1 && users[1] == &u_a2);
    EXPECT_EQ(dl_pubsub_ready(a, users, 8), 0);
    char buf[64];
    EXPECT_EQ(next_str(a1, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "one");
    EXPECT_EQ(next_str(a1, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "two");
    EXPECT_EQ(next_str(a1, buf, sizeof(buf)), DL_ENOENT);
    EXPECT_EQ(next_str(bx, buf, sizeof(buf)), DL_ENOENT);
    EXPECT_EQ(pub(ps, "news", "three"), 3);
    EXPECT_EQ(wakes_a, 2);
    size_t len;
    EXPECT_STR(dl_pubsub_channel(b1, &len), "news");
    EXPECT_EQ(len, 4);
    EXPECT_EQ(dl_pubsub_queued(b1), 3);
    dl_pubsub_stats_t st;
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(st.published, 4);
    EXPECT_EQ(st.delivered, 2);
    EXPECT_EQ(st.subscriptions, 4);
    EXPECT_EQ(st.channels, 2);
    /* a cancel with messages queued frees them (and leaves the ready list) */
    dl_pubsub_cancel(a2);
    dl_pubsub_cancel(b1);
    EXPECT_EQ(dl_pubsub_ready(a, users, 8), 1);
    EXPECT(users[0] == &u_a1);
    EXPECT_EQ(dl_pubsub_ready(b, users, 8), 0);
    /* deliver: one inbox only, not a publish */
    size_t n;
    EXPECT_EQ(dl_pubsub_deliver(b, "other", 5, "d", 1, &n), 0);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(dl_pubsub_deliver(a, "other", 5, "d", 1, &n), 0);
    EXPECT_EQ(n, 0);
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(st.published, 4);
    EXPECT_EQ(st.subscriptions, 2);
    dl_pubsub_free(ps); /* "three" on a1 and "d" on bx still queued */
}

DL_TEST(pubsub_overflow_drop_and_close)
{
    dl_pubsub_t *ps = hub(3, 10);
    dl_pubsub_inbox_t *in = dl_pubsub_inbox_new(ps, NULL, NULL);
    dl_pubsub_sub_t *keep, *closing;
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &keep), 0);
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, DL_PUBSUB_CLOSE_ON_OVERFLOW, NULL, &closing), 0);
    EXPECT_EQ(pub(ps, "c", "1"), 2);
    EXPECT_EQ(pub(ps, "c", "2"), 2);
    EXPECT_EQ(pub(ps, "c", "3"), 2);
    EXPECT_EQ(pub(ps, "c", "4"), 0); /* both full: one drops, one closes */
    EXPECT_EQ(pub(ps, "c", "5"), 0);
    dl_pubsub_stats_t st;
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(st.dropped, 2 + 4); /* keep: 4 and 5; closing: 4 and its 3 queued */
    EXPECT_EQ(st.closed, 1);
    EXPECT_EQ(st.subscriptions, 1);
    char buf[16];
    EXPECT_EQ(next_str(closing, buf, sizeof(buf)), DL_ECANCELED);
    EXPECT_EQ(next_str(keep, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "1");
    EXPECT_EQ(pub(ps, "c", "6"), 1); /* room again for keep */
    EXPECT_EQ(next_str(keep, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "2");
    EXPECT_EQ(next_str(keep, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "3");
    EXPECT_EQ(next_str(keep, buf, sizeof(buf)), 0);
    EXPECT_STR(buf, "6");
    dl_pubsub_cancel(closing);
    /* the last subscription of a channel closed by overflow */
    dl_pubsub_cancel(keep);
    EXPECT_EQ(dl_pubsub_subscribe(in, "d", 1, DL_PUBSUB_CLOSE_ON_OVERFLOW, NULL, &closing), 0);
    for (int i = 0; i < 4; i++)
        pub(ps, "d", "x");
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(st.channels, 0);
    EXPECT_EQ(pub(ps, "d", "x"), 0);
    dl_pubsub_cancel(closing);
    dl_pubsub_free(ps);
}

DL_TEST(pubsub_inbox_close)
{
    dl_pubsub_t *ps = hub(10, 10);
    int wakes = 0;
    dl_pubsub_inbox_t *in = dl_pubsub_inbox_new(ps, count_wake, &wakes);
    dl_pubsub_sub_t *s, *t;
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &s), 0);
    EXPECT_EQ(pub(ps, "c", "queued"), 1);
    dl_pubsub_inbox_close(in);
    dl_pubsub_inbox_close(in);
    EXPECT_EQ(pub(ps, "c", "late"), 0);
    EXPECT_EQ(wakes, 1);
    char buf[16];
    EXPECT_EQ(next_str(s, buf, sizeof(buf)), DL_ECANCELED);
    EXPECT_EQ(dl_pubsub_subscribe(in, "c", 1, 0, NULL, &t), DL_ECANCELED);
    dl_pubsub_cancel(s);
    dl_pubsub_free(ps);
}

/* ---- threads */

enum { N_THREADS = 4, N_MSGS = 20000 };

typedef struct {
    dl_pubsub_t *ps;
    int id;
    size_t queued;
} pub_arg_t;

static void *publisher(void *p)
{
    pub_arg_t *a = p;
    char msg[32];
    for (int i = 0; i < N_MSGS; i++) {
        int n = snprintf(msg, sizeof(msg), "%d:%d", a->id, i);
        size_t q = 0;
        if (dl_pubsub_publish(a->ps, "t", 1, msg, (size_t)n, &q) == 0)
            a->queued += q;
    }
    return NULL;
}

typedef struct {
    dl_pubsub_sub_t *sub;
    int stop; /* atomic: the publishers are done */
    long got;
    int order_ok;
} reader_t;

/* reads while the publishers run: per publisher, numbers only go up */
static void *reader(void *p)
{
    reader_t *r = p;
    int last[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        last[i] = -1;
    r->order_ok = 1;
    int last_look = 0; /* the publishers were done before this empty read */
    for (;;) {
        dl_pubsub_msg_t *m;
        int stopped = __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE);
        int rc = dl_pubsub_next(r->sub, &m);
        if (rc == DL_ENOENT) {
            if (last_look)
                break;
            last_look = stopped;
            continue;
        }
        if (rc != 0)
            break;
        int id = -1, i = -1;
        sscanf(m->data, "%d:%d", &id, &i);
        if (id < 0 || id >= N_THREADS || i <= last[id])
            r->order_ok = 0;
        else
            last[id] = i;
        r->got++;
        dl_pubsub_msg_unref(m);
    }
    return NULL;
}

DL_TEST(pubsub_threads_exact_counts)
{
    /* queues big enough for everything: nothing may be lost */
    dl_pubsub_t *ps = hub(N_THREADS * N_MSGS, 10);
    int w1 = 0, w2 = 0;
    dl_pubsub_inbox_t *a = dl_pubsub_inbox_new(ps, count_wake, &w1);
    dl_pubsub_inbox_t *b = dl_pubsub_inbox_new(ps, count_wake, &w2);
    reader_t ra = {0}, rb = {0};
    REQUIRE(dl_pubsub_subscribe(a, "t", 1, 0, NULL, &ra.sub) == 0);
    REQUIRE(dl_pubsub_subscribe(b, "t", 1, 0, NULL, &rb.sub) == 0);
    pthread_t th[N_THREADS], rt[2];
    pub_arg_t args[N_THREADS];
    pthread_create(&rt[0], NULL, reader, &ra);
    pthread_create(&rt[1], NULL, reader, &rb);
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (pub_arg_t){ps, i, 0};
        EXPECT_EQ(pthread_create(&th[i], NULL, publisher, &args[i]), 0);
    }
    size_t total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += args[i].queued;
    }
    __atomic_store_n(&ra.stop, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&rb.stop, 1, __ATOMIC_RELEASE);
    pthread_join(rt[0], NULL);
    pthread_join(rt[1], NULL);
    EXPECT_EQ(total, 2 * N_THREADS * N_MSGS);
    EXPECT_EQ(ra.got, N_THREADS * N_MSGS);
    EXPECT_EQ(rb.got, N_THREADS * N_MSGS);
    EXPECT(ra.order_ok && rb.order_ok);
    dl_pubsub_stats_t st;
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(st.published, N_THREADS * N_MSGS);
    EXPECT_EQ(st.delivered, 2 * N_THREADS * N_MSGS);
    EXPECT_EQ(st.dropped, 0);
    dl_pubsub_cancel(ra.sub);
    dl_pubsub_cancel(rb.sub);
    dl_pubsub_free(ps);
}

DL_TEST(pubsub_threads_overflow_counts)
{
    /* nobody reads: each subscription keeps 100, the rest are dropped, and
     * queued + dropped is exactly what was published times subscribers */
    dl_pubsub_t *ps = hub(100, 10);
    dl_pubsub_inbox_t *a = dl_pubsub_inbox_new(ps, NULL, NULL);
    dl_pubsub_sub_t *s1, *s2;
    REQUIRE(dl_pubsub_subscribe(a, "t", 1, 0, NULL, &s1) == 0);
    REQUIRE(dl_pubsub_subscribe(a, "t", 1, 0, NULL, &s2) == 0);
    pthread_t th[N_THREADS];
    pub_arg_t args[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (pub_arg_t){ps, i, 0};
        pthread_create(&th[i], NULL, publisher, &args[i]);
    }
    size_t total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += args[i].queued;
    }
    dl_pubsub_stats_t st;
    dl_pubsub_stats(ps, &st);
    EXPECT_EQ(total, 200);
    EXPECT_EQ(st.dropped, 2 * N_THREADS * N_MSGS - 200);
    EXPECT_EQ(dl_pubsub_queued(s1), 100);
    dl_pubsub_cancel(s1); /* s2 goes with the hub, its 100 messages too */
    dl_pubsub_free(ps);
}
