-- POST /api/batch, in process
local t = require "devloop.test"

t.test("results come back in request order, errors stay in their operation", function()
  local r = t.post("/api/batch", { operations = {
    { id = "a", type = "getFeature", params = { id = "feat-000002" } },
    { id = "b", type = "nope" },
    { id = "c", type = "getSystemHealth" },
  } })
  t.eq(r.status, 200)
  local res = r.json.results
  t.eq(res[1].id, "a")
  t.eq(res[1].result._id, "feat-000002")
  t.match(res[2].error, "unknown operation type")
  t.eq(res[3].id, "c")
end)

t.test("updateFeatureStatus is refused without the permission", function()
  local r = t.post("/api/batch", { operations = {
    { id = 1, type = "updateFeatureStatus", params = { id = "feat-000003", status = "completed" } },
  } }, { headers = { Authorization = "Bearer demo-viewer-token" } })
  t.match(r.json.results[1].error, "forbidden")
end)

t.test("an empty batch is a 400", function()
  t.eq(t.post("/api/batch", { operations = {} }).status, 400)
end)

t.test("an operator map where an id is expected is that operation's error", function()
  local r = t.post("/api/batch", { operations = {
    { id = "ne", type = "getFeature", params = { id = { ["$ne"] = require("devloop").null } } },
    { id = "gt", type = "getFeature", params = { id = { ["$gt"] = "" } } },
    { id = "ms", type = "getMilestone", params = { id = { ["$gt"] = "" } } },
  } })
  t.eq(r.status, 200)
  for i = 1, 3 do
    t.eq(r.json.results[i].result, nil)
    t.match(r.json.results[i].error, "id must be a string or a number")
  end
end)
