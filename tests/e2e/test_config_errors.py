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


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
