-- The backend-faults app (tests/e2e/test_backend_faults.py): a cached route,
-- an api.redis INCR that reports how it ended, and a route that adds jobs,
-- all timed from inside the handler so the test can tell the runtime's wait
-- from the client's.
local api = require "devloop"
local redis_core = require "devloop.redis_core"
local redis, jobs = api.redis, api.jobs

local function ms_since(t0) return math.floor((api.now() - t0) * 1e6 + 0.5) / 1000 end

api.get("/hello", function() return "Hello, World!" end)

-- like examples/bench's /cached/features: the same 100 items every time, so
-- a hit and a handler run answer the same document (object keys may come in
-- another order from another worker's Lua state)
local FEATURES = {}
for i = 1, 100 do
  FEATURES[i] = { id = i, name = "feature " .. i,
                  status = i % 3 == 0 and "completed" or "in-progress",
                  description = "a cached feature list entry, repetitive enough to compress " .. i }
end
api.get("/cached/features", { cache = { prefix = "feature", ttl = 300 } }, function()
  return { items = FEATURES, total = #FEATURES }
end)

-- one INCR: ok with the new value, or how it failed (code EUNKNOWN: the
-- reply was lost and the increment may have happened; EUNAVAIL: not sent)
api.get("/incr", function(req)
  local t0 = api.now()
  local v, err, code = redis.incr(req.query.key or "faults:counter")
  return { ok = v ~= nil, value = v or api.null, err = err or api.null,
           code = code or api.null, wait_ms = ms_since(t0), worker = api.worker_id() }
end)

-- one job whose completion the test checks in Redis (completions = 1)
api.post("/jobs/add", function(req)
  local b = req.body or {}
  local t0 = api.now()
  local id, err, code = jobs.add("mark", b.data or {}, { attempts = 5, remove_on_complete = false,
    backoff = { type = "fixed", delay = 100 } })
  return { id = id or api.null, err = err or api.null, code = code or api.null,
           wait_ms = ms_since(t0) }
end)
api.get("/jobs/:id", function(req)
  local j, err = jobs.get(req.params.id)
  if not j then return 404, { error = err or "no job" } end
  return j
end)

-- this worker's pool, for the test's diagnostics
api.get("/faults/pool", function()
  local st = redis_core.state()
  st.worker = api.worker_id()
  return st
end)

-- a write the caller declares safe to repeat: the pool sends it again when
-- its reply is lost
api.get("/idem", function(req)
  local v, err, code = redis.idempotent("SET", req.query.key, req.query.value)
  return { ok = v ~= nil, value = v or api.null, err = err or api.null, code = code or api.null }
end)
