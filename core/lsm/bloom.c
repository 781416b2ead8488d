/*
 * bloom.c — cache-blocked bloom filter and od_hash64 (see bloom.h).
 *
 * Owns nothing: a filter is a byte string built into an od_buf and read in place.
 *
 * How it works. od_hash64 reads the key 8 bytes at a time and folds each word into the state
 * with a 64x64→128-bit multiply (high ^ low), then finishes with the splitmix64 finaliser, so
 * every input bit affects every output bit. For a filter of nblocks 512-bit blocks the block is
 * ((hash >> 32) * nblocks) >> 32 (a multiply-shift range reduction, no division) and the k
 * bit positions inside it are (a + i * delta) mod 512 with a = low 32 bits of the hash and
 * delta = rotl(a, 15) | 1 (odd, so the k positions are distinct for k ≤ 512).
 */
#include "bloom.h"

#include <string.h>

#include "../util/od_err.h"

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t fold(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t fmix(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

uint64_t od_hash64(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0x243f6a8885a308d3ull ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull);
    while (n >= 16) {
        h = fold(load64(p) ^ 0xa0761d6478bd642full, load64(p + 8) ^ h ^ 0xe7037ed1a0b428dbull);
        p += 16;
        n -= 16;
    }
    if (n >= 8) {
        h = fold(load64(p) ^ 0x8ebc6af09c88c6e3ull, h ^ 0x589965cc75374cc3ull);
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        for (size_t i = 0; i < n; i++) w |= (uint64_t)p[i] << (8 * i);
        h = fold(w ^ 0x1d8e4e27c47d124full, h ^ 0xa0761d6478bd642full);
    }
    return fmix(h);
}

static inline uint32_t rotl32(uint32_t v, int r) { return (v << r) | (v >> (32 - r)); }

int od_bloom_build(const uint64_t *hashes, size_t n, int bits_per_key, od_buf *out)
{
    if (bits_per_key < 1) bits_per_key = 1;
    if (bits_per_key > 64) bits_per_key = 64;
    int k = (int)(bits_per_key * 0.69);
    if (k < 1) k = 1;
    if (k > 30) k = 30;
    size_t bits = n * (size_t)bits_per_key;
    size_t nblocks = (bits + 511) / 512;
    if (nblocks == 0) nblocks = 1;
    size_t bytes = nblocks * OD_BLOOM_BLOCK_BYTES;
    if (od_buf_reserve(out, bytes + 2)) return OD_NOMEM;
    uint8_t *f = out->data + out->len;
    memset(f, 0, bytes);
    for (size_t i = 0; i < n; i++) {
        uint64_t h = hashes[i];
        size_t blk = (size_t)(((h >> 32) * (uint64_t)nblocks) >> 32);
        uint8_t *b = f + blk * OD_BLOOM_BLOCK_BYTES;
        uint32_t a = (uint32_t)h, delta = rotl32(a, 15) | 1;
        for (int j = 0; j < k; j++) {
            uint32_t bit = a & 511;
            b[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            a += delta;
        }
    }
    f[bytes] = (uint8_t)k;
    f[bytes + 1] = OD_BLOOM_VERSION;
    out->len += bytes + 2;
    return OD_OK;
}

int od_bloom_check(const uint8_t *f, size_t len)
{
    if (len < OD_BLOOM_BLOCK_BYTES + 2 || (len - 2) % OD_BLOOM_BLOCK_BYTES != 0) return OD_CORRUPT;
    if ((len - 2) / OD_BLOOM_BLOCK_BYTES > UINT32_MAX) return OD_CORRUPT;
    int k = f[len - 2];
    if (k < 1 || k > 30 || f[len - 1] != OD_BLOOM_VERSION) return OD_CORRUPT;
    return OD_OK;
}

int od_bloom_may_contain(const uint8_t *f, size_t len, uint64_t h)
{
    size_t nblocks = (len - 2) / OD_BLOOM_BLOCK_BYTES;
    int k = f[len - 2];
    size_t blk = (size_t)(((h >> 32) * (uint64_t)nblocks) >> 32);
    const uint8_t *b = f + blk * OD_BLOOM_BLOCK_BYTES;
    uint32_t a = (uint32_t)h, delta = rotl32(a, 15) | 1;
    for (int j = 0; j < k; j++) {
        uint32_t bit = a & 511;
        if (!(b[bit >> 3] & (1u << (bit & 7)))) return 0;
        a += delta;
    }
    return 1;
}
