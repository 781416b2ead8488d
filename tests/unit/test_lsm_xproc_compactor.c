/*
 * test_lsm_xproc_compactor.c — compaction handed between a writer (compactor=1) and a
 * compactor process, both ways (docs/architecture.md, "Fencing and the lease": the compactor
 * lease).
 *
 * Before the compactor lease, a writer whose in-process compaction a compactor process had
 * fenced never compacted again: when that process exited or died, nobody compacted, L0 grew
 * to l0_max_tables and writes failed with OD_BUSY after write_stall_timeout_ms.
 *
 *   clean_handoff (mem://, file://): a writer with compactor=1 compacts; a compactor process
 *     (a compactor_only handle on its own store handle) opens, and the writer's next
 *     compaction is fenced: it stops compacting (stats.compacting 0) and L0 grows past the
 *     trigger while the compactor lives (it compacts only when asked here), which still
 *     compacts fine (not fenced back). The compactor closes cleanly (its lease released): the
 *     writer takes compaction back within a second or so, bumps the compactor epoch, and L0
 *     drains below the trigger. Every key equals the model at every stage and after reopening.
 *   killed_compactor (file://): the compactor is a forked child process with a 1 s lease.
 *     While it lives (well past its lease: it renews) the writer leaves compaction to it; the
 *     child is SIGKILLed (no clean close, its lease stays "held" until it expires) and the
 *     writer takes compaction back after the expiry, and L0 drains.
 *   stalled_writer (mem://): the writer (l0_max_tables 4) is left with nobody compacting — the
 *     compactor process compacts only when asked — until L0 is at its bound and a thread's
 *     writes and od_db_flush stall there; the compactor closes, and the stalled writes go on
 *     (the writer took compaction back): no OD_BUSY, every key equals the model.
 *   open_race (mem://): a second compactor (takeover) is held between its lease write and its
 *     epoch commit while the first one closes; the writer, looking at the lease meanwhile,
 *     must not take compaction back (the lease is written first for exactly this), and the new
 *     compactor, once its commit is let go, compacts unfenced.
 *   second_refused (mem://): a second compactor process is refused (OD_BUSY naming the lease
 *     and takeover=1) while the first is live; with takeover=1 it opens and fences the first
 *     (OD_FENCED "newer compactor"), whose close does not release the new one's lease (a third
 *     is refused too) ; a writer with compactor=1 opening while a compactor is live leaves it
 *     alone (does not compact, does not fence it) and takes over once the last one closed.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/od_db.h"
#include "od_coding.h"
#include "od_holdstore.h"
#include "od_lsmtest.h"
#include "od_testutil.h"

#define DEADLINE_MS 30000
#define TRIGGER 2
#define PER_ROUND 120

/* ---------------- helpers ---------------- */

static int g_max_key; /* the model: keys [0, g_max_key) hold od_lsmtest_val(i) */

static void writer_opts(od_db_options *o)
{
    od_db_options_init(o);
    o->flush_interval_ms = 2;
    o->compactor = 1;
    o->l0_compaction_trigger = TRIGGER;
    o->l0_max_tables = 64;
    o->gc_interval_ms = 0;
    o->lease_ms = 1000; /* a deferring writer looks at the compactor lease every 250 ms */
}

static void compactor_opts(od_db_options *o, uint32_t lease_ms)
{
    od_db_options_init(o);
    o->compactor_only = 1;
    o->follow_interval_ms = 5; /* notices the writer's commits quickly */
    o->flush_interval_ms = 5;
    o->gc_interval_ms = 0;
    o->l0_compaction_trigger = 1000; /* compacts only when asked: L0 shows who compacts */
    o->lease_ms = lease_ms;
}

/* One round: overwrite the last half round's keys and add new ones, then flush to L0. */
static void round_write(od_db *w)
{
    od_err err;
    int from = g_max_key > PER_ROUND / 2 ? g_max_key - PER_ROUND / 2 : 0;
    if (od_lsmtest_write_range(w, from, g_max_key + PER_ROUND / 2, 40, &err)) fail_msg("write: %s", err.msg);
    g_max_key += PER_ROUND / 2;
    if (od_db_flush(w, 1, &err)) fail_msg("flush: %s", err.msg);
}

static void check_model(od_db *db, const char *when)
{
    od_lsmtest_expect_range(db, 0, g_max_key, when);
}

static od_db *open_db(const char *uri, const od_db_options *o, const char *what)
{
    od_db *db;
    od_err err;
    if (od_db_open(uri, o, &db, &err)) fail_msg("open %s: %s", what, err.msg);
    return db;
}

/* A writer with writer_opts on a fresh model (g_max_key 0). */
static od_db *open_writer(const char *uri)
{
    g_max_key = 0;
    od_db_options o;
    writer_opts(&o);
    return open_db(uri, &o, "writer");
}

static od_db_stats stats(od_db *db)
{
    od_db_stats st;
    od_db_get_stats(db, &st);
    return st;
}

/* Wait (bounded) until the writer compacts (want=1) or leaves it (want=0); with want=1 also
 * until L0 is below the trigger. Returns the ms waited. */
static int64_t wait_compacting(od_db *w, int want, const char *what)
{
    int64_t t0 = od_test_mono_ms();
    for (;;) {
        od_db_stats st = stats(w);
        if (st.compacting == want && (!want || st.l0_count < TRIGGER)) return od_test_mono_ms() - t0;
        if (od_test_mono_ms() - t0 > DEADLINE_MS)
            fail_msg("%s: after %d ms compacting=%d (want %d), L0 %llu", what, DEADLINE_MS, st.compacting, want,
                     (unsigned long long)st.l0_count);
        od_test_sleep_ms(5);
    }
}

/* Flush rounds until the writer's own compaction is fenced by the compactor process. */
static void write_until_deferring(od_db *w)
{
    int64_t t0 = od_test_mono_ms();
    while (stats(w).compacting) {
        round_write(w);
        if (od_test_mono_ms() - t0 > DEADLINE_MS) fail_msg("the writer kept compacting beside a compactor process");
        od_test_sleep_ms(20);
    }
}

/* The writer leaves compaction alone for `ms` (a window, not a wait for a condition): L0 grows
 * past the trigger and no compaction of the writer's happens. */
static void assert_writer_idle(od_db *w, int rounds, int ms)
{
    uint64_t c0 = stats(w).compactions;
    for (int r = 0; r < rounds; r++) round_write(w);
    od_test_sleep_ms(ms);
    od_db_stats st = stats(w);
    assert_int_equal(st.compacting, 0);
    assert_int_equal(st.compactions, c0);
    if (st.l0_count < (uint64_t)rounds)
        fail_msg("L0 holds %llu after %d rounds: somebody compacted", (unsigned long long)st.l0_count, rounds);
}

/* The end of every scenario: the writer equals the model (`when`), closes cleanly, and a
 * read-only reopen equals it too. */
static void close_and_reopen_check(od_db *w, const char *uri, const char *when)
{
    od_err err;
    check_model(w, when);
    assert_int_equal(od_db_close(w, &err), OD_OK);
    od_db_options ro;
    od_db_options_init(&ro);
    ro.read_only = 1;
    od_db *r = open_db(uri, &ro, "read-only (reopening)");
    check_model(r, "after reopening");
    assert_int_equal(od_db_close(r, &err), OD_OK);
}

/* After the writer took compaction back: the model holds, and two more rounds bring L0
 * to the trigger, which the writer compacts below again. */
static void writer_compacts_again(od_db *w)
{
    check_model(w, "after taking compaction back");
    round_write(w);
    round_write(w);
    wait_compacting(w, 1, "the writer compacting after taking it back");
}

/* ---------------- clean_handoff ---------------- */

static void run_clean_handoff(const char *uri)
{
    od_err err;
    od_db *w = open_writer(uri);
    for (int r = 0; r < 3; r++) round_write(w);
    wait_compacting(w, 1, "the writer compacting itself");
    /* the compaction counter goes up just after the commit installs the new view (which is
     * what wait_compacting saw): wait for it, bounded (a flake under ASan otherwise) */
    int64_t c0 = od_test_mono_ms();
    while (stats(w).compactions < 1 && od_test_mono_ms() - c0 < DEADLINE_MS) od_test_sleep_ms(2);
    assert_true(stats(w).compactions >= 1);
    check_model(w, "writer alone");

    od_db_options co;
    compactor_opts(&co, 3000); /* its clean close, not the lease's expiry, hands compaction back */
    od_db *c = open_db(uri, &co, "compactor");
    od_db_stats cs = stats(c);
    assert_int_equal(cs.compacting, 1);
    assert_true(cs.compactor_epoch > stats(w).compactor_epoch);
    write_until_deferring(w);
    assert_writer_idle(w, TRIGGER + 2, 800); /* 3 looks at the lease: live */
    check_model(w, "writer beside a compactor");
    /* the compactor is not fenced back: it compacts, and the writer follows */
    if (od_db_compact(c, &err)) fail_msg("compactor: %s", err.msg);
    assert_int_equal(stats(c).compacting, 1);
    for (int r = 0; r < TRIGGER + 1; r++) round_write(w); /* L0 at the trigger again */
    assert_int_equal(stats(w).compacting, 0);
    check_model(w, "after the compactor's compaction");

    /* clean close: the lease is released and the writer takes compaction back at once */
    uint64_t cep = stats(c).compactor_epoch;
    assert_int_equal(od_db_close(c, &err), OD_OK);
    int64_t ms = wait_compacting(w, 1, "the writer taking compaction back after a clean close");
    print_message("      writer resumed compacting %lld ms after the compactor closed\n", (long long)ms);
    assert_true(ms < 5000); /* promptly: the writer looks every 250 ms */
    od_db_stats st = stats(w);
    assert_int_equal(st.compaction_reclaims, 1);
    assert_true(st.compactor_epoch > cep);
    writer_compacts_again(w);
    close_and_reopen_check(w, uri, "writer compacting again");
}

static void test_clean_handoff_mem(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-handoff", run_clean_handoff);
}

static void test_clean_handoff_file(void **state)
{
    (void)state;
    od_test_run_on_file("od-xproc-handoff", run_clean_handoff);
}

/* ---------------- killed_compactor ---------------- */

static void run_killed(const char *uri)
{
    od_db *w = open_writer(uri);
    for (int r = 0; r < 3; r++) round_write(w);
    wait_compacting(w, 1, "the writer compacting itself");

    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        od_db_options co;
        compactor_opts(&co, 1000);
        od_db *c;
        od_err e;
        char ok = 'x';
        if (od_db_open(uri, &co, &c, &e)) {
            fprintf(stderr, "child: open compactor: %s\n", e.msg);
            ok = 'e';
        }
        if (write(pfd[1], &ok, 1) != 1) _exit(3);
        for (;;) pause(); /* compacts when asked (never), renews its lease, until SIGKILL */
    }
    close(pfd[1]);
    char ok = 0;
    ssize_t n;
    do {
        n = read(pfd[0], &ok, 1); /* blocks until the child opened (or died: 0) */
    } while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n != 1 || ok != 'x') {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the compactor child did not open");
    }
    write_until_deferring(w);
    /* well past the child's 1000 ms lease: it renews, so the writer keeps leaving it alone */
    assert_writer_idle(w, TRIGGER + 1, 2000);
    check_model(w, "writer beside the child compactor");

    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    int64_t ms = wait_compacting(w, 1, "the writer taking compaction back after the compactor died");
    print_message("      writer resumed compacting %lld ms after the compactor was killed (its lease: 1000 ms)\n",
                  (long long)ms);
    assert_int_equal(stats(w).compaction_reclaims, 1);
    writer_compacts_again(w);
    close_and_reopen_check(w, uri, "writer compacting again");
}

static void test_killed_compactor(void **state)
{
    (void)state;
    od_test_run_on_file("od-xproc-killed", run_killed);
}

/* ---------------- stalled_writer ---------------- */

typedef struct stall_writer {
    od_db *w;
    int from, rounds;
    _Atomic int done;
    int rc;
    od_err err;
} stall_writer;

/* Rounds of writes and memtable flushes that stall at the L0 bound until somebody compacts. */
static void *stall_writer_main(void *arg)
{
    stall_writer *s = arg;
    s->rc = OD_OK;
    for (int r = 0; r < s->rounds && s->rc == OD_OK; r++) {
        int from = s->from + r * PER_ROUND;
        s->rc = od_lsmtest_write_range(s->w, from, from + PER_ROUND, 40, &s->err);
        if (s->rc == OD_OK) s->rc = od_db_flush(s->w, 1, &s->err);
    }
    atomic_store(&s->done, 1);
    return NULL;
}

static void run_stalled(const char *uri)
{
    g_max_key = 0;
    od_err err;
    od_db_options o;
    writer_opts(&o);
    o.l0_max_tables = TRIGGER + 2; /* a small bound: reached after a few rounds */
    o.write_stall_timeout_ms = 60000;
    od_db *w = open_db(uri, &o, "writer");
    od_db_options co;
    compactor_opts(&co, 3000);
    od_db *c = open_db(uri, &co, "compactor");
    /* the writer opened first and compacts until the compactor fences it */
    write_until_deferring(w);
    check_model(w, "writer beside a compactor");

    /* writes and flushes pile up at the L0 bound: nobody compacts (the compactor only when asked) */
    stall_writer sw = {.w = w, .from = g_max_key, .rounds = 6};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stall_writer_main, &sw), 0);
    int64_t t0 = od_test_mono_ms();
    while (!stats(w).l0_stalled && !atomic_load(&sw.done) && od_test_mono_ms() - t0 < DEADLINE_MS) od_test_sleep_ms(5);
    od_db_stats st = stats(w);
    if (!st.l0_stalled) fail_msg("the writer never reached the L0 bound (done %d, rc %d)", atomic_load(&sw.done), sw.rc);
    assert_int_equal(st.l0_count, (uint64_t)(TRIGGER + 2));
    assert_int_equal(st.compacting, 0);
    assert_false(atomic_load(&sw.done)); /* its od_db_flush waits for compaction */

    /* the compactor process goes away: the writer takes compaction back and the stall ends */
    assert_int_equal(od_db_close(c, &err), OD_OK);
    t0 = od_test_mono_ms();
    while (!atomic_load(&sw.done) && od_test_mono_ms() - t0 < DEADLINE_MS) od_test_sleep_ms(5);
    int64_t ms = od_test_mono_ms() - t0;
    if (!atomic_load(&sw.done)) fail_msg("the stalled writes never finished after the compactor closed");
    assert_int_equal(pthread_join(t, NULL), 0);
    if (sw.rc) fail_msg("stalled write: %s", sw.err.msg);
    print_message("      stalled writes went on %lld ms after the compactor closed\n", (long long)ms);
    g_max_key = sw.from + sw.rounds * PER_ROUND;
    assert_int_equal(stats(w).compacting, 1);
    assert_true(stats(w).compaction_reclaims >= 1);
    close_and_reopen_check(w, uri, "after the stall");
}

static void test_stalled_writer(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-stalled", run_stalled);
}

/* ---------------- open_race ---------------- */

typedef struct open_job {
    const char *uri;
    od_store *store;
    od_db_options o;
    od_db *db;
    int rc;
    od_err err;
} open_job;

static void *open_main(void *arg)
{
    open_job *j = arg;
    j->rc = od_db_open_store(j->store, &j->o, &j->db, &j->err);
    return NULL;
}

static uint64_t clease_epoch(od_store *s)
{
    od_buf b = {0};
    od_err err;
    if (od_store_get(s, "compactor-lease", &b, NULL, &err)) fail_msg("compactor lease: %s", err.msg);
    assert_int_equal(b.len, 52);
    uint64_t e = od_get_u64(b.data + 8);
    od_buf_free(&b);
    return e;
}

static void run_open_race(const char *uri)
{
    od_err err;
    od_db *w = open_writer(uri); /* looks at the compactor lease every 250 ms while it leaves compaction */
    od_db_options co;
    compactor_opts(&co, 3000);
    od_db *c0 = open_db(uri, &co, "compactor 0");
    write_until_deferring(w);
    uint64_t ep0 = stats(c0).compactor_epoch;

    /* compactor 1 opens (takeover) and stops between its lease write and its epoch commit */
    od_hold_store *h = od_hold_open(uri, OD_PUT_IF_ABSENT, "manifest/", 1);
    od_lsmtest_hold_arm(h);
    open_job j = {.uri = uri, .store = &h->base, .o = co};
    j.o.takeover = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, open_main, &j), 0);
    if (!od_lsmtest_hold_wait(h, DEADLINE_MS)) fail_msg("compactor 1 never reached its epoch commit");
    assert_int_equal(clease_epoch(h->inner), ep0 + 1); /* its lease is written, its epoch not yet */
    /* compactor 0 goes away: the lease is compactor 1's (live), not released by 0's close */
    int rc = od_db_close(c0, &err);
    assert_true(rc == OD_OK || rc == OD_FENCED); /* its renewal may have met compactor 1's lease */
    /* the writer looks at the lease several times meanwhile: it must not take compaction back
     * (compactor 1's epoch is not even committed yet: without the lease first it would) */
    od_test_sleep_ms(1200);
    od_db_stats st = stats(w);
    assert_int_equal(st.compacting, 0);
    assert_int_equal(st.compaction_reclaims, 0);

    od_lsmtest_hold_release(h);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (j.rc) fail_msg("open compactor 1: %s", j.err.msg);
    od_db *c1 = j.db;
    assert_int_equal(stats(c1).compactor_epoch, ep0 + 1);
    round_write(w);
    if (od_db_compact(c1, &err)) fail_msg("compactor 1 (must not be fenced): %s", err.msg);
    assert_int_equal(stats(c1).compacting, 1);
    assert_int_equal(stats(w).compacting, 0);
    check_model(w, "beside compactor 1");
    assert_int_equal(od_db_close(c1, &err), OD_OK);
    od_store_close(&h->base);
    for (int r = 0; r < TRIGGER; r++) round_write(w);
    wait_compacting(w, 1, "the writer taking compaction back after compactor 1 closed");
    assert_int_equal(stats(w).compaction_reclaims, 1);
    close_and_reopen_check(w, uri, "writer compacting");
}

static void test_open_race(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-race", run_open_race);
}

/* ---------------- second_refused ---------------- */

static void run_second_refused(const char *uri)
{
    g_max_key = 0;
    od_err err;
    od_db_options o;
    writer_opts(&o);
    o.compactor = 0; /* the first writer only writes */
    od_db *w0 = open_db(uri, &o, "writer (compactor=0)");
    for (int r = 0; r < 3; r++) round_write(w0);
    assert_int_equal(od_db_close(w0, &err), OD_OK);

    od_db_options co;
    compactor_opts(&co, 3000);
    od_db *c1 = open_db(uri, &co, "compactor 1"), *c2 = NULL, *c3 = NULL;
    uint64_t ep1 = stats(c1).compactor_epoch;

    /* a writer with compactor=1 opening now leaves the live compactor alone */
    writer_opts(&o);
    od_db *w = open_db(uri, &o, "writer");
    assert_int_equal(stats(w).compacting, 0);
    assert_int_equal(stats(w).compactor_epoch, ep1); /* not bumped: c1 is not fenced */
    if (od_db_compact(c1, &err)) fail_msg("compactor 1 beside the new writer: %s", err.msg);
    int rc = od_db_compact(w, &err); /* asked to compact, the writer defers too */
    assert_int_equal(rc, OD_FENCED);
    assert_non_null(strstr(err.msg, "compactor lease is live"));
    check_model(w, "writer opened beside a compactor");

    /* a second compactor is refused, clearly */
    rc = od_db_open(uri, &co, &c2, &err);
    if (rc == OD_OK) od_db_close(c2, &err);
    assert_int_equal(rc, OD_BUSY);
    if (!strstr(err.msg, "compactor lease held") || !strstr(err.msg, "takeover=1"))
        fail_msg("unclear refusal: %s", err.msg);
    /* ... unless it asks to take over */
    co.takeover = 1;
    c2 = open_db(uri, &co, "compactor 2 with takeover");
    co.takeover = 0;
    assert_true(stats(c2).compactor_epoch > ep1);
    rc = od_db_compact(c1, &err);
    assert_int_equal(rc, OD_FENCED);
    assert_non_null(strstr(err.msg, "newer compactor"));
    int64_t t0 = od_test_mono_ms();
    while (stats(c1).compacting && od_test_mono_ms() - t0 < DEADLINE_MS) od_test_sleep_ms(5);
    assert_int_equal(stats(c1).compacting, 0);
    rc = od_db_close(c1, &err); /* fenced: its close must not release c2's lease */
    assert_true(rc == OD_OK || rc == OD_FENCED);
    rc = od_db_open(uri, &co, &c3, &err);
    if (rc == OD_OK) od_db_close(c3, &err);
    assert_int_equal(rc, OD_BUSY);
    round_write(w);
    if (od_db_compact(c2, &err)) fail_msg("compactor 2: %s", err.msg);
    check_model(w, "after compactor 2 compacted");
    assert_int_equal(stats(w).compacting, 0);

    /* the live one closes: a new one opens without takeover ... */
    assert_int_equal(od_db_close(c2, &err), OD_OK);
    c3 = open_db(uri, &co, "compactor 3 after the others closed");
    assert_int_equal(od_db_close(c3, &err), OD_OK);
    /* ... and with none left the writer takes compaction back */
    for (int r = 0; r < TRIGGER; r++) round_write(w);
    wait_compacting(w, 1, "the writer taking compaction back");
    assert_true(stats(w).compaction_reclaims >= 1);
    close_and_reopen_check(w, uri, "writer compacting");
}

static void test_second_refused(void **state)
{
    (void)state;
    od_test_run_on_mem("xproc-second", run_second_refused);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_handoff_mem),
        cmocka_unit_test(test_clean_handoff_file),
        cmocka_unit_test(test_killed_compactor),
        cmocka_unit_test(test_stalled_writer),
        cmocka_unit_test(test_open_race),
        cmocka_unit_test(test_second_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
