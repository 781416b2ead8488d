/*
 * tsdb_int.h — internal header of core/tsdb (not for other modules): the chunk codec
 * (chunk.c), the key layout and postings coding (index.c), and sample vectors.
 *
 * Files of the subsystem, one layer each:
 *   labels.c   label sets, validation, canonical encoding, fingerprint
 *   matcher.c  matchers (PCRE2) and the selector parser
 *   chunk.c    sample chunks (delta-of-delta/grid times, XOR or decimal values), CRC32C
 *   index.c    key layout, postings lists (delta-varint), series dictionary helpers
 *   tsdb.c     the engine: open, ingest, select, label queries, stats, retention, compaction
 */
#ifndef OD_TSDB_INT_H
#define OD_TSDB_INT_H

#include <stddef.h>
#include <stdint.h>

#include "od_tsdb.h"

/* ---- sample vectors ---- */
typedef struct od_samplevec {
    od_sample *v;
    size_t n, cap;
} od_samplevec;

int od_samplevec_push(od_samplevec *sv, od_sample s);
void od_samplevec_free(od_samplevec *sv);
/* Stable sort by time, then keep the LAST sample of each run of equal timestamps. */
int od_samples_sort_dedup(od_sample *s, size_t *n);

/* ---- chunk codec (chunk.c) ----
 * The first byte of a chunk selects its encoding; the encoder writes only encoding 3, the
 * decoder reads all three (chunks written by older versions stay readable). */
#define OD_CHUNK_XOR 1 /* old: Gorilla XOR, timestamps interleaved */
#define OD_CHUNK_DEC 2 /* old: decimals i/10^k as integer codes, timestamps interleaved */
#define OD_CHUNK_COL 3 /* timestamps (delta-of-delta or grid) then values (XOR or decimal) */
/* Encoding 3's time modes and value codecs (docs/formats.md), for od_chunk_encode_as. */
#define OD_CHUNK_T_DOD 0  /* delta-of-delta bit codes */
#define OD_CHUNK_T_GRID 1 /* one common delta plus a list of exceptions */
#define OD_CHUNK_V_XOR 0  /* Gorilla XOR of the bit patterns */
#define OD_CHUNK_V_DTAB 1 /* decimal integers, bucket code tables or one fixed width */
#define OD_CHUNK_V_DBLK 2 /* decimal integers, zigzag codes with one width per block */
#define OD_CHUNK_V_DFOR 3 /* decimal integers, frame of reference (base + width) per block */
/* Largest sample count a chunk may declare (encoding 3 can spend 0 bits on a sample, so the
 * count is not bounded by the chunk's length). */
#define OD_CHUNK_MAX_SAMPLES ((uint64_t)1 << 32)
/* Append the chunk of s[0..n) (n >= 1, any timestamp order is encodable; the engine always
 * passes strictly increasing times), choosing the smallest coding. */
int od_chunk_encode(const od_sample *s, size_t n, od_buf *out);
/* The same with a forced time mode / value codec (-1 = choose): for tests. OD_BADREQ when a
 * decimal codec cannot represent the values exactly. */
int od_chunk_encode_as(const od_sample *s, size_t n, int tmode, int vcodec, od_buf *out);
/* Verify the CRC and decode, appending to out. OD_CORRUPT on any damage. */
int od_chunk_decode(const uint8_t *p, size_t len, od_samplevec *out, od_err *err);
/* Sample count and time range from a chunk without decoding the values (CRC checked). */
int od_chunk_info(const uint8_t *p, size_t len, size_t *n, od_err *err);

/* ---- key layout (index.c) ----
 * Every key starts with a one-byte kind; integers are big-endian so keys sort numerically.
 *   'M' "meta"                                   → meta record (format version, bucket_ms, counters)
 *   'H' fp(8) sid(8)                             → canonical labels   (series dictionary)
 *   'S' sid(8)                                   → canonical labels   (forward index)
 *   'P' bucket(8) u16 nlen name u32 vlen value frag(8) → postings (delta-varint sids)
 *   'A' bucket(8) frag(8)                        → postings of every series in the bucket
 *   'C' bucket(8) sid(8) stamp(8)                → chunk (stamp 0 = compacted long chunk)
 *   'D' bucket(8)                                → u64le fragments written since the bucket's
 *                                                  last compaction (background compaction's
 *                                                  work list, found again after a restart)
 * bucket = floor(t / bucket_ms) as a biased (sign-flipped) 64-bit value.
 */
enum { OD_K_META = 'M', OD_K_HASH = 'H', OD_K_SERIES = 'S', OD_K_POST = 'P', OD_K_ALL = 'A', OD_K_CHUNK = 'C',
       OD_K_DIRTY = 'D' };

static inline void od_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static inline uint64_t od_rbe64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t od_bucket_key(int64_t b) { return (uint64_t)b ^ 0x8000000000000000ULL; }
static inline int64_t od_bucket_unkey(uint64_t k) { return (int64_t)(k ^ 0x8000000000000000ULL); }

/* Build keys into out (replaces content). */
int od_key_postings_prefix(od_buf *out, int64_t bucket, const char *name, const char *value);
int od_key_postings_name_prefix(od_buf *out, int64_t bucket, const char *name);
/* Parse a postings key: name and value (pointers into the key), frag. */
int od_key_postings_parse(const uint8_t *k, size_t kl, int64_t *bucket, const uint8_t **name, size_t *nl,
                          const uint8_t **value, size_t *vl);

/* ---- postings lists: sorted unique sids, varint count + delta varints ---- */
typedef struct od_sidvec {
    uint64_t *v;
    size_t n, cap;
} od_sidvec;
int od_sidvec_push(od_sidvec *s, uint64_t sid);
void od_sidvec_free(od_sidvec *s);
/* Sort and dedup in place. */
void od_sidvec_normalize(od_sidvec *s);
/* out = a ∩ b (both normalized). */
int od_sidvec_intersect(const od_sidvec *a, const od_sidvec *b, od_sidvec *out);
int od_postings_encode(const uint64_t *sids, size_t n, od_buf *out); /* sids sorted unique */
/* Decode, appending to out (not normalized across calls). */
int od_postings_decode(const uint8_t *p, size_t len, od_sidvec *out, od_err *err);

#endif
