-- devloop.batch: api.batch(operations, opts) returns a handler for a batch
-- endpoint. The request body is {operations: [{id, type, params}, ...]}; the
-- answer is {results: [{id, result} | {id, error}, ...]} in request order.
-- Operations run at the same time on the request's worker, at most
-- opts.concurrency (10) at once, each in its own coroutine with the request's
-- context; one operation's failure (unknown type, bad params, a refused
-- permission, an error it raises) is its own error and never the batch's.
-- An error raised on purpose shows its message (and status and details,
-- from api.fail or an error table); an internal one (a bug) shows "internal
-- error (request ID)" and is logged with its traceback (classify below).
--
--   api.post("/api/batch", api.batch({
--     getFeature = function(params, ctx) ... end,
--     updateFeatureStatus = { permission = "UPDATE_FEATURE", handler = function(params, ctx) ... end },
--   }, { max_operations = 100, concurrency = 10 }))
local codec = require "devloop.codec"
local core = require "devloop.core"
local cache_core = require "devloop.cache_core"
local auth = require "devloop.auth"
local options = require "devloop.options"

local type, tostring, pcall, next, unpack = type, tostring, pcall, next, unpack

local _M = { _VERSION = "0.1" }

local function is_object(v)
  return type(v) == "table" and (next(v) == nil or #v == 0) and v ~= codec.null
end

local function bad_request(req, msg)
  return 400, { error = "Bad Request", message = msg, requestId = req.id }
end

-- A raised message without the "file:line: " that error() puts first
-- (chunk names are paths: "/srv/app/lib/ops.lua:12: not found")
local function strip_position(s)
  return s:match("^[^\n]-%.lua:%d+: (.*)$") or s:match('^%[string ".-"%]:%d+: (.*)$') or s
end

local GENERIC = "internal error"

-- xpcall handler: what an operation's failure shows its caller. An error an
-- operation raises on purpose, error("not found") or assert(x, "msg") with a
-- string, api.fail(404, "...") or error({ status = 404, message = "..." }), is its answer and
-- shown (the position stripped). Anything else, an error the Lua VM raised
-- (a nil index: a bug) or a C function's (a bad argument, require's list of
-- the paths it tried), says nothing the client can use and may carry file
-- paths and code: it shows as "internal error" with the request id, and goes
-- to the log with its traceback. Which it is comes from the function that
-- raised it, still on the stack here: error and assert, or something else.
local function classify(e)
  local raiser = debug.getinfo(2, "f")
  raiser = raiser and raiser.func
  -- (a library function re-raising a child task's failure, as api.parallel
  -- does, raises with error() too: a traceback in the text gives it away)
  local traced = type(e) == "string" and e:find("\nstack traceback:", 1, true)
  if (raiser == error or raiser == assert) and not traced then
    if type(e) == "string" then
      -- a caught error raised again (pcall, then error(e)) still names its
      -- file: a position or require's search list left after the first
      -- position is stripped means it was not written for the client
      -- (api.fail's own refusal of a bad status is a bug too, not an answer)
      local msg = strip_position(e)
      if not (msg:find("%.lua:%d+:") or msg:find('%[string ".-"%]:%d+:')
              or msg:find("no file '", 1, true) or msg:find("no field package.preload", 1, true)
              or msg:sub(1, 10) == "api.fail: ") then
        return { message = msg }
      end
      return { internal = true, log = debug.traceback(e, 2) }
    end
    if type(e) == "number" then return { message = tostring(e) } end
    if type(e) == "table" then
      local msg = e.message or e.error
      local status = tonumber(e.status)
      if type(msg) == "string" then
        return { message = msg, status = status and status >= 400 and status <= 599
                                          and math.floor(status) or nil, details = e.details }
      end
    end
  end
  local text = type(e) == "string" and e or ("(a " .. type(e) .. " raised)")
  return { internal = true, log = debug.traceback(text, 2) }
end

-- nil, or why the answer's encoder cannot hold entry r (a cycle, a
-- function, NaN in JSON); r is checked at its depth in the answer
local function unencodable(r, encode)
  local v = r.result
  if r.details == nil and type(v) ~= "table" and type(v) ~= "number" then return nil end
  local ok, bytes, err = pcall(encode, { results = { r } })
  if ok and bytes then return nil end
  return tostring(ok and err or bytes)
end

local OPTION_KEYS = { "concurrency", "max_operations" }
local OP_KEYS = { "handler", "permission" }

function _M.new(api, ops, opts)
  if type(ops) ~= "table" then error("api.batch needs a table of operations", 3) end
  for name, op in pairs(ops) do
    if type(op) == "table" then
      options.check(op, OP_KEYS, "key", "api.batch operation " .. tostring(name))
      if op.permission ~= nil and (type(op.permission) ~= "string" or op.permission == "") then
        options.fail("api.batch: operation " .. tostring(name) .. ": permission must be a name (a string)")
      end
    end
    local fn = type(op) == "table" and op.handler or op
    if type(name) ~= "string" or type(fn) ~= "function" then
      error("api.batch: operation " .. tostring(name) .. " needs a handler function", 3)
    end
  end
  if opts ~= nil and type(opts) ~= "table" then
    options.fail("api.batch: options must be a table { " .. table.concat(OPTION_KEYS, ", ") .. " }")
  end
  options.check(opts, OPTION_KEYS, "api.batch option")
  opts = opts or {}
  local max_ops = opts.max_operations or 100
  local concurrency = opts.concurrency or 10
  -- checked as the route is declared, not as every request fails on them
  for name, v in pairs({ max_operations = max_ops, concurrency = concurrency }) do
    if type(v) ~= "number" or v < 1 or v ~= math.floor(v) or v > 1e6 then
      error("api.batch: " .. name .. " must be a whole number from 1 to 1000000", 3)
    end
  end

  local function run_one(op, ctx)
    if type(op) ~= "table" then return { id = codec.null, error = "an operation must be an object" } end
    local id = op.id
    if type(id) ~= "string" and type(id) ~= "number" then
      return { id = codec.null, error = "an operation needs an id (a string or a number)" }
    end
    local params = op.params
    if params == nil then params = {} end
    if not is_object(params) then return { id = id, error = "params must be an object" } end
    if type(op.type) ~= "string" then
      return { id = id, error = "an operation needs a type (a string)" }
    end
    local entry = ops[op.type]
    if not entry then
      return { id = id, error = "unknown operation type: " .. op.type }
    end
    local fn = entry
    if type(entry) == "table" then
      fn = entry.handler
      local need = entry.permission
      if need then
        if not ctx.user then
          return { id = id, error = "unauthorized: a valid bearer token is required" }
        end
        if not ctx.user:has_permission(need) then
          return { id = id, error = "forbidden: permission " .. need .. " is required" }
        end
      end
    end
    local ok, res, err = xpcall(fn, classify, params, ctx)
    if not ok then
      if res.internal then
        core.log(core.LOG_ERROR, "batch operation failed", { id = id, type = op.type, error = res.log })
        return { id = id, error = GENERIC .. " (request " .. tostring(ctx.request_id) .. ")" }
      end
      -- an answer, not a fault: the log gets it only at debug level
      core.log(core.LOG_DEBUG, "batch operation refused", { id = id, type = op.type, error = res.message })
      return { id = id, error = res.message, status = res.status, details = res.details }
    end
    if res == nil and err ~= nil then
      -- nil, "message" or nil, { status = 404, message = "..." }
      if type(err) == "table" and type(err.message) == "string" then
        local status = tonumber(err.status)
        return { id = id, error = err.message,
                 status = status and status >= 400 and status <= 599 and math.floor(status) or nil }
      end
      return { id = id, error = tostring(err) }
    end
    return { id = id, result = res == nil and codec.null or res }
  end

  return function(req)
    local body = req.body
    local list = type(body) == "table" and body.operations
    if type(list) ~= "table" or list == codec.null or (#list == 0 and next(list) ~= nil) then
      return bad_request(req, "operations must be an array")
    end
    local n = #list
    if n == 0 then return bad_request(req, "operations must not be empty") end
    if n > max_ops then
      return bad_request(req, "at most " .. max_ops .. " operations in one batch (got " .. n .. ")")
    end
    local ctx = { user = auth.user(req), request_id = req.id, req = req, log = api.log }
    -- the encoder the answer goes out with (the runtime picks it by Accept)
    local encode = cache_core.wants_msgpack(req.headers.accept) and codec.msgpack_encode
      or codec.json_encode
    local results, next_i = {}, 0
    local function lane()
      while next_i < n do
        next_i = next_i + 1
        local i = next_i
        local r = run_one(list[i], ctx)
        -- one operation's answer that cannot be encoded is its own internal
        -- error, not the batch's: the others' effects have happened
        local why = unencodable(r, encode)
        if why then
          core.log(core.LOG_ERROR, "batch operation failed", { id = r.id, type = list[i].type,
                                                   error = "cannot encode the result: " .. why })
          r = { id = r.id, error = GENERIC .. " (request " .. tostring(ctx.request_id) .. ")" }
        end
        results[i] = r
      end
    end
    local k = math.min(concurrency, n)
    if k <= 1 then
      lane()
    else
      local lanes = {}
      for j = 1, k do lanes[j] = lane end
      api.parallel(unpack(lanes, 1, k))
    end
    return { results = codec.array(results) }
  end
end

return _M
