#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<name>/).

The seeds are written here as readable literals and committed as the files
this script produces; run it again after editing a seed:
    /usr/bin/python3 tests/fuzz/make_seeds.py
(Debian's python3: it has python3-msgpack and python3-h2.) Inputs of the
split harnesses (http1, h2, multipart) start with fuzz.h's control byte:
seed(payload, cuts=[...], flags=N) writes it.
"""
import os
import shutil

import h2.config
import h2.connection
import h2.events
import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def framed(payload, cuts=(), flags=0):
    """fuzz.h's split framing: control byte, piece lengths, payload."""
    assert len(cuts) < 16 and flags < 16
    steps, prev = [], 0
    for c in cuts:
        assert 0 < c - prev <= 256 and c < len(payload), (c, prev)
        steps.append(c - prev - 1)
        prev = c
    return bytes([flags << 4 | len(cuts)] + steps) + payload


def write(name, label, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, label), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ json
JSON = {
    "object": b'{"a":[1,2,{"b":null}],"c":"x","d":true,"e":false}',
    "empty-object": b"{}",
    "empty-array": b"[]",
    "scalars": b'[null,true,false,0,-0,1.5,-2.25e-3,1E+2]',
    "numbers": b'[12345678901234567890,9007199254740993,1e308,4.9e-324,0.1,123456789012345]',
    "strings": (b'["", "esc \\" \\\\ \\/ \\b \\f \\n \\r \\t", "\\u00e9\\u4e2d", '
                b'"\\ud83d\\ude00", "raw \xc3\xa9"]'),
    "keys": b'{"":1,"1":"one","2":"two","a b":{"x":[]}}',
    "duplicate-keys": b'{"a":1,"a":2,"b":{"c":1,"c":[3]}}',
    "whitespace": b' \t\r\n[ 1 , { "a" : 2 } ]\n',
    "nested": b"[" * 20 + b"1" + b"]" * 20,
    "nested-objects": b'{"a":' * 12 + b"0" + b"}" * 12,
    "bad-trailing-comma": b"[1,2,]",
    "bad-key": b'{"a"}',
    "bad-control": b'"a\x01b"',
    "bad-trailing": b"{} x",
    "bad-escape": b'"\\ud800"',
    "bad-number": b"[01, 1., .5, -]",
}

# ------------------------------------------------------------- msgpack
MSGPACK = {
    "map": msgpack.packb({"a": [1, 2, {"b": None}], "c": "x", "d": True, "e": False}),
    "ints": msgpack.packb([0, -1, -32, -33, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1,
                           -2**63, 2**64 - 1]),
    "floats": msgpack.packb([1.5, -0.0, float("inf"), float("nan"), 1e308]),
    "float32": b"\xca\x3f\xc0\x00\x00",
    "strings": msgpack.packb(["", "x" * 40, "\u00e9"]),
    "bin": msgpack.packb([b"\x00\x01\xff", b"y" * 300], use_bin_type=True),
    "int-keys": msgpack.packb({1: "a", 2: "b"}),
    "mixed-keys": b"\x83\x01\xa1a\xa11\xa1b\xfb\xa1c",  # {1: "a", "1": "b", -5: "c"}
    "empty": msgpack.packb([{}, []]),
    "nested": b"\x91" * 30 + b"\xc0",
    "array16": b"\xdc\x00\x03\x01\x02\x03",
    "map32": b"\xdf\x00\x00\x00\x01\xa1k\xc3",
    "bad-ext": b"\xd4\x01\x02",
    "bad-c1": b"\xc1",
    "bad-truncated": b"\xdb\x00\x00\x01\x00ab",
    "bad-trailing": b"\xc0\xc0",
    "bad-float-key": b"\x81\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xc0",
}

# ----------------------------------------------------------- multipart
# flags pick the boundary: 0 "b", 1 "boundary", 2 WebKit's, 3 "aaaa", 4 "--",
# 5 "ab-ab", 6 "-", 7 "a b", 8 seventy digits, 9-15 the payload's first line
FORM = (b"--boundary\r\n"
        b'Content-Disposition: form-data; name="field"\r\n\r\n'
        b"value\r\n"
        b"--boundary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"line one\r\nline two\r\n"
        b"--boundary--\r\n")
MULTIPART = {
    "form": framed(FORM, flags=1),
    "form-cut-in-delimiter": framed(FORM, cuts=[3, 60, 66, 150], flags=1),
    "empty-file": framed(b'--b\r\nContent-Disposition: form-data; name="f"; filename=""\r\n\r\n'
                         b"\r\n--b--", flags=0),
    "no-data": framed(b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n--b--\r\n', flags=0),
    "preamble-epilogue": framed(b"preamble\r\n--b\r\ncontent-disposition: form-data; name=x\r\n\r\n"
                                b"1\r\n--b--\r\nepilogue --b\r\n", flags=0),
    "padding": framed(b"--b \t\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--b--",
                      flags=0),
    "quoted": framed(b'--b\r\nContent-Disposition: form-data; '
                     b'name="a\\"b"; filename="c\\\\d.bin"\r\n'
                     b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\r\n--b--", flags=0),
    "lookalikes": framed(b'--aaaa\r\nContent-Disposition: form-data; name="x"\r\n\r\n'
                         b"aaa\r\n--aaa\r\n--aaaaa\r\n-\r\n--aaaa--", flags=3),
    "dashes": framed(b'----\r\nContent-Disposition: form-data; name="x"\r\n\r\n---\r\n------',
                     flags=4),
    "webkit": framed(b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
                     b'Content-Disposition: form-data; name="k"\r\n\r\nv\r\n'
                     b"------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n", flags=2),
    "stop-callback": framed(b'--b\r\nContent-Disposition: form-data; name="stop"\r\n\r\nx\r\n--b--',
                            flags=0),
    "custom-boundary": framed(b"xyz\n--xyz\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1"
                              b"\r\n--xyz--", flags=9),
    "bad-no-name": framed(b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", flags=0),
    "bad-after-delim": framed(b"--bx\r\n", flags=0),
    "bad-unterminated": framed(b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc',
                               flags=0),
    "bad-header": framed(b"--b\r\nno colon here\r\n\r\n--b--", flags=0),
    "boundary-param": framed(b'multipart/form-data; charset=utf-8; boundary="a b\'()+_,-./:=?"',
                             flags=1),
}

# ---------------------------------------------------------------- http1
H = b"Host: x\r\n"
UPLOAD = (b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n'
          b'data\r\n--b\r\nContent-Disposition: form-data; name="k"\r\n\r\nv\r\n--b--')
HTTP1 = {
    "get": b"GET /hello HTTP/1.1\r\n" + H + b"\r\n",
    "pipelined": (b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"
                  b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nabcde"
                  b"GET /items/42?x=1&y=a%20b&x=2 HTTP/1.1\r\n" + H + b"\r\n"),
    "chunked": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n0a\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
                b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "http10": b"GET /hello HTTP/1.0\r\n\r\nGET /hello HTTP/1.0\r\n\r\n",
    "http10-keepalive": (b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                         b"HEAD /hello HTTP/1.0\r\n\r\n"),
    "head": b"HEAD /hello HTTP/1.1\r\n" + H + b"\r\nHEAD /nope HTTP/1.1\r\n" + H + b"\r\n",
    "expect": (b"POST /echo HTTP/1.1\r\n" + H +
               b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok"),
    "json": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
             b"Content-Length: 19\r\n\r\n" + b'{"a":[1,2,{"b":3}]}'),
    "json-bad": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
                 b"Content-Length: 4\r\n\r\n{\"a\"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "msgpack": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: application/msgpack\r\n"
                b"Accept: application/msgpack\r\nContent-Length: 6\r\n\r\n\x81\xa1a\x92\x01\x02"),
    # a body the codec refuses: 400, gzip'd, and the connection goes on
    "msgpack-bad-gzip": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: application/msgpack\r\n"
                         b"Accept-Encoding: gzip\r\nContent-Length: 2\r\n\r\n\x81\xa1"
                         b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "form": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 17\r\n\r\na=1&a=2&b=%41+c&"),
    "close": (b"GET /hello HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
              b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "gzip": (b"GET /items/" + b"x" * 100 + b"?q=" + b"y" * 100 + b" HTTP/1.1\r\n" + H +
             b"Accept-Encoding: gzip, deflate;q=0.5\r\n\r\n"),
    # a HEAD answer says gzip but has no body to inflate
    "head-gzip": (b"HEAD /items/" + b"x" * 80 + b" HTTP/1.1\r\n" + H + b"Accept-Encoding: gzip\r\n\r\n"
                  b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "methods": (b"PUT /any/a/b HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nx"
                b"DELETE /any/%41/b%2f HTTP/1.1\r\n" + H + b"\r\n"
                b"OPTIONS /any/1/2 HTTP/1.1\r\n" + H + b"X-Request-Id: abc-123\r\n\r\n"
                b"POST /hello HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"),
    "upload": (b"POST /upload HTTP/1.1\r\n" + H +
               b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n"
               % len(UPLOAD) + UPLOAD),
    "upgrade": (b"GET /hello HTTP/1.1\r\n" + H +
                b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                b"GET /hello HTTP/1.1\r\n" + H + b"\r\n"),
    "connect": b"CONNECT x:443 HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form": b"GET http://x/hello HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "bad-chunk-size": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nhello\r\n0\r\n\r\n"),
    "bad-chunk-crlf": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhelloXX0\r\n\r\n"),
    "bad-cl-and-te": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "bad-two-cl": (b"POST /echo HTTP/1.1\r\n" + H +
                   b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    "bad-obs-fold": b"GET /hello HTTP/1.1\r\n" + H + b"X-A: 1\r\n 2\r\n\r\n",
    "bad-two-hosts": b"GET /hello HTTP/1.1\r\n" + H + H + b"\r\n",
    "bad-version": b"GET /hello HTTP/2.0\r\n" + H + b"\r\n",
    "bad-method": b"G@T /hello HTTP/1.1\r\n" + H + b"\r\n",
    "bad-long-uri": b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "bad-many-headers": (b"GET /hello HTTP/1.1\r\n" +
                         b"".join(b"X-%d: v\r\n" % i for i in range(30)) + b"\r\n"),
    "bad-big-body": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\nabc",
    "bad-expect": b"POST /echo HTTP/1.1\r\n" + H + b"Expect: x\r\nContent-Length: 1\r\n\r\nx",
    "bad-control-in-value": b"GET /hello HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "bad-lf-only": b"GET /hello HTTP/1.1\n" + H + b"\n",
    "bad-target": b"GET hello HTTP/1.1\r\n" + H + b"\r\n",
    "h2-preface-on-http1": PREFACE,
}
HTTP1_CUT = {
    # cuts inside CRLFs, the chunk-size line, a header value and a pipelined head
    "pipelined": [20, 21, 40, 60, 61, 90],
    "chunked": [50, 60, 61, 62, 70, 80, 81, 95],
    "bad-obs-fold": [28, 36, 37],
    "upload": [40, 100, 150, 200],
    "expect": [30, 72],
}

# ------------------------------------------------------------------- h2
def h2_client(actions, settings=None):
    """Client frames (no preface: the harness adds it) from python-h2."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                    validate_outbound_headers=False)
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    if settings:
        c.update_settings(settings)
    for a in actions:
        a(c)
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    return data[len(PREFACE):]


def req(sid, method, path, body=None, headers=(), end=True):
    def act(c):
        hs = [(":method", method), (":scheme", "http"), (":authority", "x"), (":path", path)]
        hs += list(headers)
        c.send_headers(sid, hs, end_stream=body is None and end)
        if body is not None:
            c.send_data(sid, body, end_stream=end)
    return act


def raw_frame(ftype, flags, sid, payload):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") +
            payload)


SETTINGS = raw_frame(4, 0, 0, b"")
GET_HELLO_BLOCK = b"\x82\x86\x41\x01x\x44\x06/hello"  # GET http x /hello (HPACK, no Huffman)
H2 = {
    "get": h2_client([req(1, "GET", "/hello")]),
    "post-json": h2_client([req(1, "POST", "/echo", b'{"a":[1,2]}',
                                [("content-type", "application/json")])]),
    "streams": h2_client([req(1, "GET", "/hello"), req(3, "GET", "/items/7?q=1"),
                          req(5, "HEAD", "/hello"), req(7, "DELETE", "/any/a/b"),
                          req(9, "GET", "/nope")]),
    "reset": h2_client([req(1, "POST", "/echo", b"abc", end=False),
                        lambda c: c.reset_stream(1)]),
    "ping-window": h2_client([lambda c: c.ping(b"12345678"),
                              lambda c: c.increment_flow_control_window(1000),
                              req(1, "GET", "/hello")]),
    "settings": h2_client([req(1, "GET", "/hello")],
                          settings={1: 0, 4: 10, 5: 16384, 3: 1}),
    "goaway": h2_client([req(1, "GET", "/hello"), lambda c: c.close_connection()]),
    "upload": h2_client([req(1, "POST", "/upload",
                             b'--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
                             b"x\r\n--b--",
                             [("content-type", "multipart/form-data; boundary=b")])]),
    "gzip": h2_client([req(1, "GET", "/items/" + "z" * 80, headers=[("accept-encoding", "gzip")])]),
    # hand-made frames: the header block in HEADERS + CONTINUATION, padding, priority
    "continuation": SETTINGS + raw_frame(1, 0x1, 1, GET_HELLO_BLOCK[:5]) +
                    raw_frame(9, 0x4, 1, GET_HELLO_BLOCK[5:]),
    "padded": SETTINGS + raw_frame(1, 0x1 | 0x4 | 0x8 | 0x20, 1,
                                   b"\x03" + b"\x00\x00\x00\x00\x10" + GET_HELLO_BLOCK + b"\x00" * 3),
    "priority": SETTINGS + raw_frame(2, 0, 3, b"\x00\x00\x00\x01\x10") +
                raw_frame(1, 0x5, 1, GET_HELLO_BLOCK),
    "bad-no-settings": raw_frame(1, 0x5, 1, GET_HELLO_BLOCK),
    "bad-even-stream": SETTINGS + raw_frame(1, 0x5, 2, GET_HELLO_BLOCK),
    "bad-hpack": SETTINGS + raw_frame(1, 0x5, 1, b"\xff\xff\xff\xff"),
    "bad-data-on-idle": SETTINGS + raw_frame(0, 0x1, 5, b"abc"),
    "bad-frame-size": SETTINGS + raw_frame(4, 0, 0, b"\x00\x05\x00\x00\x00"),
}
H2_RAW = {  # flags bit 0: the bytes as they are, no preface added
    "raw-preface": PREFACE + SETTINGS + raw_frame(1, 0x5, 1, GET_HELLO_BLOCK),
    "raw-partial-preface": b"PRI * HTTP/2.0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw-http1": b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
}
H2_CUT = {"streams": [5, 9, 30, 31, 60], "continuation": [9, 12, 20, 30]}

# ----------------------------------------------------------------- query
# first byte: stop after pair n (bits 0-2, 0 never) | form flag (bit 3)
QUERY = {
    "pairs": b"\x00a=1&b=2&c=3",
    "escapes": b"\x08a=%41%4&%zz=%&+%2B=x+y",
    "empty": b"\x00&&=&a&=b&&",
    "equals": b"\x00k=v=w&==&a==",
    "repeated": b"\x02a=1&a=2&a=3&b",
    "bytes": b"\x00%00=%ff&%C3%A9=%e2%82%ac",
    "stop-first": b"\x01x=1&y=2",
    "cut-escape": b"\x00a=%",
}

# ---------------------------------------------------------------- cursor
# first byte: bit 0 the harness signs the rest (a cursor body), bit 1 sort field "name"
CURSOR = {
    "signed-string": b'\x01{"f":"created_at","v":"2024-01-01T00:00:00.000Z","id":"abc"}',
    "signed-number": b'\x01{"f":"created_at","v":12.5,"id":7}',
    "signed-name": b'\x03{"f":"name","v":"x","id":"y"}',
    "signed-wrong-field": b'\x01{"f":"name","v":"x","id":"y"}',
    "signed-no-value": b'\x01{"f":"created_at","id":"x"}',
    "signed-null": b'\x01{"f":"created_at","v":null,"id":null}',
    "signed-operator": b'\x01{"f":"created_at","v":{"$gt":""},"id":{"$ne":1}}',
    "signed-array": b'\x01["created_at",1,2]',
    "signed-not-json": b"\x01not json",
    "signed-empty": b"\x01",
    "unsigned-hex": b"\x0061.6263",
    "unsigned-bad": b"\x00zz.00",
    "unsigned-nodot": b"\x00616263",
    "unsigned-empty": b"\x00",
    "unsigned-long": b"\x00" + b"a" * 5000,
}


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for k, v in JSON.items():
        write("json", k, v)
    for k, v in MSGPACK.items():
        write("msgpack", k, v)
    for k, v in MULTIPART.items():
        write("multipart", k, v)
    for k, v in HTTP1.items():
        write("http1", k, framed(v))
        if k in HTTP1_CUT:
            write("http1", k + "-cut", framed(v, HTTP1_CUT[k]))
    for k, v in H2.items():
        write("h2", k, framed(v))
        if k in H2_CUT:
            write("h2", k + "-cut", framed(v, H2_CUT[k]))
    for k, v in H2_RAW.items():
        write("h2", k, framed(v, flags=1))
    for k, v in QUERY.items():
        write("query", k, v)
    for k, v in CURSOR.items():
        write("cursor", k, v)
    for d in sorted(os.listdir(OUT)):
        print("%-10s %d seeds" % (d, len(os.listdir(os.path.join(OUT, d)))))


if __name__ == "__main__":
    main()
