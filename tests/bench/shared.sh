#!/usr/bin/env bash
# api.shared.incr operations per second, measured inside the workers: a route
# runs incr in a Lua loop for MS milliseconds and answers how many it did.
# "one worker": one request at a time; "all workers": one request per worker
# at once (connections retried until every worker has one). Each is run on
# one hot key (every worker on the same shard mutex, the worst case) and on a
# key per worker (different shards). Server pinned to CPUs 0-(WORKERS-1).
#   tests/bench/shared.sh                       # build-release/ (or build/) devloop
#   DEVLOOP_BIN=build/devloop WORKERS=2 MS=2000 ROUNDS=3 tests/bench/shared.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DEVLOOP_BIN:-}
if [ -z "$BIN" ]; then
  BIN=$ROOT/build-release/devloop
  [ -x "$BIN" ] || BIN=$ROOT/build/devloop
fi
WORKERS=${WORKERS:-2}
MS=${MS:-2000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18097}
APP=$(mktemp -d /tmp/devloop-bench-shared-XXXXXX)
mkdir -p "$APP/routes"
cat >"$APP/routes/bench.lua" <<'LUA'
local api = require "devloop"
local incr, now = api.shared.incr, api.now
-- /incr?ms=2000&key=hot: incr for ms milliseconds, checking the clock every 1000
api.get("/incr", function(req)
  local ms = tonumber(req.query.ms) or 1000
  local key = req.query.key == "own" and ("own:" .. api.worker_id()) or "hot"
  local n, t0 = 0, now()
  local stop = t0 + ms / 1000
  local t = t0
  repeat
    for _ = 1, 1000 do incr(key, 1, 0) end
    n = n + 1000
    t = now()
  until t >= stop
  return { worker = api.worker_id(), n = n, s = t - t0 }
end)
LUA
cpus=0-$((WORKERS - 1))
DEVLOOP_LOG_DIR=- taskset -c "$cpus" "$BIN" serve "$APP" --listen 127.0.0.1:$PORT \
  --workers "$WORKERS" --no-watch --pid-file "$APP/pid" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$APP"' EXIT
sleep 1.2
/usr/bin/python3 - "$PORT" "$WORKERS" "$MS" "$ROUNDS" <<'PY'
import json, sys, threading, urllib.request
port, workers, ms, rounds = (int(a) for a in sys.argv[1:5])
def one(key, out, i):
    with urllib.request.urlopen("http://127.0.0.1:%d/incr?ms=%d&key=%s" % (port, ms, key)) as r:
        out[i] = json.loads(r.read())
def run(key, k):
    for _ in range(20):  # until each of the k requests ran on its own worker
        out = [None] * k
        ts = [threading.Thread(target=one, args=(key, out, i)) for i in range(k)]
        for t in ts: t.start()
        for t in ts: t.join()
        if len({o["worker"] for o in out}) == k:
            return sum(o["n"] / o["s"] for o in out)
    raise SystemExit("could not get one request per worker")
one("hot", [None], 0)  # warm-up (JIT)
for key in ("hot", "own"):
    for label, k in (("one worker", 1), ("all %d workers" % workers, workers)):
        rates = sorted(run(key, k) for _ in range(rounds))
        print("incr %-3s key  %-14s median %6.2f M ops/s  (rounds: %s)" % (
            key, label, rates[len(rates) // 2] / 1e6, " ".join("%.2f" % (r / 1e6) for r in rates)))
PY
