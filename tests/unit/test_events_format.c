/*
 * test_events_format.c — unit tests of the event store's encodings (es_format.c) and its
 * bounded tail-state LRU (es_lru.c): the key escape preserves order and is prefix-free (so a
 * key's records are contiguous), every encoding round-trips, truncated/corrupt input is
 * rejected, retention rules, and the LRU against a simple model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../core/eventstore/es_int.h"
#include "od_testutil.h"

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t rand_key(uint8_t *k, size_t max)
{
    size_t n = 1 + rnd() % max;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd() % 8;
        k[i] = r == 0 ? 0 : r == 1 ? 0xFF : r == 2 ? 1 : (uint8_t)('a' + rnd() % 3);
    }
    return n;
}

static int bytecmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

static void test_escape_order_and_prefix_free(void **state)
{
    (void)state;
    int iters = (int)(20000 * od_test_scale());
    od_buf a = {0}, b = {0}, dk = {0};
    for (int i = 0; i < iters; i++) {
        uint8_t ka[12], kb[12];
        size_t na = rand_key(ka, sizeof ka), nb = rand_key(kb, sizeof kb);
        uint64_t sa = rnd() % 4 ? rnd() % 100 : rnd(), sb = rnd() % 4 ? rnd() % 100 : rnd();
        assert_int_equal(es_key_rec(&a, ka, na, sa), OD_OK);
        assert_int_equal(es_key_rec(&b, kb, nb, sb), OD_OK);
        /* (key, seq) order must equal the byte order of the encoded keys */
        int want = bytecmp(ka, na, kb, nb);
        if (want == 0) want = sa < sb ? -1 : sa > sb ? 1 : 0;
        assert_int_equal(bytecmp(a.data, a.len, b.data, b.len), want);
        /* round trip */
        uint64_t s;
        od_buf_reset(&dk);
        assert_int_equal(es_rec_key_decode(a.data, a.len, &dk, &s), OD_OK);
        assert_int_equal(s, sa);
        assert_int_equal(dk.len, na);
        assert_memory_equal(dk.data, ka, na);
        /* prefix-free: the record prefix of ka is a prefix of b only if kb == ka */
        od_buf p = {0};
        assert_int_equal(es_key_rec_prefix(&p, ka, na), OD_OK);
        int is_prefix = b.len >= p.len && memcmp(b.data, p.data, p.len) == 0;
        assert_int_equal(is_prefix, na == nb && memcmp(ka, kb, na) == 0);
        od_buf_free(&p);
        /* time index keys: order by (key, ts, seq), signed ts */
        int64_t ta = (int64_t)(rnd() % 2000) - 1000, tb = (int64_t)(rnd() % 2000) - 1000;
        assert_int_equal(es_key_tidx(&a, ka, na, ta, sa), OD_OK);
        assert_int_equal(es_key_tidx(&b, ka, na, tb, sa), OD_OK);
        assert_int_equal(bytecmp(a.data, a.len, b.data, b.len), ta < tb ? -1 : ta > tb ? 1 : 0);
        int64_t t2;
        od_buf_reset(&dk);
        assert_int_equal(es_tidx_key_decode(a.data, a.len, &dk, &t2, &s), OD_OK);
        assert_int_equal(t2, ta);
        assert_int_equal(s, sa);
    }
    od_buf_free(&a);
    od_buf_free(&b);
    od_buf_free(&dk);
}

static void test_escape_corrupt(void **state)
{
    (void)state;
    size_t used;
    const uint8_t bad1[] = {'a', 0x00};        /* truncated escape */
    const uint8_t bad2[] = {'a', 0x00, 0x07};  /* unknown escape */
    const uint8_t bad3[] = {'a', 'b'};         /* no terminator */
    const uint8_t good[] = {'a', 0x00, 0xFF, 0x00, 0x01, 'z'};
    assert_int_equal(es_unesc(bad1, sizeof bad1, NULL, &used), OD_CORRUPT);
    assert_int_equal(es_unesc(bad2, sizeof bad2, NULL, &used), OD_CORRUPT);
    assert_int_equal(es_unesc(bad3, sizeof bad3, NULL, &used), OD_CORRUPT);
    od_buf k = {0};
    assert_int_equal(es_unesc(good, sizeof good, &k, &used), OD_OK);
    assert_int_equal(used, 5);
    assert_int_equal(k.len, 2);
    assert_int_equal(k.data[1], 0);
    od_buf_free(&k);
    uint64_t s;
    const uint8_t rk[] = {'r', 'a', 0x00, 0x01, 1, 2, 3}; /* seq too short */
    assert_int_equal(es_rec_key_decode(rk, sizeof rk, NULL, &s), OD_CORRUPT);
}

static void test_prefix_successor(void **state)
{
    (void)state;
    od_buf b = {0};
    int has;
    assert_int_equal(es_prefix_successor(&b, "ab", 2, &has), OD_OK);
    assert_int_equal(has, 1);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "ac", 2);
    const uint8_t ff[] = {'a', 0xFF, 0xFF};
    assert_int_equal(es_prefix_successor(&b, ff, 3, &has), OD_OK);
    assert_int_equal(has, 1);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 'b');
    const uint8_t allff[] = {0xFF};
    assert_int_equal(es_prefix_successor(&b, allff, 1, &has), OD_OK);
    assert_int_equal(has, 0);
    od_buf_free(&b);
}

static void test_record_roundtrip(void **state)
{
    (void)state;
    int iters = (int)(5000 * od_test_scale());
    od_buf b = {0};
    for (int i = 0; i < iters; i++) {
        uint8_t names[8][6], vals[8][9], value[300];
        od_ev_header h[8];
        size_t nh = rnd() % 9;
        for (size_t j = 0; j < nh; j++) {
            size_t nl = rnd() % 6, vl = rnd() % 9;
            for (size_t q = 0; q < nl; q++) names[j][q] = (uint8_t)rnd();
            for (size_t q = 0; q < vl; q++) vals[j][q] = (uint8_t)rnd();
            h[j] = (od_ev_header){names[j], nl, vals[j], vl};
        }
        size_t vlen = rnd() % sizeof value;
        for (size_t q = 0; q < vlen; q++) value[q] = (uint8_t)rnd();
        int64_t ts = (int64_t)rnd();
        uint8_t flags = (uint8_t)rnd(), iflags = (uint8_t)rnd();
        assert_int_equal(es_rec_encode(&b, ts, iflags, flags, h, nh, value, vlen), OD_OK);
        es_rec r;
        assert_int_equal(es_rec_decode(b.data, b.len, &r), OD_OK);
        assert_true(r.ts == ts);
        assert_int_equal(r.flags, flags);
        assert_int_equal(r.iflags, iflags);
        assert_int_equal(r.nheaders, nh);
        assert_int_equal(r.vlen, vlen);
        if (vlen) assert_memory_equal(r.value, value, vlen);
        assert_int_equal(r.headers_len, es_headers_bytes(h, nh));
        size_t pos = 0, j = 0;
        od_ev_header g;
        while (od_ev_header_next(r.headers, r.headers_len, &pos, &g)) {
            assert_true(j < nh);
            assert_int_equal(g.nlen, h[j].nlen);
            assert_int_equal(g.vlen, h[j].vlen);
            if (g.nlen) assert_memory_equal(g.name, h[j].name, g.nlen);
            if (g.vlen) assert_memory_equal(g.value, h[j].value, g.vlen);
            j++;
        }
        assert_int_equal(j, nh);
        /* every strict truncation that cuts into the header part fails to decode */
        if (nh) {
            size_t cut = (size_t)(r.headers - b.data) + rnd() % r.headers_len;
            assert_int_equal(es_rec_decode(b.data, cut, &r), OD_CORRUPT);
        }
    }
    uint8_t bad = 2;
    es_rec r;
    assert_int_equal(es_rec_decode(&bad, 1, &r), OD_CORRUPT);
    od_buf_free(&b);
}

static void test_meta_and_producer(void **state)
{
    (void)state;
    od_buf b = {0};
    for (int i = 0; i < 2000; i++) {
        es_meta m = {0}, g;
        m.first_seq = rnd() % 1000;
        m.next_seq = m.first_seq + rnd() % 100000;
        m.bytes = rnd();
        m.last_ts = (int64_t)rnd();
        m.created_ms = (int64_t)(rnd() >> 1) - (int64_t)(rnd() >> 2);
        m.ret_age_ms = (int64_t)(rnd() >> 1);
        m.ret_count = rnd() % 3 ? 0 : rnd();
        assert_int_equal(es_meta_encode(&b, &m), OD_OK);
        assert_int_equal(es_meta_decode(b.data, b.len, &g), OD_OK);
        assert_memory_equal(&g, &m, sizeof m);
        assert_int_equal(es_meta_decode(b.data, b.len - 1, &g), OD_CORRUPT);
    }
    es_meta bad = {.first_seq = 5, .next_seq = 3};
    es_meta g;
    assert_int_equal(es_meta_encode(&b, &bad), OD_OK);
    assert_int_equal(es_meta_decode(b.data, b.len, &g), OD_CORRUPT);
    uint64_t ps;
    int64_t up;
    assert_int_equal(es_prod_encode(&b, 77, -5), OD_OK);
    assert_int_equal(es_prod_decode(b.data, b.len, &ps, &up), OD_OK);
    assert_int_equal(ps, 77);
    assert_true(up == -5);
    assert_int_equal(es_prod_decode(b.data, 1, &ps, &up), OD_CORRUPT);
    od_buf_free(&b);
}

static void test_retention_rules(void **state)
{
    (void)state;
    es_meta m = {.first_seq = 3, .next_seq = 10};
    assert_int_equal(es_visible_first(&m, 0), 3);
    assert_int_equal(es_visible_first(&m, 5), 5);
    assert_int_equal(es_visible_first(&m, 20), 3);
    m.ret_count = 2;
    assert_int_equal(es_visible_first(&m, 5), 8);
    assert_int_equal(es_eff_count(&m, 5), 2);
    assert_true(es_eff_age(&m, 1000) == 1000);
    m.ret_age_ms = 50;
    assert_true(es_eff_age(&m, 1000) == 50);
    assert_int_equal(es_age_hidden(100, 50, 200), 1);
    assert_int_equal(es_age_hidden(150, 50, 200), 0);
    assert_int_equal(es_age_hidden(149, 50, 200), 1);
    assert_int_equal(es_age_hidden(0, 0, 1000000), 0);
}

static void test_lru_model(void **state)
{
    (void)state;
    enum { CAP = 64, KEYS = 300 };
    es_lru l;
    assert_int_equal(es_lru_init(&l, CAP, NULL), OD_OK);
    /* model: per key the last value put, and its recency stamp */
    uint64_t val[KEYS] = {0}, stamp[KEYS] = {0}, now = 0;
    int present[KEYS] = {0}; /* in the reference LRU */
    size_t ncached = 0;
    int iters = (int)(50000 * od_test_scale());
    for (int i = 0; i < iters; i++) {
        unsigned k = (unsigned)(rnd() % KEYS);
        char key[16];
        int kl = snprintf(key, sizeof key, "k%u", k);
        es_meta m = {0};
        int ex;
        switch (rnd() % 3) {
        case 0: /* put */
            m.next_seq = rnd();
            assert_int_equal(es_lru_put(&l, key, (size_t)kl, &m, 1, NULL), OD_OK);
            val[k] = m.next_seq;
            if (!present[k]) {
                present[k] = 1;
                ncached++;
            }
            stamp[k] = ++now;
            if (ncached > CAP) { /* the reference evicts the least recently used */
                unsigned victim = KEYS;
                for (unsigned j = 0; j < KEYS; j++)
                    if (present[j] && (victim == KEYS || stamp[j] < stamp[victim])) victim = j;
                present[victim] = 0;
                ncached--;
            }
            break;
        case 1: { /* get: hit exactly when the reference LRU holds the key */
            int hit = es_lru_get(&l, key, (size_t)kl, &m, &ex);
            assert_int_equal(hit, present[k]);
            if (hit) {
                assert_true(m.next_seq == val[k]);
                assert_int_equal(ex, 1);
                stamp[k] = ++now;
            }
            break;
        }
        default:
            es_lru_remove(&l, key, (size_t)kl);
            if (present[k]) ncached--;
            present[k] = 0;
        }
        assert_int_equal(l.count, ncached);
    }
    es_lru_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_order_and_prefix_free),
        cmocka_unit_test(test_escape_corrupt),
        cmocka_unit_test(test_prefix_successor),
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_meta_and_producer),
        cmocka_unit_test(test_retention_rules),
        cmocka_unit_test(test_lru_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
