/*
 * compaction.c — everything that writes collections: memtable flushes to L0 and
 * size-tiered compaction of L0 (and the newest sorted runs) into a new sorted run.
 *
 * L0 flush (od_flush_imm): immutable memtables are flushed oldest first by one thread at a
 * time (fmu), so L0 collections reach the manifest in sequence order. Each commit sets
 * last_l0_seq to the memtable's max seq and wal_replay_from to the WAL id that held the
 * batches after it; WAL replay then skips what L0 already has. A commit whose answer was lost
 * but which landed is recognised on the retry (last_l0_seq already covers the memtable).
 * The output is pinned from before its PUT until its commit is over — in memory (db->pins)
 * and by a pin object pin/<epoch>-<id>.pin in the store — so GC in this or any other process
 * (a compactor process) keeps it however long the commit takes (gc.c).
 *
 * Compaction (od_compact_run): inputs are every L0 table plus the newest sorted runs whose
 * size is at most twice what is already selected (size-tiered); with force, everything.
 * For each user key the output keeps every version newer than the oldest live snapshot and
 * the newest version at or below it; that version is dropped when it is dead (tombstone,
 * expired TTL, rejected by the compaction filter) and the output is the bottom run, and
 * turned into a tombstone when dead above the bottom (dropping it there would resurrect
 * older versions in runs below). Output is cut into collections of about
 * compaction_output_bytes at key boundaries (the builder is pre-sized for that, so it never
 * doubles past it).
 *
 * The job protocol (see docs/architecture.md): before the first output is written, a
 * manifest commit records the job (id, our compactor epoch, writer epoch and handle id, the
 * input L0 ids and run ids, the bottom flag, and the id the first output will get). Every
 * output but the last is PUT under the recorded pending id and then appended to the job's
 * output list by a commit that also names the next pending id; the last one goes out with
 * the final commit, which removes the inputs, installs the outputs as one run and clears the
 * job. So every output object is referenced by the manifest from before it exists (GC keeps
 * it however long the compaction runs), and a compaction that stops (crash, store trouble,
 * close, fenced) is
 * resumed by the next run of a handle allowed to take it over: it keeps the recorded outputs
 * and merges on from after the last recorded output's max key. A job may be taken over when
 * it is ours, when its compactor epoch is older than ours, or when a writer handle with an
 * older writer epoch (fenced) ran it. Every commit checks the epochs (OD_FENCED) and that
 * the job is still ours; the writer's own L0 commits interleave through the CAS loop.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lsm_int.h"
#include "od_coding.h"
#include "od_crc32c.h"

static void new_sst_id(char *id, size_t n)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)(uintptr_t)id ^ (uint64_t)od_now_ms();
    snprintf(id, n, "%012" PRIx64 "%016" PRIx64, (uint64_t)(od_now_ms() & 0xffffffffffffll), r);
}

static int new_builder(od_db *db, od_sst_builder **b, size_t expect, od_err *err)
{
    od_sst_opts so;
    od_sst_opts_init(&so);
    so.expect_bytes = expect;
    so.block_size = db->o.block_size;
    so.bloom_bits_per_key = db->o.bloom_bits_per_key;
    return od_sst_builder_new(&so, b, err);
}

int od_table_build_and_put(od_db *db, od_sst_builder *b, od_sst_desc *d, const char *id, od_err *err)
{
    /* the object stays the builder's (no copy); the caller's od_sst_builder_free returns it
     * to the OS (od_bigbuf.h) */
    od_sst_props props;
    memset(&props, 0, sizeof props);
    memset(d, 0, sizeof *d);
    const uint8_t *odata = NULL;
    size_t olen = 0;
    int rc = od_sst_builder_finish_ref(b, &odata, &olen, &props, err);
    if (rc) goto out;
    if (id)
        snprintf(d->id, sizeof d->id, "%s", id);
    else
        new_sst_id(d->id, sizeof d->id);
    char key[64];
    od_sst_key(key, sizeof key, d->id);
    rc = od_store_put(db->store, key, odata, olen, OD_PUT_ALWAYS, NULL, NULL, err);
    if (rc) {
        od_err_prefix(err, "compaction: writing collection %s", key);
        goto out;
    }
    d->size = olen;
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
    return rc;
}

/* ---------------- L0 flush ---------------- */

struct l0_ctx {
    od_db *db;
    od_sst_desc *desc; /* NULL when the memtable was empty */
    uint64_t max_seq, replay_from;
    int landed; /* set by l0_edit: an earlier attempt of this flush is already committed */
};

static int l0_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct l0_ctx *c = ctx;
    if (m->writer_epoch > c->db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)c->db->epoch);
    if (c->desc && m->last_l0_seq >= c->max_seq) {
        /* seqs only grow, so L0 already holds this memtable: an earlier attempt whose answer
         * was lost committed it (its collection is the one listed; ours becomes garbage) */
        c->landed = 1;
        return od_err_set(err, OD_EXISTS, "flush: memtable up to seq %llu is already in L0",
                          (unsigned long long)c->max_seq);
    }
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

/* Pin an L0 output (before its PUT) until its commit is over, so that GC keeps it however
 * slow the commit is (CAS conflicts, a slow store, a paused process): in this process by the
 * in-memory pin (db->pins), in every process (a compactor process's GC) by the pin object
 * pin/<epoch>-<id>.pin. Order: memory pin, pin object, collection PUT, commit, pin object
 * DELETE, memory unpin; gc.c lists sst/, then pin/, then reads the memory pins, then the
 * manifest, so a collection it lists is pinned or already committed (docs/architecture.md). */
static void pin_add(od_db *db, od_sst_pin *p)
{
    pthread_mutex_lock(&db->tmu);
    p->next = db->pins;
    db->pins = p;
    pthread_mutex_unlock(&db->tmu);
}

static void pin_del(od_db *db, od_sst_pin *p)
{
    pthread_mutex_lock(&db->tmu);
    for (od_sst_pin **pp = &db->pins; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    pthread_mutex_unlock(&db->tmu);
}

/* The pin object (docs/formats.md): "ODPN" | version u8 (1) | 3 reserved | writer epoch u64 |
 * writer id u64 | created_ms i64 | masked CRC32C u32 of the 32 bytes before it. GC reads only
 * its key; the body says who wrote it, for people looking at a store. */
#define PIN_BYTES 36

static int pin_obj_put(od_db *db, const char *id, od_err *err)
{
    uint8_t p[PIN_BYTES];
    memset(p, 0, sizeof p);
    memcpy(p, "ODPN", 4);
    p[4] = 1;
    od_put_u64(p + 8, db->epoch);
    od_put_u64(p + 16, db->writer_id);
    od_put_u64(p + 24, (uint64_t)od_now_ms());
    od_put_u32(p + 32, od_crc32c_mask(od_crc32c(p, 32)));
    char key[96];
    od_pin_key(key, sizeof key, db->epoch, id);
    int rc = od_store_put(db->store, key, p, sizeof p, OD_PUT_ALWAYS, NULL, NULL, err);
    if (rc) od_err_prefix(err, "flush: writing the pin object %s", key);
    return rc;
}

/* Remember the key of a pin object whose DELETE failed (od_pin_retry deletes it later). Beyond
 * PIN_LEFT_MAX (a store refusing every DELETE: each flush would retry them all) or out of
 * memory it is dropped: this writer's GC, or once a newer writer opened anybody's, removes it. */
#define PIN_LEFT_MAX 16

static void pin_left_add(od_db *db, const char *key)
{
    char *k = strdup(key);
    if (!k) return;
    pthread_mutex_lock(&db->tmu);
    char **nv = db->npin_left < PIN_LEFT_MAX ? realloc(db->pin_left, (db->npin_left + 1) * sizeof *nv) : NULL;
    if (nv) {
        db->pin_left = nv;
        db->pin_left[db->npin_left++] = k;
        k = NULL;
    }
    pthread_mutex_unlock(&db->tmu);
    free(k);
}

/* Delete the pin object after the flush is over (committed, or failed). Best effort, but a
 * failed DELETE is retried (od_pin_retry: after the next flush, and at close): a leftover pin of
 * the current epoch would otherwise keep its collection from every compactor process's GC for
 * the rest of this writer's life — after compaction merged it away too — while a writer next
 * to a compactor process often runs no GC of its own (test_lsm_xproc_review_pins). */
static void pin_obj_del(od_db *db, const char *id)
{
    char key[96];
    od_err e;
    od_pin_key(key, sizeof key, db->epoch, id);
    if (od_store_delete(db->store, key, &e) != OD_OK) pin_left_add(db, key);
}

void od_pin_retry(od_db *db)
{
    pthread_mutex_lock(&db->tmu);
    char **v = db->pin_left;
    size_t n = db->npin_left;
    db->pin_left = NULL;
    db->npin_left = 0;
    pthread_mutex_unlock(&db->tmu);
    for (size_t i = 0; i < n; i++) {
        od_err e;
        if (od_store_delete(db->store, v[i], &e) != OD_OK) pin_left_add(db, v[i]);
        free(v[i]);
    }
    free(v);
}

static int flush_one(od_db *db, od_memtable *imm, uint64_t replay_from, od_err *err)
{
    int rc;
    uint64_t max_seq = od_mt_max_seq(imm);
    /* publish only acknowledged data: the WAL must hold everything in this memtable */
    if ((rc = od_db_wait_durable(db, max_seq, err))) return rc;
    od_sst_desc desc;
    od_sst_pin pin = {{0}, NULL};
    int have = 0;
    if (od_mt_count(imm) > 0) {
        od_sst_builder *b;
        if ((rc = new_builder(db, &b, 0, err))) return rc;
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
        if (rc == OD_OK) {
            new_sst_id(pin.id, sizeof pin.id);
            pin_add(db, &pin); /* before the PUT: GC may list the object as soon as it exists */
            rc = pin_obj_put(db, pin.id, err); /* ... in any process */
            if (rc == OD_OK) rc = od_table_build_and_put(db, b, &desc, pin.id, err);
            if (rc) { /* the collection is garbage; a failed pin PUT may have landed all the same */
                pin_obj_del(db, pin.id);
                pin_del(db, &pin);
            }
        }
        od_sst_builder_free(b);
        if (rc) return rc;
        have = 1;
    }
    struct l0_ctx c = {db, have ? &desc : NULL, max_seq, replay_from, 0};
    pthread_mutex_lock(&db->man_mu);
    rc = od_manifest_update(db->store, &db->man, db->writer_id, l0_edit, &c, err);
    if (rc == OD_EXISTS && c.landed) {
        rc = OD_OK;
        if (err) od_err_clear(err);
    }
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, imm, err);
    pthread_mutex_unlock(&db->man_mu);
    if (have) {
        /* committed (GC's manifest read sees it), or failed (garbage): unpin, object first */
        pin_obj_del(db, pin.id);
        pin_del(db, &pin);
        od_sst_desc_free(&desc);
    }
    if (rc == OD_OK) {
        atomic_fetch_add(&db->st_mem_flushes, 1);
        od_pin_retry(db); /* the store answers again: pin objects whose DELETE failed before */
    }
    return rc;
}

int od_flush_imm(od_db *db, od_err *err)
{
    int rc = OD_OK;
    pthread_mutex_lock(&db->fmu);
    for (;;) {
        od_version *v = od_version_get(db);
        if (v->nimm == 0 || v->ts->nl0 >= (size_t)db->o.l0_max_tables) { /* L0 bound: wait for compaction */
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

static uint64_t random_job_id(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)od_now_ms() * 2654435761u;
    return r ? r : 1;
}

struct compact_ctx {
    od_db *db;
    od_cjob job;      /* the job as we run it (inputs; out = every completed output) */
    od_sst_desc last; /* the final output, committed with the run (have_last) */
    int have_last;
    int abandon;      /* job_edit: remove the job (its inputs are gone) */
};

static int epoch_check(od_db *db, const od_manifest *m, od_err *err)
{
    if (!db->o.compactor_only && m->writer_epoch > db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)db->epoch);
    if (m->compactor_epoch > db->compactor_epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer compactor (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->compactor_epoch, (unsigned long long)db->compactor_epoch);
    return OD_OK;
}

/* May this handle run (resume) job j? 1 = yes, 0 = another live compactor runs it. */
static int job_ours_or_dead(od_db *db, const od_cjob *j)
{
    if (j->owner_id == db->writer_id && j->compactor_epoch == db->compactor_epoch) return 1;
    if (j->compactor_epoch < db->compactor_epoch) return 1;
    if (j->compactor_epoch == db->compactor_epoch && j->writer_epoch && !db->o.compactor_only && j->writer_epoch < db->epoch)
        return 1; /* started by a writer handle that a newer writer (us) fenced */
    return 0;
}

static int has_id(const od_sst_desc *d, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].id, id) == 0) return 1;
    return 0;
}

/* The job's inputs are still in m: every L0 id, and the input runs are m's newest runs. */
static int inputs_present(const od_cjob *j, const od_manifest *m, od_err *err)
{
    for (size_t i = 0; i < j->nl0_in; i++)
        if (!has_id(m->l0, m->nl0, j->l0_in[i]))
            return od_err_set(err, OD_CONFLICT, "compaction: input %s vanished", j->l0_in[i]);
    if (m->nruns < j->nruns_in) return od_err_set(err, OD_CONFLICT, "compaction: input runs changed");
    for (size_t r = 0; r < j->nruns_in; r++)
        if (m->runs[r].id != j->runs_in[r]) return od_err_set(err, OD_CONFLICT, "compaction: input runs changed");
    return OD_OK;
}

/* The job in m is the one we run (same id, we own it). */
static int job_check(struct compact_ctx *c, const od_manifest *m, od_err *err)
{
    if (!m->has_job || m->job.id != c->job.id || m->job.owner_id != c->db->writer_id)
        return od_err_set(err, OD_FENCED, "fenced: compaction job %016llx was taken over or removed by another compactor",
                          (unsigned long long)c->job.id);
    return OD_OK;
}

/* Record the job (start, or take over a dead one: same inputs and outputs, our ids). */
static int start_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct compact_ctx *c = ctx;
    int rc = epoch_check(c->db, m, err);
    if (rc) return rc;
    if (m->has_job && m->job.id != c->job.id)
        return od_err_set(err, OD_CONFLICT, "compaction: job %016llx of another compactor appeared",
                          (unsigned long long)m->job.id);
    if (m->has_job && !job_ours_or_dead(c->db, &m->job))
        return od_err_set(err, OD_CONFLICT, "compaction: job %016llx is run by another live compactor",
                          (unsigned long long)m->job.id);
    if ((rc = inputs_present(&c->job, m, err))) return rc;
    od_cjob j;
    if (od_cjob_copy(&j, &c->job)) return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    od_cjob_free(&m->job);
    m->job = j;
    m->has_job = 1;
    return OD_OK;
}

/* Append the newest completed output to the recorded job. */
static int progress_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct compact_ctx *c = ctx;
    int rc = epoch_check(c->db, m, err);
    if (!rc) rc = job_check(c, m, err);
    if (rc) return rc;
    od_sst_desc *n = realloc(m->job.out, (m->job.nout + 1) * sizeof *n);
    if (!n) return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    m->job.out = n;
    if (od_sst_desc_copy(&n[m->job.nout], &c->job.out[c->job.nout - 1]))
        return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    m->job.nout++;
    memcpy(m->job.pending, c->job.pending, sizeof m->job.pending); /* named before its PUT */
    return OD_OK;
}

/* Remove a job whose inputs are gone (its outputs become garbage). */
static int abandon_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct compact_ctx *c = ctx;
    int rc = epoch_check(c->db, m, err);
    if (rc) return rc;
    if (m->has_job && m->job.id == c->job.id) {
        od_cjob_free(&m->job);
        m->has_job = 0;
    }
    return OD_OK;
}

/* The final commit: inputs out, outputs in as the newest run, job cleared. */
static int compact_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct compact_ctx *c = ctx;
    const od_cjob *j = &c->job;
    int rc = epoch_check(c->db, m, err);
    if (!rc) rc = job_check(c, m, err);
    if (!rc) rc = inputs_present(j, m, err);
    if (rc) return rc;
    /* remove the L0 inputs */
    size_t w = 0;
    for (size_t i = 0; i < m->nl0; i++) {
        int in = 0;
        for (size_t k = 0; k < j->nl0_in && !in; k++) in = strcmp(m->l0[i].id, j->l0_in[k]) == 0;
        if (in)
            od_sst_desc_free(&m->l0[i]);
        else
            m->l0[w++] = m->l0[i];
    }
    m->nl0 = w;
    /* replace the input runs with the output run */
    size_t nout = j->nout + (c->have_last ? 1 : 0);
    size_t keep = m->nruns - j->nruns_in;
    size_t nn = keep + (nout ? 1 : 0);
    od_run *runs = calloc(nn ? nn : 1, sizeof *runs);
    if (!runs) return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    if (nout) {
        runs[0].ssts = calloc(nout, sizeof(od_sst_desc));
        if (!runs[0].ssts) {
            free(runs);
            return od_err_set(err, OD_NOMEM, "compaction: out of memory");
        }
        for (size_t i = 0; i < nout; i++) {
            if (od_sst_desc_copy(&runs[0].ssts[i], i < j->nout ? &j->out[i] : &c->last)) {
                for (size_t k = 0; k < i; k++) od_sst_desc_free(&runs[0].ssts[k]);
                free(runs[0].ssts);
                free(runs);
                return od_err_set(err, OD_NOMEM, "compaction: out of memory");
            }
        }
        runs[0].id = m->next_run_id ? m->next_run_id : 1;
        m->next_run_id = runs[0].id + 1;
        runs[0].n = nout;
    }
    for (size_t r = 0; r < j->nruns_in; r++) {
        for (size_t i = 0; i < m->runs[r].n; i++) od_sst_desc_free(&m->runs[r].ssts[i]);
        free(m->runs[r].ssts);
    }
    size_t k = nout ? 1 : 0;
    for (size_t r = j->nruns_in; r < m->nruns; r++) runs[k++] = m->runs[r];
    free(m->runs);
    m->runs = runs;
    m->nruns = nn;
    od_cjob_free(&m->job);
    m->has_job = 0;
    return OD_OK;
}

static int commit(od_db *db, od_manifest_edit_fn fn, struct compact_ctx *c, od_err *err)
{
    pthread_mutex_lock(&db->man_mu);
    int rc = od_manifest_update(db->store, &db->man, db->writer_id, fn, c, err);
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, NULL, err);
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

static int closing(od_db *db)
{
    pthread_mutex_lock(&db->mu);
    int r = db->closing;
    pthread_mutex_unlock(&db->mu);
    return r;
}

/* Builder for one output: pre-sized for a full output (or what the inputs can still give). */
static int out_builder(od_db *db, uint64_t in_left, od_sst_builder **b, od_err *err)
{
    size_t target = db->o.compaction_output_bytes;
    uint64_t expect = (uint64_t)target + target / 8 + (64u << 10);
    uint64_t from_in = in_left + in_left / 8 + (64u << 10);
    return new_builder(db, b, (size_t)(expect < from_in ? expect : from_in), err);
}

/* PUT the builder as one output. record=1: more follows, append it to the job in the manifest
 * (then it is safe from GC and kept on resume); record=0: it is the last (c->last). */
static int emit_table(od_db *db, od_sst_builder **b, struct compact_ctx *c, int record, uint64_t in_left,
                      od_err *err)
{
    if (od_sst_builder_entries(*b) == 0) return OD_OK;
    od_sst_desc d;
    int rc = od_table_build_and_put(db, *b, &d, c->job.pending, err);
    od_sst_builder_free(*b);
    *b = NULL;
    if (rc) return rc;
    if (!record) {
        c->last = d;
        c->have_last = 1;
        return OD_OK;
    }
    od_sst_desc *n = realloc(c->job.out, (c->job.nout + 1) * sizeof *n);
    if (!n) {
        od_sst_desc_free(&d);
        return od_err_set(err, OD_NOMEM, "compaction: out of memory");
    }
    c->job.out = n;
    n[c->job.nout++] = d;
    new_sst_id(c->job.pending, sizeof c->job.pending); /* the next output, recorded with this one */
    if ((rc = commit(db, progress_edit, c, err))) return rc;
    if (closing(db)) return od_err_set(err, OD_CLOSED, "compaction: handle closing; job recorded for resumption");
    return out_builder(db, in_left, b, err);
}

static od_table *find_l0(const od_tset *ts, const char *id)
{
    for (size_t i = 0; i < ts->nl0; i++)
        if (strcmp(ts->l0[i]->desc.id, id) == 0) return ts->l0[i];
    return NULL;
}

int od_compact_run(od_db *db, int force, int *did, od_err *err)
{
    *did = 0;
    pthread_mutex_lock(&db->cmu);
    /* the view and the manifest it was built from, taken together (a commit whose edit gave
     * up may have left db->man newer than the view: install it first) */
    pthread_mutex_lock(&db->man_mu);
    od_version *v = od_version_get(db);
    int rc = OD_OK;
    if (v->ts->manifest_version != db->man.version) {
        od_version_unref(v);
        rc = od_db_apply_manifest(db, &db->man, NULL, err);
        v = od_version_get(db);
    }
    od_tset *ts = v->ts;
    atomic_fetch_add(&ts->refs, 1);
    od_version_unref(v);
    od_manifest m0;
    if (rc == OD_OK && od_manifest_copy(&m0, &db->man)) rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
    else if (rc) memset(&m0, 0, sizeof m0);
    pthread_mutex_unlock(&db->man_mu);
    struct compact_ctx c;
    memset(&c, 0, sizeof c);
    c.db = db;
    od_sst_builder *b = NULL;
    od_merge *mg = NULL;
    od_table **l0 = NULL;
    od_buf cur = {0};
    uint64_t in_bytes = 0, out_bytes = 0;
    int work = 0;
    if (rc) goto out;
    atomic_store(&db->cjob_pending, m0.has_job);
    if ((rc = epoch_check(db, &m0, err))) goto out;
    if (m0.has_job) {
        /* a recorded job comes first: resume it (ours after a failure, or a dead compactor's) */
        if (!job_ours_or_dead(db, &m0.job)) {
            rc = od_err_set(err, OD_CONFLICT,
                            "compaction: job %016llx is run by another compactor (epoch %llu, handle %016llx)",
                            (unsigned long long)m0.job.id, (unsigned long long)m0.job.compactor_epoch,
                            (unsigned long long)m0.job.owner_id);
            goto out;
        }
        if (od_cjob_copy(&c.job, &m0.job)) {
            rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
            goto out;
        }
        work = 1;
        c.job.compactor_epoch = db->compactor_epoch;
        c.job.writer_epoch = db->o.compactor_only ? 0 : db->epoch;
        c.job.owner_id = db->writer_id;
        if (inputs_present(&c.job, &m0, err) != OD_OK) {
            rc = commit(db, abandon_edit, &c, err);
            if (rc == OD_OK) rc = od_err_set(err, OD_CONFLICT, "compaction: abandoned job %016llx: its inputs are gone",
                                             (unsigned long long)c.job.id);
            goto out;
        }
    } else {
        work = force ? (ts->nl0 > 0 || ts->nruns > 1) : ts->nl0 >= (size_t)db->o.l0_compaction_trigger;
        if (!work) goto out;
        c.job.id = random_job_id();
        c.job.compactor_epoch = db->compactor_epoch;
        c.job.writer_epoch = db->o.compactor_only ? 0 : db->epoch;
        c.job.owner_id = db->writer_id;
        c.job.started_ms = od_now_ms();
        uint64_t sel = 0;
        for (size_t i = 0; i < ts->nl0; i++) sel += ts->l0[i]->desc.size;
        size_t nr = 0;
        if (force) {
            nr = ts->nruns;
        } else {
            while (nr < ts->nruns && run_bytes(&ts->runs[nr]) <= 2 * (sel ? sel : 1)) sel += run_bytes(&ts->runs[nr++]);
        }
        if (nr == ts->nruns) c.job.flags |= OD_CJOB_BOTTOM;
        c.job.l0_in = ts->nl0 ? calloc(ts->nl0, sizeof *c.job.l0_in) : NULL;
        c.job.runs_in = nr ? calloc(nr, sizeof *c.job.runs_in) : NULL;
        if ((ts->nl0 && !c.job.l0_in) || (nr && !c.job.runs_in)) {
            rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
            goto out;
        }
        for (size_t i = 0; i < ts->nl0; i++) snprintf(c.job.l0_in[i], OD_SST_ID_MAX, "%s", ts->l0[i]->desc.id);
        c.job.nl0_in = ts->nl0;
        for (size_t r = 0; r < nr; r++) c.job.runs_in[r] = m0.runs[r].id;
        c.job.nruns_in = nr;
    }
    /* record (or take over) the job, naming its next output, before writing any output; a
     * taken-over job gets a fresh pending id (its old owner may still be writing the old one) */
    new_sst_id(c.job.pending, sizeof c.job.pending);
    if ((rc = commit(db, start_edit, &c, err))) goto out;
    atomic_store(&db->cjob_pending, 1);
    /* the inputs, as open tables of the view (same manifest version) */
    if (c.job.nl0_in && !(l0 = calloc(c.job.nl0_in, sizeof *l0))) {
        rc = od_err_set(err, OD_NOMEM, "compaction: out of memory");
        goto out;
    }
    for (size_t i = 0; i < c.job.nl0_in; i++) {
        if (!(l0[i] = find_l0(ts, c.job.l0_in[i]))) {
            rc = od_err_set(err, OD_CONFLICT, "compaction: input %s is not in the view", c.job.l0_in[i]);
            goto out;
        }
        in_bytes += l0[i]->desc.size;
    }
    for (size_t r = 0; r < c.job.nruns_in; r++) in_bytes += run_bytes(&ts->runs[r]);
    int bottom = (c.job.flags & OD_CJOB_BOTTOM) != 0;
    uint64_t min_snap = od_db_min_snapshot_seq(db);
    int64_t now = od_now_ms();
    size_t target = db->o.compaction_output_bytes;
    for (size_t i = 0; i < c.job.nout; i++) out_bytes += c.job.out[i].size;
    uint64_t in_left = in_bytes > out_bytes ? in_bytes - out_bytes : 0;
    if ((rc = out_builder(db, in_left, &b, err))) goto out;
    if ((rc = od_merge_new_tables(l0, c.job.nl0_in, ts->runs, c.job.nruns_in, &mg, err))) goto out;
    if (c.job.nout) {
        /* resume after the last recorded output: its max key is complete in it */
        const od_sst_desc *lastd = &c.job.out[c.job.nout - 1];
        if ((rc = od_merge_seek(mg, lastd->max_key, lastd->max_klen, err))) goto out;
        while (od_merge_valid(mg) &&
               od_key_cmp(od_merge_entry(mg)->key, od_merge_entry(mg)->klen, lastd->max_key, lastd->max_klen) == 0)
            if ((rc = od_merge_next(mg, err))) goto out;
    } else if ((rc = od_merge_first(mg, err))) {
        goto out;
    }
    int have_cur = 0, settled = 0;
    while (od_merge_valid(mg)) {
        od_entry e = *od_merge_entry(mg);
        int same = have_cur && od_key_cmp(e.key, e.klen, cur.data, cur.len) == 0;
        if (!same) {
            /* a key boundary: the only place an output table may end */
            if (have_cur && od_sst_builder_size(b) >= target) {
                uint64_t done = out_bytes + od_sst_builder_size(b);
                if ((rc = emit_table(db, &b, &c, 1, in_bytes > done ? in_bytes - done : 0, err))) break;
                out_bytes += c.job.out[c.job.nout - 1].size;
            }
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
    if (rc == OD_OK) rc = emit_table(db, &b, &c, 0, 0, err);
    if (rc) goto out;
    if (c.have_last) out_bytes += c.last.size;
    if ((rc = commit(db, compact_edit, &c, err))) goto out;
    atomic_store(&db->cjob_pending, 0);
    atomic_fetch_add(&db->st_compactions, 1);
    atomic_fetch_add(&db->st_cbytes_in, in_bytes);
    atomic_fetch_add(&db->st_cbytes_out, out_bytes);
out:
    if (rc == OD_FENCED) atomic_store(&db->cjob_pending, 0);
    od_buf_free(&cur);
    od_merge_free(mg);
    od_sst_builder_free(b);
    free(l0);
    if (c.have_last) od_sst_desc_free(&c.last);
    od_cjob_free(&c.job);
    od_manifest_free(&m0);
    od_tset_unref(ts);
    pthread_mutex_unlock(&db->cmu);
    if (rc == OD_FENCED && db->o.compactor_only) od_db_set_bg_error(db, rc, err);
    if (rc == OD_OK) *did = work;
    return rc;
}
