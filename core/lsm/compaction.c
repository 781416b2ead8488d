/*
 * compaction.c — everything that writes collections: memtable flushes to L0 and
 * size-tiered compaction of L0 (and the newest sorted runs) into a new sorted run.
 *
 * L0 flush (od_flush_imm): immutable memtables are flushed oldest first by one thread at a
 * time (fmu), so L0 collections reach the manifest in sequence order. Each commit sets
 * last_l0_seq to the memtable's max seq and wal_replay_from to the WAL id that held the
 * batches after it; WAL replay then skips what L0 already has.
 *
 * Compaction (od_compact_run): inputs are every L0 table plus the newest sorted runs whose
 * size is at most twice what is already selected (size-tiered); with force, everything.
 * For each user key the output keeps every version newer than the oldest live snapshot and
 * the newest version at or below it; that version is dropped when it is dead (tombstone,
 * expired TTL, rejected by the compaction filter) and the output is the bottom run, and
 * turned into a tombstone when dead above the bottom (dropping it there would resurrect
 * older versions in runs below). Output objects are only referenced once the manifest
 * commits them, so a crash leaves garbage for GC, never a half-applied compaction. The
 * commit fails with OD_FENCED when a newer compactor epoch is in the manifest, and with
 * OD_CONFLICT when an input disappeared (someone else compacted it).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lsm_int.h"

static void new_sst_id(char *id, size_t n)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)(uintptr_t)id ^ (uint64_t)od_now_ms();
    snprintf(id, n, "%012" PRIx64 "%016" PRIx64, (uint64_t)(od_now_ms() & 0xffffffffffffll), r);
}

static int new_builder(od_db *db, od_sst_builder **b, od_err *err)
{
    od_sst_opts so;
    od_sst_opts_init(&so);
    so.block_size = db->o.block_size;
    so.bloom_bits_per_key = db->o.bloom_bits_per_key;
    return od_sst_builder_new(&so, b, err);
}

int od_table_build_and_put(od_db *db, od_sst_builder *b, od_sst_desc *d, od_err *err)
{
    od_buf obj = {0};
    od_sst_props props;
    memset(&props, 0, sizeof props);
    memset(d, 0, sizeof *d);
    int rc = od_sst_builder_finish(b, &obj, &props, err);
    if (rc) goto out;
    new_sst_id(d->id, sizeof d->id);
    char key[64];
    od_sst_key(key, sizeof key, d->id);
    rc = od_store_put(db->store, key, obj.data, obj.len, OD_PUT_ALWAYS, NULL, NULL, err);
    if (rc) {
        od_err_prefix(err, "compaction: writing collection %s", key);
        goto out;
    }
    d->size = obj.len;
    d->entries = props.entries;
    d->min_seq = props.min_seq;
    d->max_seq = props.max_seq;
    d->min_klen = props.min_key.len;
    d->max_klen = props.max_key.len;
    d->min_key = malloc(d->min_klen ? d->min_klen : 1);
    d->max_key = malloc(d->max_klen ? d->max_klen : 1);
    if (!d->min_key || !d->max_key) {
        od_sst_desc_free(d);
        rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
        goto out;
    }
    if (d->min_klen) memcpy(d->min_key, props.min_key.data, d->min_klen);
    if (d->max_klen) memcpy(d->max_key, props.max_key.data, d->max_klen);
out:
    od_sst_props_free(&props);
    od_buf_free(&obj);
    return rc;
}

/* ---------------- L0 flush ---------------- */

struct l0_ctx {
    od_db *db;
    od_sst_desc *desc; /* NULL when the memtable was empty */
    uint64_t max_seq, replay_from;
};

static int l0_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct l0_ctx *c = ctx;
    if (m->writer_epoch > c->db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)c->db->epoch);
    if (c->desc) {
        od_sst_desc *n = malloc((m->nl0 + 1) * sizeof *n);
        if (!n) return od_err_set(err, OD_NOMEM, "flush: out of memory");
        if (od_sst_desc_copy(&n[0], c->desc)) {
            free(n);
            return od_err_set(err, OD_NOMEM, "flush: out of memory");
        }
        if (m->nl0) memcpy(n + 1, m->l0, m->nl0 * sizeof *n);
        free(m->l0);
        m->l0 = n;
        m->nl0++;
    }
    if (c->max_seq > m->last_l0_seq) m->last_l0_seq = c->max_seq;
    if (c->replay_from > m->wal_replay_from) m->wal_replay_from = c->replay_from;
    return OD_OK;
}

static int flush_one(od_db *db, od_memtable *imm, uint64_t replay_from, od_err *err)
{
    int rc;
    uint64_t max_seq = od_mt_max_seq(imm);
    /* publish only acknowledged data: the WAL must hold everything in this memtable */
    if ((rc = od_db_wait_durable(db, max_seq, err))) return rc;
    od_sst_desc desc;
    int have = 0;
    if (od_mt_count(imm) > 0) {
        od_sst_builder *b;
        if ((rc = new_builder(db, &b, err))) return rc;
        od_mt_iter it;
        od_mt_iter_init(&it, imm);
        od_entry e, prev = {0};
        int has_prev = 0;
        for (od_mt_iter_first(&it); od_mt_iter_valid(&it); od_mt_iter_next(&it)) {
            od_mt_iter_entry(&it, &e);
            if (has_prev && prev.seq == e.seq && od_key_cmp(prev.key, prev.klen, e.key, e.klen) == 0)
                continue; /* an earlier op of the same batch on the same key */
            if (e.kind == OD_KIND_DEL) e.vlen = 0;
            if ((rc = od_sst_builder_add(b, &e, err))) break;
            prev = e;
            has_prev = 1;
        }
        if (rc == OD_OK) rc = od_table_build_and_put(db, b, &desc, err);
        od_sst_builder_free(b);
        if (rc) return rc;
        have = 1;
    }
    struct l0_ctx c = {db, have ? &desc : NULL, max_seq, replay_from};
    pthread_mutex_lock(&db->man_mu);
    rc = od_manifest_update(db->store, &db->man, db->writer_id, l0_edit, &c, err);
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, imm, err);
    pthread_mutex_unlock(&db->man_mu);
    if (have) od_sst_desc_free(&desc);
    if (rc == OD_OK) atomic_fetch_add(&db->st_mem_flushes, 1);
    return rc;
}

int od_flush_imm(od_db *db, od_err *err)
{
    int rc = OD_OK;
    pthread_mutex_lock(&db->fmu);
    for (;;) {
        od_version *v = od_version_get(db);
        if (v->nimm == 0) {
            od_version_unref(v);
            break;
        }
        od_memtable *imm = v->imm[v->nimm - 1];
        uint64_t rf = v->imm_replay_from[v->nimm - 1];
        od_mt_ref(imm);
        od_version_unref(v);
        rc = flush_one(db, imm, rf, err);
        od_mt_unref(imm);
        if (rc) break;
    }
    pthread_mutex_unlock(&db->fmu);
    if (rc == OD_FENCED) od_db_set_bg_error(db, rc, err);
    return rc;
}

/* ---------------- compaction ---------------- */

static uint64_t run_bytes(const od_vrun *r)
{
    uint64_t s = 0;
    for (size_t i = 0; i < r->n; i++) s += r->t[i]->desc.size;
    return s;
}

struct compact_ctx {
    od_db *db;
    od_tset *ts;
    size_t nruns_in;
    od_sst_desc *out;
    size_t nout;
    int64_t first_out_ms; /* when the first output object was written (0 = none yet) */
};

static int has_id(const od_sst_desc *d, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].id, id) == 0) return 1;
    return 0;
}

static int compact_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct compact_ctx *c = ctx;
    od_tset *ts = c->ts;
    if (!c->db->o.compactor_only && m->writer_epoch > c->db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)c->db->epoch);
    if (m->compactor_epoch > c->db->compactor_epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer compactor (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->compactor_epoch, (unsigned long long)c->db->compactor_epoch);
    /* Uncommitted outputs are protected from GC only by their age (gc_min_age_ms). A compaction
     * that ran for more than half of that may have lost its first outputs to a GC pass (ours or
     * another process's): never commit a manifest that could point at a deleted object. */
    if (c->first_out_ms && od_now_ms() - c->first_out_ms > (int64_t)c->db->o.gc_min_age_ms / 2)
        return od_err_set(err, OD_CONFLICT,
                          "compaction: outputs are older than half the GC minimum age (%u ms); not committing "
                          "them (raise gc_min_age_ms for compactions this long)",
                          c->db->o.gc_min_age_ms);
    /* every input must still be there, and the input runs must be the newest ones */
    for (size_t i = 0; i < ts->nl0; i++)
        if (!has_id(m->l0, m->nl0, ts->l0[i]->desc.id))
            return od_err_set(err, OD_CONFLICT, "compaction: input %s vanished", ts->l0[i]->desc.id);
    if (m->nruns < c->nruns_in) return od_err_set(err, OD_CONFLICT, "compaction: input runs changed");
    for (size_t r = 0; r < c->nruns_in; r++)
        if (m->runs[r].n != ts->runs[r].n || strcmp(m->runs[r].ssts[0].id, ts->runs[r].t[0]->desc.id) != 0)
            return od_err_set(err, OD_CONFLICT, "compaction: input runs changed");
    /* remove the L0 inputs */
    size_t j = 0;
    for (size_t i = 0; i < m->nl0; i++) {
        int in = 0;
        for (size_t k = 0; k < ts->nl0 && !in; k++) in = strcmp(m->l0[i].id, ts->l0[k]->desc.id) == 0;
        if (in)
            od_sst_desc_free(&m->l0[i]);
        else
            m->l0[j++] = m->l0[i];
    }
    m->nl0 = j;
    /* replace the input runs with the output run */
    for (size_t r = 0; r < c->nruns_in; r++) {
        for (size_t i = 0; i < m->runs[r].n; i++) od_sst_desc_free(&m->runs[r].ssts[i]);
        free(m->runs[r].ssts);
    }
    size_t keep = m->nruns - c->nruns_in;
    size_t nn = keep + (c->nout ? 1 : 0);
    od_run *runs = calloc(nn ? nn : 1, sizeof *runs);
    if (!runs) return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    size_t w = 0;
    if (c->nout) {
        runs[0].id = m->next_run_id ? m->next_run_id : 1;
        m->next_run_id = runs[0].id + 1;
        runs[0].ssts = calloc(c->nout, sizeof(od_sst_desc));
        if (!runs[0].ssts) {
            free(runs);
            return od_err_set(err, OD_NOMEM, "compaction: out of memory");
        }
        for (size_t i = 0; i < c->nout; i++) {
            if (od_sst_desc_copy(&runs[0].ssts[i], &c->out[i])) {
                for (size_t k = 0; k < i; k++) od_sst_desc_free(&runs[0].ssts[k]);
                free(runs[0].ssts);
                free(runs);
                return od_err_set(err, OD_NOMEM, "compaction: out of memory");
            }
        }
        runs[0].n = c->nout;
        w = 1;
    }
    for (size_t r = c->nruns_in; r < m->nruns; r++) runs[w++] = m->runs[r];
    free(m->runs);
    m->runs = runs;
    m->nruns = nn;
    return OD_OK;
}

/* Push the finished builder as one output table. */
static int emit_table(od_db *db, od_sst_builder **b, struct compact_ctx *c, uint64_t *bytes_out, od_err *err)
{
    if (od_sst_builder_entries(*b) == 0) return OD_OK;
    od_sst_desc *n = realloc(c->out, (c->nout + 1) * sizeof *n);
    if (!n) return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    c->out = n;
    if (!c->first_out_ms) c->first_out_ms = od_now_ms();
    int rc = od_table_build_and_put(db, *b, &c->out[c->nout], err);
    if (rc) return rc;
    *bytes_out += c->out[c->nout].size;
    c->nout++;
    od_sst_builder_free(*b);
    *b = NULL;
    return new_builder(db, b, err);
}

int od_compact_run(od_db *db, int force, int *did, od_err *err)
{
    *did = 0;
    pthread_mutex_lock(&db->cmu);
    od_version *v = od_version_get(db);
    od_tset *ts = v->ts;
    atomic_fetch_add(&ts->refs, 1);
    od_version_unref(v);
    int rc = OD_OK;
    od_sst_builder *b = NULL;
    od_merge *mg = NULL;
    struct compact_ctx c = {db, ts, 0, NULL, 0, 0};
    uint64_t in_bytes = 0, out_bytes = 0;
    int work = force ? (ts->nl0 > 0 || ts->nruns > 1) : ts->nl0 >= (size_t)db->o.l0_compaction_trigger;
    if (!work) goto out;
    for (size_t i = 0; i < ts->nl0; i++) in_bytes += ts->l0[i]->desc.size;
    if (force) {
        c.nruns_in = ts->nruns;
    } else {
        while (c.nruns_in < ts->nruns && run_bytes(&ts->runs[c.nruns_in]) <= 2 * (in_bytes ? in_bytes : 1))
            in_bytes += run_bytes(&ts->runs[c.nruns_in++]);
    }
    if (force)
        for (size_t r = 0; r < ts->nruns; r++) in_bytes += run_bytes(&ts->runs[r]);
    int bottom = c.nruns_in == ts->nruns;
    uint64_t min_snap = od_db_min_snapshot_seq(db);
    int64_t now = od_now_ms();
    size_t target = db->o.memtable_bytes < (1u << 20) ? (1u << 20) : db->o.memtable_bytes;
    if ((rc = new_builder(db, &b, err))) goto out;
    if ((rc = od_merge_new_tables(ts->l0, ts->nl0, ts->runs, c.nruns_in, &mg, err))) goto out;
    if ((rc = od_merge_first(mg, err))) goto out;
    od_buf cur = {0};
    int have_cur = 0, settled = 0;
    while (od_merge_valid(mg)) {
        od_entry e = *od_merge_entry(mg);
        int same = have_cur && od_key_cmp(e.key, e.klen, cur.data, cur.len) == 0;
        if (!same) {
            /* a key boundary: the only place an output table may end */
            if (have_cur && od_sst_builder_size(b) >= target && (rc = emit_table(db, &b, &c, &out_bytes, err))) break;
            od_buf_reset(&cur);
            if (od_buf_append(&cur, e.key, e.klen)) {
                rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
                break;
            }
            have_cur = 1;
            settled = 0;
        }
        int emit = 0;
        if (e.seq > min_snap) {
            emit = 1; /* a live snapshot may need it */
        } else if (!settled) {
            settled = 1;
            int dead = !od_entry_visible(&e, now);
            if (!dead && db->o.compaction_filter &&
                db->o.compaction_filter(db->o.compaction_filter_ctx, e.key, e.klen, e.val, e.vlen, now))
                dead = 1;
            if (dead && !bottom) {
                e.kind = OD_KIND_DEL;
                e.vlen = 0;
                e.expire_ms = 0;
                emit = 1;
            } else {
                emit = !dead;
            }
        }
        if (emit && e.kind == OD_KIND_DEL) e.vlen = 0;
        if (emit && (rc = od_sst_builder_add(b, &e, err))) break;
        if ((rc = od_merge_next(mg, err))) break;
    }
    od_buf_free(&cur);
    if (rc == OD_OK) rc = emit_table(db, &b, &c, &out_bytes, err);
    if (rc) goto out;
    pthread_mutex_lock(&db->man_mu);
    rc = od_manifest_update(db->store, &db->man, db->writer_id, compact_edit, &c, err);
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, NULL, err);
    pthread_mutex_unlock(&db->man_mu);
    if (rc == OD_OK) {
        atomic_fetch_add(&db->st_compactions, 1);
        atomic_fetch_add(&db->st_cbytes_in, in_bytes);
        atomic_fetch_add(&db->st_cbytes_out, out_bytes);
    }
out:
    od_merge_free(mg);
    od_sst_builder_free(b);
    for (size_t i = 0; i < c.nout; i++) od_sst_desc_free(&c.out[i]);
    free(c.out);
    od_tset_unref(ts);
    pthread_mutex_unlock(&db->cmu);
    if (rc == OD_FENCED && db->o.compactor_only) od_db_set_bg_error(db, rc, err);
    if (rc == OD_OK) *did = work;
    return rc;
}
