-- The cache test app: api.cache, cached routes and api.redis, one route per
-- behaviour under test.
local api = require "devloop"
local cache, redis = api.cache, api.redis

api.get("/hello", function() return "Hello, World!" end)
api.get("/cache/type", function() return { type = cache.type() } end)

api.post("/cache/set", function(req)
  local b = req.body
  local ok, err = cache.set(b.key, b.value, b.ttl)
  return { ok = ok or false, err = err }
end)
api.get("/cache/get", function(req)
  local v, err = cache.get(req.query.key)
  return { value = v == nil and api.null or v, err = err }
end)
api.post("/cache/del", function(req)
  return { count = cache.del(req.body.key) }
end)
api.post("/cache/invalidate", function(req)
  local n, err = cache.invalidate(req.body.pattern)
  return { count = n, err = err }
end)
api.post("/cache/fill", function(req)
  -- n keys "<prefix><i>" in one request
  local b = req.body
  for i = 1, b.n do
    local ok, err = cache.set(b.prefix .. i, "v" .. i, b.ttl)
    if not ok then return 500, { err = err } end
  end
  return { ok = true }
end)

-- a cached route that counts its runs and is slow, for hits and coalescing
local runs = 0
local BIG = {}
for i = 1, 100 do BIG[i] = { id = i, text = "repetitive cached text for compression " .. i } end
api.get("/cached/items", { cache = { prefix = "feature", ttl = "medium" } }, function(req)
  runs = runs + 1
  api.sleep(tonumber(req.query.sleep) or 0)
  return { items = BIG, q = req.query.q or api.null, run = runs }
end)
api.get("/cached/small", { cache = { prefix = "api", ttl = 1 } }, function()
  runs = runs + 1
  return { small = true, run = runs }
end)
api.get("/cached/text", { cache = { prefix = "api", ttl = 60 } }, function()
  runs = runs + 1
  return 200, string.rep("plain text body ", 200), { ["Content-Type"] = "text/plain" }
end)
api.get("/cached/notfound", { cache = { prefix = "api" } }, function()
  runs = runs + 1
  return 404, { error = "nope" }
end)
api.get("/cached/keyed/:id", { cache = { prefix = "feature", key = function(req)
  return "item:" .. req.params.id
end } }, function(req)
  runs = runs + 1
  return { id = req.params.id, run = runs }
end)
api.get("/runs", function() return { runs = runs } end)
api.post("/features/:id", function(req)
  -- a write: every cached feature list goes
  local n = cache.invalidate_entity("feature", req.params.id)
  return { invalidated = n }
end)

-- api.redis
api.get("/redis/families", function()
  local r = {}
  local k = "t:" .. api.now()
  r.set = redis.set(k .. ":s", "v1")
  r.set_nx = redis.set(k .. ":s", "v2", { nx = true }) or api.null
  r.get = redis.get(k .. ":s")
  r.missing = redis.get(k .. ":none") == nil
  r.set_ex = redis.set(k .. ":e", "x", { ex = 100 })
  r.ttl = redis.ttl(k .. ":e")
  r.expire = redis.expire(k .. ":s", 50)
  r.incr = redis.incr(k .. ":n")
  r.incr2 = redis:incr(k .. ":n")
  r.hset = redis.hset(k .. ":h", "a", "1", "b", "2")
  r.hget = redis.hget(k .. ":h", "b")
  r.hgetall = redis.hgetall(k .. ":h")
  r.lpush = redis.lpush(k .. ":l", "x", "y")
  r.rpop = redis.rpop(k .. ":l")
  r.zadd = redis.zadd(k .. ":z", 1, "one", 2, "two", 3, "three")
  r.zrange = redis.zrangebyscore(k .. ":z", 2, 3)
  r.publish = redis.publish("chan", "msg")
  r.del = redis.del(k .. ":s")
  r.unlink = redis.unlink(k .. ":h")
  r.ping = redis.ping()
  local info = redis.info("server")
  r.info = type(info) == "string" and info:find("redis_version", 1, true) ~= nil
  local scan = redis.scan(0, "MATCH", k .. ":*", "COUNT", 100)
  r.scan_ok = type(scan) == "table" and type(scan[2]) == "table"
  local v, err = redis.call("NOSUCHCOMMAND")
  r.err = err
  local _, serr, scode = redis.subscribe("chan")
  r.subscribe_err, r.subscribe_code = serr, scode
  r.call = redis.call("ECHO", "hi")
  return r
end)
api.get("/redis/pipeline", function()
  local cmds = {}
  for i = 1, 100 do cmds[i] = { "SET", "p:" .. i, i } end
  cmds[101] = { "GET", "p:42" }
  cmds[102] = { "GET", "p:none" }
  cmds[103] = { "INCR", "p:1:x:notint" }
  cmds[104] = { "LPUSH", "p:1", "x" }
  local r = redis.pipeline(cmds)
  return { n = #r, first = r[1], get = r[101], missing = r[102] == api.null, wrongtype = r[104] }
end)
api.post("/redis/echo", { body_limit = 4 * 1024 * 1024 }, function(req)
  -- binary-safe round trip of the raw body through SET/GET
  local k = "bin:" .. req.id
  assert(redis.set(k, req.raw_body))
  local v = redis.get(k)
  redis.del(k)
  return 200, v, { ["Content-Type"] = "application/octet-stream" }
end)
api.get("/redis/configured", function() return { configured = redis.configured() } end)
api.get("/redis/ping", function()
  local ok, err = redis.ping()
  return { ok = ok or false, err = err or api.null }
end)
