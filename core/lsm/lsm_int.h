/*
 * lsm_int.h — the storage engine's internal state, shared by db.c (open/close, write and
 * read paths), iter.c (merging iterator), compaction.c (L0 flush, compaction) and gc.c.
 *
 * What hangs off an od_db handle:
 *   - the write side (wmu): last assigned seq, the mutable memtable, the pending WAL object
 *     (batches appended as they are written), the next WAL id;
 *   - the read side (mu): the current od_version — an immutable, reference-counted view of
 *     {mutable memtable, immutable memtables, L0 tables, sorted runs} that readers pin with
 *     one short critical section and then read without locks;
 *   - the latest manifest this handle knows (man_mu serialises commits of this process);
 *   - background threads: the WAL flusher (also renews the writer lease), the flush worker
 *     (memtable flushes to L0, retried with backoff on store trouble) and the maintenance
 *     worker (compaction, GC; in a writer left by a compactor process also the watch on its
 *     lease), so that a long compaction never holds up L0 flushes; a compactor process has the
 *     maintenance worker and a lease thread renewing the compactor lease.
 * Lock order: fmu/cmu → man_mu → wmu → mu; tmu (the open-table registry, flush pins) is a leaf.
 */
#ifndef OD_LSM_INT_H
#define OD_LSM_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "disk_cache.h"
#include "manifest.h"
#include "memtable.h"
#include "od_db.h"
#include "od_sst.h"
#include "wal.h"

/* An L0 flush output between the start of its PUT and the end of its manifest commit: the
 * flush links it into db->pins (under tmu; the node lives on the flusher's stack) and GC of
 * this handle keeps the object; GC in other processes sees the pin object the flush also
 * writes (pin/<epoch>-<id>.pin, compaction.c, gc.c). */
typedef struct od_sst_pin {
    char id[OD_SST_ID_MAX];
    struct od_sst_pin *next;
} od_sst_pin;

/* An open SST, shared by every version that lists it. */
typedef struct od_table {
    _Atomic int refs;
    od_sst_desc desc;
    char key[64];
    od_store *store;
    od_sst *sst;
    struct od_db *db;
    struct od_table *reg_prev, *reg_next; /* db->tables, under db->tmu */
} od_table;

typedef struct od_vrun {
    size_t n;
    od_table **t; /* ascending key ranges */
} od_vrun;

/* The table part of a read view, built from one manifest version. */
typedef struct od_tset {
    _Atomic int refs;
    size_t nl0;
    od_table **l0; /* newest first */
    size_t nruns;
    od_vrun *runs; /* newest first */
    uint64_t manifest_version;
} od_tset;

/* An immutable read view. */
typedef struct od_version {
    _Atomic int refs;
    od_memtable *mem;
    size_t nimm;
    od_memtable **imm;         /* newest first */
    uint64_t *imm_replay_from; /* per imm: first WAL id that may hold data newer than it */
    od_tset *ts;
} od_version;

struct od_snapshot {
    od_db *db;
    od_version *v;
    uint64_t seq;
    struct od_snapshot *prev, *next;
};

struct od_db {
    od_store *store;
    int own_store;
    od_db_options o;
    int read_only;
    uint64_t writer_id; /* random per handle */
    uint64_t epoch;     /* writer epoch we hold */
    _Atomic uint64_t compactor_epoch; /* the one we compact with (a deferring writer: the last known) */
    od_block_cache *cache;
    int own_cache;
    od_disk_cache *dcache; /* NULL unless disk_cache_dir is set */

    /* write side */
    pthread_mutex_t wmu;
    pthread_cond_t cv_flush; /* wakes the WAL flusher (with wmu) */
    pthread_cond_t cv_space; /* back-pressure waiters (with wmu) */
    uint64_t last_seq;
    od_buf pend; /* pending WAL object (header space + records) */
    uint64_t pend_first, pend_last;
    uint32_t pend_n;
    int64_t pend_since_ms;
    size_t unflushed; /* bytes pending + in flight */
    uint64_t wal_next_id;
    int flush_req;
    od_memtable *mem; /* the mutable memtable (referenced by cur; replaced only under wmu) */

    /* read side */
    pthread_mutex_t mu;
    pthread_cond_t cv_durable; /* durability waiters (with mu) */
    pthread_cond_t cv_bg;      /* wakes the worker (with mu) */
    od_version *cur;
    _Atomic size_t nimm; /* cur->nimm, readable without mu */
    _Atomic uint64_t visible_seq;
    uint64_t durable_seq;
    int l0_stalled; /* flushes stopped: L0 is at l0_max_tables (set by the flush worker) */
    int bg_code; /* sticky failure of the WAL or the worker */
    od_err bg_err;
    int closing;
    od_snapshot *snaps;

    /* manifest */
    pthread_mutex_t man_mu;
    od_manifest man;

    /* every open table (any version, snapshot, iterator or compaction may hold it): GC keeps
     * their objects. tmu is a leaf lock (taken last, nothing taken under it). */
    pthread_mutex_t tmu;
    od_table *tables;
    od_sst_pin *pins; /* (tmu) L0 flush outputs uploaded or being uploaded, not yet committed */
    char **pin_left;  /* (tmu) keys of pin objects whose DELETE failed: retried after the next
                         flush and at close (compaction.c, od_pin_retry) */
    size_t npin_left;

    pthread_mutex_t fmu; /* serialises memtable flushes */
    pthread_mutex_t cmu; /* serialises compactions */

    /* lease */
    char lease_etag[OD_ETAG_MAX];
    int64_t lease_renewed_ms;
    /* (WAL thread) start time of the last request that proved no newer writer had fenced us
     * (a lease renewal on our ETag, or a manifest read): a WAL PUT that ends long after it
     * may have re-created a fence that GC deleted, so it is verified before it is acked */
    int64_t fence_checked_ms;

    /* compactor lease ("compactor-lease"): held by a compactor process (renewed by its lease
     * thread), read by writers with compactor=1 to know whether to leave compaction to it */
    char clease_etag[OD_ETAG_MAX];
    int64_t clease_renewed_ms;

    /* read-only follower */
    uint64_t ro_wal_next; /* next WAL id to read */

    pthread_t wal_thread, bg_thread, cmp_thread, lease_thread;
    int wal_thread_on, bg_thread_on, cmp_thread_on, lease_thread_on;
    _Atomic int compactor_off; /* a compactor process fenced our in-process compactor, or held a
                                  live compactor lease when we opened: we leave compaction to it
                                  until its lease is released or expires (then we take it back) */
    _Atomic int cjob_pending;  /* the manifest records a compaction job this handle should resume */
    int wal_exited; /* (mu) the WAL thread has stopped: nothing more becomes durable */
    int64_t last_gc_ms;

    /* counters (mu, or atomics) */
    _Atomic uint64_t st_wal_flushes, st_wal_bytes, st_mem_flushes, st_compactions, st_cbytes_in, st_cbytes_out,
        st_user_bytes, st_gets, st_iters, st_sst_reads, st_gc_deleted, st_write_stalls, st_write_stall_ms, st_l0_stalls,
        st_reclaims;
};

/* db.c */
od_version *od_version_get(od_db *db); /* referenced current version */
void od_version_unref(od_version *v);
void od_tset_unref(od_tset *t);
/* Build the table set of `man` (reusing open tables of the current one) and install it in
 * a new current version; `drop_imm` (may be NULL) is removed from the immutable memtables.
 * Caller holds man_mu. */
int od_db_apply_manifest(od_db *db, const od_manifest *man, od_memtable *drop_imm, od_err *err);
void od_db_set_bg_error(od_db *db, int code, const od_err *e);
int od_db_check_bg(od_db *db, od_err *err);
uint64_t od_db_min_snapshot_seq(od_db *db);
int od_entry_visible(const od_entry *e, int64_t now_ms); /* PUT and not expired */
int od_fenced_error(od_db *db, od_err *err, const char *what); /* re-reads the manifest, explains */
/* Test only (fault injection, tests/unit/test_lsm_oom.c): the nth memtable entry inserted by
 * od_db_write from now on fails with OD_NOMEM (see od_mt_test_fail_after; applies to the
 * current mutable memtable). */
void od_db_test_fail_memtable_insert(od_db *db, uint64_t nth);

/* compaction.c */
/* Flush immutable memtables, oldest first, until none is left or L0 holds l0_max_tables
 * collections (then OD_OK with memtables left: they wait for compaction). */
int od_flush_imm(od_db *db, od_err *err);
/* Delete again the pin objects whose DELETE failed (best effort; those failing again stay
 * listed). Safe whenever called: their flushes are over. */
void od_pin_retry(od_db *db);
int od_compact_run(od_db *db, int force, int *did, od_err *err); /* one compaction if there is work (*did = 1) */
/* Finish b and PUT it as sst/<id>.sst (id NULL: a new unique id); *desc describes it. */
int od_table_build_and_put(od_db *db, od_sst_builder *b, od_sst_desc *desc, const char *id, od_err *err);

/* gc.c */
int od_gc_run(od_db *db, od_err *err);

/* iter.c: merging over all versions of the sources of a version (no visibility filter). */
typedef struct od_merge od_merge;
int od_merge_new(od_version *v, int include_mem, od_merge **out, od_err *err);
/* Restrict to a subset (for compaction): l0 tables and runs given explicitly. */
int od_merge_new_tables(od_table **l0, size_t nl0, od_vrun *runs, size_t nruns, od_merge **out, od_err *err);
int od_merge_first(od_merge *m, od_err *err);
int od_merge_seek(od_merge *m, const uint8_t *key, size_t klen, od_err *err);
int od_merge_next(od_merge *m, od_err *err);
int od_merge_valid(const od_merge *m);
const od_entry *od_merge_entry(const od_merge *m);
void od_merge_free(od_merge *m);

#endif
