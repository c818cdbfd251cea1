"""Bounded resources per connection: output back-pressure on HTTP/1.1 (a
client that pipelines and reads nothing holds a bounded amount of server
memory, and the send timeout closes it while it keeps sending), the cap on
open connections per worker, and response lengths past 4 GiB."""
import os
import socket
import subprocess
import tempfile
import threading
import time

import harness

BIG = os.path.join(tempfile.gettempdir(), "devloop-bigfile-%d" % os.getpid())
BIG_SIZE = (5 << 30) + 12345  # over 4 GiB: a 32-bit length would truncate it
ENV = {"DEVLOOP_SEND_TIMEOUT_MS": "2000", "DEVLOOP_MAX_CONNECTIONS": "40",
       "DEVLOOP_TEST_BIG_FILE": BIG}
SANITIZED = os.environ.get("DEVLOOP_SANITIZED") == "1"


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def test_pipelined_flood_reading_nothing(srv):
    """Thousands of pipelined requests for a 100 KB answer, nothing read: the
    server stops reading at the high-water mark, its memory stays flat, and the
    send timeout (2 s here) ends the connection although requests keep coming."""
    base = harness.rss_kib(srv.pid())
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    req = b"GET /blob/102400 HTTP/1.1\r\nHost: x\r\n\r\n"
    state = {"sent": 0, "error": None, "ended": None}

    def sender():
        t0 = time.time()
        try:
            while time.time() - t0 < 20:
                s.sendall(req * 100)
                state["sent"] += 100
        except OSError as e:
            state["error"] = e
        state["ended"] = time.time() - t0

    t = threading.Thread(target=sender, daemon=True)
    t0 = time.time()
    t.start()
    peak = base
    while t.is_alive() and time.time() - t0 < 20:
        peak = max(peak, harness.rss_kib(srv.pid()))
        time.sleep(0.05)
    t.join(1)
    s.close()
    assert state["error"] is not None, "the connection was never closed: %r" % state
    # closed by the send timeout (2 s) once nothing more was taken in
    assert state["ended"] < 10, state
    if not SANITIZED:
        assert peak - base < 32 * 1024, "RSS grew %d KiB (from %d)" % (peak - base, base)
    # the same flood read slowly gets every answer, in order
    c = srv.conn(timeout=20)
    c.send(req * 200)
    for _ in range(200):
        r = c.response()
        assert r.status == 200 and len(r.body) == 102400, r
    c.close()


def test_slow_steady_reader_gets_the_whole_answer(srv):
    """The send timeout (2 s here) is for a client that takes (next to)
    nothing: one that reads a 5 MB answer steadily at 400 KB/s is never cut
    off, although the kernel takes its bytes in big steps; one that trickles a
    byte every half second is closed (with a reset: the kernel drops the rest)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"GET /blob/5000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    got, t0 = 0, time.time()
    while got < 5000000:
        d = s.recv(20000)
        assert d, "cut off after %d bytes and %.1f s" % (got, time.time() - t0)
        got += len(d)
        time.sleep(len(d) / 400000.0)
    s.close()
    assert time.time() - t0 > 8, "the reader was not slow enough to test anything"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"GET /blob/20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    lport = s.getsockname()[1]

    def server_side_open():  # the client still reads what it has buffered
        out = subprocess.run(["ss", "-tnH", "sport = :%d and dport = :%d" % (srv.port, lport)],
                             capture_output=True, text=True).stdout
        return out.strip() != ""
    t0 = time.time()
    while time.time() - t0 < 15 and server_side_open():
        try:
            s.recv(1)
        except OSError:
            pass
        time.sleep(0.5)
    held = time.time() - t0
    s.close()
    assert held < 12, "a trickling reader held its answer %.1f s" % held


def test_connection_cap(srv):
    held = []
    while len(held) < 41:  # the cap is 40 (one worker)
        c = srv.conn()
        r = c.request("GET", "/hello")
        if r.status == 503:
            c.close()
            break
        assert r.status == 200, r
        held.append(c)
    # connections of earlier tests may still be closing: a few fewer is fine
    assert 36 <= len(held) <= 40, len(held)
    t_cpu = cpu_s(srv.pid())
    refused = 0
    for _ in range(50):
        c = srv.conn()
        r = c.response()
        assert r.status == 503 and r.header("connection") == "close", r
        assert "too many open connections" in r.json()["message"], r
        assert c.closed_by_peer(), "refused connection must close"
        c.close()
        refused += 1
    time.sleep(1)
    # the accept loop does not spin while it sits at the cap
    assert cpu_s(srv.pid()) - t_cpu < 0.5, cpu_s(srv.pid()) - t_cpu
    for c in held:
        c.close()
    time.sleep(0.3)
    r = srv.get("/metrics")
    line = [l for l in r.body.decode().splitlines()
            if l.startswith("devloop_connections_refused_total")]
    assert line and float(line[0].split()[-1]) >= refused, line


def test_fd_limit_below_the_cap_is_said(srv):
    """Past the open-file limit the kernel resets connections before the cap can
    answer 503: a limit the cap cannot fit in is raised, or named at start."""
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    port = harness.free_port()
    p = subprocess.Popen([harness.BIN, "serve", srv.app, "--listen", "127.0.0.1:%d" % port,
                          "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=dict(os.environ, DEVLOOP_LOG_DIR="-", DEVLOOP_MAX_CONNECTIONS="1000"),
                         preexec_fn=low_limit)
    time.sleep(1.5)
    p.terminate()
    out = p.communicate(timeout=20)[0].decode()
    assert "open-file limit 64" in out and "DEVLOOP_MAX_CONNECTIONS 1000" in out, out


def test_output_mark_bounds(srv):
    """DEVLOOP_OUTPUT_HIGH_WATER outside 1 KiB..4 MiB stops start-up, named."""
    for value in ("512", "8388608"):
        p = subprocess.run([harness.BIN, "serve", srv.app, "--listen",
                            "127.0.0.1:%d" % harness.free_port(), "--workers", "1"],
                           capture_output=True, text=True, timeout=20,
                           env=dict(os.environ, DEVLOOP_LOG_DIR="-",
                                    DEVLOOP_OUTPUT_HIGH_WATER=value))
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "DEVLOOP_OUTPUT_HIGH_WATER" in out and value in out, (
            value, p.returncode, out)


def test_body_over_4_gib(srv):
    with open(BIG, "wb") as f:
        f.truncate(BIG_SIZE)
        f.seek(BIG_SIZE - 5)
        f.write(b"tail!")
    try:
        c = srv.conn()
        r = c.request("HEAD", "/bigfile")
        assert int(r.header("content-length")) == BIG_SIZE, r.headers
        c.close()
        p = subprocess.run(["curl", "-sS", "--max-time", "120", "-o", "/dev/null", "-w",
                            "%{http_code} %{size_download}", srv.url("/bigfile")],
                           capture_output=True, text=True)
        assert p.stdout == "200 %d" % BIG_SIZE, (p.stdout, p.stderr)
        p = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-I",
                            srv.url("/bigfile")], capture_output=True, text=True)
        assert ("content-length: %d" % BIG_SIZE) in p.stdout.lower(), p.stdout
    finally:
        os.unlink(BIG)


if __name__ == "__main__":
    harness.main(globals(), app="http1", env=ENV)
