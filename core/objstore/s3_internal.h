/*
 * s3_internal.h — internals of the s3:// backend shared by store_s3.c, s3_util.c and the tests.
 *
 * Not a public header: nothing outside core/objstore and tests/unit/test_*s3*.c includes it.
 * It declares the pure helpers (SigV4 URI encoding and query canonicalisation, SHA-256 hex,
 * the small ListObjectsV2 / error XML reader, date parsing) and the test hooks of the backend
 * (fixed x-amz-date, connect-to redirection, a deliberately wrong x-amz-content-sha256).
 */
#ifndef OD_S3_INTERNAL_H
#define OD_S3_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "od_objstore.h"

/* ---- s3_util.c: pure helpers ---- */

/* Append `s` (n bytes) URI-encoded as SigV4 requires: A-Z a-z 0-9 - _ . ~ unchanged, every
 * other byte as %XY (upper-case hex). With keep_slash, '/' is kept (object paths). */
int od_s3_uri_encode(od_buf *out, const char *s, size_t n, int keep_slash);

/* One query parameter (raw, not encoded). value may be "" (an empty value is still "name="). */
typedef struct od_s3_param {
    const char *name;
    const char *value;
} od_s3_param;

/* Build the canonical query string into `out` (replacing its content, NUL-terminated): every
 * name and value URI-encoded, pairs sorted by encoded name then encoded value (byte order),
 * joined with '&'. curl 7.88 signs the query exactly as given, so the request must carry this
 * string. n may be 0 (out becomes ""). OD_OK, OD_NOMEM. */
int od_s3_canonical_query(const od_s3_param *params, size_t n, od_buf *out);

/* SHA-256 of data as 64 lower-case hex characters plus NUL. */
void od_s3_sha256_hex(const void *data, size_t len, char hex[65]);

/* Percent-decode a URI query value into a new malloc'd string ('+' is kept as '+', because
 * AWS secret keys contain it). NULL on allocation failure or a malformed escape. */
char *od_s3_pct_decode(const char *s, size_t n);

/* XML reader for the small documents S3 returns (ListBucketResult, Error). Finds the first
 * <tag>...</tag> in [p, end) and returns pointers to its raw (still escaped) content; NULL
 * when absent. */
const char *od_s3_xml_find(const char *p, const char *end, const char *tag, const char **content_end);
/* Append the content [p, end) with XML entities (&amp; &lt; &gt; &quot; &apos; &#N; &#xN;)
 * decoded. OD_OK, OD_NOMEM, OD_CORRUPT (bad entity). */
int od_s3_xml_unescape(od_buf *out, const char *p, const char *end);

/* "2026-11-25T12:00:00.000Z" → unix ms; -1 when malformed. */
int64_t od_s3_parse_iso8601_ms(const char *p, size_t n);

/* Strip surrounding double quotes (and a W/ prefix) of an ETag into out (size OD_ETAG_MAX). */
void od_s3_etag_strip(const char *p, size_t n, char out[OD_ETAG_MAX]);

/* ---- store_s3.c: test hooks (tests only; never set in production) ---- */
typedef struct od_s3_test_hooks {
    const char *amz_date;      /* if set, sent as x-amz-date so curl signs with this time */
    const char *connect_to;    /* if set, CURLOPT_CONNECT_TO entry "HOST:PORT:ADDR:PORT" */
    int corrupt_sha256;        /* 1: send a wrong x-amz-content-sha256 (the server must refuse) */
    int ifmatch_quoted;        /* 1: start with the quoted If-Match form (to exercise the fallback) */
} od_s3_test_hooks;

/* Install hooks on an open s3 store (the strings are copied). OD_BADREQ if s is not s3://. */
int od_s3_test_set_hooks(od_store *s, const od_s3_test_hooks *hooks, od_err *err);

/* One signed GET on the bucket itself with the given query parameters (in any order; they are
 * canonicalised by od_s3_canonical_query). The answer's status goes to *status and its body
 * to body (may be NULL). For the SigV4 test against AWS's published "GET Bucket" example. */
int od_s3_test_bucket_get(od_store *s, const od_s3_param *params, size_t n, long *status, od_buf *body,
                          od_err *err);

/* Counters of what the backend did beyond the one request per call that the generic layer
 * counts (disambiguation HEADs, quoted If-Match retries). */
typedef struct od_s3_internal_stats {
    uint64_t extra_heads;
    uint64_t ifmatch_requoted;
    int ifmatch_quoted;        /* 1 once the store was found to need a quoted If-Match */
    uint64_t connects;         /* new TCP connections opened (connection reuse shows here) */
    uint64_t performs;         /* HTTP requests actually sent, probe and extra HEADs included */
} od_s3_internal_stats;
int od_s3_get_internal_stats(od_store *s, od_s3_internal_stats *out, od_err *err);

#endif
