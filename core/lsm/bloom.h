/*
 * bloom.h — the bloom filter of an SST and the 64-bit key hash it uses. Internal to core/lsm.
 *
 * A cache-blocked bloom filter: the bit array is cut into 512-bit (64-byte, one cache line)
 * blocks; a key picks one block from the high half of its 64-bit hash and sets / tests k bits
 * inside it by double hashing on the low half. A lookup therefore touches exactly one cache
 * line, at the price of a slightly higher false-positive rate than a classic filter
 * (about 1% instead of 0.8% at 10 bits per key).
 *
 * Filter bytes (see docs/formats.md):  nblocks * 64 bytes of bits, then u8 k,
 * then u8 filter version (1).  The length alone determines nblocks.
 */
#ifndef OD_LSM_BLOOM_H
#define OD_LSM_BLOOM_H

#include <stddef.h>
#include <stdint.h>

#include "../util/od_buf.h"

enum { OD_BLOOM_BLOCK_BYTES = 64, OD_BLOOM_VERSION = 1 };

/* A fast 64-bit hash of a byte string with good avalanche (multiply-fold + final mix). Stable:
 * its values are part of the on-store filter format. */
uint64_t od_hash64(const void *p, size_t n);

/* Append a filter for `n` key hashes at `bits_per_key` (1..64) to out. OD_OK / OD_NOMEM. */
int od_bloom_build(const uint64_t *hashes, size_t n, int bits_per_key, od_buf *out);
/* Structural check of filter bytes: OD_OK or OD_CORRUPT (no message; the caller names it). */
int od_bloom_check(const uint8_t *f, size_t len);
/* 0 = the key is definitely absent. `f` must have passed od_bloom_check. */
int od_bloom_may_contain(const uint8_t *f, size_t len, uint64_t hash);

#endif
