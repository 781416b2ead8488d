/*
 * test_sst_blkget.c — od_blk_get (the point-lookup scan of a data block, which compares keys
 * without rebuilding them) against od_blki_seek (the iterator's seek, which rebuilds every
 * key): random blocks whose keys share long prefixes, with several versions per key, probed
 * with present and absent keys at random read sequences; plus corrupt shared-prefix lengths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/sst_block.h"

static uint64_t rs = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

typedef struct ent {
    uint8_t key[12];
    size_t klen;
    uint64_t seq;
} ent;

static int ent_cmp(const void *x, const void *y)
{
    const ent *a = x, *b = y;
    return od_entry_cmp(a->key, a->klen, a->seq, b->key, b->klen, b->seq);
}

static void random_key(uint8_t *k, size_t *kl)
{
    static const uint8_t alpha[4] = {0x00, 'a', 'b', 0xff};
    *kl = (size_t)(rnd() % 12);
    for (size_t i = 0; i < *kl; i++) k[i] = alpha[rnd() % (i < 6 ? 2 : 4)]; /* long shared prefixes */
}

static void test_get_matches_seek(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + (size_t)(rnd() % 200);
        ent *es = calloc(n, sizeof *es);
        assert_non_null(es);
        for (size_t i = 0; i < n; i++) {
            if (i && rnd() % 3 == 0) { /* another version of the previous key */
                es[i] = es[i - 1];
                es[i].seq = 1 + rnd() % 50;
            } else {
                random_key(es[i].key, &es[i].klen);
                es[i].seq = 1 + rnd() % 50;
            }
        }
        qsort(es, n, sizeof *es, ent_cmp);
        od_blk_builder bb;
        od_blkb_init(&bb);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (kept && ent_cmp(&es[kept - 1], &es[i]) == 0) continue; /* exact duplicates */
            es[kept++] = es[i];
        }
        char val[32];
        for (size_t i = 0; i < kept; i++) {
            int vl = snprintf(val, sizeof val, "v%zu", i);
            od_entry e = {.key = es[i].key, .klen = es[i].klen, .seq = es[i].seq, .kind = OD_KIND_PUT,
                          .val = (const uint8_t *)val, .vlen = (size_t)vl};
            assert_int_equal(od_blkb_add(&bb, i ? es[i - 1].key : NULL, i ? es[i - 1].klen : 0, &e), OD_OK);
        }
        assert_int_equal(od_blkb_finish(&bb), OD_OK);
        od_blk b;
        const char *why = NULL;
        assert_int_equal(od_blk_parse(&b, bb.buf.data, bb.buf.len, &why), OD_OK);
        od_buf kb = {0};
        for (int probe = 0; probe < 100; probe++) {
            uint8_t k[12];
            size_t kl;
            if (probe % 2) {
                const ent *p = &es[rnd() % kept];
                memcpy(k, p->key, p->klen);
                kl = p->klen;
            } else {
                random_key(k, &kl);
            }
            uint64_t seq = rnd() % 55;
            /* reference: the first entry ≥ (k, seq), found iff its key is k */
            od_blk_iter it;
            od_blki_init(&it, &b, &kb);
            assert_int_equal(od_blki_seek(&it, k, kl, seq, &why), OD_OK);
            int want = !it.valid ? -1 : (it.e.klen == kl && (kl == 0 || memcmp(it.e.key, k, kl) == 0)) ? 1 : 0;
            od_entry got;
            int found = 7;
            assert_int_equal(od_blk_get(&b, k, kl, seq, &got, &found, &why), OD_OK);
            assert_int_equal(found, want);
            if (found == 1) {
                assert_int_equal(got.seq, it.e.seq);
                assert_int_equal(got.vlen, it.e.vlen);
                assert_memory_equal(got.val, it.e.val, got.vlen);
                assert_true(got.key == k);
            }
        }
        od_buf_free(&kb);
        od_blkb_free(&bb);
        free(es);
    }
}

/* A shared-prefix length longer than the previous key is corruption, not a wrong answer. */
static void test_corrupt_shared(void **state)
{
    (void)state;
    od_blk_builder bb;
    od_blkb_init(&bb);
    od_entry e1 = {.key = (const uint8_t *)"ab", .klen = 2, .seq = 1, .kind = OD_KIND_PUT,
                   .val = (const uint8_t *)"x", .vlen = 1};
    od_entry e2 = {.key = (const uint8_t *)"abc", .klen = 3, .seq = 1, .kind = OD_KIND_PUT,
                   .val = (const uint8_t *)"y", .vlen = 1};
    assert_int_equal(od_blkb_add(&bb, NULL, 0, &e1), OD_OK);
    assert_int_equal(od_blkb_add(&bb, e1.key, e1.klen, &e2), OD_OK);
    assert_int_equal(od_blkb_finish(&bb), OD_OK);
    /* entry 2 starts after entry 1 (5 header bytes + "ab" + "x" = 8): its shared (2) → 9 */
    assert_int_equal(bb.buf.data[8], 2);
    bb.buf.data[8] = 9;
    od_blk b;
    const char *why = NULL;
    assert_int_equal(od_blk_parse(&b, bb.buf.data, bb.buf.len, &why), OD_OK);
    od_entry got;
    int found;
    why = NULL;
    assert_int_equal(od_blk_get(&b, (const uint8_t *)"abd", 3, 5, &got, &found, &why), OD_CORRUPT);
    assert_non_null(why);
    od_blkb_free(&bb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_matches_seek),
        cmocka_unit_test(test_corrupt_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
