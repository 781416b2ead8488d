/*
 * bench_objstore.c — PUT and GET throughput and per-request latency of object stores.
 *
 *   build/bench/bench_objstore [-s N] [-l N] [-t T1,T2,..] URI...
 *
 * For every URI, for 4 KiB objects (-s, default 2000) and 1 MiB objects (-l, default 100), and
 * for each thread count (-t, default 1,4): PUT the objects (put_always, distinct keys split
 * evenly over the threads, all threads on one shared handle), then GET them back (checking the
 * length), then delete them (not timed). Every request is timed on CLOCK_MONOTONIC; the table
 * gives requests per second and MiB/s over the wall time of the phase, and the p50/p99 of the
 * per-request latencies. Output is Markdown, one table per store.
 * Keys live under "bench-<pid>-<time>/" so runs never collide.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "objstore/od_objstore.h"

typedef enum { OP_PUT, OP_GET, OP_DEL } bench_op;

typedef struct job {
    od_store *s;
    const char *prefix;
    bench_op op;
    size_t size;
    const uint8_t *data;
    int from, to;
    double *lat_ms; /* [to - from] */
    int failed;
    od_err err;
} job;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *run_job(void *arg)
{
    job *j = arg;
    od_buf got = {0};
    for (int i = j->from; i < j->to && !j->failed; i++) {
        char key[256];
        snprintf(key, sizeof key, "%so%06d", j->prefix, i);
        double t0 = now_ms();
        int rc;
        if (j->op == OP_PUT) rc = od_store_put(j->s, key, j->data, j->size, OD_PUT_ALWAYS, NULL, NULL, &j->err);
        else if (j->op == OP_GET) {
            rc = od_store_get(j->s, key, &got, NULL, &j->err);
            if (rc == OD_OK && got.len != j->size) {
                rc = od_err_set(&j->err, OD_CORRUPT, "GET %s returned %zu bytes, expected %zu", key, got.len, j->size);
            }
        } else rc = od_store_delete(j->s, key, &j->err);
        j->lat_ms[i - j->from] = now_ms() - t0;
        if (rc) j->failed = 1;
    }
    od_buf_free(&got);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Run one phase over n objects with nthreads threads; print a table row unless op is DEL. */
static int phase(od_store *s, const char *prefix, bench_op op, size_t size, const uint8_t *data, int n,
                 int nthreads)
{
    pthread_t th[64];
    job jobs[64];
    double *lat = malloc((size_t)n * sizeof *lat);
    if (!lat) {
        fprintf(stderr, "bench_objstore: out of memory\n");
        return 1;
    }
    double t0 = now_ms();
    for (int t = 0; t < nthreads; t++) {
        int from = (int)((int64_t)n * t / nthreads), to = (int)((int64_t)n * (t + 1) / nthreads);
        jobs[t] = (job){.s = s, .prefix = prefix, .op = op, .size = size, .data = data, .from = from, .to = to,
                        .lat_ms = lat + from};
        if (pthread_create(&th[t], NULL, run_job, &jobs[t]) != 0) {
            fprintf(stderr, "bench_objstore: pthread_create failed\n");
            exit(1);
        }
    }
    int failed = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        if (jobs[t].failed && !failed) {
            fprintf(stderr, "bench_objstore: %s failed: %s\n", op == OP_PUT ? "PUT" : op == OP_GET ? "GET" : "DELETE",
                    jobs[t].err.msg);
            failed = 1;
        }
    }
    double wall = now_ms() - t0;
    if (!failed && op != OP_DEL) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        double secs = wall / 1e3;
        printf("| %s | %d | %s | %d | %.0f | %.1f | %.3f | %.3f |\n", size >= (1u << 20) ? "1 MiB" : "4 KiB", nthreads,
               op == OP_PUT ? "PUT" : "GET", n, n / secs, (double)n * (double)size / (1024.0 * 1024.0) / secs,
               pct(lat, n, 0.50), pct(lat, n, 0.99));
        fflush(stdout);
    }
    free(lat);
    return failed;
}

static int parse_threads(const char *s, int *out, int max)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
        int v = atoi(t);
        if (v < 1 || v > 64) { free(copy); return 0; }
        out[n++] = v;
    }
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    int nsmall = 2000, nlarge = 100;
    int threads[8] = {1, 4};
    int nthreadsets = 2;
    int opt;
    while ((opt = getopt(argc, argv, "s:l:t:h")) != -1) {
        switch (opt) {
        case 's': nsmall = atoi(optarg); break;
        case 'l': nlarge = atoi(optarg); break;
        case 't': nthreadsets = parse_threads(optarg, threads, 8); break;
        default:
            fprintf(stderr, "usage: %s [-s N4KiB] [-l N1MiB] [-t T1,T2,..] URI...\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (optind >= argc || nsmall < 1 || nlarge < 1 || nthreadsets < 1) {
        fprintf(stderr, "usage: %s [-s N4KiB] [-l N1MiB] [-t T1,T2,..] URI...\n", argv[0]);
        return 2;
    }
    size_t big = 1u << 20;
    uint8_t *data = malloc(big);
    if (!data) {
        fprintf(stderr, "bench_objstore: out of memory\n");
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < big; i++) { /* incompressible bytes */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    int failed = 0;
    for (int u = optind; u < argc && !failed; u++) {
        od_store *s = NULL;
        od_err e = {0};
        if (od_store_open(argv[u], &s, &e) != OD_OK) {
            fprintf(stderr, "bench_objstore: cannot open %s: %s\n", argv[u], e.msg);
            failed = 1;
            break;
        }
        printf("\n### %s\n\n", od_store_describe(s));
        printf("| object | threads | op | requests | ops/s | MiB/s | p50 ms | p99 ms |\n");
        printf("|---|---:|---|---:|---:|---:|---:|---:|\n");
        fflush(stdout);
        struct { size_t size; int n; } sets[2] = {{4096, nsmall}, {big, nlarge}};
        for (int k = 0; k < 2 && !failed; k++) {
            for (int t = 0; t < nthreadsets && !failed; t++) {
                char prefix[128];
                snprintf(prefix, sizeof prefix, "bench-%ld-%ld/%zu-%d/", (long)getpid(), (long)time(NULL),
                         sets[k].size, threads[t]);
                failed |= phase(s, prefix, OP_PUT, sets[k].size, data, sets[k].n, threads[t]);
                if (!failed) failed |= phase(s, prefix, OP_GET, sets[k].size, data, sets[k].n, threads[t]);
                phase(s, prefix, OP_DEL, 0, NULL, sets[k].n, threads[t]);
            }
        }
        od_store_stats st;
        od_store_get_stats(s, &st);
        printf("\nrequests: %llu PUT, %llu GET, %llu DELETE; %.1f MiB out, %.1f MiB in; %llu retries\n",
               (unsigned long long)st.requests[OD_REQ_PUT], (unsigned long long)st.requests[OD_REQ_GET],
               (unsigned long long)st.requests[OD_REQ_DELETE], (double)st.bytes_out / 1048576.0,
               (double)st.bytes_in / 1048576.0, (unsigned long long)st.retries);
        od_store_close(s);
    }
    free(data);
    return failed;
}
