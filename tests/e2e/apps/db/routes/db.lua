-- The document-store test app: every api.db operation behind a route.
local api = require "devloop"
local db = api.db

api.get("/hello", function() return "Hello, World!" end)
api.get("/db/type", function() return { type = db.type() } end)

local function answer(a, b, c)
  if a == nil and b ~= nil then return 200, { ok = false, err = b, code = c or api.null } end
  return { ok = true, result = a == nil and api.null or a, extra = b == nil and api.null or b }
end

local ops = {
  insert = function(c, b) return c:insert_many(b.docs) end,
  insert_one = function(c, b) return c:insert_one(b.doc) end,
  find = function(c, b) return c:find(b.query, b.opts) end,
  find_one = function(c, b) return c:find_one(b.query, b.opts) end,
  count = function(c, b) return c:count(b.query) end,
  update = function(c, b)
    if b.multi then return c:update_many(b.query, b.update) end
    return c:update_one(b.query, b.update)
  end,
  foau = function(c, b) return c:find_one_and_update(b.query, b.update, b.opts) end,
  delete = function(c, b)
    if b.multi then return c:delete_many(b.query) end
    return c:delete_one(b.query)
  end,
  index = function(c, b) return c:create_index(b.fields, { unique = b.unique }) end,
  explain = function(c, b) return c:explain(b.query, b.opts) end,
  page = function(c, b) return c:page(b.query, b.opts) end,
  cursor = function(c, b) return c:cursor_page(b.query, b.opts) end,
}

api.post("/db/:coll/:op", { body_limit = 16 * 1024 * 1024 }, function(req)
  local op = ops[req.params.op]
  if not op then return 404, { error = "no such op" } end
  local body = type(req.body) == "table" and req.body or {}
  return answer(op(db[req.params.coll], body))
end)

api.get("/db/parallel", function()
  local t0 = api.now()
  local a, b, c = api.parallel(
    function() return db.items:count({}) end,
    function() return db.items:find({}, { limit = 5 }) end,
    function() return db.items:count({ n = { ["$gt"] = 10 } }) end)
  return { count = a, five = #b, gt = c, elapsed = api.now() - t0 }
end)
