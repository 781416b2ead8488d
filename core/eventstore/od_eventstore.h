/*
 * od_eventstore.h — the event store's public API: millions of independent, replayable logs
 * ("keys"), each an ordered sequence of records, on the storage engine (core/lsm/od_db.h).
 *
 * A record: key (1..OD_EV_KEY_MAX bytes, any bytes), per-key sequence number (0-based,
 * gapless, assigned by the writer), timestamp in unix ms (the caller's or the arrival time;
 * never going backwards within a key: an older caller timestamp is raised to the key's last
 * timestamp), value (bytes, ≤ OD_EV_VALUE_MAX), optional headers (name/value byte pairs), and
 * one byte of flags that the engine stores but does not interpret (the SQL layer keeps
 * "value was TEXT" in bit 0).
 *
 * Writes: od_ev_append appends an atomic batch of records for one or many keys. A record may
 * carry expected_seq: the batch is applied only if that record would receive exactly that
 * sequence (for the first record of a key this is "the key's next sequence equals ..."); else
 * nothing is applied and OD_CONFLICT is returned with the key's current next sequence. The
 * check and the assignment happen in one place, under one lock. A batch may carry a producer
 * id and a producer sequence: a batch whose producer sequence is not greater than the last one
 * recorded for that producer is a duplicate and is acknowledged without being applied again.
 * Producer state is stored in the database and lives for `producer_ttl_ms` after the
 * producer's last append (default 7 days); after that a retried batch is appended again.
 * od_ev_append returns once the batch is durable in the object store (acknowledged = durable).
 *
 * Reads: one key from a sequence number, from a timestamp, or N records back from the tail,
 * bounded by count and bytes, in sequence order (od_ev_cursor_*). Every cursor reads one
 * consistent snapshot. od_ev_tail gives the key's metadata (check-tail); od_ev_follow blocks
 * until a key has records at or after a sequence, or a timeout passes.
 *
 * Retention: by age and/or count, a store default (options) and a per-key override
 * (od_ev_set_retention). Applied at read time at once; reclaimed by the storage engine (TTL
 * stamped on records at append, count-retention tombstones written by the append path, and a
 * compaction filter for the store's default age). Trim and delete-key take effect at once; a
 * crash while their tombstones are written is finished by the next writer open (trim intents).
 *
 * Age retention rule changes: what a key's rule hides stays hidden. od_ev_set_retention first
 * trims the key up to the first record its current rule (count, age, TTL) still shows, then
 * sets the new rule; so a longer or removed rule (age or count) never brings records back, and
 * reads never show some hidden records resurrected while others were already reclaimed. A
 * record keeps the TTL it was appended with: a longer age rule governs the records appended
 * after the change; a shorter one hides older records at once. The store default age changes
 * only at open (options): a writer open that changes it records a floor (now - the old age)
 * below which records appended under the store default stay hidden, at read time and in
 * compaction. "now" there is the handle's clock but at most one minute past the object store's
 * clock (the last-modified time of the lease object the open just wrote), so a writer whose
 * clock is far ahead cannot set the floor above records the old default still showed (the
 * damage is bounded by that minute). Read-only handles apply the store default age and floor
 * the last writer open recorded (their own retention_age_ms only for stores without that
 * record, written by older builds), taken at open and at every od_ev_refresh. A store default
 * count lowered and raised across opens is not covered.
 *
 * Transactions: od_ev_commit applies appends and trims / key deletes / retention changes as
 * ONE engine batch (all or nothing, one durability wait); the single-operation calls below are
 * commits of one operation.
 *
 * One writer per store (the engine's lease); read-only handles in other processes follow the
 * store with od_ev_refresh. A handle is thread-safe: any number of threads may append, read
 * and follow at once. Cursors belong to one thread at a time.
 */
#ifndef OD_EVENTSTORE_H
#define OD_EVENTSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "../lsm/od_db.h"
#include "../util/od_buf.h"
#include "../util/od_err.h"

#define OD_EV_KEY_MAX 1024            /* bytes in a key */
#define OD_EV_VALUE_MAX (8u << 20)    /* bytes in a record's value */
#define OD_EV_HEADERS_MAX 64          /* headers per record */
#define OD_EV_HEADER_BYTES_MAX 65536  /* bytes of all headers of one record (names + values) */
#define OD_EV_BATCH_MAX 100000        /* records in one append */
#define OD_EV_ANY (-1)                /* expected_seq: no check */

typedef struct od_eventstore od_eventstore;
typedef struct od_ev_cursor od_ev_cursor;
typedef struct od_ev_keys od_ev_keys;

typedef struct od_ev_options {
    int read_only;               /* 1: follow the store, never write */
    int takeover;                /* writer: fence a live writer even if its lease is fresh */
    int64_t retention_age_ms;    /* store default: hide records older than this (0 = keep) */
    uint64_t retention_count;    /* store default: keep only the newest N per key (0 = all) */
    size_t tail_cache_entries;   /* bounded LRU of per-key tail state (default 65536) */
    int64_t producer_ttl_ms;     /* producer dedupe state lifetime (default 7 days) */
    const od_db_options *db;     /* engine options (NULL = defaults); read_only/filter overridden */
    /* Test hook: this handle's wall clock in unix ms (NULL = the system clock). It drives
     * read-time age retention and the 'R' floor of a writer open; arrival timestamps and the
     * engine's TTLs keep the system clock. */
    int64_t (*now_ms)(void *ctx);
    void *now_ctx;
} od_ev_options;

void od_ev_options_init(od_ev_options *o);

int od_ev_open(const char *uri, const od_ev_options *opts, od_eventstore **out, od_err *err);
/* Flushes (waits for durability), closes the engine, frees. */
int od_ev_close(od_eventstore *es, od_err *err);
/* The engine under the store (stats, flush, compaction). */
od_db *od_ev_db(od_eventstore *es);
/* Read-only handles: pick up the writer's new state, including the store default age and
 * retention floor of the last writer open. Writers: no-op. */
int od_ev_refresh(od_eventstore *es, od_err *err);

/* ---- append ---- */
typedef struct od_ev_header {
    const void *name;
    size_t nlen;
    const void *value;
    size_t vlen;
} od_ev_header;

typedef struct od_ev_rec_in {
    const void *key;
    size_t klen;
    const void *value;
    size_t vlen;
    const od_ev_header *headers;
    size_t nheaders;
    int64_t ts_ms;          /* 0 = arrival time */
    int64_t expected_seq;   /* OD_EV_ANY, or the sequence this record must receive */
    uint8_t flags;          /* stored, not interpreted */
} od_ev_rec_in;

typedef struct od_ev_append_opts {
    const char *producer_id;   /* NULL = no idempotency */
    uint64_t producer_seq;     /* must grow per producer; ≤ last seen = duplicate */
    int no_wait;               /* 1: return once in the memtable, before durability */
} od_ev_append_opts;

typedef struct od_ev_append_info {
    int duplicate;             /* 1: producer dedupe: nothing appended, seqs not filled */
    size_t conflict_index;     /* OD_CONFLICT: index of the record that failed its check */
    uint64_t conflict_next_seq;/* OD_CONFLICT: that key's next sequence at the check */
    int64_t conflict_expected; /* OD_CONFLICT: the expected_seq that failed */
} od_ev_append_info;

/* Append n records atomically. seqs_out (may be NULL) receives each record's sequence.
 * opts and info may be NULL. OD_CONFLICT: nothing appended, info says why. */
int od_ev_append(od_eventstore *es, const od_ev_rec_in *recs, size_t n, const od_ev_append_opts *opts,
                 uint64_t *seqs_out, od_ev_append_info *info, od_err *err);

/* ---- per-key metadata ---- */
typedef struct od_ev_key_info {
    int exists;
    uint64_t first_seq;        /* first sequence not trimmed / retained away by count */
    uint64_t next_seq;         /* the sequence the next record will receive */
    uint64_t count;            /* next_seq - first_seq (age retention is applied by reads) */
    uint64_t bytes;            /* value + header name/value bytes appended over the key's life */
    int64_t last_ts_ms;        /* timestamp of the last record (0 if none) */
    int64_t created_ms;        /* when the key got its first record */
    int64_t retention_age_ms;  /* per-key override (0 = store default) */
    uint64_t retention_count;  /* per-key override (0 = store default) */
} od_ev_key_info;

/* Check-tail. A key that does not exist gives exists = 0, everything else 0; OD_OK. */
int od_ev_tail(od_eventstore *es, const void *key, size_t klen, od_ev_key_info *out, od_err *err);
/* Per-key retention override (0 = use the store default). The key must exist. */
int od_ev_set_retention(od_eventstore *es, const void *key, size_t klen, int64_t age_ms, uint64_t count,
                        od_err *err);
/* Remove every record of seq < before_seq (clamped to next_seq). OD_NOTFOUND for no key. */
int od_ev_trim(od_eventstore *es, const void *key, size_t klen, uint64_t before_seq, od_err *err);
/* od_ev_trim for n keys as one atomic batch (od_ev_commit): all trimmed or none; a key that
 * does not exist is skipped. */
typedef struct od_ev_trim_in {
    const void *key;
    size_t klen;
    uint64_t before_seq;
} od_ev_trim_in;
int od_ev_trim_many(od_eventstore *es, const od_ev_trim_in *t, size_t n, od_err *err);
/* Delete the key and all its records; a later append starts again at sequence 0. */
int od_ev_delete_key(od_eventstore *es, const void *key, size_t klen, od_err *err);

/* ---- transactions: appends, trims, key deletes and retention changes as ONE batch ---- */
typedef enum od_ev_op_kind {
    OD_EV_OP_TRIM = 1,        /* remove records with seq < before_seq (clamped to next_seq) */
    OD_EV_OP_DELETE_KEY,      /* remove the key and all its records */
    OD_EV_OP_SET_RETENTION,   /* per-key override (age_ms, count); 0 = the store default */
} od_ev_op_kind;

typedef struct od_ev_op {
    od_ev_op_kind kind;
    const void *key;
    size_t klen;
    uint64_t before_seq;      /* TRIM */
    int64_t age_ms;           /* SET_RETENTION */
    uint64_t count;           /* SET_RETENTION */
    int missing_ok;           /* 1: a key that does not exist is skipped; 0: OD_NOTFOUND aborts */
} od_ev_op;

/* Apply n appends (as od_ev_append: expected_seq checks, producer dedupe, count retention),
 * then nops key operations in order, as ONE od_db batch: every expected_seq is checked and
 * every key resolved before anything is written, so a conflict (OD_CONFLICT, info as for
 * od_ev_append) or a missing key (OD_NOTFOUND) leaves the store untouched; otherwise all of
 * it becomes visible at once and durable with one wait. Operations see the state left by the
 * appends and by earlier operations of the same call (a trim may name a sequence appended in
 * this call). n may be 0. A producer duplicate skips the appends AND the operations.
 * Trims and deletes larger than a few thousand records write their record tombstones in
 * later batches, guarded by a trim intent written in the atomic batch (see docs/formats.md):
 * a crash leaves the trim complete for readers, and the next writer open finishes the
 * reclaiming. Retention changes: see "Age retention rule changes" above. */
int od_ev_commit(od_eventstore *es, const od_ev_rec_in *recs, size_t n, const od_ev_op *ops, size_t nops,
                 const od_ev_append_opts *opts, uint64_t *seqs_out, od_ev_append_info *info, od_err *err);

/* ---- reads ---- */
typedef enum od_ev_from {
    OD_EV_FROM_SEQ = 0,   /* from `seq` */
    OD_EV_FROM_TS,        /* from the first record with ts ≥ `ts_ms` */
    OD_EV_FROM_TAIL,      /* the last `tail_n` records */
} od_ev_from;

typedef struct od_ev_read_opts {
    od_ev_from from;
    uint64_t seq;
    int64_t ts_ms;
    uint64_t tail_n;
    uint64_t end_seq;     /* stop before this sequence (0 = no bound) */
    int64_t end_ts_ms;    /* stop at the first record with ts ≥ this (0 = no bound) */
    uint64_t max_count;   /* 0 = no bound */
    uint64_t max_bytes;   /* value bytes; the first record is always returned (0 = no bound) */
} od_ev_read_opts;

typedef struct od_ev_record {
    const uint8_t *key;
    size_t klen;
    uint64_t seq;
    int64_t ts_ms;
    uint8_t flags;
    const uint8_t *value;
    size_t vlen;
    const uint8_t *headers;   /* encoded; walk with od_ev_header_next */
    size_t headers_len;
    size_t nheaders;
} od_ev_record;

/* Open a cursor on one key (a snapshot is taken now). A missing key gives an empty cursor. */
int od_ev_cursor_open(od_eventstore *es, const void *key, size_t klen, const od_ev_read_opts *ro,
                      od_ev_cursor **out, od_err *err);
int od_ev_cursor_valid(const od_ev_cursor *c);
/* The current record; pointers stay valid until the next od_ev_cursor_next/free. */
void od_ev_cursor_record(const od_ev_cursor *c, od_ev_record *out);
int od_ev_cursor_next(od_ev_cursor *c, od_err *err);
void od_ev_cursor_free(od_ev_cursor *c);

/* Walk encoded headers: *pos starts at 0; returns 1 and fills h while there is one. */
int od_ev_header_next(const uint8_t *hdrs, size_t len, size_t *pos, od_ev_header *h);

/* Block until the key has a record with seq ≥ from_seq (OD_OK) or timeout_ms passes
 * (OD_TIMEOUT). Writers are woken by the append path; read-only handles poll the store. */
int od_ev_follow(od_eventstore *es, const void *key, size_t klen, uint64_t from_seq, int64_t timeout_ms,
                 od_err *err);

/* ---- keys ---- */
/* Iterate existing keys in [lo, hi) byte order (hi NULL = unbounded). */
int od_ev_keys_open(od_eventstore *es, const void *lo, size_t lolen, const void *hi, size_t hilen,
                    od_ev_keys **out, od_err *err);
int od_ev_keys_valid(const od_ev_keys *k);
const uint8_t *od_ev_keys_key(const od_ev_keys *k, size_t *klen);
void od_ev_keys_info(const od_ev_keys *k, od_ev_key_info *out);
int od_ev_keys_next(od_ev_keys *k, od_err *err);
void od_ev_keys_free(od_ev_keys *k);

typedef int (*od_ev_key_cb)(void *ctx, const uint8_t *key, size_t klen, const od_ev_key_info *info);
/* List up to `limit` keys starting with prefix and greater than start_after (pagination:
 * pass the last key of the previous page). *more_out (may be NULL) = 1 when keys remain. */
int od_ev_list_keys(od_eventstore *es, const void *prefix, size_t plen, const void *start_after,
                    size_t salen, size_t limit, od_ev_key_cb cb, void *ctx, int *more_out, od_err *err);

/* ---- observability ---- */
typedef struct od_ev_stats {
    uint64_t appends, records_appended, conflicts, duplicates;
    uint64_t tail_cache_hits, tail_cache_misses, tail_cache_entries;
    uint64_t records_read;
} od_ev_stats;
void od_ev_get_stats(od_eventstore *es, od_ev_stats *out);

#endif
