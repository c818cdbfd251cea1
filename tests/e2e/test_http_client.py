"""api.http, the outbound HTTP client (issue 20): every option against a real
upstream on loopback (upstream.py), response framings (Content-Length,
chunked, close-delimited), 1xx skipped, HEAD, 204 and 304, compression,
repeated headers, streaming."""
import base64
import json

import harness
import httpc
from httpc import call, err_kind
from upstream import Upstream

UP = Upstream()
U = UP.url


def echo(out):
    assert out.get("status") == 200, out
    return json.loads(out["body"])


def hdr(e, name):
    return [v for k, v in e["headers"] if k.lower() == name.lower()]


def test_get_json_and_defaults(srv):
    out = call(srv, U("/echo?a=1"))
    assert out["status"] == 200 and out["json"]["method"] == "GET", out
    e = out["json"]
    assert e["path"] == "/echo" and e["query"] == "a=1", e
    assert hdr(e, "user-agent") == ["devloop"], e
    assert hdr(e, "host") == ["127.0.0.1:%d" % UP.port], e
    assert hdr(e, "accept-encoding") == ["gzip, deflate"], e
    assert hdr(e, "content-length") == [], e  # a GET without a body says nothing of one
    assert out["headers"]["content-type"] == "application/json", out
    assert out["url"] == U("/echo?a=1"), out


def test_methods(srv):
    for fn, m in (("get", "GET"), ("delete", "DELETE")):
        assert echo(call(srv, U("/echo"), fn=fn))["method"] == m
    for fn, m in (("post", "POST"), ("put", "PUT"), ("patch", "PATCH")):
        e = echo(call(srv, U("/echo"), fn=fn, data="raw-body"))
        assert e["method"] == m and e["body"] == "raw-body", e
        assert hdr(e, "content-length") == ["8"], e
    e = echo(call(srv, U("/echo"), method="options"))  # lower-case given: sent upper
    assert e["method"] == "OPTIONS", e
    e = echo(call(srv, U("/echo"), method="PURGE"))
    assert e["method"] == "PURGE", e
    # a POST without a body still says Content-Length: 0
    e = echo(call(srv, U("/echo"), method="POST"))
    assert hdr(e, "content-length") == ["0"] and e["body"] == "", e


def test_head(srv):
    out = call(srv, U("/huge?n=5000"), fn="head")
    assert out["status"] == 200 and out["body"] == "", out
    assert out["headers"]["content-length"] == "5000", out
    # the connection is still good: the next call on it works
    assert echo(call(srv, U("/echo")))["method"] == "GET"
    out = call(srv, U("/chunked"), fn="head")
    assert out["status"] == 200 and out["body"] == "", out
    assert echo(call(srv, U("/echo")))["method"] == "GET"


def test_204_304_no_body(srv):
    for code in (204, 304):
        out = call(srv, U("/status?code=%d" % code))
        assert out["status"] == code and out["body"] == "", out
        assert out["headers"]["x-status"] == str(code), out
    assert echo(call(srv, U("/echo")))["method"] == "GET"


def test_headers_repeated_and_lists(srv):
    e = echo(call(srv, U("/echo"), headers={"X-List": ["a", "b"], "X-Num": 5,
                                           "Authorization": "Bearer t"}))
    assert hdr(e, "x-list") == ["a", "b"], e
    assert hdr(e, "x-num") == ["5"], e
    assert hdr(e, "authorization") == ["Bearer t"], e
    # the caller's own Host, User-Agent and Accept-Encoding replace the defaults
    e = echo(call(srv, U("/echo"), headers={"host": "example.test", "User-Agent": "me",
                                           "accept-encoding": "identity"}))
    assert hdr(e, "host") == ["example.test"] and hdr(e, "user-agent") == ["me"], e
    assert hdr(e, "accept-encoding") == ["identity"], e


def test_response_headers(srv):
    out = call(srv, U("/cookies"))
    h = out["headers"]
    assert h["set-cookie"] == ["a=1; Path=/", "b=2, c; Expires=Wed, 21 Oct 2015 07:28:00 GMT"], h
    assert h["x-multi"] == "one, two", h
    assert h["x-empty"] == "", h
    assert out["json"] is None if "json" in out else True, out  # text/plain: no json
    assert out["body"] == "cookies", out


def test_repeated_header_far_apart(srv):
    for n in (0, 3, 31, 40, 200):
        out = call(srv, U("/repeats?n=%d" % n))
        h = out["headers"]
        assert h["x-rep"] == "first, last", (n, h.get("x-rep"))
        assert len(h) == n + 2 and out["body"] == "ok", (n, len(h))


def test_body_json_and_msgpack(srv):
    e = echo(call(srv, U("/echo"), method="POST", json={"a": [1, 2], "b": "x"}))
    assert json.loads(e["body"]) == {"a": [1, 2], "b": "x"}, e
    assert hdr(e, "content-type") == ["application/json"], e
    # post(url, table) is JSON too
    e = echo(call(srv, U("/echo"), fn="post", data={"k": "v"}))
    assert json.loads(e["body"]) == {"k": "v"} and hdr(e, "content-type") == ["application/json"]
    # the caller's Content-Type wins
    e = echo(call(srv, U("/echo"), method="PUT", json={"a": 1},
                  headers={"content-type": "application/vnd.x+json"}))
    assert hdr(e, "content-type") == ["application/vnd.x+json"], e
    e = echo(call(srv, U("/echo"), method="POST", msgpack={"a": 1}))
    assert hdr(e, "content-type") == ["application/msgpack"], e
    assert e["body"].encode("latin-1") == b"\x81\xa1a\x01", e


def test_query_encoding(srv):
    e = echo(call(srv, U("/echo"), query={"q": "a b&c=d/é", "n": 3, "t": True, "l": ["x", "y"]}))
    assert e["query"] == "l=x&l=y&n=3&q=a%20b%26c%3Dd%2F%C3%A9&t=true", e
    e = echo(call(srv, U("/echo?z=1#frag"), query={"a": "1"}))
    assert e["query"] == "z=1&a=1", e  # appended with &, the fragment never sent
    e = echo(call(srv, U("/echo"), query={}))
    assert e["query"] == "", e


def test_json_response_types(srv):
    out = call(srv, U("/echo"))
    assert out["json"]["method"] == "GET"
    # a text body is not decoded even when it looks like JSON
    out = call(srv, U("/echo"), fn="post", data="[1]", headers={"content-type": "text/plain"})
    assert out["json"]["body"] == "[1]"


def test_gzip_and_deflate(srv):
    for enc in ("gzip", "deflate"):
        out = call(srv, U("/" + enc))
        assert out["status"] == 200 and out["json"]["compressed"] == enc, out
        assert out["headers"]["content-encoding"] == enc, out
    # decode = false: nothing asked for, the identity body comes
    out = call(srv, U("/gzip"), decode=False)
    assert out["json"]["compressed"] == "gzip" and "content-encoding" not in out["headers"], out
    # decode = false with the caller asking for gzip: the raw bytes come back
    out = call(srv, U("/gzip"), decode=False, headers={"Accept-Encoding": "gzip"}, hex=True)
    assert out["body"].startswith("1f8b"), out
    # no body to decode: HEAD, 304, an empty one
    out = call(srv, U("/gzip"), fn="head")
    assert out.get("status") == 200 and out["body"] == "", out
    assert out["headers"]["content-encoding"] == "gzip", out
    out = call(srv, U("/gzip?code=304"))
    assert out.get("status") == 304 and out["body"] == "", out
    out = call(srv, U("/gzip?empty=1"))
    assert out.get("status") == 200 and out["body"] == "", out
    # a streamed body is not decoded: compression is not asked for
    out = call(srv, U("/gzip"), stream=True)
    assert json.loads(out["body"])["compressed"] == "gzip", out
    assert "content-encoding" not in out["headers"], out
    # max_body bounds the decoded body too (2 KB of 'z' compresses well)
    out = call(srv, U("/gzip"), max_body=1000)
    err_kind(out, "too large")


def test_framings(srv):
    out = call(srv, U("/chunked?n=20"))
    assert out["body"] == "".join("piece-%d;" % i for i in range(20)), out
    assert "x-trailer" not in out["headers"], out  # a trailer is not a header
    assert out["headers"]["transfer-encoding"] == "chunked", out
    out = call(srv, U("/close"))
    assert out["status"] == 200 and out["body"] == "close-delimited body", out
    out = call(srv, U("/huge?n=3000000"))
    assert out["status"] == 200 and len(out["body"]) == 3000000, len(out.get("body", ""))


def test_interim_skipped(srv):
    out = call(srv, U("/interim"))
    assert out["status"] == 200 and out["body"] == "final", out
    assert out["headers"]["x-final"] == "yes" and "link" not in out["headers"], out
    assert echo(call(srv, U("/echo")))["method"] == "GET"


def test_max_body(srv):
    out = call(srv, U("/huge?n=10000"), max_body=10000)
    assert out["status"] == 200 and len(out["body"]) == 10000, out.get("err")
    out = call(srv, U("/huge?n=10001"), max_body=10000)
    err_kind(out, "too large")
    out = call(srv, U("/chunked?n=50"), max_body=20)
    err_kind(out, "too large")


def test_timeout(srv):
    import time
    t0 = time.time()
    out = call(srv, U("/slow?head=3000"), timeout=300)
    took = time.time() - t0
    err_kind(out, "timeout")
    assert took < 2.5, took
    # mid-body: the total deadline covers the body too
    t0 = time.time()
    out = call(srv, U("/slow?mid=3000"), timeout=300)
    err_kind(out, "timeout")
    assert time.time() - t0 < 2.5
    out = call(srv, U("/slow?head=50&mid=50"), timeout=3000)
    assert out["status"] == 200 and len(out["body"]) == 200, out


def test_stream(srv):
    out = call(srv, U("/huge?n=3000000"), stream=True)
    assert out["status"] == 200 and len(out["body"]) == 3000000 and out["pieces"] >= 2, \
        (out.get("pieces"), out.get("read_err"))
    out = call(srv, U("/chunked?n=10"), stream=True)
    assert out["body"] == "".join("piece-%d;" % i for i in range(10)), out
    # a streamed body is bounded by a max_body given: a Content-Length over it
    # fails at once, with the headers; a streamed body is not bounded otherwise
    out = call(srv, U("/huge?n=300000"), stream=True, max_body=100000)
    assert (out.get("err") or out.get("read_err", "")).startswith("too large:"), out
    out = call(srv, U("/huge?n=20000000"), stream=True)
    assert out["status"] == 200 and len(out["body"]) == 20000000, out.get("read_err")
    # closing early, and leaving the stream to the request's end, both work
    out = call(srv, U("/endless"), stream=True, read_limit=3)
    assert out["pieces"] == 3, out
    r = srv.get("/stream-abandon?url=" + U("/huge?n=3000000"))
    assert r.status == 200 and r.json()["first"] > 0, r
    assert echo(call(srv, U("/echo")))["method"] == "GET"


def test_stream_life(srv):
    r = srv.get("/stream-life?url=" + U("/chunked?n=3"))
    assert r.status == 200, r
    j = r.json()
    assert j["body"] == "piece-0;piece-1;piece-2;" and "err" not in j, j
    # {nil, err} comes as {"2": err} in JSON
    assert j["again"] in ({}, []), j  # nil past the end, again
    assert j["closed"] == {"2": "invalid: the stream is closed"}, j
    assert j["plain"] == {"2": "invalid: the response was not streamed"}, j
    assert j["plain_body"] == "piece-0;piece-1;piece-2;", j


def test_stream_other_request(srv):
    import threading
    url = U("/slow?head=0&mid=2000")
    t = threading.Thread(target=lambda: srv.get("/stream-keep?ms=800&url=" + url))
    t.start()
    import time
    time.sleep(0.4)
    j = srv.get("/stream-steal").json()  # while its request still runs
    assert j["ok"] and j["piece"] is None and j["err"].startswith("invalid:"), j
    assert "another request" in j["err"], j
    t.join(10)
    j = srv.get("/stream-steal").json()  # its request is over: closed with it
    assert j["ok"] and j["piece"] is None and j["err"].startswith("invalid:"), j
    assert "closed" in j["err"], j


def test_url_forms(srv):
    e = echo(call(srv, "http://127.0.0.1:%d?x=1" % UP.port))
    assert e["path"] == "/" and e["query"] == "x=1", e
    e = echo(call(srv, "HTTP://LOCALHOST:%d/echo" % UP.port))
    assert hdr(e, "host") == ["localhost:%d" % UP.port], e
    e = echo(call(srv, U("/echo/%41b?q=%20")))
    assert e["path"] == "/echo/%41b" and e["query"] == "q=%20", e


def test_urls_of_equal_length_in_turn(srv):
    # a worker keeps the last URL it parsed: URLs of one length that differ,
    # and a target made up ("/") after one taken from the URL, each get theirs
    a, b = U("/echo?a=1"), U("/echo?b=2")
    for _ in range(2):
        assert echo(call(srv, a))["query"] == "a=1"
        assert echo(call(srv, b))["query"] == "b=2"
    bare = "http://127.0.0.1:%d?xy=1" % UP.port
    slash = "http://127.0.0.1:%d/?y=2" % UP.port
    assert len(bare) == len(slash)
    for _ in range(2):
        e = echo(call(srv, bare))
        assert e["path"] == "/" and e["query"] == "xy=1", e
        e = echo(call(srv, slash))
        assert e["path"] == "/" and e["query"] == "y=2", e


if __name__ == "__main__":
    harness.main(globals(), app=httpc.new_app())
