-- Benchmark app for the document store (tests/bench/bench-db.sh): 100,000
-- features in two collections, one indexed on (status, -created_at), one not.
local api = require "devloop"
local db = api.db
local N = tonumber(os.getenv("BENCH_DB_DOCS") or "100000")

db.define("features", { indexes = { { "status", "-created_at" }, { "created_at" } } })
db.define("features_noindex", {})

local STATUSES = { "not-started", "in-progress", "completed", "blocked" }
local BASE = 1767225600

local function fill(coll)
  if (coll:count({}) or 0) >= N then return end
  local batch = {}
  for i = 1, N do
    batch[#batch + 1] = {
      _id = string.format("f%07d", i), name = "Feature " .. i,
      status = STATUSES[i % 4 + 1],
      -- ten documents share each timestamp: cursor ties are the norm
      created_at = os.date("!%Y-%m-%dT%H:%M:%SZ", BASE + math.floor(i / 10) * 60),
    }
    if #batch == 5000 then assert(coll:insert_many(batch)); batch = {} end
  end
  if #batch > 0 then assert(coll:insert_many(batch)) end
end

api.on_start(function()
  if api.worker_id() ~= 0 then return end
  fill(db.features)
  fill(db.features_noindex)
  api.log.info("bench data ready", { docs = N })
end)
