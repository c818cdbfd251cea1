local api = require "devloop"
api.post("/batch", api.batch(require "sec_ops"))
-- api.auth.equal and api.auth.bearer, as an app would use them
api.get("/equal", function(req)
  return { equal = api.auth.equal(api.auth.bearer(req), "s3cret") }
end)
