"""api.rate_limit and the route option rate_limit (issue 21): a sliding
window counter in api.shared ("local": exact across the workers of a
process) or in Redis ("redis": exact across processes), keyed by req.ip or a
function; 429 with Retry-After over the limit, RateLimit-* headers on every
answer; a Redis outage fails open or closed as configured, logged once."""
import json
import threading
import time

import harness
from harness import RedisServer, Server, new_app

# a day-long window: no window edge falls inside a test run (one at midnight UTC)
APP = """
local api = require "devloop"
api.rate_limit{ limit = 10, window = 86400, store = "%s", on_error = "%s",
                key = function(req) return req.headers["x-client"] end }
"""
ROUTES = """
local api = require "devloop"
api.get("/x", function() return { ok = true } end)
api.get("/by-ip", { rate_limit = { limit = 3, window = 86400 } }, function() return "ip" end)
"""


def hammer(ports, n, client):
    out = []
    lock = threading.Lock()

    def one(i):
        r = harness.Conn(ports[i % len(ports)]).request("GET", "/x", {"X-Client": client})
        with lock:
            out.append(r)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def check_counts(rs, allowed):
    ok = [r for r in rs if r.status == 200]
    refused = [r for r in rs if r.status == 429]
    assert len(ok) == allowed and len(refused) == len(rs) - allowed, [r.status for r in rs]
    for r in refused:
        assert int(r.header("retry-after")) >= 1, r
        assert r.header("ratelimit-remaining") == "0" and r.header("ratelimit-limit") == "10", r
        body = json.loads(r.body)
        assert body["error"] == "Too Many Requests" and body["requestId"] == r.header("x-request-id")
        assert "rate limit of 10 requests per 86400 s" in body["message"], body
    rem = sorted(int(r.header("ratelimit-remaining")) for r in ok)
    assert rem == list(range(allowed)), rem  # each allowed one saw its own count


def test_local_store_exact_across_workers(_):
    app = new_app({"app.lua": APP % ("local", "open"), "routes/r.lua": ROUTES})
    srv = Server(app, workers=2)
    try:
        check_counts(hammer([srv.port], 25, "alice"), 10)
        # another key has its own count; no key (nil from the function): not limited
        assert srv.get("/x", {"X-Client": "bob"}).status == 200
        for _ in range(3):
            r = srv.get("/x")
            assert r.status == 200 and r.header("ratelimit-limit") is None, r
        # the route's own limit, keyed by req.ip by default, on top of the app's
        got = [srv.get("/by-ip", {"X-Client": "c%d" % i}).status for i in range(5)]
        assert got == [200, 200, 200, 429, 429], got
        r = srv.get("/by-ip", {"X-Client": "c9"})
        assert r.status == 429 and r.header("ratelimit-limit") == "3", r
        m = srv.get("/metrics").body.decode()
        assert 'rate_limit_refused_total{limiter="default"} 15' in m, m[-3000:]
        assert 'rate_limit_refused_total{limiter="/by-ip"} 3' in m
    finally:
        srv.stop()


def test_redis_store_exact_across_processes(_):
    redis = RedisServer()
    app = new_app({"app.lua": APP % ("redis", "open"), "routes/r.lua": ROUTES})
    env = {"REDIS_URL": redis.url()}
    a = Server(app, env=env, args=("--pid-file", app + "/a.pid"))
    b = Server(app, env=env, args=("--pid-file", app + "/b.pid"))
    try:
        check_counts(hammer([a.port, b.port], 24, "carol"), 10)
        assert a.get("/x", {"X-Client": "dave"}).status == 200
    finally:
        a.stop()
        b.stop()
        redis.stop()


def test_redis_outage_open_and_closed(_):
    redis = RedisServer()
    url = redis.url()
    redis.stop()  # nothing listens there now
    for mode, want in (("open", 200), ("closed", 503)):
        app = new_app({"app.lua": APP % ("redis", mode), "routes/r.lua": ROUTES})
        srv = Server(app, env={"REDIS_URL": url})
        try:
            t0 = time.time()
            for _ in range(3):
                r = srv.get("/x", {"X-Client": "erin"})
                assert r.status == want, (mode, r)
            assert time.time() - t0 < 5  # a dead store is not waited on per request
            deadline = time.time() + 5
            while "rate limit default" not in srv.output() and time.time() < deadline:
                time.sleep(0.05)
            out = srv.output()
            assert out.count("rate limit default: its redis store cannot be reached") == 1, out
            assert "failing " + mode in out, out
        finally:
            srv.stop()


SLIDING_TEST = """
local t = require "devloop.test"
local api = require "devloop"
local function get() return t.get("/x", { headers = { ["X-Client"] = "sam" } }) end
t.test("the window slides: the previous window counts for the part still covered", function()
  local now = api.now()
  t.advance(((math.floor(now / 10) + 1) * 10 - now) * 1000 + 1) -- just past a window start
  for i = 1, 4 do t.eq(get().status, 200) end
  local r = get()
  t.eq(r.status, 429)
  t.eq(r.headers["ratelimit-remaining"], "0")
  t.advance(10 * 1000) -- the next window: the last one still counts almost whole
  t.eq(get().status, 429)
  t.advance(5 * 1000) -- half way: the last window counts 4 * 0.5 = 2 of 4
  local ok = get()
  t.eq(ok.status, 200)
  t.eq(ok.headers["ratelimit-remaining"], "1") -- 4 - (2 + 1)
  t.eq(get().status, 200)
  t.eq(get().status, 429)
  t.advance(10 * 1000) -- two windows on: the first is gone
  for i = 1, 2 do t.eq(get().status, 200) end
end)
"""


def test_sliding_window(_):
    app = new_app({"app.lua": 'local api = require "devloop"\n'
                              'api.rate_limit{ limit = 4, window = 10, '
                              'key = function(req) return req.headers["x-client"] end }\n',
                   "routes/r.lua": ROUTES, "tests/sliding_test.lua": SLIDING_TEST})
    p = harness.run_devloop("test", app)
    assert p.returncode == 0 and "1 passed, 0 failed" in p.stdout, p.stdout + p.stderr


def test_misconfiguration_fails_the_load(_):
    cases = [
        ("api.rate_limit{ limit = 0 }", "rate_limit option limit must be a whole number from 1"),
        ('api.rate_limit{ limit = 5, store = "memcached" }', 'rate_limit option store must be "local" or "redis"'),
        ('api.rate_limit{ limit = 5, key = "ip" }', "rate_limit option key must be a function(req)"),
        ('api.rate_limit{ limit = 5, window = 0.5 }', "rate_limit option window must be a whole number of seconds"),
        ('api.rate_limit{ limit = 5, store = "redis" }', 'rate_limit option store = "redis" needs REDIS_URL'),
        ('api.rate_limit{ limit = 5, per = 60 }', "unknown rate_limit option 'per'"),
    ]
    for code, msg in cases:
        harness.check_fails({"app.lua": 'local api = require "devloop"\n' + code + "\n"},
                            "app.lua:2:", msg)


ALLOWED_ERRORS = []

if __name__ == "__main__":
    harness.main(globals(), app=None)
