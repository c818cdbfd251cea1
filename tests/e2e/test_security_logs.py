"""Safe logs (issue 17, item 4): a log message, field value and field name
built from request data with a newline (a forged log line), ESC sequences,
C1 controls (raw and UTF-8), DEL and bidi overrides reach the console (the
server's stderr, captured by the harness) escaped, each record on one line;
JSON log lines never carry duplicate keys: user fields named level, message,
timestamp, service, requestId get a "_" in front (more when taken), and a
table with both 1 and "1" as keys gives one "1"."""
import json
import os
import re
import time
import urllib.parse

import harness

FORGED = "\n2026-01-01T00:00:00.000Z error [admin] FORGED-%s root login from 10.0.0.1"
ESC = "\x1b[2J\x1b]0;pwned\x07\x1b[31mRED"
TS = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) ")


def q(s):
    return urllib.parse.quote(s, safe="")


def console(srv):
    """The server's console output so far, bytes."""
    srv.log.flush()
    with open(srv.log.name, "rb") as f:
        return f.read()


def wait_console(srv, needle, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = console(srv)
        if needle.encode() in out:
            return out
        time.sleep(0.05)
    raise AssertionError("%r never reached the console:\n%s" % (needle, console(srv)[-2000:]))


def check_console_clean(out):
    """No raw control character but the line ends, every line a record."""
    bad = re.findall(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]", out)
    assert not bad, "raw control characters on the console: %r" % bad[:10]
    out.decode("utf-8")  # strict: no stray C1 byte either
    for line in out.splitlines():
        assert TS.match(line), "a console line that is not a record: %r" % line


def no_dup_pairs(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    assert not dups, "duplicate keys %s in %r" % (dups, pairs)
    return dict(pairs)


def records(srv, pred, n=1, timeout=5):
    """JSON lines of combined.log (each parsed with a duplicate-key check)
    matching pred, once there are n of them."""
    path = os.path.join(srv.scratch, "logs", "combined.log")
    deadline = time.time() + timeout
    while True:
        got = []
        if os.path.exists(path):
            with open(path, "rb") as f:
                for line in f.read().splitlines():
                    rec = json.loads(line, object_pairs_hook=no_dup_pairs)
                    if pred(rec):
                        got.append(rec)
        if len(got) >= n or time.time() > deadline:
            assert len(got) >= n, "%d records, want %d" % (len(got), n)
            return got
        time.sleep(0.05)


def test_newline_in_message_forges_no_line(srv):
    r = srv.get("/log?msg=" + q("user said hi" + FORGED % "M"))
    assert r.status == 200, r
    out = wait_console(srv, "FORGED-M")
    check_console_clean(out)
    line = [l for l in out.splitlines() if b"FORGED-M" in l]
    assert len(line) == 1 and b"user said hi\\n2026-01-01T" in line[0], line
    rec = records(srv, lambda r: "FORGED-M" in r.get("message", ""))[0]
    assert rec["message"] == "user said hi" + FORGED % "M" and rec["level"] == "warn", rec


def test_newline_and_esc_in_field_value(srv):
    v = "v1" + FORGED % "V" + ESC + "\x7f\x85\u009b31m\u202eevil\r\x00end"
    r = srv.get("/log?msg=value-test&v=" + q(v))
    assert r.status == 200, r
    out = wait_console(srv, "FORGED-V")
    check_console_clean(out)
    line = [l for l in out.splitlines() if b"FORGED-V" in l]
    assert len(line) == 1 and b"value-test" in line[0], line
    rec = records(srv, lambda r: r.get("message") == "value-test")[0]
    assert rec["value"] == v, rec  # the JSON file keeps the value exactly


def test_control_characters_in_message_and_key(srv):
    msg = "m" + ESC + "\x9b" + "\u0085" + "\x7f" + "\u202e" + "tail-K"
    key = "key\n2026-01-01T00:00:00.000Z error FORGED-K\x1b[1m"
    r = srv.get("/log?msg=" + q(msg) + "&k=" + q(key))
    assert r.status == 200, r
    out = wait_console(srv, "FORGED-K")
    check_console_clean(out)
    line = [l for l in out.splitlines() if b"FORGED-K" in l]
    assert len(line) == 1 and b"tail-K" in line[0], line
    assert b"\\x1b[2J" in line[0], line  # ESC shown, as text
    rec = records(srv, lambda r: "tail-K" in r.get("message", ""))[0]
    assert rec[key] == "keyed", rec


def test_reserved_field_names_in_json(srv):
    rid = "sec-logs-reserved-1"
    r = srv.get("/log/reserved?tag=r1", {"X-Request-Id": rid})
    assert r.status == 200, r
    rec = records(srv, lambda r: r.get("tag") == "r1")[0]
    assert rec["level"] == "warn" and rec["message"] == "reserved r1", rec
    assert rec["timestamp"] != "1970-01-01T00:00:00.000Z" and rec["service"] == "devloop", rec
    assert rec["requestId"] == rid, rec
    # the user's fields, renamed: one underscore, two when one is taken already
    assert rec["_level"] == "already taken" and rec["__level"] == "debug", rec
    assert rec["_message"] == "forged message", rec
    assert rec["_timestamp"] == "1970-01-01T00:00:00.000Z", rec
    assert rec["_service"] == "other" and rec["_requestId"] == "not-the-request", rec
    assert rec["msg"] == "short" and rec["time"] == 0, rec  # not the record's keys


def test_duplicate_keys_from_a_table(srv):
    r = srv.get("/log/mixed?tag=m1")
    assert r.status == 200, r
    rec = records(srv, lambda r: r.get("tag") == "m1")[0]
    assert sorted([rec["1"], rec["_1"]]) == ["number", "string"], rec


def test_whole_console_is_clean(srv):
    check_console_clean(console(srv))


# the forged text says " error " on purpose; check_console_clean() proves
# it stayed inside its own record
ALLOWED_ERRORS = ["FORGED-"]

if __name__ == "__main__":
    harness.main(globals(), app="seclogs")
