-- log records built from request data (tests/e2e/test_security_logs.py)
local api = require "devloop"

api.get("/hello", function() return "Hello, World!" end)

-- msg, a field value v and a field named k, all from the query (percent-decoded)
api.get("/log", function(req)
  local q = req.query
  local fields = { value = q.v, note = "n" }
  if q.k then fields[q.k] = "keyed" end
  api.log.warn(q.msg or "", fields)
  return { ok = true }
end)

-- user fields named like the record's own keys
api.get("/log/reserved", function(req)
  api.log.warn("reserved " .. (req.query.tag or ""), {
    level = "debug", message = "forged message", timestamp = "1970-01-01T00:00:00.000Z",
    service = "other", requestId = "not-the-request", _level = "already taken",
    msg = "short", time = 0, tag = req.query.tag,
  })
  return { ok = true }
end)

-- a table whose keys 1 and "1" both become the JSON key "1"
api.get("/log/mixed", function(req)
  api.log.warn("mixed " .. (req.query.tag or ""), { [1] = "number", ["1"] = "string",
                                                    tag = req.query.tag })
  return { ok = true }
end)
