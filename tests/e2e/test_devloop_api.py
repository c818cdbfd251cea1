"""examples/devloop-api as a user meets it: the features routes, cached under
feature: and invalidated by writes."""
import json
import os

import harness
from harness import check_std_headers


def test_ping(srv):
    r = srv.get("/api/ping")
    assert r.status == 200 and r.json()["pong"] is True
    check_std_headers(r)


def test_features_list_and_pagination(srv):
    j = srv.get("/api/features?limit=5&page=2").json()
    assert j["pagination"] == {"total": 60, "page": 2, "pages": 12, "limit": 5}, j
    assert len(j["features"]) == 5
    dates = [f["created_at"] for f in srv.get("/api/features?limit=100").json()["features"]]
    assert dates == sorted(dates, reverse=True)
    assert srv.get("/api/features?limit=500").json()["pagination"]["limit"] == 100
    j = srv.get("/api/features?page=99").json()
    assert j["features"] == [] and srv.get("/api/features?page=99").body.count(b"[]") == 1


def test_features_filters(srv):
    j = srv.get("/api/features?status=blocked&milestone=ms-03&limit=100").json()
    assert j["features"] and all(f["status"] == "blocked" and f["milestone_id"] == "ms-03"
                                 for f in j["features"]), j


def test_features_bad_input(srv):
    for q in ("limit=abc", "page=-1", "status=done", "limit=0"):
        r = srv.get("/api/features?" + q)
        assert r.status == 400 and r.json()["message"], (q, r)


def test_feature_by_id(srv):
    assert srv.get("/api/features/feat-000007").json()["name"] == "Feature 7"
    assert srv.get("/api/features/nope").status == 404


def test_patch_invalidates_cached_lists(srv):
    before = srv.get("/api/features?status=in-progress&limit=100").json()["pagination"]["total"]
    r = srv.request("PATCH", "/api/features/feat-000001", {"Content-Type": "application/json"},
                    json.dumps({"status": "completed"}))
    assert r.status == 200 and r.json()["status"] == "completed", r
    after = srv.get("/api/features?status=in-progress&limit=100").json()["pagination"]["total"]
    assert after == before - 1, (before, after)
    for body in ({}, {"status": "done"}):
        r = srv.request("PATCH", "/api/features/feat-000001",
                        {"Content-Type": "application/json"}, json.dumps(body))
        assert r.status == 400 and "status" in r.json()["message"], r
    r = srv.request("PATCH", "/api/features/none", {"Content-Type": "application/json"},
                    json.dumps({"status": "blocked"}))
    assert r.status == 404


if __name__ == "__main__":
    harness.main(globals(), app=os.path.join(harness.SRC, "examples", "devloop-api"))
