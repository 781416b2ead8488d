/*
 * test_tsdb_codec.c — unit tests of the TSDB's pure layers: the XOR chunk codec (round trip
 * of special floats and odd timestamps, corruption detection), label sets (validation,
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

static double scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double f = s ? atof(s) : 1.0;
    return f > 0 ? f : 1.0;
}

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

static void roundtrip(const od_sample *s, size_t n)
{
    od_buf b = {0};
    assert_int_equal(od_chunk_encode(s, n, &b), OD_OK);
    od_samplevec out = {0};
    od_err e;
    assert_int_equal(od_chunk_decode(b.data, b.len, &out, &e), OD_OK);
    assert_int_equal(out.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out.v[i].t, s[i].t);
        assert_int_equal(bits(out.v[i].v), bits(s[i].v));
    }
    size_t cnt;
    assert_int_equal(od_chunk_info(b.data, b.len, &cnt, &e), OD_OK);
    assert_int_equal(cnt, n);
    od_samplevec_free(&out);
    od_buf_free(&b);
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
    int iters = (int)(200 * scale());
    if (iters < 10) iters = 10;
    od_sample *s = malloc(2000 * sizeof *s);
    assert_non_null(s);
    for (int it = 0; it < iters; it++) {
        size_t n = 1 + rnd() % 2000;
        int64_t t = (int64_t)(rnd() % 4000000000000ULL) - 1000000000000LL;
        double v = (double)(rnd() % 1000);
        int mode = (int)(rnd() % 4);
        for (size_t i = 0; i < n; i++) {
            switch (mode) {
            case 0: t += 15000; v += (double)(rnd() % 100); break;                /* counter */
            case 1: t += 15000 + (int64_t)(rnd() % 200) - 100; v = (double)(rnd() % 1000) / 7.0; break;
            case 2: t += (int64_t)(rnd() >> 1) % 100000000000LL; v = fromb(rnd()); break; /* anything */
            default: t += (int64_t)(rnd() % 3); v = (rnd() & 1) ? v : -v; break;
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

/* Decimal data takes the DEC encoding, round-trips bit-exactly, and is smaller than XOR;
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
        od_buf b = {0};
        assert_int_equal(od_chunk_encode(s, 480, &b), OD_OK);
        if (mode == 0 || mode == 2) { /* 2-decimal data: XOR is poor, DEC must win */
            assert_int_equal(b.data[0], OD_CHUNK_DEC);
            assert_true(b.len < 480 * 2);
        }
        fprintf(stderr, "decimal mode %d: encoding %d, %.2f bytes/sample\n", mode, b.data[0], b.len / 480.0);
        od_buf x = {0};
        /* a -0.0 forces XOR */
        double keep = s[100].v;
        s[100].v = -0.0;
        assert_int_equal(od_chunk_encode(s, 480, &x), OD_OK);
        assert_int_equal(x.data[0], OD_CHUNK_XOR);
        roundtrip(s, 480);
        s[100].v = keep;
        roundtrip(s, 480);
        /* bit flips in a DEC chunk are detected */
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
        cmocka_unit_test(test_chunk_decimal),
        cmocka_unit_test(test_labels_validate),      cmocka_unit_test(test_labels_hash_encoding),
        cmocka_unit_test(test_postings),             cmocka_unit_test(test_matchers),
    };
    return cmocka_run_group_tests_name("tsdb_codec", tests, NULL, NULL);
}
