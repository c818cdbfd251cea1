local api = require "devloop"
local rate = require "benchrate"
return function()
  local v = api.redis.get("bench:key")
  rate.done = rate.done + 1
  if rate.done == rate.target then rate.t1 = api.now() end
  return v ~= nil
end
