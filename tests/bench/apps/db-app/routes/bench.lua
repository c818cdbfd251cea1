local api = require "devloop"
local db = api.db

api.get("/ready", function()
  local n = db.features_noindex:count({})
  return { ready = n >= tonumber(os.getenv("BENCH_DB_DOCS") or "100000"), n = n }
end)

-- the same query on the indexed and the unindexed collection (not cached)
local function list(coll, req)
  return coll:find({ status = req.query.status or "completed" },
    { sort = { { "created_at", -1 } }, limit = tonumber(req.query.limit) or 50 })
end
api.get("/features", function(req) return list(db.features, req) end)
api.get("/features-noindex", function(req) return list(db.features_noindex, req) end)

api.get("/walk", function(req)
  local p, err, code = db.features:cursor_page({}, { cursor = req.query.cursor, limit = 100 })
  if not p then return 400, { error = err, code = code } end
  return p
end)
