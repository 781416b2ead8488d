/*
 * bench_storage.c — storage engine benchmark (`make bench-storage`), printed as Markdown.
 *
 *   bench_storage URI...        (each URI an empty store: file:///dir, mem://name, s3://...)
 *   BENCH_N=puts (default 1,000,000), BENCH_ORDER=seq|random (default both: the random-order
 *   run uses URI + "-random", skipped for URIs with a query string)
 *
 * For each store:
 *   1. batched puts: BENCH_N (default 1,000,000) puts of 16-byte keys (random order) and
 *      100-byte values in batches of 1000 from one thread, wait_durable only at the end;
 *      puts/s into memtable+WAL, and WAL PUT requests per second during the run (the
 *      target is ≤ 1 per flush interval, i.e. ≤ 10/s at 100 ms; wal_flush_bytes is raised to
 *      64 MiB so that only the interval triggers a flush);
 *   2. flush to L0 and compact everything; write amplification = bytes the engine wrote to
 *      the store (WAL + collections + manifests) / key+value bytes written by the user;
 *   3. point gets of random existing keys from the compacted run with a warm block cache
 *      (512 MiB, holds the whole data set; the first pass warms it, the second is timed):
 *      p50/p99/p999 latency (one clock read pair per get);
 *   4. a full scan: keys/s and MB/s of key+value bytes;
 *   5. peak RSS of the process so far.
 * Phases 1 and 3 also report the calling thread's CPU time per operation
 * (CLOCK_THREAD_CPUTIME_ID), which a shared machine's scheduling does not inflate; the WAL
 * thread's work runs on another core and is not in it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lsm/od_db.h"
#include "od_bench.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static int random_order;

/* Key number i: ascending hex (sequential order, like time-ordered product keys) or a
 * hash of i (random order). */
static void key_of(uint64_t i, char *k)
{
    snprintf(k, 17, "%016" PRIx64, random_order ? mix(i) : i);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int die(const char *what, od_err *e)
{
    fprintf(stderr, "bench_storage: %s: %s\n", what, e->msg);
    exit(1);
}

static void bench(const char *uri, long n)
{
    od_store *s;
    od_err err;
    if (od_store_open(uri, &s, &err)) die("open store", &err);
    od_db_options o;
    od_db_options_init(&o);
    o.wal_flush_bytes = 64u << 20;
    o.max_unflushed_bytes = 256u << 20;
    o.memtable_bytes = 256u << 20;
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.block_cache_bytes = 512u << 20; /* the whole data set fits: "warm" means no store reads */
    od_db *db;
    if (od_db_open_store(s, &o, &db, &err)) die("open db", &err);
    od_store_stats s0;
    od_store_get_stats(s, &s0);

    /* 1. batched puts */
    od_batch *b = od_batch_new();
    char val[100];
    memset(val, 'v', sizeof val);
    double t0 = od_bench_now_s(), c0 = od_bench_thread_cpu_s();
    uint64_t last = 0;
    for (long i = 0; i < n; i += 1000) {
        od_batch_clear(b);
        for (long j = i; j < i + 1000 && j < n; j++) {
            char k[17];
            key_of((uint64_t)j, k);
            memcpy(val, k, 16);
            od_batch_put(b, k, 16, val, sizeof val);
        }
        if (od_db_write(db, b, 0, &last, &err)) die("write", &err);
    }
    double t_mem = od_bench_now_s() - t0, c_mem = od_bench_thread_cpu_s() - c0;
    od_store_stats s1;
    od_store_get_stats(s, &s1);
    uint64_t puts_during = s1.requests[OD_REQ_PUT] - s0.requests[OD_REQ_PUT];
    if (od_db_wait_durable(db, last, &err)) die("wait", &err);
    double t_dur = od_bench_now_s() - t0;
    od_db_stats st;
    od_db_get_stats(db, &st);
    printf("\n### %s, keys in %s order\n\n| measure | value |\n|---|---|\n", od_store_describe(s),
           random_order ? "random" : "ascending");
    printf("| batched puts (100-byte values, batches of 1000, memtable+WAL) | %.0f puts/s (%.2f s for %ld) |\n",
           n / t_mem, t_mem, n);
    printf("| writing thread's CPU time per put (key formatting included) | %.0f ns |\n", c_mem * 1e9 / n);
    printf("| until durable in the store | %.0f puts/s (%.2f s) |\n", n / t_dur, t_dur);
    printf("| WAL objects written / store PUTs during the run | %" PRIu64 " / %" PRIu64 " = %.1f PUT/s (interval %u ms) |\n",
           st.wal_flushes, puts_during, puts_during / t_mem, o.flush_interval_ms);

    /* 2. flush + compact: write amplification */
    t0 = od_bench_now_s();
    if (od_db_flush(db, 1, &err)) die("flush", &err);
    double t_flush = od_bench_now_s() - t0;
    t0 = od_bench_now_s();
    if (od_db_compact(db, &err)) die("compact", &err);
    double t_comp = od_bench_now_s() - t0;
    od_store_stats s2;
    od_store_get_stats(s, &s2);
    od_db_get_stats(db, &st);
    printf("| memtable flush to L0 | %.2f s |\n", t_flush);
    printf("| full compaction | %.2f s (%" PRIu64 " MB in, %" PRIu64 " MB out) |\n", t_comp,
           st.compaction_bytes_in >> 20, st.compaction_bytes_out >> 20);
    printf("| write amplification (store bytes written / user bytes) | %.2f (%" PRIu64 " MB / %" PRIu64 " MB) |\n",
           (double)(s2.bytes_out - s0.bytes_out) / (double)st.user_bytes_written, (s2.bytes_out - s0.bytes_out) >> 20,
           st.user_bytes_written >> 20);

    /* 3. point gets, warm */
    long ng = n < 200000 ? n : 200000;
    uint64_t *lat = malloc((size_t)ng * sizeof *lat);
    od_buf v = {0};
    double c_get = 0;
    for (int pass = 0; pass < 2; pass++) {
        c0 = od_bench_thread_cpu_s();
        uint64_t r = 12345; /* same keys twice: the second pass is all cache hits */
        for (long i = 0; i < ng; i++) {
            r = mix(r + (uint64_t)i);
            char k[17];
            key_of(r % (uint64_t)n, k);
            struct timespec a, c;
            clock_gettime(CLOCK_MONOTONIC, &a);
            int rc = od_db_get(db, NULL, k, 16, &v, &err);
            clock_gettime(CLOCK_MONOTONIC, &c);
            if (rc || v.len != 100) die("get", &err);
            lat[i] = (uint64_t)(c.tv_sec - a.tv_sec) * 1000000000ull + (uint64_t)(c.tv_nsec - a.tv_nsec);
        }
        c_get = od_bench_thread_cpu_s() - c0;
    }
    qsort(lat, (size_t)ng, sizeof *lat, cmp_u64);
    printf("| point get, warm cache (%ld gets) | p50 %.2f µs, p99 %.2f µs, p999 %.2f µs |\n", ng, lat[ng / 2] / 1e3,
           lat[ng * 99 / 100] / 1e3, lat[ng * 999 / 1000] / 1e3);
    printf("| point get, warm: thread CPU time per get (clock reads and key formatting included) | %.2f µs |\n",
           c_get * 1e6 / ng);
    free(lat);
    od_buf_free(&v);

    /* 4. scan */
    t0 = od_bench_now_s();
    od_iter *it;
    if (od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &err)) die("iter", &err);
    long keys = 0;
    uint64_t bytes = 0;
    while (od_iter_valid(it)) {
        size_t kl, vl;
        od_iter_key(it, &kl);
        od_iter_value(it, &vl);
        keys++;
        bytes += kl + vl;
        if (od_iter_next(it, &err)) die("next", &err);
    }
    od_iter_free(it);
    double t_scan = od_bench_now_s() - t0;
    if (keys != n) fprintf(stderr, "bench_storage: scan saw %ld keys, expected %ld\n", keys, n);
    printf("| full scan | %.0f keys/s, %.0f MB/s |\n", keys / t_scan, bytes / t_scan / 1e6);
    od_db_get_stats(db, &st);
    printf("| block cache hits / misses | %" PRIu64 " / %" PRIu64 " |\n", st.block_cache_hits, st.block_cache_misses);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| peak RSS (process so far) | %ld MB |\n", ru.ru_maxrss / 1024);
    od_batch_free(b);
    if (od_db_close(db, &err)) die("close", &err);
    od_store_close(s);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_storage URI...\n");
        return 2;
    }
    long n = getenv("BENCH_N") ? atol(getenv("BENCH_N")) : 1000000;
    printf("storage engine: %ld puts per store\n", n);
    const char *ord = getenv("BENCH_ORDER"); /* seq, random, or both (default) */
    for (int i = 1; i < argc; i++) {
        if (!ord || strcmp(ord, "random") != 0) {
            random_order = 0;
            bench(argv[i], n);
        }
        if (!ord || strcmp(ord, "seq") != 0) {
            if (!ord && strchr(argv[i], '?')) continue; /* no second empty store to derive */
            char uri[4096];
            snprintf(uri, sizeof uri, "%s%s", argv[i], ord ? "" : "-random");
            random_order = 1;
            bench(uri, n);
        }
    }
    return 0;
}
