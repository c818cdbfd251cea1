-- Notes: one route that writes, routes that read. A failed call answers 503
-- for a fault of the database (read-only, locked, full, i/o, cannot open),
-- 400 for bad input and 500 for anything else, with the store's message and
-- code.
local api = require "devloop"
local notes = api.db.notes

local FAULTS = { EROFS = true, EBUSY = true, ENOSPC = true, EIO = true, ECANTOPEN = true }

local function failed(err, code)
  local status = FAULTS[code] and 503 or (code == "EINVAL" and 400 or 500)
  return status, { error = err, code = code or api.null }
end

api.get("/hello", function() return "Hello, World!" end)

api.post("/notes", function(req)
  local body = type(req.body) == "table" and req.body or {}
  local doc, err, code = notes:insert_one({ text = body.text, pad = body.pad })
  if not doc then return failed(err, code) end
  return 201, doc
end)

api.post("/notes/:id/edit", function(req)
  local body = type(req.body) == "table" and req.body or {}
  local n, err, code = notes:update_one({ _id = req.params.id }, { ["$set"] = { text = body.text } })
  if not n then return failed(err, code) end
  return { modified = n }
end)

api.get("/notes/count", function()
  local n, err, code = notes:count({})
  if not n then return failed(err, code) end
  return { count = n }
end)

api.get("/notes/:id", function(req)
  local doc, err, code = notes:find_one({ _id = req.params.id })
  if err then return failed(err, code) end
  if not doc then return 404, { error = "no such note" } end
  return doc
end)
