-- devloop.batch: api.batch(operations, opts) returns a handler for a batch
-- endpoint. The request body is {operations: [{id, type, params}, ...]}; the
-- answer is {results: [{id, result} | {id, error}, ...]} in request order.
-- Operations run at the same time on the request's worker, at most
-- opts.concurrency (10) at once, each in its own coroutine with the request's
-- context; one operation's failure (unknown type, bad params, a refused
-- permission, an error it raises) is its own error and never the batch's.
--
--   api.post("/api/batch", api.batch({
--     getFeature = function(params, ctx) ... end,
--     updateFeatureStatus = { permission = "UPDATE_FEATURE", handler = function(params, ctx) ... end },
--   }, { max_operations = 100, concurrency = 10 }))
local codec = require "devloop.codec"
local core = require "devloop.core"
local auth = require "devloop.auth"

local type, tostring, pcall, next, unpack = type, tostring, pcall, next, unpack

local _M = { _VERSION = "0.1" }

local function is_object(v)
  return type(v) == "table" and (next(v) == nil or #v == 0) and v ~= codec.null
end

local function bad_request(req, msg)
  return 400, { error = "Bad Request", message = msg, requestId = req.id }
end

-- the message of a raised error, without the "file:line: " Lua puts first
local function message_of(e)
  local s = tostring(e)
  return s:match("^[^:\n]+:%d+: (.*)$") or s
end

function _M.new(api, ops, opts)
  if type(ops) ~= "table" then error("api.batch needs a table of operations", 3) end
  for name, op in pairs(ops) do
    local fn = type(op) == "table" and op.handler or op
    if type(name) ~= "string" or type(fn) ~= "function" then
      error("api.batch: operation " .. tostring(name) .. " needs a handler function", 3)
    end
  end
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
    local entry = type(op.type) == "string" and ops[op.type]
    if not entry then
      return { id = id, error = "unknown operation type: " .. tostring(op.type) }
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
    local ok, res, err = pcall(fn, params, ctx)
    if not ok then
      core.log(3, "batch operation failed", { id = id, type = op.type, error = tostring(res) })
      return { id = id, error = message_of(res) }
    end
    if res == nil and err ~= nil then return { id = id, error = tostring(err) } end
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
    local results, next_i = {}, 0
    local function lane()
      while next_i < n do
        next_i = next_i + 1
        local i = next_i
        results[i] = run_one(list[i], ctx)
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
