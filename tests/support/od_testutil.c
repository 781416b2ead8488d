/*
 * od_testutil.c — small scaffolding shared by the unit tests (see od_testutil.h): scale,
 * clocks, /tmp directories, kept mem:// stores, event store and tsdb opens and the holding compaction
 * filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "od_testutil.h"

double od_test_scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

int64_t od_test_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t od_test_mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void od_test_sleep_ms(int ms)
{
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int od_test_tmpdir_make(char *dir, size_t n, const char *prefix)
{
    int w = snprintf(dir, n, "/tmp/%s-XXXXXX", prefix);
    if (w < 0 || (size_t)w >= n) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

int od_test_tmpdir_remove(const char *dir)
{
    char cmd[4200];
    int w = snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (w < 0 || (size_t)w >= sizeof cmd) return -1;
    return system(cmd) == 0 ? 0 : -1;
}

void od_test_run_on_file(const char *prefix, void (*run)(const char *uri))
{
    char dir[256], uri[300];
    assert_int_equal(od_test_tmpdir_make(dir, sizeof dir, prefix), 0);
    snprintf(uri, sizeof uri, "file://%s", dir);
    run(uri);
    assert_int_equal(od_test_tmpdir_remove(dir), 0);
}

int od_test_tmpstore_make(char *dir, size_t dn, char *uri, size_t un, const char *prefix, const char *scheme)
{
    if (od_test_tmpdir_make(dir, dn, prefix)) return -1;
    int w = snprintf(uri, un, "%s%s/store", scheme, dir);
    return w < 0 || (size_t)w >= un ? -1 : 0;
}

od_eventstore *od_test_ev_open(const char *uri, const od_ev_options *o)
{
    od_eventstore *es = NULL;
    od_err err = {0};
    int rc = od_ev_open(uri, o, &es, &err);
    if (rc) fprintf(stderr, "open: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
    return es;
}

od_tsdb *od_test_tsdb_open(const char *uri, const od_tsdb_options *o)
{
    od_tsdb *t = NULL;
    od_err e;
    int rc = od_tsdb_open(uri, o, &t, &e);
    if (rc) fprintf(stderr, "open: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
    return t;
}

od_store *od_test_memstore_keep(char *uri, size_t n, const char *prefix)
{
    static int counter;
    snprintf(uri, n, "mem://%s_%d", prefix, ++counter);
    od_store *s = NULL;
    od_err e;
    assert_int_equal(od_store_open(uri, &s, &e), OD_OK);
    return s;
}

int od_test_memstore_drop(od_store **keep)
{
    if (*keep) od_store_close(*keep);
    *keep = NULL;
    return 0;
}

void od_test_run_on_mem(const char *prefix, void (*run)(const char *uri))
{
    char uri[128];
    od_store *keep = od_test_memstore_keep(uri, sizeof uri, prefix);
    run(uri);
    od_test_memstore_drop(&keep);
}

int od_test_store_exists(od_store *s, const char *key)
{
    od_obj_meta meta;
    od_err err;
    int rc = od_store_head(s, key, &meta, &err);
    if (rc != OD_OK && rc != OD_NOTFOUND) fail_msg("head %s: %s", key, err.msg);
    return rc == OD_OK;
}

int od_holdfilter_fn(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, int64_t now)
{
    (void)key, (void)klen, (void)val, (void)vlen, (void)now;
    od_holdfilter *h = ctx;
    pthread_mutex_lock(&h->mu);
    if (!h->entered) {
        h->entered = 1;
        pthread_cond_broadcast(&h->cv);
        while (!h->released) pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return 0;
}

int od_holdfilter_wait(od_holdfilter *h, int timeout_ms)
{
    int64_t deadline = od_test_mono_ms() + timeout_ms;
    pthread_mutex_lock(&h->mu);
    while (!h->entered && od_test_mono_ms() < deadline) {
        pthread_mutex_unlock(&h->mu);
        od_test_sleep_ms(2);
        pthread_mutex_lock(&h->mu);
    }
    int entered = h->entered;
    pthread_mutex_unlock(&h->mu);
    return entered;
}

int od_holdfilter_release(od_holdfilter *h)
{
    pthread_mutex_lock(&h->mu);
    int was_held = !h->released;
    h->released = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return was_held;
}
