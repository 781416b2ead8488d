/*
 * test_events_perf.c — tests of the event store's fast append paths (issue #6, append speed):
 *   1. the tail cache (es_lru.c: open addressing + node array, inline or heap keys) against a
 *      reference LRU, with keys of every length around the inline limit, zero bytes, the
 *      exists flag, removals and reuse of evicted nodes;
 *   2. the batched tail-state lookup of od_ev_append (the keys a batch misses in the tail
 *      cache are read from the store together, sorted, through one snapshot) against an
 *      in-memory model: two stores receive the same random batches — one with a 3-entry
 *      tail cache (nearly every key is a miss, many per batch), one with a large cache — with
 *      keys that are prefixes of each other and contain zero bytes, duplicate keys in a batch,
 *      expected_seq checks that pass and that fail, memtable flushes (metadata in
 *      collections) and reopens (cold cache). Every assigned sequence, every conflict and
 *      every key's tail must equal the model in both stores;
 *   3. the in-place encoders (es_key_rec, es_esc, es_rec_encode, es_meta_encode) write exactly
 *      the bytes of a reference built field by field with od_buf (docs/formats.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/eventstore/es_int.h"
#include "../../core/util/od_coding.h"
#include "od_testutil.h"

static uint64_t rs = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

/* ---------------------------------------------------------------- 1. the tail cache */

enum { LKEYS = 200, LCAP = 37 };

static void lru_key(unsigned k, uint8_t *out, size_t *len)
{
    /* lengths 0..60 around the 24-byte inline limit; zero bytes inside; key k is unique */
    size_t n = 2 + (k * 7) % 59;
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(i % 5 == 3 ? 0 : 'a' + (k + i) % 26);
    out[0] = (uint8_t)k;
    out[1] = (uint8_t)(k >> 8);
    *len = n;
}

static void test_lru_long_keys_model(void **state)
{
    (void)state;
    es_lru l;
    assert_int_equal(es_lru_init(&l, LCAP, NULL), OD_OK);
    uint64_t val[LKEYS] = {0}, stamp[LKEYS] = {0}, now = 0;
    int present[LKEYS] = {0}, exists[LKEYS] = {0};
    size_t ncached = 0;
    int iters = (int)(60000 * od_test_scale());
    for (int it = 0; it < iters; it++) {
        unsigned k = (unsigned)(rnd() % LKEYS);
        uint8_t key[64];
        size_t kl;
        lru_key(k, key, &kl);
        es_meta m = {0};
        int ex = -1;
        switch (rnd() % 5) {
        case 0:
        case 1: /* put */
            m.next_seq = rnd();
            m.last_ts = (int64_t)(rnd() >> 2);
            ex = (int)(rnd() % 4 != 0);
            assert_int_equal(es_lru_put(&l, key, kl, &m, ex, NULL), OD_OK);
            val[k] = m.next_seq;
            exists[k] = ex;
            if (!present[k]) {
                present[k] = 1;
                ncached++;
            }
            stamp[k] = ++now;
            if (ncached > LCAP) {
                unsigned victim = LKEYS;
                for (unsigned j = 0; j < LKEYS; j++)
                    if (present[j] && (victim == LKEYS || stamp[j] < stamp[victim])) victim = j;
                assert_true(victim != k);
                present[victim] = 0;
                ncached--;
            }
            break;
        case 2:
        case 3: { /* get, with the hash given by the caller half of the time */
            int hit = rnd() % 2 ? es_lru_get(&l, key, kl, &m, &ex)
                                : es_lru_get_h(&l, key, kl, es_hash(key, kl), &m, &ex);
            assert_int_equal(hit, present[k]);
            if (hit) {
                assert_true(m.next_seq == val[k]);
                assert_int_equal(ex, exists[k]);
                stamp[k] = ++now;
            }
            break;
        }
        default:
            es_lru_remove(&l, key, kl);
            if (present[k]) ncached--;
            present[k] = 0;
        }
        assert_int_equal(l.count, ncached);
    }
    /* a key that differs from a cached one only in its last byte, or by one byte of length */
    uint8_t a[40], b[40];
    memset(a, 'x', sizeof a);
    memcpy(b, a, sizeof b);
    b[39] = 'y';
    es_meta ma = {.next_seq = 1}, mb = {.next_seq = 2}, got;
    int ex;
    assert_int_equal(es_lru_put(&l, a, 40, &ma, 1, NULL), OD_OK);
    assert_int_equal(es_lru_get(&l, b, 40, &got, &ex), 0);
    assert_int_equal(es_lru_get(&l, a, 39, &got, &ex), 0);
    assert_int_equal(es_lru_put(&l, b, 40, &mb, 1, NULL), OD_OK);
    assert_int_equal(es_lru_get(&l, a, 40, &got, &ex), 1);
    assert_true(got.next_seq == 1);
    assert_int_equal(es_lru_get(&l, b, 40, &got, &ex), 1);
    assert_true(got.next_seq == 2);
    es_lru_free(&l);
}

/* ---------------------------------------------------------------- 2. batched lookups */

enum { MKEYS = 60, MAXB = 50 };

typedef struct mkey {
    uint8_t k[16];
    size_t len;
    uint64_t next;
    int exists;
} mkey;

static mkey mk[MKEYS];

static void make_keys(void)
{
    /* families of keys that are prefixes of each other, with zero bytes: "f", "f\0",
     * "f\0\1", "fa", "fa\0" ... so the sorted miss list has neighbours sharing prefixes */
    for (int i = 0; i < MKEYS; i++) {
        mkey *m = &mk[i];
        memset(m, 0, sizeof *m);
        m->k[0] = (uint8_t)('A' + i / 6);
        static const uint8_t tails[6][3] = {{0}, {0}, {0, 1}, {'a'}, {'a', 0}, {0xFF, 0}};
        static const size_t tl[6] = {0, 1, 2, 1, 2, 2};
        memcpy(m->k + 1, tails[i % 6], tl[i % 6]);
        m->len = 1 + tl[i % 6];
    }
}

static char dir[64];

static od_eventstore *open_store(const char *name, size_t cache)
{
    char uri[160];
    snprintf(uri, sizeof uri, "%s/%s", dir, name);
    od_ev_options o;
    od_ev_options_init(&o);
    o.tail_cache_entries = cache;
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 1;
    dbo.compactor = 0;
    o.db = &dbo;
    od_eventstore *es = NULL;
    od_err err = {0};
    int rc = od_ev_open(uri, &o, &es, &err);
    if (rc) fprintf(stderr, "open %s: %s\n", uri, err.msg);
    assert_int_equal(rc, OD_OK);
    return es;
}

static void check_tails(od_eventstore *es)
{
    for (int i = 0; i < MKEYS; i++) {
        od_ev_key_info ki;
        od_err err = {0};
        assert_int_equal(od_ev_tail(es, mk[i].k, mk[i].len, &ki, &err), OD_OK);
        assert_int_equal(ki.exists, mk[i].exists);
        assert_true(ki.next_seq == mk[i].next);
        assert_true(ki.count == mk[i].next);
    }
}

static void test_batched_lookup_model(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/od-events-perf-XXXXXX");
    assert_non_null(mkdtemp(dir));
    make_keys();
    const char *names[2] = {"small-cache", "large-cache"};
    const size_t caches[2] = {3, 100000};
    od_eventstore *es[2] = {open_store(names[0], caches[0]), open_store(names[1], caches[1])};
    int rounds = (int)(200 * od_test_scale());
    od_ev_rec_in in[MAXB];
    uint64_t seqs[MAXB];
    char vals[MAXB][16];
    uint64_t conflicts = 0, appended = 0;
    for (int r = 0; r < rounds; r++) {
        size_t n = 1 + rnd() % MAXB;
        /* the batch: the model's next sequence per key as the batch goes (duplicates count) */
        uint64_t next[MKEYS];
        for (int i = 0; i < MKEYS; i++) next[i] = mk[i].next;
        long bad = rnd() % 6 == 0 ? (long)(rnd() % n) : -1; /* one wrong expected_seq */
        size_t idx[MAXB];
        for (size_t j = 0; j < n; j++) {
            size_t i = (size_t)(rnd() % (j && rnd() % 4 == 0 ? 8 : MKEYS)); /* hot keys 0..7 repeat */
            idx[j] = i;
            int64_t exp = OD_EV_ANY;
            if ((long)j == bad) exp = (int64_t)next[i] + 1 + (int64_t)(rnd() % 3);
            else if (rnd() % 3 == 0) exp = (int64_t)next[i];
            snprintf(vals[j], sizeof vals[j], "r%d.%zu", r, j);
            in[j] = (od_ev_rec_in){.key = mk[i].k, .klen = mk[i].len, .value = vals[j], .vlen = strlen(vals[j]),
                                   .expected_seq = exp};
            next[i]++;
        }
        for (int s = 0; s < 2; s++) {
            od_ev_append_info info;
            od_err err = {0};
            memset(seqs, 0xAB, sizeof seqs);
            int rc = od_ev_append(es[s], in, n, NULL, seqs, &info, &err);
            if (bad >= 0) {
                assert_int_equal(rc, OD_CONFLICT);
                assert_int_equal(info.conflict_index, (size_t)bad);
                /* the key's next sequence at the failed record: model + earlier records of
                 * the same key in this batch */
                uint64_t want = mk[idx[bad]].next;
                for (long j = 0; j < bad; j++)
                    if (idx[j] == idx[bad]) want++;
                assert_true(info.conflict_next_seq == want);
                continue;
            }
            if (rc) fprintf(stderr, "append: %s\n", err.msg);
            assert_int_equal(rc, OD_OK);
            uint64_t cur[MKEYS];
            for (int i = 0; i < MKEYS; i++) cur[i] = mk[i].next;
            for (size_t j = 0; j < n; j++) assert_true(seqs[j] == cur[idx[j]]++);
        }
        if (bad >= 0) {
            conflicts++;
        } else {
            for (size_t j = 0; j < n; j++) {
                mk[idx[j]].next++;
                mk[idx[j]].exists = 1;
            }
            appended += n;
        }
        if (r % 37 == 36) /* metadata into collections: the misses then read SSTs */
            for (int s = 0; s < 2; s++) assert_int_equal(od_db_flush(od_ev_db(es[s]), 1, NULL), OD_OK);
        if (r % 101 == 100) { /* reopen: a cold tail cache */
            for (int s = 0; s < 2; s++) {
                assert_int_equal(od_ev_close(es[s], NULL), OD_OK);
                es[s] = open_store(names[s], caches[s]);
            }
        }
        if (r % 50 == 0)
            for (int s = 0; s < 2; s++) check_tails(es[s]);
    }
    for (int s = 0; s < 2; s++) {
        check_tails(es[s]);
        od_ev_stats st;
        od_ev_get_stats(es[s], &st);
        if (s == 0) assert_true(st.tail_cache_misses > st.tail_cache_hits); /* the batched path ran */
        assert_true(st.tail_cache_entries <= caches[s]);
        assert_int_equal(od_ev_close(es[s], NULL), OD_OK);
        es[s] = open_store(names[s], caches[s]);
        check_tails(es[s]);
        /* every record is where the model says, with its value */
        for (int i = 0; i < MKEYS; i++) {
            od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ};
            od_ev_cursor *c;
            assert_int_equal(od_ev_cursor_open(es[s], mk[i].k, mk[i].len, &ro, &c, NULL), OD_OK);
            uint64_t want = 0;
            while (od_ev_cursor_valid(c)) {
                od_ev_record rec;
                od_ev_cursor_record(c, &rec);
                assert_true(rec.seq == want);
                assert_true(rec.vlen > 1 && rec.value[0] == 'r');
                want++;
                assert_int_equal(od_ev_cursor_next(c, NULL), OD_OK);
            }
            od_ev_cursor_free(c);
            assert_true(want == mk[i].next);
        }
        assert_int_equal(od_ev_close(es[s], NULL), OD_OK);
    }
    assert_true(conflicts > 0);
    assert_true(appended > 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- 3. encoders */

static void ref_esc(od_buf *b, const uint8_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(od_buf_append_u8(b, k[i]), OD_OK);
        if (k[i] == 0) assert_int_equal(od_buf_append_u8(b, 0xFF), OD_OK);
    }
    assert_int_equal(od_buf_append_u8(b, 0), OD_OK);
    assert_int_equal(od_buf_append_u8(b, 1), OD_OK);
}

static void test_encoders_bytes(void **state)
{
    (void)state;
    od_buf got = {0}, ref = {0};
    int iters = (int)(3000 * od_test_scale());
    for (int it = 0; it < iters; it++) {
        uint8_t key[80];
        size_t kl = (size_t)(rnd() % sizeof key);
        for (size_t i = 0; i < kl; i++) key[i] = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd());
        uint64_t seq = rnd() >> (rnd() % 64);
        /* record key */
        od_buf_reset(&ref);
        assert_int_equal(od_buf_append_u8(&ref, ES_NS_REC), OD_OK);
        ref_esc(&ref, key, kl);
        for (int i = 7; i >= 0; i--) assert_int_equal(od_buf_append_u8(&ref, (uint8_t)(seq >> (8 * i))), OD_OK);
        assert_int_equal(es_key_rec(&got, key, kl, seq), OD_OK);
        assert_int_equal(got.len, ref.len);
        assert_memory_equal(got.data, ref.data, ref.len);
        /* es_esc appends */
        od_buf_reset(&got);
        assert_int_equal(od_buf_append_u8(&got, 'q'), OD_OK);
        assert_int_equal(es_esc(&got, key, kl), OD_OK);
        assert_int_equal(got.len, 1 + ref.len - 9);
        assert_memory_equal(got.data + 1, ref.data + 1, ref.len - 9);
        /* record value with headers */
        od_ev_header h[3];
        size_t nh = (size_t)(rnd() % 4);
        for (size_t i = 0; i < nh; i++)
            h[i] = (od_ev_header){.name = key, .nlen = (size_t)(rnd() % (kl + 1)), .value = key + kl / 2,
                                  .vlen = (size_t)(rnd() % (kl - kl / 2 + 1))};
        int64_t ts = (int64_t)(rnd() >> (rnd() % 64)) * (rnd() % 2 ? 1 : -1);
        uint8_t ifl = (uint8_t)rnd(), fl = (uint8_t)rnd();
        od_buf_reset(&ref);
        assert_int_equal(od_buf_append_u8(&ref, 1), OD_OK);
        assert_int_equal(od_buf_append_u8(&ref, ifl), OD_OK);
        assert_int_equal(od_buf_append_u8(&ref, fl), OD_OK);
        assert_int_equal(od_buf_put_varint(&ref, od_zigzag(ts)), OD_OK);
        assert_int_equal(od_buf_put_varint(&ref, nh), OD_OK);
        for (size_t i = 0; i < nh; i++) {
            assert_int_equal(od_buf_put_lenbytes(&ref, h[i].name, h[i].nlen), OD_OK);
            assert_int_equal(od_buf_put_lenbytes(&ref, h[i].value, h[i].vlen), OD_OK);
        }
        assert_int_equal(od_buf_append(&ref, key, kl), OD_OK);
        assert_int_equal(es_rec_encode(&got, ts, ifl, fl, h, nh, key, kl), OD_OK);
        assert_int_equal(got.len, ref.len);
        assert_memory_equal(got.data, ref.data, ref.len);
        es_rec r;
        assert_int_equal(es_rec_decode(got.data, got.len, &r), OD_OK);
        assert_true(r.ts == ts && r.vlen == kl && r.nheaders == nh);
        /* metadata */
        es_meta m = {.first_seq = seq / 2, .next_seq = seq, .bytes = rnd() >> (rnd() % 64), .last_ts = ts,
                     .created_ms = -ts, .ret_age_ms = (int64_t)(rnd() >> 1 >> (rnd() % 63)), .ret_count = rnd()};
        od_buf_reset(&ref);
        assert_int_equal(od_buf_append_u8(&ref, 1), OD_OK);
        uint64_t f[7] = {m.first_seq, m.next_seq, m.bytes, od_zigzag(m.last_ts), od_zigzag(m.created_ms),
                         (uint64_t)m.ret_age_ms, m.ret_count};
        for (int i = 0; i < 7; i++) assert_int_equal(od_buf_put_varint(&ref, f[i]), OD_OK);
        assert_int_equal(es_meta_encode(&got, &m), OD_OK);
        assert_int_equal(got.len, ref.len);
        assert_memory_equal(got.data, ref.data, ref.len);
        es_meta back;
        assert_int_equal(es_meta_decode(got.data, got.len, &back), OD_OK);
        assert_memory_equal(&back, &m, sizeof m);
    }
    od_buf_free(&got);
    od_buf_free(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoders_bytes),
        cmocka_unit_test(test_lru_long_keys_model),
        cmocka_unit_test(test_batched_lookup_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
