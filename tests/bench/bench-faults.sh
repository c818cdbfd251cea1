#!/usr/bin/env bash
# /cached/features (examples/bench) with the cache on Redis while Redis is
# up, stopped, and blackholed (SIGSTOP: connections accepted, nothing
# answered) once the breaker has opened, against the same route on the
# in-process cache and against its handler alone (/features?limit=100, the
# same body uncached): an outage should cost what the handler costs, not
# more. Alternating rounds, req/s and p99 per round and the medians. Server
# on CPU 0, wrk on CPU 1.
#   tests/bench/bench-faults.sh [BIN]        ROUNDS=3 DUR=5 CONNS=64 PIPE=1
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/devloop}
WRK_LUA=${WRK_LUA:-$ROOT/../shared/bench/lib/wrk-route.lua}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
CONNS=${CONNS:-64}
PIPE=${PIPE:-1}
PORT=${PORT:-18097}
RPORT=${RPORT:-18096}
ROUTE=/cached/features
MODES=${MODES:-"handler memory up stopped blackholed"}
OUT=$(mktemp -d)
trap 'redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true; kill -CONT $(cat $OUT/redis.pid 2>/dev/null) 2>/dev/null || true; redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true; rm -rf $OUT' EXIT

start_redis() {
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$OUT/redis.pid" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis-server did not start" >&2
  exit 1
}

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

run_mode() {
  local mode=$1 env=() route=$ROUTE
  case $mode in
    memory) ;;
    handler) route="/features?limit=100" ;;
    *) env=(REDIS_URL="redis://127.0.0.1:$RPORT" REDIS_COMMAND_TIMEOUT_MS=200) ;;
  esac
  [ "$mode" = memory ] || [ "$mode" = handler ] || start_redis
  env "${env[@]}" DEVLOOP_LOG_DIR=- taskset -c 0 "$BIN" serve "$ROOT/examples/bench" \
    --listen 127.0.0.1:$PORT --workers 1 >"$OUT/server.log" 2>&1 &
  local pid=$!
  sleep 1.2
  WRK_PIPELINE=$PIPE taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$WRK_LUA" \
    "http://127.0.0.1:$PORT$route" >/dev/null 2>&1 # warm-up (fills the cache)
  case $mode in
    stopped) redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
             until [ "$(metric 'backend_up{backend="redis"}')" = 0 ]; do
               curl -s "http://127.0.0.1:$PORT$ROUTE" >/dev/null; sleep 0.05; done ;;
    blackholed) kill -STOP "$(cat "$OUT/redis.pid")"
             until [ "$(metric 'backend_breaker_state{backend="redis"}')" = 2 ] ||
                   [ "$(metric 'backend_up{backend="redis"}')" = 0 ]; do
               curl -s "http://127.0.0.1:$PORT$ROUTE" >/dev/null; done ;;
  esac
  local line
  line=$(WRK_PIPELINE=$PIPE taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$WRK_LUA" \
    "http://127.0.0.1:$PORT$route" 2>/dev/null | awk '/WRKRESULT/')
  local lookups
  lookups=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^cache_lookup_total/ {printf "%s ", $0}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ "$mode" = blackholed ]; then kill -CONT "$(cat "$OUT/redis.pid")"; fi
  case $mode in memory | handler) ;; *) redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true ;; esac
  sleep 0.3
  # requests, p99 (us), non-2xx
  echo "$line" | awk -v d="$DUR" -v m="$mode" -v l="$lookups" \
    '{printf "%s req/s=%d p99_ms=%.2f errors=%d  %s\n", m, $2 / d, $13 / 1000, $5 + $6 + $7 + $8 + $9, l}'
}

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    echo "round=$round $(run_mode $mode)"
  done
done | tee "$OUT/rounds.txt"
echo "medians over $ROUNDS rounds ($ROUTE; handler: /features?limit=100; $CONNS connections, pipeline $PIPE):"
for mode in $MODES; do
  vals=$(grep " $mode " "$OUT/rounds.txt" | sed 's/.*req\/s=\([0-9]*\) p99_ms=\([0-9.]*\).*/\1 \2/')
  rps=$(echo "$vals" | awk '{print $1}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  p99=$(echo "$vals" | awk '{print $2}' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  printf "  %-10s req/s %s  p99 %s ms\n" "$mode" "$rps" "$p99"
done
