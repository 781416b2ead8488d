#!/usr/bin/env bash
# scripts/test.sh — runs every test: the normal build, then the ASan+UBSan build.
#
# Each unit-test binary (tests/unit/test_*.c), each sql-tests/*.test file and each tool-driven
# suite counts as one test. Binaries whose name contains "_s3rver" run under
# scripts/with-s3rver.sh, "_rgw" under scripts/with-rgw.sh (they start a throwaway server on
# 127.0.0.1, export OD_TEST_S3_URI, and always stop it). Output of a failing test is shown.
# The last line is "N passed, N failed"; the exit status is non-zero when anything failed.
#
#   scripts/test.sh           both builds
#   scripts/test.sh --quick   normal build only
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
quick=0
[ "${1:-}" = "--quick" ] && quick=1

passed=0
failed=0
failed_names=()
LOGDIR=build/test-logs
mkdir -p "$LOGDIR"

run_one() { # name, command...
    local name=$1; shift
    local log="$LOGDIR/$(echo "$name" | tr '/ ' '__').log"
    local t0=$(date +%s)
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %-48s %4ss\n' "$name" $(( $(date +%s) - t0 ))
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        printf 'FAIL  %-48s %4ss\n' "$name" $(( $(date +%s) - t0 ))
        tail -n 60 "$log" | sed 's/^/      | /'
    fi
}

run_suite() { # builddir label
    local B=$1 label=$2
    for bin in "$B"/tests/test_*; do
        [ -x "$bin" ] || continue
        local name="$label/$(basename "$bin")"
        case "$bin" in
            *_s3rver*) run_one "$name" scripts/with-s3rver.sh "$bin" ;;
            *_rgw*)    run_one "$name" scripts/with-rgw.sh "$bin" ;;
            *)         run_one "$name" "$bin" ;;
        esac
    done
    if [ -x "$B/tools/sqltest" ] && [ -f "$B/opendata.so" ]; then
        run_one "$label/sqltest-selftest" scripts/sqltest-selftest.sh "$B"
        # Debian's sqlite3 binary cannot load an ASan-instrumented library: normal build only.
        [ "$label" = normal ] && run_one "$label/make-run-demo" scripts/run-selftest.sh "$B"
        for f in sql-tests/*.test; do
            [ -f "$f" ] || continue
            case "$f" in
                *_rgw*) run_one "$label/$f" scripts/with-rgw.sh "$B/tools/sqltest" --ext "$B/opendata.so" "$f" ;;
                *)      run_one "$label/$f" "$B/tools/sqltest" --ext "$B/opendata.so" "$f" ;;
            esac
        done
    fi
    # Prometheus's own PromQL test files live outside the repo (../shared/promql-conformance,
    # or OD_PROMQL_CONFORMANCE_DIR). Missing files are a failure, never a silent skip.
    local conf=${OD_PROMQL_CONFORMANCE_DIR:-}
    for d in ../shared/promql-conformance /work/shared/promql-conformance; do
        [ -z "$conf" ] && [ -d "$d" ] && conf=$d
    done
    if [ -z "$conf" ]; then
        run_one "$label/promql-conformance" bash -c 'echo "PromQL conformance files not found: set OD_PROMQL_CONFORMANCE_DIR or provide ../shared/promql-conformance"; exit 1'
    else
        run_one "$label/promql-conformance" "$B/tools/promql_conformance" --dir "$conf" \
            --known tests/promql-known-failures.txt
    fi
}

build() { # make args...
    if ! make -s -j"$JOBS" "$@" all tests >"$LOGDIR/build.log" 2>&1; then
        cat "$LOGDIR/build.log"
        echo "build failed ($*)"
        echo "0 passed, 1 failed"
        exit 1
    fi
}

echo "== normal build =="
build
run_suite build normal
if [ $quick = 0 ]; then
    echo "== ASan+UBSan build =="
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    build SANITIZE=1
    OD_TEST_SCALE=${OD_TEST_SCALE_ASAN:-0.25} run_suite build-asan asan
fi

if [ $failed -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
