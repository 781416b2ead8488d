/*
 * od_contract.c — the object-store contract suite (see od_contract.h): the semantics of
 * od_objstore.h, checked against any backend given by URI.
 *
 * Every test opens its own handle(s) on the URI and works under a unique key prefix
 * ("ct/<pid>-<seq>-<nanos>/<test>/"), so tests are independent of each other and of whatever
 * else is in the store. Object counts are kept modest so the suite is quick over HTTP too;
 * OD_TEST_SCALE shrinks the concurrency tests (never below what makes them meaningful, and the
 * list test always crosses the 1000-key page size).
 *
 * Multi-process tests fork children that open the store themselves and report through a
 * MAP_SHARED page; children never call cmocka (a failed assert would unwind into a copy of the
 * parent's test runner), they record failures and _exit.
 *
 * With OD_CONTRACT_NO_CAS the conditional-write tests and the atomic-replace race are not part of
 * the group (s3rver, the store that needs the flag, honours neither), and ct_caps checks that the
 * store says so. The CAS increment races identify each write by writer and sequence number, so
 * they stay exact under fault injection (see cas_increment).
 */
#include "od_contract.h"

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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "objstore/od_objstore.h"

typedef struct ct_conf {
    const char *uri;
    unsigned flags;
} ct_conf;

/* The suite's configuration for the group being run (test support code, one group at a time). */
static ct_conf g_conf;

/* ------------------------------------------------------------------------------------------
 * Helpers
 */

static double ct_scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static int scaled(int n, int min)
{
    int v = (int)(n * ct_scale());
    return v < min ? min : v;
}

static od_store *ct_open(void)
{
    od_store *s = NULL;
    od_err e = {0};
    int rc = od_store_open(g_conf.uri, &s, &e);
    if (rc != OD_OK) fail_msg("opening %s: %s (%s)", g_conf.uri, e.msg, od_code_name((od_code)rc));
    return s;
}

/* A prefix no other test (in this or another process, now or earlier) uses. */
static void ct_prefix(char *buf, size_t n, const char *test)
{
    static _Atomic unsigned seq;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "ct/%ld-%u-%lld%09ld/%s/", (long)getpid(), seq++, (long long)ts.tv_sec, ts.tv_nsec, test);
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

/* Fail the test with the store's message when rc is not `want`. */
#define CT_EXPECT(want, expr, errp)                                                                          \
    do {                                                                                                     \
        int ct_rc_ = (expr);                                                                                 \
        if (ct_rc_ != (want))                                                                                \
            fail_msg("%s: expected %s, got %s: %s", #expr, od_code_name((od_code)(want)),                    \
                     od_code_name((od_code)ct_rc_), (errp)->msg);                                            \
    } while (0)
#define CT_OK(expr, errp) CT_EXPECT(OD_OK, expr, errp)

static void put_ok(od_store *s, const char *key, const void *d, size_t n, od_obj_meta *m)
{
    od_err e = {0};
    CT_OK(od_store_put(s, key, d, n, OD_PUT_ALWAYS, NULL, m, &e), &e);
}

static void put_str(od_store *s, const char *key, const char *v)
{
    put_ok(s, key, v, strlen(v), NULL);
}

static void key_of(char *out, size_t n, const char *prefix, const char *rest)
{
    snprintf(out, n, "%s%s", prefix, rest);
}

/* Keys collected by a list call. */
typedef struct keylist {
    char **k;
    uint64_t *size;
    size_t n, cap;
    size_t stop_after; /* 0 = never stop */
} keylist;

static int collect(void *ctx, const char *key, const od_obj_meta *meta)
{
    keylist *kl = ctx;
    if (kl->n == kl->cap) {
        size_t nc = kl->cap ? kl->cap * 2 : 64;
        kl->k = realloc(kl->k, nc * sizeof *kl->k);
        kl->size = realloc(kl->size, nc * sizeof *kl->size);
        assert_non_null(kl->k);
        assert_non_null(kl->size);
        kl->cap = nc;
    }
    kl->k[kl->n] = strdup(key);
    assert_non_null(kl->k[kl->n]);
    kl->size[kl->n] = meta ? meta->size : UINT64_MAX;
    kl->n++;
    return kl->stop_after && kl->n >= kl->stop_after;
}

static void keylist_free(keylist *kl)
{
    for (size_t i = 0; i < kl->n; i++) free(kl->k[i]);
    free(kl->k);
    free(kl->size);
    memset(kl, 0, sizeof *kl);
}

static void list_ok(od_store *s, const char *prefix, const char *after, keylist *kl)
{
    od_err e = {0};
    CT_OK(od_store_list(s, prefix, after, collect, kl, &e), &e);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cas_enabled(void)
{
    return !(g_conf.flags & OD_CONTRACT_NO_CAS);
}

/* ------------------------------------------------------------------------------------------
 * Basic object operations
 */

static void ct_roundtrip(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "roundtrip");
    size_t sizes[] = {0, 1, 1u << 20};
    uint8_t *data = malloc(1u << 20);
    assert_non_null(data);
    od_buf got = {0};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        fill(data, n, 100 + i);
        snprintf(key, sizeof key, "%sobj-%zu", pre, n);
        od_obj_meta pm = {0}, gm = {0}, hm = {0};
        put_ok(s, key, data, n, &pm);
        assert_int_equal(pm.size, n);
        assert_true(pm.etag[0] != 0);
        od_err e = {0};
        CT_OK(od_store_get(s, key, &got, &gm, &e), &e);
        assert_int_equal(got.len, n);
        if (n) assert_memory_equal(got.data, data, n);
        assert_int_equal(gm.size, n);
        assert_string_equal(gm.etag, pm.etag);
        CT_OK(od_store_head(s, key, &hm, &e), &e);
        assert_int_equal(hm.size, n);
        assert_string_equal(hm.etag, pm.etag);
        /* meta may be NULL */
        CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
        assert_int_equal(got.len, n);
        CT_OK(od_store_head(s, key, NULL, &e), &e);
    }
    /* a second handle sees the same objects */
    od_store *s2 = ct_open();
    snprintf(key, sizeof key, "%sobj-1", pre);
    od_err e = {0};
    CT_OK(od_store_get(s2, key, &got, NULL, &e), &e);
    assert_int_equal(got.len, 1);
    fill(data, 1, 101);
    assert_int_equal(got.data[0], data[0]);
    od_store_close(s2);
    od_buf_free(&got);
    free(data);
    od_store_close(s);
}

static void ct_overwrite(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "overwrite");
    key_of(key, sizeof key, pre, "x");
    od_obj_meta m1 = {0}, m2 = {0}, hm = {0};
    put_ok(s, key, "first version", 13, &m1);
    put_ok(s, key, "second", 6, &m2);
    assert_string_not_equal(m1.etag, m2.etag);
    od_buf got = {0};
    od_err e = {0};
    CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
    assert_int_equal(got.len, 6);
    assert_memory_equal(got.data, "second", 6);
    CT_OK(od_store_head(s, key, &hm, &e), &e);
    assert_int_equal(hm.size, 6);
    assert_string_equal(hm.etag, m2.etag);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_missing(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "missing");
    key_of(key, sizeof key, pre, "nothing/here");
    od_buf got = {0};
    od_obj_meta m;
    od_err e = {0};
    CT_EXPECT(OD_NOTFOUND, od_store_get(s, key, &got, &m, &e), &e);
    assert_true(e.msg[0] != 0);
    assert_int_equal(got.len, 0);
    e = (od_err){0};
    CT_EXPECT(OD_NOTFOUND, od_store_head(s, key, &m, &e), &e);
    assert_true(e.msg[0] != 0);
    e = (od_err){0};
    CT_EXPECT(OD_NOTFOUND, od_store_get_range(s, key, 0, 10, &got, &e), &e);
    /* a key whose "directory" exists but the object does not */
    put_str(s, key, "v");
    char sib[320];
    snprintf(sib, sizeof sib, "%snothing/there", pre);
    CT_EXPECT(OD_NOTFOUND, od_store_get(s, sib, &got, NULL, &e), &e);
    /* a key below an existing object */
    snprintf(sib, sizeof sib, "%snothing/here/below", pre);
    CT_EXPECT(OD_NOTFOUND, od_store_head(s, sib, NULL, &e), &e);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_delete(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], a[300], b[300];
    ct_prefix(pre, sizeof pre, "delete");
    key_of(a, sizeof a, pre, "d/a");
    key_of(b, sizeof b, pre, "d/b");
    put_str(s, a, "A");
    put_str(s, b, "B");
    od_err e = {0};
    CT_OK(od_store_delete(s, a, &e), &e);
    od_buf got = {0};
    CT_EXPECT(OD_NOTFOUND, od_store_get(s, a, &got, NULL, &e), &e);
    CT_OK(od_store_delete(s, a, &e), &e); /* missing: still OK */
    char never[300];
    key_of(never, sizeof never, pre, "never/existed/at/all");
    CT_OK(od_store_delete(s, never, &e), &e);
    CT_OK(od_store_get(s, b, &got, NULL, &e), &e); /* sibling untouched */
    assert_int_equal(got.len, 1);
    assert_int_equal(got.data[0], 'B');
    CT_OK(od_store_delete(s, b, &e), &e);
    keylist kl = {0};
    list_ok(s, pre, NULL, &kl);
    assert_int_equal(kl.n, 0);
    /* the key can be created again after its "directory" emptied */
    put_str(s, a, "A2");
    CT_OK(od_store_get(s, a, &got, NULL, &e), &e);
    assert_int_equal(got.len, 2);
    keylist_free(&kl);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_range(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "range");
    key_of(key, sizeof key, pre, "r");
    uint8_t data[1000];
    fill(data, sizeof data, 7);
    put_ok(s, key, data, sizeof data, NULL);
    od_buf got = {0};
    od_err e = {0};
    CT_OK(od_store_get_range(s, key, 100, 50, &got, &e), &e); /* middle */
    assert_int_equal(got.len, 50);
    assert_memory_equal(got.data, data + 100, 50);
    CT_OK(od_store_get_range(s, key, 0, 1, &got, &e), &e); /* first byte */
    assert_int_equal(got.len, 1);
    assert_int_equal(got.data[0], data[0]);
    CT_OK(od_store_get_range(s, key, 900, 100, &got, &e), &e); /* exactly to the end */
    assert_int_equal(got.len, 100);
    assert_memory_equal(got.data, data + 900, 100);
    CT_OK(od_store_get_range(s, key, 950, 100, &got, &e), &e); /* past the end: truncated */
    assert_int_equal(got.len, 50);
    assert_memory_equal(got.data, data + 950, 50);
    CT_OK(od_store_get_range(s, key, 999, UINT64_MAX / 2, &got, &e), &e); /* huge length */
    assert_int_equal(got.len, 1);
    assert_int_equal(got.data[0], data[999]);
    e = (od_err){0};
    CT_EXPECT(OD_BADREQ, od_store_get_range(s, key, 1000, 1, &got, &e), &e); /* offset == size */
    assert_true(e.msg[0] != 0);
    CT_EXPECT(OD_BADREQ, od_store_get_range(s, key, 5000, 10, &got, &e), &e);
    od_buf_free(&got);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Conditional writes
 */

static void ct_put_if_absent(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "ifabsent");
    key_of(key, sizeof key, pre, "p/once");
    od_err e = {0};
    od_obj_meta m = {0};
    CT_OK(od_store_put(s, key, "winner", 6, OD_PUT_IF_ABSENT, NULL, &m, &e), &e);
    assert_int_equal(m.size, 6);
    e = (od_err){0};
    CT_EXPECT(OD_EXISTS, od_store_put(s, key, "loser!!", 7, OD_PUT_IF_ABSENT, NULL, NULL, &e), &e);
    assert_true(e.msg[0] != 0);
    CT_EXPECT(OD_EXISTS, od_store_put_if_absent(s, key, "x", 1, &e), &e);
    od_buf got = {0};
    od_obj_meta gm = {0};
    CT_OK(od_store_get(s, key, &got, &gm, &e), &e);
    assert_int_equal(got.len, 6);
    assert_memory_equal(got.data, "winner", 6);
    assert_string_equal(gm.etag, m.etag);
    /* after a delete it can be created again */
    CT_OK(od_store_delete(s, key, &e), &e);
    CT_OK(od_store_put(s, key, "again", 5, OD_PUT_IF_ABSENT, NULL, NULL, &e), &e);
    CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
    assert_int_equal(got.len, 5);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_put_if_match(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "ifmatch");
    key_of(key, sizeof key, pre, "cas");
    od_obj_meta m0 = {0}, m1 = {0}, hm = {0};
    put_ok(s, key, "v0", 2, &m0);
    od_err e = {0};
    CT_OK(od_store_put(s, key, "v1-longer", 9, OD_PUT_IF_MATCH, m0.etag, &m1, &e), &e);
    assert_int_equal(m1.size, 9);
    assert_true(m1.etag[0] != 0);
    assert_string_not_equal(m1.etag, m0.etag);
    CT_OK(od_store_head(s, key, &hm, &e), &e);
    assert_string_equal(hm.etag, m1.etag); /* the returned ETag is the current one */
    e = (od_err){0};
    CT_EXPECT(OD_PRECONDITION, od_store_put(s, key, "stale", 5, OD_PUT_IF_MATCH, m0.etag, NULL, &e), &e);
    assert_true(e.msg[0] != 0);
    od_buf got = {0};
    CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
    assert_int_equal(got.len, 9);
    assert_memory_equal(got.data, "v1-longer", 9);
    /* an ETag from get works as well as one from put */
    od_obj_meta gm = {0}, m2 = {0};
    CT_OK(od_store_get(s, key, &got, &gm, &e), &e);
    CT_OK(od_store_put(s, key, "v2", 2, OD_PUT_IF_MATCH, gm.etag, &m2, &e), &e);
    /* a plain overwrite invalidates the ETag */
    put_ok(s, key, "v3 by someone else", 18, NULL);
    CT_EXPECT(OD_PRECONDITION, od_store_put(s, key, "v4", 2, OD_PUT_IF_MATCH, m2.etag, NULL, &e), &e);
    /* missing key */
    char missing[300];
    key_of(missing, sizeof missing, pre, "never");
    e = (od_err){0};
    CT_EXPECT(OD_NOTFOUND, od_store_put(s, missing, "x", 1, OD_PUT_IF_MATCH, m0.etag, NULL, &e), &e);
    CT_EXPECT(OD_NOTFOUND, od_store_get(s, missing, &got, NULL, &e), &e);
    /* if-match without an etag is a caller error */
    CT_EXPECT(OD_BADREQ, od_store_put(s, key, "x", 1, OD_PUT_IF_MATCH, NULL, NULL, &e), &e);
    CT_EXPECT(OD_BADREQ, od_store_put(s, key, "x", 1, OD_PUT_IF_MATCH, "", NULL, &e), &e);
    od_buf_free(&got);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * List
 */

static void ct_list(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200];
    ct_prefix(pre, sizeof pre, "list");
    /* names chosen so that byte order differs from "directories first" order: '-' < '/' < 'a' */
    const char *rel[] = {"c", "a", "b/2", "b-x", "ba", "b/1", "b/sub/deep", "a0", "A", "b.z"};
    size_t nrel = sizeof rel / sizeof rel[0];
    char *want[16];
    for (size_t i = 0; i < nrel; i++) {
        char k[300];
        key_of(k, sizeof k, pre, rel[i]);
        put_ok(s, k, rel[i], strlen(rel[i]), NULL);
        want[i] = strdup(k);
        assert_non_null(want[i]);
    }
    qsort(want, nrel, sizeof want[0], cmp_str);

    keylist kl = {0};
    list_ok(s, pre, NULL, &kl);
    assert_int_equal(kl.n, nrel);
    for (size_t i = 0; i < nrel; i++) {
        assert_string_equal(kl.k[i], want[i]);
        assert_int_equal(kl.size[i], strlen(want[i]) - strlen(pre));
    }
    keylist_free(&kl);

    /* a prefix that ends mid-segment: "b" matches b/..., b-x, ba, b.z */
    char p2[300];
    key_of(p2, sizeof p2, pre, "b");
    list_ok(s, p2, NULL, &kl);
    size_t nb = 0;
    for (size_t i = 0; i < nrel; i++)
        if (strncmp(want[i], p2, strlen(p2)) == 0) {
            assert_true(nb < kl.n);
            assert_string_equal(kl.k[nb], want[i]);
            nb++;
        }
    assert_int_equal(kl.n, nb);
    assert_int_equal(nb, 6);
    keylist_free(&kl);

    /* a prefix that ends with '/' */
    key_of(p2, sizeof p2, pre, "b/");
    list_ok(s, p2, NULL, &kl);
    assert_int_equal(kl.n, 3);
    keylist_free(&kl);

    /* start_after an existing key is exclusive; one that does not exist starts just after it */
    for (size_t from = 0; from < nrel; from++) {
        list_ok(s, pre, want[from], &kl);
        assert_int_equal(kl.n, nrel - from - 1);
        for (size_t i = 0; i < kl.n; i++) assert_string_equal(kl.k[i], want[from + 1 + i]);
        keylist_free(&kl);
    }
    char mid[320];
    snprintf(mid, sizeof mid, "%sb/15", pre); /* between b/1 and b/2 */
    list_ok(s, pre, mid, &kl);
    size_t expect = 0;
    for (size_t i = 0; i < nrel; i++) expect += strcmp(want[i], mid) > 0;
    assert_int_equal(kl.n, expect);
    assert_true(strcmp(kl.k[0], mid) > 0);
    keylist_free(&kl);
    /* start_after before the prefix: everything */
    list_ok(s, pre, "", &kl);
    assert_int_equal(kl.n, nrel);
    keylist_free(&kl);
    list_ok(s, pre, "ct", &kl);
    assert_int_equal(kl.n, nrel);
    keylist_free(&kl);

    /* stopping early */
    kl.stop_after = 3;
    list_ok(s, pre, NULL, &kl);
    assert_int_equal(kl.n, 3);
    for (size_t i = 0; i < 3; i++) assert_string_equal(kl.k[i], want[i]);
    keylist_free(&kl);

    /* nothing under an unused prefix */
    key_of(p2, sizeof p2, pre, "zzz-nothing/");
    list_ok(s, p2, NULL, &kl);
    assert_int_equal(kl.n, 0);
    keylist_free(&kl);

    /* the whole store lists at least our keys, in order */
    list_ok(s, "", NULL, &kl);
    assert_true(kl.n >= nrel);
    for (size_t i = 1; i < kl.n; i++) assert_true(strcmp(kl.k[i - 1], kl.k[i]) < 0);
    keylist_free(&kl);

    for (size_t i = 0; i < nrel; i++) free(want[i]);
    od_store_close(s);
}

typedef struct bulk_job {
    od_store *s;
    const char *pre;
    int from, to;
    int failed;
    od_err err;
} bulk_job;

static void *bulk_put(void *arg)
{
    bulk_job *j = arg;
    for (int i = j->from; i < j->to && !j->failed; i++) {
        char k[300];
        snprintf(k, sizeof k, "%sk%05d", j->pre, i);
        if (od_store_put(j->s, k, k, (size_t)(i % 7), OD_PUT_ALWAYS, NULL, NULL, &j->err) != OD_OK) j->failed = 1;
    }
    return NULL;
}

/* More than one page (1000 keys) so that pagination is exercised. */
static void ct_list_many(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200];
    ct_prefix(pre, sizeof pre, "listmany");
    const int n = 1000 + scaled(150, 25);
    enum { T = 4 };
    pthread_t th[T];
    bulk_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (bulk_job){.s = s, .pre = pre, .from = n * t / T, .to = n * (t + 1) / T};
        assert_int_equal(pthread_create(&th[t], NULL, bulk_put, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        if (jobs[t].failed) fail_msg("bulk put: %s", jobs[t].err.msg);
    }
    od_store_stats before, after;
    od_store_get_stats(s, &before);
    keylist kl = {0};
    list_ok(s, pre, NULL, &kl);
    od_store_get_stats(s, &after);
    assert_int_equal(kl.n, (size_t)n);
    for (int i = 0; i < n; i++) {
        char k[300];
        snprintf(k, sizeof k, "%sk%05d", pre, i);
        assert_string_equal(kl.k[i], k);
        assert_int_equal(kl.size[i], (uint64_t)(i % 7));
    }
    assert_true(after.requests[OD_REQ_LIST] - before.requests[OD_REQ_LIST] >= 2);
    keylist_free(&kl);
    /* start_after inside the second page */
    char from[300];
    snprintf(from, sizeof from, "%sk%05d", pre, n - 20);
    list_ok(s, pre, from, &kl);
    assert_int_equal(kl.n, 19);
    keylist_free(&kl);
    /* start_after inside the first page, stopping after the page boundary */
    snprintf(from, sizeof from, "%sk%05d", pre, 10);
    kl.stop_after = 1005;
    list_ok(s, pre, from, &kl);
    assert_int_equal(kl.n, 1005);
    snprintf(from, sizeof from, "%sk%05d", pre, 11 + 1004);
    assert_string_equal(kl.k[1004], from);
    keylist_free(&kl);
    od_store_close(s);
}

/* Readers racing writers that replace one key never see a mix of two versions: every version
 * is a block of one repeated byte with a length derived from that byte. */
typedef struct swap_job {
    od_store *s;
    const char *key;
    int writer;
    int rounds;
    volatile int *stop;
    int bad;
    uint64_t reads;
    char msg[600];
} swap_job;

static size_t swap_len(uint8_t v)
{
    return 65536 + (size_t)v * 257;
}

static void *swap_write(void *arg)
{
    swap_job *j = arg;
    uint8_t *buf = malloc(swap_len(255));
    if (!buf) { j->bad = 1; return NULL; }
    for (int i = 0; i < j->rounds && !j->bad; i++) {
        uint8_t v = (uint8_t)(j->writer * 100 + i % 100);
        memset(buf, v, swap_len(v));
        od_err e = {0};
        if (od_store_put(j->s, j->key, buf, swap_len(v), OD_PUT_ALWAYS, NULL, NULL, &e) != OD_OK) {
            j->bad = 1;
            snprintf(j->msg, sizeof j->msg, "put: %s", e.msg);
        }
    }
    free(buf);
    return NULL;
}

static void *swap_read(void *arg)
{
    swap_job *j = arg;
    od_buf got = {0};
    do { /* at least one read, however fast the writers are */
        od_err e = {0};
        if (od_store_get(j->s, j->key, &got, NULL, &e) != OD_OK) {
            j->bad = 1;
            snprintf(j->msg, sizeof j->msg, "get: %s", e.msg);
            break;
        }
        j->reads++;
        uint8_t v = got.len ? got.data[0] : 0;
        if (got.len != swap_len(v)) {
            j->bad = 1;
            snprintf(j->msg, sizeof j->msg, "torn read: %zu bytes starting with %u", got.len, v);
        }
        for (size_t i = 0; i < got.len && !j->bad; i++)
            if (got.data[i] != v) {
                j->bad = 1;
                snprintf(j->msg, sizeof j->msg, "torn read: byte %zu is %u, byte 0 is %u", i, got.data[i], v);
            }
    } while (!*j->stop && !j->bad);
    od_buf_free(&got);
    return NULL;
}

static void ct_atomic_replace(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "atomic");
    key_of(key, sizeof key, pre, "swap");
    uint8_t *first = malloc(swap_len(0));
    assert_non_null(first);
    memset(first, 0, swap_len(0));
    put_ok(s, key, first, swap_len(0), NULL);
    free(first);
    volatile int stop = 0;
    enum { W = 2, R = 2 };
    pthread_t th[W + R];
    swap_job jobs[W + R];
    for (int t = 0; t < W + R; t++) {
        jobs[t] = (swap_job){.s = s, .key = key, .writer = t, .rounds = scaled(40, 10), .stop = &stop};
        assert_int_equal(pthread_create(&th[t], NULL, t < W ? swap_write : swap_read, &jobs[t]), 0);
    }
    for (int t = 0; t < W; t++) pthread_join(th[t], NULL);
    stop = 1;
    for (int t = W; t < W + R; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < W + R; t++)
        if (jobs[t].bad) fail_msg("%s %d: %s", t < W ? "writer" : "reader", t, jobs[t].msg);
    assert_true(jobs[W].reads + jobs[W + 1].reads > 0);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Keys, stats, capabilities
 */

static void ct_bad_keys(void **state)
{
    (void)state;
    od_store *s = ct_open();
    const char *bad[] = {"", "/abs", "/", "a/../b", "..", "../escape", "a/..", ".", "./a", "a/./b",
                         "a//b", "a/", "a\x01" "b", "a\nb", "tab\there", "del\x7f", "back\\slash"};
    od_buf got = {0};
    od_store_stats before, after;
    od_store_get_stats(s, &before);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        od_err e = {0};
        int rc = od_store_put(s, bad[i], "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e);
        if (rc != OD_BADREQ) fail_msg("put of bad key #%zu \"%s\" gave %s", i, bad[i], od_code_name((od_code)rc));
        assert_true(e.msg[0] != 0);
        assert_int_equal(od_store_get(s, bad[i], &got, NULL, NULL), OD_BADREQ);
        assert_int_equal(od_store_get_range(s, bad[i], 0, 1, &got, NULL), OD_BADREQ);
        assert_int_equal(od_store_head(s, bad[i], NULL, NULL), OD_BADREQ);
        assert_int_equal(od_store_delete(s, bad[i], NULL), OD_BADREQ);
        assert_int_equal(od_store_put(s, bad[i], "x", 1, OD_PUT_IF_ABSENT, NULL, NULL, NULL), OD_BADREQ);
    }
    assert_int_equal(od_store_get(s, NULL, &got, NULL, NULL), OD_BADREQ);
    /* too long */
    char *lng = malloc(2000);
    assert_non_null(lng);
    memset(lng, 'k', 1999);
    lng[1999] = 0;
    assert_int_equal(od_store_put(s, lng, "x", 1, OD_PUT_ALWAYS, NULL, NULL, NULL), OD_BADREQ);
    free(lng);
    /* the message names the key */
    od_err e = {0};
    assert_int_equal(od_store_get(s, "a/../b", &got, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "a/../b"));
    /* list prefixes that try to climb out */
    keylist kl = {0};
    assert_int_equal(od_store_list(s, "../", NULL, collect, &kl, NULL), OD_BADREQ);
    assert_int_equal(od_store_list(s, "a/../../", NULL, collect, &kl, NULL), OD_BADREQ);
    assert_int_equal(kl.n, 0);
    /* rejected before reaching the backend: no request was counted */
    od_store_get_stats(s, &after);
    for (int k = 0; k < OD_REQ_KIND_COUNT; k++) assert_int_equal(after.requests[k], before.requests[k]);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_stats(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], a[300], b[300], m[300];
    ct_prefix(pre, sizeof pre, "stats");
    key_of(a, sizeof a, pre, "a");
    key_of(b, sizeof b, pre, "b");
    key_of(m, sizeof m, pre, "missing");
    od_store_stats st0, st1;
    od_store_get_stats(s, &st0);
    uint8_t d[300];
    fill(d, sizeof d, 3);
    put_ok(s, a, d, 100, NULL);
    put_ok(s, b, d, 300, NULL);
    od_buf got = {0};
    od_err e = {0};
    CT_OK(od_store_get(s, a, &got, NULL, &e), &e);
    CT_OK(od_store_get(s, b, &got, NULL, &e), &e);
    CT_EXPECT(OD_NOTFOUND, od_store_get(s, m, &got, NULL, &e), &e);
    CT_OK(od_store_get_range(s, b, 10, 20, &got, &e), &e);
    CT_OK(od_store_head(s, a, NULL, &e), &e);
    CT_OK(od_store_delete(s, a, &e), &e);
    keylist kl = {0};
    list_ok(s, pre, NULL, &kl);
    assert_int_equal(kl.n, 1);
    keylist_free(&kl);
    od_store_get_stats(s, &st1);
    /* under a fault-injecting store the retry layer may add attempts, never remove them */
    assert_true(st1.requests[OD_REQ_PUT] - st0.requests[OD_REQ_PUT] >= 2);
    assert_true(st1.requests[OD_REQ_GET] - st0.requests[OD_REQ_GET] >= 3);
    assert_true(st1.requests[OD_REQ_GET_RANGE] - st0.requests[OD_REQ_GET_RANGE] >= 1);
    assert_true(st1.requests[OD_REQ_HEAD] - st0.requests[OD_REQ_HEAD] >= 1);
    assert_true(st1.requests[OD_REQ_DELETE] - st0.requests[OD_REQ_DELETE] >= 1);
    assert_true(st1.requests[OD_REQ_LIST] - st0.requests[OD_REQ_LIST] >= 1);
    assert_true(st1.bytes_out - st0.bytes_out >= 400);
    assert_true(st1.bytes_in - st0.bytes_in >= 420);
    uint64_t extra = st1.retries - st0.retries;
    if (extra == 0) {
        /* without retries the counts are exact, and NOTFOUND is an answer, not an error */
        assert_int_equal(st1.requests[OD_REQ_PUT] - st0.requests[OD_REQ_PUT], 2);
        assert_int_equal(st1.requests[OD_REQ_GET] - st0.requests[OD_REQ_GET], 3);
        assert_int_equal(st1.requests[OD_REQ_GET_RANGE] - st0.requests[OD_REQ_GET_RANGE], 1);
        assert_int_equal(st1.requests[OD_REQ_HEAD] - st0.requests[OD_REQ_HEAD], 1);
        assert_int_equal(st1.requests[OD_REQ_DELETE] - st0.requests[OD_REQ_DELETE], 1);
        assert_int_equal(st1.bytes_out - st0.bytes_out, 400);
        assert_int_equal(st1.bytes_in - st0.bytes_in, 420);
        for (int k = 0; k < OD_REQ_KIND_COUNT; k++) assert_int_equal(st1.errors[k], st0.errors[k]);
    }
    /* another handle has its own counters: using s does not move them */
    od_store *s2 = ct_open();
    od_store_stats o0, o1;
    od_store_get_stats(s2, &o0);
    CT_OK(od_store_get(s, b, &got, NULL, &e), &e);
    put_ok(s, b, d, 10, NULL);
    od_store_get_stats(s2, &o1);
    assert_memory_equal(&o0, &o1, sizeof o0);
    od_store_close(s2);
    od_buf_free(&got);
    od_store_close(s);
}

static void ct_caps(void **state)
{
    (void)state;
    od_store *s = ct_open();
    od_store_caps c;
    od_store_get_caps(s, &c);
    assert_int_equal(c.conditional_writes, cas_enabled() ? 1 : 0);
    assert_true(od_store_describe(s)[0] != 0);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Concurrency: threads on one handle
 */

typedef struct race_job {
    od_store *s;
    const char *pre;
    int id, nkeys, incs;
    pthread_barrier_t *bar;
    int *wins;     /* [nkeys] */
    int errors;
    od_err err;
} race_job;

static void *race_create(void *arg)
{
    race_job *j = arg;
    pthread_barrier_wait(j->bar);
    for (int k = 0; k < j->nkeys; k++) {
        char key[300], val[64];
        snprintf(key, sizeof key, "%sr%03d", j->pre, k);
        snprintf(val, sizeof val, "thread %d key %d", j->id, k);
        od_err e = {0};
        int rc = od_store_put(j->s, key, val, strlen(val), OD_PUT_IF_ABSENT, NULL, NULL, &e);
        if (rc == OD_OK) j->wins[k] = 1;
        else if (rc != OD_EXISTS) { j->errors++; j->err = e; }
    }
    return NULL;
}

static void ct_race_create_threads(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200];
    ct_prefix(pre, sizeof pre, "racethreads");
    enum { T = 8 };
    const int nkeys = scaled(20, 5);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T);
    pthread_t th[T];
    race_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (race_job){.s = s, .pre = pre, .id = t, .nkeys = nkeys, .bar = &bar};
        jobs[t].wins = calloc((size_t)nkeys, sizeof(int));
        assert_non_null(jobs[t].wins);
        assert_int_equal(pthread_create(&th[t], NULL, race_create, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&bar);
    od_buf got = {0};
    for (int t = 0; t < T; t++)
        if (jobs[t].errors) fail_msg("thread %d: %d errors, last: %s", t, jobs[t].errors, jobs[t].err.msg);
    for (int k = 0; k < nkeys; k++) {
        int winners = 0, who = -1;
        for (int t = 0; t < T; t++)
            if (jobs[t].wins[k]) { winners++; who = t; }
        if (winners != 1) fail_msg("key %d: %d winners", k, winners);
        char key[300], val[64];
        snprintf(key, sizeof key, "%sr%03d", pre, k);
        snprintf(val, sizeof val, "thread %d key %d", who, k);
        od_err e = {0};
        CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
        assert_int_equal(got.len, strlen(val));
        assert_memory_equal(got.data, val, got.len);
    }
    for (int t = 0; t < T; t++) free(jobs[t].wins);
    od_buf_free(&got);
    od_store_close(s);
}

/* The counter object is "<n> <s0> <s1> ... <s7>": the value, and for each writer the sequence
 * number of its last increment that landed (-1: none). Every write therefore carries bytes no
 * other write carries, and a writer can tell whether an increment it believes lost did land.
 * That matters under fault injection: a conditional write that succeeded but was reported as
 * failed is resolved by the retry layer only while nobody has overwritten it since; after that,
 * only the writer's own id in the object can tell (the "put id" of NOTES.md). */
enum { CTR_WRITERS = 8 };
static const char ctr_init[] = "0 -1 -1 -1 -1 -1 -1 -1 -1";

static int parse_counter(const char *txt, long *n, long seqs[CTR_WRITERS])
{
    char *end;
    *n = strtol(txt, &end, 10);
    if (end == txt) return -1;
    for (int i = 0; i < CTR_WRITERS; i++) {
        const char *p = end;
        seqs[i] = strtol(p, &end, 10);
        if (end == p) return -1;
    }
    return 0;
}

/* One read-modify-CAS increment by `writer` (its seq-th). OD_OK when the increment landed. */
static int cas_increment(od_store *s, const char *key, int writer, int seq, od_err *e)
{
    od_buf got = {0};
    for (int tries = 0; tries < 100000; tries++) {
        od_obj_meta m = {0};
        int rc = od_store_get(s, key, &got, &m, e);
        if (rc) { od_buf_free(&got); return rc; }
        if (od_buf_cstr(&got)) { od_buf_free(&got); return OD_NOMEM; }
        long n, seqs[CTR_WRITERS];
        if (parse_counter((const char *)got.data, &n, seqs) != 0) {
            od_buf_free(&got);
            return od_err_set(e, OD_CORRUPT, "counter object holds \"%.100s\"", (const char *)got.data);
        }
        if (seqs[writer] == seq) { od_buf_free(&got); return OD_OK; } /* an "failed" attempt had landed */
        if (seqs[writer] != seq - 1) {
            od_buf_free(&got);
            return od_err_set(e, OD_CORRUPT, "writer %d: counter shows increment %ld, expected %d", writer,
                              seqs[writer], seq - 1);
        }
        seqs[writer] = seq;
        char val[256];
        int len = snprintf(val, sizeof val, "%ld", n + 1);
        for (int i = 0; i < CTR_WRITERS; i++) len += snprintf(val + len, sizeof val - (size_t)len, " %ld", seqs[i]);
        rc = od_store_put(s, key, val, (size_t)len, OD_PUT_IF_MATCH, m.etag, NULL, e);
        if (rc == OD_OK) { od_buf_free(&got); return OD_OK; }
        if (rc != OD_PRECONDITION) { od_buf_free(&got); return rc; }
    }
    od_buf_free(&got);
    return od_err_set(e, OD_TIMEOUT, "gave up after 100000 lost CAS rounds");
}

static long read_counter(od_store *s, const char *key)
{
    od_buf got = {0};
    od_err e = {0};
    CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
    assert_int_equal(od_buf_cstr(&got), OD_OK);
    long n = strtol((const char *)got.data, NULL, 10);
    od_buf_free(&got);
    return n;
}

static void *race_incr(void *arg)
{
    race_job *j = arg;
    char key[300];
    snprintf(key, sizeof key, "%scounter", j->pre);
    pthread_barrier_wait(j->bar);
    for (int i = 0; i < j->incs; i++) {
        od_err e = {0};
        if (cas_increment(j->s, key, j->id, i, &e) != OD_OK) { j->errors++; j->err = e; break; }
    }
    return NULL;
}

static void ct_race_cas_threads(void **state)
{
    (void)state;
    od_store *s = ct_open();
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "casthreads");
    key_of(key, sizeof key, pre, "counter");
    put_str(s, key, ctr_init);
    enum { T = 4 };
    const int incs = scaled(25, 8);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T);
    pthread_t th[T];
    race_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (race_job){.s = s, .pre = pre, .id = t, .incs = incs, .bar = &bar};
        assert_int_equal(pthread_create(&th[t], NULL, race_incr, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < T; t++)
        if (jobs[t].errors) fail_msg("thread %d: %s", t, jobs[t].err.msg);
    assert_int_equal(read_counter(s, key), (long)T * incs);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Concurrency: forked processes, each with its own handle
 */

enum { MP_PROCS = 4 };
_Static_assert((int)MP_PROCS <= (int)CTR_WRITERS && 4 <= (int)CTR_WRITERS, "counter has room for every writer");

typedef struct mp_shared {
    int wins[MP_PROCS][256];
    int errors[MP_PROCS];
    int done[MP_PROCS];
    char msg[MP_PROCS][600];
} mp_shared;

typedef void (*mp_body)(int id, const char *pre, int n, mp_shared *sh);

/* Fork MP_PROCS children running body(id, ...) after a common start signal; wait for all. */
static void mp_run(mp_body body, const char *pre, int n, mp_shared *sh)
{
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[MP_PROCS];
    fflush(NULL);
    for (int p = 0; p < MP_PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(go[1]);
            char c;
            while (read(go[0], &c, 1) < 0 && errno == EINTR) {
            }
            body(p, pre, n, sh);
            sh->done[p] = 1;
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]); /* EOF releases every child at once */
    for (int p = 0; p < MP_PROCS; p++) {
        int st = 0;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail_msg("child %d died (status 0x%x)", p, st);
        if (!sh->done[p]) fail_msg("child %d did not finish", p);
    }
}

static void mp_create_body(int id, const char *pre, int n, mp_shared *sh)
{
    od_store *s = NULL;
    od_err e = {0};
    if (od_store_open(g_conf.uri, &s, &e) != OD_OK) {
        sh->errors[id]++;
        snprintf(sh->msg[id], sizeof sh->msg[id], "open: %s", e.msg);
        return;
    }
    for (int k = 0; k < n; k++) {
        char key[300], val[64];
        snprintf(key, sizeof key, "%sk%03d", pre, k);
        snprintf(val, sizeof val, "process %d key %d", id, k);
        int rc = od_store_put(s, key, val, strlen(val), OD_PUT_IF_ABSENT, NULL, NULL, &e);
        if (rc == OD_OK) sh->wins[id][k] = 1;
        else if (rc != OD_EXISTS) {
            sh->errors[id]++;
            snprintf(sh->msg[id], sizeof sh->msg[id], "%s", e.msg);
        }
    }
    od_store_close(s);
}

static mp_shared *mp_map(void)
{
    mp_shared *sh = mmap(NULL, sizeof(mp_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    return sh;
}

static void ct_race_create_procs(void **state)
{
    (void)state;
    char pre[200];
    ct_prefix(pre, sizeof pre, "raceprocs");
    const int nkeys = scaled(50, 12);
    assert_true(nkeys <= 256);
    mp_shared *sh = mp_map();
    mp_run(mp_create_body, pre, nkeys, sh);
    for (int p = 0; p < MP_PROCS; p++)
        if (sh->errors[p]) fail_msg("process %d: %d errors, last: %s", p, sh->errors[p], sh->msg[p]);
    od_store *s = ct_open();
    od_buf got = {0};
    for (int k = 0; k < nkeys; k++) {
        int winners = 0, who = -1;
        for (int p = 0; p < MP_PROCS; p++)
            if (sh->wins[p][k]) { winners++; who = p; }
        if (winners != 1) fail_msg("key %d: %d winning processes", k, winners);
        char key[300], val[64];
        snprintf(key, sizeof key, "%sk%03d", pre, k);
        snprintf(val, sizeof val, "process %d key %d", who, k);
        od_err e = {0};
        CT_OK(od_store_get(s, key, &got, NULL, &e), &e);
        assert_int_equal(got.len, strlen(val));
        assert_memory_equal(got.data, val, got.len);
    }
    od_buf_free(&got);
    od_store_close(s);
    munmap(sh, sizeof *sh);
}

static void mp_incr_body(int id, const char *pre, int n, mp_shared *sh)
{
    od_store *s = NULL;
    od_err e = {0};
    if (od_store_open(g_conf.uri, &s, &e) != OD_OK) {
        sh->errors[id]++;
        snprintf(sh->msg[id], sizeof sh->msg[id], "open: %s", e.msg);
        return;
    }
    char key[300];
    snprintf(key, sizeof key, "%scounter", pre);
    for (int i = 0; i < n; i++) {
        if (cas_increment(s, key, id, i, &e) != OD_OK) {
            sh->errors[id]++;
            snprintf(sh->msg[id], sizeof sh->msg[id], "%s", e.msg);
            break;
        }
        sh->wins[id][0]++;
    }
    od_store_close(s);
}

static void ct_race_cas_procs(void **state)
{
    (void)state;
    char pre[200], key[300];
    ct_prefix(pre, sizeof pre, "casprocs");
    key_of(key, sizeof key, pre, "counter");
    od_store *s = ct_open();
    put_str(s, key, ctr_init);
    const int incs = scaled(25, 8);
    mp_shared *sh = mp_map();
    mp_run(mp_incr_body, pre, incs, sh);
    for (int p = 0; p < MP_PROCS; p++) {
        if (sh->errors[p]) fail_msg("process %d: %s", p, sh->msg[p]);
        assert_int_equal(sh->wins[p][0], incs);
    }
    assert_int_equal(read_counter(s, key), (long)MP_PROCS * incs);
    od_store_close(s);
    munmap(sh, sizeof *sh);
}

/* ------------------------------------------------------------------------------------------
 * Runner
 */

int od_contract_run(const char *name, const char *uri, unsigned flags)
{
    g_conf.uri = uri;
    g_conf.flags = flags;
    struct CMUnitTest tests[32];
    size_t n = 0;
#define ADD(f) tests[n++] = (struct CMUnitTest)cmocka_unit_test(f)
    ADD(ct_roundtrip);
    ADD(ct_overwrite);
    ADD(ct_missing);
    ADD(ct_delete);
    ADD(ct_range);
    ADD(ct_list);
    ADD(ct_list_many);
    ADD(ct_bad_keys);
    ADD(ct_stats);
    ADD(ct_caps);
    if (cas_enabled()) {
        ADD(ct_atomic_replace); /* s3rver, the NO_CAS double, writes objects in place */
        ADD(ct_put_if_absent);
        ADD(ct_put_if_match);
        ADD(ct_race_create_threads);
        ADD(ct_race_cas_threads);
        if (flags & OD_CONTRACT_MULTIPROC) {
            ADD(ct_race_create_procs);
            ADD(ct_race_cas_procs);
        }
    }
#undef ADD
    return _cmocka_run_group_tests(name, tests, n, NULL, NULL);
}
