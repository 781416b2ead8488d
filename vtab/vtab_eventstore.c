/*
 * vtab_eventstore.c — the `eventstore` and `eventstore_keys` virtual tables and the
 * eventstore_last_seq() function: SQL over core/eventstore (od_eventstore.h).
 *
 * Usage
 *   CREATE VIRTUAL TABLE e USING eventstore('<store uri>' [, option=value ...]);
 *     options: retention_age_ms=N, retention_count=N, read_only=1, takeover=1,
 *              flush_interval_ms=N, tail_cache=N  (used by whoever opens the store first in
 *              this process; later tables on the same URI share that handle). A read_only
 *              table refreshes its handle once per scan (refresh_once): it sees what the
 *              writer committed, under the writer's store default age and retention floor.
 *   columns: key TEXT, seq INTEGER, ts INTEGER (unix ms), value (TEXT or BLOB as inserted),
 *            headers TEXT (JSON object of strings, NULL when none), expected_seq HIDDEN
 *   INSERT INTO e(key, value [, headers, ts, expected_seq]) VALUES (...)   appends
 *   DELETE FROM e WHERE key = ? AND seq < ?                                trims the key
 *   SELECT eventstore_last_seq()   the seq given to the last record this connection appended
 *   SELECT eventstore_follow('<uri>', key, from_seq, timeout_ms)   long-poll: 1 when the key
 *          has a record with seq >= from_seq, 0 after the timeout
 *   CREATE VIRTUAL TABLE k USING eventstore_keys('<store uri>');
 *   columns: key, first_seq, next_seq, count, bytes, last_ts, created_ts, retention_age_ms,
 *            retention_count; DELETE removes keys, UPDATE sets the two retention columns.
 *
 * Transactions: INSERT and DELETE rows (and eventstore_keys DELETE/UPDATE) are buffered per
 * table and per transaction (with savepoints). At COMMIT the first table of a store to get
 * xSync hands everything the transaction did to that store — in every table of this
 * connection sharing the engine handle — to od_ev_commit as ONE engine batch (store_commit):
 * records, then trims, then key deletes / retention changes (a row INSERTed after a DELETE of
 * its key in the same transaction fails the COMMIT: check_insert_after_delete; a retention
 * change after it is a no-op, as an ordinary table's UPDATE of the deleted row); durable when COMMIT returns,
 * discarded by ROLLBACK. An expected_seq conflict fails the COMMIT (or the autocommit
 * statement) with "eventstore: expected_seq ...", and nothing of it is applied. Tables on
 * different stores commit one store after the other (no two-phase commit): atomic per store.
 * A non-NULL seq on INSERT is treated as the record's expected_seq.
 *
 * xBestIndex plan (idxNum bits, argv in ascending bit order; idxStr spells the plan so EXPLAIN
 * QUERY PLAN shows it, e.g. "key= seq>= limit"):
 *   P_KEY_EQ   key = ? or key IN (...) (all values at once via sqlite3_vtab_in)
 *   P_KEY_GE/GT/LE/LT  key ranges (BINARY collation)
 *   P_KEY_LIKE / P_KEY_GLOB  pattern: its literal prefix bounds the key range (LIKE: only the
 *                leading part without letters, LIKE being case-insensitive); SQLite re-checks
 *   P_SEQ_EQ/GE/GT/LE/LT, P_TS_GE/GT/LE/LT  bounds on seq and ts
 *   P_LIMIT, P_OFFSET  applied here, only when every other term is exact (omitted) and any
 *                ORDER BY is one we consume (else SQLite sorts after us and LIMIT must wait)
 *   P_DESC_TAIL (no argv)  key = ? ORDER BY seq DESC LIMIT n [OFFSET m] with nothing else:
 *                the last n + m records are read from the tail and returned newest first
 *   P_KEY_NUM (no argv, "key-num")  a key term's value may be a number compared with SQLite's
 *                NUMERIC affinity (key_rhs_exact): a number then matches its text and every key
 *                whose text converts to an equal number (add_numeric_keys); SQLite re-checks
 *   P_SEQ_ORDER (no argv)  ORDER BY seq consumed for one key =; with P_KEY_NUM several keys
 *                may match, and their records are merged by seq (merge_open: a k-way merge)
 * Terms are omitted (omit=1) when applied with SQLite's exact semantics: key with BINARY
 * collation and a value known to be text (or a parameter in a single-table query: text
 * semantics, key = 5 means key = '5'), integer bounds; LIKE/GLOB never; key terms whose value
 * may be a number with affinity (joins, CAST) are re-checked by SQLite (P_KEY_NUM). Key terms under another collation are not used at all.
 * Rows come out ordered by (key, seq), which lets ORDER BY key / key, seq / seq (single key)
 * be consumed.
 *
 * Why: records live in the engine's order (key, seq), so key equality/prefix and seq bounds
 * turn into one contiguous range each; ts bounds use the store's time index.
 * The tables read and write a store (files or network): SQLITE_VTAB_DIRECTONLY.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/eventstore/od_eventstore.h"
#include "od_vtab.h"

#define KIND "eventstore"

/* ---------------------------------------------------------------- per-connection state */

struct es_table;

/* The connection's state. It lists the connection's tables so that COMMIT can hand everything
 * a transaction did to one store (every table sharing that engine handle) to the engine as one
 * batch (store_commit). */
typedef struct es_conn {
    int refs;            /* the module (x2), the function and every table hold references */
    int has_last;
    sqlite3_int64 last_seq;
    uint64_t order;          /* numbers the INSERTed rows of every table */
    struct es_table *evs;    /* connected eventstore tables (ev_vtab, linked by next_in_conn) */
    struct es_table *keys;   /* connected eventstore_keys tables (keys_vtab) */
} es_conn;

static void conn_unref(void *p)
{
    es_conn *c = p;
    if (c && --c->refs == 0) sqlite3_free(c);
}

/* ---------------------------------------------------------------- shared handle */

typedef struct open_ctx {
    od_ev_options o;
    od_db_options dbo;
} open_ctx;

static int open_store(const char *uri, void *ctx, void **handle, od_err *err)
{
    open_ctx *oc = ctx;
    od_eventstore *es;
    oc->o.db = &oc->dbo;
    int rc = od_ev_open(uri, &oc->o, &es, err);
    if (rc) return rc;
    *handle = es;
    return OD_OK;
}

static void close_store(void *h) { od_ev_close(h, NULL); }

static char *unquote(const char *s)
{
    size_t n = strlen(s);
    while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    char *out = sqlite3_malloc64(n + 1);
    if (!out) return NULL;
    if (n >= 2 && (s[0] == '\'' || s[0] == '"') && s[n - 1] == s[0]) {
        size_t o = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            out[o++] = s[i];
            if (s[i] == s[0] && i + 2 < n && s[i + 1] == s[0]) i++;
        }
        out[o] = 0;
    } else {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return out;
}

static int parse_i64(const char *v, sqlite3_int64 *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < 0) return 0;
    *out = x;
    return 1;
}

/* Parse arguments and acquire the shared handle. */
static int acquire(int argc, const char *const *argv, const char *module, char **uri_out, od_eventstore **es,
                   char **pzErr)
{
    if (argc < 4) {
        *pzErr = sqlite3_mprintf("%s: missing store URI, use %s('<uri>')", module, module);
        return SQLITE_ERROR;
    }
    char *uri = unquote(argv[3]);
    if (!uri) return SQLITE_NOMEM;
    if (!*uri) {
        sqlite3_free(uri);
        *pzErr = sqlite3_mprintf("%s: the store URI is empty", module);
        return SQLITE_ERROR;
    }
    open_ctx oc;
    od_ev_options_init(&oc.o);
    od_db_options_init(&oc.dbo);
    for (int i = 4; i < argc; i++) {
        char *a = unquote(argv[i]);
        if (!a) {
            sqlite3_free(uri);
            return SQLITE_NOMEM;
        }
        char *eq = strchr(a, '=');
        sqlite3_int64 v = 0;
        int ok = 0;
        if (eq) {
            *eq = 0;
            char *name = a, *val = eq + 1;
            while (*val == ' ') val++;
            for (char *p = eq - 1; p >= name && *p == ' '; p--) *p = 0;
            char *vq = unquote(val);
            ok = vq && parse_i64(vq, &v);
            sqlite3_free(vq);
            if (ok) {
                if (!strcmp(name, "retention_age_ms")) oc.o.retention_age_ms = v;
                else if (!strcmp(name, "retention_count")) oc.o.retention_count = (uint64_t)v;
                else if (!strcmp(name, "read_only")) oc.o.read_only = v != 0;
                else if (!strcmp(name, "takeover")) oc.o.takeover = v != 0;
                else if (!strcmp(name, "flush_interval_ms")) oc.dbo.flush_interval_ms = (uint32_t)v;
                else if (!strcmp(name, "tail_cache")) oc.o.tail_cache_entries = (size_t)v;
                else ok = 0;
            }
        }
        if (!ok) {
            *pzErr = sqlite3_mprintf("%s: bad option \"%s\" (expected retention_age_ms=N, retention_count=N, "
                                     "read_only=0|1, takeover=0|1, flush_interval_ms=N or tail_cache=N)",
                                     module, argv[i]);
            sqlite3_free(a);
            sqlite3_free(uri);
            return SQLITE_ERROR;
        }
        sqlite3_free(a);
    }
    od_err err = {0};
    void *h = NULL;
    int rc = od_vtab_handle_acquire(KIND, uri, open_store, &oc, close_store, &h, &err);
    if (rc) {
        /* the engine's message usually names it already ("eventstore: opening ..."): no
         * second prefix */
        size_t ml = strlen(module);
        int named = strncmp(err.msg, module, ml) == 0 && err.msg[ml] == ':';
        *pzErr = named ? sqlite3_mprintf("%s", err.msg) : sqlite3_mprintf("%s: %s", module, err.msg);
        sqlite3_free(uri);
        return SQLITE_ERROR;
    }
    *es = h;
    *uri_out = uri;
    return SQLITE_OK;
}

/* ---------------------------------------------------------------- plan bits */

enum {
    P_KEY_EQ = 1 << 0,
    P_KEY_GE = 1 << 1,
    P_KEY_GT = 1 << 2,
    P_KEY_LE = 1 << 3,
    P_KEY_LT = 1 << 4,
    P_KEY_LIKE = 1 << 5,
    P_KEY_GLOB = 1 << 6,
    P_SEQ_EQ = 1 << 7,
    P_SEQ_GE = 1 << 8,
    P_SEQ_GT = 1 << 9,
    P_SEQ_LE = 1 << 10,
    P_SEQ_LT = 1 << 11,
    P_TS_GE = 1 << 12,
    P_TS_GT = 1 << 13,
    P_TS_LE = 1 << 14,
    P_TS_LT = 1 << 15,
    P_LIMIT = 1 << 16,
    P_OFFSET = 1 << 17,
    P_NBITS = 18,           /* bits above carry no argv */
    P_DESC_TAIL = 1 << 18,  /* key = ? ORDER BY seq DESC LIMIT n: read n back from the tail, emit reversed */
    P_KEY_NUM = 1 << 19,    /* a key term may compare numerically (see key_rhs_exact): a number value
                               matches every key whose text SQLite converts to it; SQLite re-checks */
    P_SEQ_ORDER = 1 << 20   /* ORDER BY seq consumed for one key=: with P_KEY_NUM a number may match
                               several keys, whose rows are then merged by seq (merge_open) */
};
static const char *const P_NAMES[P_NBITS] = {"key=",  "key>=", "key>",  "key<=", "key<",  "key-like",
                                             "key-glob", "seq=", "seq>=", "seq>",  "seq<=", "seq<",
                                             "ts>=",  "ts>",   "ts<=",  "ts<",   "limit", "offset"};

static int bit_for(int col, int op, int col_key, int col_seq, int col_ts)
{
    if (col == col_key) {
        switch (op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: return P_KEY_EQ;
        case SQLITE_INDEX_CONSTRAINT_GE: return P_KEY_GE;
        case SQLITE_INDEX_CONSTRAINT_GT: return P_KEY_GT;
        case SQLITE_INDEX_CONSTRAINT_LE: return P_KEY_LE;
        case SQLITE_INDEX_CONSTRAINT_LT: return P_KEY_LT;
        case SQLITE_INDEX_CONSTRAINT_LIKE: return P_KEY_LIKE;
        case SQLITE_INDEX_CONSTRAINT_GLOB: return P_KEY_GLOB;
        }
    } else if (col == col_seq && col_seq >= 0) {
        switch (op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: return P_SEQ_EQ;
        case SQLITE_INDEX_CONSTRAINT_GE: return P_SEQ_GE;
        case SQLITE_INDEX_CONSTRAINT_GT: return P_SEQ_GT;
        case SQLITE_INDEX_CONSTRAINT_LE: return P_SEQ_LE;
        case SQLITE_INDEX_CONSTRAINT_LT: return P_SEQ_LT;
        }
    } else if (col == col_ts && col_ts >= 0) {
        switch (op) {
        case SQLITE_INDEX_CONSTRAINT_GE: return P_TS_GE;
        case SQLITE_INDEX_CONSTRAINT_GT: return P_TS_GT;
        case SQLITE_INDEX_CONSTRAINT_LE: return P_TS_LE;
        case SQLITE_INDEX_CONSTRAINT_LT: return P_TS_LT;
        }
    } else if (col < 0 || col > 100) {
        /* LIMIT/OFFSET have iColumn set to -1 / arbitrary; matched by op below */
    }
    if (op == SQLITE_INDEX_CONSTRAINT_LIMIT) return P_LIMIT;
    if (op == SQLITE_INDEX_CONSTRAINT_OFFSET) return P_OFFSET;
    return 0;
}

/* Can a key term be applied exactly (omit=1)? SQLite compares `key = X` as text when X has no
 * affinity (a literal, a parameter: 5 becomes '5'), but NUMERICALLY when X has INTEGER/REAL/
 * NUMERIC affinity (a column of another table, a CAST): then key '05' equals 5. xFilter sees
 * the same INTEGER 5 either way, so: a right-hand side known now as TEXT/NULL/BLOB is exact;
 * a known number, or an unknown one in a query that may be a join, is not (P_KEY_NUM: xFilter
 * returns both the text match and the keys that are numerically equal, SQLite re-checks).
 * An unknown right-hand side in a query offered LIMIT/OFFSET (one table only: no other table's
 * column) is taken as a parameter: exact with text semantics, so LIMIT stays pushed down. */
static int key_rhs_exact(sqlite3_index_info *info, int i, int single_table)
{
    sqlite3_value *v = NULL;
    if (sqlite3_vtab_rhs_value(info, i, &v) == SQLITE_OK && v) {
        int t = sqlite3_value_type(v);
        return t != SQLITE_INTEGER && t != SQLITE_FLOAT;
    }
    return single_table;
}

/* Shared by both modules: choose constraints, assign argv in bit order, build idxStr. */
static int best_index(sqlite3_vtab *vt, sqlite3_index_info *info, int col_key, int col_seq, int col_ts,
                      int ordered_seq)
{
    int cidx[P_NBITS];
    for (int b = 0; b < P_NBITS; b++) cidx[b] = -1;
    int inexact = 0, unhandled = 0;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (!c->usable) continue;
        int bit = bit_for(c->iColumn, c->op, col_key, col_seq, col_ts);
        if (!bit) {
            unhandled = 1;
            continue;
        }
        /* key =/IN/ranges under another collation (e.g. COLLATE NOCASE): a BINARY bound
         * would drop rows SQLite accepts, so leave the term to SQLite entirely */
        if (bit <= P_KEY_LT) {
            const char *coll = sqlite3_vtab_collation(info, i);
            if (coll && sqlite3_stricmp(coll, "BINARY") != 0) {
                unhandled = 1;
                continue;
            }
        }
        int b = __builtin_ctz((unsigned)bit);
        if (cidx[b] >= 0) { /* a second term of the same kind: SQLite checks it */
            unhandled = 1;
            continue;
        }
        cidx[b] = i;
    }
    /* unusable constraints also mean SQLite will check terms we never saw */
    for (int i = 0; i < info->nConstraint; i++)
        if (!info->aConstraint[i].usable) unhandled = 1;
    int single_table = 0; /* LIMIT/OFFSET are only offered when the query has one table */
    for (int i = 0; i < info->nConstraint; i++)
        if (info->aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_LIMIT ||
            info->aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_OFFSET)
            single_table = 1;
    int idxNum = 0, argv = 1;
    char plan[256] = "";
    size_t pl = 0;
    for (int b = 0; b < P_NBITS; b++) {
        if (cidx[b] < 0) continue;
        int bit = 1 << b;
        if ((bit == P_LIMIT || bit == P_OFFSET)) continue; /* decided below */
        int i = cidx[b];
        idxNum |= bit;
        info->aConstraintUsage[i].argvIndex = argv++;
        int exact = bit != P_KEY_LIKE && bit != P_KEY_GLOB; /* key terms here are BINARY */
        if (exact && bit <= P_KEY_LT && !key_rhs_exact(info, i, single_table)) {
            exact = 0;
            idxNum |= P_KEY_NUM;
        }
        if (bit == P_KEY_EQ) sqlite3_vtab_in(info, i, 1);
        info->aConstraintUsage[i].omit = exact;
        if (!exact) inexact = 1;
        pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%s%s", pl ? " " : "", P_NAMES[b]);
    }
    if (idxNum & P_KEY_NUM) pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%skey-num", pl ? " " : "");
    /* output order: (key, seq) ascending (SQLite itself stops us consuming ORDER BY when it feeds
     * IN values one at a time) */
    int consumed = info->nOrderBy > 0, seq_order = 0;
    for (int i = 0; i < info->nOrderBy && consumed; i++) {
        const struct sqlite3_index_orderby *o = &info->aOrderBy[i];
        if (o->desc) consumed = 0;
        else if (i == 0 && o->iColumn == col_key) continue;
        else if (i == 1 && o->iColumn == col_seq && col_seq >= 0 && info->aOrderBy[0].iColumn == col_key) continue;
        else if (i == 0 && ordered_seq && o->iColumn == col_seq && col_seq >= 0 && cidx[0] >= 0 &&
                 !(sqlite3_vtab_in(info, cidx[0], -1))) {
            seq_order = 1;
            continue;
        }
        else consumed = 0;
    }
    if (consumed && seq_order && (idxNum & P_KEY_NUM)) idxNum |= P_SEQ_ORDER;
    /* "the last N records of one key": key = ? ORDER BY seq DESC LIMIT N [OFFSET M] and nothing
     * else — we read N + M back from the tail and return them newest first */
    if (ordered_seq && !consumed && info->nOrderBy == 1 && info->aOrderBy[0].desc &&
        info->aOrderBy[0].iColumn == col_seq && idxNum == P_KEY_EQ && cidx[16] >= 0 && !inexact && !unhandled &&
        info->aConstraintUsage[cidx[0]].omit && !sqlite3_vtab_in(info, cidx[0], -1)) {
        consumed = 1;
        idxNum |= P_DESC_TAIL;
        pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%sdesc-tail", pl ? " " : "");
    }
    /* an IN list (values handled all at once) still comes out sorted: we sort it */
    info->orderByConsumed = consumed;
    /* LIMIT/OFFSET only when every WHERE term is applied exactly here, and the rows we produce
     * are the final order (no ORDER BY, or one we consume): else SQLite sorts after us */
    if (!inexact && !unhandled && (info->nOrderBy == 0 || consumed)) {
        for (int b = 16; b < 18; b++) {
            if (cidx[b] < 0) continue;
            int i = cidx[b];
            idxNum |= 1 << b;
            info->aConstraintUsage[i].argvIndex = argv++;
            info->aConstraintUsage[i].omit = 1;
            pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%s%s", pl ? " " : "", P_NAMES[b]);
        }
    }
    double cost = 1e9, rows = 1e6;
    if (idxNum & P_KEY_EQ) {
        cost = 100;
        rows = 1000;
    } else if (idxNum & (P_KEY_GE | P_KEY_GT | P_KEY_LT | P_KEY_LE | P_KEY_GLOB | P_KEY_LIKE)) {
        cost = 1e6;
        rows = 1e5;
    }
    if (idxNum & (P_SEQ_EQ | P_SEQ_GE | P_SEQ_GT | P_SEQ_LE | P_SEQ_LT | P_TS_GE | P_TS_GT | P_TS_LE | P_TS_LT)) {
        cost /= 4;
        rows /= 4;
    }
    if (idxNum & P_SEQ_EQ && idxNum & P_KEY_EQ) {
        cost = 10;
        rows = 1;
    }
    info->estimatedCost = cost;
    info->estimatedRows = (sqlite3_int64)rows;
    info->idxNum = idxNum;
    if (pl) {
        info->idxStr = sqlite3_mprintf("%s", plan);
        if (!info->idxStr) return SQLITE_NOMEM;
        info->needToFreeIdxStr = 1;
    }
    (void)vt;
    return SQLITE_OK;
}

/* ---------------------------------------------------------------- key bounds from argv */

typedef struct keybuf {
    unsigned char *p;
    size_t n;
} keybuf;

typedef struct scan_bounds {
    int none;                 /* a bound that nothing satisfies (e.g. key = NULL) */
    keybuf *eq;               /* sorted, distinct */
    size_t neq;
    int has_lo, lo_incl, has_hi, hi_incl;
    unsigned char *lo, *hi;
    size_t lolen, hilen;
    uint64_t seq_lo, seq_hi;  /* [seq_lo, seq_hi) ; seq_hi 0 = none */
    int has_seq_hi;
    int64_t ts_lo, ts_hi;     /* [ts_lo, ts_hi) */
    int has_ts_lo, has_ts_hi;
    sqlite3_int64 limit, offset; /* limit < 0 = none */
    sqlite3_value **nums;     /* P_KEY_NUM: numbers among the key = / IN values */
    size_t nnums;
    size_t eqcap;
} scan_bounds;

static void bounds_free(scan_bounds *b)
{
    for (size_t i = 0; i < b->nnums; i++) sqlite3_value_free(b->nums[i]);
    sqlite3_free(b->nums);
    for (size_t i = 0; i < b->neq; i++) sqlite3_free(b->eq[i].p);
    sqlite3_free(b->eq);
    sqlite3_free(b->lo);
    sqlite3_free(b->hi);
    memset(b, 0, sizeof *b);
}

static int kb_cmp(const void *a, const void *b)
{
    const keybuf *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Text value of a key constraint: TEXT as is, numbers in their text form (TEXT affinity);
 * returns 0 for NULL and BLOB (a TEXT key never equals them). */
static int key_text(sqlite3_value *v, const unsigned char **p, size_t *n)
{
    int t = sqlite3_value_type(v);
    if (t == SQLITE_NULL || t == SQLITE_BLOB) return 0;
    *p = sqlite3_value_text(v);
    *n = (size_t)sqlite3_value_bytes(v);
    return *p != NULL;
}

static int set_bound(unsigned char **dst, size_t *dlen, const void *p, size_t n)
{
    sqlite3_free(*dst);
    *dst = sqlite3_malloc64(n + 1);
    if (!*dst) return SQLITE_NOMEM;
    if (n) memcpy(*dst, p, n);
    *dlen = n;
    return SQLITE_OK;
}

static int bcmp_(const void *a, size_t an, const void *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

/* Tighten the lower key bound to [p, n) inclusive/exclusive. */
static int lower_key(scan_bounds *b, const void *p, size_t n, int incl)
{
    if (b->has_lo) {
        int c = bcmp_(p, n, b->lo, b->lolen);
        if (c < 0 || (c == 0 && (incl || !b->lo_incl))) return SQLITE_OK;
    }
    b->has_lo = 1;
    b->lo_incl = incl;
    return set_bound(&b->lo, &b->lolen, p, n);
}

static int upper_key(scan_bounds *b, const void *p, size_t n, int incl)
{
    if (b->has_hi) {
        int c = bcmp_(p, n, b->hi, b->hilen);
        if (c > 0 || (c == 0 && (incl || !b->hi_incl))) return SQLITE_OK;
    }
    b->has_hi = 1;
    b->hi_incl = incl;
    return set_bound(&b->hi, &b->hilen, p, n);
}

/* Prefix [p, n) → key range [p, successor(p)). */
static int prefix_range(scan_bounds *b, const unsigned char *p, size_t n)
{
    if (n == 0) return SQLITE_OK;
    int rc = lower_key(b, p, n, 1);
    if (rc) return rc;
    size_t m = n;
    while (m > 0 && p[m - 1] == 0xFF) m--;
    if (m == 0) return SQLITE_OK;
    unsigned char *s = sqlite3_malloc64(m);
    if (!s) return SQLITE_NOMEM;
    memcpy(s, p, m);
    s[m - 1]++;
    rc = upper_key(b, s, m, 0);
    sqlite3_free(s);
    return rc;
}

/* Literal prefix of a GLOB (stops at * ? [) or LIKE (stops at % _, and at the first ASCII
 * letter since LIKE is case-insensitive; ESCAPE is not offered to xBestIndex). */
static size_t pattern_prefix(const unsigned char *pat, size_t n, int like)
{
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char ch = pat[i];
        if (like) {
            if (ch == '%' || ch == '_') break;
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) break;
            if (ch >= 0x80) break; /* non-ASCII case folding is not done by LIKE, but be safe */
        } else if (ch == '*' || ch == '?' || ch == '[') {
            break;
        }
    }
    return i;
}

/* Integer bound from a seq/ts constraint value under SQLite's ordering: NULL matches nothing;
 * numbers (and numeric text) compare as numbers; other text and blobs sort after every
 * number. Returns: 0 = use *out, 1 = nothing matches, 2 = everything matches. `op` is the
 * comparison column OP value. Produces an inclusive lower bound (for GE/GT/EQ) or an
 * exclusive upper bound (for LT/LE). */
static int int_bound(sqlite3_value *v, int is_lower, int strict, int64_t *out)
{
    int t = sqlite3_value_numeric_type(v);
    if (t == SQLITE_NULL) return 1;
    if (t == SQLITE_TEXT || t == SQLITE_BLOB) return is_lower ? 1 : 2;
    double d = sqlite3_value_double(v);
    sqlite3_int64 i = sqlite3_value_int64(v);
    if (t == SQLITE_FLOAT) {
        if (d != d) return 1;
        if (d > 9.2e18) return is_lower ? 1 : 2;
        if (d < -9.2e18) return is_lower ? 2 : 1;
        if (is_lower) { /* x >= d → x >= ceil(d);  x > d → x >= floor(d)+1 */
            i = strict ? (sqlite3_int64)floor(d) + 1 : (sqlite3_int64)ceil(d);
        } else { /* x < d → x < ceil(d);  x <= d → x < floor(d)+1 */
            i = strict ? (sqlite3_int64)ceil(d) : (sqlite3_int64)floor(d) + 1;
        }
        *out = i;
        return 0;
    }
    if (is_lower) {
        if (strict) {
            if (i == INT64_MAX) return 1;
            i++;
        }
    } else if (!strict) {
        if (i == INT64_MAX) return 2;
        i++;
    }
    *out = i;
    return 0;
}

static int eq_push(scan_bounds *b, const void *p, size_t n)
{
    if (b->neq == b->eqcap) {
        size_t cap = b->eqcap ? 2 * b->eqcap : 4;
        keybuf *nk = sqlite3_realloc64(b->eq, cap * sizeof *nk);
        if (!nk) return SQLITE_NOMEM;
        b->eq = nk;
        b->eqcap = cap;
    }
    b->eq[b->neq].p = sqlite3_malloc64(n + 1);
    if (!b->eq[b->neq].p) return SQLITE_NOMEM;
    if (n) memcpy(b->eq[b->neq].p, p, n);
    b->eq[b->neq++].n = n;
    return SQLITE_OK;
}

/* Sort the key list and drop duplicates. */
static void eq_sort(scan_bounds *b)
{
    if (b->neq > 1) qsort(b->eq, b->neq, sizeof *b->eq, kb_cmp);
    size_t o = 0;
    for (size_t i = 0; i < b->neq; i++) {
        if (o && kb_cmp(&b->eq[o - 1], &b->eq[i]) == 0) {
            sqlite3_free(b->eq[i].p);
            continue;
        }
        b->eq[o++] = b->eq[i];
    }
    b->neq = o;
}

static int is_number(sqlite3_value *v)
{
    int t = sqlite3_value_type(v);
    return t == SQLITE_INTEGER || t == SQLITE_FLOAT;
}

static int read_bounds(int idxNum, int argc, sqlite3_value **argv, scan_bounds *b)
{
    memset(b, 0, sizeof *b);
    b->limit = -1;
    b->ts_lo = INT64_MIN;
    int a = 0, rc = SQLITE_OK;
    for (int bit = 0; bit < P_NBITS && !rc; bit++) {
        if (!(idxNum & (1 << bit))) continue;
        if (a >= argc) return SQLITE_ERROR;
        sqlite3_value *v = argv[a++];
        int f = 1 << bit;
        const unsigned char *p;
        size_t n;
        int64_t x;
        int r;
        switch (f) {
        case P_KEY_EQ: {
            sqlite3_value *e = NULL;
            int isin = sqlite3_vtab_in_first(v, &e) == SQLITE_OK;
            if (!isin) e = v;
            while (e) {
                if ((idxNum & P_KEY_NUM) && is_number(e)) { /* keys numerically equal: add_numeric_keys */
                    sqlite3_value **nv = sqlite3_realloc64(b->nums, (b->nnums + 1) * sizeof *nv);
                    if (!nv) return SQLITE_NOMEM;
                    b->nums = nv;
                    if (!(b->nums[b->nnums] = sqlite3_value_dup(e))) return SQLITE_NOMEM;
                    b->nnums++;
                }
                if (key_text(e, &p, &n) && (rc = eq_push(b, p, n)) != SQLITE_OK) return rc;
                if (!isin) break;
                rc = sqlite3_vtab_in_next(v, &e);
                if (rc == SQLITE_DONE) {
                    rc = SQLITE_OK;
                    break;
                }
                if (rc) return rc;
            }
            if (b->neq == 0) b->none = 1;
            eq_sort(b);
            break;
        }
        /* a number takes the key column's TEXT affinity (key > 5 is key > '5'), as for = */
        case P_KEY_GE: case P_KEY_GT:
            r = sqlite3_value_type(v);
            if ((idxNum & P_KEY_NUM) && is_number(v)) { /* numeric order: no key bound, SQLite checks */
            } else if (r == SQLITE_NULL || r == SQLITE_BLOB) b->none = 1;
            else if (key_text(v, &p, &n)) rc = lower_key(b, p, n, f == P_KEY_GE);
            else rc = SQLITE_NOMEM;
            break;
        case P_KEY_LE: case P_KEY_LT:
            r = sqlite3_value_type(v);
            if ((idxNum & P_KEY_NUM) && is_number(v)) {
            } else if (r == SQLITE_NULL) b->none = 1;
            else if (r == SQLITE_BLOB) { /* every TEXT key is smaller than a blob */
            } else if (key_text(v, &p, &n)) rc = upper_key(b, p, n, f == P_KEY_LE);
            else rc = SQLITE_NOMEM;
            break;
        case P_KEY_LIKE: case P_KEY_GLOB:
            if (sqlite3_value_type(v) == SQLITE_TEXT) {
                p = sqlite3_value_text(v);
                n = (size_t)sqlite3_value_bytes(v);
                rc = prefix_range(b, p, pattern_prefix(p, n, f == P_KEY_LIKE));
            }
            break;
        case P_SEQ_EQ:
            r = int_bound(v, 1, 0, &x);
            if (r == 1 || (r == 0 && x < 0)) b->none = 1;
            else if (r == 0) {
                int64_t y;
                if (int_bound(v, 0, 0, &y) != 0 || y != x + 1) b->none = 1; /* 2.5 */
                if ((uint64_t)x > b->seq_lo) b->seq_lo = (uint64_t)x;
                if (!b->has_seq_hi || (uint64_t)x + 1 < b->seq_hi) b->seq_hi = (uint64_t)x + 1;
                b->has_seq_hi = 1;
            }
            break;
        case P_SEQ_GE: case P_SEQ_GT:
            r = int_bound(v, 1, f == P_SEQ_GT, &x);
            if (r == 1) b->none = 1;
            else if (r == 0 && x > 0 && (uint64_t)x > b->seq_lo) b->seq_lo = (uint64_t)x;
            break;
        case P_SEQ_LE: case P_SEQ_LT:
            r = int_bound(v, 0, f == P_SEQ_LT, &x);
            if (r == 1 || (r == 0 && x <= 0)) b->none = 1;
            else if (r == 0 && (!b->has_seq_hi || (uint64_t)x < b->seq_hi)) {
                b->seq_hi = (uint64_t)x;
                b->has_seq_hi = 1;
            }
            break;
        case P_TS_GE: case P_TS_GT:
            r = int_bound(v, 1, f == P_TS_GT, &x);
            if (r == 1) b->none = 1;
            else if (r == 0 && x > b->ts_lo) {
                b->ts_lo = x;
                b->has_ts_lo = 1;
            }
            break;
        case P_TS_LE: case P_TS_LT:
            r = int_bound(v, 0, f == P_TS_LT, &x);
            if (r == 1) b->none = 1;
            else if (r == 0 && (!b->has_ts_hi || x < b->ts_hi)) {
                b->ts_hi = x;
                b->has_ts_hi = 1;
            }
            break;
        case P_LIMIT:
            b->limit = sqlite3_value_int64(v);
            if (b->limit < 0) b->limit = -1;
            break;
        case P_OFFSET:
            b->offset = sqlite3_value_int64(v);
            if (b->offset < 0) b->offset = 0;
            break;
        }
    }
    if (b->has_seq_hi && b->seq_hi <= b->seq_lo) b->none = 1;
    if (b->has_ts_hi && b->has_ts_lo && b->ts_hi <= b->ts_lo) b->none = 1;
    if (b->limit == 0) b->none = 1;
    return rc;
}

static int key_in_range(const scan_bounds *b, const void *k, size_t n)
{
    if (b->has_lo) {
        int c = bcmp_(k, n, b->lo, b->lolen);
        if (c < 0 || (c == 0 && !b->lo_incl)) return 0;
    }
    if (b->has_hi) {
        int c = bcmp_(k, n, b->hi, b->hilen);
        if (c > 0 || (c == 0 && !b->hi_incl)) return 0;
    }
    return 1;
}

static int set_od_err(sqlite3_vtab *vt, const od_err *e, const char *what);

/* The keys that can look numeric (those starting with whitespace, a sign, '.' or a digit),
 * listed once per cursor: a join calls xFilter once per outer row, and the list is reused for
 * every call of the statement (keys created meanwhile are not seen by it). */
typedef struct numkeys {
    int loaded;
    keybuf *k;
    size_t n, cap;
} numkeys;

static void numkeys_free(numkeys *nk)
{
    for (size_t i = 0; i < nk->n; i++) sqlite3_free(nk->k[i].p);
    sqlite3_free(nk->k);
    memset(nk, 0, sizeof *nk);
}

static int numkeys_load(numkeys *nk, od_eventstore *es, sqlite3_vtab *vt, const char *who)
{
    static const unsigned char starts[][2] = {{0x09, 0x0E}, {' ', ' ' + 1}, {'+', '+' + 1}, {'-', '.' + 1},
                                              {'0', '9' + 1}};
    if (nk->loaded) return SQLITE_OK;
    for (size_t r = 0; r < sizeof starts / sizeof starts[0]; r++) {
        od_ev_keys *k = NULL;
        od_err err = {0};
        if (od_ev_keys_open(es, &starts[r][0], 1, &starts[r][1], 1, &k, &err)) return set_od_err(vt, &err, who);
        while (od_ev_keys_valid(k)) {
            size_t kl;
            const uint8_t *kp = od_ev_keys_key(k, &kl);
            if (nk->n == nk->cap) {
                size_t cap = nk->cap ? 2 * nk->cap : 16;
                keybuf *a = sqlite3_realloc64(nk->k, cap * sizeof *a);
                if (!a) {
                    od_ev_keys_free(k);
                    return SQLITE_NOMEM;
                }
                nk->k = a;
                nk->cap = cap;
            }
            if (!(nk->k[nk->n].p = sqlite3_malloc64(kl + 1))) {
                od_ev_keys_free(k);
                return SQLITE_NOMEM;
            }
            memcpy(nk->k[nk->n].p, kp, kl);
            nk->k[nk->n++].n = kl;
            if (od_ev_keys_next(k, &err)) {
                od_ev_keys_free(k);
                return set_od_err(vt, &err, who);
            }
        }
        od_ev_keys_free(k);
    }
    nk->loaded = 1;
    return SQLITE_OK;
}

/* P_KEY_NUM: add to the key list every existing key that SQLite's NUMERIC affinity turns into
 * a number equal to one of b->nums ('05', '5.0', ' 5', '+5', '5e0' for 5). Only the keys that
 * can look numeric are compared (numkeys). The comparison is SQLite's own:
 * CAST(key AS TEXT) = CAST(num AS NUMERIC) applies NUMERIC affinity to the key exactly as
 * `key = t.n` does with an INTEGER column t.n. */
static int add_numeric_keys(sqlite3 *db, sqlite3_stmt **st, od_eventstore *es, numkeys *nk, scan_bounds *b,
                            sqlite3_vtab *vt, const char *who)
{
    int rc = numkeys_load(nk, es, vt, who);
    if (rc) return rc;
    if (!*st && (rc = sqlite3_prepare_v2(db, "SELECT CAST(?1 AS TEXT) = CAST(?2 AS NUMERIC)", -1, st, NULL)))
        return rc;
    for (size_t j = 0; j < nk->n && !rc; j++) {
        for (size_t i = 0; i < b->nnums && !rc; i++) {
            sqlite3_bind_text(*st, 1, (const char *)nk->k[j].p, (int)nk->k[j].n, SQLITE_STATIC);
            sqlite3_bind_value(*st, 2, b->nums[i]);
            int step = sqlite3_step(*st);
            int eq = step == SQLITE_ROW && sqlite3_column_int(*st, 0) == 1;
            sqlite3_reset(*st);
            if (step != SQLITE_ROW) rc = step == SQLITE_DONE ? SQLITE_ERROR : step;
            else if (eq) {
                rc = eq_push(b, nk->k[j].p, nk->k[j].n);
                break;
            }
        }
    }
    sqlite3_clear_bindings(*st);
    if (!rc) eq_sort(b);
    return rc;
}

/* ---------------------------------------------------------------- what both tables share */

/* The first member of ev_vtab and keys_vtab (so a pointer to either is one to its es_table and
 * back): the store a table reads and writes, its place in the connection, and the rowid → key
 * map its DELETE/UPDATE resolve rowids through. */
typedef struct es_table {
    sqlite3_vtab base;
    sqlite3 *db;
    es_conn *conn;
    struct es_table *next_in_conn; /* the connection's tables of the same module */
    sqlite3_stmt *numst;           /* add_numeric_keys' comparison */
    od_eventstore *es;
    char *uri;
    keybuf *rowkeys;               /* rowid (eventstore: rowid >> 40) → key */
    size_t nrowkeys, caprowkeys;
    int nsp;                       /* savepoints 0..nsp-1 hold this table's pending state */
} es_table;

/* xCreate and xConnect of both modules: allocate the table object (`size` bytes, starting with
 * an es_table), acquire the store named by the arguments, declare `schema`, and link the table
 * into the connection's `list`. The tables read and write a store: DIRECTONLY. */
static int table_connect(sqlite3 *db, es_conn *conn, es_table **list, const char *module, const char *schema,
                         size_t size, int argc, const char *const *argv, sqlite3_vtab **out, char **pzErr)
{
    es_table *t = sqlite3_malloc64(size);
    if (!t) return SQLITE_NOMEM;
    memset(t, 0, size);
    int rc = acquire(argc, argv, module, &t->uri, &t->es, pzErr);
    if (rc) {
        sqlite3_free(t);
        return rc;
    }
    rc = sqlite3_declare_vtab(db, schema);
    if (rc) {
        od_vtab_handle_release(t->es);
        sqlite3_free(t->uri);
        sqlite3_free(t);
        return rc;
    }
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    t->db = db;
    t->conn = conn;
    conn->refs++;
    t->next_in_conn = *list;
    *list = t;
    *out = &t->base;
    return SQLITE_OK;
}

static void rowkeys_clear(es_table *t)
{
    for (size_t i = 0; i < t->nrowkeys; i++) sqlite3_free(t->rowkeys[i].p);
    t->nrowkeys = 0;
}

/* xDisconnect and xDestroy, after the module has freed its own state: release the store,
 * unlink the table from the connection's `list`, free it. */
static void table_disconnect(es_table *t, es_table **list)
{
    rowkeys_clear(t);
    sqlite3_free(t->rowkeys);
    od_vtab_handle_release(t->es);
    sqlite3_finalize(t->numst);
    for (es_table **pp = list; *pp; pp = &(*pp)->next_in_conn)
        if (*pp == t) {
            *pp = t->next_in_conn;
            break;
        }
    conn_unref(t->conn);
    sqlite3_free(t->uri);
    sqlite3_free(t);
}

/* Append the key [k, n) to the rowid → key map (its index: t->nrowkeys - 1). */
static int rowkeys_push(es_table *t, const void *k, size_t n)
{
    if (t->nrowkeys == t->caprowkeys) {
        size_t cap = t->caprowkeys ? 2 * t->caprowkeys : 16;
        keybuf *nk = sqlite3_realloc64(t->rowkeys, cap * sizeof *nk);
        if (!nk) return SQLITE_NOMEM;
        t->rowkeys = nk;
        t->caprowkeys = cap;
    }
    keybuf *r = &t->rowkeys[t->nrowkeys];
    r->p = sqlite3_malloc64(n + 1);
    if (!r->p) return SQLITE_NOMEM;
    memcpy(r->p, k, n);
    r->n = n;
    t->nrowkeys++;
    return SQLITE_OK;
}

/* xOpen of both modules: a zeroed cursor object of `size` bytes. */
static int cursor_alloc(size_t size, sqlite3_vtab_cursor **out)
{
    sqlite3_vtab_cursor *c = sqlite3_malloc64(size);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, size);
    *out = c;
    return SQLITE_OK;
}

/* A read-only table follows a store another process writes: pick up its new state (records,
 * and the store default age and retention floor its last writer open recorded) once per cursor,
 * i.e. per scan, not per row of a join. Writers: a no-op. */
static int refresh_once(int *done, od_eventstore *es, sqlite3_vtab *vt, const char *what)
{
    if (*done) return SQLITE_OK;
    od_err err = {0};
    if (od_ev_refresh(es, &err)) return set_od_err(vt, &err, what);
    *done = 1;
    return SQLITE_OK;
}

/* The start of xFilter in both modules: refresh (refresh_once), read the plan's bounds into b,
 * and add the keys a numeric key term matches. `who` prefixes error messages. */
static int scan_start(es_table *t, int *refreshed, scan_bounds *b, numkeys *nk, int idxNum, int argc,
                      sqlite3_value **argv, const char *who)
{
    int rc = refresh_once(refreshed, t->es, &t->base, who);
    if (rc) return rc;
    rc = read_bounds(idxNum, argc, argv, b);
    if (!rc && !b->none && b->nnums) rc = add_numeric_keys(t->db, &t->numst, t->es, nk, b, &t->base, who);
    return rc;
}

/* A scan over key ranges (no key list): the store's keys from b's lower bound on. */
static int scan_keys_open(es_table *t, const scan_bounds *b, od_ev_keys **out, const char *who)
{
    od_err err = {0};
    if (od_ev_keys_open(t->es, b->has_lo ? b->lo : NULL, b->has_lo ? b->lolen : 0, NULL, 0, out, &err))
        return set_od_err(&t->base, &err, who);
    return SQLITE_OK;
}

static int store_commit(es_conn *c, od_eventstore *es, sqlite3_vtab *caller);

/* xSync of both modules: the first table of a store to be synced at COMMIT commits the whole
 * store's transaction (store_commit); the others then find nothing pending. */
static int table_sync(sqlite3_vtab *vt)
{
    es_table *t = (es_table *)vt;
    return store_commit(t->conn, t->es, vt);
}

/* xRelease of both modules: RELEASE keeps what the savepoint's statements did. */
static int table_release(sqlite3_vtab *vt, int i)
{
    es_table *t = (es_table *)vt;
    if (i < t->nsp) t->nsp = i;
    return SQLITE_OK;
}

/* ---------------------------------------------------------------- the eventstore table */

enum { C_KEY = 0, C_SEQ, C_TS, C_VALUE, C_HEADERS, C_EXPECTED };
enum { F_TEXT = 1, F_NULL = 2 }; /* record flags used by SQL */

typedef struct pend_rec {
    unsigned char *key;
    size_t klen;
    unsigned char *val;
    size_t vlen;
    od_ev_header *h;
    size_t nh;
    char *hjson;   /* owns the header bytes (cJSON strings copied here) */
    int64_t ts;
    int64_t expected;
    uint8_t flags;
    uint64_t order;  /* the connection's INSERT counter: commit order across tables */
} pend_rec;

typedef struct pend_trim {
    unsigned char *key;
    size_t klen;
    uint64_t first;     /* first visible seq when the first delete came */
    uint64_t next_del;  /* the seq the next delete must name */
} pend_trim;

/* What a savepoint restores: the pending counts and every pending trim's next_del (a later
 * DELETE moves the next_del of a trim that existed before the savepoint). */
typedef struct sp_state {
    size_t nrecs, ntrims;
    uint64_t *next_del;      /* ntrims values */
} sp_state;

typedef struct ev_vtab {
    es_table tab;
    pend_rec *recs;
    size_t nrecs, caprecs;
    pend_trim *trims;
    size_t ntrims, captrims;
    int trims_unsorted;      /* trims not in key order (binary search only when sorted) */
    sp_state *sps;           /* savepoint i → pending state at its start */
    int capsp;
} ev_vtab;

#define ROWID_SEQ_BITS 40

static void pend_rec_free(pend_rec *r)
{
    sqlite3_free(r->key);
    sqlite3_free(r->val);
    sqlite3_free(r->h);
    sqlite3_free(r->hjson);
}

static void pending_clear(ev_vtab *v, size_t nrecs, size_t ntrims)
{
    while (v->nrecs > nrecs) pend_rec_free(&v->recs[--v->nrecs]);
    while (v->ntrims > ntrims) sqlite3_free(v->trims[--v->ntrims].key);
    if (v->ntrims == 0) v->trims_unsorted = 0;
}

/* The pending trim of key [k, n), or NULL. DELETE visits keys in order, so the trims are
 * usually sorted: binary search then (a linear search per row was quadratic in the keys). */
static pend_trim *find_trim(ev_vtab *v, const void *k, size_t n)
{
    if (v->trims_unsorted) {
        for (size_t i = v->ntrims; i-- > 0;)
            if (bcmp_(v->trims[i].key, v->trims[i].klen, k, n) == 0) return &v->trims[i];
        return NULL;
    }
    size_t lo = 0, hi = v->ntrims;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = bcmp_(v->trims[mid].key, v->trims[mid].klen, k, n);
        if (c == 0) return &v->trims[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int ev_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **pzErr)
{
    es_conn *c = aux;
    return table_connect(db, c, &c->evs, "eventstore",
                         "CREATE TABLE x(key TEXT, seq INTEGER, ts INTEGER, value, headers TEXT, expected_seq HIDDEN)",
                         sizeof(ev_vtab), argc, argv, out, pzErr);
}

static int ev_disconnect(sqlite3_vtab *vt)
{
    ev_vtab *v = (ev_vtab *)vt;
    pending_clear(v, 0, 0);
    sqlite3_free(v->recs);
    sqlite3_free(v->trims);
    for (int i = 0; i < v->capsp; i++) sqlite3_free(v->sps[i].next_del);
    sqlite3_free(v->sps);
    table_disconnect(&v->tab, &v->tab.conn->evs);
    return SQLITE_OK;
}

static int ev_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    return best_index(vt, info, C_KEY, C_SEQ, C_TS, 1);
}

typedef struct ev_cursor {
    sqlite3_vtab_cursor base;
    scan_bounds b;
    numkeys nk;            /* P_KEY_NUM: numeric-looking keys, loaded once per cursor */
    od_ev_keys *keys;      /* when scanning key ranges */
    size_t eqi;            /* when iterating the key list */
    od_ev_cursor *rc;      /* records of the current key */
    od_ev_record rec;
    int eof;
    sqlite3_int64 emitted, skipped;
    od_ev_record *desc;    /* P_DESC_TAIL: copies of the tail records, oldest first */
    uint8_t **desc_mem;
    long ndesc, di;
    od_ev_cursor **mc;     /* P_SEQ_ORDER with several keys: one record cursor per key (by key order) */
    size_t nmc;
    size_t *heap;          /* indexes into mc of the cursors with a record: a min-heap by (seq, index) */
    size_t nheap;
    int refreshed;         /* od_ev_refresh done for this cursor (once per scan, not per join row) */
} ev_cursor;

static int ev_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    (void)vt;
    return cursor_alloc(sizeof(ev_cursor), out);
}

static void desc_free(ev_cursor *c)
{
    for (long i = 0; i < c->ndesc; i++) sqlite3_free(c->desc_mem[i]);
    sqlite3_free(c->desc);
    sqlite3_free(c->desc_mem);
    c->desc = NULL;
    c->desc_mem = NULL;
    c->ndesc = 0;
}

static void merge_free(ev_cursor *c)
{
    for (size_t i = 0; i < c->nmc; i++) od_ev_cursor_free(c->mc[i]);
    sqlite3_free(c->mc);
    sqlite3_free(c->heap);
    c->mc = NULL;
    c->heap = NULL;
    c->nmc = c->nheap = 0;
}

static void ev_reset(ev_cursor *c)
{
    desc_free(c);
    merge_free(c);
    od_ev_cursor_free(c->rc);
    c->rc = NULL;
    od_ev_keys_free(c->keys);
    c->keys = NULL;
    bounds_free(&c->b);
    c->eof = 1;
    c->eqi = 0;
    c->emitted = c->skipped = 0;
}

static int ev_close(sqlite3_vtab_cursor *cur)
{
    ev_cursor *c = (ev_cursor *)cur;
    ev_reset(c);
    numkeys_free(&c->nk);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int set_od_err(sqlite3_vtab *vt, const od_err *e, const char *what)
{
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_mprintf("%s%s", what, e->msg[0] ? e->msg : od_code_name(e->code));
    if (e->code == OD_CONFLICT) return SQLITE_CONSTRAINT;
    if (e->code == OD_NOMEM) return SQLITE_NOMEM;
    if (e->code == OD_BUSY) return SQLITE_BUSY;
    return SQLITE_ERROR;
}

/* Open a record cursor for the key [k, n) within the seq/ts bounds. */
static int open_key_cursor(ev_cursor *c, ev_vtab *v, const void *k, size_t n, od_ev_cursor **out, od_err *err)
{
    od_ev_read_opts ro = {0};
    if (c->b.seq_lo || !c->b.has_ts_lo) {
        ro.from = OD_EV_FROM_SEQ;
        ro.seq = c->b.seq_lo;
    } else {
        ro.from = OD_EV_FROM_TS;
        ro.ts_ms = c->b.ts_lo;
    }
    if (c->b.has_seq_hi) ro.end_seq = c->b.seq_hi;
    if (c->b.has_ts_hi && c->b.ts_hi > 0) ro.end_ts_ms = c->b.ts_hi;
    return od_ev_cursor_open(v->tab.es, k, n, &ro, out, err);
}

/* Open the record cursor of the current key [k, n). */
static int open_key(ev_cursor *c, ev_vtab *v, const void *k, size_t n, od_err *err)
{
    od_ev_cursor_free(c->rc);
    c->rc = NULL;
    return open_key_cursor(c, v, k, n, &c->rc, err);
}

/* Is the current record inside every bound (the engine applied most already)? */
static int rec_ok(const ev_cursor *c)
{
    const od_ev_record *r = &c->rec;
    if (r->seq < c->b.seq_lo) return 0;
    if (c->b.has_seq_hi && r->seq >= c->b.seq_hi) return 0;
    if (c->b.has_ts_lo && r->ts_ms < c->b.ts_lo) return 0;
    if (c->b.has_ts_hi && r->ts_ms >= c->b.ts_hi) return 0;
    return 1;
}

/* Advance to the next key that has a matching record, or eof. The record cursor, if open
 * and valid, is checked first. */
static int settle(ev_cursor *c, ev_vtab *v)
{
    od_err err = {0};
    int rc;
    for (;;) {
        while (c->rc && od_ev_cursor_valid(c->rc)) {
            od_ev_cursor_record(c->rc, &c->rec);
            if (c->b.has_ts_hi && c->rec.ts_ms >= c->b.ts_hi) break;
            if (rec_ok(c)) {
                if (c->skipped < c->b.offset) {
                    c->skipped++;
                } else {
                    if (c->b.limit >= 0 && c->emitted >= c->b.limit) {
                        c->eof = 1;
                        return SQLITE_OK;
                    }
                    c->eof = 0;
                    return SQLITE_OK;
                }
            }
            rc = od_ev_cursor_next(c->rc, &err);
            if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
        }
        /* next key */
        if (c->b.neq) {
            if (c->eqi >= c->b.neq) break;
            keybuf *k = &c->b.eq[c->eqi++];
            if (!key_in_range(&c->b, k->p, k->n)) continue;
            if (k->n == 0 || k->n > OD_EV_KEY_MAX) continue;
            rc = open_key(c, v, k->p, k->n, &err);
        } else {
            if (!c->keys) break;
            if (c->rc) { /* the previous key is done */
                rc = od_ev_keys_next(c->keys, &err);
                if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
            }
            while (od_ev_keys_valid(c->keys)) {
                size_t kl;
                const uint8_t *kp = od_ev_keys_key(c->keys, &kl);
                if (key_in_range(&c->b, kp, kl)) break;
                if (c->b.has_hi && !key_in_range(&c->b, kp, kl) && bcmp_(kp, kl, c->b.hi, c->b.hilen) > 0) {
                    c->eof = 1;
                    return SQLITE_OK;
                }
                rc = od_ev_keys_next(c->keys, &err);
                if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
            }
            if (!od_ev_keys_valid(c->keys)) break;
            size_t kl;
            const uint8_t *kp = od_ev_keys_key(c->keys, &kl);
            rc = open_key(c, v, kp, kl, &err);
        }
        if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
    }
    c->eof = 1;
    return SQLITE_OK;
}

/* Copy a record into the cursor's array (c->desc; its key, value and headers in one block,
 * c->desc_mem, whose start is the key). */
static int desc_push(ev_cursor *c, long *cap, const od_ev_record *in)
{
    od_ev_record r = *in;
    if (c->ndesc == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        od_ev_record *nd = sqlite3_realloc64(c->desc, (size_t)*cap * sizeof *nd);
        uint8_t **nm = nd ? sqlite3_realloc64(c->desc_mem, (size_t)*cap * sizeof *nm) : NULL;
        if (nd) c->desc = nd;
        if (nm) c->desc_mem = nm;
        if (!nd || !nm) return SQLITE_NOMEM;
    }
    uint8_t *m = sqlite3_malloc64(r.klen + r.vlen + r.headers_len + 1);
    if (!m) return SQLITE_NOMEM;
    memcpy(m, r.key, r.klen);
    if (r.vlen) memcpy(m + r.klen, r.value, r.vlen);
    if (r.headers_len) memcpy(m + r.klen + r.vlen, r.headers, r.headers_len);
    r.key = m;
    r.value = m + r.klen;
    r.headers = m + r.klen + r.vlen;
    c->desc_mem[c->ndesc] = m;
    c->desc[c->ndesc++] = r;
    return SQLITE_OK;
}

/* P_SEQ_ORDER with several keys (a number matched '5' and '05'): a k-way merge by seq of one
 * record cursor per key (each key's records come in seq order), so memory grows with the
 * number of keys, not of records. Ties in seq come in key byte order. */
static int merge_less(ev_cursor *c, size_t a, size_t b)
{
    od_ev_record x, y;
    od_ev_cursor_record(c->mc[a], &x);
    od_ev_cursor_record(c->mc[b], &y);
    return x.seq < y.seq || (x.seq == y.seq && a < b);
}

static void merge_sift_down(ev_cursor *c, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nheap && merge_less(c, c->heap[l], c->heap[m])) m = l;
        if (r < c->nheap && merge_less(c, c->heap[r], c->heap[m])) m = r;
        if (m == i) return;
        size_t t = c->heap[i];
        c->heap[i] = c->heap[m];
        c->heap[m] = t;
        i = m;
    }
}

/* Move cursor i to its first record (at or after its position) inside every bound; *ok = 0
 * when it has none left. */
static int merge_settle_one(ev_cursor *c, ev_vtab *v, size_t i, int *ok)
{
    od_err err = {0};
    *ok = 0;
    while (od_ev_cursor_valid(c->mc[i])) {
        od_ev_cursor_record(c->mc[i], &c->rec);
        if (c->b.has_ts_hi && c->rec.ts_ms >= c->b.ts_hi) return SQLITE_OK;
        if (rec_ok(c)) {
            *ok = 1;
            return SQLITE_OK;
        }
        if (od_ev_cursor_next(c->mc[i], &err)) return set_od_err(&v->tab.base, &err, "eventstore: ");
    }
    return SQLITE_OK;
}

/* The heap's smallest record becomes the current row (after OFFSET), or eof. */
static int merge_emit(ev_cursor *c, ev_vtab *v)
{
    od_err err = {0};
    for (;;) {
        if (!c->nheap || (c->b.limit >= 0 && c->emitted >= c->b.limit)) {
            c->eof = 1;
            return SQLITE_OK;
        }
        size_t top = c->heap[0];
        od_ev_cursor_record(c->mc[top], &c->rec);
        if (c->skipped >= c->b.offset) {
            c->eof = 0;
            return SQLITE_OK;
        }
        c->skipped++;
        int ok;
        if (od_ev_cursor_next(c->mc[top], &err)) return set_od_err(&v->tab.base, &err, "eventstore: ");
        int rc = merge_settle_one(c, v, top, &ok);
        if (rc) return rc;
        if (!ok) c->heap[0] = c->heap[--c->nheap];
        merge_sift_down(c, 0);
    }
}

static int merge_next(ev_cursor *c, ev_vtab *v)
{
    od_err err = {0};
    if (!c->nheap) {
        c->eof = 1;
        return SQLITE_OK;
    }
    size_t top = c->heap[0];
    if (od_ev_cursor_next(c->mc[top], &err)) return set_od_err(&v->tab.base, &err, "eventstore: ");
    int ok, rc = merge_settle_one(c, v, top, &ok);
    if (rc) return rc;
    if (!ok) c->heap[0] = c->heap[--c->nheap];
    merge_sift_down(c, 0);
    return merge_emit(c, v);
}

static int merge_open(ev_cursor *c, ev_vtab *v)
{
    c->mc = sqlite3_malloc64(c->b.neq * sizeof *c->mc);
    c->heap = sqlite3_malloc64(c->b.neq * sizeof *c->heap);
    if (!c->mc || !c->heap) return SQLITE_NOMEM;
    od_err err = {0};
    for (size_t e = 0; e < c->b.neq; e++) {
        keybuf *k = &c->b.eq[e];
        if (!key_in_range(&c->b, k->p, k->n) || k->n == 0 || k->n > OD_EV_KEY_MAX) continue;
        size_t i = c->nmc;
        c->mc[i] = NULL;
        if (open_key_cursor(c, v, k->p, k->n, &c->mc[i], &err)) return set_od_err(&v->tab.base, &err, "eventstore: ");
        c->nmc++;
        int ok, rc = merge_settle_one(c, v, i, &ok);
        if (rc) return rc;
        if (ok) c->heap[c->nheap++] = i;
    }
    for (size_t i = c->nheap / 2; i-- > 0;) merge_sift_down(c, i);
    return merge_emit(c, v);
}

/* P_DESC_TAIL: copy the last limit + offset records of the one key, emit them newest first. */
static int desc_tail_fill(ev_cursor *c, ev_vtab *v)
{
    if (c->b.neq != 1 || c->b.eq[0].n == 0 || c->b.eq[0].n > OD_EV_KEY_MAX) return SQLITE_OK;
    od_ev_read_opts ro = {.from = OD_EV_FROM_TAIL};
    ro.tail_n = c->b.limit < 0 ? UINT64_MAX : (uint64_t)c->b.limit + (uint64_t)c->b.offset;
    od_ev_cursor *rc_ = NULL;
    od_err err = {0};
    int rc = od_ev_cursor_open(v->tab.es, c->b.eq[0].p, c->b.eq[0].n, &ro, &rc_, &err);
    if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
    long cap = 0;
    while (od_ev_cursor_valid(rc_)) {
        od_ev_record r;
        od_ev_cursor_record(rc_, &r);
        if (desc_push(c, &cap, &r)) {
            od_ev_cursor_free(rc_);
            return SQLITE_NOMEM;
        }
        rc = od_ev_cursor_next(rc_, &err);
        if (rc) {
            od_ev_cursor_free(rc_);
            return set_od_err(&v->tab.base, &err, "eventstore: ");
        }
    }
    od_ev_cursor_free(rc_);
    c->di = c->ndesc - 1 - (long)c->b.offset;
    return SQLITE_OK;
}

static int ev_filter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc, sqlite3_value **argv)
{
    ev_cursor *c = (ev_cursor *)cur;
    ev_vtab *v = (ev_vtab *)cur->pVtab;
    (void)idxStr;
    ev_reset(c);
    int rc = scan_start(&v->tab, &c->refreshed, &c->b, &c->nk, idxNum, argc, argv, "eventstore: ");
    if (rc) return rc;
    if (c->b.none) {
        c->eof = 1;
        return SQLITE_OK;
    }
    if (idxNum & P_DESC_TAIL) {
        rc = desc_tail_fill(c, v);
        if (rc) return rc;
        c->eof = c->di < 0;
        if (!c->eof) c->rec = c->desc[c->di];
        return SQLITE_OK;
    }
    if (!c->b.neq) {
        rc = scan_keys_open(&v->tab, &c->b, &c->keys, "eventstore: ");
        if (rc) return rc;
    }
    if ((idxNum & P_SEQ_ORDER) && c->b.neq > 1) return merge_open(c, v);
    return settle(c, v);
}

static int ev_next(sqlite3_vtab_cursor *cur)
{
    ev_cursor *c = (ev_cursor *)cur;
    ev_vtab *v = (ev_vtab *)cur->pVtab;
    od_err err = {0};
    c->emitted++;
    if (c->desc) {
        c->di--;
        c->eof = c->di < 0;
        if (!c->eof) c->rec = c->desc[c->di];
        return SQLITE_OK;
    }
    if (c->mc) return merge_next(c, v);
    int rc = od_ev_cursor_next(c->rc, &err);
    if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
    return settle(c, v);
}

static int ev_eof(sqlite3_vtab_cursor *cur) { return ((ev_cursor *)cur)->eof; }

static void result_headers(sqlite3_context *ctx, const od_ev_record *r)
{
    if (!r->nheaders) {
        sqlite3_result_null(ctx);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    size_t pos = 0;
    od_ev_header h;
    while (od_ev_header_next(r->headers, r->headers_len, &pos, &h)) {
        char *name = sqlite3_malloc64(h.nlen + 1), *val = sqlite3_malloc64(h.vlen + 1);
        if (!name || !val) {
            sqlite3_free(name);
            sqlite3_free(val);
            cJSON_Delete(o);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        memcpy(name, h.name, h.nlen);
        name[h.nlen] = 0;
        memcpy(val, h.value, h.vlen);
        val[h.vlen] = 0;
        cJSON *s = cJSON_CreateString(val);
        if (!s) {
            sqlite3_free(name);
            sqlite3_free(val);
            cJSON_Delete(o);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        cJSON_AddItemToObject(o, name, s);
        sqlite3_free(name);
        sqlite3_free(val);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_text(ctx, txt, -1, SQLITE_TRANSIENT);
    cJSON_free(txt);
}

static int ev_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    ev_cursor *c = (ev_cursor *)cur;
    const od_ev_record *r = &c->rec;
    switch (col) {
    case C_KEY: sqlite3_result_text(ctx, (const char *)r->key, (int)r->klen, SQLITE_TRANSIENT); break;
    case C_SEQ: sqlite3_result_int64(ctx, (sqlite3_int64)r->seq); break;
    case C_TS: sqlite3_result_int64(ctx, r->ts_ms); break;
    case C_VALUE:
        if (r->flags & F_NULL) sqlite3_result_null(ctx);
        else if (r->flags & F_TEXT) sqlite3_result_text(ctx, (const char *)r->value, (int)r->vlen, SQLITE_TRANSIENT);
        else sqlite3_result_blob(ctx, r->value, (int)r->vlen, SQLITE_TRANSIENT);
        break;
    case C_HEADERS: result_headers(ctx, r); break;
    default: sqlite3_result_null(ctx); break;
    }
    return SQLITE_OK;
}

static int ev_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    ev_cursor *c = (ev_cursor *)cur;
    ev_vtab *v = (ev_vtab *)cur->pVtab;
    size_t i = v->tab.nrowkeys, lim = i > 8 ? i - 8 : 0;
    while (i > lim && !(v->tab.rowkeys[i - 1].n == c->rec.klen &&
                        memcmp(v->tab.rowkeys[i - 1].p, c->rec.key, c->rec.klen) == 0))
        i--;
    if (i > lim) {
        i--;
    } else {
        /* a key other than the last few rows' gets a new entry (rows come in key order, or
         * alternate among a few keys in a seq merge; a key met again later just gets a second
         * index: both name the same key). Searching every entry here made a DELETE over many
         * keys quadratic. */
        if (v->tab.nrowkeys >= ((size_t)1 << 22)) rowkeys_clear(&v->tab);
        i = v->tab.nrowkeys;
        int rc = rowkeys_push(&v->tab, c->rec.key, c->rec.klen);
        if (rc) return rc;
    }
    *out = (sqlite3_int64)(((uint64_t)i << ROWID_SEQ_BITS) | (c->rec.seq & ((UINT64_C(1) << ROWID_SEQ_BITS) - 1)));
    return SQLITE_OK;
}

static int vt_error(sqlite3_vtab *vt, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    return rc;
}

/* Parse a headers JSON object into the pending record. */
static int parse_headers(ev_vtab *v, sqlite3_value *hv, pend_rec *r)
{
    int t = sqlite3_value_type(hv);
    if (t == SQLITE_NULL) return SQLITE_OK;
    if (t != SQLITE_TEXT)
        return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: headers must be a JSON object of strings (TEXT)");
    const char *txt = (const char *)sqlite3_value_text(hv);
    cJSON *o = cJSON_Parse(txt);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: headers must be a JSON object of strings, got %.60s", txt);
    }
    size_t n = 0, bytes = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, o) {
        if (!cJSON_IsString(it) && !cJSON_IsNumber(it) && !cJSON_IsBool(it)) {
            int rc = vt_error(&v->tab.base, SQLITE_MISMATCH,
                              "eventstore: header \"%s\" must be a string, number or boolean", it->string);
            cJSON_Delete(o);
            return rc;
        }
        n++;
    }
    if (n > OD_EV_HEADERS_MAX) {
        cJSON_Delete(o);
        return vt_error(&v->tab.base, SQLITE_TOOBIG, "eventstore: %lld headers, the limit is %d", (long long)n, OD_EV_HEADERS_MAX);
    }
    /* render every value as text, keep all bytes in one allocation */
    char **vals = sqlite3_malloc64((n ? n : 1) * sizeof *vals);
    if (!vals) {
        cJSON_Delete(o);
        return SQLITE_NOMEM;
    }
    size_t i = 0;
    int rc = SQLITE_OK;
    cJSON_ArrayForEach(it, o) {
        if (cJSON_IsString(it)) vals[i] = sqlite3_mprintf("%s", it->valuestring);
        else if (cJSON_IsBool(it)) vals[i] = sqlite3_mprintf("%s", cJSON_IsTrue(it) ? "true" : "false");
        else {
            char *p = cJSON_PrintUnformatted(it);
            vals[i] = p ? sqlite3_mprintf("%s", p) : NULL;
            cJSON_free(p);
        }
        if (!vals[i]) rc = SQLITE_NOMEM;
        else bytes += strlen(it->string) + strlen(vals[i]) + 2;
        i++;
    }
    if (!rc && bytes > OD_EV_HEADER_BYTES_MAX)
        rc = vt_error(&v->tab.base, SQLITE_TOOBIG, "eventstore: headers larger than %d bytes", OD_EV_HEADER_BYTES_MAX);
    if (!rc) {
        r->hjson = sqlite3_malloc64(bytes + 1);
        r->h = sqlite3_malloc64((n ? n : 1) * sizeof *r->h);
        if (!r->hjson || !r->h) rc = SQLITE_NOMEM;
    }
    if (!rc) {
        char *p = r->hjson;
        i = 0;
        cJSON_ArrayForEach(it, o) {
            size_t nl = strlen(it->string), vl = strlen(vals[i]);
            memcpy(p, it->string, nl);
            memcpy(p + nl, vals[i], vl);
            r->h[i] = (od_ev_header){p, nl, p + nl, vl};
            p += nl + vl;
            i++;
        }
        r->nh = n;
    }
    for (size_t j = 0; j < n; j++) sqlite3_free(vals[j]);
    sqlite3_free(vals);
    cJSON_Delete(o);
    return rc;
}

static int ev_insert(ev_vtab *v, sqlite3_value **argv)
{
    sqlite3_value *kv = argv[2 + C_KEY], *sv = argv[2 + C_SEQ], *tv = argv[2 + C_TS], *vv = argv[2 + C_VALUE];
    sqlite3_value *hv = argv[2 + C_HEADERS], *ev = argv[2 + C_EXPECTED];
    if (sqlite3_value_type(kv) == SQLITE_NULL)
        return vt_error(&v->tab.base, SQLITE_CONSTRAINT, "eventstore: key must not be NULL");
    if (sqlite3_value_type(kv) != SQLITE_TEXT)
        return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: key must be TEXT");
    size_t klen = (size_t)sqlite3_value_bytes(kv);
    if (klen == 0) return vt_error(&v->tab.base, SQLITE_CONSTRAINT, "eventstore: key must not be empty");
    if (klen > OD_EV_KEY_MAX)
        return vt_error(&v->tab.base, SQLITE_TOOBIG, "eventstore: key of %lld bytes is longer than the limit of %d", (long long)klen,
                        OD_EV_KEY_MAX);
    int vt = sqlite3_value_type(vv);
    if (vt == SQLITE_INTEGER || vt == SQLITE_FLOAT)
        return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: value must be TEXT, BLOB or NULL");
    size_t vlen = vt == SQLITE_NULL ? 0 : (size_t)sqlite3_value_bytes(vv);
    if (vlen > OD_EV_VALUE_MAX)
        return vt_error(&v->tab.base, SQLITE_TOOBIG, "eventstore: value of %lld bytes is larger than the limit of %u",
                        (long long)vlen, (unsigned)OD_EV_VALUE_MAX);
    int64_t ts = 0, expected = OD_EV_ANY;
    if (sqlite3_value_type(tv) != SQLITE_NULL) {
        if (sqlite3_value_type(tv) != SQLITE_INTEGER || sqlite3_value_int64(tv) < 0)
            return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: ts must be a non-negative INTEGER (unix ms)");
        ts = sqlite3_value_int64(tv);
    }
    sqlite3_value *xv = sqlite3_value_type(ev) != SQLITE_NULL ? ev : sv;
    if (sqlite3_value_type(xv) != SQLITE_NULL) {
        if (sqlite3_value_type(xv) != SQLITE_INTEGER || sqlite3_value_int64(xv) < 0)
            return vt_error(&v->tab.base, SQLITE_MISMATCH, "eventstore: %s must be a non-negative INTEGER",
                            xv == ev ? "expected_seq" : "seq");
        expected = sqlite3_value_int64(xv);
    }
    pend_rec r;
    memset(&r, 0, sizeof r);
    int rc = parse_headers(v, hv, &r);
    if (rc) {
        pend_rec_free(&r);
        return rc;
    }
    r.key = sqlite3_malloc64(klen + 1);
    r.val = sqlite3_malloc64(vlen + 1);
    if (!r.key || !r.val) {
        pend_rec_free(&r);
        return SQLITE_NOMEM;
    }
    memcpy(r.key, sqlite3_value_text(kv), klen);
    r.klen = klen;
    if (vt == SQLITE_TEXT) memcpy(r.val, sqlite3_value_text(vv), vlen);
    else if (vt == SQLITE_BLOB && vlen) memcpy(r.val, sqlite3_value_blob(vv), vlen);
    r.vlen = vlen;
    r.flags = vt == SQLITE_TEXT ? F_TEXT : vt == SQLITE_NULL ? F_NULL : 0;
    r.ts = ts;
    r.expected = expected;
    r.order = v->tab.conn->order++;
    if (v->nrecs == v->caprecs) {
        size_t cap = v->caprecs ? 2 * v->caprecs : 16;
        if (cap > OD_EV_BATCH_MAX) cap = OD_EV_BATCH_MAX;
        if (v->nrecs >= cap) {
            pend_rec_free(&r);
            return vt_error(&v->tab.base, SQLITE_TOOBIG,
                            "eventstore: more than %d records in one transaction", OD_EV_BATCH_MAX);
        }
        pend_rec *nr = sqlite3_realloc64(v->recs, cap * sizeof *nr);
        if (!nr) {
            pend_rec_free(&r);
            return SQLITE_NOMEM;
        }
        v->recs = nr;
        v->caprecs = cap;
    }
    v->recs[v->nrecs++] = r;
    return SQLITE_OK;
}

/* DELETE of (key, seq): only a prefix of a key's log can go (it becomes a trim). */
static int ev_delete(ev_vtab *v, sqlite3_int64 rowid)
{
    uint64_t ki = (uint64_t)rowid >> ROWID_SEQ_BITS;
    uint64_t seq = (uint64_t)rowid & ((UINT64_C(1) << ROWID_SEQ_BITS) - 1);
    if (ki >= v->tab.nrowkeys) return vt_error(&v->tab.base, SQLITE_ERROR, "eventstore: DELETE of an unknown row");
    keybuf *k = &v->tab.rowkeys[ki];
    pend_trim *t = find_trim(v, k->p, k->n);
    if (!t) {
        /* the first visible record of the key now */
        od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ, .max_count = 1};
        od_ev_cursor *c;
        od_err err = {0};
        int rc = od_ev_cursor_open(v->tab.es, k->p, k->n, &ro, &c, &err);
        if (rc) return set_od_err(&v->tab.base, &err, "eventstore: ");
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        uint64_t first = od_ev_cursor_valid(c) ? r.seq : UINT64_MAX;
        od_ev_cursor_free(c);
        if (v->ntrims == v->captrims) {
            size_t cap = v->captrims ? 2 * v->captrims : 8;
            pend_trim *nt = sqlite3_realloc64(v->trims, cap * sizeof *nt);
            if (!nt) return SQLITE_NOMEM;
            v->trims = nt;
            v->captrims = cap;
        }
        if (v->ntrims && bcmp_(v->trims[v->ntrims - 1].key, v->trims[v->ntrims - 1].klen, k->p, k->n) > 0)
            v->trims_unsorted = 1;
        t = &v->trims[v->ntrims];
        t->key = sqlite3_malloc64(k->n + 1);
        if (!t->key) return SQLITE_NOMEM;
        memcpy(t->key, k->p, k->n);
        t->klen = k->n;
        t->first = first;
        t->next_del = first;
        v->ntrims++;
    }
    if (seq >= t->first && seq < t->next_del) return SQLITE_OK; /* an earlier DELETE of this transaction */
    if (seq != t->next_del)
        return vt_error(&v->tab.base, SQLITE_CONSTRAINT,
                        "eventstore: DELETE can only remove the oldest records of a key (a prefix of its log), "
                        "e.g. DELETE FROM t WHERE key = ? AND seq < ?");
    t->next_del = seq + 1;
    return SQLITE_OK;
}

static int ev_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    ev_vtab *v = (ev_vtab *)vt;
    if (argc == 1) return ev_delete(v, sqlite3_value_int64(argv[0]));
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL)
        return vt_error(vt, SQLITE_CONSTRAINT, "eventstore: records are immutable (UPDATE is not supported)");
    *rowid = 0;
    return ev_insert(v, argv);
}

static int ev_begin(sqlite3_vtab *vt)
{
    ev_vtab *v = (ev_vtab *)vt;
    pending_clear(v, 0, 0);
    v->tab.nsp = 0;
    return SQLITE_OK;
}

static int ev_commit(sqlite3_vtab *vt)
{
    ev_vtab *v = (ev_vtab *)vt;
    pending_clear(v, 0, 0);
    rowkeys_clear(&v->tab);
    v->tab.nsp = 0;
    return SQLITE_OK;
}

static int ev_rollback(sqlite3_vtab *vt) { return ev_commit(vt); }

static int ev_savepoint(sqlite3_vtab *vt, int i)
{
    ev_vtab *v = (ev_vtab *)vt;
    if (i < 0) return SQLITE_OK;
    if (i >= v->capsp) {
        sp_state *a = sqlite3_realloc64(v->sps, (size_t)(i + 1) * sizeof *a);
        if (!a) return SQLITE_NOMEM;
        memset(a + v->capsp, 0, (size_t)(i + 1 - v->capsp) * sizeof *a);
        v->sps = a;
        v->capsp = i + 1;
    }
    /* savepoints opened before this table joined the transaction: nothing was pending then */
    for (int j = v->tab.nsp; j < i; j++) {
        sqlite3_free(v->sps[j].next_del);
        v->sps[j] = (sp_state){0, 0, NULL};
    }
    sp_state *sp = &v->sps[i];
    sqlite3_free(sp->next_del);
    sp->next_del = NULL;
    if (v->ntrims) {
        sp->next_del = sqlite3_malloc64(v->ntrims * sizeof *sp->next_del);
        if (!sp->next_del) return SQLITE_NOMEM;
        for (size_t j = 0; j < v->ntrims; j++) sp->next_del[j] = v->trims[j].next_del;
    }
    sp->nrecs = v->nrecs;
    sp->ntrims = v->ntrims;
    v->tab.nsp = i + 1;
    return SQLITE_OK;
}

static int ev_rollback_to(sqlite3_vtab *vt, int i)
{
    ev_vtab *v = (ev_vtab *)vt;
    if (i < 0 || i >= v->tab.nsp) return SQLITE_OK;
    const sp_state *sp = &v->sps[i];
    pending_clear(v, sp->nrecs, sp->ntrims);
    for (size_t j = 0; j < sp->ntrims; j++) v->trims[j].next_del = sp->next_del[j];
    v->tab.nsp = i + 1;
    return SQLITE_OK;
}

static sqlite3_module ev_module = {
    .iVersion = 2,
    .xCreate = ev_connect,
    .xConnect = ev_connect,
    .xBestIndex = ev_best_index,
    .xDisconnect = ev_disconnect,
    .xDestroy = ev_disconnect,
    .xOpen = ev_open,
    .xClose = ev_close,
    .xFilter = ev_filter,
    .xNext = ev_next,
    .xEof = ev_eof,
    .xColumn = ev_column,
    .xRowid = ev_rowid,
    .xUpdate = ev_update,
    .xBegin = ev_begin,
    .xSync = table_sync,
    .xCommit = ev_commit,
    .xRollback = ev_rollback,
    .xSavepoint = ev_savepoint,
    .xRelease = table_release,
    .xRollbackTo = ev_rollback_to,
};

/* ---------------------------------------------------------------- the keys table */

enum { K_KEY = 0, K_FIRST, K_NEXT, K_COUNT, K_BYTES, K_LAST_TS, K_CREATED, K_RET_AGE, K_RET_COUNT };

typedef struct pend_key {
    unsigned char *key;
    size_t klen;
    int del;                 /* 1 delete, 0 set retention */
    int64_t age;
    uint64_t count;
    uint64_t order;          /* the connection's statement counter: commit order across tables */
} pend_key;

typedef struct keys_vtab {
    es_table tab;
    pend_key *ops;
    size_t nops, capops;
    size_t *sp_nops;         /* savepoint i → nops at its start */
    int capsp;
} keys_vtab;

static void keys_pending_clear(keys_vtab *v)
{
    for (size_t i = 0; i < v->nops; i++) sqlite3_free(v->ops[i].key);
    v->nops = 0;
    rowkeys_clear(&v->tab);
}

static int k_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **pzErr)
{
    es_conn *c = aux;
    return table_connect(db, c, &c->keys, "eventstore_keys",
                         "CREATE TABLE x(key TEXT, first_seq INTEGER, next_seq INTEGER, count INTEGER, "
                         "bytes INTEGER, last_ts INTEGER, created_ts INTEGER, retention_age_ms INTEGER, "
                         "retention_count INTEGER)",
                         sizeof(keys_vtab), argc, argv, out, pzErr);
}

static int k_disconnect(sqlite3_vtab *vt)
{
    keys_vtab *v = (keys_vtab *)vt;
    keys_pending_clear(v);
    sqlite3_free(v->ops);
    sqlite3_free(v->sp_nops);
    table_disconnect(&v->tab, &v->tab.conn->keys);
    return SQLITE_OK;
}

static int k_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
    return best_index(vt, info, K_KEY, -1, -1, 0);
}

typedef struct k_cursor {
    sqlite3_vtab_cursor base;
    scan_bounds b;
    numkeys nk;
    od_ev_keys *keys;
    size_t eqi;
    od_ev_key_info info;
    unsigned char *key;
    size_t klen;
    int eof;
    sqlite3_int64 emitted, skipped;
    int refreshed;         /* as ev_cursor's */
} k_cursor;

static int k_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    (void)vt;
    return cursor_alloc(sizeof(k_cursor), out);
}

static void k_reset(k_cursor *c)
{
    od_ev_keys_free(c->keys);
    c->keys = NULL;
    bounds_free(&c->b);
    sqlite3_free(c->key);
    c->key = NULL;
    c->eof = 1;
    c->eqi = 0;
    c->emitted = c->skipped = 0;
}

static int k_close(sqlite3_vtab_cursor *cur)
{
    k_cursor *c = (k_cursor *)cur;
    k_reset(c);
    numkeys_free(&c->nk);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int k_take(k_cursor *c, const void *k, size_t n)
{
    sqlite3_free(c->key);
    c->key = sqlite3_malloc64(n + 1);
    if (!c->key) return SQLITE_NOMEM;
    memcpy(c->key, k, n);
    c->klen = n;
    return SQLITE_OK;
}

/* Find the next key at/after the current position (first = 1: do not advance). */
static int k_settle(k_cursor *c, keys_vtab *v, int first)
{
    od_err err = {0};
    int rc;
    for (;;) {
        if (c->b.neq) {
            if (c->eqi >= c->b.neq) break;
            keybuf *k = &c->b.eq[c->eqi++];
            if (!key_in_range(&c->b, k->p, k->n) || k->n == 0 || k->n > OD_EV_KEY_MAX) continue;
            rc = od_ev_tail(v->tab.es, k->p, k->n, &c->info, &err);
            if (rc) return set_od_err(&v->tab.base, &err, "eventstore_keys: ");
            if (!c->info.exists) continue;
            rc = k_take(c, k->p, k->n);
            if (rc) return rc;
        } else {
            if (!first) {
                rc = od_ev_keys_next(c->keys, &err);
                if (rc) return set_od_err(&v->tab.base, &err, "eventstore_keys: ");
            }
            first = 0;
            if (!od_ev_keys_valid(c->keys)) break;
            size_t kl;
            const uint8_t *kp = od_ev_keys_key(c->keys, &kl);
            if (!key_in_range(&c->b, kp, kl)) {
                if (c->b.has_hi && bcmp_(kp, kl, c->b.hi, c->b.hilen) > 0) break;
                continue;
            }
            od_ev_keys_info(c->keys, &c->info);
            rc = k_take(c, kp, kl);
            if (rc) return rc;
        }
        if (c->skipped < c->b.offset) {
            c->skipped++;
            continue;
        }
        if (c->b.limit >= 0 && c->emitted >= c->b.limit) break;
        c->eof = 0;
        return SQLITE_OK;
    }
    c->eof = 1;
    return SQLITE_OK;
}

static int k_filter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc, sqlite3_value **argv)
{
    k_cursor *c = (k_cursor *)cur;
    keys_vtab *v = (keys_vtab *)cur->pVtab;
    (void)idxStr;
    k_reset(c);
    int rc = scan_start(&v->tab, &c->refreshed, &c->b, &c->nk, idxNum, argc, argv, "eventstore_keys: ");
    if (rc) return rc;
    if (c->b.none) return SQLITE_OK;
    if (!c->b.neq) {
        rc = scan_keys_open(&v->tab, &c->b, &c->keys, "eventstore_keys: ");
        if (rc) return rc;
    }
    return k_settle(c, v, 1);
}

static int k_next(sqlite3_vtab_cursor *cur)
{
    k_cursor *c = (k_cursor *)cur;
    c->emitted++;
    return k_settle(c, (keys_vtab *)cur->pVtab, 0);
}

static int k_eof(sqlite3_vtab_cursor *cur) { return ((k_cursor *)cur)->eof; }

static int k_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    k_cursor *c = (k_cursor *)cur;
    const od_ev_key_info *i = &c->info;
    switch (col) {
    case K_KEY: sqlite3_result_text(ctx, (const char *)c->key, (int)c->klen, SQLITE_TRANSIENT); break;
    case K_FIRST: sqlite3_result_int64(ctx, (sqlite3_int64)i->first_seq); break;
    case K_NEXT: sqlite3_result_int64(ctx, (sqlite3_int64)i->next_seq); break;
    case K_COUNT: sqlite3_result_int64(ctx, (sqlite3_int64)i->count); break;
    case K_BYTES: sqlite3_result_int64(ctx, (sqlite3_int64)i->bytes); break;
    case K_LAST_TS: sqlite3_result_int64(ctx, i->last_ts_ms); break;
    case K_CREATED: sqlite3_result_int64(ctx, i->created_ms); break;
    case K_RET_AGE:
        if (i->retention_age_ms) sqlite3_result_int64(ctx, i->retention_age_ms);
        else sqlite3_result_null(ctx);
        break;
    case K_RET_COUNT:
        if (i->retention_count) sqlite3_result_int64(ctx, (sqlite3_int64)i->retention_count);
        else sqlite3_result_null(ctx);
        break;
    }
    return SQLITE_OK;
}

static int k_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    k_cursor *c = (k_cursor *)cur;
    keys_vtab *v = (keys_vtab *)cur->pVtab;
    /* the same key asked twice (UPDATE reads old and new rowid) gets the same rowid */
    if (v->tab.nrowkeys && v->tab.rowkeys[v->tab.nrowkeys - 1].n == c->klen &&
        memcmp(v->tab.rowkeys[v->tab.nrowkeys - 1].p, c->key, c->klen) == 0) {
        *out = (sqlite3_int64)(v->tab.nrowkeys - 1);
        return SQLITE_OK;
    }
    int rc = rowkeys_push(&v->tab, c->key, c->klen);
    if (rc) return rc;
    *out = (sqlite3_int64)(v->tab.nrowkeys - 1);
    return SQLITE_OK;
}

static int k_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    keys_vtab *v = (keys_vtab *)vt;
    (void)rowid;
    if (argc > 1 && sqlite3_value_type(argv[0]) == SQLITE_NULL)
        return vt_error(vt, SQLITE_CONSTRAINT, "eventstore_keys: keys are created by appending to them");
    sqlite3_int64 r = sqlite3_value_int64(argv[0]);
    if (r < 0 || (size_t)r >= v->tab.nrowkeys) return vt_error(vt, SQLITE_ERROR, "eventstore_keys: unknown row");
    pend_key op = {0};
    if (argc == 1) {
        op.del = 1;
    } else {
        if (sqlite3_value_int64(argv[1]) != r) return vt_error(vt, SQLITE_CONSTRAINT, "eventstore_keys: rowid is fixed");
        /* only the retention columns may change */
        sqlite3_value *kv = argv[2 + K_KEY];
        keybuf *k = &v->tab.rowkeys[r];
        if (sqlite3_value_type(kv) != SQLITE_TEXT || (size_t)sqlite3_value_bytes(kv) != k->n ||
            memcmp(sqlite3_value_text(kv), k->p, k->n) != 0)
            return vt_error(vt, SQLITE_CONSTRAINT, "eventstore_keys: only retention_age_ms and retention_count can change");
        od_ev_key_info ki;
        od_err err = {0};
        if (od_ev_tail(v->tab.es, k->p, k->n, &ki, &err)) return set_od_err(vt, &err, "eventstore_keys: ");
        const int64_t cur[] = {(int64_t)ki.first_seq, (int64_t)ki.next_seq, (int64_t)ki.count, (int64_t)ki.bytes,
                               ki.last_ts_ms, ki.created_ms};
        for (int col = K_FIRST; col <= K_CREATED; col++)
            if (sqlite3_value_type(argv[2 + col]) != SQLITE_INTEGER || sqlite3_value_int64(argv[2 + col]) != cur[col - 1])
                return vt_error(vt, SQLITE_CONSTRAINT,
                                "eventstore_keys: only retention_age_ms and retention_count can change");
        for (int col = K_RET_AGE; col <= K_RET_COUNT; col++) {
            sqlite3_value *x = argv[2 + col];
            int t = sqlite3_value_type(x);
            if (t != SQLITE_NULL && (t != SQLITE_INTEGER || sqlite3_value_int64(x) < 0))
                return vt_error(vt, SQLITE_MISMATCH, "eventstore_keys: %s must be NULL or a non-negative INTEGER",
                                col == K_RET_AGE ? "retention_age_ms" : "retention_count");
        }
        op.age = sqlite3_value_int64(argv[2 + K_RET_AGE]);
        op.count = (uint64_t)sqlite3_value_int64(argv[2 + K_RET_COUNT]);
    }
    keybuf *k = &v->tab.rowkeys[r];
    op.key = sqlite3_malloc64(k->n + 1);
    if (!op.key) return SQLITE_NOMEM;
    memcpy(op.key, k->p, k->n);
    op.klen = k->n;
    op.order = v->tab.conn->order++;
    if (v->nops == v->capops) {
        size_t cap = v->capops ? 2 * v->capops : 8;
        pend_key *no = sqlite3_realloc64(v->ops, cap * sizeof *no);
        if (!no) {
            sqlite3_free(op.key);
            return SQLITE_NOMEM;
        }
        v->ops = no;
        v->capops = cap;
    }
    v->ops[v->nops++] = op;
    return SQLITE_OK;
}

/* xBegin, xCommit (store_commit applied the operations) and xRollback: nothing is pending. */
static int k_clear(sqlite3_vtab *vt)
{
    keys_pending_clear((keys_vtab *)vt);
    ((keys_vtab *)vt)->tab.nsp = 0;
    return SQLITE_OK;
}

/* Everything this connection's transaction did to the store `es`, in every eventstore and
 * eventstore_keys table on it: the INSERTed records (in statement order across tables), then the
 * DELETE trims, then the key deletes and retention changes (in statement order) — handed to
 * od_ev_commit as ONE engine batch: an expected_seq conflict or a key deleted by someone else
 * (retention change) aborts all of it; else it is all visible and durable at once. Later syncs of the
 * other tables of the store find nothing pending. Tables on other stores commit separately
 * (per-store atomicity only: see docs/sql.md). */
static int pend_order_cmp(const void *a, const void *b)
{
    const pend_rec *x = *(pend_rec *const *)a, *y = *(pend_rec *const *)b;
    return (x->order > y->order) - (x->order < y->order);
}

static int pend_key_order_cmp(const void *a, const void *b)
{
    const pend_key *x = *(pend_key *const *)a, *y = *(pend_key *const *)b;
    return (x->order > y->order) - (x->order < y->order);
}

/* Key deletes sorted by (key, order): the earliest delete of a key first. */
static int pend_key_del_cmp(const void *a, const void *b)
{
    const pend_key *x = *(pend_key *const *)a, *y = *(pend_key *const *)b;
    int c = bcmp_(x->key, x->klen, y->key, y->klen);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* The key deletes of pk (statement order), sorted by (key, order) into *d (NULL when none). */
static int dels_sorted(pend_key **pk, size_t nk, pend_key ***d, size_t *nd)
{
    *d = NULL;
    *nd = 0;
    size_t n = 0;
    for (size_t j = 0; j < nk; j++) n += pk[j]->del;
    if (!n) return SQLITE_OK;
    pend_key **a = sqlite3_malloc64(n * sizeof *a);
    if (!a) return SQLITE_NOMEM;
    n = 0;
    for (size_t j = 0; j < nk; j++)
        if (pk[j]->del) a[n++] = pk[j];
    qsort(a, n, sizeof *a, pend_key_del_cmp);
    *d = a;
    *nd = n;
    return SQLITE_OK;
}

/* Was the key deleted (d: dels_sorted) by a statement before `order`? */
static int deleted_before(pend_key **d, size_t nd, const void *key, size_t klen, uint64_t order)
{
    size_t lo = 0, hi = nd; /* the first delete whose key >= key: the key's earliest */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bcmp_(d[mid]->key, d[mid]->klen, key, klen) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < nd && bcmp_(d[lo]->key, d[lo]->klen, key, klen) == 0 && d[lo]->order < order;
}

/* The engine batch applies the records before the key deletes, so a row INSERTed after a
 * DELETE of its key (statement order) would be deleted with the key: refuse such a COMMIT
 * (nothing is applied) rather than lose the row. d: the key deletes (dels_sorted). */
static int check_insert_after_delete(pend_key **d, size_t nd, pend_rec **pr, size_t nr, sqlite3_vtab *caller)
{
    for (size_t i = 0; i < nr; i++)
        if (deleted_before(d, nd, pr[i]->key, pr[i]->klen, pr[i]->order))
            return vt_error(caller, SQLITE_CONSTRAINT,
                            "eventstore: key \"%.*s\" was deleted in the same transaction before a row was INSERTed "
                            "into it (COMMIT the delete first)",
                            (int)(pr[i]->klen > 100 ? 100 : pr[i]->klen), (const char *)pr[i]->key);
    return SQLITE_OK;
}

static int store_commit(es_conn *c, od_eventstore *es, sqlite3_vtab *caller)
{
    size_t nrecs = 0, nops = 0;
    for (ev_vtab *v = (ev_vtab *)c->evs; v; v = (ev_vtab *)v->tab.next_in_conn) {
        if (v->tab.es != es) continue;
        nrecs += v->nrecs;
        for (size_t i = 0; i < v->ntrims; i++) nops += v->trims[i].next_del != v->trims[i].first;
    }
    for (keys_vtab *k = (keys_vtab *)c->keys; k; k = (keys_vtab *)k->tab.next_in_conn)
        if (k->tab.es == es) nops += k->nops;
    int rc = SQLITE_OK;
    if (nrecs || nops) {
        od_ev_rec_in *in = sqlite3_malloc64((nrecs ? nrecs : 1) * sizeof *in);
        uint64_t *seqs = sqlite3_malloc64((nrecs ? nrecs : 1) * sizeof *seqs);
        od_ev_op *ops = sqlite3_malloc64((nops ? nops : 1) * sizeof *ops);
        pend_rec **pr = sqlite3_malloc64((nrecs ? nrecs : 1) * sizeof *pr);
        if (!in || !seqs || !ops || !pr) rc = SQLITE_NOMEM;
        size_t ni = 0, no = 0;
        for (ev_vtab *v = (ev_vtab *)c->evs; v && !rc; v = (ev_vtab *)v->tab.next_in_conn) {
            if (v->tab.es != es) continue;
            for (size_t i = 0; i < v->nrecs; i++) pr[ni++] = &v->recs[i];
            for (size_t i = 0; i < v->ntrims; i++) {
                pend_trim *t = &v->trims[i];
                if (t->next_del == t->first) continue;
                /* a key deleted meanwhile by another connection has nothing left to trim */
                ops[no++] = (od_ev_op){.kind = OD_EV_OP_TRIM, .key = t->key, .klen = t->klen,
                                       .before_seq = t->next_del, .missing_ok = 1};
            }
        }
        if (!rc && ni > 1) qsort(pr, ni, sizeof *pr, pend_order_cmp); /* statement order */
        for (size_t i = 0; i < ni; i++) {
            pend_rec *r = pr[i];
            in[i] = (od_ev_rec_in){.key = r->key, .klen = r->klen, .value = r->val, .vlen = r->vlen,
                                   .headers = r->h, .nheaders = r->nh, .ts_ms = r->ts,
                                   .expected_seq = r->expected, .flags = r->flags};
        }
        size_t nk = 0;
        for (keys_vtab *k = (keys_vtab *)c->keys; k && !rc; k = (keys_vtab *)k->tab.next_in_conn)
            if (k->tab.es == es) nk += k->nops;
        pend_key **pk = sqlite3_malloc64((nk ? nk : 1) * sizeof *pk);
        if (!pk) rc = SQLITE_NOMEM;
        nk = 0;
        for (keys_vtab *k = (keys_vtab *)c->keys; k && !rc; k = (keys_vtab *)k->tab.next_in_conn)
            if (k->tab.es == es)
                for (size_t i = 0; i < k->nops; i++) pk[nk++] = &k->ops[i];
        if (!rc && nk > 1) qsort(pk, nk, sizeof *pk, pend_key_order_cmp); /* statement order */
        pend_key **dels = NULL;
        size_t ndels = 0;
        if (!rc) rc = dels_sorted(pk, nk, &dels, &ndels);
        if (!rc) rc = check_insert_after_delete(dels, ndels, pr, ni, caller);
        for (size_t j = 0; j < nk && !rc; j++) {
            pend_key *op = pk[j];
            /* a retention change of a key an earlier statement of this transaction deleted
             * changes nothing (an ordinary table's UPDATE after the DELETE matches 0 rows);
             * a key deleted by someone else meanwhile still fails the COMMIT ("no such key") */
            ops[no++] = op->del ? (od_ev_op){.kind = OD_EV_OP_DELETE_KEY, .key = op->key, .klen = op->klen,
                                             .missing_ok = 1}
                                : (od_ev_op){.kind = OD_EV_OP_SET_RETENTION, .key = op->key, .klen = op->klen,
                                             .age_ms = op->age, .count = op->count,
                                             .missing_ok = deleted_before(dels, ndels, op->key, op->klen, op->order)};
        }
        sqlite3_free(dels);
        sqlite3_free(pk);
        if (!rc) {
            od_err err = {0};
            od_ev_append_info info;
            if (od_ev_commit(es, in, nrecs, ops, nops, NULL, seqs, &info, &err)) {
                rc = set_od_err(caller, &err, "");
            } else if (nrecs) {
                c->has_last = 1;
                c->last_seq = (sqlite3_int64)seqs[nrecs - 1];
            }
        }
        sqlite3_free(in);
        sqlite3_free(seqs);
        sqlite3_free(ops);
        sqlite3_free(pr);
    }
    for (ev_vtab *v = (ev_vtab *)c->evs; v; v = (ev_vtab *)v->tab.next_in_conn)
        if (v->tab.es == es) pending_clear(v, 0, 0);
    for (keys_vtab *k = (keys_vtab *)c->keys; k; k = (keys_vtab *)k->tab.next_in_conn)
        if (k->tab.es == es) keys_pending_clear(k);
    return rc;
}

/* Savepoints (also SQLite's statement savepoints: a failed statement inside a transaction
 * rolls back to one) truncate the pending key operations. */
static int k_savepoint(sqlite3_vtab *vt, int i)
{
    keys_vtab *v = (keys_vtab *)vt;
    if (i < 0) return SQLITE_OK;
    if (i >= v->capsp) {
        size_t *a = sqlite3_realloc64(v->sp_nops, (size_t)(i + 1) * sizeof *a);
        if (!a) return SQLITE_NOMEM;
        v->sp_nops = a;
        v->capsp = i + 1;
    }
    for (int j = v->tab.nsp; j < i; j++) v->sp_nops[j] = 0; /* opened before this table joined */
    v->sp_nops[i] = v->nops;
    v->tab.nsp = i + 1;
    return SQLITE_OK;
}

static int k_rollback_to(sqlite3_vtab *vt, int i)
{
    keys_vtab *v = (keys_vtab *)vt;
    if (i < 0 || i >= v->tab.nsp) return SQLITE_OK;
    while (v->nops > v->sp_nops[i]) sqlite3_free(v->ops[--v->nops].key);
    v->tab.nsp = i + 1;
    return SQLITE_OK;
}

static sqlite3_module keys_module = {
    .iVersion = 2,
    .xCreate = k_connect,
    .xConnect = k_connect,
    .xBestIndex = k_best_index,
    .xDisconnect = k_disconnect,
    .xDestroy = k_disconnect,
    .xOpen = k_open,
    .xClose = k_close,
    .xFilter = k_filter,
    .xNext = k_next,
    .xEof = k_eof,
    .xColumn = k_column,
    .xRowid = k_rowid,
    .xUpdate = k_update,
    .xBegin = k_clear,
    .xSync = table_sync,
    .xCommit = k_clear,
    .xRollback = k_clear,
    .xSavepoint = k_savepoint,
    .xRelease = table_release,
    .xRollbackTo = k_rollback_to,
};

/* ---------------------------------------------------------------- functions, registration */

static void fn_last_seq(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    es_conn *c = sqlite3_user_data(ctx);
    if (c->has_last) sqlite3_result_int64(ctx, c->last_seq);
    else sqlite3_result_null(ctx);
}

/* eventstore_follow(uri, key, from_seq, timeout_ms): 1 as soon as the key has a record with
 * seq ≥ from_seq, 0 when timeout_ms passes first. The store must be open in this process (a
 * table on that URI exists). Blocks the calling connection while it waits (long-poll). */
static void fn_follow(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *uri = (const char *)sqlite3_value_text(argv[0]);
    /* hold a reference while waiting: the tables on the store may go away meanwhile */
    od_eventstore *es = uri ? od_vtab_handle_find_ref(KIND, uri) : NULL;
    if (!es) {
        sqlite3_result_error(ctx, "eventstore_follow: no eventstore table is open on that URI in this process", -1);
        return;
    }
    if (sqlite3_value_type(argv[1]) != SQLITE_TEXT || sqlite3_value_bytes(argv[1]) == 0 ||
        sqlite3_value_type(argv[2]) != SQLITE_INTEGER || sqlite3_value_int64(argv[2]) < 0 ||
        sqlite3_value_type(argv[3]) != SQLITE_INTEGER || sqlite3_value_int64(argv[3]) < 0) {
        sqlite3_result_error(ctx, "eventstore_follow: arguments are (uri TEXT, key TEXT, from_seq INTEGER >= 0, "
                                  "timeout_ms INTEGER >= 0)", -1);
        od_vtab_handle_release(es);
        return;
    }
    od_err err = {0};
    int rc = od_ev_follow(es, sqlite3_value_text(argv[1]), (size_t)sqlite3_value_bytes(argv[1]),
                          (uint64_t)sqlite3_value_int64(argv[2]), sqlite3_value_int64(argv[3]), &err);
    od_vtab_handle_release(es);
    if (rc == OD_OK) sqlite3_result_int(ctx, 1);
    else if (rc == OD_TIMEOUT) sqlite3_result_int(ctx, 0);
    else {
        char *m = sqlite3_mprintf("eventstore_follow: %s", err.msg);
        sqlite3_result_error(ctx, m ? m : "eventstore_follow: error", -1);
        sqlite3_free(m);
    }
}

int od_vtab_eventstore_register(sqlite3 *db)
{
    es_conn *c = sqlite3_malloc(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->refs = 3;
    int rc = sqlite3_create_module_v2(db, "eventstore", &ev_module, c, conn_unref);
    int rc2 = sqlite3_create_module_v2(db, "eventstore_keys", &keys_module, c, conn_unref);
    int rc3 = sqlite3_create_function_v2(db, "eventstore_last_seq", 0, SQLITE_UTF8, c, fn_last_seq, NULL, NULL,
                                         conn_unref);
    int rc4 = sqlite3_create_function(db, "eventstore_follow", 4, SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL, fn_follow,
                                      NULL, NULL);
    return rc ? rc : rc2 ? rc2 : rc3 ? rc3 : rc4;
}
