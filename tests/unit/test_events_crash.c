/*
 * test_events_crash.c — crash test of the event store: a child process
 * (tests/tools/events_crash_child) appends with expected_seq from three threads and is
 * SIGKILLed at a random moment (after its first acknowledgement of the round), several times in a row on the same file:// store; each new
 * child takes over from the dead one. Afterwards every acknowledged record (logged by the
 * child after od_ev_append returned) must be readable at its sequence with its value,
 * every key's sequences must be gapless from 0, and no value may appear twice.
 */
#include <fcntl.h>
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

#include "../../core/eventstore/od_eventstore.h"
#include "od_testutil.h"

#define NKEYS 4
static const char *KEYS[NKEYS] = {"crash/a", "crash/b", "crash/c", "crash/d"};
static char child_path[4096];

typedef struct ack {
    int key;
    unsigned long long seq;
    char value[64];
} ack;

static void test_crash(void **state)
{
    (void)state;
    char dir[] = "/tmp/od-events-crash-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char uri[128], side[128];
    snprintf(uri, sizeof uri, "%s/store", dir);
    snprintf(side, sizeof side, "%s/acks", dir);
    int rounds = (int)(8 * od_test_scale());
    if (rounds < 3) rounds = 3;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char sd[32];
            snprintf(sd, sizeof sd, "%d", r + 1);
            execl(child_path, child_path, uri, side, sd, (char *)NULL);
            _exit(127);
        }
        /* let this child acknowledge something first (opening with takeover takes a while,
         * longer under ASan and on a loaded machine: up to 30 s), then kill it at a random
         * moment of its appending. A child that exits by itself meanwhile has failed. */
        struct stat sb;
        off_t before = stat(side, &sb) == 0 ? sb.st_size : 0;
        int st, exited = 0;
        const int64_t deadline = od_test_mono_ms() + 30000;
        while (od_test_mono_ms() < deadline) {
            if (stat(side, &sb) == 0 && sb.st_size > before) break;
            pid_t w = waitpid(pid, &st, WNOHANG);
            assert_true(w == 0 || w == pid);
            if (w == pid) {
                exited = 1;
                break;
            }
            od_test_sleep_ms(10);
        }
        if (!exited) {
            od_test_sleep_ms(rand() % 300);
            kill(pid, SIGKILL);
            assert_int_equal(waitpid(pid, &st, 0), pid);
        }
        if (!WIFSIGNALED(st)) fprintf(stderr, "child exited by itself with status %d\n", WEXITSTATUS(st));
        assert_true(WIFSIGNALED(st));
    }
    /* the acknowledgements */
    ack *acks = NULL;
    size_t n = 0, cap = 0;
    FILE *f = fopen(side, "r");
    assert_non_null(f);
    ack a;
    while (fscanf(f, "%d %llu %63s", &a.key, &a.seq, a.value) == 3) {
        assert_true(a.key >= 0 && a.key < NKEYS);
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            acks = realloc(acks, cap * sizeof *acks);
            assert_non_null(acks);
        }
        acks[n++] = a;
    }
    fclose(f);
    fprintf(stderr, "%d kills, %zu acknowledged records\n", rounds, n);
    assert_true(n > 0);
    od_ev_options o;
    od_ev_options_init(&o);
    o.takeover = 1;
    od_eventstore *es;
    od_err err = {0};
    int rc = od_ev_open(uri, &o, &es, &err);
    if (rc) fprintf(stderr, "open: %s\n", err.msg);
    assert_int_equal(rc, OD_OK);
    for (int k = 0; k < NKEYS; k++) {
        od_ev_read_opts ro = {.from = OD_EV_FROM_SEQ};
        od_ev_cursor *c;
        assert_int_equal(od_ev_cursor_open(es, KEYS[k], strlen(KEYS[k]), &ro, &c, &err), OD_OK);
        size_t vn = 0, vcap = 256;
        char **vals = malloc(vcap * sizeof *vals);
        assert_non_null(vals);
        while (od_ev_cursor_valid(c)) {
            od_ev_record r;
            od_ev_cursor_record(c, &r);
            assert_int_equal(r.seq, vn);
            if (vn == vcap) {
                vcap *= 2;
                vals = realloc(vals, vcap * sizeof *vals);
                assert_non_null(vals);
            }
            vals[vn] = strndup((const char *)r.value, r.vlen);
            assert_non_null(vals[vn]);
            vn++;
            assert_int_equal(od_ev_cursor_next(c, &err), OD_OK);
        }
        od_ev_cursor_free(c);
        for (size_t i = 0; i < n; i++) {
            if (acks[i].key != k) continue;
            if (acks[i].seq >= vn) fprintf(stderr, "lost: key %s seq %llu (%zu records)\n", KEYS[k], acks[i].seq, vn);
            assert_true(acks[i].seq < vn);
            assert_string_equal(vals[acks[i].seq], acks[i].value);
        }
        for (size_t i = 0; i < vn; i++)
            for (size_t j = i + 1; j < vn; j++) assert_true(strcmp(vals[i], vals[j]) != 0);
        for (size_t i = 0; i < vn; i++) free(vals[i]);
        free(vals);
    }
    assert_int_equal(od_ev_close(es, &err), OD_OK);
    free(acks);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(child_path, sizeof child_path, "%s/../tools/events_crash_child", dirname(self));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
