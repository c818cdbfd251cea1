"""Concurrency: many keep-alive clients at once with every body checked, wrk
with zero errors, and parked handlers that never block their worker."""
import json
import os
import re
import subprocess
import threading
import time

import harness


def test_many_keepalive_clients(srv):
    errors = []
    counts = [0] * 40
    stop_at = time.time() + 4

    def client(i):
        try:
            c = srv.conn()
            n = 0
            while time.time() < stop_at:
                n += 1
                k = n % 4
                if k == 0:
                    r = c.request("GET", "/json")
                    ok = r.status == 200 and r.json() == {"message": "Hello, World!"}
                elif k == 1:
                    body = json.dumps({"client": i, "n": n})
                    r = c.request("POST", "/echo", {"Content-Type": "application/json"}, body)
                    ok = r.status == 200 and r.json()["body"] == {"client": i, "n": n}
                elif k == 2:
                    r = c.request("GET", "/params/%d/items/%d" % (i, n))
                    ok = r.json() == {"id": str(i), "item": str(n)}
                else:
                    r = c.request("GET", "/big")
                    ok = len(r.json()) == 200
                if not ok:
                    errors.append((i, n, r))
                counts[i] += 1
            c.close()
        except Exception as e:  # noqa: BLE001 - any failure is a test failure
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert sum(counts) > 1000, counts
    print("# %d requests from %d keep-alive clients" % (sum(counts), len(counts)))


def test_wrk_no_errors(srv):
    for path in ("/json", "/big"):
        out = subprocess.run(["wrk", "-t2", "-c100", "-d3s", "--timeout", "5s", srv.url(path)],
                             capture_output=True, text=True, timeout=30).stdout
        assert "Socket errors" not in out and "Non-2xx" not in out, out
        n = int(re.search(r"(\d+) requests in", out).group(1))
        assert n > 1000, out


def test_sleep_does_not_block_worker(srv):
    # one worker: a sleeping request must not delay another on the same loop
    res = {}

    def slow():
        res["slow"] = srv.get("/sleep/1500")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    t0 = time.time()
    for _ in range(20):
        assert srv.get("/hello").status == 200
    fast = time.time() - t0
    t.join()
    assert res["slow"].json() == {"slept": 1500}
    assert fast < 1.0, "requests waited for a sleeping handler: %.2fs" % fast


def test_many_parked_requests(srv):
    results = []

    def one():
        results.append(srv.get("/sleep/500").status)

    t0 = time.time()
    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    assert results.count(200) == 200, results
    assert elapsed < 5, elapsed


def test_parallel_runs_concurrently(srv):
    r = srv.get("/parallel")
    j = r.json()
    assert (j["a"], j["b"], j["c"]) == ("a", "b", "c"), j
    assert 0.25 < j["elapsed"] < 0.55, j


def test_parallel_error_and_nesting(srv):
    j = srv.get("/parallel-error").json()
    assert j["ok"] is False and "child failed" in j["err"], j
    assert srv.get("/parallel-nested").json() == {"sum": 13}


def test_with_timeout(srv):
    j = srv.get("/timeout/fast").json()
    assert j["ok"] is True and j["res"] == "in time" and j["elapsed"] < 0.2, j
    j = srv.get("/timeout/sync").json()
    assert j["ok"] is True and j["res"] == "at once", j
    j = srv.get("/timeout/slow").json()
    assert j["ok"] is False and j["res"] == "timeout" and 0.15 < j["elapsed"] < 0.5, j
    assert j["after"] == "after", j
    j = srv.get("/timeout/error").json()
    assert j["ok"] is False and "inner failure" in j["res"], j
    # the detached loser finishes later without touching the answered request
    time.sleep(2.2)


ALLOWED_ERRORS = []

if __name__ == "__main__":
    harness.main(globals(), workers=1)
