"""api.db on the embedded SQLite backend through HTTP: CRUD, the query
subset, schemas, offset and cursor pagination (a full walk over 10,000
documents with duplicate timestamps), index use, parallel queries, several
workers writing at once, and kill -9 during writes."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import harness
from harness import Server

DBDIR = tempfile.mkdtemp(prefix="devloop-db-")
ENV = {"DEVLOOP_DB": os.path.join(DBDIR, "test.db")}


def op(srv, coll, name, **body):
    r = srv.request("POST", "/db/%s/%s" % (coll, name), {"Content-Type": "application/json"},
                    json.dumps(body))
    assert r.status == 200, r
    return r.json()


def ok(srv, coll, name, **body):
    j = op(srv, coll, name, **body)
    assert j["ok"] is True, j
    return j["result"]


def test_backend(srv):
    assert srv.get("/db/type").json() == {"type": "sqlite"}


def test_crud(srv):
    ids = ok(srv, "crud", "insert", docs=[{"name": "a", "n": 1}, {"name": "b", "n": 2},
                                          {"_id": "fixed", "name": "c", "n": 3}])
    assert len(ids) == 3 and ids[2] == "fixed" and len(ids[0]) == 24, ids
    assert ok(srv, "crud", "count", query={}) == 3
    doc = ok(srv, "crud", "find_one", query={"_id": "fixed"})
    assert doc == {"_id": "fixed", "name": "c", "n": 3}, doc
    j = op(srv, "crud", "insert", docs=[{"_id": "fixed"}])
    assert j["ok"] is False and j["code"] == "EDUPKEY", j
    assert ok(srv, "crud", "update", query={"name": "a"}, update={"$set": {"n": 10}}) == 1
    assert ok(srv, "crud", "update", query={}, update={"$inc": {"n": 1}}, multi=True) == 3
    new = ok(srv, "crud", "foau", query={"_id": "fixed"}, update={"$push": {"tags": "x"}})
    assert new["tags"] == ["x"] and new["n"] == 4, new
    assert ok(srv, "crud", "update", query={"_id": "fixed"}, update={"$unset": {"tags": 1}}) == 1
    # n is now a: 11, b: 3, fixed: 4
    assert ok(srv, "crud", "delete", query={"n": {"$gte": 4}}, multi=True) == 2
    assert ok(srv, "crud", "delete", query={"n": {"$gte": 0}}) == 1
    assert ok(srv, "crud", "count", query={}) == 0


def test_query_subset(srv):
    docs = [{"_id": "q%d" % i, "n": i, "s": "s%d" % (i % 3), "nested": {"k": i % 2},
             "tags": ["t%d" % (i % 4)]} for i in range(20)]
    docs.append({"_id": "qnull", "n": None})
    ok(srv, "q", "insert", docs=docs)
    c = lambda q: ok(srv, "q", "count", query=q)
    assert c({"n": 5}) == 1
    assert c({"n": {"$gt": 15}}) == 4 and c({"n": {"$lte": 1}}) == 2
    assert c({"n": {"$ne": 5}}) == 20
    assert c({"s": {"$in": ["s0", "s1"]}}) == 14 and c({"s": {"$nin": ["s0"]}}) == 14
    assert c({"nested.k": 1}) == 10
    assert c({"tags": "t1"}) == 5
    assert c({"n": None}) == 1 and c({"nested": {"$exists": False}}) == 1
    assert c({"$or": [{"n": 1}, {"n": 2}]}) == 2
    assert c({"$and": [{"n": {"$gt": 2}}, {"n": {"$lt": 6}}]}) == 3
    assert c({"n": "5"}) == 0, "a string never equals a number"
    j = op(srv, "q", "count", query={"s": {"$regex": "s"}})
    assert j["ok"] is False and "$regex" in j["err"], j
    r = ok(srv, "q", "find", query={"n": {"$gte": 0}},
           opts={"sort": [["n", -1]], "skip": 2, "limit": 3, "projection": {"n": 1}})
    assert r == [{"_id": "q17", "n": 17}, {"_id": "q16", "n": 16}, {"_id": "q15", "n": 15}], r


def test_schema_validation(srv):
    j = op(srv, "things", "insert_one", doc={"status": "new"})
    assert j["ok"] is False and "'name'" in j["err"], j
    j = op(srv, "things", "insert_one", doc={"name": "x", "status": "weird"})
    assert j["ok"] is False and "'status'" in j["err"] and "new, done" in j["err"], j
    j = op(srv, "things", "insert_one", doc={"name": 5})
    assert j["ok"] is False and "'name'" in j["err"], j
    d = ok(srv, "things", "insert_one", doc={"name": "ok", "code": "c1"})
    assert d["status"] == "new" and d["created_at"].endswith("Z") and d["_id"], d
    j = op(srv, "things", "update", query={"_id": d["_id"]}, update={"$set": {"status": "bad"}})
    assert j["ok"] is False and "'status'" in j["err"], j
    j = op(srv, "things", "insert_one", doc={"name": "dup", "code": "c1"})
    assert j["ok"] is False and j["code"] == "EDUPKEY", j


def test_index_is_used(srv):
    plan = ok(srv, "things", "explain", query={"status": "new"}, opts={"sort": [["created_at", -1]]})
    text = json.dumps(plan)
    assert "USING INDEX" in text.upper() or "USING COVERING INDEX" in text.upper(), plan
    plan = ok(srv, "things", "explain", query={"name": "x"})
    assert "SCAN" in json.dumps(plan).upper(), plan


def test_offset_pagination(srv):
    ok(srv, "pages", "insert", docs=[{"_id": "p%03d" % i, "created_at": "2026-01-%02d" % (i % 28 + 1)}
                                     for i in range(95)])
    p = ok(srv, "pages", "page", query={}, opts={"limit": 10, "page": 10})
    assert p["total"] == 95 and p["pages"] == 10 and len(p["items"]) == 5 and p["limit"] == 10, p
    p = ok(srv, "pages", "page", query={}, opts={"limit": 500, "page": 1})
    assert p["limit"] == 100
    p = ok(srv, "pages", "page", query={}, opts={"limit": 10, "page": 50})
    assert p["items"] == [] and p["total"] == 95


def test_cursor_walk_10000_with_ties(srv):
    docs = [{"_id": "c%05d" % i, "created_at": "2026-02-%02dT00:00:00Z" % (i % 20 + 1)}
            for i in range(10000)]
    ok(srv, "walk", "insert", docs=docs)
    ok(srv, "walk", "index", fields=["created_at"])
    seen, cursor, pages = [], None, 0
    while True:
        opts = {"limit": 100}
        if cursor:
            opts["cursor"] = cursor
        p = ok(srv, "walk", "cursor", query={}, opts=opts)
        seen += [d["_id"] for d in p["items"]]
        pages += 1
        if not p["has_more"]:
            assert p["next_cursor"] is None
            break
        cursor = p["next_cursor"]
    assert len(seen) == 10000 and len(set(seen)) == 10000, (len(seen), len(set(seen)))
    assert pages == 100
    keys = [(d["created_at"], d["_id"]) for d in docs]
    assert seen == [k[1] for k in sorted(keys)]


def test_bad_cursors(srv):
    ok(srv, "walk2", "insert", docs=[{"created_at": "x%d" % i} for i in range(5)])
    p = ok(srv, "walk2", "cursor", query={}, opts={"limit": 2})
    good = p["next_cursor"]
    for bad in ("garbage", good[:-1] + ("0" if good[-1] != "0" else "1"),
                "00" + good, good.replace(".", "")):
        j = op(srv, "walk2", "cursor", query={}, opts={"limit": 2, "cursor": bad})
        assert j["ok"] is False and j["code"] == "EBADCURSOR", (bad, j)


def test_parallel_queries(srv):
    ok(srv, "items", "insert", docs=[{"n": i} for i in range(50)])
    j = srv.get("/db/parallel").json()
    assert j["count"] == 50 and j["five"] == 5 and j["gt"] == 39, j


def test_malformed_input(srv):
    j = op(srv, "bad%20name!", "count", query={})
    assert j["ok"] is False, j
    j = op(srv, "crud", "count", query={"a\"b": 1})
    assert j["ok"] is False, j


def test_concurrent_writers_several_workers(_):
    env = dict(ENV, DEVLOOP_DB=os.path.join(DBDIR, "multi.db"))
    s = Server("db", env=env, workers=2)
    try:
        errors = []

        def writer(k):
            for i in range(100):
                j = op(s, "multi", "insert", docs=[{"w": k, "i": i}])
                if j["ok"] is not True:
                    errors.append(j)

        ts = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:3]
        assert ok(s, "multi", "count", query={}) == 800
    finally:
        s.stop()


def test_kill_9_during_writes(_):
    path = os.path.join(DBDIR, "crash.db")
    env = dict(ENV, DEVLOOP_DB=path)
    s = Server("db", env=env, workers=2)
    acked = []
    stop = threading.Event()

    def writer(k):
        i = 0
        while not stop.is_set():
            try:
                j = op(s, "crash", "insert", docs=[{"_id": "k%d-%d" % (k, i)}])
                if j["ok"]:
                    acked.append("k%d-%d" % (k, i))
            except Exception:  # noqa: BLE001 - the server is being killed
                return
            i += 1

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    stop.set()
    for t in ts:
        t.join()
    check = subprocess.run(["sqlite3", path, "PRAGMA integrity_check;"], capture_output=True,
                           text=True) if shutil.which("sqlite3") else None
    if check:
        assert check.stdout.strip() == "ok", check
    s2 = Server("db", env=env)
    try:
        n = ok(s2, "crash", "count", query={})
        assert n >= len(acked) and len(acked) > 50, (n, len(acked))
        for rid in acked[-20:]:
            assert ok(s2, "crash", "find_one", query={"_id": rid}), rid
        print("# kill -9 after %d acknowledged inserts: all present after reopen" % len(acked))
    finally:
        s2.stop()


ALLOWED_ERRORS = []

if __name__ == "__main__":
    try:
        harness.main(globals(), app="db", env=ENV)
    finally:
        shutil.rmtree(DBDIR, ignore_errors=True)
