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
-- the crash test's tally: runs per job and effects applied
api.get("/crash-tally", function()
  local runs = api.db.collection("crash_runs"):find({}, { limit = 1000 }) or {}
  local per = {}
  for _, r in ipairs(runs) do per[r.job] = (per[r.job] or 0) + 1 end
  local repeated = 0
  for _, n in pairs(per) do if n > 1 then repeated = repeated + n - 1 end end
  return { runs = #runs, repeated = repeated,
           effects = api.db.collection("crash_effects"):count({}) or -1 }
end)
