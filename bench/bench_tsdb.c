/*
 * bench_tsdb.c — the TSDB benchmark (`make bench-tsdb`): a node-exporter-like dataset through
 * the engine API, compared with the same rows in an ordinary SQLite table, in one run.
 *
 *   bench_tsdb [STORE_URI]   (default file:///tmp/od_bench_tsdb; the directory is wiped first)
 *   env: OD_BENCH_MIX (node = default, or noisy: the datasets below), OD_BENCH_HOSTS (default
 *        6 for node, ≈ 600 series each; 40 for noisy, 96 series each), OD_BENCH_HOURS (24),
 *        OD_BENCH_BATCH_MIN (30: minutes of samples per series per append batch), OD_BENCH_EXT
 *        (path of opendata.so for the SQL runs; default: next to the bench directory),
 *        OD_BENCH_DUMP (write the samples of the per-kind table to this file, for codec A/B).
 *
 * First, per kind of series: the bytes of one 2-hour chunk per series as the codec writes it
 * and as plain Gorilla XOR would, and the chunk decode speed.
 *
 * Reports (Markdown): ingest samples/s through od_tsdb_append on one thread; bytes per sample
 * on the store after compaction (live SST bytes = chunks + index + dictionary, and every
 * object in the store); peak RSS growth per active series; the SQLite table's size; the time
 * of `count(*), sum(value) WHERE metric = ? AND ts BETWEEN ? AND ?` and of a full aggregation
 * for engine API, tsdb vtab and native SQLite; object-store requests of a warm and a cold query.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
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
#include "tsdb/tsdb_int.h" /* the chunk codec, for the per-kind table */
#include "od_bench.h"

#define T0 1700000000000LL
#define STEP 15000LL

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------------ the datasets
 *
 * Two mixes (OD_BENCH_MIX):
 *
 * "node" (default): what node_exporter 1.x with its default collectors exposes on a Linux
 * cloud VM with Docker (ncpu 2–16), plus the series Prometheus adds per target and one
 * application histogram per host — about 600–700 series per host, counted collector by
 * collector in docs/benchmarks.md. Values are produced the way the exporter computes them:
 * CPU seconds are USER_HZ ticks / 100, disk times milliseconds * (1.0/1000.0), schedstat and
 * Go durations nanoseconds / 1e9, pressure microseconds / 1e6, memory kB * 1024, filesystem
 * blocks * 4096, node_time_seconds float64(UnixNano()) / 1e9 (nanosecond noise included),
 * histogram _sum a float64 running sum. Dynamics: each host has a diurnal activity profile
 * times an AR(1) factor (φ = 0.99 per scrape, i.e. ~25 min correlation); counters increment
 * by Poisson counts (normal approximation σ = √(λ·event size) for large λ) at a rate that
 * follows the host's activity and, for traffic, an AR(1) factor of its own; idle devices and
 * error counters stay at 0, rare events (drops, major faults, retransmits) are Poisson with
 * small λ; gauges walk (memory, filesystem, sockets) or are constant (sizes, limits, info).
 * Timestamps: the target's scrape grid (Prometheus aligns scrape timestamps within 2 ms);
 * 1 scrape in 500 is late by 3–50 ms, beyond that tolerance.
 *
 * "noisy": the earlier synthetic mix (96 series per host; byte/packet counters with
 * white-noise rates up to 3 MB per 15 s): the worst case for the codec.
 */

enum gkind {
    G_CONST, G_CNT, G_IDLE, G_WALK, G_LOAD, G_PROCS, G_DUR, G_TIME, G_SAW, G_FWALK, G_BUCKET, G_HSUM, G_HCNT,
    /* noisy mix */
    K_CPU, K_CNT, K_MEM, K_LOAD, K_CONST, K_TIME, K_BUCKET, K_HSUM
};
/* value forms: how the exporter turns its integer state into the double it exposes */
enum vform { F_INT, F_DIV100, F_MS, F_NS, F_US, F_MUL };

typedef struct series {
    od_labels ls;
    char *metric, *json;
    const char *group; /* collector, for the per-kind table */
    int k, form, host, hist, le;
    int diurnal;       /* rate follows the host's activity */
    int64_t iv;        /* integer state (ticks, bytes, ns, pages …) */
    double v;          /* current value (float state) */
    double rate;       /* mean events per scrape at activity 1 */
    double unit;       /* size of one event, for the noise (bytes per packet …) */
    double q;          /* F_MUL: multiplier; G_WALK: step σ */
    double p;          /* G_WALK/G_FWALK: probability of a change per scrape */
    double ar, arsd;   /* own AR(1) log-factor and its stationary σ (0 = none) */
    int64_t lo, hi;    /* G_WALK bounds */
    double frac;       /* noisy mix */
} series;

static series *S;
static size_t NS, CAP;

typedef struct host {
    int ncpu, docker;
    double u0;          /* mean busy fraction of a CPU */
    double *act;        /* activity per scrape: diurnal × AR(1), mean ≈ 1 */
    double load[3];     /* load1/5/15 state */
    int64_t late_ms_seed;
} host;
static host *H;
static int NH;
static int64_t STEPS;

static double nrand(void) /* standard normal (Box–Muller) */
{
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static uint64_t mix64(uint64_t x) /* splitmix64 finaliser: per-step deterministic draws */
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static double hrand(uint64_t *st) /* uniform from a private state */
{
    *st = mix64(*st);
    return (double)(*st >> 11) / 9007199254740992.0;
}
static double hnrand(uint64_t *st)
{
    double u1 = hrand(st), u2 = hrand(st);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* A Poisson count with mean lam; events of size unit make it overdispersed for large lam. */
static int64_t poisson(double lam, double unit)
{
    if (lam <= 0) return 0;
    if (lam < 30 && unit <= 1) {
        double l = exp(-lam), p = urand();
        int64_t k = 0;
        while (p > l) {
            p *= urand();
            k++;
        }
        return k;
    }
    double x = lam + sqrt(lam * (unit > 1 ? unit : 1)) * nrand();
    return x > 0 ? (int64_t)llround(x) : 0;
}

/* The sample time of scrape s of host h: on the grid, except 1 scrape in 500 late by 3–50 ms
 * (the same for every series of the target: one scrape). */
static int64_t scrape_ts(int h, int64_t s)
{
    uint64_t r = mix64(((uint64_t)h << 40) ^ (uint64_t)s ^ 0x5ca1ab1eULL);
    int64_t late = (r % 500 == 0) ? 3 + (int64_t)((r >> 20) % 48) : 0;
    return T0 + s * STEP + late;
}

static series *add2(int k, const char *group, int h, const char *metric, const char *inst, const char *job,
                    va_list ap)
{
    if (NS == CAP) {
        CAP = CAP ? CAP * 2 : 1024;
        S = realloc(S, CAP * sizeof *S);
        if (!S) exit(1);
    }
    series *s = &S[NS++];
    memset(s, 0, sizeof *s);
    s->k = k;
    s->group = group;
    s->host = h;
    od_labels_add(&s->ls, "__name__", metric);
    od_labels_add(&s->ls, "instance", inst);
    od_labels_add(&s->ls, "job", job);
    const char *n;
    while ((n = va_arg(ap, const char *))) od_labels_add(&s->ls, n, va_arg(ap, const char *));
    od_err e;
    if (od_labels_sort(&s->ls, &e)) { fprintf(stderr, "labels of %s: %s\n", metric, e.msg); exit(1); }
    s->metric = strdup(metric);
    od_buf j = {0};
    od_labels_format_json(&s->ls, &j);
    od_buf_cstr(&j);
    s->json = strdup((char *)j.data);
    od_buf_free(&j);
    return s;
}

static char CUR_INST[64];
static int CUR_HOST;
static const char *CUR_GROUP;

/* node_exporter series of the current host: kind, metric, then label pairs, NULL. */
static series *nx(int k, const char *metric, ...)
{
    va_list ap;
    va_start(ap, metric);
    series *s = add2(k, CUR_GROUP, CUR_HOST, metric, CUR_INST, "node", ap);
    va_end(ap);
    return s;
}

static series *cnst(double v, const char *metric, ...)
{
    va_list ap;
    va_start(ap, metric);
    series *s = add2(G_CONST, CUR_GROUP, CUR_HOST, metric, CUR_INST, "node", ap);
    va_end(ap);
    s->v = v;
    return s;
}

/* a counter: rate = mean events per scrape at activity 1 */
/* a series of the application job on the current host */
static series *nxa(int k, const char *inst, const char *metric, ...)
{
    va_list ap;
    va_start(ap, metric);
    series *s = add2(k, CUR_GROUP, CUR_HOST, metric, inst, "app", ap);
    va_end(ap);
    return s;
}

static void setc(series *s, int64_t start, double rate, double unit, int form, int diurnal, double arsd)
{
    s->iv = start;
    s->rate = rate;
    s->unit = unit;
    s->form = form;
    s->diurnal = diurnal;
    s->arsd = arsd;
}

static void setw(series *s, int64_t start, double p, double sd, int64_t lo, int64_t hi, int form, double mul)
{
    s->iv = start;
    s->p = p;
    s->q = sd;
    s->lo = lo;
    s->hi = hi;
    s->form = form;
    s->unit = mul;
}

static double lrand(double lo, double hi) { return lo * pow(hi / lo, urand()); } /* log-uniform */

static void build_host(int h)
{
    host *ho = &H[h];
    static const int cpus[] = {2, 4, 4, 4, 8, 8, 8, 16};
    ho->ncpu = cpus[(int)(urand() * 8)];
    ho->docker = urand() < 0.6;
    ho->u0 = lrand(0.02, 0.4);
    int64_t na = STEPS < 480 ? 480 : STEPS; /* the per-kind table uses 480 scrapes */
    ho->act = malloc((size_t)na * sizeof *ho->act);
    if (!ho->act) exit(1);
    double amp = 0.2 + 0.6 * urand(), phase = urand(), ar = 0;
    uint64_t st = mix64(0xac7ULL + (uint64_t)h); /* private: the dataset does not depend on the hours */
    for (int64_t s = 0; s < na; s++) {
        ar = 0.99 * ar + 0.2 * sqrt(1 - 0.99 * 0.99) * hnrand(&st);
        double day = (double)s * STEP / 86400000.0;
        ho->act[s] = fmax(0.05, (1 + amp * sin(2 * M_PI * (day - phase))) * exp(ar));
    }
    CUR_HOST = h;
    snprintf(CUR_INST, sizeof CUR_INST, "host-%03d:9100", h);
    double busy = ho->u0 * 1500; /* busy ticks per CPU per scrape at activity 1 */
    char cpu[16];
    series *x;

    CUR_GROUP = "cpu seconds (ticks/100)";
    static const char *modes[] = {"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"};
    static const double share[] = {0, 0.04, 0.01, 0.005, 0.05, 0.03, 0.25, 0.6};
    for (int c = 0; c < ho->ncpu; c++) {
        snprintf(cpu, sizeof cpu, "%d", c);
        for (int m = 0; m < 8; m++) {
            x = nx(G_CNT, "node_cpu_seconds_total", "cpu", cpu, "mode", modes[m], NULL);
            if (m == 0) x->k = G_IDLE, setc(x, (int64_t)(1e7 * urand()), busy, 1, F_DIV100, 1, 0.3);
            else setc(x, (int64_t)(1e5 * urand() * share[m]), busy * share[m], 1, F_DIV100, 1, 0.3);
        }
    }
    CUR_GROUP = "zero counters";
    for (int c = 0; c < ho->ncpu; c++) {
        snprintf(cpu, sizeof cpu, "%d", c);
        cnst(0, "node_cpu_guest_seconds_total", "cpu", cpu, "mode", "nice", NULL);
        cnst(0, "node_cpu_guest_seconds_total", "cpu", cpu, "mode", "user", NULL);
    }
    CUR_GROUP = "schedstat (ns/1e9)";
    for (int c = 0; c < ho->ncpu; c++) {
        snprintf(cpu, sizeof cpu, "%d", c);
        x = nx(G_CNT, "node_schedstat_running_seconds_total", "cpu", cpu, NULL);
        setc(x, (int64_t)(1e14 * urand()), ho->u0 * 15e9, 1e6, F_NS, 1, 0.3);
        x = nx(G_CNT, "node_schedstat_waiting_seconds_total", "cpu", cpu, NULL);
        setc(x, (int64_t)(1e13 * urand()), ho->u0 * ho->u0 * 5e9, 1e6, F_NS, 1, 0.5);
        x = nx(G_CNT, "node_schedstat_timeslices_total", "cpu", cpu, NULL);
        setc(x, (int64_t)(1e8 * urand()), lrand(1500, 30000), 1, F_INT, 1, 0.3);
    }
    CUR_GROUP = "softnet";
    for (int c = 0; c < ho->ncpu; c++) {
        snprintf(cpu, sizeof cpu, "%d", c);
        x = nx(G_CNT, "node_softnet_processed_total", "cpu", cpu, NULL);
        setc(x, (int64_t)(1e7 * urand()), lrand(30, 3000), 1, F_INT, 1, 0.4);
        cnst(0, "node_softnet_dropped_total", "cpu", cpu, NULL);
        x = nx(G_CNT, "node_softnet_times_squeezed_total", "cpu", cpu, NULL);
        setc(x, (int64_t)(100 * urand()), 0.01, 1, F_INT, 1, 0);
        cnst(0, "node_softnet_received_rps_total", "cpu", cpu, NULL);
        cnst(0, "node_softnet_flow_limit_count_total", "cpu", cpu, NULL);
        cnst(0, "node_softnet_backlog_len", "cpu", cpu, NULL);
    }
    CUR_GROUP = "load, procs";
    nx(G_LOAD, "node_load1", NULL)->hist = 0;
    nx(G_LOAD, "node_load5", NULL)->hist = 1;
    nx(G_LOAD, "node_load15", NULL)->hist = 2;
    nx(G_PROCS, "node_procs_running", NULL);
    x = nx(G_WALK, "node_procs_blocked", NULL); /* mostly 0, now and then 1 or 2 */
    setw(x, 0, 0.02, 1, 0, 2, F_INT, 1);
    CUR_GROUP = "stat counters";
    x = nx(G_CNT, "node_context_switches_total", NULL);
    setc(x, (int64_t)(1e9 * urand()), lrand(500, 5000) * 15 * ho->ncpu, 1, F_INT, 1, 0.3);
    x = nx(G_CNT, "node_intr_total", NULL);
    setc(x, (int64_t)(1e9 * urand()), lrand(300, 3000) * 15 * ho->ncpu, 1, F_INT, 1, 0.3);
    x = nx(G_CNT, "node_forks_total", NULL);
    setc(x, (int64_t)(1e7 * urand()), lrand(1, 30) * 15, 1, F_INT, 1, 0.5);
    CUR_GROUP = "constants and info";
    cnst(1764000000 + floor(urand() * 1e6), "node_boot_time_seconds", NULL);

    /* meminfo: kB * 1024 */
    CUR_GROUP = "meminfo";
    double memkb = 1024.0 * 1024 * ho->ncpu * 2; /* 2 GiB per CPU */
    static const char *mconst[] = {"MemTotal", "SwapTotal", "SwapFree", "SwapCached", "VmallocTotal", "CommitLimit",
                                   "HardwareCorrupted", "Bounce", "NFS_Unstable", "WritebackTmp", "HugePages_Total",
                                   "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp", "Hugepagesize", "Hugetlb",
                                   "DirectMap1G", "FileHugePages", "FilePmdMapped", "ShmemPmdMapped", "ShmemHugePages"};
    char mn[64];
    for (size_t i = 0; i < sizeof mconst / sizeof *mconst; i++) {
        snprintf(mn, sizeof mn, "node_memory_%s_bytes", mconst[i]);
        double v = i == 0 ? memkb * 1024 : i == 4 ? 34359738367.0 * 1024 : i == 5 ? memkb * 512 : i == 14 ? 2097152 : 0;
        cnst(v, mn, NULL);
    }
    /* name, share of MemTotal, step σ in pages, probability of a change per scrape */
    static const struct { const char *n; double share, sd, p; } mw[] = {
        {"MemFree", 0.2, 400, 1}, {"MemAvailable", 0.6, 400, 1}, {"Buffers", 0.03, 5, 0.5},
        {"Cached", 0.35, 200, 1}, {"Active", 0.3, 100, 1}, {"Inactive", 0.3, 100, 1},
        {"Active_anon", 0.15, 100, 1}, {"Inactive_anon", 0.05, 20, 0.5}, {"Active_file", 0.15, 50, 1},
        {"Inactive_file", 0.25, 80, 1}, {"AnonPages", 0.18, 100, 1}, {"Mapped", 0.04, 10, 0.6},
        {"Shmem", 0.01, 3, 0.3}, {"KReclaimable", 0.04, 20, 0.8}, {"Slab", 0.06, 25, 1},
        {"SReclaimable", 0.04, 20, 0.8}, {"SUnreclaim", 0.02, 8, 0.8}, {"KernelStack", 0.002, 4, 0.5},
        {"PageTables", 0.005, 6, 0.7}, {"Committed_AS", 0.4, 150, 1}, {"VmallocUsed", 0.005, 2, 0.2},
        {"Percpu", 0.001, 1, 0.02}, {"Dirty", 0.001, 60, 1}, {"Writeback", 0.0, 2, 0.05},
        {"AnonHugePages", 0.02, 512, 0.05}, {"DirectMap4k", 0.05, 3, 0.01}, {"DirectMap2M", 0.95, 512, 0.005},
        {"Unevictable", 0.001, 1, 0.01}, {"Mlocked", 0.001, 1, 0.01},
    };
    for (size_t i = 0; i < sizeof mw / sizeof *mw; i++) {
        snprintf(mn, sizeof mn, "node_memory_%s_bytes", mw[i].n);
        x = nx(G_WALK, mn, NULL);
        int64_t pages = (int64_t)(memkb / 4 * mw[i].share);
        setw(x, pages, mw[i].p, mw[i].sd, 0, (int64_t)(memkb / 4), F_MUL, 4096);
    }

    CUR_GROUP = "filesystem";
    static const struct { const char *mp, *dev, *fs; double gb, used, p; } fsl[] = {
        {"/", "/dev/vda1", "ext4", 80, 0.45, 0.5}, {"/boot", "/dev/vda15", "ext4", 1, 0.2, 0},
        {"/boot/efi", "/dev/vda16", "vfat", 0.1, 0.06, 0}, {"/run", "tmpfs", "tmpfs", 1.6, 0.01, 0.05},
        {"/run/lock", "tmpfs", "tmpfs", 0.005, 0, 0}, {"/run/user/1000", "tmpfs", "tmpfs", 1.6, 0, 0.01},
    };
    for (size_t i = 0; i < sizeof fsl / sizeof *fsl; i++) {
        double blocks = floor(fsl[i].gb * 262144), freeb = floor(blocks * (1 - fsl[i].used));
        double files = floor(blocks / 4);
        const char *L[] = {"device", fsl[i].dev, "fstype", fsl[i].fs, "mountpoint", fsl[i].mp};
        x = nx(G_WALK, "node_filesystem_avail_bytes", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        setw(x, (int64_t)(freeb * 0.95), fsl[i].p, 60, 0, (int64_t)blocks, F_MUL, 4096);
        x = nx(G_WALK, "node_filesystem_free_bytes", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        setw(x, (int64_t)freeb, fsl[i].p, 60, 0, (int64_t)blocks, F_MUL, 4096);
        cnst(blocks * 4096, "node_filesystem_size_bytes", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        cnst(files, "node_filesystem_files", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        x = nx(G_WALK, "node_filesystem_files_free", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        setw(x, (int64_t)(files * 0.8), fsl[i].p * 0.5, 3, 0, (int64_t)files, F_INT, 1);
        cnst(0, "node_filesystem_readonly", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
        cnst(0, "node_filesystem_device_error", L[0], L[1], L[2], L[3], L[4], L[5], NULL);
    }

    CUR_GROUP = "diskstats";
    for (int d = 0; d < 2; d++) {
        const char *dev = d ? "sr0" : "vda";
        double on = d ? 0 : 1, wr = lrand(1, 30) * 15 * on, rd = lrand(0.05, 3) * 15 * on;
        const char *mt[] = {"node_disk_reads_completed_total", "node_disk_reads_merged_total",
                            "node_disk_read_bytes_total", "node_disk_read_time_seconds_total",
                            "node_disk_writes_completed_total", "node_disk_writes_merged_total",
                            "node_disk_written_bytes_total", "node_disk_write_time_seconds_total",
                            "node_disk_io_time_seconds_total", "node_disk_io_time_weighted_seconds_total",
                            "node_disk_flush_requests_total", "node_disk_flush_requests_time_seconds_total"};
        /* events per scrape, event size (noise), form, multiplier */
        /* bytes in 4 KiB blocks (ext4 block size, page-cache I/O), times in ms */
        double rate[] = {rd, rd * 0.1, rd * 4, rd * 1.0, wr, wr * 0.5, wr * 3, wr * 1.5, (rd + wr) * 0.8,
                         (rd + wr) * 2.0, wr * 0.3, wr * 0.3};
        double unit[] = {3, 3, 4, 2, 2, 2, 3, 3, 2, 4, 1, 2};
        int form[] = {F_INT, F_INT, F_MUL, F_MS, F_INT, F_INT, F_MUL, F_MS, F_MS, F_MS, F_INT, F_MS};
        for (int i = 0; i < 12; i++) {
            x = nx(G_CNT, mt[i], "device", dev, NULL);
            setc(x, (int64_t)(on * 1e8 * urand()), rate[i], unit[i], form[i], 1, 0.6);
            x->q = 4096; /* F_MUL: blocks */
        }
        x = nx(G_WALK, "node_disk_io_now", "device", dev, NULL);
        setw(x, 0, 0.1 * on, 1, 0, 4, F_INT, 1);
        cnst(0, "node_disk_discards_completed_total", "device", dev, NULL);
        cnst(0, "node_disk_discards_merged_total", "device", dev, NULL);
        cnst(0, "node_disk_discarded_sectors_total", "device", dev, NULL);
        cnst(0, "node_disk_discard_time_seconds_total", "device", dev, NULL);
        cnst(1, "node_disk_info", "device", dev, "major", d ? "11" : "252", "minor", "0", NULL);
    }

    CUR_GROUP = "netdev";
    const char *ifs[] = {"lo", "eth0", "docker0"};
    int nif = ho->docker ? 3 : 2;
    double netrate = lrand(2e3, 2e6); /* eth0 bytes/s at activity 1 */
    for (int i = 0; i < nif; i++) {
        double B = (i == 1 ? netrate : i == 0 ? lrand(500, 5e4) : (urand() < 0.5 ? 0 : lrand(100, 5e4))) * 15;
        double pk = i == 1 ? 700 : 300; /* mean packet size */
        const char *dev = ifs[i];
        x = nx(G_CNT, "node_network_receive_bytes_total", "device", dev, NULL);
        setc(x, (int64_t)(1e10 * urand() * (B > 0)), B, pk, F_INT, 1, 0.5);
        x = nx(G_CNT, "node_network_transmit_bytes_total", "device", dev, NULL);
        setc(x, (int64_t)(1e10 * urand() * (B > 0)), i ? B * 0.7 : B, pk, F_INT, 1, 0.5);
        x = nx(G_CNT, "node_network_receive_packets_total", "device", dev, NULL);
        setc(x, (int64_t)(1e8 * urand() * (B > 0)), B / pk, 1, F_INT, 1, 0.5);
        x = nx(G_CNT, "node_network_transmit_packets_total", "device", dev, NULL);
        setc(x, (int64_t)(1e8 * urand() * (B > 0)), B / pk * 0.8, 1, F_INT, 1, 0.5);
        x = nx(G_CNT, "node_network_receive_drop_total", "device", dev, NULL);
        setc(x, i == 1 ? (int64_t)(1000 * urand()) : 0, i == 1 ? 0.02 : 0, 1, F_INT, 0, 0);
        x = nx(G_CNT, "node_network_receive_multicast_total", "device", dev, NULL);
        setc(x, i == 1 ? (int64_t)(1e5 * urand()) : 0, i == 1 ? 1.5 : 0, 1, F_INT, 0, 0);
        const char *zero[] = {"receive_errs", "receive_fifo", "receive_frame", "receive_compressed", "transmit_errs",
                              "transmit_drop", "transmit_fifo", "transmit_colls", "transmit_carrier",
                              "transmit_compressed"};
        for (int z = 0; z < 10; z++) {
            snprintf(mn, sizeof mn, "node_network_%s_total", zero[z]);
            cnst(0, mn, "device", dev, NULL);
        }
        CUR_GROUP = "constants and info";
        const char *nc[] = {"node_network_up", "node_network_info", "node_network_mtu_bytes",
                            "node_network_speed_bytes", "node_network_carrier", "node_network_carrier_changes_total",
                            "node_network_carrier_up_changes_total", "node_network_carrier_down_changes_total",
                            "node_network_address_assign_type", "node_network_device_id", "node_network_dormant",
                            "node_network_flags", "node_network_iface_id", "node_network_iface_link",
                            "node_network_iface_link_mode", "node_network_name_assign_type",
                            "node_network_net_dev_group", "node_network_protocol_type",
                            "node_network_transmit_queue_length"};
        double ncv[] = {1, 1, i ? 1500 : 65536, 1.25e9, 1, 2, 1, 1, 0, 0, 0, 4099, i + 1, i + 1, 0, 4, 0, i ? 1 : 772, 1000};
        for (int z = 0; z < 19; z++) cnst(ncv[z], nc[z], "device", dev, NULL);
        CUR_GROUP = "netdev";
    }
    x = nx(G_WALK, "node_arp_entries", "device", "eth0", NULL);
    setw(x, 3, 0.02, 1, 1, 12, F_INT, 1);

    CUR_GROUP = "netstat, sockstat, vmstat";
    /* type: 0 const 0, 1 const 1, 2 gauge, 3 events per second, 4 IP octets (share of eth0 bytes),
     * 5 TCP segments (share of eth0 packets) */
    static const struct { const char *n; int type; double r; } ns_[] = {
        {"Icmp_InErrors", 0, 0}, {"Icmp_InMsgs", 3, 0.3}, {"Icmp_OutMsgs", 3, 0.3}, {"Icmp6_InErrors", 0, 0},
        {"Icmp6_InMsgs", 3, 0.5}, {"Icmp6_OutMsgs", 3, 0.5}, {"Ip_Forwarding", 1, 1}, {"Ip6_InOctets", 3, 100},
        {"Ip6_OutOctets", 3, 100}, {"IpExt_InOctets", 4, 1}, {"IpExt_OutOctets", 4, 0.7},
        {"Tcp_ActiveOpens", 3, 1}, {"Tcp_CurrEstab", 2, 20}, {"Tcp_InErrs", 3, 0.001}, {"Tcp_InSegs", 5, 1},
        {"Tcp_OutRsts", 3, 0.1}, {"Tcp_OutSegs", 5, 0.8}, {"Tcp_PassiveOpens", 3, 0.7},
        {"Tcp_RetransSegs", 3, 0.05}, {"TcpExt_ListenDrops", 0, 0}, {"TcpExt_ListenOverflows", 0, 0},
        {"TcpExt_SyncookiesFailed", 0, 0}, {"TcpExt_SyncookiesRecv", 0, 0}, {"TcpExt_SyncookiesSent", 0, 0},
        {"TcpExt_TCPSynRetrans", 3, 0.005}, {"TcpExt_TCPTimeouts", 3, 0.02}, {"TcpExt_TCPOFOQueue", 3, 0.05},
        {"TcpExt_TCPRcvQDrop", 0, 0}, {"Udp_InDatagrams", 3, 2}, {"Udp_InErrors", 0, 0}, {"Udp_NoPorts", 3, 0.01},
        {"Udp_OutDatagrams", 3, 2}, {"Udp_RcvbufErrors", 0, 0}, {"Udp_SndbufErrors", 0, 0},
        {"Udp6_InDatagrams", 3, 0.05}, {"Udp6_InErrors", 0, 0}, {"Udp6_NoPorts", 0, 0}, {"Udp6_OutDatagrams", 3, 0.05},
        {"Udp6_RcvbufErrors", 0, 0}, {"Udp6_SndbufErrors", 0, 0}, {"UdpLite_InErrors", 0, 0},
        {"UdpLite6_InErrors", 0, 0},
    };
    for (size_t i = 0; i < sizeof ns_ / sizeof *ns_; i++) {
        snprintf(mn, sizeof mn, "node_netstat_%s", ns_[i].n);
        if (ns_[i].type < 2) {
            cnst(ns_[i].type, mn, NULL);
        } else if (ns_[i].type == 2) {
            x = nx(G_WALK, mn, NULL);
            setw(x, (int64_t)ns_[i].r, 0.3, 2, 1, 1000, F_INT, 1);
        } else {
            x = nx(G_CNT, mn, NULL);
            double r = ns_[i].type == 3 ? ns_[i].r * 15 : ns_[i].type == 4 ? ns_[i].r * netrate * 15 : ns_[i].r * netrate * 15 / 700;
            setc(x, (int64_t)(1e8 * urand()), r, ns_[i].type == 4 ? 700 : 1, F_INT, 1, 0.5);
        }
    }
    static const char *sk[] = {"sockets_used", "TCP_alloc", "TCP_inuse", "TCP_mem", "TCP_mem_bytes", "TCP_orphan",
                               "TCP_tw", "UDP_inuse", "UDP_mem", "UDP_mem_bytes", "UDPLITE_inuse", "RAW_inuse",
                               "FRAG_inuse", "FRAG_memory", "TCP6_inuse", "UDP6_inuse", "UDPLITE6_inuse",
                               "RAW6_inuse", "FRAG6_inuse", "FRAG6_memory"};
    for (int i = 0; i < 20; i++) {
        snprintf(mn, sizeof mn, "node_sockstat_%s", sk[i]);
        if (i >= 10 && i != 14 && i != 15) { cnst(0, mn, NULL); continue; }
        x = nx(G_WALK, mn, NULL);
        int bytes = strstr(sk[i], "_bytes") != NULL;
        setw(x, i == 0 ? 300 : 10, i == 5 ? 0.02 : 0.4, i == 0 ? 3 : 2, 0, 100000, bytes ? F_MUL : F_INT, bytes ? 4096 : 1);
    }
    x = nx(G_CNT, "node_vmstat_pgpgin", NULL); /* KiB, in pages */
    setc(x, (int64_t)(1e8 * urand()), lrand(0.05, 3) * 15 * 2, 2, F_MUL, 1, 0.6);
    x->q = 4;
    x = nx(G_CNT, "node_vmstat_pgpgout", NULL);
    setc(x, (int64_t)(1e8 * urand()), lrand(1, 30) * 15 * 3, 3, F_MUL, 1, 0.6);
    x->q = 4;
    cnst(0, "node_vmstat_pswpin", NULL);
    cnst(0, "node_vmstat_pswpout", NULL);
    x = nx(G_CNT, "node_vmstat_pgfault", NULL);
    setc(x, (int64_t)(1e9 * urand()), lrand(1000, 20000) * 15, 20, F_INT, 1, 0.4);
    x = nx(G_CNT, "node_vmstat_pgmajfault", NULL);
    setc(x, (int64_t)(1e5 * urand()), 0.05, 1, F_INT, 1, 0);
    cnst(0, "node_vmstat_oom_kill", NULL);

    CUR_GROUP = "constants and info";
    x = nx(G_WALK, "node_filefd_allocated", NULL);
    setw(x, 1500 + (int64_t)(urand() * 2000), 0.5, 3, 500, 10000, F_INT, 1);
    cnst(9223372036854775807.0, "node_filefd_maximum", NULL);
    cnst(256, "node_entropy_available_bits", NULL); /* Linux >= 5.18: always 256 */
    cnst(256, "node_entropy_pool_size_bits", NULL);
    cnst(0, "node_time_zone_offset_seconds", "time_zone", "UTC", NULL);
    cnst(1, "node_time_clocksource_available_info", "clocksource", "kvm-clock", "device", "0", NULL);
    cnst(1, "node_time_clocksource_available_info", "clocksource", "tsc", "device", "0", NULL);
    cnst(1, "node_time_clocksource_current_info", "clocksource", "kvm-clock", "device", "0", NULL);
    cnst(1, "node_uname_info", "sysname", "Linux", "release", "6.8.0-49-generic", "machine", "x86_64", NULL);
    cnst(1, "node_os_info", "id", "ubuntu", "version_id", "24.04", NULL);
    cnst(24.04, "node_os_version", "id", "ubuntu", NULL);
    cnst(1, "node_selinux_enabled", NULL);
    cnst(0, "node_textfile_scrape_error", NULL);
    cnst(1, "node_exporter_build_info", "version", "1.8.2", "goversion", "go1.22.5", NULL);
    for (int i = 0; i < 4; i++)
        cnst(0, "node_udp_queues", "ip", i & 1 ? "v6" : "v4", "queue", i & 2 ? "tx" : "rx", NULL);
    CUR_GROUP = "time, timex";
    nx(G_TIME, "node_time_seconds", NULL);
    x = nx(G_WALK, "node_timex_offset_seconds", NULL);
    setw(x, 0, 1, 20000, -2000000, 2000000, F_NS, 1);
    x = nx(G_FWALK, "node_timex_frequency_adjustment_ratio", NULL);
    x->v = 1 + (urand() - 0.5) * 2e-5;
    x->p = 0.05;
    x->hist = 0; /* a ratio near 1 */
    x = nx(G_SAW, "node_timex_maxerror_seconds", NULL);
    x = nx(G_WALK, "node_timex_estimated_error_seconds", NULL);
    setw(x, 500, 0.05, 50, 0, 100000, F_US, 1);
    const char *tx0[] = {"node_timex_status", "node_timex_loop_time_constant", "node_timex_tick_seconds",
                         "node_timex_sync_status", "node_timex_tai_offset_seconds", "node_timex_pps_calibration_total",
                         "node_timex_pps_error_total", "node_timex_pps_frequency_hertz", "node_timex_pps_jitter_seconds",
                         "node_timex_pps_jitter_total", "node_timex_pps_shift_seconds", "node_timex_pps_stability_exceeded_total",
                         "node_timex_pps_stability_hertz"};
    double txv[] = {8193, 7, 0.01, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 13; i++) cnst(txv[i], tx0[i], NULL);

    CUR_GROUP = "pressure (us/1e6)";
    x = nx(G_CNT, "node_pressure_cpu_waiting_seconds_total", NULL);
    setc(x, (int64_t)(1e10 * urand()), ho->u0 * ho->u0 * 3e6, 1e3, F_US, 1, 0.5);
    x = nx(G_CNT, "node_pressure_io_waiting_seconds_total", NULL);
    setc(x, (int64_t)(1e10 * urand()), lrand(1e3, 1e5), 1e3, F_US, 1, 0.8);
    x = nx(G_CNT, "node_pressure_io_stalled_seconds_total", NULL);
    setc(x, (int64_t)(1e10 * urand()), lrand(5e2, 5e4), 1e3, F_US, 1, 0.8);
    x = nx(G_CNT, "node_pressure_memory_waiting_seconds_total", NULL);
    setc(x, (int64_t)(1e6 * urand()), 0.5, 1, F_US, 0, 0);
    x = nx(G_CNT, "node_pressure_memory_stalled_seconds_total", NULL);
    setc(x, (int64_t)(1e6 * urand()), 0.3, 1, F_US, 0, 0);

    if (ho->docker) {
        CUR_GROUP = "netstat, sockstat, vmstat";
        x = nx(G_WALK, "node_nf_conntrack_entries", NULL);
        setw(x, 200, 0.6, 4, 10, 100000, F_INT, 1);
        cnst(262144, "node_nf_conntrack_entries_limit", NULL);
        const char *cs[] = {"found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop",
                            "search_restart"};
        for (int i = 0; i < 8; i++) {
            snprintf(mn, sizeof mn, "node_nf_conntrack_stat_%s", cs[i]);
            if (i == 1 || i == 2) {
                x = nx(G_CNT, mn, NULL);
                setc(x, (int64_t)(1e5 * urand()), i == 1 ? 0.2 : 3, 1, F_INT, 1, 0.3);
            } else {
                cnst(0, mn, NULL);
            }
        }
    }

    /* node_exporter's self-instrumentation */
    static const char *colls[] = {"arp", "bcache", "bonding", "btrfs", "conntrack", "cpu", "cpufreq", "diskstats",
                                  "dmi", "edac", "entropy", "fibrechannel", "filefd", "filesystem", "hwmon",
                                  "infiniband", "ipvs", "loadavg", "mdadm", "meminfo", "netclass", "netdev",
                                  "netstat", "nfs", "nfsd", "nvme", "os", "powersupplyclass", "pressure", "rapl",
                                  "schedstat", "selinux", "sockstat", "softnet", "stat", "tapestats", "textfile",
                                  "thermal_zone", "time", "timex", "udp_queues", "uname", "vmstat", "watchdog",
                                  "xfs", "zfs"};
    for (size_t i = 0; i < sizeof colls / sizeof *colls; i++) {
        CUR_GROUP = "scrape durations (ns/1e9)";
        x = nx(G_DUR, "node_scrape_collector_duration_seconds", "collector", colls[i], NULL);
        x->rate = lrand(2e4, 5e6); /* median ns */
        CUR_GROUP = "constants and info";
        cnst(1, "node_scrape_collector_success", "collector", colls[i], NULL);
    }
    CUR_GROUP = "go runtime, process";
    static const double qs[] = {0, 0.25, 0.5, 0.75, 1};
    static const char *qn[] = {"0", "0.25", "0.5", "0.75", "1"};
    for (int i = 0; i < 5; i++) {
        x = nx(G_FWALK, "go_gc_duration_seconds", "quantile", qn[i], NULL);
        x->rate = 2e4 + 2e5 * qs[i];
        x->v = (double)(int64_t)(x->rate * (1 + urand())) / 1e9;
        x->p = 0.4;
        x->hist = 1; /* a duration in ns / 1e9 */
    }
    x = nx(G_HSUM, "go_gc_duration_seconds_sum", NULL);
    x->rate = 0.5, x->unit = 1e-4, x->hist = -1;
    x = nx(G_CNT, "go_gc_duration_seconds_count", NULL);
    setc(x, (int64_t)(1e4 * urand()), 0.5, 1, F_INT, 0, 0);
    x = nx(G_WALK, "go_goroutines", NULL);
    setw(x, 8, 0.3, 1, 6, 14, F_INT, 1);
    cnst(1, "go_info", "version", "go1.22.5", NULL);
    x = nx(G_WALK, "go_threads", NULL);
    setw(x, 8 + ho->ncpu, 0.002, 1, 4, 40, F_INT, 1);
    static const char *gm[] = {"alloc_bytes", "alloc_bytes_total", "buck_hash_sys_bytes", "frees_total",
                               "gc_sys_bytes", "heap_alloc_bytes", "heap_idle_bytes", "heap_inuse_bytes",
                               "heap_objects", "heap_released_bytes", "heap_sys_bytes", "last_gc_time_seconds",
                               "lookups_total", "mallocs_total", "mcache_inuse_bytes", "mcache_sys_bytes",
                               "mspan_inuse_bytes", "mspan_sys_bytes", "next_gc_bytes", "other_sys_bytes",
                               "stack_inuse_bytes", "stack_sys_bytes", "sys_bytes"};
    for (int i = 0; i < 23; i++) {
        snprintf(mn, sizeof mn, "go_memstats_%s", gm[i]);
        if (i == 1 || i == 3 || i == 13) { /* allocation counters: every scrape allocates */
            x = nx(G_CNT, mn, NULL);
            setc(x, (int64_t)(1e10 * urand()), i == 1 ? 4e5 : 3500, i == 1 ? 120 : 1, F_INT, 0, 0.1);
        } else if (i == 11) {
            x = nx(G_FWALK, mn, NULL);
            x->v = 1764000000.123456789;
            x->p = 0.5;
            x->hist = 2; /* a UnixNano / 1e9 timestamp */
        } else if (i == 12) {
            cnst(0, mn, NULL);
        } else if (i == 0 || i == 5 || i == 6 || i == 7 || i == 8 || i == 16 || i == 18) { /* heap: noisy */
            x = nx(G_WALK, mn, NULL);
            setw(x, i == 8 ? 8000 : 3000000, 1, i == 8 ? 1500 : 2e5, 1000, 40000000, F_INT, 1);
        } else if (i == 20 || i == 21) {
            x = nx(G_WALK, mn, NULL);
            setw(x, 80, 0.2, 2, 32, 256, F_MUL, 8192);
        } else {
            x = nx(G_WALK, mn, NULL);
            setw(x, 2000000 + (int64_t)(urand() * 1e7), 0.01, 3000, 100000, 100000000, F_INT, 1);
        }
    }
    x = nx(G_CNT, "process_cpu_seconds_total", NULL);
    setc(x, (int64_t)(1e5 * urand()), 2, 1, F_DIV100, 0, 0);
    cnst(1048576, "process_max_fds", NULL);
    x = nx(G_WALK, "process_open_fds", NULL);
    setw(x, 9, 0.2, 1, 7, 12, F_INT, 1);
    x = nx(G_WALK, "process_resident_memory_bytes", NULL);
    setw(x, 5000, 0.5, 30, 3000, 8000, F_MUL, 4096);
    cnst(1764000000 + floor(urand() * 1e6) + 0.37, "process_start_time_seconds", NULL);
    x = nx(G_WALK, "process_virtual_memory_bytes", NULL);
    setw(x, 300000, 0.01, 64, 200000, 400000, F_MUL, 4096);
    cnst(18446744073709551615.0, "process_virtual_memory_max_bytes", NULL);
    x = nx(G_CNT, "process_network_receive_bytes_total", NULL);
    setc(x, (int64_t)(1e10 * urand()), netrate * 15, 700, F_INT, 1, 0.5);
    x = nx(G_CNT, "process_network_transmit_bytes_total", NULL);
    setc(x, (int64_t)(1e10 * urand()), netrate * 10, 700, F_INT, 1, 0.5);
    x = nx(G_CNT, "promhttp_metric_handler_requests_total", "code", "200", NULL);
    setc(x, (int64_t)(1e5 * urand()), 1, -1, F_INT, 0, 0); /* unit -1: exactly one per scrape */
    cnst(0, "promhttp_metric_handler_requests_total", "code", "500", NULL);
    cnst(0, "promhttp_metric_handler_requests_total", "code", "503", NULL);
    cnst(1, "promhttp_metric_handler_requests_in_flight", NULL);
    cnst(0, "promhttp_metric_handler_errors_total", "cause", "encoding", NULL);
    cnst(0, "promhttp_metric_handler_errors_total", "cause", "gathering", NULL);
    /* Prometheus's per-target series */
    cnst(1, "up", NULL);
    x = nx(G_DUR, "scrape_duration_seconds", NULL);
    x->rate = 3e7;
    x->group = "scrape durations (ns/1e9)";
    size_t nser = 0;
    for (size_t i = 0; i < NS; i++) nser += S[i].host == h;
    cnst((double)nser + 2, "scrape_samples_scraped", NULL);
    cnst((double)nser + 2, "scrape_samples_post_metric_relabeling", NULL);
    cnst(0, "scrape_series_added", NULL);

    /* one application histogram per host (job="app"): 2 handlers × 12 buckets + _sum + _count */
    CUR_GROUP = "histogram";
    static const char *les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"};
    static const char *hnd[] = {"/api", "/metrics"};
    char ainst[64];
    snprintf(ainst, sizeof ainst, "host-%03d:8080", h);
    for (int hd = 0; hd < 2; hd++) {
        double req = hd ? -1 : lrand(0.5, 50) * 15; /* /metrics: exactly one scrape per 15 s */
        for (int b = 0; b < 13; b++) {
            series *y;
            if (b < 12) y = nxa(G_BUCKET, ainst, "http_request_duration_seconds_bucket", "handler", hnd[hd], "le", les[b], NULL);
            else y = nxa(G_HCNT, ainst, "http_request_duration_seconds_count", "handler", hnd[hd], NULL);
            y->hist = hd;
            y->le = b;
            y->rate = req;
            y->diurnal = hd == 0;
        }
        series *y = nxa(G_HSUM, ainst, "http_request_duration_seconds_sum", "handler", hnd[hd], NULL);
        y->hist = hd;
        y->rate = req;
        y->diurnal = hd == 0;
    }
}

/* The bucket increments of histogram (h, hist) at scrape s: drawn from a private state seeded
 * by (host, histogram, scrape), so that every series of the histogram sees the same requests.
 * Latencies are log-normal (median 40 ms for /api, 3 ms for /metrics, σ = 1). */
static const double LE[12] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, INFINITY};
typedef struct hdraw {
    int host, hist;
    int64_t step;
    int64_t k[12];
    double sum;
} hdraw;
static hdraw HC = {-1, -1, -1, {0}, 0};

static int64_t hbinom(uint64_t *st, int64_t n, double p)
{
    if (n <= 0 || p <= 0) return 0;
    if (p >= 1) return n;
    if (n < 40) {
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++) k += hrand(st) < p;
        return k;
    }
    double x = n * p + sqrt(n * p * (1 - p)) * hnrand(st);
    int64_t k = (int64_t)llround(x);
    return k < 0 ? 0 : k > n ? n : k;
}

static const hdraw *hist_draw(const series *sr, int64_t s)
{
    if (HC.host == sr->host && HC.hist == sr->hist && HC.step == s) return &HC;
    uint64_t st = mix64(((uint64_t)sr->host << 48) ^ ((uint64_t)sr->hist << 40) ^ (uint64_t)s);
    int64_t n;
    if (sr->rate < 0) n = 1;
    else {
        double lam = sr->rate * (sr->diurnal ? H[sr->host].act[s] : 1);
        n = (int64_t)llround(lam + sqrt(lam) * hnrand(&st));
        if (n < 0) n = 0;
    }
    double med = sr->hist ? 0.003 : 0.04, prev = 0, left = 1, sum = 0;
    int64_t rem = n;
    for (int j = 0; j < 12; j++) {
        double F = isinf(LE[j]) ? 1 : 0.5 * erfc(-log(LE[j] / med) / M_SQRT2);
        double pj = F - prev;
        int64_t k = j == 11 ? rem : hbinom(&st, rem, left > 0 ? pj / left : 1);
        rem -= k;
        left -= pj;
        prev = F;
        HC.k[j] = k;
        double mid = j == 0 ? LE[0] / 2 : isinf(LE[j]) ? 15 : sqrt(LE[j] * LE[j - 1]);
        for (int64_t i = 0; i < k && i < 64; i++) sum += mid * exp(0.3 * hnrand(&st)); /* float64 sum of observations */
        if (k > 64) sum += mid * (double)(k - 64);
    }
    HC.host = sr->host;
    HC.hist = sr->hist;
    HC.step = s;
    HC.sum = sum;
    return &HC;
}

static double form_value(const series *x, int64_t iv)
{
    switch (x->form) {
    case F_DIV100: return (double)iv / 100.0;           /* USER_HZ ticks */
    case F_MS: return (double)iv * (1.0 / 1000.0);      /* node_exporter: ticks * secondsPerTick */
    case F_NS: return (double)iv / 1e9;                 /* Go: float64(ns) / 1e9 */
    case F_US: return (double)iv / 1e6;                 /* pressure: µs / 1e6 */
    case F_MUL: return (double)iv * (x->k == G_WALK ? x->unit : x->q);
    default: return (double)iv;
    }
}

/* The value of series x at scrape s (called for s = 0, 1, 2 … in order). */
static double next_node(series *x, int64_t s)
{
    host *ho = &H[x->host];
    double act = ho->act[s];
    switch (x->k) {
    case G_CONST: return x->v;
    case G_CNT:
    case G_IDLE: {
        if (x->arsd > 0) x->ar = 0.98 * x->ar + x->arsd * 0.199 * nrand(); /* √(1−0.98²) ≈ 0.199 */
        double lam = x->rate * (x->diurnal ? act : 1) * (x->arsd > 0 ? exp(x->ar) : 1);
        int64_t inc;
        if (x->unit < 0) inc = (int64_t)x->rate; /* exact (one scrape per scrape) */
        else inc = poisson(lam, x->unit);
        if (x->k == G_IDLE) { /* the rest of 1500 ticks, ± 1 tick of scrape-time jitter */
            inc = 1500 - (inc > 1500 ? 1500 : inc) + (int64_t)(urand() * 3) - 1;
            if (inc < 0) inc = 0;
        }
        x->iv += inc;
        return form_value(x, x->iv);
    }
    case G_WALK:
        if (urand() < x->p) {
            x->iv += (int64_t)llround(x->q * nrand());
            if (x->iv < x->lo) x->iv = x->lo;
            if (x->iv > x->hi) x->iv = x->hi;
        }
        return form_value(x, x->iv);
    case G_LOAD: {
        static const double tau[] = {60, 300, 900};
        double run = poisson(ho->ncpu * ho->u0 * act * 1.2, 1) + (urand() < 0.1);
        double e = exp(-15.0 / tau[x->hist]);
        x->v = x->v * e + run * (1 - e);
        return round(x->v * 100) / 100; /* /proc/loadavg has 2 decimals */
    }
    case G_PROCS: return (double)(1 + poisson(ho->ncpu * ho->u0 * act, 1));
    case G_DUR: {
        int64_t ns = (int64_t)(x->rate * exp(0.5 * nrand()));
        return (double)ns / 1e9;
    }
    case G_TIME: {
        int64_t ns = scrape_ts(x->host, s) * 1000000 + 1000000 + (int64_t)(urand() * 4e6);
        return (double)ns / 1e9; /* float64(now.UnixNano()) / 1e9 */
    }
    case G_SAW: /* timex maxerror: +500 µs per second, reset by each NTP update */
        x->iv = urand() < 0.1 ? 1000 + (int64_t)(urand() * 20000) : x->iv + 7500;
        return (double)x->iv / 1e6;
    case G_FWALK:
        if (urand() < x->p) {
            if (x->hist == 0) x->v *= 1 + 1e-7 * nrand();
            else if (x->hist == 1) x->v = (double)(int64_t)(x->rate * exp(0.5 * nrand())) / 1e9;
            else x->v = (double)(scrape_ts(x->host, s) * 1000000 - (int64_t)(urand() * 15e9)) / 1e9;
        }
        return x->v;
    case G_HSUM:
        if (x->hist < 0) { /* go_gc_duration_seconds_sum: GC pauses in ns / 1e9, summed */
            int64_t k = poisson(x->rate, 1);
            for (int64_t i = 0; i < k; i++) x->v += (double)(int64_t)(1e5 * exp(0.5 * nrand())) / 1e9;
            return x->v;
        }
        x->v += hist_draw(x, s)->sum;
        return x->v;
    case G_BUCKET:
    case G_HCNT: {
        const hdraw *d = hist_draw(x, s);
        int top = x->k == G_HCNT ? 11 : x->le;
        for (int j = 0; j <= top; j++) x->iv += d->k[j];
        return (double)x->iv;
    }
    }
    return 0;
}

/* ---- the "noisy" mix (the earlier generator, unchanged) ---- */

static void add(int k, double v0, double rate, const char *metric, const char *inst, ...)
{
    if (NS == CAP) {
        CAP = CAP ? CAP * 2 : 1024;
        S = realloc(S, CAP * sizeof *S);
        if (!S) exit(1);
    }
    series *s = &S[NS++];
    memset(s, 0, sizeof *s);
    s->k = k;
    s->group = k == K_CPU ? "cpu seconds (ticks/100)" : k == K_CNT ? "byte/packet counters (white noise)" :
               k == K_MEM ? "memory/filesystem gauges" : k == K_LOAD ? "load gauges" :
               k == K_CONST || k == K_TIME ? "constants, node_time_seconds" : k == K_BUCKET ? "histogram buckets" :
               "histogram _sum";
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

static void build_noisy(int hosts)
{
    static const char *modes[] = {"idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"};
    static const char *les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"};
    for (int h = 0; h < hosts; h++) {
        char inst[64], cpu[16];
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

static double next_noisy(series *s, int64_t t)
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


static int NOISY; /* OD_BENCH_MIX=noisy */

static void build_dataset(int hosts)
{
    if (NOISY) {
        build_noisy(hosts);
        return;
    }
    NH = hosts;
    H = calloc((size_t)hosts, sizeof *H);
    if (!H) exit(1);
    for (int h = 0; h < hosts; h++) build_host(h);
    HC.host = -1;
}

static void free_dataset(void)
{
    for (size_t i = 0; i < NS; i++) {
        od_labels_free(&S[i].ls);
        free(S[i].metric);
        free(S[i].json);
    }
    NS = 0;
    for (int h = 0; h < NH; h++) free(H[h].act);
    free(H);
    H = NULL;
    NH = 0;
}

/* Timestamp and value of scrape `step` of series x (steps in order per series). */
static int64_t sample_ts(const series *x, int64_t step) { return NOISY ? T0 + step * STEP : scrape_ts(x->host, step); }
static double next_value(series *x, int64_t step, int64_t ts) { return NOISY ? next_noisy(x, ts) : next_node(x, step); }

/* Per kind: bytes of one 2-hour chunk per series (480 samples, the codec's choice and plain
 * Gorilla XOR for comparison), on a fresh copy of the dataset; and the decode speed. */
static void kind_table(int hosts)
{
    enum { N = 480, MAXG = 32 };
    const char *gname[MAXG];
    size_t gser[MAXG] = {0}, ng = 0;
    uint64_t gbytes[MAXG] = {0}, gxor[MAXG] = {0};
    rng = 0x9e3779b97f4a7c15ULL;
    build_dataset(hosts);
    od_sample *buf = malloc(N * sizeof *buf);
    od_buf b = {0}, all = {0};
    size_t *off = malloc((NS + 1) * sizeof *off);
    if (!buf || !off) exit(1);
    for (size_t i = 0; i < NS; i++) {
        for (int64_t k = 0; k < N; k++) {
            int64_t ts = sample_ts(&S[i], k);
            buf[k] = (od_sample){ts, next_value(&S[i], k, ts)};
        }
        size_t g = 0;
        while (g < ng && strcmp(gname[g], S[i].group) != 0) g++;
        if (g == ng) {
            if (ng == MAXG) { fprintf(stderr, "too many groups\n"); exit(1); }
            gname[ng++] = S[i].group;
        }
        off[i] = all.len;
        if (od_chunk_encode(buf, N, &all)) exit(1);
        gbytes[g] += all.len - off[i];
        od_buf_reset(&b);
        if (od_chunk_encode_as(buf, N, -1, OD_CHUNK_V_XOR, &b)) exit(1);
        gxor[g] += b.len;
        gser[g]++;
    }
    off[NS] = all.len;
    uint64_t tb = 0, tx = 0;
    for (size_t g = 0; g < ng; g++) tb += gbytes[g], tx += gxor[g];
    printf("| kind (%s mix, one 2 h chunk per series, chunk value bytes only) | series | bytes/sample | share of bytes | XOR-only bytes/sample |\n|---|---|---|---|---|\n",
           NOISY ? "noisy" : "node");
    for (size_t g = 0; g < ng; g++)
        printf("| %s | %zu | %.3f | %.1f %% | %.3f |\n", gname[g], gser[g], (double)gbytes[g] / (gser[g] * (double)N),
               100.0 * gbytes[g] / tb, (double)gxor[g] / (gser[g] * (double)N));
    printf("| **all** | %zu | **%.3f** | 100 %% | %.3f |\n\n", NS, (double)tb / (NS * (double)N), (double)tx / (NS * (double)N));
    /* decode speed: every chunk, several rounds, thread CPU time */
    od_samplevec sv = {0};
    od_err e;
    double c0 = od_bench_thread_cpu_s();
    int rounds = 0;
    do {
        for (size_t i = 0; i < NS; i++) {
            sv.n = 0;
            if (od_chunk_decode(all.data + off[i], off[i + 1] - off[i], &sv, &e)) { fprintf(stderr, "decode: %s\n", e.msg); exit(1); }
        }
        rounds++;
    } while (od_bench_thread_cpu_s() - c0 < 1.0);
    double dc = od_bench_thread_cpu_s() - c0;
    printf("chunk decode: %.1f M samples/s (thread CPU, %d rounds over %zu chunks)\n\n", rounds * (double)NS * N / dc / 1e6, rounds, NS);
    const char *dump = getenv("OD_BENCH_DUMP"); /* the samples, for codec A/B programs */
    if (dump) {
        FILE *f = fopen(dump, "wb");
        rng = 0x9e3779b97f4a7c15ULL;
        free_dataset();
        build_dataset(hosts);
        for (size_t i = 0; f && i < NS; i++) {
            for (int64_t k = 0; k < N; k++) {
                int64_t ts = sample_ts(&S[i], k);
                buf[k] = (od_sample){ts, next_value(&S[i], k, ts)};
            }
            fwrite(buf, sizeof *buf, N, f);
        }
        if (f) fclose(f);
    }
    od_samplevec_free(&sv);
    od_buf_free(&b);
    od_buf_free(&all);
    free(off);
    free(buf);
    free_dataset();
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
    double t0 = od_bench_now_s(), c0 = od_bench_thread_cpu_s();
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
    *cpu = od_bench_thread_cpu_s() - c0;
    return od_bench_now_s() - t0;
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
    int hosts = getenv("OD_BENCH_HOSTS") ? atoi(getenv("OD_BENCH_HOSTS")) : 0; /* default per mix, below */
    int hours = getenv("OD_BENCH_HOURS") ? atoi(getenv("OD_BENCH_HOURS")) : 24;
    int bmin = getenv("OD_BENCH_BATCH_MIN") ? atoi(getenv("OD_BENCH_BATCH_MIN")) : 30;
    if (strncmp(uri, "file://", 7) != 0) {
        fprintf(stderr, "bench_tsdb: needs a file:// store (the SQL run opens it from the extension)\n");
        return 2;
    }
    const char *dir = uri + 7;
    NOISY = getenv("OD_BENCH_MIX") && strcmp(getenv("OD_BENCH_MIX"), "noisy") == 0;
    if (!NOISY && getenv("OD_BENCH_MIX") && strcmp(getenv("OD_BENCH_MIX"), "node") != 0) {
        fprintf(stderr, "bench_tsdb: OD_BENCH_MIX is node (default) or noisy\n");
        return 2;
    }
    if (hosts <= 0) hosts = NOISY ? 40 : 6; /* both ≈ 21–22 M samples in 24 h */
    STEPS = (int64_t)hours * 3600000 / STEP;
    kind_table(hosts);
    rng = 0x9e3779b97f4a7c15ULL;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.sqlite'", dir, dir);
    if (system(cmd)) return 1;
    build_dataset(hosts);
    int64_t steps = (int64_t)hours * 3600000 / STEP, per_batch = (int64_t)bmin * 60000 / STEP;
    uint64_t total = (uint64_t)NS * (uint64_t)steps;
    if (!NOISY) {
        printf("hosts (CPUs, Docker, series):");
        for (int h = 0; h < NH; h++) {
            size_t c = 0;
            for (size_t i = 0; i < NS; i++) c += S[i].host == h;
            printf(" %d/%s/%zu", H[h].ncpu, H[h].docker ? "docker" : "-", c);
        }
        printf("\n");
    }
    printf("dataset: %s mix, %d hosts, %zu series, %d h at 15 s = %lld samples/series, %llu samples; batches of %d min\n\n",
           NOISY ? "noisy" : "node", hosts, NS, hours, (long long)steps, (unsigned long long)total, bmin);

    /* ---- ingest through the engine API ---- */
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_tsdb *t;
    od_err e;
    if (od_tsdb_open(uri, &o, &t, &e)) { fprintf(stderr, "open: %s\n", e.msg); return 1; }
    long rss0 = od_bench_rss_kb();
    od_sample *buf = malloc(NS * (size_t)per_batch * sizeof *buf);
    od_series_in *in = malloc(NS * sizeof *in);
    double gen = 0, ing = 0;
    for (int64_t s0 = 0; s0 < steps; s0 += per_batch) {
        int64_t n = steps - s0 < per_batch ? steps - s0 : per_batch;
        double g0 = od_bench_now_s();
        for (size_t i = 0; i < NS; i++) {
            for (int64_t k = 0; k < n; k++) {
                int64_t ts = sample_ts(&S[i], s0 + k);
                buf[i * per_batch + k] = (od_sample){ts, next_value(&S[i], s0 + k, ts)};
            }
            in[i] = (od_series_in){&S[i].ls, buf + i * per_batch, (size_t)n};
        }
        double a0 = od_bench_now_s();
        gen += a0 - g0;
        if (od_tsdb_append(t, in, NS, 0, NULL, NULL, &e)) { fprintf(stderr, "append: %s\n", e.msg); return 1; }
        ing += od_bench_now_s() - a0;
    }
    double f0 = od_bench_now_s();
    if (od_tsdb_flush(t, &e)) { fprintf(stderr, "flush: %s\n", e.msg); return 1; }
    double flush_s = od_bench_now_s() - f0;
    long rss_peak = od_bench_peak_rss_kb();
    double c0 = od_bench_now_s();
    if (od_tsdb_compact(t, &e)) { fprintf(stderr, "compact: %s\n", e.msg); return 1; }
    double compact_s = od_bench_now_s() - c0;
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
    free_dataset();
    build_dataset(hosts);
    double s0t = od_bench_now_s();
    sqlite3_exec(sdb, "BEGIN", NULL, NULL, NULL);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(sdb, "INSERT INTO samples VALUES (?,?,?,?)", -1, &ins, NULL);
    for (int64_t s0 = 0; s0 < steps; s0 += per_batch) {
        int64_t n = steps - s0 < per_batch ? steps - s0 : per_batch;
        for (size_t i = 0; i < NS; i++)
            for (int64_t k = 0; k < n; k++) {
                int64_t ts = sample_ts(&S[i], s0 + k);
                sqlite3_bind_text(ins, 1, S[i].metric, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins, 2, S[i].json, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 3, ts);
                sqlite3_bind_double(ins, 4, next_value(&S[i], s0 + k, ts));
                sqlite3_step(ins);
                sqlite3_reset(ins);
            }
    }
    sqlite3_finalize(ins);
    sqlite3_exec(sdb, "COMMIT; CREATE INDEX samples_metric_ts ON samples(metric, ts, value);", NULL, NULL, NULL);
    double sqlite_load = od_bench_now_s() - s0t;
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
    double sum, q0 = od_bench_now_s();
    api_query(t, qm, lo, hi, &cnt, &sum);
    double api_cold = od_bench_now_s() - q0;
    uint64_t cold_req = requests(od_tsdb_db(t)) - r0;
    r0 = requests(od_tsdb_db(t));
    q0 = od_bench_now_s();
    api_query(t, qm, lo, hi, &cnt, &sum);
    double api_warm = od_bench_now_s() - q0;
    uint64_t warm_req = requests(od_tsdb_db(t)) - r0;
    uint64_t acnt;
    double asum;
    double api_all = 1e300, api_all_cpu = 1e300;
    for (int i = 0; i < 3; i++) {
        double cq0 = od_bench_thread_cpu_s();
        q0 = od_bench_now_s();
        api_query(t, NULL, INT64_MIN, INT64_MAX, &acnt, &asum);
        if (od_bench_now_s() - q0 < api_all) api_all = od_bench_now_s() - q0;
        if (od_bench_thread_cpu_s() - cq0 < api_all_cpu) api_all_cpu = od_bench_thread_cpu_s() - cq0;
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
    free_dataset();
    free(S);
    return ok ? 0 : 1;
}
