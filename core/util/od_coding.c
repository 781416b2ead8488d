/*
 * od_coding.c — buffer appenders and the bounds-checked reader (see od_coding.h).
 */
#include "od_coding.h"
#include "od_err.h"

int od_buf_put_u16(od_buf *b, uint16_t v)
{
    uint8_t t[2];
    od_put_u16(t, v);
    return od_buf_append(b, t, 2);
}

int od_buf_put_u32(od_buf *b, uint32_t v)
{
    uint8_t t[4];
    od_put_u32(t, v);
    return od_buf_append(b, t, 4);
}

int od_buf_put_u64(od_buf *b, uint64_t v)
{
    uint8_t t[8];
    od_put_u64(t, v);
    return od_buf_append(b, t, 8);
}

int od_buf_put_varint(od_buf *b, uint64_t v)
{
    uint8_t t[10];
    return od_buf_append(b, t, od_varint_put(t, v));
}

int od_buf_put_lenbytes(od_buf *b, const void *p, size_t n)
{
    int rc = od_buf_put_varint(b, n);
    return rc ? rc : od_buf_append(b, p, n);
}

static const uint8_t *take(od_rd *r, size_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

uint8_t od_rd_u8(od_rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

uint16_t od_rd_u16(od_rd *r)
{
    const uint8_t *p = take(r, 2);
    return p ? od_get_u16(p) : 0;
}

uint32_t od_rd_u32(od_rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? od_get_u32(p) : 0;
}

uint64_t od_rd_u64(od_rd *r)
{
    const uint8_t *p = take(r, 8);
    return p ? od_get_u64(p) : 0;
}

uint64_t od_rd_varint(od_rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        const uint8_t *p = take(r, 1);
        if (!p) return 0;
        v |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p & 0x80)) {
            if (shift == 63 && *p > 1) break; /* overflow of the 10th byte */
            return v;
        }
    }
    r->ok = 0;
    return 0;
}

const uint8_t *od_rd_bytes(od_rd *r, size_t n)
{
    return take(r, n);
}

const uint8_t *od_rd_lenbytes(od_rd *r, size_t *len)
{
    uint64_t n = od_rd_varint(r);
    if (!r->ok || n > (uint64_t)(r->end - r->p)) {
        r->ok = 0;
        *len = 0;
        return NULL;
    }
    *len = (size_t)n;
    return take(r, (size_t)n);
}
