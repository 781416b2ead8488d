/*
 * test_events_seq_merge.c — `WHERE key = <number> ORDER BY seq` over several keys that compare
 * numerically equal ('5' and '05' both equal the INTEGER 5): the eventstore table merges the
 * keys' logs by seq as a stream (one record cursor per key), so the SQLite heap it uses does
 * not grow with the number of records. The test loads the built extension (opendata.so next to
 * tests/), appends many 1 KiB records to two such keys, reads them all in seq order (checking
 * the order, the count and that every (key, seq) comes once) and checks that SQLite's memory
 * high-water mark rose by far less than the records' bytes (copying the records, as before,
 * took all of them). SQLite's own memory statistics count the extension's sqlite3_malloc.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "od_sqltest.h"
#include "od_testutil.h"

static char ext[PATH_MAX + 32], dir[64];

static void test_merge_memory_bounded(void **state)
{
    (void)state;
    sqlite3 *db = od_sqltest_open(ext);
    int rc;
    char sql[512];
    snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE e USING eventstore('%s/ev', flush_interval_ms=2)", dir);
    od_sqltest_exec(db, sql);
    int n = (int)(6000 * od_test_scale());
    if (n < 1500) n = 1500;
    const int VAL = 1024;
    /* the two keys interleaved in one batch per chunk */
    for (int base = 0; base < n; base += 1000) {
        int m = n - base < 1000 ? n - base : 1000;
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE i(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM i WHERE i < %d) "
                 "INSERT INTO e(key, value) SELECT k, randomblob(%d) FROM i, (SELECT '5' AS k UNION ALL SELECT '05')",
                 m - 1, VAL);
        od_sqltest_exec(db, sql);
    }
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT key, seq, length(value) FROM e WHERE key = CAST('5' AS INTEGER) "
                                        "ORDER BY seq",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_int64 used0 = sqlite3_memory_used();
    sqlite3_memory_highwater(1);
    long rows = 0, k05 = 0;
    sqlite3_int64 prev = -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        sqlite3_int64 seq = sqlite3_column_int64(st, 1);
        assert_int_equal(sqlite3_column_int(st, 2), VAL);
        assert_true(seq >= prev);
        /* per seq: '05' (byte order) then '5' */
        assert_int_equal(seq, rows / 2);
        assert_string_equal(k, rows % 2 ? "5" : "05");
        k05 += strcmp(k, "05") == 0;
        prev = seq;
        rows++;
    }
    assert_int_equal(rc, SQLITE_DONE);
    sqlite3_int64 peak = sqlite3_memory_highwater(0) - used0;
    assert_int_equal(rows, 2L * n);
    assert_int_equal(k05, n);
    sqlite3_int64 data = (sqlite3_int64)2 * n * VAL;
    fprintf(stderr, "merge of 2 x %d records of %d bytes: SQLite heap peak +%lld bytes (records: %lld)\n", n, VAL,
            (long long)peak, (long long)data);
    assert_true(peak < 512 * 1024);
    assert_true(peak < data / 4);
    /* LIMIT stops early with the same order */
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(key || ':' || seq, ',') FROM (SELECT key, seq FROM e "
                                        "WHERE key = CAST('5' AS INTEGER) ORDER BY seq LIMIT 5 OFFSET 3)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "5:1,05:2,5:2,05:3,5:3");
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

int main(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1);
    if (od_sqltest_ext_path("test_events_seq_merge", ext, sizeof ext)) return 1;
    if (od_test_tmpdir_make(dir, sizeof dir, "od-events-merge")) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_merge_memory_bounded)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (od_test_tmpdir_remove(dir) != 0) rc = rc ? rc : 1;
    return rc;
}
