-- devloop.cache: api.cache, the key-value cache. Redis with REDIS_URL, else
-- the in-process cache shared by the workers. TTL presets and key prefixes
-- are tables an app may change: api.cache.prefix maps a kind to its key
-- prefix (api.cache.prefix.order = "o:"); a kind not in it is "kind:".
-- Cached routes (devloop.cached_route) build on it.
local cache_core = require "devloop.cache_core"
local options = require "devloop.options"

local type, error = type, error

local cache = {
  ttl = { short = 60, medium = 300, long = 3600, veryLong = 86400 },
  -- "api" is the default prefix of cached routes; an app adds its own kinds
  prefix = { api = "api:" },
}

-- the longest TTL the cache binding takes (ten years)
local MAX_TTL = cache_core.MAX_TTL

-- seconds from a preset name or a number; nil -> medium
local function ttl_seconds(ttl)
  if ttl == nil then return cache.ttl.medium end
  if type(ttl) == "number" then
    if not (ttl >= 0 and ttl < math.huge) then
      error("api.cache.set: ttl must be a number of seconds (0 or more) or a preset name, not "
            .. options.show(ttl), 3)
    end
    return ttl
  end
  local s = cache.ttl[ttl]
  if not s then error("unknown cache TTL preset '" .. tostring(ttl) .. "'", 3) end
  return s
end

function cache.get(key) return cache_core.get(key) end
function cache.set(key, value, ttl)
  -- not a tail call: ttl_seconds' level 3 is the caller of this function
  local secs = ttl_seconds(ttl)
  -- past the binding's maximum it would raise: a value the caller can test
  if type(secs) ~= "number" or not (secs >= 0 and secs <= MAX_TTL) then
    return nil, "api.cache.set: ttl must be seconds from 0 to " .. MAX_TTL .. " (ten years), not "
      .. options.show(ttl == nil and secs or ttl), "EINVAL"
  end
  return cache_core.set(key, value, secs)
end
function cache.del(key) return cache_core.del(key) end
function cache.invalidate(pattern) return cache_core.invalidate(pattern) end
-- Every cached key of an entity type: its own entries and the lists that may
-- hold it ("order:*" for an order), since any list can contain it.
function cache.invalidate_entity(kind, id)
  local p = cache.prefix[kind] or (kind .. ":")
  return cache_core.invalidate(p .. "*")
end
-- cache.key("order", "/api/orders", "?status=x") -> "order:/api/orders?status=x"
function cache.key(kind, ...)
  return (cache.prefix[kind] or (kind .. ":")) .. table.concat({ ... })
end
cache.type = cache_core.type

return cache
