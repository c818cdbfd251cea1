"""api.http against bad upstreams (issue 20): refused, blackholed (connect and
read timeouts), reset mid-body, an endless body over max_body, a malformed
status line or header, a second response smuggled behind the first. Each
gives its error kind within its timeout, the worker keeps serving, and no
connection is left behind (the upstream's open count and the pool gauges)."""
import threading
import time

import harness
import httpc
from httpc import call, err_kind, special
from upstream import BlackholeAccept, BlackholeConnect, Upstream

UP = Upstream()
U = UP.url


def wait_open(up, n, timeout=5):
    """Waits until the upstream has at most n connections open."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if up.open <= n:
            return
        time.sleep(0.02)
    raise AssertionError("upstream still has %d connections open (want <= %d)" % (up.open, n))


def pool_gauge(srv, state):
    return httpc.metric(srv, "http_client_pool_connections", {"state": state})


def test_refused(srv):
    port = harness.free_port()
    t0 = time.time()
    out = call(srv, "http://127.0.0.1:%d/" % port)
    err_kind(out, "connect")
    assert time.time() - t0 < 3, out


def test_dns(srv):
    t0 = time.time()
    out = call(srv, "http://nosuchhost.invalid/", timeout=5000)
    err_kind(out, "dns")
    assert time.time() - t0 < 5.5
    out = call(srv, "http://%s.test/" % ("a" * 63 + "." + "b" * 63), timeout=5000)
    assert out.get("err", "").startswith(("dns:", "invalid:")), out
    # over DNS's 253 bytes but within the URL's 255: refused by the lookup
    # at once, before the call parks (it crashed there once)
    out = call(srv, "http://%s/" % ".".join(["a" * 50] * 5)[:254], timeout=5000)
    assert out.get("err", "").startswith(("dns:", "invalid:")), out
    out = call(srv, "http://%s/" % ".".join(["a" * 50] * 5)[:254], timeout=5000, stream=True)
    assert out.get("err", "").startswith(("dns:", "invalid:")), out


def test_ipv6(srv):
    up = Upstream(host="::1")
    try:
        out = call(srv, up.url("/echo"))
        assert out.get("status") == 200, out
        assert ["Host", "[::1]:%d" % up.port] in out["json"]["headers"], out
        out = call(srv, "http://[::1]:%d/" % UP.port)  # nobody there on v6
        err_kind(out, "connect")
    finally:
        up.stop()


def test_stop_with_calls_in_flight(_):
    # SIGTERM while handlers wait on upstreams (one for its headers, one in a
    # streamed read): a clean stop, no crash
    srv = harness.Server(httpc.new_app())
    bh = BlackholeAccept()
    try:
        threads = [threading.Thread(target=lambda: call_quiet(srv, bh.url(), timeout=60000)),
                   threading.Thread(target=lambda: call_quiet(srv, U("/slow?mid=60000"),
                                                              stream=True, timeout=60000))]
        for t in threads:
            t.start()
        time.sleep(0.5)
    finally:
        code = srv.stop(expect_code=None)
    assert code == 0, (code, srv.output()[-2000:])
    assert "Sanitizer" not in srv.output() and "runtime error:" not in srv.output(), \
        srv.output()[-3000:]
    for t in threads:
        t.join(15)


def call_quiet(srv, url, **opts):
    try:
        call(srv, url, wait=20, **opts)
    except (OSError, EOFError, AssertionError):
        pass


def test_refused_at_once(srv):
    # a connect refused before libuv even starts it (EACCES for a broadcast
    # address) is an error like any other, not a crash
    out = call(srv, "http://255.255.255.255:%d/" % UP.port)
    err_kind(out, "connect")
    out = call(srv, "http://255.255.255.255:%d/" % UP.port, stream=True)
    err_kind(out, "connect")


def test_connect_timeout(srv):
    bh = BlackholeConnect()
    try:
        t0 = time.time()
        out = call(srv, bh.url(), connect_timeout=300, timeout=5000)
        took = time.time() - t0
        err_kind(out, "timeout")
        assert "connect" in out["err"], out
        assert 0.2 < took < 3, took
        # the total timeout bounds the connect too
        t0 = time.time()
        out = call(srv, bh.url(), timeout=300)
        err_kind(out, "timeout")
        assert time.time() - t0 < 3
    finally:
        bh.stop()


def test_read_timeout(srv):
    bh = BlackholeAccept()
    t0 = time.time()
    out = call(srv, bh.url(), timeout=400)
    took = time.time() - t0
    err_kind(out, "timeout")
    assert 0.3 < took < 3, took
    # the connection was closed, not kept: the blackhole sees EOF
    deadline = time.time() + 3
    while time.time() < deadline:
        c = bh.conns[0]
        c.settimeout(0.1)
        try:
            if c.recv(65536) == b"":
                break
        except OSError:
            pass
    else:
        raise AssertionError("the timed out connection was not closed")


def test_big_request_body(srv):
    out = call(srv, U("/echo"), fn="post", rep=2000000, timeout=10000)
    assert out.get("status") == 200 and len(out["json"]["body"]) == 2000000, out.get("err")
    # an upstream that never reads: the write stalls, the deadline ends it
    bh = BlackholeAccept()
    t0 = time.time()
    out = call(srv, bh.url(), fn="post", rep=20000000, timeout=700)
    err_kind(out, "timeout")
    assert time.time() - t0 < 3


def test_answer_before_body_written(srv):
    # the upstream answers and closes while a large body is still going out
    t0 = time.time()
    out = call(srv, U("/early"), fn="post", rep=20000000, timeout=5000)
    assert out.get("status") == 413 or out.get("err", "").startswith("protocol:"), out
    assert time.time() - t0 < 4.5
    wait_open(UP, 1)


def test_reset_mid_body(srv):
    out = call(srv, U("/reset"), timeout=3000)
    assert out.get("err") and (out["err"].startswith("protocol:") or
                               out["err"].startswith("connect:")), out
    wait_open(UP, 0)


def test_endless_over_max_body(srv):
    t0 = time.time()
    out = call(srv, U("/endless"), max_body=1000000, timeout=5000)
    err_kind(out, "too large")
    assert time.time() - t0 < 4
    wait_open(UP, 0)  # the connection was dropped, not pooled


def test_malformed_status(srv):
    out = call(srv, U("/badstatus"))
    err_kind(out, "protocol")
    out = call(srv, U("/badheader"))
    err_kind(out, "protocol")
    wait_open(UP, 0)


def test_smuggled_response(srv):
    out = call(srv, U("/smuggle"))
    # the first answer is taken; the bytes behind it are never read as the
    # answer to the next request on the same connection
    assert out.get("status") == 200 and out["body"] == "first", out
    assert "x-smuggled" not in out["headers"], out
    out = call(srv, U("/echo"))
    assert out.get("status") == 200 and out["json"]["method"] == "GET", out
    assert "x-smuggled" not in out["headers"], out


def test_framing_attacks(srv):
    for path in ("/clte", "/twocl"):
        out = call(srv, U(path))
        err_kind(out, "protocol")
    for path in ("/status999", "/switch"):
        out = call(srv, U(path), timeout=3000)
        err_kind(out, "protocol")
    out = call(srv, U("/badgzip"))
    err_kind(out, "protocol")
    wait_open(UP, 1)


def test_header_bounds(srv):
    out = call(srv, U("/bigheader?n=70000"))
    err_kind(out, "too large")
    out = call(srv, U("/manyheaders?n=300"))
    err_kind(out, "too large")
    out = call(srv, U("/bigheader?n=30000"))
    assert out.get("status") == 200 and len(out["headers"]["x-big"]) == 30000, out.get("err")
    out = call(srv, U("/manyheaders?n=200"))
    assert out.get("status") == 200 and out["headers"]["x-h199"] == "v", out.get("err")


def test_http10_not_kept(srv):
    up = Upstream()
    try:
        for _ in range(2):
            out = call(srv, up.url("/http10"))
            assert out.get("status") == 200 and out["body"] == "ok10", out
        assert up.accepted == 2, up.accepted
    finally:
        up.stop()


def test_abandoned_stream_not_kept(srv):
    up = Upstream()
    try:
        r = srv.get("/stream-abandon?url=" + up.url("/huge?n=3000000"))
        assert r.status == 200 and r.json()["first"] > 0, r
        wait_open(up, 0)  # unread bytes: the connection was closed, not pooled
        out = call(srv, up.url("/endless"), stream=True, read_limit=2)
        assert out["pieces"] == 2, out
        wait_open(up, 0)
        assert pool_gauge(srv, "busy") == 0
    finally:
        up.stop()


def test_drop_before_answer(srv):
    out = call(srv, U("/drop"))
    err_kind(out, "protocol")


def test_no_leak_after_faults(srv):
    # after all the above the pool holds nothing busy or waiting, and the
    # upstream only the idle keep-alive connections the pool may keep
    call(srv, U("/echo"))
    assert pool_gauge(srv, "busy") == 0, pool_gauge(srv, "busy")
    assert pool_gauge(srv, "waiting") == 0
    assert pool_gauge(srv, "idle") <= 2, pool_gauge(srv, "idle")


def test_invalid_input(srv):
    u = U("/echo")
    before = UP.accepted
    for name in ("nul_value", "cr_value", "lf_name", "nul_name", "content_length",
                 "transfer_encoding", "url_nul", "url_crlf", "method_connect", "method_space", "method_crlf",
                 "header_fn", "host_list", "header_bool", "header_numkey", "body_table", "opts_string",
                 "url_number", "timeout_string", "timeout_negative", "timeout_zero", "timeout_nan",
                 "max_body_string", "redirects_neg", "redirects_frac", "tls_string",
                 "query_fn", "query_numkey", "json_fn", "body_and_json", "headers_string",
                 "ca_number", "server_name_number", "verify_string"):
        out = special(srv, name, u)
        assert "raised" not in out, (name, out)
        assert out.get("err", "").startswith("invalid:"), (name, out)
    for url in ("127.0.0.1:%d/echo" % UP.port, "ftp://127.0.0.1/", "//127.0.0.1/",
                "http://", "http://:80/", "http://127.0.0.1:0/", "http://127.0.0.1:99999/",
                "http://user:pw@127.0.0.1:%d/" % UP.port, "http://[::1/", "http://a b/",
                "http://127.0.0.1:%d/%%zz" % UP.port, "", "http://h\u00e9.test/"):
        out = call(srv, url)
        assert out.get("err", "").startswith("invalid:"), (url, out)
    assert UP.accepted == before, "an invalid request reached the upstream"


ALLOWED_ERRORS = ["api.http"]

if __name__ == "__main__":
    harness.main(globals(), app=httpc.new_app())
