#!/usr/bin/env bash
# Checks that `make run`'s script works non-interactively on a fresh store, twice (the second
# run reuses the store): the demo rows and the PromQL answer must be there.
# usage: scripts/run-selftest.sh BUILD_DIR
set -uo pipefail
B=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for pass in 1 2; do
    out=$(OD_DEMO_STORE="$T/store" OD_DEMO_EXT="$(pwd)/$B/opendata" scripts/run.sh </dev/null) || { echo "$out"; exit 1; }
    echo "$out"
    echo "$out" | grep -q 'http_requests_total  {"code":"200","job":"api"}  240' || exit 1
    echo "$out" | grep -q 'order-1  1    paid' || exit 1
    echo "$out" | grep -q '{"code":"200"} *1.133' || exit 1
done
