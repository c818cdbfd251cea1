-- Features of the Devloop API: list (filtered, paginated, cached under
-- "feature:" for 300 s), one by id, and status updates that invalidate every
-- cached feature list. The documents live in memory here; the document store
-- (SQLite / MongoDB) takes over with the same routes.
local api = require "devloop"

local STATUSES = { ["not-started"] = true, ["in-progress"] = true, completed = true, blocked = true }
local STATUS_LIST = { "not-started", "in-progress", "completed", "blocked" }
local BASE = 1767225600 -- 2026-01-01T00:00:00Z

-- a deterministic demo data set, so a new user sees real answers at once
local features, by_id = {}, {}
for i = 1, 60 do
  local f = {
    id = string.format("feat-%06d", i),
    name = "Feature " .. i,
    milestone_id = string.format("ms-%02d", i % 10),
    status = STATUS_LIST[i % 4 + 1],
    created_at = os.date("!%Y-%m-%dT%H:%M:%SZ", BASE + i * 3600),
  }
  features[i] = f
  by_id[f.id] = f
end

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
  limit = math.min(limit, 100)

  local matched = {}
  for _, f in ipairs(features) do
    if (not q.status or f.status == q.status) and (not q.milestone or f.milestone_id == q.milestone) then
      matched[#matched + 1] = f
    end
  end
  -- newest first; id breaks ties
  table.sort(matched, function(a, b)
    if a.created_at ~= b.created_at then return a.created_at > b.created_at end
    return a.id < b.id
  end)
  local list = api.json.array({})
  for i = (page - 1) * limit + 1, math.min(page * limit, #matched) do
    list[#list + 1] = matched[i]
  end
  return {
    features = list,
    pagination = { total = #matched, page = page, pages = math.ceil(#matched / limit), limit = limit },
  }
end)

api.get("/api/features/:id", function(req)
  local f = by_id[req.params.id]
  if not f then return 404, { error = "Not Found", message = "no feature " .. req.params.id } end
  return f
end)

api.patch("/api/features/:id", function(req)
  local body = req.body
  local status = type(body) == "table" and body.status
  if not status then return bad_request("status is required") end
  if not STATUSES[status] then
    return bad_request("status must be one of not-started, in-progress, completed, blocked")
  end
  local f = by_id[req.params.id]
  if not f then return 404, { error = "Not Found", message = "no feature " .. req.params.id } end
  f.status = status
  -- every cached list may hold this feature
  api.cache.invalidate_entity("feature", f.id)
  return f
end)
