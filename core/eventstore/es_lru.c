/*
 * es_lru.c — the bounded cache of per-key tail state (key → es_meta, or "key does not
 * exist") used by the append path so that sequence assignment does not read the store for
 * hot keys, while millions of cold keys cost nothing in memory.
 *
 * A chained hash table (FNV-1a over the key bytes, power-of-two buckets sized once for the
 * capacity) plus an intrusive doubly linked recency list. Get moves a node to the front; put
 * evicts from the back once count exceeds cap. Not thread-safe: the caller (eventstore.c)
 * holds the append lock around every call.
 */
#include "es_int.h"

#include <stdlib.h>
#include <string.h>

struct es_lru_node {
    es_lru_node *hnext;        /* hash chain */
    es_lru_node *prev, *next;  /* recency list */
    uint64_t hash;
    es_meta meta;
    int exists;
    size_t klen;
    uint8_t key[];
};

static uint64_t fnv(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

int es_lru_init(es_lru *l, size_t cap, od_err *err)
{
    memset(l, 0, sizeof *l);
    if (cap < 1) cap = 1;
    size_t nb = 16;
    while (nb < cap && nb < ((size_t)1 << 30)) nb <<= 1;
    l->buckets = calloc(nb, sizeof *l->buckets);
    if (!l->buckets) return od_err_set(err, OD_NOMEM, "eventstore: out of memory for the tail cache");
    l->nbuckets = nb;
    l->cap = cap;
    return OD_OK;
}

void es_lru_free(es_lru *l)
{
    es_lru_node *n = l->head;
    while (n) {
        es_lru_node *nx = n->next;
        free(n);
        n = nx;
    }
    free(l->buckets);
    memset(l, 0, sizeof *l);
}

static es_lru_node **find(es_lru *l, const void *key, size_t klen, uint64_t h)
{
    es_lru_node **pp = &l->buckets[h & (l->nbuckets - 1)];
    while (*pp) {
        es_lru_node *n = *pp;
        if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0) return pp;
        pp = &n->hnext;
    }
    return pp;
}

static void unlink_list(es_lru *l, es_lru_node *n)
{
    if (n->prev) n->prev->next = n->next; else l->head = n->next;
    if (n->next) n->next->prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void push_front(es_lru *l, es_lru_node *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head) l->head->prev = n;
    l->head = n;
    if (!l->tail) l->tail = n;
}

int es_lru_get(es_lru *l, const void *key, size_t klen, es_meta *m, int *exists)
{
    uint64_t h = fnv(key, klen);
    es_lru_node **pp = find(l, key, klen, h);
    if (!*pp) {
        l->misses++;
        return 0;
    }
    es_lru_node *n = *pp;
    unlink_list(l, n);
    push_front(l, n);
    *m = n->meta;
    *exists = n->exists;
    l->hits++;
    return 1;
}

static void remove_node(es_lru *l, es_lru_node *n)
{
    es_lru_node **pp = find(l, n->key, n->klen, n->hash);
    if (*pp == n) *pp = n->hnext;
    unlink_list(l, n);
    l->count--;
    free(n);
}

int es_lru_put(es_lru *l, const void *key, size_t klen, const es_meta *m, int exists, od_err *err)
{
    uint64_t h = fnv(key, klen);
    es_lru_node **pp = find(l, key, klen, h);
    if (*pp) {
        es_lru_node *n = *pp;
        n->meta = *m;
        n->exists = exists;
        unlink_list(l, n);
        push_front(l, n);
        return OD_OK;
    }
    es_lru_node *n = malloc(sizeof *n + klen);
    if (!n) return od_err_set(err, OD_NOMEM, "eventstore: out of memory for the tail cache");
    n->hnext = NULL;
    n->hash = h;
    n->meta = *m;
    n->exists = exists;
    n->klen = klen;
    if (klen) memcpy(n->key, key, klen);
    *pp = n;
    push_front(l, n);
    l->count++;
    while (l->count > l->cap && l->tail) remove_node(l, l->tail);
    return OD_OK;
}

void es_lru_remove(es_lru *l, const void *key, size_t klen)
{
    uint64_t h = fnv(key, klen);
    es_lru_node **pp = find(l, key, klen, h);
    if (*pp) remove_node(l, *pp);
}
