#!/usr/bin/env bash
# scripts/with-rgw.sh CMD [ARGS...] — run CMD against a throwaway Ceph radosgw on 127.0.0.1.
#
# Starts a one-node Ceph cluster (mon, memstore OSD, radosgw) with scripts/s3-peer/ceph-rgw-start in
# a fresh temp directory (about 3 s), creates a bucket with a SigV4-signed PUT (curl --aws-sigv4),
# exports
#   OD_TEST_S3_URI       s3://odtest/<unique prefix>?region=us-east-1&endpoint=http://127.0.0.1:PORT
#                        &path_style=1&access_key=..&secret_key=..  (fresh random credentials)
#   OD_TEST_S3_KIND      rgw
#   OD_TEST_S3_ENDPOINT, OD_TEST_S3_BUCKET, OD_TEST_S3_ACCESS_KEY, OD_TEST_S3_SECRET_KEY
# runs CMD, and always stops the cluster (SIGKILL by PID) and removes the directory, also when
# CMD fails or the script is interrupted. The exit status is CMD's.
# radosgw verifies signatures and honours If-None-Match / If-Match (with quirks: see
# docs/architecture.md). Needs the Debian packages radosgw ceph-mon ceph-osd (scripts/deps.sh).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -eq 0 ]; then echo "usage: $0 CMD [ARGS...]" >&2; exit 2; fi
for b in radosgw ceph-mon ceph-osd; do
    command -v $b >/dev/null 2>&1 || { echo "with-rgw.sh: $b not found; run scripts/deps.sh first" >&2; exit 2; }
done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/od-rgw.XXXXXX")
cleanup() { "$ROOT/scripts/s3-peer/ceph-rgw-stop" "$DIR/c" >/dev/null 2>&1; rm -rf "$DIR"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! "$ROOT/scripts/s3-peer/ceph-rgw-start" "$DIR/c" >"$DIR/start.log" 2>&1; then
    echo "with-rgw.sh: radosgw did not start:" >&2
    cat "$DIR/start.log" >&2
    tail -n 30 "$DIR"/c/log/*.log >&2 2>/dev/null
    exit 1
fi
# shellcheck disable=SC1091
. "$DIR/c/env"

BUCKET=odtest
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
code=""
for _ in $(seq 50); do
    code=$(curl -s -o "$DIR/mkbucket.out" -w '%{http_code}' -X PUT --max-time 10 \
        --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: $EMPTY_SHA" "$S3_ENDPOINT/$BUCKET")
    [ "$code" = 200 ] && break
    sleep 0.2 # the user may take a moment to become visible to the gateway
done
if [ "$code" != 200 ]; then
    echo "with-rgw.sh: creating bucket $BUCKET failed (HTTP $code):" >&2
    cat "$DIR/mkbucket.out" >&2
    exit 1
fi

export OD_TEST_S3_KIND=rgw
export OD_TEST_S3_ENDPOINT="$S3_ENDPOINT"
export OD_TEST_S3_BUCKET=$BUCKET
export OD_TEST_S3_ACCESS_KEY="$AWS_ACCESS_KEY_ID"
export OD_TEST_S3_SECRET_KEY="$AWS_SECRET_ACCESS_KEY"
export OD_TEST_S3_URI="s3://$BUCKET/run-$$-$RANDOM?region=$AWS_REGION&endpoint=$S3_ENDPOINT&path_style=1&access_key=$AWS_ACCESS_KEY_ID&secret_key=$AWS_SECRET_ACCESS_KEY"
unset S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION PIDS

"$@"
rc=$?
exit $rc
