/*
 * test_lsm_formats.c — the storage engine's own object formats: write batches, WAL objects
 * and manifests. Encode → decode round trips, then every single-byte flip and every
 * truncation must be reported as OD_CORRUPT (never decoded into wrong data).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lsm/manifest.h"
#include "lsm/wal.h"
#include "lsm/od_db.h"
#include "od_lsmtest.h"

static void build_wal(od_buf *obj, od_wal_hdr *h)
{
    od_batch *b1 = od_batch_new(), *b2 = od_batch_new();
    assert_non_null(b1);
    assert_non_null(b2);
    assert_int_equal(od_batch_put(b1, "alpha", 5, "one", 3), OD_OK);
    assert_int_equal(od_batch_delete(b1, "beta", 4), OD_OK);
    assert_int_equal(od_batch_put_ttl(b1, "gamma", 5, "", 0, 1234567890123ll), OD_OK);
    assert_int_equal(od_batch_count(b1), 3);
    assert_int_equal(od_batch_put(b2, "", 0, "empty-key", 9), OD_OK);
    assert_int_equal(od_wal_begin(obj), OD_OK);
    assert_int_equal(od_wal_append(obj, 7, b1->count, b1->buf.data, b1->buf.len), OD_OK);
    assert_int_equal(od_wal_append(obj, 9, b2->count, b2->buf.data, b2->buf.len), OD_OK);
    *h = (od_wal_hdr){42, 3, 0xfeedface12345678ull, 7, 9, 2, 0};
    assert_int_equal(od_wal_finish(obj, h), OD_OK);
    od_batch_free(b1);
    od_batch_free(b2);
}

static void test_wal_roundtrip(void **state)
{
    (void)state;
    od_buf obj = {0};
    od_wal_hdr h, d;
    build_wal(&obj, &h);
    od_err err;
    assert_int_equal(od_wal_decode(obj.data, obj.len, "wal/x", &d, &err), OD_OK);
    assert_int_equal(d.wal_id, 42);
    assert_int_equal(d.writer_epoch, 3);
    assert_true(d.writer_id == 0xfeedface12345678ull);
    assert_int_equal(d.first_seq, 7);
    assert_int_equal(d.last_seq, 9);
    assert_int_equal(d.nbatches, 2);
    od_wal_reader r;
    od_wal_reader_init(&r, obj.data, obj.len, &d);
    uint64_t seq;
    size_t nops, blen;
    const uint8_t *body;
    assert_true(od_wal_reader_next(&r, &seq, &nops, &body, &blen));
    assert_int_equal(seq, 7);
    assert_int_equal(nops, 3);
    od_rd br = od_rd_make(body, blen);
    od_op op;
    assert_int_equal(od_batch_next_op(&br, &op), 1);
    assert_int_equal(op.op, OD_OP_PUT);
    assert_memory_equal(op.key, "alpha", 5);
    assert_int_equal(op.vlen, 3);
    assert_memory_equal(op.val, "one", 3);
    assert_int_equal(od_batch_next_op(&br, &op), 1);
    assert_int_equal(op.op, OD_OP_DEL);
    assert_int_equal(op.klen, 4);
    assert_int_equal(od_batch_next_op(&br, &op), 1);
    assert_int_equal(op.op, OD_OP_PUT_TTL);
    assert_true(op.expire_ms == 1234567890123ll);
    assert_int_equal(op.vlen, 0);
    assert_int_equal(od_batch_next_op(&br, &op), 0);
    assert_true(od_wal_reader_next(&r, &seq, &nops, &body, &blen));
    assert_int_equal(seq, 9);
    br = od_rd_make(body, blen);
    assert_int_equal(od_batch_next_op(&br, &op), 1);
    assert_int_equal(op.klen, 0);
    assert_memory_equal(op.val, "empty-key", 9);
    assert_false(od_wal_reader_next(&r, &seq, &nops, &body, &blen));

    /* an empty fence object round-trips too */
    od_buf f = {0};
    od_wal_hdr fh = {5, 2, 99, 0, 0, 0, OD_WAL_FLAG_FENCE};
    assert_int_equal(od_wal_finish(&f, &fh), OD_OK);
    assert_int_equal(od_wal_decode(f.data, f.len, "wal/f", &d, &err), OD_OK);
    assert_int_equal(d.flags, OD_WAL_FLAG_FENCE);
    assert_int_equal(d.nbatches, 0);
    od_buf_free(&f);
    od_buf_free(&obj);
}

static void test_wal_corruption(void **state)
{
    (void)state;
    od_buf obj = {0};
    od_wal_hdr h, d;
    build_wal(&obj, &h);
    od_err err;
    for (size_t i = 0; i < obj.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            obj.data[i] ^= (uint8_t)(1u << bit);
            err.msg[0] = 0;
            int rc = od_wal_decode(obj.data, obj.len, "wal/00000000000000000042.wal", &d, &err);
            assert_int_equal(rc, OD_CORRUPT);
            assert_non_null(strstr(err.msg, "wal/00000000000000000042.wal"));
            obj.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (size_t n = 0; n < obj.len; n++)
        assert_int_equal(od_wal_decode(obj.data, n, "wal/t", &d, &err), OD_CORRUPT);
    /* a structurally wrong object with a valid CRC is still refused */
    od_buf bad = {0};
    od_wal_hdr bh = {1, 1, 1, 5, 5, 2, 0}; /* declares 2 batches, holds 1 */
    assert_int_equal(od_wal_begin(&bad), OD_OK);
    assert_int_equal(od_wal_append(&bad, 5, 0, NULL, 0), OD_OK);
    assert_int_equal(od_wal_finish(&bad, &bh), OD_OK);
    assert_int_equal(od_wal_decode(bad.data, bad.len, "wal/b", &d, &err), OD_CORRUPT);
    od_buf_free(&bad);
    assert_int_equal(od_wal_decode(obj.data, obj.len, "wal/ok", &d, &err), OD_OK);
    od_buf_free(&obj);
}

static void set_desc(od_sst_desc *d, const char *id, const char *lo, const char *hi, uint64_t seq)
{
    od_lsmtest_fill_desc(d, id, lo, hi, 1000 + seq, 10 * seq, seq, seq + 5);
}

static void build_manifest(od_manifest *m)
{
    memset(m, 0, sizeof *m);
    m->version = 17;
    m->writer_epoch = 4;
    m->compactor_epoch = 6;
    m->committer_id = 0x1122334455667788ull;
    m->commit_time_ms = 1700000000000ll;
    m->wal_replay_from = 33;
    m->last_l0_seq = 1234;
    m->next_ckpt_id = 3;
    m->next_run_id = 9;
    m->nl0 = 2;
    m->l0 = calloc(2, sizeof(od_sst_desc));
    assert_non_null(m->l0);
    set_desc(&m->l0[0], "0000aaaa", "a", "m", 100);
    set_desc(&m->l0[1], "0000bbbb", "", "zz", 50);
    m->nruns = 1;
    m->runs = calloc(1, sizeof(od_run));
    assert_non_null(m->runs);
    m->runs[0].id = 8;
    m->runs[0].n = 2;
    m->runs[0].ssts = calloc(2, sizeof(od_sst_desc));
    assert_non_null(m->runs[0].ssts);
    set_desc(&m->runs[0].ssts[0], "run8a", "a", "f", 1);
    set_desc(&m->runs[0].ssts[1], "run8b", "g", "q", 2);
    m->nckpt = 1;
    m->ckpts = calloc(1, sizeof(od_ckpt));
    assert_non_null(m->ckpts);
    m->ckpts[0] = (od_ckpt){2, 15, 1700000999000ll};
}

static void assert_desc_equal(const od_sst_desc *a, const od_sst_desc *b)
{
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->entries, b->entries);
    assert_int_equal(a->min_seq, b->min_seq);
    assert_int_equal(a->max_seq, b->max_seq);
    assert_int_equal(a->min_klen, b->min_klen);
    assert_int_equal(a->max_klen, b->max_klen);
    if (a->min_klen) assert_memory_equal(a->min_key, b->min_key, a->min_klen);
    if (a->max_klen) assert_memory_equal(a->max_key, b->max_key, a->max_klen);
}

static void test_manifest_roundtrip(void **state)
{
    (void)state;
    od_manifest m, d, c;
    build_manifest(&m);
    od_buf b = {0};
    assert_int_equal(od_manifest_encode(&m, &b), OD_OK);
    od_err err;
    assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/x", &d, &err), OD_OK);
    assert_int_equal(d.version, 17);
    assert_int_equal(d.writer_epoch, 4);
    assert_int_equal(d.compactor_epoch, 6);
    assert_true(d.committer_id == m.committer_id);
    assert_true(d.commit_time_ms == m.commit_time_ms);
    assert_int_equal(d.wal_replay_from, 33);
    assert_int_equal(d.last_l0_seq, 1234);
    assert_int_equal(d.next_ckpt_id, 3);
    assert_int_equal(d.next_run_id, 9);
    assert_int_equal(d.nl0, 2);
    assert_desc_equal(&d.l0[0], &m.l0[0]);
    assert_desc_equal(&d.l0[1], &m.l0[1]);
    assert_int_equal(d.nruns, 1);
    assert_int_equal(d.runs[0].id, 8);
    assert_int_equal(d.runs[0].n, 2);
    assert_desc_equal(&d.runs[0].ssts[1], &m.runs[0].ssts[1]);
    assert_int_equal(d.nckpt, 1);
    assert_int_equal(d.ckpts[0].manifest_version, 15);
    assert_true(d.ckpts[0].expire_ms == 1700000999000ll);
    /* a deep copy encodes to the same bytes */
    assert_int_equal(od_manifest_copy(&c, &d), OD_OK);
    od_buf b2 = {0};
    assert_int_equal(od_manifest_encode(&c, &b2), OD_OK);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    od_manifest_free(&c);
    od_manifest_free(&d);
    od_manifest_free(&m);
    od_buf_free(&b);
    od_buf_free(&b2);
}

static void test_manifest_corruption(void **state)
{
    (void)state;
    od_manifest m, d;
    build_manifest(&m);
    od_buf b = {0};
    assert_int_equal(od_manifest_encode(&m, &b), OD_OK);
    od_err err;
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x10;
        err.msg[0] = 0;
        assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/00000000000000000017.manifest", &d, &err),
                         OD_CORRUPT);
        assert_non_null(strstr(err.msg, "manifest/00000000000000000017.manifest"));
        b.data[i] ^= 0x10;
    }
    for (size_t n = 0; n < b.len; n++) assert_int_equal(od_manifest_decode(b.data, n, "m", &d, &err), OD_CORRUPT);
    assert_int_equal(od_manifest_decode(b.data, b.len, "m", &d, &err), OD_OK);
    od_manifest_free(&d);
    od_manifest_free(&m);
    od_buf_free(&b);
}

static void test_object_names(void **state)
{
    (void)state;
    char k[64];
    od_manifest_key(k, sizeof k, 12);
    assert_string_equal(k, "manifest/00000000000000000012.manifest");
    od_wal_key(k, sizeof k, 18446744073709551615ull);
    assert_string_equal(k, "wal/18446744073709551615.wal");
    /* zero padding keeps list order = numeric order */
    char a[64], b[64];
    od_wal_key(a, sizeof a, 9);
    od_wal_key(b, sizeof b, 10);
    assert_true(strcmp(a, b) < 0);
}

static void test_batch_limits(void **state)
{
    (void)state;
    od_batch *b = od_batch_new();
    assert_non_null(b);
    static char big[64 * 1024 + 1];
    assert_int_equal(od_batch_put(b, big, sizeof big, "v", 1), OD_BADREQ);
    assert_int_equal(od_batch_put_ttl(b, "k", 1, "v", 1, -5), OD_BADREQ);
    assert_int_equal(od_batch_count(b), 0);
    assert_int_equal(od_batch_put(b, "k", 1, "v", 1), OD_OK);
    assert_true(od_batch_bytes(b) > 0);
    od_batch_clear(b);
    assert_int_equal(od_batch_count(b), 0);
    assert_int_equal(od_batch_bytes(b), 0);
    od_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wal_roundtrip),       cmocka_unit_test(test_wal_corruption),
        cmocka_unit_test(test_manifest_roundtrip),  cmocka_unit_test(test_manifest_corruption),
        cmocka_unit_test(test_object_names),        cmocka_unit_test(test_batch_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
