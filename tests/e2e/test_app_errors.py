"""No silent failures in an app's code (issue 18, item 4): an unknown key or
a value of the wrong kind in an option table (route, cache, upload, auth,
schema, batch, jobs, files.serve) is an error naming the key, the known ones
and the app's line; `devloop check` and `devloop serve` exit 1 with it and a
reload keeps the old generation. A lib/ module that does not load (syntax
error, error at its top level, missing) is reported with its file, line and
cause by check, serve, test and reload."""
import os
import shutil
import signal
import time

import harness
from harness import BIN, Server

ROUTE = 'local api = require "devloop"\n\napi.get("/x", %s, function() return "x" end)\n'

# (option table, what the message must say), one per kind of mistake
ROUTE_CASES = [
    ('{ auht = "ADMIN" }',
     "unknown route option 'auht' (known: after, auth, before, body_limit, cache, cors, rate_limit, upload)"),
    ('{ auth = 5 }', "route option auth must be true or a permission name (a string), not 5"),
    ('{ cache = "yes" }', 'route option cache must be true or a table { key, prefix, ttl }, not "yes"'),
    ('{ cache = { prefix = "api", tll = 60 } }',
     "unknown cache option 'tll' (known: key, prefix, ttl)"),
    ('{ cache = { ttl = "10 minutes" } }',
     'cache option ttl must be a number of seconds above 0 or a preset (long, medium, short, veryLong), '
     'not "10 minutes"'),
    ('{ cache = { key = "user" } }', 'cache option key must be a function(req), not "user"'),
    ('{ upload = { max_byte = 1024 } }', "unknown upload option 'max_byte' (known: max_bytes)"),
    ('{ upload = "yes" }', 'route option upload must be true or a table { max_bytes }, not "yes"'),
    ('{ body_limit = "1MB" }',
     'route option body_limit must be a whole number of bytes from 1 to 1099511627776, not "1MB"'),
]

SCHEMA = 'local api = require "devloop"\n\napi.db.define("things", %s)\n'
SCHEMA_CASES = [
    ('{ requried = { "name" } }',
     "unknown schema key 'requried' in db.define(\"things\") "
     "(known: defaults, enums, indexes, required, timestamps, types)"),
    ('{ timestamps = "yes" }', 'db.define("things"): timestamps must be true or false, not "yes"'),
    ('{ types = { name = "str" } }',
     'db.define("things"): types.name must be string, number, boolean or table, not "str"'),
    ('{ indexes = { { fields = { "code" }, uniqe = true } } }',
     "unknown index key 'uniqe' in db.define(\"things\") indexes[1] (known: fields, unique)"),
    ('{ indexes = { { "code", unique = true } } }',
     'db.define("things"): indexes[1] mixes field names and keys'),
]

BATCH = 'local api = require "devloop"\n\napi.post("/b", api.batch(%s))\n'
BATCH_CASES = [
    ('{ a = function() end }, { concurency = 3 }',
     "unknown api.batch option 'concurency' (known: concurrency, max_operations)"),
    ('{ a = { handler = function() end, permision = "X" } }',
     "unknown key 'permision' in api.batch operation a (known: handler, permission)"),
]

LIB_SYNTAX = "local M = {}\nfunction M.ok() return true end\nlocal x y\nreturn M\n"
LIB_RUNTIME = "local M = {}\nlocal cfg = nil\nM.port = cfg.port\nreturn M\n"
USES_LIB = 'local api = require "devloop"\nlocal v = require "validate"\napi.get("/x", function() return "x" end)\n'


def new_app(files):
    return harness.new_app(files, prefix="devloop-apperr-")


run = harness.run_devloop



def check_fails(files, where, message):
    return harness.check_fails(files, where, message, prefix="devloop-apperr-")


def test_check_names_unknown_and_wrong_route_options(_):
    for opts, message in ROUTE_CASES:
        check_fails({"routes/r.lua": ROUTE % opts}, "routes/r.lua:3:", message)
    # api.route counts its own frame: still the app's line
    check_fails({"routes/r.lua": 'local api = require "devloop"\napi.route({ "GET", "POST" }, "/x", '
                                 '{ auht = true }, function() end)\n'},
                "routes/r.lua:2:", "unknown route option 'auht'")


def test_check_names_schema_and_batch_mistakes(_):
    for schema, message in SCHEMA_CASES:
        check_fails({"app.lua": SCHEMA % schema}, "app.lua:3:", message)
    for args, message in BATCH_CASES:
        check_fails({"routes/r.lua": BATCH % args}, "routes/r.lua:3:", message)


def test_every_accepted_key_loads(_):
    app = new_app({
        "app.lua": SCHEMA % '{ required = { "name" }, enums = { status = { "a", "b" } }, '
                            'defaults = { status = "a" }, types = { name = "string" }, timestamps = true, '
                            'indexes = { { "status", "-created_at" }, { fields = { "code" }, unique = true } } }',
        "routes/r.lua": 'local api = require "devloop"\n'
                        'api.get("/a", { auth = "READ", cache = { prefix = "api", ttl = "short", '
                        'key = function(req) return req.target end }, body_limit = 1024 }, function() end)\n'
                        'api.get("/b", { auth = true, cache = true }, function() end)\n'
                        'api.post("/c", { auth = false, upload = { max_bytes = 1024 } }, function() end)\n'
                        'api.post("/d", { upload = true, cache = false }, function() end)\n'
                        'api.get("/d", { cache = { ttl = 5 } }, function() end)\n'
                        'api.post("/e", api.batch({ a = function() end, b = { handler = function() end, '
                        'permission = "X" } }, { max_operations = 5, concurrency = 2 }))\n',
    })
    try:
        p = run("check", app)
        assert p.returncode == 0 and p.stderr == "", p
    finally:
        shutil.rmtree(app)


def test_serve_refuses_an_app_with_a_misspelled_option(_):
    app = new_app({"routes/r.lua": ROUTE % '{ auht = "ADMIN" }'})
    try:
        p = run("serve", app, "--listen", "127.0.0.1:%d" % harness.free_port(), "--workers", "1")
        assert p.returncode == 1, p
        assert "routes/r.lua:3: unknown route option 'auht' (known: after, auth, before, body_limit, cache, cors, rate_limit, upload)" \
            in p.stderr, p.stderr
    finally:
        shutil.rmtree(app)


def wait_for(fn, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within %ss" % timeout)


def test_reload_with_a_bad_option_or_lib_keeps_the_old_generation(_):
    app = new_app({"routes/r.lua": ROUTE % '{ auth = "ADMIN" }', "lib/validate.lua": "return {}\n"})
    srv = Server(app)
    try:
        assert srv.get("/x").status == 401
        path = os.path.join(app, "routes", "r.lua")
        steps = [
            (ROUTE % '{ auht = "ADMIN" }', "routes/r.lua:3: unknown route option 'auht'"),
            (ROUTE % '{ cache = { ttl = "10 minutes" } }', "routes/r.lua:3: cache option ttl must be"),
        ]
        for n, (text, message) in enumerate(steps, 1):
            with open(path, "w") as f:
                f.write(text)
            srv.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: srv.output().count("failed; still serving generation") >= n)
            assert message in srv.output(), srv.output()[-2000:]
            # the route is still the protected one of the old generation
            assert srv.get("/x").status == 401
        # a lib/ module that breaks: the reload says where and why
        with open(path, "w") as f:
            f.write(USES_LIB)
        with open(os.path.join(app, "lib", "validate.lua"), "w") as f:
            f.write(LIB_SYNTAX)
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: srv.output().count("failed; still serving generation") >= 3)
        assert "lib/validate.lua:4: '=' expected near 'return' (module 'validate' required at " \
               "%s/routes/r.lua:2)" % app in srv.output(), srv.output()[-2000:]
        assert srv.get("/x").status == 401
    finally:
        srv.stop()
        shutil.rmtree(app)


LIB_CASES = [
    # (lib/validate.lua or None, what check, serve and test print)
    (LIB_SYNTAX, "{app}/lib/validate.lua:4: '=' expected near 'return' "
                 "(module 'validate' required at {app}/routes/r.lua:2)"),
    (LIB_RUNTIME, "{app}/lib/validate.lua:3: attempt to index local 'cfg' (a nil value) "
                  "(from {app}/routes/r.lua:2)"),
    (None, "{app}/routes/r.lua:2: module 'validate' not found: no file '{app}/lib/validate.lua', "
           "no file '{app}/lib/validate/init.lua'"),
]


def test_lib_module_errors_name_file_line_and_cause(_):
    for lib, expected in LIB_CASES:
        files = {"routes/r.lua": USES_LIB,
                 "tests/r_test.lua": 'local t = require "devloop.test"\nt.test("x", function() end)\n'}
        if lib is not None:
            files["lib/validate.lua"] = lib
        app = new_app(files)
        try:
            want = expected.format(app=app)
            for args in (("check", app),
                         ("serve", app, "--listen", "127.0.0.1:%d" % harness.free_port(), "--workers", "1"),
                         ("test", app)):
                p = run(*args)
                assert p.returncode == 1, (args, p)
                assert want in p.stderr, (args, want, p.stderr)
        finally:
            shutil.rmtree(app)


def test_runtime_option_tables_are_checked(_):
    app = new_app({"routes/r.lua": 'local api = require "devloop"\n'
                                   'api.get("/job", function()\n'
                                   '  local id, err, code = api.jobs.add("t", {}, { priorty = "high" })\n'
                                   '  return { id = id or api.null, err = err, code = code }\n'
                                   'end)\n'
                                   'api.get("/backoff", function()\n'
                                   '  local id, err, code = api.jobs.add("t", {}, { backoff = { typ = "fixed" } })\n'
                                   '  return { id = id or api.null, err = err, code = code }\n'
                                   'end)\n'
                                   'api.get("/file", function(req)\n'
                                   '  local s, b, h = api.files.serve(req, "nope", { inlin = true })\n'
                                   '  return s, b, h\n'
                                   'end)\n'
                                   'api.get("/tail", function(req)\n'
                                   '  return api.files.serve(req, "nope", { inlin = true })\n'
                                   'end)\n'})
    srv = Server(app)
    try:
        r = srv.get("/job").json()
        assert r == {"id": None, "code": "EINVAL", "err": "unknown job option 'priorty' (known: attempts, "
                     "backoff, delay, job_id, priority, remove_on_complete)"}, r
        r = srv.get("/backoff").json()
        assert r["code"] == "EINVAL" and r["err"] == "unknown backoff option 'typ' (known: delay, type)", r
        assert srv.get("/file").status == 500
        wait_for(lambda: "routes/r.lua:11: unknown files.serve option 'inlin' (known: inline)" in srv.output())
        # a tail call leaves no app line to name: the message alone, not the library's line
        assert srv.get("/tail").status == 500
        wait_for(lambda: "GET /tail: unknown files.serve option 'inlin'" in srv.output())
    finally:
        srv.stop()
        shutil.rmtree(app)


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
