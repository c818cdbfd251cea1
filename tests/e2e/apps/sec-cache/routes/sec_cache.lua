-- Cached routes and callers (tests/e2e/test_security_cache.py): answers
-- that depend on the caller, answers with headers the cache cannot keep.
local api = require "devloop"
local core = require "devloop.core"

local runs = {}
local function count(name)
  runs[name] = (runs[name] or 0) + 1
  return runs[name]
end
api.get("/runs", function() return runs end)

-- who asked, with their permissions: one answer per caller
api.get("/me", { auth = true, cache = { prefix = "user", ttl = 60 } }, function(req)
  api.sleep(tonumber(req.query.sleep) or 0)
  return { user = req.user.id, perms = req.user.permissions, run = count("me") }
end)
api.get("/report", { auth = "READ", cache = { prefix = "api", ttl = 60 } }, function(req)
  return { user = req.user.id, run = count("report") }
end)

-- no `auth`, but the answer depends on the caller when there is one
api.get("/open", { cache = { prefix = "api", ttl = 60 } }, function(req)
  local u = api.auth.user(req)
  local h = req.headers.authorization
  return { user = u and u.id or api.null, scheme = h and h:match("^%S+") or api.null,
           run = count("open") }
end)

-- the app's own key: nil skips the cache
api.get("/keyed", { cache = { prefix = "api", ttl = 60, key = function(req)
  if req.query.nocache then return nil end
  return "keyed:" .. (req.query.v or "")
end } }, function(req)
  return { v = req.query.v or api.null, run = count("keyed") }
end)

-- answers that must not be stored
api.get("/cookie", { cache = { prefix = "api", ttl = 60 } }, function()
  local n = count("cookie")
  return 200, { run = n }, { ["Set-Cookie"] = "session=s" .. n .. "; HttpOnly" }
end)
api.get("/cookie-lower", { cache = { prefix = "api", ttl = 60 } }, function()
  local n = count("cookie-lower")
  return { run = n }, { ["set-cookie"] = "session=l" .. n }
end)
api.get("/etag", { cache = { prefix = "api", ttl = 60 } }, function()
  local n = count("etag")
  return 200, "tagged " .. n, { ["Content-Type"] = "text/plain", ETag = '"v' .. n .. '"' }
end)
api.get("/file", { cache = { prefix = "api", ttl = 60 } }, function()
  count("file")
  return 200, core.app_dir() .. "/static/hello.txt", { ["Content-Type"] = "text/plain" },
    api.FILE_BODY
end)
-- what stays cacheable: a text body with its Content-Type (in any case)
api.get("/text", { cache = { prefix = "api", ttl = 60 } }, function()
  local n = count("text")
  return 200, "plain " .. n, { ["Content-type"] = "text/csv" }
end)
