#!/usr/bin/env bash
# Checks that `make run`'s script works non-interactively on a fresh store, twice (the second
# run reuses the store): the demo rows and the PromQL answer must be there.
# usage: scripts/run-selftest.sh BUILD_DIR
# The checks read "$out" from a here-string, not `echo "$out" | grep -q`: with pipefail, grep -q
# exiting at its first match can SIGPIPE the echo still writing later lines (bash writes them
# one at a time), failing the check at random (about 1 in 1000 on a loaded machine).
set -uo pipefail
B=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for pass in 1 2; do
    out=$(OD_DEMO_STORE="$T/store" OD_DEMO_EXT="$(pwd)/$B/opendata" scripts/run.sh </dev/null) || { echo "$out"; exit 1; }
    echo "$out"
    grep -q 'http_requests_total  {"code":"200","job":"api"}  240' <<<"$out" || exit 1
    grep -q 'order-1  1    paid' <<<"$out" || exit 1
    grep -q '{"code":"200"} *1.133' <<<"$out" || exit 1
done
