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
#include "od_objstore_impl.h"

/* ---- a store wrapper that can hold the lease write of an opening writer ---- */
typedef struct hold_store {
    od_store base;
    od_store *inner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, blocked, released;
    char held_key[128];
} hold_store;

static int h_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    return od_store_get(((hold_store *)s)->inner, key, out, meta, err);
}
static int h_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    return od_store_get_range(((hold_store *)s)->inner, key, off, len, out, err);
}
static int h_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    return od_store_head(((hold_store *)s)->inner, key, meta, err);
}
static int h_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    hold_store *h = (hold_store *)s;
    if (mode == OD_PUT_ALWAYS && strcmp(key, "lease") == 0) {
        pthread_mutex_lock(&h->mu);
        if (h->armed) {
            h->armed = 0;
            h->blocked = 1;
            snprintf(h->held_key, sizeof h->held_key, "%s", key);
            pthread_cond_broadcast(&h->cv);
            while (!h->released) pthread_cond_wait(&h->cv, &h->mu);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return od_store_put(h->inner, key, data, len, mode, etag, meta_out, err);
}
static int h_del(od_store *s, const char *key, od_err *err)
{
    return od_store_delete(((hold_store *)s)->inner, key, err);
}
static int h_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    return od_store_list(((hold_store *)s)->inner, prefix, start_after, cb, ctx, err);
}
static void h_close(od_store *s)
{
    hold_store *h = (hold_store *)s;
    od_store_close(h->inner);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    od_store_destroy_base(s);
    free(h);
}
static const od_store_ops hold_ops = {h_get, h_get_range, h_head, h_put, h_del, h_list, h_close};

static hold_store *hold_open(const char *uri)
{
    hold_store *h = calloc(1, sizeof *h);
    assert_non_null(h);
    od_err err;
    assert_int_equal(od_store_open(uri, &h->inner, &err), OD_OK);
    od_store_init_base(&h->base, &hold_ops, "hold");
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    return h;
}

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

    hold_store *h = hold_open(uri);
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
    ob.lease_ms = 600; /* renewed every 200 ms */
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
    for (int i = 0; i < 100; i++) {
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
    char dir[] = "/tmp/od-review-open-race-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128];
    snprintf(uri, sizeof uri, "file://%s", dir);
    run(uri);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_race_mem),
        cmocka_unit_test(test_open_race_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
