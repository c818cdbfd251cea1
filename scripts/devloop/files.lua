-- devloop.files: uploaded files kept by the app (api.files). A route with the
-- upload option gets its multipart files streamed to temporary files
-- (req.files: field, filename, content_type, size, sha256, path); save()
-- keeps one: with MongoDB (MONGO_URI) in the GridFS bucket "uploads", else in
-- APP_DIR/data/files/ID with its metadata in the document store (collection
-- _files). serve() answers with the bytes from disk (a GridFS file is first
-- copied to a temporary file, deleted as soon as it is open), with ETag,
-- If-None-Match and single byte ranges (206, 416).
--
-- The type and name a file came with are the uploader's, so serve() never
-- trusts them: files go out as attachments (Content-Disposition per RFC 6266
-- and RFC 8187), under Content-Security-Policy: sandbox; a type a browser
-- runs (HTML, XHTML, SVG, XML, JavaScript, CSS and the like: every text/*
-- but text/plain and text/csv, every *xml* / *html* / *script* type,
-- multipart/*, message/*) goes out as application/octet-stream; only the
-- safe list (raster images, PDF, plain text) may be sent inline, and only
-- when the app asks for it (serve(req, id, { inline = true })).
local core = require "devloop.core"
local crypto = require "devloop.crypto"
local db = require "devloop.db"
local db_core = require "devloop.db_core"
local options = require "devloop.options"

local type, tostring, tonumber, floor = type, tostring, tonumber, math.floor

local _M = { _VERSION = "0.1" }

local meta_coll = db.collection("_files")

local function files_dir()
  local d = core.app_dir() .. "/data"
  core.mkdir(d)
  d = d .. "/files"
  core.mkdir(d)
  return d
end

local hex = crypto.hex

-- C1 controls (U+0080..U+009F) and the invisible characters that reorder or
-- break what a user reads (U+061C, U+200E..U+200F, U+2028..U+202E,
-- U+2066..U+2069: "invoice\u{202E}fdp.exe" shows as "invoiceexe.pdf")
local INVISIBLE = { "\194[\128-\159]", "\216\156", "\226\128[\142\143\168-\174]",
                    "\226\129[\166-\169]" }

-- A file name safe to store and to echo in a header: the last path
-- component, without control characters (C0, DEL, C1), reordering
-- characters, quotes or backslashes, at most 200 bytes (cut between UTF-8
-- sequences); "file" when nothing is left.
function _M.sanitize(name)
  name = tostring(name or "")
  name = name:match("([^/\\]*)$") or ""
  name = name:gsub("[%c\"\\]", "")
  for _, p in ipairs(INVISIBLE) do name = name:gsub(p, "") end
  name = name:gsub("^[%s%.]+", ""):gsub("%s+$", "")
  if #name > 200 then
    local ext = name:match("(%.[%w]+)$") or ""
    if #ext > 16 then ext = "" end -- a long "extension" is part of the name: cut it too
    local n = 200 - #ext
    -- never cut inside a UTF-8 sequence: back up to the start of the one cut
    while n > 0 and (name:byte(n + 1) or 0) >= 0x80 and name:byte(n + 1) < 0xC0 do n = n - 1 end
    name = name:sub(1, n) .. ext
  end
  if name == "" then name = "file" end
  return name
end

-- Well-formed UTF-8 (no overlong forms, surrogates or code points past
-- U+10FFFF): what filename*=UTF-8'' may declare.
local function utf8_ok(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local need, lo, hi = 0, 0x80, 0xBF
    if c < 0x80 then need = 0
    elseif c >= 0xC2 and c <= 0xDF then need = 1
    elseif c >= 0xE0 and c <= 0xEF then
      need = 2
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      need = 3
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else
      return false
    end
    for k = 1, need do
      local b = s:byte(i + k)
      if not b or b < (k == 1 and lo or 0x80) or b > (k == 1 and hi or 0xBF) then return false end
    end
    i = i + need + 1
  end
  return true
end

-- RFC 8187 3.2.1 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"; the rest is %XX
local function pct(c) return string.format("%%%02X", c:byte()) end

-- The Content-Disposition value for a file called name (RFC 6266): kind
-- "attachment" (the default) or "inline", then filename="..." with an ASCII
-- fallback (each non-ASCII character, quote, backslash, percent sign and
-- semicolon becomes "_") and, when the name is not plain ASCII,
-- filename*=UTF-8''... with every byte outside attr-char percent-encoded. The
-- name is sanitised first, so nothing in it can end the header or the
-- parameter.
function _M.disposition(name, kind)
  -- a repeated query key arrives as a table: never tostring() it into a header
  if name ~= nil and type(name) ~= "string" then
    error("files.disposition: name must be a string, not a " .. type(name), 2)
  end
  if kind ~= nil and kind ~= "attachment" and kind ~= "inline" then
    error("files.disposition: kind must be \"attachment\" or \"inline\"", 2)
  end
  name = _M.sanitize(name)
  local fallback = name:gsub("[\192-\247][\128-\191]*", "_"):gsub("[\128-\255]", "_")
                       :gsub("[\"\\%%;]", "_")
  local v = (kind or "attachment") .. '; filename="' .. fallback .. '"'
  if fallback ~= name and utf8_ok(name) then
    v = v .. "; filename*=UTF-8''" .. name:gsub("[^%w!#$&+%-%.%^_`|~]", pct)
  end
  return v
end

-- The essence of a media type ("type/subtype", lower case) and its charset
-- parameter when it has a plain one; nil when ct is not a media type.
local TOKEN = "[%w!#$&'*+%-%.%^_`|~]+"
local function media_type(ct)
  if type(ct) ~= "string" then return nil end
  local essence, rest = ct:match("^%s*(" .. TOKEN .. "/" .. TOKEN .. ")%s*(.*)$")
  if not essence or (rest ~= "" and rest:sub(1, 1) ~= ";") then return nil end
  local charset = rest:lower():match("^;%s*charset%s*=%s*\"?([%w%-_%.:]+)\"?%s*$")
  return essence:lower(), charset
end

-- Types a browser never runs as a page or a script, served with their own
-- Content-Type (as attachments unless also in INLINE_SAFE).
local APP_ACTIVE = { ["x-shockwave-flash"] = true, ["futuresplash"] = true,
                     ["vnd.adobe.flash.movie"] = true, ["x-mimearchive"] = true,
                     ["hta"] = true, ["x-silverlight-app"] = true, ["java-vm"] = true }
local function inert(t)
  local major, minor = t:match("^([^/]+)/(.+)$")
  if minor:find("xml", 1, true) or minor:find("html", 1, true) or minor:find("script", 1, true)
     or minor:find("svg", 1, true) then
    return false
  end
  if major == "image" or major == "audio" or major == "video" or major == "font" then
    return true
  end
  if major == "text" then return minor == "plain" or minor == "csv" end
  if major == "application" then return not APP_ACTIVE[minor] end
  return false -- multipart, message, model and anything new
end

-- What may be sent inline at all: raster images, PDF, plain text.
local INLINE_SAFE = { ["image/png"] = true, ["image/jpeg"] = true, ["image/gif"] = true,
                      ["image/webp"] = true, ["image/avif"] = true, ["image/bmp"] = true,
                      ["image/apng"] = true, ["image/x-icon"] = true,
                      ["image/vnd.microsoft.icon"] = true, ["application/pdf"] = true,
                      ["text/plain"] = true }

-- Content-Type, disposition kind and Content-Security-Policy for a stored
-- type, given serve()'s inline option (nil/false, true, or a list of types).
local function policy(stored, inline)
  local t, charset = media_type(stored)
  if not t or not inert(t) then
    return "application/octet-stream", "attachment", "sandbox"
  end
  local ct = t
  if charset and t:sub(1, 5) == "text/" then ct = t .. "; charset=" .. charset end
  local kind = "attachment"
  if inline == true then
    if INLINE_SAFE[t] then kind = "inline" end
  elseif type(inline) == "table" then
    for _, want in ipairs(inline) do
      if (media_type(want)) == t then kind = "inline" break end
    end
  end
  -- Chrome refuses to render a PDF in a sandbox: the viewer is its own
  return ct, kind, not (kind == "inline" and t == "application/pdf") and "sandbox" or nil
end

-- Keeps an uploaded file (an entry of req.files); returns its metadata
-- {id, filename, contentType, size, sha256, created_at} or nil, err.
local function gridfs() return db_core.has_files() end

function _M.save(f)
  if type(f) ~= "table" or type(f.path) ~= "string" then
    return nil, "files.save needs an entry of req.files", "EINVAL"
  end
  if gridfs() then
    local name = _M.sanitize(f.filename)
    local id, err, code = db_core.call("file_put", f.path, name, f.content_type, f.sha256)
    if not id then return nil, err, code end
    return { id = id, filename = name, contentType = f.content_type, size = f.size,
             sha256 = f.sha256, created_at = floor(core.now() * 1000) }
  end
  local id = "f-" .. hex(crypto.random(12))
  local dest = files_dir() .. "/" .. id
  local ok, err = os.rename(f.path, dest)
  if not ok then return nil, "cannot keep the upload: " .. tostring(err), "EIO" end
  local meta = { _id = id, filename = _M.sanitize(f.filename), content_type = f.content_type,
                 size = f.size, sha256 = f.sha256, created_at = floor(core.now() * 1000) }
  local ins, ierr, code = meta_coll:insert_one(meta)
  if not ins then
    os.remove(dest)
    return nil, ierr, code
  end
  return { id = id, filename = meta.filename, contentType = meta.content_type, size = meta.size,
           sha256 = meta.sha256, created_at = meta.created_at }
end

function _M.get(id)
  if type(id) ~= "string" or not id:match("^f%-%x+$") then return nil end
  return meta_coll:find_one({ _id = id })
end

-- GridFS: the file copied to a temporary path, and its metadata; nil if unknown
local function fetch(id)
  if type(id) ~= "string" or not id:match("^%x+$") or #id ~= 24 then return nil end
  local dir = core.app_dir() .. "/data"
  core.mkdir(dir)
  dir = dir .. "/.uploads"
  core.mkdir(dir)
  local tmp = dir .. "/get-" .. hex(crypto.random(8)) .. ".part"
  local m, err, code = db_core.call("file_get", id, tmp)
  if not m then
    os.remove(tmp)
    if code == "ENOENT" then return nil end
    error(err, 0)
  end
  return tmp, { _id = m.id, filename = m.filename, content_type = m.content_type,
                size = m.size, sha256 = m.sha256 }
end

-- Deletes a kept file and its metadata; true if it existed.
function _M.remove(id)
  if gridfs() then
    local n = db_core.call("file_remove", tostring(id))
    return (tonumber(n) or 0) > 0
  end
  local m = _M.get(id)
  if not m then return false end
  os.remove(files_dir() .. "/" .. m._id)
  meta_coll:delete_one({ _id = m._id })
  return true
end

-- one "bytes=" range of a file of size bytes: offset, length; nil when the
-- header is absent, malformed or asks for several ranges (then the whole file
-- goes out, RFC 9110 14.2); false when unsatisfiable
local function parse_range(h, size)
  if type(h) ~= "string" then return nil end
  local a, b = h:match("^%s*bytes%s*=%s*(%d*)%s*%-%s*(%d*)%s*$")
  if not a or (a == "" and b == "") then return nil end
  if a == "" then -- the last b bytes
    local n = tonumber(b)
    if n == 0 or size == 0 then return false end
    n = math.min(n, size)
    return size - n, n
  end
  local first = tonumber(a)
  if first >= size then return false end
  local last = b == "" and size - 1 or math.min(tonumber(b), size - 1)
  if last < first then return nil end
  return first, last - first + 1
end

-- The response for GET of a kept file: status, path, headers, FILE_BODY,
-- offset, length; 404 JSON for an unknown id. opts.inline: true sends a
-- type of the safe list (INLINE_SAFE) inline, a list of types narrows that
-- further; anything else always goes out as an attachment.
local SERVE_KEYS = { "inline" }
function _M.serve(req, id, opts)
  local inline
  if opts ~= nil then
    if type(opts) ~= "table" then error("files.serve: opts must be a table", 2) end
    options.check(opts, SERVE_KEYS, "files.serve option")
    inline = opts.inline
    if type(inline) == "table" then
      for _, want in ipairs(inline) do
        if not INLINE_SAFE[media_type(want) or ""] then
          error("files.serve: " .. tostring(want) .. " cannot be served inline", 2)
        end
      end
    elseif inline ~= nil and type(inline) ~= "boolean" then
      error("files.serve: opts.inline must be a boolean or a list of types", 2)
    end
  end
  local path, m, temporary
  if gridfs() then
    path, m = fetch(id)
    temporary = true
  else
    m = _M.get(id)
    path = m and files_dir() .. "/" .. m._id
  end
  if not m then
    return 404, { error = "Not Found", message = "no file " .. tostring(id), requestId = req.id }
  end
  local etag = '"' .. (m.sha256 or m._id):sub(1, 32) .. '"'
  local ctype, kind, csp = policy(m.content_type, inline)
  local headers = {
    ["Content-Type"] = ctype,
    ["ETag"] = etag,
    ["Accept-Ranges"] = "bytes",
    ["Cache-Control"] = "private, max-age=0, must-revalidate",
    ["Content-Disposition"] = _M.disposition(m.filename, kind),
    ["Content-Security-Policy"] = csp,
  }
  local inm = req.headers["if-none-match"]
  if inm and (inm == etag or inm == "*" or inm:find(etag, 1, true)) then
    if temporary then os.remove(path) end
    return 304, nil, headers
  end
  local size = m.size or 0
  local off, len = parse_range(req.headers.range, size)
  local ifr = req.headers["if-range"]
  if off ~= nil and ifr and ifr ~= etag then off = nil end -- changed: the whole file
  if off == false then
    if temporary then os.remove(path) end
    headers["Content-Range"] = "bytes */" .. size
    headers["Content-Type"] = nil -- the answer is a JSON error
    return 416, { error = "Range Not Satisfiable", message = "the file has " .. size .. " bytes",
                  requestId = req.id }, headers
  end
  if off then
    headers["Content-Range"] = string.format("bytes %d-%d/%d", off, off + len - 1, size)
    return 206, path, headers, core.FILE_BODY, off, len, temporary
  end
  return 200, path, headers, core.FILE_BODY, 0, size, temporary
end

return _M
