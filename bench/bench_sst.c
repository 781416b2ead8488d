/*
 * bench_sst.c — benchmark of SST building and reading (core/lsm/sst_*.c, block cache).
 *
 * Usage: build/bench/bench_sst [entries]   (default 1,000,000; 16-byte keys, 100-byte values)
 * Prints Markdown: build throughput, object size, full-scan throughput (in-memory table, no
 * cache; and through a warm block cache), point-get latency p50/p99 on a warm cache (present
 * keys, and absent keys rejected by the bloom filter), and the reads an open needs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsm/od_db.h"
#include "lsm/od_sst.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

/* "key" + 13 decimal digits: 16 bytes, sorted like the numbers */
static void mkkey(uint8_t *k, uint64_t i)
{
    memcpy(k, "key", 3);
    for (int d = 15; d >= 3; d--, i /= 10) k[d] = (uint8_t)('0' + i % 10);
}

typedef struct src {
    const uint8_t *data;
    int reads;
} src;
static int src_read(void *ctx, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    src *s = ctx;
    s->reads++;
    out->len = 0;
    return od_buf_append(out, s->data + off, len) ? od_err_set(err, OD_NOMEM, "nomem") : OD_OK;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what, od_err *err)
{
    fprintf(stderr, "bench_sst: %s: %s\n", what, err->msg);
    exit(1);
}

static void scan(od_sst *t, const char *label, uint64_t n, uint64_t bytes, size_t readahead)
{
    od_err err;
    od_sst_iter *it;
    if (od_sst_iter_new(t, &it, &err)) die("iter", &err);
    od_sst_iter_set_readahead(it, readahead);
    double t0 = now();
    uint64_t cnt = 0, sum = 0;
    if (od_sst_iter_first(it, &err)) die("first", &err);
    while (od_sst_iter_valid(it)) {
        const od_entry *e = od_sst_iter_entry(it);
        sum += e->vlen + e->key[e->klen - 1];
        cnt++;
        if (od_sst_iter_next(it, &err)) die("next", &err);
    }
    double dt = now() - t0;
    od_sst_iter_free(it);
    if (cnt != n) {
        fprintf(stderr, "bench_sst: scan saw %llu of %llu entries\n", (unsigned long long)cnt, (unsigned long long)n);
        exit(1);
    }
    printf("| scan, %s | %.2f M entries/s | %.0f MB/s (key+value) | checksum %llu |\n", label, (double)cnt / dt / 1e6,
           (double)bytes / dt / 1e6, (unsigned long long)(sum % 1000));
}

static void gets(od_sst *t, const char *label, uint64_t n, int absent)
{
    enum { Q = 200000 };
    double *lat = malloc(Q * sizeof *lat);
    if (!lat) exit(1);
    od_buf hold = {0};
    od_err err;
    od_entry e;
    uint8_t k[17];
    int found = 0;
    double t0 = now();
    for (int i = 0; i < Q; i++) {
        uint64_t id = rnd() % n;
        mkkey(k, id);
        if (absent) k[15] = 'x';
        double a = now();
        int rc = od_sst_get(t, k, 16, UINT64_MAX, &e, &hold, &err);
        lat[i] = now() - a;
        if (rc == OD_OK) found++;
        else if (rc != OD_NOTFOUND) die("get", &err);
    }
    double dt = now() - t0;
    if (found != (absent ? found : Q)) {
        fprintf(stderr, "bench_sst: %d of %d gets found\n", found, Q);
        exit(1);
    }
    qsort(lat, Q, sizeof *lat, cmpd);
    printf("| get, %s | p50 %.2f µs, p99 %.2f µs | %.2f M gets/s (one thread) | %d found |\n", label,
           lat[Q / 2] * 1e6, lat[Q * 99 / 100] * 1e6, Q / dt / 1e6, found);
    od_buf_free(&hold);
    free(lat);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    od_err err;
    od_sst_opts o;
    od_sst_opts_init(&o);
    od_sst_builder *b;
    if (od_sst_builder_new(&o, &b, &err)) die("builder", &err);
    uint8_t k[17], v[100];
    double t0 = now();
    for (uint64_t i = 0; i < n; i++) {
        mkkey(k, i);
        /* semi-compressible values: 50 random bytes, 50 repeated */
        for (int j = 0; j < 100; j++) v[j] = j < 50 ? (uint8_t)rnd() : (uint8_t)'v';
        od_entry e = {k, 16, 1000 + i, OD_KIND_PUT, 0, v, 100};
        if (od_sst_builder_add(b, &e, &err)) die("add", &err);
    }
    od_buf obj = {0};
    od_sst_props p;
    if (od_sst_builder_finish(b, &obj, &p, &err)) die("finish", &err);
    double dt = now() - t0;
    od_sst_builder_free(b);
    uint64_t raw = p.raw_key_bytes + p.raw_value_bytes;
    printf("| what | figure | | |\n|---|---|---|---|\n");
    printf("| build %llu entries (16 B keys, 100 B values, block 16 KiB, bloom 10 bits/key, LZ4) | %.2f M entries/s "
           "| %.0f MB/s in | object %.1f MB for %.1f MB raw, %llu blocks |\n",
           (unsigned long long)n, (double)n / dt / 1e6, (double)raw / dt / 1e6, (double)obj.len / 1e6, (double)raw / 1e6,
           (unsigned long long)p.data_blocks);
    od_sst_props_free(&p);

    od_sst *t;
    if (od_sst_open_mem("bench", obj.data, obj.len, NULL, 0, &t, &err)) die("open_mem", &err);
    scan(t, "in-memory table, no cache (CRC + LZ4 per block)", n, raw, 0);
    od_sst_close(t);

    src s0 = {obj.data, 0};
    if (od_sst_open("bench", obj.len, src_read, &s0, NULL, 0, &t, &err)) die("open", &err);
    int r0 = s0.reads;
    scan(t, "range reads, no cache, readahead 4 MiB", n, raw, 4u << 20);
    printf("| range reads for that scan | %d | (%llu data blocks) | |\n", s0.reads - r0,
           (unsigned long long)od_sst_get_props(t)->data_blocks);
    od_sst_close(t);

    od_block_cache *cache = od_block_cache_new((size_t)obj.len * 4 + (64u << 20));
    if (!cache) return 1;
    src s = {obj.data, 0};
    t0 = now();
    if (od_sst_open("bench", obj.len, src_read, &s, cache, 1, &t, &err)) die("open", &err);
    printf("| open (range reads) | %d reads | %.2f ms | |\n", s.reads, (now() - t0) * 1e3);
    scan(t, "cold block cache (fills it)", n, raw, 0);
    scan(t, "warm block cache", n, raw, 0);
    gets(t, "warm cache, present keys", n, 0);
    gets(t, "warm cache, absent keys", n, 1);
    uint64_t h, m;
    size_t bytes;
    od_block_cache_stats(cache, &h, &m, &bytes);
    printf("| block cache after the runs | %llu hits | %llu misses | %.1f MB cached |\n", (unsigned long long)h,
           (unsigned long long)m, (double)bytes / 1e6);
    od_sst_close(t);
    od_block_cache_free(cache);
    od_buf_free(&obj);
    return 0;
}
