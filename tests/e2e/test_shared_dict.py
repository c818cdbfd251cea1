"""api.shared (issue 21, item 6): one dictionary shared by every worker of
the process. Two workers, real sockets: increments from concurrent requests
land on both workers and add up exactly; values survive a hot reload; TTL
expiry; a small DEVLOOP_SHARED_MAX evicts, and /metrics shows the bytes,
entries and evictions; bad input is a clear error, never a crash."""
import json
import os
import re
import shutil
import tempfile
import threading
import time

import harness

ROUTES = r"""local api = require "devloop"
local S = api.shared
local VERSION = 1
api.get("/hello", function() return "Hello, World!" end)
api.get("/version", function() return { v = VERSION } end)
api.post("/incr/:key", function(req)
  local v, err = S.incr(req.params.key, 1, 0)
  return { v = v, err = err, worker = api.worker_id() }
end)
api.get("/get/:key", function(req)
  local v = S.get(req.params.key)
  return { v = v, t = type(v) }
end)
api.post("/set/:key", function(req)
  local b = req.body
  local ok, err = S.set(req.params.key, b.value, b.ttl)
  return { ok = ok, err = err }
end)
api.post("/add/:key", function(req)
  local ok, err = S.add(req.params.key, req.body.value, req.body.ttl)
  return { ok = ok, err = err }
end)
api.get("/ttl/:key", function(req)
  local s, err = S.ttl(req.params.key)
  return { s = s, err = err }
end)
api.post("/job", function(req)
  return { id = assert(api.jobs.add("count", { key = req.body.key, n = req.body.n })) }
end)
api.post("/delete/:key", function(req) return { ok = S.delete(req.params.key) } end)
api.get("/types", function()
  S.set("ty:s", "text"); S.set("ty:n", 1.5); S.set("ty:b", false); S.set("ty:t", true)
  S.set("ty:bin", "a\0b")
  return { s = S.get("ty:s"), n = S.get("ty:n"), b = S.get("ty:b"), t = S.get("ty:t"),
           bin = #S.get("ty:bin") }
end)
api.get("/incr-semantics", function()
  S.delete("is:x")
  local r = {}
  r.absent_v, r.absent_err = S.incr("is:x", 1)
  r.init = S.incr("is:x", 5, 10)          -- 15
  r.again = S.incr("is:x", -2.5, 1000)    -- init ignored: 12.5
  S.set("is:s", "str")
  r.nan_v, r.nan_err = S.incr("is:s", 1, 0)
  return r
end)
-- each misuse, through pcall: the message names the argument
api.get("/misuse", function()
  local out = {}
  local cases = {
    table_value = function() return S.set("k", {}) end,
    nil_value = function() return S.set("k", nil) end,
    number_key = function() return S.get(1) end,
    neg_ttl = function() return S.set("k", 1, -1) end,
    nan_ttl = function() return S.set("k", 1, 0/0) end,
    str_ttl = function() return S.set("k", 1, "10") end,
    nan_incr = function() return S.incr("k", 0/0, 0) end,
    str_incr = function() return S.incr("k", "1", 0) end,
  }
  for name, f in pairs(cases) do
    local ok, err = pcall(f)
    out[name] = ok and "no error" or tostring(err)
  end
  local v, err = S.get("")
  out.empty_key = tostring(v) .. " " .. tostring(err)
  v, err = S.set(string.rep("k", 65536), 1)
  out.long_key = tostring(v) .. " " .. tostring(err)
  v, err = S.set("huge", string.rep("x", 200000))
  out.too_large = tostring(v) .. " " .. tostring(err)
  return out
end)
api.post("/fill", function(req)
  local n = tonumber(req.query.n)
  for i = 1, n do
    local ok, err = S.set("fill:" .. i, string.rep("v", 1000))
    if not ok then return 500, { err = err } end
  end
  return { first = S.get("fill:1") ~= nil, last = S.get("fill:" .. n) ~= nil,
           stats = S.stats() }
end)
"""

APP_LUA = """local api = require "devloop"
api.shared.add("seeded", "at load")  -- while the app loads (and in `devloop check`)
api.on_start(function() api.shared.incr("starts", 1, 0) end)
"""

JOB_LUA = """local api = require "devloop"
return function(data) api.shared.incr("jobs:" .. data.key, data.n, 0) end
"""

APP = tempfile.mkdtemp(prefix="devloop-shared-")
os.mkdir(os.path.join(APP, "routes"))
with open(os.path.join(APP, "routes", "s.lua"), "w") as f:
    f.write(ROUTES)
with open(os.path.join(APP, "app.lua"), "w") as f:
    f.write(APP_LUA)
os.mkdir(os.path.join(APP, "jobs"))
with open(os.path.join(APP, "jobs", "count.lua"), "w") as f:
    f.write(JOB_LUA)


def post(srv, path, body=None):
    r = srv.request("POST", path, {"Content-Type": "application/json"},
                    json.dumps(body if body is not None else {}))
    assert r.status == 200, r
    return r.json()


def get(srv, path):
    r = srv.get(path)
    assert r.status == 200, r
    return r.json()


def wait_for(fn, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met within %ss" % timeout)


def metric(srv, name):
    text = srv.get("/metrics").body.decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def test_incr_exact_across_workers(srv):
    """200 concurrent requests on their own connections, one incr each, land
    on both workers and give exactly 200."""
    workers, errors = set(), []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def client():
        barrier.wait()
        for _ in range(10):
            try:
                b = post(srv, "/incr/hits")
                with lock:
                    workers.add(b["worker"])
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert get(srv, "/get/hits") == {"v": 200, "t": "number"}
    assert workers == {0, 1}, workers  # both workers counted into one dictionary


def test_types_round_trip(srv):
    assert get(srv, "/types") == {"s": "text", "n": 1.5, "b": False, "t": True, "bin": 3}


def test_set_get_delete_add(srv):
    assert post(srv, "/set/a", {"value": "one"}) == {"ok": True}
    assert get(srv, "/get/a") == {"v": "one", "t": "string"}
    b = post(srv, "/add/a", {"value": "two"})
    assert b.get("ok") is None and b["err"] == "exists", b
    assert get(srv, "/get/a")["v"] == "one"
    assert post(srv, "/delete/a") == {"ok": True}
    assert get(srv, "/get/a") == {"t": "nil"}
    assert post(srv, "/add/a", {"value": "two"}) == {"ok": True}
    assert get(srv, "/get/a")["v"] == "two"


def test_incr_semantics(srv):
    b = get(srv, "/incr-semantics")
    assert b["absent_err"] == "not found" and "absent_v" not in b, b
    assert b["init"] == 15 and b["again"] == 12.5, b
    assert b["nan_err"] == "not a number", b


def test_ttl_expires(srv):
    assert post(srv, "/set/t1", {"value": "x", "ttl": 0.3}) == {"ok": True}
    s = get(srv, "/ttl/t1")["s"]
    assert 0 < s <= 0.3, s
    assert post(srv, "/set/t0", {"value": "x"}) == {"ok": True}
    assert get(srv, "/ttl/t0") == {"s": 0}
    assert get(srv, "/ttl/none") == {"err": "not found"}
    time.sleep(0.5)
    assert get(srv, "/get/t1") == {"t": "nil"}
    assert get(srv, "/ttl/t1") == {"err": "not found"}
    # add succeeds over an expired value
    assert post(srv, "/set/t2", {"value": "old", "ttl": 0.1}) == {"ok": True}
    time.sleep(0.3)
    assert post(srv, "/add/t2", {"value": "new"}) == {"ok": True}


def test_misuse_is_a_clear_error(srv):
    b = get(srv, "/misuse")
    assert "bad argument #2 to 'api.shared.set'" in b["table_value"] and "table" in b["table_value"], b
    assert "bad argument #2 to 'api.shared.set'" in b["nil_value"], b
    assert "bad argument #1 to 'api.shared.get'" in b["number_key"] and "string" in b["number_key"], b
    for k in ("neg_ttl", "nan_ttl", "str_ttl"):
        assert "bad argument #3 to 'api.shared.set'" in b[k], (k, b)
    assert "bad argument #2 to 'api.shared.incr'" in b["nan_incr"] and "NaN" in b["nan_incr"], b
    assert "bad argument #2 to 'api.shared.incr'" in b["str_incr"], b
    assert b["empty_key"] == "nil empty key", b
    assert b["long_key"].startswith("nil key too long"), b
    assert b["too_large"].startswith("nil too large"), b


def test_load_and_start_hook_use_it(srv):
    assert get(srv, "/get/starts")["v"] == 2  # each worker's on_start hook counted once
    assert get(srv, "/get/seeded") == {"v": "at load", "t": "string"}


def test_jobs_use_it(srv):
    for n in (3, 4):
        post(srv, "/job", {"key": "j", "n": n})
    wait_for(lambda: get(srv, "/get/jobs:j").get("v") == 7)


def test_survives_reload(srv):
    post(srv, "/set/keep", {"value": "kept"})
    path = os.path.join(APP, "routes", "s.lua")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("local VERSION = 1", "local VERSION = 2"))
    # every worker serves the new generation (new VMs) ...
    wait_for(lambda: all(get(srv, "/version")["v"] == 2 for _ in range(8)))
    # ... and the dictionary is the same one
    assert get(srv, "/get/keep") == {"v": "kept", "t": "string"}
    assert get(srv, "/get/hits")["v"] == 200


def test_z_eviction_in_metrics(srv):
    """DEVLOOP_SHARED_MAX=64k here: 200 values of 1000 bytes cannot all stay.
    Named to run last (tests run by name): it evicts what the others stored."""
    b = post(srv, "/fill?n=200")
    assert b["last"] is True and b["first"] is False, b
    st = b["stats"]
    assert st["bytes"] <= st["max_bytes"] == 65536 and st["evictions"] > 0, st
    ev = wait_for(lambda: metric(srv, "devloop_shared_dict_evictions_total"))
    assert ev >= st["evictions"] - 1, (ev, st)
    assert 0 < metric(srv, "devloop_shared_dict_bytes") <= 65536
    assert metric(srv, "devloop_shared_dict_entries") > 0


def test_bad_cap_is_a_cli_error(_):
    p = harness.run_devloop("check", APP)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, DEVLOOP_SHARED_MAX="lots", DEVLOOP_LOG_DIR="-")
    import subprocess
    p = subprocess.run([harness.BIN, "serve", APP, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode != 0 and "DEVLOOP_SHARED_MAX" in p.stderr, (p.returncode, p.stderr)


try:
    harness.main(globals(), app=APP, workers=2, env={"DEVLOOP_SHARED_MAX": "64k"})
finally:
    shutil.rmtree(APP, ignore_errors=True)
