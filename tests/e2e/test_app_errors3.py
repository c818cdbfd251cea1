"""No silent failures in an app's code (issue 18), third review: values that
pass a first look but fail far from the line that set them. An
api.jobs.poll_ms the scheduler cannot nap (logged, claims stop until fixed);
a route cache ttl or an api.cache.set ttl past the cache's maximum (ten
years); tokens.json shapes that load but grant nothing (an object for the
list or the permissions, both token and sha256, a bad digest, an unknown
top-level key); jobs.add values the queue cannot use (a number or control
characters as job_id, a delay past a year, a negative backoff delay named
as such) and add_many with a map or with bad options and no data;
db.define with non-string required fields or a runtime collection's name."""
import hashlib
import json
import os
import shutil
import time

import harness
from harness import BIN, Server

JSON = {"Content-Type": "application/json"}
API = 'local api = require "devloop"\n'


def new_app(files):
    return harness.new_app(files, prefix="devloop-apperr3-")


run = harness.run_devloop



def check_fails(files, where, message):
    return harness.check_fails(files, where, message, prefix="devloop-apperr3-")


def check_ok(files):
    app = new_app(files)
    try:
        p = run("check", app)
        assert p.returncode == 0 and p.stderr == "", (files, p)
    finally:
        shutil.rmtree(app)


def wait_for(fn, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError("not within %ss: %s" % (timeout, what))


def test_poll_ms_out_of_range_is_logged_and_claims_stop(_):
    app = new_app({
        "app.lua": API + "api.jobs.poll_ms = 1e9\n",
        "jobs/ok.lua": "return function(data) return { fine = data.v } end\n",
        "routes/r.lua": API + '''
api.post("/poll/:ms", function(req) api.jobs.poll_ms = tonumber(req.params.ms) return { ok = true } end)
api.post("/add", function() return { id = assert(api.jobs.add("ok", { v = 7 })) } end)
api.get("/job/:id", function(req) return api.jobs.get(req.params.id) end)
'''})
    srv = Server(app, env={"DEVLOOP_JOB_LEASE_MS": "1000"})
    try:
        want = ("jobs: api.jobs.poll_ms must be milliseconds from 1 to 86400000, not 1000000000; "
                "no job is claimed until it is fixed")
        wait_for(lambda: want in srv.output(), want)
        assert "bad argument" not in srv.output(), srv.output()[-3000:]
        jid = srv.request("POST", "/add", JSON, "{}").json()["id"]
        time.sleep(0.3)
        assert srv.get("/job/" + jid).json()["state"] == "waiting"
        assert srv.request("POST", "/poll/0.5", JSON, "{}").status == 200
        wait_for(lambda: "jobs: api.jobs.poll_ms must be milliseconds from 1 to 86400000, not 0.5"
                 in srv.output(), "poll_ms 0.5 logged")
        assert srv.request("POST", "/poll/50", JSON, "{}").status == 200
        wait_for(lambda: srv.get("/job/" + jid).json()["state"] == "completed", "the job completes")
        assert srv.get("/job/" + jid).json()["result"] == {"fine": 7}
        assert "jobs: settings fixed, claiming jobs again" in srv.output()
    finally:
        srv.stop()
        shutil.rmtree(app)


def test_cache_ttl_past_the_maximum(_):
    h = "function() return { t = 1 } end"
    check_fails({"routes/r.lua": API + 'api.get("/x", { cache = { ttl = 1e10 } }, %s)\n' % h},
                "routes/r.lua:2:",
                "cache option ttl must be at most 315360000 seconds (ten years), not 10000000000")
    # a preset the app made too long
    check_fails({"routes/r.lua": API + 'api.cache.ttl.long = 1e10\n'
                 'api.get("/x", { cache = { ttl = "long" } }, %s)\n' % h},
                "routes/r.lua:3:",
                'cache option ttl must be at most 315360000 seconds (ten years), not "long" (10000000000 s)')
    check_ok({"routes/r.lua": API + 'api.get("/x", { cache = { ttl = 315360000 } }, %s)\n' % h})
    app = new_app({"routes/r.lua": API + '''
api.get("/set/:ttl", function(req)
  local ok, v, err, code = pcall(api.cache.set, "k", "v", tonumber(req.params.ttl))
  return { ok = ok, v = v or api.null, err = err or api.null, code = code or api.null }
end)
api.get("/cached", { cache = { ttl = 315360000 } }, function() return { t = 1 } end)
'''})
    srv = Server(app)
    try:
        r = srv.get("/set/1e300").json()
        assert r == {"ok": True, "v": None, "code": "EINVAL",
                     "err": "api.cache.set: ttl must be seconds from 0 to 315360000 (ten years), not 1e+300"}, r
        r = srv.get("/set/315360001").json()
        assert r["code"] == "EINVAL" and r["err"].endswith("not 315360001"), r
        assert srv.get("/set/315360000").json()["v"] is True
        r = srv.get("/cached")
        assert r.status == 200 and r.json() == {"t": 1}, (r.status, r.body)
    finally:
        srv.stop()
        shutil.rmtree(app)


def test_tokens_file_shapes_that_grant_nothing(_):
    digest = hashlib.sha256(b"abc").hexdigest()
    cases = [
        ('{"tokens": {"token": "abc", "user": "a", "permissions": []}}',
         'tokens.json: tokens must be a list [{"token": ..., "user": ..., "permissions": [...]}, ...], '
         'not an object'),
        ('{"tokens": [{"token": "abc", "user": "a", "permissions": {"ADMIN": true}}]}',
         "tokens.json: tokens[1].permissions must be a list of permission names, not a table"),
        ('{"tokens": [{"token": "abc", "sha256": "%s", "user": "a"}]}' % digest,
         "tokens.json: tokens[1] has both a token and a sha256 (give one)"),
        ('{"tokens": [{"sha256": "%s", "user": "a"}]}' % digest[:63],
         'tokens.json: tokens[1].sha256 must be 64 hex digits, not "%s"' % digest[:63]),
        ('{"tokens": [{"sha256": "%sz", "user": "a"}]}' % digest[:63],
         'tokens.json: tokens[1].sha256 must be 64 hex digits, not "%sz"' % digest[:63]),
        ('{"tokens": [{"sha256": 5, "user": "a"}]}',
         "tokens.json: tokens[1].sha256 must be 64 hex digits, not 5"),
        ('{"tokens": [], "users": [], "token": "x"}',
         "tokens.json: unknown top-level keys 'token', 'users' (known: _comment, tokens)"),
        ('{"tokens": [], "version": 2}',
         "tokens.json: unknown top-level key 'version' (known: _comment, tokens)"),
    ]
    for text, message in cases:
        check_fails({"app.lua": API, "tokens.json": text}, "", message)
    check_ok({"app.lua": API, "tokens.json": '{"tokens": [{"token": "t1", "user": "ana", "permissions": ["A"]}, '
              '{"sha256": "%s", "user": "bo", "permissions": []}]}' % digest.upper()})
    check_ok({"app.lua": API, "tokens.json": '{"_comment": "demo", "tokens": []}'})


def test_job_options_the_queue_cannot_use(_):
    app = new_app({
        "jobs/ok.lua": "return function() return true end\n",
        "routes/r.lua": API + '''
local CASES = {
  id_num = { "add", { job_id = 5 } },
  id_nl = { "add", { job_id = "a\\nb" } },
  id_ok = { "add", { job_id = "order-17" } },
  delay_big = { "add", { delay = 1e12 } },
  delay_year = { "add", { delay = 31536000000 } },
  backoff_neg = { "add", { backoff = { delay = -5 } } },
  backoff_big = { "add", { backoff = { type = "fixed", delay = 4e10 } } },
  many_empty_bad = { "many", { priority = "urgent" }, {} },
  many_empty_id = { "many", { job_id = "x" }, {} },
  many_map = { "many", nil, { a = { v = 1 } } },
  many_holes = { "many", nil, { [1] = 1, [3] = 3 } },
  many_empty_ok = { "many", { priority = "low" }, {} },
}
api.get("/case/:name", function(req)
  local c = CASES[req.params.name]
  local ok, v, err, code
  if c[1] == "add" then
    ok, v, err, code = pcall(api.jobs.add, "ok", {}, c[2])
  else
    ok, v, err, code = pcall(api.jobs.add_many, "ok", c[3], c[2])
  end
  if type(v) == "table" then v = #v end
  return { ok = ok, v = v or api.null, err = err or api.null, code = code or api.null }
end)
'''})
    srv = Server(app)
    try:
        refused = {
            "id_num": "jobs.add: job_id must be a non-empty string, not 5",
            "id_nl": 'jobs.add: job_id must be a string without control characters, not "a\\nb"',
            "delay_big": "jobs.add: delay must be at most 31536000000 ms (a year), not 1000000000000",
            "backoff_neg": "jobs.add: backoff delay must be milliseconds >= 0, not -5",
            "backoff_big": "jobs.add: backoff delay must be at most 31536000000 ms (a year), not 40000000000",
            "many_empty_bad": 'jobs.add_many: priority must be "high", "normal" or "low", not "urgent"',
            "many_empty_id": "jobs.add_many takes no job_id (each job gets its own id)",
            "many_map": 'jobs.add_many: the data must be a list (an array), not a table with the key "a"',
            "many_holes": "jobs.add_many: the data must be a list (an array), not a table with the key 3",
        }
        for name, message in refused.items():
            r = srv.get("/case/" + name).json()
            assert r == {"ok": True, "v": None, "err": message, "code": "EINVAL"}, (name, r)
        assert srv.get("/case/id_ok").json()["v"] == "order-17"
        r = srv.get("/case/delay_year").json()
        assert r["ok"] and isinstance(r["v"], str) and r["err"] is None, r
        r = srv.get("/case/many_empty_ok").json()
        assert r == {"ok": True, "v": 0, "err": None, "code": None}, r
    finally:
        srv.stop()
        shutil.rmtree(app)


SCHEMA = API + 'api.db.define(%s, %s)\n'


def test_db_define_required_fields_and_runtime_names(_):
    check_fails({"app.lua": SCHEMA % ('"t"', "{ required = { 5, {} } }")}, "app.lua:2:",
                'db.define("t"): required[1] must be a field name (a non-empty string), not 5')
    check_fails({"app.lua": SCHEMA % ('"t"', '{ required = { "a", {} } }')}, "app.lua:2:",
                'db.define("t"): required[2] must be a field name (a non-empty string), not a table')
    check_fails({"app.lua": SCHEMA % ('"t"', '{ required = { name = true } }')}, "app.lua:2:",
                'db.define("t"): required must be a list of field names, not a table with the key "name"')
    for name in ("_jobs", "_files", "_mine"):
        check_fails({"app.lua": SCHEMA % ('"%s"' % name, "{}")}, "app.lua:2:",
                    'db.define("%s"): names starting with _ are the runtime\'s own collections '
                    "(_jobs, _files); choose another name" % name)
    check_ok({"app.lua": SCHEMA % ('"t_1"', '{ required = { "a", "b.c" } }')})




def test_core_env_refuses_an_unknown_name(_):
    """core._env with a name outside config.c's table raised an assertion
    that aborted the process; now it is a Lua argument error."""
    app = new_app({"app.lua": API, "tests/e_test.lua":
                   'local t = require "devloop.test"\n'
                   'local core = require "devloop.core"\n'
                   't.test("env", function()\n'
                   '  t.fails(function() core._env("NOPE") end, "not a setting")\n'
                   '  t.eq(core._env("DEVLOOP_JOB_LEASE_MS"), 30000)\n'
                   'end)\n'})
    try:
        p = run("test", app)
        assert p.returncode == 0 and "1 passed, 0 failed" in p.stdout, (p.returncode, p.stdout, p.stderr)
    finally:
        shutil.rmtree(app)

def test_timeout_bound_and_file_name_length(_):
    """api.with_timeout(1e30) reached a float-to-integer conversion out of
    range in C; files.sanitize kept a 300-byte "extension" past its 200-byte
    promise."""
    app = new_app({"app.lua": API, "tests/b_test.lua":
                   'local t = require "devloop.test"\n'
                   'local api = require "devloop"\n'
                   't.test("bounds", function()\n'
                   '  t.fails(function() api.with_timeout(1e30, function() end) end,\n'
                   '          "from 0 to 86400000")\n'
                   '  t.eq(#api.files.sanitize("a." .. string.rep("b", 300)), 200)\n'
                   '  t.eq(api.files.sanitize(string.rep("x", 300) .. ".pdf"),\n'
                   '       string.rep("x", 196) .. ".pdf")\n'
                   'end)\n'})
    try:
        p = run("test", app)
        assert p.returncode == 0 and "1 passed, 0 failed" in p.stdout, (p.returncode, p.stdout, p.stderr)
    finally:
        shutil.rmtree(app)


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}


if __name__ == "__main__":
    harness.main(tests, app=None)
