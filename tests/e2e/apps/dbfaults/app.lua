-- The app of tests/e2e/test_db_faults.py: a database that becomes read-only,
-- locked or full (routes/notes.lua).
local api = require "devloop"
api.db.define("notes", { required = { "text" } })
