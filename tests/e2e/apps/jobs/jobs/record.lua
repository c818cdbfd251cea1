local api = require "devloop"
local log = require "joblog"
return function(data, job)
  log.add(data.kind, job.id)
  api.sleep(data.ms or 20)
  return true
end
