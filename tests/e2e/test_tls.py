"""TLS listeners: HTTP/1.1 and h2 by ALPN on one port, protocol versions and
ciphers, session resumption by ticket, SNI between two certificates, HSTS,
the HTTPS redirect listener, certificate errors at start-up, SIGHUP reload
without dropping connections, and clients that speak garbage, plain HTTP or
stall mid-handshake. Certificates are made here with openssl."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness
from harness import curl

CERTS = tempfile.mkdtemp(prefix="devloop-tls-")
CERT, KEY = harness.make_cert(CERTS, "default", ("localhost",))
OTHER_CERT, OTHER_KEY = harness.make_cert(CERTS, "other", ("other.test", "*.wild.test"))
# the files the server reads, replaced by the reload test
LIVE_CERT, LIVE_KEY = os.path.join(CERTS, "live.crt"), os.path.join(CERTS, "live.key")
shutil.copy(CERT, LIVE_CERT)
shutil.copy(KEY, LIVE_KEY)
TLS_PORT = harness.free_port()
REDIRECT_PORT = harness.free_port()
ARGS = ["--listen", "127.0.0.1:%d" % TLS_PORT, "--tls-cert", LIVE_CERT, "--tls-key", LIVE_KEY,
        "--tls-cert", OTHER_CERT, "--tls-key", OTHER_KEY,
        "--listen", "127.0.0.1:%d" % REDIRECT_PORT, "--https-redirect"]
ENV = {"DEVLOOP_HEADER_TIMEOUT_MS": "1500"}
BASE = "https://127.0.0.1:%d" % TLS_PORT


def client_ctx(alpn=None, maxv=None, minv=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maxv:
        ctx.maximum_version = maxv
    if minv:
        ctx.minimum_version = minv
    return ctx


def tls_conn(ctx, host="localhost", session=None, port=TLS_PORT):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname=host, session=session)


def http_get(s, path="/json"):
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before the answer: %r" % data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += s.recv(65536)
    return head.decode(), body


def cert_cn(s):
    der = s.getpeercert(binary_form=True)
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                       capture_output=True)
    return p.stdout.decode().strip()


def assert_alive_tls():
    t0 = time.time()
    st, h, body = curl("-k", "--http2", BASE + "/hello")
    assert st == 200 and body == b"Hello, World!", (st, body)
    assert time.time() - t0 < 2


# ------------------------------------------------------------------ protocols

def test_http11_and_h2_on_one_port(srv):
    st, h, body = curl("-k", "--http1.1", "-w", "%{http_version}", BASE + "/json")
    assert st == 200 and body.startswith(b'{"message":"Hello, World!"}'), body
    assert body.endswith(b"1.1"), body
    assert h["strict-transport-security"] == "max-age=31536000", h
    st, h, body = curl("-k", "--http2", "-w", "%{http_version}", BASE + "/json")
    assert st == 200 and body.endswith(b"2"), body
    assert h["strict-transport-security"] == "max-age=31536000", h
    assert h["x-content-type-options"] == "nosniff" and h["x-request-id"], h
    # plain listeners carry no HSTS
    st, h, _ = curl(srv.url("/json"))
    assert "strict-transport-security" not in h, h


def test_alpn_choices(srv):
    for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"),
                        (["http/1.1"], "http/1.1"), (["spdy/3", "foo"], None), (None, None)):
        s = tls_conn(client_ctx(alpn=offer))
        assert s.selected_alpn_protocol() == want, (offer, s.selected_alpn_protocol())
        if want != "h2":  # no ALPN, or http/1.1: HTTP/1.1 is spoken
            head, body = http_get(s)
            assert head.startswith("HTTP/1.1 200"), head
            assert body == b'{"message":"Hello, World!"}'
        s.close()


def test_tls_versions_and_ciphers(srv):
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        s = tls_conn(client_ctx(maxv=v, minv=v))
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[v]
        name = s.cipher()[0]
        if v == ssl.TLSVersion.TLSv1_2:
            assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
        head, _ = http_get(s)
        assert head.startswith("HTTP/1.1 200"), head
        s.close()
    # TLS 1.1 and a CBC-only TLS 1.2 client are refused
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % TLS_PORT, "-tls1_1",
                        "-cipher", "DEFAULT:@SECLEVEL=0"], input=b"", capture_output=True,
                       timeout=10)
    assert p.returncode != 0, p.stdout
    # (an ECDHE-ECDSA CBC suite: one this EC certificate could use, were it allowed)
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % TLS_PORT, "-tls1_2",
                        "-cipher", "ECDHE-ECDSA-AES128-SHA256"], input=b"", capture_output=True,
                       timeout=10)
    assert p.returncode != 0, p.stdout
    assert_alive_tls()


def test_session_resumption(srv):
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(maxv=v, minv=v)
        s = tls_conn(ctx)
        http_get(s)  # TLS 1.3 tickets arrive after the handshake
        sess = s.session
        assert not s.session_reused
        s.close()
        assert sess is not None and sess.has_ticket, v
        s2 = tls_conn(ctx, session=sess)
        http_get(s2)
        assert s2.session_reused, "session not resumed with %s" % v
        s2.close()


def test_ticket_keys_rotate(srv):
    # keys rotate every 3 s (counted in whole seconds from the server's start):
    # a ticket is good for one more period, then refused; checks keep 1 s+ margins
    port = harness.free_port()
    start = time.time()
    s2 = harness.Server("basic", env={"DEVLOOP_TLS_TICKET_ROTATE_S": "3"},
                        args=["--listen", "127.0.0.1:%d" % port, "--tls-cert", CERT,
                              "--tls-key", KEY])
    try:
        ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2)
        s = tls_conn(ctx, port=port)
        http_get(s)
        first = s.session
        s.close()
        time.sleep(max(0, start + 4.5 - time.time()))
        s = tls_conn(ctx, session=first, port=port)
        http_get(s)
        assert s.session_reused, "a ticket of the previous key was refused"
        s.close()
        time.sleep(max(0, start + 10 - time.time()))
        s = tls_conn(ctx, session=first, port=port)
        http_get(s)
        assert not s.session_reused, "a ticket two rotations old was accepted"
        s.close()
    finally:
        s2.stop()


def test_sni_picks_the_certificate(srv):
    for host, want in (("localhost", "CN = localhost"), ("other.test", "CN = other.test"),
                       ("a.wild.test", "CN = other.test"), ("b.a.wild.test", "CN = localhost"),
                       ("unknown.example", "CN = localhost")):
        s = tls_conn(client_ctx(), host=host)
        assert want in cert_cn(s), (host, cert_cn(s))
        head, _ = http_get(s)
        assert head.startswith("HTTP/1.1 200")
        s.close()
    st, _, body = curl("-k", "--http2", "--resolve", "other.test:%d:127.0.0.1" % TLS_PORT,
                       "https://other.test:%d/json" % TLS_PORT)
    assert st == 200, body


def test_h1_and_h2_clients_at_once(srv):
    errors = []

    def run(proto):
        try:
            for i in range(20):
                st, _, body = curl("-k", proto, BASE + "/query?i=%d" % i)
                assert st == 200 and ('"i":"%d"' % i).encode() in body, body
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(p,)) for p in ("--http1.1", "--http2") * 2]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


# ------------------------------------------------------------ bad clients

def alert_watch(ctx):
    """Records the TLS alerts the client receives (Python's private message
    hook: a ragged EOF is not always an error to the ssl module)."""
    seen = []

    def cb(conn, direction, version, content_type, msg_type, data):
        if direction == "read" and int(content_type) == 21:  # alert
            seen.append(bytes(data))
    ctx._msg_callback = cb
    return seen


def test_close_notify_ends_the_connection(srv):
    """RFC 9112 9.8: the server closes a TLS connection with close_notify, so a
    client can tell a complete answer from a cut one (no ragged EOF): after an
    answer with Connection: close, and when an idle connection times out."""
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(maxv=ver, minv=ver)
        alerts = alert_watch(ctx)
        raw = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        s.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)  # SSLEOFError here: closed without close_notify
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"World!\"}"), data
        assert b"\x01\x00" in alerts, alerts  # warning, close_notify
        s.close()
        # a handshake and no request: closed at the head timeout, with the alert
        ctx = client_ctx(maxv=ver, minv=ver)
        alerts = alert_watch(ctx)
        raw = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=6)
        s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        try:
            assert s.recv(1) == b""
        except ssl.SSLEOFError:
            pass
        assert b"\x01\x00" in alerts, alerts
        s.close()


def test_https_absolute_form_over_tls(srv):
    s = tls_conn(client_ctx(alpn=["http/1.1"]))
    s.sendall(b"GET https://localhost/json HTTP/1.1\r\nHost: other\r\n\r\n")
    data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200"), data
    s.close()


def test_plain_http_on_tls_port(srv):
    c = harness.Conn(TLS_PORT)
    r = c.request("GET", "/json")
    assert r.status == 400, r
    assert b"TLS port" in r.body and r.json()["requestId"], r
    assert c.closed_by_peer()
    assert_alive_tls()


def test_handshake_garbage(srv):
    for junk in (os.urandom(2000), b"\x16\x03\x01\x00\x05hello" + os.urandom(50), b"\x00" * 64):
        s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
        s.sendall(junk)
        t0 = time.time()
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        assert time.time() - t0 < 3, "garbage kept the connection open"
        s.close()
    assert_alive_tls()


def test_stalled_handshake_is_closed(srv):
    # nothing at all, and half a ClientHello: both closed within the header timeout (1.5 s)
    socks = []
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=8)
    socks.append(s)
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=8)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    socks.append(s)
    t0 = time.time()
    assert_alive_tls()  # served meanwhile
    for s in socks:
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        assert time.time() - t0 < 5, "a stalled handshake outlived the header timeout"
        s.close()


# ------------------------------------------------------ redirect and HSTS

def test_https_redirect_listener(srv):
    c = harness.Conn(REDIRECT_PORT)
    c.send("GET /query?x=1 HTTP/1.1\r\nHost: example.test:%d\r\n\r\n" % REDIRECT_PORT)
    r = c.response()
    assert r.status == 308, r
    assert r.header("location") == "https://example.test:%d/query?x=1" % TLS_PORT, r.headers
    assert r.json()["requestId"] == r.header("x-request-id")
    c.send("GET / HTTP/1.1\r\nHost: bad\"host\r\n\r\n")
    r = c.response()
    assert r.status == 400, r
    c.close()


def test_hsts_is_configurable(srv):
    port = harness.free_port()
    for args, env, want in ((["--hsts", "off"], {}, None),
                            ([], {"DEVLOOP_HSTS": "max-age=60; includeSubDomains"},
                             "max-age=60; includeSubDomains")):
        s2 = harness.Server("basic", env=env, args=["--listen", "127.0.0.1:%d" % port,
                                                    "--tls-cert", CERT, "--tls-key", KEY] + args)
        try:
            st, h, _ = curl("-k", "https://127.0.0.1:%d/json" % port)
            assert st == 200 and h.get("strict-transport-security") == want, h
        finally:
            s2.stop()


# ------------------------------------------------------------ certificates

def run_serve(*args):
    p = subprocess.run([harness.BIN, "serve", os.path.join(harness.APPS, "basic"), "--listen",
                        "127.0.0.1:%d" % harness.free_port()] + list(args),
                       capture_output=True, timeout=20)
    return p.returncode, p.stderr.decode() + p.stdout.decode()


def test_bad_certificates_stop_startup(srv):
    code, out = run_serve("--tls-cert", CERT, "--tls-key", OTHER_KEY)
    assert code == 1 and OTHER_KEY in out and "does not match" in out, out
    missing = os.path.join(CERTS, "missing.pem")
    code, out = run_serve("--tls-cert", missing, "--tls-key", KEY)
    assert code == 1 and missing in out and "No such file" in out, out
    notpem = os.path.join(CERTS, "notpem.crt")
    with open(notpem, "w") as f:
        f.write("not a certificate\n")
    code, out = run_serve("--tls-cert", notpem, "--tls-key", KEY)
    assert code == 1 and notpem in out, out
    code, out = run_serve("--tls-cert", CERT)
    assert code == 2 and "--tls-key" in out, out
    code, out = run_serve("--tls-key", KEY)
    assert code == 2 and "--tls-cert" in out, out
    p = subprocess.run([harness.BIN, "serve", os.path.join(harness.APPS, "basic"), "--tls-cert",
                        CERT, "--tls-key", KEY], capture_output=True, timeout=20)
    assert p.returncode == 2 and b"must follow the --listen" in p.stderr, p.stderr


def test_sighup_reloads_certificates(srv):
    ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_3)
    old = tls_conn(ctx)
    http_get(old)
    before = cert_cn(old)
    assert "CN = localhost" in before
    new_cert, new_key = harness.make_cert(CERTS, "renewed", ("localhost", "renewed.test"))
    shutil.copy(new_cert, LIVE_CERT)
    shutil.copy(new_key, LIVE_KEY)
    os.kill(srv.pid(), signal.SIGHUP)
    deadline = time.time() + 5
    while True:
        s = tls_conn(ctx)
        der_new = s.getpeercert(binary_form=True)
        s.close()
        if der_new != old.getpeercert(binary_form=True):
            break
        assert time.time() < deadline, "the new certificate was not served after SIGHUP"
        time.sleep(0.1)
    # the connection opened before the reload goes on
    head, body = http_get(old)
    assert head.startswith("HTTP/1.1 200") and body == b'{"message":"Hello, World!"}'
    old.close()
    # a broken file at reload keeps the loaded certificate
    with open(LIVE_KEY, "w") as f:
        f.write("broken\n")
    os.kill(srv.pid(), signal.SIGHUP)
    time.sleep(0.5)
    s = tls_conn(ctx)
    assert s.getpeercert(binary_form=True) == der_new
    s.close()
    assert "certificates not reloaded" in srv.output()
    shutil.copy(new_key, LIVE_KEY)


def test_zz_failure_metrics(srv):
    # runs last: the bad clients above are counted by reason
    text = srv.get("/metrics").body.decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("devloop_tls_failed_handshakes_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    assert counts.get("plain_http", 0) >= 1, counts
    assert counts.get("protocol", 0) >= 3, counts  # garbage, TLS 1.1, CBC-only
    assert counts.get("timeout", 0) >= 2, counts  # the stalled handshakes


ALLOWED_ERRORS = ["certificates not reloaded"]

harness.main(globals(), app="basic", env=ENV, args=ARGS)
