/*
 * vtab_promql.c — PromQL as SQL table-valued functions over a `tsdb` virtual table.
 *
 * Usage:
 *   SELECT metric, labels, ts, value FROM promql('m', 'sum by (job) (rate(http_requests_total[5m]))', 1700000000000);
 *   SELECT * FROM promql_range('m', 'up', 1700000000000, 1700003600000, '1m');
 *   SELECT p.value, o.owner FROM promql('m', 'up == 0', '2024-01-01T00:00:00Z') p
 *     JOIN owners o ON o.job = json_extract(p.labels, '$.job');
 *
 * Arguments (hidden columns, in this order):
 *   promql(tsdb_table, query, time)
 *   promql_range(tsdb_table, query, start, end, step)
 *   tsdb_table  name of a tsdb virtual table of this connection (e.g. 'm')
 *   query       PromQL text
 *   time/start/end  milliseconds since the epoch (like the tsdb table's ts column; a number is
 *               always ms, never seconds), or text: an RFC 3339 time ('2024-01-01T00:00:00Z',
 *               optional fraction and offset) or a number of ms
 *   step        integer ms, or a PromQL duration text ('15s', '1m30s')
 * Columns: metric (the __name__ label or NULL), labels (JSON object of every other label, via
 * cJSON), ts (ms), value (REAL; NaN reads as NULL, SQLite has no NaN; a string result is TEXT).
 * An instant query yields one row per series (or one row for a scalar or string); a range
 * query, or an instant query returning a range vector, one row per point, series in label
 * order, points in time order.
 *
 * Errors from the parser or evaluator are the SQL error, with the same message
 * ("1:5: parse error: ...", "many-to-many matching not allowed ...").
 *
 * Query plan: every argument must be given as an equality (the table-valued-function call
 * supplies them); xBestIndex maps hidden column i to argv[i] (idxNum = bitmask of the
 * arguments present) and refuses plans without all of them (SQLITE_CONSTRAINT when present but
 * unusable, an error naming the missing argument when absent). No other constraint is used.
 *
 * Security: it reads the stores behind tsdb tables, so both modules are
 * SQLITE_VTAB_DIRECTONLY.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/promql/od_promql.h"
#include "../core/promql/od_promql_tsdb.h"
#include "od_vtab.h"

/* Visible columns, then the hidden arguments. */
enum { COL_METRIC = 0, COL_LABELS, COL_TS, COL_VALUE, COL_ARG0 };

typedef struct pq_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    int range;  /* promql_range */
    int nargs;  /* 3 or 5 */
} pq_vtab;

typedef struct pq_cursor {
    sqlite3_vtab_cursor base;
    od_promql_result *r;
    size_t si, pi;      /* series index, point index */
    int single_done;    /* scalar/string: the one row was consumed */
    sqlite3_int64 rowid;
    char *labels_json;  /* cached for the current series */
    size_t json_for;    /* series index the cache is for, +1 */
} pq_cursor;

static const char *arg_names_instant[] = {"tsdb_table", "query", "time"};
static const char *arg_names_range[] = {"tsdb_table", "query", "start", "end", "step"};

static int pq_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err)
{
    int range = aux != NULL;
    int rc = sqlite3_declare_vtab(db, range
        ? "CREATE TABLE x(metric TEXT, labels TEXT, ts INTEGER, value REAL, tsdb_table HIDDEN, query HIDDEN, "
          "start HIDDEN, \"end\" HIDDEN, step HIDDEN)"
        : "CREATE TABLE x(metric TEXT, labels TEXT, ts INTEGER, value REAL, tsdb_table HIDDEN, query HIDDEN, time HIDDEN)");
    if (rc != SQLITE_OK) return rc;
    pq_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v) return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    v->range = range;
    v->nargs = range ? 5 : 3;
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    *out = &v->base;
    (void)argc; (void)argv; (void)err;
    return SQLITE_OK;
}

static int pq_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int pq_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    pq_vtab *v = (pq_vtab *)vt;
    int idx[5] = {-1, -1, -1, -1, -1};
    int seen = 0, unusable = 0;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        int a = c->iColumn - COL_ARG0;
        if (a < 0 || a >= v->nargs) continue;
        if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
        seen |= 1 << a;
        if (!c->usable) { unusable |= 1 << a; continue; }
        idx[a] = i;
    }
    int all = (1 << v->nargs) - 1;
    for (int a = 0; a < v->nargs; a++) {
        if (idx[a] >= 0) continue;
        if (unusable & (1 << a)) return SQLITE_CONSTRAINT;
        if (!(seen & (1 << a))) {
            sqlite3_free(vt->zErrMsg);
            vt->zErrMsg = sqlite3_mprintf("%s(): missing argument %s", v->range ? "promql_range" : "promql",
                                          (v->range ? arg_names_range : arg_names_instant)[a]);
            return SQLITE_ERROR;
        }
    }
    for (int a = 0; a < v->nargs; a++) {
        info->aConstraintUsage[idx[a]].argvIndex = a + 1;
        info->aConstraintUsage[idx[a]].omit = 1;
    }
    info->idxNum = all;
    info->estimatedCost = 1000;
    info->estimatedRows = 100;
    return SQLITE_OK;
}

static int pq_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    pq_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    (void)vt;
    return SQLITE_OK;
}

static void cursor_reset(pq_cursor *c)
{
    od_promql_result_free(c->r);
    c->r = NULL;
    free(c->labels_json);
    c->labels_json = NULL;
    c->json_for = 0;
    c->si = c->pi = 0;
    c->single_done = 0;
    c->rowid = 0;
}

static int pq_close(sqlite3_vtab_cursor *cur)
{
    pq_cursor *c = (pq_cursor *)cur;
    cursor_reset(c);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* days since 1970-01-01 of a civil date (proleptic Gregorian) */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM] (a space may replace T). */
static int parse_rfc3339(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, se, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6 || n == 0) return -1;
    const char *p = s + n;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3) frac = frac * 10 + (*p - '0');
            digits++;
            p++;
        }
        for (; digits < 3; digits++) frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') p++;
    else if (*p == '+' || *p == '-') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2) return -1;
        off = (oh * 60 + om) * 60000LL * (*p == '-' ? -1 : 1);
        p += 6;
    } else return -1;
    if (*p) return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return -1;
    *ms = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se) * 1000) + frac - off;
    return 0;
}

static int arg_time(sqlite3_value *v, int64_t *ms, int is_step)
{
    switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER: *ms = sqlite3_value_int64(v); return 0;
    case SQLITE_FLOAT: {
        double d = sqlite3_value_double(v);
        if (!isfinite(d) || fabs(d) > 9e18) return -1;
        *ms = (int64_t)llround(d);
        return 0;
    }
    case SQLITE_TEXT: {
        const char *s = (const char *)sqlite3_value_text(v);
        char *end;
        long long x = strtoll(s, &end, 10);
        if (end != s && *end == 0) { *ms = x; return 0; }
        if (is_step) {
            od_promql_expr *e;
            od_err err;
            /* a duration literal parses as a number of seconds */
            if (od_promql_parse(s, &e, &err) != OD_OK) return -1;
            od_promql_mem *m = NULL;
            int rc = -1;
            if (od_promql_expr_type(e) == OD_PROMQL_SCALAR && od_promql_mem_new(&m, &err) == OD_OK) {
                od_promql_source src = od_promql_mem_source(m);
                od_promql_result *r = NULL;
                if (od_promql_eval_instant(&src, e, 0, NULL, &r, &err) == OD_OK && r->type == OD_PROMQL_SCALAR &&
                    isfinite(r->scalar)) {
                    *ms = (int64_t)llround(r->scalar * 1000.0);
                    rc = 0;
                }
                od_promql_result_free(r);
            }
            od_promql_mem_free(m);
            od_promql_expr_free(e);
            return rc;
        }
        return parse_rfc3339(s, ms);
    }
    default: return -1;
    }
}

static int pq_filter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc, sqlite3_value **argv)
{
    pq_cursor *c = (pq_cursor *)cur;
    pq_vtab *v = (pq_vtab *)cur->pVtab;
    const char *fn = v->range ? "promql_range" : "promql";
    cursor_reset(c);
    sqlite3_free(v->base.zErrMsg);
    v->base.zErrMsg = NULL;
    (void)idxNum; (void)idxStr;
    if (argc != v->nargs) {
        v->base.zErrMsg = sqlite3_mprintf("%s(): expected %d arguments", fn, v->nargs);
        return SQLITE_ERROR;
    }
    const char *table = (const char *)sqlite3_value_text(argv[0]);
    const char *query = (const char *)sqlite3_value_text(argv[1]);
    if (!table || !query) {
        v->base.zErrMsg = sqlite3_mprintf("%s(): %s must not be NULL", fn, !table ? "tsdb_table" : "query");
        return SQLITE_ERROR;
    }
    int64_t t[3] = {0, 0, 0};
    const char **names = v->range ? arg_names_range : arg_names_instant;
    for (int a = 2; a < v->nargs; a++) {
        if (arg_time(argv[a], &t[a - 2], a == 4) != 0) {
            v->base.zErrMsg = sqlite3_mprintf("%s(): argument %s must be a time in ms or RFC 3339%s", fn, names[a],
                                              a == 4 ? " (step: ms or a duration like '1m')" : "");
            return SQLITE_ERROR;
        }
    }
    char *emsg = NULL;
    od_tsdb *tsdb = od_vtab_tsdb_lookup(v->db, table, &emsg);
    if (!tsdb) {
        v->base.zErrMsg = sqlite3_mprintf("%s(): %s", fn, emsg ? emsg : "no such tsdb table");
        sqlite3_free(emsg);
        return SQLITE_ERROR;
    }
    sqlite3_free(emsg);
    od_err err;
    od_err_clear(&err);
    od_promql_tsdb_src *src = NULL;
    int rc = od_promql_tsdb_src_open(tsdb, &src, &err);
    if (rc == OD_OK) {
        od_promql_source s = od_promql_tsdb_src_source(src);
        if (v->range) rc = od_promql_query_range(&s, query, t[0], t[1], t[2], NULL, &c->r, &err);
        else rc = od_promql_query_instant(&s, query, t[0], NULL, &c->r, &err);
        od_promql_tsdb_src_close(src);
    }
    if (rc != OD_OK) {
        v->base.zErrMsg = sqlite3_mprintf("%s", err.msg[0] ? err.msg : "promql: evaluation failed");
        return rc == OD_NOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
    }
    return SQLITE_OK;
}

static int pq_eof(sqlite3_vtab_cursor *cur)
{
    pq_cursor *c = (pq_cursor *)cur;
    if (!c->r) return 1;
    switch (c->r->type) {
    case OD_PROMQL_SCALAR:
    case OD_PROMQL_STRING: return c->single_done;
    case OD_PROMQL_VECTOR: return c->si >= c->r->nseries;
    default:
        while (c->si < c->r->nseries && c->pi >= c->r->series[c->si].npoints) { c->si++; c->pi = 0; }
        return c->si >= c->r->nseries;
    }
}

static int pq_next(sqlite3_vtab_cursor *cur)
{
    pq_cursor *c = (pq_cursor *)cur;
    c->rowid++;
    switch (c->r->type) {
    case OD_PROMQL_SCALAR:
    case OD_PROMQL_STRING: c->single_done = 1; break;
    case OD_PROMQL_VECTOR: c->si++; break;
    default:
        c->pi++;
        while (c->si < c->r->nseries && c->pi >= c->r->series[c->si].npoints) { c->si++; c->pi = 0; }
        break;
    }
    return SQLITE_OK;
}

static int labels_json(pq_cursor *c, const od_promql_series *s)
{
    if (c->json_for == c->si + 1) return SQLITE_OK;
    free(c->labels_json);
    c->labels_json = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return SQLITE_NOMEM;
    for (size_t i = 0; i < s->nlabels; i++) {
        if (strcmp(s->labels[i].name, "__name__") == 0) continue;
        if (!cJSON_AddStringToObject(o, s->labels[i].name, s->labels[i].value)) { cJSON_Delete(o); return SQLITE_NOMEM; }
    }
    c->labels_json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!c->labels_json) return SQLITE_NOMEM;
    c->json_for = c->si + 1;
    return SQLITE_OK;
}

static int pq_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    pq_cursor *c = (pq_cursor *)cur;
    od_promql_result *r = c->r;
    if (r->type == OD_PROMQL_SCALAR || r->type == OD_PROMQL_STRING) {
        switch (col) {
        case COL_METRIC: sqlite3_result_null(ctx); break;
        case COL_LABELS: sqlite3_result_text(ctx, "{}", 2, SQLITE_STATIC); break;
        case COL_TS: sqlite3_result_int64(ctx, r->t); break;
        case COL_VALUE:
            if (r->type == OD_PROMQL_STRING) sqlite3_result_text(ctx, r->string, -1, SQLITE_TRANSIENT);
            else if (isnan(r->scalar)) sqlite3_result_null(ctx);
            else sqlite3_result_double(ctx, r->scalar);
            break;
        default: sqlite3_result_null(ctx);
        }
        return SQLITE_OK;
    }
    const od_promql_series *s = &r->series[c->si];
    const od_promql_point *p = &s->points[r->type == OD_PROMQL_VECTOR ? 0 : c->pi];
    switch (col) {
    case COL_METRIC: {
        const char *m = NULL;
        for (size_t i = 0; i < s->nlabels; i++)
            if (strcmp(s->labels[i].name, "__name__") == 0) m = s->labels[i].value;
        if (m) sqlite3_result_text(ctx, m, -1, SQLITE_TRANSIENT);
        else sqlite3_result_null(ctx);
        break;
    }
    case COL_LABELS: {
        int rc = labels_json(c, s);
        if (rc != SQLITE_OK) return rc;
        sqlite3_result_text(ctx, c->labels_json, -1, SQLITE_TRANSIENT);
        break;
    }
    case COL_TS: sqlite3_result_int64(ctx, p->t); break;
    case COL_VALUE:
        if (isnan(p->v)) sqlite3_result_null(ctx);
        else sqlite3_result_double(ctx, p->v);
        break;
    default: sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

static int pq_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    *rowid = ((pq_cursor *)cur)->rowid;
    return SQLITE_OK;
}

static sqlite3_module promql_module = {
    0,              /* iVersion */
    0,              /* xCreate: eponymous-only */
    pq_connect, pq_best_index, pq_disconnect, 0, pq_open, pq_close, pq_filter, pq_next, pq_eof,
    pq_column, pq_rowid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

int od_vtab_promql_register(sqlite3 *db)
{
    static int range_tag;
    int rc = sqlite3_create_module(db, "promql", &promql_module, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module(db, "promql_range", &promql_module, &range_tag);
    return rc;
}
