/*
 * es_format.c — the event store's byte encodings in the storage engine: engine keys (with
 * the order-preserving, prefix-free key escape), record values, per-key metadata, producer
 * state, and the pure retention rules. Writers and readers of each format sit side by side;
 * docs/formats.md describes the bytes and the reasons.
 */
#include "es_int.h"

#include <string.h>
#include <time.h>

#include "../util/od_coding.h"

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* Writes esc(key) at p (room for 2 × klen + 2 bytes); returns the bytes written. Zero bytes
 * are found with memchr: most keys have none and are copied whole. */
static size_t esc_put(uint8_t *p, const uint8_t *k, size_t klen)
{
    size_t o = 0;
    while (klen) {
        const uint8_t *z = memchr(k, 0, klen);
        size_t run = z ? (size_t)(z - k) + 1 : klen;
        memcpy(p + o, k, run);
        o += run;
        if (z) p[o++] = 0xFF;
        k += run;
        klen -= run;
    }
    p[o++] = 0x00;
    p[o++] = 0x01;
    return o;
}

int es_esc(od_buf *b, const void *key, size_t klen)
{
    if (od_buf_reserve(b, 2 * klen + 2)) return OD_NOMEM;
    b->len += esc_put(b->data + b->len, key, klen);
    return OD_OK;
}

int es_unesc(const uint8_t *p, size_t n, od_buf *out, size_t *used)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            if (out && od_buf_append_u8(out, p[i])) return OD_NOMEM;
            continue;
        }
        if (i + 1 >= n) return OD_CORRUPT;
        if (p[i + 1] == 0x01) {
            *used = i + 2;
            return OD_OK;
        }
        if (p[i + 1] != 0xFF) return OD_CORRUPT;
        if (out && od_buf_append_u8(out, 0)) return OD_NOMEM;
        i++;
    }
    return OD_CORRUPT;
}

int es_key_meta(od_buf *b, const void *key, size_t klen)
{
    od_buf_reset(b);
    if (od_buf_append_u8(b, ES_NS_META) || od_buf_append(b, key, klen)) return OD_NOMEM;
    return OD_OK;
}

int es_key_rec_prefix(od_buf *b, const void *key, size_t klen)
{
    od_buf_reset(b);
    if (od_buf_append_u8(b, ES_NS_REC)) return OD_NOMEM;
    return es_esc(b, key, klen);
}

int es_key_rec(od_buf *b, const void *key, size_t klen, uint64_t seq)
{
    od_buf_reset(b);
    if (od_buf_reserve(b, 1 + 2 * klen + 2 + 8)) return OD_NOMEM;
    uint8_t *p = b->data;
    p[0] = ES_NS_REC;
    size_t o = 1 + esc_put(p + 1, key, klen);
    put_be64(p + o, seq);
    b->len = o + 8;
    return OD_OK;
}

int es_key_tidx_prefix(od_buf *b, const void *key, size_t klen)
{
    od_buf_reset(b);
    if (od_buf_append_u8(b, ES_NS_TIDX)) return OD_NOMEM;
    return es_esc(b, key, klen);
}

int es_key_tidx(od_buf *b, const void *key, size_t klen, int64_t ts, uint64_t seq)
{
    uint8_t t[16];
    int rc = es_key_tidx_prefix(b, key, klen);
    if (rc) return rc;
    put_be64(t, (uint64_t)ts ^ (UINT64_C(1) << 63));
    put_be64(t + 8, seq);
    return od_buf_append(b, t, 16);
}

int es_key_producer(od_buf *b, const char *producer_id)
{
    od_buf_reset(b);
    if (od_buf_append_u8(b, ES_NS_PROD) || od_buf_append_str(b, producer_id)) return OD_NOMEM;
    return OD_OK;
}

int es_key_intent(od_buf *b, const void *key, size_t klen, uint64_t from, uint64_t to)
{
    uint8_t t[16];
    od_buf_reset(b);
    if (od_buf_append_u8(b, ES_NS_INTENT) || es_esc(b, key, klen)) return OD_NOMEM;
    put_be64(t, from);
    put_be64(t + 8, to);
    return od_buf_append(b, t, 16);
}

int es_intent_key_decode(const uint8_t *p, size_t n, od_buf *key_out, uint64_t *from, uint64_t *to)
{
    size_t used = 0;
    if (n < 1 || p[0] != ES_NS_INTENT) return OD_CORRUPT;
    int rc = es_unesc(p + 1, n - 1, key_out, &used);
    if (rc) return rc;
    if (n - 1 - used != 16) return OD_CORRUPT;
    *from = get_be64(p + 1 + used);
    *to = get_be64(p + 1 + used + 8);
    return OD_OK;
}

int es_rec_key_decode(const uint8_t *p, size_t n, od_buf *key_out, uint64_t *seq)
{
    size_t used = 0;
    if (n < 1 || p[0] != ES_NS_REC) return OD_CORRUPT;
    int rc = es_unesc(p + 1, n - 1, key_out, &used);
    if (rc) return rc;
    if (n - 1 - used != 8) return OD_CORRUPT;
    *seq = get_be64(p + 1 + used);
    return OD_OK;
}

int es_tidx_key_decode(const uint8_t *p, size_t n, od_buf *key_out, int64_t *ts, uint64_t *seq)
{
    size_t used = 0;
    if (n < 1 || p[0] != ES_NS_TIDX) return OD_CORRUPT;
    int rc = es_unesc(p + 1, n - 1, key_out, &used);
    if (rc) return rc;
    if (n - 1 - used != 16) return OD_CORRUPT;
    *ts = (int64_t)(get_be64(p + 1 + used) ^ (UINT64_C(1) << 63));
    *seq = get_be64(p + 1 + used + 8);
    return OD_OK;
}

int es_prefix_successor(od_buf *b, const void *prefix, size_t plen, int *has)
{
    const uint8_t *p = prefix;
    size_t n = plen;
    while (n > 0 && p[n - 1] == 0xFF) n--;
    od_buf_reset(b);
    *has = 0;
    if (n == 0) return OD_OK;
    if (od_buf_append(b, p, n)) return OD_NOMEM;
    b->data[n - 1]++;
    *has = 1;
    return OD_OK;
}

size_t es_headers_bytes(const od_ev_header *h, size_t nh)
{
    size_t n = 0;
    for (size_t i = 0; i < nh; i++)
        n += od_varint_len(h[i].nlen) + h[i].nlen + od_varint_len(h[i].vlen) + h[i].vlen;
    return n;
}

int es_rec_encode(od_buf *b, int64_t ts, uint8_t iflags, uint8_t flags, const od_ev_header *h, size_t nh,
                  const void *value, size_t vlen)
{
    od_buf_reset(b);
    if (od_buf_reserve(b, 3 + 10 + 10 + (nh ? es_headers_bytes(h, nh) : 0) + vlen)) return OD_NOMEM;
    /* written in place: the reserve above covers every byte */
    uint8_t *p = b->data;
    size_t o = 0;
    p[o++] = 1;
    p[o++] = iflags;
    p[o++] = flags;
    o += od_varint_put(p + o, od_zigzag(ts));
    o += od_varint_put(p + o, nh);
    for (size_t i = 0; i < nh; i++) {
        o += od_varint_put(p + o, h[i].nlen);
        if (h[i].nlen) memcpy(p + o, h[i].name, h[i].nlen);
        o += h[i].nlen;
        o += od_varint_put(p + o, h[i].vlen);
        if (h[i].vlen) memcpy(p + o, h[i].value, h[i].vlen);
        o += h[i].vlen;
    }
    if (vlen) memcpy(p + o, value, vlen);
    b->len = o + vlen;
    return OD_OK;
}

int es_rec_decode(const uint8_t *p, size_t n, es_rec *out)
{
    od_rd r = od_rd_make(p, n);
    if (od_rd_u8(&r) != 1) return OD_CORRUPT;
    out->iflags = od_rd_u8(&r);
    out->flags = od_rd_u8(&r);
    out->ts = od_unzigzag(od_rd_varint(&r));
    uint64_t nh = od_rd_varint(&r);
    if (!r.ok || nh > OD_EV_HEADERS_MAX) return OD_CORRUPT;
    out->nheaders = (size_t)nh;
    out->headers = r.p;
    for (uint64_t i = 0; i < nh; i++) {
        size_t l;
        od_rd_lenbytes(&r, &l);
        od_rd_lenbytes(&r, &l);
    }
    if (!r.ok) return OD_CORRUPT;
    out->headers_len = (size_t)(r.p - out->headers);
    out->value = r.p;
    out->vlen = (size_t)(r.end - r.p);
    return OD_OK;
}

int od_ev_header_next(const uint8_t *hdrs, size_t len, size_t *pos, od_ev_header *h)
{
    if (*pos >= len) return 0;
    od_rd r = od_rd_make(hdrs + *pos, len - *pos);
    size_t nl = 0, vl = 0;
    const uint8_t *n = od_rd_lenbytes(&r, &nl);
    const uint8_t *v = od_rd_lenbytes(&r, &vl);
    if (!r.ok) return 0;
    h->name = n;
    h->nlen = nl;
    h->value = v;
    h->vlen = vl;
    *pos = (size_t)(r.p - hdrs);
    return 1;
}

int es_meta_encode(od_buf *b, const es_meta *m)
{
    od_buf_reset(b);
    if (od_buf_reserve(b, 1 + 7 * 10)) return OD_NOMEM;
    uint8_t *p = b->data;
    size_t o = 0;
    p[o++] = 1;
    o += od_varint_put(p + o, m->first_seq);
    o += od_varint_put(p + o, m->next_seq);
    o += od_varint_put(p + o, m->bytes);
    o += od_varint_put(p + o, od_zigzag(m->last_ts));
    o += od_varint_put(p + o, od_zigzag(m->created_ms));
    o += od_varint_put(p + o, (uint64_t)m->ret_age_ms);
    o += od_varint_put(p + o, m->ret_count);
    b->len = o;
    return OD_OK;
}

int es_meta_decode(const uint8_t *p, size_t n, es_meta *m)
{
    od_rd r = od_rd_make(p, n);
    if (od_rd_u8(&r) != 1) return OD_CORRUPT;
    m->first_seq = od_rd_varint(&r);
    m->next_seq = od_rd_varint(&r);
    m->bytes = od_rd_varint(&r);
    m->last_ts = od_unzigzag(od_rd_varint(&r));
    m->created_ms = od_unzigzag(od_rd_varint(&r));
    m->ret_age_ms = (int64_t)od_rd_varint(&r);
    m->ret_count = od_rd_varint(&r);
    if (!r.ok || m->first_seq > m->next_seq || m->ret_age_ms < 0) return OD_CORRUPT;
    return OD_OK;
}

int es_sret_encode(od_buf *b, int64_t age_ms, int64_t floor_ts)
{
    od_buf_reset(b);
    if (age_ms < 0 || od_buf_append_u8(b, 1) || od_buf_put_varint(b, (uint64_t)age_ms) ||
        od_buf_put_varint(b, od_zigzag(floor_ts)))
        return age_ms < 0 ? OD_BADREQ : OD_NOMEM;
    return OD_OK;
}

int es_sret_decode(const uint8_t *p, size_t n, int64_t *age_ms, int64_t *floor_ts)
{
    od_rd r = od_rd_make(p, n);
    if (od_rd_u8(&r) != 1) return OD_CORRUPT;
    uint64_t a = od_rd_varint(&r);
    *floor_ts = od_unzigzag(od_rd_varint(&r));
    if (!r.ok || a > (uint64_t)INT64_MAX) return OD_CORRUPT;
    *age_ms = (int64_t)a;
    return OD_OK;
}

int es_prod_encode(od_buf *b, uint64_t pseq, int64_t updated_ms)
{
    od_buf_reset(b);
    if (od_buf_append_u8(b, 1) || od_buf_put_varint(b, pseq) || od_buf_put_varint(b, od_zigzag(updated_ms)))
        return OD_NOMEM;
    return OD_OK;
}

int es_prod_decode(const uint8_t *p, size_t n, uint64_t *pseq, int64_t *updated_ms)
{
    od_rd r = od_rd_make(p, n);
    if (od_rd_u8(&r) != 1) return OD_CORRUPT;
    *pseq = od_rd_varint(&r);
    *updated_ms = od_unzigzag(od_rd_varint(&r));
    return r.ok ? OD_OK : OD_CORRUPT;
}

int64_t es_eff_age(const es_meta *m, int64_t store_age) { return m->ret_age_ms ? m->ret_age_ms : store_age; }

uint64_t es_eff_count(const es_meta *m, uint64_t store_count) { return m->ret_count ? m->ret_count : store_count; }

uint64_t es_visible_first(const es_meta *m, uint64_t store_count)
{
    uint64_t c = es_eff_count(m, store_count);
    uint64_t f = m->first_seq;
    if (c && m->next_seq > c && m->next_seq - c > f) f = m->next_seq - c;
    return f;
}

int es_age_hidden(int64_t ts, int64_t age_ms, int64_t now_ms)
{
    if (age_ms <= 0) return 0;
    return ts < now_ms - age_ms;
}

int64_t es_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}
