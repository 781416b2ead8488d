/*
 * bench_memtable.c — memtable insert benchmark (the storage engine's write path without the
 * WAL), printed as Markdown. `make bench-memtable`, or directly:
 *
 *   bench_memtable            env: BENCH_N (1,000,000 entries per memtable),
 *                             BENCH_REPS (5 fresh memtables per mode; the median is reported),
 *                             BENCH_BATCH (1000 entries per batch, one seq per batch),
 *                             BENCH_ORDER=seq|random (default both),
 *                             BENCH_PATH=single|batch (default both)
 *
 * Keys are the same as bench_storage's: 16 hex bytes, ascending (i) or random (a hash of i),
 * with 100-byte values. Two insert paths are measured per order:
 *   single — od_mt_add once per entry in batch order (the path before od_mt_add_batch);
 *   batch  — od_mt_add_batch per batch (what od_db_write uses).
 * Each figure is the median over BENCH_REPS runs into a fresh memtable, so it includes arena
 * growth (wall clock, and the thread's CPU time, less disturbed by a shared machine). Also checks that every inserted key is found and the iterator is in order.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lsm/memtable.h"
#include "od_bench.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_memtable: %s\n", what);
    exit(1);
}

/* One run: n entries in batches of `bs`; returns wall seconds, *cpu gets thread CPU seconds. */
static double run(long n, long bs, int random, int batched, int check, double *cpu)
{
    od_memtable *m = od_mt_new();
    if (!m) die("out of memory");
    char *keys = malloc((size_t)bs * 16);
    od_mt_op *ops = malloc((size_t)bs * sizeof *ops);
    uint8_t val[100];
    memset(val, 'v', sizeof val);
    if (!keys || !ops) die("out of memory");
    double t0 = od_bench_now_s(), c0 = od_bench_thread_cpu_s();
    uint64_t seq = 0;
    for (long i = 0; i < n; i += bs) {
        long k = i + bs <= n ? bs : n - i;
        seq++;
        for (long j = 0; j < k; j++) {
            char tmp[17];
            snprintf(tmp, sizeof tmp, "%016" PRIx64, random ? mix((uint64_t)(i + j)) : (uint64_t)(i + j));
            memcpy(keys + j * 16, tmp, 16);
            ops[j] = (od_mt_op){.key = (uint8_t *)keys + j * 16, .klen = 16, .val = val, .vlen = sizeof val,
                                .kind = OD_KIND_PUT};
        }
        if (batched) {
            if (od_mt_add_batch(m, ops, (size_t)k, seq)) die("add_batch");
        } else {
            for (long j = 0; j < k; j++)
                if (od_mt_add(m, ops[j].key, ops[j].klen, seq, ops[j].kind, 0, ops[j].val, ops[j].vlen)) die("add");
        }
    }
    double t = od_bench_now_s() - t0;
    *cpu = od_bench_thread_cpu_s() - c0;
    if (check) {
        if (od_mt_count(m) != (uint64_t)n) die("wrong count");
        for (long i = 0; i < n; i += 997) {
            char tmp[17];
            snprintf(tmp, sizeof tmp, "%016" PRIx64, random ? mix((uint64_t)i) : (uint64_t)i);
            od_entry e;
            if (!od_mt_get(m, (uint8_t *)tmp, 16, UINT64_MAX, &e) || e.vlen != 100) die("key not found");
        }
        od_mt_iter it;
        od_mt_iter_init(&it, m);
        long cnt = 0;
        uint8_t last[16];
        for (od_mt_iter_first(&it); od_mt_iter_valid(&it); od_mt_iter_next(&it), cnt++) {
            od_entry e;
            od_mt_iter_entry(&it, &e);
            if (cnt && od_key_cmp(last, 16, e.key, e.klen) >= 0) die("iterator out of order");
            memcpy(last, e.key, 16);
        }
        if (cnt != n) die("iterator count");
    }
    od_mt_unref(m);
    free(keys);
    free(ops);
    return t;
}

int main(void)
{
    long n = getenv("BENCH_N") ? atol(getenv("BENCH_N")) : 1000000;
    long reps = getenv("BENCH_REPS") ? atol(getenv("BENCH_REPS")) : 5;
    long bs = getenv("BENCH_BATCH") ? atol(getenv("BENCH_BATCH")) : 1000;
    if (n < 1 || reps < 1 || bs < 1) die("BENCH_N, BENCH_REPS and BENCH_BATCH must be positive");
    printf("memtable inserts: %ld entries (16-byte keys, 100-byte values), batches of %ld, median of %ld\n\n", n, bs,
           reps);
    printf("| order | path | inserts/s (median wall) | ns/insert wall | ns/insert CPU (median) | min .. max inserts/s |\n"
           "|---|---|---|---|---|---|\n");
    const char *ord = getenv("BENCH_ORDER");
    for (int random = 0; random < 2; random++) {
        if (ord && strcmp(ord, random ? "random" : "seq") != 0) continue;
        for (int batched = 0; batched < 2; batched++) {
            const char *path = getenv("BENCH_PATH");
            if (path && strcmp(path, batched ? "batch" : "single") != 0) continue;
            double *t = malloc((size_t)reps * sizeof *t), *c = malloc((size_t)reps * sizeof *c);
            if (!t || !c) die("out of memory");
            for (long r = 0; r < reps; r++) t[r] = run(n, bs, random, batched, r == 0, &c[r]);
            qsort(t, (size_t)reps, sizeof *t, cmp_dbl);
            qsort(c, (size_t)reps, sizeof *c, cmp_dbl);
            double med = t[reps / 2];
            printf("| %s | %s | %.0f | %.0f | %.0f | %.0f .. %.0f |\n", random ? "random" : "ascending",
                   batched ? "batch" : "single", n / med, med * 1e9 / n, c[reps / 2] * 1e9 / n, n / t[reps - 1],
                   n / t[0]);
            fflush(stdout);
            free(t);
            free(c);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak RSS %ld MB\n", ru.ru_maxrss / 1024);
    return 0;
}
