/*
 * functions.c — the PromQL function table and every float function.
 *
 * Owns the table (name, argument types, return type) used by the parser's type checker, and
 * the implementations, which work step-major like the rest of the evaluator: range-vector
 * functions slide a window (ref - range, ref] over each series' raw points with two cursors
 * (one pass per series for the whole query), instant-vector functions map series × steps.
 * Formulas follow Prometheus 3 (extrapolated rate, Kahan/Neumaier sums, linear regression,
 * bucket quantiles with monotonicity fixing) so results match its test suite.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "promql_int.h"

enum {
    F_NONE = 0,
    F_ABS,
    F_ABSENT,
    F_ABSENT_OVER_TIME,
    F_ACOS,
    F_ACOSH,
    F_ASIN,
    F_ASINH,
    F_ATAN,
    F_ATANH,
    F_AVG_OVER_TIME,
    F_CEIL,
    F_CHANGES,
    F_CLAMP,
    F_CLAMP_MAX,
    F_CLAMP_MIN,
    F_COS,
    F_COSH,
    F_COUNT_OVER_TIME,
    F_DAY_OF_MONTH,
    F_DAY_OF_WEEK,
    F_DAY_OF_YEAR,
    F_DAYS_IN_MONTH,
    F_DEG,
    F_DELTA,
    F_DERIV,
    F_DOUBLE_EXPONENTIAL_SMOOTHING,
    F_END,
    F_EXP,
    F_FIRST_OVER_TIME,
    F_FLOOR,
    F_HISTOGRAM_AVG,
    F_HISTOGRAM_COUNT,
    F_HISTOGRAM_FRACTION,
    F_HISTOGRAM_QUANTILE,
    F_HISTOGRAM_QUANTILES,
    F_HISTOGRAM_STDDEV,
    F_HISTOGRAM_STDVAR,
    F_HISTOGRAM_SUM,
    F_HOLT_WINTERS,
    F_HOUR,
    F_IDELTA,
    F_INCREASE,
    F_IRATE,
    F_LABEL_JOIN,
    F_LABEL_REPLACE,
    F_LAST_OVER_TIME,
    F_LN,
    F_LOG10,
    F_LOG2,
    F_MAD_OVER_TIME,
    F_MAX_OF,
    F_MAX_OVER_TIME,
    F_MIN_OF,
    F_MIN_OVER_TIME,
    F_MINUTE,
    F_MONTH,
    F_PI,
    F_PREDICT_LINEAR,
    F_PRESENT_OVER_TIME,
    F_QUANTILE_OVER_TIME,
    F_RAD,
    F_RANGE,
    F_RATE,
    F_RESETS,
    F_ROUND,
    F_SCALAR,
    F_SGN,
    F_SIN,
    F_SINH,
    F_SORT,
    F_SORT_BY_LABEL,
    F_SORT_BY_LABEL_DESC,
    F_SORT_DESC,
    F_SQRT,
    F_START,
    F_STDDEV_OVER_TIME,
    F_STDVAR_OVER_TIME,
    F_STEP,
    F_SUM_OVER_TIME,
    F_TAN,
    F_TANH,
    F_TIME,
    F_TIMESTAMP,
    F_TS_OF_FIRST_OVER_TIME,
    F_TS_OF_LAST_OVER_TIME,
    F_TS_OF_MAX_OVER_TIME,
    F_TS_OF_MIN_OVER_TIME,
    F_VECTOR,
    F_YEAR,
};

static const pq_func funcs[] = {
    {"abs", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ABS},
    {"absent", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ABSENT},
    {"absent_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_ABSENT_OVER_TIME},
    {"acos", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ACOS},
    {"acosh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ACOSH},
    {"asin", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ASIN},
    {"asinh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ASINH},
    {"atan", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ATAN},
    {"atanh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_ATANH},
    {"avg_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_AVG_OVER_TIME},
    {"ceil", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_CEIL},
    {"changes", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_CHANGES},
    {"clamp", {OD_PROMQL_VECTOR, OD_PROMQL_SCALAR, OD_PROMQL_SCALAR}, 3, 3, 0, OD_PROMQL_VECTOR, F_CLAMP},
    {"clamp_max", {OD_PROMQL_VECTOR, OD_PROMQL_SCALAR}, 2, 2, 0, OD_PROMQL_VECTOR, F_CLAMP_MAX},
    {"clamp_min", {OD_PROMQL_VECTOR, OD_PROMQL_SCALAR}, 2, 2, 0, OD_PROMQL_VECTOR, F_CLAMP_MIN},
    {"cos", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_COS},
    {"cosh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_COSH},
    {"count_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_COUNT_OVER_TIME},
    {"day_of_month", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_DAY_OF_MONTH},
    {"day_of_week", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_DAY_OF_WEEK},
    {"day_of_year", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_DAY_OF_YEAR},
    {"days_in_month", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_DAYS_IN_MONTH},
    {"deg", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_DEG},
    {"delta", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_DELTA},
    {"deriv", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_DERIV},
    {"double_exponential_smoothing", {OD_PROMQL_MATRIX, OD_PROMQL_SCALAR, OD_PROMQL_SCALAR}, 3, 3, 0, OD_PROMQL_VECTOR, F_DOUBLE_EXPONENTIAL_SMOOTHING},
    {"end", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_END},
    {"exp", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_EXP},
    {"first_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_FIRST_OVER_TIME},
    {"floor", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_FLOOR},
    {"histogram_avg", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_AVG},
    {"histogram_count", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_COUNT},
    {"histogram_fraction", {OD_PROMQL_SCALAR, OD_PROMQL_SCALAR, OD_PROMQL_VECTOR}, 3, 3, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_FRACTION},
    {"histogram_quantile", {OD_PROMQL_SCALAR, OD_PROMQL_VECTOR}, 2, 2, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_QUANTILE},
    {"histogram_quantiles", {OD_PROMQL_VECTOR, OD_PROMQL_STRING, OD_PROMQL_SCALAR}, 3, 3, 1, OD_PROMQL_VECTOR, F_HISTOGRAM_QUANTILES},
    {"histogram_stddev", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_STDDEV},
    {"histogram_stdvar", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_STDVAR},
    {"histogram_sum", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_HISTOGRAM_SUM},
    {"holt_winters", {OD_PROMQL_MATRIX, OD_PROMQL_SCALAR, OD_PROMQL_SCALAR}, 3, 3, 0, OD_PROMQL_VECTOR, F_HOLT_WINTERS},
    {"hour", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_HOUR},
    {"idelta", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_IDELTA},
    {"increase", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_INCREASE},
    {"irate", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_IRATE},
    {"label_join", {OD_PROMQL_VECTOR, OD_PROMQL_STRING, OD_PROMQL_STRING, OD_PROMQL_STRING}, 4, 3, 1, OD_PROMQL_VECTOR, F_LABEL_JOIN},
    {"label_replace", {OD_PROMQL_VECTOR, OD_PROMQL_STRING, OD_PROMQL_STRING, OD_PROMQL_STRING, OD_PROMQL_STRING}, 5, 5, 0, OD_PROMQL_VECTOR, F_LABEL_REPLACE},
    {"last_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_LAST_OVER_TIME},
    {"ln", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_LN},
    {"log10", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_LOG10},
    {"log2", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_LOG2},
    {"mad_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_MAD_OVER_TIME},
    {"max_of", {OD_PROMQL_SCALAR, OD_PROMQL_SCALAR}, 2, 2, 0, OD_PROMQL_SCALAR, F_MAX_OF},
    {"max_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_MAX_OVER_TIME},
    {"min_of", {OD_PROMQL_SCALAR, OD_PROMQL_SCALAR}, 2, 2, 0, OD_PROMQL_SCALAR, F_MIN_OF},
    {"min_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_MIN_OVER_TIME},
    {"minute", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_MINUTE},
    {"month", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_MONTH},
    {"pi", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_PI},
    {"predict_linear", {OD_PROMQL_MATRIX, OD_PROMQL_SCALAR}, 2, 2, 0, OD_PROMQL_VECTOR, F_PREDICT_LINEAR},
    {"present_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_PRESENT_OVER_TIME},
    {"quantile_over_time", {OD_PROMQL_SCALAR, OD_PROMQL_MATRIX}, 2, 2, 0, OD_PROMQL_VECTOR, F_QUANTILE_OVER_TIME},
    {"rad", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_RAD},
    {"range", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_RANGE},
    {"rate", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_RATE},
    {"resets", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_RESETS},
    {"round", {OD_PROMQL_VECTOR, OD_PROMQL_SCALAR}, 2, 1, -1, OD_PROMQL_VECTOR, F_ROUND},
    {"scalar", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_SCALAR, F_SCALAR},
    {"sgn", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SGN},
    {"sin", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SIN},
    {"sinh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SINH},
    {"sort", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SORT},
    {"sort_by_label", {OD_PROMQL_VECTOR, OD_PROMQL_STRING}, 2, 1, 1, OD_PROMQL_VECTOR, F_SORT_BY_LABEL},
    {"sort_by_label_desc", {OD_PROMQL_VECTOR, OD_PROMQL_STRING}, 2, 1, 1, OD_PROMQL_VECTOR, F_SORT_BY_LABEL_DESC},
    {"sort_desc", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SORT_DESC},
    {"sqrt", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_SQRT},
    {"start", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_START},
    {"stddev_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_STDDEV_OVER_TIME},
    {"stdvar_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_STDVAR_OVER_TIME},
    {"step", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_STEP},
    {"sum_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_SUM_OVER_TIME},
    {"tan", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_TAN},
    {"tanh", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_TANH},
    {"time", {0}, 0, 0, 0, OD_PROMQL_SCALAR, F_TIME},
    {"timestamp", {OD_PROMQL_VECTOR}, 1, 1, 0, OD_PROMQL_VECTOR, F_TIMESTAMP},
    {"ts_of_first_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_TS_OF_FIRST_OVER_TIME},
    {"ts_of_last_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_TS_OF_LAST_OVER_TIME},
    {"ts_of_max_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_TS_OF_MAX_OVER_TIME},
    {"ts_of_min_over_time", {OD_PROMQL_MATRIX}, 1, 1, 0, OD_PROMQL_VECTOR, F_TS_OF_MIN_OVER_TIME},
    {"vector", {OD_PROMQL_SCALAR}, 1, 1, 0, OD_PROMQL_VECTOR, F_VECTOR},
    {"year", {OD_PROMQL_VECTOR}, 1, 0, -1, OD_PROMQL_VECTOR, F_YEAR},
};

const pq_func *pq_func_lookup(const char *name)
{
    size_t lo = 0, hi = sizeof funcs / sizeof funcs[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, funcs[mid].name);
        if (c == 0) return &funcs[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

pq_val pq_eval_vsel(pq_ev *ev, const pq_node *n, int want_ts);
static void warn_q(pq_ev *ev, int pos, const double *q);

/* ---------------- helpers ---------------- */

static void kahan_inc(double inc, double *sum, double *c)
{
    double t = *sum + inc;
    if (isinf(t)) *c = 0;
    else if (fabs(*sum) >= fabs(inc)) *c += (*sum - t) + inc;
    else *c += (inc - t) + *sum;
    *sum = t;
}

static int cmp_dbl_nan_first(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x)) return isnan(y) ? 0 : -1;
    if (isnan(y)) return 1;
    return x < y ? -1 : x > y;
}

double pq_quantile(double q, double *v, size_t n);
double pq_quantile(double q, double *v, size_t n)
{
    if (n == 0 || isnan(q)) return NAN;
    if (q < 0) return -INFINITY;
    if (q > 1) return INFINITY;
    qsort(v, n, sizeof *v, cmp_dbl_nan_first);
    double rank = q * (double)(n - 1);
    double lower = fmax(0, floor(rank));
    double upper = fmin((double)n - 1, lower + 1);
    double w = rank - floor(rank);
    return v[(size_t)lower] * (1 - w) + v[(size_t)upper] * w;
}

static pq_val vec_out(void)
{
    pq_val v;
    memset(&v, 0, sizeof v);
    v.type = OD_PROMQL_VECTOR;
    return v;
}

static pq_val scalar_out(pq_ev *ev)
{
    pq_val v;
    memset(&v, 0, sizeof v);
    v.type = OD_PROMQL_SCALAR;
    v.scalar = pq_alloc(ev, ev->nsteps * sizeof(double));
    return v;
}

/* The node that defines a range argument's window (matrix selector or subquery). */
static const pq_node *unparen(const pq_node *n)
{
    while (n->kind == PQ_PAREN) n = n->a;
    return n;
}

/* ---------------- range-vector functions ---------------- */

typedef struct win {
    const int64_t *t;
    const double *v;
    size_t n;
    int64_t ref, range;
    double p0, p1;     /* scalar parameters at this step */
} win;

static double extrapolated(const win *w, int counter, int rate, int *ok)
{
    if (w->n < 2) { *ok = 0; return 0; }
    double result = w->v[w->n - 1] - w->v[0];
    if (counter) {
        double last = 0;
        for (size_t i = 0; i < w->n; i++) {
            if (w->v[i] < last) result += last;
            last = w->v[i];
        }
    }
    int64_t rs = w->ref - w->range, re = w->ref;
    double dstart = (double)(w->t[0] - rs) / 1000.0;
    double dend = (double)(re - w->t[w->n - 1]) / 1000.0;
    double sampled = (double)(w->t[w->n - 1] - w->t[0]) / 1000.0;
    double avg = sampled / (double)(w->n - 1);
    double thr = avg * 1.1;
    double ext = sampled;
    if (dstart >= thr) dstart = avg / 2;
    if (counter && result > 0 && w->v[0] >= 0) {
        double dz = sampled * (w->v[0] / result);
        if (dz < dstart) dstart = dz;
    }
    ext += dstart;
    if (dend >= thr) dend = avg / 2;
    ext += dend;
    double factor = ext / sampled;
    if (rate) factor /= (double)w->range / 1000.0;
    return result * factor;
}

static void linreg(const win *w, int64_t icept, double *slope, double *intercept)
{
    double n = 0, sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0;
    double init = w->v[0];
    int consty = 1;
    for (size_t i = 0; i < w->n; i++) {
        if (consty && i > 0 && w->v[i] != init) consty = 0;
        n += 1;
        double x = (double)(w->t[i] - icept) / 1e3;
        kahan_inc(x, &sx, &cx);
        kahan_inc(w->v[i], &sy, &cy);
        kahan_inc(x * w->v[i], &sxy, &cxy);
        kahan_inc(x * x, &sx2, &cx2);
    }
    if (consty) {
        if (isinf(init)) { *slope = NAN; *intercept = NAN; return; }
        *slope = 0;
        *intercept = init;
        return;
    }
    sx += cx; sy += cy; sxy += cxy; sx2 += cx2;
    double cov = sxy - sx * sy / n;
    double var = sx2 - sx * sx / n;
    *slope = cov / var;
    *intercept = sy / n - *slope * sx / n;
}

static double fn_range(pq_ev *ev, int id, const win *w, int64_t stept, int *ok)
{
    *ok = 1;
    switch (id) {
    case F_RATE: return extrapolated(w, 1, 1, ok);
    case F_INCREASE: return extrapolated(w, 1, 0, ok);
    case F_DELTA: return extrapolated(w, 0, 0, ok);
    case F_IRATE:
    case F_IDELTA: {
        if (w->n < 2) { *ok = 0; return 0; }
        double last = w->v[w->n - 1], prev = w->v[w->n - 2];
        double r = (id == F_IRATE && last < prev) ? last : last - prev;
        if (id == F_IDELTA) return r;
        int64_t dt = w->t[w->n - 1] - w->t[w->n - 2];
        if (dt == 0) { *ok = 0; return 0; }
        return r / ((double)dt / 1000.0);
    }
    case F_SUM_OVER_TIME: {
        double s = 0, c = 0;
        for (size_t i = 0; i < w->n; i++) kahan_inc(w->v[i], &s, &c);
        return s + c;
    }
    case F_AVG_OVER_TIME: {
        double sum = w->v[0], cnt = 1, mean = 0, kc = 0;
        int incr = 0;
        for (size_t i = 1; i < w->n; i++) {
            cnt = (double)(i + 1);
            if (!incr) {
                double ns = sum, nc = kc;
                kahan_inc(w->v[i], &ns, &nc);
                if (!isinf(ns)) { sum = ns; kc = nc; continue; }
                incr = 1;
                mean = sum / (cnt - 1);
                kc /= (cnt - 1);
            }
            double q = (cnt - 1) / cnt;
            double m2 = q * mean, c2 = q * kc;
            kahan_inc(w->v[i] / cnt, &m2, &c2);
            mean = m2;
            kc = c2;
        }
        if (incr) return mean + kc;
        return sum / cnt + kc / cnt;
    }
    case F_COUNT_OVER_TIME: return (double)w->n;
    case F_PRESENT_OVER_TIME: return 1;
    case F_MIN_OVER_TIME: case F_MAX_OVER_TIME: {
        double m = w->v[0];
        for (size_t i = 1; i < w->n; i++) {
            double x = w->v[i];
            if (id == F_MAX_OVER_TIME ? (x > m || isnan(m)) : (x < m || isnan(m))) m = x;
        }
        return m;
    }
    case F_TS_OF_MIN_OVER_TIME: case F_TS_OF_MAX_OVER_TIME: {
        double m = w->v[0];
        int64_t t = w->t[0];
        for (size_t i = 1; i < w->n; i++) {
            double x = w->v[i];
            if (id == F_TS_OF_MAX_OVER_TIME ? (x >= m || isnan(m)) : (x <= m || isnan(m))) { m = x; t = w->t[i]; }
        }
        return (double)t / 1000.0;
    }
    case F_LAST_OVER_TIME: return w->v[w->n - 1];
    case F_FIRST_OVER_TIME: return w->v[0];
    case F_TS_OF_LAST_OVER_TIME: return (double)w->t[w->n - 1] / 1000.0;
    case F_TS_OF_FIRST_OVER_TIME: return (double)w->t[0] / 1000.0;
    case F_STDDEV_OVER_TIME: case F_STDVAR_OVER_TIME: {
        double cnt = 0, mean = 0, cm = 0, aux = 0, ca = 0;
        for (size_t i = 0; i < w->n; i++) {
            cnt++;
            double d = w->v[i] - (mean + cm);
            kahan_inc(d / cnt, &mean, &cm);
            kahan_inc(d * (w->v[i] - (mean + cm)), &aux, &ca);
        }
        double var = (aux + ca) / cnt;
        return id == F_STDDEV_OVER_TIME ? sqrt(var) : var;
    }
    case F_QUANTILE_OVER_TIME: {
        double *tmp = pq_alloc(ev, w->n * sizeof *tmp);
        memcpy(tmp, w->v, w->n * sizeof *tmp);
        return pq_quantile(w->p0, tmp, w->n);
    }
    case F_MAD_OVER_TIME: {
        for (size_t i = 0; i < w->n; i++)
            if (isnan(w->v[i])) return NAN;
        double *tmp = pq_alloc(ev, w->n * sizeof *tmp);
        memcpy(tmp, w->v, w->n * sizeof *tmp);
        double med = pq_quantile(0.5, tmp, w->n);
        for (size_t i = 0; i < w->n; i++) tmp[i] = fabs(w->v[i] - med);
        return pq_quantile(0.5, tmp, w->n);
    }
    case F_CHANGES: {
        double c = 0;
        for (size_t i = 1; i < w->n; i++) {
            double a = w->v[i - 1], b = w->v[i];
            if (a != b && !(isnan(a) && isnan(b))) c++;
        }
        return c;
    }
    case F_RESETS: {
        double c = 0;
        for (size_t i = 1; i < w->n; i++)
            if (w->v[i] < w->v[i - 1]) c++;
        return c;
    }
    case F_DERIV: {
        if (w->n < 2) { *ok = 0; return 0; }
        double s, ic;
        linreg(w, w->t[0], &s, &ic);
        return s;
    }
    case F_PREDICT_LINEAR: {
        if (w->n < 2) { *ok = 0; return 0; }
        double s, ic;
        linreg(w, stept, &s, &ic);
        return ic + s * w->p0;
    }
    case F_DOUBLE_EXPONENTIAL_SMOOTHING: case F_HOLT_WINTERS: {
        if (w->n < 2) { *ok = 0; return 0; }
        double sf = w->p0, tf = w->p1;
        double s0 = 0, s1 = w->v[0], b = w->v[1] - w->v[0];
        for (size_t i = 1; i < w->n; i++) {
            double x = sf * w->v[i];
            if (i - 1 != 0) b = tf * (s1 - s0) + (1 - tf) * b;
            double y = (1 - sf) * (s1 + b);
            s0 = s1;
            s1 = x + y;
        }
        return s1;
    }
    default: *ok = 0; return 0;
    }
}

static int keeps_name(int id)
{
    return id == F_LAST_OVER_TIME || id == F_FIRST_OVER_TIME || id == F_SORT || id == F_SORT_DESC ||
           id == F_SORT_BY_LABEL || id == F_SORT_BY_LABEL_DESC || id == F_LABEL_REPLACE || id == F_LABEL_JOIN;
}

static const char *metric_name(const pq_labels *l)
{
    const char *n = pq_lbl_get(l, "__name__");
    return n ? n : "";
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

typedef struct rfn_ctx {
    pq_ev *ev;
    int id, keep;
    const int64_t *ref;
    int64_t range;
    const double *p0, *p1;
    pq_val *out;
    const char *warn_name; /* first non-counter-looking metric name seen (rate/increase/irate) */
} rfn_ctx;

/* Apply the function to one series' points for every step. Does not longjmp (it also runs
 * inside the source callback): returns an od_code. fn_range allocates only for
 * quantile_over_time and mad_over_time, which never take this path from a callback. */
static int rfn_series(rfn_ctx *c, const pq_labels *lbl, int drop_name, const int64_t *t, const double *v, size_t n, od_err *err)
{
    pq_ev *ev = c->ev;
    size_t lo = 0, hi = 0, oi = 0;
    int have = 0;
    for (size_t i = 0; i < ev->nsteps; i++) {
        int64_t ref = c->ref[i];
        if (i > 0 && ref < c->ref[i - 1]) lo = hi = 0;
        while (hi < n && t[hi] <= ref) hi++;
        while (lo < hi && t[lo] <= ref - c->range) lo++;
        if (lo >= hi) continue;
        win w = {t + lo, v + lo, hi - lo, ref, c->range, c->p0 ? c->p0[i] : 0, c->p1 ? c->p1[i] : 0};
        int ok;
        double r = fn_range(ev, c->id, &w, pq_step_t(ev, i), &ok);
        if (!ok) continue;
        if (!have) {
            pq_series *s = pq_vec_new_try(ev, c->out, 16);
            if (!s) return od_err_set(err, ev->try_code, "%s", ev->try_code == OD_NOMEM ? "promql: out of memory"
                                      : "query processing would load too many samples into memory in query execution");
            s->lbl = *lbl;
            s->drop_name = c->keep ? drop_name : 1;
            oi = c->out->ns - 1;
            have = 1;
            if (!c->warn_name && (c->id == F_RATE || c->id == F_INCREASE || c->id == F_IRATE)) {
                const char *nm = metric_name(lbl);
                if (!drop_name && !ends_with(nm, "_total") && !ends_with(nm, "_sum") && !ends_with(nm, "_count") && !ends_with(nm, "_bucket"))
                    c->warn_name = nm;
            }
        }
        c->out->s[oi].v[i] = r;
        c->out->s[oi].ok[i] = 1;
    }
    return OD_OK;
}

static int rfn_consume(void *cctx, const pq_labels *lbl, const int64_t *t, const double *v, size_t n, od_err *err)
{
    return rfn_series(cctx, lbl, 0, t, v, n, err);
}

static pq_val eval_range_fn(pq_ev *ev, const pq_node *n, int id)
{
    int mi = (id == F_QUANTILE_OVER_TIME) ? 1 : 0;
    double *p0 = NULL, *p1 = NULL;
    if (id == F_QUANTILE_OVER_TIME) p0 = pq_eval(ev, n->args[0]).scalar;
    if (id == F_PREDICT_LINEAR) p0 = pq_eval(ev, n->args[1]).scalar;
    if (id == F_DOUBLE_EXPONENTIAL_SMOOTHING || id == F_HOLT_WINTERS) {
        p0 = pq_eval(ev, n->args[1]).scalar;
        p1 = pq_eval(ev, n->args[2]).scalar;
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (!(p0[i] > 0 && p0[i] < 1)) pq_fail(ev, OD_BADREQ, "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", p0[i]);
            if (!(p1[i] > 0 && p1[i] < 1)) pq_fail(ev, OD_BADREQ, "invalid trend factor. Expected: 0 < tf < 1, got: %f", p1[i]);
        }
    }
    if (id == F_QUANTILE_OVER_TIME) warn_q(ev, n->args[0]->pos, p0);
    pq_val out = vec_out();
    rfn_ctx c = {ev, id, keeps_name(id), NULL, 0, p0, p1, &out, NULL};
    const pq_node *a = unparen(n->args[mi]);
    od_err err;
    if (a->kind == PQ_MSEL && id != F_QUANTILE_OVER_TIME && id != F_MAD_OVER_TIME) {
        /* stream: each series' points go from the source straight into the function */
        int64_t minr, maxr;
        c.ref = pq_make_refs(ev, a, &minr, &maxr);
        c.range = a->range_ms;
        pq_fetch_consume(ev, a, minr - a->range_ms + 1, maxr, 0, rfn_consume, &c);
        pq_vec_sort(&out);
    } else {
        pq_val m = pq_eval(ev, n->args[mi]);
        c.ref = m.ref;
        c.range = m.range_ms;
        for (size_t k = 0; k < m.nrs; k++) {
            pq_check(ev);
            pq_rseries *r = &m.rs[k];
            if (rfn_series(&c, &r->lbl, r->drop_name, r->t, r->v, r->n, &err) != OD_OK) pq_fail(ev, err.code, "%s", err.msg);
        }
    }
    pq_check(ev);
    if (c.warn_name)
        pq_warn(ev, n->args[mi]->pos, "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"%s\"", c.warn_name);
    return out;
}

/* Labels for absent()/absent_over_time(): the equality matchers of a selector argument. */
static pq_labels absent_labels(pq_ev *ev, const pq_node *a)
{
    pq_labels l = {NULL, 0};
    a = unparen(a);
    l.v = pq_alloc(ev, (a->nmatchers + 1) * sizeof *l.v);
    if (a->kind != PQ_VSEL && a->kind != PQ_MSEL) return l;
    for (size_t i = 0; i < a->nmatchers; i++) {
        const od_promql_matcher *m = &a->matchers[i];
        if (m->type != OD_PROMQL_MATCH_EQ || strcmp(m->name, "__name__") == 0) continue;
        int dup = 0;
        for (size_t j = 0; j < a->nmatchers; j++)
            if (j != i && strcmp(a->matchers[j].name, m->name) == 0) dup = 1;
        if (dup) continue;
        l = pq_lbl_set(ev, &l, m->name, m->value);
    }
    return l;
}

static pq_val eval_absent(pq_ev *ev, const pq_node *n, int over_time)
{
    pq_val in = pq_eval(ev, n->args[0]);
    pq_val out = vec_out();
    pq_series *s = pq_vec_new(ev, &out, 1);
    s->lbl = absent_labels(ev, n->args[0]);
    s->drop_name = 1;
    int any = 0;
    for (size_t i = 0; i < ev->nsteps; i++) {
        int present = 0;
        if (over_time) {
            for (size_t k = 0; k < in.nrs && !present; k++) {
                pq_rseries *r = &in.rs[k];
                int64_t ref = in.ref[i];
                /* binary search for a point in (ref - range, ref] */
                size_t lo = 0, hi = r->n;
                while (lo < hi) {
                    size_t mid = (lo + hi) / 2;
                    if (r->t[mid] <= ref - in.range_ms) lo = mid + 1;
                    else hi = mid;
                }
                if (lo < r->n && r->t[lo] <= ref) present = 1;
            }
        } else {
            for (size_t k = 0; k < in.ns && !present; k++) present = in.s[k].ok[i];
        }
        if (!present) {
            s->v[i] = 1;
            s->ok[i] = 1;
            any = 1;
        }
    }
    if (!any) out.ns = 0;
    return out;
}

/* ---------------- instant-vector math ---------------- */

static double date_part(int id, double v)
{
    if (isnan(v) || isinf(v)) return NAN;
    time_t t = (time_t)(int64_t)v;
    struct tm tm;
    gmtime_r(&t, &tm);
    switch (id) {
    case F_DAYS_IN_MONTH: {
        static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int y = tm.tm_year + 1900;
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return dm[tm.tm_mon] + (tm.tm_mon == 1 && leap);
    }
    case F_DAY_OF_MONTH: return tm.tm_mday;
    case F_DAY_OF_WEEK: return tm.tm_wday;
    case F_DAY_OF_YEAR: return tm.tm_yday + 1;
    case F_HOUR: return tm.tm_hour;
    case F_MINUTE: return tm.tm_min;
    case F_MONTH: return tm.tm_mon + 1;
    case F_YEAR: return tm.tm_year + 1900;
    }
    return NAN;
}

static double math_fn(int id, double x, double a, double b)
{
    switch (id) {
    case F_ABS: return fabs(x);
    case F_CEIL: return ceil(x);
    case F_FLOOR: return floor(x);
    case F_EXP: return exp(x);
    case F_SQRT: return sqrt(x);
    case F_LN: return log(x);
    case F_LOG2: return log2(x);
    case F_LOG10: return log10(x);
    case F_SIN: return sin(x);
    case F_COS: return cos(x);
    case F_TAN: return tan(x);
    case F_ASIN: return asin(x);
    case F_ACOS: return acos(x);
    case F_ATAN: return atan(x);
    case F_SINH: return sinh(x);
    case F_COSH: return cosh(x);
    case F_TANH: return tanh(x);
    case F_ASINH: return asinh(x);
    case F_ACOSH: return acosh(x);
    case F_ATANH: return atanh(x);
    case F_DEG: return x * 180 / M_PI;
    case F_RAD: return x * M_PI / 180;
    case F_SGN: return x > 0 ? 1 : x < 0 ? -1 : x;
    case F_CLAMP: return fmax(a, fmin(b, x));
    case F_CLAMP_MAX: return fmin(a, x) != fmin(a, x) ? NAN : (isnan(x) ? x : fmin(a, x));
    case F_CLAMP_MIN: return isnan(x) ? x : fmax(a, x);
    case F_ROUND: {
        double inv = 1.0 / a;
        return floor(x * inv + 0.5) / inv;
    }
    default: return date_part(id, x);
    }
}

static pq_val eval_map(pq_ev *ev, const pq_node *n, int id)
{
    double *a = NULL, *b = NULL;
    if (id == F_CLAMP) { a = pq_eval(ev, n->args[1]).scalar; b = pq_eval(ev, n->args[2]).scalar; }
    if (id == F_CLAMP_MAX || id == F_CLAMP_MIN) a = pq_eval(ev, n->args[1]).scalar;
    if (id == F_ROUND && n->nargs > 1) a = pq_eval(ev, n->args[1]).scalar;
    pq_val in;
    int date = id == F_DAYS_IN_MONTH || id == F_DAY_OF_MONTH || id == F_DAY_OF_WEEK || id == F_DAY_OF_YEAR ||
               id == F_HOUR || id == F_MINUTE || id == F_MONTH || id == F_YEAR;
    if (date && n->nargs == 0) {
        in = vec_out();
        pq_series *s = pq_vec_new(ev, &in, 1);
        s->lbl.v = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            s->v[i] = (double)pq_step_t(ev, i) / 1000.0;
            s->ok[i] = 1;
        }
    } else {
        in = pq_eval(ev, n->args[0]);
    }
    pq_val out = vec_out();
    for (size_t k = 0; k < in.ns; k++) {
        pq_series *s = &in.s[k];
        pq_series *o = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (!s->ok[i]) continue;
            double av = a ? a[i] : 1, bv = b ? b[i] : 0;
            if (id == F_CLAMP && bv < av) continue;
            if (!o) {
                o = pq_vec_new(ev, &out, in.ns);
                o->lbl = s->lbl;
                o->drop_name = 1;
            }
            o->v[i] = math_fn(id, s->v[i], av, bv);
            o->ok[i] = 1;
        }
    }
    return out;
}

/* ---------------- labels ---------------- */

static int valid_label_name(const char *s)
{
    if (!*s) return 0;
    /* UTF-8 label names are valid in Prometheus 3; reject only invalid UTF-8 */
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) { p++; continue; }
        int n = (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0) return 0;
        for (int i = 1; i <= n; i++)
            if ((p[i] & 0xC0) != 0x80) return 0;
        p += n + 1;
    }
    return 1;
}

/* Go regexp.Expand for templates like "$1", "${1}", "$name", "$$". */
static char *expand(pq_ev *ev, const char *tpl, pcre2_code *re, pcre2_match_data *md, const char *subj)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t nc = pcre2_get_ovector_count(md);
    od_buf b = {0};
    for (const char *p = tpl; *p;) {
        if (*p != '$') { od_buf_append_u8(&b, (uint8_t)*p++); continue; }
        p++;
        if (*p == '$') { od_buf_append_u8(&b, '$'); p++; continue; }
        const char *ns, *ne;
        if (*p == '{') {
            ns = p + 1;
            ne = strchr(ns, '}');
            if (!ne || ne == ns) { od_buf_append_u8(&b, '$'); continue; }
            p = ne + 1;
        } else {
            ns = p;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            ne = p;
            if (ne == ns) { od_buf_append_u8(&b, '$'); continue; }
        }
        int num = 1;
        for (const char *q = ns; q < ne; q++)
            if (!isdigit((unsigned char)*q)) num = 0;
        long g = -1;
        if (num) g = strtol(ns, NULL, 10);
        else {
            char name[128];
            size_t len = (size_t)(ne - ns) < sizeof name - 1 ? (size_t)(ne - ns) : sizeof name - 1;
            memcpy(name, ns, len);
            name[len] = 0;
            int r = pcre2_substring_number_from_name(re, (PCRE2_SPTR)name);
            if (r > 0) g = r;
        }
        if (g >= 0 && (uint32_t)g < nc && ov[2 * g] != PCRE2_UNSET)
            od_buf_append(&b, subj + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
    }
    if (od_buf_cstr(&b) != OD_OK) { od_buf_free(&b); pq_fail(ev, OD_NOMEM, "promql: out of memory"); }
    char *r = pq_strdup(ev, b.data ? (char *)b.data : "");
    od_buf_free(&b);
    return r;
}

static pq_val eval_label_replace(pq_ev *ev, const pq_node *n)
{
    pq_val in = pq_eval(ev, n->args[0]);
    const char *dst = pq_eval(ev, n->args[1]).str, *repl = pq_eval(ev, n->args[2]).str;
    const char *src = pq_eval(ev, n->args[3]).str, *rx = pq_eval(ev, n->args[4]).str;
    size_t pl = strlen(rx) + 16;
    char *pat = pq_alloc(ev, pl);
    snprintf(pat, pl, "^(?s:%s)$", rx);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
    if (!re) pq_fail(ev, OD_BADREQ, "invalid regular expression in label_replace(): %s", rx);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) { pcre2_code_free(re); pq_fail(ev, OD_NOMEM, "promql: out of memory"); }
    if (!valid_label_name(dst)) {
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        pq_fail(ev, OD_BADREQ, "invalid destination label name in label_replace(): %s", dst);
    }
    pq_val out = vec_out();
    for (size_t k = 0; k < in.ns; k++) {
        pq_series *s = &in.s[k];
        pq_series *o = pq_vec_new(ev, &out, in.ns);
        *o = *s;
        const char *sv = pq_lbl_get(&s->lbl, src);
        if (!sv) sv = "";
        int rc = pcre2_match(re, (PCRE2_SPTR)sv, strlen(sv), 0, 0, md, NULL);
        if (rc >= 0) {
            char *res = expand(ev, repl, re, md, sv);
            o->lbl = pq_lbl_set(ev, &s->lbl, pq_strdup(ev, dst), res);
            if (strcmp(dst, "__name__") == 0 && *res) o->drop_name = 0;
        }
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return out;
}

static pq_val eval_label_join(pq_ev *ev, const pq_node *n)
{
    pq_val in = pq_eval(ev, n->args[0]);
    const char *dst = pq_eval(ev, n->args[1]).str, *sep = pq_eval(ev, n->args[2]).str;
    const char **srcs = pq_alloc(ev, n->nargs * sizeof *srcs);
    if (!valid_label_name(dst)) pq_fail(ev, OD_BADREQ, "invalid destination label name in label_join(): %s", dst);
    for (size_t a = 3; a < n->nargs; a++) {
        srcs[a] = pq_eval(ev, n->args[a]).str;
        if (!valid_label_name(srcs[a])) pq_fail(ev, OD_BADREQ, "invalid source label name in label_join(): %s", srcs[a]);
    }
    pq_val out = vec_out();
    for (size_t k = 0; k < in.ns; k++) {
        pq_series *s = &in.s[k];
        pq_series *o = pq_vec_new(ev, &out, in.ns);
        *o = *s;
        od_buf b = {0};
        for (size_t a = 3; a < n->nargs; a++) {
            const char *v = pq_lbl_get(&s->lbl, srcs[a]);
            if (a > 3) od_buf_append_str(&b, sep);
            if (v) od_buf_append_str(&b, v);
        }
        if (od_buf_cstr(&b) != OD_OK) { od_buf_free(&b); pq_fail(ev, OD_NOMEM, "promql: out of memory"); }
        char *res = pq_strdup(ev, b.data ? (char *)b.data : "");
        od_buf_free(&b);
        o->lbl = pq_lbl_set(ev, &s->lbl, pq_strdup(ev, dst), res);
        if (strcmp(dst, "__name__") == 0 && *res) o->drop_name = 0;
    }
    return out;
}

/* ---------------- sorting ---------------- */

typedef struct sortctx {
    pq_series *s;
    const char **names; /* sort_by_label: the labels, in order */
    size_t nnames;
    int desc;
    size_t idx;
} sortitem;

static int natcmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            const char *a0 = a, *b0 = b;
            while (*a0 == '0') a0++;
            while (*b0 == '0') b0++;
            const char *ae = a0, *be = b0;
            while (isdigit((unsigned char)*ae)) ae++;
            while (isdigit((unsigned char)*be)) be++;
            if (ae - a0 != be - b0) return (ae - a0) < (be - b0) ? -1 : 1;
            int c = strncmp(a0, b0, (size_t)(ae - a0));
            if (c) return c;
            a = ae;
            b = be;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int cmp_sort_value(const void *x, const void *y)
{
    const sortitem *a = x, *b = y;
    double va = a->s->v[0], vb = b->s->v[0];
    int r;
    if (isnan(va) || isnan(vb)) r = isnan(va) && isnan(vb) ? 0 : isnan(va) ? 1 : -1; /* NaN last either way */
    else {
        r = va < vb ? -1 : va > vb;
        if (a->desc) r = -r;
    }
    if (r == 0) r = a->idx < b->idx ? -1 : 1;
    return r;
}

static int cmp_sort_label(const void *x, const void *y)
{
    const sortitem *a = x, *b = y;
    for (size_t i = 0; i < a->nnames; i++) {
        const char *la = pq_lbl_get(&a->s->lbl, a->names[i]), *lb = pq_lbl_get(&b->s->lbl, a->names[i]);
        int c = natcmp(la ? la : "", lb ? lb : "");
        if (c) return a->desc ? -c : c;
    }
    int c = pq_lbl_cmp(&a->s->lbl, &b->s->lbl);
    if (c) return a->desc ? -c : c;
    return a->idx < b->idx ? -1 : 1;
}

static pq_val eval_sort(pq_ev *ev, const pq_node *n, int id)
{
    pq_val in = pq_eval(ev, n->args[0]);
    if (ev->is_range_query) {
        pq_warn(ev, n->pos, "PromQL warning: sort is ineffective for range queries since results are always ordered by labels");
        return in;
    }
    sortitem *it = pq_alloc(ev, (in.ns + 1) * sizeof *it);
    const char **names = pq_alloc(ev, n->nargs * sizeof *names);
    for (size_t a = 1; a < n->nargs; a++) names[a - 1] = pq_eval(ev, n->args[a]).str;
    size_t m = 0;
    for (size_t k = 0; k < in.ns; k++) {
        if (!in.s[k].ok[0]) continue;
        it[m].s = &in.s[k];
        it[m].desc = id == F_SORT_DESC || id == F_SORT_BY_LABEL_DESC;
        it[m].idx = k;
        it[m].names = names;
        it[m].nnames = n->nargs - 1;
        m++;
    }
    if (id == F_SORT || id == F_SORT_DESC) qsort(it, m, sizeof *it, cmp_sort_value);
    else qsort(it, m, sizeof *it, cmp_sort_label);
    pq_val out = vec_out();
    for (size_t k = 0; k < m; k++) {
        pq_series *o = pq_vec_new(ev, &out, m);
        *o = *it[k].s;
    }
    return out;
}

/* ---------------- classic histograms ---------------- */

typedef struct bucket {
    double ub, count;
} bucket;

static int cmp_bucket(const void *a, const void *b)
{
    double x = ((const bucket *)a)->ub, y = ((const bucket *)b)->ub;
    return x < y ? -1 : x > y;
}

static int almost_equal(double a, double b, double eps)
{
    if (a == b) return 1;
    double absum = fabs(a) + fabs(b);
    double diff = fabs(a - b);
    double minnorm = 2.2250738585072014e-308;
    if (a == 0 || b == 0 || absum < minnorm) return diff < eps * minnorm;
    return diff / fmin(absum, 1.7976931348623157e308) < eps;
}

static size_t coalesce(bucket *b, size_t n)
{
    qsort(b, n, sizeof *b, cmp_bucket);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o > 0 && b[o - 1].ub == b[i].ub) b[o - 1].count += b[i].count;
        else b[o++] = b[i];
    }
    return o;
}

static double bucket_quantile(double q, bucket *b, size_t n, int *forced)
{
    *forced = 0;
    if (isnan(q)) return NAN;
    if (q < 0) return -INFINITY;
    if (q > 1) return INFINITY;
    n = coalesce(b, n);
    if (n == 0 || !isinf(b[n - 1].ub) || b[n - 1].ub < 0) return NAN;
    double prev = b[0].count;
    for (size_t i = 1; i < n; i++) {
        double cur = b[i].count;
        if (cur == prev) continue;
        if (almost_equal(prev, cur, 1e-12)) { b[i].count = prev; continue; }
        if (cur < prev) { b[i].count = prev; *forced = 1; continue; }
        prev = cur;
    }
    if (n < 2) return NAN;
    double obs = b[n - 1].count;
    if (obs == 0) return NAN;
    double rank = q * obs;
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b[mid].count >= rank) hi = mid;
        else lo = mid + 1;
    }
    size_t i = lo;
    if (i == n - 1) return b[n - 2].ub;
    if (i == 0 && b[0].ub <= 0) return b[0].ub;
    double start = 0, end = b[i].ub, count = b[i].count;
    if (i > 0) {
        start = b[i - 1].ub;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    return start + (end - start) * (rank / count);
}

static double bucket_fraction(double lower, double upper, bucket *b, size_t n)
{
    n = coalesce(b, n);
    if (n == 0 || !isinf(b[n - 1].ub) || b[n - 1].ub < 0) return NAN;
    double count = b[n - 1].count;
    if (count == 0 || isnan(lower) || isnan(upper)) return NAN;
    if (lower >= upper) return 0;
    double rank = 0, lr = 0, ur = 0;
    int ls = 0, us = 0;
    for (size_t i = 0; i < n; i++) {
        double lb = i > 0 ? b[i - 1].ub : (b[0].ub > 0 ? 0 : -INFINITY);
        double ubv = b[i].ub;
        if (!ls && lb >= lower) { lr = rank; ls = 1; }
        if (!us && lb >= upper) { ur = rank; us = 1; }
        if (ls && us) break;
        if (!ls && lb < lower && ubv > lower) {
            lr = isinf(lb) ? b[i].count : isinf(ubv) ? rank : rank + (b[i].count - rank) * (lower - lb) / (ubv - lb);
            ls = 1;
        }
        if (!us && lb < upper && ubv > upper) {
            ur = isinf(lb) ? b[i].count : isinf(ubv) ? rank : rank + (b[i].count - rank) * (upper - lb) / (ubv - lb);
            us = 1;
        }
        if (ls && us) break;
        rank = b[i].count;
    }
    if (!ls || lr > count) lr = count;
    if (!us || ur > count) ur = count;
    return (ur - lr) / count;
}

/* Prometheus prints these quantile labels with at least one decimal: 0.0, 0.25, 1.0 */
static char *q_label_value(pq_ev *ev, double q)
{
    char b[64];
    if (isnan(q)) return pq_strdup(ev, "NaN");
    if (isinf(q)) return pq_strdup(ev, q > 0 ? "+Inf" : "-Inf");
    if (q == floor(q) && fabs(q) < 1e15) snprintf(b, sizeof b, "%.1f", q);
    else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(b, sizeof b, "%.*g", prec, q);
            if (strtod(b, NULL) == q) break;
        }
    }
    return pq_strdup(ev, b);
}

static void warn_q(pq_ev *ev, int pos, const double *q)
{
    for (size_t i = 0; i < ev->nsteps; i++)
        if (!(q[i] >= 0 && q[i] <= 1)) {
            if (isnan(q[i])) pq_warn(ev, pos, "PromQL warning: quantile value should be between 0 and 1, got NaN");
            else pq_warn(ev, pos, "PromQL warning: quantile value should be between 0 and 1, got %g", q[i]);
            break;
        }
}

static pq_val eval_histogram(pq_ev *ev, const pq_node *n, int id)
{
    const pq_node *varg;
    size_t nq = 1;
    double **qs;
    double *q2 = NULL;
    const char *qlabel = NULL;
    char **qvals = NULL;
    if (id == F_HISTOGRAM_QUANTILE) {
        qs = pq_alloc(ev, sizeof *qs);
        qs[0] = pq_eval(ev, n->args[0]).scalar;
        varg = n->args[1];
        warn_q(ev, n->args[0]->pos, qs[0]);
    } else if (id == F_HISTOGRAM_QUANTILES) {
        varg = n->args[0];
        qlabel = pq_eval(ev, n->args[1]).str;
        nq = n->nargs - 2;
        qs = pq_alloc(ev, nq * sizeof *qs);
        qvals = pq_alloc(ev, nq * sizeof *qvals);
        for (size_t k = 0; k < nq; k++) {
            qs[k] = pq_eval(ev, n->args[k + 2]).scalar;
            warn_q(ev, n->args[k + 2]->pos, qs[k]);
            qvals[k] = q_label_value(ev, qs[k][0]);
        }
    } else {
        qs = pq_alloc(ev, sizeof *qs);
        qs[0] = pq_eval(ev, n->args[0]).scalar;
        q2 = pq_eval(ev, n->args[1]).scalar;
        varg = n->args[2];
    }
    pq_val in = pq_eval(ev, varg);
    static const char *le[] = {"le"};
    pq_map m;
    pq_map_init(ev, &m, in.ns);
    size_t *grp = pq_alloc(ev, (in.ns + 1) * sizeof *grp);
    double *ub = pq_alloc(ev, (in.ns + 1) * sizeof *ub);
    size_t ng = 0;
    size_t *gfirst = pq_alloc(ev, (in.ns + 1) * sizeof *gfirst);
    for (size_t k = 0; k < in.ns; k++) {
        const char *lv = pq_lbl_get(&in.s[k].lbl, "le");
        char *end = NULL;
        double u = lv ? strtod(lv, &end) : NAN;
        if (!lv || !*lv || (end && *end)) {
            pq_warn(ev, varg->pos, "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"%s\" for metric name \"%s\"",
                    lv ? lv : "", pq_lbl_get(&in.s[k].lbl, "__name__") ? pq_lbl_get(&in.s[k].lbl, "__name__") : "");
            grp[k] = (size_t)-1;
            continue;
        }
        ub[k] = u;
        size_t len;
        /* the (not yet dropped) name partitions the groups, as in Prometheus 3 */
        char *key = pq_sig_named(ev, &in.s[k].lbl, le, 1, 0, &len);
        grp[k] = pq_map_get_or_put(ev, &m, key, len, ng);
        if (grp[k] == ng) gfirst[ng++] = k;
    }
    if (qlabel)
        for (size_t g = 0; g < ng; g++)
            if (pq_lbl_get(&in.s[gfirst[g]].lbl, qlabel))
                pq_fail(ev, OD_BADREQ, "vector cannot contain metrics with the same labelset");
    size_t *cnt = pq_alloc(ev, (ng + 1) * sizeof *cnt);
    size_t *off = pq_alloc(ev, (ng + 1) * sizeof *off);
    for (size_t k = 0; k < in.ns; k++)
        if (grp[k] != (size_t)-1) cnt[grp[k]]++;
    for (size_t g = 1; g <= ng; g++) off[g] = off[g - 1] + cnt[g - 1];
    size_t *members = pq_alloc(ev, (in.ns + 1) * sizeof *members);
    size_t *fill = pq_alloc(ev, (ng + 1) * sizeof *fill);
    for (size_t k = 0; k < in.ns; k++)
        if (grp[k] != (size_t)-1) members[off[grp[k]] + fill[grp[k]]++] = k;
    bucket *bk = pq_alloc(ev, (in.ns + 1) * sizeof *bk);
    pq_val out = vec_out();
    for (size_t qi = 0; qi < nq; qi++) {
        double *q = qs[qi];
        for (size_t g = 0; g < ng; g++) {
            pq_series *o = NULL;
            size_t oi = 0;
            for (size_t i = 0; i < ev->nsteps; i++) {
                pq_check(ev);
                size_t nb = 0;
                for (size_t j = 0; j < cnt[g]; j++) {
                    size_t k = members[off[g] + j];
                    if (!in.s[k].ok[i]) continue;
                    bk[nb].ub = ub[k];
                    bk[nb].count = in.s[k].v[i];
                    nb++;
                }
                if (!nb) continue;
                double v;
                if (id != F_HISTOGRAM_FRACTION) {
                    int forced;
                    v = bucket_quantile(q[i], bk, nb, &forced);
                    if (forced)
                        pq_warn(ev, varg->pos, "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"%s\"",
                                pq_lbl_get(&in.s[gfirst[g]].lbl, "__name__") ? pq_lbl_get(&in.s[gfirst[g]].lbl, "__name__") : "");
                } else {
                    v = bucket_fraction(q[i], q2[i], bk, nb);
                }
                if (!o) {
                    o = pq_vec_new(ev, &out, ng);
                    o->lbl = pq_lbl_without(ev, &in.s[gfirst[g]].lbl, le, 1, 0);
                    if (qlabel) o->lbl = pq_lbl_set(ev, &o->lbl, qlabel, qvals[qi]);
                    o->drop_name = 1;
                    oi = out.ns - 1;
                }
                out.s[oi].v[i] = v;
                out.s[oi].ok[i] = 1;
            }
        }
    }
    return out;
}

/* ---------------- dispatch ---------------- */

pq_val pq_eval_call(pq_ev *ev, const pq_node *n)
{
    int id = n->func->id;
    switch (id) {
    case F_RATE: case F_INCREASE: case F_DELTA: case F_IRATE: case F_IDELTA: case F_SUM_OVER_TIME:
    case F_AVG_OVER_TIME: case F_COUNT_OVER_TIME: case F_PRESENT_OVER_TIME: case F_MIN_OVER_TIME:
    case F_MAX_OVER_TIME: case F_LAST_OVER_TIME: case F_FIRST_OVER_TIME: case F_STDDEV_OVER_TIME:
    case F_STDVAR_OVER_TIME: case F_QUANTILE_OVER_TIME: case F_MAD_OVER_TIME: case F_CHANGES:
    case F_RESETS: case F_DERIV: case F_PREDICT_LINEAR: case F_DOUBLE_EXPONENTIAL_SMOOTHING:
    case F_HOLT_WINTERS: case F_TS_OF_MAX_OVER_TIME: case F_TS_OF_MIN_OVER_TIME:
    case F_TS_OF_LAST_OVER_TIME: case F_TS_OF_FIRST_OVER_TIME:
        return eval_range_fn(ev, n, id);
    case F_ABSENT: return eval_absent(ev, n, 0);
    case F_ABSENT_OVER_TIME: return eval_absent(ev, n, 1);
    case F_LABEL_REPLACE: return eval_label_replace(ev, n);
    case F_LABEL_JOIN: return eval_label_join(ev, n);
    case F_SORT: case F_SORT_DESC: case F_SORT_BY_LABEL: case F_SORT_BY_LABEL_DESC: return eval_sort(ev, n, id);
    case F_HISTOGRAM_QUANTILE: case F_HISTOGRAM_FRACTION: case F_HISTOGRAM_QUANTILES: return eval_histogram(ev, n, id);
    case F_HISTOGRAM_AVG: case F_HISTOGRAM_COUNT: case F_HISTOGRAM_SUM: case F_HISTOGRAM_STDDEV:
    case F_HISTOGRAM_STDVAR:
        (void)pq_eval(ev, n->args[0]); /* native histograms only: nothing for float series */
        return vec_out();
    case F_TIME: case F_PI: case F_STEP: case F_RANGE: case F_START: case F_END: {
        pq_val o = scalar_out(ev);
        for (size_t i = 0; i < ev->nsteps; i++) {
            switch (id) {
            case F_TIME: o.scalar[i] = (double)pq_step_t(ev, i) / 1000.0; break;
            case F_PI: o.scalar[i] = M_PI; break;
            case F_STEP: o.scalar[i] = ev->is_range_query ? (double)ev->step / 1000.0 : 0; break;
            case F_RANGE: o.scalar[i] = (double)(ev->qend - ev->qstart) / 1000.0; break;
            case F_START: o.scalar[i] = (double)ev->qstart / 1000.0; break;
            case F_END: o.scalar[i] = (double)ev->qend / 1000.0; break;
            }
        }
        return o;
    }
    case F_MIN_OF: case F_MAX_OF: {
        pq_val a = pq_eval(ev, n->args[0]), b = pq_eval(ev, n->args[1]);
        pq_val o = scalar_out(ev);
        for (size_t i = 0; i < ev->nsteps; i++) {
            double x = a.scalar[i], y = b.scalar[i];
            o.scalar[i] = (isnan(x) || isnan(y)) ? NAN : id == F_MIN_OF ? fmin(x, y) : fmax(x, y);
        }
        return o;
    }
    case F_SCALAR: {
        pq_val in = pq_eval(ev, n->args[0]);
        pq_val o = scalar_out(ev);
        for (size_t i = 0; i < ev->nsteps; i++) {
            int c = 0;
            double v = NAN;
            for (size_t k = 0; k < in.ns; k++)
                if (in.s[k].ok[i]) { c++; v = in.s[k].v[i]; }
            o.scalar[i] = c == 1 ? v : NAN;
        }
        return o;
    }
    case F_VECTOR: {
        pq_val in = pq_eval(ev, n->args[0]);
        pq_val o = vec_out();
        pq_series *s = pq_vec_new(ev, &o, 1);
        for (size_t i = 0; i < ev->nsteps; i++) {
            s->v[i] = in.scalar[i];
            s->ok[i] = 1;
        }
        return o;
    }
    case F_TIMESTAMP: {
        const pq_node *a = n->args[0];
        pq_val in;
        if (a->kind == PQ_VSEL) in = pq_eval_vsel(ev, a, 1);
        else {
            in = pq_eval(ev, a);
            for (size_t k = 0; k < in.ns; k++)
                for (size_t i = 0; i < ev->nsteps; i++) in.s[k].v[i] = (double)pq_step_t(ev, i) / 1000.0;
        }
        for (size_t k = 0; k < in.ns; k++) in.s[k].drop_name = 1;
        return in;
    }
    default:
        return eval_map(ev, n, id);
    }
}
