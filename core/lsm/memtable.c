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
 * entries), mmap'd with MAP_POPULATE; nothing is freed before the memtable. Heights are drawn with p = 1/4 up to MAX_HEIGHT (12), which
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
};

static inline const uint8_t *node_key(const mt_node *n)
{
    return (const uint8_t *)&n->next[n->height];
}

static void *arena_alloc(od_memtable *m, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    chunk *c = m->chunks;
    if (!c || c->cap - c->used < n) {
        /* chunks grow from 64 KiB to CHUNK_BYTES so that small memtables stay small */
        size_t want = c ? c->cap * 2 : (64u << 10);
        if (want > CHUNK_BYTES) want = CHUNK_BYTES;
        size_t cap = n > want / 4 ? n : want;
        /* mmap with MAP_POPULATE: the pages are faulted in by one system call instead of
         * one trap per page while the writer copies entries (several times faster on VMs) */
        chunk *nc = mmap(NULL, sizeof(chunk) + cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                         -1, 0);
        if (nc == MAP_FAILED) return NULL;
        nc->cap = cap;
        nc->used = 0;
        if (cap == n && c) {
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

int od_mt_add(od_memtable *m, const uint8_t *key, size_t klen, uint64_t seq, uint8_t kind, int64_t expire_ms,
              const uint8_t *val, size_t vlen)
{
    /* Search, starting at each level from the last insert's predecessor when that is
     * further along and still before the new entry: keys arriving in (nearly) ascending
     * order, the common case for time-ordered products, then cost O(levels) in cache. */
    mt_node *prev[MAX_HEIGHT];
    mt_node *x = m->head;
    for (int lvl = MAX_HEIGHT - 1; lvl >= 0; lvl--) {
        mt_node *sp = m->splice[lvl];
        if (sp != m->head && sp != x && node_less(sp, key, klen, seq) &&
            (x == m->head || node_less(x, node_key(sp), sp->klen, sp->seq)))
            x = sp;
        for (;;) {
            mt_node *nx = atomic_load_explicit(&x->next[lvl], memory_order_relaxed);
            if (nx && node_less(nx, key, klen, seq))
                x = nx;
            else
                break;
        }
        prev[lvl] = x;
    }
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
