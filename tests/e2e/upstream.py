"""
upstream.py - a loopback HTTP/1.1 upstream for the tests of api.http (issue
20): raw sockets and one thread per connection, so that every answer can be
as slow, broken or hostile as a test needs. Not a mock of devloop: a server
the client under test talks to over real TCP (and TLS).

    up = Upstream()                       # plain HTTP on 127.0.0.1:<free port>
    up = Upstream(tls=(cert, key))        # HTTPS
    up = Upstream(idle_close_ms=100)      # closes kept connections idle 100 ms
    up = Upstream(drop_reused=True)       # closes a kept connection when it brings a request
    up = Upstream(host="::1")             # on IPv6
    up.url("/echo"), up.port, up.accepted (connections accepted), up.open (open now),
    up.requests (requests read), up.stop()

Endpoints (the query string tunes them):
    /echo                 method, path, query, headers ([name, value] in order), body as JSON
    /slow?head=MS&mid=MS  waits before the headers, then between two halves of the body
    /chunked?n=N          a chunked body of N pieces "piece-i;", a trailer X-Trailer
    /close                a body without length, ended by closing (Connection: close)
    /gzip, /deflate       a JSON body, compressed when Accept-Encoding asks for it
                          (?code=304: that status; ?empty=1: an empty body, still marked)
    /redirect?code=C&to=URL   a redirect to URL (absolute, relative or any scheme)
    /chain?n=N&code=C     N redirects (relative Locations) ending at /echo
    /loop?code=C          redirects to itself forever
    /huge?n=BYTES         a body of BYTES 'x' with Content-Length
    /endless              a chunked body that never ends
    /reset                headers promise 1 MB, 1000 bytes, then an RST (SO_LINGER 0)
    /interim              100 Continue and 103 Early Hints before the 200
    /status?code=C        an empty answer with that status (204 and 304 without a body)
    /badstatus            a malformed status line
    /badheader            a header name with a space in it
    /smuggle              two responses in one write
    /cookies              Set-Cookie twice, X-Multi twice, X-Empty empty
    /count                {"accepted": N}
    /clte, /twocl         Content-Length with Transfer-Encoding; two Content-Lengths
    /bigheader?n=N        a header of N bytes; /manyheaders?n=N: N headers
    /repeats?n=N          X-Rep first and last, N other headers between
    /http10               an HTTP/1.0 answer without keep-alive
    /badgzip              Content-Encoding: gzip over bytes that are not
    /status999, /switch   a status out of range; a 101 nobody asked for
    /drop                 closes the connection without answering
    /early                413 before the request body is read, then a close
Any HEAD gets the GET answer's headers and no body.

blackhole_connect() gives a port whose accept queue is full (a connect to it
hangs), BlackholeAccept a listener that accepts and never answers.
make_pki(dir) makes a CA, a server certificate for localhost and 127.0.0.1
signed by it, a self-signed one and one for another name (openssl).
"""
import gzip
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import zlib


class Upstream:
    def __init__(self, tls=None, idle_close_ms=None, drop_reused=False, host="127.0.0.1"):
        self.idle_close_ms = idle_close_ms
        self.drop_reused = drop_reused
        self.requests = 0
        self.paths = []  # the targets of the requests read, in order
        self.accepted = 0
        self.open = 0  # connections currently open
        self.lock = threading.Lock()
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls[0], tls[1])
        self.scheme = "https" if tls else "http"
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path=""):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d%s" % (self.scheme, h, self.port, path)

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopped:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    # --------------------------------------------------------- one connection

    def _serve(self, s):
        try:
            if self.ctx:
                s.settimeout(10)
                s = self.ctx.wrap_socket(s, server_side=True)
            s.settimeout(None)
            buf = b""
            first = first_req = True
            while True:
                if not first and self.idle_close_ms is not None:
                    s.settimeout(self.idle_close_ms / 1000.0)
                first = False
                req, buf = self._read_request(s, buf)
                s.settimeout(None)
                if req is None:
                    return
                with self.lock:
                    self.requests += 1
                    self.paths.append(req["target"])
                if self.drop_reused and not first_req:
                    return  # a kept connection dies as it is used again
                first_req = False
                if not self._answer(s, req):
                    return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            with self.lock:
                self.open -= 1
            try:
                s.close()
            except OSError:
                pass

    def _read_request(self, s, buf):
        while b"\r\n\r\n" not in buf:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return None, b""
            if not d:
                return None, b""
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for l in lines[1:]:
            k, v = l.split(":", 1)
            headers.append([k, v.strip()])
        n = 0
        for k, v in headers:
            if k.lower() == "content-length":
                n = int(v)
        if target.startswith("/early"):
            n = 0  # answered before the body is read (then closed)
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                return None, b""
            buf += d
        body, buf = buf[:n], buf[n:]
        path, _, qs = target.partition("?")
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True).items()}
        return {"method": method, "target": target, "path": path, "q": q, "qs": qs,
                "headers": headers, "body": body}, buf

    @staticmethod
    def _hdr(req, name):
        for k, v in req["headers"]:
            if k.lower() == name:
                return v
        return None

    def _send(self, s, req, status, headers, body=b"", reason="X"):
        """A whole answer with Content-Length (none for HEAD, 1xx, 204, 304)."""
        out = "HTTP/1.1 %d %s\r\n" % (status, reason)
        no_body = req["method"] == "HEAD" or status in (204, 304) or status < 200
        if status not in (204, 304) and status >= 200:
            headers = headers + [("Content-Length", str(len(body)))]
        for k, v in headers:
            out += "%s: %s\r\n" % (k, v)
        out = out.encode("latin-1") + b"\r\n"
        if not no_body:
            out += body
        s.sendall(out)

    def _answer(self, s, req):
        """Answers one request; False when the connection is to be closed."""
        p, q, m = req["path"], req["q"], req["method"]
        head = m == "HEAD"
        if m == "CONNECT":  # as a proxy does: the connection is a tunnel now
            s.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            time.sleep(5)
            return False
        if p == "/" or p.startswith("/echo"):
            body = json.dumps({"method": m, "path": p, "query": req["qs"],
                               "headers": req["headers"],
                               "body": req["body"].decode("latin-1")}).encode()
            self._send(s, req, 200, [("Content-Type", "application/json")], body)
        elif p == "/slow":
            time.sleep(int(q.get("head", "0")) / 1000.0)
            body = b"a" * 100 + b"b" * 100
            hdr = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" \
                % len(body)
            s.sendall(hdr.encode())
            if head:
                return True
            s.sendall(body[:100])
            time.sleep(int(q.get("mid", "0")) / 1000.0)
            s.sendall(body[100:])
        elif p == "/chunked":
            n = int(q.get("n", "5"))
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            if head:
                return True
            for i in range(n):
                piece = ("piece-%d;" % i).encode()
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.005)
            s.sendall(b"0\r\nX-Trailer: t\r\n\r\n")
        elif p == "/close":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            if not head:
                s.sendall(b"close-delimited ")
                time.sleep(0.02)
                s.sendall(b"body")
            return False
        elif p in ("/gzip", "/deflate"):
            body = json.dumps({"compressed": p[1:], "pad": "z" * 2000}).encode()
            ae = (self._hdr(req, "accept-encoding") or "").lower()
            headers = [("Content-Type", "application/json"), ("Vary", "Accept-Encoding")]
            if p == "/gzip" and "gzip" in ae:
                body = gzip.compress(body)
                headers.append(("Content-Encoding", "gzip"))
            elif p == "/deflate" and "deflate" in ae:
                body = zlib.compress(body)
                headers.append(("Content-Encoding", "deflate"))
            if q.get("empty"):
                body = b""
            self._send(s, req, int(q.get("code", "200")), headers, body)
        elif p == "/redirect":
            self._send(s, req, int(q.get("code", "302")), [("Location", q.get("to", "/echo"))],
                       b"moved")
        elif p == "/chain":
            n = int(q.get("n", "1"))
            code = q.get("code", "302")
            to = "/echo?from=chain" if n <= 1 else "chain?n=%d&code=%s" % (n - 1, code)
            self._send(s, req, int(code), [("Location", to)], b"")
        elif p == "/loop":
            self._send(s, req, int(q.get("code", "302")), [("Location", req["target"])], b"")
        elif p == "/huge":
            n = int(q.get("n", str(1 << 20)))
            hdr = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" \
                  "Content-Length: %d\r\n\r\n" % n
            s.sendall(hdr.encode())
            if head:
                return True
            left = n
            block = b"x" * 65536
            while left > 0:
                k = min(left, len(block))
                s.sendall(block[:k])
                left -= k
        elif p == "/endless":
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = b"%x\r\n%s\r\n" % (65536, b"e" * 65536)
            while True:
                s.sendall(block)  # ends when the client goes (OSError)
        elif p == "/reset":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"r" * 1000)
            time.sleep(0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif p == "/interim":
            s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                      b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            time.sleep(0.02)
            self._send(s, req, 200, [("Content-Type", "text/plain"), ("X-Final", "yes")],
                       b"final")
        elif p == "/status":
            code = int(q.get("code", "200"))
            self._send(s, req, code, [("X-Status", str(code))], b"")
        elif p == "/badstatus":
            s.sendall(b"HTTP/1.1 2x0 Fine\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif p == "/badheader":
            s.sendall(b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif p == "/smuggle":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Smuggled: yes\r\n\r\nsecond")
        elif p == "/clte":
            # both framings: a desync attempt (RFC 9112 6.3 forbids it)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n")
            return False
        elif p == "/twocl":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
            return False
        elif p == "/bigheader":
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * int(q.get("n", "70000")) +
                      b"\r\nContent-Length: 2\r\n\r\nok")
        elif p == "/manyheaders":
            s.sendall(b"HTTP/1.1 200 OK\r\n" +
                      b"".join(b"X-H%d: v\r\n" % i for i in range(int(q.get("n", "300")))) +
                      b"Content-Length: 2\r\n\r\nok")
        elif p == "/repeats":
            # one name at both ends of N others: joined however long the list
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Rep: first\r\n" +
                      b"".join(b"X-H%d: v\r\n" % i for i in range(int(q.get("n", "3")))) +
                      b"x-rep: last\r\nContent-Length: 2\r\n\r\nok")
        elif p == "/http10":
            # HTTP/1.0 without keep-alive: the connection is not to be reused
            # (it stays open here, so only the version says so)
            s.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nok10")
            time.sleep(1)
            return False
        elif p == "/badgzip":
            self._send(s, req, 200, [("Content-Encoding", "gzip")], b"\x1f\x8b not gzip at all")
        elif p == "/status999":
            s.sendall(b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n")
            return False
        elif p == "/switch":
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
            time.sleep(0.5)
            return False
        elif p == "/cookies":
            self._send(s, req, 200, [("Set-Cookie", "a=1; Path=/"),
                                     ("Set-Cookie", "b=2, c; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
                                     ("X-Multi", "one"), ("X-Empty", ""), ("X-Multi", "two"),
                                     ("Content-Type", "text/plain")], b"cookies")
        elif p == "/count":
            self._send(s, req, 200, [("Content-Type", "application/json")],
                       json.dumps({"accepted": self.accepted}).encode())
        elif p == "/early":
            self._send(s, req, 413, [("Connection", "close")], b"too big")
            time.sleep(0.2)
            return False
        elif p == "/drop":
            return False
        else:
            self._send(s, req, 404, [("Content-Type", "text/plain")], b"no such endpoint")
        conn = (self._hdr(req, "connection") or "").lower()
        return conn != "close"


# ------------------------------------------------------------------ blackholes

class BlackholeConnect:
    """A port whose accept queue is full: SYNs to it are dropped, so a connect
    hangs until the client's timeout."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(8):  # backlog 0 still queues one or two: fill them
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except (BlockingIOError, OSError):
                pass
            self.fillers.append(c)
        time.sleep(0.1)

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


class BlackholeAccept:
    """A listener that accepts and never answers (nor closes)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)


# ------------------------------------------------------------------------- PKI

def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_pki(d):
    """Writes into d: ca.crt/ca.key, server.crt/.key (localhost, 127.0.0.1,
    signed by the CA), self.crt/.key (self-signed, same names), wrong.crt/.key
    (signed by the CA for wrong.example only). Returns a dict of paths."""
    p = lambda n: os.path.join(d, n)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2",
             "-subj", "/CN=devloop test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def signed(name, san):
        _openssl("req", *ec, "-keyout", p(name + ".key"), "-out", p(name + ".csr"),
                 "-subj", "/CN=" + name)
        with open(p(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n" % san)
        _openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.crt"), "-CAkey",
                 p("ca.key"), "-CAcreateserial", "-out", p(name + ".crt"), "-days", "2",
                 "-extfile", p(name + ".ext"))

    signed("server", "DNS:localhost,IP:127.0.0.1")
    signed("wrong", "DNS:wrong.example")
    _openssl("req", "-x509", *ec, "-keyout", p("self.key"), "-out", p("self.crt"), "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    return {n: (p(n + ".crt"), p(n + ".key")) for n in ("ca", "server", "wrong", "self")}
