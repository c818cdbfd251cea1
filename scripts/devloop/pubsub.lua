-- devloop.pubsub: api.pubsub, messages on named channels between the
-- workers of the process (the in-process hub: runtime/cache/pubsub.h).
--   api.pubsub.publish(channel, message)      -> subscribers queued for | nil, err, name
--   api.pubsub.subscribe(channel, fn[, opts]) -> sub | nil, err, name
--   sub:cancel()
-- A channel is a string of 1..256 bytes; a message a string (a table is
-- sent as its JSON text: subscribers always get a string) of at most
-- DEVLOOP_PUBSUB_MAX_MESSAGE bytes. fn(message, channel) runs in a task of
-- its own on the subscribing worker (it may yield), one message after the
-- other in the order each publisher published them; one that raises is
-- logged with fn's file and line and the subscription goes on. Each
-- subscription queues at most DEVLOOP_PUBSUB_QUEUE messages: past that a
-- message is dropped for it and counted (opts.on_overflow = "drop", the
-- default) or the subscription ends and is logged ("close").
-- A subscription made while the app loads belongs to that load, like a
-- timer: it starts when the load is switched in and ends when a reload
-- replaces it (the new code subscribes again). One made in a request ends
-- when that request ends (its task scope: runtime/lua/lua_state.h). One made
-- by a background run (a start hook, a timer, a job) lasts until
-- sub:cancel() or the worker stops, across reloads: a start hook runs once
-- per worker, so a reload that ended its subscriptions would lose them for
-- good (subscribe while the app loads to follow reloads).
local core = require "devloop.core"
local codec = require "devloop.codec"
local options = require "devloop.options"
local pcore = require "devloop.pubsub_core"

local type, error = type, error

local M = {}

local MAX_LOAD_SUBS = 10000 -- a load's own, when no worker tells its cap

local loading = nil -- the subscriptions a load in progress declared
local serving = {} -- the serving generation's (load-time) subscriptions
local pending = {} -- switched in, to start once the worker applies the load

local Sub = {}
Sub.__index = Sub

local defined_at = options.defined_at

local function deliver(s, msg, ch)
  local ok, err = core._parallel(function() return s.fn(msg, ch) end)
  s.messages = s.messages + 1
  if not ok then
    s.failures = s.failures + 1
    local e = core._error_text(err)
    -- a subscriber failing on every message logs once a second
    local now = core.now()
    if not s.logged_at or now - s.logged_at >= 1 then
      local quiet = s.failures - (s.logged_failures or 0) - 1
      core.log(core.LOG_ERROR, "pubsub subscriber " .. s.where .. " on channel "
        .. options.show(ch) .. " failed (it goes on"
        .. (quiet > 0 and (", " .. quiet .. " more failures not logged") or "") .. "): " .. e)
      s.logged_at, s.logged_failures = now, s.failures
    end
  end
end

-- The subscription's task: waits for the next message, runs fn, again.
local function loop(s)
  local h = s.h
  while true do
    local msg, ch = h:next()
    if msg == nil then
      if ch == "overflow" then
        core.log(core.LOG_WARN, "pubsub subscriber " .. s.where .. " on channel "
          .. options.show(s.channel) .. " closed: its queue was full (on_overflow = \"close\")")
      end
      s.ended = true
      h:cancel() -- frees its place under DEVLOOP_PUBSUB_MAX_SUBS now, not at collection
      return
    end
    deliver(s, msg, ch)
  end
end

local function start(s, scoped)
  local h, err, name = pcore.subscribe(s.channel, s.on_overflow == "close", scoped)
  if not h then return nil, err, name end
  s.h = h
  core._spawn(loop, s)
  return s
end

local function check_channel(fn, channel)
  if type(channel) ~= "string" then
    error("bad argument #1 to 'api.pubsub." .. fn .. "' (string expected, got "
          .. type(channel) .. ")", 3)
  end
end

function M.publish(channel, message)
  check_channel("publish", channel)
  if type(message) == "table" then
    message = codec.json_encode(message)
  elseif type(message) ~= "string" then
    error("bad argument #2 to 'api.pubsub.publish' (string or table expected, got "
          .. type(message) .. ")", 2)
  end
  return pcore.publish(channel, message)
end

function M.subscribe(channel, fn, opts)
  check_channel("subscribe", channel)
  if type(fn) ~= "function" then
    error("bad argument #2 to 'api.pubsub.subscribe' (function expected, got "
          .. type(fn) .. ")", 2)
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #3 to 'api.pubsub.subscribe' (table { on_overflow } expected, got "
            .. type(opts) .. ")", 2)
    end
    options.check(opts, { "on_overflow" }, "api.pubsub.subscribe option")
    if opts.on_overflow ~= nil and opts.on_overflow ~= "drop" and opts.on_overflow ~= "close" then
      error("bad argument #3 to 'api.pubsub.subscribe' (on_overflow must be \"drop\" or "
            .. "\"close\", not " .. options.show(opts.on_overflow) .. ")", 2)
    end
  end
  if #channel == 0 or #channel > 256 then
    return nil, #channel == 0 and "empty channel" or "channel too long (more than 256 bytes)",
      "EINVAL"
  end
  local s = setmetatable({ channel = channel, fn = fn, where = defined_at(fn),
                           on_overflow = opts and opts.on_overflow or "drop",
                           messages = 0, failures = 0 }, Sub)
  if loading then
    local lim = pcore.limits()
    local max = lim and lim.max_subs or MAX_LOAD_SUBS
    if #loading >= max then
      options.fail("api.pubsub.subscribe: more than " .. max
                   .. " subscriptions (DEVLOOP_PUBSUB_MAX_SUBS)")
    end
    loading[#loading + 1] = s
    return s
  end
  return start(s, true)
end

function Sub:cancel()
  self.cancelled = true
  if self.h then self.h:cancel() end
end

-- lifecycle.lua: a load begins, is switched in, or fails
function M._begin_load() loading = {} end
function M._end_load()
  for _, s in ipairs(serving) do s:cancel() end
  serving = loading or {}
  pending = serving
  loading = nil
end
-- the serving worker applies the load (lifecycle.lua's apply_generation)
function M._start_pending()
  local list = pending
  pending = {}
  for _, s in ipairs(list) do
    if not s.cancelled then
      local ok, err = start(s, false)
      if not ok then
        core.log(core.LOG_ERROR, "pubsub subscriber " .. s.where .. " on channel "
          .. options.show(s.channel) .. " could not subscribe: " .. tostring(err))
      end
    end
  end
end
function M._abort_load() loading = nil end

-- the serving generation's subscriptions on this worker
function M.list()
  local out = {}
  for _, s in ipairs(serving) do
    if not s.cancelled and not s.ended then
      out[#out + 1] = { channel = s.channel, where = s.where, messages = s.messages,
                        failures = s.failures, queued = s.h and s.h:queued() or 0 }
    end
  end
  return out
end

M.stats = pcore.stats

return M
