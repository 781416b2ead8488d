/*
 * events_crash_child.c — the victim of test_events_crash: appends to a few event-store keys
 * until it is killed, and records each ACKNOWLEDGED append (od_ev_append returned OK, i.e. the
 * records are durable) in a side file as one line "key seq value\n" per record, written with
 * a single O_APPEND write.
 *
 *   events_crash_child URI SIDE_FILE SEED
 *
 * Three threads share the handle (so one WAL object carries several appends); each reads a
 * key's tail and appends with expected_seq (retrying on conflict), sometimes a batch of two
 * records for two keys. It opens with takeover=1 (the previous child died holding the lease)
 * and a small memtable so L0 flushes and compactions are in flight when SIGKILL lands.
 * Values are "<seed>-<thread>-<n>[ab]", unique across children. Exits 2 on any error.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventstore/od_eventstore.h"

#define NKEYS 4
static const char *KEYS[NKEYS] = {"crash/a", "crash/b", "crash/c", "crash/d"};
static od_eventstore *es;
static int side_fd;
static long seed;

static void *writer(void *arg)
{
    long id = (long)arg;
    uint64_t rs = (uint64_t)seed * 2654435761u + (uint64_t)id + 1;
    for (long n = 0;; n++) {
        rs ^= rs << 13;
        rs ^= rs >> 7;
        rs ^= rs << 17;
        int k1 = (int)(rs % NKEYS), k2 = (k1 + 1) % NKEYS, two = (rs >> 8) % 3 == 0;
        char v1[64], v2[64];
        snprintf(v1, sizeof v1, "%ld-%ld-%lda", seed, id, n);
        snprintf(v2, sizeof v2, "%ld-%ld-%ldb", seed, id, n);
        for (;;) {
            od_ev_key_info a, b;
            od_err err = {0};
            if (od_ev_tail(es, KEYS[k1], strlen(KEYS[k1]), &a, &err) ||
                od_ev_tail(es, KEYS[k2], strlen(KEYS[k2]), &b, &err)) {
                fprintf(stderr, "events_crash_child: tail: %s\n", err.msg);
                exit(2);
            }
            od_ev_rec_in in[2] = {
                {.key = KEYS[k1], .klen = strlen(KEYS[k1]), .value = v1, .vlen = strlen(v1),
                 .expected_seq = (int64_t)a.next_seq},
                {.key = KEYS[k2], .klen = strlen(KEYS[k2]), .value = v2, .vlen = strlen(v2),
                 .expected_seq = (int64_t)b.next_seq},
            };
            uint64_t seqs[2];
            int rc = od_ev_append(es, in, two ? 2 : 1, NULL, seqs, NULL, &err);
            if (rc == OD_CONFLICT) continue;
            if (rc) {
                fprintf(stderr, "events_crash_child: append: %s\n", err.msg);
                exit(2);
            }
            char line[256];
            int ll = snprintf(line, sizeof line, "%d %llu %s\n", k1, (unsigned long long)seqs[0], v1);
            if (two)
                ll += snprintf(line + ll, sizeof line - (size_t)ll, "%d %llu %s\n", k2, (unsigned long long)seqs[1], v2);
            if (write(side_fd, line, (size_t)ll) != ll) exit(2);
            break;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: events_crash_child URI SIDE_FILE SEED\n");
        return 2;
    }
    seed = atol(argv[3]);
    side_fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (side_fd < 0) return 2;
    od_ev_options o;
    od_ev_options_init(&o);
    o.takeover = 1;
    o.tail_cache_entries = 2;
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 3;
    dbo.memtable_bytes = 8 * 1024 + (size_t)(seed % 4) * 4096;
    dbo.block_size = 1024;
    dbo.l0_compaction_trigger = 2;
    o.db = &dbo;
    od_err err = {0};
    if (od_ev_open(argv[1], &o, &es, &err)) {
        fprintf(stderr, "events_crash_child: open: %s\n", err.msg);
        return 2;
    }
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, writer, (void *)i);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}
