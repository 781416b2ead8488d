/*
 * db.c — the storage engine handle: open (writer fencing or read-only follow), the write
 * path with the batching WAL flusher and the writer lease, the read path (point get,
 * snapshots, versions), refresh, checkpoints, stats and inspect.
 *
 * Write path. od_db_write takes wmu, assigns the next seq (the one place seqs are made),
 * appends the batch's already-encoded body to the pending WAL object, inserts its ops into
 * the mutable memtable and publishes visible_seq. The WAL thread turns the pending object
 * into ONE WAL object per flush interval (or when wal_flush_bytes are pending), created with
 * put_if_absent at the next contiguous id; when it is in the store durable_seq advances and
 * waiters wake. A collision on create means another writer fenced us: the handle becomes
 * fenced for good and every pending acknowledgement fails. Writers block while more than
 * max_unflushed_bytes wait for the WAL.
 *
 * Opening as writer (fencing): read the latest manifest; refuse if the lease object shows a
 * live writer (unless takeover); commit manifest version+1 with writer_epoch+1; write the
 * lease; create the first free WAL id ≥ wal_replay_from as an empty fence object; replay WAL
 * objects [wal_replay_from, fence) skipping seqs ≤ last_l0_seq.
 *
 * Closing a healthy writer (close_flush, close_tail): flush the memtable to L0, then, with
 * every thread stopped and nothing left in memory, commit wal_replay_from = the next WAL id
 * (epoch-checked, CAS): the next open's replay tail is empty instead of growing by a fence
 * per session. Failures there lose nothing (the WAL still holds it all).
 *
 * Lease object "lease" (52 bytes): "ODLS" | version u8 (1) | 3 reserved | epoch u64 |
 * writer_id u64 | renewed_ms i64 | lease_ms u32 | 12 reserved | masked CRC32C u32.
 * renewed_ms = 0 means released. Renewed every lease_ms/3 with put_if_match on our own
 * ETag: a failed match means somebody else wrote it (a newer writer): we are fenced.
 *
 * Compactor lease "compactor-lease" (same format; epoch = compactor epoch): held by a compactor
 * process (compactor_only), written before its open commits compactor_epoch+1, renewed by its
 * lease thread, released by a clean close. A second compactor process is refused while it is
 * live (unless takeover). A writer with compactor=1 leaves compaction to the holder while it is
 * live — at open (no epoch bump) and after its own compaction was fenced — and takes compaction
 * back (commit compactor_epoch+1 if the manifest still holds the epoch it saw before reading the
 * lease; then resume any recorded job) once the lease is absent, released or expired.
 *
 * Read path. Readers pin the current od_version (one short critical section on mu) and read
 * memtables newest first, then L0 newest first, then sorted runs, stopping at the first
 * entry of the key with seq ≤ the read seq.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lsm_int.h"
#include "od_crc32c.h"

#define LEASE_KEY "lease"
/* held by a compactor process (same format; epoch = its compactor epoch, writer_id = its id) */
#define CLEASE_KEY "compactor-lease"
#define LEASE_BYTES 52
/* writers stall while this many memtables wait for their L0 flush */
#define OD_MAX_IMM 8
/* ... or while the waiting memtables hold this many bytes (at least 2 of them may wait): with
 * large memtables 8 of them waiting for their flush were most of the event store's peak RSS
 * (the flush worker no longer waits for compactions, but a slow store still piles them up) */
#define OD_MAX_IMM_BYTES (64u << 20)

static size_t imm_limit(const od_db *db)
{
    size_t mb = db->o.memtable_bytes ? db->o.memtable_bytes : 1;
    size_t n = OD_MAX_IMM_BYTES / mb;
    return n < 2 ? 2 : n > OD_MAX_IMM ? OD_MAX_IMM : n;
}

/* L0 holds l0_max_tables collections: memtable flushes wait for compaction. Caller holds mu. */
static int l0_full_locked(const od_db *db)
{
    return db->cur->ts->nl0 >= (size_t)db->o.l0_max_tables;
}

/* This handle compacts in-process (so an L0 stall ends without anybody else's help). */
static int compacts_itself(od_db *db)
{
    return db->o.compactor && !atomic_load(&db->compactor_off);
}

/* How long a write or od_db_flush may stall on back-pressure; -1 = no limit. */
static int64_t stall_limit_ms(od_db *db)
{
    uint32_t t = db->o.write_stall_timeout_ms;
    if (t == UINT32_MAX) return -1;
    if (t) return t;
    return compacts_itself(db) ? -1 : 300000;
}

/* Why writers stall, for the OD_BUSY message of a stall that outlasted its limit. */
static int stall_error(od_db *db, od_err *err, const char *what, int64_t waited_ms)
{
    pthread_mutex_lock(&db->mu);
    size_t nl0 = db->cur->ts->nl0, nimm = db->cur->nimm;
    int full = l0_full_locked(db);
    pthread_mutex_unlock(&db->mu);
    const char *hint = compacts_itself(db) ? ""
                                           : "; this writer does not compact (compactor=0, or a compactor process took "
                                             "over): is the compactor process running?";
    if (full)
        return od_err_set(err, OD_BUSY,
                          "db: %s stalled for %lld ms (write_stall_timeout_ms): L0 holds %zu collections "
                          "(l0_max_tables %d), so %zu memtables wait for compaction before their L0 flush%s",
                          what, (long long)waited_ms, nl0, db->o.l0_max_tables, nimm, hint);
    return od_err_set(err, OD_BUSY,
                      "db: %s stalled for %lld ms (write_stall_timeout_ms): %zu memtables wait for their L0 "
                      "flush (L0 holds %zu of at most %d collections) or too many bytes wait for the WAL "
                      "(max_unflushed_bytes %zu)",
                      what, (long long)waited_ms, nimm, nl0, db->o.l0_max_tables, db->o.max_unflushed_bytes);
}

void od_db_options_init(od_db_options *o)
{
    memset(o, 0, sizeof *o);
    o->flush_interval_ms = 100;
    o->follow_interval_ms = 1000;
    o->wal_flush_bytes = 4u << 20;
    o->max_unflushed_bytes = 64u << 20;
    o->memtable_bytes = 64u << 20;
    o->block_size = 16384;
    o->bloom_bits_per_key = 10;
    o->block_cache_bytes = 64u << 20;
    o->disk_cache_bytes = 1u << 30;
    o->compactor = 1;
    o->l0_compaction_trigger = 4;
    o->lease_ms = 10000;
    o->gc_min_age_ms = 300000;
    o->gc_interval_ms = 60000;
    o->compaction_output_bytes = 32u << 20;
    o->flush_retry_ms = 60000;
    o->l0_max_tables = 0; /* 64, or 2 x l0_compaction_trigger (od_db_open_store) */
    o->write_stall_timeout_ms = 0;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
    }
    return v ? v : 1;
}

static void deadline_after_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

int od_entry_visible(const od_entry *e, int64_t now_ms)
{
    return e->kind == OD_KIND_PUT && (e->expire_ms == 0 || e->expire_ms > now_ms);
}

/* ---------------- tables, table sets, versions ---------------- */

static uint64_t fnv64(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int table_read(void *ctx, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    od_table *t = ctx;
    od_disk_cache *dc = t->db->dcache;
    if (dc && od_disk_cache_get(dc, t->key, off, len, out)) return OD_OK;
    int rc = od_store_get_range(t->store, t->key, off, len, out, err);
    if (rc == OD_OK && dc) od_disk_cache_put(dc, t->key, off, len, out->data, out->len);
    return rc;
}

static void table_unref(od_table *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1) return;
    od_db *db = t->db;
    pthread_mutex_lock(&db->tmu);
    if (t->reg_prev)
        t->reg_prev->reg_next = t->reg_next;
    else
        db->tables = t->reg_next;
    if (t->reg_next) t->reg_next->reg_prev = t->reg_prev;
    pthread_mutex_unlock(&db->tmu);
    od_sst_close(t->sst);
    od_sst_desc_free(&t->desc);
    free(t);
}

static int table_open(od_db *db, const od_sst_desc *d, od_table **out, od_err *err)
{
    od_table *t = calloc(1, sizeof *t);
    if (!t || od_sst_desc_copy(&t->desc, d)) {
        free(t);
        return od_err_set(err, OD_NOMEM, "db: out of memory opening a collection");
    }
    atomic_init(&t->refs, 1);
    t->store = db->store;
    t->db = db;
    od_sst_key(t->key, sizeof t->key, d->id);
    int rc = od_sst_open(t->key, d->size, table_read, t, db->cache, fnv64(t->key), &t->sst, err);
    if (rc) {
        od_sst_desc_free(&t->desc);
        free(t);
        return rc;
    }
    pthread_mutex_lock(&db->tmu); /* GC keeps the object of every open table */
    t->reg_next = db->tables;
    if (db->tables) db->tables->reg_prev = t;
    db->tables = t;
    pthread_mutex_unlock(&db->tmu);
    *out = t;
    return OD_OK;
}

void od_tset_unref(od_tset *ts)
{
    if (!ts || atomic_fetch_sub(&ts->refs, 1) != 1) return;
    for (size_t i = 0; i < ts->nl0; i++) table_unref(ts->l0[i]);
    free(ts->l0);
    for (size_t r = 0; r < ts->nruns; r++) {
        for (size_t i = 0; i < ts->runs[r].n; i++) table_unref(ts->runs[r].t[i]);
        free(ts->runs[r].t);
    }
    free(ts->runs);
    free(ts);
}

static od_table *tset_find(const od_tset *ts, const char *id)
{
    if (!ts) return NULL;
    for (size_t i = 0; i < ts->nl0; i++)
        if (strcmp(ts->l0[i]->desc.id, id) == 0) return ts->l0[i];
    for (size_t r = 0; r < ts->nruns; r++)
        for (size_t i = 0; i < ts->runs[r].n; i++)
            if (strcmp(ts->runs[r].t[i]->desc.id, id) == 0) return ts->runs[r].t[i];
    return NULL;
}

static int tset_get_table(od_db *db, const od_tset *old, const od_sst_desc *d, od_table **out, od_err *err)
{
    od_table *t = tset_find(old, d->id);
    if (t) {
        atomic_fetch_add(&t->refs, 1);
        *out = t;
        return OD_OK;
    }
    return table_open(db, d, out, err);
}

static int tset_build(od_db *db, const od_manifest *m, const od_tset *old, od_tset **out, od_err *err)
{
    od_tset *ts = calloc(1, sizeof *ts);
    if (!ts) return od_err_set(err, OD_NOMEM, "db: out of memory");
    atomic_init(&ts->refs, 1);
    ts->manifest_version = m->version;
    int rc = OD_OK;
    if (m->nl0 && !(ts->l0 = calloc(m->nl0, sizeof(od_table *)))) goto oom;
    for (size_t i = 0; i < m->nl0; i++) {
        if ((rc = tset_get_table(db, old, &m->l0[i], &ts->l0[i], err))) goto fail;
        ts->nl0 = i + 1;
    }
    if (m->nruns && !(ts->runs = calloc(m->nruns, sizeof(od_vrun)))) goto oom;
    for (size_t r = 0; r < m->nruns; r++) {
        ts->nruns = r + 1;
        if (!(ts->runs[r].t = calloc(m->runs[r].n, sizeof(od_table *)))) goto oom;
        for (size_t i = 0; i < m->runs[r].n; i++) {
            if ((rc = tset_get_table(db, old, &m->runs[r].ssts[i], &ts->runs[r].t[i], err))) goto fail;
            ts->runs[r].n = i + 1;
        }
    }
    *out = ts;
    return OD_OK;
oom:
    rc = od_err_set(err, OD_NOMEM, "db: out of memory");
fail:
    od_tset_unref(ts);
    return rc;
}

void od_version_unref(od_version *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1) return;
    od_mt_unref(v->mem);
    for (size_t i = 0; i < v->nimm; i++) od_mt_unref(v->imm[i]);
    free(v->imm);
    free(v->imm_replay_from);
    od_tset_unref(v->ts);
    free(v);
}

od_version *od_version_get(od_db *db)
{
    pthread_mutex_lock(&db->mu);
    od_version *v = db->cur;
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&db->mu);
    return v;
}

/* New version: mem + imm (refs taken here) + ts (ref taken). Installs it as current.
 * Caller holds mu. */
static int version_install(od_db *db, od_memtable *mem, od_memtable **imm, const uint64_t *rf, size_t nimm,
                           od_tset *ts)
{
    od_version *v = calloc(1, sizeof *v);
    if (!v) return OD_NOMEM;
    if (nimm) {
        v->imm = malloc(nimm * sizeof *v->imm);
        v->imm_replay_from = malloc(nimm * sizeof(uint64_t));
        if (!v->imm || !v->imm_replay_from) {
            free(v->imm);
            free(v->imm_replay_from);
            free(v);
            return OD_NOMEM;
        }
    }
    atomic_init(&v->refs, 1);
    v->mem = mem;
    od_mt_ref(mem);
    for (size_t i = 0; i < nimm; i++) {
        v->imm[i] = imm[i];
        od_mt_ref(imm[i]);
        v->imm_replay_from[i] = rf[i];
    }
    v->nimm = nimm;
    v->ts = ts;
    atomic_fetch_add(&ts->refs, 1);
    od_version *old = db->cur;
    db->cur = v;
    atomic_store(&db->nimm, nimm);
    od_version_unref(old);
    return OD_OK;
}

int od_db_apply_manifest(od_db *db, const od_manifest *man, od_memtable *drop_imm, od_err *err)
{
    od_version *cur = od_version_get(db);
    od_tset *ts;
    int rc = tset_build(db, man, cur->ts, &ts, err);
    od_version_unref(cur);
    if (rc) return rc;
    pthread_mutex_lock(&db->mu);
    cur = db->cur;
    od_memtable **imm = malloc((cur->nimm + 1) * sizeof *imm);
    uint64_t *rf = malloc((cur->nimm + 1) * sizeof *rf);
    size_t n = 0;
    if (imm && rf) {
        for (size_t i = 0; i < cur->nimm; i++) {
            if (cur->imm[i] == drop_imm) continue;
            imm[n] = cur->imm[i];
            rf[n++] = cur->imm_replay_from[i];
        }
        rc = version_install(db, cur->mem, imm, rf, n, ts);
    } else {
        rc = OD_NOMEM;
    }
    if (rc == OD_OK && !l0_full_locked(db)) {
        db->l0_stalled = 0;
        if (db->cur->nimm) pthread_cond_broadcast(&db->cv_bg); /* room in L0: flushes (and od_db_flush) resume */
    }
    pthread_mutex_unlock(&db->mu);
    free(imm);
    free(rf);
    od_tset_unref(ts);
    if (drop_imm) { /* writers stalled on too many immutable memtables may go on */
        pthread_mutex_lock(&db->wmu);
        pthread_cond_broadcast(&db->cv_space);
        pthread_mutex_unlock(&db->wmu);
    }
    if (rc) return od_err_set(err, rc, "db: out of memory installing manifest version %llu",
                              (unsigned long long)man->version);
    return OD_OK;
}

/* ---------------- errors ---------------- */

void od_db_set_bg_error(od_db *db, int code, const od_err *e)
{
    pthread_mutex_lock(&db->mu);
    if (!db->bg_code) {
        db->bg_code = code;
        if (e && e->code)
            od_err_copy(&db->bg_err, e);
        else
            od_err_set(&db->bg_err, code, "db: background failure (%s)", od_code_name(code));
        db->bg_err.code = code;
    }
    pthread_cond_broadcast(&db->cv_durable);
    pthread_cond_broadcast(&db->cv_bg);
    pthread_mutex_unlock(&db->mu);
    pthread_mutex_lock(&db->wmu);
    pthread_cond_broadcast(&db->cv_space);
    pthread_cond_broadcast(&db->cv_flush);
    pthread_mutex_unlock(&db->wmu);
}

int od_db_check_bg(od_db *db, od_err *err)
{
    pthread_mutex_lock(&db->mu);
    int rc = db->bg_code;
    if (rc) od_err_copy(err, &db->bg_err);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int od_fenced_error(od_db *db, od_err *err, const char *what)
{
    od_manifest m;
    od_err e2;
    uint64_t newer = 0;
    if (od_manifest_load_latest(db->store, 0, &m, &e2) == OD_OK) {
        newer = m.writer_epoch;
        od_manifest_free(&m);
    }
    if (newer > db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (%s; ours was %llu)",
                          (unsigned long long)newer, what, (unsigned long long)db->epoch);
    return od_err_set(err, OD_FENCED, "fenced: %s: another writer created it first (our epoch %llu)", what,
                      (unsigned long long)db->epoch);
}

/* ---------------- lease ---------------- */

typedef struct lease {
    uint64_t epoch, writer_id;
    int64_t renewed_ms;
    uint32_t lease_ms;
} lease;

static void lease_encode(const lease *l, uint8_t *p)
{
    memset(p, 0, LEASE_BYTES);
    memcpy(p, "ODLS", 4);
    p[4] = 1;
    od_put_u64(p + 8, l->epoch);
    od_put_u64(p + 16, l->writer_id);
    od_put_u64(p + 24, (uint64_t)l->renewed_ms);
    od_put_u32(p + 32, l->lease_ms);
    od_put_u32(p + 48, od_crc32c_mask(od_crc32c(p, 48)));
}

/* Read the lease object `key` (LEASE_KEY or CLEASE_KEY: the same format). */
static int lease_read_key(od_db *db, const char *key, lease *l, char *etag, od_err *err)
{
    od_buf b = {0};
    od_obj_meta meta;
    int rc = od_store_get(db->store, key, &b, &meta, err);
    if (rc == OD_OK) {
        const uint8_t *p = b.data;
        if (b.len != LEASE_BYTES || memcmp(p, "ODLS", 4) != 0 || p[4] != 1 ||
            od_crc32c_unmask(od_get_u32(p + 48)) != od_crc32c(p, 48)) {
            rc = od_err_set(err, OD_CORRUPT, "db: lease object \"%s\" in %s is corrupt", key,
                            od_store_describe(db->store));
        } else {
            l->epoch = od_get_u64(p + 8);
            l->writer_id = od_get_u64(p + 16);
            l->renewed_ms = (int64_t)od_get_u64(p + 24);
            l->lease_ms = od_get_u32(p + 32);
            if (etag) snprintf(etag, OD_ETAG_MAX, "%s", meta.etag);
        }
    }
    od_buf_free(&b);
    return rc;
}

static int lease_read(od_db *db, lease *l, char *etag, od_err *err)
{
    return lease_read_key(db, LEASE_KEY, l, etag, err);
}

/* A lease that is held: renewed (not released) less than its lease_ms ago. */
static int lease_live(const lease *l, int64_t now)
{
    return l->renewed_ms != 0 && now - l->renewed_ms < (int64_t)l->lease_ms;
}

/* Write our lease. mode: OD_PUT_ALWAYS at open/takeover, OD_PUT_IF_MATCH to renew. */
static int lease_write(od_db *db, int64_t renewed_ms, od_put_mode mode, od_err *err)
{
    lease l = {db->epoch, db->writer_id, renewed_ms, db->o.lease_ms};
    uint8_t p[LEASE_BYTES];
    lease_encode(&l, p);
    od_obj_meta meta;
    int rc = od_store_put(db->store, LEASE_KEY, p, sizeof p, mode, mode == OD_PUT_IF_MATCH ? db->lease_etag : NULL,
                          &meta, err);
    if (rc == OD_OK) {
        snprintf(db->lease_etag, sizeof db->lease_etag, "%s", meta.etag);
        db->lease_renewed_ms = renewed_ms ? renewed_ms : od_now_ms();
        /* a newer writer writes the lease before its fence: none was created before this */
        if (renewed_ms) db->fence_checked_ms = renewed_ms;
    }
    return rc;
}

/* After a WAL PUT that took long since the last proof that we were not fenced: a newer
 * writer may have fenced us meanwhile, moved past its fence and GC may have deleted the
 * fence object, so our create "succeeded" at an id nobody will replay. A newer writer bumps
 * the epoch in the manifest before it creates its fence, so a manifest read started after
 * our PUT returned that still shows our epoch proves the PUT did not re-create a fence. */
static int wal_check_not_fenced(od_db *db, const char *key, od_err *err)
{
    int64_t start = od_now_ms();
    od_manifest m;
    int rc = od_manifest_load_latest(db->store, 0, &m, err);
    if (rc) {
        od_err_prefix(err, "db: verifying the epoch after the slow WAL write of %s", key);
        return rc;
    }
    uint64_t ep = m.writer_epoch;
    od_manifest_free(&m);
    if (ep > db->epoch)
        return od_err_set(err, OD_FENCED,
                          "fenced: a newer writer (epoch %llu) took over this store while %s was being written "
                          "(ours was %llu)",
                          (unsigned long long)ep, key, (unsigned long long)db->epoch);
    db->fence_checked_ms = start;
    return OD_OK;
}

static void lease_renew(od_db *db)
{
    od_err e;
    int rc = lease_write(db, od_now_ms(), OD_PUT_IF_MATCH, &e);
    if (rc == OD_PRECONDITION || rc == OD_NOTFOUND) {
        lease l;
        char etag[OD_ETAG_MAX];
        int lr = lease_read(db, &l, etag, &e);
        if (lr == OD_OK && ((l.epoch == db->epoch && l.writer_id == db->writer_id) || l.epoch < db->epoch)) {
            /* still ours (an earlier renewal landed but its answer was lost), or overwritten
             * by an older writer that lost the race to open: adopt its ETag and take it back */
            snprintf(db->lease_etag, sizeof db->lease_etag, "%s", etag);
            rc = lease_write(db, od_now_ms(), OD_PUT_IF_MATCH, &e);
        } else if (lr == OD_OK && l.epoch > db->epoch) {
            od_err_set(&e, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (lease lost; ours was %llu)",
                       (unsigned long long)l.epoch, (unsigned long long)db->epoch);
            od_db_set_bg_error(db, OD_FENCED, &e);
            return;
        }
        if (rc == OD_NOTFOUND) rc = lease_write(db, od_now_ms(), OD_PUT_IF_ABSENT, &e);
    }
    if (rc) db->lease_renewed_ms = od_now_ms() - (int64_t)db->o.lease_ms / 3 + 200; /* retry soon */
}

/* ---------------- compactor lease ---------------- */

/* Write the compactor lease as ours (our compactor epoch and id). mode: OD_PUT_ALWAYS when a
 * compactor process opens, OD_PUT_IF_MATCH (on clease_etag) to renew or release. */
static int clease_write(od_db *db, int64_t renewed_ms, od_put_mode mode, od_err *err)
{
    lease l = {atomic_load(&db->compactor_epoch), db->writer_id, renewed_ms, db->o.lease_ms};
    uint8_t p[LEASE_BYTES];
    lease_encode(&l, p);
    od_obj_meta meta;
    int rc = od_store_put(db->store, CLEASE_KEY, p, sizeof p, mode, mode == OD_PUT_IF_MATCH ? db->clease_etag : NULL,
                          &meta, err);
    if (rc == OD_OK) {
        snprintf(db->clease_etag, sizeof db->clease_etag, "%s", meta.etag);
        db->clease_renewed_ms = renewed_ms ? renewed_ms : od_now_ms();
    }
    return rc;
}

/* Renew a compactor process's lease (its lease thread). Like the writer's: If-Match on our own
 * ETag; when that fails, a lease of a newer compactor epoch (a compactor that took over, or a
 * writer that took compaction back after our lease had expired) means we are fenced; our own
 * (a renewal whose answer was lost) or an older or equal epoch's (a compactor that lost the
 * race to open) is taken back. */
static void clease_renew(od_db *db)
{
    od_err e;
    int rc = clease_write(db, od_now_ms(), OD_PUT_IF_MATCH, &e);
    if (rc == OD_PRECONDITION || rc == OD_NOTFOUND) {
        lease l;
        char etag[OD_ETAG_MAX];
        int lr = lease_read_key(db, CLEASE_KEY, &l, etag, &e);
        uint64_t ours = atomic_load(&db->compactor_epoch);
        if (lr == OD_OK && l.epoch > ours) {
            od_err_set(&e, OD_FENCED,
                       "fenced: a newer compactor (epoch %llu) took over this store (compactor lease lost; ours was %llu)",
                       (unsigned long long)l.epoch, (unsigned long long)ours);
            od_db_set_bg_error(db, OD_FENCED, &e);
            return;
        }
        if (lr == OD_OK) {
            snprintf(db->clease_etag, sizeof db->clease_etag, "%s", etag);
            rc = clease_write(db, od_now_ms(), OD_PUT_IF_MATCH, &e);
        } else if (lr == OD_NOTFOUND) {
            rc = clease_write(db, od_now_ms(), OD_PUT_IF_ABSENT, &e);
        }
    }
    if (rc) db->clease_renewed_ms = od_now_ms() - (int64_t)db->o.lease_ms / 3 + 200; /* retry soon */
}

/* Read the compactor lease: *live = 1 when a compactor process holds it now. A missing or
 * unreadable (corrupt) lease is not held. */
static int clease_check(od_db *db, lease *l, char *etag, int *exists, int *live, od_err *err)
{
    *exists = *live = 0;
    od_err le;
    int rc = lease_read_key(db, CLEASE_KEY, l, etag, &le);
    if (rc == OD_OK) {
        *exists = 1;
        *live = lease_live(l, od_now_ms());
    } else if (rc != OD_NOTFOUND && rc != OD_CORRUPT) {
        od_err_copy(err, &le);
        if (err) od_err_prefix(err, "db: reading the compactor lease");
        return rc;
    }
    return OD_OK;
}

/* ---------------- WAL replay ---------------- */

static int apply_batch_body(od_memtable *mem, uint64_t seq, size_t nops, const uint8_t *body, size_t blen,
                            const char *name, od_err *err)
{
    /* ops go to the memtable through od_mt_add_batch, which sorts them and overlaps the
     * skiplist searches' cache misses (random keys several times faster): the whole batch at
     * once in the memtable's scratch (up to 4096 ops per call), else slices of 64 */
    od_rd r = od_rd_make(body, blen);
    od_mt_op small[64], *ops = small;
    size_t cap = sizeof small / sizeof small[0];
    if (nops > cap) {
        size_t want = nops < 4096 ? nops : 4096;
        od_mt_op *sc = od_mt_scratch_ops(mem, want);
        if (sc) {
            ops = sc;
            cap = want;
        }
    }
    size_t n = 0;
    od_op op;
    int rc;
    do {
        rc = od_batch_next_op(&r, &op);
        if (rc == 1)
            ops[n++] = (od_mt_op){.key = op.key, .klen = (uint32_t)op.klen, .val = op.val, .vlen = (uint32_t)op.vlen,
                                  .kind = op.op == OD_OP_DEL ? OD_KIND_DEL : OD_KIND_PUT, .expire_ms = op.expire_ms};
        if (n && (rc != 1 || n == cap)) {
            if (od_mt_add_batch(mem, ops, n, seq))
                return od_err_set(err, OD_NOMEM, "db: out of memory applying batch %llu", (unsigned long long)seq);
            n = 0;
        }
    } while (rc == 1);
    if (rc < 0) return od_err_set(err, OD_CORRUPT, "db: malformed batch %llu in %s", (unsigned long long)seq, name);
    return OD_OK;
}

/* Read WAL ids from `from` until the first missing one (or `until`, exclusive, when non-zero),
 * applying batches with seq > skip_le. *next gets the first id not read; *max_seq the largest seq. */
static int replay_wal(od_db *db, od_memtable *mem, uint64_t from, uint64_t until, uint64_t skip_le, uint64_t *next,
                      uint64_t *max_seq, od_err *err)
{
    od_buf b = {0};
    uint64_t id = from;
    int rc = OD_OK;
    for (; !until || id < until; id++) {
        char key[64];
        od_wal_key(key, sizeof key, id);
        rc = od_store_get(db->store, key, &b, NULL, err);
        if (rc == OD_NOTFOUND) {
            if (until) {
                /* a gap below the fence: a WAL object we must have is missing */
                rc = od_err_set(err, OD_CORRUPT, "db: WAL object %s is missing below the fence at %llu", key,
                                (unsigned long long)until);
            } else {
                rc = OD_OK;
                if (err) od_err_clear(err);
            }
            break;
        }
        if (rc) break;
        od_wal_hdr h;
        if ((rc = od_wal_decode(b.data, b.len, key, &h, err))) break;
        if (h.wal_id != id) {
            rc = od_err_set(err, OD_CORRUPT, "db: WAL object %s holds id %llu", key, (unsigned long long)h.wal_id);
            break;
        }
        od_wal_reader r;
        od_wal_reader_init(&r, b.data, b.len, &h);
        uint64_t seq;
        size_t nops, blen;
        const uint8_t *body;
        while (od_wal_reader_next(&r, &seq, &nops, &body, &blen)) {
            if (seq > *max_seq) *max_seq = seq;
            if (seq <= skip_le) continue;
            if ((rc = apply_batch_body(mem, seq, nops, body, blen, key, err))) goto out;
        }
    }
out:
    *next = id;
    od_buf_free(&b);
    return rc;
}

/* ---------------- open ---------------- */

static void empty_manifest(od_manifest *m)
{
    memset(m, 0, sizeof *m);
    m->wal_replay_from = 1;
    m->next_ckpt_id = 1;
    m->next_run_id = 1;
}

static int open_writer(od_db *db, od_err *err)
{
    od_store_caps caps;
    od_store_get_caps(db->store, &caps);
    if (!caps.conditional_writes && !caps.single_writer_only && !db->o.single_writer)
        return od_err_set(err, OD_UNSUPPORTED,
                          "db: store %s does not honour conditional writes, so fencing cannot protect it; "
                          "open read-only, or set single_writer=1 (or ?single_writer=1 on the URI) if you are "
                          "sure only one writer ever runs",
                          od_store_describe(db->store));
    int rc;
    od_manifest m;
    for (int tries = 0;; tries++) {
        rc = od_manifest_load_latest(db->store, 0, &m, err);
        if (rc == OD_NOTFOUND) {
            empty_manifest(&m);
            if (err) od_err_clear(err);
        } else if (rc) {
            return rc;
        }
        lease l;
        od_err le;
        int lrc = lease_read(db, &l, NULL, &le);
        if (lrc == OD_OK && l.renewed_ms != 0 && !db->o.takeover && l.epoch >= m.writer_epoch) {
            int64_t age = od_now_ms() - l.renewed_ms;
            if (age < (int64_t)l.lease_ms) {
                od_manifest_free(&m);
                return od_err_set(err, OD_BUSY,
                                  "db: lease held: a live writer (epoch %llu) holds the lease on %s (renewed %lld ms "
                                  "ago, lease %u ms); open read-only, wait for it to close, or pass takeover=1 to "
                                  "fence it",
                                  (unsigned long long)l.epoch, od_store_describe(db->store), (long long)age,
                                  l.lease_ms);
            }
        } else if (lrc != OD_OK && lrc != OD_NOTFOUND && lrc != OD_CORRUPT) {
            od_manifest_free(&m);
            od_err_copy(err, &le);
            return lrc;
        }
        /* a compactor process holding a live compactor lease keeps compacting: leave it alone
         * (cmp_main takes compaction back once its lease is released or expires) */
        int defer = 0;
        if (db->o.compactor) {
            lease cl;
            int cexists;
            if ((rc = clease_check(db, &cl, NULL, &cexists, &defer, err))) {
                od_manifest_free(&m);
                return rc;
            }
        }
        atomic_store(&db->compactor_off, defer);
        m.version++;
        m.writer_epoch++;
        if (db->o.compactor && !defer) m.compactor_epoch++; /* the writer compacts: fence older compactors */
        m.committer_id = db->writer_id;
        m.commit_time_ms = od_now_ms();
        rc = od_manifest_put(db->store, &m, err);
        if (rc == OD_OK) break;
        od_manifest_free(&m);
        if (rc != OD_EXISTS || tries > 100) return rc;
    }
    db->man = m;
    db->epoch = m.writer_epoch;
    db->compactor_epoch = m.compactor_epoch;
    if (m.has_job) atomic_store(&db->cjob_pending, 1); /* a compaction to resume (or to leave to its owner) */
    if ((rc = lease_write(db, od_now_ms(), OD_PUT_ALWAYS, err))) {
        od_err_prefix(err, "db: writing the lease"); /* (returns OD_OK when err is NULL) */
        return rc;
    }

    /* Fence: the first free WAL id at or after the replay point. */
    uint64_t fence = db->man.wal_replay_from;
    for (;;) {
        char key[64];
        od_obj_meta meta;
        od_wal_key(key, sizeof key, fence);
        rc = od_store_head(db->store, key, &meta, err);
        if (rc == OD_NOTFOUND) {
            /* The ids we skipped may include a newer writer's fence: make sure our epoch
             * still stands before fencing, or we would fence the newer writer out. */
            od_manifest now_m;
            if ((rc = od_manifest_load_latest(db->store, db->man.version, &now_m, err))) return rc;
            uint64_t now_ep = now_m.writer_epoch;
            od_manifest_free(&now_m);
            if (now_ep > db->epoch)
                return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store while "
                                  "we were opening", (unsigned long long)now_ep);
            od_wal_hdr h = {fence, db->epoch, db->writer_id, 0, 0, 0, OD_WAL_FLAG_FENCE};
            od_buf b = {0};
            rc = od_wal_finish(&b, &h);
            if (rc == OD_OK) rc = od_store_put_if_absent(db->store, key, b.data, b.len, err);
            od_buf_free(&b);
            if (rc == OD_OK) break;
            if (rc != OD_EXISTS) return rc;
            od_manifest fresh;
            if ((rc = od_manifest_load_latest(db->store, db->man.version, &fresh, err))) return rc;
            uint64_t ep = fresh.writer_epoch;
            od_manifest_free(&fresh);
            if (ep > db->epoch)
                return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store while "
                                  "we were opening", (unsigned long long)ep);
        } else if (rc) {
            return rc;
        }
        fence++;
    }
    uint64_t next, max_seq = db->man.last_l0_seq;
    od_memtable *mem = od_mt_new();
    if (!mem) return od_err_set(err, OD_NOMEM, "db: out of memory");
    rc = replay_wal(db, mem, db->man.wal_replay_from, fence, db->man.last_l0_seq, &next, &max_seq, err);
    if (rc) {
        od_mt_unref(mem);
        return rc;
    }
    db->last_seq = max_seq;
    db->durable_seq = max_seq;
    atomic_store(&db->visible_seq, max_seq);
    db->wal_next_id = fence + 1;
    od_tset *ts;
    if ((rc = tset_build(db, &db->man, NULL, &ts, err))) {
        od_mt_unref(mem);
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    rc = version_install(db, mem, NULL, NULL, 0, ts);
    if (rc == OD_OK) db->mem = mem;
    pthread_mutex_unlock(&db->mu);
    od_tset_unref(ts);
    od_mt_unref(mem);
    if (rc) return od_err_set(err, OD_NOMEM, "db: out of memory");
    return OD_OK;
}

/* A separate compactor: refuse while another compactor process holds a live compactor lease
 * (unless takeover); write the compactor lease with the epoch we are about to commit, THEN
 * commit compactor_epoch+1 (a writer that reads the lease after our epoch is visible so sees
 * it live and leaves us alone); view = the manifest's tables only. */
static int open_compactor(od_db *db, od_err *err)
{
    od_manifest m;
    int rc;
    for (int tries = 0;; tries++) {
        if ((rc = od_manifest_load_latest(db->store, 0, &m, err))) {
            if (rc == OD_NOTFOUND)
                od_err_set(err, OD_NOTFOUND, "db: no database in %s to compact", od_store_describe(db->store));
            break;
        }
        lease cl;
        int cexists, clive;
        if ((rc = clease_check(db, &cl, NULL, &cexists, &clive, err))) {
            od_manifest_free(&m);
            break;
        }
        if (clive && cl.writer_id != db->writer_id && !db->o.takeover) {
            int64_t age = od_now_ms() - cl.renewed_ms;
            od_manifest_free(&m);
            rc = od_err_set(err, OD_BUSY,
                            "db: compactor lease held: a live compactor process (compactor epoch %llu) holds the "
                            "compactor lease on %s (renewed %lld ms ago, lease %u ms); wait for it to close, or "
                            "pass takeover=1 to fence it",
                            (unsigned long long)cl.epoch, od_store_describe(db->store), (long long)age, cl.lease_ms);
            break;
        }
        m.version++;
        m.compactor_epoch++;
        m.committer_id = db->writer_id;
        m.commit_time_ms = od_now_ms();
        atomic_store(&db->compactor_epoch, m.compactor_epoch);
        if ((rc = clease_write(db, od_now_ms(), OD_PUT_ALWAYS, err))) {
            od_err_prefix(err, "db: writing the compactor lease");
            od_manifest_free(&m);
            break;
        }
        rc = od_manifest_put(db->store, &m, err);
        if (rc == OD_OK) break;
        od_manifest_free(&m);
        if (rc != OD_EXISTS || tries > 100) break;
    }
    if (rc) return rc; /* od_db_open_store releases a lease we wrote (clease_etag set) */
    db->man = m;
    if (m.has_job) atomic_store(&db->cjob_pending, 1); /* the job of a compactor we just fenced: resume it */
    od_memtable *mem = od_mt_new();
    if (!mem) return od_err_set(err, OD_NOMEM, "db: out of memory");
    od_tset *ts;
    if ((rc = tset_build(db, &db->man, NULL, &ts, err))) {
        od_mt_unref(mem);
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    rc = version_install(db, mem, NULL, NULL, 0, ts);
    if (rc == OD_OK) db->mem = mem;
    atomic_store(&db->visible_seq, m.last_l0_seq);
    pthread_mutex_unlock(&db->mu);
    od_tset_unref(ts);
    od_mt_unref(mem);
    return rc ? od_err_set(err, OD_NOMEM, "db: out of memory") : OD_OK;
}

/* Compactor: pick up manifest versions committed by the writer; a newer compactor epoch (a
 * compactor that took over, or a writer that took compaction back) fences us. */
static int compactor_follow(od_db *db, od_err *err)
{
    pthread_mutex_lock(&db->man_mu);
    od_manifest m;
    int rc = od_manifest_load_latest(db->store, db->man.version, &m, err);
    if (rc == OD_OK && m.compactor_epoch > atomic_load(&db->compactor_epoch)) {
        rc = od_err_set(err, OD_FENCED, "fenced: a newer compactor (epoch %llu) took over this store (ours was %llu)",
                        (unsigned long long)m.compactor_epoch, (unsigned long long)atomic_load(&db->compactor_epoch));
        od_manifest_free(&m);
    } else if (rc == OD_OK && m.version != db->man.version) {
        od_manifest_free(&db->man);
        db->man = m;
        rc = od_db_apply_manifest(db, &db->man, NULL, err);
        atomic_store(&db->visible_seq, db->man.last_l0_seq);
    } else if (rc == OD_OK) {
        od_manifest_free(&m);
    }
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

/* A writer that does not compact itself (a separate compactor process does, or took over):
 * pick up the versions the compactor commits, so that the view stops listing collections
 * it merged away (its GC deletes them after gc_min_age_ms, while our next own commit may be
 * hours away). Also learns early about a newer writer epoch. */
static int writer_follow(od_db *db, od_err *err)
{
    pthread_mutex_lock(&db->man_mu);
    od_manifest m;
    int rc = od_manifest_load_latest(db->store, db->man.version, &m, err);
    if (rc == OD_OK && m.version > db->man.version && m.writer_epoch > db->epoch) {
        rc = od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                        (unsigned long long)m.writer_epoch, (unsigned long long)db->epoch);
        od_manifest_free(&m);
    } else if (rc == OD_OK && m.version > db->man.version) {
        od_manifest_free(&db->man);
        db->man = m;
        rc = od_db_apply_manifest(db, &db->man, NULL, err);
    } else if (rc == OD_OK) {
        od_manifest_free(&m);
    }
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

/* A writer with compactor=1 that leaves compaction to a compactor process: take it back when
 * that process's compactor lease is absent, released or expired. The compactor epoch E is
 * read (latest manifest) BEFORE the lease, and the commit of E+1 requires the manifest to still
 * hold E: a compactor process that opened meanwhile (it writes its lease before committing its
 * epoch) either made the lease live before our read, or bumped E before our commit, which then
 * gives up; either way exactly one of us compacts. A job it recorded is resumed by our next
 * compaction (its compactor epoch is older than ours). *taken = 1 when compaction is ours now. */
struct reclaim_ctx {
    od_db *db;
    uint64_t seen; /* the compactor epoch whose lease we found dead */
};

static int reclaim_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct reclaim_ctx *c = ctx;
    if (m->writer_epoch > c->db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)c->db->epoch);
    if (m->compactor_epoch != c->seen)
        return od_err_set(err, OD_CONFLICT, "db: a compactor (epoch %llu) started while compaction was being taken back",
                          (unsigned long long)m->compactor_epoch);
    m->compactor_epoch = c->seen + 1;
    return OD_OK;
}

static int compactor_reclaim(od_db *db, int *taken, od_err *err)
{
    *taken = 0;
    lease cl;
    char etag[OD_ETAG_MAX] = "";
    int cexists, clive;
    /* the cheap look first (one GET while the compactor lives) */
    int rc = clease_check(db, &cl, NULL, &cexists, &clive, err);
    if (rc || clive) return rc; /* a live compactor process: leave it alone */
    if ((rc = writer_follow(db, err))) return rc; /* the latest manifest (a newer writer epoch: fenced) */
    pthread_mutex_lock(&db->man_mu);
    struct reclaim_ctx c = {db, db->man.compactor_epoch};
    pthread_mutex_unlock(&db->man_mu);
    /* and the lease again, read AFTER the epoch E it is the lease of */
    if ((rc = clease_check(db, &cl, etag, &cexists, &clive, err))) return rc;
    if (clive) return OD_OK;
    pthread_mutex_lock(&db->cmu); /* no compaction of ours runs while the epoch changes */
    if (!atomic_load(&db->compactor_off)) {
        /* taken back meanwhile by the other caller (maintenance worker, od_db_compact): ours
         * already; another bump would only fence ourselves for nothing */
        pthread_mutex_unlock(&db->cmu);
        *taken = 1;
        return OD_OK;
    }
    pthread_mutex_lock(&db->man_mu);
    rc = od_manifest_update(db->store, &db->man, db->writer_id, reclaim_edit, &c, err);
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, NULL, err);
    if (rc == OD_OK) {
        atomic_store(&db->compactor_epoch, db->man.compactor_epoch);
        atomic_store(&db->cjob_pending, db->man.has_job); /* a job it left: resume it */
        atomic_fetch_add(&db->st_reclaims, 1); /* counted before stats show compacting again */
        atomic_store(&db->compactor_off, 0);
        *taken = 1;
    }
    pthread_mutex_unlock(&db->man_mu);
    pthread_mutex_unlock(&db->cmu);
    if (rc == OD_CONFLICT) { /* a compactor process opened meanwhile: it compacts */
        if (err) od_err_clear(err);
        return OD_OK;
    }
    if (rc) return rc;
    /* Best effort: mark the compactor lease released at our epoch, so that the old compactor,
     * should it be alive after all (paused past its lease), learns at its next renewal that it
     * was fenced; a compactor process opening later finds it released. If-Match: a lease written
     * meanwhile (a compactor opening) is not overwritten. */
    lease rl = {atomic_load(&db->compactor_epoch), db->writer_id, 0, db->o.lease_ms};
    uint8_t p[LEASE_BYTES];
    lease_encode(&rl, p);
    od_err e2;
    if (cexists)
        (void)od_store_put(db->store, CLEASE_KEY, p, sizeof p, OD_PUT_IF_MATCH, etag, NULL, &e2);
    else
        (void)od_store_put_if_absent(db->store, CLEASE_KEY, p, sizeof p, &e2);
    pthread_mutex_lock(&db->mu);
    pthread_cond_broadcast(&db->cv_bg); /* the maintenance worker has compaction work */
    pthread_mutex_unlock(&db->mu);
    return OD_OK;
}

/* Read-only: (re)build the view from manifest `m` (ownership taken) and the WAL after it. */
static int reader_load(od_db *db, od_manifest *m, od_err *err)
{
    od_memtable *mem = od_mt_new();
    if (!mem) {
        od_manifest_free(m);
        return od_err_set(err, OD_NOMEM, "db: out of memory");
    }
    uint64_t next, max_seq = m->last_l0_seq;
    int rc = replay_wal(db, mem, m->wal_replay_from, 0, m->last_l0_seq, &next, &max_seq, err);
    od_tset *ts = NULL;
    if (rc == OD_OK) {
        od_version *cur = db->cur ? od_version_get(db) : NULL;
        rc = tset_build(db, m, cur ? cur->ts : NULL, &ts, err);
        od_version_unref(cur);
    }
    if (rc) {
        od_mt_unref(mem);
        od_manifest_free(m);
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    rc = version_install(db, mem, NULL, NULL, 0, ts);
    if (rc == OD_OK) {
        db->mem = mem;
        od_manifest_free(&db->man);
        db->man = *m;
        db->ro_wal_next = next;
        db->last_seq = max_seq;
        db->durable_seq = max_seq;
        atomic_store(&db->visible_seq, max_seq);
    }
    pthread_mutex_unlock(&db->mu);
    od_tset_unref(ts);
    od_mt_unref(mem);
    if (rc) {
        od_manifest_free(m);
        return od_err_set(err, OD_NOMEM, "db: out of memory");
    }
    return OD_OK;
}

static int open_reader(od_db *db, od_err *err)
{
    od_manifest m;
    int rc = od_manifest_load_latest(db->store, 0, &m, err);
    if (rc == OD_NOTFOUND) {
        empty_manifest(&m);
        if (err) od_err_clear(err);
    } else if (rc) {
        return rc;
    }
    return reader_load(db, &m, err);
}

int od_db_refresh(od_db *db, od_err *err)
{
    if (!db->read_only) return OD_OK;
    /* man_mu: reader_load replaces db->man, which od_db_inspect reads under man_mu */
    pthread_mutex_lock(&db->man_mu);
    pthread_mutex_lock(&db->wmu);
    od_manifest m;
    int rc = od_manifest_load_latest(db->store, db->man.version, &m, err);
    if (rc == OD_NOTFOUND) {
        if (err) od_err_clear(err);
        pthread_mutex_unlock(&db->wmu);
        pthread_mutex_unlock(&db->man_mu);
        return OD_OK;
    }
    if (rc) {
        pthread_mutex_unlock(&db->wmu);
        pthread_mutex_unlock(&db->man_mu);
        return rc;
    }
    if (m.version != db->man.version) {
        rc = reader_load(db, &m, err);
        pthread_mutex_unlock(&db->wmu);
        pthread_mutex_unlock(&db->man_mu);
        return rc;
    }
    od_manifest_free(&m);
    od_version *v = od_version_get(db);
    uint64_t next, max_seq = db->last_seq;
    rc = replay_wal(db, v->mem, db->ro_wal_next, 0, db->last_seq, &next, &max_seq, err);
    od_version_unref(v);
    pthread_mutex_lock(&db->mu);
    db->ro_wal_next = next;
    db->last_seq = db->durable_seq = max_seq;
    atomic_store(&db->visible_seq, max_seq);
    pthread_mutex_unlock(&db->mu);
    pthread_mutex_unlock(&db->wmu);
    pthread_mutex_unlock(&db->man_mu);
    return rc;
}

static void *wal_main(void *arg);
static void *bg_main(void *arg);
static void *cmp_main(void *arg);
static void *clease_main(void *arg);

static void db_free(od_db *db)
{
    od_version_unref(db->cur);
    od_manifest_free(&db->man);
    od_buf_free(&db->pend);
    for (size_t i = 0; i < db->npin_left; i++) free(db->pin_left[i]);
    free(db->pin_left);
    if (db->own_cache) od_block_cache_free(db->cache);
    od_disk_cache_close(db->dcache);
    if (db->own_store) od_store_close(db->store);
    pthread_mutex_destroy(&db->wmu);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->man_mu);
    pthread_mutex_destroy(&db->tmu);
    pthread_mutex_destroy(&db->fmu);
    pthread_mutex_destroy(&db->cmu);
    pthread_cond_destroy(&db->cv_flush);
    pthread_cond_destroy(&db->cv_space);
    pthread_cond_destroy(&db->cv_durable);
    pthread_cond_destroy(&db->cv_bg);
    free(db);
}

int od_db_open_store(od_store *store, const od_db_options *opts, od_db **out, od_err *err)
{
    *out = NULL;
    od_db *db = calloc(1, sizeof *db);
    if (!db) return od_err_set(err, OD_NOMEM, "db: out of memory");
    od_db_options d;
    od_db_options_init(&d);
    db->o = opts ? *opts : d;
    if (!db->o.flush_interval_ms) db->o.flush_interval_ms = d.flush_interval_ms;
    if (!db->o.wal_flush_bytes) db->o.wal_flush_bytes = d.wal_flush_bytes;
    if (!db->o.max_unflushed_bytes) db->o.max_unflushed_bytes = d.max_unflushed_bytes;
    if (!db->o.memtable_bytes) db->o.memtable_bytes = d.memtable_bytes;
    if (!db->o.block_size) db->o.block_size = d.block_size;
    if (!db->o.block_cache_bytes) db->o.block_cache_bytes = d.block_cache_bytes;
    if (db->o.l0_compaction_trigger <= 0) db->o.l0_compaction_trigger = d.l0_compaction_trigger;
    if (!db->o.lease_ms) db->o.lease_ms = d.lease_ms;
    if (!db->o.compaction_output_bytes) db->o.compaction_output_bytes = d.compaction_output_bytes;
    if (db->o.compaction_output_bytes < (64u << 10)) db->o.compaction_output_bytes = 64u << 10;
    if (!db->o.flush_retry_ms) db->o.flush_retry_ms = d.flush_retry_ms;
    if (!db->o.follow_interval_ms) db->o.follow_interval_ms = d.follow_interval_ms;
    if (db->o.l0_max_tables < 0) {
        int bad = db->o.l0_max_tables;
        free(db);
        return od_err_set(err, OD_BADREQ, "db: l0_max_tables (%d) must be positive (0 = default)", bad);
    }
    if (!db->o.l0_max_tables) /* the default bound; also for a trigger set high to compact only when asked */
        db->o.l0_max_tables = db->o.l0_compaction_trigger < 32             ? 64
                              : db->o.l0_compaction_trigger > INT_MAX / 2 ? INT_MAX
                                                                          : 2 * db->o.l0_compaction_trigger;
    if (db->o.l0_max_tables <= db->o.l0_compaction_trigger) {
        int rc = od_err_set(err, OD_BADREQ,
                            "db: l0_max_tables (%d) must be greater than l0_compaction_trigger (%d): memtable "
                            "flushes stop when L0 reaches l0_max_tables, and compaction must start before that",
                            db->o.l0_max_tables, db->o.l0_compaction_trigger);
        free(db);
        return rc;
    }
    db->store = store;
    db->read_only = db->o.read_only;
    db->writer_id = random_u64();
    pthread_mutex_init(&db->wmu, NULL);
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->man_mu, NULL);
    pthread_mutex_init(&db->tmu, NULL);
    pthread_mutex_init(&db->fmu, NULL);
    pthread_mutex_init(&db->cmu, NULL);
    pthread_cond_init(&db->cv_flush, NULL);
    pthread_cond_init(&db->cv_space, NULL);
    pthread_cond_init(&db->cv_durable, NULL);
    pthread_cond_init(&db->cv_bg, NULL);
    if (db->o.block_cache) {
        db->cache = db->o.block_cache;
    } else {
        db->cache = od_block_cache_new(db->o.block_cache_bytes);
        if (!db->cache) {
            db_free(db);
            return od_err_set(err, OD_NOMEM, "db: out of memory creating the block cache");
        }
        db->own_cache = 1;
    }
    if (db->o.disk_cache_dir && *db->o.disk_cache_dir) {
        size_t cap = db->o.disk_cache_bytes ? db->o.disk_cache_bytes : d.disk_cache_bytes;
        if (od_disk_cache_open(db->o.disk_cache_dir, cap, &db->dcache, err)) {
            db_free(db);
            return err ? err->code : OD_IO;
        }
    }
    if (db->o.compactor_only) db->read_only = 0;
    int rc = db->read_only ? open_reader(db, err) : db->o.compactor_only ? open_compactor(db, err) : open_writer(db, err);
    if (rc) {
        if (db->o.compactor_only && db->clease_etag[0]) {
            /* a compactor lease we wrote (before or after our epoch commit): release it, or
             * writers and compactors would wait for nothing until it expires */
            od_err e2;
            clease_write(db, 0, OD_PUT_IF_MATCH, &e2);
        }
        db_free(db);
        return rc;
    }
    if (db->o.compactor_only) {
        db->last_gc_ms = od_now_ms();
        db->wal_exited = 1;
        /* both threads or none: a compactor that renews its lease without compacting would keep
         * every writer from compacting for as long as it lives */
        int cerr = pthread_create(&db->cmp_thread, NULL, cmp_main, db);
        if (cerr == 0) {
            db->cmp_thread_on = 1;
            cerr = pthread_create(&db->lease_thread, NULL, clease_main, db);
            if (cerr == 0) db->lease_thread_on = 1;
        }
        if (cerr != 0) {
            const char *which = db->cmp_thread_on ? "lease" : "maintenance";
            if (db->cmp_thread_on) {
                pthread_mutex_lock(&db->mu);
                db->closing = 1;
                pthread_cond_broadcast(&db->cv_bg);
                pthread_mutex_unlock(&db->mu);
                pthread_join(db->cmp_thread, NULL);
            }
            od_err e2;
            clease_write(db, 0, OD_PUT_IF_MATCH, &e2);
            db_free(db);
            return od_err_set(err, OD_NOMEM, "db: cannot start the compactor's %s thread: %s", which, strerror(cerr));
        }
    } else if (!db->read_only) {
        db->last_gc_ms = od_now_ms();
        if (pthread_create(&db->wal_thread, NULL, wal_main, db) != 0) {
            db_free(db);
            return od_err_set(err, OD_NOMEM, "db: cannot start the WAL thread: %s", strerror(errno));
        }
        db->wal_thread_on = 1;
        if (pthread_create(&db->bg_thread, NULL, bg_main, db) == 0) db->bg_thread_on = 1;
        if (pthread_create(&db->cmp_thread, NULL, cmp_main, db) == 0) db->cmp_thread_on = 1;
    }
    *out = db;
    return OD_OK;
}

int od_db_open(const char *uri, const od_db_options *opts, od_db **out, od_err *err)
{
    *out = NULL;
    od_store *s;
    int rc = od_store_open(uri, &s, err);
    if (rc) return rc;
    rc = od_db_open_store(s, opts, out, err);
    if (rc) {
        od_store_close(s);
        return rc;
    }
    (*out)->own_store = 1;
    return OD_OK;
}

/* ---------------- close: leave a short WAL replay tail ---------------- */

static int rotate_memtable(od_db *db);

/* Ship the pending WAL object, then rotate the mutable memtable (if it holds anything) with
 * nothing pending, so the WAL ids below the rotation's replay point hold only its batches and
 * older ones; wmu must not be held. *seq_out gets the last seq the rotated memtable (or an
 * older one) holds. */
static int ship_then_rotate(od_db *db, uint64_t *seq_out, od_err *err)
{
    pthread_mutex_lock(&db->wmu);
    uint64_t seq = db->last_seq;
    db->flush_req = 1;
    pthread_cond_signal(&db->cv_flush);
    pthread_mutex_unlock(&db->wmu);
    int rc = od_db_wait_durable(db, seq, err);
    if (rc) return rc;
    pthread_mutex_lock(&db->wmu);
    /* the replay point recorded for the rotated memtable is wal_next_id: every WAL object
     * below it was taken by the WAL thread before now, so it holds batches of this memtable
     * or older ones (which are flushed first) — also the object shipped just above, which
     * before this order stayed in the replay tail although its batches were in L0 */
    if (od_mt_count(db->mem) > 0) rc = rotate_memtable(db);
    if (db->pend_n) { /* batches written since the ship are in the rotated memtable: ship them
                       * too, so the flush does not wait an interval for their durability */
        db->flush_req = 1;
        pthread_cond_signal(&db->cv_flush);
    }
    *seq_out = db->last_seq;
    pthread_mutex_unlock(&db->wmu);
    if (rc) return od_err_set(err, rc, "db: out of memory rotating the memtable");
    return OD_OK;
}

struct tail_ctx {
    od_db *db;
    uint64_t replay_from, last_seq;
    int nothing; /* set by tail_edit: the manifest already starts replay at or after ours */
};

static int tail_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct tail_ctx *c = ctx;
    if (m->writer_epoch > c->db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)c->db->epoch);
    if (m->wal_replay_from >= c->replay_from) {
        c->nothing = 1;
        return od_err_set(err, OD_EXISTS, "close: the replay point is already at %llu",
                          (unsigned long long)m->wal_replay_from);
    }
    m->wal_replay_from = c->replay_from;
    if (c->last_seq > m->last_l0_seq) m->last_l0_seq = c->last_seq; /* seqs never go back */
    return OD_OK;
}

/* Close of a healthy writer, part 1 (threads still running): flush the memtable to L0, so the
 * WAL objects that hold it leave the replay tail. Stops at the L0 bound (the memtables then
 * stay in the WAL, replayed by the next open). Failures lose nothing (all of it is in the WAL)
 * and are not reported by close (its contract: errors that failed acknowledged writes); a
 * fencing becomes the sticky error as in any flush. */
static void close_flush(od_db *db)
{
    od_err e;
    uint64_t seq;
    if (od_db_check_bg(db, NULL) != OD_OK) return;
    if (ship_then_rotate(db, &seq, &e) != OD_OK) return;
    od_flush_imm(db, &e);
}

/* Part 2 (every thread joined, nothing in flight): when nothing is left in memory — memtable
 * and immutable memtables empty, nothing pending, everything durable — every WAL object below
 * wal_next_id holds only batches that are in L0 (or empty ones), so a manifest commit moves the
 * replay point to wal_next_id (past our fence and our WAL objects). Same CAS discipline as an
 * L0 commit; a newer writer epoch means we are fenced: skip quietly. */
static void close_tail(od_db *db)
{
    if (od_db_check_bg(db, NULL) != OD_OK) return;
    pthread_mutex_lock(&db->man_mu);
    pthread_mutex_lock(&db->wmu);
    pthread_mutex_lock(&db->mu);
    int empty = db->pend_n == 0 && db->durable_seq == db->last_seq && db->cur->nimm == 0 &&
                od_mt_count(db->mem) == 0 && db->wal_exited;
    struct tail_ctx c = {db, db->wal_next_id, db->last_seq, 0};
    pthread_mutex_unlock(&db->mu);
    pthread_mutex_unlock(&db->wmu);
    if (empty && db->man.wal_replay_from < c.replay_from) {
        od_err e;
        od_manifest_update(db->store, &db->man, db->writer_id, tail_edit, &c, &e);
    }
    pthread_mutex_unlock(&db->man_mu);
}

int od_db_close(od_db *db, od_err *err)
{
    if (!db) return OD_OK;
    int rc = OD_OK;
    int tail = !db->read_only && !db->o.compactor_only;
    if (tail) close_flush(db);
    if (!db->read_only) {
        /* closing is read under wmu (writers, WAL thread) and under mu (worker): write it
         * holding both (lock order wmu → mu) */
        pthread_mutex_lock(&db->wmu);
        db->flush_req = 1;
        pthread_mutex_lock(&db->mu);
        db->closing = 1;
        pthread_mutex_unlock(&db->mu);
        pthread_cond_broadcast(&db->cv_flush);
        pthread_cond_broadcast(&db->cv_space);
        pthread_mutex_unlock(&db->wmu);
        if (db->wal_thread_on) pthread_join(db->wal_thread, NULL);
        pthread_mutex_lock(&db->mu);
        pthread_cond_broadcast(&db->cv_bg);
        pthread_cond_broadcast(&db->cv_durable);
        pthread_mutex_unlock(&db->mu);
        if (db->bg_thread_on) pthread_join(db->bg_thread, NULL);
        if (db->cmp_thread_on) pthread_join(db->cmp_thread, NULL);
        if (db->lease_thread_on) pthread_join(db->lease_thread, NULL);
        /* every flush is over: pin objects whose DELETE failed go now (even fenced: they
         * protect nothing of ours any more) */
        od_pin_retry(db);
        if (tail) close_tail(db);
        rc = od_db_check_bg(db, err);
        if (db->o.compactor_only) {
            /* release the compactor lease (if it is still ours): a writer with compactor=1
             * takes compaction back at once, and the next compactor opens without takeover */
            od_err e2;
            lease l;
            char etag[OD_ETAG_MAX];
            if (lease_read_key(db, CLEASE_KEY, &l, etag, &e2) == OD_OK && l.epoch == atomic_load(&db->compactor_epoch) &&
                l.writer_id == db->writer_id) {
                snprintf(db->clease_etag, sizeof db->clease_etag, "%s", etag);
                clease_write(db, 0, OD_PUT_IF_MATCH, &e2);
            }
        } else if (rc != OD_FENCED) {
            od_err e2;
            lease l;
            char etag[OD_ETAG_MAX];
            if (lease_read(db, &l, etag, &e2) == OD_OK && l.epoch == db->epoch && l.writer_id == db->writer_id) {
                snprintf(db->lease_etag, sizeof db->lease_etag, "%s", etag);
                lease_write(db, 0, OD_PUT_IF_MATCH, &e2);
            }
        }
    }
    while (db->snaps) od_snapshot_release(db->snaps);
    db_free(db);
    return rc;
}

/* ---------------- write path ---------------- */

/* Move the mutable memtable to the immutable list. Caller holds wmu. */
static int rotate_memtable(od_db *db)
{
    od_memtable *nm = od_mt_new();
    if (!nm) return OD_NOMEM;
    pthread_mutex_lock(&db->mu);
    od_version *cur = db->cur;
    size_t n = cur->nimm + 1;
    od_memtable **imm = malloc(n * sizeof *imm);
    uint64_t *rf = malloc(n * sizeof *rf);
    int rc = OD_NOMEM;
    if (imm && rf) {
        imm[0] = cur->mem;
        rf[0] = db->wal_next_id; /* the pending object, which holds the next batches, gets this id */
        for (size_t i = 1; i < n; i++) {
            imm[i] = cur->imm[i - 1];
            rf[i] = cur->imm_replay_from[i - 1];
        }
        rc = version_install(db, nm, imm, rf, n, cur->ts);
        if (rc == OD_OK) db->mem = nm;
        pthread_cond_broadcast(&db->cv_bg);
    }
    pthread_mutex_unlock(&db->mu);
    free(imm);
    free(rf);
    od_mt_unref(nm);
    return rc;
}

int od_db_write(od_db *db, od_batch *b, int wait_durable, uint64_t *seq_out, od_err *err)
{
    if (db->read_only) return od_err_set(err, OD_BADREQ, "db: write on a read-only handle");
    if (db->o.compactor_only) return od_err_set(err, OD_BADREQ, "db: write on a compactor-only handle");
    int rc = od_db_check_bg(db, err);
    if (rc) return rc;
    pthread_mutex_lock(&db->wmu);
    if (db->closing) {
        pthread_mutex_unlock(&db->wmu);
        return od_err_set(err, OD_CLOSED, "db: write on a closing handle");
    }
    if (b->count == 0) {
        uint64_t s = db->last_seq;
        pthread_mutex_unlock(&db->wmu);
        if (seq_out) *seq_out = s;
        return wait_durable ? od_db_wait_durable(db, s, err) : OD_OK;
    }
    int64_t stall_start = 0;
    while ((db->unflushed > db->o.max_unflushed_bytes || atomic_load(&db->nimm) >= imm_limit(db)) && !db->closing) {
        int64_t now = od_now_ms(), limit = stall_limit_ms(db);
        if (!stall_start) {
            stall_start = now;
            atomic_fetch_add_explicit(&db->st_write_stalls, 1, memory_order_relaxed);
        }
        if (limit >= 0 && now - stall_start >= limit) {
            /* the batch is not applied; the handle stays usable */
            atomic_fetch_add_explicit(&db->st_write_stall_ms, (uint64_t)(now - stall_start), memory_order_relaxed);
            rc = stall_error(db, err, "writes", now - stall_start);
            pthread_mutex_unlock(&db->wmu);
            return rc;
        }
        pthread_cond_signal(&db->cv_flush);
        if (limit < 0) {
            pthread_cond_wait(&db->cv_space, &db->wmu);
        } else {
            struct timespec ts;
            deadline_after_ms(&ts, stall_start + limit - now);
            pthread_cond_timedwait(&db->cv_space, &db->wmu, &ts);
        }
        pthread_mutex_lock(&db->mu);
        int bad = db->bg_code;
        pthread_mutex_unlock(&db->mu);
        if (bad) {
            atomic_fetch_add_explicit(&db->st_write_stall_ms, (uint64_t)(od_now_ms() - stall_start),
                                      memory_order_relaxed);
            pthread_mutex_unlock(&db->wmu);
            return od_db_check_bg(db, err);
        }
    }
    if (stall_start) {
        atomic_fetch_add_explicit(&db->st_write_stall_ms, (uint64_t)(od_now_ms() - stall_start), memory_order_relaxed);
        if (db->closing) { /* woken by close: the batch is not applied */
            pthread_mutex_unlock(&db->wmu);
            return od_err_set(err, OD_CLOSED, "db: write on a closing handle (it was stalled on back-pressure)");
        }
    }
    uint64_t seq = db->last_seq + 1;
    size_t before = db->pend.len;
    if (db->pend_n == 0 && od_wal_begin(&db->pend)) goto oom;
    if (od_wal_append(&db->pend, seq, b->count, b->buf.data, b->buf.len)) goto oom;
    od_memtable *mem = db->mem;
    od_err le;
    rc = apply_batch_body(mem, seq, b->count, b->buf.data, b->buf.len, "batch", &le);
    if (rc) {
        /* Part of the batch may be in the memtable (invisible: visible_seq is not advanced),
         * so the handle cannot continue. Take the unacknowledged record back out of the WAL
         * buffer and make the failure sticky before unlocking (the WAL thread checks bg_code
         * under wmu before it takes the pending object), or the WAL thread could ship a
         * record whose sequence the next opener would then see twice. */
        db->pend.len = db->pend_n == 0 ? 0 : before;
        if (rc == OD_NOMEM)
            od_err_set(&le, rc,
                       "db: out of memory inserting batch %llu (%zu ops) into the memtable: the batch is not "
                       "written; the handle must be closed and reopened",
                       (unsigned long long)seq, b->count);
        pthread_mutex_lock(&db->mu);
        if (!db->bg_code) {
            db->bg_code = rc;
            od_err_copy(&db->bg_err, &le);
            db->bg_err.code = rc;
        }
        pthread_mutex_unlock(&db->mu);
        pthread_mutex_unlock(&db->wmu);
        od_db_set_bg_error(db, rc, &le); /* already set: wakes the waiters */
        return od_err_copy(err, &le);
    }
    db->last_seq = seq;
    if (db->pend_n == 0) {
        db->pend_first = seq;
        db->pend_since_ms = od_now_ms();
        pthread_cond_signal(&db->cv_flush); /* the flusher now has a deadline */
    }
    db->pend_last = seq;
    db->pend_n++;
    db->unflushed += db->pend.len - before;
    atomic_store_explicit(&db->visible_seq, seq, memory_order_release);
    atomic_fetch_add_explicit(&db->st_user_bytes, b->user_bytes, memory_order_relaxed);
    if (db->pend.len >= db->o.wal_flush_bytes) pthread_cond_signal(&db->cv_flush);
    if (od_mt_bytes(mem) >= db->o.memtable_bytes) {
        if (rotate_memtable(db)) {
            pthread_mutex_unlock(&db->wmu);
            return od_err_set(err, OD_NOMEM, "db: out of memory rotating the memtable");
        }
    }
    pthread_mutex_unlock(&db->wmu);
    if (seq_out) *seq_out = seq;
    return wait_durable ? od_db_wait_durable(db, seq, err) : OD_OK;
oom:
    if (db->pend_n == 0) db->pend.len = 0;
    else db->pend.len = before;
    pthread_mutex_unlock(&db->wmu);
    return od_err_set(err, OD_NOMEM, "db: out of memory appending to the WAL");
}

void od_db_test_fail_memtable_insert(od_db *db, uint64_t nth)
{
    pthread_mutex_lock(&db->wmu);
    od_mt_test_fail_after(db->mem, nth);
    pthread_mutex_unlock(&db->wmu);
}

int od_db_wait_durable(od_db *db, uint64_t seq, od_err *err)
{
    if (db->read_only) return OD_OK;
    pthread_mutex_lock(&db->mu);
    while (db->durable_seq < seq && !db->bg_code && !db->wal_exited)
        pthread_cond_wait(&db->cv_durable, &db->mu);
    int rc = OD_OK;
    if (db->durable_seq < seq) {
        rc = db->bg_code ? db->bg_code : OD_CLOSED;
        if (db->bg_code)
            od_err_copy(err, &db->bg_err);
        else
            od_err_set(err, OD_CLOSED, "db: closed before seq %llu became durable", (unsigned long long)seq);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* The WAL thread: one object per interval, lease renewal.
 *
 * A pending object is shipped when the interval since its first batch has passed, or at
 * once when the previous WAL PUT started at least an interval ago (an idle WAL: a lone
 * durable write is not held back for a whole interval, and under load PUTs still start at
 * most once per interval), or on size, flush request or close. */
static void *wal_main(void *arg)
{
    od_db *db = arg;
    od_buf out = {0};
    int64_t last_put_ms = INT64_MIN / 2; /* start of the previous WAL PUT */
    pthread_mutex_lock(&db->wmu);
    for (;;) {
        int64_t now = od_now_ms();
        pthread_mutex_lock(&db->mu);
        int bad = db->bg_code;
        pthread_mutex_unlock(&db->mu);
        if (bad) {
            /* fenced or failed: nothing pending can become durable */
            db->pend_n = 0;
            db->pend.len = 0;
            db->unflushed = 0;
            pthread_cond_broadcast(&db->cv_space);
            if (db->closing) break;
            pthread_cond_wait(&db->cv_flush, &db->wmu);
            continue;
        }
        if (!db->closing && now >= db->lease_renewed_ms + (int64_t)db->o.lease_ms / 3) {
            /* renew even under sustained load, when a flush is always due */
            pthread_mutex_unlock(&db->wmu);
            lease_renew(db);
            pthread_mutex_lock(&db->wmu);
            continue;
        }
        int64_t ship_at = db->pend_since_ms + (int64_t)db->o.flush_interval_ms;
        if (last_put_ms + (int64_t)db->o.flush_interval_ms < ship_at)
            ship_at = last_put_ms + (int64_t)db->o.flush_interval_ms;
        int due = db->pend_n > 0 &&
                  (db->flush_req || db->closing || db->pend.len >= db->o.wal_flush_bytes || now >= ship_at);
        if (!due) {
            db->flush_req = 0;
            if (db->closing) break;
            int64_t wake = db->lease_renewed_ms + (int64_t)db->o.lease_ms / 3;
            if (db->pend_n > 0 && ship_at < wake) wake = ship_at;
            struct timespec ts;
            deadline_after_ms(&ts, wake - now > 0 ? wake - now : 1);
            pthread_cond_timedwait(&db->cv_flush, &db->wmu, &ts);
            continue;
        }
        /* take the pending object */
        od_buf tmp = db->pend;
        db->pend = out;
        db->pend.len = 0;
        out = tmp;
        od_wal_hdr h = {db->wal_next_id++, db->epoch, db->writer_id, db->pend_first, db->pend_last, db->pend_n, 0};
        db->pend_n = 0;
        db->pend_first = db->pend_last = 0;
        size_t taken = out.len;
        last_put_ms = now;
        pthread_mutex_unlock(&db->wmu);

        od_err e;
        char key[64];
        od_wal_key(key, sizeof key, h.wal_id);
        int rc = od_wal_finish(&out, &h);
        if (rc)
            od_err_set(&e, rc, "db: out of memory finishing WAL object %s", key);
        else
            rc = od_store_put_if_absent(db->store, key, out.data, out.len, &e);
        if (rc == OD_EXISTS && od_landed(db->store, key, out.data, out.len)) {
            rc = OD_OK;
            od_err_clear(&e);
        }
        if (rc == OD_EXISTS) rc = od_fenced_error(db, &e, key);
        if (rc == OD_OK) {
            /* GC deletes an old fence only after gc_min_age_ms (and a newer writer respects our
             * lease for lease_ms): a PUT ending well within both of the last proof is safe */
            int64_t bound = (int64_t)(db->o.lease_ms < db->o.gc_min_age_ms ? db->o.lease_ms : db->o.gc_min_age_ms) / 2;
            if (od_now_ms() - db->fence_checked_ms > bound) rc = wal_check_not_fenced(db, key, &e);
        }
        if (rc) {
            if (rc != OD_FENCED) od_err_prefix(&e, "db: WAL write of %s failed; batches %llu..%llu are not durable", key,
                                               (unsigned long long)h.first_seq, (unsigned long long)h.last_seq);
            od_db_set_bg_error(db, rc, &e);
        } else {
            /* counted before the waiters wake, so a caller that saw its batch durable also
             * sees the WAL object in the stats */
            atomic_fetch_add(&db->st_wal_flushes, 1);
            atomic_fetch_add(&db->st_wal_bytes, out.len);
            pthread_mutex_lock(&db->mu);
            db->durable_seq = h.last_seq;
            pthread_cond_broadcast(&db->cv_durable);
            pthread_mutex_unlock(&db->mu);
        }
        pthread_mutex_lock(&db->wmu);
        db->unflushed = db->unflushed > taken ? db->unflushed - taken : 0;
        pthread_cond_broadcast(&db->cv_space);
    }
    pthread_mutex_unlock(&db->wmu);
    od_buf_free(&out);
    pthread_mutex_lock(&db->mu);
    db->wal_exited = 1;
    pthread_cond_broadcast(&db->cv_durable);
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* Store trouble that a later attempt may not meet: worth retrying an L0 flush for. Fencing,
 * corruption, refused credentials and bad requests are not. */
static int flush_retryable(int rc)
{
    return rc == OD_TRANSIENT || rc == OD_TIMEOUT || rc == OD_IO || rc == OD_CONFLICT || rc == OD_NOMEM;
}

/* The flush worker: memtable flushes to L0 (the only thing that frees writers stalled on
 * immutable memtables, so it never waits for a compaction to finish), retried with backoff on
 * store trouble for flush_retry_ms; and, in a writer that does not compact itself, following
 * the manifest the compactor commits. While L0 holds l0_max_tables collections it flushes
 * nothing (l0_stalled): memtables wait, readable, until a compaction commit (ours, or a
 * compactor process's, seen by following) reduces L0; writers meanwhile stall on the waiting
 * memtables (back-pressure), so L0, read amplification and the manifest stay bounded. */
static void *bg_main(void *arg)
{
    od_db *db = arg;
    pthread_mutex_lock(&db->mu);
    int64_t follow_at = 0, retry_at = 0, fail_since = 0, backoff = 0;
    int fails = 0;
    while (!db->closing && !db->bg_code) {
        int64_t now = od_now_ms();
        int follow = !db->o.compactor || atomic_load(&db->compactor_off);
        if (follow && now >= follow_at) {
            /* stalled at the L0 bound: look for the compactor's commits more often */
            follow_at = now + (db->l0_stalled && db->o.follow_interval_ms > 100 ? 100 : db->o.follow_interval_ms);
            pthread_mutex_unlock(&db->mu);
            od_err fe;
            if (writer_follow(db, &fe) == OD_FENCED) od_db_set_bg_error(db, OD_FENCED, &fe);
            pthread_mutex_lock(&db->mu); /* other failures: try again next period */
            continue;
        }
        int full = db->cur->nimm && l0_full_locked(db);
        if (full != db->l0_stalled) {
            db->l0_stalled = full;
            if (full) atomic_fetch_add(&db->st_l0_stalls, 1);
            if (full && follow && follow_at > now + 100) follow_at = now + 100;
        }
        if (db->cur->nimm == 0 || now < retry_at || full) {
            int64_t wake = now + 1000; /* an L0 stall also ends by od_db_apply_manifest's broadcast */
            if (follow && follow_at < wake) wake = follow_at;
            if (db->cur->nimm && retry_at < wake) wake = retry_at;
            struct timespec ts;
            deadline_after_ms(&ts, wake - now > 0 ? wake - now : 1);
            pthread_cond_timedwait(&db->cv_bg, &db->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&db->mu);
        od_err e;
        int rc = od_flush_imm(db, &e);
        now = od_now_ms();
        pthread_mutex_lock(&db->mu);
        int closing = db->closing;
        pthread_mutex_unlock(&db->mu);
        if (rc == OD_CLOSED && closing) {
            rc = OD_OK; /* the WAL stopped for close: the memtable is in the WAL, replayed at open */
        } else if (rc == OD_OK) {
            fails = 0;
            backoff = 0;
            retry_at = 0;
        } else if (flush_retryable(rc) && (fails == 0 || now - fail_since < (int64_t)db->o.flush_retry_ms)) {
            if (fails++ == 0) fail_since = now;
            backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 20;
            retry_at = now + backoff; /* writers meanwhile stall on back-pressure, nothing is lost */
        } else {
            if (fails)
                od_err_prefix(&e, "db: L0 flush failed %d times over %lld ms (flush_retry_ms %u); last failure", fails + 1,
                              (long long)(now - fail_since), db->o.flush_retry_ms);
            else
                od_err_prefix(&e, "db: L0 flush failed");
            od_db_set_bg_error(db, rc, &e);
        }
        pthread_mutex_lock(&db->mu);
        if (rc == OD_OK) pthread_cond_broadcast(&db->cv_bg); /* the compaction worker may have work */
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* The maintenance worker: compaction (a writer with compactor=1, or a compactor process, which
 * also follows the writer's manifest versions) and GC. Runs beside the flush worker: a long
 * compaction holds cmu, never fmu. */
static void *cmp_main(void *arg)
{
    od_db *db = arg;
    pthread_mutex_lock(&db->mu);
    int64_t compact_after = 0, follow_at = 0, reclaim_at = 0;
    /* a writer left by a compactor process looks at its lease this often */
    int64_t reclaim_every = db->o.lease_ms / 4 < 1000 ? db->o.lease_ms / 4 : 1000;
    if (reclaim_every < 10) reclaim_every = 10;
    while (!db->closing && !db->bg_code) {
        int64_t now = od_now_ms();
        if (db->o.compactor_only && now >= follow_at) {
            follow_at = now + db->o.follow_interval_ms;
            pthread_mutex_unlock(&db->mu);
            od_err fe;
            if (compactor_follow(db, &fe) == OD_FENCED) od_db_set_bg_error(db, OD_FENCED, &fe);
            pthread_mutex_lock(&db->mu); /* other failures: try again next period */
            continue;
        }
        int deferring = db->o.compactor && !db->o.compactor_only && atomic_load(&db->compactor_off);
        if (deferring && now >= reclaim_at) {
            reclaim_at = now + reclaim_every;
            pthread_mutex_unlock(&db->mu);
            od_err re;
            int taken;
            if (compactor_reclaim(db, &taken, &re) == OD_FENCED) od_db_set_bg_error(db, OD_FENCED, &re);
            pthread_mutex_lock(&db->mu); /* other failures: try again next period */
            continue;
        }
        int compacting = (db->o.compactor || db->o.compactor_only) && !atomic_load(&db->compactor_off);
        int want_compact = compacting && now >= compact_after &&
                           (db->cur->ts->nl0 >= (size_t)db->o.l0_compaction_trigger || atomic_load(&db->cjob_pending));
        int want_gc = db->o.gc_interval_ms && now >= db->last_gc_ms + (int64_t)db->o.gc_interval_ms;
        if (!want_compact && !want_gc) {
            int64_t wait = db->o.gc_interval_ms ? db->last_gc_ms + (int64_t)db->o.gc_interval_ms - now : 1000;
            if (db->o.compactor_only && follow_at - now < wait) wait = follow_at - now;
            if (deferring && reclaim_at - now < wait) wait = reclaim_at - now;
            if (compacting && compact_after > now && compact_after - now < wait) wait = compact_after - now;
            if (wait < 1) wait = 1;
            struct timespec ts;
            deadline_after_ms(&ts, wait);
            pthread_cond_timedwait(&db->cv_bg, &db->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&db->mu);
        if (want_compact) {
            int did;
            od_err ce;
            int crc = od_compact_run(db, 0, &did, &ce);
            if (crc == OD_FENCED && !db->o.compactor_only) {
                /* a separate compactor took over: stop compacting here (until its lease is gone) */
                atomic_store(&db->compactor_off, 1);
                reclaim_at = od_now_ms() + reclaim_every;
                pthread_mutex_lock(&db->mu);
                pthread_cond_broadcast(&db->cv_bg); /* the flush worker starts following the manifest */
                pthread_mutex_unlock(&db->mu);
            } else if (crc == OD_FENCED) {
                od_db_set_bg_error(db, crc, &ce);
            } else if (crc) {
                compact_after = od_now_ms() + 1000; /* conflict or store trouble: retry later (resumes) */
            }
        }
        if (want_gc) {
            db->last_gc_ms = od_now_ms();
            od_err ge;
            od_gc_run(db, &ge); /* GC failures are retried next period */
        }
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* A compactor process's lease thread: renews the compactor lease every lease_ms/3, apart from
 * the maintenance worker, whose compactions may run for minutes. Stops when the handle closes
 * or is fenced (a fenced compactor must not keep others out). */
static void *clease_main(void *arg)
{
    od_db *db = arg;
    pthread_mutex_lock(&db->mu);
    while (!db->closing && !db->bg_code) {
        int64_t now = od_now_ms(), due = db->clease_renewed_ms + (int64_t)db->o.lease_ms / 3;
        if (now >= due) {
            pthread_mutex_unlock(&db->mu);
            clease_renew(db);
            pthread_mutex_lock(&db->mu);
            continue;
        }
        struct timespec ts;
        deadline_after_ms(&ts, due - now);
        pthread_cond_timedwait(&db->cv_bg, &db->mu, &ts);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

int od_db_flush(od_db *db, int memtable, od_err *err)
{
    if (db->read_only || db->o.compactor_only) return OD_OK;
    int rc;
    uint64_t seq;
    if (!memtable) {
        pthread_mutex_lock(&db->wmu);
        seq = db->last_seq;
        db->flush_req = 1;
        pthread_cond_signal(&db->cv_flush);
        pthread_mutex_unlock(&db->wmu);
        return od_db_wait_durable(db, seq, err);
    }
    /* WAL first, then rotate: the WAL object shipped here is then below the flushed memtable's
     * replay point, instead of staying in every later open's replay tail */
    if ((rc = ship_then_rotate(db, &seq, err))) return rc;
    /* Flush until no immutable memtable holds seqs ≤ seq (they are flushed oldest first, and
     * the one rotated above ends at seq). At the L0 bound, wait for compaction to make room. */
    int64_t stall_start = 0;
    for (;;) {
        if ((rc = od_flush_imm(db, err))) break;
        pthread_mutex_lock(&db->mu);
        od_version *v = db->cur;
        int done = v->nimm == 0 || od_mt_max_seq(v->imm[v->nimm - 1]) > seq;
        int full = !done && l0_full_locked(db);
        if (!done && full && !db->closing && !db->bg_code) {
            int64_t now = od_now_ms(), limit = stall_limit_ms(db);
            if (!stall_start) {
                stall_start = now;
                atomic_fetch_add_explicit(&db->st_write_stalls, 1, memory_order_relaxed);
            }
            if (limit >= 0 && now - stall_start >= limit) {
                pthread_mutex_unlock(&db->mu);
                rc = stall_error(db, err, "od_db_flush", now - stall_start);
                break;
            }
            int64_t wait = limit >= 0 && stall_start + limit - now < 1000 ? stall_start + limit - now : 1000;
            struct timespec ts;
            deadline_after_ms(&ts, wait); /* woken by od_db_apply_manifest when L0 shrinks */
            pthread_cond_timedwait(&db->cv_bg, &db->mu, &ts);
        }
        int closing = db->closing;
        pthread_mutex_unlock(&db->mu);
        if (done) break;
        if ((rc = od_db_check_bg(db, err))) break;
        if (closing) {
            rc = od_err_set(err, OD_CLOSED, "db: closed while od_db_flush waited for compaction to make room in L0");
            break;
        }
    }
    if (stall_start)
        atomic_fetch_add_explicit(&db->st_write_stall_ms, (uint64_t)(od_now_ms() - stall_start), memory_order_relaxed);
    return rc;
}

int od_db_compact(od_db *db, od_err *err)
{
    if (db->read_only) return od_err_set(err, OD_BADREQ, "db: compaction on a read-only handle");
    int rc, did;
    if (db->o.compactor_only && (rc = compactor_follow(db, err))) return rc;
    if (db->o.compactor && !db->o.compactor_only && atomic_load(&db->compactor_off)) {
        /* compaction was left to a compactor process: take it back if that one is gone */
        int taken;
        if ((rc = compactor_reclaim(db, &taken, err))) return rc;
        if (!taken) {
            pthread_mutex_lock(&db->man_mu);
            uint64_t ce = db->man.compactor_epoch;
            pthread_mutex_unlock(&db->man_mu);
            return od_err_set(err, OD_FENCED,
                              "fenced: a newer compactor (a compactor process, compactor epoch %llu) compacts this "
                              "store and its compactor lease is live; compaction is left to it",
                              (unsigned long long)ce);
        }
    }
    do {
        rc = od_compact_run(db, 1, &did, err);
    } while (rc == OD_OK && did);
    return rc;
}

int od_db_gc(od_db *db, od_err *err)
{
    if (db->read_only) return od_err_set(err, OD_BADREQ, "db: garbage collection on a read-only handle");
    return od_gc_run(db, err);
}

/* ---------------- reads ---------------- */

uint64_t od_db_min_snapshot_seq(od_db *db)
{
    uint64_t m = atomic_load(&db->visible_seq);
    pthread_mutex_lock(&db->mu);
    for (od_snapshot *s = db->snaps; s; s = s->next)
        if (s->seq < m) m = s->seq;
    pthread_mutex_unlock(&db->mu);
    return m;
}

int od_db_snapshot(od_db *db, od_snapshot **out, od_err *err)
{
    od_snapshot *s = calloc(1, sizeof *s);
    if (!s) return od_err_set(err, OD_NOMEM, "db: out of memory");
    s->db = db;
    pthread_mutex_lock(&db->mu);
    s->v = db->cur;
    atomic_fetch_add(&s->v->refs, 1);
    s->seq = atomic_load(&db->visible_seq);
    s->next = db->snaps;
    if (db->snaps) db->snaps->prev = s;
    db->snaps = s;
    pthread_mutex_unlock(&db->mu);
    *out = s;
    return OD_OK;
}

void od_snapshot_release(od_snapshot *s)
{
    if (!s) return;
    od_db *db = s->db;
    pthread_mutex_lock(&db->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        db->snaps = s->next;
    if (s->next) s->next->prev = s->prev;
    pthread_mutex_unlock(&db->mu);
    od_version_unref(s->v);
    free(s);
}

static int table_contains(const od_table *t, const void *key, size_t klen)
{
    return od_key_cmp(key, klen, t->desc.min_key, t->desc.min_klen) >= 0 &&
           od_key_cmp(key, klen, t->desc.max_key, t->desc.max_klen) <= 0;
}

/* 1 found (e filled), 0 not in table, <0 error (-rc). */
static int table_get(od_db *db, od_table *t, const void *key, size_t klen, uint64_t seq, od_entry *e, od_buf *hold,
                     od_err *err)
{
    if (!table_contains(t, key, klen)) return 0;
    atomic_fetch_add_explicit(&db->st_sst_reads, 1, memory_order_relaxed);
    /* no error message on the hot path: "not in this table" is the common answer */
    int rc = od_sst_get(t->sst, key, klen, seq, e, hold, NULL);
    if (rc == OD_NOTFOUND) return 0;
    if (rc) rc = od_sst_get(t->sst, key, klen, seq, e, hold, err); /* again, for the message */
    if (rc == OD_NOTFOUND) return 0;
    if (rc) return -rc;
    return 1;
}

/* Per-thread scratch buffer for values read from collections, so a get does not malloc;
 * freed by the key's destructor when the thread exits. */
static pthread_key_t hold_key;
static pthread_once_t hold_once = PTHREAD_ONCE_INIT;
static int hold_key_ok;

static void hold_destroy(void *p)
{
    od_buf_free(p);
    free(p);
}

static void hold_init(void)
{
    hold_key_ok = pthread_key_create(&hold_key, hold_destroy) == 0;
}

static od_buf *get_hold(void)
{
    pthread_once(&hold_once, hold_init);
    if (!hold_key_ok) return NULL;
    od_buf *b = pthread_getspecific(hold_key);
    if (!b && (b = calloc(1, sizeof *b)) && pthread_setspecific(hold_key, b) != 0) {
        free(b);
        b = NULL;
    }
    return b;
}

int od_db_get(od_db *db, const od_snapshot *snap, const void *key, size_t klen, od_buf *val, od_err *err)
{
    atomic_fetch_add_explicit(&db->st_gets, 1, memory_order_relaxed);
    od_version *v = snap ? snap->v : od_version_get(db);
    uint64_t seq = snap ? snap->seq : atomic_load_explicit(&db->visible_seq, memory_order_acquire);
    od_entry e;
    od_buf hold_local = {0};
    od_buf *hp = get_hold();
    if (!hp) hp = &hold_local;
    int found = od_mt_get(v->mem, key, klen, seq, &e);
    for (size_t i = 0; !found && i < v->nimm; i++) found = od_mt_get(v->imm[i], key, klen, seq, &e);
    for (size_t i = 0; !found && i < v->ts->nl0; i++) found = table_get(db, v->ts->l0[i], key, klen, seq, &e, hp, err);
    for (size_t r = 0; !found && r < v->ts->nruns; r++) {
        od_vrun *run = &v->ts->runs[r];
        size_t lo = 0, hi = run->n; /* first table with max_key ≥ key */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (od_key_cmp(run->t[mid]->desc.max_key, run->t[mid]->desc.max_klen, key, klen) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < run->n) found = table_get(db, run->t[lo], key, klen, seq, &e, hp, err);
    }
    int rc;
    if (found < 0) {
        rc = -found;
    } else if (found && od_entry_visible(&e, e.expire_ms ? od_now_ms() : 0)) {
        od_buf_reset(val);
        rc = od_buf_append(val, e.val, e.vlen) ? od_err_set(err, OD_NOMEM, "db: out of memory") : OD_OK;
        if (rc == OD_OK && od_buf_reserve(val, 1) == OD_OK) val->data[val->len] = 0;
    } else {
        rc = OD_NOTFOUND;
        if (err) od_err_set(err, OD_NOTFOUND, "db: key not found");
    }
    if (hp->cap > (1u << 20)) od_buf_free(hp); /* do not keep big values around */
    od_buf_free(&hold_local);
    if (!snap) od_version_unref(v);
    return rc;
}

/* ---------------- checkpoints ---------------- */

struct ckpt_ctx {
    uint32_t lifetime_ms;
    uint64_t id;
    int del;
    uint64_t epoch;
};

static int ckpt_edit(void *ctx, od_manifest *m, od_err *err)
{
    struct ckpt_ctx *c = ctx;
    if (m->writer_epoch > c->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store",
                          (unsigned long long)m->writer_epoch);
    if (c->del) {
        size_t j = 0;
        for (size_t i = 0; i < m->nckpt; i++)
            if (m->ckpts[i].id != c->id) m->ckpts[j++] = m->ckpts[i];
        if (j == m->nckpt)
            return od_err_set(err, OD_NOTFOUND, "db: no checkpoint %llu", (unsigned long long)c->id);
        m->nckpt = j;
        return OD_OK;
    }
    od_ckpt *n = realloc(m->ckpts, (m->nckpt + 1) * sizeof(od_ckpt));
    if (!n) return od_err_set(err, OD_NOMEM, "db: out of memory");
    m->ckpts = n;
    c->id = m->next_ckpt_id ? m->next_ckpt_id : 1;
    m->next_ckpt_id = c->id + 1;
    n[m->nckpt].id = c->id;
    n[m->nckpt].manifest_version = m->version + 1; /* the version being committed pins itself */
    n[m->nckpt].expire_ms = c->lifetime_ms ? od_now_ms() + c->lifetime_ms : 0;
    m->nckpt++;
    return OD_OK;
}

static int ckpt_change(od_db *db, struct ckpt_ctx *c, od_err *err)
{
    if (db->read_only || db->o.compactor_only) return od_err_set(err, OD_BADREQ, "db: checkpoints need a writer handle");
    c->epoch = db->epoch;
    pthread_mutex_lock(&db->man_mu);
    int rc = od_manifest_update(db->store, &db->man, db->writer_id, ckpt_edit, c, err);
    if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, NULL, err);
    pthread_mutex_unlock(&db->man_mu);
    if (rc == OD_FENCED) od_db_set_bg_error(db, rc, err);
    return rc;
}

int od_db_checkpoint_create(od_db *db, uint32_t lifetime_ms, uint64_t *id_out, od_err *err)
{
    struct ckpt_ctx c = {lifetime_ms, 0, 0, 0};
    int rc = ckpt_change(db, &c, err);
    if (rc == OD_OK && id_out) *id_out = c.id;
    return rc;
}

int od_db_checkpoint_delete(od_db *db, uint64_t id, od_err *err)
{
    struct ckpt_ctx c = {0, id, 1, 0};
    return ckpt_change(db, &c, err);
}

/* ---------------- observability ---------------- */

void od_db_get_stats(od_db *db, od_db_stats *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&db->wmu);
    o->last_seq = db->last_seq;
    pthread_mutex_unlock(&db->wmu);
    pthread_mutex_lock(&db->mu);
    o->durable_seq = db->durable_seq;
    o->writer_epoch = db->read_only ? db->man.writer_epoch : db->epoch;
    od_version *v = db->cur;
    o->manifest_version = v->ts->manifest_version;
    o->l0_count = v->ts->nl0;
    o->sorted_runs = v->ts->nruns;
    o->memtable_bytes = od_mt_bytes(v->mem);
    o->l0_stalled = db->l0_stalled;
    int bad = db->bg_code != 0; /* fenced or failed: no background work any more */
    for (size_t i = 0; i < v->nimm; i++) o->memtable_bytes += od_mt_bytes(v->imm[i]);
    for (size_t i = 0; i < v->ts->nl0; i++) {
        o->live_ssts++;
        o->live_sst_bytes += v->ts->l0[i]->desc.size;
    }
    for (size_t r = 0; r < v->ts->nruns; r++)
        for (size_t i = 0; i < v->ts->runs[r].n; i++) {
            o->live_ssts++;
            o->live_sst_bytes += v->ts->runs[r].t[i]->desc.size;
        }
    pthread_mutex_unlock(&db->mu);
    o->wal_flushes = atomic_load(&db->st_wal_flushes);
    o->wal_bytes = atomic_load(&db->st_wal_bytes);
    o->memtable_flushes = atomic_load(&db->st_mem_flushes);
    o->compactions = atomic_load(&db->st_compactions);
    o->compaction_bytes_in = atomic_load(&db->st_cbytes_in);
    o->compaction_bytes_out = atomic_load(&db->st_cbytes_out);
    o->user_bytes_written = atomic_load(&db->st_user_bytes);
    o->gets = atomic_load(&db->st_gets);
    o->iters = atomic_load(&db->st_iters);
    o->sst_reads = atomic_load(&db->st_sst_reads);
    o->gc_deleted = atomic_load(&db->st_gc_deleted);
    o->write_stalls = atomic_load(&db->st_write_stalls);
    o->write_stall_ms = atomic_load(&db->st_write_stall_ms);
    o->l0_stalls = atomic_load(&db->st_l0_stalls);
    o->compacting = !db->read_only && (db->o.compactor || db->o.compactor_only) && !atomic_load(&db->compactor_off) &&
                    !bad;
    o->compactor_epoch = atomic_load(&db->compactor_epoch);
    o->compaction_reclaims = atomic_load(&db->st_reclaims);
    size_t cb;
    od_block_cache_stats(db->cache, &o->block_cache_hits, &o->block_cache_misses, &cb);
    if (db->dcache) od_disk_cache_stats(db->dcache, &o->disk_cache_hits, &o->disk_cache_misses, NULL);
    od_store_get_stats(db->store, &o->store);
}

static int json_key(od_buf *b, const char *name, const uint8_t *k, size_t n)
{
    int rc = od_buf_printf(b, "\"%s\":\"", name);
    for (size_t i = 0; !rc && i < n; i++) rc = od_buf_printf(b, "%02x", k[i]);
    return rc | od_buf_append_str(b, "\"");
}

static int json_desc(od_buf *b, const od_sst_desc *d)
{
    int rc = od_buf_printf(b, "{\"id\":\"%s\",\"size\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"min_seq\":%" PRIu64
                              ",\"max_seq\":%" PRIu64 ",",
                           d->id, d->size, d->entries, d->min_seq, d->max_seq);
    rc |= json_key(b, "min_key_hex", d->min_key, d->min_klen);
    rc |= od_buf_append_str(b, ",");
    rc |= json_key(b, "max_key_hex", d->max_key, d->max_klen);
    return rc | od_buf_append_str(b, "}");
}

int od_db_inspect(od_db *db, od_buf *json, od_err *err)
{
    pthread_mutex_lock(&db->man_mu);
    const od_manifest *m = &db->man;
    od_buf_reset(json);
    int rc = od_buf_printf(json,
                           "{\"store\":\"%s\",\"read_only\":%d,\"manifest_version\":%" PRIu64 ",\"writer_epoch\":%" PRIu64
                           ",\"compactor_epoch\":%" PRIu64 ",\"wal_replay_from\":%" PRIu64 ",\"last_l0_seq\":%" PRIu64
                           ",\"l0\":[",
                           od_store_describe(db->store), db->read_only, m->version, m->writer_epoch, m->compactor_epoch,
                           m->wal_replay_from, m->last_l0_seq);
    for (size_t i = 0; !rc && i < m->nl0; i++) {
        if (i) rc |= od_buf_append_str(json, ",");
        rc |= json_desc(json, &m->l0[i]);
    }
    rc |= od_buf_append_str(json, "],\"runs\":[");
    for (size_t r = 0; !rc && r < m->nruns; r++) {
        rc |= od_buf_printf(json, "%s{\"id\":%" PRIu64 ",\"ssts\":[", r ? "," : "", m->runs[r].id);
        for (size_t i = 0; !rc && i < m->runs[r].n; i++) {
            if (i) rc |= od_buf_append_str(json, ",");
            rc |= json_desc(json, &m->runs[r].ssts[i]);
        }
        rc |= od_buf_append_str(json, "]}");
    }
    rc |= od_buf_append_str(json, "],\"checkpoints\":[");
    for (size_t i = 0; !rc && i < m->nckpt; i++)
        rc |= od_buf_printf(json, "%s{\"id\":%" PRIu64 ",\"manifest_version\":%" PRIu64 ",\"expire_ms\":%lld}",
                            i ? "," : "", m->ckpts[i].id, m->ckpts[i].manifest_version,
                            (long long)m->ckpts[i].expire_ms);
    rc |= od_buf_append_str(json, "]");
    if (!rc && m->has_job) { /* the compaction in progress (docs/architecture.md, "Compaction") */
        const od_cjob *j = &m->job;
        rc |= od_buf_printf(json,
                            ",\"compaction_job\":{\"id\":\"%016" PRIx64 "\",\"compactor_epoch\":%" PRIu64
                            ",\"writer_epoch\":%" PRIu64 ",\"started_ms\":%lld,\"bottom\":%d,\"l0_in\":%zu,\"runs_in\":%zu"
                            ",\"pending\":\"%s\",\"outputs\":[",
                            j->id, j->compactor_epoch, j->writer_epoch, (long long)j->started_ms,
                            (j->flags & OD_CJOB_BOTTOM) ? 1 : 0, j->nl0_in, j->nruns_in, j->pending);
        for (size_t i = 0; !rc && i < j->nout; i++) {
            if (i) rc |= od_buf_append_str(json, ",");
            rc |= json_desc(json, &j->out[i]);
        }
        rc |= od_buf_append_str(json, "]}");
    }
    pthread_mutex_lock(&db->mu);
    int stalled = db->l0_stalled;
    pthread_mutex_unlock(&db->mu);
    rc |= od_buf_printf(json, ",\"l0_max_tables\":%d,\"l0_stalled\":%d,\"write_stalls\":%" PRIu64 "}",
                        db->o.l0_max_tables, stalled, (uint64_t)atomic_load(&db->st_write_stalls));
    rc |= od_buf_cstr(json); /* callers may treat the JSON as a C string */
    pthread_mutex_unlock(&db->man_mu);
    if (rc) return od_err_set(err, OD_NOMEM, "db: out of memory");
    return OD_OK;
}

od_store *od_db_store(od_db *db)
{
    return db->store;
}
