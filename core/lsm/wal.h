/*
 * wal.h — write batches and WAL objects: their byte formats, encoders and decoders.
 * Internal to core/lsm (the flusher thread that writes WAL objects lives in db.c).
 *
 * A batch is encoded ONCE, when the caller builds it (od_batch_put & co.); the same bytes
 * are appended to the pending WAL object and decoded again only on replay.
 *
 * Batch body (a sequence of ops, no header):
 *   op u8 (1 PUT, 2 DEL, 3 PUT_TTL) | varint klen | key | [varint vlen | value] (PUT, PUT_TTL)
 *   | [varint expire_at_ms] (PUT_TTL)
 *
 * WAL object (all integers little-endian; byte-exact description in docs/formats.md):
 *    0  magic "ODWL"              4  format version u8 (1)     5  flags u8 (bit 0: fence)
 *    6  reserved u16 (0)          8  wal_id u64               16  writer_epoch u64
 *   24  writer_id u64 (random)   32  first_seq u64            40  last_seq u64
 *   48  nbatches u32             52  records...
 *   record: seq u64 | varint nops | varint body_len | body
 *   end-4: masked CRC32C of every byte before it.
 * writer_epoch + writer_id make every object's bytes unique to its writer, so an ambiguous
 * conditional create can be resolved by reading the object back.
 */
#ifndef OD_WAL_H
#define OD_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "od_buf.h"
#include "od_coding.h"
#include "od_err.h"

#define OD_WAL_HDR_BYTES 52
#define OD_WAL_FLAG_FENCE 1

enum { OD_OP_PUT = 1, OD_OP_DEL = 2, OD_OP_PUT_TTL = 3 };

struct od_batch {
    od_buf buf;
    size_t count;
    size_t user_bytes; /* key + value bytes */
};

typedef struct od_wal_hdr {
    uint64_t wal_id, writer_epoch, writer_id, first_seq, last_seq;
    uint32_t nbatches;
    uint8_t flags;
} od_wal_hdr;

/* Start a WAL object in b (reset; header space reserved). */
int od_wal_begin(od_buf *b);
/* Append one batch record. */
int od_wal_append(od_buf *b, uint64_t seq, size_t nops, const uint8_t *body, size_t body_len);
/* Fill in the header and append the CRC: b is then the finished object. */
int od_wal_finish(od_buf *b, const od_wal_hdr *h);
/* Check a whole object (CRC, header, every record and op). `name` goes into error messages. */
int od_wal_decode(const uint8_t *data, size_t len, const char *name, od_wal_hdr *h, od_err *err);

/* Walk the records of an object that passed od_wal_decode. */
typedef struct od_wal_reader {
    od_rd rd;
    uint32_t left;
} od_wal_reader;
void od_wal_reader_init(od_wal_reader *r, const uint8_t *data, size_t len, const od_wal_hdr *h);
/* 1 and the record, or 0 at the end. */
int od_wal_reader_next(od_wal_reader *r, uint64_t *seq, size_t *nops, const uint8_t **body, size_t *body_len);

/* One decoded op of a batch body. */
typedef struct od_op {
    uint8_t op;
    const uint8_t *key, *val;
    size_t klen, vlen;
    int64_t expire_ms;
} od_op;
/* Next op from a body reader; 1 = op, 0 = end, -1 = malformed. */
int od_batch_next_op(od_rd *r, od_op *op);

#endif
