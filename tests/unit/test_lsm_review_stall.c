/*
 * test_lsm_review_stall.c — a writer stalled inside its WAL PUT must not acknowledge a write
 * after a newer writer fenced it and GC deleted the fence object (NOTES.md: "A stalled writer
 * can re-create an id that garbage collection already deleted").
 *
 * Writer A runs on a wrapper store whose conditional creates of wal/ objects can be held.
 * A writes batch X; its WAL thread blocks inside the PUT of WAL id N. Writer B takes over:
 * its fence is N; it writes, flushes its memtable (the replay point moves past N), writes
 * again and runs GC with a tiny min age, which deletes wal/N. Then A's PUT is released and
 * lands (the id is free again). X is in no WAL object B will ever replay, so A must NOT
 * report X durable: od_db_wait_durable must fail with OD_FENCED.
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

static void put1(od_db *db, const char *k, const char *v, int wait, uint64_t *seq)
{
    od_batch *b = od_batch_new();
    od_err err;
    assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
    int rc = od_db_write(db, b, wait, seq, &err);
    if (rc) fail_msg("write %s: %s", k, err.msg);
    od_batch_free(b);
}

static void run(const char *uri)
{
    od_err err;
    od_hold_store *h = od_hold_open(uri, OD_PUT_IF_ABSENT, "wal/", 1);

    od_db_options oa;
    od_db_options_init(&oa);
    oa.flush_interval_ms = 2;
    oa.compactor = 0;
    oa.gc_interval_ms = 0;
    oa.lease_ms = 600;
    od_db *a;
    assert_int_equal(od_db_open_store(&h->base, &oa, &a, &err), OD_OK);
    put1(a, "a-before", "1", 1, NULL);

    /* A's next WAL object is held inside its PUT */
    pthread_mutex_lock(&h->mu);
    h->armed = 1;
    pthread_mutex_unlock(&h->mu);
    uint64_t seq_x;
    put1(a, "x", "acked-by-the-zombie", 0, &seq_x);
    pthread_mutex_lock(&h->mu);
    while (!h->blocked) pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);

    /* B takes over, moves past the fence and collects it */
    od_db_options ob;
    od_db_options_init(&ob);
    ob.flush_interval_ms = 2;
    ob.compactor = 0;
    ob.gc_interval_ms = 0;
    ob.gc_min_age_ms = 1;
    ob.takeover = 1;
    od_db *b;
    assert_int_equal(od_db_open(uri, &ob, &b, &err), OD_OK);
    put1(b, "b1", "1", 1, NULL);
    assert_int_equal(od_db_flush(b, 1, &err), OD_OK);
    put1(b, "b2", "2", 1, NULL);
    usleep(20 * 1000);
    assert_int_equal(od_db_gc(b, &err), OD_OK);

    /* the fence object is gone (precondition of the scenario) */
    od_obj_meta meta;
    assert_int_equal(od_store_head(h->inner, h->held_key, &meta, &err), OD_NOTFOUND);
    usleep(700 * 1000); /* the stall outlasts A's lease */

    pthread_mutex_lock(&h->mu);
    h->released = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);

    int rc = od_db_wait_durable(a, seq_x, &err);
    /* X is not in any WAL object B replays: B does not have it */
    od_buf v = {0};
    od_err e2;
    int brc = od_db_get(b, NULL, "x", 1, &v, &e2);
    od_buf_free(&v);
    assert_int_equal(brc, OD_NOTFOUND);
    if (rc == OD_OK) fail_msg("the fenced writer acknowledged a write no live writer will ever replay");
    assert_int_equal(rc, OD_FENCED);

    od_db_close(a, &err);
    od_store_close(&h->base);
    assert_int_equal(od_db_close(b, &err), OD_OK);
}

static void test_stalled_wal_put_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-stall-%d", (int)getpid());
    run(uri);
}

static void test_stalled_wal_put_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-review-stall", run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stalled_wal_put_mem),
        cmocka_unit_test(test_stalled_wal_put_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
