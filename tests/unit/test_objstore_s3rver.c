/*
 * test_objstore_s3rver.c — the s3:// backend against s3rver (run under scripts/with-s3rver.sh).
 *
 * s3rver checks the shape of requests (x-amz-content-sha256 present, ranges, ListObjectsV2 XML,
 * S3 error XML) but ignores If-None-Match / If-Match and does not verify signatures, so here:
 *   - the open-time probe must report conditional_writes = 0 (a writer must refuse this store
 *     unless single_writer=1 is declared, which only sets caps.single_writer_only);
 *   - the contract suite runs with OD_CONTRACT_NO_CAS;
 *   - the shared checks (od_s3test.c): odd keys and their encoding, ETags, ranges, pagination,
 *     threads, connection reuse, URI errors, secrets kept out of messages, unreachable server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "od_contract.h"
#include "od_s3test.h"
#include "s3_internal.h"

static int count_cb(void *ctx, const char *key, const od_obj_meta *m)
{
    (void)key;
    (void)m;
    (*(int *)ctx)++;
    return 0;
}

static void test_probe_reports_no_cas(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("probe", NULL);
    od_store *s = od_s3test_open(uri);
    od_store_caps caps;
    od_store_get_caps(s, &caps);
    assert_int_equal(caps.conditional_writes, 0);
    assert_int_equal(caps.single_writer_only, 0);
    /* what the probe saw: a second If-None-Match: * create "succeeds" and overwrites */
    od_err e = {0};
    assert_int_equal(od_store_put(s, "x", "one", 3, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(s, "x", "two", 3, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_OK);
    od_buf b = {0};
    assert_int_equal(od_store_get(s, "x", &b, NULL, &e), OD_OK);
    assert_memory_equal(b.data, "two", 3);
    /* the probe (3 requests here, not counted in the stats) leaves nothing behind */
    od_store_stats st;
    od_store_get_stats(s, &st);
    assert_int_equal(st.requests[OD_REQ_PUT], 2);
    od_s3_internal_stats is;
    assert_int_equal(od_s3_get_internal_stats(s, &is, &e), OD_OK);
    assert_int_equal(is.performs, 3 + 3);
    int nkeys = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &nkeys, &e), OD_OK);
    assert_int_equal(nkeys, 1);
    od_buf_free(&b);
    od_store_close(s);
    free(uri);

    uri = od_s3test_uri("probe", "single_writer=1");
    s = od_s3test_open(uri);
    od_store_get_caps(s, &caps);
    assert_int_equal(caps.conditional_writes, 0);
    assert_int_equal(caps.single_writer_only, 1);
    od_store_close(s);
    free(uri);
}

static void test_contract(void **state)
{
    (void)state;
    char *uri = od_s3test_uri("contract", NULL);
    assert_int_equal(od_contract_run("s3rver", uri, OD_CONTRACT_NO_CAS), 0);
    free(uri);
}

static void test_roundtrip(void **state) { (void)state; od_s3test_roundtrip("roundtrip"); }
static void test_ranges(void **state) { (void)state; od_s3test_ranges("ranges"); }
static void test_list_pages(void **state) { (void)state; od_s3test_list_pages("list"); }
static void test_threads(void **state) { (void)state; od_s3test_threads("threads"); }
static void test_conn_reuse(void **state) { (void)state; od_s3test_conn_reuse("conn"); }
static void test_bad_uris(void **state) { (void)state; od_s3test_bad_uris(); }
static void test_unreachable(void **state) { (void)state; od_s3test_unreachable(); }

/* A missing bucket is an open-time error that names it, not "not found" later. */
static void test_missing_bucket(void **state)
{
    (void)state;
    const char *base = od_s3test_base_uri();
    const char *q = strchr(base, '?');
    assert_non_null(q);
    char uri[1024];
    snprintf(uri, sizeof uri, "s3://no-such-bucket-od/p%s", q);
    od_store *s = NULL;
    od_err e = {0};
    int rc = od_store_open(uri, &s, &e);
    assert_int_equal(rc, OD_PERMANENT);
    assert_null(s);
    assert_non_null(strstr(e.msg, "NoSuchBucket"));
}

/* Environment credentials are used when the URI has none. */
static void test_env_credentials(void **state)
{
    (void)state;
    const char *base = od_s3test_base_uri();
    /* strip access_key= / secret_key= from the URI and put them into the environment */
    char uri[1024], ak[128] = "", sk[128] = "";
    size_t o = 0;
    for (const char *p = base; *p && o < sizeof uri - 1;) {
        const char *amp = strpbrk(p, "&?");
        if (p != base && (strncmp(p, "access_key=", 11) == 0 || strncmp(p, "secret_key=", 11) == 0)) {
            size_t n = amp ? (size_t)(amp - p) : strlen(p);
            snprintf(p[0] == 'a' ? ak : sk, sizeof ak, "%.*s", (int)(n - 11), p + 11);
            p += n + (amp ? 1 : 0);
            continue;
        }
        size_t n = amp ? (size_t)(amp - p) + 1 : strlen(p);
        memcpy(uri + o, p, n);
        o += n;
        p += n;
    }
    while (o && (uri[o - 1] == '&' || uri[o - 1] == '?')) o--;
    uri[o] = 0;
    assert_true(ak[0] && sk[0]);
    setenv("AWS_ACCESS_KEY_ID", ak, 1);
    setenv("AWS_SECRET_ACCESS_KEY", sk, 1);
    od_store *s = od_s3test_open(uri);
    assert_null(strstr(od_store_describe(s), sk));
    od_err e = {0};
    assert_int_equal(od_store_put(s, "env/k", "v", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    od_store_close(s);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

/* s3rver lists depth-first by directory ("b/1" before "b-x"): without list_sort=1 the backend
 * must refuse the out-of-order listing (OD_CORRUPT naming the keys); with it, byte order. */
typedef struct keys3 {
    char k[3][32];
    int n;
} keys3;

static int keep3(void *ctx, const char *key, const od_obj_meta *m)
{
    (void)m;
    keys3 *c = ctx;
    if (c->n < 3) snprintf(c->k[c->n], sizeof c->k[0], "%s", key);
    c->n++;
    return 0;
}

static void test_list_order_guard(void **state)
{
    (void)state;
    const char *base = od_s3test_base_uri();
    assert_non_null(strstr(base, "list_sort=1"));
    char *uri = od_s3test_uri("order", "list_sort=0");
    od_store *s = od_s3test_open(uri);
    od_err e = {0};
    assert_int_equal(od_store_put(s, "b/1", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(s, "b-x", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(s, "a", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    keys3 c = {0};
    int rc = od_store_list(s, "", NULL, keep3, &c, &e);
    assert_int_equal(rc, OD_CORRUPT);
    assert_non_null(strstr(e.msg, "b-x"));
    assert_non_null(strstr(e.msg, "list_sort=1"));
    od_store_close(s);
    free(uri);

    uri = od_s3test_uri("order", NULL); /* the base URI's list_sort=1 */
    s = od_s3test_open(uri);
    memset(&c, 0, sizeof c);
    assert_int_equal(od_store_list(s, "", NULL, keep3, &c, &e), OD_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.k[0], "a");
    assert_string_equal(c.k[1], "b-x");
    assert_string_equal(c.k[2], "b/1");
    memset(&c, 0, sizeof c);
    assert_int_equal(od_store_list(s, "", "a", keep3, &c, &e), OD_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.k[0], "b-x");
    od_store_close(s);
    free(uri);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_reports_no_cas),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_list_pages),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_conn_reuse),
        cmocka_unit_test(test_bad_uris),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_missing_bucket),
        cmocka_unit_test(test_env_credentials),
        cmocka_unit_test(test_list_order_guard),
        cmocka_unit_test(test_contract),
    };
    return cmocka_run_group_tests_name("objstore_s3rver", tests, NULL, NULL);
}
