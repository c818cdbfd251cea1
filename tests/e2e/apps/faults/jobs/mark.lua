-- A job that takes a few milliseconds, so some are running whenever a fault
-- starts; its completion is recorded by the queue (completions in its hash).
local api = require "devloop"
return function(data, job)
  api.sleep(tonumber(data.sleep_ms) or 5)
  return { id = job.id, n = data.n }
end
