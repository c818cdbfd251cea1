"""HTTP/2 attacks on the h2c listener (prior knowledge), one per test, each on
its own connection: the defence holds (a refused stream, a 431, a GOAWAY, a
closed connection) and the server keeps answering other clients at once, over
HTTP/1.1 and over HTTP/2 (runtime/http2/h2.c lists the defences).

Frames are written by hand with struct so that every byte is the test's; the
header blocks of attacks are hand-encoded HPACK, and responses are decoded
with the hpack module (Debian's python3-hpack, from scripts/install-deps.sh).
"""
import json
import os
import socket
import struct
import sys
import threading
import time

try:
    import hpack
except ImportError:  # a python3 other than Debian's (a pyenv shim) runs this file
    sys.path.append("/usr/lib/python3/dist-packages")
    import hpack

import harness

# frame types, flags, error codes (RFC 9113 sections 6 and 7)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)
ERR_NAMES = {v: k for k, v in dict(
    NO_ERROR=0, PROTOCOL_ERROR=1, INTERNAL_ERROR=2, FLOW_CONTROL_ERROR=3, SETTINGS_TIMEOUT=4,
    STREAM_CLOSED=5, FRAME_SIZE_ERROR=6, REFUSED_STREAM=7, CANCEL=8, COMPRESSION_ERROR=9,
    CONNECT_ERROR=10, ENHANCE_YOUR_CALM=11).items()}

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BIG_WINDOW = 1 << 24
ENV = {"DEVLOOP_SEND_TIMEOUT_MS": "1500", "DEVLOOP_BODY_TIMEOUT_MS": "1000",
       "DEVLOOP_HEADER_TIMEOUT_MS": "1500"}
# CPU budgets are for the optimised build; ASan and UBSan cost a few times that
CPU_SCALE = 4.0 if os.environ.get("DEVLOOP_SANITIZED") else 1.0
# When nghttp2 itself detects a flood (NGHTTP2_ERR_FLOODED: over 1000 SETTINGS
# or PING ACKs queued) or too many CONTINUATION frames, dl_h2_feed() queues a
# GOAWAY only if nothing else is waiting to be written, so the connection may
# close without one. Set DL_H2_STRICT_GOAWAY=1 to require the GOAWAY anyway.
STRICT_GOAWAY = bool(os.environ.get("DL_H2_STRICT_GOAWAY"))


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def settings_frame(pairs=(), flags=0):
    return frame(SETTINGS, flags, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def rst_frame(sid, code):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


# ---------------------------------------------------------- hand-made HPACK
def hp_int(value, prefix, first=0):
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1); first holds the flag bits."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hp_str(s):
    if isinstance(s, str):
        s = s.encode()
    return hp_int(len(s), 7) + s  # no Huffman


def hp_indexed(i):
    return hp_int(i, 7, 0x80)


def hp_literal(name, value, indexing=False):
    """A literal field, without indexing or with incremental indexing; name is a
    static-table index or a new name."""
    prefix, flag = (6, 0x40) if indexing else (4, 0x00)
    if isinstance(name, int):
        return hp_int(name, prefix, flag) + hp_str(value)
    return hp_int(0, prefix, flag) + hp_str(name) + hp_str(value)


def request_block(path, method="GET", extra=()):
    """A request header block that touches no dynamic table: the same bytes
    mean the same request on any connection, as often as they are sent."""
    m = {"GET": hp_indexed(2), "POST": hp_indexed(3)}.get(method) or hp_literal(2, method)
    out = m + hp_indexed(6) + hp_literal(4, path) + hp_literal(1, "localhost")
    for k, v in extra:
        out += hp_literal(k, v)
    return out


# ------------------------------------------------------------- the client
class H2:
    """A raw HTTP/2 client connection over h2c with prior knowledge."""

    def __init__(self, port, settings=((S_INITIAL_WINDOW_SIZE, BIG_WINDOW),), timeout=5,
                 handshake=True, preface=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.dec = hpack.Decoder()
        self.dec.max_allowed_table_size = 65536
        self.server_settings = {}
        self.got_settings = self.got_ack = False
        self.goaway = None  # (last_stream_id, code, debug)
        self.streams = {}
        self.frames = []  # every frame read, (type, flags, sid, len)
        self._block = None
        self.flooding = False  # no automatic ACKs while a flood thread writes
        if preface:
            first = PREFACE + settings_frame(settings)
            if any(k == S_INITIAL_WINDOW_SIZE and v >= 65535 for k, v in settings):
                first += window_update(0, BIG_WINDOW)
            self.send(first)
        if handshake:
            self.handshake()

    def send(self, *frames):
        """False when the server has closed the connection."""
        try:
            self.sock.sendall(b"".join(frames))
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def read_frame(self, timeout=None):
        """(type, flags, stream_id, payload), or None once the server has closed
        the connection; socket.timeout when nothing complete came in time."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                    payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    f = (ftype, flags, sid & 0x7FFFFFFF, payload)
                    self.frames.append((ftype, flags, f[2], n))
                    self._note(f)
                    return f
            if self.eof:
                return None
            try:
                chunk = self.sock.recv(262144)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:  # closed (a frame cut short by the close is dropped)
                self.eof = True
                return None
            self.buf += chunk

    def _note(self, f):
        """Connection-level bookkeeping common to every reader."""
        ftype, flags, sid, payload = f
        if ftype == SETTINGS:
            if flags & ACK:
                self.got_ack = True
            else:
                self.got_settings = True
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                if not self.flooding:
                    self.send(settings_frame(flags=ACK))
        elif ftype == PING and not flags & ACK and not self.flooding:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])

    def handshake(self, timeout=5):
        deadline = time.time() + timeout
        while not (self.got_settings and self.got_ack):
            left = deadline - time.time()
            assert left > 0, "no SETTINGS exchange within %ss" % timeout
            f = self.read_frame(left)
            assert f is not None, "server closed during the SETTINGS exchange"
            assert f[0] in (SETTINGS, WINDOW_UPDATE, PING), "unexpected frame %r" % (f[:3],)

    def request(self, sid, path, method="GET", body=None, extra=()):
        """A request on a new stream; the block touches no dynamic table."""
        block = request_block(path, method, extra)
        if body is None:
            return self.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
        if isinstance(body, str):
            body = body.encode()
        return self.send(frame(HEADERS, END_HEADERS, sid, block),
                         frame(DATA, END_STREAM, sid, body))

    def stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": b"", "done": False,
                                             "rst": None})

    def pump(self, timeout):
        """Reads one frame and files it with its stream; False when the connection
        is over (closed, or nothing came within timeout)."""
        try:
            f = self.read_frame(timeout)
        except socket.timeout:
            return False
        if f is None:
            return False
        ftype, flags, sid, payload = f
        if ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self._block = (sid, flags, payload)
            else:
                assert self._block and self._block[0] == sid, "stray CONTINUATION"
                self._block = (sid, self._block[1], self._block[2] + payload)
            if flags & END_HEADERS:
                sid, hflags, block = self._block
                self._block = None
                st = self.stream(sid)
                hs = [(k.decode() if isinstance(k, bytes) else k,
                       v.decode() if isinstance(v, bytes) else v)
                      for k, v in self.dec.decode(block, raw=True)]
                if st["headers"] is None:
                    st["headers"] = hs
                if hflags & END_STREAM:
                    st["done"] = True
        elif ftype == DATA:
            st = self.stream(sid)
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            st["data"] += payload
            if flags & END_STREAM:
                st["done"] = True
        elif ftype == RST_STREAM:
            st = self.stream(sid)
            st["rst"] = struct.unpack(">I", payload)[0]
            st["done"] = True
        return True

    def responses(self, sids, timeout=10):
        """Reads until every stream in sids ended (END_STREAM or RST_STREAM), the
        connection is over, or timeout passed; returns {sid: stream}."""
        deadline = time.time() + timeout
        while not all(self.stream(s)["done"] for s in sids):
            left = deadline - time.time()
            if left <= 0 or not self.pump(left):
                break
        return {s: self.stream(s) for s in sids}

    def until_closed(self, timeout):
        """Reads (and files) frames until the server closes; True if it did in time."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return False
            if not self.pump(left):
                return self.eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def status(st):
    return int(dict(st["headers"])[":status"]) if st["headers"] else None


def header(st, name):
    return dict(st["headers"] or []).get(name)


def flood(h, data, chunk=65536):
    """Writes data from a thread, as fast as the socket takes it, while the
    test reads; stops at the first error (the server closed)."""
    sent = [0]
    h.flooding = True

    def run():
        try:
            for i in range(0, len(data), chunk):
                h.sock.sendall(data[i:i + chunk])
                sent[0] = i + chunk
        except OSError:
            pass
        sent[0] = min(sent[0], len(data))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, sent


def cpu_seconds(srv):
    """utime + stime of the server process, all threads, in seconds."""
    with open("/proc/%d/stat" % srv.pid()) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def goaway_name(h):
    if h.goaway is None:
        return "no GOAWAY"
    return "GOAWAY(last=%d, %s, %r)" % (h.goaway[0], ERR_NAMES.get(h.goaway[1], h.goaway[1]),
                                        h.goaway[2][:80])


def check_prompt(srv):
    """Other clients are answered at once, over HTTP/1.1 and over h2c."""
    t0 = time.time()
    c = harness.Conn(srv.port, timeout=2)
    try:
        r = c.request("GET", "/hello")
    finally:
        c.close()
    took = time.time() - t0
    assert r.status == 200 and r.body == b"Hello, World!", r
    assert took < 1.0, "HTTP/1.1 GET /hello took %.2fs" % took
    t0 = time.time()
    h = H2(srv.port, timeout=2)
    try:
        h.request(1, "/json")
        st = h.responses([1], timeout=2)[1]
    finally:
        h.close()
    took = time.time() - t0
    assert status(st) == 200, st
    assert json.loads(st["data"]) == {"message": "Hello, World!"}, st
    assert took < 1.0, "h2c GET /json took %.2fs" % took


# ==================================================================== tests
def test_00_h2c_baseline(srv):
    """The client itself: a plain h2c exchange, the settings the defences rely on."""
    h = H2(srv.port)
    assert h.server_settings.get(S_MAX_CONCURRENT_STREAMS) == 100, h.server_settings
    assert h.server_settings.get(S_MAX_HEADER_LIST_SIZE, 0) > 0, h.server_settings
    h.request(1, "/hello")
    h.request(3, "/echo", "POST", b"ping", extra=[("content-type", "text/plain")])
    rs = h.responses([1, 3])
    assert status(rs[1]) == 200 and rs[1]["data"] == b"Hello, World!", rs[1]
    assert status(rs[3]) == 200 and json.loads(rs[3]["data"])["raw"] == "ping", rs[3]
    h.close()
    check_prompt(srv)


def test_01_max_concurrent_streams(srv):
    """100 handlers at once per connection: a client that opens 120 streams
    before it has acknowledged the server's SETTINGS gets REFUSED_STREAM for the
    20 over the limit (RFC 9113 5.1.2, retryable), and the 100 are answered."""
    h = H2(srv.port, handshake=False)
    t0 = time.time()
    frames = [frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, request_block("/sleep/500"))
              for i in range(100)]
    h.send(*frames)
    extra = [2 * i + 1 for i in range(100, 120)]
    h.send(*[frame(HEADERS, END_HEADERS | END_STREAM, s, request_block("/sleep/500"))
             for s in extra])
    sids = [2 * i + 1 for i in range(120)]
    rs = h.responses(sids, timeout=10)
    took = time.time() - t0
    refused = [s for s in extra if rs[s]["rst"] in (REFUSED_STREAM, PROTOCOL_ERROR)]
    assert refused == extra, ("streams over the limit not reset",
                              {s: (status(rs[s]), rs[s]["rst"]) for s in extra})
    for s in sids[:100]:
        st = rs[s]
        assert st["rst"] is None and status(st) == 200, (s, st, goaway_name(h))
        assert json.loads(st["data"]) == {"slept": 500}, (s, st)
    assert took < 5, "100 parallel sleeps of 500 ms took %.2fs" % took
    assert h.goaway is None, goaway_name(h)
    # the connection goes on: the limit is per moment, not per connection
    h.request(401, "/hello")
    assert status(h.responses([401])[401]) == 200
    h.close()
    check_prompt(srv)


def test_01b_max_concurrent_streams_acknowledged(srv):
    """Once the client has acknowledged MAX_CONCURRENT_STREAMS = 100, a 101st
    open stream breaks a limit it knows: nghttp2 makes that a connection error
    (PROTOCOL_ERROR; RFC 9113 5.4.1 lets any stream error be one) unless it
    only refuses the streams. Either way no stream over the limit runs."""
    h = H2(srv.port)
    h.send(*[frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, request_block("/sleep/500"))
             for i in range(100)])
    time.sleep(0.1)
    extra = [2 * i + 1 for i in range(100, 120)]
    h.send(*[frame(HEADERS, END_HEADERS | END_STREAM, s, request_block("/sleep/500"))
             for s in extra])
    sids = [2 * i + 1 for i in range(120)]
    rs = h.responses(sids, timeout=10)
    if h.goaway is not None:
        last, code, _ = h.goaway
        assert code in (PROTOCOL_ERROR, REFUSED_STREAM, ENHANCE_YOUR_CALM), goaway_name(h)
        assert last == 199, "not exactly the 100 streams within the limit: %s" % goaway_name(h)
        assert h.until_closed(3), "no close after %s" % goaway_name(h)
    else:
        for s in extra:
            assert rs[s]["rst"] in (REFUSED_STREAM, PROTOCOL_ERROR), (s, rs[s])
        for s in sids[:100]:
            assert status(rs[s]) == 200, (s, rs[s])
    for s in extra:
        assert status(rs[s]) is None, ("a stream over the limit was answered", s, rs[s])
    h.close()
    check_prompt(srv)


def bomb_block(path, refs, value_len=4000):
    """GET path, then one 4 KB field added to the dynamic table (index 62) and
    referenced `refs` times, one byte each: ~4 KB decoded per byte sent."""
    return (request_block(path) + hp_literal("x-bomb", "b" * value_len, indexing=True) +
            hp_indexed(62) * refs)


def test_02_hpack_bomb(srv):
    """A header list that decodes to ~50 MB from one 16 KB HEADERS frame has its
    stream reset (nghttp2 then skips the rest of the block) and costs the
    connection 100 flood tokens: 20 in a row cost little CPU time, and the
    connection ends with ENHANCE_YOUR_CALM after about ten of them."""
    h = H2(srv.port)
    block = bomb_block("/hello", 16384 - 4100)
    assert len(block) <= 16384
    cpu0 = cpu_seconds(srv)
    t0 = time.time()
    sids = [2 * i + 1 for i in range(20)]
    for s in sids:
        # a loaded machine may see the server end the connection (its GOAWAY
        # sent first) before all 20 are written: what it read is judged below
        if not h.send(frame(HEADERS, END_HEADERS | END_STREAM, s, block)):
            break
    rs = h.responses(sids, timeout=15)
    took, cpu = time.time() - t0, cpu_seconds(srv) - cpu0
    # 20 bombs at 100 tokens each against a bucket of 1000: the connection ends
    assert h.goaway is not None and h.goaway[1] == ENHANCE_YOUR_CALM, goaway_name(h)
    assert 2 * 5 + 1 <= h.goaway[0] <= 2 * 12 + 1, goaway_name(h)  # about ten bombs
    sids = [x for x in sids if x <= h.goaway[0]]
    # the bombs before the end were each reset (or answered 431); resets still
    # queued when the session terminated may be dropped, so not every one is seen
    done = [x for x in sids if rs[x]["done"]]
    assert len(done) >= 5, ([rs[x] for x in sids], goaway_name(h))
    for s in done:
        st = rs[s]
        if st["rst"] is None:
            assert status(st) == 431, (s, st)
            assert header(st, "content-type").startswith("application/json"), st
            rid = header(st, "x-request-id")
            assert rid, st
            j = json.loads(st["data"])
            assert j.get("requestId") == rid and j.get("error"), j
    h.close()
    assert cpu < 2.0 * CPU_SCALE, "20 HPACK bombs cost %.2fs of CPU (%.2fs wall)" % (cpu, took)
    check_prompt(srv)


def test_02b_hpack_bomb_continuations(srv):
    """The same bomb spread over HEADERS + 7 CONTINUATION frames (within the
    CONTINUATION cap): ~127 K references, ~500 MB decoded, per request."""
    h = H2(srv.port)
    refs = hp_indexed(62) * 16384
    cpu0 = cpu_seconds(srv)
    t0 = time.time()
    sids = [2 * i + 1 for i in range(5)]
    for s in sids:
        out = [frame(HEADERS, END_STREAM, s, bomb_block("/hello", 16384 - 4100))]
        out += [frame(CONTINUATION, END_HEADERS if i == 6 else 0, s, refs) for i in range(7)]
        assert h.send(*out), "server closed"
    rs = h.responses(sids, timeout=15)
    took, cpu = time.time() - t0, cpu_seconds(srv) - cpu0
    for s in sids:
        st = rs[s]
        assert st["done"], (s, st, goaway_name(h))
        assert st["rst"] is not None or status(st) == 431, (s, st)
    assert h.goaway is None, goaway_name(h)
    h.close()
    assert cpu < 2.0 * CPU_SCALE, \
        "5 CONTINUATION HPACK bombs cost %.2fs of CPU (%.2fs wall)" % (cpu, took)
    check_prompt(srv)


def rapid_reset(srv, path, n=20000):
    """HEADERS then RST_STREAM(CANCEL) on n new streams, written as fast as the
    socket takes them while the answers are read; returns (client, info)."""
    block = request_block(path)
    data = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, block) +
                    rst_frame(2 * i + 1, CANCEL) for i in range(n))
    h = H2(srv.port)
    t0 = time.time()
    t, sent = flood(h, data)
    closed = h.until_closed(10)
    took = time.time() - t0
    t.join(5)
    answered = sum(1 for st in h.streams.values() if st["headers"])
    refused = sum(1 for st in h.streams.values() if st["rst"] == REFUSED_STREAM)
    info = "%s %s: %s, sent %d of %d bytes, %d answered, %d refused, %.2fs" % (
        path, "closed" if closed else "OPEN", goaway_name(h), sent[0], len(data), answered,
        refused, took)
    assert closed, "connection still open after 10s: " + info
    assert h.goaway is not None, info
    assert h.goaway[0] < 2 * 5000, "too many streams processed: " + info
    assert answered <= 100, info
    h.close()
    return h, info


def test_03_rapid_reset(srv):
    """CVE-2023-44487, 20,000 streams opened and cancelled per connection, three
    connections for each kind of handler: slow handlers (/sleep/200) fill the
    100 places, then refused streams drain the bucket: ENHANCE_YOUR_CALM; fast
    ones (/hello) are stopped by nghttp2's reset rate limit (1000, then 33/s):
    INTERNAL_ERROR. Either way the connection ends after a few thousand
    streams at most, and the whole attack costs little CPU time."""
    cpu0 = cpu_seconds(srv)
    infos = []
    for path, codes in (("/sleep/200", (ENHANCE_YOUR_CALM, INTERNAL_ERROR)),
                        ("/hello", (INTERNAL_ERROR, ENHANCE_YOUR_CALM))):
        for _ in range(3):
            h, info = rapid_reset(srv, path)
            infos.append(info)
            assert h.goaway[1] in codes, info
    cpu = cpu_seconds(srv) - cpu0
    assert cpu < 3.0 * CPU_SCALE, "rapid reset cost %.2fs of CPU: %s" % (cpu, infos)
    check_prompt(srv)


def test_04_continuation_flood(srv):
    """A header block may span HEADERS and up to 8 CONTINUATION frames; more
    end the connection (the CVE-2024-27316 pattern) at the ninth."""
    def cont_flood(count, end_at=None):
        h = H2(srv.port)
        out = [frame(HEADERS, END_STREAM, 1, request_block("/hello"))]
        for i in range(count):
            piece = hp_literal("x-c%d" % i, "v") if i % 2 == 0 else b""
            out.append(frame(CONTINUATION, END_HEADERS if i + 1 == end_at else 0, 1, piece))
        h.send(*out)
        return h

    # within the cap: an ordinary request
    h = cont_flood(8, end_at=8)
    st = h.responses([1], timeout=3)[1]
    assert status(st) == 200 and st["data"] == b"Hello, World!", (st, goaway_name(h))
    h.close()
    # over it: the connection ends at once; nothing else waits to be written
    # after the handshake, so the GOAWAY goes out too
    for count in (9, 500):
        h = cont_flood(count)
        t0 = time.time()
        closed = h.until_closed(3)
        assert closed, "open 3s after %d CONTINUATION frames: %s" % (count, goaway_name(h))
        assert time.time() - t0 < 1.5, time.time() - t0
        assert h.goaway is not None and h.goaway[1] in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM), \
            "%d CONTINUATION frames: %s" % (count, goaway_name(h))
        assert h.stream(1)["headers"] is None, h.streams
        h.close()
    # the same with a PING in front: its ACK waits to be written when nghttp2
    # stops at the ninth CONTINUATION, and dl_h2_feed() then queues no GOAWAY
    h = H2(srv.port)
    h.send(frame(PING, 0, 0, b"pingpong"), frame(HEADERS, END_STREAM, 1, request_block("/hello")),
           *[frame(CONTINUATION, 0, 1, b"") for _ in range(500)])
    assert h.until_closed(3), "open 3s after a CONTINUATION flood: " + goaway_name(h)
    if h.goaway is not None or STRICT_GOAWAY:
        assert h.goaway is not None and h.goaway[1] in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM), \
            "PING + CONTINUATION flood: " + goaway_name(h)
    assert h.stream(1)["headers"] is None, h.streams
    h.close()
    check_prompt(srv)


def control_flood(srv, unit, n=20000, ack_type=None, pause=0.0):
    """n copies of a frame written without pausing to read; the server ends the
    connection long before the last one, with GOAWAY(ENHANCE_YOUR_CALM) when its
    own bucket (1000, then 100/s) empties first. nghttp2's own limit on queued
    ACKs (1000) may come first for PING and SETTINGS; then the connection is
    closed after those ACKs, without a GOAWAY (see STRICT_GOAWAY)."""
    h = H2(srv.port)
    time.sleep(pause)
    data = unit * n
    cpu0 = cpu_seconds(srv)
    t0 = time.time()
    t, sent = flood(h, data)
    closed = h.until_closed(10)
    took = time.time() - t0
    t.join(5)
    cpu = cpu_seconds(srv) - cpu0
    acks = sum(1 for f in h.frames if f[0] == ack_type and f[1] & ACK)
    info = "%s, %d ACKs, sent %d of %d bytes, %.2fs, cpu %.2fs" % (
        goaway_name(h), acks, sent[0], len(data), took, cpu)
    assert closed, "still open after 10s: " + info
    assert acks <= 1100, "the server answered the flood: " + info
    assert cpu < 2.0 * CPU_SCALE, info
    if h.goaway is not None or STRICT_GOAWAY:
        assert h.goaway is not None and h.goaway[1] == ENHANCE_YOUR_CALM, info
    h.close()
    return h, info


def test_05_ping_flood(srv):
    """20,000 PINGs: at once after the handshake, and once the bucket is full."""
    for pause in (0.0, 0.1):
        control_flood(srv, frame(PING, 0, 0, b"12345678"), ack_type=PING, pause=pause)
    check_prompt(srv)


def test_06_settings_flood(srv):
    """20,000 SETTINGS frames of one setting each. At once after the handshake
    the bucket (999 tokens left after the client's first SETTINGS) empties at
    the 1000th: GOAWAY. After a pause it has refilled to 1000 and nghttp2's
    limit of 1000 queued SETTINGS ACKs trips first, at the 1001st frame."""
    for pause in (0.0, 0.1):
        control_flood(srv, settings_frame([(S_ENABLE_PUSH, 0)]), ack_type=SETTINGS, pause=pause)
    check_prompt(srv)


def test_06b_priority_and_empty_data_flood(srv):
    """The other frames the bucket charges, which nghttp2 does not limit:
    PRIORITY, and empty DATA frames on an open stream. Only the bucket can stop
    these, so the GOAWAY is required."""
    h, info = control_flood(srv, frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15)))
    assert h.goaway is not None, info
    h = H2(srv.port)
    h.send(frame(HEADERS, END_HEADERS, 1, request_block("/echo", "POST")))
    t, sent = flood(h, frame(DATA, 0, 1) * 20000)
    assert h.until_closed(10), "empty DATA flood: still open: " + goaway_name(h)
    t.join(5)
    assert h.goaway is not None and h.goaway[1] == ENHANCE_YOUR_CALM, goaway_name(h)
    assert h.stream(1)["headers"] is None, h.stream(1)
    h.close()
    check_prompt(srv)


def test_07_zero_window_stall(srv):
    """INITIAL_WINDOW_SIZE 0 and a large answer: the body cannot move, so the
    connection is closed once DEVLOOP_SEND_TIMEOUT_MS (1.5 s) passed (the sweep
    runs every second)."""
    h = H2(srv.port, settings=[(S_INITIAL_WINDOW_SIZE, 0)])
    t0 = time.time()
    h.request(1, "/big")
    closed = h.until_closed(6)
    took = time.time() - t0
    st = h.stream(1)
    assert closed, "connection open 6s into a zero-window stall: %r %s" % (st, goaway_name(h))
    assert status(st) == 200, st  # the headers go; the body never can
    assert st["data"] == b"", len(st["data"])
    assert took >= 1.2, "closed before the send timeout: %.2fs" % took
    deadline = time.time() + 3  # the log is written by a thread of its own
    while "flow-control window shut" not in srv.output() and time.time() < deadline:
        time.sleep(0.05)
    assert "flow-control window shut" in srv.output(), "closed, but not by the stall sweep"
    h.close()
    check_prompt(srv)


def test_07b_slow_body_and_stalled_header_block(srv):
    """A stream whose body stops (fewer than 1 KiB in a body-timeout window of
    1 s) is answered 408 while the connection goes on; a header block left
    open (HEADERS without END_HEADERS) ends the connection after the header
    timeout (1.5 s), since nothing else may be sent on it meanwhile."""
    h = H2(srv.port)
    block = request_block("/echo", "POST", extra=(("content-length", "10000"),))
    h.send(frame(HEADERS, END_HEADERS, 1, block), frame(DATA, 0, 1, b"x" * 10))
    t0 = time.time()
    st = h.responses([1], timeout=6)[1]
    assert status(st) == 408, st
    assert 0.9 <= time.time() - t0 < 4, time.time() - t0
    assert json.loads(st["data"])["requestId"] == header(st, "x-request-id")
    h.request(3, "/hello")  # the connection still serves
    st = h.responses([3])[3]
    assert status(st) == 200 and st["data"] == b"Hello, World!", st
    h.close()

    h = H2(srv.port)
    h.send(frame(HEADERS, 0, 1, request_block("/hello")))  # no END_HEADERS
    t0 = time.time()
    assert h.until_closed(6), "an open header block kept the connection"
    assert 1.2 <= time.time() - t0 < 5, time.time() - t0
    assert h.goaway is not None, "closed without a GOAWAY"
    h.close()
    check_prompt(srv)


def test_07c_answered_early_then_silence(srv):
    """A stream answered before its body ended (413 from content-length) whose
    client then goes silent is reset after the body timeout, so the connection
    is not held open forever; an unknown method gets 400 (as on HTTP/1: core/http.c dl_http_method_static), not a crash."""
    h = H2(srv.port)
    block = request_block("/limited", "POST", extra=(("content-length", "5000"),))
    h.send(frame(HEADERS, END_HEADERS, 1, block))
    t0 = time.time()
    st = h.responses([1], timeout=5)[1]
    assert status(st) == 413, st
    while h.stream(1)["rst"] is None and time.time() - t0 < 6 and not h.eof:
        h.pump(0.5)
    assert h.stream(1)["rst"] == 0, h.stream(1)  # RST_STREAM(NO_ERROR)
    assert time.time() - t0 < 5, time.time() - t0
    h.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block("/hello", "FOO")))
    st = h.responses([3], timeout=5)[3]
    assert status(st) == 400, st
    h.request(5, "/hello")
    st = h.responses([5])[5]
    assert status(st) == 200, st
    h.close()
    check_prompt(srv)


def test_08_oversized_frame(srv):
    """A frame over SETTINGS_MAX_FRAME_SIZE (16384 by default) is a connection
    error FRAME_SIZE_ERROR (RFC 9113 4.2), whatever its type."""
    for kind in ("DATA", "HEADERS"):
        h = H2(srv.port)
        if kind == "DATA":
            h.send(frame(HEADERS, END_HEADERS, 1, request_block("/echo", "POST")),
                   frame(DATA, END_STREAM, 1, b"x" * 20000))
        else:
            h.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                         request_block("/hello", extra=[("x-pad", "p" * 19900)])))
        assert h.until_closed(3), "%s frame of 20000 bytes: still open, %s" % (kind, goaway_name(h))
        assert h.goaway is not None and h.goaway[1] == FRAME_SIZE_ERROR, (kind, goaway_name(h))
        assert status(h.stream(1)) is None, (kind, h.stream(1))
        h.close()
    check_prompt(srv)


def test_09_trailers_ignored(srv):
    """A trailing HEADERS frame ends the body; its fields are not request
    headers; a pseudo-header in trailers resets that stream only."""
    h = H2(srv.port)
    enc = hpack.Encoder()

    def req(method, path, extra=()):
        return enc.encode([(":method", method), (":scheme", "http"), (":path", path),
                           (":authority", "localhost")] + list(extra))

    h.send(frame(HEADERS, END_HEADERS, 1, req("POST", "/echo", [("content-type", "text/plain")])),
           frame(DATA, 0, 1, b"hello "), frame(DATA, 0, 1, b"trailers"),
           frame(HEADERS, END_HEADERS | END_STREAM, 1, enc.encode([("x-trailer", "yes")])))
    # trailers and no body at all
    h.send(frame(HEADERS, END_HEADERS, 3, req("POST", "/echo")),
           frame(HEADERS, END_HEADERS | END_STREAM, 3, enc.encode([("x-trailer", "no body")])))
    # a trailer named like a header the handler reads is not merged into the request
    h.send(frame(HEADERS, END_HEADERS, 5, req("GET", "/headers")),
           frame(HEADERS, END_HEADERS | END_STREAM, 5, enc.encode([("x-custom", "from trailer")])))
    # a pseudo-header in trailers makes the request malformed (RFC 9113 8.1)
    h.send(frame(HEADERS, END_HEADERS, 7, req("POST", "/echo")), frame(DATA, 0, 7, b"x"),
           frame(HEADERS, END_HEADERS | END_STREAM, 7, enc.encode([(":path", "/evil")])))
    rs = h.responses([1, 3, 5, 7], timeout=5)
    assert status(rs[1]) == 200, rs[1]
    j = json.loads(rs[1]["data"])
    assert j["raw"] == "hello trailers" and j["method"] == "POST", j
    assert j["content_type"] == "text/plain", j
    assert status(rs[3]) == 200, rs[3]
    assert json.loads(rs[3]["data"]).get("raw", "") == "", rs[3]["data"]
    assert status(rs[5]) == 200, rs[5]
    assert json.loads(rs[5]["data"]).get("custom") is None, rs[5]["data"]
    assert rs[7]["rst"] == PROTOCOL_ERROR and status(rs[7]) is None, rs[7]
    # the connection and the dynamic tables both sides keep are still in step
    h.send(frame(HEADERS, END_HEADERS | END_STREAM, 9,
                 req("GET", "/headers", [("x-custom", "after trailers")])))
    st = h.responses([9])[9]
    assert status(st) == 200 and json.loads(st["data"])["custom"] == "after trailers", st
    assert h.goaway is None, goaway_name(h)
    h.close()
    check_prompt(srv)


def test_10_bad_preface(srv):
    """A preface that goes wrong part way is not HTTP/2 (the HTTP/1 parser
    rejects it); a good preface followed by anything but SETTINGS, or garbage
    after the handshake, is a connection error; unknown frame types are
    ignored (RFC 9113 5.5)."""
    # the preface's first 18 bytes, then others: HTTP/1 sees "PRI * HTTP/2.0"
    c = harness.Conn(srv.port, timeout=3)
    c.send(PREFACE[:18] + b"XX\r\n\r\n")
    try:
        r = c.response()
        assert 400 <= r.status < 600, r
    except EOFError:
        pass
    assert c.closed_by_peer(3), "connection open after a bad preface"
    c.close()
    # a good preface, then no SETTINGS frame
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", frame(HEADERS, END_HEADERS, 1, b"\x82"),
                 bytes(range(256)) * 4):
        h = H2(srv.port, preface=False, handshake=False)
        h.send(PREFACE + junk)
        assert h.until_closed(3), "open after the preface and %r" % junk[:20]
        assert h.goaway is not None and h.goaway[1] == PROTOCOL_ERROR, (junk[:20], goaway_name(h))
        h.close()
    # garbage after the handshake: HEADERS on stream 0, a frame too large, noise
    for junk in (frame(HEADERS, END_HEADERS | END_STREAM, 0, request_block("/hello")),
                 bytes((i * 37 + 11) % 256 for i in range(4096)),
                 frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00")):
        h = H2(srv.port)
        h.send(junk)
        assert h.until_closed(3), "open after garbage %r" % junk[:20]
        assert h.goaway is not None and h.goaway[1] in (PROTOCOL_ERROR, FRAME_SIZE_ERROR), \
            (junk[:20], goaway_name(h))
        h.close()
    # the preface a byte at a time, then unknown frame types: a good connection
    h = H2(srv.port, preface=False, handshake=False)
    for b in PREFACE:
        h.send(bytes([b]))
        time.sleep(0.003)
    h.send(settings_frame([(S_INITIAL_WINDOW_SIZE, BIG_WINDOW)]),
           frame(0xEE, 0xFF, 0, b"unknown extension frame"))
    h.handshake()
    h.send(frame(0xEE, 0, 1, b"on an idle stream"))
    h.request(1, "/hello")
    st = h.responses([1])[1]
    assert status(st) == 200 and st["data"] == b"Hello, World!", (st, goaway_name(h))
    h.close()
    check_prompt(srv)


def test_zz_defence_metrics(srv):
    """Runs last: each defence that fired above is counted by kind."""
    text = srv.get("/metrics").body.decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("devloop_http2_defences_total{"):
            kind = line.split('defence="')[1].split('"')[0]
            counts[kind] = float(line.rsplit(" ", 1)[1])
    for kind in ("flood", "continuation", "hpack_bomb", "rapid_reset", "stall", "protocol"):
        assert counts.get(kind, 0) >= 1, (kind, counts)


if __name__ == "__main__":
    harness.main(globals(), app="basic", env=ENV)
