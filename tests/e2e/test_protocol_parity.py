"""HTTP/1, HTTP/2 and in-process requests are three protocols of one request
core (runtime/core/, docs/layers.md): the same request gets the same answer.
From the reviewer's reproducers of issue 19 (second pass), each case asked
on every protocol:

- every handler header arrives (HTTP/2 cut them past 64 fields or 4 KiB of
  names);
- a handler's header block over what every protocol can send is a 500 with
  the size logged (HTTP/2 stalled 60 s, then dropped the connection);
- connection-specific fields (TE, Upgrade, Keep-Alive...) are refused from a
  handler on every protocol (HTTP/2 sent TE and curl refused the stream);
- Expect is judged by one rule (HTTP/2 compared the value exactly);
- an unknown method is 400 everywhere (HTTP/2 said 501, or 405 for PRI and
  DESCRIBE);
- Cookie crumbs are joined with "; " (RFC 9113 8.2.3);
- api.client keeps two Set-Cookie fields apart, a comma inside one kept.
"""
import json
import shutil
import socket
import subprocess

import h2.config
import h2.connection
import h2.events

import harness

ALLOWED_ERRORS = ["header fields take", "is set by the runtime"]

APP = harness.new_app({"routes/r.lua": r'''
local api = require "devloop"
api.get("/hello", function() return "Hello, World!" end)
api.get("/many", function()
  local h = {}
  for i = 1, 100 do h["X-H" .. i] = tostring(i) end
  for i = 1, 6 do h[string.char(64 + i) .. string.rep("n", 999)] = "v" end
  return 200, "ok", h
end)
api.get("/big", function(req)
  return 200, "ok", { ["X-Big"] = string.rep("v", tonumber(req.query.n)) }
end)
api.get("/conn-field", function(req)
  return 200, "ok", { [req.query.name] = "x" }
end)
api.post("/echo", function(req) return { raw = req.raw_body } end)
api.get("/cookie", function(req) return { cookie = req.headers.cookie } end)
api.get("/setcookie", function() return 200, "x", { ["Set-Cookie"] = { "a=1", "b=2, c=3" } } end)
api.get("/client/setcookie", function()
  local r = api.client.get("/setcookie")
  return { sc = r.headers["set-cookie"], ct = r.headers["content-type"] }
end)
-- the same request in process: status of api.client.request(method, path, opts)
api.post("/inproc", function(req)
  local a = req.body
  local ok, r = pcall(api.client.request, a.method, a.path, { headers = a.headers, body = a.body })
  if not ok then return 500, { err = tostring(r) } end
  return { status = r.status, n = r.headers["x-h100"] and 1 or 0 }
end)
'''}, prefix="devloop-parity-")


def h2_request(srv, headers, body=None, timeout=10):
    cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                    normalize_outbound_headers=False,
                                    validate_inbound_headers=False)
    c = h2.connection.H2Connection(cfg)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    c.initiate_connection()
    c.send_headers(1, headers, end_stream=body is None)
    if body is not None:
        c.send_data(1, body, end_stream=True)
    s.sendall(c.data_to_send())
    status, hdrs, data, reset = None, [], b"", None
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            for ev in c.receive_data(d):
                if isinstance(ev, h2.events.ResponseReceived):
                    hdrs = [(k.decode(), v.decode()) for k, v in ev.headers]
                    status = int(dict(hdrs)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    reset = ev.error_code
                elif isinstance(ev, h2.events.StreamEnded):
                    s.close()
                    return status, hdrs, data, reset
            out = c.data_to_send()
            if out:
                s.sendall(out)
            if reset is not None:
                break
    except socket.timeout:
        pass
    s.close()
    return status, hdrs, data, reset


def base(path, method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1"),
            (":path", path)]


def inproc(srv, method, path, headers=None, body=None):
    r = srv.request("POST", "/inproc", body=json.dumps(
        {"method": method, "path": path, "headers": headers or {}, "body": body}).encode(),
        headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    return r.json()


def http1_raw(srv, text):
    c = srv.conn()
    c.send(text)
    r = c.response()
    while r.status == 100:
        r = c.response()
    c.close()
    return r


def test_every_handler_header_arrives(srv):
    r = srv.get("/many")
    n1 = sum(1 for k, _ in r.headers if k.lower().startswith("x-h")) if isinstance(
        r.headers, list) else sum(1 for i in range(1, 101) if r.header("x-h%d" % i))
    long1 = sum(1 for i in range(6) if r.header(chr(65 + i) + "n" * 999) == "v")
    status, hdrs, _, _ = h2_request(srv, base("/many"))
    n2 = sum(1 for k, _ in hdrs if k.startswith("x-h"))
    long2 = sum(1 for k, _ in hdrs if len(k) == 1000)
    assert status == 200 and (n1, long1) == (n2, long2) == (100, 6), (n1, long1, n2, long2)
    assert inproc(srv, "GET", "/many") == {"status": 200, "n": 1}


def test_header_block_over_the_limit_is_500_everywhere(srv):
    r = srv.get("/big?n=200000")
    status, hdrs, data, reset = h2_request(srv, base("/big?n=200000"), timeout=15)
    assert (r.status, status, reset) == (500, 500, None), (r.status, status, reset)
    assert json.loads(data)["error"] == "Internal Server Error", data
    assert inproc(srv, "GET", "/big?n=200000")["status"] == 500
    # the connection goes on serving
    assert h2_request(srv, base("/hello"))[0] == 200
    assert "header fields take 200" in srv.output(), srv.output()[-2000:]


def test_header_block_under_the_limit_goes_out_everywhere(srv):
    r = srv.get("/big?n=50000")
    status, hdrs, _, _ = h2_request(srv, base("/big?n=50000"))
    assert (r.status, status) == (200, 200)
    assert len(r.header("x-big")) == 50000 and len(dict(hdrs)["x-big"]) == 50000
    assert inproc(srv, "GET", "/big?n=50000")["status"] == 200


def test_connection_fields_refused_from_handlers_everywhere(srv):
    for name in ("TE", "Upgrade", "Keep-Alive", "Proxy-Connection", "Connection",
                 "Transfer-Encoding"):
        path = "/conn-field?name=" + name
        r = srv.get(path)
        status, _, _, reset = h2_request(srv, base(path))
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--http2-prior-knowledge", srv.url(path)], capture_output=True)
        got = (r.status, status, reset, p.returncode, p.stdout,
               inproc(srv, "GET", path)["status"])
        assert got == (500, 500, None, 0, b"500", 500), (name, got)


def test_expect_judged_by_one_rule(srv):
    for value, want in (("100-continue, 100-continue", 200), ("100-Continue", 200),
                        ("", 200), ("foo", 417), ("100-continue, foo", 417)):
        r = http1_raw(srv, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: %s\r\n"
                      "Content-Length: 1\r\n\r\nx" % value)
        status, _, _, _ = h2_request(srv, base("/echo", "POST") + [("expect", value)], b"x")
        ip = inproc(srv, "POST", "/echo", {"Expect": value}, "x")["status"]
        assert (r.status, status, ip) == (want, want, want), (value, r.status, status, ip)


def test_unknown_methods_answered_alike(srv):
    for m in ("FOO", "PRI", "DESCRIBE", "SETUP"):
        r = http1_raw(srv, "%s /hello HTTP/1.1\r\nHost: x\r\n\r\n" % m)
        status, _, data, _ = h2_request(srv, base("/hello", m))
        ip = inproc(srv, m, "/hello")["status"]
        assert (r.status, status, ip) == (400, 400, 400), (m, r.status, status, ip)
        assert json.loads(r.body)["message"] == json.loads(data)["message"], (m, r.body, data)


def test_cookie_crumbs_joined_with_semicolon(srv):
    status, _, data, _ = h2_request(srv, base("/cookie") + [("cookie", "a=1"), ("cookie", "b=2")])
    assert status == 200 and json.loads(data)["cookie"] == "a=1; b=2", data
    r = srv.get("/cookie", headers={"Cookie": "a=1; b=2"})
    assert r.json()["cookie"] == "a=1; b=2", r.json()


def test_client_keeps_set_cookie_fields_apart(srv):
    r = srv.get("/client/setcookie")
    assert r.json() == {"sc": ["a=1", "b=2, c=3"], "ct": "text/plain; charset=utf-8"}, r.json()


if __name__ == "__main__":
    try:
        harness.main(globals(), app=APP)
    finally:
        shutil.rmtree(APP, ignore_errors=True)
