-- The benchmark app: the routes every peer in shared/bench serves, with the
-- same synthetic feature documents (shared/bench/README.md).
local api = require "devloop"

local STATUSES = { "not-started", "in-progress", "completed", "blocked" }
local DESCRIPTION = "Synthetic feature record for the devloop benchmark; "
  .. "its text is fixed so that every peer serializes identical content."
local BASE = 1767225600 -- 2026-01-01T00:00:00Z
local MAX_LIMIT, DEFAULT_LIMIT = 1000, 50

-- generated once at start-up; each request encodes the first N
local DOCS = {}
for i = 1, MAX_LIMIT do
  DOCS[i] = {
    id = string.format("feat-%06d", i),
    name = "Feature " .. i,
    milestone_id = string.format("ms-%02d", i % 10),
    phase_id = "ph-" .. (i % 4),
    status = STATUSES[i % 4 + 1],
    created_at = os.date("!%Y-%m-%dT%H:%M:%SZ", BASE + i * 60),
    description = DESCRIPTION,
  }
end

local lists = {} -- limit -> array of the first N documents, built once
local function first_n(n)
  local t = lists[n]
  if not t then
    t = api.json.array({})
    for i = 1, n do t[i] = DOCS[i] end
    lists[n] = t
  end
  return t
end

local function parse_limit(v)
  local n = tonumber(v)
  if not n then return DEFAULT_LIMIT end
  n = math.floor(n)
  if n < 1 then return 1 end
  if n > MAX_LIMIT then return MAX_LIMIT end
  return n
end

api.get("/hello", function()
  return "Hello, World!"
end)

api.get("/json", function()
  return { message = "Hello, World!" }
end)

api.get("/features", function(req)
  return first_n(parse_limit(req.query.limit))
end)

-- Through the cache: Redis with REDIS_URL, else the in-process cache. The
-- body is stored encoded and gzip-compressed once; hits never run this.
api.get("/cached/features", { cache = { prefix = "feature", ttl = 300 } }, function()
  return first_n(100)
end)

local handlers = {
  echo = function(params) return params end,
}

api.post("/batch", function(req)
  local body = req.body
  local ops = type(body) == "table" and body.operations
  if type(ops) ~= "table" or (#ops == 0 and next(ops) ~= nil) then
    return 400, { error = "operations must be an array" }
  end
  local results = api.json.array({})
  for i = 1, #ops do
    local op = ops[i]
    local h = handlers[op.type]
    if h then
      results[i] = { id = op.id, result = h(op.params) }
    else
      results[i] = { id = op.id, error = "unknown operation type: " .. tostring(op.type) }
    end
  end
  return { results = results }
end)
