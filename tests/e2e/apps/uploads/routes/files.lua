-- uploads through api.files, whatever the store (tests/e2e/test_uploads.py)
local api = require "devloop"
api.post("/files", { upload = true }, function(req)
  local meta = assert(api.files.save(req.files[1]))
  return 201, meta
end)
api.get("/files/:id", function(req) return api.files.serve(req, req.params.id) end)
