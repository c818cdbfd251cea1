"""Issue 17, item 5: the Host a client sends never becomes an open or broken
redirect, and over HTTP/2 a Host that disagrees with :authority is refused.

- The --https-redirect listener takes Host only as host[:port] (RFC 3986: a
  DNS name or a bracketed IPv6 address, a port 1-65535) and answers 400,
  without a Location, to anything else: evil.com:80:90, [evil.com, a@b,
  spaces, empty, overlong...
- With a canonical host (--canonical-host, DEVLOOP_CANONICAL_HOST), Location
  names it whatever the client said; a bad value stops start-up naming the
  flag and the variable.
- HTTP/2 (RFC 9113 8.3.1): host and :authority must name the same server
  (an empty or overlong :authority included), else the stream gets a 400;
  equal ones are served."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import h2.config
import h2.connection
import h2.events

import harness

CERTS = tempfile.mkdtemp(prefix="devloop-sechost-")
CERT, KEY = harness.make_cert(CERTS, "default", ("localhost",))
TLS_PORT = harness.free_port()
REDIRECT_PORT = harness.free_port()
ARGS = ["--listen", "127.0.0.1:%d" % TLS_PORT, "--tls-cert", CERT, "--tls-key", KEY,
        "--listen", "127.0.0.1:%d" % REDIRECT_PORT, "--https-redirect"]

HOSTILE = ["evil.com:80:90", "[evil.com", "[evil.com]", "a@b", "user@evil.com", "evil.com/x",
           "ev il.com", "evil.com:99999", "evil.com:0", "evil.com:", "[v1.evil]", "evil.com%2f",
           "evil.com,good.example", "a" * 300, "a" * 254 + ":443", ""]


def get(port, host, target="/q?x=1", version="1.1"):
    """One request on its own connection; host None sends no Host."""
    c = harness.Conn(port)
    try:
        head = "GET %s HTTP/%s\r\n" % (target, version)
        if host is not None:
            head += "Host: %s\r\n" % host
        c.send(head + "\r\n")
        return c.response()
    finally:
        c.close()


def test_redirect_refuses_hostile_hosts(srv):
    for host in HOSTILE:
        r = get(REDIRECT_PORT, host)
        assert r.status == 400, (host, r)
        assert r.header("location") is None, (host, r.headers)
        assert r.json()["requestId"] == r.header("x-request-id"), r
    r = get(REDIRECT_PORT, None, version="1.0")  # no Host, no canonical host: nothing to name
    assert r.status == 400 and r.header("location") is None, r
    # OPTIONS * has no path to put after the authority: no Location
    c = harness.Conn(REDIRECT_PORT)
    try:
        c.send("OPTIONS * HTTP/1.1\r\nHost: good.example\r\n\r\n")
        r = c.response()
    finally:
        c.close()
    assert r.status == 400 and r.header("location") is None, (r, r.headers)
    # a sound Host is kept, without the client's port
    for host, want in (("example.test:%d" % REDIRECT_PORT, "example.test"),
                       ("Example.TEST", "Example.TEST"), ("[::1]:80", "[::1]"),
                       ("127.0.0.1", "127.0.0.1"), ("a" * 253, "a" * 253)):
        r = get(REDIRECT_PORT, host)
        assert r.status == 308, (host, r)
        assert r.header("location") == "https://%s:%d/q?x=1" % (want, TLS_PORT), (host, r.headers)


def serve_with(env=None, args=()):
    tls, redir = harness.free_port(), harness.free_port()
    s = harness.Server("http1", env=env, args=[
        "--listen", "127.0.0.1:%d" % tls, "--tls-cert", CERT, "--tls-key", KEY,
        "--listen", "127.0.0.1:%d" % redir, "--https-redirect"] + list(args))
    return s, tls, redir


def test_canonical_host_names_the_location(_):
    for env, args, want in (({"DEVLOOP_CANONICAL_HOST": "www.example.com"}, [], None),
                            ({"DEVLOOP_CANONICAL_HOST": "ignored.example"},
                             ["--canonical-host", "www.example.com:8443"],
                             "https://www.example.com:8443/q?x=1")):
        s, tls, redir = serve_with(env, args)
        try:
            want = want or "https://www.example.com:%d/q?x=1" % tls
            for host, version in (("evil.com", "1.1"), ("localhost:%d" % redir, "1.1"),
                                  ("", "1.1"), (None, "1.0")):
                r = get(redir, host, version=version)
                assert r.status == 308 and r.header("location") == want, (host, r.headers)
            for host in HOSTILE[:-1]:  # still refused, not redirected
                r = get(redir, host)
                assert r.status == 400 and r.header("location") is None, (host, r)
        finally:
            s.stop()


def test_bad_canonical_host_stops_start_up(_):
    app = os.path.join(harness.APPS, "http1")
    bad = ["https://www.example.com", "www.example.com/path", "user@www.example.com",
           "[www.example.com", "www.example.com:0", "www.example.com:99999", " www.example.com",
           "www.example.com\r\nX-Evil: 1", "a" * 254]
    for value in bad:
        for env, args in (({"DEVLOOP_CANONICAL_HOST": value}, []),
                          ({}, ["--canonical-host", value])):
            e = dict(os.environ, DEVLOOP_LOG_DIR="-")
            e.pop("DEVLOOP_CANONICAL_HOST", None)
            e.update(env)
            try:
                p = subprocess.run([harness.BIN, "serve", app, "--listen",
                                    "127.0.0.1:%d" % harness.free_port()] + args,
                                   capture_output=True, text=True, env=e, timeout=10)
            except subprocess.TimeoutExpired:
                raise AssertionError("started with canonical host %r (%s)" % (value, args or env))
            assert p.returncode != 0, (value, p.stderr)
            assert "DEVLOOP_CANONICAL_HOST" in p.stderr and "--canonical-host" in p.stderr, (
                value, p.stderr)
            assert "host[:port]" in p.stderr and "\r" not in p.stderr, (value, p.stderr)
    p = subprocess.run([harness.BIN, "serve", app, "--canonical-host", ""], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2 and "--canonical-host needs" in p.stderr, p.stderr


# ------------------------------------------------------------------ HTTP/2

def h2_status(port, headers):
    """Sends one HTTP/2 request (h2c, prior knowledge); returns its :status,
    or "RST:<code>" when the stream was reset."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
    c.initiate_connection()
    c.send_headers(1, headers, end_stream=True)
    s.sendall(c.data_to_send())
    deadline = time.time() + 5
    try:
        while time.time() < deadline:
            data = s.recv(65536)
            if not data:
                return "closed"
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    return dict(e.headers)[b":status"].decode()
                if isinstance(e, h2.events.StreamReset):
                    return "RST:%d" % e.error_code
                if isinstance(e, h2.events.ConnectionTerminated):
                    return "GOAWAY:%d" % e.error_code
            s.sendall(c.data_to_send())
    finally:
        s.close()
    return None


def test_h2_host_must_match_authority(srv):
    base = [(":method", "GET"), (":scheme", "http"), (":path", "/echo")]
    long_auth = "x" * 250 + ".evil.example"  # 263 bytes: a cut copy was compared before
    refused = [("a.example", "evil.com"), ("a.example", "a.example:8080"),
               ("a.example", "a.example."), ("", "evil.com"), (long_auth, long_auth[:256]),
               ("x" * 400, None), ("evil.com:80:90", None), ("a@b", None)]
    for auth, host in refused:
        hdrs = base + [(":authority", auth)] + ([("host", host)] if host is not None else [])
        st = h2_status(srv.port, hdrs)
        assert st in ("400", "RST:1"), (auth[:40], host and host[:40], st)
    served = [("a.example", "a.example"), ("a.example", "A.Example"), ("a.example", None),
              (None, "b.example"), ("[::1]:8080", "[::1]:8080")]
    for auth, host in served:
        hdrs = base + ([(":authority", auth)] if auth is not None else []) + (
            [("host", host)] if host is not None else [])
        assert h2_status(srv.port, hdrs) == "200", (auth, host)


if __name__ == "__main__":
    try:
        harness.main(globals(), app="http1", args=ARGS)
    finally:
        shutil.rmtree(CERTS, ignore_errors=True)
