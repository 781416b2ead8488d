/*
 * sst_reader.c — opens and reads an SST (see od_sst.h, sst_block.h, docs/formats.md).
 *
 * Owns (per open table): its name, the metadata bytes (the tail read at open, or nothing for
 * an in-memory table), the decoded index (one array entry per data block: last key, last seq,
 * offset, stored size), the bloom filter bytes and the properties. Data blocks are never
 * owned by the table: they live in the block cache (refcounted) or, without a cache, in the
 * reading get/iterator for as long as it needs them.
 *
 * How it works. Open does one ranged read of the last 64 KiB (or the whole object if
 * smaller); when the filter+index+properties do not fit in it, one more read fetches exactly
 * [start of filter, end). The footer is checked (magic, version, CRC), then every offset and
 * size is checked against the object size and against each other (the metadata blocks must be
 * contiguous and end at the footer; the data blocks, whose offsets are the running sum of the
 * sizes in the index, must exactly fill [0, start of filter)). Every block's CRC is verified
 * when it is loaded (data blocks once per cache fill). A point get hashes the key for the
 * bloom filter, binary-searches the index for the first block whose last (key, seq) is at or
 * after (key, max_seq), and seeks inside that block. Any failed check is OD_CORRUPT naming the
 * object and the offset of the block. Iterators hold a reference to their current block only;
 * with readahead they fetch runs of consecutive blocks in one read into a private window
 * (bypassing the cache, so compaction scans do not evict the readers' working set).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../util/od_coding.h"
#include "../util/od_crc32c.h"
#include "../util/od_err.h"
#include "bloom.h"
#include "od_sst.h"
#include "sst_block.h"

#define TAIL_READ (64u * 1024u)

typedef struct ixent {
    const uint8_t *key;
    size_t klen;
    uint64_t seq;
    uint64_t off;
    uint64_t size;
} ixent;

struct od_sst {
    char *name;
    uint64_t size;
    od_range_read_fn read;
    void *ctx;
    const uint8_t *mem;        /* in-memory table, or NULL */
    od_block_cache *cache;
    uint64_t cache_id;
    od_buf meta;               /* bytes read at open (not for in-memory tables) */
    uint64_t meta_base;        /* object offset of meta.data[0] */
    uint8_t *index_owned;      /* decompressed index content, if it was compressed */
    uint8_t *filter_owned;
    const uint8_t *filter;     /* NULL: no filter */
    size_t filter_len;
    ixent *ix;
    uint64_t *ixpfx;           /* od_key_prefix of each ix[i].key: the index search's first test */
    uint32_t nblocks;
    uint64_t data_end;
    od_sst_props props;
    atomic_uint_fast64_t block_reads;
};

/* A loaded data block: a cache reference, or owned bytes, or bytes inside an in-memory
 * table / the caller's read window. */
typedef struct blkref {
    od_cblock *cb;
    uint8_t *owned;
    const uint8_t *data;
    size_t len;
} blkref;

/* Raw object bytes [off, off + buf.len) fetched by the last read of a get or iterator. With
 * readahead (ra > 0) one read covers consecutive data blocks up to ra bytes. */
typedef struct rawwin {
    od_buf buf;
    uint64_t off;
    uint64_t ra;
    int valid;
} rawwin;

static int corrupt(const od_sst *t, od_err *err, const char *what, uint64_t off, const char *why)
{
    return od_err_set(err, OD_CORRUPT, "sst %s: corrupt %s at offset %llu: %s", t->name, what,
                      (unsigned long long)off, why);
}

/* ---------------- open ---------------- */

static int read_range(od_sst *t, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    int rc = t->read(t->ctx, off, len, out, err);
    if (rc) { /* not `return od_err_prefix(...)`: that answers OD_OK when err is NULL (od_sst_get's
               * hot path passes NULL), and the caller would read a block that is not there */
        od_err_prefix(err, "sst %s: reading [%llu, +%llu)", t->name, (unsigned long long)off, (unsigned long long)len);
        return rc;
    }
    if (out->len != len)
        return od_err_set(err, OD_CORRUPT, "sst %s: short read at offset %llu: %zu of %llu bytes", t->name,
                          (unsigned long long)off, out->len, (unsigned long long)len);
    return OD_OK;
}

/* Pointer to object bytes [off, off+len) that open made available. */
static const uint8_t *meta_ptr(const od_sst *t, uint64_t off)
{
    return t->mem ? t->mem + off : t->meta.data + (off - t->meta_base);
}

static int unframe_meta(od_sst *t, const char *what, uint64_t off, uint64_t size, const uint8_t **content,
                        size_t *clen, uint8_t **owned, od_err *err)
{
    const char *why = NULL;
    int rc = od_blk_unframe(meta_ptr(t, off), (size_t)size, content, clen, owned, &why);
    if (rc == OD_NOMEM) return od_err_set(err, OD_NOMEM, "sst %s: out of memory decoding the %s", t->name, what);
    if (rc) return corrupt(t, err, what, off, why);
    return OD_OK;
}

static int parse_index(od_sst *t, uint64_t off, uint64_t size, od_err *err)
{
    const uint8_t *c;
    size_t clen;
    int rc = unframe_meta(t, "index block", off, size, &c, &clen, &t->index_owned, err);
    if (rc) return rc;
    od_rd r = od_rd_make(c, clen);
    uint64_t n = od_rd_varint(&r);
    if (!r.ok || n > t->data_end / (OD_BLK_TRAILER + 8) || n > UINT32_MAX)
        return corrupt(t, err, "index block", off, "bad block count");
    t->nblocks = (uint32_t)n;
    t->ix = calloc(n ? n : 1, sizeof *t->ix);
    t->ixpfx = malloc((n ? n : 1) * sizeof *t->ixpfx);
    if (!t->ix || !t->ixpfx) return od_err_set(err, OD_NOMEM, "sst %s: out of memory (index of %llu blocks)", t->name,
                                  (unsigned long long)n);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < t->nblocks; i++) {
        ixent *e = &t->ix[i];
        e->key = od_rd_lenbytes(&r, &e->klen);
        e->seq = od_rd_varint(&r);
        e->size = od_rd_varint(&r);
        if (!r.ok) return corrupt(t, err, "index block", off, "entry overruns the block");
        if (e->size < OD_BLK_TRAILER + 8 || e->size > t->data_end - pos)
            return corrupt(t, err, "index block", off, "data block size out of range");
        if (i > 0 && od_entry_cmp(t->ix[i - 1].key, t->ix[i - 1].klen, t->ix[i - 1].seq, e->key, e->klen, e->seq) >= 0)
            return corrupt(t, err, "index block", off, "keys out of order");
        e->off = pos;
        pos += e->size;
        t->ixpfx[i] = od_key_prefix(e->key, e->klen);
    }
    if (pos != t->data_end) return corrupt(t, err, "index block", off, "data blocks do not fill the data region");
    return OD_OK;
}

static int parse_props(od_sst *t, uint64_t off, uint64_t size, od_err *err)
{
    const uint8_t *c;
    size_t clen;
    uint8_t *owned = NULL;
    int rc = unframe_meta(t, "properties block", off, size, &c, &clen, &owned, err);
    if (rc) return rc;
    od_rd r = od_rd_make(c, clen);
    od_sst_props *p = &t->props;
    p->entries = od_rd_varint(&r);
    p->tombstones = od_rd_varint(&r);
    p->min_seq = od_rd_varint(&r);
    p->max_seq = od_rd_varint(&r);
    p->raw_key_bytes = od_rd_varint(&r);
    p->raw_value_bytes = od_rd_varint(&r);
    p->data_blocks = od_rd_varint(&r);
    size_t l1, l2;
    const uint8_t *k1 = od_rd_lenbytes(&r, &l1);
    const uint8_t *k2 = od_rd_lenbytes(&r, &l2);
    p->file_bytes = t->size;
    if (!r.ok) rc = corrupt(t, err, "properties block", off, "field overruns the block");
    else if (p->data_blocks != t->nblocks || p->tombstones > p->entries || p->entries < p->data_blocks ||
             (p->entries == 0) != (t->nblocks == 0))
        rc = corrupt(t, err, "properties block", off, "counts disagree with the index");
    else if (od_buf_append(&p->min_key, k1, l1) || od_buf_append(&p->max_key, k2, l2))
        rc = od_err_set(err, OD_NOMEM, "sst %s: out of memory (properties)", t->name);
    free(owned);
    return rc;
}

static int open_common(od_sst *t, od_err *err)
{
    if (t->size < OD_SST_FOOTER_SIZE)
        return od_err_set(err, OD_CORRUPT, "sst %s: object of %llu bytes is too small for a table", t->name,
                          (unsigned long long)t->size);
    uint64_t foot = t->size - OD_SST_FOOTER_SIZE;
    int rc;
    if (!t->mem) {
        uint64_t tail = t->size < TAIL_READ ? t->size : TAIL_READ;
        t->meta_base = t->size - tail;
        if ((rc = read_range(t, t->meta_base, tail, &t->meta, err))) return rc;
    }
    const uint8_t *f = meta_ptr(t, foot);
    if (od_get_u64(f + 56) != OD_SST_MAGIC) return corrupt(t, err, "footer", foot, "bad magic number");
    uint32_t crc = od_crc32c_extend(od_crc32c(f, 52), f + 56, 8);
    if (od_crc32c_unmask(od_get_u32(f + 52)) != crc) return corrupt(t, err, "footer", foot, "checksum mismatch");
    if (od_get_u32(f + 48) != OD_SST_VERSION)
        return od_err_set(err, OD_UNSUPPORTED, "sst %s: format version %u not supported (this build reads %u)",
                          t->name, od_get_u32(f + 48), OD_SST_VERSION);
    uint64_t filter_off = od_get_u64(f), filter_size = od_get_u64(f + 8);
    uint64_t index_off = od_get_u64(f + 16), index_size = od_get_u64(f + 24);
    uint64_t props_off = od_get_u64(f + 32), props_size = od_get_u64(f + 40);
    /* Metadata blocks are contiguous: [filter][index][props][footer]. */
    if (props_size < OD_BLK_TRAILER || props_size > foot || props_off != foot - props_size ||
        index_size < OD_BLK_TRAILER || index_size > props_off || index_off != props_off - index_size ||
        (filter_size && (filter_size < OD_BLK_TRAILER || filter_size > index_off ||
                         filter_off != index_off - filter_size)) ||
        (!filter_size && filter_off != 0))
        return corrupt(t, err, "footer", foot, "block offsets out of range");
    uint64_t meta_start = filter_size ? filter_off : index_off;
    t->data_end = meta_start;
    if (!t->mem && meta_start < t->meta_base) {
        t->meta_base = meta_start;
        if ((rc = read_range(t, meta_start, t->size - meta_start, &t->meta, err))) return rc;
    }
    if (filter_size) {
        const uint8_t *c;
        size_t clen;
        if ((rc = unframe_meta(t, "filter block", filter_off, filter_size, &c, &clen, &t->filter_owned, err)))
            return rc;
        if (od_bloom_check(c, clen)) return corrupt(t, err, "filter block", filter_off, "bad filter layout");
        t->filter = c;
        t->filter_len = clen;
    }
    if ((rc = parse_index(t, index_off, index_size, err))) return rc;
    return parse_props(t, props_off, props_size, err);
}

static int open_any(const char *name, uint64_t size, od_range_read_fn read, void *ctx, const uint8_t *mem,
                    od_block_cache *cache, uint64_t cache_id, od_sst **out, od_err *err)
{
    *out = NULL;
    if (!name) name = "(unnamed)";
    od_sst *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return od_err_set(err, OD_NOMEM, "sst %s: out of memory opening", name);
    }
    t->size = size;
    t->read = read;
    t->ctx = ctx;
    t->mem = mem;
    t->cache = cache;
    t->cache_id = cache_id;
    atomic_init(&t->block_reads, 0);
    int rc = open_common(t, err);
    if (rc) {
        od_sst_close(t);
        return rc;
    }
    *out = t;
    return OD_OK;
}

int od_sst_open(const char *name, uint64_t size, od_range_read_fn read, void *ctx, od_block_cache *cache,
                uint64_t cache_id, od_sst **out, od_err *err)
{
    if (!read) return od_err_set(err, OD_BADREQ, "sst %s: no read function", name ? name : "(unnamed)");
    return open_any(name, size, read, ctx, NULL, cache, cache_id, out, err);
}

int od_sst_open_mem(const char *name, const uint8_t *data, size_t size, od_block_cache *cache, uint64_t cache_id,
                    od_sst **out, od_err *err)
{
    if (!data && size) return od_err_set(err, OD_BADREQ, "sst %s: NULL data", name ? name : "(unnamed)");
    static const uint8_t empty[1];
    return open_any(name, size, NULL, NULL, data ? data : empty, cache, cache_id, out, err);
}

void od_sst_close(od_sst *t)
{
    if (!t) return;
    free(t->name);
    od_buf_free(&t->meta);
    free(t->index_owned);
    free(t->filter_owned);
    free(t->ix);
    free(t->ixpfx);
    od_sst_props_free(&t->props);
    free(t);
}

const od_sst_props *od_sst_get_props(const od_sst *t) { return &t->props; }

uint64_t od_sst_block_reads(const od_sst *t) { return atomic_load_explicit(&t->block_reads, memory_order_relaxed); }

int od_sst_may_contain(od_sst *t, const void *key, size_t klen)
{
    if (!t->filter) return t->nblocks > 0;
    return od_bloom_may_contain(t->filter, t->filter_len, od_hash64(key, klen));
}

/* ---------------- data blocks ---------------- */

static void blk_release(od_sst *t, blkref *r)
{
    if (r->cb) od_block_cache_release(t->cache, r->cb);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* Load data block i (through the cache) and parse it into *b. Blocks fetched by a readahead
 * window bypass the cache (a compaction scan would otherwise flush it). */
static int blk_load(od_sst *t, uint32_t i, blkref *r, od_blk *b, rawwin *win, od_err *err)
{
    memset(r, 0, sizeof *r);
    const ixent *e = &t->ix[i];
    const char *why = NULL;
    int rc;
    od_cblock *cb = t->cache ? od_block_cache_lookup(t->cache, t->cache_id, e->off) : NULL;
    if (cb) {
        r->cb = cb;
        r->data = cb->data;
        r->len = cb->len;
    } else {
        const uint8_t *raw;
        int fill = 1;
        if (t->mem) {
            raw = t->mem + e->off;
        } else {
            if (!win->valid || e->off < win->off || e->off + e->size > win->off + win->buf.len) {
                uint64_t end = e->off + e->size;
                for (uint32_t j = i + 1; j < t->nblocks && t->ix[j].off + t->ix[j].size - e->off <= win->ra; j++)
                    end = t->ix[j].off + t->ix[j].size;
                win->valid = 0;
                if ((rc = read_range(t, e->off, end - e->off, &win->buf, err))) {
                    /* a missing object is not "key not in this table" (od_sst_get's NOTFOUND):
                     * a collection the view names is gone; say so instead of a silent miss */
                    if (rc == OD_NOTFOUND)
                        rc = od_err_set(err, OD_CORRUPT, "sst %s: the collection object is missing from the store",
                                        t->name);
                    return rc;
                }
                win->off = e->off;
                win->valid = 1;
            }
            raw = win->buf.data + (e->off - win->off);
            fill = win->ra == 0;
        }
        atomic_fetch_add_explicit(&t->block_reads, 1, memory_order_relaxed);
        const uint8_t *c;
        size_t clen;
        uint8_t *owned = NULL;
        rc = od_blk_unframe(raw, (size_t)e->size, &c, &clen, &owned, &why);
        if (rc == OD_NOMEM) return od_err_set(err, OD_NOMEM, "sst %s: out of memory loading a data block", t->name);
        if (rc) return corrupt(t, err, "data block", e->off, why);
        if (t->cache && fill) {
            if (!owned) {
                if (!(owned = malloc(clen))) return od_err_set(err, OD_NOMEM, "sst %s: out of memory", t->name);
                memcpy(owned, c, clen);
            }
            if (!(r->cb = od_block_cache_insert(t->cache, t->cache_id, e->off, owned, clen)))
                return od_err_set(err, OD_NOMEM, "sst %s: out of memory caching a data block", t->name);
            r->data = r->cb->data;
            r->len = r->cb->len;
        } else {
            r->owned = owned;
            r->data = c;
            r->len = clen;
        }
    }
    if (od_blk_parse(b, r->data, r->len, &why)) {
        blk_release(t, r);
        return corrupt(t, err, "data block", e->off, why);
    }
    return OD_OK;
}

/* First block whose last (key, seq) is ≥ (key, seq); nblocks if none. The search runs on the
 * dense prefix array (8 bytes per block, cache-resident for thousands of blocks) and reads a
 * block's full last key only when its prefix equals the key's. */
static uint32_t ix_search(const od_sst *t, const uint8_t *key, size_t klen, uint64_t seq)
{
    uint64_t kp = od_key_prefix(key, klen);
    uint32_t lo = 0, hi = t->nblocks;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t p = t->ixpfx[mid];
        int less;
        if (p != kp) {
            less = p < kp;
        } else {
            const ixent *e = &t->ix[mid];
            less = od_entry_cmp(e->key, e->klen, e->seq, key, klen, seq) < 0;
        }
        if (less)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int blk_err(const od_sst *t, uint32_t i, int rc, const char *why, od_err *err)
{
    if (rc == OD_NOMEM) return od_err_set(err, OD_NOMEM, "sst %s: out of memory reading a data block", t->name);
    return corrupt(t, err, "data block", t->ix[i].off, why);
}

static int not_found(od_err *err)
{
    if (err) {
        err->code = OD_NOTFOUND;
        memcpy(err->msg, "sst: key not found", sizeof "sst: key not found");
    }
    return OD_NOTFOUND;
}

int od_sst_get(od_sst *t, const void *key, size_t klen, uint64_t max_seq, od_entry *out, od_buf *hold, od_err *err)
{
    const uint8_t *k = key;
    if (t->filter && !od_bloom_may_contain(t->filter, t->filter_len, od_hash64(k, klen))) return not_found(err);
    rawwin win = {{0}, 0, 0, 0};
    int rc = OD_NOTFOUND;
    for (uint32_t i = ix_search(t, k, klen, max_seq); i < t->nblocks; i++) {
        blkref r;
        od_blk b;
        if ((rc = blk_load(t, i, &r, &b, &win, err))) break;
        od_entry e;
        int found;
        const char *why = NULL;
        rc = od_blk_get(&b, k, klen, max_seq, &e, &found, &why);
        if (rc) {
            blk_release(t, &r);
            rc = blk_err(t, i, rc, why, err);
            break;
        }
        if (found < 0) { /* only with inconsistent index/data: try the next block */
            blk_release(t, &r);
            rc = OD_NOTFOUND;
            continue;
        }
        if (found == 0) {
            blk_release(t, &r);
            rc = OD_NOTFOUND;
            break;
        }
        /* copy key and value into hold before the block goes away */
        hold->len = 0;
        if (od_buf_reserve(hold, klen + e.vlen + 1) || od_buf_append(hold, k, klen) ||
            od_buf_append(hold, e.val, e.vlen)) {
            blk_release(t, &r);
            rc = od_err_set(err, OD_NOMEM, "sst %s: out of memory copying a value", t->name);
            break;
        }
        blk_release(t, &r);
        *out = e;
        out->key = hold->data;
        out->val = hold->data + klen;
        rc = OD_OK;
        break;
    }
    od_buf_free(&win.buf);
    return rc == OD_NOTFOUND ? not_found(err) : rc;
}

/* ---------------- iterator ---------------- */

struct od_sst_iter {
    od_sst *t;
    uint32_t bi;       /* current block */
    blkref ref;
    od_blk_iter bit;
    od_buf key;        /* current key (reconstructed) */
    rawwin win;        /* raw bytes of the current block (or readahead window) */
};

int od_sst_iter_new(od_sst *t, od_sst_iter **out, od_err *err)
{
    od_sst_iter *it = calloc(1, sizeof *it);
    if (!it) return od_err_set(err, OD_NOMEM, "sst %s: out of memory (iterator)", t->name);
    it->t = t;
    it->bi = t->nblocks;
    *out = it;
    return OD_OK;
}

void od_sst_iter_free(od_sst_iter *it)
{
    if (!it) return;
    blk_release(it->t, &it->ref);
    od_buf_free(&it->key);
    od_buf_free(&it->win.buf);
    free(it);
}

/* Drop the current block and load block i (unpositioned inside it). */
static int iter_load(od_sst_iter *it, uint32_t i, od_err *err)
{
    blk_release(it->t, &it->ref);
    it->bit.valid = 0;
    it->bi = i;
    if (i >= it->t->nblocks) return OD_OK;
    od_blk b;
    int rc = blk_load(it->t, i, &it->ref, &b, &it->win, err);
    if (rc) {
        it->bi = it->t->nblocks;
        return rc;
    }
    od_blki_init(&it->bit, &b, &it->key);
    return OD_OK;
}

static int iter_fail(od_sst_iter *it, int rc, const char *why, od_err *err)
{
    uint32_t i = it->bi;
    it->bit.valid = 0;
    blk_release(it->t, &it->ref);
    it->bi = it->t->nblocks;
    return blk_err(it->t, i, rc, why, err);
}

/* While unpositioned inside the current block, move to the first entry of the next one. */
static int iter_skip_empty(od_sst_iter *it, od_err *err)
{
    const char *why = NULL;
    while (!it->bit.valid && it->bi < it->t->nblocks) {
        int rc = iter_load(it, it->bi + 1, err);
        if (rc) return rc;
        if (it->bi >= it->t->nblocks) break;
        if ((rc = od_blki_first(&it->bit, &why))) return iter_fail(it, rc, why, err);
    }
    return OD_OK;
}

int od_sst_iter_first(od_sst_iter *it, od_err *err)
{
    const char *why = NULL;
    int rc = iter_load(it, 0, err);
    if (rc || it->bi >= it->t->nblocks) return rc;
    if ((rc = od_blki_first(&it->bit, &why))) return iter_fail(it, rc, why, err);
    return iter_skip_empty(it, err);
}

int od_sst_iter_seek(od_sst_iter *it, const void *key, size_t klen, od_err *err)
{
    const char *why = NULL;
    uint32_t i = ix_search(it->t, key, klen, UINT64_MAX);
    int rc = iter_load(it, i, err);
    if (rc || it->bi >= it->t->nblocks) return rc;
    if ((rc = od_blki_seek(&it->bit, key, klen, UINT64_MAX, &why))) return iter_fail(it, rc, why, err);
    return iter_skip_empty(it, err);
}

int od_sst_iter_next(od_sst_iter *it, od_err *err)
{
    if (!it->bit.valid) return OD_OK;
    const char *why = NULL;
    int rc = od_blki_next(&it->bit, &why);
    if (rc) return iter_fail(it, rc, why, err);
    return iter_skip_empty(it, err);
}

void od_sst_iter_set_readahead(od_sst_iter *it, size_t bytes) { it->win.ra = bytes; }

int od_sst_iter_valid(const od_sst_iter *it) { return it->bit.valid; }

const od_entry *od_sst_iter_entry(const od_sst_iter *it) { return it->bit.valid ? &it->bit.e : NULL; }
