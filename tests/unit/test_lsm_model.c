/*
 * test_lsm_model.c — model-based randomized test of the storage engine.
 *
 * Random batches of puts, deletes and TTL puts, point gets and range scans run against
 * od_db and against a plain in-memory reference (an array indexed by key number). Mixed in:
 * WAL flushes, memtable flushes to L0, compactions, close/reopen, snapshots (checked against
 * a copy of the reference taken when the snapshot was made, after more writes, flushes and
 * compactions) and read-only handles in the same process (a follower that must see
 * everything durable, and refresh to see more). Runs on mem:// and on file:// (a fresh
 * temporary directory). OD_TEST_SCALE scales the number of steps; OD_TEST_SEED fixes the
 * seed (printed on start so a failure can be replayed). The test logic is in
 * tests/support/od_lsmtest.c (test_lsm_rgw runs it on s3://).
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_testutil.h"

static void open_db(const char *uri, od_db **db, int read_only)
{
    od_db_options o;
    od_db_options_init(&o);
    o.read_only = read_only;
    o.flush_interval_ms = 2;
    o.memtable_bytes = 24 * 1024;
    o.block_size = 1024;
    o.l0_compaction_trigger = 3;
    o.gc_interval_ms = 0;
    od_err err;
    int rc = od_db_open(uri, &o, db, &err);
    if (rc) fail_msg("open %s: %s", uri, err.msg);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void test_model_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://lsm-model-%d", (int)getpid());
    od_store *keep; /* a mem:// store lives while a handle is open: keep it across reopens */
    od_err err;
    assert_int_equal(od_store_open(uri, &keep, &err), OD_OK);
    od_lsmtest_model(uri, (int)(6000 * od_test_scale()));
    od_store_close(keep);
}

static void test_model_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-model-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128];
    snprintf(uri, sizeof uri, "file://%s", dir);
    od_lsmtest_model(uri, (int)(6000 * od_test_scale()));
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Same key twice in one batch: the last op wins, before and after a flush. */
static void test_batch_last_op_wins(void **state)
{
    (void)state;
    od_db *db;
    open_db("mem://lsm-lastop", &db, 0);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    assert_int_equal(od_batch_put(b, "k", 1, "first", 5), OD_OK);
    assert_int_equal(od_batch_put(b, "k", 1, "second", 6), OD_OK);
    assert_int_equal(od_batch_put(b, "d", 1, "x", 1), OD_OK);
    assert_int_equal(od_batch_delete(b, "d", 1), OD_OK);
    od_err err;
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    for (int round = 0; round < 2; round++) {
        od_buf v = {0};
        assert_int_equal(od_db_get(db, NULL, "k", 1, &v, &err), OD_OK);
        assert_int_equal(v.len, 6);
        assert_memory_equal(v.data, "second", 6);
        assert_int_equal(od_db_get(db, NULL, "d", 1, &v, &err), OD_NOTFOUND);
        od_buf_free(&v);
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    od_batch_free(b);
    assert_int_equal(od_db_close(db, &err), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_last_op_wins),
        cmocka_unit_test(test_model_mem),
        cmocka_unit_test(test_model_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
