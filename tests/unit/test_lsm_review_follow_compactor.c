/*
 * test_lsm_review_follow_compactor.c — a writer that leaves compaction to a separate
 * compactor process must follow the manifest versions that compactor commits.
 *
 * Otherwise the writer's view keeps listing the L0 collections the compactor merged away
 * until the writer's own next commit (a memtable flush, which can be hours away at a low
 * write rate), and the compactor's GC deletes those collections once they are older than
 * gc_min_age_ms: the writer's reads then fail with "not found" from the store. Here the
 * compactor is a second handle (in a separate process it could not see the writer's open
 * tables either): it compacts, and once the writer has picked up the new version its GC
 * runs with a tiny min age; every key must stay readable through the writer.
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

static void test_writer_follows_compactor(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-follow-c-%d", (int)getpid());
    od_err err;
    od_db_options ow;
    od_db_options_init(&ow);
    ow.flush_interval_ms = 2;
    ow.compactor = 0; /* a separate compactor does it */
    ow.gc_interval_ms = 0;
    ow.block_size = 256;
    ow.block_cache_bytes = 1; /* reads go to the store */
    od_db *w;
    assert_int_equal(od_db_open(uri, &ow, &w, &err), OD_OK);

    od_db_options oc;
    od_db_options_init(&oc);
    oc.compactor_only = 1;
    oc.follow_interval_ms = 100; /* notices the writer's commits quickly */
    oc.gc_interval_ms = 0;
    oc.gc_min_age_ms = 1000;
    oc.l0_compaction_trigger = 1000; /* only when asked */
    od_db *c;
    assert_int_equal(od_db_open(uri, &oc, &c, &err), OD_OK);

    int n = 100;
    for (int r = 0; r < 4; r++) {
        od_batch *b = od_batch_new();
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%04d", r, i);
            assert_int_equal(od_batch_put(b, k, strlen(k), k, strlen(k)), OD_OK);
        }
        assert_int_equal(od_db_write(w, b, 1, NULL, &err), OD_OK);
        od_batch_free(b);
        assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    }
    assert_int_equal(od_db_compact(c, &err), OD_OK);
    od_store *s = od_db_store(w);
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    uint64_t latest = m.version;
    assert_int_equal(m.nl0, 0);
    od_manifest_free(&m);

    /* the writer picks up the compactor's version (it looks every second; 30 s is the
     * deadline of a slow loaded machine) */
    od_db_stats st;
    for (int64_t t0 = od_test_mono_ms(); od_test_mono_ms() - t0 < 30000;) {
        od_db_get_stats(w, &st);
        if (st.manifest_version >= latest) break;
        usleep(10 * 1000);
    }
    od_db_get_stats(w, &st);
    if (st.manifest_version < latest)
        fail_msg("the writer still reads manifest version %llu (latest %llu, committed by the compactor)",
                 (unsigned long long)st.manifest_version, (unsigned long long)latest);
    assert_int_equal(st.l0_count, 0);

    usleep(1100 * 1000);
    assert_int_equal(od_db_gc(c, &err), OD_OK); /* deletes the compacted L0s */
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < n; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%d-k%04d", r, i);
            od_buf v = {0};
            int rc = od_db_get(w, NULL, k, strlen(k), &v, &err);
            if (rc) fail_msg("%s unreadable through the writer: %s", k, err.msg);
            assert_int_equal(v.len, strlen(k));
            od_buf_free(&v);
        }
    assert_int_equal(od_db_close(c, &err), OD_OK);
    assert_int_equal(od_db_close(w, &err), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_follows_compactor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
