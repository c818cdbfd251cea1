"""The README's Lua API reference runs as written (issue 18, item 6).

Every fenced block whose info string names a file of an app (```lua
routes/ref_request.lua, ```lua tests/ref_request_test.lua, ```json
tokens.json) is written to that path of one scratch app; blocks naming the
same file are joined in order. The app must pass `devloop check` and every
t.test of its test files must pass under `devloop test`, so the reference
cannot drift from the code. Every Lua block inside the reference section
must name its file: an example that is not run is not allowed there."""
import os
import re
import subprocess
import tempfile

import harness

README = os.path.join(harness.SRC, "README.md")
REFERENCE = "## Lua API reference"
FENCE = re.compile(r"^```(\w+)(?:[ \t]+(\S+))?[ \t]*$")
APP_FILE = re.compile(r"^(app\.lua|tokens\.json|(routes|tests|lib|jobs)/[\w./-]+\.lua)$")


def blocks():
    """(language, path or None, text, line, in_reference) for each fenced block."""
    out, section = [], None
    with open(README, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i]
        m = FENCE.match(lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            out.append((m.group(1), m.group(2), "\n".join(body) + "\n", start,
                        section == REFERENCE))
        i += 1
    return out


def build_app():
    app = tempfile.mkdtemp(prefix="devloop-readme-")
    files, tests = {}, 0
    for lang, path, text, line, _ in blocks():
        if path is None:
            continue
        assert APP_FILE.match(path) and ".." not in path, \
            "README.md:%d: %r is not a file of an app" % (line, path)
        files.setdefault(path, []).append("-- README.md:%d\n%s" % (line, text))
        if path.startswith("tests/"):
            tests += len(re.findall(r"\bt\.test\(", text))
    for path, parts in files.items():
        full = os.path.join(app, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            # a JSON file cannot carry the position comment
            f.write("".join(parts) if not path.endswith(".json")
                    else "".join(p.split("\n", 1)[1] for p in parts))
    return app, files, tests


def run(*args):
    p = subprocess.run([harness.BIN] + list(args), capture_output=True, text=True, timeout=240)
    return p.returncode, p.stdout, p.stderr


def test_reference_has_only_runnable_lua(_):
    ref = [b for b in blocks() if b[4]]
    assert len(ref) >= 10, "the reference section is missing or small: %d blocks" % len(ref)
    loose = [line for lang, path, _, line, _ in ref if lang == "lua" and path is None]
    assert not loose, "README.md lines %s: Lua examples in the reference must name their file" % loose


def test_reference_app_checks_and_its_tests_pass(_):
    app, files, want = build_app()
    assert "app.lua" in files and want >= 10, (sorted(files), want)
    rc, out, err = run("check", app)
    assert rc == 0, "devloop check of the README's app failed:\n%s%s" % (out, err)
    rc, out, err = run("test", app)
    assert rc == 0, "devloop test of the README's app failed:\n%s%s" % (out, err)
    m = re.search(r"(\d+) passed, (\d+) failed\s*$", out)
    assert m and int(m.group(1)) == want and m.group(2) == "0", (want, out[-2000:], err[-2000:])


if __name__ == "__main__":
    harness.main(globals(), app=None)
