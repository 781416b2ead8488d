/*
 * test_events_concurrency.c — several threads, then several processes, appending to the same
 * keys with expected_seq (read the tail, append expecting it, retry on conflict).
 *
 * Checked afterwards by reading every key back: sequences are gapless from 0, every
 * acknowledged append is readable at the sequence it was acknowledged with and carries its
 * value, no value appears twice, and (threads, one handle) the number of records equals the
 * number of acknowledgements — a conflict appends nothing.
 *
 * Processes share a file:// store; only one can be the writer (the engine's lease), so each
 * child repeatedly opens with takeover (fencing the previous writer), appends a few records
 * and closes. Appends of a fenced writer fail and are not acknowledged. Children record
 * every acknowledgement as one line "key seq value" in a side file (O_APPEND).
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/eventstore/od_eventstore.h"
#include "od_testutil.h"

#define NKEYS 3
static const char *KEYS[NKEYS] = {"shared/a", "shared/b", "shared/c"};

typedef struct ack {
    int key;
    uint64_t seq;
    char value[48];
} ack;

typedef struct acklist {
    ack *a;
    size_t n, cap;
    pthread_mutex_t mu;
} acklist;

static void ack_add(acklist *l, int key, uint64_t seq, const char *value)
{
    pthread_mutex_lock(&l->mu);
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->a = realloc(l->a, l->cap * sizeof *l->a);
        assert_non_null(l->a);
    }
    l->a[l->n].key = key;
    l->a[l->n].seq = seq;
    snprintf(l->a[l->n].value, sizeof l->a[l->n].value, "%s", value);
    l->n++;
    pthread_mutex_unlock(&l->mu);
}

/* Read every key back and check it against the acknowledgements. exact: record count must
 * equal the acknowledgements. */
static void verify(od_eventstore *es, const acklist *l, int exact)
{
    size_t total = 0;
    for (int k = 0; k < NKEYS; k++) {
        od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ};
        od_ev_cursor *c;
        od_err err = {0};
        assert_int_equal(od_ev_cursor_open(es, KEYS[k], strlen(KEYS[k]), &ro, &c, &err), OD_OK);
        size_t cap = 1024, n = 0;
        char **vals = calloc(cap, sizeof *vals);
        assert_non_null(vals);
        while (od_ev_cursor_valid(c)) {
            od_ev_record r;
            od_ev_cursor_record(c, &r);
            assert_int_equal(r.seq, n); /* gapless from 0 */
            if (n == cap) {
                cap *= 2;
                vals = realloc(vals, cap * sizeof *vals);
                assert_non_null(vals);
            }
            vals[n] = strndup((const char *)r.value, r.vlen);
            assert_non_null(vals[n]);
            n++;
            assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
        }
        od_ev_cursor_free(c);
        od_ev_key_info ki;
        assert_int_equal(od_ev_tail(es, KEYS[k], strlen(KEYS[k]), &ki, &err), OD_OK);
        assert_int_equal(ki.next_seq, n);
        /* every acknowledged append is there, at its sequence, with its value */
        size_t acked = 0;
        for (size_t i = 0; i < l->n; i++) {
            if (l->a[i].key != k) continue;
            acked++;
            assert_true(l->a[i].seq < n);
            if (strcmp(vals[l->a[i].seq], l->a[i].value) != 0)
                fprintf(stderr, "key %s seq %llu: stored \"%s\", acknowledged \"%s\"\n", KEYS[k],
                        (unsigned long long)l->a[i].seq, vals[l->a[i].seq], l->a[i].value);
            assert_string_equal(vals[l->a[i].seq], l->a[i].value);
        }
        /* no value twice (each append has a unique value) */
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++) assert_true(strcmp(vals[i], vals[j]) != 0);
        if (exact) assert_int_equal(acked, n);
        total += n;
        for (size_t i = 0; i < n; i++) free(vals[i]);
        free(vals);
    }
    assert_true(total > 0);
}

/* ---------------------------------------------------------------- threads */

typedef struct tctx {
    od_eventstore *es;
    acklist *acks;
    int id, iters;
    int conflicts;
} tctx;

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *thread_main(void *p)
{
    tctx *t = p;
    uint64_t rs = 0x1234567ULL * (uint64_t)(t->id + 1);
    for (int i = 0; i < t->iters; i++) {
        int two = xs(&rs) % 4 == 0;
        int k1 = (int)(xs(&rs) % NKEYS), k2 = (k1 + 1) % NKEYS;
        char v1[48], v2[48];
        snprintf(v1, sizeof v1, "t%d-%d-a", t->id, i);
        snprintf(v2, sizeof v2, "t%d-%d-b", t->id, i);
        for (;;) {
            od_ev_key_info a, b;
            od_err err = {0};
            if (od_ev_tail(t->es, KEYS[k1], strlen(KEYS[k1]), &a, &err) ||
                od_ev_tail(t->es, KEYS[k2], strlen(KEYS[k2]), &b, &err))
                fail_msg("tail: %s", err.msg);
            if (xs(&rs) % 3 == 0) usleep(100 + (useconds_t)(xs(&rs) % 400)); /* widen the race window */
            od_ev_rec_in in[2] = {
                {.key = KEYS[k1], .klen = strlen(KEYS[k1]), .value = v1, .vlen = strlen(v1),
                 .expected_seq = (int64_t)a.next_seq},
                {.key = KEYS[k2], .klen = strlen(KEYS[k2]), .value = v2, .vlen = strlen(v2),
                 .expected_seq = (int64_t)b.next_seq},
            };
            uint64_t seqs[2];
            od_ev_append_info info;
            int rc = od_ev_append(t->es, in, two ? 2 : 1, NULL, seqs, &info, &err);
            if (rc == OD_CONFLICT) {
                t->conflicts++;
                continue;
            }
            if (rc) fail_msg("append: %s", err.msg);
            if (seqs[0] != a.next_seq) fail_msg("seq %llu != expected %llu", (unsigned long long)seqs[0],
                                                (unsigned long long)a.next_seq);
            ack_add(t->acks, k1, seqs[0], v1);
            if (two) ack_add(t->acks, k2, seqs[1], v2);
            break;
        }
    }
    return NULL;
}

static char tmpdir[64];

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

static void test_threads(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/od-events-conc-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char uri[128];
    snprintf(uri, sizeof uri, "%s/store", tmpdir);
    od_ev_options o;
    od_ev_options_init(&o);
    o.tail_cache_entries = 2; /* fewer than the keys: misses go to the store */
    od_db_options dbo;
    od_db_options_init(&dbo);
    dbo.flush_interval_ms = 2;
    dbo.memtable_bytes = 8 * 1024; /* memtable flushes during the run */
    o.db = &dbo;
    od_eventstore *es;
    od_err err = {0};
    assert_int_equal(od_ev_open(uri, &o, &es, &err), OD_OK);
    enum { T = 6 };
    pthread_t th[T];
    tctx ctx[T];
    acklist acks = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int iters = (int)(150 * od_test_scale());
    if (iters < 10) iters = 10;
    for (int i = 0; i < T; i++) {
        ctx[i] = (tctx){.es = es, .acks = &acks, .id = i, .iters = iters};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &ctx[i]), 0);
    }
    int conflicts = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        conflicts += ctx[i].conflicts;
    }
    fprintf(stderr, "threads: %zu acknowledged, %d conflicts retried\n", acks.n, conflicts);
    assert_true(acks.n >= (size_t)(T * iters));
    verify(es, &acks, 1);
    /* and again after reopening */
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    assert_int_equal(od_ev_open(uri, &o, &es, &err), OD_OK);
    verify(es, &acks, 1);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    free(acks.a);
    rm_tmp();
}

/* ---------------------------------------------------------------- processes */

/* A child: `sessions` sessions, and more (up to 30 s) until it has had an append
 * acknowledged — on a loaded machine its few sessions may all be fenced or fail to open
 * before their first append, and a run without acknowledgements would check nothing. */
static void child_main(const char *uri, const char *side, int id, int sessions, int per_session)
{
    int fd = open(side, O_WRONLY | O_APPEND);
    if (fd < 0) _exit(3);
    uint64_t rs = 0x9E37ULL * (uint64_t)(id + 7);
    int n = 0, acked = 0;
    const int64_t deadline = od_test_mono_ms() + 30000;
    for (int s = 0; s < sessions || (!acked && od_test_mono_ms() < deadline); s++) {
        od_ev_options o;
        od_ev_options_init(&o);
        o.takeover = 1;
        od_db_options dbo;
        od_db_options_init(&dbo);
        dbo.flush_interval_ms = 2;
        dbo.lease_ms = 2000;
        o.db = &dbo;
        od_eventstore *es = NULL;
        od_err err = {0};
        if (od_ev_open(uri, &o, &es, &err)) {
            usleep(10000);
            continue;
        }
        for (int i = 0; i < per_session; i++) {
            int k = (int)(xs(&rs) % NKEYS);
            od_ev_key_info ki;
            if (od_ev_tail(es, KEYS[k], strlen(KEYS[k]), &ki, &err)) break;
            char v[48];
            snprintf(v, sizeof v, "p%d-%d", id, n++);
            od_ev_rec_in in = {.key = KEYS[k], .klen = strlen(KEYS[k]), .value = v, .vlen = strlen(v),
                               .expected_seq = (int64_t)ki.next_seq};
            uint64_t seq;
            int rc = od_ev_append(es, &in, 1, NULL, &seq, NULL, &err);
            if (rc == OD_CONFLICT) continue;
            if (rc) break; /* fenced by another process: not acknowledged */
            if (seq != ki.next_seq) _exit(4);
            char line[96];
            int ll = snprintf(line, sizeof line, "%d %llu %s\n", k, (unsigned long long)seq, v);
            if (write(fd, line, (size_t)ll) != ll) _exit(3);
            acked++;
        }
        od_ev_close(es, NULL);
    }
    close(fd);
    _exit(0);
}

static void test_processes(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/od-events-proc-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char uri[128], side[128];
    snprintf(uri, sizeof uri, "%s/store", tmpdir);
    snprintf(side, sizeof side, "%s/acks", tmpdir);
    int fd = open(side, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    close(fd);
    /* create the store first */
    od_eventstore *es;
    od_err err = {0};
    assert_int_equal(od_ev_open(uri, NULL, &es, &err), OD_OK);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    enum { P = 3 };
    int sessions = (int)(10 * od_test_scale());
    if (sessions < 2) sessions = 2;
    pid_t pids[P];
    for (int i = 0; i < P; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) child_main(uri, side, i, sessions, 15);
    }
    for (int i = 0; i < P; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    /* read the acknowledgements */
    acklist acks = {.mu = PTHREAD_MUTEX_INITIALIZER};
    FILE *f = fopen(side, "r");
    assert_non_null(f);
    int k;
    unsigned long long seq;
    char v[48];
    while (fscanf(f, "%d %llu %47s", &k, &seq, v) == 3) {
        assert_true(k >= 0 && k < NKEYS);
        /* no two acknowledgements for the same (key, seq) */
        for (size_t i = 0; i < acks.n; i++) assert_false(acks.a[i].key == k && acks.a[i].seq == seq);
        ack_add(&acks, k, seq, v);
    }
    fclose(f);
    fprintf(stderr, "processes: %zu acknowledged\n", acks.n);
    assert_true(acks.n > 0);
    od_ev_options o;
    od_ev_options_init(&o);
    o.takeover = 1;
    assert_int_equal(od_ev_open(uri, &o, &es, &err), OD_OK);
    verify(es, &acks, 0);
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    free(acks.a);
    rm_tmp();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
