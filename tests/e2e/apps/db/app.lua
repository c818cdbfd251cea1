local api = require "devloop"
api.db.define("things", {
  required = { "name", "status" },
  enums = { status = { "new", "done" } },
  defaults = { status = "new", created_at = "now" },
  types = { name = "string" },
  indexes = { { "status", "-created_at" }, { fields = { "code" }, unique = true } },
})
