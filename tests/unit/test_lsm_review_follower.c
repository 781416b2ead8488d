/*
 * test_lsm_review_follower.c — a read-only handle is thread-safe (od_db.h: "an od_db handle
 * may be used from any number of threads") across od_db_refresh and od_db_inspect.
 *
 * od_db_refresh on a follower replaces the handle's manifest copy when a new version
 * appears, while od_db_inspect walks that copy: both must serialise on the same lock, or
 * inspect reads freed collection descriptors (ASan: heap-use-after-free). A writer keeps
 * committing new manifest versions (memtable flushes) while one thread refreshes the
 * follower and another inspects it (both have run before the first commit, so they overlap
 * the commits however the threads are scheduled); every inspect must return well-formed
 * JSON, and the follower must end up seeing every acknowledged key.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "od_testutil.h"

typedef struct shared {
    od_db *ro;
    atomic_int stop;
    atomic_int inspects, refreshes, bad;
} shared;

static void *inspector(void *arg)
{
    shared *sh = arg;
    od_buf j = {0};
    while (!atomic_load(&sh->stop)) {
        od_err err;
        if (od_db_inspect(sh->ro, &j, &err) != OD_OK || j.len < 2 || j.data[0] != '{' || j.data[j.len - 1] != '}')
            atomic_fetch_add(&sh->bad, 1);
        atomic_fetch_add(&sh->inspects, 1);
    }
    od_buf_free(&j);
    return NULL;
}

static void *refresher(void *arg)
{
    shared *sh = arg;
    while (!atomic_load(&sh->stop)) {
        od_err err;
        if (od_db_refresh(sh->ro, &err) != OD_OK) atomic_fetch_add(&sh->bad, 1);
        atomic_fetch_add(&sh->refreshes, 1);
    }
    return NULL;
}

static void test_refresh_vs_inspect(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://review-follower-%d", (int)getpid());
    od_err err;
    od_db_options ow;
    od_db_options_init(&ow);
    ow.flush_interval_ms = 1;
    ow.gc_interval_ms = 0;
    ow.l0_compaction_trigger = 3;
    od_db *w;
    assert_int_equal(od_db_open(uri, &ow, &w, &err), OD_OK);

    od_db_options oro;
    od_db_options_init(&oro);
    oro.read_only = 1;
    shared sh = {0};
    assert_int_equal(od_db_open(uri, &oro, &sh.ro, &err), OD_OK);
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, inspector, &sh), 0);
    assert_int_equal(pthread_create(&b, NULL, refresher, &sh), 0);

    /* both threads are running before the writer starts committing versions, so the rounds
     * below overlap with them however the threads are scheduled */
    for (int64_t t0 = od_test_mono_ms();
         (!atomic_load(&sh.inspects) || !atomic_load(&sh.refreshes)) && od_test_mono_ms() - t0 < 30000;)
        od_test_sleep_ms(1);
    assert_true(atomic_load(&sh.inspects) > 0);
    assert_true(atomic_load(&sh.refreshes) > 0);
    int inspects0 = atomic_load(&sh.inspects), refreshes0 = atomic_load(&sh.refreshes);
    int rounds = (int)(60 * od_test_scale());
    if (rounds < 10) rounds = 10;
    for (int r = 0; r < rounds; r++) {
        od_batch *bt = od_batch_new();
        for (int i = 0; i < 20; i++) {
            char k[32];
            snprintf(k, sizeof k, "r%03d-k%02d", r, i);
            assert_int_equal(od_batch_put(bt, k, strlen(k), k, strlen(k)), OD_OK);
        }
        assert_int_equal(od_db_write(w, bt, 1, NULL, &err), OD_OK);
        od_batch_free(bt);
        assert_int_equal(od_db_flush(w, 1, &err), OD_OK); /* a new manifest version */
    }
    atomic_store(&sh.stop, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(atomic_load(&sh.bad), 0);
    printf("%d inspects and %d refreshes during %d commits\n", atomic_load(&sh.inspects) - inspects0,
           atomic_load(&sh.refreshes) - refreshes0, rounds);

    assert_int_equal(od_db_refresh(sh.ro, &err), OD_OK);
    for (int r = 0; r < rounds; r++) {
        char k[32];
        snprintf(k, sizeof k, "r%03d-k%02d", r, 19);
        od_buf v = {0};
        if (od_db_get(sh.ro, NULL, k, strlen(k), &v, &err) != OD_OK) fail_msg("follower misses %s", k);
        od_buf_free(&v);
    }
    assert_int_equal(od_db_close(sh.ro, &err), OD_OK);
    assert_int_equal(od_db_close(w, &err), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_vs_inspect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
