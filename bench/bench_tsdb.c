/*
 * bench_tsdb.c — the TSDB benchmark (`make bench-tsdb`): a node-exporter-like dataset through
 * the engine API, compared with the same rows in an ordinary SQLite table, in one run.
 *
 *   bench_tsdb [STORE_URI]   (default file:///tmp/od_bench_tsdb; the directory is wiped first)
 *   env: OD_BENCH_HOSTS (default 40; 96 series each), OD_BENCH_HOURS (24), OD_BENCH_BATCH_MIN
 *        (30: minutes of samples per series per append batch), OD_BENCH_EXT (path of
 *        opendata.so for the SQL runs; default: next to the bench directory).
 *
 * Dataset: per host 96 series with labels {instance, job="node", ...}: CPU-seconds counters
 * (2 decimals), byte/packet counters (integers), memory gauges (multiples of 4096), load
 * gauges with noise (2 decimals), filesystem gauges, constants, and a histogram
 * (http_request_duration_seconds_bucket, 12 `le` buckets × 2 handlers, with _sum/_count).
 * One sample every 15 s, timestamps exactly on the interval.
 *
 * Reports (Markdown): ingest samples/s through od_tsdb_append on one thread; bytes per sample
 * on the store after compaction (live SST bytes = chunks + index + dictionary, and every
 * object in the store); peak RSS growth per active series; the SQLite table's size; the time
 * of `count(*), sum(value) WHERE metric = ? AND ts BETWEEN ? AND ?` and of a full aggregation
 * for engine API, tsdb vtab and native SQLite; object-store requests of a warm and a cold query.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lsm/od_db.h"
#include "objstore/od_objstore.h"
#include "tsdb/od_tsdb.h"

#define T0 1700000000000LL
#define STEP 15000LL

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) /* CPU time of the calling thread: robust on a shared machine */
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

enum kind { K_CPU, K_CNT, K_MEM, K_LOAD, K_CONST, K_TIME, K_BUCKET, K_HSUM };

typedef struct series {
    od_labels ls;
    char *metric, *json;
    enum kind k;
    double v, rate, frac;
} series;

static series *S;
static size_t NS, CAP;

static void add(enum kind k, double v0, double rate, const char *metric, const char *inst, ...)
{
    if (NS == CAP) {
        CAP = CAP ? CAP * 2 : 1024;
        S = realloc(S, CAP * sizeof *S);
        if (!S) exit(1);
    }
    series *s = &S[NS++];
    memset(s, 0, sizeof *s);
    s->k = k;
    /* start values of the kind's precision: counters are integers, CPU seconds have 2
     * decimals, memory is in pages (as node_exporter reports them) */
    if (k == K_CNT || k == K_BUCKET) v0 = floor(v0);
    else if (k == K_CPU) v0 = round(v0 * 100) / 100;
    else if (k == K_MEM) v0 = 4096.0 * floor(v0 / 4096.0);
    s->v = v0;
    s->rate = rate;
    od_labels_add(&s->ls, "__name__", metric);
    od_labels_add(&s->ls, "instance", inst);
    od_labels_add(&s->ls, "job", "node");
    va_list ap;
    va_start(ap, inst);
    const char *n;
    while ((n = va_arg(ap, const char *))) od_labels_add(&s->ls, n, va_arg(ap, const char *));
    va_end(ap);
    od_err e;
    od_labels_sort(&s->ls, &e);
    s->metric = strdup(metric);
    od_buf j = {0};
    od_labels_format_json(&s->ls, &j);
    od_buf_cstr(&j);
    s->json = strdup((char *)j.data);
    od_buf_free(&j);
}

static void build_dataset(int hosts)
{
    static const char *modes[] = {"idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"};
    static const char *les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"};
    for (int h = 0; h < hosts; h++) {
        char inst[64], cpu[8];
        snprintf(inst, sizeof inst, "host-%03d:9100", h);
        for (int c = 0; c < 4; c++) {
            snprintf(cpu, sizeof cpu, "%d", c);
            for (int m = 0; m < 8; m++)
                add(K_CPU, 1000 * urand(), m == 0 ? 0.8 : 0.2 / 7, "node_cpu_seconds_total", inst, "cpu", cpu, "mode",
                    modes[m], NULL);
        }
        const char *mem[] = {"node_memory_MemFree_bytes", "node_memory_MemAvailable_bytes", "node_memory_Cached_bytes",
                             "node_memory_Buffers_bytes"};
        for (int i = 0; i < 4; i++) add(K_MEM, 4096.0 * (1 << 20) * (1 + urand()), 0, mem[i], inst, NULL);
        add(K_LOAD, 1.5, 0, "node_load1", inst, NULL);
        add(K_LOAD, 1.2, 0, "node_load5", inst, NULL);
        add(K_LOAD, 1.0, 0, "node_load15", inst, NULL);
        const char *dev[] = {"eth0", "eth1", "lo"};
        for (int d = 0; d < 3; d++) {
            add(K_CNT, 1e9 * urand(), 2e5 * urand(), "node_network_receive_bytes_total", inst, "device", dev[d], NULL);
            add(K_CNT, 1e9 * urand(), 1e5 * urand(), "node_network_transmit_bytes_total", inst, "device", dev[d], NULL);
            add(K_CNT, 1e6 * urand(), 300 * urand(), "node_network_receive_packets_total", inst, "device", dev[d], NULL);
            add(K_CNT, 1e6 * urand(), 200 * urand(), "node_network_transmit_packets_total", inst, "device", dev[d], NULL);
        }
        const char *disk[] = {"sda", "sdb"};
        for (int d = 0; d < 2; d++) {
            add(K_CNT, 1e10 * urand(), 4096 * 50 * urand(), "node_disk_read_bytes_total", inst, "device", disk[d], NULL);
            add(K_CNT, 1e10 * urand(), 4096 * 80 * urand(), "node_disk_written_bytes_total", inst, "device", disk[d],
                NULL);
            add(K_CPU, 5000 * urand(), 0.05, "node_disk_io_time_seconds_total", inst, "device", disk[d], NULL);
        }
        const char *mp[] = {"/", "/var", "/home"};
        for (int i = 0; i < 3; i++) {
            add(K_MEM, 4096.0 * (1 << 22) * (1 + urand()), 0, "node_filesystem_avail_bytes", inst, "mountpoint", mp[i],
                NULL);
            add(K_CONST, 4096.0 * (1 << 24), 0, "node_filesystem_size_bytes", inst, "mountpoint", mp[i], NULL);
        }
        add(K_TIME, 0, 0, "node_time_seconds", inst, NULL);
        add(K_CONST, 1699000000, 0, "node_boot_time_seconds", inst, NULL);
        add(K_CNT, 1e8 * urand(), 3000, "node_context_switches_total", inst, NULL);
        add(K_CNT, 1e8 * urand(), 1500, "node_intr_total", inst, NULL);
        const char *handler[] = {"/api", "/metrics"};
        for (int hd = 0; hd < 2; hd++) {
            for (int b = 0; b < 12; b++)
                add(K_BUCKET, 0, 40.0 * (b + 1) / 12.0, "http_request_duration_seconds_bucket", inst, "handler",
                    handler[hd], "le", les[b], NULL);
            add(K_HSUM, 0, 4, "http_request_duration_seconds_sum", inst, "handler", handler[hd], NULL);
            add(K_CNT, 0, 40, "http_request_duration_seconds_count", inst, "handler", handler[hd], NULL);
        }
        add(K_CONST, 1, 0, "up", inst, NULL);
    }
}

static double next_value(series *s, int64_t t)
{
    switch (s->k) {
    case K_CPU: s->v = round((s->v + 15 * s->rate * (0.5 + urand())) * 100) / 100; break;
    case K_CNT: s->v += floor(15 * s->rate * (0.5 + urand())); break;
    case K_MEM: s->v += 4096.0 * floor((urand() - 0.5) * 64); break;
    case K_LOAD: s->v = fmax(0, round((s->v + (urand() - 0.5) * 0.2) * 100) / 100); break;
    case K_CONST: break;
    case K_TIME: s->v = (double)t / 1000.0; break;
    case K_BUCKET: s->v += floor(15 * s->rate * (0.8 + 0.4 * urand())); break;
    case K_HSUM: s->v = round((s->v + 15 * s->rate * (0.8 + 0.4 * urand())) * 1000) / 1000; break;
    }
    return s->v;
}

static uint64_t requests(od_db *db)
{
    od_db_stats st;
    od_db_get_stats(db, &st);
    uint64_t n = 0;
    for (int i = 0; i < OD_REQ_KIND_COUNT; i++) n += st.store.requests[i];
    return n;
}

/* count(*), sum(value) of one metric in [lo, hi] through the engine API. */
static void api_query(od_tsdb *t, const char *metric, int64_t lo, int64_t hi, uint64_t *cnt, double *sum)
{
    od_err e;
    od_tsdb_read *r;
    od_matcher m;
    *cnt = 0;
    *sum = 0;
    if (od_tsdb_read_open(t, &r, &e)) { fprintf(stderr, "read: %s\n", e.msg); exit(1); }
    od_series_set *ss;
    int nm = metric != NULL;
    if (nm) od_matcher_init(&m, OD_MATCH_EQ, "__name__", metric, &e);
    if (od_tsdb_select(r, nm ? &m : NULL, (size_t)nm, lo, hi, &ss, &e)) { fprintf(stderr, "select: %s\n", e.msg); exit(1); }
    const od_labels *ls;
    while (od_series_set_next(ss, &ls, &e) == OD_OK && ls) {
        od_sample_iter *it;
        if (od_series_set_samples(ss, &it, &e)) { fprintf(stderr, "samples: %s\n", e.msg); exit(1); }
        while (od_sample_iter_valid(it)) {
            (*cnt)++;
            *sum += od_sample_iter_at(it).v;
            od_sample_iter_next(it, &e);
        }
        od_sample_iter_free(it);
    }
    od_series_set_free(ss);
    if (nm) od_matcher_clear(&m);
    od_tsdb_read_close(r);
}

static double last_cpu; /* thread CPU seconds of the last sql_query (best run) */

static double sql_query1(sqlite3 *db, const char *sql, const char *metric, int64_t lo, int64_t hi, sqlite3_int64 *cnt,
                         double *sum, double *cpu)
{
    sqlite3_stmt *st;
    double t0 = now_s(), c0 = cpu_s();
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL)) { fprintf(stderr, "prepare %s: %s\n", sql, sqlite3_errmsg(db)); exit(1); }
    if (metric) {
        sqlite3_bind_text(st, 1, metric, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, lo);
        sqlite3_bind_int64(st, 3, hi);
    }
    if (sqlite3_step(st) != SQLITE_ROW) { fprintf(stderr, "step %s: %s\n", sql, sqlite3_errmsg(db)); exit(1); }
    *cnt = sqlite3_column_int64(st, 0);
    *sum = sqlite3_column_double(st, 1);
    sqlite3_finalize(st);
    *cpu = cpu_s() - c0;
    return now_s() - t0;
}

/* Best of OD_BENCH_REPS (default 3) runs: wall time returned, CPU time in last_cpu. */
static double sql_query(sqlite3 *db, const char *sql, const char *metric, int64_t lo, int64_t hi, sqlite3_int64 *cnt,
                        double *sum)
{
    int reps = getenv("OD_BENCH_REPS") ? atoi(getenv("OD_BENCH_REPS")) : 3;
    double best = 1e300, bestc = 1e300, c;
    for (int i = 0; i < (reps > 0 ? reps : 1); i++) {
        double w = sql_query1(db, sql, metric, lo, hi, cnt, sum, &c);
        if (w < best) best = w;
        if (c < bestc) bestc = c;
    }
    last_cpu = bestc;
    return best;
}

static int64_t dir_bytes(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "du -sb '%s' 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    long long v = 0;
    if (p && fscanf(p, "%lld", &v) != 1) v = 0;
    if (p) pclose(p);
    return v;
}

int main(int argc, char **argv)
{
    const char *uri = argc > 1 ? argv[1] : "file:///tmp/od_bench_tsdb";
    int hosts = getenv("OD_BENCH_HOSTS") ? atoi(getenv("OD_BENCH_HOSTS")) : 40;
    int hours = getenv("OD_BENCH_HOURS") ? atoi(getenv("OD_BENCH_HOURS")) : 24;
    int bmin = getenv("OD_BENCH_BATCH_MIN") ? atoi(getenv("OD_BENCH_BATCH_MIN")) : 30;
    if (strncmp(uri, "file://", 7) != 0) {
        fprintf(stderr, "bench_tsdb: needs a file:// store (the SQL run opens it from the extension)\n");
        return 2;
    }
    const char *dir = uri + 7;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.sqlite'", dir, dir);
    if (system(cmd)) return 1;
    build_dataset(hosts);
    int64_t steps = (int64_t)hours * 3600000 / STEP, per_batch = (int64_t)bmin * 60000 / STEP;
    uint64_t total = (uint64_t)NS * (uint64_t)steps;
    printf("dataset: %d hosts, %zu series, %d h at 15 s = %lld samples/series, %llu samples; batches of %d min\n\n",
           hosts, NS, hours, (long long)steps, (unsigned long long)total, bmin);

    /* ---- ingest through the engine API ---- */
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_tsdb *t;
    od_err e;
    if (od_tsdb_open(uri, &o, &t, &e)) { fprintf(stderr, "open: %s\n", e.msg); return 1; }
    long rss0 = rss_kb();
    od_sample *buf = malloc(NS * (size_t)per_batch * sizeof *buf);
    od_series_in *in = malloc(NS * sizeof *in);
    double gen = 0, ing = 0;
    for (int64_t s0 = 0; s0 < steps; s0 += per_batch) {
        int64_t n = steps - s0 < per_batch ? steps - s0 : per_batch;
        double g0 = now_s();
        for (size_t i = 0; i < NS; i++) {
            for (int64_t k = 0; k < n; k++) {
                int64_t ts = T0 + (s0 + k) * STEP;
                buf[i * per_batch + k] = (od_sample){ts, next_value(&S[i], ts)};
            }
            in[i] = (od_series_in){&S[i].ls, buf + i * per_batch, (size_t)n};
        }
        double a0 = now_s();
        gen += a0 - g0;
        if (od_tsdb_append(t, in, NS, 0, NULL, NULL, &e)) { fprintf(stderr, "append: %s\n", e.msg); return 1; }
        ing += now_s() - a0;
    }
    double f0 = now_s();
    if (od_tsdb_flush(t, &e)) { fprintf(stderr, "flush: %s\n", e.msg); return 1; }
    double flush_s = now_s() - f0;
    long rss_peak = peak_rss_kb();
    double c0 = now_s();
    if (od_tsdb_compact(t, &e)) { fprintf(stderr, "compact: %s\n", e.msg); return 1; }
    double compact_s = now_s() - c0;
    od_db_stats st;
    od_db_get_stats(od_tsdb_db(t), &st);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    uint64_t chunk_raw = 0, index_raw = 0;
    {
        od_tsdb_read *r;
        od_tsdb_bucket_stats *bs;
        size_t nb;
        if (od_tsdb_read_open(t, &r, &e) || od_tsdb_stats(r, &bs, &nb, &e)) { fprintf(stderr, "stats: %s\n", e.msg); return 1; }
        for (size_t i = 0; i < nb; i++) {
            chunk_raw += bs[i].chunk_bytes;
            index_raw += bs[i].index_bytes;
        }
        free(bs);
        od_tsdb_read_close(r);
    }
    int64_t store_bytes = dir_bytes(dir);
    printf("| ingest (engine API, 1 thread) | |\n|---|---|\n");
    printf("| samples/s (append calls only) | %.0f |\n", total / ing);
    printf("| samples/s (append + final flush) | %.0f |\n", total / (ing + flush_s));
    printf("| compaction (fragments → long chunks) | %.1f s |\n", compact_s);
    printf("| live SST bytes / sample (chunks + index + dictionary) | %.3f |\n", (double)st.live_sst_bytes / total);
    printf("| all objects in the store / sample (incl. WAL not yet GC'd) | %.3f |\n", (double)store_bytes / total);
    printf("| of which chunk entries (key+value, before SST block compression) / sample | %.3f |\n",
           (double)chunk_raw / total);
    printf("| of which postings entries (key+value, before SST block compression) / sample | %.3f |\n",
           (double)index_raw / total);
    printf("| TSDB writer caches (series map + bucket sets) / active series | %.0f B |\n",
           (double)info.cache_bytes / (info.cached_series ? info.cached_series : 1));
    printf("| peak RSS growth during ingest / series (incl. the engine's 64 MiB memtable, caches, batch buffers) | %.1f KiB |\n",
           (double)(rss_peak - rss0) / NS);
    printf("| peak RSS | %.1f MiB |\n\n", rss_peak / 1024.0);
    free(buf);
    free(in);
    od_tsdb_close(t, &e);

    /* ---- the same rows in an ordinary SQLite table ---- */
    char sqlpath[600];
    snprintf(sqlpath, sizeof sqlpath, "%s.sqlite", dir);
    sqlite3 *sdb;
    sqlite3_open(sqlpath, &sdb);
    sqlite3_exec(sdb, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;"
                      "CREATE TABLE samples(metric TEXT, labels TEXT, ts INTEGER, value REAL);", NULL, NULL, NULL);
    /* regenerate identical values */
    rng = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < NS; i++) {
        od_labels_free(&S[i].ls);
        free(S[i].metric);
        free(S[i].json);
    }
    NS = 0;
    build_dataset(hosts);
    double s0t = now_s();
    sqlite3_exec(sdb, "BEGIN", NULL, NULL, NULL);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(sdb, "INSERT INTO samples VALUES (?,?,?,?)", -1, &ins, NULL);
    for (int64_t s0 = 0; s0 < steps; s0 += per_batch) {
        int64_t n = steps - s0 < per_batch ? steps - s0 : per_batch;
        for (size_t i = 0; i < NS; i++)
            for (int64_t k = 0; k < n; k++) {
                int64_t ts = T0 + (s0 + k) * STEP;
                sqlite3_bind_text(ins, 1, S[i].metric, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins, 2, S[i].json, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 3, ts);
                sqlite3_bind_double(ins, 4, next_value(&S[i], ts));
                sqlite3_step(ins);
                sqlite3_reset(ins);
            }
    }
    sqlite3_finalize(ins);
    sqlite3_exec(sdb, "COMMIT; CREATE INDEX samples_metric_ts ON samples(metric, ts, value);", NULL, NULL, NULL);
    double sqlite_load = now_s() - s0t;
    sqlite3_close(sdb);
    struct stat sb;
    stat(sqlpath, &sb);
    printf("| storage | bytes | bytes/sample |\n|---|---|---|\n");
    printf("| tsdb (live SSTs) | %llu | %.3f |\n", (unsigned long long)st.live_sst_bytes, (double)st.live_sst_bytes / total);
    printf("| SQLite table + covering index (metric, ts, value) | %lld | %.3f |\n", (long long)sb.st_size, (double)sb.st_size / total);
    printf("| ratio SQLite / tsdb | %.1f× | |\n\n", (double)sb.st_size / (double)st.live_sst_bytes);
    printf("(SQLite load incl. index build: %.1f s = %.0f rows/s)\n\n", sqlite_load, total / sqlite_load);

    /* ---- queries ---- */
    const char *qm = "node_cpu_seconds_total";
    int64_t lo = T0 + 6 * 3600000LL, hi = T0 + 12 * 3600000LL - 1;
    if (hours < 12) { lo = T0; hi = T0 + hours * 3600000LL; }
    od_tsdb_options_init(&o);
    o.mode = OD_TSDB_READ_ONLY;
    if (od_tsdb_open(uri, &o, &t, &e)) { fprintf(stderr, "reopen: %s\n", e.msg); return 1; }
    uint64_t cnt, r0 = requests(od_tsdb_db(t));
    double sum, q0 = now_s();
    api_query(t, qm, lo, hi, &cnt, &sum);
    double api_cold = now_s() - q0;
    uint64_t cold_req = requests(od_tsdb_db(t)) - r0;
    r0 = requests(od_tsdb_db(t));
    q0 = now_s();
    api_query(t, qm, lo, hi, &cnt, &sum);
    double api_warm = now_s() - q0;
    uint64_t warm_req = requests(od_tsdb_db(t)) - r0;
    uint64_t acnt;
    double asum;
    double api_all = 1e300, api_all_cpu = 1e300;
    for (int i = 0; i < 3; i++) {
        double cq0 = cpu_s();
        q0 = now_s();
        api_query(t, NULL, INT64_MIN, INT64_MAX, &acnt, &asum);
        if (now_s() - q0 < api_all) api_all = now_s() - q0;
        if (cpu_s() - cq0 < api_all_cpu) api_all_cpu = cpu_s() - cq0;
    }
    od_tsdb_close(t, &e);

    sqlite3_open(sqlpath, &sdb);
    sqlite3_int64 scnt, sacnt;
    double ssum, sasum;
    const char *nq = "SELECT count(*), sum(value) FROM samples WHERE metric = ? AND ts BETWEEN ? AND ?";
    sql_query(sdb, nq, qm, lo, hi, &scnt, &ssum); /* warm the page cache */
    double nat_q = sql_query(sdb, nq, qm, lo, hi, &scnt, &ssum), nat_q_cpu = last_cpu;
    double nat_all = sql_query(sdb, "SELECT count(*), sum(value) FROM samples", NULL, 0, 0, &sacnt, &sasum);
    double nat_all_cpu = last_cpu;
    sqlite3_close(sdb);

    /* the vtab, loaded from the extension, on the same store */
    char ext[600];
    if (getenv("OD_BENCH_EXT")) snprintf(ext, sizeof ext, "%s", getenv("OD_BENCH_EXT"));
    else {
        snprintf(ext, sizeof ext, "%s", argv[0]);
        char *slash = strrchr(ext, '/');
        if (slash) *slash = 0;
        else snprintf(ext, sizeof ext, ".");
        strncat(ext, "/../opendata.so", sizeof ext - strlen(ext) - 1);
    }
    double vt_q = -1, vt_all = -1, vt_q_cpu = -1, vt_all_cpu = -1;
    sqlite3_int64 vcnt = -1, vacnt = -1;
    double vsum = 0, vasum = 0;
    sqlite3_open(":memory:", &sdb);
    sqlite3_enable_load_extension(sdb, 1);
    char *err = NULL;
    if (sqlite3_load_extension(sdb, ext, "sqlite3_opendata_init", &err) == SQLITE_OK) {
        char *sql = sqlite3_mprintf("CREATE VIRTUAL TABLE m USING tsdb('%q', mode=readonly)", uri);
        if (sqlite3_exec(sdb, sql, NULL, NULL, &err) == SQLITE_OK) {
            const char *vq = "SELECT count(*), sum(value) FROM m WHERE metric = ? AND ts BETWEEN ? AND ?";
            sql_query(sdb, vq, qm, lo, hi, &vcnt, &vsum); /* warm */
            vt_q = sql_query(sdb, vq, qm, lo, hi, &vcnt, &vsum);
            vt_q_cpu = last_cpu;
            vt_all = sql_query(sdb, "SELECT count(*), sum(value) FROM m", NULL, 0, 0, &vacnt, &vasum);
            vt_all_cpu = last_cpu;
        } else {
            fprintf(stderr, "vtab: %s\n", err);
        }
        sqlite3_free(sql);
    } else {
        fprintf(stderr, "cannot load %s: %s (SQL rows skipped)\n", ext, err ? err : "?");
    }
    sqlite3_free(err);
    sqlite3_close(sdb);

    printf("| query | engine API | tsdb vtab (SQL) | native SQLite | native / vtab |\n|---|---|---|---|---|\n");
    printf("| count,sum WHERE metric=%s AND 6 h range (%llu rows) | %.1f ms warm, %.1f ms cold | %.1f ms | %.1f ms | %.2f× |\n",
           qm, (unsigned long long)cnt, api_warm * 1e3, api_cold * 1e3, vt_q * 1e3, nat_q * 1e3,
           vt_q > 0 ? nat_q / vt_q : 0);
    printf("| count,sum over all rows (%llu) | %.0f ms | %.0f ms | %.0f ms | %.2f× |\n\n", (unsigned long long)acnt,
           api_all * 1e3, vt_all * 1e3, nat_all * 1e3, vt_all > 0 ? nat_all / vt_all : 0);
    printf("CPU time of the querying thread (best of the runs; robust when the machine is shared):\n\n");
    printf("| query (CPU) | engine API | tsdb vtab (SQL) | native SQLite | native / vtab |\n|---|---|---|---|---|\n");
    printf("| metric + 6 h range | | %.1f ms | %.1f ms | %.2f× |\n", vt_q_cpu * 1e3, nat_q_cpu * 1e3,
           vt_q_cpu > 0 ? nat_q_cpu / vt_q_cpu : 0);
    printf("| all rows | %.0f ms | %.0f ms | %.0f ms | %.2f× |\n\n", api_all_cpu * 1e3, vt_all_cpu * 1e3,
           nat_all_cpu * 1e3, vt_all_cpu > 0 ? nat_all_cpu / vt_all_cpu : 0);
    printf("| object-store requests for the metric query | |\n|---|---|\n| cold (fresh handle) | %llu |\n| warm | %llu |\n\n",
           (unsigned long long)cold_req, (unsigned long long)warm_req);
    int ok = (uint64_t)scnt == cnt && (vcnt < 0 || (uint64_t)vcnt == cnt) && (uint64_t)sacnt == acnt &&
             fabs(ssum - sum) <= 1e-6 * fabs(ssum) && acnt == total;
    printf("results agree (counts and sums: API, vtab, SQLite): %s (api %llu/%.6g, sqlite %lld/%.6g, vtab %lld/%.6g; all %llu vs %lld)\n",
           ok ? "yes" : "NO", (unsigned long long)cnt, sum, (long long)scnt, ssum, (long long)vcnt, vsum,
           (unsigned long long)acnt, (long long)sacnt);
    for (size_t i = 0; i < NS; i++) {
        od_labels_free(&S[i].ls);
        free(S[i].metric);
        free(S[i].json);
    }
    free(S);
    return ok ? 0 : 1;
}
