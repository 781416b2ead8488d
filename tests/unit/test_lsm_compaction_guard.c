/*
 * test_lsm_compaction_guard.c — a compaction never commits outputs that GC may already have
 * collected.
 *
 * Uncommitted compaction outputs are protected from GC only by gc_min_age_ms. A compaction
 * that ran longer than half of it must not commit (OD_CONFLICT, clear message); its inputs stay
 * referenced, so every key stays readable, and a later compaction with enough time commits.
 * The slow compaction is simulated with a store that takes 5 ms per request (faulty+ with
 * latency) and gc_min_age_ms = 10: writing the output and reading the manifest take longer
 * than 5 ms, so the commit is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/od_db.h"

#define URI "faulty+mem://compaction-guard?seed=1&latency_ms=5"

static void write_rounds(od_db *db, int rounds, int n)
{
    od_err err;
    for (int r = 0; r < rounds; r++) {
        od_batch *b = od_batch_new();
        assert_non_null(b);
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%04d", r, i);
            assert_int_equal(od_batch_put(b, k, strlen(k), k, strlen(k)), OD_OK);
        }
        assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
        od_batch_free(b);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
}

static void check_all_at(od_db *db, int rounds, int n, int line)
{
    od_err err;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%04d", r, i);
            od_buf v = {0};
            int rc = od_db_get(db, NULL, k, strlen(k), &v, &err);
            if (rc) fail_msg("line %d: %s unreadable: %s", line, k, err.msg);
            assert_int_equal(v.len, strlen(k));
            assert_memory_equal(v.data, k, v.len);
            od_buf_free(&v);
        }
}

#define check_all(db, r, n) check_all_at(db, r, n, __LINE__)

static void test_slow_compaction_not_committed(void **state)
{
    (void)state;
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = 10;
    o.flush_interval_ms = 2;
    /* mem:// objects live while a handle is open: hold one across the reopen below */
    od_store *keep;
    assert_int_equal(od_store_open("mem://compaction-guard", &keep, &err), OD_OK);
    od_db *db;
    assert_int_equal(od_db_open(URI, &o, &db, &err), OD_OK);
    write_rounds(db, 4, 200);
    od_db_stats before;
    od_db_get_stats(db, &before);
    assert_int_equal(before.l0_count, 4);
    check_all(db, 4, 200);

    int rc = od_db_compact(db, &err);
    assert_int_equal(rc, OD_CONFLICT);
    assert_non_null(strstr(err.msg, "older than half the GC minimum age"));
    od_db_stats after;
    od_db_get_stats(db, &after);
    assert_int_equal(after.l0_count, 4);           /* inputs still referenced */
    assert_int_equal(after.compactions, before.compactions);
    check_all(db, 4, 200);
    assert_int_equal(od_db_gc(db, &err), OD_OK);  /* collects the orphaned outputs only */
    check_all(db, 4, 200);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    /* with a realistic minimum age the same compaction commits */
    o.gc_min_age_ms = 300000;
    assert_int_equal(od_db_open(URI, &o, &db, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    od_db_get_stats(db, &after);
    assert_int_equal(after.l0_count, 0);
    check_all(db, 4, 200);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(keep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_slow_compaction_not_committed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
