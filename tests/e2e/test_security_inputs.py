"""Input bounds in the library (issue 17, item 7), tried as an attacker would.

Offset pagination (Collection:page) bounds page and limit, cursor pagination
(Collection:cursor_page) bounds limit: non-numeric, negative, fractional,
non-finite and absurd values are a 400 naming the parameter (EBADPARAM from
the helper), a valid page past the end is the contract's 200 with an empty
list, and nothing becomes a store error turned into a 500.

Query operator injection: a value decoded from JSON or MessagePack may be a
table like {"$ne": null}; where a plain value is expected, db.eq(value) and
Collection:find_by_id(id) refuse it (EBADPARAM) instead of letting it turn an
equality lookup into a scan.

examples/devloop-api is served as is (as test_devloop_api.py does); the
library's own helpers are driven through tests/e2e/apps/sec_inputs, started
next to it."""
import json
import math
import os
import shutil
import tempfile
import time

import msgpack

import harness

DBDIR = tempfile.mkdtemp(prefix="devloop-sec-inputs-")
EDITOR = "t-editor-" + "s" * 20
TOKENS = os.path.join(DBDIR, "tokens.json")
with open(TOKENS, "w") as f:
    json.dump({"tokens": [{"token": EDITOR, "user": "ed", "permissions": ["UPDATE_FEATURE"]}]}, f)
JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}
MAX_SAFE = 2 ** 53 - 1

# what a JSON or MessagePack body can put where an id is expected
OPERATOR_IDS = [{"$ne": None}, {"$gt": ""}, {"$gte": ""}, {"$exists": True}, {"$nin": []},
                {"$regex": "."}, {"$in": ["feat-000001", "ms-001", "t01"]},
                ["feat-000001"], {"_id": "feat-000001"}, {}, [], None, True]
# the same, without the values a scalar lookup could take (true)
NOT_SCALAR = [v for v in OPERATOR_IDS if v is not True]

BAD_PAGES = ["abc", "-1", "0", "1.5", "inf", "-inf", "nan", "1e309", "1e3", "0x10", "+1", "%201", "1%20",
             "1%00", "99999999999999999999", "9007199254740993", "9007199254740992"]
BAD_LIMITS = ["abc", "-1", "0", "1.5", "inf", "nan", "-inf", "1e309", "1e20", "0x10",
              "99999999999999999999", "9007199254740993"]


def bearer(token):
    return dict(JSON, Authorization="Bearer " + token)


def batch(srv, ops, token=None, pack=False):
    body = {"operations": ops}
    if pack:
        headers = dict(MSGPACK, Authorization="Bearer " + token) if token else MSGPACK
        return srv.request("POST", "/api/batch", headers, msgpack.packb(body))
    return srv.request("POST", "/api/batch", bearer(token) if token else JSON, json.dumps(body))


def bad_request(r, name, what):
    assert r.status == 400, (what, r)
    j = r.json()
    assert j["error"] == "Bad Request" and name in j["message"], (what, j)


def wait_seeded(srv):
    deadline = time.time() + 60
    while time.time() < deadline:
        r = srv.get("/api/dashboard")
        if r.status == 200 and r.json()["system_health"]:
            return
        time.sleep(0.2)
    raise AssertionError("the demo data set was not seeded")


_lib = []


def lib():
    """The sec_inputs app, started once beside examples/devloop-api."""
    if not _lib:
        _lib.append(harness.Server("sec_inputs"))
        deadline = time.time() + 30
        while time.time() < deadline:
            r = _lib[0].get("/ready")
            if r.status == 200 and r.json()["n"] == 30:
                break
            time.sleep(0.1)
    return _lib[0]


def post(srv, path, body, pack=False):
    if pack:
        return srv.request("POST", path, MSGPACK, msgpack.packb(body))
    return srv.request("POST", path, JSON, json.dumps(body))


# --- examples/devloop-api ------------------------------------------------------------------------

def test_00_seeded(srv):
    wait_seeded(srv)


def test_features_hostile_page(srv):
    for v in BAD_PAGES:
        bad_request(srv.get("/api/features?page=" + v), "page", v)
        bad_request(srv.get("/api/features?limit=5&page=" + v), "page", v)
    bad_request(srv.get("/api/features?page=1&page=2"), "page", "repeated")


def test_features_hostile_limit(srv):
    for v in BAD_LIMITS:
        bad_request(srv.get("/api/features?limit=" + v), "limit", v)
        bad_request(srv.get("/api/features?page=2&limit=" + v), "limit", v)
    bad_request(srv.get("/api/features?limit=1&limit=2"), "limit", "repeated")


def test_features_page_past_the_end(srv):
    # every page up to 2^53 - 1 is a page: past the end it is 200 and empty
    for page in ("10001", "200000000000000", "4503599627370496", str(MAX_SAFE)):
        for limit in ("1", "50", "100", "500"):
            r = srv.get("/api/features?page=%s&limit=%s" % (page, limit))
            assert r.status == 200, (page, limit, r)
            j = r.json()
            assert j["features"] == [] and b'"features":[]' in r.body, (page, j)
            assert j["pagination"]["total"] == 10000 and j["pagination"]["page"] == int(page), j
            assert j["pagination"]["limit"] == min(int(limit), 100), j
    j = srv.get("/api/features?page=2000&limit=5").json()
    assert len(j["features"]) == 5 and j["pagination"]["pages"] == 2000, j


def test_features_filter_is_literal(srv):
    # a repeated query key arrives as an array: refused, not compared as one
    bad_request(srv.get("/api/features?milestone=ms-001&milestone=ms-002"), "milestone", "array")
    j = srv.get("/api/features?milestone=ms-004&limit=100").json()
    assert j["features"] and all(f["milestone_id"] == "ms-004" for f in j["features"]), j


def test_milestones_hostile_limit(srv):
    for v in BAD_LIMITS:
        bad_request(srv.get("/api/milestones?limit=" + v), "limit", v)
    bad_request(srv.get("/api/milestones?limit=1&limit=2"), "limit", "repeated")
    first = srv.get("/api/milestones?limit=2").json()
    cursor = first["pagination"]["next_cursor"]
    for v in ("inf", "99999999999999999999", "-3"):
        bad_request(srv.get("/api/milestones?limit=%s&cursor=%s" % (v, cursor)), "limit", v)
    j = srv.get("/api/milestones?limit=500&cursor=" + cursor).json()
    assert j["pagination"]["limit"] == 100 and len(j["data"]) == 100, j["pagination"]


def _no_result(res, what):
    assert len(res) == 1 and "result" not in res[0], (what, res)
    assert "id" in res[0]["error"], (what, res)


def test_batch_get_operator_ids(srv):
    for pack in (False, True):
        for v in OPERATOR_IDS:
            for typ in ("getFeature", "getMilestone"):
                r = batch(srv, [{"id": 1, "type": typ, "params": {"id": v}}], pack=pack)
                assert r.status == 200, (typ, v, r)
                _no_result(r.json()["results"], (typ, v, pack))


def test_batch_update_operator_ids(srv):
    before = srv.get("/api/features?status=blocked&limit=1").json()["pagination"]["total"]
    for pack in (False, True):
        for v in NOT_SCALAR:
            op = {"id": "u", "type": "updateFeatureStatus", "params": {"id": v, "status": "blocked"}}
            r = batch(srv, [op], EDITOR, pack=pack)
            assert r.status == 200, (v, r)
            _no_result(r.json()["results"], (v, pack))
    after = srv.get("/api/features?status=blocked&limit=1").json()["pagination"]["total"]
    assert after == before, (before, after)


def test_patch_operator_status(srv):
    for pack in (False, True):
        for v in OPERATOR_IDS:
            body = {"status": v}
            data = msgpack.packb(body) if pack else json.dumps(body)
            headers = dict(MSGPACK, Authorization="Bearer " + EDITOR) if pack else bearer(EDITOR)
            r = srv.request("PATCH", "/api/features/feat-000009", headers, data)
            bad_request(r, "status", (v, pack))


# --- the library: db.eq, find_by_id, page, cursor_page -------------------------------------------

def test_lib_eq_refuses_operator_tables(srv):
    s = lib()
    touched = s.get("/touched").json()["n"]
    for path in ("/find_one", "/find_by_id", "/find", "/update", "/foau", "/delete"):
        for pack in (False, True):
            for v in NOT_SCALAR:
                r = post(s, path, {"id": v, "kind": "odd", "name": "thing 1"}, pack)
                assert r.status == 400, (path, v, pack, r)
                j = r.json()
                assert j["code"] == "EBADPARAM" and "id" in j["message"], (path, v, j)
    for pack in (False, True):
        for v in NOT_SCALAR:
            r = post(s, "/count", {"kind": v}, pack)
            assert r.status == 400 and "kind" in r.json()["message"], (v, r)
            r = post(s, "/find", {"id": "t01", "kind": "odd", "name": v}, pack)
            assert r.status == 400 and "name" in r.json()["message"], (v, r)
    # nothing was touched or removed by the refused calls
    assert s.get("/touched").json()["n"] == touched
    assert s.get("/ready").json()["n"] == 30
    assert post(s, "/count", {"kind": "odd"}).json()["result"] == 15


def test_lib_eq_plain_values(srv):
    s = lib()
    for pack in (False, True):
        r = post(s, "/find_one", {"id": "t07"}, pack)
        assert r.status == 200 and r.json()["result"]["_id"] == "t07", r
        r = post(s, "/find_by_id", {"id": "t08"}, pack)
        assert r.status == 200 and r.json()["result"]["name"] == "thing 8", r
        # a string that looks like an operator is only a string
        for v in ("$ne", '{"$ne":null}', "t0", "", 7, 7.5):
            assert post(s, "/find_by_id", {"id": v}, pack).status == 404, v
        # db.eq takes a boolean as a plain value; an id is a string or a number
        assert post(s, "/find_one", {"id": True}, pack).status == 404
        r = post(s, "/find_by_id", {"id": True}, pack)
        assert r.status == 400 and "id" in r.json()["message"], r
    ids = sorted(d["_id"] for d in post(s, "/find", {"id": "t02", "kind": "odd",
                                                      "name": "thing 3"}).json()["result"])
    assert ids == ["t02", "t03"], ids
    assert post(s, "/count", {"kind": "even"}).json()["result"] == 15
    assert post(s, "/count", {"kind": 0}).json()["result"] == 0
    before = s.get("/touched").json()["n"]
    assert post(s, "/update", {"id": "t30"}).status == 200
    assert post(s, "/foau", {"id": "t29"}).json()["result"]["touched"] is True
    assert s.get("/touched").json()["n"] == before + 2


def test_lib_page_bounds_from_query(srv):
    s = lib()
    for v in BAD_PAGES:
        r = s.get("/page?page=" + v)
        assert r.status == 400 and r.json()["code"] == "EBADPARAM", (v, r)
        assert "page" in r.json()["message"], (v, r)
    for v in BAD_LIMITS:
        r = s.get("/page?limit=" + v)
        assert r.status == 400 and "limit" in r.json()["message"], (v, r)
    r = s.get("/page?page=" + str(MAX_SAFE) + "&limit=10")
    assert r.status == 200 and r.json()["result"]["items"] == [], r
    p = s.get("/page?page=3&limit=7").json()["result"]
    assert (p["page"], p["limit"], p["total"], p["pages"], len(p["items"])) == (3, 7, 30, 5, 7), p
    p = s.get("/page?limit=50").json()["result"]
    assert p["limit"] == 10 and p["page"] == 1 and len(p["items"]) == 10, p
    p = s.get("/page?page=&limit=").json()["result"]
    assert p["limit"] == 10 and p["page"] == 1, p


def test_lib_page_bounds_from_bodies(srv):
    s = lib()
    numbers = [0, -1, 1.5, 1e20, 2 ** 53, 2 ** 63 - 1, 2 ** 64 - 1, -(2 ** 63), float("inf"), float("-inf"),
               float("nan"), 1e308, "1e2", "x", True, {"$gt": 0}, [1]]
    for pack in (False, True):
        for v in numbers:
            if not pack and isinstance(v, float) and not math.isfinite(v):
                continue  # JSON has no inf or nan
            for name in ("page", "limit"):
                r = post(s, "/page", {"kind": "odd", name: v}, pack)
                assert r.status == 400 and name in r.json()["message"], (name, v, pack, r)
            r = post(s, "/cursor", {"kind": "odd", "limit": v}, pack)
            assert r.status == 400 and "limit" in r.json()["message"], (v, pack, r)
        p = post(s, "/page", {"kind": "odd", "page": 2, "limit": 4}, pack).json()["result"]
        assert p["total"] == 15 and len(p["items"]) == 4 and p["pages"] == 4, p
        p = post(s, "/page", {"kind": "odd", "page": 2.0, "limit": 4.0}, pack).json()["result"]
        assert p["page"] == 2 and p["limit"] == 4, p
        r = post(s, "/page", {"kind": {"$ne": None}, "page": 1}, pack)
        assert r.status == 400 and "kind" in r.json()["message"], r
        r = post(s, "/cursor", {"kind": {"$ne": None}, "limit": 3}, pack)
        assert r.status == 400 and "kind" in r.json()["message"], r


def test_lib_cursor_limit_from_query(srv):
    s = lib()
    for v in BAD_LIMITS:
        r = s.get("/cursor?limit=" + v)
        assert r.status == 400 and "limit" in r.json()["message"], (v, r)
    seen, cursor = [], ""
    while True:
        p = s.get("/cursor?limit=4&cursor=" + cursor).json()["result"]
        assert p["limit"] == 4, p
        seen += [d["_id"] for d in p["items"]]
        if not p["has_more"]:
            break
        cursor = p["next_cursor"]
    assert seen == ["t%02d" % i for i in range(1, 31)], seen
    p = s.get("/cursor?limit=1000").json()["result"]
    assert p["limit"] == 10 and len(p["items"]) == 10, p


def test_zz_lib_stops_clean(srv):
    s = lib()
    s.stop()
    errors = [l for l in s.output().splitlines() if " error " in l]
    assert not errors, errors


if __name__ == "__main__":
    try:
        harness.main(globals(), app=os.path.join(harness.SRC, "examples", "devloop-api"),
                     env={"DEVLOOP_DB": os.path.join(DBDIR, "api.db"),
                          "DEVLOOP_TOKENS_FILE": TOKENS})
    finally:
        if _lib and _lib[0].proc.poll() is None:
            _lib[0].proc.kill()
        shutil.rmtree(DBDIR, ignore_errors=True)
