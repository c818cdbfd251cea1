"""examples/devloop-api as a user meets it: the seeded data set, features
(offset pagination, cached under feature: and invalidated by writes),
milestones (cursor pagination), and the dashboard."""
import json
import os
import shutil
import tempfile
import time

import harness
from harness import check_std_headers

DBDIR = tempfile.mkdtemp(prefix="devloop-api-")


def wait_seeded(srv):
    deadline = time.time() + 60
    while time.time() < deadline:
        r = srv.get("/api/dashboard")
        if r.status == 200 and r.json()["system_health"]:
            return
        time.sleep(0.2)
    raise AssertionError("the demo data set was not seeded")


def test_00_seeded(srv):
    wait_seeded(srv)


def test_ping(srv):
    r = srv.get("/api/ping")
    assert r.status == 200 and r.json()["pong"] is True
    check_std_headers(r)


def test_features_list_and_pagination(srv):
    j = srv.get("/api/features?limit=5&page=2").json()
    assert j["pagination"] == {"total": 10000, "page": 2, "pages": 2000, "limit": 5}, j
    assert len(j["features"]) == 5
    dates = [f["created_at"] for f in srv.get("/api/features?limit=100").json()["features"]]
    assert dates == sorted(dates, reverse=True)
    assert srv.get("/api/features?limit=500").json()["pagination"]["limit"] == 100
    r = srv.get("/api/features?page=9999")
    assert r.status == 200 and r.json()["features"] == [] and b'"features":[]' in r.body


def test_features_filters(srv):
    j = srv.get("/api/features?status=blocked&milestone=ms-004&limit=100").json()
    assert j["features"] and all(f["status"] == "blocked" and f["milestone_id"] == "ms-004"
                                 for f in j["features"]), j


def test_features_bad_input(srv):
    for q in ("limit=abc", "page=-1", "status=done", "limit=0", "page=1.5"):
        r = srv.get("/api/features?" + q)
        assert r.status == 400 and r.json()["message"], (q, r)


def test_feature_by_id(srv):
    assert srv.get("/api/features/feat-000007").json()["name"] == "Feature 7"
    assert srv.get("/api/features/nope").status == 404


def test_patch_invalidates_cached_lists(srv):
    before = srv.get("/api/features?status=in-progress&limit=1").json()["pagination"]["total"]
    r = srv.request("PATCH", "/api/features/feat-000001", {"Content-Type": "application/json"},
                    json.dumps({"status": "completed"}))
    assert r.status == 200 and r.json()["status"] == "completed", r
    after = srv.get("/api/features?status=in-progress&limit=1").json()["pagination"]["total"]
    assert after == before - 1, (before, after)
    for body in ({}, {"status": "done"}):
        r = srv.request("PATCH", "/api/features/feat-000001",
                        {"Content-Type": "application/json"}, json.dumps(body))
        assert r.status == 400 and "status" in r.json()["message"], r
    r = srv.request("PATCH", "/api/features/none", {"Content-Type": "application/json"},
                    json.dumps({"status": "blocked"}))
    assert r.status == 404


def test_milestones_cursor_walk(srv):
    seen, cursor = [], None
    while True:
        path = "/api/milestones?limit=7" + ("&cursor=" + cursor if cursor else "")
        j = srv.get(path).json()
        assert j["pagination"]["limit"] == 7
        seen += [m["_id"] for m in j["data"]]
        if not j["pagination"]["has_more"]:
            break
        cursor = j["pagination"]["next_cursor"]
    assert len(seen) == 200 and len(set(seen)) == 200
    assert srv.get("/api/milestones").json()["pagination"]["limit"] == 20
    assert srv.get("/api/milestones?limit=1000").json()["pagination"]["limit"] == 100
    for bad in ("nonsense", "00.11"):
        r = srv.get("/api/milestones?cursor=" + bad)
        assert r.status == 400 and "cursor" in r.json()["message"], r


def test_dashboard(srv):
    j = srv.get("/api/dashboard").json()
    assert j["milestones"] > 0 and j["active_features"] > 0 and j["completed_features"] > 0, j
    assert j["system_health"]["status"] == "UP", j


if __name__ == "__main__":
    try:
        harness.main(globals(), app=os.path.join(harness.SRC, "examples", "devloop-api"),
                     env={"DEVLOOP_DB": os.path.join(DBDIR, "api.db")})
    finally:
        shutil.rmtree(DBDIR, ignore_errors=True)
