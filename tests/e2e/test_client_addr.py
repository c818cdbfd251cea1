"""req.ip, req.scheme and req.host end to end (docs/client_addr.md): real
sockets, IPv4 and IPv6, HTTP/1.1, HTTP/2 (h2c and h2 over TLS). Without
DEVLOOP_TRUSTED_PROXIES a client forging X-Forwarded-For or Forwarded
changes nothing; with the loopback trusted the fields decide, the right-most
untrusted address winning over what a client forged on the left; Forwarded
is preferred over X-Forwarded-For; a malformed list stops `devloop serve`
naming the variable; the access log records the computed address."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import harness
from harness import Server, curl

APP = harness.new_app({
    "routes/who.lua": """
local api = require "devloop"
api.get("/who", function(req)
  return { ip = req.ip, scheme = req.scheme, host = req.host or "(none)" }
end)
-- an in-process request from a handler: loopback, its fields never a proxy's
api.get("/inner", function(req)
  local res = api.client.request("GET", "/who", { headers = { ["X-Forwarded-For"] = "6.6.6.6" } })
  return { inner = res.body }
end)
""",
})
WORK = tempfile.mkdtemp(prefix="devloop-ip-")


def who(port, fields=(), family=socket.AF_INET, addr="127.0.0.1", host="h.example"):
    """GET /who with the header lines fields ((name, value), repeats kept)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((addr, port))
    c = harness.Conn.__new__(harness.Conn)
    c.sock, c.buf = s, b""
    lines = ["GET /who HTTP/1.1", "Host: %s" % host] + ["%s: %s" % f for f in fields]
    try:
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        r = c.response()
        assert r.status == 200, r
        return r.json()
    finally:
        c.close()


FORGED = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
          ("X-Forwarded-Host", "evil.example"), ("Forwarded", "for=5.6.7.8;proto=https;host=x")]


def test_untrusted_peer_forgeries_ignored(_):
    srv = Server(APP)
    try:
        assert who(srv.port) == {"ip": "127.0.0.1", "scheme": "http", "host": "h.example"}
        assert who(srv.port, FORGED) == {"ip": "127.0.0.1", "scheme": "http",
                                         "host": "h.example"}
        # HTTP/1.0 without Host: no req.host
        c = srv.conn()
        try:
            c.send(b"GET /who HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n")
            j = c.response().json()
        finally:
            c.close()
        assert j == {"ip": "127.0.0.1", "scheme": "http", "host": "(none)"}, j
    finally:
        srv.stop()
    # a list that does not hold the peer is the same
    srv = Server(APP, env={"DEVLOOP_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"})
    try:
        assert who(srv.port, FORGED)["ip"] == "127.0.0.1"
    finally:
        srv.stop()


def test_trusted_proxy_fields_decide(_):
    srv = Server(APP, env={"DEVLOOP_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"})
    try:
        j = who(srv.port, [("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-Proto", "https"),
                           ("X-Forwarded-Host", "API.example:8443")])
        assert j == {"ip": "203.0.113.5", "scheme": "https", "host": "api.example:8443"}, j
        # the client forged entries on the left; the proxy appended what it saw
        j = who(srv.port, [("X-Forwarded-For", "6.6.6.6, 7.7.7.7, 203.0.113.5")])
        assert j["ip"] == "203.0.113.5", j
        # through a second trusted proxy; the header split over two lines
        j = who(srv.port, [("X-Forwarded-For", "6.6.6.6, 203.0.113.5"),
                           ("X-Forwarded-For", "10.1.2.3")])
        assert j["ip"] == "203.0.113.5", j
        # ports dropped, IPv6 in brackets
        j = who(srv.port, [("X-Forwarded-For", "[2001:db8::9]:5555")])
        assert j["ip"] == "2001:db8::9", j
        # a malformed element stops the walk at the last good hop
        j = who(srv.port, [("X-Forwarded-For", "203.0.113.5, not-an-ip, 10.0.0.4")])
        assert j["ip"] == "10.0.0.4", j
        j = who(srv.port, [("X-Forwarded-For", "unknown")])
        assert j["ip"] == "127.0.0.1", j
        # Forwarded is preferred over X-Forwarded-For
        j = who(srv.port, [("X-Forwarded-For", "6.6.6.6"),
                           ("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https;'
                                         'host="shop.example"')])
        assert j == {"ip": "2001:db8:cafe::17", "scheme": "https", "host": "shop.example"}, j
        j = who(srv.port, [("Forwarded", "for=6.6.6.6, for=198.51.100.7;proto=http, "
                                         "for=10.0.0.2;proto=https")])
        assert j["ip"] == "198.51.100.7" and j["scheme"] == "http", j
        j = who(srv.port, [("Forwarded", "for=198.51.100.7, for=_hidden, for=10.0.0.2")])
        assert j["ip"] == "10.0.0.2", j
        # an invalid forwarded host or proto: the connection's
        j = who(srv.port, [("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-Host", "a b"),
                           ("X-Forwarded-Proto", "gopher")])
        assert j == {"ip": "203.0.113.5", "scheme": "http", "host": "h.example"}, j
        # 2000 addresses (under the 32 KiB header bound): the cap of 32 hops applies
        many = ", ".join("10.0.%d.%d" % (i // 256, i % 256) for i in range(2000))
        j = who(srv.port, [("X-Forwarded-For", many)])
        k = 2000 - 32
        assert j["ip"] == "10.0.%d.%d" % (k // 256, k % 256), j
        # in-process requests are from the loopback and never read the fields
        r = srv.get("/inner")
        assert r.status == 200, r
        j = json.loads(r.json()["inner"])
        assert j == {"ip": "127.0.0.1", "scheme": "http", "host": "localhost"}, j
    finally:
        srv.stop()


def test_ipv6_listener(_):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        port6 = probe.getsockname()[1]
        probe.close()
    except OSError:
        print("# no IPv6 loopback: skipped")
        return
    args = ["--listen", "[::1]:%d" % port6]
    srv = Server(APP, args=args)
    try:
        j = who(port6, FORGED, family=socket.AF_INET6, addr="::1")
        assert j["ip"] == "::1", j
    finally:
        srv.stop()
    srv = Server(APP, env={"DEVLOOP_TRUSTED_PROXIES": "::1"}, args=args)
    try:
        j = who(port6, [("X-Forwarded-For", "6.6.6.6, 198.51.100.1")], family=socket.AF_INET6,
                addr="::1")
        assert j["ip"] == "198.51.100.1", j
        # the IPv4 listener's peer is not in an IPv6-only list
        assert who(srv.port, [("X-Forwarded-For", "198.51.100.1")])["ip"] == "127.0.0.1"
    finally:
        srv.stop()


def test_http2_and_tls(_):
    cert, key = harness.make_cert(WORK, "server", ("localhost",))
    tls_port = harness.free_port()
    srv = Server(APP, env={"DEVLOOP_TRUSTED_PROXIES": "127.0.0.1"},
                 args=["--listen", "127.0.0.1:%d" % tls_port, "--tls-cert", cert,
                       "--tls-key", key])
    try:
        st, _, body = curl("--http2-prior-knowledge", "-H", "X-Forwarded-For: 6.6.6.6, 192.0.2.8",
                           srv.url("/who"))
        j = json.loads(body)
        assert st == 200 and j["ip"] == "192.0.2.8" and j["scheme"] == "http", j
        assert j["host"] == "127.0.0.1:%d" % srv.port, j  # :authority
        base = "https://127.0.0.1:%d/who" % tls_port
        for ver in ("--http2", "--http1.1"):
            st, _, body = curl("-k", ver, base)
            j = json.loads(body)
            assert st == 200 and j == {"ip": "127.0.0.1", "scheme": "https",
                                       "host": "127.0.0.1:%d" % tls_port}, (ver, j)
            # a trusted proxy's proto overrides the connection's
            st, _, body = curl("-k", ver, "-H", "Forwarded: for=192.0.2.9;proto=http", base)
            j = json.loads(body)
            assert j["ip"] == "192.0.2.9" and j["scheme"] == "http", (ver, j)
    finally:
        srv.stop()
    srv = Server(APP)
    try:
        st, _, body = curl("--http2-prior-knowledge", "-H", "X-Forwarded-For: 192.0.2.8",
                           srv.url("/who"))
        assert json.loads(body)["ip"] == "127.0.0.1", body
    finally:
        srv.stop()


def test_malformed_list_stops_serve(_):
    for value, entry in (("127.0.0.1, 10.0.0.300/8", "10.0.0.300/8"),
                         ("10.0.0.1/8", "10.0.0.1/8"), ("::1,,fd00::/8", ""),
                         ("localhost", "localhost")):
        env = dict(os.environ, DEVLOOP_LOG_DIR="-", DEVLOOP_TRUSTED_PROXIES=value)
        p = subprocess.run([harness.BIN, "serve", APP, "--listen",
                            "127.0.0.1:%d" % harness.free_port(), "--pid-file",
                            os.path.join(WORK, "never.pid"),
                            "--no-watch"], capture_output=True, text=True, timeout=30, env=env)
        assert p.returncode != 0, (value, p.returncode, p.stderr)
        assert "DEVLOOP_TRUSTED_PROXIES" in p.stderr and 'entry "%s"' % entry in p.stderr, \
            (value, p.stderr)
    # `devloop config` shows the list
    env = dict(os.environ, DEVLOOP_LOG_DIR="-", DEVLOOP_TRUSTED_PROXIES="127.0.0.1, fd00::/8")
    p = subprocess.run([harness.BIN, "config", APP, "--json"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["trusted_proxies"]["value"] == "127.0.0.1, fd00::/8", rows["trusted_proxies"]
    assert rows["trusted_proxies"]["source"] == "env DEVLOOP_TRUSTED_PROXIES"


def test_access_log_records_the_client(_):
    logs = os.path.join(WORK, "logs")
    srv = Server(APP, env={"DEVLOOP_TRUSTED_PROXIES": "127.0.0.1", "DEVLOOP_ACCESS_LOG": "1",
                           "DEVLOOP_LOG_DIR": logs})
    try:
        who(srv.port, [("X-Forwarded-For", "6.6.6.6, 198.51.100.77"), ("X-Request-Id", "ip-1")])
        who(srv.port, [("X-Request-Id", "ip-2")])
    finally:
        srv.stop()
    recs = []
    with open(os.path.join(logs, "combined.log")) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    byid = {r.get("requestId"): r for r in recs if r.get("message") == "request"}
    assert byid["ip-1"]["ip"] == "198.51.100.77", byid.get("ip-1")
    assert byid["ip-2"]["ip"] == "127.0.0.1", byid.get("ip-2")


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(APP, ignore_errors=True)
        shutil.rmtree(WORK, ignore_errors=True)
