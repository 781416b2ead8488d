/*
 * store_mem.c — the mem:// backend: an in-process object store for tests and benchmarks.
 *
 * mem://name opens the store called `name`; every handle opened with the same name in one
 * process shares the same objects (so tests can "reopen" a database), and the objects live
 * until the last handle closes. That registry is the one process-global in core/objstore,
 * guarded by a mutex; distinct names never share anything.
 *
 * Objects are kept in a sorted array (binary search; list walks it in key order). ETags are
 * a per-store generation number, so a rewrite with identical bytes still changes the ETag.
 * One mutex per shared store makes every op atomic, which gives the same conditional-write
 * semantics as file:// and S3.
 */
#include "od_objstore_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct mem_obj {
    char *key;
    uint8_t *data;
    size_t len;
    uint64_t gen;
    int64_t mtime_ms;
} mem_obj;

typedef struct mem_shared {
    char *name;
    int refs;
    pthread_mutex_t mu;
    mem_obj *objs;
    size_t n, cap;
    uint64_t next_gen;
    struct mem_shared *next;
} mem_shared;

typedef struct mem_store {
    od_store base;
    mem_shared *sh;
} mem_store;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mem_shared *registry;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Index of key, or -(insertion point)-1 when absent. */
static long find(mem_shared *sh, const char *key)
{
    size_t lo = 0, hi = sh->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(sh->objs[mid].key, key);
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -(long)lo - 1;
}

static void fill_meta(const mem_obj *o, od_obj_meta *m)
{
    if (!m) return;
    m->size = o->len;
    snprintf(m->etag, sizeof m->etag, "g%llu", (unsigned long long)o->gen);
    m->mtime_ms = o->mtime_ms;
}

static int mem_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    mem_shared *sh = ((mem_store *)s)->sh;
    pthread_mutex_lock(&sh->mu);
    long i = find(sh, key);
    int rc = OD_OK;
    if (i < 0) {
        rc = od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
    } else {
        rc = od_buf_append(out, sh->objs[i].data, sh->objs[i].len);
        if (rc) od_err_set(err, rc, "objstore: out of memory reading \"%.200s\"", key);
        else fill_meta(&sh->objs[i], meta);
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int mem_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    mem_shared *sh = ((mem_store *)s)->sh;
    pthread_mutex_lock(&sh->mu);
    long i = find(sh, key);
    int rc = OD_OK;
    if (i < 0) {
        rc = od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
    } else if (off >= sh->objs[i].len) {
        rc = od_err_set(err, OD_BADREQ, "objstore: range offset %llu beyond the end of \"%.200s\" (%zu bytes)",
                        (unsigned long long)off, key, sh->objs[i].len);
    } else {
        uint64_t n = sh->objs[i].len - off;
        if (len < n) n = len;
        rc = od_buf_append(out, sh->objs[i].data + off, (size_t)n);
        if (rc) od_err_set(err, rc, "objstore: out of memory reading \"%.200s\"", key);
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int mem_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    mem_shared *sh = ((mem_store *)s)->sh;
    pthread_mutex_lock(&sh->mu);
    long i = find(sh, key);
    int rc = OD_OK;
    if (i < 0) rc = od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
    else fill_meta(&sh->objs[i], meta);
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int grow(mem_shared *sh)
{
    if (sh->n < sh->cap) return OD_OK;
    size_t nc = sh->cap ? sh->cap * 2 : 64;
    mem_obj *no = realloc(sh->objs, nc * sizeof *no);
    if (!no) return OD_NOMEM;
    sh->objs = no;
    sh->cap = nc;
    return OD_OK;
}

static int mem_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode,
                   const char *etag, od_obj_meta *meta_out, od_err *err)
{
    mem_shared *sh = ((mem_store *)s)->sh;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return od_err_set(err, OD_NOMEM, "objstore: out of memory writing \"%.200s\"", key);
    if (len) memcpy(copy, data, len);
    pthread_mutex_lock(&sh->mu);
    long i = find(sh, key);
    int rc = OD_OK;
    if (mode == OD_PUT_IF_ABSENT && i >= 0) {
        rc = od_err_set(err, OD_EXISTS, "objstore: \"%.200s\" already exists", key);
    } else if (mode == OD_PUT_IF_MATCH && i < 0) {
        rc = od_err_set(err, OD_NOTFOUND, "objstore: conditional replace of missing \"%.200s\"", key);
    } else if (mode == OD_PUT_IF_MATCH) {
        char cur[OD_ETAG_MAX];
        snprintf(cur, sizeof cur, "g%llu", (unsigned long long)sh->objs[i].gen);
        if (strcmp(cur, etag) != 0)
            rc = od_err_set(err, OD_PRECONDITION, "objstore: \"%.200s\" changed (ETag mismatch)", key);
    }
    if (rc == OD_OK && i < 0) {
        size_t at = (size_t)(-i - 1);
        char *kcopy = strdup(key);
        if (!kcopy || grow(sh) != OD_OK) {
            free(kcopy);
            rc = od_err_set(err, OD_NOMEM, "objstore: out of memory writing \"%.200s\"", key);
        } else {
            memmove(&sh->objs[at + 1], &sh->objs[at], (sh->n - at) * sizeof(mem_obj));
            sh->n++;
            sh->objs[at] = (mem_obj){.key = kcopy};
            i = (long)at;
        }
    }
    if (rc == OD_OK) {
        mem_obj *o = &sh->objs[i];
        free(o->data);
        o->data = copy;
        copy = NULL;
        o->len = len;
        o->gen = ++sh->next_gen;
        o->mtime_ms = now_ms();
        fill_meta(o, meta_out);
    }
    pthread_mutex_unlock(&sh->mu);
    free(copy);
    return rc;
}

static int mem_del(od_store *s, const char *key, od_err *err)
{
    (void)err;
    mem_shared *sh = ((mem_store *)s)->sh;
    pthread_mutex_lock(&sh->mu);
    long i = find(sh, key);
    if (i >= 0) {
        free(sh->objs[i].key);
        free(sh->objs[i].data);
        memmove(&sh->objs[i], &sh->objs[i + 1], (sh->n - (size_t)i - 1) * sizeof(mem_obj));
        sh->n--;
    }
    pthread_mutex_unlock(&sh->mu);
    return OD_OK;
}

/* Lists in pages of 1000 keys, releasing the lock between pages and around callbacks so a
 * callback may call back into the store. */
static int mem_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx,
                    od_err *err)
{
    mem_shared *sh = ((mem_store *)s)->sh;
    size_t plen = strlen(prefix);
    char *cursor = start_after ? strdup(start_after) : NULL;
    if (start_after && !cursor) return od_err_set(err, OD_NOMEM, "objstore: out of memory listing");
    enum { PAGE = 1000 };
    char **keys = calloc(PAGE, sizeof *keys);
    od_obj_meta *metas = calloc(PAGE, sizeof *metas);
    int rc = OD_OK;
    if (!keys || !metas) rc = od_err_set(err, OD_NOMEM, "objstore: out of memory listing");
    while (rc == OD_OK) {
        size_t got = 0;
        pthread_mutex_lock(&sh->mu);
        od_store_count_list_page(s);
        const char *from = cursor && strcmp(cursor, prefix) > 0 ? cursor : prefix;
        long i = find(sh, from);
        size_t at = i < 0 ? (size_t)(-i - 1) : (size_t)i;
        if (i >= 0 && cursor && from == cursor) at++; /* start_after is exclusive */
        for (; at < sh->n && got < PAGE; at++) {
            if (strncmp(sh->objs[at].key, prefix, plen) != 0) break;
            keys[got] = strdup(sh->objs[at].key);
            if (!keys[got]) { rc = OD_NOMEM; break; }
            fill_meta(&sh->objs[at], &metas[got]);
            got++;
        }
        pthread_mutex_unlock(&sh->mu);
        if (rc) { od_err_set(err, rc, "objstore: out of memory listing"); }
        int stop = 0;
        for (size_t k = 0; k < got; k++) {
            if (rc == OD_OK && !stop && cb(ctx, keys[k], &metas[k])) stop = 1;
            if (k + 1 == got) { free(cursor); cursor = keys[k]; }
            else free(keys[k]);
        }
        if (stop || got < PAGE) break;
    }
    free(cursor);
    free(keys);
    free(metas);
    return rc;
}

static void mem_close(od_store *s)
{
    mem_store *m = (mem_store *)s;
    mem_shared *sh = m->sh;
    pthread_mutex_lock(&registry_mu);
    if (--sh->refs == 0) {
        for (mem_shared **pp = &registry; *pp; pp = &(*pp)->next)
            if (*pp == sh) { *pp = sh->next; break; }
        for (size_t i = 0; i < sh->n; i++) { free(sh->objs[i].key); free(sh->objs[i].data); }
        free(sh->objs);
        free(sh->name);
        pthread_mutex_destroy(&sh->mu);
        free(sh);
    }
    pthread_mutex_unlock(&registry_mu);
    od_store_destroy_base(s);
    free(m);
}

static const od_store_ops mem_ops = {
    .get = mem_get, .get_range = mem_get_range, .head = mem_head, .put = mem_put,
    .del = mem_del, .list = mem_list, .close = mem_close,
};

int od_store_open_mem(const char *name, od_store **out, od_err *err)
{
    if (!*name) return od_err_set(err, OD_BADREQ, "objstore: mem:// URI needs a name (mem://NAME)");
    mem_store *m = calloc(1, sizeof *m);
    if (!m) return od_err_set(err, OD_NOMEM, "objstore: out of memory");
    pthread_mutex_lock(&registry_mu);
    mem_shared *sh = registry;
    while (sh && strcmp(sh->name, name) != 0) sh = sh->next;
    if (!sh) {
        sh = calloc(1, sizeof *sh);
        if (sh) sh->name = strdup(name);
        if (!sh || !sh->name) {
            pthread_mutex_unlock(&registry_mu);
            if (sh) free(sh);
            free(m);
            return od_err_set(err, OD_NOMEM, "objstore: out of memory");
        }
        pthread_mutex_init(&sh->mu, NULL);
        sh->next = registry;
        registry = sh;
    }
    sh->refs++;
    pthread_mutex_unlock(&registry_mu);
    m->sh = sh;
    char desc[256];
    snprintf(desc, sizeof desc, "mem://%.200s", name);
    od_store_init_base(&m->base, &mem_ops, desc);
    *out = &m->base;
    return OD_OK;
}
