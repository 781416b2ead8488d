/*
 * test_events_model.c — randomized model test of the event store against an in-memory
 * reference: appends (one or many keys, with right and wrong expected_seq, producer retries),
 * trims, key deletes, per-key count/age retention, and reads from seq / timestamp / tail
 * with count, byte, end-seq and end-ts bounds, check-tail and key listing with pagination —
 * interleaved with WAL/memtable flushes, compactions and close/reopen of the store.
 *
 * Timestamps are chosen in classes far from every retention boundary (now, now - 3 h,
 * now - 48 h) so that the reference and the engine agree whatever the wall clock does while
 * the test runs. Store default age retention is 24 h, some keys override it with 1 h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/eventstore/od_eventstore.h"
#include "od_testutil.h"

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

#define HOUR (3600LL * 1000)
#define NKEYS 7
static const struct { const char *k; size_t n; } KEYS[NKEYS] = {
    {"a", 1}, {"a\0", 2}, {"ab", 2}, {"a\0b", 3}, {"b/x", 3}, {"b/y", 3}, {"\xff\xfe", 2},
};

typedef struct mrec {
    uint64_t seq;
    int64_t ts;
    int64_t expire; /* ts + the age rule in force at append (the engine's TTL); 0 = none */
    char value[64];
    size_t vlen;
    char hname[8], hval[8];
    int nh;
} mrec;

typedef struct mkey {
    int exists;
    uint64_t first, next; /* first: trim / retention frontier */
    int64_t last_ts;
    int64_t ret_age;
    uint64_t ret_count;
    mrec *recs;
    size_t nrecs, cap;
} mkey;

static mkey model[NKEYS];
static const int64_t STORE_AGE = 24 * HOUR;

static uint64_t vis_first(const mkey *m)
{
    uint64_t f = m->first;
    if (m->ret_count && m->next > m->ret_count && m->next - m->ret_count > f) f = m->next - m->ret_count;
    return f;
}

static int visible(const mkey *m, const mrec *r, int64_t now)
{
    int64_t age = m->ret_age ? m->ret_age : STORE_AGE;
    /* the current rule hides at once; the TTL stamped at append also hides (a rule lengthened
     * later does not revive records whose TTL passed: documented) */
    return r->seq >= vis_first(m) && !(r->ts < now - age) && !(r->expire && r->expire <= now);
}

static od_eventstore *es;
static int reads_total, reads_nonempty, conflicts_seen, reopens;
static char uri[128];

static void open_store(void)
{
    od_ev_options o;
    od_ev_options_init(&o);
    o.retention_age_ms = STORE_AGE;
    o.tail_cache_entries = 3; /* smaller than the key set: exercises LRU misses */
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 5;
    dbo.memtable_bytes = 16 * 1024;
    dbo.compactor = 0;
    o.db = &dbo;
    od_err err = {0};
    int rc = od_ev_open(uri, &o, &es, &err);
    if (rc) fprintf(stderr, "open: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
}

static int64_t pick_ts(int64_t now)
{
    switch (rnd() % 4) {
    case 0: return now - 48 * HOUR - (int64_t)(rnd() % 1000);
    case 1: return now - 3 * HOUR - (int64_t)(rnd() % 1000);
    case 2: return now; /* (arrival time, ts 0, is checked by the producer path and SQL tests) */
    default: return now + (int64_t)(rnd() % 1000);
    }
}

static void do_append(int64_t now)
{
    enum { MAXB = 6 };
    od_ev_rec_in in[MAXB];
    mrec mr[MAXB];
    int ki[MAXB];
    od_ev_header hdr[MAXB];
    size_t n = 1 + rnd() % MAXB;
    uint64_t next[NKEYS];
    int64_t last[NKEYS];
    for (int k = 0; k < NKEYS; k++) {
        next[k] = model[k].exists ? model[k].next : 0;
        last[k] = model[k].exists ? model[k].last_ts : 0;
    }
    int expect_conflict = 0;
    size_t conflict_i = 0;
    uint64_t conflict_next = 0;
    int single_key = rnd() % 2;
    int k0 = (int)(rnd() % NKEYS);
    for (size_t i = 0; i < n; i++) {
        int k = single_key ? k0 : (int)(rnd() % NKEYS);
        ki[i] = k;
        memset(&in[i], 0, sizeof in[i]);
        memset(&mr[i], 0, sizeof mr[i]);
        in[i].key = KEYS[k].k;
        in[i].klen = KEYS[k].n;
        mr[i].seq = next[k];
        mr[i].vlen = (size_t)snprintf(mr[i].value, sizeof mr[i].value, "v%d-%llu-%llu", k,
                                      (unsigned long long)next[k], (unsigned long long)(rnd() % 100000));
        if (rnd() % 5 == 0) mr[i].vlen = 0;
        in[i].value = mr[i].value;
        in[i].vlen = mr[i].vlen;
        in[i].ts_ms = pick_ts(now);
        int64_t ts = in[i].ts_ms ? in[i].ts_ms : now;
        if (ts < last[k]) ts = last[k];
        mr[i].ts = ts;
        if (rnd() % 3 == 0) {
            mr[i].nh = 1;
            snprintf(mr[i].hname, sizeof mr[i].hname, "h%d", (int)(rnd() % 10));
            snprintf(mr[i].hval, sizeof mr[i].hval, "x%d", (int)(rnd() % 1000));
            hdr[i] = (od_ev_header){mr[i].hname, strlen(mr[i].hname), mr[i].hval, strlen(mr[i].hval)};
            in[i].headers = &hdr[i];
            in[i].nheaders = 1;
        }
        in[i].expected_seq = OD_EV_ANY;
        uint64_t r = rnd() % 10;
        if (r < 4) in[i].expected_seq = (int64_t)next[k];
        else if (r == 4) {
            int64_t wrong = (int64_t)next[k] + (rnd() % 2 ? 1 : -1);
            if (wrong < 0) wrong = 1;
            in[i].expected_seq = wrong;
            if (!expect_conflict) {
                expect_conflict = 1;
                conflict_i = i;
                conflict_next = next[k];
            }
        }
        in[i].flags = (uint8_t)(rnd() % 2);
        last[k] = ts;
        next[k]++;
    }
    uint64_t seqs[MAXB];
    od_ev_append_info info;
    od_err err = {0};
    int rc = od_ev_append(es, in, n, NULL, seqs, &info, &err);
    if (expect_conflict) {
        assert_int_equal(rc, OD_CONFLICT);
        assert_int_equal(info.conflict_index, conflict_i);
        assert_int_equal(info.conflict_next_seq, conflict_next);
        assert_non_null(strstr(err.msg, "expected_seq"));
        conflicts_seen++;
        return;
    }
    if (rc) fprintf(stderr, "append: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
    for (size_t i = 0; i < n; i++) {
        mkey *m = &model[ki[i]];
        assert_int_equal(seqs[i], mr[i].seq);
        if (!m->exists) {
            free(m->recs);
            memset(m, 0, sizeof *m);
            m->exists = 1;
        }
        if (m->nrecs == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->recs = realloc(m->recs, m->cap * sizeof *m->recs);
            assert_non_null(m->recs);
        }
        mr[i].expire = mr[i].ts + (m->ret_age ? m->ret_age : STORE_AGE);
        m->recs[m->nrecs++] = mr[i];
        m->next = mr[i].seq + 1;
        m->last_ts = mr[i].ts;
    }
    for (int k = 0; k < NKEYS; k++) /* count retention moves the frontier at append */
        if (model[k].exists) model[k].first = vis_first(&model[k]);
}

static void check_read(int64_t now)
{
    int k = (int)(rnd() % NKEYS);
    mkey *m = &model[k];
    od_ev_read_opts ro = {0};
    ro.from = (od_ev_from)(rnd() % 3);
    uint64_t next = m->exists ? m->next : 0;
    ro.seq = rnd() % (next + 3);
    ro.tail_n = rnd() % (next + 3);
    ro.ts_ms = m->nrecs && rnd() % 2 ? m->recs[rnd() % m->nrecs].ts : pick_ts(now);
    if (!ro.ts_ms) ro.ts_ms = now;
    if (rnd() % 3 == 0) ro.max_count = 1 + rnd() % 5;
    if (rnd() % 4 == 0) ro.max_bytes = 1 + rnd() % 40;
    if (rnd() % 5 == 0) ro.end_seq = 1 + rnd() % (next + 2);
    if (rnd() % 6 == 0) ro.end_ts_ms = now - 2 * HOUR;
    /* the reference answer */
    size_t want[512];
    size_t nwant = 0;
    uint64_t bytes = 0;
    if (m->exists) {
        uint64_t start = 0;
        if (ro.from == OD_EV_FROM_SEQ) start = ro.seq;
        if (ro.from == OD_EV_FROM_TAIL) start = ro.tail_n >= m->next ? 0 : m->next - ro.tail_n;
        for (size_t i = 0; i < m->nrecs && nwant < 512; i++) {
            const mrec *r = &m->recs[i];
            if (!visible(m, r, now) || r->seq < start) continue;
            if (ro.from == OD_EV_FROM_TS && r->ts < ro.ts_ms) continue;
            if (ro.end_seq && r->seq >= ro.end_seq) break;
            if (ro.end_ts_ms && r->ts >= ro.end_ts_ms) break;
            if (ro.max_count && nwant >= ro.max_count) break;
            if (ro.max_bytes && nwant > 0 && bytes + r->vlen > ro.max_bytes) break;
            bytes += r->vlen;
            want[nwant++] = i;
        }
    }
    od_ev_cursor *c;
    od_err err = {0};
    int rc = od_ev_cursor_open(es, KEYS[k].k, KEYS[k].n, &ro, &c, &err);
    if (rc) fprintf(stderr, "read: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
    size_t got = 0;
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        if (got >= nwant)
            fprintf(stderr, "extra record key %d seq %llu (from %d seq %llu tail %llu)\n", k,
                    (unsigned long long)r.seq, (int)ro.from, (unsigned long long)ro.seq,
                    (unsigned long long)ro.tail_n);
        assert_true(got < nwant);
        const mrec *w = &m->recs[want[got]];
        assert_int_equal(r.seq, w->seq);
        assert_true(r.ts_ms == w->ts);
        assert_int_equal(r.vlen, w->vlen);
        if (r.vlen) assert_memory_equal(r.value, w->value, r.vlen);
        assert_int_equal(r.nheaders, (size_t)w->nh);
        if (w->nh) {
            size_t pos = 0;
            od_ev_header h;
            assert_true(od_ev_header_next(r.headers, r.headers_len, &pos, &h));
            assert_int_equal(h.nlen, strlen(w->hname));
            assert_memory_equal(h.name, w->hname, h.nlen);
            assert_memory_equal(h.value, w->hval, h.vlen);
        }
        assert_int_equal(r.klen, KEYS[k].n);
        assert_memory_equal(r.key, KEYS[k].k, r.klen);
        got++;
        assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
    }
    reads_total++;
    if (nwant) reads_nonempty++;
    if (got != nwant) {
        fprintf(stderr, "key %d: got %zu want %zu (from %d seq %llu tail %llu ts %lld count %llu bytes %llu "
                        "end_seq %llu end_ts %lld; first %llu next %llu vis_first %llu ret_age %lld ret_count %llu)\n",
                k, got, nwant, (int)ro.from, (unsigned long long)ro.seq, (unsigned long long)ro.tail_n,
                (long long)ro.ts_ms, (unsigned long long)ro.max_count, (unsigned long long)ro.max_bytes,
                (unsigned long long)ro.end_seq, (long long)ro.end_ts_ms, (unsigned long long)m->first,
                (unsigned long long)m->next, (unsigned long long)vis_first(m), (long long)m->ret_age,
                (unsigned long long)m->ret_count);
        for (size_t i = 0; i < m->nrecs; i++)
            fprintf(stderr, "  seq %llu ts %+lld ms vlen %zu visible %d\n", (unsigned long long)m->recs[i].seq,
                    (long long)(m->recs[i].ts - now), m->recs[i].vlen, visible(m, &m->recs[i], now));
    }
    assert_int_equal(got, nwant);
    od_ev_cursor_free(c);
}

static void check_tail(void)
{
    for (int k = 0; k < NKEYS; k++) {
        od_ev_key_info ki;
        od_err err = {0};
        assert_int_equal(od_ev_tail(es, KEYS[k].k, KEYS[k].n, &ki, &err), OD_OK);
        assert_int_equal(ki.exists, model[k].exists);
        if (!ki.exists) continue;
        assert_int_equal(ki.next_seq, model[k].next);
        assert_int_equal(ki.first_seq, vis_first(&model[k]));
        assert_true(ki.last_ts_ms == model[k].last_ts);
        assert_int_equal(ki.retention_count, model[k].ret_count);
    }
}

typedef struct listed {
    int n;
    char keys[16][8];
    size_t lens[16];
} listed;

static int list_cb(void *ctx, const uint8_t *key, size_t klen, const od_ev_key_info *info)
{
    listed *l = ctx;
    assert_true(l->n < 16 && klen <= 8);
    memcpy(l->keys[l->n], key, klen);
    l->lens[l->n++] = klen;
    assert_int_equal(info->exists, 1);
    return 0;
}

static int keycmp(const void *a, size_t an, const void *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static void check_list(void)
{
    static const char *prefixes[] = {"", "a", "a\0", "b/", "c"};
    static const size_t plens[] = {0, 1, 2, 2, 1};
    int p = (int)(rnd() % 5);
    /* reference: existing keys with the prefix, sorted */
    int order[NKEYS], nw = 0;
    for (int k = 0; k < NKEYS; k++)
        if (model[k].exists && KEYS[k].n >= plens[p] && memcmp(KEYS[k].k, prefixes[p], plens[p]) == 0)
            order[nw++] = k;
    for (int i = 1; i < nw; i++)
        for (int j = i; j > 0 && keycmp(KEYS[order[j - 1]].k, KEYS[order[j - 1]].n, KEYS[order[j]].k,
                                        KEYS[order[j]].n) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    /* pages of 2 */
    listed all = {0};
    const void *after = NULL;
    size_t alen = 0;
    char lastkey[8];
    for (int page = 0; page < 10; page++) {
        listed l = {0};
        int more = 0;
        od_err err = {0};
        assert_int_equal(od_ev_list_keys(es, prefixes[p], plens[p], after, alen, 2, list_cb, &l, &more, &err), OD_OK);
        for (int i = 0; i < l.n; i++) {
            memcpy(all.keys[all.n], l.keys[i], l.lens[i]);
            all.lens[all.n++] = l.lens[i];
        }
        if (!more) break;
        assert_int_equal(l.n, 2);
        memcpy(lastkey, l.keys[1], l.lens[1]);
        after = lastkey;
        alen = l.lens[1];
    }
    assert_int_equal(all.n, nw);
    for (int i = 0; i < nw; i++) {
        assert_int_equal(all.lens[i], KEYS[order[i]].n);
        assert_memory_equal(all.keys[i], KEYS[order[i]].k, all.lens[i]);
    }
}

static void test_model(void **state)
{
    (void)state;
    rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    char dir[] = "/tmp/od-events-model-XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(uri, sizeof uri, "%s/store", dir);
    memset(model, 0, sizeof model);
    open_store();
    int steps = (int)(5000 * od_test_scale());
    uint64_t producer_seq = 0;
    for (int step = 0; step < steps; step++) {
        int64_t now = now_ms();
        uint64_t op = rnd() % 100;
        od_err err = {0};
        if (op < 45) {
            do_append(now);
        } else if (op < 70) {
            check_read(now);
        } else if (op < 74) {
            int k = (int)(rnd() % NKEYS);
            uint64_t before = rnd() % (model[k].next + 3);
            int rc = od_ev_trim(es, KEYS[k].k, KEYS[k].n, before, &err);
            if (!model[k].exists) {
                assert_int_equal(rc, OD_NOTFOUND);
            } else {
                assert_int_equal(rc, OD_OK);
                if (before > model[k].next) before = model[k].next;
                if (before > model[k].first) model[k].first = before;
            }
        } else if (op < 76) {
            int k = (int)(rnd() % NKEYS);
            int rc = od_ev_delete_key(es, KEYS[k].k, KEYS[k].n, &err);
            assert_int_equal(rc, model[k].exists ? OD_OK : OD_NOTFOUND);
            free(model[k].recs);
            memset(&model[k], 0, sizeof model[k]);
        } else if (op < 79) {
            int k = (int)(rnd() % NKEYS);
            int64_t age = rnd() % 2 ? HOUR : 0;
            uint64_t cnt = rnd() % 3 ? 0 : 1 + rnd() % 6;
            int rc = od_ev_set_retention(es, KEYS[k].k, KEYS[k].n, age, cnt, &err);
            assert_int_equal(rc, model[k].exists ? OD_OK : OD_NOTFOUND);
            if (model[k].exists) {
                /* what the old rule hides stays hidden: the change trims up to the first
                 * record it still shows (documented in od_eventstore.h) */
                uint64_t shown = model[k].next;
                for (size_t i = 0; i < model[k].nrecs; i++)
                    if (visible(&model[k], &model[k].recs[i], now)) {
                        shown = model[k].recs[i].seq;
                        break;
                    }
                if (shown > model[k].first) model[k].first = shown;
                model[k].ret_age = age;
                model[k].ret_count = cnt;
            }
        } else if (op < 85) {
            check_tail();
        } else if (op < 89) {
            check_list();
        } else if (op < 93) {
            /* a producer batch, sometimes retried */
            od_ev_append_opts ao = {.producer_id = "prod-1", .producer_seq = producer_seq};
            int k = (int)(rnd() % NKEYS);
            int retry = producer_seq > 0 && rnd() % 2;
            if (!retry) ao.producer_seq = ++producer_seq;
            od_ev_rec_in in = {.key = KEYS[k].k, .klen = KEYS[k].n, .value = "p", .vlen = 1,
                               .expected_seq = OD_EV_ANY};
            od_ev_append_info info;
            uint64_t seq;
            assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
            assert_int_equal(info.duplicate, retry);
            if (!retry) {
                mkey *m = &model[k];
                if (!m->exists) {
                    free(m->recs);
                    memset(m, 0, sizeof *m);
                    m->exists = 1;
                }
                if (m->nrecs == m->cap) {
                    m->cap = m->cap ? 2 * m->cap : 16;
                    m->recs = realloc(m->recs, m->cap * sizeof *m->recs);
                    assert_non_null(m->recs);
                }
                mrec r = {.seq = m->next, .ts = now > m->last_ts ? now : m->last_ts, .vlen = 1};
                r.value[0] = 'p';
                assert_int_equal(seq, r.seq);
                /* arrival time is taken inside append: accept the engine's value if later */
                od_ev_key_info ki;
                assert_int_equal(od_ev_tail(es, KEYS[k].k, KEYS[k].n, &ki, &err), OD_OK);
                assert_true(ki.last_ts_ms >= r.ts);
                assert_true(ki.last_ts_ms <= (m->last_ts > now_ms() ? m->last_ts : now_ms()));
                r.ts = ki.last_ts_ms;
                r.expire = r.ts + (m->ret_age ? m->ret_age : STORE_AGE);
                m->recs[m->nrecs++] = r;
                m->next++;
                m->last_ts = r.ts;
                m->first = vis_first(m);
            }
        } else if (op < 96) {
            assert_int_equal(od_db_flush(od_ev_db(es), (int)(rnd() % 2), &err), OD_OK);
        } else if (op < 98) {
            int rc = od_db_flush(od_ev_db(es), 1, &err);
            if (!rc) rc = od_db_compact(od_ev_db(es), &err);
            if (rc) fprintf(stderr, "compact: %s\n", err.msg);
            assert_int_equal(rc, OD_OK);
        } else {
            assert_int_equal(od_ev_close(es, &err), OD_OK);
            open_store();
            reopens++;
        }
    }
    check_tail();
    /* the run must have exercised the interesting paths */
    fprintf(stderr, "reads %d (non-empty %d), conflicts %d, reopens %d\n", reads_total, reads_nonempty,
            conflicts_seen, reopens);
    assert_true(reads_nonempty > reads_total / 4);
    assert_true(conflicts_seen > 0);
    od_err err = {0};
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    for (int k = 0; k < NKEYS; k++) free(model[k].recs);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
