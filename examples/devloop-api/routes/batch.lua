-- POST /api/batch {operations: [{id, type, params}]} -> {results: [...]} in
-- request order (CONTRACT.md section 4); the operations are lib/operations.lua.
local api = require "devloop"

api.post("/api/batch", api.batch(require "operations", { max_operations = 100, concurrency = 10 }))
