-- devloop: the public Lua API (`local api = require "devloop"`).
-- Route declaration, the handler helpers (sleep, parallel), codecs and the
-- logger, over the C primitives of devloop.core and devloop.codec.
local core = require "devloop.core"
local codec = require "devloop.codec"

local type, error, select, unpack = type, error, select, unpack
local M = core.methods

local _M = { _VERSION = "0.1" }

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
_M.sleep = core.sleep

-- Runs each function in its own coroutine at the same time and returns their
-- first results in order (Promise.all); the first error is raised here.
function _M.parallel(...)
  local n = select("#", ...)
  if n == 0 then return end
  local ok, res = core._parallel(...)
  core._parallel_done()
  if not ok then error(res, 0) end
  return unpack(res, 1, n)
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

_M.now = core.now
_M.worker_id = core.worker_id

return _M
