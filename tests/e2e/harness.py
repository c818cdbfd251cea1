"""
harness.py - end-to-end test harness: starts `devloop serve` on a free port,
waits until it answers, talks to it with raw sockets and curl, and stops it
with SIGTERM expecting exit 0 (lwan's testsuite.py, Test::Nginx).

A test file defines functions named test_*(srv) and ends with
`harness.main(globals(), app=..., env=...)`; it prints TAP lines and the
plain closing line "N passed, N failed".
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("DEVLOOP_SRC", os.path.abspath(os.path.join(HERE, "..", "..")))
BIN = os.environ.get("DEVLOOP_BIN", os.path.join(SRC, "build", "devloop"))
APPS = os.path.join(HERE, "apps")


# One request per behaviour of examples/bench (README, HTTP behaviour), for
# tests that compare two ways in: (method, path, headers, body).
BENCH_REQUESTS = [
    ("GET", "/hello", {}, None),
    ("GET", "/json", {}, None),
    ("GET", "/features?limit=100", {}, None),
    ("GET", "/features?limit=100", {"Accept-Encoding": "gzip"}, None),
    ("GET", "/features?limit=100", {"Accept": "application/msgpack"}, None),
    ("GET", "/features?limit=3", {"Accept-Encoding": "deflate;q=0.5, gzip;q=0.1"}, None),
    ("GET", "/cached/features", {}, None),
    ("GET", "/cached/features", {"Accept-Encoding": "gzip"}, None),
    ("POST", "/batch", {"Content-Type": "application/json"},
     '{"operations": [%s]}' % ", ".join('{"id": %d, "type": "echo", "params": {"n": %d}}'
                                        % (i, i) for i in range(20))),
    ("GET", "/nope", {}, None),
    ("DELETE", "/hello", {}, None),
    ("HEAD", "/json", {}, None),
]


def new_app(files, prefix="devloop-app-"):
    """A scratch app folder holding files ({relative path: text})."""
    d = tempfile.mkdtemp(prefix=prefix)
    for name, text in files.items():
        path = os.path.join(d, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return d


def run_devloop(*args, timeout=30):
    """Runs the devloop program (no log files), returning the CompletedProcess."""
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, DEVLOOP_LOG_DIR="-"))


def check_fails(files, where, message, prefix="devloop-app-"):
    """`devloop check` of an app made of files exits 1 and its stderr holds
    APP/where message (where "": APP/message; None: message alone)."""
    app = new_app(files, prefix)
    try:
        p = run_devloop("check", app)
        assert p.returncode == 1, (message, p.returncode, p.stdout, p.stderr)
        if where is None:
            want = message
        else:
            want = "%s/%s" % (app, "%s %s" % (where, message) if where else message)
        assert want in p.stderr, (where, message, p.stderr)
        return p
    finally:
        shutil.rmtree(app)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status, self.reason, self.headers, self.body, self.version = (
            status, reason, headers, body, version)

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.headers, self.body[:200])


class Conn:
    """A raw HTTP/1.x client connection: exact bytes out, parsed responses in."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head=False):
        status_line = self._line().decode("latin-1")
        m = re.match(r"HTTP/(1\.[01]) (\d{3}) ?(.*)", status_line)
        if not m:
            raise AssertionError("bad status line %r" % status_line)
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers.append((k.strip(), v.strip()))
        resp = Response(int(m.group(2)), m.group(3), headers, b"", m.group(1))
        if head or resp.status in (204, 304) or resp.status < 200:
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te and "chunked" in te.lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                body += self._exact(size)
                self._line()
            resp.body = body
        elif cl is not None:
            resp.body = self._exact(int(cl))
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method, path, headers=None, body=None, version="1.1", head=None):
        lines = ["%s %s HTTP/%s" % (method, path, version), "Host: localhost"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            lines.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        self.send(data)
        return self.response(head=(method == "HEAD") if head is None else head)

    def closed_by_peer(self, wait=5.0):
        """True when the server closes the connection within wait seconds."""
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Server:
    def __init__(self, app, env=None, workers=1, args=()):
        self.app = app if os.path.isabs(app) else os.path.join(APPS, app)
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="devloop-e2e-", suffix=".log", delete=False)
        e = dict(os.environ)
        e.pop("REDIS_URL", None)
        # each server gets its own logs and database unless the test says
        # otherwise, so servers running in parallel on one app never share them
        self.scratch = tempfile.mkdtemp(prefix="devloop-srv-")
        e["DEVLOOP_LOG_DIR"] = os.path.join(self.scratch, "logs")
        e["DEVLOOP_DB"] = os.path.join(self.scratch, "devloop.db")
        e.update(env or {})
        cmd = [BIN, "serve", self.app, "--listen", "127.0.0.1:%d" % self.port,
               "--workers", str(workers)] + list(args)
        # the apps here are shared by test files running at once: a second
        # instance of an app needs a pid file of its own (server.c)
        if self.app.startswith(APPS + os.sep) and "--pid-file" not in args:
            cmd += ["--pid-file", os.path.join(self.scratch, "devloop.pid")]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        self.wait_ready()

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("devloop exited early (%s):\n%s" % (self.proc.returncode, self.output()))
            try:
                c = Conn(self.port, timeout=1)
                c.request("GET", "/__ready__")
                c.close()
                return
            except (OSError, EOFError, AssertionError):
                time.sleep(0.05)
        raise AssertionError("devloop did not answer within %ss" % timeout)

    def conn(self, timeout=10):
        return Conn(self.port, timeout=timeout)

    def get(self, path, headers=None):
        c = self.conn()
        try:
            return c.request("GET", path, headers)
        finally:
            c.close()

    def request(self, method, path, headers=None, body=None):
        c = self.conn()
        try:
            return c.request(method, path, headers, body)
        finally:
            c.close()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def alive(self):
        r = self.get("/hello")
        ok = r.body == b"Hello, World!" if r.status == 200 else r.status == 404
        assert ok, "server no longer answers: %r" % r

    def output(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def pid(self):
        return self.proc.pid

    def stop(self, expect_code=0, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("devloop did not stop within %ss of SIGTERM" % timeout)
        if expect_code is not None:
            assert code == expect_code, "devloop exited %s:\n%s" % (code, self.output())
        shutil.rmtree(self.scratch, ignore_errors=True)
        return code


def rss_kib(pid):
    """A process's resident memory (VmRSS), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def edit_file(path, old, new):
    """Rewrites a file in place with old replaced by new (hot reload tests)."""
    with open(path) as f:
        text = f.read()
    assert old in text, (path, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def curl(*args, input=None):
    """Runs curl; returns (status, headers dict lower-case, body bytes)."""
    hf = tempfile.NamedTemporaryFile(delete=False)
    hf.close()
    cmd = ["curl", "-sS", "--max-time", "20", "-D", hf.name, "-o", "-"] + list(args)
    p = subprocess.run(cmd, input=input, capture_output=True)
    with open(hf.name, "rb") as f:
        raw = f.read().decode("latin-1")
    os.unlink(hf.name)
    if p.returncode != 0:
        raise AssertionError("curl %s failed: %s" % (args, p.stderr.decode()))
    blocks = [b for b in raw.split("\r\n\r\n") if b.strip()]
    last = blocks[-1].split("\r\n")
    status = int(last[0].split()[1])
    headers = {}
    for line in last[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, p.stdout


def make_cert(directory, name, dns=("localhost",), days=30):
    """A self-signed EC certificate and key (PEM) for the DNS names (and
    127.0.0.1) in directory; returns (cert_path, key_path)."""
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    san = ",".join(["DNS:%s" % d for d in dns] + ["IP:127.0.0.1"])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", str(days), "-subj", "/CN=%s" % dns[0], "-addext",
                    "subjectAltName=" + san], check=True, capture_output=True)
    return cert, key


def check_std_headers(r, api=True):
    """Headers every response carries (README, HTTP behaviour)."""
    rid = r.header("x-request-id")
    assert rid, "no X-Request-Id in %r" % r
    assert r.header("x-content-type-options") == "nosniff", r
    assert r.header("date"), r
    if r.status not in (204, 304) and r.status >= 200:
        assert r.header("content-length") is not None or r.header("transfer-encoding"), r
    if api:
        assert r.header("cache-control") == "no-cache, no-store, must-revalidate", r


def main(tests, app="basic", env=None, workers=1, args=()):
    names = sorted(k for k, v in tests.items() if k.startswith("test_") and callable(v))
    only = sys.argv[1:]
    if only:
        names = [n for n in names if n in only or n[5:] in only]
    srv = Server(app, env=env, workers=workers, args=args) if app else None
    passed = failed = 0
    print("1..%d" % len(names))
    try:
        for i, name in enumerate(names, 1):
            t0 = time.time()
            try:
                tests[name](srv)
                if srv and srv.proc.poll() is not None:
                    raise AssertionError("devloop died (exit %s)" % srv.proc.returncode)
                if srv:
                    srv.alive()
                print("ok %d - %s (%.2fs)" % (i, name, time.time() - t0))
                passed += 1
            except Exception:
                failed += 1
                print("not ok %d - %s" % (i, name))
                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                if srv and srv.proc.poll() is not None:
                    print("# devloop is gone; restarting it for the next test")
                    print("# " + srv.output()[-3000:].replace("\n", "\n# "))
                    srv = Server(app, env=env, workers=workers, args=args)
            sys.stdout.flush()
        if srv is None:
            print("%d passed, %d failed" % (passed, failed))
            sys.exit(1 if failed else 0)
        try:
            srv.stop()
        except AssertionError as e:
            failed += 1
            print("not ok - clean stop: %s" % e)
        out = srv.output()
        bad = [l for l in out.splitlines() if " error " in l and "EXPECTED" not in l]
        unexpected = [l for l in bad if not tests.get("ALLOWED_ERRORS") or
                      not any(a in l for a in tests["ALLOWED_ERRORS"])]
        if unexpected:
            failed += 1
            print("not ok - unexpected errors in the server log:")
            for l in unexpected[:20]:
                print("#   " + l)
        if "AddressSanitizer" in out or "runtime error:" in out:
            failed += 1
            print("not ok - sanitizer report in the server log:")
            print("# " + out[-4000:].replace("\n", "\n# "))
    finally:
        if srv and srv.proc.poll() is None:
            srv.proc.kill()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


class RedisServer:
    """A real redis-server on a free loopback port, stopped by stop()."""

    def __init__(self, password=None, port=None):
        self.port = port or free_port()
        self.password = password
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if password:
            cmd += ["--requirepass", password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cli("PING").strip() in ("PONG", "NOAUTH Authentication required."):
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not start on port %d" % self.port)

    def url(self):
        auth = (":%s@" % self.password) if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def cli(self, *args):
        cmd = ["redis-cli", "-p", str(self.port)]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
