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


def test_devloop_api_route_tests(_):
    rc, out, err = run("test", os.path.join(harness.SRC, "examples", "devloop-api"))
    assert rc == 0 and "0 failed" in out, (out, err)
    print("# " + out.strip().splitlines()[-1])


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
