local api = require "devloop"

api.get("/hello", function() return "Hello, World!" end)
api.get("/json", function() return { message = "Hello, World!" } end)
api.get("/users/:id", function(req) return { id = req.params.id } end)
api.get("/slow", function() api.sleep(1100) return "slow" end)

-- a burst of log records, numbered, tagged with the worker
api.get("/log/burst", function(req)
  local n = tonumber(req.query.n) or 1000
  local tag = req.query.tag or "t"
  local w = api.worker_id()
  local pad = req.query.pad and string.rep("x", tonumber(req.query.pad)) or nil
  for i = 1, n do
    api.log.info("burst", { tag = tag, worker = w, seq = i, pad = pad })
  end
  return { n = n, worker = w }
end)

local hits = api.metrics.counter("app_hits_total", "Hits by kind", { "kind" })
local temp = api.metrics.gauge("app_temperature", "A gauge")
local lat = api.metrics.histogram("app_latency_seconds", "App latency", nil, { 0.1, 1 })
api.get("/app-metrics", function(req)
  hits:inc({ req.query.kind or "a" })
  temp:set(nil, 21.5)
  lat:observe(nil, 0.5)
  return "ok"
end)
