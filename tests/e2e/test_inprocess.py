"""In-process requests (api.client, conn.c's virtual connections) against
the same requests over a socket, for every route of examples/bench: equal
status, headers (apart from Date and X-Request-Id) and body bytes."""
import json
import os
import shutil
import tempfile

import harness
from harness import curl

WORK = tempfile.mkdtemp(prefix="devloop-inproc-")
APP = os.path.join(WORK, "bench")
shutil.copytree(os.path.join(harness.SRC, "examples", "bench"), APP,
                ignore=shutil.ignore_patterns("data", "logs"))
with open(os.path.join(APP, "routes", "zz_inproc.lua"), "w") as f:
    f.write('''local api = require "devloop"
-- replays a request in process and returns what came back, the body in hex
api.post("/_inproc", function(req)
  local b = req.body
  local r = assert(api.client.request(b.method, b.path, { headers = b.headers, body = b.body }))
  return { status = r.status, headers = r.headers,
           body = (r.body:gsub(".", function(c) return string.format("%02x", c:byte()) end)) }
end)
''')

CASES = harness.BENCH_REQUESTS


def test_inprocess_equals_socket(srv):
    for method, path, headers, body in CASES:
        args = ["-X", method] if method != "HEAD" else ["-I"]
        for k, v in headers.items():
            args += ["-H", "%s: %s" % (k, v)]
        if body is not None:
            args += ["--data-binary", body]
        st, h, raw = curl(*args, "http://127.0.0.1:%d%s" % (srv.port, path))
        r = srv.request("POST", "/_inproc", {"Content-Type": "application/json"},
                        json.dumps({"method": method, "path": path, "headers": headers,
                                    "body": body}))
        assert r.status == 200, (path, r)
        j = r.json()
        assert j["status"] == st, (method, path, j["status"], st)
        drop = {"date", "x-request-id"}
        hs = {k: v for k, v in h.items() if k not in drop}
        hi = {k: v for k, v in j["headers"].items() if k not in drop}
        assert hs == hi, (method, path, hs, hi)
        if method != "HEAD":
            got = bytes.fromhex(j["body"])
            if st >= 400:  # error bodies carry their own request id
                got, raw = json.loads(got), json.loads(raw)
                got.pop("requestId"), raw.pop("requestId")
            assert got == raw, (method, path)
    print("# %d requests: in process and over a socket give the same status, headers and body"
          % len(CASES))


if __name__ == "__main__":
    try:
        harness.main(globals(), app=APP)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
