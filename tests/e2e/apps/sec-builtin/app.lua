-- The built-in routes as the environment sets them up
-- (tests/e2e/test_security_builtin.py): open by default.
local api = require "devloop"
local token = os.getenv("SEC_OPS_TOKEN")
if token and token ~= "" then api.builtin_routes.token = token end
api.builtin_routes.stats_full = os.getenv("SEC_STATS_FULL") == "1"
