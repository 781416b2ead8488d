/*
 * od_promql_tsdb.h — an od_promql_source backed by the TSDB engine (core/tsdb/od_tsdb.h).
 *
 * od_promql_tsdb_src_open pins one TSDB read view, so that every selector of a query sees the
 * same snapshot; close it after the query. Thread-safety: one source per query/thread.
 */
#ifndef OD_PROMQL_TSDB_H
#define OD_PROMQL_TSDB_H

#include "../tsdb/od_tsdb.h"
#include "od_promql.h"

typedef struct od_promql_tsdb_src od_promql_tsdb_src;

int od_promql_tsdb_src_open(od_tsdb *t, od_promql_tsdb_src **out, od_err *err);
od_promql_source od_promql_tsdb_src_source(od_promql_tsdb_src *s);
void od_promql_tsdb_src_close(od_promql_tsdb_src *s);

#endif
