/*
 * test_lsm_review_manifest_gap.c — a committer whose in-memory manifest is stale must not
 * re-create a manifest version that GC already deleted (a rollback that loses L0s).
 *
 * The writer (compactor=0) is at version V. A separate compactor opens twice (each open
 * commits: V+1, V+2), so the writer is two versions behind; GC then deletes V and V+1 (old,
 * not the latest). The writer flushes its memtable: its conditional create of V+1 must not
 * "succeed" into the gap, since V+2 (the real latest) would not list the new L0. Otherwise
 * the next flush commits on top of V+2 with a last_l0_seq that covers the lost L0, and the
 * first flush's data is gone after a reopen.
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

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_testutil.h"

static void write_keys(od_db *db, const char *tag, int n)
{
    od_batch *b = od_batch_new();
    od_err err;
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s-%04d", tag, i);
        assert_int_equal(od_batch_put(b, k, strlen(k), tag, strlen(tag)), OD_OK);
    }
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    od_batch_free(b);
}

static void check_keys(od_db *db, const char *tag, int n)
{
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s-%04d", tag, i);
        od_buf v = {0};
        od_err err;
        int rc = od_db_get(db, NULL, k, strlen(k), &v, &err);
        if (rc) fail_msg("%s lost after reopen (%s)", k, od_code_name(rc));
        assert_memory_equal(v.data, tag, strlen(tag));
        od_buf_free(&v);
    }
}

static void run(const char *uri)
{
    od_err err;
    od_db_options ow;
    od_db_options_init(&ow);
    ow.flush_interval_ms = 2;
    ow.compactor = 0;
    ow.gc_interval_ms = 0;
    ow.gc_min_age_ms = 1;
    od_db *w;
    assert_int_equal(od_db_open(uri, &ow, &w, &err), OD_OK);
    write_keys(w, "zero", 10);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);

    /* two commits by others: the writer is now two versions behind */
    for (int i = 0; i < 2; i++) {
        od_db_options oc;
        od_db_options_init(&oc);
        oc.compactor_only = 1;
        oc.follow_interval_ms = 100; /* notices the writer's commits quickly */
        oc.gc_interval_ms = 0;
        oc.l0_compaction_trigger = 1000;
        od_db *c;
        assert_int_equal(od_db_open(uri, &oc, &c, &err), OD_OK);
        assert_int_equal(od_db_close(c, &err), OD_OK);
    }
    usleep(20 * 1000);
    assert_int_equal(od_db_gc(w, &err), OD_OK); /* deletes every old non-latest version */

    write_keys(w, "first", 50);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    write_keys(w, "second", 50);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);

    /* the latest manifest lists both new L0s */
    od_store *s;
    assert_int_equal(od_store_open(uri, &s, &err), OD_OK);
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    size_t nl0 = m.nl0;
    od_manifest_free(&m);
    od_store_close(s);
    assert_int_equal(od_db_close(w, &err), OD_OK);

    ow.gc_min_age_ms = 300000;
    assert_int_equal(od_db_open(uri, &ow, &w, &err), OD_OK);
    check_keys(w, "zero", 10);
    check_keys(w, "first", 50);
    check_keys(w, "second", 50);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    assert_int_equal(nl0, 3);
}

static void test_stale_committer_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-mgap-%d", (int)getpid());
    od_store *keep; /* keeps the mem:// store alive between handles */
    od_err err;
    assert_int_equal(od_store_open(uri, &keep, &err), OD_OK);
    run(uri);
    od_store_close(keep);
}

static void test_stale_committer_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-review-mgap", run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stale_committer_mem),
        cmocka_unit_test(test_stale_committer_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
