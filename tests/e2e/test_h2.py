"""HTTP/2: h2c with prior knowledge on the plain listener and h2 by ALPN on the
TLS listener give what HTTP/1.1 gives (every bench route, README, HTTP behaviour:
compression, MessagePack, request ids, error JSON, metrics), with real
clients: curl, nghttp, Node's http2 (100 concurrent streams on a session), the
Python h2 library (GOAWAY on a graceful stop), and 50 MB each way."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import h2.config
import h2.connection
import h2.events

import harness
from harness import curl

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = tempfile.mkdtemp(prefix="devloop-h2-")
CERT, KEY = harness.make_cert(WORK, "server", ("localhost",))
TLS_PORT = harness.free_port()
ARGS = ["--listen", "127.0.0.1:%d" % TLS_PORT, "--tls-cert", CERT, "--tls-key", KEY]
BASE = "https://127.0.0.1:%d" % TLS_PORT
MB = 1024 * 1024


def both(srv):
    """The two HTTP/2 ways in: curl arguments and base URL."""
    return ((["--http2-prior-knowledge"], srv.url()), (["-k", "--http2"], BASE))


def versions(args, url):
    st, h, body = curl(*args, "-w", "\n%{http_version}", url)
    body, _, ver = body.rpartition(b"\n")
    return st, h, body, ver.decode()


# ------------------------------------------------------------ every route

BENCH_CASES = harness.BENCH_REQUESTS


def test_every_bench_route_on_h2c_and_h2(srv):
    app = os.path.join(WORK, "bench")
    shutil.copytree(os.path.join(harness.SRC, "examples", "bench"), app,
                    ignore=shutil.ignore_patterns("data", "logs"))
    port = harness.free_port()
    bench = harness.Server(app, args=["--listen", "127.0.0.1:%d" % port, "--tls-cert", CERT,
                                      "--tls-key", KEY])
    try:
        drop = {"date", "x-request-id", "strict-transport-security", "connection"}
        for method, path, headers, body in BENCH_CASES:
            args = ["-X", method] if method != "HEAD" else ["-I"]
            for k, v in headers.items():
                args += ["-H", "%s: %s" % (k, v)]
            if body is not None:
                args += ["--data-binary", body]
            st1, h1, b1, v1 = versions(["--http1.1"] + args, bench.url(path))
            assert v1 == "1.1"
            for extra, url in ((["--http2-prior-knowledge"], bench.url(path)),
                               (["-k", "--http2"], "https://127.0.0.1:%d%s" % (port, path))):
                st2, h2_, b2, v2 = versions(extra + args, url)
                assert v2 == "2", (path, v2)
                assert st2 == st1, (method, path, st1, st2)
                hs1 = {k: v for k, v in h1.items() if k not in drop}
                hs2 = {k: v for k, v in h2_.items() if k not in drop}
                assert hs1 == hs2, (method, path, hs1, hs2)
                assert h2_["x-request-id"], h2_
                if st1 >= 400:
                    j1, j2 = json.loads(b1), json.loads(b2)
                    assert j2.pop("requestId") == h2_["x-request-id"]
                    j1.pop("requestId")
                    assert j1 == j2, (method, path)
                elif method != "HEAD":  # curl -I prints the head as the body
                    assert b1 == b2, (method, path)
        print("# %d requests: h2c and TLS h2 equal HTTP/1.1 (status, headers, body)"
              % len(BENCH_CASES))
    finally:
        bench.stop()


# ------------------------------------------------------ README, HTTP behaviour

def test_contract_on_h2(srv):
    for extra, base in both(srv):
        st, h, body, _ = versions(extra + ["-H", "X-Request-Id: trace-h2.1"], base + "/json")
        assert st == 200 and h["x-request-id"] == "trace-h2.1", h
        # req.http_version is "2" (it said "1.0")
        st, h, body, _ = versions(extra, base + "/version")
        assert st == 200 and body == b"2", (st, body)
        harness_headers = {"x-content-type-options": "nosniff",
                           "cache-control": "no-cache, no-store, must-revalidate"}
        for k, v in harness_headers.items():
            assert h[k] == v, h
        # gzip over 1 KB, Vary
        st, h, body, _ = versions(extra + ["-H", "Accept-Encoding: gzip"], base + "/big")
        assert st == 200 and h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
        import gzip
        assert len(gzip.decompress(body)) > 1024
        # MessagePack both ways
        import msgpack
        p = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}"] + extra +
                           ["-H", "Accept: application/msgpack",
                            "-H", "Content-Type: application/msgpack",
                            "--data-binary", "@-", base + "/echo"],
                           input=msgpack.packb({"a": [1, 2, 3]}), capture_output=True)
        out, _, code = p.stdout.rpartition(b"\n")
        assert code == b"200", p.stdout
        assert msgpack.unpackb(out, raw=True)[b"body"] == {b"a": [1, 2, 3]}
        # errors: 404, 405 with Allow, 413, bad JSON 400, handler error 500
        st, h, body, _ = versions(extra, base + "/no/such")
        assert st == 404 and json.loads(body)["requestId"] == h["x-request-id"]
        st, h, body, _ = versions(extra + ["-X", "DELETE"], base + "/hello")
        assert st == 405 and "GET" in h["allow"], h
        st, h, body, _ = versions(extra + ["--data-binary", "x" * 200], base + "/limited")
        assert st == 413, (st, body)
        st, h, body, _ = versions(extra + ["-H", "Content-Type: application/json",
                                           "--data-binary", "{bad"], base + "/echo")
        assert st == 400 and b"malformed request body" in body, body
        st, h, body, _ = versions(extra, base + "/error")
        assert st == 500 and json.loads(body)["requestId"] == h["x-request-id"]
        st, h, body, _ = versions(extra + ["-H", "X-Big: " + "a" * 40000], base + "/json")
        assert st == 431 and json.loads(body)["requestId"] == h["x-request-id"], (st, body)
        # HEAD: headers only
        st, h, body, _ = versions(extra + ["-I"], base + "/json")
        assert st == 200 and h["content-length"] == "27", h


def test_request_bodies_without_length(srv):
    # curl -T - streams stdin in DATA frames with no content-length
    for extra, base in both(srv):
        p = subprocess.run(["curl", "-sS", "-o", "-"] + extra +
                           ["-H", "Content-Type: application/json", "-T", "-", "-X", "POST",
                            base + "/echo"], input=json.dumps({"k": "v" * 5000}).encode(),
                           capture_output=True)
        assert json.loads(p.stdout)["body"] == {"k": "v" * 5000}, p.stdout[:200]
        p = subprocess.run(["curl", "-sS", "-o", "-", "-w", "%{http_code}"] + extra +
                           ["-T", "-", "-X", "POST", base + "/limited"], input=b"y" * 5000,
                           capture_output=True)
        assert p.stdout.endswith(b"413"), p.stdout


def test_expect_100_continue(srv):
    # an interim 100 before the body, then the answer; other expectations: 417
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    base = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
            (":path", "/echo"), ("content-type", "application/json")]
    conn.send_headers(1, base + [("expect", "100-continue")])
    conn.send_headers(3, base + [("expect", "teapot")])
    sock.sendall(conn.data_to_send())
    statuses, bodies, ended = {}, {}, set()
    while len(ended) < 2:
        data = sock.recv(65536)
        assert data, "closed"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.InformationalResponseReceived):
                statuses.setdefault(ev.stream_id, []).append(dict(ev.headers)[b":status"])
                conn.send_data(1, b'{"a":1}', end_stream=True)
            elif isinstance(ev, h2.events.ResponseReceived):
                statuses.setdefault(ev.stream_id, []).append(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.add(ev.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert statuses[1] == [b"100", b"200"], statuses
    assert json.loads(bodies[1])["body"] == {"a": 1}, bodies
    assert statuses[3] == [b"417"], statuses


def test_metrics_protocol_label(srv):
    def count(proto):
        for line in srv.get("/metrics").body.decode().splitlines():
            if line.startswith('http_requests_total{method="GET",route="/small",'
                               'status_code="200",protocol="%s"}' % proto):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
    h2_before, h1_before = count("HTTP/2"), count("HTTP/1.1")
    for extra, base in both(srv):  # two HTTP/2 requests
        curl(*extra, base + "/small")
    curl("--http1.1", srv.url("/small"))
    assert count("HTTP/2") == h2_before + 2 and count("HTTP/1.1") == h1_before + 1


def test_upgrade_h2c_is_answered_over_http11(srv):
    # curl --http2 on http:// asks for Upgrade: h2c; the answer stays HTTP/1.1
    st, h, body, ver = versions(["--http2"], srv.url("/json"))
    assert st == 200 and ver == "1.1" and body == b'{"message":"Hello, World!"}', (ver, body)


# ------------------------------------------------------------ real clients

def test_nghttp(srv):
    for url in (srv.url("/json"), BASE + "/json"):
        p = subprocess.run(["nghttp", "-nv", url], capture_output=True, timeout=20)
        out = p.stdout.decode()
        assert p.returncode == 0, out + p.stderr.decode()
        assert "recv HEADERS frame" in out and ":status: 200" in out and "END_STREAM" in out, out


def test_node_100_streams_one_session(srv):
    for url in (srv.url(), BASE):
        p = subprocess.run(["node", os.path.join(HERE, "h2_streams.js"), url, "100"],
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert b"ok 100 streams on 1 session" in p.stdout, p.stdout


def test_50mb_up_and_down(srv):
    app = os.path.join(WORK, "uploads")
    shutil.copytree(os.path.join(harness.APPS, "uploads"), app,
                    ignore=shutil.ignore_patterns("data", "logs"))
    port = harness.free_port()
    up = harness.Server(app, args=["--listen", "127.0.0.1:%d" % port, "--tls-cert", CERT,
                                   "--tls-key", KEY])
    try:
        path = os.path.join(WORK, "big.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(50 * MB))
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        for extra, base in ((["--http2-prior-knowledge"], up.url()),
                            (["-k", "--http2"], "https://127.0.0.1:%d" % port)):
            st, h, body, ver = versions(extra + ["-F", "file=@" + path], base + "/files")
            assert st == 201 and ver == "2", (st, body)
            meta = json.loads(body)
            assert meta["size"] == 50 * MB and meta["sha256"] == digest, meta
            out = os.path.join(WORK, "down.bin")
            p = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code} %{http_version}"] +
                               extra + [base + "/files/" + meta["id"]], capture_output=True)
            assert p.stdout == b"200 2", p.stdout + p.stderr
            assert hashlib.sha256(open(out, "rb").read()).hexdigest() == digest
            # and back over TLS HTTP/1.1: file bodies through the TLS write path
            p = subprocess.run(["curl", "-sS", "-k", "--http1.1", "-o", out, "-w", "%{http_code}",
                                "https://127.0.0.1:%d/files/%s" % (port, meta["id"])],
                               capture_output=True)
            assert p.stdout == b"200", p.stdout + p.stderr
            assert hashlib.sha256(open(out, "rb").read()).hexdigest() == digest
            # a range over h2
            st, h, body, _ = versions(extra + ["-r", "1000-1999"], base + "/files/" + meta["id"])
            assert st == 206 and body == open(path, "rb").read()[1000:2000]
    finally:
        up.stop()


# --------------------------------------------------------- graceful stop

def read_frame(sock, buf):
    """(type, flags, stream, payload, rest of buf), or None at EOF."""
    while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    n = int.from_bytes(buf[:3], "big")
    return (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n],
            buf[9 + n:])


def test_preface_in_pieces(srv):
    # the h2c preface and the first request one byte per write
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                          (":path", "/json")], end_stream=True)
    for b in conn.data_to_send():
        sock.send(bytes([b]))
        time.sleep(0.0005)
    buf, body = b"", b""
    while True:
        fr = read_frame(sock, buf)
        assert fr is not None, "closed before the answer"
        ftype, flags, sid, payload, buf = fr
        if ftype == 0 and sid == 1:
            body += payload
            if flags & 1:
                break
    assert body == b'{"message":"Hello, World!"}', body
    sock.close()


def test_no_http2_option(srv):
    # the flag, and the environment in words (a typo'd value would warn)
    for args, env in ((["--no-http2"], {}), ([], {"DEVLOOP_HTTP2": "off"})):
        tport = harness.free_port()
        s2 = harness.Server("basic", env=env, args=args + ["--listen", "127.0.0.1:%d" % tport,
                                                           "--tls-cert", CERT, "--tls-key", KEY])
        try:
            st, h, body, ver = versions(["-k", "--http2"], "https://127.0.0.1:%d/json" % tport)
            assert st == 200 and ver == "1.1", (args, env, ver)
            p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", s2.url("/json")],
                               capture_output=True)
            assert p.returncode != 0  # the preface is not HTTP/1.1
        finally:
            s2.stop()


def test_goaway_on_graceful_stop_finishes_streams(srv):
    # raw frames: python-h2 refuses frames after a GOAWAY, which RFC 9113 allows
    port = harness.free_port()
    s2 = harness.Server("basic", args=["--listen", "127.0.0.1:%d" % port])
    try:
        sock = socket.create_connection(("127.0.0.1", s2.port), timeout=10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                (":path", "/sleep/800")]
        conn.send_headers(1, hdrs, end_stream=True)
        conn.send_headers(3, hdrs[:3] + [(":path", "/sleep/600")], end_stream=True)
        conn.ping(b"inflight")  # its ACK means both HEADERS were taken
        sock.sendall(conn.data_to_send())
        goaway, ended, bodies, buf, signalled = None, set(), {}, b"", False
        while True:
            fr = read_frame(sock, buf)
            if fr is None:
                break
            ftype, flags, sid, payload, buf = fr
            if ftype == 6 and flags & 1 and not signalled:
                s2.proc.send_signal(signal.SIGTERM)
                signalled = True
            if ftype == 7:
                goaway = (int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big"))
            elif ftype == 0:
                bodies[sid] = bodies.get(sid, b"") + payload
            if ftype in (0, 1) and flags & 1:
                ended.add(sid)
        assert goaway == (3, 0), goaway  # last stream 3, NO_ERROR
        assert ended == {1, 3}, (ended, bodies)
        assert json.loads(bodies[1])["slept"] == 800, bodies
        assert json.loads(bodies[3])["slept"] == 600, bodies
        assert s2.proc.wait(10) == 0
    finally:
        s2.stop()


ALLOWED_ERRORS = ["boom in handler"]  # /error on purpose

harness.main(globals(), app="basic", args=ARGS)
shutil.rmtree(WORK, ignore_errors=True)
