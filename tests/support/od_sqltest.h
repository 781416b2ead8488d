/*
 * od_sqltest.h — scaffolding for the tests that drive the built SQLite extension
 * (build/opendata.so next to build/tests/) through a real SQLite connection: finding the
 * extension, opening an in-memory connection with it loaded, and running SQL that must succeed.
 * They use cmocka assertions and are meant to be called from cmocka test functions.
 */
#ifndef OD_SQLTEST_H
#define OD_SQLTEST_H

#include <stddef.h>

#include <sqlite3.h>

/* Path of opendata.so next to the running test binary ("<dir of /proc/self/exe>/../opendata.so")
 * into out (n bytes). 0 if it is readable; else -1, after telling stderr that `test` needs it built. */
int od_sqltest_ext_path(const char *test, char *out, size_t n);

/* A ":memory:" connection with the extension at `ext` loaded (asserts it loads). */
sqlite3 *od_sqltest_open(const char *ext);

/* Run sql; asserts SQLITE_OK (printing the statement and SQLite's message first if not). */
void od_sqltest_exec(sqlite3 *db, const char *sql);

#endif
