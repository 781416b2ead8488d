/*
 * od_bigbuf.h — a growable byte buffer for large transient bytes (an SST being built, its
 * bloom hashes) that must go back to the operating system when freed.
 *
 * Why not od_buf: glibc serves a malloc of up to 32 MiB from a thread's heap arena once a
 * block of that size has been freed (its mmap threshold rises to the largest freed mapping),
 * and memory freed into an arena stays resident. A storage engine that builds tens of MiB per
 * flush or compaction output would keep that much per background thread, for good.
 *
 * How: below OD_BIGBUF_MAP_MIN bytes the buffer is malloc'd; from there on it is its own
 * anonymous mapping (mmap; grown with mremap on Linux), unmapped by od_bigbuf_free. No
 * process-wide allocator setting is touched. Built with AddressSanitizer, it always uses
 * malloc so that overflows are still caught. A zeroed od_bigbuf ({0}) is empty and valid.
 * Not an od_buf: its bytes must never be passed to free()/realloc() or into an od_buf.
 */
#ifndef OD_BIGBUF_H
#define OD_BIGBUF_H

#include <stddef.h>
#include <stdint.h>

#define OD_BIGBUF_MAP_MIN ((size_t)256 << 10)

typedef struct od_bigbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    int mapped; /* data is an mmap of cap bytes (else malloc'd) */
} od_bigbuf;

int od_bigbuf_reserve(od_bigbuf *b, size_t extra); /* cap >= len + extra; OD_OK/OD_NOMEM */
int od_bigbuf_append(od_bigbuf *b, const void *p, size_t n);
void od_bigbuf_free(od_bigbuf *b);                  /* unmaps / frees; re-zeroes */

#endif
