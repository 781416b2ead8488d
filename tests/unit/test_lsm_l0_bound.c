/*
 * test_lsm_l0_bound.c — the L0 bound (l0_max_tables): memtable flushes stop while L0 holds
 * that many collections, so writers stall on back-pressure instead of L0 growing without
 * limit during a long compaction.
 *
 *   held_compaction: a background compaction is held in its compaction filter while a writer
 *     thread writes (puts, overwrites, deletes) far more than L0 bound + memtable bounds can
 *     hold. L0 never exceeds l0_max_tables; once it is full the flush worker reports the stall
 *     (stats l0_stalled, inspect "l0_stalled":1) and the writer stops making progress (stats
 *     write_stalls). Released, the compaction commits, flushes resume, the writer finishes,
 *     and every key equals the model, also after reopening.
 *   no_compactor: a writer with compactor=0 and no compactor process running: with
 *     write_stall_timeout_ms a write at the bound fails with OD_BUSY naming L0, the bound
 *     and the missing compactor (nothing applied, the handle stays usable), as does
 *     od_db_flush(db, 1); a compactor process then opens, compacts, the writer follows and
 *     writes and flushes go on. Closing a writer whose memtables wait at the bound does not
 *     hang and loses nothing acknowledged.
 *   options: l0_max_tables ≤ l0_compaction_trigger or negative is refused with OD_BADREQ and a
 *     message naming both options; the default is 64, or twice a high trigger.
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

#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_testutil.h"

#define VLEN 100

static void key_of(int i, char *k, size_t n)
{
    snprintf(k, n, "key-%07d", i);
}

/* value of key i in generation g (g ≥ 1) */
static void val_of(int i, int g, char *v)
{
    uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + (uint64_t)g * 1000003u + 7;
    for (size_t j = 0; j < VLEN; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[j] = (char)('a' + (x % 26));
    }
}

/* model[i]: generation of key i's value, 0 = absent */
static void check_model_at(od_db *db, const int *model, int n, int line)
{
    od_err err;
    char k[32], v[VLEN];
    int present = 0;
    for (int i = 0; i < n; i++) {
        key_of(i, k, sizeof k);
        od_buf got = {0};
        int rc = od_db_get(db, NULL, k, strlen(k), &got, &err);
        if (model[i] == 0) {
            if (rc != OD_NOTFOUND) fail_msg("line %d: %s: deleted/never written, but get returned %d", line, k, rc);
        } else {
            if (rc) fail_msg("line %d: %s (generation %d) unreadable: %s", line, k, model[i], err.msg);
            val_of(i, model[i], v);
            assert_int_equal(got.len, VLEN);
            assert_memory_equal(got.data, v, VLEN);
            present++;
        }
        od_buf_free(&got);
    }
    /* and a scan sees exactly the live keys */
    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, "", 0, NULL, 0, &it, &err), OD_OK);
    int seen = 0;
    while (od_iter_valid(it)) {
        seen++;
        assert_int_equal(od_iter_next(it, &err), OD_OK);
    }
    od_iter_free(it);
    assert_int_equal(seen, present);
}

#define check_model(db, m, n) check_model_at(db, m, n, __LINE__)

/* ---------------- held_compaction ---------------- */

struct writer {
    od_db *db;
    int from, to;
    int *model;
    _Atomic int progress; /* batches written */
    _Atomic int done;
    int rc;
    od_err err;
};

/* keys from..to in batches of 50; every batch also overwrites an older key and deletes another */
static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    char k[32], v[VLEN];
    int rc = OD_OK;
    for (int i = w->from; i < w->to && rc == OD_OK;) {
        od_batch *b = od_batch_new();
        assert_non_null(b);
        int first = i, upd = -1, del = -1, gen = 0;
        if (first > 0) { /* keys written by earlier batches */
            upd = (int)(((uint64_t)first * 2654435761u >> 5) % (uint64_t)first);
            del = (int)(((uint64_t)first * 40503u + 17) % (uint64_t)first);
            gen = w->model[upd] + 2;
        }
        for (int j = 0; j < 50 && i < w->to; j++, i++) {
            key_of(i, k, sizeof k);
            val_of(i, 1, v);
            assert_int_equal(od_batch_put(b, k, strlen(k), v, VLEN), OD_OK);
        }
        if (upd != del) {
            key_of(upd, k, sizeof k);
            val_of(upd, gen, v);
            assert_int_equal(od_batch_put(b, k, strlen(k), v, VLEN), OD_OK);
            key_of(del, k, sizeof k);
            assert_int_equal(od_batch_delete(b, k, strlen(k)), OD_OK);
        }
        rc = od_db_write(w->db, b, 0, NULL, &w->err);
        od_batch_free(b);
        if (rc == OD_OK) {
            for (int j = first; j < i; j++) w->model[j] = 1;
            if (upd != del) {
                w->model[upd] = gen;
                w->model[del] = 0;
            }
            atomic_fetch_add(&w->progress, 1);
        }
    }
    w->rc = rc;
    atomic_store(&w->done, 1);
    return NULL;
}

static void test_held_compaction(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://l0-bound-held-%d", (int)getpid());
    od_err err;
    od_store *keep; /* a mem:// store lives while a handle on it is open: across reopens */
    assert_int_equal(od_store_open(uri, &keep, &err), OD_OK);
    od_holdfilter h = OD_HOLDFILTER_INIT;
    const int bound = 6;
    od_db_options o;
    od_db_options_init(&o);
    o.memtable_bytes = 32u << 10;
    o.l0_compaction_trigger = 2;
    o.l0_max_tables = bound;
    o.gc_interval_ms = 0;
    o.flush_interval_ms = 2;
    o.compaction_filter = od_holdfilter_fn;
    o.compaction_filter_ctx = &h;
    od_db *db;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);

    /* ~1 MiB at scale 0.25: 30+ memtables of 32 KiB, far beyond the 6 L0 collections plus
     * the 8 waiting memtables at which writers stall */
    int n = 8000 + (int)(12000 * od_test_scale());
    int *model = calloc((size_t)n, sizeof *model);
    assert_non_null(model);

    /* two L0 collections: the background compaction starts and blocks in the filter */
    struct writer w0 = {db, 0, 200, model, 0, 0, 0, {0}};
    writer_thread(&w0);
    assert_int_equal(w0.rc, OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    struct writer w1 = {db, 200, 400, model, 0, 0, 0, {0}};
    writer_thread(&w1);
    assert_int_equal(w1.rc, OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_true(od_holdfilter_wait(&h, 30000));

    struct writer w = {db, 400, n, model, 0, 0, 0, {0}};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_thread, &w), 0);
    /* sample until the writer has been stuck for a while at the bound */
    od_db_stats st;
    uint64_t max_l0 = 0;
    int stalled = 0, last_progress = -1;
    int64_t still_since = 0;
    int64_t deadline = od_test_mono_ms() + 30000;
    while (!atomic_load(&w.done) && od_test_mono_ms() < deadline) {
        od_db_get_stats(db, &st);
        if (st.l0_count > max_l0) max_l0 = st.l0_count;
        int p = atomic_load(&w.progress);
        if (p != last_progress || !st.l0_stalled) {
            last_progress = p;
            still_since = od_test_mono_ms();
        } else if (od_test_mono_ms() - still_since >= 1000) {
            /* no batch got through in 1 s while the flushes stood at the bound (a window far
             * longer than a loaded machine leaves a runnable thread unscheduled, so the writer
             * really waits in back-pressure: write_stall_ms below counts that wait) */
            stalled = 1;
            break;
        }
        od_test_sleep_ms(2);
    }
    od_db_get_stats(db, &st);
    if (st.l0_count > max_l0) max_l0 = st.l0_count;
    od_buf js = {0};
    assert_int_equal(od_db_inspect(db, &js, &err), OD_OK);
    int inspect_stalled = strstr((const char *)js.data, "\"l0_max_tables\":6,\"l0_stalled\":1") != NULL;
    od_buf_free(&js);
    int writer_done = atomic_load(&w.done);

    od_holdfilter_release(&h); /* in any case, so a failure does not hang */
    pthread_join(th, NULL);

    if (max_l0 > (uint64_t)bound) fail_msg("L0 grew to %llu collections (l0_max_tables %d)", (unsigned long long)max_l0, bound);
    if (writer_done) fail_msg("the writer finished (rc %d) while L0 was full and the compaction held", w.rc);
    assert_true(stalled);
    assert_int_equal(st.l0_count, bound);
    assert_int_equal(st.compactions, 0); /* the compaction really was held throughout */
    assert_true(st.l0_stalled);
    assert_true(st.l0_stalls >= 1);
    assert_true(st.write_stalls >= 1);
    assert_true(inspect_stalled);
    if (w.rc) fail_msg("write failed: %s", w.err.msg);

    /* released: everything completes, L0 stays bounded, the data equals the model */
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    od_db_get_stats(db, &st);
    assert_true(st.compactions >= 1);
    assert_true(st.l0_count <= (uint64_t)bound);
    assert_false(st.l0_stalled);
    assert_true(st.write_stall_ms >= 500);
    check_model(db, model, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    o.compaction_filter = NULL;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    check_model(db, model, n);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    od_db_get_stats(db, &st);
    assert_int_equal(st.l0_count, 0);
    check_model(db, model, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(keep);
    free(model);
}

/* ---------------- no_compactor ---------------- */

static int put_one(od_db *db, int i, int wait, od_err *err)
{
    char k[32], v[VLEN];
    key_of(i, k, sizeof k);
    val_of(i, 1, v);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    assert_int_equal(od_batch_put(b, k, strlen(k), v, VLEN), OD_OK);
    int rc = od_db_write(db, b, wait, NULL, err);
    od_batch_free(b);
    return rc;
}

static void test_no_compactor(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://l0-bound-nocompactor-%d", (int)getpid());
    od_err err;
    od_store *keep; /* a mem:// store lives while a handle on it is open: across reopens */
    assert_int_equal(od_store_open(uri, &keep, &err), OD_OK);
    od_db_options o;
    od_db_options_init(&o);
    o.memtable_bytes = 4u << 10; /* ~30 keys a memtable */
    o.compactor = 0;             /* a compactor process is supposed to run, but none does */
    o.l0_compaction_trigger = 2;
    o.l0_max_tables = 3;
    o.write_stall_timeout_ms = 300;
    o.gc_interval_ms = 0;
    o.flush_interval_ms = 2;
    od_db *db;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    int *model = calloc(100000, sizeof *model);
    assert_non_null(model);

    /* write until a write is refused at the L0 bound: bounded, with a clear message. (A
     * refusal while L0 is not yet full means the flush worker got no CPU for the whole
     * write_stall_timeout_ms on a loaded machine: that write was not applied, try it again.) */
    int i = 0, rc = OD_OK;
    int64_t start = od_test_mono_ms();
    while (i < 100000 && od_test_mono_ms() - start < 60000) {
        rc = put_one(db, i, 0, &err);
        if (rc == OD_BUSY && !strstr(err.msg, "(l0_max_tables 3)")) continue;
        if (rc) break;
        model[i++] = 1;
    }
    if (rc != OD_BUSY) fail_msg("writes never stalled at the L0 bound (%d written, rc %d)", i, rc);
    if (!strstr(err.msg, "stalled") || !strstr(err.msg, "l0_max_tables 3") || !strstr(err.msg, "compactor"))
        fail_msg("unclear stall error: %s", err.msg);
    assert_true(i > 3 * 30); /* the bound's worth of memtables went to L0 first */
    od_db_stats st;
    od_db_get_stats(db, &st);
    for (int64_t t = od_test_mono_ms(); !st.l0_stalled && od_test_mono_ms() - t < 30000;) {
        od_test_sleep_ms(5); /* the flush worker raises the flag on its next round */
        od_db_get_stats(db, &st);
    }
    assert_int_equal(st.l0_count, 3);
    assert_true(st.l0_stalled);
    assert_true(st.write_stalls >= 1);
    assert_true(st.write_stall_ms >= 300);

    /* nothing of the refused write was applied; the handle is usable (reads, flush) */
    char k[32];
    key_of(i, k, sizeof k);
    od_buf got = {0};
    assert_int_equal(od_db_get(db, NULL, k, strlen(k), &got, &err), OD_NOTFOUND);
    od_buf_free(&got);
    assert_int_equal(od_db_flush(db, 0, &err), OD_OK); /* the WAL part works */
    rc = od_db_flush(db, 1, &err);
    assert_int_equal(rc, OD_BUSY);
    if (!strstr(err.msg, "od_db_flush") || !strstr(err.msg, "l0_max_tables 3"))
        fail_msg("unclear od_db_flush error: %s", err.msg);
    check_model(db, model, i);

    /* a compactor process starts: it compacts, the writer follows, writes go on */
    od_db_options oc;
    od_db_options_init(&oc);
    oc.compactor_only = 1;
    oc.follow_interval_ms = 5; /* notices the writer's commits quickly */
    oc.l0_compaction_trigger = 2;
    oc.gc_interval_ms = 0;
    oc.flush_interval_ms = 5;
    od_db *c;
    assert_int_equal(od_db_open(uri, &oc, &c, &err), OD_OK);
    int more = i + 200 + (int)(400 * od_test_scale());
    for (; i < more; i++) {
        rc = put_one(db, i, 0, &err);
        /* the compactor may need a moment (each refusal waited write_stall_timeout_ms); the
         * stall must end within 30 s however slow the machine */
        int64_t until = od_test_mono_ms() + 30000;
        while (rc == OD_BUSY && od_test_mono_ms() < until) rc = put_one(db, i, 0, &err);
        if (rc) fail_msg("write %d after the compactor started: %s", i, err.msg);
        model[i] = 1;
    }
    /* the writer learns of the compactor's commits by following the manifest */
    int64_t until = od_test_mono_ms() + 30000;
    while ((rc = od_db_flush(db, 1, &err)) == OD_BUSY && od_test_mono_ms() < until) {
    }
    if (rc) fail_msg("flush after the compactor started: %s", err.msg);
    od_db_get_stats(db, &st);
    assert_true(st.l0_count <= 3);
    od_db_stats cs;
    od_db_get_stats(c, &cs);
    assert_true(cs.compactions >= 1);
    check_model(db, model, i);
    assert_int_equal(od_db_close(c, &err), OD_OK);

    /* stall again with no compactor, then close: no hang, nothing acknowledged lost */
    assert_int_equal(od_db_close(db, &err), OD_OK);
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    rc = OD_OK;
    for (int j = 0; j < 60 && rc == OD_OK; j++) { /* reach the bound: 3 L0 + waiting memtables */
        od_db_get_stats(db, &st);
        if (st.l0_stalled) break;
        for (int x = 0; x < 30 && rc == OD_OK; x++) {
            if ((rc = put_one(db, i, 0, &err)) == OD_OK) model[i++] = 1;
        }
        od_test_sleep_ms(5);
    }
    if (rc && rc != OD_BUSY) fail_msg("write %d: %s", i, err.msg);
    assert_int_equal(od_db_flush(db, 0, &err), OD_OK); /* everything written is acknowledged */
    until = od_test_mono_ms() + 30000; /* the flush worker reaches the bound */
    while (!st.l0_stalled && od_test_mono_ms() < until) {
        od_test_sleep_ms(5);
        od_db_get_stats(db, &st);
    }
    assert_true(st.l0_stalled);
    assert_true(st.l0_count <= 3);
    int64_t t0 = od_test_mono_ms();
    assert_int_equal(od_db_close(db, &err), OD_OK);
    assert_true(od_test_mono_ms() - t0 < 20000); /* the close did not hang on the waiting memtables */
    o.write_stall_timeout_ms = 300;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    check_model(db, model, i);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_store_close(keep);
    free(model);
}

/* ---------------- options ---------------- */

static void test_options(void **state)
{
    (void)state;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://l0-bound-options-%d", (int)getpid());
    od_err err;
    od_db *db = NULL;
    od_db_options o;
    od_db_options_init(&o);
    o.gc_interval_ms = 0;
    o.l0_compaction_trigger = 8;
    o.l0_max_tables = 8;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_BADREQ);
    assert_null(db);
    if (!strstr(err.msg, "l0_max_tables (8)") || !strstr(err.msg, "l0_compaction_trigger (8)"))
        fail_msg("unclear option error: %s", err.msg);
    o.l0_max_tables = 3;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "must be greater than l0_compaction_trigger"));
    o.l0_max_tables = -1;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "l0_max_tables (-1)"));

    /* defaults: 64; twice a trigger set high ("compact only when asked") */
    od_buf js = {0};
    o.l0_max_tables = 0;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    assert_int_equal(od_db_inspect(db, &js, &err), OD_OK);
    assert_non_null(strstr((const char *)js.data, "\"l0_max_tables\":64,\"l0_stalled\":0"));
    assert_int_equal(od_db_close(db, &err), OD_OK);
    o.l0_compaction_trigger = 1000;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    assert_int_equal(od_db_inspect(db, &js, &err), OD_OK);
    assert_non_null(strstr((const char *)js.data, "\"l0_max_tables\":2000"));
    assert_int_equal(od_db_close(db, &err), OD_OK);
    o.l0_compaction_trigger = 4;
    o.l0_max_tables = 5; /* the smallest valid bound */
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_buf_free(&js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_held_compaction),
        cmocka_unit_test(test_no_compactor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
