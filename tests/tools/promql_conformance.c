/*
 * promql_conformance.c — runs Prometheus's own PromQL test files against core/promql.
 *
 *   build/tools/promql_conformance --dir ../shared/promql-conformance \
 *       --known tests/promql-known-failures.txt [--file NAME] [--source tsdb|mem] [-v]
 *
 * Reads every *.test file of --dir (format: FORMAT.md there) in place. `load` data goes into a
 * fresh store per file (`clear` empties it): with --source tsdb (the default) into a real TSDB on
 * mem:// (core/tsdb, read through core/promql/source_tsdb.c) and, to notice native-histogram
 * series, an in-memory copy; with --source mem only into the in-memory source. Each `eval` is run like
 * Prometheus's runner does: instant cases at their time, then as a range query from t-1m to
 * t+1m step 1m comparing the middle step, then again with `@ t` added to every selector (when
 * that changes the query and it has no non-step-invariant function); range cases as a range
 * query. Values compare with Prometheus's relative tolerance (1e-6, NaN equals NaN); order
 * only matters under `expect ordered`; `expect fail/warn/info/no_warn/no_info` are checked.
 *
 * Cases whose data or expected values use native histograms ({{...}}), or whose query touches
 * a series holding histogram samples, are counted as skipped, never as passed.
 *
 * Output: one line per file "file: P passed, F failed, S skipped" and a total. Exit status is
 * non-zero when a case outside the known-failures list fails, or a listed case passes.
 * Known-failure lines look like "functions.test:123 reason".
 */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/od_promql.h"
#include "promql/od_promql_tsdb.h"
#include "promql/promql_int.h"

static int verbose;
static int use_tsdb = 1;  /* --source tsdb (default): data goes into a TSDB on mem:// as well */
static od_tsdb *g_tsdb;   /* the current file's TSDB (a fresh one after every clear) */
static int g_tsdb_seq;

static void tsdb_fresh(void)
{
    od_err err;
    if (g_tsdb) od_tsdb_close(g_tsdb, &err);
    g_tsdb = NULL;
    if (!use_tsdb) return;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://promql-conformance-%d", ++g_tsdb_seq);
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    if (od_tsdb_open(uri, &o, &g_tsdb, &err)) {
        fprintf(stderr, "cannot open TSDB %s: %s\n", uri, err.msg);
        exit(2);
    }
}

/* Source used with --source tsdb: asks the in-memory copy first (only to notice native
 * histogram series, whose samples the TSDB does not hold), then returns the TSDB's data. */
typedef struct dual {
    od_promql_mem *mem;
    od_promql_source tsdb;
} dual;

static int noop_emit(void *arg, const od_promql_label *l, size_t nl, const int64_t *t, const double *v, size_t n, od_err *err)
{
    (void)arg; (void)l; (void)nl; (void)t; (void)v; (void)n; (void)err;
    return OD_OK;
}

static int dual_select(void *ctx, const od_promql_matcher *m, size_t nm, int64_t mint, int64_t maxt,
                       od_promql_emit_fn emit, void *arg, od_err *err)
{
    dual *d = ctx;
    od_promql_source ms = od_promql_mem_source(d->mem);
    int rc = ms.select(ms.ctx, m, nm, mint, maxt, noop_emit, NULL, err);
    if (rc) return rc;
    return d->tsdb.select(d->tsdb.ctx, m, nm, mint, maxt, emit, arg, err);
}

/* ---------------- small helpers ---------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static int parse_time(const char *s, int64_t *ms)
{
    if (pq_parse_duration(s, strlen(s), ms) == 0) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end) return -1;
    *ms = (int64_t)llround(v * 1000);
    return 0;
}

static int almost_equal(double a, double b)
{
    const double eps = 0.000001, minnorm = 2.2250738585072014e-308;
    if (isnan(a) && isnan(b)) return 1;
    if (a == b) return 1;
    double absum = fabs(a) + fabs(b), diff = fabs(a - b);
    if (a == 0 || b == 0 || absum < minnorm) return diff < eps * minnorm;
    return diff / fmin(absum, 1.7976931348623157e308) < eps;
}

/* ---------------- series descriptions ---------------- */

typedef struct lblset {
    od_promql_label v[64];
    int n;
    char *owned[128];
    int nowned;
} lblset;

static void lblset_free(lblset *l)
{
    for (int i = 0; i < l->nowned; i++) free(l->owned[i]);
    l->nowned = 0;
    l->n = 0;
}

/* Parses "metric{a="b"}" (or "{...}") at s; returns pointer after it, NULL on error. */
static const char *parse_series(const char *s, lblset *out)
{
    memset(out, 0, sizeof *out);
    const char *p = s;
    int depth = 0, inq = 0;
    char q = 0;
    while (*p) {
        if (inq) {
            if (*p == '\\' && p[1]) { p += 2; continue; }
            if (*p == q) inq = 0;
            p++;
            continue;
        }
        if (*p == '"' || *p == '\'' || *p == '`') { inq = 1; q = *p; p++; continue; }
        if (*p == '{') depth++;
        else if (*p == '}') { depth--; if (depth == 0) { p++; break; } }
        else if (depth == 0 && isspace((unsigned char)*p)) break;
        p++;
    }
    size_t n = (size_t)(p - s);
    char *sel = strndup(s, n);
    if (!sel) return NULL;
    /* "{}" alone is not a valid selector: parse an equivalent with a dummy matcher */
    char *fixed = malloc(n + 32);
    if (!fixed) { free(sel); return NULL; }
    if (strcmp(sel, "{}") == 0) strcpy(fixed, "{__dummy__=\"x\"}");
    else if (sel[0] == '{' || strchr(sel, '{')) {
        /* add a dummy non-empty matcher so that selectors like {a=""} still parse */
        char *br = strrchr(sel, '}');
        size_t pre = (size_t)(br - sel);
        int empty = 1;
        for (char *c = strchr(sel, '{') + 1; c < br; c++)
            if (!isspace((unsigned char)*c)) empty = 0;
        snprintf(fixed, n + 32, "%.*s%s__dummy__=\"x\"}", (int)pre, sel, empty ? "" : ",");
    } else strcpy(fixed, sel);
    free(sel);
    od_promql_expr *e;
    od_err err;
    if (od_promql_parse(fixed, &e, &err) != OD_OK) {
        fprintf(stderr, "bad series %s: %s\n", fixed, err.msg);
        free(fixed);
        return NULL;
    }
    free(fixed);
    pq_node *nd = e->root;
    if (nd->kind != PQ_VSEL) { od_promql_expr_free(e); return NULL; }
    for (size_t i = 0; i < nd->nmatchers && out->n < 64; i++) {
        if (strcmp(nd->matchers[i].name, "__dummy__") == 0) continue;
        char *a = strdup(nd->matchers[i].name), *b = strdup(nd->matchers[i].value);
        if (!a || !b) { free(a); free(b); break; }
        out->owned[out->nowned++] = a;
        out->owned[out->nowned++] = b;
        out->v[out->n].name = a;
        out->v[out->n].value = b;
        out->n++;
    }
    od_promql_expr_free(e);
    return p;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const od_promql_label *)a)->name, ((const od_promql_label *)b)->name);
}

static void lblset_sort(lblset *l)
{
    /* drop empty values, sort */
    int o = 0;
    for (int i = 0; i < l->n; i++)
        if (*l->v[i].value) l->v[o++] = l->v[i];
    l->n = o;
    qsort(l->v, (size_t)l->n, sizeof l->v[0], cmp_label);
}

/* A point: value, or missing (`_`), stale, or histogram. */
typedef struct pt {
    double v;
    int missing, stale, hist;
} pt;

static double parse_num(const char *s, int *ok)
{
    char *end;
    *ok = 1;
    if (!strcasecmp(s, "inf") || !strcasecmp(s, "+inf")) return INFINITY;
    if (!strcasecmp(s, "-inf")) return -INFINITY;
    if (!strcasecmp(s, "nan")) return NAN;
    double v = strtod(s, &end);
    if (end == s || *end) *ok = 0;
    return v;
}

/* Expand the points notation into pts (growable). Returns 0 on success. */
static int expand_points(const char *s, pt **pts, size_t *n, size_t *cap)
{
    const char *p = s;
    while (*p) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        char tok[512];
        size_t tn = 0;
        if (p[0] == '{' && p[1] == '{') {
            /* histogram: {{...}} possibly followed by +{{...}}xN or xN */
            int hist = 1;
            while (*p && !isspace((unsigned char)*p) && tn < sizeof tok - 1) {
                if (p[0] == '{' && p[1] == '{') {
                    const char *e = strstr(p, "}}");
                    if (!e) return -1;
                    p = e + 2;
                    continue;
                }
                tok[tn++] = *p++;
            }
            tok[tn] = 0;
            long cnt = 1;
            char *x = strchr(tok, 'x');
            if (x) cnt = strtol(x + 1, NULL, 10) + 1;
            for (long i = 0; i < cnt; i++) {
                if (*n == *cap) { *cap = *cap ? *cap * 2 : 16; pt *v = realloc(*pts, *cap * sizeof *v); if (!v) return -1; *pts = v; }
                (*pts)[(*n)++] = (pt){0, 0, 0, hist};
            }
            continue;
        }
        while (*p && !isspace((unsigned char)*p) && tn < sizeof tok - 1) tok[tn++] = *p++;
        tok[tn] = 0;
        /* forms: _  _xN  stale  v  vxN  v+dxN  v-dxN */
        char *x = NULL;
        for (char *c = tok + 1; *c; c++)
            if (*c == 'x') x = c;
        if (x && !isdigit((unsigned char)x[1])) x = NULL;
        long times = 0;
        if (x) { times = strtol(x + 1, NULL, 10); *x = 0; }
        if (!strcmp(tok, "_") || !strcmp(tok, "stale")) {
            int st = !strcmp(tok, "stale");
            long cnt = x ? times : 1; /* _xN = N missing */
            for (long i = 0; i < cnt; i++) {
                if (*n == *cap) { *cap = *cap ? *cap * 2 : 16; pt *v = realloc(*pts, *cap * sizeof *v); if (!v) return -1; *pts = v; }
                (*pts)[(*n)++] = (pt){0, !st, st, 0};
            }
            continue;
        }
        double start, delta = 0;
        int ok;
        if (x) {
            /* split start and delta at the last +/- that is not part of an exponent or the leading sign */
            char *sp = NULL;
            for (char *c = tok + 1; *c; c++)
                if ((*c == '+' || *c == '-') && c[-1] != 'e' && c[-1] != 'E') sp = c;
            if (sp) {
                char sign = *sp;
                *sp = 0;
                start = parse_num(tok, &ok);
                if (!ok) return -1;
                delta = parse_num(sp + 1, &ok);
                if (!ok) return -1;
                if (sign == '-') delta = -delta;
            } else {
                start = parse_num(tok, &ok);
                if (!ok) return -1;
            }
        } else {
            start = parse_num(tok, &ok);
            if (!ok) return -1;
        }
        long cnt = x ? times + 1 : 1;
        for (long i = 0; i < cnt; i++) {
            if (*n == *cap) { *cap = *cap ? *cap * 2 : 16; pt *v = realloc(*pts, *cap * sizeof *v); if (!v) return -1; *pts = v; }
            (*pts)[(*n)++] = (pt){start + delta * (double)i, 0, 0, 0};
        }
    }
    return 0;
}

/* ---------------- known failures ---------------- */

typedef struct known {
    char **keys;
    int *hit;
    size_t n;
} known;

static void known_load(known *k, const char *path)
{
    memset(k, 0, sizeof *k);
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *sp = s;
        while (*sp && !isspace((unsigned char)*sp)) sp++;
        *sp = 0;
        char **v = realloc(k->keys, (k->n + 1) * sizeof *v);
        int *h = realloc(k->hit, (k->n + 1) * sizeof *h);
        if (!v || !h) { free(v ? v : k->keys); exit(2); }
        k->keys = v;
        k->hit = h;
        k->keys[k->n] = strdup(s);
        k->hit[k->n] = 0;
        k->n++;
    }
    fclose(f);
}

static int known_find(known *k, const char *file, int line)
{
    char key[512];
    snprintf(key, sizeof key, "%s:%d", file, line);
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->keys[i], key) == 0) return (int)i;
    return -1;
}

/* ---------------- one eval case ---------------- */

typedef struct expseries {
    lblset l;
    pt *pts;
    size_t n, cap;
} expseries;

typedef struct evalcase {
    int line;
    int range;
    int64_t t, start, end, step;
    char *query;
    int fail, ordered, no_warn, no_info;
    char *fail_msg, *fail_re;
    char *warn_msg[8], *warn_re[8], *info_msg[8], *info_re[8];
    int nwarn_msg, nwarn_re, ninfo_msg, ninfo_re, any_warn, any_info;
    int has_string;
    char *string;
    int has_rv;
    int64_t rv_start, rv_end, rv_step;
    expseries *exp;
    size_t nexp;
    int scalar_exp;    /* a bare number expected */
    double scalar_val;
    int hist;          /* expected values use histograms */
} evalcase;

static void case_free(evalcase *c)
{
    free(c->query);
    free(c->fail_msg);
    free(c->fail_re);
    free(c->string);
    for (int i = 0; i < 8; i++) { free(c->warn_msg[i]); free(c->warn_re[i]); free(c->info_msg[i]); free(c->info_re[i]); }
    for (size_t i = 0; i < c->nexp; i++) { lblset_free(&c->exp[i].l); free(c->exp[i].pts); }
    free(c->exp);
}

static int rx_search(const char *re, const char *s)
{
    regex_t r;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB) != 0) return 0;
    int m = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return m;
}

static char g_why[2048];

static int labels_eq(const od_promql_series *s, const lblset *l)
{
    if ((int)s->nlabels != l->n) return 0;
    for (int i = 0; i < l->n; i++)
        if (strcmp(s->labels[i].name, l->v[i].name) || strcmp(s->labels[i].value, l->v[i].value)) return 0;
    return 1;
}

static void fmt_labels(const od_promql_series *s, char *b, size_t cap)
{
    size_t o = (size_t)snprintf(b, cap, "{");
    for (size_t i = 0; i < s->nlabels && o < cap; i++)
        o += (size_t)snprintf(b + o, cap - o, "%s%s=\"%s\"", i ? ", " : "", s->labels[i].name, s->labels[i].value);
    if (o < cap) snprintf(b + o, cap - o, "}");
}

static int check_annotations(const evalcase *c, const od_promql_result *r)
{
    int nw = 0, ni = 0;
    for (size_t i = 0; i < r->nwarnings; i++) {
        const char *w = r->warnings[i];
        int is_warn = strncmp(w, "PromQL warning:", 15) == 0;
        if (is_warn) nw++; else ni++;
        if ((is_warn && c->any_warn) || (!is_warn && c->any_info)) {
            int ok = 0;
            int nm = is_warn ? c->nwarn_msg : c->ninfo_msg, nr = is_warn ? c->nwarn_re : c->ninfo_re;
            char *const *ms = is_warn ? c->warn_msg : c->info_msg;
            char *const *rs = is_warn ? c->warn_re : c->info_re;
            if (nm == 0 && nr == 0) ok = 1;
            for (int j = 0; j < nm && !ok; j++) ok = strcmp(ms[j], w) == 0;
            for (int j = 0; j < nr && !ok; j++) ok = rx_search(rs[j], w);
            if (!ok) { snprintf(g_why, sizeof g_why, "unexpected annotation: %s", w); return 0; }
        }
    }
    if (c->no_warn && nw) { snprintf(g_why, sizeof g_why, "unexpected warning: %s", r->warnings[0]); return 0; }
    if (c->no_info && ni) { snprintf(g_why, sizeof g_why, "unexpected info annotation"); return 0; }
    if (c->any_warn && !nw) { snprintf(g_why, sizeof g_why, "expected a warning, got none"); return 0; }
    if (c->any_info && !ni) { snprintf(g_why, sizeof g_why, "expected an info annotation, got none"); return 0; }
    for (int j = 0; j < c->nwarn_msg + c->ninfo_msg; j++) {
        const char *m = j < c->nwarn_msg ? c->warn_msg[j] : c->info_msg[j - c->nwarn_msg];
        int ok = 0;
        for (size_t i = 0; i < r->nwarnings && !ok; i++) ok = strcmp(r->warnings[i], m) == 0;
        if (!ok) { snprintf(g_why, sizeof g_why, "expected annotation not found: %s", m); return 0; }
    }
    for (int j = 0; j < c->nwarn_re + c->ninfo_re; j++) {
        const char *m = j < c->nwarn_re ? c->warn_re[j] : c->info_re[j - c->nwarn_re];
        int ok = 0;
        for (size_t i = 0; i < r->nwarnings && !ok; i++) ok = rx_search(m, r->warnings[i]);
        if (!ok) { snprintf(g_why, sizeof g_why, "expected annotation not found: /%s/", m); return 0; }
    }
    return 1;
}

/* Compare an instant-vector style result (series with one point each at t, or a scalar). */
static int compare_vector(const evalcase *c, const od_promql_result *r, int check_order)
{
    char b[1024];
    if (r->type == OD_PROMQL_SCALAR) {
        if (!c->scalar_exp) { snprintf(g_why, sizeof g_why, "got scalar %g, expected a vector", r->scalar); return 0; }
        if (!almost_equal(c->scalar_val, r->scalar)) { snprintf(g_why, sizeof g_why, "scalar: expected %.17g got %.17g", c->scalar_val, r->scalar); return 0; }
        return 1;
    }
    if (c->scalar_exp) { snprintf(g_why, sizeof g_why, "expected scalar %g, got a vector", c->scalar_val); return 0; }
    if (r->type != OD_PROMQL_VECTOR) { snprintf(g_why, sizeof g_why, "expected an instant vector"); return 0; }
    int *seen = calloc(c->nexp + 1, sizeof *seen);
    if (!seen) return 0;
    for (size_t i = 0; i < r->nseries; i++) {
        const od_promql_series *s = &r->series[i];
        size_t j;
        for (j = 0; j < c->nexp; j++)
            if (labels_eq(s, &c->exp[j].l)) break;
        fmt_labels(s, b, sizeof b);
        if (j == c->nexp) { snprintf(g_why, sizeof g_why, "unexpected metric %s in result, has value %g", b, s->points[0].v); free(seen); return 0; }
        if (check_order && j != i) { snprintf(g_why, sizeof g_why, "expected metric %s at position %zu, got %zu", b, j + 1, i + 1); free(seen); return 0; }
        if (c->exp[j].n != 1 || c->exp[j].pts[0].missing) { snprintf(g_why, sizeof g_why, "bad expectation for %s", b); free(seen); return 0; }
        if (!almost_equal(c->exp[j].pts[0].v, s->points[0].v)) {
            snprintf(g_why, sizeof g_why, "%s: expected %.17g got %.17g", b, c->exp[j].pts[0].v, s->points[0].v);
            free(seen);
            return 0;
        }
        seen[j] = 1;
    }
    for (size_t j = 0; j < c->nexp; j++)
        if (!seen[j]) { snprintf(g_why, sizeof g_why, "expected metric #%zu not found (line %d)", j + 1, c->line); free(seen); return 0; }
    free(seen);
    return 1;
}

/* Compare a matrix (range query, or range vector of an instant query). */
static int compare_matrix(const evalcase *c, const od_promql_result *r, int64_t start, int64_t step)
{
    char b[1024];
    if (r->type != OD_PROMQL_MATRIX) { snprintf(g_why, sizeof g_why, "expected a matrix"); return 0; }
    int *seen = calloc(c->nexp + 1, sizeof *seen);
    if (!seen) return 0;
    for (size_t i = 0; i < r->nseries; i++) {
        const od_promql_series *s = &r->series[i];
        fmt_labels(s, b, sizeof b);
        size_t j;
        for (j = 0; j < c->nexp; j++)
            if (labels_eq(s, &c->exp[j].l)) break;
        if (j == c->nexp) { snprintf(g_why, sizeof g_why, "unexpected metric %s in result", b); free(seen); return 0; }
        const expseries *e = &c->exp[j];
        size_t k = 0;
        for (size_t q = 0; q < e->n; q++) {
            if (e->pts[q].missing) continue;
            int64_t t = start + (int64_t)q * step;
            if (k >= s->npoints || s->points[k].t != t) {
                snprintf(g_why, sizeof g_why, "%s: expected a point at %lld (got %s)", b, (long long)t,
                         k < s->npoints ? "another time" : "none");
                free(seen);
                return 0;
            }
            if (!almost_equal(e->pts[q].v, s->points[k].v)) {
                snprintf(g_why, sizeof g_why, "%s at %lld: expected %.17g got %.17g", b, (long long)t, e->pts[q].v, s->points[k].v);
                free(seen);
                return 0;
            }
            k++;
        }
        if (k != s->npoints) {
            snprintf(g_why, sizeof g_why, "%s: %zu unexpected extra points (first at %lld)", b, s->npoints - k, (long long)s->points[k].t);
            free(seen);
            return 0;
        }
        seen[j] = 1;
    }
    for (size_t j = 0; j < c->nexp; j++) {
        int any = 0;
        for (size_t q = 0; q < c->exp[j].n; q++) any |= !c->exp[j].pts[q].missing;
        if (!seen[j] && any) { snprintf(g_why, sizeof g_why, "expected series #%zu not found", j + 1); free(seen); return 0; }
    }
    free(seen);
    return 1;
}

static int check_fail(const evalcase *c, int rc, const od_err *err)
{
    if (!rc) { snprintf(g_why, sizeof g_why, "expected the query to fail"); return 0; }
    if (c->fail_msg && strcmp(c->fail_msg, err->msg) != 0) {
        snprintf(g_why, sizeof g_why, "error message: expected \"%s\" got \"%s\"", c->fail_msg, err->msg);
        return 0;
    }
    if (c->fail_re && !rx_search(c->fail_re, err->msg)) {
        snprintf(g_why, sizeof g_why, "error message \"%s\" does not match /%s/", err->msg, c->fail_re);
        return 0;
    }
    return 1;
}

/* step(), range(), start() and end() differ between an instant query and the middle step of a
 * range query by definition; Prometheus' runner does not compare those in range mode. */
static int uses_query_range_fn(const pq_node *n)
{
    if (!n) return 0;
    if (n->kind == PQ_CALL) {
        const char *f = n->func->name;
        if (!strcmp(f, "step") || !strcmp(f, "range") || !strcmp(f, "start") || !strcmp(f, "end")) return 1;
    }
    if (uses_query_range_fn(n->a) || uses_query_range_fn(n->b)) return 1;
    for (size_t i = 0; i < n->nargs; i++)
        if (uses_query_range_fn(n->args[i])) return 1;
    return 0;
}

/* Runs one instant evaluation the way Prometheus' runner does. 1 = pass. */
static int run_instant(const evalcase *c, od_promql_source *src, od_promql_expr *e, int annotations)
{
    od_promql_result *r = NULL;
    od_err err;
    od_err_clear(&err);
    int rc = od_promql_eval_instant(src, e, c->t, NULL, &r, &err);
    if (c->fail) {
        od_promql_result_free(r);
        return check_fail(c, rc, &err);
    }
    if (rc) { snprintf(g_why, sizeof g_why, "error: %s", err.msg); return 0; }
    int ok = 1;
    if (annotations && !check_annotations(c, r)) ok = 0;
    if (ok && c->has_string) {
        ok = r->type == OD_PROMQL_STRING && strcmp(r->string, c->string) == 0;
        if (!ok) snprintf(g_why, sizeof g_why, "expected string \"%s\"", c->string);
    } else if (ok && r->type == OD_PROMQL_MATRIX) {
        int64_t st = c->has_rv ? c->rv_start : c->t, sp = c->has_rv ? c->rv_step : 1;
        ok = compare_matrix(c, r, st, sp);
    } else if (ok) {
        ok = compare_vector(c, r, c->ordered);
    }
    int skip_range = r->type == OD_PROMQL_MATRIX || r->type == OD_PROMQL_STRING || uses_query_range_fn(e->root);
    od_promql_result_free(r);
    if (!ok || skip_range || c->ordered) return ok;
    /* range mode: t-1m .. t+1m step 1m, compare the middle step */
    rc = od_promql_eval_range(src, e, c->t - 60000, c->t + 60000, 60000, NULL, &r, &err);
    if (rc) { snprintf(g_why, sizeof g_why, "error in range mode: %s", err.msg); return 0; }
    od_promql_result v;
    memset(&v, 0, sizeof v);
    v.type = OD_PROMQL_VECTOR;
    od_promql_series *ser = calloc(r->nseries + 1, sizeof *ser);
    od_promql_point *pts = calloc(r->nseries + 1, sizeof *pts);
    if (!ser || !pts) { free(ser); free(pts); od_promql_result_free(r); return 0; }
    for (size_t i = 0; i < r->nseries; i++)
        for (size_t k = 0; k < r->series[i].npoints; k++)
            if (r->series[i].points[k].t == c->t) {
                ser[v.nseries] = r->series[i];
                pts[v.nseries] = r->series[i].points[k];
                ser[v.nseries].points = &pts[v.nseries];
                ser[v.nseries].npoints = 1;
                v.nseries++;
                break;
            }
    v.series = ser;
    if (c->scalar_exp) {
        v.type = OD_PROMQL_SCALAR;
        v.scalar = v.nseries ? pts[0].v : NAN;
        if (!v.nseries) { snprintf(g_why, sizeof g_why, "range mode: no scalar at t"); ok = 0; }
    }
    if (ok) {
        ok = compare_vector(c, &v, 0);
        if (!ok) {
            char tmp[2200];
            snprintf(tmp, sizeof tmp, "range mode: %s", g_why);
            snprintf(g_why, sizeof g_why, "%.2000s", tmp);
        }
    }
    free(ser);
    free(pts);
    od_promql_result_free(r);
    return ok;
}

static int run_case_src(const evalcase *c, od_promql_mem *mem, od_promql_source src, int *skipped);

static int run_case(const evalcase *c, od_promql_mem *mem, int *skipped)
{
    if (!g_tsdb) return run_case_src(c, mem, od_promql_mem_source(mem), skipped);
    od_promql_tsdb_src *ts;
    od_err err;
    if (od_promql_tsdb_src_open(g_tsdb, &ts, &err)) {
        snprintf(g_why, sizeof g_why, "TSDB read: %s", err.msg);
        *skipped = 0;
        return 0;
    }
    dual d = {mem, od_promql_tsdb_src_source(ts)};
    od_promql_source src = {&d, dual_select};
    int ok = run_case_src(c, mem, src, skipped);
    od_promql_tsdb_src_close(ts);
    return ok;
}

static int run_case_src(const evalcase *c, od_promql_mem *mem, od_promql_source src, int *skipped)
{
    od_promql_expr *e = NULL;
    od_err err;
    *skipped = 0;
    od_promql_mem_histogram_touched(mem, 1);
    g_why[0] = 0;
    int rc = od_promql_parse(c->query, &e, &err);
    if (rc) {
        if (c->fail) return check_fail(c, rc, &err);
        snprintf(g_why, sizeof g_why, "parse: %s", err.msg);
        return 0;
    }
    int ok;
    if (c->range) {
        od_promql_result *r = NULL;
        rc = od_promql_eval_range(&src, e, c->start, c->end, c->step, NULL, &r, &err);
        if (c->fail) ok = check_fail(c, rc, &err);
        else if (rc) { snprintf(g_why, sizeof g_why, "error: %s", err.msg); ok = 0; }
        else ok = check_annotations(c, r) && compare_matrix(c, r, c->start, c->step);
        od_promql_result_free(r);
    } else {
        ok = run_instant(c, &src, e, 1);
        if (ok && !c->fail && od_promql_expr_set_at(e, c->t)) {
            ok = run_instant(c, &src, e, 0);
            if (!ok) {
                char tmp[2200];
                snprintf(tmp, sizeof tmp, "with @: %s", g_why);
                snprintf(g_why, sizeof g_why, "%.2000s", tmp);
            }
        }
    }
    od_promql_expr_free(e);
    if (od_promql_mem_histogram_touched(mem, 1)) *skipped = 1;
    return ok;
}

/* ---------------- file driver ---------------- */

typedef struct lines {
    char **v;
    size_t n;
} lines;

static int read_lines(const char *path, lines *out)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    out->v = NULL;
    out->n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        char **v = realloc(out->v, (out->n + 1) * sizeof *v);
        if (!v) break;
        out->v = v;
        out->v[out->n++] = strdup(line);
    }
    free(line);
    fclose(f);
    return 0;
}

static char *unquote(const char *s)
{
    s = trim((char *)s);
    size_t n = strlen(s);
    if (n >= 2 && (s[0] == '"' || s[0] == '`' || s[0] == '\'') && s[n - 1] == s[0]) {
        char *r = strndup(s + 1, n - 2);
        return r;
    }
    return strdup(s);
}

typedef struct stats {
    int pass, fail, skip;
    int unexpected_fail, unexpected_pass;
} stats;

static void load_block(od_promql_mem *mem, lines *L, size_t *i, int64_t interval, int nhcb, const char *file)
{
    while (*i + 1 < L->n) {
        char *raw = L->v[*i + 1];
        char *s = trim(raw);
        if (!*s) break;
        if (raw[0] != ' ' && raw[0] != '\t') break;
        (*i)++;
        if (*s == '#') continue;
        lblset l;
        const char *rest = parse_series(s, &l);
        if (!rest) { fprintf(stderr, "%s:%zu: cannot parse series\n", file, *i + 1); continue; }
        pt *pts = NULL;
        size_t n = 0, cap = 0;
        if (expand_points(rest, &pts, &n, &cap) != 0) { fprintf(stderr, "%s:%zu: cannot parse points\n", file, *i + 1); }
        lblset_sort(&l);
        od_err err;
        int hist = 0;
        for (size_t k = 0; k < n; k++) {
            if (pts[k].missing) continue;
            if (pts[k].hist) { hist = 1; continue; }
            double v = pts[k].stale ? od_promql_stale_nan() : pts[k].v;
            if (od_promql_mem_add(mem, l.v, (size_t)l.n, (int64_t)k * interval, v, &err))
                fprintf(stderr, "%s: load: %s\n", file, err.msg);
        }
        if (hist) od_promql_mem_mark_histogram(mem, l.v, (size_t)l.n, &err);
        if (g_tsdb) {
            od_labels ol = {0};
            od_sample *smp = calloc(n + 1, sizeof *smp);
            size_t ns = 0;
            for (int k = 0; k < l.n; k++) od_labels_add(&ol, l.v[k].name, l.v[k].value);
            for (size_t k = 0; smp && k < n; k++) {
                if (pts[k].missing || pts[k].hist) continue;
                smp[ns].t = (int64_t)k * interval;
                smp[ns].v = pts[k].stale ? od_promql_stale_nan() : pts[k].v;
                ns++;
            }
            od_series_in in = {&ol, smp, ns};
            if (ns && od_tsdb_append(g_tsdb, &in, 1, 0, NULL, NULL, &err))
                fprintf(stderr, "%s: TSDB append: %s\n", file, err.msg);
            free(smp);
            od_labels_free(&ol);
        }
        if (nhcb) {
            /* the NHCB series: name without _bucket/_count/_sum, without le */
            const char *name = NULL;
            for (int k = 0; k < l.n; k++)
                if (!strcmp(l.v[k].name, "__name__")) name = l.v[k].value;
            static const char *suf[] = {"_bucket", "_count", "_sum"};
            for (int q = 0; name && q < 3; q++) {
                size_t a = strlen(name), b = strlen(suf[q]);
                if (a > b && !strcmp(name + a - b, suf[q])) {
                    char *base = strndup(name, a - b);
                    lblset h = l;
                    int o = 0;
                    for (int k = 0; k < l.n; k++) {
                        if (!strcmp(l.v[k].name, "le")) continue;
                        h.v[o] = l.v[k];
                        if (!strcmp(l.v[k].name, "__name__")) h.v[o].value = base;
                        o++;
                    }
                    h.n = o;
                    if (base) od_promql_mem_mark_histogram(mem, h.v, (size_t)h.n, &err);
                    free(base);
                    break;
                }
            }
        }
        free(pts);
        lblset_free(&l);
    }
}

static void parse_expect(evalcase *c, char *s)
{
    /* s starts after "expect " */
    char *type = s;
    char *rest = s;
    while (*rest && !isspace((unsigned char)*rest) && *rest != ':') rest++;
    char sav = *rest;
    *rest = 0;
    char *tname = strdup(type);
    *rest = sav;
    rest = trim(rest);
    char *msg = NULL, *re = NULL;
    if (!strncmp(rest, "msg:", 4)) msg = unquote(rest + 4);
    else if (!strncmp(rest, "regex:", 6)) re = unquote(rest + 6);
    else if (!strncmp(rest, "msg", 3)) { char *p = strchr(rest, ':'); if (p) msg = unquote(p + 1); }
    else if (!strncmp(rest, "regex", 5)) { char *p = strchr(rest, ':'); if (p) re = unquote(p + 1); }
    if (!strcmp(tname, "fail")) { c->fail = 1; if (msg) { free(c->fail_msg); c->fail_msg = msg; msg = NULL; } if (re) { free(c->fail_re); c->fail_re = re; re = NULL; } }
    else if (!strcmp(tname, "ordered")) c->ordered = 1;
    else if (!strcmp(tname, "no_warn")) c->no_warn = 1;
    else if (!strcmp(tname, "no_info")) c->no_info = 1;
    else if (!strcmp(tname, "warn")) {
        c->any_warn = 1;
        if (msg && c->nwarn_msg < 8) { c->warn_msg[c->nwarn_msg++] = msg; msg = NULL; }
        if (re && c->nwarn_re < 8) { c->warn_re[c->nwarn_re++] = re; re = NULL; }
    } else if (!strcmp(tname, "info")) {
        c->any_info = 1;
        if (msg && c->ninfo_msg < 8) { c->info_msg[c->ninfo_msg++] = msg; msg = NULL; }
        if (re && c->ninfo_re < 8) { c->info_re[c->ninfo_re++] = re; re = NULL; }
    } else if (!strcmp(tname, "string")) {
        c->has_string = 1;
        c->string = unquote(rest);
    } else if (!strcmp(tname, "range")) {
        /* range vector from A to B step C */
        char a[64], b[64], st[64];
        if (sscanf(rest, "vector from %63s to %63s step %63s", a, b, st) == 3) {
            c->has_rv = 1;
            parse_time(a, &c->rv_start);
            parse_time(b, &c->rv_end);
            parse_time(st, &c->rv_step);
        }
    }
    free(msg);
    free(re);
    free(tname);
}

static void run_file(const char *dir, const char *name, known *kn, stats *total)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    lines L;
    if (read_lines(path, &L)) { fprintf(stderr, "cannot read %s\n", path); total->unexpected_fail++; return; }
    od_promql_mem *mem;
    od_err err;
    if (od_promql_mem_new(&mem, &err)) exit(2);
    stats st = {0};
    tsdb_fresh();
    for (size_t i = 0; i < L.n; i++) {
        char *s = trim(L.v[i]);
        if (!*s || *s == '#') continue;
        if (!strncmp(s, "clear", 5)) { od_promql_mem_clear(mem); tsdb_fresh(); continue; }
        if (!strncmp(s, "load", 4)) {
            int nhcb = !strncmp(s, "load_with_nhcb", 14);
            char *iv = trim(s + (nhcb ? 14 : 4));
            int64_t interval;
            if (parse_time(iv, &interval)) { fprintf(stderr, "%s:%zu: bad interval\n", name, i + 1); continue; }
            load_block(mem, &L, &i, interval, nhcb, name);
            continue;
        }
        if (strncmp(s, "eval", 4) != 0) { fprintf(stderr, "%s:%zu: unknown command\n", name, i + 1); continue; }
        evalcase c;
        memset(&c, 0, sizeof c);
        c.line = (int)i + 1;
        char *p = s + 4;
        if (!strncmp(p, "_fail", 5)) { c.fail = 1; p += 5; }
        else if (!strncmp(p, "_ordered", 8)) { c.ordered = 1; p += 8; }
        else if (!strncmp(p, "_warn", 5)) { c.any_warn = 1; p += 5; }
        else if (!strncmp(p, "_info", 5)) { c.any_info = 1; p += 5; }
        p = trim(p);
        char a[64], b[64], stp[64];
        int off = 0;
        if (sscanf(p, "instant at %63s %n", a, &off) == 1 && off) {
            parse_time(a, &c.t);
            c.query = strdup(p + off);
        } else if (sscanf(p, "range from %63s to %63s step %63s %n", a, b, stp, &off) == 3 && off) {
            c.range = 1;
            parse_time(a, &c.start);
            parse_time(b, &c.end);
            parse_time(stp, &c.step);
            c.query = strdup(p + off);
        } else {
            fprintf(stderr, "%s:%zu: bad eval\n", name, i + 1);
            continue;
        }
        /* expectations */
        while (i + 1 < L.n) {
            char *raw = L.v[i + 1];
            char *t = trim(raw);
            if (!*t) break;
            if (raw[0] != ' ' && raw[0] != '\t') break;
            i++;
            if (*t == '#') continue;
            if (!strncmp(t, "expect ", 7)) { parse_expect(&c, t + 7); continue; }
            if (!strncmp(t, "expected_fail_message", 21)) { c.fail = 1; c.fail_msg = unquote(t + 21); continue; }
            if (!strncmp(t, "expected_fail_regexp", 20)) { c.fail = 1; c.fail_re = unquote(t + 20); continue; }
            if (strstr(t, "{{")) c.hist = 1;
            int okn;
            double v = parse_num(t, &okn);
            if (okn && !c.range) { c.scalar_exp = 1; c.scalar_val = v; continue; }
            expseries *ne = realloc(c.exp, (c.nexp + 1) * sizeof *ne);
            if (!ne) break;
            c.exp = ne;
            expseries *es = &c.exp[c.nexp];
            memset(es, 0, sizeof *es);
            const char *rest = parse_series(t, &es->l);
            if (!rest) { c.hist = 1; continue; }
            lblset_sort(&es->l);
            if (expand_points(rest, &es->pts, &es->n, &es->cap) != 0) c.hist = 1;
            for (size_t q = 0; q < es->n; q++) if (es->pts[q].hist) c.hist = 1;
            c.nexp++;
        }
        int skipped = 0, ok = 0;
        if (c.hist) skipped = 1;
        else ok = run_case(&c, mem, &skipped);
        int ki = known_find(kn, name, c.line);
        if (skipped) st.skip++;
        else if (ok) {
            st.pass++;
            if (ki >= 0) {
                kn->hit[ki] = 1;
                total->unexpected_pass++;
                printf("  UNEXPECTED PASS %s:%d %s\n", name, c.line, c.query);
            }
        } else {
            st.fail++;
            if (ki >= 0) kn->hit[ki] = 1;
            else total->unexpected_fail++;
            if (ki < 0 || verbose)
                printf("  FAIL %s:%d %s\n      %s\n", name, c.line, c.query, g_why);
        }
        case_free(&c);
    }
    printf("%s: %d passed, %d failed, %d skipped\n", name, st.pass, st.fail, st.skip);
    total->pass += st.pass;
    total->fail += st.fail;
    total->skip += st.skip;
    for (size_t i = 0; i < L.n; i++) free(L.v[i]);
    free(L.v);
    od_promql_mem_free(mem);
    if (g_tsdb) {
        od_tsdb_close(g_tsdb, &err);
        g_tsdb = NULL;
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    const char *dir = "../shared/promql-conformance", *known_path = NULL, *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--known") && i + 1 < argc) known_path = argv[++i];
        else if (!strcmp(argv[i], "--file") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "-v")) verbose = 1;
        else if (!strcmp(argv[i], "--source") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "tsdb")) use_tsdb = 1;
            else if (!strcmp(v, "mem")) use_tsdb = 0;
            else { fprintf(stderr, "--source must be mem or tsdb\n"); return 2; }
        }
        else { fprintf(stderr, "usage: %s --dir DIR [--known FILE] [--file NAME] [--source tsdb|mem] [-v]\n", argv[0]); return 2; }
    }
    known kn;
    known_load(&kn, known_path);
    DIR *d = opendir(dir);
    if (!d) { fprintf(stderr, "cannot open directory %s\n", dir); return 2; }
    char **names = NULL;
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".test")) {
            char **v = realloc(names, (nn + 1) * sizeof *v);
            if (!v) break;
            names = v;
            names[nn++] = strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_str);
    stats total = {0};
    for (size_t i = 0; i < nn; i++) {
        if (!only || !strcmp(only, names[i])) run_file(dir, names[i], &kn, &total);
        free(names[i]);
    }
    free(names);
    for (size_t i = 0; i < kn.n; i++) {
        if (!kn.hit[i] && !only) {
            /* listed but neither failed nor passed: the case no longer exists or is skipped */
            printf("  STALE known-failure entry: %s\n", kn.keys[i]);
            total.unexpected_pass++;
        }
        free(kn.keys[i]);
    }
    free(kn.keys);
    free(kn.hit);
    int run = total.pass + total.fail;
    printf("total: %d passed, %d failed, %d skipped (%.1f%% of %d non-skipped cases pass)\n", total.pass, total.fail,
           total.skip, run ? 100.0 * total.pass / run : 0.0, run);
    if (total.unexpected_fail || total.unexpected_pass) {
        printf("conformance: %d unexpected failures, %d listed cases that did not fail\n", total.unexpected_fail, total.unexpected_pass);
        return 1;
    }
    return 0;
}
