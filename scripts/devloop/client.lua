-- devloop.client: requests to the app itself, in process (api.client). No
-- socket: the request's parts go into this worker's request core as an
-- in-process request (runtime/inproc/), so routing, limits, codecs and
-- compression are those of a socket request. Used by `devloop test` and by
-- handlers that compose routes.
--   local r = api.client.get("/api/features?limit=2", { headers = { Accept = "application/json" } })
--   r.status, r.headers["content-type"] (lower-case names; repeated ones joined
--   with ", ", set-cookie a list, as api.http), r.body (raw), r.json (decoded
--   JSON or nil)
local core = require "devloop.core"
local codec = require "devloop.codec"

local type, pairs, tostring, format = type, pairs, tostring, string.format

local _M = { _VERSION = "0.1" }

-- the answer comes as parts (status, headers with lower-case names and
-- set-cookie a list, body), never as text parsed again
local function result(status, headers, body)
  local r = { status = status, headers = headers, body = body }
  local ct = headers["content-type"] or ""
  if not headers["content-encoding"] then
    if ct:find("json", 1, true) then r.json = codec.json_decode(body)
    elseif ct:find("msgpack", 1, true) then r.msgpack = codec.msgpack_decode(body) end
  end
  return r
end

-- The request goes to core._request as parts (method, path, a map of header
-- fields, body), and the runtime checks each (dl_http_request_check in
-- runtime/core/http.c): a part outside its grammar (a CR or LF decoded from
-- a %0d%0a in a route parameter, say, which would start a second request in
-- the same bytes) is refused there, before anything is sent, and raised here
-- at the caller's line. Host replaces the default "localhost"; Content-Length
-- comes from the body; Transfer-Encoding cannot be given.
local function refuse(msg)
  error("api.client: " .. msg, 3)
end

-- a part shown in an error message: quoted, controls and bytes over 0x7e as
-- \xHH (a raw CR or LF would forge a log line), cut at n bytes
local function show(s, n)
  s = tostring(s)
  local cut = #s > n
  s = s:sub(1, n):gsub('[%z\1-\31"\\\127-\255]', function(c) return format("\\x%02X", c:byte()) end)
  return '"' .. s .. (cut and '"...' or '"')
end

-- request(method, path, {headers = {}, body = string | table (sent as JSON)})
function _M.request(method, path, opts)
  opts = opts or {}
  if type(method) ~= "string" then refuse("the method must be a string, not " .. type(method)) end
  if type(path) ~= "string" then refuse("the path must be a string, not " .. type(path)) end
  method = method:upper()
  local body = opts.body
  if body == codec.null then body = nil end
  local headers = {}
  if opts.headers ~= nil and type(opts.headers) ~= "table" then
    refuse("headers must be a table, not " .. type(opts.headers))
  end
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" then
      refuse("header names must be strings, not " .. type(k) .. " (" .. show(k, 40) .. ")")
    end
    if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
      refuse("header " .. show(k, 80) .. " has a " .. type(v) .. " value; a string is expected")
    end
    -- names that differ only in case ({Host = "a", host = "b"}) are repeated
    -- fields, as on a socket, never one silently dropped: core._request takes
    -- a list of values, and refuses a second Host
    k, v = k:lower(), tostring(v)
    local had = headers[k]
    if had == nil then headers[k] = v
    elseif type(had) == "table" then had[#had + 1] = v
    else headers[k] = { had, v } end
  end
  if type(body) == "table" then
    body = codec.json_encode(body)
    headers["content-type"] = headers["content-type"] or "application/json"
  elseif body ~= nil and type(body) ~= "string" then
    refuse("the body must be a string or a table, not " .. type(body))
  end
  local status, err, code, field = core._request(method, path, headers, body or "")
  if not status then
    if code ~= "EINVAL" then return nil, err end
    if field then
      refuse("header " .. show(field, 80) .. ": " .. err)
    end
    refuse(err .. " (method " .. show(method, 40) .. ", path " .. show(path, 200) .. ")")
  end
  return result(status, err, code)
end

for _, m in ipairs({ "get", "head", "delete", "options" }) do
  _M[m] = function(path, opts) return _M.request(m, path, opts) end
end
for _, m in ipairs({ "post", "put", "patch" }) do
  _M[m] = function(path, body, opts)
    opts = opts or {}
    opts.body = body
    return _M.request(m, path, opts)
  end
end

return _M
