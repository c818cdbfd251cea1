-- devloop.health: what GET /health and GET /stats answer (api.health,
-- api.stats; routes/observability.lua serves them).
local core = require "devloop.core"
local redis_core = require "devloop.redis_core"
local metrics_core = require "devloop.metrics_core"
local cache = require "devloop.cache"
local db = require "devloop.db"
local jobs = require "devloop.jobs"
local tasks = require "devloop.tasks"
local lifecycle = require "devloop.lifecycle"

local type, error = type, error

local M = {}

-- how long a backend has to answer a health ping or an INFO
local PING_TIMEOUT_MS = 1000

-- Pings every backend in use with a short deadline: UP, DEGRADED (some
-- down) or DOWN (all down), with the reload status.
function M.health()
  local services, up, n = {}, 0, 0
  local function check(name, kind, fn)
    local t0 = core.now()
    local ok, res = tasks.with_timeout(PING_TIMEOUT_MS, fn)
    local good = ok and res ~= nil and res ~= false
    local s = { type = kind, status = good and "UP" or "DOWN",
                latency_ms = math.floor((core.now() - t0) * 1000 + 0.5) }
    -- the message, not the traceback with_timeout appends
    if not good then s.error = ok and "no answer" or tostring(res):match("^[^\n]*") end
    services[name] = s
    n = n + 1
    if good then up = up + 1 end
  end
  if cache.type() == "redis" then
    check("cache", "redis", function()
      local r, err = redis_core.call("PING")
      if r ~= "PONG" then error(err or "unexpected PING reply", 0) end
      return true
    end)
    -- this worker's pool: why it is down and for how long, the breaker
    local st, s = redis_core.state(), services.cache
    if st then
      s.breaker = st.breaker
      if s.status ~= "UP" then
        s.last_error = st.last_error ~= "" and st.last_error or nil
        if st.down_ms > 0 then s.down_ms = st.down_ms end
      end
    end
  else
    services.cache = { type = "memory", status = "UP" }
    n, up = n + 1, up + 1
  end
  local dbt = db.type()
  if dbt then
    local write
    check("db", dbt, function()
      local r, err = db.ping()
      if not r then error(err or "ping failed", 0) end
      write = type(r) == "table" and r.write or nil
      return true
    end)
    -- reads work but writes fail (read-only, locked, full): DEGRADED, not up
    local s = services.db
    if s.status == "UP" and type(write) == "table" and write.ok == false then
      s.status, s.error, s.code, s.since = "DEGRADED", write.error, write.code, write.since
      up = up - 1
    end
  end
  -- a store across the network: its breaker, and why it opened
  local dst = services.db and db.state()
  if dst and dst.breaker ~= "closed" then
    services.db.breaker, services.db.last_error = dst.breaker, dst.last_error
  end
  local status = (up == n) and "UP" or (up == 0 and "DOWN" or "DEGRADED")
  return {
    status = status,
    timestamp = db.now_iso(),
    services = services,
    reload = metrics_core.reload_status(),
  }
end

local function redis_info()
  local text = redis_core.call("INFO")
  if type(text) ~= "string" then return nil end
  local t = {}
  for k, v in text:gmatch("([%w_]+):([^\r\n]*)") do t[k] = v end
  return {
    type = "redis",
    used_memory = tonumber(t.used_memory), used_memory_peak = tonumber(t.used_memory_peak),
    connected_clients = tonumber(t.connected_clients),
    keyspace_hits = tonumber(t.keyspace_hits), keyspace_misses = tonumber(t.keyspace_misses),
  }
end

function M.stats()
  local p = metrics_core.process()
  local cstats
  if cache.type() == "redis" then
    local ok, r = tasks.with_timeout(PING_TIMEOUT_MS, redis_info)
    cstats = ok and r or { type = "redis", error = tostring(r) }
  else
    cstats = metrics_core.memory_cache() or {}
    cstats.type = "memory"
  end
  local dbs = { type = db.type() }
  local f = metrics_core.database_file()
  if f then dbs.size_bytes, dbs.wal_bytes, dbs.path = f.size_bytes, f.wal_bytes, f.path end
  return {
    uptime = p.uptime,
    memory = { rss_bytes = p.rss_bytes, peak_rss_bytes = p.peak_rss_bytes },
    cpu = { user_seconds = p.cpu_user, system_seconds = p.cpu_system },
    pid = p.pid,
    workers = metrics_core.workers(),
    cache = cstats,
    database = dbs,
    reload = metrics_core.reload_status(),
    jobs = lifecycle.scheduler_started() and jobs.counts() or nil,
    timers = require("devloop.timer").list(),
    pubsub = { hub = require("devloop.pubsub").stats(),
               subscriptions = require("devloop.pubsub").list() },
  }
end

return M
