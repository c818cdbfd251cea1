"""Configuration mistakes stop start-up: a value that does not parse exits 1
with a message naming the variable, the value and what is accepted, never a
silent default (issue 18, item 2). Sizes and durations take units."""
import os
import subprocess

import harness


def serve(env, timeout=20):
    e = dict(os.environ, DEVLOOP_LOG_DIR="-", **env)
    return subprocess.run([harness.BIN, "serve", os.path.join(harness.APPS, "basic"), "--listen",
                           "127.0.0.1:%d" % harness.free_port()], env=e, capture_output=True,
                          text=True, timeout=timeout)


def test_bad_values_stop_start_up(_):
    for name, value, accepted in (("DEVLOOP_MAX_BODY", "2XB", "a size"),
                                  ("DEVLOOP_MAX_BODY", "-1", "a size"),
                                  ("LOG_LEVEL", "verbose", "debug, info, warn or error"),
                                  ("DEVLOOP_HEADER_TIMEOUT_MS", "soon", "a duration"),
                                  ("GZIP_LEVEL", "42", "from 1 to 9"),
                                  ("PORT", "99999", "from 0 to 65535"),
                                  ("DEVLOOP_WATCH", "maybe", "on/off"),
                                  ("DEVLOOP_LOG_MAX_FILES", "0", "from 1 to 1000")):
        p = serve({name: value})
        assert p.returncode == 1, (name, value, p.returncode, p.stderr)
        assert "%s=%s" % (name, value) in p.stderr and accepted in p.stderr, (name, p.stderr)


def test_units_are_accepted(_):
    s = harness.Server("basic", env={"DEVLOOP_MAX_BODY": "2MB", "DEVLOOP_HEADER_TIMEOUT_MS": "10s",
                                     "DEVLOOP_BODY_MIN_BYTES": "512k"})
    try:
        assert s.get("/hello").status == 200
    finally:
        s.stop()


def test_missing_or_empty_app_folder(_):
    import tempfile
    base = tempfile.mkdtemp(prefix="devloop-noapp-")
    missing = os.path.join(base, "typo")
    empty = os.path.join(base, "empty")
    os.mkdir(empty)
    for d, msg in ((missing, "no such app folder"), (empty, "neither app.lua nor routes/")):
        p = subprocess.run([harness.BIN, "serve", d, "--listen",
                            "127.0.0.1:%d" % harness.free_port()], capture_output=True,
                           text=True, timeout=20, env=dict(os.environ, DEVLOOP_LOG_DIR="-"))
        assert p.returncode == 1 and d in p.stderr and msg in p.stderr, (d, p.returncode, p.stderr)
    # nothing was made for them
    assert not os.path.exists(missing) and os.listdir(empty) == [], os.listdir(empty)


def test_strict_jobs_paused_and_threadpool_size(_):
    """DEVLOOP_JOBS_PAUSED is an on/off like DEVLOOP_WATCH (true, yes and on
    meant off: only "1" paused) and UV_THREADPOOL_SIZE is 1 to 1024 (libuv
    reads it; x, 0 and 1025 were shown as accepted)."""
    for name, value, accepted in (("DEVLOOP_JOBS_PAUSED", "2", "on/off"),
                                  ("DEVLOOP_JOBS_PAUSED", "maybe", "on/off"),
                                  ("UV_THREADPOOL_SIZE", "x", "from 1 to 1024"),
                                  ("UV_THREADPOOL_SIZE", "0", "from 1 to 1024"),
                                  ("UV_THREADPOOL_SIZE", "1025", "from 1 to 1024")):
        p = serve({name: value})
        assert p.returncode == 1, (name, value, p.returncode, p.stderr)
        assert p.stderr.startswith("devloop: %s=%s: expected " % (name, value)) and \
            accepted in p.stderr, (name, p.stderr)


def test_jobs_paused_true_pauses(_):
    import json
    import tempfile
    import time
    d = tempfile.mkdtemp(prefix="devloop-paused-")
    s = harness.Server("jobs", env={"DEVLOOP_DB": os.path.join(d, "jobs.db"),
                                    "DEVLOOP_JOBS_PAUSED": "true"})
    try:
        r = s.request("POST", "/jobs/add", {"Content-Type": "application/json"},
                      json.dumps({"type": "echo", "data": {"x": 1}, "opts": {}}))
        jid = r.json()["id"]
        assert jid, r.body
        time.sleep(1)  # an echo job runs at once when the queue is not paused
        state = s.get("/jobs/" + jid).json()["state"]
        assert state not in ("active", "completed", "failed"), state
        assert s.request("POST", "/jobs/resume", {}, "").status == 200
        deadline = time.time() + 15
        while s.get("/jobs/" + jid).json()["state"] != "completed":
            assert time.time() < deadline, s.get("/jobs/" + jid).body
            time.sleep(0.05)
    finally:
        s.stop()


def test_hsts_with_control_characters_is_refused(_):
    """A CR or LF in the HSTS value injected a header over HTTP/1.1 and
    broke every HTTP/2 answer: refused at start, the flag or variable named,
    the value shown escaped (never raw)."""
    evil = "max-age=5\r\nX-Evil: 1"
    e = dict(os.environ, DEVLOOP_LOG_DIR="-")
    e.pop("DEVLOOP_HSTS", None)
    app = os.path.join(harness.APPS, "basic")
    listen = ["--listen", "127.0.0.1:%d" % harness.free_port()]
    for args, env, named in (([harness.BIN, "serve", app, "--hsts", evil] + listen, e, "--hsts "),
                             ([harness.BIN, "config", app, "--hsts", evil], e, "--hsts "),
                             ([harness.BIN, "serve", app] + listen, dict(e, DEVLOOP_HSTS=evil),
                              "DEVLOOP_HSTS="),
                             ([harness.BIN, "config", app], dict(e, DEVLOOP_HSTS=evil),
                              "DEVLOOP_HSTS="),
                             ([harness.BIN, "config", app, "--hsts", " max-age=5"], e,
                              "--hsts ")):
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and p.stdout == "", (args, p.returncode, p.stdout)
        assert p.stderr.startswith("devloop: " + named) and "printable ASCII" in p.stderr, \
            (args, p.stderr)
        assert "\r" not in p.stderr and p.stderr.count("\n") == 1, p.stderr  # one line
    p = subprocess.run([harness.BIN, "config", app, "--hsts", evil], env=e, capture_output=True,
                       text=True, timeout=20)
    assert '"max-age=5\\r\\nX-Evil: 1"' in p.stderr, p.stderr
    # a plain value is still taken as given
    p = subprocess.run([harness.BIN, "config", app, "--hsts", "max-age=60; preload"], env=e,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "max-age=60; preload" in p.stdout, p.stderr


def test_tokens_file_must_be_readable(_):
    """A DEVLOOP_TOKENS_FILE serve would refuse is refused by config too, at
    start, saying why."""
    import tempfile
    d = tempfile.mkdtemp(prefix="devloop-tokens-")
    app = os.path.join(harness.APPS, "basic")
    missing = os.path.join(d, "missing.json")
    for path, why in ((missing, "No such file or directory"), (d, "it is a directory")):
        e = dict(os.environ, DEVLOOP_LOG_DIR="-", DEVLOOP_TOKENS_FILE=path)
        c = subprocess.run([harness.BIN, "config", app], env=e, capture_output=True, text=True,
                           timeout=20)
        s = serve({"DEVLOOP_TOKENS_FILE": path})
        want = "devloop: DEVLOOP_TOKENS_FILE %s: cannot be read: %s\n" % (path, why)
        assert c.returncode == 1 and c.stderr == want and c.stdout == "", (c.returncode, c.stderr)
        assert s.returncode == 1 and s.stderr == want, (s.returncode, s.stderr)


def test_mongo_uri_errors_never_show_the_password(_):
    """mongoc's URI error quotes the text it refused: a password with an
    unescaped ':' came out whole. Config and serve both refuse the URI, name
    MONGO_URI and the problem, and show no password or option value."""
    app = os.path.join(harness.APPS, "basic")
    for uri, secrets, why in (
            ("mongodb://user:SECRET23:more@h/db", ("SECRET23", "more"),
             "the password must be percent-encoded"),
            ("mongodb://user:PA?SS:x@h/db", ("PA?SS", "PA"), "the password must be"),
            ("mongodb://h/db?authMechanism=S3CR'ET", ("S3CR", "ET"), "invalid URI")):
        e = dict(os.environ, DEVLOOP_LOG_DIR="-", MONGO_URI=uri)
        c = subprocess.run([harness.BIN, "config", app], env=e, capture_output=True, text=True,
                           timeout=20)
        s = serve({"MONGO_URI": uri})
        for p in (c, s):
            assert p.returncode == 1, (uri, p.returncode, p.stderr)
            assert p.stderr.startswith("devloop: document store: MONGO_URI: mongodb: invalid URI"), \
                (uri, p.stderr)
            assert why in p.stderr, (uri, p.stderr)
            for secret in secrets:
                assert secret not in p.stdout + p.stderr, (uri, secret, p.stderr)


def test_config_refuses_listen_addresses_serve_refuses(_):
    """config said yes to addresses serve refuses (a port past 65535, no
    port, a host name): both now exit 1 with serve's message."""
    app = os.path.join(harness.APPS, "basic")
    e = dict(os.environ, DEVLOOP_LOG_DIR="-")
    for addr, want in (("127.0.0.1:99999", "invalid listen address '127.0.0.1:99999' (want HOST:PORT)"),
                       ("[::1]", "invalid listen address '[::1]' (want HOST:PORT)"),
                       ("db.example:80", "invalid listen host 'db.example' (want an IP address)")):
        for cmd in ("config", "serve"):
            p = subprocess.run([harness.BIN, cmd, app, "--listen", addr], env=e,
                               capture_output=True, text=True, timeout=20)
            assert p.returncode == 1 and p.stderr == "devloop: %s\n" % want, \
                (cmd, addr, p.returncode, p.stderr)
    # the second of two is checked too
    p = subprocess.run([harness.BIN, "config", app, "--listen", "127.0.0.1:0", "--listen",
                        "[::1]"], env=e, capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "invalid listen address '[::1]'" in p.stderr, p.stderr
    p = subprocess.run([harness.BIN, "config", app, "--listen", "[::1]:0", "--listen",
                        "localhost:0"], env=e, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr


def test_workers_and_pid_file_values(_):
    """serve ran at most 256 workers whatever --workers said; --pid-file ""
    quietly meant no pid file. Both are usage errors now."""
    app = os.path.join(harness.APPS, "basic")
    e = dict(os.environ, DEVLOOP_LOG_DIR="-")
    for args, want in ((["--workers", "99999"], "devloop: --workers needs a number from 1 to 256\n"),
                       (["--workers", "257"], "devloop: --workers needs a number from 1 to 256\n"),
                       (["--workers", "0"], "devloop: --workers needs a number from 1 to 256\n"),
                       (["--pid-file", ""], "devloop: --pid-file needs a path\n")):
        for cmd in ("config", "serve"):
            p = subprocess.run([harness.BIN, cmd, app] + args, env=e, capture_output=True,
                               text=True, timeout=20)
            assert p.returncode == 2 and p.stderr.startswith(want), \
                (cmd, args, p.returncode, p.stderr)
    p = subprocess.run([harness.BIN, "config", app, "--workers", "256"], env=e,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr


def test_hsts_value_is_capped(_):
    """A 70,000-byte HSTS value broke every HTTP/2 answer: values past 1024
    bytes stop start-up, the flag or variable named."""
    app = os.path.join(harness.APPS, "basic")
    e = dict(os.environ, DEVLOOP_LOG_DIR="-")
    e.pop("DEVLOOP_HSTS", None)
    big = "max-age=" + "1" * 69992
    for args, env, named in (([harness.BIN, "config", app, "--hsts", big], e, "--hsts"),
                             ([harness.BIN, "config", app], dict(e, DEVLOOP_HSTS=big),
                              "DEVLOOP_HSTS")):
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and p.stderr == \
            "devloop: %s: the value is 70000 bytes; at most 1024 are accepted\n" % named, \
            (named, p.returncode, p.stderr[:300])
    s = serve({"DEVLOOP_HSTS": big})
    assert s.returncode == 1 and "DEVLOOP_HSTS: the value is 70000 bytes" in s.stderr, \
        s.stderr[:300]
    ok = "max-age=" + "1" * 1016
    p = subprocess.run([harness.BIN, "config", app, "--hsts", ok], env=e, capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr[:300]


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
