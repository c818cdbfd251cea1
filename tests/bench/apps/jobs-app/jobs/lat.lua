local api = require "devloop"
local lat = require "benchlat"
return function(data)
  lat[#lat + 1] = api.now() * 1000 - data.t
  return true
end
