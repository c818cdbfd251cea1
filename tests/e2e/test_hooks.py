"""api.before and api.after (issue 21): app-wide and per-route hooks, in
declaration order, in the request's coroutine (they may yield); a before hook
that answers skips the rest; after hooks see every answer of the app (404,
405, handler errors, api.fail, cached answers, the built-in routes, HTTP/2
and in-process requests) and may change its status, headers and body before
it is encoded; an error in a hook is a 500 whose log line names the hook's
file and line; hooks belong to their generation (a reload replaces them)."""
import json
import os
import signal
import time

import harness
from harness import Server, curl, new_app

APP = {
    "app.lua": """
local api = require "devloop"
api.before(function(req)
  req.trail = { "app1" }
  if req.path == "/blocked" then return 403, { error = "blocked" }, { ["X-Why"] = "app" } end
  if req.path == "/preflight" and req.method == "OPTIONS" then return 204, nil, { ["X-Pre"] = "yes" } end
end)
api.before(function(req)
  api.sleep(0.001) -- hooks run in the request's coroutine: they may yield
  req.trail[#req.trail + 1] = "app2"
  if req.headers["x-boom"] == "before" then error("before hook failed") end
end)
api.after(function(req, res)
  res.headers["x-after"] = res.status .. ":" .. table.concat(req.trail or { "none" }, ",")
  if req.headers["x-boom"] == "after" then error("after hook failed") end
  if req.headers["x-status"] then res.status = tonumber(req.headers["x-status"]) end
  if req.headers["x-drop"] then res.headers[req.headers["x-drop"]] = nil end
end)
api.after(function(req, res)
  res.headers["x-after2"] = res.headers["x-after"] and "saw-first" or "alone"
end)
""",
    "routes/r.lua": """
local api = require "devloop"
api.get("/hi", function(req) return { hi = true, trail = req.trail } end)
api.get("/text", function() return 200, "plain", { ["X-Own"] = "mine" } end)
api.get("/boom", function() error("handler failed") end)
api.get("/fail", function() api.fail(422, "no good") end)
api.get("/nil-err", function() return nil, "backend down" end)
local hits = { n = 0 }
api.get("/cached", { cache = { ttl = 60 } }, function(req)
  hits.n = hits.n + 1
  return { n = hits.n }
end)
api.get("/route", {
    before = { function(req) req.trail[#req.trail + 1] = "r1" end,
               function(req) if req.query.deny then return 401, { error = "denied" } end
                 req.trail[#req.trail + 1] = "r2" end },
    after = function(req, res)
      if type(res.body) == "table" then res.body = { wrapped = res.body } end
      res.headers["x-route-after"] = "1"
    end },
  function(req) return { trail = req.trail } end)
api.get("/client", function(req)
  local r = api.client.get("/text")
  return { status = r.status, after = r.headers["x-after"] }
end)
""",
}


def j(r):
    return json.loads(r.body)


def test_app_hooks_in_order_and_yield(srv):
    r = srv.get("/hi")
    assert r.status == 200 and j(r) == {"hi": True, "trail": ["app1", "app2"]}, r
    assert r.header("x-after") == "200:app1,app2" and r.header("x-after2") == "saw-first", r.headers


def test_before_answer_skips_the_rest(srv):
    r = srv.get("/blocked")  # no route, yet the app's before hooks run first
    assert r.status == 403 and j(r) == {"error": "blocked"}, r
    assert r.header("x-why") == "app", r.headers
    # the second before hook did not run; the after hooks did
    assert r.header("x-after") == "403:app1", r.headers
    r = srv.request("OPTIONS", "/preflight")
    assert r.status == 204 and r.header("x-pre") == "yes", r


def test_route_hooks_inside_app_hooks(srv):
    r = srv.get("/route")
    assert r.status == 200 and j(r) == {"wrapped": {"trail": ["app1", "app2", "r1", "r2"]}}, r
    assert r.header("x-route-after") == "1" and r.header("x-after") == "200:app1,app2,r1,r2"
    r = srv.get("/route?deny=1")
    assert r.status == 401 and j(r) == {"wrapped": {"error": "denied"}}, r
    # other routes have no route hooks
    assert srv.get("/hi").header("x-route-after") is None


def test_after_sees_404_405_and_errors(srv):
    for path, status in (("/nope", 404), ("/boom", 500), ("/fail", 422), ("/nil-err", 500)):
        r = srv.get(path)
        assert r.status == status, (path, r)
        assert r.header("x-after") == "%d:app1,app2" % status, (path, r.headers)
        assert j(r)["requestId"] == r.header("x-request-id"), r
    r = srv.request("POST", "/hi")
    assert r.status == 405 and r.header("x-after") == "405:app1,app2", r
    assert r.header("allow") == "GET, HEAD", r.headers


def test_after_changes_status_headers_body(srv):
    r = srv.get("/text", {"X-Status": "202", "X-Drop": "x-own"})
    assert r.status == 202 and r.body == b"plain" and r.header("x-own") is None, r
    assert r.header("content-type").startswith("text/plain"), r.headers
    # a body replaced by a table is encoded as the client asks
    r = srv.get("/route", {"Accept": "application/msgpack"})
    assert r.status == 200 and r.header("content-type") == "application/msgpack", r


def test_cached_answer_passes_after_hooks(srv):
    a, b = srv.get("/cached"), srv.get("/cached")
    assert j(a) == j(b) == {"n": 1}, (a, b)
    assert b.header("x-after") == "200:app1,app2", b.headers


def test_builtin_routes_and_http2_and_inprocess(srv):
    r = srv.get("/health")
    assert r.header("x-after", "").startswith(("200:", "503:")), r.headers
    st, h, body = curl("--http2-prior-knowledge", srv.url("/hi"))
    assert st == 200 and h["x-after"] == "200:app1,app2", h
    r = srv.get("/client")
    assert r.status == 200 and j(r) == {"status": 200, "after": "200:app1,app2"}, r


def test_hook_errors_are_500_with_their_line(srv):
    r = srv.get("/hi", {"X-Boom": "before"})
    assert r.status == 500 and j(r)["requestId"] == r.header("x-request-id"), r
    assert r.header("x-after") == "500:app1,app2", r.headers  # after hooks still see it
    r = srv.get("/hi", {"X-Boom": "after"})
    assert r.status == 500 and r.header("x-after") is None, r
    deadline = time.time() + 5  # the log is written by its own thread
    while "after hook failed" not in srv.output() and time.time() < deadline:
        time.sleep(0.05)
    out = srv.output()
    assert "app.lua:11: before hook failed" in out, out[-2000:]
    assert "app.lua:15: after hook failed" in out, out[-2000:]


def test_review_findings(_):
    # a status an after hook sets as a string is a 500 (it would be taken for
    # the body); a before hook's failure idioms are failures, never a pass;
    # res.headers names are case-insensitive
    app = new_app({"app.lua": """
local api = require "devloop"
api.before(function(req)
  if req.path == "/nil-table" then return nil, { status = 401, message = "log in" } end
  if req.path == "/false" then return false, "no" end
  if req.path == "/nil-err" then return nil, "backend down" end
end)
api.after(function(req, res)
  if req.path == "/str" then res.status = "404" end
  res.headers["X-Frame-Options"] = "SAMEORIGIN"
end)
""", "routes/r.lua": """
local api = require "devloop"
for _, p in ipairs({ "/nil-table", "/false", "/nil-err", "/str", "/ok" }) do
  api.get(p, function() return 200, { admin_data = "leaked" }, { ["x-frame-options"] = "DENY" } end)
end
"""})
    srv = Server(app)
    try:
        r = srv.get("/nil-table")
        assert r.status == 401 and b"leaked" not in r.body and b"log in" in r.body, r
        for p in ("/false", "/nil-err", "/str"):
            r = srv.get(p)
            assert r.status == 500 and b"leaked" not in r.body, (p, r)
        r = srv.get("/ok")
        assert r.header_all("x-frame-options") == ["SAMEORIGIN"], r.headers
        deadline = time.time() + 5
        while "res.status" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        out = srv.output()
        assert 'an after hook set res.status to "404": it must be a number' in out, out[-2000:]
        assert "a before hook returned false: no" in out and "returned nil, backend down" in out
    finally:
        srv.stop(expect_code=None)


def test_answers_keep_their_shape_when_compiled(_):
    # hooks.pipeline passes up to seven values through the after hooks (a
    # file: status, path, headers, FILE_BODY, offset, length), the shorthand
    # as a 200 or 204, an explicit status with no body as it is; a hook's
    # mixed-case name replaces the handler's lower-case one. Many rounds:
    # LuaJIT compiles the path after some dozens, and that must answer alike.
    app = new_app({"data.txt": "0123456789", "app.lua": """
local api = require "devloop"
api.after(function(req, res)
  res.headers["X-Seen"] = tostring(res.status)
  if req.path == "/own" then res.headers["X-OWN"] = "hook" end
  if req.path == "/swap" then res.body = "swapped" end
end)
""", "routes/r.lua": """
local api = require "devloop"
local P = os.getenv("HOOKS_DATA")
local T = { ["Content-Type"] = "text/plain" }
api.get("/file", function() return 206, P, T, api.FILE_BODY, 2, 5 end)
api.get("/file-short", function() return P, T, api.FILE_BODY, 1, 3 end)
api.get("/swap", function() return 200, P, nil, api.FILE_BODY, 0, 4 end)
api.get("/own", function() return 200, "x", { ["x-own"] = "handler" } end)
api.get("/empty", function() end)
api.get("/status-only", function() return 201 end)
api.get("/hi", function() return { hi = 1 } end)
api.get("/h3", function() return 200, "h", { ["X-A"] = "1", ["x-b"] = 2, ["X-C"] = { "3", "4" } } end)
api.get("/h7", function()
  local h = { [1] = "not a name" }
  for i = 1, 7 do h["X-H" .. i] = tostring(i) end
  return "h", h
end)
"""})
    srv = Server(app, env={"HOOKS_DATA": os.path.join(app, "data.txt")})
    want = {
        "/file": (206, b"23456", "206"), "/file-short": (200, b"123", "200"),
        "/swap": (200, b"swapped", "200"), "/own": (200, b"x", "200"),
        "/empty": (204, b"", "204"), "/status-only": (201, b"", "201"),
        "/hi": (200, b'{"hi":1}', "200"), "/h3": (200, b"h", "200"), "/h7": (200, b"h", "200"),
    }
    try:
        for _ in range(80):
            for path, (status, body, seen) in want.items():
                r = srv.get(path)
                assert (r.status, r.body, r.header("x-seen")) == (status, body, seen), (path, r)
                if path == "/own":
                    assert r.header_all("x-own") == ["hook"], r.headers
                if path == "/h3":
                    assert (r.header("x-a"), r.header("x-b"), r.header_all("x-c")) == \
                        ("1", "2", ["3", "4"]), r.headers
                if path == "/h7":
                    assert [r.header("x-h%d" % i) for i in range(1, 8)] == \
                        [str(i) for i in range(1, 8)], r.headers
        assert srv.get("/swap").header("content-type").startswith("text/plain")
    finally:
        srv.stop()


def test_header_names_judged_every_time(_):
    # collect_headers keeps the names it judged (per worker): a name seen
    # before is still refused when the runtime sets it, whatever its case,
    # and its values are still checked; Content-Type and Cache-Control keep
    # their places in any case
    from urllib.parse import quote
    app = new_app({"app.lua": """
local api = require "devloop"
api.after(function(req, res) res.headers["x-hook"] = "1" end)
""", "routes/r.lua": """
local api = require "devloop"
api.get("/h", function(req)
  local q = req.query
  local v = q.v or "ok"
  if q.ctl then v = "a" .. string.char(tonumber(q.ctl)) .. "b" end
  return 200, "h", { [q.n] = v }
end)
"""})
    srv = Server(app)

    def get(name, value=None, ctl=None):
        path = "/h?n=" + quote(name, safe="")
        if value is not None:
            path += "&v=" + quote(value, safe="")
        if ctl is not None:
            path += "&ctl=%d" % ctl
        return srv.get(path)

    long30, long31 = "x-" + "a" * 28, "x-" + "b" * 29
    try:
        for _ in range(3):
            for name in ("x-n", "X-N", long30, long31):
                r = get(name)
                assert r.status == 200 and r.header(name) == "ok", (name, r)
                assert r.header("x-hook") == "1", r.headers
                for ctl in (0, 10, 13, 127):
                    assert get(name, ctl=ctl).status == 500, (name, ctl)
                assert get(name, ctl=9).status == 200, name  # a tab is allowed
            for name in ("Content-Length", "content-length", "DATE", "X-Request-Id",
                         "transfer-encoding", "Connection", "TE", "bad name", "x(y)", ""):
                assert get(name).status == 500, name
            for name in ("Cache-Control", "cache-control", "CACHE-CONTROL"):
                r = get(name, "max-age=60")
                assert r.header_all("cache-control") == ["max-age=60"], (name, r.headers)
            for name in ("Content-Type", "content-type"):
                r = get(name, "text/x-mine")
                assert r.header_all("content-type") == ["text/x-mine"], (name, r.headers)
    finally:
        srv.stop(expect_code=None)


ALLOWED_ERRORS = ["handler failed", "backend down", "before hook failed", "after hook failed",
                  "set by the runtime", "control character", "not a token"]


def test_hooks_belong_to_their_generation(_):
    app = new_app({"app.lua": 'local api = require "devloop"\n'
                              'api.after(function(req, res) res.headers["x-gen"] = "v1" end)\n',
                   "routes/r.lua": 'local api = require "devloop"\n'
                                   'api.get("/x", function() return "x" end)\n'})
    srv = Server(app)
    try:
        assert srv.get("/x").header("x-gen") == "v1"
        assert srv.get("/none").header("x-gen") == "v1"
        harness.edit_file(os.path.join(app, "app.lua"), '"v1"', '"v2"')
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while srv.get("/x").header("x-gen") != "v2" and time.time() < deadline:
            time.sleep(0.05)
        assert srv.get("/x").header("x-gen") == "v2"
        assert srv.get("/none").header("x-gen") == "v2"
        # a generation without hooks answers without them
        with open(os.path.join(app, "app.lua"), "w") as f:
            f.write("-- no hooks\n")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while srv.get("/x").header("x-gen") is not None and time.time() < deadline:
            time.sleep(0.05)
        assert srv.get("/x").header("x-gen") is None and srv.get("/none").header("x-gen") is None
    finally:
        srv.stop()


def test_misuse_fails_the_load_at_its_line(_):
    harness.check_fails({"app.lua": 'local api = require "devloop"\napi.before("x")\n'},
                        "app.lua:2:", "api.before needs a function, not string")
    harness.check_fails({"routes/r.lua": 'local api = require "devloop"\n'
                                         'api.get("/x", { after = { 1 } }, function() end)\n'},
                        "routes/r.lua:2:", "route option after[1] must be a function, not number")
    harness.check_fails({"routes/r.lua": 'local api = require "devloop"\n'
                                         'api.get("/x", { before = "f" }, function() end)\n'},
                        "routes/r.lua:2:", "route option before must be a function or a list")
    # declared while serving, not while loading: the handler fails, the server stays
    app = new_app({"routes/r.lua": 'local api = require "devloop"\n'
                                   'api.get("/late", function() api.after(function() end) end)\n'})
    srv = Server(app)
    try:
        r = srv.get("/late")
        assert r.status == 500, r
        deadline = time.time() + 5  # the log is written by its own thread
        while "while the app loads" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        assert "can only be declared while the app loads" in srv.output(), srv.output()[-1500:]
    finally:
        srv.stop()


if __name__ == "__main__":
    harness.main(globals(), app=new_app(APP), workers=2)
