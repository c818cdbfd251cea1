-- batch operations that fail in each way an operation can
local api = require "devloop"
return {
  ok = function(p) return { echo = p.v or api.null } end,
  -- raised on purpose: the message is the answer
  raised = function() error("feature not found") end,
  raised0 = function() error("no position here", 0) end,
  asserted = function(p) assert(p.v, "v is required") end,
  status = function() error({ status = 404, message = "no such feature" }) end,
  returned = function() return nil, { status = 409, message = "already done" } end,
  soft = function() return nil, "soft failure" end,
  -- bugs: internal, shown generic
  nilindex = function(p) return p.missing.field end,
  callnil = function() local f; return f() end,
  badarg = function() return string.rep() end,
  missing_module = function() return require "no_such_module_here" end,
  child = function()
    return api.parallel(function() local t; return t.x end)
  end,
  tableerr = function() error({ code = 7 }) end,
  -- a bug caught and raised again (pcall, then error(e)) is still a bug
  rethrow = function(p)
    local ok, e = pcall(function() return p.missing.field end)
    if not ok then error(e) end
  end,
  wrapped = function(p)
    local ok, e = pcall(function() return p.missing.field end)
    if not ok then error("wrapped: " .. tostring(e)) end
  end,
  rerequire = function()
    local ok, e = pcall(require, "no_such_module_either")
    if not ok then error(e, 0) end
  end,
}
