/*
 * eventstore.c — the event store engine (see od_eventstore.h) on the storage engine od_db.
 *
 * Owns: the od_db handle of the store, the append lock, the bounded LRU of per-key tail
 * state, and the condition variable that wakes followers.
 *
 * How it works
 *   Append: records are validated outside the lock. Under `mu` (the ONE place where sequences
 *   are assigned) the batch's keys are resolved to their tail state (batch-local map → LRU →
 *   the store's 'm' entry), every expected_seq is checked against the sequence the record
 *   would get, producer dedupe is checked, sequences and timestamps are assigned, and one
 *   od_batch (records, sparse time-index entries, count-retention tombstones, metadata,
 *   producer state) is applied with od_db_write while still under the lock, so the memtable
 *   order equals the assignment order. Only then is the LRU updated. The lock is released
 *   before waiting for durability, so concurrent appenders share one WAL object (group
 *   commit); acknowledgement comes after od_db_wait_durable. Followers are woken after that.
 *   Reads: a snapshot, the key's metadata at that snapshot, then one iterator over the key's
 *   contiguous record range; retention (count → first visible seq; age → ts filter) is
 *   applied while reading, so it takes effect at once.
 *   Reclaiming: records carry a TTL of ts + age (per-key or store default) when appended;
 *   count retention and trims write tombstones; the compaction filter drops records older
 *   than the store's default age unless the key had its own age rule at append time.
 *   Commits (od_ev_commit; trims, deletes and retention changes are commits too): the append
 *   steps above, then the key operations on the same batch-local key state (apply_ops_locked),
 *   all checked before the ONE od_db_write. Record tombstones beyond ES_TOMBSTONE_CHUNK leave a
 *   trim intent ('x') in that batch and follow in chunks (finish_tombstones_locked, still under
 *   mu); a crash in between is finished by recover_intents at the next writer open.
 */
#include "es_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/od_coding.h"

#define ES_TOMBSTONE_CHUNK 4096      /* record tombstones in the atomic batch / per later batch */
#define ES_RETENTION_STEP 1024       /* old records tombstoned per key per append (catch-up) */

struct od_eventstore {
    od_db *db;
    od_ev_options opts;
    pthread_mutex_t mu;         /* append lock: sequence assignment, LRU, stats, gen */
    pthread_cond_t cond;        /* broadcast when appended records become durable */
    uint64_t gen;               /* bumped with every broadcast */
    es_lru lru;
    od_ev_stats st;
    od_buf k, v;                /* scratch buffers, used under mu */
    int64_t store_floor;        /* 'R' floor: store-default records with ts below stay hidden
                                   (written at open, read by the compaction thread: atomics) */
    int64_t store_age;          /* the store default age reads apply: the option (writers), the
                                   last writer's from 'R' (read-only handles; od_ev_refresh) */
};

/* The handle's wall clock: the system clock, or the options' test hook. */
static int64_t es_clock(const od_eventstore *es)
{
    return es->opts.now_ms ? es->opts.now_ms(es->opts.now_ctx) : es_now_ms();
}

/* ---------------------------------------------------------------- helpers */

static int nomem(od_err *err) { return od_err_set(err, OD_NOMEM, "eventstore: out of memory"); }

static void key_repr(char *out, size_t cap, const void *key, size_t klen)
{
    const uint8_t *k = key;
    size_t o = 0;
    for (size_t i = 0; i < klen && o + 5 < cap; i++) {
        if (i >= 40) {
            out[o++] = '.'; out[o++] = '.'; out[o++] = '.';
            break;
        }
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"') {
            out[o++] = (char)k[i];
        } else {
            static const char hx[] = "0123456789abcdef";
            out[o++] = '\\'; out[o++] = 'x'; out[o++] = hx[k[i] >> 4]; out[o++] = hx[k[i] & 15];
        }
    }
    out[o] = 0;
}

static int check_key(const void *key, size_t klen, od_err *err)
{
    if (!key || klen == 0) return od_err_set(err, OD_BADREQ, "eventstore: key is empty");
    if (klen > OD_EV_KEY_MAX)
        return od_err_set(err, OD_BADREQ, "eventstore: key of %zu bytes is longer than the limit of %d", klen,
                          OD_EV_KEY_MAX);
    return OD_OK;
}

static void meta_to_info(const od_eventstore *es, const es_meta *m, int exists, od_ev_key_info *out)
{
    memset(out, 0, sizeof *out);
    if (!exists) return;
    out->exists = 1;
    out->first_seq = es_visible_first(m, es->opts.retention_count);
    out->next_seq = m->next_seq;
    out->count = m->next_seq - out->first_seq;
    out->bytes = m->bytes;
    out->last_ts_ms = m->last_ts;
    out->created_ms = m->created_ms;
    out->retention_age_ms = m->ret_age_ms;
    out->retention_count = m->ret_count;
}

/* Read a key's metadata from the store (snap may be NULL). */
static int load_meta_db(od_eventstore *es, const od_snapshot *snap, const void *key, size_t klen, es_meta *m,
                        int *exists, od_err *err)
{
    od_buf kb = {0}, vb = {0};
    memset(m, 0, sizeof *m);
    *exists = 0;
    if (es_key_meta(&kb, key, klen)) return nomem(err);
    od_err e2 = {0};
    int rc = od_db_get(es->db, snap, kb.data, kb.len, &vb, &e2);
    od_buf_free(&kb);
    if (rc == OD_NOTFOUND) {
        od_buf_free(&vb);
        return OD_OK;
    }
    if (rc) {
        od_buf_free(&vb);
        od_err_copy(err, &e2);
        od_err_prefix(err, "eventstore: reading key metadata");
        return rc;
    }
    rc = es_meta_decode(vb.data, vb.len, m);
    od_buf_free(&vb);
    if (rc) return od_err_set(err, OD_CORRUPT, "eventstore: corrupt metadata of a key");
    *exists = 1;
    return OD_OK;
}

/* Tail state under mu: LRU, else the store (and remember it). */
static int load_state_locked(od_eventstore *es, const void *key, size_t klen, es_meta *m, int *exists,
                             od_err *err)
{
    if (es_lru_get(&es->lru, key, klen, m, exists)) return OD_OK;
    int rc = load_meta_db(es, NULL, key, klen, m, exists, err);
    if (rc) return rc;
    return es_lru_put(&es->lru, key, klen, m, *exists, err);
}

/* Compaction filter: drop records / index entries older than the store's default age or below
 * the 'R' floor, unless the key had its own age rule when they were appended (then their TTL
 * decides). */
static int es_filter(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, int64_t now_ms)
{
    const od_eventstore *es = ctx;
    int64_t age = es->opts.retention_age_ms;
    int64_t floor_ts = __atomic_load_n(&es->store_floor, __ATOMIC_RELAXED);
    if ((age <= 0 && floor_ts == 0) || klen == 0) return 0;
    if (key[0] == ES_NS_REC) {
        es_rec r;
        if (es_rec_decode(val, vlen, &r)) return 0;
        if (r.iflags & ES_IF_AGE_OVERRIDE) return 0;
        return r.ts < floor_ts || es_age_hidden(r.ts, age, now_ms);
    }
    if (key[0] == ES_NS_TIDX) {
        int64_t ts;
        uint64_t seq;
        if (vlen < 1 || (val[0] & ES_IF_AGE_OVERRIDE)) return 0;
        if (es_tidx_key_decode(key, klen, NULL, &ts, &seq)) return 0;
        return ts < floor_ts || es_age_hidden(ts, age, now_ms);
    }
    return 0;
}

/* ---------------------------------------------------------------- open / close */

void od_ev_options_init(od_ev_options *o)
{
    memset(o, 0, sizeof *o);
    o->tail_cache_entries = 65536;
    o->producer_ttl_ms = 7LL * 24 * 3600 * 1000;
}

static const uint8_t header_magic[4] = {'O', 'D', 'E', 'V'};

static int check_header(od_eventstore *es, od_err *err)
{
    const uint8_t hk = ES_NS_HEADER;
    od_buf v = {0};
    od_err e2 = {0};
    int rc = od_db_get(es->db, NULL, &hk, 1, &v, &e2);
    if (rc == OD_OK) {
        int ok = v.len >= 5 && memcmp(v.data, header_magic, 4) == 0;
        int ver = ok ? v.data[4] : -1;
        od_buf_free(&v);
        if (!ok) return od_err_set(err, OD_CORRUPT, "eventstore: the store holds something that is not an event store");
        if (ver != OD_ES_FORMAT)
            return od_err_set(err, OD_UNSUPPORTED, "eventstore: store format %d, this build reads %d", ver,
                              OD_ES_FORMAT);
        return OD_OK;
    }
    od_buf_free(&v);
    if (rc != OD_NOTFOUND) {
        od_err_copy(err, &e2);
        od_err_prefix(err, "eventstore: reading the store header");
        return rc;
    }
    if (es->opts.read_only) return OD_OK; /* an empty store: nothing to check yet */
    uint8_t hv[5] = {'O', 'D', 'E', 'V', OD_ES_FORMAT};
    od_batch *b = od_batch_new();
    if (!b) return nomem(err);
    rc = od_batch_put(b, &hk, 1, hv, sizeof hv);
    if (!rc) rc = od_db_write(es->db, b, 1, NULL, err);
    else nomem(err);
    od_batch_free(b);
    return rc;
}

static int recover_intents(od_eventstore *es, od_err *err);

/* The store default age may change between opens (options). What an earlier, shorter default
 * hid must stay hidden when a later open lengthens (or removes) it: the writer keeps the last
 * default in 'R' and, when it changes, raises the floor to now - old age; reads and the
 * compaction filter hide store-default records below the floor. Read-only handles take the age
 * and the floor from 'R' at open and at every od_ev_refresh (they hide what the writer hides).
 * Stores without 'R' (older builds) start without a floor. */
#define ES_CLOCK_MARGIN_MS 60000 /* how far the handle's clock may be ahead of the store's */

static int read_sret(od_eventstore *es, int *have, int64_t *age, int64_t *floor_ts, od_err *err)
{
    const uint8_t rk = ES_NS_SRET;
    od_buf v = {0};
    od_err e2 = {0};
    *have = 0;
    *age = *floor_ts = 0;
    int rc = od_db_get(es->db, NULL, &rk, 1, &v, &e2);
    if (rc == OD_NOTFOUND) {
        od_buf_free(&v);
        return OD_OK;
    }
    if (rc) {
        od_buf_free(&v);
        od_err_copy(err, &e2);
        od_err_prefix(err, "eventstore: reading the store retention state");
        return rc;
    }
    rc = es_sret_decode(v.data, v.len, age, floor_ts);
    od_buf_free(&v);
    if (rc) return od_err_set(err, OD_CORRUPT, "eventstore: corrupt store retention state");
    *have = 1;
    return OD_OK;
}

/* The "now" a writer open raises the floor from: the handle's clock, but at most
 * ES_CLOCK_MARGIN_MS past the object store's clock, read as the last-modified time of the lease
 * object (docs/formats.md) that the writer open has just written. Why: a clock far ahead would
 * put the floor above records the old default still showed, hiding them for good (and letting
 * compaction drop them). The margin covers ordinary skew, the store's 1 s time resolution and
 * the time since the lease was written. A store that reports no time: the handle's clock. */
static int floor_now(od_eventstore *es, int64_t *out, od_err *err)
{
    int64_t now = es_clock(es);
    od_obj_meta meta;
    od_err e2 = {0};
    memset(&meta, 0, sizeof meta);
    int rc = od_store_head(od_db_store(es->db), "lease", &meta, &e2);
    if (rc && rc != OD_NOTFOUND) {
        od_err_copy(err, &e2);
        od_err_prefix(err, "eventstore: reading the store's clock (the lease object)");
        return rc;
    }
    if (rc == OD_OK && meta.mtime_ms > 0 && now > meta.mtime_ms + ES_CLOCK_MARGIN_MS)
        now = meta.mtime_ms + ES_CLOCK_MARGIN_MS;
    *out = now;
    return OD_OK;
}

/* Writer open: record the store default age, raising the floor when it changed. Read-only
 * handles (open and od_ev_refresh): adopt the recorded age and floor. */
static int load_store_retention(od_eventstore *es, od_err *err)
{
    int have;
    int64_t age, floor_ts;
    int rc = read_sret(es, &have, &age, &floor_ts, err);
    if (rc) return rc;
    int64_t new_age = es->opts.retention_age_ms;
    if (es->opts.read_only) {
        if (have) new_age = age;
    } else if (!have || age != new_age) {
        if (have && age > 0) {
            int64_t now;
            rc = floor_now(es, &now, err);
            if (rc) return rc;
            if (now - age > floor_ts) floor_ts = now - age;
        }
        const uint8_t rk = ES_NS_SRET;
        od_buf v = {0};
        od_batch *b = od_batch_new();
        if (!b) rc = nomem(err);
        else if (es_sret_encode(&v, new_age, floor_ts) || od_batch_put(b, &rk, 1, v.data, v.len)) rc = nomem(err);
        else rc = od_db_write(es->db, b, 1, NULL, err);
        od_batch_free(b);
        od_buf_free(&v);
        if (rc) return rc;
    }
    __atomic_store_n(&es->store_floor, floor_ts, __ATOMIC_RELAXED);
    __atomic_store_n(&es->store_age, new_age, __ATOMIC_RELAXED);
    return OD_OK;
}

int od_ev_open(const char *uri, const od_ev_options *opts, od_eventstore **out, od_err *err)
{
    *out = NULL;
    od_eventstore *es = calloc(1, sizeof *es);
    if (!es) return nomem(err);
    if (opts) es->opts = *opts;
    else od_ev_options_init(&es->opts);
    if (es->opts.tail_cache_entries == 0) es->opts.tail_cache_entries = 65536;
    if (es->opts.producer_ttl_ms <= 0) es->opts.producer_ttl_ms = 7LL * 24 * 3600 * 1000;
    if (es->opts.retention_age_ms < 0) {
        free(es);
        return od_err_set(err, OD_BADREQ, "eventstore: retention_age_ms must not be negative");
    }
    es->opts.db = NULL;
    pthread_mutex_init(&es->mu, NULL);
    pthread_cond_init(&es->cond, NULL);
    int rc = es_lru_init(&es->lru, es->opts.tail_cache_entries, err);
    if (rc) goto fail;
    od_db_options dbo;
    if (opts && opts->db) dbo = *opts->db;
    else od_db_options_init(&dbo);
    dbo.read_only = es->opts.read_only;
    if (es->opts.takeover) dbo.takeover = 1;
    dbo.compaction_filter = es_filter;
    dbo.compaction_filter_ctx = es;
    rc = od_db_open(uri, &dbo, &es->db, err);
    if (rc) {
        {
            char shown[512];
            od_uri_redact(uri, shown, sizeof shown);
            od_err_prefix(err, "eventstore: opening %s", shown);
        }
        goto fail;
    }
    rc = check_header(es, err);
    if (!rc) rc = load_store_retention(es, err);
    if (!rc && !es->opts.read_only) rc = recover_intents(es, err);
    if (rc) {
        od_db_close(es->db, NULL);
        goto fail;
    }
    *out = es;
    return OD_OK;
fail:
    es_lru_free(&es->lru);
    pthread_cond_destroy(&es->cond);
    pthread_mutex_destroy(&es->mu);
    free(es);
    return rc;
}

int od_ev_close(od_eventstore *es, od_err *err)
{
    if (!es) return OD_OK;
    int rc = od_db_close(es->db, err);
    es_lru_free(&es->lru);
    od_buf_free(&es->k);
    od_buf_free(&es->v);
    pthread_cond_destroy(&es->cond);
    pthread_mutex_destroy(&es->mu);
    free(es);
    return rc;
}

od_db *od_ev_db(od_eventstore *es) { return es->db; }

/* Read-only: the engine's new state, then the writer's store default age and floor ('R': a
 * writer open may have changed them since). */
int od_ev_refresh(od_eventstore *es, od_err *err)
{
    int rc = od_db_refresh(es->db, err);
    if (rc || !es->opts.read_only) return rc;
    return load_store_retention(es, err);
}

void od_ev_get_stats(od_eventstore *es, od_ev_stats *out)
{
    pthread_mutex_lock(&es->mu);
    *out = es->st;
    out->tail_cache_hits = es->lru.hits;
    out->tail_cache_misses = es->lru.misses;
    out->tail_cache_entries = es->lru.count;
    pthread_mutex_unlock(&es->mu);
}

/* ---------------------------------------------------------------- append */

static int validate(const od_ev_rec_in *recs, size_t n, const od_ev_append_opts *ao, od_err *err)
{
    if (n == 0) return od_err_set(err, OD_BADREQ, "eventstore: append of an empty batch");
    if (n > OD_EV_BATCH_MAX)
        return od_err_set(err, OD_BADREQ, "eventstore: batch of %zu records is larger than the limit of %d", n,
                          OD_EV_BATCH_MAX);
    for (size_t i = 0; i < n; i++) {
        const od_ev_rec_in *r = &recs[i];
        int rc = check_key(r->key, r->klen, err);
        if (rc) {
            od_err_prefix(err, "record %zu", i);
            return rc;
        }
        if (r->vlen > OD_EV_VALUE_MAX)
            return od_err_set(err, OD_BADREQ, "eventstore: record %zu: value of %zu bytes is larger than the limit of %u",
                              i, r->vlen, (unsigned)OD_EV_VALUE_MAX);
        if (r->vlen && !r->value) return od_err_set(err, OD_BADREQ, "eventstore: record %zu: value is NULL", i);
        if (r->nheaders > OD_EV_HEADERS_MAX)
            return od_err_set(err, OD_BADREQ, "eventstore: record %zu: %zu headers, the limit is %d", i, r->nheaders,
                              OD_EV_HEADERS_MAX);
        if (r->nheaders && !r->headers) return od_err_set(err, OD_BADREQ, "eventstore: record %zu: headers NULL", i);
        if (es_headers_bytes(r->headers, r->nheaders) > OD_EV_HEADER_BYTES_MAX)
            return od_err_set(err, OD_BADREQ, "eventstore: record %zu: headers larger than %d bytes", i,
                              OD_EV_HEADER_BYTES_MAX);
        if (r->expected_seq < OD_EV_ANY)
            return od_err_set(err, OD_BADREQ, "eventstore: record %zu: expected_seq %lld is negative", i,
                              (long long)r->expected_seq);
        if (r->ts_ms < 0)
            return od_err_set(err, OD_BADREQ, "eventstore: record %zu: timestamp %lld is negative", i,
                              (long long)r->ts_ms);
    }
    if (ao && ao->producer_id && (ao->producer_id[0] == 0 || strlen(ao->producer_id) > 256))
        return od_err_set(err, OD_BADREQ, "eventstore: producer id must be 1..256 bytes");
    return OD_OK;
}

/* Per-key state of one append batch. */
typedef struct bkey {
    const void *key;
    size_t klen;
    es_meta old, m;   /* before / after this batch */
    int existed;
    uint64_t batch_first; /* first seq assigned in this batch */
    uint64_t drop_below;  /* records below this are retained away (not written) */
    int deleted;          /* od_ev_commit: an OD_EV_OP_DELETE_KEY removed the key */
    uint64_t hash;        /* es_hash(key): the batch map's and the tail cache's */
} bkey;

typedef struct bmap {
    bkey *keys;
    size_t n;
    size_t *slot;   /* open addressing: index+1, 0 = empty */
    size_t cap;     /* power of two */
} bmap;

static bkey *bmap_find(bmap *bm, const void *key, size_t klen, int *found)
{
    uint64_t h = es_hash(key, klen);
    size_t i = (size_t)h & (bm->cap - 1);
    for (;;) {
        size_t s = bm->slot[i];
        if (!s) {
            bm->slot[i] = ++bm->n;
            bkey *k = &bm->keys[bm->n - 1];
            memset(k, 0, sizeof *k);
            k->key = key;
            k->klen = klen;
            k->hash = h;
            *found = 0;
            return k;
        }
        bkey *k = &bm->keys[s - 1];
        if (k->klen == klen && memcmp(k->key, key, klen) == 0) {
            *found = 1;
            return k;
        }
        i = (i + 1) & (bm->cap - 1);
    }
}

static int put_rec_tombstones(od_eventstore *es, od_batch *b, const void *key, size_t klen, uint64_t from,
                              uint64_t to)
{
    for (uint64_t s = from; s < to; s++) {
        if (es_key_rec(&es->k, key, klen, s) || od_batch_delete(b, es->k.data, es->k.len)) return OD_NOMEM;
    }
    return OD_OK;
}

/* Tombstone time-index entries of key with seq < below, found by walking the key's index in
 * order (ts non-decreasing in seq, so index order is seq order). */
static int put_tidx_tombstones(od_eventstore *es, od_batch *b, const void *key, size_t klen, uint64_t below,
                               od_err *err)
{
    od_buf lo = {0}, hi = {0};
    int has = 0, rc;
    od_iter *it = NULL;
    if (es_key_tidx_prefix(&lo, key, klen) || es_prefix_successor(&hi, lo.data, lo.len, &has)) {
        rc = nomem(err);
        goto out;
    }
    rc = od_db_iter(es->db, NULL, lo.data, lo.len, has ? hi.data : NULL, has ? hi.len : 0, &it, err);
    if (rc) goto out;
    while (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        int64_t ts;
        uint64_t seq;
        if (es_tidx_key_decode(k, kl, NULL, &ts, &seq) == OD_OK) {
            if (seq >= below) break;
            if (od_batch_delete(b, k, kl)) {
                rc = nomem(err);
                goto out;
            }
        }
        rc = od_iter_next(it, err);
        if (rc) goto out;
    }
out:
    od_iter_free(it);
    od_buf_free(&lo);
    od_buf_free(&hi);
    return rc;
}

/* Order of engine keys 'm' key: the keys' bytes, a prefix first. */
static int bkey_cmp(const void *a, const void *b)
{
    const bkey *x = *(const bkey *const *)a, *y = *(const bkey *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Under mu: the tail state (old, existed; m = the state the batch starts from; batch_first)
 * of every key in bm. The tail cache first (slots prefetched a few keys ahead); the keys it
 * misses are read from the store together: sorted in key order (neighbouring lookups share
 * the upper levels of the memtables' skiplists and the index blocks) through one snapshot
 * (one version reference for all, not one per read), into the handle's scratch buffers. The
 * misses are not put into the tail cache here: the append puts every key of the batch after
 * its write. Read-only with respect to the store; the result equals load_state_locked per key. */
static int resolve_keys_locked(od_eventstore *es, bmap *bm, int64_t now, od_err *err)
{
    enum { AHEAD = 8 };
    bkey **miss = NULL;
    size_t nmiss = 0;
    int rc = OD_OK;
    for (size_t j = 0; j < bm->n && j < AHEAD; j++) es_lru_prefetch(&es->lru, bm->keys[j].hash);
    for (size_t j = 0; j < bm->n; j++) {
        bkey *k = &bm->keys[j];
        if (j + AHEAD < bm->n) es_lru_prefetch(&es->lru, bm->keys[j + AHEAD].hash);
        if (es_lru_get_h(&es->lru, k->key, k->klen, k->hash, &k->old, &k->existed)) continue;
        if (!miss && !(miss = malloc((bm->n - j) * sizeof *miss))) return nomem(err);
        miss[nmiss++] = k;
    }
    if (nmiss) {
        od_snapshot *snap = NULL;
        if (nmiss > 1) {
            qsort(miss, nmiss, sizeof *miss, bkey_cmp);
            rc = od_db_snapshot(es->db, &snap, err);
        }
        for (size_t j = 0; j < nmiss && !rc; j++) {
            bkey *k = miss[j];
            od_err e2 = {0};
            memset(&k->old, 0, sizeof k->old);
            k->existed = 0;
            if (es_key_meta(&es->k, k->key, k->klen)) {
                rc = nomem(err);
                break;
            }
            int g = od_db_get(es->db, snap, es->k.data, es->k.len, &es->v, &e2);
            if (g == OD_NOTFOUND) continue;
            if (g) {
                od_err_copy(err, &e2);
                od_err_prefix(err, "eventstore: reading key metadata");
                rc = g;
            } else if (es_meta_decode(es->v.data, es->v.len, &k->old)) {
                rc = od_err_set(err, OD_CORRUPT, "eventstore: corrupt metadata of a key");
            } else {
                k->existed = 1;
            }
        }
        od_snapshot_release(snap);
        free(miss);
        if (rc) return rc;
    }
    for (size_t j = 0; j < bm->n; j++) {
        bkey *k = &bm->keys[j];
        k->m = k->old;
        if (!k->existed) {
            memset(&k->m, 0, sizeof k->m);
            k->m.created_ms = now;
        }
        k->batch_first = k->m.next_seq;
    }
    return OD_OK;
}

static void wake_followers(od_eventstore *es)
{
    pthread_mutex_lock(&es->mu);
    es->gen++;
    pthread_cond_broadcast(&es->cond);
    pthread_mutex_unlock(&es->mu);
}

/* The records' tombstones of trims and deletes of one od_ev_commit (see apply_ops_locked). */
typedef struct tomb_range {
    const void *key;
    size_t klen;
    uint64_t from, to;   /* [from, to) */
    int deferred;        /* 1: an intent is in the atomic batch, tombstones follow after it */
} tomb_range;

typedef struct tomb_work {
    tomb_range *r;
    size_t n, cap;
} tomb_work;

static int validate_ops(const od_ev_op *ops, size_t nops, od_err *err);
static int apply_ops_locked(od_eventstore *es, bmap *bm, const od_ev_op *ops, size_t nops, od_batch *b,
                            tomb_work *tw, od_err *err);
static void finish_tombstones_locked(od_eventstore *es, tomb_work *tw, uint64_t *dbseq);

/* The one writer of the event store: appends (sequence assignment happens here and nowhere
 * else), then the key operations of od_ev_commit, as one od_db batch. */
static int commit_impl(od_eventstore *es, const od_ev_rec_in *recs, size_t n, const od_ev_op *ops, size_t nops,
                       const od_ev_append_opts *ao, uint64_t *seqs_out, od_ev_append_info *info, od_err *err)
{
    od_ev_append_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    if (es->opts.read_only) return od_err_set(err, OD_BADREQ, "eventstore: the store is open read-only");
    int rc = n || !nops ? validate(recs, n, ao, err) : OD_OK;
    if (!rc) rc = validate_ops(ops, nops, err);
    if (rc) return rc;
    tomb_work tw = {0};

    bmap bm = {0};
    bm.cap = 16;
    while (bm.cap < 2 * (n + nops)) bm.cap <<= 1;
    bm.keys = malloc((n + nops) * sizeof *bm.keys);
    bm.slot = calloc(bm.cap, sizeof *bm.slot);
    uint64_t *seqs = malloc((n ? n : 1) * sizeof *seqs);
    int64_t *tss = malloc((n ? n : 1) * sizeof *tss);
    bkey **rk = malloc((n ? n : 1) * sizeof *rk);
    od_batch *b = od_batch_new();
    if (!bm.keys || !bm.slot || !seqs || !tss || !rk || !b) {
        rc = nomem(err);
        goto done_nolock;
    }
    int64_t now = es_now_ms();

    pthread_mutex_lock(&es->mu);
    /* 1. producer dedupe */
    if (ao && ao->producer_id) {
        od_buf pv = {0};
        od_err e2 = {0};
        if (es_key_producer(&es->k, ao->producer_id)) {
            rc = nomem(err);
            goto done;
        }
        rc = od_db_get(es->db, NULL, es->k.data, es->k.len, &pv, &e2);
        if (rc == OD_OK) {
            uint64_t last;
            int64_t upd;
            if (es_prod_decode(pv.data, pv.len, &last, &upd) == OD_OK && ao->producer_seq <= last &&
                upd + es->opts.producer_ttl_ms > now) {
                od_buf_free(&pv);
                info->duplicate = 1;
                es->st.duplicates++;
                rc = OD_OK;
                goto done;
            }
        } else if (rc != OD_NOTFOUND) {
            od_buf_free(&pv);
            od_err_copy(err, &e2);
            od_err_prefix(err, "eventstore: reading producer state");
            goto done;
        }
        od_buf_free(&pv);
        rc = OD_OK;
    }
    /* 2. resolve the tail state of the batch's keys (resolve_keys_locked), then check
     *    expected_seq and assign sequence and timestamp, record by record */
    for (size_t i = 0; i < n; i++) {
        int found;
        rk[i] = bmap_find(&bm, recs[i].key, recs[i].klen, &found);
    }
    rc = resolve_keys_locked(es, &bm, now, err);
    if (rc) goto done;
    for (size_t i = 0; i < n; i++) {
        bkey *k = rk[i];
        if (recs[i].expected_seq != OD_EV_ANY && (uint64_t)recs[i].expected_seq != k->m.next_seq) {
            char kr[200];
            key_repr(kr, sizeof kr, k->key, k->klen);
            info->conflict_index = i;
            info->conflict_next_seq = k->m.next_seq;
            info->conflict_expected = recs[i].expected_seq;
            es->st.conflicts++;
            rc = od_err_set(err, OD_CONFLICT,
                            "eventstore: expected_seq %lld for key \"%s\" but its next sequence is %llu",
                            (long long)recs[i].expected_seq, kr, (unsigned long long)k->m.next_seq);
            goto done;
        }
        int64_t ts = recs[i].ts_ms ? recs[i].ts_ms : now;
        if (ts < k->m.last_ts) ts = k->m.last_ts;
        seqs[i] = k->m.next_seq++;
        tss[i] = ts;
        k->m.last_ts = ts;
        k->m.bytes += recs[i].vlen;
        for (size_t h = 0; h < recs[i].nheaders; h++) k->m.bytes += recs[i].headers[h].nlen + recs[i].headers[h].vlen;
    }
    /* 3. count retention: records of this batch below the retained window are not written;
     *    older records get tombstones (at most ES_RETENTION_STEP + n per key per append). */
    for (size_t j = 0; j < bm.n; j++) {
        bkey *k = &bm.keys[j];
        uint64_t c = es_eff_count(&k->m, es->opts.retention_count);
        k->drop_below = 0;
        if (!c || k->m.next_seq - k->m.first_seq <= c) continue;
        uint64_t want = k->m.next_seq - c;
        k->drop_below = want;
        uint64_t old_end = want < k->batch_first ? want : k->batch_first;
        uint64_t from = k->m.first_seq;
        if (old_end > from + ES_RETENTION_STEP + n) old_end = from + ES_RETENTION_STEP + n;
        if (old_end > from) {
            if (put_rec_tombstones(es, b, k->key, k->klen, from, old_end)) {
                rc = nomem(err);
                goto done;
            }
            /* index entries exist only at stride multiples: walk the index when one is passed */
            uint64_t first_mult = (from + OD_ES_TIDX_STRIDE - 1) / OD_ES_TIDX_STRIDE * OD_ES_TIDX_STRIDE;
            if (first_mult < old_end) {
                rc = put_tidx_tombstones(es, b, k->key, k->klen, old_end, err);
                if (rc) goto done;
            }
        }
        /* first = the tombstone frontier; a window start inside this batch is fully handled */
        k->m.first_seq = want <= k->batch_first ? old_end : want;
        if (k->m.first_seq < k->old.first_seq) k->m.first_seq = k->old.first_seq;
    }
    /* 3b. od_ev_commit's trims, key deletes and retention changes, on the state left above */
    if (nops) {
        rc = apply_ops_locked(es, &bm, ops, nops, b, &tw, err);
        if (rc) goto done;
    }
    /* 4. the records and their time index */
    for (size_t i = 0; i < n; i++) {
        bkey *k = rk[i];
        if (seqs[i] < k->drop_below) continue;
        uint8_t iflags = k->m.ret_age_ms ? ES_IF_AGE_OVERRIDE : 0;
        int64_t floor_ts = __atomic_load_n(&es->store_floor, __ATOMIC_RELAXED);
        if (!iflags && tss[i] < floor_ts) { /* the 'R' floor hides what an OLD default hid: a */
            tss[i] = floor_ts;              /* record appended now is raised to it, as a ts */
            if (k->m.last_ts < tss[i]) k->m.last_ts = tss[i]; /* below the key's last is raised */
        }
        int64_t age = es_eff_age(&k->m, es->opts.retention_age_ms);
        int64_t expire = age > 0 ? tss[i] + age : 0;
        if (es_key_rec(&es->k, k->key, k->klen, seqs[i]) ||
            es_rec_encode(&es->v, tss[i], iflags, recs[i].flags, recs[i].headers, recs[i].nheaders, recs[i].value,
                          recs[i].vlen) ||
            od_batch_put_ttl(b, es->k.data, es->k.len, es->v.data, es->v.len, expire)) {
            rc = nomem(err);
            goto done;
        }
        if (seqs[i] % OD_ES_TIDX_STRIDE == 0 && seqs[i] > 0) { /* seq 0 needs no entry: see ts_start */
            if (es_key_tidx(&es->k, k->key, k->klen, tss[i], seqs[i]) ||
                od_batch_put_ttl(b, es->k.data, es->k.len, &iflags, 1, expire)) {
                rc = nomem(err);
                goto done;
            }
        }
    }
    /* 5. metadata and producer state */
    for (size_t j = 0; j < bm.n; j++) {
        bkey *k = &bm.keys[j];
        if (!k->existed && !k->deleted && k->m.next_seq == k->batch_first) continue; /* op skipped: no key */
        if (k->deleted ? es_key_meta(&es->k, k->key, k->klen) || od_batch_delete(b, es->k.data, es->k.len)
                       : es_key_meta(&es->k, k->key, k->klen) || es_meta_encode(&es->v, &k->m) ||
                             od_batch_put(b, es->k.data, es->k.len, es->v.data, es->v.len)) {
            rc = nomem(err);
            goto done;
        }
    }
    if (ao && ao->producer_id) {
        if (es_key_producer(&es->k, ao->producer_id) || es_prod_encode(&es->v, ao->producer_seq, now) ||
            od_batch_put_ttl(b, es->k.data, es->k.len, es->v.data, es->v.len, now + es->opts.producer_ttl_ms)) {
            rc = nomem(err);
            goto done;
        }
    }
    /* 6. apply in assignment order, then publish the new tail state */
    uint64_t dbseq = 0;
    rc = od_db_write(es->db, b, 0, &dbseq, err);
    if (rc) {
        od_err_prefix(err, "eventstore: append");
        /* the cached state may be ahead of the store now: forget it */
        for (size_t j = 0; j < bm.n; j++) es_lru_remove(&es->lru, bm.keys[j].key, bm.keys[j].klen);
        goto done;
    }
    for (size_t j = 0; j < bm.n; j++) {
        bkey *k = &bm.keys[j];
        if (!k->existed && !k->deleted && k->m.next_seq == k->batch_first) continue; /* op skipped: no key */
        if (es_lru_put_h(&es->lru, k->key, k->klen, k->hash, &k->m, !k->deleted, NULL))
            es_lru_remove(&es->lru, k->key, k->klen);
    }
    if (n) es->st.appends++;
    es->st.records_appended += n;
    if (tw.n) finish_tombstones_locked(es, &tw, &dbseq);
    pthread_mutex_unlock(&es->mu);

    if (!(ao && ao->no_wait)) {
        rc = od_db_wait_durable(es->db, dbseq, err);
        if (rc) od_err_prefix(err, "eventstore: append not durable");
    }
    if (!rc && seqs_out) memcpy(seqs_out, seqs, n * sizeof *seqs);
    if (!rc && n) wake_followers(es);
    goto done_nolock;
done:
    pthread_mutex_unlock(&es->mu);
done_nolock:
    free(tw.r);
    od_batch_free(b);
    free(bm.keys);
    free(bm.slot);
    free(seqs);
    free(tss);
    free(rk);
    return rc;
}

int od_ev_append(od_eventstore *es, const od_ev_rec_in *recs, size_t n, const od_ev_append_opts *ao,
                 uint64_t *seqs_out, od_ev_append_info *info, od_err *err)
{
    return commit_impl(es, recs, n, NULL, 0, ao, seqs_out, info, err);
}

/* ---------------------------------------------------------------- metadata ops */

int od_ev_tail(od_eventstore *es, const void *key, size_t klen, od_ev_key_info *out, od_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_key(key, klen, err);
    if (rc) return rc;
    es_meta m;
    int exists = 0;
    if (!es->opts.read_only) {
        pthread_mutex_lock(&es->mu);
        rc = load_state_locked(es, key, klen, &m, &exists, err);
        pthread_mutex_unlock(&es->mu);
    } else {
        rc = load_meta_db(es, NULL, key, klen, &m, &exists, err);
    }
    if (rc) return rc;
    meta_to_info(es, &m, exists, out);
    return OD_OK;
}

/* ---------------------------------------------------------------- trims, deletes, retention */

static int validate_ops(const od_ev_op *ops, size_t nops, od_err *err)
{
    if (nops && !ops) return od_err_set(err, OD_BADREQ, "eventstore: operations are NULL");
    for (size_t i = 0; i < nops; i++) {
        const od_ev_op *o = &ops[i];
        int rc = check_key(o->key, o->klen, err);
        if (rc) {
            od_err_prefix(err, "operation %zu", i);
            return rc;
        }
        if (o->kind != OD_EV_OP_TRIM && o->kind != OD_EV_OP_DELETE_KEY && o->kind != OD_EV_OP_SET_RETENTION)
            return od_err_set(err, OD_BADREQ, "eventstore: operation %zu: unknown kind %d", i, (int)o->kind);
        if (o->kind == OD_EV_OP_SET_RETENTION && o->age_ms < 0)
            return od_err_set(err, OD_BADREQ, "eventstore: retention age must not be negative");
    }
    return OD_OK;
}

static int tw_add(tomb_work *tw, const void *key, size_t klen, uint64_t from, uint64_t to)
{
    if (from >= to) return OD_OK;
    if (tw->n == tw->cap) {
        size_t cap = tw->cap ? 2 * tw->cap : 8;
        tomb_range *r = realloc(tw->r, cap * sizeof *r);
        if (!r) return OD_NOMEM;
        tw->r = r;
        tw->cap = cap;
    }
    tw->r[tw->n++] = (tomb_range){key, klen, from, to, 0};
    return OD_OK;
}

/* The first sequence of the key that its current rule (count, age, the TTL stamped at append)
 * still shows, among the records in the store; next_seq when none. Called under mu: relies on
 * od_ev_cursor_open never taking mu (it reads the store's metadata at its own snapshot). */
static int first_shown(od_eventstore *es, const bkey *k, uint64_t *out, od_err *err)
{
    *out = k->old.next_seq;
    od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ, .max_count = 1};
    od_ev_cursor *c = NULL;
    int rc = od_ev_cursor_open(es, k->key, k->klen, &ro, &c, err);
    if (rc) return rc;
    if (od_ev_cursor_valid(c)) {
        od_ev_record r;
        od_ev_cursor_record(c, &r);
        *out = r.seq;
    }
    od_ev_cursor_free(c);
    return OD_OK;
}

/* Remove seq < before of a live key in the batch: the metadata frontier moves (reads hide the
 * range at once), records appended in this batch below it are not written, the store's
 * records get tombstones (now or deferred, see finish_tombstones_locked) and so do their
 * time-index entries. */
static int trim_key(od_eventstore *es, bkey *k, uint64_t before, od_batch *b, tomb_work *tw, od_err *err)
{
    if (before > k->m.next_seq) before = k->m.next_seq;
    if (before <= k->m.first_seq) return OD_OK;
    if (before > k->drop_below) k->drop_below = before;
    if (k->existed) {
        uint64_t to = before < k->old.next_seq ? before : k->old.next_seq;
        if (tw_add(tw, k->key, k->klen, k->m.first_seq, to)) return nomem(err);
        int rc = put_tidx_tombstones(es, b, k->key, k->klen, before, err);
        if (rc) return rc;
    }
    k->m.first_seq = before;
    return OD_OK;
}

static int apply_ops_locked(od_eventstore *es, bmap *bm, const od_ev_op *ops, size_t nops, od_batch *b,
                            tomb_work *tw, od_err *err)
{
    int rc = OD_OK;
    for (size_t i = 0; i < nops && !rc; i++) {
        const od_ev_op *o = &ops[i];
        int found;
        bkey *k = bmap_find(bm, o->key, o->klen, &found);
        if (!found) {
            rc = load_state_locked(es, k->key, k->klen, &k->old, &k->existed, err);
            if (rc) return rc;
            k->m = k->old;
            if (!k->existed) memset(&k->m, 0, sizeof k->m);
            k->batch_first = k->m.next_seq;
        }
        int live = !k->deleted && (k->existed || k->m.next_seq > k->batch_first);
        if (!live) {
            if (o->missing_ok) continue;
            char kr[200];
            key_repr(kr, sizeof kr, o->key, o->klen);
            return od_err_set(err, OD_NOTFOUND, "eventstore: no such key \"%s\"", kr);
        }
        switch (o->kind) {
        case OD_EV_OP_TRIM:
            rc = trim_key(es, k, o->before_seq, b, tw, err);
            break;
        case OD_EV_OP_DELETE_KEY:
            rc = trim_key(es, k, k->m.next_seq, b, tw, err); /* every record and index entry */
            k->drop_below = UINT64_MAX;
            k->deleted = 1;
            break;
        case OD_EV_OP_SET_RETENTION: {
            /* what the current rule hides becomes a trim first, so a longer (or no) rule
             * never brings hidden records back (see od_eventstore.h) */
            /* without an age rule only the count rule hides (a TTL from an older rule hides
             * for good by itself): no need to read the records; records appended in this call
             * count as shown */
            uint64_t shown = k->m.first_seq;
            if (k->existed && es_eff_age(&k->m, es->opts.retention_age_ms) > 0) rc = first_shown(es, k, &shown, err);
            uint64_t vf = es_visible_first(&k->m, es->opts.retention_count);
            if (vf > shown) shown = vf;
            if (!rc) rc = trim_key(es, k, shown, b, tw, err);
            k->m.ret_age_ms = o->age_ms;
            k->m.ret_count = o->count;
            break;
        }
        }
    }
    if (rc) return rc;
    /* small trims go into the atomic batch; large ones leave an intent there and write their
     * tombstones after it (finish_tombstones_locked; or the next writer open after a crash) */
    uint64_t inline_n = 0;
    for (size_t i = 0; i < tw->n; i++) {
        tomb_range *r = &tw->r[i];
        if (inline_n + (r->to - r->from) <= ES_TOMBSTONE_CHUNK) {
            inline_n += r->to - r->from;
            if (put_rec_tombstones(es, b, r->key, r->klen, r->from, r->to)) return nomem(err);
            r->from = r->to;
            continue;
        }
        r->deferred = 1;
        if (es_key_intent(&es->k, r->key, r->klen, r->from, r->to) || od_batch_put(b, es->k.data, es->k.len, "\x01", 1))
            return nomem(err);
    }
    return OD_OK;
}

/* After the atomic batch (still under mu, so no append can re-create a deleted key before its
 * old records are gone): the deferred tombstones in chunks, each range's intent deleted with
 * its last chunk. A failure leaves the intent for the next writer open; reads are unaffected. */
static void finish_tombstones_locked(od_eventstore *es, tomb_work *tw, uint64_t *dbseq)
{
    od_batch *b = od_batch_new();
    if (!b) return;
    for (size_t i = 0; i < tw->n; i++) {
        tomb_range *r = &tw->r[i];
        if (!r->deferred) continue;
        for (uint64_t s = r->from; s < r->to;) {
            od_batch_clear(b);
            uint64_t e = r->to - s > ES_TOMBSTONE_CHUNK ? s + ES_TOMBSTONE_CHUNK : r->to;
            if (put_rec_tombstones(es, b, r->key, r->klen, s, e)) goto out;
            if (e == r->to && (es_key_intent(&es->k, r->key, r->klen, r->from, r->to) ||
                               od_batch_delete(b, es->k.data, es->k.len)))
                goto out;
            if (od_db_write(es->db, b, 0, dbseq, NULL)) goto out;
            s = e;
        }
    }
out:
    od_batch_free(b);
}

/* Writer open: finish the trims a crash interrupted. Each intent names [from, to) of one key;
 * the key's live range now ([first_seq, next_seq) if it exists: it may have been re-created)
 * is left alone. */
static int recover_intents(od_eventstore *es, od_err *err)
{
    const uint8_t lo = ES_NS_INTENT, hi = ES_NS_INTENT + 1;
    od_iter *it = NULL;
    od_buf key = {0}, ik = {0};
    od_batch *b = od_batch_new();
    if (!b) return nomem(err);
    int rc = od_db_iter(es->db, NULL, &lo, 1, &hi, 1, &it, err);
    size_t done = 0;
    while (!rc && od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        uint64_t from, to;
        od_buf_reset(&key);
        if (es_intent_key_decode(k, kl, &key, &from, &to)) {
            rc = od_err_set(err, OD_CORRUPT, "eventstore: corrupt trim intent");
            break;
        }
        if (od_buf_reset(&ik), od_buf_append(&ik, k, kl)) {
            rc = nomem(err);
            break;
        }
        es_meta m;
        int exists;
        rc = load_meta_db(es, NULL, key.data, key.len, &m, &exists, err);
        if (rc) break;
        for (uint64_t s = from; s < to && !rc;) {
            od_batch_clear(b);
            uint64_t e = to - s > ES_TOMBSTONE_CHUNK ? s + ES_TOMBSTONE_CHUNK : to;
            for (uint64_t q = s; q < e && !rc; q++) {
                if (exists && q >= m.first_seq && q < m.next_seq) continue;
                if (es_key_rec(&es->k, key.data, key.len, q) || od_batch_delete(b, es->k.data, es->k.len)) rc = nomem(err);
            }
            if (!rc && e == to && od_batch_delete(b, ik.data, ik.len)) rc = nomem(err);
            if (!rc && od_batch_count(b)) rc = od_db_write(es->db, b, 0, NULL, err);
            s = e;
        }
        if (!rc && from >= to) {
            od_batch_clear(b);
            if (od_batch_delete(b, ik.data, ik.len)) rc = nomem(err);
            else rc = od_db_write(es->db, b, 0, NULL, err);
        }
        done++;
        if (!rc) rc = od_iter_next(it, err);
    }
    od_iter_free(it);
    od_batch_free(b);
    od_buf_free(&key);
    od_buf_free(&ik);
    if (!rc && done) rc = od_db_flush(es->db, 0, err);
    if (rc) od_err_prefix(err, "eventstore: finishing an interrupted trim");
    return rc;
}

int od_ev_commit(od_eventstore *es, const od_ev_rec_in *recs, size_t n, const od_ev_op *ops, size_t nops,
                 const od_ev_append_opts *opts, uint64_t *seqs_out, od_ev_append_info *info, od_err *err)
{
    if (n == 0 && nops == 0) {
        if (info) memset(info, 0, sizeof *info);
        return OD_OK;
    }
    return commit_impl(es, recs, n, ops, nops, opts, seqs_out, info, err);
}

static int one_op(od_eventstore *es, const od_ev_op *op, od_err *err)
{
    int rc = check_key(op->key, op->klen, err);
    if (rc) return rc;
    return commit_impl(es, NULL, 0, op, 1, NULL, NULL, NULL, err);
}

int od_ev_set_retention(od_eventstore *es, const void *key, size_t klen, int64_t age_ms, uint64_t count,
                        od_err *err)
{
    od_ev_op op = {.kind = OD_EV_OP_SET_RETENTION, .key = key, .klen = klen, .age_ms = age_ms, .count = count};
    return one_op(es, &op, err);
}

int od_ev_trim(od_eventstore *es, const void *key, size_t klen, uint64_t before_seq, od_err *err)
{
    od_ev_op op = {.kind = OD_EV_OP_TRIM, .key = key, .klen = klen, .before_seq = before_seq};
    return one_op(es, &op, err);
}

int od_ev_trim_many(od_eventstore *es, const od_ev_trim_in *t, size_t n, od_err *err)
{
    if (n == 0) return OD_OK;
    od_ev_op *ops = calloc(n, sizeof *ops);
    if (!ops) return nomem(err);
    for (size_t i = 0; i < n; i++)
        ops[i] = (od_ev_op){.kind = OD_EV_OP_TRIM, .key = t[i].key, .klen = t[i].klen,
                            .before_seq = t[i].before_seq, .missing_ok = 1};
    int rc = commit_impl(es, NULL, 0, ops, n, NULL, NULL, NULL, err);
    free(ops);
    return rc;
}

int od_ev_delete_key(od_eventstore *es, const void *key, size_t klen, od_err *err)
{
    od_ev_op op = {.kind = OD_EV_OP_DELETE_KEY, .key = key, .klen = klen};
    return one_op(es, &op, err);
}

/* ---------------------------------------------------------------- reads */

struct od_ev_cursor {
    od_eventstore *es;
    od_snapshot *snap;
    od_iter *it;
    od_buf key;
    od_ev_read_opts ro;
    int64_t age, now, floor;
    uint64_t returned, bytes;
    int valid;
    es_rec cur;
    uint64_t cur_seq;
};

/* Move to the first acceptable record at or after the iterator's position. */
static int cursor_settle(od_ev_cursor *c, od_err *err)
{
    c->valid = 0;
    if (!c->it) return OD_OK;
    if (c->ro.max_count && c->returned >= c->ro.max_count) return OD_OK;
    while (od_iter_valid(c->it)) {
        size_t kl, vl;
        const uint8_t *k = od_iter_key(c->it, &kl);
        const uint8_t *v = od_iter_value(c->it, &vl);
        uint64_t seq;
        if (kl < 8) return od_err_set(err, OD_CORRUPT, "eventstore: short record key");
        seq = 0;
        for (int i = 0; i < 8; i++) seq = (seq << 8) | k[kl - 8 + i];
        if (es_rec_decode(v, vl, &c->cur))
            return od_err_set(err, OD_CORRUPT, "eventstore: corrupt record at seq %llu", (unsigned long long)seq);
        int skip = es_age_hidden(c->cur.ts, c->age, c->now) ||
                   (!(c->cur.iflags & ES_IF_AGE_OVERRIDE) && c->cur.ts < c->floor) ||
                   (c->ro.from == OD_EV_FROM_TS && c->cur.ts < c->ro.ts_ms);
        if (!skip) {
            if (c->ro.end_ts_ms && c->cur.ts >= c->ro.end_ts_ms) return OD_OK;
            if (c->ro.max_bytes && c->returned > 0 && c->bytes + c->cur.vlen > c->ro.max_bytes) return OD_OK;
            c->cur_seq = seq;
            c->valid = 1;
            return OD_OK;
        }
        int rc = od_iter_next(c->it, err);
        if (rc) return rc;
    }
    return OD_OK;
}

/* Start of a FROM_TS read: the first index entry with ts ≥ T is at s1 (a multiple of STRIDE,
 * never 0); the first record with ts ≥ T lies in [s1 - STRIDE, s1], since the entry at
 * s1 - STRIDE (or seq 0, which has none) has ts < T or is the answer itself. Without such an
 * entry, start at the last multiple of STRIDE below next_seq (0 for short keys). */
static int ts_start(od_ev_cursor *c, const es_meta *m, uint64_t *start, od_err *err)
{
    od_eventstore *es = c->es;
    od_buf lo = {0}, hi = {0};
    od_iter *it = NULL;
    int has = 0, rc = OD_OK;
    uint64_t last_mult = m->next_seq ? (m->next_seq - 1) / OD_ES_TIDX_STRIDE * OD_ES_TIDX_STRIDE : 0;
    *start = last_mult;
    if (es_key_tidx(&lo, c->key.data, c->key.len, c->ro.ts_ms, 0) ||
        es_key_tidx_prefix(&hi, c->key.data, c->key.len)) {
        rc = nomem(err);
        goto out;
    }
    {
        od_buf succ = {0};
        if (es_prefix_successor(&succ, hi.data, hi.len, &has)) {
            od_buf_free(&succ);
            rc = nomem(err);
            goto out;
        }
        od_buf_free(&hi);
        hi = succ;
    }
    rc = od_db_iter(es->db, c->snap, lo.data, lo.len, has ? hi.data : NULL, has ? hi.len : 0, &it, err);
    if (rc) goto out;
    if (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        int64_t ts;
        uint64_t s1;
        if (es_tidx_key_decode(k, kl, NULL, &ts, &s1) == OD_OK)
            *start = s1 >= OD_ES_TIDX_STRIDE ? s1 - OD_ES_TIDX_STRIDE : 0;
    }
out:
    od_iter_free(it);
    od_buf_free(&lo);
    od_buf_free(&hi);
    return rc;
}

int od_ev_cursor_open(od_eventstore *es, const void *key, size_t klen, const od_ev_read_opts *ro,
                      od_ev_cursor **out, od_err *err)
{
    *out = NULL;
    int rc = check_key(key, klen, err);
    if (rc) return rc;
    od_ev_cursor *c = calloc(1, sizeof *c);
    if (!c) return nomem(err);
    c->es = es;
    if (ro) c->ro = *ro;
    if (od_buf_append(&c->key, key, klen)) {
        free(c);
        return nomem(err);
    }
    rc = od_db_snapshot(es->db, &c->snap, err);
    if (rc) goto fail;
    es_meta m;
    int exists;
    rc = load_meta_db(es, c->snap, key, klen, &m, &exists, err);
    if (rc) goto fail;
    if (!exists) {
        *out = c;
        return OD_OK;
    }
    c->now = es_clock(es);
    c->age = es_eff_age(&m, __atomic_load_n(&es->store_age, __ATOMIC_RELAXED));
    c->floor = __atomic_load_n(&es->store_floor, __ATOMIC_RELAXED);
    uint64_t first = es_visible_first(&m, es->opts.retention_count), start = first;
    uint64_t end = m.next_seq;
    if (c->ro.end_seq && c->ro.end_seq < end) end = c->ro.end_seq;
    switch (c->ro.from) {
    case OD_EV_FROM_SEQ:
        start = c->ro.seq;
        break;
    case OD_EV_FROM_TAIL:
        start = c->ro.tail_n >= m.next_seq ? 0 : m.next_seq - c->ro.tail_n;
        break;
    case OD_EV_FROM_TS:
        rc = ts_start(c, &m, &start, err);
        if (rc) goto fail;
        break;
    default:
        rc = od_err_set(err, OD_BADREQ, "eventstore: unknown read start %d", (int)c->ro.from);
        goto fail;
    }
    if (start < first) start = first;
    if (start >= end) {
        *out = c;
        return OD_OK;
    }
    od_buf lo = {0}, hi = {0};
    if (es_key_rec(&lo, key, klen, start) || es_key_rec(&hi, key, klen, end)) {
        od_buf_free(&lo);
        od_buf_free(&hi);
        rc = nomem(err);
        goto fail;
    }
    rc = od_db_iter(es->db, c->snap, lo.data, lo.len, hi.data, hi.len, &c->it, err);
    od_buf_free(&lo);
    od_buf_free(&hi);
    if (rc) goto fail;
    rc = cursor_settle(c, err);
    if (rc) goto fail;
    *out = c;
    return OD_OK;
fail:
    od_ev_cursor_free(c);
    return rc;
}

int od_ev_cursor_valid(const od_ev_cursor *c) { return c && c->valid; }

void od_ev_cursor_record(const od_ev_cursor *c, od_ev_record *out)
{
    memset(out, 0, sizeof *out);
    if (!c->valid) return;
    out->key = c->key.data;
    out->klen = c->key.len;
    out->seq = c->cur_seq;
    out->ts_ms = c->cur.ts;
    out->flags = c->cur.flags;
    out->value = c->cur.value;
    out->vlen = c->cur.vlen;
    out->headers = c->cur.headers;
    out->headers_len = c->cur.headers_len;
    out->nheaders = c->cur.nheaders;
}

int od_ev_cursor_next(od_ev_cursor *c, od_err *err)
{
    if (!c->valid) return OD_OK;
    c->returned++;
    c->bytes += c->cur.vlen;
    c->valid = 0;
    int rc = od_iter_next(c->it, err);
    if (rc) return rc;
    return cursor_settle(c, err);
}

void od_ev_cursor_free(od_ev_cursor *c)
{
    if (!c) return;
    od_iter_free(c->it);
    if (c->snap) od_snapshot_release(c->snap);
    od_buf_free(&c->key);
    free(c);
}

/* ---------------------------------------------------------------- follow */

int od_ev_follow(od_eventstore *es, const void *key, size_t klen, uint64_t from_seq, int64_t timeout_ms,
                 od_err *err)
{
    int rc = check_key(key, klen, err);
    if (rc) return rc;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    int64_t ns = deadline.tv_nsec + (timeout_ms > 0 ? timeout_ms : 0) % 1000 * 1000000;
    deadline.tv_sec += (timeout_ms > 0 ? timeout_ms : 0) / 1000 + ns / 1000000000;
    deadline.tv_nsec = ns % 1000000000;
    for (;;) {
        pthread_mutex_lock(&es->mu);
        uint64_t gen = es->gen;
        pthread_mutex_unlock(&es->mu);
        od_ev_key_info ki;
        if (es->opts.read_only) {
            rc = od_ev_refresh(es, err);
            if (rc) return rc;
        }
        rc = od_ev_tail(es, key, klen, &ki, err);
        if (rc) return rc;
        if (ki.exists && ki.next_seq > from_seq) return OD_OK;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
            return od_err_set(err, OD_TIMEOUT, "eventstore: no new record within %lld ms", (long long)timeout_ms);
        if (es->opts.read_only) {
            /* another process writes: poll the store every 20 ms */
            struct timespec d = {0, 20 * 1000000};
            nanosleep(&d, NULL);
            continue;
        }
        pthread_mutex_lock(&es->mu);
        while (es->gen == gen) {
            if (pthread_cond_timedwait(&es->cond, &es->mu, &deadline) == ETIMEDOUT) break;
        }
        pthread_mutex_unlock(&es->mu);
    }
}

/* ---------------------------------------------------------------- keys */

struct od_ev_keys {
    od_eventstore *es;
    od_snapshot *snap;
    od_iter *it;
    es_meta m;
    int valid;
};

static int keys_settle(od_ev_keys *k, od_err *err)
{
    k->valid = 0;
    if (!od_iter_valid(k->it)) return OD_OK;
    size_t vl;
    const uint8_t *v = od_iter_value(k->it, &vl);
    if (es_meta_decode(v, vl, &k->m)) return od_err_set(err, OD_CORRUPT, "eventstore: corrupt key metadata");
    k->valid = 1;
    return OD_OK;
}

int od_ev_keys_open(od_eventstore *es, const void *lo, size_t lolen, const void *hi, size_t hilen,
                    od_ev_keys **out, od_err *err)
{
    *out = NULL;
    od_ev_keys *k = calloc(1, sizeof *k);
    if (!k) return nomem(err);
    k->es = es;
    od_buf l = {0}, h = {0};
    int rc = OD_OK;
    if (od_buf_append_u8(&l, ES_NS_META) || (lolen && od_buf_append(&l, lo, lolen))) rc = nomem(err);
    if (!rc && hi) {
        if (od_buf_append_u8(&h, ES_NS_META) || (hilen && od_buf_append(&h, hi, hilen))) rc = nomem(err);
    } else if (!rc) {
        if (od_buf_append_u8(&h, ES_NS_META + 1)) rc = nomem(err);
    }
    if (!rc) rc = od_db_snapshot(es->db, &k->snap, err);
    if (!rc) rc = od_db_iter(es->db, k->snap, l.data, l.len, h.data, h.len, &k->it, err);
    od_buf_free(&l);
    od_buf_free(&h);
    if (!rc) rc = keys_settle(k, err);
    if (rc) {
        od_ev_keys_free(k);
        return rc;
    }
    *out = k;
    return OD_OK;
}

int od_ev_keys_valid(const od_ev_keys *k) { return k && k->valid; }

const uint8_t *od_ev_keys_key(const od_ev_keys *k, size_t *klen)
{
    size_t kl;
    const uint8_t *p = od_iter_key(k->it, &kl);
    *klen = kl - 1;
    return p + 1;
}

void od_ev_keys_info(const od_ev_keys *k, od_ev_key_info *out) { meta_to_info(k->es, &k->m, 1, out); }

int od_ev_keys_next(od_ev_keys *k, od_err *err)
{
    if (!k->valid) return OD_OK;
    int rc = od_iter_next(k->it, err);
    if (rc) {
        k->valid = 0;
        return rc;
    }
    return keys_settle(k, err);
}

void od_ev_keys_free(od_ev_keys *k)
{
    if (!k) return;
    od_iter_free(k->it);
    if (k->snap) od_snapshot_release(k->snap);
    free(k);
}

int od_ev_list_keys(od_eventstore *es, const void *prefix, size_t plen, const void *start_after, size_t salen,
                    size_t limit, od_ev_key_cb cb, void *ctx, int *more_out, od_err *err)
{
    if (more_out) *more_out = 0;
    od_buf lo = {0}, hi = {0};
    int has = 0, rc = OD_OK;
    if (plen && od_buf_append(&lo, prefix, plen)) rc = nomem(err);
    if (!rc && es_prefix_successor(&hi, prefix, plen, &has)) rc = nomem(err);
    /* start strictly after start_after: start_after + 0x00 is its immediate successor */
    if (!rc && start_after && salen) {
        int c = lo.len ? memcmp(start_after, lo.data, salen < lo.len ? salen : lo.len) : 0;
        int after = c > 0 || (c == 0 && salen >= lo.len); /* start_after ≥ prefix */
        if (after) {
            od_buf_reset(&lo);
            if (od_buf_append(&lo, start_after, salen) || od_buf_append_u8(&lo, 0)) rc = nomem(err);
        }
    }
    od_ev_keys *k = NULL;
    if (!rc) rc = od_ev_keys_open(es, lo.data, lo.len, has ? hi.data : NULL, has ? hi.len : 0, &k, err);
    size_t got = 0;
    while (!rc && od_ev_keys_valid(k)) {
        if (limit && got >= limit) {
            if (more_out) *more_out = 1;
            break;
        }
        size_t kl;
        const uint8_t *kp = od_ev_keys_key(k, &kl);
        od_ev_key_info info;
        od_ev_keys_info(k, &info);
        got++;
        if (cb && cb(ctx, kp, kl, &info)) break;
        rc = od_ev_keys_next(k, err);
    }
    od_ev_keys_free(k);
    od_buf_free(&lo);
    od_buf_free(&hi);
    return rc;
}
