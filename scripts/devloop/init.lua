-- devloop: the public Lua API (`local api = require "devloop"`). The entry
-- point apps require: it gathers the library's modules into one table.
--   devloop.routing       api.get/post/put/patch/delete/options, api.route
--   devloop.cached_route  routes with `cache = {...}`
--   devloop.cache         api.cache          devloop.redis    api.redis
--   devloop.tasks         api.sleep, api.parallel, api.with_timeout
--   devloop.metrics       api.metrics        devloop.health   api.health, api.stats
--   devloop.lifecycle     api.on_start, api.builtin_routes, the load hooks
--   devloop.db, jobs, auth, files, client, batch: api.db, api.jobs, ...
--   devloop.http          api.http (outbound HTTP)
--   devloop.socket        api.socket (TCP cosockets)
-- Here: api.fail, the codecs and the logger, over devloop.core and
-- devloop.codec. Apps require "devloop" only; the modules are the library's.
local core = require "devloop.core"
local codec = require "devloop.codec"
local routing = require "devloop.routing"
local tasks = require "devloop.tasks"
local health = require "devloop.health"
local lifecycle = require "devloop.lifecycle"

local type, error, setmetatable = type, error, setmetatable

local _M = { _VERSION = "0.1" }

_M.get, _M.post, _M.put = routing.get, routing.post, routing.put
_M.patch, _M.delete, _M.options = routing.patch, routing.delete, routing.options
_M.route = routing.route
local hooks = require "devloop.hooks"
_M.before, _M.after = hooks.before, hooks.after
local cors = require "devloop.cors"
local timer = require "devloop.timer"
_M.timer = { every = timer.every, after = timer.after }
-- api.cors{...}: CORS for every route (devloop.cors)
-- (the runtime applies it; a function of origins is asked in hooks)
function _M.cors(c)
  local cfg = cors.compile(c)
  local policy = cors.declare(cfg, true)
  if cfg.by_fn then
    hooks.before_ranked(cors.before(cfg, policy), 1)
    hooks.after(cors.after(cfg, policy))
  end
end
local ratelimit = require "devloop.ratelimit"
-- api.rate_limit{...}: a limit on every request (devloop.ratelimit); by
-- req.ip in api.shared it is counted by the runtime before any hook
function _M.rate_limit(c)
  local cfg = ratelimit.compile(c, ratelimit.app_default_name(c))
  if cfg.store == "local" and cfg.key == nil and require("devloop.core")._rate_limit(cfg) then
    return
  end
  hooks.before_ranked(ratelimit.before(cfg), 2)
end

_M.sleep, _M.parallel, _M.with_timeout = tasks.sleep, tasks.parallel, tasks.with_timeout

-- return api.stream(function(write) ... end[, headers]): the head goes out
-- at once and fn(write) sends the body a piece at a time; write(chunk)
-- waits while the client is slow (the connection's high-water mark) and
-- returns false, "closed" once it is gone (runtime/lua/lua_stream.c)
local STREAM = require("devloop.core")._stream
function _M.stream(fn, headers)
  if type(fn) ~= "function" then
    error("api.stream needs a function(write), not " .. type(fn), 2)
  end
  if headers ~= nil and type(headers) ~= "table" then
    error("api.stream: headers must be a table, not " .. type(headers), 2)
  end
  return 200, fn, headers, STREAM
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
  debug = function(msg, fields) return log(core.LOG_DEBUG, tostring(msg), fields) end,
  info = function(msg, fields) return log(core.LOG_INFO, tostring(msg), fields) end,
  warn = function(msg, fields) return log(core.LOG_WARN, tostring(msg), fields) end,
  error = function(msg, fields) return log(core.LOG_ERROR, tostring(msg), fields) end,
}


_M.cache = require "devloop.cache"
_M.redis = require "devloop.redis"
_M.db = require "devloop.db"
_M.jobs = require "devloop.jobs"
_M.auth = require "devloop.auth"
_M.files = require "devloop.files"
_M.shared = require "devloop.shared"
local pubsub = require "devloop.pubsub"
_M.pubsub = { publish = pubsub.publish, subscribe = pubsub.subscribe }
_M.client = require "devloop.client"
_M.http = require "devloop.http"
_M.socket = require "devloop.socket"
_M.FILE_BODY = core.FILE_BODY -- return 200, path, headers, api.FILE_BODY, offset, length
local batch = require "devloop.batch"
-- api.batch(operations, opts): a handler for a batch endpoint (devloop.batch)
function _M.batch(ops, opts) return batch.new(_M, ops, opts) end

_M.metrics = require "devloop.metrics"
_M.health, _M.stats = health.health, health.stats

-- the app's declarations and the runtime's calls around a load (lua_load.c)
_M.on_start = lifecycle.on_start
_M._register_processor = lifecycle.register_processor
_M._begin_load, _M._end_load, _M._abort_load = lifecycle.begin_load, lifecycle.end_load, lifecycle.abort_load
_M._run_reload, _M._run_start = lifecycle.run_reload, lifecycle.run_start
lifecycle.attach(_M) -- api.builtin_routes

_M.now = core.now
_M.worker_id = core.worker_id

return _M
