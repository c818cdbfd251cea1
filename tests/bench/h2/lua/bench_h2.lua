-- The /json route of ../shared/bench/peers/nginx-lua/lua/bench.lua, alone:
-- tests/bench/bench-h2.sh only measures /json. Same body and headers as that
-- peer: 200, Content-Type application/json, {"message":"Hello, World!"}.
local cjson = require "cjson"

local ngx = ngx
local ngx_print = ngx.print
local ngx_header = ngx.header

local _M = {}

local function send(status, ctype, body)
  ngx.status = status
  ngx_header["Content-Type"] = ctype
  ngx_header["Content-Length"] = #body
  ngx_print(body)
end

local JSON_CT = "application/json"
function _M.json()
  return send(200, JSON_CT, cjson.encode({ message = "Hello, World!" }))
end

return _M
