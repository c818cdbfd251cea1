-- devloop.socket: api.socket, TCP cosockets in OpenResty's shape
-- (devloop.socket_core, bindings/dl_socket.c). Each call parks only the
-- calling coroutine; connections are kept per worker in the pool api.http
-- uses, under the name "host:port" (plus the TLS settings) or opts.pool.
--   local sock = api.socket.tcp()
--   sock:settimeouts(connect_ms, send_ms, read_ms)  -- or sock:settimeout(ms); default 60000 each
--   ok, err = sock:connect(host, port, [{ tls = true | { verify = true, ca = FILE,
--                          server_name = NAME }, pool = NAME, pool_size = N, backlog = N }])
--   bytes, err = sock:send(data)                    -- a string or an array of strings
--   data, err, partial = sock:receive(n | "*l" | "*a")
--   local reader = sock:receiveuntil(pattern, [{ inclusive = true }])
--   data, err, partial = reader([size])
--   ok, err = sock:setkeepalive([idle_ms, [pool_size]])  -- closes the socket object
--   ok, err = sock:close();  count, err = sock:getreusedtimes()
-- err: "timeout" (a read timeout leaves the socket open), "closed", or a text
-- starting with its kind: connect, dns, tls, timeout, too large, invalid.
-- A socket belongs to the request (job, start hook) that made it; what is
-- still open when that ends is closed.
local core = require "devloop.socket_core"

return { tcp = core.tcp }
