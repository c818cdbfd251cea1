#!/usr/bin/env bash
# Middleware cost (issue 21): /json answered by the same route in two apps,
# one plain and one with an app-wide before hook, an after hook, api.cors
# and a local api.rate_limit (a limit no run reaches), in one run. The server
# on CPU 0, wrk on CPU 1, every request with an allowed Origin; rounds
# alternate the order and the medians and their ratio are printed, with the
# server's CPU time per request (steadier than req/s on a shared machine,
# and the cost itself when the server is not the bottleneck: PIPELINE=1).
#   tests/bench/middleware.sh [path/to/devloop]   ROUNDS=3 DUR=8 CONNS=64 PIPELINE=16
#                                                MIDDLEWARE=all|native|hooks
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build-release/devloop}
WRK_LUA=${WRK_LUA:-$ROOT/../shared/bench/lib/wrk-route.lua}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-8}
CONNS=${CONNS:-64}
PIPELINE=${PIPELINE:-16}
PORT=${PORT:-18098}
RUN=$(mktemp -d /tmp/devloop-bench-mw-XXXXXX)
trap 'rm -rf "$RUN"' EXIT
for app in plain hooks; do
  mkdir -p "$RUN/$app/routes"
  cat >"$RUN/$app/routes/bench.lua" <<'LUA'
local api = require "devloop"
api.get("/json", function() return { message = "Hello, World!" } end)
LUA
done
# MIDDLEWARE=native: only api.cors and api.rate_limit; MIDDLEWARE=hooks:
# only the app's before and after hook (what each part costs)
{
  echo 'local api = require "devloop"'
  if [ "${MIDDLEWARE:-all}" != hooks ]; then
    echo 'api.cors{ origins = { "https://app.example" }, credentials = true }'
    echo 'api.rate_limit{ limit = 1000000000, window = 60 }'
  fi
  if [ "${MIDDLEWARE:-all}" != native ]; then
    echo 'api.before(function(req) req.t0 = api.now() end)'
    echo 'api.after(function(req, res) res.headers["x-app"] = "bench" end)'
  fi
} >"$RUN/hooks/app.lua"

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
echo "| round | app | req/s | p99 ms | errors | server CPU us/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for round in $(seq "$ROUNDS"); do
  order="plain hooks"
  if [ $((round % 2)) = 0 ]; then order="hooks plain"; fi
  for app in $order; do
    DEVLOOP_LOG_DIR=- DEVLOOP_DB="$RUN/$app.db" taskset -c 0 "$BIN" serve "$RUN/$app" \
      --listen 127.0.0.1:$PORT --workers 1 --no-watch >"$RUN/$app.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/json" >/dev/null && break; sleep 0.1; done
    export WRK_HEADERS="Origin: https://app.example" WRK_PIPELINE=$PIPELINE
    taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$WRK_LUA" "http://127.0.0.1:$PORT/json" >/dev/null 2>&1
    c0=$(cpu_ticks "$pid")
    line=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$WRK_LUA" \
      "http://127.0.0.1:$PORT/json" 2>/dev/null | awk '/WRKRESULT/')
    c1=$(cpu_ticks "$pid")
    # the hooks really ran: the last answer carries their headers
    if [ "$app" = hooks ] && [ "${MIDDLEWARE:-all}" != hooks ]; then
      curl -fsi -H "Origin: https://app.example" "http://127.0.0.1:$PORT/json" |
        grep -qi '^access-control-allow-origin: https://app.example' || { echo "hooks did not run" >&2; exit 1; }
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    read -r _ reqs us _ ec er ew es et _ _ p99 _ <<<"$line"
    rps=$(echo "$reqs * 1000000 / $us" | bc)
    cpu=$(echo "($c1 - $c0) * 1000000 / $HZ / $reqs" | bc -l | xargs printf '%.2f')
    echo "$round $app $rps $p99 $cpu" >> "$RUN/rows"
    echo "| $round | $app | $rps | $(echo "scale=2; $p99 / 1000" | bc) | $((ec + er + ew + es + et)) | $cpu |"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
p=$(awk '$2 == "plain" {print $3}' "$RUN/rows" | median)
h=$(awk '$2 == "hooks" {print $3}' "$RUN/rows" | median)
pc=$(awk '$2 == "plain" {print $5}' "$RUN/rows" | median)
hc=$(awk '$2 == "hooks" {print $5}' "$RUN/rows" | median)
echo
what="before + after + cors + rate_limit"
[ "${MIDDLEWARE:-all}" = native ] && what="cors + rate_limit"
[ "${MIDDLEWARE:-all}" = hooks ] && what="before + after"
echo "medians: plain $p req/s, with $what $h req/s;" \
  "hooks / plain = $(echo "scale=3; $h / $p" | bc)"
echo "server CPU per request: plain $pc us, with $what $hc us;" \
  "plain / hooks = $(echo "scale=3; $pc / $hc" | bc)"
