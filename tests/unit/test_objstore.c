/*
 * test_objstore.c — the object-store layer: the contract suite on every local backend, plus what
 * is particular to file:// and to the fault-injecting wrapper.
 *
 * Contract groups: mem://, file:// (a fresh mkdtemp directory, with the multi-process races),
 * faulty+mem:// with 20% injected errors and 10% "succeeded but reported failure" (the generic
 * retry layer must hide them), and faulty+file:// with the multi-process races. Then a group of
 * specific tests: URI errors and their messages, no temp files left behind, keys never escaping
 * the root (also through planted symlinks), the file layout (ETag definition and its xattr cache,
 * lock stripe names, key/directory conflicts), writers SIGKILLed mid-PUT, PUT/DELETE churn in one
 * directory, fault determinism and the faulty runtime API. The temp directory is removed at the
 * end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#if MBEDTLS_VERSION_MAJOR >= 3
#define sha256_oneshot mbedtls_sha256
#else
#define sha256_oneshot mbedtls_sha256_ret
#endif

#include "objstore/od_faulty.h"
#include "objstore/od_objstore.h"
#include "od_contract.h"

static char g_tmp[256]; /* the test's private directory */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static od_store *open_ok(const char *uri)
{
    od_store *s = NULL;
    od_err e = {0};
    int rc = od_store_open(uri, &s, &e);
    if (rc) fail_msg("open %s: %s", uri, e.msg);
    return s;
}

static void expect_open_error(const char *uri, int code, const char *needle)
{
    od_store *s = (od_store *)1;
    od_err e = {0};
    int rc = od_store_open(uri, &s, &e);
    if (rc != code) fail_msg("open \"%s\": expected %s, got %s (%s)", uri, od_code_name((od_code)code),
                             od_code_name((od_code)rc), e.msg);
    assert_null(s);
    if (!strstr(e.msg, needle)) fail_msg("open \"%s\": message \"%s\" lacks \"%s\"", uri, e.msg, needle);
}

/* ------------------------------------------------------------------------------------------
 * URI parsing
 */

/* Credentials never reach messages: od_uri_redact hides secret_key and session_token values. */
static void test_uri_redact(void **state)
{
    (void)state;
    char out[256];
    od_uri_redact("s3://b/p?region=us-east-1&access_key=AK&secret_key=TOPSECRET&path_style=1", out, sizeof out);
    assert_string_equal(out, "s3://b/p?region=us-east-1&access_key=AK&secret_key=***&path_style=1");
    od_uri_redact("s3://b/p?secret_key=TOPSECRET&session_token=TOK", out, sizeof out);
    assert_string_equal(out, "s3://b/p?secret_key=***&session_token=***");
    od_uri_redact("/data/secret_key=notaparam", out, sizeof out);
    assert_string_equal(out, "/data/secret_key=notaparam");
    od_uri_redact("s3://b/p?secret_key=TOPSECRET", out, 12);
    assert_int_equal(strlen(out), 11);
    assert_null(strstr(out, "TOP"));
}

static void test_uri_errors(void **state)
{
    (void)state;
    expect_open_error("", OD_BADREQ, "empty store URI");
    expect_open_error("ftp://host/x", OD_BADREQ, "unknown scheme");
    expect_open_error("file://relative/dir", OD_BADREQ, "must be absolute");
    expect_open_error("mem://", OD_BADREQ, "needs a name");
    expect_open_error("faulty+mem://f?bogus=1", OD_BADREQ, "\"bogus\"");
    expect_open_error("faulty+mem://f?seed=1&error_rate=1.5", OD_BADREQ, "error_rate");
    expect_open_error("faulty+mem://f?ambiguous_rate=-0.1", OD_BADREQ, "ambiguous_rate");
    expect_open_error("faulty+mem://f?seed=abc", OD_BADREQ, "seed");
    expect_open_error("faulty+mem://f?latency_ms=x", OD_BADREQ, "latency_ms");
    expect_open_error("faulty+mem://f?retries=0", OD_BADREQ, "retries");
    expect_open_error("faulty+mem://f?error_rate", OD_BADREQ, "no value");
    expect_open_error("faulty+mem://f?error_rate=0.7&ambiguous_rate=0.7", OD_BADREQ, "must not exceed 1");
    expect_open_error("faulty+?seed=1", OD_BADREQ, "inner store URI");
    expect_open_error("faulty+mem://?seed=1", OD_BADREQ, "needs a name");
    expect_open_error("faulty+gopher://x?seed=1", OD_BADREQ, "unknown scheme");
    /* around s3://, parameters the wrapper does not know are the inner store's to judge */
    expect_open_error("faulty+s3://bucket/p?probe=0&seed=1&bogus=1", OD_BADREQ, "s3: unknown parameter \"bogus\"");
    expect_open_error("faulty+s3://bucket/p?probe=0&region=bad:region&seed=1", OD_BADREQ, "bad:region");

    /* a file store whose root is a regular file, or cannot be created */
    char path[400];
    snprintf(path, sizeof path, "%s/plainfile", g_tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    char uri[500];
    snprintf(uri, sizeof uri, "file://%s", path);
    expect_open_error(uri, OD_BADREQ, "Not a directory");
    snprintf(uri, sizeof uri, "file://%s/below", path);
    expect_open_error(uri, OD_IO, "cannot create store directory");
    expect_open_error("file:///proc/od-no-such-dir/store", OD_IO, "cannot create store directory");

    /* good URIs describe themselves without surprises */
    od_store *s = open_ok("faulty+mem://desc?seed=3");
    assert_string_equal(od_store_describe(s), "faulty+mem://desc");
    od_store_close(s);
    snprintf(uri, sizeof uri, "file://%s/described", g_tmp);
    s = open_ok(uri);
    assert_string_equal(od_store_describe(s), uri);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * file:// specifics
 */

static int g_tmp_found;

static int find_tmp(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (strncmp(path + ftw->base, ".od-tmp-", 8) == 0) g_tmp_found++;
    return 0;
}

static void read_file(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

static int count_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)key;
    (void)meta;
    (*(size_t *)ctx)++;
    return 0;
}

static void test_file_no_temp_files(void **state)
{
    (void)state;
    char root[400], uri[500];
    snprintf(root, sizeof root, "%s/notemp", g_tmp);
    snprintf(uri, sizeof uri, "file://%s", root);
    od_store *s = open_ok(uri);
    od_err e = {0};
    for (int i = 0; i < 30; i++) {
        char key[64], val[64];
        snprintf(key, sizeof key, "d%d/k%d", i % 3, i);
        snprintf(val, sizeof val, "value %d", i);
        assert_int_equal(od_store_put(s, key, val, strlen(val), OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
        /* losing conditional writes must clean up their temp files too */
        assert_int_equal(od_store_put(s, key, "x", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_EXISTS);
        assert_int_equal(od_store_put(s, key, "y", 1, OD_PUT_IF_MATCH, "0123", NULL, &e), OD_PRECONDITION);
        od_obj_meta m;
        assert_int_equal(od_store_head(s, key, &m, &e), OD_OK);
        snprintf(val, sizeof val, "value %d again", i);
        assert_int_equal(od_store_put(s, key, val, strlen(val), OD_PUT_IF_MATCH, m.etag, NULL, &e), OD_OK);
    }
    assert_int_equal(od_store_put(s, "fresh", "f", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_OK);
    g_tmp_found = 0;
    assert_int_equal(nftw(root, find_tmp, 16, FTW_PHYS), 0);
    assert_int_equal(g_tmp_found, 0);
    /* objects are plain files at <root>/<key> */
    char path[500], buf[64];
    snprintf(path, sizeof path, "%s/d1/k7", root);
    read_file(path, buf, sizeof buf);
    assert_string_equal(buf, "value 7 again");
    snprintf(path, sizeof path, "%s/fresh", root);
    read_file(path, buf, sizeof buf);
    assert_string_equal(buf, "f");
    /* a stray temp file (e.g. from a crash) is never listed */
    snprintf(path, sizeof path, "%s/d1/.od-tmp-999-1-deadbeef", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("partial", f);
    fclose(f);
    size_t n = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, 31);
    /* and reserved names cannot be used as keys */
    assert_int_equal(od_store_put(s, "d1/.od-tmp-999-1-deadbeef", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "reserved"));
    assert_int_equal(od_store_get(s, ".od-locks/00", &(od_buf){0}, NULL, &e), OD_BADREQ);
    od_store_close(s);
}

static void test_file_never_escapes(void **state)
{
    (void)state;
    char root[400], outside[400], uri[500], path[600];
    snprintf(root, sizeof root, "%s/jail", g_tmp);
    snprintf(outside, sizeof outside, "%s/outside", g_tmp);
    assert_int_equal(mkdir(outside, 0755), 0);
    snprintf(uri, sizeof uri, "file://%s", root);
    od_store *s = open_ok(uri);
    od_err e = {0};
    od_buf got = {0};
    /* keys that name a path outside are refused before anything is touched */
    const char *bad[] = {"../outside/x", "a/../../outside/x", "/etc/passwd", "a/./../../x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(od_store_put(s, bad[i], "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
        assert_int_equal(od_store_get(s, bad[i], &got, NULL, &e), OD_BADREQ);
        assert_int_equal(od_store_delete(s, bad[i], &e), OD_BADREQ);
    }
    /* a symlink planted inside the root is never followed: not for writes, reads or lists */
    snprintf(path, sizeof path, "%s/evil", root);
    assert_int_equal(symlink(outside, path), 0);
    snprintf(path, sizeof path, "%s/secret", outside);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("secret", f);
    fclose(f);
    assert_int_equal(od_store_put(s, "evil/x", "x", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "symbolic link"));
    assert_int_equal(od_store_put(s, "evil/y", "y", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_BADREQ);
    assert_int_not_equal(od_store_get(s, "evil/secret", &got, NULL, &e), OD_OK);
    assert_int_equal(got.len, 0);
    snprintf(path, sizeof path, "%s/leaf", root);
    snprintf(uri, sizeof uri, "%s/secret", outside);
    assert_int_equal(symlink(uri, path), 0);
    assert_int_equal(od_store_get(s, "leaf", &got, NULL, &e), OD_BADREQ);
    assert_int_equal(od_store_head(s, "leaf", NULL, &e), OD_BADREQ);
    assert_int_equal(od_store_get_range(s, "leaf", 0, 3, &got, &e), OD_BADREQ);
    size_t n = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, 0);
    /* overwriting the link replaces the link itself, the target outside is untouched */
    assert_int_equal(od_store_put(s, "leaf", "mine", 4, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    char buf[64];
    read_file(uri, buf, sizeof buf);
    assert_string_equal(buf, "secret");
    /* nothing was created in the outside directory */
    n = 0;
    g_tmp_found = 0;
    snprintf(path, sizeof path, "%s/x", outside);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/y", outside);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/x", g_tmp);
    assert_int_equal(access(path, F_OK), -1);
    od_buf_free(&got);
    od_store_close(s);
}

static void test_file_layout(void **state)
{
    (void)state;
    char root[400], uri[500], cwd[1024];
    snprintf(root, sizeof root, "%s/layout", g_tmp);
    snprintf(uri, sizeof uri, "file://%s", root);
    od_store *s = open_ok(uri);
    od_err e = {0};
    od_buf got = {0};
    /* a key and keys below it cannot coexist on a file system: a clear error, not corruption */
    assert_int_equal(od_store_put(s, "a/b", "1", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_put(s, "a", "2", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "cannot hold both"));
    assert_int_equal(od_store_put(s, "a", "2", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_BADREQ);
    assert_int_equal(od_store_head(s, "a", NULL, &e), OD_NOTFOUND);
    assert_int_equal(od_store_put(s, "a/b/c", "3", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "is an object"));
    /* a segment longer than the file system allows for a name is a clear caller error */
    char longkey[300];
    memset(longkey, 'n', 256);
    memcpy(longkey + 256, "/x", 3);
    assert_int_equal(od_store_put(s, longkey, "1", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "longer than 255"));
    longkey[255] = 0;
    assert_int_equal(od_store_put(s, longkey, "1", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    /* once a/b is deleted its directory goes away and "a" can be an object */
    assert_int_equal(od_store_delete(s, "a/b", &e), OD_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/a", root);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(od_store_put(s, "a", "2", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    /* an empty directory left where an object goes (an interrupted clean-up) does not block it */
    snprintf(path, sizeof path, "%s/emptydir", root);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(od_store_put(s, "emptydir", "3", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    snprintf(path, sizeof path, "%s/emptydir2", root);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(od_store_put(s, "emptydir2", "4", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_get(s, "emptydir2", &got, NULL, &e), OD_OK);
    assert_int_equal(got.len, 1);
    /* the ETag is a content hash: same bytes, same ETag; different bytes, different ETag */
    od_obj_meta m1, m2, m3;
    assert_int_equal(od_store_put(s, "e1", "same", 4, OD_PUT_ALWAYS, NULL, &m1, &e), OD_OK);
    assert_int_equal(od_store_put(s, "e2", "same", 4, OD_PUT_ALWAYS, NULL, &m2, &e), OD_OK);
    assert_int_equal(od_store_put(s, "e3", "diff", 4, OD_PUT_ALWAYS, NULL, &m3, &e), OD_OK);
    assert_string_equal(m1.etag, m2.etag);
    assert_string_not_equal(m1.etag, m3.etag);
    assert_int_equal(strlen(m1.etag), 32);
    assert_true(m1.mtime_ms > 0);
    /* ... exactly the first 32 hex digits of SHA-256 (docs/formats.md) */
    unsigned char d[32];
    char hex[33];
    assert_int_equal(sha256_oneshot((const unsigned char *)"same", 4, d, 0), 0);
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(m1.etag, hex);
    /* the ETag cached in the file's xattr: put without meta, head twice, then an edit in place
     * (by someone else) must not leave a stale ETag behind */
    od_obj_meta h1, h2, h3;
    assert_int_equal(od_store_put(s, "cached", "same", 4, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    assert_int_equal(od_store_head(s, "cached", &h1, &e), OD_OK);
    assert_int_equal(od_store_head(s, "cached", &h2, &e), OD_OK);
    assert_string_equal(h1.etag, hex);
    assert_string_equal(h2.etag, hex);
    snprintf(path, sizeof path, "%s/cached", root);
    char xv[128], xw[128];
    ssize_t xn = getxattr(path, "user.od.etag", xv, sizeof xv - 1);
    if (xn < 0) {
        /* only a file system without user xattrs (tmpfs before Linux 6.6) may lack the cache */
        assert_int_equal(errno, ENOTSUP);
    } else {
        xv[xn] = 0;
        snprintf(xw, sizeof xw, "od1 %s 4 ", hex);
        assert_memory_equal(xv, xw, strlen(xw));
    }
    FILE *ef = fopen(path, "ab");
    assert_non_null(ef);
    fputs("more", ef);
    fclose(ef);
    assert_int_equal(sha256_oneshot((const unsigned char *)"samemore", 8, d, 0), 0);
    char hex2[33];
    for (int i = 0; i < 16; i++) snprintf(hex2 + 2 * i, 3, "%02x", d[i]);
    assert_int_equal(od_store_head(s, "cached", &h3, &e), OD_OK);
    assert_string_equal(h3.etag, hex2);
    assert_int_equal(od_store_get(s, "cached", &got, &h3, &e), OD_OK);
    assert_string_equal(h3.etag, hex2);
    assert_int_equal(od_store_put(s, "cached", "x", 1, OD_PUT_IF_MATCH, h1.etag, NULL, &e), OD_PRECONDITION);
    /* the lock stripe of a written key is <root>/.od-locks/<FNV-1a-64(key) mod 256, 2 hex> */
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = "e3"; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    snprintf(path, sizeof path, "%s/.od-locks/%02x", root, (unsigned)(h % 256));
    assert_int_equal(access(path, F_OK), 0);
    od_buf_free(&got);
    od_store_close(s);

    /* a plain relative path is relative to the working directory at open, and stays put */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_tmp), 0);
    s = open_ok("rel/store");
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(od_store_put(s, "k", "rel", 3, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    snprintf(path, sizeof path, "%s/rel/store/k", g_tmp);
    char buf[16];
    read_file(path, buf, sizeof buf);
    assert_string_equal(buf, "rel");
    assert_memory_equal(od_store_describe(s), "file:///", 8);
    od_store_close(s);
}

/* PUTs and DELETEs racing in one directory: DELETE removes directories it empties, PUT must then
 * create them again (and never fail because one vanished under it). */
typedef struct churn_job {
    od_store *s;
    int id, rounds;
    int errors;
    char msg[600];
} churn_job;

static void *churn(void *arg)
{
    churn_job *j = arg;
    for (int i = 0; i < j->rounds; i++) {
        char key[64];
        snprintf(key, sizeof key, "deep/er/still/k%d", j->id);
        od_err e = {0};
        od_put_mode mode = (i % 2) ? OD_PUT_IF_ABSENT : OD_PUT_ALWAYS;
        int rc = od_store_put(j->s, key, "v", 1, mode, NULL, NULL, &e);
        if (rc == OD_OK) rc = od_store_delete(j->s, key, &e);
        if (rc != OD_OK) {
            j->errors++;
            snprintf(j->msg, sizeof j->msg, "%s: %s", key, e.msg);
        }
    }
    return NULL;
}

static void test_file_put_delete_churn(void **state)
{
    (void)state;
    char root[400], uri[500], path[600];
    snprintf(root, sizeof root, "%s/churn", g_tmp);
    snprintf(uri, sizeof uri, "file://%s", root);
    od_store *s = open_ok(uri);
    enum { T = 4 };
    const char *sc = getenv("OD_TEST_SCALE");
    double scale = sc && atof(sc) > 0 ? atof(sc) : 1.0;
    pthread_t th[T];
    churn_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (churn_job){.s = s, .id = t, .rounds = (int)(150 * scale) + 20};
        assert_int_equal(pthread_create(&th[t], NULL, churn, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++)
        if (jobs[t].errors) fail_msg("thread %d: %d errors, last: %s", t, jobs[t].errors, jobs[t].msg);
    /* everything was deleted, so the directories are gone too */
    snprintf(path, sizeof path, "%s/deep", root);
    assert_int_equal(access(path, F_OK), -1);
    size_t n = 0;
    od_err e = {0};
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, 0);
    od_store_close(s);
}

/* A writer killed at a random moment (SIGKILL, so no cleanup runs) leaves the previous or the
 * new version of an object, never a torn one; the store stays usable and lists no debris. */
static size_t kill_len(uint8_t v)
{
    return 200000 + (size_t)v * 1000;
}

static void test_file_kill_mid_put(void **state)
{
    (void)state;
    char root[400], uri[500];
    snprintf(root, sizeof root, "%s/killed", g_tmp);
    snprintf(uri, sizeof uri, "file://%s", root);
    od_store *s = open_ok(uri);
    od_err e = {0};
    od_buf got = {0};
    uint8_t *buf = malloc(kill_len(255));
    assert_non_null(buf);
    memset(buf, 1, kill_len(1));
    assert_int_equal(od_store_put(s, "dir/k", buf, kill_len(1), OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    const char *sc = getenv("OD_TEST_SCALE");
    double scale = sc ? atof(sc) : 1.0;
    int rounds = (int)(12 * (scale > 0 ? scale : 1.0));
    if (rounds < 4) rounds = 4;
    unsigned seed = (unsigned)getpid();
    for (int r = 0; r < rounds; r++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            od_store *cs = NULL;
            if (od_store_open(uri, &cs, NULL) != OD_OK) _exit(3);
            for (unsigned i = 0;; i++) {
                uint8_t v = (uint8_t)(2 + (i + (unsigned)r * 7) % 250);
                memset(buf, v, kill_len(v));
                const char *k = (i % 3 == 2) ? "dir/other" : "dir/k";
                od_put_mode mode = (i % 3 == 1) ? OD_PUT_IF_ABSENT : OD_PUT_ALWAYS;
                int rc = od_store_put(cs, k, buf, kill_len(v), mode, NULL, NULL, NULL);
                if (rc != OD_OK && rc != OD_EXISTS) _exit(4);
            }
        }
        usleep(1000 + rand_r(&seed) % 20000);
        kill(pid, SIGKILL);
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) fail_msg("writer exited early, status 0x%x", st);
        const char *keys[] = {"dir/k", "dir/other"};
        for (int k = 0; k < 2; k++) {
            int rc = od_store_get(s, keys[k], &got, NULL, &e);
            if (rc == OD_NOTFOUND && k == 1) continue;
            assert_int_equal(rc, OD_OK);
            uint8_t v = got.data[0];
            if (got.len != kill_len(v)) fail_msg("%s: torn object of %zu bytes (byte %u)", keys[k], got.len, v);
            for (size_t i = 0; i < got.len; i++)
                if (got.data[i] != v) fail_msg("%s: byte %zu is %u, byte 0 is %u", keys[k], i, got.data[i], v);
        }
    }
    size_t n = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, od_store_head(s, "dir/other", NULL, &e) == OD_OK ? 2 : 1);
    od_obj_meta m;
    assert_int_equal(od_store_head(s, "dir/k", &m, &e), OD_OK);
    assert_int_equal(od_store_put(s, "dir/k", "after", 5, OD_PUT_IF_MATCH, m.etag, NULL, &e), OD_OK);
    assert_int_equal(od_store_delete(s, "dir/other", &e), OD_OK);
    assert_int_equal(od_store_delete(s, "dir/k", &e), OD_OK);
    n = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_OK);
    assert_int_equal(n, 0);
    free(buf);
    od_buf_free(&got);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * faulty+
 */

/* Run a fixed sequence of requests and record their result codes. */
static void fault_sequence(const char *uri, int *codes, int n)
{
    od_store *s = open_ok(uri);
    od_buf got = {0};
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i % 10);
        switch (i % 4) {
        case 0: codes[i] = od_store_put(s, key, "v", 1, OD_PUT_ALWAYS, NULL, NULL, NULL); break;
        case 1: codes[i] = od_store_get(s, key, &got, NULL, NULL); break;
        case 2: codes[i] = od_store_head(s, key, NULL, NULL); break;
        default: codes[i] = od_store_delete(s, key, NULL); break;
        }
    }
    od_faulty_stats st;
    assert_int_equal(od_store_faulty_get_stats(s, &st), OD_OK);
    assert_int_equal(st.requests, (uint64_t)n);
    /* with retries=1 every injected fault reaches the caller, and nothing else fails */
    int transient = 0;
    for (int i = 0; i < n; i++) transient += codes[i] == OD_TRANSIENT;
    assert_int_equal((uint64_t)transient, st.injected_errors + st.injected_ambiguous);
    assert_int_equal(od_store_faulty_injected(s), st.injected_errors + st.injected_ambiguous);
    od_buf_free(&got);
    od_store_close(s);
}

static void test_faulty_determinism(void **state)
{
    (void)state;
    enum { N = 400 };
    int a[N], b[N], c[N];
    fault_sequence("faulty+mem://det-a?seed=42&error_rate=0.25&ambiguous_rate=0.15&retries=1", a, N);
    fault_sequence("faulty+mem://det-b?seed=42&error_rate=0.25&ambiguous_rate=0.15&retries=1", b, N);
    fault_sequence("faulty+mem://det-c?seed=43&error_rate=0.25&ambiguous_rate=0.15&retries=1", c, N);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    int ta = 0;
    for (int i = 0; i < N; i++) ta += a[i] == OD_TRANSIENT;
    /* 40% of 400 requests: far from 0 and from N for any sane generator */
    assert_true(ta > N / 5 && ta < N * 3 / 5);
    /* without faults configured nothing is injected */
    fault_sequence("faulty+mem://det-d?seed=42&retries=1", c, N);
    for (int i = 0; i < N; i++) assert_int_not_equal(c[i], OD_TRANSIENT);
}

static void test_faulty_api(void **state)
{
    (void)state;
    od_store *s = open_ok("faulty+mem://api?seed=5&retries=1");
    od_store *inner = od_store_faulty_inner(s);
    assert_non_null(inner);
    od_err e = {0};
    od_buf got = {0};
    /* forced errors never reach the inner store */
    assert_int_equal(od_store_faulty_fail_next(s, 2, 0), OD_OK);
    assert_int_equal(od_store_put(s, "k", "v", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_TRANSIENT);
    assert_non_null(strstr(e.msg, "injected"));
    assert_int_equal(od_store_put(s, "k", "v", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_TRANSIENT);
    assert_int_equal(od_store_get(inner, "k", &got, NULL, &e), OD_NOTFOUND);
    assert_int_equal(od_store_put(s, "k", "v", 1, OD_PUT_ALWAYS, NULL, NULL, &e), OD_OK);
    /* an ambiguous outcome happened on the inner store, but was reported as a failure */
    assert_int_equal(od_store_faulty_fail_next(s, 1, 1), OD_OK);
    assert_int_equal(od_store_put(s, "k2", "w", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_TRANSIENT);
    assert_non_null(strstr(e.msg, "succeeded but reported failure"));
    assert_int_equal(od_store_get(inner, "k2", &got, NULL, &e), OD_OK);
    assert_int_equal(od_store_faulty_injected(s), 3);
    /* with retries, the generic layer resolves the ambiguous create as ours */
    od_store_set_retry(s, 3, 0, 0);
    assert_int_equal(od_store_faulty_fail_next(s, 1, 1), OD_OK);
    od_store_stats st0, st1;
    od_store_get_stats(s, &st0);
    assert_int_equal(od_store_put(s, "k3", "z", 1, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_OK);
    od_store_get_stats(s, &st1);
    assert_true(st1.retries > st0.retries);
    /* ... while somebody else's object is still "exists" */
    assert_int_equal(od_store_faulty_fail_next(s, 1, 0), OD_OK);
    assert_int_equal(od_store_put(s, "k3", "other", 5, OD_PUT_IF_ABSENT, NULL, NULL, &e), OD_EXISTS);
    /* a retry budget that runs out surfaces the last error */
    assert_int_equal(od_store_faulty_fail_next(s, 5, 0), OD_OK);
    assert_int_equal(od_store_get(s, "k", &got, NULL, &e), OD_TRANSIENT);
    assert_non_null(strstr(e.msg, "3 attempts"));
    assert_int_equal(od_store_faulty_fail_next(s, 0, 0), OD_OK);
    /* rates and latency at run time */
    assert_int_equal(od_store_faulty_set(s, 1.0, 0.0, 0), OD_OK);
    assert_int_equal(od_store_head(s, "k", NULL, &e), OD_TRANSIENT);
    assert_int_equal(od_store_faulty_set(s, 0.0, 0.0, 30), OD_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(od_store_head(s, "k", NULL, &e), OD_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms >= 29.0);
    assert_int_equal(od_store_faulty_set(s, 1.5, 0.0, 0), OD_BADREQ);
    assert_int_equal(od_store_faulty_set(s, 0.6, 0.6, 0), OD_BADREQ);
    /* caps mirror the inner store; the API refuses other stores */
    od_store_caps c;
    od_store_get_caps(s, &c);
    assert_int_equal(c.conditional_writes, 1);
    assert_int_equal(od_store_faulty_set(inner, 0, 0, 0), OD_BADREQ);
    assert_null(od_store_faulty_inner(inner));
    assert_int_equal(od_store_faulty_injected(inner), 0);
    /* an injected LIST failure with retries=1 */
    od_store_set_retry(s, 1, 0, 0);
    assert_int_equal(od_store_faulty_set(s, 1.0, 0.0, 0), OD_OK);
    size_t n = 0;
    assert_int_equal(od_store_list(s, "", NULL, count_cb, &n, &e), OD_TRANSIENT);
    assert_int_equal(n, 0);
    od_buf_free(&got);
    od_store_close(s);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/od-test-objstore-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    int failed = 0;
    char uri[512], name[64];
    snprintf(name, sizeof name, "contract-%ld", (long)getpid());
    snprintf(uri, sizeof uri, "mem://%s", name);
    failed += od_contract_run("contract mem://", uri, 0);
    snprintf(uri, sizeof uri, "file://%s/contract", g_tmp);
    failed += od_contract_run("contract file://", uri, OD_CONTRACT_MULTIPROC);
    snprintf(uri, sizeof uri,
             "faulty+mem://%s-f?seed=1&error_rate=0.2&ambiguous_rate=0.1&retries=16&retry_base_ms=0&retry_max_ms=2",
             name);
    failed += od_contract_run("contract faulty+mem://", uri, 0);
    snprintf(uri, sizeof uri,
             "faulty+file://%s/faulty?seed=2&error_rate=0.1&ambiguous_rate=0.1&retries=16&retry_base_ms=0"
             "&retry_max_ms=2", g_tmp);
    failed += od_contract_run("contract faulty+file://", uri, OD_CONTRACT_MULTIPROC);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_errors),
        cmocka_unit_test(test_uri_redact),
        cmocka_unit_test(test_file_no_temp_files),
        cmocka_unit_test(test_file_never_escapes),
        cmocka_unit_test(test_file_layout),
        cmocka_unit_test(test_file_kill_mid_put),
        cmocka_unit_test(test_file_put_delete_churn),
        cmocka_unit_test(test_faulty_determinism),
        cmocka_unit_test(test_faulty_api),
    };
    failed += cmocka_run_group_tests_name("objstore specifics", tests, NULL, NULL);
    rm_rf(g_tmp);
    return failed ? 1 : 0;
}
