/*
 * test_lsm_crash.c — crash test: a child process (tests/tools/lsm_crash_child) writes
 * batches and records each acknowledged one in a side file; the parent SIGKILLs it at a
 * random moment (during open, WAL flushes, memtable flushes, compaction, GC), then reopens
 * the store and checks that every acknowledged batch is there with the right values and that
 * the whole store is readable. Repeats for max(100, 100·OD_TEST_SCALE) kill points (at least
 * 25 under the sanitizers' scale) on one file:// store; every 10th check opens as writer
 * (takeover, fencing and WAL replay of the dead writer), the others as read-only followers.
 * The test logic is in tests/support/od_lsmtest.c (test_lsm_rgw runs it on s3://).
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "od_lsmtest.h"
#include "od_testutil.h"

static char child_path[4096];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void test_crash(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-crash-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128], side[160];
    snprintf(uri, sizeof uri, "file://%s/store", dir);
    snprintf(side, sizeof side, "%s/acks", dir);
    double sc = od_test_scale();
    int kills = (int)(100 * sc);
    if (kills < 25) kills = 25;
    if (sc >= 1 && kills < 100) kills = 100;
    od_lsmtest_crash(child_path, uri, side, kills, 200);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    (void)argc;
    od_lsmtest_tool_path(argv[0], "lsm_crash_child", child_path, sizeof child_path);
    if (access(child_path, X_OK) != 0) {
        fprintf(stderr, "test_lsm_crash: cannot find %s: %s\n", child_path, strerror(errno));
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crash)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
