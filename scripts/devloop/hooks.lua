-- devloop.hooks: api.before and api.after, the app's middleware, and the two
-- runners the runtime calls around a handler (runtime/lua/lua_dispatch.c).
--   api.before(fn)  fn(req): returning a status (or a body) answers at once
--                   and skips the rest; returning nothing goes on
--   api.after(fn)   fn(req, res): res.status, res.headers (names lower-case),
--                   res.body (as the handler gave it, before it is encoded)
--                   may be changed; what it returns is ignored
-- Order: the app's before hooks in declaration order, then the route's auth,
-- its own before hooks and its cache, then the handler; then the route's
-- after hooks and the app's, each in declaration order. App-wide hooks run
-- for every answer of the app: 404 and 405 (its before hooks too), errors,
-- cached answers and the built-in routes. Hooks belong to the generation
-- that declared them: a reload starts from none.
local core = require "devloop.core"

local type, next, rawequal, lower = type, next, rawequal, string.lower
-- LuaJIT's table.new: the answer's tables made at their size at once
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end
local setmetatable, rawget, rawset, tostring = setmetatable, rawget, rawset, tostring

-- res.headers: names are case-insensitive (kept lower-case), so a hook's
-- "X-Frame-Options" replaces the handler's "x-frame-options"
local HEADERS_MT = {
  __index = function(t, k) if type(k) == "string" then return rawget(t, lower(k)) end end,
  __newindex = function(t, k, v) rawset(t, type(k) == "string" and lower(k) or k, v) end,
}

local M = {}

-- returned by pipeline when no before hook answered a request no route took
local NOT_ROUTED = core._not_routed
-- put before an answer the after hooks have already seen
local AFTER_DONE = core._after_done
local run_after

-- Runs the hooks of list on req: the answer of the first that gives one
-- (up to seven values: what api.file returns), or nil. No table per call:
-- this runs on every request.
local function run_before(list, req)
  for i = 1, #list do
    local a, b, c, d, e, f, g = list[i](req)
    if a ~= nil then
      if a == false then
        -- as from a handler: not an answer, and never a silent pass
        error("a before hook returned false" .. (type(b) == "string" and (": " .. b) or ""), 0)
      end
      return true, a, b, c, d, e, f, g
    elseif b ~= nil then
      -- `return nil, err` or `return nil, { status = 401 }`: a failure, as
      -- from a handler (an auth hook written so must not let the request by)
      if type(b) == "table" and type(b.status) == "number" then error(b, 0) end
      error("a before hook returned nil, " .. tostring(b), 0)
    end
  end
  return false
end

-- An answer through the after hooks, here in the request's own run (no
-- second resume): the runtime is told by AFTER_DONE. The failure idioms
-- (`return nil, err`, `return false`) are left to the runtime, whose error
-- answer then passes the after hooks. Up to seven values pass (what
-- api.file returns), as named ones: a vararg function returning to the
-- runtime stops LuaJIT's compiler ("NYI: return to lower frame"), and this
-- path would then be interpreted on every request.
local function finish(hooks, route_after, req, a, b, c, d, e, f, g)
  if (hooks == nil or hooks.after[1] == nil) and route_after == nil then
    -- no marker (the third or fourth value): what follows is never read,
    -- and fewer values are fewer checks for the runtime
    if c == nil and d == nil then
      if b == nil then return a end
      return a, b
    end
    return a, b, c, d, e, f, g
  end
  if (a == nil and b ~= nil) or a == false then return a, b, c, d, e, f, g end
  return AFTER_DONE, run_after(hooks, route_after, req, a, b, c, d, e, f, g)
end

-- handler (nil when no route matched) between the app's before hooks and
-- the route's and the app's after hooks.
function M.pipeline(handler, hooks, route_after, req)
  if hooks and hooks.before[1] ~= nil then
    local hit, a, b, c, d, e, f, g = run_before(hooks.before, req)
    if hit then return finish(hooks, route_after, req, a, b, c, d, e, f, g) end
  end
  if handler == nil then return NOT_ROUTED end
  local a, b, c, d, e, f, g = handler(req)
  return finish(hooks, route_after, req, a, b, c, d, e, f, g)
end

-- The route's own before hooks around its handler (routing.lua: inside its
-- auth check, outside its cache).
function M.wrap_before(list, handler)
  return function(req)
    local hit, a, b, c, d, e, f, g = run_before(list, req)
    if hit then return a, b, c, d, e, f, g end
    return handler(req)
  end
end

-- The handler's headers into h, names lower-cased. A tail call, not a
-- loop: LuaJIT compiles no inner loop into the trace of the functions
-- around it ("inner loop in root trace": pipeline, finish and run_after
-- were then interpreted for every answer), and a tail call it unrolls.
local function copy_lower(h, headers, k)
  local v
  k, v = next(headers, k)
  if k == nil then return end
  if type(k) == "string" then h[lower(k)] = v end
  return copy_lower(h, headers, k)
end

-- An answer through the after hooks: the values a handler returns (status,
-- body, headers, and what a file or a cached body carries after them: up
-- to seven in all, as in finish).
function run_after(hooks, route_after, req, a, b, c, d, e, f, g)
  local status, body, headers = a, b, c
  if type(status) ~= "number" then
    -- the shorthand: `return body[, headers]` is a 200, nothing a 204
    status, body, headers = status == nil and 204 or 200, a, b
    d, e, f, g = c, d, e, f
  end
  local h = new_tab(0, 8)
  if type(headers) == "table" then copy_lower(h, headers) end
  setmetatable(h, HEADERS_MT)
  local res = { status = status, body = body, headers = h }
  if route_after then
    for i = 1, #route_after do route_after[i](req, res) end
  end
  if hooks then
    local list = hooks.after
    for i = 1, #list do list[i](req, res) end
  end
  local st, rb, rh = res.status, res.body, res.headers
  if type(st) ~= "number" then
    -- a string here would be taken for the body (and the body for headers)
    error("an after hook set res.status to " .. (type(st) == "string" and ("\"" .. st:sub(1, 40)
          .. "\"") or type(st)) .. ": it must be a number", 0)
  end
  if type(rh) ~= "table" then
    error("an after hook set res.headers to a " .. type(rh) .. ": it must be a table", 0)
  end
  if d ~= nil and rawequal(rb, body) then return st, rb, rh, d, e, f, g end
  return st, rb, rh
end
M.run_after = run_after

local function hooks_of_load()
  local h = core._hooks()
  if h == nil then
    h = { before = {}, after = {}, pipeline = M.pipeline, run_after = M.run_after }
    core._hooks(h)
  end
  return h
end

-- rank: where a before hook goes: the app's own (rank 3) in declaration
-- order, after the runtime's: CORS preflights (1), then rate limits (2)
local function add(kind, fn, level, rank)
  if type(fn) ~= "function" then
    error("api." .. kind .. " needs a function, not " .. type(fn), level + 1)
  end
  local h = hooks_of_load()
  local list = h[kind]
  if #list >= 64 then error("more than 64 api." .. kind .. " hooks", level + 1) end
  rank = rank or 3
  h.ranks = h.ranks or {}
  local ranks = h.ranks[kind] or {}
  h.ranks[kind] = ranks
  local at = #list + 1
  while at > 1 and (ranks[at - 1] or 3) > rank do at = at - 1 end
  table.insert(list, at, fn)
  table.insert(ranks, at, rank)
  core._hooks(h) -- the runtime notes which kinds there are
end

function M.before(fn) add("before", fn, 2) end
function M.after(fn) add("after", fn, 2) end
-- api.cors and api.rate_limit: first among the before hooks (a preflight
-- carries no credentials, a limit counts before any work), last among the
-- after hooks (their headers go on the final answer)
function M.before_ranked(fn, rank) add("before", fn, 2, rank) end

-- A route option before = fn | {fn...} (or after) as a list; errors name the
-- option at the app's line.
function M.list(v, what, level)
  if type(v) == "function" then return { v } end
  if type(v) ~= "table" or #v == 0 then
    error("route option " .. what .. " must be a function or a list of functions", level + 1)
  end
  local out = {}
  for i = 1, #v do
    if type(v[i]) ~= "function" then
      error("route option " .. what .. "[" .. i .. "] must be a function, not " .. type(v[i]),
        level + 1)
    end
    out[i] = v[i]
  end
  return out
end

return M
