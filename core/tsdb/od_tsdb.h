/*
 * od_tsdb.h — the TSDB engine's public API: Prometheus data (float samples) on the storage
 * engine (od_db.h).
 *
 * Data model (as Prometheus):
 *   - a series is a label set: name/value pairs sorted by name, names unique, `__name__` is the
 *     metric name. Names match [a-zA-Z_][a-zA-Z0-9_]*; values are UTF-8 without NUL. A label
 *     with an empty value is the same as an absent label and is dropped on ingest.
 *   - a sample is (int64 ms timestamp, double). NaN payloads (the stale marker
 *     OD_STALE_NAN_BITS included), ±Inf and -0.0 are stored bit-exactly.
 *
 * Writes: od_tsdb_append takes a batch of series, each with samples in any order. Invalid
 * series (bad names, bad UTF-8, duplicate label names, no __name__) are rejected one by one
 * with an error naming the series and the label; the rest of the batch is written atomically
 * (one od_db batch). Out-of-order samples inside the retention window are accepted; a
 * duplicate timestamp keeps the last write.
 *
 * Reads: od_tsdb_read_open pins a snapshot; every read through it (select, label names and
 * values, stats) sees one consistent state.
 *
 * Retention: samples older than (newest sample time ever ingested − retention) disappear from
 * reads at once, and from the store through od_tsdb_compact / the engine's compaction.
 *
 * Thread safety: an od_tsdb handle may be used by many threads at once. A read view may be
 * shared; series sets, sample iterators and matchers belong to one thread at a time.
 *
 * Byte formats: docs/formats.md. Design: docs/architecture.md.
 */
#ifndef OD_TSDB_H
#define OD_TSDB_H

#include <stddef.h>
#include <stdint.h>

#include "../lsm/od_db.h"
#include "../util/od_buf.h"
#include "../util/od_err.h"

#define OD_STALE_NAN_BITS 0x7ff0000000000002ULL
#define OD_NORMAL_NAN_BITS 0x7ff8000000000001ULL /* Go's math.NaN(): the NaN Prometheus writes */
#define OD_TSDB_MAX_LABELS 128        /* labels per series */
#define OD_TSDB_MAX_NAME_LEN 1024     /* bytes of a label name */
#define OD_TSDB_MAX_VALUE_LEN 65535   /* bytes of a label value */

/* ------------------------------------------------------------------ labels */

typedef struct od_label {
    char *name;   /* NUL-terminated, owned by the od_labels */
    char *value;
} od_label;

/* A label set. A zeroed od_labels is empty and valid. After od_labels_sort (or when built
 * by the engine) pairs are sorted by name (strcmp) and names are unique. */
typedef struct od_labels {
    od_label *v;
    size_t n, cap;
} od_labels;

/* Append a copy of (name, value) (no sorting, no validation). OD_NOMEM. */
int od_labels_add(od_labels *ls, const char *name, const char *value);
/* Same with explicit lengths (strings need not be NUL-terminated; a NUL inside is kept and
 * later rejected by validation). */
int od_labels_addn(od_labels *ls, const char *name, size_t nlen, const char *value, size_t vlen);
/* Sort by name; drop pairs with an empty value. OD_BADREQ on a duplicate name. */
int od_labels_sort(od_labels *ls, od_err *err);
/* Validate a sorted set: non-empty __name__ present, names/values legal, sorted, unique. The
 * message names the series (od_labels_format) and the offending label. */
int od_labels_validate(const od_labels *ls, od_err *err);
const char *od_labels_get(const od_labels *ls, const char *name); /* NULL when absent */
int od_labels_copy(od_labels *dst, const od_labels *src);          /* dst must be empty/zeroed */
int od_labels_cmp(const od_labels *a, const od_labels *b);         /* Prometheus order */
void od_labels_reset(od_labels *ls);                               /* n = 0, keep memory */
void od_labels_free(od_labels *ls);
/* Prometheus text form: name{a="x",b="y"} (values escaped). Appends to out. */
int od_labels_format(const od_labels *ls, od_buf *out);
/* JSON object of every label except __name__ ({"a":"x"}), appended to out. */
int od_labels_format_json(const od_labels *ls, od_buf *out);
/* Canonical length-prefixed encoding (used for hashing and storage; see formats doc). */
int od_labels_encode(const od_labels *ls, od_buf *out);
int od_labels_decode(const uint8_t *p, size_t n, od_labels *out, od_err *err);
/* 64-bit fingerprint of the canonical encoding ({ab="c"} and {a="bc"} differ). */
uint64_t od_labels_hash(const od_labels *ls);
uint64_t od_tsdb_hash_bytes(const void *p, size_t n);

int od_label_name_valid(const char *name, size_t len);
/* Valid UTF-8, no NUL. */
int od_label_value_valid(const char *value, size_t len);

/* ---------------------------------------------------------------- matchers */

typedef enum od_match_op {
    OD_MATCH_EQ = 0, /* =  */
    OD_MATCH_NE,     /* != */
    OD_MATCH_RE,     /* =~ fully anchored, RE2/Prometheus syntax, through PCRE2 */
    OD_MATCH_NRE,    /* !~ */
} od_match_op;

typedef struct od_matcher {
    od_match_op op;
    char *name;
    char *value;   /* the literal or the regex source as written */
    void *re;      /* private: pcre2_code* for RE/NRE */
    void *md;      /* private: pcre2_match_data* */
} od_matcher;

/* Compile a matcher (the regex becomes "^(?:value)$", UTF mode). OD_BADREQ with the PCRE2
 * message on a bad regex. */
int od_matcher_init(od_matcher *m, od_match_op op, const char *name, const char *value, od_err *err);
void od_matcher_clear(od_matcher *m);
/* Does a label value match? An absent label is the empty string. */
int od_matcher_matches(const od_matcher *m, const char *value, size_t len);
/* Do all matchers accept this label set? */
int od_matchers_match(const od_matcher *ms, size_t n, const od_labels *ls);
const char *od_match_op_str(od_match_op op);

/* Parse a PromQL series selector: `metric`, `metric{a="x",b=~"y"}`, `{__name__=~"x.*"}`.
 * Fills a malloc'd array of initialised matchers (a metric name becomes __name__="...").
 * Free with od_matchers_free. OD_BADREQ with the position on a syntax error. */
int od_selector_parse(const char *sel, od_matcher **out, size_t *n, od_err *err);
void od_matchers_free(od_matcher *ms, size_t n);

/* ------------------------------------------------------------------ engine */

typedef struct od_sample {
    int64_t t;  /* unix ms */
    double v;
} od_sample;

typedef struct od_tsdb od_tsdb;

typedef enum od_tsdb_mode {
    OD_TSDB_WRITER = 0,    /* open the engine read-write at once (fences older writers) */
    OD_TSDB_READ_ONLY,     /* never write */
    OD_TSDB_LAZY_WRITER,   /* open read-only; become the writer at the first append or compact
                              (a second writer then gets the engine's OD_BUSY lease refusal) */
} od_tsdb_mode;

typedef struct od_tsdb_options {
    od_tsdb_mode mode;
    int64_t retention_ms;  /* writer: store this retention (0 = keep forever); -1 (default):
                              keep the stored one. Readers always use the stored one. */
    int64_t bucket_ms;     /* time-bucket width, only used when the store is created
                              (default 7200000 = 2 h); an existing store keeps its own */
    const od_db_options *db; /* engine options (NULL = defaults); read_only is overridden */
    /* Background compaction (writers only): a thread of the handle wakes every
     * compact_interval_ms (default 30000; 0 = off) and merges the chunk fragments of buckets
     * that need it: any bucket older than the newest one that received writes since it was
     * last compacted, and the newest bucket once it holds compact_fragments (default 8)
     * fragments per series written since. A pass reads at most compact_budget chunk entries
     * (default 262144) and resumes where it stopped at the next wake-up. The work list is
     * also kept on the store ('D' records), so a writer finds and merges the fragments that
     * earlier processes left, without their buckets being written again. */
    int64_t compact_interval_ms;
    uint32_t compact_fragments;
    uint64_t compact_budget;
} od_tsdb_options;

void od_tsdb_options_init(od_tsdb_options *o);

int od_tsdb_open(const char *uri, const od_tsdb_options *o, od_tsdb **out, od_err *err);
/* Flushes, waits for durability, frees. */
int od_tsdb_close(od_tsdb *t, od_err *err);

/* One series of an append batch. */
typedef struct od_series_in {
    const od_labels *labels;  /* need not be sorted (the engine sorts a copy) */
    const od_sample *samples;
    size_t n;
} od_series_in;

typedef struct od_append_result {
    size_t series_ok, series_rejected;
    size_t samples_ok, samples_rejected;  /* rejected: bad series, or older than retention */
    size_t series_created;                /* series seen for the first time */
} od_append_result;

/* Append a batch. `errs` (may be NULL) is an array of n od_err receiving each series' error
 * (code OD_OK when accepted). Returns OD_OK when everything was accepted; OD_BADREQ with the
 * first rejected series' message when some were rejected (the others ARE written); any other
 * code when the write failed (then nothing was written). durable=1 waits until the batch is
 * in the object store. res may be NULL. */
int od_tsdb_append(od_tsdb *t, const od_series_in *in, size_t n, int durable, od_err *errs,
                   od_append_result *res, od_err *err);

/* Wait until everything appended so far is durable. */
int od_tsdb_flush(od_tsdb *t, od_err *err);
/* Merge chunk fragments into one long chunk per series and bucket, and delete buckets that
 * fell out of retention. Synchronous. */
int od_tsdb_compact(od_tsdb *t, od_err *err);
/* One background-compaction pass now, on the caller's thread (what the background thread
 * does at each wake-up; never concurrent with another pass or od_tsdb_compact). *merged
 * (may be NULL) receives the number of fragments merged away. Writers only (no-op else). */
int od_tsdb_compact_step(od_tsdb *t, uint64_t *merged, od_err *err);
/* Read-only / lazy handles: pick up what other processes wrote. Writers: no-op. */
int od_tsdb_refresh(od_tsdb *t, od_err *err);
int od_tsdb_is_writer(od_tsdb *t);
/* Lazy handles: become the writer now (OD_BUSY from the engine when another process holds the
 * writer lease). Writers: no-op. */
int od_tsdb_make_writer(od_tsdb *t, od_err *err);

typedef struct od_tsdb_info {
    int64_t bucket_ms, retention_ms;
    int64_t min_t, max_t;  /* newest sample time ever ingested (INT64_MIN when empty) */
    uint64_t series;       /* series ids allocated */
    uint64_t cache_bytes;  /* memory of the writer's caches (series map, bucket member sets) */
    uint64_t cached_series;/* series in the writer's series map */
    uint64_t bg_passes;    /* background compaction passes that merged something */
    uint64_t bg_merged;    /* chunk fragments merged away by background compaction */
    uint64_t dirty_buckets;/* buckets with fragments written since they were last compacted */
} od_tsdb_info;
void od_tsdb_get_info(od_tsdb *t, od_tsdb_info *out);
od_db *od_tsdb_db(od_tsdb *t);  /* the current engine handle (for stats) */

/* ---- snapshot-consistent reads ---- */
typedef struct od_tsdb_read od_tsdb_read;

int od_tsdb_read_open(od_tsdb *t, od_tsdb_read **out, od_err *err);
void od_tsdb_read_close(od_tsdb_read *r);

/* Series set: every series matching all matchers that has samples in [mint, maxt] (at bucket
 * granularity: a series is listed when a bucket overlapping the range holds it), in label
 * order. n == 0 matchers selects every series. */
typedef struct od_series_set od_series_set;

int od_tsdb_select(od_tsdb_read *r, const od_matcher *ms, size_t n, int64_t mint, int64_t maxt,
                   od_series_set **out, od_err *err);
/* Advance to the next series: OD_OK with *labels set, or OD_OK with *labels NULL at the end. */
int od_series_set_next(od_series_set *ss, const od_labels **labels, od_err *err);
uint64_t od_series_set_id(const od_series_set *ss); /* the current series' id */
size_t od_series_set_count(const od_series_set *ss); /* series in the set */
void od_series_set_free(od_series_set *ss);

/* Time-ordered samples of the current series within [mint, maxt] of the select. Owned by the
 * caller; valid while the read view lives (independent of od_series_set_next). */
typedef struct od_sample_iter od_sample_iter;
int od_series_set_samples(od_series_set *ss, od_sample_iter **out, od_err *err);
int od_sample_iter_valid(const od_sample_iter *it);
od_sample od_sample_iter_at(const od_sample_iter *it);
int od_sample_iter_next(od_sample_iter *it, od_err *err);
/* Batch access (a loop over an array instead of a call per sample): *v and *n are the
 * samples from the current position to the end of the iterator's current block (one bucket
 * of the series), in time order and inside the range; *n == 0 only at the end. *v stays
 * valid until the next call that moves the iterator. */
void od_sample_iter_block(const od_sample_iter *it, const od_sample **v, size_t *n);
/* Move k samples forward (k ≤ the block's n), loading the next block when this one is used up. */
int od_sample_iter_advance(od_sample_iter *it, size_t k, od_err *err);
/* Position at the first sample with t ≥ ts (never moves backwards). */
int od_sample_iter_seek(od_sample_iter *it, int64_t ts, od_err *err);
void od_sample_iter_free(od_sample_iter *it);

/* Sorted, unique strings. */
typedef struct od_strlist {
    char **v;
    size_t n, cap;
} od_strlist;
void od_strlist_free(od_strlist *l);

/* Label names / values of the series selected by the matchers in [mint, maxt]
 * (n == 0: all series). */
int od_tsdb_label_names(od_tsdb_read *r, const od_matcher *ms, size_t n, int64_t mint,
                        int64_t maxt, od_strlist *out, od_err *err);
int od_tsdb_label_values(od_tsdb_read *r, const char *name, const od_matcher *ms, size_t n,
                         int64_t mint, int64_t maxt, od_strlist *out, od_err *err);

typedef struct od_tsdb_bucket_stats {
    int64_t mint, maxt;        /* bucket bounds [mint, maxt] in ms */
    uint64_t series;           /* series with samples in the bucket */
    uint64_t samples;          /* stored samples (before duplicate elimination) */
    uint64_t chunks;           /* chunk objects (fragments + long chunks) */
    uint64_t chunk_bytes;      /* key + value bytes of chunks */
    uint64_t index_bytes;      /* key + value bytes of the bucket's postings */
} od_tsdb_bucket_stats;

/* Statistics of every live bucket, oldest first. *out is malloc'd (free()). */
int od_tsdb_stats(od_tsdb_read *r, od_tsdb_bucket_stats **out, size_t *n, od_err *err);

#endif
