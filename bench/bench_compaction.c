/*
 * bench_compaction.c — memory and time of one full compaction, printed as Markdown.
 *
 *   bench_compaction URI        (an empty file:// store: the phases are separate processes)
 *   BENCH_N=puts (default 1,000,000), BENCH_OUT_BYTES=compaction_output_bytes (default: the
 *   engine's default, 32 MiB)
 *
 * A first process writes BENCH_N puts (16-byte random keys, 100-byte random values) in batches of
 * 1000 and flushes them to L0 collections of 64 MiB memtables (no compaction). A second,
 * fresh process opens the store and compacts everything once; it reports the wall and CPU
 * time of the compaction, the number and largest size of the output collections, and its
 * peak RSS before and after the compaction: the difference is what the compaction itself
 * needed beyond the open handle (its output buffer, merge state and the inputs' blocks).
 * Each phase runs in its own process (fork) so that peak RSS is the compaction's alone.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lsm/od_db.h"
#include "od_bench.h"

static void die(const char *what, const od_err *e)
{
    fprintf(stderr, "bench_compaction: %s: %s\n", what, e->msg);
    _exit(1);
}

static long peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static void write_phase(const char *uri, long n)
{
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.memtable_bytes = 64u << 20;
    od_err err;
    od_db *db;
    if (od_db_open(uri, &o, &db, &err)) die("open", &err);
    uint64_t x = 88172645463325252ull;
    char key[16], val[100];
    memset(val, 'v', sizeof val);
    od_batch *b = od_batch_new();
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(key, &x, 8);
        memcpy(key + 8, &i, 8);
        for (size_t k = 0; k + 8 <= sizeof val; k += 8) { /* incompressible, like real payloads */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(val + k, &x, 8);
        }
        if (od_batch_put(b, key, sizeof key, val, sizeof val)) die("put", &err);
        if (od_batch_count(b) == 1000 || i == n - 1) {
            if (od_db_write(db, b, 0, NULL, &err)) die("write", &err);
            od_batch_clear(b);
        }
    }
    od_batch_free(b);
    if (od_db_flush(db, 1, &err)) die("flush", &err);
    if (od_db_close(db, &err)) die("close", &err);
}

static void compact_phase(const char *uri, size_t out_bytes)
{
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
#ifndef BENCH_NO_OUTPUT_BYTES
    if (out_bytes) o.compaction_output_bytes = out_bytes;
#endif
    od_err err;
    od_db *db;
    if (od_db_open(uri, &o, &db, &err)) die("open", &err);
    od_db_stats st;
    od_db_get_stats(db, &st);
    long rss0 = peak_rss_mb();
    uint64_t l0 = st.l0_count, in_bytes = st.live_sst_bytes;
    double w0 = od_bench_clock_s(CLOCK_MONOTONIC), c0 = od_bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (od_db_compact(db, &err)) die("compact", &err);
    double w1 = od_bench_clock_s(CLOCK_MONOTONIC), c1 = od_bench_clock_s(CLOCK_PROCESS_CPUTIME_ID);
    long rss1 = peak_rss_mb();
    od_db_get_stats(db, &st);
    printf("| input | %" PRIu64 " L0 collections, %" PRIu64 " MB |\n", l0, in_bytes >> 20);
    printf("| output | %" PRIu64 " collections, %" PRIu64 " MB (%.1f MB each on average) |\n", st.live_ssts,
           st.live_sst_bytes >> 20, st.live_ssts ? (double)st.live_sst_bytes / st.live_ssts / 1048576.0 : 0.0);
    printf("| compaction | %.2f s wall, %.2f s CPU (all threads) |\n", w1 - w0, c1 - c0);
    printf("| peak RSS | %ld MB after open, %ld MB after the compaction (+%ld MB) |\n", rss0, rss1, rss1 - rss0);
    if (od_db_close(db, &err)) die("close", &err);
}

static void run_child(void (*fn)(const char *, long, size_t), const char *uri, long n, size_t out)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        fn(uri, n, out);
        fflush(NULL);
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_compaction: a phase failed\n");
        exit(1);
    }
}

static void do_write(const char *uri, long n, size_t out)
{
    (void)out;
    write_phase(uri, n);
}

static void do_compact(const char *uri, long n, size_t out)
{
    (void)n;
    compact_phase(uri, out);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bench_compaction URI\n");
        return 2;
    }
    long n = getenv("BENCH_N") ? atol(getenv("BENCH_N")) : 1000000;
    size_t out = getenv("BENCH_OUT_BYTES") ? (size_t)atoll(getenv("BENCH_OUT_BYTES")) : 0;
    printf("### compaction: %s, %ld puts, compaction_output_bytes %zu%s\n\n", argv[1], n, out,
           out ? "" : " (default)");
    printf("| what | figure |\n|---|---|\n");
    run_child(do_write, argv[1], n, out);
    run_child(do_compact, argv[1], n, out);
    return 0;
}
