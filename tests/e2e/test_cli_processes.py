"""Processes and the command line (issue 18, "no silent failures"):
- a listening address belongs to one process: a second `devloop serve` on it
  (or on an address that overlaps it, or one a non-devloop process holds
  with SO_REUSEPORT) exits 1 naming the address and the holder, and touches
  nothing of the first; port 0 gives every worker the same kernel port;
- the pid file belongs to the instance holding it: a second instance of the
  app is refused, a stale file (kill -9) is replaced with a log line, and
  `devloop reload` names the pid and app it signalled and refuses a stale
  file (whose pid may be another program's) instead of signalling it;
- every command refuses an option it does not know (exit 2, naming it), and
  `--` ends the options."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness

WORK = tempfile.mkdtemp(prefix="devloop-procs-")
BIN = harness.BIN


def make_app(name):
    """An app whose /who answers its name."""
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "routes"))
    with open(os.path.join(d, "routes", "who.lua"), "w") as f:
        f.write('local api = require "devloop"\n'
                'api.get("/who", function() return "%s" end)\n' % name)
    return d


class Proc:
    """`devloop serve APP ARGS...` until its log says it serves."""

    def __init__(self, app, *args, workers=2):
        self.log = tempfile.NamedTemporaryFile(prefix="devloop-procs-", suffix=".log",
                                               delete=False)
        env = dict(os.environ, DEVLOOP_LOG_DIR="-")
        self.proc = subprocess.Popen([BIN, "serve", app, "--workers", str(workers)] + list(args),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while " serving " not in self.output():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("devloop did not start (%s):\n%s"
                                     % (self.proc.poll(), self.output()))
            time.sleep(0.05)

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def run(*args, timeout=20, cwd=None):
    """A devloop command that must end by itself (a second server that
    started instead of failing is killed at the timeout and fails the test)."""
    env = dict(os.environ, DEVLOOP_LOG_DIR="-")
    try:
        p = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                           env=env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("devloop %s did not exit: it started (%s)" % (args, e.stderr))
    return p.returncode, p.stdout, p.stderr


def who(port, n=8):
    return [harness.curl("http://127.0.0.1:%d/who" % port)[2].decode() for _ in range(n)]


def read(path):
    with open(path) as f:
        return f.read()


def test_second_instance_on_the_same_port_fails(_):
    a, b = make_app("first"), make_app("second")
    port = harness.free_port()
    first = Proc(a, "--listen", "127.0.0.1:%d" % port)
    try:
        other_pid = os.path.join(WORK, "second.pid")
        rc, out, err = run("serve", b, "--listen", "127.0.0.1:%d" % port, "--workers", "2",
                           "--pid-file", other_pid)
        assert rc == 1, (rc, err)
        assert ("cannot listen on 127.0.0.1:%d: address in use by another devloop (pid %d)"
                % (port, first.pid)) in err, err
        # nothing made, the first untouched: its pid file and all the traffic
        assert not os.path.exists(other_pid) and not os.path.exists(os.path.join(b, "data"))
        assert read(os.path.join(a, "data", "devloop.pid")).strip() == str(first.pid)
        assert set(who(port)) == {"first"}
        # localhost names the same address
        rc, out, err = run("serve", b, "--listen", "localhost:%d" % port)
        assert rc == 1 and "localhost:%d: address in use by another devloop" % port in err, err
    finally:
        assert first.stop() == 0


def test_overlapping_address_fails(_):
    a, b = make_app("wild"), make_app("loop")
    port = harness.free_port()
    first = Proc(a, "--listen", "0.0.0.0:%d" % port)
    try:
        rc, out, err = run("serve", b, "--listen", "127.0.0.1:%d" % port)
        assert rc == 1, (rc, err)
        assert ("127.0.0.1:%d: address in use by another devloop (pid %d, listening on "
                "0.0.0.0:%d)" % (port, first.pid, port)) in err, err
        assert set(who(port)) == {"wild"}
    finally:
        assert first.stop() == 0


def test_non_devloop_holder_with_reuseport(_):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    try:
        rc, out, err = run("serve", make_app("squat"), "--listen", "127.0.0.1:%d" % port)
        assert rc == 1 and ("cannot listen on 127.0.0.1:%d: address in use by another process"
                            % port) in err, (rc, err)
    finally:
        s.close()


def test_https_redirect_listener_is_exclusive_too(_):
    cert, key = harness.make_cert(WORK, "site")
    tls, plain = harness.free_port(), harness.free_port()
    first = Proc(make_app("tls"), "--listen", "127.0.0.1:%d" % tls, "--tls-cert", cert,
                 "--tls-key", key, "--listen", "127.0.0.1:%d" % plain, "--https-redirect")
    try:
        assert "on 127.0.0.1:%d, 127.0.0.1:%d " % (tls, plain) in first.output()
        rc, out, err = run("serve", make_app("plain"), "--listen", "127.0.0.1:%d" % plain)
        assert rc == 1 and "127.0.0.1:%d: address in use by another devloop (pid %d)" % (
            plain, first.pid) in err, (rc, err)
        status, headers, _ = harness.curl("http://127.0.0.1:%d/who" % plain)
        assert status == 308, status
    finally:
        assert first.stop() == 0


def test_ipv4_and_ipv6_wildcards_are_distinct(_):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        print("# no IPv6 here")
        return
    port = harness.free_port()
    v4 = Proc(make_app("v4"), "--listen", "0.0.0.0:%d" % port)
    v6 = None
    try:
        v6 = Proc(make_app("v6"), "--listen", "[::]:%d" % port)
        rc, out, err = run("serve", make_app("v6b"), "--listen", "[::]:%d" % port)
        assert rc == 1 and "[::]:%d: address in use by another devloop (pid %d)" % (
            port, v6.pid) in err, (rc, err)
        assert set(who(port, 4)) == {"v4"}
        assert harness.curl("http://[::1]:%d/who" % port)[2] == b"v6"
    finally:
        assert v4.stop() == 0
        if v6:
            assert v6.stop() == 0


def test_port_zero_is_one_port_for_every_worker(_):
    p = Proc(make_app("zero"), "--listen", "127.0.0.1:0", workers=3)
    try:
        m = re.search(r"serving \S+ on 127\.0\.0\.1:(\d+) ", p.output())
        assert m and m.group(1) != "0", p.output()
        port = int(m.group(1))
        # every connection is answered: no worker sits on a port of its own
        assert who(port, 12) == ["zero"] * 12
    finally:
        assert p.stop() == 0


def test_duplicate_listen_is_refused(_):
    port = harness.free_port()
    rc, out, err = run("serve", make_app("dup"), "--listen", "127.0.0.1:%d" % port,
                       "--listen", "localhost:%d" % port)
    assert rc == 1 and "--listen localhost:%d is given twice" % port in err, (rc, err)


def test_pid_file_belongs_to_its_instance(_):
    app = make_app("pidapp")
    pidf = os.path.join(app, "data", "devloop.pid")
    first = Proc(app, "--listen", "127.0.0.1:%d" % harness.free_port())
    try:
        # a second instance of the app on another port: refused, naming the
        # pid and the file; the first's pid file stays and reload reaches it
        rc, out, err = run("serve", app, "--listen", "127.0.0.1:%d" % harness.free_port())
        assert rc == 1 and ("pid file %s is held by another devloop (pid %d)" % (pidf, first.pid)
                            in err) and "--pid-file" in err, (rc, err)
        assert read(pidf).strip() == str(first.pid)
        rc, out, err = run("reload", app)
        assert rc == 0 and ("reload requested from pid %d (serving %s)"
                            % (first.pid, os.path.realpath(app))) in out, (rc, out, err)
        # with a pid file of its own it runs, and leaves the first's alone
        own = os.path.join(WORK, "own.pid")
        second = Proc(app, "--listen", "127.0.0.1:%d" % harness.free_port(), "--pid-file", own)
        assert read(own).strip() == str(second.pid)
        assert second.stop() == 0
        assert not os.path.exists(own) and read(pidf).strip() == str(first.pid)
        rc, out, err = run("reload", "--pid-file", pidf)
        assert rc == 0 and "pid %d" % first.pid in out, (rc, out, err)
    finally:
        assert first.stop() == 0
    assert not os.path.exists(pidf)


def test_kill_9_leaves_nothing_that_blocks(_):
    app = make_app("killed")
    pidf = os.path.join(app, "data", "devloop.pid")
    port = harness.free_port()
    first = Proc(app, "--listen", "127.0.0.1:%d" % port)
    first.proc.kill()
    first.proc.wait()
    assert read(pidf).strip() == str(first.pid)
    # the file is stale: reload says so and signals nothing
    rc, out, err = run("reload", app)
    assert rc == 1 and "%s is stale" % pidf in err and "nothing signalled" in err, (rc, err)
    # the address and the pid file are free again at once
    second = Proc(app, "--listen", "127.0.0.1:%d" % port)
    try:
        assert ("replaced the stale pid file %s (pid %d no longer holds it)" % (pidf, first.pid)
                in second.output()), second.output()
        assert read(pidf).strip() == str(second.pid)
        assert who(port, 2) == ["killed"] * 2
    finally:
        assert second.stop() == 0


def test_reload_never_signals_a_stale_pid(_):
    # a pid file left behind whose pid now belongs to another program
    victim = subprocess.Popen(["sleep", "60"])
    pidf = os.path.join(WORK, "stale.pid")
    with open(pidf, "w") as f:
        f.write("%d\n" % victim.pid)
    try:
        rc, out, err = run("reload", "--pid-file", pidf)
        time.sleep(0.2)
        assert victim.poll() is None, "devloop reload signalled pid %d" % victim.pid
        assert rc == 1 and "%s is stale" % pidf in err and str(victim.pid) in err, (rc, err)
    finally:
        victim.kill()
        victim.wait()
    rc, out, err = run("reload", "--pid-file", os.path.join(WORK, "none.pid"))
    assert rc == 1 and "no running server found" in err, (rc, err)


def test_unknown_options_are_usage_errors(_):
    app = make_app("opts")
    for args in (["serve", app, "--bogus"], ["check", app, "--bogus"],
                 ["test", app, "--bogus", "x"], ["new", "--bogus"],
                 ["reload", app, "--bogus"], ["version", "--bogus"], ["test", "--bogus", app]):
        rc, out, err = run(*args)
        assert rc == 2, (args, rc, out, err)
        assert "devloop %s: unknown option --bogus" % args[0] in err and "usage:" in err, (args,
                                                                                          err)
    assert not os.path.exists("--bogus")
    rc, out, err = run("test", app, "--grep", "x")
    assert rc == 2 and "unknown option --grep" in err, (rc, err)
    # the usage says where FILE paths are taken from
    assert "relative to the current directory" in err
    rc, out, err = run("version", "extra")
    assert rc == 2 and "unexpected argument extra" in err, err


def test_double_dash_ends_options(_):
    rc, out, err = run("new", "--", "-dashed", cwd=WORK)
    assert rc == 0 and os.path.isdir(os.path.join(WORK, "-dashed", "routes")), (rc, err)
    rc, out, err = run("check", "--", "-dashed", cwd=WORK)
    assert rc == 0, (rc, err)
    rc, out, err = run("test", "--", "-dashed", "-dashed/tests/hello_test.lua", cwd=WORK)
    assert rc == 0 and "2 passed, 0 failed" in out, (rc, out, err)
    # a FILE relative to the app's tests/ is named, with the path meant
    rc, out, err = run("test", "--", "-dashed", "hello_test.lua", cwd=WORK)
    assert rc == 1 and "did you mean -dashed/tests/hello_test.lua?" in err, (rc, err)


def test_pid_file_symlink_is_refused(_):
    """A pid file path that is a symbolic link was followed: the file it
    named got the pid, and the link was deleted at exit."""
    victim = os.path.join(WORK, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    link = os.path.join(WORK, "link.pid")
    os.symlink(victim, link)
    rc, out, err = run("serve", make_app("symlinked"), "--listen",
                       "127.0.0.1:%d" % harness.free_port(), "--pid-file", link)
    assert rc == 1 and "pid file %s: it is a symbolic link" % link in err, (rc, err)
    assert read(victim) == "precious\n" and os.path.islink(link)


def test_unusable_pid_file_stops_serve(_):
    """An explicit --pid-file that cannot be written was a warning, and serve
    ran without single-instance protection or reload."""
    app = make_app("nopid")
    fifo = os.path.join(WORK, "fifo.pid")
    os.mkfifo(fifo)
    for path, why in ((WORK, "Is a directory"),
                      ("/nonexistent/dir/x.pid", "No such file or directory"),
                      (fifo, "it is not a regular file")):
        rc, out, err = run("serve", app, "--listen", "127.0.0.1:%d" % harness.free_port(),
                           "--pid-file", path)
        assert rc == 1 and "pid file %s: %s" % (path, why) in err, (path, rc, err)


def test_value_flags_do_not_swallow_options(_):
    app = make_app("swallow")
    rc, out, err = run("serve", app, "--listen", "127.0.0.1:%d" % harness.free_port(),
                       "--pid-file", "--no-watch", cwd=WORK)
    assert rc == 2 and "devloop serve: --pid-file needs a value, not the option --no-watch" \
        in err, (rc, err)
    assert not os.path.exists(os.path.join(WORK, "--no-watch"))
    rc, out, err = run("serve", app, "--listen", "--workers", "1")
    assert rc == 2 and "--listen needs a value, not the option --workers" in err, (rc, err)
    rc, out, err = run("config", app, "--hsts", "--no-http2")
    assert rc == 2 and "devloop config: --hsts needs a value, not the option --no-http2" in err
    rc, out, err = run("reload", "--pid-file", "--json")
    assert rc == 2 and "--pid-file needs a path, not the option --json" in err, (rc, err)


def test_mongoc_counters_left_by_a_killed_process_stay_quiet(_):
    """libmongoc creates /dev/shm/mongoc-PID before main(); one left by a
    killed process that had the same pid made every command warn "Falling
    back to malloc for counters" on stderr, outside the log (and broke the
    exact messages of `devloop serve`'s refusals)."""
    if not os.path.isdir("/dev/shm"):
        return
    app = make_app("shm")
    # exec keeps the shell's pid: the file is there when devloop starts
    p = subprocess.run(["bash", "-c", 'touch /dev/shm/mongoc-$$; exec "$0" check "$1"', BIN, app],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "mongoc" not in p.stderr, (p.returncode, p.stderr)
    env = dict(os.environ, UV_THREADPOOL_SIZE="0")
    p = subprocess.run(["bash", "-c", 'touch /dev/shm/mongoc-$$; exec "$0" serve "$1"', BIN, app],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1 and p.stderr.startswith("devloop: UV_THREADPOOL_SIZE=0: "), p.stderr


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
