local api = require "devloop"

api.get("/x", function()
  return {
end)
