-- tests/e2e/test_fail.py: api.fail and error tables in routes, batch
-- operations and job processors
local api = require "devloop"

local function find_thing(id)
  api.fail(404, "no such thing", { id = id })
end

api.get("/fail/teapot", function() api.fail(418, "short and stout") end)
api.get("/fail/deep/:id", function(req)
  find_thing(req.params.id)
  return { unreachable = true }
end)
api.get("/fail/503", function() api.fail(503, "down for maintenance") end)
api.get("/fail/table", function() error({ status = 409, message = "taken" }) end)
api.get("/fail/caught", function()
  -- a pcall in the handler sees the value and may raise it again
  local ok, e = pcall(api.fail, 429, "slow down")
  assert(not ok and e.status == 429 and tostring(e) == "slow down (status 429)")
  error(e)
end)
api.get("/fail/object", function() error({ code = 7, reason = "boom" }) end)
api.get("/fail/tostring", function()
  error(setmetatable({}, { __tostring = function() return "a custom error text" end }))
end)
api.get("/fail/bool", function() error(false) end)
api.get("/fail/badstatus", function() api.fail(200, "fine, really") end)
api.get("/fail/tablebad", function() error({ status = 700, message = "too far" }) end)
api.get("/fail/parallel", function()
  api.parallel(function() api.sleep(1) return 1 end,
               function() api.fail(422, "bad input") end)
end)
api.get("/fail/inproc", function()
  local r = api.client.get("/fail/teapot")
  return { status = r.status, body = r.json }
end)
api.post("/fail/batch", api.batch({
  teapot = function() api.fail(418, "no coffee", { hint = "tea" }) end,
  ok = function() return 1 end,
  badstatus = function() api.fail(99, "x") end,
  table = function() error({ status = 404, message = "gone" }) end,
  server = function() api.fail(503, "backend away") end,
}))

api.post("/fail/jobs", function(req)
  local id, err = api.jobs.add("failing", req.body, { attempts = 3, backoff = 10 })
  if not id then api.fail(500, tostring(err)) end
  return { id = id }
end)
api.get("/fail/jobs/:id", function(req)
  local j = api.jobs.get(req.params.id)
  if not j then api.fail(404, "no job " .. req.params.id) end
  return j
end)
