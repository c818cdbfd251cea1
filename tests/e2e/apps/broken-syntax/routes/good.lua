local api = require "devloop"
api.get("/ok", function() return "ok" end)
