/*
 * wal.c — write batches (the od_batch API of od_db.h) and the WAL object format (wal.h).
 *
 * The batch body is the WAL record body: od_batch_put appends an op once, and the write
 * path copies those bytes into the pending WAL object without re-encoding. The decoder
 * checks the CRC first and then walks every record and op, so a replay never acts on a
 * half-valid object: any inconsistency is OD_CORRUPT naming the object.
 */
#include "wal.h"

#include <stdlib.h>
#include <string.h>

#include "od_crc32c.h"
#include "od_db.h"

#define WAL_MAGIC "ODWL"
#define WAL_VERSION 1
#define MAX_KEY (64u * 1024)
#define MAX_VAL (64u * 1024 * 1024)

/* ---------------- batches ---------------- */

od_batch *od_batch_new(void)
{
    return calloc(1, sizeof(od_batch));
}

void od_batch_free(od_batch *b)
{
    if (!b) return;
    od_buf_free(&b->buf);
    free(b);
}

void od_batch_clear(od_batch *b)
{
    od_buf_reset(&b->buf);
    b->count = 0;
    b->user_bytes = 0;
}

size_t od_batch_count(const od_batch *b)
{
    return b->count;
}

size_t od_batch_bytes(const od_batch *b)
{
    return b->buf.len;
}

static int batch_add(od_batch *b, uint8_t op, const void *key, size_t klen, const void *val, size_t vlen,
                     int64_t exp)
{
    if (klen > MAX_KEY || vlen > MAX_VAL || exp < 0) return OD_BADREQ;
    if (od_buf_reserve(&b->buf, 1 + 10 + klen + 10 + vlen + 10)) return OD_NOMEM;
    uint8_t *p = b->buf.data + b->buf.len;
    size_t n = 0;
    p[n++] = op;
    n += od_varint_put(p + n, klen);
    if (klen) memcpy(p + n, key, klen);
    n += klen;
    if (op != OD_OP_DEL) {
        n += od_varint_put(p + n, vlen);
        if (vlen) memcpy(p + n, val, vlen);
        n += vlen;
    }
    if (op == OD_OP_PUT_TTL) n += od_varint_put(p + n, (uint64_t)exp);
    b->buf.len += n;
    b->count++;
    b->user_bytes += klen + vlen;
    return OD_OK;
}

int od_batch_put(od_batch *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    return batch_add(b, OD_OP_PUT, key, klen, val, vlen, 0);
}

int od_batch_put_ttl(od_batch *b, const void *key, size_t klen, const void *val, size_t vlen, int64_t expire_at_ms)
{
    if (expire_at_ms == 0) return batch_add(b, OD_OP_PUT, key, klen, val, vlen, 0);
    return batch_add(b, OD_OP_PUT_TTL, key, klen, val, vlen, expire_at_ms);
}

int od_batch_delete(od_batch *b, const void *key, size_t klen)
{
    return batch_add(b, OD_OP_DEL, key, klen, NULL, 0, 0);
}

int od_batch_next_op(od_rd *r, od_op *op)
{
    if (od_rd_left(r) == 0) return 0;
    op->op = od_rd_u8(r);
    op->key = od_rd_lenbytes(r, &op->klen);
    op->val = NULL;
    op->vlen = 0;
    op->expire_ms = 0;
    if (!r->ok || op->op < OD_OP_PUT || op->op > OD_OP_PUT_TTL || op->klen > MAX_KEY) return -1;
    if (op->op != OD_OP_DEL) {
        op->val = od_rd_lenbytes(r, &op->vlen);
        if (!r->ok || op->vlen > MAX_VAL) return -1;
    }
    if (op->op == OD_OP_PUT_TTL) {
        uint64_t e = od_rd_varint(r);
        if (!r->ok || e == 0 || e > (uint64_t)INT64_MAX) return -1;
        op->expire_ms = (int64_t)e;
    }
    return 1;
}

/* ---------------- WAL objects ---------------- */

int od_wal_begin(od_buf *b)
{
    od_buf_reset(b);
    if (od_buf_reserve(b, OD_WAL_HDR_BYTES)) return OD_NOMEM;
    memset(b->data, 0, OD_WAL_HDR_BYTES);
    b->len = OD_WAL_HDR_BYTES;
    return OD_OK;
}

int od_wal_append(od_buf *b, uint64_t seq, size_t nops, const uint8_t *body, size_t body_len)
{
    if (od_buf_reserve(b, 8 + 10 + 10 + body_len)) return OD_NOMEM;
    uint8_t *p = b->data + b->len;
    od_put_u64(p, seq);
    size_t n = 8;
    n += od_varint_put(p + n, nops);
    n += od_varint_put(p + n, body_len);
    if (body_len) memcpy(p + n, body, body_len);
    b->len += n + body_len;
    return OD_OK;
}

int od_wal_finish(od_buf *b, const od_wal_hdr *h)
{
    if (b->len < OD_WAL_HDR_BYTES && od_wal_begin(b)) return OD_NOMEM;
    uint8_t *p = b->data;
    memcpy(p, WAL_MAGIC, 4);
    p[4] = WAL_VERSION;
    p[5] = h->flags;
    od_put_u16(p + 6, 0);
    od_put_u64(p + 8, h->wal_id);
    od_put_u64(p + 16, h->writer_epoch);
    od_put_u64(p + 24, h->writer_id);
    od_put_u64(p + 32, h->first_seq);
    od_put_u64(p + 40, h->last_seq);
    od_put_u32(p + 48, h->nbatches);
    uint32_t crc = od_crc32c_mask(od_crc32c(b->data, b->len));
    return od_buf_put_u32(b, crc);
}

int od_wal_decode(const uint8_t *data, size_t len, const char *name, od_wal_hdr *h, od_err *err)
{
    if (len < OD_WAL_HDR_BYTES + 4)
        return od_err_set(err, OD_CORRUPT, "wal: object %s is truncated (%zu bytes, header needs %d)", name, len,
                          OD_WAL_HDR_BYTES + 4);
    uint32_t want = od_crc32c_unmask(od_get_u32(data + len - 4));
    uint32_t got = od_crc32c(data, len - 4);
    if (want != got)
        return od_err_set(err, OD_CORRUPT, "wal: object %s fails its CRC32C (stored %08x, computed %08x)", name,
                          want, got);
    if (memcmp(data, WAL_MAGIC, 4) != 0) return od_err_set(err, OD_CORRUPT, "wal: object %s has a bad magic", name);
    if (data[4] != WAL_VERSION)
        return od_err_set(err, OD_CORRUPT, "wal: object %s has unknown format version %u", name, data[4]);
    if ((data[5] & ~OD_WAL_FLAG_FENCE) || od_get_u16(data + 6) != 0)
        return od_err_set(err, OD_CORRUPT, "wal: object %s has unknown flags", name);
    h->flags = data[5];
    h->wal_id = od_get_u64(data + 8);
    h->writer_epoch = od_get_u64(data + 16);
    h->writer_id = od_get_u64(data + 24);
    h->first_seq = od_get_u64(data + 32);
    h->last_seq = od_get_u64(data + 40);
    h->nbatches = od_get_u32(data + 48);
    od_wal_reader r;
    od_wal_reader_init(&r, data, len, h);
    uint64_t prev = 0, seq;
    size_t nops, blen;
    const uint8_t *body;
    uint32_t seen = 0;
    while (od_wal_reader_next(&r, &seq, &nops, &body, &blen)) {
        if (seq == 0 || seq <= prev || seq < h->first_seq || seq > h->last_seq)
            return od_err_set(err, OD_CORRUPT, "wal: object %s record %u has out-of-order seq %llu", name, seen,
                              (unsigned long long)seq);
        od_rd br = od_rd_make(body, blen);
        od_op op;
        size_t k = 0;
        int rc;
        while ((rc = od_batch_next_op(&br, &op)) == 1) k++;
        if (rc < 0 || k != nops)
            return od_err_set(err, OD_CORRUPT, "wal: object %s record %u (seq %llu) has a malformed batch", name, seen,
                              (unsigned long long)seq);
        prev = seq;
        seen++;
    }
    if (!r.rd.ok || seen != h->nbatches || od_rd_left(&r.rd) != 0)
        return od_err_set(err, OD_CORRUPT, "wal: object %s has %u readable records of %u declared", name, seen,
                          h->nbatches);
    if (h->nbatches && (prev != h->last_seq))
        return od_err_set(err, OD_CORRUPT, "wal: object %s last record seq differs from its header", name);
    if (h->nbatches == 0 && (h->first_seq || h->last_seq))
        return od_err_set(err, OD_CORRUPT, "wal: object %s is empty but declares sequences", name);
    return OD_OK;
}

void od_wal_reader_init(od_wal_reader *r, const uint8_t *data, size_t len, const od_wal_hdr *h)
{
    r->rd = od_rd_make(data + OD_WAL_HDR_BYTES, len - OD_WAL_HDR_BYTES - 4);
    r->left = h->nbatches;
}

int od_wal_reader_next(od_wal_reader *r, uint64_t *seq, size_t *nops, const uint8_t **body, size_t *body_len)
{
    if (r->left == 0 || od_rd_left(&r->rd) == 0) return 0;
    *seq = od_rd_u64(&r->rd);
    *nops = od_rd_varint(&r->rd);
    *body = od_rd_lenbytes(&r->rd, body_len);
    if (!r->rd.ok) return 0;
    r->left--;
    return 1;
}
