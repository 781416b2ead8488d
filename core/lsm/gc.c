/*
 * gc.c — garbage collection of objects no live manifest needs.
 *
 * Rules (one pass, od_gc_run):
 *   - expired checkpoints are first pruned from the latest manifest (a commit, by a writer or
 *     compactor handle), so what only they pinned becomes collectable;
 *   - the latest manifest version, every version superseded less than gc_min_age_ms ago
 *     (its successor is younger than that: a reader may have loaded it just before it was
 *     replaced, however old it is itself), and every version pinned by an unexpired
 *     checkpoint of the latest version are KEPT; older manifest versions are deleted (never
 *     the latest);
 *   - a collection is referenced when a kept manifest version lists it (as L0, in a run, or
 *     as a completed or the pending output of the compaction job it records), it is open in
 *     this process (current view, live snapshots, iterators, compaction inputs) or it is an
 *     L0 flush output between its PUT and its commit: pinned in memory (db->pins, a flush of
 *     this handle) or by a pin object pin/<writer epoch>-<id>.pin of the current writer epoch
 *     (a flush of the writer in any process, however long its commit takes); unreferenced
 *     collections are deleted only when older than gc_min_age_ms;
 *   - pin objects of an older writer epoch, and this writer's own that are no longer pinned
 *     in memory (a failed DELETE; the writer also retries those itself, od_pin_retry), are
 *     deleted: they protect nothing (see the loop);
 *   - order: LIST sst/, LIST pin/, memory pins, latest manifest — so that a collection listed
 *     is pinned or committed (docs/architecture.md, "Garbage collection");
 *   - a WAL object is deleted when its id is below the smallest wal_replay_from of the kept
 *     versions, it is older than gc_min_age_ms, and it is not the highest WAL id in the
 *     store (the newest object — normally a fence or the tail — always stays, so the next
 *     id can never be re-created by a stalled writer after GC).
 * Ages come from the store's last-modified times; clock skew must be far below the min age.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm_int.h"

typedef struct obj {
    char *key;
    int64_t mtime;
} obj;

typedef struct objlist {
    obj *v;
    size_t n, cap;
    int oom;
} objlist;

static int list_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    objlist *l = ctx;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        obj *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            l->oom = 1;
            return 1;
        }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n].key = strdup(key);
    if (!l->v[l->n].key) {
        l->oom = 1;
        return 1;
    }
    l->v[l->n].mtime = meta ? meta->mtime_ms : 0;
    l->n++;
    return 0;
}

static int obj_key_cmp(const void *a, const void *b)
{
    return strcmp(((const obj *)a)->key, ((const obj *)b)->key);
}

static void objlist_free(objlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].key);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int list_prefix(od_db *db, const char *prefix, objlist *l, od_err *err)
{
    memset(l, 0, sizeof *l);
    int rc = od_store_list(db->store, prefix, NULL, list_cb, l, err);
    if (rc == OD_OK && l->oom) rc = od_err_set(err, OD_NOMEM, "gc: out of memory listing %s", prefix);
    if (rc) objlist_free(l);
    return rc;
}

/* A set of SST ids (sorted array of strings). */
typedef struct idset {
    char **v;
    size_t n, cap;
} idset;

static int idset_add(idset *s, const char *id)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        s->v = nv;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(id))) return OD_NOMEM;
    s->n++;
    return OD_OK;
}

static int idset_has(const idset *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], id) == 0) return 1;
    return 0;
}

static void idset_free(idset *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int add_manifest_ids(idset *s, const od_manifest *m)
{
    for (size_t i = 0; i < m->nl0; i++)
        if (idset_add(s, m->l0[i].id)) return OD_NOMEM;
    for (size_t r = 0; r < m->nruns; r++)
        for (size_t i = 0; i < m->runs[r].n; i++)
            if (idset_add(s, m->runs[r].ssts[i].id)) return OD_NOMEM;
    if (m->has_job)
        for (size_t i = 0; i < m->job.nout; i++)
            if (idset_add(s, m->job.out[i].id)) return OD_NOMEM;
    if (m->has_job && m->job.pending[0] && idset_add(s, m->job.pending)) return OD_NOMEM;
    return OD_OK;
}

/* Drop expired checkpoints from the manifest (checking that our epoch still stands). */
static int prune_edit(void *ctx, od_manifest *m, od_err *err)
{
    od_db *db = ctx;
    if (!db->o.compactor_only && m->writer_epoch > db->epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer writer (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->writer_epoch, (unsigned long long)db->epoch);
    if (db->o.compactor_only && m->compactor_epoch > db->compactor_epoch)
        return od_err_set(err, OD_FENCED, "fenced: a newer compactor (epoch %llu) took over this store (ours was %llu)",
                          (unsigned long long)m->compactor_epoch, (unsigned long long)db->compactor_epoch);
    od_manifest_prune_ckpts(m, od_now_ms()); /* od_manifest_update prunes too; explicit here */
    return OD_OK;
}

static int prune_ckpts(od_db *db, od_err *err)
{
    int rc = OD_OK;
    pthread_mutex_lock(&db->man_mu);
    int64_t now = od_now_ms();
    int expired = 0;
    for (size_t i = 0; i < db->man.nckpt; i++)
        if (db->man.ckpts[i].expire_ms && db->man.ckpts[i].expire_ms <= now) expired = 1;
    if (expired) {
        rc = od_manifest_update(db->store, &db->man, db->writer_id, prune_edit, db, err);
        if (rc == OD_OK) rc = od_db_apply_manifest(db, &db->man, NULL, err);
    }
    pthread_mutex_unlock(&db->man_mu);
    if (rc) od_err_prefix(err, "gc: pruning expired checkpoints");
    return rc;
}

static int parse_num(const char *key, const char *prefix, const char *suffix, uint64_t *v)
{
    size_t pl = strlen(prefix), sl = strlen(suffix), kl = strlen(key);
    if (kl != pl + 20 + sl || strncmp(key, prefix, pl) != 0 || strcmp(key + pl + 20, suffix) != 0) return 0;
    uint64_t x = 0;
    for (size_t i = 0; i < 20; i++) {
        char ch = key[pl + i];
        if (ch < '0' || ch > '9') return 0;
        x = x * 10 + (uint64_t)(ch - '0');
    }
    *v = x;
    return 1;
}

static int del(od_db *db, const char *key, uint64_t *deleted, od_err *err)
{
    int rc = od_store_delete(db->store, key, err);
    if (rc == OD_OK) (*deleted)++;
    return rc;
}

int od_gc_run(od_db *db, od_err *err)
{
    od_manifest latest;
    int rc;
    objlist mans = {0}, ssts = {0}, wals = {0}, pins = {0};
    idset ids = {0};
    if (!db->read_only && (rc = prune_ckpts(db, err))) return rc;
    /* List the collections BEFORE reading the manifest: a compaction names each output in the
     * manifest before it PUTs it, so every output this listing can see is named in the
     * manifest read after it (reading the manifest first would miss one named meanwhile). */
    if ((rc = list_prefix(db, "sst/", &ssts, err))) return rc;
    /* Then the flush pins, still BEFORE the manifest: an L0 flush (of a writer in any process)
     * creates its pin object and its memory pin before the collection's PUT and removes them
     * (object first) after its commit, so an output listed above is pinned in the listing
     * below, or pinned in memory (our own flush), or already committed and then named in the
     * manifest read below. */
    if ((rc = list_prefix(db, "pin/", &pins, err))) {
        objlist_free(&ssts);
        return rc;
    }
    pthread_mutex_lock(&db->tmu);
    for (const od_sst_pin *p = db->pins; !rc && p; p = p->next) rc = idset_add(&ids, p->id);
    pthread_mutex_unlock(&db->tmu);
    if (rc == OD_OK) rc = od_manifest_load_latest(db->store, 0, &latest, err);
    else rc = od_err_set(err, OD_NOMEM, "gc: out of memory");
    if (rc == OD_NOTFOUND) {
        if (err) od_err_clear(err);
        objlist_free(&ssts);
        objlist_free(&pins);
        idset_free(&ids);
        return OD_OK;
    }
    if (rc) {
        objlist_free(&ssts);
        objlist_free(&pins);
        idset_free(&ids);
        return rc;
    }
    int64_t now = od_now_ms();
    int64_t cutoff = now - (int64_t)db->o.gc_min_age_ms;
    uint64_t deleted = 0;
    uint64_t min_replay = latest.wal_replay_from;

    /* pin objects: one of the current writer epoch keeps its collection; an older epoch's is
     * stale (that writer was fenced before the manifest we read: its commit landed before the
     * epoch bump, and then the manifest names the collection, or never lands) and so is one of
     * our own epoch that is no longer pinned in memory (its flush is over; only the DELETE of
     * the object failed): both are deleted */
    int writer = !db->read_only && !db->o.compactor_only;
    for (size_t i = 0; i < pins.n; i++) {
        uint64_t pe;
        char pid[OD_SST_ID_MAX];
        if (!od_pin_parse(pins.v[i].key, &pe, pid)) continue;
        int stale = pe < latest.writer_epoch || (writer && pe == db->epoch && !idset_has(&ids, pid));
        if (stale) {
            if ((rc = del(db, pins.v[i].key, &deleted, err))) goto out;
        } else if ((rc = idset_add(&ids, pid))) {
            goto oom;
        }
    }
    if ((rc = add_manifest_ids(&ids, &latest))) goto oom;

    /* in-process views: every open table, whoever holds it (current view, snapshots,
     * iterators, a compaction's inputs) */
    pthread_mutex_lock(&db->tmu);
    for (od_table *t = db->tables; !rc && t; t = t->reg_next) rc = idset_add(&ids, t->desc.id);
    pthread_mutex_unlock(&db->tmu);
    if (rc) goto oom;

    /* manifests: a version is in use (readers in other processes may have just loaded it) until
     * it is superseded, so its age is that of the next version, not its own: an hours-old
     * latest version replaced a moment ago must stay for gc_min_age_ms, and with it every
     * collection it lists */
    if ((rc = list_prefix(db, "manifest/", &mans, err))) goto out;
    qsort(mans.v, mans.n, sizeof *mans.v, obj_key_cmp); /* zero-padded: key order = version order */
    for (size_t i = 0; i < mans.n; i++) {
        uint64_t v, nv;
        if (!parse_num(mans.v[i].key, "manifest/", ".manifest", &v) || v >= latest.version) continue;
        int64_t superseded = now; /* no successor listed (deleted meanwhile): treat as just replaced */
        for (size_t j = i + 1; j < mans.n; j++)
            if (parse_num(mans.v[j].key, "manifest/", ".manifest", &nv) && nv > v) {
                superseded = mans.v[j].mtime; /* the next version's creation */
                break;
            }
        int pinned = 0;
        for (size_t k = 0; k < latest.nckpt; k++)
            if (latest.ckpts[k].manifest_version == v && (latest.ckpts[k].expire_ms == 0 || latest.ckpts[k].expire_ms > now))
                pinned = 1;
        if (!pinned && superseded <= cutoff) {
            if ((rc = del(db, mans.v[i].key, &deleted, err)) != OD_OK) goto out;
            continue;
        }
        od_manifest m;
        od_err e2;
        int lr = od_manifest_load(db->store, v, &m, &e2);
        if (lr == OD_NOTFOUND) continue;
        if (lr) {
            rc = od_err_copy(err, &e2);
            goto out;
        }
        if (m.wal_replay_from < min_replay) min_replay = m.wal_replay_from;
        rc = add_manifest_ids(&ids, &m);
        od_manifest_free(&m);
        if (rc) goto oom;
    }

    /* collections (listed above) */
    for (size_t i = 0; i < ssts.n; i++) {
        const char *k = ssts.v[i].key;
        size_t kl = strlen(k);
        if (kl < 9 || strncmp(k, "sst/", 4) != 0 || strcmp(k + kl - 4, ".sst") != 0) continue;
        char id[OD_SST_ID_MAX + 8];
        snprintf(id, sizeof id, "%.*s", (int)(kl - 8), k + 4);
        if (idset_has(&ids, id) || ssts.v[i].mtime > cutoff) continue;
        if ((rc = del(db, k, &deleted, err))) goto out;
    }

    /* WAL */
    if ((rc = list_prefix(db, "wal/", &wals, err))) goto out;
    uint64_t max_id = 0;
    for (size_t i = 0; i < wals.n; i++) {
        uint64_t id;
        if (parse_num(wals.v[i].key, "wal/", ".wal", &id) && id > max_id) max_id = id;
    }
    for (size_t i = 0; i < wals.n; i++) {
        uint64_t id;
        if (!parse_num(wals.v[i].key, "wal/", ".wal", &id)) continue;
        if (id >= min_replay || id >= max_id || wals.v[i].mtime > cutoff) continue;
        if ((rc = del(db, wals.v[i].key, &deleted, err))) goto out;
    }
    goto out;
oom:
    rc = od_err_set(err, OD_NOMEM, "gc: out of memory");
out:
    atomic_fetch_add(&db->st_gc_deleted, deleted);
    objlist_free(&pins);
    objlist_free(&mans);
    objlist_free(&ssts);
    objlist_free(&wals);
    idset_free(&ids);
    od_manifest_free(&latest);
    return rc;
}
