/*
 * test_lsm_compaction_guard.c — a compaction that runs far longer than gc_min_age_ms, with GC
 * passes running beside it, commits and loses nothing.
 *
 * Compaction outputs used to be protected from GC only by their age (and a compaction older
 * than half the minimum age refused to commit). Now the manifest records the running job and
 * names every output before it is written (docs/architecture.md, "Compaction"), so GC keeps
 * them however long the job runs. The slow compaction: a store that takes 5 ms per request
 * (faulty+ with latency), gc_min_age_ms = 10, and outputs cut at 64 KiB so the job writes
 * several outputs, each followed by a manifest commit; a second thread runs GC passes in a
 * loop meanwhile (the compaction filter waits, once, for two of them past the minimum age, so
 * they overlap the job on any machine). Then every key is read back, through this handle and
 * through a fresh one after another GC pass (no in-process pins left).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lsm/od_db.h"

#define URI "faulty+mem://compaction-guard?seed=1&latency_ms=5"
#define VLEN 200

static void make_val(int r, int i, char *v)
{
    uint64_t x = (uint64_t)(r * 100003 + i) * 0x9e3779b97f4a7c15ull + 1;
    for (int k = 0; k < VLEN; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[k] = (char)('a' + (x % 26));
    }
}

static void write_rounds(od_db *db, int rounds, int n)
{
    od_err err;
    char v[VLEN];
    for (int r = 0; r < rounds; r++) {
        od_batch *b = od_batch_new();
        assert_non_null(b);
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%05d", r, i);
            make_val(r, i, v);
            assert_int_equal(od_batch_put(b, k, strlen(k), v, VLEN), OD_OK);
        }
        assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
        od_batch_free(b);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
}

static void check_all_at(od_db *db, int rounds, int n, int line)
{
    od_err err;
    char v[VLEN];
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%05d", r, i);
            make_val(r, i, v);
            od_buf got = {0};
            int rc = od_db_get(db, NULL, k, strlen(k), &got, &err);
            if (rc) fail_msg("line %d: %s unreadable: %s", line, k, err.msg);
            assert_int_equal(got.len, VLEN);
            assert_memory_equal(got.data, v, VLEN);
            od_buf_free(&got);
        }
}

#define check_all(db, r, n) check_all_at(db, r, n, __LINE__)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define GC_MIN_AGE_MS 10

struct gc_loop {
    od_db *db;
    pthread_mutex_t mu;
    int stop, passes, failures;
    int met; /* meet_gc_filter has been called */
    od_err last;
};

static void *gc_thread(void *arg)
{
    struct gc_loop *g = arg;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        int stop = g->stop;
        pthread_mutex_unlock(&g->mu);
        if (stop) break;
        od_err e;
        int rc = od_db_gc(g->db, &e);
        pthread_mutex_lock(&g->mu);
        g->passes++;
        if (rc) {
            g->failures++;
            g->last = e;
        }
        pthread_mutex_unlock(&g->mu);
    }
    return NULL;
}

/* The compaction filter: on its first call (the job is recorded, its merge has begun) it
 * waits until 3 x gc_min_age_ms have passed and then two more GC passes have completed, so
 * GC really runs against the job's recorded state however the threads are scheduled
 * (deadline 30 s); every later call passes straight through. Keeps every entry. */
static int meet_gc_filter(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, int64_t now)
{
    (void)key, (void)klen, (void)val, (void)vlen, (void)now;
    struct gc_loop *g = ctx;
    pthread_mutex_lock(&g->mu);
    int first = !g->met;
    g->met = 1;
    pthread_mutex_unlock(&g->mu);
    if (!first) return 0;
    int64_t t0 = now_ms();
    struct timespec ts = {0, 1000000};
    while (now_ms() - t0 < 3 * GC_MIN_AGE_MS) nanosleep(&ts, NULL);
    pthread_mutex_lock(&g->mu);
    int p0 = g->passes;
    pthread_mutex_unlock(&g->mu);
    for (;;) {
        pthread_mutex_lock(&g->mu);
        int p = g->passes;
        pthread_mutex_unlock(&g->mu);
        if (p >= p0 + 2 || now_ms() - t0 > 30000) break;
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_slow_compaction_with_gc(void **state)
{
    (void)state;
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = GC_MIN_AGE_MS;
    o.flush_interval_ms = 2;
    o.compaction_output_bytes = 64u << 10;
    struct gc_loop g;
    memset(&g, 0, sizeof g);
    pthread_mutex_init(&g.mu, NULL);
    o.compaction_filter = meet_gc_filter;
    o.compaction_filter_ctx = &g;
    int n = 800; /* not scaled: the job must outlast several GC passes (~1 s in all) */
    /* mem:// objects live while a handle is open: hold one across the reopen below */
    od_store *keep;
    assert_int_equal(od_store_open("mem://compaction-guard", &keep, &err), OD_OK);
    od_db *db;
    assert_int_equal(od_db_open(URI, &o, &db, &err), OD_OK);
    write_rounds(db, 4, n);
    od_db_stats before;
    od_db_get_stats(db, &before);
    assert_int_equal(before.l0_count, 4);
    check_all(db, 4, n);

    g.db = db;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, gc_thread, &g), 0);
    int64_t t0 = now_ms();
    int rc = od_db_compact(db, &err);
    int64_t took = now_ms() - t0;
    pthread_mutex_lock(&g.mu);
    g.stop = 1;
    pthread_mutex_unlock(&g.mu);
    pthread_join(th, NULL);
    if (rc) fail_msg("compaction failed: %s", err.msg);
    if (g.failures) fail_msg("%d GC passes failed, last: %s", g.failures, g.last.msg);
    /* the scenario really happened: the job outlived the minimum age many times over, and GC
     * passes ran (and collected) while it did */
    assert_true(took > 5 * (int64_t)o.gc_min_age_ms);
    assert_true(g.met);
    assert_true(g.passes >= 2);
    od_db_stats after;
    od_db_get_stats(db, &after);
    assert_true(after.gc_deleted > before.gc_deleted);
    assert_int_equal(after.l0_count, 0);
    assert_int_equal(after.compactions, before.compactions + 1);
    assert_true(after.live_ssts >= 3); /* several outputs, each recorded while GC ran */
    check_all(db, 4, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    /* a fresh handle (no in-process pins) after another GC pass past the minimum age */
    assert_int_equal(od_db_open(URI, &o, &db, &err), OD_OK);
    struct timespec ts = {0, 30 * 1000000};
    nanosleep(&ts, NULL);
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    check_all(db, 4, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    pthread_mutex_destroy(&g.mu);
    od_store_close(keep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_slow_compaction_with_gc)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
