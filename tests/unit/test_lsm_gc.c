/*
 * test_lsm_gc.c — garbage collection deletes exactly what nobody needs.
 *
 * Builds a store with several L0 flushes and a compaction (so old collections and manifest
 * versions become unreferenced), plants an orphan collection, a checkpoint and a live
 * snapshot, and checks:
 *   - while everything is younger than gc_min_age_ms, GC deletes nothing;
 *   - once older: old manifest versions, unreferenced collections (the orphan, the compacted
 *     L0s) and WAL objects below the replay point are deleted; the latest manifest, every
 *     collection it or a checkpoint-pinned version lists, the collections of a live
 *     snapshot, and the newest WAL object stay; all data (latest, snapshot) stays readable;
 *   - deleting the checkpoint lets the next pass reclaim what only it pinned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lsm/manifest.h"
#include "lsm/od_db.h"

typedef struct names {
    char k[512][96];
    int n;
} names;

static int collect(void *ctx, const char *key, const od_obj_meta *meta)
{
    (void)meta;
    names *n = ctx;
    if (n->n < 512) snprintf(n->k[n->n++], 96, "%s", key);
    return 0;
}

static void list(od_store *s, const char *prefix, names *n)
{
    n->n = 0;
    od_err err;
    assert_int_equal(od_store_list(s, prefix, NULL, collect, n, &err), OD_OK);
}

static int has(const names *n, const char *key)
{
    for (int i = 0; i < n->n; i++)
        if (strcmp(n->k[i], key) == 0) return 1;
    return 0;
}

static int total_objects(od_store *s)
{
    names n;
    int t = 0;
    list(s, "manifest/", &n);
    t += n.n;
    list(s, "sst/", &n);
    t += n.n;
    list(s, "wal/", &n);
    return t + n.n;
}

/* Every collection listed by `m` exists. */
static void assert_manifest_complete(od_store *s, const od_manifest *m)
{
    names ssts;
    list(s, "sst/", &ssts);
    char key[96];
    for (size_t i = 0; i < m->nl0; i++) {
        od_sst_key(key, sizeof key, m->l0[i].id);
        if (!has(&ssts, key)) fail_msg("referenced %s was deleted", key);
    }
    for (size_t r = 0; r < m->nruns; r++)
        for (size_t i = 0; i < m->runs[r].n; i++) {
            od_sst_key(key, sizeof key, m->runs[r].ssts[i].id);
            if (!has(&ssts, key)) fail_msg("referenced %s was deleted", key);
        }
}

static void write_keys(od_db *db, int from, int to, const char *tag)
{
    od_batch *b = od_batch_new();
    assert_non_null(b);
    for (int i = from; i < to; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "k%05d", i);
        snprintf(v, sizeof v, "%s-%d", tag, i);
        assert_int_equal(od_batch_put(b, k, strlen(k), v, strlen(v)), OD_OK);
    }
    od_err err;
    assert_int_equal(od_db_write(db, b, 1, NULL, &err), OD_OK);
    od_batch_free(b);
}

static void check_keys(od_db *db, const od_snapshot *snap, int from, int to, const char *tag)
{
    for (int i = from; i < to; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "k%05d", i);
        snprintf(v, sizeof v, "%s-%d", tag, i);
        od_buf got = {0};
        od_err err;
        if (od_db_get(db, snap, k, strlen(k), &got, &err)) fail_msg("%s missing", k);
        assert_int_equal(got.len, strlen(v));
        assert_memory_equal(got.data, v, got.len);
        od_buf_free(&got);
    }
}

static void test_gc(void **state)
{
    (void)state;
    od_store *s;
    od_err err;
    char uri[64];
    snprintf(uri, sizeof uri, "mem://lsm-gc-%d", (int)getpid());
    assert_int_equal(od_store_open(uri, &s, &err), OD_OK);
    od_db_options o;
    od_db_options_init(&o);
    o.flush_interval_ms = 2;
    o.compactor = 0;
    o.gc_interval_ms = 0;
    o.gc_min_age_ms = 3600 * 1000;
    od_db *db;
    assert_int_equal(od_db_open_store(s, &o, &db, &err), OD_OK);
    for (int r = 0; r < 4; r++) {
        write_keys(db, r * 100, r * 100 + 100, "one");
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    uint64_t ckpt;
    assert_int_equal(od_db_checkpoint_create(db, 0, &ckpt, &err), OD_OK);
    od_manifest pinned;
    assert_int_equal(od_manifest_load_latest(s, 0, &pinned, &err), OD_OK);
    assert_int_equal(pinned.nl0, 4);
    assert_int_equal(od_db_compact(db, &err), OD_OK); /* the 4 L0s are now only pinned by the checkpoint */
    for (int r = 0; r < 2; r++) {
        write_keys(db, r * 100, r * 100 + 50, "two");
        assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    }
    od_snapshot *snap;
    assert_int_equal(od_db_snapshot(db, &snap, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK); /* the snapshot's tables are unreferenced now */
    write_keys(db, 0, 10, "three");
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    const char *orphan = "sst/0000000000000000000000orphan.sst";
    assert_int_equal(od_store_put(s, orphan, "junk", 4, OD_PUT_ALWAYS, NULL, NULL, &err), OD_OK);

    /* everything is young: nothing goes */
    int before = total_objects(s);
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    assert_int_equal(total_objects(s), before);
    od_db_stats st;
    od_db_get_stats(db, &st);
    assert_int_equal(st.gc_deleted, 0);

    /* now everything is old enough */
    od_snapshot_release(snap);
    assert_int_equal(od_db_close(db, &err), OD_OK);
    o.gc_min_age_ms = 200;
    assert_int_equal(od_db_open_store(s, &o, &db, &err), OD_OK);
    /* a live snapshot in this handle over the current tables */
    assert_int_equal(od_db_snapshot(db, &snap, &err), OD_OK);
    write_keys(db, 0, 10, "four"); /* after the snapshot */
    assert_int_equal(od_db_flush(db, 1, &err), OD_OK);
    assert_int_equal(od_db_compact(db, &err), OD_OK);
    usleep(300 * 1000);
    names wal_before;
    list(s, "wal/", &wal_before);
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    od_db_get_stats(db, &st);
    assert_true(st.gc_deleted > 0);

    od_manifest latest;
    assert_int_equal(od_manifest_load_latest(s, 0, &latest, &err), OD_OK);
    names n;
    list(s, "manifest/", &n);
    /* the latest and the checkpoint-pinned version remain, the others went */
    char key[96];
    od_manifest_key(key, sizeof key, latest.version);
    assert_true(has(&n, key));
    od_manifest_key(key, sizeof key, pinned.version);
    assert_true(has(&n, key));
    assert_int_equal(n.n, 2);
    assert_manifest_complete(s, &latest);
    assert_manifest_complete(s, &pinned);
    list(s, "sst/", &n);
    assert_false(has(&n, orphan));
    /* WAL: below the replay point gone, the newest one kept */
    names w;
    list(s, "wal/", &w);
    assert_true(w.n >= 1);
    assert_true(w.n < wal_before.n);
    assert_string_equal(w.k[w.n - 1], wal_before.k[wal_before.n - 1]);
    char first_needed[64];
    /* (a checkpoint-pinned version keeps the WAL from its own replay point) */
    uint64_t need = latest.wal_replay_from < pinned.wal_replay_from ? latest.wal_replay_from : pinned.wal_replay_from;
    od_wal_key(first_needed, sizeof first_needed, need);
    for (int i = 0; i < w.n; i++) assert_true(strcmp(w.k[i], first_needed) >= 0 || i == w.n - 1);
    /* data: latest and snapshot */
    check_keys(db, NULL, 0, 10, "four");
    check_keys(db, NULL, 10, 50, "two");
    check_keys(db, NULL, 50, 100, "one");
    check_keys(db, NULL, 300, 400, "one");
    check_keys(db, snap, 0, 10, "three");
    check_keys(db, snap, 100, 150, "two");
    od_snapshot_release(snap);

    /* dropping the checkpoint frees what it pinned */
    int sst_with_ckpt = n.n;
    assert_int_equal(od_db_checkpoint_delete(db, ckpt, &err), OD_OK);
    assert_int_equal(od_db_checkpoint_delete(db, ckpt, &err), OD_NOTFOUND);
    usleep(300 * 1000);
    assert_int_equal(od_db_gc(db, &err), OD_OK);
    list(s, "sst/", &n);
    assert_true(n.n < sst_with_ckpt);
    od_manifest_free(&latest);
    assert_int_equal(od_manifest_load_latest(s, 0, &latest, &err), OD_OK);
    assert_manifest_complete(s, &latest);
    assert_int_equal(od_db_close(db, &err), OD_OK);

    /* a fresh handle reads everything */
    assert_int_equal(od_db_open_store(s, &o, &db, &err), OD_OK);
    check_keys(db, NULL, 0, 10, "four");
    check_keys(db, NULL, 10, 50, "two");
    check_keys(db, NULL, 150, 400, "one");
    assert_int_equal(od_db_close(db, &err), OD_OK);
    od_manifest_free(&latest);
    od_manifest_free(&pinned);
    od_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gc)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
