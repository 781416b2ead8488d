/*
 * extension.c — entry point of the loadable extension: `.load ./opendata` in sqlite3 calls
 * sqlite3_opendata_init, which registers every module and function of this project.
 * Also usable as a built-in (the standalone shell calls it through sqlite3_auto_extension).
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "od_vtab.h"

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_opendata_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

int sqlite3_opendata_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi)
{
    SQLITE_EXTENSION_INIT2(pApi);
    (void)pzErrMsg;
    if (sqlite3_libversion_number() < 3038000) {
        *pzErrMsg = sqlite3_mprintf("opendata: needs SQLite 3.38 or newer (this is %s)", sqlite3_libversion());
        return SQLITE_ERROR;
    }
    int rc = SQLITE_OK;
    /* Each module adds its registration here. */
    if (rc == SQLITE_OK) rc = od_vtab_tsdb_register(db);
    if (rc == SQLITE_OK) rc = od_vtab_eventstore_register(db);
    if (rc == SQLITE_OK) rc = od_vtab_promql_register(db);
    return rc;
}
