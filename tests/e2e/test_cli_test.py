"""`devloop new` and `devloop test`: a new app passes its own test at once;
a failing assertion names its file and line and exits 1; --tap prints TAP;
examples/devloop-api's route tests pass (each file on a fresh store)."""
import os
import shutil
import subprocess
import tempfile

import harness

WORK = tempfile.mkdtemp(prefix="devloop-clitest-")


def run(*args):
    p = subprocess.run([harness.BIN] + list(args), capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_new_app_passes_its_test(_):
    app = os.path.join(WORK, "fresh")
    rc, out, err = run("new", app)
    assert rc == 0 and "devloop test" in out, (rc, out, err)
    assert sorted(os.listdir(app)) == ["app.lua", "routes", "tests"]
    rc, out, err = run("check", app)
    assert rc == 0, err
    rc, out, err = run("test", app)
    assert rc == 0 and out.strip().endswith("2 passed, 0 failed"), (rc, out, err)
    rc, out, _ = run("new", app)  # never overwrites
    assert rc != 0


def test_failure_names_file_and_line_and_tap(_):
    app = os.path.join(WORK, "failing")
    run("new", app)
    bad = os.path.join(app, "tests", "bad_test.lua")
    with open(bad, "w") as f:
        f.write('local t = require "devloop.test"\n'
                't.test("one", function() t.eq(1, 1) end)\n'
                't.test("two", function()\n'
                '  t.eq(t.get("/hello/x").json.hello, "y")\n'
                'end)\n')
    rc, out, _ = run("test", app)
    assert rc == 1 and "bad_test.lua:4: expected \"y\", got \"x\"" in out, out
    assert out.strip().endswith("3 passed, 1 failed"), out
    rc, out, _ = run("test", app, bad, "--tap")
    assert rc == 1 and "1..2\nok 1 - one\nnot ok 2 - two\n" in out, out
    with open(bad, "w") as f:
        f.write("this is not lua")
    rc, out, _ = run("test", app, bad)
    assert rc == 1 and "bad_test.lua" in out, out


def run_env(env, *args):
    e = dict(os.environ)
    e.update(env)
    p = subprocess.run([harness.BIN] + list(args), capture_output=True, text=True, timeout=120,
                       env=e)
    return p.returncode, p.stdout, p.stderr


def test_devloop_api_route_tests(_):
    # a configured MongoDB or Redis (here unreachable) is never used by tests:
    # each file gets the embedded store, and the fake clock starts at zero
    rc, out, err = run_env({"MONGO_URI": "mongodb://127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1"},
                           "test", os.path.join(harness.SRC, "examples", "devloop-api"))
    assert rc == 0 and "0 failed" in out, (out, err)
    print("# " + out.strip().splitlines()[-1])


def test_fake_clock_does_not_carry_over(_):
    app = os.path.join(WORK, "clock")
    os.makedirs(os.path.join(app, "tests"))
    with open(os.path.join(app, "tests", "a_test.lua"), "w") as f:
        f.write('local t = require "devloop.test"\n'
                't.test("advance a day", function() t.advance(86400 * 1000) end)\n')
    with open(os.path.join(app, "tests", "b_test.lua"), "w") as f:
        f.write('local t = require "devloop.test"\nlocal api = require "devloop"\n'
                't.test("a fresh clock", function()\n'
                '  t.ok(math.abs(api.now() - os.time()) < 60, "skew " .. (api.now() - os.time()))\n'
                'end)\n')
    rc, out, err = run("test", app)
    assert rc == 0 and "2 passed, 0 failed" in out, (out, err)


def test_backend_variables_never_reach_a_live_backend(_):
    """REDIS_PORT alone (no REDIS_URL/REDIS_HOST) used to select the live
    Redis: every REDIS_*, MONGO_* and DEVLOOP_DB is cleared for tests, and a
    backend is used only when named by DEVLOOP_TEST_REDIS_URL."""
    app = os.path.join(WORK, "writer")
    os.makedirs(os.path.join(app, "tests"))
    with open(os.path.join(app, "tests", "write_test.lua"), "w") as f:
        f.write('local t = require "devloop.test"\nlocal api = require "devloop"\n'
                't.test("writes a key", function()\n'
                '  api.cache.set("leak", { x = 1 }, "long")\n'
                '  t.eq(api.cache.get("leak").x, 1)\n'
                'end)\n')
    redis = harness.RedisServer()
    try:
        for env in ({"REDIS_PORT": str(redis.port)},
                    {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port), "REDIS_DB": "0"},
                    {"REDIS_URL": redis.url()}):
            rc, out, err = run_env(env, "test", app)
            assert rc == 0 and "1 passed, 0 failed" in out, (env, out, err)
            assert redis.cli("DBSIZE").strip() == "0", (env, redis.cli("KEYS", "*"))
            assert "devloop test: ignoring " in err and all(k in err for k in env), err
        # the explicit way to test against a backend
        rc, out, err = run_env({"DEVLOOP_TEST_REDIS_URL": redis.url()}, "test", app)
        assert rc == 0 and "1 passed, 0 failed" in out, (out, err)
        assert redis.cli("DBSIZE").strip() != "0", "DEVLOOP_TEST_REDIS_URL was not used"
    finally:
        redis.stop()


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
