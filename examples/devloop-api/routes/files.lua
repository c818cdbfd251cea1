-- File uploads (CONTRACT.md section 4): POST /api/files takes multipart/form-data
-- with a "file" part, streamed to disk as it arrives (at most 50 MB, or
-- DEVLOOP_UPLOAD_MAX_BYTES); GET /api/files/:id sends it back from disk, with
-- api.files.serve's safe defaults: an attachment, and a type a browser would
-- run (HTML, SVG, XML, JavaScript...) as application/octet-stream.
local api = require "devloop"

local MAX = tonumber(os.getenv("DEVLOOP_UPLOAD_MAX_BYTES") or "") or 50 * 1024 * 1024

api.post("/api/files", { upload = { max_bytes = MAX } }, function(req)
  local file
  for _, f in ipairs(req.files) do
    if f.field == "file" then file = f break end
  end
  if not file then
    return 400, { error = "Bad Request", message = "a multipart part named file is required",
                  requestId = req.id }
  end
  local meta, err = api.files.save(file)
  if not meta then error(err) end
  return 201, { success = true, file = { id = meta.id, filename = meta.filename,
                                         contentType = meta.contentType, size = meta.size } }
end)

api.get("/api/files/:id", function(req)
  return api.files.serve(req, req.params.id)
end)
