/*
 * test_sst.c — unit tests of the SST builder/reader, block layer and bloom filter
 * (core/lsm/sst_*.c, bloom.c).
 *
 * Owns nothing beyond each test. How it works: random entry sets (several versions per key,
 * tombstones, expiries, empty and larger-than-a-block values, binary keys with 0x00/0xff) are
 * kept in a sorted in-memory model, written with the builder, and read back through every
 * reader path (in-memory, range-read callback, with and without a block cache); every
 * observation is compared against the model. Corruption tests flip every byte and truncate at
 * every length of small tables and require OD_CORRUPT, never wrong data.
 * OD_TEST_SCALE (default 1) scales the iteration counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "lsm/bloom.h"
#include "util/od_coding.h"
#include "util/od_crc32c.h"
#include "lsm/od_db.h"
#include "lsm/od_sst.h"
#include "od_testutil.h"

static size_t scaled(size_t n, size_t min)
{
    size_t v = (size_t)((double)n * od_test_scale());
    return v < min ? min : v;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static uint64_t rndn(uint64_t n) { return n ? rnd() % n : 0; }

/* ---------------- the model ---------------- */

typedef struct ment {
    uint8_t *key;
    size_t klen;
    uint64_t seq;
    uint8_t kind;
    int64_t exp;
    uint8_t *val;
    size_t vlen;
} ment;

typedef struct model {
    ment *e;
    size_t n;
} model;

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

static int ment_key_cmp(const void *a, const void *b)
{
    const ment *x = a, *y = b;
    return key_cmp(x->key, x->klen, y->key, y->klen);
}

static const uint8_t alphabet[] = {0x00, 0x01, 'a', 'b', 'k', 0x7f, 0x80, 0xfe, 0xff};

static void rand_key(uint8_t *k, size_t *klen, size_t maxlen)
{
    size_t n = rndn(maxlen + 1);
    for (size_t i = 0; i < n; i++) k[i] = rndn(4) ? alphabet[rndn(sizeof alphabet)] : (uint8_t)rnd();
    *klen = n;
}

/* nkeys distinct keys (sorted), 1..4 versions each, seq descending within a key. */
static void model_gen(model *m, size_t nkeys, size_t big_value)
{
    ment *keys = calloc(nkeys, sizeof *keys);
    assert_non_null(keys);
    size_t nk = 0;
    for (size_t i = 0; i < nkeys; i++) {
        uint8_t k[48];
        size_t kl;
        rand_key(k, &kl, 40);
        keys[nk].key = malloc(kl ? kl : 1);
        assert_non_null(keys[nk].key);
        memcpy(keys[nk].key, k, kl);
        keys[nk].klen = kl;
        nk++;
    }
    qsort(keys, nk, sizeof *keys, ment_key_cmp);
    size_t u = 0;
    for (size_t i = 0; i < nk; i++) {
        if (u && ment_key_cmp(&keys[u - 1], &keys[i]) == 0) {
            free(keys[i].key);
            continue;
        }
        keys[u++] = keys[i];
    }
    m->e = calloc(u * 4, sizeof *m->e);
    assert_non_null(m->e);
    m->n = 0;
    for (size_t i = 0; i < u; i++) {
        int nv = 1 + (int)rndn(4);
        uint64_t seq = 1000000 + rndn(1000000);
        for (int v = 0; v < nv; v++) {
            ment *e = &m->e[m->n++];
            e->key = malloc(keys[i].klen ? keys[i].klen : 1);
            assert_non_null(e->key);
            memcpy(e->key, keys[i].key, keys[i].klen);
            e->klen = keys[i].klen;
            e->seq = seq;
            seq -= 1 + rndn(1000);
            e->kind = rndn(100) < 15 ? OD_KIND_DEL : OD_KIND_PUT;
            e->exp = rndn(100) < 20 ? (int64_t)(rnd() >> 20) * (rndn(10) ? 1 : -1) : 0;
            size_t vl = 0;
            if (e->kind == OD_KIND_PUT) {
                uint64_t r = rndn(1000);
                vl = r < 100 ? 0 : r < 110 && big_value ? big_value + rndn(big_value) : rndn(200);
            }
            e->val = malloc(vl ? vl : 1);
            assert_non_null(e->val);
            /* half the values compressible, so both block tags occur */
            int comp = (i / 8) % 2;
            for (size_t j = 0; j < vl; j++) e->val[j] = comp ? (uint8_t)('a' + (j % 7)) : (uint8_t)rnd();
            e->vlen = vl;
        }
    }
    for (size_t i = 0; i < u; i++) free(keys[i].key);
    free(keys);
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
        free(m->e[i].val);
    }
    free(m->e);
    m->e = NULL;
    m->n = 0;
}

static od_entry as_entry(const ment *m)
{
    od_entry e = {m->key, m->klen, m->seq, m->kind, m->exp, m->val, m->vlen};
    return e;
}

static void build(const model *m, const od_sst_opts *o, od_buf *out, od_sst_props *props)
{
    od_sst_builder *b;
    od_err err;
    assert_int_equal(od_sst_builder_new(o, &b, &err), OD_OK);
    for (size_t i = 0; i < m->n; i++) {
        od_entry e = as_entry(&m->e[i]);
        int rc = od_sst_builder_add(b, &e, &err);
        if (rc) fail_msg("add %zu: %s", i, err.msg);
    }
    assert_int_equal(od_sst_builder_entries(b), m->n);
    size_t est = od_sst_builder_size(b);
    int rc = od_sst_builder_finish(b, out, props, &err);
    if (rc) fail_msg("finish: %s", err.msg);
    /* the running size estimate must be in the right ballpark (used to split outputs) */
    assert_true(est + 64 >= out->len / 2 && est <= out->len * 2 + 4096);
    od_sst_builder_free(b);
}

/* Index of the first model entry ≥ (key, seq). */
static size_t model_lower(const model *m, const uint8_t *k, size_t kl, uint64_t seq)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (od_entry_cmp(m->e[mid].key, m->e[mid].klen, m->e[mid].seq, k, kl, seq) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void assert_entry_eq(const od_entry *e, const ment *m)
{
    assert_int_equal(e->klen, m->klen);
    if (m->klen) assert_memory_equal(e->key, m->key, m->klen);
    assert_int_equal(e->seq, m->seq);
    assert_int_equal(e->kind, m->kind);
    assert_int_equal(e->expire_ms, m->exp);
    assert_int_equal(e->vlen, m->vlen);
    if (m->vlen) assert_memory_equal(e->val, m->val, m->vlen);
}

/* ---------------- range-read source ---------------- */

typedef struct src {
    const uint8_t *data;
    size_t size;
    int reads;
    uint64_t bytes;
} src;

static int src_read(void *ctx, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    src *s = ctx;
    __atomic_fetch_add(&s->reads, 1, __ATOMIC_RELAXED); /* called from several threads */
    out->len = 0;
    if (off > s->size) return od_err_set(err, OD_BADREQ, "read past end");
    size_t n = off + len > s->size ? s->size - off : len;
    __atomic_fetch_add(&s->bytes, n, __ATOMIC_RELAXED);
    if (od_buf_append(out, s->data + off, n)) return od_err_set(err, OD_NOMEM, "nomem");
    return OD_OK;
}

/* ---------------- checks against the model ---------------- */

static void check_scan(od_sst *t, const model *m)
{
    od_sst_iter *it;
    od_err err;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    assert_false(od_sst_iter_valid(it));
    assert_int_equal(od_sst_iter_first(it, &err), OD_OK);
    size_t i = 0;
    for (; od_sst_iter_valid(it); i++) {
        assert_true(i < m->n);
        assert_entry_eq(od_sst_iter_entry(it), &m->e[i]);
        int rc = od_sst_iter_next(it, &err);
        if (rc) fail_msg("next: %s", err.msg);
    }
    assert_int_equal(i, m->n);
    od_sst_iter_free(it);
}

static void check_gets(od_sst *t, const model *m, size_t step)
{
    od_buf hold = {0};
    od_err err;
    od_entry e;
    for (size_t i = 0; i < m->n; i += step) {
        const ment *x = &m->e[i];
        uint64_t probes[4] = {UINT64_MAX, x->seq, x->seq - 1, x->seq + 1};
        for (int p = 0; p < 4; p++) {
            size_t j = model_lower(m, x->key, x->klen, probes[p]);
            int want = j < m->n && key_cmp(m->e[j].key, m->e[j].klen, x->key, x->klen) == 0;
            int rc = od_sst_get(t, x->key, x->klen, probes[p], &e, &hold, &err);
            if (want) {
                if (rc) fail_msg("get entry %zu max_seq %llu: %s", i, (unsigned long long)probes[p], err.msg);
                assert_entry_eq(&e, &m->e[j]);
                assert_true(e.seq <= probes[p]);
            } else {
                assert_int_equal(rc, OD_NOTFOUND);
            }
        }
        assert_true(od_sst_may_contain(t, x->key, x->klen)); /* no false negatives */
    }
    /* absent keys */
    for (size_t i = 0; i < m->n / step + 10; i++) {
        uint8_t k[48];
        size_t kl;
        rand_key(k, &kl, 44);
        size_t j = model_lower(m, k, kl, UINT64_MAX);
        if (j < m->n && key_cmp(m->e[j].key, m->e[j].klen, k, kl) == 0) continue;
        assert_int_equal(od_sst_get(t, k, kl, UINT64_MAX, &e, &hold, &err), OD_NOTFOUND);
    }
    od_buf_free(&hold);
}

static void check_seeks(od_sst *t, const model *m, size_t n)
{
    od_sst_iter *it;
    od_err err;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    for (size_t q = 0; q < n; q++) {
        uint8_t k[64];
        size_t kl;
        uint64_t r = rndn(4);
        if (r == 0 && m->n) { /* an existing key */
            const ment *x = &m->e[rndn(m->n)];
            memcpy(k, x->key, x->klen);
            kl = x->klen;
        } else if (r == 1) { /* after the last key */
            memset(k, 0xff, 50);
            kl = 50;
        } else if (r == 2 && m->n) { /* an existing key extended: lands between keys */
            const ment *x = &m->e[rndn(m->n)];
            memcpy(k, x->key, x->klen);
            k[x->klen] = (uint8_t)rnd();
            kl = x->klen + 1;
        } else {
            rand_key(k, &kl, 40);
        }
        int rc = od_sst_iter_seek(it, k, kl, &err);
        if (rc) fail_msg("seek: %s", err.msg);
        size_t j = model_lower(m, k, kl, UINT64_MAX);
        for (int s = 0; s < 5; s++, j++) {
            if (j >= m->n) {
                assert_false(od_sst_iter_valid(it));
                break;
            }
            assert_true(od_sst_iter_valid(it));
            assert_entry_eq(od_sst_iter_entry(it), &m->e[j]);
            assert_int_equal(od_sst_iter_next(it, &err), OD_OK);
        }
    }
    od_sst_iter_free(it);
}

static void check_props(od_sst *t, const model *m, size_t size)
{
    const od_sst_props *p = od_sst_get_props(t);
    uint64_t tomb = 0, kb = 0, vb = 0, mins = UINT64_MAX, maxs = 0;
    for (size_t i = 0; i < m->n; i++) {
        tomb += m->e[i].kind == OD_KIND_DEL;
        kb += m->e[i].klen;
        vb += m->e[i].vlen;
        if (m->e[i].seq < mins) mins = m->e[i].seq;
        if (m->e[i].seq > maxs) maxs = m->e[i].seq;
    }
    assert_int_equal(p->entries, m->n);
    assert_int_equal(p->tombstones, tomb);
    assert_int_equal(p->raw_key_bytes, kb);
    assert_int_equal(p->raw_value_bytes, vb);
    assert_int_equal(p->file_bytes, size);
    if (m->n) {
        assert_int_equal(p->min_seq, mins);
        assert_int_equal(p->max_seq, maxs);
        assert_int_equal(p->min_key.len, m->e[0].klen);
        assert_int_equal(p->max_key.len, m->e[m->n - 1].klen);
        if (p->min_key.len) assert_memory_equal(p->min_key.data, m->e[0].key, p->min_key.len);
        if (p->max_key.len) assert_memory_equal(p->max_key.data, m->e[m->n - 1].key, p->max_key.len);
    }
}

/* ---------------- tests ---------------- */

static void test_roundtrip_random(void **state)
{
    (void)state;
    static const size_t bsizes[] = {256, 1024, 4096, 16384};
    size_t iters = scaled(8, 3);
    od_block_cache *cache = od_block_cache_new(8u << 20);
    assert_non_null(cache);
    for (size_t it = 0; it < iters; it++) {
        rng_state = 0x1234567ull + it * 7919;
        model m;
        model_gen(&m, scaled(2000, 300), it % 2 ? 20000 : 0);
        od_sst_opts o;
        od_sst_opts_init(&o);
        o.block_size = bsizes[it % 4];
        o.compress = (it / 2) % 2 == 0;
        o.bloom_bits_per_key = it % 3 == 2 ? 0 : 10;
        od_buf obj = {0};
        od_sst_props bp;
        build(&m, &o, &obj, &bp);
        assert_int_equal(bp.entries, m.n);
        assert_int_equal(bp.file_bytes, obj.len);
        assert_true(bp.data_blocks >= 1);
        od_sst_props_free(&bp);

        od_err err;
        od_sst *t;
        /* in memory, no cache */
        int rc = od_sst_open_mem("t.sst", obj.data, obj.len, NULL, 0, &t, &err);
        if (rc) fail_msg("open_mem: %s", err.msg);
        check_props(t, &m, obj.len);
        check_scan(t, &m);
        check_gets(t, &m, 3);
        check_seeks(t, &m, 200);
        od_sst_close(t);
        /* through the range-read callback, with the shared cache */
        src s = {obj.data, obj.len, 0, 0};
        rc = od_sst_open("t2.sst", obj.len, src_read, &s, it % 2 ? cache : NULL, 100 + it, &t, &err);
        if (rc) fail_msg("open: %s", err.msg);
        assert_true(s.reads >= 1 && s.reads <= 2);
        check_scan(t, &m);
        check_gets(t, &m, 5);
        check_seeks(t, &m, 100);
        od_sst_close(t);
        /* a cache far smaller than the table: blocks are evicted while iterators hold them */
        od_block_cache *tiny = od_block_cache_new(4096);
        assert_non_null(tiny);
        rc = od_sst_open_mem("t3.sst", obj.data, obj.len, tiny, 1, &t, &err);
        if (rc) fail_msg("open_mem tiny cache: %s", err.msg);
        check_scan(t, &m);
        check_seeks(t, &m, 50);
        od_sst_close(t);
        od_block_cache_free(tiny);
        od_buf_free(&obj);
        model_free(&m);
    }
    od_block_cache_free(cache);
}

/* Readahead: a scan fetches many blocks per read, returns the same entries, and leaves the
 * cache alone; gets still fill it. */
static void test_readahead(void **state)
{
    (void)state;
    rng_state = 8080;
    model m;
    model_gen(&m, scaled(20000, 5000), 3000);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 4096;
    od_buf obj = {0};
    od_sst_props p;
    build(&m, &o, &obj, &p);
    od_block_cache *cache = od_block_cache_new(64u << 20);
    assert_non_null(cache);
    src s = {obj.data, obj.len, 0, 0};
    od_sst *t;
    od_err err;
    assert_int_equal(od_sst_open("ra.sst", obj.len, src_read, &s, cache, 5, &t, &err), OD_OK);
    size_t ra = 64 * 1024;
    for (int pass = 0; pass < 2; pass++) {
        int before = s.reads;
        od_sst_iter *it;
        assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
        od_sst_iter_set_readahead(it, ra);
        assert_int_equal(od_sst_iter_first(it, &err), OD_OK);
        size_t i = 0;
        for (; od_sst_iter_valid(it); i++) {
            assert_entry_eq(od_sst_iter_entry(it), &m.e[i]);
            assert_int_equal(od_sst_iter_next(it, &err), OD_OK);
        }
        assert_int_equal(i, m.n);
        od_sst_iter_free(it);
        int reads = s.reads - before;
        /* each read covers ~ra bytes (blocks larger than ra get a read of their own) */
        assert_true(reads >= 1);
        assert_true((uint64_t)reads < p.data_blocks / 4);
        assert_true((uint64_t)reads <= obj.len / (ra / 2) + p.data_blocks / 10 + 2);
        size_t cached;
        od_block_cache_stats(cache, NULL, NULL, &cached);
        assert_int_equal(cached, 0);
    }
    /* seeks with readahead land on the right entries */
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    od_sst_iter_set_readahead(it, ra);
    for (size_t q = 0; q < 50; q++) {
        size_t j = rndn(m.n);
        assert_int_equal(od_sst_iter_seek(it, m.e[j].key, m.e[j].klen, &err), OD_OK);
        assert_entry_eq(od_sst_iter_entry(it), &m.e[model_lower(&m, m.e[j].key, m.e[j].klen, UINT64_MAX)]);
    }
    od_sst_iter_free(it);
    od_sst_close(t);
    od_sst_props_free(&p);
    od_block_cache_free(cache);
    od_buf_free(&obj);
    model_free(&m);
}

static void small_model(model *m, uint64_t seed);

/* Open + scan + gets of a table whose content is damaged but whose CRCs were recomputed: the
 * structural checks alone must keep the reader safe (no crash, no out-of-bounds read under
 * ASan): every call returns OD_OK or OD_CORRUPT. */
static void must_be_safe(const uint8_t *data, size_t size, const model *m)
{
    od_err err;
    od_sst *t;
    int rc = od_sst_open_mem("fz.sst", data, size, NULL, 0, &t, &err);
    if (rc) {
        assert_true(rc == OD_CORRUPT || rc == OD_UNSUPPORTED);
        return;
    }
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    size_t steps = 0;
    rc = od_sst_iter_first(it, &err);
    while (rc == OD_OK && od_sst_iter_valid(it) && steps++ < 4 * m->n + 100) {
        const od_entry *e = od_sst_iter_entry(it);
        volatile uint8_t sink = 0;
        if (e->klen) sink ^= e->key[e->klen - 1];
        if (e->vlen) sink ^= e->val[e->vlen - 1];
        (void)sink;
        rc = od_sst_iter_next(it, &err);
    }
    assert_true(rc == OD_OK || rc == OD_CORRUPT);
    for (size_t q = 0; q < 20 && m->n; q++) {
        const ment *x = &m->e[rndn(m->n)];
        rc = od_sst_iter_seek(it, x->key, x->klen, &err);
        assert_true(rc == OD_OK || rc == OD_CORRUPT);
    }
    od_sst_iter_free(it);
    od_buf hold = {0};
    for (size_t j = 0; j < m->n; j += 2) {
        od_entry e;
        rc = od_sst_get(t, m->e[j].key, m->e[j].klen, m->e[j].seq, &e, &hold, &err);
        assert_true(rc == OD_OK || rc == OD_NOTFOUND || rc == OD_CORRUPT);
        if (rc == OD_OK && e.vlen) assert_non_null(e.val);
    }
    od_buf_free(&hold);
    od_sst_close(t);
}

/* Damage bytes inside a framed block at [off, off+size) and re-seal its CRC. */
static void damage_block(uint8_t *p, uint64_t off, uint64_t size)
{
    size_t plen = (size_t)size - 5;
    int n = 1 + (int)rndn(3);
    for (int i = 0; i < n; i++) {
        size_t pos = (size_t)off + rndn(plen + 1); /* payload or the tag */
        uint64_t r = rndn(3);
        p[pos] = r == 0 ? (uint8_t)rnd() : r == 1 ? (uint8_t)(p[pos] ^ (1u << rndn(8))) : (uint8_t)(p[pos] + 1);
    }
    od_put_u32(p + off + plen + 1, od_crc32c_mask(od_crc32c(p + off, plen + 1)));
}

static void test_structural_fuzz(void **state)
{
    (void)state;
    model m;
    small_model(&m, 6060);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 512;
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    /* locate the blocks from the footer and the index (the format of docs/formats.md) */
    const uint8_t *f = obj.data + obj.len - 64;
    uint64_t fo = od_get_u64(f), fs = od_get_u64(f + 8), io = od_get_u64(f + 16), is = od_get_u64(f + 24);
    uint64_t po = od_get_u64(f + 32), ps = od_get_u64(f + 40);
    assert_true(fs > 0 && obj.data[io + is - 5] == 0); /* filter present, index stored uncompressed */
    uint64_t offs[512], sizes[512];
    size_t nb = 0;
    od_rd r = od_rd_make(obj.data + io, (size_t)is - 5);
    uint64_t cnt = od_rd_varint(&r), pos = 0;
    assert_true(cnt >= 4 && cnt < 500);
    for (uint64_t i = 0; i < cnt; i++) {
        size_t kl;
        od_rd_lenbytes(&r, &kl);
        od_rd_varint(&r);
        sizes[nb] = od_rd_varint(&r);
        offs[nb++] = pos;
        pos += sizes[nb - 1];
    }
    assert_true(r.ok);
    assert_int_equal(pos, fo);
    offs[nb] = fo, sizes[nb++] = fs;
    offs[nb] = io, sizes[nb++] = is;
    offs[nb] = po, sizes[nb++] = ps;
    uint8_t *copy = malloc(obj.len);
    assert_non_null(copy);
    size_t iters = scaled(3000, 600);
    for (size_t q = 0; q < iters; q++) {
        memcpy(copy, obj.data, obj.len);
        size_t b = q % 4 == 0 ? nb - 1 - rndn(3) : rndn(nb); /* a quarter on the metadata blocks */
        damage_block(copy, offs[b], sizes[b]);
        if (q % 7 == 0) { /* also damage the footer's offsets and re-seal it */
            uint8_t *ft = copy + obj.len - 64;
            ft[rndn(48)] ^= (uint8_t)(1u << rndn(8));
            od_put_u32(ft + 52, od_crc32c_mask(od_crc32c_extend(od_crc32c(ft, 52), ft + 56, 8)));
        }
        must_be_safe(copy, obj.len, &m);
    }
    free(copy);
    od_buf_free(&obj);
    model_free(&m);
}

typedef struct flaky {
    int calls; /* the first call succeeds, every later one fails */
    src *s;
} flaky;

static int fail_read(void *ctx, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    flaky *f = ctx;
    if (f->calls++ == 0) return src_read(f->s, off, len, out, err);
    return od_err_set(err, OD_TRANSIENT, "injected: store unavailable");
}

/* Errors of the range-read callback reach the caller with their code, not as corruption. */
static void test_read_errors(void **state)
{
    (void)state;
    rng_state = 11;
    model m;
    model_gen(&m, 200, 0);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 512;
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    src s = {obj.data, obj.len, 0, 0};
    flaky ctx = {0, &s};
    od_sst *t;
    od_err err;
    assert_int_equal(od_sst_open("flaky.sst", obj.len, fail_read, &ctx, NULL, 0, &t, &err), OD_OK);
    od_buf hold = {0};
    od_entry e;
    assert_int_equal(od_sst_get(t, m.e[0].key, m.e[0].klen, UINT64_MAX, &e, &hold, &err), OD_TRANSIENT);
    assert_non_null(strstr(err.msg, "flaky.sst"));
    assert_non_null(strstr(err.msg, "injected"));
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    assert_int_equal(od_sst_iter_first(it, &err), OD_TRANSIENT);
    assert_false(od_sst_iter_valid(it));
    od_sst_iter_free(it);
    od_sst_close(t);
    ctx.calls = 1; /* fail the open's own read */
    assert_int_equal(od_sst_open("flaky.sst", obj.len, fail_read, &ctx, NULL, 0, &t, &err), OD_TRANSIENT);
    od_buf_free(&hold);
    od_buf_free(&obj);
    model_free(&m);
}

static void test_visibility(void **state)
{
    (void)state;
    struct {
        const char *k;
        uint64_t seq;
        uint8_t kind;
        const char *v;
    } in[] = {{"a", 5, OD_KIND_PUT, "a5"}, {"k", 10, OD_KIND_PUT, "k10"}, {"k", 7, OD_KIND_DEL, ""},
              {"k", 3, OD_KIND_PUT, "k3"},  {"z", 1, OD_KIND_PUT, ""}};
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 256;
    od_sst_builder *b;
    od_err err;
    assert_int_equal(od_sst_builder_new(&o, &b, &err), OD_OK);
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        od_entry e = {(const uint8_t *)in[i].k, strlen(in[i].k), in[i].seq, in[i].kind, i == 3 ? 12345 : 0,
                      (const uint8_t *)in[i].v, strlen(in[i].v)};
        assert_int_equal(od_sst_builder_add(b, &e, &err), OD_OK);
    }
    od_buf obj = {0};
    assert_int_equal(od_sst_builder_finish(b, &obj, NULL, &err), OD_OK);
    od_sst_builder_free(b);
    od_sst *t;
    assert_int_equal(od_sst_open_mem("vis", obj.data, obj.len, NULL, 0, &t, &err), OD_OK);
    od_buf hold = {0};
    od_entry e;
    assert_int_equal(od_sst_get(t, "k", 1, UINT64_MAX, &e, &hold, &err), OD_OK);
    assert_int_equal(e.seq, 10);
    assert_int_equal(e.vlen, 3);
    assert_memory_equal(e.val, "k10", 3);
    assert_int_equal(od_sst_get(t, "k", 1, 10, &e, &hold, &err), OD_OK);
    assert_int_equal(e.seq, 10);
    assert_int_equal(od_sst_get(t, "k", 1, 9, &e, &hold, &err), OD_OK);
    assert_int_equal(e.seq, 7);
    assert_int_equal(e.kind, OD_KIND_DEL);
    assert_int_equal(e.vlen, 0);
    assert_int_equal(od_sst_get(t, "k", 1, 6, &e, &hold, &err), OD_OK);
    assert_int_equal(e.seq, 3);
    assert_int_equal(e.expire_ms, 12345);
    assert_memory_equal(e.val, "k3", 2);
    assert_int_equal(od_sst_get(t, "k", 1, 2, &e, &hold, &err), OD_NOTFOUND);
    assert_int_equal(err.code, OD_NOTFOUND);
    assert_int_equal(od_sst_get(t, "a", 1, 4, &e, &hold, &err), OD_NOTFOUND);
    assert_int_equal(od_sst_get(t, "z", 1, 1, &e, &hold, &err), OD_OK);
    assert_int_equal(e.vlen, 0);
    assert_int_equal(od_sst_get(t, "j", 1, UINT64_MAX, &e, &hold, &err), OD_NOTFOUND);
    assert_int_equal(od_sst_get(t, "", 0, UINT64_MAX, &e, &hold, &err), OD_NOTFOUND);
    assert_int_equal(od_sst_get(t, "zz", 2, UINT64_MAX, &e, &hold, &err), OD_NOTFOUND);
    /* seek semantics: before first, exact, between, after last */
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    assert_int_equal(od_sst_iter_seek(it, "", 0, &err), OD_OK);
    assert_true(od_sst_iter_valid(it));
    assert_memory_equal(od_sst_iter_entry(it)->key, "a", 1);
    assert_int_equal(od_sst_iter_seek(it, "k", 1, &err), OD_OK);
    assert_int_equal(od_sst_iter_entry(it)->seq, 10);
    assert_int_equal(od_sst_iter_seek(it, "b", 1, &err), OD_OK);
    assert_memory_equal(od_sst_iter_entry(it)->key, "k", 1);
    assert_int_equal(od_sst_iter_entry(it)->seq, 10);
    assert_int_equal(od_sst_iter_next(it, &err), OD_OK);
    assert_int_equal(od_sst_iter_entry(it)->seq, 7);
    assert_int_equal(od_sst_iter_seek(it, "k\x00", 2, &err), OD_OK);
    assert_memory_equal(od_sst_iter_entry(it)->key, "z", 1);
    assert_int_equal(od_sst_iter_seek(it, "z\x00", 2, &err), OD_OK);
    assert_false(od_sst_iter_valid(it));
    assert_null(od_sst_iter_entry(it));
    assert_int_equal(od_sst_iter_next(it, &err), OD_OK); /* next on an exhausted iterator is a no-op */
    assert_false(od_sst_iter_valid(it));
    od_sst_iter_free(it);
    od_buf_free(&hold);
    od_sst_close(t);
    od_buf_free(&obj);
}

static void test_empty_table(void **state)
{
    (void)state;
    od_sst_builder *b;
    od_err err;
    assert_int_equal(od_sst_builder_new(NULL, &b, &err), OD_OK);
    od_buf obj = {0};
    od_sst_props p;
    assert_int_equal(od_sst_builder_finish(b, &obj, &p, &err), OD_OK);
    assert_int_equal(p.entries, 0);
    assert_int_equal(p.data_blocks, 0);
    od_sst_props_free(&p);
    /* a second finish and an add after finish are caller errors */
    assert_int_equal(od_sst_builder_finish(b, &obj, NULL, &err), OD_BADREQ);
    od_entry e = {(const uint8_t *)"a", 1, 1, OD_KIND_PUT, 0, NULL, 0};
    assert_int_equal(od_sst_builder_add(b, &e, &err), OD_BADREQ);
    od_sst_builder_free(b);
    od_sst *t;
    assert_int_equal(od_sst_open_mem("empty", obj.data, obj.len, NULL, 0, &t, &err), OD_OK);
    od_buf hold = {0};
    assert_int_equal(od_sst_get(t, "a", 1, UINT64_MAX, &e, &hold, &err), OD_NOTFOUND);
    assert_false(od_sst_may_contain(t, "a", 1));
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    assert_int_equal(od_sst_iter_first(it, &err), OD_OK);
    assert_false(od_sst_iter_valid(it));
    assert_int_equal(od_sst_iter_seek(it, "", 0, &err), OD_OK);
    assert_false(od_sst_iter_valid(it));
    od_sst_iter_free(it);
    od_sst_close(t);
    od_buf_free(&hold);
    od_buf_free(&obj);
}

static void test_out_of_order(void **state)
{
    (void)state;
    od_sst_builder *b;
    od_err err;
    assert_int_equal(od_sst_builder_new(NULL, &b, &err), OD_OK);
    od_entry e = {(const uint8_t *)"m", 1, 5, OD_KIND_PUT, 0, (const uint8_t *)"v", 1};
    assert_int_equal(od_sst_builder_add(b, &e, &err), OD_OK);
    od_entry same = e; /* same key and seq */
    assert_int_equal(od_sst_builder_add(b, &same, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "out of order"));
    od_entry newer = e; /* same key, higher seq must come first */
    newer.seq = 6;
    assert_int_equal(od_sst_builder_add(b, &newer, &err), OD_BADREQ);
    od_entry smaller = e;
    smaller.key = (const uint8_t *)"a";
    smaller.seq = 1;
    assert_int_equal(od_sst_builder_add(b, &smaller, &err), OD_BADREQ);
    od_entry prefix = e; /* "" < "m" */
    prefix.klen = 0;
    assert_int_equal(od_sst_builder_add(b, &prefix, &err), OD_BADREQ);
    od_entry badkind = e;
    badkind.key = (const uint8_t *)"n";
    badkind.kind = 3;
    assert_int_equal(od_sst_builder_add(b, &badkind, &err), OD_BADREQ);
    od_entry delval = e;
    delval.key = (const uint8_t *)"n";
    delval.kind = OD_KIND_DEL;
    assert_int_equal(od_sst_builder_add(b, &delval, &err), OD_BADREQ);
    /* the valid successors still go in, and the table holds exactly the accepted entries */
    od_entry older = e;
    older.seq = 4;
    assert_int_equal(od_sst_builder_add(b, &older, &err), OD_OK);
    od_entry next = e;
    next.key = (const uint8_t *)"n";
    assert_int_equal(od_sst_builder_add(b, &next, &err), OD_OK);
    assert_int_equal(od_sst_builder_entries(b), 3);
    od_buf obj = {0};
    assert_int_equal(od_sst_builder_finish(b, &obj, NULL, &err), OD_OK);
    od_sst_builder_free(b);
    od_sst *t;
    assert_int_equal(od_sst_open_mem("ooo", obj.data, obj.len, NULL, 0, &t, &err), OD_OK);
    assert_int_equal(od_sst_get_props(t)->entries, 3);
    od_sst_close(t);
    od_buf_free(&obj);
}

static void test_bloom_fp(void **state)
{
    (void)state;
    size_t n = scaled(100000, 20000);
    uint64_t *h = malloc(n * sizeof *h);
    assert_non_null(h);
    char k[32];
    for (size_t i = 0; i < n; i++) h[i] = od_hash64(k, (size_t)snprintf(k, sizeof k, "key-%zu", i));
    od_buf f = {0};
    assert_int_equal(od_bloom_build(h, n, 10, &f), OD_OK);
    assert_int_equal(od_bloom_check(f.data, f.len), OD_OK);
    assert_true(f.len >= n * 10 / 8 && f.len <= n * 10 / 8 + 66);
    for (size_t i = 0; i < n; i++) assert_true(od_bloom_may_contain(f.data, f.len, h[i]));
    size_t fp = 0, probes = n;
    for (size_t i = 0; i < probes; i++) {
        size_t kl = (size_t)snprintf(k, sizeof k, "absent-%zu", i);
        fp += (size_t)od_bloom_may_contain(f.data, f.len, od_hash64(k, kl));
    }
    double rate = (double)fp / (double)probes;
    print_message("bloom: %zu keys, 10 bits/key, false-positive rate %.3f%%\n", n, rate * 100);
    assert_true(rate < 0.02);
    assert_true(rate > 0.0001); /* a filter that says "absent" to everything would be wrong */
    /* fewer bits per key: higher rate (the knob works) */
    od_buf f4 = {0};
    assert_int_equal(od_bloom_build(h, n, 4, &f4), OD_OK);
    size_t fp4 = 0;
    for (size_t i = 0; i < probes; i++) {
        size_t kl = (size_t)snprintf(k, sizeof k, "absent-%zu", i);
        fp4 += (size_t)od_bloom_may_contain(f4.data, f4.len, od_hash64(k, kl));
    }
    assert_true(fp4 > fp * 2);
    /* structural checks */
    assert_int_equal(od_bloom_check(f.data, f.len - 1), OD_CORRUPT);
    f.data[f.len - 2] = 0;
    assert_int_equal(od_bloom_check(f.data, f.len), OD_CORRUPT);
    /* the hash differs on a one-bit change and on length */
    assert_true(od_hash64("abc", 3) != od_hash64("abd", 3));
    assert_true(od_hash64("abc\0", 4) != od_hash64("abc", 3));
    assert_true(od_hash64("", 0) != od_hash64("\0", 1));
    od_buf_free(&f);
    od_buf_free(&f4);
    free(h);
}

static void test_table_bloom(void **state)
{
    (void)state;
    rng_state = 77;
    model m;
    model_gen(&m, scaled(20000, 5000), 0);
    od_sst_opts o;
    od_sst_opts_init(&o);
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    od_sst *t;
    od_err err;
    assert_int_equal(od_sst_open_mem("bl", obj.data, obj.len, NULL, 0, &t, &err), OD_OK);
    size_t fp = 0, probes = 0;
    for (size_t i = 0; i < m.n; i++) assert_true(od_sst_may_contain(t, m.e[i].key, m.e[i].klen));
    for (size_t i = 0; i < 20000; i++) {
        char k[32];
        size_t kl = (size_t)snprintf(k, sizeof k, "zz-absent-%zu", i);
        fp += (size_t)od_sst_may_contain(t, k, kl);
        probes++;
    }
    assert_true((double)fp / (double)probes < 0.02);
    od_sst_close(t);
    od_buf_free(&obj);
    model_free(&m);
}

static void test_open_reads_and_cache(void **state)
{
    (void)state;
    od_err err;
    od_block_cache *cache = od_block_cache_new(64u << 20);
    assert_non_null(cache);
    for (int big = 0; big < 2; big++) {
        rng_state = 4242 + (uint64_t)big;
        model m;
        model_gen(&m, big ? 60000 : 500, 0);
        od_sst_opts o;
        od_sst_opts_init(&o);
        od_buf obj = {0};
        build(&m, &o, &obj, NULL);
        src s = {obj.data, obj.len, 0, 0};
        od_sst *t;
        int rc = od_sst_open("reads.sst", obj.len, src_read, &s, cache, 7 + (uint64_t)big, &t, &err);
        if (rc) fail_msg("open: %s", err.msg);
        /* small table: one ranged read of the tail; big (metadata > 64 KiB): two */
        assert_int_equal(s.reads, big ? 2 : 1);
        assert_int_equal(od_sst_block_reads(t), 0);
        od_buf hold = {0};
        od_entry e;
        size_t idx = m.n / 2;
        int before = s.reads;
        assert_int_equal(od_sst_get(t, m.e[idx].key, m.e[idx].klen, UINT64_MAX, &e, &hold, &err), OD_OK);
        assert_int_equal(s.reads, before + 1);
        assert_int_equal(od_sst_block_reads(t), 1);
        uint64_t h0, m0;
        od_block_cache_stats(cache, &h0, &m0, NULL);
        /* warm: the same block again does no read, and counts a hit */
        assert_int_equal(od_sst_get(t, m.e[idx].key, m.e[idx].klen, UINT64_MAX, &e, &hold, &err), OD_OK);
        assert_entry_eq(&e, &m.e[model_lower(&m, m.e[idx].key, m.e[idx].klen, UINT64_MAX)]);
        assert_int_equal(s.reads, before + 1);
        uint64_t h1, m1;
        od_block_cache_stats(cache, &h1, &m1, NULL);
        assert_int_equal(h1, h0 + 1);
        assert_int_equal(m1, m0);
        /* a full scan reads each data block once; a second scan reads nothing */
        before = s.reads;
        check_scan(t, &m);
        int after1 = s.reads;
        assert_int_equal((uint64_t)(after1 - before), od_sst_get_props(t)->data_blocks - 1);
        check_scan(t, &m);
        assert_int_equal(s.reads, after1);
        od_buf_free(&hold);
        od_sst_close(t);
        od_buf_free(&obj);
        model_free(&m);
    }
    od_block_cache_free(cache);
}

/* Open + scan + gets of a damaged table: every call either gives exactly the model's answer or
 * fails with OD_CORRUPT (message naming the object and an offset). Returns 1 if any call
 * reported corruption. */
static int damaged_ok(const uint8_t *data, size_t size, const model *m, int via_read, size_t get_step)
{
    od_err err;
    od_sst *t;
    src s = {data, size, 0, 0};
    int rc = via_read ? od_sst_open("dmg.sst", size, src_read, &s, NULL, 0, &t, &err)
                      : od_sst_open_mem("dmg.sst", data, size, NULL, 0, &t, &err);
    if (rc) {
        if (rc != OD_CORRUPT) fail_msg("open returned %d: %s", rc, err.msg);
        assert_non_null(strstr(err.msg, "dmg.sst"));
        return 1;
    }
    int detected = 0;
    od_sst_iter *it;
    assert_int_equal(od_sst_iter_new(t, &it, &err), OD_OK);
    if (via_read) od_sst_iter_set_readahead(it, 2048); /* windows of several blocks */
    size_t i = 0;
    rc = od_sst_iter_first(it, &err);
    while (rc == OD_OK && od_sst_iter_valid(it)) {
        assert_true(i < m->n);
        assert_entry_eq(od_sst_iter_entry(it), &m->e[i]);
        i++;
        rc = od_sst_iter_next(it, &err);
    }
    if (rc) {
        assert_int_equal(rc, OD_CORRUPT);
        assert_non_null(strstr(err.msg, "dmg.sst"));
        assert_non_null(strstr(err.msg, "offset"));
        assert_false(od_sst_iter_valid(it));
        detected = 1;
    } else {
        assert_int_equal(i, m->n);
    }
    od_sst_iter_free(it);
    od_buf hold = {0};
    for (size_t j = 0; get_step && j < m->n; j += get_step) {
        od_entry e;
        rc = od_sst_get(t, m->e[j].key, m->e[j].klen, m->e[j].seq, &e, &hold, &err);
        if (rc == OD_OK) {
            assert_entry_eq(&e, &m->e[j]);
        } else {
            assert_int_equal(rc, OD_CORRUPT);
            detected = 1;
        }
    }
    od_buf_free(&hold);
    od_sst_close(t);
    return detected;
}

static void small_model(model *m, uint64_t seed)
{
    rng_state = seed;
    model_gen(m, 40, 0);
}

static void test_corrupt_flip(void **state)
{
    (void)state;
    for (int compress = 0; compress < 2; compress++) {
        model m;
        small_model(&m, 99 + (uint64_t)compress);
        od_sst_opts o;
        od_sst_opts_init(&o);
        o.block_size = 512;
        o.compress = compress;
        od_buf obj = {0};
        build(&m, &o, &obj, NULL);
        assert_int_equal(damaged_ok(obj.data, obj.len, &m, 0, 1), 0); /* intact: no error */
        uint8_t *copy = malloc(obj.len);
        assert_non_null(copy);
        size_t step = od_test_scale() < 1 ? 2 : 1;
        for (size_t pos = compress; pos < obj.len; pos += step) {
            memcpy(copy, obj.data, obj.len);
            copy[pos] ^= (uint8_t)(1u << (pos % 8)) | (pos % 3 == 0 ? 0x80 : 0);
            /* every byte is under some CRC: each flip must be detected */
            if (!damaged_ok(copy, obj.len, &m, (int)(pos % 2), 1)) fail_msg("flip at %zu of %zu undetected", pos, obj.len);
        }
        free(copy);
        od_buf_free(&obj);
        model_free(&m);
    }
}

static void test_corrupt_truncate(void **state)
{
    (void)state;
    model m;
    small_model(&m, 1234);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 512;
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    for (size_t len = 0; len < obj.len; len++) {
        uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan catches any overread */
        assert_non_null(copy);
        memcpy(copy, obj.data, len);
        if (!damaged_ok(copy, len, &m, (int)(len % 2), 1)) fail_msg("truncation to %zu undetected", len);
        free(copy);
    }
    /* extra bytes appended are also detected (the footer is no longer at the end) */
    uint8_t *longer = malloc(obj.len + 3);
    assert_non_null(longer);
    memcpy(longer, obj.data, obj.len);
    memset(longer + obj.len, 0, 3);
    assert_true(damaged_ok(longer, obj.len + 3, &m, 0, 1));
    free(longer);
    od_buf_free(&obj);
    model_free(&m);
}

static void test_big_values(void **state)
{
    (void)state;
    /* values much bigger than a block, compressible and not */
    model m = {0};
    m.e = calloc(6, sizeof *m.e);
    assert_non_null(m.e);
    rng_state = 5;
    for (int i = 0; i < 6; i++) {
        ment *e = &m.e[m.n++];
        e->key = malloc(2);
        assert_non_null(e->key);
        e->key[0] = 'k';
        e->key[1] = (uint8_t)('0' + i);
        e->klen = 2;
        e->seq = 100;
        e->kind = OD_KIND_PUT;
        e->vlen = (size_t)(100000 + 77777 * i);
        e->val = malloc(e->vlen);
        assert_non_null(e->val);
        /* random, runs of 100 equal bytes, and (i = 4) all zeros: LZ4's best ratio */
        for (size_t j = 0; j < e->vlen; j++) e->val[j] = i % 2 ? (uint8_t)rnd() : i == 4 ? 0 : (uint8_t)(j / 100);
    }
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 4096;
    od_buf obj = {0};
    od_sst_props p;
    build(&m, &o, &obj, &p);
    assert_int_equal(p.data_blocks, 6);
    /* the compressible half shrinks the object well below the raw bytes */
    assert_true(obj.len < p.raw_value_bytes);
    od_sst_props_free(&p);
    od_sst *t;
    od_err err;
    od_block_cache *cache = od_block_cache_new(1u << 20); /* smaller than a shard's worth of these */
    assert_non_null(cache);
    assert_int_equal(od_sst_open_mem("big", obj.data, obj.len, cache, 1, &t, &err), OD_OK);
    check_scan(t, &m);
    check_gets(t, &m, 1);
    od_sst_close(t);
    od_block_cache_free(cache);
    od_buf_free(&obj);
    model_free(&m);
}

/* A table whose metadata exceeds the 64 KiB tail read (so open takes the two-read path):
 * a dense sample of flips and truncations, through the range-read callback. */
static void test_corrupt_large(void **state)
{
    (void)state;
    rng_state = 4243;
    model m;
    model_gen(&m, 60000, 0);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 4096;
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    od_err err;
    od_sst *t;
    src s0 = {obj.data, obj.len, 0, 0};
    assert_int_equal(od_sst_open("big", obj.len, src_read, &s0, NULL, 0, &t, &err), OD_OK);
    assert_int_equal(s0.reads, 2);
    od_sst_close(t);
    uint8_t *copy = malloc(obj.len);
    assert_non_null(copy);
    /* every flip anywhere must be detected; data-region flips need a scan, metadata flips
     * must already fail the open. */
    size_t nflip = scaled(150, 40);
    for (size_t q = 0; q < nflip; q++) {
        size_t pos = q % 2 ? obj.len - 1 - rndn(100000) : rndn(obj.len);
        memcpy(copy, obj.data, obj.len);
        copy[pos] ^= (uint8_t)(1 + rndn(255));
        if (!damaged_ok(copy, obj.len, &m, 1, 997)) fail_msg("flip at %zu of %zu undetected", pos, obj.len);
    }
    size_t ntrunc = scaled(100, 25);
    for (size_t q = 0; q < ntrunc; q++) {
        size_t len = q % 2 ? obj.len - 1 - rndn(150000) : rndn(obj.len);
        src s = {obj.data, len, 0, 0};
        int rc = od_sst_open("big", len, src_read, &s, NULL, 0, &t, &err);
        if (rc == OD_OK) fail_msg("truncation to %zu opened", len);
        assert_int_equal(rc, OD_CORRUPT);
        /* the object claims the full size but the store returns fewer bytes: also corrupt */
        src s2 = {obj.data, len, 0, 0};
        rc = od_sst_open("big", obj.len, src_read, &s2, NULL, 0, &t, &err);
        assert_int_not_equal(rc, OD_OK);
    }
    free(copy);
    od_buf_free(&obj);
    model_free(&m);
}

typedef struct garg {
    od_sst *t;
    const model *m;
    uint64_t seed;
    size_t ops, bad;
} garg;

static void *get_worker(void *p)
{
    garg *a = p;
    od_buf hold = {0};
    uint64_t x = a->seed;
    for (size_t i = 0; i < a->ops; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const ment *w = &a->m->e[x % a->m->n];
        od_entry e;
        od_err err;
        if (od_sst_get(a->t, w->key, w->klen, w->seq, &e, &hold, &err) != OD_OK || e.seq != w->seq ||
            e.vlen != w->vlen || (w->vlen && memcmp(e.val, w->val, w->vlen) != 0))
            a->bad++;
    }
    od_buf_free(&hold);
    return NULL;
}

/* One table, one small shared cache (so blocks are evicted while other threads use them),
 * four threads of point gets. */
static void test_concurrent_gets(void **state)
{
    (void)state;
    rng_state = 31337;
    model m;
    model_gen(&m, 5000, 0);
    od_sst_opts o;
    od_sst_opts_init(&o);
    o.block_size = 1024;
    od_buf obj = {0};
    build(&m, &o, &obj, NULL);
    od_block_cache *cache = od_block_cache_new(64 * 1024);
    assert_non_null(cache);
    src s = {obj.data, obj.len, 0, 0};
    od_sst *t;
    od_err err;
    assert_int_equal(od_sst_open("conc.sst", obj.len, src_read, &s, cache, 1, &t, &err), OD_OK);
    enum { NT = 4 };
    pthread_t th[NT];
    garg a[NT];
    for (int i = 0; i < NT; i++) {
        a[i] = (garg){t, &m, 99 + (uint64_t)i * 1000003, scaled(50000, 5000), 0};
        assert_int_equal(pthread_create(&th[i], NULL, get_worker, &a[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(a[i].bad, 0);
    }
    od_sst_close(t);
    od_block_cache_free(cache);
    od_buf_free(&obj);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_visibility),
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_big_values),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_readahead),
        cmocka_unit_test(test_bloom_fp),
        cmocka_unit_test(test_table_bloom),
        cmocka_unit_test(test_open_reads_and_cache),
        cmocka_unit_test(test_corrupt_flip),
        cmocka_unit_test(test_corrupt_truncate),
        cmocka_unit_test(test_corrupt_large),
        cmocka_unit_test(test_structural_fuzz),
        cmocka_unit_test(test_concurrent_gets),
    };
    return cmocka_run_group_tests_name("sst", tests, NULL, NULL);
}
