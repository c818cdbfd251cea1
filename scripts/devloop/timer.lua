-- devloop.timer: api.timer.every(ms, fn[, opts]) and api.timer.after(ms, fn[, opts]).
-- Each run is a task of its own (fn may yield: db, cache, http, sleep), on
-- one worker (opts.workers = "one", the default: worker 0) or on each
-- ("all"). A timer declared while the app loads belongs to that load: it
-- starts when the load is switched in and stops when a reload replaces it
-- (the new code declares its own); one made later (from a handler) runs on
-- the worker that made it and belongs to the generation serving then. A run that raises is logged with the
-- timer's file and line and the timer goes on. `every` waits ms after the
-- end of a run before the next (runs never overlap). t:cancel() stops it.
-- At most MAX_TIMERS per worker; /stats lists them.
local core = require "devloop.core"
local options = require "devloop.options"

local type, error, floor, min = type, error, math.floor, math.min

local M = {}

local MAX_TIMERS = 256
-- the longest interval (a day: core.sleep's bound)
local MAX_MS = core.MAX_SLEEP_MS
-- a sleeping timer looks at its cancellation this often (a reload cancels
-- an hourly timer without leaving the old code alive for an hour)
local SLICE_MS = 1000

local loading = nil -- the timers a load in progress declared
local serving = {} -- the timers of the generation serving (and later ones)
local pending = {} -- switched in, to start once the worker applies the load

local Timer = {}
Timer.__index = Timer

local defined_at = options.defined_at

local function run(t)
  local ok, err = core._parallel(t.fn)
  t.runs = t.runs + 1
  if not ok then
    t.failures = t.failures + 1
    local e = core._error_text(err)
    t.last_error = e:match("^[^\n]*")
    -- a timer failing every millisecond logs once a second, not every run
    local now = core.now()
    if not t.logged_at or now - t.logged_at >= 1 then
      local quiet = t.failures - (t.logged_failures or 0) - 1
      core.log(core.LOG_ERROR, "timer " .. t.where .. " failed (it goes on"
        .. (quiet > 0 and (", " .. quiet .. " more failures not logged") or "") .. "): " .. e)
      t.logged_at, t.logged_failures = now, t.failures
    end
  end
end

-- The timer's task: sleeps in slices, runs, and ends when cancelled.
local function loop(t)
  repeat
    local left = t.ms
    while left > 0 do
      if t.cancelled then return end
      local step = min(left, SLICE_MS)
      core.sleep(step)
      left = left - step
    end
    if t.cancelled then return end
    run(t)
  until t.kind == "after" or t.cancelled
  t.done = true
end

local function start(t, here)
  if not here and t.workers == "one" and core.worker_id() ~= 0 then
    t.here = false -- listed, but it runs on worker 0
    return
  end
  t.here = true
  core._spawn(function() loop(t) end)
end

-- the live timers (ended and cancelled ones are dropped here)
local function count()
  local live = {}
  for _, t in ipairs(serving) do
    if not t.cancelled and not t.done then live[#live + 1] = t end
  end
  serving = live
  return #serving + (loading and #loading or 0)
end

local function new(kind, ms, fn, opts)
  if type(ms) ~= "number" or not (ms >= 1 and ms <= MAX_MS) or ms % 1 ~= 0 then
    options.fail("api.timer." .. kind .. ": ms must be a whole number of milliseconds from 1 to "
                 .. MAX_MS .. ", not " .. options.show(ms))
  end
  if type(fn) ~= "function" then
    options.fail("api.timer." .. kind .. ": fn must be a function, not " .. options.show(fn))
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      options.fail("api.timer." .. kind .. ": opts must be a table { workers }, not "
                   .. options.show(opts))
    end
    options.check(opts, { "workers" }, "api.timer option")
    if opts.workers ~= nil and opts.workers ~= "one" and opts.workers ~= "all" then
      options.fail("api.timer option workers must be \"one\" or \"all\", not "
                   .. options.show(opts.workers))
    end
  end
  -- a load counts its own timers only: the ones it replaces (and those
  -- handlers made) stop when it is switched in, and must not fail it
  if (loading and #loading or count()) >= MAX_TIMERS then
    options.fail("api.timer." .. kind .. ": more than " .. MAX_TIMERS .. " timers")
  end
  local t = setmetatable({ kind = kind, ms = floor(ms), fn = fn, where = defined_at(fn),
                           workers = opts and opts.workers or "one", runs = 0, failures = 0 },
                         Timer)
  if loading then
    loading[#loading + 1] = t
  else
    serving[#serving + 1] = t
    start(t, true) -- made while serving: on the worker that made it
  end
  return t
end

function M.every(ms, fn, opts) return new("every", ms, fn, opts) end
function M.after(ms, fn, opts) return new("after", ms, fn, opts) end

function Timer:cancel()
  self.cancelled = true
end

-- lifecycle.lua: a load begins, is switched in, or fails
function M._begin_load() loading = {} end
function M._end_load()
  for _, t in ipairs(serving) do t.cancelled = true end
  serving = loading or {}
  pending = serving
  loading = nil
end
-- the serving worker applies the load (lifecycle.run_start, run_reload);
-- a VM that only checks the app never gets here
function M._start_pending()
  local list = pending
  pending = {}
  for _, t in ipairs(list) do
    if not t.cancelled then start(t) end
  end
end
function M._abort_load() loading = nil end

-- /stats: this worker's timers
function M.list()
  local out = {}
  for _, t in ipairs(serving) do
    if not t.cancelled and not t.done then
      out[#out + 1] = { kind = t.kind, ms = t.ms, where = t.where, workers = t.workers,
                        here = t.here, runs = t.runs, failures = t.failures,
                        last_error = t.last_error }
    end
  end
  return out
end

return M
