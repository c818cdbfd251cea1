-- Feature lookups and status updates, shared by the routes (PATCH
-- /api/features/:id) and the batch operations (getFeature, updateFeatureStatus).
local api = require "devloop"
local db = api.db

local M = {}

M.STATUSES = { ["not-started"] = true, ["in-progress"] = true, completed = true, blocked = true }
M.STATUS_LIST = "not-started, in-progress, completed, blocked"

-- Ids come from route params (strings) and from batch params, decoded from
-- JSON or MessagePack, where an id may be a table like {"$ne": null}: every
-- lookup goes through find_by_id or db.eq, which refuse anything but a plain
-- value (EBADPARAM) instead of letting it match the first feature.

-- feature or nil, "not_found" | nil, message (bad input)
function M.get(id)
  local f, err, code = db.features:find_by_id(id)
  if code == "EBADPARAM" then return nil, err end
  if err then error(err) end
  if not f then return nil, "not_found" end
  return f
end

-- updated feature, or nil, "not_found" | nil, message naming the field
function M.set_status(id, status)
  if status == nil then return nil, "status is required" end
  -- a table is never a key of STATUSES, so the enum refuses operator maps
  if not M.STATUSES[status] then return nil, "status must be one of " .. M.STATUS_LIST end
  local f, err, code = db.features:find_one_and_update({ _id = db.eq(id, "id") },
    { ["$set"] = { status = status, updated_at = math.floor(api.now() * 1000) } })
  if code == "EBADPARAM" then return nil, err end
  if err then error(err) end
  if not f then return nil, "not_found" end
  -- every cached list may hold this feature
  api.cache.invalidate_entity("feature", f._id)
  return f
end

return M
