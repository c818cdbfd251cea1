#!/usr/bin/env bash
# Installs the Debian packages devloop builds, tests and benchmarks with.
# Idempotent: only missing packages are installed; safe to run every time.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libluajit2-5.1-dev libuv1-dev node-llhttp libhiredis-dev
  libmongoc-dev libbson-dev libsqlite3-dev zlib1g-dev libdeflate-dev libssl-dev libnghttp2-dev
  libmsgpack-dev lua-cjson-dev
  curl wrk redis-server python3 python3-msgpack sqlite3 prometheus
  openssl nghttp2-client python3-h2 python3-h11
  clang libclang-rt-14-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# keep package scripts from starting system services (redis, prometheus):
# the tests start their own servers on free ports
ADDED_POLICY=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  ADDED_POLICY=1
fi
trap 'if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
