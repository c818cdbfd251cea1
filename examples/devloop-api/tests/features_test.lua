-- The features routes, in process (devloop test examples/devloop-api)
local t = require "devloop.test"

local EDITOR = { headers = { Authorization = "Bearer demo-editor-token" } }
local VIEWER = { headers = { Authorization = "Bearer demo-viewer-token" } }

t.test("the list is paginated, newest first", function()
  local r = t.get("/api/features?limit=5&page=2")
  t.eq(r.status, 200)
  t.eq(#r.json.features, 5)
  t.eq(r.json.pagination.page, 2)
  t.eq(r.json.pagination.limit, 5)
  t.ok(r.json.pagination.total >= 10000, "seeded")
  local a, b = r.json.features[1], r.json.features[2]
  t.ok(a.created_at >= b.created_at, "newest first")
end)

t.test("bad paging input is a 400", function()
  t.eq(t.get("/api/features?limit=abc").status, 400)
  t.eq(t.get("/api/features?status=done").status, 400)
end)

t.test("one feature, or 404", function()
  t.eq(t.get("/api/features/feat-000001").json._id, "feat-000001")
  t.eq(t.get("/api/features/feat-none").status, 404)
end)

t.test("PATCH needs UPDATE_FEATURE and invalidates the cached list", function()
  local body = { status = "blocked" }
  t.eq(t.patch("/api/features/feat-000010", body).status, 401)
  t.eq(t.patch("/api/features/feat-000010", body, VIEWER).status, 403)
  local before = t.get("/api/features?status=blocked&limit=1").json.pagination.total
  local r = t.patch("/api/features/feat-000010", body, EDITOR)
  t.eq(r.status, 200)
  t.eq(r.json.status, "blocked")
  t.ok(r.json.updated_at, "updated_at set")
  local after = t.get("/api/features?status=blocked&limit=1").json.pagination.total
  t.eq(after, before + 1, "the cached list moved")
  t.eq(t.patch("/api/features/feat-000010", { status = "nope" }, EDITOR).status, 400)
end)

t.test("a cached list expires with the (fake) clock", function()
  local api = require "devloop"
  local before = t.get("/api/features?status=blocked&limit=1").json.pagination.total
  -- change the data behind the cache's back (no invalidation)
  local f = api.db.features:find_one({ status = { ["$ne"] = "blocked" } })
  api.db.features:update_one({ _id = f._id }, { ["$set"] = { status = "blocked" } })
  t.eq(t.get("/api/features?status=blocked&limit=1").json.pagination.total, before,
       "still the cached answer")
  t.advance(301 * 1000) -- past the medium TTL (300 s)
  t.eq(t.get("/api/features?status=blocked&limit=1").json.pagination.total, before + 1,
       "a fresh answer once the TTL passed")
end)

t.test("absurd pages are a 400 naming page, a page past the end is empty", function()
  for _, v in ipairs({ "99999999999999999999", "9007199254740993", "inf", "nan" }) do
    local r = t.get("/api/features?page=" .. v)
    t.eq(r.status, 400)
    t.match(r.json.message, "page")
  end
  t.eq(t.get("/api/features?limit=1e20").status, 400)
  local r = t.get("/api/features?page=200000000000000")
  t.eq(r.status, 200)
  t.eq(#r.json.features, 0)
end)
