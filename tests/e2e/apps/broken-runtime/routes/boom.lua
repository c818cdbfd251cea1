local api = require "devloop"
local cfg = nil
api.get("/y", function() return "y" end)
local port = cfg.port
