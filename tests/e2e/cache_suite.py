"""The cache suite shared by both backends (test_cache_memory.py,
test_cache_redis.py): api.cache and cached routes behave the same on both."""
import gzip
import json
import threading
import time

import msgpack


def post(srv, path, doc):
    r = srv.request("POST", path, {"Content-Type": "application/json"}, json.dumps(doc))
    assert r.status == 200, r
    return r.json()


def get(srv, path, headers=None):
    r = srv.get(path, headers)
    assert r.status == 200, r
    return r


def cache_get(srv, key):
    from urllib.parse import quote
    return get(srv, "/cache/get?key=" + quote(key)).json()["value"]


def runs(srv):
    return get(srv, "/runs").json()["runs"]


def test_set_get_del(srv):
    assert post(srv, "/cache/set", {"key": "user:1", "value": "alice"})["ok"] is True
    assert cache_get(srv, "user:1") == "alice"
    doc = {"name": "x", "list": [1, 2, 3], "nested": {"a": [], "b": {}}}
    post(srv, "/cache/set", {"key": "user:2", "value": doc, "ttl": "long"})
    assert cache_get(srv, "user:2") == doc
    assert post(srv, "/cache/del", {"key": "user:1"})["count"] == 1
    assert cache_get(srv, "user:1") is None
    assert post(srv, "/cache/del", {"key": "user:1"})["count"] == 0


def test_large_values_roundtrip(srv):
    big = "x" * 200000 + "end"
    post(srv, "/cache/set", {"key": "query:big", "value": big})
    assert cache_get(srv, "query:big") == big
    doc = [{"i": i, "t": "text %d" % i} for i in range(2000)]
    post(srv, "/cache/set", {"key": "query:bigdoc", "value": doc})
    assert cache_get(srv, "query:bigdoc") == doc


def test_ttl_expiry(srv):
    post(srv, "/cache/set", {"key": "api:short", "value": "soon gone", "ttl": 1})
    assert cache_get(srv, "api:short") == "soon gone"
    time.sleep(1.3)
    assert cache_get(srv, "api:short") is None


def test_unknown_ttl_preset_is_an_error(srv):
    r = srv.request("POST", "/cache/set", {"Content-Type": "application/json"},
                    json.dumps({"key": "k", "value": "v", "ttl": "forever"}))
    assert r.status == 500, r


def test_invalidate_patterns_10000(srv):
    for batch in range(10):
        post(srv, "/cache/fill", {"prefix": "graph:n%d:" % batch, "n": 1000, "ttl": 300})
    post(srv, "/cache/fill", {"prefix": "milestone:", "n": 10, "ttl": 300})
    assert post(srv, "/cache/invalidate", {"pattern": "graph:n3:*"})["count"] == 1000
    assert post(srv, "/cache/invalidate", {"pattern": "graph:*"})["count"] == 9000
    assert cache_get(srv, "milestone:5") == "v5"
    assert post(srv, "/cache/invalidate", {"pattern": "milestone:?"})["count"] == 9
    assert cache_get(srv, "milestone:10") == "v10"


def test_cached_route_hits(srv):
    r1 = get(srv, "/cached/items?q=a")
    n = runs(srv)
    for _ in range(5):
        r = get(srv, "/cached/items?q=a")
        assert r.json() == r1.json()
    assert runs(srv) == n, "hits must not run the handler"
    get(srv, "/cached/items?q=b")
    assert runs(srv) == n + 1, "another query is another key"


def test_cached_route_gzip_as_stored(srv):
    plain = get(srv, "/cached/items?q=gz").body
    r = get(srv, "/cached/items?q=gz", {"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") == "gzip" and r.header("vary") == "Accept-Encoding"
    assert gzip.decompress(r.body) == plain
    r = get(srv, "/cached/items?q=gz", {"Accept-Encoding": "deflate"})
    import zlib
    assert zlib.decompress(r.body) == plain
    r = get(srv, "/cached/items?q=gz", {"Accept-Encoding": "identity"})
    assert r.body == plain and r.header("content-encoding") is None


def test_cached_route_representation_in_key(srv):
    j = get(srv, "/cached/items?q=rep").json()
    m = get(srv, "/cached/items?q=rep", {"Accept": "application/msgpack"})
    assert m.header("content-type") == "application/msgpack", m.headers
    mj = msgpack.unpackb(m.body)
    assert mj["items"] == j["items"] and mj["q"] == j["q"]
    assert mj["run"] != j["run"], "JSON and MessagePack are separate entries"
    j2 = get(srv, "/cached/items?q=rep")
    assert j2.header("content-type") == "application/json" and j2.json() == j


def test_cached_route_only_200(srv):
    n = runs(srv)
    for _ in range(3):
        assert srv.get("/cached/notfound").status == 404
    assert runs(srv) == n + 3


def test_cached_text_and_custom_key(srv):
    a = get(srv, "/cached/text")
    b = get(srv, "/cached/text")
    assert a.body == b.body and a.header("content-type") == "text/plain"
    n = runs(srv)
    assert get(srv, "/cached/keyed/7").json()["id"] == "7"
    get(srv, "/cached/keyed/7?ignored=1")
    assert runs(srv) == n + 1, "a key function decides the key"


def test_cached_route_ttl(srv):
    get(srv, "/cached/small")
    n = runs(srv)
    get(srv, "/cached/small")
    assert runs(srv) == n
    time.sleep(1.3)
    get(srv, "/cached/small")
    assert runs(srv) == n + 1


def test_invalidate_on_write(srv):
    get(srv, "/cached/items?q=w")
    n = runs(srv)
    get(srv, "/cached/items?q=w")
    assert runs(srv) == n
    assert post(srv, "/features/1", {})["invalidated"] >= 1
    get(srv, "/cached/items?q=w")
    assert runs(srv) == n + 1


def test_coalescing(srv):
    n = runs(srv)
    out = []

    def one():
        out.append(srv.get("/cached/items?q=coal&sleep=300"))

    ts = [threading.Thread(target=one) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r.status == 200 for r in out), out
    bodies = {r.body for r in out}
    assert len(bodies) == 1, "every waiter gets the leader's answer"
    assert runs(srv) == n + 1, "20 concurrent misses ran the handler %d times" % (runs(srv) - n)
