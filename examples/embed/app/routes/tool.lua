-- routes of the embed example's app: they call the tool's own C module
local api = require "devloop"
local tool = require "embedtool" -- registered by embed.c with dl_add_lua_module()

api.get("/tool/upper/:s", function(req)
  -- completed by another thread of the tool after ms milliseconds
  local v, err = tool.upper_later(req.params.s, tonumber(req.query.ms) or 10)
  if not v then return 500, { error = "tool failed", message = err } end
  return { upper = v, library = tool.version() }
end)
