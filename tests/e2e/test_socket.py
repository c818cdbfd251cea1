"""api.socket, TCP cosockets in OpenResty's shape (issue 20, item 2): RESP
spoken by hand to a redis-server the test starts, receiveuntil over a
multipart body sent in tiny pieces, lines and reads to the end, timeouts
against a full listener and a silent one, keep-alive reuse, a socket used
from another request, a socket left open at the request's end, TLS to a
Python ssl server with a certificate made by openssl, and invalid input."""
import atexit
import json
import os
import socket
import ssl
import tempfile
import threading
import time

import harness

REDIS = harness.RedisServer()
atexit.register(REDIS.stop)
TMP = tempfile.mkdtemp(prefix="devloop-sock-")
CERT, KEY = harness.make_cert(TMP, "up", dns=("localhost",))


# ------------------------------------------------------------------ peers

class Peer:
    """A loopback listener whose connections each run handler(conn) on a thread;
    it records how many connections it accepted and when each saw EOF."""

    def __init__(self, handler, tls=False, backlog=16, accept=True, v6=False):
        self.handler = handler
        self.lsock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("::1" if v6 else "127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.eofs = []
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(CERT, KEY)
        if accept:
            threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            self.handler(self, c)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def wait_eof(self, c):
        """Reads until the client ends; records when."""
        c.settimeout(10)
        while True:
            try:
                b = c.recv(4096)
            except OSError:
                b = b""
            if not b:
                self.eofs.append(time.time())
                return


BOUNDARY = b"XYZ"
PART_A = b"hello world"
# part b holds near-misses of the pattern "\r\n--XYZ" split anywhere by the pieces
PART_B = bytes(range(256)) * 4 + b"\r\n--XY\r\n--XYz\r\r\n--X" + bytes(range(255, -1, -1)) * 3
MULTIPART = (b"--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + PART_A +
             b"\r\n--XYZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n" + PART_B +
             b"\r\n--XYZ--\r\n")


def tiny_pieces(peer, c):
    """Sends the multipart body 3 bytes at a time with pauses, then closes."""
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(MULTIPART), 3):
        c.sendall(MULTIPART[i:i + 3])
        if i % 60 == 0:
            time.sleep(0.002)
    time.sleep(0.05)


def lines(peer, c):
    c.sendall(b"line1\r\nline2\n")
    time.sleep(0.05)
    c.sendall(b"last-no-newline")


def silent_then_hello(peer, c):
    time.sleep(1.0)
    c.sendall(b"hello")
    peer.wait_eof(c)


def silent(peer, c):
    peer.wait_eof(c)


N_LINES = 100000


def many_lines(peer, c):
    c.sendall(b"".join(b"line %06d\n" % i for i in range(N_LINES)))


def stuck(peer, c):
    """Accepts and never reads: the client's sends fill the buffers."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    time.sleep(20)


def echo_lines(peer, c):
    f = c.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        c.sendall(b"echo:" + line)


def endless(peer, c):
    chunk = b"x" * 65536
    while True:
        c.sendall(chunk)


def reset_after_hello(peer, c):
    c.sendall(b"partial")
    time.sleep(0.1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


MULTI = Peer(tiny_pieces)
LINES = Peer(lines)
SILENT_HELLO = Peer(silent_then_hello)
SILENT = Peer(silent)
ENDED = Peer(silent)
STUCK = Peer(stuck)
MANY = Peer(many_lines)
V6 = Peer(echo_lines, v6=True)
TLS = Peer(echo_lines, tls=True)
ENDLESS = Peer(endless)
RESET = Peer(reset_after_hello)

# a listener whose accept queue is full: later connects get no answer
FULL = Peer(None, backlog=0, accept=False)
_fillers = []
for _ in range(4):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", FULL.port))
    except (BlockingIOError, OSError):
        pass
    _fillers.append(s)
time.sleep(0.2)

PORTS = {"redis": REDIS.port, "multi": MULTI.port, "lines": LINES.port,
         "silent_hello": SILENT_HELLO.port, "silent": SILENT.port, "stuck": STUCK.port, "many": MANY.port, "v6": V6.port, "ended": ENDED.port,
         "tls": TLS.port, "full": FULL.port, "endless": ENDLESS.port, "reset": RESET.port}

ROUTES = r"""local api = require "devloop"
local P = PORTS_TABLE
local CA = CA_FILE

-- RESP by hand
local function cmd(...)
  local out = { "*" .. select("#", ...) .. "\r\n" }
  for i = 1, select("#", ...) do
    local a = tostring(select(i, ...))
    out[#out + 1] = "$" .. #a .. "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
  return out
end

local function reply(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, "line: " .. err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" or kind == ":" then return rest end
  if kind == "-" then return nil, rest end
  if kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local data, e = sock:receive(n + 2)
    if not data then return nil, "bulk: " .. e end
    return data:sub(1, n)
  end
  if kind == "*" then
    local t = {}
    for i = 1, tonumber(rest) do t[i] = reply(sock) end
    return t
  end
  return nil, "bad reply " .. line
end

local function redis()
  local sock = api.socket.tcp()
  sock:settimeouts(2000, 2000, 2000)
  local ok, err = sock:connect("127.0.0.1", P.redis)
  if not ok then error(err) end
  return sock
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

api.get("/redis", function(req)
  local sock = redis()
  local out = {}
  assert(sock:send(cmd("PING")) == 14)
  out.ping = reply(sock)
  local bin = {}
  for i = 0, 255 do bin[#bin + 1] = string.char(i) end
  bin = table.concat(bin) .. "\r\n$3\r\nend"
  out.set = reply(sock, sock:send(cmd("SET", "bin", bin)))
  sock:send(cmd("GET", "bin"))
  out.bin_same = reply(sock) == bin
  -- a pipeline: several commands in one send, their replies in order
  sock:send({ cmd("DEL", "n"), cmd("INCR", "n"), cmd("INCR", "n"), cmd("INCRBY", "n", 40) })
  out.pipe = { reply(sock), reply(sock), reply(sock), reply(sock) }
  -- a big bulk reply read with receive(n)
  local big = string.rep("0123456789abcdef", 200000) -- 3.2 MB
  sock:send(cmd("SET", "big", big))
  reply(sock)
  sock:send(cmd("GET", "big"))
  local head = sock:receive("*l")
  out.big_head = head
  local n = tonumber(head:sub(2))
  local body = sock:receive(n)
  out.big_same = body == big
  out.big_crlf = sock:receive(2) == "\r\n"
  sock:close()
  return out
end)

api.get("/keep", function(req)
  local sock = api.socket.tcp()
  local ok, err = sock:connect("127.0.0.1", P.redis, { pool = req.query.pool })
  if not ok then return 502, { err = err } end
  local reused = sock:getreusedtimes()
  sock:send(cmd("CLIENT", "ID"))
  local id = reply(sock)
  local kept, kerr = sock:setkeepalive(10000, 4)
  return { id = id, reused = reused, kept = kept, kerr = kerr, after = select(2, sock:send("x")) }
end)

api.get("/keep_unread", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.redis))
  sock:send(cmd("PING"))
  api.sleep(100)                    -- the reply is there, unread
  local ok, err = sock:setkeepalive()
  local sock2 = api.socket.tcp()
  assert(sock2:connect("127.0.0.1", P.redis))
  local reused = sock2:getreusedtimes()
  sock2:close()
  return { ok = ok, err = err, reused = reused }
end)

api.get("/multipart", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(2000, 2000, 5000)
  assert(sock:connect("127.0.0.1", P.multi))
  local out = { parts = {} }
  out.first = sock:receive("*l")
  local reader = sock:receiveuntil("\r\n--XYZ")
  local size = tonumber(req.query.size)
  while true do
    local headers = {}
    while true do
      local l, err = sock:receive("*l")
      if not l then return 500, { err = err } end
      if l == "" then break end
      headers[#headers + 1] = l
    end
    local data
    if size then
      local pieces, max = {}, 0
      while true do
        local p, err = reader(size)
        if err then return 500, { err = err } end
        if not p then break end
        max = math.max(max, #p)
        pieces[#pieces + 1] = p
      end
      data = table.concat(pieces)
      out.max_piece = math.max(out.max_piece or 0, max)
    else
      local err
      data, err = reader()
      if not data then return 500, { err = err } end
    end
    out.parts[#out.parts + 1] = { headers = headers, hex = hex(data) }
    local rest = sock:receive("*l")
    if rest == "--" then break end
  end
  out.tail, out.tail_err = sock:receive("*a")
  return out
end)

api.get("/inclusive", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.multi))
  local r = sock:receiveuntil("\r\n", { inclusive = true })
  local a = r()
  local b = r()
  sock:close()
  return { a = a, b = b }
end)

api.get("/many_lines", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.many))
  local n, last, small = 0, nil, 0
  while true do
    local l, err = sock:receive(req.query.n and tonumber(req.query.n) or "*l")
    if not l then return { n = n, last = last, err = err } end
    n = n + 1
    last = l
  end
end)

api.get("/misc", function(req)
  local out = {}
  -- by name: the name cache's addresses tried in turn (::1 may refuse; 127.0.0.1 answers)
  local s = api.socket.tcp()
  local ok, err = s:connect("localhost", P.redis)
  out.byname = ok and (s:send(cmd("PING")) and s:receive("*l")) or err
  s:close()
  local v = api.socket.tcp()
  assert(v:connect("::1", P.v6))
  v:send("six\n")
  out.v6 = v:receive("*l")
  out.v6_str = tostring(v)
  v:close()
  -- a peer that speaks no TLS
  local t = api.socket.tcp()
  t:settimeouts(2000, 2000, 2000)
  out.notls = select(2, t:connect("127.0.0.1", P.lines, { tls = true }))
  -- a TLS peer that never answers the hello
  local u = api.socket.tcp()
  u:settimeouts(300, 2000, 2000)
  out.silent_tls = select(2, u:connect("127.0.0.1", P.silent, { tls = true }))
  return out
end)

api.get("/keep_mid", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.multi))
  local r = sock:receiveuntil("\r\n--XYZ")
  assert(r(2) == "--")
  local ok, err = sock:setkeepalive()
  return { ok = ok, err = err }
end)

api.get("/lines", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.lines))
  local a = sock:receive("*l")
  local b = sock:receive()
  local c = sock:receive("*a")
  local d, e = sock:receive("*a")
  local sock2 = api.socket.tcp()
  assert(sock2:connect("127.0.0.1", P.lines))
  sock2:receive("*l"); sock2:receive("*l")
  local f, ferr, fpartial = sock2:receive("*l")
  local g, gerr = sock2:receive(1)
  return { a = a, b = b, c = c, d = d, e = e, f = f or "nil", ferr = ferr, fpartial = fpartial,
           gerr = gerr }
end)

api.get("/connect_timeout", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(300, 1000, 1000)
  local t0 = api.now and api.now() or os.time()
  local ok, err = sock:connect("127.0.0.1", P.full)
  return { ok = ok, err = err }
end)

api.get("/read_timeout", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(1000, 1000, 200)
  assert(sock:connect("127.0.0.1", P.silent_hello))
  local a, aerr, apartial = sock:receive(5)
  sock:settimeout(3000)
  local b, berr = sock:receive(5)
  sock:close()
  return { a = a or "nil", aerr = aerr, apartial = apartial, b = b, berr = berr }
end)

api.get("/send_timeout", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(1000, 300, 1000)
  assert(sock:connect("127.0.0.1", P.stuck))
  local chunk = string.rep("y", 1024 * 1024)
  local sent, err = 0, nil
  for i = 1, 400 do
    local n, e = sock:send(chunk)
    if not n then err = e break end
    sent = sent + n
  end
  return { err = err, sent = sent, after = select(2, sock:receive(1)) }
end)

api.get("/too_large", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(1000, 1000, 5000)
  assert(sock:connect("127.0.0.1", P.endless))
  local out = {}
  out.line, out.line_err = sock:receive("*l")
  out.after = select(2, sock:receive(1))
  assert(sock:connect("127.0.0.1", P.endless))
  local r = sock:receiveuntil("--never--")
  out.until_, out.until_err = r()
  assert(sock:connect("127.0.0.1", P.endless))
  out.all, out.all_err = sock:receive("*a")
  assert(sock:connect("127.0.0.1", P.endless))
  local p = sock:receiveuntil("--never--")
  local piece = p(1000)
  out.sized = #piece
  sock:close()
  out.line, out.until_, out.all = out.line or "nil", out.until_ or "nil", out.all or "nil"
  return out
end)

api.get("/reset", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(1000, 1000, 3000)
  assert(sock:connect("127.0.0.1", P.reset))
  local d, err, partial = sock:receive(100)
  return { d = d or "nil", err = err, partial = partial, after = select(2, sock:send("x")) }
end)

local held = nil
api.get("/hold", function(req)
  held = api.socket.tcp()
  assert(held:connect("127.0.0.1", P.redis))
  api.sleep(tonumber(req.query.ms) or 0)
  return { ok = true }
end)

api.get("/use_held", function(req)
  local n, err = held:send(cmd("PING"))
  local d, rerr = held:receive(1)
  local r = held:receiveuntil("x")
  local r1, r2 = r()
  local ok, cerr = held:close()
  return { err = err, rerr = rerr, r2 = r2, cerr = cerr }
end)

api.get("/left_open", function(req)
  local sock = api.socket.tcp()
  assert(sock:connect("127.0.0.1", P.ended))
  sock:send("left open\n")
  return { ok = true }
end)

api.get("/tls", function(req)
  local sock = api.socket.tcp()
  sock:settimeouts(2000, 2000, 2000)
  local tls = { ca = req.query.ca ~= "none" and CA or nil, server_name = req.query.name }
  if req.query.verify == "off" then tls.verify = false end
  local ok, err = sock:connect("127.0.0.1", P.tls, { tls = tls })
  if not ok then return { err = err } end
  sock:send({ "hi ", "there\n" })
  local line, lerr = sock:receive("*l")
  local kept = sock:setkeepalive()
  local sock2 = api.socket.tcp()
  assert(sock2:connect("127.0.0.1", P.tls, { tls = tls }))
  local reused = sock2:getreusedtimes()
  sock2:send("again\n")
  local line2 = sock2:receive("*l")
  sock2:close()
  return { line = line, lerr = lerr, kept = kept, reused = reused, line2 = line2 }
end)

api.get("/invalid", function(req)
  local out = {}
  local s = api.socket.tcp()
  out.port0 = select(2, s:connect("127.0.0.1", 0))
  out.port70000 = select(2, s:connect("127.0.0.1", 70000))
  out.port_str = select(2, s:connect("127.0.0.1", "80"))
  out.host_empty = select(2, s:connect("", 6379))
  out.host_nil = select(2, s:connect(nil, 6379))
  out.host_space = select(2, s:connect("a b", 6379))
  out.opts = select(2, s:connect("127.0.0.1", P.redis, "x"))
  out.tls = select(2, s:connect("127.0.0.1", P.redis, { tls = 5 }))
  out.timeout = select(2, s:settimeouts(-1))
  out.recv_closed = select(2, s:receive(1))
  assert(s:connect("127.0.0.1", P.redis))
  out.send_bool = select(2, s:send(true))
  out.send_tbl = select(2, s:send({ "a", { true } }))
  out.send_nil = select(2, s:send())
  out.recv_pat = select(2, s:receive("*x"))
  out.recv_neg = select(2, s:receive(-1))
  out.until_empty = select(2, s:receiveuntil(""))
  out.reader_size = select(2, s:receiveuntil("x")(0))
  out.keep_bad = select(2, s:setkeepalive(-5))
  out.keep_bad2 = select(2, s:setkeepalive(1000, 0))
  out.still = s:send(cmd("PING")) ~= nil and s:receive("*l")
  out.dns = select(2, api.socket.tcp():connect("nosuchhost.invalid", 80))
  out.refused = select(2, api.socket.tcp():connect("127.0.0.1", FREE_PORT))
  s:close()
  out.close_twice = select(2, s:close())
  return out
end)

api.get("/parallel", function(req)
  local a = redis()
  local b = redis()
  local r1, r2 = api.parallel(
    function() a:send(cmd("ECHO", "one")) return reply(a) end,
    function() b:send(cmd("ECHO", "two")) return reply(b) end)
  -- two coroutines reading one socket at once: the second is refused
  local x, y = api.parallel(
    function() return { a:receive(1) } end,
    function() api.sleep(10) local d, e = a:receive(1) a:send(cmd("PING")) return e end)
  a:close(); b:close()
  return { r1 = r1, r2 = r2, second = y, first = x[2] }
end)

api.get("/close_wakes_reader", function(req)
  local s = redis()
  local r, c = api.parallel(
    function() return { s:receive(1) } end,
    function() api.sleep(20) return { s:close() } end)
  return { rerr = r[2], closed = c[1] }
end)

api.get("/backlog", function(req)
  -- pool_size 1 with a backlog of 1: one connection, one waiter, the third refused
  local function use(hold)
    local s = api.socket.tcp()
    s:settimeouts(tonumber(req.query.ct) or 2000, 2000, 2000)
    local ok, err = s:connect("127.0.0.1", P.redis, { pool = "capped", pool_size = 1, backlog = 1 })
    if not ok then return { err = err } end
    local reused = s:getreusedtimes()
    api.sleep(hold)
    s:send(cmd("CLIENT", "ID"))
    local id = reply(s)
    s:setkeepalive()
    return { id = id, reused = reused }
  end
  local a, b, c = api.parallel(
    function() return use(200) end,
    function() api.sleep(20) return use(0) end,
    function() api.sleep(40) return use(0) end)
  return { a = a, b = b, c = c }
end)

api.get("/concurrent_rw", function(req)
  -- one coroutine waits for a reply while another sends the command
  local s = redis()
  local got, sent = api.parallel(
    function() return reply(s) end,
    function() api.sleep(20) return s:send(cmd("ECHO", "rw")) end)
  s:close()
  return { got = got, sent = sent }
end)

-- a child given up on by with_timeout still reads when the request ends
api.get("/abandoned", function(req)
  local s = api.socket.tcp()
  s:settimeouts(1000, 1000, 5000)
  assert(s:connect("127.0.0.1", P.silent))
  local done, why = api.with_timeout(50, function() return s:receive(10) end)
  return { done = done, why = why }
end)

-- a child given up on connects after its request ended: refused (nothing would close it)
local late = {}
api.get("/late", function(req)
  api.with_timeout(10, function()
    api.sleep(150)
    late.sock = api.socket.tcp()
    late.ok, late.err = late.sock:connect("127.0.0.1", P.redis)
  end)
  return { ok = true }
end)
api.get("/late_result", function() return { ok = late.ok, err = late.err } end)

api.post("/batch", api.batch({
  echo = function(params, ctx)
    local s = redis()
    s:send(cmd("ECHO", params.msg))
    local v = reply(s)
    s:setkeepalive()
    return { echoed = v }
  end,
}))

api.get("/job", function(req)
  return { id = api.jobs.add("sockecho", { msg = req.query.msg }) }
end)
api.get("/jobget", function(req) return api.jobs.get(req.query.id) end)

local started = nil
api.on_start(function()
  local s = api.socket.tcp()
  local ok, err = s:connect("127.0.0.1", P.redis)
  if not ok then started = err return end
  s:send(cmd("ECHO", "from on_start"))
  started = reply(s)
  s:close()
end)
api.get("/started", function() return { started = started } end)
"""


JOB = r"""local api = require "devloop"
return function(data, job)
  local s = api.socket.tcp()
  assert(s:connect("127.0.0.1", REDIS_PORT))
  s:send("*2\r\n$4\r\nECHO\r\n$" .. #data.msg .. "\r\n" .. data.msg .. "\r\n")
  local h = assert(s:receive("*l"))
  local v = assert(s:receive(tonumber(h:sub(2)) + 2))
  s:close()
  return { echoed = v:sub(1, -3) }
end
""".replace("REDIS_PORT", str(REDIS.port))


def routes():
    ports = "{ " + ", ".join("%s = %d" % kv for kv in PORTS.items()) + " }"
    return (ROUTES.replace("PORTS_TABLE", ports).replace("CA_FILE", '"%s"' % CERT)
            .replace("FREE_PORT", str(harness.free_port())))


def get(srv, path, status=200):
    r = srv.get(path)
    assert r.status == status, (path, r.status, r.body[:2000])
    return r.json()


def test_redis_resp_by_hand(srv):
    out = get(srv, "/redis")
    assert out["ping"] == "PONG", out
    assert out["set"] == "OK" and out["bin_same"] is True, out
    assert out["pipe"] == ["0", "1", "2", "42"] or out["pipe"] == ["1", "1", "2", "42"], out
    assert out["big_head"] == "$3200000" and out["big_same"] and out["big_crlf"], out


def test_keepalive_reuses_one_connection(srv):
    first = get(srv, "/keep")
    assert first["kept"] == 1 and first["after"] == "closed", first
    ids = [first["id"]]
    reused = []
    for _ in range(8):
        out = get(srv, "/keep")
        assert out["kept"] == 1, out
        ids.append(out["id"])
        reused.append(out["reused"])
    # one connection served every request: the same client id, reused more each time
    assert len(set(ids)) == 1, ids
    assert reused == sorted(reused) and reused[-1] >= 8, reused
    # a named pool is another pool: a new connection
    named = get(srv, "/keep?pool=other")
    assert named["id"] != ids[0] and named["reused"] == 0, named


def test_keepalive_refused_with_unread_data(srv):
    out = get(srv, "/keep_unread")
    assert out.get("ok") is None and out["err"].startswith("invalid: unread data"), out


def test_receiveuntil_multipart_tiny_pieces(srv):
    for q in ("", "?size=7", "?size=1", "?size=5000"):
        out = get(srv, "/multipart" + q)
        assert out["first"] == "--XYZ", out
        parts = out["parts"]
        assert len(parts) == 2, out
        assert parts[0]["headers"] == ['Content-Disposition: form-data; name="a"'], parts
        assert bytes.fromhex(parts[0]["hex"]) == PART_A, (q, parts[0])
        assert bytes.fromhex(parts[1]["hex"]) == PART_B, q
        if q:
            size = int(q.split("=")[1])
            assert out["max_piece"] <= size, out
        assert out["tail"] == "", out


def test_receiveuntil_inclusive(srv):
    out = get(srv, "/inclusive")
    assert out["a"] == "--XYZ\r\n", out
    assert out["b"] == 'Content-Disposition: form-data; name="a"\r\n', out


def test_many_small_reads_stay_linear(srv):
    t0 = time.time()
    out = get(srv, "/many_lines")
    assert out["n"] == N_LINES and out["last"] == "line %06d" % (N_LINES - 1), out
    assert out["err"] == "closed", out
    out = get(srv, "/many_lines?n=12")
    assert out["n"] == N_LINES and out["last"] == "line %06d\n" % (N_LINES - 1), out
    assert time.time() - t0 < 20, time.time() - t0


def test_by_name_and_bad_tls_peers(srv):
    out = get(srv, "/misc")
    assert out["byname"] == "+PONG", out
    assert out["notls"].startswith("tls: "), out
    assert out["v6"] == "echo:six" and "[::1]:%d" % V6.port in out["v6_str"], out
    assert out["silent_tls"].startswith("timeout"), out


def test_keepalive_refused_inside_a_part(srv):
    out = get(srv, "/keep_mid")
    assert out.get("ok") is None and out["err"].startswith("invalid: a receiveuntil reader"), out


def test_lines_and_all(srv):
    out = get(srv, "/lines")
    assert out["a"] == "line1" and out["b"] == "line2", out
    assert out["c"] == "last-no-newline", out
    # after *a the socket is closed
    assert out.get("d") is None and out["e"] == "closed", out
    assert out["f"] == "nil" and out["ferr"] == "closed" and out["fpartial"] == "last-no-newline", out
    assert out["gerr"] == "closed", out


def test_connect_timeout_full_listener(srv):
    t0 = time.time()
    out = get(srv, "/connect_timeout")
    took = time.time() - t0
    assert out.get("ok") is None and out["err"].startswith("timeout"), out
    assert took < 5, took


def test_read_timeout_keeps_socket_open(srv):
    t0 = time.time()
    out = get(srv, "/read_timeout")
    assert out["a"] == "nil" and out["aerr"] == "timeout" and out["apartial"] == "", out
    assert out["b"] == "hello", out
    assert time.time() - t0 < 5


def test_send_timeout_closes(srv):
    t0 = time.time()
    out = get(srv, "/send_timeout")
    assert out["err"] == "timeout" and out["after"] == "closed", out
    assert time.time() - t0 < 15


def test_bounds_too_large(srv):
    out = get(srv, "/too_large")
    assert out["line"] == "nil" and out["line_err"].startswith("too large"), out
    assert out["after"] == "closed", out
    assert out["until_"] == "nil" and out["until_err"].startswith("too large"), out
    assert out["all"] == "nil" and out["all_err"].startswith("too large"), out
    assert out["sized"] == 1000, out


def test_reset_gives_closed_and_partial(srv):
    out = get(srv, "/reset")
    assert out["d"] == "nil" and out["err"] == "closed" and out["partial"] == "partial", out
    assert out["after"] == "closed", out


def test_socket_of_another_request_refused(srv):
    # the owner still runs (sleeping) while another request uses its socket
    th = threading.Thread(target=lambda: get(srv, "/hold?ms=800"))
    th.start()
    time.sleep(0.3)
    out = get(srv, "/use_held")
    th.join()
    msg = "invalid: the socket belongs to another request"
    assert out["err"] == msg and out["rerr"] == msg and out["r2"] == msg, out
    assert out["cerr"] == msg, out
    # and after the owner ended
    out = get(srv, "/use_held")
    assert out["err"] == msg, out


def test_socket_left_open_is_closed_at_request_end(srv):
    n = len(ENDED.eofs)
    t0 = time.time()
    get(srv, "/left_open")
    deadline = time.time() + 5
    while len(ENDED.eofs) == n and time.time() < deadline:
        time.sleep(0.02)
    assert len(ENDED.eofs) == n + 1, "the upstream never saw EOF"
    assert ENDED.eofs[-1] - t0 < 3


def test_tls(srv):
    out = get(srv, "/tls?name=localhost")
    assert out["line"] == "echo:hi there" and out["kept"] == 1, out
    assert out["reused"] == 1 and out["line2"] == "echo:again", out
    out = get(srv, "/tls?ca=none&name=localhost")
    assert out["err"].startswith("tls: "), out
    out = get(srv, "/tls?name=wrong.example")
    assert out["err"].startswith("tls: "), out
    out = get(srv, "/tls?ca=none&verify=off&name=wrong.example")
    assert out.get("line") == "echo:hi there", out


def test_invalid_input(srv):
    out = get(srv, "/invalid")
    for k in ("keep_bad", "keep_bad2", "port0", "port70000", "port_str", "host_empty", "host_nil", "host_space", "opts",
              "tls", "timeout", "send_bool", "send_tbl", "send_nil", "recv_pat", "recv_neg",
              "until_empty", "reader_size"):
        assert out[k].startswith("invalid: "), (k, out[k])
    assert out["recv_closed"] == "closed", out
    assert out["still"] == "+PONG", out
    assert out["dns"].startswith("dns: "), out
    assert out["refused"].startswith("connect: "), out
    assert out["close_twice"] == "closed", out


def test_parallel(srv):
    out = get(srv, "/parallel")
    assert out["r1"] == "one" and out["r2"] == "two", out
    assert out["second"] == "invalid: the socket is already being read by another coroutine", out
    out = get(srv, "/concurrent_rw")
    assert out["got"] == "rw" and out["sent"] > 0, out


def test_abandoned_reader_closed_at_request_end(srv):
    n = len(SILENT.eofs)
    out = get(srv, "/abandoned")
    assert out["done"] is False and out["why"] == "timeout", out
    deadline = time.time() + 5
    while len(SILENT.eofs) == n and time.time() < deadline:
        time.sleep(0.02)
    assert len(SILENT.eofs) == n + 1, "the upstream never saw EOF"


def test_connect_after_the_request_ended_refused(srv):
    get(srv, "/late")
    time.sleep(0.4)
    out = get(srv, "/late_result")
    assert out.get("ok") is None and out["err"].startswith("invalid: the request"), out


def test_batch_operations(srv):
    body = json.dumps({"operations": [{"id": str(i), "type": "echo", "params": {"msg": "m%d" % i}}
                                      for i in range(6)]})
    r = srv.request("POST", "/batch", {"Content-Type": "application/json"}, body)
    assert r.status == 200, r
    res = r.json()["results"]
    assert [x["result"]["echoed"] for x in res] == ["m%d" % i for i in range(6)], res


def test_job_processor(srv):
    jid = get(srv, "/job?msg=from-job")["id"]
    deadline = time.time() + 10
    while time.time() < deadline:
        job = get(srv, "/jobget?id=%s" % jid)
        if job.get("state") in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert job["state"] == "completed" and job["result"] == {"echoed": "from-job"}, job


def test_close_wakes_a_parked_reader(srv):
    out = get(srv, "/close_wakes_reader")
    assert out["rerr"] == "closed" and out["closed"] == 1, out


def test_pool_size_and_backlog(srv):
    out = get(srv, "/backlog")
    assert out["a"]["reused"] == 0 and out["a"]["id"], out
    # the waiter was handed the first caller's connection
    assert out["b"]["id"] == out["a"]["id"] and out["b"]["reused"] == 1, out
    assert out["c"]["err"].startswith("connect: "), out
    # a waiter whose connect timeout runs out
    out = get(srv, "/backlog?ct=50")
    assert out["b"]["err"].startswith("timeout"), out


def test_idle_connection_killed_by_peer_is_replaced(srv):
    first = get(srv, "/keep?pool=killme")
    assert first["kept"] == 1, first
    REDIS.cli("CLIENT", "KILL", "ID", first["id"])
    time.sleep(0.1)
    out = get(srv, "/keep?pool=killme")
    assert out["kept"] == 1 and out["id"] != first["id"] and out["reused"] == 0, out


def test_on_start_hook(srv):
    assert get(srv, "/started")["started"] == "from on_start"


if __name__ == "__main__":
    harness.main(globals(), app=harness.new_app({"routes/r.lua": routes(), "jobs/sockecho.lua": JOB}))
