/*
 * es_int.h — internal header of core/eventstore: the byte encodings of the event store's
 * entries in the storage engine (es_format.c) and the bounded LRU of per-key tail state
 * (es_lru.c). Only eventstore.c and the unit tests include it.
 *
 * Engine keys (all in one od_db; byte-exact description in docs/formats.md):
 *   'S'                                     store header (format version)
 *   'm' key                                 per-key metadata (es_meta)
 *   'r' esc(key) seq:BE64                   one record (es_rec)
 *   't' esc(key) ts:BE64^2^63 seq:BE64      sparse time index, seq > 0 and seq % OD_ES_TIDX_STRIDE == 0
 *                                           (value: iflags:u8)
 *   'p' producer-id                         producer dedupe state
 *   'x' esc(key) from:BE64 to:BE64          trim intent: records [from, to) of key still need
 *                                           tombstones (value: ver:u8=1)
 *   'R'                                     store retention state (es_sret): the store default age
 *                                           the last writer used, and the floor it left
 * esc() makes the key prefix-free while keeping byte order: 0x00 → 00 FF, end → 00 01. So all
 * records of one key are contiguous, in sequence order, and no key's records interleave with
 * a longer key that extends it.
 */
#ifndef OD_ES_INT_H
#define OD_ES_INT_H

#include <stddef.h>
#include <stdint.h>

#include "od_eventstore.h"

#define OD_ES_FORMAT 1
#define OD_ES_TIDX_STRIDE 16

enum { ES_NS_HEADER = 'S', ES_NS_META = 'm', ES_NS_REC = 'r', ES_NS_TIDX = 't', ES_NS_PROD = 'p',
       ES_NS_INTENT = 'x', ES_NS_SRET = 'R' };

/* ---- engine keys ---- */
int es_key_meta(od_buf *b, const void *key, size_t klen);
/* 'r' esc(key): the prefix of all records of key; es_key_rec appends seq too. */
int es_key_rec_prefix(od_buf *b, const void *key, size_t klen);
int es_key_rec(od_buf *b, const void *key, size_t klen, uint64_t seq);
int es_key_tidx_prefix(od_buf *b, const void *key, size_t klen);
int es_key_tidx(od_buf *b, const void *key, size_t klen, int64_t ts, uint64_t seq);
int es_key_producer(od_buf *b, const char *producer_id);
/* 'x' esc(key) from:BE64 to:BE64: a trim whose record tombstones are not all written yet. */
int es_key_intent(od_buf *b, const void *key, size_t klen, uint64_t from, uint64_t to);
int es_intent_key_decode(const uint8_t *p, size_t n, od_buf *key_out, uint64_t *from, uint64_t *to);
/* Append esc(key) to b. */
int es_esc(od_buf *b, const void *key, size_t klen);
/* Decode esc(key) at p[0..n): appends the key to out (if not NULL), sets *used to the
 * bytes consumed including the terminator. OD_CORRUPT when malformed. */
int es_unesc(const uint8_t *p, size_t n, od_buf *out, size_t *used);
/* Split a record key ('r' esc(key) seq) or a time-index key. */
int es_rec_key_decode(const uint8_t *p, size_t n, od_buf *key_out, uint64_t *seq);
int es_tidx_key_decode(const uint8_t *p, size_t n, od_buf *key_out, int64_t *ts, uint64_t *seq);
/* Smallest byte string greater than every string with this prefix (for [lo, hi) bounds)
 * into b; *has = 0 when there is none (prefix empty or all 0xFF: unbounded). */
int es_prefix_successor(od_buf *b, const void *prefix, size_t plen, int *has);

/* ---- record values ---- */
/* ver:u8=1 iflags:u8 flags:u8 ts:zigzag-varint nheaders:varint (name:lenbytes value:lenbytes)*
 * value:rest. iflags are the engine's own (ES_IF_*), flags the caller's. */
enum { ES_IF_AGE_OVERRIDE = 1 }; /* the key had a per-key age override at append: the
                                    compaction filter leaves the record to its TTL */
typedef struct es_rec {
    int64_t ts;
    uint8_t iflags;
    uint8_t flags;
    size_t nheaders;
    const uint8_t *headers;  /* encoded pairs */
    size_t headers_len;
    const uint8_t *value;
    size_t vlen;
} es_rec;

int es_rec_encode(od_buf *b, int64_t ts, uint8_t iflags, uint8_t flags, const od_ev_header *h, size_t nh,
                  const void *value, size_t vlen);
int es_rec_decode(const uint8_t *p, size_t n, es_rec *out);
/* Size of the headers' encoding (names + values + length prefixes). */
size_t es_headers_bytes(const od_ev_header *h, size_t nh);

/* ---- per-key metadata ---- */
/* ver:u8=1 first:varint next:varint bytes:varint last_ts:zz created:zz ret_age:varint ret_count:varint */
typedef struct es_meta {
    uint64_t first_seq, next_seq, bytes;
    int64_t last_ts, created_ms;
    int64_t ret_age_ms;
    uint64_t ret_count;
} es_meta;

int es_meta_encode(od_buf *b, const es_meta *m);
int es_meta_decode(const uint8_t *p, size_t n, es_meta *m);

/* ---- producer state ---- */
/* ver:u8=1 producer_seq:varint updated_ms:zz */
int es_prod_encode(od_buf *b, uint64_t pseq, int64_t updated_ms);
int es_prod_decode(const uint8_t *p, size_t n, uint64_t *pseq, int64_t *updated_ms);

/* ---- store retention state ('R') ---- */
/* ver:u8=1 age_ms:varint floor_ts:zz. age_ms: the store default age of the last writer open;
 * floor_ts: records appended under the store default (no ES_IF_AGE_OVERRIDE) with ts < floor
 * stay hidden (what an earlier, shorter default hid), 0 = none. */
int es_sret_encode(od_buf *b, int64_t age_ms, int64_t floor_ts);
int es_sret_decode(const uint8_t *p, size_t n, int64_t *age_ms, int64_t *floor_ts);

/* ---- retention rule (pure) ---- */
/* The first visible sequence of a key under count retention: max(first, next - count). */
uint64_t es_visible_first(const es_meta *m, uint64_t store_count);
/* Effective age / count (per-key override, else store default; 0 = none). */
int64_t es_eff_age(const es_meta *m, int64_t store_age);
uint64_t es_eff_count(const es_meta *m, uint64_t store_count);
/* 1 if a record with timestamp ts is hidden by age retention at now. */
int es_age_hidden(int64_t ts, int64_t age_ms, int64_t now_ms);

/* ---- bounded LRU of tail state: key → es_meta (+ exists flag) ---- */
typedef struct es_lru_node es_lru_node;
typedef struct es_lru_slot {
    uint32_t tag;   /* low 32 bits of the key's hash */
    uint32_t idx;   /* node index + 1; 0 = empty */
} es_lru_slot;
typedef struct es_lru {
    es_lru_slot *slots;        /* open addressing, ≤ half full */
    size_t nslots;             /* power of two */
    es_lru_node *nodes;        /* entries, grown up to cap; see es_lru.c */
    size_t nalloc, nused;      /* nodes allocated / handed out */
    uint32_t head, tail;       /* recency list, head = most recently used (UINT32_MAX: none) */
    uint32_t free_head;        /* removed nodes for reuse */
    size_t count, cap;
    uint64_t hits, misses;
} es_lru;

int es_lru_init(es_lru *l, size_t cap, od_err *err);
void es_lru_free(es_lru *l);
/* Returns 1 and fills m/exists on a hit (and makes it most recent); 0 on a miss. */
int es_lru_get(es_lru *l, const void *key, size_t klen, es_meta *m, int *exists);
/* Insert or replace; evicts the least recently used entry beyond cap. */
int es_lru_put(es_lru *l, const void *key, size_t klen, const es_meta *m, int exists, od_err *err);
void es_lru_remove(es_lru *l, const void *key, size_t klen);
/* The same with the key's es_hash computed by the caller; prefetch its slot ahead of a get. */
uint64_t es_hash(const void *p, size_t n);
int es_lru_get_h(es_lru *l, const void *key, size_t klen, uint64_t h, es_meta *m, int *exists);
int es_lru_put_h(es_lru *l, const void *key, size_t klen, uint64_t h, const es_meta *m, int exists, od_err *err);
void es_lru_prefetch(const es_lru *l, uint64_t h);

int64_t es_now_ms(void);

#endif
