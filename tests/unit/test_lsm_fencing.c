/*
 * test_lsm_fencing.c — one writer per store, enforced across processes on file://.
 *
 *   - takeover: process A writes continuously (acknowledged batches recorded in a side
 *     file); process B opening as writer is refused with OD_BUSY "lease held"; with
 *     takeover=1 it opens, A's next write fails with OD_FENCED ("fenced: ...") and A stops,
 *     B keeps writing, and every batch acknowledged by A or B is in the store afterwards;
 *     the manifest's writer epoch is B's (A never rolled it back);
 *   - lease expiry: a writer that dies without closing blocks others only for lease_ms;
 *   - a clean close releases the lease at once; read-only opens are never refused;
 *   - compactor fencing: a compaction started under an older compactor epoch cannot commit;
 *   - a separate compactor process (compactor_only) compacts next to a live writer, and a
 *     newer compactor fences it.
 */
#include <ftw.h>
#include <setjmp.h>
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

#include "lsm/od_db.h"

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void mkstore(char *dir, char *uri, size_t n)
{
    strcpy(dir, "/tmp/od-lsm-fence-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(uri, n, "file://%s/store", dir);
}

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

static void test_takeover(void **state)
{
    (void)state;
    char dir[64], uri[128], side[128];
    mkstore(dir, uri, sizeof uri);
    snprintf(side, sizeof side, "%s/a.acks", dir);
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0) writer_a(uri, side);
    static long acks[1000000];
    int n = 0;
    for (int i = 0; i < 2000 && n < 20; i++) {
        usleep(5000);
        n = count_acks(side, acks, 1000000, NULL, 0);
    }
    assert_true(n >= 20);

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
    for (int i = 0; i < 1000; i++) {
        if (waitpid(a, &st, WNOHANG) == a) break;
        usleep(10000);
        if (i == 999) {
            kill(a, SIGKILL);
            fail_msg("writer A was not fenced within 10 s");
        }
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
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
    od_db_options o;
    opts(&o);
    o.lease_ms = 600;
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0) {
        od_db *db;
        od_err e;
        if (od_db_open(uri, &o, &db, &e)) _exit(1);
        if (put_batch(db, "D", 1, &e)) _exit(1);
        _exit(0); /* dies holding the lease */
    }
    int st;
    assert_int_equal(waitpid(a, &st, 0), a);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    od_db *db;
    od_err err;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_BUSY);
    usleep(700 * 1000);
    if (od_db_open(uri, &o, &db, &err)) fail_msg("open after lease expiry: %s", err.msg);
    check_key(db, "D", 1);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_compactor_fencing(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
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
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A separate compactor process: the writer (compactor=0) keeps writing and flushing while
 * a compactor-only handle in another process merges its L0s; a second compactor fences the
 * first. No acknowledged write is lost. */
static void test_compactor_process(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
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
    od_db *c1, *c2;
    assert_int_equal(od_db_open(uri, &co, &c1, &err), OD_OK);
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
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_compactor_fencing),
        cmocka_unit_test(test_compactor_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
