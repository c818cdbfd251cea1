"""HTTP/1.1 message syntax and framing (RFC 9112, RFC 9110 where it concerns a
server): each malformed case is answered 400 (501 where noted) and the
connection closed, nothing pipelined behind it is answered, and the server
keeps serving (the harness checks /hello after every test)."""
import time

import harness

ENV = {"DEVLOOP_MAX_HEADER_BYTES": "4096", "DEVLOOP_MAX_HEADERS": "20"}
ALLOWED_ERRORS = ["outside 200-599", "api.client:"]


def exchange(srv, data, timeout=5):
    """Sends data; returns (responses, closed): every response the server
    wrote, and whether it then closed the connection."""
    c = srv.conn(timeout=timeout)
    if isinstance(data, str):
        data = data.encode("latin-1")
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = []
    closed = False
    while True:
        try:
            got.append(c.response(head=data.startswith(b"HEAD")))
        except EOFError:
            closed = True
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        except OSError:  # timeout: the connection stays open
            break
    c.close()
    return got, closed


def rejected(srv, data, status=400, text=None):
    got, closed = exchange(srv, data)
    assert len(got) == 1, "want one %d, got %r" % (status, got)
    r = got[0]
    assert r.status == status, r
    j = r.json()
    assert j["message"] and j["requestId"] == r.header("x-request-id"), j
    if text:
        assert text in j["message"], j
    assert r.header("connection") == "close", r.headers
    assert closed, "the connection must close after %d" % status
    return j


def accepted(srv, data, n=1):
    """Sends data; returns its n responses and checks that no more follow."""
    c = srv.conn(timeout=5)
    c.send(data.encode("latin-1") if isinstance(data, str) else data)
    got = [c.response() for _ in range(n)]
    c.sock.settimeout(0.2)
    try:
        extra = c.sock.recv(1)
    except OSError:
        extra = b""
    assert not extra and not c.buf, (got, c.buf + extra)
    c.close()
    return got


# ------------------------------------------------------------ field syntax

def test_field_names_must_be_tokens(srv):
    for name in [b"", b"X-A ", b"X-A\t", b" X-A", b"X(A)", b"X@A", b"X\"A", b"X/A", b"X{A}",
                 b"X\x7fA", b"X\x80A", b"X[A]", b"X=A", b"X?A"]:
        rejected(srv, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + name + b": v\r\n\r\n")
    accepted(srv, "GET /hello HTTP/1.1\r\nHost: x\r\nX-!#$%&'*+-.^_`|~09: v\r\n\r\n")


def test_obs_fold_after_an_empty_value(srv):
    """A value that starts on a continuation line is obs-fold as much as one
    continued onto it: "Transfer-Encoding:" CRLF SP "chunked" would smuggle."""
    for head in ["POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
                 "5\r\nhello\r\n0\r\n\r\n",
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\t5\r\n\r\nhello",
                 "GET /echo HTTP/1.1\r\nHost:\r\n evil.example\r\n\r\n",
                 "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: \r\n folded\r\n\r\n"]:
        rejected(srv, head, text="obs-fold")
        # the same bytes one at a time: the fold is seen across reads too
        c = srv.conn()
        for b in head.encode():
            c.send(bytes([b]))
        r = c.response()
        assert r.status == 400 and "obs-fold" in r.json()["message"], (head, r)
        c.close()
    got = accepted(srv, "GET /echo HTTP/1.1\r\nHost: x\r\nX-A:  \t v\r\nX-B:\r\n\r\n")
    assert got[0].status == 200, got


def test_empty_field_name_in_trailer(srv):
    rejected(srv, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "0\r\n: v\r\n\r\n")


# ------------------------------------------------------------------- Host

def test_host_exactly_one(srv):
    rejected(srv, "GET /hello HTTP/1.1\r\n\r\n", text="Host")
    rejected(srv, "GET /hello HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", text="Host")
    rejected(srv, "GET /hello HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", text="Host")
    got = accepted(srv, "GET /hello HTTP/1.0\r\n\r\n")  # 1.0 needs none
    assert got[0].status == 200, got
    got = accepted(srv, "GET /echo HTTP/1.1\r\nHost:\r\n\r\n")  # empty is allowed
    assert got[0].status == 200, got


def test_host_value_must_be_valid(srv):
    for host in ["a b", "a/b", "a@b", "[::1", "a:b", "a:80:80", "a\"b", "a{b}", "a#b", "[1]",
                 "[:]", "[1.2.3.4]", "[]", "[v1]", "[v.x]", "[::1]x", ":80"]:
        rejected(srv, "GET /hello HTTP/1.1\r\nHost: %s\r\n\r\n" % host, text="Host")
    for host in ["a.example", "a.example:8080", "[::1]:80", "127.0.0.1", "xn--d1a_b~c%20",
                 "[::ffff:1.2.3.4]", "[v1.x:y]:8", "[2001:db8::1]"]:
        got = accepted(srv, "GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        assert got[0].json()["host"] == host, got


# -------------------------------------------------------- request targets

def test_absolute_form(srv):
    got = accepted(srv, "GET http://a.example:8/echo/1?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    j = got[0].json()
    assert got[0].status == 200 and j["path"] == "/echo/1" and j["query"] == {"x": "1"}, j
    assert j["host"] == "a.example:8", j  # the authority replaces Host
    got = accepted(srv, "POST HTTP://b.example/echo HTTP/1.1\r\nHost: b.example\r\n"
                        "Content-Length: 2\r\n\r\nhi")
    assert got[0].json()["raw"] == "hi" and got[0].json()["host"] == "b.example", got
    got = accepted(srv, "GET http://a.example?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert got[0].status == 404 and "GET /" in got[0].json()["message"], got
    got = accepted(srv, "GET http://a.example/echo HTTP/1.0\r\n\r\n")  # no Host in 1.0
    assert got[0].json()["host"] == "a.example", got
    # an authority long enough to move the head buffer when it is copied
    host = "a" * 60 + "." + "b" * 60 + ".example:8080"
    got = accepted(srv, "DELETE http://%s/echo HTTP/1.1\r\nHost:\r\nTransfer-Encoding: "
                        "chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n" % host)
    assert got[0].json()["host"] == host and got[0].json()["raw"] == "hello", got
    # still exactly one Host in HTTP/1.1, and a sound authority
    rejected(srv, "GET http://a.example/echo HTTP/1.1\r\n\r\n", text="Host")
    rejected(srv, "GET /echo#frag HTTP/1.1\r\nHost: a.example\r\n\r\n", text="fragment")
    for target in ["http://u@a.example/echo", "http:///echo", "http://a%b/echo",
                   "http://:80/echo", "ftp://a.example/echo", "a.example/echo"]:
        rejected(srv, "GET %s HTTP/1.1\r\nHost: a.example\r\n\r\n" % target)
    rejected(srv, "GET /echo HTTP/1.1\r\nHost: :80\r\n\r\n", text="Host")
    # an https target needs a secured connection (RFC 9110 4.2.2, 7.4)
    rejected(srv, "GET https://a.example/echo HTTP/1.1\r\nHost: a.example\r\n\r\n", 421,
             text="TLS")


def test_authority_form_only_for_connect(srv):
    rejected(srv, "GET a.example:80 HTTP/1.1\r\nHost: a.example\r\n\r\n")
    rejected(srv, "CONNECT a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n", 501,
             text="CONNECT")


def test_asterisk_form_only_for_options(srv):
    rejected(srv, "GET * HTTP/1.1\r\nHost: x\r\n\r\n", text="OPTIONS")
    rejected(srv, "POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", text="OPTIONS")
    got = accepted(srv, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n"
                        "\r\n", n=2)
    assert got[0].status == 204 and "GET" in got[0].header("allow"), got
    assert got[1].body == b"Hello, World!", got


# -------------------------------------------------------- Transfer-Encoding

def test_transfer_encoding_in_http10(srv):
    # the chunked body hides a second request: it must never be read
    got, closed = exchange(srv, "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "2a\r\nGET /hello HTTP/1.0\r\n\r\n\r\n0\r\n\r\n"
                                "GET /hello HTTP/1.0\r\n\r\n")
    assert len(got) == 1 and got[0].status == 400 and closed, got
    assert "HTTP/1.0" in got[0].json()["message"], got


def test_transfer_coding_list(srv):
    base = "POST /echo HTTP/1.1\r\nHost: x\r\n%s\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    for te in ["Transfer-Encoding: chunked, gzip", "Transfer-Encoding: identity",
               "Transfer-Encoding: xchunked", "Transfer-Encoding: chunked, chunked",
               "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
               "Transfer-Encoding:", "Transfer-Encoding: ,", "Transfer-Encoding: chunked;x=1",
               "Transfer-Encoding: chu nked", "Transfer-Encoding: \"chunked\"",
               "Transfer-Encoding: chunked\r\nContent-Length: 1",
               "Transfer-Encoding: chunked ,"]:  # llhttp: nothing after chunked
        rejected(srv, base % (te + "\r\n"))
    for te in ["Transfer-Encoding: gzip, chunked", "Transfer-Encoding: gzip\r\n"
               "Transfer-Encoding: chunked", "Transfer-Encoding: x-custom, chunked"]:
        rejected(srv, base % (te + "\r\n"), 501, text="not implemented")
    for te in ["Transfer-Encoding: chunked", "Transfer-Encoding: CHUNKED",
               "Transfer-Encoding: , chunked"]:
        got = accepted(srv, base % (te + "\r\n"), n=2)
        assert got[0].status == 200 and got[1].status == 200, (te, got)


# ----------------------------------------------------------- chunked bodies

CHUNKED = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunk_data_crlf_checked(srv):
    rejected(srv, CHUNKED + "5\r\nhelloXX0\r\n\r\n")
    # the smuggling shape: a bare LF after the data would hide the next request
    rejected(srv, CHUNKED + "5\r\nhello\n10\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    rejected(srv, CHUNKED + "5\r\nhello\r0\r\n\r\n")
    rejected(srv, CHUNKED + "5\r\nhellox\r\n0\r\n\r\n")


def test_chunk_size_hex_only(srv):
    for size in ["0x5", " 5", "5 ", "+5", "-5", "5_", "g", "", "fffffffffffffffff"]:
        rejected(srv, CHUNKED + size + "\r\nhello\r\n0\r\n\r\n")
    got = accepted(srv, CHUNKED + "A\r\n0123456789\r\na\r\n0123456789\r\n00\r\n\r\n")
    assert got[0].json()["raw"] == "0123456789" * 2, got


def test_chunk_extensions(srv):
    got = accepted(srv, CHUNKED + "5;a;b=\"c d\";e=f\r\nhello\r\n0;z\r\n\r\n")
    assert got[0].json()["raw"] == "hello", got
    # a megabyte of extensions is refused as soon as it passes the header limit
    c = srv.conn()
    c.send(CHUNKED + "5;")
    t0 = time.time()
    sent = 0
    try:
        while sent < 1 << 20:
            c.send("a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.response()
    assert r.status == 400 and "chunk extension" in r.json()["message"], r
    assert time.time() - t0 < 5, "took %.1fs" % (time.time() - t0)
    c.close()
    many = ";a" * 30  # more than DEVLOOP_MAX_HEADERS extensions on one chunk
    rejected(srv, CHUNKED + "5" + many + "\r\nhello\r\n0\r\n\r\n", text="chunk extension")
    # the limits are per chunk: one extension on each of 150 chunks is fine
    body = "".join("1;chunk-signature=%064x\r\nx\r\n" % i for i in range(150))
    got = accepted(srv, CHUNKED + body + "0\r\n\r\n")
    assert got[0].json()["raw"] == "x" * 150, got


def test_trailers_dropped_and_bounded(srv):
    got = accepted(srv, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                        "Content-Type: application/evil\r\nX-Trailer: 1\r\n\r\n")
    j = got[0].json()
    assert j["content_type"] == "text/plain" and "x-trailer" not in j["header_names"], j
    rejected(srv, CHUNKED + "0\r\nX-Big: " + "v" * 5000 + "\r\n\r\n", 431)
    rejected(srv, CHUNKED + "0\r\n" + "".join("X-T%d: v\r\n" % i for i in range(30)) + "\r\n",
             431)
    rejected(srv, CHUNKED + "0\r\nX-A: a\r\n b\r\n\r\n")  # obs-fold in a trailer
    rejected(srv, CHUNKED + "0\r\nX-A : a\r\n\r\n")


def test_error_answer_to_head_has_no_body(srv):
    """RFC 9110 9.3.2: a HEAD answer has no content, a parser error's too."""
    for req in ["HEAD /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                "HEAD /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n",
                "HEAD /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + "v" * 5000 + "\r\n\r\n"]:
        c = srv.conn()
        c.send(req)
        r = c.response(head=True)
        assert r.status in (400, 414, 431) and int(r.header("content-length")) > 0, r
        assert c.closed_by_peer() and c.buf == b"", (r, c.buf)
        c.close()


# ------------------------------------------------- nothing after a 400

def test_nothing_parsed_after_400(srv):
    got, closed = exchange(srv, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                                "GET /hello HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"
                                "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                                "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.status for r in got] == [200, 400] and closed, got
    got, closed = exchange(srv, "GARBAGE\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.status for r in got] == [400] and closed, got


# -------------------------------------------------- statuses from handlers

def test_handler_status_outside_200_599(srv):
    for code in (100, 101, 103, 199, 600, 99):
        got = accepted(srv, "GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" % code, n=2)
        assert got[0].status == 500 and got[1].body == b"Hello, World!", (code, got)
    got = accepted(srv, "GET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got[0].status == 299, got
    time.sleep(0.3)  # the log writer is asynchronous
    assert "/status/:code" in srv.output() and "outside 200-599" in srv.output()


def test_205_and_304_have_no_content(srv):
    """RFC 9110 15.3.6: no content in a 205; 8.6: no Content-Length in a 304
    unless it is what a 200 would have had (unknown here)."""
    got = accepted(srv, "GET /status/205 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", n=3)
    assert got[0].status == 205 and got[0].header("content-length") == "0", got[0]
    assert got[1].status == 304 and got[1].header("content-length") is None, got[1]
    assert got[2].body == b"Hello, World!", got


def test_in_process_requests_cannot_be_smuggled(srv):
    """api.client builds a request from strings: a decoded CR LF in a route
    parameter or a header value must not start a second request."""
    r = srv.get("/proxy/ok")
    assert r.status == 200 and r.json()["path"] == "/echo/ok", r
    from urllib.parse import quote
    smuggled = "POST /internal/count HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    for path in ["/proxy/" + quote("1 HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled, safe=""),
                 "/proxy/" + quote("a\n" + smuggled, safe=""), "/proxy/a%00b",
                 "/proxy-header?t=" + quote("a\r\n\r\n" + smuggled, safe=""),
                 "/proxy-header?t=a%0aX:%20b"]:
        r = srv.get(path)
        assert r.status == 500, (path, r)
    assert srv.get("/internal/hits").json() == {"hits": 0}
    r = srv.get("/proxy-header?t=tab%09ok")  # HTAB is allowed in a value
    assert r.status == 200, r


# ------------------------------------------------------------------ Expect

def expect(srv, head, wait=3.0):
    """Sends a head with Expect: 100-continue and no body; returns the first
    response and how long it took."""
    c = srv.conn(timeout=wait)
    t0 = time.time()
    c.send(head + "Expect: 100-continue\r\n\r\n")
    r = c.response()
    took = time.time() - t0
    return c, r, took


def test_expect_refused_at_once(srv):
    cases = [
        ("POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n", 404),
        ("DELETE /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n", 405),
        ("POST /secret HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n", 401),
        ("POST /secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
         "Content-Length: 5\r\n", 401),
        ("POST /secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader-token\r\n"
         "Content-Length: 5\r\n", 403),
        ("POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n", 413),
        ("POST /secret HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n", 401),
    ]
    for head, status in cases:
        c, r, took = expect(srv, head)
        assert r.status == status and took < 1.0, (head, r, took)
        if status == 405:
            assert r.header("allow") == "GET, HEAD", r.headers
        if status == 401:
            assert r.header("www-authenticate"), r.headers
        assert r.header("connection") == "close", r.headers
        assert c.closed_by_peer(), head
        c.close()


def test_expect_is_a_list(srv):
    for value, status in (("100-continue, ", 100), (" , 100-CONTINUE", 100),
                          ("100-continue, foo", 417), ("foo", 417)):
        c = srv.conn(timeout=3)
        c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: %s\r\n\r\n"
               % value)
        r = c.response()
        assert r.status == status, (value, r)
        c.close()


def test_expect_in_process(srv):
    r = srv.get("/proxy-expect")
    assert r.json() == {"no_token": 401, "token": 200, "size": 5}, r


def test_expect_accepted_gets_100(srv):
    c, r, took = expect(srv, "POST /secret HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer writer-token\r\nContent-Length: 5\r\n")
    assert r.status == 100, r
    c.send("hello")
    r = c.response()
    assert r.status == 200 and r.json() == {"size": 5}, r
    r = c.request("GET", "/hello")  # kept alive
    assert r.status == 200, r
    c.close()


if __name__ == "__main__":
    harness.main(globals(), app="http1", env=ENV)
