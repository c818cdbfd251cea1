-- Features of the Devloop API (CONTRACT.md section 4): the list (filtered,
-- offset-paginated, cached under "feature:" for 300 s), one by id, and status
-- updates, which invalidate every cached feature list.
local api = require "devloop"
local db = api.db
local features = require "features"

local STATUSES = features.STATUSES

local function bad_request(msg) return 400, { error = "Bad Request", message = msg } end

api.get("/api/features", { cache = { prefix = "feature", ttl = "medium" } }, function(req)
  local q = req.query
  if q.status and not STATUSES[q.status] then
    return bad_request("status must be one of not-started, in-progress, completed, blocked")
  end
  local query = {}
  if q.status then query.status = q.status end
  -- a repeated key arrives as an array: db.eq refuses it (400 naming milestone)
  if q.milestone then query.milestone_id = db.eq(q.milestone, "milestone") end
  -- page and limit go to the helper as they arrive: it answers EBADPARAM for
  -- anything but a whole number from 1 to 2^53 - 1, and a page past the end
  -- is an empty list
  local p, err, code = db.features:page(query, { limit = q.limit, page = q.page, max_limit = 100 })
  if code == "EBADPARAM" then return bad_request(err) end
  if not p then error(err) end
  return {
    features = p.items,
    pagination = { total = p.total, page = p.page, pages = p.pages, limit = p.limit },
  }
end)

api.get("/api/features/:id", function(req)
  local f = features.get(req.params.id)
  if not f then return 404, { error = "Not Found", message = "no feature " .. req.params.id } end
  return f
end)

-- status updates need a token with UPDATE_FEATURE (tokens.json, README)
api.patch("/api/features/:id", { auth = "UPDATE_FEATURE" }, function(req)
  local body = req.body
  if type(body) ~= "table" then return bad_request("body must be a JSON object with a status") end
  local f, err = features.set_status(req.params.id, body.status)
  if err == "not_found" then
    return 404, { error = "Not Found", message = "no feature " .. req.params.id }
  end
  if not f then return bad_request(err) end
  return f
end)
