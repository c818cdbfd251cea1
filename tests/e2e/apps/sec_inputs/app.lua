-- The input-bounds test app (tests/e2e/test_security_inputs.py): api.db's
-- literal equality (db.eq, find_by_id) and its pagination helpers fed request
-- values as they arrive, from query strings, JSON and MessagePack bodies.
local api = require "devloop"
local db = api.db

db.define("things", { required = { "name" }, timestamps = true, indexes = { { "created_at" } } })

api.on_start(function()
  if api.worker_id() ~= 0 or (db.things:count({}) or 0) > 0 then return end
  local docs = {}
  for i = 1, 30 do
    docs[i] = { _id = string.format("t%02d", i), name = "thing " .. i, n = i,
                kind = i % 2 == 0 and "even" or "odd",
                created_at = string.format("2026-01-01T00:00:%02d.000Z", i) }
  end
  assert(db.things:insert_many(docs))
end)
