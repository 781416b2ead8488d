/*
 * test_tsdb_bgcompact_reopen.c — background compaction finds the chunk fragments that an
 * EARLIER process left behind (the 'D' bucket work records, docs/formats.md):
 *   - a writer without background compaction writes small commits into several buckets and
 *     closes; a new writer opened on the store lists those buckets as dirty at once and its
 *     background thread merges them, although nothing is written to them again; the data
 *     (values bit for bit, stale markers included) is identical before and after, and after
 *     a further reopen no work is left;
 *   - one explicit od_tsdb_compact_step on the reopened writer merges exactly the fragments
 *     that were left (fragments − series per bucket);
 *   - od_tsdb_compact clears the work records: a writer opened after it has nothing to do;
 *   - appends racing with the background merge leave no bucket with fragments but no record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "objstore/od_objstore.h"
#include "tsdb/tsdb_int.h"
#include "od_testutil.h"

#define NSERIES 8
#define NBUCKETS 3
#define BUCKET_MS 3600000LL

static char uri[64];
static od_store *keep;
static od_db_options dbo;

static int setup(void **st)
{
    (void)st;
    keep = od_test_memstore_keep(uri, sizeof uri, "tsdb_bgcr");
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    return od_test_memstore_drop(&keep);
}

static od_tsdb *open_t(int64_t interval_ms)
{
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 5;
    o.db = &dbo;
    o.bucket_ms = BUCKET_MS;
    o.compact_interval_ms = interval_ms;
    o.compact_fragments = 4;
    return od_test_tsdb_open(uri, &o);
}

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* Commit k writes, for every series, one sample into each of the NBUCKETS buckets (so one
 * fragment per series per bucket). Some values are stale markers, NaN and ±Inf. */
static void commit(od_tsdb *t, int k)
{
    od_labels ls[NSERIES];
    od_series_in in[NSERIES];
    od_sample smp[NSERIES][NBUCKETS];
    memset(ls, 0, sizeof ls);
    for (int s = 0; s < NSERIES; s++) {
        char v[16];
        snprintf(v, sizeof v, "%d", s);
        od_labels_add(&ls[s], "__name__", "m");
        od_labels_add(&ls[s], "s", v);
        for (int b = 0; b < NBUCKETS; b++) {
            double val = k * 10.0 + s + b * 0.25;
            if ((k + s) % 7 == 0) val = bits_to_double(OD_STALE_NAN_BITS);
            else if ((k + s) % 11 == 0) val = bits_to_double(OD_NORMAL_NAN_BITS);
            else if ((k + s) % 13 == 0) val = (s & 1) ? -INFINITY : INFINITY;
            smp[s][b] = (od_sample){b * BUCKET_MS + k * 1000, val};
        }
        in[s] = (od_series_in){&ls[s], smp[s], NBUCKETS};
    }
    od_err e;
    int rc = od_tsdb_append(t, in, NSERIES, 0, NULL, NULL, &e);
    if (rc) fprintf(stderr, "append: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
    for (int s = 0; s < NSERIES; s++) od_labels_free(&ls[s]);
}

/* Everything readable, as bytes: per series its text form, then (t, value bits) per sample. */
static void dump(od_tsdb *t, od_buf *out)
{
    od_err e;
    od_tsdb_read *r;
    od_series_set *ss = NULL;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    assert_int_equal(od_tsdb_select(r, NULL, 0, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    const od_labels *ls;
    while (od_series_set_next(ss, &ls, &e) == OD_OK && ls) {
        assert_int_equal(od_labels_format(ls, out), OD_OK);
        od_sample_iter *it;
        assert_int_equal(od_series_set_samples(ss, &it, &e), OD_OK);
        while (od_sample_iter_valid(it)) {
            od_sample x = od_sample_iter_at(it);
            uint64_t bits;
            memcpy(&bits, &x.v, sizeof bits);
            assert_int_equal(od_buf_append(out, &x.t, sizeof x.t), OD_OK);
            assert_int_equal(od_buf_append(out, &bits, sizeof bits), OD_OK);
            assert_int_equal(od_sample_iter_next(it, &e), OD_OK);
        }
        od_sample_iter_free(it);
    }
    od_series_set_free(ss);
    od_tsdb_read_close(r);
}

/* Sum of chunks over buckets; *all_merged = every bucket holds one chunk per series. */
static uint64_t chunks_of(od_tsdb *t, int *all_merged)
{
    od_err e;
    od_tsdb_read *r;
    od_tsdb_bucket_stats *st;
    size_t n;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    assert_int_equal(od_tsdb_stats(r, &st, &n, &e), OD_OK);
    od_tsdb_read_close(r);
    assert_int_equal(n, NBUCKETS);
    uint64_t c = 0;
    *all_merged = 1;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(st[i].series, NSERIES);
        c += st[i].chunks;
        if (st[i].chunks != NSERIES) *all_merged = 0;
    }
    free(st);
    return c;
}

static int ncommits(void)
{
    int k = (int)(12 * od_test_scale());
    return k < 5 ? 5 : k;
}

/* Fragments of a writer without background compaction; returns the dump. */
static void write_fragments(od_buf *before)
{
    od_tsdb *t = open_t(0);
    for (int k = 1; k <= ncommits(); k++) commit(t, k);
    int merged;
    assert_int_equal(chunks_of(t, &merged), (uint64_t)NBUCKETS * NSERIES * (uint64_t)ncommits());
    assert_false(merged);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, NBUCKETS);
    dump(t, before);
    od_err e;
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

static void test_background_merges_fragments_of_earlier_process(void **st)
{
    (void)st;
    od_buf before = {0}, after = {0};
    write_fragments(&before);
    /* a new writer with background compaction, never writing */
    od_tsdb *t = open_t(20);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, NBUCKETS); /* found at open */
    /* wait (up to 30 s: a loaded machine may not schedule the thread for a while) for the
     * merge, the work list to empty and the counters to settle */
    const uint64_t want = (uint64_t)NBUCKETS * NSERIES * (uint64_t)(ncommits() - 1);
    int merged = 0;
    const int64_t deadline = od_test_mono_ms() + 30000;
    for (;;) {
        chunks_of(t, &merged);
        od_tsdb_get_info(t, &info);
        if (merged && info.dirty_buckets == 0 && info.bg_merged == want) break;
        if (od_test_mono_ms() > deadline) break;
        usleep(10000);
    }
    assert_true(merged);
    assert_int_equal(info.dirty_buckets, 0);
    assert_int_equal(info.bg_merged, want);
    dump(t, &after);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    od_err e;
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    /* reopened: nothing left to do, data still identical */
    t = open_t(0);
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 0);
    od_buf_reset(&after);
    dump(t, &after);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    od_buf_free(&before);
    od_buf_free(&after);
}

static void test_step_merges_fragments_of_earlier_process(void **st)
{
    (void)st;
    od_buf before = {0}, after = {0};
    write_fragments(&before);
    od_tsdb *t = open_t(0); /* no thread: the step below is the only compaction */
    uint64_t m = 0;
    od_err e;
    assert_int_equal(od_tsdb_compact_step(t, &m, &e), OD_OK);
    assert_int_equal(m, (uint64_t)NBUCKETS * NSERIES * (uint64_t)(ncommits() - 1));
    int merged;
    assert_int_equal(chunks_of(t, &merged), (uint64_t)NBUCKETS * NSERIES);
    assert_true(merged);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 0);
    dump(t, &after);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    /* a second step finds nothing */
    assert_int_equal(od_tsdb_compact_step(t, &m, &e), OD_OK);
    assert_int_equal(m, 0);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    od_buf_free(&before);
    od_buf_free(&after);
}

static void test_explicit_compact_clears_work(void **st)
{
    (void)st;
    od_buf before = {0};
    write_fragments(&before);
    od_tsdb *t = open_t(0);
    od_err e;
    assert_int_equal(od_tsdb_compact(t, &e), OD_OK);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    t = open_t(0);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, 0);
    int merged;
    assert_int_equal(chunks_of(t, &merged), (uint64_t)NBUCKETS * NSERIES);
    /* new writes are tracked again, and found by the next writer */
    commit(t, 100);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    t = open_t(0);
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.dirty_buckets, NBUCKETS);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    od_buf_free(&before);
}

/* Appends racing with the background merge (which deletes a bucket's 'D' record when nothing
 * was written to the bucket since its round began): after the writer closes, every bucket that
 * still holds fragments must have its record, so that a new writer's compaction steps, which
 * only visit recorded buckets, leave one chunk per series everywhere. */
static void test_race_leaves_no_unrecorded_fragments(void **st)
{
    (void)st;
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 5;
    o.db = &dbo;
    o.bucket_ms = BUCKET_MS;
    o.compact_interval_ms = 1;
    o.compact_fragments = 1; /* the newest bucket is merged eagerly too */
    od_tsdb *t = NULL;
    od_err e;
    assert_int_equal(od_tsdb_open(uri, &o, &t, &e), OD_OK);
    int rounds = (int)(300 * od_test_scale());
    od_tsdb_info info;
    int64_t deadline = od_test_mono_ms() + 30000;
    /* at least `rounds` batches, and on until the merge thread has merged something (a
     * loaded machine may not schedule it during the first few hundred commits). k stays
     * below BUCKET_MS / 1000 so every sample stays in its bucket: past MAXK the writer only
     * waits (up to the deadline) for the merge thread, which still has work then. */
    enum { MAXK = 3000 };
    for (int k = 1;; k++) {
        if (k <= MAXK) commit(t, k);
        else usleep(2000);
        if (k % 3 == 0) usleep(500); /* let the merge catch some batches mid-round */
        if (k < rounds) continue;
        od_tsdb_get_info(t, &info);
        if (info.bg_merged > 0 || od_test_mono_ms() > deadline) break;
    }
    assert_true(info.bg_merged > 0); /* the race was exercised */
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    t = open_t(0);
    uint64_t m = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(od_tsdb_compact_step(t, &m, &e), OD_OK);
        od_tsdb_get_info(t, &info);
        if (m == 0 && info.dirty_buckets == 0) break;
    }
    int merged;
    chunks_of(t, &merged);
    assert_true(merged);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_step_merges_fragments_of_earlier_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_merges_fragments_of_earlier_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_compact_clears_work, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race_leaves_no_unrecorded_fragments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
