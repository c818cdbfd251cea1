local api = require "devloop"
-- the same concurrency as the Bull side of tests/bench/bench-jobs.sh
api.jobs.concurrency.normal = tonumber(os.getenv("BENCH_CONCURRENCY") or "10")
