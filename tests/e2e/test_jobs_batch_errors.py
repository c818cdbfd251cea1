"""No silent failures in jobs and batches (issue 18 review): a job result that
JSON cannot hold (a cycle, a function, NaN) fails its attempt with "cannot
encode the result: ..." instead of leaving the job active for good, and the
scheduler goes on with other jobs; error values and api.fail details that
cannot be encoded still fail the job with a readable error; jobs.add and
add_many check every option value (nil, "jobs.add: <option> must be ...",
"EINVAL") and job:progress takes 0..100 only; a stored job whose own values
are wrong (a string backoff delay) fails saying why; bad api.jobs settings
are logged naming the key and stop claims until fixed. All of it on the
embedded store and on Redis. In api.batch, an operation whose answer cannot
be encoded is its own internal error, over JSON and MessagePack, and the
others keep their results."""
import json
import os
import shutil
import tempfile
import time

import msgpack

import harness
from harness import RedisServer, Server

WORK = tempfile.mkdtemp(prefix="devloop-jobserr-")
APP = os.path.join(WORK, "app")
JSON = {"Content-Type": "application/json"}

FILES = {
    "jobs/bad.lua": r'''local api = require "devloop"
local function cycle() local t = {} t.t = t return t end
return function(data)
  local c = data.case
  if c == "cycle" then return cycle() end
  if c == "func" then return { f = function() end } end
  if c == "nan" then return { n = 0/0 } end
  if c == "err_cycle" then error(cycle()) end
  if c == "err_func" then error({ f = function() end }) end
  if c == "fail_details" then api.fail(503, "with details", cycle()) end
  if c == "fail_badmsg" then error({ status = 503, message = cycle() }) end
  if c == "boom" then error("boom", 0) end
  return { fine = c }
end
''',
    "jobs/progress.lua": r'''local api = require "devloop"
local CASES = { abc = "abc", tbl = {}, neg = -5, big = 150, nan = 0/0, inf = math.huge, half = 50.5 }
return function(data, job)
  local ok, err = pcall(job.progress, job, CASES[data.case])
  return { ok = ok, err = (not ok) and tostring(err) or api.null }
end
''',
    "routes/r.lua": r'''local api = require "devloop"
local function cycle() local t = {} t.t = t return t end

api.post("/add", function(req)
  local b = req.body
  local id, err, code = api.jobs.add(b.type, b.data, b.opts)
  return { id = id or api.null, err = err or api.null, code = code or api.null }
end)
api.get("/job/:id", function(req)
  local j = api.jobs.get(req.params.id)
  if not j then return 404, { error = "no job" } end
  return j
end)

local OPTS = {
  delay_str = { delay = "5s" }, delay_neg = { delay = -5 }, delay_nan = { delay = 0/0 },
  delay_inf = { delay = math.huge },
  attempts_nan = { attempts = 0/0 }, attempts_frac = { attempts = 1.5 }, attempts_zero = { attempts = 0 },
  attempts_str = { attempts = "3" },
  backoff_str = { attempts = 2, backoff = { type = "fixed", delay = "5s" } },
  backoff_neg = { backoff = -1 }, backoff_type = { backoff = { type = "linear", delay = 5 } },
  backoff_bool = { backoff = true }, backoff_nan = { backoff = { type = "exponential", delay = 0/0 } },
  priority_bad = { priority = "urgent" }, priority_num = { priority = 1 },
  job_id_empty = { job_id = "" }, job_id_tbl = { job_id = {} },
  roc_str = { remove_on_complete = "no" },
  data_cycle = "data_cycle",
  good = { delay = 0, attempts = 2, backoff = { type = "fixed", delay = 10 }, priority = "low",
           remove_on_complete = false },
}
-- add and add_many with one case's options: what each returned or raised
api.get("/addopts/:case", function(req)
  local o = OPTS[req.params.case]
  local data = { case = "ok" }
  if o == "data_cycle" then data, o = cycle(), nil end
  local res = {}
  for _, many in ipairs({ false, true }) do
    local ok, id, err, code = pcall(many and api.jobs.add_many or api.jobs.add, "bad",
      many and { data } or data, o)
    res[#res + 1] = { raised = not ok, id = ok and id and (many and id[1] or id) or api.null,
      err = (ok and err or (not ok and tostring(id))) or api.null, code = code or api.null }
  end
  return res
end)

-- a job stored by an older version, before add checked its values
api.post("/raw/:id", function(req)
  local id, now = req.params.id, math.floor(api.now() * 1000)
  if api.redis.configured() then
    api.redis.call("HSET", "dl:jobs:job:" .. id, "spec",
      '{"type":"bad","data":{"case":"boom"},"priority":"normal","attempts":2,'
      .. '"backoff":{"type":"fixed","delay":"5s"},"remove_on_complete":true,"created_at":' .. now .. '}',
      "prank", "1", "state", "waiting", "run_at", now, "attempts_made", "0")
    api.redis.call("ZADD", "dl:jobs:ready:1", now, id)
  else
    assert(api.db.collection("_jobs"):insert_one({ _id = id, type = "bad", data = { case = "boom" },
      priority = "normal", prank = 1, state = "waiting", run_at = now, queue_at = now, attempts = 2,
      attempts_made = 0, backoff = { type = "fixed", delay = "5s" }, remove_on_complete = true,
      created_at = now, progress = 0 }))
  end
  api.jobs._kick()
  return { id = id }
end)

-- the settings an app may set, changed while serving
local SETTINGS = {
  typo = function() api.jobs.concurrency = { hihg = 5 } end,
  negative = function() api.jobs.concurrency = { high = -1 } end,
  keep = function() api.jobs.keep_completed_ms = "1h" end,
  fixed = function()
    api.jobs.concurrency = { high = 10, normal = 5, low = 2 }
    api.jobs.keep_completed_ms = 3600000
  end,
}
api.post("/settings/:case", function(req)
  SETTINGS[req.params.case]()
  return "ok"
end)

api.post("/batch", api.batch({
  ok = function(p) return { v = p.v } end,
  cycle = function() return cycle() end,
  func = function() return { f = function() end } end,
  nan = function() return { n = 0/0 } end,
  fail_details = function() api.fail(422, "refused", cycle()) end,
  fail_func = function() api.fail(422, "refused", { f = print }) end,
  refused = function() api.fail(404, "not here", { id = 1 }) end,
}))
''',
}


def make_app(path, extra=None):
    for name, text in dict(FILES, **(extra or {})).items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    return path


make_app(APP)
ENV = {"DEVLOOP_JOB_LEASE_MS": "1000"}


def on_both(cases):
    """cases(srv, redis_or_None) on the embedded store, then on Redis"""
    def run(_):
        srv = Server(APP, env=ENV)
        try:
            cases(srv, None)
        finally:
            srv.stop()
        redis = RedisServer()
        try:
            srv = Server(APP, env=dict(ENV, REDIS_URL=redis.url()))
            try:
                cases(srv, redis)
                assert "cannot reach the queue" not in srv.output(), srv.output()[-3000:]
            finally:
                srv.stop()
        finally:
            redis.stop()
    return run


def add(srv, type_, data, **opts):
    r = srv.request("POST", "/add", JSON, json.dumps({"type": type_, "data": data, "opts": opts}))
    assert r.status == 200, r
    j = r.json()
    assert j["id"], j
    return j["id"]


def wait(srv, jid, states=("completed", "failed"), timeout=30):
    deadline = time.time() + timeout
    j = None
    while time.time() < deadline:
        j = srv.get("/job/" + jid).json()
        if j["state"] in states:
            return j
        time.sleep(0.05)
    raise AssertionError("job %s not in %s: %s" % (jid, states, j))


def unencodable_cases(srv, redis):
    ids = {c: add(srv, "bad", {"case": c}, attempts=2, backoff=10)
           for c in ("cycle", "func", "nan", "err_cycle", "err_func", "fail_details", "fail_badmsg")}
    want = {
        "cycle": "cannot encode the result: nesting deeper than 128",
        "func": "cannot encode the result: cannot encode function",
        "nan": "cannot encode the result: cannot encode NaN or Inf",
        "err_cycle": "error object is a table: {t = {...}}",
        "err_func": "error object is a table: {f = (a function)}",
        "fail_details": "with details",
        "fail_badmsg": "status 503",
    }
    for c, jid in ids.items():
        j = wait(srv, jid)
        # retried like any failed attempt, then failed with the reason
        assert j["state"] == "failed" and j["attempts_made"] == 2 and j["error"] == want[c], (c, j)
        assert j["result"] is None, j
    if redis:
        assert redis.cli("EXISTS", "dl:jobs:job:" + ids["cycle"]).strip() == "1"
    # the scheduler goes on with other jobs
    j = wait(srv, add(srv, "bad", {"case": "after"}))
    assert j["state"] == "completed" and j["result"] == {"fine": "after"}, j
    out = srv.output()
    assert "cannot encode the result: nesting deeper than 128" in out, out[-3000:]
    assert "background task failed" not in out, out[-3000:]


test_unencodable_results_and_errors = on_both(unencodable_cases)


OPTION_ERRORS = {
    "delay_str": 'delay must be milliseconds >= 0, not "5s"',
    "delay_neg": "delay must be milliseconds >= 0, not -5",
    "delay_nan": "delay must be milliseconds >= 0, not nan",
    "delay_inf": "delay must be milliseconds >= 0, not inf",
    "attempts_nan": "attempts must be a whole number >= 1, not nan",
    "attempts_frac": "attempts must be a whole number >= 1, not 1.5",
    "attempts_zero": "attempts must be a whole number >= 1, not 0",
    "attempts_str": 'attempts must be a whole number >= 1, not "3"',
    "backoff_str": 'backoff delay must be milliseconds >= 0, not "5s"',
    "backoff_neg": "backoff delay must be milliseconds >= 0, not -1",
    "backoff_nan": "backoff delay must be milliseconds >= 0, not nan",
    "backoff_type": 'backoff type must be "exponential" or "fixed", not "linear"',
    "backoff_bool": 'backoff must be milliseconds >= 0 or { type = "exponential" | "fixed", '
                    'delay = ms >= 0 }, not true',
    "priority_bad": 'priority must be "high", "normal" or "low", not "urgent"',
    "priority_num": 'priority must be "high", "normal" or "low", not 1',
    "roc_str": 'remove_on_complete must be true or false, not "no"',
}


def option_cases(srv, redis):
    for case, msg in OPTION_ERRORS.items():
        one, many = srv.get("/addopts/" + case).json()
        assert one == {"raised": False, "id": None, "code": "EINVAL", "err": "jobs.add: " + msg}, (case, one)
        assert many == {"raised": False, "id": None, "code": "EINVAL",
                        "err": "jobs.add_many: " + msg}, (case, many)
    for case, shown in (("job_id_empty", '""'), ("job_id_tbl", "a table")):
        one, many = srv.get("/addopts/" + case).json()
        assert one == {"raised": False, "id": None, "code": "EINVAL",
                       "err": "jobs.add: job_id must be a non-empty string, not " + shown}, one
        assert many["code"] == "EINVAL" and "no job_id" in many["err"], many
    # data JSON cannot hold: refused, not raised
    for r in srv.get("/addopts/data_cycle").json():
        assert not r["raised"] and r["code"] == "EINVAL" and "nesting deeper than 128" in r["err"], r
    one, many = srv.get("/addopts/good").json()
    assert one["id"] and many["id"] and not one["raised"] and not many["raised"], (one, many)
    assert wait(srv, one["id"])["result"] == {"fine": "ok"}


test_add_checks_option_values = on_both(option_cases)


def progress_cases(srv, redis):
    shown = {"abc": '"abc"', "tbl": "a table", "neg": "-5", "big": "150", "nan": "nan", "inf": "inf"}
    ids = {c: add(srv, "progress", {"case": c}) for c in list(shown) + ["half"]}
    for c, jid in ids.items():
        j = wait(srv, jid)
        assert j["state"] == "completed", j
        if c == "half":
            assert j["result"] == {"ok": True, "err": None} and j["progress"] == 50.5, j
        else:
            assert j["result"]["ok"] is False and j["result"]["err"].endswith(
                "job:progress: percent must be a number from 0 to 100, not " + shown[c]), j
            assert j["progress"] == 0, j


test_progress_checks_percent = on_both(progress_cases)


def stored_bad_backoff_cases(srv, redis):
    jid = "raw-" + ("redis" if redis else "store")
    r = srv.request("POST", "/raw/" + jid, JSON, "{}")
    assert r.status == 200, r
    j = wait(srv, jid, ("failed",))
    assert j["attempts_made"] == 1 and j["error"] == (
        'cannot finish the attempt: the backoff delay is not milliseconds >= 0: "5s"'), j
    assert "background task failed" not in srv.output(), srv.output()[-3000:]


test_stored_bad_backoff_fails_the_job = on_both(stored_bad_backoff_cases)


def settings_cases(srv, redis):
    def wait_log(text):
        deadline = time.time() + 15
        while time.time() < deadline:
            if text in srv.output():
                return
            time.sleep(0.05)
        raise AssertionError("%r not in the log:\n%s" % (text, srv.output()[-3000:]))

    for case, msg in (
            ("typo", "jobs: unknown priority 'hihg' in api.jobs.concurrency (known: high, low, normal)"),
            ("negative", "jobs: api.jobs.concurrency.high must be a whole number from 1 to 100000, not -1"),
            ("keep", 'jobs: api.jobs.keep_completed_ms must be milliseconds > 0, not "1h"')):
        assert srv.request("POST", "/settings/" + case, JSON, "{}").status == 200
        wait_log(msg + "; no job is claimed until it is fixed")
        jid = add(srv, "bad", {"case": case})
        time.sleep(0.3)
        assert srv.get("/job/" + jid).json()["state"] == "waiting"
        assert srv.request("POST", "/settings/fixed", JSON, "{}").status == 200
        assert wait(srv, jid)["result"] == {"fine": case}


test_bad_settings_are_logged = on_both(settings_cases)


def test_bad_settings_at_start(_):
    app = make_app(os.path.join(WORK, "start"),
                   {"app.lua": 'local api = require "devloop"\napi.jobs.concurrency = { hihg = 5 }\n'})
    srv = Server(app, env=ENV)
    try:
        deadline = time.time() + 15
        want = ("jobs: unknown priority 'hihg' in api.jobs.concurrency (known: high, low, normal); "
                "no job is claimed until it is fixed")
        while want not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        assert want in srv.output(), srv.output()[-3000:]
    finally:
        srv.stop()


BATCH = [{"id": 1, "type": "ok", "params": {"v": 1}}, {"id": 2, "type": "cycle"},
         {"id": 3, "type": "func"}, {"id": 4, "type": "nan"}, {"id": 5, "type": "fail_details"},
         {"id": 6, "type": "fail_func"}, {"id": 7, "type": "refused"},
         {"id": 8, "type": "ok", "params": {"v": 8}}]


def test_batch_unencodable_operation(_):
    srv = Server(APP, env=ENV)
    try:
        body = json.dumps({"operations": BATCH})
        r = srv.request("POST", "/batch", JSON, body)
        assert r.status == 200, r
        rid = r.header("X-Request-Id")
        internal = "internal error (request %s)" % rid
        res = r.json()["results"]
        assert res[0] == {"id": 1, "result": {"v": 1}} and res[7] == {"id": 8, "result": {"v": 8}}, res
        for i in (1, 2, 3, 4, 5):
            assert res[i] == {"id": i + 1, "error": internal}, res[i]
        assert res[6] == {"id": 7, "error": "not here", "status": 404, "details": {"id": 1}}, res[6]
        deadline = time.time() + 10
        while time.time() < deadline:
            lines = [l for l in srv.output().splitlines() if "[%s] batch operation failed" % rid in l]
            if len(lines) == 5:
                break
            time.sleep(0.05)
        assert len(lines) == 5, srv.output()[-3000:]
        assert any('"cannot encode the result: cannot encode NaN or Inf"' in l and '"type":"nan"' in l
                   for l in lines), lines
        # MessagePack carries NaN; the rest are refused the same way
        r = srv.request("POST", "/batch", dict(JSON, Accept="application/msgpack"), body)
        assert r.status == 200 and r.header("Content-Type") == "application/msgpack", r
        rid = r.header("X-Request-Id")
        internal = "internal error (request %s)" % rid
        res = msgpack.unpackb(r.body if isinstance(r.body, bytes) else r.body.encode("latin-1"))["results"]
        assert res[0] == {"id": 1, "result": {"v": 1}} and res[7] == {"id": 8, "result": {"v": 8}}, res
        n = res[3]["result"]["n"]
        assert n != n, res[3]
        for i in (1, 2, 4, 5):
            assert res[i] == {"id": i + 1, "error": internal}, res[i]
    finally:
        srv.stop()


if __name__ == "__main__":
    try:
        harness.main(dict(globals()), app=None)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
