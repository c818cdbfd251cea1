-- devloop.routing: route declaration (api.get, api.post, ..., api.route) and
-- the check of route options; the route table itself is the runtime's
-- (core._route, with a mask of core.methods bits).
local core = require "devloop.core"
local cache = require "devloop.cache"
local cached_route = require "devloop.cached_route"
local auth = require "devloop.auth"
local options = require "devloop.options"
local hooks = require "devloop.hooks"
local cors = require "devloop.cors"
local ratelimit = require "devloop.ratelimit"

local type, error = type, error
local BIT = core.methods -- a method name -> its bit in a route mask

local M = {}

-- the longest cache TTL (cache_core.MAX_TTL: ten years)
local MAX_TTL = require("devloop.cache_core").MAX_TTL

-- The keys each option table of a route takes (README: route options); any
-- other key, or a value of the wrong kind, fails the load at the app's line.
local ROUTE_KEYS = { "after", "auth", "before", "body_limit", "cache", "cors", "rate_limit",
                     "upload" }
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
      local bit = BIT[name]
      if name ~= "GET" and name ~= "HEAD" and mask % (bit * 2) >= bit then
        options.fail("route " .. name .. " " .. path .. ": cache only applies to GET and HEAD "
                     .. "routes (the cache key holds no request body)")
      end
    end
  end
  if opts and opts.cache then
    -- keyed by the caller's identity unless opts.cache.key says otherwise
    -- (devloop.cached_route); the auth check below runs first
    handler = cached_route.wrap(opts.cache, handler, path)
  end
  local before = opts and opts.before ~= nil and hooks.list(opts.before, "before", 3)
  local after = opts and opts.after ~= nil and hooks.list(opts.after, "after", 3)
  local rl_name
  if opts and opts.rate_limit ~= nil then -- "GET /items": a limit of its own per route
    local names = {}
    for _, m in ipairs(METHOD_ORDER) do
      if mask % (BIT[m] * 2) >= BIT[m] then names[#names + 1] = m end
    end
    rl_name = ratelimit.route_name((mask == BIT.ALL and "*" or table.concat(names, ","))
                                   .. " " .. path)
  end
  local rl_cfg = opts and opts.rate_limit ~= nil and ratelimit.compile(opts.rate_limit, rl_name)
  if rl_cfg then -- first of the route's before hooks (its headers: the runtime's)
    before = before or {}
    table.insert(before, 1, ratelimit.before(rl_cfg))
  end
  local cors_cfg = opts and opts.cors ~= nil and cors.compile(opts.cors)
  local cors_policy
  if cors_cfg then
    -- the runtime puts its fields on every answer of the route; its
    -- preflight is an OPTIONS route on the same path, unless the app has
    -- one there (then that answers); a function of origins is asked by
    -- an after hook (and on the OPTIONS route, before its answer)
    cors_policy = cors.declare(cors_cfg, false)
    local fn_after = cors_cfg.by_fn and cors.after(cors_cfg, cors_policy)
    if fn_after then
      after = after or {}
      after[#after + 1] = fn_after
    end
    if mask % (BIT.OPTIONS * 2) < BIT.OPTIONS then
      local pre = cors_cfg.by_fn and cors.before(cors_cfg, cors_policy)
      local o = { _cors = cors_policy }
      if fn_after then
        o._after = { fn_after, run_after = hooks.run_after, pipeline = hooks.pipeline }
      end
      core._route(BIT.OPTIONS, path, o, function(req)
        if pre then
          local s, b, h = pre(req)
          if s then return s, b, h end
        end
        return 204
      end)
    end
  end
  if before then -- inside the auth check, outside the cache: a hit is still checked
    handler = hooks.wrap_before(before, handler)
  end
  if opts and (opts.auth or after or cors_policy) then
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    opts = copy
  end
  if after then
    after.run_after, after.pipeline = hooks.run_after, hooks.pipeline
    opts._after = after
  end
  if cors_policy then opts._cors = cors_policy end
  if opts and opts.auth then -- outermost: no cached answer without the token
    handler = auth.protect(opts.auth, handler)
    opts._precheck = auth.precheck(opts.auth) -- Expect: 100-continue is refused early
  end
  local ok, err = core._route(mask, path, opts, handler)
  if not ok then
    error(err, 3)
  end
end

function M.get(path, opts, handler) add(BIT.GET, path, opts, handler) end
function M.post(path, opts, handler) add(BIT.POST, path, opts, handler) end
function M.put(path, opts, handler) add(BIT.PUT, path, opts, handler) end
function M.patch(path, opts, handler) add(BIT.PATCH, path, opts, handler) end
function M.delete(path, opts, handler) add(BIT.DELETE, path, opts, handler) end
function M.options(path, opts, handler) add(BIT.OPTIONS, path, opts, handler) end

-- api.route("GET", ...), api.route({"GET", "POST"}, ...), api.route("*", ...)
function M.route(methods, path, opts, handler)
  local mask = 0
  if methods == "*" then
    mask = BIT.ALL
  else
    if type(methods) == "string" then methods = { methods } end
    if type(methods) ~= "table" then
      error("route methods must be a string or a list", 2)
    end
    for _, m in ipairs(methods) do
      local bit = BIT[type(m) == "string" and m:upper() or ""]
      if not bit then error("unknown HTTP method " .. tostring(m), 2) end
      if mask % (bit * 2) < bit then mask = mask + bit end
    end
  end
  add(mask, path, opts, handler) -- not a tail call: error levels count this frame
end

return M
