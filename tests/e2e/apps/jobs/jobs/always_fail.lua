local log = require "joblog"
return function(data, job)
  log.add("fail", job.id, job.attempts_made)
  return nil, "it never works"
end
