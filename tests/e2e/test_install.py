"""cmake --install into a scratch prefix, then examples/embed built against
the installed library through pkg-config only (not the build tree) and run:
its app calls the tool's own C module (dl_add_lua_module), whose function
suspends the coroutine and is completed from another thread
(dl_pending_new/dl_pending_complete); 20 at once resume the right coroutines;
a client gone before completion is dropped safely."""
import json
import os
import shutil
import socket
import subprocess
import threading
import tempfile
import time
import urllib.request

import harness

BUILD = os.environ.get("DEVLOOP_BUILD_DIR") or os.path.dirname(harness.BIN)
PREFIX = tempfile.mkdtemp(prefix="devloop-install-")


def run(*cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


def test_install_and_build_embed_with_pkg_config(_):
    run("cmake", "--install", BUILD, "--prefix", PREFIX)
    pcs = [os.path.join(d, f) for d, _, fs in os.walk(PREFIX) for f in fs if f == "devloop.pc"]
    assert len(pcs) == 1, pcs
    libdir = os.path.dirname(os.path.dirname(pcs[0]))
    assert os.path.exists(os.path.join(libdir, "libdevloop.a"))
    assert os.path.exists(os.path.join(libdir, "libdevloop.so"))
    assert os.path.exists(os.path.join(PREFIX, "include", "devloop.h"))
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
    flags = run("pkg-config", "--cflags", "--libs", "devloop", env=env).split()
    assert any(f.startswith("-I" + PREFIX) for f in flags), flags
    exe = os.path.join(PREFIX, "embed")
    run("cc", "-Wall", "-Wextra", "-Werror", "-o", exe,
        os.path.join(harness.SRC, "examples", "embed", "embed.c"), *flags)
    renv = dict(env, LD_LIBRARY_PATH=libdir, DEVLOOP_LOG_DIR="-")
    if "libasan" in run("ldd", os.path.join(libdir, "libdevloop.so")):
        # a sanitizer build (SANITIZE=1): the tool itself is not instrumented
        renv["ASAN_OPTIONS"] = "verify_asan_link_order=0:detect_leaks=0"
    out = run(exe, "--version", env=renv)
    assert "library 0." in out, out
    # the tool really links the installed library
    assert libdir in run("ldd", exe, env=renv)
    port = harness.free_port()
    p = subprocess.Popen([exe, os.path.join(harness.SRC, "examples", "embed", "app"),
                          "127.0.0.1:%d" % port], env=renv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:%d" % port
    try:
        body = None
        for _ in range(100):
            try:
                body = urllib.request.urlopen(base + "/tool/upper/abc?ms=1").read()
                break
            except OSError:
                time.sleep(0.1)
        # the app's Lua called the tool's C module, completed from a tool thread
        assert json.loads(body) == {"upper": "ABC", "library": out.split()[-1]}, body
        # many at once: each coroutine resumes with its own answer
        res = {}

        def get(i):
            res[i] = json.loads(urllib.request.urlopen(base + "/tool/upper/w%d?ms=%d"
                                                       % (i, 50 - i)).read())["upper"]
        ts = [threading.Thread(target=get, args=(i,)) for i in range(20)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert res == {i: "W%d" % i for i in range(20)}, res
        # a client gone before the tool completes: dropped safely, still serving
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /tool/upper/gone?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
        time.sleep(0.5)
        assert json.loads(urllib.request.urlopen(base + "/tool/upper/ok?ms=1").read())["upper"] == "OK"
    finally:
        p.terminate()
        assert p.wait(timeout=15) == 0


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(PREFIX, ignore_errors=True)
