/*
 * bench_requests.c — object-store requests per storage-engine operation, printed as the
 * Markdown table of docs/architecture.md ("Requests per operation (measured on radosgw)").
 *
 *   bench_requests [URI]
 *     URI: an empty store (a fresh sub-prefix "requests-<pid>-<time>" is appended to it);
 *     default OD_TEST_S3_URI (set by scripts/with-rgw.sh: `make bench-requests`), else a
 *     file:// temporary directory (removed at the end).
 *   env: OD_BENCH_TRACE=1 prints every request ("[handle] operation: KIND key -> rc") to stderr,
 *        through a pass-through store wrapper, to see which object each count is.
 *
 * Engine options: defaults, gc_interval_ms = 0, l0_compaction_trigger = 1000 (out of reach, so
 * compaction runs only when asked). Counts are deltas of od_db_stats.store (the handle's own
 * request counters; the s3 backend's conditional-write probe at od_store_open is not in them)
 * around each operation, on one store, in this order:
 *   writer W (compactor=1) open on the empty store; one durable write; 50 writes (wait=0) then
 *   od_db_flush(memtable=0); od_db_flush(memtable=1) (51 keys to L0); 50 more keys to a second
 *   L0 table (not counted), od_db_compact; 4 s idle; a durable write left in the WAL tail (not
 *   counted), close; reopen as writer (fencing, WAL replay), close; writer with compactor=0
 *   open (not counted), 4 s idle; beside it a read-only handle: open, a cold get of a key in
 *   the compacted table, a warm get (a key of the same block) and a get of a missing key,
 *   od_db_refresh with nothing new; all closed. Then a writer (compactor=1, not counted), a compactor process
 *   (compactor_only=1) opened next to it; that writer closed and a new one opened next to the
 *   live compactor process; both idle 4 s (counted separately, same 4 s).
 * Background requests (lease renewals, manifest follows) that fall inside an operation's window
 * are counted with it; the idle rows are exactly that. Opens are read 50 ms after od_db_open
 * returns (so the background threads' immediate first requests are in them, not racing the
 * read) and idle windows start 500 ms after the preceding step (so once-a-second work falls
 * inside them, not on their edges): the counts are the same from run to run, except the
 * compactor process's ten manifest follows a second (±1 in 4 s).
 */
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsm/od_db.h"
#include "objstore/od_objstore.h"
#include "objstore/od_objstore_impl.h"
#include "od_bench.h"

static void die(const char *what, const od_err *e)
{
    fprintf(stderr, "bench_requests: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

/* ---------------- optional request trace: a pass-through wrapper ---------------- */

static const char *volatile g_label = "";

typedef struct tr_store {
    od_store base;
    od_store *inner;
    const char *name;
} tr_store;

static void tr_log(od_store *s, const char *kind, const char *key, int rc)
{
    fprintf(stderr, "[%s] %s: %s %s -> %s\n", ((tr_store *)s)->name, g_label, kind, key,
            rc == OD_OK ? "ok" : od_code_name(rc));
}
static int tr_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    int rc = od_store_get(((tr_store *)s)->inner, key, out, meta, err);
    tr_log(s, "GET", key, rc);
    return rc;
}
static int tr_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    int rc = od_store_get_range(((tr_store *)s)->inner, key, off, len, out, err);
    tr_log(s, "GET range", key, rc);
    return rc;
}
static int tr_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    int rc = od_store_head(((tr_store *)s)->inner, key, meta, err);
    tr_log(s, "HEAD", key, rc);
    return rc;
}
static int tr_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                  od_obj_meta *meta_out, od_err *err)
{
    int rc = od_store_put(((tr_store *)s)->inner, key, data, len, mode, etag, meta_out, err);
    tr_log(s, mode == OD_PUT_IF_ABSENT ? "PUT if-none-match" : mode == OD_PUT_IF_MATCH ? "PUT if-match" : "PUT", key,
           rc);
    return rc;
}
static int tr_del(od_store *s, const char *key, od_err *err)
{
    int rc = od_store_delete(((tr_store *)s)->inner, key, err);
    tr_log(s, "DELETE", key, rc);
    return rc;
}
static int tr_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    /* backends count LIST pages on their own handle: carry the inner count over to ours */
    od_store *in = ((tr_store *)s)->inner;
    od_store_stats a, b;
    od_store_get_stats(in, &a);
    int rc = od_store_list(in, prefix, start_after, cb, ctx, err);
    od_store_get_stats(in, &b);
    for (uint64_t i = a.requests[OD_REQ_LIST]; i < b.requests[OD_REQ_LIST]; i++) od_store_count_list_page(s);
    tr_log(s, "LIST", prefix, rc);
    return rc;
}
static void tr_close(od_store *s)
{
    od_store_close(((tr_store *)s)->inner);
    od_store_destroy_base(s);
    free(s);
}
static const od_store_ops tr_ops = {tr_get, tr_get_range, tr_head, tr_put, tr_del, tr_list, tr_close};

/* ---------------- handles ---------------- */

typedef struct handle {
    od_db *db;
    od_store *store; /* the trace wrapper we own, or NULL (od_db_open owns its store) */
} handle;

static handle open_db(const char *uri, const od_db_options *o, const char *name)
{
    handle h = {0};
    od_err e;
    const char *tr = getenv("OD_BENCH_TRACE");
    if (tr && *tr && strcmp(tr, "0") != 0) {
        tr_store *t = calloc(1, sizeof *t);
        if (!t) die("out of memory", NULL);
        if (od_store_open(uri, &t->inner, &e)) die("store open", &e);
        od_store_init_base(&t->base, &tr_ops, od_store_describe(t->inner));
        od_store_get_caps(t->inner, &t->base.caps);
        t->name = name;
        h.store = &t->base;
        if (od_db_open_store(h.store, o, &h.db, &e)) die(name, &e);
    } else if (od_db_open(uri, o, &h.db, &e)) {
        die(name, &e);
    }
    return h;
}

static void close_db(handle *h)
{
    od_err e;
    if (od_db_close(h->db, &e)) die("close", &e);
    if (h->store) od_store_close(h->store);
    h->db = NULL;
    h->store = NULL;
}

static od_store_stats stats(const handle *h)
{
    od_db_stats st;
    od_db_get_stats(h->db, &st);
    return st.store;
}

/* ---------------- the table ---------------- */

#define MAX_ROWS 24
static struct {
    const char *op, *notes;
    uint64_t n[OD_REQ_KIND_COUNT];
} rows[MAX_ROWS];
static int nrows;
static uint64_t total_errors, total_retries;

static void row(const char *op, const od_store_stats *a, const od_store_stats *b, const char *notes)
{
    if (nrows == MAX_ROWS) die("too many rows", NULL);
    rows[nrows].op = op;
    rows[nrows].notes = notes;
    for (int k = 0; k < OD_REQ_KIND_COUNT; k++) {
        rows[nrows].n[k] = b->requests[k] - a->requests[k];
        total_errors += b->errors[k] - a->errors[k];
    }
    total_retries += b->retries - a->retries;
    nrows++;
}

static void print_table(void)
{
    printf("| operation | GET | GET range | HEAD | PUT | DELETE | LIST | notes |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---|\n");
    static const od_req_kind cols[] = {OD_REQ_GET, OD_REQ_GET_RANGE, OD_REQ_HEAD, OD_REQ_PUT, OD_REQ_DELETE, OD_REQ_LIST};
    for (int i = 0; i < nrows; i++) {
        printf("| %s |", rows[i].op);
        for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) printf(" %" PRIu64 " |", rows[i].n[cols[c]]);
        printf(" %s |\n", rows[i].notes);
    }
}

/* ---------------- workload helpers ---------------- */

static void put_keys(handle *h, int from, int to, int wait)
{
    od_batch *b = od_batch_new();
    if (!b) die("out of memory", NULL);
    od_err e;
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key-%06d", i), vl = snprintf(v, sizeof v, "value-%06d-0123456789", i);
        od_batch_clear(b);
        if (od_batch_put(b, k, (size_t)kl, v, (size_t)vl)) die("batch", NULL);
        if (od_db_write(h->db, b, wait, NULL, &e)) die("write", &e);
    }
    od_batch_free(b);
}

/* After an open, before its counts are read: the background threads' first requests (a
 * compactor process's first manifest follow, a deferring writer's first checks) happen at
 * once, so they are counted with the open instead of racing the read. */
#define SETTLE_MS 50
/* Before an idle window: periodic once-a-second work started at open falls inside the window
 * (at 1, 2, 3, 4 s) instead of on its edges. */
#define OFFSET_MS 500

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Counting one operation on a handle: start names it (the trace's label, the row's operation)
 * and returns the counts so far; done adds its row, the counts since. */
static od_store_stats start(const handle *h, const char *op)
{
    g_label = op;
    return stats(h);
}

static void done(const handle *h, const od_store_stats *a, const char *notes)
{
    od_store_stats b = stats(h);
    row(g_label, a, &b, notes);
}

/* An open as a row: every request of the new handle, read SETTLE_MS after od_db_open. */
static handle open_counted(const char *uri, const od_db_options *o, const char *name, const char *op,
                           const char *notes)
{
    od_store_stats zero = {0};
    g_label = op;
    handle h = open_db(uri, o, name);
    sleep_ms(SETTLE_MS);
    done(&h, &zero, notes);
    return h;
}

/* A 4 s idle window of one handle as a row, starting OFFSET_MS from now. */
static void idle_counted(const handle *h, const char *op, const char *notes)
{
    sleep_ms(OFFSET_MS);
    od_store_stats a = start(h, op);
    sleep_ms(4000);
    done(h, &a, notes);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: bench_requests [URI]   (see the file's header)\n");
        return 2;
    }
    const char *base = argc == 2 ? argv[1] : getenv("OD_TEST_S3_URI");
    char tmpdir[] = "/tmp/od-bench-requests.XXXXXX", *fileuri = NULL;
    if (!base || !*base) {
        if (!mkdtemp(tmpdir)) die("mkdtemp", NULL);
        size_t n = strlen(tmpdir) + 8;
        fileuri = malloc(n);
        if (!fileuri) die("out of memory", NULL);
        snprintf(fileuri, n, "file://%s", tmpdir);
        base = fileuri;
    }
    char sub[64];
    snprintf(sub, sizeof sub, "requests-%ld-%ld", (long)getpid(), (long)time(NULL));
    char *uri = od_bench_sub_uri(base, sub);
    if (!uri) die("out of memory", NULL);

    od_db_options o;
    od_db_options_init(&o);
    o.gc_interval_ms = 0;
    o.l0_compaction_trigger = 1000;
    od_db_options o0 = o, ro = o, co = o;
    o0.compactor = 0;
    ro.read_only = 1;
    co.compactor_only = 1;
    od_err e;
    od_store_stats a;
    char note[512];
    static char notes[MAX_ROWS][512];
    int ni = 0;
#define NOTE(...) (snprintf(notes[ni], sizeof notes[ni], __VA_ARGS__), notes[ni++])

    /* ---- writer W, compactor=1, on an empty store ---- */
    handle w = open_counted(
        uri, &o, "W", "writer open, empty store",
        "LIST of manifests; lease + compactor lease GETs (404); manifest + lease PUTs; HEAD of WAL id 1 "
        "(404); epoch check before fencing (HEAD of the next manifest + GET of the current); fence PUT");
    char desc[256];
    snprintf(desc, sizeof desc, "%s", od_store_describe(od_db_store(w.db))); /* no credentials */

    a = start(&w, "one durable write");
    put_keys(&w, 0, 1, 1);
    done(&w, &a, "one WAL object");

    a = start(&w, "50 writes, then one WAL flush");
    put_keys(&w, 1, 51, 0);
    if (od_db_flush(w.db, 0, &e)) die("flush", &e);
    done(&w, &a, "every write of an interval in one WAL object");

    a = start(&w, "memtable flush to L0");
    if (od_db_flush(w.db, 1, &e)) die("flush", &e);
    done(&w, &a, "pin PUT, SST PUT, LIST + manifest PUT, footer of the new table, pin DELETE");

    g_label = "(second L0 table)";
    put_keys(&w, 51, 101, 0);
    if (od_db_flush(w.db, 1, &e)) die("flush", &e);
    od_db_stats st;
    od_db_get_stats(w.db, &st);
    if (st.l0_count != 2) {
        fprintf(stderr, "bench_requests: expected 2 L0 tables, found %" PRIu64 "\n", st.l0_count);
        return 1;
    }
    a = start(&w, "compaction of 2 L0 tables");
    if (od_db_compact(w.db, &e)) die("compact", &e);
    done(&w, &a,
         "LIST + manifest PUT recording the job; one ranged GET per input table (4 MiB readahead); output SST "
         "PUT (no pin: the job record names it); LIST + manifest PUT of the result; footer of the output");

    idle_counted(&w, "idle writer, 4 s", "lease renewal every lease_ms/3 (3.3 s by default)");

    g_label = "(WAL tail)";
    put_keys(&w, 1000, 1001, 1); /* a WAL object after the L0 flushes, for the reopen to replay */
    close_db(&w);

    w = open_counted(
        uri, &o, "W", "writer reopen (fencing, WAL replay)",
        "as the first open, plus the manifest (GET, HEAD of its successor); no WAL replay (the clean close left "
        "the replay point at the next WAL id: one HEAD, then the fence goes there); a footer per collection "
        "(2: the explicit flush's and the close's L0 tables)");
    close_db(&w);

    /* ---- writer with compactor=0, a read-only follower beside it ---- */
    g_label = "(writer compactor=0 open)";
    w = open_db(uri, &o0, "W0");
    idle_counted(&w, "idle writer with `compactor=0`, 4 s",
                 "follows the manifest once a second (HEAD of the next version + GET of the current one); lease "
                 "renewal");

    handle r = open_counted(
        uri, &ro, "R", "read-only open",
        "LIST, GET, HEAD of the manifest; a GET per WAL object from the replay point (here 1: the writer's "
        "fence) and one 404; a footer per collection (no lease read)");

    od_buf v = {0};
    a = start(&r, "cold point get");
    if (od_db_get(r.db, NULL, "key-000010", 10, &v, &e)) die("cold get", &e);
    done(&r, &a, "one data block (bloom filter + index were read at open)");

    a = start(&r, "warm point get / get of a missing key");
    if (od_db_get(r.db, NULL, "key-000011", 10, &v, &e)) die("warm get", &e); /* same data block */
    int mrc = od_db_get(r.db, NULL, "key-000010x", 11, &v, &e);
    if (mrc != OD_NOTFOUND) die("missing key found", mrc ? &e : NULL);
    done(&r, &a, "block cache / bloom filter");
    od_buf_free(&v);

    a = start(&r, "refresh of a follower, nothing new");
    if (od_db_refresh(r.db, &e)) die("refresh", &e);
    done(&r, &a,
         "HEAD of the next manifest + GET of the current one; GET of the next WAL id (404)");
    close_db(&r);
    close_db(&w);

    /* ---- a compactor process ---- */
    g_label = "(writer open before the compactor)";
    w = open_db(uri, &o, "W");
    handle c = open_counted(
        uri, &co, "C", "compactor process open (`compactor_only=1`) next to a writer",
        "manifest (LIST, GET, HEAD); compactor lease GET (404) + PUT; manifest PUT (compactor epoch + 1); "
        "collection footer; its first manifest follow (HEAD + GET)");
    close_db(&w);

    w = open_counted(
        uri, &o, "W", "writer reopen next to a live compactor process",
        "a reopen (no WAL replay after the clean close), then at once a compactor lease "
        "GET and a manifest follow: compaction is left to the compactor process");

    /* both handles over the same window */
    sleep_ms(OFFSET_MS);
    od_store_stats ca = stats(&c);
    a = start(&w, "idle writer next to a live compactor process, 4 s");
    sleep_ms(4000);
    od_store_stats b = stats(&w), cb = stats(&c);
    row(g_label, &a, &b,
        "compactor lease GET (to take compaction back once it is released or expires) and manifest follow "
        "(HEAD + GET), each once a second; lease renewal");
    snprintf(note, sizeof note,
             "manifest follow (HEAD + GET) every follow_interval_ms (%u ms); compactor lease renewal every "
             "lease_ms/3",
             o.follow_interval_ms ? o.follow_interval_ms : 1000);
    row("compactor process idle beside it, same 4 s", &ca, &cb, NOTE("%s", note));
    close_db(&w);
    close_db(&c);

    printf("### Requests per operation on %s\n\n", desc);
    print_table();
    if (total_errors || total_retries)
        printf("\n(%" PRIu64 " failed requests, %" PRIu64 " retries during the operations above)\n", total_errors,
               total_retries);
    free(uri);
    if (fileuri) {
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(fileuri);
    }
    return 0;
}
