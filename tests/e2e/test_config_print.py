"""`devloop config APP_DIR [serve flags]` (and `devloop serve ... --print-config`)
prints every setting the runtime would use, its value with its unit and where
it came from (default, env NAME, flag --x), secrets masked; a bad value exits
1 with serve's message; nothing is started, bound, opened or created
(issue 18, "No silent failures")."""
import json
import os
import shutil
import socket
import subprocess
import tempfile

import harness

# the variables the runtime reads, cleared so the shell's own do not leak in
PREFIXES = ("DEVLOOP_", "REDIS_", "MONGO_")
PLAIN = ("LOG_LEVEL", "PORT", "GZIP_LEVEL", "UV_THREADPOOL_SIZE")
SOURCES = ("default", "env ", "flag ", "argument")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(PREFIXES) and k not in PLAIN}
    env.update(extra)
    return env


def new_app():
    base = tempfile.mkdtemp(prefix="devloop-config-")
    app = os.path.join(base, "app")
    p = subprocess.run([harness.BIN, "new", app], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return base, app


def tree(d):
    out = []
    for root, dirs, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, n), d) for n in dirs + files]
    return sorted(out)


def run(args, env, timeout=20):
    return subprocess.run([harness.BIN] + args, env=env, capture_output=True, text=True,
                          timeout=timeout)


def settings(stdout):
    """name -> line (the first line of each name)"""
    out = {}
    for line in stdout.splitlines():
        name = line.split(" ", 1)[0]
        out.setdefault(name, line)
    return out


def test_defaults(_):
    base, app = new_app()
    try:
        p = run(["config", app], clean_env())
        assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr)
        s = settings(p.stdout)
        for name in ("listen", "workers", "log_level", "log_dir", "pid_file", "watch", "http2",
                     "hsts", "canonical_host", "max_body", "max_header_bytes",
                     "header_timeout_ms", "keepalive_timeout_ms", "store", "db",
                     "db_busy_timeout_ms", "redis", "redis_pool_size", "cache_max_bytes",
                     "mongo_breaker_threshold", "redis_breaker_cooldown_ms", "job_lease_ms",
                     "log_max_bytes", "gzip_level", "secret"):
            assert name in s, (name, p.stdout)
        for line in p.stdout.splitlines():
            assert any((" %s" % src) in line for src in SOURCES), line
        assert "1048576 bytes (1 MiB)" in s["max_body"] and " default " in s["max_body"], \
            s["max_body"]
        assert "127.0.0.1:8080" in s["listen"] and " default " in s["listen"], s["listen"]
        assert "10000 ms (10 s)" in s["header_timeout_ms"], s["header_timeout_ms"]
        assert " sqlite " in s["store"], s["store"]
        assert os.path.join(app, "data", "devloop.db") in s["db"], s["db"]
        assert os.path.join(app, "logs") in s["log_dir"], s["log_dir"]
        assert " info " in s["log_level"] and " on " in s["watch"], (s["log_level"], s["watch"])
        assert "none" in s["redis"], s["redis"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_env_overrides_with_units(_):
    base, app = new_app()
    try:
        env = clean_env(DEVLOOP_MAX_BODY="2MB", DEVLOOP_HEADER_TIMEOUT_MS="10s", PORT="9123",
                        LOG_LEVEL="debug", DEVLOOP_TLS_TICKET_ROTATE_S="2h",
                        DEVLOOP_WATCH="off", DEVLOOP_DB=os.path.join(base, "x.db"),
                        DEVLOOP_MAX_CONNECTIONS="0")
        p = run(["config", app], env)
        assert p.returncode == 0, p.stderr
        s = settings(p.stdout)
        assert "2097152 bytes (2 MiB)" in s["max_body"], s["max_body"]
        assert "env DEVLOOP_MAX_BODY" in s["max_body"], s["max_body"]
        assert "10000 ms (10 s)" in s["header_timeout_ms"], s["header_timeout_ms"]
        assert "env DEVLOOP_HEADER_TIMEOUT_MS" in s["header_timeout_ms"], s["header_timeout_ms"]
        assert "7200 s (2 h)" in s["tls_ticket_rotate_s"], s["tls_ticket_rotate_s"]
        assert "127.0.0.1:9123" in s["listen"] and "env PORT" in s["listen"], s["listen"]
        assert " debug " in s["log_level"] and "env LOG_LEVEL" in s["log_level"], s["log_level"]
        assert " off " in s["watch"] and "env DEVLOOP_WATCH" in s["watch"], s["watch"]
        assert os.path.join(base, "x.db") in s["db"] and "env DEVLOOP_DB" in s["db"], s["db"]
        assert "(no cap)" in s["max_connections"], s["max_connections"]
        # an untouched one stays default
        assert " default " in s["max_uri"], s["max_uri"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_every_duration_takes_units(_):
    """The variables read outside config.c's table (the Redis pool, the
    SQLite store, jobs.lua) take `2s` and `250ms` too, and refuse a bad one
    in the same words (they accepted only bare numbers, in three styles)."""
    base, app = new_app()
    try:
        env = clean_env(REDIS_HOST="127.0.0.1", REDIS_COMMAND_TIMEOUT_MS="2s",
                        REDIS_CONNECT_TIMEOUT_MS="250ms", REDIS_RECONNECT_MAX_MS="1s",
                        REDIS_BREAKER_COOLDOWN_MS="2m", DEVLOOP_DB_BUSY_TIMEOUT_MS="1s",
                        DEVLOOP_JOB_LEASE_MS="1m")
        p = run(["config", app], env)
        assert p.returncode == 0, p.stderr
        s = settings(p.stdout)
        for name, want in (("redis_command_timeout_ms", "2000 ms"),
                           ("redis_connect_timeout_ms", "250 ms"),
                           ("redis_reconnect_max_ms", "1000 ms"),
                           ("redis_breaker_cooldown_ms", "120000 ms"),
                           ("db_busy_timeout_ms", "1000 ms"), ("job_lease_ms", "60000 ms")):
            assert want in s[name], (name, s[name])
        for name, value in (("REDIS_COMMAND_TIMEOUT_MS", "5q"), ("REDIS_PORT", "x"),
                            ("DEVLOOP_DB_BUSY_TIMEOUT_MS", "11m"),
                            ("DEVLOOP_JOB_LEASE_MS", "-1")):
            p = run(["config", app], clean_env(REDIS_HOST="127.0.0.1", **{name: value}))
            assert p.returncode == 1, (name, p.stdout)
            assert p.stderr.startswith("devloop: %s=%s: expected " % (name, value)), p.stderr
            assert " from " in p.stderr, p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_flags_win_and_are_named(_):
    base, app = new_app()
    try:
        pid = os.path.join(base, "x.pid")
        env = clean_env(LOG_LEVEL="debug", DEVLOOP_CANONICAL_HOST="env.example.com")
        p = run(["config", app, "--workers", "3", "--log-level", "warn", "--listen",
                 "127.0.0.1:9500", "--no-watch", "--no-http2", "--hsts", "off",
                 "--pid-file", pid, "--canonical-host", "api.example.com"], env)
        assert p.returncode == 0, p.stderr
        s = settings(p.stdout)
        for name, value, flag in (("workers", "3", "--workers"), ("log_level", "warn", "--log-level"),
                                  ("listen", "127.0.0.1:9500", "--listen"),
                                  ("watch", "off", "--no-watch"), ("http2", "off", "--no-http2"),
                                  ("hsts", "off", "--hsts"), ("pid_file", pid, "--pid-file"),
                                  ("canonical_host", "api.example.com", "--canonical-host")):
            assert (" %s " % value) in s[name] and ("flag %s" % flag) in s[name], (name, s[name])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_secrets_are_masked(_):
    base, app = new_app()
    try:
        env = clean_env(REDIS_URL="redis://bob:hunter2redis@cache.example:6380/3",
                        MONGO_URI="mongodb://ann:pw4mongo@db.example:27017/app?authSource=admin"
                                  "&tlsCertificateKeyFilePassword=keypass9",
                        DEVLOOP_SECRET="signing-s3cret")
        for args in (["config", app], ["config", app, "--json"]):
            p = run(args, env)
            assert p.returncode == 0, p.stderr
            for secret in ("hunter2redis", "pw4mongo", "keypass9", "signing-s3cret"):
                assert secret not in p.stdout + p.stderr, (secret, p.stdout)
        s = settings(run(["config", app], env).stdout)
        assert "redis://bob:***@cache.example:6380/3" in s["redis"], s["redis"]
        assert "env REDIS_URL" in s["redis"], s["redis"]
        assert "mongodb://ann:***@db.example:27017/app?authSource=admin&" \
               "tlsCertificateKeyFilePassword=***" in s["mongo_uri"], s["mongo_uri"]
        assert " mongodb " in s["store"] and "***" in s["secret"], (s["store"], s["secret"])
        # the password given on its own
        p = run(["config", app], clean_env(REDIS_HOST="cache.example",
                                           REDIS_PASSWORD="hunter3alone"))
        assert p.returncode == 0 and "hunter3alone" not in p.stdout, p.stdout
        assert ":***@cache.example:6379/0" in settings(p.stdout)["redis"], p.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_json(_):
    base, app = new_app()
    try:
        p = run(["config", app, "--json", "--workers", "2"], clean_env(DEVLOOP_MAX_BODY="2MB"))
        assert p.returncode == 0, p.stderr
        items = json.loads(p.stdout)
        by = {i["name"]: i for i in items}
        assert by["max_body"]["value"] == 2097152 and by["max_body"]["unit"] == "bytes", \
            by["max_body"]
        assert by["max_body"]["source"] == "env DEVLOOP_MAX_BODY", by["max_body"]
        assert by["workers"]["value"] == 2 and by["workers"]["source"] == "flag --workers", \
            by["workers"]
        assert by["header_timeout_ms"]["value"] == 10000 and by["header_timeout_ms"]["unit"] == "ms"
        assert all(set(i) == {"name", "value", "unit", "text", "source", "set_with"} for i in items)
        # the same settings as the text form
        text = run(["config", app, "--workers", "2"], clean_env(DEVLOOP_MAX_BODY="2MB")).stdout
        assert [i["name"] for i in items] == [l.split(" ", 1)[0] for l in text.splitlines()]
        # --json alone is not a way to start serving
        p = run(["serve", app, "--json"], clean_env())
        assert p.returncode == 2 and "--json goes with --print-config" in p.stderr, p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_bad_value_exits_1_like_serve(_):
    base, app = new_app()
    try:
        for name, value in (("DEVLOOP_MAX_BODY", "2XB"), ("LOG_LEVEL", "verbose"),
                            ("DEVLOOP_WATCH", "maybe"), ("PORT", "99999"),
                            ("DEVLOOP_JOB_LEASE_MS", "soon"), ("REDIS_PORT", "x"),
                            ("DEVLOOP_DB_BUSY_TIMEOUT_MS", "-5"),
                            ("DEVLOOP_CANONICAL_HOST", "http://x/")):
            env = clean_env(DEVLOOP_LOG_DIR="-", **{name: value})
            c = run(["config", app], env)
            s = run(["serve", app, "--listen", "127.0.0.1:%d" % harness.free_port()], env)
            assert c.returncode == 1 and name in c.stderr and value in c.stderr, \
                (name, c.returncode, c.stderr)
            assert c.stdout == "", c.stdout
            assert s.returncode == 1 and c.stderr == s.stderr, (name, c.stderr, s.stderr)
        assert tree(app) == ["app.lua", "routes", "routes/hello.lua", "tests",
                             "tests/hello_test.lua"], tree(app)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_tls_listeners(_):
    base, app = new_app()
    try:
        cert, key = harness.make_cert(base, "site")
        env = clean_env()
        p = run(["config", app, "--listen", "127.0.0.1:8443", "--tls-cert", cert, "--tls-key", key,
                 "--listen", "127.0.0.1:8080", "--https-redirect"], env)
        assert p.returncode == 0, p.stderr
        lines = [l for l in p.stdout.splitlines() if l.startswith("listen ")]
        assert len(lines) == 2, lines
        assert "127.0.0.1:8443 (TLS: %s)" % cert in lines[0] and "flag --listen" in lines[0]
        assert "127.0.0.1:8080 (redirects to HTTPS)" in lines[1], lines[1]
        # a certificate serve could not load: the same message, exit 1
        missing = os.path.join(base, "missing.crt")
        args = [app, "--listen", "127.0.0.1:%d" % harness.free_port(), "--tls-cert", missing,
                "--tls-key", key]
        c = run(["config"] + args, clean_env(DEVLOOP_LOG_DIR="-"))
        s = run(["serve"] + args, clean_env(DEVLOOP_LOG_DIR="-"))
        assert c.returncode == 1 and missing in c.stderr and c.stderr == s.stderr, \
            (c.returncode, c.stderr, s.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_missing_app_folder(_):
    base = tempfile.mkdtemp(prefix="devloop-config-")
    try:
        missing = os.path.join(base, "typo")
        empty = os.path.join(base, "empty")
        os.mkdir(empty)
        for d, msg in ((missing, "no such app folder"), (empty, "neither app.lua nor routes/")):
            for args in (["config", d], ["serve", d, "--print-config"]):
                p = run(args, clean_env())
                assert p.returncode == 1 and d in p.stderr and msg in p.stderr, \
                    (args, p.returncode, p.stderr)
        assert not os.path.exists(missing) and os.listdir(empty) == []
        p = run(["config"], clean_env())
        assert p.returncode == 2 and "usage" in p.stderr, p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_print_config_binds_and_creates_nothing(_):
    base, app = new_app()
    held = socket.socket()
    try:
        before = tree(app)
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]  # taken: serve could not bind it
        env = clean_env()
        p = run(["serve", app, "--listen", "127.0.0.1:%d" % port, "--print-config"], env)
        assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr)
        c = run(["config", app, "--listen", "127.0.0.1:%d" % port], env)
        assert c.returncode == 0 and c.stdout == p.stdout, (c.stdout, p.stdout)
        assert "127.0.0.1:%d" % port in settings(p.stdout)["listen"]
        # no data/, logs/, database, pid file or upload folder
        assert tree(app) == before, tree(app)
    finally:
        held.close()
        shutil.rmtree(base, ignore_errors=True)


def test_review_fixes(_):
    """authMechanismProperties (AWS_SESSION_TOKEN:...) is masked whole; the
    breaker rows say they are unused without MONGO_URI (the breaker guards
    MongoDB only); UV_THREADPOOL_SIZE and DEVLOOP_JOBS_PAUSED are parsed rows
    (true pauses); `devloop config` alone names config."""
    base, app = new_app()
    try:
        env = clean_env(MONGO_URI="mongodb://db.example/app?authMechanism=MONGODB-AWS&"
                                  "authMechanismProperties=AWS_SESSION_TOKEN:S3CRETY&"
                                  "proxyPass=pr0xy&appname=shop")
        for args in (["config", app], ["config", app, "--json"]):
            p = run(args, env)
            assert p.returncode == 0, p.stderr
            for secret in ("S3CRETY", "AWS_SESSION_TOKEN", "pr0xy"):
                assert secret not in p.stdout, (secret, p.stdout)
        s = settings(run(["config", app], env).stdout)
        assert "authMechanism=MONGODB-AWS&authMechanismProperties=***&proxyPass=***&" \
               "appname=shop" in s["mongo_uri"], s["mongo_uri"]
        assert "unused" not in s["mongo_breaker_threshold"], s["mongo_breaker_threshold"]
        s = settings(run(["config", app], clean_env(DEVLOOP_JOBS_PAUSED="true",
                                                    UV_THREADPOOL_SIZE="16")).stdout)
        for name in ("mongo_breaker_threshold", "mongo_breaker_cooldown_ms", "mongo_pool_size"):
            assert "(unused: no MONGO_URI)" in s[name], s[name]
        assert " on " in s["jobs_paused"] and "env DEVLOOP_JOBS_PAUSED" in s["jobs_paused"], \
            s["jobs_paused"]
        assert "16 threads" in s["uv_threadpool_size"], s["uv_threadpool_size"]
        s = settings(run(["config", app], clean_env()).stdout)
        assert " off " in s["jobs_paused"] and " default " in s["jobs_paused"], s["jobs_paused"]
        assert "8 threads" in s["uv_threadpool_size"] and " default " in s["uv_threadpool_size"]
        p = run(["config"], clean_env())
        assert p.returncode == 2 and p.stderr.startswith("devloop config: missing APP_DIR\n"), \
            p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_mongo_userinfo_masked_as_mongoc_reads_it(_):
    """mongoc takes the userinfo from everything before the first '/', '?'
    and '#' included: mongodb://user:PA?SSC@h/db has the password "PA?SSC",
    which the mask (stopping at '?') printed whole."""
    base, app = new_app()
    try:
        for uri, secret, shown in (
                ("mongodb://user:PA?SSC@db.example/app", "SSC", "mongodb://user:***@db.example/app"),
                ("mongodb://user:PA#SSD@db.example/app?appname=shop", "SSD",
                 "mongodb://user:***@db.example/app?appname=shop"),
                ("mongodb://user:PA?SSE@db.example", "SSE", "mongodb://user:***@db.example")):
            for args in (["config", app], ["config", app, "--json"]):
                p = run(args, clean_env(MONGO_URI=uri))
                assert p.returncode == 0, (uri, p.stderr)
                assert secret not in p.stdout + p.stderr, (uri, p.stdout)
            s = settings(run(["config", app], clean_env(MONGO_URI=uri)).stdout)
            assert shown in s["mongo_uri"], (uri, s["mongo_uri"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_empty_hsts_variable_is_its_source(_):
    """DEVLOOP_HSTS="" turns HSTS off: the row says so and names the variable,
    not "default"."""
    base, app = new_app()
    try:
        s = settings(run(["config", app], clean_env(DEVLOOP_HSTS="")).stdout)
        assert " off " in s["hsts"] and "env DEVLOOP_HSTS" in s["hsts"], s["hsts"]
        p = run(["config", app, "--json"], clean_env(DEVLOOP_HSTS=""))
        assert p.returncode == 0 and '"env DEVLOOP_HSTS"' in p.stdout, p.stdout
        s = settings(run(["config", app], clean_env()).stdout)
        assert "max-age=31536000" in s["hsts"] and " default " in s["hsts"], s["hsts"]
        s = settings(run(["config", app, "--hsts", ""], clean_env(DEVLOOP_HSTS="")).stdout)
        assert " off " in s["hsts"] and "flag --hsts" in s["hsts"], s["hsts"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


tests = {k: v for k, v in dict(globals()).items() if k.startswith("test_") and callable(v)}

if __name__ == "__main__":
    harness.main(tests, app=None)
