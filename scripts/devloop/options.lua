-- devloop.options: the one check of the option tables the Lua API takes
-- (route options, cache, upload, schemas, batch, jobs, files.serve). A key
-- the API does not know is an error naming it and the known ones, never a
-- silent default (a misspelled `auht` would leave a route open).
--
--   options.check(opts, { "auth", "cache" }, "route option")   -- raises
--   local err = options.unknown(opts, { "priority" }, "option") -- returns it
local type, pairs, tostring, error, sort, concat = type, pairs, tostring, error, table.sort, table.concat
local getinfo = debug.getinfo

local _M = { _VERSION = "0.1" }

-- the chunk names of the library's own files start with this: "=[devloop]/"
-- embedded, or DEVLOOP_SCRIPTS_DIR's path
local LIB = getinfo(1, "S").source:gsub("options%.lua$", "")

-- nil, or "unknown <what> 'k'[ in <where>] (known: a, b, c)" for the first
-- unknown key in sorted order (the same key is named on every run)
function _M.unknown(tbl, known, what, where)
  if type(tbl) ~= "table" then return nil end
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  local bad = {}
  for k in pairs(tbl) do
    if not set[k] then bad[#bad + 1] = tostring(k) end
  end
  if #bad == 0 then return nil end
  sort(bad)
  local names = {}
  for i, k in ipairs(known) do names[i] = k end
  sort(names)
  return "unknown " .. what .. " '" .. bad[1] .. "'" .. (where and " in " .. where or "")
    .. " (known: " .. concat(names, ", ") .. ")"
end

-- The level, for error(), of the first function outside the library: the
-- app's line that declared the route or the schema, however many library
-- frames lie between (api.route -> add -> here). 0 (no position) when no
-- app frame is left: `return api.files.serve(...)` is a tail call, and a
-- library line would only mislead.
local function app_level()
  local level = 3 -- the caller of fail's caller
  while true do
    local info = getinfo(level, "S")
    if not info then return 0 end
    local src = info.source
    if info.what ~= "C" and src:sub(1, #LIB) ~= LIB then return level - 1 end
    level = level + 1
  end
end

-- a value as a message shows it: "yes" (quoted), 5, true, a table
function _M.show(v)
  local t = type(v)
  if t == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return "a " .. t
end

-- raises msg at the app's line
function _M.fail(msg)
  error(msg, app_level())
end

-- raises the unknown-key error at the app's line
function _M.check(tbl, known, what, where)
  local err = _M.unknown(tbl, known, what, where)
  if err then error(err, app_level()) end
end

-- The first key that keeps t from being a list (keys exactly 1..#t), or nil:
-- a map walked by ipairs is silently empty.
function _M.non_list_key(t)
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return k end
  end
end

-- "app.lua:12": where fn is defined, relative to the app folder (the name
-- start hooks and timers go by in the log)
function _M.defined_at(fn)
  local info = getinfo(fn, "S")
  local src = info.source:gsub("^[=@]", "")
  local dir = require("devloop.core").app_dir()
  if dir ~= "" and src:sub(1, #dir + 1) == dir .. "/" then src = src:sub(#dir + 2) end
  return src .. ":" .. tostring(info.linedefined)
end

return _M
