"""examples/devloop-api as a user meets it: the seeded data set, features
(offset pagination, cached under feature: and invalidated by writes),
milestones (cursor pagination), the dashboard, bearer tokens with
permissions (a tokens file with a plain and a sha256 entry) and the batch
endpoint."""
import hashlib
import json
import os
import shutil
import tempfile
import time

import harness
from harness import check_std_headers

DBDIR = tempfile.mkdtemp(prefix="devloop-api-")
EDITOR, VIEWER, OPS = "t-editor-" + "x" * 20, "t-viewer-" + "y" * 20, "t-ops-" + "z" * 20
TOKENS = os.path.join(DBDIR, "tokens.json")
with open(TOKENS, "w") as f:
    json.dump({"tokens": [
        {"token": EDITOR, "user": "ed", "permissions": ["UPDATE_FEATURE"]},
        {"token": VIEWER, "user": "vi", "permissions": []},
        {"sha256": hashlib.sha256(OPS.encode()).hexdigest(), "user": "ops",
         "permissions": ["UPDATE_FEATURE", "OTHER"]},
    ]}, f)
JSON = {"Content-Type": "application/json"}


def bearer(token):
    return dict(JSON, Authorization="Bearer " + token)


def batch(srv, ops, token=None):
    return srv.request("POST", "/api/batch", bearer(token) if token else JSON,
                       json.dumps({"operations": ops}))


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
    r = srv.request("PATCH", "/api/features/feat-000001", bearer(EDITOR),
                    json.dumps({"status": "completed"}))
    assert r.status == 200 and r.json()["status"] == "completed" and r.json()["updated_at"], r
    after = srv.get("/api/features?status=in-progress&limit=1").json()["pagination"]["total"]
    assert after == before - 1, (before, after)
    for body in ({}, {"status": "done"}, {"status": 3}):
        r = srv.request("PATCH", "/api/features/feat-000001", bearer(EDITOR), json.dumps(body))
        assert r.status == 400 and "status" in r.json()["message"], r
    r = srv.request("PATCH", "/api/features/none", bearer(OPS), json.dumps({"status": "blocked"}))
    assert r.status == 404


def test_auth_401_403(srv):
    body = json.dumps({"status": "blocked"})
    for headers in (JSON, bearer("wrong-token"), bearer(EDITOR[:-1]), bearer(EDITOR + "x"),
                    dict(JSON, Authorization="Basic " + EDITOR), dict(JSON, Authorization="Bearer")):
        r = srv.request("PATCH", "/api/features/feat-000002", headers, body)
        assert r.status == 401 and r.header("www-authenticate").startswith("Bearer"), (headers, r)
        j = r.json()
        assert j["error"] == "Unauthorized" and j["requestId"] == r.header("x-request-id"), j
    r = srv.request("PATCH", "/api/features/feat-000002", bearer(VIEWER), body)
    assert r.status == 403 and "UPDATE_FEATURE" in r.json()["message"], r
    assert r.json()["requestId"] == r.header("x-request-id")
    # the sha256 entry: the token itself is never in the file
    r = srv.request("PATCH", "/api/features/feat-000002", bearer(OPS), body)
    assert r.status == 200 and r.json()["status"] == "blocked", r


def test_batch_mixed_operations(srv):
    ops = [
        {"id": "a", "type": "getFeature", "params": {"id": "feat-000003"}},
        {"id": 2, "type": "getMilestone", "params": {"id": "ms-001"}},
        {"id": "c", "type": "getSystemHealth"},
        {"id": "d", "type": "nope", "params": {}},
        {"type": "getFeature", "params": {"id": "feat-000003"}},
        {"id": "f", "type": "getFeature", "params": [1, 2]},
        {"id": "g", "type": "getFeature", "params": "x"},
        {"id": "h", "type": "getFeature", "params": {"id": "missing"}},
        {"id": "i", "type": "updateFeatureStatus", "params": {"id": "feat-000004", "status": "bad"}},
        {"id": "j", "type": "getMilestone", "params": {}},
    ]
    r = batch(srv, ops)
    assert r.status == 200, r
    res = r.json()["results"]
    assert [x.get("id") for x in res] == ["a", 2, "c", "d", None, "f", "g", "h", "i", "j"], res
    assert res[0]["result"]["_id"] == "feat-000003" and "error" not in res[0]
    assert res[1]["result"]["_id"] == "ms-001"
    assert res[2]["result"]["status"] == "UP"
    assert "unknown operation type" in res[3]["error"]
    assert "id" in res[4]["error"]
    assert "params must be an object" in res[5]["error"] and "params" in res[6]["error"]
    assert "not found" in res[7]["error"]
    assert "unauthorized" in res[8]["error"]  # no token: the permission check comes first
    assert "id" in res[9]["error"]


def test_batch_permissions(srv):
    upd = {"id": "u", "type": "updateFeatureStatus", "params": {"id": "feat-000005", "status": "blocked"}}
    get = {"id": "g", "type": "getFeature", "params": {"id": "feat-000005"}}
    res = batch(srv, [upd, get], VIEWER).json()["results"]
    assert "forbidden" in res[0]["error"] and "UPDATE_FEATURE" in res[0]["error"], res
    assert res[1]["result"]["_id"] == "feat-000005"
    res = batch(srv, [upd, dict(upd, id="bad", params={"id": "feat-000005", "status": "x"})],
                EDITOR).json()["results"]
    assert res[0]["result"]["status"] == "blocked" and "status must be one of" in res[1]["error"], res
    assert srv.get("/api/features/feat-000005").json()["status"] == "blocked"


def test_batch_limits(srv):
    for body in ({}, {"operations": {}}, {"operations": {"a": 1}}, {"operations": "x"},
                 {"operations": []}, {"operations": [{"id": i, "type": "getSystemHealth"}
                                                     for i in range(101)]}):
        r = srv.request("POST", "/api/batch", JSON, json.dumps(body))
        assert r.status == 400 and r.json()["message"], (body, r)
    r = srv.request("POST", "/api/batch", JSON, "[1,2")
    assert r.status == 400, r
    ok = batch(srv, [{"id": i, "type": "getSystemHealth"} for i in range(100)])
    assert ok.status == 200 and len(ok.json()["results"]) == 100


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
                     env={"DEVLOOP_DB": os.path.join(DBDIR, "api.db"),
                          "DEVLOOP_TOKENS_FILE": TOKENS})
    finally:
        shutil.rmtree(DBDIR, ignore_errors=True)
