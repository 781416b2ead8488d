/*
 * bench_promql.c — latency of typical dashboard PromQL queries (make bench-promql).
 *
 *   build/bench/bench_promql [--series N] [--hours H] [--scrape SECONDS] [--tsdb URI | --no-tsdb] [--runs R]
 *
 * Data: N series (default 10,000) over H hours (default 6) scraped every 15 s: half are
 * counters http_requests_total{job, instance, code}, half classic histogram buckets
 * http_request_duration_seconds_bucket{job, instance, le} (10 jobs, le = 10 bounds). The data
 * goes into the in-memory source and into a TSDB at URI (default mem://bench-promql; e.g.
 * file:///tmp/x; --no-tsdb skips it), which is queried through core/promql/source_tsdb.c.
 *
 * Queries: rate, sum by (job) (rate), histogram_quantile over sum by (job, le) (rate), each as a
 * range query over the whole span at 60 s steps, over the last hour at 15 s steps, and as an
 * instant query. Prints a Markdown table: best and median of R runs (default 3), series and
 * points returned. OD_TEST_SCALE (float) scales N.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "promql/od_promql.h"
#include "promql/od_promql_tsdb.h"
#include "od_bench.h"

static unsigned long long rng = 88172645463325252ULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

typedef struct gen {
    od_promql_mem *mem;
    od_tsdb *tsdb;
    int nseries;
    int64_t span_ms, scrape_ms;
    size_t samples;
} gen;

static int add_series(gen *g, od_promql_label *l, size_t nl, double rate_per_s, od_err *err)
{
    size_t n = (size_t)(g->span_ms / g->scrape_ms) + 1;
    od_sample *s = malloc(n * sizeof *s);
    if (!s) return od_err_set(err, OD_NOMEM, "bench: out of memory");
    double v = 0;
    for (size_t i = 0; i < n; i++) {
        v += rate_per_s * (double)g->scrape_ms / 1000.0 * (0.5 + urand());
        s[i].t = (int64_t)i * g->scrape_ms;
        s[i].v = floor(v);
        int rc = od_promql_mem_add(g->mem, l, nl, s[i].t, s[i].v, err);
        if (rc) { free(s); return rc; }
    }
    g->samples += n;
    if (g->tsdb) {
        od_labels ol = {0};
        for (size_t i = 0; i < nl; i++) od_labels_add(&ol, l[i].name, l[i].value);
        od_series_in in = {&ol, s, n};
        int rc = od_tsdb_append(g->tsdb, &in, 1, 0, NULL, NULL, err);
        od_labels_free(&ol);
        if (rc) { free(s); return rc; }
    }
    free(s);
    return OD_OK;
}

static int generate(gen *g, od_err *err)
{
    static const char *codes[] = {"200", "201", "204", "301", "302", "400", "401", "404", "500", "503"};
    static const char *les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"};
    static const double fr[] = {0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 0.95, 0.99, 1.0};
    int per_kind = g->nseries / 2;
    int instances = per_kind / 100 > 0 ? per_kind / 100 : 1; /* 10 jobs × instances × 10 */
    char job[32], inst[48];
    int made = 0;
    for (int j = 0; j < 10; j++)
        for (int i = 0; i < instances; i++)
            for (int c = 0; c < 10 && made < per_kind; c++, made++) {
                snprintf(job, sizeof job, "job-%d", j);
                snprintf(inst, sizeof inst, "10.0.%d.%d:9100", j, i);
                od_promql_label l[4] = {{"__name__", "http_requests_total"}, {"job", job}, {"instance", inst}, {"code", codes[c]}};
                int rc = add_series(g, l, 4, 10.0 / (c + 1), err);
                if (rc) return rc;
            }
    made = 0;
    for (int j = 0; j < 10; j++)
        for (int i = 0; i < instances; i++) {
            /* one base rate per instance; cumulative buckets as fractions of it */
            for (int b = 0; b < 10 && made < per_kind; b++, made++) {
                snprintf(job, sizeof job, "job-%d", j);
                snprintf(inst, sizeof inst, "10.0.%d.%d:9100", j, i);
                od_promql_label l[4] = {{"__name__", "http_request_duration_seconds_bucket"}, {"job", job}, {"instance", inst}, {"le", les[b]}};
                int rc = add_series(g, l, 4, 20.0 * fr[b], err);
                if (rc) return rc;
            }
        }
    return OD_OK;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_query(const char *label, const od_promql_source *src, const char *q, int range, int64_t start,
                      int64_t end, int64_t step, int runs)
{
    double *t = calloc((size_t)runs, sizeof *t);
    size_t nseries = 0, npoints = 0;
    od_err err;
    for (int r = 0; r < runs; r++) {
        od_promql_result *res = NULL;
        double t0 = od_bench_now_s();
        int rc = range ? od_promql_query_range(src, q, start, end, step, NULL, &res, &err)
                       : od_promql_query_instant(src, q, end, NULL, &res, &err);
        t[r] = od_bench_now_s() - t0;
        if (rc) {
            printf("| %s | `%s` | error: %s | | | |\n", label, q, err.msg);
            free(t);
            return;
        }
        nseries = res->nseries;
        npoints = 0;
        for (size_t i = 0; i < res->nseries; i++) npoints += res->series[i].npoints;
        od_promql_result_free(res);
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_d);
    printf("| %s | `%s` | %.1f | %.1f | %zu | %zu |\n", label, q, t[0] * 1000, t[runs / 2] * 1000, nseries, npoints);
    free(t);
}

static void run_all(const char *srcname, const od_promql_source *src, int64_t span, int runs)
{
    static const char *queries[] = {
        "rate(http_requests_total[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))",
    };
    printf("\n### source: %s\n\n", srcname);
    printf("| query kind | query | best ms | median ms | series | points |\n|---|---|---|---|---|---|\n");
    char lab[64];
    for (int i = 0; i < 3; i++) {
        snprintf(lab, sizeof lab, "range %lldh step 60s", (long long)(span / 3600000));
        run_query(lab, src, queries[i], 1, 0, span, 60000, runs);
        run_query("range 1h step 15s", src, queries[i], 1, span - 3600000 > 0 ? span - 3600000 : 0, span, 15000, runs);
        run_query("instant", src, queries[i], 0, 0, span, 0, runs);
    }
}

int main(int argc, char **argv)
{
    int nseries = 10000, runs = 3;
    double hours = 6, scrape = 15;
    const char *tsdb_uri = "mem://bench-promql";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--series") && i + 1 < argc) nseries = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hours") && i + 1 < argc) hours = atof(argv[++i]);
        else if (!strcmp(argv[i], "--scrape") && i + 1 < argc) scrape = atof(argv[++i]);
        else if (!strcmp(argv[i], "--tsdb") && i + 1 < argc) tsdb_uri = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-tsdb")) tsdb_uri = NULL;
        else {
            fprintf(stderr, "usage: %s [--series N] [--hours H] [--scrape S] [--tsdb URI | --no-tsdb] [--runs R]\n", argv[0]);
            return 2;
        }
    }
    const char *sc = getenv("OD_TEST_SCALE");
    if (sc && atof(sc) > 0) nseries = (int)(nseries * atof(sc));
    if (nseries < 20) nseries = 20;
    if (runs < 1) runs = 1;
    gen g = {0};
    od_err err;
    g.nseries = nseries;
    g.span_ms = (int64_t)(hours * 3600000);
    g.scrape_ms = (int64_t)(scrape * 1000);
    if (od_promql_mem_new(&g.mem, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    if (tsdb_uri) {
        od_tsdb_options o;
        od_tsdb_options_init(&o);
        if (od_tsdb_open(tsdb_uri, &o, &g.tsdb, &err)) { fprintf(stderr, "tsdb open: %s\n", err.msg); return 1; }
    }
    double t0 = od_bench_now_s();
    if (generate(&g, &err)) { fprintf(stderr, "generate: %s\n", err.msg); return 1; }
    if (g.tsdb && od_tsdb_flush(g.tsdb, &err)) { fprintf(stderr, "flush: %s\n", err.msg); return 1; }
    double tl = od_bench_now_s() - t0;
    printf("PromQL dashboard queries: %d series, %.1f h, scrape %.0f s, %zu samples (loaded in %.1f s%s)\n",
           nseries, hours, scrape, g.samples, tl, g.tsdb ? ", into memory and the TSDB" : "");
    od_promql_source ms = od_promql_mem_source(g.mem);
    run_all("in-memory (od_promql_mem)", &ms, g.span_ms, runs);
    if (g.tsdb) {
        od_promql_tsdb_src *ts;
        if (od_promql_tsdb_src_open(g.tsdb, &ts, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        od_promql_source s = od_promql_tsdb_src_source(ts);
        char name[300];
        snprintf(name, sizeof name, "TSDB %s", tsdb_uri);
        run_all(name, &s, g.span_ms, runs);
        od_promql_tsdb_src_close(ts);
        od_tsdb_close(g.tsdb, &err);
    }
    od_promql_mem_free(g.mem);
    return 0;
}
