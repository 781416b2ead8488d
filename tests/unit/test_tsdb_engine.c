/*
 * test_tsdb_engine.c — the TSDB engine on the storage engine (mem://): ingest, selection by
 * every matcher kind, out-of-order and duplicate samples, snapshot reads, label queries,
 * per-series errors, the dictionary's collision check, chunk corruption, retention,
 * compaction, stats, reopen, and a randomized comparison with an in-memory model.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "objstore/od_objstore.h"
#include "tsdb/tsdb_int.h"
#include "util/od_coding.h"
#include "od_testutil.h"

static int uri_counter;
static char uri[64];
static od_store *keep; /* keeps the mem:// store alive across reopen */

static od_db_options dbo;

static od_tsdb *open_t(od_tsdb_mode mode, int64_t retention)
{
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 5;
    o.db = &dbo;
    o.mode = mode;
    o.retention_ms = retention;
    o.bucket_ms = 3600000; /* 1 h */
    o.compact_interval_ms = 0; /* these tests count fragments; background compaction: test_tsdb_bgcompact.c */
    return od_test_tsdb_open(uri, &o);
}

static int setup(void **st)
{
    (void)st;
    snprintf(uri, sizeof uri, "mem://tsdb_engine_%d", ++uri_counter);
    od_err e;
    assert_int_equal(od_store_open(uri, &keep, &e), OD_OK);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    return od_test_memstore_drop(&keep);
}

static void mklabels(od_labels *ls, const char *metric, ...)
{
    va_list ap;
    va_start(ap, metric);
    od_labels_add(ls, "__name__", metric);
    const char *n;
    while ((n = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        od_labels_add(ls, n, v);
    }
    va_end(ap);
}

static void append1(od_tsdb *t, const od_labels *ls, const od_sample *s, size_t n)
{
    od_series_in in = {ls, s, n};
    od_err e;
    int rc = od_tsdb_append(t, &in, 1, 0, NULL, NULL, &e);
    if (rc) fprintf(stderr, "append: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
}

/* Select with a selector string; returns the number of series and fills the samples of the
 * first one into *first (if non-NULL). */
static size_t sel(od_tsdb *t, const char *selector, int64_t mint, int64_t maxt, od_samplevec *first, od_buf *names)
{
    od_matcher *ms;
    size_t nm;
    od_err e;
    assert_int_equal(od_selector_parse(selector, &ms, &nm, &e), OD_OK);
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_series_set *ss;
    int rc = od_tsdb_select(r, ms, nm, mint, maxt, &ss, &e);
    if (rc) fprintf(stderr, "select: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
    size_t n = 0;
    const od_labels *ls;
    for (;;) {
        assert_int_equal(od_series_set_next(ss, &ls, &e), OD_OK);
        if (!ls) break;
        if (names) {
            od_labels_format(ls, names);
            od_buf_append_u8(names, ';');
        }
        if (n == 0 && first) {
            od_sample_iter *it;
            assert_int_equal(od_series_set_samples(ss, &it, &e), OD_OK);
            while (od_sample_iter_valid(it)) {
                od_samplevec_push(first, od_sample_iter_at(it));
                assert_int_equal(od_sample_iter_next(it, &e), OD_OK);
            }
            od_sample_iter_free(it);
        }
        n++;
    }
    if (names) od_buf_cstr(names);
    od_series_set_free(ss);
    od_tsdb_read_close(r);
    od_matchers_free(ms, nm);
    return n;
}

static void test_basic(void **st)
{
    (void)st;
    od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
    od_labels a = {0}, b = {0}, c = {0};
    mklabels(&a, "http_requests_total", "job", "api", "code", "200", NULL);
    mklabels(&b, "http_requests_total", "job", "api", "code", "500", NULL);
    mklabels(&c, "up", "job", "db", NULL);
    od_sample s[100];
    for (int i = 0; i < 100; i++) s[i] = (od_sample){1000000 + i * 15000LL, i};
    append1(t, &a, s, 100);
    append1(t, &b, s, 50);
    append1(t, &c, s + 50, 50);
    od_samplevec v = {0};
    od_buf names = {0};
    assert_int_equal(sel(t, "http_requests_total", INT64_MIN, INT64_MAX, &v, &names), 2);
    assert_string_equal((char *)names.data,
                        "http_requests_total{code=\"200\",job=\"api\"};http_requests_total{code=\"500\",job=\"api\"};");
    assert_int_equal(v.n, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(v.v[i].t, s[i].t);
        assert_true(v.v[i].v == s[i].v);
    }
    v.n = 0;
    assert_int_equal(sel(t, "http_requests_total{code=~\"5..\"}", INT64_MIN, INT64_MAX, &v, NULL), 1);
    assert_int_equal(v.n, 50);
    assert_int_equal(sel(t, "http_requests_total{code!=\"500\"}", INT64_MIN, INT64_MAX, NULL, NULL), 1);
    assert_int_equal(sel(t, "{job=\"api\"}", INT64_MIN, INT64_MAX, NULL, NULL), 2);
    assert_int_equal(sel(t, "{job=~\"api|db\"}", INT64_MIN, INT64_MAX, NULL, NULL), 3);
    assert_int_equal(sel(t, "{job!~\"api\", __name__=~\".+\"}", INT64_MIN, INT64_MAX, NULL, NULL), 1);
    assert_int_equal(sel(t, "up{code=\"\"}", INT64_MIN, INT64_MAX, NULL, NULL), 1); /* absent label */
    assert_int_equal(sel(t, "{__name__=~\".+\", code=\"\"}", INT64_MIN, INT64_MAX, NULL, NULL), 1);
    assert_int_equal(sel(t, "nosuch", INT64_MIN, INT64_MAX, NULL, NULL), 0);
    /* time range: samples 10..19 only */
    v.n = 0;
    assert_int_equal(sel(t, "http_requests_total{code=\"200\"}", s[10].t, s[19].t, &v, NULL), 1);
    assert_int_equal(v.n, 10);
    assert_int_equal(v.v[0].t, s[10].t);
    /* a range with no data at all */
    assert_int_equal(sel(t, "up", 0, 999, NULL, NULL), 0);

    /* label names / values */
    od_tsdb_read *r;
    od_err e;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_strlist l;
    assert_int_equal(od_tsdb_label_names(r, NULL, 0, INT64_MIN, INT64_MAX, &l, &e), OD_OK);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[0], "__name__");
    assert_string_equal(l.v[1], "code");
    assert_string_equal(l.v[2], "job");
    od_strlist_free(&l);
    assert_int_equal(od_tsdb_label_values(r, "job", NULL, 0, INT64_MIN, INT64_MAX, &l, &e), OD_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0], "api");
    assert_string_equal(l.v[1], "db");
    od_strlist_free(&l);
    od_matcher m;
    assert_int_equal(od_matcher_init(&m, OD_MATCH_EQ, "__name__", "up", &e), OD_OK);
    assert_int_equal(od_tsdb_label_values(r, "job", &m, 1, INT64_MIN, INT64_MAX, &l, &e), OD_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0], "db");
    od_strlist_free(&l);
    assert_int_equal(od_tsdb_label_names(r, &m, 1, INT64_MIN, INT64_MAX, &l, &e), OD_OK);
    assert_int_equal(l.n, 2);
    od_strlist_free(&l);
    od_matcher_clear(&m);
    /* stats */
    od_tsdb_bucket_stats *bs;
    size_t nb;
    assert_int_equal(od_tsdb_stats(r, &bs, &nb, &e), OD_OK);
    assert_true(nb >= 1);
    uint64_t samples = 0;
    for (size_t i = 0; i < nb; i++) samples += bs[i].samples;
    assert_int_equal(samples, 200);
    assert_true(bs[0].index_bytes > 0 && bs[0].chunk_bytes > 0);
    free(bs);
    od_tsdb_read_close(r);

    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.series, 3);
    assert_int_equal(info.max_t, s[99].t);
    od_samplevec_free(&v);
    od_buf_free(&names);
    od_labels_free(&a);
    od_labels_free(&b);
    od_labels_free(&c);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

static void test_out_of_order_and_compaction(void **st)
{
    (void)st;
    od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
    od_labels a = {0};
    mklabels(&a, "m", "k", "v", NULL);
    od_sample s1[] = {{5000, 5}, {1000, 1}, {3000, 3}, {3000, 33}};
    od_sample s2[] = {{2000, 2}, {3000, 333}, {7200000, 72}};
    od_sample s3[] = {{1000, fmod(1, 0) /* nan */}};
    memcpy(&s3[0].v, &(uint64_t){OD_STALE_NAN_BITS}, 8);
    append1(t, &a, s1, 4);
    append1(t, &a, s2, 3);
    append1(t, &a, s3, 1);
    for (int pass = 0; pass < 2; pass++) {
        od_samplevec v = {0};
        assert_int_equal(sel(t, "m", INT64_MIN, INT64_MAX, &v, NULL), 1);
        assert_int_equal(v.n, 5);
        int64_t want_t[] = {1000, 2000, 3000, 5000, 7200000};
        for (int i = 0; i < 5; i++) assert_int_equal(v.v[i].t, want_t[i]);
        uint64_t bits;
        memcpy(&bits, &v.v[0].v, 8);
        assert_int_equal(bits, OD_STALE_NAN_BITS); /* last write, bits kept */
        assert_true(v.v[2].v == 333);
        assert_true(v.v[4].v == 72);
        od_samplevec_free(&v);
        od_tsdb_read *r;
        od_err e;
        assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
        od_tsdb_bucket_stats *bs;
        size_t nb;
        assert_int_equal(od_tsdb_stats(r, &bs, &nb, &e), OD_OK);
        assert_int_equal(nb, 2);
        /* before compaction: 3 fragments in the first bucket; after: one long chunk */
        assert_int_equal(bs[0].chunks, pass == 0 ? 3 : 1);
        assert_int_equal(bs[0].series, 1);
        free(bs);
        od_tsdb_read_close(r);
        if (pass == 0) {
            int rc = od_tsdb_compact(t, &e);
            if (rc) fprintf(stderr, "compact: %s\n", e.msg);
            assert_int_equal(rc, OD_OK);
        }
    }
    /* the sample iterator's seek */
    od_matcher m;
    od_err e;
    od_matcher_init(&m, OD_MATCH_EQ, "__name__", "m", &e);
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_series_set *ss;
    assert_int_equal(od_tsdb_select(r, &m, 1, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    const od_labels *ls;
    assert_int_equal(od_series_set_next(ss, &ls, &e), OD_OK);
    assert_non_null(ls);
    od_sample_iter *it;
    assert_int_equal(od_series_set_samples(ss, &it, &e), OD_OK);
    assert_int_equal(od_sample_iter_seek(it, 2500, &e), OD_OK);
    assert_int_equal(od_sample_iter_at(it).t, 3000);
    assert_int_equal(od_sample_iter_seek(it, 6000, &e), OD_OK);
    assert_int_equal(od_sample_iter_at(it).t, 7200000);
    assert_int_equal(od_sample_iter_seek(it, 7200001, &e), OD_OK);
    assert_false(od_sample_iter_valid(it));
    od_sample_iter_free(it);
    od_series_set_free(ss);
    od_tsdb_read_close(r);
    od_matcher_clear(&m);
    od_labels_free(&a);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

static void test_errors_and_snapshot(void **st)
{
    (void)st;
    od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
    od_labels good = {0}, bad = {0}, bad2 = {0};
    mklabels(&good, "ok_metric", "a", "1", NULL);
    mklabels(&bad, "bad_metric", "bad-name", "1", NULL);
    od_labels_add(&bad2, "a", "1"); /* no __name__ */
    od_sample s[] = {{1000, 1}, {2000, 2}};
    od_series_in in[3] = {{&bad, s, 2}, {&good, s, 2}, {&bad2, s, 2}};
    od_err errs[3], e;
    od_append_result res;
    int rc = od_tsdb_append(t, in, 3, 1, errs, &res, &e);
    assert_int_equal(rc, OD_BADREQ);
    assert_non_null(strstr(e.msg, "2 of 3 series rejected"));
    assert_non_null(strstr(e.msg, "invalid label name \"bad-name\""));
    assert_int_equal(errs[0].code, OD_BADREQ);
    assert_int_equal(errs[1].code, OD_OK);
    assert_non_null(strstr(errs[2].msg, "no metric name"));
    assert_int_equal(res.series_ok, 1);
    assert_int_equal(res.series_rejected, 2);
    assert_int_equal(res.samples_ok, 2);
    assert_int_equal(sel(t, "ok_metric", INT64_MIN, INT64_MAX, NULL, NULL), 1);
    assert_int_equal(sel(t, "bad_metric", INT64_MIN, INT64_MAX, NULL, NULL), 0);

    /* a read view does not see later appends */
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_labels more = {0};
    mklabels(&more, "ok_metric", "a", "2", NULL);
    append1(t, &more, s, 2);
    od_series_set *ss;
    od_matcher m;
    od_matcher_init(&m, OD_MATCH_EQ, "__name__", "ok_metric", &e);
    assert_int_equal(od_tsdb_select(r, &m, 1, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    assert_int_equal(od_series_set_count(ss), 1);
    od_series_set_free(ss);
    od_tsdb_read_close(r);
    assert_int_equal(sel(t, "ok_metric", INT64_MIN, INT64_MAX, NULL, NULL), 2);
    od_matcher_clear(&m);
    /* the same series twice in one batch: merged, the later entry wins on equal timestamps */
    od_sample sa[] = {{5000, 1}, {6000, 2}}, sb[] = {{6000, 20}, {7000, 30}};
    od_series_in dup[2] = {{&more, sa, 2}, {&more, sb, 2}};
    assert_int_equal(od_tsdb_append(t, dup, 2, 0, NULL, NULL, &e), OD_OK);
    od_samplevec v = {0};
    assert_int_equal(sel(t, "ok_metric{a=\"2\"}", INT64_MIN, INT64_MAX, &v, NULL), 1);
    assert_int_equal(v.n, 5);
    assert_int_equal(v.v[3].t, 6000);
    assert_true(v.v[3].v == 20);
    assert_true(v.v[4].v == 30);
    od_samplevec_free(&v);
    od_labels_free(&more);
    od_labels_free(&good);
    od_labels_free(&bad);
    od_labels_free(&bad2);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

static void test_collision_and_corruption(void **st)
{
    (void)st;
    od_err e;
    od_labels a = {0}, other = {0};
    mklabels(&a, "victim", "x", "1", NULL);
    mklabels(&other, "impostor", "y", "2", NULL);
    od_buf ea = {0}, eo = {0};
    od_labels_sort(&a, &e);
    od_labels_sort(&other, &e);
    od_labels_encode(&a, &ea);
    od_labels_encode(&other, &eo);
    uint64_t fp = od_tsdb_hash_bytes(ea.data, ea.len);
    /* Plant a dictionary entry for another label set under victim's fingerprint (what a
     * hash collision looks like in the store), as series 999. */
    {
        od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
        od_batch *b = od_batch_new();
        uint8_t hk[17];
        hk[0] = OD_K_HASH;
        od_be64(hk + 1, fp ? fp : 1);
        od_be64(hk + 9, 999);
        od_batch_put(b, hk, 17, eo.data, eo.len);
        assert_int_equal(od_db_write(od_tsdb_db(t), b, 1, NULL, &e), OD_OK);
        od_batch_free(b);
        assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    }
    od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
    od_sample s[] = {{1000, 1}};
    append1(t, &a, s, 1);
    od_buf names = {0};
    assert_int_equal(sel(t, "victim", INT64_MIN, INT64_MAX, NULL, &names), 1);
    assert_string_equal((char *)names.data, "victim{x=\"1\"};");
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_series_set *ss;
    od_matcher m;
    od_matcher_init(&m, OD_MATCH_EQ, "__name__", "victim", &e);
    assert_int_equal(od_tsdb_select(r, &m, 1, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    const od_labels *ls;
    od_series_set_next(ss, &ls, &e);
    uint64_t sid = od_series_set_id(ss);
    assert_int_not_equal(sid, 999);
    od_series_set_free(ss);
    od_tsdb_read_close(r);

    /* corrupt the series' chunk: the read must fail with OD_CORRUPT, not return data */
    {
        od_batch *b = od_batch_new();
        uint8_t ck[25];
        ck[0] = OD_K_CHUNK;
        od_be64(ck + 1, od_bucket_key(0));
        od_be64(ck + 9, sid);
        od_be64(ck + 17, 1000000);
        od_buf chunk = {0};
        od_sample bogus[] = {{1500, 7}, {1600, 8}};
        od_chunk_encode(bogus, 2, &chunk);
        chunk.data[chunk.len - 6] ^= 0x10;
        od_batch_put(b, ck, 25, chunk.data, chunk.len);
        assert_int_equal(od_db_write(od_tsdb_db(t), b, 1, NULL, &e), OD_OK);
        od_batch_free(b);
        od_buf_free(&chunk);
    }
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    assert_int_equal(od_tsdb_select(r, &m, 1, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    od_series_set_next(ss, &ls, &e);
    od_sample_iter *it = NULL;
    assert_int_equal(od_series_set_samples(ss, &it, &e), OD_CORRUPT);
    assert_non_null(strstr(e.msg, "checksum"));
    assert_null(it);
    od_series_set_free(ss);
    od_tsdb_read_close(r);
    od_matcher_clear(&m);
    od_buf_free(&names);
    od_buf_free(&ea);
    od_buf_free(&eo);
    od_labels_free(&a);
    od_labels_free(&other);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

static void test_retention_and_reopen(void **st)
{
    (void)st;
    od_err e;
    const int64_t H = 3600000;
    od_tsdb *t = open_t(OD_TSDB_WRITER, 0);
    od_labels a = {0};
    mklabels(&a, "r", NULL);
    od_sample s[10];
    for (int i = 0; i < 10; i++) s[i] = (od_sample){i * H + 1, i}; /* 10 hours, one per bucket */
    append1(t, &a, s, 10);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    /* reopen with a retention of 2 h: old data disappears from reads at once */
    t = open_t(OD_TSDB_WRITER, 2 * H);
    /* retention 2 h relative to the newest (9h+1): samples with t > 7h+1 remain */
    od_samplevec v = {0};
    assert_int_equal(sel(t, "r", INT64_MIN, INT64_MAX, &v, NULL), 1);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.v[0].t, 8 * H + 1);
    /* an append older than the window is rejected, per series */
    od_sample old[] = {{H, 1}, {9 * H + 5, 2}};
    od_series_in in = {&a, old, 2};
    od_err errs[1];
    assert_int_equal(od_tsdb_append(t, &in, 1, 0, errs, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(errs[0].msg, "older than the retention window"));
    assert_int_equal(od_tsdb_compact(t, &e), OD_OK);
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_tsdb_bucket_stats *bs;
    size_t nb;
    assert_int_equal(od_tsdb_stats(r, &bs, &nb, &e), OD_OK);
    /* buckets 0..6 ended before the window and are deleted; bucket 7 straddles it */
    assert_true(nb >= 2 && nb <= 3);
    assert_true(bs[0].mint >= 7 * H);
    uint64_t total = 0;
    for (size_t i = 0; i < nb; i++) total += bs[i].samples;
    assert_int_equal(total, 3); /* 8h+1, 9h+1, 9h+5 */
    free(bs);
    od_tsdb_read_close(r);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);

    /* reopen read-only: same data, same retention */
    t = open_t(OD_TSDB_READ_ONLY, -1);
    v.n = 0;
    assert_int_equal(sel(t, "r", INT64_MIN, INT64_MAX, &v, NULL), 1);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.v[2].t, 9 * H + 5);
    assert_int_equal(od_tsdb_append(t, &in, 1, 0, NULL, NULL, &e), OD_BADREQ);
    assert_non_null(strstr(e.msg, "read-only"));
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    /* lazy writer: reads without writing, becomes the writer on append */
    t = open_t(OD_TSDB_LAZY_WRITER, -1);
    assert_false(od_tsdb_is_writer(t));
    od_sample s2[] = {{10 * H, 10}};
    append1(t, &a, s2, 1);
    assert_true(od_tsdb_is_writer(t));
    v.n = 0;
    assert_int_equal(sel(t, "r", INT64_MIN, INT64_MAX, &v, NULL), 1);
    assert_int_equal(v.v[v.n - 1].t, 10 * H);
    od_tsdb_info info;
    od_tsdb_get_info(t, &info);
    assert_int_equal(info.series, 1); /* the series was found again, not re-created */
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    od_samplevec_free(&v);
    od_labels_free(&a);
}

/* Random appends (out of order, duplicates, many batches) against a model. */
static void test_random_model(void **st)
{
    (void)st;
    od_err e;
    od_tsdb *t = open_t(OD_TSDB_WRITER, -1);
    enum { NS = 20, MAXT = 4000 };
    static double model[NS][MAXT];
    static int has[NS][MAXT];
    memset(has, 0, sizeof has);
    od_labels ls[NS];
    memset(ls, 0, sizeof ls);
    for (int i = 0; i < NS; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        mklabels(&ls[i], i % 2 ? "odd" : "even", "i", v, "grp", i % 3 ? "x" : "y", NULL);
    }
    uint64_t x = 88172645463325252ULL;
    int batches = (int)(60 * od_test_scale());
    if (batches < 10) batches = 10;
    od_sample buf[NS][50];
    od_series_in in[NS];
    for (int bt = 0; bt < batches; bt++) {
        for (int i = 0; i < NS; i++) {
            int n = 0;
            for (int k = 0; k < 50; k++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                int slot = (int)(x % MAXT);
                buf[i][n] = (od_sample){(int64_t)slot * 10000 - 20000000, (double)(x >> 11)};
                n++;
            }
            in[i] = (od_series_in){&ls[i], buf[i], (size_t)n};
            for (int k = 0; k < n; k++) {
                int slot = (int)((buf[i][k].t + 20000000) / 10000);
                model[i][slot] = buf[i][k].v;
                has[i][slot] = 1;
            }
        }
        assert_int_equal(od_tsdb_append(t, in, NS, 0, NULL, NULL, &e), OD_OK);
        if (bt == batches / 2) assert_int_equal(od_tsdb_compact(t, &e), OD_OK);
    }
    for (int i = 0; i < NS; i++) {
        char selector[64];
        snprintf(selector, sizeof selector, "%s{i=\"%d\"}", i % 2 ? "odd" : "even", i);
        od_samplevec v = {0};
        assert_int_equal(sel(t, selector, INT64_MIN, INT64_MAX, &v, NULL), 1);
        size_t k = 0;
        for (int slot = 0; slot < MAXT; slot++) {
            if (!has[i][slot]) continue;
            assert_true(k < v.n);
            assert_int_equal(v.v[k].t, (int64_t)slot * 10000 - 20000000);
            assert_true(v.v[k].v == model[i][slot]);
            k++;
        }
        assert_int_equal(k, v.n);
        od_samplevec_free(&v);
    }
    assert_int_equal(sel(t, "{grp=\"y\", __name__=~\"even|odd\"}", INT64_MIN, INT64_MAX, NULL, NULL), 7);
    assert_int_equal(sel(t, "even{grp!=\"y\"}", INT64_MIN, INT64_MAX, NULL, NULL), 6);
    for (int i = 0; i < NS; i++) od_labels_free(&ls[i]);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

/* A second writer process gets the engine's lease refusal (OD_BUSY), not silent fencing;
 * lazy handles read without disturbing the writer. */
static void test_second_writer_process(void **st)
{
    (void)st;
    char dir[] = "/tmp/od_tsdb_2w_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char furi[128];
    snprintf(furi, sizeof furi, "file://%s", dir);
    int to_child[2], to_parent[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(to_parent), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        od_tsdb_options o;
        od_tsdb_options_init(&o);
        od_tsdb *t = NULL;
        od_err e;
        char c = od_tsdb_open(furi, &o, &t, &e) == OD_OK ? 'k' : 'f';
        if (c == 'k') {
            od_labels ls = {0};
            od_labels_add(&ls, "__name__", "child_metric");
            od_sample s = {1000, 1};
            od_series_in in = {&ls, &s, 1};
            if (od_tsdb_append(t, &in, 1, 1, NULL, NULL, &e)) c = 'a';
            od_labels_free(&ls);
        }
        if (write(to_parent[1], &c, 1) != 1) _exit(3);
        if (read(to_child[0], &c, 1) != 1) _exit(4); /* hold the lease until told */
        if (t) od_tsdb_close(t, &e);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(c, 'k');
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    o.mode = OD_TSDB_LAZY_WRITER;
    od_tsdb *t = NULL;
    od_err e;
    assert_int_equal(od_tsdb_open(furi, &o, &t, &e), OD_OK);
    /* reading works and sees the child's data */
    od_tsdb_read *r;
    assert_int_equal(od_tsdb_read_open(t, &r, &e), OD_OK);
    od_series_set *ss;
    assert_int_equal(od_tsdb_select(r, NULL, 0, INT64_MIN, INT64_MAX, &ss, &e), OD_OK);
    assert_int_equal(od_series_set_count(ss), 1);
    od_series_set_free(ss);
    od_tsdb_read_close(r);
    /* writing is refused with the engine's lease message */
    od_labels ls = {0};
    od_labels_add(&ls, "__name__", "parent_metric");
    od_sample s = {2000, 2};
    od_series_in in = {&ls, &s, 1};
    int rc = od_tsdb_append(t, &in, 1, 1, NULL, NULL, &e);
    assert_int_equal(rc, OD_BUSY);
    assert_non_null(strstr(e.msg, "cannot open"));
    assert_false(od_tsdb_is_writer(t));
    od_labels_free(&ls);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
    c = 'x';
    assert_int_equal(write(to_child[1], &c, 1), 1);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Fault injection: appends and reads on a store that fails requests. Every acknowledged
 * (durable) append must be readable afterwards with its exact values; reads under faults
 * either fail or return exactly the truth — never wrong samples. */
static void test_faulty_store(void **st)
{
    (void)st;
    char furi[160];
    int seed = 7;
    snprintf(furi, sizeof furi, "faulty+%s?seed=%d&error_rate=0.6&ambiguous_rate=0.05", uri, seed);
    od_tsdb_options o;
    od_tsdb_options_init(&o);
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 2;
    o.db = &dbo;
    od_tsdb *t = NULL;
    od_err e;
    /* The open itself may fail under 60 % faults (a durable write exhausting its retries is
     * a clean error); the test is about appends and reads, so take the next seed then (the
     * store keeps what the failed open left behind: the next open recovers it). */
    int rc = od_tsdb_open(furi, &o, &t, &e);
    for (int tries = 0; rc != OD_OK && tries < 20; tries++) {
        if (getenv("OD_TEST_VERBOSE")) fprintf(stderr, "faulty open (seed %d): %s\n", seed, e.msg);
        /* a fresh store: the failed opener's lease would block the next one for its term */
        od_store_close(keep);
        snprintf(uri, sizeof uri, "mem://tsdb_engine_%d_retry%d", uri_counter, tries);
        assert_int_equal(od_store_open(uri, &keep, &e), OD_OK);
        snprintf(furi, sizeof furi, "faulty+%s?seed=%d&error_rate=0.6&ambiguous_rate=0.05", uri, ++seed);
        rc = od_tsdb_open(furi, &o, &t, &e);
    }
    if (rc) fprintf(stderr, "faulty open: %s\n", e.msg);
    assert_int_equal(rc, OD_OK);
    /* retries back off with real sleeps: keep this short (batches, and a wall-clock budget) */
    int batches = (int)(12 * od_test_scale());
    if (batches < 6) batches = 6;
    time_t t_start = time(NULL);
    int *acked = calloc((size_t)batches, sizeof *acked);
    assert_non_null(acked);
    od_labels ls = {0};
    mklabels(&ls, "faulty", "k", "v", NULL);
    int nack = 0, nfail = 0;
    for (int bt = 0; rc == OD_OK && t && bt < batches && (nack == 0 || time(NULL) - t_start < 10); bt++) {
        od_sample s[10];
        for (int k = 0; k < 10; k++) s[k] = (od_sample){(int64_t)bt * 10000 + k * 1000, bt * 100 + k};
        od_series_in in = {&ls, s, 10};
        if (od_tsdb_append(t, &in, 1, 1, NULL, NULL, &e) == OD_OK) {
            acked[bt] = 1;
            nack++;
        } else {
            /* the engine stops after a failed WAL write: reopen (recovery) and go on */
            nfail++;
            od_tsdb_close(t, &e);
            t = NULL;
            for (int tries = 0; tries < 50 && !t; tries++) { /* a new seed: new faults */
                snprintf(furi, sizeof furi, "faulty+%s?seed=%d&error_rate=0.6&ambiguous_rate=0.05", uri, ++seed);
                if (od_tsdb_open(furi, &o, &t, &e) != OD_OK) t = NULL;
            }
            if (!t) break;
            continue;
        }
        /* a read under faults: an error, or exactly what is stored */
        od_tsdb_read *r;
        if (od_tsdb_read_open(t, &r, &e) == OD_OK) {
            od_series_set *ss;
            if (od_tsdb_select(r, NULL, 0, INT64_MIN, INT64_MAX, &ss, &e) == OD_OK) {
                const od_labels *l;
                if (od_series_set_next(ss, &l, &e) == OD_OK && l) {
                    od_sample_iter *it;
                    if (od_series_set_samples(ss, &it, &e) == OD_OK) {
                        while (od_sample_iter_valid(it)) {
                            od_sample x = od_sample_iter_at(it);
                            assert_true(x.v == (double)((x.t / 10000) * 100 + (x.t % 10000) / 1000));
                            if (od_sample_iter_next(it, &e)) break;
                        }
                        od_sample_iter_free(it);
                    }
                }
                od_series_set_free(ss);
            }
            od_tsdb_read_close(r);
        }
    }
    if (t) od_tsdb_close(t, &e);
    fprintf(stderr, "faulty store: %d appends acknowledged, %d failed\n", nack, nfail);
    assert_true(nack > 0); /* the fault rate lets work through: the checks below are not vacuous */
    /* reopen without faults: every acknowledged batch is there, values exact */
    t = open_t(OD_TSDB_READ_ONLY, -1);
    od_samplevec v = {0};
    size_t nser = sel(t, "faulty", INT64_MIN, INT64_MAX, &v, NULL);
    assert_true(nser <= 1);
    int *seen = calloc((size_t)batches, sizeof *seen);
    assert_non_null(seen);
    for (size_t i = 0; i < v.n; i++) {
        int bt = (int)(v.v[i].t / 10000);
        assert_true(bt >= 0 && bt < batches);
        assert_true(v.v[i].v == (double)(bt * 100 + (v.v[i].t % 10000) / 1000));
        seen[bt]++;
    }
    for (int bt = 0; bt < batches; bt++)
        if (acked[bt]) assert_int_equal(seen[bt], 10);
        else assert_true(seen[bt] == 0 || seen[bt] == 10); /* a batch is atomic */
    free(seen);
    free(acked);
    od_samplevec_free(&v);
    od_labels_free(&ls);
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

/* Batch access (od_sample_iter_block/advance, used by the vtab) returns exactly what
 * od_sample_iter_next does, for random advance sizes, across buckets and fragments, and with
 * ranges that clip inside a bucket or cover it whole. */
static void test_block_access(void **st)
{
    (void)st;
    od_tsdb *t = open_t(OD_TSDB_WRITER, 0);
    od_labels ls = {0};
    mklabels(&ls, "blk", "a", "1", NULL);
    /* 3 buckets of 1 h; two out-of-order fragments overlap the first and a duplicate wins */
    od_sample s[400];
    for (int i = 0; i < 400; i++) s[i] = (od_sample){(int64_t)i * 27000, (double)i};
    append1(t, &ls, s + 200, 200);
    append1(t, &ls, s, 200);
    od_sample dup = {27000 * 10, -1.0};
    append1(t, &ls, &dup, 1);
    int64_t ranges[][2] = {{INT64_MIN, INT64_MAX}, {27000 * 5, 27000 * 390}, {3600000, 7199999}, {100, 200}};
    uint64_t rng = 12345;
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        od_samplevec a = {0}, b = {0};
        assert_int_equal(sel(t, "blk", ranges[r][0], ranges[r][1], &a, NULL), 1);
        od_matcher *ms;
        size_t nm;
        od_err e;
        assert_int_equal(od_selector_parse("blk", &ms, &nm, &e), OD_OK);
        od_tsdb_read *rd;
        assert_int_equal(od_tsdb_read_open(t, &rd, &e), OD_OK);
        od_series_set *ss;
        assert_int_equal(od_tsdb_select(rd, ms, nm, ranges[r][0], ranges[r][1], &ss, &e), OD_OK);
        const od_labels *l;
        assert_int_equal(od_series_set_next(ss, &l, &e), OD_OK);
        if (l) {
            od_sample_iter *it;
            assert_int_equal(od_series_set_samples(ss, &it, &e), OD_OK);
            for (;;) {
                const od_sample *v;
                size_t n;
                od_sample_iter_block(it, &v, &n);
                if (n == 0) break;
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t k = 1 + (size_t)(rng >> 33) % n;
                for (size_t i = 0; i < k; i++) od_samplevec_push(&b, v[i]);
                assert_int_equal(od_sample_iter_advance(it, k, &e), OD_OK);
            }
            od_sample_iter_free(it);
        }
        od_series_set_free(ss);
        od_tsdb_read_close(rd);
        od_matchers_free(ms, nm);
        assert_int_equal(a.n, b.n);
        for (size_t i = 0; i < a.n; i++) {
            assert_int_equal(a.v[i].t, b.v[i].t);
            assert_true(a.v[i].v == b.v[i].v);
            assert_true(a.v[i].t >= ranges[r][0] && a.v[i].t <= ranges[r][1]);
        }
        if (r == 0) {
            assert_int_equal(a.n, 400);
            assert_true(a.v[10].v == -1.0);
        }
        if (r == 1) assert_int_equal(a.n, 386);
        if (r == 3) assert_int_equal(a.n, 0); /* listed (bucket granularity), no sample in range */
        if (r == 2) assert_int_equal(a.n, (7199999 / 27000) - (3600000 + 26999) / 27000 + 1);
        od_samplevec_free(&a);
        od_samplevec_free(&b);
    }
    od_labels_free(&ls);
    od_err e;
    assert_int_equal(od_tsdb_close(t, &e), OD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_and_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collision_and_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_model, setup, teardown),
        cmocka_unit_test(test_second_writer_process),
        cmocka_unit_test_setup_teardown(test_faulty_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_access, setup, teardown),
    };
    return cmocka_run_group_tests_name("tsdb_engine", tests, NULL, NULL);
}
