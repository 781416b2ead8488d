/*
 * vtab_tsdb.c — the `tsdb` virtual table: a Prometheus-style TSDB (core/tsdb) as SQL.
 *
 * Usage:
 *   CREATE VIRTUAL TABLE m USING tsdb('<store uri>' [, retention=30d] [, bucket=2h]
 *                                      [, mode=lazy|writer|readonly] [, compact_interval=30s]);
 *   (compact_interval: how often the writer's background thread merges chunk fragments;
 *    0 = never, only tsdb_compact(); the first table opened on a store in a process sets it)
 *   INSERT INTO m(metric, labels, ts, value) VALUES ('up', '{"job":"api"}', 1700000000000, 1);
 *   SELECT metric, labels, ts, value FROM m WHERE metric = 'up' AND ts BETWEEN ? AND ?;
 *   SELECT * FROM m WHERE selector = 'http_requests_total{code=~"5.."}';
 *   SELECT * FROM m_series;  SELECT * FROM m_labels;  SELECT * FROM m_stats;
 *
 * Tables:
 *   m(metric TEXT, labels TEXT, ts INTEGER, value REAL, selector HIDDEN, value_bits HIDDEN,
 *     value_text HIDDEN)
 *       one row per sample; labels is a JSON object of every label but __name__. SQLite has no
 *       NaN: NaN values (stale markers included) read as NULL in value; value_bits is the exact
 *       IEEE-754 bits (signed 64-bit), value_text the Prometheus text form (NaN, +Inf, -Inf,
 *       shortest exact decimal). INSERT takes value as a number or the text NaN/Inf/+Inf/-Inf
 *       (any case), or value_bits instead (exact bits: the stale marker 0x7ff0000000000002).
 *       INSERT only (DELETE/UPDATE are errors: samples leave through retention).
 *   m_series(metric, labels, series, id, selector HIDDEN)   one row per series (module tsdb_series)
 *   m_labels(name, value, selector HIDDEN)                 label name/value pairs (tsdb_labels)
 *   m_stats(bucket_start, bucket_end, series, samples, chunks, chunk_bytes, index_bytes)
 *                                                          storage by time bucket (tsdb_stats)
 *   The companions are created, dropped and renamed (xRename runs ALTER TABLE on them, as FTS5
 *   does for its shadow tables) with m, with the same arguments; they can also be created by
 *   hand: CREATE VIRTUAL TABLE x USING tsdb_series('<uri>').
 * Functions: tsdb_label(labels_json, name) → the label's value or NULL;
 *            tsdb_bucket(ts, width) → ts rounded down to a multiple of width (ms or '5m');
 *            tsdb_compact(table) → compacts the table's store now, returns its bucket count.
 *
 * Query plan (xBestIndex). idxNum is a bitmask, idxStr lists the argv values in order, one
 * token per argument, so EXPLAIN QUERY PLAN shows exactly what was pushed down:
 *   0x01 "metric="   metric = ?            0x02 "metric_in"  metric IN (...) (all values at once)
 *   0x04 "selector=" selector = ?          0x08 "ts>" / "ts>=" / "ts=" lower bound(s)
 *   0x10 "ts<" / "ts<=" / "ts=" upper bound(s)
 *   0x20 "limit"     LIMIT ?               0x40 "offset"     OFFSET ?
 * Every pushed constraint is applied exactly as SQLite would (text equality for metric, the
 * numeric/text/NULL ordering rules for ts), so they are all omitted from SQLite's re-check;
 * LIMIT/OFFSET are taken only on the main table, when every constraint of the query was pushed
 * and there is no ORDER BY. Nothing is
 * required, so no plan is impossible; unbounded scans are costed high so joins drive lookups
 * by metric.
 *
 * Transactions: INSERTed rows are buffered per table in the vtab (grouped by series) and given
 * to the engine as one atomic batch in xSync, which waits until it is durable in the object
 * store; ROLLBACK (and ROLLBACK TO, and a failed statement) discards them. xSync refuses a
 * batch with a sample older than the retention window of its newest sample before writing
 * anything (the engine would drop that sample and write the rest).
 * Read-your-own-writes: a SELECT on m copies the buffered series it selects at xFilter and
 * merges them into the engine's rows (series in label order, then time; a buffered timestamp
 * replaces the stored sample), so every pushdown, LIMIT/OFFSET included, sees the merged rows.
 * The _series/_labels companions of m (found by name in the connection map) add the buffered
 * series too (id NULL until COMMIT). Other connections see the rows after COMMIT.
 *
 * Engine handles: all connections of a process share one od_tsdb per store URI (handles.c).
 * It opens in lazy-writer mode: reading never fences anybody, and the first INSERT makes this
 * process the writer — a second writer process then gets the engine's OD_BUSY lease refusal
 * as the INSERT's error. A per-connection map (table name → od_tsdb) serves
 * od_vtab_tsdb_lookup for the PromQL functions.
 *
 * Security: the module reads and writes stores named by its arguments, so it is
 * SQLITE_VTAB_DIRECTONLY (not usable from triggers or views of an untrusted schema).
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/tsdb/od_tsdb.h"
#include "od_vtab.h"

#define KIND "tsdb"

/* ---------------------------------------------------------------- connection map */

struct tvtab;

typedef struct regent {
    sqlite3 *db;
    char *schema; /* the database holding the table (main, temp, an attached name) */
    char *name;
    od_tsdb *t;
    struct tvtab *v; /* the main table's vtab (its transaction buffer, for the companions) */
    struct regent *next;
} regent;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static regent *reg_head;

static int reg_add(sqlite3 *db, const char *schema, const char *name, od_tsdb *t, struct tvtab *v)
{
    regent *e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name)) || !(e->schema = strdup(schema))) {
        if (e) free(e->name);
        free(e);
        return SQLITE_NOMEM;
    }
    e->db = db;
    e->t = t;
    e->v = v;
    pthread_mutex_lock(&reg_mu);
    e->next = reg_head;
    reg_head = e;
    pthread_mutex_unlock(&reg_mu);
    return SQLITE_OK;
}

/* Remove the entry of vtab v. By identity, not by name: two vtabs of one connection can carry
 * the same name for a while (a table renamed inside a transaction is connected again under
 * its new name while the old vtab is held until COMMIT), and removing the other one's entry
 * would leave one that points to a freed vtab. */
static void reg_del(sqlite3 *db, const struct tvtab *v)
{
    pthread_mutex_lock(&reg_mu);
    for (regent **pp = &reg_head; *pp; pp = &(*pp)->next) {
        regent *e = *pp;
        if (e->db == db && e->v == v) {
            *pp = e->next;
            free(e->schema);
            free(e->name);
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

static od_tsdb *reg_find(sqlite3 *db, const char *name)
{
    od_tsdb *t = NULL;
    pthread_mutex_lock(&reg_mu);
    for (regent *e = reg_head; e; e = e->next)
        if (e->db == db && sqlite3_stricmp(e->name, name) == 0) {
            t = e->t;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    return t;
}

/* The main table schema.name of this connection if it is open on the store t (else NULL). */
static struct tvtab *reg_find_vtab(sqlite3 *db, const char *schema, const char *name, const od_tsdb *t)
{
    struct tvtab *v = NULL;
    pthread_mutex_lock(&reg_mu);
    for (regent *e = reg_head; e; e = e->next)
        if (e->db == db && e->t == t && sqlite3_stricmp(e->name, name) == 0 && sqlite3_stricmp(e->schema, schema) == 0) {
            v = e->v;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    return v;
}

void *od_vtab_tsdb_lookup(sqlite3 *db, const char *table, char **errmsg)
{
    od_tsdb *t = reg_find(db, table);
    if (!t) {
        /* Not connected yet on this connection: preparing a statement on it connects it. */
        char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\" LIMIT 0", table);
        sqlite3_stmt *st = NULL;
        if (sql) sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        sqlite3_finalize(st);
        sqlite3_free(sql);
        t = reg_find(db, table);
    }
    if (!t && errmsg) *errmsg = sqlite3_mprintf("no tsdb table named \"%s\"", table);
    return t;
}

/* ---------------------------------------------------------------- arguments */

/* "30d", "2h", "15m", "10s", "500ms", "1w", "1y" or plain milliseconds. */
static int parse_duration(const char *s, int64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0 || !isfinite(v)) return 0;
    double mul = 1;
    if (*end == 0 || strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "s") == 0) mul = 1e3;
    else if (strcmp(end, "m") == 0) mul = 60e3;
    else if (strcmp(end, "h") == 0) mul = 3600e3;
    else if (strcmp(end, "d") == 0) mul = 86400e3;
    else if (strcmp(end, "w") == 0) mul = 7 * 86400e3;
    else if (strcmp(end, "y") == 0) mul = 365 * 86400e3;
    else return 0;
    if (v * mul > 9e18) return 0;
    *out = (int64_t)(v * mul);
    return 1;
}

static char *dequote(const char *s)
{
    size_t n = strlen(s);
    while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    char *o = sqlite3_malloc64(n + 1);
    if (!o) return NULL;
    if (n >= 2 && (s[0] == '\'' || s[0] == '"') && s[n - 1] == s[0]) {
        char q = s[0];
        size_t w = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            o[w++] = s[i];
            if (s[i] == q && s[i + 1] == q) i++;
        }
        o[w] = 0;
    } else {
        memcpy(o, s, n);
        o[n] = 0;
    }
    return o;
}

typedef struct targs {
    char *uri;
    od_tsdb_options o;
} targs;

static int parse_args(int argc, const char *const *argv, targs *a, char **pzErr)
{
    od_tsdb_options_init(&a->o);
    a->o.mode = OD_TSDB_LAZY_WRITER;
    a->uri = NULL;
    if (argc < 4) {
        *pzErr = sqlite3_mprintf("%s: missing store URI: use %s('<uri>' [, retention=30d] [, bucket=2h])", argv[0],
                                 argv[0]);
        return SQLITE_ERROR;
    }
    a->uri = dequote(argv[3]);
    if (!a->uri) return SQLITE_NOMEM;
    if (!a->uri[0]) {
        *pzErr = sqlite3_mprintf("%s: empty store URI", argv[0]);
        return SQLITE_ERROR;
    }
    for (int i = 4; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq) {
            *pzErr = sqlite3_mprintf("%s: bad option \"%s\" (expected name=value)", argv[0], argv[i]);
            return SQLITE_ERROR;
        }
        char *rawkey = sqlite3_mprintf("%.*s", (int)(eq - argv[i]), argv[i]);
        char *key = rawkey ? dequote(rawkey) : NULL;
        sqlite3_free(rawkey);
        char *val = dequote(eq + 1);
        int rc = SQLITE_OK;
        int64_t ms;
        if (!key || !val) rc = SQLITE_NOMEM;
        else if (strcmp(key, "retention") == 0) {
            if (parse_duration(val, &ms)) a->o.retention_ms = ms;
            else rc = SQLITE_ERROR;
        } else if (strcmp(key, "bucket") == 0) {
            if (parse_duration(val, &ms) && ms >= 1000) a->o.bucket_ms = ms;
            else rc = SQLITE_ERROR;
        } else if (strcmp(key, "compact_interval") == 0) {
            if (parse_duration(val, &ms)) a->o.compact_interval_ms = ms; /* 0 = off */
            else rc = SQLITE_ERROR;
        } else if (strcmp(key, "mode") == 0) {
            if (strcmp(val, "lazy") == 0) a->o.mode = OD_TSDB_LAZY_WRITER;
            else if (strcmp(val, "writer") == 0) a->o.mode = OD_TSDB_WRITER;
            else if (strcmp(val, "readonly") == 0) a->o.mode = OD_TSDB_READ_ONLY;
            else rc = SQLITE_ERROR;
        } else {
            *pzErr = sqlite3_mprintf("%s: unknown option \"%s\" (known: retention, bucket, mode, compact_interval)", argv[0], key);
            rc = SQLITE_ERROR;
        }
        if (rc == SQLITE_ERROR && !*pzErr)
            *pzErr = sqlite3_mprintf("%s: bad value \"%s\" for option %s", argv[0], val, key);
        sqlite3_free(key);
        sqlite3_free(val);
        if (rc) return rc;
    }
    return SQLITE_OK;
}

static int open_handle(const char *uri, void *ctx, void **h, od_err *err)
{
    od_tsdb *t = NULL;
    int rc = od_tsdb_open(uri, (const od_tsdb_options *)ctx, &t, err);
    *h = t;
    return rc;
}

static void close_handle(void *h)
{
    od_err e;
    od_tsdb_close(h, &e);
}

/* ---------------------------------------------------------------- vtab objects */

typedef enum tkind { K_MAIN = 0, K_SERIES, K_LABELS, K_STATS } tkind;

static const char *const SCHEMA[] = {
    "CREATE TABLE x(metric TEXT, labels TEXT, ts INTEGER, value REAL, selector TEXT HIDDEN, value_bits INTEGER HIDDEN, "
    "value_text TEXT HIDDEN)",
    "CREATE TABLE x(metric TEXT, labels TEXT, series TEXT, id INTEGER, selector TEXT HIDDEN)",
    "CREATE TABLE x(name TEXT, value TEXT, selector TEXT HIDDEN)",
    "CREATE TABLE x(bucket_start INTEGER, bucket_end INTEGER, series INTEGER, samples INTEGER, chunks INTEGER, "
    "chunk_bytes INTEGER, index_bytes INTEGER)",
};
static const char *const SUFFIX[] = {"", "_series", "_labels", "_stats"};
static const char *const MODNAME[] = {"tsdb", "tsdb_series", "tsdb_labels", "tsdb_stats"};

enum { COL_METRIC = 0, COL_LABELS = 1, COL_TS = 2, COL_VALUE = 3, COL_SELECTOR = 4, COL_VALUE_BITS = 5, COL_VALUE_TEXT = 6 };

/* A series with rows buffered by the open transaction. */
typedef struct pend {
    od_labels ls;
    uint64_t h;
    od_sample *s;
    size_t n, cap;
} pend;

typedef struct tvtab {
    sqlite3_vtab base;
    sqlite3 *db;
    tkind kind;
    char *schema; /* the database (main, temp, attached name) holding the table */
    char *name;
    od_tsdb *t;
    /* transaction buffer (main table only) */
    pend *p;
    size_t np, capp;
    size_t *slot; /* open-addressing index into p by label hash (value = index + 1) */
    size_t nslot;
    size_t *log;  /* pend index of every buffered row, in order (for ROLLBACK TO) */
    size_t nlog, caplog;
    size_t *svp;  /* log length at each savepoint level */
    int nsvp;
    sqlite3_int64 rowid;
} tvtab;

static int vt_error(tvtab *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_free(v->base.zErrMsg);
    v->base.zErrMsg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    return SQLITE_ERROR;
}

static int od_to_sqlite(int code)
{
    switch (code) {
    case OD_OK: return SQLITE_OK;
    case OD_NOMEM: return SQLITE_NOMEM;
    case OD_BUSY: return SQLITE_BUSY;
    case OD_CORRUPT: return SQLITE_CORRUPT;
    default: return SQLITE_ERROR;
    }
}

static void pend_clear(tvtab *v)
{
    for (size_t i = 0; i < v->np; i++) {
        od_labels_free(&v->p[i].ls);
        free(v->p[i].s);
    }
    v->np = 0;
    if (v->slot) memset(v->slot, 0, v->nslot * sizeof *v->slot);
    v->nlog = 0;
    v->nsvp = 0;
}

static void pend_free(tvtab *v)
{
    pend_clear(v);
    free(v->p);
    free(v->slot);
    free(v->log);
    free(v->svp);
    v->p = NULL;
    v->slot = NULL;
    v->log = NULL;
    v->svp = NULL;
    v->capp = v->nslot = v->caplog = 0;
}

static void vt_free(tvtab *v)
{
    if (!v) return;
    pend_free(v);
    if (v->t) od_vtab_handle_release(v->t);
    sqlite3_free(v->name);
    sqlite3_free(v->schema);
    sqlite3_free(v);
}

static int vt_init(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **ppVtab, char **pzErr,
                   int create)
{
    tkind kind = (tkind)(intptr_t)aux;
    targs a;
    int rc = parse_args(argc, argv, &a, pzErr);
    if (rc) {
        sqlite3_free(a.uri);
        return rc;
    }
    tvtab *v = sqlite3_malloc(sizeof *v);
    if (!v) {
        sqlite3_free(a.uri);
        return SQLITE_NOMEM;
    }
    memset(v, 0, sizeof *v);
    v->db = db;
    v->kind = kind;
    v->name = sqlite3_mprintf("%s", argv[2]);
    v->schema = sqlite3_mprintf("%s", argv[1]);
    if (!v->name || !v->schema) {
        sqlite3_free(a.uri);
        vt_free(v);
        return SQLITE_NOMEM;
    }
    od_err e;
    od_err_clear(&e);
    void *h = NULL;
    rc = od_vtab_handle_acquire(KIND, a.uri, open_handle, &a.o, close_handle, &h, &e);
    if (rc) {
        *pzErr = sqlite3_mprintf("%s: %s", argv[0], e.msg);
        sqlite3_free(a.uri);
        vt_free(v);
        return od_to_sqlite(rc);
    }
    v->t = h;
    rc = sqlite3_declare_vtab(db, SCHEMA[kind]);
    if (rc == SQLITE_OK) rc = sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    if (rc == SQLITE_OK && kind == K_MAIN) rc = reg_add(db, argv[1], argv[2], v->t, v);
    if (rc == SQLITE_OK && kind == K_MAIN && create) {
        /* companion tables, with the same arguments */
        char *args = sqlite3_mprintf("%s", argv[3]);
        for (int i = 4; args && i < argc; i++) {
            char *n = sqlite3_mprintf("%s, %s", args, argv[i]);
            sqlite3_free(args);
            args = n;
        }
        for (int k = K_SERIES; args && rc == SQLITE_OK && k <= K_STATS; k++) {
            char *sql = sqlite3_mprintf("CREATE VIRTUAL TABLE IF NOT EXISTS \"%w\".\"%w%s\" USING %s(%s)", argv[1],
                                        argv[2], SUFFIX[k], MODNAME[k], args);
            char *err = NULL;
            rc = sql ? sqlite3_exec(db, sql, NULL, NULL, &err) : SQLITE_NOMEM;
            if (rc) *pzErr = sqlite3_mprintf("%s: cannot create %s%s: %s", argv[0], argv[2], SUFFIX[k], err);
            sqlite3_free(err);
            sqlite3_free(sql);
        }
        if (!args) rc = SQLITE_NOMEM;
        sqlite3_free(args);
    }
    sqlite3_free(a.uri);
    if (rc) {
        if (kind == K_MAIN) reg_del(db, v);
        vt_free(v);
        return rc;
    }
    *ppVtab = &v->base;
    return SQLITE_OK;
}

static int xCreate(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **pp, char **pzErr)
{
    return vt_init(db, aux, argc, argv, pp, pzErr, 1);
}

static int xConnect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **pp, char **pzErr)
{
    return vt_init(db, aux, argc, argv, pp, pzErr, 0);
}

static int xDisconnect(sqlite3_vtab *pv)
{
    tvtab *v = (tvtab *)pv;
    if (v->kind == K_MAIN) reg_del(v->db, v);
    vt_free(v);
    return SQLITE_OK;
}

static int xDestroy(sqlite3_vtab *pv)
{
    tvtab *v = (tvtab *)pv;
    if (v->kind == K_MAIN) {
        for (int k = K_SERIES; k <= K_STATS; k++) {
            char *sql = sqlite3_mprintf("DROP TABLE IF EXISTS \"%w\".\"%w%s\"", v->schema, v->name, SUFFIX[k]);
            if (sql) sqlite3_exec(v->db, sql, NULL, NULL, NULL);
            sqlite3_free(sql);
        }
    }
    return xDisconnect(pv);
}

/* ---------------------------------------------------------------- planning */

enum {
    P_METRIC_EQ = 0x01,
    P_METRIC_IN = 0x02,
    P_SELECTOR = 0x04,
    P_TS_LO = 0x08,
    P_TS_HI = 0x10,
    P_LIMIT = 0x20,
    P_OFFSET = 0x40,
};

/* Column roles per table kind (-1: none). */
static int col_metric(tkind k) { return k == K_MAIN || k == K_SERIES ? 0 : k == K_LABELS ? 0 : -1; }
static int col_selector(tkind k) { return k == K_MAIN || k == K_SERIES ? 4 : k == K_LABELS ? 2 : -1; }
static int col_ts(tkind k) { return k == K_MAIN ? COL_TS : -1; }

static int is_binary(sqlite3_index_info *info, int i)
{
    const char *c = sqlite3_vtab_collation(info, i);
    return !c || sqlite3_stricmp(c, "BINARY") == 0;
}

static int xBestIndex(sqlite3_vtab *pv, sqlite3_index_info *info)
{
    tvtab *v = (tvtab *)pv;
    int argv_n = 0, mask = 0, handled_all = 1;
    char tok[512];
    size_t tl = 0;
    double rows = v->kind == K_STATS ? 100 : v->kind == K_MAIN ? 1e9 : 1e5;
    tok[0] = 0;
    int cm = col_metric(v->kind), cs = col_selector(v->kind), ct = col_ts(v->kind);
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (c->op == SQLITE_INDEX_CONSTRAINT_LIMIT || c->op == SQLITE_INDEX_CONSTRAINT_OFFSET) continue;
        const char *t = NULL;
        int bit = 0;
        if (!c->usable) {
            handled_all = 0;
            continue;
        }
        if (c->iColumn == cm && c->op == SQLITE_INDEX_CONSTRAINT_EQ && is_binary(info, i) &&
            !(mask & (P_METRIC_EQ | P_METRIC_IN))) {
            if (v->kind != K_LABELS && sqlite3_vtab_in(info, i, -1)) {
                sqlite3_vtab_in(info, i, 1);
                bit = P_METRIC_IN;
                t = "metric_in";
                rows /= 1e5;
            } else {
                bit = P_METRIC_EQ;
                t = v->kind == K_LABELS ? "name=" : "metric=";
                rows /= 1e6;
            }
        } else if (c->iColumn == cs && c->op == SQLITE_INDEX_CONSTRAINT_EQ && !(mask & P_SELECTOR)) {
            bit = P_SELECTOR;
            t = "selector=";
            rows /= 1e6;
        } else if (c->iColumn == ct && ct >= 0) {
            switch (c->op) {
            case SQLITE_INDEX_CONSTRAINT_GT: t = "ts>"; bit = P_TS_LO; rows /= 4; break;
            case SQLITE_INDEX_CONSTRAINT_GE: t = "ts>="; bit = P_TS_LO; rows /= 4; break;
            case SQLITE_INDEX_CONSTRAINT_LT: t = "ts<"; bit = P_TS_HI; rows /= 4; break;
            case SQLITE_INDEX_CONSTRAINT_LE: t = "ts<="; bit = P_TS_HI; rows /= 4; break;
            case SQLITE_INDEX_CONSTRAINT_EQ: t = "ts="; bit = P_TS_LO | P_TS_HI; rows /= 1e5; break;
            default: break;
            }
        }
        if (!t || tl + strlen(t) + 2 >= sizeof tok) {
            handled_all = 0;
            continue;
        }
        mask |= bit;
        info->aConstraintUsage[i].argvIndex = ++argv_n;
        info->aConstraintUsage[i].omit = 1;
        tl += (size_t)snprintf(tok + tl, sizeof tok - tl, "%s%s", tl ? " " : "", t);
    }
    /* LIMIT/OFFSET only without ORDER BY: SQLite offers them with an ORDER BY on the table's
     * columns too, expecting the rows in that order when they are used (orderByConsumed);
     * the rows come in series order, so cutting them here would cut before the sort. */
    if (handled_all && v->kind == K_MAIN && info->nOrderBy == 0) {
        for (int i = 0; i < info->nConstraint; i++) {
            const struct sqlite3_index_constraint *c = &info->aConstraint[i];
            if (!c->usable) continue;
            const char *t = c->op == SQLITE_INDEX_CONSTRAINT_LIMIT ? "limit"
                            : c->op == SQLITE_INDEX_CONSTRAINT_OFFSET ? "offset" : NULL;
            if (!t || tl + 8 >= sizeof tok) continue;
            mask |= c->op == SQLITE_INDEX_CONSTRAINT_LIMIT ? P_LIMIT : P_OFFSET;
            info->aConstraintUsage[i].argvIndex = ++argv_n;
            info->aConstraintUsage[i].omit = 1;
            tl += (size_t)snprintf(tok + tl, sizeof tok - tl, "%s%s", tl ? " " : "", t);
        }
    }
    if (rows < 1) rows = 1;
    info->idxNum = mask;
    info->idxStr = sqlite3_mprintf("%s", tok);
    info->needToFreeIdxStr = 1;
    info->estimatedRows = (sqlite3_int64)rows;
    /* An unbounded scan of the samples reads the whole store: make it look prohibitive so a
     * join with an application table drives lookups by metric instead. */
    int bounded = (mask & (P_METRIC_EQ | P_METRIC_IN | P_SELECTOR)) || v->kind != K_MAIN;
    info->estimatedCost = bounded ? rows * 10 + 100 : 1e15;
    /* Output is ordered by series (labels) then time; ORDER BY is left to SQLite. */
    return info->idxStr ? SQLITE_OK : SQLITE_NOMEM;
}

/* ---------------------------------------------------------------- values */

/* IEEE-754 bits <-> double (memcpy: no aliasing games). */
static uint64_t bits_of(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static double double_of(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* The special values in Prometheus spelling (Go's strconv.ParseFloat accepts them in any
 * case): NaN (Go's math.NaN() bits, as Prometheus writes them), Inf / +Inf / -Inf and the
 * long form Infinity. 1 when recognised. */
static int parse_special(const char *s, double *out)
{
    int neg = 0;
    const char *p = s;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (sqlite3_stricmp(p, "inf") == 0 || sqlite3_stricmp(p, "infinity") == 0) {
        *out = neg ? -INFINITY : INFINITY;
        return 1;
    }
    if (p == s && sqlite3_stricmp(p, "nan") == 0) {
        *out = double_of(OD_NORMAL_NAN_BITS);
        return 1;
    }
    return 0;
}

/* Prometheus text form of a value: NaN, +Inf, -Inf, or the shortest decimal that reads back
 * to the same double. */
static void format_value(double d, char *out, size_t n)
{
    if (isnan(d)) snprintf(out, n, "NaN");
    else if (isinf(d)) snprintf(out, n, "%cInf", d > 0 ? '+' : '-');
    else {
        /* 15 digits always read back to a decimal of <= 15 digits, except for subnormals
         * (fewer significant bits): search those from 1 digit */
        for (int prec = fpclassify(d) == FP_SUBNORMAL ? 1 : 15; prec <= 17; prec++) {
            snprintf(out, n, "%.*g", prec, d);
            if (strtod(out, NULL) == d) break;
        }
    }
}

/* The sample value of an INSERT: `value` (a number, or one of the texts NaN, Inf, +Inf, -Inf)
 * or `value_bits` (the exact IEEE-754 bits, e.g. the stale marker 0x7ff0000000000002);
 * exactly one of them. `value_text` is read-only. */
static int sample_value(tvtab *v, sqlite3_value *value, sqlite3_value *bits, sqlite3_value *text, double *out)
{
    if (sqlite3_value_type(text) != SQLITE_NULL)
        return vt_error(v, "tsdb: value_text cannot be inserted (write value, or value_bits for exact bits)");
    if (sqlite3_value_type(bits) != SQLITE_NULL) {
        if (sqlite3_value_type(value) != SQLITE_NULL)
            return vt_error(v, "tsdb: give value or value_bits, not both");
        if (sqlite3_value_numeric_type(bits) != SQLITE_INTEGER)
            return vt_error(v, "tsdb: value_bits must be an integer (the IEEE-754 bits of the value), got '%.100s'",
                            sqlite3_value_text(bits));
        *out = double_of((uint64_t)sqlite3_value_int64(bits));
        return SQLITE_OK;
    }
    int vt = sqlite3_value_numeric_type(value);
    if (vt == SQLITE_INTEGER || vt == SQLITE_FLOAT) {
        *out = sqlite3_value_double(value);
        return SQLITE_OK;
    }
    if (vt == SQLITE_NULL) return vt_error(v, "tsdb: value must be a number, not NULL");
    if (vt == SQLITE_TEXT && parse_special((const char *)sqlite3_value_text(value), out)) return SQLITE_OK;
    return vt_error(v, "tsdb: value must be a number, got '%.100s' (or one of 'NaN', 'Inf', '+Inf', '-Inf')",
                    sqlite3_value_text(value));
}

/* ---------------------------------------------------------------- cursors */

typedef struct cell {
    int type; /* SQLITE_INTEGER, SQLITE_TEXT, SQLITE_NULL */
    sqlite3_int64 i;
    char *s;
} cell;

/* A series of the open transaction's buffer as one SELECT sees it (copied at xFilter, so an
 * INSERT during the scan cannot move it): its samples inside the query's ts range, time-sorted,
 * the last write of a timestamp kept; `pass` is the metric pass it belongs to. */
typedef struct ovser {
    size_t pass;
    od_labels ls;
    od_sample *s;
    size_t n;
} ovser;

typedef struct tcur {
    sqlite3_vtab_cursor base;
    tvtab *v;
    od_tsdb_read *r;
    int eof;
    sqlite3_int64 rowid;
    char *selector;             /* the pushed selector (returned in the selector column) */
    /* main table */
    od_series_set **sets;
    size_t nsets, si;
    const od_labels *ls;
    od_sample_iter *it;
    const od_sample *blk;       /* the iterator's current block: rows are blk[bpos..bn) */
    size_t bn, bpos;
    char *json;                 /* labels JSON of the current series */
    sqlite3_int64 limit, skip;  /* limit < 0: none */
    const od_labels *peek;      /* next series of sets[si], fetched but not yet served */
    int set_done;               /* sets[si] has no more series */
    /* read-your-own-writes: the transaction's buffered series, sorted by (pass, labels), merged
     * into the engine's stream; ov is the current series' overlay (NULL: none), from_ov says
     * whether the current row is ov->s[opos] or blk[bpos] */
    ovser *ovs;
    size_t nov, oi;
    const ovser *ov;
    size_t opos;
    int from_ov;
    /* companions: materialized rows */
    cell *cells;
    size_t ncols, nrows, row;
} tcur;

static int xOpen(sqlite3_vtab *pv, sqlite3_vtab_cursor **pc)
{
    tcur *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->v = (tvtab *)pv;
    *pc = &c->base;
    return SQLITE_OK;
}

static void cur_reset(tcur *c)
{
    od_sample_iter_free(c->it);
    c->it = NULL;
    c->blk = NULL;
    c->bn = c->bpos = 0;
    for (size_t i = 0; i < c->nsets; i++) od_series_set_free(c->sets[i]);
    sqlite3_free(c->sets);
    c->sets = NULL;
    c->nsets = c->si = 0;
    c->ls = NULL;
    sqlite3_free(c->json);
    c->json = NULL;
    sqlite3_free(c->selector);
    c->selector = NULL;
    for (size_t i = 0; i < c->ncols * c->nrows; i++) sqlite3_free(c->cells[i].s);
    sqlite3_free(c->cells);
    c->cells = NULL;
    c->nrows = c->row = 0;
    od_tsdb_read_close(c->r);
    c->r = NULL;
    c->eof = 1;
    c->rowid = 0;
    c->peek = NULL;
    c->set_done = 0;
    for (size_t i = 0; i < c->nov; i++) {
        od_labels_free(&c->ovs[i].ls);
        free(c->ovs[i].s);
    }
    free(c->ovs);
    c->ovs = NULL;
    c->nov = c->oi = c->opos = 0;
    c->ov = NULL;
    c->from_ov = 0;
}

static int xClose(sqlite3_vtab_cursor *pc)
{
    tcur *c = (tcur *)pc;
    cur_reset(c);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int cur_err(tcur *c, const od_err *e)
{
    vt_error(c->v, "%s", e->msg);
    return od_to_sqlite(e->code);
}

static od_sample cur_sample(const tcur *c) { return c->from_ov ? c->ov->s[c->opos] : c->blk[c->bpos]; }

/* Make the current row valid, moving to the next block, series and set as needed.
 * Rows are served from the iterator's block (an array of a whole bucket of the series), so
 * xNext is an increment and xColumn an array read; the engine is called once per block.
 * A series with rows buffered by the open transaction (ov) is merged row by row: the smaller
 * timestamp first, and on equal timestamps the buffered row replaces the stored one (the last
 * write wins, as it will after COMMIT). Series are merged in label order within each pass,
 * as the engine orders them. */
static int main_step(tcur *c)
{
    od_err e;
    od_err_clear(&e);
    for (;;) {
        if (c->it && c->bpos >= c->bn) {
            if (c->bn && od_sample_iter_advance(c->it, c->bn, &e)) return cur_err(c, &e);
            od_sample_iter_block(c->it, &c->blk, &c->bn);
            c->bpos = 0;
            if (!c->bn) {
                od_sample_iter_free(c->it);
                c->it = NULL;
            }
        }
        if (c->ov && c->opos >= c->ov->n) c->ov = NULL;
        if (c->it || c->ov) {
            c->from_ov = 0;
            if (c->ov && (!c->it || c->ov->s[c->opos].t <= c->blk[c->bpos].t)) {
                if (c->it && c->ov->s[c->opos].t == c->blk[c->bpos].t) c->bpos++; /* replaced */
                c->from_ov = 1;
            }
            return SQLITE_OK;
        }
        if (c->si >= c->nsets) {
            c->eof = 1;
            return SQLITE_OK;
        }
        if (!c->peek && !c->set_done) {
            const od_labels *ls;
            if (od_series_set_next(c->sets[c->si], &ls, &e)) return cur_err(c, &e);
            if (ls) c->peek = ls;
            else c->set_done = 1;
        }
        const ovser *o = c->oi < c->nov && c->ovs[c->oi].pass == c->si ? &c->ovs[c->oi] : NULL;
        if (!c->peek && !o) {
            c->si++;
            c->set_done = 0;
            continue;
        }
        int cmp = !c->peek ? 1 : !o ? -1 : od_labels_cmp(c->peek, &o->ls);
        if (cmp <= 0) {
            c->ls = c->peek;
            c->peek = NULL;
            c->bn = c->bpos = 0;
            if (od_series_set_samples(c->sets[c->si], &c->it, &e)) return cur_err(c, &e);
        }
        if (cmp >= 0) {
            c->ls = &o->ls;
            c->ov = o;
            c->opos = 0;
            c->oi++;
        }
        od_buf j = {0};
        if (od_labels_format_json(c->ls, &j) || od_buf_cstr(&j)) {
            od_buf_free(&j);
            return SQLITE_NOMEM;
        }
        sqlite3_free(c->json);
        c->json = sqlite3_mprintf("%s", (char *)j.data);
        od_buf_free(&j);
        if (!c->json) return SQLITE_NOMEM;
    }
}

static int main_next(tcur *c)
{
    if (c->from_ov) c->opos++;
    else if (++c->bpos < c->bn && !c->ov) return SQLITE_OK;
    return main_step(c);
}

static int xNext(sqlite3_vtab_cursor *pc)
{
    tcur *c = (tcur *)pc;
    c->rowid++;
    if (c->v->kind != K_MAIN) {
        if (++c->row >= c->nrows) c->eof = 1;
        return SQLITE_OK;
    }
    if (c->limit >= 0 && c->rowid >= c->limit) {
        c->eof = 1;
        return SQLITE_OK;
    }
    return main_next(c);
}

static int xEof(sqlite3_vtab_cursor *pc) { return ((tcur *)pc)->eof; }

static int xRowid(sqlite3_vtab_cursor *pc, sqlite3_int64 *r)
{
    *r = ((tcur *)pc)->rowid;
    return SQLITE_OK;
}

static int xColumn(sqlite3_vtab_cursor *pc, sqlite3_context *ctx, int col)
{
    tcur *c = (tcur *)pc;
    if (c->v->kind != K_MAIN) {
        if (col == col_selector(c->v->kind)) {
            if (c->selector) sqlite3_result_text(ctx, c->selector, -1, SQLITE_TRANSIENT);
            return SQLITE_OK;
        }
        if ((size_t)col >= c->ncols) return SQLITE_OK;
        cell *x = &c->cells[c->row * c->ncols + (size_t)col];
        if (x->type == SQLITE_INTEGER) sqlite3_result_int64(ctx, x->i);
        else if (x->type == SQLITE_TEXT) sqlite3_result_text(ctx, x->s, -1, SQLITE_TRANSIENT);
        return SQLITE_OK;
    }
    switch (col) {
    case COL_METRIC: {
        const char *m = od_labels_get(c->ls, "__name__");
        if (m) sqlite3_result_text(ctx, m, -1, SQLITE_TRANSIENT);
        break;
    }
    case COL_LABELS: sqlite3_result_text(ctx, c->json, -1, SQLITE_TRANSIENT); break;
    case COL_TS: sqlite3_result_int64(ctx, cur_sample(c).t); break;
    case COL_VALUE: {
        double d = cur_sample(c).v;
        if (!isnan(d)) sqlite3_result_double(ctx, d);
        break;
    }
    case COL_SELECTOR:
        if (c->selector) sqlite3_result_text(ctx, c->selector, -1, SQLITE_TRANSIENT);
        break;
    case COL_VALUE_BITS: sqlite3_result_int64(ctx, (sqlite3_int64)bits_of(cur_sample(c).v)); break;
    case COL_VALUE_TEXT: {
        char buf[40];
        format_value(cur_sample(c).v, buf, sizeof buf);
        sqlite3_result_text(ctx, buf, -1, SQLITE_TRANSIENT);
        break;
    }
    }
    return SQLITE_OK;
}

/* Apply a ts constraint exactly as SQLite compares an INTEGER column with the value.
 * Returns 0 when no row can match. */
static int ts_bound(const char *op, sqlite3_value *val, int64_t *lo, int64_t *hi)
{
    int t = sqlite3_value_numeric_type(val);
    int gt = strcmp(op, "ts>") == 0, ge = strcmp(op, "ts>=") == 0, lt = strcmp(op, "ts<") == 0,
        le = strcmp(op, "ts<=") == 0, eq = strcmp(op, "ts=") == 0;
    if (t == SQLITE_NULL) return 0;
    if (t == SQLITE_TEXT || t == SQLITE_BLOB) return lt || le; /* integers sort before text/blobs */
    int64_t a, b; /* the integer bounds implied: ts >= a, ts <= b */
    a = INT64_MIN;
    b = INT64_MAX;
    if (t == SQLITE_INTEGER) {
        int64_t i = sqlite3_value_int64(val);
        if (gt) { if (i == INT64_MAX) return 0; a = i + 1; }
        if (ge) a = i;
        if (lt) { if (i == INT64_MIN) return 0; b = i - 1; }
        if (le) b = i;
        if (eq) a = b = i;
    } else {
        double d = sqlite3_value_double(val);
        const double TOP = 9223372036854775808.0; /* 2^63 */
        if (gt || ge) {
            double f = gt ? floor(d) + 1 : ceil(d);
            if (f >= TOP) return 0;
            if (f > -TOP) a = (int64_t)f;
        }
        if (lt || le) {
            double f = lt ? ceil(d) - 1 : floor(d);
            if (f < -TOP) return 0;
            if (f < TOP) b = (int64_t)f;
        }
        if (eq) {
            if (d != floor(d) || d >= TOP || d < -TOP) return 0;
            a = b = (int64_t)d;
        }
    }
    if (a > *lo) *lo = a;
    if (b < *hi) *hi = b;
    return 1;
}

static int add_cell_text(tcur *c, size_t row, size_t col, const char *s)
{
    cell *x = &c->cells[row * c->ncols + col];
    x->type = s ? SQLITE_TEXT : SQLITE_NULL;
    if (s && !(x->s = sqlite3_mprintf("%s", s))) return SQLITE_NOMEM;
    return SQLITE_OK;
}

static int grow_rows(tcur *c, size_t *cap, size_t need)
{
    if (need <= *cap) return SQLITE_OK;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    cell *n = sqlite3_realloc64(c->cells, nc * c->ncols * sizeof *n);
    if (!n) return SQLITE_NOMEM;
    memset(n + *cap * c->ncols, 0, (nc - *cap) * c->ncols * sizeof *n);
    c->cells = n;
    *cap = nc;
    return SQLITE_OK;
}

/* Build the matchers: selector's, plus __name__ = metric when given. */
static int build_matchers(tcur *c, const char *metric, od_matcher **ms, size_t *n, od_err *e)
{
    *ms = NULL;
    *n = 0;
    if (c->selector) {
        int rc = od_selector_parse(c->selector, ms, n, e);
        if (rc) return rc;
    }
    if (metric) {
        od_matcher *nm = realloc(*ms, (*n + 1) * sizeof *nm);
        if (!nm) return od_err_set(e, OD_NOMEM, "out of memory");
        *ms = nm;
        int rc = od_matcher_init(&nm[*n], OD_MATCH_EQ, "__name__", metric, e);
        if (rc) return rc;
        (*n)++;
    }
    return OD_OK;
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A row of the _series companion being built: a stored series (has_id) or a series new in the
 * open transaction. */
typedef struct srow {
    od_labels ls;
    sqlite3_int64 id;
    int has_id;
} srow;

static int srow_cmp(const void *a, const void *b)
{
    const srow *x = a, *y = b;
    int r = od_labels_cmp(&x->ls, &y->ls);
    return r ? r : y->has_id - x->has_id;
}

static int srow_add(srow **rows, size_t *n, size_t *cap, const od_labels *ls, sqlite3_int64 id, int has_id)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        srow *nr = realloc(*rows, nc * sizeof *nr);
        if (!nr) return SQLITE_NOMEM;
        *rows = nr;
        *cap = nc;
    }
    srow *r = &(*rows)[*n];
    memset(r, 0, sizeof *r);
    if (od_labels_copy(&r->ls, ls)) {
        od_labels_free(&r->ls);
        return SQLITE_NOMEM;
    }
    r->id = id;
    r->has_id = has_id;
    (*n)++;
    return SQLITE_OK;
}

/* Add a copy of s to a string list (kept unsorted until strlist_norm). */
static int strlist_add(od_strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return SQLITE_NOMEM;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(s))) return SQLITE_NOMEM;
    l->n++;
    return SQLITE_OK;
}

static void strlist_norm(od_strlist *l)
{
    if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, cmp_cstr);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w && strcmp(l->v[w - 1], l->v[i]) == 0) free(l->v[i]);
        else l->v[w++] = l->v[i];
    }
    l->n = w;
}

/* The main table whose transaction buffer a companion reflects: the table whose name is the
 * companion's minus its suffix, open on the same store in this connection. NULL: none. */
static const tvtab *main_of(const tvtab *v)
{
    size_t nl = strlen(v->name), sl = strlen(SUFFIX[v->kind]);
    if (v->kind == K_MAIN || nl <= sl || sqlite3_stricmp(v->name + nl - sl, SUFFIX[v->kind]) != 0) return NULL;
    char *base = sqlite3_mprintf("%.*s", (int)(nl - sl), v->name);
    if (!base) return NULL;
    const tvtab *m = reg_find_vtab(v->db, v->schema, base, v->t);
    sqlite3_free(base);
    return m;
}

static int fill_companion(tcur *c, char **metrics, size_t nmetrics, int have_metric)
{
    od_err e;
    od_err_clear(&e);
    size_t cap = 0;
    int rc = SQLITE_OK;
    const tvtab *pv = main_of(c->v); /* read-your-own-writes: the open transaction's series */
    if (pv && pv->np == 0) pv = NULL;
    if (c->v->kind == K_STATS) {
        c->ncols = 7;
        od_tsdb_bucket_stats *st = NULL;
        size_t n = 0;
        if (od_tsdb_stats(c->r, &st, &n, &e)) return cur_err(c, &e);
        rc = grow_rows(c, &cap, n);
        for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
            sqlite3_int64 v[7] = {st[i].mint, st[i].maxt, (sqlite3_int64)st[i].series, (sqlite3_int64)st[i].samples,
                                  (sqlite3_int64)st[i].chunks, (sqlite3_int64)st[i].chunk_bytes,
                                  (sqlite3_int64)st[i].index_bytes};
            for (int k = 0; k < 7; k++) c->cells[i * 7 + (size_t)k] = (cell){SQLITE_INTEGER, v[k], NULL};
            c->nrows++;
        }
        free(st);
        return rc;
    }
    if (c->v->kind == K_SERIES) {
        c->ncols = 4;
        od_matcher *sm = NULL; /* the selector alone, for the buffered series */
        size_t nsm = 0;
        if (pv && build_matchers(c, NULL, &sm, &nsm, &e)) {
            od_matchers_free(sm, nsm);
            return cur_err(c, &e);
        }
        size_t passes = have_metric ? nmetrics : 1;
        srow *rows = NULL;
        size_t nr = 0, capr = 0;
        for (size_t p = 0; rc == SQLITE_OK && p < passes; p++) {
            od_matcher *ms;
            size_t nm;
            od_series_set *ss = NULL;
            if (build_matchers(c, have_metric ? metrics[p] : NULL, &ms, &nm, &e) ||
                od_tsdb_select(c->r, ms, nm, INT64_MIN, INT64_MAX, &ss, &e)) {
                od_matchers_free(ms, nm);
                rc = cur_err(c, &e);
                break;
            }
            od_matchers_free(ms, nm);
            nr = 0;
            const od_labels *ls;
            while (rc == SQLITE_OK && od_series_set_next(ss, &ls, &e) == OD_OK && ls)
                rc = srow_add(&rows, &nr, &capr, ls, (sqlite3_int64)od_series_set_id(ss), 1);
            od_series_set_free(ss);
            /* series new in the open transaction: no id yet */
            for (size_t i = 0; pv && rc == SQLITE_OK && i < pv->np; i++) {
                const pend *q = &pv->p[i];
                const char *m = od_labels_get(&q->ls, "__name__");
                if (q->n == 0 || !od_matchers_match(sm, nsm, &q->ls) || (have_metric && strcmp(m, metrics[p]) != 0))
                    continue;
                rc = srow_add(&rows, &nr, &capr, &q->ls, 0, 0);
            }
            if (nr > 1) qsort(rows, nr, sizeof *rows, srow_cmp);
            for (size_t i = 0; rc == SQLITE_OK && i < nr; i++) {
                if (i && od_labels_cmp(&rows[i - 1].ls, &rows[i].ls) == 0) continue; /* stored one first */
                od_buf j = {0}, f = {0};
                rc = grow_rows(c, &cap, c->nrows + 1);
                if (rc == SQLITE_OK && (od_labels_format_json(&rows[i].ls, &j) || od_buf_cstr(&j) ||
                                        od_labels_format(&rows[i].ls, &f) || od_buf_cstr(&f)))
                    rc = SQLITE_NOMEM;
                size_t r = c->nrows;
                if (rc == SQLITE_OK) rc = add_cell_text(c, r, 0, od_labels_get(&rows[i].ls, "__name__"));
                if (rc == SQLITE_OK) rc = add_cell_text(c, r, 1, (char *)j.data);
                if (rc == SQLITE_OK) rc = add_cell_text(c, r, 2, (char *)f.data);
                if (rc == SQLITE_OK) {
                    c->cells[r * 4 + 3] = (cell){rows[i].has_id ? SQLITE_INTEGER : SQLITE_NULL, rows[i].id, NULL};
                    c->nrows++;
                }
                od_buf_free(&j);
                od_buf_free(&f);
            }
            for (size_t i = 0; i < nr; i++) od_labels_free(&rows[i].ls);
            nr = 0;
        }
        for (size_t i = 0; i < nr; i++) od_labels_free(&rows[i].ls);
        free(rows);
        od_matchers_free(sm, nsm);
        return rc;
    }
    /* K_LABELS */
    c->ncols = 2;
    od_matcher *ms;
    size_t nm;
    if (build_matchers(c, NULL, &ms, &nm, &e)) {
        od_matchers_free(ms, nm);
        return cur_err(c, &e);
    }
    od_strlist names = {0};
    if (have_metric) {
        for (size_t i = 0; i < nmetrics; i++)
            if (!(names.v = realloc(names.v, (names.n + 1) * sizeof(char *))) ||
                !(names.v[names.n++] = strdup(metrics[i]))) {
                od_strlist_free(&names);
                od_matchers_free(ms, nm);
                return SQLITE_NOMEM;
            }
    } else if (od_tsdb_label_names(c->r, ms, nm, INT64_MIN, INT64_MAX, &names, &e)) {
        od_matchers_free(ms, nm);
        return cur_err(c, &e);
    } else {
        for (size_t i = 0; pv && rc == SQLITE_OK && i < pv->np; i++)
            if (pv->p[i].n && od_matchers_match(ms, nm, &pv->p[i].ls))
                for (size_t k = 0; rc == SQLITE_OK && k < pv->p[i].ls.n; k++) rc = strlist_add(&names, pv->p[i].ls.v[k].name);
        strlist_norm(&names);
    }
    for (size_t i = 0; rc == SQLITE_OK && i < names.n; i++) {
        od_strlist vals = {0};
        if (od_tsdb_label_values(c->r, names.v[i], ms, nm, INT64_MIN, INT64_MAX, &vals, &e)) {
            rc = cur_err(c, &e);
            break;
        }
        if (pv) {
            for (size_t q = 0; rc == SQLITE_OK && q < pv->np; q++) {
                const char *val = od_labels_get(&pv->p[q].ls, names.v[i]);
                if (pv->p[q].n && val && od_matchers_match(ms, nm, &pv->p[q].ls)) rc = strlist_add(&vals, val);
            }
            strlist_norm(&vals);
        }
        for (size_t k = 0; rc == SQLITE_OK && k < vals.n; k++) {
            rc = grow_rows(c, &cap, c->nrows + 1);
            if (rc == SQLITE_OK) rc = add_cell_text(c, c->nrows, 0, names.v[i]);
            if (rc == SQLITE_OK) rc = add_cell_text(c, c->nrows, 1, vals.v[k]);
            if (rc == SQLITE_OK) c->nrows++;
        }
        od_strlist_free(&vals);
    }
    od_strlist_free(&names);
    od_matchers_free(ms, nm);
    return rc;
}


typedef struct tsamp {
    od_sample s;
    size_t i;
} tsamp;

static int tsamp_cmp(const void *a, const void *b)
{
    const tsamp *x = a, *y = b;
    if (x->s.t != y->s.t) return x->s.t < y->s.t ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int ovser_cmp(const void *a, const void *b)
{
    const ovser *x = a, *y = b;
    if (x->pass != y->pass) return x->pass < y->pass ? -1 : 1;
    return od_labels_cmp(&x->ls, &y->ls);
}

/* The transaction's buffered series that a SELECT sees (read-your-own-writes): those matching
 * the selector and one of the metrics (have_metric; metrics sorted, one pass each), with their
 * samples in [lo, hi], time-sorted, the last write of a timestamp kept. Fills c->ovs sorted by
 * (pass, labels), the order the engine's series sets come in. */
static int build_overlay(tcur *c, const tvtab *mv, char **metrics, size_t nmetrics, int have_metric, int64_t lo,
                         int64_t hi)
{
    size_t live = 0;
    for (size_t i = 0; i < mv->np; i++) live += mv->p[i].n > 0;
    if (live == 0) return SQLITE_OK;
    od_err e;
    od_err_clear(&e);
    od_matcher *ms = NULL;
    size_t nm = 0;
    if (c->selector && od_selector_parse(c->selector, &ms, &nm, &e)) return cur_err(c, &e);
    int rc = SQLITE_OK;
    c->ovs = calloc(live, sizeof *c->ovs);
    if (!c->ovs) rc = SQLITE_NOMEM;
    for (size_t i = 0; rc == SQLITE_OK && i < mv->np; i++) {
        const pend *p = &mv->p[i];
        if (p->n == 0 || !od_matchers_match(ms, nm, &p->ls)) continue;
        size_t pass = 0;
        if (have_metric) {
            const char *m = od_labels_get(&p->ls, "__name__");
            char *const *hit = m ? bsearch(&m, metrics, nmetrics, sizeof *metrics, cmp_cstr) : NULL;
            if (!hit) continue;
            pass = (size_t)(hit - metrics);
        }
        tsamp *ts = malloc(p->n * sizeof *ts);
        if (!ts) {
            rc = SQLITE_NOMEM;
            break;
        }
        size_t k = 0;
        for (size_t j = 0; j < p->n; j++)
            if (p->s[j].t >= lo && p->s[j].t <= hi) ts[k++] = (tsamp){p->s[j], j};
        qsort(ts, k, sizeof *ts, tsamp_cmp);
        ovser *o = &c->ovs[c->nov];
        o->pass = pass;
        o->s = malloc((k ? k : 1) * sizeof *o->s);
        if (!o->s || od_labels_copy(&o->ls, &p->ls)) {
            free(o->s);
            od_labels_free(&o->ls);
            memset(o, 0, sizeof *o);
            free(ts);
            rc = SQLITE_NOMEM;
            break;
        }
        for (size_t j = 0; j < k; j++) {
            if (j + 1 < k && ts[j + 1].s.t == ts[j].s.t) continue; /* a later write of this ts follows */
            o->s[o->n++] = ts[j].s;
        }
        free(ts);
        if (o->n) c->nov++;
        else {
            free(o->s);
            od_labels_free(&o->ls);
            memset(o, 0, sizeof *o);
        }
    }
    od_matchers_free(ms, nm);
    if (rc == SQLITE_OK && c->nov > 1) qsort(c->ovs, c->nov, sizeof *c->ovs, ovser_cmp);
    return rc;
}

static int xFilter(sqlite3_vtab_cursor *pc, int idxNum, const char *idxStr, int argc, sqlite3_value **argv)
{
    tcur *c = (tcur *)pc;
    tvtab *v = c->v;
    (void)idxNum;
    cur_reset(c);
    c->limit = -1;
    c->skip = 0;
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    int empty = 0, have_metric = 0, rc = SQLITE_OK;
    char **metrics = NULL;
    size_t nmetrics = 0;
    /* decode the plan: one token per argv value */
    char toks[512];
    snprintf(toks, sizeof toks, "%s", idxStr ? idxStr : "");
    char *save = NULL;
    int ai = 0;
    for (char *t = strtok_r(toks, " ", &save); t && rc == SQLITE_OK; t = strtok_r(NULL, " ", &save), ai++) {
        if (ai >= argc) break;
        sqlite3_value *val = argv[ai];
        if (strcmp(t, "metric=") == 0 || strcmp(t, "name=") == 0) {
            have_metric = 1;
            int ty = sqlite3_value_type(val);
            if (ty == SQLITE_NULL || ty == SQLITE_BLOB) { empty = 1; continue; }
            metrics = sqlite3_realloc64(metrics, (nmetrics + 1) * sizeof *metrics);
            if (!metrics || !(metrics[nmetrics] = sqlite3_mprintf("%s", sqlite3_value_text(val)))) rc = SQLITE_NOMEM;
            else nmetrics++;
        } else if (strcmp(t, "metric_in") == 0) {
            have_metric = 1;
            sqlite3_value *x = NULL;
            for (int r2 = sqlite3_vtab_in_first(val, &x); r2 == SQLITE_OK && x; r2 = sqlite3_vtab_in_next(val, &x)) {
                int ty = sqlite3_value_type(x);
                if (ty == SQLITE_NULL || ty == SQLITE_BLOB) continue;
                char **nmv = sqlite3_realloc64(metrics, (nmetrics + 1) * sizeof *metrics);
                if (!nmv) { rc = SQLITE_NOMEM; break; }
                metrics = nmv;
                if (!(metrics[nmetrics] = sqlite3_mprintf("%s", sqlite3_value_text(x)))) { rc = SQLITE_NOMEM; break; }
                nmetrics++;
            }
        } else if (strcmp(t, "selector=") == 0) {
            if (sqlite3_value_type(val) == SQLITE_NULL) { empty = 1; continue; }
            if (!(c->selector = sqlite3_mprintf("%s", sqlite3_value_text(val)))) rc = SQLITE_NOMEM;
        } else if (strncmp(t, "ts", 2) == 0) {
            if (!ts_bound(t, val, &lo, &hi)) empty = 1;
        } else if (strcmp(t, "limit") == 0) {
            c->limit = sqlite3_value_int64(val);
        } else if (strcmp(t, "offset") == 0) {
            c->skip = sqlite3_value_int64(val);
            if (c->skip < 0) c->skip = 0;
        }
    }
    if (rc == SQLITE_OK && nmetrics > 1) {
        qsort(metrics, nmetrics, sizeof *metrics, cmp_cstr);
        size_t w = 0;
        for (size_t i = 0; i < nmetrics; i++) {
            if (w && strcmp(metrics[w - 1], metrics[i]) == 0) sqlite3_free(metrics[i]);
            else metrics[w++] = metrics[i];
        }
        nmetrics = w;
    }
    if (have_metric && nmetrics == 0) empty = 1;
    if (lo > hi) empty = 1;
    if (rc == SQLITE_OK && c->limit >= 0 && c->skip > 0) c->limit += c->skip; /* limit counts rowids */
    c->eof = 1;
    od_err e;
    od_err_clear(&e);
    if (rc == SQLITE_OK && !empty) {
        /* see what other processes wrote (read-only/lazy handles); writers: no-op */
        if (od_tsdb_refresh(v->t, &e) || od_tsdb_read_open(v->t, &c->r, &e)) rc = cur_err(c, &e);
    }
    if (rc == SQLITE_OK && !empty && v->kind != K_MAIN) {
        rc = fill_companion(c, metrics, nmetrics, have_metric);
        c->eof = c->nrows == 0;
    } else if (rc == SQLITE_OK && !empty) {
        size_t passes = have_metric ? nmetrics : 1;
        c->sets = sqlite3_malloc64(passes * sizeof *c->sets);
        if (!c->sets) rc = SQLITE_NOMEM;
        for (size_t p = 0; rc == SQLITE_OK && p < passes; p++) {
            od_matcher *ms;
            size_t nm;
            od_series_set *ss = NULL;
            if (build_matchers(c, have_metric ? metrics[p] : NULL, &ms, &nm, &e) ||
                od_tsdb_select(c->r, ms, nm, lo, hi, &ss, &e))
                rc = cur_err(c, &e);
            od_matchers_free(ms, nm);
            if (rc == SQLITE_OK) c->sets[c->nsets++] = ss;
        }
        if (rc == SQLITE_OK) rc = build_overlay(c, v, metrics, nmetrics, have_metric, lo, hi);
        if (rc == SQLITE_OK && c->limit != 0) {
            c->eof = 0;
            rc = main_step(c);
            /* OFFSET: skip rows */
            while (rc == SQLITE_OK && !c->eof && c->rowid < c->skip) {
                c->rowid++;
                rc = main_next(c);
            }
        }
    }
    for (size_t i = 0; i < nmetrics; i++) sqlite3_free(metrics[i]);
    sqlite3_free(metrics);
    return rc;
}

/* ---------------------------------------------------------------- writes */

static int pend_find_or_add(tvtab *v, od_labels *ls, size_t *idx)
{
    uint64_t h = od_labels_hash(ls);
    if ((v->np + 1) * 2 > v->nslot) {
        size_t ns = v->nslot ? v->nslot * 2 : 64;
        size_t *nsl = calloc(ns, sizeof *nsl);
        if (!nsl) return SQLITE_NOMEM;
        for (size_t i = 0; i < v->np; i++) {
            size_t j = v->p[i].h & (ns - 1);
            while (nsl[j]) j = (j + 1) & (ns - 1);
            nsl[j] = i + 1;
        }
        free(v->slot);
        v->slot = nsl;
        v->nslot = ns;
    }
    size_t j = h & (v->nslot - 1);
    while (v->slot[j]) {
        pend *p = &v->p[v->slot[j] - 1];
        if (p->h == h && od_labels_cmp(&p->ls, ls) == 0) {
            *idx = v->slot[j] - 1;
            od_labels_free(ls);
            return SQLITE_OK;
        }
        j = (j + 1) & (v->nslot - 1);
    }
    if (v->np == v->capp) {
        size_t nc = v->capp ? v->capp * 2 : 16;
        pend *np = realloc(v->p, nc * sizeof *np);
        if (!np) return SQLITE_NOMEM;
        v->p = np;
        v->capp = nc;
    }
    pend *p = &v->p[v->np];
    memset(p, 0, sizeof *p);
    p->ls = *ls;
    memset(ls, 0, sizeof *ls);
    p->h = h;
    v->slot[j] = v->np + 1;
    *idx = v->np++;
    return SQLITE_OK;
}

static int labels_from_json(tvtab *v, const char *metric, sqlite3_value *jv, od_labels *ls)
{
    if (od_labels_add(ls, "__name__", metric)) return SQLITE_NOMEM;
    if (sqlite3_value_type(jv) == SQLITE_NULL) return SQLITE_OK;
    if (sqlite3_value_type(jv) != SQLITE_TEXT)
        return vt_error(v, "tsdb: labels must be a JSON object in text, e.g. '{\"job\":\"api\"}'");
    const char *txt = (const char *)sqlite3_value_text(jv);
    cJSON *j = cJSON_Parse(txt);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return vt_error(v, "tsdb: labels is not a JSON object: %.200s", txt);
    }
    int rc = SQLITE_OK;
    for (cJSON *it = j->child; it && rc == SQLITE_OK; it = it->next) {
        if (!cJSON_IsString(it)) {
            rc = vt_error(v, "tsdb: label \"%s\" must have a string value in labels JSON", it->string);
            break;
        }
        if (strcmp(it->string, "__name__") == 0) {
            rc = vt_error(v, "tsdb: labels must not contain __name__ (use the metric column)");
            break;
        }
        if (od_labels_add(ls, it->string, it->valuestring)) rc = SQLITE_NOMEM;
    }
    cJSON_Delete(j);
    return rc;
}

static int xUpdate(sqlite3_vtab *pv, int argc, sqlite3_value **argv, sqlite3_int64 *pRowid)
{
    tvtab *v = (tvtab *)pv;
    if (argc == 1) return vt_error(v, "tsdb: DELETE is not supported on %s (samples leave through retention)", v->name);
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL)
        return vt_error(v, "tsdb: UPDATE is not supported on %s (insert the sample again: the last write wins)",
                        v->name);
    sqlite3_value *metric = argv[2 + COL_METRIC], *labels = argv[2 + COL_LABELS], *ts = argv[2 + COL_TS],
                  *value = argv[2 + COL_VALUE], *sel = argv[2 + COL_SELECTOR];
    if (sqlite3_value_type(sel) != SQLITE_NULL) return vt_error(v, "tsdb: selector cannot be inserted");
    if (sqlite3_value_type(metric) != SQLITE_TEXT || sqlite3_value_bytes(metric) == 0)
        return vt_error(v, "tsdb: metric must be a non-empty text");
    int64_t t;
    int tt = sqlite3_value_numeric_type(ts);
    if (tt == SQLITE_INTEGER) t = sqlite3_value_int64(ts);
    else if (tt == SQLITE_FLOAT && sqlite3_value_double(ts) == floor(sqlite3_value_double(ts)) &&
             fabs(sqlite3_value_double(ts)) < 9.2e18)
        t = (int64_t)sqlite3_value_double(ts);
    else return vt_error(v, "tsdb: ts must be an integer (unix milliseconds)");
    double d = 0;
    int rc = sample_value(v, value, argv[2 + COL_VALUE_BITS], argv[2 + COL_VALUE_TEXT], &d);
    if (rc) return rc;
    od_labels ls = {0};
    rc = labels_from_json(v, (const char *)sqlite3_value_text(metric), labels, &ls);
    od_err e;
    od_err_clear(&e);
    if (rc == SQLITE_OK && (od_labels_sort(&ls, &e) || od_labels_validate(&ls, &e))) rc = vt_error(v, "%s", e.msg);
    /* Become the writer now, so a second writer process is refused at its first INSERT. */
    if (rc == SQLITE_OK && od_tsdb_make_writer(v->t, &e)) rc = vt_error(v, "%s", e.msg);
    if (rc == SQLITE_OK) {
        od_tsdb_info info;
        od_tsdb_get_info(v->t, &info);
        if (info.retention_ms > 0 && info.max_t != INT64_MIN && t <= info.max_t - info.retention_ms)
            rc = vt_error(v, "tsdb: sample at %lld is older than the retention window (newest %lld, retention %lld ms)",
                          (long long)t, (long long)info.max_t, (long long)info.retention_ms);
    }
    size_t idx = 0;
    if (rc == SQLITE_OK) rc = pend_find_or_add(v, &ls, &idx);
    od_labels_free(&ls);
    if (rc) return rc;
    pend *p = &v->p[idx];
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 8;
        od_sample *ns = realloc(p->s, nc * sizeof *ns);
        if (!ns) return SQLITE_NOMEM;
        p->s = ns;
        p->cap = nc;
    }
    if (v->nlog == v->caplog) {
        size_t nc = v->caplog ? v->caplog * 2 : 64;
        size_t *nl = realloc(v->log, nc * sizeof *nl);
        if (!nl) return SQLITE_NOMEM;
        v->log = nl;
        v->caplog = nc;
    }
    p->s[p->n++] = (od_sample){t, d};
    v->log[v->nlog++] = idx;
    *pRowid = ++v->rowid;
    return SQLITE_OK;
}

/* xBegin, xCommit (xSync wrote the rows) and xRollback: the buffer starts empty again. */
static int xBeginCommitRollback(sqlite3_vtab *pv)
{
    pend_clear((tvtab *)pv);
    return SQLITE_OK;
}

static int xSync(sqlite3_vtab *pv)
{
    tvtab *v = (tvtab *)pv;
    size_t n = 0;
    for (size_t i = 0; i < v->np; i++) n += v->p[i].n > 0;
    if (n == 0) return SQLITE_OK;
    /* The engine drops samples older than the retention window of the batch's newest sample
     * and writes the rest: refuse such a transaction here, before anything is written, or the
     * COMMIT would fail with part of it durable (INSERT checked each row against the stored
     * newest sample only; a later row of the transaction can move the window). */
    od_tsdb_info info;
    od_tsdb_get_info(v->t, &info);
    if (info.retention_ms > 0) {
        int64_t newest = info.max_t;
        for (size_t i = 0; i < v->np; i++)
            for (size_t j = 0; j < v->p[i].n; j++)
                if (v->p[i].s[j].t > newest) newest = v->p[i].s[j].t;
        int64_t cut = newest < INT64_MIN + info.retention_ms ? INT64_MIN : newest - info.retention_ms + 1;
        for (size_t i = 0; i < v->np; i++)
            for (size_t j = 0; j < v->p[i].n; j++)
                if (v->p[i].s[j].t < cut) {
                    od_buf f = {0};
                    int fr = od_labels_format(&v->p[i].ls, &f) || od_buf_cstr(&f);
                    vt_error(v,
                             "tsdb: sample at %lld of %.200s is older than the retention window of the transaction "
                             "(newest sample %lld, retention %lld ms); nothing was written",
                             (long long)v->p[i].s[j].t, fr ? "a series" : (const char *)f.data, (long long)newest,
                             (long long)info.retention_ms);
                    od_buf_free(&f);
                    return SQLITE_ERROR;
                }
    }
    od_series_in *in = malloc(n * sizeof *in);
    if (!in) return SQLITE_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < v->np; i++)
        if (v->p[i].n) in[k++] = (od_series_in){&v->p[i].ls, v->p[i].s, v->p[i].n};
    od_err e;
    od_err_clear(&e);
    int rc = od_tsdb_append(v->t, in, n, 1, NULL, NULL, &e);
    free(in);
    if (rc) return vt_error(v, "%s", e.msg) == SQLITE_ERROR ? od_to_sqlite(rc) : SQLITE_ERROR;
    return SQLITE_OK;
}

static int xSavepoint(sqlite3_vtab *pv, int i)
{
    tvtab *v = (tvtab *)pv;
    if (i < 0) return SQLITE_OK;
    if (i >= v->nsvp) {
        size_t *n = realloc(v->svp, (size_t)(i + 1) * sizeof *n);
        if (!n) return SQLITE_NOMEM;
        v->svp = n;
        for (int k = v->nsvp; k <= i; k++) v->svp[k] = v->nlog;
        v->nsvp = i + 1;
    }
    v->svp[i] = v->nlog;
    return SQLITE_OK;
}

static int xRelease(sqlite3_vtab *pv, int i)
{
    tvtab *v = (tvtab *)pv;
    if (i >= 0 && i < v->nsvp) v->nsvp = i;
    return SQLITE_OK;
}

static int xRollbackTo(sqlite3_vtab *pv, int i)
{
    tvtab *v = (tvtab *)pv;
    if (i < 0 || i >= v->nsvp) return SQLITE_OK;
    size_t mark = v->svp[i];
    /* rows are appended in log order, so each one is the last sample of its series */
    while (v->nlog > mark) v->p[v->log[--v->nlog]].n--;
    v->nsvp = i + 1;
    return SQLITE_OK;
}

/* ALTER TABLE m RENAME TO n renames the companions too (m_series → n_series, ...), by running
 * ALTER TABLE on them from here, as FTS5 renames its shadow tables. A companion that was
 * dropped by hand is skipped; one whose new name is taken fails the whole ALTER. */
static int xRename(sqlite3_vtab *pv, const char *zNew)
{
    tvtab *v = (tvtab *)pv;
    if (v->kind != K_MAIN) return SQLITE_OK;
    /* SQLite connects the renamed table again as a new vtab with an empty buffer, while this
     * one (holding the rows) is kept until COMMIT: the rows would vanish from the table's
     * SELECTs and be committed in a separate batch. */
    for (size_t i = 0; i < v->np; i++)
        if (v->p[i].n)
            return vt_error(v, "tsdb: cannot rename %s while the open transaction has rows buffered for it "
                               "(COMMIT or ROLLBACK first)", v->name);
    for (int k = K_SERIES; k <= K_STATS; k++) {
        char *old = sqlite3_mprintf("%s%s", v->name, SUFFIX[k]);
        if (!old) return SQLITE_NOMEM;
        /* skip a companion that does not exist (dropped by hand) */
        int exists = 0;
        char *q = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_schema WHERE type = 'table' AND name = %Q COLLATE NOCASE",
                                  v->schema, old);
        sqlite3_stmt *st = NULL;
        int qrc = q ? sqlite3_prepare_v2(v->db, q, -1, &st, NULL) : SQLITE_NOMEM;
        if (qrc == SQLITE_OK) {
            qrc = sqlite3_step(st);
            exists = qrc == SQLITE_ROW;
            qrc = qrc == SQLITE_ROW || qrc == SQLITE_DONE ? SQLITE_OK : qrc;
        }
        sqlite3_finalize(st);
        sqlite3_free(q);
        if (qrc) {
            sqlite3_free(old);
            return vt_error(v, "tsdb: cannot rename the companions of %s: %s", v->name, sqlite3_errmsg(v->db));
        }
        char *sql = exists ? sqlite3_mprintf("ALTER TABLE \"%w\".\"%w\" RENAME TO \"%w%s\"", v->schema, old, zNew,
                                             SUFFIX[k])
                           : NULL;
        char *err = NULL;
        int rc = !exists ? SQLITE_OK : sql ? sqlite3_exec(v->db, sql, NULL, NULL, &err) : SQLITE_NOMEM;
        if (rc) vt_error(v, "tsdb: cannot rename %s to %s%s: %s", old, zNew, SUFFIX[k], err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        sqlite3_free(sql);
        sqlite3_free(old);
        if (rc) return rc;
    }
    char *nn = sqlite3_mprintf("%s", zNew);
    if (!nn) return SQLITE_NOMEM;
    reg_del(v->db, v);
    sqlite3_free(v->name);
    v->name = nn;
    return reg_add(v->db, v->schema, nn, v->t, v);
}

/* ---------------------------------------------------------------- functions */

/* tsdb_label(labels_json, name): the value of one label, or NULL. */
static void fn_label(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) return;
    const char *name = (const char *)sqlite3_value_text(argv[1]);
    cJSON *j = cJSON_Parse((const char *)sqlite3_value_text(argv[0]));
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        sqlite3_result_error(ctx, "tsdb_label(): first argument is not a JSON object", -1);
        return;
    }
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, name);
    if (cJSON_IsString(it)) sqlite3_result_text(ctx, it->valuestring, -1, SQLITE_TRANSIENT);
    cJSON_Delete(j);
}

/* tsdb_bucket(ts, width): ts rounded down to a multiple of width (ms, or '5m', '1h', ...). */
static void fn_bucket(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) return;
    int64_t w;
    if (sqlite3_value_type(argv[1]) == SQLITE_TEXT) {
        if (!parse_duration((const char *)sqlite3_value_text(argv[1]), &w)) w = 0;
    } else {
        w = sqlite3_value_int64(argv[1]);
    }
    if (w <= 0) {
        sqlite3_result_error(ctx, "tsdb_bucket(): second argument must be a positive width (ms or '5m')", -1);
        return;
    }
    int64_t t = sqlite3_value_int64(argv[0]);
    int64_t b = t / w;
    if (t % w < 0) b--;
    sqlite3_result_int64(ctx, b * w);
}

/* tsdb_compact(table): merge chunk and postings fragments into long chunks and delete
 * buckets out of retention, now (makes this process the writer). Returns the number of live
 * buckets afterwards. DIRECTONLY: it writes the store. */
static void fn_compact(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *name = (const char *)sqlite3_value_text(argv[0]);
    char *msg = NULL;
    od_tsdb *t = name ? od_vtab_tsdb_lookup(sqlite3_context_db_handle(ctx), name, &msg) : NULL;
    if (!t) {
        char *m = sqlite3_mprintf("tsdb_compact(): %s", msg ? msg : "first argument must be a tsdb table name");
        sqlite3_result_error(ctx, m ? m : "tsdb_compact(): out of memory", -1);
        sqlite3_free(m);
        sqlite3_free(msg);
        return;
    }
    od_err e;
    od_err_clear(&e);
    od_tsdb_read *r = NULL;
    od_tsdb_bucket_stats *st = NULL;
    size_t n = 0;
    if (od_tsdb_compact(t, &e) || od_tsdb_read_open(t, &r, &e) || od_tsdb_stats(r, &st, &n, &e)) {
        sqlite3_result_error(ctx, e.msg, -1);
        sqlite3_result_error_code(ctx, od_to_sqlite(e.code));
    } else {
        sqlite3_result_int64(ctx, (sqlite3_int64)n);
    }
    free(st);
    od_tsdb_read_close(r);
}

/* ---------------------------------------------------------------- registration */

static sqlite3_module mod_main = {
    .iVersion = 2,
    .xCreate = xCreate,
    .xConnect = xConnect,
    .xBestIndex = xBestIndex,
    .xDisconnect = xDisconnect,
    .xDestroy = xDestroy,
    .xOpen = xOpen,
    .xClose = xClose,
    .xFilter = xFilter,
    .xNext = xNext,
    .xEof = xEof,
    .xColumn = xColumn,
    .xRowid = xRowid,
    .xUpdate = xUpdate,
    .xBegin = xBeginCommitRollback,
    .xSync = xSync,
    .xCommit = xBeginCommitRollback,
    .xRollback = xBeginCommitRollback,
    .xRename = xRename,
    .xSavepoint = xSavepoint,
    .xRelease = xRelease,
    .xRollbackTo = xRollbackTo,
};

static sqlite3_module mod_ro = {
    .iVersion = 1,
    .xCreate = xConnect,
    .xConnect = xConnect,
    .xBestIndex = xBestIndex,
    .xDisconnect = xDisconnect,
    .xDestroy = xDisconnect,
    .xOpen = xOpen,
    .xClose = xClose,
    .xFilter = xFilter,
    .xNext = xNext,
    .xEof = xEof,
    .xColumn = xColumn,
    .xRowid = xRowid,
    .xRename = xRename,
};

int od_vtab_tsdb_register(sqlite3 *db)
{
    int rc = sqlite3_create_module_v2(db, "tsdb", &mod_main, (void *)(intptr_t)K_MAIN, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "tsdb_series", &mod_ro, (void *)(intptr_t)K_SERIES, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "tsdb_labels", &mod_ro, (void *)(intptr_t)K_LABELS, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "tsdb_stats", &mod_ro, (void *)(intptr_t)K_STATS, NULL);
    const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "tsdb_label", 2, flags, NULL, fn_label, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "tsdb_bucket", 2, flags, NULL, fn_bucket, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "tsdb_compact", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL, fn_compact, NULL, NULL);
    return rc;
}
