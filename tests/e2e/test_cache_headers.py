"""A cached route keeps the headers its handler returns (issue 18, item b):
CORS, Cache-Control, the app's own, a header with two values, on the miss
and on hits, in JSON and MessagePack, gzipped or not, over HTTP/1.1 and
HTTP/2, for requests that waited for the one that ran the handler, on the
in-process cache and on Redis. Set-Cookie is still never stored, nor an
answer whose headers an entry cannot hold; an entry of the format before
headers ('h') is a miss."""
import gzip
import os
import shutil
import subprocess
import tempfile
import threading

import msgpack

import harness
from harness import RedisServer, Server

ROUTES = r"""local api = require "devloop"
local runs = {}
local function count(name)
  runs[name] = (runs[name] or 0) + 1
  return runs[name]
end
api.get("/hello", function() return "Hello, World!" end)
api.get("/runs", function() return runs end)

local function headers()
  return { ["X-Custom"] = "kept", ["Cache-Control"] = "public, max-age=60",
           ["Access-Control-Allow-Origin"] = "https://app.example",
           ["X-Two"] = { "one", "two" }, ["X-Num"] = 42 }
end
api.get("/h", { cache = { ttl = 60 } }, function(req)
  api.sleep(tonumber(req.query.sleep) or 0)
  return 200, { run = count("h") }, headers()
end)
-- over the compression threshold
api.get("/big", { cache = { ttl = 60 } }, function()
  return { run = count("big"), pad = string.rep("devloop ", 400) }, headers()
end)
api.get("/text", { cache = { ttl = 60 } }, function()
  local h = headers()
  h["content-type"] = "text/csv"
  return 200, "a,b\n" .. count("text"), h
end)
-- a body the handler encoded itself: stored as it is, not gzipped again
api.get("/encoded", { cache = { ttl = 60 } }, function()
  count("encoded")
  return 200, string.rep("already-encoded ", 300),
         { ["Content-Encoding"] = "x-custom", ["Content-Type"] = "text/plain" }
end)
api.get("/cookie", { cache = { ttl = 60 } }, function()
  local n = count("cookie")
  return { run = n }, { ["X-Custom"] = "kept", ["Set-Cookie"] = "s=" .. n }
end)
api.get("/many", { cache = { ttl = 60 } }, function()
  local h = {}
  for i = 1, 70 do h["X-H" .. i] = tostring(i) end
  return { run = count("many") }, h
end)
"""


def make_app():
    d = tempfile.mkdtemp(prefix="devloop-cache-headers-")
    os.mkdir(os.path.join(d, "routes"))
    with open(os.path.join(d, "routes", "r.lua"), "w") as f:
        f.write(ROUTES)
    return d


APP = make_app()


def runs(srv, name):
    return srv.get("/runs").json().get(name, 0)


def check_headers(r, ctype="application/json"):
    assert r.status == 200, r
    assert r.header("x-custom") == "kept", r
    assert r.header("cache-control") == "public, max-age=60", r
    assert r.header_all("cache-control") == ["public, max-age=60"], r  # not the default too
    assert r.header("access-control-allow-origin") == "https://app.example", r
    assert sorted(r.header_all("x-two")) == ["one", "two"], r
    assert r.header("x-num") == "42", r
    assert r.header_all("content-type") == [ctype], r
    assert r.header("x-request-id") and r.header("date"), r


def miss_then_hit(srv, path, name, headers=None, ctype="application/json"):
    n = runs(srv, name)
    r1 = srv.get(path, headers)
    check_headers(r1, ctype)
    r2 = srv.get(path, headers)
    check_headers(r2, ctype)
    assert runs(srv, name) == n + 1, "the second request was not a hit"
    assert r1.body == r2.body
    return r1, r2


def suite(srv, tag):
    # JSON
    r1, _ = miss_then_hit(srv, "/h?" + tag, "h")
    assert r1.json()["run"] >= 1
    # MessagePack: its own entry, the same headers
    r1, _ = miss_then_hit(srv, "/h?" + tag, "h", {"Accept": "application/msgpack"},
                          "application/msgpack")
    assert "run" in msgpack.unpackb(r1.body)
    # gzip (the body is stored compressed) and not
    r1, _ = miss_then_hit(srv, "/big?" + tag, "big", {"Accept-Encoding": "gzip"})
    assert r1.header("content-encoding") == "gzip", r1
    assert b"devloop" in gzip.decompress(r1.body)
    r = srv.get("/big?" + tag)
    check_headers(r)
    assert r.header("content-encoding") is None and b"devloop" in r.body, r
    r1, _ = miss_then_hit(srv, "/big?mp" + tag, "big",
                          {"Accept-Encoding": "gzip", "Accept": "application/msgpack"},
                          "application/msgpack")
    assert r1.header("content-encoding") == "gzip", r1
    # a text body with its own Content-Type (in any case)
    r1, _ = miss_then_hit(srv, "/text?" + tag, "text", ctype="text/csv")
    assert r1.body.startswith(b"a,b\n"), r1
    # HTTP/2 (h2c, prior knowledge): a hit after the entries above
    for _ in range(2):
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
                            srv.url("/h?" + tag)], capture_output=True, text=True, timeout=20)
        head = p.stdout.lower()
        assert head.startswith("http/2 200"), p
        for line in ("x-custom: kept", "cache-control: public, max-age=60",
                     "access-control-allow-origin: https://app.example", "x-two: one",
                     "x-two: two", "content-type: application/json"):
            assert line in head, (line, head)
    # coalesced: the requests that waited get the headers too
    n = runs(srv, "h")
    out = [None] * 6

    def fetch(i):
        out[i] = srv.get("/h?co" + tag + "&sleep=400")

    ts = [threading.Thread(target=fetch, args=(i,)) for i in range(len(out))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in out:
        check_headers(r)
    assert len({r.body for r in out}) == 1, [r.body for r in out]
    assert runs(srv, "h") == n + 1, "the concurrent misses ran the handler more than once"


def not_stored(srv):
    # Set-Cookie: the answer goes out whole, every time from the handler
    n = runs(srv, "cookie")
    r1, r2 = srv.get("/cookie"), srv.get("/cookie")
    assert r1.header("set-cookie") == "s=%d" % (n + 1) and r1.header("x-custom") == "kept", r1
    assert r2.header("set-cookie") == "s=%d" % (n + 2), ("a cookie answer was stored", r2)
    # more headers than an entry holds: whole, not stored
    n = runs(srv, "many")
    r1, r2 = srv.get("/many"), srv.get("/many")
    assert all(r.header("x-h%d" % i) == str(i) for r in (r1, r2) for i in range(1, 71)), r1
    assert runs(srv, "many") == n + 2


def test_memory(_):
    srv = Server(APP)
    try:
        suite(srv, "mem")
        not_stored(srv)
        srv.stop()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


def test_redis(_):
    redis = RedisServer()
    srv = None
    try:
        srv = Server(APP, env={"REDIS_URL": redis.url()})
        suite(srv, "redis")
        not_stored(srv)
        assert redis.cli("GET", "api:json:/cookie") == "\n", "a Set-Cookie answer went to Redis"
        raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--no-raw", "GET",
                              "api:json:/h?redis"], capture_output=True).stdout
        assert raw.startswith(b'"dlHi200'), raw[:60]
        assert b"X-Custom" in raw and b"kept" in raw, raw
        # its own Content-Encoding: stored identity ('i'), sent as it is
        for _ in range(2):
            r = srv.get("/encoded", {"Accept-Encoding": "gzip"})
            assert r.header("content-encoding") == "x-custom", r.headers
            assert r.body == b"already-encoded " * 300, r.body[:60]
        assert runs(srv, "encoded") == 1
        raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--no-raw", "GET",
                              "api:json:/encoded"], capture_output=True).stdout
        assert raw.startswith(b'"dlHi200'), ("gzipped again", raw[:60])
        # an entry in the format before headers ('h') is a miss: the handler
        # runs and its answer, headers and all, replaces it
        old = b"dlhi200\x10application/json{\"old\":true}"
        subprocess.run(["redis-cli", "-p", str(redis.port), "-x", "SET", "api:json:/h?old"],
                       input=old, capture_output=True, check=True)
        n = runs(srv, "h")
        r = srv.get("/h?old")
        check_headers(r)
        assert r.json() == {"run": n + 1}, r
        raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--no-raw", "GET",
                              "api:json:/h?old"], capture_output=True).stdout
        assert raw.startswith(b'"dlHi200'), raw[:60]
        # a damaged entry is not served: logged, and the handler answers
        subprocess.run(["redis-cli", "-p", str(redis.port), "-x", "SET", "api:json:/h?bad"],
                       input=b"dlHi200\x10application/json\x00\x50{}", capture_output=True,
                       check=True)
        r = srv.get("/h?bad")
        check_headers(r)
        srv.stop()
    finally:
        if srv and srv.proc.poll() is None:
            srv.proc.kill()
        redis.stop()


if __name__ == "__main__":
    try:
        harness.main(globals(), app=None)
    finally:
        shutil.rmtree(APP, ignore_errors=True)
