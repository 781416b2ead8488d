/*
 * tsdb.c — the TSDB engine (see od_tsdb.h): open/close, ingest, snapshot reads (select,
 * sample iteration, label names/values, stats), retention and compaction, on od_db.
 *
 * Owns: od_tsdb (the engine handle, its writer state and caches), od_tsdb_read (a pinned
 * snapshot), od_series_set and od_sample_iter.
 *
 * How it works (key layout in tsdb_int.h, byte formats in docs/formats.md):
 *   - Time is cut into buckets of bucket_ms. Every append batch becomes ONE od_db batch that
 *     holds, per series and bucket touched, a chunk fragment 'C' bucket sid stamp (stamp = a
 *     per-batch counter, so fragments of one series sort in write order), the series
 *     dictionary/forward-index entries of new series, postings fragments for series new to a
 *     bucket, and the meta record (counters). So an append is atomic and durable through the
 *     engine's WAL; the TSDB keeps no log of its own.
 *   - Reads merge a series' fragments of a bucket: concatenated in stamp order, stably sorted
 *     by time, the last write of a timestamp wins. Compaction rewrites them as one long chunk
 *     (stamp 0) and merges postings fragments; it also deletes buckets out of retention.
 *   - Series dictionary: 'H' fp sid → labels. A lookup scans the (almost always one-entry)
 *     fp prefix and compares the full canonical encoding, so a fingerprint collision gives
 *     two series, never a merged one. The writer caches fp → (sid, labels) in memory.
 *   - Per bucket the writer remembers which series are already in the bucket's postings
 *     (a hash set, loaded from the 'A' fragments on first touch; at most MAX_BUCKET_SETS
 *     buckets are kept), so a series is indexed once per bucket.
 *   - Selection: for each non-empty bucket in range (found by seeking 'A' keys), the
 *     postings of every matcher that does not match "" are unioned over values (regex
 *     matchers test each value of the label in the bucket) and intersected; with no such
 *     matcher all series of the bucket are candidates. Every candidate's labels are then
 *     checked against all matchers, so negative matchers are always exact.
 *   - Retention is relative to the newest sample ever ingested (as Prometheus): reads hide
 *     samples older than max_t - retention at once; compaction and an od_db compaction filter
 *     drop whole buckets that ended before that.
 *   - Lazy writer: OD_TSDB_LAZY_WRITER opens the engine read-only and opens a writer handle at
 *     the first append/compact; the read-only handle stays open for live read views.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/od_coding.h"
#include "../util/od_crc32c.h"
#include "tsdb_int.h"

#define DEFAULT_BUCKET_MS 7200000LL
#define MAX_BUCKET_SETS 8
#define META_VERSION 1
#define META_LEN (4 + 8 + 8 + 8 + 8 + 8 + 8 + 4)

static const uint8_t META_KEY[] = {OD_K_META, 'm', 'e', 't', 'a'};

/* ---------------------------------------------------------------- caches */

typedef struct sentry {
    uint64_t fp, sid;
    uint8_t *enc;
    uint32_t len;
} sentry;

typedef struct smap {   /* open addressing, fp != 0 marks a used slot (fp 0 is remapped to 1) */
    sentry *v;
    size_t cap, n;
} smap;

typedef struct sidset {  /* open addressing set of sids (sid 0 = empty) */
    uint64_t *v;
    size_t cap, n;
} sidset;

typedef struct bset {
    int64_t bucket;
    uint64_t used;  /* LRU clock */
    sidset s;
} bset;

/* A bucket that received chunk fragments since it was last compacted (background
 * compaction's work list; small: buckets being written are few). */
typedef struct dirty {
    int64_t bucket;
    uint64_t pending;     /* fragments written since the last completed compaction */
    uint64_t round;       /* `pending` when the current (resumable) round began */
    uint64_t resume_sid;  /* 0: no round in progress; else the next sid to compact */
    uint64_t touched;     /* stamp of the last append batch that wrote to the bucket */
} dirty;

typedef struct meta {
    int64_t bucket_ms, retention_ms;
    uint64_t next_sid, next_stamp;
    int64_t min_t, max_t;
} meta;

struct od_tsdb {
    char *uri;
    od_tsdb_options opts;
    od_db_options dbo;
    int has_dbo;
    pthread_mutex_t mu;
    od_db *db;        /* current handle */
    od_db *ro_db;     /* the read-only handle kept after a lazy upgrade */
    int writer;
    meta m;
    smap series;
    bset bsets[MAX_BUCKET_SETS];
    uint64_t clock;
    int64_t filter_cutoff_bucket; /* atomic: buckets below this are dropped by compaction */
    /* background compaction: cmu serializes passes and od_tsdb_compact (lock order cmu, mu);
     * the dirty list, the stop flag and the counters are under mu */
    pthread_mutex_t cmu;
    pthread_cond_t bg_cv;
    pthread_t bg;
    int bg_running, bg_stop;
    dirty *dv;
    size_t dn, dcap;
    uint64_t bg_passes, bg_merged;
};

static uint64_t fp_of(uint64_t h) { return h ? h : 1; }

static void smap_free(smap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->v[i].enc);
    free(m->v);
    memset(m, 0, sizeof *m);
}

static int smap_grow(smap *m)
{
    size_t nc = m->cap ? m->cap * 2 : 1024;
    sentry *nv = calloc(nc, sizeof *nv);
    if (!nv) return OD_NOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->v[i].fp) continue;
        size_t j = m->v[i].fp & (nc - 1);
        while (nv[j].fp) j = (j + 1) & (nc - 1);
        nv[j] = m->v[i];
    }
    free(m->v);
    m->v = nv;
    m->cap = nc;
    return OD_OK;
}

static sentry *smap_find(smap *m, uint64_t fp, const uint8_t *enc, size_t len)
{
    if (!m->cap) return NULL;
    for (size_t j = fp & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        sentry *e = &m->v[j];
        if (!e->fp) return NULL;
        if (e->fp == fp && e->len == len && memcmp(e->enc, enc, len) == 0) return e;
    }
}

static int smap_put(smap *m, uint64_t fp, uint64_t sid, const uint8_t *enc, size_t len)
{
    if ((m->n + 1) * 4 > m->cap * 3 && smap_grow(m)) return OD_NOMEM;
    uint8_t *c = malloc(len ? len : 1);
    if (!c) return OD_NOMEM;
    memcpy(c, enc, len);
    size_t j = fp & (m->cap - 1);
    while (m->v[j].fp) j = (j + 1) & (m->cap - 1);
    m->v[j].fp = fp;
    m->v[j].sid = sid;
    m->v[j].enc = c;
    m->v[j].len = (uint32_t)len;
    m->n++;
    return OD_OK;
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    return x;
}

static int sidset_has(const sidset *s, uint64_t sid)
{
    if (!s->cap) return 0;
    for (size_t j = mix(sid) & (s->cap - 1);; j = (j + 1) & (s->cap - 1)) {
        if (s->v[j] == sid) return 1;
        if (!s->v[j]) return 0;
    }
}

static int sidset_add(sidset *s, uint64_t sid)
{
    if ((s->n + 1) * 4 > s->cap * 3) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        uint64_t *nv = calloc(nc, sizeof *nv);
        if (!nv) return OD_NOMEM;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->v[i]) continue;
            size_t j = mix(s->v[i]) & (nc - 1);
            while (nv[j]) j = (j + 1) & (nc - 1);
            nv[j] = s->v[i];
        }
        free(s->v);
        s->v = nv;
        s->cap = nc;
    }
    size_t j = mix(sid) & (s->cap - 1);
    while (s->v[j]) {
        if (s->v[j] == sid) return OD_OK;
        j = (j + 1) & (s->cap - 1);
    }
    s->v[j] = sid;
    s->n++;
    return OD_OK;
}

static void caches_drop(od_tsdb *t)
{
    smap_free(&t->series);
    for (int i = 0; i < MAX_BUCKET_SETS; i++) {
        free(t->bsets[i].s.v);
        memset(&t->bsets[i], 0, sizeof t->bsets[i]);
    }
}

/* ---------------------------------------------------------------- helpers */

static int64_t bucket_of(int64_t t, int64_t bms)
{
    int64_t b = t / bms;
    if (t % bms < 0) b--;
    return b;
}

static int64_t bucket_start(int64_t b, int64_t bms)
{
    if (b <= INT64_MIN / bms) return INT64_MIN;
    if (b >= INT64_MAX / bms) return INT64_MAX;
    return b * bms;
}

static int64_t bucket_end(int64_t b, int64_t bms) /* inclusive */
{
    int64_t s = bucket_start(b, bms);
    if (s == INT64_MAX || s > INT64_MAX - bms) return INT64_MAX;
    return s + bms - 1;
}

/* Smallest key greater than every key with this prefix; returns 0 if none (all 0xff). */
static size_t prefix_end(const uint8_t *p, size_t n, uint8_t *out)
{
    memcpy(out, p, n);
    while (n > 0) {
        if (out[n - 1] != 0xff) {
            out[n - 1]++;
            return n;
        }
        n--;
    }
    return 0;
}

static int prefix_iter(od_db *db, const od_snapshot *snap, const uint8_t *p, size_t n, od_iter **it, od_err *err)
{
    uint8_t *hi = malloc(n ? n : 1);
    if (!hi) return od_err_set(err, OD_NOMEM, "out of memory");
    size_t hn = prefix_end(p, n, hi);
    int rc = od_db_iter(db, snap, p, n, hn ? hi : NULL, hn, it, err);
    free(hi);
    return rc;
}

static void key_chunk(uint8_t k[25], int64_t b, uint64_t sid, uint64_t stamp)
{
    k[0] = OD_K_CHUNK;
    od_be64(k + 1, od_bucket_key(b));
    od_be64(k + 9, sid);
    od_be64(k + 17, stamp);
}

static void key_sid(uint8_t k[9], uint64_t sid)
{
    k[0] = OD_K_SERIES;
    od_be64(k + 1, sid);
}

static void key_dirty(uint8_t k[9], int64_t b)
{
    k[0] = OD_K_DIRTY;
    od_be64(k + 1, od_bucket_key(b));
}

static void key_all(uint8_t k[17], int64_t b, uint64_t frag)
{
    k[0] = OD_K_ALL;
    od_be64(k + 1, od_bucket_key(b));
    od_be64(k + 9, frag);
}

static void meta_encode(const meta *m, uint8_t out[META_LEN])
{
    od_put_u32(out, META_VERSION);
    od_put_u64(out + 4, (uint64_t)m->bucket_ms);
    od_put_u64(out + 12, (uint64_t)m->retention_ms);
    od_put_u64(out + 20, m->next_sid);
    od_put_u64(out + 28, m->next_stamp);
    od_put_u64(out + 36, (uint64_t)m->min_t);
    od_put_u64(out + 44, (uint64_t)m->max_t);
    od_put_u32(out + 52, od_crc32c(out, 52));
}

static int meta_decode(const uint8_t *p, size_t n, meta *m, od_err *err)
{
    if (n != META_LEN || od_crc32c(p, 52) != od_get_u32(p + 52))
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt meta record");
    if (od_get_u32(p) != META_VERSION)
        return od_err_set(err, OD_UNSUPPORTED, "tsdb: meta format version %u not supported", od_get_u32(p));
    m->bucket_ms = (int64_t)od_get_u64(p + 4);
    m->retention_ms = (int64_t)od_get_u64(p + 12);
    m->next_sid = od_get_u64(p + 20);
    m->next_stamp = od_get_u64(p + 28);
    m->min_t = (int64_t)od_get_u64(p + 36);
    m->max_t = (int64_t)od_get_u64(p + 44);
    if (m->bucket_ms <= 0 || m->next_sid == 0 || m->next_stamp == 0)
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt meta record (values)");
    return OD_OK;
}

static void meta_default(meta *m, int64_t bucket_ms)
{
    m->bucket_ms = bucket_ms > 0 ? bucket_ms : DEFAULT_BUCKET_MS;
    m->retention_ms = 0;
    m->next_sid = 1;
    m->next_stamp = 1;
    m->min_t = INT64_MAX;
    m->max_t = INT64_MIN;
}

/* Read meta from (db, snap); *found = 0 when absent (then m is the default). */
static int meta_read(od_db *db, const od_snapshot *snap, int64_t bucket_ms, meta *m, int *found, od_err *err)
{
    od_buf v = {0};
    int rc = od_db_get(db, snap, META_KEY, sizeof META_KEY, &v, err);
    *found = 0;
    meta_default(m, bucket_ms);
    if (rc == OD_NOTFOUND) {
        od_err_clear(err);
        od_buf_free(&v);
        return OD_OK;
    }
    if (rc == OD_OK) {
        rc = meta_decode(v.data, v.len, m, err);
        *found = rc == OD_OK;
    }
    od_buf_free(&v);
    return rc;
}

static int64_t cutoff_of(const meta *m)
{
    if (m->retention_ms <= 0 || m->max_t == INT64_MIN) return INT64_MIN;
    if (m->max_t < INT64_MIN + m->retention_ms) return INT64_MIN;
    return m->max_t - m->retention_ms + 1; /* samples with t > max_t - retention stay */
}

static void update_filter_cutoff(od_tsdb *t)
{
    int64_t c = cutoff_of(&t->m);
    int64_t cb = c == INT64_MIN ? INT64_MIN : bucket_of(c, t->m.bucket_ms); /* buckets < cb ended before c */
    __atomic_store_n(&t->filter_cutoff_bucket, cb, __ATOMIC_RELAXED);
}

/* od_db compaction filter: drop chunk/postings keys of buckets that ended before retention. */
static int retention_filter(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
                            int64_t now_ms)
{
    (void)val;
    (void)vlen;
    (void)now_ms;
    od_tsdb *t = ctx;
    int64_t cb = __atomic_load_n(&t->filter_cutoff_bucket, __ATOMIC_RELAXED);
    if (cb == INT64_MIN || klen < 9) return 0;
    if (key[0] != OD_K_CHUNK && key[0] != OD_K_POST && key[0] != OD_K_ALL && key[0] != OD_K_DIRTY) return 0;
    return od_bucket_unkey(od_rbe64(key + 1)) < cb;
}

/* ---------------------------------------------------------------- open / close */

void od_tsdb_options_init(od_tsdb_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = OD_TSDB_WRITER;
    o->retention_ms = -1;
    o->bucket_ms = DEFAULT_BUCKET_MS;
    o->compact_interval_ms = 30000;
    o->compact_fragments = 8;
    o->compact_budget = 262144;
}

static int open_engine(od_tsdb *t, int read_only, od_db **out, od_err *err)
{
    od_db_options o;
    if (t->has_dbo) o = t->dbo;
    else od_db_options_init(&o);
    o.read_only = read_only;
    if (!read_only) {
        o.compaction_filter = retention_filter;
        o.compaction_filter_ctx = t;
    }
    return od_db_open(t->uri, &o, out, err);
}

static void *bg_main(void *arg);
static int seed_dirty(od_tsdb *t, od_err *err);

/* Become the writer: open the engine read-write, load/create meta, start the background
 * compaction thread. Caller holds mu. */
static int become_writer(od_tsdb *t, od_err *err)
{
    if (t->writer) return OD_OK;
    if (t->opts.mode == OD_TSDB_READ_ONLY) {
        char shown[512];
        od_uri_redact(t->uri, shown, sizeof shown);
        return od_err_set(err, OD_BADREQ, "tsdb: %s is open read-only", shown);
    }
    od_db *db = NULL;
    int rc = open_engine(t, 0, &db, err);
    if (rc) {
        char shown[512];
        od_uri_redact(t->uri, shown, sizeof shown);
        od_err_prefix(err, "tsdb: cannot open %s for writing", shown);
        return rc;
    }
    meta m;
    int found;
    rc = meta_read(db, NULL, t->opts.bucket_ms, &m, &found, err);
    if (rc == OD_OK && (!found || (t->opts.retention_ms >= 0 && t->opts.retention_ms != m.retention_ms))) {
        if (t->opts.retention_ms >= 0) m.retention_ms = t->opts.retention_ms;
        uint8_t mb[META_LEN];
        meta_encode(&m, mb);
        od_batch *b = od_batch_new();
        if (!b) rc = od_err_set(err, OD_NOMEM, "out of memory");
        else {
            rc = od_batch_put(b, META_KEY, sizeof META_KEY, mb, sizeof mb);
            if (rc == OD_OK) rc = od_db_write(db, b, 1, NULL, err);
            od_batch_free(b);
        }
    }
    if (rc) {
        od_db_close(db, NULL);
        return rc;
    }
    od_db *prev = t->db;
    meta prev_m = t->m;
    t->m = m;
    t->db = db;
    t->writer = 1;
    /* fragments left by earlier writers (a failure only delays their merge to an explicit
     * compaction or the bucket's next write) */
    (void)seed_dirty(t, NULL);
    if (t->opts.compact_interval_ms > 0 && !t->bg_running) {
        /* created after the state above is set (pthread_create orders it before the thread) */
        if (pthread_create(&t->bg, NULL, bg_main, t) != 0) {
            t->m = prev_m;
            t->db = prev;
            t->writer = 0;
            od_db_close(db, NULL);
            return od_err_set(err, OD_IO, "tsdb: cannot start the background compaction thread");
        }
        t->bg_running = 1;
    }
    if (prev) t->ro_db = prev;
    update_filter_cutoff(t);
    return OD_OK;
}

int od_tsdb_open(const char *uri, const od_tsdb_options *o, od_tsdb **out, od_err *err)
{
    *out = NULL;
    od_tsdb *t = calloc(1, sizeof *t);
    if (!t) return od_err_set(err, OD_NOMEM, "out of memory");
    if (o) t->opts = *o;
    else od_tsdb_options_init(&t->opts);
    if (t->opts.bucket_ms <= 0) t->opts.bucket_ms = DEFAULT_BUCKET_MS;
    if (t->opts.db) {
        t->dbo = *t->opts.db;
        t->has_dbo = 1;
        t->opts.db = NULL;
    }
    t->uri = strdup(uri);
    if (!t->uri) {
        free(t);
        return od_err_set(err, OD_NOMEM, "out of memory");
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->cmu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t->bg_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    t->filter_cutoff_bucket = INT64_MIN;
    int rc;
    if (t->opts.mode == OD_TSDB_WRITER) {
        rc = become_writer(t, err);
    } else {
        rc = open_engine(t, 1, &t->db, err);
        if (rc == OD_NOTFOUND && t->opts.mode == OD_TSDB_LAZY_WRITER) {
            /* nothing there yet: this opener creates the store */
            od_err_clear(err);
            rc = become_writer(t, err);
        } else if (rc) {
            {
                char shown[512];
                od_uri_redact(uri, shown, sizeof shown);
                od_err_prefix(err, "tsdb: cannot open %s", shown);
            }
        } else {
            int found;
            rc = meta_read(t->db, NULL, t->opts.bucket_ms, &t->m, &found, err);
        }
    }
    if (rc) {
        if (t->db) od_db_close(t->db, NULL);
        pthread_mutex_destroy(&t->mu);
        pthread_mutex_destroy(&t->cmu);
        pthread_cond_destroy(&t->bg_cv);
        free(t->uri);
        free(t);
        return rc;
    }
    *out = t;
    return OD_OK;
}

int od_tsdb_close(od_tsdb *t, od_err *err)
{
    if (!t) return OD_OK;
    int rc = OD_OK;
    /* stop the background compaction first: a running pass finishes its batch (it is
     * bounded), then the thread sees bg_stop and exits */
    pthread_mutex_lock(&t->mu);
    int running = t->bg_running;
    t->bg_stop = 1;
    pthread_cond_broadcast(&t->bg_cv);
    pthread_mutex_unlock(&t->mu);
    if (running) pthread_join(t->bg, NULL);
    if (t->db) rc = od_db_close(t->db, err);
    if (t->ro_db) od_db_close(t->ro_db, NULL);
    caches_drop(t);
    free(t->dv);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->cmu);
    pthread_cond_destroy(&t->bg_cv);
    free(t->uri);
    free(t);
    return rc;
}

int od_tsdb_is_writer(od_tsdb *t)
{
    pthread_mutex_lock(&t->mu);
    int w = t->writer;
    pthread_mutex_unlock(&t->mu);
    return w;
}

od_db *od_tsdb_db(od_tsdb *t)
{
    pthread_mutex_lock(&t->mu);
    od_db *db = t->db;
    pthread_mutex_unlock(&t->mu);
    return db;
}

void od_tsdb_get_info(od_tsdb *t, od_tsdb_info *out)
{
    pthread_mutex_lock(&t->mu);
    out->bucket_ms = t->m.bucket_ms;
    out->retention_ms = t->m.retention_ms;
    out->min_t = t->m.min_t == INT64_MAX ? INT64_MIN : t->m.min_t;
    out->max_t = t->m.max_t;
    out->series = t->m.next_sid - 1;
    uint64_t bytes = t->series.cap * sizeof(sentry);
    for (size_t i = 0; i < t->series.cap; i++)
        if (t->series.v[i].fp) bytes += t->series.v[i].len;
    for (int i = 0; i < MAX_BUCKET_SETS; i++) bytes += t->bsets[i].s.cap * sizeof(uint64_t);
    out->cache_bytes = bytes;
    out->cached_series = t->series.n;
    out->bg_passes = t->bg_passes;
    out->bg_merged = t->bg_merged;
    out->dirty_buckets = t->dn;
    pthread_mutex_unlock(&t->mu);
}

int od_tsdb_refresh(od_tsdb *t, od_err *err)
{
    pthread_mutex_lock(&t->mu);
    int rc = OD_OK;
    if (!t->writer) {
        rc = od_db_refresh(t->db, err);
        if (rc == OD_OK) {
            int found;
            rc = meta_read(t->db, NULL, t->opts.bucket_ms, &t->m, &found, err);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int od_tsdb_flush(od_tsdb *t, od_err *err)
{
    pthread_mutex_lock(&t->mu);
    int rc = t->writer ? od_db_flush(t->db, 0, err) : OD_OK;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ---------------------------------------------------------------- ingest */

/* Find or allocate the series id of a (sorted, valid) label set. *created = 1 when new (the
 * dictionary entries were added to b). Caller holds mu. */
static int series_id(od_tsdb *t, const uint8_t *enc, size_t len, od_batch *b, uint64_t *sid, int *created,
                     od_err *err)
{
    uint64_t fp = fp_of(od_tsdb_hash_bytes(enc, len));
    *created = 0;
    sentry *e = smap_find(&t->series, fp, enc, len);
    if (e) {
        *sid = e->sid;
        return OD_OK;
    }
    /* Not cached: look in the store's dictionary (the fp prefix), comparing full labels. */
    uint8_t pk[9];
    pk[0] = OD_K_HASH;
    od_be64(pk + 1, fp);
    od_iter *it = NULL;
    int rc = prefix_iter(t->db, NULL, pk, 9, &it, err);
    if (rc) return rc;
    uint64_t found = 0;
    while (od_iter_valid(it)) {
        size_t kl, vl;
        const uint8_t *k = od_iter_key(it, &kl);
        const uint8_t *v = od_iter_value(it, &vl);
        if (kl == 17 && vl == len && memcmp(v, enc, len) == 0) {
            found = od_rbe64(k + 9);
            break;
        }
        if ((rc = od_iter_next(it, err))) break;
    }
    od_iter_free(it);
    if (rc) return rc;
    if (!found) {
        found = t->m.next_sid++;
        uint8_t hk[17], sk[9];
        memcpy(hk, pk, 9);
        od_be64(hk + 9, found);
        key_sid(sk, found);
        if (od_batch_put(b, hk, 17, enc, len) || od_batch_put(b, sk, 9, enc, len))
            return od_err_set(err, OD_NOMEM, "out of memory");
        *created = 1;
    }
    if (smap_put(&t->series, fp, found, enc, len)) return od_err_set(err, OD_NOMEM, "out of memory");
    *sid = found;
    return OD_OK;
}

/* The in-memory member set of a bucket, loading it from the 'A' fragments if needed. */
static int bucket_set(od_tsdb *t, int64_t bucket, sidset **out, od_err *err)
{
    bset *victim = &t->bsets[0];
    for (int i = 0; i < MAX_BUCKET_SETS; i++) {
        bset *s = &t->bsets[i];
        if (s->used && s->bucket == bucket) {
            s->used = ++t->clock;
            *out = &s->s;
            return OD_OK;
        }
        if (s->used < victim->used) victim = s;
    }
    free(victim->s.v);
    memset(victim, 0, sizeof *victim);
    uint8_t pk[9];
    pk[0] = OD_K_ALL;
    od_be64(pk + 1, od_bucket_key(bucket));
    od_iter *it = NULL;
    int rc = prefix_iter(t->db, NULL, pk, 9, &it, err);
    if (rc) return rc;
    od_sidvec sv = {0};
    while (rc == OD_OK && od_iter_valid(it)) {
        size_t vl;
        const uint8_t *v = od_iter_value(it, &vl);
        rc = od_postings_decode(v, vl, &sv, err);
        if (rc == OD_OK) rc = od_iter_next(it, err);
    }
    od_iter_free(it);
    for (size_t i = 0; rc == OD_OK && i < sv.n; i++)
        if (sidset_add(&victim->s, sv.v[i])) rc = od_err_set(err, OD_NOMEM, "out of memory");
    od_sidvec_free(&sv);
    if (rc) {
        free(victim->s.v);
        memset(victim, 0, sizeof *victim);
        return rc;
    }
    victim->bucket = bucket;
    victim->used = ++t->clock;
    *out = &victim->s;
    return OD_OK;
}

/* Count one fragment written to a bucket (background compaction's work list). Counting a
 * fragment of a batch that then fails only costs a pass that finds nothing to merge. */
static int dirty_add(od_tsdb *t, int64_t bucket, uint64_t n, uint64_t stamp, od_err *err)
{
    for (size_t i = t->dn; i-- > 0;)
        if (t->dv[i].bucket == bucket) {
            t->dv[i].pending += n;
            t->dv[i].touched = stamp;
            return OD_OK;
        }
    if (t->dn == t->dcap) {
        size_t nc = t->dcap ? t->dcap * 2 : 8;
        dirty *nv = realloc(t->dv, nc * sizeof *nv);
        if (!nv) return od_err_set(err, OD_NOMEM, "out of memory");
        t->dv = nv;
        t->dcap = nc;
    }
    t->dv[t->dn++] = (dirty){bucket, n, 0, 0, stamp};
    return OD_OK;
}

/* The 'D' bucket records of the buckets this batch wrote fragments to: the count of fragments
 * since the bucket's last compaction, so a writer opened later finds the work (seed_dirty). */
static int put_dirty_marks(od_tsdb *t, uint64_t stamp, od_batch *b, od_err *err)
{
    for (size_t i = 0; i < t->dn; i++) {
        if (t->dv[i].touched != stamp) continue;
        uint8_t k[9], v[8];
        key_dirty(k, t->dv[i].bucket);
        od_put_u64(v, t->dv[i].pending);
        if (od_batch_put(b, k, 9, v, 8)) return od_err_set(err, OD_NOMEM, "out of memory");
    }
    return OD_OK;
}

/* Writer start: load the 'D' records left by earlier writers into the work list, so their
 * fragments get merged without waiting for the bucket to be written again. Caller holds mu. */
static int seed_dirty(od_tsdb *t, od_err *err)
{
    uint8_t p[1] = {OD_K_DIRTY};
    od_iter *it = NULL;
    int rc = prefix_iter(t->db, NULL, p, 1, &it, err);
    while (rc == OD_OK && od_iter_valid(it)) {
        size_t kl, vl;
        const uint8_t *k = od_iter_key(it, &kl);
        const uint8_t *v = od_iter_value(it, &vl);
        if (kl != 9 || vl != 8) {
            rc = od_err_set(err, OD_CORRUPT, "tsdb: bad bucket work record (key %zu bytes, value %zu bytes)", kl, vl);
            break;
        }
        uint64_t n = od_get_u64(v);
        if ((rc = dirty_add(t, od_bucket_unkey(od_rbe64(k + 1)), n ? n : 1, 0, err))) break;
        rc = od_iter_next(it, err);
    }
    od_iter_free(it);
    return rc;
}

/* A (bucket, series) pair new to the bucket's postings in this batch. */
typedef struct newmember {
    int64_t bucket;
    uint64_t sid;
    const od_labels *ls;
} newmember;

typedef struct postent {
    int64_t bucket;
    const char *name, *value;
    uint64_t sid;
} postent;

static int postent_cmp(const void *a, const void *b)
{
    const postent *x = a, *y = b;
    if (x->bucket != y->bucket) return x->bucket < y->bucket ? -1 : 1;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    c = strcmp(x->value, y->value);
    if (c) return c;
    return x->sid < y->sid ? -1 : x->sid > y->sid;
}

/* Add the postings fragments (frag = this batch's stamp) for the new members to b. */
static int write_postings(od_tsdb *t, newmember *nm, size_t nn, uint64_t frag, od_batch *b, od_err *err)
{
    (void)t;
    if (nn == 0) return OD_OK;
    size_t total = 0;
    for (size_t i = 0; i < nn; i++) total += nm[i].ls->n + 1;
    postent *pe = malloc(total * sizeof *pe);
    if (!pe) return od_err_set(err, OD_NOMEM, "out of memory");
    size_t np = 0;
    for (size_t i = 0; i < nn; i++) {
        pe[np++] = (postent){nm[i].bucket, "", "", nm[i].sid}; /* "" name: the 'A' list */
        for (size_t j = 0; j < nm[i].ls->n; j++)
            pe[np++] = (postent){nm[i].bucket, nm[i].ls->v[j].name, nm[i].ls->v[j].value, nm[i].sid};
    }
    qsort(pe, np, sizeof *pe, postent_cmp);
    od_sidvec sv = {0};
    od_buf key = {0}, val = {0};
    int rc = OD_OK;
    for (size_t i = 0; i < np && rc == OD_OK;) {
        size_t j = i;
        sv.n = 0;
        while (j < np && pe[j].bucket == pe[i].bucket && strcmp(pe[j].name, pe[i].name) == 0 &&
               strcmp(pe[j].value, pe[i].value) == 0) {
            if (od_sidvec_push(&sv, pe[j].sid)) rc = OD_NOMEM;
            j++;
        }
        od_sidvec_normalize(&sv);
        od_buf_reset(&val);
        if (rc == OD_OK) rc = od_postings_encode(sv.v, sv.n, &val);
        if (rc == OD_OK) {
            if (pe[i].name[0] == 0) {
                uint8_t k[17];
                key_all(k, pe[i].bucket, frag);
                rc = od_batch_put(b, k, 17, val.data, val.len);
            } else {
                uint8_t f[8];
                od_be64(f, frag);
                rc = od_key_postings_prefix(&key, pe[i].bucket, pe[i].name, pe[i].value);
                if (rc == OD_OK) rc = od_buf_append(&key, f, 8);
                if (rc == OD_OK) rc = od_batch_put(b, key.data, key.len, val.data, val.len);
            }
        }
        i = j;
    }
    free(pe);
    od_sidvec_free(&sv);
    od_buf_free(&key);
    od_buf_free(&val);
    if (rc) return od_err_set(err, rc, rc == OD_NOMEM ? "out of memory" : "tsdb: cannot build postings");
    return OD_OK;
}

/* Entries with the same sid: append later samples to the first entry, re-sort (stable, so
 * the later write of a timestamp wins) and mark the later entries ok = 2 (merged). Sorting
 * (sid, index) pairs keeps this O(n log n) for big batches. */
typedef struct sididx {
    uint64_t sid;
    size_t i;
} sididx;

static int sididx_cmp(const void *a, const void *b)
{
    const sididx *x = a, *y = b;
    if (x->sid != y->sid) return x->sid < y->sid ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int merge_duplicates(const uint64_t *sids, int *ok, od_samplevec *sv, size_t n, od_err *err)
{
    sididx *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return od_err_set(err, OD_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ok[i] == 1) v[m++] = (sididx){sids[i], i};
    qsort(v, m, sizeof *v, sididx_cmp);
    int rc = OD_OK;
    for (size_t a = 0; a < m && rc == OD_OK;) {
        size_t z = a + 1;
        while (z < m && v[z].sid == v[a].sid) z++;
        if (z - a > 1) {
            od_samplevec *dst = &sv[v[a].i];
            for (size_t k = a + 1; k < z && rc == OD_OK; k++) {
                od_samplevec *src = &sv[v[k].i];
                for (size_t q = 0; q < src->n && rc == OD_OK; q++)
                    if (od_samplevec_push(dst, src->v[q])) rc = OD_NOMEM;
                ok[v[k].i] = 2;
            }
            if (rc == OD_OK && od_samples_sort_dedup(dst->v, &dst->n)) rc = OD_NOMEM;
        }
        a = z;
    }
    free(v);
    return rc ? od_err_set(err, OD_NOMEM, "out of memory") : OD_OK;
}

int od_tsdb_make_writer(od_tsdb *t, od_err *err)
{
    pthread_mutex_lock(&t->mu);
    int rc = become_writer(t, err);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int od_tsdb_append(od_tsdb *t, const od_series_in *in, size_t n, int durable, od_err *errs, od_append_result *res,
                   od_err *err)
{
    od_append_result r = {0};
    od_labels *ls = calloc(n ? n : 1, sizeof *ls);
    od_samplevec *sv = calloc(n ? n : 1, sizeof *sv);
    int *ok = calloc(n ? n : 1, sizeof *ok);
    newmember *nm = NULL;
    size_t nnm = 0, capnm = 0;
    od_batch *b = od_batch_new();
    od_buf enc = {0}, chunk = {0};
    int rc = OD_OK, locked = 0, first_bad = -1;
    uint64_t *sids = NULL;
    meta saved = {0};
    if (!ls || !sv || !ok || !b) {
        rc = od_err_set(err, OD_NOMEM, "out of memory");
        goto out;
    }
    /* 1. validate each series (no lock needed) */
    for (size_t i = 0; i < n; i++) {
        od_err e1;
        od_err_clear(&e1);
        int r1 = in[i].labels ? od_labels_copy(&ls[i], in[i].labels) : OD_OK;
        if (r1) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            goto out;
        }
        r1 = od_labels_sort(&ls[i], &e1);
        if (r1 == OD_OK) r1 = od_labels_validate(&ls[i], &e1);
        if (r1 == OD_OK && in[i].n > 0) {
            sv[i].v = malloc(in[i].n * sizeof(od_sample));
            if (!sv[i].v) {
                rc = od_err_set(err, OD_NOMEM, "out of memory");
                goto out;
            }
            memcpy(sv[i].v, in[i].samples, in[i].n * sizeof(od_sample));
            sv[i].n = sv[i].cap = in[i].n;
            if (od_samples_sort_dedup(sv[i].v, &sv[i].n)) {
                rc = od_err_set(err, OD_NOMEM, "out of memory");
                goto out;
            }
        }
        if (errs) od_err_copy(&errs[i], &e1);
        if (r1 == OD_OK) ok[i] = 1;
        else {
            r.series_rejected++;
            r.samples_rejected += in[i].n;
            if (first_bad < 0) {
                first_bad = (int)i;
                od_err_copy(err, &e1);
            }
        }
    }
    pthread_mutex_lock(&t->mu);
    locked = 1;
    if ((rc = become_writer(t, err))) goto out;
    saved = t->m;
    /* 2. retention window: relative to the newest sample, this batch included */
    {
        meta m2 = t->m;
        for (size_t i = 0; i < n; i++)
            if (ok[i] && sv[i].n && sv[i].v[sv[i].n - 1].t > m2.max_t) m2.max_t = sv[i].v[sv[i].n - 1].t;
        int64_t cut = cutoff_of(&m2);
        for (size_t i = 0; i < n; i++) {
            if (!ok[i] || sv[i].n == 0 || sv[i].v[0].t >= cut) continue;
            size_t k = 0;
            while (k < sv[i].n && sv[i].v[k].t < cut) k++;
            memmove(sv[i].v, sv[i].v + k, (sv[i].n - k) * sizeof(od_sample));
            sv[i].n -= k;
            r.samples_rejected += k;
            od_err e1;
            od_err_set(&e1, OD_BADREQ, "tsdb: %zu sample(s) of series #%zu are older than the retention window", k, i);
            if (errs) od_err_copy(&errs[i], &e1);
            if (first_bad < 0) {
                first_bad = (int)i;
                od_err_copy(err, &e1);
            }
        }
    }
    /* 3. series ids; the same series twice in a batch is merged into its first entry (the
     * later samples win on equal timestamps), since both would write the same chunk key */
    uint64_t stamp = t->m.next_stamp++;
    sids = calloc(n ? n : 1, sizeof *sids);
    if (!sids) {
        rc = od_err_set(err, OD_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ok[i]) continue;
        od_buf_reset(&enc);
        if (od_labels_encode(&ls[i], &enc)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            goto fail;
        }
        int created = 0;
        if ((rc = series_id(t, enc.data, enc.len, b, &sids[i], &created, err))) goto fail;
        r.series_ok++;
        r.series_created += (size_t)created;
        r.samples_ok += sv[i].n;
    }
    if ((rc = merge_duplicates(sids, ok, sv, n, err))) goto fail;
    if (r.series_ok == 0) { /* nothing to write */
        t->m = saved;
        if (first_bad >= 0) rc = OD_BADREQ;
        goto out;
    }
    /* 4. chunk fragments, bucket membership */
    for (size_t i = 0; i < n; i++) {
        if (ok[i] != 1) continue;
        uint64_t sid = sids[i];
        for (size_t s = 0; s < sv[i].n;) {
            int64_t bk = bucket_of(sv[i].v[s].t, t->m.bucket_ms);
            size_t e = s;
            while (e < sv[i].n && bucket_of(sv[i].v[e].t, t->m.bucket_ms) == bk) e++;
            od_buf_reset(&chunk);
            if (od_chunk_encode(sv[i].v + s, e - s, &chunk)) {
                rc = od_err_set(err, OD_NOMEM, "out of memory");
                goto fail;
            }
            uint8_t ck[25];
            key_chunk(ck, bk, sid, stamp);
            if (od_batch_put(b, ck, 25, chunk.data, chunk.len)) {
                rc = od_err_set(err, OD_NOMEM, "out of memory");
                goto fail;
            }
            if ((rc = dirty_add(t, bk, 1, stamp, err))) goto fail;
            sidset *set;
            if ((rc = bucket_set(t, bk, &set, err))) goto fail;
            if (!sidset_has(set, sid)) {
                if (nnm == capnm) {
                    size_t nc = capnm ? capnm * 2 : 64;
                    newmember *nv = realloc(nm, nc * sizeof *nv);
                    if (!nv) {
                        rc = od_err_set(err, OD_NOMEM, "out of memory");
                        goto fail;
                    }
                    nm = nv;
                    capnm = nc;
                }
                nm[nnm++] = (newmember){bk, sid, &ls[i]};
                if (sidset_add(set, sid)) {
                    rc = od_err_set(err, OD_NOMEM, "out of memory");
                    goto fail;
                }
            }
            if (sv[i].v[s].t < t->m.min_t) t->m.min_t = sv[i].v[s].t;
            if (sv[i].v[e - 1].t > t->m.max_t) t->m.max_t = sv[i].v[e - 1].t;
            s = e;
        }
    }
    if ((rc = write_postings(t, nm, nnm, stamp, b, err))) goto fail;
    if ((rc = put_dirty_marks(t, stamp, b, err))) goto fail;
    {
        uint8_t mb[META_LEN];
        meta_encode(&t->m, mb);
        if (od_batch_put(b, META_KEY, sizeof META_KEY, mb, sizeof mb)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            goto fail;
        }
    }
    if ((rc = od_db_write(t->db, b, durable, NULL, err))) {
        od_err_prefix(err, "tsdb: append");
        goto fail;
    }
    update_filter_cutoff(t);
    if (first_bad >= 0) {
        rc = OD_BADREQ;
        if (err) err->code = OD_BADREQ;
        if (r.series_rejected > 1)
            od_err_prefix(err, "tsdb: %zu of %zu series rejected (the others were written); first",
                          r.series_rejected, n);
    }
    goto out;
fail:
    /* Nothing was written: forget what this batch taught the caches. */
    t->m = saved;
    caches_drop(t);
out:
    if (locked) pthread_mutex_unlock(&t->mu);
    if (res) *res = r;
    for (size_t i = 0; ls && sv && i < n; i++) {
        od_labels_free(&ls[i]);
        od_samplevec_free(&sv[i]);
    }
    free(ls);
    free(sv);
    free(ok);
    free(sids);
    free(nm);
    od_batch_free(b);
    od_buf_free(&enc);
    od_buf_free(&chunk);
    return rc;
}

/* ---------------------------------------------------------------- reads */

struct od_tsdb_read {
    od_tsdb *t;
    od_db *db;
    od_snapshot *snap;
    meta m;
    int64_t cutoff;  /* samples with t < cutoff are hidden (retention) */
};

int od_tsdb_read_open(od_tsdb *t, od_tsdb_read **out, od_err *err)
{
    *out = NULL;
    od_tsdb_read *r = calloc(1, sizeof *r);
    if (!r) return od_err_set(err, OD_NOMEM, "out of memory");
    r->t = t;
    pthread_mutex_lock(&t->mu);
    r->db = t->db;
    int rc = od_db_snapshot(r->db, &r->snap, err);
    int64_t bms = t->m.bucket_ms;
    pthread_mutex_unlock(&t->mu);
    if (rc == OD_OK) {
        int found;
        rc = meta_read(r->db, r->snap, bms, &r->m, &found, err);
    }
    if (rc) {
        if (r->snap) od_snapshot_release(r->snap);
        free(r);
        return rc;
    }
    r->cutoff = cutoff_of(&r->m);
    *out = r;
    return OD_OK;
}

void od_tsdb_read_close(od_tsdb_read *r)
{
    if (!r) return;
    od_snapshot_release(r->snap);
    free(r);
}

typedef struct i64vec {
    int64_t *v;
    size_t n, cap;
} i64vec;

static int i64_push(i64vec *a, int64_t x)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        int64_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return OD_OK;
}

/* The non-empty buckets overlapping [mint, maxt] after clamping to the live data. */
static int list_buckets(od_tsdb_read *r, int64_t *mint, int64_t *maxt, i64vec *out, od_err *err)
{
    if (*mint < r->cutoff) *mint = r->cutoff;
    if (r->m.max_t == INT64_MIN) return OD_OK; /* empty */
    int64_t lo = *mint > r->m.min_t ? *mint : r->m.min_t;
    int64_t hi = *maxt < r->m.max_t ? *maxt : r->m.max_t;
    if (lo > hi) return OD_OK;
    int64_t blo = bucket_of(lo, r->m.bucket_ms), bhi = bucket_of(hi, r->m.bucket_ms);
    uint8_t k[9], e[9];
    k[0] = OD_K_ALL;
    od_be64(k + 1, od_bucket_key(blo));
    e[0] = OD_K_ALL;
    od_be64(e + 1, od_bucket_key(bhi) + 1);
    od_iter *it = NULL;
    int rc = od_db_iter(r->db, r->snap, k, 9, e, 9, &it, err);
    if (rc) return rc;
    while (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *key = od_iter_key(it, &kl);
        if (kl < 9) {
            rc = od_err_set(err, OD_CORRUPT, "tsdb: bad bucket key");
            break;
        }
        int64_t b = od_bucket_unkey(od_rbe64(key + 1));
        if (i64_push(out, b)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            break;
        }
        if (b >= bhi) break;
        od_be64(k + 1, od_bucket_key(b + 1));
        if ((rc = od_iter_seek(it, k, 9, err))) break;
    }
    od_iter_free(it);
    return rc;
}

/* Union of the postings fragments of every key under prefix p (keys whose value passes m, when
 * m is given; m == NULL: all keys). */
static int postings_scan(od_tsdb_read *r, const uint8_t *p, size_t pl, const od_matcher *m, od_sidvec *out,
                         od_err *err)
{
    od_iter *it = NULL;
    int rc = prefix_iter(r->db, r->snap, p, pl, &it, err);
    if (rc) return rc;
    while (od_iter_valid(it)) {
        size_t kl, vl;
        const uint8_t *k = od_iter_key(it, &kl);
        const uint8_t *v = od_iter_value(it, &vl);
        int take = 1;
        if (m) {
            int64_t b;
            const uint8_t *nm, *val;
            size_t nl, vlen;
            if (od_key_postings_parse(k, kl, &b, &nm, &nl, &val, &vlen)) {
                rc = od_err_set(err, OD_CORRUPT, "tsdb: bad postings key");
                break;
            }
            take = od_matcher_matches(m, (const char *)val, vlen);
        }
        if (take && (rc = od_postings_decode(v, vl, out, err))) break;
        if ((rc = od_iter_next(it, err))) break;
    }
    od_iter_free(it);
    od_sidvec_normalize(out);
    return rc;
}

static int bucket_candidates(od_tsdb_read *r, int64_t b, const od_matcher *ms, size_t n, od_sidvec *out,
                             od_err *err)
{
    od_buf key = {0};
    od_sidvec cur = {0}, one = {0}, tmp = {0};
    int rc = OD_OK, have = 0;
    for (size_t i = 0; i < n && rc == OD_OK; i++) {
        const od_matcher *m = &ms[i];
        if (od_matcher_matches(m, "", 0)) continue; /* not selective: checked on labels later */
        one.n = 0;
        if (m->op == OD_MATCH_EQ) {
            rc = od_key_postings_prefix(&key, b, m->name, m->value);
            if (rc == OD_OK) rc = postings_scan(r, key.data, key.len, NULL, &one, err);
        } else {
            rc = od_key_postings_name_prefix(&key, b, m->name);
            if (rc == OD_OK) rc = postings_scan(r, key.data, key.len, m, &one, err);
        }
        if (rc) break;
        if (!have) {
            od_sidvec t2 = cur;
            cur = one;
            one = t2;
            have = 1;
        } else {
            tmp.n = 0;
            if (od_sidvec_intersect(&cur, &one, &tmp)) rc = OD_NOMEM;
            od_sidvec t2 = cur;
            cur = tmp;
            tmp = t2;
        }
        if (cur.n == 0) break;
    }
    if (rc == OD_OK && !have) {
        uint8_t p[9];
        p[0] = OD_K_ALL;
        od_be64(p + 1, od_bucket_key(b));
        rc = postings_scan(r, p, 9, NULL, &cur, err);
    }
    for (size_t i = 0; rc == OD_OK && i < cur.n; i++)
        if (od_sidvec_push(out, cur.v[i])) rc = OD_NOMEM;
    if (rc == OD_NOMEM) od_err_set(err, OD_NOMEM, "out of memory");
    od_buf_free(&key);
    od_sidvec_free(&cur);
    od_sidvec_free(&one);
    od_sidvec_free(&tmp);
    return rc;
}

typedef struct sent {
    uint64_t sid;
    od_labels ls;
} sent;

struct od_series_set {
    od_tsdb_read *r;
    int64_t mint, maxt;
    i64vec buckets;
    sent *v;
    size_t n, pos; /* pos: 1 + index of the current series (0 = before the first) */
};

static int sent_cmp(const void *a, const void *b)
{
    return od_labels_cmp(&((const sent *)a)->ls, &((const sent *)b)->ls);
}

void od_series_set_free(od_series_set *ss)
{
    if (!ss) return;
    for (size_t i = 0; i < ss->n; i++) od_labels_free(&ss->v[i].ls);
    free(ss->v);
    free(ss->buckets.v);
    free(ss);
}

static int load_labels(od_tsdb_read *r, uint64_t sid, od_labels *ls, od_err *err)
{
    uint8_t k[9];
    key_sid(k, sid);
    od_buf v = {0};
    int rc = od_db_get(r->db, r->snap, k, 9, &v, err);
    if (rc == OD_NOTFOUND) rc = od_err_set(err, OD_CORRUPT, "tsdb: series %llu has postings but no labels",
                                           (unsigned long long)sid);
    if (rc == OD_OK) rc = od_labels_decode(v.data, v.len, ls, err);
    od_buf_free(&v);
    return rc;
}

int od_tsdb_select(od_tsdb_read *r, const od_matcher *ms, size_t n, int64_t mint, int64_t maxt,
                   od_series_set **out, od_err *err)
{
    *out = NULL;
    od_series_set *ss = calloc(1, sizeof *ss);
    if (!ss) return od_err_set(err, OD_NOMEM, "out of memory");
    ss->r = r;
    ss->mint = mint;
    ss->maxt = maxt;
    od_sidvec all = {0};
    int rc = list_buckets(r, &ss->mint, &ss->maxt, &ss->buckets, err);
    for (size_t i = 0; rc == OD_OK && i < ss->buckets.n; i++)
        rc = bucket_candidates(r, ss->buckets.v[i], ms, n, &all, err);
    od_sidvec_normalize(&all);
    if (rc == OD_OK && all.n) {
        ss->v = calloc(all.n, sizeof *ss->v);
        if (!ss->v) rc = od_err_set(err, OD_NOMEM, "out of memory");
    }
    for (size_t i = 0; rc == OD_OK && i < all.n; i++) {
        sent *e = &ss->v[ss->n];
        e->sid = all.v[i];
        rc = load_labels(r, e->sid, &e->ls, err);
        if (rc == OD_OK && od_matchers_match(ms, n, &e->ls)) ss->n++;
        else od_labels_free(&e->ls);
    }
    od_sidvec_free(&all);
    if (rc) {
        od_series_set_free(ss);
        return rc;
    }
    if (ss->n > 1) qsort(ss->v, ss->n, sizeof *ss->v, sent_cmp);
    *out = ss;
    return OD_OK;
}

int od_series_set_next(od_series_set *ss, const od_labels **labels, od_err *err)
{
    (void)err;
    if (ss->pos < ss->n) {
        ss->pos++;
        *labels = &ss->v[ss->pos - 1].ls;
    } else {
        ss->pos = ss->n + 1;
        *labels = NULL;
    }
    return OD_OK;
}

uint64_t od_series_set_id(const od_series_set *ss)
{
    return (ss->pos >= 1 && ss->pos <= ss->n) ? ss->v[ss->pos - 1].sid : 0;
}

size_t od_series_set_count(const od_series_set *ss) { return ss->n; }

/* ---- samples ---- */

struct od_sample_iter {
    od_tsdb_read *r;
    uint64_t sid;
    int64_t mint, maxt;
    int64_t *buckets;
    size_t nb, bi;   /* bi: next bucket to load */
    od_samplevec cur;
    size_t pos;
};

/* Load the samples of one bucket of the series into it->cur (merged, filtered). */
static int load_bucket(od_sample_iter *it, int64_t b, od_err *err)
{
    uint8_t p[17];
    p[0] = OD_K_CHUNK;
    od_be64(p + 1, od_bucket_key(b));
    od_be64(p + 9, it->sid);
    it->cur.n = 0;
    it->pos = 0;
    od_iter *dit = NULL;
    int rc = prefix_iter(it->r->db, it->r->snap, p, 17, &dit, err);
    if (rc) return rc;
    int frags = 0;
    while (od_iter_valid(dit)) {
        size_t vl;
        const uint8_t *v = od_iter_value(dit, &vl);
        if ((rc = od_chunk_decode(v, vl, &it->cur, err))) {
            od_err_prefix(err, "tsdb: series %llu bucket %lld", (unsigned long long)it->sid, (long long)b);
            break;
        }
        frags++;
        if ((rc = od_iter_next(dit, err))) break;
    }
    od_iter_free(dit);
    if (rc) return rc;
    if (frags > 1 && od_samples_sort_dedup(it->cur.v, &it->cur.n)) return od_err_set(err, OD_NOMEM, "out of memory");
    /* keep [mint, maxt] (samples are sorted: nothing to do when both ends are inside) */
    if (it->cur.n == 0 || (it->cur.v[0].t >= it->mint && it->cur.v[it->cur.n - 1].t <= it->maxt)) return OD_OK;
    size_t w = 0;
    for (size_t i = 0; i < it->cur.n; i++)
        if (it->cur.v[i].t >= it->mint && it->cur.v[i].t <= it->maxt) it->cur.v[w++] = it->cur.v[i];
    it->cur.n = w;
    return OD_OK;
}

/* Advance to the next bucket that has samples (cur empty at the end). */
static int fill(od_sample_iter *it, od_err *err)
{
    while (it->pos >= it->cur.n && it->bi < it->nb) {
        int rc = load_bucket(it, it->buckets[it->bi++], err);
        if (rc) {
            it->cur.n = 0;
            it->bi = it->nb;
            return rc;
        }
    }
    return OD_OK;
}

int od_series_set_samples(od_series_set *ss, od_sample_iter **out, od_err *err)
{
    *out = NULL;
    if (ss->pos < 1 || ss->pos > ss->n) return od_err_set(err, OD_BADREQ, "tsdb: series set is not on a series");
    od_sample_iter *it = calloc(1, sizeof *it);
    if (!it) return od_err_set(err, OD_NOMEM, "out of memory");
    it->r = ss->r;
    it->sid = ss->v[ss->pos - 1].sid;
    it->mint = ss->mint;
    it->maxt = ss->maxt;
    if (ss->buckets.n) {
        it->buckets = malloc(ss->buckets.n * sizeof *it->buckets);
        if (!it->buckets) {
            free(it);
            return od_err_set(err, OD_NOMEM, "out of memory");
        }
        memcpy(it->buckets, ss->buckets.v, ss->buckets.n * sizeof *it->buckets);
        it->nb = ss->buckets.n;
    }
    int rc = fill(it, err);
    if (rc) {
        od_sample_iter_free(it);
        return rc;
    }
    *out = it;
    return OD_OK;
}

int od_sample_iter_valid(const od_sample_iter *it) { return it->pos < it->cur.n; }

od_sample od_sample_iter_at(const od_sample_iter *it) { return it->cur.v[it->pos]; }

int od_sample_iter_next(od_sample_iter *it, od_err *err)
{
    if (it->pos < it->cur.n) it->pos++;
    return fill(it, err);
}

void od_sample_iter_block(const od_sample_iter *it, const od_sample **v, size_t *n)
{
    *v = it->cur.v + it->pos;
    *n = it->pos < it->cur.n ? it->cur.n - it->pos : 0;
}

int od_sample_iter_advance(od_sample_iter *it, size_t k, od_err *err)
{
    size_t left = it->pos < it->cur.n ? it->cur.n - it->pos : 0;
    it->pos += k < left ? k : left;
    return fill(it, err);
}

int od_sample_iter_seek(od_sample_iter *it, int64_t ts, od_err *err)
{
    for (;;) {
        if (it->pos < it->cur.n) {
            if (it->cur.v[it->cur.n - 1].t >= ts) {
                /* binary search in the current bucket */
                size_t lo = it->pos, hi = it->cur.n - 1;
                while (lo < hi) {
                    size_t mid = lo + (hi - lo) / 2;
                    if (it->cur.v[mid].t < ts) lo = mid + 1;
                    else hi = mid;
                }
                it->pos = lo;
                return OD_OK;
            }
            it->pos = it->cur.n;
        }
        /* skip whole buckets that end before ts without reading them */
        while (it->bi < it->nb && bucket_end(it->buckets[it->bi], it->r->m.bucket_ms) < ts) it->bi++;
        if (it->bi >= it->nb) return OD_OK;
        int rc = fill(it, err);
        if (rc || it->pos >= it->cur.n) return rc;
    }
}

void od_sample_iter_free(od_sample_iter *it)
{
    if (!it) return;
    od_samplevec_free(&it->cur);
    free(it->buckets);
    free(it);
}

/* ---- label names and values ---- */

static int strlist_push(od_strlist *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        l->v = nv;
        l->cap = nc;
    }
    char *c = malloc(n + 1);
    if (!c) return OD_NOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    l->v[l->n++] = c;
    return OD_OK;
}

static int pstrcmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void strlist_normalize(od_strlist *l)
{
    if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, pstrcmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w > 0 && strcmp(l->v[w - 1], l->v[i]) == 0) free(l->v[i]);
        else l->v[w++] = l->v[i];
    }
    l->n = w;
}

/* Walk distinct names (value_of == NULL) or distinct values of one name in the postings of a
 * bucket, seeking past each one so a name/value costs one step, not one per fragment. */
static int scan_distinct(od_tsdb_read *r, int64_t b, const char *value_of, od_strlist *out, od_err *err)
{
    od_buf pre = {0}, seek = {0};
    int rc;
    if (value_of) rc = od_key_postings_name_prefix(&pre, b, value_of);
    else {
        uint8_t p[9];
        p[0] = OD_K_POST;
        od_be64(p + 1, od_bucket_key(b));
        rc = od_buf_append(&pre, p, 9);
    }
    od_iter *it = NULL;
    if (rc == OD_OK) rc = prefix_iter(r->db, r->snap, pre.data, pre.len, &it, err);
    else od_err_set(err, OD_NOMEM, "out of memory");
    while (rc == OD_OK && od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        int64_t kb;
        const uint8_t *nm, *val;
        size_t nl, vl;
        if (od_key_postings_parse(k, kl, &kb, &nm, &nl, &val, &vl)) {
            rc = od_err_set(err, OD_CORRUPT, "tsdb: bad postings key");
            break;
        }
        size_t plen = value_of ? (size_t)(val + vl - k) : (size_t)(nm + nl - k);
        if (value_of ? strlist_push(out, (const char *)val, vl) : strlist_push(out, (const char *)nm, nl)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            break;
        }
        od_buf_reset(&seek);
        if (od_buf_reserve(&seek, plen)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            break;
        }
        /* the successor of "kind bucket len name [len value]" is past every key of this
         * name (or name=value): one seek per distinct entry instead of one step per fragment */
        size_t sl = prefix_end(k, plen, seek.data);
        if (sl == 0) break;
        rc = od_iter_seek(it, seek.data, sl, err);
    }
    od_iter_free(it);
    od_buf_free(&pre);
    od_buf_free(&seek);
    return rc;
}

static int labels_via_select(od_tsdb_read *r, const char *name, const od_matcher *ms, size_t n, int64_t mint,
                             int64_t maxt, od_strlist *out, od_err *err)
{
    od_series_set *ss;
    int rc = od_tsdb_select(r, ms, n, mint, maxt, &ss, err);
    if (rc) return rc;
    for (size_t i = 0; i < ss->n && rc == OD_OK; i++) {
        const od_labels *ls = &ss->v[i].ls;
        if (name) {
            const char *v = od_labels_get(ls, name);
            if (v && strlist_push(out, v, strlen(v))) rc = od_err_set(err, OD_NOMEM, "out of memory");
        } else {
            for (size_t j = 0; j < ls->n && rc == OD_OK; j++)
                if (strlist_push(out, ls->v[j].name, strlen(ls->v[j].name)))
                    rc = od_err_set(err, OD_NOMEM, "out of memory");
        }
    }
    od_series_set_free(ss);
    return rc;
}

static int label_query(od_tsdb_read *r, const char *name, const od_matcher *ms, size_t n, int64_t mint,
                       int64_t maxt, od_strlist *out, od_err *err)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (n > 0) {
        rc = labels_via_select(r, name, ms, n, mint, maxt, out, err);
    } else {
        i64vec bk = {0};
        rc = list_buckets(r, &mint, &maxt, &bk, err);
        for (size_t i = 0; rc == OD_OK && i < bk.n; i++) rc = scan_distinct(r, bk.v[i], name, out, err);
        free(bk.v);
    }
    if (rc) {
        od_strlist_free(out);
        return rc;
    }
    strlist_normalize(out);
    return OD_OK;
}

int od_tsdb_label_names(od_tsdb_read *r, const od_matcher *ms, size_t n, int64_t mint, int64_t maxt,
                        od_strlist *out, od_err *err)
{
    return label_query(r, NULL, ms, n, mint, maxt, out, err);
}

int od_tsdb_label_values(od_tsdb_read *r, const char *name, const od_matcher *ms, size_t n, int64_t mint,
                         int64_t maxt, od_strlist *out, od_err *err)
{
    return label_query(r, name, ms, n, mint, maxt, out, err);
}

/* ---- stats ---- */

static int sum_prefix(od_tsdb_read *r, const uint8_t *p, size_t pl, od_tsdb_bucket_stats *st, int chunks,
                      od_err *err)
{
    od_iter *it = NULL;
    int rc = prefix_iter(r->db, r->snap, p, pl, &it, err);
    if (rc) return rc;
    uint64_t last_sid = 0;
    while (od_iter_valid(it)) {
        size_t kl, vl;
        const uint8_t *k = od_iter_key(it, &kl);
        const uint8_t *v = od_iter_value(it, &vl);
        if (chunks) {
            size_t ns = 0;
            if ((rc = od_chunk_info(v, vl, &ns, err))) break;
            st->chunks++;
            st->samples += ns;
            st->chunk_bytes += kl + vl;
            uint64_t sid = kl >= 17 ? od_rbe64(k + 9) : 0;
            if (sid != last_sid) st->series++;
            last_sid = sid;
        } else {
            st->index_bytes += kl + vl;
        }
        if ((rc = od_iter_next(it, err))) break;
    }
    od_iter_free(it);
    return rc;
}

int od_tsdb_stats(od_tsdb_read *r, od_tsdb_bucket_stats **out, size_t *n, od_err *err)
{
    *out = NULL;
    *n = 0;
    i64vec bk = {0};
    int64_t mint = INT64_MIN, maxt = INT64_MAX;
    int rc = list_buckets(r, &mint, &maxt, &bk, err);
    od_tsdb_bucket_stats *st = NULL;
    if (rc == OD_OK && bk.n) {
        st = calloc(bk.n, sizeof *st);
        if (!st) rc = od_err_set(err, OD_NOMEM, "out of memory");
    }
    for (size_t i = 0; rc == OD_OK && i < bk.n; i++) {
        st[i].mint = bucket_start(bk.v[i], r->m.bucket_ms);
        st[i].maxt = bucket_end(bk.v[i], r->m.bucket_ms);
        uint8_t p[9];
        od_be64(p + 1, od_bucket_key(bk.v[i]));
        p[0] = OD_K_CHUNK;
        rc = sum_prefix(r, p, 9, &st[i], 1, err);
        p[0] = OD_K_POST;
        if (rc == OD_OK) rc = sum_prefix(r, p, 9, &st[i], 0, err);
        p[0] = OD_K_ALL;
        if (rc == OD_OK) rc = sum_prefix(r, p, 9, &st[i], 0, err);
    }
    if (rc) {
        free(st);
        free(bk.v);
        return rc;
    }
    *out = st;
    *n = bk.n;
    free(bk.v);
    return OD_OK;
}

/* ---------------------------------------------------------------- compaction */

#define COMPACT_BATCH_BYTES (4u << 20)

typedef struct compactor {
    od_tsdb *t;
    od_batch *b;
    od_err *err;
    int64_t bucket_ms;
    uint64_t read;    /* chunk entries read */
    uint64_t merged;  /* fragments merged away */
} compactor;

static int cflush(compactor *c, int force)
{
    if (od_batch_count(c->b) == 0) return OD_OK;
    if (!force && od_batch_bytes(c->b) < COMPACT_BATCH_BYTES) return OD_OK;
    int rc = od_db_write(c->t->db, c->b, 0, NULL, c->err);
    od_batch_clear(c->b);
    return rc;
}

/* Delete every key under a prefix (a bucket out of retention). */
static int delete_prefix(compactor *c, const od_snapshot *snap, const uint8_t *p, size_t pl)
{
    od_iter *it = NULL;
    int rc = prefix_iter(c->t->db, snap, p, pl, &it, c->err);
    if (rc) return rc;
    while (rc == OD_OK && od_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = od_iter_key(it, &kl);
        if (od_batch_delete(c->b, k, kl)) rc = od_err_set(c->err, OD_NOMEM, "out of memory");
        if (rc == OD_OK) rc = cflush(c, 0);
        if (rc == OD_OK) rc = od_iter_next(it, c->err);
    }
    od_iter_free(it);
    return rc;
}

/* Merge the chunk fragments of each series in a bucket into one long chunk (stamp 0),
 * starting at series start_sid. With budget > 0, stop at the first series boundary after
 * `budget` chunk entries were read and set *next_sid to the series to resume at (0 when the
 * bucket is done). A series with one fragment (and nothing to cut) is skipped undecoded.
 * Each series' rewrite (deletes of the fragments read + the new stamp-0 chunk) goes into one
 * engine batch, so any snapshot sees either the fragments or the merged chunk, never a mix;
 * fragments written after `snap` (later stamps) are not touched and still win. */
static int compact_chunks(compactor *c, const od_snapshot *snap, int64_t b, int64_t cutoff, uint64_t start_sid,
                          uint64_t budget, uint64_t *next_sid)
{
    uint8_t p[9], lo[17];
    p[0] = OD_K_CHUNK;
    od_be64(p + 1, od_bucket_key(b));
    memcpy(lo, p, 9);
    od_be64(lo + 9, start_sid);
    uint8_t hi[9];
    size_t hn = prefix_end(p, 9, hi);
    od_iter *it = NULL;
    int rc = od_db_iter(c->t->db, snap, lo, 17, hn ? hi : NULL, hn, &it, c->err);
    if (rc) return rc;
    od_samplevec sv = {0};
    od_buf keys = {0}, raw = {0}, chunk = {0};
    size_t nfrag = 0;
    uint64_t cur = 0, read = 0;
    int cut_applies = cutoff > bucket_start(b, c->bucket_ms);
    if (next_sid) *next_sid = 0;
    for (;;) {
        int valid = od_iter_valid(it);
        size_t kl = 0, vl = 0;
        const uint8_t *k = valid ? od_iter_key(it, &kl) : NULL;
        const uint8_t *v = valid ? od_iter_value(it, &vl) : NULL;
        uint64_t sid = (valid && kl == 25) ? od_rbe64(k + 9) : 0;
        if (nfrag && (!valid || sid != cur)) {
            /* finish series `cur` */
            if (nfrag > 1 || cut_applies) {
                sv.n = 0;
                for (size_t off = 0; rc == OD_OK && off < raw.len;) {
                    uint32_t l = od_get_u32(raw.data + off);
                    rc = od_chunk_decode(raw.data + off + 4, l, &sv, c->err);
                    off += 4 + (size_t)l;
                }
                if (rc) break;
                size_t before = sv.n;
                if (od_samples_sort_dedup(sv.v, &sv.n)) rc = OD_NOMEM;
                size_t w = 0;
                for (size_t i = 0; i < sv.n; i++)
                    if (sv.v[i].t >= cutoff) sv.v[w++] = sv.v[i];
                sv.n = w;
                if (rc == OD_OK && (nfrag > 1 || sv.n != before)) {
                    for (size_t off = 0; rc == OD_OK && off < keys.len; off += 25) /* stamp 0 is rewritten */
                        if (od_rbe64(keys.data + off + 17) != 0 && od_batch_delete(c->b, keys.data + off, 25))
                            rc = OD_NOMEM;
                    if (rc == OD_OK && sv.n == 0) {
                        uint8_t ck[25];
                        key_chunk(ck, b, cur, 0);
                        if (od_batch_delete(c->b, ck, 25)) rc = OD_NOMEM;
                    }
                    if (rc == OD_OK && sv.n) {
                        uint8_t ck[25];
                        key_chunk(ck, b, cur, 0);
                        od_buf_reset(&chunk);
                        if (od_chunk_encode(sv.v, sv.n, &chunk) || od_batch_put(c->b, ck, 25, chunk.data, chunk.len))
                            rc = OD_NOMEM;
                    }
                    c->merged += nfrag - (sv.n ? 1 : 0);
                }
                if (rc) {
                    od_err_set(c->err, rc, "out of memory");
                    break;
                }
                if ((rc = cflush(c, 0))) break;
            }
            od_buf_reset(&keys);
            od_buf_reset(&raw);
            nfrag = 0;
            if (valid && budget && read >= budget) {
                if (next_sid) *next_sid = sid;
                break;
            }
        }
        if (!valid) break;
        if (kl != 25) {
            rc = od_err_set(c->err, OD_CORRUPT, "tsdb: bad chunk key");
            break;
        }
        cur = sid;
        uint8_t lb[4];
        od_put_u32(lb, (uint32_t)vl);
        if (od_buf_append(&keys, k, 25) || od_buf_append(&raw, lb, 4) || od_buf_append(&raw, v, vl)) {
            rc = od_err_set(c->err, OD_NOMEM, "out of memory");
            break;
        }
        nfrag++;
        read++;
        if ((rc = od_iter_next(it, c->err))) break;
    }
    c->read += read;
    od_iter_free(it);
    od_samplevec_free(&sv);
    od_buf_free(&keys);
    od_buf_free(&raw);
    od_buf_free(&chunk);
    return rc;
}

/* Merge postings fragments: keys that differ only in the trailing 8-byte frag. */
static int compact_postings(compactor *c, const od_snapshot *snap, uint8_t kind, int64_t b)
{
    uint8_t p[9];
    p[0] = kind;
    od_be64(p + 1, od_bucket_key(b));
    od_iter *it = NULL;
    int rc = prefix_iter(c->t->db, snap, p, 9, &it, c->err);
    if (rc) return rc;
    od_sidvec sv = {0};
    od_buf group = {0}, keys = {0}, val = {0};
    size_t nfrag = 0;
    for (;;) {
        int valid = od_iter_valid(it);
        size_t kl = 0, vl = 0;
        const uint8_t *k = valid ? od_iter_key(it, &kl) : NULL;
        const uint8_t *v = valid ? od_iter_value(it, &vl) : NULL;
        if (valid && kl < 17) {
            rc = od_err_set(c->err, OD_CORRUPT, "tsdb: bad postings key");
            break;
        }
        int same = valid && nfrag && group.len == kl - 8 && memcmp(group.data, k, kl - 8) == 0;
        if (nfrag && !same) {
            if (nfrag > 1) {
                od_sidvec_normalize(&sv);
                od_buf_reset(&val);
                size_t klen = group.len + 8;
                for (size_t off = 0; rc == OD_OK && off < keys.len; off += klen) /* frag 0 is rewritten */
                    if (od_rbe64(keys.data + off + klen - 8) != 0 && od_batch_delete(c->b, keys.data + off, klen))
                        rc = OD_NOMEM;
                uint8_t zero[8] = {0};
                if (rc == OD_OK && (od_postings_encode(sv.v, sv.n, &val) || od_buf_append(&group, zero, 8) ||
                                    od_batch_put(c->b, group.data, group.len, val.data, val.len)))
                    rc = OD_NOMEM;
                if (rc) {
                    od_err_set(c->err, rc, "out of memory");
                    break;
                }
                if ((rc = cflush(c, 0))) break;
            }
            sv.n = 0;
            nfrag = 0;
            od_buf_reset(&keys);
        }
        if (!valid) break;
        if (nfrag == 0) {
            od_buf_reset(&group);
            if (od_buf_append(&group, k, kl - 8)) {
                rc = od_err_set(c->err, OD_NOMEM, "out of memory");
                break;
            }
        }
        if ((rc = od_postings_decode(v, vl, &sv, c->err))) break;
        if (od_buf_append(&keys, k, kl)) {
            rc = od_err_set(c->err, OD_NOMEM, "out of memory");
            break;
        }
        nfrag++;
        if ((rc = od_iter_next(it, c->err))) break;
    }
    od_iter_free(it);
    od_sidvec_free(&sv);
    od_buf_free(&group);
    od_buf_free(&keys);
    od_buf_free(&val);
    return rc;
}

int od_tsdb_compact(od_tsdb *t, od_err *err)
{
    pthread_mutex_lock(&t->cmu);
    pthread_mutex_lock(&t->mu);
    int rc = become_writer(t, err);
    if (rc) {
        pthread_mutex_unlock(&t->mu);
        pthread_mutex_unlock(&t->cmu);
        return rc;
    }
    compactor c = {t, od_batch_new(), err, t->m.bucket_ms, 0, 0};
    od_snapshot *snap = NULL;
    i64vec bk = {0};
    if (!c.b) rc = od_err_set(err, OD_NOMEM, "out of memory");
    if (rc == OD_OK) rc = od_db_snapshot(t->db, &snap, err);
    int64_t cutoff = cutoff_of(&t->m);
    /* every bucket, including expired ones */
    if (rc == OD_OK) {
        uint8_t k[1] = {OD_K_ALL}, e[1] = {OD_K_ALL + 1};
        od_iter *it = NULL;
        rc = od_db_iter(t->db, snap, k, 1, e, 1, &it, err);
        int64_t last = 0;
        int have = 0;
        while (rc == OD_OK && od_iter_valid(it)) {
            size_t kl;
            const uint8_t *key = od_iter_key(it, &kl);
            if (kl >= 9) {
                int64_t b = od_bucket_unkey(od_rbe64(key + 1));
                if (!have || b != last) {
                    if (i64_push(&bk, b)) rc = od_err_set(err, OD_NOMEM, "out of memory");
                    last = b;
                    have = 1;
                }
            }
            if (rc == OD_OK) rc = od_iter_next(it, err);
        }
        od_iter_free(it);
    }
    for (size_t i = 0; rc == OD_OK && i < bk.n; i++) {
        int64_t b = bk.v[i];
        if (cutoff != INT64_MIN && bucket_end(b, t->m.bucket_ms) < cutoff) {
            uint8_t p[9];
            od_be64(p + 1, od_bucket_key(b));
            p[0] = OD_K_CHUNK;
            rc = delete_prefix(&c, snap, p, 9);
            p[0] = OD_K_POST;
            if (rc == OD_OK) rc = delete_prefix(&c, snap, p, 9);
            p[0] = OD_K_ALL; /* last: it is how buckets are found */
            if (rc == OD_OK) rc = cflush(&c, 1);
            if (rc == OD_OK) rc = delete_prefix(&c, snap, p, 9);
            /* forget the in-memory member set of the bucket */
            for (int j = 0; j < MAX_BUCKET_SETS; j++)
                if (t->bsets[j].used && t->bsets[j].bucket == b) {
                    free(t->bsets[j].s.v);
                    memset(&t->bsets[j], 0, sizeof t->bsets[j]);
                }
            continue;
        }
        rc = compact_chunks(&c, snap, b, cutoff, 0, 0, NULL);
        if (rc == OD_OK) rc = compact_postings(&c, snap, OD_K_POST, b);
        if (rc == OD_OK) rc = compact_postings(&c, snap, OD_K_ALL, b);
    }
    if (rc == OD_OK) {
        /* every bucket is merged now: no work is left for the background compaction */
        uint8_t p[1] = {OD_K_DIRTY};
        rc = delete_prefix(&c, snap, p, 1);
    }
    if (rc == OD_OK) rc = cflush(&c, 1);
    if (snap) od_snapshot_release(snap);
    od_batch_free(c.b);
    free(bk.v);
    if (rc == OD_OK) rc = od_db_flush(t->db, 1, err);
    if (rc == OD_OK) rc = od_db_compact(t->db, err);
    if (rc == OD_OK) t->dn = 0; /* appends waited on mu: every bucket is merged now */
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&t->cmu);
    if (rc) od_err_prefix(err, "tsdb: compact");
    return rc;
}

/* ---------------------------------------------------------------- background compaction */

/* Pick the next bucket to work on (caller holds mu): a round in progress first, then the
 * oldest bucket that is not the newest one, then the newest one when it has at least
 * compact_fragments fragments per series pending. Entries of buckets out of retention are
 * dropped (the engine's compaction filter and od_tsdb_compact reclaim those). -1: none. */
static long pick_dirty(od_tsdb *t)
{
    int64_t cutoff = cutoff_of(&t->m);
    int64_t head = t->m.max_t == INT64_MIN ? INT64_MAX : bucket_of(t->m.max_t, t->m.bucket_ms);
    for (size_t i = 0; i < t->dn;) {
        if (cutoff != INT64_MIN && bucket_end(t->dv[i].bucket, t->m.bucket_ms) < cutoff) {
            t->dv[i] = t->dv[--t->dn];
            continue;
        }
        i++;
    }
    long best = -1;
    for (size_t i = 0; i < t->dn; i++) {
        const dirty *d = &t->dv[i];
        if (d->resume_sid) return (long)i;
        if (d->bucket >= head) {
            uint64_t series = 1;
            for (int j = 0; j < MAX_BUCKET_SETS; j++)
                if (t->bsets[j].used && t->bsets[j].bucket == d->bucket && t->bsets[j].s.n) series = t->bsets[j].s.n;
            uint64_t k = t->opts.compact_fragments ? t->opts.compact_fragments : 1;
            if (d->pending < k * series) continue;
        }
        if (best < 0 || d->bucket < t->dv[best].bucket) best = (long)i;
    }
    return best;
}

int od_tsdb_compact_step(od_tsdb *t, uint64_t *merged, od_err *err)
{
    if (merged) *merged = 0;
    pthread_mutex_lock(&t->cmu);
    pthread_mutex_lock(&t->mu);
    int writer = t->writer;
    od_db *db = t->db;
    int64_t bms = t->m.bucket_ms;
    pthread_mutex_unlock(&t->mu);
    if (!writer) {
        pthread_mutex_unlock(&t->cmu);
        return OD_OK;
    }
    uint64_t budget = t->opts.compact_budget ? t->opts.compact_budget : 262144;
    compactor c = {t, od_batch_new(), err, bms, 0, 0};
    int rc = c.b ? OD_OK : od_err_set(err, OD_NOMEM, "out of memory");
    int worked = 0;
    while (rc == OD_OK && c.read < budget) {
        /* choose under mu; the merge itself runs without it (appends go on) */
        pthread_mutex_lock(&t->mu);
        long i = pick_dirty(t);
        int64_t b = 0, cutoff = cutoff_of(&t->m);
        uint64_t start = 0;
        if (i >= 0) {
            dirty *d = &t->dv[i];
            if (d->resume_sid == 0) d->round = d->pending;
            b = d->bucket;
            start = d->resume_sid;
        }
        pthread_mutex_unlock(&t->mu);
        if (i < 0) break;
        worked = 1;
        od_snapshot *snap = NULL;
        uint64_t next = 0;
        rc = od_db_snapshot(db, &snap, err);
        if (rc == OD_OK) rc = compact_chunks(&c, snap, b, cutoff, start, budget - c.read, &next);
        if (rc == OD_OK && next == 0) rc = compact_postings(&c, snap, OD_K_POST, b);
        if (rc == OD_OK && next == 0) rc = compact_postings(&c, snap, OD_K_ALL, b);
        if (rc == OD_OK) rc = cflush(&c, 1);
        if (snap) od_snapshot_release(snap);
        if (rc) break;
        pthread_mutex_lock(&t->mu);
        for (size_t j = 0; j < t->dn; j++) {
            dirty *d = &t->dv[j];
            if (d->bucket != b) continue;
            if (next) {
                d->resume_sid = next;
            } else {
                /* fragments counted after the round began stay pending (conservative) */
                d->pending = d->pending > d->round ? d->pending - d->round : 0;
                d->round = 0;
                d->resume_sid = 0;
                if (d->pending == 0) {
                    /* nothing was written to the bucket since the round began (appends write
                     * under mu too, so a later one puts its record back after this delete) */
                    uint8_t k[9];
                    key_dirty(k, b);
                    t->dv[j] = t->dv[--t->dn];
                    od_batch_clear(c.b);
                    rc = od_batch_delete(c.b, k, 9) ? od_err_set(err, OD_NOMEM, "out of memory")
                                                    : od_db_write(db, c.b, 0, NULL, err);
                    od_batch_clear(c.b);
                }
            }
            break;
        }
        pthread_mutex_unlock(&t->mu);
    }
    od_batch_free(c.b);
    pthread_mutex_lock(&t->mu);
    if (worked && c.merged) t->bg_passes++;
    t->bg_merged += c.merged;
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&t->cmu);
    if (merged) *merged = c.merged;
    if (rc) od_err_prefix(err, "tsdb: background compaction");
    return rc;
}

static void *bg_main(void *arg)
{
    od_tsdb *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->bg_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (t->opts.compact_interval_ms % 1000) * 1000000LL;
        ts.tv_sec += (time_t)(t->opts.compact_interval_ms / 1000) + (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        while (!t->bg_stop && pthread_cond_timedwait(&t->bg_cv, &t->mu, &ts) == 0) {
        }
        if (t->bg_stop) break;
        pthread_mutex_unlock(&t->mu);
        /* a failed pass (e.g. a store error) is retried at the next wake-up; the data stays
         * correct either way (fragments are only deleted together with their merge) */
        (void)od_tsdb_compact_step(t, NULL, NULL);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}
