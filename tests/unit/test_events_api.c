/*
 * test_events_api.c — targeted tests of the event store API: argument validation and its
 * messages, follow (woken by an append from another thread; timeout), producer idempotency,
 * the tail LRU staying bounded with many keys, age retention hiding records at read time and
 * the compaction filter reclaiming them, a read-only handle following the writer, and
 * reads from a timestamp across many records (the sparse time index).
 */
#include <pthread.h>
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

static char dir[64], uri[128];

static int setup(void **state)
{
    (void)state;
    return od_test_tmpstore_make(dir, sizeof dir, uri, sizeof uri, "od-events-api", "");
}

static int teardown(void **state)
{
    (void)state;
    return od_test_tmpdir_remove(dir);
}

static od_eventstore *open_es(int read_only, int64_t age)
{
    od_ev_options o;
    od_ev_options_init(&o);
    o.read_only = read_only;
    o.retention_age_ms = age;
    o.tail_cache_entries = 100;
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 2;
    dbo.compactor = 0;
    o.db = &dbo;
    return od_test_ev_open(uri, &o);
}

static int append1(od_eventstore *es, const char *key, const char *val, int64_t ts, uint64_t *seq, od_err *err)
{
    od_ev_rec_in in = {.key = key, .klen = strlen(key), .value = val, .vlen = strlen(val), .ts_ms = ts,
                       .expected_seq = OD_EV_ANY};
    return od_ev_append(es, &in, 1, NULL, seq, NULL, err);
}

static void test_validation(void **state)
{
    (void)state;
    od_eventstore *es = open_es(0, 0);
    od_err err = {0};
    char big[OD_EV_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    od_ev_rec_in in = {.key = big, .klen = sizeof big, .value = "v", .vlen = 1, .expected_seq = OD_EV_ANY};
    assert_int_equal(od_ev_append(es, &in, 1, NULL, NULL, NULL, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "longer than the limit of 1024"));
    in.klen = OD_EV_KEY_MAX;
    assert_int_equal(od_ev_append(es, &in, 1, NULL, NULL, NULL, &err), OD_OK);
    in.klen = 0;
    assert_int_equal(od_ev_append(es, &in, 1, NULL, NULL, NULL, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "key is empty"));
    in.klen = 1;
    in.expected_seq = -2;
    assert_int_equal(od_ev_append(es, &in, 1, NULL, NULL, NULL, &err), OD_BADREQ);
    in.expected_seq = OD_EV_ANY;
    in.vlen = OD_EV_VALUE_MAX + 1;
    assert_int_equal(od_ev_append(es, &in, 1, NULL, NULL, NULL, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "value of"));
    in.vlen = 1;
    assert_int_equal(od_ev_append(es, &in, 0, NULL, NULL, NULL, &err), OD_BADREQ);
    assert_int_equal(od_ev_trim(es, "nokey", 5, 3, &err), OD_NOTFOUND);
    assert_int_equal(od_ev_delete_key(es, "nokey", 5, &err), OD_NOTFOUND);
    assert_int_equal(od_ev_set_retention(es, "nokey", 5, 0, 1, &err), OD_NOTFOUND);
    od_ev_key_info ki;
    assert_int_equal(od_ev_tail(es, "nokey", 5, &ki, &err), OD_OK);
    assert_int_equal(ki.exists, 0);
    /* a missing key reads as empty */
    od_ev_cursor *c;
    od_ev_read_opts ro = {0};
    assert_int_equal(od_ev_cursor_open(es, "nokey", 5, &ro, &c, &err), OD_OK);
    assert_false(od_ev_cursor_valid(c));
    od_ev_cursor_free(c);
    /* the key of the max length reads back */
    assert_int_equal(od_ev_tail(es, big, OD_EV_KEY_MAX, &ki, &err), OD_OK);
    assert_int_equal(ki.exists, 1);
    assert_int_equal(ki.next_seq, 1);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    /* read-only handles refuse writes */
    es = open_es(1, 0);
    assert_int_equal(append1(es, "k", "v", 0, NULL, &err), OD_BADREQ);
    assert_non_null(strstr(err.msg, "read-only"));
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

typedef struct follow_arg {
    od_eventstore *es;
    int delay_ms;
    int appending; /* atomic: set just before the append starts */
    int rc;
} follow_arg;

static void *late_append(void *p)
{
    follow_arg *a = p;
    struct timespec d = {0, a->delay_ms * 1000000L};
    nanosleep(&d, NULL);
    od_err err = {0};
    __atomic_store_n(&a->appending, 1, __ATOMIC_RELEASE);
    a->rc = append1(a->es, "f", "late", 0, NULL, &err);
    if (a->rc) fprintf(stderr, "late append: %s\n", err.msg);
    return NULL;
}

static void test_follow(void **state)
{
    (void)state;
    od_eventstore *es = open_es(0, 0);
    od_err err = {0};
    /* nothing there: times out after the timeout (not before; the upper bound only says it
     * returns at all: a loaded machine may deschedule the caller for seconds) */
    int64_t t0 = od_test_now_ms();
    assert_int_equal(od_ev_follow(es, "f", 1, 0, 150, &err), OD_TIMEOUT);
    int64_t waited = od_test_now_ms() - t0;
    assert_true(waited >= 140 && waited < 20000);
    /* an append from another thread wakes the follower long before the timeout (30 s: had
     * the append not woken it, it would return at the timeout), and not before the append
     * began (a flag the appender sets first; a clock bound would depend on when the
     * scheduler runs which thread) */
    follow_arg a = {es, 100, 0, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_append, &a), 0);
    t0 = od_test_now_ms();
    assert_int_equal(od_ev_follow(es, "f", 1, 0, 30000, &err), OD_OK);
    waited = od_test_now_ms() - t0;
    assert_int_equal(__atomic_load_n(&a.appending, __ATOMIC_ACQUIRE), 1);
    pthread_join(th, NULL);
    assert_int_equal(a.rc, OD_OK);
    assert_true(waited < 25000);
    /* already there: returns at once; asking for the next one times out */
    assert_int_equal(od_ev_follow(es, "f", 1, 0, 10000, &err), OD_OK);
    assert_int_equal(od_ev_follow(es, "f", 1, 1, 50, &err), OD_TIMEOUT);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

static void test_producer(void **state)
{
    (void)state;
    od_eventstore *es = open_es(0, 0);
    od_err err = {0};
    od_ev_rec_in in = {.key = "p", .klen = 1, .value = "x", .vlen = 1, .expected_seq = OD_EV_ANY};
    od_ev_append_opts ao = {.producer_id = "writer-1", .producer_seq = 1};
    od_ev_append_info info;
    uint64_t seq = 99;
    assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 0);
    assert_int_equal(seq, 0);
    /* the retry of batch 1 is a duplicate; so is an older one */
    assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 1);
    ao.producer_seq = 0;
    assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 1);
    /* another producer is independent */
    od_ev_append_opts ao2 = {.producer_id = "writer-2", .producer_seq = 1};
    assert_int_equal(od_ev_append(es, &in, 1, &ao2, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 0);
    assert_int_equal(seq, 1);
    /* dedupe state survives a reopen */
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    es = open_es(0, 0);
    ao.producer_seq = 1;
    assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 1);
    ao.producer_seq = 2;
    assert_int_equal(od_ev_append(es, &in, 1, &ao, &seq, &info, &err), OD_OK);
    assert_int_equal(info.duplicate, 0);
    assert_int_equal(seq, 2);
    od_ev_key_info ki;
    assert_int_equal(od_ev_tail(es, "p", 1, &ki, &err), OD_OK);
    assert_int_equal(ki.next_seq, 3);
    od_ev_stats st;
    od_ev_get_stats(es, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

typedef struct page {
    size_t n;
    char last[24];
} page;

static int page_cb(void *ctx, const uint8_t *k, size_t kl, const od_ev_key_info *ki)
{
    page *pg = ctx;
    if (ki->next_seq != 2 || ki->count != 2) return 1;
    if (pg->n && strncmp(pg->last, (const char *)k, kl) >= 0) return 1; /* ascending */
    pg->n++;
    snprintf(pg->last, sizeof pg->last, "%.*s", (int)kl, (const char *)k);
    return 0;
}

static void test_many_keys_bounded_cache(void **state)
{
    (void)state;
    od_eventstore *es = open_es(0, 0);
    od_err err = {0};
    enum { B = 100 };
    int nkeys = (int)(3000 * od_test_scale()) / B * B;
    if (nkeys < 2 * B) nkeys = 2 * B;
    char keys[B][24];
    od_ev_rec_in in[B];
    for (int base = 0; base < nkeys; base += B) {
        for (int j = 0; j < B; j++) {
            snprintf(keys[j], sizeof keys[j], "user/%06d", base + j);
            in[j] = (od_ev_rec_in){.key = keys[j], .klen = strlen(keys[j]), .value = keys[j],
                                   .vlen = strlen(keys[j]), .expected_seq = 0};
        }
        assert_int_equal(od_ev_append(es, in, B, NULL, NULL, NULL, &err), OD_OK);
    }
    od_ev_stats st;
    od_ev_get_stats(es, &st);
    assert_true(st.tail_cache_entries <= 100);
    /* a second record per key: every key's tail is found (most from the store) */
    for (int base = 0; base < nkeys; base += B) {
        for (int j = 0; j < B; j++) {
            snprintf(keys[j], sizeof keys[j], "user/%06d", base + j);
            in[j] = (od_ev_rec_in){.key = keys[j], .klen = strlen(keys[j]), .value = "2", .vlen = 1,
                                   .expected_seq = 1};
        }
        int rc = od_ev_append(es, in, B, NULL, NULL, NULL, &err);
        if (rc) fprintf(stderr, "append: %s\n", err.msg);
        assert_int_equal(rc, OD_OK);
    }
    od_ev_get_stats(es, &st);
    assert_true(st.tail_cache_entries <= 100);
    assert_true(st.tail_cache_misses >= (uint64_t)nkeys);
    /* list with a prefix and pagination */
    int more = 0;
    size_t seen = 0;
    char after[24] = "";
    do {
        page pg = {0, ""};
        assert_int_equal(od_ev_list_keys(es, "user/", 5, after[0] ? after : NULL, strlen(after), 700, page_cb,
                                         &pg, &more, &err), OD_OK);
        seen += pg.n;
        snprintf(after, sizeof after, "%s", pg.last);
    } while (more);
    assert_int_equal(seen, (size_t)nkeys);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

static void test_age_retention_and_compaction(void **state)
{
    (void)state;
    const int64_t DAY = 24LL * 3600 * 1000;
    od_eventstore *es = open_es(0, DAY);
    od_err err = {0};
    int64_t now = od_test_now_ms();
    /* 40 old records (3 days ago), then 10 recent ones */
    for (int i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "r%d", i);
        assert_int_equal(append1(es, "age", v, i < 40 ? now - 3 * DAY + i : now + i, NULL, &err), OD_OK);
    }
    od_ev_read_opts ro = {0};
    od_ev_cursor *c;
    assert_int_equal(od_ev_cursor_open(es, "age", 3, &ro, &c, &err), OD_OK);
    int n = 0;
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        assert_int_equal(r.seq, 40 + n);
        n++;
        assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
    }
    od_ev_cursor_free(c);
    assert_int_equal(n, 10);
    /* reclaimed: after flush + compaction the old records are gone from the engine too */
    od_db *db = od_ev_db(es);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    od_db_stats st;
    od_db_get_stats(db, &st);
    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, "r", 1, "s", 1, &it, &err), OD_OK);
    int raw = 0;
    while (od_iter_valid(it)) {
        raw++;
        assert_int_equal(od_iter_next(it, &err), OD_OK);
    }
    od_iter_free(it);
    assert_int_equal(raw, 10);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

static void test_read_only_follows_writer(void **state)
{
    (void)state;
    od_eventstore *w = open_es(0, 0);
    od_err err = {0};
    assert_int_equal(append1(w, "ro", "one", 0, NULL, &err), OD_OK);
    od_eventstore *r = open_es(1, 0);
    od_ev_key_info ki;
    assert_int_equal(od_ev_tail(r, "ro", 2, &ki, &err), OD_OK);
    assert_int_equal(ki.next_seq, 1);
    assert_int_equal(append1(w, "ro", "two", 0, NULL, &err), OD_OK);
    /* the reader picks the new record up by polling (follow refreshes) */
    assert_int_equal(od_ev_follow(r, "ro", 2, 1, 30000, &err), OD_OK);
    assert_int_equal(od_ev_tail(r, "ro", 2, &ki, &err), OD_OK);
    assert_int_equal(ki.next_seq, 2);
    assert_int_equal(od_ev_close(r, &err), OD_OK);
    assert_int_equal(od_ev_close(w, &err), OD_OK);
}

static void test_read_from_time_and_tail(void **state)
{
    (void)state;
    od_eventstore *es = open_es(0, 0);
    od_err err = {0};
    int n = (int)(1000 * od_test_scale());
    if (n < 100) n = 100;
    /* ts = 1000 + 10*(i/3): runs of equal timestamps that straddle index strides */
    enum { B = 50 };
    for (int base = 0; base < n; base += B) {
        od_ev_rec_in in[B];
        char vals[B][16];
        int m = n - base < B ? n - base : B;
        for (int j = 0; j < m; j++) {
            int i = base + j;
            snprintf(vals[j], sizeof vals[j], "%d", i);
            in[j] = (od_ev_rec_in){.key = "tt", .klen = 2, .value = vals[j], .vlen = strlen(vals[j]),
                                   .ts_ms = 1000 + 10 * (i / 3), .expected_seq = OD_EV_ANY};
        }
        assert_int_equal(od_ev_append(es, in, (size_t)m, NULL, NULL, NULL, &err), OD_OK);
        if (base % 200 == 0) assert_int_equal(od_db_flush(od_ev_db(es), 1, &err), OD_OK);
    }
    for (int q = 0; q < 200; q++) {
        int64_t T = 995 + (int64_t)(rand() % (10 * (n / 3) + 20));
        /* expected first seq: smallest i with 1000 + 10*(i/3) >= T */
        int want = -1;
        for (int i = 0; i < n; i++)
            if (1000 + 10 * (i / 3) >= T) {
                want = i;
                break;
            }
        od_ev_read_opts ro = {.from = OD_EV_FROM_TS, .ts_ms = T, .max_count = 2};
        od_ev_cursor *c;
        assert_int_equal(od_ev_cursor_open(es, "tt", 2, &ro, &c, &err), OD_OK);
        if (want < 0) {
            assert_false(od_ev_cursor_valid(c));
        } else {
            assert_true(od_ev_cursor_valid(c));
            od_ev_record r;
            od_ev_cursor_record(c, &r);
            assert_int_equal(r.seq, (uint64_t)want);
        }
        od_ev_cursor_free(c);
    }
    /* the last 100, with a byte bound of 25 bytes: the first record always comes */
    od_ev_read_opts ro = {.from = OD_EV_FROM_TAIL, .tail_n = 100};
    od_ev_cursor *c;
    assert_int_equal(od_ev_cursor_open(es, "tt", 2, &ro, &c, &err), OD_OK);
    int got = 0;
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        assert_int_equal(r.seq, (uint64_t)(n - 100 + got));
        got++;
        assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
    }
    od_ev_cursor_free(c);
    assert_int_equal(got, 100);
    ro.max_bytes = 1;
    assert_int_equal(od_ev_cursor_open(es, "tt", 2, &ro, &c, &err), OD_OK);
    assert_true(od_ev_cursor_valid(c));
    assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
    assert_false(od_ev_cursor_valid(c));
    od_ev_cursor_free(c);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_producer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_keys_bounded_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_age_retention_and_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_follows_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_from_time_and_tail, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
