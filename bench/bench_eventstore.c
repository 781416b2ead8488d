/*
 * bench_eventstore.c — the event store benchmark (`make bench-eventstore`), with an ordinary
 * SQLite table measured in the same run.
 *
 *   bench_eventstore [STORE_URI]   (default file:///tmp/od_bench_events; wiped first; must be
 *                                   a file:// URI or a plain path so its size can be measured)
 *   env: OD_BENCH_KEYS (default 1000000), OD_BENCH_RECORDS_PER_KEY (10),
 *        OD_BENCH_APPEND_RECORDS (100000: records per run of the append comparison),
 *        OD_BENCH_REPS (3: repetitions of the append comparison; medians are reported),
 *        OD_BENCH_REPLAY_RECORDS (200000: records of the one large key),
 *        OD_BENCH_MEMTABLE_MB / OD_BENCH_BLOCK_CACHE_MB (32 / 32: engine memory of the many-keys run),
 *        OD_BENCH_COMPACTOR (1: background compaction in the writer; 0 = off, to see its memory),
 *        OD_BENCH_PHASES (default "many,fsync,append,replay": which parts run),
 *        OD_BENCH_APPEND_MODES (default all: any of sqlite-wal, sqlite-default, sync, pipelined,
 *        threads4 — for development runs of part of the comparison),
 *        OD_BENCH_MALLOC_STATS (0; 1 = glibc malloc_stats() and engine counters on stderr after
 *        every round of the many-keys run: where the writer's memory is)
 *
 * 1. Append throughput: 100-byte records, batches of 100 records over 1,000 keys. Versus
 *    SQLite: table ev(key TEXT, seq INTEGER, ts INTEGER, value BLOB, PRIMARY KEY(key, seq)),
 *    one transaction per batch, the seq computed per record as coalesce(max(seq)+1, 0) — the
 *    same work: gapless per-key sequences, durable per batch — in two modes: WAL journal +
 *    synchronous=FULL (SQLite's fastest durable mode) and SQLite's defaults (rollback
 *    journal, synchronous=FULL). The event store in three modes: one thread awaiting each
 *    batch; one thread pipelining (no_wait on every batch but the last, whose wait covers
 *    all: "one core"); four threads awaiting each batch (group commit). After every event
 *    store run a fresh read-only handle counts the records in the store: every acknowledged
 *    record must be there, or the benchmark fails. The modes alternate for OD_BENCH_REPS
 *    repetitions; medians, every run, and process CPU µs per record are reported. The cost
 *    of one durable commit on this disk (fsync) is measured too: both sides are fsync-bound
 *    when every batch is awaited.
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
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fcntl.h>
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
#include "od_bench.h"

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
    dbo.compactor = (int)od_bench_env_long("OD_BENCH_COMPACTOR", 1);
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

/* One measurement: records/s over the wall time and process CPU seconds per record (all
 * threads: the appender, the engine's WAL and flush threads, SQLite's own work). */
typedef struct meas {
    double rate, cpu_us;
    double thread_cpu_us;  /* the appending threads' own CPU per record (event store only) */
} meas;

enum { APP_KEYS = 1000, APP_BATCH = 100 };

typedef struct app_ctx {
    od_eventstore *es;
    long batches;
    int id;
    int pipelined;
    double cpu;      /* out: the thread's CPU seconds */
} app_ctx;

/* Batches of APP_BATCH 100-byte records over APP_KEYS keys. Waiting for durability: after
 * every batch (pipelined = 0), or only for the last batch (pipelined = 1: the others are
 * appended with no_wait; the final wait covers them, WAL order being append order). */
static void *append_thread(void *p)
{
    app_ctx *a = p;
    char keys[APP_BATCH][32], val[100];
    memset(val, 'v', sizeof val);
    od_ev_rec_in in[APP_BATCH];
    uint64_t s = 0x1234ULL + (uint64_t)a->id;
    double c0 = od_bench_thread_cpu_s();
    for (long b = 0; b < a->batches; b++) {
        for (int j = 0; j < APP_BATCH; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            snprintf(keys[j], sizeof keys[j], "key/%04d", (int)(s % APP_KEYS));
            in[j] = (od_ev_rec_in){.key = keys[j], .klen = strlen(keys[j]), .value = val, .vlen = sizeof val,
                                   .expected_seq = OD_EV_ANY};
        }
        od_err err = {0};
        od_ev_append_opts ao = {.no_wait = a->pipelined && b + 1 < a->batches};
        if (od_ev_append(a->es, in, APP_BATCH, &ao, NULL, NULL, &err)) die("append", &err);
    }
    a->cpu = od_bench_thread_cpu_s() - c0;
    return NULL;
}

/* Every appended record must be visible to a fresh read-only handle (which reads only what
 * is in the object store: manifest, collections, WAL objects) the moment the appending
 * threads return — i.e. the waits really covered every record. Dies otherwise. */
static void check_durable(const char *uri, long want)
{
    od_ev_options o;
    od_ev_options_init(&o);
    o.read_only = 1;
    od_eventstore *ro;
    od_err err = {0};
    if (od_ev_open(uri, &o, &ro, &err)) die("open read-only", &err);
    long got = 0;
    for (int k = 0; k < APP_KEYS; k++) {
        char key[32];
        snprintf(key, sizeof key, "key/%04d", k);
        od_ev_key_info ki;
        if (od_ev_tail(ro, key, strlen(key), &ki, &err)) die("tail", &err);
        got += (long)ki.count;
    }
    od_ev_close(ro, NULL);
    if (got != want) {
        fprintf(stderr, "bench_eventstore: %ld records acknowledged, %ld found in the store\n", want, got);
        exit(1);
    }
}

static meas bench_es_append(const char *uri, long records, int threads, uint32_t flush_ms, int pipelined)
{
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", uri + (strncmp(uri, "file://", 7) ? 0 : 7));
    if (system(cmd)) die("cannot remove the previous store", NULL);
    od_eventstore *es = open_es(uri, flush_ms);
    pthread_t th[16];
    app_ctx ctx[16];
    long per = records / APP_BATCH / threads;
    double c0 = od_bench_proc_cpu_s(), t0 = od_bench_now_s();
    for (int i = 0; i < threads; i++) {
        ctx[i] = (app_ctx){es, per, i, pipelined, 0};
        pthread_create(&th[i], NULL, append_thread, &ctx[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    double dt = od_bench_now_s() - t0, dc = od_bench_proc_cpu_s() - c0, tc = 0;
    for (int i = 0; i < threads; i++) tc += ctx[i].cpu;
    long n = per * threads * APP_BATCH;
    check_durable(uri, n);
    od_err err = {0};
    if (od_ev_close(es, &err)) die("close", &err);
    return (meas){(double)n / dt, dc / (double)n * 1e6, tc / (double)n * 1e6};
}

/* SQLite: table ev(key, seq, ts, value) with PRIMARY KEY(key, seq), one transaction per batch
 * of APP_BATCH records, each record's seq computed as coalesce(max(seq)+1, 0) for its key —
 * the same work as the event store (gapless per-key sequences, durable per batch).
 * wal = 1: journal_mode=WAL, synchronous=FULL (one fsync per commit: SQLite at its fastest
 * while still durable per commit); wal = 0: SQLite's defaults (rollback journal, synchronous
 * FULL) — literally an ordinary table. */
static meas bench_sqlite_append(const char *path, long records, int wal)
{
    sqlite3 *db;
    char aux[1200];
    unlink(path);
    snprintf(aux, sizeof aux, "%s-wal", path);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-journal", path);
    unlink(aux);
    if (sqlite3_open(path, &db)) die("sqlite open", NULL);
    if (wal && sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL))
        die(sqlite3_errmsg(db), NULL);
    if (sqlite3_exec(db, "CREATE TABLE ev(key TEXT, seq INTEGER, ts INTEGER, value BLOB, PRIMARY KEY(key, seq))",
                     NULL, NULL, NULL))
        die(sqlite3_errmsg(db), NULL);
    sqlite3_stmt *ins;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO ev(key, seq, ts, value) SELECT ?1, coalesce(max(seq) + 1, 0), ?2, ?3 "
                           "FROM ev WHERE key = ?1",
                           -1, &ins, NULL))
        die(sqlite3_errmsg(db), NULL);
    char val[100], key[32];
    memset(val, 'v', sizeof val);
    long batches = records / APP_BATCH;
    uint64_t s = 0x1234ULL;
    double c0 = od_bench_proc_cpu_s(), t0 = od_bench_now_s();
    for (long b = 0; b < batches; b++) {
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL)) die(sqlite3_errmsg(db), NULL);
        for (int j = 0; j < APP_BATCH; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            snprintf(key, sizeof key, "key/%04d", (int)(s % APP_KEYS));
            sqlite3_bind_text(ins, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 2, 1700000000000LL + b);
            sqlite3_bind_blob(ins, 3, val, sizeof val, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) die(sqlite3_errmsg(db), NULL);
            sqlite3_reset(ins);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) die(sqlite3_errmsg(db), NULL);
    }
    double dt = od_bench_now_s() - t0, dc = od_bench_proc_cpu_s() - c0;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    long n = batches * APP_BATCH;
    return (meas){(double)n / dt, dc / (double)n * 1e6, dc / (double)n * 1e6};
}

/* What one durable commit costs on this disk: (a) append 4 KiB to a file + fsync (SQLite's
 * WAL commit), (b) what a file:// WAL object costs: write a new temporary file (8 KiB),
 * fsync it, link it to its final name, fsync the directory. Median microseconds. */
static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    double t[64];
    memcpy(t, v, (size_t)n * sizeof *v);
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

typedef struct fsync_cost {
    double append_us, object_us;
} fsync_cost;

static fsync_cost bench_fsync(int N)
{
    double a[64], b[64];
    if (N > 64) N = 64;
    char buf[8192], path[1200], tmp[1200];
    memset(buf, 'f', sizeof buf);
    snprintf(path, sizeof path, "%s/fsync-append", root);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    int dfd = open(root, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || dfd < 0) die("fsync bench: cannot open files", NULL);
    for (int i = 0; i < N; i++) {
        double t0 = od_bench_now_s();
        if (write(fd, buf, 4096) != 4096 || fsync(fd)) die("fsync bench: write", NULL);
        a[i] = (od_bench_now_s() - t0) * 1e6;
    }
    close(fd);
    for (int i = 0; i < N; i++) {
        snprintf(tmp, sizeof tmp, "%s/fsync-obj.tmp", root);
        snprintf(path, sizeof path, "%s/fsync-obj-%d", root, i);
        double t0 = od_bench_now_s();
        int f = open(tmp, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (f < 0 || write(f, buf, sizeof buf) != (ssize_t)sizeof buf || fsync(f) || close(f) || link(tmp, path) ||
            unlink(tmp) || fsync(dfd))
            die("fsync bench: object", NULL);
        b[i] = (od_bench_now_s() - t0) * 1e6;
    }
    close(dfd);
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "%s/fsync-obj-%d", root, i);
        unlink(path);
    }
    return (fsync_cost){median(a, N), median(b, N)};
}

static void print_fsync(const fsync_cost *f, int n)
{
    printf("| one durable commit on this disk: append 4 KiB + fsync (SQLite's commit) / new 8 KiB file + fsync + link "
           "+ directory fsync (a file:// WAL object), median µs (of 60, or of 20 per repetition) | ");
    for (int i = 0; i < n; i++) printf("%s%.0f / %.0f", i ? "; " : "", f[i].append_us, f[i].object_us);
    printf(" | %s |\n", n > 1 ? "measured before each repetition" : "");
}

static void bench_append_compare(long app, int reps)
{
    enum { M = 5 };
    static const char *names[M] = {
        "SQLite, WAL journal, synchronous=FULL, one transaction per batch",
        "SQLite defaults (rollback journal, synchronous=FULL), one transaction per batch",
        "event store, 1 thread, each batch awaited (durable before the next is sent)",
        "event store, 1 thread, pipelined (no_wait; only the last batch awaited; all durable then, checked)",
        "event store, 4 threads, each batch awaited (group commit)",
    };
    static const char *keys[M] = {"sqlite-wal", "sqlite-default", "sync", "pipelined", "threads4"};
    const char *sel = getenv("OD_BENCH_APPEND_MODES");
    int on[M];
    for (int m = 0; m < M; m++) on[m] = !sel || !*sel || strstr(sel, keys[m]) != NULL;
    meas r[M][16];
    fsync_cost fc[16];
    if (reps > 16) reps = 16;
    if (reps < 1) reps = 1;
    for (int rep = 0; rep < reps; rep++) { /* the modes alternate, so load changes hit all of them */
        fc[rep] = bench_fsync(20);
        meas none = {0, 0, 0};
        r[0][rep] = on[0] ? bench_sqlite_append(sub_uri("sqlite-wal.db"), app, 1) : none;
        r[1][rep] = on[1] ? bench_sqlite_append(sub_uri("sqlite-default.db"), app, 0) : none;
        r[2][rep] = on[2] ? bench_es_append(sub_uri("append1"), app, 1, 2, 0) : none;
        r[3][rep] = on[3] ? bench_es_append(sub_uri("append1p"), app, 1, 2, 1) : none;
        r[4][rep] = on[4] ? bench_es_append(sub_uri("append4"), app, 4, 2, 0) : none;
        fprintf(stderr, "append comparison: repetition %d of %d done\n", rep + 1, reps);
    }
    double med[M], medc[M], medt[M];
    for (int m = 0; m < M; m++) {
        double v[16], c[16], t[16];
        for (int i = 0; i < reps; i++) v[i] = r[m][i].rate, c[i] = r[m][i].cpu_us, t[i] = r[m][i].thread_cpu_us;
        med[m] = median(v, reps);
        medc[m] = median(c, reps);
        medt[m] = median(t, reps);
    }
    printf("\nappend comparison: %ld records of 100 bytes per run, batches of %d over %d keys, flush_interval "
           "2 ms, %d repetitions (modes alternating); median and every run\n\n",
           app, APP_BATCH, APP_KEYS, reps);
    printf("| mode | median records/s | × SQLite WAL | × SQLite default | CPU µs/record, process / appending "
           "threads (median) | runs (records/s) |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int m = 0; m < M; m++) {
        printf("| %s | %.0f | %.2f× | %.2f× | %.1f / %.1f | ", names[m], med[m], med[m] / med[0], med[m] / med[1],
               medc[m], medt[m]);
        for (int i = 0; i < reps; i++) printf("%s%.0f", i ? ", " : "", r[m][i].rate);
        printf(" |\n");
    }
    printf("\n| ratio per repetition (same repetition, back to back) | ");
    for (int i = 0; i < reps; i++)
        printf("%s%.2f× / %.2f×", i ? "; " : "", r[3][i].rate / r[0][i].rate, r[3][i].rate / r[1][i].rate);
    printf(" | pipelined ÷ SQLite WAL / ÷ SQLite default |\n");
    if (sel && *sel) { /* a partial run (development): no latency-bound row */
        print_fsync(fc, reps);
        return;
    }
    meas l = bench_es_append(sub_uri("append100"), app / 4 < 4000 ? 4000 : app / 4, 4, 100, 0);
    printf("| event store, 4 threads, each batch awaited, default flush_interval 100 ms | %.0f records/s | "
           "latency-bound: one WAL object per 100 ms |\n",
           l.rate);
    print_fsync(fc, reps);
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
            double t0 = od_bench_now_s();
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
            double dt = od_bench_now_s() - t0;
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
    long rss0 = od_bench_rss_kb();
    long rss_marks[11] = {0};
    long rss_round[64] = {0};
    double t0 = od_bench_now_s(), c0 = od_bench_proc_cpu_s(), tc0 = od_bench_thread_cpu_s();
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
                if (tenth <= 10 && !rss_marks[tenth]) rss_marks[tenth] = od_bench_rss_kb();
            }
        }
        if (r < 64) rss_round[r] = od_bench_rss_kb();
#ifdef __GLIBC__
        if (od_bench_env_long("OD_BENCH_MALLOC_STATS", 0)) { /* glibc: per-arena heap vs in-use bytes (stderr) */
            od_db_stats ms;
            od_db_get_stats(od_ev_db(es), &ms);
            fprintf(stderr, "round %ld: VmRSS %ld KiB, memtable %llu B, l0 %llu, runs %llu, live ssts %llu\n", r,
                    od_bench_rss_kb(), (unsigned long long)ms.memtable_bytes, (unsigned long long)ms.l0_count,
                    (unsigned long long)ms.sorted_runs, (unsigned long long)ms.live_ssts);
            malloc_stats();
        }
#endif
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
    double dt = od_bench_now_s() - t0, dc = od_bench_proc_cpu_s() - c0, dtc = od_bench_thread_cpu_s() - tc0;
    long peak_appending = od_bench_peak_rss_kb();
    od_err err = {0};
    double tf = od_bench_now_s();
    if (od_db_flush(od_ev_db(es), 1, &err) || od_db_compact(od_ev_db(es), &err)) die("flush/compact", &err);
    double dtf = od_bench_now_s() - tf;
    od_ev_stats st;
    od_ev_get_stats(es, &st);
    od_db_stats ds;
    od_db_get_stats(od_ev_db(es), &ds);
    printf("| %ld keys × %ld records (100-byte values), rounds of batches of 1,000 keys, 1 thread, flush_interval 5 ms "
           "| %.0f records/s "
           "| %.1f s; CPU per record: appending thread %.2f µs, process %.2f µs (all threads); tail cache hits %llu / "
           "misses %llu |\n",
           nkeys, per_key, (double)total / dt, dt, dtc / (double)(total + hot) * 1e6, dc / (double)(total + hot) * 1e6, (unsigned long long)st.tail_cache_hits,
           (unsigned long long)st.tail_cache_misses);
    printf("| live SST bytes per record after compaction | %.1f B | %llu collections, %.1f MiB |\n",
           (double)ds.live_sst_bytes / (double)(total + hot), (unsigned long long)ds.live_ssts,
           ds.live_sst_bytes / 1048576.0);
    printf("| flush + full compaction afterwards | %.1f s | |\n", dtf);
    printf("| writer VmRSS during round 1 (MiB), at 0%%, 10%%, …, 100%% of the keys | ");
    printf("%.0f", rss0 / 1024.0);
    for (int i = 1; i <= 10; i++) printf(", %.0f", rss_marks[i] / 1024.0);
    printf(" | |\n");
    printf("| writer VmRSS at the end of each round (MiB) | ");
    for (long r = 0; r < per_key && r < 64; r++) printf("%s%.0f", r ? ", " : "", rss_round[r] / 1024.0);
    printf(" | |\n");
    printf("| writer peak RSS while appending (memtable %zu MiB, block cache %zu MiB, tail cache 65,536) | %.0f MiB "
           "| %.0f MiB including the flush + full compaction |\n",
           (memtable_bytes ? memtable_bytes : 64u << 20) >> 20, (block_cache_bytes ? block_cache_bytes : 64u << 20) >> 20,
           peak_appending / 1024.0, od_bench_peak_rss_kb() / 1024.0);
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
    double t0 = od_bench_now_s();
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
    double dt = od_bench_now_s() - t0;
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
    long nkeys = od_bench_env_long("OD_BENCH_KEYS", 1000000);
    long per_key = od_bench_env_long("OD_BENCH_RECORDS_PER_KEY", 10);
    long app = od_bench_env_long("OD_BENCH_APPEND_RECORDS", 100000);
    long replay = od_bench_env_long("OD_BENCH_REPLAY_RECORDS", 200000);

    long reps = od_bench_env_long("OD_BENCH_REPS", 3);
    const char *phases = getenv("OD_BENCH_PHASES");
    if (!phases || !*phases) phases = "many,fsync,append,replay";

    printf("| measurement | result | notes |\n|---|---|---|\n");
    /* many keys first, so the process's peak RSS is the writer's during that run */
    if (strstr(phases, "many")) {
        memtable_bytes = (size_t)od_bench_env_long("OD_BENCH_MEMTABLE_MB", 32) << 20;
        block_cache_bytes = (size_t)od_bench_env_long("OD_BENCH_BLOCK_CACHE_MB", 32) << 20;
        bench_many_keys(sub_uri("many"), nkeys, per_key);
        fflush(stdout);
        memtable_bytes = block_cache_bytes = 0;
    }
    if (strstr(phases, "fsync")) {
        fsync_cost f = bench_fsync(60);
        print_fsync(&f, 1);
    }
    if (strstr(phases, "replay")) bench_replay(sub_uri("replay"), replay);
    fflush(stdout);
    if (strstr(phases, "append")) bench_append_compare(app, (int)reps);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) return 1;
    return 0;
}
