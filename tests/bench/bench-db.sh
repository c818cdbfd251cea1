#!/usr/bin/env bash
# Document-store benchmark (issue 5's figures), one run:
#  - GET /features?status=completed&limit=50 through HTTP on 100,000 SQLite
#    documents, with its index and without (same query, same data): req/s, p99
#  - a full cursor walk (100 per page): ms per page at the start and the end
#   tests/bench/bench-db.sh            (BENCH_DB_DOCS=100000, DURATION=10)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
DUR=${DURATION:-10}
export BENCH_DB_DOCS=${BENCH_DB_DOCS:-100000}
[ -x "$BIN" ] || { cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null; cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null; }
WORK=$(mktemp -d /tmp/devloop-dbbench.XXXXXX)
PORT=18192
DEVLOOP_DB=$WORK/bench.db taskset -c 0 "$BIN" serve "$ROOT/tests/bench/apps/db-app" --listen 127.0.0.1:$PORT \
  --workers 1 --no-watch --pid-file "$WORK/pid" --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
echo "seeding $BENCH_DB_DOCS documents twice..." >&2
for _ in $(seq 600); do
  curl -sf http://127.0.0.1:$PORT/ready 2>/dev/null | grep -q '"ready":true' && break; sleep 0.5
done
run() { taskset -c 1 wrk -t1 -c32 -d"${DUR}s" --latency "http://127.0.0.1:$PORT$1" |
        awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {printf "%s req/s, p99 %s", r, p}'; }
taskset -c 1 wrk -t1 -c32 -d2s "http://127.0.0.1:$PORT/features?status=completed" >/dev/null
with=$(run "/features?status=completed&limit=50")
without=$(run "/features-noindex?status=completed&limit=50")
echo "GET /features?status=completed&limit=50, $BENCH_DB_DOCS docs"
echo "  with its index:    $with"
echo "  without the index: $without"
python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request
port = sys.argv[1]
cursor, times, ids = None, [], 0
while True:
    url = "http://127.0.0.1:%s/walk" % port + ("?cursor=" + cursor if cursor else "")
    t0 = time.perf_counter()
    j = json.load(urllib.request.urlopen(url))
    times.append((time.perf_counter() - t0) * 1000)
    ids += len(j["items"])
    if not j["has_more"]:
        break
    cursor = j["next_cursor"]
first, last = sorted(times[:50]), sorted(times[-50:])
print("cursor walk: %d pages, %d documents; median ms/page: first 50 pages %.2f, last 50 pages %.2f"
      % (len(times), ids, first[len(first) // 2], last[len(last) // 2]))
PY
