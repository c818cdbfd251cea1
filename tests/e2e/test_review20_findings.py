"""Review of issue 20 (adversarial): reproducers of the findings. Each test
FAILS on the reviewed commit (6c1d949) and should pass once fixed.

    /usr/bin/python3 tests/e2e/test_review20_findings.py
"""
import json
import os
import socket
import tempfile
import threading
import time

import harness
import httpc

EVAL = r"""local api = require "devloop"
api.post("/eval", function(req)
  local f = assert(loadstring(req.raw_body))
  setfenv(f, setmetatable({ api = api }, { __index = getfenv(1) }))
  local ok, a, b = pcall(f)
  if not ok then return { raised = tostring(a) } end
  return { a = a == nil and api.null or a, b = b == nil and api.null or b }
end)
"""


class Raw:
    """A raw upstream: answers every request read on a connection with `answer`."""

    def __init__(self, answer, flood=None):
        self.answer, self.flood, self.accepted = answer, flood, 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.flood:
                while True:
                    c.sendall(self.flood)
            buf = b""
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                while b"\r\n\r\n" in buf:
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    c.sendall(self.answer)
        except OSError:
            pass
        finally:
            c.close()


def ev(srv, code, wait=30):
    c = harness.Conn(srv.port, timeout=wait)
    try:
        r = c.request("POST", "/eval", {"Content-Type": "text/plain"}, code)
    finally:
        c.close()
    assert r.status == 200, r
    return r.json()


def test_body_file_fifo_blocks_worker(srv):
    """HIGH: body_file naming a FIFO: open() runs on the worker's loop
    (bindings/dl_http.c:421, O_RDONLY without O_NONBLOCK) and blocks it until
    a writer comes: the call's timeout is not honoured and every other
    request of the worker hangs."""
    d = tempfile.mkdtemp()
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    up = Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    res = {}

    def bad():
        try:
            res["out"] = ev(srv, "local r,e = api.http.post('http://127.0.0.1:%d/', nil, "
                                 "{body_file=%r, timeout=1000}) return r and r.status, e"
                            % (up.port, fifo), wait=20)
        except Exception as e:  # noqa
            res["out"] = repr(e)
    t = threading.Thread(target=bad, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.time()
    try:
        out = ev(srv, "return 1", wait=5)
        took = time.time() - t0
    except Exception as e:  # noqa
        out, took = repr(e), time.time() - t0
    finally:
        # let the blocked open() return so the server can go on
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader holds it open: nothing waits on it
            pass
        t.join(10)
    assert took < 1.0, "another request waited %.1fs behind a FIFO body_file: %r" % (took, out)
    assert str(res.get("out", "")).find("invalid:") >= 0, res


def test_204_with_content_length(srv):
    """MEDIUM: a 204 (or 304) whose headers carry Content-Length: 4 and four
    bytes after: the bytes are taken as the 204's body and the connection is
    kept (http_client.c on_headers_complete returns 1 only for HEAD).
    RFC 9112 6.3: a 204/304 ends at its headers; the bytes are junk after the
    answer and the connection must not be reused."""
    up = Raw(b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nEVIL")
    out = ev(srv, "local o={} for i=1,3 do local r,e=api.http.get('http://127.0.0.1:%d/') "
                  "o[i]= r and (r.status..':'..r.body) or e end return o" % up.port)
    assert all(x == "204:" for x in out["a"]), out
    assert up.accepted == 3, "the connection was kept after junk (accepted %d)" % up.accepted


def test_receiveuntil_sized_starves_worker(srv):
    """MEDIUM: reader(8192) with a 4096-byte pattern over a fast peer rescans
    the whole buffer on each call (memchr+memcmp, dl_socket.c try_read
    RM_UNTIL, and prefix_tail O(pl^2)): ~2 ms a piece, and other requests of
    the worker wait 250+ ms meanwhile."""
    up = Raw(None, flood=b"a" * 65536)
    res = {}

    def reader():
        res["out"] = ev(srv, "local s=api.socket.tcp() assert(s:connect('127.0.0.1',%d)) "
                             "local rd=s:receiveuntil(string.rep('a',4095)..'b') local n=0 "
                             "for i=1,1000 do local p=rd(8192) n=n+#p end return n" % up.port,
                        wait=60)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)
    worst = 0
    for _ in range(5):
        t0 = time.time()
        ev(srv, "return 1")
        worst = max(worst, time.time() - t0)
        time.sleep(0.1)
    t.join(60)
    assert worst < 0.05, "a trivial request took %.0f ms next to a receiveuntil" % (worst * 1000)


def test_metrics_host_label_unbounded(srv):
    """MEDIUM: the host label is whatever URL the handler called: 3000 origins
    give 2000 series per metric (the global cap), ~24000 lines in /metrics,
    and later origins are dropped. The issue asks for it bounded like the
    route label (e.g. a few hundred, then "other")."""
    ev(srv, "for i=1,2100 do api.http.get('http://127.0.'..math.floor(i/250)..'.'..(i%250+1)"
            "..':1/x',{timeout=300}) end return 1", wait=120)
    text = srv.get("/metrics").body.decode()
    n = sum(1 for l in text.splitlines() if l.startswith("http_client_requests_total{"))
    assert n <= 300, "%d host series in http_client_requests_total" % n


def test_lesser_findings(srv):
    """The review's lower findings, each refused or failing early now: an
    endless run of 1xx answers, a Content-Length over max_body (it waited for
    the timeout), options misspelt or of the wrong type (silently ignored), a
    nested query value (dropped), a JSON body that cannot be encoded (its
    message said nil), a CR in tls.server_name (a tls: error)."""
    flood = Raw(None, flood=b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
    t0 = time.time()
    out = ev(srv, "return select(2, api.http.get('http://127.0.0.1:%d/', {timeout=5000}))"
             % flood.port)
    assert out["a"].startswith("protocol: more than 16 interim"), out
    assert time.time() - t0 < 2, "waited for the timeout"
    big = Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\nx")
    t0 = time.time()
    out = ev(srv, "return select(2, api.http.get('http://127.0.0.1:%d/', {timeout=5000}))"
             % big.port)
    assert out["a"].startswith("too large: response body of 1000000000000"), out
    assert time.time() - t0 < 2, "waited for the timeout"
    # endless trailers count with the headers: too large, not the timeout
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)

    def trailers():
        c, _ = ls.accept()
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
            while True:
                c.sendall(b"X-T: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass
        finally:
            c.close()
    threading.Thread(target=trailers, daemon=True).start()
    t0 = time.time()
    out = ev(srv, "return select(2, api.http.get('http://127.0.0.1:%d/', {timeout=5000}))"
             % ls.getsockname()[1])
    assert out["a"].startswith("too large: response headers (trailers included)"), out
    assert time.time() - t0 < 2, "waited for the timeout"
    ls.close()
    cases = {
        "{timout = 100}": 'invalid: unknown option "timout"',
        "{stream = 'yes'}": "invalid: opts.stream must be true or false",
        "{decode = 1}": "invalid: opts.decode must be true or false",
        "{query = {a = {b = 1}}}": "invalid: query value of a",
        "{json = {x = 0/0}}": "invalid: opts.json cannot be encoded: ",
        "{tls = {server_name = 'a\\r\\nb'}}": "invalid: tls.server_name holds",
    }
    for opts, want in cases.items():
        out = ev(srv, "return select(2, api.http.get('https://127.0.0.1:1/', %s))" % opts)
        assert out["a"].startswith(want), (opts, out)
        assert "nil" not in out["a"][len(want):], (opts, out)


if __name__ == "__main__":
    harness.main(globals(), app=harness.new_app({"routes/r.lua": EVAL}))
