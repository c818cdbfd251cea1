"""A reload applies everything the new generation declares (issue 18, item
a): every file the app loads through the runtime is watched (the tokens file
too), and a new index declared in app.lua exists once the reload is done."""
import json
import os
import shutil
import sqlite3
import tempfile
import time

import harness
from harness import Server

ROUTES = """local api = require "devloop"
api.get("/hello", function() return "Hello, World!" end)
api.get("/me", { auth = true }, function(req) return { user = req.user.id } end)
api.post("/things", function(req)
  local id, err, code = api.db.things:insert_one(req.body)
  if not id then return 400, { error = err, code = code } end
  return 201, { id = id }
end)
"""

APP = """local api = require "devloop"
api.db.define("things", { %s })
"""


def new_app(schema='indexes = { { "a" } }', tokens=("tok-a",)):
    d = tempfile.mkdtemp(prefix="devloop-reload-apply-")
    os.mkdir(os.path.join(d, "routes"))
    write(os.path.join(d, "routes", "r.lua"), ROUTES)
    write(os.path.join(d, "app.lua"), APP % schema)
    if tokens is not None:
        write_tokens(os.path.join(d, "tokens.json"), tokens)
    return d


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_tokens(path, tokens, rename=False):
    text = json.dumps({"tokens": [{"token": t, "user": "u-" + t} for t in tokens]})
    if rename:  # how most editors save: a new file renamed over the old
        write(path + ".tmp", text)
        os.rename(path + ".tmp", path)
    else:
        write(path, text)


def wait_for(fn, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within %ss" % timeout)


def status_with(srv, token):
    return srv.get("/me", {"Authorization": "Bearer " + token}).status


def reload_status(srv):
    return srv.get("/stats").json()["reload"]


def indexes(db_path):
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return {r[0]: r[1] for r in con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'c_things'")}
    finally:
        con.close()


def test_tokens_edit_reloads(_):
    app = new_app()
    srv = Server(app)
    try:
        assert status_with(srv, "tok-a") == 200
        assert status_with(srv, "tok-b") == 401
        # written in place, then renamed over: both are saves
        write_tokens(os.path.join(app, "tokens.json"), ["tok-b"])
        wait_for(lambda: status_with(srv, "tok-b") == 200)
        assert status_with(srv, "tok-a") == 401
        write_tokens(os.path.join(app, "tokens.json"), ["tok-c"], rename=True)
        wait_for(lambda: status_with(srv, "tok-c") == 200)
        assert status_with(srv, "tok-b") == 401
        assert srv.get("/me", {"Authorization": "Bearer tok-c"}).json() == {"user": "u-tok-c"}
        # deleting the file: no tokens, every protected route refuses
        os.unlink(os.path.join(app, "tokens.json"))
        wait_for(lambda: status_with(srv, "tok-c") == 401)
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_bad_tokens_keeps_generation(_):
    app = new_app()
    srv = Server(app)
    path = os.path.join(app, "tokens.json")
    try:
        gen = reload_status(srv)["generation"]
        write(path, '{"tokens": [{"token": "tok-z"}]}')  # no user
        wait_for(lambda: reload_status(srv)["failed"] >= 1)
        st = reload_status(srv)
        assert st["generation"] == gen and not st["last_ok"], st
        # the log line names the file and what is wrong in it
        wait_for(lambda: "reload (files changed) failed" in srv.output())
        line = srv.output().split("reload (files changed) failed", 1)[1][:600]
        assert path + ": tokens[1] needs a user" in line, line
        # the old generation serves on, with its tokens
        assert status_with(srv, "tok-a") == 200
        assert status_with(srv, "tok-z") == 401
        write_tokens(path, ["tok-z"], rename=True)
        wait_for(lambda: status_with(srv, "tok-z") == 200)
        assert status_with(srv, "tok-a") == 401
        assert reload_status(srv)["last_ok"]
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_tokens_file_elsewhere_is_watched(_):
    app = new_app(tokens=None)
    elsewhere = tempfile.mkdtemp(prefix="devloop-tokens-")
    path = os.path.join(elsewhere, "team-tokens.json")
    write_tokens(path, ["tok-a"])
    srv = Server(app, env={"DEVLOOP_TOKENS_FILE": path})
    try:
        assert status_with(srv, "tok-a") == 200
        write(os.path.join(elsewhere, "other.json"), "{}")  # another file there: no reload
        write_tokens(path, ["tok-b"], rename=True)
        wait_for(lambda: status_with(srv, "tok-b") == 200)
        assert status_with(srv, "tok-a") == 401
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_new_index_created_on_reload(_):
    app = new_app()
    srv = Server(app)
    db_path = os.path.join(srv.scratch, "devloop.db")
    try:
        wait_for(lambda: os.path.exists(db_path) and "ix_things_a_1" in indexes(db_path))
        assert not any("_b_" in n for n in indexes(db_path))
        for i in range(50):
            assert srv.request("POST", "/things", {"Content-Type": "application/json"},
                               json.dumps({"a": i, "b": i % 5}).encode()).status == 201
        gen = reload_status(srv)["generation"]
        harness.edit_file(os.path.join(app, "app.lua"), '{ "a" } }',
                          '{ "a" }, { "b", "-a" }, { fields = { "c" }, unique = true } }')
        wait_for(lambda: reload_status(srv)["generation"] > gen)
        wait_for(lambda: "ix_things_b_1_a_-1" in indexes(db_path))
        wait_for(lambda: "ix_things_c_1" in indexes(db_path))
        ix = indexes(db_path)
        assert ix["ix_things_c_1"].startswith("CREATE UNIQUE INDEX"), ix
        assert "ix_things_a_1" in ix, ix
        con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
        plan = " ".join(str(r) for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM c_things WHERE json_extract(doc, '$.b') = 3"))
        con.close()
        assert "ix_things_b_1_a_-1" in plan, plan
        # an index the new app no longer declares stays (dropping is the operator's call)
        harness.edit_file(os.path.join(app, "app.lua"), '{ "a" }, ', "")
        wait_for(lambda: reload_status(srv)["generation"] > gen + 1)
        assert "ix_things_a_1" in indexes(db_path)
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_failed_index_is_logged(_):
    app = new_app()
    srv = Server(app)
    try:
        for v in (1, 1):
            assert srv.request("POST", "/things", {"Content-Type": "application/json"},
                               json.dumps({"d": v}).encode()).status == 201
        harness.edit_file(os.path.join(app, "app.lua"), '{ "a" } }',
                          '{ fields = { "d" }, unique = true }, { "e" } }')
        wait_for(lambda: "cannot create indexes (reload)" in srv.output())
        out = srv.output()
        assert '[["d",1]]' in out and "things" in out, out[-2000:]
        # the other new index was made all the same
        wait_for(lambda: "ix_things_e_1" in indexes(os.path.join(srv.scratch, "devloop.db")))
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_dropped_schema_goes(_):
    app = new_app(schema='required = { "name" }')
    srv = Server(app)
    try:
        r = srv.request("POST", "/things", {"Content-Type": "application/json"}, b'{"x": 1}')
        assert r.status == 400 and "name" in r.json()["error"], r
        write(os.path.join(app, "app.lua"), "-- no schemas any more\n")
        wait_for(lambda: srv.request("POST", "/things", {"Content-Type": "application/json"},
                                     b'{"x": 1}').status == 201)
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_failed_load_keeps_schemas(_):
    app = new_app(schema='required = { "name" }')
    srv = Server(app)
    try:
        gen = reload_status(srv)
        # a load that declares no schema and then fails must not clear the serving one's
        write(os.path.join(app, "app.lua"), "local api = require 'devloop'\nerror('EXPECTED boom')\n")
        wait_for(lambda: reload_status(srv)["failed"] > gen["failed"])
        r = srv.request("POST", "/things", {"Content-Type": "application/json"}, b'{"x": 1}')
        assert r.status == 400, r
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


JOB_ROUTES = """local api = require "devloop"
api.post("/jobs", function()
  local id, err = api.jobs.add("echo", { n = 7 })
  if not id then return 400, { error = err } end
  return 202, { id = id }
end)
api.get("/jobs/:id", function(req) return api.jobs.get(req.params.id) or api.null end)
"""


def test_first_job_processor_starts_the_scheduler(_):
    # an app with no jobs/ at start: the scheduler starts with the reload
    # that brings the first processor
    app = new_app()
    write(os.path.join(app, "routes", "j.lua"), JOB_ROUTES)
    srv = Server(app)
    try:
        gen = reload_status(srv)["generation"]
        os.mkdir(os.path.join(app, "jobs"))
        write(os.path.join(app, "jobs", "echo.lua"), "return function(data) return data end\n")
        wait_for(lambda: reload_status(srv)["generation"] > gen)
        r = srv.request("POST", "/jobs", {"Content-Type": "application/json"}, b"{}")
        assert r.status == 202, r
        jid = r.json()["id"]
        wait_for(lambda: srv.get("/jobs/" + jid).json()["state"] == "completed", 20)
        assert srv.get("/jobs/" + jid).json()["result"] == {"n": 7}
        srv.stop()
    finally:
        shutil.rmtree(app, ignore_errors=True)


ALLOWED_ERRORS = ["reload (files changed) failed", "tokens.json", "cannot create indexes",
                  "app.lua"]

if __name__ == "__main__":
    harness.main(globals(), app=None)
