"""api.timer (issue 21): every and after run in tasks of their own (they may
yield), on worker 0 or on each worker, go on after a run that raises (logged
with the timer's file and line), can be cancelled, belong to the generation
that declared them (a reload replaces them) and are listed in /stats."""
import json
import os
import re
import signal
import time

import harness
from harness import Server, new_app

APP = """
local api = require "devloop"
api.builtin_routes.stats_full = true
api.timer.every(40, function()
  api.sleep(5) -- a run may yield
  api.log.info("tick-one v1 w" .. api.worker_id())
end)
api.timer.every(40, function()
  api.log.info("tick-all v1 w" .. api.worker_id())
end, { workers = "all" })
api.timer.after(30, function() api.log.info("once v1 w" .. api.worker_id()) end)
local n = 0
api.timer.every(30, function()
  n = n + 1
  api.log.info("flaky run " .. n)
  if n % 2 == 1 then error("EXPECTED timer failure " .. n) end
end)
"""

ROUTES = """
local api = require "devloop"
api.post("/startstop", function(req)
  local t = api.timer.every(20, function() api.log.info("runtime " .. req.query.name) end)
  api.sleep(200)
  t:cancel()
  return { ok = true }
end)
"""


def count(srv, pattern):
    return len(re.findall(pattern, srv.output()))


def wait(cond, timeout=10):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.05)
    return cond()


def test_timers(_):
    app = new_app({"app.lua": APP, "routes/r.lua": ROUTES})
    srv = Server(app, workers=2)
    try:
        assert wait(lambda: count(srv, r"tick-one v1 w0") >= 3), srv.output()[-2000:]
        assert count(srv, r"tick-one v1 w1") == 0  # one worker: worker 0
        assert wait(lambda: count(srv, r"tick-all v1 w0") >= 2 and count(srv, r"tick-all v1 w1") >= 2)
        # after: once, on worker 0
        time.sleep(0.3)
        assert count(srv, r"once v1 w0") == 1 and count(srv, r"once v1 w1") == 0
        # a run that raises is logged with its line, and the timer goes on
        assert wait(lambda: count(srv, r"flaky run 4") == 1), srv.output()[-2000:]
        assert re.search(r"timer app\.lua:13 failed \(it goes on\): .*app\.lua:16: EXPECTED timer "
                         r"failure 1", srv.output()), srv.output()[-3000:]
        # /stats lists them (this worker's)
        st = json.loads(srv.get("/stats").body)
        kinds = sorted((t["kind"], t["ms"], t["workers"]) for t in st["timers"])
        assert ("every", 40, "all") in kinds and ("every", 30, "one") in kinds, st["timers"]
        assert all(t["where"].startswith("app.lua:") for t in st["timers"]), st["timers"]
        # made from a handler (on the worker that runs it), then cancelled
        assert srv.request("POST", "/startstop?name=a").status == 200
        assert wait(lambda: count(srv, r"runtime a") >= 2), srv.output()[-2000:]
        time.sleep(0.5)  # the log thread writes what came before the cancel
        made = count(srv, r"runtime a")
        time.sleep(1.2)
        assert count(srv, r"runtime a") == made, "a cancelled timer ran again"
        # a reload replaces the generation's timers
        harness.edit_file(os.path.join(app, "app.lua"), "v1", "v2")
        srv.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: count(srv, r"tick-one v2 w0") >= 2), srv.output()[-2000:]
        time.sleep(1.2)  # a sleeping timer sees its cancellation within a second
        ones = count(srv, r"tick-one v1")
        time.sleep(0.5)
        assert count(srv, r"tick-one v1") == ones, "the old generation's timer still runs"
        # once per load on worker 0 (the watcher and SIGHUP may both reload)
        assert wait(lambda: count(srv, r"once v2 w0") >= 1) and count(srv, r"once v2 w1") == 0
        assert count(srv, r"once v1") == 1
    finally:
        srv.stop()


def test_timers_made_while_serving_do_not_block_a_reload(_):
    # a handler fills the worker's 256 timers; the next load declares its own
    # and is switched in (the handler's stop with the generation they served)
    app = new_app({"app.lua": 'local api = require "devloop"\n'
                              'api.timer.every(100000, function() end)\n',
                   "routes/r.lua": 'local api = require "devloop"\n'
                                   'api.get("/v", function() return "v1" end)\n'
                                   'api.post("/fill", function()\n'
                                   '  local n = 0\n'
                                   '  while pcall(api.timer.after, 100000, function() end) do n = n + 1 end\n'
                                   '  return { made = n }\n'
                                   'end)\n'})
    srv = Server(app, args=("--no-watch",))
    try:
        r = srv.request("POST", "/fill")
        assert r.status == 200 and json.loads(r.body)["made"] == 255, r
        harness.edit_file(os.path.join(app, "routes", "r.lua"), '"v1"', '"v2"')
        srv.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: srv.get("/v").body == b"v2"), srv.output()[-2000:]
        assert "reload failed" not in srv.output()
    finally:
        srv.stop()


def test_misuse_fails_at_its_line(_):
    cases = [
        ("api.timer.every(0, function() end)", "api.timer.every: ms must be a whole number"),
        ("api.timer.after(10, 5)", "api.timer.after: fn must be a function, not 5"),
        ('api.timer.every(10, function() end, { workers = "some" })',
         'api.timer option workers must be "one" or "all"'),
        ("api.timer.every(10, function() end, { worker = 1 })", "unknown api.timer option 'worker'"),
    ]
    for code, msg in cases:
        harness.check_fails({"app.lua": 'local api = require "devloop"\n' + code + "\n"},
                            "app.lua:2:", msg)


ALLOWED_ERRORS = ["EXPECTED"]

if __name__ == "__main__":
    harness.main(globals(), app=None)
