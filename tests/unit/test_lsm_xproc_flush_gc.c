/*
 * test_lsm_xproc_flush_gc.c — GC in another process (a compactor process) must not delete an
 * L0 flush output whose manifest commit comes late, however late (docs/architecture.md,
 * "Garbage collection": flush pins).
 *
 * An L0 flush PUTs its collection and then commits it to the manifest. In between, no
 * manifest names the object, and the writer's in-memory pin is invisible to another process.
 * Before the pin objects (pin/<writer epoch>-<id>.pin), only gc_min_age_ms protected it there:
 * a writer paused between the PUT and the commit for longer than that (a suspended process, a
 * slow store, retried commits) lost the collection to the compactor's GC, committed a
 * reference to a missing object, and the WAL behind it was collected next: acknowledged data
 * gone.
 *
 *   held_commit (mem:// and file://): a writer (compactor=0) and a compactor_only handle on
 *     its own store handle (no shared memory pins: as another process) share a store with a
 *     tiny gc_min_age_ms. The writer's flush PUTs its collection and its manifest commit is
 *     held (tests/support/od_holdstore) until the collection is far older than the minimum
 *     age; the compactor runs GC meanwhile. The collection must survive; the commit is then
 *     released (last_l0_seq then covers every write: a reopened writer reads round 1 from the
 *     collection alone); after more GC and a reopen every key equals the model, and every
 *     collection the manifest names exists. (Fails without the pin objects: "GC in the
 *     compactor deleted ...".)
 *   pin_rules: crafted pins on a store with two writer epochs behind it: a pin of the current
 *     epoch keeps its (old, unreferenced) collection from a compactor's GC; a pin of an older
 *     epoch is stale, deleted with its collection; a collection without a pin goes; the
 *     writer's own GC deletes a pin of its epoch that none of its flushes holds in memory (a
 *     leftover of a failed DELETE), and the collection with it.
 */
#include <pthread.h>
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

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_holdstore.h"
#include "od_lsmtest.h"
#include "od_testutil.h"

#define MIN_AGE_MS 40
#define DEADLINE_MS 30000

/* ---------------- helpers ---------------- */

typedef struct keylist {
    char **v;
    size_t n;
} keylist;

static int keylist_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)meta;
    keylist *l = ctx;
    char **nv = realloc(l->v, (l->n + 1) * sizeof *nv);
    assert_non_null(nv);
    l->v = nv;
    l->v[l->n] = strdup(key);
    assert_non_null(l->v[l->n]);
    l->n++;
    return 0;
}

static keylist list_keys(od_store *s, const char *prefix)
{
    keylist l = {NULL, 0};
    od_err err;
    if (od_store_list(s, prefix, NULL, keylist_cb, &l, &err)) fail_msg("list %s: %s", prefix, err.msg);
    return l;
}

static void keylist_free(keylist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int keylist_has(const keylist *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], key) == 0) return 1;
    return 0;
}

/* Wait until the object is older than age_ms by the store's clock (condition, not a sleep). */
static void wait_older(od_store *s, const char *key, int64_t age_ms)
{
    int64_t deadline = od_test_mono_ms() + DEADLINE_MS;
    for (;;) {
        od_obj_meta meta;
        od_err err;
        if (od_store_head(s, key, &meta, &err)) fail_msg("head %s: %s", key, err.msg);
        if (od_test_now_ms() - meta.mtime_ms > age_ms) return;
        if (od_test_mono_ms() > deadline) fail_msg("%s never got %lld ms old", key, (long long)age_ms);
        od_test_sleep_ms(10);
    }
}

/* Every collection the latest manifest names exists. */
static void check_manifest_complete(od_store *s)
{
    od_manifest m;
    od_err err;
    assert_int_equal(od_manifest_load_latest(s, 0, &m, &err), OD_OK);
    char key[96];
    for (size_t i = 0; i < m.nl0; i++) {
        od_sst_key(key, sizeof key, m.l0[i].id);
        if (!od_test_store_exists(s, key)) fail_msg("the manifest names the deleted L0 collection %s", key);
    }
    for (size_t r = 0; r < m.nruns; r++)
        for (size_t i = 0; i < m.runs[r].n; i++) {
            od_sst_key(key, sizeof key, m.runs[r].ssts[i].id);
            if (!od_test_store_exists(s, key)) fail_msg("the manifest names the deleted collection %s", key);
        }
    od_manifest_free(&m);
}

static uint64_t stats_last_seq(od_db *db)
{
    od_db_stats st;
    od_db_get_stats(db, &st);
    return st.last_seq;
}

typedef struct flush_job {
    od_db *db;
    int rc;
    od_err err;
} flush_job;

static void *flush_main(void *arg)
{
    flush_job *j = arg;
    j->rc = od_db_flush(j->db, 1, &j->err);
    return NULL;
}

static int nkeys(void)
{
    int n = (int)(600 * od_test_scale());
    return n < 50 ? 50 : n;
}

/* ---------------- held_commit ---------------- */

static void run_held_commit(const char *uri)
{
    od_hold_store *h = od_hold_open(uri, OD_PUT_IF_ABSENT, "manifest/", 1);
    od_err err;
    od_db_options o;
    od_lsmtest_xproc_writer_opts(&o, MIN_AGE_MS); /* compactor=0: a compactor process does it */
    od_db *w;
    if (od_db_open_store(&h->base, &o, &w, &err)) fail_msg("open writer: %s", err.msg);

    od_db_options co;
    od_lsmtest_xproc_compactor_opts(&co, MIN_AGE_MS); /* GC and compaction only when asked */
    od_db *c;
    if (od_db_open(uri, &co, &c, &err)) fail_msg("open compactor: %s", err.msg);

    int n = nkeys();
    /* round 0: flushed and committed normally */
    od_lsmtest_write_flush(w, 0, n, 50);
    /* round 1 (overwrites half of round 0): its flush commit is held */
    if (od_lsmtest_write_range(w, n / 2, n + n / 2, 50, &err)) fail_msg("write: %s", err.msg);
    keylist before = list_keys(h->inner, "sst/");
    od_lsmtest_hold_arm(h);
    flush_job fj = {w, -1, {0}};
    pthread_t ft;
    assert_int_equal(pthread_create(&ft, NULL, flush_main, &fj), 0);
    if (!od_lsmtest_hold_wait(h, DEADLINE_MS)) fail_msg("the writer's manifest commit never reached the hold");
    assert_string_equal(strstr(h->held_key, "manifest/"), h->held_key);
    keylist after = list_keys(h->inner, "sst/");
    assert_int_equal(after.n, before.n + 1);
    char xkey[128] = "";
    for (size_t i = 0; i < after.n; i++)
        if (!keylist_has(&before, after.v[i])) snprintf(xkey, sizeof xkey, "%s", after.v[i]);
    assert_true(xkey[0] != 0);
    keylist_free(&before);
    keylist_free(&after);

    /* the uncommitted collection ages far past the minimum age; the compactor collects */
    wait_older(h->inner, xkey, 3 * MIN_AGE_MS);
    for (int pass = 0; pass < 3; pass++) {
        if (od_db_gc(c, &err)) fail_msg("compactor gc: %s", err.msg);
        if (!od_test_store_exists(h->inner, xkey))
            fail_msg("GC in the compactor deleted %s, an L0 flush output whose commit was still to come", xkey);
    }
    keylist pins = list_keys(h->inner, "pin/");
    assert_int_equal(pins.n, 1); /* the flush's pin object names it */
    uint64_t pe;
    char pid[OD_SST_ID_MAX], pkey[96];
    assert_int_equal(od_pin_parse(pins.v[0], &pe, pid), 1);
    od_sst_key(pkey, sizeof pkey, pid);
    assert_string_equal(pkey, xkey);
    od_db_stats wst;
    od_db_get_stats(w, &wst);
    assert_int_equal(pe, wst.writer_epoch);
    keylist_free(&pins);

    od_lsmtest_hold_release(h);
    assert_int_equal(pthread_join(ft, NULL), 0);
    if (fj.rc) fail_msg("held flush: %s", fj.err.msg);
    pins = list_keys(h->inner, "pin/");
    assert_int_equal(pins.n, 0); /* unpinned after the commit */
    keylist_free(&pins);

    /* every written seq is in L0 now (last_l0_seq): a reopened writer replays none of it from
     * the WAL, so round 1 lives in the collection alone; more GC once everything is old */
    od_manifest lm;
    assert_int_equal(od_manifest_load_latest(h->inner, 0, &lm, &err), OD_OK);
    assert_int_equal(lm.last_l0_seq, stats_last_seq(w));
    assert_int_equal(lm.nl0, 2);
    od_manifest_free(&lm);
    od_test_sleep_ms(3 * MIN_AGE_MS); /* the superseded manifest versions age too */
    if (od_db_gc(c, &err)) fail_msg("compactor gc: %s", err.msg);
    if (od_db_gc(w, &err)) fail_msg("writer gc: %s", err.msg);
    assert_true(od_test_store_exists(h->inner, xkey));
    check_manifest_complete(h->inner);
    od_lsmtest_expect_range(w, 0, n + n / 2, "before reopen");
    assert_int_equal(od_db_close(c, &err), OD_OK);
    assert_int_equal(od_db_close(w, &err), OD_OK);

    /* reopen: the model, from the store */
    o.gc_min_age_ms = 300000;
    if (od_db_open_store(&h->base, &o, &w, &err)) fail_msg("reopen: %s", err.msg);
    od_lsmtest_expect_range(w, 0, n + n / 2, "after reopen");
    od_db_stats st;
    od_db_get_stats(w, &st);
    assert_int_equal(st.l0_count, 2);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    od_store_close(&h->base);
}

static void test_held_commit_mem(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-flush-gc", run_held_commit);
}

static void test_held_commit_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-xproc-flush-gc", run_held_commit);
}

/* ---------------- pin_rules ---------------- */

static void put_obj(od_store *s, const char *key)
{
    od_err err;
    if (od_store_put(s, key, "x", 1, OD_PUT_ALWAYS, NULL, NULL, &err)) fail_msg("put %s: %s", key, err.msg);
}

static void run_pin_rules(const char *uri)
{
    od_err err;
    od_db_options o;
    od_lsmtest_xproc_writer_opts(&o, MIN_AGE_MS);
    od_db *w;
    if (od_db_open(uri, &o, &w, &err)) fail_msg("open: %s", err.msg);
    if (od_lsmtest_write_range(w, 0, 100, 50, &err)) fail_msg("write: %s", err.msg);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    if (od_db_open(uri, &o, &w, &err)) fail_msg("reopen: %s", err.msg);
    od_db_stats st;
    od_db_get_stats(w, &st);
    uint64_t ep = st.writer_epoch;
    assert_true(ep >= 2);

    od_store *s = od_db_store(w);
    char cur_sst[96], cur_pin[128], old_sst[96], old_pin[128], bare_sst[96];
    od_sst_key(cur_sst, sizeof cur_sst, "00000000000aaaaaaaaaaaaaaaaaaa");
    od_pin_key(cur_pin, sizeof cur_pin, ep, "00000000000aaaaaaaaaaaaaaaaaaa");
    od_sst_key(old_sst, sizeof old_sst, "00000000000bbbbbbbbbbbbbbbbbbb");
    od_pin_key(old_pin, sizeof old_pin, ep - 1, "00000000000bbbbbbbbbbbbbbbbbbb");
    od_sst_key(bare_sst, sizeof bare_sst, "00000000000ccccccccccccccccccc");
    put_obj(s, cur_sst);
    put_obj(s, cur_pin);
    put_obj(s, old_sst);
    put_obj(s, old_pin);
    put_obj(s, bare_sst);
    uint64_t pe;
    char pid[OD_SST_ID_MAX];
    assert_int_equal(od_pin_parse(cur_pin, &pe, pid), 1);
    assert_int_equal(pe, ep);
    assert_string_equal(pid, "00000000000aaaaaaaaaaaaaaaaaaa");
    assert_int_equal(od_pin_parse("pin/123-x.pin", &pe, pid), 0);
    assert_int_equal(od_pin_parse(cur_sst, &pe, pid), 0);
    wait_older(s, bare_sst, 3 * MIN_AGE_MS);

    /* a compactor's GC: the current epoch's pin keeps its collection */
    od_db_options co;
    od_lsmtest_xproc_compactor_opts(&co, MIN_AGE_MS);
    od_db *c;
    if (od_db_open(uri, &co, &c, &err)) fail_msg("open compactor: %s", err.msg);
    if (od_db_gc(c, &err)) fail_msg("gc: %s", err.msg);
    assert_true(od_test_store_exists(s, cur_sst));
    assert_true(od_test_store_exists(s, cur_pin));
    assert_false(od_test_store_exists(s, old_sst)); /* the older epoch's pin is stale */
    assert_false(od_test_store_exists(s, old_pin));
    assert_false(od_test_store_exists(s, bare_sst));
    assert_int_equal(od_db_close(c, &err), OD_OK);

    /* the writer's own GC: a pin of its epoch that no flush of it holds is a leftover */
    if (od_db_gc(w, &err)) fail_msg("writer gc: %s", err.msg);
    assert_false(od_test_store_exists(s, cur_pin));
    assert_false(od_test_store_exists(s, cur_sst));
    od_lsmtest_expect_range(w, 0, 100, "after the writer's GC");
    assert_int_equal(od_db_close(w, &err), OD_OK);
}

static void test_pin_rules_mem(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-pin-rules", run_pin_rules);
}

static void test_pin_rules_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-xproc-pin-rules", run_pin_rules);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held_commit_mem),
        cmocka_unit_test(test_held_commit_file),
        cmocka_unit_test(test_pin_rules_mem),
        cmocka_unit_test(test_pin_rules_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
