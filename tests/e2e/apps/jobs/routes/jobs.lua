local api = require "devloop"
local jobs = api.jobs
local log = require "joblog"

api.get("/hello", function() return "Hello, World!" end)
api.post("/jobs/add", function(req)
  local b = req.body
  local id, err = jobs.add(b.type, b.data, b.opts)
  return { id = id or api.null, err = err or api.null }
end)
api.get("/jobs/:id", function(req)
  local j = jobs.get(req.params.id)
  if not j then return 404, { error = "no job" } end
  return j
end)
api.post("/jobs/pause", function() jobs.pause() return "ok" end)
api.post("/jobs/resume", function() jobs.resume() return "ok" end)
api.get("/jobs-counts", function() return jobs.counts() end)
api.get("/jobs-log", function() return log.entries end)
