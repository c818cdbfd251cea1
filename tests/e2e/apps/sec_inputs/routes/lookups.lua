-- Every api.db call that takes a request value, written the safe way: the
-- value goes through db.eq (or find_by_id), and an EBADPARAM answer is a 400.
local api = require "devloop"
local db = api.db

-- a call's nil, message, code triple (or its first result) as an answer
local function answer(r, err, code)
  if r ~= nil then return { result = r } end
  if code == "EBADPARAM" or code == "EBADCURSOR" then
    return 400, { error = "Bad Request", message = err, code = code }
  end
  if err then error(err) end
  return 404, { error = "Not Found" }
end

local function body(req) return type(req.body) == "table" and req.body or {} end

api.get("/hello", function() return "Hello, World!" end)
api.get("/ready", function() return { n = db.things:count({}) } end)

api.post("/find_one", function(req)
  return answer(db.things:find_one({ _id = db.eq(body(req).id, "id") }))
end)

api.post("/find_by_id", function(req)
  return answer(db.things:find_by_id(body(req).id))
end)

-- a literal inside $or and $and, and two request values in one query
api.post("/find", function(req)
  local b = body(req)
  return answer(db.things:find({ ["$or"] = api.json.array({
    { _id = db.eq(b.id, "id") },
    { ["$and"] = api.json.array({ { kind = db.eq(b.kind, "kind") }, { name = db.eq(b.name, "name") } }) },
  }) }))
end)

api.post("/count", function(req)
  return answer(db.things:count({ kind = db.eq(body(req).kind, "kind") }))
end)

api.post("/update", function(req)
  local b = body(req)
  return answer(db.things:update_one({ _id = db.eq(b.id, "id") }, { ["$set"] = { touched = true } }))
end)

api.post("/foau", function(req)
  local b = body(req)
  return answer(db.things:find_one_and_update({ _id = db.eq(b.id, "id") },
                                              { ["$set"] = { touched = true } }))
end)

api.post("/delete", function(req)
  return answer(db.things:delete_one({ _id = db.eq(body(req).id, "id") }))
end)

api.get("/touched", function() return { n = db.things:count({ touched = true }) } end)

-- the pagination helpers take page and limit as they arrive: strings from the
-- query, numbers (any double, inf and nan from MessagePack) from a body
api.get("/page", function(req)
  return answer(db.things:page({}, { page = req.query.page, limit = req.query.limit, max_limit = 10 }))
end)

api.post("/page", function(req)
  local b = body(req)
  return answer(db.things:page({ kind = db.eq(b.kind, "kind") },
                               { page = b.page, limit = b.limit, max_limit = 10 }))
end)

api.get("/cursor", function(req)
  return answer(db.things:cursor_page({}, { limit = req.query.limit, cursor = req.query.cursor,
                                            max_limit = 10 }))
end)

api.post("/cursor", function(req)
  local b = body(req)
  return answer(db.things:cursor_page({ kind = db.eq(b.kind, "kind") },
                                      { limit = b.limit, max_limit = 10 }))
end)
