#!/usr/bin/env bash
# TLS + HTTP/2 benchmark, one run: devloop against nginx + lua-nginx-module
# (tests/bench/h2/, modelled on ../shared/bench/peers/nginx-lua), GET /json.
#
#   tests/bench/bench-h2.sh                    # both servers, ROUNDS=3, about 6 minutes
#   PEERS=nginx tests/bench/bench-h2.sh        # nginx only (no devloop build)
#   DURATION=5 WARMUP=1 ROUNDS=1 tests/bench/bench-h2.sh
#
# Cases, each server, same client commands:
#   h2c        h2load -c 64 -m 10 -D DURATION -t 1 http://127.0.0.1:PORT/json   (prior knowledge)
#   TLS h2     h2load -c 64 -m 10 -D DURATION -t 1 https://127.0.0.1:PORT/json  (ALPN h2)
#   handshakes h2load -c 2000 -n 2000 -m 1 -t 1 https://127.0.0.1:PORT/json, run back to back
#              until DURATION has passed; see measure_handshakes for why
#   TLS h1     wrk -t1 -c64 -dDURATIONs https://127.0.0.1:PORT/json             (keep-alive)
# Each case is preceded by a WARMUP-second run of the same command (not
# measured). Servers run one at a time on SERVER_CPUS (taskset), clients on
# CLIENT_CPUS; servers alternate every round and the table gives medians.
#
# The markdown report goes to stdout and OUT_DIR/report.md; every client
# output, server log, rendered nginx config and results.tsv (one row per case,
# server and round) to OUT_DIR (default /tmp/devloop-bench-h2/RUN_ID).
#
# Knobs (env): PEERS ("devloop nginx"), ROUNDS (3), DURATION (10), WARMUP (3),
# CONNS (64), STREAMS (10), HS_BATCH (2000), SERVER_CPUS (0), CLIENT_CPUS (1),
# RUN_ID (UTC time), OUT_DIR, DEVLOOP_BIN (build-release/devloop),
# READY_TIMEOUT (30 s), NGINX_ACCESS_LOG (0; 1 logs every request, with
# $ssl_session_reused, to OUT_DIR/nginx/access.log: for checking, not for figures).
#
# Ports (127.0.0.1): devloop 18190 plain (HTTP/1.1 + h2c), 18191 TLS (ALPN h2,
# http/1.1); nginx 18192 plain h2c only (nginx 1.22 cannot serve HTTP/1.1 and
# h2c prior knowledge on one plain port; no case needs plain HTTP/1.1),
# 18193 TLS (ALPN h2, http/1.1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/bench/h2"

PEERS=${PEERS:-"devloop nginx"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
HS_BATCH=${HS_BATCH:-2000}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
READY_TIMEOUT=${READY_TIMEOUT:-30}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-0}
RUN_ID=${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
OUT_DIR=${OUT_DIR:-/tmp/devloop-bench-h2/$RUN_ID}
DEVLOOP_BIN=${DEVLOOP_BIN:-$ROOT/build-release/devloop}

declare -A H2C_PORT=([devloop]=18190 [nginx]=18192)
declare -A TLS_PORT=([devloop]=18191 [nginx]=18193)
CASES="h2c h2tls handshake h1tls"
declare -A CASE_LABEL=(
  [h2c]="h2c /json (prior knowledge)"
  [h2tls]="TLS h2 /json"
  [handshake]="TLS handshakes/s (full handshake, new connection per request)"
  [h1tls]="TLS HTTP/1.1 /json (keep-alive)"
)

exec 3>&2 # log() writes here, also from the EXIT trap
log() { printf '[bench-h2 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "ERROR: $*"; exit 1; }

for v in ROUNDS DURATION WARMUP CONNS STREAMS HS_BATCH READY_TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer of seconds or a count (got '${!v}')"
done
for p in $PEERS; do
  case $p in devloop | nginx) ;; *) die "unknown peer '$p' in PEERS (devloop, nginx)" ;; esac
done
[ -n "${PEERS// /}" ] || die "PEERS is empty"
has_peer() { case " $PEERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- cleanup
# Every process this script starts (servers, clients) is in STARTED until it
# has been waited for; on exit, each is stopped with its process tree.
STARTED=()
SERVER_PID=""

tree_pids() { # PID -> PID and all its descendants
  ps -e -o pid= -o ppid= 2>/dev/null | awk -v root="$1" '
    { pp[NR] = $2; p[NR] = $1 }
    END { keep[root] = 1; print root; changed = 1
          while (changed) { changed = 0
            for (i = 1; i <= NR; i++) if ((pp[i] in keep) && !(p[i] in keep)) {
              keep[p[i]] = 1; print p[i]; changed = 1 } } }'
}

stop_tree() { # PID [grace seconds]: TERM the root, then KILL whatever of the tree is left
  local root=$1 grace=${2:-5} pids p i
  kill -0 "$root" 2>/dev/null || { wait "$root" 2>/dev/null || true; return 0; }
  pids=$(tree_pids "$root")
  kill -TERM "$root" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$root" 2>/dev/null || break
    sleep 0.1
  done
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  wait "$root" 2>/dev/null || true
}

forget_pid() {
  local p keep=()
  for p in "${STARTED[@]}"; do
    if [ "$p" != "$1" ]; then keep+=("$p"); fi
  done
  STARTED=("${keep[@]}")
}

cleanup() {
  local i
  trap - EXIT INT TERM
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_tree "${STARTED[$i]}" 3; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- dependencies
bash "$ROOT/scripts/install-deps.sh"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v h2load >/dev/null; then
  log "h2load missing: installing nghttp2-client"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
fi
for t in h2load wrk openssl curl taskset timeout ps ss awk python3; do
  command -v "$t" >/dev/null || die "$t not found (install-deps.sh / ../shared/bench/setup.sh install it)"
done
NGINX=""
if has_peer nginx; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$NGINX" ] || die "nginx not found: run $ROOT/../shared/bench/setup.sh"
  for m in ndk_http_module ngx_http_lua_module; do
    [ -f "/usr/lib/nginx/modules/$m.so" ] || die "$m.so missing (libnginx-mod-http-lua): run $ROOT/../shared/bench/setup.sh"
  done
fi

if has_peer devloop; then
  log "building devloop (Release) in $ROOT/build-release"
  cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release -DDL_BUILD_TESTS=OFF >/dev/null
  cmake --build "$ROOT/build-release" -j"$(nproc)" --target devloop >/dev/null
  [ -x "$DEVLOOP_BIN" ] || die "$DEVLOOP_BIN not found after the build"
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((HS_BATCH + 100)) ] ||
  die "open files limit $(ulimit -n) is too low for HS_BATCH=$HS_BATCH"
CLK_TCK=$(getconf CLK_TCK)

port_busy() { ss -Htln 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$1\$"; }
for p in $PEERS; do
  for port in "${H2C_PORT[$p]}" "${TLS_PORT[$p]}"; do
    port_busy "$port" && die "port $port ($p) is already in use"
  done
done

# ---------------------------------------------------------------- output dir, certificate
mkdir -p "$OUT_DIR"/{tls,raw,logs} || die "cannot create $OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
RESULTS="$OUT_DIR/results.tsv"
printf 'round\tpeer\tcase\tok\tfailed\tseconds\trate\tticks\tcpu_us_per_req\tsrv_cpu_pct\tprotocol\traw\n' > "$RESULTS"
CHECKS="$OUT_DIR/checks.tsv"
printf 'round\tpeer\tcheck\tverdict\n' > "$CHECKS"

CERT="$OUT_DIR/tls/cert.pem"
KEY="$OUT_DIR/tls/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -keyout "$KEY" -out "$CERT" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" > "$OUT_DIR/logs/openssl-req.log" 2>&1 ||
  die "openssl req failed: $(cat "$OUT_DIR/logs/openssl-req.log")"

{
  echo "run_id: $RUN_ID"
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) cpus, cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "settings: rounds $ROUNDS, ${DURATION}s measured after ${WARMUP}s warm-up per case, servers on cpus $SERVER_CPUS, clients on cpus $CLIENT_CPUS"
  echo "certificate: self-signed EC P-256, CN=localhost, SAN DNS:localhost, IP:127.0.0.1"
  echo "openssl: $(openssl version)"
  echo "h2load: $(h2load --version 2>&1 | head -1)"
  echo "wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')"
  if has_peer nginx; then
    echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //'), lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null || echo '?')"
  fi
  if has_peer devloop; then echo "devloop: $("$DEVLOOP_BIN" version 2>&1 | head -1)"; fi
} > "$OUT_DIR/meta.txt"

# ---------------------------------------------------------------- servers
now_us() { local t=$EPOCHREALTIME; echo $((10#${t/[.,]/})); }

tree_ticks() { # PID -> utime+stime clock ticks summed over the process tree
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || true
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

render_nginx_conf() { # PREFIX -> PREFIX/nginx.conf
  local prefix=$1 user_line="" access="off"
  # as root, nginx would switch workers to "nobody nobody", a group Debian lacks
  [ "$(id -u)" = 0 ] && user_line="user nobody nogroup;"
  [ "$NGINX_ACCESS_LOG" = 1 ] && access="$prefix/access.log bench_h2"
  sed -e "s|@USER_LINE@|$user_line|g" -e "s|@WORKERS@|1|g" -e "s|@RUNDIR@|$prefix|g" \
      -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" -e "s|@LUADIR@|$HERE/lua|g" \
      -e "s|@H2C_PORT@|${H2C_PORT[nginx]}|g" -e "s|@TLS_PORT@|${TLS_PORT[nginx]}|g" \
      -e "s|@ACCESS_LOG@|$access|g" "$HERE/nginx.conf.tmpl" > "$prefix/nginx.conf"
}

start_server() { # PEER ROUND -> SERVER_PID, ready
  local peer=$1 round=$2 slog="$OUT_DIR/logs/$1-r$2.log" probe i
  case $peer in
    devloop)
      # DEVLOOP_CMD is also printed in the report
      env -u REDIS_URL LOG_LEVEL=warn taskset -c "$SERVER_CPUS" "${DEVLOOP_CMD[@]}" > "$slog" 2>&1 &
      probe=(curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${H2C_PORT[devloop]}/health")
      ;;
    nginx)
      local prefix="$OUT_DIR/nginx"
      mkdir -p "$prefix"
      render_nginx_conf "$prefix"
      taskset -c "$SERVER_CPUS" "$NGINX" -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" \
        -g 'daemon off;' > "$slog" 2>&1 &
      # the plain port speaks h2c only
      probe=(curl -s -o /dev/null --max-time 1 --http2-prior-knowledge "http://127.0.0.1:${H2C_PORT[nginx]}/json")
      ;;
  esac
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  log "$peer: started, pid $SERVER_PID (cpus $SERVER_CPUS), round $round"
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$peer exited before it was ready; $slog:"
      tail -15 "$slog" >&3
      if [ "$peer" = nginx ]; then tail -5 "$OUT_DIR/nginx/error.log" >&3 2>/dev/null || true; fi
      [ "$peer" = devloop ] &&
        log "(does this devloop build have TLS listeners: --listen ... --tls-cert FILE --tls-key FILE?)"
      die "$peer did not start (PEERS=nginx runs nginx alone)"
    fi
    "${probe[@]}" && { sleep 0.5; return 0; }
    sleep 0.1
  done
  tail -15 "$slog" >&3
  die "$peer not ready after ${READY_TIMEOUT}s: ${probe[*]} got no answer"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  stop_tree "$SERVER_PID"
  forget_pid "$SERVER_PID"
  SERVER_PID=""
}

# ---------------------------------------------------------------- correctness
# Once per server start, before measuring: /json over h2c, TLS h2 (ALPN, the
# certificate checked against --cacert, SAN IP) and TLS HTTP/1.1 answers
# 200 {"message":"Hello, World!"} with the expected protocol version. A wrong
# answer is measured anyway and flagged in the report.
check_server() { # PEER ROUND
  local peer=$1 round=$2 name want body code ver verdict out="$OUT_DIR/logs/$1-r$2.check.txt"
  local h2c="http://127.0.0.1:${H2C_PORT[$peer]}/json" tls="https://127.0.0.1:${TLS_PORT[$peer]}/json"
  : > "$out"
  for name in h2c h2tls h1tls; do
    local args=()
    case $name in
      h2c) args=(--http2-prior-knowledge "$h2c"); want=2 ;;
      h2tls) args=(--cacert "$CERT" --http2 "$tls"); want=2 ;;
      h1tls) args=(--cacert "$CERT" --http1.1 "$tls"); want=1.1 ;;
    esac
    body=$(curl -sS --max-time 5 -o - -w '\n%{http_code} %{http_version}' "${args[@]}" 2>>"$out") || true
    code=$(tail -1 <<< "$body" | awk '{print $1}'); ver=$(tail -1 <<< "$body" | awk '{print $2}')
    body=$(sed '$d' <<< "$body")
    printf '== %s: curl %s\n%s\n-> %s HTTP/%s\n' "$name" "${args[*]}" "$body" "$code" "$ver" >> "$out"
    verdict=ok
    if [ "$code" != 200 ]; then verdict="status ${code:-none}"
    elif [ "$ver" != "$want" ]; then verdict="HTTP/$ver, not HTTP/$want"
    elif ! python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != {"message": "Hello, World!"})' "$body" 2>/dev/null
    then verdict="wrong body"; fi
    [ "$verdict" = ok ] || log "$peer: check $name FAILED: $verdict (see $out)"
    printf '%s\t%s\t%s\t%s\n' "$round" "$peer" "$name" "$verdict" >> "$CHECKS"
  done
}

# ---------------------------------------------------------------- clients
run_client() { # LIMIT_SECONDS OUTFILE CMD... -> exit status; pinned, killed after LIMIT
  local limit=$1 out=$2 pid rc=0
  shift 2
  timeout -k 5 "$limit" taskset -c "$CLIENT_CPUS" "$@" > "$out" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  [ "$rc" = 0 ] || log "client exited with status $rc: $* (see $out)"
  return "$rc"
}

case_cmd() { # CASE PEER SECONDS -> CMD (array): the client command of a case
  local h2c="http://127.0.0.1:${H2C_PORT[$2]}/json" tls="https://127.0.0.1:${TLS_PORT[$2]}/json"
  case $1 in
    h2c) CMD=(h2load -c "$CONNS" -m "$STREAMS" -D "$3" -t 1 "$h2c") ;;
    h2tls) CMD=(h2load -c "$CONNS" -m "$STREAMS" -D "$3" -t 1 "$tls") ;;
    handshake) CMD=(h2load -c "$HS_BATCH" -n "$HS_BATCH" -m 1 -t 1 "$tls") ;;
    h1tls) CMD=(wrk -t1 -c"$CONNS" -d"$3"s "$tls") ;;
  esac
}

h2load_sum() { # FILE -> "succeeded failed seconds protocol", summed over every h2load run in FILE
  # "finished in 10.00s, ..." (or ms/us); "requests: T total, S started, D done,
  # OK succeeded, F failed, E errored, X timeout" (failed counts errored and
  # timed out requests, and answers other than 2xx/3xx)
  awk '
    /^finished in/ { v = $3; sub(/,$/, "", v); m = 1
                     if (v ~ /us$/) { m = 1e-6; sub(/us$/, "", v) }
                     else if (v ~ /ms$/) { m = 1e-3; sub(/ms$/, "", v) }
                     else sub(/s$/, "", v)
                     secs += v * m; runs++ }
    /^requests:/ { ok += $8; bad += $10 }
    /^Application protocol:/ { proto = $3 }
    /^TLS Protocol:/ { tls = $3 }
    END { if (tls != "") proto = proto "/" tls
          printf "%d %d %.6f %s\n", ok, bad + (runs ? 0 : 1), secs, (proto != "" ? proto : "-") }' "$1"
}

wrk_sum() { # FILE -> "ok failed seconds protocol"
  awk '
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /^  Non-2xx or 3xx responses:/ { non2xx = $5 }
    /^  Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    END { secs = (rps > 0) ? req / rps : 0
          printf "%d %d %.6f %s\n", req - non2xx, non2xx + sockerr + (req > 0 ? 0 : 1), secs, "http/1.1" }' "$1"
}

record() { # ROUND PEER CASE OK FAILED SECONDS TICKS WALL_US PROTO RAW -> a results.tsv row
  awk -v OFS='\t' -v r="$1" -v p="$2" -v c="$3" -v ok="$4" -v bad="$5" -v secs="$6" -v t="$7" \
      -v wall="$8" -v proto="$9" -v raw="${10}" -v hz="$CLK_TCK" 'BEGIN {
    rate = (secs > 0) ? ok / secs : 0
    us = (ok > 0) ? sprintf("%.1f", t / hz * 1e6 / ok) : ""
    pct = (wall > 0) ? sprintf("%.0f", t / hz / (wall / 1e6) * 100) : ""
    print r, p, c, ok, bad, sprintf("%.3f", secs), sprintf("%.0f", rate), t, us, pct, proto, raw }' >> "$RESULTS"
  tail -1 "$RESULTS" | awk -F'\t' '{ printf "  %-7s %-9s %9s /s  %7s us CPU/req  server CPU %s%%  %s failed  %s\n", $2, $3, $7, $9, $10, $5, $11 }' >&3
}

# TLS handshakes. Neither h2load nor wrk has an option to turn off session
# resumption, and both resume when they reconnect on one client slot: wrk
# with `Connection: close` reuses its SSL object (SSL_clear keeps the
# session) and h2load --h1 with `Connection: close` does the same (both seen
# as $ssl_session_reused = "r" in nginx's log; h2load also hangs past -D in
# that mode). What does give a full handshake every time is a *fresh* h2load
# client: `h2load -c N -n N` makes N clients, each opens its own connection
# with a new SSL object and no ticket to offer, does one request (ALPN h2,
# TLS 1.3 here) and closes. So: batches of HS_BATCH such clients (2000: well
# under both servers' listen backlog, 4096, so no SYN is dropped), back to
# back until DURATION has passed; handshakes/s = requests succeeded / wall time
# of the loop (h2load's start-up between batches, ~15 ms, included), server
# CPU / requests = CPU per full handshake (+ one h2 request).
# On two cores the client (TLS + h2 set-up per connection) usually saturates
# its core before the server does: read µs CPU/req (and server CPU %) there.
handshake_loop() { # PEER SECONDS OUTFILE -> appends every batch's output to OUTFILE
  local peer=$1 secs=$2 out=$3 start rc=0
  : > "$out"
  start=$(now_us)
  case_cmd handshake "$peer" "$secs"
  while :; do
    run_client 120 "$out.batch" "${CMD[@]}" || rc=$?
    cat "$out.batch" >> "$out"
    rm -f "$out.batch"
    [ "$rc" = 0 ] || return "$rc"
    (($(now_us) - start >= secs * 1000000)) && return 0
  done
}

measure() { # ROUND PEER CASE
  local round=$1 peer=$2 c=$3 raw="$OUT_DIR/raw/$2/r$1-$3.txt" t0 t1 w0 w1 stats
  mkdir -p "$OUT_DIR/raw/$peer"
  kill -0 "$SERVER_PID" 2>/dev/null || die "$peer (pid $SERVER_PID) died; see $OUT_DIR/logs/$peer-r$round.log"
  if [ "$c" = handshake ]; then
    handshake_loop "$peer" "$WARMUP" "${raw%.txt}.warmup.txt" || true
    t0=$(tree_ticks "$SERVER_PID"); w0=$(now_us)
    handshake_loop "$peer" "$DURATION" "$raw" || true
  else
    case_cmd "$c" "$peer" "$WARMUP"
    run_client $((WARMUP + 60)) "${raw%.txt}.warmup.txt" "${CMD[@]}" || true
    case_cmd "$c" "$peer" "$DURATION"
    t0=$(tree_ticks "$SERVER_PID"); w0=$(now_us)
    run_client $((DURATION + 60)) "$raw" "${CMD[@]}" || true
  fi
  t1=$(tree_ticks "$SERVER_PID"); w1=$(now_us)
  case $c in
    h1tls) stats=$(wrk_sum "$raw") ;;
    *) stats=$(h2load_sum "$raw") ;;
  esac
  read -r ok bad secs proto <<< "$stats"
  # handshakes: the rate is over the loop's wall time
  [ "$c" = handshake ] && secs=$(awk -v w=$((w1 - w0)) 'BEGIN { printf "%.6f", w / 1e6 }')
  record "$round" "$peer" "$c" "$ok" "$bad" "$secs" $((t1 - t0)) $((w1 - w0)) "$proto" "${raw#"$OUT_DIR"/}"
}

# ---------------------------------------------------------------- run
DEVLOOP_CMD=("$DEVLOOP_BIN" serve "$ROOT/examples/bench" --workers 1
  --listen "127.0.0.1:${H2C_PORT[devloop]}" --listen "127.0.0.1:${TLS_PORT[devloop]}"
  --tls-cert "$CERT" --tls-key "$KEY")

read -r -a ORDER <<< "$PEERS"
log "output in $OUT_DIR; $ROUNDS round(s) of: ${PEERS}; ${WARMUP}s warm-up + ${DURATION}s per case"
for ((round = 1; round <= ROUNDS; round++)); do
  for peer in "${ORDER[@]}"; do
    start_server "$peer" "$round"
    check_server "$peer" "$round"
    for c in $CASES; do
      log "$peer: round $round/$ROUNDS: ${CASE_LABEL[$c]}"
      measure "$round" "$peer" "$c"
    done
    stop_server
  done
  # alternate: whoever ran last this round runs first in the next
  mapfile -t ORDER < <(printf '%s\n' "${ORDER[@]}" | tac)
done

if [ "$NGINX_ACCESS_LOG" = 1 ] && [ -f "$OUT_DIR/nginx/access.log" ]; then
  log "nginx access log: $(awk '$4 ~ /^TLS/ && $2 == 1 { n++; if ($5 == "reused=r") r++ }
    END { printf "%d TLS connections, %d of them resumed a session", n, r }' "$OUT_DIR/nginx/access.log")"
fi

# ---------------------------------------------------------------- report
commands() {
  local peer c
  echo '```'
  for peer in $PEERS; do
    echo "# $peer (taskset -c $SERVER_CPUS)"
    if [ "$peer" = devloop ]; then
      echo "env -u REDIS_URL LOG_LEVEL=warn ${DEVLOOP_CMD[*]}"
    else
      echo "$NGINX -p $OUT_DIR/nginx -e $OUT_DIR/nginx/error.log -c $OUT_DIR/nginx/nginx.conf -g 'daemon off;'"
    fi
    echo "# clients (taskset -c $CLIENT_CPUS), each after the same command for ${WARMUP}s as a warm-up"
    for c in $CASES; do
      case_cmd "$c" "$peer" "$DURATION"
      if [ "$c" = handshake ]; then
        echo "${CMD[*]}   # repeated until ${DURATION}s have passed"
      else
        echo "${CMD[*]}"
      fi
    done
  done
  echo '```'
}

{
  python3 - "$RESULTS" "$CHECKS" "$OUT_DIR/meta.txt" "$PEERS" "$CASES" <<'EOF'
import csv, sys
results, checks, meta, peers, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()
label = {
    "h2c": "h2c /json (prior knowledge)",
    "h2tls": "TLS h2 /json",
    "handshake": "TLS handshakes/s (full, new connection per request)",
    "h1tls": "TLS HTTP/1.1 /json (keep-alive)",
}
rows = list(csv.DictReader(open(results), delimiter="\t"))
chk = list(csv.DictReader(open(checks), delimiter="\t"))

def med(vals):  # like tests/bench/bench-jobs.sh: the middle one (upper middle when even)
    v = sorted(vals)
    return v[len(v) // 2] if v else None

def get(peer, case):
    return [r for r in rows if r["peer"] == peer and r["case"] == case]

def fnum(x, fmt):
    return "-" if x is None else fmt % x

print("# devloop TLS + HTTP/2 bench\n")
for line in open(meta):
    print("    " + line.rstrip())
print()
print("Medians of %d round(s). *µs CPU/req*: server CPU time (utime+stime of its process tree, "
      "/proc/PID/stat) during the measured run divided by the requests that succeeded "
      "(for handshakes: per connection).\n" % max([int(r["round"]) for r in rows] or [0]))
hdr = ["case"] + ["%s req/s" % p for p in ("devloop", "nginx")] + ["ratio devloop/nginx"] + \
      ["%s µs CPU/req" % p for p in ("devloop", "nginx")]
print("| " + " | ".join(hdr) + " |")
print("|" + " --- |" * len(hdr))
notes = []
for c in cases:
    rate, us = {}, {}
    for p in ("devloop", "nginx"):
        rs = get(p, c)
        rate[p] = med([float(r["rate"]) for r in rs]) if rs else None
        us[p] = med([float(r["cpu_us_per_req"]) for r in rs if r["cpu_us_per_req"]]) if rs else None
        bad = sum(int(r["failed"]) for r in rs)
        if bad:
            notes.append("%s, %s: %d failed requests over the rounds (see raw/)" % (label[c], p, bad))
    ratio = "%.2f" % (rate["devloop"] / rate["nginx"]) if rate["devloop"] and rate["nginx"] else "-"
    cells = [label[c], fnum(rate["devloop"], "%.0f"), fnum(rate["nginx"], "%.0f"), ratio,
             fnum(us["devloop"], "%.1f"), fnum(us["nginx"], "%.1f")]
    print("| " + " | ".join(cells) + " |")
print()
for n in notes:
    print("- **%s**" % n)
bad_checks = [r for r in chk if r["verdict"] != "ok"]
if bad_checks:
    for r in bad_checks:
        print("- **check failed**: %s round %s %s: %s" % (r["peer"], r["round"], r["check"], r["verdict"]))
elif chk:
    print("- checks: /json over h2c, TLS h2 and TLS HTTP/1.1 answered 200 `{\"message\":\"Hello, World!\"}` "
          "with the expected HTTP version, certificate verified, every round.")
print()
print("Every round (req/s; µs CPU/req; server CPU %; protocol as the client saw it):\n")
print("| case | server | " + " | ".join("round %d" % (i + 1) for i in range(max([int(r["round"]) for r in rows] or [0]))) + " |")
print("| --- | --- |" + " --- |" * max([int(r["round"]) for r in rows] or [0]))
for c in cases:
    for p in peers:
        rs = sorted(get(p, c), key=lambda r: int(r["round"]))
        if not rs:
            continue
        cells = ["%s; %s µs; %s%%; %s%s" % (r["rate"], r["cpu_us_per_req"] or "-", r["srv_cpu_pct"], r["protocol"],
                 (", %s failed" % r["failed"]) if r["failed"] != "0" else "") for r in rs]
        print("| %s | %s | %s |" % (label[c], p, " | ".join(cells)))
print()
print("A server CPU % well under 100 means the client (one core) was the limit, "
      "typically for handshakes: compare µs CPU/req then.\n")
EOF
  echo "Commands (servers on cpus $SERVER_CPUS, clients on cpus $CLIENT_CPUS, one server at a time):"
  echo
  commands
  echo
  echo "Raw outputs: $OUT_DIR (raw/, logs/, results.tsv, checks.tsv, nginx/nginx.conf)"
} | tee "$OUT_DIR/report.md"
log "done: $OUT_DIR/report.md"
