-- devloop.db: the document store for Lua (api.db). One API on SQLite (the
-- embedded default) and MongoDB: collections, schema declarations
-- (required fields, enums, defaults, timestamps, indexes), and offset and
-- cursor pagination. Every call parks only the calling request.
local db_core = require "devloop.db_core"
local codec = require "devloop.codec"
local crypto = require "devloop.crypto"

local type, pairs, ipairs, tostring, tonumber, error, setmetatable, select =
  type, pairs, ipairs, tostring, tonumber, error, setmetatable, select
local call = db_core.call
local json_encode, json_decode = codec.json_encode, codec.json_decode
local null, array = codec.null, codec.array

local _M = { _VERSION = "0.1" }

local Collection = {}
Collection.__index = Collection

local collections = {}
local schemas = {}

local function now_iso()
  local t = require("devloop.core").now()
  local ms = math.floor((t % 1) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. string.format(".%03dZ", ms)
end
_M.now_iso = now_iso

-- fail(err, code): the `nil, err, code` triple of every failed call
local function bad(msg) return nil, msg, "EINVAL" end

---------------------------------------------------------------------------
-- schemas
---------------------------------------------------------------------------

-- Validates (and completes, on insert) a document against its schema.
local function check_doc(schema, doc, inserting)
  if type(doc) ~= "table" then return "document must be a table" end
  if not schema then return nil end
  if inserting then
    for field, v in pairs(schema.defaults or {}) do
      if doc[field] == nil then
        if v == "now" then doc[field] = now_iso()
        elseif type(v) == "function" then doc[field] = v(doc)
        else doc[field] = v end
      end
    end
    if schema.timestamps then
      local ts = now_iso()
      doc.created_at = doc.created_at or ts
      doc.updated_at = doc.updated_at or ts
    end
    for _, field in ipairs(schema.required or {}) do
      if doc[field] == nil or doc[field] == null then
        return "field '" .. field .. "' is required"
      end
    end
  end
  for field, allowed in pairs(schema.enums or {}) do
    local v = doc[field]
    if v ~= nil then
      local ok = false
      for _, a in ipairs(allowed) do if a == v then ok = true break end end
      if not ok then
        return "field '" .. field .. "' must be one of " .. table.concat(allowed, ", ")
      end
    end
  end
  for field, t in pairs(schema.types or {}) do
    local v = doc[field]
    if v ~= nil and v ~= null and type(v) ~= t then
      return "field '" .. field .. "' must be a " .. t
    end
  end
  return nil
end

local function check_update(schema, update)
  if type(update) ~= "table" then return "update must be a table of operators" end
  if not schema then return nil end
  local set = update["$set"]
  if set then
    local err = check_doc(schema, set, false)
    if err then return err end
    for _, field in ipairs(schema.required or {}) do
      if set[field] == null then return "field '" .. field .. "' is required" end
    end
  end
  local unset = update["$unset"]
  if unset then
    for _, field in ipairs(schema.required or {}) do
      if unset[field] ~= nil then return "field '" .. field .. "' is required" end
    end
  end
  if schema.timestamps then
    update["$set"] = update["$set"] or {}
    update["$set"].updated_at = now_iso()
  end
  return nil
end

-- Normalises index keys: {"a", "-b"}, {{"a", 1}, {"b", -1}} -> {{"a",1},{"b",-1}}
local function index_keys(fields)
  if type(fields) == "string" then fields = { fields } end
  local keys = array({})
  for _, f in ipairs(fields) do
    if type(f) == "string" then
      if f:sub(1, 1) == "-" then keys[#keys + 1] = array({ f:sub(2), -1 })
      else keys[#keys + 1] = array({ f, 1 }) end
    elseif type(f) == "table" then
      keys[#keys + 1] = array({ f[1], f[2] or 1 })
    end
  end
  return keys
end

---------------------------------------------------------------------------
-- collections
---------------------------------------------------------------------------

function _M.collection(name)
  local c = collections[name]
  if not c then
    c = setmetatable({ name = name }, Collection)
    collections[name] = c
  end
  return c
end

-- Declares a collection's schema:
--   api.db.define("features", { required = {...}, enums = { status = {...} },
--     defaults = { status = "not-started" }, timestamps = true,
--     indexes = { { "status", "-created_at" }, { "milestone_id" } } })
-- Indexes are created by api.db.ensure_indexes() (a start hook calls it).
function _M.define(name, schema)
  schemas[name] = schema
  return _M.collection(name)
end

function _M.ensure_indexes()
  for name, schema in pairs(schemas) do
    for _, ix in ipairs(schema.indexes or {}) do
      local fields, unique = ix, false
      if type(ix) == "table" and ix.fields then fields, unique = ix.fields, ix.unique end
      local ok, err = call("create_index", name, index_keys(fields), nil, nil, unique)
      if not ok then return nil, "index on " .. name .. ": " .. tostring(err) end
    end
  end
  return true
end

function _M.type() return db_core.type() end
-- Reads from the store, or nil, err, code. The answer is a table: { ok = 1 },
-- plus (SQLite) write = { ok = false, code = "ENOSPC", error = "database or
-- disk is full ...", since = "2024-...Z" } while the latest write (a probe
-- write included) failed for a reason of the database; reads still work then.
function _M.ping() return call("ping") end
-- the store's circuit breaker (MongoDB): {breaker = "closed"|"half_open"|"open", last_error}
function _M.state() return db_core.state() end

local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

function Collection:find(query, opts) return call("find", self.name, query or EMPTY, opts) end

function Collection:find_one(query, opts)
  local o = {}
  for k, v in pairs(opts or EMPTY) do o[k] = v end
  o.limit = 1
  local r, err, code = call("find", self.name, query or EMPTY, o)
  if not r then return nil, err, code end
  return r[1]
end

function Collection:count(query) return call("count", self.name, query or EMPTY) end

function Collection:insert_one(doc)
  local err = check_doc(schemas[self.name], doc, true)
  if err then return bad(err) end
  local ids, e, code = call("insert", self.name, array({ doc }))
  if not ids then return nil, e, code end
  doc._id = doc._id or ids[1]
  return doc
end

function Collection:insert_many(docs)
  local schema = schemas[self.name]
  for i, d in ipairs(docs) do
    local err = check_doc(schema, d, true)
    if err then return bad("document " .. i .. ": " .. err) end
  end
  return call("insert", self.name, array(docs))
end

function Collection:update_one(query, update)
  local err = check_update(schemas[self.name], update)
  if err then return bad(err) end
  return call("update", self.name, query or EMPTY, update, nil, false)
end

function Collection:update_many(query, update)
  local err = check_update(schemas[self.name], update)
  if err then return bad(err) end
  return call("update", self.name, query or EMPTY, update, nil, true)
end

function Collection:find_one_and_update(query, update, opts)
  local err = check_update(schemas[self.name], update)
  if err then return bad(err) end
  return call("find_one_and_update", self.name, query or EMPTY, update, opts)
end

function Collection:delete_one(query) return call("remove", self.name, query or EMPTY, nil, nil, false) end
function Collection:delete_many(query) return call("remove", self.name, query or EMPTY, nil, nil, true) end

function Collection:create_index(fields, opts)
  return call("create_index", self.name, index_keys(fields), nil, nil, opts and opts.unique)
end

function Collection:explain(query, opts) return call("explain", self.name, query or EMPTY, opts) end

---------------------------------------------------------------------------
-- pagination
---------------------------------------------------------------------------

-- Offset pagination: { items, total, page, pages, limit }; count and page run
-- at the same time.
function Collection:page(query, opts)
  opts = opts or EMPTY
  local limit = tonumber(opts.limit) or 50
  local page = tonumber(opts.page) or 1
  local max = opts.max_limit or 100
  if limit < 1 then limit = 1 end
  if limit > max then limit = max end
  if page < 1 then page = 1 end
  limit, page = math.floor(limit), math.floor(page)
  local sort = opts.sort or array({ array({ "created_at", -1 }), array({ "_id", 1 }) })
  local api = require "devloop"
  local items, total, e1, e2
  api.parallel(
    function() items, e1 = self:find(query, { sort = sort, skip = (page - 1) * limit, limit = limit }) end,
    function() total, e2 = self:count(query) end)
  if not items or not total then return nil, e1 or e2 end
  return {
    items = items, total = total, page = page, limit = limit,
    pages = math.ceil(total / limit),
  }
end

-- cursors are "<json>.<signature>", hex-encoded so they travel in URLs as is
local hex, unhex = crypto.hex, crypto.unhex

local function make_cursor(field, value, id)
  local body = json_encode({ f = field, v = value, id = id })
  return hex(body) .. "." .. db_core.sign(body)
end

-- Returns field, value, id or nil, "message" for a malformed or tampered cursor.
local function read_cursor(c, field)
  if type(c) ~= "string" or #c > 4096 then return nil, "malformed cursor" end
  local h, sig = c:match("^([0-9a-f]+)%.([0-9a-f]+)$")
  local body = h and unhex(h)
  if not body then return nil, "malformed cursor" end
  if db_core.sign(body) ~= sig then return nil, "tampered cursor" end
  local t = json_decode(body)
  if type(t) ~= "table" or t.f ~= field or t.id == nil then return nil, "cursor does not fit this listing" end
  if t.v == nil then return nil, "cursor has no " .. field .. " value" end
  return t.v, t.id
end

-- Cursor pagination on a sort field with _id as tie-breaker:
-- { items, has_more, next_cursor }. Walking every cursor returns each
-- document exactly once, even when many share the sort value.
-- opts: limit, cursor, field (default created_at), direction (1 | -1, default 1).
-- A bad cursor returns nil, message, "EBADCURSOR".
function Collection:cursor_page(query, opts)
  opts = opts or EMPTY
  local field = opts.field or "created_at"
  local dir = opts.direction == -1 and -1 or 1
  local limit = math.floor(tonumber(opts.limit) or 20)
  local max = opts.max_limit or 100
  if limit < 1 then limit = 1 end
  if limit > max then limit = max end
  local q = query or EMPTY
  if opts.cursor ~= nil and opts.cursor ~= "" then
    local v, id = read_cursor(opts.cursor, field)
    if v == nil then return nil, id, "EBADCURSOR" end
    local gt = dir == 1 and "$gt" or "$lt"
    local ge = dir == 1 and "$gte" or "$lte"
    -- a range on the sort field (an index seeks straight to it), then the
    -- ties at its start are cut by id: no page costs more than the first
    local after = { ["$and"] = array({
      { [field] = { [ge] = v } },
      { ["$or"] = array({ { [field] = { [gt] = v } }, { _id = { [gt] = id } } }) },
    }) }
    if next(q) ~= nil then q = { ["$and"] = array({ q, after }) } else q = after end
  end
  local items, err, code = self:find(q, {
    sort = array({ array({ field, dir }), array({ "_id", dir }) }),
    limit = limit + 1,
  })
  if not items then return nil, err, code end
  local has_more = #items > limit
  if has_more then items[#items] = nil end
  local last = items[#items]
  return {
    items = items,
    has_more = has_more,
    next_cursor = (has_more and last) and make_cursor(field, last[field], last._id) or null,
  }
end

return setmetatable(_M, {
  -- api.db.features is api.db.collection("features")
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    return _M.collection(name)
  end,
})
