local api = require "devloop"
api.post("/batch", api.batch(require "ops"))
api.post("/batch3", api.batch(require "ops", { concurrency = 3, max_operations = 5 }))
api.get("/whoami", { auth = true }, function(req)
  return { user = req.user.id, admin = req.user:has_permission("ADMIN"), perms = req.user.permissions }
end)
