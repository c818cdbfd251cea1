-- devloop.http: api.http, the outbound HTTP/1.1 client. Each call parks only
-- the calling request's coroutine; connections are kept per worker and
-- origin (devloop.http_core over runtime/outbound/).
--   local res, err = api.http.request(url, opts)
--   api.http.get(url, opts), api.http.post(url, body, opts), put, patch, delete
-- opts: method, headers, body (string) or json (table) or msgpack (table)
-- or body_file (a path: the file is sent from disk a piece at a time),
-- query (table), timeout (ms, the whole exchange, default 10000),
-- connect_timeout (ms), max_body (bytes, default 16 MiB), redirects (how
-- many to follow, default 0), decode (default true: gzip and deflate asked
-- for and decoded), stream (the body read piece by piece with res:read(),
-- as it comes: compression is not asked for),
-- tls = { verify = true, ca = FILE, server_name = NAME }.
-- res: status, headers (lower-case names; repeated ones joined with ", ",
-- set-cookie a list), body, json (decoded when the type is JSON, else nil).
-- err starts with its kind: timeout, connect, dns, tls, protocol, too large,
-- invalid.
local core = require "devloop.http_core"
local codec = require "devloop.codec"
local clog = require("devloop.core").log
local LOG_WARN = require("devloop.core").LOG_WARN

local type, pairs, ipairs, tostring, setmetatable, pcall = type, pairs, ipairs, tostring,
  setmetatable, pcall
local rawget, rawset = rawget, rawset
local sort, concat, format, byte = table.sort, table.concat, string.format, string.byte
local upper, lower, find, sub, gsub, match = string.upper, string.lower, string.find, string.sub,
  string.gsub, string.match
local request = core.request
local json_decode, json_encode = codec.json_decode, codec.json_encode

local _M = { _VERSION = "0.1" }

local MAX_REDIRECTS = 20

-- ------------------------------------------------------------ query

local function escape(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

local function scalar(v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" then return tostring(v) end
  return nil, "invalid: query value of " .. what .. " must be a string, number or boolean, not " .. t
end

-- The query table as "a=1&b=x&b=y", keys sorted so that equal tables give
-- equal URLs (and cache keys upstream).
local function encode_query(q)
  local keys = {}
  for k in pairs(q) do
    if type(k) ~= "string" then return nil, "invalid: query keys must be strings" end
    keys[#keys + 1] = k
  end
  sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" and next(v) ~= nil and #v == 0 then
      return nil, "invalid: query value of " .. k .. " must be a scalar or a list of them"
    end
    if type(v) == "table" then
      for i = 1, #v do
        local s, err = scalar(v[i], k)
        if not s then return nil, err end
        out[#out + 1] = escape(k) .. "=" .. escape(s)
      end
    else
      local s, err = scalar(v, k)
      if not s then return nil, err end
      out[#out + 1] = escape(k) .. "=" .. escape(s)
    end
  end
  return concat(out, "&")
end

-- -------------------------------------------------------- responses

local JSON_TYPE = "^%s*application/[%w%.%-]*%+?json%s*[;]?"

local Response = {}
-- res.json is decoded on first use, once
Response.__index = function(res, k)
  if k == "json" and not rawget(res, "_json_tried") then
    rawset(res, "_json_tried", true)
    local ct = res.headers["content-type"]
    if res.body and type(ct) == "string" and find(lower(ct), JSON_TYPE) then
      local ok, decoded = pcall(json_decode, res.body)
      if ok then
        rawset(res, "json", decoded)
        return decoded
      end
    end
    return nil
  end
  return Response[k]
end
-- streamed: the next piece of the body, nil at its end, or nil, err
function Response.read(res)
  local s = rawget(res, "stream")
  if not s then return nil, "invalid: the response was not streamed" end
  return s:read()
end
function Response.close(res)
  local s = rawget(res, "stream")
  if s then s:close() end
end

-- ------------------------------------------------------------ requests

local function origin_of(url)
  local scheme, rest = match(url, "^(%a[%w+.-]*)://([^/?#]*)")
  return scheme and (lower(scheme) .. "://" .. lower(rest)) or nil
end

-- The Location of a redirect, made absolute against base (RFC 3986 5.2, the
-- cases a server sends).
local function resolve(base, loc)
  if match(loc, "^%a[%w+.-]*:") then return loc end
  local scheme, auth = match(base, "^(%a[%w+.-]*)://([^/?#]*)")
  if sub(loc, 1, 2) == "//" then return scheme .. ":" .. loc end
  if sub(loc, 1, 1) == "/" then return scheme .. "://" .. auth .. loc end
  local path = match(base, "^%a[%w+.-]*://[^/?#]*([^?#]*)") or "/"
  local dir = match(path, "^(.*/)") or "/"
  if sub(loc, 1, 1) == "?" then return scheme .. "://" .. auth .. path .. loc end
  return scheme .. "://" .. auth .. dir .. loc
end

local warned_noverify = false

local NO_OPTS = {} -- read only: a call without opts allocates nothing for them

-- every option there is: a misspelt one (timout) is refused, not ignored
local KNOWN = {
  method = true, headers = true, body = true, json = true, msgpack = true, body_file = true,
  query = true, timeout = true, connect_timeout = true, max_body = true, redirects = true,
  decode = true, stream = true, tls = true,
}
local BOOLEAN = { decode = true, stream = true }

-- why opts cannot be used, or nil
local function bad_opts(opts)
  for k, v in pairs(opts) do
    if not KNOWN[k] then
      return "invalid: unknown option " .. (type(k) == "string" and format("%q", k) or tostring(k))
    end
    if BOOLEAN[k] and type(v) ~= "boolean" then
      return "invalid: opts." .. k .. " must be true or false, not " .. type(v)
    end
  end
end

-- One request: opts as given, with the method, body or json of the
-- shorthand calls (api.http.get/post/...) taking the place of opts' own.
local function send(url, opts, method, body, json)
  if type(url) ~= "string" then
    return nil, "invalid: url must be a string, got " .. type(url)
  end
  if opts == nil then opts = NO_OPTS end
  if type(opts) ~= "table" then
    return nil, "invalid: opts must be a table, got " .. type(opts)
  end
  if opts ~= NO_OPTS then
    local why = bad_opts(opts)
    if why then return nil, why end
  end
  if not method then -- the shorthand calls pass theirs upper-case already
    method = opts.method or "GET"
    if type(method) ~= "string" then return nil, "invalid: opts.method must be a string" end
    method = upper(method)
  end
  local headers = opts.headers
  if headers ~= nil and type(headers) ~= "table" then
    return nil, "invalid: opts.headers must be a table"
  end
  if body == nil and json == nil then
    body, json = opts.body, opts.json
  elseif opts.body ~= nil or opts.json ~= nil then
    return nil, "invalid: a body given both as an argument and in opts"
  end
  if json ~= nil and opts.msgpack ~= nil then
    return nil, "invalid: opts.json and opts.msgpack together"
  end
  local ctype
  if body ~= nil and type(body) ~= "string" then
    return nil, "invalid: opts.body must be a string (use opts.json or opts.msgpack for a table)"
  end
  if opts.body_file ~= nil and (body ~= nil or json ~= nil or opts.msgpack ~= nil) then
    return nil, "invalid: opts.body_file and another body together"
  end
  if json ~= nil then
    if body ~= nil then return nil, "invalid: opts.body and opts.json together" end
    local ok, enc, why = pcall(json_encode, json)
    if not ok or type(enc) ~= "string" then
      return nil, "invalid: opts.json cannot be encoded: " .. tostring(ok and why or enc)
    end
    body, ctype = enc, "application/json"
  elseif opts.msgpack ~= nil then
    if body ~= nil then return nil, "invalid: opts.body and opts.msgpack together" end
    local ok, enc, why = pcall(codec.msgpack_encode, opts.msgpack)
    if not ok or type(enc) ~= "string" then
      return nil, "invalid: opts.msgpack cannot be encoded: " .. tostring(ok and why or enc)
    end
    body, ctype = enc, "application/msgpack"
  end
  if ctype then
    local has = false
    if headers then
      for k in pairs(headers) do
        if type(k) == "string" and lower(k) == "content-type" then has = true end
      end
    end
    if not has then
      local h = { ["Content-Type"] = ctype }
      if headers then for k, v in pairs(headers) do h[k] = v end end
      headers = h
    end
  end
  if opts.query ~= nil then
    if type(opts.query) ~= "table" then return nil, "invalid: opts.query must be a table" end
    local q, err = encode_query(opts.query)
    if not q then return nil, err end
    if q ~= "" then
      local base, frag = match(url, "^([^#]*)(.*)$")
      url = base .. (find(base, "?", 1, true) and "&" or "?") .. q .. frag
    end
  end
  local redirects = opts.redirects or 0
  if type(redirects) ~= "number" or redirects < 0 or redirects % 1 ~= 0 then
    return nil, "invalid: opts.redirects must be a whole number >= 0"
  end
  if redirects > MAX_REDIRECTS then redirects = MAX_REDIRECTS end
  local tls = opts.tls
  if type(tls) == "table" and tls.verify == false and not warned_noverify then
    warned_noverify = true
    clog(LOG_WARN, "api.http: a request with tls.verify = false: the server's certificate "
      .. "is not checked (logged once per worker)")
  end

  local first_origin = redirects > 0 and origin_of(url)
  -- what the C side reads (timeouts, tls, body_file); none: nothing to look up
  local copts = opts ~= NO_OPTS and opts or nil
  local left = redirects
  while true do
    local status, rheaders, rbody = request(method, url, headers, body, copts)
    if not status then return nil, rheaders end
    local loc = redirects > 0 and rheaders.location
    if type(loc) == "string" and (status == 301 or status == 302
        or status == 303 or status == 307 or status == 308) then
      if opts.stream and rbody then rbody:close() end
      -- following was asked for: a chain longer than allowed is an error,
      -- never its last 3xx passed off as the answer
      if left == 0 then
        return nil, "protocol: more than " .. tostring(redirects) .. " redirects (the last to "
          .. sub(loc, 1, 80) .. ")"
      end
      left = left - 1
      local next_url = resolve(url, loc)
      local scheme = lower(match(next_url, "^(%a[%w+.-]*):") or "")
      if scheme ~= "http" and scheme ~= "https" then
        return nil, "invalid: redirect to a " .. (scheme ~= "" and scheme or "relative")
          .. " URL refused (" .. sub(next_url, 1, 80) .. ")"
      end
      -- RFC 9110 15.4: 303 turns any method but HEAD into GET; 301 and 302
      -- turn POST into GET (what clients do); 307 and 308 keep both
      if (status == 303 and method ~= "HEAD") or ((status == 301 or status == 302)
          and method == "POST") then
        method, body = "GET", nil
        if copts and copts.body_file ~= nil then
          copts = {}
          for k, v in pairs(opts) do copts[k] = v end
          copts.body_file = nil
        end
        if headers then
          local h = {}
          for k, v in pairs(headers) do
            if type(k) ~= "string" or lower(k) ~= "content-type" then h[k] = v end
          end
          headers = h
        end
      end
      -- credentials go to the origin they were meant for only, and a Host
      -- the caller set names that origin, not the next one
      if origin_of(next_url) ~= first_origin and headers then
        local h = {}
        for k, v in pairs(headers) do
          local lk = type(k) == "string" and lower(k) or ""
          if lk ~= "authorization" and lk ~= "cookie" and lk ~= "proxy-authorization"
              and lk ~= "host" then
            h[k] = v
          end
        end
        headers = h
      end
      url = next_url
    else
      local res = { status = status, headers = rheaders, url = url }
      if opts.stream then res.stream = rbody else res.body = rbody end
      return setmetatable(res, Response)
    end
  end
end

function _M.request(url, opts) return send(url, opts) end

local function no_body(method)
  return function(url, opts) return send(url, opts, method) end
end

-- post(url, body, opts): body a string (sent as is) or a table (as JSON)
local function with_body(method)
  return function(url, body, opts)
    if type(body) == "table" then return send(url, opts, method, nil, body) end
    return send(url, opts, method, body)
  end
end

_M.get = no_body("GET")
_M.head = no_body("HEAD")
_M.delete = no_body("DELETE")
_M.post = with_body("POST")
_M.put = with_body("PUT")
_M.patch = with_body("PATCH")

return _M
