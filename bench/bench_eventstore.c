/*
 * bench_eventstore.c — the event store benchmark (`make bench-eventstore`), with an ordinary
 * SQLite table measured in the same run.
 *
 *   bench_eventstore [STORE_URI]   (default file:///tmp/od_bench_events; wiped first; must be
 *                                   a file:// URI or a plain path so its size can be measured)
 *   env: OD_BENCH_KEYS (default 1000000), OD_BENCH_RECORDS_PER_KEY (10),
 *        OD_BENCH_APPEND_RECORDS (200000: the append-throughput comparison),
 *        OD_BENCH_REPLAY_RECORDS (200000: records of the one large key),
 *        OD_BENCH_MEMTABLE_MB / OD_BENCH_BLOCK_CACHE_MB (32 / 32: engine memory of the many-keys run),
 *        OD_BENCH_COMPACTOR (1: background compaction in the writer; 0 = off, to see its memory)
 *
 * 1. Append throughput: 100-byte records, batches of 100 records over 1,000 keys, one
 *    appending thread, every batch durable before the next (od_ev_append waits for the WAL
 *    object). Versus SQLite: table ev(key TEXT, seq INTEGER, ts INTEGER, value BLOB,
 *    PRIMARY KEY(key, seq)), WAL journal, synchronous=FULL, one transaction per batch, the
 *    seq computed per record as coalesce(max(seq)+1, 0) — the same work: gapless per-key
 *    sequences, durable per batch. Also 4 appending threads (group commit).
 * 2. Many keys: OD_BENCH_KEYS keys × OD_BENCH_RECORDS_PER_KEY records (random printable values,
 *    barely compressible), appended in rounds
 *    (round r appends record r of every key, batches of 1,000 keys), so the tail cache (65,536
 *    entries) misses on almost every append. Reports records/s, VmRSS after each tenth of the
 *    first round (flatness), peak RSS, store bytes per record after flush + compaction.
 * 3. One key's last 100 records: a key with 1,000 records among the many keys; latency and
 *    object-store requests, cold (fresh handle, empty caches) and warm.
 * 4. Replay: one key with OD_BENCH_REPLAY_RECORDS records read start to end (cold), MB/s.
 */
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eventstore/od_eventstore.h"
#include "lsm/od_db.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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

static long env_long(const char *name, long def)
{
    const char *s = getenv(name);
    return s && *s ? atol(s) : def;
}

static void die(const char *what, const od_err *e)
{
    fprintf(stderr, "bench_eventstore: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static uint64_t du_bytes(const char *path)
{
    struct stat st;
    if (lstat(path, &st)) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    uint64_t sum = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        sum += du_bytes(p);
    }
    if (d) closedir(d);
    return sum;
}

static char root[1024];   /* local directory */
static char uri_buf[1100];

static const char *sub_uri(const char *name)
{
    snprintf(uri_buf, sizeof uri_buf, "%s/%s", root, name);
    return uri_buf;
}

static size_t memtable_bytes, block_cache_bytes; /* 0 = engine defaults */

static od_eventstore *open_es(const char *uri, uint32_t flush_ms)
{
    od_ev_options o;
    od_ev_options_init(&o);
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = flush_ms;
    if (memtable_bytes) dbo.memtable_bytes = memtable_bytes;
    if (block_cache_bytes) dbo.block_cache_bytes = block_cache_bytes;
    dbo.compactor = (int)env_long("OD_BENCH_COMPACTOR", 1);
    o.db = &dbo;
    od_eventstore *es;
    od_err err = {0};
    if (od_ev_open(uri, &o, &es, &err)) die("open", &err);
    return es;
}

static uint64_t rs = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

/* ---------------------------------------------------------------- 1. append throughput */

typedef struct app_ctx {
    od_eventstore *es;
    long batches;
    int id;
    int no_wait;
} app_ctx;

static void *append_thread(void *p)
{
    app_ctx *a = p;
    enum { B = 100 };
    char keys[B][32], val[100];
    memset(val, 'v', sizeof val);
    od_ev_rec_in in[B];
    uint64_t s = 0x1234ULL + (uint64_t)a->id;
    for (long b = 0; b < a->batches; b++) {
        for (int j = 0; j < B; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            snprintf(keys[j], sizeof keys[j], "key/%04d", (int)(s % 1000));
            in[j] = (od_ev_rec_in){.key = keys[j], .klen = strlen(keys[j]), .value = val, .vlen = sizeof val,
                                   .expected_seq = OD_EV_ANY};
        }
        od_err err = {0};
        od_ev_append_opts ao = {.no_wait = a->no_wait};
        if (od_ev_append(a->es, in, B, &ao, NULL, NULL, &err)) die("append", &err);
    }
    return NULL;
}

static double bench_es_append(const char *uri, long records, int threads, uint32_t flush_ms, int no_wait)
{
    od_eventstore *es = open_es(uri, flush_ms);
    pthread_t th[16];
    app_ctx ctx[16];
    long per = records / 100 / threads;
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        ctx[i] = (app_ctx){es, per, i, no_wait};
        pthread_create(&th[i], NULL, append_thread, &ctx[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    od_err err = {0};
    if (no_wait && od_db_flush(od_ev_db(es), 0, &err)) die("flush", &err); /* all durable */
    double dt = now_s() - t0;
    if (od_ev_close(es, &err)) die("close", &err);
    return (double)(per * threads * 100) / dt;
}

static double bench_sqlite_append(const char *path, long records)
{
    sqlite3 *db;
    unlink(path);
    if (sqlite3_open(path, &db)) die("sqlite open", NULL);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE ev(key TEXT, seq INTEGER, ts INTEGER, value BLOB, PRIMARY KEY(key, seq))",
                 NULL, NULL, NULL);
    sqlite3_stmt *ins;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO ev(key, seq, ts, value) SELECT ?1, coalesce(max(seq) + 1, 0), ?2, ?3 "
                           "FROM ev WHERE key = ?1",
                           -1, &ins, NULL))
        die(sqlite3_errmsg(db), NULL);
    char val[100], key[32];
    memset(val, 'v', sizeof val);
    long batches = records / 100;
    uint64_t s = 0x1234ULL;
    double t0 = now_s();
    for (long b = 0; b < batches; b++) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int j = 0; j < 100; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            snprintf(key, sizeof key, "key/%04d", (int)(s % 1000));
            sqlite3_bind_text(ins, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 2, 1700000000000LL + b);
            sqlite3_bind_blob(ins, 3, val, sizeof val, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) die(sqlite3_errmsg(db), NULL);
            sqlite3_reset(ins);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) die(sqlite3_errmsg(db), NULL);
    }
    double dt = now_s() - t0;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return (double)(batches * 100) / dt;
}

/* ---------------------------------------------------------------- 2./3. many keys */

static void key_name(char *out, size_t cap, long i) { snprintf(out, cap, "tenant-%03ld/user-%07ld", i % 997, i); }

static void read_last100(const char *uri, const char *label)
{
    for (int pass = 0; pass < 2; pass++) {
        od_eventstore *es = pass == 0 ? open_es(uri, 100) : NULL;
        static od_eventstore *keep;
        if (pass == 0) keep = es;
        es = keep;
        od_db_stats a, b;
        od_db_get_stats(od_ev_db(es), &a);
        od_err err = {0};
        for (int warm = 0; warm < 2; warm++) {
            od_db_get_stats(od_ev_db(es), &a);
            double t0 = now_s();
            od_ev_read_opts ro = {.from = OD_EV_FROM_TAIL, .tail_n = 100};
            od_ev_cursor *c;
            if (od_ev_cursor_open(es, "hot/key", 7, &ro, &c, &err)) die("read", &err);
            int n = 0;
            size_t bytes = 0;
            while (od_ev_cursor_valid(c)) {
                od_ev_record r;
                od_ev_cursor_record(c, &r);
                bytes += r.vlen;
                n++;
                if (od_ev_cursor_next(c, &err)) die("next", &err);
            }
            od_ev_cursor_free(c);
            double dt = now_s() - t0;
            od_db_get_stats(od_ev_db(es), &b);
            uint64_t req = 0;
            for (int k = 0; k < OD_REQ_KIND_COUNT; k++) req += b.store.requests[k] - a.store.requests[k];
            printf("| %s last 100 of one key, %s | %.3f ms | %d records, %zu value bytes, %llu object-store requests |\n",
                   label, warm ? "warm" : "cold (new handle)", dt * 1000, n, bytes, (unsigned long long)req);
        }
        od_ev_close(es, &err);
        break;
    }
}

static void bench_many_keys(const char *uri, long nkeys, long per_key)
{
    od_eventstore *es = open_es(uri, 5);
    enum { B = 1000 };
    od_ev_rec_in *in = calloc(B, sizeof *in);
    char (*keys)[40] = calloc(B, 40);
    char val[100];
    memset(val, 'x', sizeof val);
    if (!in || !keys) die("oom", NULL);
    long rss0 = rss_kb();
    long rss_marks[11] = {0};
    double t0 = now_s();
    long total = 0, hot = 0;
    for (long r = 0; r < per_key; r++) {
        for (long base = 0; base < nkeys; base += B) {
            int m = (int)(nkeys - base < B ? nkeys - base : B);
            for (int j = 0; j < m; j++) {
                key_name(keys[j], 40, base + j);
                for (int q = 0; q < 100; q++) val[q] = (char)('!' + rnd() % 90); /* ~6.5 bits/byte: barely compressible */
                in[j] = (od_ev_rec_in){.key = keys[j], .klen = strlen(keys[j]), .value = val, .vlen = sizeof val,
                                       .expected_seq = OD_EV_ANY};
            }
            od_err err = {0};
            if (od_ev_append(es, in, (size_t)m, NULL, NULL, NULL, &err)) die("append", &err);
            total += m;
            if (r == 0) {
                long tenth = (base + m) * 10 / nkeys;
                if (tenth <= 10 && !rss_marks[tenth]) rss_marks[tenth] = rss_kb();
            }
        }
    }
    /* the hot key: 1,000 records */
    for (int i = 0; i < 10; i++) {
        for (int j = 0; j < 100; j++)
            in[j] = (od_ev_rec_in){.key = "hot/key", .klen = 7, .value = val, .vlen = sizeof val,
                                   .expected_seq = OD_EV_ANY};
        od_err err = {0};
        if (od_ev_append(es, in, 100, NULL, NULL, NULL, &err)) die("append", &err);
        hot += 100;
    }
    double dt = now_s() - t0;
    long peak_appending = peak_rss_kb();
    od_err err = {0};
    double tf = now_s();
    if (od_db_flush(od_ev_db(es), 1, &err) || od_db_compact(od_ev_db(es), &err)) die("flush/compact", &err);
    double dtf = now_s() - tf;
    od_ev_stats st;
    od_ev_get_stats(es, &st);
    od_db_stats ds;
    od_db_get_stats(od_ev_db(es), &ds);
    printf("| %ld keys × %ld records (100-byte values), rounds of batches of 1,000 keys, 1 thread, flush_interval 5 ms "
           "| %.0f records/s "
           "| %.1f s; tail cache hits %llu / misses %llu |\n",
           nkeys, per_key, (double)total / dt, dt, (unsigned long long)st.tail_cache_hits,
           (unsigned long long)st.tail_cache_misses);
    printf("| live SST bytes per record after compaction | %.1f B | %llu collections, %.1f MiB |\n",
           (double)ds.live_sst_bytes / (double)(total + hot), (unsigned long long)ds.live_ssts,
           ds.live_sst_bytes / 1048576.0);
    printf("| flush + full compaction afterwards | %.1f s | |\n", dtf);
    printf("| writer VmRSS during round 1 (MiB), at 0%%, 10%%, …, 100%% of the keys | ");
    printf("%.0f", rss0 / 1024.0);
    for (int i = 1; i <= 10; i++) printf(", %.0f", rss_marks[i] / 1024.0);
    printf(" | |\n");
    printf("| writer peak RSS while appending (memtable %zu MiB, block cache %zu MiB, tail cache 65,536) | %.0f MiB "
           "| %.0f MiB including the flush + full compaction |\n",
           (memtable_bytes ? memtable_bytes : 64u << 20) >> 20, (block_cache_bytes ? block_cache_bytes : 64u << 20) >> 20,
           peak_appending / 1024.0, peak_rss_kb() / 1024.0);
    if (od_ev_close(es, &err)) die("close", &err);
    uint64_t bytes = du_bytes(sub_uri("many"));
    printf("| store bytes per record (all objects / %ld records of 100 B) | %.1f B | %.1f MiB in the store |\n",
           total + hot, (double)bytes / (double)(total + hot), bytes / 1048576.0);
    read_last100(uri, "many-keys store:");
    free(in);
    free(keys);
}

/* ---------------------------------------------------------------- 4. replay */

static void bench_replay(const char *uri, long n)
{
    od_eventstore *es = open_es(uri, 100);
    enum { B = 1000 };
    od_ev_rec_in in[B];
    char val[100];
    memset(val, 'r', sizeof val);
    for (long base = 0; base < n; base += B) {
        int m = (int)(n - base < B ? n - base : B);
        for (int j = 0; j < m; j++)
            in[j] = (od_ev_rec_in){.key = "replay/one", .klen = 10, .value = val, .vlen = sizeof val,
                                   .expected_seq = OD_EV_ANY};
        od_err err = {0};
        if (od_ev_append(es, in, (size_t)m, NULL, NULL, NULL, &err)) die("append", &err);
    }
    od_err err = {0};
    if (od_db_flush(od_ev_db(es), 1, &err) || od_db_compact(od_ev_db(es), &err)) die("flush/compact", &err);
    od_ev_close(es, &err);
    es = open_es(uri, 100);
    od_db_stats a, b;
    od_db_get_stats(od_ev_db(es), &a);
    double t0 = now_s();
    od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ};
    od_ev_cursor *c;
    if (od_ev_cursor_open(es, "replay/one", 10, &ro, &c, &err)) die("read", &err);
    long got = 0;
    size_t bytes = 0;
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        bytes += r.vlen + r.klen + 16;
        got++;
        if (od_ev_cursor_next(c, &err)) die("next", &err);
    }
    od_ev_cursor_free(c);
    double dt = now_s() - t0;
    od_db_get_stats(od_ev_db(es), &b);
    uint64_t req = 0;
    for (int k = 0; k < OD_REQ_KIND_COUNT; k++) req += b.store.requests[k] - a.store.requests[k];
    printf("| replay one key of %ld records from seq 0, cold | %.1f MB/s (values+keys+seq/ts) | %.0f records/s, "
           "%llu object-store requests |\n",
           got, bytes / dt / 1e6, got / dt, (unsigned long long)req);
    od_ev_close(es, &err);
}

int main(int argc, char **argv)
{
    const char *u = argc > 1 ? argv[1] : "file:///tmp/od_bench_events";
    const char *p = strncmp(u, "file://", 7) == 0 ? u + 7 : u;
    snprintf(root, sizeof root, "%s", p);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", root, root);
    if (system(cmd)) die("cannot prepare the store directory", NULL);
    long nkeys = env_long("OD_BENCH_KEYS", 1000000);
    long per_key = env_long("OD_BENCH_RECORDS_PER_KEY", 10);
    long app = env_long("OD_BENCH_APPEND_RECORDS", 200000);
    long replay = env_long("OD_BENCH_REPLAY_RECORDS", 200000);

    printf("| measurement | result | notes |\n|---|---|---|\n");
    /* many keys first, so the process's peak RSS is the writer's during that run */
    memtable_bytes = (size_t)env_long("OD_BENCH_MEMTABLE_MB", 32) << 20;
    block_cache_bytes = (size_t)env_long("OD_BENCH_BLOCK_CACHE_MB", 32) << 20;
    bench_many_keys(sub_uri("many"), nkeys, per_key);
    fflush(stdout);
    memtable_bytes = block_cache_bytes = 0;
    double es1 = bench_es_append(sub_uri("append1"), app, 1, 2, 0);
    double sq = bench_sqlite_append(sub_uri("sqlite.db"), app);
    printf("| append, 100-byte records, batches of 100, 1 thread, durable per batch (flush_interval 2 ms) "
           "| %.0f records/s | SQLite table in the same run: %.0f records/s (%.2f×) |\n",
           es1, sq, es1 / sq);
    double esp = bench_es_append(sub_uri("append1p"), app, 1, 2, 1);
    printf("| same, 1 thread, pipelined: batches not awaited one by one (no_wait), all durable at the end "
           "| %.0f records/s | %.2f× SQLite |\n", esp, esp / sq);
    double es4 = bench_es_append(sub_uri("append4"), app, 4, 2, 0);
    printf("| same, 4 appending threads (group commit into one WAL object) | %.0f records/s | %.2f× SQLite |\n",
           es4, es4 / sq);
    double es100 = bench_es_append(sub_uri("append100"), app / 4, 4, 100, 0);
    printf("| same, 4 threads, default flush_interval 100 ms | %.0f records/s | |\n", es100);
    fflush(stdout);
    bench_replay(sub_uri("replay"), replay);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) return 1;
    return 0;
}
