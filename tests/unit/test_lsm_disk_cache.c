/*
 * test_lsm_disk_cache.c — the local disk cache of object ranges.
 *
 *   - API: put → get hit with the same bytes; other ranges miss; the byte bound evicts the
 *     least recently used; a corrupted file is a miss (never wrong bytes) and is removed;
 *     a new handle on the same directory adopts the files;
 *   - with od_db: a reopened database with a warm disk cache reads its collections without a
 *     single ranged GET to the store, and returns the right values.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/disk_cache.h"
#include "lsm/od_db.h"

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void test_api(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-dc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cdir[128];
    snprintf(cdir, sizeof cdir, "%s/cache", dir);
    od_disk_cache *c;
    od_err err;
    assert_int_equal(od_disk_cache_open(cdir, 5000, &c, &err), OD_OK);
    uint8_t data[1000];
    for (int i = 0; i < 1000; i++) data[i] = (uint8_t)(i * 7);
    od_buf out = {0};
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 0);
    od_disk_cache_put(c, "sst/a.sst", 0, 1000, data, 1000);
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 1);
    assert_int_equal(out.len, 1000);
    assert_memory_equal(out.data, data, 1000);
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 1, 1000, &out), 0);
    assert_int_equal(od_disk_cache_get(c, "sst/b.sst", 0, 1000, &out), 0);
    /* bound: 5000 bytes hold 4 files of ~1040 bytes; touching a keeps it */
    for (int i = 0; i < 6; i++) {
        char k[32];
        snprintf(k, sizeof k, "sst/f%d.sst", i);
        od_disk_cache_put(c, k, 0, 1000, data, 1000);
        assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 1);
    }
    uint64_t bytes;
    od_disk_cache_stats(c, NULL, NULL, &bytes);
    assert_true(bytes <= 5000);
    assert_int_equal(od_disk_cache_get(c, "sst/f0.sst", 0, 1000, &out), 0);
    assert_int_equal(od_disk_cache_get(c, "sst/f5.sst", 0, 1000, &out), 1);
    od_disk_cache_close(c);
    /* adopted by a new handle */
    assert_int_equal(od_disk_cache_open(cdir, 5000, &c, &err), OD_OK);
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 1);
    assert_memory_equal(out.data, data, 1000);
    /* corrupt every file: misses, and the files go */
    DIR *d = opendir(cdir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", cdir, de->d_name);
        FILE *f = fopen(p, "r+b");
        assert_non_null(f);
        fseek(f, 500, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, 500, SEEK_SET);
        fputc(ch ^ 0x40, f);
        fclose(f);
    }
    closedir(d);
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 0);
    assert_int_equal(od_disk_cache_get(c, "sst/a.sst", 0, 1000, &out), 0);
    uint64_t hits, misses;
    od_disk_cache_stats(c, &hits, &misses, NULL);
    assert_int_equal(hits, 1);
    od_disk_cache_close(c);
    od_buf_free(&out);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_db(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-lsm-dcdb-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128], cdir[128];
    snprintf(uri, sizeof uri, "file://%s/store", dir);
    snprintf(cdir, sizeof cdir, "%s/cache", dir);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.block_size = 1024;
    o.gc_interval_ms = 0;
    od_db *db;
    od_err err;
    assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
    od_batch *b = od_batch_new();
    assert_non_null(b);
    for (int i = 0; i < 2000; i++) {
        char k[16], v[64];
        snprintf(k, sizeof k, "k%05d", i);
        snprintf(v, sizeof v, "value-%d-padding-padding", i);
        assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
    }
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_batch_free(b);
    o.disk_cache_dir = cdir;
    o.disk_cache_bytes = 64u << 20;
    o.block_cache_bytes = 4096; /* nearly no block cache: reads go to the disk cache */
    for (int round = 0; round < 2; round++) {
        o.read_only = 1;
        assert_int_equal(od_db_open(uri, &o, &db, &err), OD_OK);
        od_db_stats s0;
        od_db_get_stats(db, &s0);
        for (int i = 0; i < 2000; i += 7) {
            char k[16], v[64];
            snprintf(k, sizeof k, "k%05d", i);
            snprintf(v, sizeof v, "value-%d-padding-padding", i);
            od_buf got = {0};
            assert_int_equal(od_db_get(db, NULL, k, strlen(k), &got, &err), OD_OK);
            assert_int_equal(got.len, strlen(v));
            assert_memory_equal(got.data, v, got.len);
            od_buf_free(&got);
        }
        od_db_stats s1;
        od_db_get_stats(db, &s1);
        if (round == 0) {
            assert_true(s1.disk_cache_misses > 0);
        } else {
            /* the store saw no ranged GET at all: footers, indexes, filters, blocks all cached */
            assert_int_equal(s1.store.requests[OD_REQ_GET_RANGE], 0);
            assert_true(s1.disk_cache_hits > 0);
        }
        assert_int_equal(od_db_close(db, &err), OD_OK);
    }
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_api), cmocka_unit_test(test_db)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
