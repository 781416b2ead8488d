/*
 * test_tsdb_codec.c — unit tests of the TSDB's pure layers: the chunk codec (round trips of
 * every encoding with special floats and odd timestamps, the encoder's choices, old chunks
 * still decoding, corruption detection, resealed-mutation fuzzing, the sample-count bound,
 * decimal exactness over many doubles), label sets (validation,
 * length-prefixed hashing, encoding), postings lists, matchers and the selector parser.
 * None of these need the storage engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsdb/tsdb_int.h"
#include "util/od_coding.h"
#include "util/od_crc32c.h"
#include "od_testutil.h"

static uint64_t rng_state = 0x1234567887654321ULL;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static uint64_t bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static double fromb(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Modes byte of an encoding-3 chunk (time mode | value codec << 4), -1 for other encodings. */
static int chunk_modes(const od_buf *b)
{
    if (b->data[0] != OD_CHUNK_COL) return -1;
    od_rd r = od_rd_make(b->data + 1, b->len - 1);
    od_rd_varint(&r);
    od_rd_varint(&r);
    uint8_t m = od_rd_u8(&r);
    assert_true(r.ok);
    return m;
}

static void check_decode(const od_buf *b, const od_sample *s, size_t n)
{
    od_samplevec out = {0};
    od_err e;
    assert_int_equal(od_chunk_decode(b->data, b->len, &out, &e), OD_OK);
    assert_int_equal(out.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out.v[i].t, s[i].t);
        assert_int_equal(bits(out.v[i].v), bits(s[i].v));
    }
    size_t cnt;
    assert_int_equal(od_chunk_info(b->data, b->len, &cnt, &e), OD_OK);
    assert_int_equal(cnt, n);
    od_samplevec_free(&out);
}

/* Round trip with the encoder's choice and with every forced time mode x value codec; the
 * choice is never larger than any forced variant. Returns the number of decimal variants
 * that were possible (0 when the values are not short decimals). */
static int roundtrip(const od_sample *s, size_t n)
{
    od_buf b = {0};
    assert_int_equal(od_chunk_encode(s, n, &b), OD_OK);
    assert_int_equal(b.data[0], OD_CHUNK_COL);
    check_decode(&b, s, n);
    int dec = 0;
    for (int t = OD_CHUNK_T_DOD; t <= OD_CHUNK_T_GRID; t++)
        for (int v = OD_CHUNK_V_XOR; v <= OD_CHUNK_V_DFOR; v++) {
            od_buf f = {0};
            int rc = od_chunk_encode_as(s, n, t, v, &f);
            if (v == OD_CHUNK_V_XOR) assert_int_equal(rc, OD_OK);
            if (rc == OD_BADREQ) {
                assert_int_equal(f.len, 0);
                continue;
            }
            assert_int_equal(rc, OD_OK);
            assert_int_equal(chunk_modes(&f), t | (v << 4));
            dec += v != OD_CHUNK_V_XOR;
            check_decode(&f, s, n);
            assert_true(b.len <= f.len + 1); /* sizes are estimated to the bit, padding aside */
            od_buf_free(&f);
        }
    od_buf_free(&b);
    return dec;
}

static void test_chunk_special_values(void **st)
{
    (void)st;
    double vals[] = {0.0, -0.0, INFINITY, -INFINITY, fromb(0x7ff0000000000002ULL), NAN, fromb(0x7ff8dead00000001ULL),
                     fromb(0xfff0000000000001ULL), 1e-310, -1e308, 1.0, 1.0, 1.0, 42.5, -1021.0, 3.14159};
    size_t n = sizeof vals / sizeof vals[0];
    od_sample s[32];
    for (size_t i = 0; i < n; i++) {
        s[i].t = 1700000000000LL + (int64_t)i * 15000;
        s[i].v = vals[i];
    }
    roundtrip(s, n);
    roundtrip(s, 1);
    roundtrip(s + 4, 1); /* a lone stale marker */
}

static void test_chunk_timestamps(void **st)
{
    (void)st;
    int64_t ts[] = {INT64_MIN, -5, 0, 1, 1000000, INT64_MAX, -1, 7, 7 + (1 << 13), 7 + (1 << 16) + 3,
                    7 + (1 << 19) * 3, 1LL << 40, (1LL << 40) + 15000, (1LL << 40) + 30001, -(1LL << 50)};
    size_t n = sizeof ts / sizeof ts[0];
    od_sample s[32];
    for (size_t i = 0; i < n; i++) {
        s[i].t = ts[i];
        s[i].v = (double)i;
    }
    roundtrip(s, n);
}

static void test_chunk_random(void **st)
{
    (void)st;
    int iters = (int)(200 * od_test_scale());
    if (iters < 10) iters = 10;
    od_sample *s = malloc(2000 * sizeof *s);
    assert_non_null(s);
    for (int it = 0; it < iters; it++) {
        size_t n = 1 + rnd() % 2000;
        int64_t t = (int64_t)(rnd() % 4000000000000ULL) - 1000000000000LL;
        double v = (double)(rnd() % 1000);
        int mode = (int)(rnd() % 7);
        int64_t iv = (int64_t)(rnd() % 100000);
        for (size_t i = 0; i < n; i++) {
            switch (mode) {
            case 4: /* grid with rare late scrapes, 2-decimal counter */
                t += 15000 + (rnd() % 50 == 0 ? (int64_t)(rnd() % 40) : 0);
                iv += (int64_t)(rnd() % 300);
                v = (double)iv / 100;
                break;
            case 5: /* reciprocal decimal form, noise that changes amplitude */
                t += 15000;
                iv += (int64_t)(rnd() % ((i / 50) % 2 ? 100000 : 3));
                v = (double)iv * (1.0 / 1000.0);
                break;
            case 6: t += 60000; break; /* constant */
            case 0: t += 15000; v += (double)(rnd() % 100); break;                /* counter */
            case 1: t += 15000 + (int64_t)(rnd() % 200) - 100; v = (double)(rnd() % 1000) / 7.0; break;
            case 2: t += (int64_t)(rnd() >> 1) % 100000000000LL; v = fromb(rnd()); break; /* anything */
            default: t += (int64_t)(rnd() % 3); v = (rnd() & 1) ? v : -v; break; /* duplicate times */
            }
            s[i].t = t;
            s[i].v = v;
        }
        roundtrip(s, n);
    }
    free(s);
}

static void test_chunk_corruption(void **st)
{
    (void)st;
    od_sample s[200];
    for (int i = 0; i < 200; i++) {
        s[i].t = 1000 + i * 15000;
        s[i].v = sin(i) * 100;
    }
    od_buf b = {0};
    assert_int_equal(od_chunk_encode(s, 200, &b), OD_OK);
    od_err e;
    /* flip every single bit in turn: each must be detected */
    for (size_t byte = 0; byte < b.len; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[byte] ^= (uint8_t)(1 << bit);
            od_samplevec out = {0};
            int rc = od_chunk_decode(b.data, b.len, &out, &e);
            assert_int_equal(rc, OD_CORRUPT);
            assert_int_equal(out.n, 0);
            od_samplevec_free(&out);
            b.data[byte] ^= (uint8_t)(1 << bit);
        }
    }
    /* truncation */
    for (size_t len = 0; len < b.len; len++) {
        od_samplevec out = {0};
        assert_int_equal(od_chunk_decode(b.data, len, &out, &e), OD_CORRUPT);
        od_samplevec_free(&out);
    }
    od_buf_free(&b);
}

static void test_chunk_compression(void **st)
{
    (void)st;
    /* a regular counter compresses to well under 2 bytes per sample */
    od_sample s[480];
    double v = 0;
    for (int i = 0; i < 480; i++) {
        s[i].t = 1700000000000LL + i * 15000;
        v += 10 * (i % 3);
        s[i].v = v;
    }
    od_buf b = {0};
    assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
    assert_true(b.len < 480 * 2);
    od_buf_free(&b);
}

/* Decimal data takes a decimal codec, round-trips bit-exactly, and is smaller than XOR;
 * -0.0 or a NaN in the chunk falls back to XOR. Corruption is still detected. */
static void test_chunk_decimal(void **st)
{
    (void)st;
    od_sample s[480];
    double cpu = 12345.67, mem = 4096.0 * 100000, load = 1.25;
    for (int mode = 0; mode < 4; mode++) {
        for (int i = 0; i < 480; i++) {
            s[i].t = 1700000000000LL + i * 15000;
            cpu = round((cpu + 14.5 + (double)(rnd() % 100) / 100) * 100) / 100;
            mem += 4096.0 * (double)((int)(rnd() % 64) - 32);
            load = round((load + ((double)(rnd() % 21) - 10) / 100) * 100) / 100;
            s[i].v = mode == 0 ? cpu : mode == 1 ? mem : mode == 2 ? load : (double)(i / 7) * 1e6;
        }
        od_buf b = {0}, x = {0};
        assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
        assert_int_equal(od_chunk_encode_as(s, 480, -1, OD_CHUNK_V_XOR, &x), OD_OK);
        assert_true((chunk_modes(&b) >> 4) != OD_CHUNK_V_XOR); /* every mode here is decimal */
        assert_true(b.len < x.len);
        assert_int_equal(chunk_modes(&b) & 15, OD_CHUNK_T_GRID); /* times on the grid: 0 bits */
        if (mode == 0 || mode == 2) assert_true(b.len < 480); /* 2-decimal data: XOR is poor */
        fprintf(stderr, "decimal mode %d: modes 0x%02x, %.3f bytes/sample (XOR %.3f)\n", mode, chunk_modes(&b),
                b.len / 480.0, x.len / 480.0);
        od_buf_free(&x);
        /* a -0.0 (or a NaN) forces XOR */
        double keep = s[100].v;
        s[100].v = -0.0;
        assert_int_equal(od_chunk_encode(s, 480, &x), OD_OK);
        assert_int_equal(chunk_modes(&x) >> 4, OD_CHUNK_V_XOR);
        assert_int_equal(roundtrip(s, 480), 0);
        s[100].v = fromb(0x7ff0000000000002ULL);
        assert_int_equal(roundtrip(s, 480), 0);
        s[100].v = keep;
        assert_true(roundtrip(s, 480) > 0);
        /* bit flips in a decimal chunk are detected */
        for (size_t byte = 0; byte < b.len; byte += 3) {
            b.data[byte] ^= 0x04;
            od_samplevec out = {0};
            od_err e;
            assert_int_equal(od_chunk_decode(b.data, b.len, &out, &e), OD_CORRUPT);
            od_samplevec_free(&out);
            b.data[byte] ^= 0x04;
        }
        od_buf_free(&x);
        od_buf_free(&b);
    }
    /* extreme integers and scales */
    od_sample e[] = {{1, 9007199254740991.0}, {2, -9007199254740991.0}, {3, 0.000001}, {4, 123456.789012},
                     {5, 0}, {6, 1e15}};
    roundtrip(e, 6);
}

/* The decimal forms real exporters produce: Go durations float64(ns)/1e9 (k = 9), disk
 * times ms * (1.0/1000.0) (the reciprocal form, which differs from ms / 1000.0 in the last
 * bit for some ms). Both must take a decimal codec and round-trip exactly. */
static void test_chunk_decimal_forms(void **st)
{
    (void)st;
    od_sample s[480];
    int differs = 0;
    int64_t ms = 123456789, ns = 0;
    for (int form = 0; form < 3; form++) {
        for (int i = 0; i < 480; i++) {
            s[i].t = 1700000000000LL + i * 15000;
            ms += (int64_t)(rnd() % 50);
            ns = 100000 + (int64_t)(rnd() % 5000000);
            if (form == 0) {
                s[i].v = (double)ms * (1.0 / 1000.0);
                differs += bits(s[i].v) != bits((double)ms / 1000.0);
            } else if (form == 1) {
                s[i].v = (double)ns / 1e9;
            } else {
                s[i].v = (double)(ms * 1000 + (int64_t)(rnd() % 1000)) / 1e6; /* microseconds */
            }
        }
        od_buf b = {0}, x = {0};
        assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
        assert_int_equal(od_chunk_encode_as(s, 480, -1, OD_CHUNK_V_XOR, &x), OD_OK);
        assert_true((chunk_modes(&b) >> 4) != OD_CHUNK_V_XOR);
        assert_true(b.len < x.len);
        fprintf(stderr, "decimal form %d: %.3f bytes/sample (XOR %.3f)\n", form, b.len / 480.0, x.len / 480.0);
        assert_true(roundtrip(s, 480) > 0);
        od_buf_free(&b);
        od_buf_free(&x);
    }
    assert_true(differs > 0); /* the reciprocal form really is a different set of doubles */
    /* 1e-10 steps are beyond k = 9: XOR */
    for (int i = 0; i < 100; i++) {
        s[i].t = i;
        s[i].v = (double)(rnd() % 100000) * 1e-10 + 1;
    }
    assert_int_equal(roundtrip(s, 100), 0);
}

/* Timestamps: on the grid a chunk of constants is header-only; late scrapes and a gap are
 * exceptions of the grid; irregular times take delta-of-delta codes. */
static void test_chunk_grid(void **st)
{
    (void)st;
    od_sample s[480];
    for (int i = 0; i < 480; i++) {
        s[i].t = 1700000000000LL + i * 15000;
        s[i].v = 1;
    }
    od_buf b = {0};
    assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
    assert_int_equal(chunk_modes(&b) & 15, OD_CHUNK_T_GRID);
    fprintf(stderr, "constant on the grid: %zu bytes for 480 samples\n", b.len);
    assert_true(b.len <= 30);
    roundtrip(s, 480);
    size_t base = b.len;
    s[100].t += 7;    /* a late scrape */
    s[300].t -= 2000; /* an early one */
    for (int i = 400; i < 480; i++) s[i].t += 15000; /* a missed scrape */
    od_buf_reset(&b);
    assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
    assert_int_equal(chunk_modes(&b) & 15, OD_CHUNK_T_GRID);
    assert_true(b.len <= base + 5 * 4);
    roundtrip(s, 480);
    for (int i = 1; i < 480; i++) s[i].t = s[i - 1].t + 1000 + (int64_t)(rnd() % 500); /* jittery */
    od_buf_reset(&b);
    assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
    assert_int_equal(chunk_modes(&b) & 15, OD_CHUNK_T_DOD);
    roundtrip(s, 480);
    od_buf_free(&b);
}

/* Noise whose amplitude changes within the chunk (quiet night, busy day): per-block widths
 * beat one table for the whole chunk. Independent draws (durations) take the frame-of-
 * reference blocks on the values themselves. */
static void test_chunk_blocks(void **st)
{
    (void)st;
    rng_state = 0x1234567887654321ULL; /* the same data whatever ran before */
    od_sample s[480];
    int64_t v = 1000000;
    for (int i = 0; i < 480; i++) {
        s[i].t = 1700000000000LL + i * 15000;
        int64_t amp = (i / 64) % 2 ? 1 << 16 : 4;
        v += 100 + (int64_t)(rnd() % (uint64_t)amp);
        s[i].v = (double)v;
    }
    od_buf b = {0}, t = {0};
    assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
    assert_true(chunk_modes(&b) >> 4 == OD_CHUNK_V_DBLK || chunk_modes(&b) >> 4 == OD_CHUNK_V_DFOR);
    assert_int_equal(od_chunk_encode_as(s, 480, -1, OD_CHUNK_V_DTAB, &t), OD_OK);
    assert_true(b.len < t.len);
    assert_true(roundtrip(s, 480) == 6);
    for (int kind = 0; kind < 2; kind++) {
        for (int i = 0; i < 480; i++) {
            double z = ((double)(rnd() % 1000) + (double)(rnd() % 1000) + (double)(rnd() % 1000)) / 3000 - 0.5;
            /* kind 1: durations whose level shifts every 64 scrapes (quiet / busy hours), at
             * the block boundaries of the codes (code j is sample j + 1) */
            v = kind ? 1000000 * (1 + ((i + 63) / 64) % 3) + (int64_t)(40000 * z) : v + 1500 + (int64_t)(200 * z);
            s[i].v = kind ? (double)v / 1e9 : (double)v / 100;
        }
        od_buf_reset(&b);
        assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
        od_buf_reset(&t);
        assert_int_equal(od_chunk_encode_as(s, 480, -1, OD_CHUNK_V_DBLK, &t), OD_OK);
        fprintf(stderr, "kind %d: modes 0x%02x %.3f bytes/sample, zigzag blocks %.3f\n", kind, chunk_modes(&b),
                b.len / 480.0, t.len / 480.0);
        if (kind == 1) { /* independent draws around a level: the values themselves, per block */
            assert_int_equal(chunk_modes(&b) >> 4, OD_CHUNK_V_DFOR);
            assert_true(b.len < t.len);
        }
        assert_true(roundtrip(s, 480) == 6);
    }
    od_buf_free(&b);
    od_buf_free(&t);
}

/* Chunks written by the previous encoder (encodings 1 and 2) still decode. The bytes were
 * produced by that encoder from the samples rebuilt here. */
static const uint8_t old_dec[] = {0x02,0x28,0x80,0xa0,0xab,0xfe,0xf9,0x62,0x02,0x41,0x02,0xf8,0x01,0x01,0xa0,0x9c,0x01,0xc3,0xa9,0x88,0x84,0x44,0x00,0x1d,0x7f,0xf4,0xc0,0x01,0x88,0x84,0x42,0x21,0x10,0x88,0x44,0x22,0x11,0x08,0x84,0x40,0x58,0x15,0x98,0x6f}; /* enc 2, 44 bytes */
static const uint8_t old_xor[] = {0x01,0x28,0x80,0xa0,0xab,0xfe,0xf9,0x62,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0xc3,0xa9,0x8c,0x3d,0x40,0x8a,0x4b,0xc4,0x93,0xae,0xd6,0xad,0xb8,0xe2,0x1a,0x5b,0x2f,0xe1,0xca,0xda,0x38,0xed,0xc9,0xb6,0x3a,0x74,0x46,0x57,0x60,0x02,0x03,0x98,0x16,0xf2,0x66,0x31,0xe6,0xb5,0x60,0x43,0xd3,0x35,0xc1,0x54,0x7a,0xfb,0x27,0xff,0x00,0x00,0x00,0x00,0x00,0x00,0x28,0x00,0x38,0xfd,0xd2,0x1f,0x92,0x37,0x79,0xef,0x3a,0xff,0xea,0x00,0x0a,0x6d,0x39,0x3d,0xb9,0xa1,0x52,0x80,0x03,0x80,0x3d,0xca,0xce,0x38,0x28,0x0f,0x3a,0x94,0x07,0xc6,0x0e,0x73,0x67,0x43,0xe8,0x12,0x00,0x0e,0x3f,0xc0,0xcd,0x46,0xe7,0x05,0x40,0x01,0xff,0x6f,0xd4,0xec,0x24,0xa6,0x0a,0x03,0xea,0x18,0xe5,0xe3,0x1b,0x8c,0xad,0x00,0x7a,0x5b,0x3b,0xf9,0xc1,0xe7,0x33,0xa0,0x00,0xaa,0x69,0x6a,0x26,0xe9,0xe5,0x85,0x01,0xeb,0x58,0x7d,0x06,0x1e,0x18,0xca,0x80,0x3f,0xfd,0x57,0x7b,0x05,0x07,0xb2,0x10,0x00,0x4b,0xe6,0x5f,0x8c,0xd2,0x9c,0x5a,0x80,0xe5,0xcb,0xf7,0xf8,0x5d,0x68,0xc3,0x40,0x1d,0xc7,0x73,0xb8,0xcc,0x59,0xd8,0x28,0x00,0x1a,0x8a,0xc5,0x83,0xde,0xfe,0xb9,0x40,0x55,0xcb,0x70,0x38,0x6c,0x49,0xa2,0xa0,0x0a,0xbc,0x21,0xda,0xcf,0x18,0x38,0xc4,0x00,0x0c,0x7a,0xc6,0x3e,0x03,0xbf,0x06,0x80,0x3b,0x31,0xf8,0x7d,0x4a,0x6d,0x03,0x94,0x07,0x3a,0xf9,0xb1,0xec,0x4a,0xd9,0xda,0x00,0x0a,0x37,0x76,0x52,0x22,0xc5,0x71,0x40,0x1f,0xa1,0xaf,0xff,0xa4,0x24,0x31,0x4a,0x03,0xd1,0x4d,0xb0,0xa8,0x0e,0x5d,0xd5,0x00,0x05,0x2e,0xa9,0x7a,0xe1,0x82,0xf8,0x20,0x0f,0x7a,0x0d,0xaf,0x5d,0xa9,0x24,0xa5,0x01,0xf0,0xf7,0xe7,0xcc,0x43,0x43,0x20,0x80,0x03,0x81,0x08,0xaa,0xa5,0x43,0xbb,0x50,0x00,0x7d,0xbf,0x11,0x50,0xc7,0x9a,0x22,0x80,0xfa,0x4a,0x45,0x61,0x8e,0x55,0x8e,0x40,0x1e,0x87,0x9a,0xe4,0x2b,0x5d,0x6b,0x08,0x00,0x2b,0x89,0xd4,0x3d,0x7c,0x77,0x81,0x40,0x7b,0x4c,0xd5,0xd5,0x0a,0xb2,0xb2,0x20,0x0f,0xc9,0xbb,0x94,0x1b,0x20,0x23,0xc0,0x1e,0x30,0x8c,0x66}; /* enc 1, 357 bytes */

static void test_chunk_old_encodings(void **st)
{
    (void)st;
    od_sample s[40];
    for (int i = 0; i < 40; i++) {
        s[i].t = 1700000000000LL + i * 15000 + (i == 7 ? 3 : 0);
        s[i].v = 100 + i * 1.25 + (i % 3 ? 0.01 : 0);
    }
    od_buf b = {0};
    assert_int_equal(old_dec[0], OD_CHUNK_DEC);
    od_buf_append(&b, old_dec, sizeof old_dec);
    check_decode(&b, s, 40);
    for (int i = 0; i < 40; i++) s[i].v = sin(i) * 1e3;
    s[5].v = 0;
    s[6].v = fromb(0x7ff0000000000002ULL);
    od_buf_reset(&b);
    assert_int_equal(old_xor[0], OD_CHUNK_XOR);
    od_buf_append(&b, old_xor, sizeof old_xor);
    check_decode(&b, s, 40);
    /* and damage in them is detected */
    for (size_t byte = 0; byte < b.len; byte++) {
        b.data[byte] ^= 0x10;
        od_samplevec out = {0};
        od_err e;
        assert_int_equal(od_chunk_decode(b.data, b.len, &out, &e), OD_CORRUPT);
        od_samplevec_free(&out);
        b.data[byte] ^= 0x10;
    }
    od_buf_free(&b);
}

/* Every variant of encoding 3: each flipped bit and each truncation is OD_CORRUPT; a chunk
 * with a valid CRC but impossible header fields is OD_CORRUPT too (structural checks). */
static void test_chunk_corruption_variants(void **st)
{
    (void)st;
    od_sample s[100];
    for (int i = 0; i < 100; i++) {
        s[i].t = 1000 + i * 15000 + (i == 50 ? 9 : 0);
        s[i].v = (double)(i * 37 % 101) / 100;
    }
    for (int t = OD_CHUNK_T_DOD; t <= OD_CHUNK_T_GRID; t++)
        for (int v = OD_CHUNK_V_XOR; v <= OD_CHUNK_V_DFOR; v++) {
            od_buf b = {0};
            assert_int_equal(od_chunk_encode_as(s, 100, t, v, &b), OD_OK);
            od_err e;
            for (size_t byte = 0; byte < b.len; byte++)
                for (int bit = 0; bit < 8; bit++) {
                    b.data[byte] ^= (uint8_t)(1 << bit);
                    od_samplevec out = {0};
                    assert_int_equal(od_chunk_decode(b.data, b.len, &out, &e), OD_CORRUPT);
                    assert_int_equal(out.n, 0);
                    od_samplevec_free(&out);
                    b.data[byte] ^= (uint8_t)(1 << bit);
                }
            for (size_t len = 0; len < b.len; len++) {
                od_samplevec out = {0};
                assert_int_equal(od_chunk_decode(b.data, len, &out, &e), OD_CORRUPT);
                od_samplevec_free(&out);
            }
            /* re-sealed damage: bad modes byte, then a truncated payload with a valid CRC */
            od_buf c = {0};
            od_buf_append(&c, b.data, b.len - 4);
            size_t mpos = 1 + od_varint_len(100) + od_varint_len(od_zigzag(1000));
            c.data[mpos] = 0x77;
            od_buf_put_u32(&c, od_crc32c(c.data, c.len));
            od_samplevec out = {0};
            assert_int_equal(od_chunk_decode(c.data, c.len, &out, &e), OD_CORRUPT);
            od_buf_reset(&c);
            od_buf_append(&c, b.data, b.len - 4 - 3);
            od_buf_put_u32(&c, od_crc32c(c.data, c.len));
            assert_int_equal(od_chunk_decode(c.data, c.len, &out, &e), OD_CORRUPT);
            assert_int_equal(out.n, 0);
            od_samplevec_free(&out);
            od_buf_free(&c);
            od_buf_free(&b);
        }
}

/* ---------------------------------------------------------------- robustness and exactness */

/* docs/formats.md, "Chunk": a chunk whose coding spends 0 bits per sample (GRID times and DTAB
 * width-0 values) declares at most this many samples; every other chunk is bounded by the
 * minimum bits of its codings (at best 6 bits per DBLK block of 64 codes). */
#define ZERO_MAX ((size_t)1 << 20)

/* Most samples a decoder may allocate for a chunk of len bytes. */
static size_t alloc_bound(size_t len)
{
    size_t b = len * 8 * 64 / 6 + 1;
    return b > ZERO_MAX ? b : ZERO_MAX;
}

/* Seal body[0..blen) with its CRC into an exact-size heap block (so ASan sees any read past
 * the chunk), decode it and check the contract: OD_OK with the declared samples, or
 * OD_CORRUPT with a message and nothing appended; never more allocated than alloc_bound;
 * od_chunk_info agrees with a successful decode. Returns the decode's code. */
static int fuzz_one(const uint8_t *body, size_t blen)
{
    size_t len = blen + 4;
    uint8_t *p = malloc(len);
    assert_non_null(p);
    if (blen) memcpy(p, body, blen);
    od_put_u32(p + blen, od_crc32c(p, blen));
    od_samplevec out = {0};
    od_err e;
    memset(&e, 0, sizeof e);
    int rc = od_chunk_decode(p, len, &out, &e);
    if (rc != OD_OK) {
        if (rc != OD_CORRUPT) fprintf(stderr, "decode returned %d (%s) for a %zu-byte chunk\n", rc, e.msg, len);
        assert_int_equal(rc, OD_CORRUPT);
        assert_true(e.msg[0] != 0);
        assert_int_equal(out.n, 0);
    }
    if (out.cap > alloc_bound(len))
        fprintf(stderr, "decode of a %zu-byte chunk allocated %zu samples (rc %d)\n", len, out.cap, rc);
    assert_true(out.cap <= alloc_bound(len));
    size_t cnt = 0;
    int irc = od_chunk_info(p, len, &cnt, &e);
    if (rc == OD_OK) {
        assert_int_equal(irc, OD_OK);
        assert_int_equal(cnt, out.n);
    } else {
        assert_true(irc == OD_OK || irc == OD_CORRUPT);
    }
    od_samplevec_free(&out);
    free(p);
    return rc;
}

/* Valid chunks of every encoding, time mode, value codec (and several tables, block sizes and
 * value modes through the data), for the fuzzer to start from. */
static size_t fuzz_seeds(od_buf *seeds, size_t max)
{
    size_t ns = 0;
    enum { N = 140 };
    od_sample *s = malloc(N * sizeof *s);
    assert_non_null(s);
    for (int set = 0; set < 15; set++) {
        size_t n = N;
        int64_t iv = 1000;
        for (size_t i = 0; i < N; i++) {
            s[i].t = 1700000000000LL + (int64_t)i * 15000;
            switch (set) {
            case 0: s[i].v = 1; break; /* constant on the grid: 0 bits per sample */
            case 1: iv += (int64_t)(rnd() % 300); s[i].v = (double)iv / 100; if (i == 33) s[i].t += 7; break;
            case 2: s[i].v = fromb(rnd()); s[i].t += (int64_t)(rnd() % 5000); break; /* XOR only */
            case 3: iv += (int64_t)(rnd() % 50); s[i].v = (double)iv * (1.0 / 1000.0); break; /* reciprocal */
            case 4: /* extreme times and integers */
                s[i].t = (i & 1) ? INT64_MAX - (int64_t)i : INT64_MIN + (int64_t)i;
                s[i].v = (i & 1) ? 9007199254740991.0 : -9007199254740991.0;
                break;
            case 5: s[i].v = (double)(1000000 + (int64_t)(rnd() % 40000)) / 1e9; break; /* durations: DFOR x − x0 */
            case 6: iv += 4096 * (int64_t)(rnd() % 7); s[i].v = (double)iv; break; /* GCD 4096 */
            case 7: iv += 100 + (int64_t)(rnd() % ((i / 32) % 2 ? 65536 : 4)); s[i].v = (double)iv; break;
            case 8: s[i].v = (double)(i * i); break; /* steady delta-of-delta */
            case 9: n = 1 + (size_t)(rnd() % 3); s[i].v = (double)(rnd() % 10); break; /* 1–3 samples */
            case 11: case 12: case 13: case 14: { /* heavy-tailed steps: bucket tables 0–3 */
                int w = 3 + 2 * (set - 11), big = rnd() % 16 == 0;
                int64_t span = (int64_t)1 << (big ? w + 4 : w - 1);
                iv += rnd() % 3 == 0 ? 0 : (int64_t)(rnd() % (uint64_t)(2 * span)) - span;
                s[i].v = (double)iv;
                break;
            }
            default: { /* special values */
                static const uint64_t sp[] = {0x7ff0000000000002ULL, 0x8000000000000000ULL, 0x7ff0000000000000ULL,
                                              0xfff0000000000000ULL, 0x7ff8dead00000001ULL, 0x3ff0000000000000ULL};
                s[i].v = fromb(sp[rnd() % 6]);
                break;
            }
            }
        }
        for (int t = -1; t <= OD_CHUNK_T_GRID; t++)
            for (int v = -1; v <= OD_CHUNK_V_DFOR; v++) {
                if ((t < 0) != (v < 0)) continue;
                od_buf b = {0};
                int rc = od_chunk_encode_as(s, n, t, v, &b);
                if (rc == OD_BADREQ) continue;
                assert_int_equal(rc, OD_OK);
                assert_true(ns < max);
                seeds[ns++] = b;
            }
    }
    free(s);
    od_buf a = {0}, b = {0};
    od_buf_append(&a, old_dec, sizeof old_dec);
    od_buf_append(&b, old_xor, sizeof old_xor);
    assert_true(ns + 2 <= max);
    seeds[ns++] = a;
    seeds[ns++] = b;
    return ns;
}

/* Replace the sample-count varint (after the encoding byte) by v. */
static void set_count(od_buf *b, uint64_t v)
{
    if (b->len < 2) return;
    od_rd r = od_rd_make(b->data + 1, b->len - 1);
    od_rd_varint(&r);
    if (!r.ok) return;
    size_t rest = (size_t)(r.end - r.p), off = b->len - rest;
    od_buf c = {0};
    assert_int_equal(od_buf_append_u8(&c, b->data[0]), OD_OK);
    assert_int_equal(od_buf_put_varint(&c, v), OD_OK);
    assert_int_equal(od_buf_append(&c, b->data + off, rest), OD_OK);
    od_buf_free(b);
    *b = c;
}

static uint64_t interesting_count(uint64_t n)
{
    switch (rnd() % 10) {
    case 0: return n + 1 + rnd() % 8;
    case 1: return n > 1 ? n - 1 - rnd() % (n - 1) : 2;
    case 2: return rnd() % 4;
    case 3: return n * (2 + rnd() % 100);
    case 4: return ZERO_MAX + (rnd() % 3) - 1;
    case 5: return ((uint64_t)1 << 32) + (rnd() % 3) - 1;
    case 6: return rnd();
    case 7: return (uint64_t)1 << (rnd() % 64);
    default: return n + rnd() % 1000;
    }
}

/* One random mutation of a chunk body (CRC stripped); the caller reseals it. */
static void mutate(od_buf *b, const od_buf *other)
{
    size_t len = b->len;
    switch (rnd() % 10) {
    case 0: /* 1–3 bit flips */
        for (int k = 1 + (int)(rnd() % 3); k > 0 && len; k--) b->data[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        break;
    case 1: if (len) b->data[rnd() % len] = (uint8_t)rnd(); break;
    case 2: { /* boundary bytes */
        static const uint8_t bb[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x3f, 0x40, 0xfe};
        if (len) b->data[rnd() % len] = bb[rnd() % 8];
        break;
    }
    case 3: b->len = len ? (size_t)(rnd() % len) : 0; break; /* truncate */
    case 4: /* extend */
        for (int k = 1 + (int)(rnd() % 16); k > 0; k--) od_buf_append_u8(b, (rnd() & 1) ? (uint8_t)rnd() : 0);
        break;
    case 5: { /* the sample count */
        od_rd r = od_rd_make(b->data + (len ? 1 : 0), len ? len - 1 : 0);
        uint64_t n = od_rd_varint(&r);
        set_count(b, interesting_count(r.ok ? n : 1));
        break;
    }
    case 6: /* header fields: encoding byte, modes, scale, table/width bytes */
        if (len) b->data[rnd() % (len < 24 ? len : 24)] = (uint8_t)rnd();
        break;
    case 7: /* insert or delete a byte */
        if (len && (rnd() & 1)) {
            size_t at = (size_t)(rnd() % len);
            memmove(b->data + at, b->data + at + 1, len - at - 1);
            b->len--;
        } else {
            od_buf_append_u8(b, 0);
            size_t at = (size_t)(rnd() % b->len);
            memmove(b->data + at + 1, b->data + at, b->len - at - 1);
            b->data[at] = (uint8_t)rnd();
        }
        break;
    case 8: /* splice a range of another chunk in */
        if (len && other->len > 4) {
            size_t at = (size_t)(rnd() % len), from = (size_t)(rnd() % (other->len - 4));
            size_t k = 1 + (size_t)(rnd() % 16);
            if (k > len - at) k = len - at;
            if (k > other->len - 4 - from) k = other->len - 4 - from;
            memcpy(b->data + at, other->data + from, k);
        }
        break;
    default: /* zero or fill a tail (widths and codes run out) */
        if (len) {
            size_t at = (size_t)(rnd() % len);
            memset(b->data + at, (rnd() & 1) ? 0xff : 0x00, len - at);
        }
        break;
    }
}

/* Resealed mutations of valid chunks of every kind: the CRC is recomputed after the damage so
 * the decoder's structural checks (not the checksum) must catch it. Decoding returns OK or
 * OD_CORRUPT, never reads outside the chunk (ASan), never allocates beyond the bound. */
static void test_chunk_fuzz(void **st)
{
    (void)st;
    rng_state = 0x9e3779b97f4a7c15ULL;
    od_buf seeds[160];
    size_t ns = fuzz_seeds(seeds, 160);
    unsigned seen = 0;
    for (size_t i = 0; i < ns; i++) { /* every seed decodes as it is; every mode x codec is there */
        assert_int_equal(fuzz_one(seeds[i].data, seeds[i].len - 4), OD_OK);
        int m = chunk_modes(&seeds[i]);
        if (m >= 0) seen |= 1u << ((m & 15) * 4 + (m >> 4));
    }
    assert_int_equal(seen, 0xff);
    long iters = (long)(150000 * od_test_scale());
    if (iters < 2000) iters = 2000;
    long ok = 0, corrupt = 0;
    od_buf m = {0};
    for (long it = 0; it < iters; it++) {
        const od_buf *src = &seeds[rnd() % ns], *other = &seeds[rnd() % ns];
        od_buf_reset(&m);
        assert_int_equal(od_buf_append(&m, src->data, src->len - 4), OD_OK);
        int k = (rnd() % 4) ? 1 : 2 + (int)(rnd() % 3);
        while (k-- > 0) mutate(&m, other);
        if (fuzz_one(m.data, m.len) == OD_OK) ok++;
        else corrupt++;
    }
    fprintf(stderr, "fuzz: %zu seeds, %ld mutations: %ld decoded, %ld corrupt\n", ns, iters, ok, corrupt);
    assert_true(corrupt > iters / 4);
    od_buf_free(&m);
    for (size_t i = 0; i < ns; i++) od_buf_free(&seeds[i]);
}

/* The sample-count bound (docs/formats.md): a chunk cannot make the decoder allocate more
 * than its codings can hold; the one 0-bit coding is capped at ZERO_MAX samples, and the
 * encoder keeps to the same limits so every valid input still round-trips. */
static void test_chunk_count_bound(void **st)
{
    (void)st;
    size_t n = ZERO_MAX + 1;
    od_sample *s = malloc(n * sizeof *s);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        s[i].t = 1700000000000LL + (int64_t)i * 15000;
        s[i].v = 7;
    }
    /* at the cap: header only */
    od_buf b = {0}, body = {0};
    assert_int_equal(od_chunk_encode(s, ZERO_MAX, &b), OD_OK);
    assert_int_equal(chunk_modes(&b), OD_CHUNK_T_GRID | (OD_CHUNK_V_DTAB << 4));
    assert_true(b.len < 32);
    check_decode(&b, s, ZERO_MAX);
    /* declaring one more (or 2^32) with a valid CRC is corrupt, without allocating */
    for (int k = 0; k < 3; k++) {
        od_buf_reset(&body);
        od_buf_append(&body, b.data, b.len - 4);
        set_count(&body, k == 0 ? ZERO_MAX + 1 : k == 1 ? (uint64_t)1 << 32 : ((uint64_t)1 << 32) + 1);
        od_buf_put_u32(&body, od_crc32c(body.data, body.len));
        od_samplevec out = {0};
        od_err e;
        assert_int_equal(od_chunk_decode(body.data, body.len, &out, &e), OD_CORRUPT);
        assert_non_null(strstr(e.msg, "sample count"));
        assert_int_equal(out.cap, 0);
        size_t cnt;
        assert_int_equal(od_chunk_info(body.data, body.len, &cnt, &e), OD_CORRUPT);
        od_samplevec_free(&out);
    }
    /* above the cap the encoder takes another coding, which still round-trips */
    od_buf_reset(&b);
    assert_int_equal(od_chunk_encode(s, n, &b), OD_OK);
    assert_true(chunk_modes(&b) != (OD_CHUNK_T_GRID | (OD_CHUNK_V_DTAB << 4)) || b.len > 64);
    fprintf(stderr, "constant, %zu samples on the grid: modes 0x%02x, %zu bytes\n", n, chunk_modes(&b), b.len);
    check_decode(&b, s, n);
    od_buf_reset(&b);
    assert_int_equal(od_chunk_encode_as(s, n, OD_CHUNK_T_GRID, OD_CHUNK_V_DTAB, &b), OD_OK);
    check_decode(&b, s, n);
    /* every other coding: a count beyond what its payload can hold is corrupt, unallocated */
    for (int t = OD_CHUNK_T_DOD; t <= OD_CHUNK_T_GRID; t++)
        for (int v = OD_CHUNK_V_XOR; v <= OD_CHUNK_V_DFOR; v++) {
            if (t == OD_CHUNK_T_GRID && v == OD_CHUNK_V_DTAB) continue;
            od_buf_reset(&b);
            assert_int_equal(od_chunk_encode_as(s, 1000, t, v, &b), OD_OK);
            od_buf_reset(&body);
            od_buf_append(&body, b.data, b.len - 4);
            set_count(&body, 1000 * 1000);
            od_buf_put_u32(&body, od_crc32c(body.data, body.len));
            od_samplevec out = {0};
            od_err e;
            assert_int_equal(od_chunk_decode(body.data, body.len, &out, &e), OD_CORRUPT);
            assert_int_equal(out.cap, 0);
            od_samplevec_free(&out);
        }
    /* the encoder refuses more samples than any chunk may declare, before touching them */
    if (sizeof(size_t) > 4) {
        od_buf_reset(&b);
        assert_int_equal(od_chunk_encode(s, (size_t)((uint64_t)1 << 32) + 1, &b), OD_LIMIT);
        assert_int_equal(b.len, 0);
    }
    od_buf_free(&body);
    od_buf_free(&b);
    free(s);
}

/* Every decimal form round-trips bit for bit for every double the encoder accepts, across
 * magnitudes (0 … 2^53), scales 0–9, both forms, extreme integer steps (deltas near 2^54,
 * delta-of-deltas near 2^55) and random bit patterns; and accepted forms are really taken. */
static void test_chunk_decimal_exact(void **st)
{
    (void)st;
    static const double p10[] = {1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    static const double m10[] = {1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9};
    rng_state = 0x0123456789abcdefULL;
    int iters = (int)(400 * od_test_scale());
    if (iters < 40) iters = 40;
    od_sample s[96];
    int taken = 0, small = 0;
    for (int it = 0; it < iters; it++) {
        int k = (int)(rnd() % 10), recip = (int)(rnd() & 1), kind = (int)(rnd() % 5);
        size_t n = 1 + (size_t)(rnd() % 96);
        int maxbits = 1 + (int)(rnd() % 53);
        int64_t lim = (int64_t)1 << 53;
        for (size_t i = 0; i < n; i++) {
            int64_t iv;
            switch (kind) {
            case 0: iv = (int64_t)(rnd() >> (64 - maxbits)); break; /* 0 … 2^maxbits */
            case 1: iv = (i & 1) ? lim - 1 - (int64_t)(rnd() % 3) : -(lim - 1) + (int64_t)(rnd() % 3); break;
            case 2: iv = (int64_t)(rnd() % (uint64_t)lim) * ((rnd() & 1) ? 1 : -1); break;
            case 3: iv = (int64_t)(i * i * i * 1000003); break; /* growing delta-of-delta */
            default: iv = (int64_t)(rnd() % 2000) - 1000; break;
            }
            if (rnd() % 2 == 0 && kind == 0) iv = -iv;
            s[i].t = 1700000000000LL + (int64_t)i * 15000;
            s[i].v = recip ? (double)iv * m10[k] : (double)iv / p10[k];
            if (kind == 4 && rnd() % 50 == 0) s[i].v = fromb(rnd()); /* a stray double */
        }
        /* roundtrip() checks every forced coding bit for bit */
        int dec = roundtrip(s, n);
        int all_small = kind == 4 || (kind == 0 && maxbits <= 50);
        for (size_t i = 0; i < n && all_small; i++)
            if (s[i].v == 0 && signbit(s[i].v)) all_small = 0; /* -0.0 stays XOR */
        if (all_small && kind == 4) all_small = 0; /* may hold a stray double */
        if (all_small) {
            small++;
            taken += dec > 0;
        }
    }
    fprintf(stderr, "decimal exactness: %d chunks, %d of %d small-integer chunks took a decimal codec\n", iters, taken,
            small);
    assert_true(taken * 10 >= small * 9);
    /* random doubles and edge magnitudes: whatever codec is taken, the bits come back */
    for (int it = 0; it < iters; it++) {
        size_t n = 2 + (size_t)(rnd() % 60);
        for (size_t i = 0; i < n; i++) {
            s[i].t = (int64_t)rnd();
            switch (rnd() % 6) {
            case 0: s[i].v = fromb(rnd()); break;
            case 1: s[i].v = 9007199254740992.0 * (double)(1 + rnd() % 4); break; /* 2^53 and up */
            case 2: s[i].v = fromb(rnd() % 0x0010000000000000ULL); break; /* subnormal */
            case 3: s[i].v = 0.1 + 0.2; break;
            case 4: s[i].v = (double)(rnd() % 100000) / 1e9 + 1e-12; break;
            default: s[i].v = (double)(int64_t)(rnd() % 10000) / 1e9; break;
            }
        }
        roundtrip(s, n);
    }
}

static void test_sort_dedup(void **st)
{
    (void)st;
    od_sample s[] = {{30, 3}, {10, 1}, {20, 2}, {10, 11}, {30, 33}, {5, 0}};
    size_t n = 6;
    assert_int_equal(od_samples_sort_dedup(s, &n), OD_OK);
    assert_int_equal(n, 4);
    assert_int_equal(s[0].t, 5);
    assert_int_equal(s[1].t, 10);
    assert_true(s[1].v == 11); /* last write wins */
    assert_int_equal(s[3].t, 30);
    assert_true(s[3].v == 33);
}

static void test_labels_validate(void **st)
{
    (void)st;
    od_labels ls = {0};
    od_err e;
    assert_int_equal(od_labels_add(&ls, "job", "api"), OD_OK);
    assert_int_equal(od_labels_add(&ls, "__name__", "up"), OD_OK);
    assert_int_equal(od_labels_add(&ls, "empty", ""), OD_OK);
    assert_int_equal(od_labels_sort(&ls, &e), OD_OK);
    assert_int_equal(ls.n, 2); /* empty value dropped */
    assert_string_equal(ls.v[0].name, "__name__");
    assert_int_equal(od_labels_validate(&ls, &e), OD_OK);
    od_buf b = {0};
    assert_int_equal(od_labels_format(&ls, &b), OD_OK);
    assert_int_equal(od_buf_cstr(&b), OD_OK);
    assert_string_equal((char *)b.data, "up{job=\"api\"}");
    od_buf_reset(&b);
    assert_int_equal(od_labels_format_json(&ls, &b), OD_OK);
    od_buf_cstr(&b);
    assert_string_equal((char *)b.data, "{\"job\":\"api\"}");
    od_buf_free(&b);

    od_labels bad = {0};
    od_labels_add(&bad, "__name__", "up");
    od_labels_add(&bad, "1abc", "x");
    assert_int_equal(od_labels_sort(&bad, &e), OD_OK);
    assert_int_equal(od_labels_validate(&bad, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "invalid label name \"1abc\""));
    od_labels_reset(&bad);
    od_labels_add(&bad, "__name__", "up");
    od_labels_add(&bad, "a", "\xff\xfe");
    od_labels_sort(&bad, &e);
    assert_int_equal(od_labels_validate(&bad, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "not valid UTF-8"));
    od_labels_reset(&bad);
    od_labels_add(&bad, "a", "1");
    od_labels_add(&bad, "a", "2");
    assert_int_equal(od_labels_sort(&bad, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "duplicate label name \"a\""));
    od_labels_reset(&bad);
    od_labels_add(&bad, "job", "x");
    od_labels_sort(&bad, &e);
    assert_int_equal(od_labels_validate(&bad, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "no metric name"));
    od_labels_reset(&bad);
    od_labels_add(&bad, "__name__", "9bad");
    assert_int_equal(od_labels_validate(&bad, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "invalid metric name"));
    assert_true(od_label_value_valid("h\xc3\xa9llo", 6));
    assert_false(od_label_value_valid("\xc0\x80", 2)); /* overlong */
    assert_false(od_label_value_valid("\xed\xa0\x80", 3)); /* surrogate */
    assert_false(od_label_value_valid("a\0b", 3));
    od_labels_free(&bad);
    od_labels_free(&ls);
}

static void test_labels_hash_encoding(void **st)
{
    (void)st;
    od_labels a = {0}, b = {0}, c = {0};
    od_err e;
    od_labels_add(&a, "__name__", "m");
    od_labels_add(&a, "ab", "c");
    od_labels_add(&b, "__name__", "m");
    od_labels_add(&b, "a", "bc");
    assert_int_not_equal(od_labels_hash(&a), od_labels_hash(&b));
    od_buf ea = {0};
    assert_int_equal(od_labels_encode(&a, &ea), OD_OK);
    assert_int_equal(od_labels_hash(&a), od_tsdb_hash_bytes(ea.data, ea.len));
    assert_int_equal(od_labels_decode(ea.data, ea.len, &c, &e), OD_OK);
    assert_int_equal(od_labels_cmp(&a, &c), 0);
    assert_int_not_equal(od_labels_cmp(&a, &b), 0);
    /* truncated encodings are corrupt, never partial label sets */
    for (size_t len = 0; len < ea.len; len++) {
        od_labels d = {0};
        assert_int_equal(od_labels_decode(ea.data, len, &d, &e), OD_CORRUPT);
        od_labels_free(&d);
    }
    /* the streaming hash agrees with the byte hash for many sizes */
    for (int i = 0; i < 64; i++) {
        od_labels x = {0};
        char v[80];
        memset(v, 'a' + i % 26, (size_t)i);
        v[i] = 0;
        od_labels_add(&x, "__name__", "metric_name");
        od_labels_add(&x, "zz", v);
        od_buf ex = {0};
        od_labels_encode(&x, &ex);
        assert_int_equal(od_labels_hash(&x), od_tsdb_hash_bytes(ex.data, ex.len));
        od_buf_free(&ex);
        od_labels_free(&x);
    }
    od_buf_free(&ea);
    od_labels_free(&a);
    od_labels_free(&b);
    od_labels_free(&c);
}

static void test_postings(void **st)
{
    (void)st;
    od_sidvec s = {0}, d = {0}, o = {0};
    for (uint64_t i = 0; i < 1000; i++) od_sidvec_push(&s, (i * 7919) % 1009 + 1);
    od_sidvec_push(&s, 5);
    od_sidvec_normalize(&s);
    for (size_t i = 1; i < s.n; i++) assert_true(s.v[i] > s.v[i - 1]);
    od_buf b = {0};
    od_err e;
    assert_int_equal(od_postings_encode(s.v, s.n, &b), OD_OK);
    assert_true(b.len < s.n * 2);
    assert_int_equal(od_postings_decode(b.data, b.len, &d, &e), OD_OK);
    assert_int_equal(d.n, s.n);
    assert_memory_equal(d.v, s.v, s.n * 8);
    od_sidvec evens = {0};
    for (uint64_t i = 2; i < 3000; i += 2) od_sidvec_push(&evens, i);
    assert_int_equal(od_sidvec_intersect(&s, &evens, &o), OD_OK);
    for (size_t i = 0; i < o.n; i++) assert_int_equal(o.v[i] % 2, 0);
    size_t want = 0;
    for (size_t i = 0; i < s.n; i++) want += s.v[i] % 2 == 0;
    assert_int_equal(o.n, want);
    b.data[b.len - 1] ^= 0x80; /* make the last varint run off the end */
    od_sidvec x = {0};
    assert_int_equal(od_postings_decode(b.data, b.len, &x, &e), OD_CORRUPT);
    od_sidvec_free(&x);
    od_sidvec_free(&evens);
    od_sidvec_free(&s);
    od_sidvec_free(&d);
    od_sidvec_free(&o);
    od_buf_free(&b);
}

static void test_matchers(void **st)
{
    (void)st;
    od_matcher m;
    od_err e;
    assert_int_equal(od_matcher_init(&m, OD_MATCH_RE, "code", "5..", &e), OD_OK);
    assert_true(od_matcher_matches(&m, "500", 3));
    assert_false(od_matcher_matches(&m, "5000", 4)); /* anchored at the end */
    assert_false(od_matcher_matches(&m, "1500", 4)); /* and at the start */
    od_matcher_clear(&m);
    assert_int_equal(od_matcher_init(&m, OD_MATCH_RE, "a", "foo|bar", &e), OD_OK);
    assert_true(od_matcher_matches(&m, "bar", 3));
    assert_false(od_matcher_matches(&m, "foobar", 6)); /* alternation is grouped */
    od_matcher_clear(&m);
    assert_int_equal(od_matcher_init(&m, OD_MATCH_RE, "a", "a.b", &e), OD_OK);
    assert_true(od_matcher_matches(&m, "a\nb", 3)); /* . matches newline as in Prometheus */
    od_matcher_clear(&m);
    assert_int_equal(od_matcher_init(&m, OD_MATCH_RE, "a", "x", &e), OD_OK);
    assert_false(od_matcher_matches(&m, "x\n", 2)); /* $ is the very end */
    od_matcher_clear(&m);
    assert_int_equal(od_matcher_init(&m, OD_MATCH_NRE, "a", "x.*", &e), OD_OK);
    assert_true(od_matcher_matches(&m, "", 0));
    assert_false(od_matcher_matches(&m, "xyz", 3));
    od_matcher_clear(&m);
    assert_int_equal(od_matcher_init(&m, OD_MATCH_RE, "a", "(unclosed", &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "invalid regular expression \"(unclosed\""));

    od_labels ls = {0};
    od_labels_add(&ls, "__name__", "http_requests_total");
    od_labels_add(&ls, "code", "503");
    od_labels_sort(&ls, &e);
    od_matcher *ms;
    size_t n;
    assert_int_equal(od_selector_parse("http_requests_total{code=~\"5..\", job!=\"x\"}", &ms, &n, &e), OD_OK);
    assert_int_equal(n, 3);
    assert_string_equal(ms[0].name, "__name__");
    assert_int_equal(ms[1].op, OD_MATCH_RE);
    assert_int_equal(ms[2].op, OD_MATCH_NE);
    assert_true(od_matchers_match(ms, n, &ls));
    od_matchers_free(ms, n);
    assert_int_equal(od_selector_parse("{__name__=~'http_.*', code=\"200\"}", &ms, &n, &e), OD_OK);
    assert_false(od_matchers_match(ms, n, &ls));
    od_matchers_free(ms, n);
    assert_int_equal(od_selector_parse("m{a=\"q\\\"\\n\\u00e9\"}", &ms, &n, &e), OD_OK);
    assert_string_equal(ms[1].value, "q\"\n\xc3\xa9");
    od_matchers_free(ms, n);
    assert_int_equal(od_selector_parse("m{a=`raw\\d`}", &ms, &n, &e), OD_OK);
    assert_string_equal(ms[1].value, "raw\\d");
    od_matchers_free(ms, n);
    assert_int_equal(od_selector_parse("m{a=\"x\"", &ms, &n, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "expected ',' or '}'"));
    assert_int_equal(od_selector_parse("m{a~\"x\"}", &ms, &n, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "expected one of"));
    assert_int_equal(od_selector_parse("{a=\"\"}", &ms, &n, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "does not match the empty string"));
    assert_int_equal(od_selector_parse("", &ms, &n, &e), OD_BADREQ);
    assert_int_equal(od_selector_parse("m extra", &ms, &n, &e), OD_BADREQ);
    od_labels_free(&ls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_special_values), cmocka_unit_test(test_chunk_timestamps),
        cmocka_unit_test(test_chunk_random),         cmocka_unit_test(test_chunk_corruption),
        cmocka_unit_test(test_chunk_compression),    cmocka_unit_test(test_sort_dedup),
        cmocka_unit_test(test_chunk_decimal),        cmocka_unit_test(test_chunk_decimal_forms),
        cmocka_unit_test(test_chunk_grid),           cmocka_unit_test(test_chunk_blocks),
        cmocka_unit_test(test_chunk_old_encodings),  cmocka_unit_test(test_chunk_corruption_variants),
        cmocka_unit_test(test_chunk_fuzz),           cmocka_unit_test(test_chunk_count_bound),
        cmocka_unit_test(test_chunk_decimal_exact),
        cmocka_unit_test(test_labels_validate),      cmocka_unit_test(test_labels_hash_encoding),
        cmocka_unit_test(test_postings),             cmocka_unit_test(test_matchers),
    };
    return cmocka_run_group_tests_name("tsdb_codec", tests, NULL, NULL);
}
