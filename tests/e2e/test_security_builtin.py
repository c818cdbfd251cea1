"""Issue 17, item 6: the built-in routes and error details. The token that
protects /metrics, /health and /stats (compared through api.auth.equal, in
constant time) accepts exactly itself; an open /stats shows figures only (no
PID, no database path, no text) unless the app opts into the full view;
batch operations show the errors they raise on purpose and only a generic
message with the request id for a bug, whose traceback goes to the log."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import harness
from harness import Server

TOKEN = "ops-secret-token"
JSON = {"Content-Type": "application/json"}


def run_separately(env, fn):
    s = Server("sec-builtin", env=env)
    try:
        fn(s)
    finally:
        s.stop()


def strings_in(doc, path=""):
    """(path, value) of every string value in a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from strings_in(v, path + "." + k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from strings_in(v, "%s[%d]" % (path, i))
    elif isinstance(doc, str):
        yield path, doc


def test_open_stats_shows_figures_only(srv):
    r = srv.get("/stats")
    assert r.status == 200, r
    s = r.json()
    assert "pid" not in s and str(srv.pid()) not in r.body.decode(), s
    assert s["database"]["type"] == "sqlite" and "path" not in s["database"], s
    assert srv.scratch not in r.body.decode() and ".db" not in r.body.decode(), s
    # the figures a dashboard needs are there
    assert s["uptime"] > 0 and s["memory"]["rss_bytes"] > 0 and "user_seconds" in s["cpu"], s
    assert s["cache"]["type"] == "memory" and len(s["workers"]) == 1, s
    assert s["reload"]["generation"] == 1 and "last_error" not in s["reload"], s
    # no text but the kind of each backend and the view's name
    texts = [(p, v) for p, v in strings_in(s) if not p.endswith(".type") and p != ".view"]
    assert texts == [] and s["view"] == "figures", texts


def test_builtin_token(_):
    env = {"SEC_OPS_TOKEN": TOKEN}

    def check(s):
        for path in ("/metrics", "/health", "/stats"):
            for h in (None, "Bearer " + TOKEN[:-1], "Bearer " + TOKEN[:-1] + "X",
                      "Bearer " + TOKEN + "x", "Bearer", "Basic " + TOKEN,
                      "Bearer " + TOKEN.upper()):
                r = s.get(path, {"Authorization": h} if h else None)
                assert r.status == 401, (path, h, r)
                j = r.json()
                assert j["error"] == "Unauthorized", j
                assert j["requestId"] == r.header("x-request-id"), j
                assert r.header("www-authenticate").startswith("Bearer"), r.headers
            for h in ("Bearer " + TOKEN, "bearer " + TOKEN, "Bearer   " + TOKEN + " "):
                assert s.get(path, {"Authorization": h}).status == 200, (path, h)
        # a caller with the token sees everything
        st = s.get("/stats", {"Authorization": "Bearer " + TOKEN}).json()
        assert st["view"] == "full" and st["pid"] == s.pid(), st
        assert st["database"]["path"] == os.path.join(s.scratch, "devloop.db"), st
    run_separately(env, check)


def test_builtin_token_must_be_a_nonempty_string(_):
    # an unset variable read as "" or a stray `true` fails the load (and
    # `devloop check`) instead of leaving the routes open or shut
    d = tempfile.mkdtemp(prefix="devloop-sec-token-")
    try:
        for value in ('""', "true"):
            with open(os.path.join(d, "app.lua"), "w") as f:
                f.write('local api = require "devloop"\napi.builtin_routes.token = %s\n' % value)
            p = subprocess.run([harness.BIN, "check", d], capture_output=True, text=True,
                               timeout=30)
            assert p.returncode == 1, (value, p.returncode, p.stdout, p.stderr)
            assert "api.builtin_routes.token must be a non-empty string" in p.stdout + p.stderr, p
        # a token with a space can never be presented (Bearer takes one word)
        with open(os.path.join(d, "app.lua"), "w") as f:
            f.write('local api = require "devloop"\napi.builtin_routes.token = "ops secret"\n')
        p = subprocess.run([harness.BIN, "check", d], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "must not hold spaces" in p.stdout + p.stderr, p
        os.remove(os.path.join(d, "app.lua"))
        with open(os.path.join(d, "tokens.json"), "w") as f:
            f.write('{"tokens": [{"token": "two words", "user": "u", "permissions": []}]}')
        p = subprocess.run([harness.BIN, "check", d], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "space or a control" in p.stdout + p.stderr, p
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_stats_full_knob(_):
    def check(s):
        st = s.get("/stats").json()
        assert st["view"] == "full" and st["pid"] == s.pid() and "path" in st["database"], st
    run_separately({"SEC_STATS_FULL": "1"}, check)


def test_auth_equal_and_bearer(srv):
    def eq(h):
        r = srv.get("/equal", {"Authorization": h} if h else None)
        assert r.status == 200, r
        return r.json()["equal"]
    assert eq("Bearer s3cret") is True and eq("BEARER s3cret") is True
    assert eq("Bearer s3cre") is False and eq("Bearer s3cretx") is False
    assert eq("Bearer S3cret") is False and eq(None) is False and eq("Basic s3cret") is False


def batch(srv, ops):
    r = srv.request("POST", "/batch", JSON, json.dumps({"operations": ops}))
    assert r.status == 200, r
    return r, {x["id"]: x for x in r.json()["results"]}


def test_batch_deliberate_errors_are_shown(srv):
    _, res = batch(srv, [{"id": n, "type": n} for n in
                         ("raised", "raised0", "asserted", "status", "returned", "soft")] +
                   [{"id": "ok", "type": "ok", "params": {"v": 1}}])
    assert res["raised"] == {"id": "raised", "error": "feature not found"}, res
    assert res["raised0"] == {"id": "raised0", "error": "no position here"}, res
    assert res["asserted"] == {"id": "asserted", "error": "v is required"}, res
    assert res["status"] == {"id": "status", "error": "no such feature", "status": 404}, res
    assert res["returned"] == {"id": "returned", "error": "already done", "status": 409}, res
    assert res["soft"] == {"id": "soft", "error": "soft failure"}, res
    assert res["ok"] == {"id": "ok", "result": {"echo": 1}}, res


INTERNAL = ("nilindex", "callnil", "badarg", "missing_module", "child", "tableerr", "rethrow",
            "wrapped", "rerequire")


def test_batch_internal_errors_are_generic_and_logged(srv):
    r, res = batch(srv, [{"id": n, "type": n} for n in INTERNAL])
    rid = r.header("x-request-id")
    for n in INTERNAL:
        assert res[n] == {"id": n, "error": "internal error (request %s)" % rid}, res[n]
    body = r.body.decode()
    assert ".lua" not in body and "/" not in body and "attempt to" not in body, body
    # the log has what the client does not: the message and the traceback
    # (written by the log thread: give it a moment)
    deadline = time.time() + 5
    while (srv.output().count("batch operation failed") < len(INTERNAL)
           and time.time() < deadline):
        time.sleep(0.05)
    out = srv.output()
    assert "attempt to index field 'missing'" in out and "stack traceback" in out, out[-3000:]
    assert "no_such_module_here" in out and rid in out, out[-3000:]


def test_batch_operation_type_must_be_a_string(srv):
    _, res = batch(srv, [{"id": 1, "type": {"x": 1}}, {"id": 2, "type": "nope"}])
    assert res[1]["error"] == "an operation needs a type (a string)", res
    assert res[2]["error"] == "unknown operation type: nope", res


ALLOWED_ERRORS = ["batch operation failed"]

if __name__ == "__main__":
    harness.main(globals(), app="sec-builtin")
