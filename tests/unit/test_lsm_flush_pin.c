/*
 * test_lsm_flush_pin.c — GC in the writer's own process must not delete an L0 flush output
 * whose manifest commit is slow (docs/architecture.md, GC: in-flight flush outputs are pinned).
 *
 * An L0 flush PUTs its collection, then commits it to the manifest. Between the two the
 * object is named by no manifest; with a tiny gc_min_age_ms only the flush's pin keeps GC
 * (od_gc_run, which lists sst/ before reading the manifest) from deleting it, after which
 * the committed manifest would name a deleted object.
 *
 * The store wrapper here has two gates and two delays:
 *   - test_gated: GC's LIST of sst/ is held; meanwhile a flush PUTs its collection and its
 *     manifest commit (conditional create of manifest/...) is held; the collection ages past
 *     gc_min_age_ms; GC is released (it lists the collection, reads a manifest without it),
 *     then the commit. The collection must still exist, every key must read back, also
 *     after reopening. (mem:// and file://.)
 *   - test_stress: every manifest commit and every sst/ LIST is slowed, a thread runs GC in a
 *     loop (its first pass done before the first round), the writer flushes round after round
 *     (compaction on); every key of every round
 *     reads back, also after reopening, and every collection the manifest names exists.
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
#include <unistd.h>

#include <cmocka.h>

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_objstore_impl.h"
#include "od_testutil.h"

/* ---------------- the gate store ---------------- */

typedef struct gate {
    int armed, blocked, released;
} gate;

typedef struct gstore {
    od_store base;
    od_store *inner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gate list_sst; /* the next LIST of sst/ */
    gate put_man;  /* the next conditional create of manifest/... */
    _Atomic int man_delay_ms, list_delay_ms; /* stress: slow every manifest commit / sst/ LIST */
} gstore;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void gate_pass(gstore *g, gate *t)
{
    pthread_mutex_lock(&g->mu);
    if (t->armed) {
        t->armed = 0;
        t->blocked = 1;
        pthread_cond_broadcast(&g->cv);
        while (!t->released) pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_arm(gstore *g, gate *t)
{
    pthread_mutex_lock(&g->mu);
    t->armed = 1;
    t->blocked = t->released = 0;
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait_blocked(gstore *g, gate *t)
{
    pthread_mutex_lock(&g->mu);
    while (!t->blocked) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gstore *g, gate *t)
{
    pthread_mutex_lock(&g->mu);
    t->released = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int g_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    return od_store_get(((gstore *)s)->inner, key, out, meta, err);
}
static int g_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    return od_store_get_range(((gstore *)s)->inner, key, off, len, out, err);
}
static int g_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    return od_store_head(((gstore *)s)->inner, key, meta, err);
}
static int g_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    gstore *g = (gstore *)s;
    if (mode == OD_PUT_IF_ABSENT && strncmp(key, "manifest/", 9) == 0) {
        gate_pass(g, &g->put_man);
        int d = atomic_load(&g->man_delay_ms);
        if (d) sleep_ms(d);
    }
    return od_store_put(g->inner, key, data, len, mode, etag, meta_out, err);
}
static int g_del(od_store *s, const char *key, od_err *err)
{
    return od_store_delete(((gstore *)s)->inner, key, err);
}
static int g_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    gstore *g = (gstore *)s;
    int sst = strcmp(prefix, "sst/") == 0, d = sst ? atomic_load(&g->list_delay_ms) : 0;
    if (sst) gate_pass(g, &g->list_sst);
    if (d) sleep_ms(d / 2); /* a slow LIST: its view is taken in the middle */
    int rc = od_store_list(g->inner, prefix, start_after, cb, ctx, err);
    if (d) sleep_ms(d - d / 2);
    return rc;
}
static void g_close(od_store *s)
{
    gstore *g = (gstore *)s;
    od_store_close(g->inner);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    od_store_destroy_base(s);
    free(g);
}
static const od_store_ops g_ops = {g_get, g_get_range, g_head, g_put, g_del, g_list, g_close};

static gstore *gstore_open(const char *uri)
{
    gstore *g = calloc(1, sizeof *g);
    assert_non_null(g);
    od_err err;
    assert_int_equal(od_store_open(uri, &g->inner, &err), OD_OK);
    od_store_init_base(&g->base, &g_ops, "gate");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

/* ---------------- helpers ---------------- */

static int count_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)key;
    (void)meta;
    (*(int *)ctx)++;
    return 0;
}

static int count_ssts(od_store *s)
{
    int n = 0;
    od_err err;
    assert_int_equal(od_store_list(s, "sst/", NULL, count_cb, &n, &err), OD_OK);
    return n;
}

static void write_round(od_db *db, int round, int nkeys)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    for (int i = 0; i < nkeys; i++) {
        char k[32], v[48];
        snprintf(k, sizeof k, "r%04d-k%05d", round, i);
        snprintf(v, sizeof v, "value-%d-%d", round, i);
        assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
    }
    od_err err;
    int rc = od_db_write(db, b, 1, NULL, &err);
    if (rc) fail_msg("write round %d: %s", round, err.msg);
    od_batch_free(b);
}

static void check_rounds(od_db *db, int rounds, int nkeys)
{
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < nkeys; i++) {
            char k[32], v[48];
            snprintf(k, sizeof k, "r%04d-k%05d", r, i);
            snprintf(v, sizeof v, "value-%d-%d", r, i);
            od_buf got = {0};
            od_err err;
            int rc = od_db_get(db, NULL, k, strlen(k), &got, &err);
            if (rc) fail_msg("%s: rc %d (%s)", k, rc, err.msg);
            assert_int_equal(got.len, strlen(v));
            assert_memory_equal(got.data, v, got.len);
            od_buf_free(&got);
        }
}

/* Every collection the latest manifest names exists in the store. */
static void check_manifest_complete(od_store *s)
{
    od_manifest m;
    od_err err;
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    char key[96];
    od_obj_meta meta;
    for (size_t i = 0; i < m.nl0; i++) {
        od_sst_key(key, sizeof key, m.l0[i].id);
        if (od_store_head(s, key, &meta, &err) != OD_OK) fail_msg("manifest names deleted L0 %s", key);
    }
    for (size_t r = 0; r < m.nruns; r++)
        for (size_t i = 0; i < m.runs[r].n; i++) {
            od_sst_key(key, sizeof key, m.runs[r].ssts[i].id);
            if (od_store_head(s, key, &meta, &err) != OD_OK) fail_msg("manifest names deleted %s", key);
        }
    od_manifest_free(&m);
}

static int nkeys_scaled(int n)
{
    int k = (int)(n * od_test_scale());
    return k < 10 ? 10 : k;
}

typedef struct job {
    od_db *db;
    int rc;
    od_err err;
} job;

static void *gc_once(void *arg)
{
    job *j = arg;
    j->rc = od_db_gc(j->db, &j->err);
    return NULL;
}

static void *flush_once(void *arg)
{
    job *j = arg;
    j->rc = od_db_flush(j->db, 1, &j->err);
    return NULL;
}

/* ---------------- the gated interleaving ---------------- */

static void run_gated(const char *uri)
{
    gstore *g = gstore_open(uri);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.compactor = 0;
    o.gc_interval_ms = 0; /* GC only when the test runs it */
    o.gc_min_age_ms = 5;
    od_db *db;
    od_err err;
    assert_int_equal(od_db_open_store(&g->base, &o, &db, &err), OD_OK);
    int nkeys = nkeys_scaled(400);
    write_round(db, 0, nkeys);
    assert_int_equal(count_ssts(g->inner), 0);

    /* GC gets as far as its LIST of sst/ */
    gate_arm(g, &g->list_sst);
    gate_arm(g, &g->put_man);
    job gj = {db, -1, {0}}, fj = {db, -1, {0}};
    pthread_t gt, ft;
    assert_int_equal(pthread_create(&gt, NULL, gc_once, &gj), 0);
    gate_wait_blocked(g, &g->list_sst);
    /* the flush PUTs its collection and stalls in its manifest commit */
    assert_int_equal(pthread_create(&ft, NULL, flush_once, &fj), 0);
    gate_wait_blocked(g, &g->put_man);
    assert_int_equal(count_ssts(g->inner), 1);
    sleep_ms(4 * (int)o.gc_min_age_ms + 20); /* older than the min age */
    /* GC lists the uncommitted collection and reads a manifest that does not name it */
    gate_release(g, &g->list_sst);
    assert_int_equal(pthread_join(gt, NULL), 0);
    if (gj.rc) fail_msg("gc: %s", gj.err.msg);
    if (count_ssts(g->inner) != 1) fail_msg("GC deleted the L0 collection of a flush still committing");
    gate_release(g, &g->put_man);
    assert_int_equal(pthread_join(ft, NULL), 0);
    if (fj.rc) fail_msg("flush: %s", fj.err.msg);

    /* the memtable is gone from the view: reads go to the committed collection */
    check_rounds(db, 1, nkeys);
    check_manifest_complete(g->inner);
    assert_int_equal(od_db_gc(db, &err), OD_OK); /* committed now: referenced by the manifest */
    assert_int_equal(count_ssts(g->inner), 1);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    assert_int_equal(od_db_open_store(&g->base, &o, &db, &err), OD_OK);
    check_rounds(db, 1, nkeys);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(&g->base);
}

static void test_gated_mem(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://flush-pin-%d", (int)getpid());
    run_gated(uri);
}

static void test_gated_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-flush-pin", run_gated);
}

/* ---------------- GC in a loop beside slow commits ---------------- */

typedef struct gc_loop {
    od_db *db;
    _Atomic int stop;
    _Atomic int passes;
    int fails;
    od_err err;
} gc_loop;

static void *gc_loop_main(void *arg)
{
    gc_loop *l = arg;
    while (!atomic_load(&l->stop)) {
        od_err e;
        if (od_db_gc(l->db, &e) != OD_OK) {
            l->fails++;
            l->err = e;
        }
        atomic_fetch_add(&l->passes, 1);
    }
    return NULL;
}

static void test_stress(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://flush-pin-stress-%d", (int)getpid());
    gstore *g = gstore_open(uri);
    atomic_store(&g->man_delay_ms, 15);
    atomic_store(&g->list_delay_ms, 6);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.compactor = 1;
    o.l0_compaction_trigger = 4;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = 2;
    od_db *db;
    od_err err;
    assert_int_equal(od_db_open_store(&g->base, &o, &db, &err), OD_OK);
    gc_loop l = {.db = db};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, gc_loop_main, &l), 0);
    /* the GC loop is running before the first round (so it overlaps the rounds however the
     * threads are scheduled) */
    for (int64_t t0 = od_test_mono_ms(); !atomic_load(&l.passes) && od_test_mono_ms() - t0 < 30000;) sleep_ms(1);
    assert_true(atomic_load(&l.passes) > 0);
    int rounds = nkeys_scaled(40), nkeys = 50;
    for (int r = 0; r < rounds; r++) {
        write_round(db, r, nkeys);
        int rc = od_db_flush(db, 1, &err);
        if (rc) fail_msg("flush round %d: %s", r, err.msg);
        check_rounds(db, r + 1, nkeys); /* every round so far, from L0 and runs */
    }
    atomic_store(&l.stop, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (l.fails) fail_msg("%d of %d GC passes failed, last: %s", l.fails, atomic_load(&l.passes), l.err.msg);
    check_manifest_complete(g->inner);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    atomic_store(&g->man_delay_ms, 0);
    atomic_store(&g->list_delay_ms, 0);
    assert_int_equal(od_db_open_store(&g->base, &o, &db, &err), OD_OK);
    check_rounds(db, rounds, nkeys);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(&g->base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gated_mem),
        cmocka_unit_test(test_gated_file),
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
