/*
 * test_lsm_resume.c — the compaction job recorded in the manifest (format version 2) and the
 * resumption of a compaction after its process died.
 *
 *   job_format: a manifest with a job round-trips byte for byte (and through a deep copy);
 *     flipping any byte or truncating is OD_CORRUPT naming the object; a version-1 manifest
 *     (no job section) still decodes; a job claiming two entries is corrupt.
 *   crash_resume: a child process (forked before any thread exists here) writes four L0
 *     collections with overwrites and deletes to a file:// store behind 3 ms of latency per
 *     request, then compacts them into outputs cut at 64 KiB; its compaction filter stops the
 *     merge for good after 4500 entries (≥ 4 outputs), so the job cannot finish first. The
 *     parent watches the manifest and SIGKILLs the child once the job has recorded at least
 *     two outputs. A new writer (takeover; its open bumps the compactor epoch) resumes the job: the
 *     output run starts with exactly the recorded outputs (same ids: reused, not rewritten),
 *     fewer collections were written than the run holds, the job is gone from the manifest,
 *     and a scan of the whole store equals the model.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_lsmtest.h"
#include "od_coding.h"
#include "od_crc32c.h"

/* ---------------- job_format ---------------- */

static void fill_desc(od_sst_desc *d, const char *id, const char *lo, const char *hi, uint64_t seq)
{
    od_lsmtest_fill_desc(d, id, lo, hi, 70000 + seq, 1000 + seq, seq, seq + 10);
}

static void build(od_manifest *m, int with_job)
{
    memset(m, 0, sizeof *m);
    m->version = 42;
    m->writer_epoch = 3;
    m->compactor_epoch = 5;
    m->committer_id = 0x1122334455667788ull;
    m->commit_time_ms = 1700000000123ll;
    m->wal_replay_from = 9;
    m->last_l0_seq = 77;
    m->next_ckpt_id = 1;
    m->next_run_id = 4;
    m->nl0 = 1;
    m->l0 = calloc(1, sizeof *m->l0);
    assert_non_null(m->l0);
    fill_desc(&m->l0[0], "l0a", "a", "m", 60);
    if (!with_job) return;
    m->has_job = 1;
    od_cjob *j = &m->job;
    j->id = 0xfeedfacecafebeefull;
    j->compactor_epoch = 5;
    j->writer_epoch = 3;
    j->owner_id = 0x0102030405060708ull;
    j->started_ms = 1700000000000ll;
    j->flags = OD_CJOB_BOTTOM;
    j->nl0_in = 1;
    j->l0_in = calloc(1, sizeof *j->l0_in);
    assert_non_null(j->l0_in);
    snprintf(j->l0_in[0], OD_SST_ID_MAX, "l0a");
    j->nruns_in = 2;
    j->runs_in = calloc(2, sizeof *j->runs_in);
    assert_non_null(j->runs_in);
    j->runs_in[0] = 3;
    j->runs_in[1] = 1;
    j->nout = 2;
    j->out = calloc(2, sizeof *j->out);
    assert_non_null(j->out);
    fill_desc(&j->out[0], "out-1", "a", "f", 1);
    fill_desc(&j->out[1], "out-2", "g", "k", 2);
    snprintf(j->pending, sizeof j->pending, "out-3");
}

static void test_job_format(void **state)
{
    (void)state;
    od_manifest m, d, c;
    build(&m, 1);
    od_buf b = {0}, b2 = {0};
    od_err err;
    assert_int_equal(od_manifest_encode(&m, &b), OD_OK);
    assert_int_equal(b.data[4], 2);
    assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/x", &d, &err), OD_OK);
    assert_true(d.has_job);
    assert_true(d.job.id == m.job.id);
    assert_int_equal(d.job.compactor_epoch, 5);
    assert_int_equal(d.job.writer_epoch, 3);
    assert_true(d.job.owner_id == m.job.owner_id);
    assert_true(d.job.started_ms == m.job.started_ms);
    assert_int_equal(d.job.flags, OD_CJOB_BOTTOM);
    assert_int_equal(d.job.nl0_in, 1);
    assert_string_equal(d.job.l0_in[0], "l0a");
    assert_int_equal(d.job.nruns_in, 2);
    assert_int_equal(d.job.runs_in[0], 3);
    assert_int_equal(d.job.runs_in[1], 1);
    assert_int_equal(d.job.nout, 2);
    assert_string_equal(d.job.out[1].id, "out-2");
    assert_int_equal(d.job.out[1].max_klen, 1);
    assert_memory_equal(d.job.out[1].max_key, "k", 1);
    assert_string_equal(d.job.pending, "out-3");
    assert_int_equal(od_manifest_copy(&c, &d), OD_OK);
    assert_int_equal(od_manifest_encode(&c, &b2), OD_OK);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    od_manifest_free(&c);
    od_manifest_free(&d);
    /* corruption anywhere, truncation anywhere */
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x04;
        err.msg[0] = 0;
        assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/00000000000000000042.manifest", &d, &err),
                         OD_CORRUPT);
        assert_non_null(strstr(err.msg, "manifest/00000000000000000042.manifest"));
        b.data[i] ^= 0x04;
    }
    for (size_t n = 0; n < b.len; n++) assert_int_equal(od_manifest_decode(b.data, n, "m", &d, &err), OD_CORRUPT);

    /* version 1 (written before the job existed): same layout without the job section */
    od_manifest v1;
    build(&v1, 0);
    assert_int_equal(od_manifest_encode(&v1, &b), OD_OK);
    assert_int_equal(b.data[b.len - 5], 0); /* njobs = 0, just before the CRC */
    b.data[4] = 1;
    b.len -= 5;
    assert_int_equal(od_buf_put_u32(&b, od_crc32c_mask(od_crc32c(b.data, b.len))), OD_OK);
    assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/v1", &d, &err), OD_OK);
    assert_false(d.has_job);
    assert_int_equal(d.nl0, 1);
    assert_string_equal(d.l0[0].id, "l0a");
    assert_int_equal(d.last_l0_seq, 77);
    od_manifest_free(&d);
    /* a version-3 object is refused clearly */
    b.data[4] = 3;
    b.len -= 4;
    assert_int_equal(od_buf_put_u32(&b, od_crc32c_mask(od_crc32c(b.data, b.len))), OD_OK);
    assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/v3", &d, &err), OD_CORRUPT);
    assert_non_null(strstr(err.msg, "unknown format version"));
    /* njobs must be 0 or 1 */
    assert_int_equal(od_manifest_encode(&v1, &b), OD_OK);
    b.data[b.len - 5] = 2;
    b.len -= 4;
    assert_int_equal(od_buf_put_u32(&b, od_crc32c_mask(od_crc32c(b.data, b.len))), OD_OK);
    assert_int_equal(od_manifest_decode(b.data, b.len, "manifest/two-jobs", &d, &err), OD_CORRUPT);
    od_manifest_free(&v1);
    od_manifest_free(&m);
    od_buf_free(&b);
    od_buf_free(&b2);
}

/* ---------------- crash_resume ---------------- */

#define ROUNDS 4
#define VLEN 120

/* Round r writes keys i with i % (r + 1) == 0 (values depend on r), and round 3 also deletes
 * every key with i % 7 == 3. Returns 1 and the value for a live key. */
static int model(int nkeys, int i, char *v)
{
    (void)nkeys;
    int last = -1;
    for (int r = 0; r < ROUNDS; r++)
        if (i % (r + 1) == 0) last = r;
    if (i % 7 == 3) return 0;
    uint64_t x = (uint64_t)(i * 31 + last) * 0x9e3779b97f4a7c15ull + 1;
    for (int k = 0; k < VLEN; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[k] = (char)('a' + (x % 26));
    }
    return 1;
}

static void round_val(int r, int i, char *v)
{
    uint64_t x = (uint64_t)(i * 31 + r) * 0x9e3779b97f4a7c15ull + 1;
    for (int k = 0; k < VLEN; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[k] = (char)('a' + (x % 26));
    }
}

static void child_opts(od_db_options *o)
{
    od_db_options_init(o);
    o->l0_compaction_trigger = 1000; /* compaction only when asked */
    o->gc_interval_ms = 0;
    o->flush_interval_ms = 2;
    o->compaction_output_bytes = 64u << 10;
}

/* The child's compaction filter: keeps everything, but once the merge has passed 4500
 * entries (≥ 4 outputs of 64 KiB, so ≥ 2 recorded ones, whichever of the versions the
 * filter is shown) it stops for good, so the parent always finds the job mid-way and kills
 * it there, however slowly the parent's polling gets scheduled. */
static int child_stop_filter(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, int64_t now)
{
    (void)key, (void)klen, (void)val, (void)vlen, (void)now;
    long *seen = ctx;
    if (++*seen > 4500)
        for (;;) pause(); /* until SIGKILL */
    return 0;
}

/* The child: never returns. Exit 1 on any failure, 0 when the compaction finished (it must
 * not: it stops in child_stop_filter). */
static void child(const char *uri, int nkeys)
{
    od_db_options o;
    child_opts(&o);
    long filtered = 0;
    o.compaction_filter = child_stop_filter;
    o.compaction_filter_ctx = &filtered;
    od_err err;
    od_db *db;
    if (od_db_open(uri, &o, &db, &err)) {
        fprintf(stderr, "child: open: %s\n", err.msg);
        _exit(1);
    }
    char k[32], v[VLEN];
    for (int r = 0; r < ROUNDS; r++) {
        od_batch *b = od_batch_new();
        if (!b) _exit(1);
        for (int i = 0; i < nkeys; i++) {
            snprintf(k, sizeof k, "key-%06d", i);
            if (i % (r + 1) == 0) {
                round_val(r, i, v);
                if (od_batch_put(b, k, strlen(k), v, VLEN)) _exit(1);
            }
            if (r == ROUNDS - 1 && i % 7 == 3 && od_batch_delete(b, k, strlen(k))) _exit(1);
        }
        if (od_db_write(db, b, 1, NULL, &err) || od_db_flush(db, 1, &err)) {
            fprintf(stderr, "child: write: %s\n", err.msg);
            _exit(1);
        }
        od_batch_free(b);
    }
    if (od_db_compact(db, &err)) {
        fprintf(stderr, "child: compact: %s\n", err.msg);
        _exit(1);
    }
    _exit(0);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void test_crash_resume(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-resume-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[160], slow_uri[200];
    snprintf(uri, sizeof uri, "file://%s/store", dir);
    snprintf(slow_uri, sizeof slow_uri, "faulty+file://%s/store?latency_ms=3", dir);
    int nkeys = 6000;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child(slow_uri, nkeys);

    od_store *s;
    od_err err;
    int64_t deadline = time(NULL) + 60;
    od_manifest seen;
    memset(&seen, 0, sizeof seen);
    int killed = 0, status = 0;
    while (time(NULL) < deadline) {
        if (waitpid(pid, &status, WNOHANG) == pid) break; /* the child finished: too fast, or failed */
        od_manifest m;
        if (od_store_open(uri, &s, &err) == OD_OK) {
            if (od_manifest_load_latest(s, 0, &m, &err) == OD_OK) {
                if (m.has_job && m.job.nout >= 2) {
                    kill(pid, SIGKILL);
                    waitpid(pid, &status, 0);
                    killed = 1;
                    od_manifest_free(&m);
                    /* what the dead compactor recorded (it cannot commit any more) */
                    assert_int_equal(od_manifest_load_latest(s, 0, &seen, &err), OD_OK);
                    od_store_close(s);
                    break;
                }
                od_manifest_free(&m);
            }
            od_store_close(s);
        }
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    if (!killed) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("never saw a compaction job with 2 recorded outputs (child status %d)", status);
    }
    assert_true(WIFSIGNALED(status));
    assert_true(seen.has_job);
    assert_true(seen.job.nout >= 2);
    size_t rec = seen.job.nout;

    /* inspect shows the job and its recorded outputs */
    od_db_options ro;
    od_db_options_init(&ro);
    ro.read_only = 1;
    od_db *rdb;
    assert_int_equal(od_db_open(uri, &ro, &rdb, &err), OD_OK);
    od_buf js = {0};
    assert_int_equal(od_db_inspect(rdb, &js, &err), OD_OK);
    assert_non_null(strstr((const char *)js.data, "\"compaction_job\""));
    assert_non_null(strstr((const char *)js.data, seen.job.out[0].id));
    od_buf_free(&js);
    assert_int_equal(od_db_close(rdb, &err), OD_OK);

    /* a new writer takes over (the dead one's lease is live) and resumes the job */
    od_db_options o;
    child_opts(&o);
    o.takeover = 1;
    o.lease_ms = 60000; /* no lease renewal PUT during the resumed compaction below */
    od_db *db;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    od_db_stats st0;
    od_db_get_stats(db, &st0);
    if (od_db_compact(db, &err)) fail_msg("resume failed: %s", err.msg);
    od_db_stats st;
    od_db_get_stats(db, &st);
    od_manifest m;
    assert_int_equal(od_manifest_load_latest(od_db_store(db), 0, &m, &err), OD_OK);
    assert_false(m.has_job);
    assert_int_equal(m.nl0, 0);
    assert_int_equal(m.nruns, 1);
    assert_true(m.compactor_epoch > seen.job.compactor_epoch); /* a newer compactor took it over */
    assert_true(m.runs[0].n > rec);
    print_message("      the dead compactor recorded %zu outputs; the resumed run has %zu\n", rec, m.runs[0].n);
    for (size_t i = 0; i < rec; i++) assert_string_equal(m.runs[0].ssts[i].id, seen.job.out[i].id);
    /* only the rest was written again: fewer collection PUTs than outputs */
    uint64_t puts = st.store.requests[OD_REQ_PUT] - st0.store.requests[OD_REQ_PUT];
    uint64_t commits = st.manifest_version - st0.manifest_version;
    assert_true(puts - commits <= m.runs[0].n - rec + 1); /* + slack for one stray PUT */
    od_manifest_free(&m);

    /* the whole store equals the model */
    od_iter *it;
    assert_int_equal(od_db_iter(db, NULL, "", 0, NULL, 0, &it, &err), OD_OK);
    char v[VLEN], k[32];
    int i = 0;
    for (; od_iter_valid(it); od_iter_next(it, &err)) {
        size_t kl, vl;
        const uint8_t *key = od_iter_key(it, &kl);
        const uint8_t *val = od_iter_value(it, &vl);
        while (i < nkeys && !model(nkeys, i, v)) i++;
        assert_true(i < nkeys);
        snprintf(k, sizeof k, "key-%06d", i);
        assert_int_equal(kl, strlen(k));
        assert_memory_equal(key, k, kl);
        assert_int_equal(vl, VLEN);
        assert_memory_equal(val, v, VLEN);
        i++;
    }
    while (i < nkeys && !model(nkeys, i, v)) i++;
    assert_int_equal(i, nkeys);
    od_iter_free(it);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_manifest_free(&seen);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_format),
        cmocka_unit_test(test_crash_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
