-- A minimal HTTP/1.1 GET over ngx.socket.tcp with set_keepalive pooling, the
-- part of lua-resty-http (not a Debian package) the outbound bench needs:
-- status line, headers, a Content-Length or chunked body.
local tcp = ngx.socket.tcp
local tonumber, lower, match = tonumber, string.lower, string.match

local _M = { host = "127.0.0.1", port = 18085, timeout_ms = 10000, pool_size = 32 }

local function get(path)
  local sock = tcp()
  sock:settimeouts(_M.timeout_ms, _M.timeout_ms, _M.timeout_ms)
  local ok, err = sock:connect(_M.host, _M.port, { pool_size = _M.pool_size })
  if not ok then return nil, err end
  local ok2, err2 = sock:send({ "GET ", path, " HTTP/1.1\r\nHost: ", _M.host, "\r\n",
                                "User-Agent: bench\r\n\r\n" })
  if not ok2 then sock:close(); return nil, err2 end
  local line, lerr = sock:receive("*l")
  if not line then sock:close(); return nil, lerr end
  local status = tonumber(match(line, "^HTTP/1%.%d (%d%d%d)"))
  local len, chunked, close = nil, false, false
  while true do
    local h, herr = sock:receive("*l")
    if not h then sock:close(); return nil, herr end
    if h == "" then break end
    local k, v = match(h, "^([^:]+):%s*(.-)%s*$")
    if k then
      k = lower(k)
      if k == "content-length" then len = tonumber(v)
      elseif k == "transfer-encoding" then chunked = lower(v) == "chunked"
      elseif k == "connection" then close = lower(v) == "close" end
    end
  end
  local body
  if chunked then
    local parts = {}
    while true do
      local sz = sock:receive("*l")
      local n = sz and tonumber(match(sz, "^%x+"), 16)
      if not n then sock:close(); return nil, "bad chunk" end
      if n == 0 then sock:receive("*l"); break end
      parts[#parts + 1] = sock:receive(n)
      sock:receive("*l")
    end
    body = table.concat(parts)
  else
    body = sock:receive(len or "*a")
  end
  if close then sock:close() else sock:setkeepalive(60000, _M.pool_size) end
  return status, body
end

function _M.outbound()
  local status, body = get("/small")
  if not status then
    ngx.status = 502
    ngx.say(body)
    return
  end
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(body)
end

return _M
