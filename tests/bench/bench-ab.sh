#!/usr/bin/env bash
# A/B of two (or more) devloop binaries on examples/bench, alternating rounds
# on a quiet machine: server on CPU 0, wrk on CPU 1, req/s and server CPU per
# request for each route. For small differences run.sh's peer table is too
# coarse (its rounds move 10-20% on a shared machine); this compares like for
# like, one minute apart, and prints every round so the spread is visible.
#   tests/bench/bench-ab.sh before=/path/to/old/devloop after=build-release/devloop
#   PIPE=16 ROUTES="/json /hello" ROUNDS=3 DUR=5 tests/bench/bench-ab.sh a=BIN b=BIN
# Each binary serves the examples/bench next to its build directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WRK_LUA=${WRK_LUA:-$ROOT/../shared/bench/lib/wrk-route.lua}
ROUTES=${ROUTES:-"/json /hello /features?limit=100"}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
PIPE=${PIPE:-1}
PORT=${PORT:-18099}
for round in $(seq "$ROUNDS"); do
  for pair in "$@"; do
    name=${pair%%=*}
    bin=$(cd "$(dirname "${pair#*=}")" && pwd)/$(basename "${pair#*=}")
    app=$(dirname "$(dirname "$bin")")/examples/bench
    DEVLOOP_LOG_DIR=- taskset -c 0 "$bin" serve "$app" --listen 127.0.0.1:$PORT --workers 1 \
      >/dev/null 2>&1 &
    pid=$!
    sleep 1.2
    for r in $ROUTES; do
      WRK_PIPELINE=$PIPE taskset -c 1 wrk -t1 -c64 -d2s -s "$WRK_LUA" "http://127.0.0.1:$PORT$r" \
        >/dev/null 2>&1 # warm-up
      t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
      reqs=$(WRK_PIPELINE=$PIPE taskset -c 1 wrk -t1 -c64 -d"${DUR}s" -s "$WRK_LUA" \
        "http://127.0.0.1:$PORT$r" 2>/dev/null | awk '/WRKRESULT/ {print $2}')
      t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
      tck=$(getconf CLK_TCK)
      echo "round=$round $name $r req/s=$((reqs / DUR)) server_cpu_us/req=$(echo \
        "scale=2; ($t1 - $t0) * 1000000 / $tck / $reqs" | bc)"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
