/*
 * chunk.c — the sample chunk codec: compression of (ms, double) samples, plus sample-vector
 * helpers.
 *
 * Owns: od_chunk_encode / od_chunk_encode_as / od_chunk_decode / od_chunk_info and
 * od_samplevec.
 *
 * The first byte of a chunk names its encoding (byte-exact layouts in docs/formats.md); every
 * chunk ends with a CRC32C of everything before it, so damage in the store is an OD_CORRUPT
 * error, never wrong samples.
 *   1 XOR  (read only; written by older versions) Prometheus/Gorilla: per sample a timestamp
 *          delta-of-delta code and an XOR value code, interleaved.
 *   2 DEC  (read only; written by older versions) the same timestamps with decimal integer
 *          value codes.
 *   3 COL  (written now) all timestamps first, then all values, each part in the cheapest of
 *          its codings, chosen per chunk by sizing every candidate:
 *          times:  DOD  — Prometheus delta-of-delta codes ('0' for a regular step), or
 *                  GRID — one common delta plus a list of (index, delta − common) exceptions
 *                         in the header: a scrape on its 15 s grid costs 0 bits, a late one
 *                         two small varint pairs;
 *          values: XOR  — Gorilla, on raw bit patterns (NaN payloads, stale markers, ±Inf,
 *                         −0.0 exact); the fallback for anything that is not a short decimal;
 *                  DTAB — the values as integers i with v == i / 10^k (or i * 10^-k) bit for
 *                         bit, k <= 9; codes are delta/g or delta-of-delta/g (g = GCD of the
 *                         deltas) in one of four bucket tables or one fixed width;
 *                  DBLK — the same integer codes zigzagged, in blocks of 8–64 codes that
 *                         each carry their own 6-bit width (noise that changes over the day
 *                         costs what each block needs, not the chunk's worst block);
 *                  DFOR — per block a base (the block's smallest code, as a step from the
 *                         previous block's) and a width; codes are delta/g, delta-of-delta/g
 *                         or (i − i0)/g: Poisson-like increments and independent draws (Go
 *                         durations) cost about log2(their range), without a sign bit.
 * The encoder computes the exact bit cost of every candidate (no trial encodes) and keeps the
 * smallest; decimal codecs are used only when smaller than XOR, so the choice never loses to
 * plain Gorilla. Decoding is one pass over the times, one over the values.
 *
 * Bounded decoding: a sample can cost 0 bits in encoding 3, so before allocating, the decoder
 * checks the declared count against the least bits its codings spend (col_header); the one
 * 0-bit coding is capped at OD_CHUNK_ZERO_MAX samples, and the encoder keeps to both limits.
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

/* ---------------------------------------------------------------- codec helpers */

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

/* Timestamp delta-of-delta codes (Prometheus buckets). */
static void put_dod(bitw *w, int64_t dod)
{
    if (dod == 0) bw_put(w, 0, 1);
    else if (fits_signed(dod, 14)) { bw_put(w, 0x2, 2); bw_put(w, (uint64_t)dod & 0x3fff, 14); }
    else if (fits_signed(dod, 17)) { bw_put(w, 0x6, 3); bw_put(w, (uint64_t)dod & 0x1ffff, 17); }
    else if (fits_signed(dod, 20)) { bw_put(w, 0xe, 4); bw_put(w, (uint64_t)dod & 0xfffff, 20); }
    else { bw_put(w, 0xf, 4); bw_put(w, (uint64_t)dod, 64); }
}

static int dod_cost(int64_t dod)
{
    if (dod == 0) return 1;
    if (fits_signed(dod, 14)) return 16;
    if (fits_signed(dod, 17)) return 20;
    if (fits_signed(dod, 20)) return 24;
    return 68;
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

/* ---- XOR value codes (Gorilla): shared by encodings 1 and 3 ---- */

typedef struct xorst {
    uint64_t prev;
    int lead, trail; /* current window; lead 0xff = none yet (encoder) */
} xorst;

static void put_xor(bitw *w, xorst *st, uint64_t v)
{
    uint64_t x = v ^ st->prev;
    st->prev = v;
    if (x == 0) {
        bw_put(w, 0, 1);
        return;
    }
    int l = __builtin_clzll(x), tz = __builtin_ctzll(x);
    if (l > 31) l = 31;
    if (st->lead != 0xff && l >= st->lead && tz >= st->trail) {
        bw_put(w, 0x2, 2);
        bw_put(w, x >> st->trail, 64 - st->lead - st->trail);
    } else {
        int sig = 64 - l - tz;
        bw_put(w, 0x3, 2);
        bw_put(w, (uint64_t)l, 5);
        bw_put(w, (uint64_t)(sig & 63), 6);
        bw_put(w, x >> tz, sig);
        st->lead = l;
        st->trail = tz;
    }
}

/* Bits put_xor would write for s[1..n). */
static uint64_t xor_cost(const od_sample *s, size_t n)
{
    uint64_t bits = 0, prev = dbits(s[0].v);
    int lead = 0xff, trail = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t v = dbits(s[i].v), x = v ^ prev;
        prev = v;
        if (x == 0) {
            bits += 1;
            continue;
        }
        int l = __builtin_clzll(x), tz = __builtin_ctzll(x);
        if (l > 31) l = 31;
        if (lead != 0xff && l >= lead && tz >= trail) bits += 2 + (uint64_t)(64 - lead - trail);
        else {
            bits += 2 + 5 + 6 + (uint64_t)(64 - l - tz);
            lead = l;
            trail = tz;
        }
    }
    return bits;
}

/* One XOR value code; 0 on success, -1 on a bad window. */
static inline int get_xor(bitr *b, uint64_t *prev, int *lead, int *trail)
{
    if (!br_bit(b)) return 0;
    uint64_t x;
    if (!br_bit(b)) {
        int sig = 64 - *lead - *trail;
        if (sig <= 0) return -1;
        x = br_get(b, sig) << *trail;
    } else {
        *lead = (int)br_get(b, 5);
        int sig = (int)br_get(b, 6);
        if (sig == 0) sig = 64;
        if (*lead + sig > 64) return -1;
        *trail = 64 - *lead - sig;
        x = br_get(b, sig) << *trail;
    }
    *prev ^= x;
    return 0;
}

/* ---- decimal integers (encodings 2 and 3) ----
 * A chunk is "decimal" when every value is finite and equals, bit for bit, (double)i / 10^k
 * (divide form) or (double)i * 10^-k (reciprocal form, 10^-k being the double nearest to it)
 * for one k and integers |i| < 2^53. The divide form is what "%.2f"-style text and exact
 * decimals parse to (CPU seconds in 1/100 s, Go durations float64(ns)/1e9); the reciprocal
 * form is what a producer computing ticks * 0.001 emits (node_exporter's disk times). -0.0,
 * NaN and ±Inf never qualify, so their bits always travel through XOR. */
#define OD_DEC_MAX_SCALE 9      /* encoding 3 */
#define OD_DEC2_MAX_SCALE 6     /* encoding 2 (old chunks) */
#define OD_SCALE_RECIP 0x10
static const double P10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 1e7, 1e8, 1e9};
static const double M10[] = {1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9};

static inline double dec_value(int64_t i, int scale)
{
    int k = scale & 0x0f;
    return (scale & OD_SCALE_RECIP) ? (double)i * M10[k] : (double)i / P10[k];
}

/* Find the smallest k making every value exact in the given form, filling x[]. A value that
 * fails at k moves k up and restarts (earlier values are re-checked at the new k). Returns
 * the scale byte (k | form) or -1. */
static int dec_scale(const od_sample *s, size_t n, int recip, int64_t *x)
{
    int k = 0;
    for (size_t i = 0; i < n;) {
        double v = s[i].v;
        if (!isfinite(v)) return -1;
        double m = v * P10[k];
        if (!(fabs(m) < 9007199254740992.0)) return -1;
        int64_t iv = (int64_t)nearbyint(m);
        int scale = k | (recip ? OD_SCALE_RECIP : 0);
        if (dbits(dec_value(iv, scale)) == dbits(v)) { /* what the decoder computes */
            x[i++] = iv;
            continue;
        }
        if (++k > OD_DEC_MAX_SCALE) return -1;
        i = 0;
    }
    return k | (recip ? OD_SCALE_RECIP : 0);
}

/* Bucket code tables: '0' for 0, then j+1 one-bits and a zero-bit for bucket j of W[t][j]
 * bits (two's complement), and six one-bits for a raw 64-bit value. */
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

static inline int zz_width(int64_t d) /* bits of zigzag(d); 0 for 0 */
{
    uint64_t z = od_zigzag(d);
    return z ? 64 - __builtin_clzll(z) : 0;
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

/* ---------------------------------------------------------------- encoding 3 (COL) */

enum { T_DOD = OD_CHUNK_T_DOD, T_GRID = OD_CHUNK_T_GRID, T_MODES };
enum { V_XOR = OD_CHUNK_V_XOR, V_DTAB = OD_CHUNK_V_DTAB, V_DBLK = OD_CHUNK_V_DBLK, V_DFOR = OD_CHUNK_V_DFOR, V_CODECS };
#define OD_BLK_LOG_MIN 3 /* block sizes 8, 16, 32, 64 */
#define OD_BLK_LOG_MAX 6
/* Most samples a chunk may declare in the one coding that spends 0 bits per sample after the
 * first (GRID times, DTAB fixed-width values of width 0: a constant or constant-step series on
 * its grid). Every other coding costs bits per sample, which bound the count by the chunk's
 * length; this cap bounds what a header-only chunk can make the decoder allocate (16 MiB).
 * The encoder takes another coding above it (docs/formats.md, "Chunk"). */
#define OD_CHUNK_ZERO_MAX ((uint64_t)1 << 20)

/* The chosen coding of one chunk, and what it costs. */
typedef struct plan {
    int tmode, vcodec;
    uint64_t tbits, vbits;          /* estimated payload bits (header varints included) */
    int64_t dt;                     /* T_GRID: the common delta */
    size_t nexc;                    /* T_GRID: deltas != dt */
    int scale, vmode, table, blog;  /* decimal codecs */
    int fw;                         /* table 4: fixed width */
    int64_t cmin;                   /* table 4: minimum code */
    uint64_t g;                     /* GCD of the integer deltas */
} plan;

static size_t zzlen(int64_t v) { return od_varint_len(od_zigzag(v)); }

/* Timestamps: delta-of-delta bits versus the grid (a common delta and the exceptions). */
static void plan_time(const od_sample *s, size_t n, plan *p, int force)
{
    /* majority vote for the common delta */
    uint64_t cand = 0;
    size_t cnt = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t d = (uint64_t)s[i].t - (uint64_t)s[i - 1].t;
        if (cnt == 0) { cand = d; cnt = 1; }
        else if (d == cand) cnt++;
        else cnt--;
    }
    uint64_t dodbits = 0, gridbytes = zzlen((int64_t)cand);
    uint64_t prev_delta = 0;
    size_t nexc = 0, last = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t d = (uint64_t)s[i].t - (uint64_t)s[i - 1].t;
        dodbits += (uint64_t)dod_cost((int64_t)(d - prev_delta));
        prev_delta = d;
        if (d != cand) {
            gridbytes += od_varint_len(i - last) + zzlen((int64_t)(d - cand));
            last = i;
            nexc++;
        }
    }
    gridbytes += od_varint_len(nexc);
    p->dt = (int64_t)cand;
    p->nexc = nexc;
    if (force == T_DOD || (force < 0 && dodbits < gridbytes * 8)) {
        p->tmode = T_DOD;
        p->tbits = dodbits;
    } else {
        p->tmode = T_GRID;
        p->tbits = gridbytes * 8;
    }
}

/* Size every decimal coding of x[0..n) and keep the cheapest allowed by force (-1: any). */
static void plan_dec(const int64_t *x, size_t n, int scale, plan *p, int force)
{
    pthread_once(&cost_once, cost_init);
    uint64_t g = 0; /* GCD of the deltas (e.g. 4096 for page-sized gauges) */
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
    enum { NB = OD_BLK_LOG_MAX - OD_BLK_LOG_MIN + 1, B0 = 1 << OD_BLK_LOG_MIN };
    uint64_t tb[2][OD_DEC_TABLES] = {{0}}, bb[2][NB] = {{0}};
    int64_t cmin[2] = {INT64_MAX, INT64_MAX}, cmax[2] = {INT64_MIN, INT64_MIN};
    /* Block codecs, sized for every block size at once: the codes' min/max (DFOR, value modes
     * delta, delta of delta, x − x0) and largest zigzag width (DBLK, the first two) are kept
     * per block of 8; each finished 8-block is folded into the accumulators of the 16-, 32-
     * and 64-blocks, and a block's cost is counted when it ends. */
    uint64_t fb[3][NB] = {{0}};
    int64_t lo[3][NB], hi[3][NB], fbase[3][NB] = {{0}};
    int zw[2][NB] = {{0}};
    size_t len[NB] = {0};
    for (int m = 0; m < 3; m++)
        for (int b = 0; b < NB; b++) lo[m][b] = INT64_MAX, hi[m][b] = INT64_MIN;
    int64_t pd = 0, c2 = 0;
    for (size_t i = 1; i < n; i++) {
        int64_t d = x[i] - x[i - 1]; /* |x| < 2^53: no overflow */
        if (g > 1) d /= (int64_t)g;
        c2 += d; /* (x[i] − x[0]) / g */
        int64_t c[3] = {d, d - pd, c2};
        for (int m = 0; m < 3; m++) {
            if (c[m] < lo[m][0]) lo[m][0] = c[m];
            if (c[m] > hi[m][0]) hi[m][0] = c[m];
        }
        for (int m = 0; m < 2; m++) {
            if (c[m] == 0) {
                for (int t = 0; t < OD_DEC_TABLES; t++) tb[m][t] += 1;
            } else {
                int w = signed_width(c[m]);
                for (int t = 0; t < OD_DEC_TABLES; t++) tb[m][t] += COST[t][w];
            }
            if (c[m] < cmin[m]) cmin[m] = c[m];
            if (c[m] > cmax[m]) cmax[m] = c[m];
            int z = zz_width(c[m]);
            if (z > zw[m][0]) zw[m][0] = z;
        }
        len[0]++;
        pd = d;
        size_t j = i - 1; /* code index */
        if ((j & (B0 - 1)) != B0 - 1 && i != n - 1) continue;
        for (int b = 0; b < NB; b++) {
            size_t bs = (size_t)B0 << b;
            if (b > 0) { /* fold the finished 8-block in */
                for (int m = 0; m < 3; m++) {
                    if (lo[m][0] < lo[m][b]) lo[m][b] = lo[m][0];
                    if (hi[m][0] > hi[m][b]) hi[m][b] = hi[m][0];
                }
                for (int m = 0; m < 2; m++)
                    if (zw[m][0] > zw[m][b]) zw[m][b] = zw[m][0];
                len[b] += len[0];
            }
            if ((j & (bs - 1)) != bs - 1 && i != n - 1) continue;
            for (int m = 0; m < 3; m++) {
                uint64_t range = (uint64_t)hi[m][b] - (uint64_t)lo[m][b];
                int w = range ? 64 - __builtin_clzll(range) : 0;
                fb[m][b] += 12 + (uint64_t)zz_width(lo[m][b] - fbase[m][b]) + (uint64_t)w * len[b];
                fbase[m][b] = lo[m][b];
            }
            for (int m = 0; m < 2; m++) bb[m][b] += 6 + (uint64_t)zw[m][b] * len[b];
            if (b > 0) { /* the 8-block's own accumulators are reset below */
                for (int m = 0; m < 3; m++) lo[m][b] = INT64_MAX, hi[m][b] = INT64_MIN;
                for (int m = 0; m < 2; m++) zw[m][b] = 0;
                len[b] = 0;
            }
        }
        for (int m = 0; m < 3; m++) lo[m][0] = INT64_MAX, hi[m][0] = INT64_MIN;
        for (int m = 0; m < 2; m++) zw[m][0] = 0;
        len[0] = 0;
    }
    /* header bytes common to all: scale, mode, g, x0 */
    uint64_t hdr = 8 * (2 + od_varint_len(g) + zzlen(x[0]));
    uint64_t best = UINT64_MAX;
    for (int m = 0; m < 2; m++) {
        if (force < 0 || force == V_DTAB) {
            for (int t = 0; t < OD_DEC_TABLES; t++)
                if (hdr + tb[m][t] < best) {
                    best = hdr + tb[m][t];
                    p->vcodec = V_DTAB;
                    p->vmode = m + 1;
                    p->table = t;
                }
            uint64_t range = n > 1 ? (uint64_t)cmax[m] - (uint64_t)cmin[m] : 0;
            int fw = range ? 64 - __builtin_clzll(range) : 0;
            int64_t cm = n > 1 ? cmin[m] : 0;
            uint64_t fbits = hdr + 8 * (1 + zzlen(cm)) + (uint64_t)(n - 1) * (uint64_t)fw;
            /* width 0 on grid times is the 0-bit coding: capped (decoders refuse more) */
            int zero_ok = !(fw == 0 && p->tmode == T_GRID && (uint64_t)n > OD_CHUNK_ZERO_MAX);
            if (zero_ok && fbits < best) {
                best = fbits;
                p->vcodec = V_DTAB;
                p->vmode = m + 1;
                p->table = OD_DEC_TABLES;
                p->fw = fw;
                p->cmin = cm;
            }
        }
        if (force < 0 || force == V_DBLK) {
            for (int b = 0; b < NB; b++)
                if (hdr + bb[m][b] < best) {
                    best = hdr + bb[m][b];
                    p->vcodec = V_DBLK;
                    p->vmode = m + 1;
                    p->blog = b + OD_BLK_LOG_MIN;
                }
        }
    }
    if (force < 0 || force == V_DFOR) {
        static const int fmode[3] = {1, 2, 0}; /* c[] order: delta, delta of delta, x − x0 */
        for (int m = 0; m < 3; m++)
            for (int b = 0; b < NB; b++)
                if (hdr + fb[m][b] < best) {
                    best = hdr + fb[m][b];
                    p->vcodec = V_DFOR;
                    p->vmode = fmode[m];
                    p->blog = b + OD_BLK_LOG_MIN;
                }
    }
    p->vbits = best;
    p->g = g;
    p->scale = scale;
}

/* Write the chunk of plan p; code[] is scratch space for n integers (decimal codecs). */
static int encode_col(const od_sample *s, size_t n, const int64_t *x, int64_t *code, const plan *p, od_buf *out)
{
    size_t start = out->len;
    if (od_buf_reserve(out, 64 + (p->tbits + p->vbits) / 8 + 8)) return OD_NOMEM;
    int rc = od_buf_append_u8(out, OD_CHUNK_COL);
    rc |= od_buf_put_varint(out, n);
    rc |= od_buf_put_varint(out, od_zigzag(s[0].t));
    rc |= od_buf_append_u8(out, (uint8_t)(p->tmode | (p->vcodec << 4)));
    if (p->tmode == T_GRID) {
        rc |= od_buf_put_varint(out, od_zigzag(p->dt));
        rc |= od_buf_put_varint(out, p->nexc);
        size_t last = 0;
        for (size_t i = 1; i < n; i++) {
            uint64_t d = (uint64_t)s[i].t - (uint64_t)s[i - 1].t;
            if (d == (uint64_t)p->dt) continue;
            rc |= od_buf_put_varint(out, i - last);
            rc |= od_buf_put_varint(out, od_zigzag((int64_t)(d - (uint64_t)p->dt)));
            last = i;
        }
    }
    if (p->vcodec == V_XOR) {
        rc |= od_buf_put_u64(out, dbits(s[0].v));
    } else {
        rc |= od_buf_append_u8(out, (uint8_t)p->scale);
        rc |= od_buf_append_u8(out, (uint8_t)(p->vmode | ((p->vcodec == V_DTAB ? p->table : p->blog) << 4)));
        if (p->vcodec == V_DTAB && p->table == OD_DEC_TABLES) {
            rc |= od_buf_append_u8(out, (uint8_t)p->fw);
            rc |= od_buf_put_varint(out, od_zigzag(p->cmin));
        }
        rc |= od_buf_put_varint(out, p->g);
        rc |= od_buf_put_varint(out, od_zigzag(x[0]));
    }
    if (rc) return OD_NOMEM;
    bitw w = {out, 0, 0, OD_OK};
    if (p->tmode == T_DOD) {
        uint64_t prev_delta = 0;
        for (size_t i = 1; i < n; i++) {
            uint64_t d = (uint64_t)s[i].t - (uint64_t)s[i - 1].t;
            put_dod(&w, (int64_t)(d - prev_delta));
            prev_delta = d;
        }
    }
    if (p->vcodec == V_XOR) {
        xorst st = {dbits(s[0].v), 0xff, 0};
        for (size_t i = 1; i < n; i++) put_xor(&w, &st, dbits(s[i].v));
    } else {
        /* the integer codes c[1..n): delta / g (vmode 1) or its delta (vmode 2) */
        int64_t pd = 0, g = (int64_t)p->g;
        for (size_t i = 1; i < n; i++) {
            int64_t d = x[i] - x[i - 1];
            if (g > 1) d /= g;
            code[i] = p->vmode == 2 ? d - pd : p->vmode == 1 ? d : (x[i] - x[0]) / g;
            pd = d;
        }
        if (p->vcodec == V_DTAB) {
            for (size_t i = 1; i < n; i++) {
                if (p->table == OD_DEC_TABLES) bw_put(&w, (uint64_t)code[i] - (uint64_t)p->cmin, p->fw);
                else put_ibucket(&w, code[i], p->table);
            }
        } else if (p->vcodec == V_DFOR) {
            /* per block: 6-bit width, 6-bit width of the base step, zigzag(base − previous base),
             * then every code − base in width bits (base = the block's minimum code) */
            size_t bs = (size_t)1 << p->blog;
            int64_t pbase = 0;
            for (size_t b0 = 1; b0 < n; b0 += bs) {
                size_t e = b0 + bs < n ? b0 + bs : n;
                int64_t lo = INT64_MAX, hi = INT64_MIN;
                for (size_t i = b0; i < e; i++) {
                    if (code[i] < lo) lo = code[i];
                    if (code[i] > hi) hi = code[i];
                }
                uint64_t range = (uint64_t)hi - (uint64_t)lo;
                int wr = range ? 64 - __builtin_clzll(range) : 0, wb = zz_width(lo - pbase);
                bw_put(&w, (uint64_t)wr, 6);
                bw_put(&w, (uint64_t)wb, 6);
                bw_put(&w, od_zigzag(lo - pbase), wb);
                for (size_t i = b0; i < e; i++) bw_put(&w, (uint64_t)code[i] - (uint64_t)lo, wr);
                pbase = lo;
            }
        } else { /* V_DBLK: per block of 2^blog codes, a 6-bit zigzag width, then the codes */
            size_t bs = (size_t)1 << p->blog;
            for (size_t b0 = 1; b0 < n; b0 += bs) {
                size_t e = b0 + bs < n ? b0 + bs : n;
                int wmax = 0;
                for (size_t i = b0; i < e; i++) {
                    int zw = zz_width(code[i]);
                    if (zw > wmax) wmax = zw;
                }
                bw_put(&w, (uint64_t)wmax, 6);
                for (size_t i = b0; i < e; i++) bw_put(&w, od_zigzag(code[i]), wmax);
            }
        }
    }
    bw_flush(&w);
    if (w.rc) return w.rc;
    return od_buf_put_u32(out, od_crc32c(out->data + start, out->len - start));
}

/* Plan and write the chunk; tforce/vforce = -1 lets the encoder choose (the test hook
 * od_chunk_encode_as forces one). OD_BADREQ when a forced decimal codec cannot represent
 * the values. */
static int encode_chunk(const od_sample *s, size_t n, int tforce, int vforce, od_buf *out)
{
    if (n == 0 || tforce >= T_MODES || vforce >= V_CODECS) return OD_BADREQ;
    if ((uint64_t)n > OD_CHUNK_MAX_SAMPLES) return OD_LIMIT; /* decoders refuse larger counts */
    plan p;
    memset(&p, 0, sizeof p);
    plan_time(s, n, &p, tforce);
    p.vcodec = V_XOR;
    p.vbits = 64 + 16 * (uint64_t)n; /* a reserve hint until sized */
    int64_t stackx[2 * 512], *x = n <= 512 ? stackx : malloc(2 * n * sizeof *x);
    if (!x) return OD_NOMEM;
    int64_t *code = x + n;
    int rc = OD_OK;
    if (vforce != V_XOR) {
        int scale = dec_scale(s, n, 0, x);
        if (scale < 0) scale = dec_scale(s, n, 1, x);
        if (scale >= 0) {
            plan d = p;
            plan_dec(x, n, scale, &d, vforce);
            if (vforce >= 0 || d.vbits < 64 + xor_cost(s, n)) p = d;
        } else if (vforce >= 0) {
            rc = OD_BADREQ;
        }
    }
    if (rc == OD_OK) rc = encode_col(s, n, x, code, &p, out);
    if (x != stackx) free(x);
    return rc;
}

int od_chunk_encode(const od_sample *s, size_t n, od_buf *out) { return encode_chunk(s, n, -1, -1, out); }

int od_chunk_encode_as(const od_sample *s, size_t n, int tmode, int vcodec, od_buf *out)
{
    return encode_chunk(s, n, tmode, vcodec, out);
}

/* ---------------------------------------------------------------- decoders */

/* The header of an encoding-3 chunk, parsed and checked before anything is allocated. */
typedef struct colhdr {
    int tmode, vcodec;
    int64_t t0;
    uint64_t dt, m;      /* T_GRID: common delta, number of exceptions */
    od_rd exc;           /* T_GRID: the exception list (validated by col_header) */
    int scale, vmode, sel, fw;
    int64_t cmin, x0;
    uint64_t g, v0;
    const uint8_t *bits; /* the bit stream */
    size_t nbytes;
} colhdr;

/* Parse and check the header of an encoding-3 chunk of n samples (r after the count), and
 * bound n by what the bit stream can hold: every sample after the first costs at least 1 bit
 * per DOD time code, per XOR or bucket-table value code, `width` bits per fixed-width code,
 * and every block 6 (DBLK) or 12 (DFOR) bits. The one coding that spends 0 bits per sample
 * (GRID times with width-0 fixed-width values) may declare at most OD_CHUNK_ZERO_MAX samples;
 * the encoder never uses it for more. So no chunk makes the decoder allocate more than
 * max(OD_CHUNK_ZERO_MAX, 1 + 64/6 × its bit length) samples. */
static int col_header(od_rd *r, uint64_t n, colhdr *h, od_err *err)
{
    memset(h, 0, sizeof *h);
    h->g = 1;
    h->t0 = od_unzigzag(od_rd_varint(r));
    uint8_t modes = od_rd_u8(r);
    h->tmode = modes & 0x0f;
    h->vcodec = modes >> 4;
    if (!r->ok || h->tmode >= T_MODES || h->vcodec >= V_CODECS)
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk header (modes 0x%02x)", modes);
    if (h->tmode == T_GRID) {
        h->dt = (uint64_t)od_unzigzag(od_rd_varint(r));
        h->m = od_rd_varint(r);
        if (!r->ok || h->m >= n) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk time grid");
        h->exc = *r;
        uint64_t idx = 0; /* exception j at idx_j = idx_{j-1} + gap_j, 0 < idx_j < n */
        for (uint64_t j = 0; j < h->m; j++) {
            uint64_t gap = od_rd_varint(r);
            od_rd_varint(r);
            if (!r->ok || gap == 0 || gap >= n - idx) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk time grid");
            idx += gap;
        }
    }
    if (h->vcodec == V_XOR) {
        h->v0 = od_rd_u64(r);
    } else {
        h->scale = od_rd_u8(r);
        uint8_t mb = od_rd_u8(r);
        h->vmode = mb & 0x0f;
        h->sel = mb >> 4;
        if (h->vcodec == V_DTAB && h->sel == OD_DEC_TABLES) {
            h->fw = od_rd_u8(r);
            h->cmin = od_unzigzag(od_rd_varint(r));
        }
        h->g = od_rd_varint(r);
        h->x0 = od_unzigzag(od_rd_varint(r));
        if ((h->scale & 0x0f) > OD_DEC_MAX_SCALE || (h->scale & ~(0x0f | OD_SCALE_RECIP)) ||
            (h->vmode != 1 && h->vmode != 2 && !(h->vmode == 0 && h->vcodec == V_DFOR)) ||
            (h->vcodec == V_DTAB && h->sel > OD_DEC_TABLES) ||
            (h->vcodec >= V_DBLK && (h->sel < OD_BLK_LOG_MIN || h->sel > OD_BLK_LOG_MAX)) || h->fw > 64 ||
            h->g == 0 || h->g > (1ULL << 54))
            return od_err_set(err, OD_CORRUPT, "tsdb: corrupt decimal chunk header");
    }
    if (!r->ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk header");
    h->bits = r->p;
    h->nbytes = (size_t)(r->end - r->p);
    /* n <= 2^32 (check_hdr), so none of this overflows */
    uint64_t codes = n - 1;
    uint64_t per = (h->tmode == T_DOD) + (h->vcodec == V_XOR) +
                   (h->vcodec == V_DTAB ? (h->sel == OD_DEC_TABLES ? (uint64_t)h->fw : 1) : 0);
    uint64_t need = codes * per;
    if (h->vcodec >= V_DBLK) need += ((codes + ((uint64_t)1 << h->sel) - 1) >> h->sel) * (h->vcodec == V_DBLK ? 6 : 12);
    if (need == 0 && n > OD_CHUNK_ZERO_MAX)
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk sample count %llu (at most %llu in a 0-bit coding)",
                          (unsigned long long)n, (unsigned long long)OD_CHUNK_ZERO_MAX);
    if (need / 8 > h->nbytes || (need / 8 == h->nbytes && need % 8))
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk sample count %llu (needs %llu bits, %zu bytes left)",
                          (unsigned long long)n, (unsigned long long)need, h->nbytes);
    return OD_OK;
}

static int decode_col(const colhdr *h, size_t n, od_sample *dst, od_err *err)
{
    dst[0].t = h->t0;
    if (h->tmode == T_GRID) { /* the exception list was validated by col_header */
        od_rd r = h->exc;
        uint64_t m = h->m, diff = 0;
        size_t next = SIZE_MAX;
        if (m) {
            next = (size_t)od_rd_varint(&r);
            diff = (uint64_t)od_unzigzag(od_rd_varint(&r));
            m--;
        }
        uint64_t t = (uint64_t)h->t0;
        for (size_t i = 1; i < n; i++) {
            uint64_t d = h->dt;
            if (i == next) {
                d += diff;
                if (m) {
                    next = i + (size_t)od_rd_varint(&r);
                    diff = (uint64_t)od_unzigzag(od_rd_varint(&r));
                    m--;
                }
            }
            t += d;
            dst[i].t = (int64_t)t;
        }
    }
    bitr b = {h->bits, h->nbytes, 0, 1};
    if (h->tmode == T_DOD) {
        uint64_t t = (uint64_t)h->t0, prev_delta = 0;
        for (size_t i = 1; i < n; i++) {
            prev_delta += (uint64_t)get_dod(&b);
            t += prev_delta;
            dst[i].t = (int64_t)t;
        }
        if (!b.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk bitstream");
    }
    int vcodec = h->vcodec, scale = h->scale, vmode = h->vmode, sel = h->sel, fw = h->fw;
    uint64_t g = h->g;
    if (vcodec == V_XOR) {
        int lead = 0, trail = 0;
        uint64_t v0 = h->v0;
        dst[0].v = bitsd(v0);
        for (size_t i = 1; i < n; i++) {
            if (get_xor(&b, &v0, &lead, &trail)) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk value window");
            dst[i].v = bitsd(v0);
        }
    } else {
        int64_t x = h->x0;
        dst[0].v = dec_value(x, scale);
        int64_t pd = 0, x0 = x, base = 0;
        size_t bs = vcodec >= V_DBLK ? (size_t)1 << sel : 0;
        int wcur = 0;
        for (size_t i = 1; i < n; i++) {
            int64_t c;
            if (vcodec == V_DFOR) {
                if (((i - 1) & (bs - 1)) == 0) {
                    wcur = (int)br_get(&b, 6);
                    int wb = (int)br_get(&b, 6);
                    base = (int64_t)((uint64_t)base + (uint64_t)od_unzigzag(br_get(&b, wb)));
                }
                c = (int64_t)((uint64_t)base + br_get(&b, wcur));
                if (vmode == 0) {
                    x = (int64_t)((uint64_t)x0 + (uint64_t)c * g);
                    dst[i].v = dec_value(x, scale);
                    continue;
                }
            } else if (vcodec == V_DBLK) {
                if (((i - 1) & (bs - 1)) == 0) wcur = (int)br_get(&b, 6);
                c = od_unzigzag(br_get(&b, wcur));
            } else if (sel == OD_DEC_TABLES) {
                c = (int64_t)((uint64_t)h->cmin + br_get(&b, fw));
            } else {
                c = get_ibucket(&b, sel);
            }
            int64_t d = vmode == 2 ? (int64_t)((uint64_t)pd + (uint64_t)c) : c;
            x = (int64_t)((uint64_t)x + (uint64_t)d * g);
            pd = d;
            dst[i].v = dec_value(x, scale);
        }
    }
    if (!b.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk bitstream");
    if ((b.len * 8 - b.pos) >= 8) return od_err_set(err, OD_CORRUPT, "tsdb: trailing bytes in chunk");
    return OD_OK;
}

/* Encoding 1 (written by older versions): XOR values interleaved with the timestamps. */
static int decode_xor1(od_rd *r, size_t n, od_sample *dst, od_err *err)
{
    int64_t t0 = od_unzigzag(od_rd_varint(r));
    uint64_t v = od_rd_u64(r);
    if (!r->ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk header");
    dst[0].t = t0;
    dst[0].v = bitsd(v);
    bitr b = {r->p, (size_t)(r->end - r->p), 0, 1};
    uint64_t t = (uint64_t)t0, prev_delta = 0;
    int lead = 0, trail = 0;
    for (size_t i = 1; i < n; i++) {
        prev_delta += (uint64_t)get_dod(&b);
        t += prev_delta;
        if (get_xor(&b, &v, &lead, &trail)) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk value window");
        if (!b.ok) return od_err_set(err, OD_CORRUPT, "tsdb: truncated chunk bitstream");
        dst[i].t = (int64_t)t;
        dst[i].v = bitsd(v);
    }
    if ((b.len * 8 - b.pos) >= 8) return od_err_set(err, OD_CORRUPT, "tsdb: trailing bytes in chunk");
    return OD_OK;
}

/* Encoding 2 (written by older versions): decimal codes interleaved with the timestamps. */
static int decode_dec2(od_rd *r, size_t n, od_sample *dst, od_err *err)
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
    if (!r->ok || k > OD_DEC2_MAX_SCALE || (vmode != 1 && vmode != 2) || table > OD_DEC_TABLES || fwid > 64 || g == 0 ||
        g > (1ULL << 54))
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt decimal chunk header");
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

/* Check the CRC, the encoding and the sample count; for encoding 3 also parse and check the
 * header (col_header bounds the count by the payload). Encodings 1 and 2 spend at least one
 * bit per sample after the first, so their count is bounded by the chunk's bit length. */
static int check_hdr(const uint8_t *p, size_t len, od_rd *r, size_t *n, colhdr *h, od_err *err)
{
    if (len < 1 + 1 + 1 + 4) return od_err_set(err, OD_CORRUPT, "tsdb: chunk of %zu bytes is too short", len);
    uint32_t want = od_get_u32(p + len - 4);
    if (od_crc32c(p, len - 4) != want) return od_err_set(err, OD_CORRUPT, "tsdb: chunk checksum mismatch");
    *r = od_rd_make(p, len - 4);
    uint8_t enc = od_rd_u8(r);
    if (enc != OD_CHUNK_XOR && enc != OD_CHUNK_DEC && enc != OD_CHUNK_COL)
        return od_err_set(err, OD_CORRUPT, "tsdb: unknown chunk encoding %u", enc);
    uint64_t cnt = od_rd_varint(r);
    uint64_t lim = enc == OD_CHUNK_COL ? OD_CHUNK_MAX_SAMPLES : (uint64_t)len * 8;
    if (!r->ok || cnt == 0 || cnt > lim || cnt > SIZE_MAX / sizeof(od_sample))
        return od_err_set(err, OD_CORRUPT, "tsdb: corrupt chunk sample count %llu", (unsigned long long)cnt);
    *n = (size_t)cnt;
    return enc == OD_CHUNK_COL ? col_header(r, cnt, h, err) : OD_OK;
}

int od_chunk_info(const uint8_t *p, size_t len, size_t *n, od_err *err)
{
    od_rd r;
    colhdr h;
    return check_hdr(p, len, &r, n, &h, err);
}

int od_chunk_decode(const uint8_t *p, size_t len, od_samplevec *out, od_err *err)
{
    od_rd r;
    size_t n;
    colhdr h;
    int rc = check_hdr(p, len, &r, &n, &h, err);
    if (rc) return rc;
    if (out->cap - out->n < n) {
        if (n > SIZE_MAX / sizeof(od_sample) - out->n) return od_err_set(err, OD_NOMEM, "out of memory");
        size_t nc = out->n + n;
        od_sample *nv = realloc(out->v, nc * sizeof *nv);
        if (!nv) return od_err_set(err, OD_NOMEM, "out of memory");
        out->v = nv;
        out->cap = nc;
    }
    od_sample *dst = out->v + out->n;
    if (p[0] == OD_CHUNK_COL) rc = decode_col(&h, n, dst, err);
    else if (p[0] == OD_CHUNK_DEC) rc = decode_dec2(&r, n, dst, err);
    else rc = decode_xor1(&r, n, dst, err);
    if (rc == OD_OK) out->n += n;
    return rc;
}
