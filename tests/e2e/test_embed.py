"""The embedding C API through examples/embed (built in the build tree, so it
is instrumented in a SANITIZE=1 run and LeakSanitizer checks it at exit):
in-process requests from the host thread (dl_runtime_request) to a runtime
without a socket; host-loop mode (dl_runtime_attach: the tool's 10 ms timer
keeps its period while the worker serves in-process load and a socket on the
same loop); and 1,000 create / answer / destroy cycles in one process with
the number of open file descriptors flat."""
import os
import subprocess
import time
import urllib.request

import harness

EMBED = os.environ.get("DEVLOOP_EMBED_BIN")
APP = os.path.join(harness.SRC, "examples", "embed", "app")


def run(*args, timeout=300):
    p = subprocess.run([EMBED] + list(args), capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, DEVLOOP_LOG_DIR="-"))
    return p.returncode, p.stdout, p.stderr


def test_in_process_requests_from_the_host(_):
    rc, out, err = run(APP, "--get", "/tool/upper/abc?ms=5", "/nope")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2, (rc, out, err)
    assert lines[0].startswith('200 {') and '"upper":"ABC"' in lines[0], lines
    assert lines[1].startswith("404 ") and "no route for GET /nope" in lines[1], lines


def test_in_process_request_cannot_smuggle(_):
    """dl_runtime_request builds the request line from strings: a CR or LF in
    the path (or a space, a control) is refused, never sent as two requests."""
    for path in ["/tool/upper/a HTTP/1.1\r\nHost: x\r\n\r\nGET /nope", "/a b", "/a\x01"]:
        rc, out, err = run(APP, "--get", path)
        assert rc != 0 and "invalid argument" in err.lower() and out == "", (path, rc, out, err)


def test_host_loop_timer_keeps_its_period_under_load(_):
    port = harness.free_port()
    p = subprocess.Popen([EMBED, APP, "--host-loop", "2", "127.0.0.1:%d" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, DEVLOOP_LOG_DIR="-"))
    body = None
    for _ in range(50):
        try:  # the worker's listener is served on the tool's loop too
            body = urllib.request.urlopen("http://127.0.0.1:%d/tool/upper/sock?ms=1" % port).read()
            break
        except OSError:
            time.sleep(0.05)
    out, err = p.communicate(timeout=60)
    assert b'"upper":"SOCK"' in (body or b""), body
    assert p.returncode == 0, (out, err[-2000:])
    print("# " + out.strip())


def test_thousand_cycles_fds_flat(_):
    rc, out, err = run(APP, "--cycles", "1000")
    assert rc == 0, (rc, out, err[-2000:])
    parts = out.split()
    assert parts[0] == "cycles" and parts[1] == "1000" and parts[3] == parts[4], out
    print("# " + out.strip())


if __name__ == "__main__":
    if not EMBED or not os.path.exists(EMBED):
        print("# skipped: examples not built (DL_BUILD_EXAMPLES=OFF)")
        raise SystemExit(77)
    harness.main(globals(), app=None)
