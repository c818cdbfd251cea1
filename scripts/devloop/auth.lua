-- devloop.auth: bearer tokens and permissions (api.auth). Tokens come from a
-- JSON file: DEVLOOP_TOKENS_FILE when set, else the app's own tokens.json
-- (a demo file, for local use only):
--   {"tokens": [{"token": "...", "user": "ana", "permissions": ["UPDATE_FEATURE"]},
--               {"sha256": "<hex digest of the token>", "user": "ops", "permissions": []}]}
-- A presented token is hashed and its digest compared with every entry's in
-- constant time, so neither the comparison nor the lookup tells how much of a
-- token was right. The file is read when the app loads (each reload).
local core = require "devloop.core"
local codec = require "devloop.codec"
local crypto = require "devloop.crypto"
local options = require "devloop.options"

local type, ipairs, pairs, tostring, setmetatable = type, ipairs, pairs, tostring, setmetatable

local _M = { _VERSION = "0.1" }

local entries = {}  -- { digest = raw sha256, user = ..., permissions = sorted names, identity }

-- user table -> its entry's identity (see _M.identity); weak, so request
-- users go with their requests
local identity_of = setmetatable({}, { __mode = "k" })

local User = {}
User.__index = User
function User:has_permission(p)
  for _, have in ipairs(self.permissions) do
    if have == p then return true end
  end
  return false
end

-- a fresh table per request (handlers may change it); the sorted permission
-- list is built once, when the file is read
local function new_user(e)
  local u = setmetatable({ id = e.user, name = e.user, permissions = e.permissions }, User)
  identity_of[u] = e.identity
  return u
end

-- What a handler can tell two callers apart by: the user name and the
-- permission list (two tokens of one user with the same permissions look
-- alike to it). Length-prefixed so no two different pairs join to the same
-- text, then hashed: cache keys stay short and carry no names.
local function identity(user, perms)
  local parts = { #user, ":", user }
  for _, p in ipairs(perms) do parts[#parts + 1] = "," .. #p .. ":" .. p end
  return crypto.hex(crypto.sha256(table.concat(parts))):sub(1, 32)
end

local function fail(path, msg) return nil, path .. ": " .. msg end

local ENTRY_KEYS = { "permissions", "sha256", "token", "user" }

-- true when t is a JSON list (an object with names would be walked by
-- ipairs as empty and grant nothing)
local function is_list(t) return options.non_list_key(t) == nil end

-- parses a tokens file's text; returns the entries or nil, message
local function parse(path, text)
  local doc, jerr = codec.json_decode(text)
  if type(doc) ~= "table" or type(doc.tokens) ~= "table" then
    return fail(path, jerr or 'expected {"tokens": [...]}')
  end
  -- a misspelled top-level key (`token`, `users`) holds entries nobody
  -- reads; _comment is the note JSON has no other place for (the example's)
  local extra = {}
  for k in pairs(doc) do
    if k ~= "tokens" and k ~= "_comment" then extra[#extra + 1] = "'" .. tostring(k) .. "'" end
  end
  if #extra > 0 then
    table.sort(extra)
    return fail(path, "unknown top-level key" .. (#extra > 1 and "s " or " ") .. table.concat(extra, ", ")
                .. " (known: _comment, tokens)")
  end
  if not is_list(doc.tokens) then
    return fail(path, 'tokens must be a list [{"token": ..., "user": ..., "permissions": [...]}, ...], not an object')
  end
  local out = {}
  local seen = {} -- digest -> index of the entry that has it
  for i, t in ipairs(doc.tokens) do
    if type(t) ~= "table" then return fail(path, "tokens[" .. i .. "] is not an object") end
    -- a misspelled key (`permisions`) would silently grant nothing
    local unknown = options.unknown(t, ENTRY_KEYS, "key", "tokens[" .. i .. "]")
    if unknown then return fail(path, unknown) end
    local digest
    if t.token ~= nil and t.sha256 ~= nil then
      -- which one would count? Say so rather than pick one
      return fail(path, "tokens[" .. i .. "] has both a token and a sha256 (give one)")
    end
    if t.sha256 ~= nil and not (type(t.sha256) == "string" and #t.sha256 == 64 and t.sha256:match("^%x+$")) then
      return fail(path, "tokens[" .. i .. "].sha256 must be 64 hex digits, not " .. options.show(t.sha256))
    end
    if type(t.token) == "string" and t.token:find("[%s%c]") then
      -- a bearer token is one word: one with a space or a control could never match
      return fail(path, "tokens[" .. i .. "].token holds a space or a control character")
    elseif type(t.token) == "string" and t.token ~= "" then
      digest = crypto.sha256(t.token)
    elseif type(t.sha256) == "string" and t.sha256:match("^%x+$") and #t.sha256 == 64 then
      digest = crypto.unhex(t.sha256)
    else
      return fail(path, "tokens[" .. i .. "] needs a token or a 64-digit hex sha256")
    end
    if type(t.user) ~= "string" or t.user == "" then
      return fail(path, "tokens[" .. i .. "] needs a user")
    end
    if seen[digest] then
      -- the first would win and the second's user and permissions never apply
      return fail(path, "tokens[" .. i .. "] has the same token as tokens[" .. seen[digest] .. "]")
    end
    seen[digest] = i
    if t.permissions ~= nil and (type(t.permissions) ~= "table" or not is_list(t.permissions)) then
      return fail(path, "tokens[" .. i .. "].permissions must be a list of permission names, not "
                  .. options.show(t.permissions))
    end
    local set, list = {}, {}
    for _, p in ipairs(t.permissions or {}) do
      if type(p) ~= "string" then return fail(path, "tokens[" .. i .. "]: permissions are strings") end
      if not set[p] then set[p], list[#list + 1] = true, p end
    end
    table.sort(list)
    out[#out + 1] = { digest = digest, user = t.user, permissions = codec.array(list),
                      identity = identity(t.user, list) }
  end
  return out
end

-- Reads the configured file as the app loads; _use() switches to it once the
-- load succeeded. A missing default file means no tokens (every protected
-- route answers 401); a broken file fails the load, with the file named.
function _M._read()
  local env = os.getenv("DEVLOOP_TOKENS_FILE")
  local path = env and env ~= "" and env or (core.app_dir() .. "/tokens.json")
  local f, why = io.open(path, "rb")
  if not f then
    if env and env ~= "" then
      -- io.open says "PATH: reason"
      why = tostring(why):match(": ([^:]*)$") or tostring(why)
      error("DEVLOOP_TOKENS_FILE " .. path .. ": cannot be read: " .. why, 0)
    end
    return {}, nil
  end
  local text, rerr = f:read("*a")
  f:close()
  if text == nil then
    -- fopen takes a directory; only the read fails
    if tostring(rerr):find("directory") then error(path .. ": is a directory, not a tokens file", 0) end
    error(path .. ": cannot be read: " .. tostring(rerr), 0)
  end
  local list, err = parse(path, text or "")
  if not list then error(err, 0) end
  return list
end

function _M._use(list) entries = list end

-- The user of a token string, or nil. Every entry is compared, always.
function _M.lookup(token)
  if type(token) ~= "string" or token == "" then return nil end
  local digest = crypto.sha256(token)
  local found
  for _, e in ipairs(entries) do
    if crypto.equal(digest, e.digest) and not found then found = e end
  end
  return found and new_user(found) or nil
end

-- The token of an Authorization header "Bearer TOKEN" (scheme in any case),
-- or nil
local function bearer_of(h)
  if type(h) ~= "string" then return nil end
  local scheme, token = h:match("^(%a+)%s+(%S+)%s*$")
  if not scheme or scheme:lower() ~= "bearer" then return nil end
  return token
end

-- api.auth.bearer(req): the bearer token the request presents, or nil
function _M.bearer(req) return bearer_of(req.headers.authorization) end

-- api.auth.equal(presented, expected): true when two tokens are the same
-- string, in time that tells nothing about how much of them matched or how
-- long the expected one is: both are hashed and the digests compared with
-- CRYPTO_memcmp. Anything but two strings is false. For an app's own secrets
-- (the built-in routes' token uses it); tokens.json entries go through
-- lookup().
function _M.equal(presented, expected)
  if type(presented) ~= "string" or type(expected) ~= "string" then return false end
  return crypto.equal(crypto.sha256(presented), crypto.sha256(expected))
end

-- The request's user from its Authorization header (cached on the request),
-- or nil
function _M.user(req)
  local u = req._user
  if u == nil then
    u = _M.lookup(bearer_of(req.headers.authorization)) or false
    req._user = u
    if u then req.user = u end
  end
  return u or nil
end

-- Who the caller is, for keys that must keep callers apart (the route
-- cache): nil when the request has no Authorization header, the caller's
-- identity (32 hex digits: user and permissions hashed) when it presents one
-- of our tokens, false when it presents anything else (another scheme, an
-- unknown token: credentials this library cannot tell apart).
function _M.identity(req)
  if req.headers.authorization == nil then return nil end
  local u = _M.user(req)
  return u and identity_of[u] or false
end

local function deny(req, status, msg)
  local headers = status == 401 and { ["WWW-Authenticate"] = 'Bearer realm="devloop"' } or nil
  return status, { error = status == 401 and "Unauthorized" or "Forbidden", message = msg,
                   requestId = req.id }, headers
end

-- nil when the token grants need, else the status and message of the refusal
local function refusal(u, need)
  if not u then return 401, "a valid bearer token is required" end
  if need ~= true and not u:has_permission(need) then
    return 403, "permission " .. need .. " is required"
  end
end

-- (raised at the app's line, however it reached here: a route's auth
-- option or a direct api.auth.protect call)
local function check_need(need)
  if need ~= true and (type(need) ~= "string" or need == "") then
    options.fail("auth must be true or a permission name (a string), not " .. options.show(need))
  end
end

-- wraps a handler: need is true (any valid token) or a permission name
function _M.protect(need, handler)
  check_need(need)
  return function(req, ...)
    local status, msg = refusal(_M.user(req), need)
    if status then return deny(req, status, msg) end
    return handler(req, ...)
  end
end

-- The same check on an Authorization header alone, for a request whose body
-- has not been read yet (runtime/http1/conn.c answers it on the head alone, with
-- or without Expect: 100-continue, HTTP/1.1 and HTTP/2): status, message or nil.
function _M.precheck(need)
  check_need(need)
  return function(authz)
    return refusal(_M.lookup(bearer_of(authz)), need)
  end
end

return _M
