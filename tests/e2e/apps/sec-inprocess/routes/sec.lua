-- Routes for tests/e2e/test_security_inprocess.py: handlers that pass request
-- values (percent-decoded by the runtime) into in-process requests, and a
-- /mark route that counts every request reaching it, so a smuggled request
-- shows.
local api = require "devloop"

local marks, mark_auth = 0, nil
api.route("*", "/mark", function(req)
  marks = marks + 1
  mark_auth = req.headers.authorization
  return { marks = marks }
end)
api.get("/marks", function() return { marks = marks, auth = mark_auth } end)

-- what an in-process request arrived as
local function seen(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k:lower() end
  table.sort(names)
  return { method = req.method, path = req.path, id = req.params.id, host = req.headers.host,
           auth = req.headers.authorization, x = req.headers["x-t"],
           header_names = api.json.array(names), body = req.raw_body or "" }
end
api.route("*", "/p/:id", seen)

-- the issue's route: a query value joined into the path of an in-process
-- request that carries the caller's token
api.get("/fetch", function(req)
  local r = api.client.get("/p/" .. req.query.id, { headers = { Authorization = "Bearer alice-token" } })
  return r.status, r.body, { ["Content-Type"] = "application/json" }
end)

-- every part of an in-process request from the query: the error, if any, is
-- answered 400 with its message
api.get("/call", function(req)
  local q = req.query
  local headers = { Authorization = "Bearer alice-token" }
  if q.hname then headers[q.hname] = q.hvalue or "" end
  if q.numkey then headers[1] = "x" end
  local ok, r, err = pcall(api.client.request, q.method or "GET", q.path or "/p/ok",
                           { headers = headers, body = q.body })
  if not ok then return 400, { error = "Bad Request", message = tostring(r) } end
  if not r then return 502, { error = "Bad Gateway", message = tostring(err) } end
  return { status = r.status, body = r.json or r.body }
end)
