/*
 * test_conn.c - what runtime/http1/conn.c decides without a connection: the hosts
 * an HTTPS redirect may name (the client's Host, --canonical-host).
 */
#include <string.h>

#include "http1/conn.h"
#include "unit.h"

static int host_ok(const char *s, size_t *hlen, int *port)
{
    return dl_redirect_host_valid(s, strlen(s), hlen, port);
}

DL_TEST(redirect_host_valid)
{
    size_t hlen;
    int port;
    EXPECT(host_ok("example.com", &hlen, &port));
    EXPECT_EQ(hlen, 11);
    EXPECT_EQ(port, -1);
    EXPECT(host_ok("Example.COM:8443", &hlen, &port));
    EXPECT_EQ(hlen, 11);
    EXPECT_EQ(port, 8443);
    EXPECT(host_ok("[::1]:65535", &hlen, &port));
    EXPECT_EQ(hlen, 5);
    EXPECT_EQ(port, 65535);
    EXPECT(host_ok("127.0.0.1", NULL, NULL));
    EXPECT(host_ok("my_host~1", NULL, NULL));
    char name[260];
    memset(name, 'a', 253);
    name[253] = '\0';
    EXPECT(host_ok(name, NULL, NULL));
    strcat(name, ":1");
    EXPECT(host_ok(name, NULL, NULL));
}

DL_TEST(redirect_host_refused)
{
    static const char *bad[] = {
        "", ":80", "evil.com:80:90", "[evil.com", "[evil.com]", "[::1", "[::1]x", "[v1.x]",
        "a@b", "user@evil.com", "evil.com/", "evil.com?x", "evil.com#x", "ev il.com",
        " evil.com", "evil.com ", "evil.com\t", "evil.com\r\nX: y", "evil.com%2f",
        "evil.com,other", "evil.com;x", "evil.com:", "evil.com:0", "evil.com:65536",
        "evil.com:123456", "evil.com:-1", "evil.com:+80", "http://evil.com", "caf\xc3\xa9.com",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (host_ok(bad[i], NULL, NULL))
            DL_FAIL_AT("\"%s\" taken", bad[i]);
    char name[300];
    memset(name, 'a', 254);
    name[254] = '\0';
    EXPECT(!host_ok(name, NULL, NULL)); /* over 253 bytes */
    EXPECT(!dl_redirect_host_valid("a\0b", 3, NULL, NULL));
}
