/*
 * test_events_floor.c — the store default retention state ('R': the last writer's default age
 * and the floor below which store-default records stay hidden) as seen by read-only handles,
 * and bounded against a writer whose clock is far ahead.
 *
 *  1. reader_follows_floor: a writer and a read-only handle on one file store. The writer
 *     reopens with a shorter default age, then with none (which raises the floor): after
 *     od_ev_refresh the reader hides exactly what the writer hides, each time (before the
 *     refresh it still shows the old view: the reader follows the writer, not its own option).
 *  2. clock_ahead_bounded: a writer open whose clock (the per-handle test hook) is ten years
 *     ahead changes the default age: the floor it records is at most one minute past the
 *     store's clock minus the old age, so the records the old default showed stay visible
 *     after a reopen with a correct clock, and compaction keeps them. A clock 20 s ahead
 *     (inside the margin) is taken as it is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../core/eventstore/es_int.h"
#include "od_testutil.h"

static char dir[64], uri[128];

static int setup(void **state)
{
    (void)state;
    return od_test_tmpstore_make(dir, sizeof dir, uri, sizeof uri, "od-events-floor", "file://");
}

static int teardown(void **state)
{
    (void)state;
    return od_test_tmpdir_remove(dir);
}

/* The test clock: the system clock plus *ctx ms. */
static int64_t skewed_clock(void *ctx) { return od_test_now_ms() + *(const int64_t *)ctx; }

static od_eventstore *open_es(int read_only, int64_t age, int64_t *skew)
{
    od_ev_options o;
    od_ev_options_init(&o);
    o.read_only = read_only;
    o.retention_age_ms = age;
    o.tail_cache_entries = 100;
    if (skew) {
        o.now_ms = skewed_clock;
        o.now_ctx = skew;
    }
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 2;
    dbo.compactor = 0;
    o.db = &dbo;
    return od_test_ev_open(uri, &o);
}

static void close_es(od_eventstore *es)
{
    od_err err = {0};
    int rc = od_ev_close(es, &err);
    if (rc) fprintf(stderr, "close: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
}

static void append_ts(od_eventstore *es, const char *key, int64_t ts, int n)
{
    od_err err = {0};
    for (int i = 0; i < n; i++) {
        od_ev_rec_in in = {.key = key, .klen = strlen(key), .value = "v", .vlen = 1, .ts_ms = ts,
                           .expected_seq = OD_EV_ANY};
        int rc = od_ev_append(es, &in, 1, NULL, NULL, NULL, &err);
        if (rc) fprintf(stderr, "append: %s\n", err.msg);
        assert_int_equal(rc, OD_OK);
    }
}

/* Visible records of key; *first_out (may be NULL) = the first visible seq. */
static int visible(od_eventstore *es, const char *key, uint64_t *first_out)
{
    od_ev_read_opts ro = {0};
    od_ev_cursor *c = NULL;
    od_err err = {0};
    assert_int_equal(od_ev_cursor_open(es, key, strlen(key), &ro, &c, &err), OD_OK);
    int n = 0;
    while (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        if (n == 0 && first_out) *first_out = r.seq;
        n++;
        assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
    }
    od_ev_cursor_free(c);
    return n;
}

static void read_sret(od_eventstore *es, int64_t *age, int64_t *floor_ts)
{
    const uint8_t rk = ES_NS_SRET;
    od_buf v = {0};
    od_err err = {0};
    assert_int_equal(od_db_get(od_ev_db(es), NULL, &rk, 1, &v, &err), OD_OK);
    assert_int_equal(es_sret_decode(v.data, v.len, age, floor_ts), OD_OK);
    od_buf_free(&v);
}

static void refresh(od_eventstore *es)
{
    od_err err = {0};
    int rc = od_ev_refresh(es, &err);
    if (rc) fprintf(stderr, "refresh: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
}

static void test_reader_follows_floor(void **state)
{
    (void)state;
    const int64_t H = 3600 * 1000;
    od_eventstore *w = open_es(0, 24 * H, NULL);
    int64_t now = od_test_now_ms();
    append_ts(w, "f", now - 3 * H, 3);  /* seq 0..2 */
    append_ts(w, "f", now - H / 2, 2);  /* seq 3..4 */
    append_ts(w, "f", now, 2);          /* seq 5..6 */
    assert_int_equal(visible(w, "f", NULL), 7);
    /* the reader's own option (no age) gives way to the writer's recorded default (24 h) */
    od_eventstore *r = open_es(1, 0, NULL);
    assert_int_equal(visible(r, "f", NULL), 7);
    close_es(w);

    /* the writer reopens with a 1 h default: the 3 h old records are hidden */
    w = open_es(0, H, NULL);
    uint64_t first = 0;
    assert_int_equal(visible(w, "f", &first), 4);
    assert_int_equal(first, 3);
    assert_int_equal(visible(r, "f", NULL), 7); /* not refreshed yet: the old view */
    refresh(r);
    assert_int_equal(visible(r, "f", &first), 4);
    assert_int_equal(first, 3);
    close_es(w);

    /* no default at all: the floor (now - 1 h) keeps them hidden, for the reader too */
    w = open_es(0, 0, NULL);
    int64_t age, floor_ts;
    read_sret(w, &age, &floor_ts);
    assert_int_equal(age, 0);
    assert_true(floor_ts >= now - H && floor_ts <= od_test_now_ms() - H);
    assert_int_equal(visible(w, "f", NULL), 4);
    refresh(r);
    assert_int_equal(visible(r, "f", &first), 4);
    assert_int_equal(first, 3);
    /* and a record the writer appends now is seen after a refresh */
    append_ts(w, "f", 0, 1);
    refresh(r);
    assert_int_equal(visible(r, "f", NULL), 5);
    assert_int_equal(visible(w, "f", NULL), 5);
    close_es(w);
    close_es(r);
}

static void test_clock_ahead_bounded(void **state)
{
    (void)state;
    const int64_t H = 3600 * 1000, MARGIN = 60000;
    od_err err = {0};
    od_eventstore *w = open_es(0, 24 * H, NULL);
    int64_t now = od_test_now_ms();
    append_ts(w, "c", now - 90 * 60 * 1000, 2); /* shown by every default below */
    append_ts(w, "c", now, 2);
    assert_int_equal(visible(w, "c", NULL), 4);
    close_es(w);

    /* a clock 20 s ahead is inside the margin: taken as it is (floor = its now - old age) */
    int64_t skew = 20000;
    int64_t before = od_test_now_ms();
    w = open_es(0, 2 * H, &skew);
    int64_t after = od_test_now_ms();
    int64_t age, floor_ts;
    read_sret(w, &age, &floor_ts);
    assert_int_equal(age, 2 * H);
    assert_true(floor_ts >= before + skew - 24 * H);
    assert_true(floor_ts <= after + skew - 24 * H);
    assert_int_equal(visible(w, "c", NULL), 4);
    close_es(w);

    /* a writer open ten years ahead changes the default to 24 h: the floor must come from the
     * store's clock (+ the margin), not from the skewed one (that would be ten years - 2 h
     * ahead and hide every record for good) */
    skew = 10LL * 365 * 24 * H;
    before = od_test_now_ms();
    w = open_es(0, 24 * H, &skew);
    after = od_test_now_ms();
    read_sret(w, &age, &floor_ts);
    assert_int_equal(age, 24 * H);
    assert_true(floor_ts <= after + MARGIN - 2 * H);
    assert_true(floor_ts >= before - 2 * H - 2000); /* the store's time, 1 s resolution at worst */
    close_es(w);

    /* a correct clock again (the default unchanged: no new floor): nothing was lost */
    w = open_es(0, 24 * H, NULL);
    uint64_t first = 99;
    assert_int_equal(visible(w, "c", &first), 4);
    assert_int_equal(first, 0);
    /* and compaction keeps them (the filter applies the floor too) */
    assert_int_equal(od_db_flush(od_ev_db(w), 1, &err), OD_OK);
    assert_int_equal(od_db_compact(od_ev_db(w), &err), OD_OK);
    assert_int_equal(visible(w, "c", NULL), 4);
    close_es(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reader_follows_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_ahead_bounded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
