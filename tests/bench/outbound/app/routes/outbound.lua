-- The outbound bench route: one GET to the local upstream per request.
local api = require "devloop"
local url = "http://127.0.0.1:" .. (os.getenv("UPSTREAM_PORT") or "18085") .. "/small"
api.get("/outbound", function()
  local res, err = api.http.get(url)
  if not res then return 502, err end
  return res.body
end)
