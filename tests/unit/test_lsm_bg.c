/*
 * test_lsm_bg.c — the storage engine's background work (issue #3): flushes beside a long
 * compaction, retried L0 flushes, bounded compaction outputs, pruning of expired checkpoints.
 *
 *   flush_during_compaction: a background compaction is held in the middle (its compaction
 *     filter blocks) while a writer thread writes many times the back-pressure bound; the
 *     memtables must still reach L0 (the flush worker is not the compaction worker), the
 *     writes complete while the compaction is held, and after it is released every key reads.
 *   flush_retry: the first sst/ PUTs of the background L0 flush fail (OD_TRANSIENT) through a
 *     scripted store wrapper; the flush is retried with backoff, no error reaches the writers,
 *     everything reads back and reaches L0.
 *   flush_retry_landed: the first L0 commit lands but its answer is lost (OD_TRANSIENT); the
 *     retried flush sees that L0 already holds the memtable and does not add it twice.
 *   flush_permanent: sst/ PUTs fail with OD_AUTH (not retryable): the error surfaces to the
 *     writers at once, naming the L0 flush; with OD_TRANSIENT forever and flush_retry_ms=200
 *     it surfaces after the retry budget, saying how often it was tried.
 *   output_split: compaction_output_bytes = 64 KiB cuts the output run into collections of
 *     about that size (none larger than the bound plus one block's slack).
 *   compaction_retry: a compaction failing on store trouble after two recorded outputs is
 *     resumed by the handle's next run, keeping those two collections (same ids) and writing
 *     only the rest.
 *   ckpt_prune: an expired checkpoint is pruned from the manifest by GC, and the collection
 *     only it pinned is deleted; an unexpired one stays. Expiry is judged like GC judges it
 *     (the manifest's expire_ms against the wall clock); a machine too slow to run the first
 *     GC pass inside a 1 s lifetime repeats the round with 4 s, then 16 s.
 *
 * Waits on background work are on conditions with deadlines of tens of seconds, never on a
 * fixed time, so a slow loaded machine (ASan, 2 cores) is as good as a fast one.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_testutil.h"
#include "od_objstore_impl.h"

static void check_range_at(od_db *db, int from, int to, int line)
{
    od_err err;
    char k[32];
    int bad = from;
    if (od_lsmtest_check_range(db, from, to, &bad, &err)) {
        od_lsmtest_key(bad, k, sizeof k);
        fail_msg("line %d: %s unreadable: %s", line, k, err.msg);
    }
}
#define check_range(db, a, b) check_range_at(db, a, b, __LINE__)

/* ---------------- flush_during_compaction ---------------- */

struct writer {
    od_db *db;
    int from, to;
    pthread_mutex_t mu;
    int done, rc;
    od_err err;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    od_err e;
    int rc = od_lsmtest_write_range(w->db, w->from, w->to, 100, &e);
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    w->rc = rc;
    w->err = e;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void test_flush_during_compaction(void **state)
{
    (void)state;
    od_err err;
    od_holdfilter h = OD_HOLDFILTER_INIT;
    od_db_options o;
    od_db_options_init(&o);
    o.memtable_bytes = 32u << 10;
    o.l0_compaction_trigger = 2;
    o.l0_max_tables = 1000; /* not the L0 bound under test here (test_lsm_l0_bound): the flush worker */
    o.gc_interval_ms = 0;
    o.flush_interval_ms = 2;
    o.compaction_filter = od_holdfilter_fn;
    o.compaction_filter_ctx = &h;
    od_db *db;
    assert_int_equal(od_db_open("mem://lsm-bg-flush-during", &o, &db, &err), OD_OK);
    /* two L0 collections: the background compaction starts and blocks in the filter */
    assert_int_equal(od_lsmtest_write_range(db, 0, 200, 100, &err), OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_lsmtest_write_range(db, 200, 400, 100, &err), OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_true(od_holdfilter_wait(&h, 30000));

    /* ~2 MiB of writes: 60+ memtables of 32 KiB, far beyond the 8 immutable memtables at
     * which writers stall, all while the compaction is held */
    int n = 400 + (int)(16000 * od_test_scale());
    struct writer w = {db, 400, n, PTHREAD_MUTEX_INITIALIZER, 0, 0, {0}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_thread, &w), 0);
    int64_t deadline = od_test_mono_ms() + 30000;
    int done = 0;
    while (!done && od_test_mono_ms() < deadline) {
        od_test_sleep_ms(5);
        pthread_mutex_lock(&w.mu);
        done = w.done;
        pthread_mutex_unlock(&w.mu);
    }
    /* the writer got ~60 memtables (~15 at OD_TEST_SCALE=0.25) past the 8 that may wait:
     * flushes happened; wait (still held) until ten are in L0, however slow the machine */
    od_db_stats st;
    od_db_get_stats(db, &st);
    while (done && st.memtable_flushes < 10 && od_test_mono_ms() < deadline + 30000) {
        od_test_sleep_ms(5);
        od_db_get_stats(db, &st);
    }
    int still_held = od_holdfilter_release(&h); /* in any case, so a failure does not hang */
    pthread_join(th, NULL);
    if (!done) fail_msg("writers stalled while a compaction was held (l0 %llu, memtable flushes %llu)",
                        (unsigned long long)st.l0_count, (unsigned long long)st.memtable_flushes);
    if (w.rc) fail_msg("write failed: %s", w.err.msg);
    assert_true(still_held);
    assert_int_equal(st.compactions, 0);   /* the compaction really was held throughout */
    assert_true(st.l0_count >= 10);        /* and the memtables went to L0 meanwhile */
    assert_true(st.memtable_flushes >= 10);
    check_range(db, 0, n);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    od_db_get_stats(db, &st);
    assert_int_equal(st.l0_count, 0);
    assert_true(st.compactions >= 1);
    check_range(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
}

/* ---------------- a scripted store: fail sst/ PUTs ---------------- */

typedef struct failstore {
    od_store base;
    od_store *inner;
    pthread_mutex_t mu;
    int skip;      /* sst/ PUTs to let through before failing */
    int fail_left; /* sst/ PUTs still to fail; -1 = all */
    int fail_code;
    int failed, sst_puts_ok;
    int amb_manifest; /* manifest/ PUTs still to execute and then report OD_TRANSIENT */
} failstore;

static int f_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    return od_store_get(((failstore *)s)->inner, key, out, meta, err);
}
static int f_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    return od_store_get_range(((failstore *)s)->inner, key, off, len, out, err);
}
static int f_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    return od_store_head(((failstore *)s)->inner, key, meta, err);
}
static int f_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    failstore *f = (failstore *)s;
    if (strncmp(key, "sst/", 4) == 0) {
        pthread_mutex_lock(&f->mu);
        int fail = f->skip == 0 && f->fail_left != 0;
        if (f->skip > 0)
            f->skip--;
        else if (f->fail_left > 0)
            f->fail_left--;
        if (fail) f->failed++;
        int code = f->fail_code;
        pthread_mutex_unlock(&f->mu);
        if (fail) return od_err_set(err, code, "scripted: %s of %s refused", od_code_name(code), key);
    }
    int rc = od_store_put(f->inner, key, data, len, mode, etag, meta_out, err);
    if (rc == OD_OK && strncmp(key, "manifest/", 9) == 0) {
        pthread_mutex_lock(&f->mu);
        int amb = f->amb_manifest > 0;
        if (amb) f->amb_manifest--;
        pthread_mutex_unlock(&f->mu);
        if (amb) return od_err_set(err, OD_TRANSIENT, "scripted: %s landed, answer lost", key);
    }
    if (rc == OD_OK && strncmp(key, "sst/", 4) == 0) {
        pthread_mutex_lock(&f->mu);
        f->sst_puts_ok++;
        pthread_mutex_unlock(&f->mu);
    }
    return rc;
}
static int f_del(od_store *s, const char *key, od_err *err)
{
    return od_store_delete(((failstore *)s)->inner, key, err);
}
static int f_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    return od_store_list(((failstore *)s)->inner, prefix, start_after, cb, ctx, err);
}
static void f_close(od_store *s)
{
    failstore *f = (failstore *)s;
    od_store_close(f->inner);
    pthread_mutex_destroy(&f->mu);
    od_store_destroy_base(s);
    free(f);
}
static const od_store_ops fail_ops = {f_get, f_get_range, f_head, f_put, f_del, f_list, f_close};

static failstore *failstore_open(const char *uri, int fail_left, int code)
{
    failstore *f = calloc(1, sizeof *f);
    assert_non_null(f);
    od_err err;
    assert_int_equal(od_store_open(uri, &f->inner, &err), OD_OK);
    od_store_init_base(&f->base, &fail_ops, "failstore");
    od_store_set_retry(&f->base, 1, 0, 0); /* every scripted failure reaches the engine */
    pthread_mutex_init(&f->mu, NULL);
    f->fail_left = fail_left;
    f->fail_code = code;
    return f;
}

static void bg_opts(od_db_options *o)
{
    od_db_options_init(o);
    o->memtable_bytes = 32u << 10;
    o->compactor = 0;
    o->gc_interval_ms = 0;
    o->flush_interval_ms = 2;
}

/* Wait until the background flushes have emptied the immutable memtables into L0. */
static int wait_l0(od_db *db, uint64_t want_flushes, int ms)
{
    int64_t deadline = od_test_mono_ms() + ms;
    od_db_stats st;
    do {
        od_db_get_stats(db, &st);
        if (st.memtable_flushes >= want_flushes) return 1;
        od_test_sleep_ms(5);
    } while (od_test_mono_ms() < deadline);
    return 0;
}

static void test_flush_retry(void **state)
{
    (void)state;
    od_err err;
    failstore *f = failstore_open("mem://lsm-bg-retry", 3, OD_TRANSIENT);
    od_db_options o;
    bg_opts(&o);
    od_db *db;
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    /* > one memtable: a rotation hands it to the flush worker, whose first PUTs fail */
    assert_int_equal(od_lsmtest_write_range(db, 0, 1000, 50, &err), OD_OK);
    assert_true(wait_l0(db, 1, 30000));
    /* no error reached the writers: they go on, and wait for durability fine */
    assert_int_equal(od_lsmtest_write_range(db, 1000, 1200, 50, &err), OD_OK);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    od_batch_free(b);
    pthread_mutex_lock(&f->mu);
    int failed = f->failed, ok = f->sst_puts_ok;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(failed, 3); /* the scripted failures really hit the flush */
    assert_true(ok >= 1);
    check_range(db, 0, 1200);
    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_true(st.l0_count >= 1);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    /* and it is all in the store */
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    check_range(db, 0, 1200);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(&f->base);
}

/* The L0 commit lands but its answer is lost: the retried flush recognises it (one L0
 * collection, not two copies of the memtable). */
static void test_flush_retry_landed(void **state)
{
    (void)state;
    od_err err;
    failstore *f = failstore_open("mem://lsm-bg-landed", 0, OD_TRANSIENT);
    od_db_options o;
    bg_opts(&o);
    od_db *db;
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    pthread_mutex_lock(&f->mu);
    f->amb_manifest = 1; /* the next manifest commit: the first L0 flush */
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(od_lsmtest_write_range(db, 0, 400, 50, &err), OD_OK); /* > one 32 KiB memtable */
    assert_true(wait_l0(db, 1, 30000));
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK); /* the rest, so the counts settle */
    od_db_stats st;
    od_db_get_stats(db, &st);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->amb_manifest, 0);                          /* the lost answer happened */
    assert_int_equal(f->sst_puts_ok, (int)st.memtable_flushes + 1); /* one flush was redone ... */
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(st.l0_count, st.memtable_flushes); /* ... but each memtable is in L0 once */
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(od_db_store(db), 0, &m, &err), OD_OK);
    assert_int_equal(m.nl0, st.memtable_flushes);
    od_manifest_free(&m);
    check_range(db, 0, 400);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(&f->base);
}

/* Write until a write fails (the sticky background error), at most `ms`. */
static int write_until_error(od_db *db, int ms, od_err *err)
{
    int64_t deadline = od_test_mono_ms() + ms;
    int i = 0;
    while (od_test_mono_ms() < deadline) {
        int rc = od_lsmtest_write_range(db, i, i + 50, 50, err);
        if (rc) return rc;
        i += 50;
        if (i > 5000) {
            i = 0;
            od_test_sleep_ms(2);
        }
    }
    return OD_OK;
}

static void test_flush_permanent(void **state)
{
    (void)state;
    od_err err;
    /* not retryable: surfaces at once */
    failstore *f = failstore_open("mem://lsm-bg-perm", -1, OD_AUTH);
    od_db_options o;
    bg_opts(&o);
    od_db *db;
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    int64_t t0 = od_test_mono_ms();
    int rc = write_until_error(db, 30000, &err);
    assert_int_equal(rc, OD_AUTH);
    /* "at once": well inside the default retry budget (flush_retry_ms 60000) that a retryable
     * failure would use up first; f->failed == 1 below says it was not retried at all */
    assert_true(od_test_mono_ms() - t0 < 30000);
    assert_non_null(strstr(err.msg, "L0 flush failed"));
    assert_non_null(strstr(err.msg, "scripted"));
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->failed, 1); /* tried once, not retried */
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(od_db_close(db, &err), OD_AUTH);
    od_store_close(&f->base);

    /* retryable, but for longer than flush_retry_ms: surfaces after the budget */
    f = failstore_open("mem://lsm-bg-perm2", -1, OD_TRANSIENT);
    o.flush_retry_ms = 200;
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    t0 = od_test_mono_ms();
    rc = write_until_error(db, 30000, &err);
    int64_t took = od_test_mono_ms() - t0;
    assert_int_equal(rc, OD_TRANSIENT);
    assert_true(took >= 150);
    const char *times = strstr(err.msg, "L0 flush failed ");
    assert_non_null(times);
    assert_non_null(strstr(err.msg, "flush_retry_ms 200"));
    /* retried before giving up (the attempts in the budget: 5 with backoff 20, 40, 80 ms on an
     * idle machine, at least 2 however late the flush worker runs), and the message counts
     * exactly the attempts the store saw */
    int attempts = atoi(times + strlen("L0 flush failed "));
    pthread_mutex_lock(&f->mu);
    int failed = f->failed;
    pthread_mutex_unlock(&f->mu);
    assert_true(failed >= 2);
    assert_int_equal(attempts, failed);
    assert_int_equal(od_db_close(db, &err), OD_TRANSIENT);
    od_store_close(&f->base);
}

/* ---------------- output_split ---------------- */

static void test_output_split(void **state)
{
    (void)state;
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.flush_interval_ms = 2;
    o.compaction_output_bytes = 64u << 10;
    od_db *db;
    assert_int_equal(od_db_open("mem://lsm-bg-split", &o, &db, &err), OD_OK);
    int n = 8000;
    for (int r = 0; r < 4; r++) {
        assert_int_equal(od_lsmtest_write_range(db, r * n / 4, (r + 1) * n / 4, 100, &err), OD_OK);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(od_db_store(db), 0, &m, &err), OD_OK);
    assert_int_equal(m.nl0, 0);
    assert_int_equal(m.nruns, 1);
    assert_false(m.has_job);
    uint64_t total = 0;
    for (size_t i = 0; i < m.runs[0].n; i++) {
        const od_sst_desc *d = &m.runs[0].ssts[i];
        total += d->size;
        /* cut at the first key boundary past 64 KiB: one block + index/filter/footer slack */
        assert_true(d->size <= (64u << 10) + 16384 + 8192);
        /* ... and not before it (the size estimate counts the open block uncompressed) */
        if (i + 1 < m.runs[0].n) assert_true(d->size >= (64u << 10) - 16384);
        if (i) assert_true(memcmp(m.runs[0].ssts[i - 1].max_key, d->min_key, d->min_klen) < 0);
    }
    assert_true(m.runs[0].n >= (size_t)(total / ((64u << 10) + 24576)));
    assert_true(m.runs[0].n >= 5);
    od_manifest_free(&m);
    check_range(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
}

/* ---------------- compaction_retry ---------------- */

/* A compaction that fails on store trouble after recording outputs is resumed by the same
 * handle's next run: the recorded outputs are kept (same ids), only the rest is rewritten. */
static void test_compaction_retry(void **state)
{
    (void)state;
    od_err err;
    failstore *f = failstore_open("mem://lsm-bg-cretry", 0, OD_TRANSIENT);
    od_db_options o;
    bg_opts(&o);
    o.memtable_bytes = 64u << 20;
    o.compaction_output_bytes = 64u << 10;
    od_db *db;
    assert_int_equal(od_db_open_store(&f->base, &o, &db, &err), OD_OK);
    int n = 8000;
    for (int r = 0; r < 4; r++) {
        assert_int_equal(od_lsmtest_write_range(db, r * n / 4, (r + 1) * n / 4, 100, &err), OD_OK);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    pthread_mutex_lock(&f->mu);
    f->skip = 2;      /* two outputs go through and are recorded ... */
    f->fail_left = 1; /* ... the third fails */
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(od_db_compact(db, &err), OD_TRANSIENT);
    assert_non_null(strstr(err.msg, "scripted"));
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(od_db_store(db), 0, &m, &err), OD_OK);
    assert_true(m.has_job);
    assert_int_equal(m.job.nout, 2);
    assert_int_equal(m.nl0, 4); /* inputs untouched */
    char kept[2][OD_SST_ID_MAX];
    memcpy(kept[0], m.job.out[0].id, OD_SST_ID_MAX);
    memcpy(kept[1], m.job.out[1].id, OD_SST_ID_MAX);
    od_manifest_free(&m);
    check_range(db, 0, n); /* readable meanwhile */
    pthread_mutex_lock(&f->mu);
    int before = f->sst_puts_ok;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    assert_int_equal(od_manifest_load_latest(od_db_store(db), 0, &m, &err), OD_OK);
    assert_false(m.has_job);
    assert_int_equal(m.nl0, 0);
    assert_int_equal(m.nruns, 1);
    assert_true(m.runs[0].n > 2);
    assert_string_equal(m.runs[0].ssts[0].id, kept[0]);
    assert_string_equal(m.runs[0].ssts[1].id, kept[1]);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->sst_puts_ok - before, (int)m.runs[0].n - 2); /* only the rest was written */
    pthread_mutex_unlock(&f->mu);
    od_manifest_free(&m);
    check_range(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(&f->base);
}

/* ---------------- ckpt_prune ---------------- */

/* One round with a checkpoint `brief` of the given lifetime. Returns 0 when the machine was
 * too slow to tell (the first GC pass ended after `brief` had expired: then GC may rightly
 * prune it), 1 when every check ran. Expiry is judged the way GC judges it: expire_ms in the
 * manifest against the wall clock (od_now_ms), so nothing here depends on how long a step
 * takes. */
static int ckpt_prune_round(uint32_t lifetime_ms)
{
    static int round;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://lsm-bg-ckpt-%d", round++);
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = 20;
    o.flush_interval_ms = 2;
    od_db *db;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    od_store *s = od_db_store(db);
    assert_int_equal(od_lsmtest_write_range(db, 0, 300, 100, &err), OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    assert_int_equal(m.nl0, 1);
    char first[64];
    od_sst_key(first, sizeof first, m.l0[0].id);
    od_manifest_free(&m);
    uint64_t forever, brief;
    int64_t created = od_test_now_ms(); /* `brief` expires no earlier than created + lifetime_ms */
    /* `brief` pins the version listing `first` */
    assert_int_equal(od_db_checkpoint_create(db, lifetime_ms, &brief, &err), OD_OK);
    assert_int_equal(od_lsmtest_write_range(db, 300, 600, 100, &err), OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK); /* `first` leaves the latest manifest */
    assert_int_equal(od_db_checkpoint_create(db, 0, &forever, &err), OD_OK);
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    int64_t expire = 0;
    for (size_t i = 0; i < m.nckpt; i++)
        if (m.ckpts[i].id == brief) expire = m.ckpts[i].expire_ms;
    size_t nckpt = m.nckpt;
    od_manifest_free(&m);
    if (!expire) { /* pruned already (commits prune expired checkpoints): fine only once expired */
        if (od_test_now_ms() < created + (int64_t)lifetime_ms)
            fail_msg("checkpoint %llu was pruned before its %u ms lifetime ended", (unsigned long long)brief,
                     lifetime_ms);
        print_message("      machine too slow: the %u ms checkpoint expired before the compaction\n", lifetime_ms);
        assert_int_equal(od_db_close(db, &err), OD_OK);
        return 0;
    }
    assert_int_equal(nckpt, 2);
    od_test_sleep_ms(60); /* past the GC minimum age */
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    if (od_test_now_ms() >= expire) { /* GC may have seen `brief` expired: no verdict */
        print_message("      machine too slow: the first GC pass ended after the %u ms checkpoint expired\n",
                      lifetime_ms);
        assert_int_equal(od_db_close(db, &err), OD_OK);
        return 0;
    }
    od_obj_meta meta;
    assert_int_equal(od_store_head(s, first, &meta, &err), OD_OK); /* pinned by `brief` */
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    assert_int_equal(m.nckpt, 2);
    od_manifest_free(&m);
    while (od_test_now_ms() <= expire) od_test_sleep_ms(10); /* `brief` expires */
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    assert_int_equal(m.nckpt, 1); /* pruned; the unexpired one stays */
    assert_true(m.ckpts[0].id == forever);
    od_manifest_free(&m);
    assert_int_equal(od_store_head(s, first, &meta, &err), OD_NOTFOUND); /* what only it pinned is gone */
    check_range(db, 0, 600);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    return 1;
}

static void test_ckpt_prune(void **state)
{
    (void)state;
    /* 1 s normally; a machine too slow for that gets 4 s, then 16 s */
    uint32_t lifetime = 1000;
    while (!ckpt_prune_round(lifetime)) {
        if (lifetime >= 16000) fail_msg("the first GC pass never ran within a %u ms checkpoint lifetime", lifetime);
        lifetime *= 4;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flush_during_compaction),
        cmocka_unit_test(test_flush_retry),
        cmocka_unit_test(test_flush_retry_landed),
        cmocka_unit_test(test_flush_permanent),
        cmocka_unit_test(test_output_split),
        cmocka_unit_test(test_compaction_retry),
        cmocka_unit_test(test_ckpt_prune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
