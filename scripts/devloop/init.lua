-- devloop: the public Lua API (`local api = require "devloop"`).
-- Route declaration, the handler helpers (sleep, parallel), codecs and the
-- logger, over the C primitives of devloop.core and devloop.codec.
local core = require "devloop.core"
local codec = require "devloop.codec"
local cache_core = require "devloop.cache_core"
local redis_core = require "devloop.redis_core"
local metrics_core = require "devloop.metrics_core"
local options = require "devloop.options"

local type, error, select, unpack = type, error, select, unpack
local M = core.methods

local _M = { _VERSION = "0.1" }

---------------------------------------------------------------------------
-- Cache (api.cache): Redis with REDIS_URL, else the in-process cache shared
-- by the workers. TTL presets and key prefixes are tables an app may change.
---------------------------------------------------------------------------
local cache = {
  ttl = { short = 60, medium = 300, long = 3600, veryLong = 86400 },
  prefix = {
    api = "api:", user = "user:", feature = "feature:", milestone = "milestone:",
    graph = "graph:", query = "query:",
  },
}

-- the longest TTL the cache binding takes (check_ttl_ms in dl_cache.c: ten years)
local MAX_TTL = 10 * 365 * 86400

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
-- hold it ("feature:*" for a feature), since any list can contain it.
function cache.invalidate_entity(kind, id)
  local p = cache.prefix[kind] or (kind .. ":")
  return cache_core.invalidate(p .. "*")
end
-- cache.key("feature", "/api/features", "?status=x") -> "feature:/api/features?status=x"
function cache.key(kind, ...)
  return (cache.prefix[kind] or (kind .. ":")) .. table.concat({ ... })
end
cache.type = cache_core.type

-- Concurrent misses on one key in this worker run the handler once: the
-- others wait for its answer (request coalescing).
local inflight = {}
local GZIP_BODY = core.GZIP_BODY

-- What a cached answer keeps: its status (only 200s are stored), its
-- headers and its body, encoded once per representation (JSON,
-- MessagePack) and compressed once; hits, and the requests that waited for
-- the one that ran the handler, get the same headers (CORS, Cache-Control,
-- the app's own) as the first answer. Hop-by-hop and framing headers are
-- the runtime's, which refuses them from handlers. Set-Cookie never goes in
-- a shared entry (one caller's session would be every caller's): such an
-- answer goes out as the handler made it and the next request runs the
-- handler again, as does one whose headers the entry cannot hold (over 64
-- or 16 KiB) and one with a marker after its headers (a file to send); the
-- first such answer of a route is logged (info).

-- nil when the cache can keep these headers, else the name of one it cannot
local function unkept_header(headers)
  if headers == nil then return nil end
  if type(headers) ~= "table" then return "(headers that are not a table)" end
  for name in pairs(headers) do
    if type(name) ~= "string" then return tostring(name) end
    if name:lower() == "set-cookie" then return name end
  end
end

local function pack(...) return select("#", ...), { ... } end

local function route_cache(opts, handler, pattern)
  if type(opts) ~= "table" then opts = {} end
  local prefix = opts.prefix or "api"
  prefix = cache.prefix[prefix] or (prefix:sub(-1) == ":" and prefix or prefix .. ":")
  local ttl = ttl_seconds(opts.ttl)
  local keyfn = opts.key
  local json_encode, msgpack_encode = codec.json_encode, codec.msgpack_encode
  local wants_msgpack = cache_core.wants_msgpack
  local told = {} -- header names already logged as keeping this route's answers out

  return function(req)
    -- the representation is part of the key: JSON and MessagePack differ
    local mp = wants_msgpack(req.headers.accept)
    local k
    if keyfn then
      -- the app's key says everything the answer depends on, the caller
      -- included; nil or false: this request bypasses the cache
      k = keyfn(req)
      if k == nil or k == false then return handler(req) end
      k = tostring(k)
    else
      -- The default key keeps callers apart (issue 17): an answer made for
      -- one bearer token's user is served only to callers with the same user
      -- and permissions (auth.identity: what req.user shows a handler), and
      -- anonymous callers share theirs. This rather than refusing auth +
      -- cache at load: a route such as GET /me stays cacheable without a key
      -- function and cannot be written to leak, and a route without `auth`
      -- whose handler looks at api.auth.user(req) is covered too. A request
      -- with credentials this library does not know (another scheme, a
      -- token not in tokens.json, which the app may check itself) is not
      -- looked up or stored at all, as a shared cache must not reuse answers
      -- to requests with Authorization (RFC 9111 section 3.5). Cookies and
      -- other headers are not part of the key: a route whose answer depends
      -- on them needs a key function.
      local who = _M.auth.identity(req)
      if who == false then return handler(req) end
      k = who and ("@" .. who .. ":" .. req.target) or req.target
    end
    local key = prefix .. (mp and "msgpack:" or "json:") .. k

    local status, body, ctype, gz, hdrs = cache_core._http_get(key)
    if status then
      hdrs = hdrs or {}
      hdrs["Content-Type"] = ctype
      return status, body, hdrs, gz and GZIP_BODY or nil
    elseif body and ctype ~= "EUNAVAIL" then
      -- (an unavailable backend was logged once by its pool, not per request)
      core.log(2, "cache lookup failed; running the handler", { key = key, err = body })
    end

    local q = inflight[key]
    if q then
      local s, b, h, marker = core._wq_wait(q)
      if s then return s, b, h, marker end
      -- the leader's answer was not stored: answer on our own
      return handler(req)
    end
    q = core._wq_new()
    inflight[key] = q
    local n, r = pack(pcall(handler, req))
    inflight[key] = nil
    if not r[1] then
      core._wq_wake(q)
      error(r[2], 0)
    end
    local s, b, h = r[2], r[3], r[4]
    local numbered = type(s) == "number"
    local st = numbered and s or 200
    local value = numbered and b or s
    local headers = numbered and h or b
    -- a marker after the headers (a file to send, a gzipped body) is an
    -- answer the cache does not store
    local extra = false
    for i = numbered and 5 or 4, n do
      if r[i] ~= nil then extra = true end
    end
    local unkept = unkept_header(headers)
    local function pass_through()
      core._wq_wake(q)
      if unkept and not told[unkept] then
        told[unkept] = true
        core.log(1, "cached route: an answer with this header is not stored", {
          route = pattern, header = unkept })
      end
      return unpack(r, 2, n)
    end
    -- a bare `return false` is a handler mistake the runtime answers with a 500
    if st ~= 200 or value == nil or (value == false and not numbered) or extra or unkept then
      return pass_through()
    end
    local bytes, ct
    if type(value) == "string" then
      bytes = value
      ct = "text/plain; charset=utf-8"
      for name, v in pairs(headers or {}) do
        if name:lower() == "content-type" then ct = tostring(v) end
      end
    else
      local err
      if mp then
        bytes, err = msgpack_encode(value)
        ct = "application/msgpack"
      else
        bytes, err = json_encode(value)
        ct = "application/json"
      end
      if not bytes then error("cannot encode the response: " .. tostring(err), 0) end
    end
    local stored, zipped = cache_core._http_store(key, ttl, 200, bytes, ct, headers)
    if stored == nil then
      unkept = zipped -- why the entry cannot hold these headers
      return pass_through()
    end
    -- this answer goes out as the hits will: the handler's headers, one Content-Type
    local hdrs = {}
    for name, v in pairs(headers or {}) do
      if name:lower() ~= "content-type" then hdrs[name] = v end
    end
    hdrs["Content-Type"] = ct
    local marker = zipped and GZIP_BODY or nil
    core._wq_wake(q, 200, stored, hdrs, marker)
    return 200, stored, hdrs, marker
  end
end

---------------------------------------------------------------------------
-- Redis (api.redis): api.redis.get(k), api.redis:get(k), api.redis.call(...)
---------------------------------------------------------------------------
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

-- The keys each option table of a route takes (README: route options); any
-- other key, or a value of the wrong kind, fails the load at the app's line.
local ROUTE_KEYS = { "auth", "body_limit", "cache", "upload" }
local CACHE_KEYS = { "key", "prefix", "ttl" }
local UPLOAD_KEYS = { "max_bytes" }

local function positive(v) return type(v) == "number" and v > 0 and v < math.huge end
-- the largest body the runtime takes (DEVLOOP_MAX_BODY's maximum, 1 TiB)
local MAX_BYTES = 2 ^ 40
local function byte_count(v) return type(v) == "number" and v >= 1 and v <= MAX_BYTES and v % 1 == 0 end

local function check_route_options(opts)
  options.check(opts, ROUTE_KEYS, "route option")
  local auth = opts.auth
  if auth ~= nil and auth ~= true and auth ~= false and (type(auth) ~= "string" or auth == "") then
    options.fail("route option auth must be true or a permission name (a string), not "
                 .. options.show(auth))
  end
  local c = opts.cache
  if c ~= nil and type(c) ~= "boolean" then
    if type(c) ~= "table" then
      options.fail("route option cache must be true or a table { " .. table.concat(CACHE_KEYS, ", ")
                   .. " }, not " .. options.show(c))
    end
    options.check(c, CACHE_KEYS, "cache option")
    if c.prefix ~= nil and (type(c.prefix) ~= "string" or c.prefix == "") then
      options.fail("cache option prefix must be a non-empty string, not " .. options.show(c.prefix))
    end
    local ttl = c.ttl
    local secs = ttl
    if type(ttl) == "string" then secs = cache.ttl[ttl] end
    if ttl ~= nil and not positive(secs) then
      local presets = {}
      for name in pairs(cache.ttl) do presets[#presets + 1] = name end
      table.sort(presets)
      options.fail("cache option ttl must be a number of seconds above 0 or a preset ("
                   .. table.concat(presets, ", ") .. "), not " .. options.show(ttl))
    end
    -- the cache refuses a longer one on every request (a 500 each time)
    if secs ~= nil and secs > MAX_TTL then
      options.fail("cache option ttl must be at most " .. MAX_TTL .. " seconds (ten years), not "
                   .. options.show(ttl) .. (ttl ~= secs and " (" .. secs .. " s)" or ""))
    end
    if c.key ~= nil and type(c.key) ~= "function" then
      options.fail("cache option key must be a function(req), not " .. options.show(c.key))
    end
  end
  if opts.body_limit ~= nil and not byte_count(opts.body_limit) then
    options.fail("route option body_limit must be a whole number of bytes from 1 to "
                 .. string.format("%d", MAX_BYTES) .. ", not " .. options.show(opts.body_limit))
  end
  local u = opts.upload
  if u ~= nil and type(u) ~= "boolean" then
    if type(u) ~= "table" then
      options.fail("route option upload must be true or a table { max_bytes }, not "
                   .. options.show(u))
    end
    options.check(u, UPLOAD_KEYS, "upload option")
    if u.max_bytes ~= nil and not byte_count(u.max_bytes) then
      options.fail("upload option max_bytes must be a whole number of bytes from 1 to "
                   .. string.format("%d", MAX_BYTES) .. ", not " .. options.show(u.max_bytes))
    end
  end
end

local METHOD_ORDER = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }

-- Declares a route. Level 3 in error() points at the app's own line:
-- add <- api.get/post/... <- route module.
local function add(mask, path, opts, handler)
  if type(opts) == "function" and handler == nil then
    opts, handler = nil, opts
  end
  if type(path) ~= "string" then
    error("route path must be a string", 3)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("route options must be a table", 3)
  end
  if type(handler) ~= "function" then
    error("route " .. path .. " needs a handler function", 3)
  end
  if opts then check_route_options(opts) end
  if opts and opts.cache then
    -- the cache key is the target (and the caller), never the body: an
    -- answer to a POST served from it would skip the handler and its write
    for _, name in ipairs(METHOD_ORDER) do
      local bit = M[name]
      if name ~= "GET" and name ~= "HEAD" and mask % (bit * 2) >= bit then
        options.fail("route " .. name .. " " .. path .. ": cache only applies to GET and HEAD "
                     .. "routes (the cache key holds no request body)")
      end
    end
  end
  if opts and opts.cache then
    -- keyed by the caller's identity unless opts.cache.key says otherwise
    -- (route_cache); the auth check below runs first
    handler = route_cache(opts.cache, handler, path)
  end
  if opts and opts.auth then -- outermost: no cached answer without the token
    handler = _M.auth.protect(opts.auth, handler)
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy._precheck = _M.auth.precheck(opts.auth) -- Expect: 100-continue is refused early
    opts = copy
  end
  local ok, err = core._route(mask, path, opts, handler)
  if not ok then
    error(err, 3)
  end
end

function _M.get(path, opts, handler) add(M.GET, path, opts, handler) end
function _M.post(path, opts, handler) add(M.POST, path, opts, handler) end
function _M.put(path, opts, handler) add(M.PUT, path, opts, handler) end
function _M.patch(path, opts, handler) add(M.PATCH, path, opts, handler) end
function _M.delete(path, opts, handler) add(M.DELETE, path, opts, handler) end
function _M.options(path, opts, handler) add(M.OPTIONS, path, opts, handler) end

-- api.route("GET", ...), api.route({"GET", "POST"}, ...), api.route("*", ...)
function _M.route(methods, path, opts, handler)
  local mask = 0
  if methods == "*" then
    mask = M.ALL
  else
    if type(methods) == "string" then methods = { methods } end
    if type(methods) ~= "table" then
      error("route methods must be a string or a list", 2)
    end
    for _, m in ipairs(methods) do
      local bit = M[type(m) == "string" and m:upper() or ""]
      if not bit then error("unknown HTTP method " .. tostring(m), 2) end
      if mask % (bit * 2) < bit then mask = mask + bit end
    end
  end
  add(mask, path, opts, handler) -- not a tail call: error levels count this frame
end

-- Suspends the calling handler for ms milliseconds; the loop keeps serving.
local core_sleep = core.sleep
function _M.sleep(ms)
  if type(ms) ~= "number" or not (ms >= 0 and ms <= 86400000) then
    error("api.sleep: ms must be a number of milliseconds from 0 to 86400000, not "
          .. options.show(ms), 2)
  end
  return core_sleep(ms)
end

-- Runs each function in its own coroutine at the same time and returns their
-- first results in order (Promise.all); the first error is raised here.
function _M.parallel(...)
  local n = select("#", ...)
  if n == 0 then return end
  local ok, res = core._parallel(...)
  if not ok then error(res, 0) end
  return unpack(res, 1, n)
end

-- Runs fn with a deadline: returns true, fn's first result when it ends in
-- time, or false, "timeout" (fn runs on, detached; its end is ignored).
function _M.with_timeout(ms, fn)
  -- the bound of api.sleep: the C timer takes whole milliseconds, and a
  -- float past its range (1e30) would not convert
  if type(ms) ~= "number" or not (ms >= 0 and ms <= 86400000) then
    error("api.with_timeout: ms must be a number of milliseconds from 0 to 86400000, not "
          .. options.show(ms), 2)
  end
  if type(fn) ~= "function" then
    error("api.with_timeout: fn must be a function, not " .. options.show(fn), 2)
  end
  return core._race(ms, fn)
end

-- api.fail(status, message [, details]): ends the handler (route, batch
-- operation, job processor) from anywhere below it with that status and
-- message. It raises an error value, a table with a number status: a route
-- answers {"error": status text, "message", "details"?, "requestId"} with
-- the status (message shown for 5xx too: the app wrote it); a batch operation
-- gets it as its own error; a job attempt fails with the message (a 4xx is
-- not retried). error({ status = 404, message = "..." }) works the same way.
-- tostring() of the value reads "message (status 404)".
local Failure = {
  __tostring = function(e) return tostring(e.message) .. " (status " .. tostring(e.status) .. ")" end,
}
function _M.fail(status, message, details)
  if type(status) ~= "number" or status % 1 ~= 0 or status < 400 or status > 599 then
    error("api.fail: status must be a whole number from 400 to 599, got "
          .. (type(status) == "string" and string.format("%q", status) or tostring(status)), 2)
  end
  if type(message) ~= "string" then
    error("api.fail: message must be a string, got " .. type(message), 2)
  end
  error(setmetatable({ status = status, message = message, details = details }, Failure), 0)
end

_M.null = codec.null
_M.json = {
  encode = codec.json_encode,
  decode = codec.json_decode,
  null = codec.null,
  array = codec.array,
  object = codec.object,
}
_M.msgpack = {
  encode = codec.msgpack_encode,
  decode = codec.msgpack_decode,
}

local log = core.log
_M.log = {
  debug = function(msg, fields) return log(0, tostring(msg), fields) end,
  info = function(msg, fields) return log(1, tostring(msg), fields) end,
  warn = function(msg, fields) return log(2, tostring(msg), fields) end,
  error = function(msg, fields) return log(3, tostring(msg), fields) end,
}

_M.cache = cache
_M.redis = redis
_M.db = require "devloop.db"
_M.jobs = require "devloop.jobs"
_M.auth = require "devloop.auth"
_M.files = require "devloop.files"
_M.client = require "devloop.client"
_M.FILE_BODY = core.FILE_BODY -- return 200, path, headers, api.FILE_BODY, offset, length
local batch = require "devloop.batch"
-- api.batch(operations, opts): a handler for a batch endpoint (devloop.batch)
function _M.batch(ops, opts) return batch.new(_M, ops, opts) end

-- jobs/TYPE.lua processors of the generation being loaded; jobs already
-- running keep the function they started with
local loading_processors = {}
function _M._register_processor(type_, fn) loading_processors[type_] = fn end

local scheduler_started = false -- the job scheduler runs in this worker

---------------------------------------------------------------------------
-- Metrics (api.metrics): app-defined counters, gauges and histograms in the
-- runtime's Prometheus registry (GET /metrics).
--   local hits = api.metrics.counter("app_hits_total", "Hits", { "kind" })
--   hits:inc({ "a" })          hits:inc({ "a" }, 5)
--   local lat = api.metrics.histogram("app_seconds", "Latency", nil, { 0.1, 1 })
--   lat:observe(nil, 0.25)
---------------------------------------------------------------------------
local Metric = {}
Metric.__index = Metric
local update = metrics_core.update
function Metric:inc(labels, v) update(1, self.id, labels, v or 1) end
function Metric:add(labels, v) update(1, self.id, labels, v) end
function Metric:set(labels, v) update(2, self.id, labels, v) end
function Metric:observe(labels, v) update(3, self.id, labels, v) end

local function define(kind)
  return function(name, help, labels, buckets)
    local id, err = metrics_core.define(kind, name, help, labels, buckets)
    if not id then error(err, 2) end
    return setmetatable({ id = id, name = name }, Metric)
  end
end
_M.metrics = {
  counter = define(metrics_core.COUNTER),
  gauge = define(metrics_core.GAUGE),
  histogram = define(metrics_core.HISTOGRAM),
  render = metrics_core.render,
}

---------------------------------------------------------------------------
-- Health and stats (GET /health, GET /stats)
---------------------------------------------------------------------------
-- Pings every backend in use with a short deadline: UP, DEGRADED (some
-- down) or DOWN (all down), with the reload status.
function _M.health()
  local services, up, n = {}, 0, 0
  local function check(name, kind, fn)
    local t0 = core.now()
    local ok, res = _M.with_timeout(1000, fn)
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
  local dbt = _M.db.type()
  if dbt then
    local write
    check("db", dbt, function()
      local r, err = _M.db.ping()
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
  local dst = services.db and _M.db.state()
  if dst and dst.breaker ~= "closed" then
    services.db.breaker, services.db.last_error = dst.breaker, dst.last_error
  end
  local status = (up == n) and "UP" or (up == 0 and "DOWN" or "DEGRADED")
  return {
    status = status,
    timestamp = _M.db.now_iso(),
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

function _M.stats()
  local p = metrics_core.process()
  local cstats
  if cache.type() == "redis" then
    local ok, r = _M.with_timeout(1000, redis_info)
    cstats = ok and r or { type = "redis", error = tostring(r) }
  else
    cstats = metrics_core.memory_cache() or {}
    cstats.type = "memory"
  end
  local dbs = { type = _M.db.type() }
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
    jobs = scheduler_started and _M.jobs.counts() or nil,
  }
end

-- Start hooks run once per worker after the app first loads, each in its own
-- task (they may use db, cache, sleep): seeding, index creation, warm-up.
local start_hooks = {}
-- "app.lua:12": where fn is defined, relative to the app folder
local function defined_at(fn)
  local info = debug.getinfo(fn, "S")
  local src = info.source:gsub("^[=@]", "")
  local dir = core.app_dir()
  if dir ~= "" and src:sub(1, #dir + 1) == dir .. "/" then src = src:sub(#dir + 2) end
  return src .. ":" .. tostring(info.linedefined)
end
local function duration(ms)
  return ms % 1000 == 0 and string.format("%ds", ms / 1000) or string.format("%dms", ms)
end
function _M.on_start(fn)
  if type(fn) ~= "function" then error("on_start needs a function", 2) end
  start_hooks[#start_hooks + 1] = fn
end
-- Where the built-in routes live (false disables one; token protects all).
-- api.builtin_routes checks each assignment at the app's line: a misspelled
-- key (`metrix = false`) would otherwise leave /metrics public, and a bad
-- value would only fail inside routes/observability.lua.
local BUILTIN_KEYS = { "health", "metrics", "stats", "stats_full", "token" }
local function builtin_check(k, v, level)
  local err
  if k == "metrics" or k == "health" or k == "stats" then
    if v ~= false and (type(v) ~= "string" or v:sub(1, 1) ~= "/") then
      err = "api.builtin_routes." .. k .. " must be a path starting with / or false, not " .. options.show(v)
    end
  elseif k == "token" then
    if v ~= false and (type(v) ~= "string" or v == "") then
      err = "api.builtin_routes.token must be a non-empty string or false, not " .. options.show(v)
    elseif v and v:find("[%s%c]") then
      -- a bearer token is one word: this one could never be presented
      err = "api.builtin_routes.token must not hold spaces or control characters"
    end
  elseif k == "stats_full" then
    if type(v) ~= "boolean" then
      err = "api.builtin_routes.stats_full must be true or false, not " .. options.show(v)
    end
  else
    err = "unknown api.builtin_routes key '" .. tostring(k) .. "' (known: "
          .. table.concat(BUILTIN_KEYS, ", ") .. ")"
  end
  if err then error(err, level + 1) end
end
local function builtin_defaults()
  local values = { metrics = "/metrics", health = "/health", stats = "/stats", token = false }
  return setmetatable({}, {
    __index = values,
    __newindex = function(_, k, v)
      builtin_check(k, v, 2)
      values[k] = v
    end,
  })
end
local builtin_routes = builtin_defaults()
-- `api.builtin_routes = { ... }` as a whole is checked key by key too
setmetatable(_M, {
  __index = function(_, k) if k == "builtin_routes" then return builtin_routes end end,
  __newindex = function(t, k, v)
    if k ~= "builtin_routes" then return rawset(t, k, v) end
    if type(v) ~= "table" then
      error("api.builtin_routes must be a table, not " .. options.show(v), 2)
    end
    local fresh = builtin_defaults()
    for key, value in pairs(v) do
      builtin_check(key, value, 2)
      rawget(getmetatable(fresh), "__index")[key] = value
    end
    builtin_routes = fresh
  end,
})

local loading_tokens
function _M._begin_load()
  start_hooks = {}
  builtin_routes = builtin_defaults()
  loading_processors = {}
  _M.db._begin_load()
  -- last: a broken tokens file raises, and the resets above must have run
  loading_tokens = _M.auth._read()
end
-- called when a load succeeded (the C side only switches generations then)
function _M._end_load()
  _M.jobs._set_processors(loading_processors)
  _M.auth._use(loading_tokens)
  _M.db._end_load()
end
-- called when a load failed: the serving generation's declarations stay
function _M._abort_load() _M.db._abort_load() end

-- What a generation declares that lives outside the Lua state: its indexes
-- (one worker creates them for the whole process) and, once there are job
-- processors, the job scheduler. Runs after the first load and every reload.
local function apply_generation(when)
  if core.worker_id() == 0 then
    local ok, err = _M.db.ensure_indexes()
    if not ok and _M.db.type() then
      core.log(3, "cannot create indexes (" .. when .. "): " .. tostring(err))
    end
  end
  -- the job scheduler runs in apps that have job processors
  local has_jobs = false
  for _ in pairs(loading_processors) do has_jobs = true break end
  if has_jobs and not scheduler_started then
    scheduler_started = true
    local workers = metrics_core.process().workers
    local completed = _M.metrics.counter("jobs_completed_total", "Jobs completed", { "type" })
    local failed = _M.metrics.counter("jobs_failed_total", "Job attempts that failed", { "type" })
    local dur = _M.metrics.histogram("job_duration_seconds", "Job attempt run time", { "type" },
      { 0.01, 0.05, 0.1, 0.5, 1, 5, 30 })
    local waiting = _M.metrics.gauge("jobs_waiting", "Jobs waiting or delayed", { "priority" })
    local activeg = _M.metrics.gauge("jobs_active", "Jobs running", { "priority" })
    _M.jobs._set_hooks({
      done = function(t, ok2, secs)
        if ok2 then completed:inc({ t }) else failed:inc({ t }) end
        dur:observe({ t }, secs)
      end,
      gauges = function()
        local c = _M.jobs.counts()
        for name, v in pairs(c.by_priority) do
          waiting:set({ name }, v.waiting)
          activeg:set({ name }, v.active)
        end
      end,
    })
    core._spawn(_M.jobs._run_scheduler, workers)
  end
end
function _M._run_reload() apply_generation("reload") end
function _M._run_start()
  apply_generation("start")
  -- each hook in a task of its own under DEVLOOP_START_TIMEOUT_MS (core._guard),
  -- with every task it starts (api.parallel, api.with_timeout):
  -- under `devloop test` its whole run counts (the tests wait for it), under
  -- serve only a stretch without yielding (that holds the worker)
  local test_file = os.getenv("DEVLOOP_TEST_FILE")
  local limit = core._guard()
  local failures = {}
  for _, fn in ipairs(start_hooks) do
    local label = defined_at(fn)
    local function run()
      if limit > 0 then core._guard(label, test_file ~= nil) end
      fn()
    end
    local ok2, e
    if test_file and limit > 0 then
      -- a hook that yields forever: the timer ends the wait (it runs on, detached)
      ok2, e = core._race(limit, run)
      if not ok2 and e == "timeout" then
        e = label .. ": on_start hook did not finish within " .. duration(limit)
      end
    else
      ok2, e = core._parallel(run)
    end
    if not ok2 then
      e = core._error_text(e)
      core.log(3, "start hook failed: " .. e)
      failures[#failures + 1] = e:match("^[^\n]*")
    end
  end
  -- `devloop test`: this process runs one test file once the app started
  if test_file and core.worker_id() == 0 then
    require("devloop.test")._run_file(test_file, os.getenv("DEVLOOP_TEST_TAP") == "1", failures)
  end
end

_M.now = core.now
_M.worker_id = core.worker_id

return _M
