/*
 * test_tsdb_bgcompact.c — background compaction of TSDB chunk fragments (od_tsdb_options
 * compact_interval_ms / compact_fragments / compact_budget, od_tsdb_compact_step):
 *   - many small commits get merged without any explicit compaction call, and reader threads
 *     that query WHILE the writer commits and the background thread compacts always see
 *     exactly the state after some whole number of commits (values included: every commit
 *     also overwrites the previous sample, so a merge that got the fragment order wrong, lost
 *     a fragment or exposed half a merge would show);
 *   - one read view queried twice across compactions gives identical answers;
 *   - a pass is bounded by its budget and resumes where it stopped;
 *   - close stops the thread cleanly, and the data reads back exactly after reopen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "objstore/od_objstore.h"
#include "tsdb/tsdb_int.h"
#include "od_testutil.h"

#define NSERIES 16
#define STEP_MS 60000       /* one commit = one minute */
#define BUCKET_MS 3600000LL /* 60 commits per bucket */

static char uri[64];
static od_store *keep;
static od_db_options dbo;

static int setup(void **st)
{
    (void)st;
    keep = od_test_memstore_keep(uri, sizeof uri, "tsdb_bgc");
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    return od_test_memstore_drop(&keep);
}

static od_tsdb *open_t(int64_t interval_ms, uint64_t budget)
{
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 5;
    o.db = &dbo;
    o.bucket_ms = BUCKET_MS;
    o.compact_interval_ms = interval_ms;
    o.compact_fragments = 4;
    o.compact_budget = budget;
    return od_test_tsdb_open(uri, &o);
}

/* Commit k (1-based) writes, for every series s, t = (k-1)*STEP value expect(s, k-1, last)
 * and overwrites t = (k-2)*STEP with its final value. After K commits, sample i < K-1 has
 * final(s, i) and sample K-1 has first(s, K-1). */
static double first_v(int s, int64_t i) { return (double)(i * 100 + s); }
static double final_v(int s, int64_t i) { return (double)(i * 100 + s) + 0.5; }

static od_labels lsets[NSERIES];

static void make_labels(void)
{
    for (int s = 0; s < NSERIES; s++) {
        char v[16];
        snprintf(v, sizeof v, "%d", s);
        od_labels_reset(&lsets[s]);
        od_labels_add(&lsets[s], "__name__", "m");
        od_labels_add(&lsets[s], "s", v);
    }
}

static void free_labels(void)
{
    for (int s = 0; s < NSERIES; s++) od_labels_free(&lsets[s]);
}

static void commit(od_tsdb *t, int64_t k)
{
    od_series_in in[NSERIES];
    od_sample smp[NSERIES][2];
    for (int s = 0; s < NSERIES; s++) {
        size_t n = 0;
        if (k >= 2) smp[s][n++] = (od_sample){(k - 2) * STEP_MS, final_v(s, k - 2)};
        smp[s][n++] = (od_sample){(k - 1) * STEP_MS, first_v(s, k - 1)};
        in[s] = (od_series_in){&lsets[s], smp[s], n};
    }
    od_err e;
    int rc = od_tsdb_append(t, in, NSERIES, 0, NULL, NULL, &e);
    if (rc) fprintf(stderr, "append: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
}

/* Read every series through r; returns -1 and a message when the state is not exactly the
 * one after K commits for one K in [lo, hi], else that K. */
static int64_t check_view(od_tsdb_read *r, int64_t lo, int64_t hi, char *msg, size_t msz)
{
    od_err e;
    od_series_set *ss = NULL;
    if (od_tsdb_select(r, NULL, 0, INT64_MIN, INT64_MAX, &ss, &e)) {
        snprintf(msg, msz, "select: %.200s", e.msg);
        return -1;
    }
    int64_t K = -2;
    size_t nser = 0;
    const od_labels *ls;
    while (od_series_set_next(ss, &ls, &e) == OD_OK && ls) {
        int s = atoi(od_labels_get(ls, "s"));
        nser++;
        od_sample_iter *it;
        if (od_series_set_samples(ss, &it, &e)) {
            snprintf(msg, msz, "samples: %.200s", e.msg);
            K = -1;
            break;
        }
        int64_t n = 0;
        od_samplevec got = {0};
        while (od_sample_iter_valid(it)) {
            od_samplevec_push(&got, od_sample_iter_at(it));
            if (od_sample_iter_next(it, &e)) break;
        }
        od_sample_iter_free(it);
        n = (int64_t)got.n;
        if (K == -2) K = n;
        if (n != K) {
            snprintf(msg, msz, "series %d has %lld samples, another %lld (torn commit)", s, (long long)n, (long long)K);
            K = -1;
        }
        for (int64_t i = 0; K >= 0 && i < n; i++) {
            double want = i == n - 1 ? first_v(s, i) : final_v(s, i);
            if (got.v[i].t != i * STEP_MS || got.v[i].v != want) {
                snprintf(msg, msz, "series %d sample %lld of %lld: (%lld, %g), want (%lld, %g)", s, (long long)i,
                         (long long)n, (long long)got.v[i].t, got.v[i].v, (long long)(i * STEP_MS), want);
                K = -1;
            }
        }
        od_samplevec_free(&got);
        if (K < 0) break;
    }
    od_series_set_free(ss);
    if (K == -1) return -1;
    if (K == -2) K = 0;
    if (K > 0 && nser != NSERIES) {
        snprintf(msg, msz, "%zu series, want %d", nser, NSERIES);
        return -1;
    }
    if (K < lo || K > hi) {
        snprintf(msg, msz, "view shows %lld commits, expected within [%lld, %lld]", (long long)K, (long long)lo,
                 (long long)hi);
        return -1;
    }
    return K;
}

typedef struct reader {
    od_tsdb *t;
    int64_t committed; /* atomic: commits acknowledged so far */
    int stop;          /* atomic */
    long views, rechecked; /* atomic: views checked, and checked again after a pause */
    char fail[512];
} reader;

static void *reader_main(void *arg)
{
    reader *rd = arg;
    while (!__atomic_load_n(&rd->stop, __ATOMIC_ACQUIRE) && !rd->fail[0]) {
        int64_t lo = __atomic_load_n(&rd->committed, __ATOMIC_ACQUIRE);
        od_tsdb_read *r;
        od_err e;
        if (od_tsdb_read_open(rd->t, &r, &e)) {
            snprintf(rd->fail, sizeof rd->fail, "read_open: %.200s", e.msg);
            break;
        }
        /* commit hi+1 may be written but not yet counted */
        int64_t hi = __atomic_load_n(&rd->committed, __ATOMIC_ACQUIRE) + 1;
        int64_t K = check_view(r, lo, hi, rd->fail, sizeof rd->fail);
        if (K >= 0) {
            __atomic_add_fetch(&rd->views, 1, __ATOMIC_RELEASE);
            usleep(2000); /* let compaction and commits move on, then ask the SAME view again */
            int64_t K2 = check_view(r, K, K, rd->fail, sizeof rd->fail);
            if (K2 >= 0) __atomic_add_fetch(&rd->rechecked, 1, __ATOMIC_RELEASE);
        }
        od_tsdb_read_close(r);
    }
    return NULL;
}

static void stats_of(od_tsdb *t, od_tsdb_bucket_stats **st, size_t *n)
{
    od_tsdb_read *r;
    od_err e;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    assert_int_equal(od_tsdb_stats(r, st, n, &e), OD_OK);
    od_tsdb_read_close(r);
}

/* Non-head buckets hold one chunk per series; the head bucket fewer than
 * (compact_fragments + 1) per series (it was merged at least once). */
static int merged_enough(od_tsdb *t, int64_t commits)
{
    od_tsdb_bucket_stats *st;
    size_t n;
    stats_of(t, &st, &n);
    int ok = n == (size_t)((commits - 1) * STEP_MS / BUCKET_MS + 1);
    for (size_t i = 0; ok && i < n; i++) {
        if (st[i].series != NSERIES) ok = 0;
        else if (i + 1 < n) ok = st[i].chunks == NSERIES;
        else ok = st[i].chunks < NSERIES * 5;
    }
    free(st);
    return ok;
}

static void test_background_merges_while_reading(void **st)
{
    (void)st;
    make_labels();
    od_tsdb *t = open_t(10, 97); /* small budget: passes stop mid-bucket and resume */
    int64_t commits = (int64_t)(240 * od_test_scale());
    if (commits < 130) commits = 130; /* at least three buckets */
    reader rd[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&rd[i], 0, sizeof rd[i]);
        rd[i].t = t;
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    }
    for (int64_t k = 1; k <= commits; k++) {
        commit(t, k);
        for (int i = 0; i < 2; i++) __atomic_store_n(&rd[i].committed, k, __ATOMIC_RELEASE);
        if (k % 16 == 0) usleep(1000); /* give the compactor and the readers some turns */
        if (k == commits / 2) {         /* an explicit compaction never overlaps a pass */
            od_err e;
            assert_int_equal(od_tsdb_compact(t, &e), OD_OK);
        }
    }
    /* the background thread catches up without any explicit call (up to 30 s: a loaded
     * machine may not schedule it for a while); the readers go on meanwhile, and each must
     * have checked (and rechecked) at least one view before they stop: they are not stopped
     * before they have run, however late the scheduler lets them */
    int ok = 0, readers_ran = 0;
    const int64_t deadline = od_test_mono_ms() + 30000;
    for (;;) {
        if (!ok) ok = merged_enough(t, commits);
        readers_ran = 1;
        for (int i = 0; i < 2; i++)
            if (__atomic_load_n(&rd[i].rechecked, __ATOMIC_ACQUIRE) == 0) readers_ran = 0;
        if ((ok && readers_ran) || od_test_mono_ms() > deadline) break;
        usleep(10000);
    }
    for (int i = 0; i < 2; i++) {
        __atomic_store_n(&rd[i].stop, 1, __ATOMIC_RELEASE);
        pthread_join(th[i], NULL);
        if (rd[i].fail[0]) fprintf(stderr, "reader %d: %s\n", i, rd[i].fail);
        assert_string_equal(rd[i].fail, "");
        assert_true(rd[i].views > 0);
        assert_true(rd[i].rechecked > 0);
    }
    assert_true(ok);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_true(info.bg_passes > 0);
    assert_true(info.bg_merged > 0);
    char msg[512] = "";
    od_tsdb_read *r;
    od_err e;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    int64_t K = check_view(r, commits, commits, msg, sizeof msg);
    if (K < 0) fprintf(stderr, "%s\n", msg);
    assert_int_equal(K, commits);
    od_tsdb_read_close(r);
    /* close stops the thread; everything reads back after reopen */
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    t = open_t(10, 97);
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    K = check_view(r, commits, commits, msg, sizeof msg);
    if (K < 0) fprintf(stderr, "%s\n", msg);
    assert_int_equal(K, commits);
    od_tsdb_read_close(r);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    free_labels();
}

/* Without the thread (interval 0) nothing is merged by itself; od_tsdb_compact_step does one
 * bounded pass: it merges at most about a budget of fragments and resumes where it stopped. */
static void test_step_budget_and_resume(void **st)
{
    (void)st;
    make_labels();
    od_tsdb *t = open_t(0, 40);
    int64_t commits = 125; /* buckets 0 and 1 complete, bucket 2 is the head with 5 commits */
    for (int64_t k = 1; k <= commits; k++) commit(t, k);
    usleep(50000);
    od_tsdb_bucket_stats *s;
    size_t n;
    stats_of(t, &s, &n);
    assert_int_equal(n, 3);
    assert_true(s[0].chunks > NSERIES * 50); /* nothing merged by itself */
    free(s);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 3);
    od_err e;
    uint64_t merged, total = 0;
    int steps = 0;
    do {
        assert_int_equal(od_tsdb_compact_step(t, &merged, &e), OD_OK);
        /* a pass reads ≤ budget entries plus the rest of one series (≤ 61 fragments) */
        assert_true(merged <= 40 + 61);
        total += merged;
        steps++;
    } while (merged && steps < 1000);
    assert_true(steps > 5); /* the budget split the work */
    stats_of(t, &s, &n);
    assert_int_equal(n, 3);
    assert_int_equal(s[0].chunks, NSERIES);
    assert_int_equal(s[1].chunks, NSERIES);
    /* the head bucket holds 5 fragments per series (commits 121…125) ≥ compact_fragments (4):
     * merged too */
    assert_int_equal(s[2].chunks, NSERIES);
    uint64_t frags_before = (uint64_t)NSERIES * (60 + 1) * 2 + (uint64_t)NSERIES * 6; /* upper bound */
    assert_true(total <= frags_before);
    free(s);
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 0);
    char msg[512] = "";
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    int64_t K = check_view(r, commits, commits, msg, sizeof msg);
    if (K < 0) fprintf(stderr, "%s\n", msg);
    assert_int_equal(K, commits);
    od_tsdb_read_close(r);
    /* a head bucket with fewer than compact_fragments fragments per series waits */
    commit(t, commits + 1);
    assert_int_equal(od_tsdb_compact_step(t, &merged, &e), OD_OK);
    assert_int_equal(merged, 0);
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 1);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    free_labels();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_step_budget_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_merges_while_reading, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
