#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs ctest.
#   scripts/test.sh                 # normal build in build/
#   SANITIZE=1 scripts/test.sh      # ASan + UBSan build in build-asan/
#   DL_FUZZ=0 scripts/test.sh       # without the fuzz harnesses (build-fuzz/, clang)
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

# The libFuzzer harnesses (tests/fuzz): a clang build of their own in build-fuzz;
# ctest below runs each over its corpus plus a bounded number of new inputs
# (fuzz.<name>). DL_FUZZ=0 leaves them out.
if [ "${DL_FUZZ:-1}" = 1 ]; then
  FUZZ_BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
  cmake -S . -B "$FUZZ_BUILD" -DCMAKE_C_COMPILER=clang -DDL_BUILD_FUZZERS=ON -DDL_BUILD_TESTS=OFF \
    -DDL_BUILD_EXAMPLES=OFF -DDL_BUILD_SHARED=OFF -DDL_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$FUZZ_BUILD" --target dl_fuzzers -j"$(nproc)" -- --no-print-directory \
    >/dev/null || {
    cmake --build "$FUZZ_BUILD" --target dl_fuzzers -j1 2>&1 | tail -40
    exit 1
  }
  FLAGS+=(-DDL_FUZZ_BUILD_DIR="$(cd "$FUZZ_BUILD" && pwd)")
else
  FLAGS+=(-DDL_FUZZ_BUILD_DIR=)
fi

# warnings fail the build (curl's habit)
cmake -S . -B "$BUILD" -DDL_WERROR=ON "${FLAGS[@]}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" -- --no-print-directory >/dev/null || {
  cmake --build "$BUILD" -j1 2>&1 | tail -40
  exit 1
}
cd "$BUILD"
ctest --output-on-failure -j"$(nproc)" "$@"
