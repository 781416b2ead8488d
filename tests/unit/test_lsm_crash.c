/*
 * test_lsm_crash.c — crash test: a child process (tests/tools/lsm_crash_child) writes
 * batches and records each acknowledged one in a side file; the parent SIGKILLs it at a
 * random moment (during open, WAL flushes, memtable flushes, compaction, GC), then reopens
 * the store and checks that every acknowledged batch is there with the right values and that
 * the whole store is readable. Repeats for max(100, 100·OD_TEST_SCALE) kill points (at least
 * 25 under the sanitizers' scale) on one file:// store; every 10th check opens as writer
 * (takeover, fencing and WAL replay of the dead writer), the others as read-only followers.
 */
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/od_db.h"

static char child_path[4096];

static double scale(void)
{
    const char *s = getenv("OD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

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

static void test_crash(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-crash-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128], side[160];
    snprintf(uri, sizeof uri, "file://%s/store", dir);
    snprintf(side, sizeof side, "%s/acks", dir);
    int kills = (int)(100 * scale());
    if (kills < 25) kills = 25;
    if (scale() >= 1 && kills < 100) kills = 100;
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
            for (int w = 0; w < 1000 && file_size(side) == start; w++) usleep(5000);
            usleep((useconds_t)(rand() % 30000));
        } else {
            usleep((useconds_t)(rand() % 200000));
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
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    (void)argc;
    char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(child_path, sizeof child_path, "%s/../tools/lsm_crash_child", dirname(self));
    if (access(child_path, X_OK) != 0) {
        fprintf(stderr, "test_lsm_crash: cannot find %s: %s\n", child_path, strerror(errno));
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crash)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
