/*
 * sst_builder.c — writes an SST (see od_sst.h, sst_block.h, docs/formats.md).
 *
 * Owns: the object being built (framed data blocks, grown as entries arrive), the current
 * data block, the index entries, the bloom hashes of the distinct user keys, and the
 * properties being accumulated. The object and the hashes are the builder's big buffers (tens
 * of MiB for a flush or a compaction output): they are od_bigbufs, mapped on their own and
 * unmapped by od_sst_builder_free, so that they do not stay resident in a background
 * thread's malloc arena after the table is written. Blocks are framed into a small od_buf
 * and copied into the object.
 *
 * How it works. Entries arrive in od_entry_cmp order (checked). Each goes into the current
 * block builder; once the block's estimated size reaches block_size it is finished (restart
 * array), framed (LZ4 if that saves ≥ 12.5%, tag, CRC32C) and appended to the object, and an
 * index entry (last key, last seq, stored size) is recorded. finish() flushes the last block
 * and appends the filter block, the index block, the properties block and the footer.
 * Mirrors sst_reader.c, which decodes exactly what is written here.
 */
#include <stdlib.h>
#include <string.h>

#include "../util/od_bigbuf.h"
#include "../util/od_coding.h"
#include "../util/od_crc32c.h"
#include "../util/od_err.h"
#include "bloom.h"
#include "od_sst.h"
#include "sst_block.h"

struct od_sst_builder {
    od_sst_opts o;
    od_bigbuf out;       /* the object: framed data blocks so far */
    od_buf blk;          /* one framed block on its way into out */
    od_blk_builder bb;   /* current data block */
    od_buf last_key;     /* key of the last entry added */
    uint64_t last_seq;
    int has_last;
    od_buf index;        /* index entries (count is prepended at finish) */
    uint64_t nindex;
    od_bigbuf hashes;    /* uint64_t od_hash64 of each distinct user key */
    size_t nhashes;
    od_buf scratch;      /* compression output */
    od_sst_props props;  /* min_key / max_key filled at finish */
    od_buf min_key;
    int finished;
    int failed;          /* an allocation failed mid-add: the builder's state is unusable */
};

void od_sst_opts_init(od_sst_opts *o)
{
    o->block_size = 16384;
    o->bloom_bits_per_key = 10;
    o->compress = 1;
    o->expect_bytes = 0;
}

void od_sst_props_free(od_sst_props *p)
{
    if (!p) return;
    od_buf_free(&p->min_key);
    od_buf_free(&p->max_key);
}

int od_sst_builder_new(const od_sst_opts *o, od_sst_builder **out, od_err *err)
{
    *out = NULL;
    od_sst_builder *b = calloc(1, sizeof *b);
    if (!b) return od_err_set(err, OD_NOMEM, "sst builder: out of memory");
    if (o)
        b->o = *o;
    else
        od_sst_opts_init(&b->o);
    if (b->o.block_size < 256) b->o.block_size = 256;
    if (b->o.block_size > (64u << 20)) b->o.block_size = 64u << 20;
    if (b->o.bloom_bits_per_key < 0) b->o.bloom_bits_per_key = 0;
    if (b->o.bloom_bits_per_key > 64) b->o.bloom_bits_per_key = 64;
    od_blkb_init(&b->bb);
    size_t expect = b->o.expect_bytes < (1u << 30) ? b->o.expect_bytes : (1u << 30);
    if (expect && od_bigbuf_reserve(&b->out, expect)) {
        od_sst_builder_free(b);
        return od_err_set(err, OD_NOMEM, "sst builder: out of memory reserving %zu bytes", expect);
    }
    *out = b;
    return OD_OK;
}

void od_sst_builder_free(od_sst_builder *b)
{
    if (!b) return;
    od_bigbuf_free(&b->out);
    od_buf_free(&b->blk);
    od_blkb_free(&b->bb);
    od_buf_free(&b->last_key);
    od_buf_free(&b->index);
    od_buf_free(&b->scratch);
    od_buf_free(&b->min_key);
    od_bigbuf_free(&b->hashes);
    free(b);
}

/* Frame one block (see od_blk_frame) and append it to the object. */
static int frame_out(od_sst_builder *b, const uint8_t *raw, size_t len, int compress)
{
    od_buf_reset(&b->blk);
    if (od_blk_frame(raw, len, compress, &b->blk, &b->scratch)) return OD_NOMEM;
    return od_bigbuf_append(&b->out, b->blk.data, b->blk.len);
}

static int flush_block(od_sst_builder *b, od_err *err)
{
    if (b->bb.nentries == 0) return OD_OK;
    if (od_blkb_finish(&b->bb) || frame_out(b, b->bb.buf.data, b->bb.buf.len, b->o.compress)) goto nomem;
    uint64_t stored = b->blk.len;
    if (od_buf_put_lenbytes(&b->index, b->last_key.data, b->last_key.len) || od_buf_put_varint(&b->index, b->last_seq) ||
        od_buf_put_varint(&b->index, stored))
        goto nomem;
    b->nindex++;
    b->props.data_blocks++;
    od_blkb_reset(&b->bb);
    return OD_OK;
nomem:
    return od_err_set(err, OD_NOMEM, "sst builder: out of memory flushing a data block");
}

static int add_entry(od_sst_builder *b, const od_entry *e, od_err *err);

int od_sst_builder_add(od_sst_builder *b, const od_entry *e, od_err *err)
{
    if (b->failed) return od_err_set(err, OD_BADREQ, "sst builder: unusable after an earlier failure");
    int rc = add_entry(b, e, err);
    if (rc == OD_NOMEM) b->failed = 1;
    return rc;
}

static int add_entry(od_sst_builder *b, const od_entry *e, od_err *err)
{
    if (b->finished) return od_err_set(err, OD_BADREQ, "sst builder: add after finish");
    if (e->kind != OD_KIND_PUT && e->kind != OD_KIND_DEL)
        return od_err_set(err, OD_BADREQ, "sst builder: bad entry kind %u", (unsigned)e->kind);
    if (e->kind == OD_KIND_DEL && e->vlen)
        return od_err_set(err, OD_BADREQ, "sst builder: tombstone with a %zu-byte value", e->vlen);
    if (e->klen >= OD_BLK_MAX_KEY) return od_err_set(err, OD_BADREQ, "sst builder: key of %zu bytes too long", e->klen);
    if (e->vlen >= OD_BLK_MAX_VAL)
        return od_err_set(err, OD_BADREQ, "sst builder: value of %zu bytes too long", e->vlen);
    if ((e->klen && !e->key) || (e->vlen && !e->val)) return od_err_set(err, OD_BADREQ, "sst builder: NULL key or value");
    int new_key = 1;
    if (b->has_last) {
        int c = od_entry_cmp(e->key, e->klen, e->seq, b->last_key.data, b->last_key.len, b->last_seq);
        if (c <= 0)
            return od_err_set(err, OD_BADREQ,
                              "sst builder: entry (key of %zu bytes, seq %llu) out of order: not after the previous "
                              "entry (seq %llu)",
                              e->klen, (unsigned long long)e->seq, (unsigned long long)b->last_seq);
        new_key = e->klen != b->last_key.len || (e->klen && memcmp(e->key, b->last_key.data, e->klen) != 0);
    }
    if (new_key && b->o.bloom_bits_per_key > 0) {
        uint64_t h = od_hash64(e->key, e->klen);
        if (od_bigbuf_append(&b->hashes, &h, sizeof h))
            return od_err_set(err, OD_NOMEM, "sst builder: out of memory (bloom hashes)");
        b->nhashes++;
    }
    if (od_blkb_add(&b->bb, b->last_key.data, b->last_key.len, e))
        return od_err_set(err, OD_NOMEM, "sst builder: out of memory (data block)");
    if (!b->has_last) {
        if (od_buf_append(&b->min_key, e->key, e->klen)) return od_err_set(err, OD_NOMEM, "sst builder: out of memory");
        b->props.min_seq = e->seq;
        b->props.max_seq = e->seq;
    }
    b->last_key.len = 0;
    if (od_buf_append(&b->last_key, e->key, e->klen)) return od_err_set(err, OD_NOMEM, "sst builder: out of memory");
    b->last_seq = e->seq;
    b->has_last = 1;
    b->props.entries++;
    if (e->kind == OD_KIND_DEL) b->props.tombstones++;
    if (e->seq < b->props.min_seq) b->props.min_seq = e->seq;
    if (e->seq > b->props.max_seq) b->props.max_seq = e->seq;
    b->props.raw_key_bytes += e->klen;
    b->props.raw_value_bytes += e->vlen;
    if (od_blkb_estimate(&b->bb) >= b->o.block_size) return flush_block(b, err);
    return OD_OK;
}

size_t od_sst_builder_size(const od_sst_builder *b)
{
    size_t filter = b->o.bloom_bits_per_key > 0 ? b->nhashes * (size_t)b->o.bloom_bits_per_key / 8 + 64 : 0;
    return b->out.len + (b->bb.nentries ? od_blkb_estimate(&b->bb) + OD_BLK_TRAILER : 0) + b->index.len + filter +
           b->min_key.len + b->last_key.len + 128 + OD_SST_FOOTER_SIZE;
}

uint64_t od_sst_builder_entries(const od_sst_builder *b) { return b->props.entries; }

int od_sst_builder_finish_ref(od_sst_builder *b, const uint8_t **data, size_t *len, od_sst_props *props,
                              od_err *err)
{
    *data = NULL;
    *len = 0;
    if (b->finished) return od_err_set(err, OD_BADREQ, "sst builder: finish called twice");
    if (b->failed) return od_err_set(err, OD_BADREQ, "sst builder: unusable after an earlier failure");
    int rc = flush_block(b, err);
    if (rc) {
        b->failed = 1;
        return rc;
    }
    b->finished = 1;
    uint64_t filter_off = b->out.len, filter_size = 0;
    od_buf tmp = {0};
    if (b->o.bloom_bits_per_key > 0) {
        if (od_bloom_build((const uint64_t *)b->hashes.data, b->nhashes, b->o.bloom_bits_per_key, &tmp) ||
            frame_out(b, tmp.data, tmp.len, 0))
            goto nomem;
        filter_size = b->out.len - filter_off;
    }
    uint64_t index_off = b->out.len;
    od_buf_reset(&tmp);
    if (od_buf_put_varint(&tmp, b->nindex) || od_buf_append(&tmp, b->index.data, b->index.len) ||
        frame_out(b, tmp.data, tmp.len, b->o.compress))
        goto nomem;
    uint64_t index_size = b->out.len - index_off;
    uint64_t props_off = b->out.len;
    od_buf_reset(&tmp);
    const od_sst_props *p = &b->props;
    if (od_buf_put_varint(&tmp, p->entries) || od_buf_put_varint(&tmp, p->tombstones) ||
        od_buf_put_varint(&tmp, p->min_seq) || od_buf_put_varint(&tmp, p->max_seq) ||
        od_buf_put_varint(&tmp, p->raw_key_bytes) || od_buf_put_varint(&tmp, p->raw_value_bytes) ||
        od_buf_put_varint(&tmp, p->data_blocks) || od_buf_put_lenbytes(&tmp, b->min_key.data, b->min_key.len) ||
        od_buf_put_lenbytes(&tmp, b->last_key.data, b->last_key.len) ||
        frame_out(b, tmp.data, tmp.len, 0))
        goto nomem;
    uint64_t props_size = b->out.len - props_off;
    uint8_t f[OD_SST_FOOTER_SIZE];
    od_put_u64(f + 0, filter_size ? filter_off : 0);
    od_put_u64(f + 8, filter_size);
    od_put_u64(f + 16, index_off);
    od_put_u64(f + 24, index_size);
    od_put_u64(f + 32, props_off);
    od_put_u64(f + 40, props_size);
    od_put_u32(f + 48, OD_SST_VERSION);
    od_put_u64(f + 56, OD_SST_MAGIC);
    uint32_t crc = od_crc32c_extend(od_crc32c(f, 52), f + 56, 8);
    od_put_u32(f + 52, od_crc32c_mask(crc));
    if (od_bigbuf_append(&b->out, f, sizeof f)) goto nomem;
    od_buf_free(&tmp);
    od_buf_free(&b->blk);
    od_buf_free(&b->scratch);
    od_bigbuf_free(&b->hashes); /* only the object is needed from here on */
    if (props) {
        memset(props, 0, sizeof *props);
        *props = b->props;
        props->file_bytes = b->out.len;
        props->min_key = (od_buf){0};
        props->max_key = (od_buf){0};
        if (od_buf_append(&props->min_key, b->min_key.data, b->min_key.len) ||
            od_buf_append(&props->max_key, b->last_key.data, b->last_key.len)) {
            od_sst_props_free(props);
            return od_err_set(err, OD_NOMEM, "sst builder: out of memory (properties)");
        }
    }
    *data = b->out.data;
    *len = b->out.len;
    return OD_OK;
nomem:
    od_buf_free(&tmp);
    b->failed = 1;
    return od_err_set(err, OD_NOMEM, "sst builder: out of memory finishing the table");
}

int od_sst_builder_finish(od_sst_builder *b, od_buf *out, od_sst_props *props, od_err *err)
{
    const uint8_t *data;
    size_t len;
    int rc = od_sst_builder_finish_ref(b, &data, &len, props, err);
    if (rc) return rc;
    od_buf copy = {0};
    if (od_buf_append(&copy, data, len)) {
        if (props) od_sst_props_free(props);
        return od_err_set(err, OD_NOMEM, "sst builder: out of memory copying the table (%zu bytes)", len);
    }
    od_buf_free(out);
    *out = copy;
    od_bigbuf_free(&b->out);
    return OD_OK;
}
