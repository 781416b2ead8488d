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
#include "od_objstore_impl.h"

/* ---- a store wrapper that can hold conditional creates of WAL objects ---- */
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
    if (mode == OD_PUT_IF_ABSENT && strncmp(key, "wal/", 4) == 0) {
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
    hold_store *h = hold_open(uri);

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
    char dir[] = "/tmp/od-review-stall-XXXXXX";
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
        cmocka_unit_test(test_stalled_wal_put_mem),
        cmocka_unit_test(test_stalled_wal_put_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
