/*
 * test_lsm_review_open_race.c — two writers opening at the same time: the one with the
 * higher epoch must win, never the older one.
 *
 * Fencing protocol (NOTES.md): bump writer_epoch in the manifest; fence the next free WAL id;
 * if our epoch no longer stands, we are fenced. Writer A commits epoch e+1 and is then held
 * (its lease write blocks). Writer B takes over: epoch e+2, its lease, its fence at WAL id F.
 * When A resumes it sees F taken and must notice that B's epoch superseded it; before the
 * fix it skipped to F+1 without re-reading the manifest, created a fence there and opened
 * successfully, so B's first WAL write collided with A's fence and the NEWER writer was
 * reported "fenced" while the older one kept acknowledging writes.
 */
#include <pthread.h>
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
#include "od_holdstore.h"
#include "od_testutil.h"

typedef struct opener {
    od_store *store;
    od_db *db;
    int rc;
    od_err err;
} opener;

static void *open_a(void *arg)
{
    opener *o = arg;
    od_db_options oa;
    od_db_options_init(&oa);
    oa.flush_interval_ms = 2;
    oa.gc_interval_ms = 0;
    oa.takeover = 1;
    o->rc = od_db_open_store(o->store, &oa, &o->db, &o->err);
    return NULL;
}

static void run(const char *uri)
{
    od_err err;
    /* a first writer leaves data and a released lease */
    od_db_options o0;
    od_db_options_init(&o0);
    o0.flush_interval_ms = 2;
    od_db *w0;
    assert_int_equal(od_db_open(uri, &o0, &w0, &err), OD_OK);
    od_batch *b = od_batch_new();
    assert_int_equal(od_batch_put(b, "k0", 2, "v0", 2), OD_OK);
    assert_int_equal(od_db_write(w0, b, 1, NULL, &err), OD_OK);
    assert_int_equal(od_db_close(w0, &err), OD_OK);

    od_hold_store *h = od_hold_open(uri, OD_PUT_ALWAYS, "lease", 0);
    pthread_mutex_lock(&h->mu);
    h->armed = 1;
    pthread_mutex_unlock(&h->mu);
    opener a = {&h->base, NULL, -1, {0}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_a, &a), 0);
    pthread_mutex_lock(&h->mu);
    while (!h->blocked) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);

    /* A has committed its epoch and waits in its lease write: B takes over */
    od_db_options ob;
    od_db_options_init(&ob);
    ob.flush_interval_ms = 2;
    ob.gc_interval_ms = 0;
    ob.takeover = 1;
    ob.lease_ms = 3000; /* renewed every 1 s: live throughout below, even on a loaded machine */
    od_db *wb;
    assert_int_equal(od_db_open(uri, &ob, &wb, &err), OD_OK);

    pthread_mutex_lock(&h->mu);
    h->released = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(th, NULL);

    /* the newer writer B keeps writing */
    od_batch_clear(b);
    assert_int_equal(od_batch_put(b, "kb", 2, "vb", 2), OD_OK);
    int brc = od_db_write(wb, b, 1, NULL, &err);
    if (brc) fail_msg("the newer writer (B) cannot write: %s (A's open returned %s)", err.msg, od_code_name(a.rc));
    /* and the older one does not open as a writer */
    assert_int_equal(a.rc, OD_FENCED);
    od_buf v = {0};
    assert_int_equal(od_db_get(wb, NULL, "k0", 2, &v, &err), OD_OK);
    od_buf_free(&v);

    /* A's lease write overwrote B's lease with an older epoch: B's renewal must take the
     * lease back, or a third writer would fence B without being asked to take over */
    od_db_stats st;
    od_db_get_stats(wb, &st);
    uint64_t lease_epoch = 0;
    for (int64_t t0 = od_test_mono_ms(); od_test_mono_ms() - t0 < 30000;) {
        usleep(20 * 1000);
        assert_int_equal(od_store_get(h->inner, "lease", &v, NULL, &err), OD_OK);
        assert_int_equal(v.len, 52);
        lease_epoch = (uint64_t)v.data[8] | (uint64_t)v.data[9] << 8 | (uint64_t)v.data[10] << 16 |
                      (uint64_t)v.data[11] << 24 | (uint64_t)v.data[12] << 32 | (uint64_t)v.data[13] << 40 |
                      (uint64_t)v.data[14] << 48 | (uint64_t)v.data[15] << 56;
        if (lease_epoch == st.writer_epoch) break;
    }
    od_buf_free(&v);
    assert_int_equal(lease_epoch, st.writer_epoch);
    od_db_options oc;
    od_db_options_init(&oc);
    od_db *wc = NULL;
    int crc = od_db_open(uri, &oc, &wc, &err);
    if (crc == OD_OK) od_db_close(wc, &err);
    assert_int_equal(crc, OD_BUSY); /* B's lease is live: no silent takeover */
    od_batch_free(b);
    if (a.db) od_db_close(a.db, &err);
    od_store_close(&h->base);
    assert_int_equal(od_db_close(wb, &err), OD_OK);
}

static void test_open_race_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-open-race-%d", (int)getpid());
    od_store *keep;
    od_err err;
    assert_int_equal(od_store_open(uri, &keep, &err), OD_OK);
    run(uri);
    od_store_close(keep);
}

static void test_open_race_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-review-open-race", run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_race_mem),
        cmocka_unit_test(test_open_race_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
