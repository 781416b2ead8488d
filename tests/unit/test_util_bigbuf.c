/*
 * test_util_bigbuf.c — unit tests of od_bigbuf (core/util/od_bigbuf.c), the buffer for large
 * transient bytes that goes back to the OS when freed: bytes survive every growth (malloc →
 * mapping → larger mapping), an exact pre-size is not doubled past, a zeroed buffer is valid,
 * free re-zeroes, and (without sanitizers, on Linux) a large buffer is a mapping that
 * od_bigbuf_free unmaps: resident memory goes back down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "od_bigbuf.h"
#include "od_err.h"

static uint8_t pat(size_t i) { return (uint8_t)(i * 131 + (i >> 9) + 7); }

static void test_grow_keeps_bytes(void **state)
{
    (void)state;
    od_bigbuf b = {0};
    uint8_t chunk[1000];
    size_t total = 0;
    size_t last_cap = 0;
    int saw_malloc = 0, saw_mapped = 0;
    while (total < (size_t)5 << 20) { /* 5 MiB in odd-sized appends: several growths */
        for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = pat(total + i);
        assert_int_equal(od_bigbuf_append(&b, chunk, sizeof chunk), OD_OK);
        total += sizeof chunk;
        assert_int_equal(b.len, total);
        assert_true(b.cap >= b.len);
        if (b.cap != last_cap) {
            if (b.mapped) saw_mapped = 1; else saw_malloc = 1;
            last_cap = b.cap;
        }
    }
    for (size_t i = 0; i < total; i++)
        if (b.data[i] != pat(i)) fail_msg("byte %zu differs", i);
    assert_true(saw_malloc);
#if !defined(__SANITIZE_ADDRESS__)
    assert_true(saw_mapped);
#else
    (void)saw_mapped;
#endif
    assert_int_equal(od_bigbuf_append(&b, NULL, 0), OD_OK);
    od_bigbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.mapped, 0);
    od_bigbuf_free(&b); /* freeing an empty buffer is fine */
}

static void test_presize(void **state)
{
    (void)state;
    od_bigbuf b = {0};
    size_t want = (size_t)36 << 20 | 12345; /* like a compaction output's expected size */
    assert_int_equal(od_bigbuf_reserve(&b, want), OD_OK);
    assert_true(b.cap >= want);
#if !defined(__SANITIZE_ADDRESS__)
    assert_true(b.mapped);
    assert_true(b.cap < want + 65536); /* taken as is (page-rounded), not doubled to 64 MiB */
#endif
    void *p = b.data;
    memset(b.data, 0xab, 4096);
    b.len = 4096;
    assert_int_equal(od_bigbuf_reserve(&b, want - 4096), OD_OK); /* fits: no move */
    assert_ptr_equal(b.data, p);
    assert_int_equal(od_bigbuf_append(&b, "xyz", 3), OD_OK);    /* does not */
    assert_int_equal(b.data[4095], 0xab);
    assert_memory_equal(b.data + 4096, "xyz", 3);
    od_bigbuf_free(&b);
    /* small buffers stay malloc'd */
    assert_int_equal(od_bigbuf_append(&b, "abc", 3), OD_OK);
    assert_int_equal(b.mapped, 0);
    od_bigbuf_free(&b);
    /* overflow is refused */
    b.len = 10;
    assert_int_equal(od_bigbuf_reserve(&b, SIZE_MAX - 5), OD_NOMEM);
    b.len = 0;
    od_bigbuf_free(&b);
}

#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}
#endif

static void test_free_returns_memory(void **state)
{
    (void)state;
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
    for (int round = 0; round < 3; round++) {
        od_bigbuf b = {0};
        size_t n = (size_t)24 << 20; /* below glibc's 32 MiB cap on its mmap threshold */
        assert_int_equal(od_bigbuf_reserve(&b, n), OD_OK);
        memset(b.data, round + 1, n);
        b.len = n;
        long touched = rss_kb();
        od_bigbuf_free(&b);
        long after = rss_kb();
        if (touched < 0 || after < 0) skip();
        /* the 24 MiB went back to the OS, each round */
        if (touched - after < 20 * 1024)
            fail_msg("round %d: RSS %ld kB with the buffer, %ld kB after free", round, touched, after);
    }
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_keeps_bytes),
        cmocka_unit_test(test_presize),
        cmocka_unit_test(test_free_returns_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
