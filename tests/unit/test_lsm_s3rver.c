/*
 * test_lsm_s3rver.c — the storage engine on a store that ignores conditional writes: s3rver
 * (run under scripts/with-s3rver.sh, which exports OD_TEST_S3_URI).
 *
 * Fencing rests on If-None-Match / If-Match; s3rver silently overwrites instead, and the
 * s3:// backend's probe at open reports that (caps.conditional_writes = 0). So:
 *   - opening as writer is refused with OD_UNSUPPORTED and a message that says why and what
 *     to do (read-only, or single_writer=1), and nothing is written to the store;
 *   - with single_writer=1 (the option, or ?single_writer=1 on the URI) the writer opens:
 *     write, flush to L0, close, reopen, read everything back;
 *   - a read-only handle opens without single_writer and sees the data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm/od_db.h"
#include "od_s3test.h"

static int count_cb(void *ctx, const char *key, const od_obj_meta *m)
{
    (void)key;
    (void)m;
    (*(int *)ctx)++;
    return 0;
}

static void expect_refused(const char *uri)
{
    od_db_options o;
    od_db_options_init(&o);
    o.gc_interval_ms = 0;
    od_db *db = NULL;
    od_err err = {0};
    int rc = od_db_open(uri, &o, &db, &err);
    if (rc != OD_UNSUPPORTED) fail_msg("writer open on s3rver gave %s (%s), expected UNSUPPORTED", od_code_name(rc), err.msg);
    assert_null(db);
    printf("refused as expected: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not honour conditional writes"));
    assert_non_null(strstr(err.msg, "fencing"));
    assert_non_null(strstr(err.msg, "single_writer=1"));
    assert_non_null(strstr(err.msg, "read-only"));
    assert_null(strstr(err.msg, "secret_key")); /* the store's description never carries credentials */
    assert_null(strstr(err.msg, "S3RVER"));
}

static void put_keys(od_db *db, int from, int to)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    od_err err;
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key-%05d", i);
        int vl = snprintf(v, sizeof v, "value of key %d", i);
        od_batch_clear(b);
        assert_int_equal(od_batch_put(b, k, (size_t)kl, v, (size_t)vl), OD_OK);
        if (od_db_write(db, b, (i % 10) == 9, NULL, &err)) fail_msg("write %d: %s", i, err.msg);
    }
    od_batch_free(b);
}

static void check_keys(od_db *db, int from, int to)
{
    od_err err;
    od_buf v = {0};
    for (int i = from; i < to; i++) {
        char k[32], want[64];
        int kl = snprintf(k, sizeof k, "key-%05d", i);
        int wl = snprintf(want, sizeof want, "value of key %d", i);
        int rc = od_db_get(db, NULL, k, (size_t)kl, &v, &err);
        if (rc) fail_msg("get %s: %s (%s)", k, od_code_name(rc), err.msg);
        assert_int_equal(v.len, (size_t)wl);
        assert_memory_equal(v.data, want, (size_t)wl);
    }
    assert_int_equal(od_db_get(db, NULL, "key-99999", 9, &v, &err), OD_NOTFOUND);
    od_buf_free(&v);
}

static void test_writer_refused(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("refused", NULL);
    expect_refused(uri);
    /* the refusal comes before the engine touches the store */
    od_store *s = od_s3test_open(uri);
    int n = 0;
    od_err e;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, 0);
    od_store_close(s);
    free(uri);
}

/* Opens as writer with single_writer declared either way; `via_uri` picks the URI parameter. */
static void single_writer_roundtrip(const char *sub, int via_uri)
{
    char *uri = od_s3test_uri(sub, via_uri ? "single_writer=1" : NULL);
    od_db_options o;
    od_db_options_init(&o);
    o.single_writer = !via_uri;
    o.flush_interval_ms = 10;
    o.gc_interval_ms = 0;
    od_db *db;
    od_err err;
    if (od_db_open(uri, &o, &db, &err)) fail_msg("single-writer open: %s", err.msg);
    int n = od_s3test_n(200);
    put_keys(db, 0, n / 2);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK); /* half in an L0 collection */
    put_keys(db, n / 2, n);                           /* half only in the WAL */
    check_keys(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    /* reopen as writer: WAL replay plus the L0 collection give everything back */
    if (od_db_open(uri, &o, &db, &err)) fail_msg("single-writer reopen: %s", err.msg);
    check_keys(db, 0, n);
    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_int_equal(st.writer_epoch, 2);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    check_keys(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    /* a reader needs no declaration; the plain URI as writer is still refused */
    char *plain = od_s3test_uri(sub, NULL);
    od_db_options ro;
    od_db_options_init(&ro);
    ro.read_only = 1;
    if (od_db_open(plain, &ro, &db, &err)) fail_msg("read-only open: %s", err.msg);
    check_keys(db, 0, n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    expect_refused(plain);
    free(plain);
    free(uri);
}

static void test_single_writer_option(void **state)
{
    (void)state;
    single_writer_roundtrip("sw-option", 0);
}

static void test_single_writer_uri(void **state)
{
    (void)state;
    single_writer_roundtrip("sw-uri", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_refused),
        cmocka_unit_test(test_single_writer_option),
        cmocka_unit_test(test_single_writer_uri),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
