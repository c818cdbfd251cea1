-- Recomputes a milestone's progress from its features: the share of them
-- completed, stored on the milestone.
local api = require "devloop"

return function(data, job)
  local id = data and data.milestone_id
  if type(id) ~= "string" then error("milestone_id is required") end
  local total, done = api.parallel(
    function() return api.db.features:count({ milestone_id = id }) end,
    function() return api.db.features:count({ milestone_id = id, status = "completed" }) end)
  job:progress(50)
  local progress = total > 0 and math.floor(done * 100 / total + 0.5) or 0
  local m, err = api.db.milestones:find_one_and_update({ _id = id },
    { ["$set"] = { progress = progress, features_total = total, features_completed = done } })
  if err then return nil, err end
  if not m then return nil, "no milestone " .. id end
  job:progress(100)
  return { milestone_id = id, progress = progress, total = total, completed = done }
end
