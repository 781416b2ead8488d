#!/usr/bin/env bash
# scripts/bench.sh AREA — build and run benchmarks (`make bench`, `make bench-AREA`).
# AREA: all | objstore | storage | sst | tsdb | promql | eventstore | s3 | requests
# (s3 and requests need radosgw and run only when named)
# Each benchmark prints Markdown; figures are recorded by hand in docs/benchmarks.md with the
# command and the machine. Benchmarks use a scratch directory under build/bench-data.
set -euo pipefail
cd "$(dirname "$0")/.."
area=${1:-all}
make -s -j"$(nproc)" all benches
D=$(pwd)/build/bench-data
rm -rf "$D" && mkdir -p "$D"
trap 'rm -rf "$D"' EXIT
echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%F)"

run() { # area bench-binary args...
    local a=$1; shift
    if [ "$area" = all ] || [ "$area" = "$a" ]; then
        if [ -x "$1" ]; then echo "## $a: $*"; "$@"; else echo "## $a: $1 not built"; return 1; fi
    fi
}
run objstore build/bench/bench_objstore "file://$D/objstore" "mem://bench"
if [ "$area" = all ] || [ "$area" = objstore ]; then
    scripts/with-s3rver.sh bash -c 'build/bench/bench_objstore "$OD_TEST_S3_URI"'
fi
run sst build/bench/bench_sst
run storage build/bench/bench_storage "file://$D/storage" "mem://bench-storage"
run tsdb build/bench/bench_tsdb "file://$D/tsdb"
run promql build/bench/bench_promql
run eventstore build/bench/bench_eventstore "file://$D/events"
if [ "$area" = s3 ]; then
    # Against a throwaway radosgw: the object store, the storage engine (BENCH_N puts, default
    # 200,000 here) and the TSDB / event-store request economy (bench_s3), each on a fresh
    # prefix, bare and behind the faulty+ wrapper adding 20-50 ms per request (closer to S3
    # Standard). Figures: docs/benchmarks.md, docs/benchmarks.md.
    BENCH_N=${BENCH_N:-200000} scripts/with-rgw.sh bash -c '
        set -e
        sub() { echo "${OD_TEST_S3_URI%%\?*}/$1?${OD_TEST_S3_URI#*\?}"; }
        lat="&latency_ms=20&latency_jitter_ms=30"
        echo "## s3: bench_objstore (radosgw)"; build/bench/bench_objstore "$(sub objstore)"
        echo "## s3: bench_storage (radosgw)"; build/bench/bench_storage "$(sub storage)"
        echo "## s3: bench_storage (radosgw + 20-50 ms)"; build/bench/bench_storage "faulty+$(sub storage-lat)$lat"
        echo "## s3: bench_s3 (radosgw)"; build/bench/bench_s3 "$(sub products)"
        echo "## s3: bench_s3 (radosgw + 20-50 ms)"; build/bench/bench_s3 "faulty+$(sub products-lat)$lat"'
fi
if [ "$area" = requests ]; then
    # Object-store requests per storage-engine operation, on a fresh prefix of a throwaway
    # radosgw: the table of docs/architecture.md, "Requests per operation (measured on radosgw)".
    # (build/bench/bench_requests alone runs it on a file:// temporary directory.)
    echo "## requests: bench_requests (radosgw)"
    scripts/with-rgw.sh build/bench/bench_requests
fi
