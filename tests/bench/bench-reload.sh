#!/usr/bin/env bash
# Requests/s on /json with and without a reload every second, in one run
# (issue 3's figure). The server runs on CPU 0, wrk and the editor loop on CPU 1.
#   tests/bench/bench-reload.sh [SECONDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DUR=${1:-15}
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
[ -x "$BIN" ] || { cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null; cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null; }
APP=$(mktemp -d /tmp/devloop-reload-bench.XXXXXX)
cp -r "$ROOT/examples/bench/." "$APP/"
PORT=18191
taskset -c 0 "$BIN" serve "$APP" --listen 127.0.0.1:$PORT --workers 1 --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$APP"' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$PORT/json && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c64 -d3s http://127.0.0.1:$PORT/json >/dev/null
rps() { taskset -c 1 wrk -t1 -c64 -d"${DUR}s" http://127.0.0.1:$PORT/json | awk '/Requests\/sec/ {print $2}'; }
base1=$(rps)
( end=$((SECONDS + DUR)); n=0
  while [ $SECONDS -lt $end ]; do n=$((n + 1)); echo "-- edit $n" >> "$APP/routes/bench.lua"; sleep 1; done ) &
EDIT=$!
during=$(rps)
wait $EDIT
base2=$(rps)
echo "json req/s: without reloads $base1 / $base2, with a reload every second $during"
awk -v a="$base1" -v b="$base2" -v d="$during" 'BEGIN { printf "ratio during/without (mean of both baselines): %.3f\n", d / ((a + b) / 2) }'
