/*
 * store_s3.c — the s3:// backend: any S3-compatible object store through libcurl.
 *
 *   s3://BUCKET[/PREFIX]?region=R&endpoint=http://127.0.0.1:PORT&path_style=1
 *       [&access_key=..&secret_key=..&session_token=..]   credentials (else AWS_* env vars)
 *       [&retries=N]            retries of the generic layer (attempts = N + 1; default 5)
 *       [&timeout_ms=N]         total time per request (default 0: none, big objects take long)
 *       [&stall_ms=N]           abort a request that moves < 1 KiB/s for this long (default 15000)
 *       [&connect_timeout_ms=N] TCP/TLS connect time (default 5000)
 *       [&list_page=N]          max-keys per ListObjectsV2 page (1..1000, default 1000)
 *       [&list_sort=1]          the store does not list in byte order (s3rver): fetch every
 *                               page of a listing, sort, then deliver
 *       [&single_writer=1]      declare a single-writer deployment (caps.single_writer_only)
 *       [&probe=0]              skip the conditional-write probe at open (then caps report 0)
 *   Without endpoint: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else https://s3.REGION.amazonaws.com. Region: the URI,
 *   AWS_REGION, AWS_DEFAULT_REGION, else us-east-1. path_style defaults to 1 with an explicit
 *   endpoint and to 0 (virtual-hosted, BUCKET.host) without. Values are percent-decoded; '+'
 *   stays '+' (AWS secrets contain it).
 *
 * Owns: the parsed configuration (credentials included — they are never printed, logged or
 * put in od_store_describe or an error message) and a pool of idle curl easy handles.
 *
 * How it works
 *   Signing: libcurl signs with CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3". curl 7.88 signs every
 *   header we add (lower-cased, sorted) plus host and x-amz-date, takes the payload hash from
 *   our x-amz-content-sha256 header (SHA-256 of the body, computed with mbedTLS), and signs the
 *   path and query exactly as given. So paths are URI-encoded here ('/' kept) and query
 *   strings are built by od_s3_canonical_query (sorted by name, SigV4-encoded). No header is
 *   ever added with an empty value: curl would sign it without sending it.
 *   Connections: a handle is taken from the idle pool (or created), curl_easy_reset (which
 *   keeps its live connections and DNS cache), configured, performed, and given back. So
 *   concurrent callers each use their own handle and sequential calls reuse connections.
 *   One attempt per call: retryable failures (5xx, 429, 503 SlowDown, timeouts, connection
 *   errors) return OD_TRANSIENT and the generic layer (objstore.c) retries with backoff and
 *   resolves ambiguous conditional writes by reading the object back.
 *   Status mapping: see map_status(). Error messages carry the S3 error Code and Message.
 *   Conditional writes: If-None-Match: * (412 → OD_EXISTS); If-Match with the ETag sent
 *   UNQUOTED (radosgw refuses the quoted form). A 412 on If-Match is disambiguated with a
 *   HEAD: missing → OD_NOTFOUND (radosgw answers 412, AWS 404); same ETag as ours → the store
 *   wanted the other quoting, retry once with it and remember; else OD_PRECONDITION. A 5xx on
 *   a conditional write may be a lost race or a landed write: OD_TRANSIENT, never success.
 *   Probe: at open, PUT If-None-Match: * of a fresh probe key twice, then PUT If-Match with a
 *   wrong ETag. caps.conditional_writes = 1 only when the second and third are refused (412);
 *   a 200 means the store silently overwrote (s3rver ignores both headers). The probe key is
 *   deleted. It costs 4 requests (not counted in the handle's stats) and also checks bucket,
 *   endpoint and credentials.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "od_objstore_impl.h"
#include "s3_internal.h"

enum { POOL_MAX = 32, ERRBODY_MAX = 16384 };

typedef struct s3_store {
    od_store base;
    char *bucket;
    char *prefix;          /* "" or "some/prefix/" (always ends with '/') */
    char *region;
    char *endpoint;        /* scheme://host[:port] without trailing '/' */
    int path_style;
    char *access_key, *secret_key, *session_token;
    long timeout_ms, connect_timeout_ms, stall_ms;
    int list_page;
    int list_sort;         /* 1: the store does not list in byte order; fetch all, then sort */
    char sigv4[128];
    /* idle easy handles */
    pthread_mutex_t pool_mu;
    CURL *idle[POOL_MAX];
    int nidle;
    /* If-Match quoting learnt from the store (0 unquoted, 1 quoted) and counters */
    atomic_int ifmatch_quoted;
    atomic_ullong extra_heads, ifmatch_requoted, connects, performs;
    /* test hooks */
    char *hook_amz_date, *hook_connect_to;
    int hook_corrupt_sha256;
} s3_store;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---------------------------------------------------------------- handles */

static CURL *conn_take(s3_store *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->nidle) h = s->idle[--s->nidle];
    pthread_mutex_unlock(&s->pool_mu);
    if (h) curl_easy_reset(h);
    else h = curl_easy_init();
    return h;
}

static void conn_give(s3_store *s, CURL *h)
{
    pthread_mutex_lock(&s->pool_mu);
    if (s->nidle < POOL_MAX) {
        s->idle[s->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (h) curl_easy_cleanup(h);
}

/* ---------------------------------------------------------------- one request */

typedef struct s3_resp {
    CURL *h;
    long status;
    od_buf *sink;          /* body of a 2xx answer (NULL: discard) */
    od_buf errbody;        /* body of any other answer (capped) */
    int nomem;
    char etag[OD_ETAG_MAX];
    int has_etag;
    int64_t content_length;
    int64_t mtime_ms;
} s3_resp;

typedef struct s3_upload {
    const uint8_t *base, *p;
    size_t len, left;
} s3_upload;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    s3_resp *r = ud;
    size_t n = size * nmemb;
    long st = 0;
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &st);
    if (st >= 200 && st < 300) {
        if (!r->sink) return n;
        if (od_buf_append(r->sink, ptr, n)) {
            r->nomem = 1;
            return 0;
        }
    } else if (r->errbody.len < ERRBODY_MAX) {
        size_t take = n < ERRBODY_MAX - r->errbody.len ? n : ERRBODY_MAX - r->errbody.len;
        if (od_buf_append(&r->errbody, ptr, take)) r->nomem = 1;
    }
    return n;
}

static int hdr_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return 0;
    const char *v = line + nl + 1;
    const char *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return 1;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    s3_resp *r = ud;
    size_t n = size * nmemb;
    const char *v;
    size_t vl;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (e.g. after 100 Continue) */
        r->has_etag = 0;
        r->content_length = -1;
        r->mtime_ms = 0;
    } else if (hdr_is(line, n, "etag", &v, &vl)) {
        od_s3_etag_strip(v, vl, r->etag);
        r->has_etag = 1;
    } else if (hdr_is(line, n, "content-length", &v, &vl)) {
        char tmp[32];
        if (vl < sizeof tmp) {
            memcpy(tmp, v, vl);
            tmp[vl] = 0;
            r->content_length = strtoll(tmp, NULL, 10);
        }
    } else if (hdr_is(line, n, "last-modified", &v, &vl)) {
        char tmp[64];
        if (vl < sizeof tmp) {
            memcpy(tmp, v, vl);
            tmp[vl] = 0;
            time_t t = curl_getdate(tmp, NULL);
            if (t > 0) r->mtime_ms = (int64_t)t * 1000;
        }
    }
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    s3_upload *u = ud;
    size_t n = size * nmemb;
    if (n > u->left) n = u->left;
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

/* curl rewinds the upload when it re-sends a request (a reused connection the server had
 * closed, a 100-continue refusal): without this the retry would have no body. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
    s3_upload *u = ud;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > u->len) return CURL_SEEKFUNC_FAIL;
    u->p = u->base + offset;
    u->left = u->len - (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int add_header(struct curl_slist **l, const char *fmt, const char *a, const char *b)
{
    char line[2048];
    int n = snprintf(line, sizeof line, fmt, a, b ? b : "");
    if (n < 0 || (size_t)n >= sizeof line) return OD_BADREQ;
    struct curl_slist *nl = curl_slist_append(*l, line);
    if (!nl) return OD_NOMEM;
    *l = nl;
    return OD_OK;
}

/* URL for key (relative to the store prefix; NULL for the bucket itself) and query. */
static int build_url(s3_store *s, const char *key, const char *query, od_buf *url)
{
    int rc = OD_OK;
    const char *ep = s->endpoint;
    const char *hs = strstr(ep, "://");
    if (s->path_style) {
        rc = od_buf_printf(url, "%s/", ep);
        if (!rc) rc = od_s3_uri_encode(url, s->bucket, strlen(s->bucket), 0);
        if (!rc && key) rc = od_buf_append_u8(url, '/');
    } else {
        size_t schemelen = (size_t)(hs - ep) + 3;
        rc = od_buf_append(url, ep, schemelen);
        if (!rc) rc = od_buf_printf(url, "%s.%s/", s->bucket, ep + schemelen);
    }
    if (!rc && key) rc = od_s3_uri_encode(url, s->prefix, strlen(s->prefix), 1);
    if (!rc && key) rc = od_s3_uri_encode(url, key, strlen(key), 1);
    if (!rc && query && *query) rc = od_buf_printf(url, "?%s", query);
    if (!rc) rc = od_buf_cstr(url);
    return rc;
}

typedef enum { M_GET, M_HEAD, M_PUT, M_DELETE } s3_method;
static const char *const method_name[] = {"GET", "HEAD", "PUT", "DELETE"};

/* Perform one request. Returns OD_OK when an HTTP answer arrived (status in r->status),
 * otherwise the transport failure mapped to a code with a message. */
static int perform(s3_store *s, s3_method m, const char *key, const char *query, const void *body, size_t blen,
                   struct curl_slist *extra, s3_resp *r, od_err *err)
{
    const char *what = key ? key : "(bucket)";
    od_buf url = {0};
    struct curl_slist *hdrs = NULL;
    int rc = build_url(s, key, query, &url);
    if (rc) {
        od_buf_free(&url);
        return od_err_set(err, OD_NOMEM, "s3: out of memory building the URL for \"%.200s\"", what);
    }
    char sha[65];
    od_s3_sha256_hex(body ? body : "", body ? blen : 0, sha);
    if (s->hook_corrupt_sha256) sha[0] = sha[0] == '0' ? '1' : '0';
    rc = add_header(&hdrs, "x-amz-content-sha256: %s%s", sha, NULL);
    if (!rc && s->session_token) rc = add_header(&hdrs, "x-amz-security-token: %s%s", s->session_token, NULL);
    if (!rc && s->hook_amz_date) rc = add_header(&hdrs, "x-amz-date: %s%s", s->hook_amz_date, NULL);
    for (struct curl_slist *e = extra; !rc && e; e = e->next) rc = add_header(&hdrs, "%s%s", e->data, NULL);
    CURL *h = rc ? NULL : conn_take(s);
    if (!h) {
        curl_slist_free_all(hdrs);
        od_buf_free(&url);
        return od_err_set(err, rc == OD_BADREQ ? OD_BADREQ : OD_NOMEM, "s3: cannot prepare %s \"%.200s\"%s",
                          method_name[m], what, rc == OD_BADREQ ? ": header too long" : ": out of memory");
    }
    struct curl_slist *connect_to = NULL;
    if (s->hook_connect_to) connect_to = curl_slist_append(NULL, s->hook_connect_to);
    od_buf *sink = r->sink; /* the only field the caller sets */
    memset(r, 0, sizeof *r);
    r->sink = sink;
    r->h = h;
    r->content_length = -1;
    s3_upload up = {body, body, body ? blen : 0, body ? blen : 0};
    curl_easy_setopt(h, CURLOPT_URL, (const char *)url.data);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, s->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret_key);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    if (s->timeout_ms > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->stall_ms < 1000 ? 1L : s->stall_ms / 1000);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "opendata-sqlite");
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 300L);
    if (connect_to) curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
    switch (m) {
    case M_GET: break;
    case M_HEAD: curl_easy_setopt(h, CURLOPT_NOBODY, 1L); break;
    case M_PUT:
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &up);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &up);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up.left);
        break;
    case M_DELETE: curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE"); break;
    }
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    long nconn = 0;
    if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn) == CURLE_OK && nconn > 0)
        atomic_fetch_add(&s->connects, (unsigned long long)nconn);
    atomic_fetch_add(&s->performs, 1);
    r->h = NULL;
    conn_give(s, h);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(connect_to);
    od_buf_free(&url);
    if (r->nomem) return od_err_set(err, OD_NOMEM, "s3: out of memory reading %s \"%.200s\"", method_name[m], what);
    if (cc == CURLE_OK) return OD_OK;
    int code;
    switch (cc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        code = OD_BADREQ;
        break;
    case CURLE_OUT_OF_MEMORY: code = OD_NOMEM; break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        code = OD_PERMANENT;
        break;
    default: code = OD_TRANSIENT; break; /* timeouts, refused/reset connections, DNS, ... */
    }
    return od_err_set(err, code, "s3: %s \"%.200s\" on %s: %s", method_name[m], what, s->base.desc,
                      curl_easy_strerror(cc));
}

/* Copy <tag> of the error XML body into out (decoded, truncated). */
static void err_field(const od_buf *b, const char *tag, char *out, size_t cap)
{
    out[0] = 0;
    if (!b->len) return;
    const char *ce;
    const char *c = od_s3_xml_find((const char *)b->data, (const char *)b->data + b->len, tag, &ce);
    if (!c) return;
    od_buf t = {0};
    if (od_s3_xml_unescape(&t, c, ce) == OD_OK && od_buf_cstr(&t) == OD_OK) snprintf(out, cap, "%s", (char *)t.data);
    od_buf_free(&t);
}

typedef enum { C_NONE, C_IF_NONE_MATCH, C_IF_MATCH } s3_cond;

/* Map a non-2xx answer to an od code and a message "s3: OP "key" on DESC: HTTP N Code: Message". */
static int map_status(s3_store *s, s3_method m, const char *key, s3_resp *r, s3_cond cond, od_err *err)
{
    char code[96], msg[256];
    err_field(&r->errbody, "Code", code, sizeof code);
    err_field(&r->errbody, "Message", msg, sizeof msg);
    long st = r->status;
    int rc;
    const char *note = "";
    if (st == 404 && strcmp(code, "NoSuchBucket") == 0) {
        rc = OD_PERMANENT;
        note = " (the bucket does not exist)";
    } else if (st == 404) {
        rc = OD_NOTFOUND;
    } else if (st == 412) {
        rc = cond == C_IF_NONE_MATCH ? OD_EXISTS : OD_PRECONDITION;
    } else if (st == 401 || st == 403) {
        rc = OD_AUTH;
        if (strcmp(code, "RequestTimeTooSkewed") == 0) note = " (check the clock)";
    } else if (st == 400 && (strcmp(code, "RequestTimeout") == 0 || strcmp(code, "ExpiredToken") == 0)) {
        rc = strcmp(code, "ExpiredToken") == 0 ? OD_AUTH : OD_TRANSIENT;
    } else if (st == 400 && (strcmp(code, "XAmzContentSHA256Mismatch") == 0 || strcmp(code, "BadDigest") == 0)) {
        rc = OD_CORRUPT;
        note = " (payload hash mismatch)";
    } else if (st == 400 && strcmp(code, "AuthorizationHeaderMalformed") == 0) {
        rc = OD_AUTH;
    } else if (st == 416) {
        rc = OD_BADREQ;
        note = " (range starts beyond the end of the object)";
    } else if (st == 409 && strcmp(code, "ConditionalRequestConflict") == 0) {
        rc = OD_TRANSIENT;
    } else if (st == 408 || st == 429 || st >= 500) {
        rc = OD_TRANSIENT;
        if (cond != C_NONE && st >= 500) note = " (conditional write: a lost race or a landed write; re-read)";
    } else if (st == 301 || st == 307 || st == 308) {
        rc = OD_PERMANENT;
        note = " (redirect: wrong region or endpoint?)";
    } else if (st >= 400 && st < 500) {
        rc = st == 400 ? OD_BADREQ : OD_PERMANENT;
    } else {
        rc = OD_PERMANENT;
    }
    return od_err_set(err, rc, "s3: %s \"%.200s\" on %.100s: HTTP %ld%s%s%s%s%s", method_name[m], key ? key : "(bucket)",
                      s->base.desc, st, code[0] ? " " : "", code, msg[0] ? ": " : "", msg, note);
}

static void fill_meta(const s3_resp *r, uint64_t size, od_obj_meta *meta)
{
    if (!meta) return;
    meta->size = size;
    snprintf(meta->etag, sizeof meta->etag, "%s", r->has_etag ? r->etag : "");
    meta->mtime_ms = r->mtime_ms;
}

/* ---------------------------------------------------------------- ops */

static int s3_get(od_store *st, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    s3_store *s = (s3_store *)st;
    s3_resp r;
    memset(&r, 0, sizeof r);
    r.sink = out;
    int rc = perform(s, M_GET, key, NULL, NULL, 0, NULL, &r, err);
    if (rc == OD_OK) {
        if (r.status == 200) fill_meta(&r, out->len, meta);
        else rc = map_status(s, M_GET, key, &r, C_NONE, err);
    }
    od_buf_free(&r.errbody);
    return rc;
}

static int s3_get_range(od_store *st, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    s3_store *s = (s3_store *)st;
    uint64_t last = len > UINT64_MAX - off ? UINT64_MAX - 1 : off + len - 1;
    char range[80];
    snprintf(range, sizeof range, "Range: bytes=%llu-%llu", (unsigned long long)off, (unsigned long long)last);
    struct curl_slist one = {range, NULL};
    s3_resp r;
    memset(&r, 0, sizeof r);
    r.sink = out;
    int rc = perform(s, M_GET, key, NULL, NULL, 0, &one, &r, err);
    if (rc == OD_OK) {
        if (r.status == 206) {
            if (out->len > len) out->len = (size_t)len;
        } else if (r.status == 200) { /* the store ignored Range: cut the window out ourselves */
            if (off >= out->len) {
                rc = od_err_set(err, OD_BADREQ, "s3: range offset %llu beyond the end of \"%.200s\" (%zu bytes)",
                                (unsigned long long)off, key, out->len);
            } else {
                size_t n = out->len - (size_t)off;
                if (n > len) n = (size_t)len;
                memmove(out->data, out->data + off, n);
                out->len = n;
            }
        } else {
            rc = map_status(s, M_GET, key, &r, C_NONE, err);
        }
    }
    od_buf_free(&r.errbody);
    return rc;
}

static int s3_head(od_store *st, const char *key, od_obj_meta *meta, od_err *err)
{
    s3_store *s = (s3_store *)st;
    s3_resp r;
    memset(&r, 0, sizeof r);
    int rc = perform(s, M_HEAD, key, NULL, NULL, 0, NULL, &r, err);
    if (rc == OD_OK) {
        if (r.status == 200) fill_meta(&r, r.content_length > 0 ? (uint64_t)r.content_length : 0, meta);
        else rc = map_status(s, M_HEAD, key, &r, C_NONE, err);
    }
    od_buf_free(&r.errbody);
    return rc;
}

/* One PUT attempt with the given condition header (NULL: unconditional). */
static int put_once(s3_store *s, const char *key, const void *data, size_t len, const char *cond_hdr, s3_cond cond,
                    od_obj_meta *meta_out, od_err *err)
{
    struct curl_slist one = {(char *)cond_hdr, NULL};
    s3_resp r;
    memset(&r, 0, sizeof r);
    int rc = perform(s, M_PUT, key, NULL, data, len, cond_hdr ? &one : NULL, &r, err);
    if (rc == OD_OK) {
        if (r.status == 200 || r.status == 201 || r.status == 204) fill_meta(&r, len, meta_out);
        else rc = map_status(s, M_PUT, key, &r, cond, err);
    }
    od_buf_free(&r.errbody);
    return rc;
}

static int s3_put(od_store *st, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                  od_obj_meta *meta_out, od_err *err)
{
    s3_store *s = (s3_store *)st;
    if (mode == OD_PUT_ALWAYS) return put_once(s, key, data, len, NULL, C_NONE, meta_out, err);
    if (mode == OD_PUT_IF_ABSENT) return put_once(s, key, data, len, "If-None-Match: *", C_IF_NONE_MATCH, meta_out, err);

    char want[OD_ETAG_MAX];
    od_s3_etag_strip(etag, strlen(etag), want);
    if (!want[0] || strpbrk(want, "\"\r\n"))
        return od_err_set(err, OD_BADREQ, "s3: conditional replace of \"%.200s\" with a malformed ETag", key);
    char hq[OD_ETAG_MAX + 16], hu[OD_ETAG_MAX + 16];
    snprintf(hq, sizeof hq, "If-Match: \"%s\"", want);
    snprintf(hu, sizeof hu, "If-Match: %s", want);
    int quoted = atomic_load(&s->ifmatch_quoted);
    int rc = put_once(s, key, data, len, quoted ? hq : hu, C_IF_MATCH, meta_out, err);
    if (rc != OD_PRECONDITION) return rc;

    /* 412: changed, missing (radosgw), or the store wanted the other quoting. Ask. */
    atomic_fetch_add(&s->extra_heads, 1);
    od_obj_meta cur;
    od_err herr;
    int hrc = s3_head(st, key, &cur, &herr);
    if (hrc == OD_NOTFOUND)
        return od_err_set(err, OD_NOTFOUND, "s3: conditional replace of missing \"%.200s\" on %.100s", key,
                          s->base.desc);
    if (hrc != OD_OK) return od_err_copy(err, &herr);
    if (strcmp(cur.etag, want) != 0)
        return od_err_set(err, OD_PRECONDITION, "s3: \"%.200s\" changed (ETag %s, expected %s) on %.100s", key,
                          cur.etag, want, s->base.desc);
    atomic_fetch_add(&s->ifmatch_requoted, 1);
    rc = put_once(s, key, data, len, quoted ? hu : hq, C_IF_MATCH, meta_out, err);
    if (rc == OD_OK) atomic_store(&s->ifmatch_quoted, !quoted);
    return rc;
}

static int s3_del(od_store *st, const char *key, od_err *err)
{
    s3_store *s = (s3_store *)st;
    s3_resp r;
    memset(&r, 0, sizeof r);
    int rc = perform(s, M_DELETE, key, NULL, NULL, 0, NULL, &r, err);
    if (rc == OD_OK && !(r.status == 200 || r.status == 204 || r.status == 404))
        rc = map_status(s, M_DELETE, key, &r, C_NONE, err);
    od_buf_free(&r.errbody);
    return rc;
}

/* One parsed ListObjectsV2 page. */
typedef struct list_page {
    char **keys;
    od_obj_meta *metas;
    size_t n, cap;
    int truncated;
    char *token;
} list_page;

static void page_clear(list_page *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->keys[i]);
    free(p->keys);
    free(p->metas);
    free(p->token);
    memset(p, 0, sizeof *p);
}

static char *xml_text(const char *c, const char *ce)
{
    od_buf t = {0};
    if (od_s3_xml_unescape(&t, c, ce) || od_buf_cstr(&t)) {
        od_buf_free(&t);
        return NULL;
    }
    if (!t.data) return strdup("");
    return (char *)t.data;
}

static int parse_page(s3_store *s, const od_buf *body, list_page *pg, od_err *err)
{
    const char *p = (const char *)body->data, *end = p + body->len;
    const char *ce;
    const char *c = od_s3_xml_find(p, end, "IsTruncated", &ce);
    pg->truncated = c && (size_t)(ce - c) == 4 && memcmp(c, "true", 4) == 0;
    if (pg->truncated) {
        c = od_s3_xml_find(p, end, "NextContinuationToken", &ce);
        if (!c || ce == c || !(pg->token = xml_text(c, ce)))
            return od_err_set(err, OD_CORRUPT, "s3: LIST on %.100s: truncated page without NextContinuationToken",
                              s->base.desc);
    }
    size_t plen = strlen(s->prefix);
    for (;;) {
        const char *cend;
        const char *cc = od_s3_xml_find(p, end, "Contents", &cend);
        if (!cc) break;
        p = cend + 1;
        const char *ke, *k = od_s3_xml_find(cc, cend, "Key", &ke);
        if (!k) return od_err_set(err, OD_CORRUPT, "s3: LIST on %.100s: <Contents> without <Key>", s->base.desc);
        char *full = xml_text(k, ke);
        if (!full) return od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
        if (strncmp(full, s->prefix, plen) != 0 || !full[plen]) { /* not under our prefix: skip */
            free(full);
            continue;
        }
        if (pg->n == pg->cap) {
            size_t nc = pg->cap ? pg->cap * 2 : 256;
            char **nk = realloc(pg->keys, nc * sizeof *nk);
            if (nk) pg->keys = nk;
            od_obj_meta *nm = nk ? realloc(pg->metas, nc * sizeof *nm) : NULL;
            if (nm) pg->metas = nm;
            if (!nk || !nm) {
                free(full);
                return od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
            }
            pg->cap = nc;
        }
        memmove(full, full + plen, strlen(full + plen) + 1);
        od_obj_meta *m = &pg->metas[pg->n];
        memset(m, 0, sizeof *m);
        const char *ve, *v = od_s3_xml_find(cc, cend, "Size", &ve);
        if (v) m->size = strtoull(v, NULL, 10);
        v = od_s3_xml_find(cc, cend, "ETag", &ve);
        if (v) {
            od_buf t = {0};
            if (od_s3_xml_unescape(&t, v, ve) == OD_OK) od_s3_etag_strip((const char *)t.data, t.len, m->etag);
            od_buf_free(&t);
        }
        v = od_s3_xml_find(cc, cend, "LastModified", &ve);
        if (v) {
            int64_t ms = od_s3_parse_iso8601_ms(v, (size_t)(ve - v));
            m->mtime_ms = ms > 0 ? ms : 0;
        }
        pg->keys[pg->n++] = full;
    }
    return OD_OK;
}

typedef struct key_meta {
    char *key;
    od_obj_meta meta;
} key_meta;

static int key_meta_cmp(const void *a, const void *b)
{
    return strcmp(((const key_meta *)a)->key, ((const key_meta *)b)->key);
}

/* Sort an accumulated listing (list_sort=1) by key; metas move with their keys. */
static int sort_page(list_page *pg)
{
    if (pg->n < 2) return OD_OK;
    key_meta *km = malloc(pg->n * sizeof *km);
    if (!km) return OD_NOMEM;
    for (size_t i = 0; i < pg->n; i++) km[i] = (key_meta){pg->keys[i], pg->metas[i]};
    qsort(km, pg->n, sizeof *km, key_meta_cmp);
    for (size_t i = 0; i < pg->n; i++) {
        pg->keys[i] = km[i].key;
        pg->metas[i] = km[i].meta;
    }
    free(km);
    return OD_OK;
}

/* Fetch pages of ListObjectsV2 and deliver keys in ascending order. Normally each page is
 * delivered as it arrives; with list_sort=1 (stores that do not list in byte order, such as
 * s3rver which walks its directories depth-first) every page is fetched first, then sorted.
 * A key that is not greater than the previous one is reported as OD_CORRUPT rather than
 * handed to a caller that relies on the order. */
static int s3_list(od_store *st, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    s3_store *s = (s3_store *)st;
    od_buf full_prefix = {0}, full_after = {0}, query = {0};
    char maxkeys[16];
    snprintf(maxkeys, sizeof maxkeys, "%d", s->list_page);
    int rc = od_buf_printf(&full_prefix, "%s%s", s->prefix, prefix);
    if (!rc && start_after) rc = od_buf_printf(&full_after, "%s%s", s->prefix, start_after);
    if (!rc) rc = od_buf_cstr(&full_prefix);
    if (!rc && start_after) rc = od_buf_cstr(&full_after);
    if (rc) rc = od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
    char *token = NULL, *prev = NULL;
    int stop = 0, more = 1;
    list_page all;
    memset(&all, 0, sizeof all);
    while (rc == OD_OK && more && !stop) {
        od_s3_param params[4] = {{"list-type", "2"}, {"max-keys", maxkeys}, {"prefix", (char *)full_prefix.data}};
        size_t np = 3;
        if (token) params[np++] = (od_s3_param){"continuation-token", token};
        else if (start_after) params[np++] = (od_s3_param){"start-after", (char *)full_after.data};
        if (od_s3_canonical_query(params, np, &query)) {
            rc = od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
            break;
        }
        od_buf body = {0};
        s3_resp r;
        memset(&r, 0, sizeof r);
        r.sink = &body;
        od_store_count_list_page(st);
        rc = perform(s, M_GET, NULL, (const char *)query.data, NULL, 0, NULL, &r, err);
        if (rc == OD_OK && r.status != 200) rc = map_status(s, M_GET, NULL, &r, C_NONE, err);
        od_buf_free(&r.errbody);
        list_page pg;
        memset(&pg, 0, sizeof pg);
        if (rc == OD_OK) rc = parse_page(s, &body, s->list_sort ? &all : &pg, err);
        od_buf_free(&body);
        free(token);
        token = NULL;
        list_page *got = s->list_sort ? &all : &pg;
        more = rc == OD_OK && got->truncated;
        if (more) {
            token = got->token;
            got->token = NULL;
        }
        if (rc == OD_OK && s->list_sort && !more && sort_page(&all))
            rc = od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
        if (rc == OD_OK && (!s->list_sort || !more)) {
            for (size_t i = 0; i < got->n && !stop; i++) {
                const char *k = got->keys[i];
                if (start_after && strcmp(k, start_after) <= 0) continue;
                if (prev && strcmp(k, prev) <= 0) {
                    if (s->list_sort && strcmp(k, prev) == 0) continue; /* duplicate across pages */
                    rc = od_err_set(err, OD_CORRUPT,
                                    "s3: LIST on %.100s returned \"%.200s\" after \"%.200s\": the store does not "
                                    "list in byte order (for s3rver add list_sort=1 to the URI)",
                                    s->base.desc, k, prev);
                    break;
                }
                free(prev);
                prev = strdup(k);
                if (!prev) {
                    rc = od_err_set(err, OD_NOMEM, "s3: out of memory listing %.100s", s->base.desc);
                    break;
                }
                if (cb(ctx, k, &got->metas[i])) stop = 1;
            }
        }
        page_clear(&pg);
    }
    page_clear(&all);
    free(prev);
    free(token);
    od_buf_free(&full_prefix);
    od_buf_free(&full_after);
    od_buf_free(&query);
    return rc;
}

static void s3_free(s3_store *s)
{
    for (int i = 0; i < s->nidle; i++) curl_easy_cleanup(s->idle[i]);
    pthread_mutex_destroy(&s->pool_mu);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->endpoint);
    free(s->access_key);
    if (s->secret_key) {
        memset(s->secret_key, 0, strlen(s->secret_key));
        free(s->secret_key);
    }
    free(s->session_token);
    free(s->hook_amz_date);
    free(s->hook_connect_to);
    free(s);
}

static void s3_close(od_store *st)
{
    s3_store *s = (s3_store *)st;
    od_store_destroy_base(st);
    s3_free(s);
}

static const od_store_ops s3_ops = {
    .get = s3_get, .get_range = s3_get_range, .head = s3_head, .put = s3_put,
    .del = s3_del, .list = s3_list, .close = s3_close,
};

/* ---------------------------------------------------------------- open */

static int probe(s3_store *s, od_err *err)
{
    int rc = OD_OK;
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned char rnd[8] = {0};
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            memcpy(rnd, &ts.tv_nsec, sizeof ts.tv_nsec < 8 ? sizeof ts.tv_nsec : 8);
        }
        char key[64];
        snprintf(key, sizeof key, ".od-probe-%d-%02x%02x%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        static const char body[] = "opendata conditional-write probe";
        rc = s3_put(&s->base, key, body, sizeof body - 1, OD_PUT_IF_ABSENT, NULL, NULL, err);
        if (rc == OD_OK) {
            rc = s3_put(&s->base, key, body, sizeof body - 1, OD_PUT_IF_ABSENT, NULL, NULL, err);
            if (rc == OD_OK) s->base.caps.conditional_writes = 0;
            if (rc == OD_EXISTS) {
                /* If-None-Match is honoured; If-Match too? (AWS honoured the first months before
                 * the second.) A wrong ETag must be refused, in either quoting. */
                rc = put_once(s, key, body, sizeof body - 1, "If-Match: 00000000000000000000000000000000",
                              C_IF_MATCH, NULL, err);
                s->base.caps.conditional_writes = rc == OD_PRECONDITION;
                if (rc == OD_PRECONDITION) rc = OD_OK;
            }
        } else if (rc == OD_EXISTS) { /* a landed earlier attempt, or a clash: try a fresh key */
            rc = OD_TRANSIENT;
        }
        od_err derr;
        if (s3_del(&s->base, key, &derr) != OD_OK && rc == OD_OK) rc = od_err_copy(err, &derr);
        if (rc != OD_TRANSIENT) break;
        usleep(100000u << attempt);
    }
    if (rc) od_err_prefix(err, "s3: conditional-write probe at open failed");
    return rc;
}

static char *dup_n(const char *p, size_t n)
{
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, p, n);
        r[n] = 0;
    }
    return r;
}

static int parse_long(const char *name, const char *v, long lo, long hi, long *out, od_err *err)
{
    char *e;
    long x = strtol(v, &e, 10);
    if (!*v || *e || x < lo || x > hi)
        return od_err_set(err, OD_BADREQ, "s3: URI parameter %s=\"%.40s\" must be an integer in [%ld, %ld]", name, v,
                          lo, hi);
    *out = x;
    return OD_OK;
}

static int set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
    return *dst ? OD_OK : OD_NOMEM;
}

int od_store_open_s3(const char *rest, od_store **out, od_err *err)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) return od_err_set(err, OD_PERMANENT, "s3: curl_global_init failed");
    s3_store *s = calloc(1, sizeof *s);
    if (!s) return od_err_set(err, OD_NOMEM, "s3: out of memory");
    pthread_mutex_init(&s->pool_mu, NULL);
    s->timeout_ms = 0;
    s->stall_ms = 15000;
    s->connect_timeout_ms = 5000;
    s->list_page = 1000;
    int path_style = -1, single_writer = 0, do_probe = 1;
    long retries = -1;
    int rc = OD_OK;

    const char *q = strchr(rest, '?');
    size_t loc_len = q ? (size_t)(q - rest) : strlen(rest);
    const char *slash = memchr(rest, '/', loc_len);
    size_t blen = slash ? (size_t)(slash - rest) : loc_len;
    s->bucket = dup_n(rest, blen);
    char *pfx = slash ? dup_n(slash + 1, loc_len - blen - 1) : strdup("");
    if (!s->bucket || !pfx) {
        free(pfx);
        rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
        goto fail;
    }
    if (!blen || strspn(s->bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-_ABCDEFGHIJKLMNOPQRSTUVWXYZ") != blen) {
        free(pfx);
        rc = od_err_set(err, OD_BADREQ, "s3: URI \"s3://%.*s\" needs a bucket name (s3://BUCKET/PREFIX?...)",
                        (int)(loc_len < 200 ? loc_len : 200), rest);
        goto fail;
    }
    /* prefix: trim slashes, validate like a key, store with a trailing '/' */
    {
        char *p = pfx;
        while (*p == '/') p++;
        size_t n = strlen(p);
        while (n && p[n - 1] == '/') p[--n] = 0;
        if (n && od_key_validate(p, err) != OD_OK) {
            free(pfx);
            od_err_prefix(err, "s3: bad prefix in store URI");
            rc = OD_BADREQ;
            goto fail;
        }
        s->prefix = malloc(n + 2);
        if (s->prefix) snprintf(s->prefix, n + 2, "%s%s", p, n ? "/" : "");
        free(pfx);
        if (!s->prefix) {
            rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
            goto fail;
        }
    }
    /* query parameters */
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t nl = eq ? (size_t)(eq - p) : n;
        char name[40];
        if (nl == 0 || nl >= sizeof name) {
            rc = od_err_set(err, OD_BADREQ, "s3: malformed parameter in store URI");
            goto fail;
        }
        memcpy(name, p, nl);
        name[nl] = 0;
        char *v = eq ? od_s3_pct_decode(eq + 1, n - nl - 1) : strdup("");
        if (!v) {
            rc = od_err_set(err, OD_BADREQ, "s3: URI parameter %s has a malformed %%-escape", name);
            goto fail;
        }
        long x = 0;
        if (!strcmp(name, "region")) rc = set_str(&s->region, v);
        else if (!strcmp(name, "endpoint")) rc = set_str(&s->endpoint, v);
        else if (!strcmp(name, "access_key")) rc = set_str(&s->access_key, v);
        else if (!strcmp(name, "secret_key")) rc = set_str(&s->secret_key, v);
        else if (!strcmp(name, "session_token")) rc = set_str(&s->session_token, v);
        else if (!strcmp(name, "path_style")) { rc = parse_long(name, v, 0, 1, &x, err); path_style = (int)x; }
        else if (!strcmp(name, "single_writer")) { rc = parse_long(name, v, 0, 1, &x, err); single_writer = (int)x; }
        else if (!strcmp(name, "probe")) { rc = parse_long(name, v, 0, 1, &x, err); do_probe = (int)x; }
        else if (!strcmp(name, "retries")) rc = parse_long(name, v, 0, 100, &retries, err);
        else if (!strcmp(name, "timeout_ms")) rc = parse_long(name, v, 0, 3600000, &s->timeout_ms, err);
        else if (!strcmp(name, "stall_ms")) rc = parse_long(name, v, 1000, 3600000, &s->stall_ms, err);
        else if (!strcmp(name, "connect_timeout_ms")) rc = parse_long(name, v, 1, 600000, &s->connect_timeout_ms, err);
        else if (!strcmp(name, "list_page")) { rc = parse_long(name, v, 1, 1000, &x, err); s->list_page = (int)x; }
        else if (!strcmp(name, "list_sort")) { rc = parse_long(name, v, 0, 1, &x, err); s->list_sort = (int)x; }
        else rc = od_err_set(err, OD_BADREQ, "s3: unknown parameter \"%s\" in store URI", name);
        if (rc == OD_NOMEM) od_err_set(err, OD_NOMEM, "s3: out of memory");
        if (v) memset(v, 0, strlen(v));
        free(v);
        if (rc) goto fail;
        p = amp ? amp + 1 : NULL;
    }
    /* environment fallbacks */
    struct { char **dst; const char *env1, *env2; } envs[] = {
        {&s->access_key, "AWS_ACCESS_KEY_ID", NULL},
        {&s->secret_key, "AWS_SECRET_ACCESS_KEY", NULL},
        {&s->region, "AWS_REGION", "AWS_DEFAULT_REGION"},
        {&s->endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"},
    };
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        if (*envs[i].dst) continue;
        const char *e = getenv(envs[i].env1);
        if ((!e || !*e) && envs[i].env2) e = getenv(envs[i].env2);
        if (e && *e && set_str(envs[i].dst, e)) {
            rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
            goto fail;
        }
    }
    /* the session token only comes from the environment when the keys did too */
    if (!s->session_token && getenv("AWS_SESSION_TOKEN") && *getenv("AWS_SESSION_TOKEN") && s->access_key &&
        getenv("AWS_ACCESS_KEY_ID") && strcmp(getenv("AWS_ACCESS_KEY_ID"), s->access_key) == 0 &&
        set_str(&s->session_token, getenv("AWS_SESSION_TOKEN"))) {
        rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
        goto fail;
    }
    if (!s->region && set_str(&s->region, "us-east-1")) {
        rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
        goto fail;
    }
    if (strpbrk(s->region, ":\"\r\n ")) {
        rc = od_err_set(err, OD_BADREQ, "s3: region \"%.40s\" is not a region name", s->region);
        goto fail;
    }
    if (path_style < 0) path_style = s->endpoint ? 1 : 0;
    s->path_style = path_style;
    if (!s->endpoint) {
        char ep[160];
        snprintf(ep, sizeof ep, "https://s3.%s.amazonaws.com", s->region);
        if (set_str(&s->endpoint, ep)) {
            rc = od_err_set(err, OD_NOMEM, "s3: out of memory");
            goto fail;
        }
    }
    {
        size_t n = strlen(s->endpoint);
        while (n && s->endpoint[n - 1] == '/') s->endpoint[--n] = 0;
        const char *hs = strstr(s->endpoint, "://");
        if ((strncmp(s->endpoint, "http://", 7) != 0 && strncmp(s->endpoint, "https://", 8) != 0) || !hs[3] ||
            strchr(hs + 3, '/') || strchr(hs + 3, '@') || strchr(hs + 3, '?')) {
            rc = od_err_set(err, OD_BADREQ,
                            "s3: endpoint \"%.100s\" must be http(s)://HOST[:PORT] without a path or user info",
                            strchr(hs ? hs + 3 : s->endpoint, '@') ? "(hidden: contains user info)" : s->endpoint);
            goto fail;
        }
    }
    if (!s->access_key || !s->secret_key || !*s->access_key || !*s->secret_key) {
        rc = od_err_set(err, OD_AUTH,
                        "s3: no credentials for s3://%.100s (give access_key= and secret_key= in the URI or set "
                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", s->bucket);
        goto fail;
    }
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", s->region);
    char desc[256];
    snprintf(desc, sizeof desc, "s3://%.60s/%.100s (%.80s)", s->bucket, s->prefix, s->endpoint);
    od_store_init_base(&s->base, &s3_ops, desc);
    s->base.caps.conditional_writes = 0;
    s->base.caps.single_writer_only = single_writer;
    if (retries >= 0) od_store_set_retry(&s->base, (int)retries + 1, -1, -1);
    if (do_probe) {
        rc = probe(s, err);
        if (rc) {
            od_store_destroy_base(&s->base);
            goto fail;
        }
    }
    *out = &s->base;
    return OD_OK;
fail:
    s3_free(s);
    return rc;
}

/* ---------------------------------------------------------------- test hooks */

int od_s3_test_set_hooks(od_store *st, const od_s3_test_hooks *hooks, od_err *err)
{
    if (!st || st->ops != &s3_ops) return od_err_set(err, OD_BADREQ, "s3: test hooks need an s3:// store");
    s3_store *s = (s3_store *)st;
    free(s->hook_amz_date);
    free(s->hook_connect_to);
    s->hook_amz_date = hooks->amz_date ? strdup(hooks->amz_date) : NULL;
    s->hook_connect_to = hooks->connect_to ? strdup(hooks->connect_to) : NULL;
    s->hook_corrupt_sha256 = hooks->corrupt_sha256;
    atomic_store(&s->ifmatch_quoted, hooks->ifmatch_quoted ? 1 : 0);
    if ((hooks->amz_date && !s->hook_amz_date) || (hooks->connect_to && !s->hook_connect_to))
        return od_err_set(err, OD_NOMEM, "s3: out of memory");
    return OD_OK;
}

int od_s3_test_bucket_get(od_store *st, const od_s3_param *params, size_t n, long *status, od_buf *body,
                          od_err *err)
{
    if (!st || st->ops != &s3_ops) return od_err_set(err, OD_BADREQ, "s3: test request needs an s3:// store");
    s3_store *s = (s3_store *)st;
    od_buf q = {0};
    if (od_s3_canonical_query(params, n, &q)) return od_err_set(err, OD_NOMEM, "s3: out of memory");
    s3_resp r;
    memset(&r, 0, sizeof r);
    r.sink = body;
    int rc = perform(s, M_GET, NULL, (const char *)q.data, NULL, 0, NULL, &r, err);
    *status = r.status;
    od_buf_free(&r.errbody);
    od_buf_free(&q);
    return rc;
}

int od_s3_get_internal_stats(od_store *st, od_s3_internal_stats *out, od_err *err)
{
    if (!st || st->ops != &s3_ops) return od_err_set(err, OD_BADREQ, "s3: internal stats need an s3:// store");
    s3_store *s = (s3_store *)st;
    out->extra_heads = atomic_load(&s->extra_heads);
    out->ifmatch_requoted = atomic_load(&s->ifmatch_requoted);
    out->ifmatch_quoted = atomic_load(&s->ifmatch_quoted);
    out->connects = atomic_load(&s->connects);
    out->performs = atomic_load(&s->performs);
    return OD_OK;
}
