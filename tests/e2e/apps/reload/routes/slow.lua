local api = require "devloop"
local ANSWER = "old"
api.get("/slow", function()
  api.sleep(500)
  return { answer = ANSWER }
end)
api.get("/mem", function()
  return { kb = collectgarbage("count") }
end)
