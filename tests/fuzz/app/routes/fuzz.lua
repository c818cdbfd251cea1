-- Routes of the fuzz app. Every answer carries X-Echo: the method, the raw
-- path in hex and the body length the handler saw, so the harness can tell
-- which request an answer belongs to (pipelined answers must keep order).
-- Tables are answered as JSON with sorted keys (canon below): the encoder
-- follows Lua's table order, which differs from one run of an input to the
-- next, and the harness compares runs byte for byte.
local api = require "devloop"
local codec = require "devloop.codec"

local EMPTY_ARRAY_MT = getmetatable(codec.array({}))

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function canon(v, depth)
  if type(v) ~= "table" then
    return assert(codec.json_encode(v))
  end
  depth = (depth or 0) + 1
  assert(depth <= 100, "nesting too deep to answer")
  local keys, n = {}, 0
  for k in pairs(v) do
    n = n + 1
    keys[n] = k
  end
  local array = getmetatable(v) == EMPTY_ARRAY_MT
  if not array and n > 0 then
    array = true
    for i = 1, n do
      if v[i] == nil then array = false break end
    end
  end
  local out = {}
  if array then
    for i = 1, #v do out[i] = canon(v[i], depth) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  for i = 1, n do keys[i] = tostring(keys[i]) end
  table.sort(keys)
  for i = 1, n do
    local k = keys[i]
    local val = v[k]
    if val == nil then val = v[tonumber(k)] end
    out[i] = assert(codec.json_encode(k)) .. ":" .. canon(val, depth)
  end
  return "{" .. table.concat(out, ",") .. "}"
end

local function answer(req, n, t)
  return 200, canon(t), {
    ["Content-Type"] = "application/json",
    ["X-Echo"] = req.method .. " " .. hex(req.path) .. " " .. n,
  }
end

api.get("/hello", function(req)
  return 200, "hello\n", { ["X-Echo"] = req.method .. " " .. hex(req.path) .. " " .. #req.raw_body }
end)

-- the body as the codecs decoded it (JSON, MessagePack, a form) is echoed back
api.post("/echo", function(req)
  return answer(req, #req.raw_body, { length = #req.raw_body, body = req.body })
end)

api.get("/items/:id", function(req)
  return answer(req, #req.raw_body, { id = req.params.id, query = req.query })
end)

api.route("*", "/any/:a/:b", function(req)
  return answer(req, #req.raw_body, { a = req.params.a, b = req.params.b, headers = req.headers })
end)

-- multipart bodies streamed to files (upload.c): the body length is not kept
api.post("/upload", { upload = { max_bytes = 1024 } }, function(req)
  local files = {}
  for i, f in ipairs(req.files) do files[i] = { field = f.field, size = f.size } end
  return answer(req, "-", { files = files, fields = req.body })
end)
