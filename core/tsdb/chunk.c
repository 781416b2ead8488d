/*
 * chunk.c — the sample chunk codec: Prometheus-XOR (Gorilla) compression of (ms, double)
 * samples, plus sample-vector helpers.
 *
 * Owns: od_chunk_encode / od_chunk_decode / od_chunk_info and od_samplevec.
 *
 * Layout of one chunk (byte-exact in docs/formats.md):
 *   u8 encoding (1 = XOR) | varint n | zigzag varint t0 | u64 LE bits of v0 |
 *   bitstream (MSB first) of samples 1..n-1 | u32 LE CRC32C of everything before
 * Timestamps: sample 1 stores its delta as a 64-bit zigzag-free raw field after a '1111'
 * prefix-free code like every other delta-of-delta; each later sample stores the
 * delta-of-delta dod = (t_i - t_{i-1}) - (t_{i-1} - t_{i-2}) (wrapping 64-bit arithmetic, so
 * any int64 sequence round-trips, even unsorted) with the Prometheus buckets:
 *   '0' (dod = 0) | '10' + 14 bits | '110' + 17 bits | '1110' + 20 bits | '1111' + 64 bits
 * (the first delta is coded the same way with prev delta 0).
 * Values: x = bits(v_i) XOR bits(v_{i-1}); '0' when x == 0; '10' + the meaningful bits when
 * they fit the previous leading/trailing-zero window; else '11' + 5-bit leading-zero count
 * (capped at 31) + 6-bit length (64 stored as 0) + the bits. Values are handled as raw
 * 64-bit patterns, so NaN payloads (stale markers), ±Inf and -0.0 are kept exactly.
 * Encoding 2 (DEC, see encode_dec) replaces the XOR value coding by integer deltas when all
 * values of the chunk are exact short decimals (counters, gauges of bytes, 2-decimal CPU
 * seconds): the encoder writes both and keeps the smaller, so it never loses to plain XOR.
 * The CRC makes damage in the store an OD_CORRUPT error, never wrong samples.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../util/od_coding.h"
#include "../util/od_crc32c.h"
#include "tsdb_int.h"

/* ---------------------------------------------------------------- vectors */

int od_samplevec_push(od_samplevec *sv, od_sample s)
{
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 64;
        od_sample *nv = realloc(sv->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        sv->v = nv;
        sv->cap = nc;
    }
    sv->v[sv->n++] = s;
    return OD_OK;
}

void od_samplevec_free(od_samplevec *sv)
{
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

/* Stable merge sort by t (insertion sort for short or already-sorted runs). */
static void msort(od_sample *a, od_sample *tmp, size_t n)
{
    if (n < 16) {
        for (size_t i = 1; i < n; i++) {
            od_sample x = a[i];
            size_t j = i;
            while (j > 0 && a[j - 1].t > x.t) { a[j] = a[j - 1]; j--; }
            a[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    msort(a, tmp, h);
    msort(a + h, tmp, n - h);
    if (a[h - 1].t <= a[h].t) return;
    memcpy(tmp, a, h * sizeof *a);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) a[k++] = (a[j].t < tmp[i].t) ? a[j++] : tmp[i++];
    while (i < h) a[k++] = tmp[i++];
}

int od_samples_sort_dedup(od_sample *s, size_t *n)
{
    size_t cnt = *n;
    int sorted = 1;
    for (size_t i = 1; i < cnt; i++)
        if (s[i].t <= s[i - 1].t) { sorted = 0; break; }
    if (sorted) return OD_OK;
    od_sample *tmp = malloc((cnt / 2 + 1) * sizeof *tmp);
    if (!tmp) return OD_NOMEM;
    msort(s, tmp, cnt);
    free(tmp);
    size_t w = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (w > 0 && s[w - 1].t == s[i].t) s[w - 1] = s[i]; /* the later write wins */
        else s[w++] = s[i];
    }
    *n = w;
    return OD_OK;
}

/* ---------------------------------------------------------------- bit I/O */

typedef struct bitw {
    od_buf *b;
    uint64_t acc;  /* pending bits, right-aligned */
    int nacc;      /* number of pending bits (< 8 after a flush) */
    int rc;
} bitw;

static void bw_put(bitw *w, uint64_t v, int nbits)
{
    /* write in pieces of at most 32 bits so acc never overflows */
    while (nbits > 0) {
        int take = nbits > 32 ? 32 : nbits;
        uint64_t part = (nbits == 64 && take == 32) ? (v >> 32) : (v >> (nbits - take));
        if (take < 64) part &= ((uint64_t)1 << take) - 1;
        w->acc = (w->acc << take) | part;
        w->nacc += take;
        nbits -= take;
        while (w->nacc >= 8) {
            w->nacc -= 8;
            if (od_buf_append_u8(w->b, (uint8_t)(w->acc >> w->nacc))) w->rc = OD_NOMEM;
        }
        w->acc &= w->nacc ? (((uint64_t)1 << w->nacc) - 1) : 0;
    }
}

static void bw_flush(bitw *w)
{
    if (w->nacc > 0) {
        if (od_buf_append_u8(w->b, (uint8_t)(w->acc << (8 - w->nacc)))) w->rc = OD_NOMEM;
        w->nacc = 0;
        w->acc = 0;
    }
}

typedef struct bitr {
    const uint8_t *p;
    size_t len;    /* bytes */
    size_t pos;    /* bit position */
    int ok;
} bitr;

/* The bit-by-byte path: the last bytes of a stream (fewer than 8 left), and reads that
 * straddle 9 bytes. Same result as the fast path, one byte at a time. */
static uint64_t br_get_slow(bitr *r, int nbits)
{
    uint64_t v = 0;
    while (nbits > 0) {
        size_t byte = r->pos >> 3;
        int off = (int)(r->pos & 7);
        int avail = 8 - off;
        int take = nbits < avail ? nbits : avail;
        uint64_t bits = (uint64_t)(r->p[byte] >> (avail - take)) & ((1u << take) - 1);
        v = (v << take) | bits;
        r->pos += (size_t)take;
        nbits -= take;
    }
    return v;
}

/* Read nbits (0…64) MSB-first. Past the end: 0 and ok = 0 (checked by the decoders). The
 * fast path takes the bits from one big-endian 64-bit load. */
static inline uint64_t br_get(bitr *r, int nbits)
{
    if (!r->ok || r->pos + (size_t)nbits > r->len * 8) {
        r->ok = 0;
        return 0;
    }
    if (nbits == 0) return 0;
    size_t byte = r->pos >> 3;
    int off = (int)(r->pos & 7);
    if (byte + 8 <= r->len && off + nbits <= 64) {
        uint64_t w = ((uint64_t)r->p[byte] << 56) | ((uint64_t)r->p[byte + 1] << 48) |
                     ((uint64_t)r->p[byte + 2] << 40) | ((uint64_t)r->p[byte + 3] << 32) |
                     ((uint64_t)r->p[byte + 4] << 24) | ((uint64_t)r->p[byte + 5] << 16) |
                     ((uint64_t)r->p[byte + 6] << 8) | (uint64_t)r->p[byte + 7];
        r->pos += (size_t)nbits;
        return (w << off) >> (64 - nbits);
    }
    return br_get_slow(r, nbits);
}

static inline int br_bit(bitr *r)
{
    if (!r->ok || r->pos >= r->len * 8) {
        r->ok = 0;
        return 0;
    }
    int bit = (r->p[r->pos >> 3] >> (7 - (r->pos & 7))) & 1;
    r->pos++;
    return bit;
}

/* ---------------------------------------------------------------- codec */

static inline uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static inline double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static int fits_signed(int64_t v, int bits)
{
    int64_t lim = (int64_t)1 << (bits - 1);
    return v >= -lim && v < lim;
}

static void put_dod(bitw *w, int64_t dod)
{
    if (dod == 0) bw_put(w, 0, 1);
    else if (fits_signed(dod, 14)) { bw_put(w, 0x2, 2); bw_put(w, (uint64_t)dod & 0x3fff, 14); }
    else if (fits_signed(dod, 17)) { bw_put(w, 0x6, 3); bw_put(w, (uint64_t)dod & 0x1ffff, 17); }
    else if (fits_signed(dod, 20)) { bw_put(w, 0xe, 4); bw_put(w, (uint64_t)dod & 0xfffff, 20); }
    else { bw_put(w, 0xf, 4); bw_put(w, (uint64_t)dod, 64); }
}

static int64_t sext(uint64_t v, int bits)
{
    uint64_t m = (uint64_t)1 << (bits - 1);
    return (int64_t)((v ^ m) - m);
}

static int64_t get_dod(bitr *r)
{
    if (!br_bit(r)) return 0;
    if (!br_bit(r)) return sext(br_get(r, 14), 14);
    if (!br_bit(r)) return sext(br_get(r, 17), 17);
    if (!br_bit(r)) return sext(br_get(r, 20), 20);
    return (int64_t)br_get(r, 64);
}

static int encode_xor(const od_sample *s, size_t n, od_buf *out)
{
    size_t start = out->len;
    uint8_t hdr[1 + 10 + 10 + 8];
    size_t h = 0;
    hdr[h++] = OD_CHUNK_XOR;
    h += od_varint_put(hdr + h, n);
    h += od_varint_put(hdr + h, od_zigzag(s[0].t));
    od_put_u64(hdr + h, dbits(s[0].v));
    h += 8;
    if (od_buf_reserve(out, h + n * 2 + 8) || od_buf_append(out, hdr, h)) return OD_NOMEM;
    bitw w = {out, 0, 0, OD_OK};
    uint64_t prev_delta = 0;
    uint64_t prev_t = (uint64_t)s[0].t, prev_v = dbits(s[0].v);
    int lead = 0xff, trail = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t t = (uint64_t)s[i].t;
        uint64_t delta = t - prev_t;
        put_dod(&w, (int64_t)(delta - prev_delta));
        prev_delta = delta;
        prev_t = t;
        uint64_t v = dbits(s[i].v);
        uint64_t x = v ^ prev_v;
        prev_v = v;
        if (x == 0) {
            bw_put(&w, 0, 1);
            continue;
        }
        int l = __builtin_clzll(x), tz = __builtin_ctzll(x);
        if (l > 31) l = 31;
        if (lead != 0xff && l >= lead && tz >= trail) {
            bw_put(&w, 0x2, 2);
            bw_put(&w, x >> trail, 64 - lead - trail);
        } else {
            int sig = 64 - l - tz;
            bw_put(&w, 0x3, 2);
            bw_put(&w, (uint64_t)l, 5);
            bw_put(&w, (uint64_t)(sig & 63), 6);
            bw_put(&w, x >> tz, sig);
            lead = l;
            trail = tz;
        }
    }
    bw_flush(&w);
    if (w.rc) return w.rc;
    return od_buf_put_u32(out, od_crc32c(out->data + start, out->len - start));
}


/* ---- encoding 2: decimal integers ----
 * When every value is finite and equals i / 10^k exactly (bit for bit, so -0.0 never
 * qualifies) for one k in 0..OD_DEC_MAX_SCALE with |i| < 2^53, the values are coded as the
 * integers i: the GCD g of the deltas as a varint, the first value as a zigzag varint, then
 * per sample the delta / g (vmode 1) or the
 * delta-of-delta of delta / g (vmode 2) in the buckets of one of four code tables (W below),
 * or (table 4) as code − min in a fixed width for the chunk (white-noise increments).
 * Counters (steady increments) favour delta-of-delta, noisy gauges delta; the encoder sizes
 * both and keeps the smaller, and keeps XOR when that is smaller still. */
#define OD_DEC_MAX_SCALE 6
static const double P10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 1e7, 1e8, 1e9};

/* Find the smallest k making every value an exact decimal, filling x[] with the integers.
 * A value that fails at k only moves k up (earlier values stay exact at larger k when
 * they were exact at smaller k, but are re-checked once k changes). */
static int dec_scale(const od_sample *s, size_t n, int *kout, int64_t *x)
{
    int k = 0;
    for (size_t i = 0; i < n;) {
        double v = s[i].v;
        if (!isfinite(v)) return 0;
        double m = v * P10[k];
        if (!(fabs(m) < 9007199254740992.0)) return 0;
        int64_t iv = (int64_t)nearbyint(m);
        if (dbits((double)iv / P10[k]) == dbits(v)) { /* what the decoder computes */
            x[i++] = iv;
            continue;
        }
        if (++k > OD_DEC_MAX_SCALE) return 0;
        i = 0; /* restart at the larger scale */
    }
    *kout = k;
    return 1;
}

/* Integer code tables: '0' for 0, then j+1 one-bits and a zero-bit for bucket j of W[t][j]
 * bits (two's complement), and six one-bits for a raw 64-bit value. The encoder sizes every
 * table and keeps the cheapest for the chunk. */
#define OD_DEC_TABLES 4
static const int W[OD_DEC_TABLES][5] = {
    {3, 7, 14, 21, 32},
    {5, 9, 14, 21, 32},
    {7, 11, 16, 24, 32},
    {9, 13, 18, 26, 40},
};

/* COST[t][w]: bits of a non-zero value needing w bits as a signed number, in table t. */
static uint8_t COST[OD_DEC_TABLES][66];
static pthread_once_t cost_once = PTHREAD_ONCE_INIT;

static void cost_init(void)
{
    for (int t = 0; t < OD_DEC_TABLES; t++)
        for (int w = 0; w <= 65; w++) {
            int c = 6 + 64;
            for (int j = 0; j < 5; j++)
                if (w <= W[t][j]) {
                    c = j + 2 + W[t][j];
                    break;
                }
            COST[t][w] = (uint8_t)c;
        }
}

static inline int signed_width(int64_t d) /* bits to hold d in two's complement */
{
    uint64_t u = (uint64_t)(d ^ (d >> 63));
    return u ? 65 - __builtin_clzll(u) : 1;
}

static void put_ibucket(bitw *w, int64_t d, int t)
{
    if (d == 0) {
        bw_put(w, 0, 1);
        return;
    }
    for (int j = 0; j < 5; j++)
        if (fits_signed(d, W[t][j])) {
            bw_put(w, ((1u << (j + 1)) - 1) << 1, j + 2); /* j+1 ones, then a zero */
            bw_put(w, (uint64_t)d & (((uint64_t)1 << W[t][j]) - 1), W[t][j]);
            return;
        }
    bw_put(w, 0x3f, 6);
    bw_put(w, (uint64_t)d, 64);
}

static int64_t get_ibucket(bitr *r, int t)
{
    if (!br_bit(r)) return 0;
    for (int j = 0; j < 5; j++)
        if (!br_bit(r)) return sext(br_get(r, W[t][j]), W[t][j]);
    return (int64_t)br_get(r, 64);
}

static int encode_dec(const od_sample *s, size_t n, int k, const int64_t *x, od_buf *out)
{
    pthread_once(&cost_once, cost_init);
    /* g: the greatest common divisor of the deltas (e.g. 4096 for page-sized gauges);
     * deltas are stored divided by it */
    uint64_t g = 0;
    for (size_t i = 1; i < n && g != 1; i++) {
        int64_t d = x[i] - x[i - 1];
        uint64_t a = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
        while (a) {
            uint64_t t = g % a;
            g = a;
            a = t;
        }
    }
    if (g == 0) g = 1;
    /* size both value modes with every code table and with the fixed-width code (the
     * timestamps cost the same in all) */
    uint64_t bits[2][OD_DEC_TABLES + 1] = {{0}};
    int64_t cmin[2] = {INT64_MAX, INT64_MAX}, cmax[2] = {INT64_MIN, INT64_MIN};
    int64_t pd = 0;
    for (size_t i = 1; i < n; i++) {
        int64_t d = x[i] - x[i - 1];
        if (g > 1) d /= (int64_t)g;
        int64_t c[2] = {d, d - pd};
        for (int m = 0; m < 2; m++) {
            if (c[m] == 0) {
                for (int t = 0; t < OD_DEC_TABLES; t++) bits[m][t] += 1;
            } else {
                int w = signed_width(c[m]);
                for (int t = 0; t < OD_DEC_TABLES; t++) bits[m][t] += COST[t][w];
            }
            if (c[m] < cmin[m]) cmin[m] = c[m];
            if (c[m] > cmax[m]) cmax[m] = c[m];
        }
        pd = d;
    }
    int fw[2];
    for (int m = 0; m < 2; m++) {
        uint64_t range = (uint64_t)cmax[m] - (uint64_t)cmin[m];
        fw[m] = range ? 64 - __builtin_clzll(range) : 0;
        bits[m][OD_DEC_TABLES] = (uint64_t)(n - 1) * (uint64_t)fw[m] + 8 * 4; /* + header bytes */
    }
    int vmode = 1, table = 0;
    for (int m = 0; m < 2; m++)
        for (int t = 0; t <= OD_DEC_TABLES; t++)
            if (bits[m][t] < bits[vmode - 1][table]) {
                vmode = m + 1;
                table = t;
            }
    uint8_t hdr[1 + 10 + 10 + 2 + 1 + 10 + 10 + 10];
    size_t h = 0;
    hdr[h++] = OD_CHUNK_DEC;
    h += od_varint_put(hdr + h, n);
    h += od_varint_put(hdr + h, od_zigzag(s[0].t));
    hdr[h++] = (uint8_t)k;
    hdr[h++] = (uint8_t)(vmode | (table << 4));
    if (table == OD_DEC_TABLES) { /* fixed width: u8 width, zz-varint minimum code */
        hdr[h++] = (uint8_t)fw[vmode - 1];
        h += od_varint_put(hdr + h, od_zigzag(cmin[vmode - 1]));
    }
    h += od_varint_put(hdr + h, g);
    h += od_varint_put(hdr + h, od_zigzag(x[0]));
    size_t start = out->len;
    if (od_buf_reserve(out, h + n * 2 + 8) || od_buf_append(out, hdr, h)) return OD_NOMEM;
    bitw w = {out, 0, 0, OD_OK};
    uint64_t prev_delta = 0, prev_t = (uint64_t)s[0].t;
    pd = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t t = (uint64_t)s[i].t;
        uint64_t delta = t - prev_t;
        put_dod(&w, (int64_t)(delta - prev_delta));
        prev_delta = delta;
        prev_t = t;
        int64_t d = x[i] - x[i - 1];
        if (g > 1) d /= (int64_t)g;
        int64_t c = vmode == 2 ? d - pd : d;
        if (table == OD_DEC_TABLES) bw_put(&w, (uint64_t)c - (uint64_t)cmin[vmode - 1], fw[vmode - 1]);
        else put_ibucket(&w, c, table);
        pd = d;
    }
    bw_flush(&w);
    if (w.rc) return w.rc;
    return od_buf_put_u32(out, od_crc32c(out->data + start, out->len - start));
}

static int decode_dec(od_rd *r, size_t n, od_samplevec *out, od_err *err)
{
    int64_t t0 = od_unzigzag(od_rd_varint(r));
    uint8_t k = od_rd_u8(r), mt = od_rd_u8(r);
    int vmode = mt & 0x0f, table = mt >> 4, fwid = 0;
    int64_t base = 0;
    if (table == OD_DEC_TABLES) {
        fwid = od_rd_u8(r);
        base = od_unzigzag(od_rd_varint(r));
    }
    uint64_t g = od_rd_varint(r);
    int64_t x = od_unzigzag(od_rd_varint(r));
    if (!r->ok || k > OD_DEC_MAX_SCALE || (vmode != 1 && vmode != 2) || table > OD_DEC_TABLES || fwid > 64 || g == 0 || g > (1ULL << 54))
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt decimal chunk header");
    od_sample *dst = out->v + out->n;
    dst[0].t = t0;
    dst[0].v = (double)x / P10[k];
    bitr b = {r->p, (size_t)(r->end - r->p), 0, 1};
    uint64_t prev_t = (uint64_t)t0, prev_delta = 0;
    int64_t pd = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t delta = prev_delta + (uint64_t)get_dod(&b);
        prev_t += delta;
        prev_delta = delta;
        int64_t c = table == OD_DEC_TABLES ? (int64_t)((uint64_t)base + br_get(&b, fwid)) : get_ibucket(&b, table);
        int64_t d = vmode == 2 ? (int64_t)((uint64_t)pd + (uint64_t)c) : c;
        x = (int64_t)((uint64_t)x + (uint64_t)d * g);
        pd = d;
        if (!b.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk bitstream");
        dst[i].t = (int64_t)prev_t;
        dst[i].v = (double)x / P10[k];
    }
    if ((b.len * 8 - b.pos) >= 8) return od_err_set(err, OD_CORRUPT, "tsdb: trailing bytes in chunk");
    return OD_OK;
}

int od_chunk_encode(const od_sample *s, size_t n, od_buf *out)
{
    if (n == 0) return OD_BADREQ;
    size_t start = out->len;
    int rc = encode_xor(s, n, out);
    if (rc || n < 2) return rc;
    int64_t stackx[256], *x = n <= 256 ? stackx : malloc(n * sizeof *x);
    if (!x) return OD_NOMEM;
    int k;
    od_buf alt = {0};
    if (dec_scale(s, n, &k, x)) {
        rc = encode_dec(s, n, k, x, &alt);
        if (rc == OD_OK && alt.len < out->len - start) {
            out->len = start;
            rc = od_buf_append(out, alt.data, alt.len);
        }
    }
    if (x != stackx) free(x);
    od_buf_free(&alt);
    return rc;
}

static int check_hdr(const uint8_t *p, size_t len, od_rd *r, size_t *n, od_err *err)
{
    if (len < 1 + 1 + 1 + 4) return od_err_set(err, OD_CORRUPT, "tsdb: chunk of %zu bytes is too short", len);
    uint32_t want = od_get_u32(p + len - 4);
    if (od_crc32c(p, len - 4) != want) return od_err_set(err, OD_CORRUPT, "tsdb: chunk checksum mismatch");
    *r = od_rd_make(p, len - 4);
    uint8_t enc = od_rd_u8(r);
    if (enc != OD_CHUNK_XOR && enc != OD_CHUNK_DEC)
        return od_err_set(err, OD_CORRUPT, "tsdb: unknown chunk encoding %u", enc);
    uint64_t cnt = od_rd_varint(r);
    if (!r->ok || cnt == 0 || cnt > len * 8) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk sample count");
    *n = (size_t)cnt;
    return OD_OK;
}

int od_chunk_info(const uint8_t *p, size_t len, size_t *n, od_err *err)
{
    od_rd r;
    return check_hdr(p, len, &r, n, err);
}

int od_chunk_decode(const uint8_t *p, size_t len, od_samplevec *out, od_err *err)
{
    od_rd r;
    size_t n;
    int rc = check_hdr(p, len, &r, &n, err);
    if (rc) return rc;
    if (out->cap - out->n < n) {
        size_t nc = out->n + n;
        od_sample *nv = realloc(out->v, nc * sizeof *nv);
        if (!nv) return od_err_set(err, OD_NOMEM, "out of memory");
        out->v = nv;
        out->cap = nc;
    }
    if (p[0] == OD_CHUNK_DEC) {
        rc = decode_dec(&r, n, out, err);
        if (rc == OD_OK) out->n += n;
        return rc;
    }
    int64_t t0 = od_unzigzag(od_rd_varint(&r));
    uint64_t v0 = od_rd_u64(&r);
    if (!r.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk header");
    if (out->cap - out->n < n) {
        size_t nc = out->n + n;
        od_sample *nv = realloc(out->v, nc * sizeof *nv);
        if (!nv) return od_err_set(err, OD_NOMEM, "out of memory");
        out->v = nv;
        out->cap = nc;
    }
    od_sample *dst = out->v + out->n;
    dst[0].t = t0;
    dst[0].v = bitsd(v0);
    bitr b = {r.p, (size_t)(r.end - r.p), 0, 1};
    uint64_t prev_t = (uint64_t)t0, prev_delta = 0, prev_v = v0;
    int lead = 0, trail = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t delta = prev_delta + (uint64_t)get_dod(&b);
        prev_t += delta;
        prev_delta = delta;
        if (br_bit(&b)) {
            uint64_t x;
            if (!br_bit(&b)) {
                int sig = 64 - lead - trail;
                if (sig <= 0) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk value window");
                x = br_get(&b, sig) << trail;
            } else {
                lead = (int)br_get(&b, 5);
                int sig = (int)br_get(&b, 6);
                if (sig == 0) sig = 64;
                if (lead + sig > 64) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk value window");
                trail = 64 - lead - sig;
                x = br_get(&b, sig) << trail;
            }
            prev_v ^= x;
        }
        if (!b.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk bitstream");
        dst[i].t = (int64_t)prev_t;
        dst[i].v = bitsd(prev_v);
    }
    /* Everything after the last sample must be padding of the final byte. */
    if ((b.len * 8 - b.pos) >= 8) return od_err_set(err, OD_CORRUPT, "tsdb: trailing bytes in chunk");
    out->n += n;
    return OD_OK;
}
