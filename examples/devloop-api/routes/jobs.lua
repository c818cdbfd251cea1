-- Background jobs: POST /api/jobs {type, data, priority} -> 202 {id, state};
-- GET /api/jobs/:id -> the job.
local api = require "devloop"

api.post("/api/jobs", function(req)
  local b = req.body
  if type(b) ~= "table" or type(b.type) ~= "string" then
    return 400, { error = "Bad Request", message = "type is required" }
  end
  if not api.jobs.processor(b.type) then
    return 400, { error = "Bad Request", message = "unknown job type '" .. b.type .. "'" }
  end
  local prio = b.priority or "normal"
  if prio ~= "high" and prio ~= "normal" and prio ~= "low" then
    return 400, { error = "Bad Request", message = "priority must be high, normal or low" }
  end
  local id, err = api.jobs.add(b.type, b.data, { priority = prio })
  if not id then error(err) end
  return 202, { id = id, state = "waiting" }
end)

api.get("/api/jobs/:id", function(req)
  local j, err = api.jobs.get(req.params.id)
  if err then error(err) end
  if not j then return 404, { error = "Not Found", message = "no job " .. req.params.id } end
  return j
end)
