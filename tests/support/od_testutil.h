/*
 * od_testutil.h — small scaffolding shared by the unit tests, so that each test file does not
 * carry its own copy: the OD_TEST_SCALE factor, clocks, a throwaway /tmp directory per test,
 * a mem:// store kept alive across reopens (and a scenario run on one), an object-exists
 * check, event store and tsdb opens that must succeed, and a compaction filter that holds a
 * background compaction until the test releases it.
 *
 * Linked into every test binary (like every .c file in tests/support); all names are od_test_* /
 * od_holdfilter_*. Functions that check use cmocka assertions and are meant to be called from
 * cmocka test functions (or their setup/teardown).
 */
#ifndef OD_TESTUTIL_H
#define OD_TESTUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "eventstore/od_eventstore.h"
#include "objstore/od_objstore.h"
#include "tsdb/od_tsdb.h"

/* OD_TEST_SCALE (a float; default 1, also for a value ≤ 0 or unparsable). */
double od_test_scale(void);

/* Wall clock (CLOCK_REALTIME) and monotonic clock in ms; sleep ms (nothing for ms ≤ 0). */
int64_t od_test_now_ms(void);
int64_t od_test_mono_ms(void);
void od_test_sleep_ms(int ms);

/* Create a fresh directory "/tmp/<prefix>-XXXXXX" into dir (n bytes); 0 on success, -1 on
 * failure (the cmocka setup convention). od_test_tmpdir_remove removes it with everything
 * below (rm -rf); 0 on success, -1 on failure. */
int od_test_tmpdir_make(char *dir, size_t n, const char *prefix);
int od_test_tmpdir_remove(const char *dir);

/* Run a scenario on a store in a fresh directory: make "/tmp/<prefix>-XXXXXX", call
 * run("file://<dir>"), then remove the directory. Asserts both steps succeed. */
void od_test_run_on_file(const char *prefix, void (*run)(const char *uri));

/* od_test_tmpdir_make, then uri = "<scheme><dir>/store" (scheme "" or e.g. "file://"):
 * a store path in a fresh directory, for a cmocka setup. 0 on success, -1 on failure. */
int od_test_tmpstore_make(char *dir, size_t dn, char *uri, size_t un, const char *prefix, const char *scheme);

/* Name a fresh mem:// store "mem://<prefix>_<k>" (k counts up per process) into uri (n bytes),
 * open it and return the handle: a mem:// store lives while a handle on it is open, so keeping
 * this one lets a test reopen its database. Asserts the open succeeds; od_store_close it. */
od_store *od_test_memstore_keep(char *uri, size_t n, const char *prefix);
/* Close *keep (if any) and clear it: the matching cmocka teardown; returns 0. */
int od_test_memstore_drop(od_store **keep);
/* Run a scenario on a fresh mem:// store (od_test_memstore_keep(prefix), kept open while
 * run(uri) runs, so it may reopen its database; dropped after): od_test_run_on_file's twin. */
void od_test_run_on_mem(const char *prefix, void (*run)(const char *uri));

/* 1 if `key` exists in s (HEAD), 0 if not found; fails the test on any other error. */
int od_test_store_exists(od_store *s, const char *key);

/* od_ev_open(uri, o) that must succeed (prints the engine's message first if not). */
od_eventstore *od_test_ev_open(const char *uri, const od_ev_options *o);
/* od_tsdb_open(uri, o) that must succeed (likewise). */
od_tsdb *od_test_tsdb_open(const char *uri, const od_tsdb_options *o);

/* A compaction filter (od_compaction_filter_fn, ctx = od_holdfilter *) that holds the first
 * compaction calling it: it sets `entered` and blocks until the test calls
 * od_holdfilter_release; every later call passes straight through. Keeps every entry.
 *   od_holdfilter h = OD_HOLDFILTER_INIT;
 *   o.compaction_filter = od_holdfilter_fn; o.compaction_filter_ctx = &h; */
typedef struct od_holdfilter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, released;
} od_holdfilter;

#define OD_HOLDFILTER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0}

int od_holdfilter_fn(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, int64_t now);
/* Wait up to timeout_ms (polling every 2 ms) for a compaction to enter; returns `entered`. */
int od_holdfilter_wait(od_holdfilter *h, int timeout_ms);
/* Let the held compaction (and every later one) go on; returns 1 if it was still held. */
int od_holdfilter_release(od_holdfilter *h);

#endif
