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


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
