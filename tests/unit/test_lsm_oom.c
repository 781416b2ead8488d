/*
 * test_lsm_oom.c — od_db_write when a batch cannot enter the memtable (out of memory).
 *
 * The failure is injected with the per-handle test hook od_db_test_fail_memtable_insert
 * (lsm_int.h): the n-th memtable entry inserted from then on fails with OD_NOMEM, so part of
 * the batch is already in the memtable when the write fails. What must hold:
 *   - the failing write returns OD_NOMEM with a message saying what happened;
 *   - nothing of the batch is visible (gets, iterators), on this handle or after reopening:
 *     its WAL record was taken back out of the pending WAL object before the lock was
 *     released, and the failure is sticky before the WAL thread can take that object
 *     (flush_interval_ms = 1 in half of the rounds keeps the WAL thread busy around it);
 *   - batches acknowledged as durable before it are intact after reopening; the handle refuses
 *     later writes with the same clear error, and a reopened handle writes normally;
 *   - the hook is per handle: another database in the same process is not affected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/lsm_int.h"
#include "lsm/od_db.h"
#include "od_testutil.h"

enum { NOPS = 50 };

static void fill(od_batch *b, char tag, int shuffle)
{
    od_batch_clear(b);
    for (int i = 0; i < NOPS; i++) {
        int k = shuffle ? (i * 37) % NOPS : i; /* out of order: the batch is sorted inside */
        char key[16], val[32];
        int kl = snprintf(key, sizeof key, "%c%03d", tag, k);
        int vl = snprintf(val, sizeof val, "value-of-%c%03d", tag, k);
        assert_int_equal(od_batch_put(b, key, (size_t)kl, val, (size_t)vl), OD_OK);
    }
}

/* how many of tag's NOPS keys a get finds (checking the values of those it finds) */
static int count_found(od_db *db, char tag)
{
    int n = 0;
    od_buf v = {0};
    for (int k = 0; k < NOPS; k++) {
        char key[16], want[32];
        int kl = snprintf(key, sizeof key, "%c%03d", tag, k);
        int wl = snprintf(want, sizeof want, "value-of-%c%03d", tag, k);
        od_err e;
        int rc = od_db_get(db, NULL, key, (size_t)kl, &v, &e);
        if (rc == OD_OK) {
            assert_int_equal(v.len, (size_t)wl);
            assert_memory_equal(v.data, want, (size_t)wl);
            n++;
        } else {
            assert_int_equal(rc, OD_NOTFOUND);
        }
    }
    od_buf_free(&v);
    return n;
}

/* keys seen by a full scan whose first byte is tag */
static int count_scanned(od_db *db, char tag)
{
    od_iter *it;
    od_err e;
    assert_int_equal(od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &e), OD_OK);
    int n = 0;
    while (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        if (kl && k[0] == (uint8_t)tag) n++;
        assert_int_equal(od_iter_next(it, &e), OD_OK);
    }
    od_iter_free(it);
    return n;
}

static void open_db(od_store *s, uint32_t interval_ms, od_db **db)
{
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = interval_ms;
    o.gc_interval_ms = 0;
    od_err e;
    int rc = od_db_open_store(s, &o, db, &e);
    if (rc) fail_msg("open: %s", e.msg);
}

static void test_failed_insert_is_not_written(void **state)
{
    (void)state;
    int rounds = (int)(6 * od_test_scale());
    if (rounds < 2) rounds = 2;
    od_batch *b = od_batch_new();
    assert_non_null(b);
    for (int round = 0; round < rounds; round++) {
        char uri[64];
        snprintf(uri, sizeof uri, "mem://lsm-oom-%d", round);
        od_store *s;
        od_err e;
        assert_int_equal(od_store_open(uri, &s, &e), OD_OK);
        uint32_t interval = round % 2 ? 1 : 200;
        od_db *db;
        open_db(s, interval, &db);

        /* A: durable; B: visible, maybe pending in the WAL buffer when C fails */
        uint64_t seq_a, seq_b, seq_c;
        fill(b, 'a', 0);
        assert_int_equal(od_db_write(db, b, 1, &seq_a, &e), OD_OK);
        fill(b, 'b', 1);
        assert_int_equal(od_db_write(db, b, 0, &seq_b, &e), OD_OK);

        /* C: the 20th of its 50 entries fails; 19 are already in the memtable */
        od_db_test_fail_memtable_insert(db, 20);
        fill(b, 'c', 1);
        memset(&e, 0, sizeof e);
        assert_int_equal(od_db_write(db, b, 0, &seq_c, &e), OD_NOMEM);
        assert_int_equal(e.code, OD_NOMEM);
        assert_non_null(strstr(e.msg, "out of memory inserting batch"));
        assert_non_null(strstr(e.msg, "(50 ops) into the memtable"));

        /* nothing of C is visible on this handle; A and B are */
        assert_int_equal(count_found(db, 'c'), 0);
        assert_int_equal(count_scanned(db, 'c'), 0);
        assert_int_equal(count_found(db, 'a'), NOPS);
        assert_int_equal(count_found(db, 'b'), NOPS);
        assert_int_equal(count_scanned(db, 'a') + count_scanned(db, 'b'), 2 * NOPS);

        /* the handle refuses later writes with the same clear error */
        fill(b, 'd', 0);
        memset(&e, 0, sizeof e);
        assert_int_equal(od_db_write(db, b, 0, NULL, &e), OD_NOMEM);
        assert_non_null(strstr(e.msg, "out of memory inserting batch"));
        memset(&e, 0, sizeof e);
        assert_int_equal(od_db_close(db, &e), OD_NOMEM);
        assert_non_null(strstr(e.msg, "out of memory inserting batch"));

        /* reopen: A intact, C never written, B all or nothing (it was not acknowledged as
         * durable); a new writer continues normally */
        open_db(s, interval, &db);
        assert_int_equal(count_found(db, 'a'), NOPS);
        assert_int_equal(count_found(db, 'c'), 0);
        assert_int_equal(count_scanned(db, 'c'), 0);
        assert_int_equal(count_found(db, 'd'), 0);
        int nb = count_found(db, 'b');
        assert_true(nb == 0 || nb == NOPS);
        od_db_stats st;
        od_db_get_stats(db, &st);
        assert_true(st.last_seq == (nb ? seq_b : seq_a));
        uint64_t seq_e;
        fill(b, 'e', 1);
        assert_int_equal(od_db_write(db, b, 1, &seq_e, &e), OD_OK);
        assert_int_equal(seq_e, st.last_seq + 1);
        assert_int_equal(od_db_close(db, &e), OD_OK);

        open_db(s, interval, &db);
        assert_int_equal(count_found(db, 'a'), NOPS);
        assert_int_equal(count_found(db, 'e'), NOPS);
        assert_int_equal(count_found(db, 'c'), 0);
        assert_int_equal(od_db_close(db, &e), OD_OK);
        od_store_close(s);
    }
    od_batch_free(b);
}

/* The hook belongs to one handle: a second database in the process writes normally. */
static void test_hook_is_per_handle(void **state)
{
    (void)state;
    od_store *s1, *s2;
    od_err e;
    assert_int_equal(od_store_open("mem://lsm-oom-h1", &s1, &e), OD_OK);
    assert_int_equal(od_store_open("mem://lsm-oom-h2", &s2, &e), OD_OK);
    od_db *d1, *d2;
    open_db(s1, 50, &d1);
    open_db(s2, 50, &d2);
    od_db_test_fail_memtable_insert(d1, 1);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    fill(b, 'x', 0);
    assert_int_equal(od_db_write(d2, b, 1, NULL, &e), OD_OK);
    assert_int_equal(count_found(d2, 'x'), NOPS);
    assert_int_equal(od_db_write(d1, b, 0, NULL, &e), OD_NOMEM);
    assert_int_equal(count_found(d1, 'x'), 0);
    assert_int_equal(od_db_write(d2, b, 1, NULL, &e), OD_OK);
    assert_int_equal(od_db_close(d1, &e), OD_NOMEM);
    assert_int_equal(od_db_close(d2, &e), OD_OK);
    od_batch_free(b);
    od_store_close(s1);
    od_store_close(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_insert_is_not_written),
        cmocka_unit_test(test_hook_is_per_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
