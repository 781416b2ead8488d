/*
 * lsm_crash_child.c — the victim of test_lsm_crash: writes batches to a store until it is
 * killed, and records each ACKNOWLEDGED batch (od_db_write with wait_durable=1 returned OK)
 * in a side file, one line "<batch number>\n" written with a single append.
 *
 *   lsm_crash_child URI SIDE_FILE FIRST_BATCH SEED
 *
 * Batch n puts "b<n>-0".."b<n>-2" = "v<n>-<j>-<padding>", and overwrites "last" with n. It
 * opens as writer with takeover=1 (the previous child died holding the lease), with a small
 * memtable and L0 trigger so memtable flushes and compactions are in progress when the
 * SIGKILL lands. Several writer threads share the handle so one WAL object carries many
 * batches. Exits 2 on any error (printed to stderr).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lsm/od_db.h"

static od_db *db;
static int side_fd;
static long next_batch;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *writer(void *arg)
{
    (void)arg;
    od_batch *b = od_batch_new();
    if (!b) exit(2);
    for (;;) {
        pthread_mutex_lock(&mu);
        long n = next_batch++;
        pthread_mutex_unlock(&mu);
        od_batch_clear(b);
        for (int j = 0; j < 3; j++) {
            char k[32], v[96];
            int kl = snprintf(k, sizeof k, "b%ld-%d", n, j);
            int vl = snprintf(v, sizeof v, "v%ld-%d-%0*d", n, j, (int)(n % 50), 0);
            od_batch_put(b, k, (size_t)kl, v, (size_t)vl);
        }
        char nv[32];
        int nl = snprintf(nv, sizeof nv, "%ld", n);
        od_batch_put(b, "last", 4, nv, (size_t)nl);
        od_err err;
        int rc = od_db_write(db, b, 1, NULL, &err);
        if (rc) {
            fprintf(stderr, "lsm_crash_child: write of batch %ld: %s\n", n, err.msg);
            exit(2);
        }
        char line[32];
        int ll = snprintf(line, sizeof line, "%ld\n", n);
        if (write(side_fd, line, (size_t)ll) != ll) exit(2);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: lsm_crash_child URI SIDE_FILE FIRST_BATCH SEED\n");
        return 2;
    }
    next_batch = atol(argv[3]);
    side_fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (side_fd < 0) return 2;
    od_db_options o;
    od_db_options_init(&o);
    o.takeover = 1;
    o.flush_interval_ms = 3;
    o.memtable_bytes = 8 * 1024 + (size_t)(atol(argv[4]) % 4) * 4096;
    o.block_size = 1024;
    o.l0_compaction_trigger = 2;
    o.gc_interval_ms = 50;
    o.gc_min_age_ms = 1000; /* GC of earlier children's garbage races with the kill */
    od_err err;
    if (od_db_open(argv[1], &o, &db, &err)) {
        fprintf(stderr, "lsm_crash_child: open: %s\n", err.msg);
        return 2;
    }
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, writer, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}
