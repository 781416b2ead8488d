/*
 * iter.c — the merging iterator: every version of every key across memtables, L0 tables and
 * sorted runs in (key asc, seq desc) order (od_merge, used by compaction too), and on top of
 * it the public od_iter, which shows one consistent snapshot: for each user key the newest
 * entry with seq ≤ the read seq, hidden when it is a tombstone or has expired.
 *
 * Sources are few (one mutable memtable, a couple of immutable ones, up to the L0 trigger of
 * L0 tables and a handful of runs), so the merge picks the smallest current entry by a
 * linear scan instead of a heap. A sorted run is one source: its tables have disjoint,
 * ascending key ranges, so it opens a table iterator only when the cursor reaches that table.
 *
 * Ordering guarantee the visibility rule relies on: sources are given newest first and for
 * one user key every entry of a newer source has a higher seq than any entry of an older
 * one, so "first entry of the key in merge order with seq ≤ snapshot" is the visible one.
 *
 * Compaction's merge (od_merge_new_tables) reads its tables with readahead: one ranged read
 * fetches OD_COMPACTION_READAHEAD bytes of consecutive data blocks, so compacting a table costs
 * a few requests instead of one per data block (on S3 each request is milliseconds to tens of
 * milliseconds). Reads for users (od_merge_new) stay block-sized and go through the cache.
 */
#include <stdlib.h>
#include <string.h>

#include "lsm_int.h"

enum { SRC_MT, SRC_SST, SRC_RUN };

#define OD_COMPACTION_READAHEAD (4u << 20)

typedef struct src {
    int kind;
    od_mt_iter mt;
    od_table *table;  /* SRC_SST */
    od_vrun *run;     /* SRC_RUN */
    size_t ti;        /* SRC_RUN: current table */
    od_sst_iter *si;  /* SRC_SST / SRC_RUN */
    size_t ra;        /* readahead bytes for its table iterators (0 = one block per read) */
    int valid;
    od_entry e;
} src;

struct od_merge {
    size_t n;
    src *s;
    int cur; /* index of the smallest source, -1 = exhausted */
};

struct od_iter {
    od_db *db;
    od_merge *m;
    od_version *v;
    uint64_t seq;
    int64_t now;
    od_buf lo, hi;
    int has_hi;
    od_buf key, val;
    int valid;
};

static int src_load(src *s)
{
    if (s->kind == SRC_MT) {
        s->valid = od_mt_iter_valid(&s->mt);
        if (s->valid) od_mt_iter_entry(&s->mt, &s->e);
    } else {
        s->valid = s->si && od_sst_iter_valid(s->si);
        if (s->valid) s->e = *od_sst_iter_entry(s->si);
    }
    return OD_OK;
}

static int run_open_table(src *s, size_t ti, od_err *err)
{
    od_sst_iter_free(s->si);
    s->si = NULL;
    s->ti = ti;
    if (ti >= s->run->n) return OD_OK;
    int rc = od_sst_iter_new(s->run->t[ti]->sst, &s->si, err);
    if (rc == OD_OK && s->ra) od_sst_iter_set_readahead(s->si, s->ra);
    return rc;
}

static int src_first(src *s, od_err *err)
{
    int rc = OD_OK;
    switch (s->kind) {
    case SRC_MT:
        od_mt_iter_first(&s->mt);
        break;
    case SRC_SST:
        rc = od_sst_iter_first(s->si, err);
        break;
    case SRC_RUN:
        for (size_t ti = 0; !rc && ti < s->run->n; ti++) {
            if ((rc = run_open_table(s, ti, err))) break;
            if ((rc = od_sst_iter_first(s->si, err))) break;
            if (od_sst_iter_valid(s->si)) break;
        }
        break;
    }
    if (rc) return rc;
    return src_load(s);
}

static int src_seek(src *s, const uint8_t *key, size_t klen, od_err *err)
{
    int rc = OD_OK;
    switch (s->kind) {
    case SRC_MT:
        od_mt_iter_seek(&s->mt, key, klen);
        break;
    case SRC_SST:
        rc = od_sst_iter_seek(s->si, key, klen, err);
        break;
    case SRC_RUN: {
        size_t lo = 0, hi = s->run->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            od_table *t = s->run->t[mid];
            if (od_key_cmp(t->desc.max_key, t->desc.max_klen, key, klen) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if ((rc = run_open_table(s, lo, err))) break;
        if (!s->si) break;
        if ((rc = od_sst_iter_seek(s->si, key, klen, err))) break;
        while (!od_sst_iter_valid(s->si) && s->ti + 1 < s->run->n) {
            if ((rc = run_open_table(s, s->ti + 1, err))) break;
            if ((rc = od_sst_iter_first(s->si, err))) break;
        }
        break;
    }
    }
    if (rc) return rc;
    return src_load(s);
}

static int src_next(src *s, od_err *err)
{
    int rc = OD_OK;
    switch (s->kind) {
    case SRC_MT:
        od_mt_iter_next(&s->mt);
        break;
    case SRC_SST:
        rc = od_sst_iter_next(s->si, err);
        break;
    case SRC_RUN:
        if ((rc = od_sst_iter_next(s->si, err))) break;
        while (!od_sst_iter_valid(s->si) && s->ti + 1 < s->run->n) {
            if ((rc = run_open_table(s, s->ti + 1, err))) break;
            if ((rc = od_sst_iter_first(s->si, err))) break;
        }
        break;
    }
    if (rc) return rc;
    return src_load(s);
}

static void merge_pick(od_merge *m)
{
    int best = -1;
    for (size_t i = 0; i < m->n; i++) {
        src *s = &m->s[i];
        if (!s->valid) continue;
        if (best < 0) {
            best = (int)i;
            continue;
        }
        const od_entry *a = &s->e, *b = &m->s[best].e;
        int c = od_key_cmp(a->key, a->klen, b->key, b->klen);
        if (c < 0 || (c == 0 && a->seq > b->seq)) best = (int)i;
    }
    m->cur = best;
}

static int merge_alloc(size_t n, od_merge **out, od_err *err)
{
    od_merge *m = calloc(1, sizeof *m);
    if (!m || !(m->s = calloc(n ? n : 1, sizeof(src)))) {
        free(m);
        return od_err_set(err, OD_NOMEM, "iter: out of memory");
    }
    m->cur = -1;
    *out = m;
    return OD_OK;
}

static int add_tables(od_merge *m, od_table **l0, size_t nl0, od_vrun *runs, size_t nruns, size_t ra,
                      od_err *err)
{
    for (size_t i = 0; i < nl0; i++) {
        src *s = &m->s[m->n++];
        s->kind = SRC_SST;
        s->table = l0[i];
        s->ra = ra;
        if (od_sst_iter_new(l0[i]->sst, &s->si, err)) return err ? err->code : OD_NOMEM;
        if (ra) od_sst_iter_set_readahead(s->si, ra);
    }
    for (size_t r = 0; r < nruns; r++) {
        src *s = &m->s[m->n++];
        s->kind = SRC_RUN;
        s->run = &runs[r];
        s->ra = ra;
    }
    return OD_OK;
}

int od_merge_new(od_version *v, int include_mem, od_merge **out, od_err *err)
{
    size_t n = (include_mem ? 1 + v->nimm : 0) + v->ts->nl0 + v->ts->nruns;
    int rc = merge_alloc(n, out, err);
    if (rc) return rc;
    od_merge *m = *out;
    if (include_mem) {
        m->s[m->n].kind = SRC_MT;
        od_mt_iter_init(&m->s[m->n++].mt, v->mem);
        for (size_t i = 0; i < v->nimm; i++) {
            m->s[m->n].kind = SRC_MT;
            od_mt_iter_init(&m->s[m->n++].mt, v->imm[i]);
        }
    }
    if ((rc = add_tables(m, v->ts->l0, v->ts->nl0, v->ts->runs, v->ts->nruns, 0, err))) {
        od_merge_free(m);
        *out = NULL;
    }
    return rc;
}

int od_merge_new_tables(od_table **l0, size_t nl0, od_vrun *runs, size_t nruns, od_merge **out, od_err *err)
{
    int rc = merge_alloc(nl0 + nruns, out, err);
    if (rc) return rc;
    if ((rc = add_tables(*out, l0, nl0, runs, nruns, OD_COMPACTION_READAHEAD, err))) {
        od_merge_free(*out);
        *out = NULL;
    }
    return rc;
}

int od_merge_first(od_merge *m, od_err *err)
{
    for (size_t i = 0; i < m->n; i++) {
        int rc = src_first(&m->s[i], err);
        if (rc) return rc;
    }
    merge_pick(m);
    return OD_OK;
}

int od_merge_seek(od_merge *m, const uint8_t *key, size_t klen, od_err *err)
{
    for (size_t i = 0; i < m->n; i++) {
        int rc = src_seek(&m->s[i], key, klen, err);
        if (rc) return rc;
    }
    merge_pick(m);
    return OD_OK;
}

int od_merge_next(od_merge *m, od_err *err)
{
    if (m->cur < 0) return OD_OK;
    int rc = src_next(&m->s[m->cur], err);
    if (rc) return rc;
    merge_pick(m);
    return OD_OK;
}

int od_merge_valid(const od_merge *m)
{
    return m->cur >= 0;
}

const od_entry *od_merge_entry(const od_merge *m)
{
    return m->cur >= 0 ? &m->s[m->cur].e : NULL;
}

void od_merge_free(od_merge *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) od_sst_iter_free(m->s[i].si);
    free(m->s);
    free(m);
}

/* ---------------- the public iterator ---------------- */

/* From the merge cursor, find the next visible user key (< hi). */
static int find_visible(od_iter *it, od_err *err)
{
    od_merge *m = it->m;
    int rc;
    it->valid = 0;
    while (od_merge_valid(m)) {
        const od_entry *e = od_merge_entry(m);
        if (it->has_hi && od_key_cmp(e->key, e->klen, it->hi.data, it->hi.len) >= 0) return OD_OK;
        if (e->seq > it->seq) {
            if ((rc = od_merge_next(m, err))) return rc;
            continue;
        }
        od_buf_reset(&it->key);
        if (od_buf_append(&it->key, e->key, e->klen)) return od_err_set(err, OD_NOMEM, "iter: out of memory");
        int vis = od_entry_visible(e, it->now);
        if (vis) {
            od_buf_reset(&it->val);
            if (od_buf_append(&it->val, e->val, e->vlen) || od_buf_reserve(&it->val, 1))
                return od_err_set(err, OD_NOMEM, "iter: out of memory");
            it->val.data[it->val.len] = 0;
        }
        /* skip the older versions of this key */
        for (;;) {
            if ((rc = od_merge_next(m, err))) return rc;
            if (!od_merge_valid(m)) break;
            e = od_merge_entry(m);
            if (od_key_cmp(e->key, e->klen, it->key.data, it->key.len) != 0) break;
        }
        if (vis) {
            it->valid = 1;
            return OD_OK;
        }
    }
    return OD_OK;
}

int od_db_iter(od_db *db, const od_snapshot *snap, const void *lo, size_t lolen, const void *hi, size_t hilen,
               od_iter **out, od_err *err)
{
    *out = NULL;
    od_iter *it = calloc(1, sizeof *it);
    if (!it) return od_err_set(err, OD_NOMEM, "iter: out of memory");
    atomic_fetch_add_explicit(&db->st_iters, 1, memory_order_relaxed);
    it->db = db;
    if (snap) {
        it->v = snap->v;
        atomic_fetch_add(&it->v->refs, 1);
        it->seq = snap->seq;
    } else {
        it->v = od_version_get(db);
        it->seq = atomic_load_explicit(&db->visible_seq, memory_order_acquire);
    }
    it->now = od_now_ms();
    int rc = OD_OK;
    if (lolen && od_buf_append(&it->lo, lo, lolen)) rc = OD_NOMEM;
    if (hi) {
        it->has_hi = 1;
        if (hilen && od_buf_append(&it->hi, hi, hilen)) rc = OD_NOMEM;
    }
    if (rc) {
        od_iter_free(it);
        return od_err_set(err, rc, "iter: out of memory");
    }
    if ((rc = od_merge_new(it->v, 1, &it->m, err))) {
        od_iter_free(it);
        return rc;
    }
    rc = lolen ? od_merge_seek(it->m, it->lo.data, it->lo.len, err) : od_merge_first(it->m, err);
    if (rc == OD_OK) rc = find_visible(it, err);
    if (rc) {
        od_iter_free(it);
        return rc;
    }
    *out = it;
    return OD_OK;
}

int od_iter_valid(const od_iter *it)
{
    return it->valid;
}

int od_iter_next(od_iter *it, od_err *err)
{
    if (!it->valid) return OD_OK;
    return find_visible(it, err);
}

int od_iter_seek(od_iter *it, const void *key, size_t klen, od_err *err)
{
    if (od_key_cmp(key, klen, it->lo.data, it->lo.len) < 0) {
        key = it->lo.data;
        klen = it->lo.len;
    }
    int rc = od_merge_seek(it->m, key, klen, err);
    if (rc) {
        it->valid = 0;
        return rc;
    }
    return find_visible(it, err);
}

const uint8_t *od_iter_key(const od_iter *it, size_t *klen)
{
    if (!it->valid) {
        if (klen) *klen = 0;
        return NULL;
    }
    if (klen) *klen = it->key.len;
    return it->key.data ? it->key.data : (const uint8_t *)"";
}

const uint8_t *od_iter_value(const od_iter *it, size_t *vlen)
{
    if (!it->valid) {
        if (vlen) *vlen = 0;
        return NULL;
    }
    if (vlen) *vlen = it->val.len;
    return it->val.data ? it->val.data : (const uint8_t *)"";
}

void od_iter_free(od_iter *it)
{
    if (!it) return;
    od_merge_free(it->m);
    od_version_unref(it->v);
    od_buf_free(&it->lo);
    od_buf_free(&it->hi);
    od_buf_free(&it->key);
    od_buf_free(&it->val);
    free(it);
}
