#!/usr/bin/env bash
# Batch endpoint (issue 8's figure), one run: operations per second through
# POST /api/batch with 20 getFeature operations per request vs the same
# lookups as 20 separate GET /api/features/:id on keep-alive connections.
# examples/devloop-api on its embedded store, one worker on CPU 0, wrk on CPU 1.
#   tests/bench/bench-batch.sh        (DURATION=10 seconds per side)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
DUR=${DURATION:-10}
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/devloop-batchbench.XXXXXX)
cp -r "$ROOT/examples/devloop-api" "$WORK/app"; rm -rf "$WORK/app/data" "$WORK/app/logs"
PORT=18196
DEVLOOP_DB=$WORK/api.db DEVLOOP_LOG_DIR=$WORK/logs taskset -c 0 "$BIN" serve "$WORK/app" \
  --listen 127.0.0.1:$PORT --workers 1 --no-watch --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 300); do
  curl -sf http://127.0.0.1:$PORT/api/features/feat-010000 >/dev/null && break; sleep 0.2
done
run() { taskset -c 1 wrk -t1 -c32 -d"${DUR}s" --latency -s "$ROOT/tests/bench/wrk/$1" "http://127.0.0.1:$PORT" |
        awk '/Requests\/sec/ {r=$2} / 50%/ {m=$2} / 99%/ {p=$2} END {printf "%s %s %s", r, m, p}'; }
run get1.lua >/dev/null # warm-up
read -r g gm gp <<<"$(run get1.lua)"
read -r b bm bp <<<"$(run batch20.lua)"
echo "20 separate GET /api/features/:id: $g req/s = $g ops/s (p50 $gm, p99 $gp)"
echo "POST /api/batch, 20 getFeature:    $b req/s = $(python3 -c "print(round($b * 20))") ops/s (p50 $bm, p99 $bp)"
python3 -c "print('batch / separate (operations per second): %.2fx' % ($b * 20 / $g))"
