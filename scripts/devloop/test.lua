-- devloop.test: the handler test harness behind `devloop test APP_DIR`. A
-- test file (APP_DIR/tests/*.lua) declares tests; each runs as a task in the
-- app's worker with an in-process client (no socket), a fresh embedded store
-- for the file, and a fake clock:
--   local t = require "devloop.test"
--   t.test("ping answers", function()
--     local r = t.get("/api/ping")
--     t.eq(r.status, 200)
--     t.ok(r.json.pong, "pong is set")
--   end)
-- t.get/post/put/patch/delete/head(path, [body,] {headers = {...}}) return
-- {status, headers (lower-case names), body, json}; t.advance(ms) moves the
-- clock that api.now(), the in-process cache TTLs and job retry delays see.
-- A failed assertion names the test file's line.
local core = require "devloop.core"
local client = require "devloop.client"
local codec = require "devloop.codec"

local _M = { _VERSION = "0.1" }

local tests = {}

function _M.test(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("t.test(name, function) expected", 2)
  end
  tests[#tests + 1] = { name = name, fn = fn }
end

for _, m in ipairs({ "get", "head", "delete", "options", "post", "put", "patch", "request" }) do
  _M[m] = client[m]
end
local advanced = 0 -- ms the clock moved during the current test (not its run time)
function _M.advance(ms)
  core._advance(ms)
  advanced = advanced + ms
end
_M.sleep = core.sleep

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local s = codec.json_encode(v)
    if s then return s end
  end
  return tostring(v)
end

local function deep_eq(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- assertions raise at the caller's line (level 2)
function _M.ok(v, msg)
  if not v then error((msg or "expected a true value") .. ", got " .. show(v), 2) end
  return v
end
function _M.eq(got, want, msg)
  if not deep_eq(got, want) then
    error((msg and msg .. ": " or "") .. "expected " .. show(want) .. ", got " .. show(got), 2)
  end
end
function _M.ne(got, other, msg)
  if deep_eq(got, other) then
    error((msg and msg .. ": " or "") .. "expected something other than " .. show(other), 2)
  end
end
function _M.match(s, pattern, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    error((msg and msg .. ": " or "") .. "expected " .. show(s) .. " to match " .. show(pattern), 2)
  end
end
function _M.fails(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error", 2) end
  if pattern and not tostring(err):find(pattern) then
    error("expected an error matching " .. show(pattern) .. ", got " .. show(tostring(err)), 2)
  end
end

-- Runs one test file (called by the runtime when DEVLOOP_TEST_FILE is set);
-- prints one line per test and writes "passed failed" to DEVLOOP_TEST_RESULT.
-- start_failures: the messages of on_start hooks that failed or ran past
-- DEVLOOP_START_TIMEOUT_MS, each a failure of the file (its tests still run).
function _M._run_file(path, tap, start_failures)
  tests = {}
  local out = io.stdout
  local passed, failed = 0, 0
  start_failures = start_failures or {}
  local nstart = #start_failures
  -- the start failures come first: TAP numbers them 1..nstart
  local function report_start()
    for i, msg in ipairs(start_failures) do
      if tap then out:write(string.format("not ok %d - on_start hook\n# %s\n", i, msg))
      else out:write("FAIL " .. msg .. "\n") end
    end
    failed = failed + nstart
  end
  local chunk, err = loadfile(path)
  local ok, lerr = false, err
  if chunk then ok, lerr = pcall(chunk) end
  if not ok then
    report_start()
    out:write((tap and ("not ok " .. (nstart + 1) .. " - ") or "FAIL ") .. "load " .. path .. "\n# "
              .. tostring(lerr) .. "\n")
    failed = failed + 1
  else
    if tap then out:write("1.." .. (#tests + nstart) .. "\n") end
    report_start()
    local short = path:match("([^/]+)$")
    for i, tc in ipairs(tests) do
      local t0 = core.now()
      advanced = 0
      local tok, terr = xpcall(tc.fn, core._error_text)
      local ms = (core.now() - t0) * 1000 - advanced
      if tok then
        passed = passed + 1
        if tap then out:write(string.format("ok %d - %s\n", nstart + i, tc.name))
        else out:write(string.format("ok   %s: %s (%.1f ms)\n", short, tc.name, ms)) end
      else
        failed = failed + 1
        if tap then out:write(string.format("not ok %d - %s\n# %s\n", nstart + i, tc.name, terr))
        else out:write(string.format("FAIL %s: %s\n     %s\n", short, tc.name, terr)) end
      end
    end
  end
  out:flush()
  local rf = os.getenv("DEVLOOP_TEST_RESULT")
  if rf then
    local f = io.open(rf, "w")
    if f then f:write(passed, " ", failed, "\n") f:close() end
  end
  core._stop()
end

return _M
