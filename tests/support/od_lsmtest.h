/*
 * od_lsmtest.h — storage-engine test logic shared by the local-store tests (test_lsm_model,
 * test_lsm_crash, test_lsm_fencing on mem:// and file://) and the s3:// ones (test_lsm_rgw,
 * run under scripts/with-rgw.sh against radosgw).
 *
 * Every function takes the URI of an EMPTY store, so the same checks run on any backend;
 * local side files (acknowledgement logs written by child processes) are plain paths.
 * Also small pieces several storage-engine tests share: a manifest descriptor filler for the
 * format tests, the plain key/value set of the background-work tests (test_lsm_bg,
 * test_lsm_review_jobs), the writer/compactor-process options and od_holdstore steps of the
 * cross-process tests (test_lsm_xproc_*). They use cmocka assertions and are meant to be called
 * from cmocka test functions.
 */
#ifndef OD_LSMTEST_H
#define OD_LSMTEST_H

#include <stddef.h>
#include <stdint.h>

#include "lsm/od_db.h"

/* Model-based randomized test: `steps` random batches (puts, deletes, TTL puts), gets, scans,
 * flushes, compactions, reopens, snapshots and read-only followers, each checked against an
 * in-memory reference. OD_TEST_SEED fixes the seed (printed on start). */
void od_lsmtest_model(const char *uri, int steps);

/* Crash test: `kills` times, start `child` (tests/tools/lsm_crash_child) writing to `uri`,
 * SIGKILL it after a random delay (up to max_delay_ms, or shortly after a new
 * acknowledgement every other time), reopen (every 10th as writer with takeover, else
 * read-only) and check every batch it acknowledged in `side` (a local file). */
void od_lsmtest_crash(const char *child, const char *uri, const char *side, int kills, int max_delay_ms);

/* Path of a tests/tools program next to a test binary: "<dir of argv0>/../tools/<name>". */
void od_lsmtest_tool_path(const char *argv0, const char *name, char *out, size_t n);

/* Fencing (one writer per store, across processes):
 *   takeover: a writer process A writes continuously (acks in `side`); a second writer is
 *     refused "lease held"; takeover=1 fences A (OD_FENCED), and every acknowledged batch of
 *     A and of the new writer survives;
 *   lease_expiry: a writer that dies holding a lease of lease_ms blocks others only that long
 *     (when our first open comes later than lease_ms after the fork on a slow machine, which
 *     proves nothing, the scenario repeats with 4x, then 16x the lease);
 *   compactor_fencing: a compaction of a fenced writer cannot commit;
 *   compactor_process: a compactor-only process next to a live writer; a newer compactor
 *     fences an older one. */
void od_lsmtest_takeover(const char *uri, const char *side);
void od_lsmtest_lease_expiry(const char *uri, uint32_t lease_ms);
void od_lsmtest_compactor_fencing(const char *uri);
void od_lsmtest_compactor_process(const char *uri);

/* Fill a collection descriptor for manifest format tests: id, key range [lo, hi] (malloc'd
 * copies, freed with the manifest), size, entries and seq range; everything else zero. */
struct od_sst_desc;
void od_lsmtest_fill_desc(struct od_sst_desc *d, const char *id, const char *lo, const char *hi, uint64_t size,
                          uint64_t entries, uint64_t min_seq, uint64_t max_seq);

/* The plain key/value set of the background-work tests: key i is "key-%07d", its value
 * od_lsmtest_val(i) is OD_LSMTEST_VLEN bytes (pseudo-random letters, the last one NUL).
 * write_range puts keys [from, to) in batches of per_batch (returns the first failed
 * od_db_write's code); check_range asserts each value, returning a failed get's code (and the
 * key index in *failed_at, when not NULL). */
#define OD_LSMTEST_VLEN 100
void od_lsmtest_key(int i, char *k, size_t n);
void od_lsmtest_val(int i, char *v, size_t n);
int od_lsmtest_write_range(od_db *db, int from, int to, int per_batch, od_err *err);
int od_lsmtest_check_range(od_db *db, int from, int to, int *failed_at, od_err *err);
/* The same, asserting: write_flush puts keys [from, to) (batches of per_batch) and flushes the
 * memtable to L0; expect_range fails the test with "<when>: key <i>: <message>" on the first
 * wrong value. */
void od_lsmtest_write_flush(od_db *db, int from, int to, int per_batch);
void od_lsmtest_expect_range(od_db *db, int from, int to, const char *when);

/* Options of the two sides of the cross-process GC tests (test_lsm_xproc_flush_gc,
 * test_lsm_xproc_review_pins), both with gc_min_age_ms = min_age_ms and GC only when asked
 * (gc_interval_ms 0): a writer with compactor=0 (flush_interval_ms 2) and a compactor process
 * (compactor_only=1, follow_interval_ms 100, compaction only when asked: l0 trigger 1000). */
void od_lsmtest_xproc_writer_opts(od_db_options *o, uint32_t min_age_ms);
void od_lsmtest_xproc_compactor_opts(od_db_options *o, uint32_t min_age_ms);

/* An armed tests/support/od_holdstore (blocked/released cleared), a bounded wait until it holds
 * a PUT (returns h->blocked), and the release of the held PUT. */
struct od_hold_store;
void od_lsmtest_hold_arm(struct od_hold_store *h);
int od_lsmtest_hold_wait(struct od_hold_store *h, int timeout_ms);
void od_lsmtest_hold_release(struct od_hold_store *h);

#endif
