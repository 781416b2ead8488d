/*
 * source_mem.c — an in-memory od_promql_source: series (sorted label sets) with growable
 * arrays of samples. Used by unit tests, the conformance runner and benchmarks.
 *
 * Owns copies of every label and sample. Series are found by a linear scan with the matchers
 * (fine for test data; the TSDB adapter uses the TSDB's index). Samples are appended in time
 * order (an equal timestamp replaces). Series can be marked as holding native-histogram
 * samples in a time span; a select that returns such a series in that span sets a flag the
 * conformance runner reads to count the case as skipped.
 */
#include <stdlib.h>
#include <string.h>

#include "od_promql.h"

typedef struct mseries {
    od_promql_label *labels; /* sorted by name; strings owned */
    size_t nlabels;
    int64_t *t;
    double *v;
    size_t n, cap;
    int64_t hist_min, hist_max; /* histogram span, hist_min > hist_max when none */
} mseries;

struct od_promql_mem {
    mseries *s;
    size_t n, cap;
    int touched;
    size_t *hidx;    /* open-addressing hash of label sets: series index + 1, 0 = empty */
    size_t hcap;
};

/* FNV-1a over name\0value\0 pairs of a sorted label set. */
static uint64_t lhash(const od_promql_label *l, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        for (const char *p = l[i].name; ; p++) { h ^= (unsigned char)*p; h *= 1099511628211ULL; if (!*p) break; }
        for (const char *p = l[i].value; ; p++) { h ^= (unsigned char)*p; h *= 1099511628211ULL; if (!*p) break; }
    }
    return h;
}

static int same_labels(const mseries *s, const od_promql_label *l, size_t n)
{
    if (s->nlabels != n) return 0;
    for (size_t j = 0; j < n; j++)
        if (strcmp(s->labels[j].name, l[j].name) || strcmp(s->labels[j].value, l[j].value)) return 0;
    return 1;
}

static int rehash(od_promql_mem *m, size_t cap)
{
    size_t *h = calloc(cap, sizeof *h);
    if (!h) return -1;
    for (size_t i = 0; i < m->n; i++) {
        size_t k = (size_t)lhash(m->s[i].labels, m->s[i].nlabels) & (cap - 1);
        while (h[k]) k = (k + 1) & (cap - 1);
        h[k] = i + 1;
    }
    free(m->hidx);
    m->hidx = h;
    m->hcap = cap;
    return 0;
}

int od_promql_mem_new(od_promql_mem **out, od_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
    return OD_OK;
}

static void series_free(mseries *s)
{
    for (size_t i = 0; i < s->nlabels; i++) {
        free((char *)s->labels[i].name);
        free((char *)s->labels[i].value);
    }
    free(s->labels);
    free(s->t);
    free(s->v);
}

void od_promql_mem_clear(od_promql_mem *m)
{
    for (size_t i = 0; i < m->n; i++) series_free(&m->s[i]);
    free(m->s);
    m->s = NULL;
    m->n = m->cap = 0;
    m->touched = 0;
    free(m->hidx);
    m->hidx = NULL;
    m->hcap = 0;
}

void od_promql_mem_free(od_promql_mem *m)
{
    if (!m) return;
    od_promql_mem_clear(m);
    free(m);
}

static int cmp_lbl(const void *a, const void *b)
{
    return strcmp(((const od_promql_label *)a)->name, ((const od_promql_label *)b)->name);
}

/* Find or create the series with exactly these labels (empty values dropped). */
static int get_series(od_promql_mem *m, const od_promql_label *labels, size_t nlabels, mseries **out, od_err *err)
{
    od_promql_label *tmp = malloc((nlabels ? nlabels : 1) * sizeof *tmp);
    if (!tmp) return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
    size_t nt = 0;
    for (size_t i = 0; i < nlabels; i++)
        if (labels[i].value && *labels[i].value) tmp[nt++] = labels[i];
    qsort(tmp, nt, sizeof *tmp, cmp_lbl);
    if ((m->n + 1) * 2 > m->hcap && rehash(m, m->hcap ? m->hcap * 2 : 64) != 0) {
        free(tmp);
        return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
    }
    size_t slot = (size_t)lhash(tmp, nt) & (m->hcap - 1);
    while (m->hidx[slot]) {
        mseries *s = &m->s[m->hidx[slot] - 1];
        if (same_labels(s, tmp, nt)) {
            free(tmp);
            *out = s;
            return OD_OK;
        }
        slot = (slot + 1) & (m->hcap - 1);
    }
    if (m->n == m->cap) {
        size_t c = m->cap ? m->cap * 2 : 16;
        mseries *v = realloc(m->s, c * sizeof *v);
        if (!v) { free(tmp); return od_err_set(err, OD_NOMEM, "promql mem source: out of memory"); }
        m->s = v;
        m->cap = c;
    }
    mseries *s = &m->s[m->n];
    memset(s, 0, sizeof *s);
    s->hist_min = INT64_MAX;
    s->hist_max = INT64_MIN;
    s->labels = calloc(nt ? nt : 1, sizeof *s->labels);
    if (!s->labels) { free(tmp); return od_err_set(err, OD_NOMEM, "promql mem source: out of memory"); }
    for (size_t i = 0; i < nt; i++) {
        s->labels[i].name = strdup(tmp[i].name);
        s->labels[i].value = strdup(tmp[i].value);
        s->nlabels++;
        if (!s->labels[i].name || !s->labels[i].value) {
            free(tmp);
            series_free(s);
            return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
        }
    }
    free(tmp);
    m->n++;
    m->hidx[slot] = m->n;
    *out = s;
    return OD_OK;
}

int od_promql_mem_add(od_promql_mem *m, const od_promql_label *labels, size_t nlabels, int64_t t,
                      double v, od_err *err)
{
    mseries *s;
    int rc = get_series(m, labels, nlabels, &s, err);
    if (rc) return rc;
    if (s->n && s->t[s->n - 1] == t) {
        s->v[s->n - 1] = v;
        return OD_OK;
    }
    if (s->n && s->t[s->n - 1] > t)
        return od_err_set(err, OD_BADREQ, "promql mem source: out-of-order sample at %lld", (long long)t);
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 16;
        int64_t *nt = realloc(s->t, c * sizeof *nt);
        if (!nt) return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
        s->t = nt;
        double *nv = realloc(s->v, c * sizeof *nv);
        if (!nv) return od_err_set(err, OD_NOMEM, "promql mem source: out of memory");
        s->v = nv;
        s->cap = c;
    }
    s->t[s->n] = t;
    s->v[s->n] = v;
    s->n++;
    return OD_OK;
}

int od_promql_mem_mark_histogram(od_promql_mem *m, const od_promql_label *labels, size_t nlabels,
                                 od_err *err)
{
    mseries *s;
    int rc = get_series(m, labels, nlabels, &s, err);
    if (rc) return rc;
    s->hist_min = INT64_MIN;
    s->hist_max = INT64_MAX;
    return OD_OK;
}

int od_promql_mem_histogram_touched(od_promql_mem *m, int reset)
{
    int t = m->touched;
    if (reset) m->touched = 0;
    return t;
}

static int mem_select(void *ctx, const od_promql_matcher *mt, size_t nm, int64_t mint, int64_t maxt,
                      od_promql_emit_fn emit, void *arg, od_err *err)
{
    od_promql_mem *m = ctx;
    for (size_t i = 0; i < m->n; i++) {
        mseries *s = &m->s[i];
        int ok = 1;
        for (size_t j = 0; j < nm && ok; j++) {
            const char *v = "";
            for (size_t k = 0; k < s->nlabels; k++)
                if (strcmp(s->labels[k].name, mt[j].name) == 0) { v = s->labels[k].value; break; }
            ok = od_promql_matcher_matches(&mt[j], v);
        }
        if (!ok) continue;
        if (s->hist_min <= maxt && s->hist_max >= mint) m->touched = 1;
        size_t lo = 0, hi = s->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (s->t[mid] < mint) lo = mid + 1;
            else hi = mid;
        }
        size_t e = lo;
        while (e < s->n && s->t[e] <= maxt) e++;
        if (e == lo) continue;
        int rc = emit(arg, s->labels, s->nlabels, s->t + lo, s->v + lo, e - lo, err);
        if (rc) return rc;
    }
    return OD_OK;
}

od_promql_source od_promql_mem_source(od_promql_mem *m)
{
    od_promql_source src = {m, mem_select};
    return src;
}
