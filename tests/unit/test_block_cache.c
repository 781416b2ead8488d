/*
 * test_block_cache.c — unit tests of the shared block cache (core/lsm/block_cache.c):
 * byte capacity, LRU order, reference counts that keep evicted blocks valid, duplicate
 * inserts, hit/miss counters, and concurrent lookups/inserts from several threads.
 * OD_TEST_SCALE (default 1) scales the iteration counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "lsm/od_sst.h"
#include "od_testutil.h"

/* A block whose bytes are a function of (id, off, i), so any mix-up is visible. */
static uint8_t pattern(uint64_t id, uint64_t off, size_t i) { return (uint8_t)(id * 31 + off * 7 + i * 13 + (i >> 8)); }

static uint8_t *make_block(uint64_t id, uint64_t off, size_t len)
{
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) p[i] = pattern(id, off, i);
    return p;
}

static int block_ok(const od_cblock *b, uint64_t id, uint64_t off, size_t len)
{
    if (b->len != len) return 0;
    for (size_t i = 0; i < len; i++)
        if (b->data[i] != pattern(id, off, i)) return 0;
    return 1;
}

static void test_capacity(void **state)
{
    (void)state;
    size_t cap = 256 * 1024;
    od_block_cache *c = od_block_cache_new(cap);
    assert_non_null(c);
    size_t bytes;
    for (uint64_t off = 0; off < 2000; off++) {
        od_cblock *b = od_block_cache_insert(c, 1, off * 1000, make_block(1, off * 1000, 1000), 1000);
        assert_non_null(b);
        assert_true(block_ok(b, 1, off * 1000, 1000));
        od_block_cache_release(c, b);
        od_block_cache_stats(c, NULL, NULL, &bytes);
        assert_true(bytes <= cap);
    }
    /* full: at least half the budget is in use, and most early blocks are gone */
    assert_true(bytes >= cap / 2);
    int present = 0;
    for (uint64_t off = 0; off < 2000; off++) {
        od_cblock *b = od_block_cache_lookup(c, 1, off * 1000);
        if (b) {
            assert_true(block_ok(b, 1, off * 1000, 1000));
            present++;
            od_block_cache_release(c, b);
        }
    }
    assert_true(present > 0 && (size_t)present * 1000 <= cap);
    od_block_cache_free(c);
}

static void test_lru(void **state)
{
    (void)state;
    od_block_cache *c = od_block_cache_new(16 * 8 * 4096);
    assert_non_null(c);
    /* a hot block looked up after every insert survives; the cold early ones are evicted */
    od_cblock *b = od_block_cache_insert(c, 9, 0, make_block(9, 0, 4000), 4000);
    assert_non_null(b);
    od_block_cache_release(c, b);
    for (uint64_t off = 1; off <= 2000; off++) {
        b = od_block_cache_insert(c, 9, off, make_block(9, off, 4000), 4000);
        assert_non_null(b);
        od_block_cache_release(c, b);
        b = od_block_cache_lookup(c, 9, 0);
        assert_non_null(b);
        assert_true(block_ok(b, 9, 0, 4000));
        od_block_cache_release(c, b);
    }
    int early = 0;
    for (uint64_t off = 1; off <= 100; off++) {
        b = od_block_cache_lookup(c, 9, off);
        if (b) {
            early++;
            od_block_cache_release(c, b);
        }
    }
    assert_int_equal(early, 0);
    /* the most recent inserts are (mostly) present */
    int late = 0;
    for (uint64_t off = 1991; off <= 2000; off++) {
        b = od_block_cache_lookup(c, 9, off);
        if (b) {
            late++;
            od_block_cache_release(c, b);
        }
    }
    assert_true(late >= 8);
    od_block_cache_free(c);
}

static void test_refcount_keeps_evicted(void **state)
{
    (void)state;
    od_block_cache *c = od_block_cache_new(64 * 1024);
    assert_non_null(c);
    od_cblock *held = od_block_cache_insert(c, 3, 42, make_block(3, 42, 2000), 2000);
    assert_non_null(held);
    for (uint64_t off = 100; off < 1100; off++) {
        od_cblock *b = od_block_cache_insert(c, 3, off, make_block(3, off, 2000), 2000);
        assert_non_null(b);
        od_block_cache_release(c, b);
    }
    /* evicted from the table... */
    assert_null(od_block_cache_lookup(c, 3, 42));
    /* ...but still intact for its holder (ASan would flag a use after free) */
    assert_true(block_ok(held, 3, 42, 2000));
    od_block_cache_release(c, held);
    /* a block bigger than the whole cache is returned valid, and not kept */
    od_cblock *huge = od_block_cache_insert(c, 3, 7, make_block(3, 7, 100000), 100000);
    assert_non_null(huge);
    assert_true(block_ok(huge, 3, 7, 100000));
    assert_null(od_block_cache_lookup(c, 3, 7));
    od_block_cache_release(c, huge);
    /* capacity 0: nothing is kept, everything still works */
    od_block_cache *z = od_block_cache_new(0);
    assert_non_null(z);
    od_cblock *b = od_block_cache_insert(z, 1, 1, make_block(1, 1, 10), 10);
    assert_non_null(b);
    assert_true(block_ok(b, 1, 1, 10));
    od_block_cache_release(z, b);
    assert_null(od_block_cache_lookup(z, 1, 1));
    od_block_cache_free(z);
    od_block_cache_free(c);
}

static void test_duplicates_and_stats(void **state)
{
    (void)state;
    od_block_cache *c = od_block_cache_new(1 << 20);
    assert_non_null(c);
    uint64_t h, m;
    size_t bytes;
    assert_null(od_block_cache_lookup(c, 5, 0));
    od_cblock *a = od_block_cache_insert(c, 5, 0, make_block(5, 0, 100), 100);
    assert_non_null(a);
    /* a second insert of the same (id, off) returns the first block; the new bytes are freed */
    od_cblock *b = od_block_cache_insert(c, 5, 0, make_block(6, 6, 100), 100);
    assert_ptr_equal(a, b);
    assert_true(block_ok(b, 5, 0, 100));
    /* same offset, another table id: a different block */
    od_cblock *d = od_block_cache_insert(c, 6, 0, make_block(6, 0, 50), 50);
    assert_ptr_not_equal(a, d);
    assert_true(block_ok(d, 6, 0, 50));
    od_cblock *l = od_block_cache_lookup(c, 5, 0);
    assert_ptr_equal(l, a);
    od_block_cache_stats(c, &h, &m, &bytes);
    assert_int_equal(h, 1);
    assert_int_equal(m, 1);
    assert_true(bytes >= 150 && bytes < 150 + 1024);
    od_block_cache_release(c, a);
    od_block_cache_release(c, b);
    od_block_cache_release(c, d);
    od_block_cache_release(c, l);
    od_block_cache_release(c, NULL);
    od_block_cache_free(c);
}

typedef struct targ {
    od_block_cache *c;
    uint64_t seed;
    size_t ops;
    uint64_t lookups, bad;
} targ;

static void *worker(void *p)
{
    targ *a = p;
    uint64_t x = a->seed;
    for (size_t i = 0; i < a->ops; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t id = x % 3, off = (x >> 8) % 1500;
        size_t len = 64 + (size_t)(off % 7) * 300;
        a->lookups++;
        od_cblock *b = od_block_cache_lookup(a->c, id, off);
        if (!b) b = od_block_cache_insert(a->c, id, off, make_block(id, off, len), len);
        if (!b || !block_ok(b, id, off, len)) a->bad++;
        if (b) od_block_cache_release(a->c, b);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    size_t cap = 512 * 1024;
    od_block_cache *c = od_block_cache_new(cap);
    assert_non_null(c);
    enum { NT = 4 };
    pthread_t th[NT];
    targ a[NT];
    size_t ops = (size_t)(200000 * od_test_scale());
    for (int i = 0; i < NT; i++) {
        a[i] = (targ){c, 0x1234567ull * (uint64_t)(i + 1), ops, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &a[i]), 0);
    }
    uint64_t total = 0;
    for (int i = 0; i < NT; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(a[i].bad, 0);
        total += a[i].lookups;
    }
    uint64_t h, m;
    size_t bytes;
    od_block_cache_stats(c, &h, &m, &bytes);
    assert_int_equal(h + m, total);
    assert_true(h > 0 && m > 0);
    assert_true(bytes <= cap);
    od_block_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_lru),
        cmocka_unit_test(test_refcount_keeps_evicted),
        cmocka_unit_test(test_duplicates_and_stats),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests_name("block_cache", tests, NULL, NULL);
}
