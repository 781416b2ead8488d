/*
 * eval.c — the PromQL evaluator core: query entry points, the per-query arena, label sets and
 * signatures, selectors (instant, range), subqueries, unary and binary operators with vector
 * matching, and the conversion of the final value into an od_promql_result.
 *
 * How it works (step-major): every node evaluates to a value covering all steps of the current
 * evaluation range at once. An instant vector is a list of series, each with one value and a
 * presence flag per step; a range vector keeps each series' raw points plus, per step, the
 * reference time `ref` of its window (ref - range, ref] (left-open, as in Prometheus 3).
 * Selectors fetch from the source once for the whole query range and walk the points with a
 * cursor per series, so the same data is never decoded twice. Subqueries evaluate their inner
 * expression once on the subquery's own step grid (aligned to multiples of the step, like
 * Prometheus) and present the result as a range vector.
 *
 * Names are dropped lazily (Prometheus 3 "delayed name removal"): operators and functions set
 * `drop_name`; the __name__ label is removed when the result is built, which is also where two
 * series ending up with the same labels at the same step become an error.
 *
 * Memory and errors: everything of one query lives in an arena freed at the end; errors longjmp
 * to the entry point (pq_fail). Limits: max samples (points held by selectors and intermediate
 * results), max series per selector, a timeout checked every few thousand operations.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "promql_int.h"

/* ---------------- stale markers ---------------- */

int od_promql_is_stale(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b == OD_PROMQL_STALE_BITS;
}

double od_promql_stale_nan(void)
{
    uint64_t b = OD_PROMQL_STALE_BITS;
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

/* ---------------- arena, errors, limits ---------------- */

static void *arena_get(pq_ev *ev, size_t n, int zero);
static void *arena_try(pq_ev *ev, size_t n) { return arena_get(ev, n, 1); }

void *pq_alloc_try(pq_ev *ev, size_t n) { return arena_get(ev, n ? n : 1, 1); }

static void *arena_get(pq_ev *ev, size_t n, int zero)
{
    n = (n + 15) & ~(size_t)15;
    pq_arena_blk *b = ev->arena;
    if (!b || b->cap - b->used < n) {
        /* blocks grow from 64 KiB to 1 MiB so that small queries stay cheap */
        size_t want = b ? (b->cap * 2 > (1u << 20) ? (1u << 20) : b->cap * 2) : (1u << 16);
        size_t cap = n > want ? n : want;
        pq_arena_blk *nb = malloc(sizeof *nb + cap + 16);
        if (!nb) return NULL;
        nb->cap = cap;
        nb->used = 0;
        if (b && n > (1u << 19)) { /* big one-off: put behind the current block */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            ev->arena = nb;
        }
        b = nb;
    }
    char *base = (char *)(b + 1);
    base += (16 - ((uintptr_t)base & 15)) & 15;
    void *p = base + b->used;
    b->used += n;
    if (zero) memset(p, 0, n);
    return p;
}

void *pq_alloc(pq_ev *ev, size_t n)
{
    void *p = arena_try(ev, n ? n : 1);
    if (!p) pq_fail(ev, OD_NOMEM, "promql: out of memory");
    return p;
}

char *pq_strdup(pq_ev *ev, const char *s)
{
    size_t n = strlen(s);
    char *d = pq_alloc(ev, n + 1);
    memcpy(d, s, n + 1);
    return d;
}

void pq_fail(pq_ev *ev, od_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    od_err_vset(ev->err, code, fmt, ap);
    va_end(ap);
    longjmp(*ev->jb, 1);
}

void pq_warn(pq_ev *ev, int pos, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (pos >= 0 && ev->qsrc) {
        int l, c;
        pq_pos_linecol(ev->qsrc, pos, &l, &c);
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, " (%d:%d)", l, c);
    }
    for (size_t i = 0; i < ev->nwarn; i++)
        if (strcmp(ev->warn[i], msg) == 0) return;
    if (ev->nwarn == ev->capwarn) {
        size_t c = ev->capwarn ? ev->capwarn * 2 : 4;
        char **v = pq_alloc(ev, c * sizeof *v);
        if (ev->nwarn) memcpy(v, ev->warn, ev->nwarn * sizeof *v);
        ev->warn = v;
        ev->capwarn = c;
    }
    ev->warn[ev->nwarn++] = pq_strdup(ev, msg);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void pq_check(pq_ev *ev)
{
    if (ev->deadline_ns && (++ev->tick & 63) == 0 && now_ns() > ev->deadline_ns)
        pq_fail(ev, OD_TIMEOUT, "query timed out in query execution");
}

static void check_now(pq_ev *ev)
{
    if (ev->deadline_ns && now_ns() > ev->deadline_ns)
        pq_fail(ev, OD_TIMEOUT, "query timed out in query execution");
}

void pq_count_samples(pq_ev *ev, uint64_t n)
{
    ev->samples += n;
    if (ev->samples > ev->opts.max_samples)
        pq_fail(ev, OD_LIMIT, "query processing would load too many samples into memory in query execution");
}

int64_t pq_step_t(const pq_ev *ev, size_t i) { return ev->start + (int64_t)i * ev->step; }

/* ---------------- labels ---------------- */

const char *pq_lbl_get(const pq_labels *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0) return l->v[i].value;
    return NULL;
}

pq_labels pq_lbl_copy(pq_ev *ev, const pq_labels *l)
{
    pq_labels r;
    r.n = l->n;
    r.v = pq_alloc(ev, sizeof *r.v * (size_t)(l->n ? l->n : 1));
    memcpy(r.v, l->v, sizeof *r.v * (size_t)l->n);
    return r;
}

static int in_list(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

pq_labels pq_lbl_without(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int drop_name)
{
    pq_labels r;
    r.v = pq_alloc(ev, sizeof *r.v * (size_t)(l->n ? l->n : 1));
    r.n = 0;
    for (int i = 0; i < l->n; i++) {
        if (drop_name && strcmp(l->v[i].name, "__name__") == 0) continue;
        if (in_list(l->v[i].name, names, n)) continue;
        r.v[r.n++] = l->v[i];
    }
    return r;
}

pq_labels pq_lbl_only(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n)
{
    pq_labels r;
    r.v = pq_alloc(ev, sizeof *r.v * (size_t)(l->n ? l->n : 1));
    r.n = 0;
    for (int i = 0; i < l->n; i++)
        if (in_list(l->v[i].name, names, n)) r.v[r.n++] = l->v[i];
    return r;
}

pq_labels pq_lbl_dropname(pq_ev *ev, const pq_labels *l)
{
    return pq_lbl_without(ev, l, NULL, 0, 1);
}

static int lbl_name_cmp(const char *a, const char *b)
{
    /* __name__ sorts first as in Prometheus' label order (it is byte order anyway: '_' < 'a'
     * is false, so use plain strcmp which Prometheus also uses). */
    return strcmp(a, b);
}

pq_labels pq_lbl_set(pq_ev *ev, const pq_labels *l, const char *name, const char *value)
{
    pq_labels r;
    r.v = pq_alloc(ev, sizeof *r.v * (size_t)(l->n + 1));
    r.n = 0;
    int done = 0;
    for (int i = 0; i < l->n; i++) {
        int c = lbl_name_cmp(l->v[i].name, name);
        if (c == 0) {
            done = 1;
            if (value && *value) r.v[r.n++] = (od_promql_label){l->v[i].name, value};
            continue;
        }
        if (c > 0 && !done) {
            done = 1;
            if (value && *value) r.v[r.n++] = (od_promql_label){name, value};
        }
        r.v[r.n++] = l->v[i];
    }
    if (!done && value && *value) r.v[r.n++] = (od_promql_label){name, value};
    return r;
}

int pq_lbl_cmp(const pq_labels *a, const pq_labels *b)
{
    int n = a->n < b->n ? a->n : b->n;
    for (int i = 0; i < n; i++) {
        int c = strcmp(a->v[i].name, b->v[i].name);
        if (c) return c;
        c = strcmp(a->v[i].value, b->v[i].value);
        if (c) return c;
    }
    return a->n - b->n;
}

static void quote_into(od_buf *b, const char *s)
{
    od_buf_append_u8(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { od_buf_append_u8(b, '\\'); od_buf_append_u8(b, c); }
        else if (c == '\n') od_buf_append_str(b, "\\n");
        else if (c < 0x20) od_buf_printf(b, "\\x%02x", c);
        else od_buf_append_u8(b, c);
    }
    od_buf_append_u8(b, '"');
}

char *pq_lbl_string(pq_ev *ev, const pq_labels *l)
{
    od_buf b = {0};
    od_buf_append_u8(&b, '{');
    for (int i = 0; i < l->n; i++) {
        if (i) od_buf_append_str(&b, ", ");
        od_buf_append_str(&b, l->v[i].name);
        od_buf_append_u8(&b, '=');
        quote_into(&b, l->v[i].value);
    }
    od_buf_append_u8(&b, '}');
    int bad = od_buf_cstr(&b) != OD_OK;
    char *s = bad ? NULL : pq_strdup(ev, (char *)b.data);
    od_buf_free(&b);
    if (!s) pq_fail(ev, OD_NOMEM, "promql: out of memory");
    return s;
}

/* ---------------- hash map ---------------- */

static uint64_t hash_bytes(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 31);
}

void pq_map_init(pq_ev *ev, pq_map *m, size_t hint)
{
    size_t cap = 16;
    while (cap < hint * 2) cap *= 2;
    m->cap = cap;
    m->n = 0;
    m->h = pq_alloc(ev, cap * sizeof *m->h);
    m->k = pq_alloc(ev, cap * sizeof *m->k);
    m->klen = pq_alloc(ev, cap * sizeof *m->klen);
    m->val = pq_alloc(ev, cap * sizeof *m->val);
}

size_t pq_map_get_or_put(pq_ev *ev, pq_map *m, const char *k, size_t klen, size_t ins)
{
    if ((m->n + 1) * 2 > m->cap) {
        pq_map old = *m;
        pq_map_init(ev, m, old.cap);
        for (size_t i = 0; i < old.cap; i++)
            if (old.k[i]) pq_map_get_or_put(ev, m, old.k[i], old.klen[i], old.val[i]);
    }
    uint64_t h = hash_bytes(k, klen);
    size_t i = (size_t)h & (m->cap - 1);
    while (m->k[i]) {
        if (m->h[i] == h && m->klen[i] == klen && memcmp(m->k[i], k, klen) == 0) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    m->k[i] = k;
    m->klen[i] = klen;
    m->h[i] = h;
    m->val[i] = ins;
    m->n++;
    return ins;
}

size_t pq_map_find(const pq_map *m, const char *k, size_t klen)
{
    uint64_t h = hash_bytes(k, klen);
    size_t i = (size_t)h & (m->cap - 1);
    while (m->k[i]) {
        if (m->h[i] == h && m->klen[i] == klen && memcmp(m->k[i], k, klen) == 0) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return (size_t)-1;
}

/* Key: for each selected label "name\0value\0" with 4-byte length prefixes (so that
 * {ab="c"} and {a="bc"} differ). */
char *pq_sig(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int on, size_t *len)
{
    size_t total = 1;
    for (int i = 0; i < l->n; i++) total += strlen(l->v[i].name) + strlen(l->v[i].value) + 8;
    char *k = pq_alloc(ev, total);
    size_t o = 0;
    for (int i = 0; i < l->n; i++) {
        const char *nm = l->v[i].name;
        if (on) {
            if (!in_list(nm, names, n)) continue;
        } else {
            if (strcmp(nm, "__name__") == 0 || in_list(nm, names, n)) continue;
        }
        uint32_t a = (uint32_t)strlen(nm), b = (uint32_t)strlen(l->v[i].value);
        memcpy(k + o, &a, 4); o += 4;
        memcpy(k + o, nm, a); o += a;
        memcpy(k + o, &b, 4); o += 4;
        memcpy(k + o, l->v[i].value, b); o += b;
    }
    *len = o;
    return k;
}

char *pq_sig_named(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int on, size_t *len)
{
    char *key = pq_sig(ev, l, names, n, on, len);
    const char *nm = pq_lbl_get(l, "__name__");
    if (!nm) return key;
    size_t nl = strlen(nm);
    char *k2 = pq_alloc(ev, *len + nl + 1);
    memcpy(k2, key, *len);
    k2[*len] = 1;
    memcpy(k2 + *len + 1, nm, nl);
    *len += nl + 1;
    return k2;
}

/* ---------------- values ---------------- */

pq_series *pq_vec_new_try(pq_ev *ev, pq_val *out, size_t cap)
{
    if (out->ns == out->nrs) {
        size_t c = out->nrs ? out->nrs * 2 : (cap ? cap : 8);
        pq_series *v = arena_try(ev, c * sizeof *v);
        if (!v) { ev->try_code = OD_NOMEM; return NULL; }
        if (out->ns) memcpy(v, out->s, out->ns * sizeof *v);
        out->s = v;
        out->nrs = c;
    }
    ev->samples += ev->nsteps / 4 + 1;
    if (ev->samples > ev->opts.max_samples) { ev->try_code = OD_LIMIT; return NULL; }
    double *vv = arena_try(ev, ev->nsteps * sizeof(double));
    uint8_t *ok = arena_try(ev, ev->nsteps);
    if (!vv || !ok) { ev->try_code = OD_NOMEM; return NULL; }
    pq_series *s = &out->s[out->ns++];
    memset(s, 0, sizeof *s);
    s->v = vv;
    s->ok = ok;
    return s;
}

pq_series *pq_vec_new(pq_ev *ev, pq_val *out, size_t cap)
{
    /* out->s has capacity tracked in out->nrs when type is VECTOR (unused otherwise) */
    if (out->ns == out->nrs) {
        size_t c = out->nrs ? out->nrs * 2 : (cap ? cap : 8);
        pq_series *v = pq_alloc(ev, c * sizeof *v);
        if (out->ns) memcpy(v, out->s, out->ns * sizeof *v);
        out->s = v;
        out->nrs = c;
    }
    pq_series *s = &out->s[out->ns++];
    memset(s, 0, sizeof *s);
    s->v = pq_alloc(ev, ev->nsteps * sizeof(double));
    s->ok = pq_alloc(ev, ev->nsteps);
    pq_count_samples(ev, ev->nsteps / 4 + 1);
    return s;
}

static pq_val vec_empty(void)
{
    pq_val v;
    memset(&v, 0, sizeof v);
    v.type = OD_PROMQL_VECTOR;
    return v;
}

static pq_val scalar_new(pq_ev *ev)
{
    pq_val v;
    memset(&v, 0, sizeof v);
    v.type = OD_PROMQL_SCALAR;
    v.scalar = pq_alloc(ev, ev->nsteps * sizeof(double));
    return v;
}

/* ---------------- fetching ---------------- */

typedef struct fetch {
    pq_ev *ev;
    pq_rseries *rs;
    size_t n, cap;
    int keep_stale;
    int oom;
    uint64_t samples;
    pq_consume_fn consume; /* when set: hand each series to it instead of keeping the points */
    void *cctx;
    int64_t *st;           /* scratch for stale-free copies (consume mode), malloc'd */
    double *sv;
    size_t scap;
} fetch;

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const od_promql_label *)a)->name, ((const od_promql_label *)b)->name);
}

static int fetch_emit(void *arg, const od_promql_label *labels, size_t nlabels, const int64_t *ts,
                      const double *vals, size_t n, od_err *err)
{
    fetch *f = arg;
    pq_ev *ev = f->ev;
    if (f->ev->opts.max_series && f->n >= f->ev->opts.max_series)
        return od_err_set(err, OD_LIMIT, "query would select more than %llu series (max series limit)",
                          (unsigned long long)f->ev->opts.max_series);
    f->samples += n;
    if (ev->samples + f->samples > ev->opts.max_samples)
        return od_err_set(err, OD_LIMIT, "query processing would load too many samples into memory in query execution");
    if (f->n == f->cap) {
        size_t c = f->cap ? f->cap * 2 : 16;
        pq_rseries *v = arena_try(ev, c * sizeof *v);
        if (!v) goto oom;
        if (f->n) memcpy(v, f->rs, f->n * sizeof *v);
        f->rs = v;
        f->cap = c;
    }
    pq_rseries *s = &f->rs[f->n];
    memset(s, 0, sizeof *s);
    s->lbl.v = arena_try(ev, (nlabels ? nlabels : 1) * sizeof(od_promql_label));
    if (!s->lbl.v) goto oom;
    for (size_t i = 0; i < nlabels; i++) {
        size_t a = strlen(labels[i].name) + 1, b = strlen(labels[i].value) + 1;
        char *p = arena_try(ev, a + b);
        if (!p) goto oom;
        memcpy(p, labels[i].name, a);
        memcpy(p + a, labels[i].value, b);
        s->lbl.v[i].name = p;
        s->lbl.v[i].value = p + a;
    }
    s->lbl.n = (int)nlabels;
    qsort(s->lbl.v, nlabels, sizeof *s->lbl.v, cmp_label);
    if (f->consume) {
        const int64_t *tt = ts;
        const double *vv = vals;
        size_t m = n;
        if (!f->keep_stale) {
            if (n > f->scap) {
                size_t c = f->scap ? f->scap : 256;
                while (c < n) c *= 2;
                int64_t *nt = realloc(f->st, c * sizeof *nt);
                if (!nt) goto oom;
                f->st = nt;
                double *nv = realloc(f->sv, c * sizeof *nv);
                if (!nv) goto oom;
                f->sv = nv;
                f->scap = c;
            }
            m = 0;
            for (size_t i = 0; i < n; i++) {
                if (od_promql_is_stale(vals[i])) continue;
                f->st[m] = ts[i];
                f->sv[m] = vals[i];
                m++;
            }
            tt = f->st;
            vv = f->sv;
        }
        /* the label copy stays in f->rs[f->n] (its points are not kept) */
        s->n = 0;
        f->n++;
        f->samples -= n; /* not held */
        return f->consume(f->cctx, &s->lbl, tt, vv, m, err);
    }
    s->t = arena_get(ev, (n ? n : 1) * sizeof(int64_t), 0);
    s->v = arena_get(ev, (n ? n : 1) * sizeof(double), 0);
    if (!s->t || !s->v) goto oom;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (!f->keep_stale && od_promql_is_stale(vals[i])) continue;
        s->t[o] = ts[i];
        s->v[o] = vals[i];
        o++;
    }
    s->n = o;
    f->n++;
    return OD_OK;
oom:
    f->oom = 1;
    return od_err_set(err, OD_NOMEM, "promql: out of memory");
}

static int cmp_rseries(const void *a, const void *b)
{
    return pq_lbl_cmp(&((const pq_rseries *)a)->lbl, &((const pq_rseries *)b)->lbl);
}

static void fetch_run(pq_ev *ev, const pq_node *n, int64_t mint, int64_t maxt, int keep_stale, pq_rseries **out,
                      size_t *nout, pq_consume_fn consume, void *cctx)
{
    fetch f;
    memset(&f, 0, sizeof f);
    f.ev = ev;
    f.keep_stale = keep_stale;
    f.consume = consume;
    f.cctx = cctx;
    od_err e;
    od_err_clear(&e);
    int rc = ev->src->select(ev->src->ctx, n->matchers, n->nmatchers, mint, maxt, fetch_emit, &f, &e);
    free(f.st);
    free(f.sv);
    if (rc != OD_OK) {
        if (!e.msg[0]) od_err_set(&e, (od_code)rc, "promql: series source failed");
        pq_fail(ev, e.code ? e.code : (od_code)rc, "%s", e.msg);
    }
    pq_count_samples(ev, f.samples);
    check_now(ev);
    if (out) {
        if (f.n) qsort(f.rs, f.n, sizeof *f.rs, cmp_rseries);
        *out = f.rs;
        *nout = f.n;
    }
}

static void do_fetch(pq_ev *ev, const pq_node *n, int64_t mint, int64_t maxt, int keep_stale, pq_rseries **out, size_t *nout)
{
    fetch_run(ev, n, mint, maxt, keep_stale, out, nout, NULL, NULL);
}

void pq_fetch_consume(pq_ev *ev, const pq_node *sel, int64_t mint, int64_t maxt, int keep_stale, pq_consume_fn fn, void *cctx)
{
    fetch_run(ev, sel, mint, maxt, keep_stale, NULL, NULL, fn, cctx);
}

static int cmp_series_lbl(const void *a, const void *b)
{
    return pq_lbl_cmp(&((const pq_series *)a)->lbl, &((const pq_series *)b)->lbl);
}

void pq_vec_sort(pq_val *v)
{
    if (v->ns > 1) qsort(v->s, v->ns, sizeof *v->s, cmp_series_lbl);
}

static int64_t at_time(const pq_ev *ev, const pq_node *n, int64_t t)
{
    switch (n->has_at) {
    case 1: return n->at_ms;
    case 2: return ev->qstart;
    case 3: return ev->qend;
    default: return t;
    }
}

int64_t *pq_make_refs(pq_ev *ev, const pq_node *n, int64_t *minr, int64_t *maxr)
{
    int64_t *ref = pq_alloc(ev, ev->nsteps * sizeof *ref);
    for (size_t i = 0; i < ev->nsteps; i++) ref[i] = at_time(ev, n, pq_step_t(ev, i)) - n->offset_ms;
    *minr = ref[0];
    *maxr = ref[ev->nsteps - 1];
    if (*minr > *maxr) { int64_t t = *minr; *minr = *maxr; *maxr = t; }
    return ref;
}

/* Instant vector selector. want_ts: values are the sample timestamps in seconds (timestamp()). */
typedef struct vsel_ctx {
    pq_ev *ev;
    const int64_t *ref;
    int want_ts;
    pq_val *out;
} vsel_ctx;

/* Runs inside the source's callback: must not longjmp (returns errors instead). */
static int vsel_consume(void *cctx, const pq_labels *lbl, const int64_t *t, const double *v, size_t n, od_err *err)
{
    vsel_ctx *c = cctx;
    pq_ev *ev = c->ev;
    int64_t lb = ev->opts.lookback_ms;
    if (!n) return OD_OK;
    pq_series *s = NULL;
    size_t j = 0;
    for (size_t i = 0; i < ev->nsteps; i++) {
        int64_t r = c->ref[i];
        if (i > 0 && r < c->ref[i - 1]) j = 0;
        while (j + 1 < n && t[j + 1] <= r) j++;
        if (t[j] > r || t[j] <= r - lb) continue;
        if (od_promql_is_stale(v[j])) continue;
        if (!s) {
            s = pq_vec_new_try(ev, c->out, 16);
            if (!s) return od_err_set(err, ev->try_code, "%s", ev->try_code == OD_NOMEM ? "promql: out of memory"
                                      : "query processing would load too many samples into memory in query execution");
            s->lbl = *lbl;
        }
        s->v[i] = c->want_ts ? (double)t[j] / 1000.0 : v[j];
        s->ok[i] = 1;
    }
    return OD_OK;
}

/* Instant vector selector. want_ts: values are the sample timestamps in seconds (timestamp()).
 * The points are consumed straight from the source: nothing but the step values is kept. */
pq_val pq_eval_vsel(pq_ev *ev, const pq_node *n, int want_ts);
pq_val pq_eval_vsel(pq_ev *ev, const pq_node *n, int want_ts)
{
    int64_t minr, maxr;
    int64_t *ref = pq_make_refs(ev, n, &minr, &maxr);
    pq_val out = vec_empty();
    vsel_ctx c = {ev, ref, want_ts, &out};
    pq_fetch_consume(ev, n, minr - ev->opts.lookback_ms + 1, maxr, 1, vsel_consume, &c);
    pq_check(ev);
    pq_vec_sort(&out);
    return out;
}

static pq_val eval_msel(pq_ev *ev, const pq_node *n)
{
    int64_t minr, maxr;
    pq_val out;
    memset(&out, 0, sizeof out);
    out.type = OD_PROMQL_MATRIX;
    out.ref = pq_make_refs(ev, n, &minr, &maxr);
    out.range_ms = n->range_ms;
    do_fetch(ev, n, minr - n->range_ms + 1, maxr, 0, &out.rs, &out.nrs);
    return out;
}

static pq_val eval_subq(pq_ev *ev, const pq_node *n)
{
    int64_t minr, maxr;
    pq_val out;
    memset(&out, 0, sizeof out);
    out.type = OD_PROMQL_MATRIX;
    out.ref = pq_make_refs(ev, n, &minr, &maxr);
    out.range_ms = n->range_ms;
    int64_t step = n->step_ms ? n->step_ms : ev->opts.subquery_step_ms;
    int64_t st = minr - n->range_ms;
    int64_t ns = st - st % step;
    if (ns < st) ns += step;
    if (ns > maxr) return out;
    /* evaluate the inner expression on the subquery's grid */
    int64_t s0 = ev->start, e0 = ev->end, p0 = ev->step;
    size_t n0 = ev->nsteps;
    ev->start = ns;
    ev->step = step;
    ev->nsteps = (size_t)((maxr - ns) / step) + 1;
    ev->end = ns + (int64_t)(ev->nsteps - 1) * step;
    pq_val in = pq_eval(ev, n->a);
    size_t nst = ev->nsteps;
    ev->start = s0;
    ev->end = e0;
    ev->step = p0;
    ev->nsteps = n0;
    out.rs = pq_alloc(ev, (in.ns ? in.ns : 1) * sizeof *out.rs);
    for (size_t k = 0; k < in.ns; k++) {
        pq_series *s = &in.s[k];
        pq_rseries *r = &out.rs[out.nrs];
        size_t cnt = 0;
        for (size_t i = 0; i < nst; i++) cnt += s->ok[i];
        if (!cnt) continue;
        r->lbl = s->lbl;
        r->drop_name = s->drop_name;
        r->t = pq_alloc(ev, cnt * sizeof *r->t);
        r->v = pq_alloc(ev, cnt * sizeof *r->v);
        for (size_t i = 0; i < nst; i++)
            if (s->ok[i]) {
                r->t[r->n] = ns + (int64_t)i * step;
                r->v[r->n] = s->v[i];
                r->n++;
            }
        pq_count_samples(ev, cnt);
        out.nrs++;
    }
    return out;
}

/* ---------------- operators ---------------- */

static int is_cmp(pq_op op) { return op >= PQ_OP_EQ && op <= PQ_OP_LE; }

/* Returns the value; *keep = comparison result (1 for arithmetic). */
static double binop(pq_op op, double l, double r, int *keep)
{
    *keep = 1;
    switch (op) {
    case PQ_OP_ADD: return l + r;
    case PQ_OP_SUB: return l - r;
    case PQ_OP_MUL: return l * r;
    case PQ_OP_DIV: return l / r;
    case PQ_OP_POW: return pow(l, r);
    case PQ_OP_MOD: return fmod(l, r);
    case PQ_OP_ATAN2: return atan2(l, r);
    case PQ_OP_EQ: *keep = l == r; return l;
    case PQ_OP_NE: *keep = l != r; return l;
    case PQ_OP_GT: *keep = l > r; return l;
    case PQ_OP_LT: *keep = l < r; return l;
    case PQ_OP_GE: *keep = l >= r; return l;
    case PQ_OP_LE: *keep = l <= r; return l;
    default: return NAN;
    }
}

static pq_val eval_scalar_scalar(pq_ev *ev, const pq_node *n, pq_val a, pq_val b)
{
    pq_val out = scalar_new(ev);
    for (size_t i = 0; i < ev->nsteps; i++) {
        int keep;
        double v = binop(n->op, a.scalar[i], b.scalar[i], &keep);
        out.scalar[i] = is_cmp(n->op) ? (double)keep : v;
    }
    return out;
}

static pq_val eval_vec_scalar(pq_ev *ev, const pq_node *n, pq_val vec, pq_val sc, int swap)
{
    pq_val out = vec_empty();
    int cmp = is_cmp(n->op);
    for (size_t k = 0; k < vec.ns; k++) {
        pq_series *in = &vec.s[k];
        pq_series *o = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (!in->ok[i]) continue;
            double l = in->v[i], r = sc.scalar[i];
            if (swap) { double t = l; l = r; r = t; }
            int keep;
            double v = binop(n->op, l, r, &keep);
            if (cmp && swap) v = r;
            if (cmp && n->return_bool) { v = keep; keep = 1; }
            if (!keep) continue;
            if (!o) {
                o = pq_vec_new(ev, &out, vec.ns);
                o->lbl = in->lbl;
                o->drop_name = in->drop_name || !cmp || n->return_bool;
            }
            o->v[i] = v;
            o->ok[i] = 1;
        }
    }
    return out;
}

typedef struct sigs {
    size_t *id;     /* per series: signature id */
    size_t nids;
} sigs;

static sigs make_sigs(pq_ev *ev, pq_val *v, pq_map *m, const pq_node *n)
{
    sigs s;
    s.id = pq_alloc(ev, (v->ns ? v->ns : 1) * sizeof *s.id);
    for (size_t k = 0; k < v->ns; k++) {
        size_t len;
        char *key = pq_sig(ev, &v->s[k].lbl, (const char *const *)n->match_labels.v, n->match_labels.n, n->on, &len);
        s.id[k] = pq_map_get_or_put(ev, m, key, len, m->n);
    }
    s.nids = m->n;
    return s;
}

static pq_val eval_set_op(pq_ev *ev, const pq_node *n, pq_val l, pq_val r)
{
    pq_map m;
    pq_map_init(ev, &m, l.ns + r.ns);
    sigs ls = make_sigs(ev, &l, &m, n);
    sigs rsg = make_sigs(ev, &r, &m, n);
    size_t nid = m.n;
    size_t *stamp_l = pq_alloc(ev, (nid + 1) * sizeof *stamp_l);
    size_t *stamp_r = pq_alloc(ev, (nid + 1) * sizeof *stamp_r);
    pq_val out = vec_empty();
    size_t *lo = pq_alloc(ev, (l.ns + 1) * sizeof *lo); /* output index + 1 */
    size_t *ro = pq_alloc(ev, (r.ns + 1) * sizeof *ro);
    for (size_t i = 0; i < ev->nsteps; i++) {
        pq_check(ev);
        for (size_t k = 0; k < l.ns; k++)
            if (l.s[k].ok[i]) stamp_l[ls.id[k]] = i + 1;
        for (size_t k = 0; k < r.ns; k++)
            if (r.s[k].ok[i]) stamp_r[rsg.id[k]] = i + 1;
        for (size_t k = 0; k < l.ns; k++) {
            if (!l.s[k].ok[i]) continue;
            int has_r = stamp_r[ls.id[k]] == i + 1;
            int keep = n->op == PQ_OP_OR ? 1 : n->op == PQ_OP_AND ? has_r : !has_r;
            if (!keep) continue;
            if (!lo[k]) {
                pq_series *o = pq_vec_new(ev, &out, l.ns);
                o->lbl = l.s[k].lbl;
                o->drop_name = l.s[k].drop_name;
                lo[k] = out.ns;
            }
            out.s[lo[k] - 1].v[i] = l.s[k].v[i];
            out.s[lo[k] - 1].ok[i] = 1;
        }
        if (n->op != PQ_OP_OR) continue;
        for (size_t k = 0; k < r.ns; k++) {
            if (!r.s[k].ok[i] || stamp_l[rsg.id[k]] == i + 1) continue;
            if (!ro[k]) {
                pq_series *o = pq_vec_new(ev, &out, r.ns);
                o->lbl = r.s[k].lbl;
                o->drop_name = r.s[k].drop_name;
                ro[k] = out.ns;
            }
            out.s[ro[k] - 1].v[i] = r.s[k].v[i];
            out.s[ro[k] - 1].ok[i] = 1;
        }
    }
    return out;
}

static pq_labels result_metric(pq_ev *ev, const pq_node *n, const pq_labels *ls, const pq_labels *rs)
{
    pq_labels m;
    if (n->card == PQ_CARD_ONE_TO_ONE) {
        if (n->on) m = pq_lbl_only(ev, ls, (const char *const *)n->match_labels.v, n->match_labels.n);
        else m = pq_lbl_without(ev, ls, (const char *const *)n->match_labels.v, n->match_labels.n, 0);
    } else {
        m = pq_lbl_copy(ev, ls);
    }
    for (size_t i = 0; i < n->include.n; i++) {
        const char *v = pq_lbl_get(rs, n->include.v[i]);
        m = pq_lbl_set(ev, &m, n->include.v[i], v ? v : "");
    }
    return m;
}

static pq_val eval_vec_vec(pq_ev *ev, const pq_node *n, pq_val l, pq_val r)
{
    int cmp = is_cmp(n->op);
    int swap = n->card == PQ_CARD_ONE_TO_MANY;
    pq_val *many = swap ? &r : &l, *one = swap ? &l : &r;
    pq_map m;
    pq_map_init(ev, &m, l.ns + r.ns);
    sigs ms = make_sigs(ev, many, &m, n);
    sigs os = make_sigs(ev, one, &m, n);
    size_t nid = m.n;
    size_t *one_at = pq_alloc(ev, (nid + 1) * sizeof *one_at);   /* series index + 1 at this step */
    size_t *one_stamp = pq_alloc(ev, (nid + 1) * sizeof *one_stamp);
    size_t *many_stamp = pq_alloc(ev, (nid + 1) * sizeof *many_stamp);
    size_t *many_at = pq_alloc(ev, (nid + 1) * sizeof *many_at);
    /* output series per (many, one) pair */
    pq_map pairs;
    pq_map_init(ev, &pairs, many->ns);
    pq_map outm;
    pq_map_init(ev, &outm, many->ns);
    size_t *out_stamp = NULL;
    size_t out_cap = 0;
    pq_val out = vec_empty();
    for (size_t i = 0; i < ev->nsteps; i++) {
        pq_check(ev);
        for (size_t k = 0; k < one->ns; k++) {
            if (!one->s[k].ok[i]) continue;
            size_t id = os.id[k];
            if (one_stamp[id] == i + 1) {
                char *a = pq_lbl_string(ev, &one->s[k].lbl), *b = pq_lbl_string(ev, &one->s[one_at[id] - 1].lbl);
                pq_labels ml = n->on ? pq_lbl_only(ev, &one->s[k].lbl, (const char *const *)n->match_labels.v, n->match_labels.n)
                                     : pq_lbl_without(ev, &one->s[k].lbl, (const char *const *)n->match_labels.v, n->match_labels.n, 1);
                pq_fail(ev, OD_BADREQ,
                        "found duplicate series for the match group %s on the %s hand-side of the operation: [%s, %s];"
                        "many-to-many matching not allowed: matching labels must be unique on one side",
                        pq_lbl_string(ev, &ml), swap ? "left" : "right", b, a);
            }
            one_stamp[id] = i + 1;
            one_at[id] = k + 1;
        }
        for (size_t k = 0; k < many->ns; k++) {
            if (!many->s[k].ok[i]) continue;
            size_t id = ms.id[k];
            if (one_stamp[id] != i + 1) continue;
            if (n->card == PQ_CARD_ONE_TO_ONE) {
                if (many_stamp[id] == i + 1)
                    pq_fail(ev, OD_BADREQ, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                many_stamp[id] = i + 1;
                many_at[id] = k + 1;
            }
            size_t ok = one_at[id] - 1;
            double fl = many->s[k].v[i], fr = one->s[ok].v[i];
            if (swap) { double t = fl; fl = fr; fr = t; }
            int keep;
            double v = binop(n->op, fl, fr, &keep);
            if (n->return_bool) { v = keep; keep = 1; }
            /* output series for this pair */
            uint64_t key[2] = {k, n->card == PQ_CARD_ONE_TO_ONE ? 0 : ok};
            size_t oi = pq_map_find(&pairs, (const char *)key, sizeof key);
            if (oi == (size_t)-1) {
                pq_labels lbl = result_metric(ev, n, &many->s[k].lbl, &one->s[ok].lbl);
                size_t len;
                int dn = (!cmp || n->return_bool) ? 1 : many->s[k].drop_name;
                /* include the name in the key when it is kept */
                char *lk = dn ? pq_sig(ev, &lbl, NULL, 0, 0, &len) : pq_sig_named(ev, &lbl, NULL, 0, 0, &len);
                oi = pq_map_get_or_put(ev, &outm, lk, len, out.ns);
                if (oi == out.ns) {
                    pq_series *o = pq_vec_new(ev, &out, many->ns);
                    o->lbl = lbl;
                    o->drop_name = dn;
                }
                char *kb = pq_alloc(ev, sizeof key);
                memcpy(kb, key, sizeof key);
                pq_map_get_or_put(ev, &pairs, kb, sizeof key, oi);
            }
            if (out_cap < out.ns) {
                size_t c = out.ns * 2 + 8;
                size_t *ns = pq_alloc(ev, c * sizeof *ns);
                if (out_stamp) memcpy(ns, out_stamp, out_cap * sizeof *ns);
                out_stamp = ns;
                out_cap = c;
            }
            if (n->card != PQ_CARD_ONE_TO_ONE) {
                if (out_stamp[oi] == i + 1 && keep)
                    pq_fail(ev, OD_BADREQ, "multiple matches for labels: grouping labels must ensure unique matches");
            }
            if (!keep) continue;
            out_stamp[oi] = i + 1;
            out.s[oi].v[i] = v;
            out.s[oi].ok[i] = 1;
        }
    }
    return out;
}

static pq_val eval_binary(pq_ev *ev, const pq_node *n)
{
    pq_val a = pq_eval(ev, n->a);
    pq_val b = pq_eval(ev, n->b);
    if (a.type == OD_PROMQL_SCALAR && b.type == OD_PROMQL_SCALAR) return eval_scalar_scalar(ev, n, a, b);
    if (a.type == OD_PROMQL_VECTOR && b.type == OD_PROMQL_SCALAR) return eval_vec_scalar(ev, n, a, b, 0);
    if (a.type == OD_PROMQL_SCALAR && b.type == OD_PROMQL_VECTOR) return eval_vec_scalar(ev, n, b, a, 1);
    if (n->op == PQ_OP_AND || n->op == PQ_OP_OR || n->op == PQ_OP_UNLESS) return eval_set_op(ev, n, a, b);
    return eval_vec_vec(ev, n, a, b);
}

static pq_val eval_unary(pq_ev *ev, const pq_node *n)
{
    pq_val a = pq_eval(ev, n->a);
    if (n->op == PQ_OP_ADD) return a;
    if (a.type == OD_PROMQL_SCALAR) {
        pq_val o = scalar_new(ev);
        for (size_t i = 0; i < ev->nsteps; i++) o.scalar[i] = -a.scalar[i];
        return o;
    }
    pq_val o = vec_empty();
    for (size_t k = 0; k < a.ns; k++) {
        pq_series *s = pq_vec_new(ev, &o, a.ns);
        s->lbl = a.s[k].lbl;
        s->drop_name = 1;
        for (size_t i = 0; i < ev->nsteps; i++) {
            s->ok[i] = a.s[k].ok[i];
            s->v[i] = -a.s[k].v[i];
        }
    }
    return o;
}

pq_val pq_eval(pq_ev *ev, const pq_node *n)
{
    check_now(ev);
    switch (n->kind) {
    case PQ_NUM: {
        pq_val o = scalar_new(ev);
        for (size_t i = 0; i < ev->nsteps; i++) o.scalar[i] = n->num;
        return o;
    }
    case PQ_STR: {
        pq_val o;
        memset(&o, 0, sizeof o);
        o.type = OD_PROMQL_STRING;
        o.str = n->str;
        return o;
    }
    case PQ_VSEL: return pq_eval_vsel(ev, n, 0);
    case PQ_MSEL: return eval_msel(ev, n);
    case PQ_SUBQ: return eval_subq(ev, n);
    case PQ_PAREN: return pq_eval(ev, n->a);
    case PQ_UNARY: return eval_unary(ev, n);
    case PQ_BINARY: return eval_binary(ev, n);
    case PQ_CALL: return pq_eval_call(ev, n);
    case PQ_AGG: return pq_eval_agg(ev, n);
    }
    pq_fail(ev, OD_BADREQ, "promql: unknown node");
}

/* ---------------- results ---------------- */

static int cmp_series_out(const void *a, const void *b)
{
    const od_promql_series *x = a, *y = b;
    pq_labels l1 = {x->labels, (int)x->nlabels}, l2 = {y->labels, (int)y->nlabels};
    return pq_lbl_cmp(&l1, &l2);
}

static void result_free_partial(od_promql_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nseries; i++) {
        od_promql_series *s = &r->series[i];
        for (size_t j = 0; j < s->nlabels; j++) {
            free((char *)s->labels[j].name);
            free((char *)s->labels[j].value);
        }
        free(s->labels);
        free(s->points);
    }
    free(r->series);
    for (size_t i = 0; i < r->nwarnings; i++) free(r->warnings[i]);
    free(r->warnings);
    free(r->string);
    free(r);
}

void od_promql_result_free(od_promql_result *r) { result_free_partial(r); }

static void *xmalloc(pq_ev *ev, size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) pq_fail(ev, OD_NOMEM, "promql: out of memory");
    return p;
}

static char *xstrdup(pq_ev *ev, const char *s)
{
    char *p = strdup(s);
    if (!p) pq_fail(ev, OD_NOMEM, "promql: out of memory");
    return p;
}

/* Build the public result. Drops names of flagged series, merges series whose labels became
 * equal (an error when they have points at the same step). */
static void build_result(pq_ev *ev, pq_val v, int instant, od_promql_result *r)
{
    if (v.type == OD_PROMQL_SCALAR) {
        if (instant) {
            r->type = OD_PROMQL_SCALAR;
            r->scalar = v.scalar[0];
            r->t = ev->start;
            return;
        }
        r->type = OD_PROMQL_MATRIX;
        r->series = xmalloc(ev, sizeof *r->series);
        r->nseries = 1;
        r->series[0].labels = xmalloc(ev, sizeof(od_promql_label));
        r->series[0].points = xmalloc(ev, ev->nsteps * sizeof(od_promql_point));
        for (size_t i = 0; i < ev->nsteps; i++) {
            r->series[0].points[i].t = pq_step_t(ev, i);
            r->series[0].points[i].v = v.scalar[i];
        }
        r->series[0].npoints = ev->nsteps;
        return;
    }
    if (v.type == OD_PROMQL_STRING) {
        r->type = OD_PROMQL_STRING;
        r->string = xstrdup(ev, v.str);
        r->t = ev->start;
        return;
    }
    if (v.type == OD_PROMQL_MATRIX) {
        /* instant query returning a range vector: the window at the one step */
        r->type = OD_PROMQL_MATRIX;
        r->series = xmalloc(ev, (v.nrs ? v.nrs : 1) * sizeof *r->series);
        int64_t ref = v.ref[0];
        for (size_t k = 0; k < v.nrs; k++) {
            pq_rseries *s = &v.rs[k];
            size_t cnt = 0;
            for (size_t j = 0; j < s->n; j++)
                if (s->t[j] > ref - v.range_ms && s->t[j] <= ref) cnt++;
            if (!cnt) continue;
            od_promql_series *o = &r->series[r->nseries++];
            pq_labels l = s->drop_name ? pq_lbl_dropname(ev, &s->lbl) : s->lbl;
            o->labels = xmalloc(ev, (size_t)(l.n ? l.n : 1) * sizeof *o->labels);
            o->nlabels = (size_t)l.n;
            for (int j = 0; j < l.n; j++) {
                o->labels[j].name = xstrdup(ev, l.v[j].name);
                o->labels[j].value = xstrdup(ev, l.v[j].value);
            }
            o->points = xmalloc(ev, cnt * sizeof *o->points);
            for (size_t j = 0; j < s->n; j++)
                if (s->t[j] > ref - v.range_ms && s->t[j] <= ref)
                    o->points[o->npoints++] = (od_promql_point){s->t[j], s->v[j]};
        }
        qsort(r->series, r->nseries, sizeof *r->series, cmp_series_out);
        return;
    }
    /* vector */
    pq_map m;
    pq_map_init(ev, &m, v.ns);
    size_t *idx = pq_alloc(ev, (v.ns ? v.ns : 1) * sizeof *idx);
    pq_labels *lbls = pq_alloc(ev, (v.ns ? v.ns : 1) * sizeof *lbls);
    size_t nout = 0;
    size_t *first = pq_alloc(ev, (v.ns ? v.ns : 1) * sizeof *first);
    for (size_t k = 0; k < v.ns; k++) {
        pq_series *s = &v.s[k];
        int any = 0;
        for (size_t i = 0; i < ev->nsteps && !any; i++) any = s->ok[i];
        if (!any) { idx[k] = (size_t)-1; continue; }
        pq_labels l = s->drop_name ? pq_lbl_dropname(ev, &s->lbl) : s->lbl;
        size_t len;
        char *key = pq_sig_named(ev, &l, NULL, 0, 0, &len);
        size_t o = pq_map_get_or_put(ev, &m, key, len, nout);
        if (o == nout) {
            lbls[nout] = l;
            first[nout] = k;
            nout++;
        } else {
            pq_series *f = &v.s[first[o]];
            for (size_t i = 0; i < ev->nsteps; i++) {
                if (!s->ok[i]) continue;
                if (f->ok[i]) pq_fail(ev, OD_BADREQ, "vector cannot contain metrics with the same labelset");
                f->ok[i] = 1;
                f->v[i] = s->v[i];
            }
        }
        idx[k] = o;
    }
    r->type = instant ? OD_PROMQL_VECTOR : OD_PROMQL_MATRIX;
    r->series = xmalloc(ev, (nout ? nout : 1) * sizeof *r->series);
    for (size_t o = 0; o < nout; o++) {
        pq_series *s = &v.s[first[o]];
        od_promql_series *d = &r->series[r->nseries++];
        pq_labels l = lbls[o];
        d->labels = xmalloc(ev, (size_t)(l.n ? l.n : 1) * sizeof *d->labels);
        for (int j = 0; j < l.n; j++) {
            d->labels[j].name = xstrdup(ev, l.v[j].name);
            d->labels[j].value = xstrdup(ev, l.v[j].value);
            d->nlabels++;
        }
        size_t cnt = 0;
        for (size_t i = 0; i < ev->nsteps; i++) cnt += s->ok[i];
        d->points = xmalloc(ev, cnt * sizeof *d->points);
        for (size_t i = 0; i < ev->nsteps; i++)
            if (s->ok[i]) d->points[d->npoints++] = (od_promql_point){pq_step_t(ev, i), s->v[i]};
    }
    if (!instant) qsort(r->series, r->nseries, sizeof *r->series, cmp_series_out);
}

/* The one setjmp of a query: returns 0, or 1 after pq_fail. */
static int eval_protected(pq_ev *ev, const pq_node *root, int instant, od_promql_result *r)
{
    if (setjmp(*ev->jb) != 0) return 1;
    pq_val v = pq_eval(ev, root);
    build_result(ev, v, instant, r);
    if (ev->nwarn) {
        r->warnings = xmalloc(ev, ev->nwarn * sizeof *r->warnings);
        for (size_t i = 0; i < ev->nwarn; i++) {
            r->warnings[i] = xstrdup(ev, ev->warn[i]);
            r->nwarnings++;
        }
    }
    return 0;
}

static int run(const od_promql_source *src, const od_promql_expr *e, int64_t start, int64_t end, int64_t step,
               int instant, const od_promql_opts *opts, od_promql_result **out, od_err *err_in)
{
    od_err local;
    od_err *const err = err_in ? err_in : &local;
    *out = NULL;
    if (!instant && (step <= 0 || end < start))
        return od_err_set(err, OD_BADREQ, step <= 0 ? "zero or negative query resolution step widths are not accepted. Try a positive integer"
                                                     : "end timestamp must not be before start time");
    if (!instant && (end - start) / step > 11000)
        return od_err_set(err, OD_BADREQ, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
    if (!instant && od_promql_expr_type(e) != OD_PROMQL_SCALAR && od_promql_expr_type(e) != OD_PROMQL_VECTOR)
        return od_err_set(err, OD_BADREQ, "invalid expression type \"%s\" for range query, must be Scalar or instant Vector",
                          od_promql_expr_type(e) == OD_PROMQL_MATRIX ? "range vector" : "string");
    pq_ev *ev = calloc(1, sizeof *ev);
    od_promql_result *r = calloc(1, sizeof *r);
    jmp_buf *jb = malloc(sizeof *jb);
    if (!ev || !r || !jb) {
        free(ev); free(r); free(jb);
        return od_err_set(err, OD_NOMEM, "promql: out of memory");
    }
    ev->src = src;
    if (opts) ev->opts = *opts;
    if (!ev->opts.lookback_ms) ev->opts.lookback_ms = 300000;
    if (!ev->opts.subquery_step_ms) ev->opts.subquery_step_ms = 60000;
    if (!ev->opts.max_samples) ev->opts.max_samples = 50000000;
    if (ev->opts.timeout_ms) ev->deadline_ns = now_ns() + ev->opts.timeout_ms * 1000000LL;
    ev->start = ev->qstart = start;
    ev->end = ev->qend = end;
    ev->step = instant ? 1 : step;
    ev->nsteps = instant ? 1 : (size_t)((end - start) / step) + 1;
    ev->jb = jb;
    ev->err = err;
    ev->is_range_query = !instant;
    ev->qsrc = e->src;
    int rc = OD_OK;
    if (eval_protected(ev, e->root, instant, r) != 0) {
        rc = err->code ? err->code : OD_BADREQ;
        result_free_partial(r);
        r = NULL;
    }
    while (ev->arena) {
        pq_arena_blk *b = ev->arena;
        ev->arena = b->next;
        free(b);
    }
    free(jb);
    free(ev);
    *out = r;
    return rc;
}

int od_promql_eval_instant(const od_promql_source *src, const od_promql_expr *e, int64_t t,
                           const od_promql_opts *opts, od_promql_result **out, od_err *err)
{
    return run(src, e, t, t, 1, 1, opts, out, err);
}

int od_promql_eval_range(const od_promql_source *src, const od_promql_expr *e, int64_t start,
                         int64_t end, int64_t step, const od_promql_opts *opts,
                         od_promql_result **out, od_err *err)
{
    return run(src, e, start, end, step, 0, opts, out, err);
}

int od_promql_query_instant(const od_promql_source *src, const char *q, int64_t t,
                            const od_promql_opts *opts, od_promql_result **out, od_err *err)
{
    od_promql_expr *e;
    *out = NULL;
    int rc = od_promql_parse(q, &e, err);
    if (rc) return rc;
    rc = od_promql_eval_instant(src, e, t, opts, out, err);
    od_promql_expr_free(e);
    return rc;
}

int od_promql_query_range(const od_promql_source *src, const char *q, int64_t start, int64_t end,
                          int64_t step, const od_promql_opts *opts, od_promql_result **out,
                          od_err *err)
{
    od_promql_expr *e;
    *out = NULL;
    int rc = od_promql_parse(q, &e, err);
    if (rc) return rc;
    rc = od_promql_eval_range(src, e, start, end, step, opts, out, err);
    od_promql_expr_free(e);
    return rc;
}
