-- The batch operations of POST /api/batch (routes/batch.lua). A module under
-- lib/, so editing it reloads it with the app like a route file.
local api = require "devloop"
local features = require "features"
local db = api.db

local function found(doc, err, what, id)
  if doc then return doc end
  if err == "not_found" then return nil, what .. " " .. tostring(id) .. " not found" end
  return nil, err
end

return {
  getFeature = function(p)
    local f, err = features.get(p.id)
    return found(f, err, "feature", p.id)
  end,
  -- params come from the decoded body: find_by_id refuses an id that is
  -- not a string or a number ({"$ne": null} would match the first milestone)
  getMilestone = function(p)
    local m, err, code = db.milestones:find_by_id(p.id)
    if code == "EBADPARAM" then return nil, err end
    if err then error(err) end
    return found(m, m == nil and "not_found" or nil, "milestone", p.id)
  end,
  getSystemHealth = function()
    local h, err = db.system_health:find_one({}, { sort = { { "created_at", -1 } } })
    if err then error(err) end
    return h or api.null
  end,
  updateFeatureStatus = {
    permission = "UPDATE_FEATURE",
    handler = function(p)
      local f, err = features.set_status(p.id, p.status)
      return found(f, err, "feature", p.id)
    end,
  },
}
