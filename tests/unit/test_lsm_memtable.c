/*
 * test_lsm_memtable.c — the memtable's batch insert (od_mt_add_batch) against the one-by-one
 * path (od_mt_add): random batches with duplicate keys, shared prefixes and empty keys must
 * give exactly the same entry sequence (key asc, seq desc, later op of a batch first).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/memtable.h"

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void check_same(od_memtable *a, od_memtable *b)
{
    assert_int_equal(od_mt_count(a), od_mt_count(b));
    od_mt_iter ia, ib;
    od_mt_iter_init(&ia, a);
    od_mt_iter_init(&ib, b);
    od_mt_iter_first(&ia);
    od_mt_iter_first(&ib);
    while (od_mt_iter_valid(&ia)) {
        assert_true(od_mt_iter_valid(&ib));
        od_entry x, y;
        od_mt_iter_entry(&ia, &x);
        od_mt_iter_entry(&ib, &y);
        assert_int_equal(x.klen, y.klen);
        if (x.klen) assert_memory_equal(x.key, y.key, x.klen);
        assert_int_equal(x.seq, y.seq);
        assert_int_equal(x.kind, y.kind);
        assert_int_equal(x.vlen, y.vlen);
        if (x.vlen) assert_memory_equal(x.val, y.val, x.vlen);
        od_mt_iter_next(&ia);
        od_mt_iter_next(&ib);
    }
    assert_false(od_mt_iter_valid(&ib));
}

static void test_batch_equals_one_by_one(void **state)
{
    (void)state;
    const char *prefixes[] = {"", "a", "event/key/with/a/long/common/prefix/"};
    for (int round = 0; round < 3; round++) {
        od_memtable *a = od_mt_new(), *b = od_mt_new();
        assert_non_null(a);
        assert_non_null(b);
        static char keys[600][64];
        static char vals[600][16];
        od_mt_op ops[600];
        for (uint64_t seq = 1; seq <= 60; seq++) {
            size_t n = (size_t)(rnd() % 600) + 1;
            if (seq % 7 == 0) n = 1;
            int ascending = seq % 5 == 0;
            for (size_t i = 0; i < n; i++) {
                /* few distinct keys: many duplicates inside a batch and across batches */
                uint64_t k = ascending ? i : rnd() % (round == 0 ? 50 : 5000);
                int kl = snprintf(keys[i], sizeof keys[i], "%s%llu", prefixes[round], (unsigned long long)k);
                if (k == 7) kl = 0; /* the empty key */
                int vl = snprintf(vals[i], sizeof vals[i], "%llu.%zu", (unsigned long long)seq, i);
                ops[i] = (od_mt_op){.key = (uint8_t *)keys[i], .klen = (uint32_t)kl, .val = (uint8_t *)vals[i],
                                    .vlen = (uint32_t)vl, .kind = (uint8_t)(rnd() % 5 == 0 ? OD_KIND_DEL : OD_KIND_PUT)};
            }
            for (size_t i = 0; i < n; i++)
                assert_int_equal(od_mt_add(a, ops[i].key, ops[i].klen, seq, ops[i].kind, 0, ops[i].val, ops[i].vlen), 0);
            assert_int_equal(od_mt_add_batch(b, ops, n, seq), 0);
        }
        check_same(a, b);
        /* a lookup finds the batch's last write of a key */
        od_entry e;
        if (od_mt_get(a, (const uint8_t *)"", 0, UINT64_MAX, &e)) {
            od_entry f;
            assert_true(od_mt_get(b, (const uint8_t *)"", 0, UINT64_MAX, &f));
            assert_int_equal(e.vlen, f.vlen);
            assert_memory_equal(e.val, f.val, e.vlen);
        }
        od_mt_unref(a);
        od_mt_unref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_one_by_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
