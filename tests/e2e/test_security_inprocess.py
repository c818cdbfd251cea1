"""Issue 17, item 2: in-process requests (api.client) are written by the
runtime from their parts, and a part outside its grammar is refused before
anything is sent. The hostile input is the issue's: a route that calls
api.client.get("/p/" .. req.query.id) with the caller's token, and a query
value holding a percent-encoded CR LF and a second request for /mark. /mark
counts every request that reaches it: it must stay at zero, and the caller
gets a clear error."""
from urllib.parse import quote

import harness

ALLOWED_ERRORS = ["api.client:"]  # the /fetch handler's refusals are logged as handler errors

SMUGGLED = "GET /mark HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice-token\r\n\r\n"


def q(s):
    return quote(s, safe="")


def marks(srv):
    r = srv.get("/marks")
    assert r.status == 200, r
    return r.json()["marks"]


def call(srv, **parts):
    return srv.get("/call?" + "&".join("%s=%s" % (k, q(v)) for k, v in parts.items()))


def test_crlf_in_a_query_value_does_not_smuggle(srv):
    """The issue's case: id=x%0d%0aGET%20/mark and variants through a route
    that joins the value into the path. Before the fix /mark ran with alice's
    token; now the handler's call raises (a 500 with the request id)."""
    r = srv.get("/fetch?id=ok")
    assert r.status == 200 and r.json()["id"] == "ok" and r.json()["auth"] == "Bearer alice-token", r
    answers, smuggled = [], []
    for ident in ["x%0d%0aGET%20/mark",
                  "x%0d%0aGET%20/mark%20HTTP/1.1%0d%0aHost:%20x%0d%0a%0d%0a",
                  q("x HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED),
                  q("x\n" + SMUGGLED), q("x\r" + SMUGGLED), "x%00y", q("x y")]:
        r = srv.get("/fetch?id=" + ident)
        answers.append((ident, r))
        got = srv.get("/marks").json()
        if got["marks"]:
            smuggled.append((ident, got))
    assert not smuggled, ("/mark ran", smuggled)
    for ident, r in answers:
        assert r.status == 500, (ident, r)
        assert r.json()["requestId"] == r.header("x-request-id"), r


def test_every_part_is_checked_before_sending(srv):
    """Method, path, header names and values: a CR, LF, NUL or space where
    the grammar has none is refused with an error naming the part; framing
    headers cannot be given. Nothing reaches /mark."""
    cases = [
        dict(path="/p/x\r\n\r\n" + SMUGGLED), dict(path="/p/x\n" + SMUGGLED),
        dict(path="/p/x\x00"), dict(path="/p/a b"), dict(path="/p/\x1b[31m"), dict(path="p/x"),
        dict(method="GET /mark HTTP/1.1\r\nAuthorization: Bearer alice-token\r\n\r\nGET"),
        dict(method="GE T"), dict(method="G\x00ET"), dict(method=""),
        dict(hname="X-A\r\n\r\n" + SMUGGLED, hvalue="v"), dict(hname="X A", hvalue="v"),
        dict(hname="X:A", hvalue="v"), dict(hname="", hvalue="v"), dict(hname="X\x00", hvalue="v"),
        dict(hname="X-T", hvalue="a\r\n\r\n" + SMUGGLED), dict(hname="X-T", hvalue="a\nb"),
        dict(hname="X-T", hvalue="a\rb"), dict(hname="X-T", hvalue="a\x00b"),
        dict(hname="X-T", hvalue="a\x1b[2Jb"),
        # framing is the runtime's: a chunked request would smuggle through
        # its body, or (without one) leave the request waiting for ever
        dict(hname="Transfer-Encoding", hvalue="chunked"),
        dict(method="POST", hname="Transfer-Encoding", hvalue="chunked",
             body="0\r\n\r\n" + SMUGGLED),
        dict(numkey="1"),
    ]
    for parts in cases:
        r = call(srv, **parts)
        assert r.status == 400, (parts, r)
        msg = r.json()["message"]
        assert "api.client: " in msg, (parts, msg)
        # the message shows the part, with controls escaped (no forged log line)
        assert not any(ch in msg for ch in "\r\n\x00\x1b"), (parts, msg)
    assert "method" in call(srv, method="GE T").json()["message"]
    assert "path" in call(srv, path="/p/a b").json()["message"]
    assert '"x-a\\x0D\\x0Ab"' in call(srv, hname="X-A\r\nB", hvalue="v").json()["message"]
    assert '"x-t"' in call(srv, hname="X-T", hvalue="a\nb").json()["message"]
    assert "Transfer-Encoding" in call(srv, hname="Transfer-Encoding", hvalue="x").json()["message"]
    assert "must be strings" in call(srv, numkey="1").json()["message"]
    assert marks(srv) == 0


def test_sound_parts_still_go_through(srv):
    """What the grammar allows arrives as given: an encoded CR LF stays data,
    HTAB and obs-text in a value, one Host (the caller's replaces the
    default), Content-Length from the body whatever the caller said."""
    r = call(srv, path="/p/a%0d%0aGET%20%2Fmark")
    assert r.status == 200 and r.json()["body"]["id"] == "a\r\nGET /mark", r
    r = call(srv, hname="X-T", hvalue="  tab\tand caf\u00e9  ")
    assert r.status == 200 and r.json()["body"]["x"] == "tab\tand caf\u00e9", r
    r = call(srv, hname="Host", hvalue="api.example:8443")
    j = r.json()["body"]
    assert r.status == 200 and j["host"] == "api.example:8443", r
    assert j["header_names"].count("host") == 1, j
    r = call(srv, method="post", hname="Content-Length", hvalue="999", body="abc")
    assert r.status == 200 and r.json()["body"]["body"] == "abc", r
    assert r.json()["body"]["method"] == "POST", r
    r = call(srv, path="/mark", method="GET")  # the route itself is reachable
    assert r.status == 200 and r.json()["body"]["marks"] == 1, r


if __name__ == "__main__":
    harness.main(globals(), app="sec-inprocess")
