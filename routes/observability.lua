-- The built-in routes every app gets: GET /metrics (Prometheus text), GET
-- /health (200 UP or DEGRADED, 503 DOWN) and GET /stats. Written with the
-- public Lua API only. An app moves, protects or disables them in app.lua:
--   api.builtin_routes.metrics = "/internal/metrics"   -- move
--   api.builtin_routes.stats = false                   -- disable
--   api.builtin_routes.token = os.getenv("OPS_TOKEN")  -- require a Bearer token
local api = require "devloop"
local cfg = api.builtin_routes

local function guard(handler)
  if not cfg.token then return handler end
  local want = "Bearer " .. cfg.token
  return function(req)
    if req.headers.authorization ~= want then
      return 401, { error = "Unauthorized", message = "a valid bearer token is required" },
        { ["WWW-Authenticate"] = "Bearer" }
    end
    return handler(req)
  end
end

if cfg.metrics then
  api.get(cfg.metrics, guard(function()
    return 200, api.metrics.render(),
      { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }
  end))
end

if cfg.health then
  api.get(cfg.health, guard(function()
    local h = api.health()
    return h.status == "DOWN" and 503 or 200, h
  end))
end

if cfg.stats then
  api.get(cfg.stats, guard(function() return api.stats() end))
end
