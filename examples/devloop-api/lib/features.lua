-- Feature lookups and status updates, shared by the routes (PATCH
-- /api/features/:id) and the batch operations (getFeature, updateFeatureStatus).
local api = require "devloop"
local db = api.db

local M = {}

M.STATUSES = { ["not-started"] = true, ["in-progress"] = true, completed = true, blocked = true }
M.STATUS_LIST = "not-started, in-progress, completed, blocked"

-- feature or nil, "not_found" | nil, message (bad input)
function M.get(id)
  if type(id) ~= "string" or id == "" then return nil, "id must be a non-empty string" end
  local f, err = db.features:find_one({ _id = id })
  if err then error(err) end
  if not f then return nil, "not_found" end
  return f
end

-- updated feature, or nil, "not_found" | nil, message naming the field
function M.set_status(id, status)
  if type(id) ~= "string" or id == "" then return nil, "id must be a non-empty string" end
  if status == nil then return nil, "status is required" end
  if not M.STATUSES[status] then return nil, "status must be one of " .. M.STATUS_LIST end
  local f, err = db.features:find_one_and_update({ _id = id },
    { ["$set"] = { status = status, updated_at = math.floor(api.now() * 1000) } })
  if err then error(err) end
  if not f then return nil, "not_found" end
  -- every cached list may hold this feature
  api.cache.invalidate_entity("feature", f._id)
  return f
end

return M
