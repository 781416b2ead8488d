/*
 * bench_s3.c — request economy of the TSDB and the event store on any store URI, meant for
 * s3:// (`make bench-s3` runs it against radosgw, bare and behind the faulty+ latency wrapper),
 * printed as Markdown. The products' own benchmarks (bench_tsdb, bench_eventstore) need a
 * file:// store to measure its size; this one measures what an object store charges for:
 * requests and bytes.
 *
 *   bench_s3 URI        (an empty store; "/tsdb" and "/events" are appended to its prefix)
 *   env: OD_BENCH_HOSTS (default 10; 20 series each), OD_BENCH_HOURS (6, one sample per 15 s),
 *        OD_BENCH_KEYS (1000), OD_BENCH_RECORDS_PER_KEY (20)
 *
 * TSDB: ingest in batches of 30 minutes of every series (durable appends, one thread):
 *   samples/s, PUTs and PUTs/s during ingest (WAL objects); flush + compaction (PUTs); then a
 *   fresh read-only handle (cold caches) runs `metric = node_cpu_seconds_total` over one hour
 *   twice: cold and warm, each with its GETs (whole + ranged), LISTs, HEADs, bytes read and
 *   time. The open itself is reported separately (manifest, WAL tail, collection footers).
 * Events: KEYS keys × RECORDS_PER_KEY records of 100 bytes, appended as batches of 100 records
 *   over distinct keys, each batch durable before the next: records/s, PUTs/s; then, after a
 *   flush + compaction, a fresh read-only handle reads one key (all its records) cold and warm.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/od_eventstore.h"
#include "lsm/od_db.h"
#include "objstore/od_objstore.h"
#include "tsdb/od_tsdb.h"
#include "od_bench.h"

#define T0 1700000000000LL
#define STEP 15000LL
#define SERIES_PER_HOST 20

static void die(const char *what, const od_err *e)
{
    fprintf(stderr, "bench_s3: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

/* URI with "/sub" appended to the path part (before any '?'). */
static char *sub_uri(const char *uri, const char *sub)
{
    const char *q = strchr(uri, '?');
    size_t loc = q ? (size_t)(q - uri) : strlen(uri);
    size_t n = strlen(uri) + strlen(sub) + 2;
    char *r = malloc(n);
    if (!r) die("out of memory", NULL);
    snprintf(r, n, "%.*s/%s%s", (int)loc, uri, sub, q ? q : "");
    return r;
}

typedef struct snap {
    od_store_stats s;
    double t;
} snap;

static snap take(od_db *db)
{
    od_db_stats st;
    od_db_get_stats(db, &st);
    return (snap){st.store, od_bench_now_s()};
}

static uint64_t d(const snap *a, const snap *b, od_req_kind k)
{
    return b->s.requests[k] - a->s.requests[k];
}

/* One Markdown row: what, time, GET, GET range, HEAD, LIST, PUT, bytes in, bytes out. */
static void row(const char *what, const snap *a, const snap *b)
{
    printf("| %s | %.1f | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " |\n",
           what, (b->t - a->t) * 1e3, d(a, b, OD_REQ_GET), d(a, b, OD_REQ_GET_RANGE), d(a, b, OD_REQ_HEAD),
           d(a, b, OD_REQ_LIST), d(a, b, OD_REQ_PUT), b->s.bytes_in - a->s.bytes_in, b->s.bytes_out - a->s.bytes_out);
}

static void table_head(void)
{
    printf("| operation | ms | GET | GET range | HEAD | LIST | PUT | bytes in | bytes out |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

/* ---------------------------------------------------------------- TSDB */

static const char *metrics[4] = {"node_cpu_seconds_total", "node_network_receive_bytes_total",
                                 "node_memory_MemFree_bytes", "node_load1"};

static void tsdb_query(od_tsdb *t, const char *metric, int64_t lo, int64_t hi, uint64_t *cnt)
{
    od_err e;
    od_tsdb_read *r;
    od_matcher m;
    *cnt = 0;
    if (od_tsdb_read_open(t, &r, &e)) die("read_open", &e);
    if (od_matcher_init(&m, OD_MATCH_EQ, "__name__", metric, &e)) die("matcher", &e);
    od_series_set *ss;
    if (od_tsdb_select(r, &m, 1, lo, hi, &ss, &e)) die("select", &e);
    const od_labels *ls;
    while (od_series_set_next(ss, &ls, &e) == OD_OK && ls) {
        od_sample_iter *it;
        if (od_series_set_samples(ss, &it, &e)) die("samples", &e);
        while (od_sample_iter_valid(it)) {
            (*cnt)++;
            if (od_sample_iter_next(it, &e)) die("sample next", &e);
        }
        od_sample_iter_free(it);
    }
    od_series_set_free(ss);
    od_matcher_clear(&m);
    od_tsdb_read_close(r);
}

static void bench_tsdb(const char *uri)
{
    int hosts = (int)od_bench_env_long("OD_BENCH_HOSTS", 10), hours = (int)od_bench_env_long("OD_BENCH_HOURS", 6);
    size_t ns = (size_t)hosts * SERIES_PER_HOST;
    int64_t steps = (int64_t)hours * 3600000 / STEP, per_batch = 30 * 60000 / STEP;
    od_labels *ls = calloc(ns, sizeof *ls);
    od_sample *buf = malloc(ns * (size_t)per_batch * sizeof *buf);
    od_series_in *in = malloc(ns * sizeof *in);
    if (!ls || !buf || !in) die("out of memory", NULL);
    for (size_t i = 0; i < ns; i++) {
        char inst[32], cpu[16];
        snprintf(inst, sizeof inst, "host-%03zu:9100", i / SERIES_PER_HOST);
        snprintf(cpu, sizeof cpu, "%zu", (i % SERIES_PER_HOST) / 4);
        if (od_labels_add(&ls[i], "__name__", metrics[i % 4]) || od_labels_add(&ls[i], "instance", inst) ||
            od_labels_add(&ls[i], "job", "node") || od_labels_add(&ls[i], "cpu", cpu))
            die("labels", NULL);
    }
    printf("### TSDB on %.*s\n\n", (int)strcspn(uri, "?"), uri); /* parameters carry credentials */
    printf("dataset: %zu series (%d hosts), %d h at 15 s = %" PRId64 " samples; append batches of 30 min of every "
           "series, durable\n\n", ns, hosts, hours, (int64_t)ns * steps);

    od_tsdb_options o;
    od_tsdb_options_init(&o);
    o.mode = OD_TSDB_WRITER;
    o.compact_interval_ms = 0;
    o.bucket_ms = 3600000;
    od_tsdb *t;
    od_err e;
    double t0 = od_bench_now_s();
    if (od_tsdb_open(uri, &o, &t, &e)) die("tsdb open", &e);
    double open_w = od_bench_now_s() - t0;
    snap a = take(od_tsdb_db(t));
    uint64_t total = 0;
    for (int64_t s0 = 0; s0 < steps; s0 += per_batch) {
        int64_t n = steps - s0 < per_batch ? steps - s0 : per_batch;
        for (size_t i = 0; i < ns; i++) {
            for (int64_t k = 0; k < n; k++) {
                int64_t ts = T0 + (s0 + k) * STEP;
                double v = (i % 4) == 0 ? (double)(s0 + k) * 0.25 + (double)i : (double)((i * 7919 + (size_t)k) % 1000);
                buf[i * (size_t)per_batch + (size_t)k] = (od_sample){ts, v};
            }
            in[i] = (od_series_in){&ls[i], buf + i * (size_t)per_batch, (size_t)n};
        }
        if (od_tsdb_append(t, in, ns, 1, NULL, NULL, &e)) die("append", &e);
        total += ns * (uint64_t)n;
    }
    snap b = take(od_tsdb_db(t));
    if (od_tsdb_flush(t, &e)) die("flush", &e);
    if (od_tsdb_compact(t, &e)) die("compact", &e);
    snap c = take(od_tsdb_db(t));
    if (od_tsdb_close(t, &e)) die("close", &e);
    double ing = b.t - a.t;
    printf("| ingest | value |\n|---|---:|\n");
    printf("| writer open | %.0f ms |\n", open_w * 1e3);
    printf("| samples/s (durable appends, 1 thread) | %.0f |\n", (double)total / ing);
    printf("| append batches | %" PRId64 " |\n", (steps + per_batch - 1) / per_batch);
    printf("| PUTs during ingest | %" PRIu64 " (%.1f/s) |\n", d(&a, &b, OD_REQ_PUT), (double)d(&a, &b, OD_REQ_PUT) / ing);
    printf("| bytes written during ingest | %.2f MiB |\n", (double)(b.s.bytes_out - a.s.bytes_out) / 1048576.0);
    printf("| flush + compaction | %.1f s, %" PRIu64 " PUTs, %" PRIu64 " GETs |\n\n", c.t - b.t, d(&b, &c, OD_REQ_PUT),
           d(&b, &c, OD_REQ_GET) + d(&b, &c, OD_REQ_GET_RANGE));

    /* queries on a fresh read-only handle: its block cache is empty */
    od_tsdb_options_init(&o);
    o.mode = OD_TSDB_READ_ONLY;
    t0 = od_bench_now_s();
    if (od_tsdb_open(uri, &o, &t, &e)) die("tsdb reopen", &e);
    snap r0 = {.t = t0}; /* the open's requests: all of the handle's counters */
    snap r1 = take(od_tsdb_db(t));
    int64_t lo = T0 + (hours > 2 ? 2 : 0) * 3600000LL, hi = lo + 3600000LL - 1;
    uint64_t cnt_cold, cnt_warm;
    tsdb_query(t, metrics[0], lo, hi, &cnt_cold);
    snap r2 = take(od_tsdb_db(t));
    tsdb_query(t, metrics[0], lo, hi, &cnt_warm);
    snap r3 = take(od_tsdb_db(t));
    if (cnt_cold != cnt_warm || cnt_cold == 0) {
        fprintf(stderr, "bench_s3: cold query gave %" PRIu64 " samples, warm %" PRIu64 "\n", cnt_cold, cnt_warm);
        exit(1);
    }
    table_head();
    row("read-only open (manifest, WAL tail, collection footers)", &r0, &r1);
    char what[160];
    snprintf(what, sizeof what, "cold query: %s, 1 h, %zu series, %" PRIu64 " samples", metrics[0], ns / 4, cnt_cold);
    row(what, &r1, &r2);
    row("warm query (same, again)", &r2, &r3);
    printf("\n");
    if (od_tsdb_close(t, &e)) die("close", &e);
    for (size_t i = 0; i < ns; i++) od_labels_free(&ls[i]);
    free(ls);
    free(buf);
    free(in);
}

/* ---------------------------------------------------------------- events */

static void ev_read_key(od_eventstore *es, const char *key, uint64_t *n, uint64_t *bytes)
{
    od_err e;
    od_ev_read_opts ro = {0};
    od_ev_cursor *c;
    *n = *bytes = 0;
    if (od_ev_cursor_open(es, key, strlen(key), &ro, &c, &e)) die("cursor", &e);
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        (*n)++;
        *bytes += r.vlen;
        if (od_ev_cursor_next(c, &e)) die("cursor next", &e);
    }
    od_ev_cursor_free(c);
}

static void bench_events(const char *uri)
{
    long keys = od_bench_env_long("OD_BENCH_KEYS", 1000), per_key = od_bench_env_long("OD_BENCH_RECORDS_PER_KEY", 20);
    enum { BATCH = 100, VLEN = 100 };
    printf("### Event store on %.*s\n\n", (int)strcspn(uri, "?"), uri);
    printf("dataset: %ld keys × %ld records of %d bytes, appended in batches of %d records over distinct keys, "
           "each batch durable before the next\n\n", keys, per_key, VLEN, BATCH);
    od_ev_options o;
    od_ev_options_init(&o);
    od_eventstore *es;
    od_err e;
    double t0 = od_bench_now_s();
    if (od_ev_open(uri, &o, &es, &e)) die("events open", &e);
    double open_w = od_bench_now_s() - t0;
    od_ev_rec_in recs[BATCH];
    char kb[BATCH][32], vb[VLEN];
    for (int i = 0; i < VLEN; i++) vb[i] = (char)('a' + i % 26);
    snap a = take(od_ev_db(es));
    long total = keys * per_key, done = 0, batches = 0;
    while (done < total) {
        int n = 0;
        for (; n < BATCH && done < total; n++, done++) {
            long r = done / keys, k = done % keys;
            snprintf(kb[n], sizeof kb[n], "stream/%06ld", k);
            vb[0] = (char)('A' + r % 26);
            recs[n] = (od_ev_rec_in){.key = kb[n], .klen = strlen(kb[n]), .value = vb, .vlen = VLEN,
                                     .expected_seq = OD_EV_ANY};
        }
        if (od_ev_append(es, recs, (size_t)n, NULL, NULL, NULL, &e)) die("append", &e);
        batches++;
    }
    snap b = take(od_ev_db(es));
    if (od_db_flush(od_ev_db(es), 1, &e)) die("flush", &e);
    if (od_db_compact(od_ev_db(es), &e)) die("compact", &e);
    snap c = take(od_ev_db(es));
    if (od_ev_close(es, &e)) die("close", &e);
    double ing = b.t - a.t;
    printf("| append | value |\n|---|---:|\n");
    printf("| writer open | %.0f ms |\n", open_w * 1e3);
    printf("| records/s (durable batches of %d, 1 thread) | %.0f |\n", BATCH, (double)total / ing);
    printf("| batches/s | %.1f |\n", (double)batches / ing);
    printf("| PUTs during appends | %" PRIu64 " (%.1f/s) |\n", d(&a, &b, OD_REQ_PUT), (double)d(&a, &b, OD_REQ_PUT) / ing);
    printf("| flush + compaction | %.1f s, %" PRIu64 " PUTs |\n\n", c.t - b.t, d(&b, &c, OD_REQ_PUT));

    o.read_only = 1;
    t0 = od_bench_now_s();
    if (od_ev_open(uri, &o, &es, &e)) die("events reopen", &e);
    snap r0 = {.t = t0};
    snap r1 = take(od_ev_db(es));
    char key[32];
    snprintf(key, sizeof key, "stream/%06ld", keys / 2);
    uint64_t n1, by1, n2, by2;
    ev_read_key(es, key, &n1, &by1);
    snap r2 = take(od_ev_db(es));
    ev_read_key(es, key, &n2, &by2);
    snap r3 = take(od_ev_db(es));
    if (n1 != (uint64_t)per_key || n2 != n1) {
        fprintf(stderr, "bench_s3: key %s read %" PRIu64 " then %" PRIu64 " records, want %ld\n", key, n1, n2, per_key);
        exit(1);
    }
    table_head();
    row("read-only open", &r0, &r1);
    char what[160];
    snprintf(what, sizeof what, "cold read of one key (%" PRIu64 " records, %" PRIu64 " value bytes)", n1, by1);
    row(what, &r1, &r2);
    row("warm read of the same key", &r2, &r3);
    printf("\n");
    if (od_ev_close(es, &e)) die("close", &e);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bench_s3 URI   (an empty store; see the file's header)\n");
        return 2;
    }
    char *tu = sub_uri(argv[1], "tsdb"), *eu = sub_uri(argv[1], "events");
    bench_tsdb(tu);
    bench_events(eu);
    free(tu);
    free(eu);
    return 0;
}
