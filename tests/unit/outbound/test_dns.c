/*
 * test_dns.c - runtime/outbound/dns.c on a real loop and the system
 * resolver: literals answered at once, names looked up once and cached for
 * the TTL, concurrent lookups sharing one query, failures not cached, a
 * canceled waiter never called, the cache bounded.
 */
#include <arpa/inet.h>
#include <string.h>

#include "common/internal.h"
#include "outbound/dns.h"
#include "unit.h"

typedef struct {
    int calls, status, n;
    char why[200];
} got_t;

static void on_dns(int status, const dl_dns_addrs_t *addrs, const char *why, void *arg)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = addrs ? addrs->n : 0;
    snprintf(g->why, sizeof(g->why), "%s", why ? why : "");
}

DL_TEST(dns_literals_answer_at_once)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_dns_t *d = dl_dns_new(&loop, 1000, 8);
    dl_dns_addrs_t a;
    dl_dns_wait_t *w = (dl_dns_wait_t *)1;
    char why[100];
    got_t g = {0};
    EXPECT_EQ(dl_dns_lookup(d, "127.0.0.1", &a, on_dns, &g, &w, why, sizeof(why)), 0);
    EXPECT_EQ(a.n, 1);
    EXPECT_EQ(a.a[0].ss_family, AF_INET);
    EXPECT(w == NULL);
    EXPECT_EQ(dl_dns_lookup(d, "::1", &a, on_dns, &g, &w, why, sizeof(why)), 0);
    EXPECT_EQ(a.a[0].ss_family, AF_INET6);
    /* not names: empty, or longer than a name can be */
    EXPECT_EQ(dl_dns_lookup(d, "", &a, on_dns, &g, &w, why, sizeof(why)), DL_EDNS);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    EXPECT_EQ(dl_dns_lookup(d, longname, &a, on_dns, &g, &w, why, sizeof(why)), DL_EDNS);
    EXPECT_EQ(g.calls, 0);
    dl_dns_free(d);
    EXPECT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

DL_TEST(dns_names_cached_and_shared)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_dns_t *d = dl_dns_new(&loop, 60000, 8);
    dl_dns_addrs_t a;
    dl_dns_wait_t *w1, *w2, *w3;
    char why[100];
    got_t g1 = {0}, g2 = {0}, g3 = {0};
    /* three lookups of one name at once: one query, three answers; a
     * canceled waiter hears nothing */
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g1, &w1, why, sizeof(why)), 1);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g2, &w2, why, sizeof(why)), 1);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g3, &w3, why, sizeof(why)), 1);
    dl_dns_cancel(w3);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(g1.calls, 1);
    EXPECT_EQ(g1.status, 0);
    EXPECT(g1.n >= 1);
    EXPECT_EQ(g2.calls, 1);
    EXPECT_EQ(g3.calls, 0);
    /* then from the cache, at once */
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g1, &w1, why, sizeof(why)), 0);
    EXPECT_EQ(a.n, g1.n);
    EXPECT_EQ(g1.calls, 1);
    dl_dns_free(d);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

DL_TEST(dns_failures_not_cached_and_ttl_zero)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_dns_t *d = dl_dns_new(&loop, 0, 8); /* TTL 0: nothing kept */
    dl_dns_addrs_t a;
    dl_dns_wait_t *w;
    char why[100];
    got_t g = {0};
    EXPECT_EQ(dl_dns_lookup(d, "no-such-host.invalid", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(g.calls, 1);
    EXPECT_EQ(g.status, DL_EDNS);
    EXPECT(strstr(g.why, "no-such-host.invalid") != NULL);
    /* asked again: a new query, not a remembered failure */
    EXPECT_EQ(dl_dns_lookup(d, "no-such-host.invalid", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(g.calls, 2);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(g.status, 0);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    dl_dns_cancel(w);
    uv_run(&loop, UV_RUN_DEFAULT);
    dl_dns_free(d);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}

DL_TEST(dns_cache_bounded)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dl_dns_t *d = dl_dns_new(&loop, 60000, 1); /* one name at most */
    dl_dns_addrs_t a;
    dl_dns_wait_t *w;
    char why[100];
    got_t g = {0};
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g, &w, why, sizeof(why)), 0);
    /* another name pushes the first out */
    EXPECT_EQ(dl_dns_lookup(d, "ip6-localhost", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(dl_dns_lookup(d, "localhost", &a, on_dns, &g, &w, why, sizeof(why)), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(g.calls, 3);
    dl_dns_free(d);
    EXPECT_EQ(uv_loop_close(&loop), 0);
}
