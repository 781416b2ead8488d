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
 * The test logic is in tests/support/od_lsmtest.c (test_lsm_rgw runs it on s3://).
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

#include "od_lsmtest.h"

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

static void test_takeover(void **state)
{
    (void)state;
    char dir[64], uri[128], side[128];
    mkstore(dir, uri, sizeof uri);
    snprintf(side, sizeof side, "%s/a.acks", dir);
    od_lsmtest_takeover(uri, side);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
    od_lsmtest_lease_expiry(uri, 600);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_compactor_fencing(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
    od_lsmtest_compactor_fencing(uri);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_compactor_process(void **state)
{
    (void)state;
    char dir[64], uri[128];
    mkstore(dir, uri, sizeof uri);
    od_lsmtest_compactor_process(uri);
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
