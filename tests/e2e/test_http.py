"""HTTP/1.x behaviour every app gets (README, HTTP behaviour)."""
import json
import time

import harness
from harness import check_std_headers, curl


def test_hello(srv):
    r = srv.get("/hello")
    assert r.status == 200 and r.body == b"Hello, World!", r
    assert r.header("content-type").startswith("text/plain"), r
    check_std_headers(r)


def test_json(srv):
    r = srv.get("/json")
    assert r.status == 200 and r.json() == {"message": "Hello, World!"}, r
    assert r.header("content-type") == "application/json", r
    check_std_headers(r)


def test_not_found_json(srv):
    r = srv.get("/no/such/route")
    assert r.status == 404, r
    body = r.json()
    assert body["error"] == "Not Found" and "/no/such/route" in body["message"], body
    assert body["requestId"] == r.header("x-request-id"), (body, r.headers)
    check_std_headers(r)


def test_method_not_allowed(srv):
    r = srv.request("DELETE", "/hello")
    assert r.status == 405, r
    assert r.header("allow") == "GET, HEAD", r.headers
    assert r.json()["error"] == "Method Not Allowed"
    r = srv.request("PROPFIND", "/hello")
    assert r.status == 405, r
    r = srv.request("GET", "/echo")
    assert r.status == 405 and "POST" in r.header("allow") and "PUT" in r.header("allow"), r


def test_head(srv):
    c = srv.conn()
    r = c.request("HEAD", "/json")
    assert r.status == 200 and r.body == b"", r
    assert r.header("content-length") == "27", r.headers
    r = c.request("GET", "/json")  # the connection is still in sync
    assert r.json() == {"message": "Hello, World!"}
    c.close()


def test_keepalive_many_requests(srv):
    c = srv.conn()
    for i in range(200):
        r = c.request("GET", "/json")
        assert r.status == 200 and r.header("connection") is None, r
    c.close()


def test_pipelining_in_order(srv):
    c = srv.conn()
    reqs = []
    paths = ["/sleep/50", "/hello", "/json", "/params/1/items/2", "/sleep/10", "/nope", "/hello"]
    for p in paths:
        reqs.append("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p)
    c.send("".join(reqs))
    got = [c.response() for _ in paths]
    assert got[0].json() == {"slept": 50}, got[0]
    assert got[1].body == b"Hello, World!"
    assert got[2].json() == {"message": "Hello, World!"}
    assert got[3].json() == {"id": "1", "item": "2"}
    assert got[4].json() == {"slept": 10}
    assert got[5].status == 404
    assert got[6].body == b"Hello, World!"
    ids = [r.header("x-request-id") for r in got]
    assert len(set(ids)) == len(ids), ids
    c.close()


def test_pipelining_flood_behind_a_parked_handler(srv):
    # more than the 256 KiB read-ahead arrives while the first handler sleeps:
    # reading stops, then must resume and answer every request in order
    import threading
    c = srv.conn(timeout=20)
    n = 6000
    reqs = ["GET /sleep/300 HTTP/1.1\r\nHost: x\r\n\r\n"]
    reqs += ["GET /params/%d/items/x HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (i, "p" * 40)
             for i in range(n)]
    data = "".join(reqs).encode()
    assert len(data) > 300 * 1024
    sender = threading.Thread(target=c.send, args=(data,))
    sender.start()
    assert c.response().json() == {"slept": 300}
    for i in range(n):
        r = c.response()
        assert r.status == 200 and r.json() == {"id": str(i), "item": "x"}, (i, r)
    sender.join(10)
    c.close()


def test_pipelining_one_byte_at_a_time(srv):
    c = srv.conn()
    data = ("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 7\r\n\r\n{\"a\":1}GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    for b in data:
        c.send(bytes([b]))
    r1, r2 = c.response(), c.response()
    assert r1.json()["body"] == {"a": 1}, r1
    assert r2.body == b"Hello, World!", r2
    c.close()


def test_http10(srv):
    c = srv.conn()
    c.send("GET /json HTTP/1.0\r\n\r\n")
    r = c.response()
    assert r.version == "1.0" and r.status == 200 and r.json() == {"message": "Hello, World!"}, r
    assert r.header("connection") == "close", r.headers
    assert c.closed_by_peer(), "HTTP/1.0 without keep-alive must close"
    c = srv.conn()
    c.send("GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.response()
    assert r.header("connection").lower() == "keep-alive", r.headers
    c.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.response().body == b"Hello, World!"
    c.close()


def test_connection_close(srv):
    c = srv.conn()
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.header("connection") == "close", r
    assert c.closed_by_peer()


def test_chunked_request_body(srv):
    c = srv.conn()
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           "Content-Type: application/json\r\n\r\n"
           "4\r\n{\"k\"\r\n6;ext=1\r\n:[1,2]\r\n1\r\n}\r\n0\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.json()["body"] == {"k": [1, 2]}, r
    c.close()


def test_expect_continue(srv):
    c = srv.conn()
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
           "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    r = c.response()
    assert r.status == 100, r
    c.send("hello")
    r = c.response()
    assert r.status == 200 and r.json()["body"] == "hello", r
    # too large: 413 at once, no 100
    c = srv.conn()
    c.send("POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
           "Expect: 100-continue\r\n\r\n")
    r = c.response()
    assert r.status == 413, r
    # unknown expectation
    c = srv.conn()
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: teapot\r\n\r\nx")
    assert c.response().status == 417


def test_curl_expect_continue(srv):
    body = "x" * 5000
    status, h, out = curl("-H", "Expect: 100-continue", "-H", "Content-Type: text/plain",
                          "--data-binary", body, srv.url("/echo"))
    assert status == 200 and json.loads(out)["raw"] == body


def test_request_id(srv):
    r = srv.get("/headers", {"X-Request-Id": "client-id-123"})
    assert r.header("x-request-id") == "client-id-123" and r.json()["id"] == "client-id-123", r
    r = srv.get("/headers", {"X-Request-Id": "bad id with spaces"})
    rid = r.header("x-request-id")
    assert len(rid) == 32 and all(ch in "0123456789abcdef" for ch in rid), rid
    ids = {srv.get("/hello").header("x-request-id") for _ in range(50)}
    assert len(ids) == 50


def test_params_and_wildcard(srv):
    r = srv.get("/params/a%20b/items/%C3%A9")
    assert r.json() == {"id": "a b", "item": "\u00e9"}, r
    r = srv.get("/files/a/b/c.txt")
    assert r.json() == {"path": "a/b/c.txt"}, r


def test_query(srv):
    r = srv.get("/query?a=1&b=x+y&c=%2F&a=2&a=3&empty=&flag")
    assert r.json() == {"a": ["1", "2", "3"], "b": "x y", "c": "/", "empty": "", "flag": ""}, r.body
    r = srv.get("/query")
    assert r.json() == {}, r.body


def test_headers_case_insensitive(srv):
    r = srv.get("/headers", {"user-agent": "ua/1", "X-CUSTOM": "v", "X-Multi": "a"})
    j = r.json()
    assert j["ua"] == "ua/1" and j["custom"] == "v" and j["multi"] == "a", j
    c = srv.conn()
    c.send("GET /headers HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n")
    assert c.response().json()["multi"] == "a, b"


def test_status_and_headers(srv):
    r = srv.get("/status")
    assert r.status == 201 and r.json() == {"created": True}, r
    assert r.header("x-foo") == "bar" and r.header_all("x-list") == ["a", "b"], r.headers
    r = srv.get("/text-type")
    assert r.header("content-type") == "text/html; charset=utf-8" and r.body == b"<p>hi</p>"
    r = srv.get("/long-type")  # it was cut at 127 bytes
    assert r.header("content-type") == "multipart/mixed; boundary=" + "b" * 200, r.headers
    for _ in range(3):  # the header buffers are reused: nothing of an earlier answer stays
        r = srv.get("/status")
        assert r.header("content-type") == "application/json", r.headers
        assert r.header_all("x-list") == ["a", "b"] and r.header("x-foo") == "bar", r.headers
    r = srv.get("/nothing")
    assert r.status == 204 and r.body == b"" and r.header("content-length") is None, r
    r = srv.get("/own-cache-control")
    assert r.header_all("cache-control") == ["public, max-age=60"], r.headers


def test_methods(srv):
    for m in ("PUT", "PATCH"):
        r = srv.request(m, "/echo", {"Content-Type": "application/json"}, '{"x":1}')
        assert r.json() == {"method": m, "body": {"x": 1}}, r
    r = srv.request("DELETE", "/echo")
    assert r.json() == {"method": "DELETE"}
    for m in ("GET", "POST"):
        assert srv.request(m, "/multi", body="" if m == "POST" else None).json() == {"method": m}


ALLOWED_ERRORS = ["boom in handler", "error object is a table", "invalid status", "outside 200-599",
                  "reserved header", "set by the runtime", "control character", "cannot encode",
                  "outside an I/O call",
                  "table: 0x", "the store said no"]


def test_handler_errors_are_500(srv):
    for path in ("/error", "/error-table", "/bad-status", "/bad-header", "/unencodable", "/yield",
                 "/nil-err", "/reserved-header"):
        r = srv.get(path)
        assert r.status == 500, (path, r)
        body = r.json()
        assert body["error"] == "Internal Server Error", body
        assert body["requestId"] == r.header("x-request-id"), body
        assert b"boom" not in r.body and b"stack" not in r.body and b".lua" not in r.body, r.body
        assert r.header("injected") is None
        srv.alive()
    time.sleep(0.2)
    out = srv.output()
    assert "boom in handler" in out and "stack traceback" in out, out[-2000:]
    # `return nil, err` is logged with err (it was "headers must be a table")
    assert "returned nil, the store said no" in out, out[-2000:]
    # a refused header is named in the log (it was "invalid or reserved header name")
    assert "header Content-Length is set by the runtime" in out, out[-2000:]
    assert "header X-Bad: its value contains a control character" in out, out[-2000:]


def test_coroutine_resumed_after_its_task_ended(srv):
    """A coroutine made in one request and resumed in a later one carries the
    ended task in its exdata: reading it was a use after free (ASan build)."""
    assert srv.get("/keep-co").body == b"kept"
    for _ in range(3):
        srv.get("/json")  # the task's memory is used again
    r = srv.get("/resume-co")
    assert r.status == 200, r
    assert r.json()["ok"] is False and "can only be called inside a handler" in r.json()["v"], r.json()
    srv.alive()


def test_log_tagged_with_request_id(srv):
    r = srv.get("/log")
    rid = r.header("x-request-id")
    time.sleep(0.2)
    assert ("[%s] handler log line" % rid) in srv.output(), srv.output()[-1000:]


def test_curl_basic(srv):
    status, h, body = curl(srv.url("/json"))
    assert status == 200 and json.loads(body) == {"message": "Hello, World!"}
    assert h["x-content-type-options"] == "nosniff"


if __name__ == "__main__":
    harness.main(globals())
