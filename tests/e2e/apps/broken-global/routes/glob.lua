local api = require "devloop"
counter = 0
api.get("/g", function() return "g" end)
