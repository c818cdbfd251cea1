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

-- the API table, looked up once: devloop requires this module, so not at load
local devloop
local function lib()
  devloop = devloop or require "devloop"
  return devloop
end

local PRIORITIES = { high = 0, normal = 1, low = 2 }
local PRIORITY_NAMES = { [0] = "high", [1] = "normal", [2] = "low" }
local LEASE_MS = tonumber(os.getenv("DEVLOOP_JOB_LEASE_MS") or "") or 30000

_M.concurrency = { high = 10, normal = 5, low = 2 } -- per process, split across workers
_M.poll_ms = 50
_M.keep_completed_ms = 3600000 -- a completed job's result stays readable this long

-- queue_at is run_at while a job waits and absent otherwise, so the claim
-- index (prank, queue_at) holds only claimable jobs: a claim is one seek, not
-- a walk past every finished job
-- (created by the scheduler, so apps without jobs get no _jobs table)
local jobs = db.collection("_jobs")
local JOB_INDEXES = { { "prank", "queue_at" }, { "state", "lease_until" }, { "owner", "state" } }

local processors = {}
function _M._set_processors(t) processors = t end
function _M.processor(type_) return processors[type_] end

local function now_ms() return floor(core.now() * 1000) end

local function new_id()
  -- time-ordered, unique: milliseconds + worker + counter + random
  _M._seq = (_M._seq or 0) + 1
  return string.format("job-%013d-%02d-%06d-%04x%04x", now_ms(), core.worker_id() % 100,
    _M._seq % 1000000, math.random(0, 0xffff), math.random(0, 0xffff))
end

---------------------------------------------------------------------------
-- backend: the document store (SQLite / MongoDB)
---------------------------------------------------------------------------
local store = {}

function store.add(doc)
  doc.queue_at = doc.run_at
  local ok, err, code = jobs:insert_one(doc)
  if not ok then
    if code == "EDUPKEY" then return doc._id end -- idempotent add by job_id
    return nil, err, code
  end
  return doc._id
end

function store.add_many(docs)
  for _, d in ipairs(docs) do d.queue_at = d.run_at end
  local ids, err, code = jobs:insert_many(docs)
  if not ids then return nil, err, code end
  return ids
end

function store.get(id) return jobs:find_one({ _id = id }) end
function store.remove(id) return jobs:delete_one({ _id = id }) end

function store.counts()
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

function store.claim(rank, now, owner_, lease)
  return jobs:find_one_and_update(
    { prank = rank, queue_at = { ["$lte"] = now } },
    { ["$set"] = { state = "active", owner = owner_, lease_until = now + lease, started_at = now },
      ["$inc"] = { attempts_made = 1 }, ["$unset"] = { queue_at = 1 } },
    { sort = { { "queue_at", 1 }, { "_id", 1 } } })
end

function store.claim_many(rank, now, owner_, lease, n)
  local out = {}
  for _ = 1, n do
    local j = store.claim(rank, now, owner_, lease)
    if not j then break end
    out[#out + 1] = j
  end
  return out
end

function store.finish_many(owner_, list)
  for _, item in ipairs(list) do store.finish(item[1], owner_, item[2]) end
end

function store.finish(j, owner_, set)
  if set.state == "delayed" then set.queue_at = set.run_at end
  jobs:update_one({ _id = j._id, owner = owner_ }, { ["$set"] = set })
end
function store.progress(id, owner_, n) jobs:update_one({ _id = id, owner = owner_ }, { ["$set"] = { progress = n } }) end
function store.renew(owner_, _, until_)
  jobs:update_many({ owner = owner_, state = "active" }, { ["$set"] = { lease_until = until_ } })
end
function store.reclaim(now)
  jobs:update_many({ state = "active", lease_until = { ["$lt"] = now } },
    { ["$set"] = { state = "waiting", run_at = now, queue_at = now, owner = null } })
  jobs:delete_many({ state = "completed", expire_at = { ["$lt"] = now } })
end

---------------------------------------------------------------------------
-- backend: Redis (with REDIS_URL). A job is a hash; waiting and delayed jobs
-- sit in one sorted set per priority scored by run_at, active ones in a
-- sorted set scored by lease end. Every move is one server-side script, so
-- it is atomic across every process sharing the Redis.
---------------------------------------------------------------------------
local redis = {}
local P = "dl:jobs:"
local json_encode, json_decode = codec.json_encode, codec.json_decode

local SCRIPTS = {
  add = [[
local k = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, unpack(ARGV, 5))
redis.call('ZADD', ARGV[1] .. 'ready:' .. ARGV[3], ARGV[4], ARGV[2])
return 1]],
  claim = [[
local p, rank, now, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local ids = redis.call('ZRANGEBYSCORE', p .. 'ready:' .. rank, '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
local out = {}
for _, id in ipairs(ids) do
  local k = p .. 'job:' .. id
  redis.call('ZREM', p .. 'ready:' .. rank, id)
  if redis.call('EXISTS', k) == 1 then
    redis.call('ZADD', p .. 'active', now + lease, id)
    redis.call('HSET', k, 'state', 'active', 'owner', owner, 'lease_until', now + lease, 'started_at', now)
    redis.call('HINCRBY', k, 'attempts_made', 1)
    out[#out + 1] = redis.call('HGETALL', k)
  end
end
return out]],
  add_many = [[
local p, i, added = ARGV[1], 3, 0
for _ = 1, tonumber(ARGV[2]) do
  local id, rank, run_at, nf = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local k = p .. 'job:' .. id
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, unpack(ARGV, i + 4, i + 3 + nf))
    redis.call('ZADD', p .. 'ready:' .. rank, run_at, id)
    added = added + 1
  end
  i = i + 4 + nf
end
return added]],
  finish_many = [[
local p, owner, now, i, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), 5, 0
for _ = 1, tonumber(ARGV[4]) do
  local id, state, run_at, keep, nf = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local k = p .. 'job:' .. id
  if redis.call('HGET', k, 'owner') == owner then
    redis.call('ZREM', p .. 'active', id)
    redis.call('HSET', k, unpack(ARGV, i + 5, i + 4 + nf))
    if state == 'delayed' then
      redis.call('ZADD', p .. 'ready:' .. redis.call('HGET', k, 'prank'), run_at, id)
    else
      redis.call('ZADD', p .. state, now, id)
      if keep > 0 then redis.call('PEXPIRE', k, keep) end
    end
    n = n + 1
  end
  i = i + 5 + nf
end
return n]],
  renew = [[
local p, owner, until_ = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 4, #ARGV do
  local k = p .. 'job:' .. ARGV[i]
  if redis.call('HGET', k, 'owner') == owner then
    redis.call('ZADD', p .. 'active', until_, ARGV[i])
    redis.call('HSET', k, 'lease_until', until_)
  end
end
return 1]],
  reclaim = [[
local p, now, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', p .. 'active', '-inf', now)
for _, id in ipairs(ids) do
  local k = p .. 'job:' .. id
  redis.call('ZREM', p .. 'active', id)
  if redis.call('EXISTS', k) == 1 then
    redis.call('HSET', k, 'state', 'waiting', 'owner', '', 'run_at', now)
    redis.call('ZADD', p .. 'ready:' .. redis.call('HGET', k, 'prank'), now, id)
  end
end
redis.call('ZREMRANGEBYSCORE', p .. 'completed', '-inf', now - keep)
return #ids]],
}

local shas = {}
local function load(name)
  local api = lib()
  local s, err = api.redis.call("SCRIPT", "LOAD", SCRIPTS[name])
  if s then shas[name] = s end
  return s, err
end

local function eval(name, ...)
  local api = lib()
  local sha = shas[name]
  if sha then
    local r, err = api.redis.call("EVALSHA", sha, 0, ...)
    if r ~= nil or not (err and err:find("NOSCRIPT", 1, true)) then return r, err end
  end
  -- first use (or a Redis that lost its script cache): load it
  local s, err = load(name)
  if not s then return nil, err end
  return api.redis.call("EVALSHA", s, 0, ...)
end

local NUMERIC = { prank = true, run_at = true, attempts = true, attempts_made = true,
  created_at = true, started_at = true, finished_at = true, lease_until = true, progress = true }

local function from_hash(flat)
  if type(flat) ~= "table" or #flat == 0 then return nil end
  local j = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if NUMERIC[k] then v = tonumber(v)
    elseif k == "data" or k == "result" or k == "backoff" then v = json_decode(v)
    elseif k == "remove_on_complete" then v = v == "1" end
    j[k] = v
  end
  j._id = j.id
  if j.owner == "" then j.owner = nil end
  return j
end

local function to_args(t)
  local a = {}
  for k, v in pairs(t) do
    if k ~= "_id" then
      if k == "data" or k == "result" or k == "backoff" then v = json_encode(v)
      elseif type(v) == "boolean" then v = v and "1" or "0"
      elseif v == null then v = "" end
      a[#a + 1] = k
      a[#a + 1] = v
    end
  end
  return a
end

function redis.add(doc)
  doc.id = doc._id
  local r, err = eval("add", P, doc._id, doc.prank, doc.run_at, unpack(to_args(doc)))
  if r == nil then return nil, "jobs: redis: " .. tostring(err), "EREDIS" end
  return doc._id
end

function redis.add_many(docs)
  -- one script call per 200 jobs: Lua unpacks at most a few thousand values
  for first = 1, #docs, 200 do
    local last = math.min(first + 199, #docs)
    local args = { P, last - first + 1 }
    for i = first, last do
      local doc = docs[i]
      doc.id = doc._id
      local f = to_args(doc)
      args[#args + 1] = doc._id
      args[#args + 1] = doc.prank
      args[#args + 1] = doc.run_at
      args[#args + 1] = #f
      for k = 1, #f do args[#args + 1] = f[k] end
    end
    local r, err = eval("add_many", unpack(args))
    if r == nil then return nil, "jobs: redis: " .. tostring(err), "EREDIS" end
  end
  local ids = {}
  for i, doc in ipairs(docs) do ids[i] = doc._id end
  return ids
end

function redis.get(id)
  local api = lib()
  local r, err = api.redis.call("HGETALL", P .. "job:" .. id)
  if r == nil then return nil, err end
  return from_hash(r)
end

function redis.remove(id)
  local api = lib()
  local j = redis.get(id)
  if not j then return 0 end
  api.redis.pipeline({ { "DEL", P .. "job:" .. id }, { "ZREM", P .. "ready:" .. j.prank, id },
    { "ZREM", P .. "active", id }, { "ZREM", P .. "completed", id }, { "ZREM", P .. "failed", id } })
  return 1
end

function redis.counts()
  local api = lib()
  local now = now_ms()
  local cmds = { { "ZCARD", P .. "active" }, { "ZCARD", P .. "completed" }, { "ZCARD", P .. "failed" } }
  for rank = 0, 2 do
    cmds[#cmds + 1] = { "ZCOUNT", P .. "ready:" .. rank, "-inf", now }
    cmds[#cmds + 1] = { "ZCOUNT", P .. "ready:" .. rank, "(" .. now, "+inf" }
  end
  local r = api.redis.pipeline(cmds) or {}
  local out = { active = r[1] or 0, completed = r[2] or 0, failed = r[3] or 0, waiting = 0,
                delayed = 0, by_priority = {} }
  for rank = 0, 2 do
    local w, d = r[4 + rank * 2] or 0, r[5 + rank * 2] or 0
    out.waiting, out.delayed = out.waiting + w, out.delayed + d
    out.by_priority[PRIORITY_NAMES[rank]] = { waiting = w + d, active = 0 }
  end
  return out
end

function redis.claim_many(rank, now, owner_, lease, n)
  local r, err = eval("claim", P, rank, now, owner_, lease, n)
  if r == nil then return nil, err end
  local out = {}
  for i = 1, #r do out[i] = from_hash(r[i]) end
  return out
end

-- finishes: { {job, set}, ... } in one script call
function redis.finish_many(owner_, list)
  local now = now_ms()
  local args = { P, owner_, now, #list }
  for _, item in ipairs(list) do
    local j, set = item[1], item[2]
    local f = to_args(set)
    local keep = set.expire_at and (set.expire_at - (set.finished_at or now)) or 0
    args[#args + 1] = j._id
    args[#args + 1] = set.state
    args[#args + 1] = set.run_at or 0
    args[#args + 1] = keep
    args[#args + 1] = #f
    for k = 1, #f do args[#args + 1] = f[k] end
  end
  return eval("finish_many", unpack(args))
end

function redis.progress(id, owner_, n)
  local api = lib()
  api.redis.call("HSET", P .. "job:" .. id, "progress", n)
end

function redis.renew(owner_, ids, until_)
  if #ids == 0 then return end
  eval("renew", P, owner_, until_, unpack(ids))
end

function redis.reclaim(now) eval("reclaim", P, now, _M.keep_completed_ms) end

local backend_cache
local function backend()
  if backend_cache == nil then
    local api = lib()
    backend_cache = api.redis.configured() and redis or store
  end
  return backend_cache
end

---------------------------------------------------------------------------
-- the public API
---------------------------------------------------------------------------

-- api.jobs.add(type, data, {priority, attempts, backoff, delay, remove_on_complete, job_id})
local make_doc
function _M.add(type_, data, opts)
  local doc, err, code = make_doc(type_, data, opts)
  if not doc then return nil, err, code end
  local id
  id, err, code = backend().add(doc)
  -- this worker's scheduler looks at once instead of at its next poll
  if id and doc.state == "waiting" then core._wake() end
  return id, err, code
end

-- api.jobs.add_many(type, {data, ...}, opts) -> {id, ...}: one round trip on
-- Redis (a pipeline), one transaction on the store
function _M.add_many(type_, list, opts)
  local docs = {}
  for i, data in ipairs(list) do
    local o = opts
    if opts and opts.job_id then return nil, "add_many takes no job_id", "EINVAL" end
    local doc, err, code = make_doc(type_, data, o)
    if not doc then return nil, err, code end
    docs[i] = doc
  end
  local ids, err, code = backend().add_many(docs)
  if ids then core._wake() end
  return ids, err, code
end

make_doc = function(type_, data, opts)
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
  return {
    _id = opts.job_id and tostring(opts.job_id) or new_id(),
    type = type_, data = data == nil and null or data,
    priority = PRIORITY_NAMES[prank], prank = prank,
    state = delay > 0 and "delayed" or "waiting",
    run_at = now + delay, attempts = attempts, attempts_made = 0,
    backoff = { type = backoff.type, delay = backoff.delay or 5000 },
    remove_on_complete = opts.remove_on_complete ~= false,
    created_at = now, progress = 0,
  }
end

local function view(j)
  if not j then return nil end
  local state = j.state
  if state == "waiting" and (j.run_at or 0) > now_ms() then state = "delayed" end
  return {
    id = j._id, type = j.type, state = state, priority = j.priority,
    attempts_made = j.attempts_made, attempts = j.attempts, data = j.data,
    result = j.result == nil and null or j.result,
    error = (j.error == nil or j.error == "") and null or j.error,
    progress = j.progress,
    timestamps = { created = j.created_at, started = j.started_at or null,
                   finished = j.finished_at or null, next_run = j.run_at },
  }
end

function _M.get(id)
  local j, err = backend().get(tostring(id))
  if err then return nil, err end
  return view(j)
end

function _M.remove(id) return backend().remove(tostring(id)) end
function _M.counts() return backend().counts() end

---------------------------------------------------------------------------
-- the scheduler (one per worker)
---------------------------------------------------------------------------
local owner
local active = { [0] = 0, [1] = 0, [2] = 0 }
local running = {} -- id -> true: the leases this worker renews
-- finished attempts waiting to be written: the scheduler writes them in one
-- call (one script on Redis) before it claims again, so the moves of jobs
-- that end together cost one round trip. A crash before the write means the
-- attempt runs again once its lease ends (at-least-once).
local finishing = {}
_M.paused = os.getenv("DEVLOOP_JOBS_PAUSED") == "1"
function _M.pause() _M.paused = true end
function _M.resume() _M.paused = false end

local Job = {}
Job.__index = Job
function Job:progress(n)
  backend().progress(self.id, owner, n)
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
  running[j._id] = true
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
    finishing[#finishing + 1] = { j, set }
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
    finishing[#finishing + 1] = { j, set }
    core.log(3, "job failed", { id = j._id, type = j.type, attempt = j.attempts_made,
                                attempts = j.attempts, error = msg, final = set.state == "failed" })
    if hooks.done then hooks.done(j.type, false, secs) end
  end
  active[rank] = active[rank] - 1
  core._wake() -- a slot is free: the scheduler claims again now, not at its next poll
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
  local b = backend()
  if b == store and core.worker_id() == 0 then
    for _, ix in ipairs(JOB_INDEXES) do
      local ok, err = jobs:create_index(ix)
      if not ok then core.log(3, "jobs: cannot create an index: " .. tostring(err)) end
    end
  end
  while true do
    local now = now_ms()
    if now - last_house >= 1000 then
      last_house = now
      -- renew our leases; reclaim jobs whose owner stopped renewing (a dead
      -- process); drop completed jobs past their keep time
      local ids = {}
      for id in pairs(running) do ids[#ids + 1] = id end
      pcall(b.renew, owner, ids, now + LEASE_MS)
      if core.worker_id() == 0 then
        pcall(b.reclaim, now)
        if hooks.gauges then pcall(hooks.gauges) end
      end
    end
    if #finishing > 0 then
      local list = finishing
      finishing = {}
      local ok, err = pcall(b.finish_many, owner, list)
      if not ok then core.log(3, "jobs: cannot record finished jobs: " .. tostring(err)) end
      for _, item in ipairs(list) do running[item[1]._id] = nil end
    end
    local started = 0
    if not _M.paused then
      local lim = limits(workers)
      for rank = 0, 2 do
        local free = lim[rank] - active[rank]
        if free > 0 then
          -- as many as there are free slots, in one atomic claim
          local ok, list = pcall(b.claim_many, rank, now, owner, LEASE_MS, free)
          if ok and list then
            for _, j in ipairs(list) do
              active[rank] = active[rank] + 1
              started = started + 1
              core._spawn(run_job, j, rank)
            end
          end
        end
      end
    end
    if started == 0 then core._nap(_M.poll_ms) end
  end
end

return _M
