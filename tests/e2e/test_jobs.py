"""The job queue on the embedded store (issue 7, first part): processors from
jobs/TYPE.lua, priorities, retries with backoff, final failures, idempotent
ids, crash recovery by lease, hot reload of processors."""
import json
import os
import shutil
import signal
import tempfile
import threading
import time

import harness
from harness import Server

DBDIR = tempfile.mkdtemp(prefix="devloop-jobs-")
ENV = {"DEVLOOP_DB": os.path.join(DBDIR, "jobs.db"), "DEVLOOP_JOB_LEASE_MS": "1000"}
EXTRA_ENV = {}  # test_jobs_redis.py adds REDIS_URL


def add(srv, type_, data=None, **opts):
    r = srv.request("POST", "/jobs/add", {"Content-Type": "application/json"},
                    json.dumps({"type": type_, "data": data or {}, "opts": opts}))
    j = r.json()
    assert j["id"], j
    return j["id"]


def wait_state(srv, jid, states=("completed", "failed"), timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = srv.get("/jobs/" + jid)
        if r.status == 200 and r.json()["state"] in states:
            return r.json()
        time.sleep(0.05)
    raise AssertionError("job %s not in %s: %s" % (jid, states, srv.get("/jobs/" + jid).body))


def log(srv):
    return srv.get("/jobs-log").json()


def test_echo_and_shape(srv):
    jid = add(srv, "echo", {"x": [1, 2]})
    j = wait_state(srv, jid)
    assert j["state"] == "completed" and j["result"] == {"x": [1, 2]} and j["attempts_made"] == 1, j
    assert j["priority"] == "normal" and j["type"] == "echo" and j["timestamps"]["finished"], j
    assert srv.get("/jobs/nope").status == 404


def test_progress(srv):
    # a claimed job carries its stored progress (0): job:progress(n) must
    # still be the method, on both stores
    jid = add(srv, "progress")
    j = wait_state(srv, jid)
    assert j["state"] == "completed" and j["progress"] == 100 and j["result"] == {"id": jid}, j


def test_idempotent_job_id(srv):
    a = add(srv, "echo", {"n": 1}, job_id="same-id")
    b = add(srv, "echo", {"n": 2}, job_id="same-id")
    assert a == b == "same-id"
    assert wait_state(srv, "same-id")["result"] == {"n": 1}


def test_retries_with_exponential_backoff(srv):
    jid = add(srv, "flaky", backoff={"type": "exponential", "delay": 200})
    j = wait_state(srv, jid)
    assert j["state"] == "completed" and j["attempts_made"] == 3 and j["result"] == "third time lucky", j
    assert not j.get("error"), j  # the retries' error is gone once it completed
    ts = [e["t"] for e in log(srv) if e["id"] == jid]
    assert len(ts) == 3, ts
    g1, g2 = ts[1] - ts[0], ts[2] - ts[1]
    assert 0.18 < g1 < 0.6 and 0.38 < g2 < 1.0 and g2 > g1 * 1.5, (g1, g2)


def test_always_failing_job(srv):
    jid = add(srv, "always_fail", attempts=2, backoff={"type": "fixed", "delay": 50})
    j = wait_state(srv, jid, ("failed",))
    assert j["attempts_made"] == 2 and "it never works" in j["error"], j
    time.sleep(0.3)
    assert len([e for e in log(srv) if e["id"] == jid]) == 2


def test_unknown_type_fails_clearly(srv):
    jid = add(srv, "no_such_type", attempts=1)
    j = wait_state(srv, jid, ("failed",))
    assert "no processor for job type 'no_such_type'" in j["error"], j


def test_priorities(srv):
    srv.request("POST", "/jobs/pause", body="")
    ids = [add(srv, "record", {"kind": "low", "ms": 30}, priority="low") for _ in range(30)]
    ids += [add(srv, "record", {"kind": "high", "ms": 30}, priority="high") for _ in range(10)]
    srv.request("POST", "/jobs/resume", body="")
    for jid in ids:
        wait_state(srv, jid, timeout=30)
    kinds = [e["kind"] for e in log(srv) if e["kind"] in ("low", "high") and e["id"] in ids]
    assert kinds[:10] == ["high"] * 10, kinds[:14]


def test_metrics_and_counts(srv):
    c = srv.get("/jobs-counts").json()
    assert c["completed"] >= 1 and c["failed"] >= 1 and "high" in c["by_priority"], c
    text = srv.get("/metrics").body.decode()
    assert 'jobs_completed_total{type="echo"}' in text and "job_duration_seconds_bucket" in text


def test_crash_recovery(_):
    db = os.path.join(DBDIR, "crash-%d.db" % os.getpid())
    env = dict(ENV, DEVLOOP_DB=db)
    env.update(EXTRA_ENV)
    s = Server("jobs", env=env, workers=2)
    ids = [add(s, "effect", {"ms": 400, "n": i}) for i in range(50)]
    time.sleep(0.5)  # some active, most waiting
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s2 = Server("jobs", env=env, workers=2)
    try:
        for jid in ids:
            j = wait_state(s2, jid, timeout=40)
            assert j["state"] == "completed", j
        t = s2.get("/crash-tally").json()
        # at least once: the attempts running at the kill ran again; the
        # effect, idempotent by job id, happened exactly once per job
        assert t["effects"] == 50 and t["runs"] == 50 + t["repeated"], t
        assert 1 <= t["repeated"] <= 20, t
        print("# kill -9 with 50 jobs active or waiting: all 50 completed after restart; "
              "%d runs repeated (the attempts cut off by the kill), 50 effects (none twice)"
              % t["repeated"])
    finally:
        s2.stop()


def test_hot_reload_of_processors(_):
    app = tempfile.mkdtemp(prefix="devloop-jobapp-")
    shutil.copytree(os.path.join(harness.APPS, "jobs"), app, dirs_exist_ok=True)
    env = dict(ENV, DEVLOOP_DB=os.path.join(DBDIR, "reload.db"))
    env.update(EXTRA_ENV)
    s = Server(app, env=env)
    try:
        running = add(s, "slow", {"ms": 1500, "n": 1})
        time.sleep(0.3)
        path = os.path.join(app, "jobs", "slow.lua")
        harness.edit_file(path, '"v1"', '"v2"')
        deadline = time.time() + 5
        while "reload (files changed): generation 2" not in s.output():
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        after = add(s, "slow", {"ms": 10, "n": 2})
        assert wait_state(s, after)["result"]["version"] == "v2"
        assert wait_state(s, running)["result"]["version"] == "v1", "a running job finishes on its old code"
    finally:
        s.stop()
        shutil.rmtree(app, ignore_errors=True)


ALLOWED_ERRORS = ["job failed"]

if __name__ == "__main__":
    try:
        harness.main(globals(), app="jobs", env=ENV, workers=1)
    finally:
        shutil.rmtree(DBDIR, ignore_errors=True)
