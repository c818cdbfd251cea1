"""MongoDB faults. What needs no server runs everywhere: a MongoDB that
refuses connections, and one that accepts and never answers (the fault
proxy's blackhole in front of a closed port). Calls fail within
serverSelectionTimeoutMS at first; after MONGO_BREAKER_THRESHOLD timeouts
the breaker opens and they fail at once with EUNAVAIL; /health shows the db
DOWN with the breaker and the last error; /metrics the backend figures.
The recovery scenarios need a real server: they run when
DEVLOOP_TEST_MONGO_URI points at one, through the proxy, and are reported as
skipped when it is not set."""
import os
import time

import harness
from fault_proxy import FaultProxy
from harness import Server

URI = os.environ.get("DEVLOOP_TEST_MONGO_URI")


def find(s, coll="items"):
    t0 = time.time()
    r = s.request("POST", "/db/%s/find" % coll, {"Content-Type": "application/json"},
                  '{"query": {}}')
    return r, time.time() - t0


def metric(s, line_start):
    for line in s.get("/metrics").body.decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def check_fail_fast(uri, label):
    env = {"MONGO_URI": uri, "MONGO_BREAKER_THRESHOLD": "3", "MONGO_BREAKER_COOLDOWN_MS": "60000"}
    s = Server("db", env=env, workers=2)
    try:
        # the first calls (the app's own included: the job scheduler polls the
        # store) each fail within the selection timeout (300 ms), not the 5 s
        # default; then the breaker opens
        slow, codes, deadline = [], set(), time.time() + 10
        while "EUNAVAIL" not in codes:
            assert time.time() < deadline, codes
            r, took = find(s)
            assert r.status == 200, r
            j = r.json()
            assert j["ok"] is False and j["code"] in ("ETIMEDOUT", "EUNAVAIL"), j
            if j["code"] == "ETIMEDOUT":
                assert "no server reachable" in j["err"], j
            codes.add(j["code"])
            slow.append(took)
        assert max(slow) < 2.0, slow
        fast = []
        for _ in range(20):
            r, took = find(s)
            j = r.json()
            assert j["ok"] is False and j["code"] == "EUNAVAIL", j
            assert "circuit breaker open" in j["err"], j
            fast.append(took)
        fast.sort()
        print("# %s: %d calls before the breaker opened (slowest %.0f ms), then fail-fast "
              "median %.2f ms" % (label, len(slow), max(slow) * 1000,
                                  fast[len(fast) // 2] * 1000))
        assert fast[len(fast) // 2] < 0.1, fast
        h = s.get("/health")
        assert h.status == 200, h  # the cache (memory) is up: DEGRADED
        hj = h.json()
        db = hj["services"]["db"]
        assert hj["status"] == "DEGRADED" and db["status"] == "DOWN", hj
        assert db["breaker"] == "open" and "no server reachable" in db["last_error"], db
        assert metric(s, 'backend_breaker_state{backend="mongodb"}') == 2
        assert metric(s, 'backend_up{backend="mongodb"}') == 0
        assert metric(s, 'backend_operations_total{backend="mongodb",outcome="fast_fail"}') >= 20
        assert metric(s, 'backend_breaker_transitions_total{backend="mongodb",state="open"}') == 1
        out = s.output()
        assert out.count("mongodb: circuit breaker open") == 1, out[-2000:]
    finally:
        s.stop()


def test_refused():
    port = harness.free_port()
    check_fail_fast("mongodb://127.0.0.1:%d/t?serverSelectionTimeoutMS=300" % port, "refused")


def test_blackholed():
    # accepts, never answers: the proxy in front of a closed port
    with FaultProxy(harness.free_port()) as p:
        p.blackhole()
        check_fail_fast("mongodb://127.0.0.1:%d/t?serverSelectionTimeoutMS=300"
                        "&connectTimeoutMS=300" % p.port, "blackholed")


def test_bad_breaker_settings():
    """Every fault variable with a bad value stops start-up, the message
    naming that variable first (not REDIS_URL)."""
    import subprocess
    cases = (("MONGO_BREAKER_THRESHOLD", "-1"), ("MONGO_BREAKER_THRESHOLD", "five"),
             ("MONGO_BREAKER_THRESHOLD", " 5"), ("MONGO_BREAKER_COOLDOWN_MS", "0"),
             ("MONGO_BREAKER_COOLDOWN_MS", "+5"), ("REDIS_BREAKER_THRESHOLD", "-1"),
             ("REDIS_BREAKER_COOLDOWN_MS", "0"), ("REDIS_RECONNECT_MAX_MS", "1"),
             ("REDIS_RECONNECT_MAX_MS", "60001"))
    for name, value in cases:
        env = dict(os.environ, **{name: value})
        if name.startswith("MONGO"):
            env["MONGO_URI"] = "mongodb://127.0.0.1:1/t"
        else:
            env["REDIS_URL"] = "redis://127.0.0.1:1"
        p = subprocess.run([harness.BIN, "serve", os.path.join(harness.APPS, "db"), "--listen",
                            "127.0.0.1:%d" % harness.free_port()], env=env,
                           capture_output=True, text=True, timeout=20)
        assert p.returncode != 0 and name in p.stderr, (name, value, p.returncode, p.stderr)
        assert "REDIS_URL" not in p.stderr, p.stderr


def _mongo_host_port():
    rest = URI.split("://", 1)[1].split("/", 1)[0].split("@")[-1].split(",")[0]
    host, _, port = rest.partition(":")
    return host, int(port or 27017)


def test_real_server_down_and_back():
    if not URI:
        print("# skipped: DEVLOOP_TEST_MONGO_URI not set (no MongoDB server on this machine)")
        return
    host, port = _mongo_host_port()
    with FaultProxy(port, upstream_host=host) as p:
        uri = "mongodb://127.0.0.1:%d/devloop_faults?serverSelectionTimeoutMS=500" \
              "&directConnection=true" % p.port
        s = Server("db", env={"MONGO_URI": uri, "MONGO_BREAKER_COOLDOWN_MS": "300"}, workers=2)
        try:
            r, _ = find(s)
            assert r.json()["ok"] is True, r.json()
            for mode in ("refuse", "blackhole"):
                getattr(p, mode)()
                codes = set()
                deadline = time.time() + 10
                while time.time() < deadline and "EUNAVAIL" not in codes:
                    codes.add(find(s)[0].json().get("code"))
                assert "EUNAVAIL" in codes, codes
                assert s.get("/health").json()["services"]["db"]["status"] == "DOWN"
                p.passthrough()
                t0 = time.time()
                while not find(s)[0].json()["ok"]:
                    assert time.time() - t0 < 5, "no recovery"
                    time.sleep(0.05)
                print("# %s: recovered %.2f s after MongoDB answered" % (mode, time.time() - t0))
                assert s.get("/health").json()["services"]["db"]["status"] == "UP"
        finally:
            s.stop()


tests = {k: (lambda f: lambda _srv: f())(v) for k, v in dict(globals()).items()
         if k.startswith("test_") and callable(v)}
tests["ALLOWED_ERRORS"] = ["mongodb"]

if __name__ == "__main__":
    harness.main(tests, app=None)
