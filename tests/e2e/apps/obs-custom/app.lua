local api = require "devloop"
api.builtin_routes.metrics = "/internal/metrics"
api.builtin_routes.stats = false
api.builtin_routes.token = "ops-secret"
