-- The Devloop API's first routes; the rest arrive with the document store,
-- cache, jobs and batch issues.
local api = require "devloop"

local started = api.now()

api.get("/", function()
  return {
    name = "devloop-api",
    version = "0.1",
    uptime_seconds = math.floor(api.now() - started),
    endpoints = api.json.array({ "GET /api/ping", "GET /api/echo/:word", "POST /api/echo" }),
  }
end)

api.get("/api/ping", function(req)
  return { pong = true, requestId = req.id }
end)

api.get("/api/echo/:word", function(req)
  return { word = req.params.word, query = req.query }
end)

api.post("/api/echo", function(req)
  return 201, { received = req.body }
end)
