/*
 * memtable.c — arena-allocated skiplist memtable (see memtable.h).
 *
 * Memory layout of a node (one arena allocation, 8-byte aligned; see link_node for where its
 * first bytes may start within a 64-byte cache line):
 *
 *   +---------+------+--------+------+-----+-----------------------+-----+--------+------+-----+-------+
 *   | pfx u64 | klen | height | kind | 2 - | link[height]:         | seq | expire | vlen | key | value |
 *   |         | u32  | u8     | u8   |     | {next ptr, npfx u64}  | u64 | i64    | u32  |     |       |
 *   +---------+------+--------+------+-----+-----------------------+-----+--------+------+-----+-------+
 *    <------ 16-byte header ------------->   16 bytes per level      <------ tail (20) ------>
 *
 * pfx is the key's first 8 bytes read big-endian, zero-padded: comparing two prefixes gives
 * the keys' order unless they are equal, so most comparisons need neither memcmp nor the
 * key's cache line. Each link also carries npfx, the prefix of the node it points to,
 * written and read by the single writer only (readers never look at it): the writer decides
 * "is the next node before my key?" from the node it stands on, and touches the next node
 * only when it moves onto it (or on a prefix tie). A node's header and its links of levels
 * 0-2 never straddle a cache line (nodes of 3+ levels start on a line), so one miss per
 * visited node is the rule; seq, needed only when two keys are equal, waits in the tail.
 *
 * The arena is a chain of chunks growing from 64 KiB to 4 MiB (a dedicated chunk for big
 * entries), pre-faulted, the 4 MiB ones as transparent huge pages (MADV_HUGEPAGE); nothing is
 * freed before the memtable. od_mt_add_batch (the write path's insert) sorts a batch and
 * overlaps the cache misses of several searches (see "batch insert" below). Heights are drawn
 * with p = 1/4 up to MAX_HEIGHT (12), which keeps searches O(log n) for the tens of millions
 * of entries a 64 MiB memtable can hold.
 *
 * Publication: the writer fills a node, links it bottom-up with release stores; readers
 * traverse with acquire loads, so a reader sees either the old list or the node complete.
 * Counters (bytes, count, min/max seq) have one writer and are updated with plain
 * load + store, no read-modify-write.
 */
#include "memtable.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "od_err.h"

#define MAX_HEIGHT 12
#define CHUNK_BYTES (4u << 20)
#define LINE 64

typedef struct mt_link {
    _Atomic(struct mt_node *) next;
    uint64_t npfx; /* writer only: next's pfx (meaningless while next is NULL) */
} mt_link;

typedef struct mt_node {
    uint64_t pfx;
    uint32_t klen;
    uint8_t height;
    uint8_t kind;
    mt_link link[];
} mt_node;

typedef struct mt_tail {
    uint64_t seq;
    int64_t expire;
    uint32_t vlen;
    uint8_t kv[]; /* key, then value */
} mt_tail;

#define TAIL_BYTES offsetof(mt_tail, kv)

typedef struct chunk {
    struct chunk *prev;
    size_t used, cap;
    _Alignas(LINE) uint8_t data[];
} chunk;

struct od_memtable {
    _Atomic int refs;
    chunk *chunks;
    _Atomic size_t bytes;
    _Atomic uint64_t count;
    _Atomic uint64_t max_seq, min_seq;
    uint64_t rnd;
    uint64_t fail_after; /* test only: see od_mt_test_fail_after */
    mt_node *head;
    mt_node *splice[MAX_HEIGHT]; /* writer only: predecessors of the last insert per level */
    struct mt_sortent *sort;     /* writer only: od_mt_add_batch's scratch, sort_cap entries */
    size_t sort_cap;
    od_mt_op *ops; /* writer only: od_mt_scratch_ops */
    size_t ops_cap;
};

static inline mt_tail *node_tail(const mt_node *n)
{
    return (mt_tail *)&n->link[n->height];
}

static inline const uint8_t *node_key(const mt_node *n)
{
    return node_tail(n)->kv;
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

/* n bytes whose first `hot` bytes do not cross a cache line (hot ≤ LINE; hot == LINE means
 * "start on a line"). */
static void *arena_alloc(od_memtable *m, size_t n, size_t hot)
{
    n = (n + 7) & ~(size_t)7;
    chunk *c = m->chunks;
    size_t pad = 0;
    if (c) {
        size_t off = (size_t)((uintptr_t)(c->data + c->used) & (LINE - 1));
        if (off && off + hot > LINE) pad = LINE - off;
    }
    if (!c || c->cap - c->used < n + pad) {
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
        pad = 0; /* data is line-aligned */
    }
    void *p = c->data + c->used + pad;
    c->used += n + pad;
    /* one writer: bytes used (not reserved), no read-modify-write needed */
    atomic_store_explicit(&m->bytes, atomic_load_explicit(&m->bytes, memory_order_relaxed) + n + pad,
                          memory_order_relaxed);
    return p;
}

od_memtable *od_mt_new(void)
{
    od_memtable *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    atomic_init(&m->min_seq, UINT64_MAX);
    m->rnd = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)m;
    m->head = arena_alloc(m, sizeof(mt_node) + MAX_HEIGHT * sizeof(mt_link) + TAIL_BYTES, LINE);
    if (!m->head) {
        free(m);
        return NULL;
    }
    memset(m->head, 0, sizeof(mt_node));
    m->head->height = MAX_HEIGHT;
    for (int i = 0; i < MAX_HEIGHT; i++) {
        atomic_init(&m->head->link[i].next, NULL);
        m->head->link[i].npfx = 0;
        m->splice[i] = m->head;
    }
    memset(node_tail(m->head), 0, TAIL_BYTES);
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
    free(m->ops);
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

void od_mt_test_fail_after(od_memtable *m, uint64_t n)
{
    m->fail_after = n;
}

od_mt_op *od_mt_scratch_ops(od_memtable *m, size_t n)
{
    if (m->ops_cap < n) {
        od_mt_op *p = realloc(m->ops, n * sizeof *p);
        if (!p) return NULL;
        m->ops = p;
        m->ops_cap = n;
    }
    return m->ops;
}

#define key_prefix od_key_prefix

/* node < (key, seq) in (key asc, seq desc) order; kp = key_prefix(key) */
static inline int node_less(const mt_node *n, uint64_t kp, const uint8_t *key, size_t klen, uint64_t seq)
{
    if (n->pfx != kp) return n->pfx < kp;
    int c = od_key_cmp(node_key(n), n->klen, key, klen);
    if (c) return c < 0;
    return node_tail(n)->seq > seq;
}

/* a < b, both nodes */
static inline int node_before(const mt_node *a, const mt_node *b)
{
    return node_less(a, b->pfx, node_key(b), b->klen, node_tail(b)->seq);
}

/* Writer only: is x's successor at `lvl` (non-NULL) before (key, seq)? Decided from the
 * successor's prefix stored in x's link when the prefixes differ. */
static inline int next_less(const mt_node *x, int lvl, const mt_node *nx, uint64_t kp, const uint8_t *key, size_t klen,
                            uint64_t seq)
{
    uint64_t np = x->link[lvl].npfx;
    if (np != kp) return np < kp;
    return node_less(nx, kp, key, klen, seq);
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
static inline mt_node *finger(const od_memtable *m, mt_node *x, int lvl, uint64_t kp, const uint8_t *key, size_t klen,
                              uint64_t seq)
{
    mt_node *sp = m->splice[lvl];
    if (sp != m->head && sp != x && node_less(sp, kp, key, klen, seq) && (x == m->head || node_before(x, sp)))
        return sp;
    return x;
}

/* Allocate, fill and link a node of height h after prev[0..h) (its predecessors), then
 * remember it (levels < h) and prev (levels ≥ h, any node before the key will do) as the
 * finger. The node is complete before the first release store. Counters are the caller's. */
static int link_node(od_memtable *m, mt_node **prev, int h, uint64_t kp, const uint8_t *key, size_t klen, uint64_t seq,
                     uint8_t kind, int64_t expire_ms, const uint8_t *val, size_t vlen)
{
    if (m->fail_after && --m->fail_after == 0) return OD_NOMEM; /* test only */
    size_t links = sizeof(mt_node) + (size_t)h * sizeof(mt_link);
    mt_node *n = arena_alloc(m, links + TAIL_BYTES + klen + vlen, links < LINE ? links : LINE);
    if (!n) return OD_NOMEM;
    n->pfx = kp;
    n->klen = (uint32_t)klen;
    n->height = (uint8_t)h;
    n->kind = kind;
    mt_tail *t = node_tail(n);
    t->seq = seq;
    t->expire = expire_ms;
    t->vlen = (uint32_t)vlen;
    if (klen) memcpy(t->kv, key, klen);
    if (vlen) memcpy(t->kv + klen, val, vlen);
    for (int lvl = 0; lvl < h; lvl++) {
        mt_link *pl = &prev[lvl]->link[lvl];
        atomic_init(&n->link[lvl].next, atomic_load_explicit(&pl->next, memory_order_relaxed));
        n->link[lvl].npfx = pl->npfx;
        pl->npfx = kp;
        atomic_store_explicit(&pl->next, n, memory_order_release);
    }
    for (int lvl = 0; lvl < MAX_HEIGHT; lvl++) m->splice[lvl] = lvl < h ? n : prev[lvl];
    return OD_OK;
}

/* After `added` entries of sequence `seq` went in: the counters (one writer). */
static void note_added(od_memtable *m, uint64_t added, uint64_t seq)
{
    if (!added) return;
    atomic_store_explicit(&m->count, atomic_load_explicit(&m->count, memory_order_relaxed) + added,
                          memory_order_relaxed);
    if (seq > atomic_load_explicit(&m->max_seq, memory_order_relaxed))
        atomic_store_explicit(&m->max_seq, seq, memory_order_relaxed);
    if (seq < atomic_load_explicit(&m->min_seq, memory_order_relaxed))
        atomic_store_explicit(&m->min_seq, seq, memory_order_relaxed);
}

int od_mt_add(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq, uint8_t kind, int64_t expire_ms,
              const uint8_t *val, size_t vlen)
{
    /* Search, starting at each level from the last insert's predecessor when that is
     * further along and still before the new entry: keys arriving in (nearly) ascending
     * order, the common case for time-ordered products, then cost O(levels) in cache. */
    uint64_t kp = key_prefix(key, klen);
    mt_node *prev[MAX_HEIGHT];
    mt_node *x = m->head;
    for (int lvl = MAX_HEIGHT - 1; lvl >= 0; lvl--) {
        x = finger(m, x, lvl, kp, key, klen, seq);
        for (;;) {
            mt_node *nx = atomic_load_explicit(&x->link[lvl].next, memory_order_relaxed);
            if (nx && next_less(x, lvl, nx, kp, key, klen, seq))
                x = nx;
            else
                break;
        }
        prev[lvl] = x;
    }
    int rc = link_node(m, prev, random_height(m), kp, key, klen, seq, kind, expire_ms, val, vlen);
    if (rc == OD_OK) note_added(m, 1, seq);
    return rc;
}

/* ---------------- batch insert ----------------
 *
 * A random key costs a skiplist search of ~10 dependent cache misses in a large memtable, and
 * a miss costs ~1 µs on a loaded VM. od_mt_add_batch overlaps them:
 *   1. sort the batch by (key, position) on an index array (a stable order, so equal keys
 *      keep the "later op first" rule once inserted in that order); skipped when the batch
 *      is already in order; the 8-byte big-endian key prefix decides most comparisons;
 *   2. keep WINDOW (32) searches in flight over a sliding window of the sorted keys,
 *      round-robin: a search runs until its next step needs a node not yet in cache (a move right; the
 *      link prefix answers "go down" without touching the next node), prefetches it and
 *      yields, so WINDOW misses are in flight instead of one; when the oldest search of the
 *      window is done its key is linked and the next key's search starts;
 *   3. keys are linked in sorted order: each level's predecessor found by the search is still
 *      before the key (nodes are never removed), so the true predecessor is reached by walking
 *      forward from the later of it and the finger over nodes just inserted (hot). Only the
 *      new node's own levels need that walk.
 * A sorted batch appending past the end of the list goes through od_mt_add instead (the
 * finger makes that O(1) per key). Readers see exactly what od_mt_add would show them: nodes
 * are linked one at a time, complete, with release stores, and a batch's seq is not visible
 * before the call returns. */

#ifndef WINDOW
#define WINDOW 32
#endif

typedef struct mt_sortent {
    uint64_t pfx; /* key_prefix: same order as the keys unless equal */
    uint32_t idx;
} mt_sortent;

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

typedef struct mt_search {
    const od_mt_op *op;
    uint64_t kp;
    mt_node *x;    /* last node known < key at level lvl */
    mt_node *pend; /* x->link[lvl].next, prefetched: to move onto (or compare, when tie) */
    mt_node *ge;   /* a node known ≥ key (the last one compared), or NULL */
    int lvl;       /* -1 when done */
    int tie;       /* pend's prefix equals the key's: compare the keys */
    mt_node *prev[MAX_HEIGHT];
} mt_search;

/* Advance a search until it needs a node that is probably not in cache (prefetched, left in
 * s->pend for the next turn) or is done (lvl < 0). */
static void search_step(od_memtable *m, mt_search *s, uint64_t seq)
{
    const od_mt_op *op = s->op;
    mt_node *x = s->x;
    int lvl = s->lvl;
    if (s->pend) {
        mt_node *nx = s->pend;
        s->pend = NULL;
        if (!s->tie || node_less(nx, s->kp, op->key, op->klen, seq)) {
            x = nx;
        } else {
            s->ge = nx;
            goto down;
        }
    }
    for (;;) {
        mt_node *nx = atomic_load_explicit(&x->link[lvl].next, memory_order_relaxed);
        if (nx && nx != s->ge) {
            uint64_t np = x->link[lvl].npfx;
            if (np < s->kp || np == s->kp) {
                s->tie = np == s->kp;
                s->pend = nx;
                /* what the next turn reads: the header and this level's link (in the same
                 * line below level 3), and on a tie the tail (often the next line) */
                __builtin_prefetch(nx);
                if (lvl >= 3) __builtin_prefetch(&nx->link[lvl]);
                if (s->tie) __builtin_prefetch((const uint8_t *)nx + LINE);
                s->x = x;
                s->lvl = lvl;
                return;
            }
            s->ge = nx;
        }
    down:
        s->prev[lvl] = x;
        if (--lvl < 0) break;
        x = finger(m, x, lvl, s->kp, op->key, op->klen, seq);
    }
    s->x = x;
    s->lvl = -1;
}

/* Link op (its search s done) with a fresh height: fix up the predecessors of its levels. */
static int link_searched(od_memtable *m, mt_search *s, uint64_t seq)
{
    const od_mt_op *op = s->op;
    int h = random_height(m);
    for (int lvl = 0; lvl < h; lvl++) {
        mt_node *x = finger(m, s->prev[lvl], lvl, s->kp, op->key, op->klen, seq);
        for (;;) {
            mt_node *nx = atomic_load_explicit(&x->link[lvl].next, memory_order_relaxed);
            if (nx && next_less(x, lvl, nx, s->kp, op->key, op->klen, seq))
                x = nx;
            else
                break;
        }
        s->prev[lvl] = x;
    }
    return link_node(m, s->prev, h, s->kp, op->key, op->klen, seq, op->kind, op->expire_ms, op->val, op->vlen);
}

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
    if (sorted) {
        /* Appending past the end of the list (ascending keys, as time-ordered products write):
         * the finger path costs O(1) cached steps per key and has nothing to overlap. */
        mt_node *last = m->splice[0];
        if (!atomic_load_explicit(&last->link[0].next, memory_order_relaxed) &&
            (last == m->head || node_less(last, e[0].pfx, ops[0].key, ops[0].klen, seq)))
            goto one_by_one;
    }

    mt_search st[WINDOW];
    size_t lo = 0, hi = 0; /* keys [lo, hi) of e are being searched, in st[i % WINDOW] */
    int rc = OD_OK;
    while (lo < n) {
        for (; hi < n && hi - lo < WINDOW; hi++) {
            mt_search *s = &st[hi % WINDOW];
            s->op = &ops[e[hi].idx];
            s->kp = e[hi].pfx;
            s->lvl = MAX_HEIGHT - 1;
            s->ge = s->pend = NULL;
            s->x = finger(m, m->head, s->lvl, s->kp, s->op->key, s->op->klen, seq);
            search_step(m, s, seq);
        }
        for (size_t i = lo; i < hi; i++) {
            mt_search *s = &st[i % WINDOW];
            if (s->lvl >= 0) search_step(m, s, seq);
        }
        while (lo < hi && st[lo % WINDOW].lvl < 0) {
            if ((rc = link_searched(m, &st[lo % WINDOW], seq))) goto out;
            lo++;
        }
    }
out:
    note_added(m, lo, seq);
    return rc;

one_by_one:
    for (size_t i = 0; i < n; i++) {
        int r = od_mt_add(m, ops[i].key, ops[i].klen, seq, ops[i].kind, ops[i].expire_ms, ops[i].val, ops[i].vlen);
        if (r) return r;
    }
    return OD_OK;
}

/* First node ≥ (key, seq). */
static const mt_node *find_ge(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq)
{
    uint64_t kp = key_prefix(key, klen);
    const mt_node *x = m->head, *ge = NULL;
    for (int lvl = MAX_HEIGHT - 1; lvl >= 0; lvl--) {
        for (;;) {
            const mt_node *nx = atomic_load_explicit(&((mt_node *)x)->link[lvl].next, memory_order_acquire);
            if (nx && nx != ge && node_less(nx, kp, key, klen, seq)) {
                x = nx;
            } else {
                ge = nx; /* known ≥ key: not compared again on the levels below */
                break;
            }
        }
    }
    return atomic_load_explicit(&((mt_node *)x)->link[0].next, memory_order_acquire);
}

static void fill_entry(const mt_node *n, od_entry *out)
{
    const mt_tail *t = node_tail(n);
    out->key = t->kv;
    out->klen = n->klen;
    out->seq = t->seq;
    out->kind = n->kind;
    out->expire_ms = t->expire;
    out->val = t->kv + n->klen;
    out->vlen = t->vlen;
}

int od_mt_get(od_memtable *m, const uint8_t *key, size_t klen, uint64_t max_seq, od_entry *out)
{
    /* empty (the common case right after a flush): no walk down 12 levels of the head. A
     * batch is counted before its seq is published, so nothing a reader may see is missed. */
    if (atomic_load_explicit(&m->count, memory_order_relaxed) == 0) return 0;
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
    it->node = atomic_load_explicit(&it->m->head->link[0].next, memory_order_acquire);
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
    it->node = atomic_load_explicit(&((mt_node *)n)->link[0].next, memory_order_acquire);
}

void od_mt_iter_entry(const od_mt_iter *it, od_entry *out)
{
    fill_entry(it->node, out);
}
