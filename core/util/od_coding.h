/*
 * od_coding.h — fixed-width little-endian and LEB128 varint encoding, plus a bounds-checked
 * reader (od_rd) used by every decoder so that truncated or corrupt input is an error,
 * never an out-of-bounds read.
 */
#ifndef OD_CODING_H
#define OD_CODING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "od_buf.h"

static inline void od_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void od_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void od_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t od_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t od_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t od_get_u64(const uint8_t *p)
{
    return (uint64_t)od_get_u32(p) | ((uint64_t)od_get_u32(p + 4) << 32);
}

/* Varint: LEB128, at most 10 bytes for u64. Returns bytes written. */
static inline size_t od_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}
static inline size_t od_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}
/* ZigZag for signed values. */
static inline uint64_t od_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t od_unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* Buffer appenders (return OD_OK / OD_NOMEM). */
int od_buf_put_u16(od_buf *b, uint16_t v);
int od_buf_put_u32(od_buf *b, uint32_t v);
int od_buf_put_u64(od_buf *b, uint64_t v);
int od_buf_put_varint(od_buf *b, uint64_t v);
/* varint length followed by the bytes */
int od_buf_put_lenbytes(od_buf *b, const void *p, size_t n);

/* Bounds-checked reader. On any overrun `ok` becomes 0 and stays 0; reads then return 0/NULL. */
typedef struct od_rd {
    const uint8_t *p;
    const uint8_t *end;
    int ok;
} od_rd;

static inline od_rd od_rd_make(const void *p, size_t n)
{
    od_rd r = {(const uint8_t *)p, (const uint8_t *)p + n, 1};
    return r;
}
static inline size_t od_rd_left(const od_rd *r) { return r->ok ? (size_t)(r->end - r->p) : 0; }
uint8_t od_rd_u8(od_rd *r);
uint16_t od_rd_u16(od_rd *r);
uint32_t od_rd_u32(od_rd *r);
uint64_t od_rd_u64(od_rd *r);
uint64_t od_rd_varint(od_rd *r);
/* Returns pointer to n bytes inside the input (no copy), or NULL on overrun. */
const uint8_t *od_rd_bytes(od_rd *r, size_t n);
/* varint length + bytes; *len receives the length. */
const uint8_t *od_rd_lenbytes(od_rd *r, size_t *len);

#endif
