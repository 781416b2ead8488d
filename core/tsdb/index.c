/*
 * index.c — the TSDB's index encodings: key builders/parsers for the inverted index and
 * compressed postings lists (sorted series ids).
 *
 * Owns: od_sidvec and the postings codec; the key layout itself is documented in
 * tsdb_int.h and docs/formats.md.
 *
 * Postings value: varint count, then the first id and each following gap as varints. Series
 * ids are allocated densely from 1, so the series of one bucket mostly differ by small gaps
 * and a postings entry costs about one byte per series. A label=value pair may have several
 * postings fragments (one per ingest batch that created new series in the bucket); readers
 * union them and compaction merges them into one.
 */
#include <stdlib.h>
#include <string.h>

#include "../util/od_coding.h"
#include "tsdb_int.h"

int od_sidvec_push(od_sidvec *s, uint64_t sid)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        uint64_t *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = sid;
    return OD_OK;
}

void od_sidvec_free(od_sidvec *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int u64cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void od_sidvec_normalize(od_sidvec *s)
{
    int sorted = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] <= s->v[i - 1]) { sorted = 0; break; }
    if (sorted) return;
    qsort(s->v, s->n, sizeof *s->v, u64cmp);
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++)
        if (w == 0 || s->v[w - 1] != s->v[i]) s->v[w++] = s->v[i];
    s->n = w;
}

int od_sidvec_intersect(const od_sidvec *a, const od_sidvec *b, od_sidvec *out)
{
    size_t i = 0, j = 0;
    while (i < a->n && j < b->n) {
        if (a->v[i] < b->v[j]) i++;
        else if (a->v[i] > b->v[j]) j++;
        else {
            if (od_sidvec_push(out, a->v[i])) return OD_NOMEM;
            i++;
            j++;
        }
    }
    return OD_OK;
}

int od_postings_encode(const uint64_t *sids, size_t n, od_buf *out)
{
    if (od_buf_reserve(out, 10 + n * 2)) return OD_NOMEM;
    if (od_buf_put_varint(out, n)) return OD_NOMEM;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        if (od_buf_put_varint(out, sids[i] - prev)) return OD_NOMEM;
        prev = sids[i];
    }
    return OD_OK;
}

int od_postings_decode(const uint8_t *p, size_t len, od_sidvec *out, od_err *err)
{
    od_rd r = od_rd_make(p, len);
    uint64_t n = od_rd_varint(&r);
    if (!r.ok || n > len) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt postings list (count)");
    uint64_t prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t d = od_rd_varint(&r);
        if (!r.ok || (i > 0 && d == 0)) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt postings list");
        prev += d;
        if (od_sidvec_push(out, prev)) return od_err_set(err, OD_NOMEM, "out of memory");
    }
    if (od_rd_left(&r)) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt postings list (trailing bytes)");
    return OD_OK;
}

int od_key_postings_name_prefix(od_buf *out, int64_t bucket, const char *name)
{
    uint8_t h[9];
    size_t nl = strlen(name);
    h[0] = OD_K_POST;
    od_be64(h + 1, od_bucket_key(bucket));
    od_buf_reset(out);
    if (od_buf_append(out, h, 9) || od_buf_append_u8(out, (uint8_t)(nl >> 8)) ||
        od_buf_append_u8(out, (uint8_t)nl) || od_buf_append(out, name, nl))
        return OD_NOMEM;
    return OD_OK;
}

int od_key_postings_prefix(od_buf *out, int64_t bucket, const char *name, const char *value)
{
    size_t vl = strlen(value);
    uint8_t l4[4] = {(uint8_t)(vl >> 24), (uint8_t)(vl >> 16), (uint8_t)(vl >> 8), (uint8_t)vl};
    if (od_key_postings_name_prefix(out, bucket, name)) return OD_NOMEM;
    if (od_buf_append(out, l4, 4) || od_buf_append(out, value, vl)) return OD_NOMEM;
    return OD_OK;
}

int od_key_postings_parse(const uint8_t *k, size_t kl, int64_t *bucket, const uint8_t **name, size_t *nl,
                          const uint8_t **value, size_t *vl)
{
    if (kl < 1 + 8 + 2 || k[0] != OD_K_POST) return OD_CORRUPT;
    *bucket = od_bucket_unkey(od_rbe64(k + 1));
    size_t n = ((size_t)k[9] << 8) | k[10];
    if (kl < 11 + n + 4) return OD_CORRUPT;
    *name = k + 11;
    *nl = n;
    const uint8_t *q = k + 11 + n;
    size_t v = ((size_t)q[0] << 24) | ((size_t)q[1] << 16) | ((size_t)q[2] << 8) | q[3];
    if (kl != 11 + n + 4 + v + 8) return OD_CORRUPT;
    *value = q + 4;
    *vl = v;
    return OD_OK;
}
