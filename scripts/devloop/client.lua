-- devloop.client: requests to the app itself, in process (api.client). No
-- socket: the request bytes go through an in-process connection of this
-- worker (conn.c), so routing, limits, codecs and compression are those of a
-- socket request. Used by `devloop test` and by handlers that compose routes.
--   local r = api.client.get("/api/features?limit=2", { headers = { Accept = "application/json" } })
--   r.status, r.headers["content-type"], r.body (raw), r.json (decoded JSON or nil)
local core = require "devloop.core"
local codec = require "devloop.codec"

local type, pairs, tostring, concat = type, pairs, tostring, table.concat

local _M = { _VERSION = "0.1" }

local function parse(raw)
  local head_end = raw:find("\r\n\r\n", 1, true)
  local head, body = raw:sub(1, head_end - 1), raw:sub(head_end + 4)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
    end
  end
  local r = { status = status, headers = headers, body = body }
  local ct = headers["content-type"] or ""
  if not headers["content-encoding"] then
    if ct:find("json", 1, true) then r.json = codec.json_decode(body)
    elseif ct:find("msgpack", 1, true) then r.msgpack = codec.msgpack_decode(body) end
  end
  return r
end

-- The request line and fields are built from strings: a CR or LF in them
-- (a decoded %0d%0a in a route parameter, say) would start a second request
-- in the same bytes. Anything outside their grammar is refused (raises).
local function check(method, path, headers)
  if type(method) ~= "string" or not method:find("^[%w!#$%%&'*+.^_`|~-]+$") then
    error("api.client: method must be a token, not " .. tostring(method), 3)
  end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[%z\1-\32\127-\255]") then
    error("api.client: path must start with / and hold no spaces, controls or raw bytes "
          .. "over 127 (percent-encode them)", 3)
  end
  for k, v in pairs(headers) do
    if not k:find("^[%w!#$%%&'*+.^_`|~-]+$") then
      error("api.client: header name " .. string.format("%q", k) .. " is not a token", 3)
    end
    if v:find("[%z\1-\8\10-\31\127]") then
      error("api.client: header " .. k .. " has a control character (CR, LF, NUL...) in its value", 3)
    end
  end
end

-- request(method, path, {headers = {}, body = string | table (sent as JSON)})
function _M.request(method, path, opts)
  opts = opts or {}
  local body = opts.body
  if body == codec.null then body = nil end
  local headers = {}
  for k, v in pairs(type(opts.headers) == "table" and opts.headers or {}) do
    headers[k:lower()] = tostring(v)
  end
  if type(body) == "table" then
    body = codec.json_encode(body)
    headers["content-type"] = headers["content-type"] or "application/json"
  end
  body = body or ""
  check(method, path, headers)
  local lines = { method:upper() .. " " .. path .. " HTTP/1.1", "Host: localhost" }
  for k, v in pairs(headers) do
    if k ~= "host" and k ~= "content-length" then lines[#lines + 1] = k .. ": " .. v end
  end
  if #body > 0 or method:upper() == "POST" or method:upper() == "PUT" or method:upper() == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  local raw, err = core._request(concat(lines, "\r\n") .. "\r\n\r\n" .. body, method:upper() == "HEAD")
  if not raw then return nil, err end
  return parse(raw)
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
