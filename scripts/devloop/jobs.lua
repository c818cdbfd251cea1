-- devloop.jobs: the job queue (api.jobs). Jobs are documents in the app's
-- document store (collection "_jobs": SQLite by default, MongoDB with
-- MONGO_URI), so they survive restarts. Every state move is one atomic
-- find_one_and_update, so two workers (or processes) never claim the same
-- attempt. Each worker runs a scheduler task that claims jobs by priority
-- (high before normal before low, each with its own concurrency) and runs
-- their processors (jobs/TYPE.lua) as tasks. Active jobs hold a lease that
-- their worker renews; a job whose process died is reclaimed when its lease
-- runs out (at-least-once: a processor should be idempotent by job id).
local core = require "devloop.core"
local codec = require "devloop.codec"
local db = require "devloop.db"

local null = codec.null
local floor, tostring, type, pcall, setmetatable, pairs = math.floor, tostring, type, pcall,
  setmetatable, pairs

local _M = { _VERSION = "0.1" }

local PRIORITIES = { high = 0, normal = 1, low = 2 }
local PRIORITY_NAMES = { [0] = "high", [1] = "normal", [2] = "low" }
local LEASE_MS = tonumber(os.getenv("DEVLOOP_JOB_LEASE_MS") or "") or 30000

_M.concurrency = { high = 10, normal = 5, low = 2 } -- per process, split across workers
_M.poll_ms = 50
_M.keep_completed_ms = 3600000 -- a completed job's result stays readable this long

local jobs = db.define("_jobs", {
  indexes = { { "prank", "run_at" }, { "state", "lease_until" }, { "owner", "state" } },
})

local processors = {}
function _M._set_processors(t) processors = t end
function _M.processor(type_) return processors[type_] end

local function now_ms() return floor(core.now() * 1000) end

local function new_id()
  -- time-ordered, unique: milliseconds + worker + counter + random
  _M._seq = (_M._seq or 0) + 1
  return string.format("job-%013d-%02d-%06d-%04x", now_ms(), core.worker_id() % 100,
    _M._seq % 1000000, math.random(0, 0xffff))
end

-- api.jobs.add(type, data, {priority, attempts, backoff, delay, remove_on_complete, job_id})
function _M.add(type_, data, opts)
  if type(type_) ~= "string" or type_ == "" then return nil, "job type must be a string", "EINVAL" end
  opts = opts or {}
  local prank = PRIORITIES[opts.priority or "normal"]
  if not prank then return nil, "priority must be high, normal or low", "EINVAL" end
  local attempts = opts.attempts or 3
  if type(attempts) ~= "number" or attempts < 1 then return nil, "attempts must be >= 1", "EINVAL" end
  local backoff = opts.backoff or { type = "exponential", delay = 5000 }
  if type(backoff) == "number" then backoff = { type = "fixed", delay = backoff } end
  if backoff.type ~= "exponential" and backoff.type ~= "fixed" then
    return nil, "backoff type must be exponential or fixed", "EINVAL"
  end
  local now = now_ms()
  local delay = opts.delay or 0
  local doc = {
    _id = opts.job_id and tostring(opts.job_id) or new_id(),
    type = type_, data = data == nil and null or data,
    priority = PRIORITY_NAMES[prank], prank = prank,
    state = delay > 0 and "delayed" or "waiting",
    run_at = now + delay, attempts = attempts, attempts_made = 0,
    backoff = { type = backoff.type, delay = backoff.delay or 5000 },
    remove_on_complete = opts.remove_on_complete ~= false,
    created_at = now, progress = 0,
  }
  local ok, err, code = jobs:insert_one(doc)
  if not ok then
    if code == "EDUPKEY" then return doc._id end -- idempotent add by job_id
    return nil, err, code
  end
  return doc._id
end

local function view(j)
  if not j then return nil end
  return {
    id = j._id, type = j.type, state = j.state, priority = j.priority,
    attempts_made = j.attempts_made, attempts = j.attempts, data = j.data,
    result = j.result == nil and null or j.result, error = j.error == nil and null or j.error,
    progress = j.progress,
    timestamps = { created = j.created_at, started = j.started_at or null,
                   finished = j.finished_at or null, next_run = j.run_at },
  }
end

function _M.get(id)
  local j, err = jobs:find_one({ _id = tostring(id) })
  if err then return nil, err end
  return view(j)
end

function _M.remove(id) return jobs:delete_one({ _id = tostring(id) }) end

function _M.counts()
  local out = { by_priority = {} }
  for _, st in ipairs({ "waiting", "delayed", "active", "completed", "failed" }) do
    out[st] = jobs:count({ state = st }) or 0
  end
  for name, rank in pairs(PRIORITIES) do
    out.by_priority[name] = {
      waiting = jobs:count({ prank = rank, state = { ["$in"] = { "waiting", "delayed" } } }) or 0,
      active = jobs:count({ prank = rank, state = "active" }) or 0,
    }
  end
  return out
end

---------------------------------------------------------------------------
-- the scheduler (one per worker)
---------------------------------------------------------------------------
local owner
local active = { [0] = 0, [1] = 0, [2] = 0 }
_M.paused = os.getenv("DEVLOOP_JOBS_PAUSED") == "1"
function _M.pause() _M.paused = true end
function _M.resume() _M.paused = false end

local Job = {}
Job.__index = Job
function Job:progress(n)
  self._progress = n
  jobs:update_one({ _id = self.id, owner = owner }, { ["$set"] = { progress = n } })
end

local hooks = {} -- metrics, set by init.lua
function _M._set_hooks(h) hooks = h end

local function backoff_ms(j)
  local b = j.backoff or {}
  local d = b.delay or 5000
  if b.type == "fixed" then return d end
  return d * 2 ^ ((j.attempts_made or 1) - 1)
end

local function run_job(j, rank)
  local t0 = core.now()
  local fn = processors[j.type]
  local ok, res, err
  if not fn then
    ok, err = false, "no processor for job type '" .. tostring(j.type) .. "'"
  else
    local job = setmetatable({ id = j._id, type = j.type, data = j.data,
                               attempts_made = j.attempts_made, priority = j.priority }, Job)
    ok, res, err = pcall(fn, j.data, job)
    if ok and res == nil and err ~= nil then ok = false end -- nil, err fails the attempt
    if not ok and err == nil then err = res end
  end
  local now = now_ms()
  local secs = core.now() - t0
  if ok then
    local set = { state = "completed", result = res == nil and null or res, finished_at = now,
                  error = null, owner = null }
    if j.remove_on_complete then set.expire_at = now + _M.keep_completed_ms end
    jobs:update_one({ _id = j._id, owner = owner }, { ["$set"] = set })
    core.log(0, "job completed", { id = j._id, type = j.type, attempts = j.attempts_made })
    if hooks.done then hooks.done(j.type, true, secs) end
  else
    local msg = tostring(err)
    local set
    if j.attempts_made < j.attempts then
      set = { state = "delayed", run_at = now + backoff_ms(j), error = msg, owner = null }
    else
      set = { state = "failed", error = msg, finished_at = now, owner = null }
    end
    jobs:update_one({ _id = j._id, owner = owner }, { ["$set"] = set })
    core.log(3, "job failed", { id = j._id, type = j.type, attempt = j.attempts_made,
                                attempts = j.attempts, error = msg, final = set.state == "failed" })
    if hooks.done then hooks.done(j.type, false, secs) end
  end
  active[rank] = active[rank] - 1
end

local function claim(rank, now)
  return jobs:find_one_and_update(
    { prank = rank, state = { ["$in"] = { "waiting", "delayed" } }, run_at = { ["$lte"] = now } },
    { ["$set"] = { state = "active", owner = owner, lease_until = now + LEASE_MS, started_at = now },
      ["$inc"] = { attempts_made = 1 } },
    { sort = { { "run_at", 1 }, { "_id", 1 } } })
end

local function limits(workers)
  local l = {}
  for name, rank in pairs(PRIORITIES) do
    l[rank] = math.max(1, math.ceil((_M.concurrency[name] or 1) / workers))
  end
  return l
end

function _M._run_scheduler(workers)
  owner = string.format("w%d-%d-%04x", core.worker_id(), floor(core.now() * 1000) % 1e9,
    math.random(0, 0xffff))
  local last_house = 0
  local api = require "devloop"
  while true do
    local now = now_ms()
    if now - last_house >= 1000 then
      last_house = now
      -- renew our leases; reclaim jobs whose owner stopped renewing (a dead
      -- process); drop completed jobs past their keep time
      jobs:update_many({ owner = owner, state = "active" },
        { ["$set"] = { lease_until = now + LEASE_MS } })
      if core.worker_id() == 0 then
        jobs:update_many({ state = "active", lease_until = { ["$lt"] = now } },
          { ["$set"] = { state = "waiting", run_at = now, owner = null } })
        jobs:delete_many({ state = "completed", expire_at = { ["$lt"] = now } })
        if hooks.gauges then hooks.gauges() end
      end
    end
    local started = 0
    if not _M.paused then
      local lim = limits(workers)
      for rank = 0, 2 do
        while active[rank] < lim[rank] do
          local j = claim(rank, now)
          if not j then break end
          active[rank] = active[rank] + 1
          started = started + 1
          core._spawn(run_job, j, rank)
        end
      end
    end
    if started == 0 then api.sleep(_M.poll_ms) end
  end
end

return _M
