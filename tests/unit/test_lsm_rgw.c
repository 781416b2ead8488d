/*
 * test_lsm_rgw.c — the storage engine on s3:// against a real S3 implementation, Ceph radosgw
 * (run under scripts/with-rgw.sh, which exports OD_TEST_S3_URI).
 *
 * radosgw honours If-None-Match / If-Match, so the engine's compare-and-set paths (manifest
 * versions, WAL fence objects, the lease) meet a real store here. The same checks as on
 * file:// (tests/support/od_lsmtest.c), each on its own sub-prefix:
 *   - the probe's verdict: a writer opens (conditional writes honoured, no single_writer);
 *   - fencing: takeover across processes, lease expiry, compactor fencing, a compactor process;
 *   - the crash test with fewer kill points (max(10, 20·OD_TEST_SCALE)) — every acknowledged
 *     batch survives SIGKILL at random moments;
 *   - the randomized model test with fewer steps (max(300, 1200·OD_TEST_SCALE));
 *   - request economy: writes of many threads within one flush interval go out as few WAL
 *     PUTs, and a cold point get on a compacted store costs a bounded number of GETs;
 *     compaction reads each input table with a few large ranged GETs, not one per data block
 *     (it did one per block: 54 s to compact 22 MB behind 20-50 ms of latency per request).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_s3test.h"
#include "od_testutil.h"

static char child_path[4096];

static void test_writer_opens(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("opens", NULL);
    od_db_options o;
    od_db_options_init(&o);
    o.gc_interval_ms = 0;
    od_db *db;
    od_err err;
    if (od_db_open(uri, &o, &db, &err)) fail_msg("writer open on radosgw: %s", err.msg);
    od_store_caps caps;
    od_store_get_caps(od_db_store(db), &caps);
    assert_int_equal(caps.conditional_writes, 1);
    assert_int_equal(caps.single_writer_only, 0);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    free(uri);
}

static void test_takeover(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("takeover", NULL);
    char side[] = "/tmp/od-lsm-rgw-acks-XXXXXX";
    int fd = mkstemp(side);
    assert_true(fd >= 0);
    close(fd);
    od_lsmtest_takeover(uri, side);
    unlink(side);
    free(uri);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("lease", NULL);
    od_lsmtest_lease_expiry(uri, 2500); /* child write + exit + our open: well inside, even under load */
    free(uri);
}

static void test_compactor_fencing(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("cfence", NULL);
    od_lsmtest_compactor_fencing(uri);
    free(uri);
}

static void test_compactor_process(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("cproc", NULL);
    od_lsmtest_compactor_process(uri);
    free(uri);
}

static void test_crash(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("crash", NULL);
    char side[] = "/tmp/od-lsm-rgw-crash-XXXXXX";
    int fd = mkstemp(side);
    assert_true(fd >= 0);
    close(fd);
    int kills = (int)(20 * od_test_scale());
    if (kills < 10) kills = 10;
    od_lsmtest_crash(child_path, uri, side, kills, 400); /* opening on S3 takes longer: later kills */
    unlink(side);
    free(uri);
}

static void test_model(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("model", NULL);
    int steps = (int)(1200 * od_test_scale());
    od_lsmtest_model(uri, steps < 300 ? 300 : steps);
    free(uri);
}

/* 8 threads × 25 acknowledged writes with a 50 ms flush interval: the WAL carries them in
 * far fewer PUTs than writes (one per interval, not per write). Then, after a flush and a
 * compaction, a fresh read-only handle answers a point get with a bounded number of GETs. */
typedef struct wr_arg {
    od_db *db;
    int id, n, rc;
    char msg[600];
} wr_arg;

static void *wr_main(void *p)
{
    wr_arg *a = p;
    od_batch *b = od_batch_new();
    if (!b) {
        a->rc = OD_NOMEM;
        return NULL;
    }
    for (int i = 0; i < a->n && !a->rc; i++) {
        char k[32], v[32];
        int kl = snprintf(k, sizeof k, "t%d-%04d", a->id, i);
        int vl = snprintf(v, sizeof v, "v%d-%d", a->id, i);
        od_batch_clear(b);
        od_batch_put(b, k, (size_t)kl, v, (size_t)vl);
        od_err e;
        a->rc = od_db_write(a->db, b, 1, NULL, &e);
        if (a->rc) snprintf(a->msg, sizeof a->msg, "%s", e.msg);
    }
    od_batch_free(b);
    return NULL;
}

static void test_request_economy(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("economy", NULL);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 50;
    o.gc_interval_ms = 0;
    o.compactor = 0;
    od_db *db;
    od_err err;
    if (od_db_open(uri, &o, &db, &err)) fail_msg("open: %s", err.msg);
    od_db_stats s0, s1;
    od_db_get_stats(db, &s0);
    enum { NT = 8, NW = 25 };
    pthread_t th[NT];
    wr_arg args[NT];
    for (int i = 0; i < NT; i++) {
        args[i] = (wr_arg){.db = db, .id = i, .n = NW};
        assert_int_equal(pthread_create(&th[i], NULL, wr_main, &args[i]), 0);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++)
        if (args[i].rc) fail_msg("thread %d: %s", i, args[i].msg);
    od_db_get_stats(db, &s1);
    uint64_t wal = s1.wal_flushes - s0.wal_flushes;
    uint64_t puts = s1.store.requests[OD_REQ_PUT] - s0.store.requests[OD_REQ_PUT];
    printf("%d acknowledged writes from %d threads: %llu WAL objects, %llu PUTs\n", NT * NW, NT,
           (unsigned long long)wal, (unsigned long long)puts);
    /* each thread waits for its write, so one interval carries up to NT writes */
    assert_true(wal >= NW / 2);
    assert_true(wal <= (uint64_t)(NT * NW) / 3);
    assert_true(puts <= wal + 10); /* WAL objects plus the odd lease renewal */
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    od_db_options ro;
    od_db_options_init(&ro);
    ro.read_only = 1;
    if (od_db_open(uri, &ro, &db, &err)) fail_msg("read-only open: %s", err.msg);
    od_db_get_stats(db, &s0);
    od_buf v = {0};
    assert_int_equal(od_db_get(db, NULL, "t3-0007", 7, &v, &err), OD_OK);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.data, "v3-7", 4);
    od_db_get_stats(db, &s1);
    uint64_t gets = s1.store.requests[OD_REQ_GET] + s1.store.requests[OD_REQ_GET_RANGE] -
                    s0.store.requests[OD_REQ_GET] - s0.store.requests[OD_REQ_GET_RANGE];
    printf("cold point get after compaction: %llu GETs, %llu bytes\n", (unsigned long long)gets,
           (unsigned long long)(s1.store.bytes_in - s0.store.bytes_in));
    assert_true(gets >= 1 && gets <= 4);
    /* warm: from the block cache, no request */
    od_db_get_stats(db, &s0);
    assert_int_equal(od_db_get(db, NULL, "t3-0008", 7, &v, &err), OD_OK);
    od_db_get_stats(db, &s1);
    assert_int_equal(s1.store.requests[OD_REQ_GET] + s1.store.requests[OD_REQ_GET_RANGE],
                     s0.store.requests[OD_REQ_GET] + s0.store.requests[OD_REQ_GET_RANGE]);
    od_buf_free(&v);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    free(uri);
}

static uint8_t rnd_byte(void)
{
    static uint64_t x = 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (uint8_t)(x >> 24);
}

/* Compaction of two L0 tables of ~300 data blocks each (block_size 1 KiB) reads them in
 * readahead windows: a handful of ranged GETs, not ~600. */
static void test_compaction_reads(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("compaction-reads", NULL);
    od_db_options o;
    od_db_options_init(&o);
    o.block_size = 1024;
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.block_cache_bytes = 1 << 20;
    od_db *db;
    od_err err;
    if (od_db_open(uri, &o, &db, &err)) fail_msg("open: %s", err.msg);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    char val[100];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3000; i += 100) {
            od_batch_clear(b);
            for (int j = i; j < i + 100; j++) {
                char k[32];
                int kl = snprintf(k, sizeof k, "key-%06d-%d", j * 2 + round, round);
                for (size_t x = 0; x < sizeof val; x++) val[x] = (char)(rnd_byte() & 0x7f); /* incompressible */
                assert_int_equal(od_batch_put(b, k, (size_t)kl, val, sizeof val), OD_OK);
            }
            assert_int_equal(od_db_write(db, b, 0, NULL, &err), OD_OK);
        }
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    od_batch_free(b);
    od_db_stats s0, s1;
    od_db_get_stats(db, &s0);
    assert_int_equal(s0.l0_count, 2);
    if (od_db_compact(db, &err)) fail_msg("compact: %s", err.msg);
    od_db_get_stats(db, &s1);
    uint64_t ranged = s1.store.requests[OD_REQ_GET_RANGE] - s0.store.requests[OD_REQ_GET_RANGE];
    uint64_t whole = s1.store.requests[OD_REQ_GET] - s0.store.requests[OD_REQ_GET];
    printf("compaction of 2 L0 tables (%llu bytes in): %llu ranged GETs, %llu GETs\n",
           (unsigned long long)(s1.store.bytes_in - s0.store.bytes_in), (unsigned long long)ranged,
           (unsigned long long)whole);
    assert_int_equal(s1.l0_count, 0);
    assert_true(s1.store.bytes_in - s0.store.bytes_in > 200 * 1024); /* it did read both tables */
    assert_true(ranged + whole <= 12);
    /* the result is complete */
    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &err), OD_OK);
    int n = 0;
    while (od_iter_valid(it)) {
        n++;
        assert_int_equal(od_iter_next(it, &err), OD_OK);
    }
    od_iter_free(it);
    assert_int_equal(n, 6000);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    free(uri);
}

int main(int argc, char **argv)
{
    (void)argc;
    od_lsmtest_tool_path(argv[0], "lsm_crash_child", child_path, sizeof child_path);
    if (access(child_path, X_OK) != 0) {
        fprintf(stderr, "test_lsm_rgw: cannot find %s: %s\n", child_path, strerror(errno));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_opens),
        cmocka_unit_test(test_request_economy),
        cmocka_unit_test(test_compaction_reads),
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_compactor_fencing),
        cmocka_unit_test(test_compactor_process),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
