-- app.lua's CORS for the browser front end and its limit on writes, in process
local t = require "devloop.test"

local FRONT = "http://localhost:5173"

t.test("the front end's origin gets CORS headers, a preflight is answered", function()
  local r = t.get("/api/features?limit=1", { headers = { Origin = FRONT } })
  t.eq(r.status, 200)
  t.eq(r.headers["access-control-allow-origin"], FRONT)
  t.eq(r.headers["access-control-allow-credentials"], "true")
  local pre = t.options("/api/features", { headers = { Origin = FRONT,
    ["Access-Control-Request-Method"] = "POST",
    ["Access-Control-Request-Headers"] = "authorization, content-type" } })
  t.eq(pre.status, 204)
  t.eq(pre.headers["access-control-allow-headers"], "Authorization, Content-Type, Accept")
  -- another origin gets none
  local other = t.get("/api/features?limit=1", { headers = { Origin = "https://evil.example" } })
  t.eq(other.headers["access-control-allow-origin"], nil)
end)

t.test("writes carry the rate limit's headers, reads do not", function()
  local w = t.post("/api/batch", { operations = { { id = 1, type = "getSystemHealth" } } })
  t.eq(w.status, 200)
  t.eq(w.headers["ratelimit-limit"], "600")
  t.eq(t.get("/api/features?limit=1").headers["ratelimit-limit"], nil)
end)
