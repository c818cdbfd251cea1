"""The cache suite against a real redis-server started here, then api.redis
command families, pipelining, binary and 1 MB values, AUTH, and faults:
Redis absent at start, killed under load, answering slowly."""
import os
import subprocess
import threading
import time

import harness
from harness import RedisServer, Server
from cache_suite import *  # noqa: F401,F403 - the shared suite
from cache_suite import get, post, cache_get

REDIS = RedisServer()


def test_backend_is_redis(srv):
    assert get(srv, "/cache/type").json() == {"type": "redis"}
    assert get(srv, "/redis/ping").json() == {"ok": "PONG", "err": None}


def test_stored_format_and_client_name(srv):
    get(srv, "/cached/items?q=fmt")
    keys = REDIS.cli("--scan", "--pattern", "feature:*").split()
    assert "feature:json:/cached/items?q=fmt" in keys, keys
    raw = subprocess.run(["redis-cli", "-p", str(REDIS.port), "--no-raw", "GET",
                          "feature:json:/cached/items?q=fmt"], capture_output=True).stdout
    # an HTTP entry with its headers ('H'; 'h' was the format without them), gzip body
    assert raw.startswith(b'"dlHz200'), raw[:40]
    post(srv, "/cache/set", {"key": "user:fmt", "value": "tiny"})
    assert REDIS.cli("GET", "user:fmt").startswith("dlsi"), REDIS.cli("GET", "user:fmt")
    assert "name=devloop-api" in REDIS.cli("CLIENT", "LIST")
    ttl = int(REDIS.cli("TTL", "feature:json:/cached/items?q=fmt"))
    assert 250 < ttl <= 300, ttl


def test_command_families(srv):
    j = get(srv, "/redis/families").json()
    assert j["set"] == "OK" and j["set_nx"] is None and j["get"] == "v1" and j["missing"], j
    assert j["set_ex"] == "OK" and 0 < j["ttl"] <= 100 and j["expire"] == 1, j
    assert j["incr"] == 1 and j["incr2"] == 2, j
    assert j["hset"] == 2 and j["hget"] == "2" and j["hgetall"] == {"a": "1", "b": "2"}, j
    assert j["lpush"] == 2 and j["rpop"] == "x", j
    assert j["zadd"] == 3 and j["zrange"] == ["two", "three"], j
    assert j["publish"] == 0 and j["del"] == 1 and j["unlink"] == 1 and j["ping"] == "PONG", j
    assert j["info"] is True and j["scan_ok"] is True, j
    assert "unknown command" in j["err"].lower(), j
    # a command the shared pool cannot run says why (no api.pubsub exists to point to)
    assert j["subscribe_code"] == "EINVAL" and "SUBSCRIBE is not available through api.redis" \
        in j["subscribe_err"], j
    assert "api.pubsub" not in j["subscribe_err"], j
    assert j["call"] == "hi", j


def test_pipeline(srv):
    j = get(srv, "/redis/pipeline").json()
    assert j["n"] == 104 and j["first"] == "OK" and j["get"] == "42" and j["missing"], j
    assert "WRONGTYPE" in j["wrongtype"]["err"], j


def test_binary_and_1mb_values(srv):
    data = bytes(range(256)) * 4096  # 1 MiB with every byte value, NULs included
    r = srv.request("POST", "/redis/echo", {"Content-Type": "application/octet-stream"}, data)
    assert r.status == 200 and r.body == data, (r.status, len(r.body))


def test_scan_invalidation_leaves_others(srv):
    post(srv, "/cache/fill", {"prefix": "graph:keep:", "n": 5, "ttl": 300})
    post(srv, "/cache/fill", {"prefix": "graph:drop:", "n": 3000, "ttl": 300})
    assert post(srv, "/cache/invalidate", {"pattern": "graph:drop:*"})["count"] == 3000
    assert REDIS.cli("EXISTS", "graph:keep:3").strip() == "1"


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def with_server(env, fn, workers=1):
    s = Server("cache", env=env, workers=workers)
    try:
        fn(s)
    finally:
        s.stop()


def test_auth_password_server(_srv):
    secured = RedisServer(password="s3cret")
    try:
        def good(s):
            assert get(s, "/redis/ping").json()["ok"] == "PONG"
            get(s, "/cached/items?q=auth")
            assert "feature:json:/cached/items?q=auth" in secured.cli("--scan")
        with_server({"REDIS_URL": secured.url()}, good)

        def bad(s):
            # wrong password: cached routes still answer (the handler runs)
            for _ in range(3):
                assert s.get("/cached/items?q=nope").status == 200
            j = get(s, "/redis/ping").json()
            assert j["ok"] is False, j
        wrong = "redis://:wrong@127.0.0.1:%d/0" % secured.port
        with_server({"REDIS_URL": wrong, "REDIS_COMMAND_TIMEOUT_MS": "500"}, bad)
    finally:
        secured.stop()


def test_redis_absent_at_start(_srv):
    port = harness.free_port()

    def check(s):
        for _ in range(3):
            r = s.get("/cached/items?q=absent")
            assert r.status == 200, r
        # Redis arrives: the pool connects and caching starts working
        late = RedisServer(port=port)
        try:
            deadline = time.time() + 8
            while time.time() < deadline:
                s.get("/cached/items?q=late")
                if late.cli("EXISTS", "feature:json:/cached/items?q=late").strip() == "1":
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the cache never reached the late Redis")
        finally:
            late.stop()
    with_server({"REDIS_URL": "redis://127.0.0.1:%d" % port, "REDIS_COMMAND_TIMEOUT_MS": "300"},
                check)


def test_redis_killed_under_load(_srv):
    r2 = RedisServer()
    port = r2.port
    statuses, stop = [], threading.Event()

    def load(s):
        def client():
            c = s.conn()
            while not stop.is_set():
                try:
                    statuses.append(c.request("GET", "/cached/items?q=kill").status)
                except Exception:  # noqa: BLE001 - a dropped client connection is a failure
                    statuses.append(-1)
                    c = s.conn()
        ts = [threading.Thread(target=client) for _ in range(8)]
        for t in ts:
            t.start()
        time.sleep(1)
        rss_up = rss_kb(s.pid())
        r2.stop()
        time.sleep(0.5)
        rss_down0 = rss_kb(s.pid())
        time.sleep(1.5)
        rss_down = rss_kb(s.pid())
        back = RedisServer(port=port)
        time.sleep(2.5)
        stop.set()
        for t in ts:
            t.join(10)
        try:
            assert back.cli("EXISTS", "feature:json:/cached/items?q=kill").strip() == "1", \
                "no reconnect: the entry never came back"
        finally:
            back.stop()
        bad = [x for x in statuses if x != 200]
        assert not bad and len(statuses) > 500, (len(statuses), bad[:10])
        print("# %d requests while Redis was killed and restarted, 0 failed; RSS %d KiB up, "
              "%d -> %d KiB while down" % (len(statuses), rss_up, rss_down0, rss_down))
        if not os.environ.get("DEVLOOP_SANITIZED"):
            # the offline queue is bounded: no growth while Redis is away
            assert rss_down - rss_down0 < 2048, (rss_down0, rss_down)
    with_server({"REDIS_URL": "redis://127.0.0.1:%d" % port, "REDIS_COMMAND_TIMEOUT_MS": "300"},
                load, workers=2)


def test_redis_slow_command_timeout(_srv):
    r3 = RedisServer()

    def slow(s):
        get(s, "/cached/items?q=slow")
        r3.pause()
        try:
            t0 = time.time()
            r = s.get("/cached/items?q=slow2")
            took = time.time() - t0
            assert r.status == 200, r
            assert took < 2.0, "a stuck Redis must cost at most the command timeout: %.2fs" % took
            j = get(s, "/redis/ping").json()
            assert j["ok"] is False and "timed out" in j["err"], j
        finally:
            r3.resume()
        deadline = time.time() + 5
        while get(s, "/redis/ping").json()["ok"] != "PONG":
            assert time.time() < deadline, "the pool did not recover"
            time.sleep(0.1)
    try:
        with_server({"REDIS_URL": r3.url(), "REDIS_COMMAND_TIMEOUT_MS": "300"}, slow)
    finally:
        r3.stop()


ALLOWED_ERRORS = ["forever"]

if __name__ == "__main__":
    try:
        harness.main(globals(), app="cache", env={"REDIS_URL": REDIS.url()}, workers=1)
    finally:
        REDIS.stop()
