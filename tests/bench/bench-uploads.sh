#!/usr/bin/env bash
# Upload throughput (issue 8's figure), one run: 50 MB files through
# POST /api/files, one at a time (8 files) and 4 at once (8 files), devloop
# (examples/devloop-api, one worker) vs Express 4 + multer disk storage
# (tests/bench/apps/upload-express, npm at run time); MB/s and the server's peak RSS.
#   tests/bench/bench-uploads.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" --target devloop -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/devloop-uplbench.XXXXXX)
SPID=""
trap '[ -n "$SPID" ] && kill $SPID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
cp -r "$ROOT/examples/devloop-api" "$WORK/app"; rm -rf "$WORK/app/data" "$WORK/app/logs"
mkdir -p "$WORK/express" "$WORK/express-files"
cp "$ROOT/tests/bench/apps/upload-express/server.js" "$WORK/express/"
(cd "$WORK/express" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent express@4 multer@2 >/dev/null)
for i in 1 2 3 4 5 6 7 8; do head -c $((50 * 1024 * 1024)) /dev/urandom > "$WORK/f$i.bin"; done

# stored files are deleted and dirty pages written back before each phase,
# so neither side pays for the other's writeback
settle() { rm -rf "$WORK/app/data/files"/* "$WORK/express-files"/*; sync; sleep 1; }

measure() { # port -> "MB/s sequential, MB/s 4 at once, peak RSS MiB"
  local port=$1 t0 t1 t1b t2
  settle
  t0=$(date +%s.%N)
  for i in 1 2 3 4 5 6 7 8; do
    curl -sf -o /dev/null -F "file=@$WORK/f$i.bin" "http://127.0.0.1:$port/api/files"
  done
  t1=$(date +%s.%N)
  settle
  t1b=$(date +%s.%N)
  for i in 1 5; do
    local pids=()
    for j in 0 1 2 3; do
      curl -sf -o /dev/null -F "file=@$WORK/f$((i + j)).bin" "http://127.0.0.1:$port/api/files" &
      pids+=($!)
    done
    wait "${pids[@]}"
  done
  t2=$(date +%s.%N)
  local hwm=$(awk '/VmHWM/ {print $2}' /proc/$SPID/status)
  python3 -c "print('%.0f MB/s one at a time, %.0f MB/s 4 at once, peak RSS %.1f MiB' % (400 / ($t1 - $t0), 400 / ($t2 - $t1b), $hwm / 1024))"
}

DEVLOOP_DB=$WORK/api.db DEVLOOP_LOG_DIR=$WORK/logs taskset -c 0 "$BIN" serve "$WORK/app" \
  --listen 127.0.0.1:18197 --workers 1 --no-watch --log-level warn &
SPID=$!
for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:18197/api/ping && break; sleep 0.2; done
D=$(measure 18197)
kill $SPID; wait $SPID 2>/dev/null || true
taskset -c 0 node "$WORK/express/server.js" 18198 "$WORK/express-files" &
SPID=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18198/api/files/x && break; sleep 0.1; done
E=$(measure 18198)
kill $SPID; wait $SPID 2>/dev/null || true
SPID=""
echo "50 MB uploads, POST /api/files (multipart), server on CPU 0:"
echo "  devloop:          $D"
echo "  express + multer: $E"
