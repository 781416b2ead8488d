/*
 * od_bigbuf.c — large transient buffers returned to the OS on free (see od_bigbuf.h).
 *
 * Growth is geometric (×2, rounded up to whole pages once mapped). Crossing
 * OD_BIGBUF_MAP_MIN moves the bytes from malloc into a fresh mapping; a mapped buffer grows
 * with mremap(MREMAP_MAYMOVE) on Linux (the kernel moves page tables, no copy), elsewhere
 * with mmap + memcpy + munmap.
 */
#include "od_bigbuf.h"
#include "od_err.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define OD_BIGBUF_NO_MAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define OD_BIGBUF_NO_MAP 1
#endif
#endif

#ifndef OD_BIGBUF_NO_MAP
static size_t page_round(size_t n)
{
    long ps = sysconf(_SC_PAGESIZE);
    size_t p = ps > 0 ? (size_t)ps : 4096;
    return n > SIZE_MAX - (p - 1) ? 0 : (n + p - 1) / p * p;
}
#endif

int od_bigbuf_reserve(od_bigbuf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return OD_NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap) return OD_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
#ifndef OD_BIGBUF_NO_MAP
    if (cap >= OD_BIGBUF_MAP_MIN) {
        /* a pre-size of exactly `need` bytes (e.g. a compaction output's expected size) is
         * taken as is rather than doubled past it */
        size_t want = page_round(need > b->cap * 2 ? need : cap);
        if (!want) return OD_NOMEM;
        void *p;
        if (b->mapped) {
#ifdef MREMAP_MAYMOVE
            p = mremap(b->data, b->cap, want, MREMAP_MAYMOVE);
            if (p == MAP_FAILED) return OD_NOMEM;
#else
            p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return OD_NOMEM;
            if (b->len) memcpy(p, b->data, b->len);
            munmap(b->data, b->cap);
#endif
        } else {
            p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return OD_NOMEM;
            if (b->len) memcpy(p, b->data, b->len);
            free(b->data);
        }
        b->data = p;
        b->cap = want;
        b->mapped = 1;
        return OD_OK;
    }
#endif
    uint8_t *p = realloc(b->data, cap);
    if (!p) return OD_NOMEM;
    b->data = p;
    b->cap = cap;
    return OD_OK;
}

int od_bigbuf_append(od_bigbuf *b, const void *p, size_t n)
{
    if (n == 0) return OD_OK;
    int rc = od_bigbuf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return OD_OK;
}

void od_bigbuf_free(od_bigbuf *b)
{
    if (b->mapped)
        munmap(b->data, b->cap);
    else
        free(b->data);
    memset(b, 0, sizeof *b);
}
