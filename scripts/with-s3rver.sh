#!/usr/bin/env bash
# scripts/with-s3rver.sh CMD [ARGS...] — run CMD against a throwaway s3rver on 127.0.0.1.
#
# Starts s3rver (npm package, installed by scripts/deps.sh into build/node) on a free port
# (it binds port 0 and we read the port from its output) with a fresh temp directory and a bucket,
# waits until it answers, exports
#   OD_TEST_S3_URI       s3://odtest/<unique prefix>?region=..&endpoint=http://127.0.0.1:PORT&path_style=1
#                        &list_sort=1&access_key=S3RVER&secret_key=S3RVER   (s3rver's built-in test
#                        credentials; list_sort=1 because s3rver lists depth-first by directory,
#                        so "b/1" comes before "b-x", not in byte order)
#   OD_TEST_S3_KIND      s3rver
#   OD_TEST_S3_ENDPOINT, OD_TEST_S3_BUCKET
# runs CMD, and always stops the server and removes the temp dir (trap on EXIT/INT/TERM).
# The exit status is CMD's. s3rver checks request shape but not conditional writes.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S3RVER=${S3RVER_BIN:-$ROOT/build/node/node_modules/.bin/s3rver}
if [ $# -eq 0 ]; then echo "usage: $0 CMD [ARGS...]" >&2; exit 2; fi
if [ ! -x "$S3RVER" ]; then
    echo "with-s3rver.sh: $S3RVER not found; run scripts/deps.sh first" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/od-s3rver.XXXXXX")
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BUCKET=odtest
mkdir -p "$TMP/data"
# s3rver is started through this launcher rather than its CLI, to fix one thing: s3rver 3.7.1
# answers a PUT once its hashing stream has finished, before the object's bytes are on disk, so a
# GET right after the PUT can read an empty object (seen as rare failures of concurrent
# put-then-get tests). S3 promises strong read-after-write consistency; the replacement putObject
# writes the file completely before the PUT is answered.
: >"$TMP/log"
cat >"$TMP/run-s3rver.js" <<'JS'
'use strict';
const path = require('path');
const fsp = require('fs').promises;
const crypto = require('crypto');
const [modules, directory, bucket] = process.argv.slice(2);
const S3rver = require(path.join(modules, 's3rver'));
const FilesystemStore = require(path.join(modules, 's3rver/lib/stores/filesystem.js'));
FilesystemStore.prototype.putObject = async function (object) {
  const file = this.getResourcePath(object.bucket, object.key, 'object');
  await fsp.mkdir(path.dirname(file), { recursive: true });
  let data = object.content;
  if (!Buffer.isBuffer(data)) {
    const parts = [];
    for await (const chunk of data) parts.push(chunk);
    data = Buffer.concat(parts);
  }
  await fsp.writeFile(file, data);
  const md5 = crypto.createHash('md5').update(data).digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size: data.length, md5 };
};
new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true,
             configureBuckets: [{ name: bucket, configs: [] }] })
  .run()
  .then((a) => console.log(`S3rver listening on ${a.address}:${a.port}`),
        (e) => { console.error(e); process.exit(1); });
JS
# s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with DES, which Node 20's OpenSSL 3
# only offers through the legacy provider: without it every truncated page is a 500.
NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--openssl-legacy-provider" \
    node "$TMP/run-s3rver.js" "$(dirname "$(dirname "$S3RVER")")" "$TMP/data" "$BUCKET" >"$TMP/log" 2>&1 &
PID=$!

PORT=""
for _ in $(seq 200); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/log" | head -n1)
    [ -n "$PORT" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$PORT" ]; then
    echo "with-s3rver.sh: s3rver did not start; its log:" >&2
    cat "$TMP/log" >&2
    exit 1
fi
ok=0
for _ in $(seq 100); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then ok=1; break; fi
    sleep 0.05
done
if [ $ok = 0 ]; then echo "with-s3rver.sh: s3rver on port $PORT does not answer" >&2; exit 1; fi

export OD_TEST_S3_KIND=s3rver
export OD_TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
export OD_TEST_S3_BUCKET=$BUCKET
export OD_TEST_S3_URI="s3://$BUCKET/run-$$-$RANDOM?region=us-east-1&endpoint=http://127.0.0.1:$PORT&path_style=1&list_sort=1&access_key=S3RVER&secret_key=S3RVER"

"$@"
rc=$?
exit $rc
