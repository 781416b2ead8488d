/*
 * test_lsm_wal_eager.c — when the WAL thread ships a pending object.
 *
 * Rule (wal_main in db.c): a pending WAL object goes out when its first batch has waited
 * flush_interval_ms, or at once when the previous WAL PUT started at least flush_interval_ms
 * ago. So:
 *   - an isolated durable write on an idle handle is acknowledged long before the interval
 *     (2 s interval here: it must complete in under half of it, a margin no loaded machine
 *     needs for one tiny PUT to mem://), and so is the next one after another idle interval;
 *   - a durable write right behind another one waits for the interval (PUTs still start at
 *     most once per interval);
 *   - under a continuous load of writes, WAL PUTs stay at ≤ 1 per interval (counted with
 *     od_db_get_stats' wal_flushes and the store's PUT requests). The rule spaces PUT starts at
 *     least an interval apart, so scheduling delays only make PUTs rarer: the bound is the
 *     elapsed time (measured around the whole window) over the interval, plus one.
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
#include <time.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "od_testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put_one(od_db *db, int i, int durable)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    char k[32];
    int kl = snprintf(k, sizeof k, "key%08d", i);
    assert_int_equal(od_batch_put(b, k, (size_t)kl, "v", 1), OD_OK);
    od_err e;
    int rc = od_db_write(db, b, durable, NULL, &e);
    if (rc) fail_msg("write: %s", e.msg);
    od_batch_free(b);
}

static void test_idle_durable_write_is_not_delayed(void **state)
{
    (void)state;
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2000;
    o.gc_interval_ms = 0;
    od_db *db;
    od_err e;
    assert_int_equal(od_db_open("mem://lsm-wal-eager-idle", &o, &db, &e), OD_OK);

    double t0 = now_s();
    put_one(db, 1, 1);
    double first = now_s() - t0;
    assert_true(first < 1.0); /* was ≥ 2 s: the whole interval */

    /* right behind it: the PUT waits for the interval since the previous one started */
    t0 = now_s();
    put_one(db, 2, 1);
    double second = now_s() - t0;
    assert_true(second > 1.0); /* the PUT waits until 2 s after the first one started */

    /* idle for an interval again: the next durable write goes out at once */
    struct timespec ts = {2, 100000000};
    nanosleep(&ts, NULL);
    t0 = now_s();
    put_one(db, 3, 1);
    double third = now_s() - t0;
    assert_true(third < 1.0);

    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_int_equal(st.wal_flushes, 3);
    assert_int_equal(od_db_close(db, &e), OD_OK);
}

struct load_ctx {
    od_db *db;
    _Atomic int stop;
    long writes;
};

static void *writer_main(void *arg)
{
    struct load_ctx *c = arg;
    od_batch *b = od_batch_new();
    if (!b) return NULL;
    char val[64];
    memset(val, 'x', sizeof val);
    while (!atomic_load(&c->stop)) {
        od_batch_clear(b);
        for (int j = 0; j < 10; j++) {
            char k[32];
            int kl = snprintf(k, sizeof k, "load%010ld", c->writes * 10 + j);
            od_batch_put(b, k, (size_t)kl, val, sizeof val);
        }
        od_err e;
        if (od_db_write(c->db, b, 0, NULL, &e)) break;
        c->writes++;
        if (c->writes % 16 == 0) {
            struct timespec ts = {0, 1000000}; /* 1 ms: a steady stream (≤ ~10 MB/s), not a spin */
            nanosleep(&ts, NULL);
        }
    }
    od_batch_free(b);
    return NULL;
}

static void test_load_keeps_one_put_per_interval(void **state)
{
    (void)state;
    od_store *s;
    od_err e;
    assert_int_equal(od_store_open("mem://lsm-wal-eager-load", &s, &e), OD_OK);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 100;
    o.wal_flush_bytes = 1u << 30; /* only the interval triggers a flush, not the size */
    o.max_unflushed_bytes = 1u << 30;
    o.gc_interval_ms = 0;
    o.compactor = 0;
    od_db *db;
    assert_int_equal(od_db_open_store(s, &o, &db, &e), OD_OK);
    double t0 = now_s(); /* the counting window: from before the first counts ... */
    od_db_stats st0;
    od_db_get_stats(db, &st0);
    od_store_stats ss0;
    od_store_get_stats(s, &ss0);

    struct load_ctx c = {.db = db};
    pthread_t th;
    double secs = 1.5 * od_test_scale();
    if (secs < 1.0) secs = 1.0;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &c), 0);
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&c.stop, 1);
    pthread_join(th, NULL);
    od_db_stats st;
    od_db_get_stats(db, &st);
    od_store_stats ss;
    od_store_get_stats(s, &ss);
    double elapsed = now_s() - t0; /* ... to after the last ones */
    uint64_t flushes = st.wal_flushes - st0.wal_flushes;
    uint64_t puts = ss.requests[OD_REQ_PUT] - ss0.requests[OD_REQ_PUT];
    assert_true(c.writes > 100);
    /* one eager PUT at the start, then at most one per started interval */
    uint64_t bound = (uint64_t)(elapsed * 1000.0 / o.flush_interval_ms) + 2;
    if (flushes > bound || puts > bound + 2)
        fail_msg("%llu WAL objects / %llu PUTs in %.2f s at a %u ms interval (bound %llu)",
                 (unsigned long long)flushes, (unsigned long long)puts, elapsed, o.flush_interval_ms,
                 (unsigned long long)bound);
    assert_true(flushes >= 3); /* the load did flush repeatedly */
    assert_int_equal(od_db_close(db, &e), OD_OK);
    od_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_durable_write_is_not_delayed),
        cmocka_unit_test(test_load_keeps_one_put_per_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
