/*
 * test_lsm_fault.c — the engine on the fault-injecting store (faulty+mem://...): transient
 * errors, latency and ambiguous conditional creates (executed, then reported as failed).
 *
 *   - with faults the generic retry layer absorbs (retries=10): many batches, L0 flushes,
 *     compactions and reopens; a read-only follower opened through the faults, and then the
 *     writer with faults off, find every acknowledged batch with its value, and a full scan
 *     reads cleanly (no corruption, no loss);
 *   - with faults beyond the retry budget: the write fails with a clear error naming the WAL
 *     object, the handle refuses later writes with the same error, close reports it, and a
 *     reopen still has every batch acknowledged before.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "objstore/od_faulty.h"
#include "od_testutil.h"

/* fault rates of the first test (strings, spliced into the URI) */
#ifndef ER
#define ER "0.1"
#endif
#ifndef AR
#define AR "0.1"
#endif

static void kv(long n, char *k, size_t kn, char *v, size_t vn)
{
    snprintf(k, kn, "key%06ld", n % 5000);
    snprintf(v, vn, "val-%ld-%0*d", n, (int)(n % 40), 0);
}

static void opts(od_db_options *o)
{
    od_db_options_init(o);
    o->flush_interval_ms = 2;
    o->memtable_bytes = 16 * 1024;
    o->block_size = 1024;
    o->l0_compaction_trigger = 3;
    o->gc_interval_ms = 0;
    o->lease_ms = 2000;
}

/* latest[k] = batch number of the last acknowledged write of key k, -1 none */
static long latest[5000];

static int open_retry(od_store *s, od_db **db)
{
    od_db_options o;
    opts(&o);
    o.takeover = 1;
    od_err err;
    for (int i = 0; i < 20; i++) {
        if (od_db_open_store(s, &o, db, &err) == OD_OK) return 1;
    }
    fail_msg("open kept failing under faults: %s", err.msg);
    return 0;
}

static void verify(od_db *db)
{
    od_err err;
    for (long k = 0; k < 5000; k++) {
        if (latest[k] < 0) continue;
        char key[32], v[96];
        kv(latest[k], key, sizeof key, v, sizeof v);
        od_buf got = {0};
        int rc = od_db_get(db, NULL, key, strlen(key), &got, &err);
        if (rc) fail_msg("acknowledged %s (batch %ld) missing: %s", key, latest[k], od_code_name(rc));
        /* a later unacknowledged write of the same key may have landed: it must be one of ours */
        if (got.len != strlen(v) || memcmp(got.data, v, got.len) != 0) {
            long n2 = atol((char *)got.data + 4);
            char k2[32], v2[96];
            kv(n2, k2, sizeof k2, v2, sizeof v2);
            if (n2 < latest[k] || strcmp(k2, key) != 0 || got.len != strlen(v2) || memcmp(got.data, v2, got.len) != 0)
                fail_msg("%s has a wrong value %.*s (acknowledged batch %ld)", key, (int)got.len, (char *)got.data,
                         latest[k]);
        }
        od_buf_free(&got);
    }
    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &err), OD_OK);
    while (od_iter_valid(it)) assert_int_equal(od_iter_next(it, &err), OD_OK);
    od_iter_free(it);
}

static void test_faults_absorbed(void **state)
{
    (void)state;
    char uri[256];
    snprintf(uri, sizeof uri,
             "faulty+mem://lsm-fault-%d?seed=%d&error_rate=" ER "&ambiguous_rate=" AR "&latency_ms=0"
             "&latency_jitter_ms=1&retries=10&retry_base_ms=1&retry_max_ms=4",
             (int)getpid(), (int)getpid());
    od_store *s;
    od_err err;
    assert_int_equal(od_store_open(uri, &s, &err), OD_OK);
    for (long k = 0; k < 5000; k++) latest[k] = -1;
    od_db *db;
    open_retry(s, &db);
    long batches = (long)(3000 * od_test_scale()), acked = 0, failed = 0;
    od_batch *b = od_batch_new();
    assert_non_null(b);
    for (long n = 0; n < batches; n++) {
        od_batch_clear(b);
        char k[32], v[96];
        kv(n, k, sizeof k, v, sizeof v);
        assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
        int rc = od_db_write(db, b, n % 4 == 0, NULL, &err);
        if (rc == OD_OK && n % 4 == 0) {
            latest[n % 5000] = n;
            acked++;
        } else if (rc) {
            /* only possible when the retry budget ran out: the error says what failed */
            assert_true(strlen(err.msg) > 0);
            failed++;
            od_db_close(db, &err);
            open_retry(s, &db);
        }
        if (n % 200 == 199) {
            if (od_db_flush(db, 1, &err) != OD_OK) {
                failed++;
                od_db_close(db, &err);
                open_retry(s, &db);
            }
        }
        if (n % 500 == 499) {
            od_db_close(db, &err);
            open_retry(s, &db);
        }
    }
    od_batch_free(b);
    od_faulty_stats fs;
    assert_int_equal(od_store_faulty_get_stats(s, &fs), OD_OK);
    printf("%ld batches, %ld acknowledged with wait, %ld failed; %llu injected errors, %llu ambiguous\n", batches,
           acked, failed, (unsigned long long)fs.injected_errors, (unsigned long long)fs.injected_ambiguous);
    assert_true(fs.injected_errors > 0);
    assert_true(fs.injected_ambiguous > 0);
    assert_true(acked > 0);
    /* a read-only follower, through the same faults, sees every acknowledged batch */
    assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
    {
        od_db_options ro;
        opts(&ro);
        ro.read_only = 1;
        od_db *f = NULL;
        for (int i = 0; i < 20 && od_db_open_store(s, &ro, &f, &err) != OD_OK; i++) f = NULL;
        if (!f) fail_msg("follower open kept failing: %s", err.msg);
        verify(f);
        assert_int_equal(od_db_close(f, &err), OD_OK);
    }
    /* faults off: everything acknowledged is there */
    assert_int_equal(od_store_faulty_set(s, 0, 0, 0), OD_OK);
    od_db_close(db, &err);
    open_retry(s, &db);
    verify(db);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    verify(db);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(s);
}

static void test_budget_exhausted(void **state)
{
    (void)state;
    char uri[256];
    snprintf(uri, sizeof uri, "faulty+mem://lsm-fault-b-%d?seed=1&retries=3&retry_base_ms=1&retry_max_ms=2",
             (int)getpid());
    od_store *s;
    od_err err;
    assert_int_equal(od_store_open(uri, &s, &err), OD_OK);
    od_db_options o;
    opts(&o);
    o.lease_ms = 60000; /* no lease renewal in the window */
    od_db *db;
    assert_int_equal(od_db_open_store(s, &o, &db, &err), OD_OK);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    assert_int_equal(od_batch_put(b, "acked", 5, "yes", 3), OD_OK);
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    /* every request fails now */
    assert_int_equal(od_store_faulty_fail_next(s, 1000, 0), OD_OK);
    od_batch_clear(b);
    assert_int_equal(od_batch_put(b, "lost", 4, "no", 2), OD_OK);
    int rc = od_db_write(db, b, 1, NULL, &err);
    assert_int_not_equal(rc, OD_OK);
    printf("write error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "wal/"));
    assert_non_null(strstr(err.msg, "not durable"));
    /* the handle stays failed */
    od_err err2;
    assert_int_equal(od_db_write(db, b, 0, NULL, &err2), rc);
    assert_string_equal(err2.msg, err.msg);
    assert_int_equal(od_store_faulty_fail_next(s, 0, 0), OD_OK);
    assert_int_not_equal(od_db_close(db, &err), OD_OK);
    o.takeover = 1;
    assert_int_equal(od_db_open_store(s, &o, &db, &err), OD_OK);
    od_buf v = {0};
    assert_int_equal(od_db_get(db, NULL, "acked", 5, &v, &err), OD_OK);
    assert_int_equal(v.len, 3);
    od_buf_free(&v);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_batch_free(b);
    od_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_absorbed),
        cmocka_unit_test(test_budget_exhausted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
