-- devloop.tasks: the handler helpers that run tasks (coroutines) on the
-- worker's loop: api.sleep, api.parallel, api.with_timeout.
local core = require "devloop.core"
local options = require "devloop.options"

local type, error, select, unpack = type, error, select, unpack

local M = {}

-- the longest wait (a day): the bound of core.sleep
local MAX_MS = core.MAX_SLEEP_MS


-- Suspends the calling handler for ms milliseconds; the loop keeps serving.
local core_sleep = core.sleep
function M.sleep(ms)
  if type(ms) ~= "number" or not (ms >= 0 and ms <= MAX_MS) then
    error("api.sleep: ms must be a number of milliseconds from 0 to " .. MAX_MS .. ", not "
          .. options.show(ms), 2)
  end
  return core_sleep(ms)
end

-- Runs each function in its own coroutine at the same time and returns their
-- first results in order (Promise.all); the first error is raised here.
function M.parallel(...)
  local n = select("#", ...)
  if n == 0 then return end
  local ok, res = core._parallel(...)
  if not ok then error(res, 0) end
  return unpack(res, 1, n)
end

-- Runs fn with a deadline: returns true, fn's first result when it ends in
-- time, or false, "timeout" (fn runs on, detached; its end is ignored).
function M.with_timeout(ms, fn)
  -- the bound of api.sleep: the C timer takes whole milliseconds, and a
  -- float past its range (1e30) would not convert
  if type(ms) ~= "number" or not (ms >= 0 and ms <= MAX_MS) then
    error("api.with_timeout: ms must be a number of milliseconds from 0 to " .. MAX_MS .. ", not "
          .. options.show(ms), 2)
  end
  if type(fn) ~= "function" then
    error("api.with_timeout: fn must be a function, not " .. options.show(fn), 2)
  end
  return core._race(ms, fn)
end

return M
