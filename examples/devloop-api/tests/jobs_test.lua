-- background jobs through the API, in process
local t = require "devloop.test"

t.test("an echo job completes with its data as result", function()
  local r = t.post("/api/jobs", { type = "echo", data = { n = 7 } })
  t.eq(r.status, 202)
  local id = r.json.id
  local j
  for _ = 1, 100 do
    j = t.get("/api/jobs/" .. id).json
    if j.state == "completed" then break end
    t.sleep(20)
  end
  t.eq(j.state, "completed")
  t.eq(j.result, { n = 7 })
end)

t.test("unknown types and priorities are 400, unknown ids 404", function()
  t.eq(t.post("/api/jobs", { type = "nope" }).status, 400)
  t.eq(t.post("/api/jobs", { type = "echo", priority = "urgent" }).status, 400)
  t.eq(t.get("/api/jobs/job-none").status, 404)
end)
