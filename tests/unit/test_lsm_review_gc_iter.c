/*
 * test_lsm_review_gc_iter.c — garbage collection must not delete collections that an open
 * iterator (without a snapshot) still reads.
 *
 * An iterator pins an od_version just like a snapshot does, but GC only looked at the
 * current view and the registered snapshots. Scenario: flush L0s, open a plain iterator and
 * read one key, compact everything (the iterator's L0s leave the manifest), wait past
 * gc_min_age_ms, run GC, then finish the iteration: every key must still come back, with
 * no "not found" from the store. A tiny block cache and small blocks make the iterator
 * fetch later blocks from the store.
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
#include "od_testutil.h"

static void write_keys(od_db *db, int from, int to)
{
    od_batch *b = od_batch_new();
    od_err err;
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "k%06d", i);
        snprintf(v, sizeof v, "value-%06d-padding-padding-padding", i);
        assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
    }
    assert_int_equal(od_db_write(db, b, 0, NULL, &err), OD_OK);
    od_batch_free(b);
}

static void run(const char *uri)
{
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = 1000; /* compaction must finish within half of it to commit */
    o.block_size = 256;
    o.block_cache_bytes = 1; /* (nearly) nothing cached: blocks come from the store */
    od_db *db;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    int per = (int)(400 * od_test_scale());
    if (per < 50) per = 50;
    int nflush = 3, n = per * nflush;
    for (int r = 0; r < nflush; r++) {
        write_keys(db, r * per, r * per + per);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }

    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &err), OD_OK);
    assert_true(od_iter_valid(it));

    /* the iterator's L0 tables leave the manifest; then they are old enough for GC */
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    usleep(1100 * 1000);
    assert_int_equal(od_db_gc(db, &err), OD_OK);

    int seen = 0;
    int rc = OD_OK;
    while (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        char want[32];
        snprintf(want, sizeof want, "k%06d", seen);
        assert_int_equal(kl, strlen(want));
        assert_memory_equal(k, want, kl);
        seen++;
        if ((rc = od_iter_next(it, &err)) != OD_OK) break;
    }
    if (rc) fail_msg("iterator failed after GC at key %d of %d: %s", seen, n, err.msg);
    assert_int_equal(seen, n);
    od_iter_free(it);

    /* the data is intact through the current view too */
    od_buf v = {0};
    assert_int_equal(od_db_get(db, NULL, "k000000", 7, &v, &err), OD_OK);
    od_buf_free(&v);
    assert_int_equal(od_db_close(db, &err), OD_OK);
}

static void test_gc_keeps_iterator_tables_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-gc-iter-%d", (int)getpid());
    run(uri);
}

static void test_gc_keeps_iterator_tables_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-review-gc-iter", run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gc_keeps_iterator_tables_mem),
        cmocka_unit_test(test_gc_keeps_iterator_tables_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
