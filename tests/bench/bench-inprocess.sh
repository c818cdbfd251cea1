#!/usr/bin/env bash
# In-process requests (issue 9's figures), one run: GET /json through
# api.client (in-process connections) vs the same route over sockets (wrk
# -c64), one worker on CPU 0; and create-to-first-response time of a runtime
# (examples/embed --cycles 200, in-process request, no socket).
#   tests/bench/bench-inprocess.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF \
  -DDL_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$ROOT/build-release" --target devloop devloop_embed -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/devloop-inproc.XXXXXX)
cp -r "$ROOT/examples/bench" "$WORK/app"; rm -rf "$WORK/app/data" "$WORK/app/logs"
cp "$ROOT/tests/bench/apps/inproc/loop.lua" "$WORK/app/routes/zz_loop.lua"
PORT=18199
DEVLOOP_LOG_DIR=- taskset -c 0 "$ROOT/build-release/devloop" serve "$WORK/app" --listen 127.0.0.1:$PORT \
  --workers 1 --no-watch --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$PORT/json && break; sleep 0.1; done
inproc() { curl -s "http://127.0.0.1:$PORT/_loop?n=50000&c=$1" | python3 -c 'import sys,json; print(json.load(sys.stdin)["rps"])'; }
sock() { taskset -c 1 wrk -t1 -c64 -d5s "http://127.0.0.1:$PORT/json" | awk '/Requests\/sec/ {printf "%d", $2}'; }
inproc 1 >/dev/null
I1=(); I64=(); S=()
for _ in 1 2 3; do I1+=("$(inproc 1)"); I64+=("$(inproc 64)"); S+=("$(sock)"); done
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
i1=$(med "${I1[@]}"); i64=$(med "${I64[@]}"); s=$(med "${S[@]}")
echo "GET /json, one worker on CPU 0 (medians of 3; every run in brackets):"
echo "  in process, one at a time: $i1 req/s (${I1[*]})"
echo "  in process, 64 at a time:  $i64 req/s (${I64[*]})"
echo "  over sockets, wrk -c64:    $s req/s (${S[*]})"
python3 -c "print('  in process / socket: %.2fx (one at a time), %.2fx (64)' % ($i1 / $s, $i64 / $s))"
DEVLOOP_LOG_DIR=- "$ROOT/build-release/devloop_embed" "$ROOT/examples/embed/app" --cycles 200 | sed 's/^/  /'
