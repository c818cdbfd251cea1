local api = require "devloop"
local VERSION = "v1"
return function(data, job)
  api.sleep(data.ms or 300)
  return { version = VERSION, n = data.n }
end
