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
 * seed (printed on start so a failure can be replayed).
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

#define NKEYS 300
#define MAXV 120

typedef struct model {
    int present[NKEYS];
    size_t vlen[NKEYS];
    char val[NKEYS][MAXV];
} model;

static uint64_t rng;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static double scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static void keyname(int i, char *buf)
{
    snprintf(buf, 16, "key%05d", i);
}

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

static void check_get(od_db *db, const od_snapshot *snap, const model *m, int k)
{
    char key[16];
    keyname(k, key);
    od_buf v = {0};
    od_err err;
    int rc = od_db_get(db, snap, key, strlen(key), &v, &err);
    if (m->present[k]) {
        if (rc != OD_OK) fail_msg("get %s: expected a value, got %s (%s)", key, od_code_name(rc), err.msg);
        assert_int_equal(v.len, m->vlen[k]);
        if (v.len) assert_memory_equal(v.data, m->val[k], v.len);
    } else {
        if (rc != OD_NOTFOUND) fail_msg("get %s: expected not found, got %s", key, od_code_name(rc));
    }
    od_buf_free(&v);
}

static void check_scan(od_db *db, const od_snapshot *snap, const model *m, int lo, int hi)
{
    char lk[16], hk[16];
    keyname(lo, lk);
    keyname(hi, hk);
    od_iter *it;
    od_err err;
    int rc = od_db_iter(db, snap, lk, strlen(lk), hi < NKEYS ? hk : NULL, hi < NKEYS ? strlen(hk) : 0, &it, &err);
    if (rc) fail_msg("iter: %s", err.msg);
    int k = lo;
    for (;;) {
        while (k < hi && !m->present[k]) k++;
        if (k >= hi) break;
        if (!od_iter_valid(it)) fail_msg("scan [%d,%d): ended before key %d", lo, hi, k);
        char key[16];
        keyname(k, key);
        size_t kl, vl;
        const uint8_t *kp = od_iter_key(it, &kl);
        const uint8_t *vp = od_iter_value(it, &vl);
        if (kl != strlen(key) || memcmp(kp, key, kl) != 0)
            fail_msg("scan [%d,%d): expected %s, got %.*s", lo, hi, key, (int)kl, (const char *)kp);
        assert_int_equal(vl, m->vlen[k]);
        if (vl) assert_memory_equal(vp, m->val[k], vl);
        assert_int_equal(od_iter_next(it, &err), OD_OK);
        k++;
    }
    if (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *kp = od_iter_key(it, &kl);
        fail_msg("scan [%d,%d): unexpected extra key %.*s", lo, hi, (int)kl, (const char *)kp);
    }
    od_iter_free(it);
}

static void check_all(od_db *db, const od_snapshot *snap, const model *m)
{
    check_scan(db, snap, m, 0, NKEYS);
    for (int i = 0; i < 20; i++) check_get(db, snap, m, (int)(rnd() % NKEYS));
}

static void random_batch(od_db *db, model *m)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    model next = *m;
    int n = 1 + (int)(rnd() % 8);
    int64_t now = (int64_t)time(NULL) * 1000;
    for (int i = 0; i < n; i++) {
        int k = (int)(rnd() % NKEYS);
        char key[16];
        keyname(k, key);
        uint32_t r = rnd() % 100;
        if (r < 60 || r >= 85) {
            size_t vl = rnd() % MAXV;
            char v[MAXV];
            for (size_t j = 0; j < vl; j++) v[j] = (char)('a' + rnd() % 26);
            int64_t exp = 0;
            if (r >= 85) exp = (rnd() & 1) ? now - 1000 - (int64_t)(rnd() % 100000) : now + 3600 * 1000;
            assert_int_equal(od_batch_put_ttl(b, key, strlen(key), v, vl, exp), OD_OK);
            if (exp && exp < now) {
                next.present[k] = 0;
            } else {
                next.present[k] = 1;
                next.vlen[k] = vl;
                memcpy(next.val[k], v, vl);
            }
        } else {
            assert_int_equal(od_batch_delete(b, key, strlen(key)), OD_OK);
            next.present[k] = 0;
        }
    }
    od_err err;
    uint64_t seq = 0;
    int rc = od_db_write(db, b, (rnd() % 10) == 0, &seq, &err);
    if (rc) fail_msg("write: %s", err.msg);
    assert_true(seq > 0);
    *m = next;
    od_batch_free(b);
}

static void run_model(const char *uri)
{
    const char *seed_env = getenv("OD_TEST_SEED");
    rng = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (!rng) rng = 1;
    printf("model test on %s, seed %llu\n", uri, (unsigned long long)rng);
    static model m, snap_m;
    memset(&m, 0, sizeof m);
    od_db *db;
    open_db(uri, &db, 0);
    od_snapshot *snap = NULL;
    od_err err;
    int steps = (int)(6000 * scale());
    int reopens = 0, compactions = 0, ro_checks = 0, snaps_checked = 0;
    uint64_t last_seq_seen = 0, total_flushes = 0, total_wal = 0;
    for (int step = 0; step < steps; step++) {
        uint32_t r = rnd() % 1000;
        if (r < 600) {
            random_batch(db, &m);
        } else if (r < 750) {
            check_get(db, NULL, &m, (int)(rnd() % NKEYS));
        } else if (r < 820) {
            int lo = (int)(rnd() % NKEYS), hi = lo + (int)(rnd() % 60);
            check_scan(db, NULL, &m, lo, hi > NKEYS ? NKEYS : hi);
        } else if (r < 850) {
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
        } else if (r < 880) {
            if (od_db_flush(db, 1, &err)) fail_msg("flush: %s", err.msg);
        } else if (r < 895) {
            if (od_db_compact(db, &err)) fail_msg("compact: %s", err.msg);
            compactions++;
        } else if (r < 905) {
            if (snap) {
                check_all(db, snap, &snap_m);
                od_snapshot_release(snap);
                snap = NULL;
            }
            od_db_stats st;
            od_db_get_stats(db, &st);
            assert_true(st.last_seq >= last_seq_seen);
            last_seq_seen = st.last_seq;
            total_flushes += st.memtable_flushes;
            total_wal += st.wal_flushes;
            if (od_db_close(db, &err)) fail_msg("close: %s", err.msg);
            open_db(uri, &db, 0);
            od_db_get_stats(db, &st);
            assert_int_equal(st.last_seq, last_seq_seen); /* every batch came back */
            check_all(db, NULL, &m);
            reopens++;
        } else if (r < 930) {
            if (snap) {
                check_all(db, snap, &snap_m);
                snaps_checked++;
                od_snapshot_release(snap);
            }
            assert_int_equal(od_db_snapshot(db, &snap, &err), OD_OK);
            snap_m = m;
        } else if (r < 945) {
            /* a follower sees everything durable, and more after refresh */
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
            od_db *ro;
            open_db(uri, &ro, 1);
            check_all(ro, NULL, &m);
            random_batch(db, &m);
            if (rnd() & 1) assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
            if (od_db_refresh(ro, &err)) fail_msg("refresh: %s", err.msg);
            check_all(ro, NULL, &m);
            od_batch *b = od_batch_new();
            assert_non_null(b);
            assert_int_equal(od_batch_put(b, "x", 1, "y", 1), OD_OK);
            assert_int_equal(od_db_write(ro, b, 0, NULL, &err), OD_BADREQ);
            od_batch_free(b);
            assert_int_equal(od_db_close(ro, &err), OD_OK);
            ro_checks++;
        } else {
            check_all(db, NULL, &m);
        }
    }
    if (snap) {
        check_all(db, snap, &snap_m);
        od_snapshot_release(snap);
    }
    check_all(db, NULL, &m);
    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_true(total_wal + st.wal_flushes > 0);
    assert_true(total_flushes + st.memtable_flushes > 0);
    od_buf js = {0};
    assert_int_equal(od_db_inspect(db, &js, &err), OD_OK);
    assert_non_null(strstr((char *)js.data, "\"writer_epoch\""));
    od_buf_free(&js);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    open_db(uri, &db, 0);
    check_all(db, NULL, &m);
    if (od_db_compact(db, &err)) fail_msg("compact: %s", err.msg);
    check_all(db, NULL, &m);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    printf("  %d steps, %d reopens, %d compactions, %d snapshots checked, %d follower checks\n", steps, reopens,
           compactions, snaps_checked, ro_checks);
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
    run_model(uri);
    od_store_close(keep);
}

static void test_model_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-model-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128];
    snprintf(uri, sizeof uri, "file://%s", dir);
    run_model(uri);
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
