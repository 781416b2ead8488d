/*
 * od_db.h — the storage engine's public API: an object-store-native LSM key-value store.
 *
 * A database lives under a URI (see od_objstore.h) and is made of:
 *   manifest/<20-digit version>.manifest   contiguous versions, created by put_if_absent
 *   wal/<20-digit id>.wal                  contiguous WAL objects, one per flush interval
 *   sst/<ulid-like id>.sst                 immutable sorted collections (L0 and sorted runs)
 * (exact byte formats in docs/formats.md).
 *
 * Keys and values are byte strings (keys ≤ 64 KiB, values ≤ 64 MiB). Writes are atomic
 * batches; each batch gets the next sequence number. Writes of all threads inside one flush
 * interval go to the store as ONE WAL object; a write returns once the batch is in the
 * memtable, and od_db_wait_durable (or wait=1 in od_db_write) blocks until the WAL object
 * holding it is in the object store. Entries may carry an expiry time (TTL): from then on
 * reads do not see them and compaction drops them.
 *
 * One writer per database: opening read-write bumps the writer epoch (fencing older writers)
 * and holds a lease that a second writer respects unless it asks to take over. Any number of
 * read-only handles in other processes follow the manifest and WAL (od_db_refresh). At most one
 * compactor process (compactor_only) runs beside the writer, holding a compactor lease; a
 * writer with compactor=1 compacts itself whenever no compactor process holds a live one.
 *
 * Thread safety: an od_db handle may be used from any number of threads. Iterators and
 * batches belong to one thread at a time. Snapshots may be shared.
 */
#ifndef OD_DB_H
#define OD_DB_H

#include <stddef.h>
#include <stdint.h>

#include "../objstore/od_objstore.h"
#include "../util/od_buf.h"
#include "../util/od_err.h"

typedef struct od_db od_db;
typedef struct od_batch od_batch;
typedef struct od_snapshot od_snapshot;
typedef struct od_iter od_iter;
typedef struct od_block_cache od_block_cache;

/* Called by compaction for every live (non-tombstone, unexpired) entry it rewrites; return 1
 * to drop the entry. Lets products apply retention / trims that live in their own metadata.
 * Runs on the compaction thread (or in the caller of od_db_compact); must be thread-safe and
 * must not call into the same od_db. */
typedef int (*od_compaction_filter_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                                       size_t vlen, int64_t now_ms);

typedef struct od_db_options {
    int read_only;                /* 1: follow the store, never write (no fencing) */
    int takeover;                 /* writer: fence a live writer even if its lease is fresh;
                                     compactor_only: fence a live compactor process likewise */
    int single_writer;            /* allow opening as writer on a store without conditional writes */
    uint32_t flush_interval_ms;   /* WAL flush interval (default 100) */
    uint32_t follow_interval_ms;  /* how often a compactor process, or a writer that does not
                                     compact itself, looks for manifest versions another process
                                     committed (default 1000; a writer stalled on L0 looks every
                                     100 ms). Each look costs a HEAD and a GET, so this sets the
                                     idle request rate */
    size_t wal_flush_bytes;       /* also flush when this many bytes are pending (default 4 MiB) */
    size_t max_unflushed_bytes;   /* writers block when more than this waits for the WAL (64 MiB) */
    size_t memtable_bytes;        /* flush the memtable to an L0 collection at this size (64 MiB) */
    size_t block_size;            /* target data-block size in collections (default 16 KiB) */
    int bloom_bits_per_key;       /* default 10 */
    od_block_cache *block_cache;  /* shared cache; NULL = a private one of block_cache_bytes */
    size_t block_cache_bytes;     /* default 64 MiB */
    const char *disk_cache_dir;   /* optional local disk cache of object ranges (remote stores) */
    size_t disk_cache_bytes;      /* default 1 GiB when disk_cache_dir is set */
    int compactor;                /* 1 (default): run compaction in a background thread of the writer,
                                     except while a compactor process holds a live compactor lease:
                                     then leave it to that process, and take compaction back when
                                     its lease is released (clean close) or expires (it died) */
    int l0_compaction_trigger;    /* compact when this many L0 collections exist (default 4) */
    uint32_t lease_ms;            /* writer (or compactor process) lease duration (default 10000) */
    uint32_t gc_min_age_ms;       /* GC deletes unreferenced objects only older than this (300000) */
    uint32_t gc_interval_ms;      /* background GC period in the writer, 0 = off (default 60000) */
    od_compaction_filter_fn compaction_filter;
    void *compaction_filter_ctx;
    int compactor_only;           /* 1: a separate compactor process: no writes, no WAL; holds the
                                     compactor lease (a second one is refused with OD_BUSY unless
                                     takeover=1), bumps compactor_epoch, follows the manifest,
                                     compacts and collects garbage. A writer with compactor=1 leaves
                                     compaction to it while its lease is live */
    size_t compaction_output_bytes; /* split compaction output into collections of about this
                                       size, at key boundaries; bounds the memory a compaction
                                       builds in (default 32 MiB, at least 64 KiB) */
    uint32_t flush_retry_ms;      /* a background L0 flush failing with store trouble (transient,
                                     timeout, I/O, conflict) is retried with backoff for this long
                                     before the handle fails (default 60000) */
    int l0_max_tables;            /* L0 bound (SlateDB's l0_max_ssts, RocksDB's stop-writes trigger):
                                     while L0 holds this many collections, memtables are not flushed
                                     but wait (immutable, readable) for compaction to reduce L0, and
                                     writers stall on those waiting memtables. Must be greater than
                                     l0_compaction_trigger (od_db_open fails with OD_BADREQ if not);
                                     0 (default) = 64, or 2 x l0_compaction_trigger if that is more */
    uint32_t write_stall_timeout_ms; /* a write (or od_db_flush) stalled on back-pressure longer than
                                     this fails with OD_BUSY ("writes stalled ...", naming the
                                     cause), without being applied; the handle stays usable.
                                     0 (default) = no limit in a writer that compacts itself
                                     (compactor=1), 300000 in one that leaves compaction to a
                                     compactor process (compactor=0, or fenced by one), so a writer
                                     whose compactor is not running fails clearly instead of
                                     hanging; UINT32_MAX = never */
} od_db_options;

void od_db_options_init(od_db_options *o);

int od_db_open(const char *uri, const od_db_options *opts, od_db **out, od_err *err);
/* Same, on an already-open store (the db does not take ownership of `store`). */
int od_db_open_store(od_store *store, const od_db_options *opts, od_db **out, od_err *err);
/* Flushes pending writes (waits for durability); a healthy writer also flushes its memtable to
 * L0 (unless L0 is at l0_max_tables) and moves the manifest's WAL replay point past its WAL
 * objects, so the next open replays nothing. Those uploads (up to memtable_bytes plus the
 * immutable memtables) make a close with unflushed data take as long as an L0 flush; their
 * failures lose nothing (the WAL holds it all) and are not returned, except that a fencing
 * found there is (OD_FENCED), as by any flush. Stops background threads, frees. Returns the
 * first error that made an acknowledged-pending write fail, if any. */
int od_db_close(od_db *db, od_err *err);

/* ---- write batches ---- */
od_batch *od_batch_new(void);
void od_batch_free(od_batch *b);
void od_batch_clear(od_batch *b);
size_t od_batch_count(const od_batch *b);
size_t od_batch_bytes(const od_batch *b);
int od_batch_put(od_batch *b, const void *key, size_t klen, const void *val, size_t vlen);
/* expire_at_ms: unix ms after which the entry is invisible; 0 = never. */
int od_batch_put_ttl(od_batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                     int64_t expire_at_ms);
int od_batch_delete(od_batch *b, const void *key, size_t klen);

/* Apply a batch atomically. *seq_out (may be NULL) receives its sequence number.
 * wait_durable=1 blocks until the batch is durable in the object store. OD_FENCED once a
 * newer writer took over; OD_BADREQ for a read-only handle or bad sizes; OD_BUSY (the batch not
 * applied, the handle usable) after stalling on back-pressure for write_stall_timeout_ms. */
int od_db_write(od_db *db, od_batch *b, int wait_durable, uint64_t *seq_out, od_err *err);
/* Block until every batch with sequence ≤ seq is durable (or fail with the reason). */
int od_db_wait_durable(od_db *db, uint64_t seq, od_err *err);
/* Flush the WAL now and wait; then, if memtable=1, flush the memtable to L0 too. While L0
 * holds l0_max_tables collections that flush waits for compaction to reduce it, for at most
 * write_stall_timeout_ms (then OD_BUSY: the data stays in memory and in the WAL). */
int od_db_flush(od_db *db, int memtable, od_err *err);
/* Run compaction now, synchronously, until no more work (also when compactor=0). */
int od_db_compact(od_db *db, od_err *err);
/* Run one garbage-collection pass now. */
int od_db_gc(od_db *db, od_err *err);

/* ---- reads ---- */
/* A snapshot pins one consistent state (in memory; see checkpoints for pins in the store). */
int od_db_snapshot(od_db *db, od_snapshot **out, od_err *err);
void od_snapshot_release(od_snapshot *s);
/* Point get. snap NULL = latest. OD_NOTFOUND when absent/deleted/expired. */
int od_db_get(od_db *db, const od_snapshot *snap, const void *key, size_t klen, od_buf *val, od_err *err);
/* Iterator over [lo, hi) (hi NULL = unbounded), positioned at the first key ≥ lo. */
int od_db_iter(od_db *db, const od_snapshot *snap, const void *lo, size_t lolen, const void *hi,
               size_t hilen, od_iter **out, od_err *err);
int od_iter_valid(const od_iter *it);
int od_iter_next(od_iter *it, od_err *err);
/* Reposition at the first key ≥ key (within the iterator's bounds). */
int od_iter_seek(od_iter *it, const void *key, size_t klen, od_err *err);
const uint8_t *od_iter_key(const od_iter *it, size_t *klen);
const uint8_t *od_iter_value(const od_iter *it, size_t *vlen);
void od_iter_free(od_iter *it);

/* Read-only handles: pick up new manifest versions and WAL objects. Writers: no-op. */
int od_db_refresh(od_db *db, od_err *err);

/* ---- checkpoints: manifest pins in the store for long-running readers ---- */
int od_db_checkpoint_create(od_db *db, uint32_t lifetime_ms, uint64_t *id_out, od_err *err);
int od_db_checkpoint_delete(od_db *db, uint64_t id, od_err *err);

/* ---- observability ---- */
typedef struct od_db_stats {
    uint64_t last_seq;            /* last assigned sequence */
    uint64_t durable_seq;         /* last sequence durable in the WAL */
    uint64_t writer_epoch;
    uint64_t manifest_version;
    uint64_t wal_flushes;         /* WAL objects written */
    uint64_t wal_bytes;
    uint64_t memtable_flushes;    /* L0 collections written */
    uint64_t compactions;
    uint64_t compaction_bytes_in, compaction_bytes_out;
    uint64_t user_bytes_written;  /* key+value bytes given to od_db_write */
    uint64_t block_cache_hits, block_cache_misses;
    uint64_t disk_cache_hits, disk_cache_misses;
    uint64_t gets, iters, sst_reads; /* sst_reads: data blocks read for point/range reads */
    uint64_t l0_count, sorted_runs, live_ssts, live_sst_bytes;
    uint64_t memtable_bytes;
    uint64_t gc_deleted;
    uint64_t write_stalls;        /* writes (and od_db_flush calls) that waited on back-pressure */
    uint64_t write_stall_ms;      /* the time they waited in total */
    uint64_t l0_stalls;           /* times memtable flushes stopped because L0 reached l0_max_tables */
    int l0_stalled;               /* 1 while they are stopped (waiting for compaction) */
    int compacting;               /* 1 while this handle compacts in the background: a writer with
                                     compactor=1 that no compactor process has taken over, or a
                                     compactor process that no newer one has fenced */
    uint64_t compactor_epoch;     /* the compactor epoch this handle compacts with (or last knew) */
    uint64_t compaction_reclaims; /* times this writer took compaction back from a compactor
                                     process whose lease was released or had expired */
    od_store_stats store;         /* the object store's request/byte counters */
} od_db_stats;

void od_db_get_stats(od_db *db, od_db_stats *out);
/* JSON description of the current manifest: epochs, WAL range, every collection with its
 * key range, size, entry count and level, checkpoints, the compaction job in progress
 * ("compaction_job", only while there is one), and the L0 bound with the stall state
 * ("l0_max_tables", "l0_stalled", "write_stalls"); NUL-terminated (len excludes the NUL). Caller frees
 * with od_buf_free. */
int od_db_inspect(od_db *db, od_buf *json, od_err *err);
/* The store the database lives on (for product-level objects and counters). */
od_store *od_db_store(od_db *db);

/* ---- the block cache (shared by every database in a process that passes it) ---- */
od_block_cache *od_block_cache_new(size_t capacity_bytes);
void od_block_cache_free(od_block_cache *c);

#endif
