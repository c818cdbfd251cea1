-- file serving with hostile uploads (tests/e2e/test_security_files.py)
local api = require "devloop"

api.post("/files", { upload = true }, function(req)
  local meta = assert(api.files.save(req.files[1]))
  return 201, meta
end)

-- the default: attachment
api.get("/files/:id", function(req) return api.files.serve(req, req.params.id) end)

-- opted into inline for the safe list
api.get("/inline/:id", function(req)
  return api.files.serve(req, req.params.id, { inline = true })
end)

-- opted into inline for PNG only
api.get("/png-inline/:id", function(req)
  return api.files.serve(req, req.params.id, { inline = { "image/png" } })
end)

-- asking for an active type inline is a mistake the app hears about
api.get("/html-inline/:id", function(req)
  return api.files.serve(req, req.params.id, { inline = { "text/html" } })
end)

-- any name through the header encoder, as an app serving its own files does
api.get("/disposition", function(req)
  return 200, "x", { ["Content-Disposition"] = api.files.disposition(req.query.name,
                                                                     req.query.kind) }
end)
