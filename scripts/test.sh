#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs ctest.
#   scripts/test.sh                 # normal build in build/
#   SANITIZE=1 scripts/test.sh      # ASan + UBSan build in build-asan/
# Extra arguments go to ctest (e.g. -R e2e.http).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

if [ "${SANITIZE:-0}" = 1 ]; then
  BUILD=${BUILD_DIR:-build-asan}
  FLAGS=(-DDL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  # LuaJIT's allocator and ASan: leaks are checked by the unit tests' own
  # counters; detect_leaks stays on for the runtime itself.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  export DEVLOOP_SANITIZED=1  # tests skip RSS bounds: ASan's quarantine grows RSS
else
  BUILD=${BUILD_DIR:-build}
  FLAGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi

# warnings fail the build (curl's habit)
cmake -S . -B "$BUILD" -DDL_WERROR=ON "${FLAGS[@]}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" -- --no-print-directory >/dev/null || {
  cmake --build "$BUILD" -j1 2>&1 | tail -40
  exit 1
}
cd "$BUILD"
ctest --output-on-failure -j"$(nproc)" "$@"
