/*
 * disk_cache.h — optional local disk cache of object byte ranges (for remote stores).
 * Internal to core/lsm.
 *
 * Only immutable objects go through it (collections); WAL and manifest reads never do, so
 * they are never served stale. One file per cached range in `dir`, named by a 64-bit hash
 * of (object key, offset, length); the file repeats the key, offset and length and carries a
 * CRC-32C, so a collision or a torn/corrupt file is a miss (and the file is removed), never
 * wrong data. Byte-bounded: least recently used files are deleted beyond `capacity`.
 * Thread-safe. Files left by a previous process are adopted at open.
 */
#ifndef OD_DISK_CACHE_H
#define OD_DISK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "od_buf.h"
#include "od_err.h"

typedef struct od_disk_cache od_disk_cache;

int od_disk_cache_open(const char *dir, size_t capacity, od_disk_cache **out, od_err *err);
void od_disk_cache_close(od_disk_cache *c);
/* 1 = hit (out replaced with the bytes), 0 = miss. */
int od_disk_cache_get(od_disk_cache *c, const char *key, uint64_t off, uint64_t len, od_buf *out);
/* Store a range (best effort: I/O errors just mean it is not cached). */
void od_disk_cache_put(od_disk_cache *c, const char *key, uint64_t off, uint64_t len, const uint8_t *data,
                       size_t n);
void od_disk_cache_stats(od_disk_cache *c, uint64_t *hits, uint64_t *misses, uint64_t *bytes);

#endif
