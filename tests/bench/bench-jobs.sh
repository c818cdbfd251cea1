#!/usr/bin/env bash
# Job throughput and latency (issue 7's figures), one run:
#  - jobs/s through a no-op processor and one doing one Redis GET, with the
#    same concurrency (10): devloop on Redis, Bull 4 (npm, Node) on the same
#    Redis, devloop on its embedded store
#  - time from add to start at idle (median, p99), devloop and Bull
#   tests/bench/bench-jobs.sh [N]      (N jobs per run, default 20000; ROUNDS=3 runs each, medians)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-20000}
ROUNDS=${ROUNDS:-3}
CONC=10
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/devloop-jobbench.XXXXXX)
RPORT=16398; PORT=18194
redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
RPID=$!
SPID=""
cleanup() { [ -n "$SPID" ] && kill $SPID 2>/dev/null; kill $RPID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
sleep 0.3
redis-cli -p $RPORT SET bench:key value >/dev/null
export REDIS_URL_BENCH="redis://127.0.0.1:$RPORT"

# Bull from the npm registry, in a scratch folder
(cd "$WORK" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent bull@4 ioredis@5 >/dev/null)
cp "$ROOT/tests/bench/apps/bull/bull-bench.js" "$WORK/"

start_devloop() { # env...
  env "$@" DEVLOOP_LOG_DIR=- DEVLOOP_DB="$WORK/jobs-$RANDOM.db" BENCH_CONCURRENCY=$CONC \
    "$BIN" serve "$ROOT/tests/bench/apps/jobs-app" --listen 127.0.0.1:$PORT --workers 1 --no-watch \
    --pid-file "$WORK/pid" --log-level warn &
  SPID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$PORT/rate && return; sleep 0.1; done
}
stop_devloop() { kill $SPID; wait $SPID 2>/dev/null || true; SPID=""; }

devloop_rate() { # type -> jobs/s, measured in the app (first add to Nth processor return)
  local type=$1 r
  curl -s -XPOST -H 'Content-Type: application/json' -d "{\"type\":\"$type\",\"n\":$N}" \
    http://127.0.0.1:$PORT/enqueue >/dev/null
  while :; do
    r=$(curl -s http://127.0.0.1:$PORT/rate | python3 -c 'import sys,json; print(json.load(sys.stdin)["rate"])')
    [ "$r" != 0 ] && break
    sleep 0.1
  done
  echo "$r"
}

devloop_latency() {
  for _ in $(seq 200); do
    curl -s -XPOST http://127.0.0.1:$PORT/latency >/dev/null; sleep 0.01
  done
  sleep 0.3
  curl -s http://127.0.0.1:$PORT/latencies | python3 -c '
import sys, json
l = sorted(json.load(sys.stdin)); print("median %.1f ms, p99 %.1f ms" % (l[len(l)//2], l[int(len(l)*0.99)-1]))'
}

med() { python3 -c 'import sys; v = sorted(map(int, sys.argv[1:])); print(v[len(v)//2])' "$@"; }

echo "== $N jobs a run, concurrency $CONC, $ROUNDS runs each (median, then every run) =="
DN=(); DR=(); SN=(); BN=(); BR=()
start_devloop REDIS_URL="$REDIS_URL_BENCH"
for _ in $(seq $ROUNDS); do DN+=("$(devloop_rate noop)"); DR+=("$(devloop_rate rget)"); done
DLAT=$(devloop_latency)
stop_devloop
start_devloop
for _ in $(seq $ROUNDS); do SN+=("$(devloop_rate noop)"); done
SLAT=$(devloop_latency)
stop_devloop
for _ in $(seq $ROUNDS); do
  BN+=("$(cd "$WORK" && node bull-bench.js "$REDIS_URL_BENCH" noop "$N" $CONC | python3 -c '
import sys, json
for line in sys.stdin:
    d = json.loads(line)
    if "jobs_per_s" in d: print(d["jobs_per_s"])
    else: open("lat", "w").write("median %d ms, p99 %d ms" % (d["latency_ms_median"], d["latency_ms_p99"]))')")
  BR+=("$(cd "$WORK" && node bull-bench.js "$REDIS_URL_BENCH" rget "$N" $CONC | python3 -c '
import sys, json; print(json.loads(sys.stdin.readline())["jobs_per_s"])')")
done
dn=$(med "${DN[@]}"); dr=$(med "${DR[@]}"); sn=$(med "${SN[@]}"); bn=$(med "${BN[@]}"); br=$(med "${BR[@]}")
echo "devloop (Redis)  noop: $dn jobs/s (${DN[*]})   rget: $dr jobs/s (${DR[*]})"
echo "devloop (Redis)  add->start at idle: $DLAT"
echo "devloop (SQLite) noop: $sn jobs/s (${SN[*]})   (rget needs Redis)"
echo "devloop (SQLite) add->start at idle: $SLAT"
echo "bull 4 (Redis)   noop: $bn jobs/s (${BN[*]})   rget: $br jobs/s (${BR[*]})"
echo "bull 4 (Redis)   add->start at idle: $(cat "$WORK/lat")"
python3 -c "print('ratio devloop/bull (medians): noop %.2fx, rget %.2fx' % ($dn / $bn, $dr / $br))"
