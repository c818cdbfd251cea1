#!/usr/bin/env bash
# Runs the shared peer benchmark (../shared/bench) with devloop in the same run.
# The bench folder is copied to a scratch directory first, because setup.sh
# (npm ci) and run.sh (results/) write beside themselves and shared/ is not ours.
#   tests/bench/bench.sh                         # all peers + devloop, all routes
#   PEERS="nginx-lua" ROUTES="hello json" tests/bench/bench.sh
# Every knob of run.sh passes through the environment.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
WORK=${BENCH_WORK:-/tmp/devloop-bench}

bash "$ROOT/scripts/install-deps.sh"
cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
cmake --build "$ROOT/build-release" -j"$(nproc)" --target devloop >/dev/null

mkdir -p "$WORK"
rsync -a --delete --exclude results --exclude node_modules "$SHARED/" "$WORK/bench/" 2>/dev/null ||
  { rm -rf "$WORK/bench"; cp -r "$SHARED" "$WORK/bench"; }
chmod -R u+w "$WORK/bench"
if [ ! -d "$WORK/bench/peers/express/node_modules" ] || ! command -v nginx >/dev/null; then
  bash "$WORK/bench/setup.sh"
fi

export OURS_CMD="$ROOT/build-release/devloop serve $ROOT/examples/bench --listen 127.0.0.1:18090 --workers 1"
export OURS_PORT=18090 OURS_NAME=${OURS_NAME:-devloop} OURS_WORKERS=1
export OUT_DIR=${OUT_DIR:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}
echo "bench: devloop $(git -C "$ROOT" rev-parse --short HEAD), output in $OUT_DIR" >&2
bash "$WORK/bench/run.sh"
