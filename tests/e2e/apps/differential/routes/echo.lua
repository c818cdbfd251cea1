-- The differential-test app (tests/e2e/test_http_differential.py): every method
-- on every path answers with how devloop framed the request -- method, target,
-- version, each header and the body's length and SHA-256 -- so the test can set
-- it beside python3-h11's reading of the same bytes. Everything is hex, so odd
-- bytes in a target or a value survive, and it is sent twice: as the body and
-- in X-Echo, which a HEAD answer keeps.
local api = require "devloop"
local crypto = require "devloop.crypto"

local function echo(req)
  local body = req.raw_body
  local out = {
    "method " .. crypto.hex(req.method),
    "target " .. crypto.hex(req.target),
    "version " .. crypto.hex(req.http_version),
    "body " .. #body .. " " .. crypto.hex(crypto.sha256(body)),
  }
  local names = {}
  for name in pairs(req.headers) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    out[#out + 1] = "header " .. crypto.hex(name) .. " " .. crypto.hex(req.headers[name])
  end
  local text = table.concat(out, "\n") .. "\n"
  return 200, text, { ["Content-Type"] = "text/plain", ["X-Echo"] = crypto.hex(text) }
end

api.route("*", "/", echo)
api.route("*", "/*path", echo)

-- what the harness asks after every test to see the server is still up
api.get("/hello", function() return "Hello, World!" end)
