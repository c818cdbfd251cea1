-- devloop.cached_route: the handler wrapper of routes declared with
-- `cache = {...}` (devloop.routing): 200 answers stored in api.cache, keyed
-- by the caller and the target, with request coalescing.
local core = require "devloop.core"
local codec = require "devloop.codec"
local cache_core = require "devloop.cache_core"
local cache = require "devloop.cache"
local auth = require "devloop.auth"

local type, error, select, unpack, pairs, ipairs, tostring = type, error, select, unpack, pairs,
  ipairs, tostring

local M = {}


-- Concurrent misses on one key in this worker run the handler once: the
-- others wait for its answer (request coalescing).
local inflight = {}
local GZIP_BODY = core.GZIP_BODY

-- What a cached answer keeps: its status (only 200s are stored), its
-- headers and its body, encoded once per representation (JSON,
-- MessagePack) and compressed once; hits, and the requests that waited for
-- the one that ran the handler, get the same headers (CORS, Cache-Control,
-- the app's own) as the first answer. Hop-by-hop and framing headers are
-- the runtime's, which refuses them from handlers. Set-Cookie never goes in
-- a shared entry (one caller's session would be every caller's): such an
-- answer goes out as the handler made it and the next request runs the
-- handler again, as does one whose headers the entry cannot hold (over 64
-- or 16 KiB) and one with a marker after its headers (a file to send); the
-- first such answer of a route is logged (info). So does an answer the
-- handler marks as not for a shared cache (RFC 9111 section 3: Cache-Control
-- no-store or private) and one that varies on a request header the key does
-- not hold (Vary, but for Accept and Accept-Encoding, which the entry
-- handles).

local VARY_KEPT = { ["accept"] = true, ["accept-encoding"] = true }

-- nil when the cache may keep an answer with these headers, else why not
-- (the header's name)
local function unkept_header(headers)
  if headers == nil then return nil end
  if type(headers) ~= "table" then return "(headers that are not a table)" end
  for name, v in pairs(headers) do
    if type(name) ~= "string" then return tostring(name) end
    local lname = name:lower()
    if lname == "set-cookie" then return name end
    local values = type(v) == "table" and v or { v }
    for _, value in ipairs(values) do
      local text = tostring(value):lower()
      if lname == "cache-control" then
        for directive in text:gmatch("[^,%s]+") do
          local d = directive:match("^[^=]+")
          if d == "no-store" or d == "private" then return name .. ": " .. d end
        end
      elseif lname == "vary" then
        for field in text:gmatch("[^,%s]+") do
          if not VARY_KEPT[field] then return name .. ": " .. field end
        end
      end
    end
  end
end

local function pack(...) return select("#", ...), { ... } end

-- The handler of a cached route: opts is the route's `cache` option (true or
-- a table devloop.routing has checked), pattern its path (for the log).
function M.wrap(opts, handler, pattern)
  if type(opts) ~= "table" then opts = {} end
  local prefix = opts.prefix or "api"
  prefix = cache.prefix[prefix] or (prefix:sub(-1) == ":" and prefix or prefix .. ":")
  -- seconds: a preset's, the number given, or medium
  local ttl = opts.ttl
  if ttl == nil then ttl = cache.ttl.medium elseif type(ttl) == "string" then ttl = cache.ttl[ttl] end
  local keyfn = opts.key
  local json_encode, msgpack_encode = codec.json_encode, codec.msgpack_encode
  local wants_msgpack = cache_core.wants_msgpack
  local told = {} -- header names already logged as keeping this route's answers out

  return function(req)
    -- the representation is part of the key: JSON and MessagePack differ
    local mp = wants_msgpack(req.headers.accept)
    local k
    if keyfn then
      -- the app's key says everything the answer depends on, the caller
      -- included; nil or false: this request bypasses the cache
      k = keyfn(req)
      if k == nil or k == false then return handler(req) end
      k = tostring(k)
    else
      -- The default key keeps callers apart (issue 17): an answer made for
      -- one bearer token's user is served only to callers with the same user
      -- and permissions (auth.identity: what req.user shows a handler), and
      -- anonymous callers share theirs. This rather than refusing auth +
      -- cache at load: a route such as GET /me stays cacheable without a key
      -- function and cannot be written to leak, and a route without `auth`
      -- whose handler looks at api.auth.user(req) is covered too. A request
      -- with credentials this library does not know (another scheme, a
      -- token not in tokens.json, which the app may check itself) is not
      -- looked up or stored at all, as a shared cache must not reuse answers
      -- to requests with Authorization (RFC 9111 section 3.5). Cookies and
      -- other headers are not part of the key: a route whose answer depends
      -- on them needs a key function.
      local who = auth.identity(req)
      if who == false then return handler(req) end
      k = who and ("@" .. who .. ":" .. req.target) or req.target
    end
    local key = prefix .. (mp and "msgpack:" or "json:") .. k

    local status, body, ctype, gz, hdrs = cache_core._http_get(key)
    if status then
      hdrs = hdrs or {}
      hdrs["Content-Type"] = ctype
      return status, body, hdrs, gz and GZIP_BODY or nil
    elseif body and ctype ~= "EUNAVAIL" then
      -- (an unavailable backend was logged once by its pool, not per request)
      core.log(core.LOG_WARN, "cache lookup failed; running the handler", { key = key, err = body })
    end

    local q = inflight[key]
    if q then
      local s, b, h, marker = core._wq_wait(q)
      if s then return s, b, h, marker end
      -- the leader's answer was not stored: answer on our own
      return handler(req)
    end
    q = core._wq_new()
    inflight[key] = q
    local n, r = pack(pcall(handler, req))
    inflight[key] = nil
    if not r[1] then
      core._wq_wake(q)
      error(r[2], 0)
    end
    local s, b, h = r[2], r[3], r[4]
    local numbered = type(s) == "number"
    local st = numbered and s or 200
    local value = numbered and b or s
    local headers = numbered and h or b
    -- a marker after the headers (a file to send, a gzipped body) is an
    -- answer the cache does not store
    local extra = false
    for i = numbered and 5 or 4, n do
      if r[i] ~= nil then extra = true end
    end
    local unkept = unkept_header(headers)
    local function pass_through()
      core._wq_wake(q)
      if unkept and not told[unkept] then
        told[unkept] = true
        core.log(core.LOG_INFO, "cached route: an answer with this header is not stored", {
          route = pattern, header = unkept })
      end
      return unpack(r, 2, n)
    end
    -- a bare `return false` is a handler mistake the runtime answers with a 500
    if st ~= 200 or value == nil or (value == false and not numbered) or extra or unkept then
      return pass_through()
    end
    -- from here on an error must still wake the requests waiting on q
    local ok, stored, hdrs, marker = pcall(function()
      local own_ct
      for name, v in pairs(headers or {}) do
        if name:lower() == "content-type" then own_ct = tostring(v) end
      end
      local bytes, ct
      if type(value) == "string" then
        bytes = value
        ct = own_ct or "text/plain; charset=utf-8"
      else
        local err
        if mp then
          bytes, err = msgpack_encode(value)
          ct = "application/msgpack"
        else
          bytes, err = json_encode(value)
          ct = "application/json"
        end
        if not bytes then error("cannot encode the response: " .. tostring(err), 0) end
        ct = own_ct or ct -- the handler's type stands, as on an uncached route
      end
      local kept, zipped = cache_core._http_store(key, ttl, 200, bytes, ct, headers)
      if kept == nil then
        unkept = zipped -- why the entry cannot hold this answer
        return nil
      end
      -- this answer goes out as the hits will: the handler's headers, one Content-Type
      local h = {}
      for name, v in pairs(headers or {}) do
        if name:lower() ~= "content-type" then h[name] = v end
      end
      h["Content-Type"] = ct
      return kept, h, zipped and GZIP_BODY or nil
    end)
    if not ok then
      core._wq_wake(q)
      error(stored, 0)
    end
    if stored == nil then return pass_through() end
    core._wq_wake(q, 200, stored, hdrs, marker)
    return 200, stored, hdrs, marker
  end
end

return M
