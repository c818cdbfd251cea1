local api = require "devloop"
local rate = require "benchrate"
return function()
  rate.done = rate.done + 1
  if rate.done == rate.target then rate.t1 = api.now() end
  return true
end
