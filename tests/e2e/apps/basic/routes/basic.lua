-- The e2e test app: one route per behaviour under test.
local api = require "devloop"

api.get("/hello", function() return "Hello, World!" end)
api.get("/json", function() return { message = "Hello, World!" } end)

api.post("/echo", function(req)
  return {
    method = req.method,
    body = req.body,
    raw = req.raw_body,
    content_type = req.headers["Content-Type"],
  }
end)
api.put("/echo", function(req) return { method = req.method, body = req.body } end)
api.patch("/echo", function(req) return { method = req.method, body = req.body } end)
api.delete("/echo", function(req) return { method = req.method } end)

api.post("/limited", { body_limit = 100 }, function(req) return { size = #req.raw_body } end)
api.post("/big-upload", { body_limit = 8 * 1024 * 1024 }, function(req)
  return { size = #req.raw_body }
end)

api.get("/params/:id/items/:item", function(req) return req.params end)
api.get("/files/*path", function(req) return { path = req.params.path } end)
api.get("/query", function(req) return req.query end)
api.get("/headers", function(req)
  return {
    ua = req.headers["User-Agent"],
    custom = req.headers["x-custom"],
    multi = req.headers["X-Multi"],
    id = req.id,
  }
end)

api.get("/status", function()
  return 201, { created = true }, { ["X-Foo"] = "bar", ["X-List"] = { "a", "b" } }
end)
api.get("/text-type", function()
  return 200, "<p>hi</p>", { ["Content-Type"] = "text/html; charset=utf-8" }
end)
-- a long Content-Type (multipart boundary, profile parameters) is sent whole
api.get("/long-type", function()
  return 200, "x", { ["Content-Type"] = "multipart/mixed; boundary=" .. string.rep("b", 200) }
end)
api.get("/nothing", function() end)
api.get("/empty-array", function() return api.json.array({}) end)
api.get("/empty-object", function() return {} end)
api.get("/null", function() return { value = api.null, list = { 1, 2, 3 } } end)
api.get("/error", function() error("boom in handler") end)
-- Lua's failure idiom: a 500 whose log line carries the message
api.get("/nil-err", function() return nil, "the store said no" end)
api.get("/error-table", function() error({ code = 1 }) end)
api.get("/bad-status", function() return 1234, "x" end)
api.get("/bad-header", function() return 200, "x", { ["X-Bad"] = "a\r\nInjected: yes" } end)
-- a coroutine made in one request and resumed in a later one, after the
-- task it was made in has ended (its exdata still names that task)
local kept
api.get("/keep-co", function()
  kept = coroutine.create(function() api.sleep(1) return "slept" end)
  return "kept"
end)
api.get("/resume-co", function()
  local ok, v = coroutine.resume(kept)
  return { ok = ok, v = tostring(v) }
end)
api.get("/spin", function() while true do end end) -- holds its worker (test_lifecycle)
api.get("/version", function(req) return req.http_version end)
api.get("/reserved-header", function() return 200, "x", { ["Content-Length"] = "3" } end)
api.get("/unencodable", function() return { f = function() end } end)
api.get("/yield", function() coroutine.yield() end)
api.get("/own-cache-control", function()
  return 200, { ok = true }, { ["Cache-Control"] = "public, max-age=60" }
end)

local big = {}
for i = 1, 200 do
  big[i] = { id = i, name = "item number " .. i, text = "some repetitive text to compress" }
end
api.get("/big", function() return big end)
api.get("/image", function()
  return 200, string.rep("\137PNG....", 1000), { ["Content-Type"] = "image/png" }
end)
api.get("/small", function() return { ok = true } end)

api.get("/sleep/:ms", function(req)
  local ms = tonumber(req.params.ms)
  api.sleep(ms)
  return { slept = ms }
end)

api.get("/parallel", function()
  local t0 = api.now()
  local a, b, c = api.parallel(
    function() api.sleep(300) return "a" end,
    function() api.sleep(300) return "b" end,
    function() return "c" end)
  return { a = a, b = b, c = c, elapsed = api.now() - t0 }
end)
api.get("/parallel-error", function()
  local ok, err = pcall(api.parallel,
    function() api.sleep(10) return 1 end,
    function() api.sleep(5) error("child failed") end)
  return { ok = ok, err = tostring(err) }
end)
api.get("/parallel-nested", function()
  local x, y = api.parallel(function()
    local p, q = api.parallel(function() api.sleep(20) return 1 end,
                              function() api.sleep(10) return 2 end)
    return p + q
  end, function() return 10 end)
  return { sum = x + y }
end)

api.route({ "GET", "POST" }, "/multi", function(req) return { method = req.method } end)

api.get("/log", function(req)
  api.log.info("handler log line", { path = req.path })
  return "logged"
end)

api.get("/timeout/:case", function(req)
  local c = req.params.case
  local t0 = api.now()
  local ok, res = api.with_timeout(200, function()
    if c == "slow" then api.sleep(2000) return "late" end
    if c == "error" then api.sleep(10) error("inner failure") end
    if c == "sync" then return "at once" end
    api.sleep(20)
    return "in time"
  end)
  -- the task can join again after a race, whoever won it
  local after = api.parallel(function() return "after" end)
  return { ok = ok, res = tostring(res), elapsed = api.now() - t0, after = after }
end)
