#!/usr/bin/env bash
# The sql-test runner must fail a file of wrong expectations: exit 1 and "0 passed, 5 failed".
# usage: scripts/sqltest-selftest.sh BUILD_DIR
B=$1
out=$("$B/tools/sqltest" --ext "$B/opendata.so" tests/sqltest-selftest/must_fail.test)
rc=$?
echo "$out"
[ "$rc" = 1 ] && echo "$out" | grep -q '^0 passed, 5 failed$'
