/*
 * od_vtab.h — shared pieces of the loadable extension (vtab/ only adapts core to SQLite).
 *
 * Registration: each module file exports one od_vtab_<module>_register(db) that
 * sqlite3_opendata_init (extension.c) calls.
 *
 * Handle registry: SQLite opens one vtab instance per connection and per table, but a store
 * must have one engine handle per process (one writer lease, one cache, one WAL batcher).
 * od_vtab_handle_acquire returns the process-wide handle for (kind, uri), opening it with
 * `open` on first use; od_vtab_handle_release closes it with `close` when the last user goes.
 * This registry is the extension's one process global (the extension is per process by
 * nature); core/ has none.
 */
#ifndef OD_VTAB_H
#define OD_VTAB_H

#include <sqlite3.h>

#include "../core/util/od_err.h"

int od_vtab_tsdb_register(sqlite3 *db);
int od_vtab_eventstore_register(sqlite3 *db);
int od_vtab_promql_register(sqlite3 *db);
/* The od_tsdb* behind the tsdb virtual table `table` on this connection (connecting it if
 * needed), or NULL with *errmsg (sqlite3_malloc'd, may be NULL) set. Used by the PromQL
 * functions; the handle stays valid while the table is connected. */
void *od_vtab_tsdb_lookup(sqlite3 *db, const char *table, char **errmsg);

typedef int (*od_vtab_open_fn)(const char *uri, void *ctx, void **handle, od_err *err);
typedef void (*od_vtab_close_fn)(void *handle);

int od_vtab_handle_acquire(const char *kind, const char *uri, od_vtab_open_fn open, void *ctx,
                           od_vtab_close_fn close, void **handle, od_err *err);
void od_vtab_handle_release(void *handle);
/* Look up an already-acquired handle by (kind, uri) without taking a reference; NULL if none.
 * Only safe while the caller otherwise holds a reference (e.g. from a connected table). */
void *od_vtab_handle_find(const char *kind, const char *uri);
/* The same, taking a reference (release with od_vtab_handle_release): for users that must keep
 * the handle alive on their own, e.g. a long wait while other connections may close it. */
void *od_vtab_handle_find_ref(const char *kind, const char *uri);

#endif
