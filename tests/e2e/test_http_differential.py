"""Differential check of devloop's HTTP/1.1 request parsing against python3-h11.

A few thousand requests, valid and malformed, are generated deterministically
(seeded): request-line variants, field names and values with every delimiter
and control byte, obs-fold, Host counts and values, Content-Length and
Transfer-Encoding variants, chunk framing, bare LF/CR, NUL bytes, pipelined
pairs and random combinations of all of these. Each byte string is sent to a
running devloop (the differential app echoes how it framed every request:
method, target, version, fields, body length and SHA-256) and given to
h11.Connection(h11.SERVER); the two readings are set side by side: how many
requests were read, which one was refused, and how each was framed.

Where the two may legitimately differ is written down below, each with its RFC
reason: ALLOWED (the RFC lets a server do either) and EXPECT (what the RFC
requires of devloop for a request, checked whatever h11 does: h11 is lenient
where 9112 says MUST reject -- Host values, TE in HTTP/1.0, misused target
forms -- or strict where it says MUST accept -- absolute-form, chunk-ext BWS,
empty list elements; 501 for an unimplemented coding is 9112 6.1's SHOULD).
Any other difference fails the test and is printed with the request bytes and
what each side did. DEVLOOP_DIFF_REPORT=path writes every disagreement, grouped
by class (the runtime is a few seconds: requests go one at a time on loopback).
"""
import collections
import hashlib
import os
import random
import re
import socket
import sys

import harness

try:
    import h11
except ImportError:  # scripts/install-deps.sh installs python3-h11
    print("1..0 # SKIP python3-h11 is not installed")
    sys.exit(77)

SEED = 9112
HOST = b"example.com"
SENTINEL = b"GET /sentinel HTTP/1.1\r\nHost: example.com\r\n\r\n"
BODY = b"hello"
CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


class Case:
    """One byte string to feed both parsers. tags name what is special about it
    (the allow rules key on them); expect is what the RFC requires of devloop
    for the first request (must_reject/must_serve), whatever h11 does."""

    def __init__(self, family, data, tags=(), expect=None, parts=None, expects=None):
        self.family, self.data, self.tags, self.expect = family, data, frozenset(tags), expect
        self.parts = parts or [self.tags]  # the tags of each request in data, in order
        self.expects = expects or [expect]  # and what the RFC requires of each

    def __repr__(self):
        return "%s %r" % (self.family, self.data)


# --------------------------------------------------------------- building requests

def request(method=b"GET", target=b"/", version=b"HTTP/1.1", fields=None, body=b"",
            eol=b"\r\n", line=None, host=True):
    """fields: a list of (name, value) pairs or raw lines (bytes, without eol)."""
    out = [line if line is not None else
           method + b" " + target + ((b" " + version) if version else b"")]
    if host:
        out.append(b"Host: " + HOST)
    for f in fields or ():
        out.append(f if isinstance(f, bytes) else f[0] + b": " + f[1])
    return eol.join(out) + eol + eol + body


def post(fields=(), body=BODY, version=b"HTTP/1.1", **kw):
    return request(b"POST", b"/post", version, list(fields), body, **kw)


def must_reject(why, *statuses):
    """Refuse the request with one of statuses (why names the rule in the report)."""
    return ("reject", set(statuses or (400,)), why)


def must_serve(why):
    return ("serve", set(), why)


def merge(*expects):
    """A request that breaks several MUSTs: refusing it for any of them will do."""
    musts = [e for e in expects if e and e[0] == "reject"]
    if not musts:
        return None
    return ("reject", set().union(*(e[1] for e in musts)), "+".join(e[2] for e in musts))


# Transfer-Encoding as the RFC reads it (RFC 9112 6.1, 6.3, 7; RFC 9110 5.6.1):
# returns must_serve for a plain chunked body, must_reject, or None (the RFC leaves it open).
TOKEN_RE = re.compile(rb"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")


def te_expect(values, version=b"HTTP/1.1", with_cl=False):
    if version == b"HTTP/1.0":
        return must_reject("te-in-http/1.0")  # 9112 6.1: framing is faulty
    if with_cl:
        return None  # 9112 6.1: MAY reject, or use TE alone and then close
    codings = []
    if re.search(rb"chunked[ \t]*,[ \t,]*$", values[-1], re.I):
        # known deviation (docs/http-conformance.md): llhttp 8.1 refuses any list element
        # after chunked, even an empty one that 9110 5.6.1.2 says to ignore; 400, never
        # misframed
        return None
    for v in values:
        for item in v.split(b","):
            item = item.strip(b" \t")
            if item:  # 9110 5.6.1: empty list elements are ignored
                codings.append(item)
    if not codings:
        return must_reject("te-empty")  # TE present, chunked not final: 9112 6.3
    names = []
    for c in codings:
        name = c.split(b";")[0].strip(b" \t")
        if not TOKEN_RE.match(name):
            return must_reject("te-malformed")
        names.append(name.lower())
    if names[-1] != b"chunked":
        return must_reject("te-chunked-not-final")  # 9112 6.3
    if names.count(b"chunked") > 1:  # 9112 6.1: a sender MUST NOT chunk twice
        return must_reject("te-chunked-twice", 400, 501)
    if any(c.split(b";")[0] != c for c in codings[-1:]):
        return None  # parameters on chunked: none are defined
    if len(names) > 1:
        # 9112 6.1: SHOULD 501; a request with another fault may get that fault's 400
        # first (test_http1_syntax.py checks the 501 of this fault alone)
        return must_reject("te-unimplemented", 501, 400)
    return must_serve("te-chunked")


# --------------------------------------------------------------------- generators

METHODS = [(b"GET", ()), (b"HEAD", ()), (b"POST", ()), (b"PUT", ()), (b"DELETE", ()),
           (b"OPTIONS", ()), (b"PATCH", ()), (b"TRACE", ()), (b"CONNECT", ("connect",)),
           (b"PROPFIND", ()), (b"FOO", ("method-unknown",)), (b"get", ("method-unknown",)),
           (b"G(T", ("method-bad",))]

TARGETS = [
    (b"/", ("origin",)), (b"/a/b?x=1&y=%20", ("origin",)), (b"/%7e", ("origin",)),
    (b"//x/y", ("origin",)), (b"/a#frag", ("target-fragment",)),
    (b"/a\"b{c}|\\^`", ("target-nonuri",)),
    (b"http://example.com/p?q=1", ("absolute",)), (b"http://example.com", ("absolute",)),
    (b"HTTP://Example.COM:8080/p", ("absolute",)), (b"http://other.example/p", ("absolute",)),
    (b"https://u@example.com/p", ("absolute", "userinfo")),
    (b"example.com:443", ("authority",)), (b"*", ("asterisk",)),
    (b"a/b", ("target-relative",)), (b"/\x7f", ("target-ctl",)), (b"/\x80", ("target-8bit",)),
    (b"/\xc3\xa9", ("target-8bit",)), (b"/a\tb", ("target-ws",)), (b"/a\x0cb", ("target-ws",)),
]

VERSIONS = [
    (b"HTTP/1.1", ()), (b"HTTP/1.0", ("v10",)), (b"HTTP/2.0", ("v-major",)),
    (b"HTTP/0.9", ("v-major",)), (b"HTTP/3.0", ("v-major",)), (b"HTTP/1.2", ("v-minor",)),
    (b"HTTP/1.9", ("v-minor",)), (b"HTTP/9.9", ("v-major",)), (b"http/1.1", ("v-bad",)),
    (b"HTTP/11", ("v-bad",)), (b"HTTP/1.1.1", ("v-bad",)), (b"HTTP/01.1", ("v-bad",)),
    (b"HTTP/1", ("v-bad",)), (b"XTTP/1.1", ("v-bad",)), (b"HTTP/1.1 ", ("v-bad", "ws-line")),
    (b"HTTP/1.1\x00", ("v-bad", "nul")), (None, ("v09-simple",)),
]


# the methods the differential app routes (the others get 405 from the router)
ROUTED = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}


def target_expect(method, target_tags):
    """RFC 9112 3.2: which request-target form fits which method."""
    if method == b"CONNECT":
        if "authority" not in target_tags:  # 9112 3.2.3, 9110 9.3.6 ("typically 400");
            return must_reject("connect-needs-authority-form", 400, 405, 501)  # or 405/501
        return None
    if "authority" in target_tags:
        return must_reject("authority-form-not-connect")  # 9112 3.2.3
    if "asterisk" in target_tags and method != b"OPTIONS":
        return must_reject("asterisk-form-not-options")  # 9112 3.2.4
    if "target-relative" in target_tags:
        return must_reject("target-not-a-form")  # 9112 3.2
    return None


def gen_request_line(rng):
    cases = []
    for m, mt in METHODS:
        for t, tt in TARGETS:
            body = BODY if m in (b"POST", b"PUT", b"PATCH") else b""
            fields = [(b"Content-Length", b"5")] if body else []
            tags = set(mt) | set(tt) | {"t:" + tt[0]}
            expect = target_expect(m, tags)
            if "absolute" in tags and "userinfo" not in tags and m in ROUTED:
                expect = must_serve("absolute-form")  # 9112 3.2.2: a server MUST accept it
            cases.append(Case("request-line", request(m, t, b"HTTP/1.1", fields, body) +
                              SENTINEL, tags, expect))
    for v, vt in VERSIONS:
        for m, t, fields, body in ((b"GET", b"/", [], b""),
                                   (b"POST", b"/p", [(b"Content-Length", b"5")], BODY),
                                   (b"OPTIONS", b"*", [], b"")):
            tags = set(vt) | ({"asterisk"} if t == b"*" else set())
            cases.append(Case("request-line", request(m, t, v, fields, body), tags))
    for sep1, sep2 in ((b"  ", b" "), (b" ", b"  "), (b"\t", b" "), (b" ", b"\t"),
                       (b" \t", b" "), (b"\x0b", b" "), (b" ", b"\x0c"), (b" ", b"\r ")):
        for m in (b"GET", b"POST"):
            line = m + sep1 + b"/ws" + sep2 + b"HTTP/1.1"
            cases.append(Case("request-line", request(line=line) + SENTINEL, {"ws-line"}))
    for t in (b"/" + b"a" * 9000, b"/?" + b"q" * 9000):
        cases.append(Case("request-line", request(target=t), {"limit"}))
    return cases


NAME_BYTES = [bytes([c]) for c in list(range(0, 0x20)) + [0x7f, 0x20, 0x80, 0xff]] + \
    [bytes([c]) for c in b"\"(),/:;<=>?@[\\]{}"] + [bytes([c]) for c in b"!#$%&'*+-.^_`|~"]


def gen_field_names(rng):
    cases = []
    for c in NAME_BYTES:
        for pos in ("mid", "start", "end"):
            name = {"mid": b"X" + c + b"Y", "start": c + b"XY", "end": b"XY" + c}[pos]
            tags, expect = {"name-byte", "name-" + pos}, None
            if c in (b" ", b"\t") and pos == "end":
                tags.add("ws-before-colon")
                expect = must_reject("ws-before-colon")  # 9112 5.1
            if c in (b"\r", b"\n"):
                tags.add("bare-eol")
            if c in (b" ", b"\t") and pos == "start":
                tags = {"fold"}  # a line that starts with whitespace continues the last one
            cases.append(Case("field-name", request(fields=[(name, b"v")]) + SENTINEL, tags,
                              expect))
    for name in (b"Host", b"Content-Length", b"Transfer-Encoding", b"X-Custom"):
        for ws in (b" ", b"\t", b"  "):
            value = {b"Host": b"other.example", b"Content-Length": b"5",
                     b"Transfer-Encoding": b"chunked"}.get(name, b"v")
            body = {b"Content-Length": BODY, b"Transfer-Encoding": CHUNKED_BODY}.get(name, b"")
            cases.append(Case("field-name", request(b"POST", b"/p", fields=[(name + ws, value)],
                                                    body=body) + SENTINEL,
                              {"ws-before-colon"}, must_reject("ws-before-colon")))
    for line in (b": v", b":v", b" : v", b":", b"\t: v"):
        tags = {"fold"} if line[:1] in (b" ", b"\t") else {"empty-name"}
        cases.append(Case("field-name", request(fields=[line]) + SENTINEL, tags))
    # whitespace-preceded line right after the request line: 9112 2.2 MUST reject or ignore it
    for line in (b" X-Y: v", b"\tX-Y: v", b" Host: other.example"):
        cases.append(Case("field-name", b"GET / HTTP/1.1\r\n" + line + b"\r\nHost: example.com"
                          b"\r\n\r\n" + SENTINEL, {"ws-first-line"}))
    cases.append(Case("field-name", request(fields=[(b"X-" + b"n" * 40000, b"v")]), {"limit"}))
    return cases


VALUE_BYTES = [bytes([c]) for c in list(range(0, 0x20)) + [0x7f, 0x80, 0xff]]


def gen_field_values(rng):
    cases = []
    for c in VALUE_BYTES:
        for pos in ("mid", "start", "end"):
            value = {"mid": b"a" + c + b"b", "start": c + b"ab", "end": b"ab" + c}[pos]
            tags = {"value-byte"}
            if c not in (b"\r", b"\n", b"\x00", b"\t") and ord(c) < 0x20 or c == b"\x7f":
                tags.add("value-ctl")
            if c == b"\n" and pos == "end":
                tags.add("bare-lf")  # the value ends and the line with it, with a bare LF
            elif c in (b"\r", b"\n"):
                tags.add("bare-eol")
            cases.append(Case("field-value", request(fields=[(b"X-V", value)]) + SENTINEL, tags))
    for value in (b"  padded  ", b"\tx\t", b"", b"a  b", b"\"quoted, with comma\"",
                  b"a" * 8000, b"obs\xe9text"):
        cases.append(Case("field-value", request(fields=[(b"X-V", value)]) + SENTINEL))
    folds = [
        [b"X-F: a", b" b"], [b"X-F: a", b"\tb"], [b"X-F:", b" b"], [b"X-F: a", b"   "],
        [b"X-F: a", b" b", b" c"], [b"Host: example.com", b" .evil"],
        [b"X-F: a", b" b: c"],
    ]
    for lines in folds:
        cases.append(Case("field-value", request(fields=lines) + SENTINEL, {"fold"}))
    for lines, body in (([b"Content-Length: 5", b" 5"], BODY),
                        ([b"Content-Length:", b" 5"], BODY),
                        ([b"Transfer-Encoding:", b" chunked"], CHUNKED_BODY),
                        ([b"Transfer-Encoding: chunked", b" , gzip"], CHUNKED_BODY),
                        ([b"Transfer-Encoding: gzip", b" chunked"], CHUNKED_BODY)):
        cases.append(Case("field-value", request(b"POST", b"/p", fields=lines, body=body) +
                          SENTINEL, {"fold", "fold-framing"}))
    cases.append(Case("field-value", request(fields=[(b"X-Big", b"v" * 40000)]), {"limit"}))
    cases.append(Case("field-value", request(fields=[(b"X-%d" % i, b"v") for i in range(150)]),
                      {"limit"}))
    return cases


HOSTS = [  # (value, valid per RFC 9110 7.2 / RFC 3986)
    (b"example.com", True), (b"example.com:8080", True), (b"127.0.0.1", True),
    (b"[::1]", True), (b"[::1]:80", True), (b"a_b.example", True), (b"a%41b", True),
    (b"a,b", True), (b"example.com:", True), (b"", True), (b"EXAMPLE.COM", True),
    (b"a b", False), (b"a/b", False), (b"a@b", False), (b"user@example.com:80", False),
    (b"[::1", False), (b"[zz]", False), (b"a:x", False), (b"a?b", False), (b"a#b", False),
    (b"a\tb", False), (b"\xe9.example", False), (b"a:80:80", False),
]


def gen_host(rng):
    cases = []
    for version in (b"HTTP/1.1", b"HTTP/1.0"):
        for target, tt in ((b"/h", "origin"), (b"http://example.com/h", "absolute"),
                           (b"http://other.example/h", "absolute")):
            def add(fields, tags, expect=None):
                if expect is None and tt == "absolute" and "host-invalid" not in tags:
                    expect = must_serve("absolute-form")  # 9112 3.2.2
                cases.append(Case("host", request(b"GET", target, version, fields, host=False) +
                                  SENTINEL, set(tags) | {tt, version.decode()}, expect))
            add([], {"host-none"}, must_reject("host-missing") if version == b"HTTP/1.1" else None)
            add([(b"Host", HOST)], {"host-one"})
            add([(b"Host", HOST), (b"Host", HOST)], {"host-two"}, must_reject("host-twice"))
            add([(b"Host", HOST), (b"Host", b"other.example")], {"host-two"},
                must_reject("host-twice"))
            add([(b"Host", HOST), (b"X-A", b"1"), (b"host", HOST)], {"host-two"},
                must_reject("host-twice"))
            add([b"Host:"], {"host-empty"})
            add([(b"HOST", HOST)], {"host-one"})
            for value, valid in HOSTS:
                add([(b"Host", value)], {"host-value"} | (set() if valid else {"host-invalid"}),
                    None if valid else must_reject("host-invalid"))
    return cases


CL_VALUES = [b"5", b"05", b"+5", b"-5", b"0x5", b"5 5", b"5,5", b"5, 5", b"5,6", b" 5 ", b"5\t",
             b"", b"a", b"5a", b"0", b"4", b"6", b"99999999999999999999",
             b"18446744073709551616", b"18446744073709551615", b"2000000"]


def gen_content_length(rng):
    cases = []
    for v in CL_VALUES:
        tags = {"cl"}
        if v in (b"5,5", b"5, 5"):
            tags.add("cl-list-same")
        if v == b"5\t":
            tags.add("cl-trailing-htab")
        if v in (b"99999999999999999999", b"18446744073709551616", b"18446744073709551615",
                 b"2000000"):
            tags.add("limit")
        for method in (b"POST", b"GET", b"HEAD"):
            cases.append(Case("content-length", request(method, b"/c", fields=[(
                b"Content-Length", v)], body=BODY) + SENTINEL, tags))
        cases.append(Case("content-length", request(b"POST", b"/c", b"HTTP/1.0", [
            (b"Content-Length", v), (b"Connection", b"keep-alive")], BODY) + SENTINEL,
            tags | {"v10", "v10-keepalive"}))
    for a, b in ((b"5", b"5"), (b"5", b"6"), (b"5", b"05"), (b"5", b""), (b"5", b"5, 5"),
                 (b"0", b"5")):
        tags = {"cl-dup"} | ({"cl-dup-same"} if a == b or (a, b) == (b"5", b"5, 5") else set())
        expect = None if "cl-dup-same" in tags else must_reject("content-length-differs")
        cases.append(Case("content-length", post([(b"Content-Length", a), (b"Content-Length", b)])
                          + SENTINEL, tags, expect))
    # no length at all: a request without CL or TE has no body (9112 6.3 item 6)
    cases.append(Case("content-length", request(b"POST", b"/c", body=BODY) + SENTINEL, {"cl"}))
    cases.append(Case("content-length", post([(b"Content-Length", b"5"),
                                              (b"Transfer-Encoding", b"chunked")],
                                             CHUNKED_BODY) + SENTINEL, {"cl+te"}))
    cases.append(Case("content-length", post([(b"Transfer-Encoding", b"chunked"),
                                              (b"Content-Length", b"5")],
                                             CHUNKED_BODY) + SENTINEL, {"cl+te"}))
    cases.append(Case("content-length", post([(b"Content-Length", b"3"),
                                              (b"Transfer-Encoding", b"chunked")],
                                             CHUNKED_BODY) + SENTINEL, {"cl+te"}))
    return cases


TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b"chunked, gzip", b"gzip, chunked",
             b" chunked", b"chunked ", b"\tchunked", b"xchunked", b"chunkedx", b"chunk",
             b"gzip", b"identity", b"identity, chunked", b"", b",chunked", b"chunked,",
             b"chunked, chunked", b"chunked;a=b", b"gzip;q=1, chunked", b"\"chunked\"",
             b"chunked,,", b"gzip chunked", b"x y, chunked", b"chunked\x00"]


def gen_transfer_encoding(rng):
    cases = []
    for v in TE_VALUES:
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            for with_cl in (False, True):
                fields = [(b"Transfer-Encoding", v)]
                if with_cl:
                    fields.append((b"Content-Length", b"16"))
                tags = {"te", version.decode()} | ({"cl+te"} if with_cl else set())
                if version == b"HTTP/1.0":
                    tags.add("te-http10")
                if b"\x00" in v:
                    tags.add("value-nul")
                exp = te_expect([v], version, with_cl)
                cases.append(Case("transfer-encoding", post(fields, CHUNKED_BODY, version) +
                                  SENTINEL, tags, exp))
    for a, b in ((b"chunked", b"chunked"), (b"gzip", b"chunked"), (b"chunked", b"gzip"),
                 (b"chunked", b""), (b"", b"chunked"), (b"identity", b"chunked")):
        exp = te_expect([a, b])
        cases.append(Case("transfer-encoding", post([(b"Transfer-Encoding", a),
                                                     (b"Transfer-Encoding", b)], CHUNKED_BODY)
                          + SENTINEL, {"te", "te-dup"}, exp))
    return cases


CHUNK_SIZES = [  # (size line for "hello" (5 bytes) or 10 bytes, data, tags)
    (b"5", BODY, ()), (b"05", BODY, ()), (b"0005", BODY, ()), (b"A", b"0123456789", ()),
    (b"a", b"0123456789", ()), (b"0x5", BODY, ("chunk-bad",)), (b" 5", BODY, ("chunk-bad",)),
    (b"5 ", BODY, ("chunk-size-ows",)), (b"5\t", BODY, ("chunk-size-ows",)),
    (b"+5", BODY, ("chunk-bad",)), (b"-5", BODY, ("chunk-bad",)), (b"5g", BODY, ("chunk-bad",)),
    (b"fffffffffffffffffffff", BODY, ("chunk-bad", "limit")),
    (b"ffffffffffffffff", BODY, ("limit",)), (b"5;e", BODY, ("chunk-ext",)),
    (b"5;e=v", BODY, ("chunk-ext",)), (b"5;e=\"q v\"", BODY, ("chunk-ext",)),
    # valid, but llhttp 8.1 refuses these shapes (see ALLOWED "llhttp81-chunk-ext")
    (b"5;e=\"a\\\"b\"", BODY, ("chunk-ext", "chunk-ext-valid", "llhttp81-ext")),
    (b"5;a=1;b=2", BODY, ("chunk-ext", "chunk-ext-valid", "llhttp81-ext")),
    (b"5 ;e", BODY, ("chunk-ext", "chunk-ext-valid", "llhttp81-ext")),
    (b"5; e", BODY, ("chunk-ext", "chunk-ext-valid", "llhttp81-ext")),
    (b"5;e = v", BODY, ("chunk-ext", "chunk-ext-valid", "llhttp81-ext")),
    (b"5;", BODY, ("chunk-ext", "chunk-ext-bad")), (b"5;e=", BODY, ("chunk-ext", "chunk-ext-bad")),
    (b"5;e\x01", BODY, ("chunk-ext", "chunk-ext-bad")),
    (b"5;e=\x7f", BODY, ("chunk-ext", "chunk-ext-bad")),
    (b"5;e=\"unterminated", BODY, ("chunk-ext", "chunk-ext-bad")),
    (b"5;" + b"x" * 200, BODY, ("chunk-ext", "limit")),  # 9112 7.1.1: a server limits them
    (b"5;" + b"x" * 20000, BODY, ("chunk-ext", "limit")),
]
CHUNK_ENDS = [(b"\r\n", ()), (b"\n", ("chunk-crlf",)), (b"", ("chunk-crlf",)),
              (b"XX", ("chunk-crlf",)), (b"\r", ("chunk-crlf",)), (b"\r\r\n", ("chunk-crlf",)),
              (b"X\r\n", ("chunk-crlf",))]
SIZE_EOLS = [(b"\r\n", ()), (b"\n", ("chunk-lf",)), (b"\r", ("chunk-lf",)),
             (b"\rX", ("chunk-lf",))]
LAST_CHUNKS = [(b"0\r\n", ()), (b"000\r\n", ()), (b"0;e=1\r\n", ("chunk-ext",)),
               (b"0\n", ("chunk-lf",)), (b"0 \r\n", ("chunk-size-ows",))]
TRAILERS = [(b"", ()), (b"T: v\r\n", ("trailer",)), (b"T: v\r\nU: w\r\n", ("trailer",)),
            (b"T v\r\n", ("trailer", "trailer-bad")),
            (b"Content-Length: 3\r\n", ("trailer",)),
            (b"Transfer-Encoding: chunked\r\n", ("trailer", "trailer-framing")),
            (b"Host: other.example\r\n", ("trailer",)), (b"T: v\n", ("trailer", "bare-lf")),
            (b"T: " + b"v" * 40000 + b"\r\n", ("trailer", "limit")),
            (b" folded\r\n", ("trailer", "trailer-bad"))]
FINAL_EOLS = [(b"\r\n", ()), (b"\n", ("bare-lf",)), (b"\rX", ("chunk-lf",))]


def chunked_case(size=0, end=0, seol=0, last=0, trailer=0, feol=0):
    s, data, t1 = CHUNK_SIZES[size]
    e, t2 = CHUNK_ENDS[end]
    se, t3 = SIZE_EOLS[seol]
    lc, t4 = LAST_CHUNKS[last]
    tr, t5 = TRAILERS[trailer]
    fe, t6 = FINAL_EOLS[feol]
    body = s + se + data + e + lc + tr + fe
    tags = {"chunked"} | set(t1) | set(t2) | set(t3) | set(t4) | set(t5) | set(t6)
    # 9112 7.1.1: BWS around ';' and '=' is part of chunk-ext (9110 5.6.3: a recipient MUST
    # parse and remove it), quoted-pairs are part of quoted-string, and unrecognised
    # extensions MUST be ignored: a chunked body that is otherwise right must be read
    plain = {"chunked", "chunk-ext", "chunk-ext-valid", "trailer"}
    expect = must_serve("chunk-ext") if "chunk-ext-valid" in tags and tags <= plain else None
    return Case("chunked", post([(b"Transfer-Encoding", b"chunked")], body) + SENTINEL, tags,
                expect)


def gen_chunked(rng):
    cases = []
    dims = (len(CHUNK_SIZES), len(CHUNK_ENDS), len(SIZE_EOLS), len(LAST_CHUNKS), len(TRAILERS),
            len(FINAL_EOLS))
    for d, n in enumerate(dims):  # every variant once, the others at their plain value
        for i in range(n):
            args = [0] * len(dims)
            args[d] = i
            cases.append(chunked_case(*args))
    seen = set()
    while len(seen) < 260:  # and a seeded sample of the product
        args = tuple(rng.randrange(n) for n in dims)
        if args not in seen:
            seen.add(args)
            cases.append(chunked_case(*args))
    # several chunks, a zero-length body, a chunk split across the size limit of one read
    cases.append(Case("chunked", post([(b"Transfer-Encoding", b"chunked")],
                                      b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n") + SENTINEL,
                      {"chunked"}))
    cases.append(Case("chunked", post([(b"Transfer-Encoding", b"chunked")], b"0\r\n\r\n") +
                      SENTINEL, {"chunked"}))
    cases.append(Case("chunked", post([(b"Transfer-Encoding", b"chunked")],
                                      b"4000\r\n" + b"z" * 0x4000 + b"\r\n0\r\n\r\n") +
                      SENTINEL, {"chunked"}))
    return cases


def gen_line_endings(rng):
    cases = []
    base = [b"POST /le HTTP/1.1", b"Host: example.com", b"X-A: 1", b"Content-Length: 5"]
    eols = [(b"\n", "bare-lf"), (b"\r", "bare-cr"), (b"\r\r\n", "bare-cr"),
            (b"\n\r", "bare-cr"), (b" \r\n", "ws-eol")]
    for eol, tag in eols:
        for pos in range(len(base) + 1):  # one line ending replaced; pos == len: the empty line
            ends = [b"\r\n"] * (len(base) + 1)
            ends[pos] = eol
            data = b"".join(line + end for line, end in zip(base + [b""], ends)) + BODY
            tags = {tag, "eol-" + ("empty" if pos == len(base) else str(pos))}
            if tag == "bare-lf" and pos == 0:
                tags.add("bare-lf-request-line")
            cases.append(Case("line-endings", data + SENTINEL, tags))
        data = b"".join(line + eol for line in base + [b""]) + BODY
        cases.append(Case("line-endings", data + SENTINEL, {tag, "eol-all"}))
    for lead in (b"\r\n", b"\n", b"\r\n\r\n", b" \r\n", b"\r", b"\x00"):
        tags = {"leading-empty"} if lead in (b"\r\n", b"\n", b"\r\n\r\n") else {"leading-junk"}
        cases.append(Case("line-endings", lead + request(target=b"/lead") + SENTINEL, tags))
    # NUL bytes in each part of a request
    full = request(b"POST", b"/nul", fields=[(b"X-A", b"1"), (b"Content-Length", b"5")],
                   body=BODY)
    for i in range(0, full.index(b"\r\n\r\n") + 2, 3):
        cases.append(Case("line-endings", full[:i] + b"\x00" + full[i:] + SENTINEL, {"nul"}))
    cases.append(Case("line-endings", full + b"\x00" + SENTINEL, {"nul", "nul-between"}))
    cases.append(Case("line-endings", request(body=b"") + b"\r\n" + SENTINEL,
                      {"leading-empty"}))
    return cases


def pool(rng, generators):
    out = []
    for g in generators:
        out.extend(g(rng))
    return out


def gen_pipelined(rng, base):
    cases = []
    for _ in range(220):
        a, b = rng.choice(base), rng.choice(base)
        da = a.data[:-len(SENTINEL)] if a.data.endswith(SENTINEL) else a.data
        db = b.data[:-len(SENTINEL)] if b.data.endswith(SENTINEL) else b.data
        if len(da) + len(db) > 20000:
            continue
        exp = a.expect
        cases.append(Case("pipelined", da + db + SENTINEL, a.tags | b.tags | {"pipelined"}, exp,
                          [a.tags, b.tags], [a.expect, b.expect]))
    return cases


COMBO_METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS"]
COMBO_TARGETS = [(b"/c", "origin"), (b"/c?q=1", "origin"), (b"http://example.com/c", "absolute"),
                 (b"*", "asterisk"), (b"example.com:80", "authority")]
COMBO_VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]
COMBO_HOSTS = [([(b"Host", HOST)], set()), ([], {"host-none"}),
               ([(b"Host", HOST), (b"Host", HOST)], {"host-two"}), ([b"Host:"], {"host-empty"}),
               ([(b"Host", b"a b")], {"host-invalid"}), ([b"Host : example.com"],
                                                         {"ws-before-colon"})]
COMBO_EXTRA = [([], set()), ([(b"X-A", b"1")], set()), ([b"X-F: a", b" b"], {"fold"}),
               ([(b"X-C", b"a\x01b")], {"value-ctl"}), ([b"X Y: v"], {"name-byte"}),
               ([b": v"], {"empty-name"}), ([(b"Connection", b"close")], {"conn-close"}),
               ([(b"Connection", b"keep-alive")], {"v10-keepalive"}),
               ([(b"Expect", b"100-continue")], set()),
               ([(b"Expect", b"something-else")], {"expect-other"}),
               ([(b"X-N", b"a\x00b")], {"value-nul"})]
COMBO_FRAMING = [
    ([], b"", set()),
    ([(b"Content-Length", b"5")], BODY, {"cl"}),
    ([(b"Content-Length", b"0")], b"", {"cl"}),
    ([(b"Content-Length", b"5"), (b"Content-Length", b"5")], BODY, {"cl-dup", "cl-dup-same"}),
    ([(b"Content-Length", b"5"), (b"Content-Length", b"6")], BODY, {"cl-dup"}),
    ([(b"Content-Length", b"5,5")], BODY, {"cl", "cl-list-same"}),
    ([(b"Content-Length", b"+5")], BODY, {"cl"}),
    ([(b"Transfer-Encoding", b"chunked")], CHUNKED_BODY, {"te"}),
    ([(b"Transfer-Encoding", b"chunked")], b"5\r\nhelloXX0\r\n\r\n", {"te", "chunk-crlf"}),
    ([(b"Transfer-Encoding", b"chunked")], b"5\r\nhello\r\n0\r\nT: v\r\n\r\n",
     {"te", "trailer"}),
    ([(b"Transfer-Encoding", b"gzip, chunked")], CHUNKED_BODY, {"te"}),
    ([(b"Transfer-Encoding", b"chunked, gzip")], CHUNKED_BODY, {"te"}),
    ([(b"Transfer-Encoding", b"")], CHUNKED_BODY, {"te"}),
    ([(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")], CHUNKED_BODY,
     {"te", "cl+te"}),
]


def gen_combinations(rng, n=800):
    cases = []
    for _ in range(n):
        m = rng.choice(COMBO_METHODS)
        t, tt = rng.choice(COMBO_TARGETS)
        v = rng.choice(COMBO_VERSIONS)
        hosts, ht = rng.choice(COMBO_HOSTS)
        extra, et = rng.choice(COMBO_EXTRA)
        fr, body, ft = rng.choice(COMBO_FRAMING)
        eol = rng.choice([b"\r\n"] * 9 + [b"\n"])
        fields = list(hosts) + list(extra) + list(fr)
        rng.shuffle(fields)
        tags = {tt} | ht | et | ft | ({"bare-lf", "eol-all"} if eol == b"\n" else set())
        if v == b"HTTP/1.0":
            tags.add("v10")
            if "te" in tags:
                tags.add("te-http10")
        data = request(m, t, v, fields, body, eol=eol, host=False)
        # every MUST-reject the request breaks; any of their statuses will do
        musts = [must_reject(t) for t in ("ws-before-colon", "host-invalid") if t in tags]
        if "host-two" in tags:
            musts.append(must_reject("host-twice"))
        if v == b"HTTP/1.1" and "host-none" in tags:
            musts.append(must_reject("host-missing"))
        musts.append(target_expect(m, {tt}))
        if "te" in tags:
            tev = [f[1] for f in fr if not isinstance(f, bytes) and f[0] == b"Transfer-Encoding"]
            musts.append(te_expect(tev, v, "cl+te" in tags))
        exp = merge(*musts)
        cases.append(Case("combination", data + SENTINEL, tags, exp))
    return cases


def all_cases():
    rng = random.Random(SEED)
    fams = collections.OrderedDict()
    fams["request-line"] = gen_request_line(rng)
    fams["field-name"] = gen_field_names(rng)
    fams["field-value"] = gen_field_values(rng)
    fams["host"] = gen_host(rng)
    fams["content-length"] = gen_content_length(rng)
    fams["transfer-encoding"] = gen_transfer_encoding(rng)
    fams["chunked"] = gen_chunked(rng)
    fams["line-endings"] = gen_line_endings(rng)
    base = [c for f in list(fams.values()) for c in f if "limit" not in c.tags]
    fams["pipelined"] = gen_pipelined(rng, base)
    fams["combination"] = gen_combinations(rng)
    return fams


# ------------------------------------------------------------------ the two readers

class Msg:
    """One request a side read completely (and answered)."""

    def __init__(self, method=None, target=None, version=None, fields=None, body=None,
                 keep=True, opaque=None):
        self.method, self.target, self.version = method, target, version
        self.fields, self.body, self.keep, self.opaque = fields or {}, body, keep, opaque

    def __repr__(self):
        if self.opaque:
            return "served(%d, framing not echoed)" % self.opaque
        if isinstance(self.body, tuple):  # devloop's echo: length and digest
            body = "%d bytes" % self.body[1]
        else:
            body = "%d bytes %r" % (len(self.body), self.body[:30])
        return "%s %r %s [%s]%s" % (self.method.decode("latin-1"), self.target,
                                    self.version.decode("latin-1"), body,
                                    "" if self.keep else " close")


class Outcome:
    """msgs read, then how the byte string ended: ("end",) -- nothing more to read,
    or the rest was incomplete, or the connection closes after the last message --
    or ("reject", status, why)."""

    def __init__(self, msgs, end):
        self.msgs, self.end = msgs, end

    def __repr__(self):
        out = [repr(m) for m in self.msgs]
        if self.end[0] == "reject":
            out.append("REJECT %s (%s)" % (self.end[1], self.end[2]))
        elif self.end[0] == "timeout":
            out.append("TIMEOUT (no close within the deadline)")
        else:
            out.append("end")
        return "; ".join(out)


SKIP_FIELDS = {"content-length", "transfer-encoding"}  # framing: compared through the body


def h11_read(data):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    msgs, cur = [], None
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            why = str(e)
            if "peer unexpectedly closed" in why or "without sending complete" in why:
                return Outcome(msgs, ("end",))
            return Outcome(msgs, ("reject", e.error_status_hint, why))
        if isinstance(ev, h11.Request):
            fields = collections.OrderedDict()
            for name, value in ev.headers:
                name = name.decode("latin-1").lower()
                fields[name] = fields[name] + b", " + value if name in fields else value
            cur = Msg(ev.method, ev.target, ev.http_version, fields, b"")
        elif isinstance(ev, h11.Data):
            cur.body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            status = 501 if cur.method == b"CONNECT" else 200
            conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            cur.keep = conn.our_state is h11.DONE
            msgs.append(cur)
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                return Outcome(msgs, ("end",))
        else:  # ConnectionClosed, PAUSED
            return Outcome(msgs, ("end",))


def parse_echo(text):
    m = Msg(fields={})
    for line in text.decode("latin-1").splitlines():
        parts = line.split(" ")
        if parts[0] == "method":
            m.method = bytes.fromhex(parts[1])
        elif parts[0] == "target":
            m.target = bytes.fromhex(parts[1])
        elif parts[0] == "version":
            m.version = bytes.fromhex(parts[1])
        elif parts[0] == "body":
            m.body = ("len", int(parts[1]), parts[2])
        elif parts[0] == "header":
            m.fields[bytes.fromhex(parts[1]).decode("latin-1")] = bytes.fromhex(parts[2])
    return m


def devloop_read(port, data, timeout=3.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it answered and closed before taking everything
        raw, timed_out = b"", False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        except socket.timeout:
            timed_out = True
        except ConnectionResetError:
            pass
    finally:
        s.close()
    msgs, pos = [], 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            return Outcome(msgs, ("reject", 0, "unparsable answer %r" % raw[pos:pos + 200]))
        head = raw[pos:end].decode("latin-1").split("\r\n")
        pos = end + 4
        status = int(head[0].split(" ")[1])
        fields = {}
        for line in head[1:]:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if status < 200:
            continue
        n = int(fields.get("content-length", "0"))
        # a HEAD answer has no body: the next answer (or the end) follows at once
        has_body = n > 0 and not raw.startswith(b"HTTP/1.", pos) and pos < len(raw)
        body = raw[pos:pos + n] if has_body else b""
        pos += n if has_body else 0
        keep = fields.get("connection", "").lower() != "close"
        if "x-echo" in fields:
            m = parse_echo(bytes.fromhex(fields["x-echo"]))
            m.keep = keep
            msgs.append(m)
        elif status < 400 or status in (404, 405) or (status == 501 and keep):
            # answered past the parser (the router, or a built-in OPTIONS *): read, not echoed
            msgs.append(Msg(keep=keep, opaque=status))
        else:
            why = body.decode("latin-1")
            mm = re.search(r'"message":"([^"]*)"', why)
            return Outcome(msgs, ("reject", status, mm.group(1) if mm else why[:100]))
    return Outcome(msgs, ("timeout",) if timed_out else ("end",))


# ---------------------------------------------------------------------- comparing

def origin_of(target):
    """The origin-form an absolute-form target stands for, and its authority."""
    m = re.match(rb"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)([^#]*)", target)
    if not m:
        return None, None
    path = m.group(2) or b"/"
    if path.startswith(b"?"):
        path = b"/" + path
    return path, m.group(1)


def same_msg(case, d, h):
    """Differences between devloop's and h11's reading of one request."""
    if d.opaque:
        return []  # answered by the router (404/405): its framing is not echoed
    diffs = []
    if d.method != h.method:
        diffs.append("method %r vs %r" % (d.method, h.method))
    path, authority = origin_of(h.target)
    if d.target != h.target and d.target != path:
        diffs.append("target %r vs %r" % (d.target, h.target))
    if h.version in (b"1.0", b"1.1") and d.version != h.version:
        diffs.append("version %r vs %r" % (d.version, h.version))
    hb = ("len", len(h.body), hashlib.sha256(h.body).hexdigest())
    if d.body != hb:
        diffs.append("body %d bytes vs %d bytes %r" % (d.body[1], len(h.body), h.body[:40]))
    for name in sorted(set(d.fields) | set(h.fields)):
        if name in SKIP_FIELDS:
            continue
        dv, hv = d.fields.get(name), h.fields.get(name)
        if dv == hv or (name == "host" and authority is not None and dv is not None and
                        dv.lower() == authority.lower()):
            continue
        diffs.append("field %s: %r vs %r" % (name, dv, hv))
    if d.keep != h.keep:
        diffs.append("keep-alive %s vs %s" % (d.keep, h.keep))
    return diffs


def reject_kind(status):
    return {501: "501", 505: "505", 413: "limit", 414: "limit", 431: "limit"}.get(status, "400")


def compare(case, d, h):
    """(kind, text) of the first difference, or None when both read it alike."""
    for i in range(max(len(d.msgs), len(h.msgs))):
        if i >= len(d.msgs) or i >= len(h.msgs):
            who = "devloop" if i >= len(h.msgs) else "h11"
            other = h if who == "devloop" else d
            if other.end[0] == "reject":
                return ("serves-what-other-rejects:" + who,
                        "request %d: %s serves it, the other rejects" % (i + 1, who), i)
            return ("reads-more:" + who, "request %d: only %s reads it" % (i + 1, who), i)
        diffs = same_msg(case, d.msgs[i], h.msgs[i])
        if diffs:
            kinds = sorted({x.split(" ")[0] for x in diffs})
            return ("framing:" + "+".join(kinds), "request %d: %s" % (i + 1, "; ".join(diffs)),
                    i)
    i = len(d.msgs)
    if d.end[0] != h.end[0]:
        if "timeout" in (d.end[0], h.end[0]):
            return ("hang", "devloop did not close the connection", i)
        who = "devloop" if d.end[0] == "reject" else "h11"
        return ("rejects-what-other-waits-for:" + who, "after %d requests only %s rejects" %
                (i, who), i)
    problems = case.parts[min(i, len(case.parts) - 1)] & PROBLEMS
    if d.end[0] == "reject" and reject_kind(d.end[1]) != reject_kind(h.end[1]) and \
            len(problems) <= 1:  # with two problems, each side may trip on another first
        return ("status:%s-vs-%s" % (reject_kind(d.end[1]), reject_kind(h.end[1])),
                "both reject: devloop %s, h11 %s" % (d.end[1], h.end[1]), i)
    return None


def meets(expect, d):
    """Does devloop's reading satisfy what the RFC requires of the first request?"""
    if expect[0] == "serve":
        return bool(d.msgs) and not d.msgs[0].opaque
    if d.msgs:  # a 404/405 from the router is a refusal too, where the RFC allows one
        return d.msgs[0].opaque in expect[1]
    return d.end[0] == "reject" and d.end[1] in expect[1]


# Tags that mark something wrong or unusual in a request (the others only describe it).
PROBLEMS = {
    "fold", "fold-framing", "value-ctl", "value-nul", "nul", "nul-between", "cl-list-same",
    "cl-dup-same", "cl-dup", "cl+te", "method-unknown", "method-bad", "v-major", "v-minor",
    "v-bad", "v09-simple", "ws-line", "leading-empty", "leading-junk", "bare-lf", "bare-cr",
    "bare-eol", "ws-eol", "limit", "expect-other", "chunk-size-ows", "chunk-ext-bad",
    "chunk-bad", "chunk-crlf", "chunk-lf", "trailer-framing", "trailer-bad", "ws-before-colon",
    "empty-name", "name-byte", "ws-first-line", "host-invalid", "host-two",
    "target-8bit", "target-ws", "target-ctl", "target-relative", "target-fragment",
    "target-nonuri", "userinfo", "te-http10", "te-dup", "v10-keepalive",
}  # not here: target forms (EXPECT judges their misuse)

# the methods of RFC 9110 and the WebDAV one used here: llhttp knows these, h11 any token
KNOWN_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
                 b"PATCH", b"PROPFIND"}


def _d_rejects(d, statuses=None):
    return d.end[0] == "reject" and (statuses is None or d.end[1] in statuses)


def _d_serves(kind):
    return kind == "serves-what-other-rejects:devloop"


# Differences the RFC permits: (name, reason, tags, predicate(kind, devloop, h11, i)), i the
# index of the first request the two read differently. A rule applies to a difference when
# the request read differently has one of its tags, every problem that request has is
# covered by the rules that apply, and one of them accepts what was seen.
ALLOWED = [
    ("obs-fold", "RFC 9112 5.2: a server MUST either reject obs-fold with 400 or replace it "
     "with SP; h11 replaces, devloop rejects", {"fold", "fold-framing", "ws-first-line"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("ctl-in-field-value", "RFC 9110 5.5: CTLs other than HTAB are invalid in a field value; "
     "recipients MAY retain them (h11 does) or reject the message (devloop does)",
     {"value-ctl"}, lambda k, d, h, i: _d_rejects(d, {400})),
    ("nul", "RFC 9110 5.5/RFC 9112 2.2: a NUL or bare CR MUST be rejected or replaced by SP; "
     "both reject, statuses aside", {"value-nul", "nul", "nul-between"},
     lambda k, d, h, i: _d_rejects(d) and h.end[0] == "reject"),
    ("content-length-list", "RFC 9110 8.6: identical Content-Length values (a list or repeated "
     "lines) MAY be taken as one (h11) or rejected as invalid (devloop)",
     {"cl-list-same", "cl-dup-same", "cl-dup"}, lambda k, d, h, i: _d_rejects(d, {400})),
    ("cl-and-te", "RFC 9112 6.1: a request with both Content-Length and Transfer-Encoding MAY "
     "be rejected (devloop) or read by TE alone and the connection closed (h11 reads by TE)",
     {"cl+te"}, lambda k, d, h, i: _d_rejects(d, {400})),
    ("unknown-method", "RFC 9110 9.1: a server need not implement a method it does not "
     "recognise; llhttp knows a fixed list and refuses the rest (SHOULD be 501, a gap noted "
     "in docs/http-conformance.md); h11 passes any token through", {"method-unknown"},
     lambda k, d, h, i: _d_rejects(d, {400, 501})),
    ("http-major-version", "RFC 9110 15.6.6/RFC 9112 2.3: a server MAY refuse a major version "
     "it does not serve with 505 (devloop); h11 accepts any digit.digit",
     {"v-major", "v09-simple"}, lambda k, d, h, i: _d_rejects(d, {400, 505})),
    ("http-minor-version", "RFC 9110 2.5: a higher 1.x minor SHOULD be handled as 1.1; "
     "llhttp 8.1 refuses HTTP/1.2..1.9 (a SHOULD-level gap noted in "
     "docs/http-conformance.md); h11 accepts", {"v-minor"},
     lambda k, d, h, i: _d_rejects(d, {400, 505})),
    ("request-line-whitespace", "RFC 9112 3: recipients MAY split the request-line on any "
     "whitespace (llhttp takes repeated SP) or reject it (h11)", {"ws-line"},
     lambda k, d, h, i: True),
    ("leading-empty-lines", "RFC 9112 2.2: a server SHOULD ignore at least one empty line "
     "before the request-line; llhttp does, h11 rejects", {"leading-empty"},
     lambda k, d, h, i: _d_serves(k) and "no request line" in h.end[2]),
    ("bare-lf", "RFC 9112 2.2: a recipient MAY recognise a single LF as the line terminator "
     "of the start-line and fields; h11 does everywhere, llhttp only on some lines",
     {"bare-lf", "bare-lf-request-line"},
     lambda k, d, h, i: d.end[0] == "reject" or h.end[0] == "reject"),
    ("size-limits", "RFC 9110 15.5.14/15.5.15, RFC 6585 5: a server limits what it reads "
     "(413/414/431, or 400 for a length it cannot represent); h11's limit (16 KiB per event) "
     "and devloop's (32 KiB of fields, 8 KiB of target) differ", {"limit"},
     lambda k, d, h, i: True),
    ("expect-other", "RFC 9110 10.1.1: an unknown expectation MAY get 417 (devloop); h11 "
     "ignores it", {"expect-other"}, lambda k, d, h, i: _d_rejects(d, {417})),
    ("http10-keep-alive", "RFC 9112 9.3: honouring HTTP/1.0 keep-alive is optional; devloop "
     "does, h11 closes", {"v10-keepalive"},
     lambda k, d, h, i: k.startswith("framing:keep") or k == "reads-more:devloop"),
    ("chunk-size-trailing-ows", "RFC 9112 7.1: chunk-size is 1*HEXDIG with no whitespace; h11 "
     "deliberately accepts trailing OWS, devloop rejects", {"chunk-size-ows"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("chunk-ext-syntax", "RFC 9112 7.1.1: chunk-ext is token [= token/quoted-string]; h11 "
     "takes anything after ';', devloop checks the syntax", {"chunk-ext-bad"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("te-unimplemented-status", "RFC 9112 6.3 says 400 when chunked is not the final coding, "
     "6.1 says SHOULD 501 for a coding not implemented: h11 answers 501 for both",
     {"te-dup", "te"}, lambda k, d, h, i: k.startswith("status:")),
    ("connect-not-implemented", "RFC 9110 9.1/9.3.6: only GET and HEAD are required; a server "
     "without CONNECT refuses it (400/405/501) and, as CONNECT ends HTTP on the connection, "
     "reads nothing after it", {"connect"},
     lambda k, d, h, i: _d_rejects(d, {400, 405, 501}) or (
         i < len(d.msgs) and d.msgs[i].opaque in (405, 501) and not d.msgs[i].keep)),
    ("framing-field-in-trailer", "RFC 9110 6.5.1: framing fields (Transfer-Encoding, "
     "Content-Length) are not allowed in trailers; llhttp rejects them, h11 takes them as "
     "trailers", {"trailer-framing"}, lambda k, d, h, i: _d_rejects(d, {400})),
    ("target-not-uri", "RFC 9112 3.2: a request-target has no fragment and only URI "
     "characters; both parsers take '#' and '\"{}|\\^`', and the RFC lets a server refuse them "
     "(9112 3: an invalid request-line SHOULD get 400)", {"target-fragment", "target-nonuri"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("userinfo", "RFC 9110 4.2.4: a recipient SHOULD treat userinfo in an http(s) URI as an "
     "error; h11 passes it", {"userinfo"}, lambda k, d, h, i: _d_rejects(d, {400})),
    ("llhttp81-chunk-ext", "RFC 9112 7.1.1: these chunk extensions are valid (quoted-pair, a "
     "second extension after a token value, BWS around ';' and '='), but llhttp 8.1 refuses "
     "them; a 400 for a body no client sends is the safe direction (listed in "
     "docs/http-conformance.md)", {"llhttp81-ext"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("cl-trailing-htab", "RFC 9110 5.5: OWS around a field value is not part of it, so "
     "'Content-Length: 5<HTAB>' is valid; llhttp 8.1 refuses a trailing HTAB there (400; "
     "listed in docs/http-conformance.md)", {"cl-trailing-htab"},
     lambda k, d, h, i: _d_rejects(d, {400})),
    ("leading-cr", "RFC 9112 2.2: a server SHOULD ignore at least one empty line before the "
     "request-line; llhttp skips any CR and LF there, h11 refuses a lone CR",
     {"leading-junk"}, lambda k, d, h, i: k == "serves-what-other-rejects:devloop"),
    ("http09-simple-request", "RFC 9112 2.3/9110 15.6.6: an HTTP/0.9 request line (no "
     "version) is refused either as malformed (400, h11) or as an unsupported version (505)",
     {"v09-simple"}, lambda k, d, h, i: k.startswith("status:")),
]


def allowed_by(case, kind, d, h, i):
    """The name of the rule that permits this difference, or None."""
    tags = case.parts[min(i, len(case.parts) - 1)]
    if (kind == "serves-what-other-rejects:h11" and h.msgs[i].method not in KNOWN_METHODS and
            _d_rejects(d, {400, 501})):
        return "unknown-method"  # both read the same bytes up to it: refusing it is allowed
    rules = [r for r in ALLOWED if tags & r[2]]
    covered = set().union(*(r[2] for r in rules)) if rules else set()
    if not rules or not (tags & PROBLEMS) <= covered | {"method-unknown"}:
        return None
    for name, _, _, pred in rules:
        if pred(kind, d, h, i):
            return name
    return None


def judge(case, d, h):
    """(kind, text, allowed_by, index of the first request read differently) for one case;
    kind None when there is nothing to say."""
    diff = compare(case, d, h)
    if case.expect:
        what = "serving it" if case.expect[0] == "serve" else \
            "/".join(str(s) for s in sorted(case.expect[1]))
        if not meets(case.expect, d):
            return ("rfc:must-%s(%s)" % (case.expect[0], case.expect[2]),
                    "the RFC requires %s for the first request (%s)" % (what, case.expect[2]),
                    None, 0)
        if not diff:
            return None, None, None, None
        if case.expect[0] == "reject" or diff[0] == "serves-what-other-rejects:devloop":
            return diff[0], diff[1], "EXPECT", diff[2]
    if not diff:
        return None, None, None, None
    i = diff[2]
    later = case.expects[i] if 0 < i < len(case.expects) else None
    if later and later[0] == "reject" and len(d.msgs) == i and _d_rejects(d, later[1]):
        return diff[0], diff[1], "EXPECT", i  # a later request refused as the RFC requires
    return diff[0], diff[1], allowed_by(case, diff[0], d, h, i), i


# ------------------------------------------------------------------------ running

CASES = all_cases()
FINDINGS = []  # (family, kind, case, devloop, h11, text) of unlisted disagreements
ALLOWED_SEEN = collections.Counter()


def run_family(srv, family):
    bad = []
    for case in CASES[family]:
        d = devloop_read(srv.port, case.data)
        h = h11_read(case.data)
        kind, text, allowed, i = judge(case, d, h)
        if kind is None:
            continue
        if allowed:
            ALLOWED_SEEN[allowed] += 1
            continue
        bad.append((family, kind, case, d, h, text, i))
    FINDINGS.extend(bad)
    write_report()
    if bad:
        lines = ["%d of %d %s cases disagree:" % (len(bad), len(CASES[family]), family)]
        for _, kind, case, d, h, text, _ in bad[:25]:
            lines.append("  [%s] %r\n      %s\n      devloop: %r\n      h11:     %r" % (
                kind, case.data[:300], text, d, h))
        if len(bad) > 25:
            lines.append("  ... %d more (DEVLOOP_DIFF_REPORT=file writes them all)" %
                         (len(bad) - 25))
        raise AssertionError("\n".join(lines))


# What a disagreement is about, for the report: the first of these tags the case has.
TOPICS = ["absolute", "authority", "asterisk", "connect", "target-8bit", "target-ws",
          "target-ctl", "leading-junk", "v-minor", "v-major", "method-unknown",
          "ws-before-colon", "empty-name", "name-byte", "ws-first-line", "bare-cr", "bare-eol",
          "nul", "host-invalid", "host-none", "host-two", "chunk-crlf", "chunk-lf",
          "chunk-ext-valid", "chunk-ext", "trailer", "te-http10", "te-dup", "te", "cl+te", "cl",
          "fold", "value-ctl", "bare-lf"]


def topic(case, kind, i):
    if kind.startswith("rfc:"):
        return kind
    tags = case.parts[min(i or 0, len(case.parts) - 1)]
    for t in TOPICS:
        if t in tags:
            return "%s [%s]" % (kind, t)
    return kind


def write_report():
    path = os.environ.get("DEVLOOP_DIFF_REPORT")
    if not path:
        return
    groups = collections.OrderedDict()
    for family, kind, case, d, h, text, i in FINDINGS:
        groups.setdefault(topic(case, kind, i), []).append((family, case, d, h, text))
    total = sum(len(v) for v in CASES.values())
    with open(path, "w") as f:
        f.write("devloop vs python3-h11 %s: %d disagreements in %d generated requests "
                "(seed %d)\n" % (h11.__version__, len(FINDINGS), total, SEED))
        f.write("Written by tests/e2e/test_http_differential.py (DEVLOOP_DIFF_REPORT=file).\n"
                "Class = kind of difference [topic tag of the case]. Kinds: rfc:must-X(rule):\n"
                "the RFC requires X and devloop does not (whatever h11 does); serves-what-other-"
                "rejects:W:\nonly W serves that request; framing:F: both serve it but read F "
                "differently;\nreads-more:W: only W reads a further request out of the bytes. "
                "Each case: the bytes,\nits tags, the difference, then what each side read "
                "(requests served; how it ended).\n\n")
        f.write("Counts by class:\n")
        for cls, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            fams = collections.Counter(x[0] for x in items)
            f.write("  %5d  %s   (%s)\n" % (len(items), cls, ", ".join(
                "%s %d" % kv for kv in fams.most_common())))
        f.write("\nAllowed differences seen (not failures; reasons in ALLOWED):\n")
        for name, n in ALLOWED_SEEN.most_common():
            f.write("  %5d  %s\n" % (n, name))
        for cls, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            f.write("\n== %s (%d)\n" % (cls, len(items)))
            for family, case, d, h, text in items:
                f.write("-- %r\n   %s; tags: %s\n   %s\n   devloop: %r\n   h11:     %r\n" % (
                    case.data[:400], family, ",".join(sorted(case.tags)), text, d, h))


def test_request_line(srv):
    run_family(srv, "request-line")


def test_field_names(srv):
    run_family(srv, "field-name")


def test_field_values(srv):
    run_family(srv, "field-value")


def test_host(srv):
    run_family(srv, "host")


def test_content_length(srv):
    run_family(srv, "content-length")


def test_transfer_encoding(srv):
    run_family(srv, "transfer-encoding")


def test_chunked(srv):
    run_family(srv, "chunked")


def test_line_endings(srv):
    run_family(srv, "line-endings")


def test_pipelined(srv):
    run_family(srv, "pipelined")


def test_combinations(srv):
    run_family(srv, "combination")


if __name__ == "__main__":
    harness.main(globals(), app="differential")
