/*
 * disk_cache.c — local disk cache of object byte ranges (see disk_cache.h).
 *
 * File layout (little-endian): "ODDC" | version u8 (1) | 3 reserved | off u64 | len u64 |
 * keylen u16 | key | data | masked CRC-32C of everything before it. Name: 16 hex digits of
 * FNV-1a(key, off, len) + ".dc". Writes go to a temporary name and are renamed into place, so
 * a reader sees a whole file or none (no fsync: losing the cache in a crash is harmless, and
 * a torn file fails its CRC).
 *
 * Index: a chained hash table (4096 buckets) of entries {hash, bytes} plus an LRU list;
 * the least recently used files are unlinked while the total exceeds the capacity.
 */
#include "disk_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "od_coding.h"
#include "od_crc32c.h"

#define NBUCKETS 4096
#define HDR 26 /* bytes before the key */

typedef struct dc_entry {
    uint64_t h;
    uint64_t bytes;
    struct dc_entry *hnext;
    struct dc_entry *prev, *next; /* LRU: head = most recent */
} dc_entry;

struct od_disk_cache {
    pthread_mutex_t mu;
    char *dir;
    size_t capacity;
    uint64_t total, hits, misses;
    dc_entry *buckets[NBUCKETS];
    dc_entry *head, *tail;
    uint64_t tmp_seq;
};

static uint64_t range_hash(const char *key, uint64_t off, uint64_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = key; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    for (int i = 0; i < 8; i++) h = (h ^ (uint8_t)(off >> (8 * i))) * 1099511628211ull;
    for (int i = 0; i < 8; i++) h = (h ^ (uint8_t)(len >> (8 * i))) * 1099511628211ull;
    return h;
}

static void path_of(const od_disk_cache *c, uint64_t h, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%016" PRIx64 ".dc", c->dir, h);
}

static dc_entry *find(od_disk_cache *c, uint64_t h)
{
    for (dc_entry *e = c->buckets[h % NBUCKETS]; e; e = e->hnext)
        if (e->h == h) return e;
    return NULL;
}

static void lru_unlink(od_disk_cache *c, dc_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(od_disk_cache *c, dc_entry *e)
{
    e->next = c->head;
    e->prev = NULL;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static void remove_entry(od_disk_cache *c, dc_entry *e, int unlink_file)
{
    dc_entry **pp = &c->buckets[e->h % NBUCKETS];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->total -= e->bytes;
    if (unlink_file) {
        char p[4200];
        path_of(c, e->h, p, sizeof p);
        unlink(p);
    }
    free(e);
}

static void add_entry(od_disk_cache *c, uint64_t h, uint64_t bytes)
{
    dc_entry *e = find(c, h);
    if (e) {
        c->total -= e->bytes;
        e->bytes = bytes;
        c->total += bytes;
        lru_unlink(c, e);
        lru_front(c, e);
    } else {
        e = calloc(1, sizeof *e);
        if (!e) return;
        e->h = h;
        e->bytes = bytes;
        e->hnext = c->buckets[h % NBUCKETS];
        c->buckets[h % NBUCKETS] = e;
        lru_front(c, e);
        c->total += bytes;
    }
    while (c->total > c->capacity && c->tail && c->tail != e) remove_entry(c, c->tail, 1);
}

int od_disk_cache_open(const char *dir, size_t capacity, od_disk_cache **out, od_err *err)
{
    *out = NULL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return od_err_set(err, OD_IO, "disk cache: cannot create %s: %s", dir, strerror(errno));
    od_disk_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return od_err_set(err, OD_NOMEM, "disk cache: out of memory");
    }
    c->capacity = capacity;
    pthread_mutex_init(&c->mu, NULL);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (n > 4 && strstr(de->d_name, ".tmp.")) {
                unlink(p); /* a write cut short by a crash */
                continue;
            }
            uint64_t h;
            struct stat st;
            if (n == 19 && strcmp(de->d_name + 16, ".dc") == 0 && sscanf(de->d_name, "%16" SCNx64, &h) == 1 &&
                stat(p, &st) == 0)
                add_entry(c, h, (uint64_t)st.st_size);
        }
        closedir(d);
    }
    *out = c;
    return OD_OK;
}

void od_disk_cache_close(od_disk_cache *c)
{
    if (!c) return;
    while (c->head) remove_entry(c, c->head, 0);
    pthread_mutex_destroy(&c->mu);
    free(c->dir);
    free(c);
}

int od_disk_cache_get(od_disk_cache *c, const char *key, uint64_t off, uint64_t len, od_buf *out)
{
    uint64_t h = range_hash(key, off, len);
    pthread_mutex_lock(&c->mu);
    dc_entry *e = find(c, h);
    if (!e) {
        c->misses++;
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    lru_unlink(c, e);
    lru_front(c, e);
    pthread_mutex_unlock(&c->mu);
    char p[4200];
    path_of(c, h, p, sizeof p);
    od_buf b = {0};
    int ok = 0;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t klen = strlen(key);
    if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size >= HDR + klen + 4 &&
        od_buf_reserve(&b, (size_t)st.st_size) == OD_OK && pread(fd, b.data, (size_t)st.st_size, 0) == st.st_size) {
        size_t n = (size_t)st.st_size;
        const uint8_t *d = b.data;
        ok = memcmp(d, "ODDC", 4) == 0 && d[4] == 1 && od_get_u64(d + 8) == off && od_get_u64(d + 16) == len &&
             od_get_u16(d + 24) == klen && memcmp(d + 26, key, klen) == 0 &&
             od_crc32c_unmask(od_get_u32(d + n - 4)) == od_crc32c(d, n - 4);
        if (ok) {
            size_t dn = n - (HDR) - klen - 4;
            od_buf_reset(out);
            ok = od_buf_append(out, d + 26 + klen, dn) == OD_OK;
        }
    }
    if (fd >= 0) close(fd);
    od_buf_free(&b);
    pthread_mutex_lock(&c->mu);
    if (ok) {
        c->hits++;
    } else {
        c->misses++;
        if ((e = find(c, h))) remove_entry(c, e, 1); /* collision, corrupt or vanished */
    }
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void od_disk_cache_put(od_disk_cache *c, const char *key, uint64_t off, uint64_t len, const uint8_t *data,
                       size_t n)
{
    size_t klen = strlen(key);
    if (klen > 65535 || n + klen + HDR + 4 > c->capacity) return;
    uint64_t h = range_hash(key, off, len);
    od_buf b = {0};
    if (od_buf_reserve(&b, HDR + klen + n + 4)) return;
    uint8_t *d = b.data;
    memcpy(d, "ODDC", 4);
    d[4] = 1;
    d[5] = d[6] = d[7] = 0;
    od_put_u64(d + 8, off);
    od_put_u64(d + 16, len);
    od_put_u16(d + 24, (uint16_t)klen);
    memcpy(d + 26, key, klen);
    if (n) memcpy(d + 26 + klen, data, n);
    size_t tot = 26 + klen + n;
    od_put_u32(d + tot, od_crc32c_mask(od_crc32c(d, tot)));
    tot += 4;
    char p[4200], tmp[4300];
    path_of(c, h, p, sizeof p);
    pthread_mutex_lock(&c->mu);
    uint64_t seq = ++c->tmp_seq;
    pthread_mutex_unlock(&c->mu);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d.%" PRIu64, p, (int)getpid(), seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write(fd, d, tot) == (ssize_t)tot;
    if (fd >= 0) close(fd);
    ok = ok && rename(tmp, p) == 0;
    if (!ok) unlink(tmp);
    od_buf_free(&b);
    if (!ok) return;
    pthread_mutex_lock(&c->mu);
    add_entry(c, h, tot);
    pthread_mutex_unlock(&c->mu);
}

void od_disk_cache_stats(od_disk_cache *c, uint64_t *hits, uint64_t *misses, uint64_t *bytes)
{
    pthread_mutex_lock(&c->mu);
    if (hits) *hits = c->hits;
    if (misses) *misses = c->misses;
    if (bytes) *bytes = c->total;
    pthread_mutex_unlock(&c->mu);
}
