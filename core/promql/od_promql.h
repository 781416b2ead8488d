/*
 * od_promql.h — public API of the PromQL engine (float samples only).
 *
 * What it is: a parser and evaluator for PromQL as of Prometheus 3 (instant and range queries),
 * independent of any storage. Data comes from an od_promql_source: a vtable with one `select`
 * call that, given label matchers and a time range, emits every matching series with its
 * decoded samples (ascending timestamps, milliseconds, stale markers kept as the stale-NaN bit
 * pattern). core/promql/source_mem.c is an in-memory source (tests, the conformance runner);
 * core/promql/source_tsdb.c adapts the TSDB.
 *
 * How it works: od_promql_parse builds an AST (od_promql_expr, opaque); od_promql_eval evaluates it
 * step-major: every selector is fetched once for the whole query range and every operator works
 * on whole series × steps arrays, so no data is decoded twice (see eval.c). Results are owned by
 * an od_promql_result and freed with od_promql_result_free.
 *
 * Thread-safety: an expression is immutable after parsing and may be evaluated concurrently;
 * a source must tolerate concurrent selects if used concurrently.
 */
#ifndef OD_PROMQL_H
#define OD_PROMQL_H

#include <stddef.h>
#include <stdint.h>

#include "../util/od_err.h"

/* The stale marker bit pattern (a NaN distinct from the NaN a user can write). */
#define OD_PROMQL_STALE_BITS 0x7ff0000000000002ULL
int od_promql_is_stale(double v);
double od_promql_stale_nan(void);

typedef struct od_promql_label {
    const char *name;
    const char *value;
} od_promql_label;

typedef enum od_promql_match_type {
    OD_PROMQL_MATCH_EQ = 0, /* =  */
    OD_PROMQL_MATCH_NE,     /* != */
    OD_PROMQL_MATCH_RE,     /* =~ (fully anchored) */
    OD_PROMQL_MATCH_NRE     /* !~ */
} od_promql_match_type;

typedef struct od_promql_matcher {
    od_promql_match_type type;
    char *name;
    char *value;
    void *re; /* pcre2_code * for RE/NRE, compiled anchored; NULL otherwise */
} od_promql_matcher;

/* Does `value` ("" for an absent label) satisfy the matcher? */
int od_promql_matcher_matches(const od_promql_matcher *m, const char *value);
/* Initialise a matcher (copies name/value; compiles regexes). Free with od_promql_matcher_clear. */
int od_promql_matcher_init(od_promql_matcher *m, od_promql_match_type type, const char *name,
                           const char *value, od_err *err);
void od_promql_matcher_clear(od_promql_matcher *m);

/* Callback a source calls once per matching series. Labels in any order (the engine sorts a
 * copy); timestamps ascending; the engine copies everything it keeps. Return OD_OK or an error
 * (the source must stop and return it). */
typedef int (*od_promql_emit_fn)(void *arg, const od_promql_label *labels, size_t nlabels,
                                 const int64_t *ts, const double *vals, size_t n, od_err *err);

typedef struct od_promql_source {
    void *ctx;
    /* Emit every series matching all matchers that has samples in [mint, maxt] (ms, both
     * inclusive), with exactly those samples. */
    int (*select)(void *ctx, const od_promql_matcher *m, size_t nm, int64_t mint, int64_t maxt,
                  od_promql_emit_fn emit, void *arg, od_err *err);
} od_promql_source;

/* ---- parsing ---- */
typedef struct od_promql_expr od_promql_expr;

/* Parse; on error returns OD_BADREQ with a message "parse error at line L, char C: <what>". */
int od_promql_parse(const char *query, od_promql_expr **out, od_err *err);
void od_promql_expr_free(od_promql_expr *e);
/* Print the expression back as PromQL (malloc'd string, NULL on OOM). */
char *od_promql_expr_string(const od_promql_expr *e);

typedef enum od_promql_value_type {
    OD_PROMQL_SCALAR = 1,
    OD_PROMQL_VECTOR,
    OD_PROMQL_MATRIX,
    OD_PROMQL_STRING
} od_promql_value_type;
od_promql_value_type od_promql_expr_type(const od_promql_expr *e);

/* ---- evaluation ---- */
typedef struct od_promql_opts {
    int64_t lookback_ms;        /* default 300000 (5 m) when 0 */
    int64_t subquery_step_ms;   /* default step of subqueries without one; 60000 when 0 */
    uint64_t max_samples;       /* 0 = 50,000,000 */
    uint64_t max_series;        /* per selector; 0 = unlimited */
    int64_t timeout_ms;         /* 0 = none */
} od_promql_opts;

typedef struct od_promql_point {
    int64_t t;
    double v;
} od_promql_point;

typedef struct od_promql_series {
    od_promql_label *labels; /* sorted by name, __name__ first if present */
    size_t nlabels;
    od_promql_point *points;
    size_t npoints;
} od_promql_series;

typedef struct od_promql_result {
    od_promql_value_type type; /* instant query: SCALAR/VECTOR/MATRIX/STRING; range: MATRIX */
    double scalar;             /* SCALAR (instant) */
    int64_t t;                 /* SCALAR/STRING: the evaluation time */
    char *string;              /* STRING */
    od_promql_series *series;  /* VECTOR: one point each; MATRIX: the points */
    size_t nseries;
    char **warnings;           /* annotations ("PromQL warning: ..." / "PromQL info: ...") */
    size_t nwarnings;
} od_promql_result;

/* Instant query at `t` (ms). */
int od_promql_eval_instant(const od_promql_source *src, const od_promql_expr *e, int64_t t,
                           const od_promql_opts *opts, od_promql_result **out, od_err *err);
/* Range query: start..end inclusive every step (ms, step > 0). Result is always a MATRIX,
 * series sorted by labels. */
int od_promql_eval_range(const od_promql_source *src, const od_promql_expr *e, int64_t start,
                         int64_t end, int64_t step, const od_promql_opts *opts,
                         od_promql_result **out, od_err *err);
void od_promql_result_free(od_promql_result *r);

/* Parse + evaluate convenience wrappers. */
int od_promql_query_instant(const od_promql_source *src, const char *q, int64_t t,
                            const od_promql_opts *opts, od_promql_result **out, od_err *err);
int od_promql_query_range(const od_promql_source *src, const char *q, int64_t start, int64_t end,
                          int64_t step, const od_promql_opts *opts, od_promql_result **out,
                          od_err *err);

/* For the conformance runner: set `@ t` on every selector and subquery without one, except
 * under a subquery that has one (as Prometheus's test runner does). Returns 1 when something
 * changed, 0 when nothing did or the expression uses a function that is not step invariant
 * (time, timestamp, date functions, predict_linear). */
int od_promql_expr_set_at(od_promql_expr *e, int64_t t);

/* ---- in-memory source (source_mem.c) ---- */
typedef struct od_promql_mem od_promql_mem;
int od_promql_mem_new(od_promql_mem **out, od_err *err);
void od_promql_mem_free(od_promql_mem *m);
/* Append a sample to the series with these labels (created on first use; labels copied).
 * Samples of a series must be appended in ascending time (equal time replaces). */
int od_promql_mem_add(od_promql_mem *m, const od_promql_label *labels, size_t nlabels, int64_t t,
                      double v, od_err *err);
/* Mark the series as holding native-histogram samples (which this engine does not evaluate):
 * a select that matches it sets the `histogram_touched` flag. */
int od_promql_mem_mark_histogram(od_promql_mem *m, const od_promql_label *labels, size_t nlabels,
                                 od_err *err);
int od_promql_mem_histogram_touched(od_promql_mem *m, int reset);
void od_promql_mem_clear(od_promql_mem *m);
od_promql_source od_promql_mem_source(od_promql_mem *m);

#endif
