"""api.http with opts.body_file: a request body sent from disk a piece at a
time (several MiB, the last piece short), and a path that is not a file
refused before anything is sent."""
import hashlib
import http.server
import json
import os
import tempfile
import threading

import harness

ROUTES = r"""local api = require "devloop"
api.get("/out", function(req)
  local res, err = api.http.get(req.query.url, { timeout = tonumber(req.query.t) or 3000 })
  if not res then return 502, { err = err } end
  return { status = res.status, body = res.body, headers = res.headers, json = res.json }
end)
api.post("/upload", function(req)
  local res, err = api.http.post(req.query.url, nil, { body_file = req.query.path })
  if not res then return 502, { err = err } end
  return res.json
end)
"""


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        data = b""
        while len(data) < n:
            piece = self.rfile.read(min(65536, n - len(data)))
            if not piece:
                break
            data += piece
        body = json.dumps({"len": len(data), "sha": hashlib.sha256(data).hexdigest()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        body = json.dumps({"path": self.path, "ua": self.headers.get("user-agent")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        self.wfile.write(body)


UP = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
threading.Thread(target=UP.serve_forever, daemon=True).start()
UP_URL = "http://127.0.0.1:%d" % UP.server_address[1]


def test_body_from_a_file(srv):
    data = os.urandom(3 * 1024 * 1024 + 17)  # many pieces, the last one short
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        r = srv.request("POST", "/upload?url=%s/up&path=%s" % (UP_URL, f.name), body="")
        assert r.status == 200, r
        assert r.json() == {"len": len(data), "sha": hashlib.sha256(data).hexdigest()}, r.body
        r = srv.request("POST", "/upload?url=%s/up&path=/no/such/file" % UP_URL, body="")
        assert r.status == 502 and r.json()["err"].startswith("invalid: "), r.body
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    harness.main(globals(), app=harness.new_app({"routes/r.lua": ROUTES}))
