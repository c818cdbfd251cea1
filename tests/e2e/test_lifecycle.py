"""The command line and the process lifecycle: check, version, bad arguments,
graceful SIGTERM, the grace bound, multi-worker serving, and no fd or memory
growth over thousands of connections."""
import os
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import BIN, Server


def run(*args, env=None):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=30, env=env)


def test_version(_):
    p = run("version")
    assert p.returncode == 0 and p.stdout.startswith("devloop "), p


def test_check_ok(_):
    for app in ("basic",):
        p = run("check", os.path.join(harness.APPS, app))
        assert p.returncode == 0, p
    p = run("check", os.path.join(harness.SRC, "examples", "bench"))
    assert p.returncode == 0, p


def test_check_reports_file_and_line(_):
    cases = {
        "broken-syntax": "routes/bad.lua:5:",
        "broken-runtime": "routes/boom.lua:4:",
        "broken-conflict": "routes/dup.lua:3:",
        "broken-global": "routes/glob.lua:2:",
    }
    for app, where in cases.items():
        p = run("check", os.path.join(harness.APPS, app))
        assert p.returncode == 1, (app, p)
        assert where in p.stderr, (app, p.stderr)
    p = run("check", os.path.join(harness.APPS, "broken-conflict"))
    assert "/a/:id" in p.stderr and "/a/:other" in p.stderr, p.stderr
    p = run("check", os.path.join(harness.APPS, "broken-global"))
    assert "counter" in p.stderr, p.stderr


def test_check_missing_dir(_):
    p = run("check", "/nonexistent/app")
    assert p.returncode == 1 and "/nonexistent/app" in p.stderr, p


def test_serve_broken_app_exits_1(_):
    p = run("serve", os.path.join(harness.APPS, "broken-syntax"), "--listen",
            "127.0.0.1:%d" % harness.free_port())
    assert p.returncode == 1 and "routes/bad.lua:5:" in p.stderr, p


def test_bad_arguments(_):
    for args in (["serve"], ["serve", "x", "--workers", "zero"], ["serve", "x", "--bogus"],
                 ["frobnicate"], ["serve", "x", "--log-level", "loud"]):
        p = run(*args)
        assert p.returncode == 2 and p.stderr, (args, p)
    p = run("serve", os.path.join(harness.APPS, "basic"), "--listen", "not-an-address")
    assert p.returncode == 1 and "not-an-address" in p.stderr, p


def test_port_in_use(_):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    p = run("serve", os.path.join(harness.APPS, "basic"), "--listen", "127.0.0.1:%d" % port)
    s.close()
    assert p.returncode == 1 and "in use" in p.stderr, p


def test_graceful_sigterm(_):
    srv = Server("basic", workers=2)
    res = {}

    def slow():
        res["r"] = srv.get("/sleep/800")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    idle = srv.conn()
    assert idle.request("GET", "/hello").status == 200
    srv.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert res["r"].status == 200 and res["r"].json() == {"slept": 800}, res
    assert idle.closed_by_peer(2), "idle keep-alive connections close at SIGTERM"
    assert srv.proc.wait(10) == 0, srv.output()
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        raise AssertionError("still accepting after stop")
    except OSError:
        pass


def test_grace_period_bounds_stop(_):
    srv = Server("basic", env={"DEVLOOP_SHUTDOWN_GRACE_MS": "500"})
    c = srv.conn()
    c.send("GET /sleep/20000 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0, srv.output()
    assert time.time() - t0 < 3, time.time() - t0
    assert c.closed_by_peer(2)


def test_stuck_worker_does_not_hold_the_stop(_):
    """A handler in a loop never yields, so its worker never sees its grace
    timer: SIGTERM used to leave the process running for good (only a second
    signal ended it). Past the grace period + 2 s it exits 1 naming the worker."""
    srv = Server("basic", env={"DEVLOOP_SHUTDOWN_GRACE_MS": "500"})
    try:
        c = srv.conn()
        c.send("GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 1, srv.output()
        assert time.time() - t0 < 8, time.time() - t0
        assert "worker 0 did not stop within the grace period (500 ms)" in srv.output()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def test_sigint_stops(_):
    srv = Server("basic")
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(10) == 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_no_fd_or_memory_leak(_):
    srv = Server("basic", workers=2)

    def churn(n):
        def worker(k):
            for i in range(k):
                c = srv.conn()
                path = ("/json", "/big", "/sleep/1", "/nope")[i % 4]
                c.request("GET", path)
                if i % 3 == 0:
                    c.send("GET /hel")  # cut mid-request
                c.close()
        ts = [threading.Thread(target=worker, args=(n // 8,)) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    churn(2000)
    time.sleep(0.5)
    fds0, rss0 = fd_count(srv.pid()), harness.rss_kib(srv.pid())
    churn(6000)
    time.sleep(0.5)
    fds1, rss1 = fd_count(srv.pid()), harness.rss_kib(srv.pid())
    print("# fds %d -> %d, RSS %d -> %d KiB" % (fds0, fds1, rss0, rss1))
    assert fds1 <= fds0 + 2, (fds0, fds1)
    if not os.environ.get("DEVLOOP_SANITIZED"):
        assert rss1 - rss0 < 4096, (rss0, rss1)
    srv.stop()


def test_idle_memory_one_worker(_):
    srv = Server(os.path.join(harness.SRC, "examples", "bench"), workers=1)
    rss = harness.rss_kib(srv.pid())
    print("# bench app, one worker, idle RSS %d KiB" % rss)
    if not os.environ.get("DEVLOOP_SANITIZED"):
        assert rss < 16 * 1024, rss
    srv.stop()


if __name__ == "__main__":
    harness.main(globals(), app=None)
