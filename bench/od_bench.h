/* bench/od_bench.h — small helpers every benchmark program uses: clocks, resident memory and
 * environment knobs. Header-only (static inline) so that each bench_*.c stays one file that
 * links against libodcore.a and the test support objects only.
 *
 *   od_bench_now_s()         wall clock (CLOCK_MONOTONIC), seconds
 *   od_bench_clock_s(c)      any clock_gettime clock, seconds
 *   od_bench_thread_cpu_s()  CPU time of the calling thread (robust on a shared machine)
 *   od_bench_proc_cpu_s()    user + system CPU time of the whole process (all threads)
 *   od_bench_rss_kb()        current resident set size (VmRSS), KiB
 *   od_bench_peak_rss_kb()   peak resident set size (ru_maxrss), KiB
 *   od_bench_env_long(n, d)  integer environment knob n, or d when unset/empty
 *   od_bench_sub_uri(u, s)   store URI u with "/s" appended to its path part (before any '?'),
 *                            malloc'd (NULL when out of memory) */
#ifndef OD_BENCH_H
#define OD_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double od_bench_clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double od_bench_now_s(void)
{
    return od_bench_clock_s(CLOCK_MONOTONIC);
}

static inline double od_bench_thread_cpu_s(void)
{
    return od_bench_clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static inline double od_bench_proc_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static inline long od_bench_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static inline long od_bench_peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static inline long od_bench_env_long(const char *name, long def)
{
    const char *s = getenv(name);
    return s && *s ? atol(s) : def;
}

static inline char *od_bench_sub_uri(const char *uri, const char *sub)
{
    const char *q = strchr(uri, '?');
    size_t loc = q ? (size_t)(q - uri) : strlen(uri);
    size_t n = strlen(uri) + strlen(sub) + 2;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%.*s/%s%s", (int)loc, uri, sub, q ? q : "");
    return r;
}

#endif
