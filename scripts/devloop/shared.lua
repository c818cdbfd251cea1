-- devloop.shared: api.shared, one dictionary shared by every worker of the
-- process (the role of OpenResty's lua_shared_dict). Values are strings,
-- numbers and booleans; it lives as long as the process, across reloads,
-- capped at DEVLOOP_SHARED_MAX bytes (least recently used entries make room).
-- Every call finishes at once: it is memory, so it works in routes, jobs,
-- start hooks and timers alike and never yields.
--   api.shared.get(key)                      -> value | nil
--   api.shared.set(key, value, ttl?)         -> true | nil, err, name
--   api.shared.add(key, value, ttl?)         -> true | nil, "exists", "EEXIST"
--   api.shared.incr(key, n, init?, init_ttl?) -> new value | nil, err, name
--       err "not found" (absent, no init), "not a number"
--   api.shared.delete(key)                   -> true
--   api.shared.ttl(key)                      -> seconds left (0: none) | nil, "not found", "ENOENT"
--   api.shared.stats()                       -> {bytes, entries, max_bytes, evictions, shards}
-- ttl is in seconds (fractions allowed; nil or 0: no expiry). Keys are
-- strings of 1..65535 bytes (a longer or empty one: nil, err, "EINVAL");
-- a key that is not a string, a value that is none of the three types, a
-- negative or NaN ttl or a NaN increment raises, naming the argument.
local core = require "devloop.shared_core"

return {
  get = core.get,
  set = core.set,
  add = core.add,
  incr = core.incr,
  delete = core.delete,
  ttl = core.ttl,
  stats = core.stats,
}
