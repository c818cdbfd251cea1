-- Routes for the HTTP/1.1 message-syntax tests (tests/e2e/test_http1_syntax.py).
local api = require "devloop"

api.get("/hello", function() return "Hello, World!" end)

-- what the runtime made of the request: framing and the fields a handler sees
local function echo(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k:lower() end
  table.sort(names)
  return {
    method = req.method,
    path = req.path,
    query = req.query,
    host = req.headers.host,
    content_type = req.headers["content-type"],
    header_names = api.json.array(names),
    raw = req.raw_body or "",
  }
end
api.route("*", "/echo", echo)
api.route("*", "/echo/:x", echo)

api.post("/limited", { body_limit = 100 }, function(req) return { size = #req.raw_body } end)
api.post("/secret", { auth = "WRITE" }, function(req) return { size = #req.raw_body } end)

api.get("/status/:code", function(req) return tonumber(req.params.code), "x" end)

-- n bytes of text (output back-pressure tests)
local blobs = {}
api.get("/blob/:n", function(req)
  local n = tonumber(req.params.n)
  blobs[n] = blobs[n] or string.rep("x", n)
  return 200, blobs[n], { ["Content-Type"] = "text/plain" }
end)

-- a file named by the environment, sent from disk (a body over 4 GiB)
local core = require "devloop.core"
api.get("/bigfile", function()
  return 200, os.getenv("DEVLOOP_TEST_BIG_FILE"), { ["Content-Type"] = "application/octet-stream" },
         core.FILE_BODY
end)

-- composing routes in process: what reaches /internal/count is counted
local hits = 0
api.post("/internal/count", function() hits = hits + 1 return { hits = hits } end)
api.get("/internal/hits", function() return { hits = hits } end)
api.get("/proxy/:id", function(req)
  local r = api.client.get("/echo/" .. req.params.id)
  return r.status, r.body, { ["Content-Type"] = "application/json" }
end)
api.get("/proxy-header", function(req)
  local r = api.client.get("/echo", { headers = { ["X-T"] = req.query.t } })
  return r.status, r.body, { ["Content-Type"] = "application/json" }
end)
api.post("/size", function(req) return { size = #req.raw_body } end)
-- Expect: 100-continue from inside a handler (in process: no early answer
-- runs Lua there, the body is read and the route's auth answers)
api.get("/proxy-expect", function()
  local h = { Expect = "100-continue" }
  local a = api.client.post("/secret", "hello", { headers = h })
  h.Authorization = "Bearer writer-token"
  local b = api.client.post("/secret", "hello", { headers = h })
  return { no_token = a.status, token = b.status, size = b.json and b.json.size }
end)
