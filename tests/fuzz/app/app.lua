-- The app the http1 and h2 fuzzers serve (tests/fuzz/fuzz_runtime.c copies it
-- to a temporary folder). The built-in routes are off: their counters and
-- uptimes differ between two runs of the same input.
local api = require "devloop"
api.builtin_routes.metrics = false
api.builtin_routes.health = false
api.builtin_routes.stats = false
