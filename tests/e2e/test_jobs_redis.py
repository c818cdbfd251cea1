"""The job queue on Redis: the embedded-store suite of test_jobs.py against a
real redis-server, two devloop processes sharing it (each of 1,000 jobs done
exactly once), and Redis down (add fails, routes keep answering)."""
import os
import subprocess
import time

import harness
import test_jobs
from harness import RedisServer, Server
from test_jobs import add, wait_state

REDIS = RedisServer()

tests = {k: v for k, v in vars(test_jobs).items() if k.startswith("test_")}


def test_backend_is_redis(srv):
    jid = add(srv, "echo", {"r": 1})
    wait_state(srv, jid)
    assert REDIS.cli("EXISTS", "dl:jobs:job:" + jid).strip() == "1"


def test_two_processes_exactly_once(_):
    env = dict(test_jobs.ENV, REDIS_URL=REDIS.url())
    a = Server("jobs", env=env, workers=2)
    b = Server("jobs", env=env, workers=2)
    try:
        ids = [add(a if i % 2 else b, "count_run") for i in range(1000)]
        for jid in ids:
            j = wait_state(a, jid, timeout=60)
            assert j["state"] == "completed" and j["attempts_made"] == 1, j
        counts = REDIS.cli("EVAL", "local t = {} for _, k in ipairs(redis.call('KEYS', 'runs:*')) "
                           "do t[#t + 1] = redis.call('GET', k) end return t", "0").split()
        assert len(counts) == 1000 and set(counts) == {"1"}, (len(counts), set(counts))
        print("# 1000 jobs over two processes sharing one Redis: each completed once "
              "(attempts_made 1 for all)")
    finally:
        a.stop()
        b.stop()


def test_redis_down_add_fails_routes_answer(_):
    r = RedisServer()
    env = dict(test_jobs.ENV, REDIS_URL=r.url(), REDIS_COMMAND_TIMEOUT_MS="300")
    s = Server("jobs", env=env)
    try:
        add(s, "echo")
        r.stop()
        time.sleep(0.3)
        t0 = time.time()
        j = s.request("POST", "/jobs/add", {"Content-Type": "application/json"},
                      '{"type": "echo", "data": {}}').json()
        assert j["id"] is None and "redis" in j["err"].lower(), j
        assert time.time() - t0 < 2
        assert s.get("/hello").status == 200
    finally:
        s.stop()
        r.stop()


def on_private_redis(fn):
    """The crash and reload tests start their own servers; they get a Redis
    of their own, or the suite's server would take part of their jobs."""
    def run(srv):
        r = RedisServer()
        test_jobs.EXTRA_ENV["REDIS_URL"] = r.url()
        try:
            fn(srv)
        finally:
            test_jobs.EXTRA_ENV.pop("REDIS_URL", None)
            r.stop()
    return run


tests["test_crash_recovery"] = on_private_redis(test_jobs.test_crash_recovery)
tests["test_hot_reload_of_processors"] = on_private_redis(test_jobs.test_hot_reload_of_processors)
tests["test_backend_is_redis"] = test_backend_is_redis
tests["test_two_processes_exactly_once"] = test_two_processes_exactly_once
tests["test_redis_down_add_fails_routes_answer"] = test_redis_down_add_fails_routes_answer
tests["ALLOWED_ERRORS"] = ["job failed"]

if __name__ == "__main__":
    try:
        harness.main(tests, app="jobs", env=dict(test_jobs.ENV, REDIS_URL=REDIS.url()), workers=1)
    finally:
        REDIS.stop()
