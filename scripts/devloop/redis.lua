-- devloop.redis: api.redis, any Redis command by name over the runtime's
-- pool (REDIS_URL): api.redis.get(k), api.redis:get(k), api.redis.call(...).
local redis_core = require "devloop.redis_core"

local type, select, unpack = type, select, unpack

local redis_call, redis_pipeline = redis_core.call, redis_core.pipeline
local redis = {}

local function set_args(key, value, opts)
  local args = { "SET", key, value }
  if type(opts) == "table" then
    if opts.ex then args[#args + 1] = "EX"; args[#args + 1] = opts.ex end
    if opts.px then args[#args + 1] = "PX"; args[#args + 1] = opts.px end
    if opts.nx then args[#args + 1] = "NX" end
    if opts.xx then args[#args + 1] = "XX" end
  elseif type(opts) == "number" then
    args[#args + 1] = "EX"; args[#args + 1] = opts
  end
  return args
end

-- A failed call is nil, message, code. A command is sent again after a
-- dropped connection only when that cannot apply it twice (it was never
-- written, or it only reads); a write whose reply was lost fails with code
-- EUNKNOWN. redis.idempotent(...) and pipeline(cmds, { idempotent = true })
-- say the command may run twice, so it is sent again too.
function redis.call(...) return redis_call(...) end
function redis.idempotent(...) return redis_core.call_idempotent(...) end
function redis.pipeline(cmds, opts)
  return redis_pipeline(cmds, type(opts) == "table" and opts.idempotent == true)
end
function redis.configured() return redis_core.configured() end
function redis.set(a, b, c, d)
  if a == redis then a, b, c = b, c, d end -- api.redis:set(k, v, opts)
  return redis_call(unpack(set_args(a, b, c)))
end
function redis.hgetall(a, b)
  local key = a == redis and b or a
  local r, err, code = redis_call("HGETALL", key)
  if not r then return r, err, code end
  local t = {}
  for i = 1, #r, 2 do t[r[i]] = r[i + 1] end
  return t
end
setmetatable(redis, {
  -- any other command by name: api.redis.lpush(k, v), api.redis:zadd(...)
  __index = function(t, name)
    local cmd = name:upper()
    local f = function(...)
      if select("#", ...) > 0 and (...) == t then -- api.redis:cmd(...)
        return redis_call(cmd, select(2, ...))
      end
      return redis_call(cmd, ...)
    end
    rawset(t, name, f)
    return f
  end,
})


return redis
