#!/usr/bin/env bash
# scripts/run.sh — `make run`: the main job on the embedded default store.
#
# Opens Debian's sqlite3 with the opendata extension loaded, on a demo database whose TSDB
# and event store live in ./demo-store (a file:// object store: the embedded default). The
# first run ingests a small demo dataset through SQL INSERTs. Interactive when stdin is a
# terminal; otherwise it runs the demo queries and exits (so CI and scripts can call it).
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${OD_DEMO_STORE:-$(pwd)/demo-store}"
mkdir -p "$STORE"
DB="$STORE/demo.db"
EXT="${OD_DEMO_EXT:-$(pwd)/build/opendata}"

setup_sql() {
cat <<SQL
CREATE VIRTUAL TABLE IF NOT EXISTS metrics USING tsdb('file://$STORE/tsdb');
CREATE VIRTUAL TABLE IF NOT EXISTS events USING eventstore('file://$STORE/events');
SQL
}

seed_sql() { # 1 hour of two counters at 15 s, and a few events
    local now=$(( $(date +%s) * 1000 ))
    echo "BEGIN;"
    for i in $(seq 0 239); do
        ts=$(( now - (239 - i) * 15000 ))
        echo "INSERT INTO metrics(metric, labels, ts, value) VALUES"
        echo "  ('http_requests_total', '{\"job\":\"api\",\"code\":\"200\"}', $ts, $(( i * 17 ))),"
        echo "  ('http_requests_total', '{\"job\":\"api\",\"code\":\"500\"}', $ts, $(( i / 3 )));"
    done
    echo "COMMIT;"
    echo "INSERT INTO events(key, value) VALUES ('order-1', 'created'), ('order-1', 'paid'), ('order-2', 'created');"
}

demo_sql() {
cat <<'SQL'
.headers on
.mode column
SELECT metric, labels, count(*) AS samples, max(value) AS last FROM metrics
  WHERE metric = 'http_requests_total' GROUP BY labels;
SELECT key, seq, value FROM events WHERE key = 'order-1';
SELECT labels AS "sum by (code) (rate(http_requests_total[5m]))", round(value, 3) AS per_second
  FROM promql('metrics', 'sum by (code) (rate(http_requests_total[5m]))',
              (SELECT max(ts) FROM metrics WHERE metric = 'http_requests_total'));
SQL
}

first_run=0
[ -f "$STORE/.seeded" ] || first_run=1
{ echo ".load $EXT"; setup_sql; } | sqlite3 "$DB"
if [ $first_run = 1 ]; then
    { echo ".load $EXT"; setup_sql; seed_sql; } | sqlite3 "$DB" && touch "$STORE/.seeded"
fi
if [ -t 0 ]; then
    echo "OpenData for SQLite demo: tables 'metrics' (tsdb) and 'events' (eventstore) in $STORE"
    exec sqlite3 -cmd ".load $EXT" "$DB"
else
    { echo ".load $EXT"; demo_sql; } | sqlite3 "$DB"
fi
