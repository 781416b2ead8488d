/*
 * od_objstore.h — the object-store layer: one interface, several backends chosen by URI.
 *
 *   file:///abs/path, or a plain path   the embedded default (a local directory)
 *   mem://name                          in-process, for tests (same name = same store within a process)
 *   s3://bucket/prefix?region=..&endpoint=http://127.0.0.1:PORT&path_style=1[&access_key=..&secret_key=..]
 *                                       any S3-compatible store through libcurl (SigV4)
 *   faulty+<uri>?seed=N&error_rate=F&latency_ms=N&ambiguous_rate=F
 *                                       fault-injecting wrapper around any other backend
 *
 * Semantics every backend honours (checked by the contract test suite):
 *   - keys are '/'-separated relative paths; "", leading '/', "..", ".", empty segments,
 *     NUL and control bytes are rejected with OD_BADREQ before reaching the backend;
 *   - put_always replaces atomically (readers see the old or the new object, never a mix);
 *   - put_if_absent is atomic across processes: exactly one concurrent creator gets OD_OK,
 *     the others OD_EXISTS;
 *   - put_if_match replaces only when the current ETag equals `etag` (OD_PRECONDITION when
 *     it differs, OD_NOTFOUND when the object is missing);
 *   - get of a missing key is OD_NOTFOUND; delete of a missing key is OD_OK (as S3);
 *   - list returns keys under a prefix in ascending byte order, paginated internally.
 *
 * Retries: backends make one attempt per call and report retryable failures as OD_TRANSIENT;
 * this layer retries them with exponential backoff and full jitter within a budget
 * (od_store_set_retry), then returns the last error, prefixed with the attempt count.
 * A conditional PUT is ambiguous after a retry: the first attempt may have landed, so the
 * retry sees "exists"/"precondition failed". The layer then reads the object back and
 * reports success only if it holds exactly the bytes this call wrote. Callers make such
 * bytes unique (the engine embeds its writer id and epoch), which makes the content itself
 * the put id and needs no backend-specific metadata.
 *
 * Handles are thread-safe: any number of threads may call into one od_store at once.
 * Request and byte counters (od_store_stats) are kept per handle.
 */
#ifndef OD_OBJSTORE_H
#define OD_OBJSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "../util/od_buf.h"
#include "../util/od_err.h"

#define OD_ETAG_MAX 80

typedef struct od_store od_store;

typedef struct od_obj_meta {
    uint64_t size;
    char etag[OD_ETAG_MAX]; /* opaque; pass back to put_if_match unchanged */
    int64_t mtime_ms;       /* last-modified, unix ms (0 when unknown) */
} od_obj_meta;

typedef enum od_put_mode {
    OD_PUT_ALWAYS = 0,
    OD_PUT_IF_ABSENT,
    OD_PUT_IF_MATCH,
} od_put_mode;

/* Request kinds counted by every backend. */
typedef enum od_req_kind {
    OD_REQ_GET = 0,  /* whole-object GET */
    OD_REQ_GET_RANGE,
    OD_REQ_HEAD,
    OD_REQ_PUT,      /* all PUT modes */
    OD_REQ_DELETE,
    OD_REQ_LIST,     /* one per page */
    OD_REQ_KIND_COUNT
} od_req_kind;

typedef struct od_store_stats {
    uint64_t requests[OD_REQ_KIND_COUNT];
    uint64_t errors[OD_REQ_KIND_COUNT];  /* requests that ended in an error other than NOTFOUND/EXISTS/PRECONDITION */
    uint64_t retries;                    /* extra attempts made by the backend (S3) */
    uint64_t bytes_in;                   /* payload bytes read from the store */
    uint64_t bytes_out;                  /* payload bytes written to the store */
} od_store_stats;

typedef struct od_store_caps {
    int conditional_writes;  /* 1: the store honours If-None-Match / If-Match (probed at open for s3) */
    int single_writer_only;  /* 1: user declared single-writer deployment (?single_writer=1) */
} od_store_caps;

/* Called once per listed key, in ascending order. Return non-zero to stop early (that value
 * is not an error; list returns OD_OK). */
typedef int (*od_list_cb)(void *ctx, const char *key, const od_obj_meta *meta);

/* Open a store by URI. On failure *out is NULL and err says why (bad URI, unreachable, auth). */
int od_store_open(const char *uri, od_store **out, od_err *err);
void od_store_close(od_store *s);

/* Whole-object GET into `out` (replaces its content). meta may be NULL. */
int od_store_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err);
/* Ranged GET of [off, off+len). A range past the end is truncated to the object's size;
 * off beyond the end is OD_BADREQ. */
int od_store_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out,
                       od_err *err);
int od_store_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err);
/* PUT with a mode; `etag` is required for OD_PUT_IF_MATCH and ignored otherwise.
 * meta_out (may be NULL) receives the new object's ETag and size on success. */
int od_store_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode,
                 const char *etag, od_obj_meta *meta_out, od_err *err);
int od_store_delete(od_store *s, const char *key, od_err *err);
/* List keys starting with `prefix` (may be "") and greater than `start_after` (may be NULL). */
int od_store_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx,
                  od_err *err);

void od_store_get_stats(od_store *s, od_store_stats *out);
void od_store_get_caps(od_store *s, od_store_caps *out);
/* A printable description of the store with secrets removed (e.g. "s3://bucket/prefix"). */
const char *od_store_describe(od_store *s);

/* Retry policy for OD_TRANSIENT failures (all backends): up to max_attempts attempts per call
 * (1 = no retry), sleeping a full-jitter exponential backoff between base_delay_ms and
 * max_delay_ms. Defaults: 6 attempts, 25 ms, 2000 ms. Values < 1 / < 0 keep the current one. */
void od_store_set_retry(od_store *s, int max_attempts, int base_delay_ms, int max_delay_ms);

/* Copy `uri` into out (size n, always NUL-terminated) with the values of credential
 * parameters (secret_key, session_token) replaced by "***": the form to put in messages. */
void od_uri_redact(const char *uri, char *out, size_t n);

/* Validate a key (shared by all backends). OD_OK or OD_BADREQ with a message naming the key. */
int od_key_validate(const char *key, od_err *err);

/* Convenience wrappers. */
static inline int od_store_put_if_absent(od_store *s, const char *key, const void *d, size_t n, od_err *e)
{
    return od_store_put(s, key, d, n, OD_PUT_IF_ABSENT, NULL, NULL, e);
}

#endif
