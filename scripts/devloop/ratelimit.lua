-- devloop.ratelimit: api.rate_limit{...} and the route option rate_limit,
-- as a pair of hooks (devloop.hooks).
--   limit    requests allowed per window (a whole number >= 1)
--   window   seconds (default 60)
--   key      function(req) -> the key to count by (default req.ip); nil or
--            false from it: not limited
--   store    "local" (api.shared: every worker of this process) or "redis"
--            (REDIS_URL: every process sharing it); default "local"
--   on_error "open" (default: let requests through) or "closed" (answer
--            503) when the store cannot be reached; logged once per worker
--   name     the limiter's name in keys and metrics (default "default", or
--            the route's pattern for a route's limiter)
-- A sliding window counter: the count of the current fixed window plus the
-- previous window's count weighted by how much of it the sliding window
-- still covers. Two counters per key, one atomic increment (one round trip
-- with Redis), and no burst of twice the limit at a window's edge as fixed
-- windows allow; a token bucket would need a read-modify-write of two
-- values under a lock. Requests refused are not counted: a client held back
-- gets through again as soon as the window slides, however hard it tries.
-- Over the limit: 429 with Retry-After; every answer carries
-- RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (the runtime
-- adds them: core._rate_note). The counting of the local store is the
-- runtime's (runtime/cache/rate_limit.c), which also counts the app-wide
-- limit by req.ip in api.shared before any hook (lua_middleware.c); the
-- hooks here count the others: a key function, the Redis store, a route's.
local core = require "devloop.core"
local options = require "devloop.options"
local shared = require "devloop.shared_core"
local redis = require "devloop.redis"
local metrics = require "devloop.metrics"
local crypto = require "devloop.crypto"

local type, floor, tostring, format = type, math.floor, tostring, string.format
local note, undo_native = core._rate_note, core._rate_undo
-- req.ip, or nil for an in-process request (api.client: it has no address
-- of its own, and one shared bucket would let any caller starve the rest)
local client_key = core._client_key
-- the limiter's own fields of the request table are read with rawget: a
-- missing one would go to the table's __index (the lazy fields) each time
local rawget, rawset = rawget, rawset

local M = {}

local KEYS = { "key", "limit", "name", "on_error", "store", "window" }

-- refused requests and store failures, by limiter (one definition per VM)
local refused_total, failed_total
local function counters()
  if not refused_total then
    refused_total = metrics.counter("rate_limit_refused_total",
      "Requests answered 429 by a rate limit", { "limiter" })
    failed_total = metrics.counter("rate_limit_store_errors_total",
      "Rate limit checks whose store could not be reached", { "limiter" })
  end
end

-- Both counters in one atomic step: INCR the current window's, read the
-- previous one's, and take the increment back when over the limit.
local REDIS_SCRIPT = [[
local cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local est = prev * tonumber(ARGV[2]) + cur
if est > tonumber(ARGV[3]) then
  redis.call('DECR', KEYS[1])
  return {cur - 1, prev, 0}
end
return {cur, prev, 1}
]]

-- the app-wide limits a load declared without a name: "default", then
-- "default-2", ... (one name is one set of counters: two limits sharing
-- one would count each other's requests)
local unnamed = 0
function M._begin_load() unnamed = 0 end
function M.app_default_name(c)
  if type(c) == "table" and c.name ~= nil then return nil end
  unnamed = unnamed + 1
  return unnamed == 1 and "default" or ("default-" .. unnamed)
end

-- A route's default name ("GET /items"): a long one is cut and ends with
-- a digest of the whole, within the 100 bytes of a name.
function M.route_name(name)
  if #name <= 100 then return name end
  return name:sub(1, 80) .. "~" .. crypto.hex(crypto.sha256(name)):sub(1, 16)
end

function M.compile(c, default_name)
  if type(c) ~= "table" then
    options.fail("rate_limit must be a table { " .. table.concat(KEYS, ", ") .. " }, not "
                 .. options.show(c))
  end
  options.check(c, KEYS, "rate_limit option")
  local lim = c.limit
  if type(lim) ~= "number" or lim < 1 or lim % 1 ~= 0 or lim > 1e12 then
    options.fail("rate_limit option limit must be a whole number from 1, not " .. options.show(lim))
  end
  local w = c.window == nil and 60 or c.window
  if type(w) ~= "number" or not (w >= 1 and w <= 86400 * 365) or w % 1 ~= 0 then
    options.fail("rate_limit option window must be a whole number of seconds from 1, not "
                 .. options.show(c.window))
  end
  if c.key ~= nil and type(c.key) ~= "function" then
    options.fail("rate_limit option key must be a function(req), not " .. options.show(c.key))
  end
  local store = c.store == nil and "local" or c.store
  if store ~= "local" and store ~= "redis" then
    options.fail("rate_limit option store must be \"local\" or \"redis\", not "
                 .. options.show(c.store))
  end
  local on_error = c.on_error == nil and "open" or c.on_error
  if on_error ~= "open" and on_error ~= "closed" then
    options.fail("rate_limit option on_error must be \"open\" or \"closed\", not "
                 .. options.show(c.on_error))
  end
  if store == "redis" and (os.getenv("REDIS_URL") or "") == "" then
    options.fail("rate_limit option store = \"redis\" needs REDIS_URL")
  end
  local name = c.name == nil and default_name or c.name
  if type(name) ~= "string" or name == "" or #name > 100 or name:find("[%c]") then
    options.fail("rate_limit option name must be a string of 1 to 100 printable bytes, not "
                 .. options.show(c.name))
  end
  return { limit = lim, window = w, key = c.key, store = store, on_error = on_error,
           name = name, warned = false, bases = {}, n_bases = 0 }
end

-- "rl:NAME:KEY:" for key, kept for the keys seen lately (a bounded cache:
-- the strings are made once per client, not twice per request)
local function base_of(cfg, prefix, key)
  local cache = cfg.bases
  local b = cache[key]
  if b then return b end
  if cfg.n_bases >= 4096 then
    cache = {}
    cfg.bases, cfg.n_bases = cache, 0
  end
  b = prefix .. cfg.name .. ":" .. key .. ":"
  cache[key] = b
  cfg.n_bases = cfg.n_bases + 1
  return b
end

-- Counts one request of key: allowed, estimate, seconds to the window's
-- end, then (the counts of a refusal) cur, prev, covered, and the window
-- counted; or nil, err.
local function count_local(cfg, key)
  return shared._rate_count(base_of(cfg, "rl:", key), cfg.limit, cfg.window)
end

local function count_redis(cfg, key, now)
  local w = cfg.window
  local slot = floor(now / w)
  local base = base_of(cfg, "devloop:rl:", key)
  local f = 1 - (now - slot * w) / w
  local r, err = redis.call("EVAL", REDIS_SCRIPT, 2, base .. slot, base .. (slot - 1),
    tostring(2 * w * 1000), format("%.6f", f), tostring(cfg.limit))
  if type(r) ~= "table" then return nil, err or "unexpected reply" end
  local cur, prev, ok = tonumber(r[1]) or 0, tonumber(r[2]) or 0, r[3] == 1
  return ok, prev * f + cur, (slot + 1) * w - now, cur, prev, f, slot
end

-- A key as stored: long ones (a token, a URL) by a digest, so two keys
-- never share a counter because they begin alike
local function stored_key(key)
  if #key <= 64 then return key end
  return key:sub(1, 32) .. "~" .. crypto.hex(crypto.sha256(key))
end

-- Takes back the counts of the limiters that let req through before a
-- later one refused it (refused requests are not counted): the runtime's
-- own (the app's limit by address) and those listed here.
local function undo(req)
  undo_native(req)
  local st = rawget(req, "_rate_limit")
  if not st then return end
  for i = 1, #st, 3 do
    local cfg, base, slot = st[i], st[i + 1], st[i + 2]
    if cfg.store == "redis" then
      redis.call("DECR", base .. slot)
    else
      shared._rate_uncount(base, slot)
    end
    st[i], st[i + 1], st[i + 2] = nil, nil, nil
  end
end

-- The before hook: counts the request, refuses it over the limit.
function M.before(cfg)
  counters()
  return function(req)
    local key
    if cfg.key then key = cfg.key(req) else key = client_key(req) end
    if key == nil or key == false then return end
    local kt = type(key)
    if kt == "number" then
      key = tostring(key)
    elseif kt ~= "string" then
      error("rate limit " .. cfg.name .. ": its key function returned a " .. kt
            .. " (a string or a number, or nil to leave the request unlimited)", 0)
    end
    key = stored_key(key)
    local ok, est, to_end, cur, prev, covered, slot
    if cfg.store == "redis" then
      ok, est, to_end, cur, prev, covered, slot = count_redis(cfg, key, core.now())
    else
      ok, est, to_end, cur, prev, covered, slot = count_local(cfg, key)
    end
    if ok == nil then
      failed_total:inc({ cfg.name })
      if not cfg.warned then
        cfg.warned = true
        core.log(core.LOG_WARN, "rate limit " .. cfg.name .. ": its " .. cfg.store
          .. " store cannot be reached (" .. tostring(est) .. "); failing "
          .. cfg.on_error .. " (logged once)")
      end
      if cfg.on_error == "closed" then
        -- answered, not raised: a raised 5xx is logged per request, and the
        -- outage is logged once above
        return 503, { error = "Service Unavailable", message = "rate limit store unavailable",
                      requestId = req.id }
      end
      return
    end
    -- the answer's RateLimit-* fields (the tightest limit's) are the runtime's
    note(req, cfg.limit, cfg.window, ok, est, to_end, cur, prev, covered)
    if ok then
      -- what to take back when a later limit refuses
      local st = rawget(req, "_rate_limit")
      if not st then
        st = {}
        rawset(req, "_rate_limit", st)
      end
      local base = base_of(cfg, cfg.store == "redis" and "devloop:rl:" or "rl:", key)
      st[#st + 1], st[#st + 2], st[#st + 3] = cfg, base, slot
      return
    end
    undo(req)
    refused_total:inc({ cfg.name })
    error({ status = 429, message = "rate limit of " .. cfg.limit .. " requests per "
            .. cfg.window .. " s reached" }, 0)
  end
end

return M
