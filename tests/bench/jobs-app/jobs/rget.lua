local api = require "devloop"
return function()
  local v = api.redis.get("bench:key")
  return v ~= nil
end
