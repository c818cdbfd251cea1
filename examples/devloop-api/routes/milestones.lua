-- Milestones (cursor pagination on created_at, id breaking ties) and the
-- dashboard (parallel queries).
local api = require "devloop"
local db = api.db

local MS = { planned = true, active = true, done = true }

api.get("/api/milestones", function(req)
  local q = req.query
  local query = {}
  if q.status then
    if not MS[q.status] then
      return 400, { error = "Bad Request", message = "status must be one of planned, active, done" }
    end
    query.status = q.status
  end
  -- limit as it arrives: the helper bounds it (EBADPARAM) and caps it at 100
  local p, err, code = db.milestones:cursor_page(query, {
    limit = q.limit, max_limit = 100, cursor = q.cursor, field = "created_at", direction = 1,
  })
  if not p then
    if code == "EBADCURSOR" or code == "EBADPARAM" then
      return 400, { error = "Bad Request", message = err }
    end
    error(err)
  end
  return { data = p.items, pagination = { limit = p.limit, has_more = p.has_more, next_cursor = p.next_cursor } }
end)

api.get("/api/dashboard", function()
  local milestones, active, completed, health = api.parallel(
    function() return db.milestones:count({ status = { ["$in"] = { "planned", "active" } } }) end,
    function() return db.features:count({ status = "in-progress" }) end,
    function() return db.features:count({ status = "completed" }) end,
    function() return db.system_health:find_one({}, { sort = { { "created_at", -1 } } }) end)
  return {
    milestones = milestones,
    active_features = active,
    completed_features = completed,
    system_health = health or api.null,
  }
end)
