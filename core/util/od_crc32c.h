/*
 * od_crc32c.h — CRC-32C (Castagnoli), used on every block, footer, WAL and manifest object.
 * Uses the SSE4.2 crc32 instruction when the CPU has it, a slicing-by-8 table otherwise.
 * od_crc32c_extend(crc, p, n) continues a running CRC; start from 0.
 * od_crc32c_mask/unmask store CRCs of data that itself contains CRCs (as LevelDB does).
 */
#ifndef OD_CRC32C_H
#define OD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t od_crc32c_extend(uint32_t crc, const void *p, size_t n);
static inline uint32_t od_crc32c(const void *p, size_t n) { return od_crc32c_extend(0, p, n); }
static inline uint32_t od_crc32c_mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }
static inline uint32_t od_crc32c_unmask(uint32_t m)
{
    uint32_t r = m - 0xa282ead8u;
    return (r >> 17) | (r << 15);
}

#endif
