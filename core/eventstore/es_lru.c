/*
 * es_lru.c — the bounded cache of per-key tail state (key → es_meta, or "key does not
 * exist") used by the append path so that sequence assignment does not read the store for
 * hot keys, while millions of cold keys cost nothing in memory.
 *
 * How it works. Two arrays, both allocated once per size and never per entry:
 *   slots[]  open addressing with linear probing, at most half full (nslots ≥ 2 × cap). A
 *            slot is {tag, idx}: idx = node index + 1 (0 = empty) and tag = the low 32 bits of
 *            the key's hash, so the home slot is tag & (nslots - 1) and a probe compares tags
 *            without touching a node; only a tag match reads the node to compare the key.
 *            Deletion shifts the following entries of the probe run back (no tombstones).
 *   nodes[]  the entries: recency links as node indices (a doubly linked list, head = most
 *            recently used), the meta, the exists flag, and the key — inline when it has at
 *            most ES_LRU_INLINE bytes, else one malloc'd copy. The array grows by doubling
 *            up to cap; an entry evicted from the tail is reused in place for the new key, and
 *            removed entries go on a free list, so a full cache allocates nothing.
 * Memory: 96 bytes per entry plus 16 bytes of slots (≈ 7.3 MB at 65,536 entries), where the
 * chained table with one malloc per entry took ≈ 10 MB, and a malloc + free per miss.
 * Get moves a node to the front; put evicts from the back once count reaches cap.
 * Not thread-safe: the caller (eventstore.c) holds the append lock around every call.
 */
#include "es_int.h"

#include <stdlib.h>
#include <string.h>

#define ES_LRU_INLINE 24
#define NONE UINT32_MAX
#define CAP_MAX ((size_t)1 << 28)

struct es_lru_node {
    uint32_t prev, next;  /* recency list (NONE at the ends); next links the free list */
    uint32_t tag;         /* low 32 bits of the key's hash: finds the node's slot on eviction */
    uint16_t klen;        /* keys are ≤ OD_EV_KEY_MAX bytes */
    uint16_t exists;
    es_meta meta;
    union {
        uint8_t in[ES_LRU_INLINE];
        uint8_t *ext;
    } k;
};

static const uint8_t *node_key(const es_lru_node *n) { return n->klen <= ES_LRU_INLINE ? n->k.in : n->k.ext; }

/* 8 bytes at a time, multiply-xorshift mixing (the keys are short; FNV's byte loop showed). */
uint64_t es_hash(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xFF51AFD7ED558CCDULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
        h ^= h >> 29;
        b += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)b[i] << (8 * i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 32;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 29;
    return h;
}

int es_lru_init(es_lru *l, size_t cap, od_err *err)
{
    memset(l, 0, sizeof *l);
    if (cap < 1) cap = 1;
    if (cap > CAP_MAX) cap = CAP_MAX;
    size_t ns = 16;
    while (ns < 2 * cap) ns <<= 1;
    l->slots = calloc(ns, sizeof *l->slots);
    if (!l->slots) return od_err_set(err, OD_NOMEM, "eventstore: out of memory for the tail cache");
    l->nslots = ns;
    l->cap = cap;
    l->head = l->tail = l->free_head = NONE;
    return OD_OK;
}

void es_lru_free(es_lru *l)
{
    for (size_t i = 0; i < l->nused; i++)
        if (l->nodes[i].klen > ES_LRU_INLINE) free(l->nodes[i].k.ext);
    free(l->nodes);
    free(l->slots);
    memset(l, 0, sizeof *l);
}

/* The slot holding key (hash h), or the empty slot where the probe ended (idx 0). */
static size_t probe(const es_lru *l, const void *key, size_t klen, uint64_t h)
{
    size_t mask = l->nslots - 1, i = (size_t)h & mask;
    uint32_t tag = (uint32_t)h;
    for (;;) {
        const es_lru_slot *s = &l->slots[i];
        if (!s->idx) return i;
        if (s->tag == tag) {
            const es_lru_node *n = &l->nodes[s->idx - 1];
            if (n->klen == klen && memcmp(node_key(n), key, klen) == 0) return i;
        }
        i = (i + 1) & mask;
    }
}

/* The slot of node idx (its hash's low bits are the tag). */
static size_t slot_of(const es_lru *l, uint32_t tag, uint32_t idx)
{
    size_t mask = l->nslots - 1, i = tag & mask;
    while (l->slots[i].idx != idx + 1) i = (i + 1) & mask;
    return i;
}

/* Backward-shift deletion: later entries of the run whose home is not in (i, j] move to i. */
static void slot_delete(es_lru *l, size_t i)
{
    size_t mask = l->nslots - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!l->slots[j].idx) break;
        size_t home = l->slots[j].tag & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            l->slots[i] = l->slots[j];
            i = j;
        }
    }
    l->slots[i].idx = 0;
}

static void unlink_list(es_lru *l, uint32_t x)
{
    es_lru_node *n = &l->nodes[x];
    if (n->prev != NONE) l->nodes[n->prev].next = n->next; else l->head = n->next;
    if (n->next != NONE) l->nodes[n->next].prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NONE;
}

static void push_front(es_lru *l, uint32_t x)
{
    es_lru_node *n = &l->nodes[x];
    n->prev = NONE;
    n->next = l->head;
    if (l->head != NONE) l->nodes[l->head].prev = x;
    l->head = x;
    if (l->tail == NONE) l->tail = x;
}

void es_lru_prefetch(const es_lru *l, uint64_t h)
{
    __builtin_prefetch(&l->slots[(size_t)h & (l->nslots - 1)]);
}

int es_lru_get_h(es_lru *l, const void *key, size_t klen, uint64_t h, es_meta *m, int *exists)
{
    size_t i = probe(l, key, klen, h);
    if (!l->slots[i].idx) {
        l->misses++;
        return 0;
    }
    uint32_t x = l->slots[i].idx - 1;
    if (l->head != x) {
        unlink_list(l, x);
        push_front(l, x);
    }
    *m = l->nodes[x].meta;
    *exists = (int)l->nodes[x].exists;
    l->hits++;
    return 1;
}

int es_lru_get(es_lru *l, const void *key, size_t klen, es_meta *m, int *exists)
{
    return es_lru_get_h(l, key, klen, es_hash(key, klen), m, exists);
}

/* Drop node x from the table and the list (its key storage is kept for reuse). */
static void drop_node(es_lru *l, uint32_t x, uint32_t tag)
{
    slot_delete(l, slot_of(l, tag, x));
    unlink_list(l, x);
    l->count--;
}

int es_lru_put_h(es_lru *l, const void *key, size_t klen, uint64_t h, const es_meta *m, int exists, od_err *err)
{
    if (klen > UINT16_MAX) return od_err_set(err, OD_BADREQ, "eventstore: key too long for the tail cache");
    size_t i = probe(l, key, klen, h);
    if (l->slots[i].idx) {
        uint32_t x = l->slots[i].idx - 1;
        l->nodes[x].meta = *m;
        l->nodes[x].exists = exists != 0;
        if (l->head != x) {
            unlink_list(l, x);
            push_front(l, x);
        }
        return OD_OK;
    }
    /* a node: reuse the least recently used one when full, else a free or a new one */
    uint32_t x;
    if (l->count >= l->cap) {
        x = l->tail;
        drop_node(l, x, l->nodes[x].tag);
    } else if (l->free_head != NONE) {
        x = l->free_head;
        l->free_head = l->nodes[x].next;
    } else {
        if (l->nused == l->nalloc) {
            size_t na = l->nalloc ? 2 * l->nalloc : 64;
            if (na > l->cap) na = l->cap;
            es_lru_node *nn = realloc(l->nodes, na * sizeof *nn);
            if (!nn) return od_err_set(err, OD_NOMEM, "eventstore: out of memory for the tail cache");
            l->nodes = nn;
            l->nalloc = na;
        }
        x = (uint32_t)l->nused++;
        l->nodes[x].klen = 0;
    }
    es_lru_node *n = &l->nodes[x];
    /* the key: inline, or reuse / replace the node's old heap copy */
    if (klen > ES_LRU_INLINE) {
        uint8_t *p = n->klen > ES_LRU_INLINE ? n->k.ext : NULL;
        if (!p || n->klen < klen) {
            uint8_t *q = realloc(p, klen);
            if (!q) {
                /* the node goes to the free list with its old key storage released */
                free(p);
                n->klen = 0;
                n->next = l->free_head;
                l->free_head = x;
                return od_err_set(err, OD_NOMEM, "eventstore: out of memory for the tail cache");
            }
            p = q;
        }
        memcpy(p, key, klen);
        n->k.ext = p;
    } else {
        if (n->klen > ES_LRU_INLINE) free(n->k.ext);
        if (klen) memcpy(n->k.in, key, klen);
    }
    n->klen = (uint16_t)klen;
    n->tag = (uint32_t)h;
    n->meta = *m;
    n->exists = exists != 0;
    /* the eviction may have shifted the probe run: probe again (the slots are in cache) */
    i = probe(l, key, klen, h);
    l->slots[i].tag = (uint32_t)h;
    l->slots[i].idx = x + 1;
    n->prev = n->next = NONE;
    push_front(l, x);
    l->count++;
    return OD_OK;
}

int es_lru_put(es_lru *l, const void *key, size_t klen, const es_meta *m, int exists, od_err *err)
{
    return es_lru_put_h(l, key, klen, es_hash(key, klen), m, exists, err);
}

void es_lru_remove(es_lru *l, const void *key, size_t klen)
{
    uint64_t h = es_hash(key, klen);
    size_t i = probe(l, key, klen, h);
    if (!l->slots[i].idx) return;
    uint32_t x = l->slots[i].idx - 1;
    slot_delete(l, i);
    unlink_list(l, x);
    l->count--;
    l->nodes[x].next = l->free_head;
    l->free_head = x;
}
