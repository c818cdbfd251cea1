local log = require "joblog"
return function(data, job)
  log.add("flaky", job.id, job.attempts_made)
  if job.attempts_made < 3 then error("flaky failure " .. job.attempts_made) end
  return "third time lucky"
end
