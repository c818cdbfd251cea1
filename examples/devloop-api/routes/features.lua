-- Features of the Devloop API (CONTRACT.md section 4): the list (filtered,
-- offset-paginated, cached under "feature:" for 300 s), one by id, and status
-- updates, which invalidate every cached feature list.
local api = require "devloop"
local db = api.db
local features = require "features"

local STATUSES = features.STATUSES

local function bad_request(msg) return 400, { error = "Bad Request", message = msg } end

local function int_param(v, name, default)
  if v == nil or v == "" then return default end
  if type(v) ~= "string" or not v:match("^%d+$") then
    return nil, name .. " must be a positive integer"
  end
  return tonumber(v)
end

api.get("/api/features", { cache = { prefix = "feature", ttl = "medium" } }, function(req)
  local q = req.query
  if q.status and not STATUSES[q.status] then
    return bad_request("status must be one of not-started, in-progress, completed, blocked")
  end
  local limit, err = int_param(q.limit, "limit", 50)
  if not limit then return bad_request(err) end
  local page
  page, err = int_param(q.page, "page", 1)
  if not page then return bad_request(err) end
  if limit < 1 or page < 1 then return bad_request("limit and page start at 1") end
  local query = {}
  if q.status then query.status = q.status end
  if q.milestone then query.milestone_id = q.milestone end
  local p, derr = db.features:page(query, { limit = limit, page = page, max_limit = 100 })
  if not p then error(derr) end
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
