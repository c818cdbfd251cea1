-- batch operations for tests/e2e/test_batch.py (hot-reloaded: VERSION)
local api = require "devloop"
local VERSION = "v1"
local running, peak = 0, 0
return {
  sleep = function(p, ctx)
    running = running + 1
    if running > peak then peak = running end
    api.sleep(p.ms or 10)
    running = running - 1
    return { v = p.v, request_id = ctx.request_id, user = ctx.user and ctx.user.id or api.null }
  end,
  boom = function() error("kaboom") end,
  soft = function() return nil, "soft failure" end,
  version = function() return VERSION end,
  peak = function() local p = peak peak = 0 return p end,
  admin = { permission = "ADMIN", handler = function() return "yes" end },
}
