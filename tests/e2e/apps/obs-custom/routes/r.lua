local api = require "devloop"
api.get("/hello", function() return "Hello, World!" end)
