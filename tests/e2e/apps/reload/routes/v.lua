local api = require "devloop"
local VERSION = 0
api.get("/hello", function() return "Hello, World!" end)
api.get("/v", function() return { v = VERSION } end)
