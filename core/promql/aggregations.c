/*
 * aggregations.c — PromQL aggregation operators: sum avg min max count group stddev stdvar
 * topk bottomk quantile count_values limitk limit_ratio, with by/without.
 *
 * How it works: the group of every input series is computed once (labels do not change between
 * steps), then each step accumulates the present series of each group. Sums use Kahan/Neumaier
 * compensation and avg falls back to an incremental mean on overflow, as Prometheus does.
 * topk/bottomk/limitk/limit_ratio keep the input series' labels; for instant queries their
 * output order is the order Prometheus returns (by group, then by value).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql_int.h"

double pq_quantile(double q, double *v, size_t n);

static void kahan_inc(double inc, double *sum, double *c)
{
    double t = *sum + inc;
    if (isinf(t)) *c = 0;
    else if (fabs(*sum) >= fabs(inc)) *c += (*sum - t) + inc;
    else *c += (inc - t) + *sum;
    *sum = t;
}

static const char *agg_names[] = {"", "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk",
                                  "bottomk", "quantile", "count_values", "limitk", "limit_ratio"};

int pq_agg_lookup(const char *name)
{
    for (int i = 1; i < (int)(sizeof agg_names / sizeof agg_names[0]); i++)
        if (strcasecmp(name, agg_names[i]) == 0) return i;
    return 0;
}

const char *pq_agg_name(pq_agg_op op) { return agg_names[op]; }

/* xxhash64 of the label set as Prometheus' labels.Hash computes it (name 0xff value 0xff ...),
 * used by limit_ratio so that the same series are picked as in Prometheus. */
#define P1 11400714785074694791ULL
#define P2 14029467366897019727ULL
#define P3 1609587929392839161ULL
#define P4 9650029242287828579ULL
#define P5 2870177450012600261ULL
static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t xround(uint64_t acc, uint64_t in) { acc += in * P2; acc = rotl(acc, 31); return acc * P1; }
static uint64_t xmerge(uint64_t acc, uint64_t v) { acc ^= xround(0, v); return acc * P1 + P4; }

static uint64_t xxh64(const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = (uint64_t)0 - P1;
        while (p + 32 <= end) {
            v1 = xround(v1, rd64(p)); v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16)); v4 = xround(v4, rd64(p + 24));
            p += 32;
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = xmerge(h, v1); h = xmerge(h, v2); h = xmerge(h, v3); h = xmerge(h, v4);
    } else {
        h = P5;
    }
    h += (uint64_t)n;
    while (p + 8 <= end) { h ^= xround(0, rd64(p)); h = rotl(h, 27) * P1 + P4; p += 8; }
    if (p + 4 <= end) { h ^= (uint64_t)rd32(p) * P1; h = rotl(h, 23) * P2 + P3; p += 4; }
    while (p < end) { h ^= (uint64_t)(*p) * P5; h = rotl(h, 11) * P1; p++; }
    h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
    return h;
}

static uint64_t labels_hash(pq_ev *ev, const pq_labels *l)
{
    size_t n = 0;
    for (int i = 0; i < l->n; i++) n += strlen(l->v[i].name) + strlen(l->v[i].value) + 2;
    uint8_t *b = pq_alloc(ev, n + 1);
    size_t o = 0;
    for (int i = 0; i < l->n; i++) {
        size_t a = strlen(l->v[i].name), c = strlen(l->v[i].value);
        memcpy(b + o, l->v[i].name, a); o += a; b[o++] = 0xff;
        memcpy(b + o, l->v[i].value, c); o += c; b[o++] = 0xff;
    }
    return xxh64(b, o);
}

/* Go's strconv.FormatFloat(f, 'f', -1, 64): shortest round-trip digits, no exponent. */
static void format_float_f(double v, char *out, size_t cap)
{
    if (isnan(v)) { snprintf(out, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(out, cap, v > 0 ? "+Inf" : "-Inf"); return; }
    char tmp[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    /* tmp = [-]d.ddde[+-]xx */
    char digits[32];
    size_t nd = 0;
    const char *p = tmp;
    int neg = 0;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    size_t o = 0;
    if (neg && o < cap) out[o++] = '-';
    int point = exp + 1; /* digits before the decimal point */
    if (point <= 0) {
        o += (size_t)snprintf(out + o, cap - o, "0.");
        for (int i = 0; i < -point && o < cap - 1; i++) out[o++] = '0';
        for (size_t i = 0; i < nd && o < cap - 1; i++) out[o++] = digits[i];
    } else {
        for (int i = 0; i < point && o < cap - 1; i++) out[o++] = (size_t)i < nd ? digits[i] : '0';
        if ((size_t)point < nd) {
            out[o++] = '.';
            for (size_t i = (size_t)point; i < nd && o < cap - 1; i++) out[o++] = digits[i];
        }
    }
    out[o] = 0;
}

/* Go's %q of a string: invalid UTF-8 bytes as \xNN. */
static char *go_quote(pq_ev *ev, const char *s)
{
    size_t n = strlen(s);
    char *o = pq_alloc(ev, n * 4 + 3);
    size_t k = 0;
    o[k++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        if (*c == '"' || *c == '\\') { o[k++] = '\\'; o[k++] = (char)*c++; continue; }
        if (*c < 0x20) { k += (size_t)sprintf(o + k, "\\x%02x", *c++); continue; }
        if (*c < 0x80) { o[k++] = (char)*c++; continue; }
        int len = (*c & 0xE0) == 0xC0 ? 1 : (*c & 0xF0) == 0xE0 ? 2 : (*c & 0xF8) == 0xF0 ? 3 : -1;
        int bad = len < 0;
        for (int i = 1; !bad && i <= len; i++)
            if ((c[i] & 0xC0) != 0x80) bad = 1;
        if (bad) { k += (size_t)sprintf(o + k, "\\x%02x", *c++); continue; }
        for (int i = 0; i <= len; i++) o[k++] = (char)*c++;
    }
    o[k++] = '"';
    o[k] = 0;
    return o;
}

typedef struct grp {
    pq_labels lbl;
    int drop_name; /* any member's name is to be dropped */
    size_t *members;
    size_t n, cap;
} grp;

typedef struct kitem {
    size_t k;
    double v;
    int desc;
} kitem;

static int cmp_kitem(const void *a, const void *b)
{
    const kitem *x = a, *y = b;
    /* topk: larger first, NaN last; bottomk: smaller first, NaN last */
    int xn = isnan(x->v), yn = isnan(y->v);
    if (xn || yn) {
        if (xn && yn) return x->k < y->k ? -1 : 1;
        return xn ? 1 : -1;
    }
    if (x->v != y->v) return x->desc ? (x->v > y->v ? -1 : 1) : (x->v < y->v ? -1 : 1);
    return x->k < y->k ? -1 : 1;
}

pq_val pq_eval_agg(pq_ev *ev, const pq_node *n)
{
    pq_agg_op op = n->agg;
    double *param = NULL;
    const char *cv_label = NULL;
    if (n->b) {
        pq_val p = pq_eval(ev, n->b);
        if (op == PQ_AGG_COUNT_VALUES) cv_label = p.str;
        else param = p.scalar;
    }
    if (op == PQ_AGG_COUNT_VALUES && !*cv_label) pq_fail(ev, OD_BADREQ, "invalid label name \"%s\"", cv_label);
    if (op == PQ_AGG_COUNT_VALUES) {
        for (const unsigned char *c = (const unsigned char *)cv_label; *c; c++)
            if (*c >= 0x80) {
                /* must be valid UTF-8 */
                int len = (*c & 0xE0) == 0xC0 ? 1 : (*c & 0xF0) == 0xE0 ? 2 : (*c & 0xF8) == 0xF0 ? 3 : -1;
                int bad = len < 0;
                for (int i = 1; !bad && i <= len; i++)
                    if ((c[i] & 0xC0) != 0x80) bad = 1;
                if (bad) pq_fail(ev, OD_BADREQ, "invalid label name %s", go_quote(ev, cv_label));
                c += len;
            }
    }
    if (param && (op == PQ_AGG_TOPK || op == PQ_AGG_BOTTOMK || op == PQ_AGG_LIMITK)) {
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (isnan(param[i])) pq_fail(ev, OD_BADREQ, "Parameter value is NaN");
            if (param[i] > 9.2e18 || param[i] < -9.2e18)
                pq_fail(ev, OD_BADREQ, "Scalar value %g overflows int64", param[i]);
        }
    }
    if (param && op == PQ_AGG_LIMIT_RATIO) {
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (isnan(param[i])) pq_fail(ev, OD_BADREQ, "Ratio value is NaN");
            if (param[i] > 1 || param[i] < -1) {
                double c = param[i] > 1 ? 1 : -1;
                pq_warn(ev, n->b->pos, "PromQL warning: ratio value should be between -1 and 1, got %g, capping to %g", param[i], c);
                param[i] = c;
            }
        }
    }
    if (param && op == PQ_AGG_QUANTILE)
        for (size_t i = 0; i < ev->nsteps; i++)
            if (!(param[i] >= 0 && param[i] <= 1)) {
                if (isnan(param[i])) pq_warn(ev, n->b->pos, "PromQL warning: quantile value should be between 0 and 1, got NaN");
                else pq_warn(ev, n->b->pos, "PromQL warning: quantile value should be between 0 and 1, got %g", param[i]);
                break;
            }
    pq_val in = pq_eval(ev, n->a);
    /* groups */
    const char *const *gl = (const char *const *)n->grouping.v;
    size_t ngl = n->grouping.n;
    pq_map m;
    pq_map_init(ev, &m, in.ns);
    size_t *gid = pq_alloc(ev, (in.ns + 1) * sizeof *gid);
    grp *g = pq_alloc(ev, (in.ns + 1) * sizeof *g);
    size_t ng = 0;
    for (size_t k = 0; k < in.ns; k++) {
        pq_labels l = in.s[k].lbl; /* the to-be-dropped name still partitions (Prometheus 3) */
        pq_labels gl2 = n->without ? pq_lbl_without(ev, &l, gl, ngl, 1) : pq_lbl_only(ev, &l, gl, ngl);
        size_t len;
        char *key = pq_sig_named(ev, &gl2, NULL, 0, 0, &len);
        size_t id = pq_map_get_or_put(ev, &m, key, len, ng);
        if (id == ng) {
            g[ng].lbl = gl2;
            ng++;
        }
        grp *gg = &g[id];
        if (in.s[k].drop_name) gg->drop_name = 1;
        if (gg->n == gg->cap) {
            size_t c = gg->cap ? gg->cap * 2 : 4;
            size_t *v = pq_alloc(ev, c * sizeof *v);
            if (gg->n) memcpy(v, gg->members, gg->n * sizeof *v);
            gg->members = v;
            gg->cap = c;
        }
        gg->members[gg->n++] = k;
        gid[k] = id;
    }
    pq_val out;
    memset(&out, 0, sizeof out);
    out.type = OD_PROMQL_VECTOR;

    if (op == PQ_AGG_TOPK || op == PQ_AGG_BOTTOMK || op == PQ_AGG_LIMITK || op == PQ_AGG_LIMIT_RATIO) {
        size_t *oidx = pq_alloc(ev, (in.ns + 1) * sizeof *oidx); /* output index + 1 per input */
        kitem *items = pq_alloc(ev, (in.ns + 1) * sizeof *items);
        /* instant queries: emit in Prometheus order (group by group, sorted) */
        for (size_t gi = 0; gi < ng; gi++) {
            for (size_t i = 0; i < ev->nsteps; i++) {
                pq_check(ev);
                size_t ni = 0;
                for (size_t j = 0; j < g[gi].n; j++) {
                    size_t k = g[gi].members[j];
                    if (!in.s[k].ok[i]) continue;
                    items[ni].k = k;
                    items[ni].v = in.s[k].v[i];
                    ni++;
                }
                size_t take = 0;
                if (op == PQ_AGG_LIMIT_RATIO) {
                    double r = param[i];
                    size_t o = 0;
                    for (size_t j = 0; j < ni; j++) {
                        double off = (double)labels_hash(ev, &in.s[items[j].k].lbl) / 18446744073709551615.0;
                        if ((r >= 0 && off < r) || (r < 0 && off >= 1 + r)) items[o++] = items[j];
                    }
                    take = o;
                } else {
                    double kf = param[i];
                    if (kf < 1) continue;
                    take = kf >= (double)ni ? ni : (size_t)kf;
                    if (op != PQ_AGG_LIMITK) {
                        for (size_t j = 0; j < ni; j++) items[j].desc = op == PQ_AGG_TOPK;
                        qsort(items, ni, sizeof *items, cmp_kitem);
                    }
                }
                for (size_t j = 0; j < take; j++) {
                    size_t k = items[j].k;
                    if (!oidx[k]) {
                        pq_series *o = pq_vec_new(ev, &out, in.ns);
                        o->lbl = in.s[k].lbl;
                        o->drop_name = in.s[k].drop_name;
                        oidx[k] = out.ns;
                    }
                    out.s[oidx[k] - 1].v[i] = in.s[k].v[i];
                    out.s[oidx[k] - 1].ok[i] = 1;
                }
            }
        }
        return out;
    }

    if (op == PQ_AGG_COUNT_VALUES) {
        pq_map vm;
        pq_map_init(ev, &vm, 16);
        for (size_t gi = 0; gi < ng; gi++) {
            for (size_t j = 0; j < g[gi].n; j++) {
                size_t k = g[gi].members[j];
                for (size_t i = 0; i < ev->nsteps; i++) {
                    if (!in.s[k].ok[i]) continue;
                    char buf[64];
                    format_float_f(in.s[k].v[i], buf, sizeof buf);
                    size_t bl = strlen(buf);
                    char *key = pq_alloc(ev, bl + 24);
                    memcpy(key, &gi, sizeof gi);
                    memcpy(key + sizeof gi, buf, bl);
                    size_t oi = pq_map_find(&vm, key, sizeof gi + bl);
                    if (oi == (size_t)-1) {
                        pq_series *o = pq_vec_new(ev, &out, 8);
                        o->lbl = pq_lbl_set(ev, &g[gi].lbl, cv_label, pq_strdup(ev, buf));
                        oi = out.ns - 1;
                        pq_map_get_or_put(ev, &vm, key, sizeof gi + bl, oi);
                    }
                    out.s[oi].v[i] += 1;
                    out.s[oi].ok[i] = 1;
                }
            }
        }
        return out;
    }

    double *vals = pq_alloc(ev, (in.ns + 1) * sizeof *vals);
    for (size_t gi = 0; gi < ng; gi++) {
        pq_series *o = NULL;
        size_t oi = 0;
        for (size_t i = 0; i < ev->nsteps; i++) {
            pq_check(ev);
            size_t cnt = 0;
            double sum = 0, c = 0, mean = 0, mc = 0, aux = 0, ac = 0, mn = 0, mx = 0;
            int incr = 0;
            for (size_t j = 0; j < g[gi].n; j++) {
                size_t k = g[gi].members[j];
                if (!in.s[k].ok[i]) continue;
                double v = in.s[k].v[i];
                cnt++;
                switch (op) {
                case PQ_AGG_SUM:
                    kahan_inc(v, &sum, &c);
                    break;
                case PQ_AGG_AVG:
                    if (cnt == 1) { sum = v; break; }
                    if (!incr) {
                        double ns = sum, nc = c;
                        kahan_inc(v, &ns, &nc);
                        if (!isinf(ns)) { sum = ns; c = nc; break; }
                        incr = 1;
                        mean = sum / (double)(cnt - 1);
                        mc = c / (double)(cnt - 1);
                    }
                    {
                        double q = (double)(cnt - 1) / (double)cnt;
                        double m2 = q * mean, c2 = q * mc;
                        kahan_inc(v / (double)cnt, &m2, &c2);
                        mean = m2;
                        mc = c2;
                    }
                    break;
                case PQ_AGG_MIN:
                    if (cnt == 1 || v < mn || isnan(mn)) mn = v;
                    break;
                case PQ_AGG_MAX:
                    if (cnt == 1 || v > mx || isnan(mx)) mx = v;
                    break;
                case PQ_AGG_STDDEV: case PQ_AGG_STDVAR: {
                    double d = v - (mean + mc);
                    kahan_inc(d / (double)cnt, &mean, &mc);
                    kahan_inc(d * (v - (mean + mc)), &aux, &ac);
                    break;
                }
                case PQ_AGG_QUANTILE:
                    vals[cnt - 1] = v;
                    break;
                default:
                    break;
                }
            }
            if (!cnt) continue;
            double r;
            switch (op) {
            case PQ_AGG_SUM: r = sum + c; break;
            case PQ_AGG_AVG:
                if (cnt == 1) r = sum;
                else if (incr) r = mean + mc;
                else r = sum / (double)cnt + c / (double)cnt;
                break;
            case PQ_AGG_MIN: r = mn; break;
            case PQ_AGG_MAX: r = mx; break;
            case PQ_AGG_COUNT: r = (double)cnt; break;
            case PQ_AGG_GROUP: r = 1; break;
            case PQ_AGG_STDDEV: r = sqrt((aux + ac) / (double)cnt); break;
            case PQ_AGG_STDVAR: r = (aux + ac) / (double)cnt; break;
            case PQ_AGG_QUANTILE: r = pq_quantile(param[i], vals, cnt); break;
            default: r = NAN;
            }
            if (!o) {
                o = pq_vec_new(ev, &out, ng);
                o->lbl = g[gi].lbl;
                o->drop_name = g[gi].drop_name;
                oi = out.ns - 1;
            }
            out.s[oi].v[i] = r;
            out.s[oi].ok[i] = 1;
        }
    }
    return out;
}
