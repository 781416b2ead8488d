/*
 * sst_block.h — the block layer of SSTs: data-block builder and reader, and block framing
 * (compression tag + CRC32C trailer). Internal to core/lsm (used by sst_builder.c, sst_reader.c).
 *
 * A data block's content is a run of entries followed by a restart array:
 *
 *   entry    := varint shared | varint unshared | varint vlen | varint seq | u8 flags
 *               | [varint zigzag(expire_ms) if flags & 4] | key[shared..] (unshared bytes) | value
 *   flags    := kind (bits 0-1: 1 PUT, 2 DEL) | 4 if an expiry follows; other bits 0
 *   trailer  := u32 restart_offset[n] | u32 n          (little endian)
 *
 * Every OD_BLK_RESTART_INTERVAL-th entry is a restart point: it stores its whole key
 * (shared = 0) and its offset is in the restart array, so a seek binary-searches the restart
 * points and then scans at most 16 entries.
 *
 * A stored block (data, filter, index, properties) is framed as
 *   payload | u8 tag | u32 masked CRC32C(payload | tag)
 * tag 0: payload is the content; tag 1: payload is varint raw_len | LZ4 block of the content.
 */
#ifndef OD_LSM_SST_BLOCK_H
#define OD_LSM_SST_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "../util/od_buf.h"
#include "od_sst.h"

enum {
    OD_BLK_RESTART_INTERVAL = 16,
    OD_BLK_TRAILER = 5,          /* tag + crc */
    OD_BLK_TAG_NONE = 0,
    OD_BLK_TAG_LZ4 = 1,
    OD_BLK_FLAG_EXPIRE = 4,
};

/* Table footer (last 64 bytes of an SST): six u64 (filter off/size, index off/size, props
 * off/size), u32 format version, u32 masked CRC32C of the other 60 bytes, u64 magic. */
#define OD_SST_FOOTER_SIZE 64
#define OD_SST_VERSION 1u
#define OD_SST_MAGIC 0x3154534c53444f89ull /* bytes 89 'O' 'D' 'S' 'L' 'S' 'T' '1' */

/* Largest key / value a block entry may hold (keeps every in-block offset < 2^32). */
#define OD_BLK_MAX_KEY (1u << 24)
#define OD_BLK_MAX_VAL (1u << 30)

/* ---- builder ---- */
typedef struct od_blk_builder {
    od_buf buf;            /* entries so far (then the trailer, after finish) */
    uint32_t *restarts;
    size_t nrestarts, caprestarts;
    size_t nentries;
    int counter;           /* entries since the last restart */
} od_blk_builder;

void od_blkb_init(od_blk_builder *b);
void od_blkb_free(od_blk_builder *b);
void od_blkb_reset(od_blk_builder *b);
/* Append an entry; `prev` is the previous entry's key in this block (ignored for the first
 * entry). Sizes must be below OD_BLK_MAX_KEY / OD_BLK_MAX_VAL (the caller checks).
 * OD_OK / OD_NOMEM. */
int od_blkb_add(od_blk_builder *b, const uint8_t *prev, size_t prevlen, const od_entry *e);
/* Size of the content if finished now. */
size_t od_blkb_estimate(const od_blk_builder *b);
/* Append the restart trailer; b->buf then holds the finished content. OD_OK / OD_NOMEM. */
int od_blkb_finish(od_blk_builder *b);

/* ---- framing ---- */
/* Append `raw` framed to out. compress: try LZ4 and keep it if it saves ≥ 12.5%.
 * scratch: reusable buffer for the compressed bytes. OD_OK / OD_NOMEM. */
int od_blk_frame(const uint8_t *raw, size_t len, int compress, od_buf *out, od_buf *scratch);
/* Check and decode a stored block. On OD_OK (*content, *clen) is the content: either inside
 * `stored` (tag 0; *owned = NULL) or a malloc'd buffer returned in *owned (tag 1).
 * OD_CORRUPT with *why set to a static reason, or OD_NOMEM. */
int od_blk_unframe(const uint8_t *stored, size_t len, const uint8_t **content, size_t *clen, uint8_t **owned,
                   const char **why);

/* ---- reader ---- */
typedef struct od_blk {
    const uint8_t *data;     /* entries */
    size_t len;              /* bytes of entries (restart array excluded) */
    const uint8_t *restarts; /* u32 LE array */
    uint32_t nrestarts;
} od_blk;

/* Structural check of a block's content. OD_OK / OD_CORRUPT (*why set). */
int od_blk_parse(od_blk *b, const uint8_t *content, size_t len, const char **why);

typedef struct od_blk_iter {
    od_blk blk;
    od_buf *key;      /* reconstructed key of the current entry (caller-owned, reused) */
    size_t cur;       /* offset of the current entry */
    size_t next;      /* offset of the entry after it */
    int valid;
    od_entry e;       /* current entry: key points into *key, val into the block */
} od_blk_iter;

void od_blki_init(od_blk_iter *it, const od_blk *b, od_buf *keybuf);
/* Each returns OD_OK (it->valid says whether positioned), OD_CORRUPT or OD_NOMEM. */
int od_blki_first(od_blk_iter *it, const char **why);
int od_blki_next(od_blk_iter *it, const char **why);
/* First entry ≥ (key, seq) in od_entry_cmp order. */
int od_blki_seek(od_blk_iter *it, const uint8_t *key, size_t klen, uint64_t seq, const char **why);

/* Point lookup (the get path): the first entry of `key` with seq ≤ `seq`, without
 * rebuilding the keys it passes (it tracks how much of each key matches `key` instead).
 * *found: 1 (out filled: out->key is the caller's `key`, out->val points into the block),
 * 0 (the key has no such entry here: a larger entry follows), -1 (the block ended first).
 * OD_OK / OD_CORRUPT (*why set). */
int od_blk_get(const od_blk *b, const uint8_t *key, size_t klen, uint64_t seq, od_entry *out, int *found,
               const char **why);

#endif
