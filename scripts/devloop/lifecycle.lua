-- devloop.lifecycle: what happens around a load of the app and after it.
-- Each load (first load, reload) begins, then ends or aborts; after the first
-- load and every reload the generation's indexes and job scheduler are
-- applied; after the first load the on_start hooks run. Also the table of
-- built-in routes (api.builtin_routes), reset at each load.
local core = require "devloop.core"
local metrics_core = require "devloop.metrics_core"
local options = require "devloop.options"
local db = require "devloop.db"
local jobs = require "devloop.jobs"
local auth = require "devloop.auth"
local metrics = require "devloop.metrics"
local timer = require "devloop.timer"
local pubsub = require "devloop.pubsub"
local ratelimit = require "devloop.ratelimit"

local type, error, setmetatable = type, error, setmetatable

local M = {}

-- jobs/TYPE.lua processors of the generation being loaded; jobs already
-- running keep the function they started with
local loading_processors = {}
function M.register_processor(type_, fn) loading_processors[type_] = fn end

local scheduler_started = false -- the job scheduler runs in this worker
function M.scheduler_started() return scheduler_started end

-- Start hooks run once per worker after the app first loads, each in its own
-- task (they may use db, cache, sleep): seeding, index creation, warm-up.
local start_hooks = {}
local defined_at = options.defined_at
local function duration(ms)
  return ms % 1000 == 0 and string.format("%ds", ms / 1000) or string.format("%dms", ms)
end
function M.on_start(fn)
  if type(fn) ~= "function" then error("on_start needs a function", 2) end
  start_hooks[#start_hooks + 1] = fn
end
-- Where the built-in routes live (false disables one; token protects all).
-- api.builtin_routes checks each assignment at the app's line: a misspelled
-- key (`metrix = false`) would otherwise leave /metrics public, and a bad
-- value would only fail inside routes/observability.lua.
local BUILTIN_KEYS = { "health", "metrics", "stats", "stats_full", "token" }
local function builtin_check(k, v, level)
  local err
  if k == "metrics" or k == "health" or k == "stats" then
    if v ~= false and (type(v) ~= "string" or v:sub(1, 1) ~= "/") then
      err = "api.builtin_routes." .. k .. " must be a path starting with / or false, not " .. options.show(v)
    end
  elseif k == "token" then
    if v ~= false and (type(v) ~= "string" or v == "") then
      err = "api.builtin_routes.token must be a non-empty string or false, not " .. options.show(v)
    elseif v and v:find("[%s%c]") then
      -- a bearer token is one word: this one could never be presented
      err = "api.builtin_routes.token must not hold spaces or control characters"
    end
  elseif k == "stats_full" then
    if type(v) ~= "boolean" then
      err = "api.builtin_routes.stats_full must be true or false, not " .. options.show(v)
    end
  else
    err = "unknown api.builtin_routes key '" .. tostring(k) .. "' (known: "
          .. table.concat(BUILTIN_KEYS, ", ") .. ")"
  end
  if err then error(err, level + 1) end
end
local function builtin_defaults()
  local values = { metrics = "/metrics", health = "/health", stats = "/stats", token = false }
  return setmetatable({}, {
    __index = values,
    __newindex = function(_, k, v)
      builtin_check(k, v, 2)
      values[k] = v
    end,
  })
end
local builtin_routes = builtin_defaults()
-- Installs api.builtin_routes on the API table: `api.builtin_routes = { ... }`
-- as a whole is checked key by key too.
function M.attach(api)
  setmetatable(api, {
    __index = function(_, k) if k == "builtin_routes" then return builtin_routes end end,
    __newindex = function(t, k, v)
      if k ~= "builtin_routes" then return rawset(t, k, v) end
      if type(v) ~= "table" then
        error("api.builtin_routes must be a table, not " .. options.show(v), 2)
      end
      local fresh = builtin_defaults()
      for key, value in pairs(v) do
        builtin_check(key, value, 2)
        rawget(getmetatable(fresh), "__index")[key] = value
      end
      builtin_routes = fresh
    end,
  })
end

local loading_tokens
function M.begin_load()
  start_hooks = {}
  builtin_routes = builtin_defaults()
  loading_processors = {}
  timer._begin_load()
  pubsub._begin_load()
  db._begin_load()
  ratelimit._begin_load()
  -- last: a broken tokens file raises, and the resets above must have run
  loading_tokens = auth._read()
end
-- called when a load succeeded (the C side only switches generations then)
function M.end_load()
  jobs._set_processors(loading_processors)
  auth._use(loading_tokens)
  db._end_load()
  timer._end_load()
  pubsub._end_load()
end
-- called when a load failed: the serving generation's declarations stay
function M.abort_load()
  timer._abort_load()
  pubsub._abort_load()
  db._abort_load()
end

-- What a generation declares that lives outside the Lua state: its indexes
-- (one worker creates them for the whole process) and, once there are job
-- processors, the job scheduler. Runs after the first load and every reload.
local function apply_generation(when)
  timer._start_pending()
  pubsub._start_pending()
  if core.worker_id() == 0 then
    local ok, err = db.ensure_indexes()
    if not ok and db.type() then
      core.log(core.LOG_ERROR, "cannot create indexes (" .. when .. "): " .. tostring(err))
    end
  end
  -- the job scheduler runs in apps that have job processors
  local has_jobs = false
  for _ in pairs(loading_processors) do has_jobs = true break end
  if has_jobs and not scheduler_started then
    scheduler_started = true
    local workers = metrics_core.process().workers
    local completed = metrics.counter("jobs_completed_total", "Jobs completed", { "type" })
    local failed = metrics.counter("jobs_failed_total", "Job attempts that failed", { "type" })
    local dur = metrics.histogram("job_duration_seconds", "Job attempt run time", { "type" },
      { 0.01, 0.05, 0.1, 0.5, 1, 5, 30 })
    local waiting = metrics.gauge("jobs_waiting", "Jobs waiting or delayed", { "priority" })
    local activeg = metrics.gauge("jobs_active", "Jobs running", { "priority" })
    jobs._set_hooks({
      done = function(t, ok2, secs)
        if ok2 then completed:inc({ t }) else failed:inc({ t }) end
        dur:observe({ t }, secs)
      end,
      gauges = function()
        local c = jobs.counts()
        for name, v in pairs(c.by_priority) do
          waiting:set({ name }, v.waiting)
          activeg:set({ name }, v.active)
        end
      end,
    })
    core._spawn(jobs._run_scheduler, workers)
  end
end
function M.run_reload() apply_generation("reload") end
function M.run_start()
  apply_generation("start")
  -- each hook in a task of its own under DEVLOOP_START_TIMEOUT_MS (core._guard),
  -- with every task it starts (api.parallel, api.with_timeout):
  -- under `devloop test` its whole run counts (the tests wait for it), under
  -- serve only a stretch without yielding (that holds the worker)
  local test_file = os.getenv("DEVLOOP_TEST_FILE")
  local limit = core._guard()
  local failures = {}
  for _, fn in ipairs(start_hooks) do
    local label = defined_at(fn)
    local function run()
      if limit > 0 then core._guard(label, test_file ~= nil) end
      fn()
    end
    local ok2, e
    if test_file and limit > 0 then
      -- a hook that yields forever: the timer ends the wait (it runs on, detached)
      ok2, e = core._race(limit, run)
      if not ok2 and e == "timeout" then
        e = label .. ": on_start hook did not finish within " .. duration(limit)
      end
    else
      ok2, e = core._parallel(run)
    end
    if not ok2 then
      e = core._error_text(e)
      core.log(core.LOG_ERROR, "start hook failed: " .. e)
      failures[#failures + 1] = e:match("^[^\n]*")
    end
  end
  -- `devloop test`: this process runs one test file once the app started
  if test_file and core.worker_id() == 0 then
    require("devloop.test")._run_file(test_file, os.getenv("DEVLOOP_TEST_TAP") == "1", failures)
  end
end

return M
