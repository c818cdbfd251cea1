-- The built-in routes every app gets: GET /metrics (Prometheus text), GET
-- /health (200 UP or DEGRADED, 503 DOWN) and GET /stats. Written with the
-- public Lua API only. An app moves, protects or disables them in app.lua:
--   api.builtin_routes.metrics = "/internal/metrics"   -- move
--   api.builtin_routes.stats = false                   -- disable
--   api.builtin_routes.token = os.getenv("OPS_TOKEN")  -- require a Bearer token
--   api.builtin_routes.stats_full = true               -- full /stats without one
--
-- What /stats shows (issue 17). A caller that presented the token sees
-- everything api.stats() has. Without a token configured, /stats is open,
-- and an open /stats shows figures only: numbers and booleans (uptime,
-- memory, cpu, per-worker connections, cache and database sizes, reload and
-- job counts) and the kind of each backend, but not the PID, the database
-- path or any text (error messages name hosts, files and code). The runtime
-- does not tell a route which listener a request came in on, so this is the
-- default on every listener, loopback included; behind a proxy on the same
-- host every caller would look local anyway. stats_full = true gives the
-- whole view to anyone: for a listener no one else can reach.
local api = require "devloop"
local cfg = api.builtin_routes

-- The token is compared in constant time (api.auth.equal: both hashed, the
-- digests compared with CRYPTO_memcmp). One that is not a non-empty string
-- (true, an unset variable read as "") fails the load rather than leave the
-- routes open or shut by accident.
if cfg.token and (type(cfg.token) ~= "string" or cfg.token == "") then
  error("api.builtin_routes.token must be a non-empty string or false", 0)
end
if cfg.token and cfg.token:find("[%s%c]") then
  -- a bearer token is one word: this one could never be presented
  error("api.builtin_routes.token must not hold spaces or control characters", 0)
end

local function guard(handler)
  if not cfg.token then return handler end
  local want = cfg.token
  return function(req)
    if not api.auth.equal(api.auth.bearer(req), want) then
      return 401, { error = "Unauthorized", message = "a valid bearer token is required",
                    requestId = req.id },
        { ["WWW-Authenticate"] = 'Bearer realm="devloop"' }
    end
    return handler(req)
  end
end

-- The figures of a stats table: numbers and booleans, the `type` of each
-- backend, tables of those; no PID, no other text.
local function figures(t)
  local out = {}
  for k, v in pairs(t) do
    local tv = type(v)
    if k == "pid" then
      -- a process id helps an attacker on the host, not a dashboard
    elseif tv == "number" or tv == "boolean" then
      out[k] = v
    elseif tv == "string" and k == "type" then
      out[k] = v
    elseif tv == "table" then
      out[k] = figures(v)
    end
  end
  return out
end

if cfg.metrics then
  api.get(cfg.metrics, guard(function()
    return 200, api.metrics.render(),
      { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }
  end))
end

-- /health keeps each backend's status and last error (an operator needs to
-- know why Redis is down, and the text names only hosts the app was given),
-- but the reload's error names script files and code: without a token (or
-- stats_full) it is replaced by a pointer to the log.
if cfg.health then
  local details = cfg.token or cfg.stats_full == true
  api.get(cfg.health, guard(function()
    local h = api.health()
    if not details and type(h.reload) == "table" and h.reload.last_error ~= nil
        and h.reload.last_error ~= "" then
      h.reload.last_error = "a script failed to load (the log has the details)"
    end
    return h.status == "DOWN" and 503 or 200, h
  end))
end

if cfg.stats then
  local full = cfg.token or cfg.stats_full == true
  api.get(cfg.stats, guard(function()
    local s = api.stats()
    if full then
      s.view = "full"
      return s
    end
    s = figures(s)
    s.view = "figures"
    return s
  end))
end
