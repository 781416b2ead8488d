/*
 * memtable.c — arena-allocated skiplist memtable (see memtable.h).
 *
 * Memory layout of a node (one arena allocation, 8-byte aligned):
 *
 *   +--------+-----------+------+------+------+--------+------------------+-----+-------+
 *   | seq u64| expire i64| klen | vlen | kind | height | next[height] ptrs| key | value |
 *   +--------+-----------+------+------+------+--------+------------------+-----+-------+
 *
 * The arena is a chain of chunks growing from 64 KiB to 4 MiB (a dedicated chunk for big
 * entries), pre-faulted, the 4 MiB ones as transparent huge pages (MADV_HUGEPAGE); nothing is
 * freed before the memtable. od_mt_add_batch (the write path's insert) sorts a batch and
 * overlaps the cache misses of several searches (see "batch insert" below). Heights are drawn with p = 1/4 up to MAX_HEIGHT (12), which
 * keeps searches O(log n) for the tens of millions of entries a 64 MiB memtable can hold.
 *
 * Publication: the writer fills a node, links it bottom-up with release stores; readers
 * traverse with acquire loads, so a reader sees either the old list or the node complete.
 */
#include "memtable.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "od_err.h"

#define MAX_HEIGHT 12
#define CHUNK_BYTES (4u << 20)

typedef struct mt_node {
    uint64_t seq;
    int64_t expire;
    uint32_t klen;
    uint32_t vlen;
    uint8_t kind;
    uint8_t height;
    _Atomic(struct mt_node *) next[];
} mt_node;

typedef struct chunk {
    struct chunk *prev;
    size_t used, cap;
    _Alignas(8) uint8_t data[];
} chunk;

struct od_memtable {
    _Atomic int refs;
    chunk *chunks;
    _Atomic size_t bytes;
    _Atomic uint64_t count;
    _Atomic uint64_t max_seq, min_seq;
    uint64_t rnd;
    mt_node *head;
    mt_node *splice[MAX_HEIGHT]; /* writer only: predecessors of the last insert per level */
    struct mt_sortent *sort;     /* writer only: od_mt_add_batch's scratch, sort_cap entries */
    size_t sort_cap;
};

static inline const uint8_t *node_key(const mt_node *n)
{
    return (const uint8_t *)&n->next[n->height];
}

/* Map `bytes` of zeroed, pre-faulted memory. Chunks of 2 MiB and more ask for transparent
 * huge pages: a memtable of 100+ MB is touched at random by inserts and gets, and with 4 KiB
 * pages nearly every node visit is also a TLB miss (a two-dimensional page walk on a VM). */
static void *map_chunk(size_t bytes)
{
    if (bytes < (2u << 20)) {
        /* MAP_POPULATE: the pages are faulted in by one system call instead of one trap per
         * page while the writer copies entries (several times faster on VMs) */
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* advice only: fine if refused */
#endif
    int populated = 0;
#ifdef MADV_POPULATE_WRITE
    populated = madvise(p, bytes, MADV_POPULATE_WRITE) == 0;
#endif
    if (!populated)
        for (size_t off = 0; off < bytes; off += 4096) ((volatile uint8_t *)p)[off] = 0;
    return p;
}

static void *arena_alloc(od_memtable *m, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    chunk *c = m->chunks;
    if (!c || c->cap - c->used < n) {
        /* chunks (header included) grow from 64 KiB to CHUNK_BYTES so that small memtables
         * stay small; an entry bigger than a quarter of the next chunk gets its own */
        size_t want = c ? (sizeof(chunk) + c->cap) * 2 : (64u << 10);
        if (want > CHUNK_BYTES) want = CHUNK_BYTES;
        int big = n > want / 4;
        size_t bytes = big ? sizeof(chunk) + n : want;
        chunk *nc = map_chunk(bytes);
        if (!nc) return NULL;
        nc->cap = bytes - sizeof(chunk);
        nc->used = 0;
        if (big && c) {
            /* dedicated chunk for a big entry: keep the current chunk in front */
            nc->prev = c->prev;
            c->prev = nc;
        } else {
            nc->prev = c;
            m->chunks = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    atomic_fetch_add_explicit(&m->bytes, n, memory_order_relaxed); /* bytes used, not reserved */
    return p;
}

od_memtable *od_mt_new(void)
{
    od_memtable *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    atomic_init(&m->min_seq, UINT64_MAX);
    m->rnd = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)m;
    m->head = arena_alloc(m, sizeof(mt_node) + MAX_HEIGHT * sizeof(mt_node *));
    if (!m->head) {
        free(m);
        return NULL;
    }
    memset(m->head, 0, sizeof(mt_node));
    m->head->height = MAX_HEIGHT;
    for (int i = 0; i < MAX_HEIGHT; i++) {
        atomic_init(&m->head->next[i], NULL);
        m->splice[i] = m->head;
    }
    return m;
}

void od_mt_ref(od_memtable *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void od_mt_unref(od_memtable *m)
{
    if (!m) return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    chunk *c = m->chunks;
    while (c) {
        chunk *p = c->prev;
        munmap(c, sizeof(chunk) + c->cap);
        c = p;
    }
    free(m->sort);
    free(m);
}

size_t od_mt_bytes(const od_memtable *m)
{
    return atomic_load_explicit(&m->bytes, memory_order_relaxed);
}
uint64_t od_mt_count(const od_memtable *m)
{
    return atomic_load_explicit(&m->count, memory_order_relaxed);
}
uint64_t od_mt_max_seq(const od_memtable *m)
{
    return atomic_load_explicit(&m->max_seq, memory_order_relaxed);
}
uint64_t od_mt_min_seq(const od_memtable *m)
{
    uint64_t s = atomic_load_explicit(&m->min_seq, memory_order_relaxed);
    return s == UINT64_MAX ? 0 : s;
}

/* node < (key, seq) in (key asc, seq desc) order */
static inline int node_less(const mt_node *n, const uint8_t *key, size_t klen, uint64_t seq)
{
    int c = od_key_cmp(node_key(n), n->klen, key, klen);
    if (c) return c < 0;
    return n->seq > seq;
}

static int random_height(od_memtable *m)
{
    uint64_t x = m->rnd;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    m->rnd = x;
    int h = 1;
    while (h < MAX_HEIGHT && (x & 3) == 0) {
        h++;
        x >>= 2;
    }
    return h;
}

/* At level `lvl`, the last insert's predecessor (or that node itself) when it is further
 * along than x and still before (key, seq): the finger that makes ascending inserts cheap. */
static inline mt_node *finger(const od_memtable *m, mt_node *x, int lvl, const uint8_t *key, size_t klen, uint64_t seq)
{
    mt_node *sp = m->splice[lvl];
    if (sp != m->head && sp != x && node_less(sp, key, klen, seq) &&
        (x == m->head || node_less(x, node_key(sp), sp->klen, sp->seq)))
        return sp;
    return x;
}

/* Allocate, fill and link a node after prev[0..h) (its predecessors at every level), then
 * remember prev as the finger. The node is complete before the first release store. */
static int link_node(od_memtable *m, mt_node **prev, const uint8_t *key, size_t klen, uint64_t seq, uint8_t kind,
                     int64_t expire_ms, const uint8_t *val, size_t vlen)
{
    int h = random_height(m);
    mt_node *n = arena_alloc(m, sizeof(mt_node) + (size_t)h * sizeof(mt_node *) + klen + vlen);
    if (!n) return OD_NOMEM;
    n->seq = seq;
    n->expire = expire_ms;
    n->klen = (uint32_t)klen;
    n->vlen = (uint32_t)vlen;
    n->kind = kind;
    n->height = (uint8_t)h;
    uint8_t *kp = (uint8_t *)&n->next[h];
    if (klen) memcpy(kp, key, klen);
    if (vlen) memcpy(kp + klen, val, vlen);
    for (int lvl = 0; lvl < h; lvl++) {
        atomic_init(&n->next[lvl], atomic_load_explicit(&prev[lvl]->next[lvl], memory_order_relaxed));
        atomic_store_explicit(&prev[lvl]->next[lvl], n, memory_order_release);
    }
    for (int lvl = 0; lvl < MAX_HEIGHT; lvl++) m->splice[lvl] = lvl < h ? n : prev[lvl];
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    if (seq > atomic_load_explicit(&m->max_seq, memory_order_relaxed))
        atomic_store_explicit(&m->max_seq, seq, memory_order_relaxed);
    if (seq < atomic_load_explicit(&m->min_seq, memory_order_relaxed))
        atomic_store_explicit(&m->min_seq, seq, memory_order_relaxed);
    return OD_OK;
}

int od_mt_add(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq, uint8_t kind, int64_t expire_ms,
              const uint8_t *val, size_t vlen)
{
    /* Search, starting at each level from the last insert's predecessor when that is
     * further along and still before the new entry: keys arriving in (nearly) ascending
     * order, the common case for time-ordered products, then cost O(levels) in cache. */
    mt_node *prev[MAX_HEIGHT];
    mt_node *x = m->head;
    for (int lvl = MAX_HEIGHT - 1; lvl >= 0; lvl--) {
        x = finger(m, x, lvl, key, klen, seq);
        for (;;) {
            mt_node *nx = atomic_load_explicit(&x->next[lvl], memory_order_relaxed);
            if (nx && node_less(nx, key, klen, seq))
                x = nx;
            else
                break;
        }
        prev[lvl] = x;
    }
    return link_node(m, prev, key, klen, seq, kind, expire_ms, val, vlen);
}

/* ---------------- batch insert ----------------
 *
 * A random key costs a skiplist search of ~10 dependent cache misses in a large memtable, and
 * a miss costs ~1 µs on a loaded VM. od_mt_add_batch overlaps them:
 *   1. sort the batch by (key, position) on an index array (a stable order, so equal keys
 *      keep the "later op first" rule once inserted in that order); skipped when the batch
 *      is already in order; the 8-byte big-endian key prefix decides most comparisons;
 *   2. search GROUP sorted keys at once, round-robin, one skiplist step per key per turn
 *      with the next node prefetched, so GROUP misses are in flight instead of one;
 *   3. insert the group's keys in order: each level's predecessor found by the search is
 *      still before the key (nodes are never removed), so the true predecessor is reached by
 *      walking forward from the later of it and the finger over nodes just inserted (hot).
 * Readers see exactly what od_mt_add would show them: nodes are linked one at a time,
 * complete, with release stores, and a batch's seq is not visible before the call returns. */

#ifndef GROUP
#define GROUP 16
#endif

typedef struct mt_sortent {
    uint64_t pfx; /* first 8 key bytes, big-endian, zero-padded: same order as the keys */
    uint32_t idx;
} mt_sortent;

static inline uint64_t key_prefix(const uint8_t *k, size_t n)
{
    uint8_t b[8] = {0};
    memcpy(b, k, n < 8 ? n : 8);
    uint64_t v;
    memcpy(&v, b, 8);
    return __builtin_bswap64(v);
}

static inline int ent_less(const od_mt_op *ops, const mt_sortent *a, const mt_sortent *b)
{
    if (a->pfx != b->pfx) return a->pfx < b->pfx;
    int c = od_key_cmp(ops[a->idx].key, ops[a->idx].klen, ops[b->idx].key, ops[b->idx].klen);
    if (c) return c < 0;
    return a->idx < b->idx;
}

/* Merge sort of e[0..n) using tmp[0..n); returns the array holding the result. */
static mt_sortent *sort_ents(const od_mt_op *ops, mt_sortent *e, mt_sortent *tmp, size_t n)
{
    const size_t RUN = 16;
    for (size_t lo = 0; lo < n; lo += RUN) { /* insertion sort of short runs */
        size_t hi = lo + RUN < n ? lo + RUN : n;
        for (size_t i = lo + 1; i < hi; i++) {
            mt_sortent v = e[i];
            size_t j = i;
            while (j > lo && ent_less(ops, &v, &e[j - 1])) {
                e[j] = e[j - 1];
                j--;
            }
            e[j] = v;
        }
    }
    for (size_t w = RUN; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = ent_less(ops, &e[j], &e[i]) ? e[j++] : e[i++];
            while (i < mid) tmp[k++] = e[i++];
            while (j < hi) tmp[k++] = e[j++];
        }
        mt_sortent *t = e;
        e = tmp;
        tmp = t;
    }
    return e;
}

static inline void prefetch_node(const mt_node *n)
{
    /* header and key: a node is 8-byte aligned, so its key often starts in the next line */
    __builtin_prefetch(n);
    __builtin_prefetch((const uint8_t *)n + 64);
}

typedef struct mt_search {
    mt_node *x;      /* last node known < key at level lvl */
    mt_node *nx;     /* x->next[lvl], prefetched, not yet compared */
    mt_node *ge;     /* a node known ≥ key (the last one compared), or NULL */
    int lvl;         /* -1 when done */
} mt_search;

int od_mt_add_batch(od_memtable *m, od_mt_op *ops, size_t n, uint64_t seq)
{
    if (n == 0) return OD_OK;
    if (n == 1) return od_mt_add(m, ops[0].key, ops[0].klen, seq, ops[0].kind, ops[0].expire_ms, ops[0].val, ops[0].vlen);
    if (n > UINT32_MAX) goto one_by_one;
    if (m->sort_cap < 2 * n) {
        mt_sortent *ns = realloc(m->sort, 2 * n * sizeof *ns);
        if (!ns) goto one_by_one; /* same result, only slower */
        m->sort = ns;
        m->sort_cap = 2 * n;
    }
    mt_sortent *e = m->sort;
    int sorted = 1;
    for (size_t i = 0; i < n; i++) {
        e[i].pfx = key_prefix(ops[i].key, ops[i].klen);
        e[i].idx = (uint32_t)i;
        if (i && sorted && ent_less(ops, &e[i], &e[i - 1])) sorted = 0;
    }
    if (!sorted) e = sort_ents(ops, e, m->sort + n, n);

    mt_node *prev[GROUP][MAX_HEIGHT];
    mt_search st[GROUP];
    for (size_t g0 = 0; g0 < n; g0 += GROUP) {
        size_t gn = n - g0 < GROUP ? n - g0 : GROUP;
        for (size_t i = 0; i < gn; i++) {
            const od_mt_op *op = &ops[e[g0 + i].idx];
            mt_search *s = &st[i];
            s->lvl = MAX_HEIGHT - 1;
            s->ge = NULL;
            s->x = finger(m, m->head, s->lvl, op->key, op->klen, seq);
            s->nx = atomic_load_explicit(&s->x->next[s->lvl], memory_order_relaxed);
            if (s->nx) prefetch_node(s->nx);
        }
        for (size_t active = gn; active;) {
            for (size_t i = 0; i < gn; i++) {
                mt_search *s = &st[i];
                if (s->lvl < 0) continue;
                const od_mt_op *op = &ops[e[g0 + i].idx];
                /* one step: either move right onto nx, or go down one level */
                if (s->nx && s->nx != s->ge && node_less(s->nx, op->key, op->klen, seq)) {
                    s->x = s->nx;
                } else {
                    if (s->nx) s->ge = s->nx;
                    prev[i][s->lvl] = s->x;
                    if (--s->lvl < 0) {
                        active--;
                        continue;
                    }
                    s->x = finger(m, s->x, s->lvl, op->key, op->klen, seq);
                }
                s->nx = atomic_load_explicit(&s->x->next[s->lvl], memory_order_relaxed);
                if (s->nx && s->nx != s->ge) prefetch_node(s->nx);
            }
        }
        for (size_t i = 0; i < gn; i++) {
            const od_mt_op *op = &ops[e[g0 + i].idx];
            mt_node **pv = prev[i];
            for (int lvl = 0; lvl < MAX_HEIGHT; lvl++) {
                mt_node *x = finger(m, pv[lvl], lvl, op->key, op->klen, seq);
                for (;;) {
                    mt_node *nx = atomic_load_explicit(&x->next[lvl], memory_order_relaxed);
                    if (nx && node_less(nx, op->key, op->klen, seq))
                        x = nx;
                    else
                        break;
                }
                pv[lvl] = x;
            }
            int rc = link_node(m, pv, op->key, op->klen, seq, op->kind, op->expire_ms, op->val, op->vlen);
            if (rc) return rc;
        }
    }
    return OD_OK;

one_by_one:
    for (size_t i = 0; i < n; i++) {
        int rc = od_mt_add(m, ops[i].key, ops[i].klen, seq, ops[i].kind, ops[i].expire_ms, ops[i].val, ops[i].vlen);
        if (rc) return rc;
    }
    return OD_OK;
}

/* First node ≥ (key, seq). */
static const mt_node *find_ge(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq)
{
    const mt_node *x = m->head;
    for (int lvl = MAX_HEIGHT - 1; lvl >= 0; lvl--) {
        for (;;) {
            const mt_node *nx = atomic_load_explicit(&x->next[lvl], memory_order_acquire);
            if (nx && node_less(nx, key, klen, seq))
                x = nx;
            else
                break;
        }
    }
    return atomic_load_explicit(&x->next[0], memory_order_acquire);
}

static void fill_entry(const mt_node *n, od_entry *out)
{
    out->key = node_key(n);
    out->klen = n->klen;
    out->seq = n->seq;
    out->kind = n->kind;
    out->expire_ms = n->expire;
    out->val = node_key(n) + n->klen;
    out->vlen = n->vlen;
}

int od_mt_get(od_memtable *m, const uint8_t *key, size_t klen, uint64_t max_seq, od_entry *out)
{
    const mt_node *n = find_ge(m, key, klen, max_seq);
    if (!n || od_key_cmp(node_key(n), n->klen, key, klen) != 0) return 0;
    fill_entry(n, out);
    return 1;
}

void od_mt_iter_init(od_mt_iter *it, od_memtable *m)
{
    it->m = m;
    it->node = NULL;
}

void od_mt_iter_first(od_mt_iter *it)
{
    it->node = atomic_load_explicit(&it->m->head->next[0], memory_order_acquire);
}

void od_mt_iter_seek(od_mt_iter *it, const uint8_t *key, size_t klen)
{
    it->node = find_ge(it->m, key, klen, UINT64_MAX);
}

int od_mt_iter_valid(const od_mt_iter *it)
{
    return it->node != NULL;
}

void od_mt_iter_next(od_mt_iter *it)
{
    const mt_node *n = it->node;
    it->node = atomic_load_explicit(&((mt_node *)n)->next[0], memory_order_acquire);
}

void od_mt_iter_entry(const od_mt_iter *it, od_entry *out)
{
    fill_entry(it->node, out);
}
