/*
 * test_lsm_xproc_review_pins.c — review of the flush pin objects (pin/<epoch>-<id>.pin): a pin
 * whose DELETE failed must not keep its collection alive for the rest of the writer's life.
 *
 * An L0 flush deletes its pin object after the manifest commit, best effort. When that DELETE
 * fails, the pin of the current writer epoch stays; GC in a compactor process keeps the
 * collection it names for as long as the writer epoch lasts (it cannot tell a leftover from a
 * flush whose commit is still to come). Only the writer's own GC knew it was a leftover, and a
 * writer next to a compactor process often runs no GC (gc_interval_ms=0: the compactor
 * collects). So the collection, long merged away by compaction, was never deleted: a space
 * leak per failed DELETE until the writer reopened.
 *
 *   leftover_pin (mem://): a writer (compactor=0, no GC) on a store wrapper that refuses DELETEs
 *     of pin/ keys for one flush; a compactor process (its own store handle) compacts and
 *     collects. After later flushes the leftover pin must be gone (the writer retries the
 *     DELETE), and after compaction and GC the collection it named must be gone too; every
 *     key equals the model.
 *   leftover_pin_close (mem://): the DELETE fails for the last flush before a clean close; the
 *     close must remove the leftover (no flush comes after it to retry on).
 *   missing_collection_get (mem://): found on the way — a get meeting a missing collection must
 *     fail with an error, not crash (see the test).
 *   failed_open_lease (mem://): found on the way — a compactor process whose open fails after
 *     its epoch commit must release the compactor lease it wrote (see the test).
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

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_coding.h"
#include "od_lsmtest.h"
#include "od_objstore_impl.h"
#include "od_testutil.h"

#define MIN_AGE_MS 40

/* ---------------- a store that refuses DELETEs of pin/ keys on demand ---------------- */

typedef struct deny_store {
    od_store base;
    od_store *inner;
    _Atomic int deny;   /* refuse DELETEs of pin/ keys */
    _Atomic int denied; /* how many were refused */
    _Atomic int deny_range; /* refuse ranged GETs of sst/ keys (collection footers and blocks) */
} deny_store;

static int d_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    return od_store_get(((deny_store *)s)->inner, key, out, meta, err);
}
static int d_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    deny_store *d = (deny_store *)s;
    if (atomic_load(&d->deny_range) && strncmp(key, "sst/", 4) == 0)
        return od_err_set(err, OD_AUTH, "deny store: ranged GET of %s refused (test)", key);
    return od_store_get_range(d->inner, key, off, len, out, err);
}
static int d_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    return od_store_head(((deny_store *)s)->inner, key, meta, err);
}
static int d_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    return od_store_put(((deny_store *)s)->inner, key, data, len, mode, etag, meta_out, err);
}
static int d_del(od_store *s, const char *key, od_err *err)
{
    deny_store *d = (deny_store *)s;
    if (atomic_load(&d->deny) && strncmp(key, "pin/", 4) == 0) {
        atomic_fetch_add(&d->denied, 1);
        return od_err_set(err, OD_IO, "deny store: DELETE of %s refused (test)", key);
    }
    return od_store_delete(d->inner, key, err);
}
static int d_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    return od_store_list(((deny_store *)s)->inner, prefix, start_after, cb, ctx, err);
}
static void d_close(od_store *s)
{
    deny_store *d = (deny_store *)s;
    od_store_close(d->inner);
    od_store_destroy_base(s);
    free(d);
}
static const od_store_ops deny_ops = {d_get, d_get_range, d_head, d_put, d_del, d_list, d_close};

static deny_store *deny_open(const char *uri)
{
    deny_store *d = calloc(1, sizeof *d);
    assert_non_null(d);
    od_err err;
    assert_int_equal(od_store_open(uri, &d->inner, &err), OD_OK);
    od_store_init_base(&d->base, &deny_ops, "deny");
    return d;
}

/* ---------------- helpers ---------------- */

static int count_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)key;
    (void)meta;
    (*(size_t *)ctx)++;
    return 0;
}

static size_t count_prefix(od_store *s, const char *prefix)
{
    size_t n = 0;
    od_err err;
    if (od_store_list(s, prefix, NULL, count_cb, &n, &err)) fail_msg("list %s: %s", prefix, err.msg);
    return n;
}

typedef struct first_ctx {
    char key[160];
} first_ctx;

static int first_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)meta;
    first_ctx *f = ctx;
    snprintf(f->key, sizeof f->key, "%s", key);
    return 1;
}

/* A writer (compactor=0, no GC) on the deny store over uri's store; the caller closes both. */
static od_db *open_writer_denying(deny_store *d)
{
    od_err err;
    od_db_options o;
    od_lsmtest_xproc_writer_opts(&o, MIN_AGE_MS);
    od_db *w;
    if (od_db_open_store(&d->base, &o, &w, &err)) fail_msg("open writer: %s", err.msg);
    return w;
}

/* A writer with options o on uri, keys [0, 200) written and flushed to one L0 collection. */
static od_db *open_flushed(const char *uri, const od_db_options *o)
{
    od_db *w;
    od_err err;
    if (od_db_open(uri, o, &w, &err)) fail_msg("open writer: %s", err.msg);
    od_lsmtest_write_flush(w, 0, 200, 40);
    return w;
}

/* One flush whose pin DELETE is refused; returns the collection key its leftover pin names. */
static void flush_with_leftover(od_db *w, deny_store *d, int from, int to, char *sst_key, size_t n)
{
    od_err err;
    if (od_lsmtest_write_range(w, from, to, 40, &err)) fail_msg("write: %s", err.msg);
    atomic_store(&d->deny, 1);
    if (od_db_flush(w, 1, &err)) fail_msg("flush: %s", err.msg);
    atomic_store(&d->deny, 0);
    assert_true(atomic_load(&d->denied) >= 1);
    first_ctx f = {""};
    if (od_store_list(d->inner, "pin/", NULL, first_cb, &f, &err)) fail_msg("list pin/: %s", err.msg);
    if (!f.key[0]) fail_msg("the refused DELETE left no pin behind (the test staged nothing)");
    uint64_t pe;
    char pid[OD_SST_ID_MAX];
    assert_int_equal(od_pin_parse(f.key, &pe, pid), 1);
    od_sst_key(sst_key, n, pid);
    assert_true(od_test_store_exists(d->inner, sst_key));
}

/* ---------------- leftover_pin ---------------- */

static void run_leftover_pin(const char *uri)
{
    deny_store *d = deny_open(uri);
    od_db *w = open_writer_denying(d);
    od_err err;
    od_db_options co;
    od_lsmtest_xproc_compactor_opts(&co, MIN_AGE_MS);
    od_db *c;
    if (od_db_open(uri, &co, &c, &err)) fail_msg("open compactor: %s", err.msg);

    char xkey[160];
    flush_with_leftover(w, d, 0, 200, xkey, sizeof xkey);
    /* later flushes go through normally */
    for (int r = 1; r < 4; r++) od_lsmtest_write_flush(w, r * 100, r * 100 + 200, 40);
    size_t npins = count_prefix(d->inner, "pin/");
    if (npins != 0) fail_msg("%zu pin object(s) left behind after later flushes went through", npins);

    /* the compactor merges the collection away and collects: it must go (once the writer's
     * view dropped it: a writer with compactor=0 follows the manifest once a second) */
    if (od_db_compact(c, &err)) fail_msg("compact: %s", err.msg);
    int64_t t0 = od_test_mono_ms();
    for (;;) {
        od_db_stats st;
        od_db_get_stats(w, &st);
        if (st.l0_count == 0) break;
        if (od_test_mono_ms() - t0 > 30000) fail_msg("the writer never followed the compaction");
        od_test_sleep_ms(10);
    }
    od_test_sleep_ms(3 * MIN_AGE_MS); /* older than the min age, superseded versions too */
    for (int pass = 0; pass < 2; pass++)
        if (od_db_gc(c, &err)) fail_msg("compactor gc: %s", err.msg);
    if (od_test_store_exists(d->inner, xkey))
        fail_msg("%s, merged away by compaction, is still in the store: a leftover pin keeps it", xkey);
    od_lsmtest_expect_range(w, 0, 500, "after compaction and GC");
    assert_int_equal(od_db_close(c, &err), OD_OK);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    od_store_close(&d->base);
}

static void test_leftover_pin(void **state)
{
    (void)state;
    od_test_run_on_mem("review-pins", run_leftover_pin);
}

/* ---------------- leftover_pin_close ---------------- */

static void run_leftover_pin_close(const char *uri)
{
    deny_store *d = deny_open(uri);
    od_db *w = open_writer_denying(d);
    od_err err;
    char xkey[160];
    flush_with_leftover(w, d, 0, 200, xkey, sizeof xkey);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    size_t npins = count_prefix(d->inner, "pin/");
    if (npins != 0) fail_msg("%zu pin object(s) left behind by a clean close", npins);
    /* the data is all there */
    w = open_writer_denying(d);
    od_lsmtest_expect_range(w, 0, 200, "after reopening");
    assert_int_equal(od_db_close(w, &err), OD_OK);
    od_store_close(&d->base);
}

static void test_leftover_pin_close(void **state)
{
    (void)state;
    od_test_run_on_mem("review-pins-close", run_leftover_pin_close);
}

/* ---------------- missing_collection_get ----------------
 * Found on the way: a get that meets a missing collection (a store error reading a data block)
 * crashed the process instead of failing: sst_reader.c's read_range answered
 * `return od_err_prefix(err, ...)`, which is OD_OK when err is NULL — and od_sst_get's first
 * attempt (the hot path) passes NULL — so the block was parsed from a NULL buffer. */

static void test_missing_collection_get(void **state)
{
    (void)state;
    char uri[64];
    od_store *keep = od_test_memstore_keep(uri, sizeof uri, "review-missing");
    od_err err;
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.gc_interval_ms = 0;
    o.l0_compaction_trigger = 1000;
    od_db *w = open_flushed(uri, &o);
    first_ctx f = {""};
    if (od_store_list(keep, "sst/", NULL, first_cb, &f, &err)) fail_msg("list: %s", err.msg);
    assert_true(f.key[0] != 0);
    assert_int_equal(od_store_delete(keep, f.key, &err), OD_OK);
    int bad = -1;
    int rc = od_lsmtest_check_range(w, 0, 200, &bad, &err); /* must fail, not crash */
    assert_int_not_equal(rc, OD_OK);
    print_message("      get on a missing collection: %s\n", err.msg);
    /* ... and say why: not a silent "key not found" (a missing object read as a miss) */
    if (od_lsmtest_check_range(w, 0, 1, &bad, &err) == OD_OK) fail_msg("key 0 read fine from a missing collection");
    if (!strstr(err.msg, "missing")) fail_msg("a get on a missing collection says: %s", err.msg);
    od_db_close(w, &err);
    od_test_memstore_drop(&keep);
}

/* ---------------- failed_open_lease ----------------
 * Found on the way: a compactor process whose open failed AFTER its epoch commit (opening the
 * collections of its view: store trouble) left its compactor lease live: writers with
 * compactor=1 left compaction to nobody, and a new compactor was refused (OD_BUSY), until the
 * lease expired. */

static void test_failed_open_lease(void **state)
{
    (void)state;
    char uri[64];
    od_store *keep = od_test_memstore_keep(uri, sizeof uri, "review-openfail");
    od_err err;
    od_db_options o;
    od_lsmtest_xproc_writer_opts(&o, MIN_AGE_MS);
    assert_int_equal(od_db_close(open_flushed(uri, &o), &err), OD_OK);

    deny_store *d = deny_open(uri);
    atomic_store(&d->deny_range, 1);
    od_db_options co;
    od_lsmtest_xproc_compactor_opts(&co, MIN_AGE_MS);
    co.lease_ms = 60000; /* expiry cannot be what frees it here */
    od_db *c = NULL;
    int rc = od_db_open_store(&d->base, &co, &c, &err);
    if (rc == OD_OK) fail_msg("the compactor opened although its collections cannot be read");
    print_message("      failed compactor open: %s\n", err.msg);
    od_buf b = {0};
    if (od_store_get(keep, "compactor-lease", &b, NULL, &err) == OD_OK) {
        assert_int_equal(b.len, 52);
        int64_t renewed = (int64_t)od_get_u64(b.data + 24);
        od_buf_free(&b);
        if (renewed != 0) fail_msg("a compactor whose open failed left its lease held (renewed_ms %lld)", (long long)renewed);
    }
    /* a compactor opens without takeover; a writer with compactor=1 need not wait either */
    if (od_db_open(uri, &co, &c, &err)) fail_msg("open compactor after the failed one: %s", err.msg);
    assert_int_equal(od_db_close(c, &err), OD_OK);
    od_store_close(&d->base);
    od_test_memstore_drop(&keep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leftover_pin),
        cmocka_unit_test(test_leftover_pin_close),
        cmocka_unit_test(test_missing_collection_get),
        cmocka_unit_test(test_failed_open_lease),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
