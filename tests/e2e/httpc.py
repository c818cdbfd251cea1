"""
httpc.py - the devloop side of the api.http tests (test_http_client*.py):
an app whose routes make outbound calls described by the test, and helpers
to drive them. The upstreams are upstream.py's.

POST /call {fn, url, body, opts} runs api.http[fn](url, [body,] opts) and
answers {status, headers, body, json, url, err, ms}; with opts.stream the
body is read piece by piece (pieces counts them). GET /metrics is devloop's.
"""
import json
import re

import harness

ROUTES = r"""local api = require "devloop"

local function call(a)
  local fn = a.fn or "request"
  if a.rep then a.body = string.rep("p", a.rep) end -- a body bigger than devloop takes in
  local res, err
  if fn == "request" or fn == "get" or fn == "head" or fn == "delete" then
    res, err = api.http[fn](a.url, a.opts)
  else
    res, err = api.http[fn](a.url, a.body, a.opts)
  end
  if not res then return { err = err } end
  local out = { status = res.status, headers = res.headers, url = res.url }
  if a.opts and a.opts.stream then
    local parts, n = {}, 0
    while true do
      local piece, rerr = res:read()
      if rerr then out.read_err = rerr break end
      if not piece then break end
      n = n + 1
      parts[#parts + 1] = piece
      if a.read_limit and n >= a.read_limit then res:close() break end
    end
    out.pieces = n
    out.body = table.concat(parts)
  else
    out.body = res.body
    out.json = res.json
  end
  if a.hex and out.body then
    out.body_len = #out.body
    out.body = (out.body:sub(1, 64):gsub(".", function(c) return string.format("%02x", c:byte()) end))
  end
  return out
end

api.post("/call", function(req)
  return call(req.body)
end)

-- many calls at once from one handler
api.post("/parallel", function(req)
  local fns = {}
  for i = 1, #req.body.urls do
    fns[i] = function()
      local res, err = api.http.get(req.body.urls[i], { timeout = 5000 })
      return res and res.status or err
    end
  end
  return { results = { api.parallel(unpack(fns)) } }
end)

-- inputs JSON cannot carry
local SPECIAL = {
  nul_value = function(u) return api.http.get(u, { headers = { ["X-A"] = "a\0b" } }) end,
  cr_value = function(u) return api.http.get(u, { headers = { ["X-A"] = "a\r\nX-Evil: 1" } }) end,
  lf_name = function(u) return api.http.get(u, { headers = { ["X-A\nB"] = "1" } }) end,
  nul_name = function(u) return api.http.get(u, { headers = { ["X\0A"] = "1" } }) end,
  content_length = function(u) return api.http.post(u, "abc", { headers = { ["Content-Length"] = "3" } }) end,
  transfer_encoding = function(u) return api.http.post(u, "abc", { headers = { ["Transfer-Encoding"] = "chunked" } }) end,
  url_nul = function(u) return api.http.get(u .. "\0x") end,
  url_crlf = function(u) return api.http.get(u .. "\r\nX: y") end,
  method_connect = function(u) return api.http.request(u, { method = "connect", timeout = 1000 }) end,
  method_space = function(u) return api.http.request(u, { method = "GET /x" }) end,
  method_crlf = function(u) return api.http.request(u, { method = "GET\r\n" }) end,
  host_list = function(u) return api.http.get(u, { headers = { Host = { "a.test", "b.test" } } }) end,
  header_fn = function(u) return api.http.get(u, { headers = { ["X-A"] = function() end } }) end,
  header_bool = function(u) return api.http.get(u, { headers = { ["X-A"] = true } }) end,
  header_numkey = function(u) return api.http.get(u, { headers = { [1] = "x" } }) end,
  body_table = function(u) return api.http.request(u, { method = "POST", body = {} }) end,
  opts_string = function(u) return api.http.request(u, "nope") end,
  url_number = function(u) return api.http.request(42) end,
  timeout_string = function(u) return api.http.get(u, { timeout = "soon" }) end,
  timeout_negative = function(u) return api.http.get(u, { timeout = -1 }) end,
  timeout_zero = function(u) return api.http.get(u, { timeout = 0 }) end,
  timeout_nan = function(u) return api.http.get(u, { timeout = 0/0 }) end,
  max_body_string = function(u) return api.http.get(u, { max_body = "1k" }) end,
  redirects_neg = function(u) return api.http.get(u, { redirects = -1 }) end,
  redirects_frac = function(u) return api.http.get(u, { redirects = 1.5 }) end,
  tls_string = function(u) return api.http.get(u, { tls = "yes" }) end,
  query_fn = function(u) return api.http.get(u, { query = { a = function() end } }) end,
  query_numkey = function(u) return api.http.get(u, { query = { "x" } }) end,
  json_fn = function(u) return api.http.request(u, { method = "POST", json = { f = function() end } }) end,
  body_and_json = function(u) return api.http.request(u, { method = "POST", body = "x", json = {} }) end,
  headers_string = function(u) return api.http.get(u, { headers = "X: 1" }) end,
  ca_number = function(u) return api.http.get(u, { tls = { ca = 42 } }) end,
  verify_string = function(u) return api.http.get(u, { tls = { verify = "no" } }) end,
  server_name_number = function(u) return api.http.get(u, { tls = { server_name = 42 } }) end,
}

api.get("/special/:name", function(req)
  local f = SPECIAL[req.params.name]
  if not f then return 404, { err = "no such case" } end
  local ok, res, err = pcall(f, req.query.url)
  if not ok then return { raised = tostring(res) } end
  if not res then return { err = err } end
  return { status = res.status }
end)

-- a stream kept past its request, and used from another one
local kept
api.get("/stream-keep", function(req)
  local res, err = api.http.get(req.query.url, { stream = true })
  if not res then return { err = err } end
  kept = res
  api.sleep(tonumber(req.query.ms) or 0)
  return { kept = true }
end)
api.get("/stream-steal", function()
  local ok, piece, err = pcall(kept.read, kept)
  return { ok = ok, piece = piece or api.null, err = err or api.null }
end)
-- a stream's life: read to the end and past it, closed then read
api.get("/stream-life", function(req)
  local out = {}
  local res = assert(api.http.get(req.query.url, { stream = true }))
  local all = {}
  while true do
    local p, err = res:read()
    if err then out.err = err break end
    if not p then break end
    all[#all + 1] = p
  end
  out.body = table.concat(all)
  out.again = { res:read() }
  res:close()
  res:close()
  out.closed = { res:read() }
  local plain = assert(api.http.get(req.query.url))
  out.plain = { plain:read() }
  out.plain_body = plain.body
  return out
end)

-- a stream left open when the handler ends: its scope closes it
api.get("/stream-abandon", function(req)
  local res, err = api.http.get(req.query.url, { stream = true })
  if not res then return { err = err } end
  local piece = res:read()
  return { first = #(piece or "") }
end)
"""


def new_app(extra=None):
    files = {"routes/r.lua": ROUTES}
    files.update(extra or {})
    return harness.new_app(files)


def call(srv, url, fn="request", data=None, wait=30, **opts):
    """Runs api.http[fn](url, [data,] opts) in a handler (data: post's body
    argument; opts.body is the request's option); returns its result dict."""
    a = {"fn": fn, "url": url, "opts": opts}
    if data is not None:
        a["body"] = data
    for k in ("hex", "read_limit", "rep"):
        if k in opts:
            a[k] = opts.pop(k)
    c = harness.Conn(srv.port, timeout=wait)
    try:
        r = c.request("POST", "/call", {"Content-Type": "application/json"}, json.dumps(a))
    finally:
        c.close()
    assert r.status == 200, r
    return r.json()


def special(srv, name, url):
    r = srv.get("/special/%s?url=%s" % (name, url))
    assert r.status == 200, r
    return r.json()


def metric(srv, name, labels=None):
    """The sum of a metric's samples whose labels include labels."""
    text = srv.get("/metrics").body.decode()
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r'^([a-z_]+)(\{[^}]*\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(3))
            seen = True
    return total if seen else None


def err_kind(out, kind):
    e = out.get("err")
    assert e and e.startswith(kind + ":"), ("want %s:" % kind, out)
