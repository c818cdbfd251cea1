"""Issue 17, item 1: the route cache keeps callers apart and stores only what
it can serve back whole. Two users (alice and bob) on a route with `auth` and
`cache`: bob never gets alice's answer, on a miss, a hit, a coalesced miss,
in MessagePack, and on Redis. A route without `auth` whose answer depends on
the caller, and credentials the library does not know. Answers with
Set-Cookie (either case) or with a file body are never stored; an answer
with other headers is stored with them (issue 18, item b: test_cache_headers);
a key function's nil skips the cache; plain answers still hit."""
import threading
import time

import msgpack

import harness
from harness import RedisServer, Server

ALICE = {"Authorization": "Bearer alice-token"}
ALICE_RO = {"Authorization": "Bearer alice-ro-token"}
BOB = {"Authorization": "Bearer bob-token"}


def get(srv, path, headers=None, status=200):
    r = srv.get(path, headers)
    assert r.status == status, r
    return r


def runs(srv, name):
    return get(srv, "/runs").json().get(name, 0)


def two_users(srv, path="/me"):
    a = get(srv, path, ALICE).json()
    assert a["user"] == "alice" and a["perms"] == ["ADMIN"], a
    b = get(srv, path, BOB).json()
    assert b["user"] == "bob" and b["perms"] == ["READ"], ("bob got someone else's answer", b)
    # hits: each gets their own stored answer back, the handler does not run
    n = runs(srv, "me")
    assert get(srv, path, ALICE).json() == a
    assert get(srv, path, BOB).json() == b
    assert runs(srv, "me") == n, "the second requests were not served from the cache"


def test_two_users_never_share_an_answer(srv):
    two_users(srv)
    assert get(srv, "/me", status=401).json()["error"] == "Unauthorized"
    r = get(srv, "/me", {"Authorization": "Bearer mallory-token"}, status=401)
    assert "alice" not in r.body.decode() and "bob" not in r.body.decode(), r


def test_same_user_other_permissions_is_another_caller(srv):
    get(srv, "/me?x=perm", ALICE)
    ro = get(srv, "/me?x=perm", ALICE_RO).json()
    assert ro["user"] == "alice" and ro["perms"] == [], ro


def test_msgpack_representation_per_user(srv):
    mp = {"Accept": "application/msgpack"}
    a = msgpack.unpackb(get(srv, "/me?x=mp", dict(ALICE, **mp)).body)
    b = msgpack.unpackb(get(srv, "/me?x=mp", dict(BOB, **mp)).body)
    assert a["user"] == "alice" and b["user"] == "bob", (a, b)


def test_coalesced_misses_stay_per_user(srv):
    # alice's slow miss is in flight when bob asks for the same target: bob
    # must not wait for (and get) alice's answer
    out = {}

    def fetch(name, headers):
        out[name] = get(srv, "/me?sleep=400&x=co", headers).json()

    ts = [threading.Thread(target=fetch, args=("alice", ALICE))]
    ts[0].start()
    time.sleep(0.1)
    ts.append(threading.Thread(target=fetch, args=("bob", BOB)))
    ts[1].start()
    for t in ts:
        t.join()
    assert out["alice"]["user"] == "alice" and out["bob"]["user"] == "bob", out


def test_permission_route_per_user(srv):
    assert get(srv, "/report", BOB).json()["user"] == "bob"
    get(srv, "/report", ALICE, status=403)  # alice lacks READ: refused, not served bob's
    j = get(srv, "/report", {"Authorization": "Bearer carol-token"}).json()
    assert j["user"] == "carol", ("carol got bob's answer", j)


def test_route_without_auth_keeps_callers_apart(srv):
    anon = get(srv, "/open?x=1").json()
    assert anon["user"] is None, anon
    assert get(srv, "/open?x=1", BOB).json()["user"] == "bob"
    assert get(srv, "/open?x=1", ALICE).json()["user"] == "alice"
    n = runs(srv, "open")
    assert get(srv, "/open?x=1").json() == anon and runs(srv, "open") == n


def test_unknown_credentials_bypass_the_cache(srv):
    # an app may check other schemes or tokens itself: such a request is never
    # given a stored answer, nor is its answer stored (RFC 9111 section 3.5)
    get(srv, "/open?x=2")
    n = runs(srv, "open")
    j = get(srv, "/open?x=2", {"Authorization": "Basic YWxpY2U6cHc="}).json()
    assert j["scheme"] == "Basic" and j["run"] == n + 1, j
    j = get(srv, "/open?x=2", {"Authorization": "Bearer app-own-jwt"}).json()
    assert j["scheme"] == "Bearer" and j["user"] is None and j["run"] == n + 2, j
    assert get(srv, "/open?x=2").json()["scheme"] is None


def test_set_cookie_is_never_stored(srv):
    for path, name in (("/cookie", "session=s"), ("/cookie-lower", "session=l")):
        r1 = get(srv, path, ALICE)
        r2 = get(srv, path, BOB)
        c1, c2 = r1.header("set-cookie"), r2.header("set-cookie")
        assert c1 and c1.startswith(name), r1.headers
        assert c2 and c2.startswith(name) and c2 != c1, ("a cookie was shared", c1, c2)
        assert r2.json()["run"] == r1.json()["run"] + 1, "a cookie answer came from the cache"


def test_other_headers_are_not_lost(srv):
    # stored with the answer: the hit has the ETag of the body it carries
    r1, r2 = get(srv, "/etag"), get(srv, "/etag")
    assert r1.header("etag") == '"v1"' and r1.body == b"tagged 1", r1
    assert r2.header("etag") == '"v1"' and r2.body == b"tagged 1", r2


def test_file_body_is_sent_not_cached_as_its_path(srv):
    for _ in range(2):
        r = get(srv, "/file")
        assert r.body == b"the file body\n", ("the file's path went out as the body", r.body)
    assert runs(srv, "file") == 2


def test_key_function_nil_skips_the_cache(srv):
    a = get(srv, "/keyed?v=1").json()
    assert get(srv, "/keyed?v=1").json() == a
    b = get(srv, "/keyed?v=2&nocache=1").json()
    c = get(srv, "/keyed?v=3&nocache=1").json()
    assert b["v"] == "2" and c["v"] == "3" and c["run"] == b["run"] + 1, (b, c)


def test_plain_answers_still_hit(srv):
    # (a Content-Type header in any case is the stored answer's type)
    r1, r2 = get(srv, "/text"), get(srv, "/text")
    assert r1.body == b"plain 1" and r2.body == b"plain 1", (r1.body, r2.body)
    assert r2.header("content-type").startswith("text/csv"), r2.headers


def test_two_users_on_redis(_):
    redis = RedisServer()
    s = None
    try:
        s = Server("sec-cache", env={"REDIS_URL": redis.url()})
        two_users(s, "/me?x=redis")
        keys = redis.cli("--scan", "--pattern", "user:*").split()
        assert len(keys) == 2 and all("alice" not in k and "bob" not in k for k in keys), keys
    finally:
        if s:
            s.stop()
        redis.stop()


ALLOWED_ERRORS = []

if __name__ == "__main__":
    harness.main(globals(), app="sec-cache")
