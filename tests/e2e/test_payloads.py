"""Payload negotiation: JSON, MessagePack, gzip/deflate (README, HTTP behaviour)."""
import gzip
import json
import zlib

import msgpack

import harness
from harness import curl


def test_json_default(srv):
    r = srv.get("/null")
    assert r.header("content-type") == "application/json"
    assert r.json() == {"value": None, "list": [1, 2, 3]}, r.body


def test_empty_array_and_object(srv):
    assert srv.get("/empty-array").body == b"[]"
    assert srv.get("/empty-object").body == b"{}"


def test_json_roundtrip_through_handler(srv):
    doc = {"a": [], "b": {}, "c": [1, 2.5, -3, 2 ** 53], "d": None, "e": "\u00e9\u4e2d\U0001f600",
           "f": True, "nested": {"x": [{"y": []}]}}
    r = srv.request("POST", "/echo", {"Content-Type": "application/json"}, json.dumps(doc))
    assert r.json()["body"] == doc, r.body


def test_msgpack_accept(srv):
    r = srv.get("/null", {"Accept": "application/msgpack"})
    assert r.header("content-type") == "application/msgpack", r.headers
    assert msgpack.unpackb(r.body) == {"value": None, "list": [1, 2, 3]}


def test_msgpack_q_values(srv):
    cases = [
        ("application/msgpack", "application/msgpack"),
        ("application/json;q=0.9, application/msgpack", "application/msgpack"),
        ("application/msgpack;q=0.5, application/json", "application/json"),
        ("application/msgpack;q=0", "application/json"),
        ("*/*", "application/json"),
        ("application/x-msgpack", "application/msgpack"),
        ("text/html, application/msgpack;q=0.8", "application/msgpack"),
    ]
    for accept, want in cases:
        r = srv.get("/json", {"Accept": accept})
        assert r.header("content-type") == want, (accept, r.headers)


def test_msgpack_request_body(srv):
    doc = {"name": "x", "n": [1, 2, 3], "bin": b"\x00\xff", "big": 2 ** 40, "neg": -7, "f": 1.5}
    r = srv.request("POST", "/echo", {"Content-Type": "application/msgpack",
                                      "Accept": "application/msgpack"}, msgpack.packb(doc))
    assert r.status == 200, r
    got = msgpack.unpackb(r.body, raw=False, unicode_errors="surrogateescape")["body"]
    assert got["bin"] == "\x00\udcff", got
    assert got["name"] == "x" and got["n"] == [1, 2, 3] and got["big"] == 2 ** 40, got
    assert got["neg"] == -7 and got["f"] == 1.5, got


def test_form_body(srv):
    r = srv.request("POST", "/echo", {"Content-Type": "application/x-www-form-urlencoded"},
                    "a=1&b=hello+world&a=2")
    assert r.json()["body"] == {"a": ["1", "2"], "b": "hello world"}, r.body


def test_plain_body_is_string(srv):
    r = srv.request("POST", "/echo", {"Content-Type": "text/plain"}, "just text")
    assert r.json()["body"] == "just text"


def test_gzip(srv):
    plain = srv.get("/big")
    assert plain.header("content-encoding") is None
    assert plain.header("vary") == "Accept-Encoding", plain.headers
    r = srv.get("/big", {"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") == "gzip", r.headers
    assert r.header("vary") == "Accept-Encoding"
    assert int(r.header("content-length")) == len(r.body) < len(plain.body)
    assert gzip.decompress(r.body) == plain.body


def test_deflate(srv):
    plain = srv.get("/big").body
    r = srv.get("/big", {"Accept-Encoding": "deflate"})
    assert r.header("content-encoding") == "deflate", r.headers
    assert zlib.decompress(r.body) == plain


def test_accept_encoding_q_values(srv):
    cases = [
        ("gzip;q=0, deflate", "deflate"),
        ("deflate;q=0.5, gzip;q=0.4", "deflate"),
        ("gzip, deflate, br", "gzip"),
        ("*", "gzip"),
        ("br", None),
        ("identity", None),
        ("gzip;q=0", None),
        ("GZIP", "gzip"),
    ]
    for ae, want in cases:
        r = srv.get("/big", {"Accept-Encoding": ae})
        assert r.header("content-encoding") == want, (ae, r.headers)
        assert r.status == 200


def test_small_bodies_not_compressed(srv):
    r = srv.get("/small", {"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") is None and r.json() == {"ok": True}
    assert r.header("vary") is None


def test_images_not_compressed(srv):
    r = srv.get("/image", {"Accept-Encoding": "gzip"})
    assert r.header("content-type") == "image/png" and r.header("content-encoding") is None


def test_msgpack_and_gzip_together(srv):
    r = srv.get("/big", {"Accept": "application/msgpack", "Accept-Encoding": "gzip"})
    assert r.header("content-encoding") == "gzip"
    data = msgpack.unpackb(gzip.decompress(r.body))
    assert len(data) == 200 and data[0]["id"] == 1


def test_head_with_gzip(srv):
    g = srv.get("/big", {"Accept-Encoding": "gzip"})
    c = srv.conn()
    r = c.request("HEAD", "/big", {"Accept-Encoding": "gzip"})
    assert r.header("content-length") == g.header("content-length"), (r.headers, g.headers)
    assert r.body == b""
    c.close()


def test_curl_compressed(srv):
    status, h, body = curl("--compressed", srv.url("/big"))
    assert status == 200 and h.get("content-encoding") == "gzip" or h.get("content-encoding") == "deflate"
    assert len(json.loads(body)) == 200


if __name__ == "__main__":
    harness.main(globals())
