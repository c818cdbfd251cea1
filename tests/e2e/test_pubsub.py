"""api.pubsub (issue 22, item 4, the in-process part): messages on channels
between the workers of one process. Two workers, real sockets: a POST
publishes and the subscribers of both workers receive, in publish order;
they record what they got in api.shared, read back through a GET. A
subscriber that raises is logged with its file and line and keeps
receiving; a reload ends the load-time subscriptions (the new code
subscribes again); a subscription made in a request ends with it; a full
queue drops and counts (or closes the subscription); bad arguments raise
with clear messages; /metrics shows the counters."""
import json
import os
import re
import tempfile
import time

import harness

APP_LUA = r"""local api = require "devloop"
local S = api.shared
local VERSION = "v1"
local W = api.worker_id

-- every message of "news", in order, per worker and per loaded version
api.pubsub.subscribe("news", function(msg, ch)
  local n = S.incr("n:" .. VERSION .. ":" .. W(), 1, 0)
  S.set("m:" .. VERSION .. ":" .. W() .. ":" .. n, ch .. "=" .. msg)
end)
-- raises on each message: logged, and it goes on
api.pubsub.subscribe("boom", function(msg)
  S.incr("boom:" .. W(), 1, 0)
  error("EXPECTED subscriber failure on " .. msg)
end)
api.pubsub.subscribe("count", function() S.incr("count:" .. W(), 1, 0) end)
-- made by a start hook (once per worker): it lasts across reloads
api.on_start(function()
  api.pubsub.subscribe("started", function() S.incr("started:" .. W(), 1, 0) end)
end)
-- yields until the test opens the gate: the next messages wait in its queue
local function gate(name)
  while not S.get("gate:" .. name) do api.sleep(20) end
end
api.pubsub.subscribe("slow", function(msg)
  gate("slow")
  S.incr("slow:" .. W(), 1, 0)
end)
api.pubsub.subscribe("slowclose", function(msg)
  gate("slowclose")
  S.incr("slowclose:" .. W(), 1, 0)
end, { on_overflow = "close" })
"""

ROUTES = r"""local api = require "devloop"
api.builtin_routes.stats_full = true
local S = api.shared
api.get("/hello", function() return "Hello, World!" end)
api.post("/pub/:ch", function(req)
  local b = req.body
  local total, err, name = 0, nil, nil
  for i = 1, (b.n or 1) do
    local n, e, nm = api.pubsub.publish(req.params.ch, b.n and (b.message .. i) or b.message)
    if not n then err, name = e, nm break end
    total = total + n
  end
  return { queued = total, err = err, name = name }
end)
api.post("/pubtable", function(req)
  return { queued = api.pubsub.publish("news", { a = 1 }) }
end)
api.get("/got/:version/:w", function(req)
  local pre = req.params.version .. ":" .. req.params.w
  local n = S.get("n:" .. pre) or 0
  local out = {}
  for i = 1, n do out[i] = S.get("m:" .. pre .. ":" .. i) end
  return { n = n, msgs = out }
end)
api.get("/count/:key", function(req) return { v = S.get(req.params.key) or 0 } end)
api.post("/open/:name", function(req) S.set("gate:" .. req.params.name, true) return {} end)
-- a subscription of this request: it receives while the request waits
api.get("/scoped", function(req)
  local got = {}
  local sub = assert(api.pubsub.subscribe("scoped", function(msg) got[#got + 1] = msg end))
  S.set("scoped:ready", true)
  local waited = 0
  while #got < 2 and waited < 5000 do api.sleep(20); waited = waited + 20 end
  S.set("scoped:ready", false)
  return { got = got }
end)
-- cancelled by hand: nothing more comes
api.get("/cancel", function(req)
  local got = 0
  local sub = assert(api.pubsub.subscribe("cancelme", function() got = got + 1 end))
  api.pubsub.publish("cancelme", "1")
  api.sleep(100)
  sub:cancel()
  local after = api.pubsub.publish("cancelme", "2")
  api.sleep(100)
  return { got = got, after = after }
end)
-- a subscriber that cancels its own subscription gets no second message
api.get("/selfcancel", function()
  local got = 0
  local sub
  sub = assert(api.pubsub.subscribe("self", function() got = got + 1; sub:cancel() end))
  api.pubsub.publish("self", "1"); api.pubsub.publish("self", "2"); api.pubsub.publish("self", "3")
  api.sleep(200)
  return { got = got, after = api.pubsub.publish("self", "4") }
end)
-- the request ends with messages queued and one running: nothing leaks
api.get("/endqueued", function()
  assert(api.pubsub.subscribe("eq", function(m)
    api.sleep(300)
    S.incr("eq:done", 1, 0)
  end))
  local n = 0
  for i = 1, 10 do n = n + api.pubsub.publish("eq", tostring(i)) end
  api.sleep(50)
  return { queued = n }
end)
-- a subscriber publishing on another channel, from its own task
api.pubsub.subscribe("relay", function(msg) api.pubsub.publish("news", "relayed " .. msg) end)
api.get("/misuse", function()
  local out = {}
  local cases = {
    pub_channel = function() return api.pubsub.publish(1, "m") end,
    pub_message = function() return api.pubsub.publish("c", 5) end,
    pub_nil = function() return api.pubsub.publish("c") end,
    sub_channel = function() return api.pubsub.subscribe(nil, function() end) end,
    sub_fn = function() return api.pubsub.subscribe("c", "f") end,
    sub_opts = function() return api.pubsub.subscribe("c", function() end, 3) end,
    sub_opt_value = function()
      return api.pubsub.subscribe("c", function() end, { on_overflow = "explode" })
    end,
    sub_opt_key = function()
      return api.pubsub.subscribe("c", function() end, { on_overflw = "drop" })
    end,
  }
  cases.not_tail = function() local n = api.pubsub.publish("c", false) return n end
  for name, f in pairs(cases) do
    local ok, err = pcall(f)
    out[name] = ok and "no error" or tostring(err)
  end
  local function fails(a, b, c) return tostring(a) .. " " .. tostring(b) .. " " .. tostring(c) end
  out.empty = fails(api.pubsub.publish("", "m"))
  out.long = fails(api.pubsub.publish(string.rep("c", 257), "m"))
  out.max_channel = fails(api.pubsub.publish(string.rep("c", 256), "m"))
  out.sub_empty = fails(api.pubsub.subscribe("", function() end))
  out.big = fails(api.pubsub.publish("c", string.rep("x", 4097)))
  out.fits = fails(api.pubsub.publish("c", string.rep("x", 4096)))
  return out
end)
-- more subscriptions than DEVLOOP_PUBSUB_MAX_SUBS on this worker
api.get("/toomany", function()
  local subs, err, name = {}, nil, nil
  for i = 1, 100 do
    local s, e, nm = api.pubsub.subscribe("many", function() end)
    if not s then err, name = e, nm break end
    subs[#subs + 1] = s
  end
  for _, s in ipairs(subs) do s:cancel() end
  return { made = #subs, err = err, name = name }
end)
"""

APP = tempfile.mkdtemp(prefix="devloop-pubsub-")
os.mkdir(os.path.join(APP, "routes"))
with open(os.path.join(APP, "routes", "p.lua"), "w") as f:
    f.write(ROUTES)
with open(os.path.join(APP, "app.lua"), "w") as f:
    f.write(APP_LUA)

# the subscriber of "boom" raises on purpose
ALLOWED_ERRORS = ["EXPECTED subscriber failure"]

QUEUE = 60


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
    last = None
    while time.time() - t0 < timeout:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("condition not met within %ss (last %r)" % (timeout, last))


def metric(srv, name):
    text = srv.get("/metrics").body.decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def test_a_both_workers_receive_in_order(srv):
    """One POST publishes 50 messages: each worker's subscriber gets all 50,
    in publish order, with the channel."""
    b = post(srv, "/pub/news", {"message": "m", "n": 50})
    assert b == {"queued": 100}, b  # 2 workers x 50
    want = ["news=m%d" % i for i in range(1, 51)]
    for w in (0, 1):
        got = wait_for(lambda: (lambda r: r if r["n"] >= 50 else None)(get(srv, "/got/v1/%d" % w)))
        assert got["msgs"] == want, (w, got["msgs"][:5])


def test_b_table_message_is_json(srv):
    n0 = [get(srv, "/got/v1/%d" % w)["n"] for w in (0, 1)]
    assert post(srv, "/pubtable") == {"queued": 2}
    for w in (0, 1):
        got = wait_for(lambda: (lambda r: r if r["n"] > n0[w] else None)(get(srv, "/got/v1/%d" % w)))
        assert got["msgs"][-1] == 'news={"a":1}', got["msgs"][-1]


def test_c_failing_subscriber_goes_on(srv):
    assert post(srv, "/pub/boom", {"message": "x", "n": 3}) == {"queued": 6}
    for w in (0, 1):
        wait_for(lambda: get(srv, "/count/boom:%d" % w)["v"] == 3)
    out = wait_for(lambda: (lambda o: o if "EXPECTED subscriber failure on x1" in o else None)(srv.output()))
    line = [l for l in out.splitlines() if "EXPECTED subscriber failure on x1" in l][0]
    assert "pubsub subscriber app.lua:" in line and 'on channel "boom"' in line, line
    assert "failed (it goes on" in line, line
    assert re.search(r"app\.lua:\d+: EXPECTED", line), line  # the raising line too


def test_d_scoped_subscription_ends_with_request(srv):
    import threading
    res = {}

    def hold():
        res["r"] = get(srv, "/scoped")

    t = threading.Thread(target=hold)
    t.start()
    wait_for(lambda: get(srv, "/count/scoped:ready")["v"] is True)
    q = post(srv, "/pub/scoped", {"message": "s", "n": 2})
    assert q == {"queued": 2}, q  # 2 messages, the one request's subscription
    t.join(10)
    assert res["r"] == {"got": ["s1", "s2"]}, res
    # the request ended: its subscription with it
    wait_for(lambda: post(srv, "/pub/scoped", {"message": "late"})["queued"] == 0)


def test_e_start_hook_subscription(srv):
    assert post(srv, "/pub/started", {"message": "x"}) == {"queued": 2}
    for w in (0, 1):
        wait_for(lambda: get(srv, "/count/started:%d" % w)["v"] == 1)


def test_e_self_cancel(srv):
    assert get(srv, "/selfcancel") == {"got": 1, "after": 0}


def test_e_request_ends_with_messages_queued(srv):
    assert get(srv, "/endqueued") == {"queued": 10}
    # the running call finishes; the 9 queued ones went with the subscription
    wait_for(lambda: get(srv, "/count/eq:done")["v"] == 1)
    time.sleep(0.7)
    assert get(srv, "/count/eq:done")["v"] == 1
    assert post(srv, "/pub/eq", {"message": "late"}) == {"queued": 0}


def test_e_relay(srv):
    n0 = [get(srv, "/got/v1/%d" % w)["n"] for w in (0, 1)]
    # the route file's "relay" subscription, on each worker, republishes on
    # "news", which both workers' subscribers get: 2 relays x 2 workers
    assert post(srv, "/pub/relay", {"message": "r"}) == {"queued": 2}
    for w in (0, 1):
        got = wait_for(lambda: (lambda r: r if r["n"] >= n0[w] + 2 else None)(get(srv, "/got/v1/%d" % w)))
        assert got["msgs"][n0[w]:] == ["news=relayed r"] * 2, got["msgs"][n0[w]:]


def test_check_records_without_subscribing(srv):
    import subprocess
    p = subprocess.run([harness.BIN, "check", APP], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, DEVLOOP_LOG_DIR="-"))
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)


def test_e_cancel(srv):
    assert get(srv, "/cancel") == {"got": 1, "after": 0}


def test_f_misuse_is_clear(srv):
    b = get(srv, "/misuse")
    assert "bad argument #1 to 'api.pubsub.publish' (string expected, got number)" in b["pub_channel"], b
    assert "bad argument #2 to 'api.pubsub.publish' (string or table expected, got number)" in b["pub_message"], b
    assert "bad argument #2 to 'api.pubsub.publish'" in b["pub_nil"] and "nil" in b["pub_nil"], b
    assert "bad argument #1 to 'api.pubsub.subscribe' (string expected, got nil)" in b["sub_channel"], b
    assert "bad argument #2 to 'api.pubsub.subscribe' (function expected, got string)" in b["sub_fn"], b
    assert "bad argument #3 to 'api.pubsub.subscribe'" in b["sub_opts"], b
    assert 'on_overflow must be "drop" or "close", not "explode"' in b["sub_opt_value"], b
    assert "on_overflw" in b["sub_opt_key"], b
    # raised at the app's line, not inside devloop
    assert re.search(r"p\.lua:\d+: bad argument #2 to 'api.pubsub.publish'", b["not_tail"]), b
    assert b["empty"] == "nil empty channel EINVAL", b
    assert b["long"] == "nil channel too long (more than 256 bytes) EINVAL", b
    assert b["max_channel"] == "0 nil nil", b
    assert b["sub_empty"] == "nil empty channel EINVAL", b
    assert b["big"].startswith("nil message too large (4097 bytes") and b["big"].endswith("ETOOBIG"), b
    assert b["fits"] == "0 nil nil", b


def test_g_subscription_cap(srv):
    b = get(srv, "/toomany")
    # 6 load-time and 1 start-hook subscriptions on this worker, the cap is 20
    assert b["made"] == 13 and b["name"] == "ETOOMANY", b
    assert "DEVLOOP_PUBSUB_MAX_SUBS" in b["err"], b


def test_h_overflow_drops_and_counts(srv):
    """"slow" waits at a gate and keeps QUEUE=60: of 100 published at once,
    each worker's subscriber queues 60 (one more when it took the first
    before the 61st came); the others are dropped and counted, and once
    the gate opens every queued one arrives."""
    d0 = metric(srv, "pubsub_dropped_total") or 0
    b = post(srv, "/pub/slow", {"message": "x", "n": 100})
    # the publishing worker runs nothing else while it publishes
    assert 2 * QUEUE <= b["queued"] <= 2 * QUEUE + 1, b
    dropped = 200 - b["queued"]
    wait_for(lambda: metric(srv, "pubsub_dropped_total") >= d0 + dropped, timeout=15)
    post(srv, "/open/slow")
    wait_for(lambda: sum(get(srv, "/count/slow:%d" % w)["v"] for w in (0, 1)) >= b["queued"])
    time.sleep(0.3)
    assert sum(get(srv, "/count/slow:%d" % w)["v"] for w in (0, 1)) == b["queued"]


def test_i_overflow_closes(srv):
    b = post(srv, "/pub/slowclose", {"message": "x", "n": 100})
    assert 2 * QUEUE <= b["queued"] <= 2 * QUEUE + 1, b
    # closed on both workers at once: nobody is subscribed any more
    assert post(srv, "/pub/slowclose", {"message": "y"}) == {"queued": 0}
    # a subscriber busy with a message learns it (and it is logged) when it
    # asks for the next one: open the gate
    post(srv, "/open/slowclose")
    out = wait_for(lambda: (lambda o: o if o.count('on channel "slowclose" closed') >= 2 else None)(srv.output()))
    assert "its queue was full" in out
    time.sleep(0.3)
    # what was queued went with the subscription: only the running ones ran
    assert sum(get(srv, "/count/slowclose:%d" % w)["v"] for w in (0, 1)) <= 1


def test_j_metrics(srv):
    wait_for(lambda: (metric(srv, "pubsub_published_total") or 0) >= 50)
    wait_for(lambda: (metric(srv, "pubsub_delivered_total") or 0) >= 100)
    # news, boom, slow, count, started, relay on 2 workers ("slowclose" is closed)
    wait_for(lambda: metric(srv, "pubsub_subscriptions") == 12)
    text = srv.get("/metrics").body.decode()
    assert "# TYPE pubsub_dropped_total counter" in text
    # /stats (full view): the hub's figures and this worker's load-time subscriptions
    st = srv.get("/stats").json()["pubsub"]
    assert st["hub"]["published"] >= 50 and st["hub"]["channels"] >= 5, st
    subs = {x["channel"]: x for x in st["subscriptions"]}
    assert subs["news"]["where"].startswith("app.lua:") and subs["news"]["messages"] >= 50, subs
    assert subs["boom"]["failures"] >= 3, subs
    assert "# TYPE pubsub_subscriptions gauge" in text


def test_z_reload_resubscribes(srv):
    """The new code subscribes again; the old load-time subscriptions end."""
    path = os.path.join(APP, "app.lua")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('local VERSION = "v1"', 'local VERSION = "v2"'))

    def switched():
        b = post(srv, "/pub/news", {"message": "probe"})
        return b["queued"] == 2 and all(get(srv, "/got/v2/%d" % w)["n"] > 0 for w in (0, 1))
    wait_for(switched, timeout=15)
    time.sleep(0.3)
    n1 = [get(srv, "/got/v1/%d" % w)["n"] for w in (0, 1)]
    assert post(srv, "/pub/news", {"message": "after"}) == {"queued": 2}  # v2's only
    for w in (0, 1):
        wait_for(lambda: get(srv, "/got/v2/%d" % w)["msgs"][-1] == "news=after")
    assert [get(srv, "/got/v1/%d" % w)["n"] for w in (0, 1)] == n1
    # the start hooks' subscriptions are neither ended nor made twice, and
    # they still run (the reloaded code did not take their worker's inbox)
    c0 = [get(srv, "/count/started:%d" % w)["v"] for w in (0, 1)]
    assert post(srv, "/pub/started", {"message": "y"}) == {"queued": 2}
    for w in (0, 1):
        wait_for(lambda: get(srv, "/count/started:%d" % w)["v"] == c0[w] + 1)


def test_k_concurrent_publishers_exact(srv):
    """10 clients x 10 POSTs x 5 messages, on both workers at once: every
    message queued is run exactly once, and queued + dropped is exactly
    500 x 2 subscriptions."""
    import threading
    def settled():  # earlier tests' drops published (worker 0's sweep, at most 1 s)
        a = metric(srv, "pubsub_dropped_total")
        time.sleep(1.1)
        b = metric(srv, "pubsub_dropped_total")
        return [b] if a == b and b is not None else None
    d0 = wait_for(settled)[0]
    queued, errors = [], []
    lock = threading.Lock()

    def client():
        for _ in range(10):
            try:
                b = post(srv, "/pub/count", {"message": "c", "n": 5})
                with lock:
                    queued.append(b["queued"])
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    q = sum(queued)
    assert 0 < q <= 1000, q
    wait_for(lambda: sum(get(srv, "/count/count:%d" % w)["v"] for w in (0, 1)) >= q)
    wait_for(lambda: metric(srv, "pubsub_dropped_total") - d0 == 1000 - q)
    time.sleep(0.3)
    assert sum(get(srv, "/count/count:%d" % w)["v"] for w in (0, 1)) == q


def test_settings_are_checked(srv):
    import subprocess
    for name, bad in (("DEVLOOP_PUBSUB_QUEUE", "0"), ("DEVLOOP_PUBSUB_MAX_MESSAGE", "lots"),
                      ("DEVLOOP_PUBSUB_MAX_SUBS", "2000000")):
        env = dict(os.environ, DEVLOOP_LOG_DIR="-")
        env[name] = bad
        p = subprocess.run([harness.BIN, "serve", APP, "--listen", "127.0.0.1:%d" % harness.free_port()],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and name in p.stderr, (name, p.returncode, p.stderr)


if __name__ == "__main__":
    harness.main(globals(), app=APP, workers=2,
                 env={"DEVLOOP_PUBSUB_QUEUE": str(QUEUE), "DEVLOOP_PUBSUB_MAX_SUBS": "20",
                      "DEVLOOP_PUBSUB_MAX_MESSAGE": "4096"})
