"""Bounded decoding and valid UTF-8 out, over a real socket: request bodies are
decoded into at most DEVLOOP_MAX_BODY_ELEMENTS values (413 past it) and 100
levels of nesting (400), so a megabyte of empty maps costs the server a few
megabytes, not 77; and JSON answers never carry bytes that are not UTF-8,
whatever the path, parameters, query, headers or handler put in them."""
import json
import os
import random
import time
import urllib.parse

import harness
from harness import Server

MAX_ELEMENTS = 100000  # the documented default
MIB = 1024 * 1024
SANITIZED = os.environ.get("DEVLOOP_SANITIZED")


def strict_json(r):
    """The body as JSON, refusing anything that is not UTF-8."""
    return json.loads(r.body.decode("utf-8", "strict"))


def expect_error(r, status, message):
    assert r.status == status, r
    doc = strict_json(r)
    assert doc["message"] == message, doc
    harness.check_std_headers(r)


# ---------------------------------------------------------------- UTF-8 out

def h2_get(port, path):
    """One HTTP/2 (h2c) GET of a raw byte path; returns (status, body)."""
    import socket
    import h2.config
    import h2.connection
    import h2.events
    cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(conn.data_to_send())
    conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"),
                          (b":authority", b"localhost"), (b":path", path)], end_stream=True)
    s.sendall(conn.data_to_send())
    status, body = None, b""
    while True:
        data = s.recv(65536)
        assert data, "closed before the answer"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(len(ev.data), ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                s.close()
                return status, body
        s.sendall(conn.data_to_send())


def test_404_of_a_raw_byte_path(srv):
    # HTTP/1.1: bytes outside the URI grammar in a target are a 400 (strict llhttp)
    c = srv.conn()
    c.send(b"GET /\xff\xc3 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    r = c.response()
    c.close()
    assert r.status == 400 and strict_json(r)["message"], r
    # HTTP/2 takes them: the 404 message names the path with U+FFFD in their place
    status, body = h2_get(srv.port, b"/\xff\xc3")
    assert status == 404, (status, body)
    msg = json.loads(body.decode("utf-8", "strict"))["message"]
    assert msg == "no route for GET /\ufffd\ufffd", msg
    # well-formed UTF-8 is kept as it is
    status, body = h2_get(srv.port, "/caf\u00e9/\U0001f600".encode())
    msg = json.loads(body.decode("utf-8", "strict"))["message"]
    assert status == 404 and msg == "no route for GET /caf\u00e9/\U0001f600", msg


def test_percent_encoded_param(srv):
    r = srv.get("/params/%ff%c3/items/x")
    assert r.status == 200, r
    assert strict_json(r) == {"id": "\ufffd\ufffd", "item": "x"}, r.body


def test_params_match_python_replacement(srv):
    """Random bytes in a path parameter come back as CPython decodes them with
    errors="replace": one U+FFFD per maximal ill-formed subpart (Unicode 3.9)."""
    rnd = random.Random(1234)
    alphabet = [b"a", b"\x80", b"\xbf", b"\xc0", b"\xc3", b"\xc3\xa9", b"\xe2\x82",
                b"\xe2\x82\xac", b"\xed\xa0\x80", b"\xef\xbf\xbd", b"\xf0\x9f\x98",
                b"\xf0\x9f\x98\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\"", b"\\"]
    c = srv.conn()
    try:
        for _ in range(300):
            raw = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12)))
            r = c.request("GET", "/params/%s/items/x" % urllib.parse.quote(raw, safe=""))
            assert r.status == 200, r
            got = strict_json(r)["id"]
            assert got == raw.decode("utf-8", "replace"), (raw, got)
    finally:
        c.close()


def test_query_and_header_bytes(srv):
    r = srv.get("/query?q=%ff&ok=caf%C3%A9")
    assert r.status == 200, r
    assert strict_json(r) == {"q": "\ufffd", "ok": "caf\u00e9"}, r.body
    c = srv.conn()
    c.send(b"GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Custom: caf\xe9 \xed\xa0\x80\r\n\r\n")
    r = c.response()
    c.close()
    assert r.status == 200, r
    assert strict_json(r)["custom"] == "caf\ufffd \ufffd\ufffd\ufffd", r.body


def test_msgpack_string_out_as_json(srv):
    """Bytes that arrive in a MessagePack string leave as U+FFFD in JSON (and
    as the same bytes in MessagePack, where strings are raw)."""
    body = b"\x81\xa1s\xa3\xff\xe2\x82"
    r = srv.request("POST", "/echo", {"Content-Type": "application/msgpack"}, body)
    assert r.status == 200, r
    assert strict_json(r)["body"] == {"s": "\ufffd\ufffd"}, r.body


# ------------------------------------------------------------- body limits

def measure(body, content_type, path="/echo"):
    """Sends body to a fresh server; returns (response, seconds, RSS growth in
    KiB). A fresh server, so what earlier tests left in its heap cannot hide
    the growth."""
    s = Server("basic")
    try:
        for _ in range(3):
            assert s.request("POST", path, {"Content-Type": "application/json"}, b"[1]").status == 200
        before = harness.rss_kib(s.pid())
        t0 = time.time()
        r = s.request("POST", path, {"Content-Type": content_type}, body)
        secs = time.time() - t0
        after = harness.rss_kib(s.pid())
        s.alive()
    finally:
        s.stop()
    print("# %s %d bytes: %d in %.3f s, RSS %d -> %d KiB" % (
        content_type, len(body), r.status, secs, before, after))
    return r, secs, after - before


def check_bounded(r, secs, grown_kb, limit_kb):
    expect_error(r, 413, "request body has more than %d elements" % MAX_ELEMENTS)
    assert secs < 2.0, secs
    if not SANITIZED:
        assert grown_kb < limit_kb, grown_kb


def test_msgpack_megabyte_of_empty_maps(_):
    n = MIB - 5
    body = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    assert len(body) == MIB
    r, secs, grown = measure(body, "application/msgpack")
    # the array header alone is over the cap: nothing is built
    check_bounded(r, secs, grown, 4 * 1024)


def test_msgpack_megabyte_of_small_arrays_of_maps(_):
    n = MIB // 16 - 1
    body = b"\xdd" + n.to_bytes(4, "big") + (b"\x9f" + b"\x80" * 15) * n
    r, secs, grown = measure(body, "application/msgpack")
    check_bounded(r, secs, grown, 12 * 1024)


def test_json_megabyte_of_empty_arrays(_):
    body = b"[" + b"[]," * (MIB // 3 - 1) + b"[]]"
    assert len(body) <= MIB
    r, secs, grown = measure(body, "application/json")
    check_bounded(r, secs, grown, 12 * 1024)


def test_json_megabyte_of_empty_objects(_):
    body = b"[" + b"{}," * (MIB // 3 - 1) + b"{}]"
    assert len(body) <= MIB
    r, secs, grown = measure(body, "application/json")
    check_bounded(r, secs, grown, 12 * 1024)


def test_json_megabyte_of_objects_holding_objects(_):
    # the dearest JSON value per byte: an object with a hash part and another
    # table, for 9 bytes
    body = b"[" + b'{"a":{}},' * (MIB // 9 - 1) + b'{"a":{}}]'
    assert len(body) <= MIB
    r, secs, grown = measure(body, "application/json")
    check_bounded(r, secs, grown, 16 * 1024)


def test_json_megabyte_of_zeros(srv):
    body = b"[" + b"0," * (MIB // 2 - 2) + b"0]"
    r = srv.request("POST", "/echo", {"Content-Type": "application/json"}, body)
    expect_error(r, 413, "request body has more than %d elements" % MAX_ELEMENTS)


def test_form_with_too_many_fields(srv):
    body = b"&".join(b"k%d=" % i for i in range(MAX_ELEMENTS + 1))
    assert len(body) < MIB
    r = srv.request("POST", "/echo", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    expect_error(r, 413, "request body has more than %d elements" % MAX_ELEMENTS)
    # one repeated key: every value counts
    r = srv.request("POST", "/echo", {"Content-Type": "application/x-www-form-urlencoded"},
                    b"a=1&" * (MAX_ELEMENTS + 1))
    expect_error(r, 413, "request body has more than %d elements" % MAX_ELEMENTS)


def test_elements_at_the_cap(srv):
    """N values pass, N + 1 do not: the top array and its items."""
    for ctype, ok, over in (
            ("application/json",
             b"[" + b"0," * (MAX_ELEMENTS - 2) + b"0]",
             b"[" + b"0," * (MAX_ELEMENTS - 1) + b"0]"),
            ("application/msgpack",
             b"\xdd" + (MAX_ELEMENTS - 1).to_bytes(4, "big") + b"\xc0" * (MAX_ELEMENTS - 1),
             b"\xdd" + MAX_ELEMENTS.to_bytes(4, "big") + b"\xc0" * MAX_ELEMENTS),
            ("application/x-www-form-urlencoded",
             b"&".join(b"k%d" % i for i in range(MAX_ELEMENTS - 1)),
             b"&".join(b"k%d" % i for i in range(MAX_ELEMENTS)))):
        r = srv.request("POST", "/echo", {"Content-Type": ctype}, ok)
        assert r.status == 200, (ctype, r)
        r = srv.request("POST", "/echo", {"Content-Type": ctype}, over)
        expect_error(r, 413, "request body has more than %d elements" % MAX_ELEMENTS)


def test_json_nesting(srv):
    def nest(d):
        return "[" * d + "]" * d

    # as deep as a body may go, and echoed inside the handler's own table
    r = srv.request("POST", "/echo", {"Content-Type": "application/json"}, nest(100))
    assert r.status == 200, r
    # deeper: a 400 naming the limit, however deep (the encoder's limit used
    # to answer 129..256 levels with a 500)
    for d in (101, 200, 256, 100000):
        r = srv.request("POST", "/echo", {"Content-Type": "application/json"}, nest(d))
        expect_error(r, 400, "malformed request body: nesting deeper than 100")
    r = srv.request("POST", "/echo", {"Content-Type": "application/json"}, '{"k":' * 150)
    expect_error(r, 400, "malformed request body: nesting deeper than 100")


def test_msgpack_nesting(srv):
    r = srv.request("POST", "/echo", {"Content-Type": "application/msgpack"},
                    b"\x91" * 100 + b"\xc0")
    assert r.status == 200, r
    for body in (b"\x91" * 101 + b"\xc0", b"\x91" * 200 + b"\xc0", b"\x81\x01" * 150 + b"\xc0",
                 b"\x91" * 500000):
        r = srv.request("POST", "/echo", {"Content-Type": "application/msgpack"}, body)
        expect_error(r, 400, "malformed request body: nesting deeper than 100")


if __name__ == "__main__":
    harness.main(globals())
