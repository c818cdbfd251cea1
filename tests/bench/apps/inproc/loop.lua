-- copied into a scratch copy of examples/bench by tests/bench/bench-inprocess.sh:
-- n in-process GET /json, c at a time, timed in the worker
local api = require "devloop"
api.get("/_loop", function(req)
  local n, c = tonumber(req.query.n) or 20000, tonumber(req.query.c) or 1
  local t0 = api.now()
  local left = n
  local function lane()
    while left > 0 do
      left = left - 1
      assert(api.client.get("/json").status == 200)
    end
  end
  local lanes = {}
  for i = 1, c do lanes[i] = lane end
  api.parallel(unpack(lanes))
  return { n = n, c = c, rps = math.floor(n / (api.now() - t0)) }
end)
