-- devloop.db: the document store for Lua (api.db). One API on SQLite (the
-- embedded default) and MongoDB: collections, schema declarations
-- (required fields, enums, defaults, timestamps, indexes), and offset and
-- cursor pagination. Every call parks only the calling request.
--
-- Request values: a value decoded from JSON or MessagePack may be a table
-- such as {"$ne": null}, and a table where a query expects a plain value is
-- an operator (a scan, not a lookup). db.eq(value) marks a plain value:
-- every call that takes a query refuses a marked value that is not a string,
-- a finite number or a boolean with nil, message, "EBADPARAM" before anything
-- reaches the store; find_by_id(id) does the same for an _id. page() and
-- cursor_page() bound page and limit as they arrive (query strings or decoded
-- numbers) and refuse what is not a whole number from 1 to 2^53 - 1 the same
-- way. EBADPARAM always comes from the request, so apps answer it with a 400.
local db_core = require "devloop.db_core"
local options = require "devloop.options"
local codec = require "devloop.codec"
local crypto = require "devloop.crypto"

local type, pairs, ipairs, tostring, tonumber, error, setmetatable, getmetatable, select =
  type, pairs, ipairs, tostring, tonumber, error, setmetatable, getmetatable, select
local floor, huge = math.floor, math.huge
local call = db_core.call
local json_encode, json_decode = codec.json_encode, codec.json_decode
local null, array = codec.null, codec.array

local _M = { _VERSION = "0.1" }

local Collection = {}
Collection.__index = Collection

local collections = {}
-- the serving generation's schemas; a load declares into loading_schemas,
-- which replace them only when the load succeeds (_end_load)
local schemas = {}
local loading_schemas

local function now_iso()
  local t = require("devloop.core").now()
  local ms = math.floor((t % 1) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. string.format(".%03dZ", ms)
end
_M.now_iso = now_iso

-- fail(err, code): the `nil, err, code` triple of every failed call
local function bad(msg) return nil, msg, "EINVAL" end
-- a request value refused by a helper (db.eq, find_by_id, page, cursor_page)
local function bad_param(msg) return nil, msg, "EBADPARAM" end

---------------------------------------------------------------------------
-- literal equality
---------------------------------------------------------------------------

-- the metatable of db.eq() values; nothing else carries it
local Literal = {}

local function is_plain(v)
  local t = type(v)
  return t == "string" or t == "boolean" or (t == "number" and v == v and v ~= huge and v ~= -huge)
end

-- db.eq(value [, name]) is `value` compared by equality only:
--   db.features:find_one({ _id = db.eq(req.body.id, "id") })
-- The call that gets the query fails with nil, "id must be a string, a number
-- or a boolean", "EBADPARAM" when value is anything else: a table (an
-- operator map like {"$ne": null}, an array, an object), null, nil, nan or
-- an infinity. name is what the message calls the value (default: the
-- field). Needed wherever a query takes a value from a request body, a
-- decoded header or a repeated query key (which arrives as an array); route
-- params and single query values are always strings, but db.eq costs nothing
-- there either. Marked values may sit anywhere in a query ($and, $or, $in).
function _M.eq(value, name)
  return setmetatable({ value = value, name = name }, Literal)
end

local MAX_DEPTH = 64

-- The query with every db.eq() value replaced by its plain value (a copy of
-- the tables on the way to one, the rest shared), or nil, message.
local function resolve(v, field, depth)
  if getmetatable(v) == Literal then
    if is_plain(v.value) then return v.value end
    local name = v.name or field or "value"
    if v.value == nil or v.value == null then return nil, name .. " is required" end
    return nil, name .. " must be a string, a number or a boolean"
  end
  -- deeper tables are left to the store, which refuses them
  if depth > MAX_DEPTH then return v end
  local out
  for k, x in pairs(v) do
    if type(x) == "table" then
      local f = field
      if type(k) == "string" and k:sub(1, 1) ~= "$" then f = k end
      local r, err = resolve(x, f, depth + 1)
      if r == nil then return nil, err end
      if r ~= x then
        if not out then
          out = {}
          for k2, x2 in pairs(v) do out[k2] = x2 end
          setmetatable(out, getmetatable(v))
        end
        out[k] = r
      end
    end
  end
  return out or v
end

local EMPTY = setmetatable({}, { __newindex = function() error("read-only", 2) end })

-- the query ready for the store (EMPTY for nil), or nil, message, "EBADPARAM"
local function prepare(query)
  if query == nil then return EMPTY end
  if type(query) ~= "table" then return query end
  local q, err = resolve(query, nil, 0)
  if q == nil then return bad_param(err) end
  return q
end

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
-- Indexes are created by api.db.ensure_indexes(): once the app has started
-- and again after each reload, so a new generation's indexes exist at once.
-- An index no longer declared is kept (dropping one is the operator's call).
local SCHEMA_KEYS = { "defaults", "enums", "indexes", "required", "timestamps", "types" }
local INDEX_KEYS = { "fields", "unique" }
local TYPE_NAMES = { string = true, number = true, boolean = true, table = true }

-- The names every store takes (runtime/store/store.c, the store front, checks
-- the same): a collection is 1-64 of [A-Za-z0-9_], a
-- field dot-separated segments of [A-Za-z0-9_-], at most 200 bytes.
local function collection_name_ok(name)
  return #name >= 1 and #name <= 64 and not name:find("[^%w_]")
end
local function field_name_ok(f)
  return #f >= 1 and #f <= 200 and not f:find("[^%w_%-.]") and not f:find("^%.")
         and not f:find("%.$") and not f:find("%.%.")
end

-- A schema the store could only misread is refused as the app loads, at
-- the app's line: an unknown key, a value of the wrong kind, or a name the
-- store would refuse on every call.
local function check_schema(name, schema)
  local fail = options.fail
  if type(name) ~= "string" or name == "" then fail("db.define: the collection name must be a string") end
  if not collection_name_ok(name) then
    fail("db.define(" .. options.show(name) .. "): invalid collection name (1-64 of [A-Za-z0-9_])")
  end
  if name:sub(1, 1) == "_" then
    -- _jobs and _files hold the runtime's own queue and file records
    fail("db.define(\"" .. name .. "\"): names starting with _ are the runtime's own collections "
         .. "(_jobs, _files); choose another name")
  end
  if type(schema) ~= "table" then
    fail("db.define(\"" .. name .. "\"): the schema must be a table, not " .. options.show(schema))
  end
  options.check(schema, SCHEMA_KEYS, "schema key", "db.define(\"" .. name .. "\")")
  local function kind(key, want, ok)
    if schema[key] ~= nil and not ok(schema[key]) then
      fail("db.define(\"" .. name .. "\"): " .. key .. " must be " .. want .. ", not " .. options.show(schema[key]))
    end
  end
  local function is_table(v) return type(v) == "table" end
  kind("required", "a list of field names", is_table)
  if type(schema.required) == "table" then
    local bad = options.non_list_key(schema.required)
    if bad ~= nil then
      fail("db.define(\"" .. name .. "\"): required must be a list of field names, not a table with the key "
           .. options.show(bad))
    end
    for k, field in pairs(schema.required) do
      -- a number or a table is no field: the check would never apply
      if type(field) ~= "string" or field == "" then
        fail("db.define(\"" .. name .. "\"): required[" .. k .. "] must be a field name (a non-empty string), not "
             .. options.show(field))
      end
    end
  end
  kind("enums", "a table { field = { values... } }", is_table)
  kind("defaults", "a table { field = value }", is_table)
  kind("types", "a table { field = type name }", is_table)
  kind("indexes", "a list of indexes", is_table)
  kind("timestamps", "true or false", function(v) return type(v) == "boolean" end)
  for field, list in pairs(schema.enums or {}) do
    if type(list) ~= "table" then
      fail("db.define(\"" .. name .. "\"): enums." .. tostring(field) .. " must be a list of values")
    end
  end
  for field, t in pairs(schema.types or {}) do
    if not TYPE_NAMES[t] then
      fail("db.define(\"" .. name .. "\"): types." .. tostring(field) .. " must be string, number, "
           .. "boolean or table, not " .. options.show(t))
    end
  end
  for i, ix in ipairs(schema.indexes or {}) do
    local named = false -- the { fields = ..., unique = ... } form
    if type(ix) == "table" then
      for k in pairs(ix) do if type(k) ~= "number" then named = true end end
    end
    if named and ix[1] ~= nil then
      fail("db.define(\"" .. name .. "\"): indexes[" .. i .. "] mixes field names and keys; write "
           .. "{ fields = { ... }, unique = true }")
    elseif named then
      options.check(ix, INDEX_KEYS, "index key", "db.define(\"" .. name .. "\") indexes[" .. i .. "]")
      if type(ix.fields) ~= "table" and type(ix.fields) ~= "string" then
        fail("db.define(\"" .. name .. "\"): indexes[" .. i .. "] needs fields = { field names }")
      end
    elseif type(ix) ~= "table" and type(ix) ~= "string" then
      fail("db.define(\"" .. name .. "\"): indexes[" .. i .. "] must be a list of fields or "
           .. "{ fields = {...}, unique = true }, not " .. options.show(ix))
    end
    local where = "db.define(\"" .. name .. "\"): indexes[" .. i .. "]"
    if named and ix.unique ~= nil and type(ix.unique) ~= "boolean" then
      fail(where .. ".unique must be true or false, not " .. options.show(ix.unique))
    end
    local fields = named and ix.fields or ix
    if type(fields) == "string" then fields = { fields } end
    local nfields = 0
    for k, f in pairs(fields) do
      local label = where .. (named and ".fields" or "") .. "[" .. tostring(k) .. "]"
      if type(k) ~= "number" then
        fail(label .. ": fields are a list of names")
      end
      local fname = f
      if type(f) == "table" then
        -- { "field", 1 | -1 }
        if f[2] ~= nil and f[2] ~= 1 and f[2] ~= -1 then
          fail(label .. ": the direction must be 1 or -1, not " .. options.show(f[2]))
        end
        fname = f[1]
      elseif type(f) == "string" then
        fname = f:gsub("^%-", "") -- "-field": descending
      end
      if type(fname) ~= "string" or not field_name_ok(fname) then
        fail(label .. ": invalid field name " .. options.show(fname)
             .. " (dotted segments of [A-Za-z0-9_-])")
      end
      nfields = nfields + 1
    end
    if nfields == 0 then fail(where .. " has no fields") end
  end
end

function _M.define(name, schema)
  check_schema(name, schema)
  local into = loading_schemas or schemas
  into[name] = schema
  return _M.collection(name)
end

-- a load declares afresh: a schema the new app no longer defines goes with
-- the old generation
function _M._begin_load() loading_schemas = {} end
function _M._end_load()
  schemas = loading_schemas or schemas
  loading_schemas = nil
end
function _M._abort_load() loading_schemas = nil end

-- Creates every declared index (existing ones are left as they are); one
-- that fails does not stop the others: the answer is nil and every failure,
-- one a line.
function _M.ensure_indexes()
  local errs = {}
  for name, schema in pairs(schemas) do
    for _, ix in ipairs(schema.indexes or {}) do
      local fields, unique = ix, false
      if type(ix) == "table" and ix.fields then fields, unique = ix.fields, ix.unique end
      local keys = index_keys(fields)
      local ok, err = call("create_index", name, keys, nil, nil, unique)
      if not ok then
        errs[#errs + 1] = "index " .. json_encode(keys) .. " on " .. name .. ": " .. tostring(err)
      end
    end
  end
  if #errs > 0 then return nil, table.concat(errs, "\n") end
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


function Collection:find(query, opts)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  return call("find", self.name, q, opts)
end

function Collection:find_one(query, opts)
  local o = {}
  for k, v in pairs(opts or EMPTY) do o[k] = v end
  o.limit = 1
  local r, err, code = self:find(query, o)
  if not r then return nil, err, code end
  return r[1]
end

-- The document whose _id is id, nil when there is none, or nil, message,
-- "EBADPARAM" when id is not a string or a finite number: an id taken from
-- a request can never widen the lookup.
function Collection:find_by_id(id, opts)
  if type(id) ~= "string" and type(id) ~= "number" then
    if id == nil or id == null then return bad_param("id is required") end
    return bad_param("id must be a string or a number")
  end
  return self:find_one({ _id = _M.eq(id, "id") }, opts)
end

function Collection:count(query)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  return call("count", self.name, q)
end

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

local function update(self, query, upd, multi)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  err = check_update(schemas[self.name], upd)
  if err then return bad(err) end
  return call("update", self.name, q, upd, nil, multi)
end

function Collection:update_one(query, upd) return update(self, query, upd, false) end
function Collection:update_many(query, upd) return update(self, query, upd, true) end

function Collection:find_one_and_update(query, upd, opts)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  err = check_update(schemas[self.name], upd)
  if err then return bad(err) end
  return call("find_one_and_update", self.name, q, upd, opts)
end

local function remove(self, query, multi)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  return call("remove", self.name, q, nil, nil, multi)
end

function Collection:delete_one(query) return remove(self, query, false) end
function Collection:delete_many(query) return remove(self, query, true) end

function Collection:create_index(fields, opts)
  return call("create_index", self.name, index_keys(fields), nil, nil, opts and opts.unique)
end

function Collection:explain(query, opts)
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  return call("explain", self.name, q, opts)
end

---------------------------------------------------------------------------
-- pagination
---------------------------------------------------------------------------

-- the largest whole number a double (a JSON or MessagePack number, a skip
-- sent to the store) holds exactly
local MAX_INT = 2 ^ 53 - 1

-- A page or a limit as it arrives: nil or "" (the default), a string of
-- ASCII digits (a query value) or a number (a decoded body). Returns the whole
-- number, from 1 to MAX_INT, or nil, "<name> must be ...". Signs, spaces,
-- exponents, fractions, nan, infinities and tables are refused, never read
-- as a default or clamped; numbers past MAX_INT are refused because
-- "9007199254740993" would otherwise become another page.
local function whole(v, name, default)
  if v == nil or v == "" then return default end
  local n
  if type(v) == "string" then
    -- a long run of digits reads as inf, refused below as too large
    if v:match("^%d+$") then n = tonumber(v) end
  elseif type(v) == "number" then
    n = v
  end
  if n == nil or n ~= n or n < 1 or n ~= floor(n) then
    return nil, name .. " must be a positive integer"
  end
  if n > MAX_INT then
    return nil, name .. " must be at most " .. string.format("%.0f", MAX_INT)
  end
  return n
end

-- the limit of a listing: opts.limit bounded by whole(), then capped at
-- opts.max_limit (default 100)
local function listing_limit(opts, default)
  local limit, err = whole(opts.limit, "limit", default)
  if not limit then return nil, err end
  local max = opts.max_limit or 100
  if limit > max then limit = max end
  return limit
end

-- Offset pagination: { items, total, page, pages, limit }; count and page run
-- at the same time. opts: page (default 1), limit (default 50, capped at
-- max_limit, default 100), sort (default newest created_at first, _id
-- breaking ties). page and limit may come straight from the request (see
-- whole()); a bad one is nil, "page must be a positive integer",
-- "EBADPARAM". A page past the end has no items (pages and total tell).
function Collection:page(query, opts)
  opts = opts or EMPTY
  local q, err, code = prepare(query)
  if q == nil then return nil, err, code end
  local limit
  limit, err = listing_limit(opts, 50)
  if not limit then return bad_param(err) end
  local page
  page, err = whole(opts.page, "page", 1)
  if not page then return bad_param(err) end
  local sort = opts.sort or array({ array({ "created_at", -1 }), array({ "_id", 1 }) })
  local skip = (page - 1) * limit
  local api = require "devloop"
  local items, total, e1, e2, c1, c2
  if skip > MAX_INT then
    -- no store holds 2^53 documents: a page this far is past the end, and the
    -- skip would no longer be exact, so only the count runs
    items = array({})
    total, e2, c2 = self:count(q)
  else
    api.parallel(
      function() items, e1, c1 = self:find(q, { sort = sort, skip = skip, limit = limit }) end,
      function() total, e2, c2 = self:count(q) end)
  end
  if not items then return nil, e1, c1 end
  if not total then return nil, e2, c2 end
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
-- opts: limit (default 20, capped at max_limit, default 100; bounded as
-- page() bounds it, nil, message, "EBADPARAM" otherwise), cursor, field
-- (default created_at), direction (1 | -1, default 1). The answer's limit
-- is the one used. A bad cursor returns nil, message, "EBADCURSOR".
function Collection:cursor_page(query, opts)
  opts = opts or EMPTY
  local field = opts.field or "created_at"
  local dir = opts.direction == -1 and -1 or 1
  local q, perr, pcode = prepare(query)
  if q == nil then return nil, perr, pcode end
  local limit, lerr = listing_limit(opts, 20)
  if not limit then return bad_param(lerr) end
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
    limit = limit,
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
