#!/usr/bin/env bash
# Runs the libFuzzer harnesses of tests/fuzz (README.md, "Fuzzing").
#   scripts/fuzz.sh                   every harness for 60 s, one after the other
#   scripts/fuzz.sh -t 300 http1 h2   the named ones, 300 s each
#   scripts/fuzz.sh --check json      what ctest's fuzz.json runs: the seed corpus plus
#                                     FUZZ_CHECK_RUNS (20000) new inputs from a fixed seed, at
#                                     most FUZZ_CHECK_TIME (10) seconds
# The harnesses are built with clang in $DL_FUZZ_BUILD_DIR (default build-fuzz; brought up
# to date first, except with --check). New inputs, crashes and logs go to $FUZZ_WORK (default
# ${TMPDIR:-/tmp}/devloop-fuzz/<harness>), never into the repository; copy an input worth
# keeping into tests/fuzz/corpus/<harness>/ by hand. DL_FUZZ_STRICT=1 also fails on the
# findings already reported (tests/fuzz/known-findings.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

ALL=(json msgpack multipart http1 h2 query cursor)
SECONDS_EACH=60
CHECK=0
NAMES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) SECONDS_EACH=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) NAMES+=("$1"); shift ;;
  esac
done
[ ${#NAMES[@]} -eq 0 ] && NAMES=("${ALL[@]}")
for n in "${NAMES[@]}"; do
  [[ " ${ALL[*]} " == *" $n "* ]] || { echo "fuzz.sh: no harness '$n' (${ALL[*]})" >&2; exit 2; }
done

BUILD=${DL_FUZZ_BUILD_DIR:-$SRC/build-fuzz}
if [ "$CHECK" = 0 ]; then
  # (re)build: cheap when up to date
  cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DDL_BUILD_FUZZERS=ON -DDL_BUILD_TESTS=OFF \
    -DDL_BUILD_EXAMPLES=OFF -DDL_BUILD_SHARED=OFF -DDL_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" --target dl_fuzzers -j"$(nproc)" -- --no-print-directory >/dev/null
fi

# LeakSanitizer on (libFuzzer checks each input that allocated more than it freed)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
if [ "${DL_FUZZ_STRICT:-0}" = 1 ]; then
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=/dev/null"
fi

# the figures of a libFuzzer log: its last status line, and its final counters
figures() {
  local log=$1 line
  line=$(grep -aE '^#[0-9]+' "$log" | tail -1 || true)
  local execs cov ft corp eps
  execs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  [ -z "$execs" ] && execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$line")
  eps=$(grep -aoE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  [ -z "$eps" ] && eps=$(grep -aoE 'exec/s: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || true)
  cov=$(grep -aoE 'cov: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || true)
  ft=$(grep -aoE 'ft: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || true)
  corp=$(grep -aoE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$line" | sed 's/corp: //' || true)
  echo "${execs:-?} ${eps:-?} ${cov:-?} ${ft:-?} ${corp:-?}"
}

status=0
row() { printf '%-10s %10s %8s %7s %7s %12s %8s\n' "$@" >&2; }
row harness execs exec/s cov ft corpus crashes
for n in "${NAMES[@]}"; do
  BIN=$BUILD/tests/fuzz/fuzz_$n
  if [ ! -x "$BIN" ]; then
    echo "fuzz.sh: $BIN is missing (configure with -DDL_BUILD_FUZZERS=ON)" >&2
    exit 1
  fi
  SEEDS=$SRC/tests/fuzz/corpus/$n
  DICT=()
  [ -f "$SRC/tests/fuzz/dict/$n.dict" ] && DICT=(-dict="$SRC/tests/fuzz/dict/$n.dict")
  if [ "$CHECK" = 1 ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/devloop-fuzz-check.XXXXXX")
    nseeds=$(find "$SEEDS" -type f | wc -l)
    mkdir -p "$WORK/new"
    set +e
    "$BIN" -seed=1 -runs=$((nseeds + ${FUZZ_CHECK_RUNS:-20000})) \
      -max_total_time="${FUZZ_CHECK_TIME:-10}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "${DICT[@]}" \
      -artifact_prefix="$WORK/" "$WORK/new" "$SEEDS" >"$WORK/log" 2>&1
    rc=$?
    set -e
    read -r execs eps cov ft corp < <(figures "$WORK/log")
    crashes=$(ls "$WORK" | grep -cE '^(crash|leak|timeout|oom)-' || true)
    row "$n" "$execs" "$eps" "$cov" "$ft" "$corp" "$crashes"
    grep -a '^known finding .* skipped' "$WORK/log" | sed 's/^/  /' >&2 || true
    if [ "$rc" != 0 ]; then
      # the failure and the input that caused it, in the ctest log; the input is kept
      grep -av '^#' "$WORK/log" | tail -60 >&2
      KEEP=${FUZZ_WORK:-${TMPDIR:-/tmp}/devloop-fuzz}/$n/crashes
      mkdir -p "$KEEP"
      for f in "$WORK"/crash-* "$WORK"/leak-* "$WORK"/timeout-* "$WORK"/oom-*; do
        [ -f "$f" ] || continue
        echo "--- $(basename "$f") ($(stat -c %s "$f") bytes; kept in $KEEP), hex:" >&2
        od -An -tx1 -v "$f" | head -40 >&2
        cp "$f" "$KEEP/"
      done
      status=1
    fi
    rm -rf "$WORK"
    continue
  fi
  WORK=${FUZZ_WORK:-${TMPDIR:-/tmp}/devloop-fuzz}/$n
  mkdir -p "$WORK/corpus" "$WORK/crashes"
  set +e
  "$BIN" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${DICT[@]}" -artifact_prefix="$WORK/crashes/" \
    "$WORK/corpus" "$SEEDS" >"$WORK/log" 2>&1
  rc=$?
  set -e
  read -r execs eps cov ft corp < <(figures "$WORK/log")
  crashes=$(find "$WORK/crashes" -type f | wc -l)
  row "$n" "$execs" "$eps" "$cov" "$ft" "$corp" "$crashes"
  grep -a '^known finding .* skipped' "$WORK/log" | sed 's/^/  /' >&2 || true
  if [ "$rc" != 0 ]; then
    status=1
    echo "  stopped with status $rc: $WORK/log; inputs in $WORK/crashes/" >&2
    grep -a -m1 -E 'fuzz invariant failed|known finding|ERROR: [A-Za-z]+|runtime error' \
      "$WORK/log" | sed 's/^/  /' >&2 || true
  fi
done
exit $status
