"""Found by the second review of issue 19, each failing before its fix: a
route calling itself through api.client crashed the process; the requests
coalesced behind a failing cached miss hung; cached routes refused a long
Content-Type and replaced a handler's own one, and stored answers the
handler marked private, no-store or varying on another header; a NUL in a
collection name cut it short; a negative file range was clamped."""
import shutil
import threading
import time

import harness

ALLOWED_ERRORS = ["cannot encode", "api.client", "returned nil", "file range", "nested more"]

APP = harness.new_app({"routes/r.lua": r'''
local api = require "devloop"
api.get("/loop", function(req)
  local d = tonumber(req.query.d or "0")
  if d >= tonumber(req.query.max or "0") then return { depth = d } end
  local r, err = api.client.get("/loop?d=" .. (d + 1) .. "&max=" .. req.query.max)
  if not r then return 500, { err = err } end
  return r.status, r.body
end)
api.get("/c/nan", { cache = { prefix = "t", ttl = 60 } }, function()
  api.sleep(300)
  return { x = 0/0 }
end)
api.get("/c/longct", { cache = { prefix = "t", ttl = 60 } }, function()
  return 200, "x", { ["Content-Type"] = "text/plain; p=" .. string.rep("q", 300) }
end)
api.get("/c/vnd", { cache = { prefix = "t", ttl = 60 } }, function()
  return 200, { a = 1 }, { ["Content-Type"] = "application/vnd.api+json" }
end)
local n = 0
api.get("/c/private", { cache = { prefix = "t", ttl = 60 } }, function(req)
  n = n + 1
  return 200, { who = req.query.who, n = n }, { ["Cache-Control"] = req.query.cc }
end)
api.get("/c/vary", { cache = { prefix = "t", ttl = 60 } }, function(req)
  n = n + 1
  return 200, { lang = req.headers["accept-language"], n = n }, { Vary = req.query.vary }
end)
api.get("/nulcoll", function()
  local r, err, code = api.db["alias\0evil"]:find({})
  return { refused = r == nil, code = code }
end)
api.get("/file", function(req)
  return 200, require("devloop.core").app_dir() .. "/routes/r.lua", {}, api.FILE_BODY,
    tonumber(req.query.off),
    tonumber(req.query.len)
end)
'''}, prefix="devloop-rv19-")


def test_zz_client_recursion_is_not_a_crash(srv):
    r = srv.get("/loop?max=50")
    assert r.status == 200 and r.json() == {"depth": 50}, r
    r = srv.get("/loop?max=20000")  # it crashed the process (stack overflow)
    assert srv.proc.poll() is None, "devloop exited %s" % srv.proc.returncode
    assert r.status == 500, r
    assert "nested more than 64" in r.body.decode(), r.body


def test_coalesced_waiters_answered_when_leader_fails(srv):
    results = []

    def one():
        c = harness.Conn(srv.port, timeout=10)
        try:
            results.append(c.request("GET", "/c/nan").status)
        except Exception as e:  # the waiters hung until the timeout
            results.append(repr(e))
        c.close()
    ts = [threading.Thread(target=one) for _ in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.02)
    for t in ts:
        t.join()
    assert results == [500, 500, 500], results


def test_cached_route_long_content_type(srv):
    for _ in range(2):  # it was a 500 each time
        r = srv.get("/c/longct")
        assert r.status == 200 and r.header("content-type").endswith("q" * 300), r


def test_cached_route_keeps_handler_content_type(srv):
    for _ in range(2):  # miss, then hit
        r = srv.get("/c/vnd")
        assert r.header("content-type") == "application/vnd.api+json", r
        assert r.json() == {"a": 1}, r


def test_private_and_no_store_answers_not_stored(srv):
    for cc in ("private", "no-store", "max-age=0, Private", "no-store=x"):
        a = srv.get("/c/private?who=alice&cc=" + cc.replace(" ", "%20"))
        b = srv.get("/c/private?who=alice&cc=" + cc.replace(" ", "%20"))
        assert a.json()["n"] != b.json()["n"], (cc, "stored", a.body, b.body)
    a = srv.get("/c/private?who=bob&cc=public")
    b = srv.get("/c/private?who=bob&cc=public")
    assert a.json()["n"] == b.json()["n"], "a public answer is stored"


def test_vary_on_an_unkeyed_header_not_stored(srv):
    a = srv.get("/c/vary?vary=Accept-Language", {"Accept-Language": "fr"})
    b = srv.get("/c/vary?vary=Accept-Language", {"Accept-Language": "de"})
    assert b.json()["lang"] == "de", ("fr's answer served to de", b.body)
    a = srv.get("/c/vary?vary=Accept-Encoding")
    b = srv.get("/c/vary?vary=Accept-Encoding")
    assert a.json()["n"] == b.json()["n"], "Vary: Accept-Encoding is kept"


def test_collection_name_with_nul_refused(srv):
    r = srv.get("/nulcoll")
    assert r.json() == {"refused": True, "code": "EINVAL"}, r.json()


def test_negative_file_range_refused(srv):
    r = srv.get("/file?off=-5")
    assert r.status == 500, r  # it was clamped to 0 and sent
    r = srv.get("/file?off=0&len=-1")
    assert r.status == 500, r  # it was an empty 200
    r = srv.get("/file?off=0&len=5")
    assert r.status == 200 and r.body == b"\nloca", r


if __name__ == "__main__":
    try:
        harness.main(globals(), app=APP)
    finally:
        shutil.rmtree(APP, ignore_errors=True)
