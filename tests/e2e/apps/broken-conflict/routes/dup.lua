local api = require "devloop"
api.get("/a/:id", function() return "1" end)
api.get("/a/:other", function() return "2" end)
