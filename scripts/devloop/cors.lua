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
-- an allowed origin is answered 204 here, before any route; one from another
-- origin goes on without CORS headers (the browser then refuses). Every
-- other answer to an allowed origin, errors and 404s included, carries
-- Access-Control-Allow-Origin; Vary: Origin unless the answer is the same
-- for every origin.
local options = require "devloop.options"
local header = require("devloop.core")._header -- one field, not all of req.headers
local rawget, rawset = rawget, rawset

local type, ipairs, concat, lower, upper, find, gsub = type, ipairs, table.concat,
  string.lower, string.upper, string.find, string.gsub

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
  local cfg = { any = false, list = nil, fn = nil }
  local o = c.origins
  if o == nil or o == "*" then
    cfg.any = true
  elseif type(o) == "function" then
    cfg.fn = o
  elseif type(o) == "table" and #o > 0 then
    cfg.list = {}
    for i, x in ipairs(o) do
      if type(x) ~= "string" or not origin_ok(x) then
        fail("origins[" .. i .. "] must be an origin like \"https://app.example\", not "
             .. options.show(x))
      end
      cfg.list[lower(x)] = true
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
  cfg.max_age = tostring(age)
  return cfg
end

-- The Access-Control-Allow-Origin value for origin, or nil when refused.
local function allow(cfg, origin, req)
  if origin == nil then return nil end
  if cfg.any then return "*" end
  if cfg.list then
    if cfg.last == origin then return origin end -- most requests: the one front end
    if cfg.list[lower(origin)] then
      cfg.last = origin
      return origin
    end
    return nil
  end
  local ok, yes = pcall(cfg.fn, origin, req)
  if not ok then error(yes, 0) end
  return yes == true and origin or nil
end

local function add_vary(h, v)
  local cur = h["vary"]
  if cur == nil or cur == "" then
    h["vary"] = v
  elseif type(cur) == "string" and not find(lower(cur), lower(v), 1, true) then
    h["vary"] = cur .. ", " .. v
  end
end

-- The before hook: a preflight from an allowed origin answered now.
function M.before(cfg)
  return function(req)
    if req.method ~= "OPTIONS" then return end
    local origin, want = header(req, "origin"), header(req, "access-control-request-method")
    if origin == nil or want == nil or not find(want, TOKEN) then return end
    local ao = allow(cfg, origin, req)
    if ao == nil then return end
    local out = {
      ["Access-Control-Allow-Origin"] = ao,
      ["Access-Control-Allow-Methods"] = cfg.methods,
      ["Access-Control-Max-Age"] = cfg.max_age,
    }
    local asked = header(req, "access-control-request-headers")
    if cfg.headers then
      out["Access-Control-Allow-Headers"] = cfg.headers
    elseif asked and asked ~= "" then
      -- any header asked for is allowed: the answer names back those that
      -- are header names (a token each), nothing else
      local names = {}
      for name in string.gmatch(asked, "[^,]+") do
        name = name:match("^%s*(.-)%s*$")
        if find(name, TOKEN) and #names < 64 then names[#names + 1] = name end
      end
      if #names > 0 then out["Access-Control-Allow-Headers"] = concat(names, ", ") end
    end
    if cfg.credentials then out["Access-Control-Allow-Credentials"] = "true" end
    local vary = {}
    if not cfg.any then vary[#vary + 1] = "Origin" end
    if not cfg.headers then vary[#vary + 1] = "Access-Control-Request-Headers" end
    if #vary > 0 then out["Vary"] = concat(vary, ", ") end
    rawset(req, "_cors_preflight", true)
    return 204, nil, out
  end
end

-- The after hook: the CORS headers on every other answer to an allowed origin.
function M.after(cfg)
  return function(req, res)
    -- rawget: a field the request table does not have would go to its
    -- __index (the lazy fields) on every request
    if rawget(req, "_cors_preflight") then return end
    local rh = res.headers
    if not cfg.any then add_vary(rh, "Origin") end
    local ao = allow(cfg, header(req, "origin"), req)
    if ao == nil then return end
    rh["access-control-allow-origin"] = ao
    if cfg.credentials then rh["access-control-allow-credentials"] = "true" end
    if cfg.expose then rh["access-control-expose-headers"] = cfg.expose end
  end
end

return M
