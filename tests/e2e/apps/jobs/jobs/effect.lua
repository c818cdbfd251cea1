-- the crash test's processor: every run is recorded (runs), and its effect is
-- applied once per job id (effects, keyed by the id: a repeat is a no-op),
-- both in the document store, which outlives kill -9
local api = require "devloop"
local runs, effects = api.db.collection("crash_runs"), api.db.collection("crash_effects")
return function(data, job)
  assert(runs:insert_one({ job = job.id, n = data.n }))
  api.sleep(data.ms or 300)
  local ok, err, code = effects:insert_one({ _id = job.id, n = data.n })
  if not ok and code ~= "EDUPKEY" then return nil, err end
  return { n = data.n }
end
