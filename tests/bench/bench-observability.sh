#!/usr/bin/env bash
# /json req/s with the access log and the per-request metrics on and off,
# alternating in one run (issue 6's figures). Server on CPU 0 (all its
# threads, the log writer included), wrk on CPU 1.
#   tests/bench/bench-observability.sh [SECONDS] [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DUR=${1:-8}
ROUNDS=${2:-3}
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/devloop-obsbench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PORT=18193

run() { # name env... -> req/s
  local name=$1; shift
  env "$@" DEVLOOP_LOG_DIR="$WORK/logs-$name" DEVLOOP_DB="$WORK/$name.db" \
    taskset -c 0 "$BIN" serve "$ROOT/examples/bench" --listen 127.0.0.1:$PORT --workers 1 \
    --no-watch --pid-file "$WORK/pid" 2>/dev/null &
  local pid=$!
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:$PORT/json && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c64 -d2s http://127.0.0.1:$PORT/json >/dev/null
  taskset -c 1 wrk -t1 -c64 -d"${DUR}s" http://127.0.0.1:$PORT/json | awk '/Requests\/sec/ {print $2}'
  kill $pid; wait $pid 2>/dev/null || true
}

declare -A sum
for r in $(seq "$ROUNDS"); do
  for cfg in base access nometrics; do
    case $cfg in
      base) v=$(run base DEVLOOP_ACCESS_LOG=0 DEVLOOP_METRICS=1) ;;
      access) v=$(run access DEVLOOP_ACCESS_LOG=1 DEVLOOP_METRICS=1) ;;
      nometrics) v=$(run nometrics DEVLOOP_ACCESS_LOG=0 DEVLOOP_METRICS=0) ;;
    esac
    echo "round $r $cfg: $v req/s" >&2
    sum[$cfg]=$(awk -v a="${sum[$cfg]:-0}" -v b="$v" 'BEGIN {print a + b}')
  done
done
awk -v b="${sum[base]}" -v a="${sum[access]}" -v n="${sum[nometrics]}" -v r="$ROUNDS" 'BEGIN {
  printf "json req/s (mean of %d rounds): metrics on, access log off %.0f | access log on %.0f | metrics off %.0f\n", r, b / r, a / r, n / r
  printf "access log on/off: %.3f   metrics on/off: %.3f\n", a / b, b / n }'
