/*
 * block_cache.c — the process-wide cache of decoded SST blocks (od_block_cache in od_db.h,
 * lookup/insert/release in od_sst.h).
 *
 * Owns: every cached block (its bytes and its entry), until evicted and no longer referenced.
 *
 * How it works. 16 shards, each a mutex, a chained hash table keyed by (cache id, offset) and
 * an LRU list; a block goes to shard (hash >> 60), so threads reading different blocks rarely
 * meet on one lock. Each shard may hold capacity/16 bytes, charged as block length plus the
 * entry's own size. An entry carries an atomic reference count: the cache holds one reference
 * while the entry is in the table, and every lookup/insert hands the caller another (under the
 * lock); a release only decrements (no lock: one lock round trip per get saved). Eviction (from
 * the LRU tail, when a shard is over its budget after an insert) only unlinks the entry and
 * drops the cache's reference, so a block a reader still holds stays valid until that reader
 * releases it; whoever drops the last reference frees it (outside the lock).
 *
 * The LRU is approximate in one way: a hit moves its entry to the front only when the entry
 * has not been moved during the last count/4 inserts into its shard. Relinking touches two
 * neighbouring entries (two cache misses on a big cache) and a hot block would be relinked on
 * every hit for nothing; an entry that is hit at least once per quarter of the shard's turnover
 * still never reaches the tail.
 *
 * Layout of an entry:  [od_cblock pub | id | off | charge | refs | in_cache | hnext | prev | next]
 * `pub` is first so the od_cblock * handed out converts back to the entry.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "od_db.h"
#include "od_sst.h"

#define NSHARDS 16

typedef struct centry {
    od_cblock pub;
    uint64_t id, off;
    size_t charge;
    _Atomic uint64_t refs; /* taken under the shard lock (lookup/insert), dropped without it */
    uint64_t tick;  /* shard->inserts when last moved to the front */
    int in_cache;
    struct centry *hnext;
    struct centry *prev, *next; /* LRU: sentinel.next is the most recently used */
} centry;

typedef struct shard {
    pthread_mutex_t mu;
    centry **tab;
    size_t tabsize; /* power of two */
    size_t count;
    centry lru;     /* sentinel */
    size_t used, cap;
    uint64_t inserts;
    uint64_t hits, misses;
    char pad[64];
} shard;

struct od_block_cache {
    shard shards[NSHARDS];
    size_t capacity;
};

static inline uint64_t hkey(uint64_t id, uint64_t off)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull ^ (off + 0x632be59bd9b4e019ull);
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

od_block_cache *od_block_cache_new(size_t capacity_bytes)
{
    od_block_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->capacity = capacity_bytes;
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &c->shards[i];
        s->tabsize = 256;
        s->tab = calloc(s->tabsize, sizeof *s->tab);
        if (!s->tab || pthread_mutex_init(&s->mu, NULL) != 0) {
            free(s->tab);
            for (int j = 0; j < i; j++) {
                free(c->shards[j].tab);
                pthread_mutex_destroy(&c->shards[j].mu);
            }
            free(c);
            return NULL;
        }
        s->lru.next = s->lru.prev = &s->lru;
        s->cap = capacity_bytes / NSHARDS;
    }
    return c;
}

void od_block_cache_free(od_block_cache *c)
{
    if (!c) return;
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &c->shards[i];
        for (centry *e = s->lru.next; e != &s->lru;) {
            centry *n = e->next;
            free((void *)e->pub.data);
            free(e);
            e = n;
        }
        free(s->tab);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

static inline shard *shard_of(od_block_cache *c, uint64_t h) { return &c->shards[h >> 60]; }

static centry **find(shard *s, uint64_t h, uint64_t id, uint64_t off)
{
    centry **pp = &s->tab[h & (s->tabsize - 1)];
    while (*pp && ((*pp)->id != id || (*pp)->off != off)) pp = &(*pp)->hnext;
    return pp;
}

static void lru_unlink(centry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push_front(shard *s, centry *e)
{
    e->next = s->lru.next;
    e->prev = &s->lru;
    s->lru.next->prev = e;
    s->lru.next = e;
}

static void grow(shard *s)
{
    size_t ns = s->tabsize * 2;
    centry **nt = calloc(ns, sizeof *nt);
    if (!nt) return; /* keep the old table: longer chains, still correct */
    for (size_t i = 0; i < s->tabsize; i++) {
        for (centry *e = s->tab[i]; e;) {
            centry *n = e->hnext;
            size_t b = hkey(e->id, e->off) & (ns - 1);
            e->hnext = nt[b];
            nt[b] = e;
            e = n;
        }
    }
    free(s->tab);
    s->tab = nt;
    s->tabsize = ns;
}

od_cblock *od_block_cache_lookup(od_block_cache *c, uint64_t id, uint64_t off)
{
    uint64_t h = hkey(id, off);
    shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    centry *e = *find(s, h, id, off);
    if (e) {
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        if (s->inserts - e->tick > s->count / 4) {
            lru_unlink(e);
            lru_push_front(s, e);
            e->tick = s->inserts;
        }
        s->hits++;
    } else {
        s->misses++;
    }
    pthread_mutex_unlock(&s->mu);
    return e ? &e->pub : NULL;
}

od_cblock *od_block_cache_insert(od_block_cache *c, uint64_t id, uint64_t off, uint8_t *data, size_t len)
{
    uint64_t h = hkey(id, off);
    shard *s = shard_of(c, h);
    centry *ne = malloc(sizeof *ne);
    if (!ne) {
        free(data);
        return NULL;
    }
    centry *dead = NULL; /* evicted entries with no reference left, freed after unlocking */
    pthread_mutex_lock(&s->mu);
    centry **pp = find(s, h, id, off);
    if (*pp) { /* another thread inserted it first: use theirs */
        centry *e = *pp;
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        lru_unlink(e);
        lru_push_front(s, e);
        pthread_mutex_unlock(&s->mu);
        free(ne);
        free(data);
        return &e->pub;
    }
    ne->pub.data = data;
    ne->pub.len = len;
    ne->id = id;
    ne->off = off;
    ne->charge = len + sizeof *ne;
    atomic_init(&ne->refs, 2); /* the cache's and the caller's */
    ne->tick = ++s->inserts;
    ne->in_cache = 1;
    ne->hnext = NULL;
    *pp = ne;
    lru_push_front(s, ne);
    s->count++;
    s->used += ne->charge;
    while (s->used > s->cap && s->lru.prev != &s->lru) {
        centry *v = s->lru.prev;
        lru_unlink(v);
        centry **vp = find(s, hkey(v->id, v->off), v->id, v->off);
        *vp = v->hnext;
        s->count--;
        s->used -= v->charge;
        v->in_cache = 0;
        if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) {
            v->hnext = dead;
            dead = v;
        }
    }
    if (s->count * 2 > s->tabsize) grow(s); /* load ≤ 0.5: chains are walked through cold memory */
    pthread_mutex_unlock(&s->mu);
    while (dead) {
        centry *n = dead->hnext;
        free((void *)dead->pub.data);
        free(dead);
        dead = n;
    }
    return &ne->pub;
}

void od_block_cache_release(od_block_cache *c, od_cblock *b)
{
    if (!b) return;
    centry *e = (centry *)b;
    /* No lock: a reference is only ever taken (under the shard lock) on an entry that is in
     * the table, which holds a reference of its own, so the count cannot rise again once it
     * reached zero; whoever drops the last one frees the entry. */
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
        free((void *)e->pub.data);
        free(e);
    }
}

void od_block_cache_stats(od_block_cache *c, uint64_t *hits, uint64_t *misses, size_t *bytes)
{
    uint64_t h = 0, m = 0;
    size_t u = 0;
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        h += s->hits;
        m += s->misses;
        u += s->used;
        pthread_mutex_unlock(&s->mu);
    }
    if (hits) *hits = h;
    if (misses) *misses = m;
    if (bytes) *bytes = u;
}
