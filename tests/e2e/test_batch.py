"""api.batch and api.auth on a small app: results in request order whatever
the operations' latency, the concurrency bound, errors confined to their
operation, the request's context in every operation, hot reload of the
operation handlers, the app's own tokens.json, and a broken tokens file
failing the load with the file named."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import harness
from harness import Server

JSON = {"Content-Type": "application/json"}


def post(srv, path, ops, token=None):
    h = dict(JSON, Authorization="Bearer " + token) if token else JSON
    r = srv.request("POST", path, h, json.dumps({"operations": ops}))
    assert r.status == 200, r
    return r, r.json()["results"]


def test_order_and_concurrency(srv):
    ops = [{"id": i, "type": "sleep", "params": {"ms": 200 - i * 10, "v": i}} for i in range(20)]
    t0 = time.time()
    r, res = post(srv, "/batch", ops)
    took = time.time() - t0
    assert [x["id"] for x in res] == list(range(20)) and [x["result"]["v"] for x in res] == list(range(20))
    # 20 sleeps of 10..200 ms, 10 at a time: well under their 2.1 s sum
    assert took < 1.0, took
    assert all(x["result"]["request_id"] == r.header("x-request-id") for x in res)
    assert post(srv, "/batch", [{"id": 1, "type": "peak"}])[1][0]["result"] == 10


def test_concurrency_option_and_limit(srv):
    ops = [{"id": i, "type": "sleep", "params": {"ms": 50}} for i in range(5)]
    post(srv, "/batch3", ops)
    assert post(srv, "/batch", [{"id": 1, "type": "peak"}])[1][0]["result"] == 3
    r = srv.request("POST", "/batch3", JSON, json.dumps({"operations": ops + ops[:1]}))
    assert r.status == 400 and "at most 5" in r.json()["message"], r


def test_errors_stay_in_their_operation(srv):
    _, res = post(srv, "/batch", [{"id": "a", "type": "boom"}, {"id": "b", "type": "soft"},
                                  {"id": "c", "type": "sleep", "params": {"v": 1}},
                                  {"id": "d", "type": "admin"}])
    assert res[0] == {"id": "a", "error": "kaboom"}, res[0]
    assert res[1] == {"id": "b", "error": "soft failure"}, res[1]
    assert res[2]["result"]["v"] == 1 and res[2]["result"]["user"] is None
    assert "unauthorized" in res[3]["error"]


def test_auth_in_batch_and_routes(srv):
    _, res = post(srv, "/batch", [{"id": "d", "type": "admin"},
                                  {"id": "s", "type": "sleep", "params": {}}], "admin-token")
    assert res[0]["result"] == "yes" and res[1]["result"]["user"] == "root", res
    _, res = post(srv, "/batch", [{"id": "d", "type": "admin"}], "plain-token")
    assert "forbidden" in res[0]["error"]
    j = srv.request("GET", "/whoami", {"Authorization": "Bearer admin-token"}).json()
    assert j == {"user": "root", "admin": True, "perms": ["ADMIN"]}, j
    r = srv.request("GET", "/whoami", {"Authorization": "Bearer plain-token"})
    assert r.json() == {"user": "pat", "admin": False, "perms": []}, r
    assert srv.get("/whoami").status == 401


def test_hot_reload_of_operations(_):
    app = tempfile.mkdtemp(prefix="devloop-batchapp-")
    shutil.copytree(os.path.join(harness.APPS, "batch"), app, dirs_exist_ok=True)
    s = Server(app)
    try:
        assert post(s, "/batch", [{"id": 1, "type": "version"}])[1][0]["result"] == "v1"
        path = os.path.join(app, "lib", "ops.lua")
        harness.edit_file(path, '"v1"', '"v2"')
        deadline = time.time() + 5
        while post(s, "/batch", [{"id": 1, "type": "version"}])[1][0]["result"] != "v2":
            assert time.time() < deadline, "operations not reloaded"
            time.sleep(0.05)
    finally:
        s.stop()
        shutil.rmtree(app, ignore_errors=True)


def test_broken_tokens_file_fails_the_load(_):
    d = tempfile.mkdtemp(prefix="devloop-tokens-")
    try:
        bad = os.path.join(d, "tokens.json")
        for text, want in (('{"tokens": [{"user": "x"}]}', "needs a token"),
                           ('{"tokens": [{"token": "t"}]}', "needs a user"),
                           ('{"tokens": ', "tokens.json")):
            with open(bad, "w") as f:
                f.write(text)
            env = dict(os.environ, DEVLOOP_TOKENS_FILE=bad)
            p = subprocess.run([harness.BIN, "check", os.path.join(harness.APPS, "batch")],
                               env=env, capture_output=True, text=True)
            assert p.returncode != 0 and bad in p.stderr + p.stdout and want in p.stderr + p.stdout, \
                (text, p.returncode, p.stderr)
        env = dict(os.environ, DEVLOOP_TOKENS_FILE=os.path.join(d, "missing.json"))
        p = subprocess.run([harness.BIN, "check", os.path.join(harness.APPS, "batch")],
                           env=env, capture_output=True, text=True)
        assert p.returncode != 0 and "missing.json" in p.stderr + p.stdout, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_batch_options_fail_the_load(_):
    # caught as the route is declared, with the route file named, not per request
    d = tempfile.mkdtemp(prefix="devloop-batchopts-")
    try:
        shutil.copytree(os.path.join(harness.APPS, "batch"), os.path.join(d, "app"))
        route = os.path.join(d, "app", "routes", "batch.lua")
        for opt in ('concurrency = "ten"', "max_operations = 0", "concurrency = 1.5"):
            with open(route, "w") as f:
                f.write('local api = require "devloop"\n'
                        'api.post("/batch", api.batch(require "ops", { %s }))\n' % opt)
            p = subprocess.run([harness.BIN, "check", os.path.join(d, "app")],
                               capture_output=True, text=True)
            out = p.stderr + p.stdout
            assert p.returncode != 0 and "batch.lua" in out and "whole number" in out, (opt, out)
    finally:
        shutil.rmtree(d, ignore_errors=True)


ALLOWED_ERRORS = ["batch operation failed"]

if __name__ == "__main__":
    harness.main(globals(), app="batch")
