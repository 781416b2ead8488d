/*
 * od_sst.h — immutable sorted collections ("SSTs"): builder and reader. Internal to core/lsm.
 *
 * An SST holds entries sorted by (user key ascending, seq descending): several versions of one
 * key may be present (compaction keeps the ones a live snapshot needs). Each entry has a kind
 * (PUT or DEL tombstone), a sequence number, an optional expiry (unix ms, 0 = none) and a
 * value (empty for DEL).
 *
 * Layout (byte-exact description in docs/formats.md):
 *   data blocks   (~block_size each, prefix-compressed keys with restart points, LZ4 per
 *                  block when it saves space, 1-byte compression tag + CRC32C trailer)
 *   bloom filter  (over user keys)
 *   index block   (last user key of each block → offset, size)
 *   properties    (entry count, min/max key, min/max seq, ...)
 *   footer        (fixed size: offsets/sizes of the above, format version, magic, CRC32C)
 *
 * The reader never loads the whole object: it fetches the footer, the index and the filter
 * through a range-read callback and then data blocks on demand, through the block cache.
 * Every block's CRC is verified on load; a mismatch is OD_CORRUPT naming the object and offset.
 */
#ifndef OD_SST_H
#define OD_SST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../util/od_buf.h"
#include "../util/od_err.h"

typedef struct od_block_cache od_block_cache;

enum { OD_KIND_PUT = 1, OD_KIND_DEL = 2 };

typedef struct od_entry {
    const uint8_t *key;
    size_t klen;
    uint64_t seq;
    uint8_t kind;        /* OD_KIND_PUT / OD_KIND_DEL */
    int64_t expire_ms;   /* 0 = never */
    const uint8_t *val;
    size_t vlen;
} od_entry;

/* Order of entries: user key bytes ascending (memcmp, shorter first), then seq descending. */
int od_entry_cmp(const uint8_t *ka, size_t kal, uint64_t seqa, const uint8_t *kb, size_t kbl, uint64_t seqb);

/* A key's first 8 bytes read big-endian, zero-padded: od_key_prefix(a) < od_key_prefix(b)
 * implies a < b, so comparing prefixes decides most key comparisons (equal prefixes need the
 * full comparison). In-memory only (memtable nodes, SST index search), never stored. */
static inline uint64_t od_key_prefix(const uint8_t *k, size_t n)
{
    uint64_t v = 0;
    if (n >= 8) {
        memcpy(&v, k, 8);
    } else if (n) {
        uint8_t b[8] = {0};
        memcpy(b, k, n);
        memcpy(&v, b, 8);
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* ---------------- builder ---------------- */
typedef struct od_sst_opts {
    size_t block_size;       /* default 16384 */
    int bloom_bits_per_key;  /* default 10; 0 = no filter */
    int compress;            /* 1 (default): LZ4 per block when it saves ≥ 12.5% */
    size_t expect_bytes;     /* pre-size the object buffer for this many bytes (0 = grow as
                                needed), so a builder cut at a known size never doubles past it */
} od_sst_opts;

typedef struct od_sst_props {
    uint64_t entries, tombstones;
    uint64_t min_seq, max_seq;
    uint64_t raw_key_bytes, raw_value_bytes;
    uint64_t data_blocks;
    uint64_t file_bytes;
    od_buf min_key, max_key;  /* owned; free with od_sst_props_free */
} od_sst_props;
void od_sst_props_free(od_sst_props *p);

typedef struct od_sst_builder od_sst_builder;

void od_sst_opts_init(od_sst_opts *o);
int od_sst_builder_new(const od_sst_opts *o, od_sst_builder **out, od_err *err);
/* Entries must arrive in od_entry_cmp order (checked: OD_BADREQ otherwise). */
int od_sst_builder_add(od_sst_builder *b, const od_entry *e, od_err *err);
/* Bytes the finished object would have so far (for splitting output by size). */
size_t od_sst_builder_size(const od_sst_builder *b);
uint64_t od_sst_builder_entries(const od_sst_builder *b);
/* Produce the whole object into *out (replaced; a malloc'd copy); props (may be NULL) filled
 * (caller frees). */
int od_sst_builder_finish(od_sst_builder *b, od_buf *out, od_sst_props *props, od_err *err);
/* Same without the copy: *data / *len are the builder's own bytes, valid until
 * od_sst_builder_free — which returns them to the OS (they are mapped, not malloc'd, once
 * large: see od_bigbuf.h). The engine's flushes and compactions use this one. */
int od_sst_builder_finish_ref(od_sst_builder *b, const uint8_t **data, size_t *len, od_sst_props *props,
                              od_err *err);
void od_sst_builder_free(od_sst_builder *b);

/* ---------------- reader ---------------- */
/* Reads [off, off+len) of the object into out (replacing its content). */
typedef int (*od_range_read_fn)(void *ctx, uint64_t off, uint64_t len, od_buf *out, od_err *err);

typedef struct od_sst od_sst;

/* Open a table of `size` bytes. `name` is used in error messages; `cache_id` must be unique
 * per object within the block cache (e.g. a hash of the object name); cache may be NULL.
 * `read`/`ctx` must stay valid until od_sst_close. Thread-safe after open. */
int od_sst_open(const char *name, uint64_t size, od_range_read_fn read, void *ctx, od_block_cache *cache,
                uint64_t cache_id, od_sst **out, od_err *err);
/* Open from bytes already in memory (e.g. just built); the sst copies nothing: `data` must
 * outlive it. */
int od_sst_open_mem(const char *name, const uint8_t *data, size_t size, od_block_cache *cache,
                    uint64_t cache_id, od_sst **out, od_err *err);
void od_sst_close(od_sst *t);
const od_sst_props *od_sst_get_props(const od_sst *t);
/* Data blocks this table fetched from its source (block-cache misses), for stats. */
uint64_t od_sst_block_reads(const od_sst *t);
/* Bloom check on the user key: 0 = definitely absent. */
int od_sst_may_contain(od_sst *t, const void *key, size_t klen);
/* Newest entry for `key` with seq ≤ max_seq. OD_NOTFOUND when there is none. The entry's
 * pointers stay valid until the next call with the same `hold` buffer (or its free). */
int od_sst_get(od_sst *t, const void *key, size_t klen, uint64_t max_seq, od_entry *out, od_buf *hold,
               od_err *err);

typedef struct od_sst_iter od_sst_iter;
/* Iterates every entry (all versions) in order. Starts unpositioned: call seek or first. */
int od_sst_iter_new(od_sst *t, od_sst_iter **out, od_err *err);
int od_sst_iter_first(od_sst_iter *it, od_err *err);
/* Position at the first entry with user key ≥ key (any seq). */
int od_sst_iter_seek(od_sst_iter *it, const void *key, size_t klen, od_err *err);
int od_sst_iter_next(od_sst_iter *it, od_err *err);
int od_sst_iter_valid(const od_sst_iter *it);
/* For long scans of remote tables (compaction): fetch about `bytes` of consecutive data blocks
 * per range read (e.g. 4 MiB) instead of one block per read; blocks read this way bypass the
 * block cache (cache hits are still used). 0 (default) = one block per read, cached. */
void od_sst_iter_set_readahead(od_sst_iter *it, size_t bytes);
/* Current entry; pointers valid until the iterator moves. */
const od_entry *od_sst_iter_entry(const od_sst_iter *it);
void od_sst_iter_free(od_sst_iter *it);

/* ---------------- block cache (implementation of the od_db.h type) ---------------- */
/* A cached, decoded (decompressed, CRC-checked) block, reference counted. */
typedef struct od_cblock {
    const uint8_t *data;
    size_t len;
} od_cblock;
/* Returns a referenced block or NULL. */
od_cblock *od_block_cache_lookup(od_block_cache *c, uint64_t id, uint64_t off);
/* Inserts a block (the cache takes ownership of `data`, malloc'd) and returns a referenced
 * handle to the cached block (which may be an existing one if another thread won). NULL on OOM
 * (data is then freed). */
od_cblock *od_block_cache_insert(od_block_cache *c, uint64_t id, uint64_t off, uint8_t *data, size_t len);
void od_block_cache_release(od_block_cache *c, od_cblock *b);
void od_block_cache_stats(od_block_cache *c, uint64_t *hits, uint64_t *misses, size_t *bytes);

#endif
