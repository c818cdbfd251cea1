-- counts its runs in Redis (the two-process test): runs:<job id>
local api = require "devloop"
return function(_, job)
  assert(api.redis.incr("runs:" .. job.id))
  return true
end
