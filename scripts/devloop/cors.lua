-- devloop.cors: api.cors{...}, the Fetch standard's CORS protocol as a pair
-- of hooks (devloop.hooks). App-wide when called; the same table as the
-- route option cors = {...} applies to one route.
--   origins     "*", a list of origins ("https://app.example"), or
--               function(origin, req) -> true to allow; default "*"
--   methods     the methods a preflight allows (default GET, HEAD, POST,
--               PUT, PATCH, DELETE)
--   headers     the request headers a preflight allows; default: the ones
--               the preflight asks for (Access-Control-Request-Headers)
--   expose      response headers the page may read (Access-Control-Expose-Headers)
--   credentials true: cookies and Authorization may be sent; only with a
--               list or a function of origins, never "*" (the Fetch standard
--               forbids Access-Control-Allow-Origin: * with credentials)
--   max_age     seconds a browser may keep a preflight's answer (default 600)
-- A preflight (OPTIONS with Origin and Access-Control-Request-Method) from
-- an allowed origin is answered 204 before any route; one from another
-- origin goes on without CORS headers (the browser then refuses). Every
-- other answer to an allowed origin, errors and 404s included, carries
-- Access-Control-Allow-Origin; Vary: Origin unless the answer is the same
-- for every origin. The runtime applies the policy in C
-- (runtime/core/cors.c, after the after hooks: an after hook that sets
-- Access-Control-Allow-Origin itself keeps its own); Lua asks a function
-- of origins for its verdict, in the hooks below.
local options = require "devloop.options"
local core = require "devloop.core"
local pending, verdict, preflight = core._cors_pending, core._cors_verdict, core._cors_preflight

local type, ipairs, concat, lower, upper, find = type, ipairs, table.concat,
  string.lower, string.upper, string.find

local M = {}

local KEYS = { "credentials", "expose", "headers", "max_age", "methods", "origins" }
local DEFAULT_METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE" }
local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

local function fail(msg) options.fail("cors option " .. msg) end

local function token_list(v, what, upper_case)
  if type(v) ~= "table" or #v == 0 then fail(what .. " must be a list of names") end
  local out = {}
  for i, x in ipairs(v) do
    if type(x) ~= "string" or not find(x, TOKEN) then
      fail(what .. "[" .. i .. "] must be a header or method name, not " .. options.show(x))
    end
    out[i] = upper_case and upper(x) or x
  end
  return concat(out, ", ")
end

-- An origin as browsers send it: scheme://host[:port], or "null".
local function origin_ok(o)
  return o == "null" or (find(o, "^https?://[%w%.%-%[%]:]+$") ~= nil)
end

-- The checked settings of a cors table.
function M.compile(c)
  if type(c) ~= "table" then fail("must be a table { " .. concat(KEYS, ", ") .. " }") end
  options.check(c, KEYS, "cors option")
  local cfg = { any = false, by_fn = false, origins = nil, fn = nil }
  local o = c.origins
  if o == nil or o == "*" then
    cfg.any = true
  elseif type(o) == "function" then
    cfg.fn, cfg.by_fn = o, true
  elseif type(o) == "table" and #o > 0 then
    cfg.origins = {}
    for i, x in ipairs(o) do
      if type(x) ~= "string" or not origin_ok(x) then
        fail("origins[" .. i .. "] must be an origin like \"https://app.example\", not "
             .. options.show(x))
      end
      cfg.origins[i] = lower(x)
    end
  else
    fail("origins must be \"*\", a list of origins or a function(origin, req), not "
         .. options.show(o))
  end
  if c.credentials ~= nil and type(c.credentials) ~= "boolean" then
    fail("credentials must be true or false, not " .. options.show(c.credentials))
  end
  cfg.credentials = c.credentials == true
  if cfg.credentials and cfg.any then
    fail("credentials needs a list or a function of origins: the Fetch standard refuses "
         .. "Access-Control-Allow-Origin: * with credentials")
  end
  cfg.methods = token_list(c.methods or DEFAULT_METHODS, "methods", true)
  cfg.headers = c.headers ~= nil and token_list(c.headers, "headers") or nil
  cfg.expose = c.expose ~= nil and token_list(c.expose, "expose") or nil
  local age = c.max_age == nil and 600 or c.max_age
  if type(age) ~= "number" or age < 0 or age % 1 ~= 0 or age > 86400 * 365 then
    fail("max_age must be a whole number of seconds from 0, not " .. options.show(c.max_age))
  end
  cfg.max_age = age
  return cfg
end

-- The policy of cfg for the generation loading: the app's (app true) or a
-- route's; nil, err when the app has one already.
function M.declare(cfg, app)
  local policy, err = core._cors(cfg, app)
  if policy == nil then options.fail(err) end
  return policy
end

-- With a function of origins, the runtime asks Lua: judge(req) gives the
-- function's verdict on req's origin to the runtime, once per request.
local function judge(cfg, policy, req)
  local origin = pending(req, policy)
  if origin ~= nil then
    -- refused until it says yes: a function that raises is asked once,
    -- not again by the after hook of the error answer
    verdict(req, false)
    if cfg.fn(origin, req) == true then verdict(req, true) end
  end
end

-- The before hook of a function's policy: the verdict, then a preflight
-- from an allowed origin answered (its fields are the runtime's).
function M.before(cfg, policy)
  return function(req)
    judge(cfg, policy, req)
    local h = preflight(req, policy)
    if h ~= nil then return 204, nil, h end
  end
end

-- Its after hook: the verdict for answers made before any before hook ran
-- (an auth refusal, a 404 without before hooks...), so that they carry the
-- fields too.
function M.after(cfg, policy)
  return function(req) judge(cfg, policy, req) end
end

return M
