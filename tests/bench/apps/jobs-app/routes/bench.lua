local api = require "devloop"
local lat = require "benchlat"
local rate = require "benchrate"
api.post("/enqueue", function(req)
  local b = req.body
  local list = {}
  for i = 1, b.n do list[i] = {} end
  rate.t0, rate.target, rate.done, rate.t1 = api.now(), b.n, 0, 0
  for i = 1, b.n, 1000 do
    assert(api.jobs.add_many(b.type, { unpack(list, i, math.min(i + 999, b.n)) }, { attempts = 1 }))
  end
  return { ok = true }
end)
-- jobs/s of the last enqueue once all of its jobs ran, else 0
api.get("/rate", function()
  if rate.t1 == 0 then return { rate = 0, done = rate.done } end
  return { rate = math.floor(rate.target / (rate.t1 - rate.t0)), done = rate.done }
end)
api.post("/latency", function()
  assert(api.jobs.add("lat", { t = api.now() * 1000 }, { attempts = 1 }))
  return { ok = true }
end)
api.get("/latencies", function() return api.json.array(lat) end)
