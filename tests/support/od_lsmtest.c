/*
 * od_lsmtest.c — the storage engine's model, crash and fencing tests as functions of a store
 * URI (see od_lsmtest.h), so that test_lsm_model / test_lsm_crash / test_lsm_fencing run them
 * on mem:// and file://, and test_lsm_rgw on s3:// against radosgw. Moved here unchanged from
 * those files except for the parameters (step count, kill points, kill delay, lease length).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lsm/manifest.h"
#include "lsm/od_db.h"
#include "od_holdstore.h"
#include "od_lsmtest.h"
#include "od_testutil.h"

void od_lsmtest_tool_path(const char *argv0, const char *name, char *out, size_t n)
{
    const char *slash = strrchr(argv0, '/');
    int dl = slash ? (int)(slash - argv0) : 1;
    snprintf(out, n, "%.*s/../tools/%s", dl, slash ? argv0 : ".", name);
}

/* ================================================================== model test */

#define NKEYS 300
#define MAXV 120

typedef struct model {
    int present[NKEYS];
    size_t vlen[NKEYS];
    char val[NKEYS][MAXV];
} model;

static uint64_t rng;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void keyname(int i, char *buf)
{
    snprintf(buf, 16, "key%05d", i);
}

static void open_db(const char *uri, od_db **db, int read_only)
{
    od_db_options o;
    od_db_options_init(&o);
    o.read_only = read_only;
    o.flush_interval_ms = 2;
    o.memtable_bytes = 24 * 1024;
    o.block_size = 1024;
    o.l0_compaction_trigger = 3;
    o.gc_interval_ms = 0;
    od_err err;
    int rc = od_db_open(uri, &o, db, &err);
    if (rc) fail_msg("open %s: %s", uri, err.msg);
}

static void check_get(od_db *db, const od_snapshot *snap, const model *m, int k)
{
    char key[16];
    keyname(k, key);
    od_buf v = {0};
    od_err err;
    int rc = od_db_get(db, snap, key, strlen(key), &v, &err);
    if (m->present[k]) {
        if (rc != OD_OK) fail_msg("get %s: expected a value, got %s (%s)", key, od_code_name(rc), err.msg);
        assert_int_equal(v.len, m->vlen[k]);
        if (v.len) assert_memory_equal(v.data, m->val[k], v.len);
    } else {
        if (rc != OD_NOTFOUND) fail_msg("get %s: expected not found, got %s", key, od_code_name(rc));
    }
    od_buf_free(&v);
}

static void check_scan(od_db *db, const od_snapshot *snap, const model *m, int lo, int hi)
{
    char lk[16], hk[16];
    keyname(lo, lk);
    keyname(hi, hk);
    od_iter *it;
    od_err err;
    int rc = od_db_iter(db, snap, lk, strlen(lk), hi < NKEYS ? hk : NULL, hi < NKEYS ? strlen(hk) : 0, &it, &err);
    if (rc) fail_msg("iter: %s", err.msg);
    int k = lo;
    for (;;) {
        while (k < hi && !m->present[k]) k++;
        if (k >= hi) break;
        if (!od_iter_valid(it)) fail_msg("scan [%d,%d): ended before key %d", lo, hi, k);
        char key[16];
        keyname(k, key);
        size_t kl, vl;
        const uint8_t *kp = od_iter_key(it, &kl);
        const uint8_t *vp = od_iter_value(it, &vl);
        if (kl != strlen(key) || memcmp(kp, key, kl) != 0)
            fail_msg("scan [%d,%d): expected %s, got %.*s", lo, hi, key, (int)kl, (const char *)kp);
        assert_int_equal(vl, m->vlen[k]);
        if (vl) assert_memory_equal(vp, m->val[k], vl);
        assert_int_equal(od_iter_next(it, &err), OD_OK);
        k++;
    }
    if (od_iter_valid(it)) {
        size_t kl;
        const uint8_t *kp = od_iter_key(it, &kl);
        fail_msg("scan [%d,%d): unexpected extra key %.*s", lo, hi, (int)kl, (const char *)kp);
    }
    od_iter_free(it);
}

static void check_all(od_db *db, const od_snapshot *snap, const model *m)
{
    check_scan(db, snap, m, 0, NKEYS);
    for (int i = 0; i < 20; i++) check_get(db, snap, m, (int)(rnd() % NKEYS));
}

static void random_batch(od_db *db, model *m)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    model next = *m;
    int n = 1 + (int)(rnd() % 8);
    int64_t now = (int64_t)time(NULL) * 1000;
    for (int i = 0; i < n; i++) {
        int k = (int)(rnd() % NKEYS);
        char key[16];
        keyname(k, key);
        uint32_t r = rnd() % 100;
        if (r < 60 || r >= 85) {
            size_t vl = rnd() % MAXV;
            char v[MAXV];
            for (size_t j = 0; j < vl; j++) v[j] = (char)('a' + rnd() % 26);
            int64_t exp = 0;
            if (r >= 85) exp = (rnd() & 1) ? now - 1000 - (int64_t)(rnd() % 100000) : now + 3600 * 1000;
            assert_int_equal(od_batch_put_ttl(b, key, strlen(key), v, vl, exp), OD_OK);
            if (exp && exp < now) {
                next.present[k] = 0;
            } else {
                next.present[k] = 1;
                next.vlen[k] = vl;
                memcpy(next.val[k], v, vl);
            }
        } else {
            assert_int_equal(od_batch_delete(b, key, strlen(key)), OD_OK);
            next.present[k] = 0;
        }
    }
    od_err err;
    uint64_t seq = 0;
    int rc = od_db_write(db, b, (rnd() % 10) == 0, &seq, &err);
    if (rc) fail_msg("write: %s", err.msg);
    assert_true(seq > 0);
    *m = next;
    od_batch_free(b);
}

void od_lsmtest_model(const char *uri, int steps)
{
    const char *seed_env = getenv("OD_TEST_SEED");
    rng = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (!rng) rng = 1;
    printf("model test on %s, seed %llu\n", uri, (unsigned long long)rng);
    static model m, snap_m;
    memset(&m, 0, sizeof m);
    od_db *db;
    open_db(uri, &db, 0);
    od_snapshot *snap = NULL;
    od_err err;
    int reopens = 0, compactions = 0, ro_checks = 0, snaps_checked = 0;
    uint64_t last_seq_seen = 0, total_flushes = 0, total_wal = 0;
    for (int step = 0; step < steps; step++) {
        uint32_t r = rnd() % 1000;
        if (r < 600) {
            random_batch(db, &m);
        } else if (r < 750) {
            check_get(db, NULL, &m, (int)(rnd() % NKEYS));
        } else if (r < 820) {
            int lo = (int)(rnd() % NKEYS), hi = lo + (int)(rnd() % 60);
            check_scan(db, NULL, &m, lo, hi > NKEYS ? NKEYS : hi);
        } else if (r < 850) {
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
        } else if (r < 880) {
            if (od_db_flush(db, 1, &err)) fail_msg("flush: %s", err.msg);
        } else if (r < 895) {
            if (od_db_compact(db, &err)) fail_msg("compact: %s", err.msg);
            compactions++;
        } else if (r < 905) {
            if (snap) {
                check_all(db, snap, &snap_m);
                od_snapshot_release(snap);
                snap = NULL;
            }
            od_db_stats st;
            od_db_get_stats(db, &st);
            assert_true(st.last_seq >= last_seq_seen);
            last_seq_seen = st.last_seq;
            total_flushes += st.memtable_flushes;
            total_wal += st.wal_flushes;
            if (od_db_close(db, &err)) fail_msg("close: %s", err.msg);
            open_db(uri, &db, 0);
            od_db_get_stats(db, &st);
            assert_int_equal(st.last_seq, last_seq_seen); /* every batch came back */
            check_all(db, NULL, &m);
            reopens++;
        } else if (r < 930) {
            if (snap) {
                check_all(db, snap, &snap_m);
                snaps_checked++;
                od_snapshot_release(snap);
            }
            assert_int_equal(od_db_snapshot(db, &snap, &err), OD_OK);
            snap_m = m;
        } else if (r < 945) {
            /* a follower sees everything durable, and more after refresh */
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
            od_db *ro;
            open_db(uri, &ro, 1);
            check_all(ro, NULL, &m);
            random_batch(db, &m);
            if (rnd() & 1) assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
            assert_int_equal(od_db_flush(db, 0, &err), OD_OK);
            if (od_db_refresh(ro, &err)) fail_msg("refresh: %s", err.msg);
            check_all(ro, NULL, &m);
            od_batch *b = od_batch_new();
            assert_non_null(b);
            assert_int_equal(od_batch_put(b, "x", 1, "y", 1), OD_OK);
            assert_int_equal(od_db_write(ro, b, 0, NULL, &err), OD_BADREQ);
            od_batch_free(b);
            assert_int_equal(od_db_close(ro, &err), OD_OK);
            ro_checks++;
        } else {
            check_all(db, NULL, &m);
        }
    }
    if (snap) {
        check_all(db, snap, &snap_m);
        od_snapshot_release(snap);
    }
    check_all(db, NULL, &m);
    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_true(total_wal + st.wal_flushes > 0);
    assert_true(total_flushes + st.memtable_flushes > 0);
    od_buf js = {0};
    assert_int_equal(od_db_inspect(db, &js, &err), OD_OK);
    assert_non_null(strstr((char *)js.data, "\"writer_epoch\""));
    od_buf_free(&js);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    open_db(uri, &db, 0);
    check_all(db, NULL, &m);
    if (od_db_compact(db, &err)) fail_msg("compact: %s", err.msg);
    check_all(db, NULL, &m);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    printf("  %d steps, %d reopens, %d compactions, %d snapshots checked, %d follower checks\n", steps, reopens,
           compactions, snaps_checked, ro_checks);
}

/* ================================================================== crash test */

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Acknowledged batch numbers from the side file (complete lines only). */
static long *read_acks(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    *n = 0;
    if (!f) return NULL;
    size_t cap = 1024;
    long *v = malloc(cap * sizeof *v);
    assert_non_null(v);
    char line[64];
    while (fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n')) break;
        if (*n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
            assert_non_null(v);
        }
        v[(*n)++] = atol(line);
    }
    fclose(f);
    return v;
}

static void check_batch(od_db *db, long n)
{
    for (int j = 0; j < 3; j++) {
        char k[32], v[96];
        int kl = snprintf(k, sizeof k, "b%ld-%d", n, j);
        int vl = snprintf(v, sizeof v, "v%ld-%d-%0*d", n, j, (int)(n % 50), 0);
        od_buf got = {0};
        od_err err;
        int rc = od_db_get(db, NULL, k, (size_t)kl, &got, &err);
        if (rc) fail_msg("acknowledged batch %ld: key %s: %s", n, k, od_code_name(rc));
        assert_int_equal(got.len, (size_t)vl);
        assert_memory_equal(got.data, v, (size_t)vl);
        od_buf_free(&got);
    }
}

void od_lsmtest_crash(const char *child_path, const char *uri, const char *side, int kills, int max_delay_ms)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("crash test: %d kill points, seed %u\n", kills, seed);
    srand(seed);
    long next = 0;
    size_t last_n = 0;
    int writer_checks = 0;
    for (int k = 0; k < kills; k++) {
        char first[32], sd[32];
        snprintf(first, sizeof first, "%ld", next);
        snprintf(sd, sizeof sd, "%d", rand());
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl(child_path, child_path, uri, side, first, sd, (char *)NULL);
            _exit(127);
        }
        /* kill anywhere from during open to well into steady writing: every other time
         * only after the child acknowledged something new (slow builds open slowly) */
        if (k & 1) {
            off_t start = file_size(side);
            for (int64_t t0 = od_test_mono_ms(); file_size(side) == start && od_test_mono_ms() - t0 < 30000;)
                usleep(5000);
            usleep((useconds_t)(rand() % 30000));
        } else {
            usleep((useconds_t)(rand() % (max_delay_ms * 1000)));
        }
        kill(pid, SIGKILL);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
            fail_msg("child exited by itself (status %d) before the kill: see its stderr", st);
        size_t n;
        long *acks = read_acks(side, &n);
        for (size_t i = 0; i < n; i++)
            if (acks[i] + 1 > next) next = acks[i] + 1;
        next += 1000; /* batches a child assigned but never acknowledged must not collide */
        od_db_options o;
        od_db_options_init(&o);
        int as_writer = (k % 10) == 9;
        o.read_only = !as_writer;
        o.takeover = 1;
        o.gc_interval_ms = 0;
        od_db *db;
        od_err err;
        if (od_db_open(uri, &o, &db, &err)) fail_msg("reopen after kill %d: %s", k, err.msg);
        /* the batches acknowledged by this child, plus a sample of older ones */
        for (size_t i = last_n; i < n; i++) check_batch(db, acks[i]);
        for (int s = 0; s < 20 && n; s++) check_batch(db, acks[rand() % n]);
        if (k % 20 == 19 || k == kills - 1) {
            for (size_t i = 0; i < n; i++) check_batch(db, acks[i]);
            /* and the whole store scans cleanly */
            od_iter *it;
            assert_int_equal(od_db_iter(db, NULL, NULL, 0, NULL, 0, &it, &err), OD_OK);
            size_t keys = 0;
            while (od_iter_valid(it)) {
                keys++;
                assert_int_equal(od_iter_next(it, &err), OD_OK);
            }
            od_iter_free(it);
            assert_true(keys >= 3 * n);
        }
        if (as_writer) {
            writer_checks++;
            if (od_db_close(db, &err)) fail_msg("close after check: %s", err.msg);
        } else {
            assert_int_equal(od_db_close(db, &err), OD_OK);
        }
        last_n = n;
        free(acks);
    }
    printf("crash test: %zu acknowledged batches verified, %d writer reopens\n", last_n, writer_checks);
    assert_true(last_n > 0);
}

/* ================================================================== fencing */

static int put_batch(od_db *db, const char *who, long n, od_err *err)
{
    od_batch *b = od_batch_new();
    if (!b) return OD_NOMEM;
    char k[48], v[48];
    int kl = snprintf(k, sizeof k, "%s-%06ld", who, n);
    int vl = snprintf(v, sizeof v, "value-%s-%ld", who, n);
    od_batch_put(b, k, (size_t)kl, v, (size_t)vl);
    int rc = od_db_write(db, b, 1, NULL, err);
    od_batch_free(b);
    return rc;
}

static void check_key(od_db *db, const char *who, long n)
{
    char k[48], v[48];
    int kl = snprintf(k, sizeof k, "%s-%06ld", who, n);
    int vl = snprintf(v, sizeof v, "value-%s-%ld", who, n);
    od_buf got = {0};
    od_err err;
    int rc = od_db_get(db, NULL, k, (size_t)kl, &got, &err);
    if (rc) fail_msg("acknowledged %s is missing: %s", k, od_code_name(rc));
    assert_int_equal(got.len, (size_t)vl);
    assert_memory_equal(got.data, v, (size_t)vl);
    od_buf_free(&got);
}

static void opts(od_db_options *o)
{
    od_db_options_init(o);
    o->flush_interval_ms = 5;
    o->lease_ms = 3000;
    o->gc_interval_ms = 0;
}

/* Process A: write until an error; acks as "n\n", the error as "ERR code message\n". */
static void writer_a(const char *uri, const char *side)
{
    FILE *f = fopen(side, "w");
    if (!f) _exit(3);
    setvbuf(f, NULL, _IOLBF, 0);
    od_db_options o;
    opts(&o);
    od_db *db;
    od_err err;
    if (od_db_open(uri, &o, &db, &err)) {
        fprintf(f, "ERR %d %s\n", err.code, err.msg);
        _exit(4);
    }
    for (long n = 0;; n++) {
        int rc = put_batch(db, "A", n, &err);
        if (rc) {
            fprintf(f, "ERR %d %s\n", rc, err.msg);
            /* every later write fails the same way */
            int rc2 = put_batch(db, "A", n + 1, &err);
            fprintf(f, "ERR %d %s\n", rc2, err.msg);
            od_db_close(db, &err);
            fclose(f);
            _exit(0);
        }
        fprintf(f, "%ld\n", n);
    }
}

static int count_acks(const char *side, long *acks, int max, char *errline, size_t errn)
{
    FILE *f = fopen(side, "r");
    if (!f) return 0;
    char line[700];
    int n = 0;
    if (errline) errline[0] = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n')) break;
        if (strncmp(line, "ERR ", 4) == 0) {
            if (errline && !errline[0]) snprintf(errline, errn, "%s", line);
        } else if (n < max) {
            acks[n++] = atol(line);
        }
    }
    fclose(f);
    return n;
}

void od_lsmtest_takeover(const char *uri, const char *side)
{
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0) writer_a(uri, side);
    static long acks[1000000];
    int n = 0;
    for (int64_t t0 = od_test_mono_ms(); n < 20 && od_test_mono_ms() - t0 < 60000;) {
        usleep(5000);
        n = count_acks(side, acks, 1000000, NULL, 0);
    }
    if (n < 20) {
        kill(a, SIGKILL);
        waitpid(a, NULL, 0);
        fail_msg("writer A acknowledged only %d batches in 60 s", n);
    }

    od_db_options o;
    opts(&o);
    od_db *b;
    od_err err;
    /* refused while A's lease is fresh */
    int rc = od_db_open(uri, &o, &b, &err);
    assert_int_equal(rc, OD_BUSY);
    assert_non_null(strstr(err.msg, "lease held"));
    assert_non_null(strstr(err.msg, "takeover"));
    /* a reader is fine */
    od_db_options ro;
    opts(&ro);
    ro.read_only = 1;
    od_db *r;
    assert_int_equal(od_db_open(uri, &ro, &r, &err), OD_OK);
    assert_int_equal(od_db_close(r, &err), OD_OK);
    /* takeover */
    o.takeover = 1;
    if (od_db_open(uri, &o, &b, &err)) fail_msg("takeover open: %s", err.msg);
    long nb = 0;
    for (; nb < 50; nb++)
        if (put_batch(b, "B", nb, &err)) fail_msg("B write %ld: %s", nb, err.msg);
    int st;
    for (int64_t t0 = od_test_mono_ms();;) { /* A meets the fence at its next WAL write */
        if (waitpid(a, &st, WNOHANG) == a) break;
        if (od_test_mono_ms() - t0 > 60000) {
            kill(a, SIGKILL);
            waitpid(a, NULL, 0);
            fail_msg("writer A was not fenced within 60 s");
        }
        usleep(10000);
    }
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char errline[700];
    n = count_acks(side, acks, 1000000, errline, sizeof errline);
    printf("A acknowledged %d batches, then: %s", n, errline);
    assert_int_equal(atoi(errline + 4), OD_FENCED);
    assert_non_null(strstr(errline, "fenced"));
    /* B keeps writing after A stopped */
    for (; nb < 60; nb++)
        if (put_batch(b, "B", nb, &err)) fail_msg("B write %ld: %s", nb, err.msg);
    for (int i = 0; i < n; i++) check_key(b, "A", acks[i]);
    for (long i = 0; i < nb; i++) check_key(b, "B", i);
    od_db_stats sb;
    od_db_get_stats(b, &sb);
    assert_int_equal(od_db_close(b, &err), OD_OK);
    /* the clean close released the lease: no takeover needed; the epoch only grew */
    o.takeover = 0;
    assert_int_equal(od_db_open(uri, &o, &b, &err), OD_OK);
    od_db_stats s2;
    od_db_get_stats(b, &s2);
    assert_int_equal(s2.writer_epoch, sb.writer_epoch + 1);
    for (int i = 0; i < n; i++) check_key(b, "A", acks[i]);
    for (long i = 0; i < nb; i++) check_key(b, "B", i);
    assert_int_equal(od_db_close(b, &err), OD_OK);
}

/* One try of the lease expiry scenario with a lease of lease_ms (batch `n` of "D").
 * Returns 0 when the machine was too slow to tell: our first open came more than lease_ms
 * after the dead writer's last lease renewal (measured from before the fork), so the lease
 * had rightly expired; 1 when every check ran. */
static int lease_expiry_try(const char *uri, uint32_t lease_ms, long n)
{
    od_db_options o;
    opts(&o);
    o.lease_ms = lease_ms;
    int64_t forked = od_test_now_ms(); /* the child's lease is renewed after this */
    fflush(NULL);
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0) {
        od_db *db;
        od_err e;
        o.takeover = n > 1; /* a retry: the earlier try left the lease to us, released */
        if (od_db_open(uri, &o, &db, &e)) _exit(1);
        if (put_batch(db, "D", n, &e)) _exit(1);
        _exit(0); /* dies holding the lease */
    }
    int st;
    assert_int_equal(waitpid(a, &st, 0), a);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    od_db *db;
    od_err err;
    int rc = od_db_open(uri, &o, &db, &err);
    int64_t opened = od_test_now_ms();
    if (rc == OD_OK) {
        if (opened - forked < (int64_t)lease_ms)
            fail_msg("a writer opened %lld ms after the dead writer took a %u ms lease",
                     (long long)(opened - forked), lease_ms);
        print_message("      machine too slow: first open %lld ms after the fork (lease_ms %u)\n",
                      (long long)(opened - forked), lease_ms);
        check_key(db, "D", n);
        assert_int_equal(od_db_close(db, &err), OD_OK);
        return 0;
    }
    assert_int_equal(rc, OD_BUSY);
    usleep((lease_ms + 100) * 1000);
    if (od_db_open(uri, &o, &db, &err)) fail_msg("open after lease expiry: %s", err.msg);
    check_key(db, "D", n);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    return 1;
}

void od_lsmtest_lease_expiry(const char *uri, uint32_t lease_ms)
{
    /* lease_ms normally; a machine too slow for it gets 4x, then 16x */
    for (long n = 1; !lease_expiry_try(uri, lease_ms, n); n++) {
        if (n == 3) fail_msg("never opened within the dead writer's lease (last lease_ms %u)", lease_ms);
        lease_ms *= 4;
    }
}

void od_lsmtest_compactor_fencing(const char *uri)
{
    od_db_options o;
    opts(&o);
    o.compactor = 0;
    od_db *a, *b;
    od_err err;
    assert_int_equal(od_db_open(uri, &o, &a, &err), OD_OK);
    for (long i = 0; i < 3; i++) {
        assert_int_equal(put_batch(a, "C", i, &err), OD_OK);
        assert_int_equal(od_db_flush(a, 1, &err), OD_OK);
    }
    o.takeover = 1;
    assert_int_equal(od_db_open(uri, &o, &b, &err), OD_OK);
    /* the old handle's compaction must not commit */
    int rc = od_db_compact(a, &err);
    assert_int_equal(rc, OD_FENCED);
    assert_non_null(strstr(err.msg, "fenced"));
    /* nor its writes */
    assert_int_equal(put_batch(a, "C", 99, &err), OD_FENCED);
    od_db_close(a, &err);
    /* the new one compacts fine and sees everything */
    assert_int_equal(od_db_compact(b, &err), OD_OK);
    od_db_stats st;
    od_db_get_stats(b, &st);
    assert_int_equal(st.l0_count, 0);
    assert_int_equal(st.sorted_runs, 1);
    for (long i = 0; i < 3; i++) check_key(b, "C", i);
    od_buf v = {0};
    assert_int_equal(od_db_get(b, NULL, "C-000099", 8, &v, &err), OD_NOTFOUND);
    assert_int_equal(od_db_close(b, &err), OD_OK);
}

/* A separate compactor process: the writer (compactor=0) keeps writing and flushing while
 * a compactor-only handle in another process merges its L0s; a second compactor fences the
 * first. No acknowledged write is lost. */
void od_lsmtest_compactor_process(const char *uri)
{
    od_db_options o;
    opts(&o);
    o.compactor = 0;
    od_db *w;
    od_err err;
    assert_int_equal(od_db_open(uri, &o, &w, &err), OD_OK);
    long n = 0;
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < 10; i++, n++) assert_int_equal(put_batch(w, "P", n, &err), OD_OK);
        assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    }
    od_db_stats st;
    od_db_get_stats(w, &st);
    assert_int_equal(st.l0_count, 5);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        od_db_options co;
        opts(&co);
        co.compactor_only = 1;
        co.follow_interval_ms = 100; /* notices the writer's commits quickly */
        co.l0_compaction_trigger = 2;
        od_db *cdb;
        od_err e;
        if (od_db_open(uri, &co, &cdb, &e)) _exit(1);
        od_batch *b = od_batch_new();
        od_batch_put(b, "x", 1, "y", 1);
        if (od_db_write(cdb, b, 0, NULL, &e) != OD_BADREQ) _exit(2);
        od_batch_free(b);
        if (od_db_compact(cdb, &e)) _exit(3);
        /* background compaction keeps up with the writer for a while */
        usleep(800 * 1000);
        od_db_close(cdb, &e);
        _exit(0);
    }
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < 10; i++, n++) assert_int_equal(put_batch(w, "P", n, &err), OD_OK);
        if (od_db_flush(w, 1, &err)) fail_msg("writer flush next to a compactor: %s", err.msg);
        usleep(100 * 1000);
    }
    int status;
    assert_int_equal(waitpid(c, &status, 0), c);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* one more commit makes the writer re-read the compactor's work */
    for (int i = 0; i < 5; i++, n++) assert_int_equal(put_batch(w, "P", n, &err), OD_OK);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    od_db_get_stats(w, &st);
    assert_true(st.sorted_runs >= 1);
    assert_true(st.l0_count < 10);
    for (long i = 0; i < n; i++) check_key(w, "P", i);
    /* compactor fencing between two compactor processes (here: handles) */
    od_db_options co;
    opts(&co);
    co.compactor_only = 1;
    co.follow_interval_ms = 100; /* notices the writer's commits quickly */
    od_db *c1, *c2;
    assert_int_equal(od_db_open(uri, &co, &c1, &err), OD_OK);
    co.takeover = 1; /* a live compactor's lease is respected unless the newer one takes over */
    assert_int_equal(od_db_open(uri, &co, &c2, &err), OD_OK);
    assert_int_equal(put_batch(w, "P", n++, &err), OD_OK);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    int rc = od_db_compact(c1, &err);
    assert_int_equal(rc, OD_FENCED);
    assert_non_null(strstr(err.msg, "newer compactor"));
    assert_int_equal(od_db_compact(c2, &err), OD_OK);
    od_db_close(c1, &err);
    assert_int_equal(od_db_close(c2, &err), OD_OK);
    assert_int_equal(put_batch(w, "P", n++, &err), OD_OK);
    assert_int_equal(od_db_flush(w, 1, &err), OD_OK);
    for (long i = 0; i < n; i++) check_key(w, "P", i);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    /* and a fresh open sees it all */
    assert_int_equal(od_db_open(uri, &o, &w, &err), OD_OK);
    for (long i = 0; i < n; i++) check_key(w, "P", i);
    assert_int_equal(od_db_close(w, &err), OD_OK);
}

void od_lsmtest_fill_desc(od_sst_desc *d, const char *id, const char *lo, const char *hi, uint64_t size,
                          uint64_t entries, uint64_t min_seq, uint64_t max_seq)
{
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    d->size = size;
    d->entries = entries;
    d->min_seq = min_seq;
    d->max_seq = max_seq;
    d->min_klen = strlen(lo);
    d->max_klen = strlen(hi);
    d->min_key = malloc(d->min_klen + 1);
    d->max_key = malloc(d->max_klen + 1);
    assert_non_null(d->min_key);
    assert_non_null(d->max_key);
    memcpy(d->min_key, lo, d->min_klen);
    memcpy(d->max_key, hi, d->max_klen);
}

void od_lsmtest_key(int i, char *k, size_t n)
{
    snprintf(k, n, "key-%07d", i);
}

void od_lsmtest_val(int i, char *v, size_t n)
{
    uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + 7;
    for (size_t j = 0; j + 1 < n; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[j] = (char)('a' + (x % 26));
    }
    v[n - 1] = 0;
}

int od_lsmtest_write_range(od_db *db, int from, int to, int per_batch, od_err *err)
{
    char k[32], v[OD_LSMTEST_VLEN];
    for (int i = from; i < to;) {
        od_batch *b = od_batch_new();
        assert_non_null(b);
        for (int j = 0; j < per_batch && i < to; j++, i++) {
            od_lsmtest_key(i, k, sizeof k);
            od_lsmtest_val(i, v, sizeof v);
            assert_int_equal(od_batch_put(b, k, strlen(k), v, OD_LSMTEST_VLEN), OD_OK);
        }
        int rc = od_db_write(db, b, 0, NULL, err);
        od_batch_free(b);
        if (rc) return rc;
    }
    return OD_OK;
}

int od_lsmtest_check_range(od_db *db, int from, int to, int *failed_at, od_err *err)
{
    char k[32], v[OD_LSMTEST_VLEN];
    for (int i = from; i < to; i++) {
        od_lsmtest_key(i, k, sizeof k);
        od_lsmtest_val(i, v, sizeof v);
        od_buf got = {0};
        int rc = od_db_get(db, NULL, k, strlen(k), &got, err);
        if (rc) {
            if (failed_at) *failed_at = i;
            return rc;
        }
        assert_int_equal(got.len, OD_LSMTEST_VLEN);
        assert_memory_equal(got.data, v, OD_LSMTEST_VLEN);
        od_buf_free(&got);
    }
    return OD_OK;
}

void od_lsmtest_write_flush(od_db *db, int from, int to, int per_batch)
{
    od_err err;
    if (od_lsmtest_write_range(db, from, to, per_batch, &err)) fail_msg("write: %s", err.msg);
    if (od_db_flush(db, 1, &err)) fail_msg("flush: %s", err.msg);
}

void od_lsmtest_expect_range(od_db *db, int from, int to, const char *when)
{
    od_err err;
    int bad = -1;
    if (od_lsmtest_check_range(db, from, to, &bad, &err)) fail_msg("%s: key %d: %s", when, bad, err.msg);
}

void od_lsmtest_xproc_writer_opts(od_db_options *o, uint32_t min_age_ms)
{
    od_db_options_init(o);
    o->flush_interval_ms = 2;
    o->compactor = 0; /* a compactor process compacts and collects */
    o->gc_interval_ms = 0;
    o->gc_min_age_ms = min_age_ms;
}

void od_lsmtest_xproc_compactor_opts(od_db_options *o, uint32_t min_age_ms)
{
    od_db_options_init(o);
    o->compactor_only = 1;
    o->follow_interval_ms = 100; /* notices the writer's commits quickly */
    o->gc_interval_ms = 0; /* GC when the test says */
    o->gc_min_age_ms = min_age_ms;
    o->l0_compaction_trigger = 1000; /* compaction when the test says */
}

void od_lsmtest_hold_arm(od_hold_store *h)
{
    pthread_mutex_lock(&h->mu);
    h->armed = 1;
    h->blocked = h->released = 0;
    pthread_mutex_unlock(&h->mu);
}

int od_lsmtest_hold_wait(od_hold_store *h, int timeout_ms)
{
    int64_t deadline = od_test_mono_ms() + timeout_ms;
    pthread_mutex_lock(&h->mu);
    while (!h->blocked && od_test_mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    int blocked = h->blocked;
    pthread_mutex_unlock(&h->mu);
    return blocked;
}

void od_lsmtest_hold_release(od_hold_store *h)
{
    pthread_mutex_lock(&h->mu);
    h->released = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}
