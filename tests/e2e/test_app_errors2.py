"""No silent failures in an app's code (issue 18), second review: a cache on
a route that takes a body, collection and index names the store cannot use,
misspelled api.builtin_routes keys, route files in subfolders of routes/,
the api.redis pub/sub message, what a handler's return values mean (nil is a
204, false a 500, a status given as a string, an error table), a loosely
checked tokens.json, argument errors of api.sleep / api.with_timeout /
api.cache.set, and body_limit values that are not a whole number of bytes.
Each mistake fails the load (`devloop check` exit 1) naming the file, line and
key, or answers and logs what is wrong."""
import hashlib
import os
import shutil
import signal
import time

import harness
from harness import BIN, RedisServer, Server


def new_app(files):
    return harness.new_app(files, prefix="devloop-apperr2-")


run = harness.run_devloop



def check_fails(files, where, message):
    return harness.check_fails(files, where, message, prefix="devloop-apperr2-")


def check_ok(files):
    app = new_app(files)
    try:
        p = run("check", app)
        assert p.returncode == 0 and p.stderr == "", (files, p)
    finally:
        shutil.rmtree(app)


def wait_for(fn, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met within %ss" % timeout)


API = 'local api = require "devloop"\n'


def test_cache_only_on_get_and_head_routes(_):
    h = 'function(req) return { got = req.body } end'
    for decl, method in (('api.post("/x", { cache = true }, %s)', "POST"),
                         ('api.put("/x", { cache = { ttl = 5 } }, %s)', "PUT"),
                         ('api.patch("/x", { cache = true }, %s)', "PATCH"),
                         ('api.delete("/x", { cache = true }, %s)', "DELETE"),
                         ('api.route({ "GET", "POST" }, "/x", { cache = true }, %s)', "POST"),
                         ('api.route("*", "/x", { cache = true }, %s)', "POST")):
        check_fails({"routes/r.lua": API + (decl % h) + "\n"}, "routes/r.lua:2:",
                    "route %s /x: cache only applies to GET and HEAD routes" % method)
    # GET, GET+HEAD, and cache = false on a POST stay fine
    check_ok({"routes/r.lua": API + 'api.get("/a", { cache = true }, %s)\n' % h +
              'api.route({ "GET", "HEAD" }, "/b", { cache = { ttl = 5 } }, %s)\n' % h +
              'api.post("/c", { cache = false }, %s)\n' % h})


SCHEMA = API + 'api.db.define(%s, %s)\n'


def test_db_define_refuses_names_the_store_cannot_use(_):
    check_fails({"app.lua": SCHEMA % ('"bad name!"', "{}")}, "app.lua:2:",
                'db.define("bad name!"): invalid collection name (1-64 of [A-Za-z0-9_])')
    check_fails({"app.lua": SCHEMA % ('"%s"' % ("c" * 65), "{}")}, "app.lua:2:",
                'db.define("%s"): invalid collection name (1-64 of [A-Za-z0-9_])' % ("c" * 65))
    cases = [
        ('{ indexes = { { "a b\'); DROP TABLE x;--" } } }',
         'db.define("t"): indexes[1][1]: invalid field name "a b\'); DROP TABLE x;--" '
         '(dotted segments of [A-Za-z0-9_-])'),
        ('{ indexes = { {} } }', 'db.define("t"): indexes[1] has no fields'),
        ('{ indexes = { { "" } } }', 'db.define("t"): indexes[1][1]: invalid field name ""'),
        ('{ indexes = { { fields = {} } } }', 'db.define("t"): indexes[1] has no fields'),
        ('{ indexes = { { fields = { "ok", "a..b" } } } }',
         'db.define("t"): indexes[1].fields[2]: invalid field name "a..b"'),
        ('{ indexes = { { fields = { "code" }, unique = "yes" } } }',
         'db.define("t"): indexes[1].unique must be true or false, not "yes"'),
        ('{ indexes = { { { "a", 2 } } } }',
         'db.define("t"): indexes[1][1]: the direction must be 1 or -1, not 2'),
    ]
    for schema, message in cases:
        check_fails({"app.lua": SCHEMA % ('"t"', schema)}, "app.lua:2:", message)
    check_ok({"app.lua": SCHEMA % ('"Things_2"', '{ indexes = { { "status", "-created_at", "meta.a-b" }, '
                                   '{ fields = { "code" }, unique = true }, { fields = "x", unique = false }, '
                                   '{ { "y", -1 } }, "z" } }')})


def test_builtin_routes_keys_and_values_at_the_apps_line(_):
    cases = [
        ("api.builtin_routes.metrix = false",
         "unknown api.builtin_routes key 'metrix' (known: health, metrics, stats, stats_full, token)"),
        ('api.builtin_routes.token = ""', "api.builtin_routes.token must be a non-empty string or false"),
        ("api.builtin_routes.token = os.getenv(\"DEVLOOP_NO_SUCH_VARIABLE\")",
         "api.builtin_routes.token must be a non-empty string or false, not nil"),
        ('api.builtin_routes.token = "two words"',
         "api.builtin_routes.token must not hold spaces or control characters"),
        ('api.builtin_routes.metrics = "nope"',
         'api.builtin_routes.metrics must be a path starting with / or false, not "nope"'),
        ("api.builtin_routes.stats_full = 1", "api.builtin_routes.stats_full must be true or false, not 1"),
        ("api.builtin_routes = { helth = false }", "unknown api.builtin_routes key 'helth'"),
    ]
    for line, message in cases:
        p = check_fails({"app.lua": API + line + "\n"}, "app.lua:2:", message)
        assert "observability.lua" not in p.stderr, p.stderr
    # the whole table at once, checked and used
    app = new_app({"app.lua": API + 'api.builtin_routes = { metrics = "/m", stats = false }\n'})
    srv = Server(app)
    try:
        assert srv.get("/m").status == 200
        assert srv.get("/metrics").status == 404
        assert srv.get("/stats").status == 404
        assert srv.get("/health").status in (200, 503)
    finally:
        srv.stop()
        shutil.rmtree(app)


SUB_ROUTE = API + 'api.get("/%s", function() return "%s" end)\n'


def test_route_files_in_subfolders_load(_):
    app = new_app({"routes/a.lua": SUB_ROUTE % ("a", "a"),
                   "routes/sub/d.lua": SUB_ROUTE % ("d", "d"),
                   "routes/sub/deeper/e.lua": SUB_ROUTE % ("e", "e")})
    srv = Server(app)
    try:
        assert srv.get("/a").body == b"a"
        assert srv.get("/d").body == b"d"
        assert srv.get("/e").body == b"e"
        # a reload picks up a new subfolder's file
        with open(os.path.join(app, "routes", "sub", "deeper", "f.lua"), "w") as f:
            f.write(SUB_ROUTE % ("f", "f"))
        os.kill(srv.pid(), signal.SIGHUP)
        wait_for(lambda: srv.get("/f").status == 200)
    finally:
        srv.stop()
        shutil.rmtree(app)
    # a broken file in a subfolder fails check (and serve), named like a top-level one
    check_fails({"routes/a.lua": SUB_ROUTE % ("a", "a"), "routes/sub2/d.lua": API + "local x = = 1\n"},
                "routes/sub2/d.lua:2:", "unexpected symbol near '='")
    # two files declaring one route: the same error whatever the folder
    check_fails({"routes/a.lua": SUB_ROUTE % ("a", "a"), "routes/sub/a.lua": SUB_ROUTE % ("a", "a")},
                "routes/sub/a.lua:2:", "")


def test_redis_subscribe_says_what_is_true(_):
    redis = RedisServer()
    app = new_app({"routes/r.lua": API + 'api.get("/sub", function()\n'
                   '  local r, err, code = api.redis.subscribe("ch")\n'
                   '  return { r = r or api.null, err = err, code = code }\n'
                   'end)\n'
                   'api.get("/psub", function()\n'
                   '  local r, err, code = api.redis.pipeline({ { "GET", "k" }, { "PSUBSCRIBE", "c*" } })\n'
                   '  return { r = r or api.null, err = err, code = code }\n'
                   'end)\n'})
    srv = Server(app, env={"REDIS_URL": redis.url()})
    try:
        r = srv.get("/sub").json()
        assert r == {"r": None, "code": "EINVAL",
                     "err": "redis: SUBSCRIBE is not available through api.redis: a subscribed connection "
                            "cannot serve other commands, and the pool's connections serve every request"}, r
        assert "api.pubsub" not in r["err"]
        r = srv.get("/psub").json()
        assert r["code"] == "EINVAL" and r["err"].startswith("redis: PSUBSCRIBE is not available"), r
    finally:
        srv.stop()
        redis.stop()
        shutil.rmtree(app)


RETURNS = API + '''
api.get("/nil", function() return nil end)
api.get("/nilnil", function() return nil, nil end)
api.get("/nothing", function() end)
api.get("/status-nil", function() return 200, nil end)
api.get("/false", function() return false end)
api.get("/false-why", function() return false, "no such thing" end)
api.get("/strstatus", function() return "404", "x" end)
api.get("/badheaders", function() return "body", 5 end)
api.get("/errtable", function() return nil, { status = 404, message = "no feature 7" } end)
api.get("/errtable-details", function()
  return nil, { status = 409, message = "taken", details = { field = "code" } }
end)
api.get("/cached-false", { cache = true }, function() return false end)
api.get("/cached-nil", { cache = true }, function() return nil end)
'''


def test_handler_return_values(_):
    app = new_app({"routes/r.lua": RETURNS})
    srv = Server(app)
    try:
        for path in ("/nil", "/nilnil", "/nothing", "/cached-nil"):
            r = srv.get(path)
            assert r.status == 204 and r.body == b"", (path, r.status, r.body)
        r = srv.get("/status-nil")
        assert r.status == 200, r.status
        for path in ("/false", "/cached-false"):
            r = srv.get(path)
            assert r.status == 500, (path, r.status, r.body)
        wait_for(lambda: "a handler returned false: route /false (" in srv.output())
        wait_for(lambda: "a handler returned false: route /cached-false (" in srv.output())
        assert srv.get("/false-why").status == 500
        wait_for(lambda: 'a handler returned false: route /false-why, with "no such thing"' in srv.output())
        assert srv.get("/strstatus").status == 500
        wait_for(lambda: 'handler of route /strstatus: status must be a number, got string "404"'
                 in srv.output())
        assert srv.get("/badheaders").status == 500
        wait_for(lambda: "headers must be a table, got number" in srv.output())
        r = srv.get("/errtable")
        assert r.status == 404, (r.status, r.body)
        j = r.json()
        assert j["error"] == "Not Found" and j["message"] == "no feature 7" and j["requestId"], j
        r = srv.get("/errtable-details")
        assert r.status == 409 and r.json()["details"] == {"field": "code"}, (r.status, r.body)
    finally:
        srv.stop()
        shutil.rmtree(app)


def test_tokens_file_is_strictly_checked(_):
    cases = [
        ('{"tokens": [{"token": "t1", "user": "ana", "permisions": ["A"]}]}',
         "tokens.json: unknown key 'permisions' in tokens[1] (known: permissions, sha256, token, user)"),
        ('{"tokens": [{"token": "t1", "user": "ana", "permissions": "ADMIN"}]}',
         'tokens.json: tokens[1].permissions must be a list of permission names, not "ADMIN"'),
        ('{"tokens": [{"token": "t1", "user": "ana"}, {"token": "t2", "user": "bo"}, '
         '{"token": "t1", "user": "eve", "permissions": ["ADMIN"]}]}',
         "tokens.json: tokens[3] has the same token as tokens[1]"),
        # the same token given once in clear and once as its digest
        ('{"tokens": [{"token": "t1", "user": "ana"}, {"sha256": '
         '"%s", "user": "x"}, {"sha256": "%s", "user": "bo"}]}'
         % (hashlib.sha256(b"other").hexdigest(), hashlib.sha256(b"t1").hexdigest()),
         "tokens.json: tokens[3] has the same token as tokens[1]"),
    ]
    for text, message in cases:
        app = new_app({"app.lua": API, "tokens.json": text})
        try:
            p = run("check", app)
            assert p.returncode == 1, (text, p)
            assert "%s/%s" % (app, message) in p.stderr, (message, p.stderr)
        finally:
            shutil.rmtree(app)
    app = new_app({"app.lua": API})
    try:
        os.mkdir(os.path.join(app, "tokens.json"))
        p = run("check", app)
        assert p.returncode == 1, p
        assert "%s/tokens.json: is a directory, not a tokens file" % app in p.stderr, p.stderr
    finally:
        shutil.rmtree(app)
    check_ok({"app.lua": API, "tokens.json": '{"tokens": [{"token": "t1", "user": "ana", "permissions": ["A"]}, '
              '{"token": "t2", "user": "ana"}]}'})


def test_argument_errors_name_the_function(_):
    app = new_app({"routes/r.lua": API + '''
local function why(fn) local ok, err = pcall(fn) return { ok = ok, err = tostring(err) } end
api.get("/sleep", function() return why(function() api.sleep(-5) end) end)
api.get("/sleep-str", function() return why(function() api.sleep("5") end) end)
api.get("/timeout", function() return why(function() api.with_timeout(-1, function() end) end) end)
api.get("/timeout-fn", function() return why(function() api.with_timeout(10, "x") end) end)
api.get("/cacheset", function() return why(function() api.cache.set("k", "v", -1) end) end)
api.get("/fine", function()
  api.sleep(0)
  local ok = api.with_timeout(1000, function() return 1 end)
  api.cache.set("k", "v", 0)
  return { ok = ok }
end)
'''})
    srv = Server(app)
    try:
        want = {
            "/sleep": "routes/r.lua:4: api.sleep: ms must be a number of milliseconds from 0 to 86400000, not -5",
            "/sleep-str": 'routes/r.lua:5: api.sleep: ms must be a number of milliseconds from 0 to 86400000, '
                          'not "5"',
            "/timeout": "routes/r.lua:6: api.with_timeout: ms must be a number of milliseconds from 0 to "
                        "86400000, not -1",
            "/timeout-fn": 'routes/r.lua:7: api.with_timeout: fn must be a function, not "x"',
            "/cacheset": "routes/r.lua:8: api.cache.set: ttl must be a number of seconds (0 or more) or a "
                         "preset name, not -1",
        }
        for path, message in want.items():
            r = srv.get(path).json()
            assert r["ok"] is False and r["err"].endswith(message), (path, r)
            assert "bad argument" not in r["err"], r
        assert srv.get("/fine").json() == {"ok": True}
    finally:
        srv.stop()
        shutil.rmtree(app)


def test_body_limit_is_a_whole_number_of_bytes(_):
    route = API + 'api.post("/x", { %s }, function() end)\n'
    for opt, shown in (("body_limit = 1.5", "1.5"), ("body_limit = 1e30", "1e+30"),
                       ("body_limit = 0", "0"), ("upload = { max_bytes = 2.5 }", "2.5")):
        key = "upload option max_bytes" if "upload" in opt else "route option body_limit"
        check_fails({"routes/r.lua": route % opt}, "routes/r.lua:2:",
                    "%s must be a whole number of bytes from 1 to 1099511627776, not %s" % (key, shown))
    check_ok({"routes/r.lua": route % "body_limit = 1099511627776, upload = { max_bytes = 1 }"})


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
