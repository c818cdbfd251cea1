-- The Devloop API: collections, indexes and the demo data set.
local api = require "devloop"
local db = api.db

-- A browser front end on another origin may call the API (its dev server
-- by default; CORS_ORIGIN names the deployed one), with its bearer token.
api.cors{
  origins = { os.getenv("CORS_ORIGIN") or "http://localhost:5173" },
  headers = { "Authorization", "Content-Type", "Accept" },
  expose = { "X-Request-Id", "RateLimit-Remaining" },
  credentials = true,
}

-- Writes are limited per client address (req.ip: the proxy's client when
-- DEVLOOP_TRUSTED_PROXIES names the proxy); reads are not.
local WRITES = { POST = true, PUT = true, PATCH = true, DELETE = true }
api.rate_limit{
  name = "writes", limit = tonumber(os.getenv("WRITE_LIMIT") or "") or 600, window = 60,
  key = function(req) return WRITES[req.method] and req.ip or nil end,
}

db.define("features", {
  required = { "name", "status", "milestone_id" },
  enums = { status = { "not-started", "in-progress", "completed", "blocked" } },
  defaults = { status = "not-started" },
  timestamps = true,
  indexes = { { "status", "-created_at" }, { "milestone_id", "-created_at" }, { "-created_at" } },
})

db.define("milestones", {
  required = { "name", "status" },
  enums = { status = { "planned", "active", "done" } },
  timestamps = true,
  indexes = { { "created_at" }, { "status", "created_at" } },
})

db.define("system_health", {
  required = { "status" },
  timestamps = true,
  indexes = { { "-created_at" } },
})

local STATUSES = { "not-started", "in-progress", "completed", "blocked" }
local MS_STATUSES = { "planned", "active", "done" }
local BASE = 1767225600 -- 2026-01-01T00:00:00Z
local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%S.000Z", t) end

-- A deterministic demo data set: 200 milestones (four share each creation
-- time, so cursor pagination has ties to break) and 10,000 features.
local function seed()
  if (db.milestones:count({}) or 0) > 0 then return end
  local ms = {}
  for i = 1, 200 do
    ms[i] = {
      _id = string.format("ms-%03d", i),
      name = "Milestone " .. i,
      status = MS_STATUSES[i % 3 + 1],
      created_at = iso(BASE + math.floor((i - 1) / 4) * 86400),
    }
  end
  assert(db.milestones:insert_many(ms))
  local batch = {}
  for i = 1, 10000 do
    batch[#batch + 1] = {
      _id = string.format("feat-%06d", i),
      name = "Feature " .. i,
      milestone_id = string.format("ms-%03d", i % 200 + 1),
      status = STATUSES[i % 4 + 1],
      created_at = iso(BASE + i * 60),
    }
    if #batch == 1000 then
      assert(db.features:insert_many(batch))
      batch = {}
    end
  end
  assert(db.system_health:insert_one({ status = "UP", services = { api = "UP" } }))
  -- lists answered while the data was arriving are stale now
  api.cache.invalidate("feature:*")
  api.log.info("seeded the demo data set", { features = 10000, milestones = 200 })
end
api.seed = seed

api.on_start(function()
  if api.worker_id() == 0 then seed() end
end)
