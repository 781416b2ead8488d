/*
 * source_tsdb.c — the PromQL engine's series source over the TSDB engine.
 *
 * Owns one pinned read view (od_tsdb_read) and the scratch arrays used to hand a series'
 * samples to the evaluator. select() converts the PromQL matchers into TSDB matchers, asks
 * od_tsdb_select for the series in [mint, maxt], decodes each series' samples once with its
 * sample iterator (stale markers are kept bit-exactly) and emits them; the evaluator copies
 * what it keeps, so the scratch arrays are reused from series to series.
 */
#include <stdlib.h>
#include <string.h>

#include "od_promql_tsdb.h"

struct od_promql_tsdb_src {
    od_tsdb *t;
    od_tsdb_read *rd;
    int64_t *ts;
    double *vs;
    size_t cap;
    od_promql_label *lbl;
    size_t lcap;
};

int od_promql_tsdb_src_open(od_tsdb *t, od_promql_tsdb_src **out, od_err *err)
{
    *out = NULL;
    od_promql_tsdb_src *s = calloc(1, sizeof *s);
    if (!s) return od_err_set(err, OD_NOMEM, "promql tsdb source: out of memory");
    s->t = t;
    int rc = od_tsdb_read_open(t, &s->rd, err);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return OD_OK;
}

void od_promql_tsdb_src_close(od_promql_tsdb_src *s)
{
    if (!s) return;
    if (s->rd) od_tsdb_read_close(s->rd);
    free(s->ts);
    free(s->vs);
    free(s->lbl);
    free(s);
}

static int grow(od_promql_tsdb_src *s, size_t need, od_err *err)
{
    if (need <= s->cap) return OD_OK;
    size_t c = s->cap ? s->cap : 256;
    while (c < need) c *= 2;
    int64_t *t = realloc(s->ts, c * sizeof *t);
    if (!t) return od_err_set(err, OD_NOMEM, "promql tsdb source: out of memory");
    s->ts = t;
    double *v = realloc(s->vs, c * sizeof *v);
    if (!v) return od_err_set(err, OD_NOMEM, "promql tsdb source: out of memory");
    s->vs = v;
    s->cap = c;
    return OD_OK;
}

static int tsdb_select(void *ctx, const od_promql_matcher *pm, size_t nm, int64_t mint, int64_t maxt,
                       od_promql_emit_fn emit, void *arg, od_err *err)
{
    od_promql_tsdb_src *s = ctx;
    od_matcher *ms = calloc(nm ? nm : 1, sizeof *ms);
    if (!ms) return od_err_set(err, OD_NOMEM, "promql tsdb source: out of memory");
    size_t ninit = 0;
    int rc = OD_OK;
    od_series_set *ss = NULL;
    for (; ninit < nm; ninit++) {
        static const od_match_op ops[] = {OD_MATCH_EQ, OD_MATCH_NE, OD_MATCH_RE, OD_MATCH_NRE};
        rc = od_matcher_init(&ms[ninit], ops[pm[ninit].type], pm[ninit].name, pm[ninit].value, err);
        if (rc) goto out;
    }
    rc = od_tsdb_select(s->rd, ms, nm, mint, maxt, &ss, err);
    if (rc) goto out;
    for (;;) {
        const od_labels *l = NULL;
        rc = od_series_set_next(ss, &l, err);
        if (rc || !l) break;
        od_sample_iter *it = NULL;
        rc = od_series_set_samples(ss, &it, err);
        if (rc) break;
        size_t n = 0;
        while (od_sample_iter_valid(it)) {
            od_sample smp = od_sample_iter_at(it);
            if (smp.t > maxt) break;
            if (smp.t >= mint) {
                rc = grow(s, n + 1, err);
                if (rc) break;
                s->ts[n] = smp.t;
                s->vs[n] = smp.v;
                n++;
            }
            rc = od_sample_iter_next(it, err);
            if (rc) break;
        }
        od_sample_iter_free(it);
        if (rc) break;
        if (!n) continue;
        if (l->n > s->lcap) {
            od_promql_label *nl = realloc(s->lbl, l->n * sizeof *nl);
            if (!nl) { rc = od_err_set(err, OD_NOMEM, "promql tsdb source: out of memory"); break; }
            s->lbl = nl;
            s->lcap = l->n;
        }
        for (size_t i = 0; i < l->n; i++) {
            s->lbl[i].name = l->v[i].name;
            s->lbl[i].value = l->v[i].value;
        }
        rc = emit(arg, s->lbl, l->n, s->ts, s->vs, n, err);
        if (rc) break;
    }
out:
    if (ss) od_series_set_free(ss);
    for (size_t i = 0; i < ninit; i++) od_matcher_clear(&ms[i]);
    free(ms);
    return rc;
}

od_promql_source od_promql_tsdb_src_source(od_promql_tsdb_src *s)
{
    od_promql_source src = {s, tsdb_select};
    return src;
}
