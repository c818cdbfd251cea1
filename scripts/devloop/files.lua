-- devloop.files: uploaded files kept by the app (api.files). A route with the
-- upload option gets its multipart files streamed to temporary files
-- (req.files: field, filename, content_type, size, sha256, path); save()
-- keeps one: with MongoDB (MONGO_URI) in the GridFS bucket "uploads", else in
-- APP_DIR/data/files/ID with its metadata in the document store (collection
-- _files). serve() answers with the bytes from disk (a GridFS file is first
-- copied to a temporary file, deleted as soon as it is open), with ETag,
-- If-None-Match and single byte ranges (206, 416).
local core = require "devloop.core"
local crypto = require "devloop.crypto"
local db = require "devloop.db"
local db_core = require "devloop.db_core"

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

-- A file name safe to store and to echo in a header: the last path
-- component, without control characters, quotes or backslashes, at most 200
-- bytes; "file" when nothing is left.
function _M.sanitize(name)
  name = tostring(name or "")
  name = name:match("([^/\\]*)$") or ""
  name = name:gsub("[%c\"\\]", ""):gsub("^[%s%.]+", ""):gsub("%s+$", "")
  if #name > 200 then
    local ext = name:match("(%.[%w]+)$") or ""
    name = name:sub(1, 200 - #ext) .. ext
  end
  if name == "" then name = "file" end
  return name
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
-- offset, length; 404 JSON for an unknown id.
function _M.serve(req, id)
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
  local headers = {
    ["Content-Type"] = m.content_type or "application/octet-stream",
    ["ETag"] = etag,
    ["Accept-Ranges"] = "bytes",
    ["Cache-Control"] = "private, max-age=0, must-revalidate",
    ["Content-Disposition"] = 'inline; filename="' .. (m.filename or "file") .. '"',
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
