/*
 * od_s3test.c — checks of the s3:// backend shared by test_objstore_s3rver and
 * test_objstore_rgw (see od_s3test.h). Everything here talks to a real server through the
 * public od_store API, plus the backend's internal counters (s3_internal.h) where a property
 * is invisible through the API (connection reuse).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <mbedtls/md5.h>
#include <mbedtls/version.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "od_s3test.h"
#include "s3_internal.h"

const char *od_s3test_base_uri(void)
{
    const char *u = getenv("OD_TEST_S3_URI");
    if (!u || !*u) fail_msg("OD_TEST_S3_URI is not set: run this binary under scripts/with-s3rver.sh or scripts/with-rgw.sh");
    return u;
}

char *od_s3test_uri(const char *sub, const char *extra)
{
    const char *base = od_s3test_base_uri();
    const char *q = strchr(base, '?');
    size_t loc = q ? (size_t)(q - base) : strlen(base);
    size_t n = strlen(base) + strlen(sub) + (extra ? strlen(extra) : 0) + 8;
    char *r = malloc(n);
    assert_non_null(r);
    snprintf(r, n, "%.*s/%s%s%s%s%s", (int)loc, base, sub, q ? q : "", extra ? (q ? "&" : "?") : "",
             extra ? extra : "", "");
    return r;
}

double od_s3test_scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

int od_s3test_n(int n)
{
    int v = (int)(n * od_s3test_scale());
    return v < 1 ? 1 : v;
}

od_store *od_s3test_open(const char *uri)
{
    od_store *s = NULL;
    od_err e = {0};
    int rc = od_store_open(uri, &s, &e);
    if (rc != OD_OK) fail_msg("open failed (%s): %s", od_code_name(rc), e.msg);
    return s;
}

static void md5_hex(const void *p, size_t n, char out[33])
{
    unsigned char d[16];
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_md5(p, n, d);
#else
    mbedtls_md5_ret(p, n, d);
#endif
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

typedef struct collect {
    char **keys;
    od_obj_meta *metas;
    size_t n, cap;
    size_t stop_after; /* 0: never stop */
} collect;

static int collect_cb(void *ctx, const char *key, const od_obj_meta *m)
{
    collect *c = ctx;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->keys = realloc(c->keys, c->cap * sizeof *c->keys);
        c->metas = realloc(c->metas, c->cap * sizeof *c->metas);
        assert_non_null(c->keys);
        assert_non_null(c->metas);
    }
    c->keys[c->n] = strdup(key);
    assert_non_null(c->keys[c->n]);
    c->metas[c->n] = *m;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void collect_free(collect *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->keys[i]);
    free(c->keys);
    free(c->metas);
    memset(c, 0, sizeof *c);
}

static int strp_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ------------------------------------------------------------------ roundtrip */

void od_s3test_roundtrip(const char *sub)
{
    char *uri = od_s3test_uri(sub, NULL);
    od_store *s = od_s3test_open(uri);
    static const char *keys[] = {
        "plain",
        "with space/and+plus",
        "amp&lt<gt>quote\"apos'",
        "percent%20literal",
        "unicode/\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac",
        "q?mark#hash=eq;semi,comma",
        "tilde~under_score-dash.dot",
        "$dollar@at!bang(paren)*star:colon",
    };
    enum { NK = sizeof keys / sizeof keys[0] };
    od_err e = {0};
    od_buf b = {0};
    char etags[NK][OD_ETAG_MAX];
    for (int i = 0; i < NK; i++) {
        char body[128];
        int n = snprintf(body, sizeof body, "body of <%s> #%d", keys[i], i);
        od_obj_meta pm = {0}, gm = {0}, hm = {0};
        int rc = od_store_put(s, keys[i], body, (size_t)n, OD_PUT_ALWAYS, NULL, &pm, &e);
        if (rc) fail_msg("put %s: %s", keys[i], e.msg);
        assert_int_equal(pm.size, (uint64_t)n);
        char md5[33];
        md5_hex(body, (size_t)n, md5);
        assert_string_equal(pm.etag, md5); /* S3 ETag of a single PUT is the MD5, quotes stripped */
        rc = od_store_get(s, keys[i], &b, &gm, &e);
        if (rc) fail_msg("get %s: %s", keys[i], e.msg);
        assert_int_equal(b.len, (size_t)n);
        assert_memory_equal(b.data, body, (size_t)n);
        assert_string_equal(gm.etag, pm.etag);
        assert_int_equal(gm.size, (uint64_t)n);
        assert_true(gm.mtime_ms > 1600000000000LL);
        assert_int_equal(od_store_head(s, keys[i], &hm, &e), OD_OK);
        assert_string_equal(hm.etag, pm.etag);
        assert_int_equal(hm.size, (uint64_t)n);
        snprintf(etags[i], OD_ETAG_MAX, "%s", pm.etag);
    }
    /* the listing gives back exactly these keys, byte-sorted, with the same ETags */
    collect c = {0};
    assert_int_equal(od_store_list(s, "", NULL, collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, NK);
    const char *sorted[NK];
    memcpy(sorted, keys, sizeof sorted);
    qsort(sorted, NK, sizeof sorted[0], strp_cmp);
    for (int i = 0; i < NK; i++) {
        assert_string_equal(c.keys[i], sorted[i]);
        for (int j = 0; j < NK; j++)
            if (strcmp(keys[j], sorted[i]) == 0) assert_string_equal(c.metas[i].etag, etags[j]);
    }
    collect_free(&c);

    /* overwrite changes content and ETag */
    od_obj_meta m2 = {0};
    assert_int_equal(od_store_put(s, "plain", "second", 6, OD_PUT_ALWAYS, NULL, &m2, &e), OD_OK);
    assert_string_not_equal(m2.etag, etags[0]);
    assert_int_equal(od_store_get(s, "plain", &b, NULL, &e), OD_OK);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "second", 6);

    /* empty object */
    assert_int_equal(od_store_put(s, "empty", "", 0, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    od_obj_meta em = {0};
    assert_int_equal(od_store_get(s, "empty", &b, &em, &e), OD_OK);
    assert_int_equal(b.len, 0);
    assert_int_equal(od_store_head(s, "empty", &em, &e), OD_OK);
    assert_int_equal(em.size, 0);

    /* 3 MiB object (goes through Expect: 100-continue) */
    size_t big = 3u << 20;
    uint8_t *data = malloc(big);
    assert_non_null(data);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    assert_int_equal(od_store_put(s, "big/object", data, big, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_get(s, "big/object", &b, NULL, &e), OD_OK);
    assert_int_equal(b.len, big);
    assert_memory_equal(b.data, data, big);
    free(data);

    /* missing keys and deletes */
    int rc = od_store_get(s, "missing/key", &b, NULL, &e);
    assert_int_equal(rc, OD_NOTFOUND);
    assert_non_null(strstr(e.msg, "missing/key"));
    assert_int_equal(od_store_head(s, "missing/key", NULL, &e), OD_NOTFOUND);
    for (int i = 0; i < NK; i++) assert_int_equal(od_store_delete(s, keys[i], &e), OD_OK);
    assert_int_equal(od_store_delete(s, "plain", &e), OD_OK); /* missing: still OK */
    assert_int_equal(od_store_get(s, "plain", &b, NULL, &e), OD_NOTFOUND);

    od_store_stats st;
    od_store_get_stats(s, &st);
    assert_int_equal(st.errors[OD_REQ_GET], 0);
    assert_int_equal(st.errors[OD_REQ_PUT], 0);
    assert_true(st.bytes_out >= big);
    assert_true(st.bytes_in >= big);
    od_buf_free(&b);
    od_store_close(s);
    free(uri);
}

/* ------------------------------------------------------------------ ranges */

void od_s3test_ranges(const char *sub)
{
    char *uri = od_s3test_uri(sub, NULL);
    od_store *s = od_s3test_open(uri);
    od_err e = {0};
    uint8_t obj[1000];
    for (int i = 0; i < 1000; i++) obj[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(od_store_put(s, "r", obj, sizeof obj, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    static const struct { uint64_t off, len, want; } cases[] = {
        {0, 1, 1}, {0, 1000, 1000}, {10, 20, 20}, {999, 1, 1}, {990, 100, 10}, {0, UINT64_MAX, 1000},
        {500, UINT64_MAX - 500, 500},
    };
    od_buf b = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = od_store_get_range(s, "r", cases[i].off, cases[i].len, &b, &e);
        if (rc) fail_msg("range %zu: %s", i, e.msg);
        assert_int_equal(b.len, cases[i].want);
        assert_memory_equal(b.data, obj + cases[i].off, cases[i].want);
    }
    assert_int_equal(od_store_get_range(s, "r", 1000, 1, &b, &e), OD_BADREQ);
    assert_int_equal(od_store_get_range(s, "r", 5000, 10, &b, &e), OD_BADREQ);
    assert_int_equal(od_store_get_range(s, "nope", 0, 10, &b, &e), OD_NOTFOUND);
    od_store_stats st;
    od_store_get_stats(s, &st);
    assert_int_equal(st.requests[OD_REQ_GET_RANGE], sizeof cases / sizeof cases[0] + 3);
    assert_int_equal(st.retries, 0);
    od_buf_free(&b);
    od_store_close(s);
    free(uri);
}

/* ------------------------------------------------------------------ list */

void od_s3test_list_pages(const char *sub)
{
    char sib[256];
    snprintf(sib, sizeof sib, "%s2", sub); /* a sibling prefix that shares our prefix's bytes */
    char *uri = od_s3test_uri(sub, "list_page=3&list_sort=0"); /* real pages (keys avoid s3rver order quirks) */
    char *suri = od_s3test_uri(sib, NULL);
    od_store *s = od_s3test_open(uri);
    od_store *o = od_s3test_open(suri);
    od_err e = {0};
    enum { NKEYS = 10 };
    for (int i = 0; i < NKEYS; i++) {
        char k[32];
        snprintf(k, sizeof k, "k/%02d", i);
        assert_int_equal(od_store_put(s, k, k, strlen(k), OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    }
    assert_int_equal(od_store_put(s, "kk", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(s, "other/x", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(o, "k/00-sibling", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);

    od_store_stats before, after;
    od_store_get_stats(s, &before);
    collect c = {0};
    assert_int_equal(od_store_list(s, "", NULL, collect_cb, &c, &e), OD_OK);
    od_store_get_stats(s, &after);
    assert_int_equal(c.n, NKEYS + 2);
    for (int i = 0; i < NKEYS; i++) {
        char k[32];
        snprintf(k, sizeof k, "k/%02d", i);
        assert_string_equal(c.keys[i], k);
        assert_int_equal(c.metas[i].size, strlen(k));
    }
    assert_string_equal(c.keys[NKEYS], "kk");
    assert_string_equal(c.keys[NKEYS + 1], "other/x");
    uint64_t pages = after.requests[OD_REQ_LIST] - before.requests[OD_REQ_LIST];
    assert_true(pages >= 4 && pages <= 5); /* 12 keys in pages of 3 */
    collect_free(&c);

    /* prefix + start_after */
    assert_int_equal(od_store_list(s, "k/", "k/04", collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, 5);
    assert_string_equal(c.keys[0], "k/05");
    assert_string_equal(c.keys[4], "k/09");
    collect_free(&c);

    /* early stop: the callback's non-zero return ends the listing without more pages */
    od_store_get_stats(s, &before);
    c.stop_after = 4;
    assert_int_equal(od_store_list(s, "k/", NULL, collect_cb, &c, &e), OD_OK);
    od_store_get_stats(s, &after);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[3], "k/03");
    assert_int_equal(after.requests[OD_REQ_LIST] - before.requests[OD_REQ_LIST], 2);
    collect_free(&c);

    /* past the end, and a prefix nothing has */
    assert_int_equal(od_store_list(s, "", "zzz", collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, 0);
    assert_int_equal(od_store_list(s, "nothing/", NULL, collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, 0);
    /* the sibling store sees only its own key */
    assert_int_equal(od_store_list(o, "", NULL, collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "k/00-sibling");
    collect_free(&c);
    od_store_close(s);
    od_store_close(o);
    free(uri);
    free(suri);
}

/* ------------------------------------------------------------------ threads */

typedef struct thr_arg {
    od_store *s;
    int id, n, failures;
    char msg[600];
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    od_buf b = {0};
    od_err e = {0};
    for (int i = 0; i < a->n && !a->failures; i++) {
        char k[64], body[64];
        snprintf(k, sizeof k, "t%d/%04d", a->id, i);
        int n = snprintf(body, sizeof body, "thread %d item %d", a->id, i);
        if (od_store_put(a->s, k, body, (size_t)n, OD_PUT_ALWAYS, NULL, NULL, &e) ||
            od_store_get(a->s, k, &b, NULL, &e) || b.len != (size_t)n || memcmp(b.data, body, (size_t)n) != 0) {
            a->failures++;
            size_t first = b.len;
            od_obj_meta hm = {0};
            int hrc = od_store_head(a->s, k, &hm, &e);
            int grc = od_store_get(a->s, k, &b, NULL, &e);
            snprintf(a->msg, sizeof a->msg, "%.63s: %.300s (got %zu bytes, want %d; then HEAD rc %d size %llu, GET rc %d %zu bytes)",
                     k, e.msg, first, n, hrc, (unsigned long long)hm.size, grc, b.len);
        }
    }
    od_buf_free(&b);
    return NULL;
}

void od_s3test_threads(const char *sub)
{
    char *uri = od_s3test_uri(sub, NULL);
    od_store *s = od_s3test_open(uri);
    enum { NT = 4 };
    thr_arg args[NT];
    pthread_t th[NT];
    int n = od_s3test_n(25);
    for (int i = 0; i < NT; i++) {
        args[i] = (thr_arg){.s = s, .id = i, .n = n};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NT; i++)
        if (args[i].failures) fail_msg("thread %d: %s", i, args[i].msg);
    od_store_stats st;
    od_store_get_stats(s, &st);
    assert_int_equal(st.requests[OD_REQ_PUT], (uint64_t)(NT * n));
    assert_int_equal(st.requests[OD_REQ_GET], (uint64_t)(NT * n));
    collect c = {0};
    od_err e = {0};
    assert_int_equal(od_store_list(s, "", NULL, collect_cb, &c, &e), OD_OK);
    assert_int_equal(c.n, (size_t)(NT * n));
    collect_free(&c);
    od_store_close(s);
    free(uri);
}

/* ------------------------------------------------------------------ connection reuse */

void od_s3test_conn_reuse(const char *sub)
{
    char *uri = od_s3test_uri(sub, NULL);
    od_store *s = od_s3test_open(uri);
    od_err e = {0};
    od_buf b = {0};
    assert_int_equal(od_store_put(s, "c", "conn", 4, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    od_s3_internal_stats a, z;
    assert_int_equal(od_s3_get_internal_stats(s, &a, &e), OD_OK);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(od_store_get(s, "c", &b, NULL, &e), OD_OK);
        assert_int_equal(od_store_head(s, "c", NULL, &e), OD_OK);
        assert_int_equal(od_store_get(s, "nope", &b, NULL, &e), OD_NOTFOUND); /* an error answer keeps it too */
    }
    assert_int_equal(od_s3_get_internal_stats(s, &z, &e), OD_OK);
    assert_int_equal(z.performs - a.performs, 90);
    assert_true(z.connects - a.connects <= 2);
    od_buf_free(&b);
    od_store_close(s);
    free(uri);
}

/* ------------------------------------------------------------------ URIs and secrets */

static void expect_open_fails(const char *uri, int code, const char *must_contain, const char *must_not_contain)
{
    od_store *s = (od_store *)1;
    od_err e = {0};
    int rc = od_store_open(uri, &s, &e);
    if (rc != code) fail_msg("open(%s) gave %s (%s), expected %s", uri, od_code_name(rc), e.msg, od_code_name(code));
    assert_null(s);
    if (must_contain && !strstr(e.msg, must_contain)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, must_contain);
    if (must_not_contain) assert_null(strstr(e.msg, must_not_contain));
}

void od_s3test_bad_uris(void)
{
    const char *sec = "SUPERSECRET42";
    expect_open_fails("s3://", OD_BADREQ, "bucket", NULL);
    expect_open_fails("s3:///prefix?access_key=a&secret_key=SUPERSECRET42", OD_BADREQ, "bucket", sec);
    expect_open_fails("s3://b?bogus=1&access_key=a&secret_key=SUPERSECRET42", OD_BADREQ, "bogus", sec);
    expect_open_fails("s3://b?access_key=a&secret_key=SUPERSECRET42&endpoint=ftp://h", OD_BADREQ, "endpoint", sec);
    expect_open_fails("s3://b?access_key=a&secret_key=SUPERSECRET42&endpoint=http://u:SUPERSECRET42@h", OD_BADREQ,
                      "endpoint", sec);
    expect_open_fails("s3://b/a/../c?access_key=a&secret_key=SUPERSECRET42", OD_BADREQ, "prefix", sec);
    expect_open_fails("s3://b?access_key=a&secret_key=SUPERSECRET42&retries=lots", OD_BADREQ, "retries", sec);
    expect_open_fails("s3://b?access_key=a&secret_key=SUPERSECRET42&list_page=0", OD_BADREQ, "list_page", sec);
    expect_open_fails("s3://b?access_key=a&secret_key=SUPER%2", OD_BADREQ, "secret_key", "SUPER");
    /* no credentials anywhere */
    char *saved[2] = {NULL, NULL};
    const char *envs[2] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"};
    for (int i = 0; i < 2; i++) {
        if (getenv(envs[i])) saved[i] = strdup(getenv(envs[i]));
        unsetenv(envs[i]);
    }
    expect_open_fails("s3://b?endpoint=http://127.0.0.1:9", OD_AUTH, "AWS_ACCESS_KEY_ID", NULL);
    for (int i = 0; i < 2; i++) {
        if (saved[i]) setenv(envs[i], saved[i], 1);
        free(saved[i]);
    }
}

/* A port on 127.0.0.1 that nothing listens on (bound, then closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void od_s3test_unreachable(void)
{
    char uri[256];
    int port = closed_port();
    snprintf(uri, sizeof uri, "s3://b/p?endpoint=http://127.0.0.1:%d&access_key=a&secret_key=SUPERSECRET42", port);
    double t0 = now_s();
    expect_open_fails(uri, OD_TRANSIENT, "127.0.0.1", "SUPERSECRET42");
    assert_true(now_s() - t0 < 5.0);

    snprintf(uri, sizeof uri,
             "s3://b/p?endpoint=http://127.0.0.1:%d&access_key=a&secret_key=SUPERSECRET42&probe=0&retries=2", port);
    od_store *s = od_s3test_open(uri);
    assert_null(strstr(od_store_describe(s), "SUPERSECRET42"));
    od_store_caps caps;
    od_store_get_caps(s, &caps);
    assert_int_equal(caps.conditional_writes, 0); /* not probed: never assumed */
    od_buf b = {0};
    od_err e = {0};
    t0 = now_s();
    assert_int_equal(od_store_get(s, "k", &b, NULL, &e), OD_TRANSIENT);
    assert_true(now_s() - t0 < 5.0);
    assert_null(strstr(e.msg, "SUPERSECRET42"));
    od_store_stats st;
    od_store_get_stats(s, &st);
    assert_int_equal(st.requests[OD_REQ_GET], 3); /* retries=2: three attempts, then the error */
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.errors[OD_REQ_GET], 3);
    od_buf_free(&b);
    od_store_close(s);

    /* a server that accepts the connection (kernel backlog) but never answers: the request
     * times out after timeout_ms and is reported as transient */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &l), 0);
    assert_int_equal(listen(lfd, 8), 0);
    snprintf(uri, sizeof uri,
             "s3://b/p?endpoint=http://127.0.0.1:%d&access_key=a&secret_key=s&probe=0&retries=0&timeout_ms=300",
             ntohs(a.sin_port));
    s = od_s3test_open(uri);
    t0 = now_s();
    assert_int_equal(od_store_head(s, "k", NULL, &e), OD_TRANSIENT);
    double dt = now_s() - t0;
    /* cut by timeout_ms (300), not by the 15 s default stall_ms: the upper bound leaves a
     * loaded machine seconds of slack and still tells the two apart */
    assert_true(dt >= 0.25 && dt < 10.0);
    assert_non_null(strstr(e.msg, "imeout")); /* curl: "Timeout was reached" */
    od_store_close(s);
    /* without a total timeout (the default), a stalled request is cut by stall_ms */
    snprintf(uri, sizeof uri, "s3://b/p?endpoint=http://127.0.0.1:%d&access_key=a&secret_key=s&probe=0&retries=0&stall_ms=1000",
             ntohs(a.sin_port));
    s = od_s3test_open(uri);
    t0 = now_s();
    assert_int_equal(od_store_get(s, "k", &b, NULL, &e), OD_TRANSIENT);
    dt = now_s() - t0;
    assert_true(dt >= 0.9 && dt < 10.0); /* stall_ms=1000, not the 15 s default */
    od_store_close(s);
    od_buf_free(&b);
    close(lfd);
}
