local api = require "devloop"
local lat = require "benchlat"
api.post("/enqueue", function(req)
  local b = req.body
  local list = {}
  for i = 1, b.n do list[i] = {} end
  for i = 1, b.n, 1000 do
    assert(api.jobs.add_many(b.type, { unpack(list, i, math.min(i + 999, b.n)) }, { attempts = 1 }))
  end
  return { ok = true }
end)
api.get("/completed", function() return { n = api.jobs.counts().completed } end)
api.post("/latency", function()
  assert(api.jobs.add("lat", { t = api.now() * 1000 }, { attempts = 1 }))
  return { ok = true }
end)
api.get("/latencies", function() return api.json.array(lat) end)
