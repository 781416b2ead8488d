/*
 * memtable.h — the in-memory write buffer of the LSM: an arena-allocated skiplist.
 * Internal to core/lsm.
 *
 * Entries are ordered by (user key ascending, seq descending), the same order as SSTs.
 * All operations of one batch share its sequence number; when the same key appears twice
 * with the same seq, the later insert sorts BEFORE the earlier one, so a lookup finds the
 * last write of the batch first (flush and iterators keep only the first of equal pairs).
 *
 * Concurrency: one writer at a time (the caller serialises od_mt_add), any number of
 * concurrent readers without locks: a node is fully written before it is published with a
 * release store into its predecessors' next pointers; readers load with acquire. Nodes are
 * never removed; the whole arena is freed when the last reference is dropped.
 */
#ifndef OD_MEMTABLE_H
#define OD_MEMTABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "od_sst.h"

typedef struct od_memtable od_memtable;

od_memtable *od_mt_new(void); /* refcount 1; NULL on OOM */
void od_mt_ref(od_memtable *m);
void od_mt_unref(od_memtable *m);

/* Single writer. OD_OK / OD_NOMEM. */
int od_mt_add(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq, uint8_t kind, int64_t expire_ms,
              const uint8_t *val, size_t vlen);

/* One op of a batch for od_mt_add_batch (pointers are read during the call only). */
typedef struct od_mt_op {
    const uint8_t *key;
    const uint8_t *val;
    uint32_t klen, vlen;
    uint8_t kind;
    int64_t expire_ms;
} od_mt_op;

/* Single writer. Inserts ops[0..n) all with sequence number `seq`; the result is the same as
 * od_mt_add of each op in array order. `ops` is not modified. OD_OK / OD_NOMEM (on NOMEM a
 * prefix of the batch, in key order, may have been inserted). */
int od_mt_add_batch(od_memtable *m, od_mt_op *ops, size_t n, uint64_t seq);

/* Single writer: scratch room for n ops (owned by the memtable, valid until the next call or
 * the memtable's end), so a caller can hand a whole batch to od_mt_add_batch at once; NULL on
 * OOM (the caller then uses smaller slices of its own). */
od_mt_op *od_mt_scratch_ops(od_memtable *m, size_t n);

/* Test only (fault injection): the n-th entry inserted from now on (counting every entry of
 * od_mt_add and od_mt_add_batch) fails with OD_NOMEM as if the arena were exhausted; the
 * entries before it are inserted. 0 turns it off. Single writer. */
void od_mt_test_fail_after(od_memtable *m, uint64_t n);
size_t od_mt_bytes(const od_memtable *m);   /* arena bytes in use */
uint64_t od_mt_count(const od_memtable *m); /* entries */
uint64_t od_mt_max_seq(const od_memtable *m);
uint64_t od_mt_min_seq(const od_memtable *m);

/* Newest entry of `key` with seq ≤ max_seq: 1 and *out filled (pointers into the arena,
 * valid while the memtable is referenced), or 0 when there is none. */
int od_mt_get(od_memtable *m, const uint8_t *key, size_t klen, uint64_t max_seq, od_entry *out);

/* Iterator over every entry (all versions), in order. Valid while the memtable is referenced. */
typedef struct od_mt_iter {
    od_memtable *m;
    const void *node;
} od_mt_iter;

void od_mt_iter_init(od_mt_iter *it, od_memtable *m);
void od_mt_iter_first(od_mt_iter *it);
void od_mt_iter_seek(od_mt_iter *it, const uint8_t *key, size_t klen); /* first entry with key ≥ key */
int od_mt_iter_valid(const od_mt_iter *it);
void od_mt_iter_next(od_mt_iter *it);
void od_mt_iter_entry(const od_mt_iter *it, od_entry *out);

/* Key order used everywhere in the engine (memcmp, shorter first on a common prefix). */
static inline int od_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

#endif
