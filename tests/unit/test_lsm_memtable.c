/*
 * test_lsm_memtable.c — the memtable's batch insert (od_mt_add_batch) against the one-by-one
 * path (od_mt_add): random batches with duplicate keys, shared prefixes and empty keys must
 * give exactly the same entry sequence (key asc, seq desc, later op of a batch first).
 *
 * The node layout keeps an 8-byte big-endian key prefix in the node and in each link, so
 * keys whose prefixes tie (common prefixes, keys shorter than 8 bytes, zero bytes that look
 * like the zero padding) get their own rounds, a large memtable exercises the sliding window
 * of searches and tall nodes, a reader thread checks that it only ever sees complete nodes in
 * order while a writer inserts batches (the writer waits for one more scan every 10 batches,
 * so the two overlap on any machine), and the fault hook (od_mt_test_fail_after) shows that
 * a failed insert leaves a consistent prefix of the batch.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/memtable.h"
#include "od_testutil.h"

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
        assert_int_equal(x.expire_ms, y.expire_ms);
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
                                    .vlen = (uint32_t)vl, .kind = (uint8_t)(rnd() % 5 == 0 ? OD_KIND_DEL : OD_KIND_PUT),
                                    .expire_ms = rnd() % 3 == 0 ? (int64_t)(rnd() % 100000) : 0};
            }
            for (size_t i = 0; i < n; i++)
                assert_int_equal(od_mt_add(a, ops[i].key, ops[i].klen, seq, ops[i].kind, ops[i].expire_ms, ops[i].val,
                                            ops[i].vlen), 0);
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

/* Keys of 0..11 bytes over {0x00, 0x01, 0xff}: many keys tie on the zero-padded 8-byte
 * prefix ("a" and "a\0" have the same prefix) and only the full comparison orders them. */
static void test_short_and_zero_byte_keys(void **state)
{
    (void)state;
    static const uint8_t alpha[3] = {0x00, 0x01, 0xff};
    od_memtable *a = od_mt_new(), *b = od_mt_new();
    assert_non_null(a);
    assert_non_null(b);
    static uint8_t keys[400][12];
    od_mt_op ops[400];
    uint8_t val[1] = {'v'};
    for (uint64_t seq = 1; seq <= 40; seq++) {
        size_t n = (size_t)(rnd() % 400) + 1;
        for (size_t i = 0; i < n; i++) {
            size_t kl = (size_t)(rnd() % 12);
            for (size_t j = 0; j < kl; j++) keys[i][j] = alpha[rnd() % 3];
            ops[i] = (od_mt_op){.key = keys[i], .klen = (uint32_t)kl, .val = val, .vlen = 1, .kind = OD_KIND_PUT};
        }
        for (size_t i = 0; i < n; i++)
            assert_int_equal(od_mt_add(a, ops[i].key, ops[i].klen, seq, ops[i].kind, 0, ops[i].val, ops[i].vlen), 0);
        assert_int_equal(od_mt_add_batch(b, ops, n, seq), 0);
    }
    check_same(a, b);
    /* strictly ordered (key asc, seq desc) and every entry found by a point lookup */
    od_mt_iter it;
    od_mt_iter_init(&it, b);
    od_entry prev = {0};
    int first = 1;
    for (od_mt_iter_first(&it); od_mt_iter_valid(&it); od_mt_iter_next(&it)) {
        od_entry e;
        od_mt_iter_entry(&it, &e);
        if (!first) {
            int c = od_key_cmp(prev.key, prev.klen, e.key, e.klen);
            assert_true(c < 0 || (c == 0 && prev.seq >= e.seq));
        }
        od_entry g;
        assert_true(od_mt_get(b, e.key, e.klen, UINT64_MAX, &g));
        assert_int_equal(g.klen, e.klen);
        if (e.klen) assert_memory_equal(g.key, e.key, e.klen);
        prev = e;
        first = 0;
    }
    od_mt_unref(a);
    od_mt_unref(b);
}

/* A memtable of tens of thousands of random keys in batches of 1000 (the write path's shape):
 * many searches in flight at once, nodes of every height. */
static void test_large_random_batches(void **state)
{
    (void)state;
    size_t total = (size_t)(40000 * od_test_scale());
    if (total < 4000) total = 4000;
    od_memtable *a = od_mt_new(), *b = od_mt_new();
    assert_non_null(a);
    assert_non_null(b);
    enum { BS = 1000 };
    static char keys[BS][24];
    static char vals[BS][40];
    od_mt_op ops[BS];
    uint64_t seq = 0;
    for (size_t done = 0; done < total; done += BS) {
        seq++;
        for (size_t i = 0; i < BS; i++) {
            uint64_t k = rnd() % (total * 2); /* some keys repeat across batches */
            int kl = snprintf(keys[i], sizeof keys[i], "%016llx", (unsigned long long)(k * 0x9e3779b97f4a7c15ull));
            int vl = snprintf(vals[i], sizeof vals[i], "%s/%llu", keys[i], (unsigned long long)seq);
            ops[i] = (od_mt_op){.key = (uint8_t *)keys[i], .klen = (uint32_t)kl, .val = (uint8_t *)vals[i],
                                .vlen = (uint32_t)vl, .kind = OD_KIND_PUT};
        }
        for (size_t i = 0; i < BS; i++)
            assert_int_equal(od_mt_add(a, ops[i].key, ops[i].klen, seq, ops[i].kind, 0, ops[i].val, ops[i].vlen), 0);
        assert_int_equal(od_mt_add_batch(b, ops, BS, seq), 0);
        assert_int_equal(od_mt_max_seq(b), seq);
        assert_int_equal(od_mt_min_seq(b), 1);
    }
    assert_int_equal(od_mt_count(b), (seq * BS));
    check_same(a, b);
    /* the newest version of the last batch's keys, and an older snapshot's view */
    for (size_t i = 0; i < BS; i += 37) {
        od_entry e;
        assert_true(od_mt_get(b, ops[i].key, ops[i].klen, UINT64_MAX, &e));
        assert_int_equal(e.seq, seq);
        assert_int_equal(e.vlen, ops[i].vlen);
        assert_memory_equal(e.val, ops[i].val, e.vlen);
        if (od_mt_get(b, ops[i].key, ops[i].klen, seq - 1, &e)) assert_true(e.seq < seq);
    }
    od_mt_unref(a);
    od_mt_unref(b);
}

/* Sorted batches appended past the end of the list (the finger path), with a key repeated
 * inside a batch and, now and then, a sorted batch that starts inside the list instead. */
static void test_append_batches(void **state)
{
    (void)state;
    od_memtable *a = od_mt_new(), *b = od_mt_new();
    assert_non_null(a);
    assert_non_null(b);
    static char keys[300][16];
    od_mt_op ops[300];
    uint8_t v[2] = {'v', 0};
    uint64_t next = 1000;
    for (uint64_t seq = 1; seq <= 50; seq++) {
        size_t n = 2 + (size_t)(rnd() % 298);
        uint64_t k = seq % 7 == 0 ? next / 2 : next; /* every 7th batch starts inside the list */
        for (size_t i = 0; i < n; i++) {
            if (i == 0 || rnd() % 10) k += 1 + rnd() % 3; /* else: the same key again */
            snprintf(keys[i], sizeof keys[i], "%08llu", (unsigned long long)k);
            v[1] = (uint8_t)i;
            ops[i] = (od_mt_op){.key = (uint8_t *)keys[i], .klen = 8, .val = v, .vlen = 2, .kind = OD_KIND_PUT};
        }
        if (k > next) next = k;
        for (size_t i = 0; i < n; i++) {
            v[1] = (uint8_t)i;
            assert_int_equal(od_mt_add(a, ops[i].key, ops[i].klen, seq, ops[i].kind, 0, v, 2), 0);
        }
        /* ops share one value buffer: give each op its own copy for the batch call */
        static uint8_t vals[300][2];
        for (size_t i = 0; i < n; i++) {
            vals[i][0] = 'v';
            vals[i][1] = (uint8_t)i;
            ops[i].val = vals[i];
        }
        assert_int_equal(od_mt_add_batch(b, ops, n, seq), 0);
    }
    check_same(a, b);
    od_mt_unref(a);
    od_mt_unref(b);
}

/* ---- a reader concurrent with the writer: only complete nodes, always in order ---- */

struct rd_ctx {
    od_memtable *m;
    _Atomic int stop;
    _Atomic uint64_t published; /* the writer's last complete batch (like visible_seq) */
    int bad;
    _Atomic uint64_t scans;
};

/* value of (key, seq): the key bytes followed by the seq, so a reader can check a node */
static int mkval(char *v, size_t n, const char *key, uint64_t seq)
{
    return snprintf(v, n, "%s@%llu", key, (unsigned long long)seq);
}

static void *reader_main(void *arg)
{
    struct rd_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        uint64_t vis = atomic_load(&c->published);
        od_mt_iter it;
        od_mt_iter_init(&it, c->m);
        od_entry prev = {0};
        int first = 1;
        uint64_t seen_visible = 0;
        for (od_mt_iter_first(&it); od_mt_iter_valid(&it); od_mt_iter_next(&it)) {
            od_entry e;
            od_mt_iter_entry(&it, &e);
            char want[64];
            char k[32];
            if (e.klen >= sizeof k) {
                c->bad = 1;
                break;
            }
            memcpy(k, e.key, e.klen);
            k[e.klen] = 0;
            int wl = mkval(want, sizeof want, k, e.seq);
            if (e.vlen != (size_t)wl || memcmp(e.val, want, (size_t)wl) != 0) c->bad = 1; /* incomplete node */
            if (!first) {
                int cmp = od_key_cmp(prev.key, prev.klen, e.key, e.klen);
                if (cmp > 0 || (cmp == 0 && prev.seq < e.seq)) c->bad = 1;
            }
            if (e.seq <= vis) seen_visible++;
            prev = e;
            first = 0;
        }
        /* everything published before the scan began is there */
        if (seen_visible < vis * 200) c->bad = 1;
        atomic_fetch_add(&c->scans, 1);
    }
    return NULL;
}

static void test_concurrent_reader(void **state)
{
    (void)state;
    struct rd_ctx c = {.m = od_mt_new()};
    assert_non_null(c.m);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &c), 0);
    enum { BS = 200 };
    static char keys[BS][24];
    static char vals[BS][64];
    od_mt_op ops[BS];
    uint64_t batches = (uint64_t)(150 * od_test_scale());
    if (batches < 30) batches = 30;
    /* every 10 batches the writer lets the reader finish one more scan, so scans really run
     * beside the growing memtable however the two threads are scheduled (30 s deadline) */
    int64_t deadline = od_test_mono_ms() + 30000;
    uint64_t scans_seen = 0;
    for (uint64_t seq = 1; seq <= batches; seq++) {
        if (seq % 10 == 1) {
            while (atomic_load(&c.scans) <= scans_seen && od_test_mono_ms() < deadline) od_test_sleep_ms(1);
            scans_seen = atomic_load(&c.scans);
        }
        for (size_t i = 0; i < BS; i++) {
            /* distinct keys per batch, in random order, sharing prefixes with other batches */
            int kl = snprintf(keys[i], sizeof keys[i], "k%04llu%06llu", (unsigned long long)(rnd() % 10000),
                              (unsigned long long)(seq * BS + i));
            int vl = mkval(vals[i], sizeof vals[i], keys[i], seq);
            ops[i] = (od_mt_op){.key = (uint8_t *)keys[i], .klen = (uint32_t)kl, .val = (uint8_t *)vals[i],
                                .vlen = (uint32_t)vl, .kind = OD_KIND_PUT};
        }
        assert_int_equal(od_mt_add_batch(c.m, ops, BS, seq), 0);
        atomic_store(&c.published, seq);
    }
    atomic_store(&c.stop, 1);
    pthread_join(th, NULL);
    assert_int_equal(c.bad, 0);
    assert_true(atomic_load(&c.scans) >= (batches + 9) / 10); /* the waits above did not time out */
    assert_int_equal(od_mt_count(c.m), batches * BS);
    od_mt_unref(c.m);
}

static int cmp_key16(const void *x, const void *y)
{
    return strcmp(x, y);
}

/* The fault hook: the n-th insert fails with OD_NOMEM; the entries before it are in, in order,
 * and the memtable keeps working once the hook is off. */
static void test_fail_after(void **state)
{
    (void)state;
    od_memtable *m = od_mt_new();
    assert_non_null(m);
    static char keys[300][16];
    od_mt_op ops[300];
    uint8_t v[3] = {1, 2, 3};
    for (size_t i = 0; i < 300; i++) {
        int kl = snprintf(keys[i], sizeof keys[i], "%08llx", (unsigned long long)(rnd() & 0xffffffffu));
        ops[i] = (od_mt_op){.key = (uint8_t *)keys[i], .klen = (uint32_t)kl, .val = v, .vlen = 3, .kind = OD_KIND_PUT};
    }
    od_mt_test_fail_after(m, 120);
    assert_int_equal(od_mt_add_batch(m, ops, 300, 1), OD_NOMEM);
    assert_int_equal(od_mt_count(m), 119);
    od_mt_test_fail_after(m, 1);
    assert_int_equal(od_mt_add(m, ops[0].key, ops[0].klen, 2, OD_KIND_PUT, 0, v, 3), OD_NOMEM);
    assert_int_equal(od_mt_count(m), 119);
    od_mt_test_fail_after(m, 0);
    assert_int_equal(od_mt_add_batch(m, ops, 300, 3), OD_OK);
    assert_int_equal(od_mt_count(m), 419);
    /* in order; the failed batch's entries (seq 1) are the 119 smallest of its keys */
    char sorted[300][16];
    memcpy(sorted, keys, sizeof sorted);
    qsort(sorted, 300, sizeof sorted[0], cmp_key16);
    od_mt_iter it;
    od_mt_iter_init(&it, m);
    size_t n1 = 0, n3 = 0;
    od_entry prev = {0};
    int first = 1;
    for (od_mt_iter_first(&it); od_mt_iter_valid(&it); od_mt_iter_next(&it)) {
        od_entry e;
        od_mt_iter_entry(&it, &e);
        if (!first) {
            int c = od_key_cmp(prev.key, prev.klen, e.key, e.klen);
            assert_true(c < 0 || (c == 0 && prev.seq > e.seq));
        }
        if (e.seq == 1) {
            assert_true(n1 < 119);
            assert_int_equal(e.klen, strlen(sorted[n1]));
            assert_memory_equal(e.key, sorted[n1], e.klen);
            n1++;
        } else {
            n3++;
        }
        prev = e;
        first = 0;
    }
    assert_int_equal(n1, 119);
    assert_int_equal(n3, 300);
    od_mt_unref(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_one_by_one),
        cmocka_unit_test(test_short_and_zero_byte_keys),
        cmocka_unit_test(test_large_random_batches),
        cmocka_unit_test(test_append_batches),
        cmocka_unit_test(test_concurrent_reader),
        cmocka_unit_test(test_fail_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
