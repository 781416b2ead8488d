#!/usr/bin/env bash
# scripts/deps.sh — install what the build and the tests need, from Debian's packages and npm.
# Idempotent and quick when everything is present: it only calls apt-get/npm for what is missing.
# Run as root (CI and fresh machines are root); otherwise it uses sudo when available.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="build-essential pkg-config libsqlite3-dev sqlite3 libcurl4-openssl-dev libmbedtls-dev liblz4-dev
      libcjson-dev libcmocka-dev libpcre2-dev libmicrohttpd-dev libsnappy-dev libprotobuf-c-dev
      libedit-dev nodejs radosgw ceph-mon ceph-osd ca-certificates"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=""
for p in $DEBS; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != *"install ok installed"* ]]; then
    missing="$missing $p"
  fi
done
# nodejs from other origins (e.g. nodesource) provides node+npm under other package states.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=$(echo "$missing" | tr ' ' '\n' | grep -v '^nodejs$' | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
  echo "deps.sh: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if ! command -v npm >/dev/null 2>&1; then $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; fi
fi

# s3rver (S3 protocol peer for tests) into a git-ignored folder.
if [ ! -x build/node/node_modules/.bin/s3rver ]; then
  echo "deps.sh: installing s3rver@3.7.1 into build/node"
  mkdir -p build/node
  (cd build/node && [ -f package.json ] || echo '{"name":"od-test-deps","private":true}' > package.json
   npm install --silent --no-audit --no-fund s3rver@3.7.1 >/dev/null)
fi
echo "deps.sh: all dependencies present"
