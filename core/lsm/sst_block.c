/*
 * sst_block.c — data-block builder and reader, block framing, and od_entry_cmp (see
 * sst_block.h for the byte layout).
 *
 * Owns: a builder owns its entry buffer and restart array; a reader (od_blk / od_blk_iter)
 * owns nothing but points into a block's content and into a caller-supplied key buffer, so
 * iterating a block never allocates once that buffer has grown to the longest key.
 *
 * How it works. Decoding is defensive: every varint and every length is checked against the
 * end of the entry region before use, shared prefixes are checked against the previous key,
 * restart offsets against the region, so corrupt content yields OD_CORRUPT, never an
 * out-of-bounds read. Block CRCs are checked by od_blk_unframe before content reaches here.
 */
#include "sst_block.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "../util/od_coding.h"
#include "../util/od_crc32c.h"
#include "../util/od_err.h"

int od_entry_cmp(const uint8_t *ka, size_t kal, uint64_t seqa, const uint8_t *kb, size_t kbl, uint64_t seqb)
{
    size_t n = kal < kbl ? kal : kbl;
    int c = n ? memcmp(ka, kb, n) : 0;
    if (c) return c < 0 ? -1 : 1;
    if (kal != kbl) return kal < kbl ? -1 : 1;
    if (seqa != seqb) return seqa > seqb ? -1 : 1;
    return 0;
}

/* ---------------- builder ---------------- */

void od_blkb_init(od_blk_builder *b) { memset(b, 0, sizeof *b); }

void od_blkb_free(od_blk_builder *b)
{
    od_buf_free(&b->buf);
    free(b->restarts);
    memset(b, 0, sizeof *b);
}

void od_blkb_reset(od_blk_builder *b)
{
    od_buf_reset(&b->buf);
    b->nrestarts = 0;
    b->nentries = 0;
    b->counter = 0;
}

int od_blkb_add(od_blk_builder *b, const uint8_t *prev, size_t prevlen, const od_entry *e)
{
    size_t shared = 0;
    if (b->nentries == 0 || b->counter >= OD_BLK_RESTART_INTERVAL) {
        if (b->nrestarts == b->caprestarts) {
            size_t nc = b->caprestarts ? b->caprestarts * 2 : 16;
            uint32_t *r = realloc(b->restarts, nc * sizeof *r);
            if (!r) return OD_NOMEM;
            b->restarts = r;
            b->caprestarts = nc;
        }
        b->restarts[b->nrestarts++] = (uint32_t)b->buf.len;
        b->counter = 0;
    } else {
        size_t n = prevlen < e->klen ? prevlen : e->klen;
        while (shared < n && prev[shared] == e->key[shared]) shared++;
    }
    size_t unshared = e->klen - shared;
    if (od_buf_reserve(&b->buf, 5 * 10 + 1 + unshared + e->vlen)) return OD_NOMEM;
    uint8_t *p = b->buf.data + b->buf.len;
    p += od_varint_put(p, shared);
    p += od_varint_put(p, unshared);
    p += od_varint_put(p, e->vlen);
    p += od_varint_put(p, e->seq);
    *p++ = (uint8_t)(e->kind | (e->expire_ms ? OD_BLK_FLAG_EXPIRE : 0));
    if (e->expire_ms) p += od_varint_put(p, od_zigzag(e->expire_ms));
    if (unshared) memcpy(p, e->key + shared, unshared);
    p += unshared;
    if (e->vlen) memcpy(p, e->val, e->vlen);
    p += e->vlen;
    b->buf.len = (size_t)(p - b->buf.data);
    b->nentries++;
    b->counter++;
    return OD_OK;
}

size_t od_blkb_estimate(const od_blk_builder *b) { return b->buf.len + 4 * b->nrestarts + 4; }

int od_blkb_finish(od_blk_builder *b)
{
    if (od_buf_reserve(&b->buf, 4 * b->nrestarts + 4)) return OD_NOMEM;
    uint8_t *p = b->buf.data + b->buf.len;
    for (size_t i = 0; i < b->nrestarts; i++, p += 4) od_put_u32(p, b->restarts[i]);
    od_put_u32(p, (uint32_t)b->nrestarts);
    b->buf.len += 4 * b->nrestarts + 4;
    return OD_OK;
}

/* ---------------- framing ---------------- */

static int put_trailer(od_buf *out, size_t payload_start, uint8_t tag)
{
    if (od_buf_reserve(out, OD_BLK_TRAILER)) return OD_NOMEM;
    out->data[out->len++] = tag;
    uint32_t crc = od_crc32c(out->data + payload_start, out->len - payload_start);
    od_put_u32(out->data + out->len, od_crc32c_mask(crc));
    out->len += 4;
    return OD_OK;
}

int od_blk_frame(const uint8_t *raw, size_t len, int compress, od_buf *out, od_buf *scratch)
{
    size_t start = out->len;
    if (compress && len >= 64 && len <= (size_t)LZ4_MAX_INPUT_SIZE) {
        int bound = LZ4_compressBound((int)len);
        od_buf_reset(scratch);
        if (od_buf_reserve(scratch, (size_t)bound)) return OD_NOMEM;
        int c = LZ4_compress_default((const char *)raw, (char *)scratch->data, (int)len, bound);
        if (c > 0 && od_varint_len(len) + (size_t)c <= len - len / 8) {
            if (od_buf_put_varint(out, len) || od_buf_append(out, scratch->data, (size_t)c)) return OD_NOMEM;
            return put_trailer(out, start, OD_BLK_TAG_LZ4);
        }
    }
    if (od_buf_append(out, raw, len)) return OD_NOMEM;
    return put_trailer(out, start, OD_BLK_TAG_NONE);
}

int od_blk_unframe(const uint8_t *stored, size_t len, const uint8_t **content, size_t *clen, uint8_t **owned,
                   const char **why)
{
    *owned = NULL;
    if (len < OD_BLK_TRAILER) {
        *why = "block shorter than its trailer";
        return OD_CORRUPT;
    }
    size_t plen = len - OD_BLK_TRAILER;
    uint8_t tag = stored[plen];
    uint32_t want = od_crc32c_unmask(od_get_u32(stored + plen + 1));
    if (od_crc32c(stored, plen + 1) != want) {
        *why = "checksum mismatch";
        return OD_CORRUPT;
    }
    if (tag == OD_BLK_TAG_NONE) {
        *content = stored;
        *clen = plen;
        return OD_OK;
    }
    if (tag != OD_BLK_TAG_LZ4) {
        *why = "unknown compression tag";
        return OD_CORRUPT;
    }
    od_rd r = od_rd_make(stored, plen);
    uint64_t raw = od_rd_varint(&r);
    size_t csize = od_rd_left(&r);
    /* LZ4 cannot expand by more than 255x; anything claiming more is corrupt (and would make
     * us allocate an absurd buffer). */
    if (!r.ok || raw == 0 || raw > (uint64_t)LZ4_MAX_INPUT_SIZE || raw > (uint64_t)csize * 255 + 16) {
        *why = "bad uncompressed length";
        return OD_CORRUPT;
    }
    uint8_t *dst = malloc((size_t)raw);
    if (!dst) return OD_NOMEM;
    int n = LZ4_decompress_safe((const char *)r.p, (char *)dst, (int)csize, (int)raw);
    if (n < 0 || (uint64_t)n != raw) {
        free(dst);
        *why = "LZ4 decompression failed";
        return OD_CORRUPT;
    }
    *content = dst;
    *clen = (size_t)raw;
    *owned = dst;
    return OD_OK;
}

/* ---------------- reader ---------------- */

int od_blk_parse(od_blk *b, const uint8_t *content, size_t len, const char **why)
{
    if (len < 8) {
        *why = "block too short";
        return OD_CORRUPT;
    }
    uint32_t n = od_get_u32(content + len - 4);
    if (n == 0 || (uint64_t)n * 4 + 4 >= len) {
        *why = "bad restart count";
        return OD_CORRUPT;
    }
    b->len = len - 4 - (size_t)n * 4;
    b->data = content;
    b->restarts = content + b->len;
    b->nrestarts = n;
    if (od_get_u32(b->restarts) != 0) {
        *why = "first restart is not at offset 0";
        return OD_CORRUPT;
    }
    return OD_OK;
}

static inline const uint8_t *getv(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    if (p < end && *p < 0x80) {
        *v = *p;
        return p + 1;
    }
    if (end - p >= 2 && p[1] < 0x80) { /* two bytes: sequence numbers, lengths ≥ 128 */
        *v = (uint64_t)(p[0] & 0x7f) | ((uint64_t)p[1] << 7);
        return p + 2;
    }
    uint64_t r = 0;
    for (int s = 0; s < 64 && p < end; s += 7) {
        uint8_t c = *p++;
        r |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80)) {
            *v = r;
            return p;
        }
    }
    return NULL;
}

/* Header of the entry at `off`; on success *kp points at the unshared key bytes. */
typedef struct ehdr {
    uint64_t shared, unshared, vlen, seq;
    int64_t expire;
    uint8_t kind;
    const uint8_t *kp;
    const uint8_t *vp;
    size_t end;  /* offset after the entry */
} ehdr;

static int decode_hdr(const od_blk *b, size_t off, ehdr *h, const char **why)
{
    if (off >= b->len) goto bad; /* before forming the pointer: a bad offset may be huge */
    const uint8_t *p = b->data + off, *end = b->data + b->len;
    if (!(p = getv(p, end, &h->shared)) || !(p = getv(p, end, &h->unshared)) || !(p = getv(p, end, &h->vlen)) ||
        !(p = getv(p, end, &h->seq)) || p >= end)
        goto bad;
    uint8_t flags = *p++;
    h->kind = flags & 3;
    if ((flags & ~7) || (h->kind != OD_KIND_PUT && h->kind != OD_KIND_DEL)) {
        *why = "bad entry flags";
        return OD_CORRUPT;
    }
    h->expire = 0;
    if (flags & OD_BLK_FLAG_EXPIRE) {
        uint64_t z;
        if (!(p = getv(p, end, &z))) goto bad;
        h->expire = od_unzigzag(z);
    }
    size_t left = (size_t)(end - p);
    if (h->unshared > left || h->vlen > left - h->unshared) goto bad;
    h->kp = p;
    h->vp = p + h->unshared;
    h->end = (size_t)(h->vp + h->vlen - b->data);
    return OD_OK;
bad:
    *why = "entry overruns its block";
    return OD_CORRUPT;
}

void od_blki_init(od_blk_iter *it, const od_blk *b, od_buf *keybuf)
{
    it->blk = *b;
    it->key = keybuf;
    it->cur = it->next = 0;
    it->valid = 0;
    memset(&it->e, 0, sizeof it->e);
}

/* Decode the entry at `off`, extending it->key (which holds the previous key). */
static int load_at(od_blk_iter *it, size_t off, const char **why)
{
    ehdr h;
    int rc = decode_hdr(&it->blk, off, &h, why);
    if (rc) {
        it->valid = 0;
        return rc;
    }
    if (h.shared > it->key->len) {
        it->valid = 0;
        *why = "shared key prefix longer than the previous key";
        return OD_CORRUPT;
    }
    it->key->len = (size_t)h.shared;
    /* reserve ≥ 1 so that even an empty key has a non-NULL pointer (memcmp/memcpy safe) */
    if (od_buf_reserve(it->key, (size_t)h.unshared + 1) || od_buf_append(it->key, h.kp, (size_t)h.unshared)) {
        it->valid = 0;
        return OD_NOMEM;
    }
    it->cur = off;
    it->next = h.end;
    it->valid = 1;
    it->e.key = it->key->data;
    it->e.klen = it->key->len;
    it->e.seq = h.seq;
    it->e.kind = h.kind;
    it->e.expire_ms = h.expire;
    it->e.val = h.vp;
    it->e.vlen = (size_t)h.vlen;
    return OD_OK;
}

int od_blki_first(od_blk_iter *it, const char **why)
{
    it->key->len = 0;
    return load_at(it, 0, why);
}

int od_blki_next(od_blk_iter *it, const char **why)
{
    if (!it->valid) return OD_OK;
    if (it->next >= it->blk.len) {
        it->valid = 0;
        return OD_OK;
    }
    return load_at(it, it->next, why);
}

/* The restart entry r's first bytes, on their way into the cache (bounds-checked: a corrupt
 * offset is reported by decode_hdr, not touched here). */
static inline void prefetch_restart(const od_blk *b, uint32_t r)
{
    if (r < b->nrestarts) {
        uint32_t off = od_get_u32(b->restarts + 4 * (size_t)r);
        if (off < b->len) __builtin_prefetch(b->data + off);
    }
}

/* The last restart point whose entry is < (key, seq) (0 if none): a binary search over the
 * restart entries. OD_OK / OD_CORRUPT. The lines of the entries from there to the next
 * restart point, which the caller scans in order, are prefetched together. */
static int restart_search(const od_blk *b, const uint8_t *key, size_t klen, uint64_t seq, uint32_t *out,
                          const char **why)
{
    uint32_t left = 0, right = b->nrestarts - 1;
    while (left < right) {
        uint32_t mid = left + (right - left + 1) / 2;
        /* the next probe is one of two entries: fetch both while this one is compared (each
         * probe is otherwise a cache miss waiting for the previous one) */
        prefetch_restart(b, left + (mid - left) / 2);
        prefetch_restart(b, mid + (right - mid + 1) / 2);
        uint32_t off = od_get_u32(b->restarts + 4 * (size_t)mid);
        ehdr h;
        int rc = decode_hdr(b, off, &h, why);
        if (rc) return rc;
        if (h.shared != 0) {
            *why = "restart entry with a shared prefix";
            return OD_CORRUPT;
        }
        if (od_entry_cmp(h.kp, (size_t)h.unshared, h.seq, key, klen, seq) < 0)
            left = mid;
        else
            right = mid - 1;
    }
    uint32_t start = od_get_u32(b->restarts + 4 * (size_t)left);
    size_t end = left + 1 < b->nrestarts ? od_get_u32(b->restarts + 4 * (size_t)left + 4) : b->len;
    if (end > b->len) end = b->len;
    if (end > (size_t)start + 4096) end = (size_t)start + 4096;
    for (size_t p = start; p < end; p += 64) __builtin_prefetch(b->data + p);
    *out = start;
    return OD_OK;
}

int od_blk_get(const od_blk *b, const uint8_t *key, size_t klen, uint64_t seq, od_entry *out, int *found,
               const char **why)
{
    *found = -1;
    uint32_t start;
    int rc = restart_search(b, key, klen, seq, &start, why);
    if (rc) return rc;
    /* Scan in order. m = how many leading bytes the previous key shares with `key` (that key
     * was smaller, or equal with a too-new seq). An entry sharing more than m bytes with the
     * previous key is smaller than `key` too (it differs from `key` where the previous one
     * did, the same way); otherwise its first `shared` bytes are key's and only its unshared
     * bytes need comparing. No key is rebuilt. */
    size_t m = 0, plen = 0;
    for (size_t off = start; off < b->len;) {
        ehdr h;
        if ((rc = decode_hdr(b, off, &h, why))) return rc;
        if (h.shared > plen) { /* also: the first entry, a restart point, shares nothing */
            *why = "shared key prefix longer than the previous key";
            return OD_CORRUPT;
        }
        int c = -1;
        if (h.shared <= m) {
            size_t s = (size_t)h.shared, u = (size_t)h.unshared, tl = klen - s, n = u < tl ? u : tl, i = 0;
            const uint8_t *t = key + s;
            while (i < n && h.kp[i] == t[i]) i++;
            m = s + i;
            if (i < n)
                c = h.kp[i] < t[i] ? -1 : 1;
            else
                c = u < tl ? -1 : u > tl ? 1 : 0;
        }
        plen = (size_t)(h.shared + h.unshared);
        if (c > 0) {
            *found = 0;
            return OD_OK;
        }
        if (c == 0 && h.seq <= seq) {
            out->key = key;
            out->klen = klen;
            out->seq = h.seq;
            out->kind = h.kind;
            out->expire_ms = h.expire;
            out->val = h.vp;
            out->vlen = (size_t)h.vlen;
            *found = 1;
            return OD_OK;
        }
        off = h.end;
    }
    return OD_OK;
}

int od_blki_seek(od_blk_iter *it, const uint8_t *key, size_t klen, uint64_t seq, const char **why)
{
    uint32_t start;
    int rc = restart_search(&it->blk, key, klen, seq, &start, why);
    if (rc) {
        it->valid = 0;
        return rc;
    }
    it->key->len = 0;
    rc = load_at(it, start, why);
    while (rc == OD_OK && it->valid && od_entry_cmp(it->e.key, it->e.klen, it->e.seq, key, klen, seq) < 0)
        rc = od_blki_next(it, why);
    return rc;
}
