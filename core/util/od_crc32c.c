/*
 * od_crc32c.c — CRC-32C. Table-driven (slicing-by-8, tables built once under pthread_once)
 * with a hardware path through the SSE4.2 crc32 instruction, selected at run time.
 * The tables are immutable after initialisation, so this file holds no per-database state.
 */
#include "od_crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t tbl[8][256];
static pthread_once_t tbl_once = PTHREAD_ONCE_INIT;
static int have_hw;

static void init_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
        tbl[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) tbl[t][i] = (tbl[t - 1][i] >> 8) ^ tbl[0][tbl[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t sw_crc(uint32_t c, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) { c = (c >> 8) ^ tbl[0][(c ^ *p++) & 0xff]; n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = tbl[7][w & 0xff] ^ tbl[6][(w >> 8) & 0xff] ^ tbl[5][(w >> 16) & 0xff] ^
            tbl[4][(w >> 24) & 0xff] ^ tbl[3][(w >> 32) & 0xff] ^ tbl[2][(w >> 40) & 0xff] ^
            tbl[1][(w >> 48) & 0xff] ^ tbl[0][(w >> 56) & 0xff];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ tbl[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t hw_crc(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t od_crc32c_extend(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&tbl_once, init_tables);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (have_hw) return ~hw_crc(c, data, n);
#endif
    return ~sw_crc(c, data, n);
}
