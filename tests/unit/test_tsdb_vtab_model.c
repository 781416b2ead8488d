/*
 * test_tsdb_vtab_model.c — the tsdb virtual table's read-your-own-writes against a model,
 * through the real extension (opendata.so next to tests/, as test_review_vtab_events does).
 *
 * A plain SQLite table with PRIMARY KEY (metric, labels, ts) and INSERT OR REPLACE is the
 * model of the TSDB (the last write of a timestamp wins). Both live in the same connection, so
 * BEGIN / SAVEPOINT / ROLLBACK TO / RELEASE / ROLLBACK / COMMIT apply to both. Random rounds of
 * inserts (duplicate timestamps, out of order, new and stored series), savepoint operations and
 * explicit compactions between transactions are checked by random queries inside and outside
 * the transactions: every pushdown path (metric =, metric IN, selector, ts bounds and =, LIMIT
 * and OFFSET) must give exactly the model's rows in the model's order, and the companions
 * must list the model's series and label values. Labels are always {"k":"<digit>"} so that
 * Prometheus label order equals ORDER BY metric, labels.
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

static char ext[PATH_MAX + 32];

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* All rows of a query as one text ("a|b|c\n" per row). */
static char *rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc) fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_str *s = sqlite3_str_new(db);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++)
            sqlite3_str_appendf(s, "%s%s", i ? "|" : "", sqlite3_column_type(st, i) == SQLITE_NULL
                                                            ? "NULL"
                                                            : (const char *)sqlite3_column_text(st, i));
        sqlite3_str_appendall(s, "\n");
    }
    if (rc != SQLITE_DONE) fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
    assert_int_equal(rc, SQLITE_DONE);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_str_errcode(s), SQLITE_OK);
    char *out = sqlite3_str_finish(s); /* NULL when empty */
    if (!out) out = sqlite3_mprintf("%s", "");
    assert_non_null(out);
    return out;
}

static long compared;

static void same(sqlite3 *db, const char *vt_sql, const char *model_sql)
{
    char *a = rows(db, vt_sql), *b = rows(db, model_sql);
    if (strcmp(a, b) != 0) fprintf(stderr, "MISMATCH\n  %s\n%s  vs %s\n%s", vt_sql, a, model_sql, b);
    assert_string_equal(a, b);
    sqlite3_free(a);
    sqlite3_free(b);
    compared++;
}

static const char *const METRICS[] = {"a", "b", "c"};

/* One random query, pushed down on the tsdb table, the same filter on the model. */
static void random_query(sqlite3 *db)
{
    char vw[256] = "", mw[256] = "";
    size_t vl = 0, ml = 0;
#define ADD(v, m)                                                                                                \
    do {                                                                                                         \
        vl += (size_t)snprintf(vw + vl, sizeof vw - vl, "%s%s", vl ? " AND " : " WHERE ", v);                    \
        ml += (size_t)snprintf(mw + ml, sizeof mw - ml, "%s%s", ml ? " AND " : " WHERE ", m);                    \
    } while (0)
    char v1[128], m1[128];
    switch (rnd(4)) {
    case 0: break;
    case 1:
        snprintf(v1, sizeof v1, "metric = '%s'", METRICS[rnd(3)]);
        ADD(v1, v1);
        break;
    case 2: {
        const char *x = METRICS[rnd(3)], *y = rnd(2) ? METRICS[rnd(3)] : "zz";
        snprintf(v1, sizeof v1, "metric IN ('%s', '%s')", x, y);
        ADD(v1, v1);
        break;
    }
    case 3: {
        int k1 = (int)rnd(4), k2 = (int)rnd(4);
        const char *mt = METRICS[rnd(3)];
        if (rnd(2)) {
            snprintf(v1, sizeof v1, "selector = '%s{k=~\"%d|%d\"}'", mt, k1, k2);
            snprintf(m1, sizeof m1, "metric = '%s' AND labels IN ('{\"k\":\"%d\"}', '{\"k\":\"%d\"}')", mt, k1, k2);
        } else {
            snprintf(v1, sizeof v1, "selector = '{__name__=~\".+\",k!=\"%d\"}'", k1);
            snprintf(m1, sizeof m1, "labels != '{\"k\":\"%d\"}'", k1);
        }
        ADD(v1, m1);
        break;
    }
    }
    switch (rnd(4)) {
    case 0: break;
    case 1: {
        int lo = (int)rnd(40), hi = lo + (int)rnd(20);
        snprintf(v1, sizeof v1, "ts >= %d AND ts < %d", lo, hi);
        ADD(v1, v1);
        break;
    }
    case 2:
        snprintf(v1, sizeof v1, "ts = %d", (int)rnd(40));
        ADD(v1, v1);
        break;
    case 3:
        snprintf(v1, sizeof v1, "ts BETWEEN %d AND %d", (int)rnd(20), 20 + (int)rnd(20));
        ADD(v1, v1);
        break;
    }
#undef ADD
    char lim[64] = "";
    if (rnd(3) == 0) snprintf(lim, sizeof lim, " LIMIT %d OFFSET %d", (int)rnd(12), (int)rnd(8));
    char vq[512], mq[512];
    snprintf(vq, sizeof vq, "SELECT metric, labels, ts, value FROM m%s%s", vw, lim);
    snprintf(mq, sizeof mq, "SELECT metric, labels, ts, value FROM model%s ORDER BY metric, labels, ts%s", mw, lim);
    same(db, vq, mq);
}

static void companions(sqlite3 *db)
{
    same(db, "SELECT metric, labels FROM m_series",
         "SELECT DISTINCT metric, labels FROM model ORDER BY metric, labels");
    same(db, "SELECT value FROM m_labels WHERE name = 'k'", "SELECT DISTINCT json_extract(labels, '$.k') AS v "
                                                            "FROM model ORDER BY v");
    same(db, "SELECT value FROM m_labels WHERE name = '__name__'", "SELECT DISTINCT metric FROM model ORDER BY 1");
}

static void insert_random(sqlite3 *db)
{
    int n = 1 + (int)rnd(4);
    for (int i = 0; i < n; i++) {
        const char *mt = METRICS[rnd(3)];
        int k = (int)rnd(4), ts = (int)rnd(40), v = (int)rnd(1000);
        char sql[512];
        snprintf(sql, sizeof sql,
                 "INSERT INTO m(metric, labels, ts, value) VALUES ('%s', '{\"k\":\"%d\"}', %d, %d);"
                 "INSERT OR REPLACE INTO model VALUES ('%s', '{\"k\":\"%d\"}', %d, %d)",
                 mt, k, ts, v, mt, k, ts, v);
        od_sqltest_exec(db, sql);
    }
}

static void test_ryow_against_model(void **st)
{
    (void)st;
    sqlite3 *db = od_sqltest_open(ext);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE m USING tsdb('mem://tsdb_vtab_model_%d', compact_interval=0)",
             (int)getpid());
    od_sqltest_exec(db, sql);
    od_sqltest_exec(db, "CREATE TABLE model(metric TEXT, labels TEXT, ts INTEGER, value REAL, PRIMARY KEY(metric, labels, ts))");
    int rounds = (int)(40 * od_test_scale());
    if (rounds < 10) rounds = 10;
    for (int r = 0; r < rounds; r++) {
        od_sqltest_exec(db, "BEGIN");
        int depth = 0;
        int ops = 4 + (int)rnd(20);
        for (int o = 0; o < ops; o++) {
            switch (rnd(8)) {
            case 0:
                snprintf(sql, sizeof sql, "SAVEPOINT s%d", depth++);
                od_sqltest_exec(db, sql);
                break;
            case 1:
                if (depth) { /* cancels the savepoints nested in the target */
                    int to = (int)rnd((uint32_t)depth);
                    snprintf(sql, sizeof sql, "ROLLBACK TO s%d", to);
                    od_sqltest_exec(db, sql);
                    depth = to + 1;
                }
                break;
            case 2:
                if (depth) {
                    snprintf(sql, sizeof sql, "RELEASE s%d", --depth);
                    od_sqltest_exec(db, sql);
                }
                break;
            default: insert_random(db); break;
            }
            random_query(db);
            if (rnd(4) == 0) companions(db);
        }
        od_sqltest_exec(db, rnd(4) == 0 ? "ROLLBACK" : "COMMIT");
        random_query(db);
        companions(db);
        if (rnd(8) == 0) {
            char *a = rows(db, "SELECT tsdb_compact('m')");
            sqlite3_free(a);
            random_query(db);
        }
    }
    /* everything once more, every series, after the last transaction */
    same(db, "SELECT metric, labels, ts, value FROM m", "SELECT * FROM model ORDER BY metric, labels, ts");
    assert_true(compared > rounds * 4);
    od_sqltest_exec(db, "DROP TABLE m");
    sqlite3_close(db);
}

int main(void)
{
    if (od_sqltest_ext_path("test_tsdb_vtab_model", ext, sizeof ext)) return 1;
    const char *seed = getenv("OD_TEST_SEED"); /* fixed by default; other seeds by hand */
    if (seed) rng = strtoull(seed, NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ryow_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
