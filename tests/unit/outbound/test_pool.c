/*
 * test_pool.c - runtime/outbound/pool.c and conn.c against a real loopback
 * listener on the same loop: connections made in slots, kept idle and
 * reused, dropped when the peer closes them while idle or when their idle
 * time runs out, the idle list bounded, and callers beyond an origin's cap
 * queued, handed connections or slots in turn, or refused past the backlog.
 */
#include <string.h>

#include "common/internal.h"
#include "outbound/pool.h"
#include "unit.h"

#define MAX_PEERS 16

typedef struct {
    uv_loop_t loop;
    uv_tcp_t server;
    int port;
    int accepted;
    uv_tcp_t *peers[MAX_PEERS];
    dl_out_pool_t *pool;
    dl_dns_addrs_t addrs;
} fixture_t;

static void on_peer_closed(uv_handle_t *h)
{
    dl_free(h);
}

static void on_accept(uv_stream_t *s, int status)
{
    fixture_t *f = s->data;
    if (status < 0)
        return;
    uv_tcp_t *c = dl_calloc(1, sizeof(*c));
    uv_tcp_init(&f->loop, c);
    if (uv_accept(s, (uv_stream_t *)c) != 0 || f->accepted >= MAX_PEERS) {
        uv_close((uv_handle_t *)c, on_peer_closed);
        return;
    }
    f->peers[f->accepted++] = c;
}

static void fixture_init(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    uv_loop_init(&f->loop);
    uv_tcp_init(&f->loop, &f->server);
    f->server.data = f;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&f->server, (const struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&f->server, 64, on_accept);
    int len = sizeof(a);
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
    f->pool = dl_out_pool_new(&f->loop);
    f->addrs.n = 1;
    memcpy(&f->addrs.a[0], &a, sizeof(a));
}

static void fixture_close(fixture_t *f)
{
    dl_out_pool_free(f->pool);
    for (int i = 0; i < f->accepted; i++)
        if (f->peers[i] && !uv_is_closing((uv_handle_t *)f->peers[i]))
            uv_close((uv_handle_t *)f->peers[i], on_peer_closed);
    uv_close((uv_handle_t *)&f->server, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* Runs the loop until *flag is set (or a bound of turns). */
static void run_until(fixture_t *f, const int *flag)
{
    for (int i = 0; i < 2000 && !*flag; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void run_a_while(fixture_t *f, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

typedef struct {
    int done, status;
} flag_t;

static void on_connected(dl_out_conn_t *c, int status, void *arg)
{
    (void)c;
    flag_t *fl = arg;
    fl->done = 1;
    fl->status = status;
}

/* A connection made in a slot of key, attached to the pool. */
static dl_out_conn_t *connect_one(fixture_t *f, const char *key)
{
    dl_out_target_t t = {.addrs = &f->addrs, .port = f->port, .timeout_ms = 2000};
    flag_t fl = {0};
    dl_out_conn_t *c;
    if (dl_out_connect(&f->loop, &t, "test", on_connected, &fl, &c) != 0)
        return NULL;
    run_until(f, &fl.done);
    if (fl.status != 0) {
        dl_out_close(c);
        return NULL;
    }
    dl_out_pool_attach(f->pool, key, c);
    return c;
}

typedef struct {
    int turns;
    dl_out_conn_t *conn;
} turn_t;

static void on_turn(dl_out_conn_t *c, void *arg)
{
    turn_t *t = arg;
    t->turns++;
    t->conn = c;
}

DL_TEST(pool_reuses_an_idle_connection)
{
    fixture_t f;
    fixture_init(&f);
    dl_out_limits_t lim = {.max_idle = 4, .max_conns = 0, .max_waiting = 0, .idle_ms = 0};
    dl_out_conn_t *c;
    dl_out_waiter_t *w;
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w), 1);
    c = connect_one(&f, "k");
    REQUIRE(c != NULL);
    run_a_while(&f, 5);
    EXPECT_EQ(f.accepted, 1);
    dl_out_pool_release(c, 1, &lim);
    dl_out_pool_stats_t st;
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.idle, 1);
    EXPECT_EQ(st.busy, 0);
    dl_out_conn_t *again;
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &again, &w), 0);
    EXPECT(again == c);
    EXPECT_EQ(again->reused, 1);
    /* another key is another origin */
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "other", &lim, on_turn, NULL, &c, &w), 1);
    dl_out_pool_unslot(f.pool, "other");
    /* not reusable (say, bytes left unread): closed, not kept */
    dl_out_pool_release(again, 0, &lim);
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.idle, 0);
    EXPECT_EQ(st.busy, 0);
    EXPECT_EQ(st.origins, 0);
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}

DL_TEST(pool_drops_what_the_peer_closed_or_sent)
{
    fixture_t f;
    fixture_init(&f);
    dl_out_limits_t lim = {.max_idle = 4};
    dl_out_conn_t *c1, *c2, *c;
    dl_out_waiter_t *w;
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    c1 = connect_one(&f, "k");
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    c2 = connect_one(&f, "k");
    REQUIRE(c1 && c2);
    run_a_while(&f, 5);
    REQUIRE(f.accepted == 2);
    dl_out_pool_release(c1, 1, &lim);
    dl_out_pool_release(c2, 1, &lim);
    /* the peer closes one and writes to the other while they are idle */
    uv_close((uv_handle_t *)f.peers[0], on_peer_closed);
    f.peers[0] = NULL;
    uv_buf_t b = uv_buf_init("x", 1);
    uv_try_write((uv_stream_t *)f.peers[1], &b, 1);
    run_a_while(&f, 50);
    dl_out_pool_stats_t st;
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.idle, 0);
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w), 1);
    dl_out_pool_unslot(f.pool, "k");
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}

DL_TEST(pool_idle_time_and_idle_bound)
{
    fixture_t f;
    fixture_init(&f);
    dl_out_limits_t lim = {.max_idle = 1, .idle_ms = 30};
    dl_out_conn_t *a, *b, *c;
    dl_out_waiter_t *w;
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    a = connect_one(&f, "k");
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    b = connect_one(&f, "k");
    REQUIRE(a && b);
    dl_out_pool_release(a, 1, &lim);
    dl_out_pool_release(b, 1, &lim); /* one idle, and b a surplus */
    dl_out_pool_stats_t st;
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.idle, 2);
    /* after their idle time both go */
    uint64_t until = uv_now(&f.loop) + 2000;
    do {
        uv_run(&f.loop, UV_RUN_ONCE);
        dl_out_pool_stats(f.pool, &st);
    } while (st.idle > 0 && uv_now(&f.loop) < until);
    EXPECT_EQ(st.idle, 0);
    EXPECT_EQ(st.origins, 0);
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}

/* Past max_idle a connection let go is kept at the end for a second: the
 * warm ones are taken first, and the surplus goes unless it is needed. */
DL_TEST(pool_surplus_is_taken_last_and_kept_a_second)
{
    fixture_t f;
    fixture_init(&f);
    dl_out_limits_t lim = {.max_idle = 1, .idle_ms = 60000};
    dl_out_conn_t *a, *b, *c, *d;
    dl_out_waiter_t *w;
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    a = connect_one(&f, "k");
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    b = connect_one(&f, "k");
    dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w);
    d = connect_one(&f, "k");
    REQUIRE(a && b && d);
    dl_out_pool_release(a, 1, &lim);
    dl_out_pool_release(b, 1, &lim);
    dl_out_pool_release(d, 1, &lim);
    dl_out_pool_stats_t st;
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.idle, 3);
    /* the one within the bound is taken first, then the surplus in turn */
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w), 0);
    EXPECT(c == a);
    dl_out_pool_release(c, 1, &lim); /* one idle of 1 again: to the front */
    /* a second on, the surplus has gone and the one within the bound stays */
    uint64_t until = uv_now(&f.loop) + 3000;
    do {
        uv_run(&f.loop, UV_RUN_ONCE);
        dl_out_pool_stats(f.pool, &st);
    } while (st.idle > 1 && uv_now(&f.loop) < until);
    EXPECT_EQ(st.idle, 1);
    EXPECT(uv_now(&f.loop) < until);
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &c, &w), 0);
    EXPECT(c == a);
    dl_out_pool_release(c, 0, &lim);
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}

DL_TEST(pool_cap_queues_then_refuses)
{
    fixture_t f;
    fixture_init(&f);
    dl_out_limits_t lim = {.max_idle = 4, .max_conns = 1, .max_waiting = 2};
    dl_out_conn_t *c, *got;
    dl_out_waiter_t *w1, *w2, *w3;
    turn_t t1 = {0}, t2 = {0};
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &got, &w1), 1);
    c = connect_one(&f, "k");
    REQUIRE(c != NULL);
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, &t1, &got, &w1), 2);
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, &t2, &got, &w2), 2);
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, NULL, &got, &w3), DL_ECONNECT);
    dl_out_pool_stats_t st;
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.waiting, 2);
    /* a reusable release goes to the first waiter as it is */
    dl_out_pool_release(c, 1, &lim);
    EXPECT_EQ(t1.turns, 1);
    EXPECT(t1.conn == c);
    EXPECT_EQ(t2.turns, 0);
    /* a closed one frees its slot for the next waiter, who connects */
    dl_out_pool_release(c, 0, &lim);
    EXPECT_EQ(t2.turns, 1);
    EXPECT(t2.conn == NULL);
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.busy, 1);
    EXPECT_EQ(st.waiting, 0);
    /* a canceled waiter is never called */
    turn_t t3 = {0};
    EXPECT_EQ(dl_out_pool_acquire(f.pool, "k", &lim, on_turn, &t3, &got, &w3), 2);
    dl_out_pool_cancel(w3);
    dl_out_pool_unslot(f.pool, "k");
    EXPECT_EQ(t3.turns, 0);
    dl_out_pool_stats(f.pool, &st);
    EXPECT_EQ(st.busy, 0);
    EXPECT_EQ(st.origins, 0);
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}

DL_TEST(conn_connect_refused_and_next_address)
{
    fixture_t f;
    fixture_init(&f);
    /* a closed port first, then the listener: the second address answers */
    uv_tcp_t probe;
    uv_tcp_init(&f.loop, &probe);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&probe, (const struct sockaddr *)&a, 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&probe, (struct sockaddr *)&a, &len);
    uv_close((uv_handle_t *)&probe, NULL); /* bound, never listening: refused */
    uv_run(&f.loop, UV_RUN_NOWAIT);
    dl_dns_addrs_t two;
    two.n = 2;
    memcpy(&two.a[0], &a, sizeof(a));
    two.a[1] = f.addrs.a[0];
    flag_t fl = {0};
    dl_out_conn_t *c;
    /* both addresses get the same port: the refused one is 127.0.0.2 */
    ((struct sockaddr_in *)&two.a[0])->sin_addr.s_addr = htonl(0x7f000002);
    dl_out_target_t t = {.addrs = &two, .port = f.port, .timeout_ms = 2000};
    EXPECT_EQ(dl_out_connect(&f.loop, &t, "two", on_connected, &fl, &c), 0);
    run_until(&f, &fl.done);
    EXPECT_EQ(fl.status, 0);
    dl_out_close(c);
    /* one address, refused: connect: with the reason */
    flag_t fl2 = {0};
    dl_dns_addrs_t one;
    one.n = 1;
    memcpy(&one.a[0], &a, sizeof(a));
    dl_out_target_t t2 = {.addrs = &one, .port = ntohs(a.sin_port), .timeout_ms = 2000};
    EXPECT_EQ(dl_out_connect(&f.loop, &t2, "closed:1", on_connected, &fl2, &c), 0);
    run_until(&f, &fl2.done);
    EXPECT_EQ(fl2.status, DL_ECONNECT);
    EXPECT(strstr(c->err, "closed:1") != NULL);
    EXPECT(strstr(c->err, "refused") != NULL);
    dl_out_close(c);
    fixture_close(&f);
    EXPECT_EQ(uv_loop_close(&f.loop), 0);
}
