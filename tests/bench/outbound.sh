#!/usr/bin/env bash
# Outbound bench (issue 20): a route that makes one outbound GET to a local
# upstream (plain nginx, a 24-byte body), devloop's api.http against the
# nginx-lua peer doing the same with a cosocket HTTP client
# (outbound/nginx-lua/bench_http.lua). One core each: the server under test
# on CPU 0, wrk and the upstream on CPU 1; rounds alternate the order and the
# medians are printed with the ratio.
#   tests/bench/outbound.sh [path/to/devloop]     ROUNDS=3 DUR=10 CONNS=64
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/bench/outbound
BIN=${1:-$ROOT/build-release/devloop}
WRK_LUA=${WRK_LUA:-$ROOT/../shared/bench/lib/wrk-route.lua}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10}
CONNS=${CONNS:-64}
UPSTREAM_PORT=${UPSTREAM_PORT:-18085}
PORT=${PORT:-18091}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
RUNDIR=$(mktemp -d /tmp/devloop-outbound-bench.XXXXXX)
USER_LINE=""
if [ "$(id -u)" = 0 ]; then USER_LINE="user nobody nogroup;"; fi
render() { # TEMPLATE OUT
  sed -e "s|@PORT@|$PORT|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" -e "s|@RUNDIR@|$RUNDIR|g" \
      -e "s|@LUADIR@|$HERE/nginx-lua|g" -e "s|@USER_LINE@|$USER_LINE|g" "$1" > "$2"
}
render "$HERE/upstream.conf.tmpl" "$RUNDIR/upstream.conf"
render "$HERE/nginx-lua/nginx.conf.tmpl" "$RUNDIR/nginx-lua.conf"
taskset -c 1 "$NGINX" -p "$RUNDIR" -e "$RUNDIR/upstream-error.log" -c "$RUNDIR/upstream.conf" \
  -g 'daemon off;' &
UPID=$!
trap 'kill $UPID 2>/dev/null || true; rm -rf "$RUNDIR"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$UPSTREAM_PORT/small" >/dev/null && break; sleep 0.1; done

start_peer() { # NAME -> pid in PEER_PID
  case $1 in
    devloop) UPSTREAM_PORT=$UPSTREAM_PORT DEVLOOP_LOG_DIR=- taskset -c 0 "$BIN" serve "$HERE/app" \
               --listen 127.0.0.1:$PORT --workers 1 >"$RUNDIR/devloop.log" 2>&1 & ;;
    nginx-lua) taskset -c 0 "$NGINX" -p "$RUNDIR" -e "$RUNDIR/error.log" -c "$RUNDIR/nginx-lua.conf" \
                 -g 'daemon off;' >/dev/null 2>&1 & ;;
  esac
  PEER_PID=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/outbound" >/dev/null && return; sleep 0.1; done
  echo "$1 did not answer on :$PORT" >&2
  exit 1
}

# CPU ticks (user + system) of a peer's process tree: the server's CPU per
# request is steadier than req/s on a shared machine.
cpu_ticks() { # PID
  local t=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
HZ=$(getconf CLK_TCK)
echo "| round | peer | req/s | p99 ms | errors | server CPU us/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for round in $(seq "$ROUNDS"); do
  order="devloop nginx-lua"
  if [ $((round % 2)) = 0 ]; then order="nginx-lua devloop"; fi
  for peer in $order; do
    start_peer "$peer"
    taskset -c 1 wrk -t1 -c"$CONNS" -d3s -s "$WRK_LUA" "http://127.0.0.1:$PORT/outbound" >/dev/null 2>&1
    c0=$(cpu_ticks "$PEER_PID")
    line=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$WRK_LUA" \
      "http://127.0.0.1:$PORT/outbound" 2>/dev/null | awk '/WRKRESULT/')
    c1=$(cpu_ticks "$PEER_PID")
    kill "$PEER_PID"; wait "$PEER_PID" 2>/dev/null || true
    read -r _ reqs us _ ec er ew es et _ _ p99 _ <<<"$line"
    rps=$(echo "$reqs * 1000000 / $us" | bc)
    cpu=$(echo "($c1 - $c0) * 1000000 / $HZ / $reqs" | bc -l | xargs printf '%.1f')
    echo "$round $peer $rps $p99 $((ec + er + ew + es + et)) $cpu" >> "$RUNDIR/rows"
    echo "| $round | $peer | $rps | $(echo "scale=2; $p99 / 1000" | bc) | $((ec + er + ew + es + et)) | $cpu |"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
d=$(awk '$2 == "devloop" {print $3}' "$RUNDIR/rows" | median)
n=$(awk '$2 == "nginx-lua" {print $3}' "$RUNDIR/rows" | median)
dp=$(awk '$2 == "devloop" {print $4}' "$RUNDIR/rows" | median)
np=$(awk '$2 == "nginx-lua" {print $4}' "$RUNDIR/rows" | median)
dc=$(awk '$2 == "devloop" {print $6}' "$RUNDIR/rows" | median)
nc=$(awk '$2 == "nginx-lua" {print $6}' "$RUNDIR/rows" | median)
echo
echo "medians: devloop $d req/s (p99 $(echo "scale=2; $dp / 1000" | bc) ms), nginx-lua $n req/s" \
  "(p99 $(echo "scale=2; $np / 1000" | bc) ms); devloop / nginx-lua = $(echo "scale=2; $d / $n" | bc)"
echo "server CPU per request: devloop $dc us, nginx-lua $nc us"
