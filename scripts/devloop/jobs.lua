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
local options = require "devloop.options"

local null = codec.null
local floor, tostring, type, pcall, setmetatable, pairs = math.floor, tostring, type, pcall,
  setmetatable, pairs
local huge = math.huge

local _M = { _VERSION = "0.1" }

-- the API table, looked up once: devloop requires this module, so not at load
local devloop
local function lib()
  devloop = devloop or require "devloop"
  return devloop
end

local PRIORITIES = { high = 0, normal = 1, low = 2 }
local PRIORITY_NAMES = { [0] = "high", [1] = "normal", [2] = "low" }
local LEASE_MS = core._env("DEVLOOP_JOB_LEASE_MS") -- checked at start (config.c)

-- per process, split across workers; a priority the app leaves out keeps its default
local CONCURRENCY = { high = 10, normal = 5, low = 2 }
_M.concurrency = { high = 10, normal = 5, low = 2 }
_M.poll_ms = 50
_M.keep_completed_ms = 3600000 -- a completed job's result stays readable this long

-- queue_at is run_at while a job waits and absent otherwise, so the claim
-- index (prank, queue_at) holds only claimable jobs: a claim is one seek, not
-- a walk past every finished job
-- (created by the scheduler, so apps without jobs get no _jobs table)
local jobs = db.collection("_jobs")
local JOB_INDEXES = { { "prank", "queue_at" }, { "state", "lease_until" }, { "owner", "state" },
  { "state", "expire_at" } }

local processors = {}
function _M._set_processors(t) processors = t end
function _M.processor(type_) return processors[type_] end

local function now_ms() return floor(core.now() * 1000) end

local function new_id()
  -- time-ordered, unique: milliseconds + worker + counter + random
  _M._seq = (_M._seq or 0) + 1
  return string.format("job-%013d-%02d-%06d-%04x%04x%04x", now_ms(), core.worker_id() % 100,
    _M._seq % 1000000, math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff))
end

---------------------------------------------------------------------------
-- backend: the document store (SQLite / MongoDB)
---------------------------------------------------------------------------
local store = {}

function store.add(doc)
  doc.queue_at, doc.own_id = doc.run_at, nil
  local ok, err, code = jobs:insert_one(doc)
  if not ok then
    if code == "EDUPKEY" then return doc._id end -- idempotent add by job_id
    return nil, err, code
  end
  return doc._id
end

function store.add_many(docs)
  for _, d in ipairs(docs) do d.queue_at, d.own_id = d.run_at, nil end
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

local function claim_many(rank, now, owner_, lease, n)
  local out = {}
  for _ = 1, n do
    local j = store.claim(rank, now, owner_, lease)
    if not j then break end
    out[#out + 1] = j
  end
  return out
end

-- writes finished attempts (see run_job), then claims up to wants[rank] jobs
-- per priority
function store.cycle(owner_, fin, wants, now, lease)
  for _, f in ipairs(fin) do
    local set
    if f.state == "completed" then
      set = { state = "completed", result = f.result, finished_at = now, error = null, owner = null }
      if f.keep > 0 then set.expire_at = now + f.keep end
    elseif f.state == "failed" then
      set = { state = "failed", error = f.error, finished_at = now, owner = null }
    else
      set = { state = "delayed", run_at = f.run_at, queue_at = f.run_at, error = f.error, owner = null }
    end
    local ok, err, code = jobs:update_one({ _id = f.id, owner = owner_ }, { ["$set"] = set })
    if not ok and code == "EINVAL" then
      -- refused as such, not the store away: sending it again would not
      -- help, and a job left active would stay so (its lease is renewed)
      core.log(core.LOG_ERROR, "jobs: cannot record a finished attempt", { id = f.id, state = f.state, error = err })
      jobs:update_one({ _id = f.id, owner = owner_ }, { ["$set"] = { state = "failed", finished_at = now,
        owner = null, error = "cannot record the attempt: " .. tostring(err) } })
    elseif not ok then
      return nil, err, code
    end
  end
  local out = {}
  for rank = 0, 2 do
    if wants[rank] > 0 then
      local list, err = claim_many(rank, now, owner_, lease, wants[rank])
      if not list then return nil, err end
      for _, j in ipairs(list) do out[#out + 1] = j end
    end
  end
  return out
end

function store.progress(id, owner_, n) jobs:update_one({ _id = id, owner = owner_ }, { ["$set"] = { progress = n } }) end
function store.renew(owner_, _, until_)
  jobs:update_many({ owner = owner_, state = "active" }, { ["$set"] = { lease_until = until_ } })
end
function store.reclaim(now)
  local n = jobs:update_many({ state = "active", lease_until = { ["$lt"] = now } },
    { ["$set"] = { state = "waiting", run_at = now, queue_at = now, owner = null } })
  jobs:delete_many({ state = "completed", expire_at = { ["$lt"] = now } })
  return tonumber(n) or 0
end

---------------------------------------------------------------------------
-- backend: Redis (with REDIS_URL). A job is a hash: what never changes in one
-- JSON field (spec: type, data, priority, attempts, backoff, ...) and the
-- fields that move (state, attempts_made, run_at, owner, result, error, ...).
-- Waiting and delayed jobs sit in one sorted set per priority scored by
-- run_at, active ones in one per priority scored by lease end. Every move is
-- one server-side script, so it is atomic across every process sharing the
-- Redis; a scheduler's finishes and its next claim are one script call.
--
-- Faults: a script call whose reply is lost (Redis restarted, the connection
-- dropped) may or may not have run. Adds, renewals and reclaims are sent
-- again by the pool (each script does the same thing twice over: an add
-- checks that the job is not there yet). A finish is applied only to a job
-- that is still active and ours, so a cycle whose reply was lost hands its
-- finishes to the next cycle and each completion is recorded once; jobs it
-- may have claimed run when their lease ends (at-least-once).
---------------------------------------------------------------------------
local redis = {}
local P = "dl:jobs:"
local json_encode, json_decode = codec.json_encode, codec.json_decode
local unpack = unpack

local SCRIPTS = {
  -- P, n, then per job: id, rank, run_at, spec, check (1: a caller-chosen id,
  -- added once; generated ids are unique and skip the lookup)
  add = [=[
local p, n, added, z = ARGV[1], tonumber(ARGV[2]), 0, {}
for i = 3, 2 + n * 5, 5 do
  local id, rank, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = p .. 'job:' .. id
  if ARGV[i + 4] == '0' or redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'spec', ARGV[i + 3], 'prank', rank, 'state', 'waiting', 'run_at', run_at,
      'attempts_made', '0')
    local t = z[rank]
    if not t then t = {} z[rank] = t end
    t[#t + 1] = run_at
    t[#t + 1] = id
    added = added + 1
  end
end
for rank, t in pairs(z) do redis.call('ZADD', p .. 'ready:' .. rank, unpack(t)) end
return added]=],
  -- P, owner, now, lease, want high, want normal, want low, n finishes, then
  -- per finish: id, state (completed|failed|retry), value (result JSON or
  -- error), run_at (of a retry), keep (ms a completed job stays; 0 = forever).
  -- Returns the claimed jobs: id, rank, spec, attempts_made, ...
  cycle = [=[
local p, owner, now_s, lease = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = tonumber(now_s)
-- numbers become strings once here, not in every call (Redis formats Lua
-- numbers with printf)
local keeps, NEXT = {}, { ['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5' }
local i, done, zc, zf = 9, {}, {}, {}
for _ = 1, tonumber(ARGV[8]) do
  local id, state, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = p .. 'job:' .. id
  local cur = redis.call('HMGET', k, 'owner', 'prank', 'state')
  if cur[1] == owner and cur[3] == 'active' then
    local d = done[cur[2]]
    if not d then d = {} done[cur[2]] = d end
    d[#d + 1] = id
    if state == 'completed' then
      -- the owner stays (no one renews or finishes a completed job); its
      -- hash is deleted by the reclaim script once its keep time is over
      redis.call('HSET', k, 'state', state, 'result', value, 'error', '', 'finished_at', now_s)
      redis.call('HINCRBY', k, 'completions', 1)
      local keep = ARGV[i + 4]
      if keep ~= '0' then
        local until_ = keeps[keep]
        if not until_ then until_ = string.format('%.0f', now + tonumber(keep)) keeps[keep] = until_ end
        zc[#zc + 1] = until_
      else
        zc[#zc + 1] = '+inf'
      end
      zc[#zc + 1] = id
    elseif state == 'failed' then
      redis.call('HSET', k, 'state', state, 'error', value, 'finished_at', now_s)
      zf[#zf + 1] = now_s
      zf[#zf + 1] = id
    else
      redis.call('HSET', k, 'state', 'waiting', 'error', value, 'run_at', ARGV[i + 3], 'owner', '')
      redis.call('ZADD', p .. 'ready:' .. cur[2], ARGV[i + 3], id)
    end
  end
  i = i + 5
end
for rank, d in pairs(done) do redis.call('ZREM', p .. 'active:' .. rank, unpack(d)) end
if #zc > 0 then redis.call('ZADD', p .. 'completed', unpack(zc)) end
if #zf > 0 then redis.call('ZADD', p .. 'failed', unpack(zf)) end
local out, lease_end = {}, string.format('%.0f', now + lease)
for rank = 0, 2 do
  local want = tonumber(ARGV[5 + rank])
  if want > 0 then
    local rk = p .. 'ready:' .. rank
    local ids = redis.call('ZRANGEBYSCORE', rk, '-inf', now_s, 'LIMIT', 0, want)
    if #ids > 0 then
      redis.call('ZREM', rk, unpack(ids))
      local za = {}
      for _, id in ipairs(ids) do
        local k = p .. 'job:' .. id
        local v = redis.call('HMGET', k, 'spec', 'attempts_made')
        if v[1] then
          local am = NEXT[v[2]] or tostring(tonumber(v[2]) + 1)
          redis.call('HSET', k, 'state', 'active', 'owner', owner, 'started_at', now_s, 'attempts_made', am)
          za[#za + 1] = lease_end
          za[#za + 1] = id
          out[#out + 1] = id
          out[#out + 1] = rank
          out[#out + 1] = v[1]
          out[#out + 1] = am
        end
      end
      if #za > 0 then redis.call('ZADD', p .. 'active:' .. rank, unpack(za)) end
    end
  end
end
return out]=],
  -- P, owner, lease end, ids...: extends the leases this owner still holds
  renew = [=[
local p, owner, until_, z = ARGV[1], ARGV[2], ARGV[3], {}
for i = 4, #ARGV do
  local cur = redis.call('HMGET', p .. 'job:' .. ARGV[i], 'owner', 'prank')
  if cur[1] == owner then
    local t = z[cur[2]]
    if not t then t = {} z[cur[2]] = t end
    t[#t + 1] = until_
    t[#t + 1] = ARGV[i]
  end
end
for rank, t in pairs(z) do redis.call('ZADD', p .. 'active:' .. rank, 'XX', unpack(t)) end
return 1]=],
  -- P, now: jobs whose lease ran out go back to waiting; completed jobs past
  -- their keep time are deleted (up to 1,000 a call, once a second)
  reclaim = [=[
local p, now, n = ARGV[1], tonumber(ARGV[2]), 0
for rank = 0, 2 do
  local ak = p .. 'active:' .. rank
  local ids = redis.call('ZRANGEBYSCORE', ak, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(ids) do
    local k = p .. 'job:' .. id
    redis.call('ZREM', ak, id)
    if redis.call('EXISTS', k) == 1 then
      redis.call('HSET', k, 'state', 'waiting', 'owner', '', 'run_at', now)
      redis.call('ZADD', p .. 'ready:' .. rank, now, id)
      n = n + 1
    end
  end
end
local gone = redis.call('ZRANGEBYSCORE', p .. 'completed', '-inf', now, 'LIMIT', 0, 1000)
if #gone > 0 then
  local keys = {}
  for j, id in ipairs(gone) do keys[j] = p .. 'job:' .. id end
  redis.call('DEL', unpack(keys))
  redis.call('ZREM', p .. 'completed', unpack(gone))
end
return { n, #gone }]=],
}

local shas = {}
local function load(name)
  local api = lib()
  local s, err, code = api.redis.call("SCRIPT", "LOAD", SCRIPTS[name])
  if s then shas[name] = s end
  return s, err, code
end

-- the scripts the pool may send twice (see the note above)
local IDEMPOTENT = { add = true, renew = true, reclaim = true }

local function eval(name, ...)
  local api = lib()
  local send = IDEMPOTENT[name] and api.redis.idempotent or api.redis.call
  local sha = shas[name]
  if sha then
    local r, err, code = send("EVALSHA", sha, 0, ...)
    if r ~= nil or not (err and err:find("NOSCRIPT", 1, true)) then return r, err, code end
  end
  -- first use (or a Redis that lost its script cache): load it
  local s, err, code = load(name)
  if not s then return nil, err, code end
  return send("EVALSHA", s, 0, ...)
end

local NUMERIC = { prank = true, run_at = true, attempts_made = true, started_at = true,
  finished_at = true, progress = true }

local function from_hash(flat)
  if type(flat) ~= "table" or #flat == 0 then return nil end
  local j = {}
  for i = 1, #flat, 2 do
    local k, v = flat[i], flat[i + 1]
    if NUMERIC[k] then v = tonumber(v)
    elseif k == "result" then v = json_decode(v)
    elseif k == "spec" then
      for sk, sv in pairs(json_decode(v) or {}) do j[sk] = sv end
      v = nil
    end
    if v ~= nil and v ~= "" then j[k] = v end
  end
  return j
end

-- the immutable part of a job, as stored in its spec field
local function spec_of(doc)
  -- nil, why for data that JSON cannot hold (a cycle, a function, NaN)
  return json_encode({ type = doc.type, data = doc.data, priority = doc.priority,
    attempts = doc.attempts, backoff = doc.backoff, remove_on_complete = doc.remove_on_complete,
    created_at = doc.created_at })
end

-- every add checks that its id is new, so a re-sent add cannot queue it twice
function redis.add(doc)
  local spec, why = spec_of(doc)
  if not spec then return nil, "jobs.add: the data cannot be encoded: " .. tostring(why), "EINVAL" end
  local r, err, code = eval("add", P, 1, doc._id, doc.prank, doc.run_at, spec, 1)
  if r == nil then return nil, "jobs: " .. tostring(err), code or "EREDIS" end
  return doc._id
end

function redis.add_many(docs)
  -- one script call per 200 jobs: Lua unpacks at most a few thousand values
  for first = 1, #docs, 200 do
    local last = math.min(first + 199, #docs)
    local args, n = { P, last - first + 1 }, 2
    for i = first, last do
      local doc = docs[i]
      local spec, why = spec_of(doc)
      if not spec then
        return nil, "jobs.add_many: data " .. i .. " cannot be encoded: " .. tostring(why), "EINVAL"
      end
      args[n + 1], args[n + 2], args[n + 3], args[n + 4], args[n + 5] =
        doc._id, doc.prank, doc.run_at, spec, 1
      n = n + 5
    end
    local r, err, code = eval("add", unpack(args, 1, n))
    if r == nil then return nil, "jobs: " .. tostring(err), code or "EREDIS" end
  end
  local ids = {}
  for i, doc in ipairs(docs) do ids[i] = doc._id end
  return ids
end

function redis.get(id)
  local api = lib()
  local r, err = api.redis.call("HGETALL", P .. "job:" .. id)
  if r == nil then return nil, err end
  local j = from_hash(r)
  if j then j._id = id end
  return j
end

function redis.remove(id)
  local api = lib()
  local j = redis.get(id)
  if not j then return 0 end
  api.redis.pipeline({ { "DEL", P .. "job:" .. id }, { "ZREM", P .. "ready:" .. j.prank, id },
    { "ZREM", P .. "active:" .. j.prank, id }, { "ZREM", P .. "completed", id },
    { "ZREM", P .. "failed", id } })
  return 1
end

function redis.counts()
  local api = lib()
  local now = now_ms()
  local cmds = { { "ZCARD", P .. "completed" }, { "ZCARD", P .. "failed" } }
  for rank = 0, 2 do
    cmds[#cmds + 1] = { "ZCOUNT", P .. "ready:" .. rank, "-inf", now }
    cmds[#cmds + 1] = { "ZCOUNT", P .. "ready:" .. rank, "(" .. now, "+inf" }
    cmds[#cmds + 1] = { "ZCARD", P .. "active:" .. rank }
  end
  local r, err = api.redis.pipeline(cmds)
  if not r then return nil, err end
  local out = { completed = r[1] or 0, failed = r[2] or 0, waiting = 0, delayed = 0, active = 0,
                by_priority = {} }
  for rank = 0, 2 do
    local w, d, a = r[3 + rank * 3] or 0, r[4 + rank * 3] or 0, r[5 + rank * 3] or 0
    out.waiting, out.delayed, out.active = out.waiting + w, out.delayed + d, out.active + a
    out.by_priority[PRIORITY_NAMES[rank]] = { waiting = w + d, active = a }
  end
  return out
end

-- writes finished attempts and claims up to wants[rank] jobs per priority,
-- in one script call; returns the claimed jobs
function redis.cycle(owner_, fin, wants, now, lease)
  local args = { P, owner_, now, lease, wants[0], wants[1], wants[2], #fin }
  local n = #args
  for _, f in ipairs(fin) do
    local value
    if f.state == "completed" then value = f.json else value = f.error end
    args[n + 1], args[n + 2], args[n + 3], args[n + 4], args[n + 5] =
      f.id, f.state, value, f.run_at or 0, f.keep or 0
    n = n + 5
  end
  local r, err, code = eval("cycle", unpack(args, 1, n))
  if r == nil then return nil, err, code end
  local out = {}
  for i = 1, #r, 4 do
    local j = json_decode(r[i + 2])
    j._id, j.prank, j.attempts_made = r[i], tonumber(r[i + 1]), tonumber(r[i + 3])
    out[#out + 1] = j
  end
  return out
end

function redis.progress(id, owner_, n)
  local api = lib()
  api.redis.call("HSET", P .. "job:" .. id, "progress", n)
end

function redis.renew(owner_, ids, until_)
  for first = 1, #ids, 500 do
    eval("renew", P, owner_, until_, unpack(ids, first, math.min(first + 499, #ids)))
  end
end

-- returns how many jobs went back to waiting
function redis.reclaim(now)
  local n = 0
  for _ = 1, 50 do -- at most 50,000 expired completed jobs a second
    local r = eval("reclaim", P, now)
    if type(r) ~= "table" then break end
    n = n + (tonumber(r[1]) or 0)
    if (tonumber(r[2]) or 0) < 1000 then break end
  end
  return n
end

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
  local doc, err, code = make_doc(type_, data, opts, "jobs.add")
  if not doc then return nil, err, code end
  local id
  id, err, code = backend().add(doc)
  -- this worker's scheduler looks at once instead of at its next poll
  if id and doc.state == "waiting" then _M._kick() end
  return id, err, code
end

-- api.jobs.add_many(type, {data, ...}, opts) -> {id, ...}: one round trip on
-- Redis (a pipeline), one transaction on the store
function _M.add_many(type_, list, opts)
  if type(list) ~= "table" then
    return nil, "jobs.add_many: the data must be a list (a table), not " .. options.show(list), "EINVAL"
  end
  -- a map would add nothing (ipairs sees no entry) and say it worked
  local bad = options.non_list_key(list)
  if bad ~= nil then
    return nil, "jobs.add_many: the data must be a list (an array), not a table with the key "
      .. options.show(bad), "EINVAL"
  end
  if type(opts) == "table" and opts.job_id ~= nil then
    return nil, "jobs.add_many takes no job_id (each job gets its own id)", "EINVAL"
  end
  -- the options are checked even for an empty list: a mistake shows at once
  local _, err, code = make_doc(type_, nil, opts, "jobs.add_many")
  if err then return nil, err, code end
  local docs = {}
  for i, data in ipairs(list) do
    local doc, err, code = make_doc(type_, data, opts, "jobs.add_many")
    if not doc then return nil, err, code end
    docs[i] = doc
  end
  local ids, err, code = backend().add_many(docs)
  if ids then _M._kick() end
  return ids, err, code
end

local ADD_KEYS = { "attempts", "backoff", "delay", "job_id", "priority", "remove_on_complete" }
local BACKOFF_KEYS = { "delay", "type" }
local function finite(v) return type(v) == "number" and v == v and v ~= huge and v ~= -huge end
-- nil, "<fn>: <option> must be <what>, not <value>", "EINVAL"
local function refuse(fn, name, what, v)
  return nil, fn .. ": " .. name .. " must be " .. what .. ", not " .. options.show(v), "EINVAL"
end
-- a delay beyond a year is a unit mistake (seconds for ms times 1000)
local MAX_DELAY = 31536000000
local MAX_IS = "at most " .. MAX_DELAY .. " ms (a year)"
local BACKOFF_IS = 'milliseconds >= 0 or { type = "exponential" | "fixed", delay = ms >= 0 }'
make_doc = function(type_, data, opts, fn)
  if type(type_) ~= "string" or type_ == "" then
    return nil, fn .. ": the job type must be a non-empty string, not " .. options.show(type_), "EINVAL"
  end
  if opts ~= nil and type(opts) ~= "table" then
    return nil, fn .. ": options must be a table, not " .. options.show(opts), "EINVAL"
  end
  local bad = options.unknown(opts, ADD_KEYS, "job option")
    or (type(opts and opts.backoff) == "table" and options.unknown(opts.backoff, BACKOFF_KEYS, "backoff option"))
  if bad then return nil, bad, "EINVAL" end
  opts = opts or {}
  -- every value checked here: a bad one stored would fail the job later,
  -- far from the line that queued it (a string delay in the backoff sum)
  local prank = PRIORITIES[opts.priority == nil and "normal" or opts.priority]
  if not prank then return refuse(fn, "priority", '"high", "normal" or "low"', opts.priority) end
  local attempts = opts.attempts == nil and 3 or opts.attempts
  if not finite(attempts) or attempts < 1 or attempts ~= floor(attempts) then
    return refuse(fn, "attempts", "a whole number >= 1", opts.attempts)
  end
  local delay = opts.delay == nil and 0 or opts.delay
  if not finite(delay) or delay < 0 then return refuse(fn, "delay", "milliseconds >= 0", opts.delay) end
  if delay > MAX_DELAY then return refuse(fn, "delay", MAX_IS, opts.delay) end
  local backoff = opts.backoff == nil and { type = "exponential", delay = 5000 } or opts.backoff
  if type(backoff) == "number" then backoff = { type = "fixed", delay = backoff } end
  if type(backoff) ~= "table" then return refuse(fn, "backoff", BACKOFF_IS, backoff) end
  -- the delay first: { delay = -5 } is about the delay, not the missing type
  local bdelay = backoff.delay == nil and 5000 or backoff.delay
  if not finite(bdelay) or bdelay < 0 then
    return refuse(fn, "backoff delay", "milliseconds >= 0", backoff.delay)
  end
  if bdelay > MAX_DELAY then return refuse(fn, "backoff delay", MAX_IS, backoff.delay) end
  if backoff.type ~= "exponential" and backoff.type ~= "fixed" then
    return refuse(fn, "backoff type", '"exponential" or "fixed"', backoff.type)
  end
  local job_id = opts.job_id
  if job_id ~= nil and (type(job_id) ~= "string" or job_id == "") then
    return refuse(fn, "job_id", "a non-empty string", job_id)
  end
  if job_id and job_id:find("%c") then
    return refuse(fn, "job_id", "a string without control characters", job_id)
  end
  if opts.remove_on_complete ~= nil and type(opts.remove_on_complete) ~= "boolean" then
    return refuse(fn, "remove_on_complete", "true or false", opts.remove_on_complete)
  end
  local now = now_ms()
  return {
    _id = job_id ~= nil and tostring(job_id) or new_id(), own_id = job_id ~= nil,
    type = type_, data = data == nil and null or data,
    priority = PRIORITY_NAMES[prank], prank = prank,
    state = delay > 0 and "delayed" or "waiting",
    run_at = now + delay, attempts = attempts, attempts_made = 0,
    backoff = { type = backoff.type, delay = bdelay },
    remove_on_complete = opts.remove_on_complete ~= false,
    created_at = now, progress = 0,
  }
end

local function view(j)
  if not j then return nil end
  local state = j.state
  -- a job waiting for its run time (first delay or a retry's backoff) is delayed
  if state == "waiting" or state == "delayed" then
    state = (j.run_at or 0) > now_ms() and "delayed" or "waiting"
  end
  return {
    id = j._id, type = j.type, state = state, priority = j.priority,
    attempts_made = j.attempts_made, attempts = j.attempts, data = j.data,
    result = j.result == nil and null or j.result,
    error = (j.error == nil or j.error == "") and null or j.error,
    progress = j.progress or 0,
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
--
-- Each priority has lim running slots and may hold as many claimed jobs in a
-- local buffer, so the next batch is here when a slot frees. The scheduler
-- task only decides what to ask for; the asking is done by up to FETCHERS
-- cycle tasks at once, each one backend call that writes the attempts
-- finished since the last call and claims more. With two in flight, the
-- backend works on one while this worker runs the jobs of the other. A
-- running job's slot is a lane: when its job ends it takes the next buffered
-- job of its priority, without waiting for the scheduler.
---------------------------------------------------------------------------
local FETCHERS = 2
local owner
local active = { [0] = 0, [1] = 0, [2] = 0 }   -- running lanes
local reserved = { [0] = 0, [1] = 0, [2] = 0 } -- asked for by cycles in flight
local buffered = { [0] = { h = 1, t = 0 }, [1] = { h = 1, t = 0 }, [2] = { h = 1, t = 0 } }
local inflight = 0
local running = {} -- id -> true: the claimed jobs whose leases this worker renews
-- finished attempts waiting to be written by the next cycle. A crash before
-- the write means the attempt runs again once its lease ends (at-least-once).
local finishing = {}
local kicks = 0 -- bumped by anything that may make a claim find work
-- per priority: the kicks count when a claim last came back short (no
-- claims until the next kick), and whether the last claim came back full
-- (only then may a second cycle ask for it while one is out)
local starved = { [0] = -1, [1] = -1, [2] = -1 }
local flowing = { [0] = false, [1] = false, [2] = false }
local lim = { [0] = 1, [1] = 1, [2] = 1 }
_M.paused = core._env("DEVLOOP_JOBS_PAUSED") == 1 -- a strict on/off, checked at start (config.c)
function _M.pause() _M.paused = true end
function _M.resume() _M.paused = false kicks = kicks + 1 core._wake() end

local Job = {}
Job.__index = Job
function Job:progress(n)
  if not finite(n) or n < 0 or n > 100 then
    options.fail("job:progress: percent must be a number from 0 to 100, not " .. options.show(n))
  end
  backend().progress(self.id, owner, n)
end

local hooks = {} -- metrics, set by lifecycle.lua
function _M._set_hooks(h) hooks = h end

local function kick()
  kicks = kicks + 1
  core._wake()
end

local function backoff_ms(j)
  local b = j.backoff or {}
  local d = b.delay or 5000
  if b.type ~= "fixed" then d = d * 2 ^ ((j.attempts_made or 1) - 1) end
  -- a stored job from before add checked its values
  if not finite(d) or d < 0 then
    error("the backoff delay is not milliseconds >= 0: " .. options.show(d), 0)
  end
  return d
end

local function finish(f)
  finishing[#finishing + 1] = f
  if #finishing == 1 then core._wake() end
end

-- why v cannot be stored as JSON (a cycle, a function, NaN), or nil and the JSON
local function encoded(v)
  local ok, s, err = pcall(json_encode, v)
  if not ok then return nil, tostring(s) end
  if s == nil then return nil, tostring(err) end
  return s
end

-- the error of a failed attempt: api.fail(status, message) or error({ status
-- =, message = }): the message is the job's error; a 4xx says the job
-- itself is wrong (bad data, a refused id), which no retry mends, so it fails
-- at once; a 5xx is retried like any other error. Any other value reads as
-- text (its details are not kept).
local function failure(err)
  local msg, status
  if type(err) == "table" and type(rawget(err, "status")) == "number" then
    status = rawget(err, "status")
    msg = rawget(err, "message")
    if type(msg) ~= "string" then msg = rawget(err, "error") end
    if type(msg) ~= "string" then msg = "status " .. tostring(status) end
  else
    msg = core._error_text(err)
  end
  if not encoded(msg) then msg = "(an error whose text cannot be encoded)" end
  return msg, status
end

-- records how an attempt ended; raises on a job whose own values are wrong
local function settle(j, ok, res, err)
  if ok then
    local json, why = encoded(res == nil and null or res)
    if json then
      local keep = j.remove_on_complete and _M.keep_completed_ms or 0
      if not finite(keep) or keep < 0 then
        error("api.jobs.keep_completed_ms must be milliseconds > 0, not " .. options.show(keep), 0)
      end
      finish({ id = j._id, state = "completed", result = res == nil and null or res, json = json,
               keep = keep })
      if core.log_level() <= core.LOG_DEBUG then
        core.log(core.LOG_DEBUG, "job completed", { id = j._id, type = j.type, attempts = j.attempts_made })
      end
      return true
    end
    -- a result the queue cannot hold is this attempt's failure
    err = "cannot encode the result: " .. why
  end
  local msg, status = failure(err)
  local final = j.attempts_made >= j.attempts or (status ~= nil and status >= 400 and status < 500)
  local run_at = not final and now_ms() + backoff_ms(j) or nil
  finish({ id = j._id, state = final and "failed" or "retry", error = msg, run_at = run_at })
  core.log(core.LOG_ERROR, "job failed", { id = j._id, type = j.type, attempt = j.attempts_made,
                              attempts = j.attempts, error = msg, status = status, final = final })
  return false
end

-- one attempt of job j, on the processor of the generation current now
local function run_job(j)
  local t0 = core.now()
  local fn = processors[j.type]
  local ok, res, err
  if not fn then
    ok, err = false, "no processor for job type '" .. tostring(j.type) .. "'"
  else
    j.id = j._id
    -- the stored progress (a number) would hide the job:progress method
    j.progress = nil
    ok, res, err = pcall(fn, j.data, setmetatable(j, Job))
    if ok and res == nil and err ~= nil then ok = false end -- nil, err fails the attempt
    if not ok and err == nil then err = res end
  end
  local secs = core.now() - t0
  local done, settled = pcall(settle, j, ok, res, err)
  if not done then
    -- a job must not stay active for good because of its own values (a
    -- stored backoff that is not a number): it fails, saying why
    local why = "cannot finish the attempt: " .. core._error_text(settled)
    finish({ id = j._id, state = "failed", error = why })
    core.log(core.LOG_ERROR, "job failed", { id = j._id, type = j.type, attempt = j.attempts_made, error = why,
                                final = true })
    settled = false
  end
  if hooks.done then hooks.done(j.type, settled, secs) end
end

local function lane(rank)
  local q = buffered[rank]
  while q.h <= q.t do
    local j = q[q.h]
    q[q.h] = nil
    q.h = q.h + 1
    run_job(j)
  end
  active[rank] = active[rank] - 1
end

-- lanes start in priority order; none of a lower priority while a cycle that
-- may bring higher ones is still out (the two cycles can run in either order
-- on the server)
local function start_lanes()
  for rank = 0, 2 do
    local q = buffered[rank]
    -- a lane takes its first job as it is spawned
    while active[rank] < lim[rank] and q.h <= q.t do
      active[rank] = active[rank] + 1
      core._spawn(lane, rank)
    end
    if reserved[rank] > 0 then return end
  end
end

-- the queue could not be reached, or a cycle's outcome is unknown: its
-- finishes wait for the next cycle (each is applied once, see the Redis
-- backend's note), which leaves no sooner than RETRY_MS later
local AWAY = { EUNAVAIL = true, EUNKNOWN = true, ETIMEDOUT = true, EIO = true, EOFFLINE = true,
  EREDIS = true }
local RETRY_MS = 100
local retry_at = 0
local failing = false
local function cycle(b, fin, wants, now, kicks_at)
  local ok, list, err, code = pcall(b.cycle, owner, fin, wants, now, LEASE_MS)
  if not ok then list, err = nil, list end
  inflight = inflight - 1
  for rank = 0, 2 do reserved[rank] = reserved[rank] - wants[rank] end
  if list or not AWAY[code] then
    for _, f in ipairs(fin) do running[f.id] = nil end
  else
    -- kept in running: their leases are still renewed while they wait
    for i = #fin, 1, -1 do table.insert(finishing, 1, fin[i]) end
  end
  if not list then
    -- once per outage; the next poll tries again
    if not failing then core.log(core.LOG_ERROR, "jobs: cannot reach the queue: " .. tostring(err)) end
    failing = true
    retry_at = now_ms() + RETRY_MS
    for rank = 0, 2 do starved[rank], flowing[rank] = kicks_at, false end
  else
    if failing then core.log(core.LOG_INFO, "jobs: queue reachable again") end
    failing = false
    retry_at = 0
    local got = { [0] = 0, [1] = 0, [2] = 0 }
    for _, j in ipairs(list) do
      local q = buffered[j.prank]
      q.t = q.t + 1
      q[q.t] = j
      running[j._id] = true
      got[j.prank] = got[j.prank] + 1
    end
    for rank = 0, 2 do
      if wants[rank] > 0 then
        flowing[rank] = got[rank] == wants[rank]
        -- came back short: no more claims for it until something may have
        -- changed (an add here, a poll)
        if not flowing[rank] then starved[rank] = kicks_at end
      end
    end
  end
  start_lanes()
  core._wake()
end

local function limits(workers)
  local l = {}
  for name, rank in pairs(PRIORITIES) do
    l[rank] = math.max(1, math.ceil((_M.concurrency[name] or CONCURRENCY[name]) / workers))
  end
  return l
end

-- the settings an app may change (api.jobs.concurrency, keep_completed_ms,
-- poll_ms): what is wrong with them, or nil
local NAMES = { "high", "normal", "low" }
local function settings_problem()
  local c = _M.concurrency
  if type(c) ~= "table" then
    return "api.jobs.concurrency must be a table { high =, normal =, low = }, not " .. options.show(c)
  end
  local bad = options.unknown(c, NAMES, "priority", "api.jobs.concurrency")
  if bad then return bad end
  for _, name in ipairs(NAMES) do
    local v = c[name]
    if v ~= nil and (not finite(v) or v < 1 or v > 100000 or v ~= floor(v)) then
      return "api.jobs.concurrency." .. name .. " must be a whole number from 1 to 100000, not "
        .. options.show(v)
    end
  end
  local v = _M.keep_completed_ms
  if not finite(v) or v <= 0 then
    return "api.jobs.keep_completed_ms must be milliseconds > 0, not " .. options.show(v)
  end
  -- the scheduler naps poll_ms, and core._nap takes 0..core.MAX_SLEEP_MS
  v = _M.poll_ms
  if not finite(v) or v < 1 or v > core.MAX_SLEEP_MS then
    return "api.jobs.poll_ms must be milliseconds from 1 to " .. core.MAX_SLEEP_MS .. ", not " .. options.show(v)
  end
end

-- renews our leases; reclaims jobs whose owner stopped renewing (a dead
-- process); drops completed jobs past their keep time
local housekeeping = false
local function housekeep(b, now)
  local ids = {}
  for id in pairs(running) do ids[#ids + 1] = id end
  pcall(b.renew, owner, ids, now + LEASE_MS)
  if core.worker_id() == 0 then
    local ok, n = pcall(b.reclaim, now)
    if ok and (tonumber(n) or 0) > 0 then kick() end
    if hooks.gauges then pcall(hooks.gauges) end
  end
  housekeeping = false
end

function _M._run_scheduler(workers)
  owner = string.format("w%d-%d-%04x", core.worker_id(), floor(core.now() * 1000) % 1e9,
    math.random(0, 0xffff))
  local last_house = 0
  local b = backend()
  if b == store and core.worker_id() == 0 then
    for _, ix in ipairs(JOB_INDEXES) do
      local ok, err = jobs:create_index(ix)
      if not ok then core.log(core.LOG_ERROR, "jobs: cannot create an index: " .. tostring(err)) end
    end
  end
  local told -- the settings problem last logged
  while true do
    local now = now_ms()
    -- checked every turn: app.lua sets them at start and on each reload
    local problem = settings_problem()
    if problem ~= told then
      if problem then
        core.log(core.LOG_ERROR, "jobs: " .. problem .. "; no job is claimed until it is fixed")
      else
        core.log(core.LOG_INFO, "jobs: settings fixed, claiming jobs again")
      end
      told = problem
    end
    local poll = problem and 50 or _M.poll_ms
    if now - last_house >= 1000 and not housekeeping then
      last_house, housekeeping = now, true
      core._spawn(housekeep, b, now)
    end
    if not problem then lim = limits(workers) end
    start_lanes()
    local sent = false
    if inflight < FETCHERS and (retry_at == 0 or now >= retry_at) then
      -- a cycle asks for half of what is missing from running + one batch ahead
      local wants, any = { [0] = 0, [1] = 0, [2] = 0 }, false
      if not _M.paused and not problem then
        for rank = 0, 2 do
          if starved[rank] ~= kicks and (inflight == 0 or flowing[rank]) then
            local q = buffered[rank]
            local missing = 2 * lim[rank] - active[rank] - (q.t - q.h + 1) - reserved[rank]
            local w = math.min(missing, math.ceil(lim[rank] * 2 / FETCHERS))
            if w > 0 then wants[rank], any = w, true end
          end
        end
      end
      if any or #finishing > 0 then
        local fin = finishing
        finishing = {}
        inflight = inflight + 1
        for rank = 0, 2 do reserved[rank] = reserved[rank] + wants[rank] end
        core._spawn(cycle, b, fin, wants, now, kicks)
        sent = true
      end
    end
    if sent then
      -- the next cycle leaves in a later loop turn, on its own connection,
      -- so the two stay out of step: the server answers one while this
      -- worker runs the other's jobs
      core._nap(0)
    else
      core._nap(poll)
      -- a nap that ran its course is a poll: look for jobs that came due
      -- (delays, backoffs) or that other processes added
      if now_ms() - now >= poll then kicks = kicks + 1 end
    end
  end
end

_M._kick = kick

return _M
