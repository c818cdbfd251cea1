"""api.http wherever a handler runs (issue 20 item 3): a job processor, an
on_start hook (the first outbound call, before any request), an
api.parallel branch; and its metrics on /metrics (requests by host and
status, durations, pool gauges)."""
import json
import time

import harness
import httpc
from httpc import call
from upstream import Upstream

UP = Upstream()

APP = """local api = require "devloop"
local state = require "state"
-- at load time there is no task to park: refused in words
local ok, res, err = pcall(api.http.get, "%(url)s/echo/from-load")
state.load = { ok = ok, res = res or api.null, err = err or api.null }
api.on_start(function()
  local res, err = api.http.get("%(url)s/echo/from-start", { timeout = 5000 })
  state.start = res and res.status or err
end)
""" % {"url": UP.url()}

STATE = "return {}\n"

ROUTES = r"""local api = require "devloop"
local state = require "state"
api.get("/start-result", function() return { result = state.start, load = state.load } end)
-- a call given up on by api.with_timeout finishes detached
api.get("/given-up", function(req)
  local stream = req.query.stream == "1"
  local ok, v = api.with_timeout(100, function()
    local res, err = api.http.get(req.query.url, { timeout = 3000, stream = stream })
    if not res then state.late = err return end
    if stream then
      local n = 0
      while true do
        local p, rerr = res:read()
        if rerr then state.late = rerr return end
        if not p then break end
        n = n + #p
      end
      state.late = n
    else
      state.late = #res.body
    end
  end)
  return { ok = ok, v = v }
end)
-- a stream opened after the request ended (a child given up on runs on):
-- refused, as nothing would close it
api.get("/given-up-then-stream", function(req)
  local url = req.query.url
  api.with_timeout(10, function()
    api.sleep(150)
    local res, err = api.http.get(url, { stream = true })
    if res then res:close() end
    state.late = err or "opened"
  end)
  return { ok = true }
end)
api.get("/late", function() return { late = state.late or api.null } end)
api.get("/reset-late", function() state.late = nil return "ok" end)
api.post("/job", function(req)
  local id, err = api.jobs.add("fetch", req.body, { attempts = 1 })
  return { id = id or api.null, err = err or api.null }
end)
api.get("/job/:id", function(req)
  local j = api.jobs.get(req.params.id)
  if not j then return 404, { error = "no job" } end
  return j
end)
"""

JOB = r"""local api = require "devloop"
return function(data)
  local res, err = api.http.request(data.url, data.opts or {})
  if not res then return { err = err } end
  return { status = res.status, json = res.json }
end
"""


def job(srv, data):
    r = srv.request("POST", "/job", {"Content-Type": "application/json"}, json.dumps(data))
    jid = r.json()["id"]
    assert jid, r
    deadline = time.time() + 15
    while time.time() < deadline:
        j = srv.get("/job/" + jid).json()
        if j["state"] in ("completed", "failed"):
            return j
        time.sleep(0.05)
    raise AssertionError("job did not finish: %s" % j)


def test_on_start_hook(srv):
    assert "/echo/from-start" in UP.paths, UP.paths
    r = srv.get("/start-result")
    assert r.json()["result"] == 200, r
    load = r.json()["load"]
    assert load["ok"] and load["res"] is None and load["err"].startswith("invalid:"), load
    assert "/echo/from-load" not in UP.paths


def test_job_processor(srv):
    j = job(srv, {"url": UP.url("/echo/from-job"), "opts": {"method": "POST", "json": {"n": 1}}})
    assert j["state"] == "completed", j
    assert j["result"]["status"] == 200 and j["result"]["json"]["method"] == "POST", j
    assert json.loads(j["result"]["json"]["body"]) == {"n": 1}, j
    # an error is a value the processor sees
    j = job(srv, {"url": "http://127.0.0.1:%d/" % harness.free_port()})
    assert j["result"]["err"].startswith("connect:"), j
    # a slow upstream does not hold the worker: requests are served meanwhile
    r = srv.request("POST", "/job", {"Content-Type": "application/json"},
                    json.dumps({"url": UP.url("/slow?head=1500")}))
    jid = r.json()["id"]
    time.sleep(0.2)
    t0 = time.time()
    srv.alive()
    assert time.time() - t0 < 1
    deadline = time.time() + 10
    while srv.get("/job/" + jid).json()["state"] != "completed":
        assert time.time() < deadline
        time.sleep(0.05)


def test_given_up_call_finishes_detached(srv):
    # the function waits for the headers, or in a streamed read, when its
    # request ends: a buffered call finishes; a stream belongs to the request
    # and is closed with it, its reader told so
    for stream, path in (("0", "/slow?head=600"), ("1", "/slow?head=600"),
                         ("1", "/slow?mid=600")):
        t0 = time.time()
        r = srv.get("/given-up?stream=%s&url=%s" % (stream, UP.url(path)))
        assert r.status == 200 and r.json() == {"ok": False, "v": "timeout"}, r
        assert time.time() - t0 < 0.5
        deadline = time.time() + 5
        while srv.get("/late").json()["late"] is None and time.time() < deadline:
            time.sleep(0.05)
        late = srv.get("/late").json()["late"]
        if stream == "0":
            assert late == 200, late
        else:
            assert late == "invalid: the request that opened the stream has ended", late
        srv.get("/late")
        r = srv.request("POST", "/call", {"Content-Type": "application/json"},
                        json.dumps({"url": UP.url("/echo"), "opts": {}}))
        assert r.json()["status"] == 200
        assert httpc.metric(srv, "http_client_pool_connections", {"state": "busy"}) == 0
        srv.request("POST", "/call", {"Content-Type": "application/json"},
                    json.dumps({"url": UP.url("/echo"), "opts": {}}))
        # the next round starts clean
        srv.get("/reset-late")


def test_stream_after_the_request_ended_refused(srv):
    srv.get("/reset-late")
    srv.get("/given-up-then-stream?url=" + UP.url("/echo"))
    deadline = time.time() + 5
    while srv.get("/late").json()["late"] is None and time.time() < deadline:
        time.sleep(0.05)
    late = srv.get("/late").json()["late"]
    assert late.startswith("invalid: the request"), late
    srv.get("/reset-late")


def test_devloop_test(_):
    # `devloop test` runs requests in process: api.http works there too
    app = harness.new_app({
        "routes/r.lua": 'local api = require "devloop"\n'
                        'api.get("/out", function()\n'
                        '  local res, err = api.http.get("%s")\n'
                        '  return { status = res and res.status or 0, err = err or "" }\n'
                        'end)\n' % UP.url("/echo/from-devloop-test"),
        "tests/a_test.lua": 'local t = require "devloop.test"\n'
                            't.test("outbound", function()\n'
                            '  local r = t.get("/out")\n'
                            '  t.eq(r.json.err, "")\n'
                            '  t.eq(r.json.status, 200)\n'
                            'end)\n'})
    p = harness.run_devloop("test", app)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "/echo/from-devloop-test" in UP.paths


def test_metrics(srv):
    label = "127.0.0.1:%d" % UP.port
    before = httpc.metric(srv, "http_client_requests_total", {"host": label, "status_code": "200"}) or 0
    for _ in range(3):
        assert call(srv, UP.url("/echo")).get("status") == 200
    assert call(srv, UP.url("/status?code=404")).get("status") == 404
    call(srv, "http://127.0.0.1:%d/" % harness.free_port())
    m = lambda name, labels: httpc.metric(srv, name, labels)
    assert m("http_client_requests_total", {"host": label, "status_code": "200"}) == before + 3
    assert m("http_client_requests_total", {"host": label, "status_code": "404"}) == 1
    assert m("http_client_requests_total", {"status_code": "connect"}) >= 1
    assert m("http_client_request_duration_seconds_count", {"host": label}) >= 4
    assert m("http_client_pool_connections", {"state": "idle"}) >= 1
    assert m("http_client_pool_connections", {"state": "busy"}) == 0
    assert m("http_client_pool_connections", {"state": "waiting"}) == 0
    text = srv.get("/metrics").body.decode()
    assert "# TYPE http_client_requests_total counter" in text, text[:500]


if __name__ == "__main__":
    harness.main(globals(), app=harness.new_app({"app.lua": APP, "lib/state.lua": STATE,
                                                 "routes/r.lua": ROUTES + "\n" + httpc.ROUTES.replace('local api = require "devloop"\n', "", 1),
                                                 "jobs/fetch.lua": JOB}))
