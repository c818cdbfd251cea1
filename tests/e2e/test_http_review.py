"""Issue 19 review, findings F7-F11: an in-process request answers as the
same request on a socket (refused methods, header names differing only in
case), a handler's own Content-Encoding is never compressed again,
api.fail keeps a message's NUL bytes, and HTTP/2 counts header bytes against
max_header_bytes like HTTP/1."""
import json
import os
import shutil
import socket

import h2.config
import h2.connection
import h2.events

import harness

ALLOWED_ERRORS = ["api.client:"]

APP = harness.new_app({"routes/review.lua": r'''
local api = require "devloop"
-- replays a request in process: its answer, or the refusal api.client raised
api.post("/_call", function(req)
  local b = req.body
  local ok, r = pcall(api.client.request, b.method, b.path, { headers = b.headers, body = b.body })
  if not ok then return { raised = tostring(r) } end
  return { status = r.status, headers = r.headers, body = r.body }
end)
-- the headers as the handler sees them
api.get("/echo_headers", function(req)
  return { host = req.headers["host"], ct = req.headers["content-type"],
           accept = req.headers["accept"] }
end)
api.get("/br", function(req)
  return 200, string.rep("z", 5000), { ["Content-Type"] = "text/plain", ["Content-Encoding"] = "br" }
end)
api.get("/br_cached", { cache = { prefix = "api", ttl = 60 } }, function(req)
  return 200, string.rep("y", 5000), { ["Content-Type"] = "text/plain", ["Content-Encoding"] = "br" }
end)
api.get("/nul", function(req)
  api.fail(400, "a\0b")
end)
'''}, prefix="devloop-review-")


def call(srv, method, path, headers=None, body=None):
    r = srv.request("POST", "/_call", {"Content-Type": "application/json"},
                    json.dumps({"method": method, "path": path, "headers": headers or {},
                                "body": body}))
    assert r.status == 200, r
    return r.json()


def socket_answer(srv, method, path):
    c = srv.conn()
    c.send("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path))
    r = c.response()
    c.close()
    return r


def test_refused_methods_say_what_a_socket_says(srv):
    """F7: PRI and RTSP methods are refused in process with the socket's message."""
    for method in ["PRI", "DESCRIBE", "PLAY", "TEARDOWN"]:
        s = socket_answer(srv, method, "/t")
        j = call(srv, method, "/t")
        assert j["status"] == s.status == 400, (method, j, s)
        want, got = s.json()["message"], json.loads(j["body"])["message"]
        assert got == want, (method, got, want)
    assert "Expected HTTP/2 Connection Preface" in json.loads(call(srv, "PRI", "/t")["body"])["message"]
    assert "Invalid method for HTTP/x.x request" in \
        json.loads(call(srv, "DESCRIBE", "/t")["body"])["message"]


def test_client_header_names_differing_in_case(srv):
    """F8: a second Host in any case is refused naming the field; other
    repeated names are kept as repeated fields, as on a socket."""
    j = call(srv, "GET", "/echo_headers", {"Host": "a", "host": "b"})
    assert "raised" in j and "api.client:" in j["raised"] and '"host"' in j["raised"], j
    assert "more than one Host header" in j["raised"], j
    j = call(srv, "GET", "/echo_headers", {"Accept": "a/a", "accept": "b/b"})
    got = json.loads(j["body"])["accept"]
    assert sorted(got.split(", ")) == ["a/a", "b/b"], got
    c = srv.conn()
    c.send("GET /echo_headers HTTP/1.1\r\nHost: x\r\nAccept: a/a\r\naccept: b/b\r\n\r\n")
    r = c.response()
    c.close()
    assert r.json()["accept"] == "a/a, b/b", r
    j = call(srv, "GET", "/echo_headers", {"Host": "h1"})
    assert json.loads(j["body"])["host"] == "h1", j


def test_handler_content_encoding_is_not_compressed_again(srv):
    """F9: the handler set Content-Encoding: the core does not gzip."""
    c = srv.conn()
    c.send("GET /br HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    r = c.response()
    c.close()
    assert r.status == 200, r
    assert r.header_all("content-encoding") == ["br"], r
    assert r.body == b"z" * 5000, r.body[:40]
    for _ in range(2):  # a cached route: the answer that stores, then a hit
        c = srv.conn()
        c.send("GET /br_cached HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        r = c.response()
        c.close()
        assert r.status == 200, r
        assert r.header_all("content-encoding") == ["br"], r
        assert r.body == b"y" * 5000, r.body[:40]
    j = call(srv, "GET", "/br", {"Accept-Encoding": "gzip"})
    assert j["headers"]["content-encoding"] == "br" and j["body"] == "z" * 5000, j["headers"]


def test_fail_message_keeps_nul_bytes(srv):
    """F10: api.fail(400, "a\\0b") answers "message":"a\\u0000b"."""
    r = srv.get("/nul")
    assert r.status == 400, r
    assert r.json()["message"] == "a\x00b", r.body


def h2_get(srv, extra):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    c.send_headers(1, [(":method", "GET"), (":path", "/echo_headers"), (":scheme", "http"),
                       (":authority", "x")] + extra, end_stream=True)
    s.sendall(c.data_to_send())
    status, reset, goaway, closed = None, None, None, False
    try:
        while status is None and reset is None and goaway is None:
            data = s.recv(1 << 20)
            if not data:
                closed = True
                break
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    status = int(dict(e.headers)[b":status"])
                elif isinstance(e, h2.events.StreamReset):
                    reset = e.error_code
                elif isinstance(e, h2.events.ConnectionTerminated):
                    goaway = e.error_code
            out = c.data_to_send()
            if out:
                s.sendall(out)
    except (socket.timeout, ConnectionError):
        closed = True
    s.close()
    return status, reset, goaway, closed


def test_h2_header_bytes_count_like_http1(srv):
    """F11: a 33,000-byte header is 431 on HTTP/1 and on HTTP/2; ~70 KB is a
    431 or a proper stream/connection error, never a bare close."""
    c = srv.conn()
    c.send("GET /echo_headers HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % ("a" * 33000))
    r = c.response()
    c.close()
    assert r.status == 431, r
    status, reset, goaway, closed = h2_get(srv, [("x-big", "a" * 33000)])
    assert status == 431, (status, reset, goaway, closed)
    status, reset, goaway, closed = h2_get(srv, [("x-big", "a" * 70000)])
    assert status == 431 or reset is not None or goaway is not None, (status, reset, goaway, closed)
    status, _, _, _ = h2_get(srv, [("x-small", "a" * 1000)])
    assert status == 200


if __name__ == "__main__":
    try:
        harness.main(globals(), app=APP)
    finally:
        shutil.rmtree(APP, ignore_errors=True)
