/*
 * od_sqltest.c — loading the built extension into SQLite for tests (see od_sqltest.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "od_sqltest.h"

int od_sqltest_ext_path(const char *test, char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return -1;
    self[len] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    int w = snprintf(out, n, "%s/../opendata.so", self);
    if (w < 0 || (size_t)w >= n) return -1;
    if (access(out, R_OK) != 0) {
        fprintf(stderr, "%s: %s is missing: build it first (make all tests)\n", test, out);
        return -1;
    }
    return 0;
}

sqlite3 *od_sqltest_open(const char *ext)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    sqlite3_enable_load_extension(db, 1);
    char *err = NULL;
    int rc = sqlite3_load_extension(db, ext, NULL, &err);
    if (rc) fprintf(stderr, "load %s: %s\n", ext, err ? err : "?");
    sqlite3_free(err);
    assert_int_equal(rc, SQLITE_OK);
    return db;
}

void od_sqltest_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc) fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    assert_int_equal(rc, SQLITE_OK);
}
