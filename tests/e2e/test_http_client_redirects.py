"""api.http redirects (issue 20): off by default; when on, chains of 301, 302,
303, 307 and 308 with relative Locations, the method rules of RFC 9110 15.4,
credentials dropped across origins (another port is another origin), only
http(s) followed, a loop or a chain too long an error."""
import json
import urllib.parse

import harness
import httpc
from httpc import call, err_kind
from upstream import Upstream

UP = Upstream()
OTHER = Upstream()  # another port: another origin
U = UP.url


def to(target, code=302, up=UP):
    return up.url("/redirect?code=%d&to=%s" % (code, urllib.parse.quote(target, safe="")))


def hdr(e, name):
    return [v for k, v in e["headers"] if k.lower() == name.lower()]


def test_off_by_default(srv):
    out = call(srv, to("/echo"))
    assert out["status"] == 302 and out["headers"]["location"] == "/echo", out
    assert out["body"] == "moved", out


def test_chains(srv):
    for code in (301, 302, 303, 307, 308):
        out = call(srv, U("/chain?n=3&code=%d" % code), redirects=3)
        assert out.get("status") == 200, (code, out)
        assert out["json"]["query"] == "from=chain", out
        assert out["url"] == U("/echo?from=chain"), out
        out = call(srv, U("/chain?n=3&code=%d" % code), redirects=2)
        assert out.get("err", "").startswith("protocol:"), (code, out)


def test_relative_forms(srv):
    for loc, path in (("/echo/abs", "/echo/abs"), ("echo/rel", "/echo/rel"),
                      ("//127.0.0.1:%d/echo/net" % UP.port, "/echo/net")):
        out = call(srv, to(loc), redirects=1)
        assert out.get("status") == 200 and out["json"]["path"] == path, (loc, out)
    # "?..." against /redirect?...: the same path, a new query (which
    # redirects again, to /echo/q)
    out = call(srv, to("?code=307&to=%2Fecho%2Fq"), redirects=2)
    assert out.get("status") == 200 and out["json"]["path"] == "/echo/q", out
    # a 3xx without a Location is an answer
    out = call(srv, U("/status?code=302"), redirects=2)
    assert out.get("status") == 302, out


def test_loop(srv):
    out = call(srv, U("/loop"), redirects=5)
    assert out.get("err", "").startswith("protocol:") and "5" in out["err"], out
    # a huge count is bounded
    out = call(srv, U("/loop"), redirects=1000000)
    assert out.get("err", "").startswith("protocol:"), out


def test_other_schemes_refused(srv):
    before = OTHER.accepted
    for loc in ("ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)",
                "gopher://127.0.0.1:%d/" % OTHER.port):
        out = call(srv, to(loc), redirects=3)
        err_kind(out, "invalid")
    assert OTHER.accepted == before


def test_method_rules(srv):
    cases = [  # (code, method, method after, body kept)
        (301, "POST", "GET", False), (302, "POST", "GET", False), (303, "POST", "GET", False),
        (303, "PUT", "GET", False), (303, "DELETE", "GET", False), (307, "POST", "POST", True),
        (308, "POST", "POST", True), (307, "PUT", "PUT", True), (301, "PUT", "PUT", True),
        (302, "DELETE", "DELETE", False), (303, "HEAD", "HEAD", False),
    ]
    for code, m, after, kept in cases:
        body = "payload" if m in ("POST", "PUT") else None
        opts = {"method": m, "redirects": 1, "headers": {"Content-Type": "text/x-mine"}}
        if body:
            opts["body"] = body
        out = call(srv, to("/echo", code), **opts)
        assert out.get("status") == 200, (code, m, out)
        if m == "HEAD":
            assert out["body"] == "", out
            continue
        e = json.loads(out["body"])
        assert e["method"] == after, (code, m, e)
        if kept:
            assert e["body"] == body and hdr(e, "content-type") == ["text/x-mine"], (code, m, e)
        elif after != m:
            # turned into a GET: the body and what described it go
            assert e["body"] == "" and hdr(e, "content-type") == [], (code, m, e)
            assert hdr(e, "content-length") == [], (code, m, e)


def test_credentials_across_origins(srv):
    secret = {"Authorization": "Bearer secret", "Cookie": "sid=1", "Proxy-Authorization": "p",
              "X-Keep": "yes"}
    # the same origin keeps them
    out = call(srv, to("/echo"), redirects=1, headers=secret)
    e = out["json"]
    assert hdr(e, "authorization") == ["Bearer secret"] and hdr(e, "cookie") == ["sid=1"], e
    # another port is another origin: dropped, whatever their case
    lower = {k.lower(): v for k, v in secret.items()}
    for h in (secret, lower):
        out = call(srv, to(OTHER.url("/echo")), redirects=1, headers=h)
        e = out["json"]
        assert hdr(e, "x-keep") == ["yes"], e
        for name in ("authorization", "cookie", "proxy-authorization"):
            assert hdr(e, name) == [], (name, e)
    # and stay dropped when the chain comes back
    back = OTHER.url("/redirect?code=302&to=" + urllib.parse.quote(U("/echo"), safe=""))
    out = call(srv, to(back), redirects=2, headers=secret)
    assert hdr(out["json"], "authorization") == [], out
    # a Host the caller set is the first origin's: not sent to another
    out = call(srv, to(OTHER.url("/echo")), redirects=1, headers={"Host": "first.test"})
    assert hdr(out["json"], "host") == ["127.0.0.1:%d" % OTHER.port], out


def test_stream_redirect(srv):
    out = call(srv, to("/chunked?n=3"), redirects=1, stream=True)
    assert out.get("status") == 200 and out["body"] == "piece-0;piece-1;piece-2;", out


if __name__ == "__main__":
    harness.main(globals(), app=httpc.new_app())
